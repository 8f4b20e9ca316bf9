//! pbx-edge: a SIP/TLS + SRTP edge proxy (a transparent B2BUA) that desk phones reach with
//! SIPS and their factory device certificates, in front of a legacy PBX that speaks plain SIP
//! and RTP. See `README.md` for operation and `../shared/DESIGN.md` for the design.
//!
//! Module map (each owns one concern; see each module's docs):
//! - [`config`]: typed config, layering (defaults ← TOML ← `PBX_EDGE_*`), validation.
//! - [`transport`]: the phone-facing TLS listener.
//! - [`admin`]: `/metrics`, `/healthz`, `/readyz`.
//! - [`call_log`]: one JSON line per ended call (`[call_log]`), off the SIP core's path.
//! - [`capture`]: SIP capture to a Homer / HEP v3 collector (`[hep]`).
//! - [`provisioning`]: the optional HTTPS provisioning gateway.
//! - [`qos`]: DSCP marking of SIP and media sockets.
//! - [`app`]: wiring, start-up and graceful shutdown; [`devpki`]: development PKI.
//!
//! `unsafe` is denied everywhere but in [`media::batch_io`], the one reviewed module that
//! hands buffers to the kernel (io_uring); `tests/architecture.rs` fails on any other.
#![deny(unsafe_code)]

pub mod admin;
pub mod app;
pub mod b2bua;
pub mod call_log;
pub mod capture;
pub mod cli;
pub mod config;
pub mod devdefault;
pub mod devpki;
pub mod identity;
pub mod media;
pub mod provisioning;
pub mod qos;
pub mod sdp;
pub mod sip;
pub mod srtp;
pub mod telemetry;
pub mod transaction;
pub mod transport;
