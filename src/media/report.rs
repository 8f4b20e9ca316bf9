//! Per-stream call quality as the endpoints report it in RTCP (PURE core + lock-free
//! publication), next to [`super::quality`]'s relay-side view.
//!
//! - [`RtcpReports`] is owned by the relay worker, one per stream, and fed every RTCP compound
//!   the relay forwards ([`super::rtcp`] reads it), once the packet is authenticated and its
//!   source accepted: the phone's after SRTCP unprotect, the PBX's before protect. It
//!   allocates nothing and takes no lock; it stores into [`ReportCells`] (relaxed atomics).
//! - Each side's report blocks are about the media it *receives*: the phone's about the RTP
//!   the PBX sends, the PBX's about the RTP the phone sends. Only the block whose SSRC is the
//!   source the edge relays toward that side is taken (the edge is transparent to SSRCs); while
//!   the edge has seen no RTP that way, the first block.
//! - Loss comes two ways: the block's fraction lost (the interval since the receiver's previous
//!   report) and, for the whole stream, its cumulative lost over the packets expected, which
//!   the edge counts from the first sequence number it relayed of that SSRC to the block's
//!   extended highest sequence number (RFC 3550 §6.4.1, A.3; the edge relays sequence numbers
//!   unchanged, so its first one is the receiver's base unless the very first packets were
//!   lost on the last hop).
//! - Jitter arrives in RTP timestamp units (RFC 3550 §6.4.1); it is converted with the clock
//!   rate of the payload type the edge last relayed that way (its sender's `a=rtpmap`, or a
//!   static type's: [`super::types::ClockRates`]); a type neither maps, or no RTP yet, falls
//!   back to 8000 Hz (G.711, G.722 and G.729 all use it).
//! - Round-trip time per leg, measured at the edge with its own monotonic clock only (no one
//!   else's clock is trusted): when the edge forwards a side's SR it remembers the SR's NTP
//!   middle 32 bits and the local instant, in a small fixed ring per sending side
//!   ([`SR_RING`] entries). When the other side's report block echoes that value as LSR, the
//!   time since forwarding minus the block's DLSR is the round trip edge → that side → edge
//!   (RFC 3550 §6.4.1, "A-LSR-DLSR"). A phone's forged LSR/DLSR can only match SRs the edge
//!   forwarded *to that phone* and so can only move that phone's own leg's RTT (clamped to
//!   ≥ 0; a DLSR claiming more than the elapsed time is ignored).

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use super::rtcp::{walk, Packet, ReportBlock};
use super::types::Side;

/// SRs remembered per sending side. Endpoints send an SR every few seconds (RFC 3550 §6.2:
/// 5 s minimum interval), so a report echoing one is normally answering one of the last two;
/// 8 leaves room for reports crossing or being lost.
pub const SR_RING: usize = 8;

/// Clock rate assumed when the payload type's is unknown (see the module doc).
pub const FALLBACK_CLOCK_RATE: u32 = 8000;

const UNKNOWN: u64 = u64::MAX;

/// One SR the edge forwarded.
#[derive(Debug, Clone, Copy, Default)]
struct SrSent {
    /// Its NTP middle 32 bits (what comes back as LSR); 0 = empty slot (LSR 0 means "no SR").
    lsr: u32,
    /// When the edge forwarded it, ns since the stream's epoch.
    at_ns: u64,
}

/// The latest report one side sent about the media it receives, and the RTT of the leg to it;
/// written by the owning worker only.
#[derive(Debug)]
pub struct ReportCells {
    reports: AtomicU64,
    fraction_lost: AtomicU64,
    cumulative_lost: AtomicI64,
    /// Packets the receiver should have had of the stream (see the module doc), or UNKNOWN.
    expected: AtomicU64,
    jitter_us: AtomicU64,
    rtt_us: AtomicU64,
}

impl Default for ReportCells {
    fn default() -> Self {
        ReportCells {
            reports: AtomicU64::new(0),
            fraction_lost: AtomicU64::new(0),
            cumulative_lost: AtomicI64::new(0),
            expected: AtomicU64::new(UNKNOWN),
            jitter_us: AtomicU64::new(UNKNOWN),
            rtt_us: AtomicU64::new(UNKNOWN),
        }
    }
}

impl ReportCells {
    /// Reads the published values; `None` when that side sent no usable report block yet and
    /// no RTT was measured.
    pub fn snapshot(&self) -> Option<ReportSnapshot> {
        let reports = self.reports.load(Ordering::Relaxed);
        let rtt = self.rtt_us.load(Ordering::Relaxed);
        if reports == 0 && rtt == UNKNOWN {
            return None;
        }
        let jitter = self.jitter_us.load(Ordering::Relaxed);
        let expected = self.expected.load(Ordering::Relaxed);
        Some(ReportSnapshot {
            reports,
            fraction_lost: (reports > 0).then(|| self.fraction_lost.load(Ordering::Relaxed) as u8),
            cumulative_lost: (reports > 0).then(|| self.cumulative_lost.load(Ordering::Relaxed)),
            expected: (reports > 0 && expected != UNKNOWN).then_some(expected),
            jitter_us: (jitter != UNKNOWN).then_some(jitter),
            rtt_us: (rtt != UNKNOWN).then_some(rtt),
        })
    }

    fn store_block(&self, b: &ReportBlock, clock_rate: u32, base_seq: Option<u16>) {
        // Expected = extended highest - base + 1 (RFC 3550 A.3); a highest below the base
        // means the receiver counts from elsewhere: unknown, not a made-up figure.
        let expected = base_seq
            .and_then(|base| b.extended_highest_seq.checked_sub(u32::from(base)))
            .map_or(UNKNOWN, |d| u64::from(d) + 1);
        self.expected.store(expected, Ordering::Relaxed);
        self.fraction_lost
            .store(u64::from(b.fraction_lost), Ordering::Relaxed);
        self.cumulative_lost
            .store(i64::from(b.cumulative_lost), Ordering::Relaxed);
        let us = u64::from(b.jitter) * 1_000_000 / u64::from(clock_rate.max(1));
        self.jitter_us.store(us, Ordering::Relaxed);
        self.reports.fetch_add(1, Ordering::Relaxed);
    }
}

/// One side's latest report, as read from [`ReportCells`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReportSnapshot {
    /// Report blocks taken so far.
    pub reports: u64,
    /// Fraction lost of the latest block, in 1/256 (`None` while only an RTT is known).
    pub fraction_lost: Option<u8>,
    /// Cumulative lost of the latest block.
    pub cumulative_lost: Option<i64>,
    /// Packets of the stream the receiver expected up to the latest block (see the module
    /// doc); `None` when the edge relayed none of that SSRC.
    pub expected: Option<u64>,
    /// Interarrival jitter of the latest block in µs.
    pub jitter_us: Option<u64>,
    /// Round-trip time of the leg edge → that side → edge, µs.
    pub rtt_us: Option<u64>,
}

impl ReportSnapshot {
    /// The latest fraction lost as a ratio 0..=1.
    pub fn loss_ratio(&self) -> Option<f64> {
        self.fraction_lost.map(|f| f64::from(f) / 256.0)
    }

    /// Loss over the whole stream so far, 0..=1: cumulative lost / expected (duplicates can
    /// make cumulative lost negative: counted as 0).
    pub fn stream_loss_ratio(&self) -> Option<f64> {
        let expected = self.expected.filter(|e| *e > 0)?;
        let lost = u64::try_from(self.cumulative_lost?.max(0)).ok()?;
        Some((lost as f64 / expected as f64).min(1.0))
    }

    /// RTT in ms.
    pub fn rtt_ms(&self) -> Option<f64> {
        self.rtt_us.map(|us| us as f64 / 1000.0)
    }
}

/// What one side's report shows on `/api/calls` and in the call log (rounded for people).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct ReportedQuality {
    /// Fraction lost of the latest report block (the interval since the receiver's previous
    /// report), 0..=1, 4 decimals.
    pub loss_fraction: Option<f64>,
    /// Loss over the whole stream so far (cumulative lost / expected), 0..=1, 4 decimals.
    pub stream_loss: Option<f64>,
    /// Cumulative packets lost of the latest block.
    pub cumulative_lost: Option<i64>,
    /// Interarrival jitter of the latest block, ms, 2 decimals.
    pub jitter_ms: Option<f64>,
    /// Round-trip time edge → that side → edge, ms, 2 decimals.
    pub rtt_ms: Option<f64>,
}

impl From<ReportSnapshot> for ReportedQuality {
    fn from(s: ReportSnapshot) -> Self {
        let round = |x: f64, p: f64| (x * p).round() / p;
        ReportedQuality {
            loss_fraction: s.loss_ratio().map(|x| round(x, 10_000.0)),
            stream_loss: s.stream_loss_ratio().map(|x| round(x, 10_000.0)),
            cumulative_lost: s.cumulative_lost,
            jitter_ms: s.jitter_us.map(|us| round(us as f64 / 1000.0, 100.0)),
            rtt_ms: s.rtt_ms().map(|x| round(x, 100.0)),
        }
    }
}

/// What the worker knows about the media a report's sender receives.
#[derive(Debug, Clone, Copy, Default)]
pub struct ReceivedMedia {
    /// SSRC of the RTP the edge last relayed toward the report's sender.
    pub ssrc: Option<u32>,
    /// Clock rate of its payload type, if known.
    pub clock_rate: Option<u32>,
    /// The first sequence number the edge relayed of that SSRC.
    pub base_seq: Option<u16>,
}

fn index(side: Side) -> usize {
    match side {
        Side::Phone => 0,
        Side::Pbx => 1,
    }
}

/// RTCP report state of one stream (worker-owned; see the module doc).
#[derive(Debug, Clone, Default)]
pub struct RtcpReports {
    /// SRs forwarded, by the side that sent them.
    sent: [[SrSent; SR_RING]; 2],
    next: [usize; 2],
}

impl RtcpReports {
    /// Accounts one RTCP compound `sender` sent, that the edge forwards at `now_ns` (ns since
    /// the stream's epoch). `media` describes what `sender` receives through the edge;
    /// `cells` is where `sender`'s reports are published.
    pub fn on_rtcp(
        &mut self,
        sender: Side,
        packet: &[u8],
        now_ns: u64,
        media: ReceivedMedia,
        cells: &ReportCells,
    ) {
        let own = index(sender);
        let other = 1 - own;
        let mut taken = false;
        for p in walk(packet) {
            let blocks = match p {
                Ok(Packet::SenderReport {
                    ntp_middle, blocks, ..
                }) => {
                    if ntp_middle != 0 {
                        self.remember(own, ntp_middle, now_ns);
                    }
                    blocks
                }
                Ok(Packet::ReceiverReport { blocks, .. }) => blocks,
                Ok(Packet::Other { .. }) => continue,
                Err(_) => break,
            };
            for b in blocks {
                if let Some(rtt) = self.rtt(other, &b, now_ns) {
                    cells.rtt_us.store(rtt / 1000, Ordering::Relaxed);
                }
                let ours = media.ssrc.is_none_or(|s| s == b.ssrc);
                if ours && !taken {
                    let rate = media.clock_rate.unwrap_or(FALLBACK_CLOCK_RATE);
                    // The base belongs to the SSRC the edge relays, not to a first block
                    // taken while it relayed none.
                    let base = media.ssrc.and(media.base_seq);
                    cells.store_block(&b, rate, base);
                    taken = true;
                }
            }
        }
    }

    fn remember(&mut self, side: usize, lsr: u32, at_ns: u64) {
        let (Some(ring), Some(next)) = (self.sent.get_mut(side), self.next.get_mut(side)) else {
            return;
        };
        if let Some(slot) = ring.get_mut(*next % SR_RING) {
            *slot = SrSent { lsr, at_ns };
        }
        *next = (*next + 1) % SR_RING;
    }

    /// RTT in ns from a block echoing an SR that `sr_side` sent, if it matches one.
    fn rtt(&self, sr_side: usize, b: &ReportBlock, now_ns: u64) -> Option<u64> {
        if b.lsr == 0 {
            return None;
        }
        let ring = self.sent.get(sr_side)?;
        // The latest SR with that value (values repeat only after 18 h of NTP time).
        let sent = ring
            .iter()
            .filter(|s| s.lsr == b.lsr)
            .max_by_key(|s| s.at_ns)?;
        let elapsed = now_ns.checked_sub(sent.at_ns)?;
        // DLSR is in 1/65536 s.
        let dlsr_ns = u64::from(b.dlsr) * 1_000_000_000 / 65_536;
        elapsed.checked_sub(dlsr_ns)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::rtcp::tests::report;
    use proptest::prelude::*;

    const MS: u64 = 1_000_000;

    fn block(ssrc: u32, fraction: u8, lost: i32, jitter: u32, lsr: u32, dlsr: u32) -> ReportBlock {
        ReportBlock {
            ssrc,
            fraction_lost: fraction,
            cumulative_lost: lost,
            extended_highest_seq: 1000,
            jitter,
            lsr,
            dlsr,
        }
    }

    /// NTP (msw, lsw) whose middle 32 bits are `mid`.
    fn ntp(mid: u32) -> (u32, u32) {
        (mid >> 16, mid << 16)
    }

    #[test]
    fn loss_jitter_and_rtt_of_each_leg() {
        let mut r = RtcpReports::default();
        let (phone, pbx) = (ReportCells::default(), ReportCells::default());
        let to_phone = ReceivedMedia {
            ssrc: Some(0x2222),
            clock_rate: Some(8000),
            base_seq: None,
        };
        let to_pbx = ReceivedMedia {
            ssrc: Some(0x1111),
            clock_rate: None,
            base_seq: None,
        };
        // The PBX's SR at t = 1000 ms is forwarded to the phone.
        r.on_rtcp(
            Side::Pbx,
            &report(0x2222, Some(ntp(0xAAAA_0001)), &[]),
            1000 * MS,
            to_pbx,
            &pbx,
        );
        assert_eq!(pbx.snapshot(), None, "an SR without blocks reports nothing");
        // The phone's RR at 1130 ms echoes it after holding it 100 ms (6553.6 units): the
        // phone leg's RTT is 30 ms. It also reports 10 % loss, 80 units (10 ms) jitter.
        let rr = report(
            0x1111,
            None,
            &[block(0x2222, 26, 20, 80, 0xAAAA_0001, 6554)],
        );
        r.on_rtcp(Side::Phone, &rr, 1130 * MS, to_phone, &phone);
        let s = phone.snapshot().unwrap();
        assert_eq!(s.fraction_lost, Some(26));
        assert_eq!(s.cumulative_lost, Some(20));
        assert_eq!(s.jitter_us, Some(10_000));
        let rtt = s.rtt_us.unwrap();
        assert!((29_990..=30_000).contains(&rtt), "{rtt}");
        // The phone's SR at 2000 ms, echoed by the PBX 5 ms later with DLSR 1 ms: 4 ms.
        r.on_rtcp(
            Side::Phone,
            &report(0x1111, Some(ntp(0xBBBB_0002)), &[]),
            2000 * MS,
            to_phone,
            &phone,
        );
        let rr = report(0x2222, None, &[block(0x1111, 0, 0, 16, 0xBBBB_0002, 66)]);
        r.on_rtcp(Side::Pbx, &rr, 2005 * MS, to_pbx, &pbx);
        let s = pbx.snapshot().unwrap();
        assert!((3_990..=4_000).contains(&s.rtt_us.unwrap()), "{s:?}");
        assert_eq!(
            s.jitter_us,
            Some(2_000),
            "fallback 8000 Hz: 16 units = 2 ms"
        );
        // The phone leg is unchanged.
        assert_eq!(phone.snapshot().unwrap().rtt_us, Some(rtt));
    }

    #[test]
    fn whole_stream_loss_counts_from_the_first_sequence_number_relayed() {
        let mut r = RtcpReports::default();
        let cells = ReportCells::default();
        let media = |base| ReceivedMedia {
            ssrc: Some(0x2222),
            clock_rate: Some(8000),
            base_seq: base,
        };
        let mut rr = |lost: i32, highest: u32, base: Option<u16>| {
            let mut b = block(0x2222, 13, lost, 0, 0, 0);
            b.extended_highest_seq = highest;
            r.on_rtcp(
                Side::Phone,
                &report(0x1111, None, &[b]),
                0,
                media(base),
                &cells,
            );
            cells.snapshot().unwrap()
        };
        // Seq 901..=1000 relayed, 5 lost: 5 %, whatever the last interval's fraction says.
        let s = rr(5, 1000, Some(901));
        assert_eq!(s.expected, Some(100));
        assert_eq!(s.stream_loss_ratio(), Some(0.05));
        assert_eq!(s.loss_ratio(), Some(13.0 / 256.0));
        // Across a wrap: base 65_000, highest 1 cycle + 100 = 65_636 → 637 expected.
        let s = rr(0, 65_636, Some(65_000));
        assert_eq!((s.expected, s.stream_loss_ratio()), (Some(637), Some(0.0)));
        // Duplicates make cumulative lost negative: no loss, not a negative ratio.
        assert_eq!(rr(-3, 1000, Some(901)).stream_loss_ratio(), Some(0.0));
        // A receiver claiming more lost than expected is capped at the whole stream.
        assert_eq!(rr(500, 1000, Some(901)).stream_loss_ratio(), Some(1.0));
        // A highest below the first relayed number, or no RTP relayed: unknown, not a guess.
        for s in [rr(5, 800, Some(901)), rr(5, 1000, None)] {
            assert_eq!((s.expected, s.stream_loss_ratio()), (None, None), "{s:?}");
            assert_eq!(s.cumulative_lost, Some(5));
        }
    }

    #[test]
    fn a_phone_cannot_move_the_pbx_legs_rtt_or_claim_a_negative_one() {
        let mut r = RtcpReports::default();
        let (phone, pbx) = (ReportCells::default(), ReportCells::default());
        let m = ReceivedMedia::default();
        // The phone's own SR, then its RR echoing its own SR's value: no PBX SR has it.
        r.on_rtcp(
            Side::Phone,
            &report(1, Some(ntp(0x0101_0101)), &[]),
            0,
            m,
            &phone,
        );
        r.on_rtcp(
            Side::Phone,
            &report(1, None, &[block(2, 0, 0, 0, 0x0101_0101, 0)]),
            50 * MS,
            m,
            &phone,
        );
        assert_eq!(phone.snapshot().unwrap().rtt_us, None);
        assert_eq!(pbx.snapshot(), None);
        // A PBX SR echoed with a DLSR longer than the time elapsed: ignored.
        r.on_rtcp(
            Side::Pbx,
            &report(2, Some(ntp(0x0202_0202)), &[]),
            100 * MS,
            m,
            &pbx,
        );
        r.on_rtcp(
            Side::Phone,
            &report(1, None, &[block(2, 0, 0, 0, 0x0202_0202, 65_536)]),
            200 * MS,
            m,
            &phone,
        );
        assert_eq!(phone.snapshot().unwrap().rtt_us, None);
    }

    #[test]
    fn only_the_block_about_the_relayed_source_is_taken() {
        let mut r = RtcpReports::default();
        let cells = ReportCells::default();
        let m = ReceivedMedia {
            ssrc: Some(7),
            clock_rate: Some(8000),
            base_seq: None,
        };
        let rr = report(
            1,
            None,
            &[block(99, 200, 5, 0, 0, 0), block(7, 13, 1, 0, 0, 0)],
        );
        r.on_rtcp(Side::Phone, &rr, 0, m, &cells);
        assert_eq!(cells.snapshot().unwrap().fraction_lost, Some(13));
        let other = report(1, None, &[block(99, 200, 5, 0, 0, 0)]);
        r.on_rtcp(Side::Phone, &other, 0, m, &cells);
        assert_eq!(
            cells.snapshot().unwrap().reports,
            1,
            "a block about another source"
        );
    }

    #[test]
    fn the_ring_keeps_the_last_srs_only() {
        let mut r = RtcpReports::default();
        let cells = ReportCells::default();
        let m = ReceivedMedia::default();
        for i in 1..=(SR_RING as u32 + 1) {
            r.on_rtcp(
                Side::Pbx,
                &report(2, Some(ntp(i)), &[]),
                u64::from(i) * MS,
                m,
                &cells,
            );
        }
        // SR 1 was overwritten; SR 2 is still there.
        r.on_rtcp(
            Side::Phone,
            &report(1, None, &[block(2, 0, 0, 0, 1, 0)]),
            100 * MS,
            m,
            &cells,
        );
        assert_eq!(cells.snapshot().unwrap().rtt_us, None);
        r.on_rtcp(
            Side::Phone,
            &report(1, None, &[block(2, 0, 0, 0, 2, 0)]),
            100 * MS,
            m,
            &cells,
        );
        assert_eq!(cells.snapshot().unwrap().rtt_us, Some(98_000));
    }

    proptest! {
        #[test]
        fn arbitrary_compounds_never_panic(packets in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..120), 0..20)) {
            let mut r = RtcpReports::default();
            let cells = [ReportCells::default(), ReportCells::default()];
            for (i, p) in packets.iter().enumerate() {
                let side = if i % 2 == 0 { Side::Phone } else { Side::Pbx };
                r.on_rtcp(side, p, i as u64 * MS, ReceivedMedia::default(), &cells[i % 2]);
            }
            for c in &cells {
                if let Some(s) = c.snapshot() {
                    prop_assert!(s.rtt_us.is_none_or(|us| us <= packets.len() as u64 * 1000));
                }
            }
        }
    }
}
