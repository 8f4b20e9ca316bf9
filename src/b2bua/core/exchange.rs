//! The core's side of the offer/answer bookkeeping in `b2bua::offer_answer`: SDP in PRACKs
//! and in responses to INVITE, UPDATE and PRACK is classified there (offer, answer, repeat,
//! stray, refused) and rewritten here through the same `offer_sdp` / `answer_sdp` as every
//! other body, so the media plan and the SRTP context rules are the same.

use super::{Leg, SipCore, TxnId};
use crate::b2bua::offer_answer::{rack_invite_cseq, Carrier, SdpRole};
use crate::sip::message::SipMessage;

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
