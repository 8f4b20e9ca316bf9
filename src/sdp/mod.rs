//! SDP offer/answer rewrite between the phone leg (SDES-SRTP, `RTP/SAVP`) and the PBX leg
//! (plain `RTP/AVP`). PURE: no I/O, no clock, no randomness of its own — SDP bytes, relay
//! ports, policy, origin state and a [`KeySource`] come in; SDP bytes and a [`MediaPlan`]
//! come out.
//!
//! Owns: parsing real-world SDP liberally (`wire`, the only user of `sdp-rs`), SDES
//! negotiation (`negotiate`, on top of `srtp::sdes`), the four rewrites (`rewrite`), and the
//! plan the B2BUA turns into media streams (`plan`). Does not know the relay exists.
//!
//! Usage for a call from a phone:
//! ```text
//! let offer = sdp::analyse_phone_offer(body, &ctx)?;          // 488/400 before any port
//! let ports = allocate(offer.port_requests())?;                // media's job (503)
//! let out = sdp::rewrite_phone_offer(offer, &ports, &mut ctx)?; // → INVITE to the PBX
//! // ... PBX answers ...
//! let back = sdp::rewrite_pbx_answer(answer_body, &out.plan, &mut phone_ctx)?; // → phone
//! // back.plan (Stage::Answered) → media streams; keep it as `previous` for re-offers.
//! ```
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

mod attrs;
mod context;
mod error;
mod negotiate;
mod plan;
mod rewrite;
mod wire;

pub use context::{EdgeAddresses, KeySource, LegOrigin, RewriteContext, SrtpMode, SrtpPolicy};
pub use error::{CryptoRefusal, RewriteError};
pub use negotiate::MAX_CRYPTO_LINES;
pub use plan::{
    ContextChange, Direction, MediaKind, MediaPlan, Peer, PortPair, PortRequest, RejectReason,
    RelayedStream, Security, Side, SrtpKeys, Stage, StreamPlan, StreamPorts, StreamState,
};
pub use rewrite::{
    analyse_pbx_offer, analyse_phone_offer, rewrite_pbx_answer, rewrite_pbx_offer,
    rewrite_phone_answer, rewrite_phone_offer, PbxOffer, PhoneOffer, Rewritten,
};
pub use wire::{MAX_LINES, MAX_MEDIA, MAX_SDP_LEN};
