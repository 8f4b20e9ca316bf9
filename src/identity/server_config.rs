//! The rustls `ServerConfig` for the phone listener: TLS 1.2 and 1.3 only, the device-certificate
//! verifier, and server certificates chosen by SNI.
//!
//! `[[tls.certificates]]`: the first entry is the default (no SNI, or an unknown name); each
//! entry is also selected by the DNS names in its certificate's subjectAltName (the CN when there
//! is no SAN). A wildcard name is refused unless `tls.allow_wildcard_server_cert`: RFC 5922 §7.2
//! forbids wildcard SIP server certificates and phones validating per RFC 5922 reject them.

use std::path::Path;
use std::sync::Arc;

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;
use x509_parser::extensions::GeneralName;

use crate::config::{ClientCertMode, ServerCertConfig, TlsConfig};
use crate::identity::chain::parse_certificate;
use crate::identity::error::IdentityError;
use crate::identity::files::{read_certificates, read_private_key};
use crate::identity::verify::DeviceCertVerifier;

/// Builds the listener's server configuration.
pub fn build_server_config(
    tls: &TlsConfig,
    verifier: Arc<DeviceCertVerifier>,
) -> Result<ServerConfig, IdentityError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let resolver = Arc::new(SniResolver::load(
        &tls.certificates,
        tls.allow_wildcard_server_cert,
        &provider,
    )?);
    let builder = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(IdentityError::Tls)?;
    let mut config = if tls.client_cert == ClientCertMode::Off {
        builder.with_no_client_auth().with_cert_resolver(resolver)
    } else {
        builder
            .with_client_cert_verifier(verifier)
            .with_cert_resolver(resolver)
    };
    // The edge's cipher suite order wins (AES-GCM and ChaCha20 AEADs with ECDHE only, the
    // provider's order), not whatever a phone lists first: a server-side order is what TLS
    // scanners and BSI TR-02102-2 / Mozilla's guidelines expect.
    config.ignore_client_order = true;
    Ok(config)
}

/// Server certificate selection by SNI with a default.
#[derive(Debug)]
pub struct SniResolver {
    default: Arc<CertifiedKey>,
    by_name: Vec<(String, Arc<CertifiedKey>)>,
}

impl SniResolver {
    /// Loads every `[[tls.certificates]]` entry (checking key ↔ certificate and wildcards).
    pub fn load(
        entries: &[ServerCertConfig],
        allow_wildcard: bool,
        provider: &rustls::crypto::CryptoProvider,
    ) -> Result<Self, IdentityError> {
        let mut by_name = Vec::new();
        let mut default = None;
        for entry in entries {
            let (key, names) = load_server_certificate(entry, allow_wildcard, provider)?;
            for name in names {
                if !by_name.iter().any(|(n, _)| *n == name) {
                    by_name.push((name, key.clone()));
                }
            }
            default.get_or_insert(key);
        }
        let default = default.ok_or(IdentityError::NoServerCertificate)?;
        Ok(Self { default, by_name })
    }

    /// The DNS names certificates are selected by, lower-case.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.by_name.iter().map(|(n, _)| n.as_str())
    }

    /// The certificate for an SNI name (exact, then one-label wildcard), else the default.
    pub fn select(&self, server_name: Option<&str>) -> Arc<CertifiedKey> {
        let Some(name) = server_name.map(str::to_ascii_lowercase) else {
            return self.default.clone();
        };
        if let Some((_, key)) = self.by_name.iter().find(|(n, _)| *n == name) {
            return key.clone();
        }
        let parent = name.split_once('.').map(|(_, rest)| rest);
        let wildcard = self.by_name.iter().find(|(n, _)| {
            n.strip_prefix("*.")
                .is_some_and(|suffix| Some(suffix) == parent)
        });
        wildcard
            .map(|(_, key)| key.clone())
            .unwrap_or_else(|| self.default.clone())
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.select(client_hello.server_name()))
    }
}

/// Loads one certificate chain + key; returns the key and the certificate's DNS names.
fn load_server_certificate(
    entry: &ServerCertConfig,
    allow_wildcard: bool,
    provider: &rustls::crypto::CryptoProvider,
) -> Result<(Arc<CertifiedKey>, Vec<String>), IdentityError> {
    let chain = read_certificates(&entry.cert)?;
    let key = read_private_key(&entry.key)?;
    let signing_key = provider
        .key_provider
        .load_private_key(key)
        .map_err(|source| IdentityError::UnsupportedKey {
            path: entry.key.clone(),
            source,
        })?;
    let names = chain
        .first()
        .map(|leaf| dns_names(leaf))
        .unwrap_or_default();
    if !allow_wildcard {
        if let Some(name) = names.iter().find(|n| n.contains('*')) {
            return Err(IdentityError::WildcardServerCertificate {
                path: entry.cert.clone(),
                name: name.clone(),
            });
        }
    }
    let certified = CertifiedKey::new(chain, signing_key);
    certified
        .keys_match()
        .map_err(|_| IdentityError::KeyMismatch {
            cert: entry.cert.clone(),
            key: entry.key.clone(),
        })?;
    Ok((Arc::new(certified), names))
}

/// SAN DNS names of a certificate, lower-case; the CN values when there is no SAN DNS name.
pub fn dns_names(der: &[u8]) -> Vec<String> {
    let Some(cert) = parse_certificate(der) else {
        return Vec::new();
    };
    let mut names: Vec<String> = match cert.subject_alternative_name() {
        Ok(Some(san)) => san
            .value
            .general_names
            .iter()
            .filter_map(|n| match n {
                GeneralName::DNSName(dns) => Some(dns.to_ascii_lowercase()),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    };
    if names.is_empty() {
        names = cert
            .subject()
            .iter_common_name()
            .filter_map(|cn| cn.as_str().ok().map(str::to_ascii_lowercase))
            .collect();
    }
    names
}

/// Whether the certificate file's leaf carries a wildcard name (for `check-config`).
pub fn has_wildcard_name(path: &Path) -> Result<bool, IdentityError> {
    let chain = read_certificates(path)?;
    Ok(chain
        .first()
        .is_some_and(|leaf| dns_names(leaf).iter().any(|n| n.contains('*'))))
}
