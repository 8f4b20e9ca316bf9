//! PBX faults (issue 16), on the real binary: the PBX stops answering in the middle of a call
//! (a UDP PBX that hangs or is cut off) and comes back. Every process is stopped by its PID.

use super::drain::{establish, hang_up, metric, start, wait_for};
use crate::support::http;
use crate::support::offer::phone_sdp;
use crate::support::pbx::{self, Pbx};
use crate::support::phone;
use crate::support::ports;
use crate::support::scenario::{is_method, metrics, pbx_recv_where, register, wait_metric};
use pbx_edge::sip::message::SipMessage;
use std::net::SocketAddr;
use std::time::Duration;

/// The next request with `method` and at least CSeq `min_cseq` the PBX receives (bounded),
/// skipping the retransmissions it ignored while it was "down".
async fn next_request(pbx: &Pbx, method: &str, min_cseq: u32) -> (SipMessage, SocketAddr) {
    pbx_recv_where(pbx, method, |m| {
        is_method(m, method) && m.cseq().is_ok_and(|c| c.seq >= min_cseq)
    })
    .await
}

/// The call in progress ends cleanly when its media times out (the PBX sends nothing): BYE to
/// the phone, BYE toward the PBX (unanswered: its transaction times out). A REGISTER while the
/// PBX is silent gets 408 at once the transaction gives up, not silence. Once the PBX answers
/// again, the phone's next REGISTER re-establishes its binding and a new call works; nothing
/// is left over: no call, stream, port pair or transaction, and `/api/calls` is empty.
#[test]
fn pbx_silent_mid_call_ends_the_call_cleanly_and_the_edge_recovers_when_it_returns() {
    let (pki, rt, pbx, running) = start(&[
        ("PBX_EDGE_SIP__T1_MS", "50"),
        ("PBX_EDGE_SIP__T4_MS", "200"),
        ("PBX_EDGE_MEDIA__TIMEOUT_SECS", "2"),
        ("PBX_EDGE_MEDIA__PORT_MIN", ports::PBX_FAULTS.0),
        ("PBX_EDGE_MEDIA__PORT_MAX", ports::PBX_FAULTS.1),
    ]);
    rt.block_on(async {
        let mut call = establish(&pki, &running, &pbx, "pbx-silent").await;
        let ph = &mut call.phone;

        // Register while the PBX is up.
        register(&pbx, ph, "reg-silent", 1, 600).await;

        // From here the PBX is silent: no RTP, no SIP answers. The media timeout ends the
        // call: the phone gets a BYE and answers it.
        let bye = ph
            .recv_within(Duration::from_secs(15))
            .await
            .expect("the phone gets a BYE when the media times out");
        assert_eq!(bye.method().map(|m| m.as_str()), Some("BYE"));
        assert_eq!(bye.call_id().unwrap(), "pbx-silent");
        ph.send(&phone::response(&bye, 200)).await;

        // A REGISTER while the PBX is silent: an answer from the edge once Timer F fires.
        ph.send(&phone::register("101", 5099, 2, "reg-silent", ""))
            .await;
        let refused = ph
            .recv_within(Duration::from_secs(15))
            .await
            .expect("the edge answers the REGISTER itself");
        assert_eq!(refused.status(), Some(408), "{refused:?}");
        let m = metrics(running.admin).await;
        assert_eq!(http::metric(&m, "pbx_edge_calls_active"), 0.0, "{m}");
        assert_eq!(
            http::metric(&m, "pbx_edge_calls_total{outcome=\"media_timeout\"}"),
            1.0,
            "{m}"
        );

        // The PBX is back: the phone's next REGISTER goes through.
        register(&pbx, ph, "reg-silent", 3, 600).await;
        assert_eq!(metric(&running, "pbx_edge_registrations_active").await, 1.0);
    });

    // A new call works (a new connection from the same phone).
    rt.block_on(async {
        let mut call = establish(&pki, &running, &pbx, "pbx-back").await;
        hang_up(&mut call, &pbx).await;

        // Nothing leaks: every gauge back to zero, once the absorb timers (64·T1) are over.
        let txns = "pbx_edge_sip_transactions_active";
        let m = wait_metric(running.admin, txns, |v| v == 0.0).await;
        for gauge in [
            "pbx_edge_sip_transactions_active",
            "pbx_edge_calls_active",
            "pbx_edge_media_active_streams",
            "pbx_edge_media_port_pairs_in_use",
        ] {
            // Present (a misspelt name would read 0) and zero.
            assert!(
                m.lines().any(|l| l.starts_with(&format!("{gauge} "))),
                "{gauge}\n{m}"
            );
            assert_eq!(http::metric(&m, gauge), 0.0, "{gauge}\n{m}");
        }
        let (status, calls) = http::get(running.admin, "/api/calls").await;
        assert_eq!(status, 200);
        let calls: serde_json::Value = serde_json::from_str(&calls).unwrap();
        assert_eq!(calls["calls"], serde_json::json!([]), "{calls}");
    });
    drop(running);
}

/// The PBX restarts and loses its state (dialogs and registrations). What the phone sees: its
/// next request inside the call (here a re-INVITE putting the call on hold) gets the PBX's 481;
/// the edge relays it and releases the call and its media at once (RFC 3261 §12.2.1.2), so the
/// phone's own clean-up BYE is answered 481 by the edge and never reaches the PBX. The phone's
/// next REGISTER recreates its binding and a new call works.
#[test]
fn pbx_restart_that_lost_the_call_releases_it_on_481_and_the_phone_recovers() {
    let (pki, rt, pbx, running) = start(&[
        ("PBX_EDGE_SIP__T1_MS", "50"),
        ("PBX_EDGE_MEDIA__PORT_MIN", ports::PBX_FAULTS_TCP.0),
        ("PBX_EDGE_MEDIA__PORT_MAX", ports::PBX_FAULTS_TCP.1),
    ]);
    rt.block_on(async {
        let mut call = establish(&pki, &running, &pbx, "pbx-restart").await;
        assert_eq!(metric(&running, "pbx_edge_media_active_streams").await, 1.0);
        let sdp = phone_sdp(5004, 1, 2).replace("a=sendrecv", "a=sendonly");
        let hold = call.d.reoffer("INVITE", 2, &sdp);
        call.phone.send(&hold).await;
        assert_eq!(call.phone.recv().await.expect("100").status(), Some(100));
        // The restarted PBX knows no such dialog.
        let (reinv, from) = next_request(&pbx, "INVITE", 2).await;
        pbx.send(
            from,
            &pbx::response(&reinv, 481, "Call/Transaction Does Not Exist", ""),
        )
        .await;
        let gone = call.phone.recv().await.expect("the phone gets the 481");
        assert_eq!(gone.status(), Some(481));
        let (ack, _) = next_request(&pbx, "ACK", 2).await;
        assert_eq!(
            ack.call_id().unwrap(),
            "pbx-restart",
            "the edge ACKs the 481"
        );

        // The edge has released the call and its media.
        let m = wait_metric(running.admin, "pbx_edge_calls_active", |v| v == 0.0).await;
        assert_eq!(http::metric(&m, "pbx_edge_calls_active"), 0.0, "{m}");
        assert_eq!(
            http::metric(&m, "pbx_edge_calls_total{outcome=\"dialog_gone\"}"),
            1.0,
            "{m}"
        );
        let streams = wait_for(&running, "pbx_edge_media_active_streams", |v| v == 0.0).await;
        assert_eq!(streams, 0.0, "the call's media is released");

        // The phone ends the dialog on its side: the edge answers, the PBX sees nothing.
        let bye = call.d.request("BYE", 3, "", "");
        call.phone.send(&bye).await;
        let r = call.phone.recv().await.expect("an answer to the BYE");
        assert_eq!(r.status(), Some(481));
        assert!(
            pbx.recv_within(Duration::from_millis(500))
                .await
                .is_none_or(|(m, _)| m.method().map(|m| m.as_str()) != Some("BYE")),
            "the BYE for a call the edge released is not forwarded"
        );

        // The phone re-registers (the PBX lost that too) and calls again.
        register(&pbx, &mut call.phone, "reg-restart", 1, 600).await;
        let mut again = establish(&pki, &running, &pbx, "pbx-restart-2").await;
        hang_up(&mut again, &pbx).await;
    });
    drop(running);
}
