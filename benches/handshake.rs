//! Handshake cost before authentication (issue 11 point 6): what one phone TLS handshake costs
//! the edge when the client's Certificate message is a legitimate Snom chain, and when it is the
//! worst case an unauthenticated client can send: ~64 KB holding the device certificate, ~95
//! junk intermediates whose subject equals the device's issuer (each one a candidate the path
//! builder might try), and the genuine intermediate last.
//!
//! A third chain stays within the default caps (`tls.max_client_chain_certs = 8`): the device,
//! 6 same-name junk intermediates, the genuine one.
//!
//! Two measurements per chain, both with four vendor profiles loaded (snom, yealink, polycom,
//! cisco, as the tests' PKI):
//! - `verify`: `TrustState::verify`, the whole verdict the client-certificate verifier runs on
//!   a tokio worker during the handshake;
//! - `full_handshake`: a complete in-memory rustls handshake (TLS 1.3, ECDHE, both sides'
//!   signatures) against the listener's `ServerConfig`, i.e. all the server work per connection.
//!
//! Run: `cargo bench --bench handshake -- --warm-up-time 1 --measurement-time 2`

use std::collections::BTreeMap;
use std::hint::black_box;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion};
use pbx_edge::config::{
    ClientCertMode, Config, InventoryConfig, ServerCertConfig, TlsConfig, VendorConfig,
};
use pbx_edge::identity::{HandshakeCounters, IdentitySnapshot};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, ClientConnection, RootCertStore, ServerConfig, ServerConnection};

/// Upper bound of the Certificate message the attacker sends (rustls' handshake message limit).
const CERTIFICATE_MESSAGE_BYTES: usize = 64 * 1024;

struct Ca {
    params: CertificateParams,
    key: KeyPair,
    der: CertificateDer<'static>,
    pem: String,
}

fn dn(entries: &[(DnType, &str)]) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    for (ty, value) in entries {
        dn.push(ty.clone(), *value);
    }
    dn
}

fn ca_params(entries: &[(DnType, &str)]) -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name = dn(entries);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params
}

impl Ca {
    fn root(entries: &[(DnType, &str)]) -> Ca {
        let key = KeyPair::generate().expect("key");
        let params = ca_params(entries);
        let cert = params.self_signed(&key).expect("root");
        Ca {
            der: cert.der().clone(),
            pem: cert.pem(),
            params,
            key,
        }
    }

    fn issue(&self, params: &CertificateParams, key: &KeyPair) -> rcgen::Certificate {
        params
            .signed_by(key, &Issuer::from_params(&self.params, &self.key))
            .expect("signed")
    }

    fn intermediate(&self, entries: &[(DnType, &str)]) -> Ca {
        let key = KeyPair::generate().expect("key");
        let params = ca_params(entries);
        let cert = self.issue(&params, &key);
        Ca {
            der: cert.der().clone(),
            pem: cert.pem(),
            params,
            key,
        }
    }
}

const SNOM_PHONE_DN: [(DnType, &str); 2] = [
    (DnType::OrganizationName, "Test snom technology AG"),
    (DnType::CommonName, "Snom Phone 1 SHA-256"),
];

struct Setup {
    snapshot: IdentitySnapshot,
    device_key: PrivateKeyDer<'static>,
    server_ca: CertificateDer<'static>,
    legit: Vec<CertificateDer<'static>>,
    padded: Vec<CertificateDer<'static>>,
    junk: Vec<CertificateDer<'static>>,
    _dir: tempfile::TempDir,
}

fn write(dir: &Path, name: &str, contents: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, contents).expect("write");
    path
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().expect("tempdir");
    let snom_root = Ca::root(&[
        (DnType::OrganizationName, "Test snom technology AG"),
        (DnType::CommonName, "Test snom technology AG SHA-256 CA"),
    ]);
    let snom_phone = snom_root.intermediate(&SNOM_PHONE_DN);
    let others = [
        ("yealink", "Test Yealink Equipment Issuing CA"),
        ("polycom", "Test Polycom Root CA"),
        ("cisco", "Test Cisco Root CA M2"),
    ];
    let mut vendors = BTreeMap::new();
    let vendor = |path: PathBuf| VendorConfig {
        ca: vec![path],
        ..VendorConfig::default()
    };
    vendors.insert(
        "snom".to_owned(),
        vendor(write(dir.path(), "snom.pem", &snom_root.pem)),
    );
    for (name, cn) in others {
        let root = Ca::root(&[(DnType::CommonName, cn)]);
        vendors.insert(
            name.to_owned(),
            vendor(write(dir.path(), &format!("{name}.pem"), &root.pem)),
        );
    }

    // The device: Snom CN = MAC, in the inventory.
    let device_key = KeyPair::generate().expect("key");
    let mut params = CertificateParams::default();
    params.distinguished_name = dn(&[
        (DnType::OrganizationName, "snom technology AG"),
        (DnType::CommonName, "000413A1B2C3"),
    ]);
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let device = snom_phone.issue(&params, &device_key);
    let legit = vec![device.der().clone(), snom_phone.der.clone()];

    // Junk intermediates: the same subject as the genuine one, other keys, until the message
    // is full; the genuine intermediate last, so a path builder that tries candidates in order
    // checks every junk signature first.
    let mut junk = vec![device.der().clone()];
    let mut size = legit.iter().map(|c| c.len() + 3).sum::<usize>() + 3;
    loop {
        let key = KeyPair::generate().expect("key");
        let cert = ca_params(&SNOM_PHONE_DN)
            .self_signed(&key)
            .expect("junk")
            .der()
            .clone();
        if size + cert.len() + 3 > CERTIFICATE_MESSAGE_BYTES - 1024 {
            break;
        }
        size += cert.len() + 3;
        junk.push(cert);
    }
    // Within the default caps (8 certificates): 6 same-name junk, then the genuine one.
    let mut padded = junk[..7].to_vec();
    padded.push(snom_phone.der.clone());
    junk.push(snom_phone.der.clone());

    let server_ca = Ca::root(&[(DnType::CommonName, "Test pbx-edge server CA")]);
    let server_key = KeyPair::generate().expect("key");
    let mut server = CertificateParams::default();
    server.distinguished_name = dn(&[(DnType::CommonName, "sbc.test")]);
    server.subject_alt_names = vec![SanType::DnsName("sbc.test".try_into().expect("name"))];
    server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let server_cert = server_ca.issue(&server, &server_key);

    let config = Config {
        tls: TlsConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            client_cert: ClientCertMode::Required,
            certificates: vec![ServerCertConfig {
                cert: write(dir.path(), "sbc.pem", &server_cert.pem()),
                key: write(dir.path(), "sbc.key", &server_key.serialize_pem()),
            }],
            ..TlsConfig::default()
        },
        vendors,
        inventory: InventoryConfig {
            file: Some(write(
                dir.path(),
                "inventory.toml",
                "[[devices]]\nmac = \"000413A1B2C3\"\nusers = [\"101\"]\n",
            )),
        },
        ..Config::default()
    };
    let snapshot = IdentitySnapshot::load_with_ca_dir(
        &config,
        &dir.path().join("no-builtin-ca"),
        HandshakeCounters::new(),
    )
    .expect("snapshot loads");
    Setup {
        snapshot,
        device_key: PrivateKeyDer::from_pem_slice(device_key.serialize_pem().as_bytes())
            .expect("key"),
        server_ca: server_ca.der.clone(),
        legit,
        padded,
        junk,
        _dir: dir,
    }
}

/// One in-memory handshake; whether the server accepted the client.
fn handshake(server: Arc<ServerConfig>, client: Arc<ClientConfig>) -> bool {
    let name = ServerName::try_from("sbc.test").expect("name");
    let mut client = ClientConnection::new(client, name).expect("client");
    let mut server = ServerConnection::new(server).expect("server");
    for _ in 0..10 {
        let mut buf = Vec::new();
        while client.wants_write() {
            client.write_tls(&mut buf).expect("client write");
        }
        // Processed after every read: rustls buffers a bounded amount of unprocessed TLS (a
        // Certificate message near 64 KB takes several reads).
        let mut slice = &buf[..];
        while !slice.is_empty() {
            if server.read_tls(&mut slice).expect("server read") == 0 {
                break;
            }
            if server.process_new_packets().is_err() {
                return false;
            }
        }
        let mut buf = Vec::new();
        while server.wants_write() {
            server.write_tls(&mut buf).expect("server write");
        }
        let mut slice = &buf[..];
        while !slice.is_empty() {
            if client.read_tls(&mut slice).expect("client read") == 0 {
                break;
            }
        }
        if client.process_new_packets().is_err() {
            return false;
        }
        if !server.is_handshaking() && !client.is_handshaking() && !client.wants_write() {
            return true;
        }
    }
    false
}

fn bench(c: &mut Criterion) {
    let setup = setup();
    let trust = setup.snapshot.trust();
    let message_bytes: usize = setup.junk.iter().map(|c| c.len() + 3).sum::<usize>() + 3;
    eprintln!(
        "worst case: {} certificates, {message_bytes} bytes of Certificate message",
        setup.junk.len()
    );
    let mut roots = RootCertStore::empty();
    roots.add(setup.server_ca.clone()).expect("root");
    let client = |chain: &[CertificateDer<'static>]| {
        let mut config =
            ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .expect("versions")
                .with_root_certificates(roots.clone())
                .with_client_auth_cert(chain.to_vec(), setup.device_key.clone_key())
                .expect("client auth");
        // Every iteration a full handshake: a resumed session skips the client certificate.
        config.resumption = rustls::client::Resumption::disabled();
        Arc::new(config)
    };

    let mut group = c.benchmark_group("handshake");
    // The worst case takes up to a few hundred milliseconds per iteration before the fix:
    // criterion's minimum sample count keeps the run short.
    group.sample_size(10);
    for (name, chain) in [
        ("legit_snom_chain", &setup.legit),
        ("padded_8_certificates", &setup.padded),
        ("junk_intermediates_64k", &setup.junk),
    ] {
        let (end_entity, intermediates) = chain.split_first().expect("chain");
        let verdict = trust.verify(end_entity, intermediates, UnixTime::now());
        eprintln!(
            "{name}: verdict {:?}",
            verdict.as_ref().map(|v| &v.identity)
        );
        group.bench_function(format!("verify/{name}"), |b| {
            b.iter(|| {
                let _ = black_box(trust.verify(
                    black_box(end_entity),
                    black_box(intermediates),
                    UnixTime::now(),
                ));
            })
        });
        let server = setup.snapshot.server_config();
        let client = client(chain);
        eprintln!(
            "{name}: full handshake accepted = {}",
            handshake(server.clone(), client.clone())
        );
        group.bench_function(format!("full_handshake/{name}"), |b| {
            b.iter(|| black_box(handshake(server.clone(), client.clone())))
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
