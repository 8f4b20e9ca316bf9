//! Requests from phones: the checks every one passes (grammar, repeated headers, the
//! device's request budget, MAC authorization), then the rewrite toward the PBX (Via,
//! Request-URI, identity headers, Contacts behind flow tokens, the offer's SDP). Owns no
//! state of its own: it reads and updates the registrar, the dialogs and the rate limiter.

use super::dialog::{CallEnd, Dialog, KnownDialogView, NewCall};
use super::transactions::RegisterCtx;
use super::{check_request, Leg, SipCore, MAX_CONTACTS};
use crate::b2bua::authorize::{self as authz, Allowed, PhoneRequest, Verdict};
use crate::b2bua::legs::{forward_request, host_of};
use crate::b2bua::refusal::{Counter, Refusal};
use crate::b2bua::registrar::MAX_REGISTER_BINDINGS_PER_FLOW;
use crate::sip::message::{ContactList, MessageError, Method, SipMessage};
use crate::sip::uri::{NameAddr, SipUri};
use crate::transaction::key::TransactionKey;
use crate::transport::connection::{PhoneEvent, PhoneMessage};
use crate::transport::flow::FlowId;
use crate::transport::rate::{Admission, BudgetKey};
use tokio::time::Instant;

impl SipCore {
    pub(super) async fn on_phone_event(&mut self, ev: PhoneEvent) {
        match ev {
            PhoneEvent::Opened(_) => {}
            PhoneEvent::Closed(flow) => self.on_flow_closed(flow).await,
            PhoneEvent::Unparseable {
                flow,
                identity,
                response,
            } => {
                let key = BudgetKey::of(&identity, flow);
                if self.charge_reply(key) {
                    self.metrics
                        .responses
                        .with_label_values(&["phone", "400"])
                        .inc();
                    if let Err(e) = self.flows.send(flow, response) {
                        tracing::debug!(%flow, error = %e, "400 to a phone not queued");
                    }
                }
            }
            PhoneEvent::Message(m) => {
                if m.message.is_request() {
                    self.on_phone_request(m).await
                } else {
                    self.on_response(Leg::Phone, m.message).await
                }
            }
        }
    }

    pub(super) async fn on_flow_closed(&mut self, flow: FlowId) {
        self.registrar.remove_flow(flow);
        self.rate_limiter.forget_flow(flow);
        // Requests waiting for this phone: it will never answer.
        for id in self.txns.waiting_on_phone(flow) {
            self.answer_origin(id, 480, Some("the phone's connection closed"))
                .await;
        }
        // Calls on this flow end: BYE to the PBX for established ones (DESIGN.md).
        let calls: Vec<String> = self
            .dialogs
            .iter()
            .filter(|(_, d)| d.flow == flow)
            .map(|(c, _)| c.clone())
            .collect();
        for call_id in calls {
            self.hang_up(&call_id, CallEnd::ConnectionLost).await;
        }
        self.publish();
    }

    pub(super) async fn on_phone_request(&mut self, m: PhoneMessage) {
        let method = m.message.method();
        self.metrics
            .requests
            .with_label_values(&["phone", method.map(|m| m.as_str()).unwrap_or("other")])
            .inc();
        if let Err(e) = check_request(&m.message) {
            self.metrics
                .malformed
                .with_label_values(&["phone", e.label()])
                .inc();
            if method != Some(Method::Ack) {
                self.reply_phone(
                    m.flow,
                    &m.message,
                    400,
                    Some(&format!("malformed request: {e}")),
                );
            }
            return;
        }
        // Two From (or To, Call-ID, CSeq...) headers: which one counts would be the reader's
        // accident (`authorize::repeated_header`). Before transaction matching, so no copy of
        // such a message goes anywhere.
        if let Err(r) = authz::repeated_header(&m.message) {
            self.refuse_phone(&m, method, &r);
            return;
        }
        let Some(method) = method else {
            self.reply_phone(
                m.flow,
                &m.message,
                501,
                Some("method not supported by the edge"),
            );
            return;
        };
        if let Ok(key) = TransactionKey::server(&m.message) {
            if let Some(id) = self.txns.matching(Leg::Phone, &key) {
                // A retransmission, or the ACK of a non-2xx final response (§17.2.1).
                let events = self.txns.on_request(id, Leg::Phone, m.message);
                self.drive(events).await;
                return;
            }
            if method == Method::Cancel {
                self.on_cancel(Leg::Phone, key, m.message, m.flow).await;
                return;
            }
        }
        // Only new transactions draw from the budget: retransmissions, CANCEL and ACK were
        // handled above or cost nothing, and a BYE of a live call is free too — refusing it
        // would keep the call and its media ports up. Refusals below are charged.
        let ends_a_call = method == Method::Bye
            && m.message
                .call_id()
                .is_ok_and(|c| self.dialogs.contains_key(c));
        if method != Method::Ack && !ends_a_call && !self.within_budget(&m) {
            return;
        }
        // Every phone request passes the one authorization (`authorize.rs`); the core only
        // applies its verdict.
        let allowed = match self.verdict(&m, method) {
            Verdict::Allow(a) => a,
            Verdict::Refuse(r) => {
                self.refuse_phone(&m, Some(method), &r);
                return;
            }
        };
        if method == Method::Ack {
            let mut ack = m.message;
            self.rewrite_identity(&mut ack, &allowed);
            self.forward_2xx_ack(Leg::Phone, ack).await;
            return;
        }
        self.forward_from_phone(m, method, allowed).await;
    }

    /// The authorization verdict for a phone request against the current inventory and the
    /// dialogs the edge relays.
    pub(super) fn verdict(&self, m: &PhoneMessage, method: Method) -> Verdict {
        let snapshot = self.snapshot();
        let request = PhoneRequest {
            message: &m.message,
            method,
            identity: &m.identity,
            peer: m.peer.ip(),
            flow: m.flow,
        };
        let known = KnownDialogView {
            calls: &self.dialogs,
            subscriptions: &self.subscriptions,
            now: Instant::now().into_std(),
        };
        authz::authorize(&request, snapshot.inventory(), &known)
    }

    /// Applies a refusal of a phone request: counted, logged, answered (an ACK never is,
    /// RFC 3261 §17.1.1.3) within the device's budget like every response the edge composes
    /// ([`Self::send_reply_phone`]).
    pub(super) fn refuse_phone(&mut self, m: &PhoneMessage, method: Option<Method>, r: &Refusal) {
        match r.counter {
            Counter::Malformed => self
                .metrics
                .malformed
                .with_label_values(&["phone", r.label]),
            Counter::Denied => self.metrics.denied.with_label_values(&[r.label]),
            Counter::Dropped => self.metrics.dropped.with_label_values(&["phone", r.label]),
        }
        .inc();
        // Malformed requests (the repeated-header check runs before the budget) and ACKs
        // (never budgeted) are logged at debug: a flood of them must not become a log flood.
        // They are counted all the same.
        if r.counter == Counter::Malformed || method == Some(Method::Ack) {
            tracing::debug!(identity = %m.identity, peer = %m.peer, flow = %m.flow, status = r.status, reason = r.label, "phone request refused");
        } else {
            tracing::info!(
                identity = %m.identity,
                peer = %m.peer,
                flow = %m.flow,
                method = method.map(|m| m.as_str()).unwrap_or("other"),
                status = r.status,
                reason = r.label,
                warning = %r.warning,
                "phone request refused"
            );
        }
        if method == Some(Method::Ack) {
            return;
        }
        if let Some(reply) = self.refusal(&m.message, r.status, &r.warning, r.retry_after) {
            self.send_reply_phone(m.flow, &reply);
        }
    }

    /// `sip.identity_headers` on an allowed request (`authorize::rewrite_identity_headers`),
    /// each removed header counted.
    pub(super) fn rewrite_identity(&self, req: &mut SipMessage, allowed: &Allowed) {
        let domain = host_of(self.pbx.pbx_addr().ip());
        for name in
            authz::rewrite_identity_headers(req, allowed, self.settings.identity_headers, &domain)
        {
            self.metrics
                .headers_removed
                .with_label_values(&[name])
                .inc();
        }
    }

    /// Charges a new request to its device's budget; over budget it is answered 503 with
    /// Retry-After (RFC 3261 §21.5.4) while the budget can pay for that response too, and
    /// dropped (counted) once it cannot; either way it goes no further.
    pub(super) fn within_budget(&mut self, m: &PhoneMessage) -> bool {
        let key = BudgetKey::of(&m.identity, m.flow);
        let now = Instant::now().into_std();
        let Admission::Refused { first, .. } = self.rate_limiter.admit(key, now) else {
            return true;
        };
        self.metrics.rate_limited.inc();
        if first {
            // Once per episode, not per request: a flood must not become a log flood.
            tracing::warn!(
                identity = %m.identity,
                peer = %m.peer,
                flow = %m.flow,
                "phone exceeds sip.phone_requests_per_second; answering 503 until it slows down"
            );
        }
        // The 503 is charged like every response the edge composes (it may take the budget
        // into debt); Retry-After says when a request is admitted again, that charge included.
        if !self.charge_reply(key) {
            return false;
        }
        if let Some(mut r) = self.response(
            &m.message,
            503,
            Some("too many requests from this device (sip.phone_requests_per_second)"),
        ) {
            let retry_after = self.rate_limiter.retry_after_secs(key, now);
            r.set_header("Retry-After", &retry_after.to_string());
            self.send_phone(m.flow, &r);
        }
        false
    }

    pub(super) async fn forward_from_phone(
        &mut self,
        m: PhoneMessage,
        method: Method,
        allowed: Allowed,
    ) {
        let flow = m.flow;
        let mut req = m.message.clone();
        let names_edge = |u: &SipUri| self.names_edge(u);
        match forward_request(&mut req, &self.pbx_via(), names_edge) {
            Ok(()) => {}
            Err(MessageError::TooManyHops) => {
                self.reply_phone(flow, &m.message, 483, None);
                return;
            }
            Err(e) => {
                self.reply_phone(flow, &m.message, 400, Some(&format!("cannot forward: {e}")));
                return;
            }
        }
        self.rewrite_identity(&mut req, &allowed);
        let call_id = m.message.call_id().unwrap_or_default().to_owned();
        let cseq = m.message.cseq().map(|c| c.seq).unwrap_or(0);
        let in_dialog = m.message.to_tag().ok().flatten().is_some();
        // In-dialog requests sent to the edge's Contact go to the PBX's target.
        if let Some(d) = self.dialogs.get_mut(&call_id) {
            d.phone_cseq = d.phone_cseq.max(cseq);
            if in_dialog {
                if let (Some(target), Ok(ruri)) = (d.pbx_contact.clone(), req.request_uri()) {
                    if self.names_edge(&ruri) {
                        let _ = req.set_request_uri(&target);
                    }
                }
            }
        }
        // A Request-URI naming the edge (`sip:200@sbc.test;transport=tls`) names the PBX on
        // the PBX leg: same user, the PBX's address, no phone-side transport.
        if let Ok(mut ruri) = req.request_uri() {
            if self.names_edge(&ruri) {
                let pbx = self.pbx.pbx_addr();
                ruri.host = host_of(pbx.ip());
                ruri.port = Some(pbx.port());
                ruri.params.remove("transport");
                let _ = req.set_request_uri(&ruri);
            }
        }
        let identity = m.identity.to_string();
        let mut register = None;
        match req.contacts() {
            Ok(ContactList::Wildcard) if method == Method::Register => {
                register = Some(RegisterCtx {
                    aor: req.to_user().ok().flatten().unwrap_or_default(),
                    bindings: Vec::new(),
                    wildcard: true,
                });
            }
            Ok(ContactList::Wildcard) => {
                self.reply_phone(
                    flow,
                    &m.message,
                    400,
                    Some("Contact * is only allowed in REGISTER"),
                );
                return;
            }
            Ok(ContactList::Addrs(addrs)) if addrs.len() > MAX_CONTACTS => {
                self.reply_phone(
                    flow,
                    &m.message,
                    400,
                    Some(&format!("more than {MAX_CONTACTS} Contacts")),
                );
                return;
            }
            Ok(ContactList::Addrs(addrs))
                if method == Method::Register
                    && self.registrar.register_bindings_after(
                        flow,
                        &addrs.iter().map(|a| &a.uri).collect::<Vec<_>>(),
                    ) > MAX_REGISTER_BINDINGS_PER_FLOW =>
            {
                tracing::info!(
                    identity = %identity,
                    peer = %m.peer,
                    "REGISTER refused: more than {MAX_REGISTER_BINDINGS_PER_FLOW} registered Contacts on one connection"
                );
                self.metrics
                    .denied
                    .with_label_values(&["too_many_bindings"])
                    .inc();
                self.reply_phone(
                    flow,
                    &m.message,
                    403,
                    Some(&format!(
                        "more than {MAX_REGISTER_BINDINGS_PER_FLOW} registered Contacts on this connection"
                    )),
                );
                return;
            }
            Ok(ContactList::Addrs(addrs)) if !addrs.is_empty() => {
                let aor = if method == Method::Register {
                    req.to_user().ok().flatten()
                } else {
                    req.from_user().ok().flatten()
                }
                .unwrap_or_default();
                let mut mapped = Vec::with_capacity(addrs.len());
                let mut bindings = Vec::new();
                for a in addrs {
                    let id = self.registrar.binding_for(
                        flow,
                        &a.uri,
                        &aor,
                        &identity,
                        method != Method::Register,
                    );
                    bindings.push(id);
                    if method == Method::Invite {
                        if let Some(d) = self.dialogs.get_mut(&call_id) {
                            d.phone_contact = Some(a.uri.clone());
                        }
                    }
                    // Header params (expires, q, +sip.instance, reg-id) stay; the phone's
                    // URI (address, transport=tls, ob) hides behind the token.
                    mapped.push(NameAddr {
                        display_name: a.display_name,
                        uri: self.edge_contact(flow, id),
                        params: a.params,
                    });
                }
                req.set_contacts(&mapped);
                if method == Method::Register {
                    register = Some(RegisterCtx {
                        aor,
                        bindings,
                        wildcard: false,
                    });
                }
            }
            Ok(ContactList::Addrs(_)) => {}
            Err(e) => {
                self.reply_phone(flow, &m.message, 400, Some(&format!("bad Contact: {e}")));
                return;
            }
        }
        // Offers: INVITE, and UPDATE with a body (RFC 3311) inside a known call.
        let offer = method == Method::Invite
            || (method == Method::Update
                && !m.message.body().is_empty()
                && self.dialogs.contains_key(&call_id));
        if offer {
            match self.phone_offer(&m, &mut req, in_dialog).await {
                Ok(()) => {}
                Err((status, why)) => {
                    self.reply_phone(flow, &m.message, status, Some(&why));
                    return;
                }
            }
        }
        if method == Method::Prack && !m.message.body().is_empty() {
            if let Err((status, why, retry)) =
                self.prack_sdp(Leg::Phone, &m.message, &mut req).await
            {
                if let Some(r) = self.refusal(&m.message, status, &why, retry) {
                    self.send_reply_phone(flow, &r);
                }
                return;
            }
        }
        if method == Method::Bye {
            self.hang_up(&call_id, CallEnd::Bye(Leg::Phone)).await;
        }
        self.start_txn(Leg::Phone, m.message, req, flow, register)
            .await;
    }

    /// The SDP of an INVITE from a phone: leases relay ports, rewrites RTP/SAVP → RTP/AVP.
    pub(super) async fn phone_offer(
        &mut self,
        m: &PhoneMessage,
        req: &mut SipMessage,
        in_dialog: bool,
    ) -> Result<(), (u16, String)> {
        let call_id = m.message.call_id().unwrap_or_default().to_owned();
        if !self.dialogs.contains_key(&call_id) {
            if in_dialog {
                return Err((481, "no such call".into()));
            }
            let owner = BudgetKey::of(&m.identity, m.flow);
            if let Err(e) = self.call_allowed(owner) {
                tracing::info!(flow = %m.flow, identity = %m.identity, "call refused: the device has sip.max_calls_per_device calls");
                return Err(e);
            }
            let call = NewCall {
                flow: m.flow,
                owner,
                identity: m.identity.to_string(),
                session_ids: (self.session_id(), self.session_id()),
                accept_unannounced_unencrypted_srtcp: self
                    .settings
                    .accept_unannounced_unencrypted_srtcp,
            };
            let d = Dialog::new(&m.message, Leg::Phone, call);
            self.dialogs.insert(call_id.clone(), d);
            self.publish_calls();
            self.metrics
                .calls_started
                .with_label_values(&["phone"])
                .inc();
        }
        self.offer_sdp(&call_id, Leg::Phone, m.message.body(), req, in_dialog)
            .await
    }
}
