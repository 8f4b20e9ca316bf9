//! Graceful shutdown with calls (issue 16, edge faults), on the real binary: SIGTERM lets a
//! call that ends within `shutdown.drain_timeout_secs` end normally, exits at once when nothing
//! is in flight (transactions that only absorb retransmissions do not count), and ends calls
//! still up at the deadline with a BYE on both legs; a SIGHUP reload during calls loses none.
//! Every process is stopped by its PID (`Running` kills it on drop).

use super::config_cli::{run_dev, Running};
use crate::support::edge::{self, TestPki};
use crate::support::http;
use crate::support::pbx::{self, Pbx};
use crate::support::phone::{self, Phone};
use crate::support::tls_client;
use pbx_edge::sip::message::SipMessage;
use std::net::SocketAddr;
use std::time::Duration;

const PHONE_KEY: &str = "WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz";

/// An established phone → PBX call through the binary.
pub(super) struct Call {
    pub(super) phone: Phone,
    /// The phone's ACK (its BYE is built from it).
    pub(super) ack: String,
    /// Where the edge sends the PBX leg from.
    edge_pbx: SocketAddr,
}

async fn connect(pki: &TestPki, running: &Running) -> Phone {
    let cfg = tls_client::client_config(&pki.pki.server_ca, Some(&pki.pki.snom_device));
    Phone::new(
        tls_client::connect(running.tls, "sbc.test", cfg)
            .await
            .expect("handshake"),
    )
}

fn invite(call_id: &str) -> String {
    let sdp = format!("v=0\r\no=snom 1 1 IN IP4 127.0.0.1\r\ns=call\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 5004 RTP/SAVP 0\r\na=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{PHONE_KEY}\r\na=rtpmap:0 PCMU/8000\r\na=sendrecv\r\n");
    format!("INVITE sip:200@sbc.test SIP/2.0\r\nVia: SIP/2.0/TLS 127.0.0.1:5099;branch=z9hG4bK-{call_id}-inv;rport\r\nFrom: <sip:101@sbc.test>;tag=caller-{call_id}\r\nTo: <sip:200@sbc.test>\r\nCall-ID: {call_id}\r\nCSeq: 1 INVITE\r\nMax-Forwards: 70\r\nContact: <sip:101@127.0.0.1:5099;transport=tls>\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}", sdp.len())
}

fn pbx_200(req: &SipMessage) -> String {
    let sdp = "v=0\r\no=asterisk 9 9 IN IP4 127.0.0.1\r\ns=Asterisk\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 6004 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=sendrecv\r\n";
    pbx::response(
        req,
        200,
        "OK",
        "Contact: <sip:200@127.0.0.1:5060>\r\nContent-Type: application/sdp\r\n",
    )
    .replace(
        "Content-Length: 0\r\n\r\n",
        &format!("Content-Length: {}\r\n\r\n{sdp}", sdp.len()),
    )
}

/// INVITE → 100 → (PBX) 200 → ACK: the call is up on both legs.
pub(super) async fn establish(pki: &TestPki, running: &Running, pbx: &Pbx, call_id: &str) -> Call {
    let mut phone = connect(pki, running).await;
    phone.send(&invite(call_id)).await;
    assert_eq!(phone.recv().await.expect("100 Trying").status(), Some(100));
    let (inv, edge_pbx) = pbx.recv().await.expect("the PBX gets the INVITE");
    pbx.send(edge_pbx, &pbx_200(&inv)).await;
    let ok = phone.recv().await.expect("the phone gets the 200");
    assert_eq!(ok.status(), Some(200));
    let ack = format!("ACK sip:sbc.test:{} SIP/2.0\r\nVia: SIP/2.0/TLS 127.0.0.1:5099;branch=z9hG4bK-{call_id}-ack\r\nFrom: <sip:101@sbc.test>;tag=caller-{call_id}\r\nTo: {}\r\nCall-ID: {call_id}\r\nCSeq: 1 ACK\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n", running.tls.port(), ok.header("To").unwrap());
    phone.send(&ack).await;
    let (got, _) = pbx.recv().await.expect("the PBX gets the ACK");
    assert_eq!(got.method().map(|m| m.as_str()), Some("ACK"));
    Call {
        phone,
        ack,
        edge_pbx,
    }
}

/// The phone hangs up; the PBX answers its BYE; the phone gets the 200.
pub(super) async fn hang_up(call: &mut Call, pbx: &Pbx, call_id: &str) {
    let bye = call
        .ack
        .replace("ACK sip", "BYE sip")
        .replace(&format!("{call_id}-ack"), &format!("{call_id}-bye"))
        .replace("CSeq: 1 ACK", "CSeq: 2 BYE");
    call.phone.send(&bye).await;
    let (got, from) = pbx.recv().await.expect("the PBX gets the phone's BYE");
    assert_eq!(got.method().map(|m| m.as_str()), Some("BYE"));
    assert_eq!(from, call.edge_pbx);
    pbx.send(from, &pbx::response(&got, 200, "OK", "")).await;
    let ok = call.phone.recv().await.expect("the phone gets the 200");
    assert_eq!(ok.status(), Some(200));
    assert_eq!(ok.cseq().unwrap().seq, 2);
}

pub(super) async fn metric(running: &Running, name: &str) -> f64 {
    http::metric(&http::get(running.admin, "/metrics").await.1, name)
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
    let pki = edge::dev_pki();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let pbx = rt.block_on(Pbx::bind());
    let pbx_addr = pbx.addr().to_string();
    let mut running = run_dev(
        &pki,
        &[
            ("PBX_EDGE_PBX__ADDRESS", pbx_addr.as_str()),
            ("PBX_EDGE_SHUTDOWN__DRAIN_TIMEOUT_SECS", "600"),
            ("PBX_EDGE_MEDIA__PORT_MIN", "44100"),
            ("PBX_EDGE_MEDIA__PORT_MAX", "44199"),
        ],
    );
    // The phone stays connected (as registered phones do) until the edge has exited.
    let _call = rt.block_on(async {
        let mut call = establish(&pki, &running, &pbx, "drain-idle").await;
        hang_up(&mut call, &pbx, "drain-idle").await;
        assert_eq!(metric(&running, "pbx_edge_calls_active").await, 0.0);
        // The test can fail: absorbing transactions are still there when the signal comes.
        assert!(
            metric(&running, "pbx_edge_sip_transactions_active").await > 0.0,
            "the PBX leg's INVITE/BYE transactions still absorb retransmissions"
        );
        running.signal("TERM");
        call
    });
    let status = running.wait_exit();
    let log = running.log().join("\n");
    assert_eq!(status.code(), Some(0), "{log}");
    assert!(log.contains("drained: nothing in flight"), "{log}");
}

/// A call in progress when SIGTERM arrives is not cut: the phone can still hang up within the
/// drain time, its BYE reaches the PBX, and the edge exits once the call is over.
#[test]
fn sigterm_during_a_call_lets_it_end_normally_then_exits() {
    let pki = edge::dev_pki();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let pbx = rt.block_on(Pbx::bind());
    let pbx_addr = pbx.addr().to_string();
    let mut running = run_dev(
        &pki,
        &[
            ("PBX_EDGE_PBX__ADDRESS", pbx_addr.as_str()),
            ("PBX_EDGE_SHUTDOWN__DRAIN_TIMEOUT_SECS", "600"),
            // Short timers: the INVITE's absorb timers are over before the signal, so only
            // the call itself can keep the edge up.
            ("PBX_EDGE_SIP__T1_MS", "50"),
            ("PBX_EDGE_MEDIA__PORT_MIN", "44200"),
            ("PBX_EDGE_MEDIA__PORT_MAX", "44299"),
        ],
    );
    let _call = rt.block_on(async {
        let mut call = establish(&pki, &running, &pbx, "drain-call").await;
        let mut txns = 1.0;
        for _ in 0..200 {
            txns = metric(&running, "pbx_edge_sip_transactions_active").await;
            if txns == 0.0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(txns, 0.0, "no transaction left, only the call");
        running.signal("TERM");
        draining(&running).await;
        assert_eq!(metric(&running, "pbx_edge_calls_active").await, 1.0);
        assert!(
            running.child.try_wait().expect("wait").is_none(),
            "the edge stays up while the call is"
        );
        hang_up(&mut call, &pbx, "drain-call").await;
        call
    });
    let status = running.wait_exit();
    let log = running.log().join("\n");
    assert_eq!(status.code(), Some(0), "{log}");
    assert!(log.contains("drained: nothing in flight"), "{log}");
}

/// A call still up when the drain time runs out is ended properly: a BYE to the PBX and to the
/// phone (counted as `outcome="shutdown"`), not a silent drop that leaves both sides talking to
/// a relay that is gone.
#[test]
fn drain_timeout_ends_calls_left_with_bye_to_both_legs() {
    let pki = edge::dev_pki();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let pbx = rt.block_on(Pbx::bind());
    let pbx_addr = pbx.addr().to_string();
    let mut running = run_dev(
        &pki,
        &[
            ("PBX_EDGE_PBX__ADDRESS", pbx_addr.as_str()),
            ("PBX_EDGE_SHUTDOWN__DRAIN_TIMEOUT_SECS", "1"),
            ("PBX_EDGE_MEDIA__PORT_MIN", "44300"),
            ("PBX_EDGE_MEDIA__PORT_MAX", "44399"),
        ],
    );
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
    let status = running.wait_exit();
    let log = running.log().join("\n");
    assert_eq!(status.code(), Some(0), "{log}");
    assert!(log.contains("calls ended by shutdown"), "{log}");
}

/// Issue 16, edge faults: a reload (SIGHUP: certificates, CAs, CRLs, inventory) while calls
/// are in progress loses none of them. Ten calls (`sip.max_calls_per_device` allows 16 for the
/// one device certificate) are up when the signal comes; after the reload every one still ends
/// normally, its BYE passing authorization against the new inventory snapshot.
#[test]
fn sighup_reload_during_calls_loses_none() {
    const CALLS: usize = 10;
    let pki = edge::dev_pki();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let pbx = rt.block_on(Pbx::bind());
    let pbx_addr = pbx.addr().to_string();
    let running = run_dev(
        &pki,
        &[
            ("PBX_EDGE_PBX__ADDRESS", pbx_addr.as_str()),
            ("PBX_EDGE_MEDIA__PORT_MIN", "44700"),
            ("PBX_EDGE_MEDIA__PORT_MAX", "44799"),
        ],
    );
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
        let mut reloaded = 0.0;
        for _ in 0..100 {
            reloaded = metric(&running, ok).await;
            if reloaded >= 1.0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(reloaded, 1.0, "{}", running.log().join("\n"));
        assert_eq!(
            metric(&running, "pbx_edge_calls_active").await,
            CALLS as f64,
            "no call lost to the reload"
        );
        for (i, call) in calls.iter_mut().enumerate() {
            hang_up(call, &pbx, &format!("hup-{i}")).await;
        }
        assert_eq!(metric(&running, "pbx_edge_calls_active").await, 0.0);
        assert_eq!(
            metric(&running, "pbx_edge_calls_total{outcome=\"bye\"}").await,
            CALLS as f64
        );
    });
    drop(running);
}
