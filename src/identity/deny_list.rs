//! The MAC deny-list (`tls.mac_deny_list`): one MAC per line, `#` comments. A plain value
//! the snapshot holds; [`crate::identity::revocation`] applies it to live connections.

use std::collections::BTreeSet;

use crate::identity::mac::{MacAddress, MacError};

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
