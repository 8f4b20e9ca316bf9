//! The phone TLS listener and the admin port of an in-process edge.

use crate::support::{edge, http, pki, tls_client};
use std::time::Duration;
use tokio::io::AsyncReadExt;

/// Polls /metrics until `pred` holds (bounded: 5 s), returns the last body.
async fn metrics_until(admin: std::net::SocketAddr, pred: impl Fn(&str) -> bool) -> String {
    let mut body = String::new();
    for _ in 0..50 {
        body = http::get(admin, "/metrics").await.1;
        if pred(&body) {
            return body;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_endpoints_answer() {
    let pki = edge::dev_pki();
    let e = edge::RunningEdge::start(edge::config_for(&pki)).await;
    assert_eq!(http::get(e.admin_addr, "/healthz").await.0, 200);
    let (status, _) = http::get(e.admin_addr, "/readyz").await;
    assert_eq!(status, 200);
    let (status, body) = http::get(e.admin_addr, "/metrics").await;
    assert_eq!(status, 200);
    assert_eq!(
        http::metric(&body, "pbx_edge_build_info{version=\"0.1.0\"}"),
        1.0,
        "{body}"
    );
    assert!(body.contains("process_cpu_seconds_total"), "{body}");
    assert_eq!(http::get(e.admin_addr, "/nothing").await.0, 404);
    e.stop().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_certificate_from_a_configured_ca_is_accepted() {
    let pki = edge::dev_pki();
    let e = edge::RunningEdge::start(edge::config_for(&pki)).await;
    let cfg = tls_client::client_config(&pki.pki.server_ca, Some(&pki.pki.snom_device));
    let _stream = tls_client::connect(e.tls_addr, "sbc.test", cfg)
        .await
        .expect("handshake completes");
    let body = metrics_until(e.admin_addr, |b| {
        http::metric(b, "pbx_edge_tls_handshakes_total") >= 1.0
    })
    .await;
    assert_eq!(http::metric(&body, "pbx_edge_tls_handshakes_total"), 1.0);
    assert_eq!(http::metric(&body, "pbx_edge_tls_connections_active"), 1.0);
    e.stop()
        .await
        .expect("clean shutdown with a connection open");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_or_unknown_device_certificate_is_refused_and_counted() {
    let pki = edge::dev_pki();
    let other = tempfile::tempdir().unwrap();
    let unknown_device = other.path().join("unknown-device.pem");
    pki::write_device_from_unknown_ca(&unknown_device, "000413FFFFFF");
    let e = edge::RunningEdge::start(edge::config_for(&pki)).await;

    let no_cert = tls_client::client_config(&pki.pki.server_ca, None);
    if let Ok(mut s) = tls_client::connect(e.tls_addr, "sbc.test", no_cert).await {
        let mut b = [0u8; 16];
        let r = tokio::time::timeout(Duration::from_secs(5), s.read(&mut b))
            .await
            .expect("refusal arrives");
        assert!(
            matches!(r, Err(_) | Ok(0)),
            "connection without a certificate must be closed"
        );
    }
    let unknown = tls_client::client_config(&pki.pki.server_ca, Some(&unknown_device));
    if let Ok(mut s) = tls_client::connect(e.tls_addr, "sbc.test", unknown).await {
        let mut b = [0u8; 16];
        let r = tokio::time::timeout(Duration::from_secs(5), s.read(&mut b))
            .await
            .expect("refusal arrives");
        assert!(matches!(r, Err(_) | Ok(0)), "unknown CA must be refused");
    }
    let no_cert_label =
        "pbx_edge_tls_handshake_failures_total{reason=\"no_certificate\",vendor=\"none\"}";
    let unknown_label =
        "pbx_edge_tls_handshake_failures_total{reason=\"issuer_unknown\",vendor=\"unknown\"}";
    let body = metrics_until(e.admin_addr, |b| {
        http::metric(b, no_cert_label) >= 1.0 && http::metric(b, unknown_label) >= 1.0
    })
    .await;
    assert_eq!(http::metric(&body, no_cert_label), 1.0, "{body}");
    assert_eq!(http::metric(&body, unknown_label), 1.0, "{body}");
    assert_eq!(http::metric(&body, "pbx_edge_tls_handshakes_total"), 0.0);
    e.stop().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_checking_the_server_name_connects_only_to_the_configured_name() {
    let pki = edge::dev_pki();
    let e = edge::RunningEdge::start(edge::config_for(&pki)).await;
    let cfg = tls_client::client_config(&pki.pki.server_ca, Some(&pki.pki.snom_device));
    tls_client::connect(e.tls_addr, "sbc.test", cfg.clone())
        .await
        .expect("configured name verifies");
    let err = tls_client::connect(e.tls_addr, "other.test", cfg)
        .await
        .expect_err("a name the certificate does not carry is refused by the phone");
    assert!(err.to_string().contains("certificate"), "{err}");
    e.stop().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_port_closes_after_shutdown() {
    let pki = edge::dev_pki();
    let e = edge::RunningEdge::start(edge::config_for(&pki)).await;
    let admin = e.admin_addr;
    assert_eq!(http::get(admin, "/readyz").await.0, 200);
    e.stop().await.expect("clean shutdown");
    // After shutdown the admin port is closed: nothing answers any more.
    let closed = tokio::net::TcpStream::connect(admin).await;
    assert!(closed.is_err(), "admin port must be closed after shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_edge_picks_the_cipher_suite_not_the_phone() {
    use rustls::crypto::ring::{cipher_suite, default_provider};
    let pki = edge::dev_pki();
    let e = edge::RunningEdge::start(edge::config_for(&pki)).await;
    // A phone that lists ChaCha20 before AES-256-GCM, in TLS 1.3 and in TLS 1.2.
    for (version, suites) in [
        (
            &rustls::version::TLS13,
            vec![
                cipher_suite::TLS13_CHACHA20_POLY1305_SHA256,
                cipher_suite::TLS13_AES_256_GCM_SHA384,
            ],
        ),
        (
            &rustls::version::TLS12,
            vec![
                cipher_suite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
                cipher_suite::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
                cipher_suite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
                cipher_suite::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
            ],
        ),
    ] {
        let provider = rustls::crypto::CryptoProvider {
            cipher_suites: suites,
            ..default_provider()
        };
        let mut roots = rustls::RootCertStore::empty();
        for c in pbx_edge::config::files::read_certificates(&pki.pki.server_ca).unwrap() {
            roots.add(c).unwrap();
        }
        let device = &pki.pki.snom_device;
        let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(provider))
            .with_protocol_versions(&[version])
            .unwrap()
            .with_root_certificates(roots)
            .with_client_auth_cert(
                pbx_edge::config::files::read_certificates(device).unwrap(),
                pbx_edge::config::files::read_private_key(device).unwrap(),
            )
            .unwrap();
        let s = tls_client::connect(e.tls_addr, "sbc.test", std::sync::Arc::new(config))
            .await
            .expect("handshake");
        let suite = s.get_ref().1.negotiated_cipher_suite().expect("suite");
        assert!(
            format!("{:?}", suite.suite()).contains("AES_256_GCM"),
            "{version:?}: the edge's order (AES-256-GCM first) must win over the phone's, got {:?}",
            suite.suite()
        );
    }
    e.stop().await.expect("clean shutdown");
}
