//! HEP v3 (the Homer Encapsulation Protocol, "HEP3"/EEP) encoding: pure, no I/O.
//!
//! A HEP3 packet is `"HEP3"`, a 16-bit total length (header included), then chunks, each
//! `vendor id (u16) | type id (u16) | length (u16, chunk header included) | value`, all in
//! network byte order (sipcapture/HEP, `HEP3_rev12`). Every chunk here is a generic one
//! (vendor 0):
//!
//! | type   | value                                   |
//! |--------|-----------------------------------------|
//! | 0x0001 | IP family: 2 = IPv4, 10 = IPv6 (u8)     |
//! | 0x0002 | IP protocol: 17 = UDP, 6 = TCP (u8)     |
//! | 0x0003/0x0004 | IPv4 source / destination    |
//! | 0x0005/0x0006 | IPv6 source / destination    |
//! | 0x0007/0x0008 | source / destination port (u16) |
//! | 0x0009/0x000a | timestamp: seconds, microseconds (u32) |
//! | 0x000b | protocol type: 1 = SIP, 5 = RTCP (u8)   |
//! | 0x000c | capture agent id (u32)                  |
//! | 0x000e | authentication key (octets), when set   |
//! | 0x000f | the captured payload (octets)           |
//! | 0x0011 | correlation id (octets): the Call-ID    |
//!
//! The phone leg is SIP over TLS: the edge captures the decrypted message and reports it as
//! TCP (protocol 6) between the TLS connection's addresses, the way Homer's own agents report
//! decrypted TLS; the bytes on the wire were TLS records, not this payload.

// Address values only, no sockets (tests/architecture.rs keeps this file pure).
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The largest HEP packet: its length field is 16 bits.
pub const MAX_PACKET: usize = u16::MAX as usize;

/// Chunk header: vendor, type, length.
const CHUNK_HEADER: usize = 6;

/// The transport the captured message travelled on (chunk 0x0002).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IpProto {
    Udp,
    /// TCP, and TLS over TCP (the payload is then the decrypted message).
    Tcp,
}

impl IpProto {
    pub fn number(self) -> u8 {
        match self {
            Self::Udp => 17,
            Self::Tcp => 6,
        }
    }
}

/// What the payload is (chunk 0x000b, HEP3 "capture protocol types").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PayloadType {
    Sip,
    Rtcp,
}

impl PayloadType {
    pub fn number(self) -> u8 {
        match self {
            Self::Sip => 1,
            Self::Rtcp => 5,
        }
    }
}

/// One captured message and everything HEP says about it.
#[derive(Debug, Clone, Copy)]
pub struct Packet<'a> {
    pub src: SocketAddr,
    pub dst: SocketAddr,
    pub proto: IpProto,
    pub payload_type: PayloadType,
    /// When the edge received or sent the message.
    pub time: SystemTime,
    pub capture_id: u32,
    /// `hep.password` (chunk 0x000e), checked by the collector.
    pub auth_key: Option<&'a [u8]>,
    /// Chunk 0x0011: lets Homer group both legs of a call (the B2BUA keeps the Call-ID).
    pub correlation_id: Option<&'a [u8]>,
    pub payload: &'a [u8],
}

/// Why a message cannot be encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    /// HEP's 16-bit length cannot describe it.
    #[error("{size} bytes do not fit a HEP packet (at most {MAX_PACKET})")]
    TooLarge { size: usize },
}

/// Both addresses in one family: HEP has one family chunk per packet. IPv4-mapped IPv6
/// addresses (what a dual-stack socket reports for IPv4 peers) count as IPv4; a packet with
/// one address of each family carries both as IPv6 (the IPv4 one mapped).
fn one_family(src: IpAddr, dst: IpAddr) -> (IpAddr, IpAddr) {
    match (src.to_canonical(), dst.to_canonical()) {
        (a @ IpAddr::V4(_), b @ IpAddr::V4(_)) => (a, b),
        (a, b) => (IpAddr::V6(as_v6(a)), IpAddr::V6(as_v6(b))),
    }
}

fn as_v6(ip: IpAddr) -> Ipv6Addr {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    }
}

fn chunk(out: &mut Vec<u8>, kind: u16, value: &[u8]) {
    // Callers check the total size first, so the length fits.
    let len = u16::try_from(CHUNK_HEADER + value.len()).unwrap_or(u16::MAX);
    out.extend_from_slice(&0u16.to_be_bytes());
    out.extend_from_slice(&kind.to_be_bytes());
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(value);
}

/// The encoded size of `p`.
pub fn encoded_len(p: &Packet<'_>) -> usize {
    let (src, _) = one_family(p.src.ip(), p.dst.ip());
    let addr = if src.is_ipv4() { 4 } else { 16 };
    let fixed = 6 // "HEP3" + length
        + (CHUNK_HEADER + 1) * 3 // family, protocol, payload type
        + (CHUNK_HEADER + addr) * 2
        + (CHUNK_HEADER + 2) * 2 // ports
        + (CHUNK_HEADER + 4) * 3; // seconds, microseconds, capture id
    fixed
        + p.auth_key.map_or(0, |k| CHUNK_HEADER + k.len())
        + p.correlation_id.map_or(0, |c| CHUNK_HEADER + c.len())
        + CHUNK_HEADER
        + p.payload.len()
}

/// Appends the HEP3 encoding of `p` to `out` (cleared first).
pub fn encode(p: &Packet<'_>, out: &mut Vec<u8>) -> Result<(), EncodeError> {
    let size = encoded_len(p);
    let total = u16::try_from(size).map_err(|_| EncodeError::TooLarge { size })?;
    out.clear();
    out.reserve(size);
    out.extend_from_slice(b"HEP3");
    out.extend_from_slice(&total.to_be_bytes());
    let (src, dst) = one_family(p.src.ip(), p.dst.ip());
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            chunk(out, 0x0001, &[2]);
            chunk(out, 0x0002, &[p.proto.number()]);
            chunk(out, 0x0003, &s.octets());
            chunk(out, 0x0004, &d.octets());
        }
        (s, d) => {
            chunk(out, 0x0001, &[10]);
            chunk(out, 0x0002, &[p.proto.number()]);
            chunk(out, 0x0005, &as_v6(s).octets());
            chunk(out, 0x0006, &as_v6(d).octets());
        }
    }
    chunk(out, 0x0007, &p.src.port().to_be_bytes());
    chunk(out, 0x0008, &p.dst.port().to_be_bytes());
    // Before 1970 (a broken clock) reads as 0; past 2106 the seconds wrap (u32 on the wire).
    let since = p.time.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
    chunk(out, 0x0009, &(since.as_secs() as u32).to_be_bytes());
    chunk(out, 0x000a, &since.subsec_micros().to_be_bytes());
    chunk(out, 0x000b, &[p.payload_type.number()]);
    chunk(out, 0x000c, &p.capture_id.to_be_bytes());
    if let Some(key) = p.auth_key {
        chunk(out, 0x000e, key);
    }
    chunk(out, 0x000f, p.payload);
    if let Some(id) = p.correlation_id {
        chunk(out, 0x0011, id);
    }
    Ok(())
}

/// The Call-ID of a SIP message (`Call-ID` or its compact form `i`, RFC 3261 §7.3.3, §20.8),
/// without surrounding whitespace; `None` when the head has none. Reads only the header
/// lines (up to the first empty line); never fails on odd input.
pub fn call_id(message: &[u8]) -> Option<&[u8]> {
    // Skip the start line.
    let mut rest = message;
    let nl = rest.iter().position(|&b| b == b'\n')?;
    rest = rest.get(nl + 1..)?;
    loop {
        let end = rest.iter().position(|&b| b == b'\n').unwrap_or(rest.len());
        let line = rest.get(..end)?;
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            return None;
        }
        if let Some(colon) = line.iter().position(|&b| b == b':') {
            let (name, value) = line.split_at(colon);
            let name = name.trim_ascii();
            if name.eq_ignore_ascii_case(b"call-id") || name.eq_ignore_ascii_case(b"i") {
                let value = value.get(1..)?.trim_ascii();
                return (!value.is_empty()).then_some(value);
            }
        }
        rest = rest.get(end + 1..)?;
    }
}

#[cfg(test)]
mod tests {
    //! Decoded by an independent HEP decoder (the `hep` crate), not by ours.
    use super::*;
    use proptest::prelude::*;

    const INVITE: &[u8] = b"INVITE sip:200@edge SIP/2.0\r\nVia: SIP/2.0/TLS 192.0.2.1:5061;branch=z9hG4bK1\r\n\
        From: <sip:101@edge>;tag=a\r\nTo: <sip:200@edge>\r\nCall-ID: abc-123@phone\r\nCSeq: 1 INVITE\r\n\
        Content-Length: 0\r\n\r\n";

    fn packet<'a>(src: &str, dst: &str, payload: &'a [u8]) -> Packet<'a> {
        Packet {
            src: src.parse().unwrap(),
            dst: dst.parse().unwrap(),
            proto: IpProto::Tcp,
            payload_type: PayloadType::Sip,
            time: UNIX_EPOCH + Duration::from_micros(1_765_000_000_123_456),
            capture_id: 2001,
            auth_key: None,
            correlation_id: call_id(payload),
            payload,
        }
    }

    fn decode(bytes: &[u8]) -> hep::Chunk {
        hep::parse_packet(bytes).expect("the hep crate decodes it")
    }

    #[test]
    fn an_ipv4_sip_message_decodes_with_every_field() {
        let p = packet("192.0.2.1:40000", "198.51.100.2:5061", INVITE);
        let mut out = Vec::new();
        encode(&p, &mut out).unwrap();
        assert_eq!(&out[..4], b"HEP3");
        assert_eq!(usize::from(u16::from_be_bytes([out[4], out[5]])), out.len());
        let c = decode(&out);
        assert_eq!(c.ip_protocol_family, 2);
        assert_eq!(c.ip_protocol_id, 6);
        assert_eq!(c.ipv4_src_address.to_string(), "192.0.2.1");
        assert_eq!(c.ipv4_dst_address.to_string(), "198.51.100.2");
        assert_eq!(c.proto_src_port, 40000);
        assert_eq!(c.proto_dst_port, 5061);
        assert_eq!(c.timestamp_seconds, 1_765_000_000);
        assert_eq!(c.timestamp_micro_seconds_offset, 123_456);
        assert_eq!(c.proto_type, hep::CapProtoType::Sip);
        assert_eq!(c.capture_agent_id, 2001);
        assert_eq!(c.authenticate_key, "");
        assert_eq!(c.packet_payload.as_bytes(), INVITE);
        assert_eq!(c.internal_correlation_id, "abc-123@phone");
    }

    #[test]
    fn ipv6_udp_rtcp_with_an_auth_key() {
        let mut p = packet("[2001:db8::1]:5080", "[2001:db8::2]:5060", INVITE);
        p.proto = IpProto::Udp;
        p.payload_type = PayloadType::Rtcp;
        p.auth_key = Some(b"s3cret");
        p.correlation_id = None;
        let mut out = Vec::new();
        encode(&p, &mut out).unwrap();
        let c = decode(&out);
        assert_eq!(c.ip_protocol_family, 10);
        assert_eq!(c.ip_protocol_id, 17);
        assert_eq!(c.ipv6_src_address.to_string(), "2001:db8::1");
        assert_eq!(c.ipv6_dst_address.to_string(), "2001:db8::2");
        assert_eq!(c.proto_type, hep::CapProtoType::Rtcp);
        assert_eq!(c.authenticate_key, "s3cret");
        assert_eq!(c.internal_correlation_id, "");
    }

    #[test]
    fn a_mapped_ipv4_peer_is_reported_as_ipv4_and_mixed_families_as_ipv6() {
        let p = packet("[::ffff:192.0.2.9]:5061", "192.0.2.10:5080", INVITE);
        let mut out = Vec::new();
        encode(&p, &mut out).unwrap();
        let c = decode(&out);
        assert_eq!(c.ip_protocol_family, 2);
        assert_eq!(c.ipv4_src_address.to_string(), "192.0.2.9");
        let p = packet("[2001:db8::1]:5061", "192.0.2.10:5080", INVITE);
        encode(&p, &mut out).unwrap();
        let c = decode(&out);
        assert_eq!(c.ip_protocol_family, 10);
        assert_eq!(c.ipv6_dst_address.to_string(), "::ffff:192.0.2.10");
    }

    #[test]
    fn a_payload_past_the_16_bit_length_is_refused() {
        let big = vec![b'x'; MAX_PACKET];
        let p = packet("192.0.2.1:1", "192.0.2.2:2", &big);
        let mut out = Vec::new();
        assert!(matches!(
            encode(&p, &mut out),
            Err(EncodeError::TooLarge { .. })
        ));
        // The largest payload that fits still encodes.
        let fits = MAX_PACKET - (encoded_len(&p) - big.len());
        let p = packet("192.0.2.1:1", "192.0.2.2:2", &big[..fits]);
        encode(&p, &mut out).unwrap();
        assert_eq!(out.len(), MAX_PACKET);
    }

    #[test]
    fn call_id_long_and_compact_forms() {
        assert_eq!(call_id(INVITE), Some(&b"abc-123@phone"[..]));
        assert_eq!(
            call_id(b"SIP/2.0 200 OK\r\ni:   x9  \r\n\r\nCall-ID: body\r\n"),
            Some(&b"x9"[..])
        );
        assert_eq!(call_id(b"SIP/2.0 200 OK\nCALL-ID:y\n\n"), Some(&b"y"[..]));
        // Only the head counts; a Call-ID in the body is not the message's.
        assert_eq!(
            call_id(b"SIP/2.0 200 OK\r\nTo: a\r\n\r\nCall-ID: z\r\n"),
            None
        );
        assert_eq!(call_id(b"SIP/2.0 200 OK\r\nVia: i: not\r\n"), None);
        assert_eq!(call_id(b""), None);
        assert_eq!(call_id(b"no newline"), None);
    }

    fn addr() -> impl Strategy<Value = SocketAddr> {
        prop_oneof![
            (any::<[u8; 4]>(), any::<u16>()).prop_map(|(ip, port)| SocketAddr::from((ip, port))),
            (any::<[u8; 16]>(), any::<u16>()).prop_map(|(ip, port)| SocketAddr::from((ip, port))),
        ]
    }

    proptest! {
        #[test]
        fn every_packet_round_trips_through_the_hep_crate(
            src in addr(),
            dst in addr(),
            udp in any::<bool>(),
            rtcp in any::<bool>(),
            micros in 0u64..(u32::MAX as u64 * 1_000_000),
            capture_id in any::<u32>(),
            key in proptest::option::of("[ -~]{1,40}"),
            cid in proptest::option::of("[!-~]{1,80}"),
            // The decoder needs UTF-8 and more than 2 bytes of payload.
            payload in "[ -~\r\n]{3,2000}",
        ) {
            let p = Packet {
                src,
                dst,
                proto: if udp { IpProto::Udp } else { IpProto::Tcp },
                payload_type: if rtcp { PayloadType::Rtcp } else { PayloadType::Sip },
                time: UNIX_EPOCH + Duration::from_micros(micros),
                capture_id,
                auth_key: key.as_deref().map(str::as_bytes),
                correlation_id: cid.as_deref().map(str::as_bytes),
                payload: payload.as_bytes(),
            };
            let mut out = Vec::new();
            encode(&p, &mut out).unwrap();
            prop_assert_eq!(out.len(), encoded_len(&p));
            let c = decode(&out);
            let (s, d) = one_family(src.ip(), dst.ip());
            match (s, d) {
                (IpAddr::V4(s), IpAddr::V4(d)) => {
                    prop_assert_eq!(c.ip_protocol_family, 2);
                    prop_assert_eq!(c.ipv4_src_address, s);
                    prop_assert_eq!(c.ipv4_dst_address, d);
                }
                (s, d) => {
                    prop_assert_eq!(c.ip_protocol_family, 10);
                    prop_assert_eq!(c.ipv6_src_address, as_v6(s));
                    prop_assert_eq!(c.ipv6_dst_address, as_v6(d));
                }
            }
            prop_assert_eq!(c.ip_protocol_id, if udp { 17 } else { 6 });
            prop_assert_eq!(c.proto_src_port, src.port());
            prop_assert_eq!(c.proto_dst_port, dst.port());
            prop_assert_eq!(u64::from(c.timestamp_seconds), micros / 1_000_000);
            prop_assert_eq!(u64::from(c.timestamp_micro_seconds_offset), micros % 1_000_000);
            prop_assert_eq!(c.proto_type, if rtcp { hep::CapProtoType::Rtcp } else { hep::CapProtoType::Sip });
            prop_assert_eq!(c.capture_agent_id, capture_id);
            prop_assert_eq!(c.authenticate_key, key.unwrap_or_default());
            prop_assert_eq!(c.internal_correlation_id, cid.unwrap_or_default());
            prop_assert_eq!(c.packet_payload, payload);
        }

        #[test]
        fn call_id_never_panics_and_finds_an_inserted_header(
            junk in proptest::collection::vec(any::<u8>(), 0..500),
            id in "[!-~]{1,60}",
        ) {
            let _ = call_id(&junk);
            let msg = format!("OPTIONS sip:a SIP/2.0\r\nVia: x\r\nCall-ID: {id}\r\n\r\n");
            prop_assert_eq!(call_id(msg.as_bytes()), Some(id.as_bytes()));
        }
    }
}
