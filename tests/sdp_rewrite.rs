//! Offer/answer semantics of the rewrite: SRTP policy, rtcp-mux and `a=rtcp`, hold and
//! resume, re-offers and SRTP context continuity (RFC 4568 §7.1.4), origin versioning
//! (RFC 3264 §8), several m-lines, IPv6, and every error with its SIP status.

mod sdp_support;

use core::net::IpAddr;

use pbx_edge::sdp::{
    analyse_phone_offer, rewrite_pbx_answer, rewrite_phone_offer, ContextChange, Direction,
    EdgeAddresses, MediaKind, RejectReason, RewriteContext, RewriteError, Security, Side, SrtpMode,
    Stage, StreamState,
};
use sdp_support::*;

fn savp_audio(port: u16, key: &str, extra: &str) -> String {
    format!(
        "m=audio {port} RTP/SAVP 0 101\na=rtpmap:0 PCMU/8000\na=rtpmap:101 telephone-event/8000\n\
         a=fmtp:101 0-16\n{extra}a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{key}\n"
    )
}

/// The phone's peer of the first stream of `plan`.
fn phone_peer(plan: &pbx_edge::sdp::MediaPlan) -> &pbx_edge::sdp::Peer {
    let relay = plan.streams[0].relayed().expect("relayed");
    relay.phone.as_ref().expect("the phone's SDP was read")
}

/// The PBX's peer of the first stream of `plan`.
fn pbx_peer(plan: &pbx_edge::sdp::MediaPlan) -> &pbx_edge::sdp::Peer {
    let relay = plan.streams[0].relayed().expect("relayed");
    relay.pbx.as_ref().expect("the PBX's SDP was read")
}

fn keys_of(plan: &pbx_edge::sdp::MediaPlan, mline: usize) -> pbx_edge::sdp::SrtpKeys {
    let relay = plan.streams[mline].relayed().expect("relayed");
    match &relay.security {
        Security::Srtp(k) => (**k).clone(),
        Security::Plain => panic!("stream {mline} is plain"),
    }
}

// --- SRTP policy ------------------------------------------------------------------------------

#[test]
fn mandatory_refuses_a_plain_offer_with_488() {
    let body = phone_sdp("m=audio 4000 RTP/AVP 0\na=rtpmap:0 PCMU/8000\n");
    let err = Call::new(SrtpMode::Mandatory)
        .phone_offer(&body)
        .unwrap_err();
    assert_eq!(err, RewriteError::PlainRtpRefused { mline: 0 });
    assert_eq!((err.sip_status(), err.label()), (488, "plain_rtp_refused"));
}

#[test]
fn optional_relays_a_plain_offer_as_plain_rtp() {
    let mut call = Call::new(SrtpMode::Optional);
    let body = phone_sdp("m=audio 4000 RTP/AVP 0\na=rtpmap:0 PCMU/8000\na=ptime:20\n");
    let offer = call.phone_offer(&body).unwrap();
    assert_eq!(
        offer.plan.streams[0].relayed().unwrap().security,
        Security::Plain
    );
    assert!(text(&offer).contains("m=audio 40002 RTP/AVP 0\r\n"));
    let back = text(&call.pbx_answer(&offer.plan, &pbx_audio_answer()).unwrap());
    assert!(back.contains("m=audio 40000 RTP/AVP 0 101\r\n"), "{back}");
    assert!(!back.contains("a=crypto"));
}

#[test]
fn best_effort_avp_with_crypto_is_srtp_in_both_modes() {
    // Decision (see SDP_NOTES.md): RTP/AVP + a=crypto negotiates SRTP, so the media is
    // protected; `mandatory` only refuses streams that would be plain.
    for mode in [SrtpMode::Optional, SrtpMode::Mandatory] {
        let mut call = Call::new(mode);
        let body = phone_sdp(&format!(
            "m=audio 4000 RTP/AVP 0\na=crypto:3 AES_CM_128_HMAC_SHA1_80 inline:{K0}\n"
        ));
        let offer = call.phone_offer(&body).unwrap();
        let back = text(&call.pbx_answer(&offer.plan, &pbx_audio_answer()).unwrap());
        assert!(
            back.contains("m=audio 40000 RTP/AVP 0 101\r\n"),
            "{mode:?}: {back}"
        );
        assert_eq!(
            lines_with(&back, "a=crypto:3 AES_CM_128_HMAC_SHA1_80 inline:").len(),
            1
        );
    }
}

#[test]
fn mandatory_rejects_only_the_plain_stream_when_another_is_srtp() {
    let body = phone_sdp(&format!(
        "{}m=video 4002 RTP/AVP 99\na=rtpmap:99 H264/90000\n",
        savp_audio(4000, K0, "")
    ));
    let mut call = Call::new(SrtpMode::Mandatory);
    let offer = call.phone_offer(&body).unwrap();
    assert_eq!(
        offer.plan.streams[1].state,
        StreamState::Rejected(RejectReason::PlainRefused)
    );
    let pbx = text(&offer);
    assert_eq!(
        lines_with(&pbx, "m="),
        ["m=audio 40002 RTP/AVP 0 101", "m=video 0 RTP/AVP 99"]
    );
}

#[test]
fn optional_offers_the_phone_avp_with_crypto() {
    let mut call = Call::with_suites(
        SrtpMode::Optional,
        &[pbx_edge::srtp::CryptoSuite::AesCm128HmacSha1_80],
    );
    let offer = call
        .pbx_offer(&pbx_sdp("m=audio 20000 RTP/AVP 0\n"))
        .unwrap();
    let sdp = text(&offer);
    assert!(sdp.contains("m=audio 40000 RTP/AVP 0\r\n"), "{sdp}");
    assert_eq!(lines_with(&sdp, "a=crypto:").len(), 1);
    // The phone declines SRTP: plain relay.
    let answer = call
        .phone_answer(&offer.plan, &phone_sdp("m=audio 5000 RTP/AVP 0\n"))
        .unwrap();
    assert_eq!(
        answer.plan.streams[0].relayed().unwrap().security,
        Security::Plain
    );
}

#[test]
fn edge_offer_always_contains_aes_cm_128_80_strongest_first() {
    use pbx_edge::srtp::CryptoSuite::*;
    let mut call = Call::with_suites(SrtpMode::Mandatory, &[AesCm128HmacSha1_32, AeadAes256Gcm]);
    let sdp = text(
        &call
            .pbx_offer(&pbx_sdp("m=audio 20000 RTP/AVP 0\n"))
            .unwrap(),
    );
    let suites: Vec<&str> = lines_with(&sdp, "a=crypto:")
        .iter()
        .map(|l| l.split(' ').nth(1).unwrap())
        .collect();
    assert_eq!(
        suites,
        [
            "AEAD_AES_256_GCM",
            "AES_CM_128_HMAC_SHA1_80",
            "AES_CM_128_HMAC_SHA1_32"
        ]
    );
    let tags: Vec<&str> = lines_with(&sdp, "a=crypto:")
        .iter()
        .map(|l| &l[9..10])
        .collect();
    assert_eq!(tags, ["1", "2", "3"]);
}

// --- rtcp-mux and a=rtcp -------------------------------------------------------------------

#[test]
fn phone_rtcp_mux_is_accepted_and_not_offered_to_the_pbx() {
    let mut call = Call::new(SrtpMode::Mandatory);
    let offer = call
        .phone_offer(&phone_sdp(&savp_audio(4000, K0, "a=rtcp-mux\n")))
        .unwrap();
    assert!(offer.port_requests_were_mux());
    let phone = phone_peer(&offer.plan);
    assert!(phone.rtcp_mux);
    assert_eq!(phone.rtcp_port, 4000);
    assert!(!text(&offer).contains("rtcp-mux"));
    let answer = call.pbx_answer(&offer.plan, &pbx_audio_answer()).unwrap();
    assert_eq!(lines_with(&text(&answer), "a=rtcp-mux").len(), 1);
    assert!(!pbx_peer(&answer.plan).rtcp_mux);
}

trait MuxRequest {
    fn port_requests_were_mux(&self) -> bool;
}
impl MuxRequest for pbx_edge::sdp::Rewritten {
    fn port_requests_were_mux(&self) -> bool {
        self.plan.streams[0]
            .relayed()
            .unwrap()
            .phone
            .as_ref()
            .is_some_and(|p| p.rtcp_mux)
    }
}

#[test]
fn port_requests_describe_the_streams() {
    let ctx_policy = pbx_edge::sdp::SrtpPolicy::default();
    let mut origin = pbx_edge::sdp::LegOrigin::new(1, 1);
    let mut keys = FixedKeys(0);
    let ctx = RewriteContext {
        edge: edge(),
        policy: &ctx_policy,
        origin: &mut origin,
        previous: None,
        keys: &mut keys,
    };
    let body = phone_sdp(&format!(
        "{}m=video 0 RTP/SAVP 99\n{}",
        savp_audio(4000, K0, "a=rtcp-mux\n"),
        savp_audio(4004, K1, "").replace("m=audio", "m=video")
    ));
    let offer = analyse_phone_offer(body.as_bytes(), &ctx).unwrap();
    let requests = offer.port_requests();
    assert_eq!(requests.len(), 2);
    assert_eq!(
        (
            requests[0].mline,
            &requests[0].kind,
            requests[0].phone_rtcp_mux
        ),
        (0, &MediaKind::Audio, true)
    );
    assert_eq!(
        (
            requests[1].mline,
            &requests[1].kind,
            requests[1].phone_rtcp_mux
        ),
        (2, &MediaKind::Video, false)
    );
    assert!(requests.iter().all(|r| r.reuse.is_none()));
}

#[test]
fn rtcp_attribute_is_read_and_rewritten_to_the_relay_port() {
    let mut call = Call::new(SrtpMode::Mandatory);
    let offer = call
        .phone_offer(&phone_sdp(&savp_audio(
            4000,
            K0,
            "a=rtcp:4011 IN IP4 192.0.2.77\n",
        )))
        .unwrap();
    let phone = phone_peer(&offer.plan);
    assert_eq!(
        (phone.rtcp_port, phone.rtcp_address),
        (4011, "192.0.2.77".parse::<IpAddr>().unwrap())
    );
    assert_eq!(lines_with(&text(&offer), "a=rtcp"), ["a=rtcp:40003"]);
    // Without a=rtcp, RTCP is on RTP + 1 (RFC 3550 §11).
    let offer = Call::new(SrtpMode::Mandatory)
        .phone_offer(&phone_sdp(&savp_audio(4000, K0, "")))
        .unwrap();
    assert_eq!(phone_peer(&offer.plan).rtcp_port, 4001);
}

#[test]
fn pbx_rtcp_mux_is_answered_to_the_pbx_whatever_the_phone_does() {
    let mut call = Call::with_suites(
        SrtpMode::Mandatory,
        &[pbx_edge::srtp::CryptoSuite::AesCm128HmacSha1_80],
    );
    let offer = call
        .pbx_offer(&pbx_sdp("m=audio 20000 RTP/AVP 0\na=rtcp-mux\n"))
        .unwrap();
    assert_eq!(lines_with(&text(&offer), "a=rtcp-mux").len(), 1);
    let no_mux = phone_sdp(&format!(
        "m=audio 5000 RTP/SAVP 0\na=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{K1}\n"
    ));
    let answer = call.phone_answer(&offer.plan, &no_mux).unwrap();
    let relay = answer.plan.streams[0].relayed().unwrap();
    assert!(relay.pbx.as_ref().unwrap().rtcp_mux);
    assert!(!relay.phone.as_ref().unwrap().rtcp_mux);
    assert_eq!(relay.phone.as_ref().unwrap().rtcp_port, 5001);
    assert_eq!(lines_with(&text(&answer), "a=rtcp-mux").len(), 1);
}

#[test]
fn phone_mux_in_an_answer_is_ignored_when_not_offered() {
    let mut call = Call::with_suites(
        SrtpMode::Mandatory,
        &[pbx_edge::srtp::CryptoSuite::AesCm128HmacSha1_80],
    );
    let offer = call
        .pbx_offer(&pbx_sdp("m=audio 20000 RTP/AVP 0\n"))
        .unwrap();
    assert!(!text(&offer).contains("rtcp-mux"));
    let body = phone_sdp(&format!(
        "m=audio 5000 RTP/SAVP 0\na=rtcp-mux\na=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{K1}\n"
    ));
    let answer = call.phone_answer(&offer.plan, &body).unwrap();
    assert!(!phone_peer(&answer.plan).rtcp_mux);
    assert!(!text(&answer).contains("rtcp-mux"));
}

// --- hold, resume, re-offers -----------------------------------------------------------------

#[test]
fn legacy_hold_with_null_address_is_mirrored() {
    let mut call = Call::new(SrtpMode::Mandatory);
    let offer = call
        .phone_offer(&phone_sdp(&savp_audio(4000, K0, "")))
        .unwrap();
    call.pbx_answer(&offer.plan, &pbx_audio_answer()).unwrap();
    // Cisco SPA style hold: c=0.0.0.0, no direction attribute (RFC 3264 §8.4).
    let hold = crlf(&format!(
        "v=0\no=- 1 2 IN IP4 192.0.2.50\ns=-\nc=IN IP4 0.0.0.0\nt=0 0\n{}",
        savp_audio(4000, K0, "")
    ));
    let offer = call.phone_offer(&hold).unwrap();
    let pbx = text(&offer);
    assert!(pbx.contains("c=IN IP4 0.0.0.0\r\n"), "{pbx}");
    assert!(pbx.contains("o=- 2000 2 IN IP4 198.51.100.10\r\n"), "{pbx}");
    assert!(offer.plan.streams[0].is_on_hold());
    let answer = call.pbx_answer(&offer.plan, &pbx_audio_answer()).unwrap();
    assert!(text(&answer).contains("c=IN IP4 203.0.113.10\r\n"));
    // The PBX holds the phone the same way.
    let pbx_hold = pbx_sdp("m=audio 20000 RTP/AVP 0\nc=IN IP4 0.0.0.0\na=sendonly\n");
    let offer = call.pbx_offer(&pbx_hold).unwrap();
    let phone = text(&offer);
    assert!(
        phone.contains("c=IN IP4 0.0.0.0\r\n") && phone.contains("a=sendonly\r\n"),
        "{phone}"
    );
}

#[test]
fn sendonly_hold_and_resume_keep_the_srtp_contexts() {
    let mut call = Call::new(SrtpMode::Mandatory);
    let offer = call
        .phone_offer(&phone_sdp(&savp_audio(4000, K0, "")))
        .unwrap();
    let first = call.pbx_answer(&offer.plan, &pbx_audio_answer()).unwrap();
    let edge_key = keys_of(&first.plan, 0).edge.unwrap();
    assert_eq!(keys_of(&first.plan, 0).phone_context, ContextChange::New);
    assert_eq!(keys_of(&first.plan, 0).edge_context, ContextChange::New);

    // Hold with the same key: both contexts continue (ROC continuity).
    let offer = call
        .phone_offer(&phone_sdp(&savp_audio(4000, K0, "a=sendonly\n")))
        .unwrap();
    assert!(offer.plan.streams[0].port_request_reused());
    assert_eq!(phone_peer(&offer.plan).direction, Direction::SendOnly);
    assert!(text(&offer).contains("a=sendonly\r\n"));
    let held = call
        .pbx_answer(
            &offer.plan,
            &pbx_audio_answer().replace("a=sendrecv", "a=recvonly"),
        )
        .unwrap();
    assert!(held.plan.streams[0].is_on_hold());
    assert_eq!(keys_of(&held.plan, 0).phone_context, ContextChange::Keep);
    assert_eq!(keys_of(&held.plan, 0).edge_context, ContextChange::Keep);
    assert!(text(&held).contains("a=recvonly\r\n"));

    // Resume with a new key: new phone context (RFC 4568 §7.1.4); the edge keeps its key.
    let offer = call
        .phone_offer(&phone_sdp(&savp_audio(4000, K2, "")))
        .unwrap();
    let resumed = call.pbx_answer(&offer.plan, &pbx_audio_answer()).unwrap();
    let k = keys_of(&resumed.plan, 0);
    assert_eq!(
        (k.phone_context, k.edge_context),
        (ContextChange::New, ContextChange::Keep)
    );
    assert_eq!(k.edge.unwrap().keys, edge_key.keys);
    assert!(!resumed.plan.streams[0].is_on_hold());
}

trait Reused {
    fn port_request_reused(&self) -> bool;
}
impl Reused for pbx_edge::sdp::StreamPlan {
    fn port_request_reused(&self) -> bool {
        self.relayed().is_some_and(|r| r.ports.phone.rtp == 40000)
    }
}

#[test]
fn a_moved_stream_gets_a_fresh_edge_key() {
    let mut call = Call::new(SrtpMode::Mandatory);
    let offer = call
        .phone_offer(&phone_sdp(&savp_audio(4000, K0, "")))
        .unwrap();
    let first = call.pbx_answer(&offer.plan, &pbx_audio_answer()).unwrap();
    call.honour_reuse = false;
    let offer = call
        .phone_offer(&phone_sdp(&savp_audio(4000, K0, "")))
        .unwrap();
    let second = call.pbx_answer(&offer.plan, &pbx_audio_answer()).unwrap();
    let (a, b) = (keys_of(&first.plan, 0), keys_of(&second.plan, 0));
    assert_eq!(b.phone_context, ContextChange::Keep);
    assert_eq!(b.edge_context, ContextChange::New);
    assert_ne!(a.edge.unwrap().keys, b.edge.unwrap().keys);
}

#[test]
fn pbx_session_refresh_keeps_sdp_and_version_identical() {
    let mut call = Call::with_suites(
        SrtpMode::Mandatory,
        &[pbx_edge::srtp::CryptoSuite::AesCm128HmacSha1_80],
    );
    let pbx_offer = pbx_sdp("m=audio 20000 RTP/AVP 0\na=sendrecv\n");
    let phone_answer = phone_sdp(&format!(
        "m=audio 5000 RTP/SAVP 0\na=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{K1}\n"
    ));
    let o1 = call.pbx_offer(&pbx_offer).unwrap();
    let a1 = call.phone_answer(&o1.plan, &phone_answer).unwrap();
    let o2 = call.pbx_offer(&pbx_offer).unwrap();
    assert_eq!(
        o1.sdp, o2.sdp,
        "unchanged re-offer must be byte-identical (RFC 3264 §8)"
    );
    let a2 = call.phone_answer(&o2.plan, &phone_answer).unwrap();
    assert_eq!(a1.sdp, a2.sdp);
    let k = keys_of(&a2.plan, 0);
    assert_eq!(
        (k.phone_context, k.edge_context),
        (ContextChange::Keep, ContextChange::Keep)
    );
    // A real change moves the version by one on the phone leg.
    let o3 = call
        .pbx_offer(&pbx_offer.replace("a=sendrecv", "a=sendonly"))
        .unwrap();
    assert!(
        text(&o3).contains("o=- 1000 2 IN IP4 203.0.113.10\r\n"),
        "{}",
        text(&o3)
    );
}

/// A session refresh from the PBX (RFC 4028) on a call the phone offered: the direction of
/// offer/answer flips, and the edge's offer to the phone leads with the suite and key already
/// running, so a phone that takes the first line it supports keeps its session unchanged (both
/// contexts continue). Leading with the strongest suite instead made baresip 1.0.0 answer a
/// new suite while encrypting with the old one (Asterisk's refresh re-INVITE killed the audio).
#[test]
fn pbx_refresh_of_a_phone_offered_call_leads_with_the_running_suite_and_key() {
    let mut call = Call::new(SrtpMode::Mandatory);
    let offer = call
        .phone_offer(&phone_sdp(&savp_audio(4000, K0, "")))
        .unwrap();
    let answer = call.pbx_answer(&offer.plan, &pbx_audio_answer()).unwrap();
    let running = lines_with(&text(&answer), "a=crypto:")[0].to_owned();
    assert!(
        running.starts_with("a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:"),
        "{running}"
    );
    let refresh = call
        .pbx_offer(&pbx_sdp("m=audio 20000 RTP/AVP 0 101\na=sendrecv\n"))
        .unwrap();
    let sdp = text(&refresh);
    let offered = lines_with(&sdp, "a=crypto:");
    // Tags keep the strongest-first numbering; only the order changes.
    let without_tag = |l: &str| l.split_once(' ').map(|(_, rest)| rest.to_owned());
    assert_eq!(
        without_tag(offered[0]),
        without_tag(&running),
        "the running suite and key come first: {sdp}"
    );
    assert!(
        offered.len() > 1,
        "the other allowed suites are still offered: {sdp}"
    );
    let tag = offered[0]
        .strip_prefix("a=crypto:")
        .and_then(|l| l.split(' ').next())
        .unwrap();
    assert_ne!(
        tag, "1",
        "AES_CM_128_HMAC_SHA1_80 is not the strongest suite: {sdp}"
    );
    // The phone takes the first line and keeps its own key: nothing is re-keyed.
    let phone_answer =
        phone_sdp(&savp_audio(4000, K0, "").replace("a=crypto:1 ", &format!("a=crypto:{tag} ")));
    let back = call.phone_answer(&refresh.plan, &phone_answer).unwrap();
    let k = keys_of(&back.plan, 0);
    assert_eq!(
        (k.phone_context, k.edge_context),
        (ContextChange::Keep, ContextChange::Keep)
    );
}

// --- several m-lines -----------------------------------------------------------------------

#[test]
fn rejected_m_lines_stay_in_place() {
    let mut call = Call::new(SrtpMode::Mandatory);
    let body = phone_sdp(&format!(
        "{}m=video 0 RTP/SAVP 99\n{}",
        savp_audio(4000, K0, ""),
        savp_audio(4004, K1, "")
            .replace("m=audio 4004 RTP/SAVP 0 101", "m=video 4004 RTP/SAVP 100")
    ));
    let offer = call.phone_offer(&body).unwrap();
    let pbx = text(&offer);
    assert_eq!(
        lines_with(&pbx, "m="),
        [
            "m=audio 40002 RTP/AVP 0 101",
            "m=video 0 RTP/AVP 99",
            "m=video 40006 RTP/AVP 100"
        ]
    );
    // The PBX rejects the second video.
    let answer = pbx_sdp("m=audio 20000 RTP/AVP 0\nm=video 0 RTP/AVP 99\nm=video 0 RTP/AVP 100\n");
    let back = call.pbx_answer(&offer.plan, &answer).unwrap();
    let phone = text(&back);
    assert_eq!(
        lines_with(&phone, "m="),
        [
            "m=audio 40000 RTP/SAVP 0",
            "m=video 0 RTP/SAVP 99",
            "m=video 0 RTP/SAVP 100"
        ]
    );
    assert_eq!(lines_with(&phone, "a=crypto").len(), 1);
    assert_eq!(
        back.plan.streams[1].state,
        StreamState::Rejected(RejectReason::DisabledByOfferer)
    );
    assert_eq!(
        back.plan.streams[2].state,
        StreamState::Rejected(RejectReason::RejectedByAnswerer)
    );
    assert_eq!(back.plan.relayed().count(), 1);
    // The ports allocated for the stream the PBX rejected go back to the pool.
    let released = back.plan.released_ports(&offer.plan);
    assert_eq!(released.len(), 1);
    assert_eq!(released[0].phone.rtp, 40004);
    assert_eq!(
        (back.plan.offered_by, back.plan.stage),
        (Side::Phone, Stage::Answered)
    );
}

#[test]
fn savpf_maps_to_avpf_and_back() {
    let mut call = Call::new(SrtpMode::Mandatory);
    let body = phone_sdp(&format!(
        "m=video 4000 RTP/SAVPF 96\na=rtpmap:96 VP8/90000\na=rtcp-fb:96 nack pli\na=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{K0}\n"
    ));
    let offer = call.phone_offer(&body).unwrap();
    assert!(text(&offer).contains("m=video 40002 RTP/AVPF 96\r\n"));
    assert!(text(&offer).contains("a=rtcp-fb:96 nack pli\r\n"));
    let back = call
        .pbx_answer(
            &offer.plan,
            &pbx_sdp("m=video 20000 RTP/AVPF 96\na=rtcp-fb:96 nack pli\n"),
        )
        .unwrap();
    assert!(text(&back).contains("m=video 40000 RTP/SAVPF 96\r\n"));
}

#[test]
fn dtls_and_ice_attributes_are_dropped_at_both_levels() {
    let body = phone_sdp(&format!(
        "a=fingerprint:sha-256 AA:BB\na=ice-lite\na=group:BUNDLE 0\na=msid-semantic: WMS\n{}",
        savp_audio(4000, K0, "a=setup:actpass\na=ice-ufrag:x\na=ice-pwd:y\na=candidate:1 1 UDP 1 192.0.2.50 4000 typ host\na=mid:0\n")
    ));
    let pbx = text(&Call::new(SrtpMode::Mandatory).phone_offer(&body).unwrap());
    for gone in [
        "fingerprint",
        "ice-",
        "setup",
        "candidate",
        "BUNDLE",
        "crypto",
    ] {
        assert!(!pbx.contains(gone), "{gone} left in:\n{pbx}");
    }
    assert!(pbx.contains("a=mid:0\r\n") && pbx.contains("a=msid-semantic: WMS\r\n"));
}

#[test]
fn dtls_srtp_only_offer_fails_with_488() {
    let body = phone_sdp(
        "m=audio 4000 UDP/TLS/RTP/SAVPF 111\na=fingerprint:sha-256 AA\na=setup:actpass\n",
    );
    let err = Call::new(SrtpMode::Mandatory)
        .phone_offer(&body)
        .unwrap_err();
    assert_eq!(
        (err, err.sip_status()),
        (RewriteError::NoAcceptableMedia, 488)
    );
}

#[test]
fn pbx_t38_and_srtp_streams_are_rejected_toward_the_phone() {
    let mut call = Call::new(SrtpMode::Mandatory);
    let body =
        pbx_sdp("m=audio 20000 RTP/AVP 0\nm=image 20002 udptl t38\nm=audio 20004 RTP/SAVP 0\n");
    let offer = call.pbx_offer(&body).unwrap();
    assert_eq!(
        lines_with(&text(&offer), "m="),
        [
            "m=audio 40000 RTP/SAVP 0",
            "m=image 0 udptl t38",
            "m=audio 0 RTP/SAVP 0"
        ]
    );
    assert_eq!(
        offer.plan.streams[1].state,
        StreamState::Rejected(RejectReason::UnsupportedTransport)
    );
    let only_fax = Call::new(SrtpMode::Mandatory)
        .pbx_offer(&pbx_sdp("m=image 20002 udptl t38\n"))
        .unwrap_err();
    assert_eq!(only_fax, RewriteError::NoAcceptableMedia);
}

#[test]
fn offer_with_every_stream_disabled_is_valid() {
    let body = phone_sdp("m=audio 0 RTP/SAVP 0\n");
    let offer = Call::new(SrtpMode::Mandatory).phone_offer(&body).unwrap();
    assert_eq!(lines_with(&text(&offer), "m="), ["m=audio 0 RTP/AVP 0"]);
}

// --- addresses ------------------------------------------------------------------------------

#[test]
fn ipv6_phone_and_ipv6_edge() {
    let mut call = Call::new(SrtpMode::Mandatory);
    let body = crlf(&format!(
        "v=0\no=- 1 1 IN IP6 2001:db8::5\ns=-\nc=IN IP6 2001:db8::5\nt=0 0\n{}",
        savp_audio(4000, K0, "")
    ));
    let offer = call.phone_offer(&body).unwrap();
    assert_eq!(
        phone_peer(&offer.plan).address,
        "2001:db8::5".parse::<IpAddr>().unwrap()
    );
    assert!(text(&offer).contains("c=IN IP4 198.51.100.10\r\n"));
    // An IPv6 edge toward the phone.
    let policy = pbx_edge::sdp::SrtpPolicy::default();
    let mut origin = pbx_edge::sdp::LegOrigin::new(9, 1);
    let mut keys = FixedKeys(0);
    let mut ctx = RewriteContext {
        edge: EdgeAddresses {
            phone_advertised: "2001:db8::10".parse().unwrap(),
            pbx_local: "198.51.100.10".parse().unwrap(),
        },
        policy: &policy,
        origin: &mut origin,
        previous: None,
        keys: &mut keys,
    };
    let back =
        text(&rewrite_pbx_answer(pbx_audio_answer().as_bytes(), &offer.plan, &mut ctx).unwrap());
    assert!(
        back.contains("o=- 9 1 IN IP6 2001:db8::10\r\n")
            && back.contains("c=IN IP6 2001:db8::10\r\n"),
        "{back}"
    );
}

#[test]
fn media_level_connection_overrides_session_level() {
    let body = crlf(&format!(
        "v=0\no=- 1 1 IN IP4 192.0.2.50\ns=-\nc=IN IP4 192.0.2.50\nt=0 0\n{}c=IN IP4 192.0.2.60\n",
        savp_audio(4000, K0, "")
    ));
    // The c= line after the attributes is reordered into place, not lost.
    let offer = Call::new(SrtpMode::Mandatory).phone_offer(&body).unwrap();
    assert_eq!(
        phone_peer(&offer.plan).address,
        "192.0.2.60".parse::<IpAddr>().unwrap()
    );
}

// --- errors ---------------------------------------------------------------------------------

#[test]
fn errors_map_to_sip_statuses() {
    let mut call = Call::new(SrtpMode::Mandatory);
    let bad = [
        (&b"\xff\xfe"[..], RewriteError::NotUtf8, 400),
        (
            &b"hello"[..],
            RewriteError::Malformed {
                line: 1,
                what: "line",
            },
            400,
        ),
    ];
    for (body, want, status) in bad {
        let mut origin = pbx_edge::sdp::LegOrigin::new(1, 1);
        let mut keys = FixedKeys(0);
        let ctx = RewriteContext {
            edge: edge(),
            policy: &call.policy,
            origin: &mut origin,
            previous: None,
            keys: &mut keys,
        };
        let err = analyse_phone_offer(body, &ctx).unwrap_err();
        assert_eq!((err, err.sip_status()), (want, status));
    }
    let no_c = crlf(&format!(
        "v=0\no=- 1 1 IN IP4 192.0.2.50\ns=-\nt=0 0\n{}",
        savp_audio(4000, K0, "")
    ));
    assert_eq!(
        call.phone_offer(&no_c).unwrap_err(),
        RewriteError::MissingConnection { mline: 0 }
    );
    let fqdn = crlf(&format!(
        "v=0\no=- 1 1 IN IP4 192.0.2.50\ns=-\nc=IN IP4 phone.example.com\nt=0 0\n{}",
        savp_audio(4000, K0, "")
    ));
    assert_eq!(call.phone_offer(&fqdn).unwrap_err().sip_status(), 488);
}

#[test]
fn answer_with_another_media_count_is_refused() {
    let mut call = Call::new(SrtpMode::Mandatory);
    let offer = call
        .phone_offer(&phone_sdp(&savp_audio(4000, K0, "")))
        .unwrap();
    let answer = pbx_sdp("m=audio 20000 RTP/AVP 0\nm=video 0 RTP/AVP 99\n");
    assert_eq!(
        call.pbx_answer(&offer.plan, &answer).unwrap_err(),
        RewriteError::MediaCountMismatch {
            offered: 1,
            answered: 2
        }
    );
}

#[test]
fn missing_ports_are_a_503_and_wrong_plans_a_500() {
    let policy = pbx_edge::sdp::SrtpPolicy::default();
    let mut origin = pbx_edge::sdp::LegOrigin::new(1, 1);
    let mut keys = FixedKeys(0);
    let mut ctx = RewriteContext {
        edge: edge(),
        policy: &policy,
        origin: &mut origin,
        previous: None,
        keys: &mut keys,
    };
    let offer = analyse_phone_offer(phone_sdp(&savp_audio(4000, K0, "")).as_bytes(), &ctx).unwrap();
    let err = rewrite_phone_offer(offer, &[], &mut ctx).unwrap_err();
    assert_eq!(
        (err, err.sip_status()),
        (
            RewriteError::PortsMissing {
                needed: 1,
                given: 0
            },
            503
        )
    );

    let mut call = Call::new(SrtpMode::Mandatory);
    let pbx_offer = call
        .pbx_offer(&pbx_sdp("m=audio 20000 RTP/AVP 0\n"))
        .unwrap();
    // A PBX answer against a PBX-offered plan is a B2BUA bug.
    let err = call
        .pbx_answer(&pbx_offer.plan, &pbx_audio_answer())
        .unwrap_err();
    assert_eq!((err, err.sip_status()), (RewriteError::PlanMismatch, 500));
}

#[test]
fn plan_debug_never_shows_keys() {
    let mut call = Call::new(SrtpMode::Mandatory);
    let offer = call
        .phone_offer(&phone_sdp(&savp_audio(4000, K0, "")))
        .unwrap();
    let answer = call.pbx_answer(&offer.plan, &pbx_audio_answer()).unwrap();
    let debug = format!("{:?}", answer.plan);
    let edge_line = lines_with(&text(&answer), "a=crypto:")[0].to_owned();
    let edge_key = edge_line.split("inline:").nth(1).unwrap();
    assert!(!debug.contains(K0) && !debug.contains(edge_key), "{debug}");
    assert!(debug.contains("AesCm128HmacSha1_80"));
}

#[test]
fn early_and_final_answers_to_one_offer_carry_the_same_edge_key() {
    // 183 Session Progress with SDP, then 200 OK with the same SDP: the phone must see the
    // same key and the same o= version (RFC 3264 §8: unchanged SDP, unchanged version).
    let mut call = Call::new(SrtpMode::Mandatory);
    let offer = call
        .phone_offer(&phone_sdp(&savp_audio(4000, K0, "")))
        .unwrap();
    assert!(
        keys_of(&offer.plan, 0).edge.is_some(),
        "edge key is drawn with the offer"
    );
    let early = call.pbx_answer(&offer.plan, &pbx_audio_answer()).unwrap();
    let fin = call.pbx_answer(&offer.plan, &pbx_audio_answer()).unwrap();
    assert_eq!(early.sdp, fin.sdp);
    assert_eq!(keys_of(&early.plan, 0).edge, keys_of(&fin.plan, 0).edge);
}

// --- best-effort twins and downgrade refusal (issue 12) ---------------------------------------

/// pjsua / Grandstream best effort: `RTP/SAVP` + `a=crypto` and an `RTP/AVP` twin on the same
/// address and port, no `a=mid`.
fn twin_offer(savp_first: bool, crypto: &str) -> String {
    let savp = format!("m=audio 4000 RTP/SAVP 0\na=rtpmap:0 PCMU/8000\na=crypto:{crypto}\n");
    let avp = "m=audio 4000 RTP/AVP 0\na=rtpmap:0 PCMU/8000\n";
    if savp_first {
        phone_sdp(&format!("{savp}{avp}"))
    } else {
        phone_sdp(&format!("{avp}{savp}"))
    }
}

#[test]
fn same_port_twin_is_refused_toward_the_phone_and_never_offered_to_the_pbx() {
    let good = format!("1 AES_CM_128_HMAC_SHA1_80 inline:{K0}");
    for mode in [SrtpMode::Optional, SrtpMode::Mandatory] {
        for savp_first in [true, false] {
            let (keep, twin) = if savp_first { (0, 1) } else { (1, 0) };
            let mut call = Call::new(mode);
            let offer = call.phone_offer(&twin_offer(savp_first, &good)).unwrap();
            let label = format!("{mode:?} savp_first={savp_first}");
            assert_eq!(offer.plan.streams.len(), 2, "{label}");
            assert!(
                matches!(
                    keys_of(&offer.plan, keep).phone,
                    Some(ref c) if c.tag == 1
                ),
                "{label}"
            );
            assert_eq!(
                offer.plan.streams[twin].state,
                StreamState::Rejected(RejectReason::AlternativeNotTaken),
                "{label}"
            );
            assert!(!offer.plan.streams[twin].on_pbx_leg(), "{label}");
            // One relay stream, one audio line toward the PBX.
            assert_eq!(call.next_port, 40004, "{label}");
            let pbx = text(&offer);
            assert_eq!(
                lines_with(&pbx, "m="),
                ["m=audio 40002 RTP/AVP 0"],
                "{label}"
            );
            // The PBX answers its one line; the phone gets both back, the twin with port 0,
            // in the places it offered them (RFC 3264 §6).
            let back = text(&call.pbx_answer(&offer.plan, &pbx_audio_answer()).unwrap());
            let m = lines_with(&back, "m=");
            assert_eq!(m.len(), 2, "{label}: {back}");
            assert_eq!(m[keep], "m=audio 40000 RTP/SAVP 0 101", "{label}");
            assert_eq!(m[twin], "m=audio 0 RTP/AVP 0", "{label}");
            assert_eq!(lines_with(&back, "a=crypto:1 ").len(), 1, "{label}");
        }
    }
}

#[test]
fn pbx_answer_must_match_the_pbx_leg_not_the_phone_leg() {
    let mut call = Call::new(SrtpMode::Optional);
    let good = format!("1 AES_CM_128_HMAC_SHA1_80 inline:{K0}");
    let offer = call.phone_offer(&twin_offer(true, &good)).unwrap();
    // Two m-lines answer an offer that had one on the PBX leg.
    let two = pbx_sdp("m=audio 20000 RTP/AVP 0\nm=audio 0 RTP/AVP 0\n");
    let err = call.pbx_answer(&offer.plan, &two).unwrap_err();
    assert_eq!(
        err,
        RewriteError::MediaCountMismatch {
            offered: 1,
            answered: 2
        }
    );
    assert_eq!(err.sip_status(), 488);
}

#[test]
fn two_audio_lines_on_different_ports_are_not_twins() {
    // Without a shared port or `a=mid`, SAVP + AVP are two streams (optional mode relays both).
    let body = phone_sdp(&format!(
        "{}m=audio 4002 RTP/AVP 0\na=rtpmap:0 PCMU/8000\n",
        savp_audio(4000, K0, "")
    ));
    let offer = Call::new(SrtpMode::Optional).phone_offer(&body).unwrap();
    assert!(offer.plan.streams.iter().all(|s| s.relayed().is_some()));
    assert_eq!(lines_with(&text(&offer), "m=audio").len(), 2);
    // Same port, different address: not twins either.
    let body = phone_sdp(&format!(
        "{}m=audio 4000 RTP/AVP 0\nc=IN IP4 192.0.2.51\na=rtpmap:0 PCMU/8000\n",
        savp_audio(4000, K0, "")
    ));
    let offer = Call::new(SrtpMode::Optional).phone_offer(&body).unwrap();
    assert!(offer.plan.streams.iter().all(|s| s.relayed().is_some()));
}

#[test]
fn pbx_reoffer_keeps_the_twin_slot_toward_the_phone_and_maps_the_answer_back() {
    let mut call = Call::with_suites(
        SrtpMode::Mandatory,
        &[pbx_edge::srtp::CryptoSuite::AesCm128HmacSha1_80],
    );
    let good = format!("1 AES_CM_128_HMAC_SHA1_80 inline:{K0}");
    let offer = call.phone_offer(&twin_offer(false, &good)).unwrap();
    call.pbx_answer(&offer.plan, &pbx_audio_answer()).unwrap();
    // The PBX re-offers its one line and adds video (RFC 3264 §8.1: new lines at the end).
    let reoffer = call
        .pbx_offer(&pbx_sdp(
            "m=audio 20002 RTP/AVP 0\na=rtpmap:0 PCMU/8000\nm=video 20004 RTP/AVP 99\na=rtpmap:99 H264/90000\n",
        ))
        .unwrap();
    let to_phone = text(&reoffer);
    let m = lines_with(&to_phone, "m=");
    assert_eq!(m.len(), 3, "{to_phone}");
    assert_eq!(m[0], "m=audio 0 RTP/AVP 0", "the twin keeps its place");
    assert!(m[1].starts_with("m=audio 40000 RTP/SAVP 0"), "{}", m[1]);
    assert!(m[2].starts_with("m=video ") && !m[2].starts_with("m=video 0 "));
    let plan = &reoffer.plan;
    assert_eq!(
        plan.streams.iter().map(|s| s.mline).collect::<Vec<_>>(),
        [0, 1, 2]
    );
    assert!(!plan.streams[0].on_pbx_leg());
    assert!(plan.streams[1].relayed().is_some() && plan.streams[2].relayed().is_some());
    // The audio stream is the same relay stream as before (same phone-leg index).
    assert_eq!(plan.streams[1].relayed().unwrap().ports.phone.rtp, 40000);

    // The phone answers all three; the PBX gets two.
    let phone_answer = phone_sdp(&format!(
        "m=audio 0 RTP/AVP 0\nm=audio 4000 RTP/SAVP 0\na=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{K1}\n\
         m=video 4002 RTP/SAVP 99\na=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{K2}\n"
    ));
    let to_pbx = text(&call.phone_answer(&reoffer.plan, &phone_answer).unwrap());
    assert_eq!(
        lines_with(&to_pbx, "m="),
        ["m=audio 40002 RTP/AVP 0", "m=video 40006 RTP/AVP 99"]
    );
    // A phone answer that drops the twin's place is the wrong count for the phone leg.
    let short = phone_sdp(&format!(
        "m=audio 4000 RTP/SAVP 0\na=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{K1}\n"
    ));
    let reoffer = call
        .pbx_offer(&pbx_sdp(
            "m=audio 20002 RTP/AVP 0\nm=video 20004 RTP/AVP 99\n",
        ))
        .unwrap();
    assert_eq!(
        call.phone_answer(&reoffer.plan, &short).unwrap_err(),
        RewriteError::MediaCountMismatch {
            offered: 3,
            answered: 1
        }
    );
}

#[test]
fn phone_reoffer_cannot_bring_the_twin_slot_to_the_pbx() {
    let mut call = Call::new(SrtpMode::Optional);
    let good = format!("1 AES_CM_128_HMAC_SHA1_80 inline:{K0}");
    let offer = call.phone_offer(&twin_offer(true, &good)).unwrap();
    call.pbx_answer(&offer.plan, &pbx_audio_answer()).unwrap();
    // The phone re-offers with a live plain stream where the twin was (now on another port):
    // the slot stays phone-only, rejected; the PBX still sees one line.
    let body = phone_sdp(&format!(
        "{}m=audio 4010 RTP/AVP 0\na=rtpmap:0 PCMU/8000\n",
        savp_audio(4000, K0, "")
    ));
    let reoffer = call.phone_offer(&body).unwrap();
    assert_eq!(
        reoffer.plan.streams[1].state,
        StreamState::Rejected(RejectReason::AlternativeNotTaken)
    );
    assert_eq!(
        lines_with(&text(&reoffer), "m="),
        ["m=audio 40002 RTP/AVP 0 101"]
    );
}

#[test]
fn optional_refuses_an_offer_whose_crypto_is_all_malformed() {
    let malformed = [
        (
            "1 AES_CM_128_HMAC_SHA1_80 inline:!!notbase64!!",
            "bad_base64",
        ),
        (
            "1 AES_CM_128_HMAC_SHA1_80 inline:{K0}|2^20|1:129",
            "mki_length",
        ),
        (
            "1 AES_CM_128_HMAC_SHA1_80 inline:{K0} KDR=3",
            "unsupported_session_param",
        ),
        ("1 AES_CM_128_HMAC_SHA1_80", "missing_field"),
    ];
    for (line, label) in malformed {
        let line = line.replace("{K0}", K0);
        // SAVP alone, SAVP with an AVP twin, and best-effort AVP + crypto: never plain.
        let bodies = [
            phone_sdp(&format!("m=audio 4000 RTP/SAVP 0\na=crypto:{line}\n")),
            twin_offer(true, &line),
            phone_sdp(&format!("m=audio 4000 RTP/AVP 0\na=crypto:{line}\n")),
        ];
        for body in bodies {
            let err = Call::new(SrtpMode::Optional)
                .phone_offer(&body)
                .unwrap_err();
            let RewriteError::NoAcceptableCrypto { mline, reason } = err else {
                panic!("{label}: {err:?}");
            };
            assert_eq!(mline, 0);
            assert_eq!(reason.map(|r| r.label()), Some(label));
            assert_eq!(err.sip_status(), 488);
            assert!(err.to_string().contains(label), "{err}");
        }
    }
}

#[test]
fn optional_still_falls_back_when_only_the_suites_are_unknown() {
    let unknown = format!("1 F8_128_HMAC_SHA1_80 inline:{K0}");
    let gcm8 = "2 AEAD_AES_128_GCM_8 inline:MTIzNDU2Nzg5MDEyMzQ1Njc4OTAxMjM0";
    // RTP/AVP with crypto the edge cannot speak: plain relay (best effort).
    let body = phone_sdp(&format!(
        "m=audio 4000 RTP/AVP 0\na=crypto:{unknown}\na=crypto:{gcm8}\n"
    ));
    let offer = Call::new(SrtpMode::Optional).phone_offer(&body).unwrap();
    assert_eq!(
        offer.plan.streams[0].relayed().unwrap().security,
        Security::Plain
    );
    // The twin pair with an unknown suite: the plain twin is the one relayed, the SAVP line is
    // the alternative not taken, and the PBX sees one line.
    let offer = Call::new(SrtpMode::Optional)
        .phone_offer(&twin_offer(true, &unknown))
        .unwrap();
    assert_eq!(
        offer.plan.streams[0].state,
        StreamState::Rejected(RejectReason::AlternativeNotTaken)
    );
    assert_eq!(
        offer.plan.streams[1].relayed().unwrap().security,
        Security::Plain
    );
    assert_eq!(lines_with(&text(&offer), "m="), ["m=audio 40002 RTP/AVP 0"]);
    // A malformed line next to an unknown suite is not "unknown suites alone".
    let body = phone_sdp(&format!(
        "m=audio 4000 RTP/AVP 0\na=crypto:{unknown}\na=crypto:2 AES_CM_128_HMAC_SHA1_80 inline:@@\n"
    ));
    assert!(matches!(
        Call::new(SrtpMode::Optional).phone_offer(&body),
        Err(RewriteError::NoAcceptableCrypto { .. })
    ));
    // Mandatory is unchanged: the twin pair with only an unknown suite has nothing to relay.
    assert!(Call::new(SrtpMode::Mandatory)
        .phone_offer(&twin_offer(true, &unknown))
        .is_err());
}
