//! Transports: the phone-facing SIP over TLS listener (and, with the SIP core, the PBX side).

pub mod metrics;
pub mod tls;
