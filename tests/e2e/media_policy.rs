//! README media switches end to end, through the config as an operator sets them:
//! `media.srtp = "optional"` (a phone that offers plain RTP gets a plain call, relayed byte
//! for byte) and `media.accept_unannounced_unencrypted_srtcp` (the Cisco SPA quirk: E=0
//! SRTCP from a phone that did not announce UNENCRYPTED_SRTCP is dropped and counted by
//! default, relayed and counted when switched on).

use std::net::SocketAddr;
use std::time::Duration;

use pbx_edge::sip::message::SipMessage;
use pbx_edge::srtp::{ContextOptions, CryptoAttribute, SrtpContext};
use tokio::net::UdpSocket;

use crate::support::edge::{self, RunningEdge, TestPki};
use crate::support::http;
use crate::support::pbx::{self, Pbx};
use crate::support::phone::{self, snom};

const PHONE_KEY: &str = "WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz";

/// Two UDP sockets on consecutive ports (RTP, RTCP = RTP + 1), the RTP port even.
async fn udp_pair() -> (UdpSocket, UdpSocket) {
    for _ in 0..200 {
        let rtp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let port = rtp.local_addr().unwrap().port();
        if port % 2 != 0 || port == u16::MAX {
            continue;
        }
        if let Ok(rtcp) = UdpSocket::bind(("127.0.0.1", port + 1)).await {
            return (rtp, rtcp);
        }
    }
    panic!("no free RTP/RTCP port pair");
}

/// The audio m-line's port and the c= address of an SDP body.
fn media_addr(sdp: &[u8]) -> SocketAddr {
    let text = std::str::from_utf8(sdp).unwrap();
    let ip = text
        .lines()
        .find_map(|l| l.strip_prefix("c=IN IP4 "))
        .unwrap()
        .trim();
    let port = text
        .lines()
        .find_map(|l| l.strip_prefix("m=audio "))
        .unwrap();
    let port: u16 = port.split(' ').next().unwrap().parse().unwrap();
    SocketAddr::new(ip.parse().unwrap(), port)
}

fn crypto_line(sdp: &[u8]) -> CryptoAttribute {
    let text = std::str::from_utf8(sdp).unwrap();
    let v = text
        .lines()
        .find_map(|l| l.strip_prefix("a=crypto:"))
        .expect("a=crypto");
    CryptoAttribute::parse(v.trim()).unwrap()
}

fn rtp(seq: u16, ssrc: u32) -> Vec<u8> {
    let mut p = vec![0x80, 0x00];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&(u32::from(seq) * 160).to_be_bytes());
    p.extend_from_slice(&ssrc.to_be_bytes());
    p.extend((0..160u32).map(|i| (i as u8) ^ (seq as u8)));
    p
}

/// A receiver report (RFC 3550 §6.4.2) with one report block.
fn rtcp_rr(ssrc: u32, fill: u8) -> Vec<u8> {
    let mut p = vec![0x81, 201, 0, 7];
    p.extend_from_slice(&ssrc.to_be_bytes());
    p.extend(std::iter::repeat_n(fill, 24));
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

fn invite(rtp_port: u16, profile: &str, crypto: &str) -> String {
    let sdp = format!("v=0\r\no=snom 1 1 IN IP4 127.0.0.1\r\ns=call\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio {rtp_port} {profile} 0\r\n{crypto}a=rtpmap:0 PCMU/8000\r\na=ptime:20\r\na=sendrecv\r\n");
    format!("INVITE sip:200@sbc.test SIP/2.0\r\nVia: SIP/2.0/TLS 127.0.0.1:5099;branch=z9hG4bK-pol1;rport\r\nFrom: <sip:101@sbc.test>;tag=pol1\r\nTo: <sip:200@sbc.test>\r\nCall-ID: policy-1\r\nCSeq: 1 INVITE\r\nMax-Forwards: 70\r\nContact: <sip:101@127.0.0.1:5099;transport=tls>\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}", sdp.len())
}

fn pbx_200(req: &SipMessage, rtp_port: u16) -> String {
    let sdp = format!("v=0\r\no=asterisk 9 9 IN IP4 127.0.0.1\r\ns=Asterisk\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio {rtp_port} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=ptime:20\r\na=sendrecv\r\n");
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

/// An established call: the phone offered `profile` (+ `crypto`), the PBX answered plain.
struct Call {
    _pki: TestPki,
    _pbx: Pbx,
    e: RunningEdge,
    _ph: phone::Phone,
    phone: (UdpSocket, UdpSocket),
    pbx_media: (UdpSocket, UdpSocket),
    /// The edge's media address toward the phone (RTP; RTCP is the next port).
    edge_phone_side: SocketAddr,
    /// The edge's media address toward the PBX.
    edge_pbx_side: SocketAddr,
    /// The 200 the phone received.
    ok: SipMessage,
    /// The INVITE the PBX received.
    inv: SipMessage,
}

async fn call(env: &[(&str, &str)], profile: &str, crypto: &str) -> Call {
    let pki = edge::dev_pki();
    let pbx = Pbx::bind().await;
    let mut env = env.to_vec();
    env.extend([
        ("PBX_EDGE_MEDIA__PORT_MIN", "41000"),
        ("PBX_EDGE_MEDIA__PORT_MAX", "41999"),
    ]);
    let e = RunningEdge::start_with_pbx(&pki, pbx.addr(), &env).await;
    let mut ph = snom(&pki, &e).await;
    let phone = udp_pair().await;
    let pbx_media = udp_pair().await;
    ph.send(&invite(
        phone.0.local_addr().unwrap().port(),
        profile,
        crypto,
    ))
    .await;
    assert_eq!(ph.recv().await.unwrap().status(), Some(100));
    let (inv, from) = pbx.recv().await.expect("the PBX gets the INVITE");
    pbx.send(
        from,
        &pbx_200(&inv, pbx_media.0.local_addr().unwrap().port()),
    )
    .await;
    let ok = ph.recv().await.expect("the phone gets the 200");
    assert_eq!(ok.status(), Some(200));
    let ack = format!("ACK sip:sbc.test:{} SIP/2.0\r\nVia: SIP/2.0/TLS 127.0.0.1:5099;branch=z9hG4bK-polack\r\nFrom: <sip:101@sbc.test>;tag=pol1\r\nTo: {}\r\nCall-ID: policy-1\r\nCSeq: 1 ACK\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n", e.tls_addr.port(), ok.header("To").unwrap());
    ph.send(&ack).await;
    pbx.recv().await.expect("the PBX gets the ACK");
    Call {
        edge_phone_side: media_addr(ok.body()),
        edge_pbx_side: media_addr(inv.body()),
        _pki: pki,
        _pbx: pbx,
        e,
        _ph: ph,
        phone,
        pbx_media,
        ok,
        inv,
    }
}

fn rtcp_port(a: SocketAddr) -> SocketAddr {
    SocketAddr::new(a.ip(), a.port() + 1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn optional_srtp_carries_a_plain_call_end_to_end() {
    let c = call(&[("PBX_EDGE_MEDIA__SRTP", "optional")], "RTP/AVP", "").await;
    let answer = std::str::from_utf8(c.ok.body()).unwrap().to_owned();
    assert!(
        answer.contains("m=audio") && answer.contains(" RTP/AVP ") && !answer.contains("a=crypto"),
        "the phone's plain offer is answered plain: {answer}"
    );
    let offer = std::str::from_utf8(c.inv.body()).unwrap().to_owned();
    assert!(
        offer.contains(" RTP/AVP ") && !offer.contains("a=crypto"),
        "{offer}"
    );

    // Plain RTP both ways, byte for byte.
    for seq in 1..=10u16 {
        let from_phone = rtp(seq, 0x1111);
        c.phone
            .0
            .send_to(&from_phone, c.edge_phone_side)
            .await
            .unwrap();
        assert_eq!(
            recv(&c.pbx_media.0)
                .await
                .expect("the PBX receives the phone's RTP"),
            from_phone
        );
        let from_pbx = rtp(seq, 0x2222);
        c.pbx_media
            .0
            .send_to(&from_pbx, c.edge_pbx_side)
            .await
            .unwrap();
        assert_eq!(
            recv(&c.phone.0)
                .await
                .expect("the phone receives the PBX's RTP"),
            from_pbx,
            "PBX → phone: plain, unchanged"
        );
    }
    c.e.stop().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mandatory_srtp_refuses_the_same_plain_offer() {
    let pki = edge::dev_pki();
    let pbx = Pbx::bind().await;
    let e = RunningEdge::start_with_pbx(&pki, pbx.addr(), &[]).await;
    let mut ph = snom(&pki, &e).await;
    ph.send(&invite(40000, "RTP/AVP", "")).await;
    let mut status = None;
    for _ in 0..3 {
        status = ph.recv().await.and_then(|m| m.status());
        if status != Some(100) {
            break;
        }
    }
    assert_eq!(
        status,
        Some(488),
        "the default policy answers a plain offer 488"
    );
    e.stop().await.expect("clean shutdown");
}

/// The phone's SRTCP with E=0 (authenticated only) although its offer did not announce
/// UNENCRYPTED_SRTCP, then a regular E=1 one. Returns the RTCP packets the PBX received (the
/// E=1 one always arrives; packets from one source keep their order through the relay).
async fn unannounced_unencrypted_srtcp(c: &Call) -> Vec<Vec<u8>> {
    let key =
        &crypto_line(format!("a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{PHONE_KEY}").as_bytes())
            .keys[0];
    let mut quirky = SrtpContext::new(
        &key.master_key,
        &ContextOptions {
            unencrypted_srtcp: true,
            ..ContextOptions::default()
        },
    )
    .unwrap();
    let mut regular = SrtpContext::new(&key.master_key, &ContextOptions::default()).unwrap();
    // RTP first: the edge learns the phone's address from authenticated media.
    let plain = rtp(1, 0x1111);
    let mut buf = plain.clone();
    buf.resize(plain.len() + 32, 0);
    let n = regular.protect_rtp(&mut buf, plain.len()).unwrap();
    c.phone
        .0
        .send_to(&buf[..n], c.edge_phone_side)
        .await
        .unwrap();
    assert_eq!(recv(&c.pbx_media.0).await.expect("RTP relayed"), plain);

    let edge_rtcp = rtcp_port(c.edge_phone_side);
    // The quirky packet carries SRTCP index 0; the regular one must have a fresh index (1),
    // or the replay check would rightly refuse it once the quirky one was accepted.
    let mut spent = rtcp_rr(0x1111, 0);
    spent.resize(spent.len() + 32, 0);
    regular.protect_rtcp(&mut spent, 32).unwrap();
    for (ctx, fill) in [(&mut quirky, 0xe0u8), (&mut regular, 0xe1)] {
        let rr = rtcp_rr(0x1111, fill);
        let mut buf = rr.clone();
        buf.resize(rr.len() + 32, 0);
        let n = ctx.protect_rtcp(&mut buf, rr.len()).unwrap();
        c.phone.1.send_to(&buf[..n], edge_rtcp).await.unwrap();
    }
    let mut got = Vec::new();
    while let Some(p) = recv(&c.pbx_media.1).await {
        let last = p.get(8) == Some(&0xe1);
        got.push(p);
        if last {
            break;
        }
    }
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unannounced_unencrypted_srtcp_is_dropped_by_default_and_relayed_when_configured() {
    let offer = format!("a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{PHONE_KEY}\r\n");
    let accepted = "pbx_edge_media_srtcp_unannounced_unencrypted_total";

    // Default: the E=0 packet is dropped (counted); only the E=1 one reaches the PBX.
    let strict = call(&[], "RTP/SAVP", &offer).await;
    let got = unannounced_unencrypted_srtcp(&strict).await;
    assert_eq!(
        got,
        vec![rtcp_rr(0x1111, 0xe1)],
        "only the regular SRTCP is relayed"
    );
    let m = http::get(strict.e.admin_addr, "/metrics").await.1;
    assert_eq!(http::metric(&m, accepted), 0.0, "{m}");
    let dropped: f64 = m
        .lines()
        .filter(|l| l.starts_with("pbx_edge_media_dropped_total{"))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum();
    assert!(dropped >= 1.0, "the refused E=0 packet is counted: {m}");
    strict.e.stop().await.expect("clean shutdown");

    // Switched on: both reach the PBX, the quirk is counted.
    let lenient = call(
        &[(
            "PBX_EDGE_MEDIA__ACCEPT_UNANNOUNCED_UNENCRYPTED_SRTCP",
            "true",
        )],
        "RTP/SAVP",
        &offer,
    )
    .await;
    let got = unannounced_unencrypted_srtcp(&lenient).await;
    assert_eq!(
        got,
        vec![rtcp_rr(0x1111, 0xe0), rtcp_rr(0x1111, 0xe1)],
        "the E=0 SRTCP (tag verified) is relayed as plain RTCP"
    );
    let mut m = String::new();
    for _ in 0..50 {
        m = http::get(lenient.e.admin_addr, "/metrics").await.1;
        if http::metric(&m, accepted) >= 1.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(http::metric(&m, accepted), 1.0, "{m}");
    lenient.e.stop().await.expect("clean shutdown");
}
