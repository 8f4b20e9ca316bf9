//! Requests from phones: the checks every one passes (grammar, repeated headers, the
//! device's request budget, MAC authorization), then the rewrite toward the PBX (Via,
//! Request-URI, identity headers, Contacts behind flow tokens, the offer's SDP). Owns no
//! state of its own: it reads and updates the registrar, the dialogs and the rate limiter.

use super::dialog::{no_such_call, CallEnd, KnownDialogView};
use super::pbx::{phone_gone, unknown_method};
use super::transactions::RegisterCtx;
use super::{check_request, Leg, SipCore, MAX_CONTACTS};
use crate::b2bua::authorize::{self as authz, Allowed, PhoneRequest, Verdict};
use crate::b2bua::legs::host_of;
use crate::b2bua::refusal::{Counter, Refusal};
use crate::b2bua::registrar::MAX_REGISTER_BINDINGS_PER_FLOW;
use crate::sip::message::{ContactList, Method, SipMessage};
use crate::sip::uri::NameAddr;
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
            self.answer_origin(id, &phone_gone()).await;
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
            let r = Refusal::malformed(e.label(), format!("malformed request: {e}"));
            self.refuse_phone(&m, method, &r);
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
            self.refuse_phone(&m, None, &unknown_method());
            return;
        };
        if let Ok(key) = TransactionKey::server(&m.message) {
            if let Some(id) = self.txns.matching(Leg::Phone, &key) {
                if self.txns.leg_over(id, Leg::Phone) {
                    // The branch of a transaction whose phone side is over (its PBX side
                    // still absorbs retransmissions): a branch names one transaction (RFC
                    // 3261 §8.1.1.7), so this is neither a retransmission nor a new request.
                    // Not forwarded, not answered (a reply could not be matched either),
                    // counted.
                    self.metrics
                        .dropped
                        .with_label_values(&[Leg::Phone.label(), "stale_branch"])
                        .inc();
                    tracing::debug!(flow = ?m.flow, %method, "request reusing a finished transaction's branch dropped");
                    return;
                }
                // A retransmission, or the ACK of a non-2xx final response (§17.2.1).
                let events = self.txns.on_message(id, Leg::Phone, m.message);
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
        self.count_refusal(Leg::Phone, r);
        // Malformed requests (the repeated-header check runs before the budget), ACKs (never
        // budgeted) and requests the edge cannot carry out (`Counter::Response`, some before
        // the budget) are logged at debug: a flood of them must not become a log flood. They
        // are counted all the same.
        if matches!(r.counter, Counter::Malformed | Counter::Response)
            || method == Some(Method::Ack)
        {
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
        self.reply_phone(m.flow, &m.message, r);
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
        let retry_after = self.rate_limiter.retry_after_secs(key, now);
        let r = Refusal::answer(
            503,
            "rate_limited",
            "too many requests from this device (sip.phone_requests_per_second)",
        )
        .with_retry_after(retry_after);
        if let Some(resp) = self.refusal_response(&m.message, &r) {
            self.send_phone(m.flow, &resp);
        }
        false
    }

    /// Forwards an authorized phone request to the PBX, or answers it with the refusal that
    /// stopped it on the way.
    pub(super) async fn forward_from_phone(
        &mut self,
        m: PhoneMessage,
        method: Method,
        allowed: Allowed,
    ) {
        match self.prepare_for_pbx(&m, method, &allowed).await {
            Ok((req, register)) => {
                if method == Method::Bye {
                    let call_id = m.message.call_id().unwrap_or_default().to_owned();
                    self.hang_up(&call_id, CallEnd::Bye(Leg::Phone)).await;
                }
                let events = self
                    .txns
                    .start(Leg::Phone, m.message, req, m.flow, register);
                self.drive(events).await;
            }
            Err(r) => self.refuse_phone(&m, Some(method), &r),
        }
    }

    /// The request as it goes to the PBX (routing, Contacts, SDP), and for a REGISTER the
    /// bindings it asks for.
    async fn prepare_for_pbx(
        &mut self,
        m: &PhoneMessage,
        method: Method,
        allowed: &Allowed,
    ) -> Result<(SipMessage, Option<RegisterCtx>), Refusal> {
        let mut req = self.route_to_pbx(m, allowed)?;
        let call_id = m.message.call_id().unwrap_or_default().to_owned();
        let in_dialog = m.message.to_tag().ok().flatten().is_some();
        let register = self.hide_request_contacts(m, method, &call_id, &mut req)?;
        // Offers: INVITE, and UPDATE with a body (RFC 3311) inside a known call.
        let offer = method == Method::Invite
            || (method == Method::Update
                && !m.message.body().is_empty()
                && self.dialogs.contains_key(&call_id));
        if offer {
            self.phone_offer(m, &mut req, in_dialog).await?;
        }
        if method == Method::Prack && !m.message.body().is_empty() {
            self.prack_sdp(Leg::Phone, &m.message, &mut req).await?;
        }
        Ok((req, register))
    }

    /// The phone's request with the edge's Via on top (RFC 3261 §16.6), the identity headers
    /// rewritten, and a Request-URI naming the edge replaced by the PBX's target.
    fn route_to_pbx(&mut self, m: &PhoneMessage, allowed: &Allowed) -> Result<SipMessage, Refusal> {
        let mut req = m.message.clone();
        self.forward_to(Leg::Pbx, &mut req)?;
        self.rewrite_identity(&mut req, allowed);
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
        Ok(req)
    }

    /// The phone's Contacts become edge Contacts carrying a flow token (each a binding), so
    /// the PBX never sees the phone's address; for a REGISTER, the bindings it asks for.
    fn hide_request_contacts(
        &mut self,
        m: &PhoneMessage,
        method: Method,
        call_id: &str,
        req: &mut SipMessage,
    ) -> Result<Option<RegisterCtx>, Refusal> {
        let flow = m.flow;
        let addrs = match req.contacts() {
            Ok(ContactList::Wildcard) if method == Method::Register => {
                return Ok(Some(RegisterCtx {
                    aor: req.to_user().ok().flatten().unwrap_or_default(),
                    bindings: Vec::new(),
                    wildcard: true,
                }));
            }
            Ok(ContactList::Wildcard) => {
                return Err(Refusal::answer(
                    400,
                    "wildcard_contact",
                    "Contact * is only allowed in REGISTER",
                ));
            }
            Ok(ContactList::Addrs(addrs)) if addrs.len() > MAX_CONTACTS => {
                return Err(Refusal::answer(
                    400,
                    "too_many_contacts",
                    format!("more than {MAX_CONTACTS} Contacts"),
                ));
            }
            Ok(ContactList::Addrs(addrs)) => addrs,
            Err(e) => {
                return Err(Refusal::answer(
                    400,
                    "bad_contact",
                    format!("bad Contact: {e}"),
                ));
            }
        };
        if method == Method::Register
            && self
                .registrar
                .register_bindings_after(flow, &addrs.iter().map(|a| &a.uri).collect::<Vec<_>>())
                > MAX_REGISTER_BINDINGS_PER_FLOW
        {
            return Err(Refusal::forbidden(
                "too_many_bindings",
                format!(
                    "more than {MAX_REGISTER_BINDINGS_PER_FLOW} registered Contacts on this connection"
                ),
            ));
        }
        if addrs.is_empty() {
            return Ok(None);
        }
        let identity = m.identity.to_string();
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
                if let Some(d) = self.dialogs.get_mut(call_id) {
                    d.phone_contact = Some(a.uri.clone());
                }
            }
            // Header params (expires, q, +sip.instance, reg-id) stay; the phone's URI
            // (address, transport=tls, ob) hides behind the token.
            mapped.push(NameAddr {
                display_name: a.display_name,
                uri: self.edge_contact(flow, id),
                params: a.params,
            });
        }
        req.set_contacts(&mapped);
        Ok((method == Method::Register).then_some(RegisterCtx {
            aor,
            bindings,
            wildcard: false,
        }))
    }

    /// The SDP of an INVITE from a phone: leases relay ports, rewrites RTP/SAVP → RTP/AVP.
    pub(super) async fn phone_offer(
        &mut self,
        m: &PhoneMessage,
        req: &mut SipMessage,
        in_dialog: bool,
    ) -> Result<(), Refusal> {
        let call_id = m.message.call_id().unwrap_or_default().to_owned();
        if !self.dialogs.contains_key(&call_id) {
            if in_dialog {
                return Err(no_such_call());
            }
            let owner = BudgetKey::of(&m.identity, m.flow);
            if let Err(e) = self.call_allowed(owner) {
                tracing::info!(flow = %m.flow, identity = %m.identity, "call refused: the device has sip.max_calls_per_device calls");
                return Err(e);
            }
            self.start_call(&call_id, &m.message, Leg::Phone, m.flow, owner, &m.identity);
        }
        self.offer_sdp(&call_id, Leg::Phone, m.message.body(), req, in_dialog)
            .await
    }
}
