//! Calls end to end in-process: a TLS "phone" speaking SRTP (protected and checked with the
//! edge's own SRTP engine) ⇄ pbx-edge ⇄ a UDP "PBX" speaking plain RTP, in both directions.
//! Written in the scenario language of `support::scenario`.

use crate::support::http;
use crate::support::offer::*;
use crate::support::pbx;
use crate::support::phone;
use crate::support::ports;
use crate::support::rtp::voice;
use crate::support::scenario::*;
use pbx_edge::sip::message::SipMessage;
use pbx_edge::srtp::CryptoSuite;
use std::time::Duration;

/// SIP T1 of 100 ms (fast retransmissions) and the relay's port range.
const ENV: [(&str, &str); 3] = [
    ("PBX_EDGE_SIP__T1_MS", "100"),
    ("PBX_EDGE_MEDIA__PORT_MIN", ports::CALL.0),
    ("PBX_EDGE_MEDIA__PORT_MAX", ports::CALL.1),
];
const RELAY: std::ops::RangeInclusive<u16> = 42000..=42999;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn phone_calls_the_pbx_with_srtp_and_hangs_up() {
    let lab = Lab::start(&ENV).await;
    let pbx = &lab.pbx;
    let mut c = lab.call("call-out-1", "", true).await;
    let body = text(c.inv.body());
    assert!(
        body.contains("RTP/AVP") && !body.contains("SAVP") && !body.contains("a=crypto"),
        "{body}"
    );
    assert!(
        body.contains("a=rtpmap:101 telephone-event/8000"),
        "codecs kept: {body}"
    );
    let contact = c.inv.header("Contact").unwrap();
    assert!(
        contact.contains(&lab.e.pbx_local.to_string()),
        "edge Contact toward the PBX: {contact}"
    );

    pbx.send(c.from, &pbx_answer(&c.inv, 180, "Ringing", "", ""))
        .await;
    assert_eq!(c.ph.recv().await.unwrap().status(), Some(180));
    let sdp = pbx_sdp(c.media.pbx_port());
    let ok = answer(pbx, &mut c.ph, &c.inv, c.from, &sdp).await;
    let answer = text(ok.body());
    assert!(answer.contains("RTP/SAVP"), "{answer}");
    let edge_line = crypto_line(ok.body());
    assert_eq!(edge_line.tag, 1, "answer echoes the offer's tag");
    assert_eq!(edge_line.suite, CryptoSuite::AesCm128HmacSha1_80);
    assert!(
        ok.header("Contact")
            .unwrap()
            .contains(&lab.e.tls_addr.to_string()),
        "the phone's remote target is the edge"
    );

    // ACK for the 2xx goes end to end.
    c.d.confirmed_by(&ok);
    let got_ack = ack(pbx, &mut c.ph, &c.d, 1).await;
    assert_eq!(
        got_ack.request_uri().unwrap().to_string(),
        "sip:200@127.0.0.1:5060",
        "restored PBX target"
    );
    let relay = c.media.check(ok.body(), c.inv.body(), &edge_line).await;

    let calls = http::get(lab.e.admin_addr, "/api/calls").await.1;
    assert!(
        calls.contains("call-out-1")
            && calls.contains("AES_CM_128_HMAC_SHA1_80")
            && calls.contains("\"established\":true"),
        "{calls}"
    );

    // A forged SRTP packet is dropped, not relayed. Wait until the relay has judged it:
    // a BYE sent at once could close the stream before a loaded machine read the packet.
    let mut forged = voice(99, 0x1111);
    forged.extend_from_slice(&[0u8; 10]);
    c.media
        .phone
        .send_to(&forged, relay.phone_side)
        .await
        .unwrap();
    let failures = "pbx_edge_media_srtp_auth_failures_total";
    let m = wait_metric(lab.e.admin_addr, failures, |v| v >= 1.0).await;
    assert_eq!(
        http::metric(&m, failures),
        1.0,
        "the forged packet fails authentication"
    );

    // BYE from the phone (and no forged RTP reaches the PBX's SIP socket before it).
    phone_hangs_up(pbx, &mut c.ph, &c.d, 2, None).await;
    let m = assert_no_calls(lab.e.admin_addr).await;
    assert!(http::metric(&m, failures) >= 1.0, "{m}");
    assert_eq!(
        http::metric(&m, "pbx_edge_calls_total{outcome=\"answered\"}"),
        1.0
    );
    lab.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pbx_calls_a_registered_phone_and_connection_loss_ends_the_call() {
    let lab = Lab::start(&ENV).await;
    let pbx = &lab.pbx;
    let mut c = lab.incoming("call-in-1", "", true).await;
    assert_eq!(
        c.inv
            .request_uri()
            .unwrap()
            .to_string()
            .to_ascii_lowercase(),
        "sip:101@127.0.0.1:5099;transport=tls;line=abc"
    );
    let offer = text(c.inv.body());
    assert!(
        offer.contains("RTP/SAVP") && offer.contains("AES_CM_128_HMAC_SHA1_80"),
        "{offer}"
    );
    // The phone picks the AES_CM_128_HMAC_SHA1_80 line and answers with its own key.
    let chosen = offered_line(c.inv.body(), CryptoSuite::AesCm128HmacSha1_80);
    let answer = phone_sdp(c.media.phone_port(), chosen.tag, 2);
    c.ph.send(&with_body(&phone_answer_to(&c.inv, 200, ""), &answer))
        .await;
    let (ok, _) = pbx.recv().await.expect("PBX gets 200");
    assert_eq!(ok.status(), Some(200));
    assert!(text(ok.body()).contains("RTP/AVP"));
    // The PBX does not ACK at once: the edge repeats its 2xx over UDP (RFC 3261 §13.3.1.4).
    let (again, _) = pbx.recv().await.expect("2xx repeated until ACK");
    assert_eq!(again.status(), Some(200));
    c.d.confirmed_by(&ok);
    pbx.send(lab.e.pbx_local, &c.d.request("ACK", 10, "", ""))
        .await;
    let got = c.ph.recv().await.expect("phone gets the ACK");
    assert!(is_method(&got, "ACK"), "{got}");
    c.media.check(c.inv.body(), ok.body(), &chosen).await;

    // The phone's connection drops mid-call: the edge sends BYE to the PBX.
    drop(c.ph);
    let (bye, _) = pbx_recv_where(pbx, "BYE after the connection was lost", |m| {
        is_method(m, "BYE")
    })
    .await;
    assert_eq!(bye.call_id().unwrap(), "call-in-1");
    pbx.send(lab.e.pbx_local, &pbx::response(&bye, 200, "OK", ""))
        .await;
    assert_no_calls(lab.e.admin_addr).await;

    // No phone any more: a new INVITE gets 430 at once, and nothing leaks.
    let again = lab.pbx_dialog("call-in-2", &c.edge_uri);
    let sdp = pbx_sdp(c.media.pbx_port());
    pbx.send(lab.e.pbx_local, &again.invite(&c.edge_uri, "", &sdp))
        .await;
    let (r, _) = pbx_recv_where(pbx, "a final response", |m| {
        m.status().is_some_and(|s| s >= 200)
    })
    .await;
    assert_eq!(r.status(), Some(430));
    let m = wait_idle(lab.e.admin_addr).await;
    assert_metrics(&m, &[("pbx_edge_media_port_pairs_in_use", 0.0)]);
    lab.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn phone_cancels_a_ringing_call_and_a_plain_offer_is_refused() {
    let lab = Lab::start(&ENV).await;
    let pbx = &lab.pbx;
    let mut c = lab.call("call-out-1", "", true).await;
    pbx.send(c.from, &pbx::response(&c.inv, 180, "Ringing", ""))
        .await;
    assert_eq!(c.ph.recv().await.unwrap().status(), Some(180));

    let branch = c.d.invite_branch();
    let cancel =
        c.d.request_on("sip:200@sbc.test", &branch, "CANCEL", 1, "", "");
    c.ph.send(&cancel).await;
    let ok = c.ph.recv().await.expect("200 for the CANCEL");
    assert_eq!(
        (ok.status(), ok.cseq().unwrap().method.as_str()),
        (Some(200), "CANCEL")
    );
    let (cn, from) = pbx.recv().await.expect("PBX gets the CANCEL");
    assert!(is_method(&cn, "CANCEL"), "{cn}");
    assert_eq!(
        cn.top_via().unwrap().branch(),
        c.inv.top_via().unwrap().branch(),
        "same branch as the INVITE (§9.1)"
    );
    pbx.send(from, &pbx::response(&cn, 200, "OK", "")).await;
    pbx.send(from, &pbx::response(&c.inv, 487, "Request Terminated", ""))
        .await;
    let t = c.ph.recv().await.expect("487 to the phone");
    assert_eq!(t.status(), Some(487));
    let (ack, _) = pbx.recv().await.expect("the edge ACKs the 487 itself");
    assert!(is_method(&ack, "ACK"), "{ack}");
    let m = assert_no_calls(lab.e.admin_addr).await;
    assert_metrics(&m, &[("pbx_edge_calls_total{outcome=\"cancelled\"}", 1.0)]);

    // srtp = mandatory: a plain RTP/AVP offer is refused with 488 and never reaches the PBX.
    let plain = phone_offer(c.media.phone_port())
        .replace("RTP/SAVP", "RTP/AVP")
        .replace(
            &format!("a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{PHONE_KEY}\r\n"),
            "",
        );
    let d2 = lab.dialog("call-out-2", "caller2");
    c.ph.send(&d2.invite("sip:200@sbc.test", "", &plain)).await;
    let r = phone_recv_where(&mut c.ph, "a final response", |m| m.status() != Some(100)).await;
    assert_eq!(r.status(), Some(488));
    assert!(
        pbx.recv_within(Duration::from_millis(300)).await.is_none(),
        "nothing forwarded"
    );
    let m = wait_idle(lab.e.admin_addr).await;
    assert_metrics(&m, &[("pbx_edge_media_port_pairs_in_use", 0.0)]);
    lab.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hold_resume_and_update_keep_the_srtp_context() {
    let lab = Lab::start(&ENV).await;
    let pbx = &lab.pbx;
    let mut c = lab.call("call-out-1", "", true).await;
    let sdp = pbx_sdp(c.media.pbx_port());
    let (ok, mut relay) = c.answer_and_ack(pbx).await;
    let edge_key = crypto_line(ok.body()).keys[0].master_key.clone();
    c.media.both_ways(&mut relay, 1..=20).await;

    // Hold, then resume: re-INVITEs with a=sendonly / a=sendrecv and the same crypto line.
    for (cseq, dir, pbx_dir) in [(2u32, "sendonly", "recvonly"), (3, "sendrecv", "sendrecv")] {
        let offer =
            phone_sdp(c.media.phone_port(), 1, cseq).replace("a=sendrecv", &format!("a={dir}"));
        c.ph.send(&c.d.reoffer("INVITE", cseq, &offer)).await;
        assert_eq!(c.ph.recv().await.unwrap().status(), Some(100));
        let (re, from) = pbx.recv().await.expect("PBX gets the re-INVITE");
        assert_eq!(
            re.request_uri().unwrap().to_string(),
            "sip:200@127.0.0.1:5060",
            "in-dialog target restored"
        );
        let body = text(re.body());
        assert!(body.contains(&format!("a={dir}")), "{body}");
        assert_eq!(media_addr(re.body()), relay.pbx_side, "same relay ports");
        let reply = sdp.replace("a=sendrecv", &format!("a={pbx_dir}"));
        let ok = answer(pbx, &mut c.ph, &re, from, &reply).await;
        assert_eq!(
            crypto_line(ok.body()).keys[0].master_key,
            edge_key,
            "the edge keeps its key (RFC 4568 §7.1.4)"
        );
        ack(pbx, &mut c.ph, &c.d, cseq).await;
    }
    // An UPDATE with SDP (RFC 3311) is an offer too: rewritten both ways, no ACK.
    let offer = phone_sdp(c.media.phone_port(), 1, 4);
    c.ph.send(&c.d.reoffer("UPDATE", 4, &offer)).await;
    let (up, from) = pbx.recv().await.expect("PBX gets the UPDATE");
    assert!(is_method(&up, "UPDATE"), "{up}");
    let body = text(up.body());
    assert!(
        body.contains("RTP/AVP") && !body.contains("a=crypto"),
        "{body}"
    );
    let ok = answer(pbx, &mut c.ph, &up, from, &sdp).await;
    assert!(text(ok.body()).contains("RTP/SAVP"));
    assert_eq!(crypto_line(ok.body()).keys[0].master_key, edge_key);

    // Same key on both sides: the contexts (ROC, replay windows) continue, sequence numbers
    // carry on from where they were, and the phone's receiving context, untouched since
    // before the hold, authenticates the edge's SRTP after the resume.
    c.media.both_ways(&mut relay, 21..=25).await;
    lab.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prack_info_refer_notify_pass_and_media_timeout_ends_the_call_on_both_legs() {
    let lab = Lab::start(&[
        ("PBX_EDGE_SIP__T1_MS", "100"),
        ("PBX_EDGE_MEDIA__PORT_MIN", ports::CALL_TIMERS.0),
        ("PBX_EDGE_MEDIA__PORT_MAX", ports::CALL_TIMERS.1),
        ("PBX_EDGE_MEDIA__TIMEOUT_SECS", "2"),
    ])
    .await;
    let pbx = &lab.pbx;
    let timers = "Supported: 100rel, timer\r\nSession-Expires: 1800\r\n";
    let mut c = lab.call("call-out-1", timers, true).await;
    assert_eq!(
        c.inv.header("Session-Expires"),
        Some("1800"),
        "session timers pass through"
    );
    let sdp = pbx_sdp(c.media.pbx_port());
    // 183 with early media, sent reliably (RFC 3262).
    let reliable = "Require: 100rel\r\nRSeq: 1\r\n";
    pbx.send(
        c.from,
        &pbx_answer(&c.inv, 183, "Session Progress", reliable, &sdp),
    )
    .await;
    let p183 = c.ph.recv().await.expect("183");
    assert_eq!(p183.status(), Some(183));
    assert_eq!(p183.header("RSeq"), Some("1"));
    let early_line = crypto_line(p183.body());
    // In-dialog requests carry the tags of the dialog they belong to: the early dialog of
    // the 183 for the PRACK, the dialog the 200 confirmed for the rest (RFC 3261 §12.2.1.1;
    // this fake PBX tags each response differently, as a forking proxy would).
    c.d.confirmed_by(&p183);
    c.ph.send(&c.d.request("PRACK", 2, "RAck: 1 1 INVITE\r\n", ""))
        .await;
    let (prack, from2) = pbx.recv().await.expect("PBX gets the PRACK");
    assert!(is_method(&prack, "PRACK"), "{prack}");
    assert_eq!(
        prack.request_uri().unwrap().to_string(),
        "sip:200@127.0.0.1:5060"
    );
    pbx.send(from2, &pbx::response(&prack, 200, "OK", "")).await;
    assert_eq!(
        c.ph.recv().await.unwrap().cseq().unwrap().method.as_str(),
        "PRACK"
    );
    // 200 to the INVITE: the same edge key as the 183.
    let refresher = "Session-Expires: 1800;refresher=uac\r\n";
    pbx.send(c.from, &pbx_answer(&c.inv, 200, "OK", refresher, &sdp))
        .await;
    let ok = c.ph.recv().await.unwrap();
    assert_eq!(ok.status(), Some(200));
    assert_eq!(
        crypto_line(ok.body()).keys[0].master_key,
        early_line.keys[0].master_key
    );
    c.d.confirmed_by(&ok);
    ack(pbx, &mut c.ph, &c.d, 1).await;

    // INFO (DTMF) and REFER (blind transfer) from the phone; NOTIFY (sipfrag) from the PBX.
    let dtmf = "Content-Type: application/dtmf-relay\r\n";
    let info = c.d.request("INFO", 3, dtmf, "Signal=5\r\nDuration=160\r\n");
    c.ph.send(&info).await;
    let (info, f) = pbx.recv().await.expect("INFO");
    assert_eq!(info.body(), b"Signal=5\r\nDuration=160\r\n");
    pbx.send(f, &pbx::response(&info, 200, "OK", "")).await;
    assert_eq!(c.ph.recv().await.unwrap().status(), Some(200));
    let transfer = "Refer-To: <sip:300@sbc.test>\r\nReferred-By: <sip:101@sbc.test>\r\nContact: <sip:101@127.0.0.1:5099;transport=tls>\r\n";
    c.ph.send(&c.d.request("REFER", 4, transfer, "")).await;
    let (refer, f) = pbx.recv().await.expect("REFER");
    assert_eq!(refer.header("Refer-To"), Some("<sip:300@sbc.test>"));
    let edge_contact = pbx::contact_uri(&refer).unwrap();
    assert!(
        edge_contact.contains(&lab.e.pbx_local.to_string()),
        "{edge_contact}"
    );
    pbx.send(f, &pbx::response(&refer, 202, "Accepted", ""))
        .await;
    assert_eq!(c.ph.recv().await.unwrap().status(), Some(202));
    let sipfrag = "Event: refer\r\nSubscription-State: terminated;reason=noresource\r\nContent-Type: message/sipfrag;version=2.0\r\n";
    let notify = c.d.reversed(pbx.addr(), &edge_contact).request(
        "NOTIFY",
        20,
        sipfrag,
        "SIP/2.0 200 OK\r\n",
    );
    pbx.send(lab.e.pbx_local, &notify).await;
    let n = c.ph.recv().await.expect("NOTIFY reaches the phone");
    assert!(is_method(&n, "NOTIFY"), "{n}");
    c.ph.send(&phone::response(&n, 200)).await;
    let (r, _) = pbx.recv().await.expect("200 to the NOTIFY");
    assert_eq!(r.status(), Some(200));

    // No media at all: after media.timeout_secs the edge ends the call on both legs.
    let (pbx_bye, _) =
        pbx_recv_where(pbx, "BYE after the media timeout", |m| is_method(m, "BYE")).await;
    assert_eq!(pbx_bye.call_id().unwrap(), "call-out-1");
    assert_eq!(
        pbx_bye.request_uri().unwrap().to_string(),
        "sip:200@127.0.0.1:5060"
    );
    pbx.send(lab.e.pbx_local, &pbx::response(&pbx_bye, 200, "OK", ""))
        .await;
    let phone_bye =
        c.ph.recv_within(Duration::from_secs(6))
            .await
            .expect("BYE to the phone");
    assert!(is_method(&phone_bye, "BYE"), "{phone_bye}");
    assert_eq!(
        phone_bye
            .request_uri()
            .unwrap()
            .to_string()
            .to_ascii_lowercase(),
        "sip:101@127.0.0.1:5099;transport=tls"
    );
    c.ph.send(&phone::response(&phone_bye, 200)).await;
    let m = wait_idle(lab.e.admin_addr).await;
    assert_metrics(
        &m,
        &[
            ("pbx_edge_calls_active", 0.0),
            ("pbx_edge_calls_total{outcome=\"media_timeout\"}", 1.0),
            ("pbx_edge_media_port_pairs_in_use", 0.0),
        ],
    );
    lab.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_challenged_invite_is_retried_with_credentials_and_the_call_is_listed() {
    let lab = Lab::start(&ENV).await;
    let pbx = &lab.pbx;
    let mut c = lab.call("call-out-1", "", true).await;
    let challenge = "Proxy-Authenticate: Digest realm=\"asterisk\",nonce=\"n1\"\r\n";
    let refusal = pbx::response(&c.inv, 407, "Proxy Authentication Required", challenge);
    pbx.send(c.from, &refusal).await;
    let challenge = c.ph.recv().await.unwrap();
    assert_eq!(challenge.status(), Some(407));
    assert!(challenge
        .header("Proxy-Authenticate")
        .unwrap()
        .contains("nonce=\"n1\""));
    let (ack, _) = pbx
        .recv()
        .await
        .expect("the edge ACKs the 407 on the PBX leg");
    assert!(is_method(&ack, "ACK"), "{ack}");
    // The phone ACKs the 407 on its leg (absorbed) and retries with credentials.
    let branch = c.d.invite_branch();
    c.d.confirmed_by(&challenge);
    let ack =
        c.d.request_on("sip:200@sbc.test", &branch, "ACK", 1, "", "");
    c.ph.send(&ack).await;
    let credentials = "Proxy-Authorization: Digest username=\"101\",realm=\"asterisk\",nonce=\"n1\",uri=\"sip:200@sbc.test\",response=\"00112233445566778899aabbccddeeff\"\r\n";
    let retry = c
        .invite
        .replace(&branch, &format!("{branch}b"))
        .replace("CSeq: 1 INVITE", "CSeq: 2 INVITE")
        .replace(
            "Max-Forwards: 70\r\n",
            &format!("Max-Forwards: 70\r\n{credentials}"),
        );
    let (inv2, from) = dial(pbx, &mut c.ph, &retry).await;
    assert!(
        is_method(&inv2, "INVITE"),
        "nothing else reached the PBX: {inv2}"
    );
    assert!(inv2
        .header("Proxy-Authorization")
        .unwrap()
        .contains("response=\"00112233445566778899aabbccddeeff\""));
    let sdp = pbx_sdp(c.media.pbx_port());
    answer(pbx, &mut c.ph, &inv2, from, &sdp).await;
    let calls = http::get(lab.e.admin_addr, "/api/calls").await.1;
    let v: serde_json::Value = serde_json::from_str(&calls).unwrap();
    let call = &v["calls"][0];
    assert_eq!(call["call_id"], "call-out-1");
    assert_eq!(call["established"], true);
    assert_eq!(call["direction"], "phone_to_pbx");
    assert_eq!(call["pbx_contact"], "sip:200@127.0.0.1:5060");
    let phone_contact = call["phone_contact"].as_str().unwrap();
    assert!(phone_contact.contains("127.0.0.1:5099"), "{calls}");
    let codecs = call["codecs"].as_array().unwrap();
    assert!(codecs.iter().any(|c| c == "PCMU/8000"), "{calls}");
    // The 407 attempt counts as challenged, the retry as answered.
    let m = metrics(lab.e.admin_addr).await;
    assert_metrics(
        &m,
        &[
            ("pbx_edge_calls_total{outcome=\"challenged\"}", 1.0),
            ("pbx_edge_calls_total{outcome=\"answered\"}", 1.0),
        ],
    );
    lab.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_connection_cannot_lease_more_than_its_share_of_calls() {
    let lab = Lab::start(&ENV).await;
    let mut ph = lab.phone().await;
    let limit = pbx_edge::config::SipConfig::default().max_calls_per_device;
    for i in 0..=limit {
        let d = lab.dialog(&format!("flood-{i}"), "caller1");
        let offer = phone_offer(40000 + i as u16 * 2);
        ph.send(&d.invite("sip:200@sbc.test", "", &offer)).await;
        let r = ph.recv().await.expect("an answer");
        if r.status() == Some(100) {
            assert!(i < limit, "call {i} over the limit was accepted");
            // Forwarded (the edge may repeat earlier INVITEs the PBX leaves unanswered,
            // RFC 3261 §17.1.1.2 Timer A, on a machine slower than T1).
            let id = format!("flood-{i}");
            pbx_recv_where(&lab.pbx, &id, |m| m.call_id().is_ok_and(|c| c == id)).await;
            continue;
        }
        assert_eq!(i, limit);
        assert_eq!(r.status(), Some(486));
        assert!(r
            .header("Warning")
            .unwrap()
            .contains("sip.max_calls_per_device"));
    }
    // The gauge is refreshed by the core about once a second: bounded poll.
    let active = "pbx_edge_calls_active";
    let m = wait_metric(lab.e.admin_addr, active, |v| v == limit as f64).await;
    assert_eq!(http::metric(&m, active), limit as f64, "{m}");
    assert_eq!(
        http::metric(&m, "pbx_edge_media_active_streams"),
        limit as f64
    );
    // The connection closes: every call and port is released.
    drop(ph);
    let m = wait_idle(lab.e.admin_addr).await;
    assert_metrics(
        &m,
        &[(active, 0.0), ("pbx_edge_media_port_pairs_in_use", 0.0)],
    );
    lab.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delayed_offer_the_2xx_offers_and_the_ack_answers() {
    let lab = Lab::start(&ENV).await;
    let pbx = &lab.pbx;
    // An INVITE without SDP; the PBX offers in its 2xx.
    let mut c = lab.call("late-1", "", false).await;
    assert!(c.inv.body().is_empty());
    let sdp = pbx_sdp(c.media.pbx_port());
    let ok = answer(pbx, &mut c.ph, &c.inv, c.from, &sdp).await;
    let offer = text(ok.body());
    assert!(offer.contains("RTP/SAVP"), "{offer}");
    let chosen = offered_line(ok.body(), CryptoSuite::AesCm128HmacSha1_80);
    // The phone answers in the ACK.
    c.d.confirmed_by(&ok);
    let answer = phone_sdp(c.media.phone_port(), chosen.tag, 3);
    c.ph.send(&c.d.request("ACK", 1, "", &answer)).await;
    let (got_ack, _) = pbx.recv().await.expect("ACK with the rewritten answer");
    let pbx_answer = text(got_ack.body());
    assert!(
        pbx_answer.contains("RTP/AVP") && !pbx_answer.contains("a=crypto"),
        "{pbx_answer}"
    );
    c.media.check(ok.body(), got_ack.body(), &chosen).await;
    lab.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_offer_in_the_pbxs_2xx_is_acked_and_hung_up() {
    let lab = Lab::start(&ENV).await;
    let pbx = &lab.pbx;
    let mut c = lab.call("bad-late", "", false).await;
    let (inv, from) = (&c.inv, c.from);
    // The PBX's 2xx offers something the edge cannot use.
    pbx.send(from, &pbx_200_with_sdp(inv, "this is not SDP\r\n"))
        .await;
    let refused = c.ph.recv().await.unwrap();
    assert!(
        refused.status().is_some_and(|s| s >= 400),
        "the phone gets an error, not the 2xx: {:?}",
        refused.status()
    );
    // The PBX's dialog exists all the same: the edge ACKs its 2xx, then hangs up.
    let (ack, _) = pbx.recv().await.expect("the edge ACKs the refused 2xx");
    assert!(is_method(&ack, "ACK"), "{ack}");
    assert_eq!(ack.cseq().unwrap().seq, 1);
    let pbx_tag = SipMessage::parse(pbx_200_with_sdp(inv, "").as_bytes())
        .unwrap()
        .to_tag()
        .unwrap();
    assert_eq!(ack.to_tag().unwrap(), pbx_tag);
    let (bye, from) = pbx.recv().await.expect("then a BYE");
    assert!(is_method(&bye, "BYE"), "{bye}");
    assert_eq!(bye.cseq().unwrap().seq, 2);
    assert_eq!(bye.to_tag().unwrap(), ack.to_tag().unwrap());
    assert_eq!(
        bye.request_uri().unwrap().to_string(),
        "sip:200@127.0.0.1:5060",
        "to the PBX's Contact"
    );
    pbx.send(from, &pbx::response(&bye, 200, "OK", "")).await;
    // The PBX repeats its 200 (say the ACK was lost): ACKed again, not hung up again, and
    // never relayed to the phone, which already has its error.
    pbx.send(from, &pbx_200_with_sdp(inv, "this is not SDP\r\n"))
        .await;
    let (again, _) = pbx.recv().await.expect("the repeated 2xx is ACKed again");
    assert!(is_method(&again, "ACK"), "{again}");
    assert!(
        pbx.recv_within(Duration::from_millis(500)).await.is_none(),
        "no second BYE"
    );
    assert!(
        c.ph.recv_within(Duration::from_millis(500)).await.is_none(),
        "the phone never sees the PBX's 200"
    );
    // The repeated 2xx is counted.
    let m = assert_no_calls(lab.e.admin_addr).await;
    let dropped = "pbx_edge_sip_dropped_total{reason=\"2xx_without_call\",side=\"pbx\"}";
    assert_metrics(&m, &[(dropped, 1.0)]);
    lab.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_re_invite_from_the_pbx_reaches_the_phone_with_srtp() {
    let lab = Lab::start(&ENV).await;
    let pbx = &lab.pbx;
    let mut c = lab.call("call-out-1", "", true).await;
    let edge_contact = pbx::contact_uri(&c.inv).unwrap();
    let (ok, _) = c.answer_and_ack(pbx).await;
    let edge_key = crypto_line(ok.body()).keys[0].master_key.clone();

    // The PBX puts the phone on hold (Asterisk: sendonly, music on hold).
    let hold = pbx_sdp(c.media.pbx_port()).replace("a=sendrecv", "a=sendonly");
    let reinvite =
        c.d.reversed(pbx.addr(), &edge_contact)
            .reoffer("INVITE", 100, &hold);
    pbx.send(lab.e.pbx_local, &reinvite).await;
    let (trying, _) = pbx.recv().await.unwrap();
    assert_eq!(trying.status(), Some(100));
    let re = c.ph.recv().await.expect("the phone gets the re-INVITE");
    assert_eq!(
        re.request_uri().unwrap().to_string().to_ascii_lowercase(),
        "sip:101@127.0.0.1:5099;transport=tls"
    );
    let offer = text(re.body());
    assert!(
        offer.contains("RTP/SAVP") && offer.contains("a=sendonly"),
        "{offer}"
    );
    assert!(
        crypto_lines(re.body())
            .iter()
            .any(|c| c.keys[0].master_key == edge_key),
        "the edge keeps its key on a re-offer"
    );
    let chosen = offered_line(re.body(), CryptoSuite::AesCm128HmacSha1_80);
    let answer = phone_sdp(c.media.phone_port(), chosen.tag, 2).replace("a=sendrecv", "a=recvonly");
    c.ph.send(&with_body(&phone::response(&re, 200), &answer))
        .await;
    let (ok, _) = pbx.recv().await.expect("200 to the PBX's re-INVITE");
    assert_eq!(ok.status(), Some(200));
    let body = text(ok.body());
    assert!(
        body.contains("RTP/AVP") && body.contains("a=recvonly") && !body.contains("crypto"),
        "{body}"
    );
    lab.stop().await;
}

// ---------------------------------------------------------------- offer/answer in 1xx-rel,
// PRACK and the delayed offer from the PBX (RFC 3262 §5, RFC 6337 §2.2, RFC 3261 §13.2.1)

/// What makes a provisional response reliable (RFC 3262 §7.1).
const RELIABLE: &str = "Require: 100rel\r\nRSeq: 1\r\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pbx_offers_in_a_reliable_183_and_the_phones_prack_answers() {
    let lab = Lab::start(&ENV).await;
    let pbx = &lab.pbx;
    // An INVITE without SDP that supports 100rel.
    let mut c = lab.call("rel-1", "Supported: 100rel\r\n", false).await;
    assert!(c.inv.body().is_empty());
    let (phone_port, pbx_port) = (c.media.phone_port(), c.media.pbx_port());

    // SDP in an unreliable 1xx cannot offer (RFC 3261 §13.2.1): removed and counted, never
    // passed on as plain RTP.
    let sdp = pbx_sdp(pbx_port);
    let p180 = with_body(&pbx::response(&c.inv, 180, "Ringing", ""), &sdp);
    pbx.send(c.from, &p180).await;
    let p180 = c.ph.recv().await.expect("180");
    assert_eq!(p180.status(), Some(180));
    assert!(p180.body().is_empty() && p180.header("Content-Type").is_none());
    let m = metrics(lab.e.admin_addr).await;
    assert_eq!(
        http::metric(
            &m,
            "pbx_edge_sip_dropped_total{reason=\"sdp_outside_offer_answer\",side=\"pbx\"}"
        ),
        1.0,
        "{m}"
    );

    // The PBX offers in a reliable 183 (RFC 3262 §5).
    let early = pbx_answer(&c.inv, 183, "Session Progress", RELIABLE, &sdp);
    pbx.send(c.from, &early).await;
    let p183 = c.ph.recv().await.expect("183 with the edge's offer");
    assert_eq!((p183.status(), p183.header("RSeq")), (Some(183), Some("1")));
    assert_phone_leg_sdp(p183.body(), &RELAY, pbx_port);
    assert!(text(p183.body()).contains("a=rtpmap:101 telephone-event/8000"));
    let chosen = offered_line(p183.body(), CryptoSuite::AesCm128HmacSha1_80);

    // A retransmission of the 183 (the PBX has no PRACK yet) repeats the same offer.
    pbx.send(c.from, &early).await;
    let again = c.ph.recv().await.expect("the repeated 183");
    assert_eq!(again.status(), Some(183));
    assert_eq!(again.body(), p183.body(), "the same edge offer, same keys");

    // The phone answers in the PRACK.
    c.d.confirmed_by(&p183);
    let answer_sdp = phone_sdp(phone_port, chosen.tag, 1);
    let prack = c.d.request("PRACK", 2, "RAck: 1 1 INVITE\r\n", &answer_sdp);
    c.ph.send(&prack).await;
    let (got, from2) = pbx_recv_where(pbx, "PRACK", |m| is_method(m, "PRACK")).await;
    assert_eq!(got.header("RAck"), Some("1 1 INVITE"));
    assert_pbx_leg_sdp(got.body(), &RELAY, phone_port);
    pbx.send(from2, &pbx::response(&got, 200, "OK", "")).await;
    let ok = c.ph.recv().await.expect("200 to the PRACK");
    assert!(is_response(&ok, 200, "PRACK"));
    assert!(ok.body().is_empty());

    // The 2xx repeats the 183's SDP: the phone sees the offer it already answered, never the
    // PBX's plain SDP.
    let ok = answer(pbx, &mut c.ph, &c.inv, c.from, &sdp).await;
    assert_eq!(
        ok.body(),
        p183.body(),
        "the 183's session (RFC 3261 §13.2.1)"
    );
    c.d.confirmed_by(&ok);
    c.ph.send(&c.d.request("ACK", 1, "", "")).await;
    let (ack, _) = pbx_recv_where(pbx, "ACK", |m| is_method(m, "ACK")).await;
    assert!(ack.body().is_empty());

    c.media.check(p183.body(), got.body(), &chosen).await;
    phone_hangs_up(pbx, &mut c.ph, &c.d, 3, None).await;
    assert_idle(lab.e.admin_addr).await;
    lab.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_phone_offers_in_a_reliable_183_to_the_pbx_and_the_pbxs_prack_answers() {
    let lab = Lab::start(&ENV).await;
    let pbx = &lab.pbx;
    let mut c = lab
        .incoming("rel-in-1", "Supported: 100rel\r\n", false)
        .await;
    assert!(c.inv.body().is_empty(), "the delayed offer stays delayed");
    let (phone_port, pbx_port) = (c.media.phone_port(), c.media.pbx_port());

    // The phone offers SRTP in a reliable 183.
    let offer = phone_sdp(phone_port, 1, 1);
    c.ph.send(&with_body(&phone_answer_to(&c.inv, 183, RELIABLE), &offer))
        .await;
    let (got183, _) = pbx_recv_where(pbx, "183", |m| m.status() == Some(183)).await;
    assert_eq!(got183.header("RSeq"), Some("1"));
    assert_pbx_leg_sdp(got183.body(), &RELAY, phone_port);
    c.d.target = pbx::contact_uri(&got183).expect("the edge's Contact in the 183");
    c.d.confirmed_by(&got183);

    // The PBX answers plain RTP in its PRACK.
    let prack =
        c.d.request("PRACK", 11, "RAck: 1 10 INVITE\r\n", &pbx_sdp(pbx_port));
    pbx.send(lab.e.pbx_local, &prack).await;
    let got = phone_recv_where(&mut c.ph, "PRACK", |m| is_method(m, "PRACK")).await;
    assert_phone_leg_sdp(got.body(), &RELAY, pbx_port);
    let edge_line = crypto_line(got.body());
    assert_eq!(edge_line.tag, 1, "the answer echoes the phone's tag");
    assert_eq!(edge_line.suite, CryptoSuite::AesCm128HmacSha1_80);
    assert_eq!(
        text(got.body()).matches("a=crypto:").count(),
        1,
        "one line in an answer"
    );
    c.ph.send(&phone::response(&got, 200)).await;
    pbx_recv_where(pbx, "200 to the PRACK", |m| is_response(m, 200, "PRACK")).await;

    // The phone's 2xx repeats its 183 offer: the PBX gets the 183's rewritten SDP again.
    c.ph.send(&with_body(&phone_answer_to(&c.inv, 200, ""), &offer))
        .await;
    let (ok, _) = pbx_recv_where(pbx, "200 to the INVITE", |m| is_response(m, 200, "INVITE")).await;
    assert_eq!(
        ok.body(),
        got183.body(),
        "the 183's session (RFC 3261 §13.2.1)"
    );
    c.d.confirmed_by(&ok);
    pbx.send(lab.e.pbx_local, &c.d.request("ACK", 10, "", ""))
        .await;
    phone_recv_where(&mut c.ph, "ACK", |m| is_method(m, "ACK")).await;

    c.media.check(got.body(), got183.body(), &edge_line).await;
    phone_hangs_up(pbx, &mut c.ph, &c.d.phone_side(lab.e.tls_addr), 1, None).await;
    assert_idle(lab.e.admin_addr).await;
    lab.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pbx_delayed_offer_the_phones_2xx_offers_and_the_pbxs_ack_answers() {
    let lab = Lab::start(&ENV).await;
    let pbx = &lab.pbx;
    let mut c = lab.incoming("late-in-1", "", false).await;
    assert!(c.inv.body().is_empty());
    let (phone_port, pbx_port) = (c.media.phone_port(), c.media.pbx_port());

    // The phone offers SRTP in its 2xx.
    let offer = phone_sdp(phone_port, 1, 1);
    c.ph.send(&with_body(&phone_answer_to(&c.inv, 200, ""), &offer))
        .await;
    let (ok, _) = pbx_recv_where(pbx, "200", |m| is_response(m, 200, "INVITE")).await;
    assert_pbx_leg_sdp(ok.body(), &RELAY, phone_port);
    assert!(text(ok.body()).contains("a=rtpmap:0 PCMU/8000"));
    c.d.confirmed_by(&ok);

    // The PBX answers plain RTP in the ACK; the phone gets SRTP with the edge's key.
    pbx.send(
        lab.e.pbx_local,
        &c.d.request("ACK", 10, "", &pbx_sdp(pbx_port)),
    )
    .await;
    let got = phone_recv_where(&mut c.ph, "ACK", |m| is_method(m, "ACK")).await;
    assert_phone_leg_sdp(got.body(), &RELAY, pbx_port);
    let edge_line = crypto_line(got.body());
    assert_eq!(
        (edge_line.tag, edge_line.suite),
        (1, CryptoSuite::AesCm128HmacSha1_80)
    );
    assert_ne!(
        edge_line.keys[0].master_key,
        phone_key_line(1).keys[0].master_key
    );

    c.media.check(got.body(), ok.body(), &edge_line).await;
    let calls = http::get(lab.e.admin_addr, "/api/calls").await.1;
    assert!(
        calls.contains("late-in-1")
            && calls.contains("pbx_to_phone")
            && calls.contains("\"established\":true"),
        "{calls}"
    );
    phone_hangs_up(pbx, &mut c.ph, &c.d.phone_side(lab.e.tls_addr), 1, None).await;
    assert_idle(lab.e.admin_addr).await;
    lab.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offer_in_prack_is_answered_in_its_2xx_and_bad_prack_sdp_is_refused() {
    let lab = Lab::start(&ENV).await;
    let pbx = &lab.pbx;
    let mut c = lab.call("call-out-1", "", true).await;
    let (phone_port, pbx_port) = (c.media.phone_port(), c.media.pbx_port());
    let edge_pbx_side = media_addr(c.inv.body());
    // The PBX answers the INVITE's offer in a reliable 183.
    let sdp = pbx_sdp(pbx_port);
    let early = pbx_answer(&c.inv, 183, "Session Progress", RELIABLE, &sdp);
    pbx.send(c.from, &early).await;
    let p183 = c.ph.recv().await.expect("183");
    assert_phone_leg_sdp(p183.body(), &RELAY, pbx_port);
    let edge_line = crypto_line(p183.body());
    let edge_phone_side = media_addr(p183.body());
    c.d.confirmed_by(&p183);
    let d = c.d.clone();
    let prack = |cseq: u32, sdp: &str| d.request("PRACK", cseq, "RAck: 1 1 INVITE\r\n", sdp);

    // SDP in a PRACK that names no INVITE (RAck missing): 400, nothing forwarded.
    let no_rack = prack(2, &phone_sdp(phone_port, 1, 2)).replace("RAck: 1 1 INVITE\r\n", "");
    c.ph.send(&no_rack).await;
    let r = c.ph.recv().await.expect("the PRACK refused");
    assert!(is_response(&r, 400, "PRACK"), "{r}");
    assert!(r.header("Warning").unwrap().contains("RAck"), "{r}");
    // Malformed SDP in a PRACK: a clear error, nothing forwarded.
    c.ph.send(&prack(2, "v=0\r\nm=audio x RTP/SAVP 0\r\n"))
        .await;
    let r = c.ph.recv().await.expect("the PRACK refused");
    assert!(
        r.status().is_some_and(|s| s == 400 || s == 488)
            && is_response(&r, r.status().unwrap(), "PRACK"),
        "{r}"
    );
    assert!(r.header("Warning").unwrap().contains("SDP"), "{r}");
    // A plain RTP/AVP offer in a PRACK (srtp = mandatory): 488, nothing forwarded.
    let plain = format!("v=0\r\no=snom 1 5 IN IP4 127.0.0.1\r\ns=call\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio {phone_port} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n");
    c.ph.send(&prack(3, &plain)).await;
    let r = c.ph.recv().await.expect("the plain PRACK offer refused");
    assert!(is_response(&r, 488, "PRACK"), "{r}");
    assert!(
        pbx.recv_within(Duration::from_millis(300)).await.is_none(),
        "no refused PRACK reached the PBX"
    );

    // A new offer in the PRACK (RFC 3262 §5), e.g. hold: rewritten for the PBX, its 2xx
    // answered back in SRTP with the edge's unchanged key.
    let hold = phone_sdp(phone_port, 1, 2).replace("a=sendrecv", "a=sendonly");
    c.ph.send(&prack(4, &hold)).await;
    let (got, from2) = pbx_recv_where(pbx, "PRACK", |m| is_method(m, "PRACK")).await;
    assert_pbx_leg_sdp(got.body(), &RELAY, phone_port);
    let held = text(got.body());
    assert!(held.contains("a=sendonly"), "{held}");
    assert_eq!(media_addr(got.body()), edge_pbx_side, "same relay stream");
    let answer = sdp.replace("a=sendrecv", "a=recvonly");
    let ok = with_body(&pbx::response(&got, 200, "OK", ""), &answer);
    pbx.send(from2, &ok).await;
    let ok = c.ph.recv().await.expect("200 to the PRACK");
    assert!(is_response(&ok, 200, "PRACK"), "{ok}");
    assert_phone_leg_sdp(ok.body(), &RELAY, pbx_port);
    let answered = text(ok.body());
    assert!(answered.contains("a=recvonly"), "{answered}");
    assert_eq!(media_addr(ok.body()), edge_phone_side);
    assert_eq!(
        crypto_line(ok.body()).keys[0].master_key,
        edge_line.keys[0].master_key,
        "the edge keeps its key (RFC 4568 §7.1.4)"
    );
    lab.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_offer_in_prack_before_the_answer_gets_500_with_retry_after() {
    let lab = Lab::start(&ENV).await;
    let pbx = &lab.pbx;
    let mut c = lab.call("call-out-1", "", true).await;
    // A reliable 180 without SDP: the INVITE's offer is still unanswered.
    pbx.send(c.from, &pbx_answer(&c.inv, 180, "Ringing", RELIABLE, ""))
        .await;
    let p180 = c.ph.recv().await.expect("180");
    assert_eq!(p180.status(), Some(180));
    c.d.confirmed_by(&p180);
    let offer = phone_sdp(c.media.phone_port(), 1, 2);
    let rack = "RAck: 1 1 INVITE\r\n";
    c.ph.send(&c.d.request("PRACK", 2, rack, &offer)).await;
    let r = c.ph.recv().await.expect("the PRACK refused");
    assert!(is_response(&r, 500, "PRACK"), "{r}");
    let retry: u32 = r.header("Retry-After").unwrap().trim().parse().unwrap();
    assert!(retry <= 10, "RFC 3261 §14.2");
    assert!(
        pbx.recv_within(Duration::from_millis(300)).await.is_none(),
        "not forwarded"
    );
    // The same PRACK without SDP passes.
    c.ph.send(&c.d.request("PRACK", 3, rack, "")).await;
    let (got, _) = pbx_recv_where(pbx, "PRACK", |m| is_method(m, "PRACK")).await;
    assert!(got.body().is_empty());
    lab.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unusable_offer_in_a_reliable_183_fails_the_call_on_both_legs() {
    let lab = Lab::start(&ENV).await;
    let pbx = &lab.pbx;
    let mut c = lab.call("bad-1", "Supported: 100rel\r\n", false).await;
    // An offer whose only stream the edge cannot relay (SRTP from the PBX leg).
    let bad = pbx_sdp(40000).replace("RTP/AVP", "RTP/SAVP");
    let early = pbx_answer(&c.inv, 183, "Session Progress", RELIABLE, &bad);
    pbx.send(c.from, &early).await;
    let r =
        c.ph.recv()
            .await
            .expect("the INVITE fails toward the phone");
    assert!(
        r.status().is_some_and(|s| (400..500).contains(&s))
            && is_response(&r, r.status().unwrap(), "INVITE"),
        "{r}"
    );
    assert!(r.body().is_empty() && !text(&r.to_bytes()).contains("RTP/SAVP"));
    assert!(r.header("Warning").unwrap().contains("SDP"), "{r}");
    // The PBX's INVITE is cancelled; its 487 ends the call and the edge ACKs it.
    let (cn, from) = pbx_recv_where(pbx, "CANCEL", |m| is_method(m, "CANCEL")).await;
    assert_eq!(
        cn.top_via().unwrap().branch(),
        c.inv.top_via().unwrap().branch()
    );
    pbx.send(from, &pbx::response(&cn, 200, "OK", "")).await;
    pbx.send(from, &pbx::response(&c.inv, 487, "Request Terminated", ""))
        .await;
    pbx_recv_where(pbx, "ACK of the 487", |m| is_method(m, "ACK")).await;
    assert_idle(lab.e.admin_addr).await;
    lab.stop().await;
}
