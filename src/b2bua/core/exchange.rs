//! The offer/answer exchange of a call (RFC 3264): the [`Dialog`] rewrites each offer and
//! answer for the other leg and keeps the media relay in step ([`Dialog::offer`],
//! [`Dialog::answer`]); the core decides where SDP may appear (`b2bua::offer_answer`
//! classifies PRACKs and responses to INVITE, UPDATE and PRACK: offer, answer, repeat,
//! stray, refused) and applies the device's call and port limits.

use super::dialog::{no_such_call, CallEnd, Dialog};
use super::transactions::TxnId;
use super::{CoreSettings, Leg, SipCore, PORTS_PER_STREAM};
use crate::b2bua::offer_answer::{rack_invite_cseq, Carrier, SdpRole};
use crate::b2bua::refusal::{Counter, Refusal};
use crate::media::MediaControl;
use crate::sdp::{
    analyse_pbx_offer, analyse_phone_offer, rewrite_pbx_answer, rewrite_pbx_offer,
    rewrite_phone_answer, rewrite_phone_offer, KeySource, RewriteContext, RewriteError,
};
use crate::sip::message::SipMessage;
use crate::transport::rate::BudgetKey;
use ring::rand::{SecureRandom, SystemRandom};
use std::net::IpAddr;

impl SipCore {
    /// 1xx, or a new offer the PRACK's 2xx answers; rewritten into `req` like any other
    /// offer or answer.
    pub(super) async fn prack_sdp(
        &mut self,
        from: Leg,
        received: &SipMessage,
        req: &mut SipMessage,
    ) -> Result<(), Refusal> {
        let call_id = received.call_id().unwrap_or_default().to_owned();
        let Some(d) = self.dialogs.get(&call_id) else {
            return Err(no_such_call());
        };
        let Some(invite_cseq) = received.header("RAck").and_then(rack_invite_cseq) else {
            return Err(Refusal::answer(
                400,
                "bad_rack",
                "PRACK without a valid RAck",
            ));
        };
        let pending = d.offer.as_ref().map(|o| o.offered_by);
        let body = received.body();
        match d.oa.role(Carrier::Prack, from.side(), pending, invite_cseq) {
            SdpRole::Offer => self.offer_sdp(&call_id, from, body, req, true).await,
            SdpRole::Answer { complete } => {
                let sdp = self.answer_sdp(&call_id, from, body, complete).await?;
                req.set_body(sdp, Some("application/sdp"));
                if let Some(d) = self.dialogs.get_mut(&call_id) {
                    d.oa.completed(invite_cseq);
                }
                Ok(())
            }
            SdpRole::Refuse(r) => Err(r.refusal()),
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
    ) -> Result<(), Refusal> {
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
                // It replaces the other side's response: sent without Retry-After, as the
                // core always has.
                return Err(Refusal {
                    retry_after: None,
                    ..r.refusal()
                });
            }
        }
        Ok(())
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
    ) -> Result<(), Refusal> {
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

    /// The SDP offer in a request from `from` (INVITE, re-INVITE, UPDATE) or in a response
    /// (a delayed offer): rewritten for the other leg into `req` ([`Dialog::offer`]). A
    /// refused initial offer ends the call.
    pub(super) async fn offer_sdp(
        &mut self,
        call_id: &str,
        from: Leg,
        body: &[u8],
        req: &mut SipMessage,
        in_dialog: bool,
    ) -> Result<(), Refusal> {
        if body.is_empty() {
            // Delayed offer (RFC 3261 §13.2.1): the 2xx will carry the offer, the ACK the
            // answer; no media until then.
            return Ok(());
        }
        let Some(owner) = self.dialogs.get(call_id).map(|d| d.owner) else {
            return Err(dialog_vanished());
        };
        let env = MediaEnv {
            settings: &self.settings,
            media: &self.media,
            rng: &self.rng,
            pbx_host: self.pbx.pbx_addr().ip(),
            held_elsewhere: self.ports_held_elsewhere(owner, call_id),
        };
        let Some(d) = self.dialogs.get_mut(call_id) else {
            return Err(dialog_vanished());
        };
        match d.offer(from, body, &env).await {
            Ok(sdp) => {
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

    /// The SDP answer in a message from `from` (a 1xx/2xx, or the ACK after a delayed offer),
    /// rewritten for the other leg ([`Dialog::answer`]).
    pub(super) async fn answer_sdp(
        &mut self,
        call_id: &str,
        from: Leg,
        body: &[u8],
        final_answer: bool,
    ) -> Result<Vec<u8>, Refusal> {
        let env = MediaEnv {
            settings: &self.settings,
            media: &self.media,
            rng: &self.rng,
            pbx_host: self.pbx.pbx_addr().ip(),
            held_elsewhere: 0,
        };
        let Some(d) = self.dialogs.get_mut(call_id) else {
            return Err(no_such_call());
        };
        d.answer(from, body, final_answer, &env).await
    }

    /// Whether `owner` may start another call (`sip.max_calls_per_device`, counted over
    /// all its connections, both directions); otherwise 486 Busy Here (RFC 3261 §21.4.24:
    /// the callee cannot take another call now).
    pub(super) fn call_allowed(&self, owner: BudgetKey) -> Result<(), Refusal> {
        let max = self.settings.max_calls_per_device;
        let calls = self.dialogs.values().filter(|d| d.owner == owner).count();
        if calls < max {
            return Ok(());
        }
        Err(Refusal::new(
            486,
            Counter::Denied,
            "device_call_limit",
            format!("the device has {max} calls already (sip.max_calls_per_device)"),
        ))
    }

    /// Relay ports the calls of `owner` other than `call_id` hold.
    fn ports_held_elsewhere(&self, owner: BudgetKey, call_id: &str) -> usize {
        self.dialogs
            .iter()
            .filter(|(c, d)| d.owner == owner && c.as_str() != call_id)
            .map(|(_, d)| d.media.stream_count() * PORTS_PER_STREAM)
            .sum()
    }
}

/// What rewriting SDP needs besides the dialog: the edge's addresses and SRTP policy, the
/// media relay, the key source, and the ports the device holds in its other calls.
struct MediaEnv<'a> {
    settings: &'a CoreSettings,
    media: &'a MediaControl,
    rng: &'a SystemRandom,
    pbx_host: IpAddr,
    held_elsewhere: usize,
}

impl Dialog {
    /// The SDP offer from `from`: leases relay ports for its m-lines (within
    /// `media.max_ports_per_device`), rewrites it for the other leg (RTP/SAVP → RTP/AVP from
    /// a phone, the reverse with the edge's keys from the PBX), points the relay at it and
    /// keeps it as the pending offer. Returns the SDP for the other leg.
    async fn offer(
        &mut self,
        from: Leg,
        body: &[u8],
        env: &MediaEnv<'_>,
    ) -> Result<Vec<u8>, Refusal> {
        let mut keys = OsKeys(env.rng);
        // The rewritten SDP goes to the other leg: that leg's origin versions it. (Each
        // context is dropped before the next await: it holds the non-Send key source.)
        let analysed = {
            let ctx = self.rewrite_context(env.settings, from, &mut keys);
            match from {
                Leg::Phone => Analysed::Phone(analyse_phone_offer(body, &ctx).map_err(sdp_error)?),
                Leg::Pbx => Analysed::Pbx(analyse_pbx_offer(body, &ctx).map_err(sdp_error)?),
            }
        };
        let requests = match &analysed {
            Analysed::Phone(o) => o.port_requests().to_vec(),
            Analysed::Pbx(o) => o.port_requests().to_vec(),
        };
        // `media.max_ports_per_device`, checked before anything is leased: the ports this
        // call would hold after the offer, plus those of the device's other calls.
        let max = env.settings.max_ports_per_device;
        let held = env.held_elsewhere + self.media.streams_after(&requests) * PORTS_PER_STREAM;
        if held > max {
            let owner = self.owner;
            tracing::info!(?owner, held, max, "offer refused: the device would hold more than media.max_ports_per_device relay ports");
            return Err(Refusal::new(
                503,
                Counter::Denied,
                "device_port_limit",
                format!("the device would hold {held} of {max} media ports (media.max_ports_per_device)"),
            ));
        }
        let ports = self
            .media
            .ports_for(env.media, &requests, env.pbx_host)
            .await
            .map_err(|e| Refusal::answer(503, "no_media_ports", format!("no media ports: {e}")))?;
        let rewritten = {
            let mut ctx = self.rewrite_context(env.settings, from, &mut keys);
            match analysed {
                Analysed::Phone(o) => rewrite_phone_offer(o, &ports, &mut ctx),
                Analysed::Pbx(o) => rewrite_pbx_offer(o, &ports, &mut ctx),
            }
            .map_err(sdp_error)?
        };
        self.media
            .apply(&rewritten.plan)
            .await
            .map_err(relay_error)?;
        self.offer = Some(rewritten.plan);
        self.oa.sent(from.other().side(), &rewritten.sdp);
        Ok(rewritten.sdp)
    }

    /// The SDP answer from `from`: rewritten against the pending offer for the other leg;
    /// the media relay follows it. `final_answer` makes it the dialog's session (RFC 3264
    /// §5).
    async fn answer(
        &mut self,
        from: Leg,
        body: &[u8],
        final_answer: bool,
        env: &MediaEnv<'_>,
    ) -> Result<Vec<u8>, Refusal> {
        let mut keys = OsKeys(env.rng);
        let Some(offer) = self.offer.clone() else {
            return Err(Refusal::answer(
                488,
                "answer_without_offer",
                "an SDP answer without an offer",
            ));
        };
        let rewritten = {
            let mut ctx = self.rewrite_context(env.settings, from, &mut keys);
            match from {
                Leg::Pbx => rewrite_pbx_answer(body, &offer, &mut ctx),
                Leg::Phone => rewrite_phone_answer(body, &offer, &mut ctx),
            }
            .map_err(sdp_error)?
        };
        self.media
            .apply(&rewritten.plan)
            .await
            .map_err(relay_error)?;
        if final_answer {
            self.plan = Some(rewritten.plan);
            self.offer = None;
        }
        self.oa.sent(from.other().side(), &rewritten.sdp);
        Ok(rewritten.sdp)
    }

    /// The rewrite context for SDP that came from `from`: the result goes to the other leg,
    /// so that leg's origin versions it (RFC 3264 §8); the last answered plan is the
    /// reference for re-offers.
    fn rewrite_context<'a>(
        &'a mut self,
        settings: &'a CoreSettings,
        from: Leg,
        keys: &'a mut dyn KeySource,
    ) -> RewriteContext<'a> {
        RewriteContext {
            edge: settings.sdp,
            policy: &settings.srtp,
            origin: match from {
                Leg::Phone => &mut self.pbx_origin,
                Leg::Pbx => &mut self.phone_origin,
            },
            previous: self.plan.as_ref(),
            keys,
        }
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

/// An analysed offer from either side.
enum Analysed {
    Phone(crate::sdp::PhoneOffer),
    Pbx(crate::sdp::PbxOffer),
}

/// An SDP the edge cannot rewrite: 400 or 488 by what is wrong with it (`RewriteError`).
fn sdp_error(e: RewriteError) -> Refusal {
    Refusal::answer(e.sip_status(), e.label(), format!("SDP: {e}"))
}

/// The media relay refused a plan.
fn relay_error(e: impl std::fmt::Display) -> Refusal {
    Refusal::answer(500, "media_relay", format!("media relay: {e}"))
}

/// 500 for a call that ended while its request was being handled.
fn dialog_vanished() -> Refusal {
    Refusal::answer(500, "dialog_vanished", "dialog vanished")
}
