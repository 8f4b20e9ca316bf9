//! The PBX side over TCP (`pbx.transport = "tcp"`): an in-process edge between a TLS "phone"
//! and a TCP "PBX" in the test. The edge opens its own connection to the PBX for what it
//! originates; the PBX opens connections to `pbx.listen` for requests to edge Contacts and
//! gets the answers on those connections (RFC 3261 §18.2.2); foreign sources are refused.

use crate::support::edge::{self, RunningEdge, TestPki};
use crate::support::http;
use crate::support::pbx;
use crate::support::pbx_tcp::{SipConn, TcpPbx};
use crate::support::phone::{self, snom, Phone};
use crate::support::ports;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

async fn setup(extra: &[(&str, &str)]) -> (TestPki, TcpPbx, RunningEdge) {
    let pki = edge::dev_pki();
    let pbx = TcpPbx::bind().await;
    let mut env = vec![("PBX_EDGE_PBX__TRANSPORT", "tcp")];
    env.extend_from_slice(extra);
    let e = RunningEdge::start_with_pbx(&pki, pbx.addr(), &env).await;
    (pki, pbx, e)
}

/// Registers 101 (`cseq`) over a new connection the edge opens to the PBX; returns that
/// connection and the edge Contact URI.
async fn register_101(ph: &mut Phone, pbx: &TcpPbx, cseq: u32) -> (SipConn, String) {
    ph.send(&phone::register("101", 5099, cseq, "reg-tcp", ""))
        .await;
    let mut conn = pbx.accept().await.expect("the edge connects to the PBX");
    assert_eq!(
        conn.peer.ip(),
        LOOPBACK,
        "from pbx.listen's address (127.0.0.1)"
    );
    let req = conn.recv().await.expect("PBX gets the REGISTER over TCP");
    assert_eq!(req.cseq().unwrap().seq, cseq);
    assert_eq!(
        req.vias().unwrap().len(),
        1,
        "the PBX sees only the edge's Via"
    );
    let uri = pbx::contact_uri(&req).unwrap();
    conn.send(&pbx::register_ok(&req, &uri, 120)).await;
    let ok = ph.recv().await.expect("phone gets the 200");
    assert_eq!(ok.status(), Some(200));
    assert!(ok.header("Contact").unwrap().contains("127.0.0.1:5099"));
    (conn, uri)
}

fn options(edge_uri: &str, from: std::net::SocketAddr, branch: &str, call_id: &str) -> String {
    format!("OPTIONS {edge_uri} SIP/2.0\r\nVia: SIP/2.0/TCP {from};branch={branch}\r\nFrom: <sip:101@{from}>;tag=q1\r\nTo: <{edge_uri}>\r\nCall-ID: {call_id}\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n")
}

/// Polls /metrics (bounded, 5 s) until `metric` has `value`; returns the last scrape.
async fn wait_metric(e: &RunningEdge, metric: &str, value: f64) -> String {
    let mut body = String::new();
    for _ in 0..50 {
        body = http::get(e.admin_addr, "/metrics").await.1;
        if http::metric(&body, metric) == value {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    body
}

const OUTBOUND: &str = "pbx_edge_pbx_connections_active{direction=\"outbound\"}";
const INBOUND: &str = "pbx_edge_pbx_connections_active{direction=\"inbound\"}";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pbx_requests_on_its_own_connections_are_answered_on_them() {
    let (pki, pbx, e) = setup(&[]).await;
    let mut ph = snom(&pki, &e).await;
    let (mut out, edge_uri) = register_101(&mut ph, &pbx, 1).await;
    assert!(
        edge_uri.contains(&e.pbx_local.to_string()),
        "the edge Contact names pbx.listen: {edge_uri}"
    );

    // The PBX qualifies the edge Contact over a new connection of its own to pbx.listen.
    let mut inbound = SipConn::connect_from(LOOPBACK, e.pbx_local)
        .await
        .expect("the PBX connects to the edge");
    let pbx_side = inbound.local_addr();
    inbound
        .send(&options(&edge_uri, pbx_side, "z9hG4bK-in1", "qualify-in"))
        .await;
    let got = ph.recv().await.expect("phone gets OPTIONS");
    assert_eq!(got.call_id().unwrap(), "qualify-in");
    ph.send(&phone::response(&got, 200)).await;
    let resp = inbound
        .recv()
        .await
        .expect("the 200 comes back on the PBX's own connection");
    assert_eq!(resp.status(), Some(200));
    assert_eq!(resp.top_via().unwrap().branch(), Some("z9hG4bK-in1"));
    let metrics = wait_metric(&e, INBOUND, 1.0).await;
    assert_eq!(http::metric(&metrics, INBOUND), 1.0, "{metrics}");
    assert_eq!(http::metric(&metrics, OUTBOUND), 1.0, "{metrics}");

    // RFC 5626 keep-alive on the PBX's connection: CRLFCRLF → CRLF.
    inbound.send("\r\n\r\n").await;
    assert_eq!(
        inbound.read_raw(Duration::from_secs(5)).await.as_deref(),
        Some(&b"\r\n"[..])
    );

    // A request on the edge's own connection is answered on it too.
    let notify = format!("NOTIFY {edge_uri} SIP/2.0\r\nVia: SIP/2.0/TCP {pbx};branch=z9hG4bK-mwi-out\r\nFrom: <sip:101@{pbx}>;tag=m1\r\nTo: <sip:101@{pbx}>\r\nCall-ID: mwi-out\r\nCSeq: 1 NOTIFY\r\nMax-Forwards: 70\r\nEvent: message-summary\r\nSubscription-State: active\r\nContent-Type: application/simple-message-summary\r\nContent-Length: 23\r\n\r\nMessages-Waiting: yes\r\n", pbx = pbx.addr());
    out.send(&notify).await;
    let got = ph.recv().await.expect("phone gets NOTIFY");
    assert_eq!(got.call_id().unwrap(), "mwi-out");
    ph.send(&phone::response(&got, 200)).await;
    let resp = out.recv().await.expect("200 on the edge-opened connection");
    assert_eq!(resp.status(), Some(200));
    assert_eq!(resp.call_id().unwrap(), "mwi-out");

    // The PBX's connection was not used for that answer, and still works.
    inbound
        .send(&options(&edge_uri, pbx_side, "z9hG4bK-in2", "qualify-in2"))
        .await;
    let got = ph.recv().await.expect("phone gets the second OPTIONS");
    ph.send(&phone::response(&got, 200)).await;
    let resp = inbound.recv().await.expect("second 200 on its connection");
    assert_eq!(resp.call_id().unwrap(), "qualify-in2");
    e.stop().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_pbx_connection_is_reopened_and_answers_fall_back_to_it() {
    let (pki, pbx, e) = setup(&[]).await;
    let mut ph = snom(&pki, &e).await;
    let (out, edge_uri) = register_101(&mut ph, &pbx, 1).await;

    // The PBX drops the edge's connection: the next REGISTER opens a new one.
    drop(out);
    let metrics = wait_metric(&e, OUTBOUND, 0.0).await;
    assert_eq!(http::metric(&metrics, OUTBOUND), 0.0, "{metrics}");
    let (out, again) = register_101(&mut ph, &pbx, 2).await;
    assert_eq!(again, edge_uri, "the same edge Contact after the reconnect");
    let metrics = wait_metric(&e, OUTBOUND, 1.0).await;
    assert_eq!(http::metric(&metrics, OUTBOUND), 1.0, "{metrics}");

    // A request on a PBX connection that is gone before the phone answers: the answer
    // goes on the edge's own connection instead.
    let mut out = out;
    let mut inbound = SipConn::connect_from(LOOPBACK, e.pbx_local)
        .await
        .expect("the PBX connects to the edge");
    let pbx_side = inbound.local_addr();
    inbound
        .send(&options(
            &edge_uri,
            pbx_side,
            "z9hG4bK-gone",
            "qualify-gone",
        ))
        .await;
    let got = ph.recv().await.expect("phone gets OPTIONS");
    drop(inbound);
    let metrics = wait_metric(&e, INBOUND, 0.0).await;
    assert_eq!(http::metric(&metrics, INBOUND), 0.0, "{metrics}");
    ph.send(&phone::response(&got, 200)).await;
    let resp = out.recv().await.expect("the 200 on the edge's connection");
    assert_eq!(resp.status(), Some(200));
    assert_eq!(resp.call_id().unwrap(), "qualify-gone");
    e.stop().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_from_foreign_addresses_are_closed_and_counted() {
    let (pki, pbx, e) = setup(&[]).await;
    let mut ph = snom(&pki, &e).await;
    let (_out, edge_uri) = register_101(&mut ph, &pbx, 1).await;

    // 127.0.0.2 is not the PBX (127.0.0.1): closed at once, nothing reaches the phone.
    let stranger_ip = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
    let mut stranger = SipConn::connect_from(stranger_ip, e.pbx_local)
        .await
        .expect("TCP connect itself succeeds");
    let from = stranger.local_addr();
    assert_eq!(from.ip(), stranger_ip);
    // The write may already fail: the edge closes the connection as soon as it is accepted.
    let _ = tokio::io::AsyncWriteExt::write_all(
        &mut stranger.stream,
        options(&edge_uri, from, "z9hG4bK-evil", "evil-1").as_bytes(),
    )
    .await;
    assert!(stranger.closed_by_edge().await, "foreign connection closed");
    let dropped = "pbx_edge_sip_dropped_total{reason=\"foreign_source\",side=\"pbx\"}";
    let metrics = wait_metric(&e, dropped, 1.0).await;
    assert_eq!(http::metric(&metrics, dropped), 1.0, "{metrics}");
    assert_eq!(http::metric(&metrics, INBOUND), 0.0, "{metrics}");
    assert!(
        ph.recv_within(Duration::from_millis(500)).await.is_none(),
        "the phone saw nothing from the stranger"
    );

    // The PBX itself still gets through.
    let mut inbound = SipConn::connect_from(LOOPBACK, e.pbx_local)
        .await
        .expect("the PBX connects");
    let pbx_side = inbound.local_addr();
    inbound
        .send(&options(&edge_uri, pbx_side, "z9hG4bK-ok", "qualify-ok"))
        .await;
    let got = ph.recv().await.expect("phone gets the PBX's OPTIONS");
    assert_eq!(got.call_id().unwrap(), "qualify-ok");
    e.stop().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_on_a_pbx_connection_closes_only_that_connection() {
    let (pki, pbx, e) = setup(&[]).await;
    let mut ph = snom(&pki, &e).await;
    let (_out, edge_uri) = register_101(&mut ph, &pbx, 1).await;

    // Unparseable but framed: 400 on the same connection, which stays open.
    let mut bad = SipConn::connect_from(LOOPBACK, e.pbx_local)
        .await
        .expect("connect");
    bad.send("OPTIONS sip:x SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1:1;branch=z9hG4bK-x\r\nFrom: <sip:101@x>;tag=1\r\nTo: <sip:1@x>\r\nCall-ID: bad-1\r\nCSeq: nonsense\r\nContent-Length: 0\r\n\r\n").await;
    let r = bad.recv().await.expect("400");
    assert_eq!(r.status(), Some(400));
    // No Content-Length on a stream: that connection is closed.
    bad.send("OPTIONS sip:x SIP/2.0\r\nVia: SIP/2.0/TCP h;branch=z9hG4bK-y\r\n\r\n")
        .await;
    assert!(bad.closed_by_edge().await, "framing error closes it");

    // The edge's own connection and new PBX connections are unaffected.
    let mut inbound = SipConn::connect_from(LOOPBACK, e.pbx_local)
        .await
        .expect("connect");
    let pbx_side = inbound.local_addr();
    inbound
        .send(&options(&edge_uri, pbx_side, "z9hG4bK-after", "after-1"))
        .await;
    let got = ph.recv().await.expect("still reachable");
    assert_eq!(got.call_id().unwrap(), "after-1");
    ph.send(&phone::response(&got, 200)).await;
    assert_eq!(inbound.recv().await.unwrap().status(), Some(200));
    let metrics = http::get(e.admin_addr, "/metrics").await.1;
    assert_eq!(
        http::metric(
            &metrics,
            "pbx_edge_sip_malformed_total{reason=\"missing_content_length\",side=\"pbx\"}"
        ),
        1.0,
        "{metrics}"
    );
    assert_eq!(http::metric(&metrics, OUTBOUND), 1.0, "{metrics}");
    e.stop().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pbx_that_is_down_gets_the_phone_an_error_at_once() {
    // Nothing listens at the PBX address: the connect is refused and the phone is told.
    let (pki, pbx, e) = setup(&[]).await;
    drop(pbx);
    let mut ph = snom(&pki, &e).await;
    ph.send(&phone::register("101", 5099, 1, "reg-down", ""))
        .await;
    let resp = ph.recv().await.expect("an answer, not silence");
    let status = resp.status().unwrap();
    assert!(
        status == 503 || status == 408,
        "the PBX is unreachable: {status}"
    );
    e.stop().await.expect("clean shutdown");
}

/// Needs the SIP core to start its PBX-side transactions with `self.pbx.is_reliable()` and to
/// write `pbx.transport_token()` into its Via and edge Contact (see the PBX TCP note).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_tcp_the_edge_says_tcp_and_never_retransmits() {
    // T1 = 100 ms: over UDP the REGISTER would be resent at 100, 300, 700 ms.
    let (pki, pbx, e) = setup(&[("PBX_EDGE_SIP__T1_MS", "100")]).await;
    let mut ph = snom(&pki, &e).await;
    ph.send(&phone::register("101", 5099, 1, "reg-rel", ""))
        .await;
    let mut conn = pbx.accept().await.expect("the edge connects");
    let req = conn.recv().await.expect("REGISTER");
    let via = req.top_via().unwrap();
    assert_eq!(via.transport, "TCP");
    let contact = req.header("Contact").unwrap().to_owned();
    assert!(contact.contains("transport=tcp"), "{contact}");
    assert!(
        conn.recv_within(Duration::from_millis(1000))
            .await
            .is_none(),
        "no retransmission over TCP (RFC 3261 §17.1.2.2: timer E does not run)"
    );
    conn.send(&pbx::response(&req, 200, "OK", "")).await;
    assert_eq!(ph.recv().await.unwrap().status(), Some(200));
    e.stop().await.expect("clean shutdown");
}

/// Issue 16, PBX faults: the PBX's TCP connection is reset (RST) in the middle of a call. The
/// call survives it: a request the PBX sends in the dialog on a new connection reaches the
/// phone and is answered on that connection, and the phone's BYE reaches the PBX on a
/// connection the edge opens again; nothing is left afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pbx_connection_reset_mid_call_loses_no_in_dialog_request() {
    let (pki, pbx, e) = setup(&[
        ("PBX_EDGE_MEDIA__PORT_MIN", ports::PBX_TCP.0),
        ("PBX_EDGE_MEDIA__PORT_MAX", ports::PBX_TCP.1),
    ])
    .await;
    let mut ph = snom(&pki, &e).await;
    let sdp = "v=0\r\no=snom 1 1 IN IP4 127.0.0.1\r\ns=call\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 5004 RTP/SAVP 0\r\na=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz\r\na=rtpmap:0 PCMU/8000\r\na=sendrecv\r\n";
    ph.send(&format!("INVITE sip:200@sbc.test SIP/2.0\r\nVia: SIP/2.0/TLS 127.0.0.1:5099;branch=z9hG4bK-rst-inv\r\nFrom: <sip:101@sbc.test>;tag=caller-rst\r\nTo: <sip:200@sbc.test>\r\nCall-ID: tcp-reset\r\nCSeq: 1 INVITE\r\nMax-Forwards: 70\r\nContact: <sip:101@127.0.0.1:5099;transport=tls>\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}", sdp.len())).await;
    assert_eq!(ph.recv().await.unwrap().status(), Some(100));
    let mut out = pbx.accept().await.expect("the edge connects to the PBX");
    let inv = out.recv().await.expect("the PBX gets the INVITE");
    let edge_contact = pbx::contact_uri(&inv).expect("edge Contact");
    let answer = "v=0\r\no=asterisk 9 9 IN IP4 127.0.0.1\r\ns=Asterisk\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 6004 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=sendrecv\r\n";
    let ok = pbx::response(
        &inv,
        200,
        "OK",
        "Contact: <sip:200@127.0.0.1:5060;transport=tcp>\r\nContent-Type: application/sdp\r\n",
    )
    .replace(
        "Content-Length: 0\r\n\r\n",
        &format!("Content-Length: {}\r\n\r\n{answer}", answer.len()),
    );
    out.send(&ok).await;
    let ok = ph.recv().await.expect("the phone gets the 200");
    assert_eq!(ok.status(), Some(200));
    let to = ok.header("To").unwrap().to_owned();
    ph.send(&format!("ACK sip:sbc.test:{} SIP/2.0\r\nVia: SIP/2.0/TLS 127.0.0.1:5099;branch=z9hG4bK-rst-ack\r\nFrom: <sip:101@sbc.test>;tag=caller-rst\r\nTo: {to}\r\nCall-ID: tcp-reset\r\nCSeq: 1 ACK\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n", e.tls_addr.port())).await;
    let ack = out.recv().await.expect("the PBX gets the ACK");
    assert_eq!(ack.method().map(|m| m.as_str()), Some("ACK"));

    // Reset: RST, not FIN (SO_LINGER 0), as a PBX restart or a middlebox does.
    out.sip.stream.set_zero_linger().unwrap();
    drop(out);
    let metrics = wait_metric(&e, OUTBOUND, 0.0).await;
    assert_eq!(http::metric(&metrics, OUTBOUND), 0.0, "{metrics}");
    assert_eq!(
        http::metric(&metrics, "pbx_edge_calls_active"),
        1.0,
        "{metrics}"
    );

    // The PBX sends an in-dialog INFO on a new connection to the edge's Contact.
    let mut inbound = SipConn::connect_from(LOOPBACK, e.pbx_local)
        .await
        .expect("the PBX connects to the edge");
    let pbx_side = inbound.local_addr();
    inbound.send(&format!("INFO {edge_contact} SIP/2.0\r\nVia: SIP/2.0/TCP {pbx_side};branch=z9hG4bK-rst-info\r\nFrom: {to}\r\nTo: <sip:101@sbc.test>;tag=caller-rst\r\nCall-ID: tcp-reset\r\nCSeq: 1 INFO\r\nMax-Forwards: 70\r\nContact: <sip:200@127.0.0.1:5060;transport=tcp>\r\nContent-Length: 0\r\n\r\n")).await;
    let info = ph.recv().await.expect("the phone gets the INFO");
    assert_eq!(info.method().map(|m| m.as_str()), Some("INFO"));
    ph.send(&phone::response(&info, 200)).await;
    let resp = inbound
        .recv()
        .await
        .expect("the 200 on the PBX's connection");
    assert_eq!(resp.status(), Some(200));
    assert_eq!(resp.cseq().unwrap().seq, 1);

    // The phone hangs up: the BYE reaches the PBX (on whichever live connection the edge
    // picks: a new one of its own, or the PBX's).
    ph.send(&format!("BYE sip:sbc.test:{} SIP/2.0\r\nVia: SIP/2.0/TLS 127.0.0.1:5099;branch=z9hG4bK-rst-bye\r\nFrom: <sip:101@sbc.test>;tag=caller-rst\r\nTo: {to}\r\nCall-ID: tcp-reset\r\nCSeq: 2 BYE\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n", e.tls_addr.port())).await;
    let (bye, conn) = tokio::select! {
        c = pbx.accept() => {
            let mut c = c.expect("a new connection from the edge");
            (c.recv().await, c)
        }
        m = inbound.recv_within(Duration::from_secs(5)) => (m, inbound),
    };
    let mut conn = conn;
    let bye = bye.expect("the PBX gets the BYE");
    assert_eq!(bye.method().map(|m| m.as_str()), Some("BYE"));
    assert_eq!(bye.call_id().unwrap(), "tcp-reset");
    conn.send(&pbx::response(&bye, 200, "OK", "")).await;
    let done = ph.recv().await.expect("the phone gets the 200");
    assert_eq!(done.status(), Some(200));
    assert_eq!(done.cseq().unwrap().seq, 2);
    let metrics = wait_metric(&e, "pbx_edge_calls_active", 0.0).await;
    assert_eq!(
        http::metric(&metrics, "pbx_edge_calls_active"),
        0.0,
        "{metrics}"
    );
    assert_eq!(
        http::metric(&metrics, "pbx_edge_calls_total{outcome=\"bye\"}"),
        1.0,
        "{metrics}"
    );
    e.stop().await.expect("clean shutdown");
}
