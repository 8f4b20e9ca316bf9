//! The HTTPS side of the gateway: HTTP/1.1 (hyper) over an established phone TLS connection,
//! one identity per connection, one authorization per request against the *current* identity
//! snapshot (an inventory or deny-list reload applies to the next request), then a file from
//! `provisioning.root` or a forward to `provisioning.upstream`.

use std::convert::Infallible;
use std::io::ErrorKind;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::body::Body;
use bytes::Bytes;
use http_body_util::Empty;
use hyper::body::Incoming;
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::http::uri::Authority;
use hyper::{Method, Request, Response, StatusCode, Uri};
use hyper_util::rt::{TokioIo, TokioTimer};
use rustls::pki_types::{CertificateDer, UnixTime};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio_rustls::server::TlsStream;
use tokio_util::io::ReaderStream;
use tokio_util::sync::CancellationToken;

use super::metrics::ProvisioningMetrics;
use super::path::{clean_request_path, encode_for_upstream};
use crate::config::pattern::{PathPattern, PatternError};
use crate::config::ProvisioningConfig;
use crate::identity::revocation::recheck;
use crate::identity::verify::identity_of;
use crate::identity::{Identity, IdentitySnapshot};
use crate::transport::flow::FlowId;
use crate::transport::rate::{Admission, BudgetKey, RateBudget, RequestRateLimiter};
use crate::transport::tls::ConnectionHandler;

/// Budget buckets kept before refilled ones are swept out.
const BUDGET_SWEEP_ABOVE: usize = 1024;
/// How long a client may take to send a request's headers (slow-loris bound).
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Request line + headers buffer (hyper's minimum is 8 KiB; provisioning requests are small).
const MAX_HEADER_BUFFER: usize = 16 * 1024;

/// Request headers copied from the phone to the upstream; nothing else is forwarded, so a
/// phone's own `X-Pbx-Edge-*` headers never reach it.
const FORWARDED_HEADERS: [HeaderName; 7] = [
    header::USER_AGENT,
    header::ACCEPT,
    header::IF_MODIFIED_SINCE,
    header::IF_NONE_MATCH,
    header::RANGE,
    header::IF_RANGE,
    header::ACCEPT_LANGUAGE,
];

/// Added toward the upstream: the device MAC (12 lower-case hex digits) of the certificate.
pub const MAC_HEADER: &str = "x-pbx-edge-mac";
/// Added toward the upstream: the vendor profile that verified the certificate.
pub const VENDOR_HEADER: &str = "x-pbx-edge-vendor";

/// Why the gateway cannot start (validation catches these first; this is the backstop).
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// Both or neither of `upstream` and `root`.
    #[error("provisioning: set exactly one of provisioning.upstream and provisioning.root")]
    Backend,
    /// `provisioning.root` cannot be resolved.
    #[error("provisioning.root {path}: {source}")]
    Root {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// `provisioning.upstream` is not `http://host[:port]`.
    #[error("provisioning.upstream {0:?} is not an http://host[:port] URL")]
    Upstream(String),
    /// A `provisioning.common` pattern does not parse.
    #[error("provisioning.common[{index}] {value:?}: {source}")]
    Pattern {
        index: usize,
        value: String,
        #[source]
        source: PatternError,
    },
}

impl GatewayError {
    pub fn label(&self) -> &'static str {
        match self {
            Self::Backend => "provisioning_backend",
            Self::Root { .. } => "provisioning_root",
            Self::Upstream(_) => "provisioning_upstream",
            Self::Pattern { .. } => "provisioning_pattern",
        }
    }
}

/// Where allowed files come from.
#[derive(Debug)]
enum Backend {
    /// Canonical path of `provisioning.root`.
    Root(PathBuf),
    Upstream {
        /// `host:port` for the Host header.
        authority: Authority,
        /// `host:port` to connect to (port 80 when absent).
        connect: String,
    },
}

/// The outcome of one request: the `outcome` label of `pbx_edge_provisioning_requests_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Served,
    NotModified,
    NotFound,
    Denied,
    BadRequest,
    MethodNotAllowed,
    UpstreamError,
    UpstreamTimeout,
    RateLimited,
    Error,
}

impl Outcome {
    fn label(self) -> &'static str {
        match self {
            Self::Served => "served",
            Self::NotModified => "not_modified",
            Self::NotFound => "not_found",
            Self::Denied => "denied",
            Self::BadRequest => "bad_request",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::UpstreamError => "upstream_error",
            Self::UpstreamTimeout => "upstream_timeout",
            Self::RateLimited => "rate_limited",
            Self::Error => "error",
        }
    }
}

/// The configured gateway; [`Gateway::handler`] serves connections for the TLS accept loop.
#[derive(Debug)]
pub struct Gateway {
    backend: Backend,
    common: Vec<PathPattern>,
    upstream_timeout: Duration,
    /// Requests per device (MAC; per connection otherwise), checked before any work:
    /// a stolen certificate must not make the edge re-verify chains and log without end.
    budget: Mutex<RequestRateLimiter>,
    next_connection: AtomicU64,
}

impl Gateway {
    /// Resolves the root (canonical, so symlinks are judged against the real directory) or
    /// parses the upstream URL, and parses the common patterns.
    pub fn new(config: &ProvisioningConfig, budget: RateBudget) -> Result<Self, GatewayError> {
        let backend = match (&config.root, &config.upstream) {
            (Some(root), None) => {
                let canonical =
                    std::fs::canonicalize(root).map_err(|source| GatewayError::Root {
                        path: root.clone(),
                        source,
                    })?;
                Backend::Root(canonical)
            }
            (None, Some(upstream)) => upstream_backend(upstream)
                .ok_or_else(|| GatewayError::Upstream(upstream.clone()))?,
            _ => return Err(GatewayError::Backend),
        };
        let common = config
            .common
            .iter()
            .enumerate()
            .map(|(index, value)| {
                PathPattern::parse(value).map_err(|source| GatewayError::Pattern {
                    index,
                    value: value.clone(),
                    source,
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(Self {
            backend,
            common,
            upstream_timeout: Duration::from_secs(config.upstream_timeout_secs),
            budget: Mutex::new(RequestRateLimiter::new(budget)),
            next_connection: AtomicU64::new(1),
        })
    }

    /// What the accept loop runs for each established connection.
    pub fn handler(
        self: Arc<Self>,
        identity: watch::Receiver<Arc<IdentitySnapshot>>,
        metrics: ProvisioningMetrics,
    ) -> ConnectionHandler {
        Arc::new(move |stream, peer, cancel| {
            let certificates: Vec<CertificateDer<'static>> = stream
                .get_ref()
                .1
                .peer_certificates()
                .map(|c| c.to_vec())
                .unwrap_or_default();
            // Whose budget this connection's requests draw from: the device (all its
            // connections), else this connection alone.
            let connection_id = FlowId(self.next_connection.fetch_add(1, Ordering::Relaxed));
            let budget_key = match identity_of(Some(&certificates), &identity.borrow()) {
                Ok(who) => BudgetKey::of(&who, connection_id),
                Err(_) => BudgetKey::Flow(connection_id),
            };
            let connection = Connection {
                gateway: self.clone(),
                identity: identity.clone(),
                metrics: metrics.clone(),
                certificates,
                peer,
                budget_key,
            };
            Box::pin(serve_connection(Arc::new(connection), stream, cancel))
        })
    }
}

fn upstream_backend(text: &str) -> Option<Backend> {
    let uri: Uri = text.parse().ok()?;
    if uri.scheme_str() != Some("http") {
        return None;
    }
    let authority = uri.authority()?.clone();
    if authority.as_str().contains('@') {
        return None;
    }
    let connect = match authority.port_u16() {
        Some(_) => authority.as_str().to_owned(),
        None => format!("{}:80", authority.host()),
    };
    Some(Backend::Upstream { authority, connect })
}

/// One phone connection: who it is (its certificates, re-identified per request).
struct Connection {
    gateway: Arc<Gateway>,
    identity: watch::Receiver<Arc<IdentitySnapshot>>,
    metrics: ProvisioningMetrics,
    certificates: Vec<CertificateDer<'static>>,
    peer: SocketAddr,
    budget_key: BudgetKey,
}

async fn serve_connection(
    connection: Arc<Connection>,
    stream: TlsStream<TcpStream>,
    cancel: CancellationToken,
) {
    let peer = connection.peer;
    let service = hyper::service::service_fn(move |request| {
        let connection = connection.clone();
        async move { Ok::<_, Infallible>(connection.handle(request).await) }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .max_buf_size(MAX_HEADER_BUFFER);
    let serving = builder.serve_connection(TokioIo::new(stream), service);
    tokio::pin!(serving);
    let result = tokio::select! {
        r = serving.as_mut() => r,
        _ = cancel.cancelled() => {
            // Shutdown: finish the response in flight, then close (the app bounds the wait).
            serving.as_mut().graceful_shutdown();
            serving.await
        }
    };
    if let Err(error) = result {
        tracing::debug!(%peer, %error, "provisioning connection ended with an error");
    }
}

fn respond(status: StatusCode, text: &'static str) -> Response<Body> {
    let mut response = Response::new(Body::from(text));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// At most 200 characters of untrusted text for a log line (Debug-escaped by the caller).
fn excerpt(text: &str) -> &str {
    match text.char_indices().nth(200) {
        Some((i, _)) => &text[..i],
        None => text,
    }
}

impl Connection {
    async fn handle(&self, request: Request<Incoming>) -> Response<Body> {
        let (outcome, response) = self.decide(request).await;
        self.metrics
            .requests
            .with_label_values(&[outcome.label()])
            .inc();
        response
    }

    /// Charges one request to this connection's budget; over it, 429 with Retry-After
    /// (RFC 6585 §4), logged once per episode.
    fn over_budget(&self) -> Option<Response<Body>> {
        let now = std::time::Instant::now();
        let admission = {
            let mut budget = self
                .gateway
                .budget
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            // Forget refilled buckets now and then, so the table tracks busy devices only.
            if budget.len() > BUDGET_SWEEP_ABOVE {
                budget.sweep(now);
            }
            budget.admit(self.budget_key, now)
        };
        let Admission::Refused {
            retry_after_secs,
            first,
        } = admission
        else {
            return None;
        };
        if first {
            tracing::warn!(peer = %self.peer, key = ?self.budget_key, "provisioning requests over the device's budget (sip.phone_requests_per_second); answering 429 until it slows down");
        }
        let mut response = respond(StatusCode::TOO_MANY_REQUESTS, "too many requests\n");
        if let Ok(value) = HeaderValue::from_str(&retry_after_secs.to_string()) {
            response.headers_mut().insert(header::RETRY_AFTER, value);
        }
        Some(response)
    }

    async fn decide(&self, request: Request<Incoming>) -> (Outcome, Response<Body>) {
        let peer = self.peer;
        // GET and HEAD carry no content the gateway would use (RFC 9110 §9.3.1); hyper
        // discards whatever a client sends.
        let (request, _) = request.into_parts();
        if let Some(response) = self.over_budget() {
            return (Outcome::RateLimited, response);
        }
        // The whole handshake verdict again, against the current snapshot: a reload since the
        // handshake (device removed from the inventory, MAC on the deny-list, a new CRL) or
        // an expiry applies to this request, also on a kept-alive connection.
        let snapshot = self.identity.borrow().clone();
        let identity = match recheck(Some(&self.certificates), &snapshot, UnixTime::now()) {
            Ok(identity) => identity,
            Err(rejection) => {
                tracing::info!(%peer, reason = rejection.reason.label(), detail = %rejection.detail, "provisioning refused: the device certificate no longer passes");
                return (
                    Outcome::Denied,
                    respond(StatusCode::FORBIDDEN, "forbidden\n"),
                );
            }
        };
        let method = request.method.clone();
        if method != Method::GET && method != Method::HEAD {
            // RFC 9110 §15.5.6: a 405 lists the allowed methods in Allow.
            let mut response = respond(StatusCode::METHOD_NOT_ALLOWED, "only GET and HEAD\n");
            response
                .headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
            return (Outcome::MethodNotAllowed, response);
        }
        let raw_path = request.uri.path();
        let path = match clean_request_path(raw_path) {
            Ok(path) => path,
            Err(refusal) => {
                tracing::info!(%peer, %identity, path = ?excerpt(raw_path), reason = refusal.label(), "provisioning request refused: bad path");
                return (
                    Outcome::BadRequest,
                    respond(StatusCode::BAD_REQUEST, "bad path\n"),
                );
            }
        };
        let grant =
            snapshot
                .inventory()
                .provisioning_access(&identity, &path, &self.gateway.common);
        drop(snapshot);
        let Some(grant) = grant else {
            tracing::info!(%peer, %identity, path = %path, "provisioning request denied: path not allowed for this device");
            return (
                Outcome::Denied,
                respond(StatusCode::FORBIDDEN, "forbidden\n"),
            );
        };
        let head = method == Method::HEAD;
        let (outcome, response) = match &self.gateway.backend {
            Backend::Root(root) => serve_file(root, &path, head, &request.headers).await,
            Backend::Upstream { authority, connect } => {
                self.forward(authority, connect, &request, &path, &identity)
                    .await
            }
        };
        tracing::info!(%peer, %identity, path = %path, grant = grant.label(), status = response.status().as_u16(), outcome = outcome.label(), "provisioning request");
        (outcome, response)
    }

    /// Forwards an allowed request to the upstream and streams its answer back.
    async fn forward(
        &self,
        authority: &Authority,
        connect: &str,
        request: &hyper::http::request::Parts,
        path: &str,
        identity: &Identity,
    ) -> (Outcome, Response<Body>) {
        let peer = self.peer;
        // The query is not forwarded: authorization covers the path only, and a query would
        // let a device steer a script on the upstream (`/<own mac>.cfg?mac=<another>`).
        let target = encode_for_upstream(path);
        let mut upstream_request = Request::new(Empty::<Bytes>::new());
        *upstream_request.method_mut() = request.method.clone();
        *upstream_request.uri_mut() = match target.parse() {
            Ok(uri) => uri,
            Err(_) => {
                return (
                    Outcome::BadRequest,
                    respond(StatusCode::BAD_REQUEST, "bad path\n"),
                )
            }
        };
        let headers = upstream_request.headers_mut();
        if let Ok(host) = HeaderValue::from_str(authority.as_str()) {
            headers.insert(header::HOST, host);
        }
        for name in &FORWARDED_HEADERS {
            for value in request.headers.get_all(name) {
                headers.append(name.clone(), value.clone());
            }
        }
        if let Some(mac) = identity.mac() {
            if let Ok(value) = HeaderValue::from_str(&mac.compact()) {
                headers.insert(HeaderName::from_static(MAC_HEADER), value);
            }
        }
        if let Some(vendor) = identity.vendor() {
            if let Ok(value) = HeaderValue::from_str(vendor) {
                headers.insert(HeaderName::from_static(VENDOR_HEADER), value);
            }
        }

        let exchange = async {
            let tcp = TcpStream::connect(connect).await?;
            let _ = tcp.set_nodelay(true);
            let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
                .await
                .map_err(std::io::Error::other)?;
            tokio::spawn(async move {
                if let Err(error) = connection.await {
                    tracing::debug!(%error, "upstream provisioning connection ended with an error");
                }
            });
            sender
                .send_request(upstream_request)
                .await
                .map_err(std::io::Error::other)
        };
        let answer = match tokio::time::timeout(self.gateway.upstream_timeout, exchange).await {
            Err(_) => {
                tracing::warn!(%peer, upstream = %connect, timeout_secs = self.gateway.upstream_timeout.as_secs(), "upstream provisioning server did not answer in time");
                return (
                    Outcome::UpstreamTimeout,
                    respond(StatusCode::GATEWAY_TIMEOUT, "upstream timeout\n"),
                );
            }
            Ok(Err(error)) => {
                tracing::warn!(%peer, upstream = %connect, %error, "upstream provisioning server unreachable or broken");
                return (
                    Outcome::UpstreamError,
                    respond(StatusCode::BAD_GATEWAY, "upstream unavailable\n"),
                );
            }
            Ok(Ok(answer)) => answer,
        };
        let (parts, body) = answer.into_parts();
        let outcome = match parts.status.as_u16() {
            404 | 410 => Outcome::NotFound,
            500..=599 => Outcome::UpstreamError,
            _ => Outcome::Served,
        };
        let mut response = Response::new(Body::new(body));
        *response.status_mut() = parts.status;
        *response.headers_mut() = end_to_end_headers(parts.headers);
        (outcome, response)
    }
}

/// Drops the hop-by-hop headers of the upstream's response (RFC 9110 §7.6.1: Connection,
/// the headers it names, and the classic hop-by-hop list); hyper frames the body itself.
fn end_to_end_headers(mut headers: HeaderMap) -> HeaderMap {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in [
        header::CONNECTION,
        header::TRANSFER_ENCODING,
        header::TE,
        header::TRAILER,
        header::UPGRADE,
        header::PROXY_AUTHENTICATE,
        header::PROXY_AUTHORIZATION,
    ] {
        headers.remove(name);
    }
    headers.remove("keep-alive");
    headers
}

/// Serves `path` (clean, allowed) from the canonical `root`: the resolved file must lie
/// inside it (a symlink out of the root is refused), be a regular file, and exist. Sends
/// `Last-Modified` and answers a matching `If-Modified-Since` with 304 (RFC 9110 §13.1.3),
/// which phones polling for configuration changes rely on.
async fn serve_file(
    root: &Path,
    path: &str,
    head: bool,
    request_headers: &HeaderMap,
) -> (Outcome, Response<Body>) {
    let not_found = || {
        (
            Outcome::NotFound,
            respond(StatusCode::NOT_FOUND, "not found\n"),
        )
    };
    let relative = path.trim_start_matches('/');
    if relative.is_empty() || path.ends_with('/') {
        return not_found();
    }
    let resolved = match tokio::fs::canonicalize(root.join(relative)).await {
        Ok(p) => p,
        Err(e) if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::NotADirectory) => {
            return not_found()
        }
        Err(error) => {
            tracing::warn!(path, %error, "provisioning file cannot be resolved");
            return (
                Outcome::Error,
                respond(StatusCode::INTERNAL_SERVER_ERROR, "error\n"),
            );
        }
    };
    if !resolved.starts_with(root) {
        tracing::warn!(path, resolved = %resolved.display(), "provisioning path resolves outside provisioning.root (a symlink): refused");
        return (
            Outcome::Denied,
            respond(StatusCode::FORBIDDEN, "forbidden\n"),
        );
    }
    let file = match tokio::fs::File::open(&resolved).await {
        Ok(f) => f,
        Err(e) if e.kind() == ErrorKind::NotFound => return not_found(),
        Err(error) => {
            tracing::warn!(path, %error, "provisioning file cannot be opened");
            return (
                Outcome::Error,
                respond(StatusCode::INTERNAL_SERVER_ERROR, "error\n"),
            );
        }
    };
    let (length, modified) = match file.metadata().await {
        Ok(m) if m.is_file() => (m.len(), m.modified().ok()),
        Ok(_) => return not_found(),
        Err(error) => {
            tracing::warn!(path, %error, "provisioning file metadata unreadable");
            return (
                Outcome::Error,
                respond(StatusCode::INTERNAL_SERVER_ERROR, "error\n"),
            );
        }
    };
    // HTTP dates have whole seconds: compare at that resolution.
    let modified = modified.and_then(|m| {
        let secs = m.duration_since(std::time::UNIX_EPOCH).ok()?.as_secs();
        Some(std::time::UNIX_EPOCH + Duration::from_secs(secs))
    });
    let last_modified =
        modified.and_then(|m| HeaderValue::from_str(&httpdate::fmt_http_date(m)).ok());
    // RFC 9110 §13.1.3: ignored when If-None-Match is present (no ETags here, so that one
    // never matches and the file is sent) or when the date does not parse.
    let since = request_headers
        .get(header::IF_MODIFIED_SINCE)
        .filter(|_| !request_headers.contains_key(header::IF_NONE_MATCH))
        .and_then(|v| v.to_str().ok())
        .and_then(|v| httpdate::parse_http_date(v).ok());
    // Exactly the date this edge sent (nginx's `if_modified_since exact`), not "at or
    // before": an operator who restores an older file (backup, rsync -a keeps its mtime)
    // must see phones fetch it, not keep answering 304 (RFC 9110 §13.1.3 allows both).
    if let (Some(modified), Some(since)) = (modified, since) {
        if modified == since {
            let mut response = Response::new(Body::empty());
            *response.status_mut() = StatusCode::NOT_MODIFIED;
            if let Some(value) = last_modified {
                response.headers_mut().insert(header::LAST_MODIFIED, value);
            }
            return (Outcome::NotModified, response);
        }
    }
    let body = if head {
        Body::empty()
    } else {
        Body::from_stream(ReaderStream::new(file))
    };
    let mut response = Response::new(body);
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(content_type(path)),
    );
    if let Some(value) = last_modified {
        headers.insert(header::LAST_MODIFIED, value);
    }
    (Outcome::Served, response)
}

/// Content type by extension, for the file kinds phones fetch.
fn content_type(path: &str) -> &'static str {
    let extension = path
        .rsplit_once('.')
        .map(|(_, e)| e.to_ascii_lowercase())
        .unwrap_or_default();
    match extension.as_str() {
        "xml" => "application/xml",
        "cfg" | "conf" | "ini" | "txt" | "boot" => "text/plain; charset=utf-8",
        "htm" | "html" => "text/html; charset=utf-8",
        "json" => "application/json",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_urls() {
        let Some(Backend::Upstream { authority, connect }) =
            upstream_backend("http://127.0.0.1:8080")
        else {
            panic!("parses");
        };
        assert_eq!(authority.as_str(), "127.0.0.1:8080");
        assert_eq!(connect, "127.0.0.1:8080");
        let Some(Backend::Upstream { connect, .. }) = upstream_backend("http://prov.lan") else {
            panic!("parses");
        };
        assert_eq!(connect, "prov.lan:80");
        assert!(upstream_backend("https://prov.lan").is_none());
        assert!(upstream_backend("prov.lan:80").is_none());
        assert!(upstream_backend("http://u:p@prov.lan").is_none());
    }

    #[test]
    fn hop_by_hop_headers_are_dropped() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("close, x-secret"),
        );
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        h.insert(header::ETAG, HeaderValue::from_static("\"abc\""));
        let h = end_to_end_headers(h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key(header::ETAG));
    }

    #[test]
    fn content_types() {
        assert_eq!(content_type("/a/b.XML"), "application/xml");
        assert_eq!(
            content_type("/y000000000044.cfg"),
            "text/plain; charset=utf-8"
        );
        assert_eq!(content_type("/firmware/x.rom"), "application/octet-stream");
        assert_eq!(content_type("/noext"), "application/octet-stream");
    }
}
