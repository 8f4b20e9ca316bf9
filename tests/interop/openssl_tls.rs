//! `openssl s_client` against the phone listener: the verdicts a real TLS stack sees.

use super::process::{require, run_bounded, run_until_output, PeerOutput};
use crate::support::scenario::wait_metric;
use crate::support::{edge, http};
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// Bound on one s_client run. Not a verdict: the verdicts are the edge's counters, and a
/// refused s_client ends by itself as soon as the edge closes the connection.
const BOUND: Duration = Duration::from_secs(30);

fn s_client(addr: SocketAddr, ca: &Path, extra: &[&str]) -> Command {
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
    cmd
}

/// The options presenting the device certificate `<device>.crt` and key `<device>.key`,
/// checking the edge's certificate against `hostname`.
fn device_args(device: &Path, hostname: &str) -> Vec<String> {
    let crt = device.with_extension("crt");
    let key = device.with_extension("key");
    vec![
        "-cert".into(),
        crt.to_str().unwrap().into(),
        "-key".into(),
        key.to_str().unwrap().into(),
        "-verify_hostname".into(),
        hostname.into(),
    ]
}

/// An s_client the edge refuses: it ends by itself when the edge closes (bounded, off the
/// runtime's threads).
async fn refused_s_client(addr: SocketAddr, ca: &Path, extra: Vec<String>) -> PeerOutput {
    let ca = ca.to_owned();
    tokio::task::spawn_blocking(move || {
        let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
        run_bounded(s_client(addr, &ca, &extra), BOUND)
    })
    .await
    .unwrap()
}

/// `cmd` (an s_client presenting a certificate the edge accepts) prints its verdict and stays
/// connected: the edge counted one handshake and holds the connection open (it waits for
/// SIP), the verify code is 0; then s_client is stopped by its PID.
pub(super) async fn accepted_and_held(cmd: Command, admin: SocketAddr) {
    let (mut ok, _dir, verdict) =
        run_until_output(cmd, BOUND, |out| out.contains("Verify return code:")).await;
    assert!(verdict, "s_client printed no verdict: {}", ok.output());
    let body = wait_metric(admin, "pbx_edge_tls_handshakes_total", |v| v >= 1.0).await;
    assert_eq!(
        http::metric(&body, "pbx_edge_tls_handshakes_total"),
        1.0,
        "{body}"
    );
    assert_eq!(
        http::metric(&body, "pbx_edge_tls_connections_active"),
        1.0,
        "the edge holds the accepted connection open: {body}"
    );
    assert!(
        ok.wait_within(Duration::ZERO).is_none(),
        "s_client is still connected: {}",
        ok.output()
    );
    assert!(
        ok.output().contains("Verify return code: 0 (ok)"),
        "{}",
        ok.output()
    );
    ok.stop(Duration::from_secs(2));
}

fn failures(reason: &str, vendor: &str) -> String {
    format!("pbx_edge_tls_handshake_failures_total{{reason=\"{reason}\",vendor=\"{vendor}\"}}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openssl_verdicts_match_the_edge() {
    let pki = edge::dev_pki();
    let e = edge::RunningEdge::start(edge::config_for(&pki)).await;
    let ca = pki.pki.server_ca.clone();
    let addr = e.tls_addr;

    // A device certificate from a configured vendor CA, and the server verified by name: the
    // edge counts the handshake and holds the connection open (it waits for SIP) while
    // s_client, once it has printed its verdict, is still connected; then stopped by PID.
    let device = pki.dir.path().join("snom-000413A1B2C3");
    let args = device_args(&device, "sbc.test");
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    accepted_and_held(s_client(addr, &ca, &args), e.admin_addr).await;

    // No client certificate: TLS 1.3 alert 116 "certificate required", counted.
    let none = refused_s_client(addr, &ca, Vec::new()).await;
    assert!(
        !none.killed,
        "the edge closes the connection: {}",
        none.all()
    );
    assert!(
        none.all().contains("certificate required"),
        "{}",
        none.all()
    );
    let body = wait_metric(e.admin_addr, &failures("no_certificate", "none"), |v| {
        v >= 1.0
    })
    .await;
    assert_eq!(
        http::metric(&body, &failures("no_certificate", "none")),
        1.0,
        "{body}"
    );

    // The server name the edge's certificate does not carry: s_client refuses the server
    // (the edge sees the client give up; that is not a device failure to count).
    let wrong = refused_s_client(addr, &ca, device_args(&device, "other.test")).await;
    assert!(!wrong.killed, "s_client gives up: {}", wrong.all());
    assert!(wrong.all().contains("hostname mismatch"), "{}", wrong.all());

    // TLS 1.1 is not offered by the edge: a protocol mismatch, counted as one.
    let old = refused_s_client(addr, &ca, vec!["-tls1_1".into()]).await;
    assert!(!old.killed, "the edge closes the connection: {}", old.all());
    assert!(
        old.all().contains("Cipher is (NONE)") && old.all().contains("alert"),
        "{}",
        old.all()
    );
    let body = wait_metric(e.admin_addr, &failures("protocol_mismatch", "none"), |v| {
        v >= 1.0
    })
    .await;
    assert_eq!(
        http::metric(&body, &failures("protocol_mismatch", "none")),
        1.0,
        "the TLS 1.1 attempt is counted as protocol_mismatch: {body}"
    );
    assert_eq!(
        http::metric(&body, "pbx_edge_tls_handshakes_total"),
        1.0,
        "only the device completed a handshake: {body}"
    );
    e.stop().await.expect("clean shutdown");
}
