//! The load generator's pbx-edge control path (benches/load/calls/edge.rs) against the real
//! binary this package builds: phones with their own device certificates register (RFC 5626
//! outbound), keep their flows alive, place calls whose media descriptions the generator
//! gets, churn short calls, hang up, and the edge is stopped by its PID. Loopback only, every
//! wait bounded.

#[path = "../benches/load/calls/edge.rs"]
mod edge;
#[path = "../benches/load/calls/legs.rs"]
#[allow(dead_code)]
mod legs;

use std::time::{Duration, Instant};

use edge::{metric, EdgeOptions};

fn options(phones: usize) -> EdgeOptions {
    EdgeOptions {
        edge_binary: env!("CARGO_BIN_EXE_pbx-edge").into(),
        phones,
        // Two phones per source address: the fleet spreads over several 127.1.0.x.
        phones_per_source: 2,
        keepalive: Duration::from_secs(1),
        // Ports no other test uses.
        port_min: 46000,
        port_max: 46199,
        connect_concurrency: 4,
        ..EdgeOptions::default()
    }
}

#[test]
fn calls_through_the_edge_binary_give_the_generator_both_legs_and_end_cleanly() {
    let run = edge::setup_calls(3, &options(5)).expect("calls set up");
    assert_eq!(run.fleet.registered_phones(), 5, "every phone registered");
    assert_eq!(run.media.len(), 3);
    for m in &run.media {
        // The phone leg: the edge's relay port and its own SDES key (RFC 4568), not ours.
        assert!(
            (46000..=46199).contains(&m.phone_target.port()),
            "{}: phone target {}",
            m.call_id,
            m.phone_target
        );
        assert_eq!(m.phone_receives_with.suite, "AES_CM_128_HMAC_SHA1_80");
        assert!(m.phone_receives_with.key_params.starts_with("inline:"));
        assert_ne!(m.phone_receives_with, m.phone_sends_with);
        // The PBX leg: the edge's PBX-side relay port, another one than the phone side.
        assert!((46000..=46199).contains(&m.pbx_target.port()));
        assert_ne!(m.pbx_target, m.phone_target);
        assert_eq!(
            m.pbx_socket.local_addr().unwrap().ip(),
            m.pbx_target.ip(),
            "both on loopback"
        );
    }
    let metrics = run.fleet.edge_metrics().expect("/metrics");
    assert_eq!(metric(&metrics, "pbx_edge_calls_active"), Some(3.0));
    assert_eq!(metric(&metrics, "pbx_edge_registrations_active"), Some(5.0));

    // Keep-alives: every phone's CRLF CRLF gets its CRLF pong (bounded wait).
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut c = run.fleet.counters.snapshot();
    while c.pongs < 10 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
        c = run.fleet.counters.snapshot();
    }
    assert!(c.pongs >= 10, "pongs: {c:?}");
    assert_eq!(c.pongs_missing, 0, "{c:?}");
    assert_eq!(c.disconnects, 0, "{c:?}");

    // New calls while the others stay up: all complete (INVITE/200/ACK/BYE/200).
    let churn = run.churn(20.0, 0.3);
    assert_eq!(churn.attempted, 6);
    assert_eq!(churn.completed, 6, "{churn:?}");
    assert_eq!(run.fleet.counters.snapshot().pbx_byes, 6);

    let pid = run.pid;
    run.finish()
        .expect("every BYE answered 200 and the edge stopped");
    // Reaped by `finish`: no process of that PID runs our generated config any more.
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    assert!(
        !String::from_utf8_lossy(&cmdline).contains("pbx-edge-fleet."),
        "the edge (pid {pid}) still runs"
    );
}

#[test]
fn a_phone_the_inventory_does_not_know_cannot_place_a_call() {
    // The edge's authorization is the per-MAC inventory: the fleet's PBX must never see an
    // INVITE from a user the calling device is not granted.
    let fleet = edge::Fleet::start(&options(2)).expect("fleet up");
    assert_eq!(fleet.registered_phones(), 2);
    let refused = fleet.call_as_other_user(0, 1).expect("the edge answers");
    assert_eq!(refused, 403, "phone 0 calling as phone 1's user");
    assert_eq!(fleet.counters.snapshot().pbx_invites, 0);
    fleet.stop().expect("edge stopped by its PID");
}
