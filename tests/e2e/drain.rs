//! Graceful shutdown with calls (issue 16, edge faults), on the real binary: SIGTERM lets a
//! call that ends within `shutdown.drain_timeout_secs` end normally, exits at once when nothing
//! is in flight (transactions that only absorb retransmissions do not count), and ends calls
//! still up at the deadline with a BYE on both legs; a SIGHUP reload during calls loses none.
//! Every process is stopped by its PID (`Running` kills it on drop).

use super::config_cli::{run_dev, Running};
use crate::support::edge::{self, TestPki};
use crate::support::http;
use crate::support::offer::{pbx_pcmu_sdp, phone_sdp};
use crate::support::pbx::{self, Pbx};
use crate::support::phone::{self, Phone};
use crate::support::ports;
use crate::support::scenario::{ack, answer, dial, phone_hangs_up, wait_metric, Dialog};
use std::net::SocketAddr;
use std::time::Duration;

/// An established phone → PBX call through the binary.
pub(super) struct Call {
    pub(super) phone: Phone,
    /// The phone's side of the dialog.
    pub(super) d: Dialog,
    /// Where the edge sends the PBX leg from.
    edge_pbx: SocketAddr,
}

/// INVITE → 100 → (PBX) 200 → ACK: the call is up on both legs.
pub(super) async fn establish(pki: &TestPki, running: &Running, pbx: &Pbx, call_id: &str) -> Call {
    let mut phone = phone::snom_at(pki, running.tls).await;
    let mut d = Dialog::phone(call_id, &format!("caller-{call_id}"), running.tls);
    let invite = d.invite("sip:200@sbc.test", "", &phone_sdp(5004, 1, 1));
    let (inv, edge_pbx) = dial(pbx, &mut phone, &invite).await;
    let ok = answer(pbx, &mut phone, &inv, edge_pbx, &pbx_pcmu_sdp(6004)).await;
    d.confirmed_by(&ok);
    ack(pbx, &mut phone, &d, 1).await;
    Call { phone, d, edge_pbx }
}

/// The phone hangs up (BYE, CSeq 2); the PBX answers its BYE; the phone gets the 200.
pub(super) async fn hang_up(call: &mut Call, pbx: &Pbx) {
    phone_hangs_up(pbx, &mut call.phone, &call.d, 2, Some(call.edge_pbx)).await;
}

pub(super) async fn metric(running: &Running, name: &str) -> f64 {
    http::metric(&http::get(running.admin, "/metrics").await.1, name)
}

/// Polls `name` (bounded) until `done` holds; its last value.
pub(super) async fn wait_for(running: &Running, name: &str, done: impl Fn(f64) -> bool) -> f64 {
    http::metric(&wait_metric(running.admin, name, done).await, name)
}

/// A dev PKI, a runtime, a UDP PBX and the binary in front of it with `extra` overrides.
pub(super) fn start(extra: &[(&str, &str)]) -> (TestPki, tokio::runtime::Runtime, Pbx, Running) {
    let pki = edge::dev_pki();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let pbx = rt.block_on(Pbx::bind());
    let pbx_addr = pbx.addr().to_string();
    let mut env = vec![("PBX_EDGE_PBX__ADDRESS", pbx_addr.as_str())];
    env.extend_from_slice(extra);
    let running = run_dev(&pki, &env);
    (pki, rt, pbx, running)
}

/// The binary exits with status 0 (bounded) and its log says `says`.
fn exits_cleanly(mut running: Running, says: &str) {
    let status = running.wait_exit();
    let log = running.log().join("\n");
    assert_eq!(status.code(), Some(0), "{log}");
    assert!(log.contains(says), "{log}");
}

/// `/readyz` turns 503 (bounded wait): the signal was handled.
async fn draining(running: &Running) {
    for _ in 0..100 {
        if http::get(running.admin, "/readyz").await.0 == 503 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("/readyz did not turn 503 after SIGTERM");
}

/// The rolling-update case: a call just ended, its PBX-leg transactions still absorb
/// retransmissions (RFC 6026 Timer M = 64·T1 = 32 s with the default T1, Timer K = T4) and
/// nothing else is in flight. The edge exits at once, not after those timers or the (here
/// 600 s) drain timeout; `wait_exit` gives it 15 s.
#[test]
fn sigterm_with_nothing_in_flight_exits_at_once_while_absorb_timers_run() {
    let (pki, rt, pbx, running) = start(&[
        ("PBX_EDGE_SHUTDOWN__DRAIN_TIMEOUT_SECS", "600"),
        ("PBX_EDGE_MEDIA__PORT_MIN", ports::DRAIN_ONE.0),
        ("PBX_EDGE_MEDIA__PORT_MAX", ports::DRAIN_ONE.1),
    ]);
    // The phone stays connected (as registered phones do) until the edge has exited.
    let _call = rt.block_on(async {
        let mut call = establish(&pki, &running, &pbx, "drain-idle").await;
        hang_up(&mut call, &pbx).await;
        assert_eq!(metric(&running, "pbx_edge_calls_active").await, 0.0);
        // The test can fail: absorbing transactions are still there when the signal comes.
        assert!(
            metric(&running, "pbx_edge_sip_transactions_active").await > 0.0,
            "the PBX leg's INVITE/BYE transactions still absorb retransmissions"
        );
        running.signal("TERM");
        call
    });
    exits_cleanly(running, "drained: nothing in flight");
}

/// A call in progress when SIGTERM arrives is not cut: the phone can still hang up within the
/// drain time, its BYE reaches the PBX, and the edge exits once the call is over.
#[test]
fn sigterm_during_a_call_lets_it_end_normally_then_exits() {
    let (pki, rt, pbx, mut running) = start(&[
        ("PBX_EDGE_SHUTDOWN__DRAIN_TIMEOUT_SECS", "600"),
        // Short timers: the INVITE's absorb timers are over before the signal, so only
        // the call itself can keep the edge up.
        ("PBX_EDGE_SIP__T1_MS", "50"),
        ("PBX_EDGE_MEDIA__PORT_MIN", ports::DRAIN_TWO.0),
        ("PBX_EDGE_MEDIA__PORT_MAX", ports::DRAIN_TWO.1),
    ]);
    let _call = rt.block_on(async {
        let mut call = establish(&pki, &running, &pbx, "drain-call").await;
        let txns = wait_for(&running, "pbx_edge_sip_transactions_active", |v| v == 0.0).await;
        assert_eq!(txns, 0.0, "no transaction left, only the call");
        running.signal("TERM");
        draining(&running).await;
        assert_eq!(metric(&running, "pbx_edge_calls_active").await, 1.0);
        assert!(
            running.child.try_wait().expect("wait").is_none(),
            "the edge stays up while the call is"
        );
        hang_up(&mut call, &pbx).await;
        call
    });
    exits_cleanly(running, "drained: nothing in flight");
}

/// A call still up when the drain time runs out is ended properly: a BYE to the PBX and to the
/// phone (counted as `outcome="shutdown"`), not a silent drop that leaves both sides talking to
/// a relay that is gone.
#[test]
fn drain_timeout_ends_calls_left_with_bye_to_both_legs() {
    let (pki, rt, pbx, running) = start(&[
        ("PBX_EDGE_SHUTDOWN__DRAIN_TIMEOUT_SECS", "1"),
        ("PBX_EDGE_MEDIA__PORT_MIN", ports::DRAIN_THREE.0),
        ("PBX_EDGE_MEDIA__PORT_MAX", ports::DRAIN_THREE.1),
    ]);
    rt.block_on(async {
        let mut call = establish(&pki, &running, &pbx, "drain-cut").await;
        running.signal("TERM");
        let (bye, from) = pbx
            .recv_within(Duration::from_secs(10))
            .await
            .expect("the PBX gets a BYE at the drain deadline");
        assert_eq!(bye.method().map(|m| m.as_str()), Some("BYE"));
        assert_eq!(bye.call_id().unwrap(), "drain-cut");
        // Both BYEs are out and the edge waits (bounded) for their answers: its metrics are
        // still served.
        assert_eq!(
            metric(&running, "pbx_edge_calls_total{outcome=\"shutdown\"}").await,
            1.0
        );
        assert_eq!(metric(&running, "pbx_edge_calls_active").await, 0.0);
        pbx.send(from, &pbx::response(&bye, 200, "OK", "")).await;
        let bye = call
            .phone
            .recv_within(Duration::from_secs(10))
            .await
            .expect("the phone gets a BYE too");
        assert_eq!(bye.method().map(|m| m.as_str()), Some("BYE"));
        assert_eq!(bye.call_id().unwrap(), "drain-cut");
        call.phone.send(&phone::response(&bye, 200)).await;
    });
    exits_cleanly(running, "calls ended by shutdown");
}

/// Issue 16, edge faults: a reload (SIGHUP: certificates, CAs, CRLs, inventory) while calls
/// are in progress loses none of them. A hundred calls, each on its own connection, are up
/// when the signal comes (all from the one development device certificate, so its per-device
/// call, port and request caps are raised for the test); after the reload every one still
/// ends normally, its BYE passing authorization against the new inventory snapshot.
#[test]
fn sighup_reload_during_calls_loses_none() {
    const CALLS: usize = 100;
    let (pki, rt, pbx, running) = start(&[
        // 400 ports for 100 calls, in a block no other test uses (tests run in parallel).
        ("PBX_EDGE_MEDIA__PORT_MIN", ports::SIGHUP_HUNDRED_CALLS.0),
        ("PBX_EDGE_MEDIA__PORT_MAX", ports::SIGHUP_HUNDRED_CALLS.1),
        ("PBX_EDGE_SIP__MAX_CALLS_PER_DEVICE", "128"),
        ("PBX_EDGE_MEDIA__MAX_PORTS_PER_DEVICE", "512"),
        ("PBX_EDGE_SIP__PHONE_REQUEST_BURST", "1000"),
    ]);
    rt.block_on(async {
        let mut calls = Vec::new();
        for i in 0..CALLS {
            calls.push(establish(&pki, &running, &pbx, &format!("hup-{i}")).await);
        }
        assert_eq!(
            metric(&running, "pbx_edge_calls_active").await,
            CALLS as f64
        );
        let ok = "pbx_edge_identity_reloads_total{result=\"ok\"}";
        assert_eq!(metric(&running, ok).await, 0.0);
        running.signal("HUP");
        let reloaded = wait_for(&running, ok, |v| v >= 1.0).await;
        assert_eq!(reloaded, 1.0, "{}", running.log().join("\n"));
        assert_eq!(
            metric(&running, "pbx_edge_calls_active").await,
            CALLS as f64,
            "no call lost to the reload"
        );
        for call in calls.iter_mut() {
            hang_up(call, &pbx).await;
        }
        assert_eq!(metric(&running, "pbx_edge_calls_active").await, 0.0);
        assert_eq!(
            metric(&running, "pbx_edge_calls_total{outcome=\"bye\"}").await,
            CALLS as f64
        );
    });
    drop(running);
}
