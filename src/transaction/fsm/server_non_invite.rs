//! Server non-INVITE transaction (RFC 3261 §17.2.2, Figure 8).
//!
//! ```text
//!  Trying --1xx from TU / send--> Proceeding --200-699 from TU / send--> Completed
//!    |--200-699 from TU / send--> Completed --Timer J--> Terminated
//!  Request retransmissions: Trying absorbs, Proceeding resends the last 1xx, Completed resends
//!  the final response.
//! ```

use super::{Action, Moment, Termination, Timer, TimerConfig};
use crate::sip::message::SipMessage;

/// States of the server non-INVITE machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerNonInviteState {
    /// Request received; the TU has not responded.
    Trying,
    /// The TU sent a provisional response.
    Proceeding,
    /// The TU sent a final response; answering retransmissions with it.
    Completed,
    /// Over.
    Terminated,
}

/// A server non-INVITE transaction.
#[derive(Debug, Clone)]
pub struct ServerNonInvite {
    state: ServerNonInviteState,
    config: TimerConfig,
    reliable: bool,
    request: SipMessage,
    last_response: Option<SipMessage>,
}

impl ServerNonInvite {
    /// Starts the transaction for a received request: delivers it to the TU.
    pub fn start<I: Moment>(
        request: SipMessage,
        reliable: bool,
        config: TimerConfig,
    ) -> (Self, Vec<Action<I>>) {
        let actions = vec![Action::Deliver(request.clone())];
        let txn = Self {
            state: ServerNonInviteState::Trying,
            config,
            reliable,
            request,
            last_response: None,
        };
        (txn, actions)
    }

    /// Current state.
    pub fn state(&self) -> ServerNonInviteState {
        self.state
    }

    /// The request that created this transaction.
    pub fn request(&self) -> &SipMessage {
        &self.request
    }

    /// A retransmission of the request arrived.
    pub fn on_request<I: Moment>(&mut self, _request: SipMessage, _now: I) -> Vec<Action<I>> {
        match self.state {
            ServerNonInviteState::Proceeding | ServerNonInviteState::Completed => self
                .last_response
                .iter()
                .cloned()
                .map(Action::Send)
                .collect(),
            _ => Vec::new(),
        }
    }

    /// The TU sends a response on this transaction.
    pub fn send_response<I: Moment>(&mut self, response: SipMessage, now: I) -> Vec<Action<I>> {
        use ServerNonInviteState::*;
        let Some(status) = response.status() else {
            return Vec::new();
        };
        match (self.state, status) {
            (Trying | Proceeding, 100..=199) => {
                self.state = Proceeding;
                self.last_response = Some(response.clone());
                vec![Action::Send(response)]
            }
            (Trying | Proceeding, 200..=699) => {
                self.state = Completed;
                self.last_response = Some(response.clone());
                let mut actions = vec![Action::Send(response)];
                if self.reliable {
                    self.state = Terminated;
                    actions.push(Action::Terminated(Termination::Completed));
                } else {
                    actions.push(Action::Arm(Timer::J, now + self.config.timeout()));
                }
                actions
            }
            _ => Vec::new(),
        }
    }

    /// A timer armed by this transaction fired.
    pub fn on_timer<I: Moment>(&mut self, timer: Timer, _now: I) -> Vec<Action<I>> {
        match (self.state, timer) {
            (ServerNonInviteState::Completed, Timer::J) => self.terminate(Termination::Completed),
            _ => Vec::new(),
        }
    }

    /// The transport failed to send (§17.2.4).
    pub fn on_transport_error<I: Moment>(&mut self) -> Vec<Action<I>> {
        if self.state == ServerNonInviteState::Terminated {
            return Vec::new();
        }
        self.terminate(Termination::TransportError)
    }

    fn terminate<I: Moment>(&mut self, why: Termination) -> Vec<Action<I>> {
        self.state = ServerNonInviteState::Terminated;
        vec![Action::Terminated(why)]
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::*;
    use std::time::Duration;

    fn start(reliable: bool) -> (ServerNonInvite, Vec<Action<Duration>>) {
        ServerNonInvite::start(request("OPTIONS"), reliable, TimerConfig::default())
    }

    #[test]
    fn start_delivers() {
        let (t, a) = start(false);
        assert_eq!(t.state(), ServerNonInviteState::Trying);
        assert_eq!(delivers(&a).len(), 1);
        assert!(sends(&a).is_empty());
    }

    #[test]
    fn trying_absorbs_retransmission() {
        let (mut t, _) = start(false);
        assert!(t.on_request(request("OPTIONS"), ms(1)).is_empty());
    }

    #[test]
    fn proceeding_resends_provisional() {
        let (mut t, _) = start(false);
        t.send_response(response(t.request(), 100), T0);
        assert_eq!(t.state(), ServerNonInviteState::Proceeding);
        let a = t.on_request(request("OPTIONS"), ms(1));
        assert_eq!(sends(&a)[0].status(), Some(100));
    }

    #[test]
    fn completed_resends_final_then_j() {
        let (mut t, _) = start(false);
        let a = t.send_response(response(t.request(), 200), ms(5));
        assert_eq!(sends(&a)[0].status(), Some(200));
        assert_eq!(arms(&a), vec![(Timer::J, ms(32_005))]);
        let a = t.on_request(request("OPTIONS"), ms(6));
        assert_eq!(sends(&a)[0].status(), Some(200));
        assert!(t
            .send_response(response(t.request(), 500), ms(7))
            .is_empty());
        assert_eq!(
            terminated(&t.on_timer(Timer::J, ms(32_005))),
            Some(Termination::Completed)
        );
    }

    #[test]
    fn reliable_terminates_on_final() {
        let (mut t, _) = start(true);
        let a = t.send_response(response(t.request(), 403), T0);
        assert_eq!(terminated(&a), Some(Termination::Completed));
        assert!(arms(&a).is_empty());
    }

    #[test]
    fn stale_timer_ignored_and_transport_error() {
        let (mut t, _) = start(false);
        assert!(t.on_timer(Timer::J, ms(1)).is_empty());
        assert_eq!(
            terminated(&t.on_transport_error::<Duration>()),
            Some(Termination::TransportError)
        );
    }
}
