//! Responses: matched to their transaction on the leg they arrived on, mapped (Vias restored,
//! Contacts behind flow tokens or the edge, SDP rewritten, REGISTER bindings confirmed) and
//! relayed to the other leg; and the answers the edge gives itself when a leg fails (408,
//! 480, 503). Owns no state of its own: it updates the dialogs and the registrar.

use super::dialog::CallEnd;
use super::transactions::TxnId;
use super::{check_response, Leg, SipCore};
use crate::b2bua::authorize as authz;
use crate::b2bua::legs::{host_of, restore_vias};
use crate::b2bua::offer_answer::{is_reliable_provisional, Carrier};
use crate::b2bua::refusal::Refusal;
use crate::sip::flow_token::FlowToken;
use crate::sip::message::{ContactList, Method, SipMessage};
use crate::sip::response::cancel_for;
use crate::sip::uri::{NameAddr, Via};
use crate::transaction::fsm::Termination;
use crate::transaction::key::TransactionKey;
use crate::transport::flow::FlowId;
use std::time::Duration;
use tokio::time::Instant;

impl SipCore {
    pub(super) async fn on_response(&mut self, leg: Leg, resp: SipMessage) {
        if let Err(e) = check_response(&resp) {
            self.metrics
                .malformed
                .with_label_values(&[leg.label(), e.label()])
                .inc();
            return;
        }
        // A response is never answered (RFC 3261 §8.1.3.3): one with a repeated single-valued
        // header is dropped and counted, on either leg.
        if let Err(r) = authz::repeated_header(&resp) {
            self.metrics
                .malformed
                .with_label_values(&[leg.label(), r.label])
                .inc();
            return;
        }
        let Ok(key) = TransactionKey::client_for_response(&resp) else {
            return;
        };
        let Some(id) = self.txns.matching(leg, &key) else {
            // An edge is not a stateless proxy: stray responses are never forwarded.
            self.metrics
                .dropped
                .with_label_values(&[leg.label(), "no_transaction"])
                .inc();
            return;
        };
        let events = self.txns.on_message(id, leg, resp);
        self.drive(events).await;
    }

    /// A response arrived on the client leg `leg`: map it and send it to the other leg.
    pub(super) async fn relay_response(&mut self, id: TxnId, leg: Leg, mut resp: SipMessage) {
        let Some(status) = resp.status() else { return };
        // 100 Trying is hop-by-hop (each server transaction sent its own).
        if status == 100 {
            return;
        }
        let (from, method, flow, call_id, vias) = match self.txns.get(id) {
            Some(t) => (
                t.from,
                t.method,
                t.flow,
                t.call_id.clone(),
                t.received.vias().unwrap_or_default(),
            ),
            None => return,
        };
        let Some(back) = from else { return }; // an edge-originated request: ends here
        let relayed = Relayed {
            id,
            leg,
            back,
            method,
            flow,
            call_id,
        };
        if method == Method::Register && leg == Leg::Pbx {
            self.register_response(id, &mut resp, status);
        }
        // A 2xx to INVITE for a call the edge no longer has (its 2xx was refused, or it
        // crossed the call's end): it is never relayed — the other side would get a dialog
        // the edge cannot serve, with unrewritten SDP and Contact — but ACKed (and hung up).
        if method == Method::Invite
            && (200..300).contains(&status)
            && !self.dialogs.contains_key(&relayed.call_id)
        {
            self.metrics
                .dropped
                .with_label_values(&[leg.label(), "2xx_without_call"])
                .inc();
            tracing::info!(call_id = %relayed.call_id, leg = leg.label(), "2xx for a call the edge no longer has: ACKed and hung up, not relayed");
            self.ack_and_bye(&resp, leg, flow).await;
            return;
        }
        let call_id = relayed.call_id.as_str();
        let sdp = match method {
            Method::Invite | Method::Update => {
                self.invite_response(call_id, method, leg, &mut resp, status, flow)
                    .await
            }
            Method::Prack => {
                self.prack_response(id, call_id, leg, &mut resp, status)
                    .await
            }
            _ => Ok(()),
        };
        if let Err(refusal) = sdp {
            if !self
                .refuse_relayed_sdp(&relayed, status, &refusal, &mut resp)
                .await
            {
                return;
            }
        }
        // What is sent from here on (the refusal replaces the response).
        let status = resp.status().unwrap_or(status);
        self.relay_to_origin(&relayed, status, &vias, resp).await;
    }

    /// The SDP in a response was refused: the origin gets the refusal instead, and the call
    /// the response belonged to ends on the leg it came from. False: the transaction is gone.
    async fn refuse_relayed_sdp(
        &mut self,
        r: &Relayed,
        status: u16,
        refusal: &Refusal,
        resp: &mut SipMessage,
    ) -> bool {
        tracing::warn!(call_id = %r.call_id, code = refusal.status, why = %refusal.warning, "answer SDP refused");
        self.count_refusal(r.leg, refusal);
        let Some(t) = self.txns.get(r.id) else {
            return false;
        };
        let req = t.received.clone();
        let forwarded = t.forwarded.clone();
        let Some(answer) = self.refusal_response(&req, refusal) else {
            return true;
        };
        let refused = std::mem::replace(resp, answer);
        // A refused 1xx (e.g. an unusable offer in a 1xx-rel) ends the INVITE on the
        // origin's leg: cancel it on the other leg too (its 487 ends the call).
        if r.method == Method::Invite && status < 200 {
            if let Some(Ok(cancel)) = forwarded.as_ref().map(cancel_for) {
                self.start_edge_request(r.leg, cancel, r.flow).await;
            }
        }
        // A refused 2xx to an initial INVITE: that leg's dialog exists all the same, so the
        // edge ACKs it and hangs up at once (RFC 3261 §13.2.2.4); the call is over on both
        // legs.
        if r.method == Method::Invite
            && (200..300).contains(&status)
            && self.dialogs.get(&r.call_id).is_some_and(|d| !d.established)
        {
            self.metrics
                .calls_ended
                .with_label_values(&["failed"])
                .inc();
            self.hang_up(&r.call_id, CallEnd::AnswerRefused).await;
            self.ack_and_bye(&refused, r.leg, r.flow).await;
        }
        true
    }

    /// Sends the mapped response (`status` is its final status) through the origin's server
    /// transaction.
    async fn relay_to_origin(
        &mut self,
        r: &Relayed,
        status: u16,
        vias: &[Via],
        mut resp: SipMessage,
    ) {
        let (leg, method, flow) = (r.leg, r.method, r.flow);
        // 481 to a request inside an established call: that side no longer has the dialog (a
        // PBX that restarted and lost its state). The requester gets the 481 and ends the
        // dialog itself (RFC 3261 §12.2.1.2; RFC 5057 §5.6: 481 ends the INVITE usage), so
        // the edge releases the call and its media now instead of at the media timeout.
        if status == 481
            && matches!(
                method,
                Method::Invite | Method::Update | Method::Info | Method::Prack
            )
            && self.dialogs.get(&r.call_id).is_some_and(|d| d.established)
        {
            tracing::info!(call_id = %r.call_id, leg = leg.label(), %method, "481 inside the call: the other side lost the dialog");
            self.hang_up(&r.call_id, CallEnd::DialogGone).await;
        }
        if matches!(method, Method::Subscribe | Method::Refer) && (200..300).contains(&status) {
            self.learn_subscription(&resp, flow);
        }
        if leg == Leg::Phone && method != Method::Invite && method != Method::Update {
            self.hide_phone_contacts(&mut resp, flow);
        }
        if leg == Leg::Phone {
            self.rewrite_response_identity(&mut resp, flow);
        }
        resp.remove_header("Record-Route");
        restore_vias(&mut resp, vias);
        if status >= 200 {
            if let Some(t) = self.txns.get_mut(r.id) {
                t.answered = true;
            }
        }
        let ok_to_invite = method == Method::Invite && (200..300).contains(&status);
        // Our 2xx to an INVITE from the PBX is repeated over UDP until the ACK.
        if ok_to_invite && r.back == Leg::Pbx && !self.pbx.is_reliable() {
            self.txns.repeat_2xx(r.id, resp.clone());
        }
        let Some(events) = self.txns.send_response(r.id, r.back, resp.clone()) else {
            return;
        };
        if events.is_empty() && ok_to_invite {
            // A repeated 2xx after the server transaction accepted the first: send it as is
            // (the other side re-ACKs, RFC 6026 §8.4).
            self.send_on(r.back, flow, &resp).await;
        }
        self.drive(events).await;
    }

    /// Media and dialog work for a response to an INVITE or UPDATE (`leg` = where it came
    /// from).
    async fn invite_response(
        &mut self,
        call_id: &str,
        method: Method,
        leg: Leg,
        resp: &mut SipMessage,
        status: u16,
        flow: FlowId,
    ) -> Result<(), Refusal> {
        let cseq = resp.cseq().map(|c| c.seq).unwrap_or(0);
        let Some(d) = self.dialogs.get_mut(call_id) else {
            return Ok(());
        };
        let invite = method == Method::Invite;
        if invite && (200..300).contains(&status) && leg == Leg::Pbx {
            if let Some((seq, cached)) = &d.last_2xx_to_phone {
                if *seq == cseq {
                    *resp = cached.clone();
                    return Ok(());
                }
            }
        }
        if status >= 300 {
            if invite && !d.established {
                let outcome = match status {
                    487 => "cancelled",
                    // Digest challenges are normal: the phone retries with credentials.
                    401 | 407 => "challenged",
                    _ => "failed",
                };
                self.metrics.calls_ended.with_label_values(&[outcome]).inc();
                self.hang_up(call_id, CallEnd::InviteFailed).await;
            } else {
                // A failed re-INVITE or UPDATE keeps the previous session (RFC 3261 §14.1,
                // RFC 3311 §5.2).
                d.offer = None;
            }
            return Ok(());
        }
        if !resp.body().is_empty() {
            let (carrier, completes) = if invite {
                let require = resp.header_values("Require");
                let reliable = is_reliable_provisional(status, &require, resp.header("RSeq"));
                (Carrier::InviteResponse { status, reliable }, Some(cseq))
            } else {
                (Carrier::UpdateOrPrackResponse, None)
            };
            self.response_sdp(call_id, leg, carrier, completes, resp)
                .await?;
        }
        self.take_remote_target(call_id, leg, flow, resp);
        if invite && (200..300).contains(&status) {
            let Some(d) = self.dialogs.get_mut(call_id) else {
                return Ok(());
            };
            if let Some(setup) = d.answered(leg, cseq, resp) {
                self.metrics.setup_seconds.observe(setup.as_secs_f64());
                self.metrics
                    .calls_ended
                    .with_label_values(&["answered"])
                    .inc();
            }
        }
        Ok(())
    }

    /// The Contact of a response from `leg` inside a call is that leg's remote target (RFC
    /// 3261 §12.1.1). Toward the phone the edge is the target; a phone's Contact hides behind
    /// a flow token toward the PBX.
    fn take_remote_target(&mut self, call_id: &str, leg: Leg, flow: FlowId, resp: &mut SipMessage) {
        let phone_side_contact = self.phone_side_contact();
        let Some(d) = self.dialogs.get_mut(call_id) else {
            return;
        };
        let contact = match resp.contacts() {
            Ok(ContactList::Addrs(a)) => a.into_iter().next(),
            _ => None,
        };
        let Some(c) = contact else {
            return;
        };
        match leg {
            Leg::Pbx => {
                d.pbx_contact = Some(c.uri);
                resp.set_contacts(&[phone_side_contact]);
            }
            Leg::Phone => {
                d.phone_contact = Some(c.uri.clone());
                let aor = resp.to_user().ok().flatten().unwrap_or_default();
                let identity = d.identity.clone();
                let binding = self
                    .registrar
                    .binding_for(flow, &c.uri, &aor, &identity, true);
                let edge = self.edge_contact(flow, binding);
                resp.set_contacts(&[NameAddr {
                    display_name: c.display_name,
                    uri: edge,
                    params: c.params,
                }]);
            }
        }
    }

    /// A phone's response to a PBX request: its own Contacts (a dialog's remote target, e.g. a
    /// 200 to SUBSCRIBE) become edge Contacts carrying a flow token, so the PBX never sees the
    /// phone's address and in-dialog requests come back through its flow.
    pub(super) fn hide_phone_contacts(&mut self, resp: &mut SipMessage, flow: FlowId) {
        let Ok(ContactList::Addrs(addrs)) = resp.contacts() else {
            return;
        };
        if addrs.is_empty() {
            return;
        }
        let aor = resp.to_user().ok().flatten().unwrap_or_default();
        let identity = self
            .flows
            .get(flow)
            .map(|f| f.identity.to_string())
            .unwrap_or_default();
        let mapped: Vec<NameAddr> = addrs
            .into_iter()
            .map(|a| {
                let binding = self
                    .registrar
                    .binding_for(flow, &a.uri, &aor, &identity, true);
                NameAddr {
                    display_name: a.display_name,
                    uri: self.edge_contact(flow, binding),
                    params: a.params,
                }
            })
            .collect();
        resp.set_contacts(&mapped);
    }

    /// A response to a relayed REGISTER from the PBX: bindings and Contacts.
    pub(super) fn register_response(&mut self, id: TxnId, resp: &mut SipMessage, status: u16) {
        let Some(reg) = self.txns.get(id).and_then(|t| t.register.as_ref()) else {
            return;
        };
        let ids = reg.bindings.clone();
        let wildcard = reg.wildcard;
        let aor = reg.aor.clone();
        if (200..300).contains(&status) {
            let now = Instant::now().into_std();
            let default_expires = resp.expires().ok().flatten().unwrap_or(3600);
            let listed = match resp.contacts() {
                Ok(ContactList::Addrs(a)) => a,
                _ => Vec::new(),
            };
            if wildcard {
                self.registrar.remove_aor(&aor);
            }
            let mut out = Vec::with_capacity(listed.len());
            let mut confirmed = Vec::new();
            for mut c in listed {
                let user = c.uri.user().unwrap_or_default().to_owned();
                match FlowToken::decode(&user, &self.token_key) {
                    Ok(token) => {
                        let Some(original) =
                            self.registrar.get(token.binding).map(|b| b.contact.clone())
                        else {
                            continue; // a binding of a flow that is gone: the PBX expires it
                        };
                        if ids.contains(&token.binding) {
                            let expires = c.expires().unwrap_or(default_expires);
                            self.registrar.confirm(token.binding, expires, now);
                            confirmed.push(token.binding);
                        }
                        c.uri = original;
                        out.push(c);
                    }
                    Err(_) => out.push(c),
                }
            }
            for b in &ids {
                if !confirmed.contains(b) {
                    self.registrar.release(*b);
                }
            }
            if !out.is_empty() {
                resp.set_contacts(&out);
            }
            if let Some(request) = self.txns.get(id).map(|t| &t.received) {
                confirm_outbound(request, resp, self.settings.flow_timer_secs);
            }
            self.publish();
        } else if status == 401 || status == 407 {
            // Keep the bindings so the authenticated retry presents the same edge Contact.
            let until = Instant::now().into_std() + Duration::from_secs(60);
            self.registrar.hold_pending(&ids, until);
        } else if status >= 300 {
            self.registrar.drop_pending(&ids);
        }
    }

    /// Answers the originating side of `id` itself (the other side cannot).
    pub(super) async fn answer_origin(&mut self, id: TxnId, r: &Refusal) {
        let (from, req) = match self.txns.get(id) {
            Some(t) if !t.answered => match t.from {
                Some(f) => (f, t.received.clone()),
                None => return,
            },
            _ => return,
        };
        let Some(resp) = self.refusal_response(&req, r) else {
            return;
        };
        if let Some(t) = self.txns.get_mut(id) {
            t.answered = true;
        }
        if req.method() == Some(Method::Invite) {
            let call_id = req.call_id().unwrap_or_default().to_owned();
            if self.dialogs.get(&call_id).is_some_and(|d| !d.established) {
                self.metrics
                    .calls_ended
                    .with_label_values(&["failed"])
                    .inc();
                self.hang_up(&call_id, CallEnd::NoAnswer).await;
            }
        }
        if let Some(events) = self.txns.send_response(id, from, resp) {
            self.drive(events).await;
        }
    }

    pub(super) async fn terminated(&mut self, id: TxnId, leg: Leg, why: Termination) {
        let origin = self.txns.get(id).and_then(|t| t.from);
        self.txns.end_leg(id, leg);
        // The client leg gave up before any final answer: answer the origin ourselves.
        if Some(leg) != origin && why != Termination::Completed {
            self.metrics
                .timeouts
                .with_label_values(&[leg.label()])
                .inc();
            let r = match (leg, why) {
                (Leg::Pbx, Termination::TransportError) => {
                    Refusal::answer(503, "pbx_unreachable", "the PBX cannot be reached")
                }
                (Leg::Pbx, _) => Refusal::answer(408, "pbx_timeout", "the PBX did not answer"),
                (Leg::Phone, Termination::TransportError) => {
                    Refusal::answer(480, "phone_unreachable", "the phone cannot be reached")
                }
                (Leg::Phone, _) => {
                    Refusal::answer(408, "phone_timeout", "the phone did not answer")
                }
            };
            self.answer_origin(id, &r).await;
        }
        self.txns.remove_if_finished(id);
    }

    /// `sip.identity_headers` on a phone's response toward the PBX
    /// (`authorize::rewrite_response_identity_headers`), each removed header counted.
    pub(super) fn rewrite_response_identity(&self, resp: &mut SipMessage, flow: FlowId) {
        let user = self
            .flows
            .get(flow)
            .and_then(|f| authz::response_user(resp, &f.identity, self.snapshot().inventory()));
        let domain = host_of(self.pbx.pbx_addr().ip());
        for name in authz::rewrite_response_identity_headers(
            resp,
            user.as_deref(),
            self.settings.identity_headers,
            &domain,
        ) {
            self.metrics
                .headers_removed
                .with_label_values(&[name])
                .inc();
        }
    }
}

/// What relaying a response needs to know about its transaction.
struct Relayed {
    id: TxnId,
    /// The leg the response came from.
    leg: Leg,
    /// The leg the request came from, where the response goes.
    back: Leg,
    method: Method,
    flow: FlowId,
    call_id: String,
}

/// RFC 5626 §6: a phone that registers a flow (a Contact with `reg-id` and `+sip.instance` in
/// its REGISTER) and says `Supported: outbound` learns from `Require: outbound` in the 2xx that
/// its flow is kept — the edge keeps it: requests reach the phone on its own connection,
/// whatever the PBX knows of outbound (Asterisk echoes neither parameter) — and from
/// `Flow-Timer` (§5.4) how often to send its CRLF keep-alives, which the edge answers. Without
/// them phones (baresip, for one) treat the registrar as not supporting outbound and send no
/// keep-alives at all. A phone that did not list `outbound` in Supported gets neither
/// (RFC 3261 §20.32: no Require for an extension the client did not offer).
fn confirm_outbound(request: &SipMessage, resp: &mut SipMessage, flow_timer_secs: u64) {
    let lists = |m: &SipMessage, header: &str| {
        m.header_values(header)
            .iter()
            .flat_map(|v| v.split(','))
            .any(|tag| tag.trim().eq_ignore_ascii_case("outbound"))
    };
    let has_flow = match request.contacts() {
        Ok(ContactList::Addrs(contacts)) => contacts
            .iter()
            .any(|c| c.params.contains("reg-id") && c.params.contains("+sip.instance")),
        _ => false,
    };
    if !lists(request, "Supported") || !has_flow {
        return;
    }
    if !lists(resp, "Require") {
        resp.append_header("Require", "outbound");
    }
    resp.set_header("Flow-Timer", &flow_timer_secs.to_string());
}
