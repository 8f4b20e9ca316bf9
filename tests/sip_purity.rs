//! The pure SIP core and the transaction state machines must stay pure (STYLE.md §3): no
//! tokio, sockets, filesystem, clock or randomness, and no imports from layers above them.

use std::path::{Path, PathBuf};

const BANNED: [&str; 6] = [
    "tokio::",
    "std::net",
    "std::fs",
    "Instant::now",
    "SystemTime::now",
    "rand::",
];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

fn check(files: &[PathBuf], extra_banned: &[&str]) {
    assert!(!files.is_empty());
    for f in files {
        let text = std::fs::read_to_string(f).unwrap();
        for banned in BANNED.iter().chain(extra_banned) {
            assert!(!text.contains(banned), "{} uses `{banned}`", f.display());
        }
    }
}

#[test]
fn sip_core_is_pure() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/sip");
    let mut files = Vec::new();
    rust_files(&root, &mut files);
    check(
        &files,
        &[
            "crate::transaction",
            "crate::transport",
            "crate::b2bua",
            "crate::media",
        ],
    );
}

#[test]
fn transaction_fsm_and_key_are_pure() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/transaction");
    let mut files = vec![root.join("key.rs")];
    rust_files(&root.join("fsm"), &mut files);
    check(
        &files,
        &["crate::transport", "crate::b2bua", "crate::media"],
    );
}

#[test]
fn pure_modules_deny_unwrap_and_expect() {
    // The inner attribute on each module root covers every file below it.
    for root in ["src/sip/mod.rs", "src/transaction/mod.rs"] {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(root);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.contains(
                "#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]"
            ),
            "{root} lacks the unwrap/expect deny"
        );
    }
}
