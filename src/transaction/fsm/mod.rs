//! The four RFC 3261 §17 transaction state machines, as pure structs.
//!
//! Each machine takes events — a message from the transport, a response from the TU, a timer
//! that fired, a transport error — together with `now`, and returns [`Action`]s for the caller
//! to execute: send bytes, deliver a message to the TU, arm a timer, or drop the transaction.
//! They never read a clock. A timer that fires in a state that does not expect it is ignored,
//! so the caller never needs to cancel timers: arming the same [`Timer`] again replaces it.
//!
//! Retransmission timers (A, E, G) exist only on unreliable transports; on reliable ones the
//! waiting timers D, I, J, K are zero, so the machine terminates at once (§17.1.1.2, §17.1.2.2,
//! §17.2.1, §17.2.2). The INVITE machines include the RFC 6026 "Accepted" state (timers L and
//! M) so retransmitted INVITEs and 2xx responses after a 2xx are absorbed or passed to the TU
//! instead of matching nothing.

pub mod any;
pub mod client_invite;
pub mod client_non_invite;
pub mod server_invite;
pub mod server_non_invite;

use std::fmt;
use std::ops::Add;
use std::time::{Duration, Instant};

use crate::sip::message::SipMessage;

pub use any::Transaction;
pub use client_invite::{ClientInvite, ClientInviteState};
pub use client_non_invite::{ClientNonInvite, ClientNonInviteState};
pub use server_invite::{ServerInvite, ServerInviteState};
pub use server_non_invite::{ServerNonInvite, ServerNonInviteState};

/// A point in time: `std::time::Instant` in production (tokio's `Instant` works too), a
/// `Duration` since an arbitrary origin in tests. The machines only add durations to it.
pub trait Moment: Copy + fmt::Debug + PartialEq + Add<Duration, Output = Self> {}

impl<T: Copy + fmt::Debug + PartialEq + Add<Duration, Output = T>> Moment for T {}

/// RFC 3261 timer base values (§17.1.1.1, Table 4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimerConfig {
    /// RTT estimate, default 500 ms.
    pub t1: Duration,
    /// Maximum retransmit interval for non-INVITE requests and INVITE responses, default 4 s.
    pub t2: Duration,
    /// Maximum time a message stays in the network, default 5 s.
    pub t4: Duration,
    /// Timer D on unreliable transports, at least 32 s (§17.1.1.2).
    pub timer_d: Duration,
}

impl Default for TimerConfig {
    fn default() -> Self {
        Self {
            t1: Duration::from_millis(500),
            t2: Duration::from_secs(4),
            t4: Duration::from_secs(5),
            timer_d: Duration::from_secs(32),
        }
    }
}

impl TimerConfig {
    /// 64 × T1: timers B, F, H, J, L, M.
    pub fn timeout(&self) -> Duration {
        self.t1.saturating_mul(64)
    }
}

/// The RFC 3261 §17 timers (plus L and M from RFC 6026).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Timer {
    /// INVITE request retransmit (client, unreliable only).
    A,
    /// INVITE transaction timeout (client).
    B,
    /// Wait time for response retransmits (client INVITE, Completed).
    D,
    /// Non-INVITE request retransmit (client, unreliable only).
    E,
    /// Non-INVITE transaction timeout (client).
    F,
    /// INVITE final response retransmit (server, unreliable only).
    G,
    /// Wait time for ACK receipt (server INVITE).
    H,
    /// Wait time for ACK retransmits (server INVITE, Confirmed).
    I,
    /// Wait time for non-INVITE request retransmits (server).
    J,
    /// Wait time for response retransmits (client non-INVITE).
    K,
    /// Wait time for INVITE retransmits after a 2xx (server, RFC 6026 §8.7).
    L,
    /// Wait time for 2xx retransmits (client INVITE, RFC 6026 §8.4).
    M,
}

/// Why a transaction ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Termination {
    /// The transaction completed normally.
    Completed,
    /// Timer B or F (client: no final response; answer the other leg 408) or timer H (server:
    /// no ACK for our final response).
    Timeout(Timer),
    /// The transport reported a failure sending (§17.1.1.2, §17.1.2.2, §17.2.4).
    TransportError,
}

impl Termination {
    /// Stable label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Completed => "completed",
            Self::Timeout(Timer::B) => "timeout_b",
            Self::Timeout(Timer::F) => "timeout_f",
            Self::Timeout(Timer::H) => "timeout_h",
            Self::Timeout(_) => "timeout",
            Self::TransportError => "transport_error",
        }
    }
}

/// What the caller must do after an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action<I = Instant> {
    /// Send this message on the transaction's transport (a request, ACK or response).
    Send(SipMessage),
    /// Pass this message to the transaction user.
    Deliver(SipMessage),
    /// (Re)arm `Timer` to fire at this instant, replacing an earlier arming of it.
    Arm(Timer, I),
    /// The transaction is over; remove it (and its timers) from the table.
    Terminated(Termination),
}

#[cfg(test)]
pub(crate) mod test_support {
    use super::*;

    pub fn request(method: &str) -> SipMessage {
        SipMessage::parse(
            format!(
                "{method} sip:101@198.51.100.1 SIP/2.0\r\n\
                 Via: SIP/2.0/UDP 198.51.100.1:5080;branch=z9hG4bK-t1\r\n\
                 From: <sip:200@pbx>;tag=f\r\nTo: <sip:101@pbx>\r\nCall-ID: fsm\r\n\
                 CSeq: 1 {method}\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
            )
            .as_bytes(),
        )
        .unwrap()
    }

    pub fn response(req: &SipMessage, status: u16) -> SipMessage {
        crate::sip::response::response_to(req, status, Some("tt"), None).unwrap()
    }

    /// Test time origin: time is a `Duration` offset, never a clock reading.
    pub const T0: Duration = Duration::ZERO;

    pub fn arms(actions: &[Action<Duration>]) -> Vec<(Timer, Duration)> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Arm(t, at) => Some((*t, *at)),
                _ => None,
            })
            .collect()
    }

    pub fn sends(actions: &[Action<Duration>]) -> Vec<&SipMessage> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Send(m) => Some(m),
                _ => None,
            })
            .collect()
    }

    pub fn delivers(actions: &[Action<Duration>]) -> Vec<&SipMessage> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Deliver(m) => Some(m),
                _ => None,
            })
            .collect()
    }

    pub fn terminated(actions: &[Action<Duration>]) -> Option<Termination> {
        actions.iter().find_map(|a| match a {
            Action::Terminated(t) => Some(*t),
            _ => None,
        })
    }

    pub fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }
}
