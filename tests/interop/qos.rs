//! QoS marking on the wire: a call through the edge captured by tshark on `lo`, and the DSCP
//! of every packet the edge sent read from the IP headers by tshark's dissector
//! (`ip.dsfield.dscp`): SIP toward the phone (TLS) and toward the PBX (UDP) with `sip.dscp`,
//! media on both sides of the relay with `media.dscp`. The test's own phone and PBX sockets
//! are unmarked, so a capture that showed their DSCP for the edge's would fail.

use super::capture::Capture;
use super::net;
use crate::support::edge::{self, RunningEdge};
use crate::support::pbx::{self, Pbx};
use crate::support::phone::snom;
use pbx_edge::srtp::{ContextOptions, CryptoAttribute, SrtpContext};
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;
use tokio::net::UdpSocket;

const PHONE_KEY: &str = "WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz";
/// `sip.dscp` for this test: CS5, not the default, so the config value is what is checked.
const SIP_DSCP: u8 = 40;
/// `media.dscp`: the default (EF).
const MEDIA_DSCP: u8 = 46;

fn media_addr(sdp: &[u8]) -> SocketAddr {
    let text = std::str::from_utf8(sdp).expect("SDP text");
    let ip = text
        .lines()
        .find_map(|l| l.strip_prefix("c=IN IP4 "))
        .expect("c=")
        .trim();
    let port = text
        .lines()
        .find_map(|l| l.strip_prefix("m=audio "))
        .and_then(|p| p.split(' ').next())
        .expect("m=audio");
    SocketAddr::new(ip.parse().expect("ip"), port.parse().expect("port"))
}

fn rtp(seq: u16, ssrc: u32) -> Vec<u8> {
    let mut p = vec![0x80, 0x00];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&(u32::from(seq) * 160).to_be_bytes());
    p.extend_from_slice(&ssrc.to_be_bytes());
    p.extend(std::iter::repeat_n(0xd5u8, 160));
    p
}

async fn recv(sock: &UdpSocket) -> Option<Vec<u8>> {
    let mut b = vec![0u8; 2048];
    let (n, _) = tokio::time::timeout(Duration::from_secs(5), sock.recv_from(&mut b))
        .await
        .ok()?
        .ok()?;
    b.truncate(n);
    Some(b)
}

/// One captured IPv4 packet: (source port, DSCP, transport payload bytes).
fn captured(file: &std::path::Path) -> Vec<(u16, u8, usize)> {
    let out = Command::new("tshark")
        .arg("-r")
        .arg(file)
        .args(["-T", "fields", "-E", "separator=,"])
        .args([
            "-e",
            "ip.dsfield.dscp",
            "-e",
            "tcp.srcport",
            "-e",
            "tcp.len",
        ])
        .args(["-e", "udp.srcport", "-e", "udp.length"])
        .output()
        .expect("tshark -r runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            let dscp = f.first()?.parse().ok()?;
            let (port, len) = match (f.get(1)?.parse().ok(), f.get(3)?.parse().ok()) {
                (Some(tcp), _) => (tcp, f.get(2)?.parse().ok()?),
                // udp.length counts the 8-byte UDP header.
                (None, Some(udp)) => (udp, f.get(4)?.parse::<usize>().ok()?.saturating_sub(8)),
                _ => return None,
            };
            Some((port, dscp, len))
        })
        .collect()
}

/// The DSCPs seen on packets with payload from `port`.
fn dscps_from(packets: &[(u16, u8, usize)], port: u16) -> BTreeSet<u8> {
    packets
        .iter()
        .filter(|(p, _, len)| *p == port && *len > 0)
        .map(|(_, d, _)| *d)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sip_and_media_leave_the_edge_marked_with_the_configured_dscp() {
    let run = tempfile::tempdir().expect("tempdir");
    let pki = edge::dev_pki();
    let pbx = Pbx::bind().await;
    let media = net::free_range(45000, 45499, 20);
    let (min, max) = (media.0.to_string(), media.1.to_string());
    let sip_dscp = SIP_DSCP.to_string();
    let e = RunningEdge::start_with_pbx(
        &pki,
        pbx.addr(),
        &[
            ("PBX_EDGE_MEDIA__PORT_MIN", min.as_str()),
            ("PBX_EDGE_MEDIA__PORT_MAX", max.as_str()),
            ("PBX_EDGE_SIP__DSCP", sip_dscp.as_str()),
        ],
    )
    .await;
    let capture = Capture::start(
        run.path(),
        "tshark-qos",
        &format!(
            "tcp port {} or udp port {} or udp portrange {}-{}",
            e.tls_addr.port(),
            e.pbx_local.port(),
            media.0,
            media.1
        ),
        Duration::from_secs(30),
    );

    // A call from the phone: INVITE over TLS, the PBX answers over UDP.
    let mut ph = snom(&pki, &e).await;
    let phone_sock = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    let pbx_sock = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    let port = phone_sock.local_addr().expect("addr").port();
    let sdp = format!("v=0\r\no=snom 1 1 IN IP4 127.0.0.1\r\ns=call\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio {port} RTP/SAVP 0\r\na=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{PHONE_KEY}\r\na=rtpmap:0 PCMU/8000\r\na=sendrecv\r\n");
    ph.send(&format!("INVITE sip:200@sbc.test SIP/2.0\r\nVia: SIP/2.0/TLS 127.0.0.1:5099;branch=z9hG4bK-qos1;rport\r\nFrom: <sip:101@sbc.test>;tag=qos1\r\nTo: <sip:200@sbc.test>\r\nCall-ID: call-qos-1\r\nCSeq: 1 INVITE\r\nMax-Forwards: 70\r\nContact: <sip:101@127.0.0.1:5099;transport=tls>\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}", sdp.len())).await;
    assert_eq!(ph.recv().await.and_then(|m| m.status()), Some(100));
    let (inv, from) = pbx.recv().await.expect("the PBX gets the INVITE");
    let edge_pbx_side = media_addr(inv.body());
    let answer = format!("v=0\r\no=pbx 9 9 IN IP4 127.0.0.1\r\ns=pbx\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio {} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=sendrecv\r\n", pbx_sock.local_addr().expect("addr").port());
    let ok = pbx::response(
        &inv,
        200,
        "OK",
        "Contact: <sip:200@127.0.0.1:5060>\r\nContent-Type: application/sdp\r\n",
    )
    .replace(
        "Content-Length: 0\r\n\r\n",
        &format!("Content-Length: {}\r\n\r\n{answer}", answer.len()),
    );
    pbx.send(from, &ok).await;
    let ok = ph.recv().await.expect("the phone gets the 200");
    assert_eq!(ok.status(), Some(200));
    let edge_phone_side = media_addr(ok.body());
    let ack = format!("ACK sip:sbc.test:{} SIP/2.0\r\nVia: SIP/2.0/TLS 127.0.0.1:5099;branch=z9hG4bK-qosack\r\nFrom: <sip:101@sbc.test>;tag=qos1\r\nTo: {}\r\nCall-ID: call-qos-1\r\nCSeq: 1 ACK\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n", e.tls_addr.port(), ok.header("To").expect("To"));
    ph.send(&ack).await;
    let (got_ack, _) = pbx.recv().await.expect("the PBX gets the ACK");
    assert_eq!(got_ack.method().map(|m| m.as_str()), Some("ACK"));
    let crypto = std::str::from_utf8(ok.body())
        .expect("SDP")
        .lines()
        .find_map(|l| l.strip_prefix("a=crypto:"))
        .map(|v| CryptoAttribute::parse(v.trim()).expect("edge crypto"))
        .expect("a=crypto in the answer");
    let phone_key =
        CryptoAttribute::parse(&format!("1 AES_CM_128_HMAC_SHA1_80 inline:{PHONE_KEY}"))
            .expect("phone crypto");
    let context = |c: &CryptoAttribute| {
        let k = &c.keys[0];
        SrtpContext::new(
            &k.master_key,
            &ContextOptions::from_sdes(k, &c.session_params),
        )
        .expect("SRTP context")
    };
    let mut phone_tx = context(&phone_key);
    let mut phone_rx = context(&crypto);

    // Media both ways.
    for seq in 1..=5u16 {
        let plain = rtp(seq, 0x1111);
        let mut buf = plain.clone();
        buf.resize(plain.len() + 32, 0);
        let n = phone_tx
            .protect_rtp(&mut buf, plain.len())
            .expect("protect");
        phone_sock
            .send_to(&buf[..n], edge_phone_side)
            .await
            .expect("send");
        assert_eq!(recv(&pbx_sock).await, Some(plain), "phone → PBX relayed");
        let plain = rtp(seq, 0x2222);
        pbx_sock.send_to(&plain, edge_pbx_side).await.expect("send");
        let mut got = recv(&phone_sock).await.expect("PBX → phone relayed");
        assert!(phone_rx.unprotect_rtp(&mut got).is_ok());
    }
    // And SIP once more, long after tshark started: the phone hangs up.
    let bye = ack
        .replace("ACK sip", "BYE sip")
        .replace("z9hG4bK-qosack", "z9hG4bK-qosbye")
        .replace("CSeq: 1 ACK", "CSeq: 2 BYE");
    ph.send(&bye).await;
    let (got_bye, from) = pbx.recv().await.expect("the PBX gets the BYE");
    assert_eq!(got_bye.method().map(|m| m.as_str()), Some("BYE"));
    pbx.send(from, &pbx::response(&got_bye, 200, "OK", ""))
        .await;
    assert_eq!(ph.recv().await.and_then(|m| m.status()), Some(200));
    drop(ph);
    // Leave tshark a moment to write the last packets before it is stopped.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let file = capture.file.clone();
    capture.finish();
    let packets = captured(&file);

    let report = format!(
        "edge TLS {}, edge PBX side {}, edge media {} / {}; (source port, DSCP, payload bytes): {packets:?}",
        e.tls_addr.port(),
        e.pbx_local.port(),
        edge_phone_side.port(),
        edge_pbx_side.port()
    );
    assert_eq!(
        dscps_from(&packets, e.tls_addr.port()),
        BTreeSet::from([SIP_DSCP]),
        "SIP over TLS toward the phone: {report}"
    );
    assert_eq!(
        dscps_from(&packets, e.pbx_local.port()),
        BTreeSet::from([SIP_DSCP]),
        "SIP over UDP toward the PBX: {report}"
    );
    assert_eq!(
        dscps_from(&packets, edge_phone_side.port()),
        BTreeSet::from([MEDIA_DSCP]),
        "SRTP toward the phone: {report}"
    );
    assert_eq!(
        dscps_from(&packets, edge_pbx_side.port()),
        BTreeSet::from([MEDIA_DSCP]),
        "RTP toward the PBX: {report}"
    );
    // The peers' own packets are unmarked: the marking seen is the edge's.
    for peer in [
        phone_sock.local_addr().expect("addr").port(),
        pbx_sock.local_addr().expect("addr").port(),
        pbx.addr().port(),
    ] {
        assert_eq!(
            dscps_from(&packets, peer),
            BTreeSet::from([0]),
            "peer port {peer}: {report}"
        );
    }
    e.stop().await.expect("clean shutdown");
}
