//! In-memory rustls handshakes: each test-PKI device certificate against the phone listener's
//! ServerConfig; every HandshakeRejection a certificate can cause, the counters, identity_of.

mod support;

use std::sync::Arc;

use pbx_edge::config::{ClientCertMode, Config, OuiPolicy, SharedCertPolicy};
use pbx_edge::identity::{
    identity_of, HandshakeCounters, HandshakeRejection, Identity, IdentitySnapshot, MacAddress,
};
use rcgen::{date_time_ymd, ExtendedKeyUsagePurpose};
use rustls::pki_types::CertificateDer;
use support::pki::{self, Device, Pki};

/// The shared test inventory plus a device with a MAC outside every vendor's OUI (user 106).
fn inventory() -> String {
    format!(
        "{}[[devices]]\nmac = \"001122334455\"\nusers = [\"106\"]\n",
        pki::INVENTORY
    )
}

struct Env {
    pki: Pki,
    dir: tempfile::TempDir,
    counters: Arc<HandshakeCounters>,
}

impl Env {
    fn new() -> Env {
        Env {
            pki: Pki::new(),
            dir: tempfile::tempdir().unwrap(),
            counters: HandshakeCounters::new(),
        }
    }

    fn config(&self) -> Config {
        pki::config(&self.pki, self.dir.path(), &inventory())
    }

    fn load(&self, config: &Config) -> IdentitySnapshot {
        IdentitySnapshot::load_with_ca_dir(
            config,
            &self.dir.path().join("no-builtin-ca"),
            self.counters.clone(),
        )
        .unwrap()
    }

    fn connect(&self, snapshot: &IdentitySnapshot, device: Option<&Device>) -> pki::Handshake {
        let client = pki::client_config(&self.pki, device.map(|d| (d.chain.clone(), d.key())));
        pki::handshake(snapshot.server_config(), client, "sbc.test")
    }
}

fn accepted(env: &Env, snapshot: &IdentitySnapshot, device: &Device) -> Identity {
    let outcome = env.connect(snapshot, Some(device));
    assert!(outcome.server.is_ok(), "server: {:?}", outcome.server);
    assert!(outcome.client.is_ok(), "client: {:?}", outcome.client);
    assert!(!outcome.server_conn.is_handshaking());
    identity_of(outcome.server_conn.peer_certificates(), snapshot).unwrap()
}

fn refused(
    env: &Env,
    snapshot: &IdentitySnapshot,
    device: Option<&Device>,
    reason: HandshakeRejection,
    vendor: &str,
) {
    let before = env.counters.failure_count(reason, vendor);
    let outcome = env.connect(snapshot, device);
    let error = outcome.server.expect_err("handshake should be refused");
    assert_eq!(
        HandshakeRejection::from_tls_error(&error),
        reason,
        "{error}"
    );
    assert_eq!(env.counters.record_connection_error(&error), reason);
    assert_eq!(
        env.counters.failure_count(reason, vendor),
        before + 1,
        "{reason:?} {vendor}"
    );
}

fn mac(text: &str) -> MacAddress {
    MacAddress::parse(text).unwrap()
}

#[test]
fn every_vendor_format_is_accepted_with_its_mac() {
    let env = Env::new();
    let snapshot = env.load(&env.config());
    let cases = [
        (env.pki.snom(pki::SNOM_MAC), "snom", "00:04:13:a1:b2:c3"),
        (
            env.pki.yealink(pki::YEALINK_MAC),
            "yealink",
            "80:5e:c0:a1:b2:c3",
        ),
        (
            env.pki.polycom(pki::POLYCOM_MAC),
            "polycom",
            "00:04:f2:a1:b2:c3",
        ),
        (env.pki.cisco("001bd4a1b2c3"), "cisco", "00:1b:d4:a1:b2:c3"),
    ];
    for (device, vendor, expected) in cases {
        let identity = accepted(&env, &snapshot, &device);
        assert_eq!(
            identity,
            Identity::Device {
                vendor: vendor.into(),
                mac: mac(expected)
            }
        );
    }
    assert!(
        env.counters.failures().is_empty(),
        "{:?}",
        env.counters.failures()
    );
}

#[test]
fn chain_rejections() {
    let env = Env::new();
    let snapshot = env.load(&env.config());
    let pki = &env.pki;
    let unknown =
        pki.wrong_root
            .device(&[(rcgen::DnType::CommonName, "000413A1B2C3")], |_| {}, &[]);
    refused(
        &env,
        &snapshot,
        Some(&unknown),
        HandshakeRejection::UnknownIssuer,
        "unknown",
    );

    let forged =
        pki.fake_snom_root
            .device(&[(rcgen::DnType::CommonName, "000413A1B2C3")], |_| {}, &[]);
    refused(
        &env,
        &snapshot,
        Some(&forged),
        HandshakeRejection::UntrustedChain,
        "snom",
    );

    let expired = pki.snom_with(pki::SNOM_MAC, |p| {
        p.not_before = date_time_ymd(2001, 1, 1);
        p.not_after = date_time_ymd(2002, 1, 1);
    });
    refused(
        &env,
        &snapshot,
        Some(&expired),
        HandshakeRejection::Expired,
        "snom",
    );

    let future = pki.snom_with(pki::SNOM_MAC, |p| {
        p.not_before = date_time_ymd(2090, 1, 1);
        p.not_after = date_time_ymd(2091, 1, 1);
    });
    refused(
        &env,
        &snapshot,
        Some(&future),
        HandshakeRejection::NotYetValid,
        "snom",
    );

    let server_only = pki.snom_with(pki::SNOM_MAC, |p| {
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    });
    refused(
        &env,
        &snapshot,
        Some(&server_only),
        HandshakeRejection::BadKeyUsage,
        "snom",
    );
}

#[test]
fn revoked_by_crl_and_by_deny_list() {
    let env = Env::new();
    let revoked = env.pki.snom("000413FFFF01");
    let mut config = env.config();
    let crl = pki::write(
        env.dir.path(),
        "snom.crl",
        env.pki
            .snom_phone
            .crl(std::slice::from_ref(&revoked.serial)),
    );
    let snom = config.vendors.get_mut("snom").unwrap();
    snom.crl = vec![crl];
    // The CRL is issued by the intermediate: the bundle must know it too.
    snom.ca.push(pki::write(
        env.dir.path(),
        "snom-phone.pem",
        &env.pki.snom_phone.pem,
    ));
    let snapshot = env.load(&config);
    refused(
        &env,
        &snapshot,
        Some(&revoked),
        HandshakeRejection::Revoked,
        "snom",
    );
    // Another Snom is fine.
    accepted(&env, &snapshot, &env.pki.snom(pki::SNOM_MAC));

    let listed = env.pki.snom(pki::SNOM_MAC);
    let before = env.load(&env.config());
    accepted(&env, &before, &listed);
    config.tls.mac_deny_list = Some(pki::write(
        env.dir.path(),
        "deny.txt",
        "# stolen\n00-04-13-a1-b2-c3\n",
    ));
    let after = env.load(&config);
    // The same device under the new snapshot: refused (what `revocation::admit` runs for a
    // live connection on every reload; tests/e2e/identity_listener.rs closes one for real).
    refused(
        &env,
        &after,
        Some(&listed),
        HandshakeRejection::Revoked,
        "snom",
    );
}

#[test]
fn mac_rules() {
    let env = Env::new();
    let mut config = env.config();
    let snapshot = env.load(&config);
    let pki = &env.pki;
    refused(
        &env,
        &snapshot,
        Some(&pki.polycom("Polycom VVX 450")),
        HandshakeRejection::NoMac,
        "polycom",
    );
    refused(
        &env,
        &snapshot,
        Some(&pki.snom_shared()),
        HandshakeRejection::SharedCertificateRefused,
        "snom",
    );
    refused(
        &env,
        &snapshot,
        Some(&pki.snom("000413000001")),
        HandshakeRejection::MacNotInInventory,
        "snom",
    );

    // Outside the Polycom OUIs: accepted and counted under `warn` (default), refused under `refuse`.
    let odd = pki.polycom("001122334455");
    assert_eq!(
        accepted(&env, &snapshot, &odd).mac(),
        Some(mac("001122334455"))
    );
    assert_eq!(
        env.counters.outside_ouis_accepted(),
        vec![("polycom".to_owned(), 1)]
    );
    config.vendors.get_mut("polycom").unwrap().oui_policy = OuiPolicy::Refuse;
    config.vendors.get_mut("snom").unwrap().shared_certs = SharedCertPolicy::Shared;
    let strict = env.load(&config);
    refused(
        &env,
        &strict,
        Some(&odd),
        HandshakeRejection::MacOutsideOuis,
        "polycom",
    );

    // Shared certificate accepted by policy.
    let shared = accepted(&env, &strict, &pki.snom_shared());
    assert_eq!(
        shared,
        Identity::Shared {
            vendor: "snom".into()
        }
    );
    // Issue 11 point 9: a CN that is present but not a MAC is no_mac even when shared
    // certificates are accepted, and a MAC CN beside a junk CN is ambiguous, not "the MAC".
    let snom_device =
        |dn: &[(rcgen::DnType, &str)]| pki.snom_phone.device(dn, |_| {}, &[&pki.snom_phone]);
    refused(
        &env,
        &strict,
        Some(&snom_device(&[(rcgen::DnType::CommonName, "snom 3xx")])),
        HandshakeRejection::NoMac,
        "snom",
    );
    refused(
        &env,
        &strict,
        Some(&snom_device(&[
            (rcgen::DnType::CommonName, pki::SNOM_MAC),
            // A second CN (rcgen keeps one value per type; the CN OID as a custom type).
            (rcgen::DnType::CustomDnType(vec![2, 5, 4, 3]), "junk"),
        ])),
        HandshakeRejection::AmbiguousSubject,
        "snom",
    );
    // The operator may name the shared certificate's CN explicitly.
    config.vendors.get_mut("snom").unwrap().shared_cert_names = vec!["snom 3xx".into()];
    let named = env.load(&config);
    assert_eq!(
        accepted(
            &env,
            &named,
            &snom_device(&[(rcgen::DnType::CommonName, "snom 3xx")])
        ),
        Identity::Shared {
            vendor: "snom".into()
        }
    );
}

#[test]
fn legacy_crypto_refused_then_accepted_when_enabled() {
    let env = Env::new();
    let (legacy_ca, chain, key) = pki::legacy_fixture();
    let mut config = env.config();
    let legacy_ca_file = pki::write(env.dir.path(), "legacy-ca.pem", legacy_ca);
    config
        .vendors
        .get_mut("snom")
        .unwrap()
        .ca
        .push(legacy_ca_file);
    let device = Device {
        chain: chain.clone(),
        key_pem: String::new(),
        serial: rcgen::SerialNumber::from(1u64),
    };
    let client = || pki::client_config(&env.pki, Some((chain.clone(), key.clone_key())));

    let snapshot = env.load(&config);
    let outcome = pki::handshake(snapshot.server_config(), client(), "sbc.test");
    let error = outcome.server.expect_err("legacy refused by default");
    assert_eq!(
        HandshakeRejection::from_tls_error(&error),
        HandshakeRejection::LegacyCryptoRefused
    );
    assert_eq!(
        env.counters
            .failure_count(HandshakeRejection::LegacyCryptoRefused, "snom"),
        1
    );

    config.vendors.get_mut("snom").unwrap().legacy_crypto = true;
    let snapshot = env.load(&config);
    let outcome = pki::handshake(snapshot.server_config(), client(), "sbc.test");
    assert!(outcome.server.is_ok(), "{:?}", outcome.server);
    let identity = identity_of(outcome.server_conn.peer_certificates(), &snapshot).unwrap();
    assert_eq!(identity.mac(), Some(mac("000413A1B2D4")));
    assert_eq!(env.counters.legacy_accepted(), vec![("snom".to_owned(), 1)]);
    drop(device);
}

#[test]
fn rsa_1024_device_key_is_legacy() {
    let env = Env::new();
    let spki = std::fs::read(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/certs/rsa1024-spki.der"),
    )
    .unwrap();
    let public = rcgen::SubjectPublicKeyInfo::from_der(&spki).unwrap();
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name = pki::dn_of(&[(rcgen::DnType::CommonName, "000413A1B2C3")]);
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let cert = params
        .signed_by(&public, &env.pki.snom_phone.issuer())
        .unwrap();
    let chain = [cert.der().clone(), env.pki.snom_phone.der.clone()];
    let mut config = env.config();
    let snapshot = env.load(&config);
    let now = rustls::pki_types::UnixTime::now();
    let error = snapshot
        .trust()
        .verify(&chain[0], &chain[1..], now)
        .unwrap_err();
    assert_eq!(error.reason, HandshakeRejection::LegacyCryptoRefused);
    assert!(error.detail.contains("RSA-1024"), "{}", error.detail);
    config.vendors.get_mut("snom").unwrap().legacy_crypto = true;
    let snapshot = env.load(&config);
    let verified = snapshot
        .trust()
        .verify(&chain[0], &chain[1..], now)
        .unwrap();
    assert_eq!(verified.identity.mac(), Some(mac(pki::SNOM_MAC)));
    assert!(!verified.legacy.is_empty());
}

#[test]
fn client_cert_modes() {
    let env = Env::new();
    let mut config = env.config();
    let required = env.load(&config);
    refused(
        &env,
        &required,
        None,
        HandshakeRejection::NoCertificate,
        "none",
    );

    config.tls.client_cert = ClientCertMode::Optional;
    let optional = env.load(&config);
    let outcome = env.connect(&optional, None);
    assert!(outcome.server.is_ok(), "{:?}", outcome.server);
    assert_eq!(
        identity_of(outcome.server_conn.peer_certificates(), &optional).unwrap(),
        Identity::Anonymous
    );
    // A certificate is still verified when offered.
    let unknown = env
        .pki
        .wrong_root
        .device(&[(rcgen::DnType::CommonName, "x")], |_| {}, &[]);
    refused(
        &env,
        &optional,
        Some(&unknown),
        HandshakeRejection::UnknownIssuer,
        "unknown",
    );

    config.tls.client_cert = ClientCertMode::Off;
    let off = env.load(&config);
    let outcome = env.connect(&off, Some(&env.pki.snom(pki::SNOM_MAC)));
    assert!(outcome.server.is_ok(), "{:?}", outcome.server);
    assert!(outcome.server_conn.peer_certificates().is_none());
}

#[test]
fn not_tls_is_a_protocol_mismatch() {
    let env = Env::new();
    let snapshot = env.load(&env.config());
    let mut server = rustls::ServerConnection::new(snapshot.server_config()).unwrap();
    let mut bytes: &[u8] = b"OPTIONS sip:sbc.test SIP/2.0\r\nVia: SIP/2.0/TCP x\r\n\r\n";
    server.read_tls(&mut bytes).unwrap();
    let error = server.process_new_packets().unwrap_err();
    assert_eq!(
        env.counters.record_connection_error(&error),
        HandshakeRejection::ProtocolMismatch
    );
    assert_eq!(
        env.counters
            .failure_count(HandshakeRejection::ProtocolMismatch, "none"),
        1
    );
}

#[test]
fn identity_of_without_certificates_is_anonymous() {
    let env = Env::new();
    let snapshot = env.load(&env.config());
    let none: Option<&[CertificateDer<'_>]> = None;
    assert_eq!(identity_of(none, &snapshot).unwrap(), Identity::Anonymous);
    assert_eq!(
        identity_of(Some(&[]), &snapshot).unwrap(),
        Identity::Anonymous
    );
}

#[test]
fn cisco_sep_common_name_and_operator_san_uri() {
    let env = Env::new();
    let mut config = env.config();
    let operator_ca = rcgen_root("Test Operator Device CA");
    config.vendors.insert(
        "operator".into(),
        pbx_edge::config::VendorConfig {
            ca: vec![pki::write(
                env.dir.path(),
                "operator-ca.pem",
                &operator_ca.pem,
            )],
            ..Default::default()
        },
    );
    let snapshot = env.load(&config);

    // Older Cisco MIC: no ST attribute, CN = SEP + MAC.
    let sep = env.pki.cisco_mfg.device(
        &[
            (rcgen::DnType::OrganizationName, "Cisco Systems"),
            (rcgen::DnType::CommonName, "SEP001BD4A1B2C3"),
        ],
        |_| {},
        &[&env.pki.cisco_mfg],
    );
    assert_eq!(
        accepted(&env, &snapshot, &sep).mac(),
        Some(mac("001bd4a1b2c3"))
    );

    // Operator-issued certificate carrying the MAC as urn:dev:mac (RFC 9039).
    let operator = operator_ca.device(
        &[(rcgen::DnType::CommonName, "desk phone 4")],
        |p| {
            p.subject_alt_names = vec![rcgen::SanType::URI(
                "urn:dev:mac:000413a1b2c3".try_into().unwrap(),
            )];
        },
        &[],
    );
    let identity = accepted(&env, &snapshot, &operator);
    assert_eq!(
        identity,
        Identity::Device {
            vendor: "operator".into(),
            mac: mac(pki::SNOM_MAC)
        }
    );
}

#[test]
fn mac_from_override_changes_where_the_mac_is_read() {
    let env = Env::new();
    let mut config = env.config();
    // Polycom profile told to read the MAC from OU instead of CN.
    config.vendors.get_mut("polycom").unwrap().mac_from = Some("ou".into());
    let snapshot = env.load(&config);
    let device = env.pki.polycom_root.device(
        &[
            (rcgen::DnType::OrganizationalUnitName, "00-04-F2-A1-B2-C3"),
            (rcgen::DnType::CommonName, "VVX 450"),
        ],
        |_| {},
        &[],
    );
    assert_eq!(
        accepted(&env, &snapshot, &device).mac(),
        Some(mac(pki::POLYCOM_MAC))
    );
    refused(
        &env,
        &snapshot,
        Some(&env.pki.polycom(pki::POLYCOM_MAC)),
        HandshakeRejection::NoMac,
        "polycom",
    );
}

fn rcgen_root(cn: &str) -> pki::Ca {
    pki::Ca::root(&[(rcgen::DnType::CommonName, cn)])
}

#[test]
fn recheck_after_reload_closes_revoked_and_removed_devices() {
    let env = Env::new();
    let device = env.pki.snom(pki::SNOM_MAC);
    let before = env.load(&env.config());
    let outcome = env.connect(&before, Some(&device));
    assert!(outcome.server.is_ok());
    let certs = outcome.server_conn.peer_certificates().unwrap().to_vec();
    let now = rustls::pki_types::UnixTime::now();
    use pbx_edge::identity::revocation::recheck;
    assert!(recheck(Some(&certs), &before, now).is_ok());

    // A CRL revoking it arrives.
    let mut config = env.config();
    let snom = config.vendors.get_mut("snom").unwrap();
    snom.crl = vec![pki::write(
        env.dir.path(),
        "new.crl",
        env.pki.snom_phone.crl(std::slice::from_ref(&device.serial)),
    )];
    snom.ca.push(pki::write(
        env.dir.path(),
        "snom-phone.pem",
        &env.pki.snom_phone.pem,
    ));
    let with_crl = env.load(&config);
    assert_eq!(
        recheck(Some(&certs), &with_crl, now).unwrap_err().reason,
        HandshakeRejection::Revoked
    );

    // The device is removed from the inventory.
    let mut config = env.config();
    config.inventory.file = Some(pki::write(env.dir.path(), "empty.toml", ""));
    let emptied = env.load(&config);
    assert_eq!(
        recheck(Some(&certs), &emptied, now).unwrap_err().reason,
        HandshakeRejection::MacNotInInventory
    );
    assert_eq!(recheck(None, &emptied, now).unwrap(), Identity::Anonymous);
}

/// A client that presents arbitrary certificate bytes.
#[derive(Debug)]
struct PresentsGarbage(Arc<rustls::sign::CertifiedKey>);

impl rustls::client::ResolvesClientCert for PresentsGarbage {
    fn resolve(
        &self,
        _hints: &[&[u8]],
        _schemes: &[rustls::SignatureScheme],
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        Some(self.0.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

#[test]
fn garbage_certificate_is_other() {
    let env = Env::new();
    let snapshot = env.load(&env.config());
    let key = env.pki.snom(pki::SNOM_MAC).key();
    let provider = rustls::crypto::ring::default_provider();
    let signing = provider.key_provider.load_private_key(key).unwrap();
    let certified =
        rustls::sign::CertifiedKey::new(vec![CertificateDer::from(b"not x509".to_vec())], signing);
    let mut roots = rustls::RootCertStore::empty();
    roots.add(env.pki.server_ca.der.clone()).unwrap();
    let client = rustls::ClientConfig::builder_with_provider(Arc::new(provider))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_client_cert_resolver(Arc::new(PresentsGarbage(Arc::new(certified))));
    let outcome = pki::handshake(snapshot.server_config(), Arc::new(client), "sbc.test");
    let error = outcome.server.unwrap_err();
    assert_eq!(
        HandshakeRejection::from_tls_error(&error),
        HandshakeRejection::Other,
        "{error}"
    );
    assert_eq!(
        env.counters
            .failure_count(HandshakeRejection::Other, "unknown"),
        1
    );
}

/// Self-signed CA certificates carrying `dn` as subject (and issuer): same-name candidates
/// whose signatures never verify.
fn junk_cas(dn: &[(rcgen::DnType, &str)], count: usize) -> Vec<CertificateDer<'static>> {
    (0..count).map(|_| pki::Ca::root(dn).der).collect()
}

const SNOM_PHONE_DN: [(rcgen::DnType, &str); 2] = [
    (rcgen::DnType::OrganizationName, "Test snom technology AG"),
    (rcgen::DnType::CommonName, "Snom Phone 1 SHA-256"),
];

/// `device` with `junk` inserted between its certificate and its genuine intermediate (the
/// order that makes a path builder try every junk candidate first).
fn padded(device: &Device, junk: Vec<CertificateDer<'static>>) -> Device {
    let mut chain = vec![device.chain[0].clone()];
    chain.extend(junk);
    chain.extend(device.chain[1..].iter().cloned());
    Device {
        chain,
        key_pem: device.key_pem.clone(),
        serial: device.serial.clone(),
    }
}

#[test]
fn oversized_chains_are_refused_before_path_building() {
    // Issue 11 point 6: ~100 junk intermediates named like the device's issuer.
    let env = Env::new();
    let mut config = env.config();
    let snapshot = env.load(&config);
    let device = env.pki.snom(pki::SNOM_MAC);
    let worst = padded(&device, junk_cas(&SNOM_PHONE_DN, 100));
    refused(
        &env,
        &snapshot,
        Some(&worst),
        HandshakeRejection::ChainTooLarge,
        "unknown",
    );
    // The byte cap on its own: 5 certificates (under the count cap), over 1 KiB.
    config.tls.max_client_chain_bytes = 1024;
    let small = env.load(&config);
    let five = padded(&device, junk_cas(&[(rcgen::DnType::CommonName, "x")], 3));
    assert!(five.chain.iter().map(|c| c.len()).sum::<usize>() > 1024);
    refused(
        &env,
        &small,
        Some(&five),
        HandshakeRejection::ChainTooLarge,
        "unknown",
    );
    // The caps count: 8 certificates (the default) still pass.
    let eight = padded(&device, junk_cas(&[(rcgen::DnType::CommonName, "x")], 6));
    assert_eq!(eight.chain.len(), 8);
    assert_eq!(
        accepted(&env, &snapshot, &eight).mac(),
        Some(mac(pki::SNOM_MAC))
    );
    let nine = padded(&device, junk_cas(&[(rcgen::DnType::CommonName, "x")], 7));
    refused(
        &env,
        &snapshot,
        Some(&nine),
        HandshakeRejection::ChainTooLarge,
        "unknown",
    );
}

#[test]
fn signature_checks_per_handshake_are_capped() {
    // With the size caps lifted, the junk chain meets the signature budget instead: refused
    // after MAX_SIGNATURE_CHECKS checks, not after one per junk certificate and vendor.
    let env = Env::new();
    let mut config = env.config();
    config.tls.max_client_chain_certs = 1000;
    config.tls.max_client_chain_bytes = 1 << 20;
    let snapshot = env.load(&config);
    let device = env.pki.snom(pki::SNOM_MAC);
    let worst = padded(&device, junk_cas(&SNOM_PHONE_DN, 100));
    refused(
        &env,
        &snapshot,
        Some(&worst),
        HandshakeRejection::SignatureBudgetExceeded,
        "snom",
    );
}

#[test]
fn a_genuine_chain_padded_with_same_name_junk_is_verified_along_its_path_only() {
    // Issue 11 point 6, within the default caps: 6 junk intermediates named like the device's
    // issuer (8 certificates). The edge's path builder finds the genuine path by name and
    // signature; webpki then verifies only that path. Handed every presented intermediate,
    // webpki's own search over the junk permutations gives up (MaximumSignatureChecksExceeded,
    // refused as `other`) after 100 signature checks.
    let env = Env::new();
    let snapshot = env.load(&env.config());
    let device = env.pki.snom(pki::SNOM_MAC);
    let padded = padded(&device, junk_cas(&SNOM_PHONE_DN, 6));
    assert_eq!(padded.chain.len(), 8);
    assert_eq!(
        accepted(&env, &snapshot, &padded).mac(),
        Some(mac(pki::SNOM_MAC))
    );
}
