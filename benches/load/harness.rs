//! End-to-end load harness for the media relay, over loopback only, bounded in time and in
//! packet count. Shared by `benches/load/main.rs` (the load tool) and `benches/relay.rs`.
//!
//! Per stream: a "phone" socket that sends SRTP (protected with the srtp engine) to the relay's
//! phone-side port and receives SRTP back, and a "PBX" socket that sends plain RTP to the
//! relay's PBX-side port and receives plain RTP. One generator thread paces every stream at
//! `pps` packets/s per direction, phases spread evenly over the packet interval and sent in
//! `slot` steps; one sink thread (its own epoll) counts what comes out and reads the send time
//! the generator wrote into the RTP timestamp field (µs since start; that field is not
//! encrypted by SRTP) to get the latency through the relay.
//!
//! CPU time is read per relay worker thread (`media-worker-N`) from
//! `/proc/self/task/<tid>/stat` (utime + stime), and context switches (= wake-ups) from
//! `/proc/self/task/<tid>/status`, so generator and sink costs are not charged to the relay.

#![allow(dead_code)]

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use mio::{Interest, Poll, Token};
use pbx_edge::config::MediaIo;
use pbx_edge::media::control::PeerSpec;
use pbx_edge::media::ClockRates;
use pbx_edge::media::{
    MediaControl, RelaySettings, SrtpParams, StreamHandle, StreamSpec, TransformSpec,
};
use pbx_edge::srtp::key::MasterKey;
use pbx_edge::srtp::suite::CryptoSuite;
use pbx_edge::srtp::{ContextOptions, SrtpContext};

#[path = "common.rs"]
pub mod common;

use common::{
    baseline_forwarder, baseline_forwarder_batched, percentile, poll_until, threads_cpu,
    udp_rcvbuf_errors, write_rtp, ThreadsCpu,
};

const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
/// Hard cap on packets a run may send per direction (bounded runs).
pub const MAX_PACKETS_PER_DIRECTION: u64 = 20_000_000;

#[derive(Debug, Clone)]
pub struct LoadConfig {
    pub streams: usize,
    /// Packets per second per stream per direction.
    pub pps: u32,
    /// Measured window (after warm-up).
    pub secs: f64,
    pub warmup: Duration,
    pub workers: usize,
    pub coalesce: Duration,
    /// SRTP on the phone side (false = plain relay, the "no protection" baseline).
    pub srtp: bool,
    /// Generator pacing step.
    pub slot: Duration,
    pub port_min: u16,
    /// RTP payload bytes (160 = G.711 20 ms).
    pub payload: usize,
    /// Replace the relay by a bare forwarder (recv → send, same threading and coalescing, no
    /// SRTP, latching or counters): the kernel + epoll floor under the same conditions.
    pub baseline: bool,
    /// The relay's socket I/O (`media.io`); with `baseline`, `Batched` makes the bare
    /// forwarder batched too (io_uring, the relay's approach: the "bare batched forwarder").
    pub io: MediaIo,
    /// No relay at all: the generator sends straight to the sink sockets (latency floor of
    /// generator + kernel + sink, to subtract from the relay's end-to-end latency).
    pub direct: bool,
}

impl Default for LoadConfig {
    fn default() -> Self {
        LoadConfig {
            streams: 500,
            pps: 50,
            secs: 10.0,
            warmup: Duration::from_secs(1),
            workers: 1,
            coalesce: Duration::from_micros(500),
            srtp: true,
            slot: Duration::from_micros(100),
            port_min: 10000,
            payload: 160,
            baseline: false,
            io: MediaIo::Auto,
            direct: false,
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct Report {
    pub sent: [u64; 2],
    pub received: [u64; 2],
    /// Packets relayed by the relay during the measured window (both directions).
    pub window_packets: u64,
    pub window_secs: f64,
    /// Relay worker threads' CPU time during the window.
    pub worker_cpu: Duration,
    /// User-space part of `worker_cpu`.
    pub worker_user_cpu: Duration,
    /// Whole process CPU time during the window (includes generator and sink).
    pub process_cpu: Duration,
    /// Voluntary context switches of the worker threads during the window (= wake-ups).
    pub worker_voluntary_switches: u64,
    pub worker_involuntary_switches: u64,
    /// The relay's own wake-up counter during the window.
    pub relay_wakeups: u64,
    pub latency_p50_us: u32,
    pub latency_p99_us: u32,
    pub latency_max_us: u32,
    pub dropped_by_relay: u64,
    /// Relay drops by reason label (non-zero only).
    pub drop_reasons: Vec<(&'static str, u64)>,
    /// Kernel UDP receive-buffer overflows on the whole machine during the run
    /// (`/proc/net/snmp` Udp RcvbufErrors): where packets are lost when a thread is starved.
    pub kernel_rcvbuf_errors: u64,
}

impl Report {
    pub fn lost(&self) -> u64 {
        (self.sent[0] - self.received[0].min(self.sent[0]))
            + (self.sent[1] - self.received[1].min(self.sent[1]))
    }

    pub fn cpu_per_packet_us(&self) -> f64 {
        self.worker_cpu.as_secs_f64() * 1e6 / self.window_packets.max(1) as f64
    }

    pub fn process_cpu_per_packet_us(&self) -> f64 {
        self.process_cpu.as_secs_f64() * 1e6 / self.window_packets.max(1) as f64
    }

    pub fn wakeups_per_packet(&self) -> f64 {
        self.worker_voluntary_switches as f64 / self.window_packets.max(1) as f64
    }

    pub fn relay_pps(&self) -> f64 {
        self.window_packets as f64 / self.window_secs.max(1e-9)
    }

    pub fn print(&self, label: &str) {
        println!(
            "{label}: relayed {:.0} pkt/s (both directions) | sent {:?} recv {:?} lost {} \
             relay-drops {} | worker CPU {:.2} us/pkt (user {:.2}, kernel {:.2}; whole process {:.2}) | wake-ups/pkt \
             {:.3} (ctx-switch), relay loop wake-ups/pkt {:.3}, involuntary {} | latency p50 \
             {} us p99 {} us max {} us | relay drop reasons {:?}, kernel rcvbuf drops {}",
            self.relay_pps(),
            self.sent,
            self.received,
            self.lost(),
            self.dropped_by_relay,
            self.cpu_per_packet_us(),
            self.worker_user_cpu.as_secs_f64() * 1e6 / self.window_packets.max(1) as f64,
            (self.worker_cpu.saturating_sub(self.worker_user_cpu)).as_secs_f64() * 1e6
                / self.window_packets.max(1) as f64,
            self.process_cpu_per_packet_us(),
            self.wakeups_per_packet(),
            self.relay_wakeups as f64 / self.window_packets.max(1) as f64,
            self.worker_involuntary_switches,
            self.latency_p50_us,
            self.latency_p99_us,
            self.latency_max_us,
            self.drop_reasons,
            self.kernel_rcvbuf_errors,
        );
    }
}

fn key(seed: u32, salt: u8) -> MasterKey {
    let mut k = [0u8; 16];
    k[..4].copy_from_slice(&seed.to_be_bytes());
    k[4] = salt;
    MasterKey::new(CryptoSuite::AesCm128HmacSha1_80, &k, &[salt; 14]).expect("key length")
}

struct Endpoint {
    phone: UdpSocket,
    pbx: UdpSocket,
    relay_phone: SocketAddr,
    relay_pbx: SocketAddr,
    phone_tx: Option<SrtpContext>,
    ssrc: u32,
    seq: u16,
}

fn socket() -> UdpSocket {
    let s = UdpSocket::bind((LOOPBACK, 0)).expect("bind loopback");
    s.set_nonblocking(true).expect("nonblocking");
    s
}

/// Runs one bounded load run.
pub fn run(cfg: &LoadConfig) -> Report {
    let rcvbuf_errors_before = udp_rcvbuf_errors();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let pairs = u16::try_from(cfg.streams * 2 + 64).expect("stream count");
    let settings = RelaySettings {
        phone_bind: LOOPBACK,
        pbx_bind: LOOPBACK,
        port_min: cfg.port_min,
        port_max: cfg.port_min + pairs * 2 - 1,
        timeout: Duration::from_secs(600),
        workers: cfg.workers,
        coalesce: cfg.coalesce,
        // Marked as deployed: setting the DSCP costs nothing per packet.
        dscp: pbx_edge::qos::DEFAULT_MEDIA_DSCP,
        io: cfg.io,
        ..RelaySettings::default()
    };
    let registry = prometheus::Registry::new();
    let (events_tx, mut events_rx) = tokio::sync::mpsc::channel(65536);
    let control = MediaControl::new(settings, &registry, events_tx).expect("relay");
    if !cfg.baseline && !cfg.direct {
        let io = if control.io_batched() {
            "batched (io_uring)"
        } else {
            "per-packet"
        };
        println!("relay I/O: {io}");
    }

    let mut endpoints = Vec::with_capacity(cfg.streams);
    let mut handles: Vec<StreamHandle> = Vec::with_capacity(cfg.streams);
    let mut baseline_pairs = Vec::new();
    for i in 0..cfg.streams {
        let phone = socket();
        let pbx = socket();
        let phone_key = key(i as u32, 1);
        let edge_key = key(i as u32, 2);
        let (relay_phone, relay_pbx) = if cfg.direct {
            (
                pbx.local_addr().expect("addr"),
                phone.local_addr().expect("addr"),
            )
        } else if cfg.baseline {
            let (a, b) = (socket(), socket());
            let addrs = (a.local_addr().expect("addr"), b.local_addr().expect("addr"));
            baseline_pairs.push((
                a,
                phone.local_addr().expect("addr"),
                b,
                pbx.local_addr().expect("addr"),
            ));
            addrs
        } else {
            let (up, down) = if cfg.srtp {
                (
                    TransformSpec::Srtp(SrtpParams::new(phone_key.clone())),
                    TransformSpec::Srtp(SrtpParams::new(edge_key)),
                )
            } else {
                (TransformSpec::Plain, TransformSpec::Plain)
            };
            let spec = StreamSpec {
                // The clock-rate table a PCMU call's SDP gives (`a=rtpmap:0 PCMU/8000`).
                phone: PeerSpec {
                    clock_rates: ClockRates::new([(0, 8000)]),
                    ..PeerSpec::new(phone.local_addr().expect("addr"))
                },
                pbx: PeerSpec {
                    clock_rates: ClockRates::new([(0, 8000)]),
                    ..PeerSpec::new(pbx.local_addr().expect("addr"))
                },
                pbx_host: LOOPBACK,
                phone_to_pbx: up,
                pbx_to_phone: down,
            };
            let handle = runtime.block_on(control.start(spec)).expect("start stream");
            let addrs = (handle.phone_local().rtp, handle.pbx_local().rtp);
            handles.push(handle);
            addrs
        };
        endpoints.push(Endpoint {
            relay_phone,
            relay_pbx,
            phone,
            pbx,
            phone_tx: cfg
                .srtp
                .then(|| SrtpContext::new(&phone_key, &ContextOptions::default()).expect("ctx")),
            ssrc: 0x1000_0000 + i as u32,
            seq: 1,
        });
    }
    let stop_baseline = Arc::new(AtomicBool::new(false));
    let (relay, baseline) = if cfg.baseline || cfg.direct {
        let packets = Arc::new(AtomicU64::new(0));
        let wakeups = Arc::new(AtomicU64::new(0));
        let (stop, p, w, coalesce) = (
            stop_baseline.clone(),
            packets.clone(),
            wakeups.clone(),
            cfg.coalesce,
        );
        let batched = cfg.io == MediaIo::Batched;
        let thread = cfg.baseline.then(|| {
            thread::Builder::new()
                .name("media-worker-base".into())
                .spawn(move || {
                    if batched {
                        baseline_forwarder_batched(baseline_pairs, coalesce, stop, p, w)
                    } else {
                        baseline_forwarder(baseline_pairs, coalesce, stop, p, w)
                    }
                })
                .expect("baseline thread")
        });
        (Relay::Baseline { packets, wakeups }, thread)
    } else {
        (Relay::Edge(control.clone()), None)
    };

    // Sink: one epoll over every endpoint socket.
    let base = Instant::now();
    let stop_sink = Arc::new(AtomicBool::new(false));
    let expected = (f64::from(cfg.pps)
        * cfg.streams as f64
        * (cfg.secs + cfg.warmup.as_secs_f64() + 1.0)) as usize;
    let sink_sockets: Vec<(UdpSocket, UdpSocket)> = endpoints
        .iter()
        .map(|e| {
            (
                e.phone.try_clone().expect("clone"),
                e.pbx.try_clone().expect("clone"),
            )
        })
        .collect();
    let sink = {
        let stop = stop_sink.clone();
        thread::Builder::new()
            .name("load-sink".into())
            .spawn(move || sink(sink_sockets, base, stop, expected.min(40_000_000)))
            .expect("sink thread")
    };

    // Generator: paces every stream; phases spread over the packet interval.
    let total_secs = cfg.warmup.as_secs_f64() + cfg.secs;
    let per_stream = ((f64::from(cfg.pps) * total_secs) as u64)
        .min(MAX_PACKETS_PER_DIRECTION / cfg.streams.max(1) as u64);
    let period = Duration::from_secs_f64(1.0 / f64::from(cfg.pps));
    let gen_cfg = cfg.clone();
    let window = Arc::new(std::sync::Mutex::new(None::<WindowStart>));
    let control_for_gen = relay.clone();
    let window_for_gen = window.clone();
    let generator = thread::Builder::new()
        .name("load-gen".into())
        .spawn(move || {
            generate(
                endpoints,
                &gen_cfg,
                per_stream,
                period,
                base,
                &control_for_gen,
                &window_for_gen,
            )
        })
        .expect("generator thread");
    let (sent, window_end) = generator.join().expect("generator");
    // Let in-flight packets arrive (bounded).
    thread::sleep(Duration::from_millis(300));
    stop_sink.store(true, Ordering::Relaxed);
    let (received, mut latencies) = sink.join().expect("sink");
    while events_rx.try_recv().is_ok() {}

    let start = window.lock().expect("window").take().unwrap_or_default();
    let mut report = Report {
        sent,
        received,
        ..Report::default()
    };
    report.window_packets = window_end.packets.saturating_sub(start.packets);
    report.window_secs = window_end
        .at
        .duration_since(start.at.min(window_end.at))
        .as_secs_f64();
    let worker = window_end.worker.since(&start.worker);
    report.worker_cpu = worker.cpu;
    report.worker_user_cpu = worker.user;
    report.process_cpu = window_end.process.since(&start.process).cpu;
    report.worker_voluntary_switches = worker.voluntary;
    report.worker_involuntary_switches = worker.involuntary;
    report.relay_wakeups = window_end.wakeups - start.wakeups;
    report.dropped_by_relay = relay.dropped();
    report.kernel_rcvbuf_errors = udp_rcvbuf_errors().saturating_sub(rcvbuf_errors_before);
    if let Relay::Edge(c) = &relay {
        let t = c.totals();
        report.drop_reasons = pbx_edge::media::stats::DropReason::ALL
            .iter()
            .map(|r| (r.label(), t.dropped(*r)))
            .filter(|(_, n)| *n > 0)
            .collect();
    }
    stop_baseline.store(true, Ordering::Relaxed);
    if let Some(thread) = baseline {
        thread.join().expect("baseline forwarder");
    }
    latencies.sort_unstable();
    report.latency_p50_us = percentile(&latencies, 0.50);
    report.latency_p99_us = percentile(&latencies, 0.99);
    report.latency_max_us = latencies.last().copied().unwrap_or(0);
    for h in handles {
        runtime.block_on(h.stop()).expect("stop");
    }
    report
}

#[derive(Debug, Clone)]
struct WindowStart {
    at: Instant,
    packets: u64,
    wakeups: u64,
    worker: ThreadsCpu,
    process: ThreadsCpu,
}

impl Default for WindowStart {
    fn default() -> Self {
        WindowStart {
            at: Instant::now(),
            packets: 0,
            wakeups: 0,
            worker: ThreadsCpu::default(),
            process: ThreadsCpu::default(),
        }
    }
}

/// What is under load: the media relay, or the bare-forwarder baseline.
#[derive(Clone)]
enum Relay {
    Edge(MediaControl),
    Baseline {
        packets: Arc<AtomicU64>,
        wakeups: Arc<AtomicU64>,
    },
}

impl Relay {
    fn packets(&self) -> u64 {
        match self {
            Relay::Edge(c) => {
                let t = c.totals();
                t.phone_to_pbx_packets + t.pbx_to_phone_packets
            }
            Relay::Baseline { packets, .. } => packets.load(Ordering::Relaxed),
        }
    }

    fn wakeups(&self) -> u64 {
        match self {
            Relay::Edge(c) => c.wakeups(),
            Relay::Baseline { wakeups, .. } => wakeups.load(Ordering::Relaxed),
        }
    }

    fn dropped(&self) -> u64 {
        match self {
            Relay::Edge(c) => c.totals().dropped.iter().sum(),
            Relay::Baseline { .. } => 0,
        }
    }
}

fn snapshot(relay: &Relay) -> WindowStart {
    WindowStart {
        at: Instant::now(),
        packets: relay.packets(),
        wakeups: relay.wakeups(),
        worker: threads_cpu("media-worker-"),
        process: threads_cpu(""),
    }
}

fn generate(
    mut endpoints: Vec<Endpoint>,
    cfg: &LoadConfig,
    per_stream: u64,
    period: Duration,
    base: Instant,
    control: &Relay,
    window: &std::sync::Mutex<Option<WindowStart>>,
) -> ([u64; 2], WindowStart) {
    let n = endpoints.len().max(1) as u32;
    let start = Instant::now();
    let mut next: Vec<Instant> = (0..n).map(|i| start + period * i / n).collect();
    let mut count = vec![0u64; endpoints.len()];
    let mut sent = [0u64; 2];
    let mut buf = vec![0u8; 12 + cfg.payload + 64];
    let warm_until = start + cfg.warmup;
    let mut window_started = false;
    let hard_deadline =
        start + cfg.warmup + Duration::from_secs_f64(cfg.secs) + Duration::from_secs(5);
    loop {
        let now = Instant::now();
        if !window_started && now >= warm_until {
            *window.lock().expect("window") = Some(snapshot(control));
            window_started = true;
        }
        let mut active = false;
        let mut earliest = now + Duration::from_secs(1);
        for (i, e) in endpoints.iter_mut().enumerate() {
            if count[i] >= per_stream {
                continue;
            }
            active = true;
            while next[i] <= now && count[i] < per_stream {
                let stamp = base.elapsed().as_micros() as u32;
                // Phone → relay (SRTP).
                let len = 12 + cfg.payload;
                write_rtp(&mut buf, e.seq, stamp, e.ssrc);
                let wire = match e.phone_tx.as_mut() {
                    Some(ctx) => ctx.protect_rtp(&mut buf, len).expect("protect"),
                    None => len,
                };
                if e.phone.send_to(&buf[..wire], e.relay_phone).is_ok() {
                    sent[0] += 1;
                }
                // PBX → relay (plain).
                write_rtp(&mut buf, e.seq, stamp, e.ssrc ^ 0x8000_0000);
                if e.pbx.send_to(&buf[..len], e.relay_pbx).is_ok() {
                    sent[1] += 1;
                }
                e.seq = e.seq.wrapping_add(1);
                count[i] += 1;
                next[i] += period;
            }
            earliest = earliest.min(next[i]);
        }
        if !active || now > hard_deadline {
            break;
        }
        // Sleep to the next slot boundary (or the next due packet, if later).
        let wake = earliest.max(now + cfg.slot);
        thread::sleep(wake.saturating_duration_since(Instant::now()));
    }
    (sent, snapshot(control))
}

fn sink(
    sockets: Vec<(UdpSocket, UdpSocket)>,
    base: Instant,
    stop: Arc<AtomicBool>,
    capacity: usize,
) -> ([u64; 2], Vec<u32>) {
    let mut poll = Poll::new().expect("poll");
    let mut socks: Vec<mio::net::UdpSocket> = Vec::with_capacity(sockets.len() * 2);
    let mut ids: HashMap<usize, usize> = HashMap::new();
    for (phone, pbx) in sockets {
        for s in [phone, pbx] {
            let mut m = mio::net::UdpSocket::from_std(s);
            let token = socks.len();
            poll.registry()
                .register(&mut m, Token(token), Interest::READABLE)
                .expect("register");
            ids.insert(token, token);
            socks.push(m);
        }
    }
    let mut received = [0u64; 2];
    let mut latencies = Vec::with_capacity(capacity);
    let mut buf = [0u8; 2048];
    poll_until(&mut poll, &stop, |events| {
        for event in events.iter() {
            let token = event.token().0;
            let Some(sock) = socks.get(token) else {
                continue;
            };
            // Even tokens: phone sockets (PBX → phone direction); odd: PBX sockets.
            let direction = if token % 2 == 0 { 1 } else { 0 };
            while let Ok((n, _)) = sock.recv_from(&mut buf) {
                if n < 12 {
                    continue;
                }
                received[direction] += 1;
                let stamp = u32::from_be_bytes([buf[4], buf[5], buf[6], buf[7]]);
                let now = base.elapsed().as_micros() as u32;
                if latencies.len() < latencies.capacity() {
                    latencies.push(now.wrapping_sub(stamp));
                }
            }
        }
    });
    (received, latencies)
}
