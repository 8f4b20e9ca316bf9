//! The admin HTTP server (axum).

use super::access::{self, ApiAccess, ApiRefusal};
use super::Readiness;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use prometheus::{Encoder, IntCounterVec, Opts, Registry, TextEncoder};
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
    access: Arc<ApiAccess>,
    refused: IntCounterVec,
}

async fn registrations(
    State(s): State<AdminState>,
    headers: HeaderMap,
) -> axum::response::Response {
    if let Err(r) = api_allowed(&s, &headers).await {
        return refuse(&s, r);
    }
    json_or_unavailable((s.api.registrations)().await)
}

async fn calls(State(s): State<AdminState>, headers: HeaderMap) -> axum::response::Response {
    if let Err(r) = api_allowed(&s, &headers).await {
        return refuse(&s, r);
    }
    json_or_unavailable((s.api.calls)().await)
}

/// The `/api/*` guard (see [`access`]).
async fn api_allowed(s: &AdminState, headers: &HeaderMap) -> Result<(), ApiRefusal> {
    match &*s.access {
        ApiAccess::Open => Ok(()),
        ApiAccess::Disabled => Err(ApiRefusal::Disabled),
        ApiAccess::Token(file) => {
            let text = tokio::fs::read_to_string(file).await.map_err(|e| {
                tracing::warn!(file = %file.display(), error = %e, "admin.api_token_file cannot be read; /api/* refused");
                ApiRefusal::TokenUnavailable
            })?;
            let expected = access::token_from_file_text(&text).ok_or_else(|| {
                tracing::warn!(file = %file.display(), "admin.api_token_file holds no token of at least {} characters; /api/* refused", access::MIN_TOKEN_LEN);
                ApiRefusal::TokenUnavailable
            })?;
            access::check_bearer(
                expected,
                headers.get(header::AUTHORIZATION).map(|v| v.as_bytes()),
            )
        }
    }
}

fn refuse(s: &AdminState, r: ApiRefusal) -> axum::response::Response {
    s.refused.with_label_values(&[r.label()]).inc();
    let status = StatusCode::from_u16(r.status()).unwrap_or(StatusCode::FORBIDDEN);
    let mut resp = (status, format!("{r}\n")).into_response();
    if status == StatusCode::UNAUTHORIZED {
        // RFC 6750 §3: a 401 names the scheme it wants.
        resp.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Bearer realm=\"pbx-edge admin\""),
        );
    }
    resp
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

/// Serves the admin endpoints on `listener` until `shutdown` completes; `/api/*` guarded by
/// `access`.
pub async fn serve(
    listener: TcpListener,
    registry: Registry,
    readiness: Readiness,
    api: ApiRoutes,
    access: ApiAccess,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), AdminError> {
    let refused = IntCounterVec::new(
        Opts::new(
            "pbx_edge_admin_api_refused_total",
            "Requests to /api/* refused by the admin API's access rule, by reason.",
        ),
        &["reason"],
    )
    .map_err(|e| AdminError::Serve(std::io::Error::other(e)))?;
    for r in ApiRefusal::ALL {
        refused.with_label_values(&[r.label()]);
    }
    // Registering twice (a second server on one registry) keeps the first collector.
    let _ = registry.register(Box::new(refused.clone()));
    tracing::info!(access = access.describe(), "admin API /api/* access");
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
            access: Arc::new(access),
            refused,
        });
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(AdminError::Serve)
}
