//! Calls: one [`Dialog`] per INVITE dialog the edge relays (its legs' remote targets, tags,
//! CSeq spaces, SDP origins, offer/answer state and media) and how a call ends
//! ([`CallEnd`]): which BYEs the edge then sends itself and which metric label counts it.
//! The core's ACK, CANCEL and BYE handling lives here too, since it acts on these dialogs.

use super::{Leg, SipCore};
use crate::b2bua::authorize::{self as authz, DialogOwner, KnownDialogs};
use crate::b2bua::call::CallMedia;
use crate::b2bua::call_record::{rfc3339, user_of, CallRecord};
use crate::b2bua::offer_answer::OfferAnswer;
use crate::b2bua::refusal::Refusal;
use crate::b2bua::subscriptions::Subscriptions;
use crate::media::MediaEvent;
use crate::sdp::{LegOrigin, MediaPlan};
use crate::sip::message::{ContactList, SipMessage};
use crate::sip::response::{cancel_for, response_to};
use crate::sip::uri::{NameAddr, SipUri, Via};
use crate::transaction::key::TransactionKey;
use crate::transport::flow::FlowId;
use crate::transport::rate::BudgetKey;
use std::collections::HashMap;
use std::time::Duration;
use tokio::time::Instant;

/// How a call ended. [`CallEnd::label`] is the `outcome` of `pbx_edge_calls_total` for a call
/// that was established; [`CallEnd::byes`] says on which legs the edge hangs up itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum CallEnd {
    /// A BYE from this leg, relayed to the other like any request.
    Bye(Leg),
    /// The phone's connection closed: the edge sends BYE to the PBX (DESIGN.md).
    ConnectionLost,
    /// The media relay saw no packets for `media.timeout`: BYE on both legs.
    MediaTimeout,
    /// The shutdown drain ran out of time: BYE on both legs.
    Drain,
    /// A 481 to a request inside the call: the other side lost the dialog (RFC 5057 §5.6);
    /// the requester ends it itself.
    DialogGone,
    /// The SDP answer in an ACK was refused. An ACK cannot be refused (RFC 3261 §13.2.2.4):
    /// BYE on both legs.
    AckAnswerRefused,
    /// The initial offer was refused (the request is answered with the refusal).
    OfferRefused,
    /// The SDP of the 2xx to the initial INVITE was refused (the edge ACKs and BYEs that
    /// leg itself, see `ack_and_bye`).
    AnswerRefused,
    /// The INVITE got a final non-2xx response.
    InviteFailed,
    /// The edge answered the INVITE itself: the other leg timed out or its connection closed.
    NoAnswer,
}

impl CallEnd {
    /// The `outcome` label of an established call that ended this way.
    pub(super) fn label(self) -> &'static str {
        match self {
            CallEnd::Bye(_) => "bye",
            CallEnd::MediaTimeout => "media_timeout",
            CallEnd::ConnectionLost => "connection_lost",
            CallEnd::Drain => "shutdown",
            CallEnd::DialogGone => "dialog_gone",
            CallEnd::AckAnswerRefused
            | CallEnd::OfferRefused
            | CallEnd::AnswerRefused
            | CallEnd::InviteFailed
            | CallEnd::NoAnswer => "ended",
        }
    }

    /// Whether the edge sends BYE itself (to the PBX, to the phone) for an established call.
    fn byes(self) -> (bool, bool) {
        match self {
            CallEnd::ConnectionLost => (true, false),
            CallEnd::MediaTimeout | CallEnd::Drain | CallEnd::AckAnswerRefused => (true, true),
            CallEnd::Bye(_)
            | CallEnd::DialogGone
            | CallEnd::OfferRefused
            | CallEnd::AnswerRefused
            | CallEnd::InviteFailed
            | CallEnd::NoAnswer => (false, false),
        }
    }
}

/// A request the edge sends itself (BYE, CANCEL) on `leg`, for the call on `flow`.
#[derive(Debug)]
pub(super) struct EdgeRequest {
    pub(super) leg: Leg,
    pub(super) msg: SipMessage,
    pub(super) flow: FlowId,
}

/// One INVITE dialog (a call) and its media.
pub(super) struct Dialog {
    pub(super) flow: FlowId,
    /// The device the call counts against (`sip.max_calls_per_device`,
    /// `media.max_ports_per_device`): its MAC, or its connection.
    pub(super) owner: BudgetKey,
    pub(super) identity: String,
    pub(super) from_phone: bool,
    /// SDP origin of each leg (RFC 3264 §8: version increments per change).
    pub(super) phone_origin: LegOrigin,
    pub(super) pbx_origin: LegOrigin,
    /// The last answered plan, and an offer waiting for its answer.
    pub(super) plan: Option<MediaPlan>,
    pub(super) offer: Option<MediaPlan>,
    pub(super) media: CallMedia,
    /// The remote targets of each leg (Contact of the other side).
    pub(super) pbx_contact: Option<SipUri>,
    pub(super) phone_contact: Option<SipUri>,
    /// From of the initial INVITE and To (with tag) of its 2xx: the same on both legs.
    pub(super) caller_from: String,
    pub(super) callee_to: Option<String>,
    /// Highest CSeq each side used in this dialog (for BYEs the edge sends itself).
    pub(super) phone_cseq: u32,
    pub(super) pbx_cseq: u32,
    pub(super) established: bool,
    pub(super) created: Instant,
    /// Wall-clock start and answer (the call log's times).
    pub(super) started_at: std::time::SystemTime,
    pub(super) answered_at: Option<std::time::SystemTime>,
    /// The device certificate's MAC and vendor profile, when there is one.
    pub(super) device_mac: Option<String>,
    pub(super) vendor: Option<String>,
    /// Our last 2xx to the phone per CSeq (repeated when the PBX repeats its 2xx).
    pub(super) last_2xx_to_phone: Option<(u32, SipMessage)>,
    /// Codecs of the last answer (for the admin API).
    pub(super) codecs: Vec<String>,
    /// Which exchanges completed, and the SDP last sent on each leg (PRACK, 1xx-rel).
    pub(super) oa: OfferAnswer,
}

/// Who a new call belongs to and how its SDP is versioned.
pub(super) struct NewCall {
    pub(super) flow: FlowId,
    pub(super) owner: BudgetKey,
    pub(super) identity: String,
    pub(super) device_mac: Option<String>,
    pub(super) vendor: Option<String>,
    /// SDP session ids of the phone leg and the PBX leg.
    pub(super) session_ids: (u64, u64),
    /// `media.accept_unannounced_unencrypted_srtcp`.
    pub(super) accept_unannounced_unencrypted_srtcp: bool,
}

impl Dialog {
    /// The SRTP suite of the phone leg, when the call's media is SRTP.
    pub(super) fn srtp_suite(&self) -> Option<String> {
        self.plan.as_ref().and_then(|p| {
            p.relayed().find_map(|(_, r)| match &r.security {
                crate::sdp::Security::Srtp(k) => {
                    k.phone.as_ref().map(|c| c.suite.sdes_name().to_owned())
                }
                crate::sdp::Security::Plain => None,
            })
        })
    }

    /// `phone_to_pbx` or `pbx_to_phone`.
    pub(super) fn direction(&self) -> &'static str {
        if self.from_phone {
            "phone_to_pbx"
        } else {
            "pbx_to_phone"
        }
    }

    /// The call log's record of this call ending now with `end`.
    pub(super) fn record(&self, call_id: &str, end: CallEnd) -> CallRecord {
        CallRecord {
            call_id: call_id.to_owned(),
            device_mac: self.device_mac.clone(),
            vendor: self.vendor.clone(),
            identity: self.identity.clone(),
            from_user: user_of(&self.caller_from),
            to_user: self.callee_to.as_deref().and_then(user_of),
            direction: self.direction(),
            start_time: rfc3339(self.started_at),
            answer_time: self.answered_at.map(rfc3339),
            end_time: rfc3339(std::time::SystemTime::now()),
            end_reason: end.label(),
            codecs: self.codecs.clone(),
            srtp_suite: self.srtp_suite(),
            streams: self.media.quality(),
        }
    }

    /// The call the initial INVITE `invite` from `from` sets up: the sender's Contact is that
    /// leg's remote target, its CSeq starts that side's CSeq space.
    pub(super) fn new(invite: &SipMessage, from: Leg, call: NewCall) -> Self {
        let cseq = invite.cseq().map(|c| c.seq).unwrap_or(0);
        let contact = first_contact(invite);
        let (phone_contact, pbx_contact, phone_cseq, pbx_cseq) = match from {
            Leg::Phone => (contact, None, cseq, 0),
            Leg::Pbx => (None, contact, 0, cseq),
        };
        Dialog {
            flow: call.flow,
            owner: call.owner,
            identity: call.identity,
            from_phone: from == Leg::Phone,
            phone_origin: LegOrigin::new(call.session_ids.0, 1),
            pbx_origin: LegOrigin::new(call.session_ids.1, 1),
            plan: None,
            offer: None,
            media: CallMedia::new(call.accept_unannounced_unencrypted_srtcp)
                .with_correlation(invite.call_id().ok()),
            pbx_contact,
            phone_contact,
            caller_from: invite.header("From").unwrap_or_default().to_owned(),
            callee_to: None,
            phone_cseq,
            pbx_cseq,
            established: false,
            created: Instant::now(),
            started_at: std::time::SystemTime::now(),
            answered_at: None,
            device_mac: call.device_mac,
            vendor: call.vendor,
            last_2xx_to_phone: None,
            codecs: Vec::new(),
            oa: OfferAnswer::default(),
        }
    }

    /// A 2xx to INVITE from `leg` (CSeq `cseq`): the first establishes the call (the
    /// callee's To with its tag, RFC 3261 §12.1.2); each one records the codecs and, from the
    /// PBX, the 2xx to repeat to the phone. Returns the setup time when this 2xx established
    /// the call.
    pub(super) fn answered(&mut self, leg: Leg, cseq: u32, ok: &SipMessage) -> Option<Duration> {
        let mut setup = None;
        if !self.established {
            self.established = true;
            self.answered_at = Some(std::time::SystemTime::now());
            // The callee's To (with its tag) comes from the 2xx to the initial INVITE; the
            // 2xx to a re-INVITE from the callee carries the caller's tag in To.
            self.callee_to = ok.header("To").map(str::to_owned);
            setup = Some(Instant::now().saturating_duration_since(self.created));
        }
        let codecs = rtpmap_names(ok.body());
        if !codecs.is_empty() {
            self.codecs = codecs;
        }
        if leg == Leg::Pbx {
            self.last_2xx_to_phone = Some((cseq, ok.clone()));
        }
        setup
    }

    /// The BYE the edge sends on `leg` to end the call, speaking for the other side:
    /// From/To/Call-ID are the same on both legs (transparent B2BUA), and the CSeq continues
    /// the other side's space (RFC 3261 §12.2.1.1). `None` before the 2xx (no To tag yet) or
    /// without a remote target on that leg.
    fn bye(&self, call_id: &str, leg: Leg, via: &Via) -> Option<SipMessage> {
        let (caller, callee) = (self.caller_from.as_str(), self.callee_to.as_deref()?);
        let (target, cseq, speaks_for_caller) = match leg {
            Leg::Pbx => (self.pbx_contact.as_ref()?, self.phone_cseq, self.from_phone),
            Leg::Phone => (
                self.phone_contact.as_ref()?,
                self.pbx_cseq,
                !self.from_phone,
            ),
        };
        let (from, to) = if speaks_for_caller {
            (caller, callee)
        } else {
            (callee, caller)
        };
        bye(target, via, from, to, call_id, cseq + 1)
    }
}

/// The first Contact of a message: the remote target it names (RFC 3261 §12.1).
pub(super) fn first_contact(m: &SipMessage) -> Option<SipUri> {
    match m.contacts() {
        Ok(ContactList::Addrs(a)) => a.into_iter().next().map(|a| a.uri),
        _ => None,
    }
}

/// 481 for a request naming a call the edge does not have (RFC 3261 §12.2.2).
pub(super) fn no_such_call() -> Refusal {
    Refusal::answer(481, "no_such_call", "no such call")
}

/// 481 for a CANCEL that matches no INVITE of the sender (RFC 3261 §9.2).
fn no_matching_invite() -> Refusal {
    Refusal::answer(481, "no_matching_invite", "")
}

/// The encoding names of an SDP body's `a=rtpmap` lines (admin API only; the SDP itself is
/// handled by `sdp`).
fn rtpmap_names(body: &[u8]) -> Vec<String> {
    let Ok(text) = std::str::from_utf8(body) else {
        return Vec::new();
    };
    text.lines()
        .filter_map(|l| l.trim_end().strip_prefix("a=rtpmap:"))
        .filter_map(|v| v.split_once(' ').map(|(_, name)| name.trim().to_owned()))
        .take(32)
        .collect()
}

/// A BYE the edge composes itself, with a Reason saying so (RFC 3326).
fn bye(
    target: &SipUri,
    via: &Via,
    from: &str,
    to: &str,
    call_id: &str,
    cseq: u32,
) -> Option<SipMessage> {
    let text = format!(
        "BYE {target} SIP/2.0\r\nVia: {via}\r\nMax-Forwards: 70\r\nFrom: {from}\r\nTo: {to}\r\nCall-ID: {call_id}\r\nCSeq: {cseq} BYE\r\nReason: SIP;cause=200;text=\"ended by pbx-edge\"\r\nContent-Length: 0\r\n\r\n"
    );
    SipMessage::parse(text.as_bytes()).ok()
}

impl SipCore {
    /// Ends a call: stops its media, counts how an established call ended, and returns the
    /// BYEs `end` calls for (the edge itself ends calls on connection loss, media timeout and
    /// drain). The caller sends them ([`SipCore::send_edge_requests`]).
    pub(super) async fn end_call(&mut self, call_id: &str, end: CallEnd) -> Vec<EdgeRequest> {
        let Some(mut d) = self.dialogs.remove(call_id) else {
            return Vec::new();
        };
        self.publish_calls();
        if self.call_log.is_on() {
            // Read before the streams stop (stopping hands their counters back).
            let record = d.record(call_id, end);
            match serde_json::to_string(&record) {
                Ok(line) => self.call_log.record(line),
                Err(e) => tracing::error!(call_id, error = %e, "call log record not serialisable"),
            }
        }
        d.media.stop().await;
        tracing::info!(call_id, reason = ?end, established = d.established, "call ended");
        if !d.established {
            return Vec::new();
        }
        self.metrics
            .calls_ended
            .with_label_values(&[end.label()])
            .inc();
        let (bye_pbx, bye_phone) = end.byes();
        let mut byes = Vec::new();
        for (leg, wanted) in [(Leg::Pbx, bye_pbx), (Leg::Phone, bye_phone)] {
            if !wanted {
                continue;
            }
            if let Some(msg) = d.bye(call_id, leg, &self.via(leg)) {
                byes.push(EdgeRequest {
                    leg,
                    msg,
                    flow: d.flow,
                });
            }
        }
        byes
    }

    /// Records the call the initial INVITE `invite` from `from` sets up for the device
    /// `owner` (already within `sip.max_calls_per_device`).
    pub(super) fn start_call(
        &mut self,
        call_id: &str,
        invite: &SipMessage,
        from: Leg,
        flow: FlowId,
        owner: BudgetKey,
        identity: &crate::identity::Identity,
    ) {
        let call = NewCall {
            flow,
            owner,
            identity: identity.to_string(),
            device_mac: identity.mac().map(|m| m.to_string()),
            vendor: identity.vendor().map(str::to_owned),
            session_ids: (self.session_id(), self.session_id()),
            accept_unannounced_unencrypted_srtcp: self
                .settings
                .accept_unannounced_unencrypted_srtcp,
        };
        self.dialogs
            .insert(call_id.to_owned(), Dialog::new(invite, from, call));
        self.publish_calls();
        self.metrics
            .calls_started
            .with_label_values(&[from.label()])
            .inc();
    }

    /// [`SipCore::end_call`], then sends the BYEs it returns.
    pub(super) async fn hang_up(&mut self, call_id: &str, end: CallEnd) {
        let byes = self.end_call(call_id, end).await;
        self.send_edge_requests(byes).await;
    }

    /// Starts a client transaction for each request the edge sends itself.
    pub(super) async fn send_edge_requests(&mut self, requests: Vec<EdgeRequest>) {
        for r in requests {
            self.start_edge_request(r.leg, r.msg, r.flow).await;
        }
    }

    /// ACKs a 2xx to INVITE received on `leg` for a dialog the edge will not keep, and hangs
    /// that dialog up with BYE the first time (RFC 3261 §13.2.2.4). The ACK is not a
    /// transaction (§17.1.1.3): every retransmission of the 2xx is ACKed again (RFC 6026
    /// §8.4) — and never relayed, see `relay_response`.
    pub(super) async fn ack_and_bye(&mut self, ok: &SipMessage, leg: Leg, flow: FlowId) {
        let (Some(from), Some(to), Ok(call_id), Ok(cseq)) =
            (ok.header("From"), ok.header("To"), ok.call_id(), ok.cseq())
        else {
            return;
        };
        let Some(target) = first_contact(ok) else {
            tracing::warn!(call_id, "refused 2xx has no Contact: cannot ACK or BYE it");
            return;
        };
        let via = self.via(leg);
        let ack = format!(
            "ACK {target} SIP/2.0\r\nVia: {via}\r\nMax-Forwards: 70\r\nFrom: {from}\r\nTo: {to}\r\nCall-ID: {call_id}\r\nCSeq: {} ACK\r\nContent-Length: 0\r\n\r\n",
            cseq.seq
        );
        if let Ok(ack) = SipMessage::parse(ack.as_bytes()) {
            self.send_on(leg, flow, &ack).await;
        }
        let key = (call_id.to_owned(), to.to_owned());
        if self.hung_up.contains_key(&key) {
            return;
        }
        self.hung_up
            .insert(key, Instant::now() + self.settings.timers.timeout());
        if let Some(bye) = bye(&target, &self.via(leg), from, to, call_id, cseq.seq + 1) {
            self.start_edge_request(leg, bye, flow).await;
        }
    }

    pub(super) async fn on_media_event(&mut self, ev: MediaEvent) {
        match ev {
            MediaEvent::Timeout { stream, side } => {
                let call = self
                    .dialogs
                    .iter()
                    .find(|(_, d)| d.media.stream_ids().contains(&stream))
                    .map(|(c, _)| c.clone());
                if let Some(call_id) = call {
                    tracing::info!(%call_id, ?side, "media timeout: ending the call on both legs");
                    self.hang_up(&call_id, CallEnd::MediaTimeout).await;
                }
            }
            MediaEvent::Latched { .. } | MediaEvent::AuthFailures { .. } => {}
        }
    }
}

/// The dialogs the edge relays, as `authorize` sees them: calls (INVITE dialogs, by Call-ID
/// and the tags of the initial INVITE and its 2xx) and subscription dialogs.
pub(super) struct KnownDialogView<'a> {
    pub(super) calls: &'a HashMap<String, Dialog>,
    pub(super) subscriptions: &'a Subscriptions,
    pub(super) now: std::time::Instant,
}

fn tag_of(header: &str) -> Option<String> {
    NameAddr::parse(header)
        .ok()
        .and_then(|a| a.tag().map(str::to_owned))
}

impl KnownDialogs for KnownDialogView<'_> {
    fn dialog(&self, call_id: &str, tag_a: &str, tag_b: &str) -> Option<DialogOwner<'_>> {
        if let Some(d) = self.calls.get(call_id) {
            let caller = tag_of(&d.caller_from);
            let callee = d.callee_to.as_deref().and_then(tag_of);
            if authz::call_tags_match(caller.as_deref(), callee.as_deref(), tag_a, tag_b) {
                return Some(DialogOwner {
                    flow: d.flow,
                    identity: &d.identity,
                    established: d.established,
                });
            }
        }
        self.subscriptions
            .get(call_id, tag_a, tag_b, self.now)
            .map(|s| DialogOwner {
                flow: s.flow,
                identity: &s.identity,
                established: false,
            })
    }

    fn call(&self, call_id: &str) -> Option<DialogOwner<'_>> {
        self.calls.get(call_id).map(|d| DialogOwner {
            flow: d.flow,
            identity: &d.identity,
            established: d.established,
        })
    }
}

impl SipCore {
    /// An ACK for a 2xx is its own transaction (RFC 3261 §17.1.1.3): forward it statelessly.
    pub(super) async fn forward_2xx_ack(&mut self, from: Leg, ack: SipMessage) {
        let call_id = ack.call_id().unwrap_or_default().to_owned();
        let cseq = ack.cseq().map(|c| c.seq).unwrap_or(0);
        // Our 2xx to the PBX is acknowledged: stop repeating it.
        if from == Leg::Pbx {
            self.txns.acked_2xx(&call_id, cseq);
        }
        let Some(d) = self.dialogs.get(&call_id) else {
            return; // an ACK for a call we do not know: nothing to forward to
        };
        let mut fwd = ack.clone();
        fwd.set_body(Vec::new(), None);
        if d.offer.is_some() && !ack.body().is_empty() {
            // The answer to a delayed offer made in our 2xx.
            match self.answer_sdp(&call_id, from, ack.body(), true).await {
                Ok(sdp) => {
                    if let Some(d) = self.dialogs.get_mut(&call_id) {
                        d.oa.completed(cseq);
                    }
                    fwd.set_body(sdp, Some("application/sdp"))
                }
                Err(r) => {
                    // An ACK cannot be refused (RFC 3261 §13.2.2.4): end the call instead.
                    tracing::warn!(%call_id, why = %r.warning, "SDP answer in the ACK refused; ending the call");
                    self.hang_up(&call_id, CallEnd::AckAnswerRefused).await;
                    return;
                }
            }
        }
        let Some(d) = self.dialogs.get(&call_id) else {
            return;
        };
        let to = from.other();
        let flow = d.flow;
        let target = match to {
            Leg::Pbx => d.pbx_contact.clone(),
            Leg::Phone => d.phone_contact.clone(),
        };
        if self.forward_to(to, &mut fwd).is_err() {
            return;
        }
        if let Some(target) = target {
            let _ = fwd.set_request_uri(&target);
        }
        self.send_on(to, flow, &fwd).await;
    }

    /// CANCEL (RFC 3261 §9.2): answered 200 at once; the INVITE on the other leg is
    /// cancelled in turn and its 487 travels back as the INVITE's answer.
    pub(super) async fn on_cancel(
        &mut self,
        from: Leg,
        key: TransactionKey,
        cancel: SipMessage,
        flow: FlowId,
    ) {
        let invite = key
            .cancelled_invite()
            .and_then(|k| self.txns.matching(from, &k));
        // A phone may only cancel its own INVITE (same connection).
        let invite = invite
            .filter(|id| from == Leg::Pbx || self.txns.get(*id).is_some_and(|t| t.flow == flow));
        let Some(id) = invite else {
            match from {
                Leg::Phone => self.reply_phone(flow, &cancel, &no_matching_invite()),
                Leg::Pbx => self.refuse_pbx(&cancel, &no_matching_invite()).await,
            }
            return;
        };
        let ok = response_to(&cancel, 200, None, None).ok();
        if let Some(ok) = ok {
            match from {
                Leg::Phone => {
                    let f = self.txns.get(id).map(|t| t.flow).unwrap_or(flow);
                    self.send_phone(f, &ok);
                }
                Leg::Pbx => {
                    self.send_pbx(&ok).await;
                }
            }
        }
        let (answered, forwarded, txn_flow) = match self.txns.get(id) {
            Some(t) => (t.answered, t.forwarded.clone(), t.flow),
            None => return,
        };
        if answered {
            return;
        }
        let Some(Ok(cancel_out)) = forwarded.as_ref().map(cancel_for) else {
            return;
        };
        // Counted as "cancelled" when the 487 comes back.
        self.start_edge_request(from.other(), cancel_out, txn_flow)
            .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The `outcome` labels of `pbx_edge_calls_total` for answered calls, as the README's
    /// metric table and the dashboard name them: a label must not change with the code.
    #[test]
    fn call_end_labels_are_the_documented_outcomes() {
        let cases = [
            (CallEnd::Bye(Leg::Phone), "bye"),
            (CallEnd::Bye(Leg::Pbx), "bye"),
            (CallEnd::MediaTimeout, "media_timeout"),
            (CallEnd::ConnectionLost, "connection_lost"),
            (CallEnd::Drain, "shutdown"),
            (CallEnd::DialogGone, "dialog_gone"),
            (CallEnd::AckAnswerRefused, "ended"),
            (CallEnd::OfferRefused, "ended"),
            (CallEnd::AnswerRefused, "ended"),
            (CallEnd::InviteFailed, "ended"),
            (CallEnd::NoAnswer, "ended"),
        ];
        for (end, label) in cases {
            assert_eq!(end.label(), label, "{end:?}");
        }
    }

    /// The edge hangs up a leg itself only when that leg cannot know the call is over: the
    /// phone's connection is gone (the PBX gets a BYE), the media stopped, the drain ran out,
    /// or an ACK carried an answer the edge had to refuse.
    #[test]
    fn the_edge_sends_bye_only_where_no_one_else_ends_the_call() {
        assert_eq!(CallEnd::ConnectionLost.byes(), (true, false));
        for end in [
            CallEnd::MediaTimeout,
            CallEnd::Drain,
            CallEnd::AckAnswerRefused,
        ] {
            assert_eq!(end.byes(), (true, true), "{end:?}");
        }
        for end in [
            CallEnd::Bye(Leg::Phone),
            CallEnd::Bye(Leg::Pbx),
            CallEnd::DialogGone,
            CallEnd::OfferRefused,
            CallEnd::AnswerRefused,
            CallEnd::InviteFailed,
            CallEnd::NoAnswer,
        ] {
            assert_eq!(end.byes(), (false, false), "{end:?}");
        }
    }
}
