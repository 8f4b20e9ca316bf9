//! The plan's keys drive the SRTP engine the way the SDP says: a "phone" that protects with
//! the key of its own `a=crypto` line is unprotected by the relay with `plan.phone`, and what
//! the relay protects with `plan.edge` is unprotected by the phone with the key it read from
//! the edge's `a=crypto` line — in both call directions, with an MKI.

#[path = "support/rtp.rs"]
mod rtp;
use rtp::rtp;

mod sdp_support;

use pbx_edge::sdp::{MediaPlan, Rewritten, Security, SrtpMode};
use pbx_edge::srtp::sdes::CryptoAttribute;
use pbx_edge::srtp::{ContextOptions, SrtpContext};
use sdp_support::*;

fn context(line: &CryptoAttribute) -> SrtpContext {
    let key = &line.keys[0];
    SrtpContext::new(
        &key.master_key,
        &ContextOptions::from_sdes(key, &line.session_params),
    )
    .unwrap()
}

/// The `a=crypto` line of `sdp` (the first one), parsed as the phone would.
fn crypto_in(sdp: &Rewritten) -> CryptoAttribute {
    let text = text(sdp);
    let line = lines_with(&text, "a=crypto:")[0]
        .trim_start_matches("a=crypto:")
        .to_owned();
    CryptoAttribute::parse(&line).unwrap()
}

/// `from` protects, `to` unprotects; the plain packet must come out unchanged.
fn roundtrip(from: &mut SrtpContext, to: &mut SrtpContext, seq: u16) {
    let plain = rtp(seq, 0x1234_5678, (0..160u8).map(|i| i.wrapping_mul(7)));
    let mut buf = plain.clone();
    buf.resize(plain.len() + pbx_edge::srtp::MAX_TRAILER_LEN, 0);
    let n = from.protect_rtp(&mut buf, plain.len()).unwrap();
    assert_ne!(&buf[12..plain.len()], &plain[12..], "payload not encrypted");
    let m = to.unprotect_rtp(&mut buf[..n]).unwrap();
    assert_eq!(&buf[..m], &plain[..]);
}

fn keys(plan: &MediaPlan) -> (CryptoAttribute, CryptoAttribute) {
    let relay = plan.streams[0].relayed().unwrap();
    let Security::Srtp(k) = &relay.security else {
        panic!("plain")
    };
    (k.phone.clone().unwrap(), k.edge.clone().unwrap())
}

#[test]
fn phone_offered_call_keys_work_both_ways() {
    let mut call = Call::new(SrtpMode::Mandatory);
    let phone_line = format!("1 AES_CM_128_HMAC_SHA1_80 inline:{K0}|2^31|7:2");
    let offer = call
        .phone_offer(&phone_sdp(&format!(
            "m=audio 4000 RTP/SAVP 0\na=crypto:{phone_line}\n"
        )))
        .unwrap();
    let answer = call.pbx_answer(&offer.plan, &pbx_audio_answer()).unwrap();
    let (plan_phone, plan_edge) = keys(&answer.plan);

    // Phone → edge: the phone protects with its own line, the relay unprotects with the plan.
    let mut phone_tx = context(&CryptoAttribute::parse(&phone_line).unwrap());
    let mut relay_rx = context(&plan_phone);
    roundtrip(&mut phone_tx, &mut relay_rx, 1);
    // Edge → phone: the relay protects with the plan, the phone with what the SDP told it.
    let mut relay_tx = context(&plan_edge);
    let mut phone_rx = context(&crypto_in(&answer));
    roundtrip(&mut relay_tx, &mut phone_rx, 1);
    roundtrip(&mut relay_tx, &mut phone_rx, 2);
}

/// RFC 4568 §9.1 MKIs up to 128 octets, as in the widely copied `|2^20|1:32`: the offer is
/// taken, the edge answers with an MKI of the same length (RFC 4568 §6.1 lets the answerer
/// choose, but phones that send one expect one), and the keys work both ways with it.
#[test]
fn long_mki_offers_are_taken_and_work_both_ways() {
    for (mki, len) in [("1:32", 32usize), ("1:128", 128), ("4294967296:5", 5)] {
        let mut call = Call::new(SrtpMode::Mandatory);
        let phone_line = format!("1 AES_CM_128_HMAC_SHA1_80 inline:{K0}|2^20|{mki}");
        let offer = call
            .phone_offer(&phone_sdp(&format!(
                "m=audio 4000 RTP/SAVP 0\na=crypto:{phone_line}\n"
            )))
            .unwrap();
        let answer = call.pbx_answer(&offer.plan, &pbx_audio_answer()).unwrap();
        let (plan_phone, plan_edge) = keys(&answer.plan);
        assert_eq!(plan_phone.keys[0].mki.map(|m| m.len()), Some(len), "{mki}");
        let seen = crypto_in(&answer);
        assert_eq!(seen.keys[0].mki.map(|m| m.len()), Some(len), "{mki}");
        assert!(text(&answer).contains(&format!("|1:{len}\r\n")), "{mki}");

        let mut phone_tx = context(&CryptoAttribute::parse(&phone_line).unwrap());
        let mut relay_rx = context(&plan_phone);
        roundtrip(&mut phone_tx, &mut relay_rx, 1);
        let mut relay_tx = context(&plan_edge);
        let mut phone_rx = context(&seen);
        roundtrip(&mut relay_tx, &mut phone_rx, 1);
    }
}

#[test]
fn pbx_offered_call_keys_work_both_ways() {
    let mut call = Call::with_suites(
        SrtpMode::Mandatory,
        &[pbx_edge::srtp::CryptoSuite::AeadAes128Gcm],
    );
    let offer = call
        .pbx_offer(&pbx_sdp("m=audio 20000 RTP/AVP 0\n"))
        .unwrap();
    // The phone takes the edge's first line (AEAD_AES_128_GCM, tag 1) and answers its own key.
    let edge_line_seen_by_phone = crypto_in(&offer);
    let phone_line = format!("1 AEAD_AES_128_GCM inline:{G1}");
    let answer = call
        .phone_answer(
            &offer.plan,
            &phone_sdp(&format!("m=audio 5000 RTP/SAVP 0\na=crypto:{phone_line}\n")),
        )
        .unwrap();
    let (plan_phone, plan_edge) = keys(&answer.plan);
    assert_eq!(plan_edge.suite, edge_line_seen_by_phone.suite);

    let mut phone_tx = context(&CryptoAttribute::parse(&phone_line).unwrap());
    let mut relay_rx = context(&plan_phone);
    roundtrip(&mut phone_tx, &mut relay_rx, 10);
    let mut relay_tx = context(&plan_edge);
    let mut phone_rx = context(&edge_line_seen_by_phone);
    roundtrip(&mut relay_tx, &mut phone_rx, 10);
}
