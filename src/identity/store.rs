//! Loading: reads every identity file (server certificates and keys, vendor CAs, CRLs, MAC
//! deny-list, inventory) into one immutable [`IdentitySnapshot`] with its rustls `ServerConfig`.
//!
//! The caller owns publication and reload (file watching, SIGHUP): it keeps an
//! `Arc<IdentitySnapshot>`, builds a new one with [`IdentitySnapshot::load`] and swaps it in only
//! on success, so a failed reload keeps the old state (linkerd `creds/store.rs`). The
//! [`HandshakeCounters`] are created once by the caller and passed to every load so counts
//! survive reloads.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};

use crate::config::{ClientCertMode, Config};
use crate::identity::chain::parse_certificate;
use crate::identity::error::IdentityError;
use crate::identity::expiry::{read_expiries, ServerCertExpiry};
use crate::identity::inventory::{Inventory, InventoryFormat};
use crate::identity::profile::{profiles_from_config, CaSource, VendorProfile};
use crate::identity::rejection::HandshakeCounters;
use crate::identity::revocation::MacDenyList;
use crate::identity::server_config::build_server_config;
use crate::identity::verify::{ChainLimits, DeviceCertVerifier, TrustState, VendorTrust};

/// Where the shipped vendor CAs live, relative to the working directory.
pub const DEFAULT_CA_DIR: &str = "config/ca";

/// Everything identity needs, loaded and validated; immutable once built.
#[derive(Debug)]
pub struct IdentitySnapshot {
    trust: Arc<TrustState>,
    server_config: Arc<ServerConfig>,
    provisioning_server_config: Arc<ServerConfig>,
    client_cert: ClientCertMode,
    server_cert_expiries: Vec<ServerCertExpiry>,
}

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

    /// The rustls server configuration for the phone listener (use for every new accept).
    pub fn server_config(&self) -> Arc<ServerConfig> {
        self.server_config.clone()
    }

    /// The rustls server configuration for the HTTPS provisioning gateway: the same server
    /// certificates and device verification, client certificate always required.
    pub fn provisioning_server_config(&self) -> Arc<ServerConfig> {
        self.provisioning_server_config.clone()
    }

    /// When each configured server certificate chain expires (`tls.certificates` order).
    pub fn server_cert_expiries(&self) -> &[ServerCertExpiry] {
        &self.server_cert_expiries
    }

    /// The configured client certificate mode.
    pub fn client_cert_mode(&self) -> ClientCertMode {
        self.client_cert
    }

    /// The device inventory.
    pub fn inventory(&self) -> &Inventory {
        &self.trust.inventory
    }

    /// The MAC deny-list.
    pub fn deny_list(&self) -> &MacDenyList {
        &self.trust.deny_list
    }

    /// Enabled vendor profiles with their loaded CAs.
    pub fn vendors(&self) -> &[VendorTrust] {
        &self.trust.vendors
    }

    /// The verification state shared with the verifier.
    pub fn trust(&self) -> &TrustState {
        &self.trust
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

/// A CA certificate from a vendor bundle.
#[derive(Debug, Clone)]
pub struct TrustedCa {
    /// The certificate.
    pub der: CertificateDer<'static>,
    /// The file it came from.
    pub file: PathBuf,
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

fn read_bytes(path: &Path) -> Result<Vec<u8>, IdentityError> {
    fs::read(path).map_err(|source| IdentityError::Read {
        path: path.to_path_buf(),
        source,
    })
}

fn read_text(path: &Path) -> Result<String, IdentityError> {
    fs::read_to_string(path).map_err(|source| IdentityError::Read {
        path: path.to_path_buf(),
        source,
    })
}

fn is_pem(bytes: &[u8]) -> bool {
    bytes.windows(11).any(|w| w == b"-----BEGIN ")
}

/// Certificates in a PEM (several allowed) or DER file, each checked to parse as X.509.
pub fn read_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, IdentityError> {
    let bytes = read_bytes(path)?;
    parse_certificates(&bytes).map_err(|error| match error {
        ParseFailure::Nothing => IdentityError::NoCertificate {
            path: path.to_path_buf(),
        },
        ParseFailure::Bad(index) => IdentityError::BadCertificate {
            path: path.to_path_buf(),
            index,
        },
    })
}

/// Why [`parse_certificates`] failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParseFailure {
    /// No certificate in the input.
    Nothing,
    /// Certificate #n is not X.509.
    Bad(usize),
}

/// Certificates from PEM (several blocks) or DER bytes.
pub fn parse_certificates(bytes: &[u8]) -> Result<Vec<CertificateDer<'static>>, ParseFailure> {
    let certs: Vec<CertificateDer<'static>> = if is_pem(bytes) {
        CertificateDer::pem_slice_iter(bytes)
            .collect::<Result<_, _>>()
            .map_err(|_| ParseFailure::Bad(0))?
    } else if bytes.is_empty() {
        Vec::new()
    } else {
        vec![CertificateDer::from(bytes.to_vec())]
    };
    if certs.is_empty() {
        return Err(ParseFailure::Nothing);
    }
    if let Some(index) = certs.iter().position(|c| parse_certificate(c).is_none()) {
        return Err(ParseFailure::Bad(index));
    }
    Ok(certs)
}

/// CRLs in a PEM or DER file, each checked to parse.
pub fn read_crls(path: &Path) -> Result<Vec<CertificateRevocationListDer<'static>>, IdentityError> {
    let bytes = read_bytes(path)?;
    let bad = |index| IdentityError::BadCrl {
        path: path.to_path_buf(),
        index,
    };
    let crls: Vec<CertificateRevocationListDer<'static>> = if is_pem(&bytes) {
        CertificateRevocationListDer::pem_slice_iter(&bytes)
            .collect::<Result<_, _>>()
            .map_err(|_| bad(0))?
    } else {
        vec![CertificateRevocationListDer::from(bytes)]
    };
    if crls.is_empty() {
        return Err(bad(0));
    }
    for (index, crl) in crls.iter().enumerate() {
        if x509_parser::parse_x509_crl(crl).is_err() {
            return Err(bad(index));
        }
    }
    Ok(crls)
}

/// A private key from a PEM (PKCS#8, PKCS#1, SEC1) or DER file.
pub fn read_private_key(path: &Path) -> Result<PrivateKeyDer<'static>, IdentityError> {
    let bytes = read_bytes(path)?;
    let missing = || IdentityError::NoPrivateKey {
        path: path.to_path_buf(),
    };
    if is_pem(&bytes) {
        PrivateKeyDer::from_pem_slice(&bytes).map_err(|_| missing())
    } else {
        PrivateKeyDer::try_from(bytes).map_err(|_| missing())
    }
}
