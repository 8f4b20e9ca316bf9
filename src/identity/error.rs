//! [`IdentityError`]: why identity files or settings could not be loaded. A reload that fails with
//! one of these keeps the previous snapshot; start-up and `check-config` exit 2.

use std::io;
use std::path::PathBuf;

use crate::identity::inventory::InventoryError;
use crate::identity::mac::MacError;

/// Why loading certificates, keys, CAs, CRLs, the deny-list, the inventory or the vendor
/// settings failed. Every variant names the file or config key at fault.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// A configured file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// A certificate file holds no certificate (neither PEM `CERTIFICATE` blocks nor DER).
    #[error("{path}: no certificate found (expected PEM or DER)")]
    NoCertificate {
        /// The file.
        path: PathBuf,
    },
    /// A certificate in a file does not parse as X.509.
    #[error("{path}: certificate #{index} is not valid X.509 DER")]
    BadCertificate {
        /// The file.
        path: PathBuf,
        /// Position of the certificate in the file (0-based).
        index: usize,
    },
    /// A key file holds no private key (PKCS#8, PKCS#1 or SEC1 PEM, or DER).
    #[error("{path}: no private key found")]
    NoPrivateKey {
        /// The key file.
        path: PathBuf,
    },
    /// The private key is of a type or size the TLS provider cannot sign with.
    #[error("{path}: unsupported private key: {source}")]
    UnsupportedKey {
        /// The key file.
        path: PathBuf,
        /// What the provider said.
        source: rustls::Error,
    },
    /// The private key does not belong to the certificate's public key.
    #[error("{key}: private key does not match the certificate in {cert}")]
    KeyMismatch {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
    },
    /// A server certificate names a wildcard DNS name; RFC 5922 §7.2 forbids them for SIP and
    /// phones validating per RFC 5922 refuse them. Set `tls.allow_wildcard_server_cert = true`
    /// to accept anyway.
    #[error(
        "{path}: wildcard server certificate name {name:?} refused (RFC 5922 §7.2); set \
         tls.allow_wildcard_server_cert = true to allow it"
    )]
    WildcardServerCertificate {
        /// The certificate file.
        path: PathBuf,
        /// The wildcard name.
        name: String,
    },
    /// `[[tls.certificates]]` is empty.
    #[error("tls.certificates: at least one server certificate is required")]
    NoServerCertificate,
    /// A CRL file does not parse.
    #[error("{path}: CRL #{index} is not a valid X.509 CRL")]
    BadCrl {
        /// The file.
        path: PathBuf,
        /// Position of the CRL in the file (0-based).
        index: usize,
    },
    /// `vendors.<name>.mac_from` names an unknown MAC source.
    #[error(
        "vendors.{vendor}.mac_from: unknown MAC source {value:?} (expected one or more of \
         cn, cn_sep, serial_number_suffix, st, ou, san_uri, san_dns)"
    )]
    BadMacFrom {
        /// The vendor section.
        vendor: String,
        /// The offending word.
        value: String,
    },
    /// `vendors.<name>.ouis` holds something that is not 6 hex digits.
    #[error("vendors.{vendor}.ouis: {value:?} is not an OUI (6 hex digits)")]
    BadOui {
        /// The vendor section.
        vendor: String,
        /// The offending entry.
        value: String,
    },
    /// A `[vendors.<name>]` section that is not a built-in profile lacks a required key.
    #[error("vendors.{vendor}: not a built-in profile, so `{key}` must be set")]
    IncompleteVendor {
        /// The vendor section.
        vendor: String,
        /// The missing key (`ca` or `mac_from`).
        key: &'static str,
    },
    /// Client certificates are requested but no vendor CA is loaded: every phone would fail.
    #[error(
        "no vendor CA certificate loaded (all vendor profiles are disabled or have no CA files) \
         while tls.client_cert is not \"off\""
    )]
    NoTrustAnchors,
    /// The inventory file is invalid.
    #[error("{path}: {source}")]
    Inventory {
        /// The inventory file.
        path: PathBuf,
        /// What is wrong in it.
        source: InventoryError,
    },
    /// A line of the MAC deny-list is not a MAC.
    #[error("{path}:{line}: {source}")]
    DenyList {
        /// The deny-list file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// Why the line is not a MAC.
        source: MacError,
    },
    /// rustls could not build the webpki client verifier of a vendor (e.g. its CRLs).
    #[error("vendors.{vendor}: cannot build the certificate verifier: {source}")]
    ClientVerifier {
        /// The vendor section.
        vendor: String,
        /// What rustls said.
        source: rustls::server::VerifierBuilderError,
    },
    /// rustls refused the assembled server configuration.
    #[error("TLS server configuration: {0}")]
    Tls(rustls::Error),
}

impl IdentityError {
    /// Stable label for metrics (`pbx_edge_config_reload_failures_total{reason}`) and logs.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Read { .. } => "read",
            Self::NoCertificate { .. } => "no_certificate",
            Self::BadCertificate { .. } => "bad_certificate",
            Self::NoPrivateKey { .. } => "no_private_key",
            Self::UnsupportedKey { .. } => "unsupported_key",
            Self::KeyMismatch { .. } => "key_mismatch",
            Self::WildcardServerCertificate { .. } => "wildcard_server_certificate",
            Self::NoServerCertificate => "no_server_certificate",
            Self::BadCrl { .. } => "bad_crl",
            Self::BadMacFrom { .. } => "bad_mac_from",
            Self::BadOui { .. } => "bad_oui",
            Self::IncompleteVendor { .. } => "incomplete_vendor",
            Self::NoTrustAnchors => "no_trust_anchors",
            Self::Inventory { .. } => "inventory",
            Self::DenyList { .. } => "deny_list",
            Self::ClientVerifier { .. } => "client_verifier",
            Self::Tls(_) => "tls",
        }
    }
}
