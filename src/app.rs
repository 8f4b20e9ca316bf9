//! Wiring: binds every listener from a validated [`Config`], runs the components, and shuts
//! them down in order (stop accepting → broadcast → drain with a deadline).
//!
//! Split in two so tests can use port 0: [`Edge::bind`] binds (and fails fast with exit code
//! 1 on a busy port), [`Edge::run`] serves until the shutdown future completes.

use crate::admin::{self, Readiness};
use crate::config::{ClientCertMode, Config};
use crate::telemetry;
use crate::transport::{metrics::TlsMetrics, tls};
use prometheus::Registry;
use rustls::server::WebPkiClientVerifier;
use rustls::ServerConfig;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncReadExt;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Why the edge could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// A listener address is taken or not allowed.
    #[error("cannot bind {what} on {addr}: {source}")]
    Bind {
        what: &'static str,
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    /// The TLS configuration could not be built from the configured files.
    #[error("TLS configuration: {0}")]
    Tls(String),
    /// Registering metrics failed (a duplicate name: a bug).
    #[error("metrics registration: {0}")]
    Metrics(#[from] prometheus::Error),
    /// The admin HTTP server failed.
    #[error(transparent)]
    Admin(#[from] admin::AdminError),
}

impl AppError {
    pub fn label(&self) -> &'static str {
        match self {
            Self::Bind { .. } => "bind",
            Self::Tls(_) => "tls",
            Self::Metrics(_) => "metrics",
            Self::Admin(_) => "admin",
        }
    }
}

/// A bound, not yet running edge.
pub struct Edge {
    config: Config,
    registry: Registry,
    readiness: Readiness,
    tls_listener: TcpListener,
    admin_listener: TcpListener,
    server_config: watch::Sender<Arc<ServerConfig>>,
    tls_metrics: TlsMetrics,
}

/// Builds the phone listener's rustls configuration: TLS 1.2 and 1.3 only, the configured
/// server certificate, client certificates verified against every enabled vendor CA.
pub fn build_server_config(config: &Config) -> Result<Arc<ServerConfig>, AppError> {
    use crate::config::files;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    let mut crls = Vec::new();
    for (name, v) in &config.vendors {
        if v.enabled == Some(false) {
            continue;
        }
        for p in &v.ca {
            let certs = files::read_certificates(p).map_err(|e| AppError::Tls(e.to_string()))?;
            for c in certs {
                roots.add(c).map_err(|e| {
                    AppError::Tls(format!("vendors.{name}.ca {}: {e}", p.display()))
                })?;
            }
        }
        for p in &v.crl {
            crls.extend(files::read_crls(p).map_err(|e| AppError::Tls(e.to_string()))?);
        }
    }
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| AppError::Tls(e.to_string()))?;
    let verifier = match config.tls.client_cert {
        ClientCertMode::Off => WebPkiClientVerifier::no_client_auth(),
        mode => {
            let b = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                .with_crls(crls);
            let b = if mode == ClientCertMode::Optional {
                b.allow_unauthenticated()
            } else {
                b
            };
            b.build().map_err(|e| AppError::Tls(e.to_string()))?
        }
    };
    let first = config
        .tls
        .certificates
        .first()
        .ok_or_else(|| AppError::Tls("no [[tls.certificates]] configured".into()))?;
    let chain = files::read_certificates(&first.cert).map_err(|e| AppError::Tls(e.to_string()))?;
    let key = files::read_private_key(&first.key).map_err(|e| AppError::Tls(e.to_string()))?;
    let server = builder
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(|e| AppError::Tls(format!("{}: {e}", first.cert.display())))?;
    Ok(Arc::new(server))
}

impl Edge {
    /// Binds every listener. Nothing is served until [`Edge::run`].
    pub async fn bind(config: Config) -> Result<Self, AppError> {
        let registry = telemetry::new_registry();
        let readiness = Readiness::new();
        let tls_metrics = TlsMetrics::register(&registry)?;
        let server_config = build_server_config(&config)?;
        let bind = |what: &'static str, addr: SocketAddr| async move {
            TcpListener::bind(addr)
                .await
                .map_err(|source| AppError::Bind { what, addr, source })
        };
        let tls_listener = bind("the phone TLS listener (tls.listen)", config.tls.listen).await?;
        let admin_listener =
            bind("the admin HTTP port (admin.listen)", config.admin.listen).await?;
        let (server_config, _) = watch::channel(server_config);
        Ok(Self {
            config,
            registry,
            readiness,
            tls_listener,
            admin_listener,
            server_config,
            tls_metrics,
        })
    }

    /// Where the phone TLS listener is bound (useful with port 0).
    pub fn tls_addr(&self) -> std::io::Result<SocketAddr> {
        self.tls_listener.local_addr()
    }

    /// Where the admin HTTP port is bound.
    pub fn admin_addr(&self) -> std::io::Result<SocketAddr> {
        self.admin_listener.local_addr()
    }

    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Serves until `shutdown` completes, then stops accepting, tells every connection to
    /// finish and waits for them up to `shutdown.drain_timeout_secs`.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send) -> Result<(), AppError> {
        let cancel = CancellationToken::new();
        let tracker = TaskTracker::new();
        let startup = self.readiness.latch();
        let tls_addr = self.tls_addr().map(|a| a.to_string()).unwrap_or_default();
        let admin_addr = self.admin_addr().map(|a| a.to_string()).unwrap_or_default();

        let admin_cancel = CancellationToken::new();
        let admin_task = tokio::spawn(admin::serve(
            self.admin_listener,
            self.registry.clone(),
            self.readiness.clone(),
            admin_cancel.clone().cancelled_owned(),
        ));

        let handler: tls::ConnectionHandler = Arc::new(|mut stream, peer, cancel| {
            Box::pin(async move {
                // Until the SIP core runs on this connection, keep it open and drain it.
                let mut buf = vec![0u8; 4096];
                loop {
                    tokio::select! {
                        _ = cancel.cancelled() => break,
                        r = stream.read(&mut buf) => match r {
                            Ok(0) | Err(_) => break,
                            Ok(_) => {}
                        }
                    }
                }
                tracing::debug!(%peer, "phone connection closed");
            })
        });
        let accept = tokio::spawn(tls::accept_loop(
            self.tls_listener,
            self.server_config.subscribe(),
            Duration::from_secs(self.config.tls.handshake_timeout_secs),
            self.tls_metrics.clone(),
            handler,
            tracker.clone(),
            cancel.clone(),
        ));

        startup.release();
        tracing::info!(
            tls = %tls_addr,
            admin = %admin_addr,
            pbx = %self.config.pbx.address,
            "pbx-edge ready"
        );

        shutdown.await;
        tracing::info!(
            drain_timeout_secs = self.config.shutdown.drain_timeout_secs,
            "shutting down: no new connections, draining"
        );
        self.readiness.set_draining();
        cancel.cancel();
        let _ = accept.await;
        tracker.close();
        let drain = Duration::from_secs(self.config.shutdown.drain_timeout_secs);
        if tokio::time::timeout(drain, tracker.wait()).await.is_err() {
            tracing::warn!("drain timeout reached; closing what is left");
        }
        admin_cancel.cancel();
        match admin_task.await {
            Ok(r) => r?,
            Err(e) => tracing::error!(error = %e, "admin task ended abnormally"),
        }
        tracing::info!("pbx-edge stopped");
        Ok(())
    }
}

/// Completes on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot listen for SIGTERM; only Ctrl-C stops the edge");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received"),
    }
}
