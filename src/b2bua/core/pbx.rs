//! Requests from the PBX: the same grammar and single-header checks as phones, then the
//! phone they are for (the flow token in the edge Contact, else the registered AOR) and the
//! rewrite toward it (Via, Request-URI, the edge as Contact, the offer's SDP with the edge's
//! SRTP keys).

use super::dialog::{CallEnd, Dialog, NewCall};
use super::{check_request, Leg, SipCore};
use crate::b2bua::authorize as authz;
use crate::b2bua::legs::forward_request;
use crate::b2bua::subscriptions;
use crate::sip::flow_token::FlowToken;
use crate::sip::message::{ContactList, MessageError, Method, SipMessage};
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
            self.metrics
                .malformed
                .with_label_values(&["pbx", e.label()])
                .inc();
            if method != Some(Method::Ack) {
                self.reply_pbx(&m, 400, Some(&format!("malformed request: {e}")))
                    .await;
            }
            return;
        }
        // The PBX gets the same single-header rule as phones: a PBX bug must not hand a
        // phone an ambiguous identity either.
        if let Err(r) = authz::repeated_header(&m) {
            self.metrics
                .malformed
                .with_label_values(&["pbx", r.label])
                .inc();
            if method != Some(Method::Ack) {
                if let Some(reply) = self.refusal(&m, r.status, &r.warning, r.retry_after) {
                    self.send_pbx(&reply).await;
                }
            }
            return;
        }
        let Some(method) = method else {
            self.reply_pbx(&m, 501, Some("method not supported by the edge"))
                .await;
            return;
        };
        if let Ok(key) = TransactionKey::server(&m) {
            if let Some(id) = self.txns.matching(Leg::Pbx, &key) {
                let events = self.txns.on_request(id, Leg::Pbx, m);
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
        // Which phone? The edge Contact's flow token, else the AOR user (static setups).
        let (flow, contact) = match self.target_of(&m) {
            Ok(t) => t,
            Err((status, why)) => {
                self.reply_pbx(&m, status, Some(why)).await;
                return;
            }
        };
        let mut req = m.clone();
        let names_edge = |u: &SipUri| self.names_edge(u);
        match forward_request(&mut req, &self.phone_via(), names_edge) {
            Ok(()) => {}
            Err(MessageError::TooManyHops) => {
                self.reply_pbx(&m, 483, None).await;
                return;
            }
            Err(e) => {
                self.reply_pbx(&m, 400, Some(&format!("cannot forward: {e}")))
                    .await;
                return;
            }
        }
        if let Err(e) = req.set_request_uri(&contact) {
            self.reply_pbx(
                &m,
                500,
                Some(&format!("cannot restore the Request-URI: {e}")),
            )
            .await;
            return;
        }
        let call_id = m.call_id().unwrap_or_default().to_owned();
        let cseq = m.cseq().map(|c| c.seq).unwrap_or(0);
        if let Some(d) = self.dialogs.get_mut(&call_id) {
            d.pbx_cseq = d.pbx_cseq.max(cseq);
        }
        if method == Method::Notify && m.to_tag().ok().flatten().is_some() {
            let state = m.header("Subscription-State");
            if subscriptions::terminated(state) {
                if let (Ok(Some(a)), Ok(Some(b))) = (m.from_tag(), m.to_tag()) {
                    self.subscriptions.forget(&call_id, &a, &b);
                }
            } else {
                self.learn_subscription(&m, flow);
            }
        }
        if method == Method::Invite {
            // Toward the phone the edge is the remote target; the PBX's stays in the dialog.
            let pbx_contact = match m.contacts() {
                Ok(ContactList::Addrs(a)) => a.into_iter().next().map(|a| a.uri),
                _ => None,
            };
            req.set_contacts(&[self.phone_side_contact()]);
            if let Err((status, why)) = self.pbx_offer(&m, &mut req, flow, pbx_contact).await {
                self.reply_pbx(&m, status, Some(&why)).await;
                return;
            }
        } else {
            if req.header("Contact").is_some() {
                req.set_contacts(&[self.phone_side_contact()]);
            }
            if method == Method::Update
                && !m.body().is_empty()
                && self.dialogs.contains_key(&call_id)
            {
                if let Err((status, why)) = self.pbx_offer(&m, &mut req, flow, None).await {
                    self.reply_pbx(&m, status, Some(&why)).await;
                    return;
                }
            }
            if method == Method::Prack && !m.body().is_empty() {
                if let Err((status, why, retry)) = self.prack_sdp(Leg::Pbx, &m, &mut req).await {
                    if let Some(r) = self.refusal(&m, status, &why, retry) {
                        self.send_pbx(&r).await;
                    }
                    return;
                }
            }
        }
        if method == Method::Bye {
            self.hang_up(&call_id, CallEnd::Bye(Leg::Pbx)).await;
        }
        self.start_txn(Leg::Pbx, m, req, flow, None).await;
    }

    /// The SDP of an INVITE from the PBX: leases relay ports, rewrites RTP/AVP → RTP/SAVP
    /// with the edge's keys.
    pub(super) async fn pbx_offer(
        &mut self,
        m: &SipMessage,
        req: &mut SipMessage,
        flow: FlowId,
        pbx_contact: Option<SipUri>,
    ) -> Result<(), (u16, String)> {
        let call_id = m.call_id().unwrap_or_default().to_owned();
        let in_dialog = m.to_tag().ok().flatten().is_some();
        if !self.dialogs.contains_key(&call_id) {
            if in_dialog {
                return Err((481, "no such call".into()));
            }
            let Some(phone) = self.flows.get(flow).map(|f| f.identity) else {
                return Err((480, "the phone's connection closed".into()));
            };
            let owner = BudgetKey::of(&phone, flow);
            if let Err(e) = self.call_allowed(owner) {
                tracing::info!(%flow, identity = %phone, "call from the PBX refused: the device has sip.max_calls_per_device calls");
                return Err(e);
            }
            let call = NewCall {
                flow,
                owner,
                identity: phone.to_string(),
                session_ids: (self.session_id(), self.session_id()),
                accept_unannounced_unencrypted_srtcp: self
                    .settings
                    .accept_unannounced_unencrypted_srtcp,
            };
            let d = Dialog::new(m, Leg::Pbx, call);
            self.dialogs.insert(call_id.clone(), d);
            self.publish_calls();
            self.metrics.calls_started.with_label_values(&["pbx"]).inc();
        } else if let (Some(d), Some(c)) = (self.dialogs.get_mut(&call_id), pbx_contact) {
            d.pbx_contact = Some(c);
        }
        self.offer_sdp(&call_id, Leg::Pbx, m.body(), req, in_dialog)
            .await
    }

    /// The phone flow and Contact a PBX request is for.
    pub(super) fn target_of(
        &self,
        m: &SipMessage,
    ) -> Result<(FlowId, SipUri), (u16, &'static str)> {
        let uri = m.request_uri().map_err(|_| (400, "bad Request-URI"))?;
        let user = uri.user().unwrap_or_default().to_owned();
        match FlowToken::decode(&user, &self.token_key) {
            Ok(token) => {
                let flow = FlowId(token.flow);
                let Some(binding) = self.registrar.get(token.binding) else {
                    // RFC 5626 §5.3: the flow this Contact named has failed.
                    return Err((430, "the phone's flow is gone"));
                };
                if binding.flow != flow || self.flows.get(flow).is_none() {
                    return Err((430, "the phone's flow is gone"));
                }
                Ok((flow, binding.contact.clone()))
            }
            Err(_) if user.is_empty() => Err((404, "no user in the Request-URI")),
            Err(_) => {
                let now = Instant::now().into_std();
                match self.registrar.lookup_aor(&user, now) {
                    Some(b) if self.flows.get(b.flow).is_some() => Ok((b.flow, b.contact.clone())),
                    _ => Err((480, "no phone is registered for this user")),
                }
            }
        }
    }
}
