//! Client non-INVITE transaction (RFC 3261 §17.1.2, Figure 6).
//!
//! ```text
//!  Trying --1xx--> Proceeding --200-699--> Completed --Timer K--> Terminated
//!    |--200-699--> Completed
//!    |--Timer E / resend (unreliable; interval doubles up to T2, stays T2 in Proceeding)
//!    `--Timer F / report timeout --> Terminated   (also from Proceeding)
//! ```

use std::time::Duration;

use super::{Action, Moment, Termination, Timer, TimerConfig};
use crate::sip::message::SipMessage;

/// States of the client non-INVITE machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientNonInviteState {
    /// Request sent, nothing heard.
    Trying,
    /// A provisional response arrived.
    Proceeding,
    /// A final response arrived; absorbing retransmissions of it.
    Completed,
    /// Over.
    Terminated,
}

/// A client non-INVITE transaction.
#[derive(Debug, Clone)]
pub struct ClientNonInvite {
    state: ClientNonInviteState,
    config: TimerConfig,
    reliable: bool,
    request: SipMessage,
    e_interval: Duration,
}

impl ClientNonInvite {
    /// Starts the transaction: sends the request, arms E (unreliable) and F.
    pub fn start<I: Moment>(
        request: SipMessage,
        reliable: bool,
        config: TimerConfig,
        now: I,
    ) -> (Self, Vec<Action<I>>) {
        let mut actions = vec![Action::Send(request.clone())];
        if !reliable {
            actions.push(Action::Arm(Timer::E, now + config.t1));
        }
        actions.push(Action::Arm(Timer::F, now + config.timeout()));
        let txn = Self {
            state: ClientNonInviteState::Trying,
            config,
            reliable,
            request,
            e_interval: config.t1,
        };
        (txn, actions)
    }

    /// Current state.
    pub fn state(&self) -> ClientNonInviteState {
        self.state
    }

    /// The request this transaction sent.
    pub fn request(&self) -> &SipMessage {
        &self.request
    }

    /// A response matching this transaction arrived.
    pub fn on_response<I: Moment>(&mut self, response: SipMessage, now: I) -> Vec<Action<I>> {
        use ClientNonInviteState::*;
        let Some(status) = response.status() else {
            return Vec::new();
        };
        match (self.state, status) {
            (Trying | Proceeding, 100..=199) => {
                self.state = Proceeding;
                vec![Action::Deliver(response)]
            }
            (Trying | Proceeding, 200..=699) => {
                self.state = Completed;
                let mut actions = vec![Action::Deliver(response)];
                if self.reliable {
                    self.state = Terminated;
                    actions.push(Action::Terminated(Termination::Completed));
                } else {
                    actions.push(Action::Arm(Timer::K, now + self.config.t4));
                }
                actions
            }
            _ => Vec::new(), // Completed absorbs retransmissions (§17.1.2.2)
        }
    }

    /// A timer armed by this transaction fired.
    pub fn on_timer<I: Moment>(&mut self, timer: Timer, now: I) -> Vec<Action<I>> {
        use ClientNonInviteState::*;
        match (self.state, timer) {
            (Trying, Timer::E) => {
                self.e_interval = self.e_interval.saturating_mul(2).min(self.config.t2);
                vec![
                    Action::Send(self.request.clone()),
                    Action::Arm(Timer::E, now + self.e_interval),
                ]
            }
            (Proceeding, Timer::E) => {
                self.e_interval = self.config.t2;
                vec![
                    Action::Send(self.request.clone()),
                    Action::Arm(Timer::E, now + self.e_interval),
                ]
            }
            (Trying | Proceeding, Timer::F) => self.terminate(Termination::Timeout(Timer::F)),
            (Completed, Timer::K) => self.terminate(Termination::Completed),
            _ => Vec::new(),
        }
    }

    /// The transport failed to send (§17.1.2.2).
    pub fn on_transport_error<I: Moment>(&mut self) -> Vec<Action<I>> {
        if self.state == ClientNonInviteState::Terminated {
            return Vec::new();
        }
        self.terminate(Termination::TransportError)
    }

    fn terminate<I: Moment>(&mut self, why: Termination) -> Vec<Action<I>> {
        self.state = ClientNonInviteState::Terminated;
        vec![Action::Terminated(why)]
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::*;

    fn start(reliable: bool) -> (ClientNonInvite, Vec<Action<Duration>>) {
        ClientNonInvite::start(request("OPTIONS"), reliable, TimerConfig::default(), T0)
    }

    #[test]
    fn start_arms_e_and_f() {
        let (t, a) = start(false);
        assert_eq!(t.state(), ClientNonInviteState::Trying);
        assert_eq!(sends(&a).len(), 1);
        assert_eq!(arms(&a), vec![(Timer::E, ms(500)), (Timer::F, ms(32_000))]);
        let (_, a) = start(true);
        assert_eq!(arms(&a), vec![(Timer::F, ms(32_000))]);
    }

    #[test]
    fn timer_e_doubles_up_to_t2() {
        let (mut t, _) = start(false);
        let mut now = T0;
        let mut intervals = Vec::new();
        for _ in 0..5 {
            now += ms(1);
            let a = t.on_timer(Timer::E, now);
            assert_eq!(sends(&a).len(), 1);
            intervals.push(arms(&a)[0].1 - now);
        }
        assert_eq!(
            intervals,
            vec![ms(1000), ms(2000), ms(4000), ms(4000), ms(4000)]
        );
    }

    #[test]
    fn timer_e_in_proceeding_is_t2() {
        let (mut t, _) = start(false);
        t.on_response(response(t.request(), 100), T0);
        assert_eq!(t.state(), ClientNonInviteState::Proceeding);
        let a = t.on_timer(Timer::E, ms(500));
        assert_eq!(arms(&a), vec![(Timer::E, ms(4500))]);
    }

    #[test]
    fn timer_f_times_out_in_trying_and_proceeding() {
        let (mut t, _) = start(false);
        assert_eq!(
            terminated(&t.on_timer(Timer::F, ms(32_000))),
            Some(Termination::Timeout(Timer::F))
        );
        let (mut t, _) = start(false);
        t.on_response(response(t.request(), 100), T0);
        assert_eq!(
            terminated(&t.on_timer(Timer::F, ms(32_000))),
            Some(Termination::Timeout(Timer::F))
        );
        assert!(t.on_timer(Timer::E, ms(32_001)).is_empty());
    }

    #[test]
    fn final_response_completes_then_k() {
        let (mut t, _) = start(false);
        let a = t.on_response(response(t.request(), 200), ms(10));
        assert_eq!(delivers(&a).len(), 1);
        assert_eq!(arms(&a), vec![(Timer::K, ms(5010))]);
        assert_eq!(t.state(), ClientNonInviteState::Completed);
        assert!(t.on_response(response(t.request(), 200), ms(20)).is_empty());
        assert!(t.on_timer(Timer::E, ms(30)).is_empty());
        assert!(t.on_timer(Timer::F, ms(40)).is_empty());
        assert_eq!(
            terminated(&t.on_timer(Timer::K, ms(5010))),
            Some(Termination::Completed)
        );
    }

    #[test]
    fn final_response_reliable_terminates_at_once() {
        let (mut t, _) = start(true);
        let a = t.on_response(response(t.request(), 404), T0);
        assert_eq!(delivers(&a).len(), 1);
        assert_eq!(terminated(&a), Some(Termination::Completed));
    }

    #[test]
    fn transport_error_terminates() {
        let (mut t, _) = start(true);
        assert_eq!(
            terminated(&t.on_transport_error::<Duration>()),
            Some(Termination::TransportError)
        );
    }
}
