//! Per-device caps (issue 11 point 7): calls and relay ports are counted per device (its MAC)
//! over all its connections and both directions, not per connection. A device at its cap gets
//! 486 (calls) or 503 (ports); the PBX calling a device at its cap gets 486; another device
//! still calls.

use crate::support::edge::{self, RunningEdge, TestPki};
use crate::support::http;
use crate::support::pbx::{self, Pbx};
use crate::support::phone::{self, snom, Phone};
use crate::support::ports;

const PHONE_KEY: &str = "WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz";

async fn setup(extra: &[(&str, &str)]) -> (TestPki, Pbx, RunningEdge) {
    let pki = edge::dev_pki();
    let pbx = Pbx::bind().await;
    let mut env = vec![
        ("PBX_EDGE_SIP__T1_MS", "100"),
        ("PBX_EDGE_MEDIA__PORT_MIN", ports::DEVICE_CAPS.0),
        ("PBX_EDGE_MEDIA__PORT_MAX", ports::DEVICE_CAPS.1),
    ];
    env.extend_from_slice(extra);
    let e = RunningEdge::start_with_pbx(&pki, pbx.addr(), &env).await;
    (pki, pbx, e)
}

/// An INVITE from `user` with `audio_lines` SRTP audio m-lines.
fn invite(user: &str, call_id: &str, audio_lines: usize) -> String {
    let mut sdp = String::from(
        "v=0\r\no=phone 1 1 IN IP4 127.0.0.1\r\ns=call\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n",
    );
    for i in 0..audio_lines {
        sdp.push_str(&format!("m=audio {} RTP/SAVP 0\r\na=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{PHONE_KEY}\r\na=rtpmap:0 PCMU/8000\r\na=sendrecv\r\n", 40000 + 2 * i));
    }
    format!("INVITE sip:200@sbc.test SIP/2.0\r\nVia: SIP/2.0/TLS 127.0.0.1:5099;branch=z9hG4bK-{call_id}\r\nFrom: <sip:{user}@sbc.test>;tag=t-{call_id}\r\nTo: <sip:200@sbc.test>\r\nCall-ID: {call_id}\r\nCSeq: 1 INVITE\r\nMax-Forwards: 70\r\nContact: <sip:{user}@127.0.0.1:5099;transport=tls>\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}", sdp.len())
}

/// Sends the INVITE; true if it was forwarded (100 Trying, the PBX got it), else the final
/// status and its Warning.
async fn call(ph: &mut Phone, pbx: &Pbx, inv: &str, call_id: &str) -> Result<(), (u16, String)> {
    ph.send(inv).await;
    let r = ph.recv().await.expect("an answer");
    if r.status() == Some(100) {
        let (got, from) = pbx.recv().await.expect("forwarded");
        assert_eq!(got.call_id().unwrap(), call_id);
        // Ringing: the call stays up and the edge stops retransmitting (RFC 3261 §17.1.1.2).
        pbx.send(from, &pbx::response(&got, 180, "Ringing", ""))
            .await;
        let ringing = ph.recv().await.expect("180 relayed");
        assert_eq!(ringing.status(), Some(180));
        return Ok(());
    }
    Err((
        r.status().unwrap(),
        r.header("Warning").unwrap_or_default().to_owned(),
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_device_on_two_connections_cannot_exceed_its_call_cap_in_either_direction() {
    let (pki, pbx, e) = setup(&[("PBX_EDGE_SIP__MAX_CALLS_PER_DEVICE", "2")]).await;
    let mut a = snom(&pki, &e).await;
    let mut b = snom(&pki, &e).await;
    // Connection b registers 101, so the PBX can call the device too.
    b.send(&phone::register("101", 5099, 1, "reg-cap", ""))
        .await;
    let (reg, from) = pbx.recv().await.unwrap();
    let edge_uri = pbx::contact_uri(&reg).unwrap();
    pbx.send(from, &pbx::register_ok(&reg, &edge_uri, 600))
        .await;
    assert_eq!(b.recv().await.unwrap().status(), Some(200));

    call(&mut a, &pbx, &invite("101", "cap-1", 1), "cap-1")
        .await
        .expect("first call");
    call(&mut b, &pbx, &invite("101", "cap-2", 1), "cap-2")
        .await
        .expect("second call, other connection");
    // The third, on either connection, is refused 486 and never reaches the PBX.
    for (ph, id) in [(&mut a, "cap-3a"), (&mut b, "cap-3b")] {
        let (status, warning) = call(ph, &pbx, &invite("101", id, 1), id)
            .await
            .expect_err("over the device's call cap");
        assert_eq!(status, 486);
        assert!(warning.contains("sip.max_calls_per_device"), "{warning}");
    }
    // The PBX calling the device at its cap gets 486 too; the phone sees nothing.
    let sdp = "v=0\r\no=asterisk 9 9 IN IP4 127.0.0.1\r\ns=Asterisk\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 41000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=sendrecv\r\n";
    let inbound = format!("INVITE {edge_uri} SIP/2.0\r\nVia: SIP/2.0/UDP {pbx};branch=z9hG4bK-cap-in\r\nFrom: <sip:200@{pbx}>;tag=pbxtag\r\nTo: <sip:101@{pbx}>\r\nCall-ID: cap-in\r\nCSeq: 10 INVITE\r\nMax-Forwards: 70\r\nContact: <sip:200@{pbx}>\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}", sdp.len(), pbx = pbx.addr());
    pbx.send(e.pbx_local, &inbound).await;
    let mut final_status = None;
    while let Some((r, _)) = pbx.recv().await {
        if r.call_id().ok() == Some("cap-in") && r.status().is_some_and(|s| s >= 200) {
            final_status = r.status();
            break;
        }
    }
    assert_eq!(
        final_status,
        Some(486),
        "the PBX is told the device is busy"
    );
    assert!(
        b.recv_within(std::time::Duration::from_millis(500))
            .await
            .is_none(),
        "the phone never sees the refused call"
    );
    // Another device still calls.
    let mut y = phone::yealink(&pki, &e).await;
    call(&mut y, &pbx, &invite("102", "other-1", 1), "other-1")
        .await
        .expect("another device is not affected");
    let m = http::get(e.admin_addr, "/metrics").await.1;
    assert_eq!(
        http::metric(
            &m,
            "pbx_edge_sip_denied_total{reason=\"device_call_limit\"}"
        ),
        3.0,
        "{m}"
    );
    e.stop().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_device_cannot_hold_more_than_its_media_ports() {
    // 12 ports: three relayed m-lines (4 ports each).
    let (pki, pbx, e) = setup(&[("PBX_EDGE_MEDIA__MAX_PORTS_PER_DEVICE", "12")]).await;
    let mut a = snom(&pki, &e).await;
    let mut b = snom(&pki, &e).await;
    call(&mut a, &pbx, &invite("101", "ports-1", 2), "ports-1")
        .await
        .expect("8 ports");
    // Two more m-lines on the other connection would make 16: 503, nothing leased.
    let (status, warning) = call(&mut b, &pbx, &invite("101", "ports-2", 2), "ports-2")
        .await
        .expect_err("over the device's port cap");
    assert_eq!(status, 503);
    assert!(warning.contains("media.max_ports_per_device"), "{warning}");
    // One more fits exactly.
    call(&mut b, &pbx, &invite("101", "ports-3", 1), "ports-3")
        .await
        .expect("12 ports");
    // Another device has its own ports.
    let mut y = phone::yealink(&pki, &e).await;
    call(
        &mut y,
        &pbx,
        &invite("102", "ports-other", 3),
        "ports-other",
    )
    .await
    .expect("another device is not affected");
    let m = http::get(e.admin_addr, "/metrics").await.1;
    assert_eq!(
        http::metric(
            &m,
            "pbx_edge_sip_denied_total{reason=\"device_port_limit\"}"
        ),
        1.0,
        "{m}"
    );
    // 3 + 3 relayed m-lines: the refused offer leased nothing (2 pairs per stream).
    assert_eq!(
        http::metric(&m, "pbx_edge_media_port_pairs_in_use"),
        12.0,
        "{m}"
    );
    e.stop().await.expect("clean shutdown");
}
