//! The phone-facing TLS accept loop: takes the current `ServerConfig` for every accept (so a
//! reload applies to new connections at once), bounds the handshake in time, classifies and
//! counts failures, and hands every established connection to a handler.

use super::limits::ConnectionLimiter;
use super::metrics::TlsMetrics;
use crate::app::ServerConfigs;
use crate::identity::HandshakeCounters;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::server::TlsStream;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Shortest gap between two log lines about refused connections.
const REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// What runs an established phone connection; returns when the connection is done.
pub type ConnectionHandler = Arc<
    dyn Fn(
            TlsStream<TcpStream>,
            SocketAddr,
            CancellationToken,
        ) -> Pin<Box<dyn Future<Output = ()> + Send>>
        + Send
        + Sync,
>;

/// The TLS error inside an I/O error from tokio-rustls, if any.
fn tls_error(e: &std::io::Error) -> Option<&rustls::Error> {
    e.get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
}

/// Label of a handshake failure that is not a TLS error.
fn io_failure_reason(e: &std::io::Error) -> &'static str {
    match e.kind() {
        std::io::ErrorKind::UnexpectedEof
        | std::io::ErrorKind::ConnectionReset
        | std::io::ErrorKind::BrokenPipe => "closed_by_peer",
        _ => "other",
    }
}

/// Accepts phone connections until `cancel` fires; established connections get
/// `connections` (cancelled later, after the drain). Connections beyond `limits` are closed
/// at once, before any TLS work.
#[allow(clippy::too_many_arguments)]
pub async fn accept_loop(
    listener: TcpListener,
    server_configs: ServerConfigs,
    handshake_timeout: Duration,
    limits: ConnectionLimiter,
    metrics: TlsMetrics,
    counters: Arc<HandshakeCounters>,
    handler: ConnectionHandler,
    tracker: TaskTracker,
    cancel: CancellationToken,
    connections: CancellationToken,
) {
    // Refusals are counted one by one but logged at most every few seconds: a flood must
    // not become a log flood.
    let mut refusal_logged: Option<std::time::Instant> = None;
    let mut refused_since_log = 0u64;
    let listener_name = server_configs.1.label();
    loop {
        let accepted = tokio::select! {
            _ = cancel.cancelled() => break,
            a = listener.accept() => a,
        };
        let (tcp, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // EMFILE and friends: back off briefly instead of spinning.
                tracing::warn!(listener = listener_name, error = %e, "accept on the TLS listener failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let permit = match limits.try_acquire(peer.ip()) {
            Ok(p) => p,
            Err(refusal) => {
                metrics
                    .connections_refused
                    .with_label_values(&[refusal.label()])
                    .inc();
                refused_since_log += 1;
                if refusal_logged.is_none_or(|t| t.elapsed() >= REFUSAL_LOG_INTERVAL) {
                    tracing::warn!(
                        listener = listener_name,
                        %peer,
                        reason = refusal.label(),
                        refused = refused_since_log,
                        open = limits.open(),
                        open_from_peer = limits.open_from(peer.ip()),
                        "phone connections refused by the connection limits"
                    );
                    refusal_logged = Some(std::time::Instant::now());
                    refused_since_log = 0;
                }
                drop(tcp);
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = tokio_rustls::TlsAcceptor::from(server_configs.current());
        let metrics = metrics.clone();
        let counters = counters.clone();
        let handler = handler.clone();
        let cancel = connections.clone();
        tracker.spawn(async move {
            // Held until this connection is gone, however it ends.
            let _permit = permit;
            let stream = match tokio::time::timeout(handshake_timeout, acceptor.accept(tcp)).await {
                Err(_) => {
                    metrics
                        .handshake_failures_local
                        .with_label_values(&["timeout", "none"])
                        .inc();
                    tracing::info!(listener = listener_name, %peer, reason = "timeout", "TLS handshake refused");
                    return;
                }
                Ok(Err(e)) => {
                    // Certificate refusals were counted (with vendor and subject) by the
                    // verifier; this adds what it could not see.
                    let reason = match tls_error(&e) {
                        Some(t) => counters.record_connection_error(t).label(),
                        None => {
                            let r = io_failure_reason(&e);
                            metrics
                                .handshake_failures_local
                                .with_label_values(&[r, "none"])
                                .inc();
                            r
                        }
                    };
                    tracing::info!(listener = listener_name, %peer, reason, error = %e, "TLS handshake refused");
                    return;
                }
                Ok(Ok(s)) => s,
            };
            metrics.handshakes_ok.inc();
            metrics.connections_active.inc();
            handler(stream, peer, cancel).await;
            metrics.connections_active.dec();
        });
    }
}
