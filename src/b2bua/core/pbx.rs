//! Requests from the PBX: the same grammar and single-header checks as phones, then the
//! phone they are for (the flow token in the edge Contact, else the registered AOR) and the
//! rewrite toward it (Via, Request-URI, the edge as Contact, the offer's SDP with the edge's
//! SRTP keys). Owns no state of its own: it reads the registrar and updates the dialogs and
//! subscriptions.

use super::dialog::{first_contact, no_such_call, CallEnd};
use super::{check_request, Leg, SipCore};
use crate::b2bua::authorize as authz;
use crate::b2bua::refusal::Refusal;
use crate::b2bua::subscriptions;
use crate::sip::flow_token::FlowToken;
use crate::sip::message::{Method, SipMessage};
use crate::sip::uri::SipUri;
use crate::transaction::key::TransactionKey;
use crate::transport::flow::FlowId;
use crate::transport::rate::BudgetKey;
use tokio::time::Instant;

impl SipCore {
    pub(super) async fn on_pbx_message(&mut self, m: SipMessage) {
        if m.is_request() {
            self.on_pbx_request(m).await
        } else {
            self.on_response(Leg::Pbx, m).await
        }
    }

    pub(super) async fn on_pbx_request(&mut self, m: SipMessage) {
        let method = m.method();
        self.metrics
            .requests
            .with_label_values(&["pbx", method.map(|m| m.as_str()).unwrap_or("other")])
            .inc();
        if let Err(e) = check_request(&m) {
            let r = Refusal::malformed(e.label(), format!("malformed request: {e}"));
            self.refuse_pbx(&m, &r).await;
            return;
        }
        // The PBX gets the same single-header rule as phones: a PBX bug must not hand a
        // phone an ambiguous identity either.
        if let Err(r) = authz::repeated_header(&m) {
            self.refuse_pbx(&m, &r).await;
            return;
        }
        let Some(method) = method else {
            self.refuse_pbx(&m, &unknown_method()).await;
            return;
        };
        if let Ok(key) = TransactionKey::server(&m) {
            if let Some(id) = self.txns.matching(Leg::Pbx, &key) {
                let events = self.txns.on_message(id, Leg::Pbx, m);
                self.drive(events).await;
                return;
            }
            if method == Method::Cancel {
                self.on_cancel(Leg::Pbx, key, m, FlowId(0)).await;
                return;
            }
        }
        if method == Method::Ack {
            self.forward_2xx_ack(Leg::Pbx, m).await;
            return;
        }
        match self.prepare_for_phone(&m, method).await {
            Ok((req, flow)) => {
                if method == Method::Bye {
                    let call_id = m.call_id().unwrap_or_default().to_owned();
                    self.hang_up(&call_id, CallEnd::Bye(Leg::Pbx)).await;
                }
                let events = self.txns.start(Leg::Pbx, m, req, flow, None);
                self.drive(events).await;
            }
            Err(r) => self.refuse_pbx(&m, &r).await,
        }
    }

    /// The PBX's request as it goes to the phone, and that phone's flow: the edge's Via on
    /// top, the phone's own Contact as Request-URI, the edge as Contact, the offer's SDP.
    async fn prepare_for_phone(
        &mut self,
        m: &SipMessage,
        method: Method,
    ) -> Result<(SipMessage, FlowId), Refusal> {
        // Which phone? The edge Contact's flow token, else the AOR user (static setups).
        let (flow, contact) = self.target_of(m)?;
        let mut req = m.clone();
        self.forward_to(Leg::Phone, &mut req)?;
        if let Err(e) = req.set_request_uri(&contact) {
            return Err(Refusal::answer(
                500,
                "cannot_restore_request_uri",
                format!("cannot restore the Request-URI: {e}"),
            ));
        }
        let call_id = m.call_id().unwrap_or_default().to_owned();
        let cseq = m.cseq().map(|c| c.seq).unwrap_or(0);
        if let Some(d) = self.dialogs.get_mut(&call_id) {
            d.pbx_cseq = d.pbx_cseq.max(cseq);
        }
        if method == Method::Notify && m.to_tag().ok().flatten().is_some() {
            self.notify_from_pbx(m, &call_id, flow);
        }
        if method == Method::Invite {
            // Toward the phone the edge is the remote target; the PBX's stays in the dialog.
            req.set_contacts(&[self.phone_side_contact()]);
            self.pbx_offer(m, &mut req, flow, first_contact(m)).await?;
            return Ok((req, flow));
        }
        if req.header("Contact").is_some() {
            req.set_contacts(&[self.phone_side_contact()]);
        }
        if method == Method::Update && !m.body().is_empty() && self.dialogs.contains_key(&call_id) {
            self.pbx_offer(m, &mut req, flow, None).await?;
        }
        if method == Method::Prack && !m.body().is_empty() {
            self.prack_sdp(Leg::Pbx, m, &mut req).await?;
        }
        Ok((req, flow))
    }

    /// A NOTIFY inside a subscription dialog sets it up, refreshes it or ends it (RFC 6665
    /// §4.1.3).
    fn notify_from_pbx(&mut self, m: &SipMessage, call_id: &str, flow: FlowId) {
        if subscriptions::terminated(m.header("Subscription-State")) {
            if let (Ok(Some(a)), Ok(Some(b))) = (m.from_tag(), m.to_tag()) {
                self.subscriptions.forget(call_id, &a, &b);
            }
        } else {
            self.learn_subscription(m, flow);
        }
    }

    /// The SDP of an INVITE from the PBX: leases relay ports, rewrites RTP/AVP → RTP/SAVP
    /// with the edge's keys.
    async fn pbx_offer(
        &mut self,
        m: &SipMessage,
        req: &mut SipMessage,
        flow: FlowId,
        pbx_contact: Option<SipUri>,
    ) -> Result<(), Refusal> {
        let call_id = m.call_id().unwrap_or_default().to_owned();
        let in_dialog = m.to_tag().ok().flatten().is_some();
        if !self.dialogs.contains_key(&call_id) {
            if in_dialog {
                return Err(no_such_call());
            }
            let Some(phone) = self.flows.get(flow).map(|f| f.identity) else {
                return Err(phone_gone());
            };
            let owner = BudgetKey::of(&phone, flow);
            if let Err(e) = self.call_allowed(owner) {
                tracing::info!(%flow, identity = %phone, "call from the PBX refused: the device has sip.max_calls_per_device calls");
                return Err(e);
            }
            self.start_call(&call_id, m, Leg::Pbx, flow, owner, &phone);
        } else if let (Some(d), Some(c)) = (self.dialogs.get_mut(&call_id), pbx_contact) {
            d.pbx_contact = Some(c);
        }
        self.offer_sdp(&call_id, Leg::Pbx, m.body(), req, in_dialog)
            .await
    }

    /// The phone flow and Contact a PBX request is for.
    fn target_of(&self, m: &SipMessage) -> Result<(FlowId, SipUri), Refusal> {
        // RFC 5626 §5.3: the flow this Contact named has failed.
        let flow_gone = || Refusal::answer(430, "flow_gone", "the phone's flow is gone");
        let uri = m
            .request_uri()
            .map_err(|_| Refusal::answer(400, "bad_request_uri", "bad Request-URI"))?;
        let user = uri.user().unwrap_or_default().to_owned();
        match FlowToken::decode(&user, &self.token_key) {
            Ok(token) => {
                let flow = FlowId(token.flow);
                let Some(binding) = self.registrar.get(token.binding) else {
                    return Err(flow_gone());
                };
                if binding.flow != flow || self.flows.get(flow).is_none() {
                    return Err(flow_gone());
                }
                Ok((flow, binding.contact.clone()))
            }
            Err(_) if user.is_empty() => Err(Refusal::answer(
                404,
                "request_uri_without_user",
                "no user in the Request-URI",
            )),
            Err(_) => {
                let now = Instant::now().into_std();
                match self.registrar.lookup_aor(&user, now) {
                    Some(b) if self.flows.get(b.flow).is_some() => Ok((b.flow, b.contact.clone())),
                    _ => Err(Refusal::answer(
                        480,
                        "not_registered",
                        "no phone is registered for this user",
                    )),
                }
            }
        }
    }
}

/// 501 for a method the edge does not know (RFC 3261 §8.2.1).
pub(super) fn unknown_method() -> Refusal {
    Refusal::answer(501, "unknown_method", "method not supported by the edge")
}

/// 480 for a request whose phone's connection closed (RFC 3261 §21.4.18).
pub(super) fn phone_gone() -> Refusal {
    Refusal::answer(
        480,
        "phone_connection_closed",
        "the phone's connection closed",
    )
}
