//! The authorization boundary (`b2bua::authorize`, issue 11 points 1–3) attacked by a device
//! that owns one valid certificate (the dev Snom, allowed user 101; the dev Yealink is 102).
//! Each test performs the attack against the running edge, asserts what the phone gets and
//! that the PBX receives nothing (the next thing it receives is a legitimate request sent
//! after the attack: the positive control) or only the authorized identity.

use crate::support::edge::{self, RunningEdge};
use crate::support::http;
use crate::support::pbx::{self, Pbx};
use crate::support::phone::{self, Phone};
use crate::support::scenario::{pbx_200_with_sdp, register};

const KEY: &str = "WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz";

/// A request from a phone: `from`/`to` are whole header values, `extra` more header lines.
fn request(method: &str, call_id: &str, from: &str, to: &str, extra: &str, body: &str) -> String {
    format!(
        "{method} sip:200@sbc.test SIP/2.0\r\nVia: SIP/2.0/TLS 127.0.0.1:5099;branch=z9hG4bK-{call_id}-{method}\r\nFrom: {from}\r\nTo: {to}\r\nCall-ID: {call_id}\r\nCSeq: 1 {method}\r\nMax-Forwards: 70\r\nContact: <sip:101@127.0.0.1:5099;transport=tls>\r\n{extra}Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

fn message(call_id: &str, from: &str, to: &str, extra: &str) -> String {
    request(
        "MESSAGE",
        call_id,
        from,
        to,
        &format!("{extra}Content-Type: text/plain\r\n"),
        "hi",
    )
}

/// An INVITE offering SRTP (RFC 4568), as the dev phones send it.
fn invite(call_id: &str, from: &str, extra: &str) -> String {
    let sdp = format!("v=0\r\no=phone 1 1 IN IP4 127.0.0.1\r\ns=call\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 40000 RTP/SAVP 0\r\na=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{KEY}\r\na=rtpmap:0 PCMU/8000\r\na=sendrecv\r\n");
    request(
        "INVITE",
        call_id,
        from,
        "<sip:200@sbc.test>",
        &format!("{extra}Content-Type: application/sdp\r\n"),
        &sdp,
    )
}

/// An OPTIONS from the PBX to the registered phone at `edge_uri`; `from` is the whole From
/// value (or more than one header, for the attacks).
fn pbx_options(edge_uri: &str, pbx: &Pbx, call_id: &str, from: &str) -> String {
    format!("OPTIONS {edge_uri} SIP/2.0\r\nVia: SIP/2.0/UDP {};branch=z9hG4bK-{call_id}\r\nFrom: {from}\r\nTo: <sip:101@sbc.test>\r\nCall-ID: {call_id}\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n", pbx.addr())
}

const FROM_101: &str = "<sip:101@sbc.test>;tag=a101";
const FROM_102: &str = "<sip:102@sbc.test>;tag=a102";

async fn setup(extra: &[(&str, &str)]) -> (edge::TestPki, Pbx, RunningEdge) {
    let pki = edge::dev_pki();
    let pbx = Pbx::bind().await;
    let e = RunningEdge::start_with_pbx(&pki, pbx.addr(), extra).await;
    (pki, pbx, e)
}

/// Sends the positive control (a MESSAGE as 101) and asserts it is the next thing the PBX
/// receives — so nothing of the attack before it reached the PBX — and answers it.
async fn control_reaches_the_pbx_first(ph: &mut Phone, pbx: &Pbx, call_id: &str) {
    ph.send(&message(call_id, FROM_101, "<sip:200@sbc.test>", ""))
        .await;
    let (got, from) = pbx
        .recv()
        .await
        .expect("the legitimate MESSAGE is forwarded");
    assert_eq!(
        got.call_id().unwrap(),
        call_id,
        "the attack before it reached the PBX"
    );
    pbx.send(from, &pbx::response(&got, 200, "OK", "")).await;
    assert_eq!(ph.recv().await.expect("200").status(), Some(200));
}

async fn metric(e: &RunningEdge, line: &str) -> bool {
    http::get(e.admin_addr, "/metrics").await.1.contains(line)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_from_headers_in_message_or_invite_get_400_and_never_reach_the_pbx() {
    let (pki, pbx, e) = setup(&[]).await;
    let mut ph = phone::snom(&pki, &e).await;
    // MESSAGE: a second From line; INVITE: the compact form (RFC 3261 §7.3.3) and a
    // comma-joined second value (§7.3.1) — all the same header twice.
    let attacks = [
        message(
            "two-from-1",
            &format!("{FROM_101}\r\nFrom: {FROM_102}"),
            "<sip:200@sbc.test>",
            "",
        ),
        invite("two-from-2", &format!("{FROM_101}\r\nf: {FROM_102}"), ""),
        invite("two-from-3", &format!("{FROM_101}, {FROM_102}"), ""),
    ];
    for attack in &attacks {
        ph.send(attack).await;
        let r = ph.recv().await.expect("an answer");
        assert_eq!(r.status(), Some(400), "{attack}");
        assert!(r
            .header("Warning")
            .unwrap()
            .contains("From must appear once"));
    }
    control_reaches_the_pbx_first(&mut ph, &pbx, "two-from-ok").await;
    assert!(
        metric(
            &e,
            "pbx_edge_sip_malformed_total{reason=\"repeated_header\",side=\"phone\"} 3"
        )
        .await
    );
    e.stop().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_with_two_to_or_on_behalf_of_another_user_is_refused() {
    let (pki, pbx, e) = setup(&[]).await;
    let mut ph = phone::snom(&pki, &e).await;
    let two_to = phone::register("101", 5099, 1, "reg-two-to", "").replace(
        "To: <sip:101@sbc.test>\r\n",
        "To: <sip:101@sbc.test>\r\nTo: <sip:102@sbc.test>\r\n",
    );
    ph.send(&two_to).await;
    assert_eq!(ph.recv().await.unwrap().status(), Some(400));
    // To 101 (allowed) From 102 (the other device's user): third-party registration.
    let third_party = phone::register("101", 5099, 1, "reg-third", "")
        .replace("From: <sip:101@sbc.test>", "From: <sip:102@sbc.test>");
    ph.send(&third_party).await;
    let r = ph.recv().await.unwrap();
    assert_eq!(r.status(), Some(403));
    assert!(r.header("Warning").unwrap().contains("on behalf of"));
    // Positive control: its own REGISTER is the first thing the PBX sees.
    ph.send(&phone::register("101", 5099, 1, "reg-ok", ""))
        .await;
    let (got, _) = pbx.recv().await.expect("REGISTER forwarded");
    assert_eq!(got.call_id().unwrap(), "reg-ok");
    assert!(
        metric(
            &e,
            "pbx_edge_sip_denied_total{reason=\"third_party_register\"} 1"
        )
        .await
    );
    e.stop().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_to_tag_on_a_fresh_call_id_is_481_and_known_subscriptions_still_refresh() {
    let (pki, pbx, e) = setup(&[]).await;
    let mut ph = phone::snom(&pki, &e).await;
    // From 102 To 101;tag: the old fallback authorized it by the To user (101).
    ph.send(&message(
        "fresh-1",
        FROM_102,
        "<sip:101@sbc.test>;tag=x",
        "",
    ))
    .await;
    let r = ph.recv().await.unwrap();
    assert_eq!(r.status(), Some(481));
    // A SUBSCRIBE with a To tag on a fresh Call-ID, even as its own user.
    let resubscribe = |call_id: &str, to: &str, n: u32| {
        request(
            "SUBSCRIBE",
            call_id,
            FROM_101,
            to,
            "Event: dialog\r\nExpires: 600\r\n",
            "",
        )
        .replace("CSeq: 1 SUBSCRIBE", &format!("CSeq: {n} SUBSCRIBE"))
        .replace("-SUBSCRIBE\r\n", &format!("-SUBSCRIBE{n}\r\n"))
    };
    ph.send(&resubscribe("fresh-2", "<sip:200@sbc.test>;tag=x", 1))
        .await;
    assert_eq!(ph.recv().await.unwrap().status(), Some(481));

    // Positive control: a real subscription; the PBX's 202 creates the dialog, and the
    // phone's refresh inside it (To tag) is forwarded — the first thing after the attacks.
    ph.send(&resubscribe("blf-1", "<sip:200@sbc.test>", 1))
        .await;
    let (sub, from) = pbx.recv().await.expect("SUBSCRIBE forwarded");
    assert_eq!(sub.call_id().unwrap(), "blf-1");
    pbx.send(
        from,
        &pbx::response(&sub, 202, "Accepted", "Expires: 600\r\n"),
    )
    .await;
    let ok = ph.recv().await.unwrap();
    assert_eq!(ok.status(), Some(202));
    let to = ok.header("To").unwrap().to_owned();
    ph.send(&resubscribe("blf-1", &to, 2)).await;
    let (refresh, from) = pbx.recv().await.expect("refresh forwarded");
    assert_eq!(refresh.cseq().unwrap().seq, 2);
    pbx.send(from, &pbx::response(&refresh, 200, "OK", ""))
        .await;
    assert_eq!(ph.recv().await.unwrap().status(), Some(200));

    // The other device cannot use that dialog, knowing all of its identifiers.
    let mut other = phone::yealink(&pki, &e).await;
    other.send(&resubscribe("blf-1", &to, 3)).await;
    assert_eq!(other.recv().await.unwrap().status(), Some(481));
    control_reaches_the_pbx_first(&mut ph, &pbx, "fresh-ok").await;
    assert!(
        metric(
            &e,
            "pbx_edge_sip_dropped_total{reason=\"unknown_dialog\",side=\"phone\"} 2"
        )
        .await
    );
    assert!(
        metric(
            &e,
            "pbx_edge_sip_dropped_total{reason=\"foreign_dialog\",side=\"phone\"} 1"
        )
        .await
    );
    e.stop().await.expect("clean shutdown");
}

/// The identity headers a device of 101 sends to pass as 102, and the redirection headers.
const SPOOF: &str = "P-Asserted-Identity: <sip:102@sbc.test>\r\nP-Preferred-Identity: <sip:102@sbc.test>\r\nRemote-Party-ID: \"Boss\" <sip:102@sbc.test>;party=calling;screen=yes\r\nDiversion: <sip:102@sbc.test>;reason=unconditional\r\nHistory-Info: <sip:102@sbc.test>;index=1\r\nPrivacy: id\r\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identity_headers_from_a_phone_are_replaced_by_the_authorized_user() {
    let (pki, pbx, e) = setup(&[]).await;
    let mut ph = phone::snom(&pki, &e).await;
    ph.send(&message(
        "pai-1",
        "\"Desk\" <sip:101@sbc.test>;tag=a101",
        "<sip:200@sbc.test>",
        SPOOF,
    ))
    .await;
    let (got, from) = pbx.recv().await.expect("MESSAGE forwarded");
    assert_eq!(
        got.header_values("P-Asserted-Identity"),
        [format!("\"Desk\" <sip:101@{}>", pbx.addr().ip())],
        "only the edge's assertion, naming 101"
    );
    for h in [
        "P-Preferred-Identity",
        "Remote-Party-ID",
        "Diversion",
        "History-Info",
    ] {
        assert_eq!(got.header(h), None, "{h} removed");
    }
    assert_eq!(got.header("Privacy"), Some("id"), "Privacy kept");
    pbx.send(from, &pbx::response(&got, 200, "OK", "")).await;
    assert_eq!(ph.recv().await.unwrap().status(), Some(200));
    assert!(
        metric(
            &e,
            "pbx_edge_sip_headers_removed_total{header=\"P-Asserted-Identity\"} 1"
        )
        .await
    );
    assert!(
        metric(
            &e,
            "pbx_edge_sip_headers_removed_total{header=\"Diversion\"} 1"
        )
        .await
    );

    // Referred-By: kept when it names the device's own user, removed otherwise.
    for (n, by, kept) in [(1, "101", true), (2, "102", false)] {
        ph.send(&request(
            "REFER",
            &format!("refer-{n}"),
            FROM_101,
            "<sip:200@sbc.test>",
            &format!("Refer-To: <sip:300@sbc.test>\r\nReferred-By: <sip:{by}@sbc.test>\r\n"),
            "",
        ))
        .await;
        let (got, from) = pbx.recv().await.expect("REFER forwarded");
        assert_eq!(
            got.header("Referred-By").is_some(),
            kept,
            "Referred-By {by}"
        );
        pbx.send(from, &pbx::response(&got, 202, "Accepted", ""))
            .await;
        assert_eq!(ph.recv().await.unwrap().status(), Some(202));
    }
    // Nor can the identity ride inside the Refer-To URI (RFC 3515 §2.1 headers).
    ph.send(&request(
        "REFER",
        "refer-3",
        FROM_101,
        "<sip:200@sbc.test>",
        "Refer-To: <sip:300@sbc.test?P-Asserted-Identity=%3Csip%3A102%40sbc.test%3E>\r\n",
        "",
    ))
    .await;
    let (got, _) = pbx.recv().await.expect("REFER forwarded");
    assert_eq!(got.header("Refer-To"), Some("<sip:300@sbc.test>"));
    e.stop().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_strip_identity_headers_are_removed_and_none_asserted() {
    let (pki, pbx, e) = setup(&[("PBX_EDGE_SIP__IDENTITY_HEADERS", "strip")]).await;
    let mut ph = phone::snom(&pki, &e).await;
    ph.send(&message("strip-1", FROM_101, "<sip:200@sbc.test>", SPOOF))
        .await;
    let (got, _) = pbx.recv().await.expect("MESSAGE forwarded");
    for h in [
        "P-Asserted-Identity",
        "P-Preferred-Identity",
        "Remote-Party-ID",
        "Diversion",
        "History-Info",
    ] {
        assert_eq!(got.header(h), None, "{h} removed");
    }
    assert_eq!(got.header("Privacy"), Some("id"));
    e.stop().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replaces_cannot_take_over_another_devices_call() {
    let (pki, pbx, e) = setup(&[]).await;
    // The Yealink (102) has an established call.
    let mut other = phone::yealink(&pki, &e).await;
    other
        .send(
            &invite("victim-call", FROM_102, "")
                .replace("Contact: <sip:101@", "Contact: <sip:102@"),
        )
        .await;
    assert_eq!(other.recv().await.unwrap().status(), Some(100));
    let (inv, from) = pbx.recv().await.expect("INVITE forwarded");
    let sdp = "v=0\r\no=pbx 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 41000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=sendrecv\r\n";
    pbx.send(from, &pbx_200_with_sdp(&inv, sdp)).await;
    let ok = other.recv().await.unwrap();
    assert_eq!(ok.status(), Some(200));
    let to = ok.header("To").unwrap().to_owned();
    let ack = format!("ACK sip:200@127.0.0.1:5060 SIP/2.0\r\nVia: SIP/2.0/TLS 127.0.0.1:5099;branch=z9hG4bK-victim-ack\r\nFrom: {FROM_102}\r\nTo: {to}\r\nCall-ID: victim-call\r\nCSeq: 1 ACK\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n");
    other.send(&ack).await;
    assert_eq!(
        pbx.recv()
            .await
            .expect("ACK")
            .0
            .method()
            .map(|m| m.as_str()),
        Some("ACK")
    );

    // The Snom (101), having learned the call's identifiers, asks the PBX to replace it.
    let mut ph = phone::snom(&pki, &e).await;
    ph.send(&invite(
        "hijack-1",
        FROM_101,
        "Replaces: victim-call;to-tag=pbx-200;from-tag=a102\r\n",
    ))
    .await;
    let r = ph.recv().await.unwrap();
    assert_eq!(r.status(), Some(403));
    // Or to have it replaced through a transfer (Replaces inside Refer-To, RFC 3891 §7.1).
    ph.send(&request(
        "REFER",
        "hijack-2",
        FROM_101,
        "<sip:200@sbc.test>",
        "Refer-To: <sip:200@sbc.test?Replaces=victim-call%3Bto-tag%3Dpbx-200%3Bfrom-tag%3Da102>\r\n",
        "",
    ))
    .await;
    assert_eq!(ph.recv().await.unwrap().status(), Some(403));

    // Positive control: a Replaces naming no call the edge relays passes (the PBX decides).
    ph.send(&invite(
        "pickup-1",
        FROM_101,
        "Replaces: elsewhere;to-tag=p;from-tag=q\r\n",
    ))
    .await;
    assert_eq!(ph.recv().await.unwrap().status(), Some(100));
    let (got, _) = pbx.recv().await.expect("INVITE forwarded");
    assert_eq!(
        got.call_id().unwrap(),
        "pickup-1",
        "nothing of the attacks reached the PBX"
    );
    assert_eq!(
        got.header("Replaces"),
        Some("elsewhere;to-tag=p;from-tag=q")
    );
    assert!(
        metric(
            &e,
            "pbx_edge_sip_denied_total{reason=\"replaces_foreign_call\"} 2"
        )
        .await
    );
    e.stop().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pbx_messages_with_a_repeated_header_are_refused_or_dropped() {
    let (pki, pbx, e) = setup(&[]).await;
    let mut ph = phone::snom(&pki, &e).await;
    // Register 101 so the PBX can reach the phone.
    let edge_uri = register(&pbx, &mut ph, "pbx-dup-reg", 1, 600).await;

    // A request from the PBX with two From headers: 400 back to the PBX, nothing to the phone.
    let options = |n: u32, from: &str| pbx_options(&edge_uri, &pbx, &format!("pbx-dup-{n}"), from);
    pbx.send(
        e.pbx_local,
        &options(1, "<sip:200@pbx>;tag=p1\r\nFrom: <sip:102@pbx>;tag=p2"),
    )
    .await;
    let (r, _) = pbx.recv().await.expect("an answer to the PBX");
    assert_eq!(r.status(), Some(400));
    // A response from the PBX with two To headers: dropped; the correct one then passes.
    ph.send(&message("pbx-dup-msg", FROM_101, "<sip:200@sbc.test>", ""))
        .await;
    let (msg, from) = pbx.recv().await.expect("MESSAGE forwarded");
    let ok = pbx::response(&msg, 200, "OK", "");
    let doubled = ok.replacen("To: ", "To: <sip:102@sbc.test>;tag=evil\r\nTo: ", 1);
    pbx.send(from, &doubled).await;
    pbx.send(from, &ok).await;
    let got = ph.recv().await.expect("the correct 200");
    assert_eq!(got.status(), Some(200));
    assert_eq!(got.header_occurrences("To", true), 1);
    // And the first thing the phone receives from the PBX after the refused OPTIONS is a
    // correct one (positive control).
    pbx.send(e.pbx_local, &options(2, "<sip:200@pbx>;tag=p3"))
        .await;
    let got = ph.recv().await.expect("OPTIONS reaches the phone");
    assert_eq!(got.call_id().unwrap(), "pbx-dup-2");
    assert!(
        metric(
            &e,
            "pbx_edge_sip_malformed_total{reason=\"repeated_header\",side=\"pbx\"} 2"
        )
        .await
    );
    e.stop().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_phones_response_asserts_only_the_user_it_answers_as() {
    let (pki, pbx, e) = setup(&[]).await;
    let mut ph = phone::snom(&pki, &e).await;
    let edge_uri = register(&pbx, &mut ph, "resp-reg", 1, 600).await;

    let options = pbx_options(&edge_uri, &pbx, "resp-1", "<sip:200@pbx>;tag=p1");
    pbx.send(e.pbx_local, &options).await;
    let got = ph.recv().await.expect("OPTIONS reaches the phone");
    // The phone answers claiming to be 102 (the connected party a trusting PBX would show).
    let spoofed = phone::response(&got, 200).replace(
        "Content-Length: 0",
        "P-Asserted-Identity: <sip:102@sbc.test>\r\nRemote-Party-ID: <sip:102@sbc.test>;party=called\r\nContent-Length: 0",
    );
    ph.send(&spoofed).await;
    let (resp, _) = pbx.recv().await.expect("200 reaches the PBX");
    assert_eq!(resp.status(), Some(200));
    assert_eq!(
        resp.header_values("P-Asserted-Identity"),
        [format!("<sip:101@{}>", pbx.addr().ip())]
    );
    assert_eq!(resp.header("Remote-Party-ID"), None);
    e.stop().await.expect("clean shutdown");
}

/// Receives at the PBX until a request with `method` arrives (skipping the edge's 2xx
/// repetitions toward a UDP PBX), bounded by the PBX's receive timeout.
async fn pbx_request(
    pbx: &Pbx,
    method: &str,
) -> (pbx_edge::sip::message::SipMessage, std::net::SocketAddr) {
    for _ in 0..10 {
        let (m, from) = pbx
            .recv()
            .await
            .unwrap_or_else(|| panic!("{method} at the PBX"));
        if m.method().map(|m| m.as_str()) == Some(method) {
            return (m, from);
        }
    }
    panic!("no {method} at the PBX");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_callee_of_a_pbx_call_is_authorized_by_the_dialog_not_by_its_from_user() {
    let (pki, pbx, e) = setup(&[]).await;
    let mut ph = phone::snom(&pki, &e).await;
    let edge_uri = register(&pbx, &mut ph, "callee-reg", 1, 600).await;

    // Like Asterisk, the PBX addresses the call To the registered Contact: the phone's own
    // From in the dialog then carries the edge's flow token as user, no user of its device.
    let sdp = "v=0\r\no=pbx 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 41000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=sendrecv\r\n";
    let invite = format!("INVITE {edge_uri} SIP/2.0\r\nVia: SIP/2.0/UDP {pbx};branch=z9hG4bK-callee1\r\nFrom: \"Reception\" <sip:200@{pbx}>;tag=pbxtag\r\nTo: <{edge_uri}>\r\nCall-ID: callee-1\r\nCSeq: 10 INVITE\r\nMax-Forwards: 70\r\nContact: <sip:200@{pbx}>\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}", sdp.len(), pbx = pbx.addr());
    pbx.send(e.pbx_local, &invite).await;
    let inv = ph.recv().await.expect("phone gets the INVITE");
    let offer = std::str::from_utf8(inv.body()).unwrap();
    let tag = offer
        .lines()
        .filter_map(|l| l.strip_prefix("a=crypto:"))
        .find(|l| l.contains("AES_CM_128_HMAC_SHA1_80"))
        .and_then(|l| l.split_whitespace().next())
        .expect("an AES_CM_128_HMAC_SHA1_80 line")
        .to_owned();
    let answer = format!("v=0\r\no=phone 2 2 IN IP4 127.0.0.1\r\ns=call\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 40002 RTP/SAVP 0\r\na=crypto:{tag} AES_CM_128_HMAC_SHA1_80 inline:{KEY}\r\na=rtpmap:0 PCMU/8000\r\na=sendrecv\r\n");
    let to = inv.header("To").unwrap().to_owned();
    let ok = phone::response(&inv, 200)
        .replace(&format!("To: {to}"), &format!("To: {to};tag=phonetag"))
        .replace(
            "Content-Length: 0\r\n\r\n",
            &format!("Contact: <sip:101@127.0.0.1:5099;transport=tls>\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{answer}", answer.len()),
        );
    ph.send(&ok).await;
    let mut answered = None;
    for _ in 0..5 {
        // 100 Trying first; then the 200.
        match pbx.recv().await {
            Some((m, _)) if m.status() == Some(200) => {
                answered = Some(m);
                break;
            }
            Some(_) => {}
            None => break,
        }
    }
    let ok = answered.expect("PBX gets the 200");
    let ack = format!("ACK {edge_uri} SIP/2.0\r\nVia: SIP/2.0/UDP {pbx};branch=z9hG4bK-callee-ack\r\nFrom: \"Reception\" <sip:200@{pbx}>;tag=pbxtag\r\nTo: {}\r\nCall-ID: callee-1\r\nCSeq: 10 ACK\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n", ok.header("To").unwrap(), pbx = pbx.addr());
    pbx.send(e.pbx_local, &ack).await;
    assert_eq!(
        ph.recv().await.expect("ACK").method().map(|m| m.as_str()),
        Some("ACK")
    );

    let info = |from: &str, to_tag: &str, n: u32| {
        format!("INFO sip:127.0.0.1:{port} SIP/2.0\r\nVia: SIP/2.0/TLS 127.0.0.1:5099;branch=z9hG4bK-callee-info{n}\r\nFrom: {from}\r\nTo: \"Reception\" <sip:200@{pbx}>;tag={to_tag}\r\nCall-ID: callee-1\r\nCSeq: {n} INFO\r\nMax-Forwards: 70\r\nContent-Type: application/dtmf-relay\r\nContent-Length: 10\r\n\r\nSignal=5\r\n", port = e.tls_addr.port(), pbx = pbx.addr())
    };
    let own_from = format!("{to};tag=phonetag");
    // Attacks first: the other device with every identifier of this dialog, and this device
    // with a To tag of no dialog on that Call-ID.
    let mut other = phone::yealink(&pki, &e).await;
    other.send(&info(&own_from, "pbxtag", 1)).await;
    assert_eq!(other.recv().await.unwrap().status(), Some(481));
    ph.send(&info(&own_from, "guessed", 2)).await;
    assert_eq!(ph.recv().await.unwrap().status(), Some(481));
    // The callee's own in-dialog request passes; nothing is asserted for the token user.
    ph.send(&info(&own_from, "pbxtag", 3)).await;
    let (got, _) = pbx_request(&pbx, "INFO").await;
    assert_eq!(
        got.cseq().unwrap().seq,
        3,
        "the refused INFOs never reached the PBX"
    );
    assert_eq!(got.header("P-Asserted-Identity"), None);
    e.stop().await.expect("clean shutdown");
}
