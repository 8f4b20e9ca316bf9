//! Per-device limits against hostile or broken phones: the request budget
//! (`sip.phone_requests_per_second` / `sip.phone_request_burst`, 503 + Retry-After beyond it,
//! other devices unaffected) and the cap on registration bindings per connection.

use std::net::SocketAddr;
use std::time::Duration;

use pbx_edge::sip::message::ContactList;

use crate::support::edge::{self, RunningEdge};
use crate::support::http;
use crate::support::offer::{pbx_pcmu_sdp, phone_sdp};
use crate::support::pbx::{self, Pbx};
use crate::support::phone::{self, Phone};
use crate::support::scenario::{ack, answer, dial, phone_hangs_up, Dialog};
use crate::support::tls_client;

fn options(from_user: &str, n: u32) -> String {
    format!(
        "OPTIONS sip:{from_user}@sbc.test SIP/2.0\r\nVia: SIP/2.0/TLS 127.0.0.1:5099;branch=z9hG4bK-lim{from_user}-{n}\r\nFrom: <sip:{from_user}@sbc.test>;tag=lim{n}\r\nTo: <sip:{from_user}@sbc.test>\r\nCall-ID: lim-{from_user}-{n}\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    )
}

/// The PBX receives the request with `call_id` (bounded: 5 s) and answers it 200.
async fn pbx_answers_one(pbx: &Pbx, call_id: &str) {
    let (req, from) = pbx.recv().await.expect("the request is forwarded");
    assert_eq!(req.call_id().unwrap(), call_id);
    pbx.send(from, &pbx::response(&req, 200, "OK", "")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_over_its_budget_gets_503_with_retry_after_others_go_on() {
    let pki = edge::dev_pki();
    let pbx = Pbx::bind().await;
    let addr = pbx.addr().to_string();
    let e = RunningEdge::start(edge::config_with(
        &pki,
        &[
            ("PBX_EDGE_PBX__ADDRESS", addr.as_str()),
            ("PBX_EDGE_SIP__PHONE_REQUESTS_PER_SECOND", "1"),
            ("PBX_EDGE_SIP__PHONE_REQUEST_BURST", "3"),
        ],
    ))
    .await;
    let mut snom = phone::snom(&pki, &e).await;

    // Five new requests at once: the burst (3) is forwarded, the rest is answered 503. The
    // bucket refills at 1/s, so a machine that stalls while the five are handled may admit
    // one more per second that passed: the bound is the burst plus what the elapsed time can
    // have refilled, measured around the exchange (never less than the burst, never all).
    let started = std::time::Instant::now();
    for n in 1..=5 {
        snom.send(&options("101", n)).await;
    }
    let mut forwarded = Vec::new();
    let mut answers = Vec::new();
    while answers.len() < 5 {
        tokio::select! {
            r = snom.recv() => answers.push(r.expect("every request is answered")),
            got = pbx.recv_within(Duration::from_secs(5)) => {
                let (req, from) = got.expect("the PBX gets the forwarded requests");
                forwarded.push(req.call_id().unwrap().to_owned());
                pbx.send(from, &pbx::response(&req, 200, "OK", "")).await;
            }
        }
    }
    let refilled = started.elapsed().as_secs() as usize; // at 1 per second
    let mut refused = 0;
    let mut retry_after = 0;
    for r in &answers {
        match r.status() {
            Some(200) => assert!(forwarded.contains(&r.call_id().unwrap().to_owned())),
            Some(503) => {
                refused += 1;
                let retry: u32 = r
                    .header("Retry-After")
                    .expect("503 carries Retry-After")
                    .trim()
                    .parse()
                    .expect("Retry-After is a number of seconds");
                assert!(retry >= 1);
                retry_after = retry_after.max(retry);
                assert!(
                    !forwarded.contains(&r.call_id().unwrap().to_owned()),
                    "a refused request was not forwarded"
                );
            }
            other => panic!("200 or 503 expected, got {other:?}"),
        }
    }
    assert_eq!(forwarded.len() + refused, 5, "{forwarded:?}");
    assert!(
        (3..=3 + refilled).contains(&forwarded.len()) && refused >= 1,
        "the burst (3, plus {refilled} refilled) reaches the PBX, the rest is refused: \
         {forwarded:?}, {refused} refused"
    );

    // Another device has its own budget.
    let mut yealink = phone::yealink(&pki, &e).await;
    yealink.send(&options("102", 1)).await;
    pbx_answers_one(&pbx, "lim-102-1").await;
    assert_eq!(yealink.recv().await.unwrap().status(), Some(200));

    // The budget refills at 1/s; the two 503s were charged to it too (in debt), so the
    // Snom is admitted again once the last Retry-After has passed.
    if refilled == 0 {
        assert_eq!(
            retry_after as usize,
            refused + 1,
            "each 503 went into debt: a token is {} s away",
            refused + 1
        );
    }
    tokio::time::sleep(Duration::from_millis(u64::from(retry_after) * 1000 + 200)).await;
    snom.send(&options("101", 6)).await;
    pbx_answers_one(&pbx, "lim-101-6").await;
    assert_eq!(snom.recv().await.unwrap().status(), Some(200));

    let (_, metrics) = http::get(e.admin_addr, "/metrics").await;
    assert_eq!(
        http::metric(&metrics, "pbx_edge_sip_rate_limited_total"),
        refused as f64
    );
    assert_eq!(
        http::metric(
            &metrics,
            "pbx_edge_sip_responses_total{code=\"503\",side=\"phone\"}"
        ),
        refused as f64
    );
    e.stop().await.expect("clean shutdown");
}

fn register_with_contacts(first: u32, count: u32, cseq: u32) -> String {
    let contacts: Vec<String> = (first..first + count)
        .map(|i| format!("<sip:101@127.0.0.1:5099;transport=tls;line={i}>"))
        .collect();
    format!(
        "REGISTER sip:sbc.test SIP/2.0\r\nVia: SIP/2.0/TLS 127.0.0.1:5099;branch=z9hG4bK-many{cseq}\r\nFrom: <sip:101@sbc.test>;tag=many\r\nTo: <sip:101@sbc.test>\r\nCall-ID: many-contacts\r\nCSeq: {cseq} REGISTER\r\nMax-Forwards: 70\r\nContact: {}\r\nExpires: 600\r\nContent-Length: 0\r\n\r\n",
        contacts.join(", ")
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_holds_at_most_32_registration_bindings() {
    let pki = edge::dev_pki();
    let pbx = Pbx::bind().await;
    let e = RunningEdge::start_with_pbx(&pki, pbx.addr(), &[]).await;
    let mut snom = phone::snom(&pki, &e).await;

    // 16 + 16 Contacts: at the limit, both forwarded (the PBX never answers: still pending,
    // which is exactly what a hostile client would exploit).
    snom.send(&register_with_contacts(0, 16, 1)).await;
    let (first, _) = pbx.recv().await.expect("first REGISTER forwarded");
    match first.contacts() {
        Ok(ContactList::Addrs(a)) => assert_eq!(a.len(), 16),
        other => panic!("16 Contacts expected, got {other:?}"),
    }
    snom.send(&register_with_contacts(16, 16, 2)).await;
    let (second, _) = pbx.recv().await.expect("second REGISTER forwarded");
    assert_eq!(second.cseq().unwrap().seq, 2);

    // Re-registering a Contact it holds is fine; one more new Contact is refused.
    snom.send(&register_with_contacts(33, 1, 3)).await;
    let r = snom.recv().await.expect("answered");
    assert_eq!(r.status(), Some(403));
    assert!(r
        .header("Warning")
        .unwrap()
        .contains("32 registered Contacts"));
    snom.send(&register_with_contacts(0, 1, 4)).await;
    // The PBX never answers, so the edge retransmits CSeq 1 and 2 over UDP (timer E); skip
    // those. CSeq 3 must never arrive; CSeq 4 re-registers a Contact the connection holds.
    let mut seen = Vec::new();
    while let Some((req, _)) = pbx.recv_within(Duration::from_millis(700)).await {
        seen.push(req.cseq().unwrap().seq);
        if seen.contains(&4) {
            break;
        }
    }
    assert!(
        !seen.contains(&3),
        "the refused REGISTER is not forwarded: {seen:?}"
    );
    assert!(
        seen.contains(&4),
        "a known Contact may re-register: {seen:?}"
    );

    let (_, metrics) = http::get(e.admin_addr, "/metrics").await;
    assert_eq!(
        http::metric(
            &metrics,
            "pbx_edge_sip_denied_total{reason=\"too_many_bindings\"}"
        ),
        1.0
    );
    e.stop().await.expect("clean shutdown");
}

/// The Snom places call `lim-call` to 200 and the PBX answers it: the phone's dialog, its
/// in-dialog target the edge's Contact.
async fn snom_call_answered(pbx: &Pbx, snom: &mut Phone, tls: SocketAddr) -> Dialog {
    let mut d = Dialog::phone("lim-call", "limcaller", tls);
    let invite = d.invite("sip:200@sbc.test", "", &phone_sdp(40000, 1, 1));
    let (inv, from) = dial(pbx, snom, &invite).await;
    let ok = answer(pbx, snom, &inv, from, &pbx_pcmu_sdp(40002)).await;
    d.confirmed_by(&ok);
    d.target = pbx::contact_uri(&ok).expect("the edge's Contact");
    ack(pbx, snom, &d, 1).await;
    d
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_device_cannot_touch_a_call_by_its_call_id() {
    let pki = edge::dev_pki();
    let pbx = Pbx::bind().await;
    let e = RunningEdge::start_with_pbx(&pki, pbx.addr(), &[]).await;
    let mut snom = phone::snom(&pki, &e).await;
    let d = snom_call_answered(&pbx, &mut snom, e.tls_addr).await;

    // The Yealink (another MAC) sends a BYE for the Snom's call: 481, nothing forwarded.
    let mut yealink = phone::yealink(&pki, &e).await;
    yealink.send(&d.request("BYE", 2, "", "")).await;
    assert_eq!(yealink.recv().await.unwrap().status(), Some(481));
    assert!(
        pbx.recv_within(Duration::from_millis(500)).await.is_none(),
        "the foreign BYE is not forwarded"
    );
    let (_, metrics) = http::get(e.admin_addr, "/metrics").await;
    assert_eq!(http::metric(&metrics, "pbx_edge_calls_active"), 1.0);
    assert_eq!(
        http::metric(
            &metrics,
            "pbx_edge_sip_dropped_total{reason=\"foreign_dialog\",side=\"phone\"}"
        ),
        1.0
    );

    // The Snom's own BYE ends it.
    phone_hangs_up(&pbx, &mut snom, &d, 2, None).await;
    e.stop().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bye_ending_a_call_is_never_refused_for_budget() {
    let pki = edge::dev_pki();
    let pbx = Pbx::bind().await;
    let e = RunningEdge::start_with_pbx(
        &pki,
        pbx.addr(),
        &[
            ("PBX_EDGE_SIP__PHONE_REQUESTS_PER_SECOND", "1"),
            ("PBX_EDGE_SIP__PHONE_REQUEST_BURST", "2"),
        ],
    )
    .await;
    let mut snom = phone::snom(&pki, &e).await;

    let d = snom_call_answered(&pbx, &mut snom, e.tls_addr).await;

    // Spend the budget until the edge refuses (bounded).
    let mut refused = false;
    for n in 1..=10 {
        snom.send(&options("101", n)).await;
        loop {
            tokio::select! {
                r = snom.recv() => {
                    if r.expect("answered").status() == Some(503) {
                        refused = true;
                    }
                    break;
                }
                got = pbx.recv_within(Duration::from_millis(500)) => {
                    let Some((req, from)) = got else { break };
                    pbx.send(from, &pbx::response(&req, 200, "OK", "")).await;
                }
            }
        }
        if refused {
            break;
        }
    }
    assert!(refused, "the budget of 2 runs out");

    // The BYE still goes through to the PBX and its 200 back.
    phone_hangs_up(&pbx, &mut snom, &d, 2, None).await;
    e.stop().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_the_per_address_limit_are_closed_at_accept() {
    let pki = edge::dev_pki();
    let pbx = Pbx::bind().await;
    let e = RunningEdge::start_with_pbx(
        &pki,
        pbx.addr(),
        &[("PBX_EDGE_TLS__MAX_CONNECTIONS_PER_IP", "2")],
    )
    .await;
    let cfg = || tls_client::client_config(&pki.pki.server_ca, Some(&pki.pki.snom_device));

    // A bare TCP connection that never starts TLS holds a slot as much as a phone does.
    let idle = tokio::net::TcpStream::connect(e.tls_addr).await.unwrap();
    let phone_b = tls_client::connect(e.tls_addr, "sbc.test", cfg())
        .await
        .expect("second connection within the limit");
    let refused = tls_client::connect(e.tls_addr, "sbc.test", cfg()).await;
    assert!(
        refused.is_err(),
        "a third connection from 127.0.0.1 is closed"
    );
    let (_, metrics) = http::get(e.admin_addr, "/metrics").await;
    assert_eq!(
        http::metric(
            &metrics,
            "pbx_edge_tls_connections_refused_total{reason=\"max_connections_per_ip\"}"
        ),
        1.0
    );

    // Closing the idle socket gives its slot back (bounded retries while the edge notices).
    drop(idle);
    let mut admitted = None;
    for _ in 0..50 {
        if let Ok(s) = tls_client::connect(e.tls_addr, "sbc.test", cfg()).await {
            admitted = Some(s);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut phone_d = Phone::new(admitted.expect("a freed slot admits a new phone"));
    phone_d.send(&options("101", 99)).await;
    let (req, from) = pbx
        .recv()
        .await
        .expect("the new phone's request is forwarded");
    pbx.send(from, &pbx::response(&req, 200, "OK", "")).await;
    assert_eq!(phone_d.recv().await.unwrap().status(), Some(200));
    drop(phone_b);
    e.stop().await.expect("clean shutdown");
}
