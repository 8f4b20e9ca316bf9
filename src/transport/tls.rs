//! The phone-facing TLS accept loop: takes the current `ServerConfig` for every accept (so a
//! reload applies to new connections at once), bounds the handshake in time, classifies and
//! counts failures, and hands every established connection to a handler.
//!
//! Revocation without a gap (issue 11 point 4): the verifier ran against the snapshot of the
//! moment the connection was accepted, so once the handshake completes the whole verdict runs
//! again against the newest snapshot ([`crate::identity::revocation::admit`]) before the
//! handler reads a byte; a refusal is counted in `pbx_edge_tls_handshake_failures_total` under
//! the verdict's reason. While a SIP connection is open it is re-verified on every identity
//! reload and when a certificate of its chain reaches its notAfter; a refusal then closes it,
//! counted in `pbx_edge_tls_connections_revoked_total{reason}` (the provisioning gateway
//! re-verifies per HTTP request instead). Connections without a certificate are held to
//! `anonymous.networks` the same way (point 8).

use super::limits::ConnectionLimiter;
use super::metrics::TlsMetrics;
use crate::identity::revocation::{admit, next_expiry};
use crate::identity::{HandshakeCounters, IdentitySnapshot, ServerConfigs, TlsListener};
use rustls::pki_types::{CertificateDer, UnixTime};
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_rustls::server::TlsStream;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Shortest gap between two log lines about refused connections.
const REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// Longest single wait for a certificate's notAfter: the deadline is re-read from the wall
/// clock after each wait (tokio timers are monotonic; the certificate's end is wall-clock time).
const EXPIRY_RECHECK: Duration = Duration::from_secs(3600);

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
/// at once, before any TLS work. Accepted connections are marked with `dscp` (0 = not).
#[allow(clippy::too_many_arguments)]
pub async fn accept_loop(
    listener: TcpListener,
    server_configs: ServerConfigs,
    handshake_timeout: Duration,
    dscp: u8,
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
    // SIP connections are long-lived and carry calls: they are re-verified while open. The
    // provisioning gateway re-runs the whole verdict for every HTTP request (and answers 403),
    // so an open HTTPS connection never serves a request past a revocation or a notAfter.
    let supervised = server_configs.1 == TlsListener::Sip;
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
        // Set on each accepted socket rather than inherited from the listener: with
        // net.ipv4.tcp_reflect_tos the kernel would give it the phone's marking instead.
        if let Err(e) = crate::qos::mark(&tcp, dscp) {
            tracing::warn!(listener = listener_name, %peer, dscp, error = %e, "cannot set the DSCP of a phone connection");
        }
        let acceptor = tokio_rustls::TlsAcceptor::from(server_configs.current());
        let snapshots = server_configs.0.clone();
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
            let certificates: Vec<CertificateDer<'static>> = stream
                .get_ref()
                .1
                .peer_certificates()
                .map(|c| c.to_vec())
                .unwrap_or_default();
            // The verdict again, against the newest snapshot, before any application byte;
            // `borrow_and_update` marks that snapshot seen, so any later reload wakes the
            // supervision below: there is no moment in which a reload goes unnoticed.
            let mut snapshots = snapshots;
            let snapshot = snapshots.borrow_and_update().clone();
            if let Err(rejection) = admit(&certificates, &snapshot, peer.ip(), UnixTime::now()) {
                counters.record_rejection(&rejection);
                tracing::info!(listener = listener_name, %peer, reason = rejection.reason.label(), "connection refused after the TLS handshake by the current identity snapshot");
                return;
            }
            drop(snapshot);
            metrics.handshakes_ok.inc();
            metrics.connections_active.inc();
            let close = cancel.child_token();
            let run = handler(stream, peer, close.clone());
            if supervised {
                supervise(
                    run,
                    close,
                    &certificates,
                    snapshots,
                    peer,
                    listener_name,
                    &metrics,
                )
                .await;
            } else {
                run.await;
            }
            metrics.connections_active.dec();
        });
    }
}

/// Runs an admitted connection's handler to its end, re-verifying the connection on every
/// identity reload and when a certificate of its chain reaches notAfter; a refusal cancels
/// `close` (the handler then ends the connection) and is counted and logged.
async fn supervise(
    run: Pin<Box<dyn Future<Output = ()> + Send>>,
    close: CancellationToken,
    certificates: &[CertificateDer<'static>],
    mut snapshots: watch::Receiver<Arc<IdentitySnapshot>>,
    peer: SocketAddr,
    listener: &'static str,
    metrics: &TlsMetrics,
) {
    let mut run = run;
    let mut expiry = next_expiry(certificates, SystemTime::now());
    loop {
        let wait = expiry.map(|at| {
            at.duration_since(SystemTime::now())
                .unwrap_or(Duration::ZERO)
                .min(EXPIRY_RECHECK)
        });
        let trigger = tokio::select! {
            _ = &mut run => return,
            changed = snapshots.changed() => match changed {
                Ok(()) => "identity reload",
                // The reload side is gone (shutdown): nothing can change any more.
                Err(_) => break,
            },
            _ = async {
                match wait {
                    Some(wait) => tokio::time::sleep(wait).await,
                    None => std::future::pending::<()>().await,
                }
            } => {
                if expiry.is_some_and(|at| SystemTime::now() < at) {
                    continue;
                }
                "certificate validity"
            }
        };
        let snapshot = snapshots.borrow_and_update().clone();
        match admit(certificates, &snapshot, peer.ip(), UnixTime::now()) {
            Ok(_) => expiry = next_expiry(certificates, SystemTime::now()),
            Err(rejection) => {
                metrics
                    .connections_revoked
                    .with_label_values(&[rejection.reason.label()])
                    .inc();
                tracing::warn!(
                    listener,
                    %peer,
                    trigger,
                    reason = rejection.reason.label(),
                    vendor = rejection.vendor_label(),
                    subject = %rejection.subject,
                    detail = %rejection.detail,
                    "closing an open phone connection: its certificate no longer passes"
                );
                close.cancel();
                break;
            }
        }
    }
    run.await;
}
