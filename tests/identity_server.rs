//! Server side of the phone listener: SNI selection, wildcard refusal (RFC 5922 §7.2), key/cert
//! mismatch, a phone that checks the server name; the shipped vendor CAs; inspect-cert.

mod support;

use std::path::Path;

use pbx_edge::config::ServerCertConfig;
use pbx_edge::identity::chain::{build_path, legacy_findings, PathOutcome};
use pbx_edge::identity::inspect::inspect_certificate;
use pbx_edge::identity::store::read_certificates;
use pbx_edge::identity::{HandshakeCounters, HandshakeRejection, IdentityError, IdentitySnapshot};
use rustls::pki_types::UnixTime;
use support::pki::{self, Pki};

const INVENTORY: &str =
    "[[devices]]\nmac = \"000413a1b2c3\"\nusers = [\"101\"]\nlabel = \"reception\"\n";

fn load(config: &pbx_edge::config::Config, dir: &Path) -> Result<IdentitySnapshot, IdentityError> {
    IdentitySnapshot::load_with_ca_dir(config, &dir.join("none"), HandshakeCounters::new())
}

#[test]
fn sni_selects_certificate_and_phone_checks_the_name() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let mut config = pki::config(&pki, dir.path(), INVENTORY);
    let other = pki.server(&["pbx2.test", "alt.pbx2.test"]);
    config.tls.certificates.push(ServerCertConfig {
        cert: pki::write(dir.path(), "pbx2.pem", other.chain_pem()),
        key: pki::write(dir.path(), "pbx2.key", &other.key_pem),
    });
    let snapshot = load(&config, dir.path()).unwrap();
    let phone = pki.snom(pki::SNOM_MAC);
    let client = || pki::client_config(&pki, Some((phone.chain.clone(), phone.key())));

    // Like Snom's check_fqdn_against_server_cert: the configured name verifies.
    let outcome = pki::handshake(snapshot.server_config(), client(), "sbc.test");
    assert!(
        outcome.client.is_ok() && outcome.server.is_ok(),
        "{:?} {:?}",
        outcome.client,
        outcome.server
    );
    let served = outcome.client_conn.peer_certificates().unwrap()[0].clone();
    assert_ne!(served, other.chain[0]);

    // SNI pbx2.test (and its second SAN) selects the second certificate.
    for name in ["pbx2.test", "alt.pbx2.test"] {
        let outcome = pki::handshake(snapshot.server_config(), client(), name);
        assert!(outcome.client.is_ok(), "{name}: {:?}", outcome.client);
        assert_eq!(
            outcome.client_conn.peer_certificates().unwrap()[0],
            other.chain[0]
        );
    }

    // Another name gets the default certificate, which the phone refuses for that name.
    let outcome = pki::handshake(snapshot.server_config(), client(), "evil.test");
    let server_error = outcome
        .server
        .as_ref()
        .expect_err("the phone's alert reaches the server");
    assert_eq!(
        HandshakeRejection::from_tls_error(server_error),
        HandshakeRejection::PeerRefusedServerCertificate,
        "{server_error:?}"
    );
    let error = outcome
        .client
        .expect_err("name mismatch must fail on the phone");
    assert!(
        matches!(
            error,
            rustls::Error::InvalidCertificate(
                rustls::CertificateError::NotValidForName
                    | rustls::CertificateError::NotValidForNameContext { .. }
            )
        ),
        "{error:?}"
    );
}

#[test]
fn wildcard_server_certificate_refused_unless_allowed() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let mut config = pki::config(&pki, dir.path(), INVENTORY);
    let wildcard = pki.server(&["*.example.test"]);
    config.tls.certificates[0] = ServerCertConfig {
        cert: pki::write(dir.path(), "wild.pem", wildcard.chain_pem()),
        key: pki::write(dir.path(), "wild.key", &wildcard.key_pem),
    };
    let error = load(&config, dir.path()).unwrap_err();
    assert_eq!(error.label(), "wildcard_server_certificate");
    assert!(
        error.to_string().contains("wild.pem") && error.to_string().contains("RFC 5922"),
        "{error}"
    );

    config.tls.allow_wildcard_server_cert = true;
    let snapshot = load(&config, dir.path()).unwrap();
    let phone = pki.snom(pki::SNOM_MAC);
    let client = pki::client_config(&pki, Some((phone.chain.clone(), phone.key())));
    let outcome = pki::handshake(snapshot.server_config(), client, "sbc.example.test");
    assert!(outcome.client.is_ok(), "{:?}", outcome.client);
}

#[test]
fn key_must_match_certificate() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let mut config = pki::config(&pki, dir.path(), INVENTORY);
    let other = pki.server(&["sbc.test"]);
    config.tls.certificates[0].key = pki::write(dir.path(), "wrong.key", &other.key_pem);
    let error = load(&config, dir.path()).unwrap_err();
    assert_eq!(error.label(), "key_mismatch");
    assert!(
        error.to_string().contains("wrong.key") && error.to_string().contains("sbc.pem"),
        "{error}"
    );

    config.tls.certificates.clear();
    assert_eq!(
        load(&config, dir.path()).unwrap_err().label(),
        "no_server_certificate"
    );
}

#[test]
fn reload_failure_is_reported_and_old_snapshot_stays_usable() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let mut config = pki::config(&pki, dir.path(), INVENTORY);
    let good = load(&config, dir.path()).unwrap();
    config.inventory.file = Some(pki::write(
        dir.path(),
        "broken.toml",
        "[[devices]]\nmac = \"nope\"\n",
    ));
    let error = load(&config, dir.path()).unwrap_err();
    assert_eq!(error.label(), "inventory");
    assert!(error.to_string().contains("broken.toml"), "{error}");
    let phone = pki.snom(pki::SNOM_MAC);
    let client = pki::client_config(&pki, Some((phone.chain.clone(), phone.key())));
    assert!(pki::handshake(good.server_config(), client, "sbc.test")
        .server
        .is_ok());
}

#[test]
fn shipped_vendor_cas_load_and_say_which_need_legacy_crypto() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/ca");
    let certs = |path: &str| read_certificates(&root.join(path)).unwrap();
    let path_is_legacy = |child: &str, parent: &str| {
        let child = certs(child);
        let parent = certs(parent);
        match build_path(&child[0], &[], &[parent[0].as_ref()]) {
            PathOutcome::Found(path) => !legacy_findings(&path).is_empty(),
            other => panic!("{child:?}: {other:?}"),
        }
    };
    // Cisco: manufacturing CAs chain to their roots; the SHA-1 (e=3) chain is legacy.
    assert!(path_is_legacy(
        "cisco/cisco-manufacturing-ca-sha1.pem",
        "cisco/cisco-root-ca-2048.pem"
    ));
    assert!(!path_is_legacy(
        "cisco/cisco-manufacturing-ca-sha2.pem",
        "cisco/cisco-root-ca-m2.pem"
    ));
    // Snom: the SHA-1 root is RSA-1024 (legacy as soon as it verifies anything), the SHA-256
    // root is RSA-2048.
    for (file, legacy) in [
        ("snom/snom-technology-ag-ca-sha1-root.pem", true),
        ("snom/snom-technology-ag-sha256-ca-root.pem", false),
    ] {
        let der = certs(file);
        let path = pbx_edge::identity::chain::CertPath {
            certs: vec![der[0].as_ref(), der[0].as_ref()],
        };
        let findings = legacy_findings(&path);
        assert_eq!(
            findings.iter().any(|f| f.to_string().contains("RSA-1024")),
            legacy,
            "{file}: {findings:?}"
        );
    }

    // The default built-in profiles pick the shipped files up.
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let mut config = pki::config(&pki, dir.path(), INVENTORY);
    config.vendors.clear();
    let snapshot =
        IdentitySnapshot::load_with_ca_dir(&config, &root, HandshakeCounters::new()).unwrap();
    let count = |name: &str| {
        snapshot
            .vendors()
            .iter()
            .find(|v| v.profile.name == name)
            .unwrap()
            .cas
            .len()
    };
    assert_eq!(count("snom"), 2);
    assert_eq!(count("cisco"), 4);
    assert_eq!(count("yealink"), 0);
}

#[test]
fn inspect_cert_report() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let config = pki::config(&pki, dir.path(), INVENTORY);
    let snapshot = load(&config, dir.path()).unwrap();
    let now = UnixTime::now();

    let phone = pki.snom(pki::SNOM_MAC);
    let report = inspect_certificate(phone.chain_pem().as_bytes(), &snapshot, now).unwrap();
    assert!(report.accepted, "{report}");
    let text = report.to_string();
    for expected in [
        "CN=000413A1B2C3",
        "Snom Phone 1 SHA-256",
        "snom device 00:04:13:a1:b2:c3",
        "reception",
        "ACCEPTED",
        "ecdsa-with-SHA256",
    ] {
        assert!(text.contains(expected), "{expected:?} missing in\n{text}");
    }

    let unknown = pki.snom("000413000009");
    let report = inspect_certificate(unknown.chain[0].as_ref(), &snapshot, now).unwrap();
    assert!(!report.accepted);
    // DER of the leaf alone: its issuer (the Snom intermediate the phone would send) is not a
    // configured CA.
    assert_eq!(
        report.rejection.as_ref().unwrap().reason,
        HandshakeRejection::UnknownIssuer,
        "{report}"
    );
    assert!(
        report.to_string().contains("no vendor CA matched"),
        "{report}"
    );

    let report = inspect_certificate(unknown.chain_pem().as_bytes(), &snapshot, now).unwrap();
    assert!(!report.accepted);
    assert_eq!(
        report.rejection.as_ref().unwrap().reason,
        HandshakeRejection::MacNotInInventory
    );
    assert!(
        report.to_string().contains("not in the inventory"),
        "{report}"
    );
}

#[test]
fn inspect_file_and_csv_inventory() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let mut config = pki::config(&pki, dir.path(), INVENTORY);
    config.inventory.file = Some(pki::write(
        dir.path(),
        "inventory.csv",
        "mac,users,label,provisioning\n00:04:13:A1:B2:C3,101;102,desk 7,\n",
    ));
    let snapshot = load(&config, dir.path()).unwrap();
    let phone = pki.snom(pki::SNOM_MAC);
    let file = pki::write(dir.path(), "phone.pem", phone.chain_pem());
    let report =
        pbx_edge::identity::inspect::inspect_file(&file, &snapshot, UnixTime::now()).unwrap();
    assert!(report.accepted, "{report}");
    assert!(report.inventory.contains("desk 7"), "{report}");
    let missing = pbx_edge::identity::inspect::inspect_file(
        &dir.path().join("absent.pem"),
        &snapshot,
        UnixTime::now(),
    )
    .unwrap_err();
    assert_eq!(missing.label(), "read");
    let junk = pki::write(dir.path(), "junk.pem", "hello");
    let error =
        pbx_edge::identity::inspect::inspect_file(&junk, &snapshot, UnixTime::now()).unwrap_err();
    assert_eq!(error.label(), "not_a_certificate");
}

/// notAfter of a DER certificate, unix seconds (read independently of the edge's code).
fn not_after(der: &[u8]) -> f64 {
    let (_, cert) = x509_parser::parse_x509_certificate(der).unwrap();
    cert.validity().not_after.timestamp() as f64
}

/// `pbx_edge_tls_server_cert_expiry_timestamp_seconds{index,file}` of a registry.
fn expiry_gauge(registry: &prometheus::Registry) -> Vec<(String, String, f64)> {
    let families = registry.gather();
    let family = families
        .iter()
        .find(|f| f.name() == pbx_edge::identity::expiry::METRIC)
        .expect("the expiry family is exposed");
    let mut series: Vec<(String, String, f64)> = family
        .get_metric()
        .iter()
        .map(|m| {
            let label = |n: &str| {
                m.get_label()
                    .iter()
                    .find(|l| l.name() == n)
                    .map(|l| l.value().to_owned())
                    .unwrap()
            };
            (label("index"), label("file"), m.get_gauge().value())
        })
        .collect();
    series.sort_by(|a, b| a.0.cmp(&b.0));
    series
}

#[test]
fn server_cert_expiry_gauge_shows_the_earliest_not_after_of_each_chain_in_force() {
    use rcgen::DnType;
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let mut config = pki::config(&pki, dir.path(), INVENTORY);
    // Certificate 0: a leaf valid until 4100 under an intermediate that ends first (rcgen's
    // default notAfter, 4096): the intermediate's end is when phones refuse the chain.
    let intermediate = pki
        .server_ca
        .intermediate(&[(DnType::CommonName, "Test server intermediate")]);
    let leaf = intermediate.device(
        &[(DnType::CommonName, "sbc.test")],
        |p| {
            p.subject_alt_names = vec![rcgen::SanType::DnsName("sbc.test".try_into().unwrap())];
            p.not_after = rcgen::date_time_ymd(4100, 1, 1);
        },
        &[&intermediate],
    );
    let cert0 = pki::write(dir.path(), "chained.pem", leaf.chain_pem());
    config.tls.certificates[0] = ServerCertConfig {
        cert: cert0.clone(),
        key: pki::write(dir.path(), "chained.key", &leaf.key_pem),
    };
    // Certificate 1: a single certificate ending in 2031.
    let other = pki.server_ca.device(
        &[(DnType::CommonName, "pbx2.test")],
        |p| p.not_after = rcgen::date_time_ymd(2031, 3, 1),
        &[],
    );
    let cert1 = pki::write(dir.path(), "pbx2.pem", other.chain_pem());
    config.tls.certificates.push(ServerCertConfig {
        cert: cert1.clone(),
        key: pki::write(dir.path(), "pbx2.key", &other.key_pem),
    });
    assert!(not_after(&leaf.chain[1]) < not_after(&leaf.chain[0]));

    let (tx, rx) =
        tokio::sync::watch::channel(std::sync::Arc::new(load(&config, dir.path()).unwrap()));
    let registry = prometheus::Registry::new();
    registry
        .register(Box::new(
            pbx_edge::identity::expiry::ExpiryCollector::new(rx).unwrap(),
        ))
        .unwrap();
    assert_eq!(
        expiry_gauge(&registry),
        [
            (
                "0".to_owned(),
                cert0.display().to_string(),
                not_after(&leaf.chain[1])
            ),
            (
                "1".to_owned(),
                cert1.display().to_string(),
                not_after(&other.chain[0])
            ),
        ]
    );

    // A reload with a renewed certificate 1 and without the chained one: the next scrape
    // shows the snapshot now in force, and no series of the certificate that left.
    let renewed = pki.server_ca.device(
        &[(DnType::CommonName, "pbx2.test")],
        |p| p.not_after = rcgen::date_time_ymd(2032, 3, 1),
        &[],
    );
    pki::write(dir.path(), "pbx2.pem", renewed.chain_pem());
    pki::write(dir.path(), "pbx2.key", &renewed.key_pem);
    config.tls.certificates.remove(0);
    tx.send_replace(std::sync::Arc::new(load(&config, dir.path()).unwrap()));
    assert_eq!(
        expiry_gauge(&registry),
        [(
            "0".to_owned(),
            cert1.display().to_string(),
            not_after(&renewed.chain[0])
        )]
    );
}
