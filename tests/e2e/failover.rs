//! Issue 16, failover: two pbx-edge instances in front of one PBX, the phone configured with
//! both (DNS SRV with two targets, or a backup outbound proxy). The instance the phone is on is
//! killed: the phone re-registers through the other, the PBX's Contact for it now routes
//! through the survivor (a PBX → phone INVITE reaches it), and a call already on the survivor
//! is untouched. No state is shared between the instances (README "Scaling out").
//! Every process is stopped by its PID (`Running` kills it on drop).

use super::config_cli::{run_dev, Running};
use super::drain::{establish, hang_up};
use crate::support::edge::{self, TestPki};
use crate::support::pbx::{self, Pbx};
use crate::support::phone::{self, Phone};
use crate::support::ports;
use crate::support::tls_client;
use pbx_edge::sip::message::SipMessage;
use std::net::SocketAddr;

async fn connect(pki: &TestPki, edge: &Running) -> Phone {
    let cfg = tls_client::client_config(&pki.pki.server_ca, Some(&pki.pki.snom_device));
    Phone::new(
        tls_client::connect(edge.tls, "sbc.test", cfg)
            .await
            .expect("handshake"),
    )
}

/// REGISTER 101 through `ph`; the edge Contact the PBX stores and where the REGISTER came from.
async fn register(ph: &mut Phone, pbx: &Pbx, cseq: u32) -> (String, SocketAddr) {
    ph.send(&phone::register("101", 5099, cseq, "reg-failover", ""))
        .await;
    let (req, from): (SipMessage, SocketAddr) = loop {
        let (m, from) = pbx.recv().await.expect("the PBX gets the REGISTER");
        if m.method().map(|m| m.as_str()) == Some("REGISTER") {
            break (m, from);
        }
    };
    assert_eq!(req.cseq().unwrap().seq, cseq);
    let uri = pbx::contact_uri(&req).expect("edge Contact");
    pbx.send(from, &pbx::register_ok(&req, &uri, 600)).await;
    assert_eq!(ph.recv().await.expect("200").status(), Some(200));
    (uri, from)
}

#[test]
fn killing_the_phones_edge_fails_it_over_to_the_other_and_leaves_the_others_calls_alone() {
    let pki = edge::dev_pki();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let pbx = rt.block_on(Pbx::bind());
    let pbx_addr = pbx.addr().to_string();
    let env = |min: &'static str, max: &'static str| {
        vec![
            ("PBX_EDGE_PBX__ADDRESS", pbx_addr.clone()),
            ("PBX_EDGE_MEDIA__PORT_MIN", min.to_owned()),
            ("PBX_EDGE_MEDIA__PORT_MAX", max.to_owned()),
        ]
    };
    let env_a = env(ports::FAILOVER_A.0, ports::FAILOVER_A.1);
    let env_b = env(ports::FAILOVER_B.0, ports::FAILOVER_B.1);
    let a_env: Vec<(&str, &str)> = env_a.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let b_env: Vec<(&str, &str)> = env_b.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let mut a = run_dev(&pki, &a_env);
    let b = run_dev(&pki, &b_env);

    rt.block_on(async {
        // A call in progress on B (another line of the same device).
        let mut on_b = establish(&pki, &b, &pbx, "on-b").await;

        // The phone registers through A.
        let mut ph = connect(&pki, &a).await;
        let (contact_a, via_a) = register(&mut ph, &pbx, 1).await;

        // A dies; the phone notices its connection go and fails over to B.
        a.signal("KILL");
        assert!(ph.closed_by_edge().await, "the connection to A is gone");
        let mut ph = connect(&pki, &b).await;
        let (contact_b, via_b) = register(&mut ph, &pbx, 2).await;
        assert_ne!(via_a, via_b, "the REGISTER now comes from B");
        assert_ne!(contact_a, contact_b, "B puts itself in the phone's Contact");

        // PBX → phone through the Contact it now holds: the phone gets the INVITE via B.
        let invite = format!("INVITE {contact_b} SIP/2.0\r\nVia: SIP/2.0/UDP {pbx_addr};branch=z9hG4bK-fo\r\nFrom: <sip:200@{pbx_addr}>;tag=pbx-fo\r\nTo: <sip:101@{pbx_addr}>\r\nCall-ID: failover-in\r\nCSeq: 10 INVITE\r\nMax-Forwards: 70\r\nContact: <sip:200@{pbx_addr}>\r\nContent-Length: 0\r\n\r\n");
        pbx.send(via_b, &invite).await;
        let got = ph.recv().await.expect("the phone gets the PBX's INVITE via B");
        assert_eq!(got.method().map(|m| m.as_str()), Some("INVITE"));
        assert_eq!(got.call_id().unwrap(), "failover-in");
        ph.send(&phone::response(&got, 486)).await;
        let busy = loop {
            let (m, _) = pbx.recv().await.expect("the PBX gets the 486");
            if m.status().is_some_and(|s| s >= 200) {
                break m;
            }
        };
        assert_eq!(busy.status(), Some(486));

        // The call on B was never affected.
        hang_up(&mut on_b, &pbx).await;
    });
    let _ = a.wait_exit();
    drop(b);
}
