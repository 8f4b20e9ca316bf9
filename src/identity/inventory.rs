//! The device inventory: MAC → the SIP users a device may register and call as, per-vendor
//! grants, and the explicit anonymous policy; plus the pure authorization the SIP layer calls.
//!
//! PURE: parsing takes the file text; the caller reads the file (see `store`).
//!
//! TOML form (`inventory.file = "....toml"`):
//! ```toml
//! [[devices]]
//! mac = "00:04:13:A1:B2:C3"         # any case or separator
//! users = ["101", "102@pbx.example.com"]   # "*" (or "any") = every user, explicitly
//! label = "reception"
//! provisioning = ["/snom/{MAC}.xml", "/phonebook/*"]   # optional, see below
//!
//! [[vendors]]                       # every verified device of a vendor (listed or not), and
//! vendor = "yealink"                # that vendor's shared certificate when accepted
//! users = ["*"]
//!
//! [anonymous]                       # connections without a client certificate; default: none
//! users = ["900"]
//! networks = ["192.0.2.0/24"]       # optional: source networks allowed; empty = any source
//! ```
//! CSV form (`....csv`), devices only: header `mac,users,label,provisioning`; users and
//! provisioning paths separated by `;` or spaces inside their field (an empty field = absent).
//!
//! Provisioning (the HTTPS gateway, DESIGN.md "MAC → ... the provisioning paths it may
//! fetch"): `provisioning` lists path patterns (`crate::config::pattern`: `*`, `{mac}`,
//! `{MAC}`). Absent, a device may fetch the files whose name contains its own MAC (12 hex
//! digits, any case): the per-device file of every vendor (`000413a1b2c3.cfg`,
//! `snom/000413A1B2C3.xml`, `SEP...`-less `{mac}-contacts.xml`). `provisioning = []` allows
//! nothing device-specific. `provisioning.common` in the config applies to every verified
//! device on top; shared-certificate identities get only `common`.
//!
//! User matching (DESIGN.md "Device inventory"): an entry `101` allows user `101` in any domain;
//! `101@pbx.example.com` allows only that domain. User parts compare exactly, domains
//! case-insensitively (RFC 3261 §19.1.4).

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use std::net::IpAddr;

use serde::Deserialize;

use crate::config::pattern::{PathPattern, PatternError};
use crate::identity::mac::{MacAddress, MacError};
use crate::identity::Identity;

/// Why an inventory file is invalid. Line/entry numbers are 1-based.
#[derive(Debug, thiserror::Error)]
pub enum InventoryError {
    /// The TOML does not parse or has unknown keys.
    #[error("invalid inventory TOML: {0}")]
    Toml(#[from] toml::de::Error),
    /// A CSV record does not parse.
    #[error("invalid inventory CSV: {0}")]
    Csv(#[from] csv::Error),
    /// A device's `mac` is not a MAC.
    #[error("device #{entry}: mac {value:?}: {source}")]
    BadMac {
        /// Entry number.
        entry: usize,
        /// The value.
        value: String,
        /// Why.
        source: MacError,
    },
    /// A MAC appears twice.
    #[error("device #{entry}: mac {mac} is listed twice")]
    DuplicateMac {
        /// Entry number of the second occurrence.
        entry: usize,
        /// The MAC.
        mac: MacAddress,
    },
    /// A user entry is empty or malformed (`@` without user or domain).
    #[error("{section}: user {value:?} is not a SIP user (`101`, `101@domain` or `*`)")]
    BadUser {
        /// Where (`device #3`, `vendor yealink`, `anonymous`).
        section: String,
        /// The value.
        value: String,
    },
    /// An anonymous network is not `address/prefix` (or a bare address).
    #[error("anonymous.networks: {0:?} is not an IP network (e.g. 192.0.2.0/24)")]
    BadNetwork(String),
    /// A `provisioning` pattern does not parse.
    #[error("device #{entry}: provisioning pattern {value:?}: {source}")]
    BadProvisioningPattern {
        /// Entry number.
        entry: usize,
        /// The value.
        value: String,
        /// Why.
        source: PatternError,
    },
    /// The file extension is neither `.toml` nor `.csv`.
    #[error("inventory file must end in .toml or .csv")]
    UnknownFormat,
}

impl InventoryError {
    /// Stable label for metrics and logs.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Toml(_) => "toml",
            Self::Csv(_) => "csv",
            Self::BadMac { .. } => "bad_mac",
            Self::DuplicateMac { .. } => "duplicate_mac",
            Self::BadUser { .. } => "bad_user",
            Self::BadNetwork(_) => "bad_network",
            Self::BadProvisioningPattern { .. } => "bad_provisioning_pattern",
            Self::UnknownFormat => "unknown_format",
        }
    }
}

/// A SIP user an inventory entry grants: `101` (any domain) or `101@pbx.example.com`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SipUser {
    user: String,
    domain: Option<String>,
}

impl SipUser {
    /// Parses `user` or `user@domain`.
    pub fn parse(text: &str) -> Option<Self> {
        let text = text.trim();
        match text.split_once('@') {
            None if !text.is_empty() => Some(Self {
                user: text.to_owned(),
                domain: None,
            }),
            Some((user, domain)) if !user.is_empty() && !domain.is_empty() => Some(Self {
                user: user.to_owned(),
                domain: Some(domain.to_ascii_lowercase()),
            }),
            _ => None,
        }
    }

    /// Whether this grant covers the requested `user` (`101` or `101@domain`).
    pub fn allows(&self, requested: &str) -> bool {
        let (user, domain) = match requested.split_once('@') {
            Some((u, d)) => (u, Some(d)),
            None => (requested, None),
        };
        if user != self.user {
            return false;
        }
        match (&self.domain, domain) {
            (None, _) => true,
            (Some(granted), Some(asked)) => granted.eq_ignore_ascii_case(asked),
            (Some(_), None) => false,
        }
    }
}

impl fmt::Display for SipUser {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.domain {
            Some(domain) => write!(f, "{}@{domain}", self.user),
            None => f.write_str(&self.user),
        }
    }
}

/// The users an entry grants.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum UserSet {
    /// `"*"` / `"any"`: every user, granted explicitly.
    Any,
    /// These users only (may be empty).
    Listed(Vec<SipUser>),
    /// Nothing granted (no entry).
    #[default]
    None,
}

impl UserSet {
    fn parse<'a>(
        section: &str,
        values: impl IntoIterator<Item = &'a str>,
    ) -> Result<Self, InventoryError> {
        let mut users = Vec::new();
        for value in values {
            let value = value.trim();
            if value == "*" || value.eq_ignore_ascii_case("any") {
                return Ok(Self::Any);
            }
            let user = SipUser::parse(value).ok_or_else(|| InventoryError::BadUser {
                section: section.to_owned(),
                value: value.to_owned(),
            })?;
            users.push(user);
        }
        Ok(Self::Listed(users))
    }

    /// Whether `user` is granted.
    pub fn allows(&self, user: &str) -> bool {
        match self {
            Self::Any => true,
            Self::Listed(users) => users.iter().any(|u| u.allows(user)),
            Self::None => false,
        }
    }

    /// Whether nothing at all is granted.
    pub fn is_empty(&self) -> bool {
        match self {
            Self::Any => false,
            Self::Listed(users) => users.is_empty(),
            Self::None => true,
        }
    }
}

impl fmt::Display for UserSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Any => f.write_str("*"),
            Self::Listed(users) => {
                let list: Vec<String> = users.iter().map(ToString::to_string).collect();
                f.write_str(&list.join(", "))
            }
            Self::None => f.write_str("(none)"),
        }
    }
}

/// One `[[devices]]` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceEntry {
    /// The device.
    pub mac: MacAddress,
    /// SIP users it may use.
    pub users: UserSet,
    /// Operator's label (`reception`).
    pub label: Option<String>,
    /// Provisioning path patterns the device may fetch; `None` = the default (file names
    /// containing its own MAC).
    pub provisioning: Option<Vec<PathPattern>>,
}

/// An IP network (`192.0.2.0/24`, `2001:db8::/32`, or a bare address = host route).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpNetwork {
    address: IpAddr,
    prefix: u8,
}

impl IpNetwork {
    /// Whether `ip` lies in this network (an IPv4 network never contains an IPv6 address).
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.address, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                prefix_match(&net.octets(), &ip.octets(), self.prefix)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                prefix_match(&net.octets(), &ip.octets(), self.prefix)
            }
            _ => false,
        }
    }
}

fn prefix_match(network: &[u8], ip: &[u8], prefix: u8) -> bool {
    let mut remaining = u32::from(prefix);
    for (n, i) in network.iter().zip(ip) {
        if remaining == 0 {
            return true;
        }
        let bits = remaining.min(8);
        let mask = (0xffu16 << (8 - bits)) as u8;
        if n & mask != i & mask {
            return false;
        }
        remaining -= bits;
    }
    true
}

impl FromStr for IpNetwork {
    type Err = InventoryError;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let bad = || InventoryError::BadNetwork(text.to_owned());
        let (address, prefix) = match text.trim().split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (text.trim(), None),
        };
        let address: IpAddr = address.parse().map_err(|_| bad())?;
        let max = if address.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p.parse::<u8>().ok().filter(|p| *p <= max).ok_or_else(bad)?,
            None => max,
        };
        Ok(Self { address, prefix })
    }
}

impl fmt::Display for IpNetwork {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.address, self.prefix)
    }
}

/// `[anonymous]`: what connections without a client certificate may do. Default: nothing.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AnonymousPolicy {
    /// Users anonymous devices may use.
    pub users: UserSet,
    /// Source networks allowed; empty = any source.
    pub networks: Vec<IpNetwork>,
}

/// The parsed inventory (immutable; a reload builds a new one).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Inventory {
    devices: BTreeMap<MacAddress, DeviceEntry>,
    vendors: BTreeMap<String, UserSet>,
    anonymous: AnonymousPolicy,
}

/// File format, chosen by extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InventoryFormat {
    /// `.toml`
    Toml,
    /// `.csv`
    Csv,
}

impl InventoryFormat {
    /// The format for a file name, by its extension (case-insensitive).
    pub fn from_file_name(name: &str) -> Result<Self, InventoryError> {
        let lower = name.to_ascii_lowercase();
        if lower.ends_with(".toml") {
            Ok(Self::Toml)
        } else if lower.ends_with(".csv") {
            Ok(Self::Csv)
        } else {
            Err(InventoryError::UnknownFormat)
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TomlFile {
    #[serde(default)]
    devices: Vec<TomlDevice>,
    #[serde(default)]
    vendors: Vec<TomlVendor>,
    anonymous: Option<TomlAnonymous>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TomlDevice {
    mac: String,
    #[serde(default)]
    users: Vec<String>,
    label: Option<String>,
    provisioning: Option<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TomlVendor {
    vendor: String,
    users: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TomlAnonymous {
    #[serde(default)]
    users: Vec<String>,
    #[serde(default)]
    networks: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CsvDevice {
    mac: String,
    #[serde(default)]
    users: String,
    #[serde(default)]
    label: String,
    #[serde(default)]
    provisioning: String,
}

impl Inventory {
    /// Parses inventory text in `format`.
    pub fn parse(text: &str, format: InventoryFormat) -> Result<Self, InventoryError> {
        match format {
            InventoryFormat::Toml => Self::from_toml_str(text),
            InventoryFormat::Csv => Self::from_csv_str(text),
        }
    }

    /// Parses the TOML form.
    pub fn from_toml_str(text: &str) -> Result<Self, InventoryError> {
        let file: TomlFile = toml::from_str(text)?;
        let mut inventory = Self::default();
        for (index, device) in file.devices.into_iter().enumerate() {
            let users = device.users.iter().map(String::as_str);
            inventory.insert_device(
                index + 1,
                &device.mac,
                users,
                device.label,
                device.provisioning,
            )?;
        }
        for vendor in file.vendors {
            let section = format!("vendor {}", vendor.vendor);
            let users = UserSet::parse(&section, vendor.users.iter().map(String::as_str))?;
            inventory.vendors.insert(vendor.vendor, users);
        }
        if let Some(anonymous) = file.anonymous {
            inventory.anonymous = AnonymousPolicy {
                users: UserSet::parse("anonymous", anonymous.users.iter().map(String::as_str))?,
                networks: anonymous
                    .networks
                    .iter()
                    .map(|n| n.parse())
                    .collect::<Result<_, _>>()?,
            };
        }
        Ok(inventory)
    }

    /// Parses the CSV form (header `mac,users,label,provisioning`).
    pub fn from_csv_str(text: &str) -> Result<Self, InventoryError> {
        let mut reader = csv::ReaderBuilder::new()
            .trim(csv::Trim::All)
            .comment(Some(b'#'))
            .flexible(true)
            .from_reader(text.as_bytes());
        let mut inventory = Self::default();
        for (index, record) in reader.deserialize::<CsvDevice>().enumerate() {
            let device = record?;
            let users = device.users.split([';', ' ']).filter(|u| !u.is_empty());
            let provisioning: Vec<String> = device
                .provisioning
                .split([';', ' '])
                .filter(|p| !p.is_empty())
                .map(str::to_owned)
                .collect();
            let provisioning = Some(provisioning).filter(|p| !p.is_empty());
            let label = Some(device.label).filter(|l| !l.is_empty());
            inventory.insert_device(index + 1, &device.mac, users, label, provisioning)?;
        }
        Ok(inventory)
    }

    fn insert_device<'a>(
        &mut self,
        entry: usize,
        mac: &str,
        users: impl IntoIterator<Item = &'a str>,
        label: Option<String>,
        provisioning: Option<Vec<String>>,
    ) -> Result<(), InventoryError> {
        let mac = MacAddress::parse(mac).map_err(|source| InventoryError::BadMac {
            entry,
            value: mac.to_owned(),
            source,
        })?;
        let users = UserSet::parse(&format!("device #{entry}"), users)?;
        let provisioning = provisioning
            .map(|patterns| {
                patterns
                    .iter()
                    .map(|p| {
                        PathPattern::parse(p).map_err(|source| {
                            InventoryError::BadProvisioningPattern {
                                entry,
                                value: p.clone(),
                                source,
                            }
                        })
                    })
                    .collect::<Result<Vec<_>, _>>()
            })
            .transpose()?;
        if self.devices.contains_key(&mac) {
            return Err(InventoryError::DuplicateMac { entry, mac });
        }
        self.devices.insert(
            mac,
            DeviceEntry {
                mac,
                users,
                label,
                provisioning,
            },
        );
        Ok(())
    }

    /// The entry for `mac`.
    pub fn device(&self, mac: &MacAddress) -> Option<&DeviceEntry> {
        self.devices.get(mac)
    }

    /// All device entries, ordered by MAC.
    pub fn devices(&self) -> impl Iterator<Item = &DeviceEntry> {
        self.devices.values()
    }

    /// The vendor-wide grant for `vendor`, if the inventory has one.
    pub fn vendor_users(&self, vendor: &str) -> Option<&UserSet> {
        self.vendors.get(vendor)
    }

    /// The anonymous policy.
    pub fn anonymous(&self) -> &AnonymousPolicy {
        &self.anonymous
    }

    /// Whether a verified device certificate may connect at all (checked at the handshake):
    /// its MAC is listed, or its vendor has a `[[vendors]]` grant. Shared and anonymous
    /// identities were already admitted by policy (shared_certs / client_cert); their SIP users
    /// are decided by [`authorize`].
    pub fn admits(&self, identity: &Identity) -> bool {
        match identity {
            Identity::Device { vendor, mac } => {
                self.devices.contains_key(mac) || self.vendors.contains_key(vendor)
            }
            Identity::Shared { .. } | Identity::Anonymous => true,
        }
    }

    /// Whether a connection without a certificate from `source` may stay open: anonymous users
    /// are configured and the source is in `anonymous.networks` (if any are listed).
    pub fn admits_anonymous_from(&self, source: IpAddr) -> bool {
        !self.anonymous.users.is_empty()
            && (self.anonymous.networks.is_empty()
                || self.anonymous.networks.iter().any(|n| n.contains(source)))
    }

    /// May `identity` fetch the provisioning file at `path` (a normalised request path)?
    /// `common` is `provisioning.common`. `None` = no: anonymous, a device no longer admitted
    /// (removed from the inventory by a reload), or no pattern matches.
    pub fn provisioning_access(
        &self,
        identity: &Identity,
        path: &str,
        common: &[PathPattern],
    ) -> Option<ProvisioningGrant> {
        if matches!(identity, Identity::Anonymous) || !self.admits(identity) {
            return None;
        }
        let mac = identity.mac().map(|m| m.compact());
        if common.iter().any(|p| p.matches(path, mac.as_deref())) {
            return Some(ProvisioningGrant::Common);
        }
        let Identity::Device { mac: device, .. } = identity else {
            return None;
        };
        let mac = device.compact();
        match self
            .devices
            .get(device)
            .and_then(|d| d.provisioning.as_ref())
        {
            Some(patterns) => patterns
                .iter()
                .any(|p| p.matches(path, Some(&mac)))
                .then_some(ProvisioningGrant::Device),
            None => {
                let file_name = path.rsplit('/').next().unwrap_or(path);
                names_mac(file_name, &mac).then_some(ProvisioningGrant::OwnMacFile)
            }
        }
    }

    /// The SIP authorization decision; see [`authorize`].
    pub fn authorize(&self, identity: &Identity, user: &str, method: &str) -> Authorization {
        let granted_by_vendor = identity.vendor().and_then(|v| self.vendors.get(v));
        let allowed = match identity {
            Identity::Device { mac, .. } => {
                let device = self.devices.get(mac);
                if device.is_none() && granted_by_vendor.is_none() {
                    return Authorization::Deny(DenyReason::UnknownDevice { mac: *mac });
                }
                device.is_some_and(|d| d.users.allows(user))
                    || granted_by_vendor.is_some_and(|u| u.allows(user))
            }
            Identity::Shared { .. } => granted_by_vendor.is_some_and(|u| u.allows(user)),
            Identity::Anonymous => self.anonymous.users.allows(user),
        };
        if allowed {
            Authorization::Allow
        } else {
            Authorization::Deny(DenyReason::UserNotAllowed {
                identity: identity.to_string(),
                user: user.to_owned(),
                method: method.to_owned(),
            })
        }
    }
}

/// May `identity` use SIP `user` for `method`? The caller passes the To user for REGISTER and the
/// From user for every other method (DESIGN.md "Device inventory and MAC-based authorization");
/// `user` is `101` or `101@domain`.
pub fn authorize(
    inventory: &Inventory,
    identity: &Identity,
    user: &str,
    method: &str,
) -> Authorization {
    inventory.authorize(identity, user, method)
}

/// Why [`Inventory::provisioning_access`] allowed a path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProvisioningGrant {
    /// A `provisioning.common` pattern.
    Common,
    /// One of the device's own `provisioning` patterns.
    Device,
    /// The default rule: the file name contains the device's MAC.
    OwnMacFile,
}

impl ProvisioningGrant {
    /// Stable label for logs.
    pub fn label(self) -> &'static str {
        match self {
            Self::Common => "common",
            Self::Device => "device",
            Self::OwnMacFile => "own_mac_file",
        }
    }
}

/// The outcome of [`authorize`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Authorization {
    /// Forward the request.
    Allow,
    /// Answer 403 with a Warning carrying [`DenyReason::text`]; forward nothing.
    Deny(DenyReason),
}

/// Why a request was denied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DenyReason {
    /// The device's MAC is no longer in the inventory (removed by a reload after it connected).
    UnknownDevice {
        /// The device.
        mac: MacAddress,
    },
    /// The identity may not use this user.
    UserNotAllowed {
        /// The identity, as displayed.
        identity: String,
        /// The user asked for.
        user: String,
        /// The SIP method.
        method: String,
    },
}

impl DenyReason {
    /// Stable label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            Self::UnknownDevice { .. } => "unknown_device",
            Self::UserNotAllowed { .. } => "user_not_allowed",
        }
    }

    /// Human text for the SIP Warning header (RFC 3261 §20.43, code 399): printable ASCII, no
    /// double quotes, so it can sit inside the quoted warn-text as is.
    pub fn text(&self) -> String {
        let text = match self {
            Self::UnknownDevice { mac } => format!("device {mac} is not in the inventory"),
            Self::UserNotAllowed {
                identity,
                user,
                method,
            } => {
                format!("{identity} may not use SIP user {user} ({method})")
            }
        };
        text.chars()
            .map(|c| {
                if c.is_ascii_graphic() && c != '"' && c != '\\' {
                    c
                } else {
                    ' '
                }
            })
            .collect()
    }
}

impl fmt::Display for DenyReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text())
    }
}

/// Whether `file_name` names the device `mac` (12 hex digits): the MAC appears, in any case,
/// with no hex digit right before or after it — except Cisco SPA's literal `spa` prefix
/// (`spa{mac}.cfg`). Without that boundary a device whose MAC is a shift of another's would
/// match the other's file (`spa` + `0004f2a1b2c3` contains `a0004f2a1b2c`).
fn names_mac(file_name: &str, mac: &str) -> bool {
    let name = file_name.to_ascii_lowercase();
    let mac = mac.to_ascii_lowercase();
    let bytes = name.as_bytes();
    name.match_indices(&mac).any(|(at, found)| {
        let before = at.checked_sub(1).and_then(|i| bytes.get(i));
        let after = bytes.get(at + found.len());
        let cisco_spa = at == 3 && name.starts_with("spa");
        (cisco_spa || !before.is_some_and(u8::is_ascii_hexdigit))
            && !after.is_some_and(u8::is_ascii_hexdigit)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOML: &str = r#"
[[devices]]
mac = "00:04:13:A1:B2:C3"
users = ["101", "102@pbx.example.com"]
label = "reception"
provisioning = ["/snom/{MAC}.xml", "/phonebook/*"]

[[devices]]
mac = "0004.13a1.b2c4"
users = ["*"]

[[vendors]]
vendor = "yealink"
users = ["300"]

[anonymous]
users = ["900"]
networks = ["192.0.2.0/24", "2001:db8::/32"]
"#;

    fn snom(mac: &str) -> Identity {
        Identity::Device {
            vendor: "snom".into(),
            mac: MacAddress::parse(mac).unwrap(),
        }
    }

    #[test]
    fn toml_parses() {
        let inventory = Inventory::from_toml_str(TOML).unwrap();
        let entry = inventory
            .device(&MacAddress::parse("000413a1b2c3").unwrap())
            .unwrap();
        assert_eq!(entry.label.as_deref(), Some("reception"));
        let patterns: Vec<&str> = entry
            .provisioning
            .iter()
            .flatten()
            .map(PathPattern::as_str)
            .collect();
        assert_eq!(patterns, ["/snom/{MAC}.xml", "/phonebook/*"]);
        assert_eq!(entry.users.to_string(), "101, 102@pbx.example.com");
        assert_eq!(inventory.devices().count(), 2);
        assert_eq!(
            inventory.vendor_users("yealink"),
            Some(&UserSet::Listed(vec![SipUser::parse("300").unwrap()]))
        );
    }

    #[test]
    fn authorize_table() {
        let inventory = Inventory::from_toml_str(TOML).unwrap();
        let yealink = Identity::Device {
            vendor: "yealink".into(),
            mac: MacAddress::parse("805ec0000001").unwrap(),
        };
        let cases: &[(Identity, &str, bool)] = &[
            (snom("000413a1b2c3"), "101", true),
            (snom("000413a1b2c3"), "101@pbx.example.com", true),
            (snom("000413a1b2c3"), "101@other.example", true),
            (snom("000413a1b2c3"), "102@PBX.example.com", true),
            (snom("000413a1b2c3"), "102@other.example", false),
            (snom("000413a1b2c3"), "102", false),
            (snom("000413a1b2c3"), "1010", false),
            (snom("000413a1b2c4"), "555", true),
            (yealink.clone(), "300", true),
            (yealink, "301", false),
            (
                Identity::Shared {
                    vendor: "yealink".into(),
                },
                "300",
                true,
            ),
            (
                Identity::Shared {
                    vendor: "snom".into(),
                },
                "101",
                false,
            ),
            (Identity::Anonymous, "900", true),
            (Identity::Anonymous, "101", false),
        ];
        for (identity, user, allowed) in cases {
            let verdict = authorize(&inventory, identity, user, "REGISTER");
            assert_eq!(
                verdict == Authorization::Allow,
                *allowed,
                "{identity} {user}: {verdict:?}"
            );
        }
        let denied = |mac: &str, user: &str, method: &str| match authorize(
            &inventory,
            &snom(mac),
            user,
            method,
        ) {
            Authorization::Deny(reason) => reason,
            other => panic!("expected deny, got {other:?}"),
        };
        let reason = denied("000413a1b2c3", "102", "INVITE");
        assert_eq!(reason.label(), "user_not_allowed");
        assert_eq!(
            reason.text(),
            "snom device 00:04:13:a1:b2:c3 may not use SIP user 102 (INVITE)"
        );
        assert_eq!(
            denied("000413ffffff", "101", "REGISTER").label(),
            "unknown_device"
        );
    }

    #[test]
    fn admission() {
        let inventory = Inventory::from_toml_str(TOML).unwrap();
        assert!(inventory.admits(&snom("000413a1b2c3")));
        assert!(!inventory.admits(&snom("000413ffffff")));
        assert!(inventory.admits(&Identity::Device {
            vendor: "yealink".into(),
            mac: MacAddress::parse("805ec0000009").unwrap()
        }));
        assert!(inventory.admits_anonymous_from("192.0.2.77".parse().unwrap()));
        assert!(!inventory.admits_anonymous_from("198.51.100.1".parse().unwrap()));
        assert!(inventory.admits_anonymous_from("2001:db8::1".parse().unwrap()));
        assert!(!inventory.admits_anonymous_from("2001:db9::1".parse().unwrap()));
        let empty = Inventory::from_toml_str("").unwrap();
        assert!(!empty.admits_anonymous_from("192.0.2.77".parse().unwrap()));
        assert_eq!(
            empty.authorize(&Identity::Anonymous, "900", "REGISTER"),
            Authorization::Deny(DenyReason::UserNotAllowed {
                identity: "anonymous".into(),
                user: "900".into(),
                method: "REGISTER".into()
            })
        );
    }

    #[test]
    fn csv_parses() {
        let csv = "mac,users,label,provisioning\n\
                   # a comment\n\
                   00:04:13:A1:B2:C3,101;102@pbx.example.com,reception,/a.xml;/b.xml\n\
                   00-15-65-00-00-01,*,,\n";
        let inventory = Inventory::from_csv_str(csv).unwrap();
        let entry = inventory
            .device(&MacAddress::parse("000413a1b2c3").unwrap())
            .unwrap();
        let patterns: Vec<&str> = entry
            .provisioning
            .iter()
            .flatten()
            .map(PathPattern::as_str)
            .collect();
        assert_eq!(patterns, ["/a.xml", "/b.xml"]);
        assert!(entry.users.allows("102@pbx.example.com"));
        let any = inventory
            .device(&MacAddress::parse("001565000001").unwrap())
            .unwrap();
        assert_eq!(any.users, UserSet::Any);
        assert_eq!(any.label, None);
        assert_eq!(
            any.provisioning, None,
            "an empty field is absent: the default rule"
        );
        let error =
            Inventory::from_csv_str("mac,users,label,provisioning\n000413a1b2c3,1,,a.xml\n")
                .unwrap_err();
        assert_eq!(error.label(), "bad_provisioning_pattern");
    }

    #[test]
    fn provisioning_access_table() {
        let inventory = Inventory::from_toml_str(
            r#"
[[devices]]
mac = "00:04:13:A1:B2:C3"
users = ["101"]
provisioning = ["/snom/{MAC}.xml", "/phonebook/*"]

[[devices]]
mac = "805EC0D4E5F6"
users = ["102"]

[[devices]]
mac = "001565000001"
provisioning = []

[[vendors]]
vendor = "grandstream"
users = ["*"]
"#,
        )
        .unwrap();
        let common = [
            PathPattern::parse("/y000000000044.cfg").unwrap(),
            PathPattern::parse("/firmware/*").unwrap(),
            PathPattern::parse("/common/{mac}.boot").unwrap(),
        ];
        let yealink = |mac: &str| Identity::Device {
            vendor: "yealink".into(),
            mac: MacAddress::parse(mac).unwrap(),
        };
        let shared = Identity::Shared {
            vendor: "yealink".into(),
        };
        let grandstream = Identity::Device {
            vendor: "grandstream".into(),
            mac: MacAddress::parse("000b82000001").unwrap(),
        };
        use ProvisioningGrant::*;
        let cases: &[(&Identity, &str, Option<ProvisioningGrant>)] = &[
            (
                &snom("000413a1b2c3"),
                "/snom/000413A1B2C3.xml",
                Some(Device),
            ),
            (&snom("000413a1b2c3"), "/snom/000413a1b2c3.xml", None),
            (&snom("000413a1b2c3"), "/phonebook/all.xml", Some(Device)),
            // Listed patterns replace the default rule.
            (&snom("000413a1b2c3"), "/000413a1b2c3.cfg", None),
            (&snom("000413a1b2c3"), "/firmware/d785.bin", Some(Common)),
            (
                &snom("000413a1b2c3"),
                "/common/000413a1b2c3.boot",
                Some(Common),
            ),
            (&snom("000413a1b2c3"), "/common/805ec0d4e5f6.boot", None),
            (
                &yealink("805ec0d4e5f6"),
                "/805ec0d4e5f6.cfg",
                Some(OwnMacFile),
            ),
            (
                &yealink("805ec0d4e5f6"),
                "/805EC0D4E5F6-local.cfg",
                Some(OwnMacFile),
            ),
            (&yealink("805ec0d4e5f6"), "/dir/805ec0d4e5f6/x.cfg", None),
            // The MAC must stand alone: not glued to other hex digits (another device's
            // name), except Cisco SPA's `spa` prefix.
            (&yealink("805ec0d4e5f6"), "/a805ec0d4e5f6.cfg", None),
            (&yealink("805ec0d4e5f6"), "/805ec0d4e5f60.cfg", None),
            (&yealink("805ec0d4e5f6"), "/sp805ec0d4e5f6b.cfg", None),
            (
                &yealink("805ec0d4e5f6"),
                "/spa805ec0d4e5f6.cfg",
                Some(OwnMacFile),
            ),
            (
                &yealink("805ec0d4e5f6"),
                "/SEP805EC0D4E5F6.cnf.xml",
                Some(OwnMacFile),
            ),
            (&yealink("805ec0d4e5f6"), "/000413a1b2c3.cfg", None),
            (&yealink("805ec0d4e5f6"), "/y000000000044.cfg", Some(Common)),
            (&yealink("805ec0d4e5f6"), "/phonebook/all.xml", None),
            (&snom("001565000001"), "/001565000001.cfg", None),
            (&snom("001565000001"), "/y000000000044.cfg", Some(Common)),
            // Not in the inventory (removed by a reload): nothing.
            (&snom("000413ffffff"), "/y000000000044.cfg", None),
            (&snom("000413ffffff"), "/000413ffffff.cfg", None),
            // Admitted by a vendor grant: the default rule.
            (&grandstream, "/cfg000b82000001.xml", Some(OwnMacFile)),
            (&shared, "/y000000000044.cfg", Some(Common)),
            (&shared, "/common/000000000000.boot", None),
            (&shared, "/805ec0d4e5f6.cfg", None),
            (&Identity::Anonymous, "/y000000000044.cfg", None),
        ];
        for (identity, path, want) in cases {
            assert_eq!(
                inventory.provisioning_access(identity, path, &common),
                *want,
                "{identity} {path}"
            );
        }
    }

    #[test]
    fn errors_name_the_entry() {
        let error = Inventory::from_toml_str("[[devices]]\nmac = \"xyz\"\n").unwrap_err();
        assert_eq!(error.label(), "bad_mac");
        assert!(error.to_string().contains("device #1"), "{error}");
        let error = Inventory::from_toml_str(
            "[[devices]]\nmac = \"000413a1b2c3\"\n[[devices]]\nmac = \"00:04:13:a1:b2:c3\"\n",
        )
        .unwrap_err();
        assert_eq!(error.label(), "duplicate_mac");
        let error = Inventory::from_toml_str("[[devices]]\nmac = \"000413a1b2c3\"\nuser = []\n")
            .unwrap_err();
        assert_eq!(error.label(), "toml");
        let error =
            Inventory::from_toml_str("[[devices]]\nmac = \"000413a1b2c3\"\nusers = [\"@x\"]\n")
                .unwrap_err();
        assert_eq!(error.label(), "bad_user");
        let error =
            Inventory::from_toml_str("[anonymous]\nusers=[\"1\"]\nnetworks=[\"10.0.0.0/33\"]")
                .unwrap_err();
        assert_eq!(error.label(), "bad_network");
        assert_eq!(
            InventoryFormat::from_file_name("inv.yaml")
                .unwrap_err()
                .label(),
            "unknown_format"
        );
        assert_eq!(
            InventoryFormat::from_file_name("INV.CSV").unwrap(),
            InventoryFormat::Csv
        );
    }

    proptest::proptest! {
        #[test]
        fn parsers_never_panic(text in "\\PC*") {
            let _ = Inventory::from_toml_str(&text);
            let _ = Inventory::from_csv_str(&text);
            let _ = text.parse::<IpNetwork>();
        }

        #[test]
        fn user_matching_never_panics(grant in "\\PC*", asked in "\\PC*") {
            if let Some(user) = SipUser::parse(&grant) {
                let _ = user.allows(&asked);
            }
        }
    }

    #[test]
    fn networks() {
        let net: IpNetwork = "10.1.0.0/15".parse().unwrap();
        assert!(net.contains("10.0.255.255".parse().unwrap()));
        assert!(!net.contains("10.2.0.0".parse().unwrap()));
        let host: IpNetwork = "192.0.2.1".parse().unwrap();
        assert!(host.contains("192.0.2.1".parse().unwrap()));
        assert!(!host.contains("192.0.2.2".parse().unwrap()));
        let all: IpNetwork = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains("203.0.113.9".parse().unwrap()));
        assert!(!all.contains("::1".parse().unwrap()));
    }
}
