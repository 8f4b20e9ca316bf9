//! Publication and reload of the [`IdentitySnapshot`]: the credential watch lives with
//! identity (linkerd2-proxy keeps it in `meshtls/src/creds/store.rs`), not in the wiring.
//!
//! [`IdentityWatch`] loads the first snapshot, hands out receivers and each TLS listener's
//! [`ServerConfigs`], and [`IdentityWatch::run`] reloads on SIGHUP or when any identity file
//! changes on disk. A reload that fails keeps the previous snapshot (STYLE habit 7) and is
//! counted in `pbx_edge_identity_reloads_total{result="failed"}`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use prometheus::{IntCounterVec, Opts, Registry};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::identity::error::IdentityError;
use crate::identity::rejection::HandshakeCounters;
use crate::identity::snapshot::IdentitySnapshot;

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

/// The published identity snapshot and what it takes to reload it.
pub struct IdentityWatch {
    config: Config,
    vendor_ca_dir: PathBuf,
    snapshots: watch::Sender<Arc<IdentitySnapshot>>,
    counters: Arc<HandshakeCounters>,
    /// `pbx_edge_identity_reloads_total`, once [`IdentityWatch::register`]ed.
    reloads: Option<IntCounterVec>,
}

impl IdentityWatch {
    /// Loads every identity file of `config` (built-in vendor CAs from `vendor_ca_dir`).
    /// The handshake counters are created here once, so counts survive reloads.
    pub fn load(config: &Config, vendor_ca_dir: &Path) -> Result<Self, IdentityError> {
        let counters = HandshakeCounters::new();
        let snapshot = IdentitySnapshot::load_with_ca_dir(config, vendor_ca_dir, counters.clone())?;
        let (snapshots, _) = watch::channel(Arc::new(snapshot));
        Ok(Self {
            config: config.clone(),
            vendor_ca_dir: vendor_ca_dir.to_path_buf(),
            snapshots,
            counters,
            reloads: None,
        })
    }

    /// Registers `pbx_edge_identity_reloads_total` into `registry`.
    pub fn register(&mut self, registry: &Registry) -> Result<(), prometheus::Error> {
        let reloads = IntCounterVec::new(
            Opts::new(
                "pbx_edge_identity_reloads_total",
                "Reloads of certificates, CAs, CRLs and the inventory, by result.",
            ),
            &["result"],
        )?;
        registry.register(Box::new(reloads.clone()))?;
        self.reloads = Some(reloads);
        Ok(())
    }

    fn count(&self, result: &str) {
        if let Some(reloads) = &self.reloads {
            reloads.with_label_values(&[result]).inc();
        }
    }

    /// The handshake failure counters every snapshot's verifier counts into.
    pub fn counters(&self) -> Arc<HandshakeCounters> {
        self.counters.clone()
    }

    /// A receiver of the current snapshot (and of every reload).
    pub fn subscribe(&self) -> watch::Receiver<Arc<IdentitySnapshot>> {
        self.snapshots.subscribe()
    }

    /// The rustls configuration `listener` must use for each new accept.
    pub fn server_configs(&self, listener: TlsListener) -> ServerConfigs {
        ServerConfigs(self.subscribe(), listener)
    }

    /// Reloads on SIGHUP, or when any identity file changes on disk, until `cancel`.
    pub async fn run(self, cancel: CancellationToken) {
        use tokio::signal::unix::{signal, SignalKind};
        let mut hup = signal(SignalKind::hangup()).ok();
        // Twice a second: a revoked device is disconnected within a second (DESIGN.md).
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut seen = fingerprint(&self.config, &self.vendor_ca_dir);
        loop {
            let why = tokio::select! {
                _ = cancel.cancelled() => return,
                _ = async { match hup.as_mut() { Some(h) => { h.recv().await; } None => std::future::pending::<()>().await } } => "SIGHUP",
                _ = tick.tick() => {
                    let now = fingerprint(&self.config, &self.vendor_ca_dir);
                    if now == seen { continue; }
                    seen = now;
                    "a file changed"
                }
            };
            self.reload(why);
        }
    }

    fn reload(&self, why: &str) {
        match IdentitySnapshot::load_with_ca_dir(
            &self.config,
            &self.vendor_ca_dir,
            self.counters.clone(),
        ) {
            Ok(snapshot) => {
                self.count("ok");
                // Every open phone connection watches this channel and re-runs its verdict
                // against the new snapshot (transport::tls::supervise): revoked devices,
                // removed MACs and anonymous sources no longer allowed are closed and counted
                // there, on both TLS listeners.
                self.snapshots.send_replace(Arc::new(snapshot));
                tracing::info!(trigger = why, "identity reloaded");
            }
            Err(e) => {
                self.count("failed");
                tracing::error!(trigger = why, error = %e, "identity reload failed; keeping the previous certificates, CAs and inventory");
            }
        }
    }
}

/// Modification times and sizes of every file the identity snapshot was built from.
fn fingerprint(config: &Config, vendor_ca_dir: &Path) -> Vec<(PathBuf, Option<(SystemTime, u64)>)> {
    let mut c = config.clone();
    let mut paths: Vec<PathBuf> = c.paths_mut().into_iter().map(|(_, p)| p.clone()).collect();
    if let Ok(dirs) = std::fs::read_dir(vendor_ca_dir) {
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
