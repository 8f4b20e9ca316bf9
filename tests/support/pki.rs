//! Test PKI imitating each vendor's device-certificate chain and subject format, made with rcgen
//! at test time (no committed keys), plus helpers to write a config and run in-memory rustls
//! handshakes. Legacy SHA-1 / RSA-1024 artefacts come from `tests/fixtures/certs/make-legacy.sh`
//! (ring cannot sign SHA-1 or with RSA-1024).
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{
    date_time_ymd, BasicConstraints, CertificateParams, CertificateRevocationListParams,
    DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyIdMethod, KeyPair,
    KeyUsagePurpose, RevokedCertParams, SanType, SerialNumber,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, ServerConfig, ServerConnection};

use pbx_edge::config::{
    ClientCertMode, Config, InventoryConfig, ServerCertConfig, TlsConfig, VendorConfig,
};

/// A CA that can issue certificates.
pub struct Ca {
    pub params: CertificateParams,
    pub key: KeyPair,
    pub der: CertificateDer<'static>,
    pub pem: String,
}

impl Ca {
    /// A self-signed root.
    pub fn root(dn: &[(DnType, &str)]) -> Ca {
        let key = KeyPair::generate().unwrap();
        let params = ca_params(dn);
        let cert = params.self_signed(&key).unwrap();
        Ca {
            pem: cert.pem(),
            der: cert.der().clone(),
            params,
            key,
        }
    }

    /// An intermediate CA issued by `self`.
    pub fn intermediate(&self, dn: &[(DnType, &str)]) -> Ca {
        let key = KeyPair::generate().unwrap();
        let params = ca_params(dn);
        let cert = params.signed_by(&key, &self.issuer()).unwrap();
        Ca {
            pem: cert.pem(),
            der: cert.der().clone(),
            params,
            key,
        }
    }

    pub fn issuer(&self) -> Issuer<'_, &KeyPair> {
        Issuer::from_params(&self.params, &self.key)
    }

    /// Issues a device certificate; `customize` adjusts the parameters; `chain` are the
    /// intermediates the device sends after its own certificate.
    pub fn device(
        &self,
        dn: &[(DnType, &str)],
        customize: impl FnOnce(&mut CertificateParams),
        chain: &[&Ca],
    ) -> Device {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::default();
        params.distinguished_name = dn_of(dn);
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.serial_number = Some(SerialNumber::from_slice(&rand_serial(&key)));
        customize(&mut params);
        let cert = params.signed_by(&key, &self.issuer()).unwrap();
        let mut certs = vec![cert.der().clone()];
        certs.extend(chain.iter().map(|ca| ca.der.clone()));
        Device {
            chain: certs,
            key_pem: key.serialize_pem(),
            serial: params.serial_number.clone().unwrap(),
        }
    }

    /// A CRL issued by this CA revoking `serials`.
    pub fn crl(&self, serials: &[SerialNumber]) -> String {
        let params = CertificateRevocationListParams {
            this_update: date_time_ymd(2020, 1, 1),
            next_update: date_time_ymd(2099, 1, 1),
            crl_number: SerialNumber::from(1u64),
            issuing_distribution_point: None,
            revoked_certs: serials
                .iter()
                .map(|s| RevokedCertParams {
                    serial_number: s.clone(),
                    revocation_time: date_time_ymd(2021, 1, 1),
                    reason_code: None,
                    invalidity_date: None,
                })
                .collect(),
            key_identifier_method: KeyIdMethod::Sha256,
        };
        params.signed_by(&self.issuer()).unwrap().pem().unwrap()
    }
}

fn rand_serial(key: &KeyPair) -> Vec<u8> {
    // Distinct per key: the first bytes of the public key after the encoding prefix.
    let raw = key.public_key_raw();
    let mut serial: Vec<u8> = raw.iter().rev().take(8).copied().collect();
    serial[0] &= 0x7f;
    serial[0] |= 0x01;
    serial
}

fn ca_params(dn: &[(DnType, &str)]) -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name = dn_of(dn);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params
}

pub fn dn_of(entries: &[(DnType, &str)]) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    for (ty, value) in entries {
        dn.push(ty.clone(), *value);
    }
    dn
}

/// The subject attribute serialNumber (2.5.4.5), which rcgen has no name for.
pub fn serial_number_attr() -> DnType {
    DnType::CustomDnType(vec![2, 5, 4, 5])
}

/// A device certificate chain and its key.
pub struct Device {
    pub chain: Vec<CertificateDer<'static>>,
    pub key_pem: String,
    pub serial: SerialNumber,
}

impl Device {
    pub fn key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::from_pem_slice(self.key_pem.as_bytes()).unwrap()
    }

    pub fn chain_pem(&self) -> String {
        self.chain
            .iter()
            .map(|c| pem_block("CERTIFICATE", c))
            .collect::<Vec<_>>()
            .join("")
    }
}

pub fn pem_block(label: &str, der: &[u8]) -> String {
    let encoded = base64_encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in encoded.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).unwrap());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

fn base64_encode(data: &[u8]) -> String {
    const TABLE: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(TABLE[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// The whole test PKI.
pub struct Pki {
    pub snom_root: Ca,
    pub snom_phone: Ca,
    pub yealink_root: Ca,
    pub polycom_root: Ca,
    pub cisco_root: Ca,
    pub cisco_mfg: Ca,
    pub wrong_root: Ca,
    /// Same DN as `snom_root`, different key: chains "to Snom" that do not verify.
    pub fake_snom_root: Ca,
    pub server_ca: Ca,
}

/// The inventory for the devices of [`Pki`]: one user per vendor MAC format (101 Snom, 102
/// Yealink, 103 Polycom, 104 Cisco), 105 a second Snom, 107 the Snom a test revokes.
pub const INVENTORY: &str = r#"
[[devices]]
mac = "00:04:13:a1:b2:c3"
users = ["101"]
[[devices]]
mac = "80:5e:c0:a1:b2:c3"
users = ["102"]
[[devices]]
mac = "0004F2A1B2C3"
users = ["103"]
[[devices]]
mac = "001bd4a1b2c3"
users = ["104"]
[[devices]]
mac = "000413A1B2D4"
users = ["105"]
[[devices]]
mac = "000413ffff01"
users = ["107"]
"#;

pub const SNOM_MAC: &str = "000413A1B2C3";
pub const YEALINK_MAC: &str = "805ec0a1b2c3";
pub const POLYCOM_MAC: &str = "0004F2A1B2C3";
pub const CISCO_MAC: &str = "00:1b:d4:a1:b2:c3";

impl Pki {
    pub fn new() -> Pki {
        let snom_dn = [
            (DnType::CountryName, "DE"),
            (DnType::OrganizationName, "Test snom technology AG"),
            (DnType::CommonName, "Test snom technology AG SHA-256 CA"),
        ];
        let snom_root = Ca::root(&snom_dn);
        let snom_phone = snom_root.intermediate(&[
            (DnType::OrganizationName, "Test snom technology AG"),
            (DnType::CommonName, "Snom Phone 1 SHA-256"),
        ]);
        let yealink_root = Ca::root(&[
            (
                DnType::OrganizationName,
                "Yealink Network Technology Co., Ltd.",
            ),
            (DnType::CommonName, "Test Yealink Equipment Issuing CA"),
        ]);
        let polycom_root = Ca::root(&[
            (DnType::OrganizationName, "Polycom Inc."),
            (DnType::CommonName, "Test Polycom Root CA"),
        ]);
        let cisco_root = Ca::root(&[
            (DnType::OrganizationName, "Cisco"),
            (DnType::CommonName, "Test Cisco Root CA M2"),
        ]);
        let cisco_mfg = cisco_root.intermediate(&[
            (DnType::OrganizationName, "Cisco"),
            (DnType::CommonName, "Test Cisco Manufacturing CA SHA2"),
        ]);
        let wrong_root = Ca::root(&[(DnType::CommonName, "Test Unrelated CA")]);
        let fake_snom_root = Ca::root(&snom_dn);
        let server_ca = Ca::root(&[(DnType::CommonName, "Test pbx-edge server CA")]);
        Pki {
            snom_root,
            snom_phone,
            yealink_root,
            polycom_root,
            cisco_root,
            cisco_mfg,
            wrong_root,
            fake_snom_root,
            server_ca,
        }
    }

    /// Snom: CN = 12 upper-case hex digits, issued by "Snom Phone 1 SHA-256", which the phone
    /// sends.
    pub fn snom(&self, mac: &str) -> Device {
        self.snom_phone.device(
            &[
                (DnType::OrganizationName, "snom technology AG"),
                (DnType::CommonName, mac),
            ],
            |_| {},
            &[&self.snom_phone],
        )
    }

    /// Snom with parameter changes.
    pub fn snom_with(&self, mac: &str, customize: impl FnOnce(&mut CertificateParams)) -> Device {
        self.snom_phone.device(
            &[
                (DnType::OrganizationName, "snom technology AG"),
                (DnType::CommonName, mac),
            ],
            customize,
            &[&self.snom_phone],
        )
    }

    /// Snom 300/320/370/PA1/MP shared certificate: no value where Snom puts the MAC (no CN).
    /// A CN that is not a MAC is a broken device certificate (`no_mac`), not this one.
    pub fn snom_shared(&self) -> Device {
        self.snom_phone.device(
            &[(DnType::OrganizationName, "snom technology AG")],
            |_| {},
            &[&self.snom_phone],
        )
    }

    /// Yealink: constant CN, MAC at the end of serialNumber after a UUID-like prefix, O with a
    /// comma.
    pub fn yealink(&self, mac: &str) -> Device {
        let serial = format!("9c3f5e2a-1b4d-4e8f-a6c7-{mac}");
        self.yealink_root.device(
            &[
                (
                    DnType::OrganizationName,
                    "Yealink Network Technology Co., Ltd.",
                ),
                (DnType::CommonName, "yealink.com"),
                (serial_number_attr(), &serial),
            ],
            |_| {},
            &[],
        )
    }

    /// Polycom: CN = upper-case MAC.
    pub fn polycom(&self, cn: &str) -> Device {
        self.polycom_root.device(
            &[
                (DnType::OrganizationName, "Polycom Inc."),
                (DnType::CommonName, cn),
            ],
            |_| {},
            &[],
        )
    }

    /// Cisco MPP: MAC lower-case in ST, serial in L, model in OU.
    pub fn cisco(&self, mac: &str) -> Device {
        self.cisco_mfg.device(
            &[
                (DnType::OrganizationName, "Cisco Systems Inc."),
                (DnType::OrganizationalUnitName, "CP-8841-3PCC"),
                (DnType::LocalityName, "FCH2033A0BC"),
                (DnType::StateOrProvinceName, mac),
                (DnType::CommonName, "CP-8841-3PCC"),
            ],
            |_| {},
            &[&self.cisco_mfg],
        )
    }

    /// A server certificate issued by the server CA for `names` (SAN DNS).
    pub fn server(&self, names: &[&str]) -> Device {
        let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        self.server_ca.device(
            &[(DnType::CommonName, names[0].as_str())],
            |p| {
                p.subject_alt_names = names
                    .iter()
                    .map(|n| SanType::DnsName(n.clone().try_into().unwrap()))
                    .collect();
                p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
            },
            &[],
        )
    }
}

impl Default for Pki {
    fn default() -> Self {
        Self::new()
    }
}

/// The legacy fixtures: (CA PEM, device chain PEM, device key PEM).
pub fn legacy_fixture() -> (String, Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/certs");
    let ca = std::fs::read_to_string(dir.join("legacy-ca.pem")).unwrap();
    let device = std::fs::read(dir.join("legacy-device.pem")).unwrap();
    let chain = CertificateDer::pem_slice_iter(&device)
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_file(dir.join("legacy-device.key")).unwrap();
    (ca, chain, key)
}

/// Writes `contents` to `dir/name`, returns the path.
pub fn write(dir: &Path, name: &str, contents: impl AsRef<[u8]>) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, contents).unwrap();
    path
}

/// A config for the test PKI in `dir`: vendors snom (+ CRL), yealink, polycom, cisco with CA
/// files; server certificate sbc.test; the given inventory text (TOML).
pub fn config(pki: &Pki, dir: &Path, inventory: &str) -> Config {
    let ca = |name: &str, pems: &[&str]| -> VendorConfig {
        VendorConfig {
            ca: vec![write(dir, &format!("{name}-ca.pem"), pems.concat())],
            ..VendorConfig::default()
        }
    };
    let mut vendors = BTreeMap::new();
    vendors.insert("snom".to_owned(), ca("snom", &[&pki.snom_root.pem]));
    vendors.insert(
        "yealink".to_owned(),
        ca("yealink", &[&pki.yealink_root.pem]),
    );
    vendors.insert(
        "polycom".to_owned(),
        ca("polycom", &[&pki.polycom_root.pem]),
    );
    vendors.insert("cisco".to_owned(), ca("cisco", &[&pki.cisco_root.pem]));
    let server = pki.server(&["sbc.test"]);
    let cert = write(dir, "sbc.pem", server.chain_pem());
    let key = write(dir, "sbc.key", &server.key_pem);
    Config {
        tls: TlsConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            client_cert: ClientCertMode::Required,
            allow_wildcard_server_cert: false,
            certificates: vec![ServerCertConfig { cert, key }],
            handshake_timeout_secs: 10,
            mac_deny_list: None,
            ..TlsConfig::default()
        },
        vendors,
        inventory: InventoryConfig {
            file: Some(write(dir, "inventory.toml", inventory)),
        },
        ..Config::default()
    }
}

/// A phone-side client config trusting the server CA, presenting `device` (if any).
pub fn client_config(
    pki: &Pki,
    device: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    roots.add(pki.server_ca.der.clone()).unwrap();
    let builder =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots);
    Arc::new(match device {
        Some((chain, key)) => builder.with_client_auth_cert(chain, key).unwrap(),
        None => builder.with_no_client_auth(),
    })
}

/// Outcome of an in-memory handshake.
pub struct Handshake {
    pub server: Result<(), rustls::Error>,
    pub client: Result<(), rustls::Error>,
    pub server_conn: ServerConnection,
    pub client_conn: ClientConnection,
}

/// Runs a TLS handshake between `client` (to `server_name`) and `server` over byte buffers.
pub fn handshake(
    server: Arc<ServerConfig>,
    client: Arc<ClientConfig>,
    server_name: &str,
) -> Handshake {
    let name = ServerName::try_from(server_name.to_owned()).unwrap();
    let mut client_conn = ClientConnection::new(client, name).unwrap();
    let mut server_conn = ServerConnection::new(server).unwrap();
    let mut server_result = Ok(());
    let mut client_result = Ok(());
    for _ in 0..20 {
        let mut buf = Vec::new();
        while client_conn.wants_write() {
            client_conn.write_tls(&mut buf).unwrap();
        }
        if !buf.is_empty() {
            // Processed after every read: rustls buffers a bounded amount of unprocessed TLS
            // (a Certificate message near 64 KB takes several reads).
            let mut slice = &buf[..];
            while !slice.is_empty() && server_result.is_ok() {
                server_conn.read_tls(&mut slice).unwrap();
                if let Err(e) = server_conn.process_new_packets() {
                    server_result = Err(e);
                }
            }
        }
        let mut buf = Vec::new();
        while server_conn.wants_write() {
            server_conn.write_tls(&mut buf).unwrap();
        }
        if !buf.is_empty() {
            let mut slice = &buf[..];
            while !slice.is_empty() {
                if client_conn.read_tls(&mut slice).unwrap() == 0 {
                    break;
                }
            }
            if let Err(e) = client_conn.process_new_packets() {
                client_result = Err(e);
            }
        }
        if server_result.is_err() || client_result.is_err() {
            break;
        }
        if !server_conn.is_handshaking()
            && !client_conn.is_handshaking()
            && !client_conn.wants_write()
        {
            break;
        }
    }
    // Deliver the failing client's alert, so the server's error is the one a real peer causes.
    if client_result.is_err() && server_result.is_ok() {
        let mut buf = Vec::new();
        while client_conn.wants_write() {
            if client_conn.write_tls(&mut buf).is_err() {
                break;
            }
        }
        let mut slice = &buf[..];
        while !slice.is_empty() {
            if server_conn.read_tls(&mut slice).unwrap_or(0) == 0 {
                break;
            }
        }
        if let Err(e) = server_conn.process_new_packets() {
            server_result = Err(e);
        }
    }
    Handshake {
        server: server_result,
        client: client_result,
        server_conn,
        client_conn,
    }
}

/// Writes a Snom-style device certificate with common name `mac`, and its key, in one PEM
/// (as baresip wants) at `path`, issued by a CA the edge does not know.
pub fn write_device_from_unknown_ca(path: &Path, mac: &str) {
    use rcgen::CertifiedIssuer;
    let mut ca = CertificateParams::default();
    ca.distinguished_name
        .push(DnType::CommonName, "Some Other Vendor Root CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate().unwrap()).unwrap();
    let mut dev = CertificateParams::default();
    dev.distinguished_name.push(DnType::CommonName, mac);
    let key = KeyPair::generate().unwrap();
    let cert = dev.signed_by(&key, &ca).unwrap();
    std::fs::write(path, format!("{}{}", cert.pem(), key.serialize_pem())).unwrap();
}
