//! Wiring: binds every listener from a validated [`Config`], runs the components, reloads
//! identity files, and shuts down in order (stop accepting → drain → close).
//!
//! Split in two so tests can use port 0: [`Edge::bind`] binds (and fails fast with exit code
//! 1 on a busy port), [`Edge::run`] serves until the shutdown future completes.

use crate::admin::{self, ApiRoutes, Readiness};
use crate::b2bua::core::{CoreSettings, CoreViews, SipCore};
use crate::b2bua::metrics::CoreMetrics;
use crate::capture::{Capture, CaptureError, HepMetrics, IpProto};
use crate::config::Config;
use crate::identity::{identity_of, HandshakeCounters, IdentityError, IdentitySnapshot};
use crate::media::{MediaControl, MediaEvent, RelaySettings};
use crate::provisioning::{Gateway, GatewayError, ProvisioningMetrics};
use crate::sdp::{EdgeAddresses, SrtpMode, SrtpPolicy};
use crate::sip::framing::FramingLimits;
use crate::telemetry;
use crate::transaction::fsm::TimerConfig;
use crate::transport::connection::{self, ConnectionSettings};
use crate::transport::flow::FlowTable;
use crate::transport::flow::QueueLimits;
use crate::transport::limits::ConnectionLimiter;
use crate::transport::metrics::{HandshakeFailures, SipTransportMetrics, TlsMetrics};
use crate::transport::pbx::PbxLink;
use crate::transport::rate::RateBudget;
use crate::transport::tls;
use prometheus::{IntCounterVec, Opts, Registry};
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
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
    /// Certificates, CAs, CRLs or the inventory could not be loaded.
    #[error("identity: {0}")]
    Identity(#[from] IdentityError),
    /// Registering metrics failed (a duplicate name: a bug).
    #[error("metrics registration: {0}")]
    Metrics(#[from] prometheus::Error),
    /// The OS random generator failed (no entropy).
    #[error("the OS random generator failed")]
    Random,
    /// The admin HTTP server failed.
    #[error(transparent)]
    Admin(#[from] admin::AdminError),
    /// The media relay could not start (port range, worker threads).
    #[error("media relay: {0}")]
    Media(#[from] crate::media::MediaError),
    /// The provisioning gateway's root, upstream or patterns are unusable.
    #[error(transparent)]
    Provisioning(#[from] GatewayError),
    /// SIP capture (`[hep]`) could not start.
    #[error("SIP capture: {0}")]
    Capture(#[from] CaptureError),
}

impl AppError {
    pub fn label(&self) -> &'static str {
        match self {
            Self::Bind { .. } => "bind",
            Self::Identity(e) => e.label(),
            Self::Metrics(_) => "metrics",
            Self::Random => "random",
            Self::Admin(_) => "admin",
            Self::Media(e) => e.label(),
            Self::Provisioning(e) => e.label(),
            Self::Capture(_) => "capture",
        }
    }
}

/// Start-up options that are not config keys.
#[derive(Debug, Clone)]
pub struct EdgeOptions {
    /// Where the built-in vendor profiles find their CA files (`<dir>/<vendor>/*.pem`):
    /// the `ca/` folder beside the config file.
    pub vendor_ca_dir: PathBuf,
}

impl EdgeOptions {
    /// Built-in vendor CAs from `ca/` beside `config_file` (the layout of `config/`).
    pub fn beside(config_file: &Path) -> Self {
        let dir = config_file.parent().unwrap_or_else(|| Path::new("."));
        Self {
            vendor_ca_dir: dir.join("ca"),
        }
    }
}

/// A bound, not yet running edge.
pub struct Edge {
    config: Config,
    options: EdgeOptions,
    registry: Registry,
    readiness: Readiness,
    tls_listener: TcpListener,
    admin_listener: TcpListener,
    pbx: PbxLink,
    identity: watch::Sender<Arc<IdentitySnapshot>>,
    counters: Arc<HandshakeCounters>,
    tls_metrics: TlsMetrics,
    sip_metrics: SipTransportMetrics,
    core_metrics: CoreMetrics,
    reloads: IntCounterVec,
    media: MediaControl,
    media_events: mpsc::Receiver<MediaEvent>,
    provisioning: Option<ProvisioningListener>,
    /// `[hep]` SIP capture (off when not configured).
    capture: Capture,
}

/// The bound HTTPS provisioning gateway (`[provisioning]`).
struct ProvisioningListener {
    listener: TcpListener,
    gateway: Arc<Gateway>,
    metrics: ProvisioningMetrics,
}

impl Edge {
    /// Loads every identity file and binds every listener. Nothing is served until
    /// [`Edge::run`].
    pub async fn bind(config: Config, options: EdgeOptions) -> Result<Self, AppError> {
        let registry = telemetry::new_registry();
        let readiness = Readiness::new();
        let counters = HandshakeCounters::new();
        let snapshot =
            IdentitySnapshot::load_with_ca_dir(&config, &options.vendor_ca_dir, counters.clone())?;
        let tls_metrics = TlsMetrics::register(&registry)?;
        registry.register(Box::new(HandshakeFailures::new(
            counters.clone(),
            tls_metrics.handshake_failures_local.clone(),
        )))?;
        let sip_metrics = SipTransportMetrics::register(&registry)?;
        let core_metrics = CoreMetrics::register(
            &registry,
            sip_metrics.malformed.clone(),
            sip_metrics.dropped.clone(),
        )?;
        let reloads = IntCounterVec::new(
            Opts::new(
                "pbx_edge_identity_reloads_total",
                "Reloads of certificates, CAs, CRLs and the inventory, by result.",
            ),
            &["result"],
        )?;
        registry.register(Box::new(reloads.clone()))?;
        let bind = |what: &'static str, addr: SocketAddr| async move {
            TcpListener::bind(addr)
                .await
                .map_err(|source| AppError::Bind { what, addr, source })
        };
        let tls_listener = bind("the phone TLS listener (tls.listen)", config.tls.listen).await?;
        let admin_listener =
            bind("the admin HTTP port (admin.listen)", config.admin.listen).await?;
        let provisioning = match &config.provisioning {
            Some(p) => {
                let gateway = Arc::new(Gateway::new(
                    p,
                    RateBudget {
                        per_second: config.sip.phone_requests_per_second,
                        burst: config.sip.phone_request_burst,
                    },
                )?);
                let metrics = ProvisioningMetrics::register(&registry)?;
                let listener = bind(
                    "the HTTPS provisioning listener (provisioning.listen)",
                    p.listen,
                )
                .await?;
                Some(ProvisioningListener {
                    listener,
                    gateway,
                    metrics,
                })
            }
            None => None,
        };
        let pbx = PbxLink::bind_transport(
            config.pbx.transport,
            config.pbx.listen,
            config.pbx.address,
            (config.pbx.tcp_keepalive_secs > 0)
                .then(|| Duration::from_secs(config.pbx.tcp_keepalive_secs)),
        )
        .await
        .map_err(|source| AppError::Bind {
            what: "the PBX-side SIP socket (pbx.listen)",
            addr: config.pbx.listen,
            source,
        })?;
        let capture = Capture::start(&config.hep, HepMetrics::register(&registry)?).await?;
        let pbx = pbx.with_capture(&capture);
        let (identity, _) = watch::channel(Arc::new(snapshot));
        let (media_tx, media_rx) = mpsc::channel(1024);
        let media = MediaControl::new(
            RelaySettings {
                phone_bind: config.media.phone_bind,
                pbx_bind: config.media.pbx_bind,
                port_min: config.media.port_min,
                port_max: config.media.port_max,
                timeout: Duration::from_secs(config.media.timeout_secs),
                ..RelaySettings::default()
            },
            &registry,
            media_tx,
        )?;
        Ok(Self {
            capture,
            media,
            media_events: media_rx,
            provisioning,
            config,
            options,
            registry,
            readiness,
            tls_listener,
            admin_listener,
            pbx,
            identity,
            counters,
            tls_metrics,
            sip_metrics,
            core_metrics,
            reloads,
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

    /// Where the HTTPS provisioning gateway is bound, when `[provisioning]` is configured.
    pub fn provisioning_addr(&self) -> Option<std::io::Result<SocketAddr>> {
        self.provisioning.as_ref().map(|p| p.listener.local_addr())
    }

    /// Where the PBX-side SIP socket is bound.
    pub fn pbx_local_addr(&self) -> std::io::Result<SocketAddr> {
        self.pbx.local_addr()
    }

    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Serves until `shutdown` completes, then stops accepting, lets SIP transactions in
    /// flight finish for up to `shutdown.drain_timeout_secs`, and closes what is left.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send) -> Result<(), AppError> {
        let startup = self.readiness.latch();
        let tls_addr = self.tls_addr().map_err(|source| AppError::Bind {
            what: "the phone TLS listener (tls.listen)",
            addr: self.config.tls.listen,
            source,
        })?;
        let admin_addr = self.admin_addr().map(|a| a.to_string()).unwrap_or_default();
        let pbx_local = self.pbx.local_addr().unwrap_or(self.config.pbx.listen);

        let accept_cancel = CancellationToken::new();
        let conn_cancel = CancellationToken::new();
        let core_cancel = CancellationToken::new();
        let admin_cancel = CancellationToken::new();
        let tracker = TaskTracker::new();
        let flows = Arc::new(FlowTable::new());
        let (core_views, view_requests) = CoreViews::channel();

        // Admin port: its views are built by the SIP core task when asked.
        let api = api_routes(core_views.clone());
        let api_access = admin::ApiAccess::for_listener(
            self.admin_listener
                .local_addr()
                .unwrap_or(self.config.admin.listen),
            self.config.admin.api_token_file.clone(),
        );
        let admin_task = tokio::spawn(admin::serve(
            self.admin_listener,
            self.registry.clone(),
            self.readiness.clone(),
            api,
            api_access,
            admin_cancel.clone().cancelled_owned(),
        ));

        // SIP core and the PBX side.
        let (phone_tx, phone_rx) = mpsc::channel(1024);
        let (pbx_tx, pbx_rx) = mpsc::channel(1024);
        let sip = &self.config.sip;
        let limits = FramingLimits {
            max_message_bytes: sip.max_message_bytes,
            max_headers: sip.max_headers,
            max_line_bytes: sip.max_line_bytes,
            max_body_bytes: sip.max_message_bytes,
        };
        let core = SipCore::new(
            CoreSettings {
                timers: TimerConfig {
                    t1: Duration::from_millis(sip.t1_ms),
                    t2: Duration::from_millis(sip.t2_ms),
                    t4: Duration::from_millis(sip.t4_ms),
                    ..TimerConfig::default()
                },
                domain: sip.domain.clone(),
                pbx_local,
                tls_local: tls_addr,
                sdp: EdgeAddresses {
                    phone_advertised: self.config.media.phone_advertise,
                    pbx_local: self.config.media.pbx_bind,
                },
                identity_headers: sip.identity_headers,
                phone_request_budget: RateBudget {
                    per_second: sip.phone_requests_per_second,
                    burst: sip.phone_request_burst,
                },
                max_calls_per_device: sip.max_calls_per_device,
                max_ports_per_device: self.config.media.max_ports_per_device,
                accept_unannounced_unencrypted_srtcp: self
                    .config
                    .media
                    .accept_unannounced_unencrypted_srtcp,
                srtp: SrtpPolicy {
                    mode: match self.config.media.srtp {
                        crate::config::SrtpPolicy::Mandatory => SrtpMode::Mandatory,
                        crate::config::SrtpPolicy::Optional => SrtpMode::Optional,
                    },
                    // AES_192_CM is left out of offers: Debian's libsrtp ≤ 2.7 derives its keys
                    // wrongly (cisco/libsrtp#763), so phones built on it could not decrypt.
                    suites: crate::srtp::CryptoSuite::ALL
                        .into_iter()
                        .filter(|s| !s.sdes_name().starts_with("AES_192"))
                        .collect(),
                },
            },
            flows.clone(),
            self.identity.subscribe(),
            self.pbx.clone(),
            self.media.clone(),
            self.core_metrics.clone(),
        )
        .map_err(|_| AppError::Random)?;
        let core_task = tokio::spawn(core.run(
            phone_rx,
            pbx_rx,
            self.media_events,
            view_requests,
            core_cancel.clone(),
        ));
        let pbx_task = tokio::spawn(self.pbx.clone().receive(
            limits,
            pbx_tx,
            self.sip_metrics.clone(),
            core_cancel.clone(),
        ));

        // Phone connections.
        let settings = ConnectionSettings {
            limits,
            idle_timeout: Duration::from_secs(sip.idle_timeout_secs),
            write_timeout: Duration::from_secs(sip.write_timeout_secs),
            queue: QueueLimits {
                messages: connection::WRITE_QUEUE_MESSAGES,
                bytes: sip.write_queue_bytes,
            },
        };
        let identity_rx = self.identity.subscribe();
        let handler: tls::ConnectionHandler = {
            let flows = flows.clone();
            let sip_metrics = self.sip_metrics.clone();
            let capture = self.capture.clone();
            Arc::new(move |stream, peer, cancel| {
                let flows = flows.clone();
                // The phone leg is captured decrypted, as TCP between the TLS connection's
                // own addresses (capture::hep).
                let local = stream.get_ref().0.local_addr().unwrap_or(tls_addr);
                let tap = capture.tap(IpProto::Tcp, local, peer);
                let events = phone_tx.clone();
                let metrics = sip_metrics.clone();
                let snapshot = identity_rx.borrow().clone();
                Box::pin(async move {
                    let certs: Vec<_> = stream
                        .get_ref()
                        .1
                        .peer_certificates()
                        .map(|c| c.to_vec())
                        .unwrap_or_default();
                    let identity = match identity_of(Some(&certs), &snapshot) {
                        Ok(i) => i,
                        Err(rejection) => {
                            // The snapshot changed during the handshake: like a revocation.
                            tracing::info!(%peer, reason = rejection.reason.label(), "connection refused after a reload");
                            return;
                        }
                    };
                    tracing::info!(%peer, identity = %identity, "phone connected");
                    connection::run(
                        stream,
                        peer,
                        tap,
                        Arc::new(identity),
                        Arc::new(certs),
                        flows,
                        settings,
                        events,
                        metrics,
                        cancel,
                    )
                    .await;
                })
            })
        };
        let accept = tokio::spawn(tls::accept_loop(
            self.tls_listener,
            ServerConfigs(self.identity.subscribe(), TlsListener::Sip),
            Duration::from_secs(self.config.tls.handshake_timeout_secs),
            ConnectionLimiter::new(
                self.config.tls.max_connections,
                self.config.tls.max_connections_per_ip,
            ),
            self.tls_metrics.clone(),
            self.counters.clone(),
            handler,
            tracker.clone(),
            accept_cancel.clone(),
            conn_cancel.clone(),
        ));

        // The HTTPS provisioning gateway: the same accept loop (handshake timeout, failure
        // classification into pbx_edge_tls_handshake_failures_total), its own ServerConfig.
        let provisioning_addr = self
            .provisioning
            .as_ref()
            .and_then(|p| p.listener.local_addr().ok());
        let provisioning_accept = self.provisioning.map(|p| {
            let metrics = TlsMetrics {
                connections_active: p.metrics.connections_active.clone(),
                handshakes_ok: p.metrics.handshakes_ok.clone(),
                handshake_failures_local: self.tls_metrics.handshake_failures_local.clone(),
                connections_refused: self.tls_metrics.connections_refused.clone(),
                connections_revoked: self.tls_metrics.connections_revoked.clone(),
            };
            tokio::spawn(tls::accept_loop(
                p.listener,
                ServerConfigs(self.identity.subscribe(), TlsListener::Provisioning),
                Duration::from_secs(self.config.tls.handshake_timeout_secs),
                // Its own slots (same limits): a flood of HTTPS connections cannot lock the
                // phones out of SIP, nor the reverse.
                ConnectionLimiter::new(
                    self.config.tls.max_connections,
                    self.config.tls.max_connections_per_ip,
                ),
                metrics,
                self.counters.clone(),
                p.gateway.handler(self.identity.subscribe(), p.metrics),
                tracker.clone(),
                accept_cancel.clone(),
                conn_cancel.clone(),
            ))
        });

        // Reloads: SIGHUP, or any identity file changing on disk.
        let reload_task = tokio::spawn(reload_loop(
            self.config.clone(),
            self.options.clone(),
            self.identity.clone(),
            self.counters.clone(),
            self.reloads.clone(),
            core_cancel.clone(),
        ));

        startup.release();
        tracing::info!(
            tls = %tls_addr,
            admin = %admin_addr,
            provisioning = %provisioning_addr.map(|a| a.to_string()).unwrap_or_else(|| "off".into()),
            pbx_local = %pbx_local,
            pbx = %self.config.pbx.address,
            "pbx-edge ready"
        );

        shutdown.await;
        let drain = Duration::from_secs(self.config.shutdown.drain_timeout_secs);
        tracing::info!(
            drain_timeout_secs = drain.as_secs(),
            "shutting down: no new connections, draining transactions"
        );
        self.readiness.set_draining();
        accept_cancel.cancel();
        let _ = accept.await;
        if let Some(task) = provisioning_accept {
            let _ = task.await;
        }
        drain_core(&core_views, drain).await;
        conn_cancel.cancel();
        tracker.close();
        if tokio::time::timeout(Duration::from_secs(2), tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!("phone connections did not close in time");
        }
        core_cancel.cancel();
        let _ = core_task.await;
        let _ = pbx_task.await;
        let _ = reload_task.await;
        admin_cancel.cancel();
        match admin_task.await {
            Ok(r) => r?,
            Err(e) => tracing::error!(error = %e, "admin task ended abnormally"),
        }
        tracing::info!("pbx-edge stopped");
        Ok(())
    }
}

/// The shutdown drain: waits up to `drain` for requests still waiting for a final response
/// and for calls in progress, so that a call hung up within the drain time is not cut. With
/// nothing in flight it returns at once: transactions that only absorb retransmissions
/// (RFC 6026 §7.1 Timers L/M, up to 64·T1 after a call) hold up no rolling update. Calls
/// still up at the deadline get a BYE on both legs, and their BYE transactions get
/// [`BYE_GRACE`] to be answered before the connections close.
async fn drain_core(views: &CoreViews, drain: Duration) {
    let deadline = tokio::time::Instant::now() + drain;
    let mut last = None;
    loop {
        // `None`: the core does not answer (stuck); only the deadline ends the wait then.
        let now = views.in_flight().await;
        if now.is_some_and(|w| w.is_idle()) {
            tracing::info!("drained: nothing in flight");
            return;
        }
        if now.is_some() {
            last = now;
        } else if views.is_closed() {
            // The core ends once every phone connection and the PBX socket are gone: nothing
            // can be in flight any more.
            tracing::info!("drained: the SIP core has stopped");
            return;
        }
        if tokio::time::Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let calls = last.map(|w| w.calls).unwrap_or(0);
    tracing::warn!(
        transactions = last.map(|w| w.transactions).unwrap_or(0),
        calls,
        "drain timeout: ending what is left"
    );
    if calls == 0 {
        return;
    }
    let ended = views.end_calls().await.unwrap_or(0);
    tracing::info!(calls = ended, "calls ended by shutdown (BYE to both legs)");
    let grace = tokio::time::Instant::now() + BYE_GRACE;
    while tokio::time::Instant::now() < grace {
        if views.in_flight().await.is_some_and(|w| w.is_idle()) || views.is_closed() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// How long the BYEs of calls ended by a shutdown may wait for their answers.
const BYE_GRACE: Duration = Duration::from_secs(4);

/// Which TLS listener a [`ServerConfigs`] serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsListener {
    /// The phone SIP listener (`tls.client_cert` applies).
    Sip,
    /// The HTTPS provisioning gateway (a device certificate is always required).
    Provisioning,
}

impl TlsListener {
    /// Name in log lines.
    pub fn label(self) -> &'static str {
        match self {
            Self::Sip => "sip",
            Self::Provisioning => "provisioning",
        }
    }
}

/// A listener's view of the identity snapshot: its current rustls configuration.
pub struct ServerConfigs(pub watch::Receiver<Arc<IdentitySnapshot>>, pub TlsListener);

impl ServerConfigs {
    pub fn current(&self) -> Arc<rustls::ServerConfig> {
        match self.1 {
            TlsListener::Sip => self.0.borrow().server_config(),
            TlsListener::Provisioning => self.0.borrow().provisioning_server_config(),
        }
    }
}

/// Modification times and sizes of every file the identity snapshot was built from.
fn fingerprint(
    config: &Config,
    options: &EdgeOptions,
) -> Vec<(PathBuf, Option<(SystemTime, u64)>)> {
    let mut c = config.clone();
    let mut paths: Vec<PathBuf> = c.paths_mut().into_iter().map(|(_, p)| p.clone()).collect();
    if let Ok(dirs) = std::fs::read_dir(&options.vendor_ca_dir) {
        for d in dirs.flatten() {
            if let Ok(files) = std::fs::read_dir(d.path()) {
                paths.extend(files.flatten().map(|f| f.path()));
            }
        }
    }
    paths.sort();
    paths
        .into_iter()
        .map(|p| {
            let meta = std::fs::metadata(&p)
                .ok()
                .and_then(|m| Some((m.modified().ok()?, m.len())));
            (p, meta)
        })
        .collect()
}

async fn reload_loop(
    config: Config,
    options: EdgeOptions,
    identity: watch::Sender<Arc<IdentitySnapshot>>,
    counters: Arc<HandshakeCounters>,
    reloads: IntCounterVec,
    cancel: CancellationToken,
) {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hup = signal(SignalKind::hangup()).ok();
    // Twice a second: a revoked device is disconnected within a second (DESIGN.md).
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut seen = fingerprint(&config, &options);
    loop {
        let why = tokio::select! {
            _ = cancel.cancelled() => return,
            _ = async { match hup.as_mut() { Some(h) => { h.recv().await; } None => std::future::pending::<()>().await } } => "SIGHUP",
            _ = tick.tick() => {
                let now = fingerprint(&config, &options);
                if now == seen { continue; }
                seen = now;
                "a file changed"
            }
        };
        match IdentitySnapshot::load_with_ca_dir(&config, &options.vendor_ca_dir, counters.clone())
        {
            Ok(snapshot) => {
                reloads.with_label_values(&["ok"]).inc();
                // Every open phone connection watches this channel and re-runs its verdict
                // against the new snapshot (transport::tls::supervise): revoked devices,
                // removed MACs and anonymous sources no longer allowed are closed and counted
                // there, on both TLS listeners.
                identity.send_replace(Arc::new(snapshot));
                tracing::info!(trigger = why, "identity reloaded");
            }
            Err(e) => {
                reloads.with_label_values(&["failed"]).inc();
                tracing::error!(trigger = why, error = %e, "identity reload failed; keeping the previous certificates, CAs and inventory");
            }
        }
    }
}

/// Completes on SIGTERM or SIGINT. The handlers are installed when this is called (not when
/// the future is first polled), so call it before anything else starts: a SIGTERM that
/// arrives right after "ready" must drain, not kill the process.
pub fn shutdown_signal() -> impl Future<Output = ()> + Send {
    use tokio::signal::unix::{signal, SignalKind};
    let term = signal(SignalKind::terminate());
    let int = signal(SignalKind::interrupt());
    async move {
        match (term, int) {
            (Ok(mut term), Ok(mut int)) => {
                tokio::select! {
                    _ = term.recv() => tracing::info!("SIGTERM received"),
                    _ = int.recv() => tracing::info!("SIGINT received"),
                }
            }
            (Err(e), _) | (_, Err(e)) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM/SIGINT; only Ctrl-C stops the edge");
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
}

/// The admin port's `/api/*` routes over the SIP core's view handle: each request asks the
/// core, which builds the view when asked (nothing is kept up to date between requests).
pub fn api_routes(views: CoreViews) -> ApiRoutes {
    let registrations = views.clone();
    let calls = views;
    ApiRoutes {
        registrations: Arc::new(move || {
            let views = registrations.clone();
            Box::pin(async move {
                let regs = views.registrations().await?;
                Some(serde_json::json!({ "registrations": regs }))
            })
        }),
        calls: Arc::new(move || {
            let views = calls.clone();
            Box::pin(async move {
                let calls = views.calls().await?;
                Some(serde_json::json!({ "calls": calls }))
            })
        }),
    }
}
