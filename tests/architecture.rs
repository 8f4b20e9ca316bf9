//! The module map of DESIGN.md / STYLE.md §3, checked mechanically: pure cores take bytes,
//! time and keys as inputs (no tokio, sockets, files, clocks or randomness), lower layers
//! never import higher ones, and the crate forbids `unsafe`.

use std::path::{Path, PathBuf};

const IMPURE: [&str; 6] = [
    "tokio::",
    "std::net",
    "std::fs",
    "Instant::now",
    "SystemTime::now",
    "rand::",
];

const UNWRAP_DENY: &str = "#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("source dir") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

fn files(paths: &[&str]) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for p in paths {
        let path = root().join(p);
        if path.is_dir() {
            rust_files(&path, &mut out);
        } else {
            out.push(path);
        }
    }
    assert!(!out.is_empty());
    out
}

/// The code of a file without its `#[cfg(test)]` tail (tests may use clocks).
fn code(path: &Path) -> String {
    let text = std::fs::read_to_string(path).expect("source readable");
    match text.find("#[cfg(test)]") {
        Some(i) => text[..i].to_owned(),
        None => text,
    }
}

fn assert_none(paths: &[&str], banned: &[&str]) {
    for f in files(paths) {
        let text = code(&f);
        for b in banned {
            assert!(!text.contains(b), "{} uses `{b}`", f.display());
        }
    }
}

#[test]
fn pure_cores_do_no_io_and_read_no_clock() {
    assert_none(
        &[
            "src/srtp",
            "src/sdp",
            "src/sip",
            "src/transaction/key.rs",
            "src/transaction/fsm",
            "src/media/latch.rs",
            "src/identity/mac.rs",
            "src/identity/inventory.rs",
            "src/config/pattern.rs",
            "src/config/api_token.rs",
            "src/provisioning/path.rs",
            "src/b2bua/legs.rs",
            "src/b2bua/registrar.rs",
            "src/b2bua/offer_answer.rs",
            "src/b2bua/authorize.rs",
            "src/b2bua/refusal.rs",
            "src/b2bua/subscriptions.rs",
            "src/transport/rate.rs",
            "src/capture/hep.rs",
        ],
        &IMPURE,
    );
}

#[test]
fn lower_layers_never_import_higher_ones() {
    let up =
        |names: &[&str]| -> Vec<String> { names.iter().map(|n| format!("crate::{n}")).collect() };
    let rules: [(&[&str], Vec<String>); 8] = [
        (
            &["src/config"],
            up(&[
                "identity",
                "provisioning",
                "transport",
                "transaction",
                "b2bua",
                "media",
                "sip",
                "sdp",
                "srtp",
                "admin",
                "app",
            ]),
        ),
        (
            &["src/srtp"],
            up(&[
                "sdp",
                "sip",
                "transport",
                "transaction",
                "b2bua",
                "media",
                "identity",
                "admin",
                "app",
                "config",
            ]),
        ),
        (
            &["src/sdp"],
            up(&[
                "sip",
                "transport",
                "transaction",
                "b2bua",
                "media",
                "identity",
                "admin",
                "app",
            ]),
        ),
        (
            &["src/sip"],
            up(&[
                "transport",
                "transaction",
                "b2bua",
                "media",
                "identity",
                "admin",
                "app",
                "sdp",
                "srtp",
            ]),
        ),
        (
            &["src/media"],
            up(&[
                "sip",
                "sdp",
                "transport",
                "transaction",
                "b2bua",
                "identity",
                "admin",
                "app",
            ]),
        ),
        (
            &["src/transaction"],
            up(&[
                "transport",
                "b2bua",
                "media",
                "identity",
                "admin",
                "app",
                "sdp",
            ]),
        ),
        (
            // SIP capture is fed by the transports; it knows nothing of SIP handling.
            &["src/capture"],
            up(&[
                "transport",
                "transaction",
                "b2bua",
                "media",
                "identity",
                "admin",
                "app",
                "sdp",
                "srtp",
                "provisioning",
            ]),
        ),
        (
            &["src/admin"],
            up(&[
                "provisioning",
                "transport",
                "transaction",
                "b2bua",
                "media",
                "identity",
                "sip",
                "sdp",
                "srtp",
                "app",
            ]),
        ),
    ];
    for (paths, banned) in rules {
        let banned: Vec<&str> = banned.iter().map(String::as_str).collect();
        assert_none(paths, &banned);
    }
}

#[test]
fn pure_module_roots_deny_unwrap_and_expect() {
    for f in [
        "src/srtp/mod.rs",
        "src/sdp/mod.rs",
        "src/sip/mod.rs",
        "src/transaction/mod.rs",
        "src/identity/mod.rs",
        "src/provisioning/mod.rs",
        "src/media/latch.rs",
        "src/capture/mod.rs",
    ] {
        let text = std::fs::read_to_string(root().join(f)).expect("readable");
        assert!(
            text.contains(UNWRAP_DENY),
            "{f} lacks the unwrap/expect deny"
        );
    }
}

#[test]
fn the_crate_forbids_unsafe() {
    let lib = std::fs::read_to_string(root().join("src/lib.rs")).expect("lib.rs");
    assert!(lib.contains("#![forbid(unsafe_code)]"));
}
