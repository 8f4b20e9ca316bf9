//! The embedded development default: what `pbx-edge` runs with when no `--config` is given.
//! A development PKI is generated into a state directory on first use, and the embedded
//! config (the same text `dev-pki` writes) points at it. Loudly not for production.

use crate::config::{self, Config, ConfigSource, EnvVars, LoadError};
use crate::devpki::{self, DevPkiError};
use std::path::{Path, PathBuf};

/// The server name of the development certificate.
pub const DEV_SERVER_NAME: &str = "sbc.test";

/// Why the configuration to run with could not be produced.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error("development PKI: {0}")]
    DevPki(#[from] DevPkiError),
    /// `check-config` without `--config` before any development PKI exists.
    #[error("no --config given and no development PKI in {0} yet: run `pbx-edge` once, or pass --config FILE")]
    NoDevPki(PathBuf),
}

impl ResolveError {
    pub fn label(&self) -> &'static str {
        match self {
            Self::Load(e) => e.label(),
            Self::DevPki(e) => e.label(),
            Self::NoDevPki(_) => "no_dev_pki",
        }
    }
}

/// A configuration ready to validate, and where it came from.
#[derive(Debug)]
pub struct Resolved {
    pub config: Config,
    pub source: ConfigSource,
    /// The development PKI directory when the embedded default is in use.
    pub dev_pki: Option<PathBuf>,
    /// True when this call generated the development PKI.
    pub generated: bool,
}

impl Resolved {
    /// Where built-in vendor profiles look for CA files: `ca/` beside the config file; for
    /// the development default, `ca/` inside its state directory (normally absent, so only
    /// the development CAs are trusted).
    pub fn edge_options(&self) -> crate::app::EdgeOptions {
        match (&self.source, &self.dev_pki) {
            (ConfigSource::File(f), _) => crate::app::EdgeOptions::beside(f),
            (_, Some(dir)) => crate::app::EdgeOptions {
                vendor_ca_dir: dir.join("ca"),
            },
            (ConfigSource::Text { base_dir, .. }, None) => crate::app::EdgeOptions {
                vendor_ca_dir: base_dir.join("ca"),
            },
        }
    }

    /// Everything the identity layer loads for this configuration (vendor profiles and their
    /// CAs, CRLs, deny-list, inventory), with fresh counters: what `check-config` validates and
    /// `inspect-cert` judges a certificate against (the running edge loads the same, counting
    /// into its own counters).
    pub fn load_identity(
        &self,
    ) -> Result<crate::identity::IdentitySnapshot, crate::identity::IdentityError> {
        crate::identity::IdentitySnapshot::load_with_ca_dir(
            &self.config,
            &self.edge_options().vendor_ca_dir,
            crate::identity::HandshakeCounters::new(),
        )
    }

    /// Validation including everything the running edge loads (vendor profiles, inventory,
    /// deny-list, CRLs): the problems `check-config` and `run` report.
    pub fn validate(&self) -> config::ValidationReport {
        let mut report = config::validate(&self.config);
        if report.is_ok() {
            if let Err(e) = self.load_identity() {
                report.problems.push(config::Problem {
                    key: "identity".into(),
                    file: None,
                    message: e.to_string(),
                });
            }
        }
        report
    }
}

/// The default state directory: `$XDG_STATE_HOME/pbx-edge`, else `~/.local/state/pbx-edge`,
/// else `./.pbx-edge-state`.
pub fn default_state_dir() -> PathBuf {
    if let Some(x) = std::env::var_os("XDG_STATE_HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(x).join("pbx-edge");
    }
    if let Some(h) = std::env::var_os("HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(h).join(".local/state/pbx-edge");
    }
    PathBuf::from(".pbx-edge-state")
}

/// Loads `--config FILE`, or the embedded development default (generating its PKI when
/// `may_generate` and it does not exist yet).
pub fn resolve(
    file: Option<&Path>,
    state_dir: Option<&Path>,
    may_generate: bool,
    env: EnvVars,
) -> Result<Resolved, ResolveError> {
    if let Some(file) = file {
        return Ok(Resolved {
            config: config::load(file, env)?,
            source: ConfigSource::File(file.to_path_buf()),
            dev_pki: None,
            generated: false,
        });
    }
    let dir = state_dir
        .map(Path::to_path_buf)
        .unwrap_or_else(default_state_dir)
        .join("dev-pki");
    let mut generated = false;
    if !dir.join("pbx-edge.toml").exists() {
        if !may_generate {
            return Err(ResolveError::NoDevPki(dir));
        }
        devpki::generate(&dir, DEV_SERVER_NAME)?;
        generated = true;
    } else if may_generate && devpki::server_cert_needs_renewal(&dir, DEV_SERVER_NAME) {
        // The development server certificate lives 397 days: a new PKI (new device
        // certificates too, announced by the same banner) instead of an edge phones refuse.
        devpki::generate(&dir, DEV_SERVER_NAME)?;
        generated = true;
    }
    let source = ConfigSource::Text {
        name: "embedded development default".into(),
        base_dir: dir.clone(),
    };
    let config = config::load_str(&source, &devpki::dev_config(DEV_SERVER_NAME), env)?;
    Ok(Resolved {
        config,
        source,
        dev_pki: Some(dir),
        generated,
    })
}
