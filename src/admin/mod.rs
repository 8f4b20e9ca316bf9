//! The admin HTTP port: `/metrics` (Prometheus text format), `/healthz` (alive) and
//! `/readyz` (config loaded and every listener bound). Nothing else imports `admin`; it is
//! handed a registry and a readiness latch by `app`.

mod http;
mod readiness;

pub use http::{serve, AdminError, ApiRoutes, JsonView};
pub use readiness::{Latch, Readiness};
