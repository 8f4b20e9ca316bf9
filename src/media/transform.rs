//! The per-direction packet transform, chosen at signalling time (Start / Rekey) and applied
//! blindly per packet (rtpengine's `{in, out}` handler matrix, STYLE habit 6).
//!
//! | direction      | SRTP stream                | best-effort plain | keys not known yet |
//! |----------------|----------------------------|-------------------|--------------------|
//! | phone → PBX    | [`Inbound::Unprotect`]: SRTP→RTP, SRTCP→RTCP (auth, replay, ROC) | [`Inbound::Plain`] | [`Inbound::Closed`] |
//! | PBX → phone    | [`Outbound::Protect`]: RTP→SRTP, RTCP→SRTCP | [`Outbound::Plain`] | [`Outbound::Closed`] |
//!
//! Each SRTP direction owns one [`SrtpContext`] (RTP and RTCP keys of one master key; per-SSRC
//! state inside, so an SSRC change mid-stream derives nothing new and needs no signalling).
//!
//! RTP and RTCP sharing one port (rtcp-mux, RFC 5761 §4) are told apart here by the second
//! byte: RTCP packet types 192–223 fall on RTP payload types 64–95 with the marker bit set or
//! not, which RFC 5761 §4 reserves for exactly this reason.

use crate::srtp::key::MasterKey;
use crate::srtp::{ContextOptions, SrtpContext, SrtpError};

use super::latch::Proof;
use super::stats::DropReason;
pub use super::types::Kind;
use super::MediaError;

/// What one direction of a stream must do, as decided by signalling.
#[derive(Debug, Clone)]
pub enum TransformSpec {
    /// SRTP with this master key and these options (MKI, lifetime, replay window, session
    /// parameters). Phone → PBX unprotects with it, PBX → phone protects with it.
    Srtp(SrtpParams),
    /// Plain RTP relayed as is (best-effort policy, phone offered no crypto).
    Plain,
    /// Keys not known yet (e.g. the phone's answer is still pending): packets are dropped and
    /// counted as `not_keyed` until a `Rekey`.
    Closed,
}

/// Parameters of one SRTP context (from the chosen `a=crypto` line, or the edge's own key).
#[derive(Debug, Clone)]
pub struct SrtpParams {
    /// Master key and salt; its suite is the crypto suite.
    pub master_key: MasterKey,
    /// MKI, lifetime, replay window, unencrypted SRTP/SRTCP, SSRC limit.
    pub options: ContextOptions,
}

impl SrtpParams {
    /// Parameters with default options (no MKI, default lifetime and replay window).
    pub fn new(master_key: MasterKey) -> Self {
        SrtpParams {
            master_key,
            options: ContextOptions::default(),
        }
    }

    fn context(&self) -> Result<SrtpContext, MediaError> {
        SrtpContext::new(&self.master_key, &self.options).map_err(MediaError::Srtp)
    }
}

/// RFC 5761 §4: on a muxed port, a packet whose second byte is an RTCP packet type
/// (192..=223, i.e. RTP payload type 64..=95 with or without marker) is RTCP.
#[inline]
pub fn demux(packet: &[u8]) -> Kind {
    match packet.get(1) {
        Some(192..=223) => Kind::Rtcp,
        _ => Kind::Rtp,
    }
}

/// Cheapest sanity check of an unprotected packet: version 2 (RFC 3550 §5.1 / §6.4) and the
/// fixed header present.
#[inline]
fn plain_shape_ok(packet: &[u8], kind: Kind) -> bool {
    let min = match kind {
        Kind::Rtp => 12,
        Kind::Rtcp => 8,
    };
    packet.len() >= min && packet.first().is_some_and(|b| b >> 6 == 2)
}

fn drop_reason(e: SrtpError) -> DropReason {
    match e {
        SrtpError::AuthFailed | SrtpError::UnknownMki => DropReason::AuthFailed,
        SrtpError::Replayed | SrtpError::TooOld => DropReason::Replayed,
        SrtpError::KeyExpired => DropReason::KeyExpired,
        SrtpError::UnencryptedSrtcpRefused => DropReason::UnencryptedSrtcp,
        SrtpError::TooManyStreams => DropReason::TooManySsrcs,
        SrtpError::Malformed | SrtpError::BufferTooSmall | SrtpError::InvalidOptions => {
            DropReason::Malformed
        }
    }
}

/// Phone → PBX transform.
pub enum Inbound {
    /// SRTP/SRTCP → RTP/RTCP.
    Unprotect(Box<SrtpContext>),
    /// Plain in, plain out.
    Plain,
    /// Not keyed yet: drop.
    Closed,
}

impl Inbound {
    /// Brings the SRTP state the next packet needs into the cache ([`SrtpContext::warm`]).
    #[inline]
    pub fn warm(&self) -> u64 {
        match self {
            Inbound::Unprotect(ctx) => ctx.warm(),
            _ => 0,
        }
    }

    /// Builds the transform for a spec.
    pub fn from_spec(spec: &TransformSpec) -> Result<Self, MediaError> {
        Ok(match spec {
            TransformSpec::Srtp(p) => Inbound::Unprotect(Box::new(p.context()?)),
            TransformSpec::Plain => Inbound::Plain,
            TransformSpec::Closed => Inbound::Closed,
        })
    }

    /// Transforms `buf[..len]` in place; returns the plain length and what was proved.
    #[inline]
    pub fn apply(&mut self, buf: &mut [u8], len: usize, kind: Kind) -> Result<Plain, DropReason> {
        let packet = buf.get_mut(..len).ok_or(DropReason::Malformed)?;
        match self {
            Inbound::Unprotect(ctx) => match kind {
                Kind::Rtp => ctx.unprotect_rtp(packet).map(|len| Plain {
                    len,
                    proof: Proof::Authenticated,
                    unannounced_unencrypted_srtcp: false,
                }),
                Kind::Rtcp => ctx.unprotect_rtcp(packet).map(|r| Plain {
                    len: r.len,
                    proof: Proof::Authenticated,
                    unannounced_unencrypted_srtcp: r.unannounced_unencrypted,
                }),
            }
            .map_err(drop_reason),
            Inbound::Plain if plain_shape_ok(packet, kind) => Ok(Plain {
                len,
                proof: Proof::Unverified,
                unannounced_unencrypted_srtcp: false,
            }),
            Inbound::Plain => Err(DropReason::Malformed),
            Inbound::Closed => Err(DropReason::NotKeyed),
        }
    }
}

/// Result of the phone → PBX transform.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plain {
    /// Length of the plain packet at the start of the buffer.
    pub len: usize,
    /// What the transform proved about the packet (for the latch).
    pub proof: Proof,
    /// SRTCP with E=0 accepted through the Cisco SPA quirk option (counted).
    pub unannounced_unencrypted_srtcp: bool,
}

/// PBX → phone transform.
pub enum Outbound {
    /// RTP/RTCP → SRTP/SRTCP.
    Protect(Box<SrtpContext>),
    /// Plain in, plain out.
    Plain,
    /// Not keyed yet: drop.
    Closed,
}

impl Outbound {
    /// Brings the SRTP state the next packet needs into the cache ([`SrtpContext::warm`]).
    #[inline]
    pub fn warm(&self) -> u64 {
        match self {
            Outbound::Protect(ctx) => ctx.warm(),
            _ => 0,
        }
    }

    /// Builds the transform for a spec.
    pub fn from_spec(spec: &TransformSpec) -> Result<Self, MediaError> {
        Ok(match spec {
            TransformSpec::Srtp(p) => Outbound::Protect(Box::new(p.context()?)),
            TransformSpec::Plain => Outbound::Plain,
            TransformSpec::Closed => Outbound::Closed,
        })
    }

    /// Bytes `apply` may append (the receive buffer keeps this much spare room): an SRTCP
    /// trailer with a 16-octet tag and a 128-octet MKI.
    pub const MAX_OVERHEAD: usize = crate::srtp::MAX_TRAILER_LEN;

    /// Transforms `buf[..len]` in place (using spare room after it); returns the new length.
    #[inline]
    pub fn apply(&mut self, buf: &mut [u8], len: usize, kind: Kind) -> Result<usize, DropReason> {
        let packet = buf.get(..len).ok_or(DropReason::Malformed)?;
        if !plain_shape_ok(packet, kind) {
            return Err(DropReason::Malformed);
        }
        match self {
            Outbound::Protect(ctx) => match kind {
                Kind::Rtp => ctx.protect_rtp(buf, len),
                Kind::Rtcp => ctx.protect_rtcp(buf, len),
            }
            .map_err(drop_reason),
            Outbound::Plain => Ok(len),
            Outbound::Closed => Err(DropReason::NotKeyed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::srtp::suite::CryptoSuite;

    fn params(byte: u8) -> SrtpParams {
        let suite = CryptoSuite::AesCm128HmacSha1_80;
        let key = MasterKey::new(suite, &[byte; 16], &[byte ^ 0x55; 14]).unwrap();
        SrtpParams::new(key)
    }

    fn rtp(seq: u16, ssrc: u32, payload: &[u8]) -> Vec<u8> {
        let mut p = vec![0x80, 0, 0, 0, 0, 0, 0, 160, 0, 0, 0, 0];
        p[2..4].copy_from_slice(&seq.to_be_bytes());
        p[8..12].copy_from_slice(&ssrc.to_be_bytes());
        p.extend_from_slice(payload);
        p
    }

    #[test]
    fn demux_by_rfc5761_payload_type_range() {
        assert_eq!(demux(&[0x80, 0]), Kind::Rtp); // PCMU
        assert_eq!(demux(&[0x80, 101]), Kind::Rtp); // telephone-event
        assert_eq!(demux(&[0x80, 0x80 | 8]), Kind::Rtp); // marker + PCMA
        assert_eq!(demux(&[0x80, 200]), Kind::Rtcp); // SR
        assert_eq!(demux(&[0x81, 201]), Kind::Rtcp); // RR
        assert_eq!(demux(&[0x80, 192]), Kind::Rtcp);
        assert_eq!(demux(&[0x80, 223]), Kind::Rtcp);
        assert_eq!(demux(&[0x80, 224]), Kind::Rtp);
        assert_eq!(demux(&[0x80]), Kind::Rtp);
        assert_eq!(demux(&[]), Kind::Rtp);
    }

    #[test]
    fn protect_then_unprotect_is_identity_and_tamper_is_auth_failure() {
        let spec = TransformSpec::Srtp(params(7));
        let mut out = Outbound::from_spec(&spec).unwrap();
        let mut inb = Inbound::from_spec(&spec).unwrap();
        let plain = rtp(65535, 0x1234_5678, &[0xd5; 160]);
        let mut buf = [0u8; 1600];
        buf[..plain.len()].copy_from_slice(&plain);
        let n = out.apply(&mut buf, plain.len(), Kind::Rtp).unwrap();
        assert!(n > plain.len());
        let protected = buf[..n].to_vec();
        let out = inb.apply(&mut buf, n, Kind::Rtp).unwrap();
        assert_eq!(out.proof, Proof::Authenticated);
        assert_eq!(&buf[..out.len], &plain[..]);

        // The same packet again is a replay.
        buf[..n].copy_from_slice(&protected);
        assert_eq!(inb.apply(&mut buf, n, Kind::Rtp), Err(DropReason::Replayed));

        // A flipped payload bit fails authentication.
        let mut forged = protected.clone();
        forged[20] ^= 1;
        forged[2..4].copy_from_slice(&1u16.to_be_bytes());
        buf[..n].copy_from_slice(&forged);
        assert_eq!(
            inb.apply(&mut buf, n, Kind::Rtp),
            Err(DropReason::AuthFailed)
        );
    }

    #[test]
    fn plain_and_closed() {
        let mut inb = Inbound::from_spec(&TransformSpec::Plain).unwrap();
        let mut out = Outbound::from_spec(&TransformSpec::Plain).unwrap();
        let plain = rtp(1, 1, &[1, 2, 3]);
        let mut buf = [0u8; 256];
        buf[..plain.len()].copy_from_slice(&plain);
        assert_eq!(
            inb.apply(&mut buf, plain.len(), Kind::Rtp),
            Ok(Plain {
                len: plain.len(),
                proof: Proof::Unverified,
                unannounced_unencrypted_srtcp: false
            })
        );
        assert_eq!(out.apply(&mut buf, plain.len(), Kind::Rtp), Ok(plain.len()));
        assert_eq!(&buf[..plain.len()], &plain[..]);
        // Not RTP version 2.
        buf[0] = 0x40;
        assert_eq!(
            inb.apply(&mut buf, plain.len(), Kind::Rtp),
            Err(DropReason::Malformed)
        );
        let mut closed = Inbound::from_spec(&TransformSpec::Closed).unwrap();
        assert_eq!(
            closed.apply(&mut buf, plain.len(), Kind::Rtp),
            Err(DropReason::NotKeyed)
        );
        // Length beyond the buffer is refused, not a panic.
        assert_eq!(
            inb.apply(&mut buf, 10_000, Kind::Rtp),
            Err(DropReason::Malformed)
        );
    }

    /// An MKI of 128 octets (RFC 4568 §9.1's longest) on the longest trailer (SRTCP with a
    /// GCM tag) still fits the spare room the relay keeps after its largest datagram.
    #[test]
    fn longest_mki_fits_the_relay_buffer() {
        use crate::srtp::sdes::{Mki, MAX_MKI_LEN};
        for suite in CryptoSuite::ALL {
            let key = MasterKey::generate(suite, |b| b.fill(9));
            let mut p = SrtpParams::new(key);
            p.options.mki = Mki::new(1, MAX_MKI_LEN);
            let spec = TransformSpec::Srtp(p);
            let mut out = Outbound::from_spec(&spec).unwrap();
            let mut inb = Inbound::from_spec(&spec).unwrap();
            let max = 4096 - Outbound::MAX_OVERHEAD;
            let mut buf = vec![0u8; max + Outbound::MAX_OVERHEAD];
            // A full-size RTCP packet (RTCP is longer-trailed than RTP).
            buf[..8].copy_from_slice(&[0x80, 200, 0, 6, 0, 0, 0, 1]);
            let n = out.apply(&mut buf, max, Kind::Rtcp).unwrap();
            assert!(n > max + usize::from(MAX_MKI_LEN));
            assert_eq!(inb.apply(&mut buf, n, Kind::Rtcp).unwrap().len, max);
            let plain = rtp(9, 9, &vec![0xd5; max - 12]);
            buf[..max].copy_from_slice(&plain);
            let n = out.apply(&mut buf, max, Kind::Rtp).unwrap();
            assert_eq!(inb.apply(&mut buf, n, Kind::Rtp).unwrap().len, max);
            assert_eq!(&buf[..max], &plain[..]);
        }
    }

    proptest::proptest! {
        /// Arbitrary bytes never panic either direction, in either kind.
        #[test]
        fn arbitrary_bytes_never_panic(data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300)) {
            let spec = TransformSpec::Srtp(params(3));
            let mut inb = Inbound::from_spec(&spec).unwrap();
            let mut out = Outbound::from_spec(&spec).unwrap();
            let mut buf = [0u8; 300 + Outbound::MAX_OVERHEAD];
            for kind in [Kind::Rtp, Kind::Rtcp] {
                buf[..data.len()].copy_from_slice(&data);
                let _ = inb.apply(&mut buf, data.len(), kind);
                buf[..data.len()].copy_from_slice(&data);
                let _ = out.apply(&mut buf, data.len(), kind);
            }
        }
    }
}
