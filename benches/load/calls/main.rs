//! Call load tool: SRTP⇄RTP calls set up through a target's real control path, then media
//! paced and checked by this process (harness = false; loopback only; bounded in time and
//! packets; every process it starts is stopped by its PID).
//!
//! ```text
//! cargo bench --bench call_load -- --target rtpengine|edge|baseline|baseline-batched|direct[,...]
//!     [--calls 100] [--secs 10] [--warmup-secs 1] [--ramp] [--max-calls 2400]
//!     [--ramp-steps 10] [--max-p99-ms X] [--no-floor] [--floor-secs 3] [--gen-threads 1]
//!     [--sink-threads 1]
//!     [--coalesce-us 0] [--rtpe-threads N] [--port-min 20000] [--port-max 29999]
//!     [--edge-phones 10000] [--churn-rate 20]
//! ```
//!
//! Targets (several, comma-separated: each measurement runs them one after the other, so
//! they meet the same machine load; with `--ramp`, one ramp after the other):
//! - `rtpengine`: Debian's rtpengine, userspace only (`--table=-1`), its own temporary
//!   directory, calls set up with ng `offer` (the phone's RTP/SAVP + SDES, asking RTP/AVP
//!   toward the PBX) and `answer` (the PBX's RTP/AVP, asking RTP/SAVP + SDES toward the
//!   phone), deleted at the end; stopped by PID (SIGTERM, SIGKILL after 5 s).
//! - `edge`: pbx-edge, calls set up over SIP/TLS with device certificates by
//!   `edge::setup_calls` (the release binary; a generated PKI, inventory and config).
//!   `--edge-phones N` registers N phones (RFC 5626 keep-alives running) of which the calls
//!   use the first; `--churn-rate R` makes R new short calls per second (INVITE, 200, ACK,
//!   BYE, no media; phones in turn, from the first) while the media runs, and prints how
//!   many failed.
//! - `baseline`: the bare recv → send forwarder of benches/load/common.rs on one thread of this
//!   process (no SRTP, no latching, no counters): the kernel + epoll floor for relaying.
//! - `baseline-batched`: the same forwarder over io_uring (the relay's batched I/O, one
//!   receive per ready socket and one send per packet, each set in one submit).
//! - `direct`: no relay, generator → sink. Its latency is the generator's own floor.
//!
//! Per call: 172-byte G.711 RTP (12-byte header + 160 bytes), 50 packets/s each way, the phone
//! sending SRTP (AES_CM_128_HMAC_SHA1_80) and the PBX plain RTP; every packet that comes out
//! is checked (source, SRTP authentication, SSRC, sequence, payload). See media.rs.
//!
//! Each run prints one line:
//! - `relayed`: distinct, correct packets received per second (both directions) whose send
//!   time is in the measured window (after the warm-up);
//! - `lost`: sent − received over the whole run; `dup`, `late` (reordered), `auth-fail`
//!   (SRTP toward the phone failing verification), `bad` (foreign source, wrong SSRC, sequence
//!   or payload), `send-err` (generator sends refused). A run is clean when all are 0 (the
//!   ramp's criterion);
//! - `target CPU`: the target's utime + stime over the window (rtpengine and edge: the whole
//!   process, every thread, from /proc/<pid>/stat; baseline: its thread) / relayed packets;
//! - `latency p50/p99/max`: receive time − send time through the target; `added`: the same
//!   minus a `direct` run's with the same number of calls (the floor, measured just before;
//!   `--no-floor` skips it);
//! - `RSS`: the target process's VmRSS after the window, calls still up;
//! - `gen/sink CPU`: this process's generator and sink threads over the run, in % of one core
//!   (summed over their threads; near 100 % per thread, the generator is the limit: give it
//!   `--gen-threads`/`--sink-threads`);
//! - `rcvbuf drops`: machine-wide UDP receive-buffer overflows during the run;
//! - `load`: /proc/loadavg (1, 5, 15 min) at the start and end of the run (shared machine).
//!
//! `--ramp` finds the highest number of calls with a clean run: doubles from `--calls` until a
//! run is not clean (or `--max-calls`), then bisects to within 1/16, at most `--ramp-steps`
//! runs; then runs half that number with the latency floor. With `--max-p99-ms X` a run must
//! also keep its p99 latency within X ms to pass: the kernel's socket buffers hold seconds of
//! media, so a target that falls behind shows seconds of delay long before it loses packets.

#[path = "../common.rs"]
mod common;
mod edge;
mod legs;
mod media;
mod rtpengine;

use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::{
    baseline_forwarder, baseline_forwarder_batched, loadavg, process_cpu, process_rss_kib,
    threads_cpu,
};
use legs::CallMedia;
use media::{random_sdes_key, MediaConfig, MediaReport, Transform};
use rtpengine::{Rtpengine, RtpengineOptions};

/// Every target's ports and this tool's sockets: loopback only.
const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
const MAX_SECS: f64 = 120.0;
const MAX_CALLS: usize = 5000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    Rtpengine,
    Edge,
    Baseline,
    BaselineBatched,
    Direct,
}

impl Target {
    fn name(self) -> &'static str {
        match self {
            Target::Rtpengine => "rtpengine",
            Target::Edge => "edge",
            Target::Baseline => "baseline",
            Target::BaselineBatched => "baseline-batched",
            Target::Direct => "direct",
        }
    }
}

#[derive(Debug, Clone)]
struct Args {
    /// The targets to run, one after the other for each measurement (alternating).
    targets: Vec<Target>,
    /// The one being run.
    target: Target,
    calls: usize,
    ramp: bool,
    max_calls: usize,
    ramp_steps: usize,
    floor: bool,
    floor_secs: f64,
    /// A run passes the ramp only if its p99 latency is within this bound too (packets that
    /// late are as good as lost to a phone's jitter buffer); `None`: loss alone decides.
    max_p99: Option<Duration>,
    media: MediaConfig,
    coalesce: Duration,
    rtpengine: RtpengineOptions,
    /// `edge`: phones registered (and kept alive) besides the ones in calls (0: one per call).
    edge_phones: usize,
    /// `edge`: new short calls per second (INVITE/200/ACK/BYE) while the media runs.
    churn_rate: f64,
}

fn parse_args() -> Result<Args, String> {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let mut args = Args {
        targets: vec![Target::Rtpengine],
        target: Target::Rtpengine,
        calls: 100,
        ramp: false,
        max_calls: 2400,
        ramp_steps: 10,
        floor: true,
        floor_secs: 3.0,
        max_p99: None,
        edge_phones: 0,
        churn_rate: 0.0,
        media: MediaConfig::default(),
        coalesce: Duration::ZERO,
        rtpengine: RtpengineOptions::default(),
    };
    let mut i = 0;
    while i < argv.len() {
        let flag = argv[i].as_str();
        let value = || -> Result<&str, String> {
            argv.get(i + 1)
                .map(String::as_str)
                .ok_or_else(|| format!("{flag} needs a value"))
        };
        let number = || -> Result<f64, String> {
            value()?
                .parse::<f64>()
                .map_err(|_| format!("{flag} needs a number"))
        };
        match flag {
            "--target" => {
                args.targets = value()?
                    .split(',')
                    .map(|t| match t {
                        "rtpengine" => Ok(Target::Rtpengine),
                        "edge" => Ok(Target::Edge),
                        "baseline" => Ok(Target::Baseline),
                        "baseline-batched" => Ok(Target::BaselineBatched),
                        "direct" => Ok(Target::Direct),
                        other => Err(format!("unknown target {other}")),
                    })
                    .collect::<Result<_, _>>()?
            }
            "--calls" => args.calls = number()? as usize,
            "--secs" => args.media.secs = number()?.clamp(1.0, MAX_SECS),
            "--warmup-secs" => {
                args.media.warmup = Duration::from_secs_f64(number()?.clamp(0.0, 10.0))
            }
            "--max-calls" => args.max_calls = number()? as usize,
            "--ramp-steps" => args.ramp_steps = (number()? as usize).clamp(1, 20),
            "--floor-secs" => args.floor_secs = number()?.clamp(1.0, MAX_SECS),
            "--max-p99-ms" => {
                args.max_p99 = Some(Duration::from_secs_f64(number()?.max(0.0) / 1000.0))
            }
            "--gen-threads" => args.media.gen_threads = (number()? as usize).clamp(1, 16),
            "--sink-threads" => args.media.sink_threads = (number()? as usize).clamp(1, 16),
            "--edge-phones" => args.edge_phones = number()? as usize,
            "--churn-rate" => args.churn_rate = number()?.max(0.0),
            "--coalesce-us" => args.coalesce = Duration::from_micros(number()? as u64),
            "--rtpe-threads" => args.rtpengine.threads = Some((number()? as usize).max(1)),
            "--port-min" => args.rtpengine.port_min = number()? as u16,
            "--port-max" => args.rtpengine.port_max = number()? as u16,
            "--ramp" | "--no-floor" => {
                if flag == "--ramp" {
                    args.ramp = true;
                } else {
                    args.floor = false;
                }
                i += 1;
                continue;
            }
            // `cargo bench` passes --bench; ignore anything else unknown.
            _ => {
                i += 1;
                continue;
            }
        }
        i += 2;
    }
    args.max_calls = args.max_calls.clamp(1, MAX_CALLS);
    args.calls = args.calls.clamp(1, args.max_calls);
    args.target = *args.targets.first().ok_or("--target names no target")?;
    Ok(args)
}

/// One run's figures besides the media report.
struct Run {
    report: MediaReport,
    rss_kib: Option<u64>,
    setup: Duration,
    load_start: String,
    load_end: String,
}

fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("call_load: {e}");
            std::process::exit(2);
        }
    };
    // Each call holds two sockets and their clones for the generator and sink threads.
    if let Err(e) = rlimit::increase_nofile_limit(u64::MAX) {
        eprintln!("call_load: raising the open-file limit: {e}");
    }
    println!("config: {args:?}");
    let mut all_clean = true;
    for &target in &args.targets {
        let args = Args {
            target,
            ..args.clone()
        };
        if args.ramp {
            ramp_and_half(&args);
        } else {
            all_clean &= measure(&args, args.calls, args.floor);
        }
    }
    std::process::exit(if all_clean { 0 } else { 1 });
}

/// The ramp of one target, then a run at half its maximum with the latency floor.
fn ramp_and_half(args: &Args) {
    match ramp(args) {
        Some(n) => {
            println!(
                "ramp: highest clean run {} calls on target {}",
                n,
                args.target.name()
            );
            let half = (n / 2).max(1);
            println!("half the maximum, {half} calls, with the latency floor:");
            measure(args, half, true);
        }
        None => println!(
            "ramp: no clean run on target {} (from {} calls)",
            args.target.name(),
            args.calls
        ),
    }
}

/// Doubles, then bisects, the number of calls; returns the highest clean one.
fn ramp(args: &Args) -> Option<usize> {
    let (mut good, mut bad): (Option<usize>, Option<usize>) = (None, None);
    let mut n = args.calls;
    for _ in 0..args.ramp_steps {
        if measure(args, n, false) {
            good = Some(n);
        } else {
            bad = Some(n);
        }
        let next = match (good, bad) {
            (Some(g), None) if g >= args.max_calls => break,
            (Some(g), None) => (g * 2).min(args.max_calls),
            (g, Some(b)) => {
                let g = g.unwrap_or(0);
                if b.saturating_sub(g) <= (b / 16).max(1) {
                    break;
                }
                (g + b) / 2
            }
            (None, None) => break,
        };
        if next == 0 || next == n {
            break;
        }
        n = next;
    }
    good
}

/// Runs `calls` on the target (after a direct run for the floor when `floor`) and prints the
/// line; true when the run is clean.
fn measure(args: &Args, calls: usize, floor: bool) -> bool {
    let floor_run = if floor && args.target != Target::Direct {
        let mut direct = args.clone();
        direct.target = Target::Direct;
        direct.media.secs = args.floor_secs;
        match run(&direct, calls) {
            Ok(r) => Some(r),
            Err(e) => {
                println!("direct floor, {calls} calls: FAILED: {e}");
                None
            }
        }
    } else {
        None
    };
    match run(args, calls) {
        Ok(r) => {
            let within = args
                .max_p99
                .is_none_or(|max| u128::from(r.report.latency_p99_us) <= max.as_micros());
            print(args.target, calls, &r, floor_run.as_ref(), within);
            r.report.clean() && within
        }
        Err(e) => {
            println!("{} {calls} calls: FAILED: {e}", args.target.name());
            false
        }
    }
}

fn run(args: &Args, calls: usize) -> Result<Run, String> {
    let load_start = loadavg();
    let t0 = Instant::now();
    let mut cfg = args.media.clone();
    let (report, rss_kib, setup) = match args.target {
        Target::Rtpengine => {
            let mut engine = Rtpengine::start(&args.rtpengine)?;
            let pid = engine.pid();
            let media = engine.setup_calls(calls)?;
            let setup = t0.elapsed();
            let report = media::run(media, &cfg, &|| process_cpu(pid))?;
            let rss = process_rss_kib(pid);
            engine.finish()?;
            (report, rss, setup)
        }
        Target::Edge => {
            let options = edge::EdgeOptions {
                phones: args.edge_phones,
                ..edge::EdgeOptions::default()
            };
            let mut edge_run = edge::setup_calls(calls, &options)?;
            let pid = edge_run.pid;
            let media = std::mem::take(&mut edge_run.media);
            let setup = t0.elapsed();
            // New calls keep arriving while the media runs (signalling beside the relay).
            let churn_secs = cfg.secs + cfg.warmup.as_secs_f64();
            let (report, churn) = thread::scope(|scope| {
                let churn = (args.churn_rate > 0.0).then(|| {
                    let run = &edge_run;
                    scope.spawn(move || run.churn(args.churn_rate, churn_secs))
                });
                let report = media::run(media, &cfg, &|| process_cpu(pid));
                (report, churn.map(|c| c.join()))
            });
            if let Some(churn) = churn {
                match churn {
                    Ok(c) => println!(
                        "edge: {} new calls while the media ran ({:.0}/s): {} completed, {} failed {:?}",
                        c.attempted, args.churn_rate, c.completed, c.failed, c.errors
                    ),
                    Err(_) => println!("edge: the churn thread panicked"),
                }
            }
            let rss = process_rss_kib(pid);
            // Hang up and stop the edge even when the media run failed.
            let finished = edge_run.finish();
            let report = report?;
            finished?;
            (report, rss, setup)
        }
        Target::Baseline | Target::BaselineBatched => {
            cfg.transform = Transform::Passthrough;
            let batched = args.target == Target::BaselineBatched;
            let (media, pairs) = baseline_calls(calls)?;
            let stop = Arc::new(AtomicBool::new(false));
            let (packets, wakeups) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
            let forwarder = {
                let (stop, coalesce) = (stop.clone(), args.coalesce);
                thread::Builder::new()
                    .name("call-baseline".into())
                    .spawn(move || {
                        if batched {
                            baseline_forwarder_batched(pairs, coalesce, stop, packets, wakeups)
                        } else {
                            baseline_forwarder(pairs, coalesce, stop, packets, wakeups)
                        }
                    })
                    .map_err(|e| format!("forwarder thread: {e}"))?
            };
            let setup = t0.elapsed();
            let report = media::run(media, &cfg, &|| Some(threads_cpu("call-baseline").total()));
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
            forwarder
                .join()
                .map_err(|_| "forwarder thread panicked".to_string())?;
            (report?, None, setup)
        }
        Target::Direct => {
            cfg.transform = Transform::Passthrough;
            let media = direct_calls(calls)?;
            let setup = t0.elapsed();
            (media::run(media, &cfg, &|| None)?, None, setup)
        }
    };
    Ok(Run {
        report,
        rss_kib,
        setup,
        load_start,
        load_end: loadavg(),
    })
}

fn bind() -> Result<(UdpSocket, SocketAddr), String> {
    let s = UdpSocket::bind((LOOPBACK, 0)).map_err(|e| format!("bind: {e}"))?;
    let a = s.local_addr().map_err(|e| format!("local address: {e}"))?;
    Ok((s, a))
}

/// Calls with no relay: the phone sends to the PBX socket and the PBX to the phone socket.
fn direct_calls(calls: usize) -> Result<Vec<CallMedia>, String> {
    (0..calls)
        .map(|i| {
            let (phone_socket, phone) = bind()?;
            let (pbx_socket, pbx) = bind()?;
            let key = random_sdes_key()?;
            Ok(CallMedia {
                call_id: format!("direct-{i}"),
                phone_socket,
                phone_target: pbx,
                phone_sends_with: key.clone(),
                phone_receives_with: key,
                pbx_socket,
                pbx_target: phone,
            })
        })
        .collect()
}

type ForwarderPair = (UdpSocket, SocketAddr, UdpSocket, SocketAddr);

/// Calls through the bare forwarder: per call a phone-side and a PBX-side forwarder socket.
fn baseline_calls(calls: usize) -> Result<(Vec<CallMedia>, Vec<ForwarderPair>), String> {
    let mut media = Vec::with_capacity(calls);
    let mut pairs = Vec::with_capacity(calls);
    for i in 0..calls {
        let (phone_socket, phone) = bind()?;
        let (pbx_socket, pbx) = bind()?;
        let (phone_side, phone_side_addr) = bind()?;
        let (pbx_side, pbx_side_addr) = bind()?;
        for s in [&phone_side, &pbx_side] {
            s.set_nonblocking(true)
                .map_err(|e| format!("nonblocking: {e}"))?;
        }
        pairs.push((phone_side, phone, pbx_side, pbx));
        let key = random_sdes_key()?;
        media.push(CallMedia {
            call_id: format!("baseline-{i}"),
            phone_socket,
            phone_target: phone_side_addr,
            phone_sends_with: key.clone(),
            phone_receives_with: key,
            pbx_socket,
            pbx_target: pbx_side_addr,
        });
    }
    Ok((media, pairs))
}

fn print(target: Target, calls: usize, run: &Run, floor: Option<&Run>, within: bool) {
    let r = &run.report;
    let cpu = r
        .target_cpu_per_packet_us()
        .map_or("-".to_string(), |us| format!("{us:.2} us/pkt"));
    let added = floor.map_or(String::new(), |f| {
        format!(
            "; added p50 {} us p99 {} us (direct floor p50 {} p99 {})",
            i64::from(r.latency_p50_us) - i64::from(f.report.latency_p50_us),
            i64::from(r.latency_p99_us) - i64::from(f.report.latency_p99_us),
            f.report.latency_p50_us,
            f.report.latency_p99_us,
        )
    });
    let rss = run
        .rss_kib
        .map_or("-".to_string(), |k| format!("{:.1} MiB", k as f64 / 1024.0));
    println!(
        "{} {calls} calls: {} | relayed {:.0} pkt/s | lost {} (sent {:?} recv {:?}) dup {:?} \
         late {:?} auth-fail {} bad {:?} send-err {} | target CPU {cpu} | latency p50 {} us \
         p99 {} us max {} us{added} | RSS {rss} | gen CPU {:.0} % sink CPU {:.0} % of one core \
         | rcvbuf drops {} | setup {:.2} s | load {} -> {}",
        target.name(),
        match (r.clean(), within) {
            (true, true) => "clean",
            (true, false) => "clean but p99 over --max-p99-ms",
            _ => "NOT CLEAN",
        },
        r.relayed_pps(),
        r.lost(),
        r.sent,
        r.received,
        r.duplicates,
        r.reordered,
        r.auth_failures,
        r.bad,
        r.send_errors,
        r.latency_p50_us,
        r.latency_p99_us,
        r.latency_max_us,
        100.0 * r.generator_cpu.as_secs_f64() / r.run_secs.max(1e-9),
        100.0 * r.sink_cpu.as_secs_f64() / r.run_secs.max(1e-9),
        r.rcvbuf_errors,
        run.setup.as_secs_f64(),
        run.load_start,
        run.load_end,
    );
}
