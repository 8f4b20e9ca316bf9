//! Vendor profiles: which CA files a vendor's device certificates chain to, where the MAC is
//! read, the vendor's OUIs, the shared-certificate policy and whether legacy crypto is allowed.
//!
//! Built-in profiles: snom, yealink, polycom, cisco, grandstream, fanvil, operator. Each key of a
//! `[vendors.<name>]` section overrides the built-in value; an unknown name defines a new profile
//! (then `ca` and `mac_from` are required). OUIs come from the IEEE registry as listed in
//! Wireshark's `manuf` file; Cisco has hundreds, so its built-in list is empty (no OUI check).
//!
//! What is known of the formats (issue 4): Snom CN = 12 hex (OUI 00:04:13), Snom 300/320/370/PA1/MP
//! share one certificate without a MAC; Yealink CN is constant, MAC = last 12 hex of
//! serialNumber, and a generic certificate shared by all units exists; Polycom CN = upper-case MAC;
//! Cisco MPP: MAC in ST, older MICs: CN `SEP<mac>`. Grandstream and Fanvil formats are not
//! documented publicly: their built-in rule (CN, then SAN URI) is a guess to override.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use x509_parser::certificate::X509Certificate;

use crate::config::{OuiPolicy, SharedCertPolicy, VendorConfig};
use crate::identity::error::IdentityError;
use crate::identity::mac::{mac_from_certificate, MacAddress, MacError, MacSource, Oui};
use crate::identity::rejection::HandshakeRejection;

/// Where a profile's CA certificates come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CaSource {
    /// Built-in default: every `*.pem`, `*.crt`, `*.cer`, `*.der` file in this directory
    /// (`config/ca/<vendor>/`); a missing directory means "no CA yet" (the drop-in place).
    Directory(PathBuf),
    /// Configured `ca = [...]`: each file must exist.
    Files(Vec<PathBuf>),
}

/// One vendor's rules, after applying config overrides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VendorProfile {
    /// Profile name, also the `vendor` metric label.
    pub name: String,
    /// CA bundle source.
    pub ca: CaSource,
    /// CRL files for this vendor's CAs.
    pub crl: Vec<PathBuf>,
    /// Accept SHA-1 signatures and RSA keys under 2048 bits in this vendor's chains.
    pub legacy_crypto: bool,
    /// What to do with a shared, MAC-less certificate.
    pub shared_certs: SharedCertPolicy,
    /// Where the MAC is read, tried in order.
    pub mac_from: Vec<MacSource>,
    /// The vendor's OUIs; empty = no OUI check.
    pub ouis: Vec<Oui>,
    /// What to do with a MAC outside `ouis`.
    pub oui_policy: OuiPolicy,
    /// A certificate of this vendor with no value at all where the MAC is read is the
    /// vendor's shared non-unique certificate (true for snom and yealink); otherwise it is
    /// refused as "no MAC".
    pub has_shared_certificate: bool,
    /// Subject CNs (exact, ASCII case-insensitive) that name the vendor's shared certificate
    /// although the MAC source holds a value (`vendors.<name>.shared_cert_names`). Empty by
    /// default: a value that is present but not a MAC is a broken device certificate, never
    /// "shared" by accident (issue 11 point 9).
    pub shared_cert_names: Vec<String>,
}

/// What a profile makes of a certificate whose chain already verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Identification {
    /// A unique device certificate.
    Device {
        /// The MAC read.
        mac: MacAddress,
        /// The MAC is outside the vendor's OUIs but the policy is `warn`.
        outside_ouis: bool,
    },
    /// The vendor's shared certificate, accepted by policy.
    Shared,
    /// Refused: the reason, and a human detail for the log line.
    Refuse(HandshakeRejection, String),
}

/// Names of the built-in profiles.
pub const BUILTIN_VENDORS: [&str; 7] = [
    "snom",
    "yealink",
    "polycom",
    "cisco",
    "grandstream",
    "fanvil",
    "operator",
];

impl VendorProfile {
    /// The built-in profile `name`, CA files read from `ca_dir/<name>/`.
    pub fn builtin(name: &str, ca_dir: &Path) -> Option<Self> {
        let (mac_from, ouis, shared): (&[MacSource], &[[u8; 3]], bool) = match name {
            "snom" => (&[MacSource::CommonName], &[[0x00, 0x04, 0x13]], true),
            "yealink" => (
                &[MacSource::SerialNumberSuffix],
                &[
                    [0x00, 0x15, 0x65],
                    [0x24, 0x9a, 0xd8],
                    [0x44, 0xdb, 0xd2],
                    [0x80, 0x5e, 0x0c],
                    [0x80, 0x5e, 0xc0],
                    [0xc4, 0xfc, 0x22],
                    [0xec, 0x1d, 0xa9],
                ],
                true,
            ),
            "polycom" => (
                &[MacSource::CommonName],
                &[[0x00, 0x04, 0xf2], [0x64, 0x16, 0x7f], [0x48, 0x25, 0x67]],
                false,
            ),
            "cisco" => (
                &[MacSource::StateOrProvince, MacSource::CommonNameSep],
                &[],
                false,
            ),
            "grandstream" => (
                &[MacSource::CommonName, MacSource::SanUri],
                &[[0x00, 0x0b, 0x82], [0xc0, 0x74, 0xad], [0xec, 0x74, 0xd7]],
                false,
            ),
            "fanvil" => (
                &[MacSource::CommonName, MacSource::SanUri],
                &[[0x0c, 0x38, 0x3e]],
                false,
            ),
            "operator" => (
                &[MacSource::CommonName, MacSource::SanUri, MacSource::SanDns],
                &[],
                false,
            ),
            _ => return None,
        };
        Some(Self {
            name: name.to_owned(),
            ca: CaSource::Directory(ca_dir.join(name)),
            crl: Vec::new(),
            legacy_crypto: false,
            shared_certs: SharedCertPolicy::Reject,
            mac_from: mac_from.to_vec(),
            ouis: ouis.iter().copied().map(Oui::new).collect(),
            oui_policy: OuiPolicy::Warn,
            has_shared_certificate: shared,
            shared_cert_names: Vec::new(),
        })
    }

    /// Applies one `[vendors.<name>]` section over `self`.
    fn apply(&mut self, config: &VendorConfig) -> Result<(), IdentityError> {
        if !config.ca.is_empty() {
            self.ca = CaSource::Files(config.ca.clone());
        }
        self.crl = config.crl.clone();
        self.legacy_crypto = config.legacy_crypto;
        self.shared_certs = config.shared_certs;
        self.oui_policy = config.oui_policy;
        self.shared_cert_names = config.shared_cert_names.clone();
        if let Some(value) = &config.mac_from {
            self.mac_from =
                MacSource::parse_list(value).map_err(|word| IdentityError::BadMacFrom {
                    vendor: self.name.clone(),
                    value: word,
                })?;
        }
        if let Some(ouis) = &config.ouis {
            self.ouis = ouis
                .iter()
                .map(|text| {
                    Oui::parse(text).map_err(|_| IdentityError::BadOui {
                        vendor: self.name.clone(),
                        value: text.clone(),
                    })
                })
                .collect::<Result<_, _>>()?;
        }
        Ok(())
    }

    /// Reads the identity out of a certificate whose chain to this vendor's CA verified.
    pub fn identify(&self, cert: &X509Certificate<'_>) -> Identification {
        let mac = match mac_from_certificate(cert, &self.mac_from) {
            Ok(mac) => mac,
            Err(error) => return self.identify_without_mac(cert, &error),
        };
        let outside_ouis = !self.ouis.is_empty() && !self.ouis.iter().any(|o| o.contains(&mac));
        if outside_ouis && self.oui_policy == OuiPolicy::Refuse {
            return Identification::Refuse(
                HandshakeRejection::MacOutsideOuis,
                format!("MAC {mac} is outside the {} OUIs", self.name),
            );
        }
        Identification::Device { mac, outside_ouis }
    }

    fn identify_without_mac(&self, cert: &X509Certificate<'_>, error: &MacError) -> Identification {
        let shared = match error {
            // Two CNs, two MACs: which one the certificate "means" is the attacker's choice.
            MacError::Ambiguous(_) => {
                return Identification::Refuse(
                    HandshakeRejection::AmbiguousSubject,
                    error.to_string(),
                )
            }
            // Nothing at all where the MAC belongs: the vendor's shared certificate, if the
            // vendor has one.
            MacError::Missing(_) => self.has_shared_certificate,
            // A value that is not a MAC is a broken (or foreign) device certificate, unless the
            // operator named this exact subject as the vendor's shared certificate.
            MacError::NotAMac { .. } | MacError::Malformed | MacError::MalformedOui => {
                self.is_named_shared_certificate(cert)
            }
        };
        if !shared {
            let hint = if matches!(error, MacError::NotAMac { .. }) {
                format!(
                    "; if this is the vendor's shared certificate, list its CN in \
                     vendors.{}.shared_cert_names",
                    self.name
                )
            } else {
                String::new()
            };
            return Identification::Refuse(HandshakeRejection::NoMac, format!("{error}{hint}"));
        }
        match self.shared_certs {
            SharedCertPolicy::Shared => Identification::Shared,
            SharedCertPolicy::Reject => Identification::Refuse(
                HandshakeRejection::SharedCertificateRefused,
                format!(
                    "{} shared non-unique certificate ({error}); vendors.{}.shared_certs = \
                     \"reject\"",
                    self.name, self.name
                ),
            ),
        }
    }

    /// Whether the subject has exactly one CN and it is one of `shared_cert_names`.
    fn is_named_shared_certificate(&self, cert: &X509Certificate<'_>) -> bool {
        if self.shared_cert_names.is_empty() {
            return false;
        }
        let mut names = cert.subject().iter_common_name();
        let (Some(only), None) = (names.next(), names.next()) else {
            return false;
        };
        let Ok(cn) = only.as_str() else {
            return false;
        };
        self.shared_cert_names
            .iter()
            .any(|n| n.trim().eq_ignore_ascii_case(cn.trim()))
    }
}

/// The enabled profiles: built-ins (CA files under `ca_dir`) with `[vendors.*]` overrides,
/// plus new profiles defined in config; ordered by name.
pub fn profiles_from_config(
    vendors: &BTreeMap<String, VendorConfig>,
    ca_dir: &Path,
) -> Result<Vec<VendorProfile>, IdentityError> {
    let mut profiles: BTreeMap<String, VendorProfile> = BUILTIN_VENDORS
        .iter()
        .filter_map(|name| VendorProfile::builtin(name, ca_dir))
        .map(|p| (p.name.clone(), p))
        .collect();
    for (name, config) in vendors {
        if config.enabled == Some(false) {
            profiles.remove(name);
            continue;
        }
        let mut profile = match profiles.remove(name) {
            Some(builtin) => builtin,
            None => {
                if config.ca.is_empty() {
                    return Err(IdentityError::IncompleteVendor {
                        vendor: name.clone(),
                        key: "ca",
                    });
                }
                if config.mac_from.is_none() {
                    return Err(IdentityError::IncompleteVendor {
                        vendor: name.clone(),
                        key: "mac_from",
                    });
                }
                VendorProfile {
                    name: name.clone(),
                    ca: CaSource::Files(Vec::new()),
                    crl: Vec::new(),
                    legacy_crypto: false,
                    shared_certs: SharedCertPolicy::Reject,
                    mac_from: Vec::new(),
                    ouis: Vec::new(),
                    oui_policy: OuiPolicy::Warn,
                    has_shared_certificate: false,
                    shared_cert_names: Vec::new(),
                }
            }
        };
        profile.apply(config)?;
        profiles.insert(name.clone(), profile);
    }
    Ok(profiles.into_values().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vendors(entries: &[(&str, VendorConfig)]) -> BTreeMap<String, VendorConfig> {
        entries
            .iter()
            .map(|(n, c)| ((*n).to_owned(), c.clone()))
            .collect()
    }

    #[test]
    fn builtins_are_all_present_by_default() {
        let profiles = profiles_from_config(&BTreeMap::new(), Path::new("config/ca")).unwrap();
        let names: Vec<_> = profiles.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "cisco",
                "fanvil",
                "grandstream",
                "operator",
                "polycom",
                "snom",
                "yealink"
            ]
        );
        let snom = profiles.iter().find(|p| p.name == "snom").unwrap();
        assert_eq!(
            snom.ca,
            CaSource::Directory(PathBuf::from("config/ca/snom"))
        );
        assert_eq!(snom.mac_from, [MacSource::CommonName]);
    }

    #[test]
    fn overrides_apply_and_disable() {
        let config = vendors(&[
            (
                "snom",
                VendorConfig {
                    ca: vec![PathBuf::from("/etc/snom.pem")],
                    legacy_crypto: true,
                    mac_from: Some("cn, san_uri".into()),
                    ouis: Some(vec!["00-04-13".into(), "001565".into()]),
                    oui_policy: OuiPolicy::Refuse,
                    ..VendorConfig::default()
                },
            ),
            (
                "fanvil",
                VendorConfig {
                    enabled: Some(false),
                    ..VendorConfig::default()
                },
            ),
        ]);
        let profiles = profiles_from_config(&config, Path::new("config/ca")).unwrap();
        assert!(profiles.iter().all(|p| p.name != "fanvil"));
        let snom = profiles.iter().find(|p| p.name == "snom").unwrap();
        assert_eq!(
            snom.ca,
            CaSource::Files(vec![PathBuf::from("/etc/snom.pem")])
        );
        assert!(snom.legacy_crypto);
        assert_eq!(snom.mac_from, [MacSource::CommonName, MacSource::SanUri]);
        assert_eq!(snom.ouis.len(), 2);
        assert_eq!(snom.oui_policy, OuiPolicy::Refuse);
    }

    #[test]
    fn bad_mac_from_names_the_key() {
        let config = vendors(&[(
            "yealink",
            VendorConfig {
                mac_from: Some("serial".into()),
                ..VendorConfig::default()
            },
        )]);
        let error = profiles_from_config(&config, Path::new("x")).unwrap_err();
        assert_eq!(error.label(), "bad_mac_from");
        let text = error.to_string();
        assert!(text.contains("vendors.yealink.mac_from"), "{text}");
        assert!(text.contains("\"serial\""), "{text}");
    }

    #[test]
    fn bad_oui_and_incomplete_new_vendor() {
        let config = vendors(&[(
            "snom",
            VendorConfig {
                ouis: Some(vec!["0004".into()]),
                ..VendorConfig::default()
            },
        )]);
        assert_eq!(
            profiles_from_config(&config, Path::new("x"))
                .unwrap_err()
                .label(),
            "bad_oui"
        );
        let config = vendors(&[("acme", VendorConfig::default())]);
        let error = profiles_from_config(&config, Path::new("x")).unwrap_err();
        assert!(error.to_string().contains("vendors.acme"), "{error}");
        let config = vendors(&[(
            "acme",
            VendorConfig {
                ca: vec![PathBuf::from("acme.pem")],
                mac_from: Some("ou".into()),
                ..VendorConfig::default()
            },
        )]);
        let profiles = profiles_from_config(&config, Path::new("x")).unwrap();
        let acme = profiles.iter().find(|p| p.name == "acme").unwrap();
        assert_eq!(acme.mac_from, [MacSource::OrganizationalUnit]);
    }

    /// A self-signed certificate with these subject attributes and SAN URIs (the chain is not
    /// what `identify` looks at).
    fn cert_der(subject: &[(rcgen::DnType, &str)], san_uris: &[&str]) -> Vec<u8> {
        let mut params = rcgen::CertificateParams::default();
        let mut dn = rcgen::DistinguishedName::new();
        for (ty, value) in subject {
            dn.push(ty.clone(), *value);
        }
        params.distinguished_name = dn;
        params.subject_alt_names = san_uris
            .iter()
            .map(|u| rcgen::SanType::URI((*u).try_into().unwrap()))
            .collect();
        let key = rcgen::KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().der().to_vec()
    }

    fn identify(profile: &VendorProfile, der: &[u8]) -> Identification {
        let cert = crate::identity::chain::parse_certificate(der).unwrap();
        profile.identify(&cert)
    }

    fn refusal(identification: Identification) -> HandshakeRejection {
        match identification {
            Identification::Refuse(reason, _) => reason,
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    fn builtin(name: &str, shared: SharedCertPolicy) -> VendorProfile {
        let mut profile = VendorProfile::builtin(name, Path::new("x")).unwrap();
        profile.shared_certs = shared;
        profile
    }

    use rcgen::DnType;

    /// A second CN: rcgen keeps one value per attribute type, but a custom type with the CN
    /// OID (2.5.4.3) is another map key and encodes as another CN.
    fn second_cn() -> DnType {
        DnType::CustomDnType(vec![2, 5, 4, 3])
    }

    #[test]
    fn a_value_that_is_not_a_mac_is_no_mac_even_when_shared_certificates_are_accepted() {
        let snom = builtin("snom", SharedCertPolicy::Shared);
        let junk = cert_der(
            &[
                (DnType::OrganizationName, "snom technology AG"),
                (DnType::CommonName, "evil"),
            ],
            &[],
        );
        assert_eq!(refusal(identify(&snom, &junk)), HandshakeRejection::NoMac);
        // Yealink reads serialNumber: present but not a MAC is no_mac too.
        let yealink = builtin("yealink", SharedCertPolicy::Shared);
        let junk = cert_der(
            &[
                (DnType::CommonName, "yealink.com"),
                (DnType::CustomDnType(vec![2, 5, 4, 5]), "not-a-serial"),
            ],
            &[],
        );
        assert_eq!(
            refusal(identify(&yealink, &junk)),
            HandshakeRejection::NoMac
        );
    }

    #[test]
    fn the_genuine_shared_certificates_are_still_shared() {
        // Snom 3xx/PA1/MP: no CN at all where Snom puts the MAC.
        let snom_shared = cert_der(&[(DnType::OrganizationName, "snom technology AG")], &[]);
        assert_eq!(
            identify(&builtin("snom", SharedCertPolicy::Shared), &snom_shared),
            Identification::Shared
        );
        assert_eq!(
            refusal(identify(
                &builtin("snom", SharedCertPolicy::Reject),
                &snom_shared
            )),
            HandshakeRejection::SharedCertificateRefused
        );
        // Yealink's generic certificate: the constant CN, no serialNumber.
        let yealink_generic = cert_der(&[(DnType::CommonName, "yealink.com")], &[]);
        assert_eq!(
            identify(
                &builtin("yealink", SharedCertPolicy::Shared),
                &yealink_generic
            ),
            Identification::Shared
        );
        // Polycom has no shared certificate: no CN is no_mac.
        assert_eq!(
            refusal(identify(
                &builtin("polycom", SharedCertPolicy::Shared),
                &snom_shared
            )),
            HandshakeRejection::NoMac
        );
        // A CN the operator named as the shared certificate (exactly one CN, any case).
        let mut named = builtin("snom", SharedCertPolicy::Shared);
        named.shared_cert_names = vec!["Snom 3xx".into()];
        let listed = cert_der(&[(DnType::CommonName, "snom 3XX")], &[]);
        assert_eq!(identify(&named, &listed), Identification::Shared);
        let other = cert_der(&[(DnType::CommonName, "snom 3xx evil")], &[]);
        assert_eq!(refusal(identify(&named, &other)), HandshakeRejection::NoMac);
    }

    #[test]
    fn two_common_names_or_two_macs_are_ambiguous() {
        let snom = builtin("snom", SharedCertPolicy::Shared);
        for subject in [
            vec![(DnType::CommonName, "000413A1B2C3"), (second_cn(), "junk")],
            vec![(DnType::CommonName, "junk"), (second_cn(), "000413A1B2C3")],
            vec![
                (DnType::CommonName, "000413A1B2C3"),
                (second_cn(), "000413A1B2C4"),
            ],
            vec![
                (DnType::CommonName, "000413A1B2C3"),
                (second_cn(), "000413A1B2C3"),
            ],
        ] {
            let der = cert_der(&subject, &[]);
            let parsed = crate::identity::chain::parse_certificate(&der).unwrap();
            assert_eq!(parsed.subject().iter_common_name().count(), 2);
            assert_eq!(
                refusal(identify(&snom, &der)),
                HandshakeRejection::AmbiguousSubject,
                "{subject:?}"
            );
        }
        // Two sources, two different MACs: ambiguous, whichever source comes first.
        let mut operator = builtin("operator", SharedCertPolicy::Reject);
        let der = cert_der(
            &[(DnType::CommonName, "000413A1B2C3")],
            &["urn:dev:mac:000413a1b2c4"],
        );
        assert_eq!(
            refusal(identify(&operator, &der)),
            HandshakeRejection::AmbiguousSubject
        );
        operator.mac_from = vec![MacSource::SanUri, MacSource::CommonName];
        assert_eq!(
            refusal(identify(&operator, &der)),
            HandshakeRejection::AmbiguousSubject
        );
        // The same MAC in both places, or a descriptive CN beside the SAN MAC: one device.
        let same = cert_der(
            &[(DnType::CommonName, "000413A1B2C3")],
            &["urn:dev:mac:000413a1b2c3"],
        );
        let descriptive = cert_der(
            &[(DnType::CommonName, "Desk phone 4")],
            &["urn:dev:mac:000413a1b2c3", "https://example.com/device"],
        );
        let mac = MacAddress::parse("000413a1b2c3").unwrap();
        for der in [same, descriptive] {
            assert_eq!(
                identify(&operator, &der),
                Identification::Device {
                    mac,
                    outside_ouis: false
                }
            );
        }
    }
}
