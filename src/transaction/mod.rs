//! RFC 3261 §17 transactions, pure parts: matching keys ([`key`]) and the four state machines
//! ([`fsm`]). The tokio layer that owns timers and sockets sits on top and only executes the
//! [`fsm::Action`]s these return.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub mod fsm;
pub mod key;
