//! Signalling state at scale (issue 13 point 4): N phones connected to the real pbx-edge
//! binary over TLS with their own device certificates, registered through it (RFC 5626
//! outbound) to a PBX played by this process, then idle with CRLF keep-alives.
//!
//! ```text
//! cargo build --release --bin pbx-edge
//! cargo bench --bench fleet -- [--phones 1000] [--keepalive-secs 30] [--idle-secs 60]
//!     [--per-source 200] [--concurrency 64] [--edge target/release/pbx-edge]
//!     [--keep-logs DIR]
//! cargo bench --bench fleet -- --calls 10 [--churn-rate 5 --churn-secs 4]
//! ```
//! Fleet mode prints the time until every phone was registered, then over the idle window:
//! the edge's RSS (VmRSS) and CPU (% of one core), this generator's own CPU, keep-alives sent
//! and pongs received, re-registrations, disconnects; and checks the edge's own gauges
//! (`pbx_edge_registrations_active`, `pbx_edge_tls_connections_active`) against the fleet.
//! `--calls N` sets N calls up through the edge (the `call_load` control path), prints each
//! call's media addresses and keys, optionally runs churn calls, and hangs up.
//! Bounded: bring-up 30 s per phone, idle at most 600 s; the edge is stopped by its PID.
//! Exit status: 0 clean, 1 a failure (phones not registered, pongs missing, gauges off...),
//! 2 usage.

#[path = "calls/edge.rs"]
mod edge;
#[path = "calls/legs.rs"]
#[allow(dead_code)]
mod legs;

use std::time::{Duration, Instant};

use edge::{metric, process_cpu, process_rss_kib, EdgeOptions, Fleet};

struct Args {
    options: EdgeOptions,
    idle: Duration,
    calls: Option<usize>,
    churn_rate: f64,
    churn_secs: f64,
}

fn usage() -> ! {
    eprintln!(
        "usage: fleet [--phones N] [--keepalive-secs S] [--idle-secs S] [--per-source N] \
         [--concurrency N] [--edge PATH] [--keep-logs DIR] [--log-level FILTER] \
         | --calls N [--churn-rate R --churn-secs S]"
    );
    std::process::exit(2)
}

fn parse_args() -> Args {
    let mut a = Args {
        options: EdgeOptions {
            phones: 1000,
            ..EdgeOptions::default()
        },
        idle: Duration::from_secs(60),
        calls: None,
        churn_rate: 0.0,
        churn_secs: 0.0,
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut phones_given = false;
    let mut i = 0;
    while i < args.len() {
        let flag = args[i].as_str();
        if flag == "--bench" {
            // cargo bench passes it to harness = false targets.
            i += 1;
            continue;
        }
        let Some(value) = args.get(i + 1) else {
            usage()
        };
        let num = || value.parse::<f64>().unwrap_or_else(|_| usage());
        match flag {
            "--phones" => {
                a.options.phones = num() as usize;
                phones_given = true;
            }
            "--keepalive-secs" => a.options.keepalive = Duration::from_secs_f64(num().max(1.0)),
            "--idle-secs" => a.idle = Duration::from_secs_f64(num().clamp(0.0, 600.0)),
            "--per-source" => a.options.phones_per_source = num() as usize,
            "--concurrency" => a.options.connect_concurrency = num() as usize,
            "--expires" => a.options.register_expires = num() as u32,
            "--edge" => a.options.edge_binary = value.into(),
            "--keep-logs" => a.options.keep_dir = Some(value.into()),
            "--log-level" => a.options.log_level = value.clone(),
            "--calls" => {
                a.calls = Some(num() as usize);
            }
            "--churn-rate" => a.churn_rate = num(),
            "--churn-secs" => a.churn_secs = num().clamp(0.0, 120.0),
            _ => usage(),
        }
        i += 2;
    }
    if a.calls.is_some() && !phones_given {
        a.options.phones = 0; // one phone per call
    }
    if a.calls.is_none() {
        // No calls in fleet mode: a small relay range keeps the edge's open-file budget
        // (tls.max_connections + one per media port + 256) under a 20,000 hard limit.
        a.options.port_max = a.options.port_min + 1999;
    }
    a
}

fn main() {
    let args = parse_args();
    if !args.options.edge_binary.is_file() {
        eprintln!(
            "no edge binary at {} (cargo build --release --bin pbx-edge)",
            args.options.edge_binary.display()
        );
        std::process::exit(1);
    }
    let ok = match args.calls {
        Some(n) => calls(n, &args),
        None => fleet(&args),
    };
    std::process::exit(if ok { 0 } else { 1 });
}

/// `--calls N`: the call_load control path on its own.
fn calls(n: usize, args: &Args) -> bool {
    let started = Instant::now();
    let run = match edge::setup_calls(n, &args.options) {
        Ok(run) => run,
        Err(e) => {
            eprintln!("setup_calls({n}) failed: {e}");
            return false;
        }
    };
    println!(
        "{n} calls up in {:.3} s after {} phones registered in {:.2} s ({:.2} s in all); \
         edge pid {}, RSS {:.1} MiB",
        run.setup_time.as_secs_f64(),
        run.fleet.registered_phones(),
        run.fleet.bring_up.as_secs_f64(),
        started.elapsed().as_secs_f64(),
        run.pid,
        process_rss_kib(&run.pid.to_string()).unwrap_or_default() as f64 / 1024.0
    );
    for m in run.media.iter().take(20) {
        println!(
            "  {}: phone {} -> edge {} [{} {}], edge sends with [{} {}]; pbx {} -> edge {}",
            m.call_id,
            m.phone_socket
                .local_addr()
                .map(|a| a.to_string())
                .unwrap_or_default(),
            m.phone_target,
            m.phone_sends_with.suite,
            m.phone_sends_with.key_params,
            m.phone_receives_with.suite,
            m.phone_receives_with.key_params,
            m.pbx_socket
                .local_addr()
                .map(|a| a.to_string())
                .unwrap_or_default(),
            m.pbx_target,
        );
    }
    let mut ok = true;
    let active = run
        .fleet
        .edge_metrics()
        .ok()
        .and_then(|m| metric(&m, "pbx_edge_calls_active"));
    println!("edge pbx_edge_calls_active = {active:?}");
    if active != Some(n as f64) {
        eprintln!("FAIL: the edge counts {active:?} active calls, we set up {n}");
        ok = false;
    }
    if args.churn_rate > 0.0 && args.churn_secs > 0.0 {
        let r = run.churn(args.churn_rate, args.churn_secs);
        println!(
            "churn: {} attempted, {} completed, {} failed {:?}",
            r.attempted, r.completed, r.failed, r.errors
        );
        ok &= r.failed == 0;
    }
    let c = run.fleet.counters.snapshot();
    println!("counters: {c:?}");
    match run.finish() {
        Ok(()) => println!("all calls hung up, edge stopped"),
        Err(e) => {
            eprintln!("FAIL: finish: {e}");
            ok = false;
        }
    }
    ok
}

/// Fleet mode: bring-up, then idle with keep-alives.
fn fleet(args: &Args) -> bool {
    let n = args.options.phones;
    match edge::raise_nofile() {
        Ok((soft, hard)) => {
            println!("open-file limit of this process: soft {soft}, hard {hard}");
            // One descriptor per phone here, and as many in the edge (which inherits the
            // limit and raises its soft limit toward its budget, never above the hard one).
            if soft < n as u64 + 256 {
                eprintln!(
                    "FAIL: {n} phones need about {} open files but the hard limit is {hard} \
                     (raise it: ulimit -Hn, LimitNOFILE, /etc/security/limits.conf)",
                    n + 256
                );
                return false;
            }
        }
        Err(e) => eprintln!("open-file limit: {e}"),
    }
    let gen_cpu0 = process_cpu("self").unwrap_or_default();
    let t0 = Instant::now();
    let fleet = match Fleet::start(&args.options) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("FAIL: fleet did not start: {e}");
            return false;
        }
    };
    let pid = fleet.edge_pid().to_string();
    let setup = t0.elapsed(); // PKI generation + edge start + bring-up
    let edge_cpu_up = process_cpu(&pid).unwrap_or_default();
    let gen_cpu_up = process_cpu("self").unwrap_or_default() - gen_cpu0;
    println!(
        "{} of {n} phones registered in {:.2} s (PKI + edge start + bring-up {:.2} s); \
         edge CPU {:.2} s, generator CPU {:.2} s so far",
        fleet.registered_phones(),
        fleet.bring_up.as_secs_f64(),
        setup.as_secs_f64(),
        edge_cpu_up.as_secs_f64(),
        gen_cpu_up.as_secs_f64()
    );
    for (e, count) in &fleet.bring_up_errors {
        println!("  failed to come up ({count}): {e}");
    }
    let mut ok = fleet.registered_phones() == n;
    if let Ok(fd) = std::fs::read_dir(format!("/proc/{pid}/fd")) {
        println!("edge open descriptors: {}", fd.count());
    }
    if let Ok(limits) = std::fs::read_to_string(format!("/proc/{pid}/limits")) {
        if let Some(l) = limits.lines().find(|l| l.starts_with("Max open files")) {
            println!("edge {l}");
        }
    }

    // Idle: sample every 5 s (bounded by --idle-secs).
    let rss_up = process_rss_kib(&pid).unwrap_or_default();
    let c0 = fleet.counters.snapshot();
    let e0 = process_cpu(&pid).unwrap_or_default();
    let g0 = process_cpu("self").unwrap_or_default();
    let i0 = Instant::now();
    println!(
        "idle {} s, keep-alive every {} s; edge RSS after bring-up {:.1} MiB",
        args.idle.as_secs(),
        args.options.keepalive.as_secs(),
        rss_up as f64 / 1024.0
    );
    let mut last = (i0, e0, g0);
    while i0.elapsed() < args.idle {
        let step = Duration::from_secs(5).min(args.idle - i0.elapsed());
        std::thread::sleep(step);
        let (t, e, g) = (
            Instant::now(),
            process_cpu(&pid).unwrap_or_default(),
            process_cpu("self").unwrap_or_default(),
        );
        let dt = (t - last.0).as_secs_f64().max(1e-3);
        let c = fleet.counters.snapshot();
        println!(
            "  t={:>4.0}s edge RSS {:>7.1} MiB, edge CPU {:>5.2} %, generator CPU {:>5.2} %, \
             keep-alives {} pongs {} missing {} re-registers {} disconnects {}",
            (t - i0).as_secs_f64(),
            process_rss_kib(&pid).unwrap_or_default() as f64 / 1024.0,
            (e - last.1).as_secs_f64() / dt * 100.0,
            (g - last.2).as_secs_f64() / dt * 100.0,
            c.keepalives_sent - c0.keepalives_sent,
            c.pongs - c0.pongs,
            c.pongs_missing - c0.pongs_missing,
            c.reregisters - c0.reregisters,
            c.disconnects - c0.disconnects,
        );
        last = (t, e, g);
    }
    let idle = i0.elapsed().as_secs_f64().max(1e-3);
    let e1 = process_cpu(&pid).unwrap_or_default();
    let g1 = process_cpu("self").unwrap_or_default();
    let rss = process_rss_kib(&pid).unwrap_or_default();
    let c = fleet.counters.snapshot();
    let metrics = fleet.edge_metrics().unwrap_or_default();
    let regs = metric(&metrics, "pbx_edge_registrations_active");
    let conns = metric(&metrics, "pbx_edge_tls_connections_active");
    println!("--- {n} phones, idle {idle:.0} s");
    println!(
        "registered {} / {n} in {:.2} s ({:.0} phones/s: TCP + TLS handshake + REGISTER / 200)",
        fleet.registered_phones(),
        fleet.bring_up.as_secs_f64(),
        fleet.registered_phones() as f64 / fleet.bring_up.as_secs_f64().max(1e-3)
    );
    println!(
        "edge RSS {:.1} MiB (VmRSS); generator RSS {:.1} MiB",
        rss as f64 / 1024.0,
        process_rss_kib("self").unwrap_or_default() as f64 / 1024.0
    );
    println!(
        "edge CPU idle {:.2} % of one core; generator CPU idle {:.2} % of one core",
        (e1 - e0).as_secs_f64() / idle * 100.0,
        (g1 - g0).as_secs_f64() / idle * 100.0
    );
    println!(
        "keep-alives {} pongs {} missing {}; re-registers {} (failed {}); disconnects {}; \
         requests from the edge answered {}",
        c.keepalives_sent - c0.keepalives_sent,
        c.pongs - c0.pongs,
        c.pongs_missing,
        c.reregisters,
        c.reregister_failures,
        c.disconnects,
        c.phone_requests_answered
    );
    println!(
        "edge gauges: pbx_edge_registrations_active {regs:?}, pbx_edge_tls_connections_active \
         {conns:?}; PBX saw {} REGISTERs",
        c.pbx_registers
    );
    let up = fleet.registered_phones() as f64;
    if regs != Some(up) || conns != Some(up) {
        eprintln!("FAIL: the edge's gauges do not match the {up} registered phones");
        ok = false;
    }
    if c.pongs_missing > 0 || c.disconnects > 0 || c.reregister_failures > 0 {
        eprintln!("FAIL: keep-alives unanswered, connections lost or re-registrations failed");
        ok = false;
    }
    if c.keepalives_sent > c0.keepalives_sent && c.pongs == 0 {
        eprintln!("FAIL: no keep-alive was answered");
        ok = false;
    }
    let log = fleet.edge_log_tail();
    if !log.trim().is_empty() {
        println!("edge log (warnings and errors, last lines):\n{log}");
    }
    match fleet.stop() {
        Ok(how) => println!("edge {how}"),
        Err(e) => {
            eprintln!("FAIL: {e}");
            ok = false;
        }
    }
    ok
}
