//! Reading and filtering the attributes and addresses of parsed SDP (`sdp-rs` types).

use std::net::IpAddr;

use sdp_rs::lines::media::{MediaType, ProtoType};
use sdp_rs::lines::Attribute;
use sdp_rs::{MediaDescription, SessionDescription};

use super::error::RewriteError;
use super::plan::{Direction, MediaKind, Peer};

/// The name of an attribute as written (`sdp-rs` types a few of them).
pub(crate) fn name(attr: &Attribute) -> &str {
    match attr {
        Attribute::Cat(_) => "cat",
        Attribute::Keywds(_) => "keywds",
        Attribute::Tool(_) => "tool",
        Attribute::Ptime(_) => "ptime",
        Attribute::Maxptime(_) => "maxptime",
        Attribute::Rtpmap(_) => "rtpmap",
        Attribute::Recvonly => "recvonly",
        Attribute::Sendrecv => "sendrecv",
        Attribute::Sendonly => "sendonly",
        Attribute::Inactive => "inactive",
        Attribute::Orient(_) => "orient",
        Attribute::Type(_) => "type",
        Attribute::Charset(_) => "charset",
        Attribute::Sdplang(_) => "sdplang",
        Attribute::Lang(_) => "lang",
        Attribute::Framerate(_) => "framerate",
        Attribute::Quality(_) => "quality",
        Attribute::Other(name, _) => name,
    }
}

/// The value of an untyped attribute (`a=name:value`).
fn other_value<'a>(attr: &'a Attribute, wanted: &str) -> Option<&'a str> {
    match attr {
        Attribute::Other(n, Some(v)) if n.eq_ignore_ascii_case(wanted) => Some(v.as_str()),
        _ => None,
    }
}

/// Every value of the attribute `wanted` (e.g. all `a=crypto` values), in order.
pub(crate) fn values<'a>(attrs: &'a [Attribute], wanted: &'a str) -> impl Iterator<Item = &'a str> {
    attrs.iter().filter_map(move |a| other_value(a, wanted))
}

/// True when a value-less attribute `wanted` is present (e.g. `a=rtcp-mux`).
pub(crate) fn has_flag(attrs: &[Attribute], wanted: &str) -> bool {
    attrs.iter().any(|a| name(a).eq_ignore_ascii_case(wanted))
}

/// The direction attribute among `attrs`, if any (RFC 3264 §5.1). `sdp-rs` 0.2.1 types
/// `a=inactive` as `Other("inactive")` (a typo in its parser), hence the name match.
pub(crate) fn direction(attrs: &[Attribute]) -> Option<Direction> {
    attrs.iter().rev().find_map(direction_of)
}

fn direction_of(attr: &Attribute) -> Option<Direction> {
    let n = name(attr);
    [
        Direction::SendRecv,
        Direction::SendOnly,
        Direction::RecvOnly,
        Direction::Inactive,
    ]
    .into_iter()
    .find(|d| n.eq_ignore_ascii_case(d.as_str()))
}

/// `a=rtcp:<port> [IN IP4 <address>]` (RFC 3605 §2.1).
fn rtcp_attribute(attrs: &[Attribute]) -> Option<(u16, Option<IpAddr>)> {
    let value = values(attrs, "rtcp").next()?;
    let mut parts = value.split_ascii_whitespace();
    let port = parts.next()?.parse::<u16>().ok()?;
    let address = match (parts.next(), parts.next(), parts.next()) {
        (Some(_), Some(_), Some(addr)) => addr.parse::<IpAddr>().ok(),
        _ => None,
    };
    Some((port, address))
}

/// True when the m-section had an `a=rtcp` line.
pub(crate) fn has_rtcp_attribute(media: &MediaDescription) -> bool {
    values(&media.attributes, "rtcp").next().is_some()
}

/// Attributes the edge never forwards from either leg, at session or media level: SDES keys
/// (consumed and re-issued per leg), ICE (RFC 8839) and DTLS (RFC 8842, RFC 4145) that would
/// describe the wrong transport once media goes through the relay, ZRTP and MIKEY/legacy
/// encryption hints, and the RTCP attributes the edge writes itself. `a=group:BUNDLE` is
/// handled separately.
const DROPPED: [&str; 21] = [
    "crypto",
    "candidate",
    "remote-candidates",
    "end-of-candidates",
    "ice-ufrag",
    "ice-pwd",
    "ice-options",
    "ice-lite",
    "ice-mismatch",
    "ice-pacing",
    "fingerprint",
    "setup",
    "connection",
    "tls-id",
    "rtcp",
    "rtcp-mux",
    "rtcp-mux-only",
    "zrtp-hash",
    "encryption",
    "key-mgmt",
    "cryptoscale",
];

/// True when `attr` is forwarded to the other leg.
pub(crate) fn is_forwarded(attr: &Attribute) -> bool {
    let n = name(attr);
    if DROPPED.iter().any(|d| n.eq_ignore_ascii_case(d)) {
        return false;
    }
    // BUNDLE groups m-lines on one transport; the relay gives every m-line its own.
    !other_value(attr, "group").is_some_and(|v| {
        v.split_ascii_whitespace()
            .next()
            .is_some_and(|s| s.eq_ignore_ascii_case("BUNDLE"))
    })
}

/// The media type.
pub(crate) fn kind(media: &MediaDescription) -> MediaKind {
    match &media.media.media {
        MediaType::Audio => MediaKind::Audio,
        MediaType::Video => MediaKind::Video,
        MediaType::Text => MediaKind::Text,
        MediaType::Application => MediaKind::Application,
        MediaType::Message => MediaKind::Message,
        MediaType::Image => MediaKind::Image,
        MediaType::Other(other) => MediaKind::Other(other.clone()),
    }
}

/// The `m=` media type of a kind (the inverse of [`kind`]).
pub(crate) fn media_type(kind: &MediaKind) -> MediaType {
    match kind {
        MediaKind::Audio => MediaType::Audio,
        MediaKind::Video => MediaType::Video,
        MediaKind::Text => MediaType::Text,
        MediaKind::Application => MediaType::Application,
        MediaKind::Message => MediaType::Message,
        MediaKind::Image => MediaType::Image,
        MediaKind::Other(other) => MediaType::Other(other.clone()),
    }
}

/// The RTP profile of an m-line, as far as the relay is concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Profile {
    /// `RTP/AVP`
    Avp,
    /// `RTP/AVPF`
    Avpf,
    /// `RTP/SAVP`
    Savp,
    /// `RTP/SAVPF`
    Savpf,
    /// Anything the relay does not carry (`UDP/TLS/RTP/SAVPF`, `udptl`, `TCP/MSRP`...).
    Unsupported,
}

impl Profile {
    /// Classifies a proto field, ignoring case (liberal accept).
    pub(crate) fn of(proto: &ProtoType) -> Profile {
        let text = proto.to_string();
        if text.eq_ignore_ascii_case("RTP/AVP") {
            Profile::Avp
        } else if text.eq_ignore_ascii_case("RTP/AVPF") {
            Profile::Avpf
        } else if text.eq_ignore_ascii_case("RTP/SAVP") {
            Profile::Savp
        } else if text.eq_ignore_ascii_case("RTP/SAVPF") {
            Profile::Savpf
        } else {
            Profile::Unsupported
        }
    }

    /// True for the SRTP profiles.
    pub(crate) fn is_secure(self) -> bool {
        matches!(self, Profile::Savp | Profile::Savpf)
    }

    /// True for the feedback (AVPF, RFC 4585) profiles.
    pub(crate) fn is_feedback(self) -> bool {
        matches!(self, Profile::Avpf | Profile::Savpf)
    }
}

/// The proto written on a leg: `RTP/AVP(F)` or `RTP/SAVP(F)`.
pub(crate) fn proto(secure: bool, feedback: bool) -> ProtoType {
    match (secure, feedback) {
        (false, false) => ProtoType::RtpAvp,
        (false, true) => ProtoType::Other("RTP/AVPF".to_owned()),
        (true, false) => ProtoType::RtpSavp,
        (true, true) => ProtoType::RtpSavpf,
    }
}

/// The connection address that applies to a media description (RFC 8866 §5.7: media level
/// overrides session level).
pub(crate) fn connection_address(
    sdp: &SessionDescription,
    media: &MediaDescription,
    mline: usize,
) -> Result<IpAddr, RewriteError> {
    media
        .connections
        .first()
        .or(sdp.connection.as_ref())
        .map(|c| c.connection_address.base)
        .ok_or(RewriteError::MissingConnection { mline })
}

/// The remote endpoint a media description describes. `rtcp_mux` is the caller's decision
/// (it depends on what was offered); the port arithmetic follows RFC 3605 and RFC 5761.
pub(crate) fn peer(
    sdp: &SessionDescription,
    media: &MediaDescription,
    mline: usize,
    rtcp_mux: bool,
) -> Result<Peer, RewriteError> {
    let address = connection_address(sdp, media, mline)?;
    let rtp_port = media.media.port;
    let (rtcp_port, rtcp_address) = if rtcp_mux {
        (rtp_port, address)
    } else {
        match rtcp_attribute(&media.attributes) {
            Some((port, addr)) => (port, addr.unwrap_or(address)),
            // RFC 3550 §11: RTCP on the next (odd) port.
            None => (rtp_port.checked_add(1).unwrap_or(rtp_port), address),
        }
    };
    let direction = direction(&media.attributes)
        .or_else(|| direction(&sdp.attributes))
        .unwrap_or_default();
    Ok(Peer {
        address,
        rtp_port,
        rtcp_address,
        rtcp_port,
        rtcp_mux,
        direction,
        clock_rates: clock_rates(&media.attributes),
    })
}

/// `(payload type, clock rate)` of each well-formed `a=rtpmap:<pt> <name>/<rate>[/<params>]`
/// (RFC 8866 §6.6); a malformed one is left out (the relay then knows no rate for that type),
/// and so is `telephone-event`: every packet of an RFC 4733 event carries the event's start
/// timestamp (RFC 4733 §2), so its timestamps say nothing of network jitter.
pub(crate) fn clock_rates(attrs: &[Attribute]) -> Vec<(u8, u32)> {
    values(attrs, "rtpmap")
        .filter_map(|v| {
            let mut fields = v.split_whitespace();
            let pt = fields.next()?.parse::<u8>().ok().filter(|pt| *pt < 128)?;
            let mut encoding = fields.next()?.split('/');
            let name = encoding.next()?;
            if name.eq_ignore_ascii_case("telephone-event") {
                return None;
            }
            let rate = encoding.next()?.parse::<u32>().ok()?;
            (rate > 0).then_some((pt, rate))
        })
        .collect()
}

/// The `a=mid` value (RFC 5888).
pub(crate) fn mid(media: &MediaDescription) -> Option<String> {
    values(&media.attributes, "mid")
        .next()
        .map(|v| v.trim().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attrs(lines: &[(&str, Option<&str>)]) -> Vec<Attribute> {
        lines
            .iter()
            .map(|(n, v)| Attribute::Other((*n).into(), v.map(Into::into)))
            .collect()
    }

    #[test]
    fn clock_rates_come_from_well_formed_rtpmaps_only() {
        let a = attrs(&[
            ("rtpmap", Some("0 PCMU/8000")),
            ("rtpmap", Some("111 opus/48000/2")),
            ("rtpmap", Some("  97   iLBC/8000  ")),
            ("rtpmap", Some("101 telephone-event/8000")),
            ("rtpmap", Some("102 Telephone-Event/48000")),
            ("rtpmap", Some("13 CN/8000")),
            ("ptime", Some("20")),
            // Malformed, each left out: no rate, a rate of 0, not a number, a type of 128+,
            // no encoding at all.
            ("rtpmap", Some("98 H264")),
            ("rtpmap", Some("99 foo/0")),
            ("rtpmap", Some("100 foo/fast")),
            ("rtpmap", Some("200 foo/8000")),
            ("rtpmap", Some("102")),
            ("rtpmap", None),
        ]);
        assert_eq!(
            clock_rates(&a),
            vec![(0, 8000), (111, 48_000), (97, 8000), (13, 8000)],
            "telephone-event is no clock for jitter (RFC 4733 §2)"
        );
    }

    #[test]
    fn direction_reads_typed_and_untyped_forms() {
        assert_eq!(direction(&[Attribute::Sendonly]), Some(Direction::SendOnly));
        assert_eq!(
            direction(&attrs(&[("inactive", None)])),
            Some(Direction::Inactive)
        );
        assert_eq!(direction(&attrs(&[("mid", Some("1"))])), None);
    }

    #[test]
    fn rtcp_attribute_with_and_without_address() {
        assert_eq!(
            rtcp_attribute(&attrs(&[("rtcp", Some("5001"))])),
            Some((5001, None))
        );
        assert_eq!(
            rtcp_attribute(&attrs(&[("rtcp", Some("5001 IN IP4 192.0.2.9"))])),
            Some((5001, Some("192.0.2.9".parse().unwrap())))
        );
        assert_eq!(rtcp_attribute(&attrs(&[("rtcp", Some("x"))])), None);
    }

    #[test]
    fn ice_dtls_crypto_and_bundle_are_not_forwarded() {
        for n in [
            "crypto",
            "candidate",
            "ice-ufrag",
            "fingerprint",
            "setup",
            "rtcp-mux",
            "ICE-PWD",
        ] {
            assert!(
                !is_forwarded(&Attribute::Other(n.into(), Some("x".into()))),
                "{n}"
            );
        }
        assert!(!is_forwarded(&Attribute::Other(
            "group".into(),
            Some("BUNDLE 0 1".into())
        )));
        assert!(is_forwarded(&Attribute::Other(
            "group".into(),
            Some("LS 0 1".into())
        )));
        assert!(is_forwarded(&Attribute::Other(
            "fmtp".into(),
            Some("101 0-16".into())
        )));
        assert!(is_forwarded(&Attribute::Sendonly));
    }

    #[test]
    fn profiles() {
        assert_eq!(Profile::of(&ProtoType::RtpSavp), Profile::Savp);
        assert_eq!(
            Profile::of(&ProtoType::Other("rtp/avpf".into())),
            Profile::Avpf
        );
        assert_eq!(
            Profile::of(&ProtoType::Other("UDP/TLS/RTP/SAVPF".into())),
            Profile::Unsupported
        );
        assert_eq!(proto(false, true).to_string(), "RTP/AVPF");
        assert_eq!(proto(true, true).to_string(), "RTP/SAVPF");
    }
}
