//! Real peers on both legs: baresip 1.0.0 as the phone (SIP over TLS with the dev PKI's Snom
//! device certificate) registering through an in-process edge to SIPp as a plain-UDP
//! registrar, and SIPp qualifying the registered phone with OPTIONS through the edge.
//! Negative cases: a device certificate from an unknown CA never gets past the handshake, and an
//! extension the MAC may not use gets 403; in both the PBX sees nothing.

use super::baresip::{Baresip, Ctrl, PhoneSetup};
use super::net::free_udp_port;
use super::sipp::Sipp;
use crate::support::edge::{self, RunningEdge, TestPki};
use crate::support::{http, pki};
use pbx_edge::sip::message::{ContactList, Method, SipMessage};
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

/// Upper bound of a baresip process's life (`baresip -t`), whatever happens to the test.
const PHONE_BOUND: Duration = Duration::from_secs(60);

/// An in-process edge (dev PKI) whose PBX is a free UDP port on 127.0.0.1, for SIPp.
async fn edge_with_pbx() -> (TestPki, RunningEdge, SocketAddr) {
    let pki = edge::dev_pki();
    let pbx = SocketAddr::from(([127, 0, 0, 1], free_udp_port()));
    let e = RunningEdge::start_with_pbx(&pki, pbx, &[]).await;
    (pki, e, pbx)
}

fn phone<'a>(pki: &'a TestPki, cert: &'a Path, user: &'a str, e: &RunningEdge) -> PhoneSetup<'a> {
    PhoneSetup {
        edge: e.tls_addr,
        certificate: cert,
        ca: &pki.pki.server_ca,
        user,
        regint: 60,
        answermode: "manual",
        auth_pass: None,
        media: None,
        // The edge is given by address: no lookup is expected of this resolver.
        dns: SocketAddr::from(([127, 0, 0, 1], 53)),
        verbose: false,
        backup_edge: None,
    }
}

/// SIPp as the PBX's registrar (`uas-register.xml`, one REGISTER), bound on `pbx`.
fn registrar(pbx: SocketAddr) -> Sipp {
    let mut registrar = Sipp::start("uas-register.xml", pbx.port(), Duration::from_secs(30), &[]);
    registrar.wait_bound();
    registrar
}

/// The PBX address as a UDP socket the test owns, for the cases where the PBX must see
/// nothing. (A SIPp registrar's trace is only written when SIPp flushes it on exit; a failed
/// SIGUSR1 or the SIGKILL fallback would have left it empty and the check passing.)
struct SilentPbx(std::net::UdpSocket);

impl SilentPbx {
    fn bind(pbx: SocketAddr) -> Self {
        let socket = std::net::UdpSocket::bind(pbx).expect("bind the PBX address");
        socket
            .set_nonblocking(true)
            .expect("non-blocking PBX socket");
        SilentPbx(socket)
    }

    /// Everything that reached the PBX address: loopback UDP is queued at the receiver when
    /// `send` returns, so whatever the edge sent before this call is in the socket buffer.
    fn received(&self) -> Vec<String> {
        let mut got = Vec::new();
        let mut buf = vec![0u8; 65536];
        loop {
            match self.0.recv_from(&mut buf) {
                Ok((n, from)) => {
                    got.push(format!("{from}: {}", String::from_utf8_lossy(&buf[..n])))
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return got,
                Err(e) => panic!("PBX socket: {e}"),
            }
        }
    }
}

/// Stops the phone (its refused attempts are over by then) and asserts the PBX received
/// nothing.
fn quit_and_assert_the_pbx_saw_nothing(mut b: Baresip, mut ctrl: Ctrl, pbx: SilentPbx) {
    b.quit(&mut ctrl);
    let received = pbx.received();
    assert!(
        received.is_empty(),
        "the PBX must see nothing, it received: {received:#?}"
    );
}

/// SIPp from the PBX address `pbx` qualifies user 101 through the edge (`uac-options.xml`):
/// OPTIONS to the edge Contact `contact`, then to sip:101@<edge PBX side>. Returns SIPp and
/// how it ended (bounded: 25 s).
fn qualify_101(
    pbx: SocketAddr,
    contact: &pbx_edge::sip::uri::SipUri,
    e: &RunningEdge,
) -> (Sipp, Option<std::process::ExitStatus>) {
    let uri = contact.to_string();
    let target = e.pbx_local.to_string();
    let mut qualify = Sipp::start(
        "uac-options.xml",
        pbx.port(),
        Duration::from_secs(20),
        &["-s", "101", "-key", "edge_contact", &uri, &target],
    );
    let status = qualify.wait(Duration::from_secs(25));
    (qualify, status)
}

/// Polls /metrics until `name` reaches `at_least` (bounded: 10 s); returns its value.
async fn metric_at_least(admin: SocketAddr, name: &str, at_least: f64) -> f64 {
    let mut value = 0.0;
    for _ in 0..100 {
        value = http::metric(&http::get(admin, "/metrics").await.1, name);
        if value >= at_least {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    value
}

/// The edge Contact URI in a REGISTER the PBX received.
fn edge_contact(register: &SipMessage) -> pbx_edge::sip::uri::SipUri {
    match register.contacts().expect("Contact parses") {
        ContactList::Addrs(a) if a.len() == 1 => a[0].uri.clone(),
        other => panic!("one Contact expected: {other:?}"),
    }
}

/// Registers baresip (user 101) through the edge to a SIPp registrar; returns the running
/// phone, its control connection and the REGISTER SIPp received.
async fn register_101(
    pki: &TestPki,
    e: &RunningEdge,
    pbx: SocketAddr,
) -> (Baresip, Ctrl, SipMessage) {
    let mut registrar = registrar(pbx);
    let mut b = Baresip::start(&phone(pki, &pki.pki.snom_device, "101", e), PHONE_BOUND);
    let mut ctrl = b.ctrl();
    let info = ctrl.reginfo_until(Duration::from_secs(15), |i| i.contains("OK"));
    assert!(
        info.contains("sip:101@sbc.test") && info.contains("OK"),
        "baresip reports registered: {info:?}\n{}\n{}",
        b.log(),
        registrar.report()
    );
    let status = registrar.wait(Duration::from_secs(10));
    assert!(
        status.is_some_and(|s| s.success()),
        "the registrar ends its one call successfully ({status:?}): {}",
        registrar.report()
    );
    let received = registrar.received();
    assert!(!received.is_empty(), "{}", registrar.report());
    let first = SipMessage::parse(received[0].as_bytes()).expect("SIPp saw valid SIP");
    for other in &received[1..] {
        // Only retransmissions of the same REGISTER (UDP timer E) may follow.
        let m = SipMessage::parse(other.as_bytes()).expect("valid SIP");
        assert_eq!(m.call_id().unwrap(), first.call_id().unwrap());
        assert_eq!(m.cseq().unwrap(), first.cseq().unwrap());
    }
    (b, ctrl, first)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn baresip_registers_through_the_edge_and_answers_options_from_sipp() {
    let (pki, e, pbx) = edge_with_pbx().await;
    let (mut b, mut ctrl, register) = register_101(&pki, &e, pbx).await;

    // What the PBX saw: the edge's REGISTER, from the edge, with nothing of the phone's leg.
    assert_eq!(register.method(), Some(Method::Register));
    assert_eq!(register.to_user().unwrap().as_deref(), Some("101"));
    let vias = register.vias().unwrap();
    assert_eq!(vias.len(), 1, "only the edge's Via: {vias:?}");
    assert_eq!(vias[0].transport, "UDP");
    assert_eq!(
        (vias[0].host.as_str(), vias[0].port),
        ("127.0.0.1", Some(e.pbx_local.port())),
        "{vias:?}"
    );
    assert!(
        register.header("Route").is_none(),
        "the edge's Route is consumed"
    );
    let contact = edge_contact(&register);
    assert_eq!(
        (contact.host.as_str(), contact.port),
        ("127.0.0.1", Some(e.pbx_local.port())),
        "the Contact names the edge's PBX side: {contact}"
    );
    let token = contact.user().expect("a flow token as the Contact user");
    assert!(
        !token.starts_with("101") && token.len() >= 16,
        "a flow token, not baresip's contact user: {token}"
    );
    assert_ne!(contact.transport().as_deref(), Some("tls"), "{contact}");
    assert!(
        register.header("Contact").unwrap().contains("expires=60"),
        "regint kept: {:?}",
        register.header("Contact")
    );

    // The edge lists the registration with its AOR and the device's MAC.
    let (status, regs) = http::get(e.admin_addr, "/api/registrations").await;
    assert_eq!(status, 200);
    assert!(
        regs.contains("\"aor\":\"101\"") && regs.contains("00:04:13:a1:b2:c3"),
        "{regs}"
    );

    // The PBX (SIPp, from the registrar's address) qualifies the phone through the edge: once
    // to the edge Contact (flow token), once to sip:101@<edge PBX side> (static contact).
    let (qualify, status) = qualify_101(pbx, &contact, &e);
    assert!(
        status.is_some_and(|s| s.success()),
        "both OPTIONS answered 200 ({status:?}): {}\n{}",
        qualify.report(),
        b.log()
    );
    let actions = qualify.actions();
    assert!(
        actions.contains("200 to OPTIONS via the flow token")
            && actions.contains("200 to OPTIONS by AOR user"),
        "{actions}"
    );
    let answers: Vec<SipMessage> = qualify
        .received()
        .iter()
        .map(|m| SipMessage::parse(m.as_bytes()).expect("valid SIP"))
        .filter(|m| m.status() == Some(200))
        .collect();
    assert!(answers.len() >= 2, "{}", qualify.report());
    for a in &answers {
        let vias = a.vias().unwrap();
        assert_eq!(vias.len(), 1, "only SIPp's own Via comes back: {vias:?}");
        assert_eq!(vias[0].port, Some(pbx.port()));
        assert!(
            a.header("Server").is_some_and(|s| s.contains("baresip")),
            "answered by baresip itself: {:?}",
            a.header("Server")
        );
    }
    // baresip got both with the Request-URI restored to its own Contact (its SIP trace).
    let log = b.log();
    assert_eq!(
        log.matches("OPTIONS sip:101-").count(),
        2,
        "Request-URI = baresip's Contact: {log}"
    );

    b.quit(&mut ctrl);
    e.stop().await.expect("clean shutdown");
}

/// The phone leg's Contact must not reach the PBX (DESIGN.md: "each leg has its own Via,
/// Contact, ..."): in a response relayed from the phone, the edge should put its own Contact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pbx_never_sees_the_phones_own_contact() {
    let (pki, e, pbx) = edge_with_pbx().await;
    let (mut b, mut ctrl, register) = register_101(&pki, &e, pbx).await;
    let (qualify, status) = qualify_101(pbx, &edge_contact(&register), &e);
    assert!(status.is_some_and(|s| s.success()), "{}", qualify.report());
    let mut contacts_checked = 0;
    for m in qualify.received() {
        let m = SipMessage::parse(m.as_bytes()).expect("valid SIP");
        if let Ok(ContactList::Addrs(addrs)) = m.contacts() {
            for a in addrs {
                contacts_checked += 1;
                assert_eq!(
                    (a.uri.host.as_str(), a.uri.port),
                    ("127.0.0.1", Some(e.pbx_local.port())),
                    "the PBX sees only edge Contacts: {}",
                    a.uri
                );
            }
        }
    }
    // baresip's 200s to OPTIONS carry a Contact: without one checked, this proves nothing.
    assert!(
        contacts_checked >= 1,
        "no Contact reached the PBX to check: {}",
        qualify.report()
    );
    b.quit(&mut ctrl);
    e.stop().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn baresip_with_a_device_certificate_from_an_unknown_ca_is_refused_at_the_handshake() {
    let (pki, e, pbx) = edge_with_pbx().await;
    let stranger = pki.dir.path().join("stranger-000413A1B2C3.pem");
    pki::write_device_from_unknown_ca(&stranger, "000413A1B2C3");
    let silent = SilentPbx::bind(pbx);
    let mut b = Baresip::start(&phone(&pki, &stranger, "101", &e), PHONE_BOUND);
    let mut ctrl = b.ctrl();

    let label =
        "pbx_edge_tls_handshake_failures_total{reason=\"issuer_unknown\",vendor=\"unknown\"}";
    let refused = metric_at_least(e.admin_addr, label, 1.0).await;
    assert!(refused >= 1.0, "refused as issuer_unknown: {}", b.log());
    let info = ctrl.command("reginfo", None);
    assert!(
        info.as_deref().is_some_and(|i| !i.contains("OK")),
        "baresip is not registered: {info:?}"
    );
    let metrics = http::get(e.admin_addr, "/metrics").await.1;
    assert_eq!(
        http::metric(&metrics, "pbx_edge_tls_handshakes_total"),
        0.0,
        "{metrics}"
    );

    quit_and_assert_the_pbx_saw_nothing(b, ctrl, silent);
    e.stop().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn baresip_registering_an_extension_its_mac_may_not_use_gets_403() {
    let (pki, e, pbx) = edge_with_pbx().await;
    let silent = SilentPbx::bind(pbx);
    // The dev inventory allows only user 101 for the Snom MAC 000413A1B2C3.
    let mut b = Baresip::start(&phone(&pki, &pki.pki.snom_device, "102", &e), PHONE_BOUND);
    let mut ctrl = b.ctrl();

    let denied = metric_at_least(
        e.admin_addr,
        "pbx_edge_sip_denied_total{reason=\"user_not_allowed\"}",
        1.0,
    )
    .await;
    assert!(denied >= 1.0, "{}", b.log());
    let info = ctrl.reginfo_until(Duration::from_secs(10), |i| i.contains("ERR"));
    assert!(
        info.contains("sip:102@sbc.test") && info.contains("ERR"),
        "baresip reports the registration failed: {info:?}"
    );
    // The 403 as baresip received it over TLS (its SIP trace), with the edge's Warning.
    let log = b.log();
    assert!(log.contains("SIP/2.0 403"), "{log}");
    assert!(log.contains("Warning: 399 sbc.test"), "{log}");
    let metrics = http::get(e.admin_addr, "/metrics").await.1;
    assert!(
        http::metric(&metrics, "pbx_edge_tls_handshakes_total") >= 1.0,
        "the handshake itself succeeded: {metrics}"
    );

    quit_and_assert_the_pbx_saw_nothing(b, ctrl, silent);
    assert!(
        e.stop().await.is_ok(),
        "clean shutdown after the refused registration"
    );
}
