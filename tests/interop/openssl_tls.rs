//! `openssl s_client` against the phone listener: the verdicts a real TLS stack sees.

use super::process::{require, run_bounded};
use crate::support::{edge, http};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

fn s_client(addr: std::net::SocketAddr, ca: &Path, extra: &[&str]) -> super::process::PeerOutput {
    require("openssl");
    let mut cmd = Command::new("openssl");
    cmd.args(["s_client", "-connect", &addr.to_string(), "-CAfile"])
        .arg(ca)
        .args([
            "-verify_return_error",
            "-servername",
            "sbc.test",
            "-ign_eof",
        ])
        .args(extra);
    // Accepted connections stay open (the edge waits for SIP): bounded by killing s_client.
    run_bounded(cmd, Duration::from_secs(4))
}

/// [`s_client`] (off the runtime's threads) with the device certificate `<device>.crt` and
/// key `<device>.key`, checking the edge's certificate against `hostname`.
async fn s_client_as_device(
    addr: std::net::SocketAddr,
    ca: &Path,
    device: &Path,
    hostname: &'static str,
) -> super::process::PeerOutput {
    let ca = ca.to_owned();
    let crt = device.with_extension("crt");
    let key = device.with_extension("key");
    tokio::task::spawn_blocking(move || {
        s_client(
            addr,
            &ca,
            &[
                "-cert",
                crt.to_str().unwrap(),
                "-key",
                key.to_str().unwrap(),
                "-verify_hostname",
                hostname,
            ],
        )
    })
    .await
    .unwrap()
}

async fn metric(admin: std::net::SocketAddr, name: &str) -> f64 {
    http::metric(&http::get(admin, "/metrics").await.1, name)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openssl_verdicts_match_the_edge() {
    let pki = edge::dev_pki();
    let e = edge::RunningEdge::start(edge::config_for(&pki)).await;
    let ca = pki.pki.server_ca.clone();
    let addr = e.tls_addr;

    // A device certificate from a configured vendor CA, and the server verified by name.
    let device = pki.dir.path().join("snom-000413A1B2C3");
    let ok = s_client_as_device(addr, &ca, &device, "sbc.test").await;
    assert!(
        ok.all().contains("Verify return code: 0 (ok)"),
        "{}",
        ok.all()
    );
    assert!(ok.killed, "an accepted connection stays open: {}", ok.all());
    assert_eq!(
        metric(e.admin_addr, "pbx_edge_tls_handshakes_total").await,
        1.0
    );

    // No client certificate: TLS 1.3 alert 116 "certificate required".
    let ca2 = ca.clone();
    let none = tokio::task::spawn_blocking(move || s_client(addr, &ca2, &[]))
        .await
        .unwrap();
    assert!(
        none.all().contains("certificate required"),
        "{}",
        none.all()
    );
    assert!(!none.killed, "the edge closes the connection");

    // The server name the edge's certificate does not carry: s_client refuses the server.
    let wrong = s_client_as_device(addr, &ca, &device, "other.test").await;
    assert!(wrong.all().contains("hostname mismatch"), "{}", wrong.all());

    // TLS 1.1 is not offered by the edge.
    let ca2 = ca.clone();
    let old = tokio::task::spawn_blocking(move || s_client(addr, &ca2, &["-tls1_1"]))
        .await
        .unwrap();
    assert!(
        !old.killed && old.all().contains("Cipher is (NONE)") && old.all().contains("alert"),
        "{}",
        old.all()
    );

    let failures = http::get(e.admin_addr, "/metrics").await.1;
    assert_eq!(
        http::metric(
            &failures,
            "pbx_edge_tls_handshake_failures_total{reason=\"no_certificate\",vendor=\"none\"}"
        ),
        1.0,
        "{failures}"
    );
    e.stop().await.expect("clean shutdown");
}
