//! [`Transaction`]: one of the four machines behind one type, so a transaction table can hold
//! them in one map and dispatch timers and transport errors without matching on the kind.

use super::{
    Action, ClientInvite, ClientInviteState, ClientNonInvite, ClientNonInviteState, Moment,
    ServerInvite, ServerInviteState, ServerNonInvite, ServerNonInviteState, Timer,
};
use crate::sip::message::SipMessage;

/// Any transaction (boxed: the machines differ in size and sit in one hash map).
#[derive(Debug, Clone)]
pub enum Transaction {
    /// Client INVITE (§17.1.1).
    ClientInvite(Box<ClientInvite>),
    /// Client non-INVITE (§17.1.2).
    ClientNonInvite(Box<ClientNonInvite>),
    /// Server INVITE (§17.2.1).
    ServerInvite(Box<ServerInvite>),
    /// Server non-INVITE (§17.2.2).
    ServerNonInvite(Box<ServerNonInvite>),
}

impl Transaction {
    /// The request that created the transaction.
    pub fn request(&self) -> &SipMessage {
        match self {
            Self::ClientInvite(t) => t.request(),
            Self::ClientNonInvite(t) => t.request(),
            Self::ServerInvite(t) => t.request(),
            Self::ServerNonInvite(t) => t.request(),
        }
    }

    /// Whether the transaction is over (its entry can be removed).
    pub fn is_terminated(&self) -> bool {
        match self {
            Self::ClientInvite(t) => t.state() == ClientInviteState::Terminated,
            Self::ClientNonInvite(t) => t.state() == ClientNonInviteState::Terminated,
            Self::ServerInvite(t) => t.state() == ServerInviteState::Terminated,
            Self::ServerNonInvite(t) => t.state() == ServerNonInviteState::Terminated,
        }
    }

    /// Whether no final response has been sent (server) or received (client) yet: the
    /// request is still being worked on. Completed, Confirmed and Accepted transactions only
    /// absorb retransmissions (RFC 3261 §17.1.1.2, §17.2.1; RFC 6026 §7.1/§8.7); a graceful
    /// shutdown does not wait for those timers.
    pub fn awaits_final_response(&self) -> bool {
        match self {
            Self::ClientInvite(t) => matches!(
                t.state(),
                ClientInviteState::Calling | ClientInviteState::Proceeding
            ),
            Self::ClientNonInvite(t) => matches!(
                t.state(),
                ClientNonInviteState::Trying | ClientNonInviteState::Proceeding
            ),
            Self::ServerInvite(t) => t.state() == ServerInviteState::Proceeding,
            Self::ServerNonInvite(t) => matches!(
                t.state(),
                ServerNonInviteState::Trying | ServerNonInviteState::Proceeding
            ),
        }
    }

    /// A matching response arrived (client transactions; ignored by server ones).
    pub fn on_response<I: Moment>(&mut self, response: SipMessage, now: I) -> Vec<Action<I>> {
        match self {
            Self::ClientInvite(t) => t.on_response(response, now),
            Self::ClientNonInvite(t) => t.on_response(response, now),
            Self::ServerInvite(_) | Self::ServerNonInvite(_) => Vec::new(),
        }
    }

    /// A matching request arrived: a retransmission or the ACK (server transactions; ignored
    /// by client ones).
    pub fn on_request<I: Moment>(&mut self, request: SipMessage, now: I) -> Vec<Action<I>> {
        match self {
            Self::ServerInvite(t) => t.on_request(request, now),
            Self::ServerNonInvite(t) => t.on_request(request, now),
            Self::ClientInvite(_) | Self::ClientNonInvite(_) => Vec::new(),
        }
    }

    /// The TU sends a response (server transactions; ignored by client ones).
    pub fn send_response<I: Moment>(&mut self, response: SipMessage, now: I) -> Vec<Action<I>> {
        match self {
            Self::ServerInvite(t) => t.send_response(response, now),
            Self::ServerNonInvite(t) => t.send_response(response, now),
            Self::ClientInvite(_) | Self::ClientNonInvite(_) => Vec::new(),
        }
    }

    /// A timer fired.
    pub fn on_timer<I: Moment>(&mut self, timer: Timer, now: I) -> Vec<Action<I>> {
        match self {
            Self::ClientInvite(t) => t.on_timer(timer, now),
            Self::ClientNonInvite(t) => t.on_timer(timer, now),
            Self::ServerInvite(t) => t.on_timer(timer, now),
            Self::ServerNonInvite(t) => t.on_timer(timer, now),
        }
    }

    /// The transport failed to send.
    pub fn on_transport_error<I: Moment>(&mut self) -> Vec<Action<I>> {
        match self {
            Self::ClientInvite(t) => t.on_transport_error(),
            Self::ClientNonInvite(t) => t.on_transport_error(),
            Self::ServerInvite(t) => t.on_transport_error(),
            Self::ServerNonInvite(t) => t.on_transport_error(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::super::{Termination, TimerConfig};
    use super::*;
    use std::time::Duration;

    #[test]
    fn dispatches_by_kind() {
        let (c, _) = ClientNonInvite::start(request("OPTIONS"), true, TimerConfig::default(), T0);
        let mut t = Transaction::ClientNonInvite(Box::new(c));
        assert!(t.on_request::<Duration>(request("OPTIONS"), T0).is_empty());
        assert!(t
            .send_response::<Duration>(response(&request("OPTIONS"), 200), T0)
            .is_empty());
        let a = t.on_response(response(&request("OPTIONS"), 200), T0);
        assert_eq!(terminated(&a), Some(Termination::Completed));
        assert!(t.is_terminated());

        let (s, _) =
            ServerInvite::start::<Duration>(request("INVITE"), false, TimerConfig::default())
                .unwrap();
        let mut t = Transaction::ServerInvite(Box::new(s));
        assert!(t
            .on_response(response(&request("INVITE"), 200), T0)
            .is_empty());
        let a = t.send_response(response(&request("INVITE"), 486), T0);
        assert_eq!(sends(&a).len(), 1);
        assert_eq!(t.request().cseq().unwrap().seq, 1);
        let a = t.on_timer(Timer::H, ms(32_000));
        assert_eq!(terminated(&a), Some(Termination::Timeout(Timer::H)));
        assert!(t.is_terminated());
        assert!(t.on_transport_error::<Duration>().is_empty());
    }

    /// Only a transaction still waiting for its final response holds up a graceful shutdown;
    /// one absorbing retransmissions (Timer K/J/D/L/M/I) does not.
    #[test]
    fn awaits_a_final_response_until_one_passes_not_while_absorbing() {
        // Client non-INVITE over UDP: Trying → Proceeding → Completed (Timer K runs).
        let (c, _) = ClientNonInvite::start(request("BYE"), false, TimerConfig::default(), T0);
        let mut t = Transaction::ClientNonInvite(Box::new(c));
        assert!(t.awaits_final_response());
        t.on_response(response(&request("BYE"), 100), T0);
        assert!(t.awaits_final_response(), "a provisional is not final");
        t.on_response(response(&request("BYE"), 200), T0);
        assert!(!t.is_terminated(), "Timer K still absorbs over UDP");
        assert!(!t.awaits_final_response());

        // Client INVITE over UDP: 2xx → Accepted (RFC 6026 Timer M runs).
        let (c, _) = ClientInvite::start(request("INVITE"), false, TimerConfig::default(), T0);
        let mut t = Transaction::ClientInvite(Box::new(c));
        assert!(t.awaits_final_response());
        t.on_response(response(&request("INVITE"), 180), T0);
        assert!(t.awaits_final_response());
        t.on_response(response(&request("INVITE"), 200), T0);
        assert!(!t.is_terminated(), "Accepted absorbs 2xx retransmissions");
        assert!(!t.awaits_final_response());

        // Server INVITE over UDP: Proceeding until the TU answers; then Accepted or Completed.
        for status in [200, 486] {
            let (s, _) =
                ServerInvite::start::<Duration>(request("INVITE"), false, TimerConfig::default())
                    .unwrap();
            let mut t = Transaction::ServerInvite(Box::new(s));
            assert!(t.awaits_final_response());
            t.send_response(response(&request("INVITE"), 180), T0);
            assert!(t.awaits_final_response());
            t.send_response(response(&request("INVITE"), status), T0);
            assert!(!t.is_terminated(), "{status}: still absorbing");
            assert!(!t.awaits_final_response(), "{status}");
        }

        // Server non-INVITE over UDP: Trying until answered; Completed (Timer J) after.
        let (s, _) =
            ServerNonInvite::start::<Duration>(request("BYE"), false, TimerConfig::default());
        let mut t = Transaction::ServerNonInvite(Box::new(s));
        assert!(t.awaits_final_response());
        t.send_response(response(&request("BYE"), 200), T0);
        assert!(!t.is_terminated(), "Timer J absorbs over UDP");
        assert!(!t.awaits_final_response());
    }
}
