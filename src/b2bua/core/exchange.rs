//! The core's side of the offer/answer bookkeeping in `b2bua::offer_answer`: SDP in PRACKs
//! and in responses to INVITE, UPDATE and PRACK is classified there (offer, answer, repeat,
//! stray, refused) and rewritten here through the same `offer_sdp` / `answer_sdp` as every
//! other body, so the media plan and the SRTP context rules are the same.

use super::dialog::{CallEnd, Dialog};
use super::{CoreSettings, Leg, SipCore, TxnId, PORTS_PER_STREAM};
use crate::b2bua::offer_answer::{rack_invite_cseq, Carrier, SdpRole};
use crate::sdp::{
    analyse_pbx_offer, analyse_phone_offer, rewrite_pbx_answer, rewrite_pbx_offer,
    rewrite_phone_answer, rewrite_phone_offer, KeySource, RewriteContext, RewriteError,
};
use crate::sip::message::SipMessage;
use crate::transport::rate::BudgetKey;
use ring::rand::{SecureRandom, SystemRandom};

impl SipCore {
    /// The SDP in a PRACK from `from` (RFC 3262 §5): the answer to an offer in a reliable
    /// 1xx, or a new offer the PRACK's 2xx answers; rewritten into `req` like any other
    /// offer or answer. `Err` carries the refusal (status, Warning text, Retry-After).
    pub(super) async fn prack_sdp(
        &mut self,
        from: Leg,
        received: &SipMessage,
        req: &mut SipMessage,
    ) -> Result<(), (u16, String, Option<u32>)> {
        let call_id = received.call_id().unwrap_or_default().to_owned();
        let Some(d) = self.dialogs.get(&call_id) else {
            return Err((481, "no such call".into(), None));
        };
        let Some(invite_cseq) = received.header("RAck").and_then(rack_invite_cseq) else {
            return Err((400, "PRACK without a valid RAck".into(), None));
        };
        let pending = d.offer.as_ref().map(|o| o.offered_by);
        let body = received.body();
        let no_retry = |(status, why): (u16, String)| (status, why, None);
        match d.oa.role(Carrier::Prack, from.side(), pending, invite_cseq) {
            SdpRole::Offer => self
                .offer_sdp(&call_id, from, body, req, true)
                .await
                .map_err(no_retry),
            SdpRole::Answer { complete } => {
                let sdp = self
                    .answer_sdp(&call_id, from, body, complete)
                    .await
                    .map_err(no_retry)?;
                req.set_body(sdp, Some("application/sdp"));
                if let Some(d) = self.dialogs.get_mut(&call_id) {
                    d.oa.completed(invite_cseq);
                }
                Ok(())
            }
            SdpRole::Refuse(r) => {
                let (status, why, retry) = r.response();
                Err((status, why.to_owned(), retry))
            }
            SdpRole::Repeat | SdpRole::Strip => {
                req.set_body(Vec::new(), None);
                Ok(())
            }
        }
    }

    /// The SDP in a response from `leg` to INVITE, UPDATE or PRACK, by its place in the
    /// dialog's exchanges (see `offer_answer`). `completes`: the INVITE CSeq an exchange
    /// completed here belongs to (none for UPDATE).
    pub(super) async fn response_sdp(
        &mut self,
        call_id: &str,
        leg: Leg,
        carrier: Carrier,
        completes: Option<u32>,
        resp: &mut SipMessage,
    ) -> Result<(), (u16, String)> {
        let body = resp.body().to_vec();
        let Some(d) = self.dialogs.get(call_id) else {
            return Ok(());
        };
        let pending = d.offer.as_ref().map(|o| o.offered_by);
        let role =
            d.oa.role(carrier, leg.side(), pending, completes.unwrap_or(0));
        match role {
            SdpRole::Offer => {
                // A delayed offer (RFC 3261 §13.2.1) in the 2xx, or the offer in the first
                // reliable 1xx (RFC 3262 §5): the ACK or the PRACK answers.
                self.offer_sdp(call_id, leg, &body, resp, true).await?;
            }
            SdpRole::Answer { complete } => {
                let sdp = self.answer_sdp(call_id, leg, &body, complete).await?;
                resp.set_body(sdp, Some("application/sdp"));
                if let (true, Some(cseq), Some(d)) =
                    (complete, completes, self.dialogs.get_mut(call_id))
                {
                    d.oa.completed(cseq);
                }
            }
            SdpRole::Repeat => match d.oa.last_sent(leg.other().side()) {
                Some(last) => resp.set_body(last.to_vec(), Some("application/sdp")),
                None => resp.set_body(Vec::new(), None),
            },
            SdpRole::Strip => {
                self.metrics
                    .dropped
                    .with_label_values(&[leg.label(), "sdp_outside_offer_answer"])
                    .inc();
                resp.set_body(Vec::new(), None);
            }
            SdpRole::Refuse(r) => {
                let (status, why, _) = r.response();
                return Err((status, why.to_owned()));
            }
        }
        Ok(())
    }

    /// A response answering `req` with `status`, a Warning and optionally a Retry-After.
    pub(super) fn refusal(
        &self,
        req: &SipMessage,
        status: u16,
        why: &str,
        retry_after: Option<u32>,
    ) -> Option<SipMessage> {
        let mut r = self.response(req, status, Some(why))?;
        if let Some(secs) = retry_after {
            r.set_header("Retry-After", &secs.to_string());
        }
        Some(r)
    }

    /// SDP work for a response to a PRACK (`leg` = where it came from): its 2xx answers an
    /// offer the PRACK made (RFC 3262 §5); a failed PRACK withdraws that offer, as a failed
    /// UPDATE does (RFC 3311 §5.2).
    pub(super) async fn prack_response(
        &mut self,
        id: TxnId,
        call_id: &str,
        leg: Leg,
        resp: &mut SipMessage,
        status: u16,
    ) -> Result<(), (u16, String)> {
        let Some(t) = self.txns.get(id) else {
            return Ok(());
        };
        let prack_had_sdp = !t.received.body().is_empty();
        let invite_cseq = t.received.header("RAck").and_then(rack_invite_cseq);
        let Some(d) = self.dialogs.get_mut(call_id) else {
            return Ok(());
        };
        if status >= 300 {
            // The PRACK's body was an offer if its sender's offer is the one pending (an
            // answer would have settled it).
            let sender = leg.other().side();
            if prack_had_sdp && d.offer.as_ref().is_some_and(|o| o.offered_by == sender) {
                d.offer = None;
            }
            return Ok(());
        }
        if resp.body().is_empty() {
            return Ok(());
        }
        if status < 200 {
            // Provisional responses to a non-INVITE request carry no session.
            resp.set_body(Vec::new(), None);
            return Ok(());
        }
        let call_id = call_id.to_owned();
        self.response_sdp(
            &call_id,
            leg,
            Carrier::UpdateOrPrackResponse,
            invite_cseq,
            resp,
        )
        .await
    }
}

impl SipCore {
    /// The SDP offer in a request from `from` (INVITE, re-INVITE, UPDATE): leases relay ports
    /// for its m-lines, rewrites it for the other leg (RTP/SAVP → RTP/AVP from a phone, the
    /// reverse with the edge's keys from the PBX), and puts the result into `req`. A refused
    /// initial offer ends the call.
    pub(super) async fn offer_sdp(
        &mut self,
        call_id: &str,
        from: Leg,
        body: &[u8],
        req: &mut SipMessage,
        in_dialog: bool,
    ) -> Result<(), (u16, String)> {
        if body.is_empty() {
            // Delayed offer (RFC 3261 §13.2.1): the 2xx will carry the offer, the ACK the
            // answer; no media until then.
            return Ok(());
        }
        let pbx_host = self.pbx.pbx_addr().ip();
        let settings = self.settings.clone();
        let Some(owner) = self.dialogs.get(call_id).map(|d| d.owner) else {
            return Err((500, "dialog vanished".into()));
        };
        let held_elsewhere = self.ports_held_elsewhere(owner, call_id);
        let denied = self.metrics.denied.clone();
        let mut keys = OsKeys(&self.rng);
        let Some(d) = self.dialogs.get_mut(call_id) else {
            return Err((500, "dialog vanished".into()));
        };
        let result = async {
            // The rewritten SDP goes to the other leg: that leg's origin versions it. (Each
            // context is dropped before the next await: it holds the non-Send key source.)
            let analysed = {
                let ctx = rewrite_context(&settings, d, from, &mut keys);
                match from {
                    Leg::Phone => {
                        Analysed::Phone(analyse_phone_offer(body, &ctx).map_err(sdp_error)?)
                    }
                    Leg::Pbx => Analysed::Pbx(analyse_pbx_offer(body, &ctx).map_err(sdp_error)?),
                }
            };
            let requests = match &analysed {
                Analysed::Phone(o) => o.port_requests().to_vec(),
                Analysed::Pbx(o) => o.port_requests().to_vec(),
            };
            // `media.max_ports_per_device`, checked before anything is leased: the ports
            // this call would hold after the offer, plus those of the device's other calls.
            let max = settings.max_ports_per_device;
            let held = held_elsewhere
                + d.media.streams_after(&requests) * PORTS_PER_STREAM;
            if held > max {
                denied.with_label_values(&["device_port_limit"]).inc();
                tracing::info!(?owner, held, max, "offer refused: the device would hold more than media.max_ports_per_device relay ports");
                return Err((
                    503,
                    format!("the device would hold {held} of {max} media ports (media.max_ports_per_device)"),
                ));
            }
            let ports = d
                .media
                .ports_for(&self.media, &requests, pbx_host)
                .await
                .map_err(|e| (503, format!("no media ports: {e}")))?;
            let rewritten = {
                let mut ctx = rewrite_context(&settings, d, from, &mut keys);
                match analysed {
                    Analysed::Phone(o) => rewrite_phone_offer(o, &ports, &mut ctx),
                    Analysed::Pbx(o) => rewrite_pbx_offer(o, &ports, &mut ctx),
                }
                .map_err(sdp_error)?
            };
            d.media
                .apply(&rewritten.plan)
                .await
                .map_err(|e| (500, format!("media relay: {e}")))?;
            d.offer = Some(rewritten.plan);
            Ok::<Vec<u8>, (u16, String)>(rewritten.sdp)
        }
        .await;
        match result {
            Ok(sdp) => {
                if let Some(d) = self.dialogs.get_mut(call_id) {
                    d.oa.sent(from.other().side(), &sdp);
                }
                req.set_body(sdp, Some("application/sdp"));
                Ok(())
            }
            Err(e) => {
                if !in_dialog {
                    self.hang_up(call_id, CallEnd::OfferRefused).await;
                    self.metrics
                        .calls_ended
                        .with_label_values(&["refused"])
                        .inc();
                }
                Err(e)
            }
        }
    }

    /// The SDP answer in a message from `from` (a 1xx/2xx, or the ACK after a delayed offer):
    /// rewritten against the pending offer for the other leg; the media relay follows it.
    /// `final_answer` makes it the dialog's session (RFC 3264 §5).
    pub(super) async fn answer_sdp(
        &mut self,
        call_id: &str,
        from: Leg,
        body: &[u8],
        final_answer: bool,
    ) -> Result<Vec<u8>, (u16, String)> {
        let settings = self.settings.clone();
        let mut keys = OsKeys(&self.rng);
        let Some(d) = self.dialogs.get_mut(call_id) else {
            return Err((481, "no such call".into()));
        };
        let Some(offer) = d.offer.clone() else {
            return Err((488, "an SDP answer without an offer".into()));
        };
        let rewritten = {
            let mut ctx = rewrite_context(&settings, d, from, &mut keys);
            match from {
                Leg::Pbx => rewrite_pbx_answer(body, &offer, &mut ctx),
                Leg::Phone => rewrite_phone_answer(body, &offer, &mut ctx),
            }
            .map_err(sdp_error)?
        };
        d.media
            .apply(&rewritten.plan)
            .await
            .map_err(|e| (500, format!("media relay: {e}")))?;
        if final_answer {
            d.plan = Some(rewritten.plan);
            d.offer = None;
        }
        d.oa.sent(from.other().side(), &rewritten.sdp);
        Ok(rewritten.sdp)
    }

    /// Whether `owner` may start another call (`sip.max_calls_per_device`, counted over
    /// all its connections, both directions); otherwise 486 Busy Here (RFC 3261 §21.4.24:
    /// the callee cannot take another call now).
    pub(super) fn call_allowed(&self, owner: BudgetKey) -> Result<(), (u16, String)> {
        let max = self.settings.max_calls_per_device;
        let calls = self.dialogs.values().filter(|d| d.owner == owner).count();
        if calls < max {
            return Ok(());
        }
        self.metrics
            .denied
            .with_label_values(&["device_call_limit"])
            .inc();
        Err((
            486,
            format!("the device has {max} calls already (sip.max_calls_per_device)"),
        ))
    }

    /// Relay ports the calls of `owner` other than `call_id` hold.
    pub(super) fn ports_held_elsewhere(&self, owner: BudgetKey, call_id: &str) -> usize {
        self.dialogs
            .iter()
            .filter(|(c, d)| d.owner == owner && c.as_str() != call_id)
            .map(|(_, d)| d.media.stream_count() * PORTS_PER_STREAM)
            .sum()
    }
}

struct OsKeys<'a>(&'a SystemRandom);

impl KeySource for OsKeys<'_> {
    fn fill(&mut self, out: &mut [u8]) {
        // The OS CSPRNG does not fail once initialised; refuse to continue with a weak key
        // if it ever did.
        if self.0.fill(out).is_err() {
            tracing::error!("OS random generator failed while generating SRTP keys");
            std::process::abort();
        }
    }
}

/// The rewrite context for SDP that came from `from`: the result goes to the other leg, so
/// that leg's origin versions it (RFC 3264 §8); the dialog's last answered plan is the
/// reference for re-offers.
fn rewrite_context<'a>(
    settings: &'a CoreSettings,
    d: &'a mut Dialog,
    from: Leg,
    keys: &'a mut dyn KeySource,
) -> RewriteContext<'a> {
    RewriteContext {
        edge: settings.sdp,
        policy: &settings.srtp,
        origin: match from {
            Leg::Phone => &mut d.pbx_origin,
            Leg::Pbx => &mut d.phone_origin,
        },
        previous: d.plan.as_ref(),
        keys,
    }
}

/// An analysed offer from either side.
enum Analysed {
    Phone(crate::sdp::PhoneOffer),
    Pbx(crate::sdp::PbxOffer),
}

fn sdp_error(e: RewriteError) -> (u16, String) {
    (e.sip_status(), format!("SDP: {e}"))
}
