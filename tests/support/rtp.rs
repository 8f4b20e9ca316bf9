//! The one RTP packet builder of the test suites (RFC 3550 §5.1): a fixed 12-byte header,
//! version 2, payload type 0 (PCMU), timestamp advancing 160 samples (20 ms at 8 kHz) per
//! sequence number. Test binaries that do not use the whole harness include this file alone
//! (`#[path = "support/rtp.rs"] mod rtp;`).
#![allow(dead_code)]

/// An RTP packet with `seq`, `ssrc` and `payload` (timestamp `seq · 160`).
pub fn rtp(seq: u16, ssrc: u32, payload: impl IntoIterator<Item = u8>) -> Vec<u8> {
    let mut p = vec![0x80, 0x00];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&u32::from(seq).wrapping_mul(160).to_be_bytes());
    p.extend_from_slice(&ssrc.to_be_bytes());
    p.extend(payload);
    p
}

/// `len` payload bytes that differ from one sequence number to the next (byte `i` is
/// `i ^ seq`), so a packet relayed under the wrong number or mixed up is seen.
pub fn pattern(seq: u16, len: usize) -> impl Iterator<Item = u8> {
    (0..len).map(move |i| (i as u8) ^ (seq as u8))
}

/// A 20 ms PCMU frame: [`rtp`] with a 160-byte [`pattern`] payload.
pub fn voice(seq: u16, ssrc: u32) -> Vec<u8> {
    rtp(seq, ssrc, pattern(seq, 160))
}
