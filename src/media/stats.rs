//! Media counters: per-stream atomics written by the stream's owning worker (relaxed, no
//! locks), and a Prometheus [`Collector`] that sums live streams plus retired ones at scrape
//! time.
//!
//! Metric names (all prefixed `pbx_edge_media_`):
//! - `packets_total{direction}` / `bytes_total{direction}`: relayed packets and bytes (bytes as
//!   sent), `direction` = `phone_to_pbx` | `pbx_to_phone`.
//! - `dropped_total{reason}`: dropped packets by [`DropReason::label`].
//! - `srtp_auth_failures_total`, `srtp_replays_total`: the two SRTP drop reasons on their own.
//! - `latch_events_total`: a phone- or PBX-side peer address was (re-)learned.
//! - `timeouts_total`: media timeout events reported.
//! - `events_lost_total`: events dropped because the caller's channel was full.
//! - `worker_wakeups_total`: relay worker loop wake-ups (poll returns and coalescing sleeps);
//!   divided by `packets_total` it gives wake-ups per packet.
//! - `active_streams`, `port_pairs_in_use`, `port_pairs_free` (gauges).
//! - `io_batched` (gauge): 1 while every relay worker uses batched I/O (io_uring), 0 when
//!   they use one `recvfrom`/`sendto` per packet (`media.io`, or io_uring unavailable, or a
//!   worker fell back after a ring error).
//! - `stream_loss_ratio{side}`, `stream_jitter_seconds{side}`, `stream_mos{side}`:
//!   histograms observed once per stream and sending side (`phone` | `pbx`) when the stream
//!   ends, from the relay's own view ([`super::quality`]); a side that sent no RTP is not
//!   observed, and jitter only when known. The MOS includes the one-way delay estimated from
//!   the RTCP round-trip times when any is known.
//! - `stream_reported_loss_ratio{side}`, `stream_reported_jitter_seconds{side}`: the same at
//!   stream end from the last RTCP report block the *receiving* endpoint sent about what
//!   `side` sends ([`super::report`]): the whole stream's loss (cumulative lost / expected;
//!   not observed when the edge relayed none of the reported SSRC), its jitter; a stream
//!   whose receiver sent no report is not observed.
//! - `stream_rtt_seconds{side}`: at stream end, the last round-trip time measured on the leg
//!   edge → `side` → edge (`phone` | `pbx`) from RTCP SR/LSR/DLSR; not observed when unknown.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{
    HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
};

use super::ports::PortPool;
use super::quality::{QualityCells, QualitySnapshot};
use super::report::{ReportCells, ReportSnapshot};
use super::types::{Side, StreamId};

fn side_index(side: Side) -> usize {
    match side {
        Side::Phone => 0,
        Side::Pbx => 1,
    }
}

/// Why the relay dropped a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// SRTP/SRTCP authentication tag did not verify (forged or corrupted packet, wrong key).
    AuthFailed,
    /// SRTP/SRTCP index already seen or too old for the replay window (RFC 3711 §3.3.2).
    Replayed,
    /// Source address refused by the latch (not the PBX, not the learned plain-RTP peer).
    SpoofedSource,
    /// Master-key lifetime reached (RFC 3711 §9.2); signalling must re-key.
    KeyExpired,
    /// SRTCP with the E flag clear although unencrypted SRTCP was not negotiated.
    UnencryptedSrtcp,
    /// Too short or not RTP/RTCP-shaped, or otherwise refused by the SRTP engine.
    Malformed,
    /// No key for this direction yet (phone's answer not seen) — signalling not complete.
    NotKeyed,
    /// No destination known yet for the other side.
    NoDestination,
    /// The outgoing socket refused the packet (buffer full or ICMP error).
    SendFailed,
    /// A new SSRC beyond the SRTP context's SSRC cap (`ContextOptions::max_streams`): SRTP
    /// state is never evicted, since a forgotten sender would reuse keystream.
    TooManySsrcs,
}

impl DropReason {
    /// Every reason, in counter-array order.
    pub const ALL: [DropReason; 10] = [
        DropReason::AuthFailed,
        DropReason::Replayed,
        DropReason::SpoofedSource,
        DropReason::KeyExpired,
        DropReason::UnencryptedSrtcp,
        DropReason::Malformed,
        DropReason::NotKeyed,
        DropReason::NoDestination,
        DropReason::SendFailed,
        DropReason::TooManySsrcs,
    ];

    /// Stable label for metrics.
    pub fn label(self) -> &'static str {
        match self {
            DropReason::AuthFailed => "auth_failed",
            DropReason::Replayed => "replayed",
            DropReason::KeyExpired => "key_expired",
            DropReason::UnencryptedSrtcp => "unencrypted_srtcp",
            DropReason::SpoofedSource => "spoofed_source",
            DropReason::Malformed => "malformed",
            DropReason::NotKeyed => "not_keyed",
            DropReason::NoDestination => "no_destination",
            DropReason::SendFailed => "send_failed",
            DropReason::TooManySsrcs => "too_many_ssrcs",
        }
    }

    /// Position in [`DropReason::ALL`] (= declaration order, checked by a test).
    fn index(self) -> usize {
        self as usize
    }
}

/// Per-stream counters. Written only by the worker that owns the stream; read by anyone.
#[derive(Debug, Default)]
pub struct StreamCounters {
    phone_to_pbx_packets: AtomicU64,
    phone_to_pbx_bytes: AtomicU64,
    pbx_to_phone_packets: AtomicU64,
    pbx_to_phone_bytes: AtomicU64,
    latch_events: AtomicU64,
    timeouts: AtomicU64,
    unannounced_unencrypted_srtcp: AtomicU64,
    dropped: [AtomicU64; DropReason::ALL.len()],
    /// Receive quality of the RTP the phone sent (index 0) and the PBX sent (index 1),
    /// published by the worker's [`ReceiveTracker`](super::quality::ReceiveTracker)s.
    quality: [QualityCells; 2],
    /// What the receiver of the RTP the phone sends (index 0: the PBX) and of the RTP the PBX
    /// sends (index 1: the phone) reported in RTCP, with the RTT of the leg to that receiver.
    reported: [ReportCells; 2],
}

/// A plain copy of a [`StreamCounters`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CounterSnapshot {
    /// Packets relayed phone → PBX (RTP and RTCP).
    pub phone_to_pbx_packets: u64,
    /// Bytes sent toward the PBX.
    pub phone_to_pbx_bytes: u64,
    /// Packets relayed PBX → phone (RTP and RTCP).
    pub pbx_to_phone_packets: u64,
    /// Bytes sent toward the phone.
    pub pbx_to_phone_bytes: u64,
    /// Peer addresses (re-)learned.
    pub latch_events: u64,
    /// Media timeouts reported.
    pub timeouts: u64,
    /// SRTCP packets accepted with E=0 although UNENCRYPTED_SRTCP was not negotiated (the
    /// Cisco SPA quirk, only when the stream's options allow it).
    pub unannounced_unencrypted_srtcp: u64,
    /// Dropped packets, indexed like [`DropReason::ALL`].
    pub dropped: [u64; DropReason::ALL.len()],
}

impl CounterSnapshot {
    /// Dropped packets for one reason.
    pub fn dropped(&self, reason: DropReason) -> u64 {
        self.dropped[reason.index()]
    }

    fn add(&mut self, other: &CounterSnapshot) {
        self.phone_to_pbx_packets += other.phone_to_pbx_packets;
        self.phone_to_pbx_bytes += other.phone_to_pbx_bytes;
        self.pbx_to_phone_packets += other.pbx_to_phone_packets;
        self.pbx_to_phone_bytes += other.pbx_to_phone_bytes;
        self.latch_events += other.latch_events;
        self.timeouts += other.timeouts;
        self.unannounced_unencrypted_srtcp += other.unannounced_unencrypted_srtcp;
        for (sum, v) in self.dropped.iter_mut().zip(other.dropped.iter()) {
            *sum += v;
        }
    }
}

impl StreamCounters {
    /// Reads the counters a relayed packet updates (see the relay's batched pass: cache
    /// warming).
    #[inline]
    pub(crate) fn warm(&self) -> u64 {
        let quality = self.quality.iter().map(|q| q.warm()).fold(0, |a, b| a ^ b);
        self.phone_to_pbx_packets.load(Ordering::Relaxed)
            ^ self.pbx_to_phone_packets.load(Ordering::Relaxed)
            ^ quality
    }

    /// A packet of `bytes` was sent toward the PBX.
    #[inline]
    pub(crate) fn relayed_to_pbx(&self, bytes: usize) {
        self.phone_to_pbx_packets.fetch_add(1, Ordering::Relaxed);
        self.phone_to_pbx_bytes
            .fetch_add(bytes as u64, Ordering::Relaxed);
    }

    /// A packet of `bytes` was sent toward the phone.
    #[inline]
    pub(crate) fn relayed_to_phone(&self, bytes: usize) {
        self.pbx_to_phone_packets.fetch_add(1, Ordering::Relaxed);
        self.pbx_to_phone_bytes
            .fetch_add(bytes as u64, Ordering::Relaxed);
    }

    /// A packet was dropped.
    #[inline]
    pub(crate) fn dropped(&self, reason: DropReason) {
        self.dropped[reason.index()].fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn latched(&self) {
        self.latch_events.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn unannounced_unencrypted_srtcp(&self) {
        self.unannounced_unencrypted_srtcp
            .fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn timed_out(&self) {
        self.timeouts.fetch_add(1, Ordering::Relaxed);
    }

    /// Where the worker publishes the receive quality of what `sender` sends.
    pub(crate) fn quality_cells(&self, sender: Side) -> &QualityCells {
        &self.quality[side_index(sender)]
    }

    /// Where the worker publishes the RTCP reports about the RTP `sender` sends.
    pub(crate) fn report_cells(&self, sender: Side) -> &ReportCells {
        &self.reported[side_index(sender)]
    }

    /// The latest RTCP report about the RTP `sender` sends (from its receiver), with the RTT
    /// of the leg to that receiver; `None` when none arrived.
    pub fn reported(&self, sender: Side) -> Option<ReportSnapshot> {
        self.reported[side_index(sender)].snapshot()
    }

    /// One-way delay estimate for the E-model: half the sum of the known legs' RTTs (the
    /// edge sees each leg's round trip; a leg without RTCP counts as 0), `None` when neither
    /// leg's is known.
    pub fn one_way_delay_ms(&self) -> Option<f64> {
        let legs = [Side::Pbx, Side::Phone].map(|s| self.reported(s).and_then(|r| r.rtt_ms()));
        if legs.iter().all(Option::is_none) {
            return None;
        }
        Some(legs.iter().flatten().sum::<f64>() / 2.0)
    }

    /// Receive quality so far of the RTP `sender` sends (relay's own view).
    pub fn quality(&self, sender: Side) -> QualitySnapshot {
        self.quality[side_index(sender)].snapshot()
    }

    /// Dropped packets for one reason so far.
    pub fn dropped_count(&self, reason: DropReason) -> u64 {
        self.dropped[reason.index()].load(Ordering::Relaxed)
    }

    /// Reads every counter (each one atomically; the set is not a single snapshot).
    pub fn snapshot(&self) -> CounterSnapshot {
        let mut dropped = [0u64; DropReason::ALL.len()];
        for (d, a) in dropped.iter_mut().zip(self.dropped.iter()) {
            *d = a.load(Ordering::Relaxed);
        }
        CounterSnapshot {
            phone_to_pbx_packets: self.phone_to_pbx_packets.load(Ordering::Relaxed),
            phone_to_pbx_bytes: self.phone_to_pbx_bytes.load(Ordering::Relaxed),
            pbx_to_phone_packets: self.pbx_to_phone_packets.load(Ordering::Relaxed),
            pbx_to_phone_bytes: self.pbx_to_phone_bytes.load(Ordering::Relaxed),
            latch_events: self.latch_events.load(Ordering::Relaxed),
            timeouts: self.timeouts.load(Ordering::Relaxed),
            unannounced_unencrypted_srtcp: self
                .unannounced_unencrypted_srtcp
                .load(Ordering::Relaxed),
            dropped,
        }
    }
}

/// Everything the collector sums: live streams' counters, the totals of ended streams,
/// worker wake-ups and the port pool. Shared by the control handle and the workers.
#[derive(Debug)]
pub struct MediaStats {
    /// Counters of live streams; touched at stream start/stop and at scrape time only.
    live: Mutex<HashMap<StreamId, Arc<StreamCounters>>>,
    /// Sum of the counters of streams that ended (so totals never go backwards).
    retired: Mutex<CounterSnapshot>,
    /// One wake-up counter per worker (written by that worker only).
    wakeups: Vec<Arc<AtomicU64>>,
    /// Events dropped because the caller's event channel was full.
    events_lost: AtomicU64,
    /// Workers currently using batched I/O.
    batched_workers: AtomicUsize,
    ports: PortPool,
    /// Quality histograms, observed when a stream ends; set once the collector is registered.
    quality: OnceLock<QualityHistograms>,
}

/// The per-stream quality histograms (label `side` only: bounded).
#[derive(Debug, Clone)]
struct QualityHistograms {
    loss: HistogramVec,
    jitter: HistogramVec,
    mos: HistogramVec,
    reported_loss: HistogramVec,
    reported_jitter: HistogramVec,
    rtt: HistogramVec,
}

/// Sending sides, as the `side` label.
const SIDES: [(Side, &str); 2] = [(Side::Phone, "phone"), (Side::Pbx, "pbx")];

impl QualityHistograms {
    fn new() -> prometheus::Result<Self> {
        let h = |name: &str, help: &str, buckets: &[f64]| {
            HistogramVec::new(
                HistogramOpts::new(format!("{PREFIX}{name}"), help).buckets(buckets.to_vec()),
                &["side"],
            )
        };
        let this = QualityHistograms {
            loss: h(
                "stream_loss_ratio",
                "Per-stream RTP loss ratio (lost/expected from sequence numbers) at stream end, by sending side.",
                &[0.001, 0.005, 0.01, 0.02, 0.03, 0.05, 0.1, 0.2, 0.5],
            )?,
            jitter: h(
                "stream_jitter_seconds",
                "Per-stream RTP interarrival jitter (RFC 3550 A.8) at stream end, by sending side.",
                &[0.001, 0.002, 0.005, 0.01, 0.02, 0.03, 0.05, 0.1, 0.2],
            )?,
            mos: h(
                "stream_mos",
                "Per-stream estimated MOS (simplified G.107 E-model) at stream end, by sending side.",
                &[1.5, 2.0, 2.5, 3.0, 3.5, 3.8, 4.0, 4.2, 4.4],
            )?,
            reported_loss: h(
                "stream_reported_loss_ratio",
                "Per-stream loss over the whole stream as the receiver reported it in RTCP (cumulative lost / expected of its last report block), at stream end, by sending side.",
                &[0.001, 0.005, 0.01, 0.02, 0.03, 0.05, 0.1, 0.2, 0.5],
            )?,
            reported_jitter: h(
                "stream_reported_jitter_seconds",
                "Per-stream interarrival jitter of the last RTCP report block the receiver sent, at stream end, by sending side.",
                &[0.001, 0.002, 0.005, 0.01, 0.02, 0.03, 0.05, 0.1, 0.2],
            )?,
            rtt: h(
                "stream_rtt_seconds",
                "Per-stream round-trip time of the leg edge-side-edge from RTCP (SR, LSR, DLSR), at stream end, by side.",
                &[0.005, 0.01, 0.02, 0.05, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0],
            )?,
        };
        // Both series exist from the start (a dashboard shows 0, not "no data").
        for (_, label) in SIDES {
            for vec in [
                &this.loss,
                &this.jitter,
                &this.mos,
                &this.reported_loss,
                &this.reported_jitter,
                &this.rtt,
            ] {
                vec.with_label_values(&[label]);
            }
        }
        Ok(this)
    }

    fn observe(&self, counters: &StreamCounters) {
        let delay = counters.one_way_delay_ms();
        for (side, label) in SIDES {
            if let Some(r) = counters.reported(side) {
                // The whole stream's loss only: one meaning per histogram (a report about an
                // SSRC the edge relayed none of has no whole-stream figure and is not observed).
                if let Some(loss) = r.stream_loss_ratio() {
                    self.reported_loss.with_label_values(&[label]).observe(loss);
                }
                if let Some(us) = r.jitter_us {
                    self.reported_jitter
                        .with_label_values(&[label])
                        .observe(us as f64 / 1e6);
                }
            }
            // The leg to `side` is measured from the reports `side` sends, which are about
            // the RTP the other side sends.
            let other = match side {
                Side::Phone => Side::Pbx,
                Side::Pbx => Side::Phone,
            };
            if let Some(ms) = counters.reported(other).and_then(|r| r.rtt_ms()) {
                self.rtt.with_label_values(&[label]).observe(ms / 1000.0);
            }
            let q = counters.quality(side);
            if !q.has_data() {
                continue;
            }
            self.loss
                .with_label_values(&[label])
                .observe(q.loss_ratio());
            if let Some(ms) = q.jitter_ms() {
                self.jitter.with_label_values(&[label]).observe(ms / 1000.0);
            }
            if let Some(mos) = q.mos_with_delay(delay) {
                self.mos.with_label_values(&[label]).observe(mos);
            }
        }
    }
}

impl MediaStats {
    pub(crate) fn new(ports: PortPool, workers: usize) -> Self {
        MediaStats {
            live: Mutex::new(HashMap::new()),
            retired: Mutex::new(CounterSnapshot::default()),
            wakeups: (0..workers).map(|_| Arc::new(AtomicU64::new(0))).collect(),
            events_lost: AtomicU64::new(0),
            batched_workers: AtomicUsize::new(0),
            ports,
            quality: OnceLock::new(),
        }
    }

    pub(crate) fn worker_wakeups(&self, worker: usize) -> Option<Arc<AtomicU64>> {
        self.wakeups.get(worker).cloned()
    }

    /// A worker starts (`true`) or stops (`false`) using batched I/O.
    pub(crate) fn worker_batched(&self, batched: bool) {
        if batched {
            self.batched_workers.fetch_add(1, Ordering::Relaxed);
        } else {
            self.batched_workers.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Whether every worker uses batched I/O.
    pub fn io_batched(&self) -> bool {
        !self.wakeups.is_empty()
            && self.batched_workers.load(Ordering::Relaxed) == self.wakeups.len()
    }

    pub(crate) fn event_lost(&self) {
        self.events_lost.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn register_stream(&self, id: StreamId, counters: Arc<StreamCounters>) {
        self.live
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id, counters);
    }

    pub(crate) fn retire_stream(&self, id: StreamId) {
        let removed = self
            .live
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&id);
        if let Some(counters) = removed {
            if let Some(histograms) = self.quality.get() {
                histograms.observe(&counters);
            }
            self.retired
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .add(&counters.snapshot());
        }
    }

    /// Streams currently running.
    pub fn active_streams(&self) -> usize {
        self.live
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// Sum over all streams, live and ended.
    pub fn totals(&self) -> CounterSnapshot {
        // Lock order: live, then retired (same as retire_stream), so a stream is never
        // counted twice or missed while it moves from one to the other.
        let live = self.live.lock().unwrap_or_else(PoisonError::into_inner);
        let mut sum = *self.retired.lock().unwrap_or_else(PoisonError::into_inner);
        for counters in live.values() {
            sum.add(&counters.snapshot());
        }
        sum
    }

    /// Total worker wake-ups so far.
    pub fn wakeups(&self) -> u64 {
        self.wakeups.iter().map(|w| w.load(Ordering::Relaxed)).sum()
    }

    /// The port pool these stats report on.
    pub fn ports(&self) -> &PortPool {
        &self.ports
    }
}

/// Prometheus collector over [`MediaStats`]; registered once by [`MediaCollector::register`].
pub struct MediaCollector {
    stats: Arc<MediaStats>,
    packets: IntCounterVec,
    bytes: IntCounterVec,
    dropped: IntCounterVec,
    auth_failures: IntCounter,
    replays: IntCounter,
    latch_events: IntCounter,
    timeouts: IntCounter,
    unannounced_unencrypted_srtcp: IntCounter,
    events_lost: IntCounter,
    wakeups: IntCounter,
    active_streams: IntGauge,
    ports_in_use: IntGauge,
    ports_free: IntGauge,
    io_batched: IntGauge,
    quality: QualityHistograms,
    /// Serialises scrapes: each one resets and refills the metric values.
    scrape: Mutex<()>,
}

const PREFIX: &str = "pbx_edge_media_";

fn counter(name: &str, help: &str) -> prometheus::Result<IntCounter> {
    IntCounter::with_opts(Opts::new(format!("{PREFIX}{name}"), help))
}

fn gauge(name: &str, help: &str) -> prometheus::Result<IntGauge> {
    IntGauge::with_opts(Opts::new(format!("{PREFIX}{name}"), help))
}

fn counter_vec(name: &str, help: &str, label: &str) -> prometheus::Result<IntCounterVec> {
    IntCounterVec::new(Opts::new(format!("{PREFIX}{name}"), help), &[label])
}

impl MediaCollector {
    /// Builds the collector and registers it into `registry`.
    pub fn register(stats: Arc<MediaStats>, registry: &Registry) -> prometheus::Result<()> {
        // The first registration's histograms are the ones streams observe into.
        let fresh = QualityHistograms::new()?;
        let quality = stats.quality.get_or_init(|| fresh).clone();
        let collector = MediaCollector {
            quality,
            stats,
            packets: counter_vec(
                "packets_total",
                "RTP and RTCP packets relayed, by direction.",
                "direction",
            )?,
            bytes: counter_vec(
                "bytes_total",
                "Bytes relayed (as sent), by direction.",
                "direction",
            )?,
            dropped: counter_vec("dropped_total", "Packets dropped, by reason.", "reason")?,
            auth_failures: counter(
                "srtp_auth_failures_total",
                "SRTP/SRTCP packets whose authentication tag did not verify.",
            )?,
            replays: counter(
                "srtp_replays_total",
                "SRTP/SRTCP packets refused by the replay window.",
            )?,
            latch_events: counter(
                "latch_events_total",
                "Peer media addresses learned or re-learned (authenticated latching).",
            )?,
            timeouts: counter("timeouts_total", "Media timeouts reported to signalling.")?,
            unannounced_unencrypted_srtcp: counter(
                "srtcp_unannounced_unencrypted_total",
                "SRTCP accepted with E=0 without UNENCRYPTED_SRTCP (Cisco SPA quirk option).",
            )?,
            events_lost: counter(
                "events_lost_total",
                "Media events dropped because the signalling channel was full.",
            )?,
            wakeups: counter(
                "worker_wakeups_total",
                "Relay worker wake-ups (poll returns and coalescing sleeps).",
            )?,
            active_streams: gauge("active_streams", "Media streams being relayed.")?,
            ports_in_use: gauge("port_pairs_in_use", "RTP/RTCP port pairs leased.")?,
            ports_free: gauge("port_pairs_free", "RTP/RTCP port pairs not leased.")?,
            io_batched: gauge(
                "io_batched",
                "1 while every relay worker uses batched I/O (io_uring), 0 for per-packet recvfrom/sendto.",
            )?,
            scrape: Mutex::new(()),
        };
        registry.register(Box::new(collector))
    }

    fn refresh(&self) {
        let t = self.stats.totals();
        let set = |c: &IntCounter, v: u64| {
            c.reset();
            c.inc_by(v);
        };
        set(
            &self.packets.with_label_values(&["phone_to_pbx"]),
            t.phone_to_pbx_packets,
        );
        set(
            &self.packets.with_label_values(&["pbx_to_phone"]),
            t.pbx_to_phone_packets,
        );
        set(
            &self.bytes.with_label_values(&["phone_to_pbx"]),
            t.phone_to_pbx_bytes,
        );
        set(
            &self.bytes.with_label_values(&["pbx_to_phone"]),
            t.pbx_to_phone_bytes,
        );
        for reason in DropReason::ALL {
            set(
                &self.dropped.with_label_values(&[reason.label()]),
                t.dropped(reason),
            );
        }
        set(&self.auth_failures, t.dropped(DropReason::AuthFailed));
        set(&self.replays, t.dropped(DropReason::Replayed));
        set(&self.latch_events, t.latch_events);
        set(&self.timeouts, t.timeouts);
        set(
            &self.unannounced_unencrypted_srtcp,
            t.unannounced_unencrypted_srtcp,
        );
        set(
            &self.events_lost,
            self.stats.events_lost.load(Ordering::Relaxed),
        );
        set(&self.wakeups, self.stats.wakeups());
        self.active_streams
            .set(i64::try_from(self.stats.active_streams()).unwrap_or(i64::MAX));
        let ports = &self.stats.ports;
        self.ports_in_use
            .set(i64::try_from(ports.pairs_in_use()).unwrap_or(i64::MAX));
        self.ports_free
            .set(i64::try_from(ports.pairs_free()).unwrap_or(i64::MAX));
        self.io_batched.set(i64::from(self.stats.io_batched()));
    }
}

impl Collector for MediaCollector {
    fn desc(&self) -> Vec<&Desc> {
        let mut descs = Vec::new();
        descs.extend(self.packets.desc());
        descs.extend(self.bytes.desc());
        descs.extend(self.dropped.desc());
        descs.extend(self.auth_failures.desc());
        descs.extend(self.replays.desc());
        descs.extend(self.latch_events.desc());
        descs.extend(self.timeouts.desc());
        descs.extend(self.unannounced_unencrypted_srtcp.desc());
        descs.extend(self.events_lost.desc());
        descs.extend(self.wakeups.desc());
        descs.extend(self.active_streams.desc());
        descs.extend(self.ports_in_use.desc());
        descs.extend(self.ports_free.desc());
        descs.extend(self.io_batched.desc());
        descs.extend(self.quality.loss.desc());
        descs.extend(self.quality.jitter.desc());
        descs.extend(self.quality.mos.desc());
        descs.extend(self.quality.reported_loss.desc());
        descs.extend(self.quality.reported_jitter.desc());
        descs.extend(self.quality.rtt.desc());
        descs
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let _serialised = self.scrape.lock().unwrap_or_else(PoisonError::into_inner);
        self.refresh();
        let mut families = Vec::new();
        families.extend(self.packets.collect());
        families.extend(self.bytes.collect());
        families.extend(self.dropped.collect());
        families.extend(self.auth_failures.collect());
        families.extend(self.replays.collect());
        families.extend(self.latch_events.collect());
        families.extend(self.timeouts.collect());
        families.extend(self.unannounced_unencrypted_srtcp.collect());
        families.extend(self.events_lost.collect());
        families.extend(self.wakeups.collect());
        families.extend(self.active_streams.collect());
        families.extend(self.ports_in_use.collect());
        families.extend(self.ports_free.collect());
        families.extend(self.io_batched.collect());
        families.extend(self.quality.loss.collect());
        families.extend(self.quality.jitter.collect());
        families.extend(self.quality.mos.collect());
        families.extend(self.quality.reported_loss.collect());
        families.extend(self.quality.reported_jitter.collect());
        families.extend(self.quality.rtt.collect());
        families
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::ports::PortRange;

    #[test]
    fn drop_reason_index_matches_all() {
        for (i, r) in DropReason::ALL.iter().enumerate() {
            assert_eq!(r.index(), i, "{}", r.label());
        }
    }

    #[test]
    fn totals_survive_stream_end_and_metrics_render() {
        let pool = PortPool::new(PortRange::new(30000, 30009).unwrap());
        let stats = Arc::new(MediaStats::new(pool, 2));
        let registry = Registry::new();
        MediaCollector::register(stats.clone(), &registry).unwrap();

        let a = Arc::new(StreamCounters::default());
        let b = Arc::new(StreamCounters::default());
        stats.register_stream(StreamId(1), a.clone());
        stats.register_stream(StreamId(2), b.clone());
        a.relayed_to_pbx(172);
        a.relayed_to_phone(182);
        b.relayed_to_pbx(100);
        b.dropped(DropReason::AuthFailed);
        b.dropped(DropReason::Replayed);
        b.latched();
        stats.retire_stream(StreamId(2));
        assert_eq!(stats.active_streams(), 1);

        let t = stats.totals();
        assert_eq!(t.phone_to_pbx_packets, 2);
        assert_eq!(t.phone_to_pbx_bytes, 272);
        assert_eq!(t.dropped(DropReason::AuthFailed), 1);

        let text = prometheus::TextEncoder::new()
            .encode_to_string(&registry.gather())
            .unwrap();
        for line in [
            "pbx_edge_media_packets_total{direction=\"phone_to_pbx\"} 2",
            "pbx_edge_media_bytes_total{direction=\"pbx_to_phone\"} 182",
            "pbx_edge_media_srtp_auth_failures_total 1",
            "pbx_edge_media_srtp_replays_total 1",
            "pbx_edge_media_dropped_total{reason=\"replayed\"} 1",
            "pbx_edge_media_latch_events_total 1",
            "pbx_edge_media_active_streams 1",
            "pbx_edge_media_port_pairs_free 5",
            "pbx_edge_media_port_pairs_in_use 0",
        ] {
            assert!(text.contains(line), "missing {line} in\n{text}");
        }
    }

    #[test]
    fn quality_histograms_observe_each_sending_side_at_stream_end() {
        use crate::media::quality::ReceiveTracker;
        let pool = PortPool::new(PortRange::new(30000, 30009).unwrap());
        let stats = Arc::new(MediaStats::new(pool, 1));
        let registry = Registry::new();
        MediaCollector::register(stats.clone(), &registry).unwrap();
        let render = || {
            prometheus::TextEncoder::new()
                .encode_to_string(&registry.gather())
                .unwrap()
        };
        // Both series exist before any stream ended.
        assert!(render().contains("pbx_edge_media_stream_mos_count{side=\"pbx\"} 0"));

        let c = Arc::new(StreamCounters::default());
        stats.register_stream(StreamId(1), c.clone());
        let mut from_phone = ReceiveTracker::default();
        let mut p = [0u8; 172];
        p[0] = 0x80;
        for i in 0..100u16 {
            if i % 20 == 10 {
                continue; // 5 % lost
            }
            p[2..4].copy_from_slice(&i.to_be_bytes());
            p[4..8].copy_from_slice(&(u32::from(i) * 160).to_be_bytes());
            from_phone.on_packet(
                &p,
                u64::from(i) * 20_000_000,
                &crate::media::ClockRates::EMPTY,
                c.quality_cells(Side::Phone),
            );
        }
        let text = render();
        assert!(
            text.contains("pbx_edge_media_stream_loss_ratio_count{side=\"phone\"} 0"),
            "observed before the stream ended:\n{text}"
        );
        stats.retire_stream(StreamId(1));
        let text = render();
        for line in [
            "pbx_edge_media_stream_loss_ratio_count{side=\"phone\"} 1",
            "pbx_edge_media_stream_loss_ratio_bucket{side=\"phone\",le=\"0.03\"} 0",
            "pbx_edge_media_stream_loss_ratio_bucket{side=\"phone\",le=\"0.05\"} 1",
            "pbx_edge_media_stream_jitter_seconds_count{side=\"phone\"} 1",
            "pbx_edge_media_stream_mos_bucket{side=\"phone\",le=\"3.8\"} 0",
            "pbx_edge_media_stream_mos_bucket{side=\"phone\",le=\"4\"} 1",
            // The PBX sent nothing: not observed.
            "pbx_edge_media_stream_mos_count{side=\"pbx\"} 0",
        ] {
            assert!(text.contains(line), "missing {line} in\n{text}");
        }
    }

    #[test]
    fn reported_quality_and_rtt_are_observed_at_stream_end_and_lower_the_mos() {
        use crate::media::report::{ReceivedMedia, RtcpReports};
        use crate::media::rtcp::{tests::report, ReportBlock};
        let pool = PortPool::new(PortRange::new(30000, 30009).unwrap());
        let stats = Arc::new(MediaStats::new(pool, 1));
        let registry = Registry::new();
        MediaCollector::register(stats.clone(), &registry).unwrap();
        let render = || {
            prometheus::TextEncoder::new()
                .encode_to_string(&registry.gather())
                .unwrap()
        };
        assert!(render().contains("pbx_edge_media_stream_rtt_seconds_count{side=\"phone\"} 0"));

        let c = Arc::new(StreamCounters::default());
        stats.register_stream(StreamId(1), c.clone());
        let mut from_pbx = crate::media::quality::ReceiveTracker::default();
        let mut p = [0u8; 172];
        p[0] = 0x80;
        for i in 0..100u16 {
            p[2..4].copy_from_slice(&i.to_be_bytes());
            p[4..8].copy_from_slice(&(u32::from(i) * 160).to_be_bytes());
            from_pbx.on_packet(
                &p,
                u64::from(i) * 20_000_000,
                &crate::media::ClockRates::EMPTY,
                c.quality_cells(Side::Pbx),
            );
        }
        let mos_before = c
            .quality(Side::Pbx)
            .mos_with_delay(c.one_way_delay_ms())
            .unwrap();
        // The PBX's SR forwarded at 0; the phone echoes it 400 ms later with DLSR 0, 10 %
        // loss in the last interval and 15 of the 100 packets relayed (seq 0..=99) lost over
        // the stream: the phone leg's RTT is 400 ms.
        let mut r = RtcpReports::default();
        let m = ReceivedMedia::default();
        r.on_rtcp(
            Side::Pbx,
            &report(0, Some((0, 0x0001_0000)), &[]),
            0,
            m,
            c.report_cells(Side::Phone),
        );
        let block = ReportBlock {
            ssrc: 0,
            fraction_lost: 26,
            cumulative_lost: 15,
            extended_highest_seq: 99,
            jitter: 40,
            lsr: 1,
            dlsr: 0,
        };
        r.on_rtcp(
            Side::Phone,
            &report(5, None, &[block]),
            400_000_000,
            from_pbx.received_media(),
            c.report_cells(Side::Pbx),
        );
        assert_eq!(c.one_way_delay_ms(), Some(200.0));
        let mos_after = c
            .quality(Side::Pbx)
            .mos_with_delay(c.one_way_delay_ms())
            .unwrap();
        assert!(mos_before - mos_after > 0.1, "{mos_before} -> {mos_after}");

        stats.retire_stream(StreamId(1));
        let text = render();
        for line in [
            "pbx_edge_media_stream_rtt_seconds_count{side=\"phone\"} 1",
            "pbx_edge_media_stream_rtt_seconds_bucket{side=\"phone\",le=\"0.3\"} 0",
            "pbx_edge_media_stream_rtt_seconds_bucket{side=\"phone\",le=\"0.5\"} 1",
            "pbx_edge_media_stream_rtt_seconds_count{side=\"pbx\"} 0",
            "pbx_edge_media_stream_reported_loss_ratio_count{side=\"pbx\"} 1",
            "pbx_edge_media_stream_reported_loss_ratio_bucket{side=\"pbx\",le=\"0.05\"} 0",
            "pbx_edge_media_stream_reported_loss_ratio_bucket{side=\"pbx\",le=\"0.1\"} 0",
            "pbx_edge_media_stream_reported_loss_ratio_bucket{side=\"pbx\",le=\"0.2\"} 1",
            "pbx_edge_media_stream_reported_jitter_seconds_bucket{side=\"pbx\",le=\"0.005\"} 1",
            "pbx_edge_media_stream_reported_loss_ratio_count{side=\"phone\"} 0",
        ] {
            assert!(text.contains(line), "missing {line} in\n{text}");
        }
    }
}
