//! Issue 16, failover with a real phone: two `pbx-edge` processes (the release binary under
//! test) in front of one PBX, and baresip 1.0.0 configured with both as RFC 5626 outbound
//! proxies (`sipnat=outbound;outbound1=<A>;outbound2=<B>`): it registers through each (one flow
//! per edge, reg-id 1 and 2, the same +sip.instance), so the PBX holds one Contact per edge,
//! each naming that edge. Edge A is killed (SIGKILL): a PBX → phone INVITE to the Contact through
//! B rings the phone, and the phone's refresh through B keeps that Contact.
//!
//! What baresip 1.0.0 does not do (README "Scaling out and failover"): it sends its own new
//! requests only through `outbound1` (`ua_outbound()` returns `outboundv[0]`, "should be
//! rotated?"), so after A dies its outgoing calls fail until A is back; the last part of the test
//! records that. Desk phones with a backup outbound proxy or DNS SRV failover re-route
//! outgoing requests as well.
//!
//! Every process is stopped by its PID (`PeerProcess` on drop, `baresip -t` as a bound).

use super::baresip::{Baresip, PhoneSetup};
use super::net;
use super::process::PeerProcess;
use crate::support::edge::{self, TestPki};
use crate::support::http;
use crate::support::pbx::{self, Pbx};
use pbx_edge::sip::message::SipMessage;
use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};

const PHONE_BOUND: Duration = Duration::from_secs(90);

/// A `pbx-edge run` process on the development PKI's config, with its own ports.
struct EdgeProcess {
    process: PeerProcess,
    tls: SocketAddr,
    admin: SocketAddr,
    /// Its PBX-side SIP socket: where its REGISTERs come from and its Contacts point.
    pbx_side: SocketAddr,
    _dir: tempfile::TempDir,
}

fn spawn_edge(
    name: &'static str,
    pki: &TestPki,
    pbx: SocketAddr,
    media: (u16, u16),
    extra_env: &[(&str, &str)],
) -> EdgeProcess {
    let local = |port: u16| SocketAddr::from(([127, 0, 0, 1], port));
    let (tls, admin, pbx_side) = (
        local(net::free_tcp_port()),
        local(net::free_tcp_port()),
        local(net::free_udp_port()),
    );
    let dir = tempfile::tempdir().expect("edge tempdir");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_pbx-edge"));
    for (k, _) in std::env::vars() {
        if k.starts_with("PBX_EDGE_") {
            cmd.env_remove(k);
        }
    }
    cmd.args(["run", "--config"])
        .arg(&pki.pki.config)
        .env("RUST_LOG", "info")
        .env("PBX_EDGE_TLS__LISTEN", tls.to_string())
        .env("PBX_EDGE_ADMIN__LISTEN", admin.to_string())
        .env("PBX_EDGE_PBX__LISTEN", pbx_side.to_string())
        .env("PBX_EDGE_PBX__ADDRESS", pbx.to_string())
        .env("PBX_EDGE_MEDIA__PORT_MIN", media.0.to_string())
        .env("PBX_EDGE_MEDIA__PORT_MAX", media.1.to_string())
        .envs(extra_env.iter().copied());
    EdgeProcess {
        process: PeerProcess::spawn(name, cmd, dir.path()),
        tls,
        admin,
        pbx_side,
        _dir: dir,
    }
}

/// Polls `/readyz` (bounded: 20 s).
async fn wait_ready(edge: &mut EdgeProcess) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        // `http::get` wants a listening port: probe it first.
        let listening = tokio::net::TcpStream::connect(edge.admin).await.is_ok();
        let up = listening
            && tokio::time::timeout(Duration::from_secs(2), http::get(edge.admin, "/readyz"))
                .await
                .map(|(status, _)| status == 200)
                .unwrap_or(false);
        if up {
            return;
        }
        assert!(
            Instant::now() < deadline && edge.process.wait_within(Duration::ZERO).is_none(),
            "the edge did not become ready:\n{}",
            edge.process.output()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// How long the PBX grants a registration: the interval the phone asks for, so that it
/// refreshes (at 90 % of it, libre's `sipreg`) within the test.
const EXPIRES: u32 = 20;

/// The PBX as registrar: answers every REGISTER 200 (binding its edge Contact for `EXPIRES`) until
/// `want` holds on the REGISTERs answered so far, as (source, request) pairs; bounded by
/// `limit`. Other requests are left unanswered.
async fn registrar_until(
    pbx: &Pbx,
    limit: Duration,
    seen: &mut Vec<(SocketAddr, SipMessage)>,
    want: impl Fn(&[(SocketAddr, SipMessage)]) -> bool,
) -> bool {
    let deadline = Instant::now() + limit;
    while !want(seen) {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        let Some((m, from)) = pbx.recv_within(left).await else {
            return false;
        };
        if m.method().map(|m| m.as_str()) == Some("REGISTER") {
            let contact = pbx::contact_uri(&m).expect("the edge's Contact");
            pbx.send(from, &pbx::register_ok(&m, &contact, EXPIRES))
                .await;
            seen.push((from, m));
        }
    }
    true
}

fn from_edge(seen: &[(SocketAddr, SipMessage)], edge: &EdgeProcess) -> usize {
    seen.iter()
        .filter(|(from, _)| *from == edge.pbx_side)
        .count()
}

/// baresip (user 101, the Snom-style dev device) with edge A as outbound1 and B as outbound2
/// (`sipnat=outbound`: one RFC 5626 flow through each), registering every `regint` seconds.
fn phone_on_both(pki: &TestPki, a: &EdgeProcess, b: &EdgeProcess, regint: u32) -> Baresip {
    let setup = PhoneSetup {
        edge: a.tls,
        backup_edge: Some(b.tls),
        certificate: &pki.pki.snom_device,
        ca: &pki.pki.server_ca,
        user: "101",
        regint,
        answermode: "manual",
        auth_pass: None,
        media: None,
        // The edges are given by address: no lookup is expected of this resolver.
        dns: SocketAddr::from(([127, 0, 0, 1], 53)),
        verbose: false,
    };
    Baresip::start(&setup, PHONE_BOUND)
}

/// Answers REGISTERs until one has come through each edge (bounded: 20 s), into `seen`.
async fn registered_through_both(
    pbx: &Pbx,
    a: &EdgeProcess,
    b: &EdgeProcess,
    seen: &mut Vec<(SocketAddr, SipMessage)>,
    phone: &mut Baresip,
) {
    let both = registrar_until(pbx, Duration::from_secs(20), seen, |s| {
        from_edge(s, a) >= 1 && from_edge(s, b) >= 1
    })
    .await;
    assert!(
        both,
        "a REGISTER through each edge (seen from {:?}):\n{}\n{}\n{}",
        seen.iter().map(|(f, _)| *f).collect::<Vec<_>>(),
        phone.log(),
        a.process.output(),
        b.process.output()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn baresip_with_both_edges_as_outbound_proxies_is_reached_through_the_survivor() {
    let pki = edge::dev_pki();
    let pbx = Pbx::bind().await;
    let mut a = spawn_edge(
        "edge-a",
        &pki,
        pbx.addr(),
        net::free_range(41000, 45000, 8),
        &[],
    );
    let mut b = spawn_edge(
        "edge-b",
        &pki,
        pbx.addr(),
        net::free_range(45000, 49000, 8),
        &[],
    );
    wait_ready(&mut a).await;
    wait_ready(&mut b).await;

    // Short, so that a refresh through B is seen after A is gone.
    let mut phone = phone_on_both(&pki, &a, &b, EXPIRES);

    // One registration flow through each edge: both REGISTERs reach the PBX, each from its
    // edge, each with that edge's own Contact.
    let mut seen = Vec::new();
    registered_through_both(&pbx, &a, &b, &mut seen, &mut phone).await;
    let contact_of = |edge: &EdgeProcess| {
        seen.iter()
            .find(|(from, _)| *from == edge.pbx_side)
            .and_then(|(_, m)| pbx::contact_uri(m))
            .expect("a Contact")
    };
    let (contact_a, contact_b) = (contact_of(&a), contact_of(&b));
    assert!(
        contact_a.contains(&a.pbx_side.to_string()) && contact_b.contains(&b.pbx_side.to_string()),
        "each edge puts itself in the phone's Contact: {contact_a} / {contact_b}"
    );
    let mut ctrl = phone.ctrl();
    let info = ctrl.reginfo_until(Duration::from_secs(10), |i| i.matches("OK").count() >= 2);
    assert!(
        info.matches("OK").count() >= 2,
        "baresip reports both flows registered: {info:?}\n{}",
        phone.log()
    );

    // Edge A dies.
    a.process.signal("KILL");
    assert!(
        a.process.wait_within(Duration::from_secs(5)).is_some(),
        "edge A exits on SIGKILL"
    );

    // The PBX calls 101 at the Contact it holds through B: the phone rings.
    let pbx_addr = pbx.addr();
    let invite = format!(
        "INVITE {contact_b} SIP/2.0\r\nVia: SIP/2.0/UDP {pbx_addr};branch=z9hG4bK-bfo1\r\nFrom: <sip:200@{pbx_addr}>;tag=pbx-bfo\r\nTo: <sip:101@sbc.test>\r\nCall-ID: baresip-failover-in\r\nCSeq: 1 INVITE\r\nMax-Forwards: 70\r\nContact: <sip:200@{pbx_addr}>\r\nContent-Length: 0\r\n\r\n"
    );
    pbx.send(b.pbx_side, &invite).await;
    let mut ringing = None;
    let deadline = Instant::now() + Duration::from_secs(10);
    while ringing.is_none() && Instant::now() < deadline {
        let Some((m, from)) = pbx.recv_within(Duration::from_secs(1)).await else {
            continue;
        };
        if m.call_id().ok() == Some("baresip-failover-in") && m.status() == Some(180) {
            ringing = Some((m, from));
        } else if m.method().map(|m| m.as_str()) == Some("REGISTER") {
            let contact = pbx::contact_uri(&m).expect("the edge's Contact");
            pbx.send(from, &pbx::register_ok(&m, &contact, EXPIRES))
                .await;
            seen.push((from, m));
        }
    }
    let (ringing, ringing_from) = ringing.unwrap_or_else(|| {
        panic!(
            "the phone rings through B (180 to the PBX):\n{}\n{}",
            phone.log(),
            b.process.output()
        )
    });
    assert_eq!(ringing_from, b.pbx_side, "the 180 comes through B");
    assert!(
        ctrl.wait_event("CALL_INCOMING", Duration::from_secs(5))
            .is_some(),
        "baresip reports the incoming call: {:?}",
        ctrl.events
    );

    // The PBX gives up the call: CANCEL, then the phone's 487 is acknowledged.
    let to_tag = ringing.header("To").unwrap_or_default().to_owned();
    pbx.send(
        b.pbx_side,
        &format!("CANCEL {contact_b} SIP/2.0\r\nVia: SIP/2.0/UDP {pbx_addr};branch=z9hG4bK-bfo1\r\nFrom: <sip:200@{pbx_addr}>;tag=pbx-bfo\r\nTo: <sip:101@sbc.test>\r\nCall-ID: baresip-failover-in\r\nCSeq: 1 CANCEL\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"),
    )
    .await;
    let mut final_status = None;
    let deadline = Instant::now() + Duration::from_secs(10);
    while final_status.is_none() && Instant::now() < deadline {
        let Some((m, from)) = pbx.recv_within(Duration::from_secs(1)).await else {
            continue;
        };
        if m.call_id().ok() == Some("baresip-failover-in")
            && m.cseq().ok().is_some_and(|c| c.method.as_str() == "INVITE")
            && m.status().is_some_and(|s| s >= 300)
        {
            final_status = m.status();
        } else if m.method().map(|m| m.as_str()) == Some("REGISTER") {
            let contact = pbx::contact_uri(&m).expect("the edge's Contact");
            pbx.send(from, &pbx::register_ok(&m, &contact, EXPIRES))
                .await;
            seen.push((from, m));
        }
    }
    assert_eq!(final_status, Some(487), "the cancelled INVITE ends 487");
    pbx.send(
        b.pbx_side,
        &format!("ACK {contact_b} SIP/2.0\r\nVia: SIP/2.0/UDP {pbx_addr};branch=z9hG4bK-bfo1\r\nFrom: <sip:200@{pbx_addr}>;tag=pbx-bfo\r\nTo: {to_tag}\r\nCall-ID: baresip-failover-in\r\nCSeq: 1 ACK\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"),
    )
    .await;

    // The phone keeps its registration through B: a refresh arrives from B (bounded by the
    // 20 s interval), with the same Contact there.
    let before = from_edge(&seen, &b);
    let refreshed = registrar_until(&pbx, Duration::from_secs(25), &mut seen, |s| {
        from_edge(s, &b) > before
    })
    .await;
    assert!(refreshed, "a refresh through B:\n{}", phone.log());
    let last_b = seen
        .iter()
        .rev()
        .find(|(from, _)| *from == b.pbx_side)
        .and_then(|(_, m)| pbx::contact_uri(m));
    assert_eq!(last_b.as_deref(), Some(contact_b.as_str()));

    // baresip 1.0.0's limitation: a call from the phone goes to outbound1 (A, dead) only and
    // fails there ("session closed: Connection refused"; its flow-1 refresh fails the same
    // way); nothing reaches the PBX through B.
    ctrl.command("dial", Some("sip:200@sbc.test"));
    // (The cancelled incoming call has its own CALL_CLOSED: look for this call's reason.)
    let deadline = Instant::now() + Duration::from_secs(15);
    let refused = loop {
        let found = ctrl
            .events
            .iter()
            .find(|(kind, why)| kind == "CALL_CLOSED" && why.contains("Connection refused"));
        if found.is_some() || Instant::now() >= deadline {
            break found.map(|(_, why)| why.clone());
        }
        ctrl.pump(Duration::from_millis(200));
    };
    let mut invites_via_b = 0;
    let deadline = Instant::now() + Duration::from_secs(2);
    while let Some((m, from)) = pbx
        .recv_within(deadline.saturating_duration_since(Instant::now()))
        .await
    {
        match m.method().map(|m| m.as_str()) {
            Some("INVITE") => invites_via_b += 1,
            Some("REGISTER") => {
                let contact = pbx::contact_uri(&m).expect("the edge's Contact");
                pbx.send(from, &pbx::register_ok(&m, &contact, EXPIRES))
                    .await;
            }
            _ => {}
        }
    }
    assert!(
        refused.is_some() && invites_via_b == 0,
        "baresip 1.0.0 sends new calls through outbound1 only (events: {:?}, INVITEs at the PBX: {invites_via_b}); if this changed, README \"Scaling out and failover\" must say so:\n{}",
        ctrl.events,
        phone.log()
    );

    phone.quit(&mut ctrl);
    b.process.stop(Duration::from_secs(5));
}

/// RFC 5626 §4.4.1 with a real phone: baresip registers a flow through each edge, and the
/// edges' 200s say `Require: outbound` with a `Flow-Timer` of half their idle timeout (here
/// 30 s → 15 s; libre keeps at least 20 s between pings, so it pings every 16–20 s). baresip
/// then keeps each flow alive with CRLF pings the edges answer, so both connections outlive
/// the idle timeout with no other traffic. Without the `Require: outbound` baresip sends no
/// pings and each edge closes its flow as idle after 30 s (seen: 0 pings, 1 idle close).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn baresip_keeps_its_flows_alive_at_the_pace_the_edges_ask_for() {
    let pki = edge::dev_pki();
    let pbx = Pbx::bind().await;
    let idle = [("PBX_EDGE_SIP__IDLE_TIMEOUT_SECS", "30")];
    let mut a = spawn_edge(
        "edge-a",
        &pki,
        pbx.addr(),
        net::free_range(41000, 45000, 8),
        &idle,
    );
    let mut b = spawn_edge(
        "edge-b",
        &pki,
        pbx.addr(),
        net::free_range(45000, 49000, 8),
        &idle,
    );
    wait_ready(&mut a).await;
    wait_ready(&mut b).await;
    // Longer than the test: no refresh REGISTER keeps the connections busy.
    let mut phone = phone_on_both(&pki, &a, &b, 600);
    registered_through_both(&pbx, &a, &b, &mut Vec::new(), &mut phone).await;

    // Past the idle timeout with nothing but keep-alives on the flows.
    tokio::time::sleep(Duration::from_secs(36)).await;
    for edge in [&a, &b] {
        let m = http::get(edge.admin, "/metrics").await.1;
        let pings = http::metric(&m, "pbx_edge_sip_keepalives_total");
        let idle_closed =
            http::metric(&m, "pbx_edge_sip_connections_closed_total{reason=\"idle\"}");
        assert!(
            pings >= 1.0 && idle_closed == 0.0,
            "pings answered {pings}, flows closed as idle {idle_closed}:\n{}\n{}",
            phone.log(),
            edge.process.output()
        );
        assert_eq!(http::metric(&m, "pbx_edge_tls_connections_active"), 1.0);
    }
    let mut ctrl = phone.ctrl();
    phone.quit(&mut ctrl);
}
