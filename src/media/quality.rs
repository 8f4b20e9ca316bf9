//! Per-stream receive quality from the relay's own view (PURE core + lock-free publication),
//! for phones that send no RTCP: loss from RTP sequence numbers and interarrival jitter.
//!
//! - [`ReceiveTracker`] is owned by the relay worker, one per stream and direction, and fed
//!   every authenticated RTP packet (after SRTP unprotect on the phone side, before protect on
//!   the PBX side). It allocates nothing and takes no lock; after each packet it stores its
//!   running totals into a [`QualityCells`] (three relaxed atomic stores).
//! - [`QualityCells::snapshot`] reads them from any thread; [`QualitySnapshot`] turns them into
//!   a loss ratio, jitter in ms and an estimated MOS ([`super::mos`]).
//!
//! Sequence accounting follows RFC 3550 Appendix A.1 (extended highest sequence number,
//! `MAX_DROPOUT` / `MAX_MISORDER`, resynchronisation after two sequential packets past a large
//! jump) and A.3 (expected = extended max − base + 1, lost = expected − received, clamped at
//! 0 because duplicates can make it negative). Jitter is RFC 3550 §6.4.1 / A.8: the running
//! mean of |D(i−1, i)| with gain 1/16, in timestamp units, converted to time with the payload
//! type's clock rate. Only the static payload types whose RTP clock is 8000 Hz (RFC 3551 §6:
//! 0 PCMU, 8 PCMA, 9 G722 — whose RTP clock is 8000 although it samples at 16 kHz —, 18 G729)
//! are converted; for any other payload type jitter is not computed (reported as unknown).
//!
//! A new SSRC (the PBX re-originates media after a transfer, a phone restarts its stream)
//! folds the old source's expected/received into prior totals and starts over, so a sender
//! change is not counted as a huge gap.
//!
//! Arrival times are read by the worker per packet (`Instant::now`, a vDSO call); with
//! `media.coalesce` on, packets queued during a coalescing sleep are stamped when read, so the
//! jitter figure includes up to that much of the relay's own added delay variation.

use std::sync::atomic::{AtomicU64, Ordering};

use super::types::ClockRates;

/// RFC 3550 A.1: a forward jump below this is taken as loss, not as a restart.
const MAX_DROPOUT: u16 = 3000;
/// RFC 3550 A.1: a backward step below this is a late (reordered or duplicated) packet.
const MAX_MISORDER: u16 = 100;
/// RFC 3550 A.1 `RTP_SEQ_MOD`.
const SEQ_MOD: u64 = 1 << 16;
/// `QualityCells::jitter_us` value while jitter is unknown.
const JITTER_UNKNOWN: u64 = u64::MAX;

/// Running values published by a [`ReceiveTracker`]; written by the owning worker only.
#[derive(Debug)]
pub struct QualityCells {
    expected: AtomicU64,
    received: AtomicU64,
    jitter_us: AtomicU64,
}

impl QualityCells {
    /// Reads the cells (see the relay's batched pass: cache warming).
    #[inline]
    pub(crate) fn warm(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }
}

impl Default for QualityCells {
    fn default() -> Self {
        QualityCells {
            expected: AtomicU64::new(0),
            received: AtomicU64::new(0),
            jitter_us: AtomicU64::new(JITTER_UNKNOWN),
        }
    }
}

impl QualityCells {
    /// Reads the published values (each atomically; the three together are close enough for
    /// a display or a histogram).
    pub fn snapshot(&self) -> QualitySnapshot {
        let jitter = self.jitter_us.load(Ordering::Relaxed);
        QualitySnapshot {
            expected: self.expected.load(Ordering::Relaxed),
            received: self.received.load(Ordering::Relaxed),
            jitter_us: (jitter != JITTER_UNKNOWN).then_some(jitter),
        }
    }
}

/// One direction's quality so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QualitySnapshot {
    /// RTP packets expected from the sequence numbers (RFC 3550 A.3), over every SSRC seen.
    pub expected: u64,
    /// RTP packets received and accepted (authenticated, from the latched source).
    pub received: u64,
    /// Interarrival jitter in µs, `None` when unknown (no two packets yet, or a payload type
    /// whose clock rate the relay does not know).
    pub jitter_us: Option<u64>,
}

impl QualitySnapshot {
    /// Whether any RTP was seen in this direction.
    pub fn has_data(&self) -> bool {
        self.expected > 0
    }

    /// Packets lost (expected − received, never negative).
    pub fn lost(&self) -> u64 {
        self.expected.saturating_sub(self.received)
    }

    /// Lost / expected in 0..=1 (0 when nothing was expected).
    pub fn loss_ratio(&self) -> f64 {
        if self.expected == 0 {
            0.0
        } else {
            self.lost() as f64 / self.expected as f64
        }
    }

    /// Jitter in ms, if known.
    pub fn jitter_ms(&self) -> Option<f64> {
        self.jitter_us.map(|us| us as f64 / 1000.0)
    }

    /// Estimated MOS ([`super::mos::estimate`]) from loss and jitter (jitter 0 when unknown),
    /// `None` when no RTP was seen.
    pub fn mos(&self) -> Option<f64> {
        self.mos_with_delay(None)
    }

    /// [`Self::mos`] with a one-way delay estimate (from RTCP round-trip times,
    /// [`super::StreamCounters::one_way_delay_ms`]; 0 when `None`).
    pub fn mos_with_delay(&self, one_way_delay_ms: Option<f64>) -> Option<f64> {
        self.has_data().then(|| {
            super::mos::estimate(super::mos::Impairments {
                loss_ratio: self.loss_ratio(),
                jitter_ms: self.jitter_ms().unwrap_or(0.0),
                one_way_delay_ms: one_way_delay_ms.unwrap_or(0.0),
            })
        })
    }
}

/// One direction's quality as shown on `/api/calls` and in the call log (rounded for people).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct QualityReport {
    /// RTP packets received and accepted.
    pub packets: u64,
    /// RTP packets expected from the sequence numbers.
    pub expected: u64,
    /// expected − received (never negative).
    pub lost: u64,
    /// Loss in percent, 2 decimals.
    pub loss_percent: f64,
    /// Interarrival jitter in ms, 2 decimals; `null` when unknown.
    pub jitter_ms: Option<f64>,
    /// Estimated MOS, 2 decimals; `null` when no RTP was seen. Includes the one-way delay
    /// estimated from the RTCP round-trip times when known.
    pub mos: Option<f64>,
    /// What the receiving endpoint reported in RTCP about this direction, with the RTT of the
    /// leg to it ([`super::report`]); `null` when it sent no report.
    pub reported: Option<super::report::ReportedQuality>,
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

impl QualityReport {
    /// The relay's view `s`, the receiver's RTCP report `reported`, and the one-way delay
    /// estimate the MOS uses.
    pub fn new(
        s: QualitySnapshot,
        reported: Option<super::report::ReportSnapshot>,
        one_way_delay_ms: Option<f64>,
    ) -> Self {
        QualityReport {
            packets: s.received,
            expected: s.expected,
            lost: s.lost(),
            loss_percent: round2(s.loss_ratio() * 100.0),
            jitter_ms: s.jitter_ms().map(round2),
            mos: s.mos_with_delay(one_way_delay_ms).map(round2),
            reported: reported.map(Into::into),
        }
    }
}

impl From<QualitySnapshot> for QualityReport {
    fn from(s: QualitySnapshot) -> Self {
        QualityReport::new(s, None, None)
    }
}

/// RFC 3550 A.1/A.8 receive state for one direction of one stream (worker-owned).
#[derive(Debug, Clone, Default)]
pub struct ReceiveTracker {
    /// A source is being tracked (first packet seen).
    active: bool,
    ssrc: u32,
    max_seq: u16,
    /// Shifted count of sequence-number wraps (multiples of 2^16).
    cycles: u64,
    base_seq: u16,
    /// RFC 3550 A.1 `bad_seq`: the sequence number that would confirm a restart.
    bad_seq: Option<u16>,
    received: u64,
    /// Totals of earlier SSRCs.
    prior_expected: u64,
    prior_received: u64,
    payload_type: u8,
    /// Clock rate of `payload_type` (from the sender's SDP, or a static type's), once known.
    rate: Option<u32>,
    /// Previous relative transit time (timestamp units), once known.
    transit: Option<u32>,
    /// Jitter × 16 in timestamp units (RFC 3550 A.8's integer form).
    jitter_q4: u32,
    jitter_known: bool,
}

/// The RTP header fields the tracker reads (RFC 3550 §5.1).
#[derive(Debug, Clone, Copy)]
struct Header {
    payload_type: u8,
    seq: u16,
    timestamp: u32,
    ssrc: u32,
}

fn header(packet: &[u8]) -> Option<Header> {
    let b: &[u8; 12] = packet.get(..12)?.try_into().ok()?;
    if b[0] >> 6 != 2 {
        return None;
    }
    Some(Header {
        payload_type: b[1] & 0x7f,
        seq: u16::from_be_bytes([b[2], b[3]]),
        timestamp: u32::from_be_bytes([b[4], b[5], b[6], b[7]]),
        ssrc: u32::from_be_bytes([b[8], b[9], b[10], b[11]]),
    })
}

impl ReceiveTracker {
    /// Reads the tracker's state (see the relay's batched pass: cache warming).
    #[inline]
    pub fn warm(&self) -> u32 {
        self.ssrc ^ self.jitter_q4
    }

    /// Accounts one plain RTP packet that arrived `arrival_ns` after an arbitrary per-stream
    /// epoch, and publishes the running totals into `cells`. Non-RTP input is ignored.
    #[inline]
    pub fn on_packet(
        &mut self,
        packet: &[u8],
        arrival_ns: u64,
        rates: &ClockRates,
        cells: &QualityCells,
    ) {
        let Some(h) = header(packet) else {
            return;
        };
        if !self.active || h.ssrc != self.ssrc {
            self.restart_source(h);
        } else if !self.update_seq(h.seq) {
            // Part of a large jump not (yet) confirmed: neither counted nor timed.
            self.publish(cells);
            return;
        }
        self.jitter(h, arrival_ns, rates);
        self.publish(cells);
    }

    /// The source being tracked and its payload type's clock rate, for reading the RTCP
    /// reports its receiver sends ([`super::report`]).
    pub fn received_media(&self) -> super::report::ReceivedMedia {
        super::report::ReceivedMedia {
            ssrc: self.active.then_some(self.ssrc),
            clock_rate: if self.active { self.rate } else { None },
            base_seq: self.active.then_some(self.base_seq),
        }
    }

    /// Totals so far (what [`Self::on_packet`] publishes).
    pub fn snapshot(&self) -> QualitySnapshot {
        QualitySnapshot {
            expected: self.prior_expected + self.expected_current(),
            received: self.prior_received + self.received,
            jitter_us: self.jitter_us(),
        }
    }

    fn publish(&self, cells: &QualityCells) {
        let s = self.snapshot();
        cells.expected.store(s.expected, Ordering::Relaxed);
        cells.received.store(s.received, Ordering::Relaxed);
        cells
            .jitter_us
            .store(s.jitter_us.unwrap_or(JITTER_UNKNOWN), Ordering::Relaxed);
    }

    fn expected_current(&self) -> u64 {
        if !self.active {
            return 0;
        }
        let extended_max = self.cycles + u64::from(self.max_seq);
        (extended_max + 1).saturating_sub(u64::from(self.base_seq))
    }

    /// A new SSRC (or the first packet): fold the old source's totals, start over (A.1
    /// `init_seq`). The packet is counted.
    fn restart_source(&mut self, h: Header) {
        self.prior_expected += self.expected_current();
        self.prior_received += self.received;
        self.active = true;
        self.ssrc = h.ssrc;
        self.init_seq(h.seq);
        self.received = 1;
        self.transit = None;
    }

    fn init_seq(&mut self, seq: u16) {
        self.base_seq = seq;
        self.max_seq = seq;
        self.cycles = 0;
        self.bad_seq = None;
    }

    /// RFC 3550 A.1 `update_seq` (without probation: the source is already authenticated).
    /// Returns false when the packet is not counted (an unconfirmed large jump).
    fn update_seq(&mut self, seq: u16) -> bool {
        let udelta = seq.wrapping_sub(self.max_seq);
        if udelta < MAX_DROPOUT {
            // In order, with permissible gap.
            if seq < self.max_seq {
                self.cycles += SEQ_MOD;
            }
            self.max_seq = seq;
        } else if udelta <= u16::MAX - MAX_MISORDER {
            // The sequence number made a very large jump.
            if self.bad_seq == Some(seq) {
                // Two sequential packets: the sender restarted without changing SSRC. Fold
                // what was counted so far and resync.
                self.prior_expected += self.expected_current();
                self.prior_received += self.received;
                self.init_seq(seq);
                self.received = 0;
                self.transit = None;
            } else {
                self.bad_seq = Some(seq.wrapping_add(1));
                return false;
            }
        }
        // else: duplicate or reordered packet — counted as received (A.1).
        self.received += 1;
        true
    }

    /// RFC 3550 A.8, in timestamp units scaled by 16, for payload types of known rate.
    fn jitter(&mut self, h: Header, arrival_ns: u64, rates: &ClockRates) {
        let Some(rate) = rates.rate(h.payload_type) else {
            self.transit = None;
            return;
        };
        if h.payload_type != self.payload_type || self.rate != Some(rate) {
            // Another codec's timestamps are not comparable with the last packet's.
            self.payload_type = h.payload_type;
            self.rate = Some(rate);
            self.transit = None;
        }
        // Arrival in timestamp units; wrapping like the RTP timestamp itself.
        let arrival = (u128::from(arrival_ns) * u128::from(rate) / 1_000_000_000) as u32;
        let transit = arrival.wrapping_sub(h.timestamp);
        if let Some(previous) = self.transit {
            let d = transit.wrapping_sub(previous) as i32;
            let d = d.unsigned_abs();
            // J += (|D| - J) / 16, kept ×16: J16 += |D| - (J16 + 8) / 16.
            self.jitter_q4 = self
                .jitter_q4
                .saturating_add(d)
                .saturating_sub((self.jitter_q4 + 8) >> 4);
            self.jitter_known = true;
        }
        self.transit = Some(transit);
    }

    fn jitter_us(&self) -> Option<u64> {
        if !self.jitter_known {
            return None;
        }
        let rate = self.rate?;
        Some(u64::from(self.jitter_q4) * 1_000_000 / (16 * u64::from(rate)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// No `a=rtpmap`: only the static types' rates.
    const NONE: ClockRates = ClockRates::EMPTY;

    fn rtp(pt: u8, seq: u16, ts: u32, ssrc: u32) -> [u8; 172] {
        let mut p = [0u8; 172];
        p[0] = 0x80;
        p[1] = pt;
        p[2..4].copy_from_slice(&seq.to_be_bytes());
        p[4..8].copy_from_slice(&ts.to_be_bytes());
        p[8..12].copy_from_slice(&ssrc.to_be_bytes());
        p
    }

    /// Feeds `n` 20 ms PCMU packets from `seq0`, skipping those `skip` selects, with arrival
    /// offsets from `delay_ns`.
    fn feed(
        t: &mut ReceiveTracker,
        cells: &QualityCells,
        seq0: u16,
        n: u32,
        skip: impl Fn(u32) -> bool,
        delay_ns: impl Fn(u32) -> u64,
    ) {
        for i in 0..n {
            if skip(i) {
                continue;
            }
            let seq = seq0.wrapping_add(i as u16);
            let p = rtp(0, seq, 160 * i, 7);
            t.on_packet(&p, u64::from(i) * 20_000_000 + delay_ns(i), &NONE, cells);
        }
    }

    #[test]
    fn clean_stream_has_no_loss_and_no_jitter() {
        let (mut t, cells) = (ReceiveTracker::default(), QualityCells::default());
        feed(&mut t, &cells, 100, 500, |_| false, |_| 0);
        let s = cells.snapshot();
        assert_eq!((s.expected, s.received, s.lost()), (500, 500, 0));
        assert_eq!(s.jitter_us, Some(0));
        assert!(s.mos().unwrap() > 4.3);
    }

    #[test]
    fn every_twentieth_missing_is_five_percent_across_a_wrap() {
        let (mut t, cells) = (ReceiveTracker::default(), QualityCells::default());
        // Starts just below 65535 so the extended sequence number must wrap (A.1 cycles).
        feed(&mut t, &cells, 65_000, 2000, |i| i % 20 == 10, |_| 0);
        let s = cells.snapshot();
        assert_eq!(s.expected, 2000);
        assert_eq!(s.received, 1900);
        assert!((s.loss_ratio() - 0.05).abs() < 1e-9);
    }

    #[test]
    fn alternating_delay_gives_rfc3550_jitter() {
        let (mut t, cells) = (ReceiveTracker::default(), QualityCells::default());
        // Every other packet 10 ms late: |D| = 10 ms each time, so J converges to 10 ms.
        feed(
            &mut t,
            &cells,
            1,
            400,
            |_| false,
            |i| (i % 2) as u64 * 10_000_000,
        );
        let j = cells.snapshot().jitter_ms().unwrap();
        assert!((9.5..=10.1).contains(&j), "jitter {j} ms");
    }

    #[test]
    fn unknown_clock_rate_leaves_jitter_unknown_but_counts_loss() {
        let (mut t, cells) = (ReceiveTracker::default(), QualityCells::default());
        for i in 0..10u16 {
            if i != 5 {
                t.on_packet(
                    &rtp(96, i, u32::from(i) * 960, 1),
                    u64::from(i) * 20_000_000,
                    &NONE,
                    &cells,
                );
            }
        }
        let s = cells.snapshot();
        assert_eq!((s.expected, s.received, s.jitter_us), (10, 9, None));
    }

    #[test]
    fn a_dynamic_type_gets_its_rate_from_the_senders_rtpmap() {
        // Opus (RFC 7587: 48 kHz RTP clock) on PT 96, every other packet 10 ms late.
        let rates = ClockRates::new([(96, 48_000), (101, 8000)]);
        let (mut t, cells) = (ReceiveTracker::default(), QualityCells::default());
        for i in 0..200u32 {
            let late = if i % 2 == 1 { 10_000_000 } else { 0 };
            let p = rtp(96, i as u16, 960 * i, 1);
            t.on_packet(&p, u64::from(i) * 20_000_000 + late, &rates, &cells);
        }
        let j = cells.snapshot().jitter_ms().unwrap();
        assert!((9.5..=10.1).contains(&j), "jitter {j} ms");
        assert_eq!(t.received_media().clock_rate, Some(48_000));
        // The same stream read at the static fallback would be 6× off: the map matters.
        assert_eq!(NONE.rate(96), None);
        assert_eq!(
            (NONE.rate(0), rates.rate(9), rates.rate(97)),
            (Some(8000), Some(8000), None)
        );
    }

    #[test]
    fn new_ssrc_is_not_a_gap_and_duplicates_do_not_make_loss_negative() {
        let (mut t, cells) = (ReceiveTracker::default(), QualityCells::default());
        feed(&mut t, &cells, 10, 50, |_| false, |_| 0);
        // Another source with a far-away sequence number.
        for i in 0..50u16 {
            t.on_packet(&rtp(0, 40_000 + i, 0, 8), 0, &NONE, &cells);
        }
        // A duplicate.
        t.on_packet(&rtp(0, 40_049, 0, 8), 0, &NONE, &cells);
        let s = cells.snapshot();
        assert_eq!((s.expected, s.received, s.lost()), (100, 101, 0));
    }

    #[test]
    fn one_stray_jump_is_ignored_two_sequential_resync() {
        let (mut t, cells) = (ReceiveTracker::default(), QualityCells::default());
        feed(&mut t, &cells, 0, 10, |_| false, |_| 0);
        t.on_packet(&rtp(0, 30_000, 0, 7), 0, &NONE, &cells);
        assert_eq!(
            cells.snapshot().expected,
            10,
            "a single jump is not counted"
        );
        t.on_packet(&rtp(0, 30_001, 0, 7), 0, &NONE, &cells);
        t.on_packet(&rtp(0, 30_002, 0, 7), 0, &NONE, &cells);
        let s = cells.snapshot();
        assert_eq!((s.expected, s.received), (12, 12));
    }

    #[test]
    fn non_rtp_is_ignored() {
        let (mut t, cells) = (ReceiveTracker::default(), QualityCells::default());
        t.on_packet(&[0x80, 0, 1], 0, &NONE, &cells);
        t.on_packet(&[0u8; 20], 0, &NONE, &cells);
        assert!(!cells.snapshot().has_data());
    }

    proptest! {
        /// Whatever is dropped, expected − received equals the packets skipped in between
        /// (gaps below MAX_DROPOUT), and jitter stays unknown-or-finite without panics.
        #[test]
        fn loss_equals_skipped(start in any::<u16>(), drops in proptest::collection::vec(any::<bool>(), 2..600)) {
            let (mut t, cells) = (ReceiveTracker::default(), QualityCells::default());
            let n = drops.len() as u32;
            // The first and last packets are sent so expected spans the whole range.
            let skip = |i: u32| i != 0 && i != n - 1 && drops[i as usize];
            feed(&mut t, &cells, start, n, skip, |i| u64::from(i % 7) * 1_000_000);
            let skipped = (0..n).filter(|&i| skip(i)).count() as u64;
            let s = cells.snapshot();
            prop_assert_eq!(s.expected, u64::from(n));
            prop_assert_eq!(s.lost(), skipped);
        }

        #[test]
        fn arbitrary_bytes_never_panic(packets in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..40), 0..50)) {
            let (mut t, cells) = (ReceiveTracker::default(), QualityCells::default());
            for (i, p) in packets.iter().enumerate() {
                t.on_packet(p, i as u64 * 1_000_000, &NONE, &cells);
            }
            let s = cells.snapshot();
            prop_assert!(s.loss_ratio() <= 1.0);
        }
    }
}
