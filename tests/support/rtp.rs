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

/// One RTCP report block (RFC 3550 §6.4.1) about `ssrc`: fraction lost (1/256), cumulative
/// lost, jitter (timestamp units), LSR (middle 32 bits of the echoed SR's NTP time) and DLSR
/// (1/65536 s).
pub fn report_block(
    ssrc: u32,
    fraction: u8,
    lost: u32,
    highest: u32,
    jitter: u32,
    lsr: u32,
    dlsr: u32,
) -> Vec<u8> {
    let mut b = ssrc.to_be_bytes().to_vec();
    b.push(fraction);
    b.extend_from_slice(&lost.to_be_bytes()[1..]);
    for w in [highest, jitter, lsr, dlsr] {
        b.extend_from_slice(&u32::to_be_bytes(w));
    }
    b
}

/// An RTCP SR from `ssrc` whose NTP timestamp's middle 32 bits are `ntp_middle` (RFC 3550
/// §6.4.1) when `Some`, else an RR (§6.4.2), carrying `blocks`, followed by an SDES CNAME so
/// the compound is what phones send (§6.1).
pub fn rtcp_report(ssrc: u32, ntp_middle: Option<u32>, blocks: &[Vec<u8>]) -> Vec<u8> {
    let mut body = ssrc.to_be_bytes().to_vec();
    if let Some(mid) = ntp_middle {
        body.extend_from_slice(&(mid >> 16).to_be_bytes());
        body.extend_from_slice(&(mid << 16).to_be_bytes());
        body.extend_from_slice(&[0u8; 12]);
    }
    for b in blocks {
        body.extend_from_slice(b);
    }
    let pt = if ntp_middle.is_some() { 200 } else { 201 };
    let mut p = vec![0x80 | blocks.len() as u8, pt];
    p.extend_from_slice(&((body.len() / 4) as u16).to_be_bytes());
    p.extend(body);
    // SDES, one chunk: SSRC, CNAME "t", end, padded to a word.
    p.extend_from_slice(&[0x81, 202, 0, 2]);
    p.extend_from_slice(&ssrc.to_be_bytes());
    p.extend_from_slice(&[1, 1, b't', 0]);
    p
}
