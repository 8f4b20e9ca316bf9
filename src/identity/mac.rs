//! PURE. MAC addresses, vendor OUIs, and how a MAC is read from a parsed device certificate.
//!
//! Vendors burn the phone's MAC into the certificate in different places and shapes:
//! - Snom: the whole CN is the 12 hex digits (`000413A1B2C3`); Polycom: CN = upper-case MAC;
//! - Yealink: CN is a constant; the MAC is the last 12 hex digits of the `serialNumber`
//!   attribute (2.5.4.5), after a UUID-like prefix;
//! - Cisco MPP: the lower-case MAC in the `ST` attribute (serial in `L`, model in `OU`);
//!   older Cisco MICs: CN `SEP` + MAC;
//! - operator-issued certificates: CN, or a SAN URI (`urn:dev:mac:...`, `sip:<mac>@...`) or a
//!   SAN DNS name whose first label is the MAC.
//!
//! Matching is case- and separator-insensitive. Attributes are read through `x509-parser`;
//! DN strings are never split by hand.

use std::fmt;
use std::str::FromStr;

use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;
use x509_parser::oid_registry::{
    Oid, OID_X509_COMMON_NAME, OID_X509_ORGANIZATIONAL_UNIT, OID_X509_SERIALNUMBER,
    OID_X509_STATE_OR_PROVINCE_NAME,
};

/// Characters accepted between hex digits of a MAC or OUI.
const SEPARATORS: [char; 4] = [':', '-', '.', ' '];

/// Why a text or a certificate gave no MAC.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MacError {
    /// The text does not hold exactly 12 hex digits (separators `:` `-` `.` space allowed).
    #[error("not a MAC address (need 12 hex digits)")]
    Malformed,
    /// The text does not hold exactly 6 hex digits (an OUI).
    #[error("not an OUI (need 6 hex digits)")]
    MalformedOui,
    /// The certificate has no value where the rule looks (attribute or SAN absent).
    #[error("certificate has no {0} value")]
    Missing(MacSource),
    /// The certificate has a value where the rule looks, but it is not a MAC.
    #[error("certificate {from} value {value:?} is not a MAC")]
    NotAMac {
        /// The rule that read the value.
        from: MacSource,
        /// The value read (printable, truncated to 64 characters).
        value: String,
    },
    /// Several values where the rule looks give different MACs.
    #[error("certificate has several different MACs in {0}")]
    Ambiguous(MacSource),
}

impl MacError {
    /// Stable label for metrics and logs.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Malformed => "malformed",
            Self::MalformedOui => "malformed_oui",
            Self::Missing(_) => "missing",
            Self::NotAMac { .. } => "not_a_mac",
            Self::Ambiguous(_) => "ambiguous",
        }
    }
}

/// A 48-bit IEEE MAC address (EUI-48).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MacAddress([u8; 6]);

impl MacAddress {
    /// A MAC from its six octets.
    pub const fn new(octets: [u8; 6]) -> Self {
        Self(octets)
    }

    /// Parses `000413A1B2C3`, `00:04:13:a1:b2:c3`, `00-04-13-A1-B2-C3`, `0004.13a1.b2c3`, in any
    /// case.
    pub fn parse(text: &str) -> Result<Self, MacError> {
        let mut octets = [0u8; 6];
        if parse_hex_octets(text, &mut octets) {
            Ok(Self(octets))
        } else {
            Err(MacError::Malformed)
        }
    }

    /// The six octets.
    pub const fn octets(&self) -> [u8; 6] {
        self.0
    }

    /// The vendor part (first three octets).
    pub const fn oui(&self) -> Oui {
        Oui([self.0[0], self.0[1], self.0[2]])
    }

    /// Compact lower-case form, `000413a1b2c3`.
    pub fn compact(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Compact upper-case form as Snom and Polycom write it, `000413A1B2C3`.
    pub fn compact_upper(&self) -> String {
        self.0.iter().map(|b| format!("{b:02X}")).collect()
    }
}

impl fmt::Display for MacAddress {
    /// Canonical form `00:04:13:a1:b2:c3`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

impl FromStr for MacAddress {
    type Err = MacError;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Self::parse(text)
    }
}

/// An IEEE OUI (the first 24 bits of a MAC), e.g. Snom's `00:04:13`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Oui([u8; 3]);

impl Oui {
    /// An OUI from its three octets.
    pub const fn new(octets: [u8; 3]) -> Self {
        Self(octets)
    }

    /// Parses 6 hex digits with optional separators, any case.
    pub fn parse(text: &str) -> Result<Self, MacError> {
        let mut octets = [0u8; 3];
        if parse_hex_octets(text, &mut octets) {
            Ok(Self(octets))
        } else {
            Err(MacError::MalformedOui)
        }
    }

    /// Whether `mac` belongs to this OUI.
    pub fn contains(&self, mac: &MacAddress) -> bool {
        mac.oui() == *self
    }
}

impl fmt::Display for Oui {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}")
    }
}

/// Fills `out` from hex digits in `text`, skipping separators; false unless `text` holds exactly
/// `2 * out.len()` hex digits and nothing else.
fn parse_hex_octets(text: &str, out: &mut [u8]) -> bool {
    let mut digits = 0usize;
    for ch in text.trim().chars() {
        if SEPARATORS.contains(&ch) {
            continue;
        }
        let Some(value) = ch.to_digit(16) else {
            return false;
        };
        let Some(slot) = out.get_mut(digits / 2) else {
            return false;
        };
        // `value` < 16, so the cast cannot truncate.
        *slot = (*slot << 4) | value as u8;
        digits += 1;
    }
    digits == out.len() * 2
}

/// Where in a certificate a profile reads the MAC. The config spelling is [`MacSource::key`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum MacSource {
    /// `cn`: the whole subject CN is the MAC (Snom, Polycom, operator).
    CommonName,
    /// `cn_sep`: CN is `SEP` followed by the MAC (older Cisco MICs).
    CommonNameSep,
    /// `serial_number_suffix`: the last 12 hex digits of the subject `serialNumber` attribute
    /// (Yealink: UUID-like prefix, then the MAC).
    SerialNumberSuffix,
    /// `st`: the subject `ST` (stateOrProvinceName) attribute is the MAC (Cisco MPP).
    StateOrProvince,
    /// `ou`: a subject `OU` attribute is the MAC.
    OrganizationalUnit,
    /// `san_uri`: a SAN URI `urn:dev:mac:<mac>`, `sip:<mac>@host`, or ending in `:<mac>`.
    SanUri,
    /// `san_dns`: a SAN DNS name whose first label is the MAC.
    SanDns,
}

impl MacSource {
    /// Every source, in the order a `mac_from` error lists them.
    pub const ALL: [MacSource; 7] = [
        Self::CommonName,
        Self::CommonNameSep,
        Self::SerialNumberSuffix,
        Self::StateOrProvince,
        Self::OrganizationalUnit,
        Self::SanUri,
        Self::SanDns,
    ];

    /// The config spelling (`mac_from = "st, cn_sep"`).
    pub const fn key(&self) -> &'static str {
        match self {
            Self::CommonName => "cn",
            Self::CommonNameSep => "cn_sep",
            Self::SerialNumberSuffix => "serial_number_suffix",
            Self::StateOrProvince => "st",
            Self::OrganizationalUnit => "ou",
            Self::SanUri => "san_uri",
            Self::SanDns => "san_dns",
        }
    }

    /// The source for a config spelling, if it is one.
    pub fn from_key(key: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.key() == key)
    }

    /// Parses a `mac_from` value: one or more keys separated by commas or spaces, tried in order.
    /// Returns the first unknown key on error.
    pub fn parse_list(value: &str) -> Result<Vec<Self>, String> {
        let mut sources = Vec::new();
        for key in value.split([',', ' ']).filter(|k| !k.is_empty()) {
            let source = Self::from_key(key).ok_or_else(|| key.to_owned())?;
            if !sources.contains(&source) {
                sources.push(source);
            }
        }
        if sources.is_empty() {
            return Err(value.to_owned());
        }
        Ok(sources)
    }
}

impl fmt::Display for MacSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.key())
    }
}

/// Reads the MAC from `cert` trying `sources` in order: the first source holding a MAC wins
/// (so an operator profile can read `cn, san_uri` where the CN is a descriptive name), but every
/// other source is read as well and a different MAC anywhere makes the certificate
/// [`MacError::Ambiguous`]: which of two MACs a certificate "means" must never depend on the
/// order of `mac_from`. Without any MAC, the error of the first source that had a value (a
/// malformed MAC says more than an absent attribute) is returned.
pub fn mac_from_certificate(
    cert: &X509Certificate<'_>,
    sources: &[MacSource],
) -> Result<MacAddress, MacError> {
    let mut found: Option<MacAddress> = None;
    let mut missing = None;
    let mut malformed = None;
    for &source in sources {
        match mac_from_source(cert, source) {
            Ok(mac) => match found {
                Some(previous) if previous != mac => return Err(MacError::Ambiguous(source)),
                _ => found = Some(mac),
            },
            Err(error @ MacError::Ambiguous(_)) => return Err(error),
            Err(MacError::Missing(_)) => {
                missing.get_or_insert(MacError::Missing(source));
            }
            Err(other) => {
                malformed.get_or_insert(other);
            }
        }
    }
    if let Some(mac) = found {
        return Ok(mac);
    }
    Err(malformed
        .or(missing)
        .unwrap_or(MacError::Missing(MacSource::CommonName)))
}

/// Reads the MAC from one place in `cert`.
///
/// A subject attribute (CN, serialNumber, ST, OU) must appear once: a DN with two CNs, say
/// one MAC and one junk value, is [`MacError::Ambiguous`], never read "on the MAC". SAN entries
/// are a list by design (RFC 5280 §4.2.1.6), so there the entries that are not MACs are
/// ignored, but two different MACs are still ambiguous.
pub fn mac_from_source(
    cert: &X509Certificate<'_>,
    source: MacSource,
) -> Result<MacAddress, MacError> {
    let values: Vec<String> = match source {
        MacSource::CommonName | MacSource::CommonNameSep => {
            subject_values(cert, &OID_X509_COMMON_NAME)
        }
        MacSource::SerialNumberSuffix => subject_values(cert, &OID_X509_SERIALNUMBER),
        MacSource::StateOrProvince => subject_values(cert, &OID_X509_STATE_OR_PROVINCE_NAME),
        MacSource::OrganizationalUnit => subject_values(cert, &OID_X509_ORGANIZATIONAL_UNIT),
        MacSource::SanUri => san_values(cert, true),
        MacSource::SanDns => san_values(cert, false),
    };
    let attributes = subject_attribute_count(cert, source);
    if values.is_empty() && attributes == 0 {
        return Err(MacError::Missing(source));
    }
    if attributes > 1 {
        return Err(MacError::Ambiguous(source));
    }
    let mut found: Option<MacAddress> = None;
    let mut rejected: Option<String> = None;
    for value in &values {
        match mac_from_value(value, source) {
            Some(mac) => match found {
                Some(previous) if previous != mac => return Err(MacError::Ambiguous(source)),
                _ => found = Some(mac),
            },
            None => {
                rejected.get_or_insert_with(|| value.chars().take(64).collect());
            }
        }
    }
    match (found, rejected) {
        (Some(mac), _) => Ok(mac),
        (None, Some(value)) => Err(MacError::NotAMac {
            from: source,
            value,
        }),
        // An attribute is there but in a string type x509-parser cannot render: present,
        // and not a MAC.
        (None, None) => Err(MacError::NotAMac {
            from: source,
            value: "(undecodable string)".to_owned(),
        }),
    }
}

/// How many subject attributes of `source`'s type the certificate has (0 for SAN sources),
/// counting those whose string type cannot be decoded too.
fn subject_attribute_count(cert: &X509Certificate<'_>, source: MacSource) -> usize {
    let oid = match source {
        MacSource::CommonName | MacSource::CommonNameSep => &OID_X509_COMMON_NAME,
        MacSource::SerialNumberSuffix => &OID_X509_SERIALNUMBER,
        MacSource::StateOrProvince => &OID_X509_STATE_OR_PROVINCE_NAME,
        MacSource::OrganizationalUnit => &OID_X509_ORGANIZATIONAL_UNIT,
        MacSource::SanUri | MacSource::SanDns => return 0,
    };
    cert.subject().iter_by_oid(oid).count()
}

/// The MAC in one attribute/SAN value according to `source`'s shape.
pub fn mac_from_value(value: &str, source: MacSource) -> Option<MacAddress> {
    let value = value.trim();
    match source {
        MacSource::CommonName | MacSource::StateOrProvince | MacSource::OrganizationalUnit => {
            MacAddress::parse(value).ok()
        }
        MacSource::CommonNameSep => {
            let prefix = value.get(..3)?;
            if !prefix.eq_ignore_ascii_case("SEP") {
                return None;
            }
            MacAddress::parse(value.get(3..)?).ok()
        }
        MacSource::SerialNumberSuffix => serial_number_suffix(value),
        MacSource::SanUri => san_uri_mac(value),
        MacSource::SanDns => MacAddress::parse(value.split('.').next()?).ok(),
    }
}

/// Yealink: the value is hex digits and separators only, at least 12 digits; the MAC is the
/// last 12 digits (the UUID-like prefix is ignored).
fn serial_number_suffix(value: &str) -> Option<MacAddress> {
    let mut digits = Vec::with_capacity(value.len());
    for ch in value.chars() {
        if SEPARATORS.contains(&ch) {
            continue;
        }
        if !ch.is_ascii_hexdigit() {
            return None;
        }
        digits.push(ch);
    }
    let start = digits.len().checked_sub(12)?;
    let tail: String = digits.get(start..)?.iter().collect();
    MacAddress::parse(&tail).ok()
}

/// `urn:dev:mac:<mac>` (RFC 9039 §3.1 names the EUI-48 form), `sip:<mac>@host`,
/// `sips:<mac>@host`, or any URI ending in `:<mac>`.
fn san_uri_mac(uri: &str) -> Option<MacAddress> {
    let lower = uri.to_ascii_lowercase();
    let candidate = if let Some(rest) = lower.strip_prefix("urn:dev:mac:") {
        rest
    } else if let Some(rest) = lower
        .strip_prefix("sips:")
        .or_else(|| lower.strip_prefix("sip:"))
    {
        rest.split(['@', ';']).next()?
    } else {
        lower.rsplit(':').next()?
    };
    MacAddress::parse(candidate).ok()
}

/// All values of subject attribute `oid` that are strings (x509-parser decodes the DER; an
/// attribute in an exotic string type that it cannot render is skipped).
fn subject_values(cert: &X509Certificate<'_>, oid: &Oid<'_>) -> Vec<String> {
    cert.subject()
        .iter_by_oid(oid)
        .filter_map(|attr| attr.as_str().ok().map(str::to_owned))
        .collect()
}

/// SAN URI (`uris = true`) or DNS values.
fn san_values(cert: &X509Certificate<'_>, uris: bool) -> Vec<String> {
    let Ok(Some(san)) = cert.subject_alternative_name() else {
        return Vec::new();
    };
    san.value
        .general_names
        .iter()
        .filter_map(|name| match (name, uris) {
            (GeneralName::URI(uri), true) => Some((*uri).to_owned()),
            (GeneralName::DNSName(dns), false) => Some((*dns).to_owned()),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_every_separator_and_case() {
        let expected = MacAddress::new([0x00, 0x04, 0x13, 0xa1, 0xb2, 0xc3]);
        for text in [
            "000413A1B2C3",
            "000413a1b2c3",
            "00:04:13:A1:B2:C3",
            "00-04-13-a1-b2-c3",
            "0004.13a1.b2c3",
            " 00 04 13 a1 b2 c3 ",
        ] {
            assert_eq!(MacAddress::parse(text), Ok(expected), "{text}");
        }
        assert_eq!(expected.to_string(), "00:04:13:a1:b2:c3");
        assert_eq!(expected.compact(), "000413a1b2c3");
        assert_eq!(expected.compact_upper(), "000413A1B2C3");
        assert_eq!(expected.oui().to_string(), "00:04:13");
    }

    #[test]
    fn refuses_wrong_lengths_and_non_hex() {
        for text in [
            "",
            "000413A1B2C",
            "000413A1B2C3D",
            "00041ZA1B2C3",
            "0004:13:a1:b2:c",
        ] {
            assert_eq!(
                MacAddress::parse(text),
                Err(MacError::Malformed),
                "{text:?}"
            );
        }
    }

    #[test]
    fn oui_parses_and_matches() {
        let oui = Oui::parse("00-04-13").unwrap();
        assert!(oui.contains(&MacAddress::parse("000413ffffff").unwrap()));
        assert!(!oui.contains(&MacAddress::parse("001565ffffff").unwrap()));
        assert_eq!(Oui::parse("0004"), Err(MacError::MalformedOui));
    }

    #[test]
    fn value_shapes() {
        let mac = MacAddress::parse("805ec0a1b2c3").unwrap();
        assert_eq!(
            mac_from_value(
                "0b3c8e2a-1f4d-4b9e-a7c6-805ec0a1b2c3",
                MacSource::SerialNumberSuffix
            ),
            Some(mac)
        );
        assert_eq!(
            mac_from_value(
                "0b3c8e2a1f4d4b9ea7c6805EC0A1B2C3",
                MacSource::SerialNumberSuffix
            ),
            Some(mac)
        );
        assert_eq!(
            mac_from_value("not-hex-805ec0a1b2c3", MacSource::SerialNumberSuffix),
            None
        );
        assert_eq!(
            mac_from_value("SEP805EC0A1B2C3", MacSource::CommonNameSep),
            Some(mac)
        );
        assert_eq!(
            mac_from_value("sep805ec0a1b2c3", MacSource::CommonNameSep),
            Some(mac)
        );
        assert_eq!(
            mac_from_value("805EC0A1B2C3", MacSource::CommonNameSep),
            None
        );
        assert_eq!(
            mac_from_value("urn:dev:mac:805ec0a1b2c3", MacSource::SanUri),
            Some(mac)
        );
        assert_eq!(
            mac_from_value("sip:805EC0A1B2C3@pbx.test", MacSource::SanUri),
            Some(mac)
        );
        assert_eq!(
            mac_from_value("805ec0a1b2c3.phones.example.com", MacSource::SanDns),
            Some(mac)
        );
        assert_eq!(
            mac_from_value("phones.example.com", MacSource::SanDns),
            None
        );
    }

    #[test]
    fn mac_from_list_parses_and_names_unknown_keys() {
        assert_eq!(
            MacSource::parse_list("st, cn_sep"),
            Ok(vec![MacSource::StateOrProvince, MacSource::CommonNameSep])
        );
        assert_eq!(
            MacSource::parse_list("cn,subject"),
            Err("subject".to_owned())
        );
        assert!(MacSource::parse_list("").is_err());
        for source in MacSource::ALL {
            assert_eq!(MacSource::from_key(source.key()), Some(source));
        }
    }

    proptest! {
        #[test]
        fn parse_never_panics(text in "\\PC*") {
            let _ = MacAddress::parse(&text);
            for source in MacSource::ALL {
                let _ = mac_from_value(&text, source);
            }
        }

        #[test]
        fn display_roundtrips(octets in any::<[u8; 6]>()) {
            let mac = MacAddress::new(octets);
            prop_assert_eq!(MacAddress::parse(&mac.to_string()), Ok(mac));
            prop_assert_eq!(MacAddress::parse(&mac.compact_upper()), Ok(mac));
            prop_assert_eq!(MacAddress::parse(&mac.compact()), Ok(mac));
        }
    }
}
