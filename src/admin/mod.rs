//! The admin HTTP port: `/metrics` (Prometheus text format), `/healthz` (alive),
//! `/readyz` (config loaded and every listener bound) and `/api/*` (guarded, see
//! [`access`]). Nothing else imports `admin`; it is handed a registry and a readiness latch
//! by `app`.

pub mod access;
mod http;
mod readiness;

pub use access::ApiAccess;
pub use http::{serve, AdminError, ApiRoutes, JsonView};
pub use readiness::{Latch, Readiness, ReadyGauge};
