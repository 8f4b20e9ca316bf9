//! Revocation: the MAC deny-list (`tls.mac_deny_list`, one MAC per line, `#` comments) and the
//! checks the caller runs on live connections after a reload, so a revoked device is cut off
//! (CRLs themselves are applied in [`crate::identity::verify`]).

use std::collections::BTreeSet;

use rustls::pki_types::{CertificateDer, UnixTime};

use crate::identity::mac::{MacAddress, MacError};
use crate::identity::rejection::CertificateRejection;
use crate::identity::store::IdentitySnapshot;
use crate::identity::Identity;

/// Revoked device MACs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MacDenyList {
    macs: BTreeSet<MacAddress>,
}

impl MacDenyList {
    /// Parses the deny-list text: one MAC per line (any separator/case), blank lines and `#`
    /// comments (whole-line or trailing) ignored. Errors carry the 1-based line number.
    pub fn parse(text: &str) -> Result<Self, (usize, MacError)> {
        let mut macs = BTreeSet::new();
        for (index, line) in text.lines().enumerate() {
            let content = line.split('#').next().unwrap_or_default().trim();
            if content.is_empty() {
                continue;
            }
            macs.insert(MacAddress::parse(content).map_err(|e| (index + 1, e))?);
        }
        Ok(Self { macs })
    }

    /// A deny-list of these MACs.
    pub fn from_macs(macs: impl IntoIterator<Item = MacAddress>) -> Self {
        Self {
            macs: macs.into_iter().collect(),
        }
    }

    /// Whether `mac` is revoked.
    pub fn contains(&self, mac: &MacAddress) -> bool {
        self.macs.contains(mac)
    }

    /// Number of revoked MACs.
    pub fn len(&self) -> usize {
        self.macs.len()
    }

    /// Whether the list is empty.
    pub fn is_empty(&self) -> bool {
        self.macs.is_empty()
    }
}

/// PURE: whether `identity` is revoked in `snapshot` by the MAC deny-list. The caller runs this
/// for every live connection after each reload and closes those that are (DESIGN.md:
/// "revoking a device closes its live connections").
pub fn is_revoked(identity: &Identity, snapshot: &IdentitySnapshot) -> bool {
    identity
        .mac()
        .is_some_and(|mac| snapshot.deny_list().contains(&mac))
}

/// Re-runs the whole handshake verdict (chain, CRLs, deny-list, inventory) for a live
/// connection's certificates against a new snapshot; `Err` means close the connection. Without
/// certificates (anonymous) this always succeeds: the anonymous source check is the caller's
/// ([`crate::identity::Inventory::admits_anonymous_from`]).
pub fn recheck(
    peer_certificates: Option<&[CertificateDer<'_>]>,
    snapshot: &IdentitySnapshot,
    now: UnixTime,
) -> Result<Identity, CertificateRejection> {
    match peer_certificates {
        Some([end_entity, intermediates @ ..]) => snapshot
            .trust()
            .verify(end_entity, intermediates, now)
            .map(|verified| verified.identity),
        _ => Ok(Identity::Anonymous),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        #[test]
        fn deny_list_parse_never_panics(text in "\\PC*") {
            let _ = MacDenyList::parse(&text);
        }
    }

    #[test]
    fn deny_list_parses_with_comments() {
        let list =
            MacDenyList::parse("# stolen\n00:04:13:a1:b2:c3  # desk 4\n\n001565000001\n").unwrap();
        assert_eq!(list.len(), 2);
        assert!(list.contains(&MacAddress::parse("000413A1B2C3").unwrap()));
        assert_eq!(MacDenyList::parse("ok\n").unwrap_err().0, 1);
        assert_eq!(MacDenyList::parse("000413a1b2c3\nnope").unwrap_err().0, 2);
    }
}
