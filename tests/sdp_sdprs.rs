//! Proof of every way `sdp-rs` 0.2.1 rejects or mangles SDP that real phones send, next to
//! proof that the rewriter handles it (the workarounds live in `src/sdp/wire.rs` only).
//! If an `sdp-rs` upgrade fixes one, the "raw" assertion here fails and says so: then the
//! workaround can go. Findings are summarised in `SDP_NOTES.md`.

mod sdp_support;

use pbx_edge::sdp::SrtpMode;
use sdp_rs::SessionDescription;
use sdp_support::*;

const HEAD: &str = "v=0\r\no=- 1 1 IN IP4 192.0.2.50\r\ns=-\r\nc=IN IP4 192.0.2.50\r\nt=0 0\r\n";

fn audio() -> String {
    format!(
        "m=audio 4000 RTP/SAVP 0 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\n\
         a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{K0}\r\n"
    )
}

fn raw(body: &str) -> Result<SessionDescription, sdp_rs::Error> {
    body.parse::<SessionDescription>()
}

/// The rewriter accepts the body and relays the audio with the phone's key.
fn rewriter_accepts(body: &str) -> String {
    let mut call = Call::new(SrtpMode::Mandatory);
    let offer = call
        .phone_offer(body)
        .unwrap_or_else(|e| panic!("refused: {e}\n{body}"));
    assert!(offer.plan.streams[0].relayed().is_some());
    text(&offer)
}

#[test]
fn out_of_order_line_silently_drops_the_rest() {
    // Session-level a= before b= (seen from Grandstream and Linphone): sdp-rs stops at the b=
    // line and returns Ok WITHOUT any media description.
    let body = format!("{HEAD}a=tool:x\r\nb=AS:64\r\n{}", audio());
    let parsed = raw(&body).expect("sdp-rs returns Ok");
    assert!(
        parsed.media_descriptions.is_empty(),
        "sdp-rs now keeps the media: drop the reordering"
    );
    let out = rewriter_accepts(&body);
    assert!(out.contains("m=audio 40002 RTP/AVP 0 101") && out.contains("b=AS:64"));
}

#[test]
fn media_bandwidth_after_attributes_silently_drops_following_media() {
    let body = format!("{HEAD}{}b=AS:80\r\nm=video 4002 RTP/SAVP 99\r\na=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{K1}\r\n", audio());
    assert_eq!(raw(&body).unwrap().media_descriptions.len(), 1);
    let out = rewriter_accepts(&body);
    assert_eq!(lines_with(&out, "m=").len(), 2);
}

#[test]
fn unknown_line_type_silently_drops_the_rest() {
    let body = format!("{HEAD}{}y=0123456789\r\na=sendonly\r\n", audio());
    let parsed = raw(&body).unwrap();
    assert!(!parsed.to_string().contains("sendonly"));
    let out = rewriter_accepts(&body);
    assert!(out.contains("a=sendonly") && !out.contains("y="));
}

#[test]
fn trailing_spaces_are_refused() {
    let base = format!("{HEAD}{}a=ptime:20\r\n", audio());
    for line in ["c=IN IP4 192.0.2.50", "a=rtpmap:0 PCMU/8000", "a=ptime:20"] {
        let body = base.replace(&format!("{line}\r\n"), &format!("{line} \r\n"));
        assert_ne!(body, base);
        assert!(
            raw(&body).is_err(),
            "sdp-rs accepts {line:?} with a trailing space now"
        );
        rewriter_accepts(&body);
    }
}

#[test]
fn missing_final_line_ending_silently_drops_the_last_line() {
    let body = format!("{HEAD}{}a=sendrecv", audio());
    assert!(raw(&body).is_ok_and(|sdp| !sdp.to_string().contains("a=sendrecv")));
    assert!(rewriter_accepts(&body).contains("a=sendrecv"));
    // With nothing else after m=, the whole body is refused instead.
    let body =
        format!("{HEAD}m=audio 4000 RTP/SAVP 0\r\na=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{K0}");
    assert!(raw(&body).is_err());
    rewriter_accepts(&body);
}

#[test]
fn lf_endings_mixed_with_crlf_are_refused() {
    let body = format!("{}{}", HEAD.replace("\r\n", "\n"), audio());
    assert!(raw(&body).is_err());
    rewriter_accepts(&body);
}

#[test]
fn non_numeric_bandwidth_is_refused() {
    let body = format!("{HEAD}{}b=AS:64kbps\r\n", audio())
        .replace("a=rtpmap:0", "b=TIAS:64 000\r\na=rtpmap:0");
    assert!(raw(&body).is_err());
    let out = rewriter_accepts(&body);
    assert!(!out.contains("b="));
}

#[test]
fn hostname_in_origin_is_refused() {
    let body = format!(
        "{}{}",
        HEAD.replace(
            "o=- 1 1 IN IP4 192.0.2.50",
            "o=- 1 1 IN IP4 phone.example.com"
        ),
        audio()
    );
    assert!(raw(&body).is_err());
    rewriter_accepts(&body);
}

#[test]
fn missing_time_line_is_refused() {
    let body = format!("{}{}", HEAD.replace("t=0 0\r\n", ""), audio());
    assert!(raw(&body).is_err());
    assert!(rewriter_accepts(&body).contains("t=0 0\r\n"));
}

#[test]
fn rtpmap_channels_are_printed_wrongly() {
    let body = format!("{HEAD}m=audio 4000 RTP/SAVP 96\r\na=rtpmap:96 opus/48000/2\r\na=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{K0}\r\n");
    let printed = raw(&body).unwrap().to_string();
    assert!(
        printed.contains("a=rtpmap:96 opus/48000 2\r\n"),
        "sdp-rs prints rtpmap right now"
    );
    assert!(rewriter_accepts(&body).contains("a=rtpmap:96 opus/48000/2\r\n"));
}

#[test]
fn inactive_is_not_typed() {
    // sdp-rs matches "inacive" (typo): a=inactive parses as Other("inactive"); printing is
    // unaffected, but direction reading must match by name.
    let body = format!("{HEAD}{}a=inactive\r\n", audio());
    let parsed = raw(&body).unwrap();
    assert!(matches!(
        parsed.media_descriptions[0].attributes.last(),
        Some(sdp_rs::lines::Attribute::Other(n, None)) if n == "inactive"
    ));
    let mut call = Call::new(SrtpMode::Mandatory);
    let offer = call.phone_offer(&body).unwrap();
    assert_eq!(
        offer.plan.streams[0]
            .relayed()
            .unwrap()
            .phone
            .as_ref()
            .unwrap()
            .direction,
        pbx_edge::sdp::Direction::Inactive
    );
}

#[test]
fn multiple_spaces_in_media_line_are_refused() {
    let body = format!(
        "{HEAD}{}",
        audio().replace("m=audio 4000 RTP/SAVP", "m=audio  4000  RTP/SAVP")
    );
    assert!(raw(&body).is_err());
    rewriter_accepts(&body);
}

#[test]
fn what_sdp_rs_gets_right() {
    // IPv6, unknown attributes, several crypto lines with MKIs and session params, TIAS,
    // multicast TTL: parsed and printed back unchanged.
    let body = format!(
        "v=0\r\no=- 1 1 IN IP6 2001:db8::5\r\ns=-\r\nc=IN IP6 2001:db8::5\r\nt=0 0\r\n\
         m=audio 4000 RTP/SAVP 0\r\nb=TIAS:64000\r\na=x-foo:bar baz\r\n\
         a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{K0}|2^20|1:4;inline:{K1}|2^20|2:4 UNENCRYPTED_SRTCP\r\n\
         m=video 4002 RTP/AVP 99\r\nc=IN IP4 233.252.0.1/127\r\n"
    );
    assert_eq!(raw(&body).unwrap().to_string(), body);
}
