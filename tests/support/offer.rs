//! SDP as the call tests write and read it: the phone's SRTP offers and answers (one fixed
//! test key), the PBX's plain RTP, and the checks that each leg sees its own profile with
//! media at the edge's relay (RFC 4568 on the phone leg, RFC 3551 RTP/AVP toward the PBX).

use pbx_edge::srtp::{ContextOptions, CryptoAttribute, CryptoSuite, SrtpContext};
use std::net::SocketAddr;
use std::ops::RangeInclusive;

/// The phone's SDES master key and salt (base64, 30 bytes).
pub const PHONE_KEY: &str = "WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz";

/// A body as text (the tests only send and expect UTF-8 SDP).
pub fn text(sdp: &[u8]) -> String {
    std::str::from_utf8(sdp).expect("SDP is text").to_owned()
}

/// The audio m-line's port and the c= address of an SDP body.
pub fn media_addr(sdp: &[u8]) -> SocketAddr {
    let text = text(sdp);
    let ip = text
        .lines()
        .find_map(|l| l.strip_prefix("c=IN IP4 "))
        .expect("c= line")
        .trim();
    let port = text
        .lines()
        .find_map(|l| l.strip_prefix("m=audio "))
        .expect("m=audio line");
    let port: u16 = port.split(' ').next().unwrap().parse().unwrap();
    SocketAddr::new(ip.parse().unwrap(), port)
}

/// Every `a=crypto` line of an SDP body, in order.
pub fn crypto_lines(sdp: &[u8]) -> Vec<CryptoAttribute> {
    text(sdp)
        .lines()
        .filter_map(|l| l.strip_prefix("a=crypto:"))
        .map(|v| CryptoAttribute::parse(v.trim()).expect("a=crypto parses"))
        .collect()
}

/// The first `a=crypto` line of an SDP body.
pub fn crypto_line(sdp: &[u8]) -> CryptoAttribute {
    crypto_lines(sdp).into_iter().next().expect("a=crypto")
}

/// The edge's offered line of `suite`.
pub fn offered_line(sdp: &[u8], suite: CryptoSuite) -> CryptoAttribute {
    crypto_lines(sdp)
        .into_iter()
        .find(|c| c.suite == suite)
        .expect("the suite is offered")
}

/// An SRTP context keyed by `c`'s first key and session parameters.
pub fn context(c: &CryptoAttribute) -> SrtpContext {
    let k = &c.keys[0];
    SrtpContext::new(
        &k.master_key,
        &ContextOptions::from_sdes(k, &c.session_params),
    )
    .expect("SRTP context")
}

/// The phone's own crypto line: [`PHONE_KEY`] under `tag`.
pub fn phone_key_line(tag: u32) -> CryptoAttribute {
    CryptoAttribute::parse(&format!("{tag} AES_CM_128_HMAC_SHA1_80 inline:{PHONE_KEY}")).unwrap()
}

/// A phone SDP (offer or answer): PCMU over RTP/SAVP with [`PHONE_KEY`] under `tag`.
pub fn phone_sdp(rtp_port: u16, tag: u32, version: u32) -> String {
    format!("v=0\r\no=snom 7 {version} IN IP4 127.0.0.1\r\ns=call\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio {rtp_port} RTP/SAVP 0\r\na=crypto:{tag} AES_CM_128_HMAC_SHA1_80 inline:{PHONE_KEY}\r\na=rtpmap:0 PCMU/8000\r\na=sendrecv\r\n")
}

/// A Snom-like offer: PCMU and telephone-event over RTP/SAVP with [`PHONE_KEY`] under tag 1.
pub fn phone_offer(rtp_port: u16) -> String {
    format!("v=0\r\no=snom 1 1 IN IP4 127.0.0.1\r\ns=call\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio {rtp_port} RTP/SAVP 0 101\r\na=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{PHONE_KEY}\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-15\r\na=ptime:20\r\na=sendrecv\r\n")
}

/// The PBX's SDP (Asterisk-like): PCMU and telephone-event over plain RTP/AVP.
pub fn pbx_sdp(rtp_port: u16) -> String {
    format!("v=0\r\no=asterisk 9 9 IN IP4 127.0.0.1\r\ns=Asterisk\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio {rtp_port} RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\na=ptime:20\r\na=sendrecv\r\n")
}

/// The PBX's SDP with PCMU alone over plain RTP/AVP.
pub fn pbx_pcmu_sdp(rtp_port: u16) -> String {
    format!("v=0\r\no=asterisk 9 9 IN IP4 127.0.0.1\r\ns=Asterisk\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio {rtp_port} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=ptime:20\r\na=sendrecv\r\n")
}

/// `msg` (ending in an empty body) with an SDP body instead.
pub fn with_body(msg: &str, sdp: &str) -> String {
    msg.replace(
        "Content-Length: 0\r\n\r\n",
        &format!(
            "Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
            sdp.len()
        ),
    )
}

/// SDP as the phone must see it: RTP/SAVP with `a=crypto`, media at the edge's relay (a port
/// of `relay`, not the peer's `peer_port`).
pub fn assert_phone_leg_sdp(sdp: &[u8], relay: &RangeInclusive<u16>, peer_port: u16) {
    let t = text(sdp);
    assert!(t.contains("m=audio ") && t.contains(" RTP/SAVP "), "{t}");
    assert!(t.contains("a=crypto:"), "{t}");
    assert_at_relay(sdp, relay, peer_port, "media.phone_advertise");
}

/// SDP as the PBX must see it: plain RTP/AVP, no `a=crypto`, media at the edge's relay.
pub fn assert_pbx_leg_sdp(sdp: &[u8], relay: &RangeInclusive<u16>, peer_port: u16) {
    let t = text(sdp);
    assert!(t.contains(" RTP/AVP ") && !t.contains("SAVP"), "{t}");
    assert!(!t.contains("a=crypto"), "{t}");
    assert_at_relay(sdp, relay, peer_port, "media.pbx_bind");
}

fn assert_at_relay(sdp: &[u8], relay: &RangeInclusive<u16>, peer_port: u16, key: &str) {
    let t = text(sdp);
    let at = media_addr(sdp);
    assert_eq!(at.ip().to_string(), "127.0.0.1", "{key}: {t}");
    assert!(
        relay.contains(&at.port()) && at.port() != peer_port,
        "relay port: {t}"
    );
}
