//! The Grafana dashboard and the Prometheus alert rules use only metrics that exist: every
//! `pbx_edge_*` name in `grafana/pbx-edge.json` and in the `expr` of every rule in
//! `deploy/prometheus/pbx-edge-rules.yml` must be a metric family a running edge exposes on
//! `/metrics` (an alert on a misspelt metric never fires, and promtool cannot tell).
//!
//! Matching string literals in `src/` (the former check) counted a name that is merely
//! mentioned — a comment, a test, a log line — or registered on a registry nobody scrapes.
//! Prometheus exposes a labelled family only once one of its series exists, so the test
//! first takes an in-process edge on a short tour that makes each family the dashboard uses
//! appear: refused, failed, legacy and odd-OUI handshakes, a registration, a denial, a call
//! that times out toward a silent PBX, a request from a foreign source, a malformed message,
//! a closed connection, a provisioning request and an inventory reload.

mod support;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use pbx_edge::config::ProvisioningConfig;
use rustls::pki_types::ServerName;
use support::pbx::{self, Pbx};
use support::pki::{self, Pki};
use support::sip_stream::SipStream;
use support::{http, phone, vendor_edge};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn metric_names(text: &str) -> Vec<String> {
    let mut names = Vec::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while let Some(pos) = text[i..].find("pbx_edge_") {
        let start = i + pos;
        let mut end = start;
        while end < bytes.len()
            && (bytes[end].is_ascii_lowercase()
                || bytes[end] == b'_'
                || bytes[end].is_ascii_digit())
        {
            end += 1;
        }
        names.push(text[start..end].to_owned());
        i = end;
    }
    names.sort();
    names.dedup();
    names
}

/// The `pbx_edge_*` names in the `expr` of every rule of a Prometheus rules file, read as
/// YAML (`groups[].rules[].expr`): names in comments or annotations do not count.
fn rule_metric_names(rules: &str) -> (usize, Vec<String>) {
    let docs = yaml_rust2::YamlLoader::load_from_str(rules).expect("the rules file is YAML");
    let groups = docs[0]["groups"].as_vec().expect("groups");
    let mut exprs = Vec::new();
    for group in groups {
        for rule in group["rules"].as_vec().expect("rules of a group") {
            exprs.push(
                rule["expr"]
                    .as_str()
                    .expect("every rule has an expr")
                    .to_owned(),
            );
        }
    }
    let mut names: Vec<String> = exprs.iter().flat_map(|e| metric_names(e)).collect();
    names.sort();
    names.dedup();
    (exprs.len(), names)
}

/// The metric families in a Prometheus text exposition (`# TYPE <name> <kind>` lines).
fn exposed_families(exposition: &str) -> BTreeSet<String> {
    exposition
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}

/// Sum of every series of `family` (any labels).
fn family_total(exposition: &str, family: &str) -> f64 {
    exposition
        .lines()
        .filter(|l| {
            l.strip_prefix(family)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}

/// Polls `/metrics` (bounded: 15 s, the inventory is re-read every second) until `family`
/// totals at least `at_least`; returns the exposition.
async fn wait_family(admin: SocketAddr, family: &str, at_least: f64) -> String {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let body = http::get(admin, "/metrics").await.1;
        if exposed_families(&body).contains(family) && family_total(&body, family) >= at_least {
            return body;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{family} never reached {at_least}:\n{body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Reads until the peer closes (bounded: 5 s); true when it did.
async fn closed_by_edge<S: tokio::io::AsyncRead + Unpin>(s: &mut S) -> bool {
    let mut b = [0u8; 1024];
    loop {
        match tokio::time::timeout(Duration::from_secs(5), s.read(&mut b)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_metrics_are_exposed_by_a_running_edge() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dashboard = std::fs::read_to_string(root.join("grafana/pbx-edge.json")).expect("dashboard");
    let json: serde_json::Value =
        serde_json::from_str(&dashboard).expect("dashboard is valid JSON");
    assert!(json["panels"].as_array().is_some_and(|p| !p.is_empty()));
    // Grafana keys panels by id (links, edits, repeats): two panels with one id clash.
    let mut ids = BTreeSet::new();
    for panel in json["panels"].as_array().into_iter().flatten() {
        let id = panel["id"].as_u64().expect("every panel has a numeric id");
        assert!(ids.insert(id), "panel id {id} is used twice");
    }
    let used = metric_names(&dashboard);
    assert!(!used.is_empty());
    let rules_file = root.join("deploy/prometheus/pbx-edge-rules.yml");
    let (rules, used_by_rules) =
        rule_metric_names(&std::fs::read_to_string(&rules_file).expect("alert rules"));
    assert!(rules >= 9 && !used_by_rules.is_empty(), "{used_by_rules:?}");

    let pki = Pki::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let files = dir.path().join("provisioning");
    std::fs::create_dir_all(&files).expect("provisioning root");
    std::fs::write(files.join("common.cfg"), b"# common\n").expect("common file");
    let pbx = Pbx::bind().await;
    let (legacy_ca, legacy_chain, legacy_key) = pki::legacy_fixture();
    let legacy_ca = pki::write(dir.path(), "legacy-ca.pem", &legacy_ca);
    let odd_oui = "001122334455";
    let inventory = format!(
        "{}[[devices]]\nmac = \"{odd_oui}\"\nusers = [\"106\"]\n",
        pki::INVENTORY
    );
    let config = vendor_edge::config(&pki, dir.path(), &inventory, |c| {
        let snom = c.vendors.get_mut("snom").expect("snom vendor");
        snom.ca.push(legacy_ca);
        snom.legacy_crypto = true;
        c.pbx.address = pbx.addr();
        // A silent PBX times a transaction out after 64·T1 = 1.28 s.
        c.sip.t1_ms = 20;
        c.tls.max_connections_per_ip = 3;
        c.provisioning = Some(ProvisioningConfig {
            listen: "127.0.0.1:0".parse().expect("addr"),
            upstream: None,
            root: Some(files.clone()),
            common: vec!["/common.cfg".into()],
            upstream_timeout_secs: 1,
        });
    });
    let inventory_file = config.inventory.file.clone().expect("inventory file");
    let e = vendor_edge::start(config).await;
    let admin = e.admin_addr;

    // TLS: three connections hold the per-address limit, a fourth is refused; the three then
    // leave mid-handshake (failures).
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(TcpStream::connect(e.tls_addr).await.expect("connect"));
    }
    wait_family(admin, "pbx_edge_tls_connections_active", 0.0).await;
    let mut fourth = TcpStream::connect(e.tls_addr).await.expect("connect");
    assert!(closed_by_edge(&mut fourth).await, "the fourth is refused");
    wait_family(admin, "pbx_edge_tls_connections_refused_total", 1.0).await;
    for mut s in held {
        s.write_all(b"not a TLS ClientHello\r\n\r\n")
            .await
            .expect("write");
        assert!(closed_by_edge(&mut s).await);
    }
    wait_family(admin, "pbx_edge_tls_handshake_failures_total", 3.0).await;

    // A legacy (SHA-1 / RSA-1024) chain under `legacy_crypto`, a MAC outside the Polycom OUIs.
    let probe_retrying = |chain: Vec<rustls::pki_types::CertificateDer<'static>>,
                          key: rustls::pki_types::PrivateKeyDer<'static>| {
        let pki = &pki;
        let addr = e.tls_addr;
        async move {
            // The refused connections above may still count against the address limit for a
            // moment after they closed.
            for _ in 0..50 {
                if let Ok(c) =
                    vendor_edge::probe_chain(pki, addr, chain.clone(), key.clone_key()).await
                {
                    return c;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            panic!("probe not accepted");
        }
    };
    let legacy = probe_retrying(legacy_chain, legacy_key).await;
    wait_family(admin, "pbx_edge_tls_legacy_accepted_total", 1.0).await;
    drop(legacy);
    let odd = pki.polycom(odd_oui);
    let odd = probe_retrying(odd.chain.clone(), odd.key()).await;
    wait_family(admin, "pbx_edge_tls_mac_outside_ouis_total", 1.0).await;
    drop(odd);

    // SIP from the Snom (user 101): a registration, a denied one, a call toward a PBX that
    // never answers, a request from a stranger on the PBX side, a malformed message, then the
    // phone leaves.
    let snom = pki.snom(pki::SNOM_MAC);
    let snom = probe_retrying(snom.chain.clone(), snom.key()).await;
    let mut ph = SipStream::new(snom.0);
    ph.send(&phone::register("101", 5099, 1, "dash-reg-1", ""))
        .await;
    let (reg, from) = pbx.recv().await.expect("the PBX gets the REGISTER");
    let uri = pbx::contact_uri(&reg).expect("edge Contact");
    pbx.send(from, &pbx::register_ok(&reg, &uri, 600)).await;
    assert_eq!(ph.recv().await.and_then(|m| m.status()), Some(200));
    ph.send(&phone::register("102", 5099, 1, "dash-reg-2", ""))
        .await;
    assert_eq!(ph.recv().await.and_then(|m| m.status()), Some(403));
    wait_family(admin, "pbx_edge_sip_denied_total", 1.0).await;

    let invite = "INVITE sip:200@sbc.test SIP/2.0\r\nVia: SIP/2.0/TLS 127.0.0.1:5099;branch=z9hG4bK-dash-inv;rport\r\nFrom: <sip:101@sbc.test>;tag=dash1\r\nTo: <sip:200@sbc.test>\r\nCall-ID: dash-call-1\r\nCSeq: 1 INVITE\r\nMax-Forwards: 70\r\nContact: <sip:101@127.0.0.1:5099;transport=tls>\r\nContent-Length: 0\r\n\r\n";
    ph.send(invite).await;
    pbx.recv().await.expect("the PBX gets the INVITE");
    wait_family(admin, "pbx_edge_calls_started_total", 1.0).await;
    wait_family(admin, "pbx_edge_sip_transaction_timeouts_total", 1.0).await;
    wait_family(admin, "pbx_edge_calls_total", 1.0).await;
    // A request on the edge's PBX socket from an address that is not the PBX.
    let stranger = tokio::net::UdpSocket::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let options = format!("OPTIONS sip:101@{edge} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bK-dash-stranger\r\nFrom: <sip:x@{me}>;tag=s1\r\nTo: <sip:101@{edge}>\r\nCall-ID: dash-stranger\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n", edge = e.pbx_local, me = stranger.local_addr().expect("addr"));
    stranger
        .send_to(options.as_bytes(), e.pbx_local)
        .await
        .expect("send");
    wait_family(admin, "pbx_edge_sip_dropped_total", 1.0).await;
    ph.send("NOT SIP AT ALL\r\nVia: nowhere\r\n\r\n").await;
    wait_family(admin, "pbx_edge_sip_malformed_total", 1.0).await;
    drop(ph);
    wait_family(admin, "pbx_edge_sip_connections_closed_total", 1.0).await;
    wait_family(admin, "pbx_edge_sip_requests_total", 1.0).await;
    wait_family(admin, "pbx_edge_sip_responses_total", 1.0).await;

    // Provisioning: one HTTPS request with the Snom's certificate.
    let snom = pki.snom(pki::SNOM_MAC);
    let tls = pki::client_config(&pki, Some((snom.chain.clone(), snom.key())));
    let handshake = async {
        let tcp = TcpStream::connect(e.provisioning_addr.expect("provisioning listener")).await?;
        tokio_rustls::TlsConnector::from(Arc::clone(&tls))
            .connect(ServerName::try_from("sbc.test").expect("name"), tcp)
            .await
    };
    let mut https = tokio::time::timeout(support::tls_client::HANDSHAKE_BOUND, handshake)
        .await
        .expect("provisioning handshake within the bound")
        .expect("provisioning handshake");
    https
        .write_all(b"GET /common.cfg HTTP/1.1\r\nHost: sbc.test\r\nConnection: close\r\n\r\n")
        .await
        .expect("request");
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), https.read_to_end(&mut answer)).await;
    assert!(
        answer.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
    wait_family(admin, "pbx_edge_provisioning_handshakes_total", 1.0).await;
    wait_family(admin, "pbx_edge_provisioning_requests_total", 1.0).await;
    wait_family(admin, "pbx_edge_provisioning_connections_active", 0.0).await;

    // An inventory reload (the file changed on disk).
    vendor_edge::replace_file(&inventory_file, &format!("# reloaded\n{inventory}"));
    wait_family(admin, "pbx_edge_identity_reloads_total", 1.0).await;

    let (status, exposition) = http::get(admin, "/metrics").await;
    assert_eq!(status, 200);
    let families = exposed_families(&exposition);
    let missing: Vec<&String> = used
        .iter()
        .filter(|name| {
            // Histograms are queried through their `_bucket` series.
            let family = name.strip_suffix("_bucket").unwrap_or(name);
            !families.contains(family)
        })
        .collect();
    assert!(
        missing.is_empty(),
        "grafana/pbx-edge.json uses {missing:?}, which a running edge does not expose:\n{exposition}"
    );
    let missing: Vec<&String> = used_by_rules
        .iter()
        .filter(|name| !families.contains(name.strip_suffix("_bucket").unwrap_or(name)))
        .collect();
    assert!(
        missing.is_empty(),
        "{} uses {missing:?}, which a running edge does not expose:\n{exposition}",
        rules_file.display()
    );
    e.stop().await.expect("clean shutdown");
}
