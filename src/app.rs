//! Wiring: binds every listener from a validated [`Config`], runs the components, reloads
//! identity files, and shuts down in order (stop accepting → drain → close).
//!
//! Split in two so tests can use port 0: [`Edge::bind`] binds (and fails fast with exit code
//! 1 on a busy port), [`Edge::run`] serves until the shutdown future completes.

use crate::admin::{self, ApiRoutes, Readiness};
use crate::b2bua::core::{CoreSettings, CoreViews, SipCore};
use crate::b2bua::metrics::CoreMetrics;
use crate::capture::{Capture, CaptureError, DropReason as HepDrop, HepMetrics, IpProto};
use crate::config::{Config, SipConfig, TlsConfig};
use crate::identity::expiry::ExpiryCollector;
use crate::identity::{
    identity_of, HandshakeCounters, IdentityError, IdentitySnapshot, IdentityWatch, ServerConfigs,
    TlsListener,
};
use crate::media::tap::{RtcpTap, RTCP_TAP_QUEUE};
use crate::media::types::offered_suites;
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
use prometheus::Registry;
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
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
    /// The call log (`[call_log]`) could not start.
    #[error("call log: {0}")]
    CallLog(#[from] crate::call_log::CallLogError),
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
            Self::CallLog(_) => "call_log",
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
    registry: Registry,
    readiness: Readiness,
    tls_listener: TcpListener,
    admin_listener: TcpListener,
    pbx: PbxLink,
    identity: IdentityWatch,
    tls_metrics: TlsMetrics,
    sip_metrics: SipTransportMetrics,
    core_metrics: CoreMetrics,
    media: MediaControl,
    media_events: mpsc::Receiver<MediaEvent>,
    provisioning: Option<ProvisioningListener>,
    /// `[hep]` SIP capture (off when not configured).
    capture: Capture,
    /// The media relay's RTCP copies for `capture` (`[hep]` on only).
    rtcp_tap: Option<RtcpTap>,
    /// `[call_log]` (off when not configured).
    call_log: crate::call_log::CallLog,
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
        let mut identity = IdentityWatch::load(&config, &options.vendor_ca_dir)?;
        let tls_metrics = TlsMetrics::register(&registry)?;
        registry.register(Box::new(HandshakeFailures::new(
            identity.counters(),
            tls_metrics.handshake_failures_local.clone(),
        )))?;
        let sip_metrics = SipTransportMetrics::register(&registry)?;
        let core_metrics = CoreMetrics::register(
            &registry,
            sip_metrics.malformed.clone(),
            sip_metrics.dropped.clone(),
        )?;
        identity.register(&registry)?;
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
        pbx.set_dscp(config.sip.dscp)
            .map_err(|source| AppError::Bind {
                what: "the PBX-side SIP socket's DSCP (sip.dscp)",
                addr: config.pbx.listen,
                source,
            })?;
        registry.register(Box::new(ExpiryCollector::new(identity.subscribe())?))?;
        registry.register(Box::new(admin::ReadyGauge::new(readiness.clone())?))?;
        let hep_metrics = HepMetrics::register(&registry)?;
        let capture = Capture::start(&config.hep, hep_metrics.clone()).await?;
        // RTCP capture: the relay workers copy into a preallocated lock-free ring
        // (media::tap), drained into `capture` by `forward_rtcp`; nothing when [hep] is off.
        let rtcp_tap = capture.is_on().then(|| {
            RtcpTap::new(
                RTCP_TAP_QUEUE,
                hep_metrics.counter(HepDrop::RtcpQueueFull),
                hep_metrics.counter(HepDrop::TooLarge),
            )
        });
        let pbx = pbx.with_capture(&capture);
        let call_log = crate::call_log::CallLog::start(
            &config.call_log,
            crate::call_log::CallLogMetrics::register(&registry)?,
        )?;
        let (media_tx, media_rx) = mpsc::channel(1024);
        let media = MediaControl::new(
            RelaySettings {
                rtcp_tap: rtcp_tap.clone(),
                ..RelaySettings::from_config(&config.media)
            },
            &registry,
            media_tx,
        )?;
        Ok(Self {
            call_log,
            capture,
            rtcp_tap,
            media,
            media_events: media_rx,
            provisioning,
            config,
            registry,
            readiness,
            tls_listener,
            admin_listener,
            pbx,
            identity,
            tls_metrics,
            sip_metrics,
            core_metrics,
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

        let stops = Stops::default();
        let core_cancel = stops.core.clone();
        let flows = Arc::new(FlowTable::new());
        let (core_views, view_requests) = CoreViews::channel();

        // Admin port: its views are built by the SIP core task when asked.
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
            api_routes(core_views.clone()),
            api_access,
            stops.admin.clone().cancelled_owned(),
        ));

        // SIP core and the PBX side.
        let (phone_tx, phone_rx) = mpsc::channel(1024);
        let (pbx_tx, pbx_rx) = mpsc::channel(1024);
        let sip = &self.config.sip;
        let limits = framing_limits(sip);
        let core = SipCore::new(
            core_settings(&self.config, pbx_local, tls_addr),
            flows.clone(),
            self.identity.subscribe(),
            self.pbx.clone(),
            self.media.clone(),
            self.core_metrics.clone(),
        )
        .map_err(|_| AppError::Random)?
        .with_call_log(self.call_log.clone());
        // Log rotation: the call log reopens its file on SIGHUP, like the identity reload.
        tokio::spawn(self.call_log.clone().watch_sighup(core_cancel.clone()));
        if let Some(tap) = self.rtcp_tap.clone() {
            tokio::spawn(forward_rtcp(tap, self.capture.clone(), core_cancel.clone()));
        }
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
        let handler = phone_handler(
            connection_settings(sip),
            flows.clone(),
            self.sip_metrics.clone(),
            phone_tx,
            self.identity.subscribe(),
            self.capture.clone(),
            tls_addr,
        );
        let accept = spawn_accept(
            self.tls_listener,
            self.identity.server_configs(TlsListener::Sip),
            &self.config.tls,
            self.config.sip.dscp,
            self.tls_metrics.clone(),
            self.identity.counters(),
            handler,
            &stops,
        );

        // The HTTPS provisioning gateway: the same accept loop (handshake timeout, failure
        // classification into pbx_edge_tls_handshake_failures_total), its own ServerConfig.
        let provisioning_addr = self
            .provisioning
            .as_ref()
            .and_then(|p| p.listener.local_addr().ok());
        let provisioning_accept = self
            .provisioning
            .map(|p| p.spawn(&self.identity, &self.config.tls, &self.tls_metrics, &stops));

        // Reloads: SIGHUP, or any identity file changing on disk.
        let reload_task = tokio::spawn(self.identity.run(core_cancel.clone()));

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
        let tasks = Tasks {
            accept,
            provisioning_accept,
            core: core_task,
            pbx: pbx_task,
            reload: reload_task,
            admin: admin_task,
        };
        stop(stops, tasks, &self.readiness, &core_views, drain).await?;
        tracing::info!("pbx-edge stopped");
        Ok(())
    }
}

impl ProvisioningListener {
    /// The gateway's accept loop: the phone listener's (handshake timeout, failure
    /// classification into `pbx_edge_tls_handshake_failures_total`) with its own
    /// `ServerConfig`, connection gauges and slots (same limits: a flood of HTTPS connections
    /// cannot lock the phones out of SIP, nor the reverse).
    fn spawn(
        self,
        identity: &IdentityWatch,
        tls: &TlsConfig,
        tls_metrics: &TlsMetrics,
        stops: &Stops,
    ) -> JoinHandle<()> {
        let metrics = TlsMetrics {
            connections_active: self.metrics.connections_active.clone(),
            handshakes_ok: self.metrics.handshakes_ok.clone(),
            handshake_failures_local: tls_metrics.handshake_failures_local.clone(),
            connections_refused: tls_metrics.connections_refused.clone(),
            connections_revoked: tls_metrics.connections_revoked.clone(),
        };
        spawn_accept(
            self.listener,
            identity.server_configs(TlsListener::Provisioning),
            tls,
            // HTTPS provisioning is bulk transfer, not signalling: left unmarked.
            0,
            metrics,
            identity.counters(),
            self.gateway.handler(identity.subscribe(), self.metrics),
            stops,
        )
    }
}

/// The stop signals of the running parts, in shutdown order, and the tracker of open
/// connections (phone and provisioning).
#[derive(Default)]
struct Stops {
    /// Stop accepting new TLS connections.
    accept: CancellationToken,
    /// Close the connections still open after the drain.
    connections: CancellationToken,
    /// Stop the SIP core, the PBX receiver and the identity reloads.
    core: CancellationToken,
    /// Stop the admin port, last, so `/readyz` shows the drain.
    admin: CancellationToken,
    tracker: TaskTracker,
}

/// The tasks [`Edge::run`] started, awaited in shutdown order.
struct Tasks {
    accept: JoinHandle<()>,
    provisioning_accept: Option<JoinHandle<()>>,
    core: JoinHandle<()>,
    pbx: JoinHandle<()>,
    reload: JoinHandle<()>,
    admin: JoinHandle<Result<(), admin::AdminError>>,
}

/// One TLS accept loop (phone SIP or HTTPS provisioning) with `[tls]`'s handshake timeout
/// and connection limits.
#[allow(clippy::too_many_arguments)]
fn spawn_accept(
    listener: TcpListener,
    configs: ServerConfigs,
    tls: &TlsConfig,
    dscp: u8,
    metrics: TlsMetrics,
    counters: Arc<HandshakeCounters>,
    handler: tls::ConnectionHandler,
    stops: &Stops,
) -> JoinHandle<()> {
    tokio::spawn(tls::accept_loop(
        listener,
        configs,
        Duration::from_secs(tls.handshake_timeout_secs),
        dscp,
        // Each listener its own slots (same limits): a flood of HTTPS provisioning
        // connections cannot lock the phones out of SIP, nor the reverse.
        ConnectionLimiter::new(tls.max_connections, tls.max_connections_per_ip),
        metrics,
        counters,
        handler,
        stops.tracker.clone(),
        stops.accept.clone(),
        stops.connections.clone(),
    ))
}

/// Stops accepting, drains the SIP core for up to `drain`, closes what is left, then stops
/// the core, the PBX side, the reloads and finally the admin port.
async fn stop(
    stops: Stops,
    tasks: Tasks,
    readiness: &Readiness,
    core_views: &CoreViews,
    drain: Duration,
) -> Result<(), AppError> {
    tracing::info!(
        drain_timeout_secs = drain.as_secs(),
        "shutting down: no new connections, draining transactions"
    );
    readiness.set_draining();
    stops.accept.cancel();
    let _ = tasks.accept.await;
    if let Some(task) = tasks.provisioning_accept {
        let _ = task.await;
    }
    drain_core(core_views, drain).await;
    stops.connections.cancel();
    stops.tracker.close();
    if tokio::time::timeout(Duration::from_secs(2), stops.tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!("phone connections did not close in time");
    }
    stops.core.cancel();
    let _ = tasks.core.await;
    let _ = tasks.pbx.await;
    let _ = tasks.reload.await;
    stops.admin.cancel();
    match tasks.admin.await {
        Ok(r) => r?,
        Err(e) => tracing::error!(error = %e, "admin task ended abnormally"),
    }
    Ok(())
}

/// Message size limits for SIP framing, from `[sip]` (both phone and PBX side).
fn framing_limits(sip: &SipConfig) -> FramingLimits {
    FramingLimits {
        max_message_bytes: sip.max_message_bytes,
        max_headers: sip.max_headers,
        max_line_bytes: sip.max_line_bytes,
        max_body_bytes: sip.max_message_bytes,
    }
}

/// Per-phone-connection settings, from `[sip]`.
fn connection_settings(sip: &SipConfig) -> ConnectionSettings {
    ConnectionSettings {
        limits: framing_limits(sip),
        idle_timeout: Duration::from_secs(sip.idle_timeout_secs),
        write_timeout: Duration::from_secs(sip.write_timeout_secs),
        queue: QueueLimits {
            messages: connection::WRITE_QUEUE_MESSAGES,
            bytes: sip.write_queue_bytes,
        },
    }
}

/// The SIP core's settings from `[sip]` and `[media]`, with the addresses the listeners
/// were bound on.
fn core_settings(config: &Config, pbx_local: SocketAddr, tls_local: SocketAddr) -> CoreSettings {
    let sip = &config.sip;
    CoreSettings {
        timers: TimerConfig {
            t1: Duration::from_millis(sip.t1_ms),
            t2: Duration::from_millis(sip.t2_ms),
            t4: Duration::from_millis(sip.t4_ms),
            ..TimerConfig::default()
        },
        domain: sip.domain.clone(),
        pbx_local,
        tls_local,
        sdp: EdgeAddresses {
            phone_advertised: config.media.phone_advertise,
            pbx_local: config.media.pbx_bind,
        },
        identity_headers: sip.identity_headers,
        flow_timer_secs: crate::b2bua::core::flow_timer_secs(sip.idle_timeout_secs),
        phone_request_budget: RateBudget {
            per_second: sip.phone_requests_per_second,
            burst: sip.phone_request_burst,
        },
        max_calls_per_device: sip.max_calls_per_device,
        max_ports_per_device: config.media.max_ports_per_device,
        accept_unannounced_unencrypted_srtcp: config.media.accept_unannounced_unencrypted_srtcp,
        srtp: SrtpPolicy {
            mode: match config.media.srtp {
                crate::config::SrtpPolicy::Mandatory => SrtpMode::Mandatory,
                crate::config::SrtpPolicy::Optional => SrtpMode::Optional,
            },
            suites: offered_suites(),
        },
    }
}

/// What runs each established phone connection: its identity from the certificates against
/// the newest snapshot, then the connection task feeding the SIP core.
fn phone_handler(
    settings: ConnectionSettings,
    flows: Arc<FlowTable>,
    sip_metrics: SipTransportMetrics,
    phone_tx: mpsc::Sender<connection::PhoneEvent>,
    identity_rx: watch::Receiver<Arc<IdentitySnapshot>>,
    capture: Capture,
    tls_addr: SocketAddr,
) -> tls::ConnectionHandler {
    Arc::new(move |stream, peer, cancel| {
        let flows = flows.clone();
        // The phone leg is captured decrypted, as TCP between the TLS connection's own
        // addresses (capture::hep).
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

/// How often the RTCP copies are moved from the relay's ring to HEP capture: the ring's
/// [`RTCP_TAP_QUEUE`] slots hold far more than arrives in this time.
const RTCP_FORWARD_EVERY: Duration = Duration::from_millis(20);

/// Moves the relay's RTCP copies to `capture` as Homer's JSON RTCP reports (HEP type 5),
/// until `cancel`. A compound without SR or RR (nothing Homer could chart) is skipped.
async fn forward_rtcp(tap: RtcpTap, capture: Capture, cancel: CancellationToken) {
    let mut tick = tokio::time::interval(RTCP_FORWARD_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
        tap.drain(|copy| {
            if let Some(json) = crate::media::rtcp::homer_json(copy.payload()) {
                capture.rtcp(
                    copy.src,
                    copy.dst,
                    copy.time,
                    copy.correlation.as_deref(),
                    json,
                );
            }
        });
    }
}
