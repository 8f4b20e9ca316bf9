//! Loading: reads every identity file (server certificates and keys, vendor CAs, CRLs, MAC
//! deny-list, inventory) into one immutable [`IdentitySnapshot`] with its rustls `ServerConfig`.
//!
//! Publication and reload (file watching, SIGHUP) are [`crate::identity::reload`]'s: it keeps
//! an `Arc<IdentitySnapshot>`, builds a new one with [`IdentitySnapshot::load`] and swaps it in
//! only on success, so a failed reload keeps the old state (linkerd `creds/store.rs`). The
//! [`HandshakeCounters`] are created once and passed to every load so counts survive reloads.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::server::WebPkiClientVerifier;
use rustls::RootCertStore;

use crate::config::{ClientCertMode, Config};

/// The certificate file readers (one reader, [`crate::config::files`]) are named here too:
/// identity loads through them, and tools and the `cert_mac` fuzz target use these paths.
pub use crate::config::files::{parse_certificates, ParseFailure};
use crate::identity::deny_list::MacDenyList;
use crate::identity::error::IdentityError;
use crate::identity::expiry::read_expiries;
pub use crate::identity::files::{read_certificates, read_crls, read_private_key};
use crate::identity::inventory::{Inventory, InventoryFormat};
use crate::identity::profile::{profiles_from_config, CaSource, VendorProfile};
use crate::identity::rejection::HandshakeCounters;
use crate::identity::server_config::build_server_config;
use crate::identity::trust::{ChainLimits, TrustState, TrustedCa, VendorTrust};
use crate::identity::verify::DeviceCertVerifier;

/// The snapshot is defined in its own module (so the verifier can read it without naming the
/// loader); named here too, where it is loaded.
pub use crate::identity::snapshot::IdentitySnapshot;

/// Where the shipped vendor CAs live, relative to the working directory.
pub const DEFAULT_CA_DIR: &str = "config/ca";

impl IdentitySnapshot {
    /// Loads from `config`, built-in vendor CAs from [`DEFAULT_CA_DIR`].
    pub fn load(config: &Config, counters: Arc<HandshakeCounters>) -> Result<Self, IdentityError> {
        Self::load_with_ca_dir(config, Path::new(DEFAULT_CA_DIR), counters)
    }

    /// Loads from `config`, built-in vendor CAs from `ca_dir/<vendor>/`.
    pub fn load_with_ca_dir(
        config: &Config,
        ca_dir: &Path,
        counters: Arc<HandshakeCounters>,
    ) -> Result<Self, IdentityError> {
        let trust = Arc::new(load_trust(config, ca_dir)?);
        let client_cert = config.tls.client_cert;
        if client_cert != ClientCertMode::Off && trust.vendors.iter().all(|v| v.cas.is_empty()) {
            return Err(IdentityError::NoTrustAnchors);
        }
        let verifier = Arc::new(DeviceCertVerifier::new(
            trust.clone(),
            client_cert,
            counters.clone(),
        ));
        let server_config = Arc::new(build_server_config(&config.tls, verifier)?);
        // The provisioning gateway: the same certificates and verifier, but a device
        // certificate is always required, and it speaks HTTP/1.1 (RFC 7301 ALPN).
        let provisioning_tls = crate::config::TlsConfig {
            client_cert: ClientCertMode::Required,
            ..config.tls.clone()
        };
        let provisioning_verifier = Arc::new(DeviceCertVerifier::new(
            trust.clone(),
            ClientCertMode::Required,
            counters,
        ));
        let mut provisioning_server_config =
            build_server_config(&provisioning_tls, provisioning_verifier)?;
        provisioning_server_config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let server_cert_expiries = read_expiries(&config.tls.certificates)?;
        Ok(Self {
            trust,
            server_config,
            provisioning_server_config: Arc::new(provisioning_server_config),
            client_cert,
            server_cert_expiries,
        })
    }
}

/// Loads vendor trust, inventory and deny-list (everything except server certificates).
pub fn load_trust(config: &Config, ca_dir: &Path) -> Result<TrustState, IdentityError> {
    let profiles = profiles_from_config(&config.vendors, ca_dir)?;
    let vendors = profiles
        .into_iter()
        .map(load_vendor)
        .collect::<Result<Vec<_>, _>>()?;
    let inventory = match &config.inventory.file {
        Some(path) => load_inventory(path)?,
        None => Inventory::default(),
    };
    let deny_list = match &config.tls.mac_deny_list {
        Some(path) => {
            let text = read_text(path)?;
            MacDenyList::parse(&text).map_err(|(line, source)| IdentityError::DenyList {
                path: path.clone(),
                line,
                source,
            })?
        }
        None => MacDenyList::default(),
    };
    Ok(TrustState {
        vendors,
        inventory,
        deny_list,
        limits: ChainLimits {
            max_certs: config.tls.max_client_chain_certs,
            max_bytes: config.tls.max_client_chain_bytes,
        },
    })
}

/// Reads and parses an inventory file (TOML or CSV by extension).
pub fn load_inventory(path: &Path) -> Result<Inventory, IdentityError> {
    let name = path.to_string_lossy();
    let wrap = |source| IdentityError::Inventory {
        path: path.to_path_buf(),
        source,
    };
    let format = InventoryFormat::from_file_name(&name).map_err(wrap)?;
    let text = read_text(path)?;
    Inventory::parse(&text, format).map_err(wrap)
}

fn load_vendor(profile: VendorProfile) -> Result<VendorTrust, IdentityError> {
    let files = match &profile.ca {
        CaSource::Files(files) => files.clone(),
        CaSource::Directory(dir) => certificate_files_in(dir)?,
    };
    let mut cas = Vec::new();
    for file in &files {
        for der in read_certificates(file)? {
            cas.push(TrustedCa {
                der,
                file: file.clone(),
            });
        }
    }
    let mut crls = Vec::new();
    for file in &profile.crl {
        crls.extend(read_crls(file)?);
    }
    let webpki = if cas.is_empty() {
        None
    } else {
        let mut roots = RootCertStore::empty();
        for ca in &cas {
            // A CA webpki cannot use as an anchor (e.g. an unsupported key type) still serves
            // the legacy path through x509-parser; skip it here.
            let _ = roots.add(ca.der.clone());
        }
        if roots.is_empty() {
            None
        } else {
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .with_crls(crls.iter().cloned())
                // Most vendors publish no CRL: an absent CRL is not a failure.
                .allow_unknown_revocation_status()
                .build()
                .map_err(|source| IdentityError::ClientVerifier {
                    vendor: profile.name.clone(),
                    source,
                })?;
            Some(verifier)
        }
    };
    Ok(VendorTrust {
        profile,
        cas,
        crls,
        webpki,
    })
}

/// Certificate files (`.pem .crt .cer .der`) in `dir`, sorted; a missing directory is empty.
fn certificate_files_in(dir: &Path) -> Result<Vec<PathBuf>, IdentityError> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(IdentityError::Read {
                path: dir.to_path_buf(),
                source,
            })
        }
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.extension().and_then(|e| e.to_str()).is_some_and(|e| {
                ["pem", "crt", "cer", "der"]
                    .iter()
                    .any(|x| e.eq_ignore_ascii_case(x))
            })
        })
        .collect();
    files.sort();
    Ok(files)
}

fn read_text(path: &Path) -> Result<String, IdentityError> {
    fs::read_to_string(path).map_err(|source| IdentityError::Read {
        path: path.to_path_buf(),
        source,
    })
}
