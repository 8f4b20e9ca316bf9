//! The phone-facing TLS accept loop: takes the current `ServerConfig` for every accept (so a
//! reload applies to new connections at once), bounds the handshake in time, classifies and
//! counts failures, and hands every established connection to a handler.

use super::metrics::TlsMetrics;
use rustls::ServerConfig;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_rustls::server::TlsStream;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

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

/// Why a handshake failed, as a `reason` label (DESIGN.md's classification).
pub fn classify_handshake_error(e: &std::io::Error) -> &'static str {
    use rustls::{CertificateError, Error as TlsError};
    let Some(tls) = e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<TlsError>())
    else {
        return match e.kind() {
            std::io::ErrorKind::UnexpectedEof
            | std::io::ErrorKind::ConnectionReset
            | std::io::ErrorKind::BrokenPipe => "closed_by_peer",
            _ => "other",
        };
    };
    match tls {
        TlsError::InvalidCertificate(c) => match c {
            CertificateError::UnknownIssuer => "issuer_unknown",
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => "expired",
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                "not_yet_valid"
            }
            CertificateError::Revoked => "revoked",
            CertificateError::InvalidPurpose | CertificateError::InvalidPurposeContext { .. } => {
                "bad_key_usage"
            }
            CertificateError::BadSignature
            | CertificateError::UnsupportedSignatureAlgorithmContext { .. } => "untrusted",
            _ => "untrusted",
        },
        TlsError::NoCertificatesPresented => "no_certificate",
        TlsError::PeerIncompatible(_)
        | TlsError::PeerMisbehaved(_)
        | TlsError::InappropriateHandshakeMessage { .. }
        | TlsError::InappropriateMessage { .. }
        | TlsError::InvalidMessage(_) => "protocol",
        TlsError::AlertReceived(_) => "alert_from_peer",
        _ => "other",
    }
}

/// Accepts phone connections until `cancel` fires.
pub async fn accept_loop(
    listener: TcpListener,
    server_config: watch::Receiver<Arc<ServerConfig>>,
    handshake_timeout: Duration,
    metrics: TlsMetrics,
    handler: ConnectionHandler,
    tracker: TaskTracker,
    cancel: CancellationToken,
) {
    loop {
        let accepted = tokio::select! {
            _ = cancel.cancelled() => break,
            a = listener.accept() => a,
        };
        let (tcp, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // EMFILE and friends: back off briefly instead of spinning.
                tracing::warn!(error = %e, "accept on the TLS listener failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = tokio_rustls::TlsAcceptor::from(server_config.borrow().clone());
        let metrics = metrics.clone();
        let handler = handler.clone();
        let cancel = cancel.clone();
        tracker.spawn(async move {
            let stream = match tokio::time::timeout(handshake_timeout, acceptor.accept(tcp)).await {
                Err(_) => {
                    metrics
                        .handshake_failures
                        .with_label_values(&["timeout", "unknown"])
                        .inc();
                    tracing::info!(%peer, reason = "timeout", "TLS handshake refused");
                    return;
                }
                Ok(Err(e)) => {
                    let reason = classify_handshake_error(&e);
                    metrics
                        .handshake_failures
                        .with_label_values(&[reason, "unknown"])
                        .inc();
                    tracing::info!(%peer, reason, error = %e, "TLS handshake refused");
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
