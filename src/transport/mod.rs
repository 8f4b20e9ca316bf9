//! Transports: the phone-facing SIP over TLS listener (and, with the SIP core, the PBX side).

pub mod connection;
pub mod flow;
pub mod limits;
pub mod metrics;
pub mod pbx;
pub mod rate;
pub mod tls;
