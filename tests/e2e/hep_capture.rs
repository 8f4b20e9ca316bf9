//! SIP capture to Homer (`[hep]`): a registration through the edge, and every message of both
//! legs arrives at a loopback HEP collector, decoded by an independent decoder (the `hep`
//! crate): the phone leg decrypted and reported as TCP between the TLS connection's
//! addresses, the PBX leg as UDP between `pbx.listen` and the PBX, the Call-ID as
//! correlation id (chunk 0x0011). The RTCP of a call's media, both ends', arrives too: HEP
//! protocol type 5 with the JSON report heplify sends, the phone's decrypted from SRTCP.

use crate::support::edge::{self, RunningEdge};
use crate::support::http;
use crate::support::pbx::{self, Pbx};
use crate::support::pbx_tcp::TcpPbx;
use crate::support::phone::{self, snom};
use crate::support::scenario::{phone_hangs_up, Lab};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::AsyncReadExt;
use tokio::net::UdpSocket;

/// Receives HEP datagrams until `want` of them match, or 10 s pass.
async fn collect(collector: &UdpSocket, want: usize) -> Vec<hep::Chunk> {
    let mut out = Vec::new();
    let mut buf = vec![0u8; 70_000];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while out.len() < want {
        let Ok(Ok(n)) = tokio::time::timeout_at(deadline, collector.recv(&mut buf)).await else {
            break;
        };
        out.push(hep::parse_packet(&buf[..n]).expect("a HEP3 packet"));
    }
    out
}

fn src(c: &hep::Chunk) -> SocketAddr {
    SocketAddr::from((c.ipv4_src_address, c.proto_src_port))
}

fn dst(c: &hep::Chunk) -> SocketAddr {
    SocketAddr::from((c.ipv4_dst_address, c.proto_dst_port))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_legs_of_a_registration_reach_the_collector() {
    let collector = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let hep_addr = collector.local_addr().unwrap().to_string();
    let pki = edge::dev_pki();
    let pbx = Pbx::bind().await;
    let e = RunningEdge::start_with_pbx(
        &pki,
        pbx.addr(),
        &[
            ("PBX_EDGE_HEP__ADDRESS", hep_addr.as_str()),
            ("PBX_EDGE_HEP__ID", "4242"),
            ("PBX_EDGE_HEP__PASSWORD", "homer-key"),
        ],
    )
    .await;
    let mut ph = snom(&pki, &e).await;
    let phone_addr = ph.stream.get_ref().0.local_addr().unwrap();

    ph.send(&phone::register("101", 5099, 1, "hep-reg-1", ""))
        .await;
    let (req, from) = pbx.recv().await.expect("PBX gets the REGISTER");
    let uri = pbx::contact_uri(&req).unwrap();
    pbx.send(from, &pbx::register_ok(&req, &uri, 120)).await;
    let ok = ph.recv().await.expect("phone gets the 200");
    assert_eq!(ok.status(), Some(200));

    let got = collect(&collector, 4).await;
    assert_eq!(got.len(), 4, "four captured messages: {got:#?}");
    for c in &got {
        assert_eq!(c.ip_protocol_family, 2);
        assert_eq!(c.capture_agent_id, 4242);
        assert_eq!(c.authenticate_key, "homer-key");
        assert_eq!(c.proto_type, hep::CapProtoType::Sip);
        assert_eq!(c.internal_correlation_id, "hep-reg-1");
        assert!(c.timestamp_seconds > 1_600_000_000, "a real timestamp");
    }
    let find = |what: &str, pred: &dyn Fn(&hep::Chunk) -> bool| {
        got.iter()
            .find(|c| pred(c))
            .unwrap_or_else(|| panic!("no captured {what} in {got:#?}"))
    };
    let phone_in = find("REGISTER from the phone", &|c| {
        c.ip_protocol_id == 6 && c.packet_payload.starts_with("REGISTER ")
    });
    assert_eq!(src(phone_in), phone_addr);
    assert_eq!(dst(phone_in), e.tls_addr);
    assert!(
        phone_in
            .packet_payload
            .contains("Via: SIP/2.0/TLS 127.0.0.1:5099"),
        "the phone's own message, decrypted: {}",
        phone_in.packet_payload
    );
    let pbx_out = find("REGISTER to the PBX", &|c| {
        c.ip_protocol_id == 17 && c.packet_payload.starts_with("REGISTER ")
    });
    assert_eq!(src(pbx_out), e.pbx_local);
    assert_eq!(dst(pbx_out), pbx.addr());
    assert!(pbx_out.packet_payload.contains("Via: SIP/2.0/UDP"));
    let pbx_in = find("200 from the PBX", &|c| {
        c.ip_protocol_id == 17 && c.packet_payload.starts_with("SIP/2.0 200")
    });
    assert_eq!(src(pbx_in), pbx.addr());
    assert_eq!(dst(pbx_in), e.pbx_local);
    let phone_out = find("200 to the phone", &|c| {
        c.ip_protocol_id == 6 && c.packet_payload.starts_with("SIP/2.0 200")
    });
    assert_eq!(src(phone_out), e.tls_addr);
    assert_eq!(dst(phone_out), phone_addr);
    assert!(
        phone_out.packet_payload.contains("127.0.0.1:5099")
            && phone_out.packet_payload.contains("expires=120"),
        "the 200 as the phone got it (Contact mapped back): {}",
        phone_out.packet_payload
    );

    let metrics = http::get(e.admin_addr, "/metrics").await.1;
    assert!(http::metric(&metrics, "pbx_edge_hep_sent_total") >= 4.0);
    assert_eq!(
        http::metric(
            &metrics,
            "pbx_edge_hep_dropped_total{reason=\"queue_full\"}"
        ),
        0.0
    );
    e.stop().await.unwrap();
}

/// `pbx.transport = "tcp"` and `hep.transport = "tcp"`: the PBX leg is reported as TCP between
/// the addresses of the connection the edge opened (its own ephemeral port, not
/// `pbx.listen`), and the collector gets the packets over one TCP connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tcp_pbx_leg_is_captured_with_its_connection_addresses_over_a_tcp_collector() {
    let collector = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hep_addr = collector.local_addr().unwrap().to_string();
    let pki = edge::dev_pki();
    let pbx = TcpPbx::bind().await;
    let e = RunningEdge::start_with_pbx(
        &pki,
        pbx.addr(),
        &[
            ("PBX_EDGE_PBX__TRANSPORT", "tcp"),
            ("PBX_EDGE_HEP__ADDRESS", hep_addr.as_str()),
            ("PBX_EDGE_HEP__TRANSPORT", "tcp"),
        ],
    )
    .await;
    let mut ph = snom(&pki, &e).await;
    ph.send(&phone::register("101", 5099, 1, "hep-tcp-1", ""))
        .await;
    let mut conn = pbx.accept().await.expect("the edge connects to the PBX");
    let req = conn.recv().await.expect("PBX gets the REGISTER over TCP");
    let uri = pbx::contact_uri(&req).unwrap();
    conn.send(&pbx::register_ok(&req, &uri, 120)).await;
    assert_eq!(ph.recv().await.and_then(|m| m.status()), Some(200));

    // HEP over TCP: packets back to back, each framed by its own length field.
    let (mut stream, _) = tokio::time::timeout(Duration::from_secs(10), collector.accept())
        .await
        .expect("the edge connects to the collector")
        .unwrap();
    let mut got = Vec::new();
    while got.len() < 4 {
        let mut head = [0u8; 6];
        tokio::time::timeout(Duration::from_secs(10), stream.read_exact(&mut head))
            .await
            .expect("four HEP packets in time")
            .unwrap();
        assert_eq!(&head[..4], b"HEP3");
        let len = usize::from(u16::from_be_bytes([head[4], head[5]]));
        let mut rest = vec![0u8; len - 6];
        stream.read_exact(&mut rest).await.unwrap();
        got.push(hep::parse_packet(&[head.to_vec(), rest].concat()).expect("HEP3"));
    }
    let pbx_out = got
        .iter()
        .find(|c| c.packet_payload.starts_with("REGISTER ") && dst(c) == pbx.addr())
        .unwrap_or_else(|| panic!("no REGISTER to the PBX in {got:#?}"));
    assert_eq!(pbx_out.ip_protocol_id, 6);
    assert_eq!(src(pbx_out), conn.peer, "the edge's end of that connection");
    let pbx_in = got
        .iter()
        .find(|c| c.packet_payload.starts_with("SIP/2.0 200") && src(c) == pbx.addr())
        .unwrap_or_else(|| panic!("no 200 from the PBX in {got:#?}"));
    assert_eq!(pbx_in.ip_protocol_id, 6);
    assert_eq!(dst(pbx_in), conn.peer);
    assert_eq!(pbx_in.internal_correlation_id, "hep-tcp-1");
    e.stop().await.unwrap();
}

/// A call whose ends exchange SRs and RRs through the edge (`quality::call_with_rtcp`): each
/// of the four compounds reaches the collector as HEP RTCP (type 5) over UDP between the
/// sender and the edge socket it arrived on, filed under the call's Call-ID, its payload the
/// JSON report Homer charts — the phone's read after SRTCP decryption.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rtcp_of_both_ends_reaches_the_collector_as_homer_json() {
    let collector = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let hep_addr = collector.local_addr().unwrap().to_string();
    let mut env = super::quality::ENV.to_vec();
    env.push(("PBX_EDGE_HEP__ADDRESS", hep_addr.as_str()));
    let lab = Lab::start(&env).await;
    let (mut c, relay) = super::quality::call_with_rtcp(&lab, "hep-rtcp-1").await;

    // SIP is captured too: keep the RTCP only (bounded).
    let mut rtcp = Vec::new();
    let mut buf = vec![0u8; 70_000];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while rtcp.len() < 4 {
        let Ok(Ok(n)) = tokio::time::timeout_at(deadline, collector.recv(&mut buf)).await else {
            break;
        };
        let chunk = hep::parse_packet(&buf[..n]).expect("a HEP3 packet");
        if chunk.proto_type == hep::CapProtoType::Rtcp {
            rtcp.push(chunk);
        }
    }
    assert_eq!(rtcp.len(), 4, "four RTCP compounds: {rtcp:#?}");
    let json = |c: &hep::Chunk| -> serde_json::Value {
        serde_json::from_str(&c.packet_payload).expect("a JSON RTCP report")
    };
    for c in &rtcp {
        assert_eq!(c.ip_protocol_id, 17);
        assert_eq!(c.internal_correlation_id, "hep-rtcp-1");
        assert!(c.timestamp_seconds > 1_600_000_000, "a real timestamp");
    }
    let phone_addr = c.media.phone.local_addr().unwrap();
    let pbx_addr = c.media.pbx.local_addr().unwrap();
    let find = |what: &str, from: SocketAddr, kind: u64| {
        rtcp.iter()
            .find(|c| src(c) == from && json(c)["type"] == kind)
            .unwrap_or_else(|| panic!("no {what} in {rtcp:#?}"))
    };
    let phone_rr = find("RR from the phone", phone_addr, 201);
    assert_eq!(dst(phone_rr), relay.phone_side);
    let v = json(phone_rr);
    assert_eq!(v["ssrc"], 0x1111, "{v}");
    let block = &v["report_blocks"][0];
    assert_eq!(
        (
            &block["source_ssrc"],
            &block["fraction_lost"],
            &block["packets_lost"],
            &block["ia_jitter"],
            &block["lsr"],
        ),
        (
            &serde_json::json!(0x2222),
            &serde_json::json!(26),
            &serde_json::json!(30),
            &serde_json::json!(80),
            &serde_json::json!(0x1122_3344),
        ),
        "decrypted from SRTCP: {v}"
    );
    let phone_sr = json(find("SR from the phone", phone_addr, 200));
    assert_eq!(phone_sr["sender_information"]["ntp_timestamp_sec"], 0x0A0B);
    let pbx_rr = find("RR from the PBX", pbx_addr, 201);
    assert_eq!(dst(pbx_rr), relay.pbx_side);
    assert_eq!(json(pbx_rr)["report_blocks"][0]["fraction_lost"], 13);
    find("SR from the PBX", pbx_addr, 200);

    let metrics = http::get(lab.e.admin_addr, "/metrics").await.1;
    assert_eq!(
        http::metric(
            &metrics,
            "pbx_edge_hep_dropped_total{reason=\"rtcp_queue_full\"}"
        ),
        0.0
    );
    phone_hangs_up(&lab.pbx, &mut c.ph, &c.d, 2, None).await;
    lab.stop().await;
}
