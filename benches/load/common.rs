//! What the load tools share (`relay_load` and `relay` through harness.rs, `call_load`):
//! CPU time per thread and per process from /proc, the machine's UDP receive-buffer drops,
//! percentiles, the bare recv → send forwarder (the kernel + epoll floor), and the RTP header
//! the generators write (send time in the timestamp field).

#![allow(dead_code)]

use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use mio::{Events, Interest, Poll, Token};
use pbx_edge::media::batch_io::{BatchIo, Completion, Outcome};

/// Clock ticks per second of /proc's utime/stime (`getconf CLK_TCK`: 100 on Linux x86-64 and
/// arm64).
const CLK_TCK: u64 = 100;

#[derive(Debug, Clone, Copy, Default)]
pub struct ThreadCpu {
    pub cpu: Duration,
    /// User-space part of `cpu` (our code: SRTP, latching, bookkeeping); the rest is kernel.
    pub user: Duration,
    pub voluntary: u64,
    pub involuntary: u64,
}

/// Per-thread CPU, keyed by thread id, of the threads whose name starts with `prefix`.
#[derive(Debug, Clone, Default)]
pub struct ThreadsCpu(HashMap<String, ThreadCpu>);

impl ThreadsCpu {
    /// CPU time of every thread in the snapshot.
    pub fn total(&self) -> Duration {
        self.0.values().map(|t| t.cpu).sum()
    }

    /// What the threads alive at both snapshots used in between (threads of an earlier run
    /// that exit meanwhile are left out).
    pub fn since(&self, earlier: &ThreadsCpu) -> ThreadCpu {
        let mut total = ThreadCpu::default();
        for (tid, now) in &self.0 {
            if let Some(then) = earlier.0.get(tid) {
                total.cpu += now.cpu.saturating_sub(then.cpu);
                total.user += now.user.saturating_sub(then.user);
                total.voluntary += now.voluntary.saturating_sub(then.voluntary);
                total.involuntary += now.involuntary.saturating_sub(then.involuntary);
            }
        }
        total
    }
}

/// CPU (utime+stime) and context switches of the threads whose name starts with `prefix`
/// (empty prefix: every thread of the process).
pub fn threads_cpu(prefix: &str) -> ThreadsCpu {
    let mut threads = ThreadsCpu::default();
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
        return threads;
    };
    for entry in dir.flatten() {
        let mut total = ThreadCpu::default();
        let path = entry.path();
        let comm = std::fs::read_to_string(path.join("comm")).unwrap_or_default();
        if !comm.trim_end().starts_with(prefix) {
            continue;
        }
        if let Some((cpu, user)) = std::fs::read_to_string(path.join("stat"))
            .ok()
            .and_then(|stat| stat_cpu(&stat))
        {
            total.cpu += cpu;
            total.user += user;
        }
        if let Ok(status) = std::fs::read_to_string(path.join("status")) {
            for line in status.lines() {
                let value = |l: &str| {
                    l.split_whitespace()
                        .nth(1)
                        .and_then(|v| v.parse::<u64>().ok())
                };
                if line.starts_with("voluntary_ctxt_switches") {
                    total.voluntary += value(line).unwrap_or(0);
                } else if line.starts_with("nonvoluntary_ctxt_switches") {
                    total.involuntary += value(line).unwrap_or(0);
                }
            }
        }
        threads
            .0
            .insert(entry.file_name().to_string_lossy().into_owned(), total);
    }
    threads
}

/// utime + stime from a /proc `stat` line (fields 14 and 15, counted after the `)` that closes
/// the command name, which may itself hold spaces and parentheses).
fn stat_cpu(stat: &str) -> Option<(Duration, Duration)> {
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<u64>().ok());
    let (u, s) = (ticks(11)?, ticks(12)?);
    Some((
        Duration::from_millis((u + s) * 1000 / CLK_TCK),
        Duration::from_millis(u * 1000 / CLK_TCK),
    ))
}

/// CPU time (utime + stime) of a whole process: /proc/<pid>/stat sums every thread, live or
/// exited. `None` when the process is gone.
pub fn process_cpu(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat_cpu(&stat).map(|(cpu, _)| cpu)
}

/// CPU time (utime + stime) of the calling thread.
pub fn current_thread_cpu() -> Duration {
    std::fs::read_to_string("/proc/thread-self/stat")
        .ok()
        .and_then(|stat| stat_cpu(&stat))
        .map_or(Duration::ZERO, |(cpu, _)| cpu)
}

/// Resident set size (VmRSS, KiB) of a process; `None` when it is gone.
pub fn process_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
}

/// The first three fields of /proc/loadavg (1, 5 and 15 minutes).
pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

/// The `p` quantile (0.0..=1.0, nearest rank) of an ascending slice; 0 when empty.
pub fn percentile(sorted: &[u32], p: f64) -> u32 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// `Udp: ... RcvbufErrors` from /proc/net/snmp (machine-wide).
pub fn udp_rcvbuf_errors() -> u64 {
    let snmp = std::fs::read_to_string("/proc/net/snmp").unwrap_or_default();
    let mut udp = snmp.lines().filter(|l| l.starts_with("Udp:"));
    let (Some(names), Some(values)) = (udp.next(), udp.next()) else {
        return 0;
    };
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .find(|(n, _)| *n == "RcvbufErrors")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0)
}

/// A forwarder's sockets and, per socket, the socket to send from and the fixed destination.
type Routes = (Vec<mio::net::UdpSocket>, Vec<(usize, SocketAddr)>);

/// Registers every forwarder socket with `poll` (token = index) and says where what each
/// socket receives goes.
fn forwarder_routes(
    poll: &Poll,
    pairs: Vec<(UdpSocket, SocketAddr, UdpSocket, SocketAddr)>,
) -> Routes {
    let mut socks: Vec<mio::net::UdpSocket> = Vec::new();
    let mut routes: Vec<(usize, SocketAddr)> = Vec::new();
    for (phone_side, phone, pbx_side, pbx) in pairs {
        let base = socks.len();
        for s in [phone_side, pbx_side] {
            let mut m = mio::net::UdpSocket::from_std(s);
            poll.registry()
                .register(&mut m, Token(socks.len()), Interest::READABLE)
                .expect("register");
            socks.push(m);
        }
        routes.push((base + 1, pbx)); // from the phone side → out of the PBX side to the PBX
        routes.push((base, phone)); // from the PBX side → out of the phone side to the phone
    }
    (socks, routes)
}

/// The bare forwarder: one thread, one epoll, one recv → send per datagram, no SRTP, latching
/// or counters: the kernel + epoll floor of relaying under the same threading and coalescing.
pub fn baseline_forwarder(
    pairs: Vec<(UdpSocket, SocketAddr, UdpSocket, SocketAddr)>,
    coalesce: Duration,
    stop: Arc<AtomicBool>,
    packets: Arc<AtomicU64>,
    wakeups: Arc<AtomicU64>,
) {
    let mut poll = Poll::new().expect("poll");
    let (socks, routes) = forwarder_routes(&poll, pairs);
    let mut buf = [0u8; 2048];
    poll_until(&mut poll, &stop, |events| {
        wakeups.fetch_add(1, Ordering::Relaxed);
        let mut relayed = 0;
        for event in events.iter() {
            let i = event.token().0;
            let (out, dest) = routes[i];
            while let Ok((n, _)) = socks[i].recv_from(&mut buf) {
                if socks[out].send_to(&buf[..n], dest).is_ok() {
                    relayed += 1;
                }
            }
        }
        packets.fetch_add(relayed, Ordering::Relaxed);
        if relayed > 0 && !coalesce.is_zero() {
            thread::sleep(coalesce);
            wakeups.fetch_add(1, Ordering::Relaxed);
        }
    });
}

/// The batched baseline: the same forwarder over io_uring as the relay's batched mode (one
/// receive per ready socket in one submit, one send per packet from the same slot in one
/// submit, a socket that delivered is read again in the next pass until EAGAIN), with nothing of
/// the relay's pipeline: the floor the batched relay is compared with.
pub fn baseline_forwarder_batched(
    pairs: Vec<(UdpSocket, SocketAddr, UdpSocket, SocketAddr)>,
    coalesce: Duration,
    stop: Arc<AtomicBool>,
    packets: Arc<AtomicU64>,
    wakeups: Arc<AtomicU64>,
) {
    use std::os::fd::AsRawFd;
    const SLOTS: usize = 256;
    let mut poll = Poll::new().expect("poll");
    let (socks, routes) = forwarder_routes(&poll, pairs);
    let mut io = BatchIo::new(SLOTS).expect("io_uring (--io batched)");
    let mut events = Events::with_capacity(1024);
    let mut pending: Vec<usize> = Vec::with_capacity(socks.len());
    let mut retry: Vec<usize> = Vec::with_capacity(socks.len());
    let mut queued = vec![false; socks.len()];
    let mut again: Vec<usize> = Vec::with_capacity(SLOTS);
    let mut next: Vec<usize> = Vec::with_capacity(SLOTS);
    let mut done: Vec<Completion> = Vec::with_capacity(2 * SLOTS);
    while !stop.load(Ordering::Relaxed) {
        let timeout = if pending.is_empty() {
            Duration::from_millis(50)
        } else {
            Duration::ZERO
        };
        if poll.poll(&mut events, Some(timeout)).is_err() {
            continue;
        }
        if !timeout.is_zero() {
            wakeups.fetch_add(1, Ordering::Relaxed);
        }
        std::mem::swap(&mut pending, &mut retry);
        let mut relayed = 0;
        let mut backlog = false;
        // Up to 16 passes (the relay's BATCH_PER_SOCKET): the first over the ready and
        // pending sockets, each next one over those that delivered in the previous pass.
        let mut first = true;
        for _ in 0..16 {
            let mut n = 0;
            let tokens = if first {
                retry.extend(events.iter().map(|e| e.token().0));
                &mut retry
            } else {
                &mut again
            };
            first = false;
            for i in tokens.drain(..) {
                if queued[i] {
                    continue;
                }
                if n == SLOTS {
                    pending.push(i);
                    backlog = true;
                    continue;
                }
                io.queue_recv(n, socks[i].as_raw_fd(), 2048, i as u64)
                    .expect("queue recv");
                queued[i] = true;
                n += 1;
            }
            if n == 0 {
                break;
            }
            done.clear();
            io.submit_and_wait_all(&mut done).expect("submit");
            let mut sends = 0;
            for c in &done {
                let i = c.tag as usize;
                queued[i] = false;
                if let Outcome::Received { len, .. } = c.outcome {
                    next.push(i);
                    let (out, dest) = routes[i];
                    io.queue_send(c.slot, socks[out].as_raw_fd(), len, dest, 0)
                        .expect("queue send");
                    sends += 1;
                }
            }
            std::mem::swap(&mut again, &mut next);
            if sends == 0 {
                break;
            }
            done.clear();
            io.submit_and_wait_all(&mut done).expect("submit");
            relayed += done
                .iter()
                .filter(|c| matches!(c.outcome, Outcome::Sent { .. }))
                .count() as u64;
        }
        pending.append(&mut again);
        packets.fetch_add(relayed, Ordering::Relaxed);
        if relayed > 0 && !coalesce.is_zero() && !backlog {
            thread::sleep(coalesce);
            wakeups.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Waits on `poll` and hands each batch of ready events to `ready` until `stop` is set (seen
/// within 50 ms).
pub fn poll_until(poll: &mut Poll, stop: &AtomicBool, mut ready: impl FnMut(&Events)) {
    let mut events = Events::with_capacity(1024);
    while !stop.load(Ordering::Relaxed) {
        if poll
            .poll(&mut events, Some(Duration::from_millis(50)))
            .is_ok()
        {
            ready(&events);
        }
    }
}

pub fn write_rtp(buf: &mut [u8], seq: u16, stamp_us: u32, ssrc: u32) {
    buf[0] = 0x80;
    buf[1] = 0;
    buf[2..4].copy_from_slice(&seq.to_be_bytes());
    // The send time in µs since `base`: the sink's latency probe (not encrypted by SRTP).
    buf[4..8].copy_from_slice(&stamp_us.to_be_bytes());
    buf[8..12].copy_from_slice(&ssrc.to_be_bytes());
}
