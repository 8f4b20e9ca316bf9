//! Proves the relay worker allocates nothing per packet (issue 13 point 3): a counting global
//! allocator keeps one counter per OS thread (keyed by its thread id), the test finds the
//! relay worker's thread by its name (`media-worker-0`, `/proc/self/task/*/comm`) and reads
//! that thread's counter before and after relaying two thousand SRTP⇄RTP packets each way
//! after warm-up — in batched (io_uring) and in per-packet mode. Every packet goes through
//! the whole pipeline: SRTP unprotect/protect, authenticated latching, replay window, quality
//! tracking, counters, and the socket I/O of the mode.
//!
//! This file is its own test binary so the counting allocator sees only this test.

#[path = "support/rtp.rs"]
mod rtp;

#[path = "support/counting_alloc.rs"]
mod counting_alloc;

use std::cell::Cell;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicI32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use pbx_edge::config::MediaIo;
use pbx_edge::media::control::PeerSpec;
use pbx_edge::media::{MediaControl, RelaySettings, SrtpParams, StreamSpec, TransformSpec};
use pbx_edge::srtp::key::MasterKey;
use pbx_edge::srtp::suite::CryptoSuite;
use pbx_edge::srtp::{ContextOptions, SrtpContext};

const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
const WAIT: Duration = Duration::from_secs(3);

/// Threads the allocator can tell apart (more are not counted: the test fails on that).
const THREADS: usize = 512;
static TIDS: [AtomicI32; THREADS] = [const { AtomicI32::new(0) }; THREADS];
static COUNTS: [AtomicU64; THREADS] = [const { AtomicU64::new(0) }; THREADS];
static UNTRACKED: AtomicU64 = AtomicU64::new(0);

thread_local! {
    // The calling thread's row in TIDS, found once (a `const` initialiser: no allocation).
    static ROW: Cell<Option<usize>> = const { Cell::new(None) };
}

fn row_of(tid: i32) -> Option<usize> {
    for (i, slot) in TIDS.iter().enumerate() {
        match slot.compare_exchange(0, tid, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => return Some(i),
            Err(t) if t == tid => return Some(i),
            Err(_) => {}
        }
    }
    None
}

fn count() {
    let row = ROW.try_with(|r| match r.get() {
        Some(i) => Some(i),
        None => {
            let i = row_of(gettid());
            r.set(i);
            i
        }
    });
    match row {
        Ok(Some(i)) => {
            COUNTS[i].fetch_add(1, Ordering::Relaxed);
        }
        _ => {
            UNTRACKED.fetch_add(1, Ordering::Relaxed);
        }
    }
}

fn gettid() -> i32 {
    // SAFETY: gettid(2) takes no argument and cannot fail.
    unsafe { libc::gettid() }
}

/// Allocations so far by the thread with id `tid`.
fn allocations_of(tid: i32) -> u64 {
    TIDS.iter()
        .position(|t| t.load(Ordering::Acquire) == tid)
        .map_or(0, |i| COUNTS[i].load(Ordering::Relaxed))
}

#[global_allocator]
static GLOBAL: counting_alloc::Counting = counting_alloc::Counting(count);

/// Thread ids of this process's threads named `name`.
fn threads_named(name: &str) -> Vec<i32> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc/self/task").expect("/proc/self/task") {
        let path = entry.expect("task entry").path();
        let comm = std::fs::read_to_string(path.join("comm")).unwrap_or_default();
        if comm.trim_end() == name {
            if let Some(tid) = path.file_name().and_then(|n| n.to_str()?.parse().ok()) {
                out.push(tid);
            }
        }
    }
    out
}

fn key(byte: u8) -> MasterKey {
    let key: Vec<u8> = (0..16).map(|i| byte.wrapping_add(i)).collect();
    let salt: Vec<u8> = (0..14).map(|i| byte ^ (i * 7)).collect();
    MasterKey::new(CryptoSuite::AesCm128HmacSha1_80, &key, &salt).unwrap()
}

fn ctx(k: &MasterKey) -> SrtpContext {
    SrtpContext::new(k, &ContextOptions::default()).unwrap()
}

fn socket() -> UdpSocket {
    let s = UdpSocket::bind((LOOPBACK, 0)).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    s
}

/// A port range of `pairs` pairs free right now.
fn free_range(base: u16, pairs: u16) -> (u16, u16) {
    let mut base = base;
    loop {
        assert!(base < 60000, "no free port range");
        if (0..pairs * 2).all(|i| UdpSocket::bind((LOOPBACK, base + i)).is_ok()) {
            return (base, base + pairs * 2 - 1);
        }
        base += pairs * 2;
    }
}

/// Relays `rounds` bursts of `burst` packets each way through one SRTP⇄RTP stream and checks
/// every packet arrives intact (so the worker really ran the pipeline on all of them).
struct Stream {
    phone: UdpSocket,
    pbx: UdpSocket,
    to_relay_phone: SocketAddr,
    to_relay_pbx: SocketAddr,
    phone_tx: SrtpContext,
    phone_rx: SrtpContext,
    seq: u16,
}

impl Stream {
    fn exchange(&mut self, rounds: usize, burst: usize) {
        let mut buf = [0u8; 2048];
        for _ in 0..rounds {
            let first = self.seq;
            for i in 0..burst as u16 {
                let seq = first.wrapping_add(i);
                let plain = rtp::voice(seq, 0xA1);
                let mut p = vec![0u8; plain.len() + 64];
                p[..plain.len()].copy_from_slice(&plain);
                let n = self.phone_tx.protect_rtp(&mut p, plain.len()).unwrap();
                self.phone.send_to(&p[..n], self.to_relay_phone).unwrap();
                self.pbx
                    .send_to(&rtp::voice(seq, 0xB2), self.to_relay_pbx)
                    .unwrap();
            }
            for i in 0..burst as u16 {
                let seq = first.wrapping_add(i);
                let (n, _) = self.pbx.recv_from(&mut buf).expect("relayed to the PBX");
                assert_eq!(&buf[..n], rtp::voice(seq, 0xA1).as_slice());
                let (n, _) = self
                    .phone
                    .recv_from(&mut buf)
                    .expect("relayed to the phone");
                let n = self
                    .phone_rx
                    .unprotect_rtp(&mut buf[..n])
                    .expect("authenticates");
                assert_eq!(&buf[..n], rtp::voice(seq, 0xB2).as_slice());
            }
            self.seq = first.wrapping_add(burst as u16);
        }
    }
}

/// Steady-state allocations of the worker thread in one I/O mode.
fn worker_allocations(io: MediaIo, port_base: u16) -> (u64, bool) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (port_min, port_max) = free_range(port_base, 4);
    let settings = RelaySettings {
        phone_bind: LOOPBACK,
        pbx_bind: LOOPBACK,
        port_min,
        port_max,
        timeout: Duration::from_secs(60),
        workers: 1,
        io,
        ..RelaySettings::default()
    };
    let registry = prometheus::Registry::new();
    let (tx, _events) = tokio::sync::mpsc::channel(64);
    let control = MediaControl::new(settings, &registry, tx).unwrap();
    let batched = control.io_batched();
    // The thread names itself once running: wait (bounded) for it.
    let deadline = Instant::now() + WAIT;
    let mut workers = threads_named("media-worker-0");
    while workers.is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
        workers = threads_named("media-worker-0");
    }
    assert_eq!(workers.len(), 1, "exactly one relay worker: {workers:?}");
    let worker = workers[0];

    let (phone, pbx) = (socket(), socket());
    let (phone_key, edge_key) = (key(0x11), key(0x77));
    let spec = StreamSpec {
        phone: PeerSpec::new(phone.local_addr().unwrap()),
        pbx: PeerSpec::new(pbx.local_addr().unwrap()),
        pbx_host: LOOPBACK,
        phone_to_pbx: TransformSpec::Srtp(SrtpParams::new(phone_key.clone())),
        pbx_to_phone: TransformSpec::Srtp(SrtpParams::new(edge_key.clone())),
    };
    let handle = runtime.block_on(control.start(spec)).unwrap();
    let mut stream = Stream {
        to_relay_phone: handle.phone_local().rtp,
        to_relay_pbx: handle.pbx_local().rtp,
        phone,
        pbx,
        phone_tx: ctx(&phone_key),
        phone_rx: ctx(&edge_key),
        seq: 1,
    };
    // Warm-up: latching (an event), SRTP stream state, the worker's queues at their size.
    stream.exchange(50, 8);
    let before = allocations_of(worker);
    stream.exchange(250, 8); // 2,000 packets each way
                             // A packet is counted just after its send: wait (bounded) for the last count.
    let deadline = Instant::now() + WAIT;
    let mut c = handle.counters();
    while (c.phone_to_pbx_packets, c.pbx_to_phone_packets) != (2400, 2400)
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(1));
        c = handle.counters();
    }
    let after = allocations_of(worker);
    assert_eq!(c.phone_to_pbx_packets, 2400);
    assert_eq!(c.pbx_to_phone_packets, 2400);
    assert!(
        before > 0,
        "the worker's allocations are seen at all (set-up allocates)"
    );
    runtime.block_on(handle.stop()).unwrap();
    drop(control);
    // The worker exits on shutdown; wait (bounded) so the next mode finds only its own.
    let deadline = Instant::now() + WAIT;
    while !threads_named("media-worker-0").is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    (after - before, batched)
}

#[test]
fn the_relay_worker_allocates_nothing_per_packet_in_either_io_mode() {
    let io_uring = pbx_edge::media::batch_io::probe().is_ok();
    let (per_packet, batched) = worker_allocations(MediaIo::PerPacket, 46000);
    assert!(!batched);
    assert_eq!(
        per_packet, 0,
        "per-packet mode: allocations on the worker thread"
    );
    let (auto, batched) = worker_allocations(MediaIo::Auto, 46100);
    assert_eq!(
        batched, io_uring,
        "auto is batched exactly where io_uring works"
    );
    assert_eq!(
        auto,
        0,
        "{} mode: allocations on the worker thread",
        if batched { "batched" } else { "auto" }
    );
    assert_eq!(
        UNTRACKED.load(Ordering::Relaxed),
        0,
        "threads beyond the table"
    );
}
