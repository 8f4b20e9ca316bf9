//! The module map of README / STYLE.md §3, checked on the parsed source (`syn`), not on text:
//! - PURE files take bytes, time and keys as inputs: no tokio, no sockets, no files, no
//!   threads, no clock reads, no randomness — however the path is spelled (grouped or renamed
//!   `use`, `::std::…`, `core::net::…`, an inline `std::thread::sleep(…)`, a macro);
//! - every top-level module has a row in the layer table and names only what its row allows;
//! - no circle between top-level modules, nor inside `media` and `identity`;
//! - `unsafe` only in `src/media/batch_io.rs` (the crate denies it), and pure module roots
//!   deny `unwrap`/`expect`.
//!
//! `planted_violations_are_each_reported` feeds the checker one violation per way of writing
//! it, so a checker that stops seeing one of them fails here, not silently in review.

#[path = "architecture/rules.rs"]
mod rules;
#[path = "architecture/scan.rs"]
mod scan;
#[path = "architecture/unsafe_code.rs"]
mod unsafe_code;

use std::path::{Path, PathBuf};

use rules::{Rules, Tree, Violation};

/// The PURE files and folders (trailing `/`) under `src/`.
///
/// What PURE allows, decided here once:
/// - `std::net` value types (`IpAddr`, `SocketAddr`, …) are data, like a `u32`: allowed and
///   spelled `std::net` (`core::net` is the same module and counts as `std::net`); the module
///   itself, its globs, sockets and `ToSocketAddrs` (a DNS lookup) are not;
/// - `std::time::{Duration, Instant, SystemTime}` as types are allowed (a `now` passed in is
///   how time enters a pure core: `transaction::fsm` takes `now: Instant`); reading the clock
///   (`Instant::now`, `SystemTime::now`, `.elapsed()`) is not.
const PURE: &[&str] = &[
    "srtp/",
    "sdp/",
    "sip/",
    "transaction/key.rs",
    "transaction/fsm/",
    "media/latch.rs",
    "media/mos.rs",
    "media/rtcp.rs",
    "media/report.rs",
    "identity/mac.rs",
    "identity/profile.rs",
    "identity/chain.rs",
    "identity/inventory.rs",
    "config/pattern.rs",
    "config/port_range.rs",
    "config/api_token.rs",
    "provisioning/path.rs",
    "b2bua/legs.rs",
    "b2bua/registrar.rs",
    "b2bua/offer_answer.rs",
    "b2bua/authorize.rs",
    "b2bua/refusal.rs",
    "b2bua/subscriptions.rs",
    "transport/rate.rs",
    "capture/hep.rs",
];

const IMPURE: &[&str] = &[
    "tokio",
    "tokio_util",
    "tokio_rustls",
    "mio",
    "socket2",
    "hyper",
    "hyper_util",
    "axum",
    "std::fs",
    "std::thread",
    "std::process",
    "std::env",
    "std::os",
    "std::io::stdin",
    "std::io::stdout",
    "std::io::stderr",
    "std::time::Instant::now",
    "std::time::Instant::elapsed",
    "std::time::SystemTime::now",
    "std::time::SystemTime::elapsed",
    "rand",
    "getrandom",
    "ring::rand",
    "aws_lc_rs::rand",
];

const NET_VALUES: &[&str] = &[
    "IpAddr",
    "Ipv4Addr",
    "Ipv6Addr",
    "SocketAddr",
    "SocketAddrV4",
    "SocketAddrV6",
    "AddrParseError",
];

/// The layer table: an arrow means "may name". Every top-level module of `src/` has a row
/// (`every_module_has_a_row`). It is STYLE.md's arrow table, with the modules STYLE does not
/// draw added where the README's map puts them.
const LAYERS: &[(&str, &[&str])] = &[
    ("config", &[]),
    ("srtp", &[]),
    ("sdp", &["srtp"]),
    ("sip", &[]),
    ("identity", &["config"]),
    // Socket marking (DSCP): a leaf the socket owners call.
    ("qos", &["config"]),
    // SIP capture (HEP) is fed by the transports; it knows nothing of SIP handling.
    ("capture", &["config"]),
    // The call log writer: a sink of JSON lines the SIP core builds.
    ("call_log", &["config"]),
    (
        "transport",
        &["sip", "identity", "config", "qos", "capture"],
    ),
    ("transaction", &["sip", "transport"]),
    ("media", &["srtp", "config", "qos"]),
    (
        "b2bua",
        &[
            "transaction",
            "sip",
            "sdp",
            "identity",
            "media",
            "config",
            "call_log",
        ],
    ),
    ("provisioning", &["identity", "transport", "config"]),
    ("admin", &["config"]),
    ("telemetry", &["config"]),
    ("cli", &[]),
    ("devpki", &[]),
    // The development defaults main falls back to without a config file: at main's level.
    ("devdefault", &["app", "config", "devpki", "identity"]),
    (
        "app",
        &[
            "config",
            "srtp",
            "sdp",
            "sip",
            "identity",
            "transport",
            "transaction",
            "media",
            "b2bua",
            "provisioning",
            "admin",
            "telemetry",
            "qos",
            "capture",
            "call_log",
        ],
    ),
    (
        "main",
        // `identity`: `inspect-cert` and `check-config` load certificates without the edge.
        &[
            "app",
            "cli",
            "config",
            "telemetry",
            "devdefault",
            "devpki",
            "identity",
        ],
    ),
];

/// Arrows the table does not draw but the tree has, kept on purpose until their owner moves
/// them; each entry fails as stale once its arrow is gone.
const ALLOW: &[(&str, &str, &str)] = &[
    (
        "b2bua",
        "transport",
        "issue 15: the SIP core holds transport's FlowTable/FlowId, PbxLink and the request rate \
         limiter (transport::rate) instead of receiving them over channels app wires; b2bua is \
         being split by the `core` helper",
    ),
    (
        "b2bua",
        "srtp",
        "issue 15: b2bua/call.rs builds media TransformSpecs from srtp::sdes::CryptoAttribute and \
         srtp::ContextOptions (STYLE: sdp and media share the srtp types; b2bua's row lacks srtp)",
    ),
];

const RULES: Rules = Rules {
    pure: PURE,
    impure: IMPURE,
    net_values: NET_VALUES,
    clock_methods: &["elapsed"],
    layers: LAYERS,
    allow: ALLOW,
    acyclic_within: &["media", "identity"],
};

const UNWRAP_DENY: &str = "not(test),deny(clippy::unwrap_used,clippy::expect_used)";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn rust_files(dir: &Path, out: &mut Vec<(String, String)>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .expect("source dir")
        .map(|e| e.expect("dir entry").path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            let rel = path.strip_prefix(root()).expect("under the crate");
            let text = std::fs::read_to_string(&path).expect("source readable");
            out.push((rel.to_string_lossy().replace('\\', "/"), text));
        }
    }
}

fn real_tree() -> Tree {
    let mut files = Vec::new();
    rust_files(&root().join("src"), &mut files);
    assert!(files.len() > 50, "src/ not found");
    Tree::new(&files).expect("every file of src/ parses")
}

fn planted(files: &[(&str, &str)]) -> Vec<String> {
    let files: Vec<(String, String)> = files
        .iter()
        .map(|(p, t)| (p.to_string(), t.to_string()))
        .collect();
    let tree = Tree::new(&files).expect("planted source parses");
    rules::check(&tree, &RULES_NO_ALLOW)
        .iter()
        .map(Violation::to_string)
        .collect()
}

/// The rules without allow-list entries (a planted tree does not have the real violations).
const RULES_NO_ALLOW: Rules = Rules {
    allow: &[],
    ..RULES
};

#[test]
fn the_tree_keeps_the_module_map() {
    let found = rules::check(&real_tree(), &RULES);
    let text: Vec<String> = found.iter().map(Violation::to_string).collect();
    assert!(text.is_empty(), "{}", text.join("\n"));
}

#[test]
fn every_module_has_a_row() {
    let tree = real_tree();
    let modules = tree.top_modules();
    let rows: std::collections::BTreeSet<String> =
        LAYERS.iter().map(|(m, _)| m.to_string()).collect();
    assert_eq!(
        modules, rows,
        "the layer table must have one row per module of src/"
    );
    for (m, allowed) in LAYERS {
        for a in *allowed {
            assert!(rows.contains(*a), "row {m} names {a}, which is no module");
        }
    }
}

/// Whether `found` holds a violation containing every one of `parts`.
fn reported(found: &[String], parts: &[&str]) -> bool {
    found.iter().any(|v| parts.iter().all(|p| v.contains(p)))
}

/// One planted violation per way of writing it; each must be reported. A pure file is
/// planted under `src/sdp/` (PURE), a layer escape under `src/transport/`.
#[test]
fn planted_violations_are_each_reported() {
    // (what is planted, the files, what the report must say)
    type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], &'a [&'a str]);
    let cases: &[Case] = &[
        (
            "plain use",
            &[("src/sdp/planted.rs", "use tokio::sync::mpsc;")],
            &["[purity]", "src/sdp/planted.rs", "`tokio::sync::mpsc`"],
        ),
        (
            "grouped use",
            &[("src/sdp/planted.rs", "use std::{fs, net::UdpSocket};")],
            &["[purity]", "`std::net::UdpSocket`"],
        ),
        (
            "grouped use, the other leaf",
            &[("src/sdp/planted.rs", "use std::{fs, net::UdpSocket};")],
            &["[purity]", "`std::fs`"],
        ),
        (
            "alias: `use tokio as rt` then `rt::spawn`",
            &[(
                "src/sdp/planted.rs",
                "use tokio as rt;\npub fn f() { rt::spawn(async {}); }",
            )],
            &["[purity]", "`tokio::spawn` (Path)"],
        ),
        (
            "`::std::` path",
            &[(
                "src/sip/planted.rs",
                "pub fn f() { let _ = ::std::fs::read(\"x\"); }",
            )],
            &["[purity]", "`std::fs::read`"],
        ),
        (
            "`core::net` counts as `std::net`",
            &[("src/srtp/planted.rs", "use core::net::UdpSocket;")],
            &["[purity]", "`std::net::UdpSocket`"],
        ),
        (
            "module import of std::net",
            &[(
                "src/srtp/planted.rs",
                "use std::net;\npub fn f() { let _ = net::TcpStream::connect(\"x\"); }",
            )],
            &["[purity]", "`std::net::TcpStream::connect`"],
        ),
        (
            "glob",
            &[("src/transaction/fsm/planted.rs", "use std::net::*;")],
            &["[purity]", "`std::net::*`"],
        ),
        (
            "glob over a module that holds a clock",
            &[(
                "src/transaction/fsm/planted.rs",
                "use std::time::*;\npub fn f() -> Instant { Instant::now() }",
            )],
            &["[purity]", "`std::time::*`"],
        ),
        (
            "inline path call",
            &[(
                "src/media/latch.rs",
                "pub fn f() { std::thread::sleep(std::time::Duration::from_secs(1)); }",
            )],
            &["[purity]", "`std::thread::sleep`"],
        ),
        (
            "clock read through an imported type",
            &[(
                "src/transaction/key.rs",
                "use std::time::Instant;\npub fn f() -> Instant { Instant::now() }",
            )],
            &["[purity]", "`std::time::Instant::now`"],
        ),
        (
            "clock read by method",
            &[(
                "src/sdp/planted.rs",
                "pub fn f(t: std::time::Instant) -> u64 { t.elapsed().as_secs() }",
            )],
            &["[purity]", "`elapsed` (Method)"],
        ),
        (
            "macro path",
            &[(
                "src/sdp/planted.rs",
                "pub async fn f() { tokio::join!(async {}); }",
            )],
            &["[purity]", "`tokio::join` (Macro)"],
        ),
        (
            "path inside a macro's arguments",
            &[(
                "src/sdp/planted.rs",
                "pub fn f() -> String { format!(\"{:?}\", std::fs::metadata(\"x\")) }",
            )],
            &["[purity]", "`std::fs::metadata` (MacroBody)"],
        ),
        (
            "imported name used inside a macro",
            &[(
                "src/sdp/planted.rs",
                "use std::fs::read;\npub fn f() -> String { format!(\"{:?}\", read(\"x\")) }",
            )],
            &["[purity]", "`std::fs::read` (MacroBody)"],
        ),
        (
            "`super::` escaping a layer",
            &[(
                "src/transport/planted.rs",
                "use super::super::app::EdgeOptions;",
            )],
            &["[layers]", "transport → app", "crate::app::EdgeOptions"],
        ),
        (
            "`super::super::super::` from a nested module",
            &[(
                "src/transport/pbx/planted.rs",
                "pub fn f() { super::super::super::b2bua::metrics::noop(); }",
            )],
            &["[layers]", "transport → b2bua"],
        ),
        (
            "`crate::app::X` used inline",
            &[(
                "src/transport/planted.rs",
                "pub fn f() -> crate::app::EdgeOptions { todo!() }",
            )],
            &["[layers]", "transport → app"],
        ),
        (
            "grouped crate use",
            &[(
                "src/media/planted.rs",
                "use crate::{b2bua::core::SipCore, sdp::MediaPlan};",
            )],
            &["[layers]", "media → sdp"],
        ),
        (
            "renamed crate module",
            &[(
                "src/config/planted.rs",
                "use crate::identity as id;\npub fn f(_: id::Identity) {}",
            )],
            &["[layers]", "config → identity"],
        ),
        (
            "a module with no row",
            &[("src/newthing/mod.rs", "use crate::config::Config;")],
            &["[layers]", "`newthing` has no row"],
        ),
        (
            "top-level cycle",
            &[
                ("src/lib.rs", "pub mod sdp; pub mod srtp;"),
                ("src/sdp/mod.rs", "use crate::srtp::Key;"),
                ("src/srtp/mod.rs", "pub fn f(_: crate::sdp::Plan) {}"),
            ],
            &["[cycles]", "sdp ⇄ srtp"],
        ),
        (
            "submodule cycle through the root's re-export",
            &[
                (
                    "src/media/mod.rs",
                    "pub mod control; pub mod relay; pub use relay::Worker;",
                ),
                ("src/media/control.rs", "use super::Worker;"),
                ("src/media/relay.rs", "use super::control::StreamId;"),
            ],
            &["[cycles]", "media submodules", "control ⇄ relay"],
        ),
    ];
    for (name, files, expect) in cases {
        let found = planted(files);
        assert!(
            reported(&found, expect),
            "planted violation `{name}` not reported as {expect:?}; found:\n{}",
            found.join("\n")
        );
    }
}

/// The negative control: what PURE allows and test code are not reported, so the cases
/// above fail for their violation and not for anything else in the file.
#[test]
fn allowed_code_is_not_reported() {
    let clean = "use std::net::{IpAddr, SocketAddr};\n\
                 use std::time::{Duration, Instant};\n\
                 use crate::srtp::suite::CryptoSuite;\n\
                 pub fn f(now: Instant, a: IpAddr) -> (Instant, SocketAddr) {\n\
                     (now + Duration::from_secs(1), SocketAddr::new(a, 5060))\n\
                 }\n\
                 #[cfg(test)]\n\
                 mod tests { use tokio::sync::mpsc; fn g() { std::thread::sleep(todo!()); } }\n";
    let found = planted(&[("src/sdp/planted.rs", clean)]);
    assert!(found.is_empty(), "{}", found.join("\n"));
}

/// A test-only module file (`#[cfg(test)] mod tests;`) is test code too.
#[test]
fn test_module_files_are_test_code() {
    let found = planted(&[
        ("src/srtp/mod.rs", "#[cfg(test)]\nmod tests;"),
        ("src/srtp/tests.rs", "use tokio::sync::mpsc;"),
    ]);
    assert!(found.is_empty(), "{}", found.join("\n"));
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
    ] {
        let text = std::fs::read_to_string(root().join(f)).expect("readable");
        let file = syn::parse_file(&text).expect("parses");
        let denied = file.attrs.iter().any(|a| {
            a.path().is_ident("cfg_attr")
                && matches!(&a.meta, syn::Meta::List(l)
                    if l.tokens.to_string().replace(' ', "") == UNWRAP_DENY)
        });
        assert!(denied, "{f} lacks `#![cfg_attr({UNWRAP_DENY})]`");
    }
}

/// The crate denies `unsafe_code` (a `forbid` could not be lifted for the one module), the
/// one module allowed it keeps clippy's `undocumented_unsafe_blocks` denied (every `unsafe`
/// carries a `// SAFETY:` comment), and no other file uses or allows `unsafe`.
#[test]
fn unsafe_lives_only_in_the_batch_io_module() {
    let text = std::fs::read_to_string(root().join("src/lib.rs")).expect("lib.rs");
    let file = syn::parse_file(&text).expect("parses");
    let denies = file.attrs.iter().any(|a| {
        (a.path().is_ident("deny") || a.path().is_ident("forbid"))
            && matches!(&a.meta, syn::Meta::List(l) if l.tokens.to_string() == "unsafe_code")
    });
    assert!(denies, "src/lib.rs lacks #![deny(unsafe_code)]");
    let text = std::fs::read_to_string(root().join(unsafe_code::UNSAFE_MODULE)).expect("module");
    let file = syn::parse_file(&text).expect("parses");
    let documented = file.attrs.iter().any(|a| {
        a.path().is_ident("deny")
            && matches!(&a.meta, syn::Meta::List(l)
                if l.tokens.to_string().replace(' ', "") == "clippy::undocumented_unsafe_blocks")
    });
    assert!(
        documented,
        "{} lacks #![deny(clippy::undocumented_unsafe_blocks)]",
        unsafe_code::UNSAFE_MODULE
    );
    let mut files = Vec::new();
    rust_files(&root().join("src"), &mut files);
    let found = unsafe_code::violations(&files);
    assert!(found.is_empty(), "{}", found.join("\n"));
}

/// One planted `unsafe` per way of writing it; each must be reported, and the one allowance
/// (`#[allow(unsafe_code)]` on `mod batch_io;` in src/media/mod.rs) must not be.
#[test]
fn planted_unsafe_is_each_reported() {
    let cases: &[(&str, &str, &str)] = &[
        (
            "src/sdp/planted.rs",
            "pub fn f() -> u8 { unsafe { *(&0u8 as *const u8) } }",
            "unsafe block",
        ),
        ("src/media/relay.rs", "pub unsafe fn f() {}", "unsafe fn f"),
        (
            "src/media/relay.rs",
            "struct S; unsafe impl Send for S {}",
            "unsafe impl",
        ),
        (
            "src/sip/planted.rs",
            "pub unsafe trait T {}",
            "unsafe trait T",
        ),
        (
            "src/sip/planted.rs",
            "extern \"C\" { fn abs(x: i32) -> i32; }",
            "extern block",
        ),
        ("src/lib.rs", "#![allow(unsafe_code)]", "allows unsafe"),
        (
            "src/media/relay.rs",
            "#[expect(unsafe_code)]\nfn f() {}",
            "allows unsafe",
        ),
        (
            "src/media/relay.rs",
            "#[cfg_attr(test, allow(unsafe_code))]\nfn f() {}",
            "allows unsafe",
        ),
        (
            "src/media/mod.rs",
            "#[allow(unsafe_code)]\npub mod relay;",
            "allows unsafe",
        ),
        (
            "src/media/mod.rs",
            "#[allow(unsafe_code)]\npub mod batch_io { }",
            "allows unsafe",
        ),
        (
            "src/sdp/planted.rs",
            "macro_rules! m { () => { unsafe { } } }",
            "unsafe inside a macro",
        ),
        (
            "src/sdp/planted.rs",
            "impl S { pub unsafe fn g(&self) {} }",
            "unsafe fn g",
        ),
        (
            "src/sdp/planted.rs",
            "#[cfg(test)] mod tests { fn t() { unsafe {} } }",
            "unsafe block",
        ),
    ];
    for (file, text, expect) in cases {
        let found = unsafe_code::violations(&[(file.to_string(), text.to_string())]);
        assert!(
            found
                .iter()
                .any(|f| f.starts_with(file) && f.contains(expect)),
            "planted `{text}` in {file} not reported as {expect:?}; found: {found:?}"
        );
    }
    let allowed = [
        (
            "src/media/mod.rs",
            "#[allow(unsafe_code)]\npub mod batch_io;\npub mod relay;",
        ),
        (
            "src/lib.rs",
            "#![deny(unsafe_code)]\n#![forbid(unsafe_code)]",
        ),
        (
            "src/media/batch_io.rs",
            "pub fn f() -> u8 { unsafe { *(&0u8 as *const u8) } }",
        ),
    ];
    for (file, text) in allowed {
        let found = unsafe_code::violations(&[(file.to_string(), text.to_string())]);
        assert!(found.is_empty(), "{file}: {found:?}");
    }
}
