//! What a verdict is made against, once loaded: each enabled vendor with its CAs, CRLs and
//! webpki verifier, the inventory, the deny-list and the chain size caps. Plain data, built
//! by [`crate::identity::store`] and read by [`crate::identity::verify`].

use std::path::PathBuf;
use std::sync::Arc;

use rustls::pki_types::{CertificateDer, CertificateRevocationListDer};
use rustls::server::danger::ClientCertVerifier;

use crate::identity::deny_list::MacDenyList;
use crate::identity::inventory::Inventory;
use crate::identity::profile::VendorProfile;

/// One enabled vendor profile with its loaded CAs, CRLs and webpki verifier.
#[derive(Debug)]
pub struct VendorTrust {
    /// The profile.
    pub profile: VendorProfile,
    /// CA certificates (roots and intermediates) from the bundle files.
    pub cas: Vec<TrustedCa>,
    /// CRLs for this vendor's CAs.
    pub crls: Vec<CertificateRevocationListDer<'static>>,
    /// webpki verifier over `cas` + `crls` (modern paths); `None` without usable CAs.
    pub webpki: Option<Arc<dyn ClientCertVerifier>>,
}

/// Everything a verdict needs: vendors, inventory, deny-list.
#[derive(Debug)]
pub struct TrustState {
    /// Enabled vendors, by name.
    pub vendors: Vec<VendorTrust>,
    /// Device inventory.
    pub inventory: Inventory,
    /// Revoked MACs.
    pub deny_list: MacDenyList,
    /// Size caps on the chain a client presents.
    pub limits: ChainLimits,
}

/// Caps on a presented client chain (`tls.max_client_chain_certs`,
/// `tls.max_client_chain_bytes`), checked before any parsing or signature work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChainLimits {
    /// Certificates, the end entity included.
    pub max_certs: usize,
    /// Sum of the DER sizes.
    pub max_bytes: usize,
}

impl ChainLimits {
    /// Defaults: real device chains are 1-3 certificates of 0.5-2 KB (Snom: device +
    /// "Snom Phone 1"; Cisco: MIC + manufacturing CA), so 8 certificates / 32 KiB leaves room
    /// for a vendor that also sends its root or a longer operator chain.
    pub const DEFAULT: Self = Self {
        max_certs: crate::config::DEFAULT_MAX_CLIENT_CHAIN_CERTS,
        max_bytes: crate::config::DEFAULT_MAX_CLIENT_CHAIN_BYTES,
    };

    /// Why `end_entity` + `intermediates` exceed the caps, if they do.
    pub fn exceeded(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
    ) -> Option<String> {
        let count = intermediates.len().saturating_add(1);
        let bytes = intermediates
            .iter()
            .fold(end_entity.len(), |sum, c| sum.saturating_add(c.len()));
        if count > self.max_certs {
            Some(format!(
                "{count} certificates presented; tls.max_client_chain_certs = {}",
                self.max_certs
            ))
        } else if bytes > self.max_bytes {
            Some(format!(
                "{bytes} bytes of certificates presented; tls.max_client_chain_bytes = {}",
                self.max_bytes
            ))
        } else {
            None
        }
    }
}

impl Default for ChainLimits {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// A CA certificate from a vendor bundle.
#[derive(Debug, Clone)]
pub struct TrustedCa {
    /// The certificate.
    pub der: CertificateDer<'static>,
    /// The file it came from.
    pub file: PathBuf,
}
