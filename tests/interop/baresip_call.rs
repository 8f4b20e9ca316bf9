//! Real-peer calls (issue 7, "Real peers"): baresip as the phone (TLS with the dev device
//! certificate, `srtp-mand`, PCMU from a WAV tone) ⇄ in-process pbx-edge ⇄ SIPp as the plain
//! UDP PBX echoing RTP; in both directions, with a tshark capture proving which leg is SRTP.

use super::baresip::{self, Baresip, CallMedia, PhoneSetup};
use super::capture::{Capture, Datagram};
use super::dns::FakeDns;
use super::sipp::Sipp;
use super::{net, tone};
use crate::support::edge::{self, RunningEdge, TestPki};
use crate::support::http;
use crate::support::pbx::{self, Pbx};
use crate::support::scenario::wait_idle;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

/// Length of the WAV baresip plays (longer than any call here).
const WAV_SECS: u32 = 30;

/// How long audio flows in each call.
const TALK: Duration = Duration::from_secs(5);

fn phone<'a>(
    pki: &'a TestPki,
    e: &RunningEdge,
    audio: &'a Path,
    regint: u32,
    rtp_ports: (u16, u16),
    dns: &FakeDns,
) -> PhoneSetup<'a> {
    PhoneSetup {
        edge: e.tls_addr,
        certificate: &pki.pki.snom_device,
        ca: &pki.pki.server_ca,
        user: "101",
        regint,
        answermode: "auto",
        auth_pass: None,
        media: Some(CallMedia { audio, rtp_ports }),
        dns: dns.addr,
        verbose: true,
        backup_edge: None,
    }
}

async fn start_edge(pki: &TestPki, pbx: SocketAddr, media: (u16, u16)) -> RunningEdge {
    let (min, max) = (media.0.to_string(), media.1.to_string());
    let env = [
        ("PBX_EDGE_SIP__T1_MS", "100"),
        ("PBX_EDGE_MEDIA__PORT_MIN", min.as_str()),
        ("PBX_EDGE_MEDIA__PORT_MAX", max.as_str()),
    ];
    RunningEdge::start_with_pbx(pki, pbx, &env).await
}

async fn metrics(e: &RunningEdge) -> String {
    http::get(e.admin_addr, "/metrics").await.1
}

fn media_packets(m: &str, direction: &str) -> f64 {
    http::metric(
        m,
        &format!("pbx_edge_media_packets_total{{direction=\"{direction}\"}}"),
    )
}

/// After a call: no call and no media stream is left on the edge, and `/api/calls` is empty.
async fn assert_idle(e: &RunningEdge) {
    let idle = wait_idle(e.admin_addr).await;
    assert_eq!(http::metric(&idle, "pbx_edge_calls_active"), 0.0, "{idle}");
    assert_eq!(
        http::metric(&idle, "pbx_edge_media_active_streams"),
        0.0,
        "{idle}"
    );
    assert_eq!(
        http::get(e.admin_addr, "/api/calls").await.1,
        "{\"calls\":[]}"
    );
}

/// Packets per direction that prove audio flowed: 2 s of 20 ms audio. A call carries 5 s
/// (250 packets), but a stalled, shared 2-core machine may delay baresip's audio timer or
/// tshark's capture start; the check is that audio flowed both ways, not its rate.
const MIN_PACKETS: u64 = 100;

/// baresip's `rtp_stats` (printed at hangup: 1.0.0's callstat has no counters) show at least
/// [`MIN_PACKETS`] packets sent and received.
fn assert_audio_both_ways(phone: &Baresip, what: &str, callstat: &str) {
    let stats = phone.rtp_stats();
    let packets = baresip::rtp_packets(&stats);
    assert!(
        packets.is_some_and(|(tx, rx)| tx >= MIN_PACKETS && rx >= MIN_PACKETS),
        "{what}: {stats:?}\ncallstat {callstat}"
    );
}

/// The `"srtp_suite":"..."` value of the first call in `/api/calls`.
fn srtp_suite(calls: &str) -> Option<String> {
    let v: serde_json::Value = serde_json::from_str(calls).ok()?;
    fn find(v: &serde_json::Value) -> Option<String> {
        match v {
            serde_json::Value::Object(m) => m
                .get("srtp_suite")
                .and_then(|s| s.as_str().map(str::to_owned))
                .or_else(|| m.values().find_map(find)),
            serde_json::Value::Array(a) => a.iter().find_map(find),
            _ => None,
        }
    }
    find(&v)
}

/// Authentication tag length of an SDES suite (RFC 4568 §6.2, RFC 7714 §14.2).
fn tag_len(suite: &str) -> usize {
    match suite {
        "AES_CM_128_HMAC_SHA1_80" => 10,
        "AES_CM_128_HMAC_SHA1_32" => 4,
        "AEAD_AES_128_GCM" | "AEAD_AES_256_GCM" => 16,
        other => panic!("unexpected SRTP suite {other}"),
    }
}

/// RTP version 2 with payload type 0 (PCMU): the audio packets of the call (not RTCP).
fn is_pcmu_rtp(d: &Datagram) -> bool {
    d.payload.len() >= 12 && d.payload[0] >> 6 == 2 && d.payload[1] & 0x7f == 0
}

/// Bytes after the 12-byte RTP header (no CSRCs or extensions in these calls), up to `len`.
fn audio(d: &Datagram, len: usize) -> &[u8] {
    &d.payload[12..12 + len]
}

fn dump_on_failure(what: &str, b: &Baresip, s: &Sipp) -> String {
    format!("{what}\n{}\n{}", b.process.output(), s.report())
}

/// Test 3, on a capture of the edge's media range: the phone leg (baresip's `rtp_ports`)
/// carries SRTP of `suite` — every PCMU packet is RTP + 160 bytes + the suite's tag, and no
/// payload is the plain audio — while the PBX leg (sipp's media port) carries plain 160-byte
/// PCMU that decodes as the 440 Hz tone, echoed unchanged by sipp.
fn check_capture(packets: &[Datagram], phone_rtp: (u16, u16), sipp_media: u16, suite: &str) {
    let in_phone_range = |p: u16| (phone_rtp.0..=phone_rtp.1).contains(&p);
    let phone_leg: Vec<&Datagram> = packets
        .iter()
        .filter(|d| (in_phone_range(d.src_port) || in_phone_range(d.dst_port)) && is_pcmu_rtp(d))
        .collect();
    let to_sipp: Vec<&Datagram> = packets
        .iter()
        .filter(|d| d.dst_port == sipp_media && is_pcmu_rtp(d))
        .collect();
    let from_sipp: Vec<&Datagram> = packets
        .iter()
        .filter(|d| d.src_port == sipp_media && is_pcmu_rtp(d))
        .collect();
    let min = MIN_PACKETS as usize;
    assert!(
        phone_leg
            .iter()
            .filter(|d| in_phone_range(d.src_port))
            .count()
            >= min
            && phone_leg
                .iter()
                .filter(|d| in_phone_range(d.dst_port))
                .count()
                >= min
            && to_sipp.len() >= min
            && from_sipp.len() >= min,
        "captured: phone leg {} packets, to sipp {}, from sipp {} (of {})",
        phone_leg.len(),
        to_sipp.len(),
        from_sipp.len(),
        packets.len()
    );

    // PBX leg: plain PCMU, 20 ms = 160 bytes after the 12-byte header, carrying the tone; SIPp
    // echoed exactly what it got.
    assert!(to_sipp
        .iter()
        .chain(&from_sipp)
        .all(|d| d.payload.len() == 12 + 160));
    let toned = to_sipp
        .iter()
        .filter(|d| tone::tone_share(audio(d, 160)) > 0.5)
        .count();
    assert!(
        toned * 10 >= to_sipp.len() * 9,
        "PBX leg decodes as the 440 Hz tone: {toned} of {}",
        to_sipp.len()
    );
    let sent: std::collections::HashSet<&[u8]> = to_sipp.iter().map(|d| audio(d, 160)).collect();
    // Byte for byte: each PBX-leg payload is a 20 ms frame of the WAV, PCMU-encoded.
    let wav_frames: std::collections::HashSet<Vec<u8>> = (0..WAV_SECS * 50)
        .map(|k| tone::tone_pcmu(k * 160, 160))
        .collect();
    let exact = to_sipp
        .iter()
        .filter(|d| wav_frames.contains(audio(d, 160)))
        .count();
    assert_eq!(
        exact,
        to_sipp.len(),
        "every PBX-leg payload is a PCMU frame of the WAV"
    );
    let echoed = from_sipp
        .iter()
        .filter(|d| sent.contains(audio(d, 160)))
        .count();
    assert!(
        echoed * 10 >= from_sipp.len() * 9,
        "SIPp echoed the PBX-leg payloads: {echoed} of {}",
        from_sipp.len()
    );

    // Phone leg: SRTP of the negotiated suite: same header, payload + tag, not the tone.
    let tag = tag_len(suite);
    let bad_len: Vec<usize> = phone_leg
        .iter()
        .map(|d| d.payload.len())
        .filter(|&l| l != 12 + 160 + tag)
        .collect();
    assert!(
        bad_len.is_empty(),
        "phone-leg packets are RTP 172 + {tag}-byte {suite} tag: {bad_len:?}"
    );
    let plain_on_phone_leg = phone_leg
        .iter()
        .filter(|d| {
            sent.contains(audio(d, 160))
                || wav_frames.contains(audio(d, 160))
                || tone::tone_share(audio(d, 160)) > 0.5
        })
        .count();
    assert_eq!(
        plain_on_phone_leg, 0,
        "no phone-leg payload is the plain audio (suite {suite})"
    );
    // Same packets on both legs: the plain packet toward SIPp carries the RTP header (SSRC,
    // sequence number, timestamp) of an SRTP packet baresip sent; the edge relays, it does not
    // originate a new stream.
    let from_phone: std::collections::HashSet<&[u8]> = phone_leg
        .iter()
        .filter(|d| in_phone_range(d.src_port))
        .map(|d| &d.payload[..12])
        .collect();
    let twins = to_sipp
        .iter()
        .filter(|d| from_phone.contains(&d.payload[..12]))
        .count();
    assert!(
        twins * 10 >= to_sipp.len() * 9,
        "PBX-leg packets have an SRTP twin from baresip: {twins} of {}",
        to_sipp.len()
    );
    eprintln!(
        "capture: phone leg {} SRTP packets ({suite}, {} bytes each), PBX leg {} → sipp / {} echoed; tone on PBX leg {toned}/{}",
        phone_leg.len(),
        12 + 160 + tag,
        to_sipp.len(),
        from_sipp.len(),
        to_sipp.len()
    );
}

/// Test 1 (+ the capture of test 3): baresip calls through the edge to the SIPp UAS that echoes
/// RTP. The call is up ≥ 5 s; the echoed audio reaches baresip through the edge's SRTP side;
/// the PBX saw RTP/AVP without keys; /api/calls shows the SRTP suite; media counters grow both
/// ways and return to zero streams after the hangup. The tshark capture on the edge's media
/// range shows SRTP (payload ≠ tone, length = RTP + tag) toward baresip and plain PCMU carrying
/// the tone toward SIPp.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn baresip_calls_sipp_through_the_edge_with_srtp_on_the_phone_leg_only() {
    let pki = edge::dev_pki();
    let run = tempfile::tempdir().expect("tempdir");
    let sipp_port = net::free_udp_port();
    let sipp_media = net::free_block(4);
    let edge_media = net::free_range(43000, 43499, 20);
    let phone_rtp = net::free_range(44000, 44499, 10);
    let e = start_edge(
        &pki,
        SocketAddr::from(([127, 0, 0, 1], sipp_port)),
        edge_media,
    )
    .await;

    let mut sipp = Sipp::start_echo(
        "call-pbx-uas-echo.xml",
        sipp_port,
        sipp_media,
        Duration::from_secs(40),
        &[],
    );
    sipp.wait_bound();
    let capture = Capture::start(
        run.path(),
        "tshark-edge-media",
        &format!("udp portrange {}-{}", edge_media.0, edge_media.1),
        Duration::from_secs(40),
    );

    let wav = run.path().join("tone.wav");
    tone::write_wav(&wav, WAV_SECS);
    let dns = FakeDns::start("sbc.test");
    let mut phone_b = Baresip::start(
        &phone(&pki, &e, &wav, 0, phone_rtp, &dns),
        Duration::from_secs(45),
    );
    let mut ctrl = phone_b.ctrl();
    assert!(ctrl.command("dial", Some("sip:200@sbc.test")).is_some());
    let established = ctrl.wait_event("CALL_ESTABLISHED", Duration::from_secs(15));
    assert!(
        established.is_some(),
        "{}",
        dump_on_failure(
            &format!("call not established: {:?}", ctrl.events),
            &phone_b,
            &sipp
        )
    );
    let up_at = Instant::now();

    ctrl.pump(Duration::from_secs(1));
    let calls = http::get(e.admin_addr, "/api/calls").await.1;
    let suite =
        srtp_suite(&calls).unwrap_or_else(|| panic!("no SRTP suite in /api/calls: {calls}"));
    assert!(calls.contains("\"established\":true"), "{calls}");
    let before = metrics(&e).await;
    ctrl.pump(TALK.saturating_sub(up_at.elapsed()));
    let during = metrics(&e).await;
    // The call stayed up for the whole talk time: both peers still hold it now — baresip
    // has reported no CALL_CLOSED, and the edge lists the call as established.
    assert!(
        !ctrl.events.iter().any(|(kind, _)| kind == "CALL_CLOSED"),
        "the call closed before the hangup: {:?}",
        ctrl.events
    );
    let calls = http::get(e.admin_addr, "/api/calls").await.1;
    assert!(
        calls.contains("\"established\":true"),
        "the call is still up on the edge after {TALK:?}: {calls}"
    );
    for dir in ["phone_to_pbx", "pbx_to_phone"] {
        assert!(
            media_packets(&during, dir) > media_packets(&before, dir) + 50.0,
            "{dir} packets grew while the call was up: {} → {}",
            media_packets(&before, dir),
            media_packets(&during, dir)
        );
    }
    let callstat = ctrl.command("callstat", None).unwrap_or_default();
    assert!(ctrl.command("hangup", None).is_some());
    assert!(
        ctrl.wait_event("CALL_CLOSED", Duration::from_secs(5))
            .is_some(),
        "{:?}",
        ctrl.events
    );
    // The edge's Contact names it by sip.domain: ACK and BYE went there after resolving it.
    assert_eq!(
        dns.answered(),
        0,
        "the phone needed no DNS for the edge: its Contact toward phones is an address"
    );
    assert!(
        callstat.contains(&format!("crypto='1 {suite} inline:")),
        "baresip uses the suite the edge reports ({suite}): {callstat}"
    );

    let sipp_status = sipp.process.wait_within(Duration::from_secs(10));
    assert!(
        sipp_status.is_some_and(|s| s.success()),
        "{}",
        dump_on_failure(
            &format!("sipp UAS: call not successful ({sipp_status:?})"),
            &phone_b,
            &sipp
        )
    );
    let trace = sipp.trace();
    let invite = trace
        .split("\n\n")
        .find(|m| m.contains("INVITE sip:"))
        .unwrap_or_else(|| panic!("sipp saw no INVITE: {trace}"));
    assert!(
        invite.contains(" RTP/AVP ") && !invite.contains("SAVP") && !invite.contains("a=crypto"),
        "the PBX gets plain RTP/AVP: {invite}"
    );

    assert_idle(&e).await;

    phone_b.quit(&mut ctrl);
    assert_audio_both_ways(
        &phone_b,
        "baresip sent and received ≥ 2 s of 20 ms audio",
        &callstat,
    );

    // Test 3: what went over the wire.
    check_capture(&capture.finish(), phone_rtp, sipp_media, &suite);
    e.stop().await.expect("clean shutdown");
}

/// Answers every REGISTER with 200 (the edge Contact, expires=60) until `stop`; gives the
/// socket back when stopped.
async fn registrar(pbx: Pbx, mut stop: tokio::sync::oneshot::Receiver<()>) -> usize {
    let mut answered = 0;
    loop {
        tokio::select! {
            _ = &mut stop => return answered,
            got = pbx.recv_within(Duration::from_millis(200)) => {
                let Some((req, from)) = got else { continue };
                if req.method().map(|m| m.as_str()) != Some("REGISTER") {
                    continue;
                }
                let uri = pbx::contact_uri(&req).unwrap_or_default();
                pbx.send(from, &pbx::register_ok(&req, &uri, 60)).await;
                answered += 1;
            }
        }
    }
}

/// Test 2: baresip registers through the edge (REGISTER answered by a registrar on the PBX
/// address), then SIPp — taking over that address as the PBX — calls `sip:101@<edge>`; the edge
/// routes by AOR over the phone's TLS flow with an SRTP offer; baresip auto-answers, audio flows
/// ≥ 5 s both ways (SIPp echoes), SIPp hangs up, and nothing is left on the edge.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sipp_calls_the_registered_baresip_through_the_edge() {
    let pki = edge::dev_pki();
    let run = tempfile::tempdir().expect("tempdir");
    let pbx_sock = Pbx {
        socket: tokio::net::UdpSocket::bind("127.0.0.1:0")
            .await
            .expect("bind"),
    };
    let pbx_addr = pbx_sock.addr();
    let sipp_media = net::free_block(4);
    let edge_media = net::free_range(43500, 43999, 20);
    let phone_rtp = net::free_range(44500, 44999, 10);
    let e = start_edge(&pki, pbx_addr, edge_media).await;

    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel();
    let reg_task = tokio::spawn(registrar(pbx_sock, stop_rx));
    let wav = run.path().join("tone.wav");
    tone::write_wav(&wav, WAV_SECS);
    let dns = FakeDns::start("sbc.test");
    let mut phone_b = Baresip::start(
        &phone(&pki, &e, &wav, 60, phone_rtp, &dns),
        Duration::from_secs(45),
    );
    let mut ctrl = phone_b.ctrl();

    let deadline = Instant::now() + Duration::from_secs(15);
    let mut regs = String::new();
    while Instant::now() < deadline {
        regs = http::get(e.admin_addr, "/api/registrations").await.1;
        if regs.contains("\"aor\":\"101\"") {
            break;
        }
        ctrl.pump(Duration::from_millis(200));
    }
    assert!(
        regs.contains("\"aor\":\"101\""),
        "baresip registered through the edge: {regs}\n{}",
        phone_b.process.output()
    );
    let _ = stop_tx.send(());
    let answered = reg_task.await.expect("registrar task");
    assert!(answered >= 1);

    let capture = Capture::start(
        run.path(),
        "tshark-edge-media",
        &format!("udp portrange {}-{}", edge_media.0, edge_media.1),
        Duration::from_secs(40),
    );
    // SIPp takes over the PBX address (the edge accepts the PBX side only from there).
    let edge_pbx_side = e.pbx_local.to_string();
    let mut sipp = Sipp::start_echo(
        "call-pbx-uac-echo.xml",
        pbx_addr.port(),
        sipp_media,
        Duration::from_secs(40),
        &[
            "-s",
            "101",
            "-d",
            &TALK.as_millis().to_string(),
            &edge_pbx_side,
        ],
    );
    let established = ctrl.wait_event("CALL_ESTABLISHED", Duration::from_secs(15));
    assert!(
        established.is_some(),
        "{}",
        dump_on_failure(
            &format!("baresip did not answer: {:?}", ctrl.events),
            &phone_b,
            &sipp
        )
    );
    ctrl.pump(Duration::from_millis(500));
    let calls = http::get(e.admin_addr, "/api/calls").await.1;
    let suite =
        srtp_suite(&calls).unwrap_or_else(|| panic!("no SRTP suite in /api/calls: {calls}"));
    assert!(calls.contains("\"established\":true"), "{calls}");
    let before = metrics(&e).await;
    ctrl.pump(Duration::from_secs(3));
    let during = metrics(&e).await;
    let callstat = ctrl.command("callstat", None).unwrap_or_default();
    assert!(
        callstat.contains("audio RTP/SAVP")
            && callstat.contains(&format!("crypto='1 {suite} inline:")),
        "the edge offered SRTP to baresip, which chose {suite}: {callstat}"
    );
    for dir in ["phone_to_pbx", "pbx_to_phone"] {
        assert!(
            media_packets(&during, dir) > media_packets(&before, dir) + 50.0,
            "{dir} packets grew: {} → {}",
            media_packets(&before, dir),
            media_packets(&during, dir)
        );
    }
    let closed = ctrl.wait_event("CALL_CLOSED", Duration::from_secs(15));
    assert!(
        closed.is_some(),
        "{}",
        dump_on_failure(
            &format!("SIPp's BYE did not end the call: {:?}", ctrl.events),
            &phone_b,
            &sipp
        )
    );
    let sipp_status = sipp.process.wait_within(Duration::from_secs(10));
    assert!(
        sipp_status.is_some_and(|s| s.success()),
        "{}",
        dump_on_failure(
            &format!("sipp UAC: call not successful ({sipp_status:?})"),
            &phone_b,
            &sipp
        )
    );
    assert!(
        sipp.actions().contains("PBX-UAC: answer proto=RTP/AVP"),
        "{}",
        sipp.report()
    );
    assert_idle(&e).await;
    phone_b.quit(&mut ctrl);
    check_capture(&capture.finish(), phone_rtp, sipp_media, &suite);
    assert_audio_both_ways(
        &phone_b,
        "baresip sent and received SIPp's echo for ≥ 2 s",
        &callstat,
    );
    e.stop().await.expect("clean shutdown");
}

/// An RTP packet (v2, PCMU) from `src` to `dst` with `payload` after the header.
fn datagram(src: u16, dst: u16, seq: u16, payload: &[u8]) -> Datagram {
    let mut p = vec![0x80, 0x00];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&[0; 8]);
    p.extend_from_slice(payload);
    Datagram {
        src_port: src,
        dst_port: dst,
        payload: p,
    }
}

/// Synthetic captures: (phone leg, PBX leg) datagrams of 200 packets each way per leg.
fn synthetic(phone_payload: impl Fn(u16) -> Vec<u8>) -> Vec<Datagram> {
    let mut v = Vec::new();
    for seq in 0..200u16 {
        let plain = tone::tone_pcmu(u32::from(seq) * 160, 160);
        v.push(datagram(44000, 43000, seq, &phone_payload(seq)));
        v.push(datagram(43000, 44000, seq, &phone_payload(seq)));
        v.push(datagram(43002, 6000, seq, &plain));
        v.push(datagram(6000, 43002, seq, &plain));
    }
    v
}

fn noise(seq: u16, len: usize) -> Vec<u8> {
    (0..len as u32)
        .map(|i| ((i + u32::from(seq) * 977).wrapping_mul(2_654_435_761) >> 11) as u8)
        .collect()
}

#[test]
fn capture_check_accepts_srtp_on_the_phone_leg() {
    check_capture(
        &synthetic(|seq| noise(seq, 170)),
        (44000, 44009),
        6000,
        "AES_CM_128_HMAC_SHA1_80",
    );
}

#[test]
#[should_panic(expected = "no phone-leg payload is the plain audio")]
fn capture_check_rejects_plain_audio_on_the_phone_leg() {
    // Right length (160 + 10), but the first 160 bytes are the plain tone.
    check_capture(
        &synthetic(|seq| {
            let mut p = tone::tone_pcmu(u32::from(seq) * 160, 160);
            p.extend_from_slice(&[0; 10]);
            p
        }),
        (44000, 44009),
        6000,
        "AES_CM_128_HMAC_SHA1_80",
    );
}

#[test]
#[should_panic(expected = "tag")]
fn capture_check_rejects_a_missing_tag() {
    check_capture(
        &synthetic(|seq| noise(seq, 160)),
        (44000, 44009),
        6000,
        "AES_CM_128_HMAC_SHA1_80",
    );
}
