//! Where an SDP body sits in a dialog's offer/answer exchanges, for the bodies whose role
//! depends on what came before: responses to INVITE, UPDATE and PRACK, and PRACK itself.
//! PURE: the SIP core asks, rewrites through `sdp` and reports back.
//!
//! The exchanges SIP allows (RFC 6337 §2.2, Table 1):
//!
//! ```text
//!   offer                 answer                     RFC
//!   INVITE                2xx INVITE (1xx-rel too)   3261 §13.2.1, 3262 §5
//!   2xx INVITE            ACK                        3261 §13.2.1
//!   INVITE                1xx-rel                    3262 §5
//!   1xx-rel               PRACK                      3262 §5
//!   PRACK                 200 PRACK                  3262 §5
//!   UPDATE                2xx UPDATE                 3311 §5
//! ```
//!
//! Once an exchange has completed inside an INVITE transaction, SDP in later responses to
//! that INVITE is no new offer: "the UAC MUST treat the first session description it
//! receives as the answer, and MUST ignore any session descriptions in subsequent responses
//! to the initial INVITE" (RFC 3261 §13.2.1). The edge then repeats the SDP it last sent
//! on that leg, so the receiver sees the same session it already negotiated.

use super::refusal::Refusal;
use crate::sdp::Side;

/// The message an SDP body came in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Carrier {
    /// A 1xx or 2xx to an INVITE; `reliable` for a reliable provisional response (RFC 3262:
    /// `Require: 100rel` and an `RSeq`).
    InviteResponse { status: u16, reliable: bool },
    /// A 2xx to an UPDATE or a PRACK.
    UpdateOrPrackResponse,
    /// A PRACK request.
    Prack,
}

/// What to do with the body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SdpRole {
    /// A new offer: rewrite it for the other leg and lease (or keep) relay ports.
    Offer,
    /// The answer to the pending offer of the other leg. `complete`: the exchange ends here
    /// and its plan becomes the dialog's session; otherwise (an unreliable 1xx, RFC 3261
    /// §13.2.1) the 2xx still brings the answer that counts.
    Answer { complete: bool },
    /// A repetition the receiver must ignore (a retransmitted 1xx-rel, SDP in the 2xx after
    /// an exchange completed in a reliable 1xx or PRACK): send the edge's last SDP for that
    /// leg again, never the other leg's SDP unrewritten.
    Repeat,
    /// SDP where no exchange allows one (an offer in an unreliable 1xx, SDP in a 2xx to an
    /// UPDATE or PRACK that offered nothing): forwarded without the body, counted.
    Strip,
    /// Refused: the request is answered with this status and never forwarded.
    Refuse(SdpRefusal),
}

/// Why a PRACK's SDP is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SdpRefusal {
    /// The sender's own offer is still unanswered, so it may not offer again (RFC 3264 §4).
    /// Answered 500 with a Retry-After, as RFC 3311 §5.2 does for UPDATE and RFC 3261 §14.2
    /// for an overlapping INVITE: the request may succeed once the answer has arrived.
    OfferPending,
}

impl SdpRefusal {
    /// The edge's answer: status, Warning text and the Retry-After seconds to send with it.
    pub fn refusal(self) -> Refusal {
        match self {
            SdpRefusal::OfferPending => Refusal::answer(
                500,
                "offer_pending",
                "an SDP offer while the sender's previous offer is unanswered",
            )
            .with_retry_after(retry_after_secs()),
        }
    }
}

/// RFC 3261 §14.2 asks for a value between 0 and 10 seconds; a fixed middle value keeps
/// this module free of randomness (the retry is the sender's, not a race to break).
fn retry_after_secs() -> u32 {
    5
}

/// The offer/answer notes of one dialog.
#[derive(Debug, Default)]
pub struct OfferAnswer {
    /// The CSeq of the INVITE inside whose transaction an exchange completed (answer in a
    /// 1xx-rel, a PRACK, the 2xx or the ACK).
    completed_in_invite: Option<u32>,
    /// The last SDP the edge sent on each leg (for [`SdpRole::Repeat`]).
    to_phone: Option<Vec<u8>>,
    to_pbx: Option<Vec<u8>>,
}

impl OfferAnswer {
    /// The role of an SDP body that came from `from` in `carrier`. `pending` is the side
    /// whose offer awaits its answer; `invite_cseq` the CSeq of the INVITE the carrier belongs
    /// to (the response's CSeq, or the RAck's for a PRACK).
    pub fn role(
        &self,
        carrier: Carrier,
        from: Side,
        pending: Option<Side>,
        invite_cseq: u32,
    ) -> SdpRole {
        let completed = self.completed_in_invite == Some(invite_cseq);
        match carrier {
            Carrier::InviteResponse { status, reliable } => match pending {
                Some(offerer) if offerer != from => Answer {
                    complete: status >= 200 || reliable,
                },
                // The responder's own offer (a retransmitted 1xx-rel before its PRACK, a
                // 2xx repeated before the ACK) is still waiting for its answer.
                Some(_) => Repeat,
                None if completed => Repeat,
                // No offer in the INVITE: the first reliable response offers (RFC 3262 §5,
                // RFC 3261 §13.2.1 delayed offer).
                None if status >= 200 || reliable => Offer,
                None => Strip,
            },
            Carrier::UpdateOrPrackResponse => match pending {
                Some(offerer) if offerer != from => Answer { complete: true },
                _ => Strip,
            },
            Carrier::Prack => match pending {
                // The answer to an offer in a 1xx-rel (RFC 3262 §5).
                Some(offerer) if offerer != from => Answer { complete: true },
                Some(_) => Refuse(SdpRefusal::OfferPending),
                // A new offer, answered in the PRACK's 2xx (RFC 3262 §5).
                None => Offer,
            },
        }
    }

    /// An exchange completed inside the transaction of the INVITE with `invite_cseq`.
    pub fn completed(&mut self, invite_cseq: u32) {
        self.completed_in_invite = Some(invite_cseq);
    }

    /// The edge sent `sdp` on the `to` leg.
    pub fn sent(&mut self, to: Side, sdp: &[u8]) {
        let slot = match to {
            Side::Phone => &mut self.to_phone,
            Side::Pbx => &mut self.to_pbx,
        };
        *slot = Some(sdp.to_vec());
    }

    /// The SDP the edge last sent on the `to` leg.
    pub fn last_sent(&self, to: Side) -> Option<&[u8]> {
        match to {
            Side::Phone => self.to_phone.as_deref(),
            Side::Pbx => self.to_pbx.as_deref(),
        }
    }
}

use SdpRole::{Answer, Offer, Refuse, Repeat, Strip};

/// A reliable provisional response (RFC 3262 §3): a 101..199 carrying `Require: 100rel`
/// and an `RSeq`.
pub fn is_reliable_provisional(status: u16, require: &[&str], rseq: Option<&str>) -> bool {
    (101..200).contains(&status)
        && rseq.is_some_and(|r| r.trim().parse::<u32>().is_ok())
        && require
            .iter()
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case("100rel"))
}

/// The CSeq number of the INVITE a PRACK acknowledges, from its `RAck: <rseq> <cseq>
/// <method>` (RFC 3262 §7.2); `None` unless the method is INVITE and both numbers parse.
pub fn rack_invite_cseq(rack: &str) -> Option<u32> {
    let mut parts = rack.split_whitespace();
    let _rseq: u32 = parts.next()?.parse().ok()?;
    let cseq: u32 = parts.next()?.parse().ok()?;
    let method = parts.next()?;
    (method.eq_ignore_ascii_case("INVITE") && parts.next().is_none()).then_some(cseq)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PHONE: Side = Side::Phone;
    const PBX: Side = Side::Pbx;

    fn rel(status: u16) -> Carrier {
        Carrier::InviteResponse {
            status,
            reliable: true,
        }
    }

    fn unrel(status: u16) -> Carrier {
        Carrier::InviteResponse {
            status,
            reliable: false,
        }
    }

    #[test]
    fn offer_in_invite_answered_in_a_reliable_1xx_then_repeated_in_the_2xx() {
        let mut oa = OfferAnswer::default();
        // The phone offered in the INVITE (CSeq 1); the PBX's 183 answers reliably.
        assert_eq!(
            oa.role(rel(183), PBX, Some(PHONE), 1),
            Answer { complete: true }
        );
        oa.completed(1);
        // A retransmitted 183 and the 2xx repeat that answer.
        assert_eq!(oa.role(rel(183), PBX, None, 1), Repeat);
        assert_eq!(oa.role(unrel(200), PBX, None, 1), Repeat);
        // A later re-INVITE (CSeq 3) without SDP: its 2xx offers again.
        assert_eq!(oa.role(unrel(200), PBX, None, 3), Offer);
    }

    #[test]
    fn an_unreliable_1xx_answer_is_a_preview_and_the_2xx_completes() {
        let oa = OfferAnswer::default();
        assert_eq!(
            oa.role(unrel(183), PBX, Some(PHONE), 1),
            Answer { complete: false }
        );
        assert_eq!(
            oa.role(unrel(200), PBX, Some(PHONE), 1),
            Answer { complete: true }
        );
    }

    #[test]
    fn offer_in_a_reliable_1xx_is_answered_in_the_prack() {
        let mut oa = OfferAnswer::default();
        // INVITE without SDP from the phone: the PBX's 1xx-rel offers.
        assert_eq!(oa.role(rel(183), PBX, None, 1), Offer);
        // Retransmitted before the PRACK: a repeat of the pending offer.
        assert_eq!(oa.role(rel(183), PBX, Some(PBX), 1), Repeat);
        // The phone's PRACK answers it.
        assert_eq!(
            oa.role(Carrier::Prack, PHONE, Some(PBX), 1),
            Answer { complete: true }
        );
        oa.completed(1);
        // The 2xx repeats the offer: ignored by the phone (RFC 3261 §13.2.1).
        assert_eq!(oa.role(unrel(200), PBX, None, 1), Repeat);
        // The same in the other direction (INVITE without SDP from the PBX).
        let oa = OfferAnswer::default();
        assert_eq!(oa.role(rel(180), PHONE, None, 10), Offer);
        assert_eq!(
            oa.role(Carrier::Prack, PBX, Some(PHONE), 10),
            Answer { complete: true }
        );
    }

    #[test]
    fn an_offer_in_prack_is_answered_in_its_2xx() {
        let oa = OfferAnswer::default();
        assert_eq!(oa.role(Carrier::Prack, PHONE, None, 1), Offer);
        assert_eq!(
            oa.role(Carrier::UpdateOrPrackResponse, PBX, Some(PHONE), 1),
            Answer { complete: true }
        );
        // SDP in a 2xx to a PRACK or UPDATE that offered nothing has no role.
        assert_eq!(oa.role(Carrier::UpdateOrPrackResponse, PBX, None, 1), Strip);
        assert_eq!(
            oa.role(Carrier::UpdateOrPrackResponse, PBX, Some(PBX), 1),
            Strip
        );
    }

    #[test]
    fn a_second_offer_before_the_answer_is_refused_500_with_retry_after() {
        let oa = OfferAnswer::default();
        // The phone offered in the INVITE; the 1xx-rel had no SDP; its PRACK offers again.
        let role = oa.role(Carrier::Prack, PHONE, Some(PHONE), 1);
        assert_eq!(role, Refuse(SdpRefusal::OfferPending));
        let refusal = SdpRefusal::OfferPending.refusal();
        let (status, retry) = (refusal.status, refusal.retry_after);
        assert_eq!(status, 500);
        assert!(retry.is_some_and(|s| s <= 10), "RFC 3261 §14.2: 0..10 s");
    }

    #[test]
    fn an_offer_in_an_unreliable_1xx_is_stripped() {
        let oa = OfferAnswer::default();
        assert_eq!(oa.role(unrel(183), PBX, None, 1), Strip);
    }

    #[test]
    fn the_last_sdp_per_leg_is_kept() {
        let mut oa = OfferAnswer::default();
        assert_eq!(oa.last_sent(PHONE), None);
        oa.sent(PHONE, b"a");
        oa.sent(PBX, b"b");
        oa.sent(PHONE, b"c");
        assert_eq!(oa.last_sent(PHONE), Some(&b"c"[..]));
        assert_eq!(oa.last_sent(PBX), Some(&b"b"[..]));
    }

    #[test]
    fn reliable_provisional_needs_100rel_and_rseq() {
        assert!(is_reliable_provisional(183, &["100rel"], Some("1")));
        assert!(is_reliable_provisional(
            180,
            &["timer", "precondition, 100REL "],
            Some(" 77 ")
        ));
        assert!(!is_reliable_provisional(183, &["100rel"], None));
        assert!(!is_reliable_provisional(183, &["100rel"], Some("x")));
        assert!(!is_reliable_provisional(183, &["timer"], Some("1")));
        assert!(!is_reliable_provisional(183, &[], Some("1")));
        assert!(!is_reliable_provisional(200, &["100rel"], Some("1")));
        assert!(!is_reliable_provisional(100, &["100rel"], Some("1")));
    }

    #[test]
    fn rack_names_the_invite_cseq() {
        assert_eq!(rack_invite_cseq("1 1 INVITE"), Some(1));
        assert_eq!(rack_invite_cseq("  776656  314159 invite "), Some(314159));
        assert_eq!(rack_invite_cseq("1 1 UPDATE"), None);
        assert_eq!(rack_invite_cseq("1 INVITE"), None);
        assert_eq!(rack_invite_cseq("1 x INVITE"), None);
        assert_eq!(rack_invite_cseq("1 1 INVITE extra"), None);
        assert_eq!(rack_invite_cseq(""), None);
        assert_eq!(rack_invite_cseq("99999999999 1 INVITE"), None);
    }
}
