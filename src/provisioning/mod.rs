//! The optional HTTPS provisioning gateway (DESIGN.md `[provisioning]`): phones fetch their
//! configuration files over HTTPS, authenticated by the same server certificates and the same
//! vendor device-certificate verification as the SIP listener (a client certificate is always
//! required here, whatever `tls.client_cert` says), and each device may fetch only the paths
//! its MAC is allowed (`identity::Inventory::provisioning_access`).
//!
//! - [`path`] (PURE): the request path, percent-decoded once and refused unless clean;
//! - [`gateway`]: HTTP/1.1 over the TLS stream (hyper), authorization per request against the
//!   current identity snapshot, files from `provisioning.root` or a forward to
//!   `provisioning.upstream` with `X-Pbx-Edge-Mac` / `X-Pbx-Edge-Vendor`;
//! - [`metrics`]: the `pbx_edge_provisioning_*` counters.
//!
//! The TLS accept loop (handshake timeout, failure classification and counting) is the SIP
//! listener's, `transport::tls::accept_loop`, with the snapshot's provisioning `ServerConfig`.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub mod gateway;
pub mod metrics;
pub mod path;

pub use gateway::{Gateway, GatewayError};
pub use metrics::ProvisioningMetrics;
