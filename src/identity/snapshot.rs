//! [`IdentitySnapshot`]: everything identity decides with, immutable once built. It is
//! built by [`crate::identity::store`] (which reads the files) and published by
//! [`crate::identity::reload`]; the verifier, revocation and the listeners only read it.

use std::sync::Arc;

use rustls::ServerConfig;

use crate::config::ClientCertMode;
use crate::identity::deny_list::MacDenyList;
use crate::identity::inventory::Inventory;
use crate::identity::trust::{TrustState, VendorTrust};

/// Everything identity needs, loaded and validated; immutable once built.
#[derive(Debug)]
pub struct IdentitySnapshot {
    // Built only by `store` (the loader); read through the accessors below.
    pub(super) trust: Arc<TrustState>,
    pub(super) server_config: Arc<ServerConfig>,
    pub(super) provisioning_server_config: Arc<ServerConfig>,
    pub(super) client_cert: ClientCertMode,
    pub(super) server_cert_expiries: Vec<ServerCertExpiry>,
}

impl IdentitySnapshot {
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

/// One `[[tls.certificates]]` entry's expiry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerCertExpiry {
    /// Position in `tls.certificates` (0 is the default certificate).
    pub index: usize,
    /// The configured certificate file, as written in the config.
    pub file: String,
    /// The earliest notAfter of the file's chain, unix seconds.
    pub not_after: i64,
}
