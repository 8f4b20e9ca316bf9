//! A phone that stops reading, and a phone that floods junk (issue 11 point 5): the edge
//! closes a connection whose writes make no progress (`sip.write_timeout_secs`) or whose
//! queue overflows (`sip.write_queue_bytes`), still closes a stuck connection when its device
//! is revoked, and stops answering a device whose budget its junk has used up.

use crate::support::edge::{self, RunningEdge, TestPki};
use crate::support::http;
use crate::support::pbx::{self, Pbx};
use crate::support::phone::{self, Phone};
use crate::support::tls_client;
use crate::support::vendor_edge::replace_file;
use rustls::pki_types::ServerName;
use std::time::Duration;
use tokio::net::TcpSocket;

/// Bound for every wait on the edge in this file (never an assertion on how long it took).
const BOUND: Duration = Duration::from_secs(30);

async fn setup(extra: &[(&str, &str)]) -> (TestPki, Pbx, RunningEdge) {
    let pki = edge::dev_pki();
    let pbx = Pbx::bind().await;
    let mut env = vec![("PBX_EDGE_SIP__T1_MS", "100")];
    env.extend_from_slice(extra);
    let e = RunningEdge::start_with_pbx(&pki, pbx.addr(), &env).await;
    (pki, pbx, e)
}

/// The dev Snom over a TCP connection with a small receive buffer: once the phone stops
/// reading, its window closes after a few KB instead of megabytes.
async fn snom_small_window(pki: &TestPki, e: &RunningEdge) -> Phone {
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let tcp = socket.connect(e.tls_addr).await.unwrap();
    let cfg = tls_client::client_config(&pki.pki.server_ca, Some(&pki.pki.snom_device));
    let tls = tokio_rustls::TlsConnector::from(cfg)
        .connect(ServerName::try_from("sbc.test").unwrap(), tcp)
        .await
        .expect("handshake");
    Phone::new(tls)
}

/// Registers 101 (no challenge); returns the edge Contact the PBX routes to.
async fn register(ph: &mut Phone, pbx: &Pbx) -> String {
    ph.send(&phone::register("101", 5099, 1, "reg-stuck", ""))
        .await;
    let (reg, from) = pbx.recv().await.expect("REGISTER forwarded");
    let uri = pbx::contact_uri(&reg).unwrap();
    pbx.send(from, &pbx::register_ok(&reg, &uri, 600)).await;
    assert_eq!(ph.recv().await.unwrap().status(), Some(200));
    uri
}

/// A NOTIFY from the PBX to the phone with a `body_len`-byte body.
fn notify(edge_uri: &str, pbx: &Pbx, n: u32, body_len: usize) -> String {
    let body = "x".repeat(body_len);
    format!(
        "NOTIFY {edge_uri} SIP/2.0\r\nVia: SIP/2.0/UDP {pbx};branch=z9hG4bK-flood{n}\r\n\
From: <sip:101@{pbx}>;tag=f{n}\r\nTo: <sip:101@{pbx}>\r\nCall-ID: flood-{n}\r\nCSeq: 1 NOTIFY\r\n\
Max-Forwards: 70\r\nEvent: message-summary\r\nSubscription-State: active\r\n\
Content-Type: text/plain\r\nContent-Length: {body_len}\r\n\r\n{body}",
        pbx = pbx.addr()
    )
}

fn closed(reason: &str) -> String {
    format!("pbx_edge_sip_connections_closed_total{{reason=\"{reason}\"}}")
}

/// Sends 30 KB NOTIFYs toward the (non-reading) phone, paced, until `metric` reaches 1 or
/// `max` were sent; returns the last /metrics body.
async fn flood_until(e: &RunningEdge, pbx: &Pbx, edge_uri: &str, metric: &str, max: u32) -> String {
    let deadline = tokio::time::Instant::now() + BOUND;
    let mut body = String::new();
    let mut n = 0;
    while n < max && tokio::time::Instant::now() < deadline {
        for _ in 0..10 {
            n += 1;
            pbx.send(e.pbx_local, &notify(edge_uri, pbx, n, 30_000))
                .await;
        }
        body = http::get(e.admin_addr, "/metrics").await.1;
        if http::metric(&body, metric) >= 1.0 {
            return body;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Keep polling (no more sends) until the bound.
    while tokio::time::Instant::now() < deadline {
        body = http::get(e.admin_addr, "/metrics").await.1;
        if http::metric(&body, metric) >= 1.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    body
}

async fn registrations_when_empty(e: &RunningEdge) -> String {
    let deadline = tokio::time::Instant::now() + BOUND;
    loop {
        let regs = http::get(e.admin_addr, "/api/registrations").await.1;
        if regs == "{\"registrations\":[]}" || tokio::time::Instant::now() >= deadline {
            return regs;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_phone_that_stops_reading_is_closed_after_the_write_timeout() {
    let (pki, pbx, e) = setup(&[
        ("PBX_EDGE_SIP__WRITE_TIMEOUT_SECS", "1"),
        // Big enough that only the write timeout can close it.
        ("PBX_EDGE_SIP__WRITE_QUEUE_BYTES", "1073741824"),
    ])
    .await;
    let mut ph = snom_small_window(&pki, &e).await;
    let edge_uri = register(&mut ph, &pbx).await;
    // From here on the phone never reads.
    let body = flood_until(&e, &pbx, &edge_uri, &closed("write_stalled"), 800).await;
    assert_eq!(http::metric(&body, &closed("write_stalled")), 1.0, "{body}");
    assert_eq!(http::metric(&body, &closed("write_queue_full")), 0.0);
    // The core heard of it: the flow's registration is gone.
    assert_eq!(registrations_when_empty(&e).await, "{\"registrations\":[]}");
    drop(ph);
    e.stop().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_phone_whose_write_queue_overflows_is_closed() {
    let (pki, pbx, e) = setup(&[
        ("PBX_EDGE_SIP__WRITE_TIMEOUT_SECS", "600"),
        // The smallest queue the config allows: 2 × sip.max_message_bytes.
        ("PBX_EDGE_SIP__WRITE_QUEUE_BYTES", "131070"),
    ])
    .await;
    let mut ph = snom_small_window(&pki, &e).await;
    let edge_uri = register(&mut ph, &pbx).await;
    let body = flood_until(&e, &pbx, &edge_uri, &closed("write_queue_full"), 800).await;
    assert_eq!(
        http::metric(&body, &closed("write_queue_full")),
        1.0,
        "{body}"
    );
    assert_eq!(http::metric(&body, &closed("write_stalled")), 0.0);
    assert_eq!(registrations_when_empty(&e).await, "{\"registrations\":[]}");
    drop(ph);
    e.stop().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_revoked_while_its_connection_is_stuck_is_closed() {
    let dir = tempfile::tempdir().unwrap();
    let deny = dir.path().join("deny.txt");
    std::fs::write(&deny, "# stolen phones\n").unwrap();
    let deny_path = deny.to_str().unwrap().to_owned();
    let (pki, pbx, e) = setup(&[
        // Neither the write timeout nor the queue bound can close it during the test.
        ("PBX_EDGE_SIP__WRITE_TIMEOUT_SECS", "3600"),
        ("PBX_EDGE_SIP__WRITE_QUEUE_BYTES", "1073741824"),
        ("PBX_EDGE_TLS__MAC_DENY_LIST", deny_path.as_str()),
    ])
    .await;
    let mut ph = snom_small_window(&pki, &e).await;
    let edge_uri = register(&mut ph, &pbx).await;
    // 600 × 30 KB = 18 MB toward a phone that reads nothing: more than loopback's socket
    // buffers hold (tcp_wmem max 4 MB on the edge's side, 4 KB window on the phone's), so
    // the connection task is stuck in a write whatever the scheduling.
    for n in 1..=600 {
        pbx.send(e.pbx_local, &notify(&edge_uri, &pbx, n, 30_000))
            .await;
        if n % 20 == 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let body = http::get(e.admin_addr, "/metrics").await.1;
    assert_eq!(
        http::metric(&body, &closed("closed_by_edge")),
        0.0,
        "{body}"
    );
    // Revoked: the reload cancels the connection's close token.
    replace_file(&deny, "# stolen phones\n00:04:13:A1:B2:C3\n");
    let deadline = tokio::time::Instant::now() + BOUND;
    let mut body = String::new();
    while tokio::time::Instant::now() < deadline {
        body = http::get(e.admin_addr, "/metrics").await.1;
        if http::metric(&body, &closed("closed_by_edge")) >= 1.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        http::metric(&body, &closed("closed_by_edge")),
        1.0,
        "the stuck connection of a revoked device is closed: {body}"
    );
    assert_eq!(registrations_when_empty(&e).await, "{\"registrations\":[]}");
    drop(ph);
    e.stop().await.expect("clean shutdown");
}

/// An unparseable request (unknown method) for which a 400 can still be built.
fn junk(n: u32) -> String {
    format!(
        "FOO sip:200@sbc.test SIP/2.0\r\nVia: SIP/2.0/TLS 127.0.0.1:5099;branch=z9hG4bK-junk{n}\r\n\
From: <sip:101@sbc.test>;tag=j{n}\r\nTo: <sip:200@sbc.test>\r\nCall-ID: junk-{n}\r\n\
CSeq: 1 FOO\r\nContent-Length: 0\r\n\r\n"
    )
}

fn options(user: &str, call_id: &str) -> String {
    format!(
        "OPTIONS sip:200@sbc.test SIP/2.0\r\nVia: SIP/2.0/TLS 127.0.0.1:5099;branch=z9hG4bK-{call_id}\r\n\
From: <sip:{user}@sbc.test>;tag=o-{call_id}\r\nTo: <sip:200@sbc.test>\r\nCall-ID: {call_id}\r\n\
CSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_junk_flood_runs_out_of_budget_and_the_edge_stops_answering() {
    const FLOOD: u32 = 300;
    const BURST: u32 = 20;
    let (pki, pbx, e) = setup(&[
        ("PBX_EDGE_SIP__PHONE_REQUESTS_PER_SECOND", "1"),
        ("PBX_EDGE_SIP__PHONE_REQUEST_BURST", "20"),
    ])
    .await;
    let mut snom = phone::snom(&pki, &e).await;
    let mut flood = String::new();
    for n in 0..FLOOD {
        flood.push_str(&junk(n));
    }
    snom.send(&flood).await;
    // Count the 400s until the edge has been quiet for a second.
    let mut answered = 0u32;
    while let Some(r) = snom.recv_within(Duration::from_secs(1)).await {
        assert_eq!(r.status(), Some(400), "{r:?}");
        answered += 1;
    }
    // The budget (20) and the debt allowed for responses (20) are used up; the 1/s refill
    // may add a few more while the flood is read.
    assert!(answered >= 2 * BURST, "answered {answered}");
    assert!(
        answered < FLOOD / 2,
        "the edge stops answering junk: answered {answered} of {FLOOD}"
    );
    let m = http::get(e.admin_addr, "/metrics").await.1;
    assert_eq!(
        http::metric(
            &m,
            "pbx_edge_sip_responses_total{code=\"400\",side=\"phone\"}"
        ),
        f64::from(answered),
        "{m}"
    );
    assert_eq!(
        http::metric(
            &m,
            "pbx_edge_sip_dropped_total{reason=\"reply_over_budget\",side=\"phone\"}"
        ),
        f64::from(FLOOD - answered),
        "every unanswered junk request is counted: {m}"
    );
    // The junk never reached the PBX, and the flooding device's next request is refused:
    // it is in debt, so at most a 503 whose Retry-After covers the debt.
    snom.send(&options("101", "after-flood")).await;
    if let Some(r) = snom.recv_within(Duration::from_secs(1)).await {
        assert_eq!(r.status(), Some(503), "{r:?}");
        let retry: u32 = r.header("Retry-After").unwrap().trim().parse().unwrap();
        assert!(retry >= 10, "the debt is in Retry-After: {retry}");
    }
    let mut yealink = phone::yealink(&pki, &e).await;
    yealink.send(&options("102", "other-device")).await;
    let (got, from) = pbx
        .recv()
        .await
        .expect("the other device's request is forwarded");
    assert_eq!(got.call_id().unwrap(), "other-device");
    pbx.send(from, &pbx::response(&got, 200, "OK", "")).await;
    assert_eq!(yealink.recv().await.unwrap().status(), Some(200));
    e.stop().await.expect("clean shutdown");
}
