//! README media switches end to end, through the config as an operator sets them:
//! `media.srtp = "optional"` (a phone that offers plain RTP gets a plain call, relayed byte
//! for byte) and `media.accept_unannounced_unencrypted_srtcp` (the Cisco SPA quirk: E=0
//! SRTCP from a phone that did not announce UNENCRYPTED_SRTCP is dropped and counted by
//! default, relayed and counted when switched on).

use std::net::SocketAddr;

use pbx_edge::sip::message::SipMessage;
use pbx_edge::srtp::{ContextOptions, SrtpContext};
use tokio::net::UdpSocket;

use crate::support::http;
use crate::support::media::{recv, udp_pair};
use crate::support::offer::{crypto_line, media_addr, pbx_pcmu_sdp, text, PHONE_KEY};
use crate::support::phone::Phone;
use crate::support::ports;
use crate::support::rtp::voice;
use crate::support::scenario::{ack, answer, dial, wait_metric, Lab};

/// A receiver report (RFC 3550 §6.4.2) with one report block.
fn rtcp_rr(ssrc: u32, fill: u8) -> Vec<u8> {
    let mut p = vec![0x81, 201, 0, 7];
    p.extend_from_slice(&ssrc.to_be_bytes());
    p.extend(std::iter::repeat_n(fill, 24));
    p
}

/// The phone's offer: PCMU over `profile`, with the `crypto` lines given.
fn offer(rtp_port: u16, profile: &str, crypto: &str) -> String {
    format!("v=0\r\no=snom 1 1 IN IP4 127.0.0.1\r\ns=call\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio {rtp_port} {profile} 0\r\n{crypto}a=rtpmap:0 PCMU/8000\r\na=ptime:20\r\na=sendrecv\r\n")
}

/// An established call: the phone offered `profile` (+ `crypto`), the PBX answered plain.
struct Call {
    lab: Lab,
    _ph: Phone,
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
    let mut env = env.to_vec();
    env.extend([
        ("PBX_EDGE_MEDIA__PORT_MIN", ports::MEDIA_POLICY.0),
        ("PBX_EDGE_MEDIA__PORT_MAX", ports::MEDIA_POLICY.1),
    ]);
    let lab = Lab::start(&env).await;
    let mut ph = lab.phone().await;
    let phone = udp_pair().await;
    let pbx_media = udp_pair().await;
    let mut d = lab.dialog("policy-1", "pol1");
    let sdp = offer(phone.0.local_addr().unwrap().port(), profile, crypto);
    let invite = d.invite("sip:200@sbc.test", "", &sdp);
    let (inv, from) = dial(&lab.pbx, &mut ph, &invite).await;
    let sdp = pbx_pcmu_sdp(pbx_media.0.local_addr().unwrap().port());
    let ok = answer(&lab.pbx, &mut ph, &inv, from, &sdp).await;
    d.confirmed_by(&ok);
    ack(&lab.pbx, &mut ph, &d, 1).await;
    Call {
        edge_phone_side: media_addr(ok.body()),
        edge_pbx_side: media_addr(inv.body()),
        lab,
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
    let answer = text(c.ok.body());
    assert!(
        answer.contains("m=audio") && answer.contains(" RTP/AVP ") && !answer.contains("a=crypto"),
        "the phone's plain offer is answered plain: {answer}"
    );
    let offer = text(c.inv.body());
    assert!(
        offer.contains(" RTP/AVP ") && !offer.contains("a=crypto"),
        "{offer}"
    );

    // Plain RTP both ways, byte for byte.
    for seq in 1..=10u16 {
        let from_phone = voice(seq, 0x1111);
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
        let from_pbx = voice(seq, 0x2222);
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
    c.lab.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mandatory_srtp_refuses_the_same_plain_offer() {
    let lab = Lab::start(&[]).await;
    let mut ph = lab.phone().await;
    let invite =
        lab.dialog("policy-1", "pol1")
            .invite("sip:200@sbc.test", "", &offer(40000, "RTP/AVP", ""));
    ph.send(&invite).await;
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
    lab.stop().await;
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
    let plain = voice(1, 0x1111);
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
    let m = http::get(strict.lab.e.admin_addr, "/metrics").await.1;
    assert_eq!(http::metric(&m, accepted), 0.0, "{m}");
    let dropped: f64 = m
        .lines()
        .filter(|l| l.starts_with("pbx_edge_media_dropped_total{"))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum();
    assert!(dropped >= 1.0, "the refused E=0 packet is counted: {m}");
    strict.lab.stop().await;

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
    let m = wait_metric(lenient.lab.e.admin_addr, accepted, |v| v >= 1.0).await;
    assert_eq!(http::metric(&m, accepted), 1.0, "{m}");
    lenient.lab.stop().await;
}
