//! Device identity: who is on the other end of a phone TLS connection, and what it may do.
//!
//! Owns everything between "a TLS client presented a certificate chain" and "this connection is
//! device `00:04:13:a1:b2:c3` of vendor snom, allowed to use SIP users 101 and 102":
//! - [`mac`] (PURE): MAC addresses, OUIs, reading the MAC from a certificate;
//! - [`profile`]: built-in vendor profiles + `[vendors.*]` overrides;
//! - [`inventory`]: MAC → SIP users, anonymous policy, and the pure [`inventory::authorize`];
//! - [`chain`]: certificate path building with x509-parser, legacy (SHA-1 / RSA-1024) checks;
//! - [`verify`]: the rustls `ClientCertVerifier` and [`verify::identity_of`];
//! - [`rejection`]: [`HandshakeRejection`] labels and the failure counters the admin exports;
//! - [`revocation`]: MAC deny-list, CRL checks on live connections;
//! - [`server_config`]: the rustls `ServerConfig` for the phone listener (SNI, wildcard rule);
//! - [`files`]: certificate, key and CRL files through the one reader, with identity errors;
//! - [`trust`]: the loaded trust data (vendors with CAs/CRLs, inventory, deny-list, caps);
//! - [`deny_list`]: the MAC deny-list value;
//! - [`snapshot`]: [`IdentitySnapshot`], the immutable value everyone reads;
//! - [`store`]: [`IdentitySnapshot::load`], reading every file into one immutable snapshot;
//! - [`reload`]: [`IdentityWatch`], publishing the snapshot and reloading it (SIGHUP, file
//!   changes), and each TLS listener's [`ServerConfigs`];
//! - [`inspect`]: the `pbx-edge inspect-cert` report;
//! - [`expiry`]: the server certificates' notAfter as a metric.
//!
//! Reloading is [`IdentityWatch`]'s job: it builds a new snapshot with
//! [`IdentitySnapshot::load`] and publishes it only on success, keeping the old one on error
//! (nothing here mutates a published snapshot).
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub mod chain;
pub mod deny_list;
pub mod error;
pub mod expiry;
pub mod files;
pub mod inspect;
pub mod inventory;
pub mod mac;
pub mod profile;
pub mod rejection;
pub mod reload;
pub mod revocation;
pub mod server_config;
pub mod snapshot;
pub mod store;
pub mod trust;
pub mod verify;

use std::fmt;

pub use error::IdentityError;
pub use inventory::{authorize, Authorization, DenyReason, Inventory};
pub use mac::{MacAddress, Oui};
pub use rejection::{CertificateRejection, HandshakeCounters, HandshakeRejection};
pub use reload::{IdentityWatch, ServerConfigs, TlsListener};
pub use snapshot::IdentitySnapshot;
pub use verify::{identity_of, DeviceCertVerifier};

/// Who a phone connection is, decided once at the TLS handshake.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Identity {
    /// A device certificate of `vendor` carrying `mac`.
    Device {
        /// Vendor profile name (`snom`, `yealink`, ...).
        vendor: String,
        /// The MAC read from the certificate.
        mac: MacAddress,
    },
    /// A non-unique certificate shared by many units of `vendor` (Snom 3xx/PA1/MP, Yealink's
    /// generic certificate), accepted because the vendor's `shared_certs = "shared"`.
    Shared {
        /// Vendor profile name.
        vendor: String,
    },
    /// No client certificate (listener with `client_cert = "optional"` or `"off"`).
    Anonymous,
}

impl Identity {
    /// The vendor profile name, if a certificate was presented.
    pub fn vendor(&self) -> Option<&str> {
        match self {
            Self::Device { vendor, .. } | Self::Shared { vendor } => Some(vendor),
            Self::Anonymous => None,
        }
    }

    /// The device MAC, for a unique device certificate.
    pub fn mac(&self) -> Option<MacAddress> {
        match self {
            Self::Device { mac, .. } => Some(*mac),
            _ => None,
        }
    }

    /// Stable label for metrics: `device`, `shared` or `anonymous`.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Device { .. } => "device",
            Self::Shared { .. } => "shared",
            Self::Anonymous => "anonymous",
        }
    }
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Device { vendor, mac } => write!(f, "{vendor} device {mac}"),
            Self::Shared { vendor } => write!(f, "{vendor} shared certificate"),
            Self::Anonymous => f.write_str("anonymous"),
        }
    }
}
