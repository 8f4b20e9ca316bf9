//! The media half of the call load tool: paces G.711 RTP (12-byte header + 160-byte payload,
//! 20 ms, 50 packets/s each way) for every call a control path set up, and checks every packet
//! that comes out of the target.
//!
//! Per call: the phone sends SRTP protected with its own SDES key (`phone_sends_with`) to the
//! target's phone-side address; the PBX sends plain RTP to the target's PBX-side address. The
//! sinks (one epoll each) check EVERY packet: it must come from the address the call was sent
//! to (the target answers from the port it announced), the PBX side must get plain RTP, the
//! phone side SRTP that verifies and decrypts with the target's key (`phone_receives_with`;
//! an authentication failure is counted, never skipped), each with the SSRC the other end sent,
//! a sequence number that was sent, and the exact payload sent with it. Duplicates, late
//! (reordered) packets and losses are counted per direction.
//!
//! Latency: the generator writes its send time (µs since the run's start) into the RTP
//! timestamp field, which SRTP authenticates but does not encrypt (RFC 3711 §3.1), and which
//! neither rtpengine nor the edge rewrites; the sink subtracts it from its receive time.
//!
//! Bounded: a warm-up then a measured window, at most [`MAX_PACKETS_PER_STREAM`] packets per
//! stream and direction (so a sequence number never wraps within a run), and a hard deadline.

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use mio::{Interest, Poll, Token};
use pbx_edge::srtp::{ContextOptions, CryptoAttribute, CryptoSuite, MasterKey, SrtpContext};
use pbx_edge::srtp::{KeyParams, SrtpError};

use crate::common::{current_thread_cpu, percentile, poll_until, udp_rcvbuf_errors, write_rtp};
use crate::legs::{CallMedia, SdesKey};

/// RTP payload of 20 ms G.711.
pub const PAYLOAD_LEN: usize = 160;
/// RTP header (no CSRC, no extension) + payload: 172 bytes.
pub const RTP_LEN: usize = 12 + PAYLOAD_LEN;
/// Packets per second per stream and direction (20 ms packetisation).
pub const PPS: u32 = 50;
/// Per stream and direction: sequence numbers start at 1 and never wrap within a run.
pub const MAX_PACKETS_PER_STREAM: u64 = 60_000;
/// Latency samples kept in all (4 bytes each); beyond that packets are still checked.
const MAX_LATENCY_SAMPLES: usize = 20_000_000;
/// RTP payload type 0 (PCMU), the G.711 the SDPs offer.
const PT_PCMU: u8 = 0;

/// What the target does to the packets between the generator's two ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transform {
    /// The target terminates SRTP (rtpengine, the edge): the PBX gets plain RTP, the phone gets
    /// SRTP protected with the target's key.
    Relayed,
    /// Bytes go through unchanged (the bare forwarder, or no relay at all): the PBX sink
    /// verifies the phone's SRTP with the phone's key, and the PBX's plain RTP reaches the
    /// phone as it was sent. The same crypto work per packet as `Relayed` for the generator.
    Passthrough,
}

#[derive(Debug, Clone)]
pub struct MediaConfig {
    /// Measured window after the warm-up.
    pub secs: f64,
    pub warmup: Duration,
    pub transform: Transform,
    /// Generator threads (calls spread over them).
    pub gen_threads: usize,
    /// Sink threads (calls spread over them).
    pub sink_threads: usize,
    /// Generator pacing step.
    pub slot: Duration,
    /// How long the sinks keep reading after the last packet was sent.
    pub drain: Duration,
}

impl Default for MediaConfig {
    fn default() -> Self {
        MediaConfig {
            secs: 10.0,
            warmup: Duration::from_secs(1),
            transform: Transform::Relayed,
            gen_threads: 1,
            sink_threads: 1,
            slot: Duration::from_micros(200),
            drain: Duration::from_millis(500),
        }
    }
}

/// Per direction: index 0 = phone → PBX, 1 = PBX → phone.
#[derive(Debug, Clone, Default)]
pub struct MediaReport {
    pub sent: [u64; 2],
    /// Distinct packets received that passed every check.
    pub received: [u64; 2],
    pub duplicates: [u64; 2],
    /// Received after a later sequence number of the same stream (still counted as received).
    pub reordered: [u64; 2],
    /// Phone side: SRTP authentication failures (wrong key, corrupted packet).
    pub auth_failures: u64,
    /// Packets failing another check: foreign source, not RTP, wrong SSRC, a sequence number
    /// never sent, wrong length or payload, undecryptable for another reason.
    pub bad: [u64; 2],
    /// Generator sends refused by the kernel (not counted in `sent`).
    pub send_errors: u64,
    /// Packets received (checked, distinct) whose send time lies in the measured window.
    pub window_packets: u64,
    pub window_secs: f64,
    /// The target's CPU time (utime + stime) over the window, when it can be measured.
    pub target_cpu: Option<Duration>,
    /// The generator's and the sinks' own CPU time over the whole run, and how long it ran
    /// (first send to the end of the drain): near one core per thread, they are the limit.
    pub generator_cpu: Duration,
    pub sink_cpu: Duration,
    pub run_secs: f64,
    pub latency_p50_us: u32,
    pub latency_p99_us: u32,
    pub latency_max_us: u32,
    /// Machine-wide UDP receive-buffer drops during the run.
    pub rcvbuf_errors: u64,
}

impl MediaReport {
    pub fn lost(&self) -> u64 {
        (0..2)
            .map(|d| self.sent[d].saturating_sub(self.received[d]))
            .sum()
    }

    /// Every check passed and nothing was lost.
    pub fn clean(&self) -> bool {
        self.lost() == 0
            && self.auth_failures == 0
            && self.bad == [0, 0]
            && self.duplicates == [0, 0]
            && self.send_errors == 0
    }

    pub fn relayed_pps(&self) -> f64 {
        self.window_packets as f64 / self.window_secs.max(1e-9)
    }

    /// Target CPU per relayed packet in µs.
    pub fn target_cpu_per_packet_us(&self) -> Option<f64> {
        self.target_cpu
            .map(|c| c.as_secs_f64() * 1e6 / self.window_packets.max(1) as f64)
    }
}

/// A random SDES key for a generator end (AES_CM_128_HMAC_SHA1_80), as an `a=crypto` line
/// carries it.
pub fn random_sdes_key() -> Result<SdesKey, String> {
    let rng = ring::rand::SystemRandom::new();
    let mut fill_error = None;
    let key = MasterKey::generate(CryptoSuite::AesCm128HmacSha1_80, |buf| {
        if let Err(e) = ring::rand::SecureRandom::fill(&rng, buf) {
            fill_error = Some(e);
        }
    });
    if let Some(e) = fill_error {
        return Err(format!("random key: {e}"));
    }
    let attribute = CryptoAttribute {
        tag: 1,
        suite: key.suite(),
        keys: vec![KeyParams::new(key)],
        session_params: Default::default(),
    };
    // "1 AES_CM_128_HMAC_SHA1_80 inline:..." → suite and key-params.
    let value = attribute.to_sdp_value();
    let mut fields = value.split_ascii_whitespace().skip(1);
    match (fields.next(), fields.next()) {
        (Some(suite), Some(key_params)) => Ok(SdesKey {
            suite: suite.to_string(),
            key_params: key_params.to_string(),
        }),
        _ => Err(format!("unexpected a=crypto value {value:?}")),
    }
}

/// An SRTP context for one SDES key, with the options its line asks for.
pub fn srtp_context(key: &SdesKey) -> Result<SrtpContext, String> {
    let attribute = CryptoAttribute::parse(&format!("1 {} {}", key.suite, key.key_params))
        .map_err(|e| format!("a=crypto {}: {e}", key.suite))?;
    let first = attribute
        .keys
        .first()
        .ok_or_else(|| "a=crypto without a key".to_string())?;
    SrtpContext::new(
        &first.master_key,
        &ContextOptions::from_sdes(first, &attribute.session_params),
    )
    .map_err(|e| format!("SRTP context: {e}"))
}

/// The SSRCs the generator sends with: distinct per call and per end.
fn phone_ssrc(call: usize) -> u32 {
    0x1000_0000 + call as u32
}

fn pbx_ssrc(call: usize) -> u32 {
    0x2000_0000 + call as u32
}

/// The payload every packet carries: a function of its stream and sequence number, so a
/// payload delivered to the wrong stream, or with the wrong packet's bytes, is seen.
fn fill_payload(payload: &mut [u8], ssrc: u32, seq: u16) {
    let [s0, s1] = seq.to_be_bytes();
    let mix = (ssrc as u8) ^ s0;
    for (k, b) in payload.iter_mut().enumerate() {
        *b = (k as u8).wrapping_mul(31).wrapping_add(s1) ^ mix;
    }
}

fn payload_matches(payload: &[u8], ssrc: u32, seq: u16) -> bool {
    let [s0, s1] = seq.to_be_bytes();
    let mix = (ssrc as u8) ^ s0;
    payload.len() == PAYLOAD_LEN
        && payload
            .iter()
            .enumerate()
            .all(|(k, b)| *b == (k as u8).wrapping_mul(31).wrapping_add(s1) ^ mix)
}

/// One end's sending half.
struct TxEnd {
    socket: UdpSocket,
    target: SocketAddr,
    srtp: Option<SrtpContext>,
    ssrc: u32,
}

struct TxCall {
    index: usize,
    phone: TxEnd,
    pbx: TxEnd,
}

/// One end's receiving half: what it must get and what it got.
struct RxEnd {
    socket: mio::net::UdpSocket,
    /// The target's address on this side: every packet must come from it.
    source: SocketAddr,
    srtp: Option<SrtpContext>,
    /// The SSRC the other end sends with.
    ssrc: u32,
    seen: Seen,
}

/// Which sequence numbers of one stream arrived (seq 1.. → bit 0..).
struct Seen {
    bits: Vec<u64>,
    /// Packets sent per stream: sequence numbers above it were never sent.
    packets: u64,
    highest: Option<u64>,
}

enum Arrival {
    New { late: bool },
    Duplicate,
    NeverSent,
}

impl Seen {
    fn new(packets: u64) -> Seen {
        Seen {
            bits: vec![0; packets.div_ceil(64) as usize],
            packets,
            highest: None,
        }
    }

    fn mark(&mut self, seq: u16) -> Arrival {
        let Some(index) = u64::from(seq).checked_sub(1) else {
            return Arrival::NeverSent;
        };
        if index >= self.packets {
            return Arrival::NeverSent;
        }
        let (word, bit) = ((index / 64) as usize, 1u64 << (index % 64));
        let Some(w) = self.bits.get_mut(word) else {
            return Arrival::NeverSent;
        };
        if *w & bit != 0 {
            return Arrival::Duplicate;
        }
        *w |= bit;
        let late = self.highest.is_some_and(|h| index < h);
        if !late {
            self.highest = Some(index);
        }
        Arrival::New { late }
    }
}

#[derive(Default)]
struct SinkResult {
    received: [u64; 2],
    duplicates: [u64; 2],
    reordered: [u64; 2],
    auth_failures: u64,
    bad: [u64; 2],
    window_packets: u64,
    latencies: Vec<u32>,
    cpu: Duration,
}

/// Runs the media of `calls` for one bounded run. `target_cpu` reads the target's CPU time
/// (None where there is no target process or thread to measure); it is read at the start and
/// at the end of the measured window.
pub fn run(
    calls: Vec<CallMedia>,
    cfg: &MediaConfig,
    target_cpu: &dyn Fn() -> Option<Duration>,
) -> Result<MediaReport, String> {
    let rcvbuf_before = udp_rcvbuf_errors();
    let n = calls.len();
    let total_secs = cfg.warmup.as_secs_f64() + cfg.secs;
    let per_stream = ((f64::from(PPS) * total_secs).ceil() as u64).min(MAX_PACKETS_PER_STREAM);

    let mut tx_calls = Vec::with_capacity(n);
    let mut rx_ends = Vec::with_capacity(n);
    for (index, call) in calls.into_iter().enumerate() {
        let call_id = call.call_id.clone();
        let (tx, rx) = split_call(index, call, cfg.transform, per_stream)
            .map_err(|e| format!("call {call_id}: {e}"))?;
        tx_calls.push(tx);
        rx_ends.push(rx);
    }

    let base = Instant::now();
    let stop_sinks = Arc::new(AtomicBool::new(false));
    let window_start_us = cfg.warmup.as_micros() as u32;
    let window_end_us = Arc::new(std::sync::atomic::AtomicU32::new(u32::MAX));
    let sink_threads = cfg.sink_threads.clamp(1, n.max(1));
    let latency_cap = (MAX_LATENCY_SAMPLES / sink_threads)
        .min((2 * per_stream as usize * n) / sink_threads + 1024);
    let mut sinks = Vec::new();
    for (t, chunk) in chunks(rx_ends, sink_threads).into_iter().enumerate() {
        let stop = stop_sinks.clone();
        let window_end = window_end_us.clone();
        let handle = thread::Builder::new()
            .name(format!("call-sink-{t}"))
            .spawn(move || {
                sink(
                    chunk,
                    base,
                    &stop,
                    window_start_us,
                    &window_end,
                    latency_cap,
                )
            })
            .map_err(|e| format!("sink thread: {e}"))?;
        sinks.push(handle);
    }

    let period = Duration::from_secs_f64(1.0 / f64::from(PPS));
    let deadline = base + cfg.warmup + Duration::from_secs_f64(cfg.secs) + Duration::from_secs(5);
    let gen_threads = cfg.gen_threads.clamp(1, n.max(1));
    let mut generators = Vec::new();
    for (t, chunk) in chunks(tx_calls, gen_threads).into_iter().enumerate() {
        let slot = cfg.slot;
        let handle = thread::Builder::new()
            .name(format!("call-gen-{t}"))
            .spawn(move || generate(chunk, n, per_stream, period, slot, base, deadline))
            .map_err(|e| format!("generator thread: {e}"))?;
        generators.push(handle);
    }

    thread::sleep((base + cfg.warmup).saturating_duration_since(Instant::now()));
    let (window_from, cpu_from) = (Instant::now(), target_cpu());
    let mut report = MediaReport::default();
    for g in generators {
        let (sent, errors, cpu) = g.join().map_err(|_| "generator thread panicked")?;
        report.generator_cpu += cpu;
        report.sent[0] += sent[0];
        report.sent[1] += sent[1];
        report.send_errors += errors;
    }
    let (window_to, cpu_to) = (Instant::now(), target_cpu());
    window_end_us.store(
        window_to.duration_since(base).as_micros() as u32,
        Ordering::Relaxed,
    );
    report.window_secs = window_to.duration_since(window_from).as_secs_f64();
    report.target_cpu = match (cpu_from, cpu_to) {
        (Some(a), Some(b)) => Some(b.saturating_sub(a)),
        _ => None,
    };
    thread::sleep(cfg.drain);
    stop_sinks.store(true, Ordering::Relaxed);

    let mut latencies = Vec::new();
    for s in sinks {
        let r = s.join().map_err(|_| "sink thread panicked")?;
        for d in 0..2 {
            report.received[d] += r.received[d];
            report.duplicates[d] += r.duplicates[d];
            report.reordered[d] += r.reordered[d];
            report.bad[d] += r.bad[d];
        }
        report.auth_failures += r.auth_failures;
        report.sink_cpu += r.cpu;
        report.window_packets += r.window_packets;
        latencies.extend(r.latencies);
    }
    report.run_secs = base.elapsed().as_secs_f64();
    latencies.sort_unstable();
    report.latency_p50_us = percentile(&latencies, 0.50);
    report.latency_p99_us = percentile(&latencies, 0.99);
    report.latency_max_us = latencies.last().copied().unwrap_or(0);
    report.rcvbuf_errors = udp_rcvbuf_errors().saturating_sub(rcvbuf_before);
    Ok(report)
}

/// Splits `items` into `parts` chunks of near-equal size (order kept).
fn chunks<T>(items: Vec<T>, parts: usize) -> Vec<Vec<T>> {
    let parts = parts.max(1);
    let per = items.len().div_ceil(parts).max(1);
    let mut out: Vec<Vec<T>> = Vec::with_capacity(parts);
    for item in items {
        match out.last_mut() {
            Some(last) if last.len() < per => last.push(item),
            _ => out.push(vec![item]),
        }
    }
    out
}

fn split_call(
    index: usize,
    call: CallMedia,
    transform: Transform,
    per_stream: u64,
) -> Result<(TxCall, RxPair), String> {
    let clone = |s: &UdpSocket| -> Result<UdpSocket, String> {
        let c = s.try_clone().map_err(|e| format!("socket clone: {e}"))?;
        c.set_nonblocking(true)
            .map_err(|e| format!("nonblocking: {e}"))?;
        Ok(c)
    };
    let phone_tx = srtp_context(&call.phone_sends_with)?;
    // Relayed: the phone decrypts with the target's key and the PBX gets plain RTP.
    // Passthrough: the PBX end verifies the phone's own SRTP; the phone gets plain RTP.
    let (phone_rx, pbx_rx) = match transform {
        Transform::Relayed => (Some(srtp_context(&call.phone_receives_with)?), None),
        Transform::Passthrough => (None, Some(srtp_context(&call.phone_sends_with)?)),
    };
    let tx = TxCall {
        index,
        phone: TxEnd {
            socket: clone(&call.phone_socket)?,
            target: call.phone_target,
            srtp: Some(phone_tx),
            ssrc: phone_ssrc(index),
        },
        pbx: TxEnd {
            socket: clone(&call.pbx_socket)?,
            target: call.pbx_target,
            srtp: None,
            ssrc: pbx_ssrc(index),
        },
    };
    let rx = RxPair {
        phone: RxEnd {
            socket: mio::net::UdpSocket::from_std(clone(&call.phone_socket)?),
            source: call.phone_target,
            srtp: phone_rx,
            ssrc: pbx_ssrc(index),
            seen: Seen::new(per_stream),
        },
        pbx: RxEnd {
            socket: mio::net::UdpSocket::from_std(clone(&call.pbx_socket)?),
            source: call.pbx_target,
            srtp: pbx_rx,
            ssrc: phone_ssrc(index),
            seen: Seen::new(per_stream),
        },
    };
    Ok((tx, rx))
}

struct RxPair {
    phone: RxEnd,
    pbx: RxEnd,
}

/// Paces `calls` (of `total` in the run: phases spread over the packet interval by the call's
/// index) until each stream has sent `per_stream` packets or the deadline passes. Returns the
/// packets sent per direction, the sends refused, and this thread's CPU time.
fn generate(
    mut calls: Vec<TxCall>,
    total: usize,
    per_stream: u64,
    period: Duration,
    slot: Duration,
    base: Instant,
    deadline: Instant,
) -> ([u64; 2], u64, Duration) {
    let n = total.max(1) as u32;
    let mut next: Vec<Instant> = calls
        .iter()
        .map(|c| base + period * (c.index as u32 % n) / n)
        .collect();
    let mut count = vec![0u64; calls.len()];
    let mut sent = [0u64; 2];
    let mut errors = 0u64;
    let mut buf = [0u8; RTP_LEN + 64];
    loop {
        let now = Instant::now();
        let mut active = false;
        let mut earliest = now + Duration::from_secs(1);
        for (i, call) in calls.iter_mut().enumerate() {
            while count[i] < per_stream && next[i] <= now {
                // seq 1..=per_stream (≤ MAX_PACKETS_PER_STREAM < 65536: no wrap).
                let seq = (count[i] + 1) as u16;
                let stamp = base.elapsed().as_micros() as u32;
                for (d, end) in [&mut call.phone, &mut call.pbx].into_iter().enumerate() {
                    write_rtp(&mut buf, seq, stamp, end.ssrc);
                    buf[1] = PT_PCMU;
                    fill_payload(&mut buf[12..RTP_LEN], end.ssrc, seq);
                    let len = match end.srtp.as_mut() {
                        Some(ctx) => match ctx.protect_rtp(&mut buf, RTP_LEN) {
                            Ok(len) => len,
                            Err(_) => {
                                errors += 1;
                                continue;
                            }
                        },
                        None => RTP_LEN,
                    };
                    match end.socket.send_to(&buf[..len], end.target) {
                        Ok(_) => sent[d] += 1,
                        Err(_) => errors += 1,
                    }
                }
                count[i] += 1;
                next[i] += period;
            }
            if count[i] < per_stream {
                active = true;
                earliest = earliest.min(next[i]);
            }
        }
        if !active || now > deadline {
            break;
        }
        let wake = earliest.max(now + slot);
        thread::sleep(wake.saturating_duration_since(Instant::now()));
    }
    (sent, errors, current_thread_cpu())
}

/// Reads every end of `pairs` (one epoll) until `stop`, checking each packet.
fn sink(
    mut pairs: Vec<RxPair>,
    base: Instant,
    stop: &AtomicBool,
    window_start_us: u32,
    window_end_us: &std::sync::atomic::AtomicU32,
    latency_cap: usize,
) -> SinkResult {
    let mut result = SinkResult {
        latencies: Vec::with_capacity(latency_cap),
        ..SinkResult::default()
    };
    let Ok(mut poll) = Poll::new() else {
        return result;
    };
    // Token 2i: call i's phone end (PBX → phone, direction 1); 2i + 1: its PBX end.
    for (i, pair) in pairs.iter_mut().enumerate() {
        for (k, end) in [&mut pair.phone, &mut pair.pbx].into_iter().enumerate() {
            if poll
                .registry()
                .register(&mut end.socket, Token(2 * i + k), Interest::READABLE)
                .is_err()
            {
                result.bad[1 - k] += 1;
            }
        }
    }
    let mut buf = [0u8; 2048];
    poll_until(&mut poll, stop, |events| {
        for event in events.iter() {
            let token = event.token().0;
            let Some(pair) = pairs.get_mut(token / 2) else {
                continue;
            };
            let (end, direction) = if token % 2 == 0 {
                (&mut pair.phone, 1)
            } else {
                (&mut pair.pbx, 0)
            };
            while let Ok((n, from)) = end.socket.recv_from(&mut buf) {
                let now_us = base.elapsed().as_micros() as u32;
                match check(end, &mut buf[..n], from) {
                    Checked::Good { seq, stamp } => match end.seen.mark(seq) {
                        Arrival::New { late } => {
                            result.received[direction] += 1;
                            if late {
                                result.reordered[direction] += 1;
                            }
                            if stamp >= window_start_us
                                && stamp <= window_end_us.load(Ordering::Relaxed)
                            {
                                result.window_packets += 1;
                            }
                            if result.latencies.len() < latency_cap {
                                result.latencies.push(now_us.wrapping_sub(stamp));
                            }
                        }
                        Arrival::Duplicate => result.duplicates[direction] += 1,
                        Arrival::NeverSent => result.bad[direction] += 1,
                    },
                    Checked::Duplicate => result.duplicates[direction] += 1,
                    Checked::AuthFailed => result.auth_failures += 1,
                    Checked::Bad => result.bad[direction] += 1,
                }
            }
        }
    });
    result.cpu = current_thread_cpu();
    result
}

enum Checked {
    Good {
        seq: u16,
        stamp: u32,
    },
    /// Refused by the SRTP replay window (RFC 3711 §3.3.2) as already received.
    Duplicate,
    AuthFailed,
    Bad,
}

/// Source, SRTP (when this end expects it), RTP version, payload type, SSRC, length and
/// payload of one received packet.
fn check(end: &mut RxEnd, packet: &mut [u8], from: SocketAddr) -> Checked {
    if from != end.source {
        return Checked::Bad;
    }
    let len = match end.srtp.as_mut() {
        Some(ctx) => match ctx.unprotect_rtp(packet) {
            Ok(len) => len,
            Err(SrtpError::AuthFailed) => return Checked::AuthFailed,
            Err(SrtpError::Replayed) => return Checked::Duplicate,
            Err(_) => return Checked::Bad,
        },
        None => packet.len(),
    };
    if len != RTP_LEN || packet[0] != 0x80 || packet[1] & 0x7f != PT_PCMU {
        return Checked::Bad;
    }
    let seq = u16::from_be_bytes([packet[2], packet[3]]);
    let stamp = u32::from_be_bytes([packet[4], packet[5], packet[6], packet[7]]);
    let ssrc = u32::from_be_bytes([packet[8], packet[9], packet[10], packet[11]]);
    if ssrc != end.ssrc || !payload_matches(&packet[12..len], ssrc, seq) {
        return Checked::Bad;
    }
    Checked::Good { seq, stamp }
}

// Run by tests/call_load.rs. `clippy --all-targets` also builds the bench target with
// cfg(test) but, harness = false, without its #[test] functions: the helpers look unused there.
#[cfg(test)]
#[allow(dead_code, unused_imports)]
mod tests {
    use super::*;

    fn loopback() -> UdpSocket {
        UdpSocket::bind("127.0.0.1:0").expect("bind")
    }

    fn packet(ssrc: u32, seq: u16, stamp: u32) -> Vec<u8> {
        let mut buf = vec![0u8; RTP_LEN + 64];
        write_rtp(&mut buf, seq, stamp, ssrc);
        buf[1] = PT_PCMU;
        fill_payload(&mut buf[12..RTP_LEN], ssrc, seq);
        buf.truncate(RTP_LEN);
        buf
    }

    fn protect(ctx: &mut SrtpContext, plain: &[u8]) -> Vec<u8> {
        let mut buf = plain.to_vec();
        buf.resize(plain.len() + 64, 0);
        let len = ctx.protect_rtp(&mut buf, plain.len()).expect("protect");
        buf.truncate(len);
        buf
    }

    fn end(source: SocketAddr, srtp: Option<SrtpContext>, ssrc: u32) -> RxEnd {
        RxEnd {
            socket: mio::net::UdpSocket::from_std(loopback()),
            source,
            srtp,
            ssrc,
            seen: Seen::new(100),
        }
    }

    #[test]
    fn seen_tells_new_late_duplicate_and_never_sent() {
        let mut seen = Seen::new(100);
        assert!(matches!(seen.mark(5), Arrival::New { late: false }));
        assert!(matches!(seen.mark(3), Arrival::New { late: true }));
        assert!(matches!(seen.mark(6), Arrival::New { late: false }));
        assert!(matches!(seen.mark(5), Arrival::Duplicate));
        assert!(matches!(seen.mark(0), Arrival::NeverSent));
        assert!(matches!(seen.mark(101), Arrival::NeverSent));
        assert!(matches!(seen.mark(100), Arrival::New { late: false }));
    }

    #[test]
    fn srtp_end_accepts_the_target_packet_and_refuses_each_fault() {
        let target = loopback().local_addr().expect("addr");
        let key = random_sdes_key().expect("key");
        let other_key = random_sdes_key().expect("key");
        assert_ne!(key, other_key, "two random keys are distinct");
        let mut tx = srtp_context(&key).expect("ctx");
        let mut rx = end(target, Some(srtp_context(&key).expect("ctx")), 7);

        let mut good = protect(&mut tx, &packet(7, 1, 1234));
        assert!(matches!(
            check(&mut rx, &mut good.clone(), target),
            Checked::Good {
                seq: 1,
                stamp: 1234
            }
        ));
        // The same packet again: the SRTP replay window refuses it.
        assert!(matches!(
            check(&mut rx, &mut good, target),
            Checked::Duplicate
        ));
        // From another address than the target's.
        let stranger = loopback().local_addr().expect("addr");
        let mut p = protect(&mut tx, &packet(7, 2, 0));
        assert!(matches!(check(&mut rx, &mut p, stranger), Checked::Bad));
        // Protected with another key.
        let mut other = srtp_context(&other_key).expect("ctx");
        let mut p = protect(&mut other, &packet(7, 3, 0));
        assert!(matches!(
            check(&mut rx, &mut p, target),
            Checked::AuthFailed
        ));
        // A flipped bit in the ciphertext.
        let mut p = protect(&mut tx, &packet(7, 4, 0));
        p[40] ^= 1;
        assert!(matches!(
            check(&mut rx, &mut p, target),
            Checked::AuthFailed
        ));
        // Authentic, but the other stream's SSRC.
        let mut p = protect(&mut tx, &packet(8, 5, 0));
        assert!(matches!(check(&mut rx, &mut p, target), Checked::Bad));
        // Authentic, but another packet's payload.
        let mut plain = packet(7, 6, 0);
        fill_payload(&mut plain[12..], 7, 9);
        let mut p = protect(&mut tx, &plain);
        assert!(matches!(check(&mut rx, &mut p, target), Checked::Bad));
    }

    #[test]
    fn plain_end_checks_length_type_ssrc_and_payload() {
        let target = loopback().local_addr().expect("addr");
        let mut rx = end(target, None, 9);
        assert!(matches!(
            check(&mut rx, &mut packet(9, 1, 5), target),
            Checked::Good { seq: 1, stamp: 5 }
        ));
        let mut short = packet(9, 2, 5);
        short.pop();
        assert!(matches!(check(&mut rx, &mut short, target), Checked::Bad));
        let mut pt = packet(9, 3, 5);
        pt[1] = 8;
        assert!(matches!(check(&mut rx, &mut pt, target), Checked::Bad));
        let mut p = packet(9, 4, 5);
        p[RTP_LEN - 1] ^= 0x40;
        assert!(matches!(check(&mut rx, &mut p, target), Checked::Bad));
        // An SRTP packet where plain RTP is expected: the tag makes it too long.
        let mut tx = srtp_context(&random_sdes_key().expect("key")).expect("ctx");
        let mut p = protect(&mut tx, &packet(9, 5, 5));
        assert!(matches!(check(&mut rx, &mut p, target), Checked::Bad));
    }

    #[test]
    fn chunks_spread_items_in_order() {
        let parts = chunks((0..7).collect(), 3);
        assert_eq!(parts, vec![vec![0, 1, 2], vec![3, 4, 5], vec![6]]);
        assert_eq!(chunks((0..2).collect(), 4), vec![vec![0], vec![1]]);
    }

    /// A forwarder between the generator's ends that alters every 4th packet of each
    /// direction: the run must count them (auth failures on the SRTP direction, bad packets
    /// on the plain one) and deliver the rest. No timing or loss is asserted.
    #[test]
    fn run_counts_packets_a_relay_altered() {
        let (phone_side, pbx_side) = (loopback(), loopback());
        let key = random_sdes_key().expect("key");
        let call = CallMedia {
            call_id: "tamper".into(),
            phone_socket: loopback(),
            phone_target: phone_side.local_addr().expect("addr"),
            phone_sends_with: key.clone(),
            phone_receives_with: key,
            pbx_socket: loopback(),
            pbx_target: pbx_side.local_addr().expect("addr"),
        };
        let (phone, pbx) = (
            call.phone_socket.local_addr().expect("addr"),
            call.pbx_socket.local_addr().expect("addr"),
        );
        let stop = Arc::new(AtomicBool::new(false));
        let mut forwarders = Vec::new();
        for (from, to, out, dest) in [
            (&phone_side, &pbx_side, pbx, "phone"),
            (&pbx_side, &phone_side, phone, "pbx"),
        ] {
            let (from, to) = (
                from.try_clone().expect("clone"),
                to.try_clone().expect("clone"),
            );
            from.set_read_timeout(Some(Duration::from_millis(20)))
                .expect("timeout");
            let stop = stop.clone();
            forwarders.push(
                thread::Builder::new()
                    .name(format!("tamper-{dest}"))
                    .spawn(move || {
                        let (mut buf, mut n) = ([0u8; 2048], 0u64);
                        while !stop.load(Ordering::Relaxed) {
                            if let Ok((len, _)) = from.recv_from(&mut buf) {
                                n += 1;
                                if n % 4 == 0 {
                                    buf[30] ^= 0x01;
                                }
                                let _ = to.send_to(&buf[..len], out);
                            }
                        }
                    })
                    .expect("thread"),
            );
        }
        let cfg = MediaConfig {
            secs: 0.5,
            warmup: Duration::ZERO,
            transform: Transform::Passthrough,
            drain: Duration::from_millis(200),
            ..MediaConfig::default()
        };
        let report = run(vec![call], &cfg, &|| None).expect("run");
        stop.store(true, Ordering::Relaxed);
        for f in forwarders {
            f.join().expect("forwarder");
        }
        assert!(report.sent[0] >= 8 && report.sent[1] >= 8, "{report:?}");
        assert!(report.auth_failures >= 1, "{report:?}");
        assert!(report.bad[1] >= 1, "{report:?}");
        assert!(
            report.received[0] >= 1 && report.received[1] >= 1,
            "{report:?}"
        );
        assert!(!report.clean());
        assert!(report.lost() >= report.auth_failures + report.bad[1]);
    }
}
