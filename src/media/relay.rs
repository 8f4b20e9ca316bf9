//! The hot path: relay worker threads.
//!
//! # Why workers and not a task per stream
//! At 50 packets/s per stream the cost that decides capacity is waking a thread for a packet,
//! not the crypto (DESIGN.md, "Where the media path's time goes"). So a small number of worker
//! threads (one per core by default) each own many streams. A worker blocks in one `epoll`
//! (`mio::Poll`) over all its sockets; one wake-up returns every ready socket, and each is
//! drained with a bounded batch ([`BATCH_PER_SOCKET`]) so one busy stream cannot starve the
//! others. Optionally ([`RelaySettings::coalesce`]) a worker that just relayed packets sleeps a
//! few hundred microseconds before polling again, so the next wake-up serves every packet that
//! arrived meanwhile — wake-ups per packet fall well below one at the price of that much
//! added latency.
//!
//! # Socket I/O: batched or per packet (`media.io`)
//! Per packet, a worker calls `recvfrom` on each ready socket until `EAGAIN` (at most
//! [`BATCH_PER_SOCKET`]) and `sendto` for each relayed packet: two system calls per packet.
//! Batched ([`super::batch_io`], io_uring), a wake-up runs passes over all ready sockets at
//! once: one receive per socket into its own slot buffer, ONE submit; every datagram through
//! the same pipeline; one send per outgoing packet from that same buffer, ONE submit; sockets
//! that delivered are read again in the next pass, until `EAGAIN` or [`BATCH_PER_SOCKET`]
//! passes. At most [`ROUND_SLOTS`] sockets per pass; the rest wait in `pending`. The pipeline
//! ([`Stream::relay`]) only says what to send; [`Stream::sent`] counts the result in both
//! modes, so latching, replay protection, counters and events are the same.
//!
//! # The packet pipeline (rtpengine `stream_packet`, STYLE habit 6)
//! Per received datagram, on the worker's one reused buffer, with no allocation and no lock:
//! 1. classify: RTCP socket → RTCP; RTP socket → RFC 5761 §4 demux (stray RTCP on the RTP
//!    port, as Asterisk sends, is handled too);
//! 2. phone side: SRTP unprotect (auth, replay, ROC) → latch judge (authenticate, *then*
//!    learn); PBX side: latch judge (source must be the PBX) → SRTP protect;
//! 3. send from the other side's matching socket to that side's destination;
//! 4. count (per-stream atomics, relaxed).
//!
//! Every failure is a drop with a [`DropReason`] counter; nothing on this path returns errors
//! or logs per packet.
//!
//! Signalling changes a stream only through `WorkerCommand`s on the worker's channel
//! (`std::sync::mpsc` + `mio::Waker`), handled between packet batches.

use std::io::ErrorKind;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use mio::net::UdpSocket;
use mio::{Events, Interest, Poll, Token, Waker};
use tokio::sync::{mpsc as tokio_mpsc, oneshot};

use super::batch_io::{self, BatchIo, Completion, Outcome};
use super::latch::{Latch, LatchPolicy, Proof, Verdict};
use super::ports::BoundPair;
use super::quality::ReceiveTracker;
use super::report::RtcpReports;
use super::stats::{DropReason, MediaStats, StreamCounters};
use super::tap::RtcpTap;
use super::transform::{demux, Inbound, Outbound};
use super::types::{
    pbx_policy, ClockRates, Kind, MediaEvent, PeerSpec, RelaySettings, Side, StreamId,
};
use super::MediaError;

/// Datagrams taken from one socket per wake-up before moving on to the next socket.
pub const BATCH_PER_SOCKET: usize = 16;

/// Largest datagram accepted (bigger ones are truncated by the kernel and then fail to
/// authenticate / are relayed truncated); the buffer keeps room for the SRTP tag and MKI.
const RECV_MAX: usize = 4096 - Outbound::MAX_OVERHEAD;

const WAKER: Token = Token(usize::MAX);

/// Batched I/O: sockets read (and so packets relayed) per worker round at most; the rest wait
/// in `pending` for the next round, as with [`BATCH_PER_SOCKET`] in per-packet mode.
pub const ROUND_SLOTS: usize = 256;

// A slot buffer holds the largest datagram plus what SRTP protect adds.
const _: () = assert!(RECV_MAX + Outbound::MAX_OVERHEAD <= batch_io::SLOT_BYTES);

/// The worker thread's name; `benches/relay_load.rs` reads per-thread CPU time by it.
pub fn worker_thread_name(index: usize) -> String {
    format!("media-worker-{index}")
}

/// A change to one stream, built on the caller's thread.
// `Retarget` carries two `PeerSpec`s with their clock-rate tables; a change travels boxed
// (`WorkerCommand::Change`), so the variants' sizes cost nothing per packet.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Change {
    Rekey {
        phone_policy: Option<LatchPolicy>,
        inbound: Option<Inbound>,
        outbound: Option<Outbound>,
    },
    Hold(bool),
    Retarget {
        phone: Option<PeerSpec>,
        pbx: Option<PeerSpec>,
    },
    Stop,
}

/// A stream handed to a worker.
pub(crate) struct NewStream {
    pub id: StreamId,
    pub phone: BoundPair,
    pub pbx: BoundPair,
    pub phone_latch: LatchPolicy,
    pub pbx_latch: (LatchPolicy, LatchPolicy),
    pub spec_phone: PeerSpec,
    pub spec_pbx: PeerSpec,
    pub pbx_host: std::net::IpAddr,
    pub inbound: Inbound,
    pub outbound: Outbound,
    pub counters: Arc<StreamCounters>,
    /// Where RTCP copies go for HEP capture (`[hep]` on).
    pub rtcp_tap: Option<RtcpTap>,
    /// The call's Call-ID, carried by the RTCP copies.
    pub correlation: Option<Arc<str>>,
    /// Answered once the worker owns the stream (taken by the worker).
    pub ack: Option<oneshot::Sender<Result<(), MediaError>>>,
}

pub(crate) enum WorkerCommand {
    Start(Box<NewStream>),
    /// A change; `ack` is answered once it is in force (or the stream is gone).
    Change {
        id: StreamId,
        change: Box<Change>,
        ack: Option<oneshot::Sender<()>>,
    },
    Shutdown,
}

/// The sending end of one worker's command channel.
#[derive(Clone)]
pub(crate) struct WorkerLink {
    tx: mpsc::Sender<WorkerCommand>,
    waker: Arc<Waker>,
    load: Arc<AtomicUsize>,
}

impl WorkerLink {
    pub(crate) fn send(&self, command: WorkerCommand) -> Result<(), MediaError> {
        if let WorkerCommand::Start(_) = command {
            self.load.fetch_add(1, Ordering::Relaxed);
        }
        self.tx.send(command).map_err(|_| MediaError::StreamGone)?;
        self.waker.wake().map_err(MediaError::Worker)
    }
}

/// All workers; dropping it shuts them down.
pub(crate) struct WorkerPool {
    links: Vec<WorkerLink>,
}

impl WorkerPool {
    /// `batched`: each worker gets its own io_uring ([`BatchIo`]) of [`ROUND_SLOTS`] slots.
    pub(crate) fn spawn(
        count: usize,
        settings: &RelaySettings,
        batched: bool,
        stats: Arc<MediaStats>,
        events: tokio_mpsc::Sender<MediaEvent>,
    ) -> Result<Self, MediaError> {
        let count = count.max(1);
        let mut links = Vec::with_capacity(count);
        for index in 0..count {
            let poll = Poll::new().map_err(MediaError::Worker)?;
            let waker = Arc::new(Waker::new(poll.registry(), WAKER).map_err(MediaError::Worker)?);
            let (tx, rx) = mpsc::channel();
            let load = Arc::new(AtomicUsize::new(0));
            let wakeups = stats
                .worker_wakeups(index)
                .unwrap_or_else(|| Arc::new(AtomicU64::new(0)));
            let io = if batched {
                stats.worker_batched(true);
                Some(BatchIo::new(ROUND_SLOTS).map_err(MediaError::Worker)?)
            } else {
                None
            };
            let worker = Worker {
                io,
                completions: Vec::with_capacity(2 * ROUND_SLOTS),
                armed: Vec::new(),
                poll,
                commands: rx,
                streams: Vec::new(),
                free_slots: Vec::new(),
                pending: Vec::new(),
                retry: Vec::new(),
                again: Vec::with_capacity(ROUND_SLOTS),
                again_spare: Vec::with_capacity(ROUND_SLOTS),
                backlog: false,
                stats: stats.clone(),
                events: events.clone(),
                load: load.clone(),
                wakeups,
                timeout: settings.timeout,
                coalesce: settings.coalesce,
                tick: housekeeping_tick(settings.timeout),
            };
            thread::Builder::new()
                .name(worker_thread_name(index))
                .spawn(move || worker.run())
                .map_err(MediaError::Worker)?;
            links.push(WorkerLink { tx, waker, load });
        }
        Ok(WorkerPool { links })
    }

    /// The worker owning the fewest streams.
    pub(crate) fn least_loaded(&self) -> Result<WorkerLink, MediaError> {
        self.links
            .iter()
            .min_by_key(|l| l.load.load(Ordering::Relaxed))
            .cloned()
            .ok_or(MediaError::StreamGone)
    }
}

impl Drop for WorkerPool {
    fn drop(&mut self) {
        for link in &self.links {
            let _ = link.send(WorkerCommand::Shutdown);
        }
    }
}

/// Housekeeping (timeouts, auth-failure reports) runs this often.
fn housekeeping_tick(timeout: Duration) -> Duration {
    (timeout / 4).clamp(Duration::from_millis(10), Duration::from_millis(500))
}

/// Socket index inside a stream (low 2 bits of the mio token).
const PHONE_RTP: usize = 0;
const PHONE_RTCP: usize = 1;
const PBX_RTP: usize = 2;
const PBX_RTCP: usize = 3;

struct Stream {
    id: StreamId,
    /// phone RTP, phone RTCP, PBX RTP, PBX RTCP — dropped before the leases below.
    sockets: [UdpSocket; 4],
    /// One latch per socket, same order.
    latches: [Latch; 4],
    phone_mux: bool,
    pbx_mux: bool,
    inbound: Inbound,
    outbound: Outbound,
    counters: Arc<StreamCounters>,
    on_hold: bool,
    last_heard: [Instant; 2],
    timeout_reported: [bool; 2],
    auth_failures_reported: u64,
    /// Receive quality of the RTP from the phone (0) and from the PBX (1).
    quality: [ReceiveTracker; 2],
    /// Clock rates of the payload types each sender's SDP maps, same order (for jitter).
    rates: [ClockRates; 2],
    /// What each side reports in RTCP, and the SRs forwarded for round-trip times.
    reports: RtcpReports,
    /// HEP capture of the RTCP relayed (`[hep]` on), the Call-ID it is filed under, and each
    /// socket's local address (the copies' destination).
    rtcp_tap: Option<RtcpTap>,
    correlation: Option<Arc<str>>,
    local: [Option<SocketAddr>; 4],
    /// Arrival times for jitter are measured from here.
    epoch: Instant,
    /// The PBX's IP, trusted while its SDP address is unknown.
    pbx_host: std::net::IpAddr,
    _leases: [super::ports::PortLease; 2],
}

/// A packet the pipeline accepted: send `len` bytes of the buffer from socket `out` to `dest`.
#[derive(Debug, Clone, Copy)]
struct Forward {
    out: usize,
    dest: SocketAddr,
    len: usize,
}

/// What the pipeline made of one datagram.
struct Relayed {
    /// A latch event to report.
    event: Option<MediaEvent>,
    /// What to send; `None` = dropped (already counted).
    forward: Option<Forward>,
}

impl Relayed {
    const DROPPED: Relayed = Relayed {
        event: None,
        forward: None,
    };
}

impl Stream {
    fn new(new: NewStream, now: Instant) -> Self {
        let NewStream {
            id,
            phone,
            pbx,
            phone_latch,
            pbx_latch,
            spec_phone,
            spec_pbx,
            inbound,
            outbound,
            counters,
            pbx_host,
            rtcp_tap,
            correlation,
            ..
        } = new;
        let sockets = [
            UdpSocket::from_std(phone.rtp),
            UdpSocket::from_std(phone.rtcp),
            UdpSocket::from_std(pbx.rtp),
            UdpSocket::from_std(pbx.rtcp),
        ];
        // Read once here, not per packet (a syscall each).
        let local = sockets.each_ref().map(|s| s.local_addr().ok());
        let latches = [
            Latch::new(phone_latch, spec_phone.rtp),
            Latch::new(phone_latch, spec_phone.rtcp_address()),
            Latch::new(pbx_latch.0, spec_pbx.rtp),
            Latch::new(pbx_latch.1, spec_pbx.rtcp_address()),
        ];
        Stream {
            id,
            sockets,
            latches,
            phone_mux: spec_phone.rtcp_mux,
            pbx_mux: spec_pbx.rtcp_mux,
            inbound,
            outbound,
            counters,
            on_hold: false,
            last_heard: [now; 2],
            timeout_reported: [false; 2],
            auth_failures_reported: 0,
            quality: [ReceiveTracker::default(), ReceiveTracker::default()],
            rates: [spec_phone.clock_rates, spec_pbx.clock_rates],
            reports: RtcpReports::default(),
            rtcp_tap,
            correlation,
            local,
            epoch: now,
            pbx_host,
            _leases: [phone.lease, pbx.lease],
        }
    }

    /// The packet pipeline for one datagram `buf[..len]` received on `socket` from `source`.
    /// Returns the latch event to report, if any, and what to send (`buf[..forward.len]`
    /// from socket `forward.out` to `forward.dest`); the caller sends it — at once
    /// (per-packet I/O) or with the round's other packets (batched) — and reports the result
    /// to [`Stream::sent`], which counts it.
    #[inline]
    fn relay(
        &mut self,
        socket: usize,
        buf: &mut [u8],
        len: usize,
        source: SocketAddr,
        now: Instant,
    ) -> Relayed {
        let kind = match socket {
            PHONE_RTCP | PBX_RTCP => Kind::Rtcp,
            _ => buf.get(..len).map_or(Kind::Rtp, demux),
        };
        // Which latch judges the source: RTCP on a muxed side shares the RTP address; stray
        // RTCP on the RTP port of a non-muxed side (Asterisk does this, cf. rtpengine GH #697)
        // is judged — and learned — as RTCP, so it never moves the RTP destination.
        let latch = match (socket, kind) {
            (PHONE_RTP, Kind::Rtcp) if !self.phone_mux => PHONE_RTCP,
            (PBX_RTP, Kind::Rtcp) if !self.pbx_mux => PBX_RTCP,
            _ => socket,
        };
        if socket < PBX_RTP {
            // Phone → PBX: authenticate first, then learn (RTP-bleed defence).
            let (plain, proof) = match self.inbound.apply(buf, len, kind) {
                Ok(p) => {
                    if p.unannounced_unencrypted_srtcp {
                        self.counters.unannounced_unencrypted_srtcp();
                    }
                    (p.len, p.proof)
                }
                Err(reason) => {
                    self.counters.dropped(reason);
                    return Relayed::DROPPED;
                }
            };
            let Some(event) = self.judge(latch, source, proof, Side::Phone) else {
                return Relayed::DROPPED;
            };
            self.last_heard[0] = now;
            if kind == Kind::Rtp {
                self.track(0, Side::Phone, buf, plain);
            } else {
                self.rtcp_report(Side::Phone, socket, source, buf, plain, now);
            }
            let out = match (kind, self.pbx_mux) {
                (Kind::Rtp, _) | (Kind::Rtcp, true) => PBX_RTP,
                (Kind::Rtcp, false) => PBX_RTCP,
            };
            self.forward(event, out, plain)
        } else {
            // PBX → phone: only the PBX may send, then protect.
            let Some(event) = self.judge(latch, source, Proof::Unverified, Side::Pbx) else {
                return Relayed::DROPPED;
            };
            self.last_heard[1] = now;
            if kind == Kind::Rtp {
                // Before protect: the tracker reads the plain header.
                self.track(1, Side::Pbx, buf, len);
            } else {
                self.rtcp_report(Side::Pbx, socket, source, buf, len, now);
            }
            let protected = match self.outbound.apply(buf, len, kind) {
                Ok(n) => n,
                Err(reason) => {
                    self.counters.dropped(reason);
                    return Relayed {
                        event,
                        forward: None,
                    };
                }
            };
            let out = match (kind, self.phone_mux) {
                (Kind::Rtp, _) | (Kind::Rtcp, true) => PHONE_RTP,
                (Kind::Rtcp, false) => PHONE_RTCP,
            };
            self.forward(event, out, protected)
        }
    }

    /// Reads the state a datagram received on `socket` will need, so that a batch's cache
    /// misses overlap instead of stalling one packet after the other.
    #[inline]
    fn warm(&self, socket: usize) -> u64 {
        let side = usize::from(socket >= PBX_RTP);
        let srtp = if side == 0 {
            self.inbound.warm()
        } else {
            self.outbound.warm()
        };
        let tracker = self.quality.get(side).map_or(0, |q| u64::from(q.warm()));
        srtp ^ tracker ^ self.counters.warm()
    }

    /// Receive-quality accounting of one accepted plain RTP packet. The arrival time is read
    /// per packet (not the batch's `now`): jitter is about spacing within a batch too.
    #[inline]
    fn track(&mut self, index: usize, sender: Side, buf: &[u8], len: usize) {
        let arrival_ns = u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX);
        if let (Some(tracker), Some(rates), Some(packet)) = (
            self.quality.get_mut(index),
            self.rates.get(index),
            buf.get(..len),
        ) {
            tracker.on_packet(
                packet,
                arrival_ns,
                rates,
                self.counters.quality_cells(sender),
            );
        }
    }

    /// RTCP accounting of one accepted plain RTCP compound `sender` sent from `source` to
    /// `socket` (phone: after SRTCP unprotect; PBX: before protect), forwarded at `now`, and
    /// its copy for HEP capture. All logic is in [`super::report`] and [`super::tap`]; this
    /// only picks the cells: `sender`'s reports are about the RTP the other side sends.
    #[inline]
    fn rtcp_report(
        &mut self,
        sender: Side,
        socket: usize,
        source: SocketAddr,
        buf: &[u8],
        len: usize,
        now: Instant,
    ) {
        let media_from = match sender {
            Side::Phone => Side::Pbx,
            Side::Pbx => Side::Phone,
        };
        let tracker = match media_from {
            Side::Phone => 0,
            Side::Pbx => 1,
        };
        let (Some(packet), Some(tracker)) = (buf.get(..len), self.quality.get(tracker)) else {
            return;
        };
        let now_ns =
            u64::try_from(now.saturating_duration_since(self.epoch).as_nanos()).unwrap_or(u64::MAX);
        self.reports.on_rtcp(
            sender,
            packet,
            now_ns,
            tracker.received_media(),
            self.counters.report_cells(media_from),
        );
        if let (Some(tap), Some(Some(dst))) = (&self.rtcp_tap, self.local.get(socket)) {
            tap.offer(
                source,
                *dst,
                SystemTime::now(),
                self.correlation.as_ref(),
                packet,
            );
        }
    }

    /// Latch step. `None` = drop (counted); `Some(event)` = forward, maybe reporting a latch.
    #[inline]
    fn judge(
        &mut self,
        socket: usize,
        source: SocketAddr,
        proof: Proof,
        side: Side,
    ) -> Option<Option<MediaEvent>> {
        let latch = self.latches.get_mut(socket)?;
        match latch.judge(source, proof) {
            Verdict::Forward => Some(None),
            Verdict::ForwardAndLearn(address) => {
                latch.apply(Verdict::ForwardAndLearn(address));
                self.counters.latched();
                Some(Some(MediaEvent::Latched {
                    stream: self.id,
                    side,
                    kind: match socket {
                        PHONE_RTCP | PBX_RTCP => Kind::Rtcp,
                        _ => Kind::Rtp,
                    },
                    address,
                }))
            }
            Verdict::Drop(_) => {
                self.counters.dropped(DropReason::SpoofedSource);
                None
            }
        }
    }

    /// The send step: from socket `out` to that side's destination, or a counted drop.
    #[inline]
    fn forward(&self, event: Option<MediaEvent>, out: usize, len: usize) -> Relayed {
        match self.latches.get(out).and_then(Latch::destination) {
            Some(dest) if out < self.sockets.len() => Relayed {
                event,
                forward: Some(Forward { out, dest, len }),
            },
            Some(_) => {
                self.counters.dropped(DropReason::Malformed);
                Relayed {
                    event,
                    forward: None,
                }
            }
            None => {
                self.counters.dropped(DropReason::NoDestination);
                Relayed {
                    event,
                    forward: None,
                }
            }
        }
    }

    /// Sends `buf[..forward.len]` now (per-packet I/O) and counts the result.
    #[inline]
    fn send_now(&self, buf: &[u8], forward: &Forward) {
        let sent = match (self.sockets.get(forward.out), buf.get(..forward.len)) {
            (Some(socket), Some(packet)) => socket.send_to(packet, forward.dest).is_ok(),
            _ => false,
        };
        self.sent(forward.out, forward.len, sent);
    }

    /// Counts a packet handed to the kernel on socket `out` (`ok`), or dropped because the
    /// send failed.
    #[inline]
    fn sent(&self, out: usize, len: usize, ok: bool) {
        match (ok, out < PBX_RTP) {
            (true, true) => self.counters.relayed_to_phone(len),
            (true, false) => self.counters.relayed_to_pbx(len),
            (false, _) => self.counters.dropped(DropReason::SendFailed),
        }
    }

    fn apply(&mut self, change: Change, now: Instant) {
        match change {
            Change::Rekey {
                phone_policy,
                inbound,
                outbound,
            } => {
                if let Some(inbound) = inbound {
                    self.inbound = inbound;
                }
                if let Some(outbound) = outbound {
                    self.outbound = outbound;
                }
                if let Some(policy) = phone_policy {
                    // A phone that goes from plain to SRTP must prove itself again.
                    for latch in &mut self.latches[..PBX_RTP] {
                        if latch.policy() != policy {
                            let advertised = latch.advertised();
                            latch.retarget(policy, advertised);
                        }
                    }
                }
            }
            Change::Hold(on_hold) => {
                self.on_hold = on_hold;
                if !on_hold {
                    self.last_heard = [now; 2];
                    self.timeout_reported = [false; 2];
                }
            }
            Change::Retarget { phone, pbx } => {
                if let Some(phone) = phone {
                    let policy = self.latches[PHONE_RTP].policy();
                    self.latches[PHONE_RTP].retarget(policy, phone.rtp);
                    self.latches[PHONE_RTCP].retarget(policy, phone.rtcp_address());
                    self.phone_mux = phone.rtcp_mux;
                    self.rates[0] = phone.clock_rates;
                }
                if let Some(pbx) = pbx {
                    let (rtp, rtcp) = pbx_policy(&pbx, self.pbx_host);
                    self.latches[PBX_RTP].retarget(rtp, pbx.rtp);
                    self.latches[PBX_RTCP].retarget(rtcp, pbx.rtcp_address());
                    self.pbx_mux = pbx.rtcp_mux;
                    self.rates[1] = pbx.clock_rates;
                }
            }
            // Handled by the worker (it owns the slot).
            Change::Stop => {}
        }
    }
}

struct Worker {
    /// Batched I/O (`None`: one `recv_from`/`send_to` per packet).
    io: Option<BatchIo>,
    /// Completions of one batched submit (preallocated: no allocation per round).
    completions: Vec<Completion>,
    /// Batched I/O, per stream slot: bits 0-3 = socket queued this round, bits 4-7 = its last
    /// receive failed (a second failure in a row is not retried: no busy loop).
    armed: Vec<u8>,
    poll: Poll,
    commands: mpsc::Receiver<WorkerCommand>,
    /// Slot = token >> 2.
    streams: Vec<Option<Stream>>,
    free_slots: Vec<usize>,
    /// Sockets whose batch ran out before `WouldBlock` (edge-triggered: must be revisited).
    pending: Vec<Token>,
    /// Last round's `pending`, being served (swapped with it each round).
    retry: Vec<Token>,
    /// Batched I/O: sockets that delivered in this pass, to read again in the next one, and
    /// the spare list the two swap with (each holds at most [`ROUND_SLOTS`]).
    again: Vec<Token>,
    again_spare: Vec<Token>,
    /// Batched I/O: this round left ready sockets over for want of slots.
    backlog: bool,
    stats: Arc<MediaStats>,
    events: tokio_mpsc::Sender<MediaEvent>,
    load: Arc<AtomicUsize>,
    wakeups: Arc<AtomicU64>,
    timeout: Duration,
    coalesce: Duration,
    tick: Duration,
}

enum Drained {
    Empty,
    More,
}

impl Worker {
    fn run(mut self) {
        let mut events = Events::with_capacity(1024);
        let mut buf = vec![0u8; RECV_MAX + Outbound::MAX_OVERHEAD];
        let mut next_housekeeping = Instant::now() + self.tick;
        let mut slept = false;
        loop {
            let now = Instant::now();
            // After a coalescing sleep, or with sockets left over, only look (timeout 0);
            // block only when there is nothing to do. So every blocking poll that returns is
            // one wake-up, and so is every coalescing sleep.
            let timeout = if self.pending.is_empty() && !slept {
                next_housekeeping.saturating_duration_since(now)
            } else {
                Duration::ZERO
            };
            slept = false;
            if let Err(e) = self.poll.poll(&mut events, Some(timeout)) {
                if e.kind() == ErrorKind::Interrupted {
                    continue;
                }
                tracing::error!(error = %e, "media worker poll failed; worker stops");
                return;
            }
            if !timeout.is_zero() {
                self.wakeups.fetch_add(1, Ordering::Relaxed);
            }
            let now = Instant::now();
            // Commands first: a packet sent after a command (e.g. after a Rekey) is handled
            // with the command in force (the waker fired before that packet's readiness).
            if self.handle_commands(&mut buf, now) {
                return;
            }
            let mut relayed = 0usize;
            // `retry` and `pending` keep their capacity (reserved in `start`): no allocation.
            let mut retry = std::mem::take(&mut self.retry);
            std::mem::swap(&mut self.pending, &mut retry);
            if let Some(mut io) = self.io.take() {
                let ready = events.iter().map(|e| e.token()).filter(|t| *t != WAKER);
                relayed += self.batched_round(&mut io, retry.drain(..).chain(ready), now);
                self.io = self.io_checked(io);
            } else {
                for token in retry.drain(..) {
                    relayed += self.drain(token, &mut buf, now);
                }
                for event in events.iter() {
                    if event.token() != WAKER {
                        relayed += self.drain(event.token(), &mut buf, now);
                    }
                }
            }
            self.retry = retry;
            if now >= next_housekeeping {
                self.housekeeping(now);
                next_housekeeping = now + self.tick;
            }
            // A batched round that left ready sockets over (more than ROUND_SLOTS) has a
            // backlog: serve it at once, do not sleep on it (the sleep would cap a worker at
            // ROUND_SLOTS sockets per coalescing interval).
            let backlog = std::mem::take(&mut self.backlog);
            if relayed > 0 && !self.coalesce.is_zero() && !backlog {
                // Wake-up coalescing: let packets accumulate, serve them all next round.
                thread::sleep(self.coalesce);
                self.wakeups.fetch_add(1, Ordering::Relaxed);
                slept = true;
            }
        }
    }

    /// Drains up to `BATCH_PER_SOCKET` datagrams from one socket; returns how many.
    fn drain(&mut self, token: Token, buf: &mut [u8], now: Instant) -> usize {
        let slot = token.0 >> 2;
        let socket = token.0 & 3;
        let Some(Some(stream)) = self.streams.get_mut(slot) else {
            return 0; // stale readiness of a stopped stream
        };
        let mut count = 0;
        let mut errors = 0;
        let mut state = Drained::More;
        for _ in 0..BATCH_PER_SOCKET {
            let Some(recv_buf) = buf.get_mut(..RECV_MAX) else {
                return count;
            };
            let received = match stream.sockets.get(socket) {
                Some(s) => s.recv_from(recv_buf),
                None => return count,
            };
            match received {
                Ok((len, source)) => {
                    count += 1;
                    let relayed = stream.relay(socket, buf, len, source, now);
                    if let Some(forward) = relayed.forward {
                        stream.send_now(buf, &forward);
                    }
                    if let Some(event) = relayed.event {
                        send_event(&self.events, &self.stats, event);
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    state = Drained::Empty;
                    break;
                }
                // A pending socket error (ICMP) or EINTR is reported once: keep draining.
                Err(_) => errors += 1,
            }
        }
        // A batch of nothing but errors is not retried at once (no busy loop on a socket
        // that keeps failing); the next datagram raises a new readiness edge.
        if let (Drained::More, false) = (state, count == 0 && errors > 0) {
            self.pending.push(token);
        }
        count
    }

    /// One batched round, the batched twin of [`Worker::drain`] over every ready socket: up to
    /// [`BATCH_PER_SOCKET`] passes ([`Worker::batched_pass`]), the first over the ready and
    /// pending sockets, each next one over the sockets that delivered a datagram in the
    /// previous pass (edge-triggered: read until EAGAIN), so a burst on one socket is served
    /// in this wake-up and not one datagram per coalescing sleep. Sockets still delivering
    /// after the last pass go to `pending`. Returns the datagrams received.
    fn batched_round(
        &mut self,
        io: &mut BatchIo,
        tokens: impl Iterator<Item = Token>,
        now: Instant,
    ) -> usize {
        let mut received = self.batched_pass(io, tokens, now);
        for _ in 1..BATCH_PER_SOCKET {
            if self.again.is_empty() || io.in_flight() > 0 {
                break;
            }
            // Swap the lists (both keep their capacity: no allocation).
            let mut current = std::mem::take(&mut self.again);
            std::mem::swap(&mut self.again, &mut self.again_spare);
            received += self.batched_pass(io, current.drain(..), now);
            self.again_spare = current;
        }
        self.pending.append(&mut self.again);
        received
    }

    /// One pass: one receive per socket (at most [`ROUND_SLOTS`], the rest to `pending`), ONE
    /// submit-and-wait; each datagram through the unchanged pipeline ([`Stream::relay`]) in
    /// its own slot buffer; one send per outgoing packet from that same buffer, ONE
    /// submit-and-wait; then the sends are counted. Every operation of the pass has completed
    /// when it returns, so no slot, buffer or socket outlives its use. Sockets that delivered
    /// go to `again`. Returns the datagrams received.
    fn batched_pass(
        &mut self,
        io: &mut BatchIo,
        tokens: impl Iterator<Item = Token>,
        now: Instant,
    ) -> usize {
        // 1. Queue one receive per socket.
        let mut queued = 0usize;
        for token in tokens {
            let (slot, socket) = (token.0 >> 2, token.0 & 3);
            let Some(Some(stream)) = self.streams.get(slot) else {
                continue; // stale readiness of a stopped stream
            };
            let Some(armed) = self.armed.get_mut(slot) else {
                continue;
            };
            if *armed & (1 << socket) != 0 {
                continue; // already queued this round (ready and pending both)
            }
            if queued == io.capacity() {
                self.pending.push(token);
                self.backlog = true;
                continue;
            }
            let Some(fd) = stream.sockets.get(socket).map(AsRawFd::as_raw_fd) else {
                continue;
            };
            match io.queue_recv(queued, fd, RECV_MAX, token.0 as u64) {
                Ok(()) => {
                    *armed |= 1 << socket;
                    queued += 1;
                }
                Err(_) => self.pending.push(token),
            }
        }
        if queued == 0 {
            return 0;
        }
        self.completions.clear();
        if self.submit(io).is_err() {
            return 0;
        }
        // 1b. Touch every receiving stream's state first: the loads of different streams are
        // independent, so the CPU overlaps their cache misses (with 1,000 streams each one's
        // state has left L2 since its previous packet 20 ms ago).
        let mut warm = 0u64;
        for c in &self.completions {
            if let Outcome::Received { .. } = c.outcome {
                let token = usize::try_from(c.tag).unwrap_or(usize::MAX);
                if let Some(Some(stream)) = self.streams.get(token >> 2) {
                    warm ^= stream.warm(token & 3);
                }
            }
        }
        std::hint::black_box(warm);
        // 2. The pipeline, per received datagram; queue its send from the same slot.
        let mut received = 0usize;
        let mut sends = 0usize;
        for i in 0..self.completions.len() {
            let Some(&Completion {
                slot: io_slot,
                tag,
                outcome,
            }) = self.completions.get(i)
            else {
                break;
            };
            let token = Token(usize::try_from(tag).unwrap_or(usize::MAX));
            let (slot, socket) = (token.0 >> 2, token.0 & 3);
            let (Some(Some(stream)), Some(armed)) =
                (self.streams.get_mut(slot), self.armed.get_mut(slot))
            else {
                continue;
            };
            *armed &= !(1 << socket);
            match outcome {
                Outcome::Received { len, source } => {
                    *armed &= !(0x10 << socket);
                    received += 1;
                    // Edge-triggered: read again (next pass) until EAGAIN.
                    self.again.push(token);
                    let Some(buf) = io.buffer_mut(io_slot) else {
                        continue;
                    };
                    let relayed = stream.relay(socket, buf, len, source, now);
                    if let Some(forward) = relayed.forward {
                        let queued = stream.sockets.get(forward.out).is_some_and(|s| {
                            let tag = (slot << 2 | forward.out) as u64;
                            io.queue_send(io_slot, s.as_raw_fd(), forward.len, forward.dest, tag)
                                .is_ok()
                        });
                        if queued {
                            sends += 1;
                        } else {
                            stream.sent(forward.out, forward.len, false);
                        }
                    }
                    if let Some(event) = relayed.event {
                        send_event(&self.events, &self.stats, event);
                    }
                }
                Outcome::WouldBlock => *armed &= !(0x10 << socket),
                // A pending socket error (ICMP) is reported once: read again, unless the last
                // receive failed too (then the next datagram raises a new readiness edge).
                Outcome::Failed(_) | Outcome::Sent { .. } => {
                    if *armed & (0x10 << socket) == 0 {
                        *armed |= 0x10 << socket;
                        self.again.push(token);
                    } else {
                        *armed &= !(0x10 << socket);
                    }
                }
            }
        }
        if sends == 0 {
            return received;
        }
        // 3. Send everything, then count each send as today.
        self.completions.clear();
        if self.submit(io).is_err() {
            return received;
        }
        for c in &self.completions {
            let token = usize::try_from(c.tag).unwrap_or(usize::MAX);
            if let Some(Some(stream)) = self.streams.get(token >> 2) {
                match c.outcome {
                    Outcome::Sent { len } => stream.sent(token & 3, len, true),
                    // Counted as `send_failed`, as a failed `send_to` is.
                    _ => stream.sent(token & 3, 0, false),
                }
            }
        }
        received
    }

    /// Submits the queued operations and waits for all of them (into `self.completions`).
    /// A ring that fails leaves this worker per-packet (see [`Worker::io_checked`]).
    fn submit(&mut self, io: &mut BatchIo) -> std::io::Result<()> {
        let result = io.submit_and_wait_all(&mut self.completions);
        if let Err(e) = &result {
            tracing::error!(error = %e, "media worker: io_uring submit failed; this worker falls back to per-packet I/O");
        }
        result
    }

    /// Keeps the ring unless an operation is still in flight after a failed submit: then the
    /// worker goes on per-packet (the ring is dropped, its buffers leaked, see `batch_io`),
    /// re-reading every socket of every stream once so no readiness edge is lost.
    fn io_checked(&mut self, io: BatchIo) -> Option<BatchIo> {
        if io.in_flight() == 0 {
            return Some(io);
        }
        drop(io);
        self.stats.worker_batched(false);
        self.armed.iter_mut().for_each(|a| *a = 0);
        for (slot, stream) in self.streams.iter().enumerate() {
            if stream.is_some() {
                self.pending.extend((0..4).map(|i| Token(slot << 2 | i)));
            }
        }
        None
    }

    /// Returns true when the worker must exit.
    fn handle_commands(&mut self, buf: &mut [u8], now: Instant) -> bool {
        loop {
            match self.commands.try_recv() {
                Ok(WorkerCommand::Start(new)) => self.start(*new, buf, now),
                Ok(WorkerCommand::Change { id, change, ack }) => {
                    self.change(id, *change, now);
                    if let Some(ack) = ack {
                        let _ = ack.send(());
                    }
                }
                Ok(WorkerCommand::Shutdown) => return true,
                Err(mpsc::TryRecvError::Empty) => return false,
                Err(mpsc::TryRecvError::Disconnected) => return true,
            }
        }
    }

    fn start(&mut self, new: NewStream, buf: &mut [u8], now: Instant) {
        let slot = self.free_slots.pop().unwrap_or(self.streams.len());
        let mut new = new;
        let id = new.id;
        let ack_tx = new.ack.take();
        let mut stream = Stream::new(new, now);
        let registry = self.poll.registry();
        let mut result = Ok(());
        for (i, socket) in stream.sockets.iter_mut().enumerate() {
            if let Err(e) = registry.register(socket, Token(slot << 2 | i), Interest::READABLE) {
                result = Err(MediaError::Worker(e));
                break;
            }
        }
        if let Err(e) = result {
            for socket in stream.sockets.iter_mut() {
                let _ = registry.deregister(socket);
            }
            self.load.fetch_sub(1, Ordering::Relaxed);
            if let Some(ack) = ack_tx {
                let _ = ack.send(Err(e));
            }
            self.free_slots.push(slot);
            return;
        }
        if slot == self.streams.len() {
            self.streams.push(Some(stream));
        } else if let Some(s) = self.streams.get_mut(slot) {
            *s = Some(stream);
        }
        if self.armed.len() < self.streams.len() {
            self.armed.resize(self.streams.len(), 0);
        }
        // A round puts each socket in `pending` at most three times (left over from `retry`
        // and from its readiness, still delivering after the last pass), so this much room
        // means no allocation on the packet path.
        let room = 12 * self.streams.len() + 64;
        for tokens in [&mut self.pending, &mut self.retry] {
            tokens.reserve(room.saturating_sub(tokens.len()));
        }
        if let Some(armed) = self.armed.get_mut(slot) {
            *armed = 0;
        }
        tracing::debug!(stream = %id, slot, "media stream started");
        if ack_tx.is_some_and(|ack| ack.send(Ok(())).is_err()) {
            // The caller gave up waiting: nobody holds a handle, so stop at once.
            self.stop(id);
            return;
        }
        // Packets may have arrived between bind and registration: their readiness edge was
        // missed, so drain every socket once now (batched: in the next round).
        for i in 0..4 {
            if self.io.is_some() {
                self.pending.push(Token(slot << 2 | i));
            } else {
                self.drain(Token(slot << 2 | i), buf, now);
            }
        }
    }

    fn slot_of(&self, id: StreamId) -> Option<usize> {
        self.streams
            .iter()
            .position(|s| s.as_ref().is_some_and(|s| s.id == id))
    }

    fn change(&mut self, id: StreamId, change: Change, now: Instant) {
        if let Change::Stop = change {
            self.stop(id);
            return;
        }
        let Some(slot) = self.slot_of(id) else {
            return;
        };
        if let Some(Some(stream)) = self.streams.get_mut(slot) {
            stream.apply(change, now);
        }
    }

    fn stop(&mut self, id: StreamId) {
        if let Some(slot) = self.slot_of(id) {
            if let Some(mut stream) = self.streams.get_mut(slot).and_then(Option::take) {
                for socket in stream.sockets.iter_mut() {
                    let _ = self.poll.registry().deregister(socket);
                }
                // Sockets close, then the leases return the ports to the pool.
                drop(stream);
                self.stats.retire_stream(id);
                self.load.fetch_sub(1, Ordering::Relaxed);
                self.free_slots.push(slot);
                self.pending.retain(|t| t.0 >> 2 != slot);
                if let Some(armed) = self.armed.get_mut(slot) {
                    *armed = 0;
                }
                tracing::debug!(stream = %id, "media stream stopped");
            }
        }
    }

    fn housekeeping(&mut self, now: Instant) {
        for stream in self.streams.iter_mut().flatten() {
            let failures = stream.counters.dropped_count(DropReason::AuthFailed);
            if failures > stream.auth_failures_reported {
                let event = MediaEvent::AuthFailures {
                    stream: stream.id,
                    new: failures - stream.auth_failures_reported,
                    total: failures,
                };
                stream.auth_failures_reported = failures;
                send_event(&self.events, &self.stats, event);
            }
            if stream.on_hold {
                continue;
            }
            for (i, side) in [Side::Phone, Side::Pbx].into_iter().enumerate() {
                let silent = now.saturating_duration_since(stream.last_heard[i]) >= self.timeout;
                if silent && !stream.timeout_reported[i] {
                    stream.timeout_reported[i] = true;
                    stream.counters.timed_out();
                    send_event(
                        &self.events,
                        &self.stats,
                        MediaEvent::Timeout {
                            stream: stream.id,
                            side,
                        },
                    );
                } else if !silent {
                    stream.timeout_reported[i] = false;
                }
            }
        }
    }
}

fn send_event(events: &tokio_mpsc::Sender<MediaEvent>, stats: &MediaStats, event: MediaEvent) {
    match events.try_send(event) {
        Ok(()) | Err(tokio_mpsc::error::TrySendError::Closed(_)) => {}
        Err(tokio_mpsc::error::TrySendError::Full(_)) => stats.event_lost(),
    }
}
