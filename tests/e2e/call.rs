//! Calls end to end in-process: a TLS "phone" speaking SRTP (protected and checked with the
//! edge's own SRTP engine) ⇄ pbx-edge ⇄ a UDP "PBX" speaking plain RTP, in both directions.

use crate::support::edge::{self, RunningEdge, TestPki};
use crate::support::http;
use crate::support::pbx::{self, Pbx};
use crate::support::phone::{self, snom};
use pbx_edge::sip::message::SipMessage;
use pbx_edge::srtp::{ContextOptions, CryptoAttribute, CryptoSuite, SrtpContext};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::UdpSocket;

const PHONE_KEY: &str = "WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz";

async fn setup() -> (TestPki, Pbx, RunningEdge) {
    let pki = edge::dev_pki();
    let pbx = Pbx::bind().await;
    let env = [
        ("PBX_EDGE_SIP__T1_MS", "100"),
        ("PBX_EDGE_MEDIA__PORT_MIN", "42000"),
        ("PBX_EDGE_MEDIA__PORT_MAX", "42999"),
    ];
    let e = RunningEdge::start_with_pbx(&pki, pbx.addr(), &env).await;
    (pki, pbx, e)
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

fn context(c: &CryptoAttribute) -> SrtpContext {
    let k = &c.keys[0];
    SrtpContext::new(
        &k.master_key,
        &ContextOptions::from_sdes(k, &c.session_params),
    )
    .unwrap()
}

fn rtp(seq: u16, ssrc: u32) -> Vec<u8> {
    let mut p = vec![0x80, 0x00];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&(u32::from(seq) * 160).to_be_bytes());
    p.extend_from_slice(&ssrc.to_be_bytes());
    p.extend((0..160u32).map(|i| (i as u8) ^ (seq as u8)));
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

fn phone_invite(rtp_port: u16) -> String {
    let sdp = format!("v=0\r\no=snom 1 1 IN IP4 127.0.0.1\r\ns=call\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio {rtp_port} RTP/SAVP 0 101\r\na=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{PHONE_KEY}\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-15\r\na=ptime:20\r\na=sendrecv\r\n");
    format!("INVITE sip:200@sbc.test SIP/2.0\r\nVia: SIP/2.0/TLS 127.0.0.1:5099;branch=z9hG4bK-inv1;rport\r\nFrom: <sip:101@sbc.test>;tag=caller1\r\nTo: <sip:200@sbc.test>\r\nCall-ID: call-out-1\r\nCSeq: 1 INVITE\r\nMax-Forwards: 70\r\nContact: <sip:101@127.0.0.1:5099;transport=tls>\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}", sdp.len())
}

fn pbx_sdp(rtp_port: u16) -> String {
    format!("v=0\r\no=asterisk 9 9 IN IP4 127.0.0.1\r\ns=Asterisk\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio {rtp_port} RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\na=ptime:20\r\na=sendrecv\r\n")
}

/// Relays packets both ways and checks them byte for byte.
async fn media_both_ways(
    phone_sock: &UdpSocket,
    pbx_sock: &UdpSocket,
    edge_phone_side: SocketAddr,
    edge_pbx_side: SocketAddr,
    phone_tx: &mut SrtpContext,
    phone_rx: &mut SrtpContext,
) {
    for seq in 1..=20u16 {
        let plain = rtp(seq, 0x1111);
        let mut buf = plain.clone();
        buf.resize(plain.len() + 32, 0);
        let n = phone_tx.protect_rtp(&mut buf, plain.len()).unwrap();
        phone_sock
            .send_to(&buf[..n], edge_phone_side)
            .await
            .unwrap();
        let got = recv(pbx_sock).await.expect("PBX receives plain RTP");
        assert_eq!(got, plain, "phone → PBX: byte-identical plain RTP");

        let plain = rtp(seq, 0x2222);
        pbx_sock.send_to(&plain, edge_pbx_side).await.unwrap();
        let mut got = recv(phone_sock).await.expect("phone receives SRTP");
        assert_ne!(
            &got[12..],
            &plain[12..],
            "payload is encrypted toward the phone"
        );
        let n = phone_rx
            .unprotect_rtp(&mut got)
            .expect("edge's SRTP authenticates");
        assert_eq!(
            &got[..n],
            &plain[..],
            "PBX → phone: decrypts to the PBX's packet"
        );
    }
}

/// A phone → PBX call up to the PBX having received the INVITE (the phone saw 100 Trying).
struct Outgoing {
    pki: TestPki,
    pbx: Pbx,
    e: RunningEdge,
    ph: phone::Phone,
    phone_sock: UdpSocket,
    pbx_sock: UdpSocket,
    invite: String,
    inv: SipMessage,
    from: SocketAddr,
}

async fn outgoing() -> Outgoing {
    let (pki, pbx, e) = setup().await;
    let mut ph = snom(&pki, &e).await;
    let phone_sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let pbx_sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let invite = phone_invite(phone_sock.local_addr().unwrap().port());
    ph.send(&invite).await;
    assert_eq!(ph.recv().await.unwrap().status(), Some(100));
    let (inv, from) = pbx.recv().await.expect("PBX gets the INVITE");
    Outgoing {
        pki,
        pbx,
        e,
        ph,
        phone_sock,
        pbx_sock,
        invite,
        inv,
        from,
    }
}

/// The PBX's 200 to `req` with a Contact and `sdp`.
fn pbx_200_with_sdp(req: &SipMessage, sdp: &str) -> String {
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

async fn wait_idle(e: &RunningEdge) -> String {
    let mut m = String::new();
    for _ in 0..50 {
        m = http::get(e.admin_addr, "/metrics").await.1;
        if http::metric(&m, "pbx_edge_calls_active") == 0.0
            && http::metric(&m, "pbx_edge_media_active_streams") == 0.0
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    m
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn phone_calls_the_pbx_with_srtp_and_hangs_up() {
    let (pki, pbx, e) = setup().await;
    let mut ph = snom(&pki, &e).await;
    let phone_sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let pbx_sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    ph.send(&phone_invite(phone_sock.local_addr().unwrap().port()))
        .await;
    let trying = ph.recv().await.expect("100 Trying at once");
    assert_eq!(trying.status(), Some(100));

    let (inv, from) = pbx.recv().await.expect("PBX gets the INVITE");
    let body = std::str::from_utf8(inv.body()).unwrap().to_owned();
    assert!(
        body.contains("RTP/AVP") && !body.contains("SAVP") && !body.contains("a=crypto"),
        "{body}"
    );
    assert!(
        body.contains("a=rtpmap:101 telephone-event/8000"),
        "codecs kept: {body}"
    );
    let edge_pbx_side = media_addr(inv.body());
    let contact = inv.header("Contact").unwrap().to_owned();
    assert!(
        contact.contains(&e.pbx_local.to_string()),
        "edge Contact toward the PBX: {contact}"
    );

    let sdp = pbx_sdp(pbx_sock.local_addr().unwrap().port());
    pbx.send(
        from,
        &pbx::response(
            &inv,
            180,
            "Ringing",
            "Contact: <sip:200@127.0.0.1:5060>\r\n",
        ),
    )
    .await;
    assert_eq!(ph.recv().await.unwrap().status(), Some(180));
    let ok = pbx_200_with_sdp(&inv, &sdp);
    pbx.send(from, &ok).await;
    let ok = ph.recv().await.expect("phone gets 200");
    assert_eq!(ok.status(), Some(200));
    let answer = std::str::from_utf8(ok.body()).unwrap().to_owned();
    assert!(answer.contains("RTP/SAVP"), "{answer}");
    let edge_line = crypto_line(ok.body());
    assert_eq!(edge_line.tag, 1, "answer echoes the offer's tag");
    assert_eq!(edge_line.suite, CryptoSuite::AesCm128HmacSha1_80);
    let edge_phone_side = media_addr(ok.body());
    assert!(
        ok.header("Contact")
            .unwrap()
            .contains(&e.tls_addr.to_string()),
        "the phone's remote target is the edge"
    );

    // ACK for the 2xx goes end to end.
    let ack = format!("ACK sip:sbc.test:{} SIP/2.0\r\nVia: SIP/2.0/TLS 127.0.0.1:5099;branch=z9hG4bK-ack1\r\nFrom: <sip:101@sbc.test>;tag=caller1\r\nTo: {}\r\nCall-ID: call-out-1\r\nCSeq: 1 ACK\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n", e.tls_addr.port(), ok.header("To").unwrap());
    ph.send(&ack).await;
    let (got_ack, _) = pbx.recv().await.expect("PBX gets the ACK");
    assert_eq!(got_ack.method().map(|m| m.as_str()), Some("ACK"));
    assert_eq!(
        got_ack.request_uri().unwrap().to_string(),
        "sip:200@127.0.0.1:5060",
        "restored PBX target"
    );

    let phone_line =
        CryptoAttribute::parse(&format!("1 AES_CM_128_HMAC_SHA1_80 inline:{PHONE_KEY}")).unwrap();
    let mut phone_tx = context(&phone_line);
    let mut phone_rx = context(&edge_line);
    media_both_ways(
        &phone_sock,
        &pbx_sock,
        edge_phone_side,
        edge_pbx_side,
        &mut phone_tx,
        &mut phone_rx,
    )
    .await;

    let calls = http::get(e.admin_addr, "/api/calls").await.1;
    assert!(
        calls.contains("call-out-1")
            && calls.contains("AES_CM_128_HMAC_SHA1_80")
            && calls.contains("\"established\":true"),
        "{calls}"
    );

    // A forged SRTP packet is dropped, not relayed. Wait until the relay has judged it:
    // a BYE sent at once could close the stream before a loaded machine read the packet.
    let mut forged = rtp(99, 0x1111);
    forged.extend_from_slice(&[0u8; 10]);
    phone_sock.send_to(&forged, edge_phone_side).await.unwrap();
    let mut judged = 0.0;
    for _ in 0..50 {
        let m = http::get(e.admin_addr, "/metrics").await.1;
        judged = http::metric(&m, "pbx_edge_media_srtp_auth_failures_total");
        if judged >= 1.0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(judged, 1.0, "the forged packet fails authentication");

    // BYE from the phone.
    let bye = ack
        .replace("ACK sip", "BYE sip")
        .replace("z9hG4bK-ack1", "z9hG4bK-bye1")
        .replace("CSeq: 1 ACK", "CSeq: 2 BYE");
    ph.send(&bye).await;
    let (got_bye, from) = pbx
        .recv()
        .await
        .expect("PBX gets BYE (and no forged RTP before it)");
    assert_eq!(got_bye.method().map(|m| m.as_str()), Some("BYE"));
    pbx.send(from, &pbx::response(&got_bye, 200, "OK", ""))
        .await;
    assert_eq!(ph.recv().await.unwrap().status(), Some(200));
    let m = wait_idle(&e).await;
    assert_eq!(http::metric(&m, "pbx_edge_calls_active"), 0.0, "{m}");
    assert_eq!(
        http::metric(&m, "pbx_edge_media_active_streams"),
        0.0,
        "{m}"
    );
    assert!(
        http::metric(&m, "pbx_edge_media_srtp_auth_failures_total") >= 1.0,
        "{m}"
    );
    assert_eq!(
        http::metric(&m, "pbx_edge_calls_total{outcome=\"answered\"}"),
        1.0
    );
    e.stop().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pbx_calls_a_registered_phone_and_connection_loss_ends_the_call() {
    let (pki, pbx, e) = setup().await;
    let mut ph = snom(&pki, &e).await;
    // Register 101 (no challenge).
    ph.send(&phone::register("101", 5099, 1, "reg-c", "")).await;
    let (reg, from) = pbx.recv().await.unwrap();
    let edge_uri = pbx::contact_uri(&reg).unwrap();
    pbx.send(from, &pbx::register_ok(&reg, &edge_uri, 120))
        .await;
    assert_eq!(ph.recv().await.unwrap().status(), Some(200));

    let phone_sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let pbx_sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let sdp = pbx_sdp(pbx_sock.local_addr().unwrap().port());
    let invite = |branch: &str, call_id: &str| {
        format!("INVITE {edge_uri} SIP/2.0\r\nVia: SIP/2.0/UDP {pbx};branch={branch}\r\nFrom: \"Reception\" <sip:200@{pbx}>;tag=pbxtag\r\nTo: <sip:101@{pbx}>\r\nCall-ID: {call_id}\r\nCSeq: 10 INVITE\r\nMax-Forwards: 70\r\nContact: <sip:200@{pbx}>\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}", sdp.len(), pbx = pbx.addr())
    };
    pbx.send(e.pbx_local, &invite("z9hG4bK-in1", "call-in-1"))
        .await;
    let (trying, _) = pbx.recv().await.unwrap();
    assert_eq!(trying.status(), Some(100));
    let inv = ph.recv().await.expect("phone gets the INVITE");
    assert_eq!(
        inv.request_uri().unwrap().to_string().to_ascii_lowercase(),
        "sip:101@127.0.0.1:5099;transport=tls;line=abc"
    );
    let offer = std::str::from_utf8(inv.body()).unwrap().to_owned();
    assert!(
        offer.contains("RTP/SAVP") && offer.contains("AES_CM_128_HMAC_SHA1_80"),
        "{offer}"
    );
    let edge_phone_side = media_addr(inv.body());
    // The phone picks the AES_CM_128_HMAC_SHA1_80 line and answers with its own key.
    let chosen = offer
        .lines()
        .filter_map(|l| l.strip_prefix("a=crypto:"))
        .map(|v| CryptoAttribute::parse(v.trim()).unwrap())
        .find(|c| c.suite == CryptoSuite::AesCm128HmacSha1_80)
        .unwrap();
    let answer_sdp = format!("v=0\r\no=snom 2 2 IN IP4 127.0.0.1\r\ns=call\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio {} RTP/SAVP 0\r\na=crypto:{} AES_CM_128_HMAC_SHA1_80 inline:{PHONE_KEY}\r\na=rtpmap:0 PCMU/8000\r\na=sendrecv\r\n", phone_sock.local_addr().unwrap().port(), chosen.tag);
    let mut ok = phone::response(&inv, 200).replace("Content-Length: 0\r\n\r\n", &format!("Contact: <sip:101@127.0.0.1:5099;transport=tls>\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{answer_sdp}", answer_sdp.len()));
    ok = ok.replace(
        &format!("To: {}", inv.header("To").unwrap()),
        &format!("To: {};tag=phonetag", inv.header("To").unwrap()),
    );
    ph.send(&ok).await;
    let (ok, _) = pbx.recv().await.expect("PBX gets 200");
    assert_eq!(ok.status(), Some(200));
    let edge_pbx_side = media_addr(ok.body());
    assert!(std::str::from_utf8(ok.body()).unwrap().contains("RTP/AVP"));
    // The PBX does not ACK at once: the edge repeats its 2xx over UDP (RFC 3261 §13.3.1.4).
    let (again, _) = pbx.recv().await.expect("2xx repeated until ACK");
    assert_eq!(again.status(), Some(200));
    let ack = format!("ACK {edge_uri} SIP/2.0\r\nVia: SIP/2.0/UDP {pbx};branch=z9hG4bK-inack\r\nFrom: \"Reception\" <sip:200@{pbx}>;tag=pbxtag\r\nTo: {}\r\nCall-ID: call-in-1\r\nCSeq: 10 ACK\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n", ok.header("To").unwrap(), pbx = pbx.addr());
    pbx.send(e.pbx_local, &ack).await;
    let got = ph.recv().await.expect("phone gets the ACK");
    assert_eq!(got.method().map(|m| m.as_str()), Some("ACK"));

    let phone_line =
        CryptoAttribute::parse(&format!("1 AES_CM_128_HMAC_SHA1_80 inline:{PHONE_KEY}")).unwrap();
    let mut phone_tx = context(&phone_line);
    let mut phone_rx = context(&chosen);
    media_both_ways(
        &phone_sock,
        &pbx_sock,
        edge_phone_side,
        edge_pbx_side,
        &mut phone_tx,
        &mut phone_rx,
    )
    .await;

    // The phone's connection drops mid-call: the edge sends BYE to the PBX.
    drop(ph);
    let mut bye: Option<SipMessage> = None;
    for _ in 0..10 {
        match pbx.recv().await {
            Some((m, _)) if m.method().map(|m| m.as_str()) == Some("BYE") => {
                bye = Some(m);
                break;
            }
            Some(_) => continue,
            None => break,
        }
    }
    let bye = bye.expect("BYE to the PBX after the phone's connection was lost");
    assert_eq!(bye.call_id().unwrap(), "call-in-1");
    pbx.send(e.pbx_local, &pbx::response(&bye, 200, "OK", ""))
        .await;
    let m = wait_idle(&e).await;
    assert_eq!(http::metric(&m, "pbx_edge_calls_active"), 0.0, "{m}");
    assert_eq!(
        http::metric(&m, "pbx_edge_media_active_streams"),
        0.0,
        "{m}"
    );

    // No phone any more: a new INVITE gets 430 at once, and nothing leaks.
    pbx.send(e.pbx_local, &invite("z9hG4bK-in2", "call-in-2"))
        .await;
    let mut status = None;
    for _ in 0..5 {
        if let Some((m, _)) = pbx.recv().await {
            if m.status().is_some_and(|s| s >= 200) {
                status = m.status();
                break;
            }
        }
    }
    assert_eq!(status, Some(430));
    let m = wait_idle(&e).await;
    assert_eq!(
        http::metric(&m, "pbx_edge_media_port_pairs_in_use"),
        0.0,
        "{m}"
    );
    e.stop().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn phone_cancels_a_ringing_call_and_a_plain_offer_is_refused() {
    let (pki, pbx, e) = setup().await;
    let mut ph = snom(&pki, &e).await;
    let phone_sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let invite = phone_invite(phone_sock.local_addr().unwrap().port());
    ph.send(&invite).await;
    assert_eq!(ph.recv().await.unwrap().status(), Some(100));
    let (inv, from) = pbx.recv().await.expect("PBX gets the INVITE");
    pbx.send(from, &pbx::response(&inv, 180, "Ringing", ""))
        .await;
    assert_eq!(ph.recv().await.unwrap().status(), Some(180));

    let cancel = "CANCEL sip:200@sbc.test SIP/2.0\r\nVia: SIP/2.0/TLS 127.0.0.1:5099;branch=z9hG4bK-inv1;rport\r\nFrom: <sip:101@sbc.test>;tag=caller1\r\nTo: <sip:200@sbc.test>\r\nCall-ID: call-out-1\r\nCSeq: 1 CANCEL\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n";
    ph.send(cancel).await;
    let ok = ph.recv().await.expect("200 for the CANCEL");
    assert_eq!(
        (ok.status(), ok.cseq().unwrap().method.as_str()),
        (Some(200), "CANCEL")
    );
    let (c, from) = pbx.recv().await.expect("PBX gets the CANCEL");
    assert_eq!(c.method().map(|m| m.as_str()), Some("CANCEL"));
    assert_eq!(
        c.top_via().unwrap().branch(),
        inv.top_via().unwrap().branch(),
        "same branch as the INVITE (§9.1)"
    );
    pbx.send(from, &pbx::response(&c, 200, "OK", "")).await;
    pbx.send(from, &pbx::response(&inv, 487, "Request Terminated", ""))
        .await;
    let t = ph.recv().await.expect("487 to the phone");
    assert_eq!(t.status(), Some(487));
    let (ack, _) = pbx.recv().await.expect("the edge ACKs the 487 itself");
    assert_eq!(ack.method().map(|m| m.as_str()), Some("ACK"));
    let m = wait_idle(&e).await;
    assert_eq!(http::metric(&m, "pbx_edge_calls_active"), 0.0, "{m}");
    assert_eq!(
        http::metric(&m, "pbx_edge_media_active_streams"),
        0.0,
        "{m}"
    );
    assert_eq!(
        http::metric(&m, "pbx_edge_calls_total{outcome=\"cancelled\"}"),
        1.0,
        "{m}"
    );

    // srtp = mandatory: a plain RTP/AVP offer is refused with 488 and never reaches the PBX.
    let plain = invite
        .replace("RTP/SAVP", "RTP/AVP")
        .replace(
            &format!("a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{PHONE_KEY}\r\n"),
            "",
        )
        .replace("call-out-1", "call-out-2")
        .replace("z9hG4bK-inv1", "z9hG4bK-inv2");
    let plain = {
        let (head, body) = plain.split_once("\r\n\r\n").unwrap();
        let head: Vec<String> = head
            .lines()
            .map(|l| {
                if l.starts_with("Content-Length") {
                    format!("Content-Length: {}", body.len())
                } else {
                    l.to_owned()
                }
            })
            .collect();
        format!("{}\r\n\r\n{body}", head.join("\r\n"))
    };
    ph.send(&plain).await;
    let r = ph.recv().await.unwrap();
    let r = if r.status() == Some(100) {
        ph.recv().await.unwrap()
    } else {
        r
    };
    assert_eq!(r.status(), Some(488));
    assert!(
        pbx.recv_within(Duration::from_millis(300)).await.is_none(),
        "nothing forwarded"
    );
    let m = wait_idle(&e).await;
    assert_eq!(
        http::metric(&m, "pbx_edge_media_port_pairs_in_use"),
        0.0,
        "{m}"
    );
    e.stop().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hold_resume_and_update_keep_the_srtp_context() {
    let Outgoing {
        pki: _pki,
        pbx,
        e,
        mut ph,
        phone_sock,
        pbx_sock,
        invite: _,
        inv,
        from,
    } = outgoing().await;
    let edge_pbx_side = media_addr(inv.body());
    let sdp = pbx_sdp(pbx_sock.local_addr().unwrap().port());
    let answer = pbx_200_with_sdp;
    pbx.send(from, &answer(&inv, &sdp)).await;
    let ok = ph.recv().await.unwrap();
    assert_eq!(ok.status(), Some(200));
    let edge_line = crypto_line(ok.body());
    let edge_phone_side = media_addr(ok.body());
    let to = ok.header("To").unwrap().to_owned();
    let ack = |cseq: u32, branch: &str| {
        format!("ACK sip:sbc.test:{} SIP/2.0\r\nVia: SIP/2.0/TLS 127.0.0.1:5099;branch={branch}\r\nFrom: <sip:101@sbc.test>;tag=caller1\r\nTo: {to}\r\nCall-ID: call-out-1\r\nCSeq: {cseq} ACK\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n", e.tls_addr.port())
    };
    ph.send(&ack(1, "z9hG4bK-ack1")).await;
    pbx.recv().await.expect("ACK");

    let phone_line =
        CryptoAttribute::parse(&format!("1 AES_CM_128_HMAC_SHA1_80 inline:{PHONE_KEY}")).unwrap();
    let mut phone_tx = context(&phone_line);
    let mut phone_rx = context(&edge_line);
    media_both_ways(
        &phone_sock,
        &pbx_sock,
        edge_phone_side,
        edge_pbx_side,
        &mut phone_tx,
        &mut phone_rx,
    )
    .await;

    // Hold: re-INVITE with a=sendonly and the same crypto line.
    let reinvite = |cseq: u32, branch: &str, dir: &str| {
        let body = format!("v=0\r\no=snom 1 {cseq} IN IP4 127.0.0.1\r\ns=call\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio {} RTP/SAVP 0\r\na=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{PHONE_KEY}\r\na=rtpmap:0 PCMU/8000\r\na={dir}\r\n", phone_sock.local_addr().unwrap().port());
        format!("INVITE sip:sbc.test:{} SIP/2.0\r\nVia: SIP/2.0/TLS 127.0.0.1:5099;branch={branch}\r\nFrom: <sip:101@sbc.test>;tag=caller1\r\nTo: {to}\r\nCall-ID: call-out-1\r\nCSeq: {cseq} INVITE\r\nMax-Forwards: 70\r\nContact: <sip:101@127.0.0.1:5099;transport=tls>\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{body}", e.tls_addr.port(), body.len())
    };
    for (cseq, dir, pbx_dir) in [(2u32, "sendonly", "recvonly"), (3, "sendrecv", "sendrecv")] {
        ph.send(&reinvite(cseq, &format!("z9hG4bK-re{cseq}"), dir))
            .await;
        assert_eq!(ph.recv().await.unwrap().status(), Some(100));
        let (re, from) = pbx.recv().await.expect("PBX gets the re-INVITE");
        assert_eq!(
            re.request_uri().unwrap().to_string(),
            "sip:200@127.0.0.1:5060",
            "in-dialog target restored"
        );
        let body = std::str::from_utf8(re.body()).unwrap().to_owned();
        assert!(body.contains(&format!("a={dir}")), "{body}");
        assert_eq!(media_addr(re.body()), edge_pbx_side, "same relay ports");
        let answer_sdp = sdp.replace("a=sendrecv", &format!("a={pbx_dir}"));
        pbx.send(from, &answer(&re, &answer_sdp)).await;
        let ok = ph.recv().await.unwrap();
        assert_eq!(ok.status(), Some(200));
        assert_eq!(
            crypto_line(ok.body()).keys[0].master_key,
            edge_line.keys[0].master_key,
            "the edge keeps its key (RFC 4568 §7.1.4)"
        );
        ph.send(&ack(cseq, &format!("z9hG4bK-reack{cseq}"))).await;
        pbx.recv().await.expect("ACK");
    }
    // An UPDATE with SDP (RFC 3311) is an offer too: rewritten both ways, no ACK.
    let update = reinvite(4, "z9hG4bK-upd4", "sendrecv")
        .replace("INVITE sip:", "UPDATE sip:")
        .replace("CSeq: 4 INVITE", "CSeq: 4 UPDATE");
    ph.send(&update).await;
    let (up, from) = pbx.recv().await.expect("PBX gets the UPDATE");
    assert_eq!(up.method().map(|m| m.as_str()), Some("UPDATE"));
    let body = std::str::from_utf8(up.body()).unwrap().to_owned();
    assert!(
        body.contains("RTP/AVP") && !body.contains("a=crypto"),
        "{body}"
    );
    pbx.send(from, &answer(&up, &sdp)).await;
    let ok = ph.recv().await.expect("200 to the UPDATE");
    assert_eq!(ok.status(), Some(200));
    assert!(std::str::from_utf8(ok.body()).unwrap().contains("RTP/SAVP"));
    assert_eq!(
        crypto_line(ok.body()).keys[0].master_key,
        edge_line.keys[0].master_key
    );

    // Same key on both sides: the contexts (ROC, replay windows) continue; sequence numbers
    // carry on from where they were.
    for seq in 21..=25u16 {
        let plain = rtp(seq, 0x1111);
        let mut buf = plain.clone();
        buf.resize(plain.len() + 32, 0);
        let n = phone_tx.protect_rtp(&mut buf, plain.len()).unwrap();
        phone_sock
            .send_to(&buf[..n], edge_phone_side)
            .await
            .unwrap();
        assert_eq!(recv(&pbx_sock).await.expect("relayed after resume"), plain);

        // And PBX → phone: the edge's sending context carries on too (same key, same ROC),
        // so the phone's receiving context, untouched since before the hold, authenticates it.
        let plain = rtp(seq, 0x2222);
        pbx_sock.send_to(&plain, edge_pbx_side).await.unwrap();
        let mut got = recv(&phone_sock)
            .await
            .expect("phone receives SRTP after resume");
        let n = phone_rx
            .unprotect_rtp(&mut got)
            .expect("the edge's SRTP after resume authenticates with the pre-hold context");
        assert_eq!(&got[..n], &plain[..], "PBX → phone after resume");
    }
    e.stop().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prack_info_refer_notify_pass_and_media_timeout_ends_the_call_on_both_legs() {
    let pki = edge::dev_pki();
    let pbx = Pbx::bind().await;
    let env = [
        ("PBX_EDGE_SIP__T1_MS", "100"),
        ("PBX_EDGE_MEDIA__PORT_MIN", "43000"),
        ("PBX_EDGE_MEDIA__PORT_MAX", "43999"),
        ("PBX_EDGE_MEDIA__TIMEOUT_SECS", "2"),
    ];
    let e = RunningEdge::start_with_pbx(&pki, pbx.addr(), &env).await;
    let mut ph = snom(&pki, &e).await;
    let phone_sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let pbx_sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let invite = phone_invite(phone_sock.local_addr().unwrap().port()).replace(
        "Max-Forwards: 70\r\n",
        "Max-Forwards: 70\r\nSupported: 100rel, timer\r\nSession-Expires: 1800\r\n",
    );
    ph.send(&invite).await;
    assert_eq!(ph.recv().await.unwrap().status(), Some(100));
    let (inv, from) = pbx.recv().await.unwrap();
    assert_eq!(
        inv.header("Session-Expires"),
        Some("1800"),
        "session timers pass through"
    );
    let sdp = pbx_sdp(pbx_sock.local_addr().unwrap().port());
    let with_sdp = |r: String| {
        r.replace(
            "Content-Length: 0\r\n\r\n",
            &format!(
                "Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
                sdp.len()
            ),
        )
    };
    // 183 with early media, sent reliably (RFC 3262).
    let early = with_sdp(pbx::response(
        &inv,
        183,
        "Session Progress",
        "Contact: <sip:200@127.0.0.1:5060>\r\nRequire: 100rel\r\nRSeq: 1\r\n",
    ));
    pbx.send(from, &early).await;
    let p183 = ph.recv().await.expect("183");
    assert_eq!(p183.status(), Some(183));
    assert_eq!(p183.header("RSeq"), Some("1"));
    let early_line = crypto_line(p183.body());
    let early_to = p183.header("To").unwrap().to_owned();
    // In-dialog requests carry the tags of the dialog they belong to: the early dialog of
    // the 183 for the PRACK, the dialog the 200 confirmed for the rest (RFC 3261 §12.2.1.1;
    // this fake PBX tags each response differently, as a forking proxy would).
    let to = std::cell::RefCell::new(early_to);
    let in_dialog = |method: &str, cseq: u32, extra: &str, body: &str| {
        format!("{method} sip:127.0.0.1:{} SIP/2.0\r\nVia: SIP/2.0/TLS 127.0.0.1:5099;branch=z9hG4bK-{method}{cseq}\r\nFrom: <sip:101@sbc.test>;tag=caller1\r\nTo: {}\r\nCall-ID: call-out-1\r\nCSeq: {cseq} {method}\r\nMax-Forwards: 70\r\n{extra}Content-Length: {}\r\n\r\n{body}", e.tls_addr.port(), to.borrow(), body.len())
    };
    ph.send(&in_dialog("PRACK", 2, "RAck: 1 1 INVITE\r\n", ""))
        .await;
    let (prack, from2) = pbx.recv().await.expect("PBX gets the PRACK");
    assert_eq!(prack.method().map(|m| m.as_str()), Some("PRACK"));
    assert_eq!(
        prack.request_uri().unwrap().to_string(),
        "sip:200@127.0.0.1:5060"
    );
    pbx.send(from2, &pbx::response(&prack, 200, "OK", "")).await;
    assert_eq!(
        ph.recv().await.unwrap().cseq().unwrap().method.as_str(),
        "PRACK"
    );
    // 200 to the INVITE: the same edge key as the 183.
    pbx.send(
        from,
        &with_sdp(pbx::response(
            &inv,
            200,
            "OK",
            "Contact: <sip:200@127.0.0.1:5060>\r\nSession-Expires: 1800;refresher=uac\r\n",
        )),
    )
    .await;
    let ok = ph.recv().await.unwrap();
    assert_eq!(ok.status(), Some(200));
    assert_eq!(
        crypto_line(ok.body()).keys[0].master_key,
        early_line.keys[0].master_key
    );
    *to.borrow_mut() = ok.header("To").unwrap().to_owned();
    ph.send(&in_dialog("ACK", 1, "", "")).await;
    pbx.recv().await.expect("ACK");

    // INFO (DTMF) and REFER (blind transfer) from the phone; NOTIFY (sipfrag) from the PBX.
    ph.send(&in_dialog(
        "INFO",
        3,
        "Content-Type: application/dtmf-relay\r\n",
        "Signal=5\r\nDuration=160\r\n",
    ))
    .await;
    let (info, f) = pbx.recv().await.expect("INFO");
    assert_eq!(info.body(), b"Signal=5\r\nDuration=160\r\n");
    pbx.send(f, &pbx::response(&info, 200, "OK", "")).await;
    assert_eq!(ph.recv().await.unwrap().status(), Some(200));
    ph.send(&in_dialog("REFER", 4, "Refer-To: <sip:300@sbc.test>\r\nReferred-By: <sip:101@sbc.test>\r\nContact: <sip:101@127.0.0.1:5099;transport=tls>\r\n", "")).await;
    let (refer, f) = pbx.recv().await.expect("REFER");
    assert_eq!(refer.header("Refer-To"), Some("<sip:300@sbc.test>"));
    let edge_contact = refer
        .header("Contact")
        .unwrap()
        .split(['<', '>'])
        .nth(1)
        .unwrap()
        .to_owned();
    assert!(
        edge_contact.contains(&e.pbx_local.to_string()),
        "{edge_contact}"
    );
    pbx.send(f, &pbx::response(&refer, 202, "Accepted", ""))
        .await;
    assert_eq!(ph.recv().await.unwrap().status(), Some(202));
    let frag = "SIP/2.0 200 OK\r\n";
    let to = to.borrow().clone();
    let notify = format!("NOTIFY {edge_contact} SIP/2.0\r\nVia: SIP/2.0/UDP {pbx};branch=z9hG4bK-ntf1\r\nFrom: {to}\r\nTo: <sip:101@sbc.test>;tag=caller1\r\nCall-ID: call-out-1\r\nCSeq: 20 NOTIFY\r\nMax-Forwards: 70\r\nEvent: refer\r\nSubscription-State: terminated;reason=noresource\r\nContent-Type: message/sipfrag;version=2.0\r\nContent-Length: {}\r\n\r\n{frag}", frag.len(), pbx = pbx.addr());
    pbx.send(e.pbx_local, &notify).await;
    let n = ph.recv().await.expect("NOTIFY reaches the phone");
    assert_eq!(n.method().map(|m| m.as_str()), Some("NOTIFY"));
    ph.send(&phone::response(&n, 200)).await;
    let (r, _) = pbx.recv().await.expect("200 to the NOTIFY");
    assert_eq!(r.status(), Some(200));

    // No media at all: after media.timeout_secs the edge ends the call on both legs.
    let mut pbx_bye = None;
    for _ in 0..10 {
        if let Some((m, _)) = pbx.recv_within(Duration::from_secs(6)).await {
            if m.method().map(|m| m.as_str()) == Some("BYE") {
                pbx_bye = Some(m);
                break;
            }
        }
    }
    let pbx_bye = pbx_bye.expect("BYE to the PBX after the media timeout");
    assert_eq!(pbx_bye.call_id().unwrap(), "call-out-1");
    assert_eq!(
        pbx_bye.request_uri().unwrap().to_string(),
        "sip:200@127.0.0.1:5060"
    );
    pbx.send(e.pbx_local, &pbx::response(&pbx_bye, 200, "OK", ""))
        .await;
    let phone_bye = ph
        .recv_within(Duration::from_secs(6))
        .await
        .expect("BYE to the phone");
    assert_eq!(phone_bye.method().map(|m| m.as_str()), Some("BYE"));
    assert_eq!(
        phone_bye
            .request_uri()
            .unwrap()
            .to_string()
            .to_ascii_lowercase(),
        "sip:101@127.0.0.1:5099;transport=tls"
    );
    ph.send(&phone::response(&phone_bye, 200)).await;
    let m = wait_idle(&e).await;
    assert_eq!(http::metric(&m, "pbx_edge_calls_active"), 0.0, "{m}");
    assert_eq!(
        http::metric(&m, "pbx_edge_calls_total{outcome=\"media_timeout\"}"),
        1.0,
        "{m}"
    );
    assert_eq!(
        http::metric(&m, "pbx_edge_media_port_pairs_in_use"),
        0.0,
        "{m}"
    );
    e.stop().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_challenged_invite_is_retried_with_credentials_and_the_call_is_listed() {
    let Outgoing {
        pki: _pki,
        pbx,
        e,
        mut ph,
        phone_sock: _,
        pbx_sock,
        invite,
        inv,
        from,
    } = outgoing().await;
    pbx.send(
        from,
        &pbx::response(
            &inv,
            407,
            "Proxy Authentication Required",
            "Proxy-Authenticate: Digest realm=\"asterisk\",nonce=\"n1\"\r\n",
        ),
    )
    .await;
    let challenge = ph.recv().await.unwrap();
    assert_eq!(challenge.status(), Some(407));
    assert!(challenge
        .header("Proxy-Authenticate")
        .unwrap()
        .contains("nonce=\"n1\""));
    let (ack, _) = pbx
        .recv()
        .await
        .expect("the edge ACKs the 407 on the PBX leg");
    assert_eq!(ack.method().map(|m| m.as_str()), Some("ACK"));
    // The phone ACKs the 407 on its leg (absorbed) and retries with credentials.
    ph.send(&format!("ACK sip:200@sbc.test SIP/2.0\r\nVia: SIP/2.0/TLS 127.0.0.1:5099;branch=z9hG4bK-inv1;rport\r\nFrom: <sip:101@sbc.test>;tag=caller1\r\nTo: {}\r\nCall-ID: call-out-1\r\nCSeq: 1 ACK\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n", challenge.header("To").unwrap())).await;
    let retry = invite
        .replace("z9hG4bK-inv1", "z9hG4bK-inv1b")
        .replace("CSeq: 1 INVITE", "CSeq: 2 INVITE")
        .replace("Max-Forwards: 70\r\n", "Max-Forwards: 70\r\nProxy-Authorization: Digest username=\"101\",realm=\"asterisk\",nonce=\"n1\",uri=\"sip:200@sbc.test\",response=\"00112233445566778899aabbccddeeff\"\r\n");
    ph.send(&retry).await;
    assert_eq!(ph.recv().await.unwrap().status(), Some(100));
    let (inv2, from) = pbx.recv().await.expect("the authenticated INVITE");
    assert_eq!(
        inv2.method().map(|m| m.as_str()),
        Some("INVITE"),
        "nothing else reached the PBX"
    );
    assert!(inv2
        .header("Proxy-Authorization")
        .unwrap()
        .contains("response=\"00112233445566778899aabbccddeeff\""));
    let sdp = pbx_sdp(pbx_sock.local_addr().unwrap().port());
    pbx.send(from, &pbx_200_with_sdp(&inv2, &sdp)).await;
    assert_eq!(ph.recv().await.unwrap().status(), Some(200));
    let calls = http::get(e.admin_addr, "/api/calls").await.1;
    let v: serde_json::Value = serde_json::from_str(&calls).unwrap();
    let call = &v["calls"][0];
    assert_eq!(call["call_id"], "call-out-1");
    assert_eq!(call["established"], true);
    assert_eq!(call["direction"], "phone_to_pbx");
    assert_eq!(call["pbx_contact"], "sip:200@127.0.0.1:5060");
    assert!(
        call["phone_contact"]
            .as_str()
            .unwrap()
            .contains("127.0.0.1:5099"),
        "{calls}"
    );
    assert!(
        call["codecs"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c == "PCMU/8000"),
        "{calls}"
    );
    let m = http::get(e.admin_addr, "/metrics").await.1;
    assert_eq!(
        http::metric(&m, "pbx_edge_calls_total{outcome=\"challenged\"}"),
        1.0,
        "the 407 attempt: {m}"
    );
    assert_eq!(
        http::metric(&m, "pbx_edge_calls_total{outcome=\"answered\"}"),
        1.0,
        "{m}"
    );
    e.stop().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_connection_cannot_lease_more_than_its_share_of_calls() {
    let (pki, pbx, e) = setup().await;
    let mut ph = snom(&pki, &e).await;
    let limit = pbx_edge::config::SipConfig::default().max_calls_per_device;
    for i in 0..=limit {
        let inv = phone_invite(40000 + i as u16 * 2)
            .replace("call-out-1", &format!("flood-{i}"))
            .replace("z9hG4bK-inv1", &format!("z9hG4bK-flood{i}"));
        ph.send(&inv).await;
        let r = ph.recv().await.expect("an answer");
        if r.status() == Some(100) {
            assert!(i < limit, "call {i} over the limit was accepted");
            let (got, _) = pbx.recv().await.expect("forwarded");
            assert_eq!(got.call_id().unwrap(), format!("flood-{i}"));
            continue;
        }
        assert_eq!(i, limit);
        assert_eq!(r.status(), Some(486));
        assert!(r
            .header("Warning")
            .unwrap()
            .contains("sip.max_calls_per_device"));
    }
    // The gauge is refreshed by the core about once a second: bounded poll.
    let mut m = String::new();
    for _ in 0..30 {
        m = http::get(e.admin_addr, "/metrics").await.1;
        if http::metric(&m, "pbx_edge_calls_active") == limit as f64 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        http::metric(&m, "pbx_edge_calls_active"),
        limit as f64,
        "{m}"
    );
    assert_eq!(
        http::metric(&m, "pbx_edge_media_active_streams"),
        limit as f64
    );
    // The connection closes: every call and port is released.
    drop(ph);
    let m = wait_idle(&e).await;
    assert_eq!(http::metric(&m, "pbx_edge_calls_active"), 0.0, "{m}");
    assert_eq!(
        http::metric(&m, "pbx_edge_media_port_pairs_in_use"),
        0.0,
        "{m}"
    );
    e.stop().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delayed_offer_the_2xx_offers_and_the_ack_answers() {
    let (pki, pbx, e) = setup().await;
    let mut ph = snom(&pki, &e).await;
    let phone_sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let pbx_sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    // An INVITE without SDP.
    let invite = "INVITE sip:200@sbc.test SIP/2.0\r\nVia: SIP/2.0/TLS 127.0.0.1:5099;branch=z9hG4bK-late1\r\nFrom: <sip:101@sbc.test>;tag=late1\r\nTo: <sip:200@sbc.test>\r\nCall-ID: late-1\r\nCSeq: 1 INVITE\r\nMax-Forwards: 70\r\nContact: <sip:101@127.0.0.1:5099;transport=tls>\r\nContent-Length: 0\r\n\r\n";
    ph.send(invite).await;
    assert_eq!(ph.recv().await.unwrap().status(), Some(100));
    let (inv, from) = pbx.recv().await.expect("INVITE without SDP forwarded");
    assert!(inv.body().is_empty());
    // The PBX offers in its 2xx.
    let sdp = pbx_sdp(pbx_sock.local_addr().unwrap().port());
    pbx.send(from, &pbx_200_with_sdp(&inv, &sdp)).await;
    let ok = ph.recv().await.unwrap();
    assert_eq!(ok.status(), Some(200));
    let offer = std::str::from_utf8(ok.body()).unwrap().to_owned();
    assert!(offer.contains("RTP/SAVP"), "{offer}");
    let edge_phone_side = media_addr(ok.body());
    let chosen = offer
        .lines()
        .filter_map(|l| l.strip_prefix("a=crypto:"))
        .map(|v| CryptoAttribute::parse(v.trim()).unwrap())
        .find(|c| c.suite == CryptoSuite::AesCm128HmacSha1_80)
        .unwrap();
    // The phone answers in the ACK.
    let answer = format!("v=0\r\no=snom 3 3 IN IP4 127.0.0.1\r\ns=call\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio {} RTP/SAVP 0\r\na=crypto:{} AES_CM_128_HMAC_SHA1_80 inline:{PHONE_KEY}\r\na=rtpmap:0 PCMU/8000\r\na=sendrecv\r\n", phone_sock.local_addr().unwrap().port(), chosen.tag);
    let ack = format!("ACK sip:127.0.0.1:{} SIP/2.0\r\nVia: SIP/2.0/TLS 127.0.0.1:5099;branch=z9hG4bK-lateack\r\nFrom: <sip:101@sbc.test>;tag=late1\r\nTo: {}\r\nCall-ID: late-1\r\nCSeq: 1 ACK\r\nMax-Forwards: 70\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{answer}", e.tls_addr.port(), ok.header("To").unwrap(), answer.len());
    ph.send(&ack).await;
    let (got_ack, _) = pbx.recv().await.expect("ACK with the rewritten answer");
    let pbx_answer = std::str::from_utf8(got_ack.body()).unwrap().to_owned();
    assert!(
        pbx_answer.contains("RTP/AVP") && !pbx_answer.contains("a=crypto"),
        "{pbx_answer}"
    );
    let edge_pbx_side = media_addr(got_ack.body());

    let phone_line =
        CryptoAttribute::parse(&format!("1 AES_CM_128_HMAC_SHA1_80 inline:{PHONE_KEY}")).unwrap();
    let mut phone_tx = context(&phone_line);
    let mut phone_rx = context(&chosen);
    media_both_ways(
        &phone_sock,
        &pbx_sock,
        edge_phone_side,
        edge_pbx_side,
        &mut phone_tx,
        &mut phone_rx,
    )
    .await;
    e.stop().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_offer_in_the_pbxs_2xx_is_acked_and_hung_up() {
    let (pki, pbx, e) = setup().await;
    let mut ph = snom(&pki, &e).await;
    let invite = "INVITE sip:200@sbc.test SIP/2.0\r\nVia: SIP/2.0/TLS 127.0.0.1:5099;branch=z9hG4bK-badlate\r\nFrom: <sip:101@sbc.test>;tag=badlate\r\nTo: <sip:200@sbc.test>\r\nCall-ID: bad-late\r\nCSeq: 1 INVITE\r\nMax-Forwards: 70\r\nContact: <sip:101@127.0.0.1:5099;transport=tls>\r\nContent-Length: 0\r\n\r\n";
    ph.send(invite).await;
    assert_eq!(ph.recv().await.unwrap().status(), Some(100));
    let (inv, from) = pbx.recv().await.expect("INVITE without SDP forwarded");
    // The PBX's 2xx offers something the edge cannot use.
    pbx.send(from, &pbx_200_with_sdp(&inv, "this is not SDP\r\n"))
        .await;
    let refused = ph.recv().await.unwrap();
    assert!(
        refused.status().is_some_and(|s| s >= 400),
        "the phone gets an error, not the 2xx: {:?}",
        refused.status()
    );
    // The PBX's dialog exists all the same: the edge ACKs its 2xx, then hangs up.
    let (ack, _) = pbx.recv().await.expect("the edge ACKs the refused 2xx");
    assert_eq!(ack.method().map(|m| m.as_str()), Some("ACK"));
    assert_eq!(ack.cseq().unwrap().seq, 1);
    assert_eq!(
        ack.to_tag().unwrap(),
        inv_to_tag(&pbx_200_with_sdp(&inv, ""))
    );
    let (bye, from) = pbx.recv().await.expect("then a BYE");
    assert_eq!(bye.method().map(|m| m.as_str()), Some("BYE"));
    assert_eq!(bye.cseq().unwrap().seq, 2);
    assert_eq!(bye.to_tag().unwrap(), ack.to_tag().unwrap());
    assert_eq!(
        bye.request_uri().unwrap().to_string(),
        "sip:200@127.0.0.1:5060",
        "to the PBX's Contact"
    );
    pbx.send(from, &pbx::response(&bye, 200, "OK", "")).await;
    // The PBX repeats its 200 (say the ACK was lost): ACKed again, not hung up again, and
    // never relayed to the phone, which already has its error.
    pbx.send(from, &pbx_200_with_sdp(&inv, "this is not SDP\r\n"))
        .await;
    let (again, _) = pbx.recv().await.expect("the repeated 2xx is ACKed again");
    assert_eq!(again.method().map(|m| m.as_str()), Some("ACK"));
    assert!(
        pbx.recv_within(Duration::from_millis(500)).await.is_none(),
        "no second BYE"
    );
    assert!(
        ph.recv_within(Duration::from_millis(500)).await.is_none(),
        "the phone never sees the PBX's 200"
    );
    let m = wait_idle(&e).await;
    assert_eq!(http::metric(&m, "pbx_edge_calls_active"), 0.0);
    assert_eq!(http::metric(&m, "pbx_edge_media_active_streams"), 0.0);
    assert_eq!(
        http::metric(
            &m,
            "pbx_edge_sip_dropped_total{reason=\"2xx_without_call\",side=\"pbx\"}"
        ),
        1.0,
        "the repeated 2xx is counted"
    );
    e.stop().await.expect("clean shutdown");
}

/// The To tag of a response text.
fn inv_to_tag(response: &str) -> Option<String> {
    SipMessage::parse(response.as_bytes())
        .unwrap()
        .to_tag()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_re_invite_from_the_pbx_reaches_the_phone_with_srtp() {
    let (pki, pbx, e) = setup().await;
    let mut ph = snom(&pki, &e).await;
    let phone_sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let pbx_sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    ph.send(&phone_invite(phone_sock.local_addr().unwrap().port()))
        .await;
    assert_eq!(ph.recv().await.unwrap().status(), Some(100));
    let (inv, from) = pbx.recv().await.unwrap();
    let edge_contact = inv
        .header("Contact")
        .unwrap()
        .split(['<', '>'])
        .nth(1)
        .unwrap()
        .to_owned();
    let sdp = pbx_sdp(pbx_sock.local_addr().unwrap().port());
    let ok = pbx_200_with_sdp(&inv, &sdp);
    pbx.send(from, &ok).await;
    let ok = ph.recv().await.unwrap();
    let edge_key = crypto_line(ok.body()).keys[0].master_key.clone();
    let to = ok.header("To").unwrap().to_owned();
    ph.send(&format!("ACK sip:127.0.0.1:{} SIP/2.0\r\nVia: SIP/2.0/TLS 127.0.0.1:5099;branch=z9hG4bK-a1\r\nFrom: <sip:101@sbc.test>;tag=caller1\r\nTo: {to}\r\nCall-ID: call-out-1\r\nCSeq: 1 ACK\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n", e.tls_addr.port())).await;
    pbx.recv().await.expect("ACK");

    // The PBX puts the phone on hold (Asterisk: sendonly, music on hold).
    let hold = pbx_sdp(pbx_sock.local_addr().unwrap().port()).replace("a=sendrecv", "a=sendonly");
    let reinvite = format!("INVITE {edge_contact} SIP/2.0\r\nVia: SIP/2.0/UDP {pbx};branch=z9hG4bK-pbxre\r\nFrom: {to}\r\nTo: <sip:101@sbc.test>;tag=caller1\r\nCall-ID: call-out-1\r\nCSeq: 100 INVITE\r\nMax-Forwards: 70\r\nContact: <sip:200@127.0.0.1:5060>\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{hold}", hold.len(), pbx = pbx.addr());
    pbx.send(e.pbx_local, &reinvite).await;
    let (trying, _) = pbx.recv().await.unwrap();
    assert_eq!(trying.status(), Some(100));
    let re = ph.recv().await.expect("the phone gets the re-INVITE");
    assert_eq!(
        re.request_uri().unwrap().to_string().to_ascii_lowercase(),
        "sip:101@127.0.0.1:5099;transport=tls"
    );
    let offer = std::str::from_utf8(re.body()).unwrap().to_owned();
    assert!(
        offer.contains("RTP/SAVP") && offer.contains("a=sendonly"),
        "{offer}"
    );
    let lines: Vec<CryptoAttribute> = offer
        .lines()
        .filter_map(|l| l.strip_prefix("a=crypto:"))
        .map(|v| CryptoAttribute::parse(v.trim()).unwrap())
        .collect();
    assert!(
        lines.iter().any(|c| c.keys[0].master_key == edge_key),
        "the edge keeps its key on a re-offer"
    );
    let chosen = lines
        .iter()
        .find(|c| c.suite == CryptoSuite::AesCm128HmacSha1_80)
        .unwrap();
    let answer = format!("v=0\r\no=snom 1 2 IN IP4 127.0.0.1\r\ns=call\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio {} RTP/SAVP 0\r\na=crypto:{} AES_CM_128_HMAC_SHA1_80 inline:{PHONE_KEY}\r\na=rtpmap:0 PCMU/8000\r\na=recvonly\r\n", phone_sock.local_addr().unwrap().port(), chosen.tag);
    ph.send(&phone::response(&re, 200).replace(
        "Content-Length: 0\r\n\r\n",
        &format!(
            "Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{answer}",
            answer.len()
        ),
    ))
    .await;
    let (ok, _) = pbx.recv().await.expect("200 to the PBX's re-INVITE");
    assert_eq!(ok.status(), Some(200));
    let body = std::str::from_utf8(ok.body()).unwrap().to_owned();
    assert!(
        body.contains("RTP/AVP") && body.contains("a=recvonly") && !body.contains("crypto"),
        "{body}"
    );
    e.stop().await.expect("clean shutdown");
}

// ---------------------------------------------------------------- offer/answer in 1xx-rel,
// PRACK and the delayed offer from the PBX (RFC 3262 §5, RFC 6337 §2.2, RFC 3261 §13.2.1)

/// The relay's port range in `setup()`.
const RELAY_PORTS: std::ops::RangeInclusive<u16> = 42000..=42999;

fn text(sdp: &[u8]) -> String {
    std::str::from_utf8(sdp).expect("SDP is text").to_owned()
}

/// SDP as the phone must see it: RTP/SAVP with `a=crypto`, media at the edge's relay.
fn assert_phone_leg_sdp(sdp: &[u8], peer_port: u16) {
    let t = text(sdp);
    assert!(t.contains("m=audio ") && t.contains(" RTP/SAVP "), "{t}");
    assert!(t.contains("a=crypto:"), "{t}");
    let at = media_addr(sdp);
    assert_eq!(
        at.ip().to_string(),
        "127.0.0.1",
        "media.phone_advertise: {t}"
    );
    assert!(
        RELAY_PORTS.contains(&at.port()) && at.port() != peer_port,
        "relay port: {t}"
    );
}

/// SDP as the PBX must see it: plain RTP/AVP, no `a=crypto`, media at the edge's relay.
fn assert_pbx_leg_sdp(sdp: &[u8], peer_port: u16) {
    let t = text(sdp);
    assert!(t.contains(" RTP/AVP ") && !t.contains("SAVP"), "{t}");
    assert!(!t.contains("a=crypto"), "{t}");
    let at = media_addr(sdp);
    assert_eq!(at.ip().to_string(), "127.0.0.1", "media.pbx_bind: {t}");
    assert!(
        RELAY_PORTS.contains(&at.port()) && at.port() != peer_port,
        "relay port: {t}"
    );
}

/// The edge's offered line of `suite`.
fn offered_line(sdp: &[u8], suite: CryptoSuite) -> CryptoAttribute {
    text(sdp)
        .lines()
        .filter_map(|l| l.strip_prefix("a=crypto:"))
        .map(|v| CryptoAttribute::parse(v.trim()).unwrap())
        .find(|c| c.suite == suite)
        .expect("the suite is offered")
}

/// A phone SDP (offer or answer) with `PHONE_KEY` under `tag`.
fn phone_sdp(rtp_port: u16, tag: u32, version: u32) -> String {
    format!("v=0\r\no=snom 7 {version} IN IP4 127.0.0.1\r\ns=call\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio {rtp_port} RTP/SAVP 0\r\na=crypto:{tag} AES_CM_128_HMAC_SHA1_80 inline:{PHONE_KEY}\r\na=rtpmap:0 PCMU/8000\r\na=sendrecv\r\n")
}

fn phone_key_line(tag: u32) -> CryptoAttribute {
    CryptoAttribute::parse(&format!("{tag} AES_CM_128_HMAC_SHA1_80 inline:{PHONE_KEY}")).unwrap()
}

/// `msg` (ending in an empty body) with an SDP body instead.
fn with_body(msg: &str, sdp: &str) -> String {
    msg.replace(
        "Content-Length: 0\r\n\r\n",
        &format!(
            "Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
            sdp.len()
        ),
    )
}

/// The next message on the PBX socket that `want` accepts (100 Trying, repeated 2xx and the
/// like are skipped), bounded.
async fn pbx_recv_where(
    pbx: &Pbx,
    what: &str,
    want: impl Fn(&SipMessage) -> bool,
) -> (SipMessage, SocketAddr) {
    for _ in 0..20 {
        let (m, from) = pbx.recv().await.unwrap_or_else(|| panic!("PBX: no {what}"));
        if want(&m) {
            return (m, from);
        }
    }
    panic!("PBX: no {what} among 20 messages");
}

async fn phone_recv_where(
    ph: &mut phone::Phone,
    what: &str,
    want: impl Fn(&SipMessage) -> bool,
) -> SipMessage {
    for _ in 0..20 {
        let m = ph
            .recv()
            .await
            .unwrap_or_else(|| panic!("phone: no {what}"));
        if want(&m) {
            return m;
        }
    }
    panic!("phone: no {what} among 20 messages");
}

fn is_method(m: &SipMessage, method: &str) -> bool {
    m.method().map(|x| x.as_str()) == Some(method)
}

fn is_response(m: &SipMessage, status: u16, method: &str) -> bool {
    m.status() == Some(status) && m.cseq().is_ok_and(|c| c.method.as_str() == method)
}

/// Calls, streams and port pairs are all back to 0.
async fn assert_idle(e: &RunningEdge) {
    let m = wait_idle(e).await;
    assert_eq!(http::metric(&m, "pbx_edge_calls_active"), 0.0, "{m}");
    assert_eq!(
        http::metric(&m, "pbx_edge_media_active_streams"),
        0.0,
        "{m}"
    );
    assert_eq!(
        http::metric(&m, "pbx_edge_media_port_pairs_in_use"),
        0.0,
        "{m}"
    );
}

/// Phone 101 registered (no challenge); the edge Contact the PBX calls it at.
async fn registered(pbx: &Pbx, ph: &mut phone::Phone) -> String {
    ph.send(&phone::register("101", 5099, 1, "reg-p", "")).await;
    let (reg, from) = pbx.recv().await.unwrap();
    let edge_uri = pbx::contact_uri(&reg).unwrap();
    pbx.send(from, &pbx::register_ok(&reg, &edge_uri, 120))
        .await;
    assert_eq!(ph.recv().await.unwrap().status(), Some(200));
    edge_uri
}

/// An INVITE from the PBX without SDP (a delayed offer) to `edge_uri`.
fn pbx_invite_without_sdp(pbx: SocketAddr, edge_uri: &str, call_id: &str, extra: &str) -> String {
    format!("INVITE {edge_uri} SIP/2.0\r\nVia: SIP/2.0/UDP {pbx};branch=z9hG4bK-{call_id}\r\nFrom: \"Reception\" <sip:200@{pbx}>;tag=pbxtag\r\nTo: <sip:101@{pbx}>\r\nCall-ID: {call_id}\r\nCSeq: 10 INVITE\r\nMax-Forwards: 70\r\nContact: <sip:200@{pbx}>\r\n{extra}Content-Length: 0\r\n\r\n")
}

/// The phone's response to the PBX's INVITE, with its To tag and Contact.
fn phone_answer_to(inv: &SipMessage, status: u16, extra: &str) -> String {
    let to = inv.header("To").unwrap();
    phone::response(inv, status)
        .replace(&format!("To: {to}"), &format!("To: {to};tag=phonetag"))
        .replace(
            "Content-Length: 0\r\n",
            &format!(
                "Contact: <sip:101@127.0.0.1:5099;transport=tls>\r\n{extra}Content-Length: 0\r\n"
            ),
        )
}

/// The phone hangs up a call the PBX placed; the PBX answers the BYE; everything is released.
async fn phone_hangs_up_pbx_call(
    e: &RunningEdge,
    pbx: &Pbx,
    ph: &mut phone::Phone,
    call_id: &str,
    pbx_to: &str,
) {
    let bye = format!("BYE sip:127.0.0.1:{} SIP/2.0\r\nVia: SIP/2.0/TLS 127.0.0.1:5099;branch=z9hG4bK-bye-{call_id}\r\nFrom: {pbx_to}\r\nTo: \"Reception\" <sip:200@{pbx}>;tag=pbxtag\r\nCall-ID: {call_id}\r\nCSeq: 1 BYE\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n", e.tls_addr.port(), pbx = pbx.addr());
    ph.send(&bye).await;
    let (bye, from) = pbx_recv_where(pbx, "BYE", |m| is_method(m, "BYE")).await;
    assert_eq!(bye.call_id().unwrap(), call_id);
    pbx.send(from, &pbx::response(&bye, 200, "OK", "")).await;
    phone_recv_where(ph, "200 to the BYE", |m| is_response(m, 200, "BYE")).await;
    assert_idle(e).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pbx_offers_in_a_reliable_183_and_the_phones_prack_answers() {
    let (pki, pbx, e) = setup().await;
    let mut ph = snom(&pki, &e).await;
    let phone_sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let pbx_sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let phone_port = phone_sock.local_addr().unwrap().port();
    let pbx_port = pbx_sock.local_addr().unwrap().port();
    // An INVITE without SDP that supports 100rel.
    let invite = "INVITE sip:200@sbc.test SIP/2.0\r\nVia: SIP/2.0/TLS 127.0.0.1:5099;branch=z9hG4bK-rel1\r\nFrom: <sip:101@sbc.test>;tag=rel1\r\nTo: <sip:200@sbc.test>\r\nCall-ID: rel-1\r\nCSeq: 1 INVITE\r\nMax-Forwards: 70\r\nSupported: 100rel\r\nContact: <sip:101@127.0.0.1:5099;transport=tls>\r\nContent-Length: 0\r\n\r\n";
    ph.send(invite).await;
    assert_eq!(ph.recv().await.unwrap().status(), Some(100));
    let (inv, from) = pbx.recv().await.expect("INVITE without SDP forwarded");
    assert!(inv.body().is_empty());

    // SDP in an unreliable 1xx cannot offer (RFC 3261 §13.2.1): removed and counted, never
    // passed on as plain RTP.
    let sdp = pbx_sdp(pbx_port);
    pbx.send(
        from,
        &with_body(&pbx::response(&inv, 180, "Ringing", ""), &sdp),
    )
    .await;
    let p180 = ph.recv().await.expect("180");
    assert_eq!(p180.status(), Some(180));
    assert!(p180.body().is_empty() && p180.header("Content-Type").is_none());
    let m = http::get(e.admin_addr, "/metrics").await.1;
    assert_eq!(
        http::metric(
            &m,
            "pbx_edge_sip_dropped_total{reason=\"sdp_outside_offer_answer\",side=\"pbx\"}"
        ),
        1.0,
        "{m}"
    );

    // The PBX offers in a reliable 183 (RFC 3262 §5).
    let early = with_body(
        &pbx::response(
            &inv,
            183,
            "Session Progress",
            "Contact: <sip:200@127.0.0.1:5060>\r\nRequire: 100rel\r\nRSeq: 1\r\n",
        ),
        &sdp,
    );
    pbx.send(from, &early).await;
    let p183 = ph.recv().await.expect("183 with the edge's offer");
    assert_eq!((p183.status(), p183.header("RSeq")), (Some(183), Some("1")));
    assert_phone_leg_sdp(p183.body(), pbx_port);
    assert!(text(p183.body()).contains("a=rtpmap:101 telephone-event/8000"));
    let edge_phone_side = media_addr(p183.body());
    let chosen = offered_line(p183.body(), CryptoSuite::AesCm128HmacSha1_80);

    // A retransmission of the 183 (the PBX has no PRACK yet) repeats the same offer.
    pbx.send(from, &early).await;
    let again = ph.recv().await.expect("the repeated 183");
    assert_eq!(again.status(), Some(183));
    assert_eq!(again.body(), p183.body(), "the same edge offer, same keys");

    // The phone answers in the PRACK.
    let to = p183.header("To").unwrap().to_owned();
    let answer = phone_sdp(phone_port, chosen.tag, 1);
    let prack = with_body(&format!("PRACK sip:127.0.0.1:{} SIP/2.0\r\nVia: SIP/2.0/TLS 127.0.0.1:5099;branch=z9hG4bK-relprack\r\nFrom: <sip:101@sbc.test>;tag=rel1\r\nTo: {to}\r\nCall-ID: rel-1\r\nCSeq: 2 PRACK\r\nRAck: 1 1 INVITE\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n", e.tls_addr.port()), &answer);
    ph.send(&prack).await;
    let (got, from2) = pbx_recv_where(&pbx, "PRACK", |m| is_method(m, "PRACK")).await;
    assert_eq!(got.header("RAck"), Some("1 1 INVITE"));
    assert_pbx_leg_sdp(got.body(), phone_port);
    let edge_pbx_side = media_addr(got.body());
    pbx.send(from2, &pbx::response(&got, 200, "OK", "")).await;
    let ok = ph.recv().await.expect("200 to the PRACK");
    assert!(is_response(&ok, 200, "PRACK"));
    assert!(ok.body().is_empty());

    // The 2xx repeats the 183's SDP: the phone sees the offer it already answered, never the
    // PBX's plain SDP.
    pbx.send(from, &pbx_200_with_sdp(&inv, &sdp)).await;
    let ok = ph.recv().await.expect("200 to the INVITE");
    assert_eq!(ok.status(), Some(200));
    assert_eq!(
        ok.body(),
        p183.body(),
        "the 183's session (RFC 3261 §13.2.1)"
    );
    ph.send(&format!("ACK sip:127.0.0.1:{} SIP/2.0\r\nVia: SIP/2.0/TLS 127.0.0.1:5099;branch=z9hG4bK-relack\r\nFrom: <sip:101@sbc.test>;tag=rel1\r\nTo: {}\r\nCall-ID: rel-1\r\nCSeq: 1 ACK\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n", e.tls_addr.port(), ok.header("To").unwrap())).await;
    let (ack, _) = pbx_recv_where(&pbx, "ACK", |m| is_method(m, "ACK")).await;
    assert!(ack.body().is_empty());

    let mut phone_tx = context(&phone_key_line(chosen.tag));
    let mut phone_rx = context(&chosen);
    media_both_ways(
        &phone_sock,
        &pbx_sock,
        edge_phone_side,
        edge_pbx_side,
        &mut phone_tx,
        &mut phone_rx,
    )
    .await;

    let bye = format!("BYE sip:127.0.0.1:{} SIP/2.0\r\nVia: SIP/2.0/TLS 127.0.0.1:5099;branch=z9hG4bK-relbye\r\nFrom: <sip:101@sbc.test>;tag=rel1\r\nTo: {}\r\nCall-ID: rel-1\r\nCSeq: 3 BYE\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n", e.tls_addr.port(), ok.header("To").unwrap());
    ph.send(&bye).await;
    let (bye, from) = pbx_recv_where(&pbx, "BYE", |m| is_method(m, "BYE")).await;
    pbx.send(from, &pbx::response(&bye, 200, "OK", "")).await;
    phone_recv_where(&mut ph, "200 to the BYE", |m| is_response(m, 200, "BYE")).await;
    assert_idle(&e).await;
    e.stop().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_phone_offers_in_a_reliable_183_to_the_pbx_and_the_pbxs_prack_answers() {
    let (pki, pbx, e) = setup().await;
    let mut ph = snom(&pki, &e).await;
    let edge_uri = registered(&pbx, &mut ph).await;
    let phone_sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let pbx_sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let phone_port = phone_sock.local_addr().unwrap().port();
    let pbx_port = pbx_sock.local_addr().unwrap().port();
    pbx.send(
        e.pbx_local,
        &pbx_invite_without_sdp(pbx.addr(), &edge_uri, "rel-in-1", "Supported: 100rel\r\n"),
    )
    .await;
    let inv = phone_recv_where(&mut ph, "INVITE", |m| is_method(m, "INVITE")).await;
    assert!(inv.body().is_empty(), "the delayed offer stays delayed");

    // The phone offers SRTP in a reliable 183.
    let offer = phone_sdp(phone_port, 1, 1);
    let p183 = with_body(
        &phone_answer_to(&inv, 183, "Require: 100rel\r\nRSeq: 1\r\n"),
        &offer,
    );
    ph.send(&p183).await;
    let (got183, _) = pbx_recv_where(&pbx, "183", |m| m.status() == Some(183)).await;
    assert_eq!(got183.header("RSeq"), Some("1"));
    assert_pbx_leg_sdp(got183.body(), phone_port);
    let edge_pbx_side = media_addr(got183.body());
    let target = pbx::contact_uri(&got183).expect("the edge's Contact in the 183");
    let to = got183.header("To").unwrap().to_owned();

    // The PBX answers plain RTP in its PRACK.
    let answer = pbx_sdp(pbx_port);
    let prack = with_body(&format!("PRACK {target} SIP/2.0\r\nVia: SIP/2.0/UDP {pbx};branch=z9hG4bK-inprack\r\nFrom: \"Reception\" <sip:200@{pbx}>;tag=pbxtag\r\nTo: {to}\r\nCall-ID: rel-in-1\r\nCSeq: 11 PRACK\r\nRAck: 1 10 INVITE\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n", pbx = pbx.addr()), &answer);
    pbx.send(e.pbx_local, &prack).await;
    let got = phone_recv_where(&mut ph, "PRACK", |m| is_method(m, "PRACK")).await;
    assert_phone_leg_sdp(got.body(), pbx_port);
    let edge_line = crypto_line(got.body());
    assert_eq!(edge_line.tag, 1, "the answer echoes the phone's tag");
    assert_eq!(edge_line.suite, CryptoSuite::AesCm128HmacSha1_80);
    assert_eq!(
        text(got.body()).matches("a=crypto:").count(),
        1,
        "one line in an answer"
    );
    let edge_phone_side = media_addr(got.body());
    ph.send(&phone::response(&got, 200)).await;
    pbx_recv_where(&pbx, "200 to the PRACK", |m| is_response(m, 200, "PRACK")).await;

    // The phone's 2xx repeats its 183 offer: the PBX gets the 183's rewritten SDP again.
    ph.send(&with_body(&phone_answer_to(&inv, 200, ""), &offer))
        .await;
    let (ok, _) =
        pbx_recv_where(&pbx, "200 to the INVITE", |m| is_response(m, 200, "INVITE")).await;
    assert_eq!(
        ok.body(),
        got183.body(),
        "the 183's session (RFC 3261 §13.2.1)"
    );
    let pbx_to = ok.header("To").unwrap().to_owned();
    let ack = format!("ACK {target} SIP/2.0\r\nVia: SIP/2.0/UDP {pbx};branch=z9hG4bK-inack2\r\nFrom: \"Reception\" <sip:200@{pbx}>;tag=pbxtag\r\nTo: {pbx_to}\r\nCall-ID: rel-in-1\r\nCSeq: 10 ACK\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n", pbx = pbx.addr());
    pbx.send(e.pbx_local, &ack).await;
    phone_recv_where(&mut ph, "ACK", |m| is_method(m, "ACK")).await;

    let mut phone_tx = context(&phone_key_line(1));
    let mut phone_rx = context(&edge_line);
    media_both_ways(
        &phone_sock,
        &pbx_sock,
        edge_phone_side,
        edge_pbx_side,
        &mut phone_tx,
        &mut phone_rx,
    )
    .await;
    phone_hangs_up_pbx_call(&e, &pbx, &mut ph, "rel-in-1", &pbx_to).await;
    e.stop().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pbx_delayed_offer_the_phones_2xx_offers_and_the_pbxs_ack_answers() {
    let (pki, pbx, e) = setup().await;
    let mut ph = snom(&pki, &e).await;
    let edge_uri = registered(&pbx, &mut ph).await;
    let phone_sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let pbx_sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let phone_port = phone_sock.local_addr().unwrap().port();
    let pbx_port = pbx_sock.local_addr().unwrap().port();
    pbx.send(
        e.pbx_local,
        &pbx_invite_without_sdp(pbx.addr(), &edge_uri, "late-in-1", ""),
    )
    .await;
    let inv = phone_recv_where(&mut ph, "INVITE", |m| is_method(m, "INVITE")).await;
    assert!(inv.body().is_empty());

    // The phone offers SRTP in its 2xx.
    let offer = phone_sdp(phone_port, 1, 1);
    ph.send(&with_body(&phone_answer_to(&inv, 200, ""), &offer))
        .await;
    let (ok, _) = pbx_recv_where(&pbx, "200", |m| is_response(m, 200, "INVITE")).await;
    assert_pbx_leg_sdp(ok.body(), phone_port);
    assert!(text(ok.body()).contains("a=rtpmap:0 PCMU/8000"));
    let edge_pbx_side = media_addr(ok.body());
    let pbx_to = ok.header("To").unwrap().to_owned();

    // The PBX answers plain RTP in the ACK; the phone gets SRTP with the edge's key.
    let answer = pbx_sdp(pbx_port);
    let ack = with_body(&format!("ACK {edge_uri} SIP/2.0\r\nVia: SIP/2.0/UDP {pbx};branch=z9hG4bK-lateinack\r\nFrom: \"Reception\" <sip:200@{pbx}>;tag=pbxtag\r\nTo: {pbx_to}\r\nCall-ID: late-in-1\r\nCSeq: 10 ACK\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n", pbx = pbx.addr()), &answer);
    pbx.send(e.pbx_local, &ack).await;
    let got = phone_recv_where(&mut ph, "ACK", |m| is_method(m, "ACK")).await;
    assert_phone_leg_sdp(got.body(), pbx_port);
    let edge_line = crypto_line(got.body());
    assert_eq!(
        (edge_line.tag, edge_line.suite),
        (1, CryptoSuite::AesCm128HmacSha1_80)
    );
    assert_ne!(
        edge_line.keys[0].master_key,
        phone_key_line(1).keys[0].master_key
    );
    let edge_phone_side = media_addr(got.body());

    let mut phone_tx = context(&phone_key_line(1));
    let mut phone_rx = context(&edge_line);
    media_both_ways(
        &phone_sock,
        &pbx_sock,
        edge_phone_side,
        edge_pbx_side,
        &mut phone_tx,
        &mut phone_rx,
    )
    .await;
    let calls = http::get(e.admin_addr, "/api/calls").await.1;
    assert!(
        calls.contains("late-in-1")
            && calls.contains("pbx_to_phone")
            && calls.contains("\"established\":true"),
        "{calls}"
    );
    phone_hangs_up_pbx_call(&e, &pbx, &mut ph, "late-in-1", &pbx_to).await;
    e.stop().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offer_in_prack_is_answered_in_its_2xx_and_bad_prack_sdp_is_refused() {
    let Outgoing {
        pki: _pki,
        pbx,
        e,
        mut ph,
        phone_sock,
        pbx_sock,
        invite: _,
        inv,
        from,
    } = outgoing().await;
    let phone_port = phone_sock.local_addr().unwrap().port();
    let pbx_port = pbx_sock.local_addr().unwrap().port();
    let edge_pbx_side = media_addr(inv.body());
    // The PBX answers the INVITE's offer in a reliable 183.
    let sdp = pbx_sdp(pbx_port);
    let early = with_body(
        &pbx::response(
            &inv,
            183,
            "Session Progress",
            "Contact: <sip:200@127.0.0.1:5060>\r\nRequire: 100rel\r\nRSeq: 1\r\n",
        ),
        &sdp,
    );
    pbx.send(from, &early).await;
    let p183 = ph.recv().await.expect("183");
    assert_phone_leg_sdp(p183.body(), pbx_port);
    let edge_line = crypto_line(p183.body());
    let edge_phone_side = media_addr(p183.body());
    let to = p183.header("To").unwrap().to_owned();
    let prack = |cseq: u32, sdp: &str| {
        let m = format!("PRACK sip:127.0.0.1:{} SIP/2.0\r\nVia: SIP/2.0/TLS 127.0.0.1:5099;branch=z9hG4bK-op{cseq}\r\nFrom: <sip:101@sbc.test>;tag=caller1\r\nTo: {to}\r\nCall-ID: call-out-1\r\nCSeq: {cseq} PRACK\r\nRAck: 1 1 INVITE\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n", e.tls_addr.port());
        if sdp.is_empty() {
            m
        } else {
            with_body(&m, sdp)
        }
    };

    // SDP in a PRACK that names no INVITE (RAck missing): 400, nothing forwarded.
    ph.send(&prack(2, &phone_sdp(phone_port, 1, 2)).replace("RAck: 1 1 INVITE\r\n", ""))
        .await;
    let r = ph.recv().await.expect("the PRACK refused");
    assert!(is_response(&r, 400, "PRACK"), "{r}");
    assert!(r.header("Warning").unwrap().contains("RAck"), "{r}");
    // Malformed SDP in a PRACK: a clear error, nothing forwarded.
    ph.send(&prack(2, "v=0\r\nm=audio x RTP/SAVP 0\r\n")).await;
    let r = ph.recv().await.expect("the PRACK refused");
    assert!(
        r.status().is_some_and(|s| s == 400 || s == 488)
            && is_response(&r, r.status().unwrap(), "PRACK"),
        "{r}"
    );
    assert!(r.header("Warning").unwrap().contains("SDP"), "{r}");
    // A plain RTP/AVP offer in a PRACK (srtp = mandatory): 488, nothing forwarded.
    let plain = format!("v=0\r\no=snom 1 5 IN IP4 127.0.0.1\r\ns=call\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio {phone_port} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n");
    ph.send(&prack(3, &plain)).await;
    let r = ph.recv().await.expect("the plain PRACK offer refused");
    assert!(is_response(&r, 488, "PRACK"), "{r}");
    assert!(
        pbx.recv_within(Duration::from_millis(300)).await.is_none(),
        "no refused PRACK reached the PBX"
    );

    // A new offer in the PRACK (RFC 3262 §5), e.g. hold: rewritten for the PBX, its 2xx
    // answered back in SRTP with the edge's unchanged key.
    let hold = phone_sdp(phone_port, 1, 2).replace("a=sendrecv", "a=sendonly");
    ph.send(&prack(4, &hold)).await;
    let (got, from2) = pbx_recv_where(&pbx, "PRACK", |m| is_method(m, "PRACK")).await;
    assert_pbx_leg_sdp(got.body(), phone_port);
    assert!(
        text(got.body()).contains("a=sendonly"),
        "{}",
        text(got.body())
    );
    assert_eq!(media_addr(got.body()), edge_pbx_side, "same relay stream");
    let answer = sdp.replace("a=sendrecv", "a=recvonly");
    pbx.send(
        from2,
        &with_body(&pbx::response(&got, 200, "OK", ""), &answer),
    )
    .await;
    let ok = ph.recv().await.expect("200 to the PRACK");
    assert!(is_response(&ok, 200, "PRACK"), "{ok}");
    assert_phone_leg_sdp(ok.body(), pbx_port);
    assert!(
        text(ok.body()).contains("a=recvonly"),
        "{}",
        text(ok.body())
    );
    assert_eq!(media_addr(ok.body()), edge_phone_side);
    assert_eq!(
        crypto_line(ok.body()).keys[0].master_key,
        edge_line.keys[0].master_key,
        "the edge keeps its key (RFC 4568 §7.1.4)"
    );
    e.stop().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_offer_in_prack_before_the_answer_gets_500_with_retry_after() {
    let Outgoing {
        pki: _pki,
        pbx,
        e,
        mut ph,
        phone_sock,
        pbx_sock: _,
        invite: _,
        inv,
        from,
    } = outgoing().await;
    // A reliable 180 without SDP: the INVITE's offer is still unanswered.
    pbx.send(
        from,
        &pbx::response(
            &inv,
            180,
            "Ringing",
            "Contact: <sip:200@127.0.0.1:5060>\r\nRequire: 100rel\r\nRSeq: 1\r\n",
        ),
    )
    .await;
    let p180 = ph.recv().await.expect("180");
    assert_eq!(p180.status(), Some(180));
    let offer = phone_sdp(phone_sock.local_addr().unwrap().port(), 1, 2);
    let prack = with_body(&format!("PRACK sip:127.0.0.1:{} SIP/2.0\r\nVia: SIP/2.0/TLS 127.0.0.1:5099;branch=z9hG4bK-op2\r\nFrom: <sip:101@sbc.test>;tag=caller1\r\nTo: {}\r\nCall-ID: call-out-1\r\nCSeq: 2 PRACK\r\nRAck: 1 1 INVITE\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n", e.tls_addr.port(), p180.header("To").unwrap()), &offer);
    ph.send(&prack).await;
    let r = ph.recv().await.expect("the PRACK refused");
    assert!(is_response(&r, 500, "PRACK"), "{r}");
    let retry: u32 = r.header("Retry-After").unwrap().trim().parse().unwrap();
    assert!(retry <= 10, "RFC 3261 §14.2");
    assert!(
        pbx.recv_within(Duration::from_millis(300)).await.is_none(),
        "not forwarded"
    );
    // The same PRACK without SDP passes.
    let bare = format!("PRACK sip:127.0.0.1:{} SIP/2.0\r\nVia: SIP/2.0/TLS 127.0.0.1:5099;branch=z9hG4bK-op3\r\nFrom: <sip:101@sbc.test>;tag=caller1\r\nTo: {}\r\nCall-ID: call-out-1\r\nCSeq: 3 PRACK\r\nRAck: 1 1 INVITE\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n", e.tls_addr.port(), p180.header("To").unwrap());
    ph.send(&bare).await;
    let (got, _) = pbx_recv_where(&pbx, "PRACK", |m| is_method(m, "PRACK")).await;
    assert!(got.body().is_empty());
    e.stop().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unusable_offer_in_a_reliable_183_fails_the_call_on_both_legs() {
    let (pki, pbx, e) = setup().await;
    let mut ph = snom(&pki, &e).await;
    let invite = "INVITE sip:200@sbc.test SIP/2.0\r\nVia: SIP/2.0/TLS 127.0.0.1:5099;branch=z9hG4bK-bad1\r\nFrom: <sip:101@sbc.test>;tag=bad1\r\nTo: <sip:200@sbc.test>\r\nCall-ID: bad-1\r\nCSeq: 1 INVITE\r\nMax-Forwards: 70\r\nSupported: 100rel\r\nContact: <sip:101@127.0.0.1:5099;transport=tls>\r\nContent-Length: 0\r\n\r\n";
    ph.send(invite).await;
    assert_eq!(ph.recv().await.unwrap().status(), Some(100));
    let (inv, from) = pbx.recv().await.expect("INVITE");
    // An offer whose only stream the edge cannot relay (SRTP from the PBX leg).
    let bad = pbx_sdp(40000).replace("RTP/AVP", "RTP/SAVP");
    pbx.send(
        from,
        &with_body(
            &pbx::response(
                &inv,
                183,
                "Session Progress",
                "Contact: <sip:200@127.0.0.1:5060>\r\nRequire: 100rel\r\nRSeq: 1\r\n",
            ),
            &bad,
        ),
    )
    .await;
    let r = ph.recv().await.expect("the INVITE fails toward the phone");
    assert!(
        r.status().is_some_and(|s| (400..500).contains(&s))
            && is_response(&r, r.status().unwrap(), "INVITE"),
        "{r}"
    );
    assert!(r.body().is_empty() && !text(&r.to_bytes()).contains("RTP/SAVP"));
    assert!(r.header("Warning").unwrap().contains("SDP"), "{r}");
    // The PBX's INVITE is cancelled; its 487 ends the call and the edge ACKs it.
    let (c, from) = pbx_recv_where(&pbx, "CANCEL", |m| is_method(m, "CANCEL")).await;
    assert_eq!(
        c.top_via().unwrap().branch(),
        inv.top_via().unwrap().branch()
    );
    pbx.send(from, &pbx::response(&c, 200, "OK", "")).await;
    pbx.send(from, &pbx::response(&inv, 487, "Request Terminated", ""))
        .await;
    pbx_recv_where(&pbx, "ACK of the 487", |m| is_method(m, "ACK")).await;
    assert_idle(&e).await;
    e.stop().await.expect("clean shutdown");
}
