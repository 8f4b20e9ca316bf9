//! `pbx-edge dev-pki`: a development PKI, for trying the edge out and for tests — never for
//! production. A server CA and a server certificate for a name, and device CAs issuing
//! certificates in the subject formats real phones use (Snom: the MAC as the whole CN;
//! Yealink: a constant CN and the MAC at the end of `serialNumber`, with a comma in O), plus
//! an inventory and a config that use them.

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose, SanType,
};
use std::net::IpAddr;
use std::path::{Path, PathBuf};

/// The Snom-style development device's MAC (Snom's OUI 00:04:13).
pub const DEV_SNOM_MAC: &str = "000413A1B2C3";
/// The Yealink-style development device's MAC (Yealink's OUI 80:5E:C0).
pub const DEV_YEALINK_MAC: &str = "805EC0D4E5F6";
/// OID of the X.520 `serialNumber` attribute.
const OID_SERIAL_NUMBER: [u64; 4] = [2, 5, 4, 5];

/// Validity of the development server certificate: the 398-day ceiling public CAs keep
/// (CA/Browser Forum Baseline Requirements §6.3.2), so a TLS scan of the development default
/// does not flag a certificate valid for centuries. [`server_cert_needs_renewal`] lets the
/// development default regenerate it before it runs out.
pub const SERVER_CERT_DAYS: i64 = 397;
/// Validity of the development CAs and device certificates.
const CA_AND_DEVICE_DAYS: i64 = 3650;
/// A development server certificate this close to its end is regenerated.
pub const RENEW_BEFORE_DAYS: i64 = 30;

/// `params` valid from an hour ago (clock skew between test hosts) for `days`.
fn valid_for(mut params: CertificateParams, days: i64) -> CertificateParams {
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::hours(1);
    params.not_after = now + time::Duration::days(days);
    params
}

/// True when the development server certificate in `dir` for `name` is unreadable, expired,
/// or ends within [`RENEW_BEFORE_DAYS`].
pub fn server_cert_needs_renewal(dir: &Path, name: &str) -> bool {
    let Ok(pem) = std::fs::read(dir.join(format!("{name}-chain.crt"))) else {
        return true;
    };
    let Ok((_, pem)) = x509_parser::pem::parse_x509_pem(&pem) else {
        return true;
    };
    let Ok(cert) = pem.parse_x509() else {
        return true;
    };
    let renew_at = time::OffsetDateTime::now_utc() + time::Duration::days(RENEW_BEFORE_DAYS);
    cert.validity().not_after.timestamp() < renew_at.unix_timestamp()
}

/// Why the development PKI could not be written.
#[derive(Debug, thiserror::Error)]
pub enum DevPkiError {
    /// rcgen refused to build a certificate (a bug in the parameters here).
    #[error("cannot generate {what}: {source}")]
    Generate {
        what: &'static str,
        #[source]
        source: rcgen::Error,
    },
    /// The output directory or a file in it cannot be written.
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl DevPkiError {
    pub fn label(&self) -> &'static str {
        match self {
            Self::Generate { .. } => "generate",
            Self::Write { .. } => "write",
        }
    }
}

/// The files [`generate`] wrote.
#[derive(Debug, Clone)]
pub struct DevPki {
    pub dir: PathBuf,
    /// The CA phones must trust to verify the edge (`sip_cafile` on baresip).
    pub server_ca: PathBuf,
    /// Server chain (leaf + CA) and key for `[[tls.certificates]]`.
    pub server_chain: PathBuf,
    pub server_key: PathBuf,
    /// Device CA of the Snom-style devices, for `vendors.snom.ca`.
    pub snom_ca: PathBuf,
    /// Device CA of the Yealink-style devices, for `vendors.yealink.ca`.
    pub yealink_ca: PathBuf,
    /// Both device CAs in one bundle.
    pub vendor_cas: PathBuf,
    /// Device certificate + key in one PEM (what baresip's `sip_certificate` wants).
    pub snom_device: PathBuf,
    pub yealink_device: PathBuf,
    pub inventory: PathBuf,
    pub config: PathBuf,
}

fn gen<T>(what: &'static str, r: Result<T, rcgen::Error>) -> Result<T, DevPkiError> {
    r.map_err(|source| DevPkiError::Generate { what, source })
}

fn write(path: &Path, contents: impl AsRef<[u8]>) -> Result<(), DevPkiError> {
    std::fs::write(path, contents).map_err(|source| DevPkiError::Write {
        path: path.to_path_buf(),
        source,
    })
}

fn ca_params(cn: &str, org: &str) -> CertificateParams {
    let mut p = valid_for(CertificateParams::default(), CA_AND_DEVICE_DAYS);
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, org);
    dn.push(DnType::CommonName, cn);
    p.distinguished_name = dn;
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    p
}

fn device_params(dn: DistinguishedName) -> CertificateParams {
    let mut p = valid_for(CertificateParams::default(), CA_AND_DEVICE_DAYS);
    p.distinguished_name = dn;
    p.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    p
}

/// Writes a complete development PKI for the server name `name` into `dir`.
pub fn generate(dir: &Path, name: &str) -> Result<DevPki, DevPkiError> {
    std::fs::create_dir_all(dir).map_err(|source| DevPkiError::Write {
        path: dir.to_path_buf(),
        source,
    })?;
    let f = |n: &str| dir.join(n);

    // Server side: CA -> leaf for `name` (+ localhost and loopback for local trials).
    let server_ca_key = gen("server CA key", KeyPair::generate())?;
    let server_ca = gen(
        "server CA",
        CertifiedIssuer::self_signed(
            ca_params("pbx-edge development server CA", "pbx-edge development"),
            server_ca_key,
        ),
    )?;
    let mut sans = vec![name.to_owned()];
    if name != "localhost" {
        sans.push("localhost".into());
    }
    let mut leaf = valid_for(
        gen("server certificate", CertificateParams::new(sans))?,
        SERVER_CERT_DAYS,
    );
    for ip in ["127.0.0.1", "::1"] {
        if let Ok(ip) = ip.parse::<IpAddr>() {
            leaf.subject_alt_names.push(SanType::IpAddress(ip));
        }
    }
    leaf.distinguished_name = DistinguishedName::new();
    leaf.distinguished_name.push(DnType::CommonName, name);
    leaf.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let leaf_key = gen("server key", KeyPair::generate())?;
    let leaf_cert = gen("server certificate", leaf.signed_by(&leaf_key, &server_ca))?;

    // Device side: one CA per vendor style.
    let snom_ca = gen(
        "Snom-style device CA",
        CertifiedIssuer::self_signed(
            ca_params(
                "pbx-edge development Snom-style device CA",
                "pbx-edge development",
            ),
            gen("device CA key", KeyPair::generate())?,
        ),
    )?;
    let yealink_ca = gen(
        "Yealink-style device CA",
        CertifiedIssuer::self_signed(
            ca_params(
                "pbx-edge development Yealink-style device CA",
                "pbx-edge development",
            ),
            gen("device CA key", KeyPair::generate())?,
        ),
    )?;

    // Snom: CN is the bare MAC, 12 upper-case hex digits.
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "snom technology AG");
    dn.push(DnType::CommonName, DEV_SNOM_MAC);
    let snom_key = gen("device key", KeyPair::generate())?;
    let snom_cert = gen(
        "Snom-style device certificate",
        device_params(dn).signed_by(&snom_key, &snom_ca),
    )?;

    // Yealink: constant CN, MAC = last 12 hex digits of serialNumber, comma inside O.
    let mut dn = DistinguishedName::new();
    dn.push(
        DnType::OrganizationName,
        "Yealink Network Technology Co.,Ltd.",
    );
    dn.push(DnType::CommonName, "yealink.com");
    dn.push(
        DnType::CustomDnType(OID_SERIAL_NUMBER.to_vec()),
        format!(
            "3e4c7a1d-9b2f-4c6e-8a10-{}",
            DEV_YEALINK_MAC.to_ascii_lowercase()
        ),
    );
    let yealink_key = gen("device key", KeyPair::generate())?;
    let yealink_cert = gen(
        "Yealink-style device certificate",
        device_params(dn).signed_by(&yealink_key, &yealink_ca),
    )?;

    let pki = DevPki {
        dir: dir.to_path_buf(),
        server_ca: f("server-ca.crt"),
        server_chain: f(&format!("{name}-chain.crt")),
        server_key: f(&format!("{name}.key")),
        snom_ca: f("snom-ca.crt"),
        yealink_ca: f("yealink-ca.crt"),
        vendor_cas: f("vendor-cas.crt"),
        snom_device: f(&format!("snom-{DEV_SNOM_MAC}.pem")),
        yealink_device: f(&format!("yealink-{DEV_YEALINK_MAC}.pem")),
        inventory: f("inventory.toml"),
        config: f("pbx-edge.toml"),
    };
    write(&pki.server_ca, server_ca.pem())?;
    write(
        &pki.server_chain,
        format!("{}{}", leaf_cert.pem(), server_ca.pem()),
    )?;
    write(&pki.server_key, leaf_key.serialize_pem())?;
    write(&pki.snom_ca, snom_ca.pem())?;
    write(&pki.yealink_ca, yealink_ca.pem())?;
    write(
        &pki.vendor_cas,
        format!("{}{}", snom_ca.pem(), yealink_ca.pem()),
    )?;
    write(
        &pki.snom_device,
        format!("{}{}", snom_cert.pem(), snom_key.serialize_pem()),
    )?;
    write(&f(&format!("snom-{DEV_SNOM_MAC}.crt")), snom_cert.pem())?;
    write(
        &f(&format!("snom-{DEV_SNOM_MAC}.key")),
        snom_key.serialize_pem(),
    )?;
    write(
        &pki.yealink_device,
        format!("{}{}", yealink_cert.pem(), yealink_key.serialize_pem()),
    )?;
    write(
        &f(&format!("yealink-{DEV_YEALINK_MAC}.crt")),
        yealink_cert.pem(),
    )?;
    write(
        &f(&format!("yealink-{DEV_YEALINK_MAC}.key")),
        yealink_key.serialize_pem(),
    )?;
    write(&pki.inventory, dev_inventory())?;
    write(&pki.config, dev_config(name))?;
    Ok(pki)
}

fn dev_inventory() -> String {
    format!(
        "# Development inventory written by `pbx-edge dev-pki`: which device may use which SIP\n\
         # users. Not for production.\n\n\
         [[devices]]\nmac = \"{DEV_SNOM_MAC}\"\nusers = [\"101\"]\nlabel = \"development Snom-style phone\"\n\n\
         [[devices]]\nmac = \"{DEV_YEALINK_MAC}\"\nusers = [\"102\"]\nlabel = \"development Yealink-style phone\"\n"
    )
}

/// The development config, relative to the PKI directory (paths resolve against it).
pub fn dev_config(name: &str) -> String {
    format!(
        r#"# DEVELOPMENT configuration written by `pbx-edge dev-pki`. Not for production:
# the CAs below are throw-away development CAs whose keys sit next to this file.
[tls]
listen = "127.0.0.1:5061"
client_cert = "required"

[[tls.certificates]]
cert = "{name}-chain.crt"
key = "{name}.key"

[vendors.snom]
ca = ["snom-ca.crt"]

[vendors.yealink]
ca = ["yealink-ca.crt"]

[pbx]
address = "127.0.0.1:5060"
transport = "udp"
listen = "127.0.0.1:5080"

[sip]
domain = "{name}"

[media]
phone_bind = "127.0.0.1"
phone_advertise = "127.0.0.1"
pbx_bind = "127.0.0.1"
port_min = 30000
port_max = 39999

[inventory]
file = "inventory.toml"

[admin]
listen = "127.0.0.1:9090"
"#
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config;

    #[test]
    fn generated_pki_forms_a_valid_config() {
        let dir = tempfile::tempdir().unwrap();
        let pki = generate(dir.path(), "sbc.test").unwrap();
        let cfg = config::load(&pki.config, vec![]).unwrap();
        let report = config::validate(&cfg);
        assert!(report.is_ok(), "{:?}", report.problems);
        // The Snom-style device certificate carries the MAC as its CN.
        let pem = std::fs::read(&pki.snom_device).unwrap();
        let certs = config::files::read_certificates(&pki.snom_device).unwrap();
        assert_eq!(certs.len(), 1);
        let (_, parsed) = x509_parser::parse_x509_certificate(&certs[0]).unwrap();
        let cn = parsed.subject().iter_common_name().next().unwrap();
        assert_eq!(cn.as_str().unwrap(), DEV_SNOM_MAC);
        assert!(String::from_utf8(pem).unwrap().contains("PRIVATE KEY"));
    }

    #[test]
    fn the_server_certificate_lives_397_days_and_is_renewed_30_days_before_its_end() {
        let dir = tempfile::tempdir().unwrap();
        let pki = generate(dir.path(), "sbc.test").unwrap();
        let certs = config::files::read_certificates(&pki.server_chain).unwrap();
        let (_, leaf) = x509_parser::parse_x509_certificate(&certs[0]).unwrap();
        let v = leaf.validity();
        let days = (v.not_after.timestamp() - v.not_before.timestamp()) / 86_400;
        assert!((397..=398).contains(&days), "{days} days");
        assert!(!server_cert_needs_renewal(dir.path(), "sbc.test"));
        // A leaf ending in 10 days, in place of the generated one.
        let key = KeyPair::generate().unwrap();
        let short = valid_for(CertificateParams::new(vec!["sbc.test".into()]).unwrap(), 10);
        let cert = short.self_signed(&key).unwrap();
        std::fs::write(&pki.server_chain, cert.pem()).unwrap();
        assert!(server_cert_needs_renewal(dir.path(), "sbc.test"));
        std::fs::write(&pki.server_chain, "not a certificate").unwrap();
        assert!(server_cert_needs_renewal(dir.path(), "sbc.test"));
        assert!(server_cert_needs_renewal(dir.path(), "other.test"));
    }

    #[test]
    fn yealink_style_subject_has_serial_number_and_comma_in_o() {
        let dir = tempfile::tempdir().unwrap();
        let pki = generate(dir.path(), "sbc.test").unwrap();
        let certs = config::files::read_certificates(&pki.yealink_device).unwrap();
        let (_, parsed) = x509_parser::parse_x509_certificate(&certs[0]).unwrap();
        let serial = parsed
            .subject()
            .iter_by_oid(&x509_parser::oid_registry::OID_X509_SERIALNUMBER)
            .next()
            .unwrap();
        assert!(serial
            .as_str()
            .unwrap()
            .ends_with(&DEV_YEALINK_MAC.to_ascii_lowercase()));
        let o = parsed.subject().iter_organization().next().unwrap();
        assert!(o.as_str().unwrap().contains(','));
    }
}
