//! SIPp as the PBX over TCP (`sipp -t t1`): a TLS phone registers through the edge
//! (`pbx.transport = "tcp"`) to a SIPp registrar, which then qualifies the edge Contact on
//! the edge's connection; a second SIPp opens its own connection to `pbx.listen` and
//! qualifies the phone by AOR. Every SIPp run is bounded (-m 1, -timeout, and a kill by PID).

use super::net::free_tcp_port;
use super::sipp::Sipp;
use crate::support::edge::{self, RunningEdge};
use crate::support::phone::{self, Phone};
use std::net::SocketAddr;
use std::time::Duration;

/// Answers the next OPTIONS the phone gets with 200; returns its Call-ID.
async fn answer_options(ph: &mut Phone, what: &str) -> String {
    let got = ph
        .recv_within(Duration::from_secs(15))
        .await
        .unwrap_or_else(|| panic!("phone gets {what}"));
    assert_eq!(got.method().map(|m| m.as_str()), Some("OPTIONS"), "{what}");
    ph.send(&phone::response(&got, 200)).await;
    got.call_id().expect("Call-ID").to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sipp_registrar_over_tcp_and_its_qualify_pings_reach_the_phone() {
    let port = free_tcp_port();
    let mut registrar = Sipp::start_tcp("tcp-registrar.xml", port, Duration::from_secs(30), &[]);
    registrar.wait_bound();

    let pki = edge::dev_pki();
    let pbx: SocketAddr = ([127, 0, 0, 1], port).into();
    let e = RunningEdge::start_with_pbx(&pki, pbx, &[("PBX_EDGE_PBX__TRANSPORT", "tcp")]).await;
    let mut ph = phone::snom(&pki, &e).await;

    // REGISTER → SIPp over the edge's TCP connection → 200 back to the phone.
    ph.send(&phone::register("101", 5099, 1, "sipp-tcp-reg", ""))
        .await;
    let ok = ph
        .recv_within(Duration::from_secs(15))
        .await
        .unwrap_or_else(|| panic!("phone gets the 200: {}", registrar.report()));
    assert_eq!(ok.status(), Some(200), "{}", registrar.report());
    assert!(
        ok.header("Contact")
            .is_some_and(|c| c.contains("127.0.0.1:5099") && c.contains("expires=120")),
        "the edge Contact in SIPp's 200 is mapped back: {ok}"
    );
    // SIPp's OPTIONS to the edge Contact, on the same connection; the 200 goes back on it.
    answer_options(&mut ph, "the registrar's OPTIONS").await;
    let status = registrar.wait(Duration::from_secs(20));
    let log = registrar.report();
    assert!(
        status.is_some_and(|s| s.success()),
        "SIPp registrar ended with {status:?}: {log}"
    );
    assert!(
        log.contains("OPTIONS answered 200 on the edge's connection"),
        "{log}"
    );

    // A second SIPp: the PBX opening its own connection to pbx.listen, qualifying by AOR.
    // (The registrar above has exited, so the edge's outbound connection is gone: the 200
    // can only arrive on the connection the OPTIONS came on.)
    let edge_pbx = e.pbx_local.to_string();
    let qualify_port = free_tcp_port();
    let mut qualify = Sipp::start_tcp(
        "tcp-qualify.xml",
        qualify_port,
        Duration::from_secs(30),
        &["-s", "101", &edge_pbx],
    );
    answer_options(&mut ph, "the PBX's own-connection OPTIONS").await;
    let status = qualify.wait(Duration::from_secs(20));
    let log = qualify.report();
    assert!(
        status.is_some_and(|s| s.success()),
        "SIPp qualify ended with {status:?}: {log}"
    );
    assert!(
        log.contains("OPTIONS answered 200 on the PBX's own connection"),
        "{log}"
    );
    drop(ph);
    e.stop().await.expect("clean shutdown");
}
