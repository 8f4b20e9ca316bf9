//! Client INVITE transaction (RFC 3261 §17.1.1, Figure 5; RFC 6026 §8.4 Accepted state).
//!
//! ```text
//!  Calling --1xx--> Proceeding --2xx--> Accepted --Timer M--> Terminated
//!     |  \--2xx--> Accepted        \--300-699 / send ACK--> Completed --Timer D--> Terminated
//!     |--300-699 / send ACK --> Completed
//!     |--Timer A / resend INVITE (unreliable only)
//!     `--Timer B / report timeout --> Terminated
//! ```

use std::time::Duration;

use super::{Action, Moment, Termination, Timer, TimerConfig};
use crate::sip::message::SipMessage;
use crate::sip::response::ack_for_non_2xx;

/// States of the client INVITE machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientInviteState {
    /// INVITE sent, nothing heard.
    Calling,
    /// A provisional response arrived.
    Proceeding,
    /// A 300-699 arrived and was ACKed; absorbing its retransmissions.
    Completed,
    /// A 2xx arrived (RFC 6026); further 2xx go to the TU, which ACKs them.
    Accepted,
    /// Over.
    Terminated,
}

/// A client INVITE transaction.
#[derive(Debug, Clone)]
pub struct ClientInvite {
    state: ClientInviteState,
    config: TimerConfig,
    reliable: bool,
    request: SipMessage,
    ack: Option<SipMessage>,
    a_interval: Duration,
}

impl ClientInvite {
    /// Starts the transaction: sends the INVITE, arms A (unreliable) and B.
    pub fn start<I: Moment>(
        request: SipMessage,
        reliable: bool,
        config: TimerConfig,
        now: I,
    ) -> (Self, Vec<Action<I>>) {
        let mut actions = vec![Action::Send(request.clone())];
        if !reliable {
            actions.push(Action::Arm(Timer::A, now + config.t1));
        }
        actions.push(Action::Arm(Timer::B, now + config.timeout()));
        let txn = Self {
            state: ClientInviteState::Calling,
            config,
            reliable,
            request,
            ack: None,
            a_interval: config.t1,
        };
        (txn, actions)
    }

    /// Current state.
    pub fn state(&self) -> ClientInviteState {
        self.state
    }

    /// The INVITE this transaction sent.
    pub fn request(&self) -> &SipMessage {
        &self.request
    }

    /// A response matching this transaction arrived.
    pub fn on_response<I: Moment>(&mut self, response: SipMessage, now: I) -> Vec<Action<I>> {
        use ClientInviteState::*;
        let Some(status) = response.status() else {
            return Vec::new();
        };
        match (self.state, status) {
            (Calling | Proceeding, 100..=199) => {
                self.state = Proceeding;
                vec![Action::Deliver(response)]
            }
            (Calling | Proceeding, 200..=299) => {
                self.state = Accepted;
                vec![
                    Action::Deliver(response),
                    Action::Arm(Timer::M, now + self.config.timeout()),
                ]
            }
            // RFC 6026 §8.4: retransmitted 2xx go to the TU so it can re-send its ACK.
            (Accepted, 200..=299) => vec![Action::Deliver(response)],
            (Calling | Proceeding, 300..=699) => {
                self.state = Completed;
                self.ack = ack_for_non_2xx(&self.request, &response).ok();
                let mut actions: Vec<Action<I>> =
                    self.ack.iter().cloned().map(Action::Send).collect();
                actions.push(Action::Deliver(response));
                if self.reliable {
                    self.state = Terminated;
                    actions.push(Action::Terminated(Termination::Completed));
                } else {
                    actions.push(Action::Arm(Timer::D, now + self.config.timer_d));
                }
                actions
            }
            // §17.1.1.2: a retransmitted final response is ACKed again, not delivered.
            (Completed, 300..=699) => self.ack.iter().cloned().map(Action::Send).collect(),
            _ => Vec::new(),
        }
    }

    /// A timer armed by this transaction fired.
    pub fn on_timer<I: Moment>(&mut self, timer: Timer, now: I) -> Vec<Action<I>> {
        use ClientInviteState::*;
        match (self.state, timer) {
            (Calling, Timer::A) => {
                // §17.1.1.2: A doubles each time (no T2 cap for INVITE).
                self.a_interval = self.a_interval.saturating_mul(2);
                vec![
                    Action::Send(self.request.clone()),
                    Action::Arm(Timer::A, now + self.a_interval),
                ]
            }
            (Calling, Timer::B) => self.terminate(Termination::Timeout(Timer::B)),
            (Completed, Timer::D) | (Accepted, Timer::M) => self.terminate(Termination::Completed),
            _ => Vec::new(),
        }
    }

    /// The transport failed to send (§17.1.1.2): the TU treats it like a 503.
    pub fn on_transport_error<I: Moment>(&mut self) -> Vec<Action<I>> {
        if self.state == ClientInviteState::Terminated {
            return Vec::new();
        }
        self.terminate(Termination::TransportError)
    }

    fn terminate<I: Moment>(&mut self, why: Termination) -> Vec<Action<I>> {
        self.state = ClientInviteState::Terminated;
        vec![Action::Terminated(why)]
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::*;
    use crate::sip::message::Method;

    fn start(reliable: bool) -> (ClientInvite, Vec<Action<Duration>>, Duration) {
        let now = T0;
        let (t, a) = ClientInvite::start(request("INVITE"), reliable, TimerConfig::default(), now);
        (t, a, now)
    }

    #[test]
    fn start_unreliable_arms_a_and_b() {
        let (t, a, now) = start(false);
        assert_eq!(t.state(), ClientInviteState::Calling);
        assert_eq!(sends(&a).len(), 1);
        assert_eq!(
            arms(&a),
            vec![(Timer::A, now + ms(500)), (Timer::B, now + ms(32_000))]
        );
    }

    #[test]
    fn start_reliable_has_no_timer_a() {
        let (_, a, now) = start(true);
        assert_eq!(arms(&a), vec![(Timer::B, now + ms(32_000))]);
    }

    #[test]
    fn timer_a_doubles_without_cap() {
        let (mut t, _, now) = start(false);
        let mut at = now;
        let mut expect = 1000;
        for _ in 0..6 {
            at += ms(1);
            let a = t.on_timer(Timer::A, at);
            assert_eq!(sends(&a).len(), 1);
            assert_eq!(arms(&a), vec![(Timer::A, at + ms(expect))]);
            expect *= 2; // 1 s, 2 s, 4 s, 8 s (past T2: no cap for INVITE)
        }
    }

    #[test]
    fn timer_b_in_calling_times_out() {
        let (mut t, _, now) = start(false);
        let a = t.on_timer(Timer::B, now + ms(32_000));
        assert_eq!(terminated(&a), Some(Termination::Timeout(Timer::B)));
        assert_eq!(t.state(), ClientInviteState::Terminated);
        assert_eq!(Termination::Timeout(Timer::B).label(), "timeout_b");
    }

    #[test]
    fn provisional_moves_to_proceeding_and_stops_a_and_b() {
        let (mut t, _, now) = start(false);
        let a = t.on_response(response(t.request(), 180), now);
        assert_eq!(delivers(&a).len(), 1);
        assert_eq!(t.state(), ClientInviteState::Proceeding);
        assert!(t.on_timer(Timer::A, now).is_empty());
        assert!(t.on_timer(Timer::B, now).is_empty());
        let a = t.on_response(response(t.request(), 183), now);
        assert_eq!(delivers(&a).len(), 1);
    }

    #[test]
    fn final_error_sends_ack_and_arms_d() {
        let (mut t, _, now) = start(false);
        let a = t.on_response(response(t.request(), 486), now);
        let s = sends(&a);
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].method(), Some(Method::Ack));
        assert_eq!(s[0].to_tag().unwrap().as_deref(), Some("tt"));
        assert_eq!(delivers(&a).len(), 1);
        assert_eq!(arms(&a), vec![(Timer::D, now + ms(32_000))]);
        assert_eq!(t.state(), ClientInviteState::Completed);
        // Retransmitted 486: ACK again, not delivered.
        let a = t.on_response(response(t.request(), 486), now);
        assert_eq!(sends(&a).len(), 1);
        assert!(delivers(&a).is_empty());
        let a = t.on_timer(Timer::D, now + ms(32_000));
        assert_eq!(terminated(&a), Some(Termination::Completed));
    }

    #[test]
    fn final_error_reliable_terminates_at_once() {
        let (mut t, _, now) = start(true);
        t.on_response(response(t.request(), 180), now);
        let a = t.on_response(response(t.request(), 503), now);
        assert_eq!(sends(&a).len(), 1);
        assert_eq!(terminated(&a), Some(Termination::Completed));
        assert!(arms(&a).is_empty());
    }

    #[test]
    fn success_goes_to_accepted_and_passes_retransmissions() {
        let (mut t, _, now) = start(false);
        let a = t.on_response(response(t.request(), 200), now);
        assert_eq!(delivers(&a).len(), 1);
        assert!(sends(&a).is_empty(), "ACK for 2xx is the TU's");
        assert_eq!(arms(&a), vec![(Timer::M, now + ms(32_000))]);
        assert_eq!(t.state(), ClientInviteState::Accepted);
        let a = t.on_response(response(t.request(), 200), now);
        assert_eq!(delivers(&a).len(), 1);
        assert!(t.on_response(response(t.request(), 486), now).is_empty());
        let a = t.on_timer(Timer::M, now + ms(32_000));
        assert_eq!(terminated(&a), Some(Termination::Completed));
    }

    #[test]
    fn transport_error_terminates() {
        let (mut t, _, _) = start(false);
        assert_eq!(
            terminated(&t.on_transport_error::<Duration>()),
            Some(Termination::TransportError)
        );
        assert!(t.on_transport_error::<Duration>().is_empty());
    }

    #[test]
    fn configurable_t1() {
        let now = T0;
        let config = TimerConfig {
            t1: ms(100),
            ..TimerConfig::default()
        };
        let (_, a) = ClientInvite::start(request("INVITE"), false, config, now);
        assert_eq!(
            arms(&a),
            vec![(Timer::A, now + ms(100)), (Timer::B, now + ms(6_400))]
        );
    }
}
