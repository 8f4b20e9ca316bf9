//! Issue 16, edge faults: the edge crashes (SIGKILL) and is restarted on the same addresses.
//! A phone configured as README "Crash and restart" says (SIP outbound keep-alives or a short
//! registration interval, so it notices the dead connection) reconnects, re-registers and can
//! call; the PBX's stale Contact from before the crash gets an error, never a wrong phone.
//! Every process is stopped by its PID (`Running` kills it on drop).

use super::config_cli::run_dev;
use super::drain::{establish, hang_up};
use crate::support::edge;
use crate::support::pbx::Pbx;
use crate::support::phone;
use crate::support::ports;
use crate::support::scenario::register;
use std::time::Duration;

/// A loopback port free right now (bound and released), for an edge that must come back on
/// the same address.
fn free_tcp_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn after_sigkill_and_restart_phones_reregister_and_call_and_stale_contacts_fail_cleanly() {
    let pki = edge::dev_pki();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let pbx = rt.block_on(Pbx::bind());
    let pbx_addr = pbx.addr().to_string();
    let tls = format!("127.0.0.1:{}", free_tcp_port());
    let pbx_listen = format!("127.0.0.1:{}", free_udp_port());
    let env = [
        ("PBX_EDGE_PBX__ADDRESS", pbx_addr.as_str()),
        ("PBX_EDGE_TLS__LISTEN", tls.as_str()),
        ("PBX_EDGE_PBX__LISTEN", pbx_listen.as_str()),
        ("PBX_EDGE_SIP__T1_MS", "50"),
        ("PBX_EDGE_MEDIA__PORT_MIN", ports::EDGE_CRASH.0),
        ("PBX_EDGE_MEDIA__PORT_MAX", ports::EDGE_CRASH.1),
    ];

    let mut first = run_dev(&pki, &env);
    let stale_contact = rt.block_on(async {
        let mut ph = phone::snom_at(&pki, first.tls).await;
        let uri = register(&pbx, &mut ph, "reg-crash", 1, 600).await;

        // Crash. The phone sees its connection go.
        first.signal("KILL");
        assert!(
            ph.closed_by_edge().await,
            "the phone's connection dies with the edge"
        );
        uri
    });
    let status = first.wait_exit();
    assert_eq!(status.code(), None, "killed by a signal");
    drop(first);

    let second = run_dev(&pki, &env);
    assert_eq!(second.tls.to_string(), tls, "back on the same address");
    rt.block_on(async {
        // The PBX still has the Contact from before the crash: the restarted edge cannot
        // map it to a connection and says so instead of guessing.
        let invite = format!("INVITE {stale_contact} SIP/2.0\r\nVia: SIP/2.0/UDP {pbx_addr};branch=z9hG4bK-stale\r\nFrom: <sip:200@{pbx_addr}>;tag=pbx-stale\r\nTo: <sip:101@{pbx_addr}>\r\nCall-ID: stale-contact\r\nCSeq: 10 INVITE\r\nMax-Forwards: 70\r\nContact: <sip:200@{pbx_addr}>\r\nContent-Length: 0\r\n\r\n");
        pbx.send(pbx_listen.parse().unwrap(), &invite).await;
        let mut answer = None;
        for _ in 0..5 {
            let (m, _) = pbx
                .recv_within(Duration::from_secs(5))
                .await
                .expect("the edge answers the stale INVITE");
            if m.status().is_some_and(|s| s >= 300) {
                answer = m.status();
                break;
            }
        }
        // The flow-token key is per process: the old token is just an unknown user now.
        assert_eq!(answer, Some(480), "a stale Contact gets 480, not a phone");

        // The phone reconnects and re-registers, then calls.
        let mut ph = phone::snom_at(&pki, second.tls).await;
        register(&pbx, &mut ph, "reg-crash", 2, 600).await;
        let mut call = establish(&pki, &second, &pbx, "after-crash").await;
        hang_up(&mut call, &pbx).await;
    });
    drop(second);
}
