//! Registrations through the edge: an in-process edge between a TLS "phone" with a dev device
//! certificate and a UDP "PBX" registrar in the test.

use crate::support::edge::{self, RunningEdge, TestPki};
use crate::support::http;
use crate::support::pbx::{self, Pbx};
use crate::support::phone::{self, snom, Phone};
use std::time::Duration;

async fn setup(extra: &[(&str, &str)]) -> (TestPki, Pbx, RunningEdge) {
    let pki = edge::dev_pki();
    let pbx = Pbx::bind().await;
    let mut env = vec![("PBX_EDGE_SIP__T1_MS", "100")];
    env.extend_from_slice(extra);
    let e = RunningEdge::start_with_pbx(&pki, pbx.addr(), &env).await;
    (pki, pbx, e)
}

/// REGISTER with a 401 challenge, then 200: returns the edge Contact the PBX saw.
async fn register_101(ph: &mut Phone, pbx: &Pbx, e: &RunningEdge) -> String {
    ph.send(&phone::register("101", 5099, 1, "reg-1", "")).await;
    let (req, from) = pbx.recv().await.expect("PBX gets the REGISTER");
    assert_eq!(from, e.pbx_local, "sent from pbx.listen");
    let vias = req.vias().unwrap();
    assert_eq!(vias.len(), 1, "the PBX sees only the edge's Via");
    assert_eq!(vias[0].transport, "UDP");
    assert!(
        req.header("Route").is_none(),
        "the Route naming the edge is consumed"
    );
    let contact = req.header("Contact").unwrap().to_owned();
    assert!(
        contact.contains(&e.pbx_local.to_string()),
        "edge Contact: {contact}"
    );
    assert!(
        !contact.contains("5099"),
        "the phone's address is hidden: {contact}"
    );
    assert!(
        contact.contains("reg-id=1") && contact.contains("+sip.instance"),
        "{contact}"
    );
    pbx.send(
        from,
        &pbx::response(
            &req,
            401,
            "Unauthorized",
            "WWW-Authenticate: Digest realm=\"asterisk\",nonce=\"abc\",algorithm=MD5\r\n",
        ),
    )
    .await;
    let challenge = ph.recv().await.expect("phone gets the 401");
    assert_eq!(challenge.status(), Some(401));
    assert_eq!(
        challenge.top_via().unwrap().branch(),
        Some("z9hG4bK-reg1-reg-1"),
        "phone's own Via back"
    );
    assert!(challenge
        .header("WWW-Authenticate")
        .unwrap()
        .contains("nonce=\"abc\""));

    let auth = "Authorization: Digest username=\"101\",realm=\"asterisk\",nonce=\"abc\",uri=\"sip:sbc.test\",response=\"0123456789abcdef0123456789abcdef\",algorithm=MD5\r\n";
    ph.send(&phone::register("101", 5099, 2, "reg-1", auth))
        .await;
    let (req, from) = pbx
        .recv()
        .await
        .expect("PBX gets the authenticated REGISTER");
    assert!(
        req.header("Authorization")
            .unwrap()
            .contains("response=\"0123456789abcdef0123456789abcdef\""),
        "passed through untouched"
    );
    let edge_contact = req.header("Contact").unwrap().to_owned();
    assert_eq!(edge_contact, contact, "same edge Contact on re-REGISTER");
    let uri = pbx::contact_uri(&req).unwrap();
    pbx.send(from, &pbx::register_ok(&req, &uri, 120)).await;
    let ok = ph.recv().await.expect("phone gets the 200");
    assert_eq!(ok.status(), Some(200));
    let c = ok.header("Contact").unwrap();
    assert!(
        c.contains("127.0.0.1:5099") && c.contains("expires=120"),
        "mapped back: {c}"
    );
    uri
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_challenge_ok_and_requests_from_the_pbx_reach_the_phone() {
    let (pki, pbx, e) = setup(&[]).await;
    let mut ph = snom(&pki, &e).await;
    let edge_uri = register_101(&mut ph, &pbx, &e).await;

    let regs = http::get(e.admin_addr, "/api/registrations").await.1;
    assert!(
        regs.contains("\"aor\":\"101\"") && regs.contains("00:04:13:a1:b2:c3"),
        "{regs}"
    );
    let metrics = http::get(e.admin_addr, "/metrics").await.1;
    assert_eq!(http::metric(&metrics, "pbx_edge_registrations_active"), 1.0);

    // OPTIONS qualify to the edge Contact: the phone sees its own Contact as Request-URI.
    let options = format!("OPTIONS {edge_uri} SIP/2.0\r\nVia: SIP/2.0/UDP {pbx};branch=z9hG4bK-opt1\r\nFrom: <sip:101@{pbx}>;tag=q1\r\nTo: <{edge_uri}>\r\nCall-ID: qualify-1\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n", pbx = pbx.addr());
    pbx.send(e.pbx_local, &options).await;
    let got = ph.recv().await.expect("phone gets OPTIONS");
    assert_eq!(
        got.request_uri().unwrap().to_string().to_ascii_lowercase(),
        "sip:101@127.0.0.1:5099;transport=tls;line=abc"
    );
    assert_eq!(
        got.vias().unwrap().len(),
        1,
        "the phone sees only the edge's Via"
    );
    assert_eq!(got.max_forwards().unwrap(), Some(69));
    ph.send(&phone::response(&got, 200)).await;
    let (resp, _) = pbx.recv().await.expect("PBX gets 200");
    assert_eq!(resp.status(), Some(200));
    assert_eq!(resp.top_via().unwrap().branch(), Some("z9hG4bK-opt1"));

    // The PBX retransmits the OPTIONS: absorbed, the 200 is resent, the phone sees nothing.
    pbx.send(e.pbx_local, &options).await;
    let (again, _) = pbx.recv().await.expect("200 resent");
    assert_eq!(again.status(), Some(200));

    // NOTIFY (MWI) to the AOR user at the edge's PBX-side address (static-contact setups).
    let notify = format!("NOTIFY sip:101@{edge} SIP/2.0\r\nVia: SIP/2.0/UDP {pbx};branch=z9hG4bK-mwi1\r\nFrom: <sip:101@{pbx}>;tag=m1\r\nTo: <sip:101@{edge}>\r\nCall-ID: mwi-1\r\nCSeq: 1 NOTIFY\r\nMax-Forwards: 70\r\nEvent: message-summary\r\nSubscription-State: active\r\nContent-Type: application/simple-message-summary\r\nContent-Length: 23\r\n\r\nMessages-Waiting: yes\r\n", edge = e.pbx_local, pbx = pbx.addr());
    pbx.send(e.pbx_local, &notify).await;
    let got = ph
        .recv()
        .await
        .expect("phone gets NOTIFY (not the OPTIONS retransmission)");
    assert_eq!(got.method().map(|m| m.as_str()), Some("NOTIFY"));
    assert_eq!(got.body(), b"Messages-Waiting: yes\r\n");
    ph.send(&phone::response(&got, 200)).await;
    let (resp, _) = pbx.recv().await.expect("PBX gets 200 for NOTIFY");
    assert_eq!(resp.status(), Some(200));

    // De-register with Contact: * .
    let unreg = phone::register("101", 5099, 3, "reg-1", "")
        .replace(
            &phone::register("101", 5099, 3, "reg-1", "")
                .lines()
                .find(|l| l.starts_with("Contact:"))
                .unwrap()
                .to_owned(),
            "Contact: *",
        )
        .replace("Expires: 600", "Expires: 0");
    ph.send(&unreg).await;
    let (req, from) = pbx.recv().await.expect("PBX gets the wildcard REGISTER");
    assert_eq!(req.header("Contact"), Some("*"));
    pbx.send(from, &pbx::response(&req, 200, "OK", "")).await;
    assert_eq!(ph.recv().await.unwrap().status(), Some(200));
    let regs = http::get(e.admin_addr, "/api/registrations").await.1;
    assert_eq!(regs, "{\"registrations\":[]}");
    drop(ph);
    e.stop().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_the_mac_may_not_use_gets_403_and_the_pbx_sees_nothing() {
    let (pki, pbx, e) = setup(&[]).await;
    let mut ph = snom(&pki, &e).await;
    ph.send(&phone::register("102", 5099, 1, "deny-1", ""))
        .await;
    let resp = ph.recv().await.expect("403");
    assert_eq!(resp.status(), Some(403));
    let w = resp.header("Warning").expect("Warning");
    assert!(w.starts_with("399 sbc.test \"") && w.contains("102"), "{w}");
    // The next allowed request is the first thing the PBX receives.
    ph.send(&phone::register("101", 5099, 1, "allow-1", ""))
        .await;
    let (req, _) = pbx.recv().await.expect("PBX gets the allowed REGISTER");
    assert_eq!(req.call_id().unwrap(), "allow-1");
    let metrics = http::get(e.admin_addr, "/metrics").await.1;
    assert!(
        metrics.contains("pbx_edge_sip_denied_total{reason=\"user_not_allowed\"} 1"),
        "{metrics}"
    );
    e.stop().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_loss_removes_the_flow_and_the_pbx_gets_430() {
    let (pki, pbx, e) = setup(&[]).await;
    let mut ph = snom(&pki, &e).await;
    let edge_uri = register_101(&mut ph, &pbx, &e).await;
    drop(ph);
    // Bounded wait for the edge to notice the close.
    for _ in 0..50 {
        if http::get(e.admin_addr, "/api/registrations").await.1 == "{\"registrations\":[]}" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let options = format!("OPTIONS {edge_uri} SIP/2.0\r\nVia: SIP/2.0/UDP {pbx};branch=z9hG4bK-dead1\r\nFrom: <sip:101@{pbx}>;tag=q1\r\nTo: <{edge_uri}>\r\nCall-ID: dead-1\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n", pbx = pbx.addr());
    pbx.send(e.pbx_local, &options).await;
    let (resp, _) = pbx.recv().await.expect("an answer at once");
    assert_eq!(resp.status(), Some(430));
    // By AOR: no live flow -> 480.
    let by_aor = options
        .replace(&edge_uri, &format!("sip:101@{}", e.pbx_local))
        .replace("dead1", "dead2");
    pbx.send(e.pbx_local, &by_aor).await;
    let (resp, _) = pbx.recv().await.expect("an answer at once");
    assert_eq!(resp.status(), Some(480));
    e.stop().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_input_closes_only_that_connection() {
    let (pki, pbx, e) = setup(&[]).await;
    let mut good = snom(&pki, &e).await;
    let edge_uri = register_101(&mut good, &pbx, &e).await;

    // Keep-alive: CRLFCRLF is answered with CRLF (RFC 5626 §3.5.1).
    good.send("\r\n\r\n").await;
    assert_eq!(
        good.read_raw(Duration::from_secs(5)).await.as_deref(),
        Some(&b"\r\n"[..])
    );

    // A request that does not parse gets 400 and the connection stays.
    let mut bad = snom(&pki, &e).await;
    bad.send("OPTIONS sip:x SIP/2.0\r\nVia: SIP/2.0/TLS 127.0.0.1:1;branch=z9hG4bK-x\r\nFrom: <sip:101@x>;tag=1\r\nTo: <sip:1@x>\r\nCall-ID: bad-1\r\nCSeq: nonsense\r\nContent-Length: 0\r\n\r\n").await;
    let r = bad.recv().await.expect("400");
    assert_eq!(r.status(), Some(400));
    // Oversized: the framing limit closes this connection.
    let huge = format!(
        "OPTIONS sip:x SIP/2.0\r\nContent-Length: 10\r\nX-Pad: {}\r\n\r\n",
        "a".repeat(70_000)
    );
    bad.send_until_closed(&huge).await;
    assert!(
        bad.closed_by_edge().await,
        "oversized message closes the connection"
    );
    // Missing Content-Length on a stream: closed too.
    let mut bad2 = snom(&pki, &e).await;
    bad2.send("OPTIONS sip:x SIP/2.0\r\nVia: SIP/2.0/TLS h;branch=z9hG4bK-y\r\n\r\n")
        .await;
    assert!(bad2.closed_by_edge().await);
    // A half-sent message, then the phone goes away: nothing reaches the PBX.
    let mut half = snom(&pki, &e).await;
    half.send("REGISTER sip:sbc.test SIP/2.0\r\nVia: SIP/2.0/TLS h;bra")
        .await;
    drop(half);

    // The registered phone is unaffected.
    let options = format!("OPTIONS {edge_uri} SIP/2.0\r\nVia: SIP/2.0/UDP {pbx};branch=z9hG4bK-after\r\nFrom: <sip:101@{pbx}>;tag=q1\r\nTo: <{edge_uri}>\r\nCall-ID: after-1\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n", pbx = pbx.addr());
    pbx.send(e.pbx_local, &options).await;
    let got = good.recv().await.expect("still reachable");
    assert_eq!(got.call_id().unwrap(), "after-1");

    // Garbage and foreign sources on the PBX socket are dropped and counted.
    let stranger = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    stranger
        .send_to(options.as_bytes(), e.pbx_local)
        .await
        .unwrap();
    pbx.send(e.pbx_local, "\u{1}\u{2} garbage").await;
    let mut metrics = String::new();
    for _ in 0..50 {
        metrics = http::get(e.admin_addr, "/metrics").await.1;
        if http::metric(
            &metrics,
            "pbx_edge_sip_dropped_total{reason=\"foreign_source\",side=\"pbx\"}",
        ) >= 1.0
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        http::metric(
            &metrics,
            "pbx_edge_sip_dropped_total{reason=\"foreign_source\",side=\"pbx\"}"
        ),
        1.0,
        "{metrics}"
    );
    assert!(
        metrics.contains("pbx_edge_sip_malformed_total{reason=\"line_too_long\",side=\"phone\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains(
            "pbx_edge_sip_malformed_total{reason=\"missing_content_length\",side=\"phone\"} 1"
        ),
        "{metrics}"
    );
    e.stop().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_requests_are_retransmitted_and_a_silent_pbx_gets_the_phone_a_408() {
    let (pki, pbx, e) = setup(&[]).await;
    let mut ph = snom(&pki, &e).await;
    ph.send(&phone::register("101", 5099, 1, "retx-1", ""))
        .await;
    // Drop the first two copies (T1 = 100 ms: copies at 0, 100, 300 ms).
    let (first, _) = pbx.recv().await.expect("first copy");
    let (second, _) = pbx.recv().await.expect("retransmission 1");
    let (third, from) = pbx.recv().await.expect("retransmission 2");
    assert_eq!(
        first.top_via().unwrap().branch(),
        third.top_via().unwrap().branch()
    );
    assert_eq!(second.call_id().unwrap(), "retx-1");
    pbx.send(from, &pbx::response(&third, 200, "OK", "")).await;
    assert_eq!(ph.recv().await.unwrap().status(), Some(200));

    // A PBX that never answers: timer F (64 × T1 = 6.4 s here) answers the phone 408.
    ph.send(&phone::register("101", 5099, 2, "silent-1", ""))
        .await;
    let resp = ph
        .recv_within(Duration::from_secs(15))
        .await
        .expect("408 in time");
    assert_eq!(resp.status(), Some(408));
    assert!(resp.header("Warning").unwrap().contains("did not answer"));
    e.stop().await.expect("clean shutdown");
}

/// RFC 3261 §8.1.1.7: a branch names one transaction. A phone that sends a new REGISTER with
/// the branch of one already answered (its TLS side is over while the UDP side toward the PBX
/// still absorbs retransmissions, Timer K) matches nothing live: the request is dropped and
/// counted, never forwarded and never lost without a trace. A fresh branch still registers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_reusing_a_finished_transactions_branch_is_dropped_and_counted() {
    let (pki, pbx, e) = setup(&[]).await;
    let mut ph = snom(&pki, &e).await;
    let register = phone::register("101", 5099, 1, "stale-branch", "");
    ph.send(&register).await;
    let (req, from) = pbx.recv().await.expect("PBX gets the REGISTER");
    let uri = pbx::contact_uri(&req).expect("edge Contact");
    pbx.send(from, &pbx::register_ok(&req, &uri, 600)).await;
    assert_eq!(ph.recv().await.expect("200").status(), Some(200));

    // The same branch again, well within Timer K (T4 = 5 s).
    ph.send(&register).await;
    assert!(
        pbx.recv_within(Duration::from_millis(800)).await.is_none(),
        "a request on a finished transaction's branch must not be forwarded"
    );
    assert!(ph.recv_within(Duration::from_millis(200)).await.is_none());
    let metrics = http::get(e.admin_addr, "/metrics").await.1;
    assert_eq!(
        http::metric(
            &metrics,
            "pbx_edge_sip_dropped_total{reason=\"stale_branch\",side=\"phone\"}"
        ),
        1.0,
        "dropped and counted"
    );

    // A new transaction (new branch) goes through.
    ph.send(&phone::register("101", 5099, 2, "stale-branch", ""))
        .await;
    let (req, from) = pbx.recv().await.expect("PBX gets the new REGISTER");
    pbx.send(from, &pbx::register_ok(&req, &uri, 600)).await;
    assert_eq!(ph.recv().await.expect("200").status(), Some(200));
    e.stop().await.expect("clean shutdown");
}

/// RFC 5626 §6 / §5.4: the edge keeps a registering phone's flow, so a phone that asks for
/// outbound (`Supported: outbound`, a Contact with `reg-id` and `+sip.instance`) gets
/// `Require: outbound` and a `Flow-Timer` inside the edge's idle timeout in its 200 — though
/// the PBX's 200 has neither, as Asterisk's has not. A phone that did not list `outbound` in
/// Supported gets neither (a Require it did not offer would break RFC 3261 §20.32).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_phone_asking_for_outbound_is_told_its_flow_is_kept_and_how_often_to_keep_it_alive() {
    let (pki, pbx, e) = setup(&[("PBX_EDGE_SIP__IDLE_TIMEOUT_SECS", "60")]).await;
    let mut ph = snom(&pki, &e).await;
    let mut answered = Vec::new();
    for (cseq, supported) in [(1, "Supported: path, outbound\r\n"), (2, "")] {
        ph.send(&phone::register("101", 5099, cseq, "ob-1", supported))
            .await;
        let (req, from) = pbx.recv().await.expect("PBX gets the REGISTER");
        assert!(
            req.header("Require").is_none(),
            "nothing added toward the PBX"
        );
        let uri = pbx::contact_uri(&req).expect("edge Contact");
        pbx.send(from, &pbx::register_ok(&req, &uri, 600)).await;
        let ok = ph.recv().await.expect("phone gets the 200");
        assert_eq!(ok.status(), Some(200));
        answered.push((
            ok.header("Require").map(str::to_owned),
            ok.header("Flow-Timer").map(str::to_owned),
        ));
    }
    assert_eq!(
        answered,
        [
            (Some("outbound".to_owned()), Some("30".to_owned())),
            (None, None)
        ],
        "with Supported: outbound, then without"
    );
    e.stop().await.expect("clean shutdown");
}
