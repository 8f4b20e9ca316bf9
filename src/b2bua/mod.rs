//! The B2BUA: MAC authorization, the binding table and the per-leg rewrites, driven by the
//! SIP core task. See `core.rs` for what is relayed and how the core is laid out; every
//! answer the edge gives itself is a [`refusal::Refusal`].

pub mod authorize;
pub mod call;
pub mod call_record;
pub mod core;
pub mod legs;
pub mod metrics;
pub mod offer_answer;
pub mod refusal;
pub mod registrar;
pub mod subscriptions;
