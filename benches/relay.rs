//! Relay throughput bench (harness = false, loopback only, bounded): one stream, SRTP on and
//! off (the "no protection" baseline, like quinn's perf/noprotection.rs). The per-direction
//! rate doubles from 2 000 packets/s until the first loss (at most 7 steps of 2 s); the
//! highest zero-loss rate is reported. For many streams use the load tool:
//! `cargo bench --bench relay_load`.

#[path = "load/harness.rs"]
mod harness;

use std::time::Duration;

use harness::{run, LoadConfig};

fn main() {
    for srtp in [true, false] {
        let mut cfg = LoadConfig {
            streams: 1,
            pps: 2_000,
            secs: 2.0,
            warmup: Duration::from_millis(300),
            workers: 1,
            srtp,
            port_min: 14000,
            ..LoadConfig::default()
        };
        let label = if srtp { "SRTP<->RTP" } else { "plain" };
        let mut best = None;
        for _ in 0..7 {
            let report = run(&cfg);
            report.print(&format!("1 stream {label} {} pps/direction", cfg.pps));
            if report.lost() > 0 {
                break;
            }
            best = Some(report.relay_pps());
            cfg.pps *= 2;
        }
        match best {
            Some(relayed) => println!(
                "RESULT 1 stream {label}: highest zero-loss rate {relayed:.0} relayed pkt/s \
                 (both directions)"
            ),
            None => println!("RESULT 1 stream {label}: loss already at the starting rate"),
        }
    }
}
