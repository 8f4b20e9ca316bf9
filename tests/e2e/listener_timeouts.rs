//! README promises of the phone listener that only time shows: `tls.handshake_timeout_secs`
//! (a silent client is dropped and counted as `timeout`, one that leaves mid-handshake as
//! `closed_by_peer`), `sip.idle_timeout_secs` (a phone connection with no traffic at all is
//! closed), and the global `tls.max_connections` (more are closed at accept and counted).
//! Timeouts are configured at their 1 s minimum; waits are bounded well above them and no
//! assertion measures time.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::edge::{self, RunningEdge};
use crate::support::{http, phone};

/// Polls /metrics until `name` reaches `at_least` (bounded: 10 s); returns the last body.
async fn metric_at_least(admin: SocketAddr, name: &str, at_least: f64) -> String {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let body = http::get(admin, "/metrics").await.1;
        if http::metric(&body, name) >= at_least || tokio::time::Instant::now() >= deadline {
            return body;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Whether the edge closes `s` within 10 s (EOF or reset).
async fn closed_by_edge(s: &mut TcpStream) -> bool {
    let mut b = [0u8; 256];
    loop {
        match tokio::time::timeout(Duration::from_secs(10), s.read(&mut b)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => {}
        }
    }
}

/// A phone connected to `e`, with the pong to the keep-alive `tls_client::connect` sends
/// already read, so that the next pong read answers the next ping.
async fn quiet_phone(pki: &edge::TestPki, e: &RunningEdge) -> phone::Phone {
    let mut ph = phone::snom(pki, e).await;
    assert_eq!(
        ph.read_raw(Duration::from_secs(5)).await.as_deref(),
        Some(&b"\r\n"[..]),
        "the pong to the connect keep-alive"
    );
    ph
}

/// Sends an RFC 5626 CRLFCRLF keep-alive and expects its CRLF pong (bounded: 5 s).
async fn ping(ph: &mut phone::Phone) -> bool {
    ph.send("\r\n\r\n").await;
    ph.read_raw(Duration::from_secs(5)).await.as_deref() == Some(&b"\r\n"[..])
}

fn failures(reason: &str) -> String {
    format!("pbx_edge_tls_handshake_failures_total{{reason=\"{reason}\",vendor=\"none\"}}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_handshake_times_out_and_an_abandoned_one_is_closed_by_peer() {
    let pki = edge::dev_pki();
    let e = RunningEdge::start(edge::config_with(
        &pki,
        &[("PBX_EDGE_TLS__HANDSHAKE_TIMEOUT_SECS", "1")],
    ))
    .await;

    // Connects and never sends a ClientHello: dropped after the handshake timeout.
    let mut silent = TcpStream::connect(e.tls_addr).await.unwrap();
    assert!(
        closed_by_edge(&mut silent).await,
        "the edge drops a client that never completes the handshake"
    );
    let body = metric_at_least(e.admin_addr, &failures("timeout"), 1.0).await;
    assert_eq!(http::metric(&body, &failures("timeout")), 1.0, "{body}");

    // Starts a ClientHello and leaves: counted as closed by the peer, not as a timeout.
    let mut abandoned = TcpStream::connect(e.tls_addr).await.unwrap();
    // A TLS record header announcing a 512-byte handshake message, then only part of it.
    abandoned
        .write_all(&[
            0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03,
        ])
        .await
        .unwrap();
    drop(abandoned);
    let body = metric_at_least(e.admin_addr, &failures("closed_by_peer"), 1.0).await;
    assert_eq!(
        http::metric(&body, &failures("closed_by_peer")),
        1.0,
        "{body}"
    );
    assert_eq!(http::metric(&body, &failures("timeout")), 1.0, "{body}");

    // A phone that completes its handshake is not subject to the handshake timeout.
    let mut ph = quiet_phone(&pki, &e).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        ping(&mut ph).await,
        "the established connection still answers keep-alives"
    );
    e.stop().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_phone_connection_without_any_traffic_is_closed_after_the_idle_timeout() {
    let pki = edge::dev_pki();
    let e = RunningEdge::start(edge::config_with(
        &pki,
        &[("PBX_EDGE_SIP__IDLE_TIMEOUT_SECS", "1")],
    ))
    .await;
    let mut ph = phone::snom(&pki, &e).await;
    assert!(
        ph.closed_by_edge().await,
        "the edge closes a connection with no traffic at all"
    );
    let name = "pbx_edge_sip_connections_closed_total{reason=\"idle\"}";
    let body = metric_at_least(e.admin_addr, name, 1.0).await;
    assert_eq!(http::metric(&body, name), 1.0, "{body}");
    e.stop().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_the_global_limit_are_closed_at_accept() {
    let pki = edge::dev_pki();
    let e = RunningEdge::start(edge::config_with(
        &pki,
        &[("PBX_EDGE_TLS__MAX_CONNECTIONS", "2")],
    ))
    .await;
    // Two phones fill the edge (from one address, far below the per-address limit).
    let mut first = quiet_phone(&pki, &e).await;
    let mut second = quiet_phone(&pki, &e).await;
    let mut third = TcpStream::connect(e.tls_addr).await.unwrap();
    assert!(
        closed_by_edge(&mut third).await,
        "the third connection is closed at accept"
    );
    let name = "pbx_edge_tls_connections_refused_total{reason=\"max_connections\"}";
    let body = metric_at_least(e.admin_addr, name, 1.0).await;
    assert_eq!(http::metric(&body, name), 1.0, "{body}");
    assert_eq!(
        http::metric(
            &body,
            "pbx_edge_tls_connections_refused_total{reason=\"max_connections_per_ip\"}"
        ),
        0.0,
        "{body}"
    );
    // The two admitted phones are served.
    for ph in [&mut first, &mut second] {
        assert!(ping(ph).await);
    }
    e.stop().await.expect("clean shutdown");
}
