//! `openssl s_client -cert -key` (a TLS stack nobody here wrote) against the RUNNING in-process
//! listener serving the rcgen vendor PKI: the same verdicts and `reason` labels the tokio-rustls
//! probe in tests/e2e/identity_listener.rs sees.

use super::openssl_tls::accepted_and_held;
use super::process::{require, run_bounded, PeerOutput};
use crate::support::pki::{self, Pki};
use crate::support::{http, vendor_edge};
use rcgen::date_time_ymd;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const INVENTORY: &str = "[[devices]]\nmac = \"000413a1b2c3\"\nusers = [\"101\"]\n\
                         [[devices]]\nmac = \"000413a1b2d5\"\nusers = [\"102\"]\n";

/// Bound on one s_client run. Not a verdict: the verdicts are the edge's counters, and a
/// refused s_client ends by itself as soon as the edge closes the connection.
const BOUND: Duration = Duration::from_secs(30);

/// `openssl s_client` presenting `cert` (+ `chain`) and `key`, verifying the edge as sbc.test.
fn s_client(addr: SocketAddr, ca: &Path, cert: &Path, key: &Path, extra: &[String]) -> Command {
    require("openssl");
    let mut cmd = Command::new("openssl");
    cmd.args(["s_client", "-connect", &addr.to_string(), "-CAfile"])
        .arg(ca)
        .args(["-verify_return_error", "-verify_hostname", "sbc.test"])
        .args(["-servername", "sbc.test", "-ign_eof", "-cert"])
        .arg(cert)
        .arg("-key")
        .arg(key)
        .args(extra);
    cmd
}

struct Files {
    cert: PathBuf,
    key: PathBuf,
}

fn files(dir: &Path, name: &str, device: &pki::Device) -> Files {
    Files {
        cert: pki::write(
            dir,
            &format!("{name}.crt"),
            pki::pem_block("CERTIFICATE", &device.chain[0]),
        ),
        key: pki::write(dir, &format!("{name}.key"), &device.key_pem),
    }
}

async fn failures(admin: SocketAddr, reason: &str, vendor: &str) -> f64 {
    let name =
        format!("pbx_edge_tls_handshake_failures_total{{reason=\"{reason}\",vendor=\"{vendor}\"}}");
    let mut value = 0.0;
    for _ in 0..50 {
        value = http::metric(&http::get(admin, "/metrics").await.1, &name);
        if value >= 1.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    value
}

/// An s_client the edge refuses: it ends by itself when the edge closes (bounded, off the
/// runtime's threads).
async fn run(addr: SocketAddr, ca: &Path, f: &Files, extra: &[&str]) -> PeerOutput {
    let (ca, cert, key) = (ca.to_owned(), f.cert.clone(), f.key.clone());
    let extra: Vec<String> = extra.iter().map(|s| (*s).to_owned()).collect();
    tokio::task::spawn_blocking(move || {
        run_bounded(s_client(addr, &ca, &cert, &key, &extra), BOUND)
    })
    .await
    .expect("s_client task")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openssl_client_verdicts_on_the_running_listener() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/certs");
    let config = vendor_edge::config(&pki, dir.path(), INVENTORY, |c| {
        c.vendors
            .get_mut("snom")
            .unwrap()
            .ca
            .push(fixtures.join("legacy-ca.pem"));
    });
    let e = vendor_edge::start(config).await;
    let ca = pki::write(dir.path(), "server-ca.pem", &pki.server_ca.pem);
    let addr = e.tls_addr;

    // Accepted: a Snom device sending its "Snom Phone 1 SHA-256" intermediate, like the phone.
    let snom = files(dir.path(), "snom", &pki.snom(pki::SNOM_MAC));
    let chain = pki::write(dir.path(), "snom-phone.pem", &pki.snom_phone.pem);
    let chain = chain.to_str().unwrap();
    // The edge counts the handshake and holds the connection open (it waits for SIP) while
    // s_client, once it has printed its verdict, is still connected; then stopped by PID.
    let cmd = s_client(
        addr,
        &ca,
        &snom.cert,
        &snom.key,
        &["-cert_chain".to_owned(), chain.to_owned()],
    );
    accepted_and_held(cmd, e.admin_addr).await;

    // Expired: refused with TLS alert 45 (certificate expired), counted as `expired`.
    let expired = pki.snom_with(pki::SNOM_MAC, |p| {
        p.not_before = date_time_ymd(2001, 1, 1);
        p.not_after = date_time_ymd(2002, 1, 1);
    });
    let expired = files(dir.path(), "expired", &expired);
    let out = run(addr, &ca, &expired, &["-cert_chain", chain]).await;
    assert!(!out.killed, "the edge closes the connection: {}", out.all());
    assert!(out.all().contains("certificate expired"), "{}", out.all());
    assert_eq!(failures(e.admin_addr, "expired", "snom").await, 1.0);

    // Unknown CA: alert 48 (unknown ca), counted as `issuer_unknown`.
    let stranger =
        pki.wrong_root
            .device(&[(rcgen::DnType::CommonName, pki::SNOM_MAC)], |_| {}, &[]);
    let stranger = files(dir.path(), "stranger", &stranger);
    let out = run(addr, &ca, &stranger, &[]).await;
    assert!(!out.killed, "the edge closes the connection: {}", out.all());
    assert!(out.all().contains("unknown ca"), "{}", out.all());
    assert_eq!(
        failures(e.admin_addr, "issuer_unknown", "unknown").await,
        1.0
    );

    // An older-Snom-like device (RSA-1024 key, SHA-1 signature) over TLS 1.2: legacy crypto
    // is refused by default. (OpenSSL itself needs SECLEVEL 0 to use the key; ring verifies
    // PKCS#1 v1.5 signatures from 1024-bit keys, not PSS.)
    let legacy = Files {
        cert: fixtures.join("legacy-device-rsa1024.pem"),
        key: fixtures.join("legacy-device-rsa1024.key"),
    };
    let relaxed = [
        "-tls1_2",
        "-cipher",
        "DEFAULT:@SECLEVEL=0",
        "-client_sigalgs",
        "RSA+SHA256",
    ];
    let out = run(addr, &ca, &legacy, &relaxed).await;
    assert!(!out.killed, "the edge closes the connection: {}", out.all());
    assert_eq!(
        failures(e.admin_addr, "legacy_crypto_refused", "snom").await,
        1.0,
        "{}",
        out.all()
    );

    let body = http::get(e.admin_addr, "/metrics").await.1;
    assert_eq!(
        http::metric(&body, "pbx_edge_tls_handshakes_total"),
        1.0,
        "only the accepted device completed a handshake: {body}"
    );
    e.stop().await.expect("clean shutdown");
}
