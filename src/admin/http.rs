//! The admin HTTP server (axum).

use super::Readiness;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use prometheus::{Encoder, Registry, TextEncoder};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use tokio::net::TcpListener;

/// Why the admin server stopped.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// Serving HTTP failed (the listener broke).
    #[error("admin HTTP server failed: {0}")]
    Serve(#[source] std::io::Error),
}

impl AdminError {
    pub fn label(&self) -> &'static str {
        match self {
            Self::Serve(_) => "serve",
        }
    }
}

/// A JSON view another component builds on each request; `None` when it cannot answer now
/// (the request gets 503).
pub type JsonView =
    Arc<dyn Fn() -> Pin<Box<dyn Future<Output = Option<serde_json::Value>> + Send>> + Send + Sync>;

/// The `/api/...` routes and where their data comes from.
#[derive(Clone)]
pub struct ApiRoutes {
    /// `GET /api/registrations`.
    pub registrations: JsonView,
    /// `GET /api/calls`.
    pub calls: JsonView,
}

#[derive(Clone)]
struct AdminState {
    registry: Registry,
    readiness: Readiness,
    api: ApiRoutes,
}

async fn registrations(State(s): State<AdminState>) -> axum::response::Response {
    json_or_unavailable((s.api.registrations)().await)
}

async fn calls(State(s): State<AdminState>) -> axum::response::Response {
    json_or_unavailable((s.api.calls)().await)
}

fn json_or_unavailable(view: Option<serde_json::Value>) -> axum::response::Response {
    match view {
        Some(v) => axum::Json(v).into_response(),
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            "the SIP core did not answer in time\n",
        )
            .into_response(),
    }
}

async fn metrics(State(s): State<AdminState>) -> impl IntoResponse {
    let encoder = TextEncoder::new();
    let mut buf = Vec::new();
    match encoder.encode(&s.registry.gather(), &mut buf) {
        Ok(()) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, encoder.format_type().to_owned())],
            buf,
        ),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            [(header::CONTENT_TYPE, "text/plain".to_owned())],
            format!("encoding metrics failed: {e}\n").into_bytes(),
        ),
    }
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(s): State<AdminState>) -> (StatusCode, &'static str) {
    if s.readiness.is_ready() {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
    }
}

/// Serves the admin endpoints on `listener` until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    registry: Registry,
    readiness: Readiness,
    api: ApiRoutes,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), AdminError> {
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/api/registrations", get(registrations))
        .route("/api/calls", get(calls))
        .with_state(AdminState {
            registry,
            readiness,
            api,
        });
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(AdminError::Serve)
}
