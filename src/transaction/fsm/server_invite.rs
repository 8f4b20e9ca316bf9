//! Server INVITE transaction (RFC 3261 §17.2.1, Figure 7; RFC 6026 §8.7 Accepted state).
//!
//! ```text
//!  Proceeding --1xx from TU / send--> Proceeding   (INVITE retransmit: resend last 1xx)
//!     |--2xx from TU / send--> Accepted --Timer L--> Terminated  (2xx from TU: send;
//!     |                                                           INVITE: absorb; ACK: to TU)
//!     `--300-699 from TU / send--> Completed --ACK--> Confirmed --Timer I--> Terminated
//!                                     |--Timer G / resend final (unreliable)
//!                                     `--Timer H / timeout --> Terminated
//! ```
//! A 100 Trying is sent at once when the transaction starts (§17.2.1: the edge relays the
//! INVITE to another hop and cannot promise a response within 200 ms).

use std::time::Duration;

use super::{Action, Moment, Termination, Timer, TimerConfig};
use crate::sip::message::{MessageError, Method, SipMessage};
use crate::sip::response::response_to;

/// States of the server INVITE machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerInviteState {
    /// INVITE received; the TU has not sent a final response.
    Proceeding,
    /// A 300-699 was sent; waiting for the ACK.
    Completed,
    /// The ACK arrived; absorbing ACK retransmissions.
    Confirmed,
    /// A 2xx was sent (RFC 6026); absorbing INVITE retransmissions.
    Accepted,
    /// Over.
    Terminated,
}

/// A server INVITE transaction.
#[derive(Debug, Clone)]
pub struct ServerInvite {
    state: ServerInviteState,
    config: TimerConfig,
    reliable: bool,
    request: SipMessage,
    last_provisional: Option<SipMessage>,
    final_response: Option<SipMessage>,
    g_interval: Duration,
}

impl ServerInvite {
    /// Starts the transaction for a received INVITE: delivers it to the TU and sends
    /// 100 Trying. Fails if no response can be built (missing Via/From/To/Call-ID/CSeq).
    pub fn start<I: Moment>(
        request: SipMessage,
        reliable: bool,
        config: TimerConfig,
    ) -> Result<(Self, Vec<Action<I>>), MessageError> {
        let trying = response_to(&request, 100, None, None)?;
        let actions = vec![
            Action::Deliver(request.clone()),
            Action::Send(trying.clone()),
        ];
        let txn = Self {
            state: ServerInviteState::Proceeding,
            config,
            reliable,
            request,
            last_provisional: Some(trying),
            final_response: None,
            g_interval: config.t1,
        };
        Ok((txn, actions))
    }

    /// Current state.
    pub fn state(&self) -> ServerInviteState {
        self.state
    }

    /// The INVITE that created this transaction.
    pub fn request(&self) -> &SipMessage {
        &self.request
    }

    /// A request matching this transaction arrived: an INVITE retransmission or the ACK.
    pub fn on_request<I: Moment>(&mut self, request: SipMessage, now: I) -> Vec<Action<I>> {
        use ServerInviteState::*;
        match (self.state, request.method()) {
            (Proceeding, Some(Method::Invite)) => self
                .last_provisional
                .iter()
                .cloned()
                .map(Action::Send)
                .collect(),
            (Completed, Some(Method::Invite)) => self
                .final_response
                .iter()
                .cloned()
                .map(Action::Send)
                .collect(),
            (Completed, Some(Method::Ack)) => {
                if self.reliable {
                    self.terminate(Termination::Completed)
                } else {
                    self.state = Confirmed;
                    vec![Action::Arm(Timer::I, now + self.config.t4)]
                }
            }
            // RFC 6026 §8.7: an ACK matching in Accepted goes to the TU.
            (Accepted, Some(Method::Ack)) => vec![Action::Deliver(request)],
            _ => Vec::new(), // absorbed
        }
    }

    /// The TU sends a response on this transaction.
    pub fn send_response<I: Moment>(&mut self, response: SipMessage, now: I) -> Vec<Action<I>> {
        use ServerInviteState::*;
        let Some(status) = response.status() else {
            return Vec::new();
        };
        match (self.state, status) {
            (Proceeding, 100..=199) => {
                self.last_provisional = Some(response.clone());
                vec![Action::Send(response)]
            }
            (Proceeding, 200..=299) => {
                self.state = Accepted;
                vec![
                    Action::Send(response),
                    Action::Arm(Timer::L, now + self.config.timeout()),
                ]
            }
            // RFC 6026 §8.7: the TU retransmits its 2xx through the transaction.
            (Accepted, 200..=299) => vec![Action::Send(response)],
            (Proceeding, 300..=699) => {
                self.state = Completed;
                self.final_response = Some(response.clone());
                let mut actions = vec![Action::Send(response)];
                if !self.reliable {
                    actions.push(Action::Arm(Timer::G, now + self.g_interval));
                }
                actions.push(Action::Arm(Timer::H, now + self.config.timeout()));
                actions
            }
            _ => Vec::new(),
        }
    }

    /// A timer armed by this transaction fired.
    pub fn on_timer<I: Moment>(&mut self, timer: Timer, now: I) -> Vec<Action<I>> {
        use ServerInviteState::*;
        match (self.state, timer) {
            (Completed, Timer::G) => {
                self.g_interval = self.g_interval.saturating_mul(2).min(self.config.t2);
                let mut actions: Vec<Action<I>> = self
                    .final_response
                    .iter()
                    .cloned()
                    .map(Action::Send)
                    .collect();
                actions.push(Action::Arm(Timer::G, now + self.g_interval));
                actions
            }
            (Completed, Timer::H) => self.terminate(Termination::Timeout(Timer::H)),
            (Confirmed, Timer::I) | (Accepted, Timer::L) => self.terminate(Termination::Completed),
            _ => Vec::new(),
        }
    }

    /// The transport failed to send (§17.2.4).
    pub fn on_transport_error<I: Moment>(&mut self) -> Vec<Action<I>> {
        if self.state == ServerInviteState::Terminated {
            return Vec::new();
        }
        self.terminate(Termination::TransportError)
    }

    fn terminate<I: Moment>(&mut self, why: Termination) -> Vec<Action<I>> {
        self.state = ServerInviteState::Terminated;
        vec![Action::Terminated(why)]
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::*;

    fn start(reliable: bool) -> (ServerInvite, Vec<Action<Duration>>) {
        ServerInvite::start(request("INVITE"), reliable, TimerConfig::default()).unwrap()
    }

    #[test]
    fn start_delivers_and_sends_trying() {
        let (t, a) = start(false);
        assert_eq!(t.state(), ServerInviteState::Proceeding);
        assert_eq!(delivers(&a).len(), 1);
        assert_eq!(sends(&a)[0].status(), Some(100));
        assert!(arms(&a).is_empty());
    }

    #[test]
    fn start_refuses_unanswerable_request() {
        let bad =
            SipMessage::parse(b"INVITE sip:a@b SIP/2.0\r\nContent-Length: 0\r\n\r\n").unwrap();
        assert!(ServerInvite::start::<Duration>(bad, false, TimerConfig::default()).is_err());
    }

    #[test]
    fn retransmitted_invite_gets_last_provisional() {
        let (mut t, _) = start(false);
        let a = t.on_request(request("INVITE"), ms(1));
        assert_eq!(sends(&a)[0].status(), Some(100));
        t.send_response(response(t.request(), 180), ms(2));
        let a = t.on_request(request("INVITE"), ms(3));
        assert_eq!(sends(&a)[0].status(), Some(180));
        assert!(delivers(&a).is_empty());
    }

    #[test]
    fn error_response_completed_g_h_then_ack_confirmed_i() {
        let (mut t, _) = start(false);
        let a = t.send_response(response(t.request(), 486), T0);
        assert_eq!(sends(&a)[0].status(), Some(486));
        assert_eq!(arms(&a), vec![(Timer::G, ms(500)), (Timer::H, ms(32_000))]);
        assert_eq!(t.state(), ServerInviteState::Completed);
        // G doubles up to T2 and resends.
        let mut intervals = Vec::new();
        let mut now = T0;
        for _ in 0..5 {
            now += ms(1);
            let a = t.on_timer(Timer::G, now);
            assert_eq!(sends(&a)[0].status(), Some(486));
            intervals.push(arms(&a)[0].1 - now);
        }
        assert_eq!(
            intervals,
            vec![ms(1000), ms(2000), ms(4000), ms(4000), ms(4000)]
        );
        // INVITE retransmission: resend final.
        let a = t.on_request(request("INVITE"), now);
        assert_eq!(sends(&a)[0].status(), Some(486));
        // ACK: Confirmed, timer I = T4.
        let a = t.on_request(request("ACK"), ms(100));
        assert_eq!(arms(&a), vec![(Timer::I, ms(5100))]);
        assert_eq!(t.state(), ServerInviteState::Confirmed);
        assert!(t.on_request(request("ACK"), ms(200)).is_empty());
        assert!(t.on_timer(Timer::G, ms(300)).is_empty());
        assert!(t.on_timer(Timer::H, ms(32_000)).is_empty());
        assert_eq!(
            terminated(&t.on_timer(Timer::I, ms(5100))),
            Some(Termination::Completed)
        );
    }

    #[test]
    fn timer_h_without_ack_times_out() {
        let (mut t, _) = start(false);
        t.send_response(response(t.request(), 603), T0);
        assert_eq!(
            terminated(&t.on_timer(Timer::H, ms(32_000))),
            Some(Termination::Timeout(Timer::H))
        );
    }

    #[test]
    fn reliable_has_no_g_and_ack_terminates() {
        let (mut t, _) = start(true);
        let a = t.send_response(response(t.request(), 404), T0);
        assert_eq!(arms(&a), vec![(Timer::H, ms(32_000))]);
        assert_eq!(
            terminated(&t.on_request(request("ACK"), ms(1))),
            Some(Termination::Completed)
        );
    }

    #[test]
    fn success_accepted_absorbs_invite_passes_ack_then_l() {
        let (mut t, _) = start(false);
        let a = t.send_response(response(t.request(), 200), T0);
        assert_eq!(sends(&a)[0].status(), Some(200));
        assert_eq!(arms(&a), vec![(Timer::L, ms(32_000))]);
        assert_eq!(t.state(), ServerInviteState::Accepted);
        assert!(t.on_request(request("INVITE"), ms(1)).is_empty());
        assert_eq!(
            sends(&t.send_response(response(t.request(), 200), ms(2))).len(),
            1
        );
        assert_eq!(delivers(&t.on_request(request("ACK"), ms(3))).len(), 1);
        assert!(t
            .send_response(response(t.request(), 486), ms(4))
            .is_empty());
        assert_eq!(
            terminated(&t.on_timer(Timer::L, ms(32_000))),
            Some(Termination::Completed)
        );
    }

    #[test]
    fn transport_error_terminates() {
        let (mut t, _) = start(false);
        assert_eq!(
            terminated(&t.on_transport_error::<Duration>()),
            Some(Termination::TransportError)
        );
        assert!(t.on_request(request("INVITE"), ms(1)).is_empty());
    }
}
