//! Media relay load tool (harness = false; loopback only; bounded in time and packets).
//!
//! ```text
//! cargo bench --bench relay_load -- [--streams 500] [--pps 50] [--secs 10] [--workers 1]
//!     [--coalesce-us 500] [--slot-us 100] [--plain] [--baseline] [--direct] [--ramp]
//!     [--port-min 10000] [--io auto|batched|per_packet]
//! ```
//! Default: 500 streams × 50 packets/s each way (25 000 pkt/s per direction) with SRTP on the
//! phone side, 1 s warm-up then a 10 s measured window. Prints relayed packets/s, loss, relay
//! worker CPU per packet, wake-ups per packet and latency p50/p99.
//! `--baseline` replaces the relay by a bare recv→send forwarder with the same threading and
//! coalescing (no SRTP, latching or counters): the kernel + epoll floor on this machine.
//! `--io` chooses the relay's socket I/O (`media.io`, default `auto`); with `--baseline`,
//! `--io batched` makes the bare forwarder batched too (io_uring, as the relay does it: the
//! bare batched forwarder floor), anything else keeps it per-packet.
//! `--direct` sends straight from generator to sink (no relay): the latency floor to subtract.
//! `--ramp` doubles the per-stream rate from `--pps` until packets are lost (at most 8 steps)
//! and reports the highest zero-loss rate.

mod harness;

use std::time::Duration;

use harness::{run, LoadConfig};
use pbx_edge::config::MediaIo;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut cfg = LoadConfig::default();
    let mut ramp = false;
    let mut i = 0;
    let value = |i: usize| -> f64 {
        args.get(i + 1)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or_else(|| panic!("{} needs a number", args[i]))
    };
    while i < args.len() {
        match args[i].as_str() {
            "--streams" => cfg.streams = value(i) as usize,
            "--pps" => cfg.pps = value(i) as u32,
            "--secs" => cfg.secs = value(i).min(120.0),
            "--workers" => cfg.workers = value(i) as usize,
            "--coalesce-us" => cfg.coalesce = Duration::from_micros(value(i) as u64),
            "--slot-us" => cfg.slot = Duration::from_micros(value(i) as u64),
            "--port-min" => cfg.port_min = value(i) as u16,
            "--io" => {
                cfg.io = match args.get(i + 1).map(String::as_str) {
                    Some("auto") => MediaIo::Auto,
                    Some("batched") => MediaIo::Batched,
                    Some("per_packet") => MediaIo::PerPacket,
                    other => panic!("--io needs auto, batched or per_packet, not {other:?}"),
                }
            }
            "--plain" => {
                cfg.srtp = false;
                i += 1;
                continue;
            }
            "--direct" => {
                cfg.direct = true;
                i += 1;
                continue;
            }
            "--baseline" => {
                cfg.baseline = true;
                i += 1;
                continue;
            }
            "--ramp" => {
                ramp = true;
                i += 1;
                continue;
            }
            // `cargo bench` passes --bench; ignore anything unknown.
            _ => {
                i += 1;
                continue;
            }
        }
        i += 2;
    }
    cfg.streams = cfg.streams.clamp(1, 2000);
    cfg.pps = cfg.pps.clamp(1, 200_000);
    println!("config: {cfg:?}");
    if !ramp {
        run(&cfg).print(&format!("{} streams x {} pps", cfg.streams, cfg.pps));
        return;
    }
    let mut best = None;
    for _ in 0..8 {
        let report = run(&cfg);
        report.print(&format!("{} streams x {} pps", cfg.streams, cfg.pps));
        if report.lost() > 0 {
            break;
        }
        best = Some((cfg.pps, report.relay_pps()));
        cfg.pps = cfg.pps.saturating_mul(2);
    }
    match best {
        Some((pps, relayed)) => println!(
            "highest zero-loss rate: {} streams x {pps} pps = {relayed:.0} relayed pkt/s",
            cfg.streams
        ),
        None => println!("loss already at the starting rate"),
    }
}
