//! Call quality from the relay's own view (issue 14): a call whose phone skips every 20th
//! RTP sequence number shows 5 % loss and a lower MOS on that direction in `/api/calls`, 0 %
//! on the clean direction; the per-stream histograms are observed when the call ends, and
//! the call log (`[call_log] file`) gets one line with the same figures. With RTCP from both
//! ends, `/api/calls` also shows what each end reported (loss, jitter) and each leg's
//! round-trip time measured by the edge from SR/LSR/DLSR (RFC 3550 §6.4.1); without RTCP,
//! `reported` is null and the relay's own view is all there is.

use crate::support::http;
use crate::support::media::{recv, Relay};
use crate::support::offer::{pbx_sdp, phone_offer};
use crate::support::pbx::Pbx;
use crate::support::ports;
use crate::support::rtp::{report_block, rtcp_report, voice};
use crate::support::scenario::{phone_hangs_up, wait_metric, Call, Lab};
use serde_json::Value;
use std::time::Duration;

pub(super) const ENV: [(&str, &str); 3] = [
    ("PBX_EDGE_SIP__T1_MS", "100"),
    ("PBX_EDGE_MEDIA__PORT_MIN", ports::QUALITY.0),
    ("PBX_EDGE_MEDIA__PORT_MAX", ports::QUALITY.1),
];

/// Sends RTP seq 1..=200 both ways through the relay in lock-step; the phone skips the
/// sequence numbers `phone_skips` selects (never sent: the PBX cannot see a gap the edge
/// filled), the PBX sends all 200.
async fn media(c: &Call, relay: &mut Relay, phone_skips: impl Fn(u16) -> bool) {
    media_of(c, relay, 200, voice, phone_skips).await;
}

/// [`media`] with `count` packets each way, each built by `packet(seq, ssrc)`.
async fn media_of(
    c: &Call,
    relay: &mut Relay,
    count: u16,
    packet: fn(u16, u32) -> Vec<u8>,
    phone_skips: impl Fn(u16) -> bool,
) {
    for seq in 1..=count {
        if !phone_skips(seq) {
            let plain = packet(seq, 0x1111);
            let mut buf = plain.clone();
            buf.resize(plain.len() + 32, 0);
            let n = relay.tx.protect_rtp(&mut buf, plain.len()).unwrap();
            c.media
                .phone
                .send_to(&buf[..n], relay.phone_side)
                .await
                .unwrap();
            assert_eq!(recv(&c.media.pbx).await.expect("PBX gets RTP"), plain);
        }
        c.media
            .pbx
            .send_to(&packet(seq, 0x2222), relay.pbx_side)
            .await
            .unwrap();
        recv(&c.media.phone).await.expect("phone gets SRTP");
    }
}

/// The one call of `/api/calls`, its first stream's quality.
async fn quality(lab: &Lab) -> Value {
    let (status, body) = http::get(lab.e.admin_addr, "/api/calls").await;
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    let calls = &v["calls"];
    assert_eq!(calls.as_array().map(Vec::len), Some(1), "{body}");
    calls[0]["quality"][0].clone()
}

/// The call log's one line (`[call_log] file`), once the writer thread has written it
/// (bounded wait).
async fn one_logged_call(path: &std::path::Path) -> Value {
    let mut text = String::new();
    for _ in 0..100 {
        text = std::fs::read_to_string(path).unwrap_or_default();
        if text.ends_with('\n') {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(text.lines().count(), 1, "{text}");
    serde_json::from_str(text.trim_end()).expect("one JSON line")
}

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("not a number: {v}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn induced_loss_shows_in_api_calls_and_histograms() {
    let dir = tempfile::tempdir().unwrap();
    let log_file = dir.path().join("calls.jsonl");
    let log_path = log_file.display().to_string();
    let mut env = ENV.to_vec();
    env.push(("PBX_EDGE_CALL_LOG__FILE", log_path.as_str()));
    let lab = Lab::start(&env).await;
    let pbx = &lab.pbx;
    let mut c = lab.call("quality-1", "", true).await;
    let (_, mut relay) = c.answer_and_ack(pbx).await;
    // 10 of 200 never sent by the phone: 5 %.
    media(&c, &mut relay, |seq| seq % 20 == 10).await;

    let q = quality(&lab).await;
    let (lossy, clean) = (&q["phone_to_pbx"], &q["pbx_to_phone"]);
    assert_eq!(lossy["expected"], 200, "{q}");
    assert_eq!(lossy["packets"], 190, "{q}");
    assert_eq!(f(&lossy["loss_percent"]), 5.0, "{q}");
    assert_eq!(clean["packets"], 200, "{q}");
    assert_eq!(f(&clean["loss_percent"]), 0.0, "{q}");
    assert!(
        lossy["jitter_ms"].is_number() && clean["jitter_ms"].is_number(),
        "{q}"
    );
    let (bad, good) = (f(&lossy["mos"]), f(&clean["mos"]));
    assert!(good - bad > 0.3, "MOS {bad} (lossy) vs {good} (clean): {q}");
    assert!(good > 4.0, "{q}");

    phone_hangs_up(pbx, &mut c.ph, &c.d, 2, None).await;
    let m = wait_metric(
        lab.e.admin_addr,
        "pbx_edge_media_stream_loss_ratio_count{side=\"phone\"}",
        |v| v >= 1.0,
    )
    .await;
    for (series, value) in [
        (
            "pbx_edge_media_stream_loss_ratio_count{side=\"phone\"}",
            1.0,
        ),
        (
            "pbx_edge_media_stream_loss_ratio_bucket{side=\"phone\",le=\"0.03\"}",
            0.0,
        ),
        (
            "pbx_edge_media_stream_loss_ratio_bucket{side=\"phone\",le=\"0.05\"}",
            1.0,
        ),
        (
            "pbx_edge_media_stream_loss_ratio_bucket{side=\"pbx\",le=\"0.001\"}",
            1.0,
        ),
        ("pbx_edge_media_stream_mos_count{side=\"phone\"}", 1.0),
        ("pbx_edge_media_stream_mos_count{side=\"pbx\"}", 1.0),
        (
            "pbx_edge_media_stream_jitter_seconds_count{side=\"pbx\"}",
            1.0,
        ),
    ] {
        assert_eq!(http::metric(&m, series), value, "{series}\n{m}");
    }

    // The call log: one line, the same figures.
    let line = one_logged_call(&log_file).await;
    assert_eq!(line["call_id"], "quality-1", "{line}");
    assert_eq!(line["device_mac"], "00:04:13:a1:b2:c3", "{line}");
    assert_eq!(line["vendor"], "snom", "{line}");
    assert_eq!(line["from_user"], "101", "{line}");
    assert_eq!(line["to_user"], "200", "{line}");
    assert_eq!(line["direction"], "phone_to_pbx", "{line}");
    assert_eq!(line["end_reason"], "bye", "{line}");
    assert_eq!(line["srtp_suite"], "AES_CM_128_HMAC_SHA1_80", "{line}");
    assert_eq!(line["codecs"][0], "PCMU/8000", "{line}");
    for key in ["start_time", "answer_time", "end_time"] {
        let t = line[key].as_str().unwrap_or_default();
        assert!(
            t.len() >= 20 && t.ends_with('Z') && t.as_bytes()[10] == b'T',
            "{key}: {line}"
        );
    }
    let logged = &line["streams"][0];
    assert_eq!(logged["phone_to_pbx"], q["phone_to_pbx"], "{line}");
    assert_eq!(f(&logged["pbx_to_phone"]["loss_percent"]), 0.0, "{line}");
    assert_eq!(logged["pbx_to_phone"]["packets"], 200, "{line}");
    assert_eq!(
        logged["pbx_to_phone"]["mos"], q["pbx_to_phone"]["mos"],
        "{line}"
    );
    lab.stop().await;
}

/// A 20 ms Opus frame on PT 111: [`voice`] with the RTP clock of RFC 7587 (48 kHz, 960 per
/// frame).
fn opus(seq: u16, ssrc: u32) -> Vec<u8> {
    let mut p = voice(seq, ssrc);
    p[1] = 111;
    p[4..8].copy_from_slice(&(u32::from(seq) * 960).to_be_bytes());
    p
}

/// Opus is a dynamic payload type: its clock rate comes from each side's `a=rtpmap`, which
/// the edge hands to the relay. The relay's own jitter is then known (it is `null` for a type
/// of unknown rate), and a receiver's RTCP jitter of 480 units reads as 10 ms at 48 kHz,
/// not the 60 ms the 8000 Hz fallback would make of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_opus_call_counts_jitter_in_its_own_clock() {
    let lab = Lab::start(&ENV).await;
    let pbx = &lab.pbx;
    let opus_offer = |port| {
        phone_offer(port)
            .replace("RTP/SAVP 0 101", "RTP/SAVP 111 101")
            .replace("a=rtpmap:0 PCMU/8000", "a=rtpmap:111 opus/48000/2")
    };
    let mut c = lab.call_offering("quality-opus", "", opus_offer).await;
    let sdp = pbx_sdp(c.media.pbx_port())
        .replace("RTP/AVP 0 101", "RTP/AVP 111 101")
        .replace("a=rtpmap:0 PCMU/8000", "a=rtpmap:111 opus/48000/2");
    let mut relay = answer_with_one_socket(pbx, &mut c, &sdp).await;
    media_of(&c, &mut relay, 100, opus, |_| false).await;
    let rr = rtcp_report(0x1111, None, &[report_block(0x2222, 0, 0, 100, 480, 0, 0)]);
    phone_rtcp(&c, &mut relay, &rr).await;

    let q = quality(&lab).await;
    for direction in ["phone_to_pbx", "pbx_to_phone"] {
        assert!(q[direction]["jitter_ms"].is_number(), "{direction}: {q}");
        assert_eq!(q[direction]["lost"], 0, "{direction}: {q}");
    }
    let reported = &q["pbx_to_phone"]["reported"];
    assert_eq!(f(&reported["jitter_ms"]), 10.0, "480 units at 48 kHz: {q}");
    assert_eq!(f(&reported["stream_loss"]), 0.0, "{q}");
    phone_hangs_up(pbx, &mut c.ph, &c.d, 2, None).await;
    lab.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clean_call_shows_no_loss_and_a_high_mos() {
    let lab = Lab::start(&ENV).await;
    let pbx = &lab.pbx;
    let mut c = lab.call("quality-clean", "", true).await;
    let (_, mut relay) = c.answer_and_ack(pbx).await;
    media(&c, &mut relay, |_| false).await;

    let q = quality(&lab).await;
    for direction in ["phone_to_pbx", "pbx_to_phone"] {
        let d = &q[direction];
        assert_eq!(d["expected"], 200, "{direction}: {q}");
        assert_eq!(d["lost"], 0, "{direction}: {q}");
        assert_eq!(f(&d["loss_percent"]), 0.0, "{direction}: {q}");
        assert!(f(&d["mos"]) > 4.0, "{direction}: {q}");
        // No RTCP was sent: nothing reported, the relay's view stands alone.
        assert!(d["reported"].is_null(), "{direction}: {q}");
    }
    phone_hangs_up(pbx, &mut c.ph, &c.d, 2, None).await;
    lab.stop().await;
}

/// The phone's SRTCP (its own key) to the relay, and the plain RTCP the PBX receives for it.
async fn phone_rtcp(c: &Call, relay: &mut Relay, plain: &[u8]) -> Vec<u8> {
    let mut buf = plain.to_vec();
    buf.resize(plain.len() + 64, 0);
    let n = relay.tx.protect_rtcp(&mut buf, plain.len()).unwrap();
    c.media
        .phone
        .send_to(&buf[..n], relay.phone_side)
        .await
        .unwrap();
    recv(&c.media.pbx).await.expect("PBX gets the phone's RTCP")
}

/// The PBX answers `c` with `sdp` plus `a=rtcp:` at its RTP port (RFC 3605), so its RTCP
/// comes from and goes to the one socket the test has, and ACKs; returns the test's view of
/// the relay.
async fn answer_with_one_socket(pbx: &Pbx, c: &mut Call, sdp: &str) -> Relay {
    let port = c.media.pbx_port();
    let sdp = sdp.replace("a=sendrecv", &format!("a=rtcp:{port}\r\na=sendrecv"));
    c.answer_and_ack_with(pbx, &sdp).await.1
}

/// A call whose two ends exchange RTCP through the edge after 200 RTP packets each way:
/// the phone's SR (NTP middle 0x0A0B_0C0D) reaches the PBX, which holds it 100 ms and answers
/// with an RR claiming DLSR = 50 ms (3277/65536 s), 13/256 lost, 7 cumulative of 200 (3.5 %
/// of the whole stream), 16 units jitter; the PBX's SR (0x1122_3344) reaches the phone as
/// SRTCP, which holds it 80 ms and answers DLSR 0, 26/256 (≈ 10 %) lost in the last interval,
/// 30 cumulative of 200 (15 %), 80 units (10 ms at 8000 Hz) jitter.
/// The PBX answers with `a=rtcp:` at its RTP port (RFC 3605), so its RTCP comes from and goes
/// to the one socket the test has.
pub(super) async fn call_with_rtcp(lab: &Lab, call_id: &str) -> (Call, Relay) {
    let pbx = &lab.pbx;
    let mut c = lab.call(call_id, "", true).await;
    let sdp = pbx_sdp(c.media.pbx_port());
    let mut relay = answer_with_one_socket(pbx, &mut c, &sdp).await;
    // RTP both ways: the edge learns the SSRCs (0x1111 from the phone, 0x2222 from the PBX).
    media(&c, &mut relay, |_| false).await;

    let sr = rtcp_report(0x1111, Some(0x0A0B_0C0D), &[]);
    assert_eq!(
        phone_rtcp(&c, &mut relay, &sr).await,
        sr,
        "plain SR reaches the PBX"
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    let rr = rtcp_report(
        0x2222,
        None,
        &[report_block(0x1111, 13, 7, 200, 16, 0x0A0B_0C0D, 3277)],
    );
    c.media.pbx.send_to(&rr, relay.pbx_side).await.unwrap();
    let mut got = recv(&c.media.phone).await.expect("phone gets the PBX's RR");
    let n = relay
        .rx
        .unprotect_rtcp(&mut got)
        .expect("SRTCP from the edge")
        .len;
    assert_eq!(&got[..n], &rr[..]);

    let sr = rtcp_report(0x2222, Some(0x1122_3344), &[]);
    c.media.pbx.send_to(&sr, relay.pbx_side).await.unwrap();
    let mut got = recv(&c.media.phone).await.expect("phone gets the PBX's SR");
    relay
        .rx
        .unprotect_rtcp(&mut got)
        .expect("SRTCP from the edge");
    tokio::time::sleep(Duration::from_millis(80)).await;
    let rr = rtcp_report(
        0x1111,
        None,
        &[report_block(0x2222, 26, 30, 200, 80, 0x1122_3344, 0)],
    );
    phone_rtcp(&c, &mut relay, &rr).await;
    (c, relay)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rtcp_reports_show_loss_jitter_and_each_legs_rtt() {
    let dir = tempfile::tempdir().unwrap();
    let log_file = dir.path().join("calls.jsonl");
    let log_path = log_file.display().to_string();
    let mut env = ENV.to_vec();
    env.push(("PBX_EDGE_CALL_LOG__FILE", log_path.as_str()));
    let lab = Lab::start(&env).await;
    let pbx = &lab.pbx;
    let (mut c, _relay) = call_with_rtcp(&lab, "quality-rtcp").await;

    let q = quality(&lab).await;
    let (to_pbx, to_phone) = (
        &q["phone_to_pbx"]["reported"],
        &q["pbx_to_phone"]["reported"],
    );
    assert_eq!(f(&to_pbx["loss_fraction"]), 0.0508, "{q}");
    assert_eq!(to_pbx["cumulative_lost"], 7, "{q}");
    assert_eq!(
        f(&to_pbx["stream_loss"]),
        0.035,
        "7 of 200 (seq 1..=200): {q}"
    );
    assert_eq!(f(&to_pbx["jitter_ms"]), 2.0, "{q}");
    let rtt_pbx = f(&to_pbx["rtt_ms"]);
    assert!(rtt_pbx >= 50.0, "PBX leg RTT {rtt_pbx} ms: {q}");
    assert_eq!(f(&to_phone["loss_fraction"]), 0.1016, "{q}");
    assert_eq!(to_phone["cumulative_lost"], 30, "{q}");
    assert_eq!(f(&to_phone["stream_loss"]), 0.15, "30 of 200: {q}");
    assert_eq!(f(&to_phone["jitter_ms"]), 10.0, "{q}");
    let rtt_phone = f(&to_phone["rtt_ms"]);
    assert!(rtt_phone >= 80.0, "phone leg RTT {rtt_phone} ms: {q}");
    // The relay's own view is unchanged by the reports.
    assert_eq!(f(&q["pbx_to_phone"]["loss_percent"]), 0.0, "{q}");

    phone_hangs_up(pbx, &mut c.ph, &c.d, 2, None).await;
    let m = wait_metric(
        lab.e.admin_addr,
        "pbx_edge_media_stream_rtt_seconds_count{side=\"phone\"}",
        |v| v >= 1.0,
    )
    .await;
    for (series, value) in [
        (
            "pbx_edge_media_stream_rtt_seconds_count{side=\"phone\"}",
            1.0,
        ),
        ("pbx_edge_media_stream_rtt_seconds_count{side=\"pbx\"}", 1.0),
        (
            "pbx_edge_media_stream_rtt_seconds_bucket{side=\"phone\",le=\"0.05\"}",
            0.0,
        ),
        (
            "pbx_edge_media_stream_reported_loss_ratio_count{side=\"pbx\"}",
            1.0,
        ),
        // The histograms take the whole stream's loss (0.15 and 0.035), not the last
        // interval's (0.1016 and 0.0508).
        (
            "pbx_edge_media_stream_reported_loss_ratio_bucket{side=\"pbx\",le=\"0.1\"}",
            0.0,
        ),
        (
            "pbx_edge_media_stream_reported_loss_ratio_bucket{side=\"pbx\",le=\"0.2\"}",
            1.0,
        ),
        (
            "pbx_edge_media_stream_reported_loss_ratio_bucket{side=\"phone\",le=\"0.05\"}",
            1.0,
        ),
        (
            "pbx_edge_media_stream_reported_jitter_seconds_bucket{side=\"phone\",le=\"0.002\"}",
            1.0,
        ),
    ] {
        assert_eq!(http::metric(&m, series), value, "{series}\n{m}");
    }
    // The call log has the same reports per direction.
    let line = one_logged_call(&log_file).await;
    let logged = &line["streams"][0];
    assert_eq!(
        logged["pbx_to_phone"]["reported"], q["pbx_to_phone"]["reported"],
        "{line}"
    );
    assert_eq!(
        logged["phone_to_pbx"]["reported"], q["phone_to_pbx"]["reported"],
        "{line}"
    );
    lab.stop().await;
}
