//! Call quality from the relay's own view (issue 14): a call whose phone skips every 20th
//! RTP sequence number shows 5 % loss and a lower MOS on that direction in `/api/calls`, 0 %
//! on the clean direction; the per-stream histograms are observed when the call ends, and
//! the call log (`[call_log] file`) gets one line with the same figures.

use crate::support::http;
use crate::support::media::{recv, Relay};
use crate::support::ports;
use crate::support::rtp::voice;
use crate::support::scenario::{phone_hangs_up, wait_metric, Call, Lab};
use serde_json::Value;

const ENV: [(&str, &str); 3] = [
    ("PBX_EDGE_SIP__T1_MS", "100"),
    ("PBX_EDGE_MEDIA__PORT_MIN", ports::QUALITY.0),
    ("PBX_EDGE_MEDIA__PORT_MAX", ports::QUALITY.1),
];

/// Sends RTP seq 1..=200 both ways through the relay in lock-step; the phone skips the
/// sequence numbers `phone_skips` selects (never sent: the PBX cannot see a gap the edge
/// filled), the PBX sends all 200.
async fn media(c: &Call, relay: &mut Relay, phone_skips: impl Fn(u16) -> bool) {
    for seq in 1..=200u16 {
        if !phone_skips(seq) {
            let plain = voice(seq, 0x1111);
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
            .send_to(&voice(seq, 0x2222), relay.pbx_side)
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

    // The call log: one line, the same figures (bounded wait for the writer thread).
    let mut text = String::new();
    for _ in 0..100 {
        text = std::fs::read_to_string(&log_file).unwrap_or_default();
        if text.ends_with('\n') {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(text.lines().count(), 1, "{text}");
    let line: Value = serde_json::from_str(text.trim_end()).unwrap();
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
    }
    phone_hangs_up(pbx, &mut c.ph, &c.d, 2, None).await;
    lab.stop().await;
}
