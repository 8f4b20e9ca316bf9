//! The admin API's access rule against a running edge: `/api/*` needs the bearer token of
//! `admin.api_token_file` (or a loopback listener without one); `/metrics`, `/healthz` and
//! `/readyz` stay open for scrapers and probes.

use crate::support::edge::{config_with, dev_pki, RunningEdge};
use crate::support::http;
use std::net::SocketAddr;

const TOKEN: &str = "s3cret-admin-token-0123456789";

fn refused(metrics: &str, reason: &str) -> f64 {
    http::metric(
        metrics,
        &format!("pbx_edge_admin_api_refused_total{{reason=\"{reason}\"}}"),
    )
}

#[tokio::test]
async fn a_configured_token_guards_the_api_and_leaves_scrapes_and_probes_open() {
    let pki = dev_pki();
    let token_file = pki.dir.path().join("admin-token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
    let token_path = token_file.display().to_string();
    let edge = RunningEdge::start(config_with(
        &pki,
        &[("PBX_EDGE_ADMIN__API_TOKEN_FILE", token_path.as_str())],
    ))
    .await;
    let a = edge.admin_addr;

    for path in ["/api/calls", "/api/registrations"] {
        let (status, body, challenge) = http::get_authorized(a, path, None).await;
        assert_eq!(status, 401, "{path} without a token: {body}");
        assert!(
            challenge
                .as_deref()
                .is_some_and(|c| c.starts_with("Bearer")),
            "{path}: a 401 names the Bearer scheme (RFC 6750 §3): {challenge:?}"
        );
        assert!(!body.contains("calls\"") && !body.contains("registrations\""));
        let (status, _, _) =
            http::get_authorized(a, path, Some("Bearer not-the-token-0123456789")).await;
        assert_eq!(status, 401, "{path} with a wrong token");
        let (status, body, _) =
            http::get_authorized(a, path, Some(&format!("Bearer {TOKEN}"))).await;
        assert_eq!(status, 200, "{path} with the token: {body}");
        let key = path.trim_start_matches("/api/");
        let json: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert!(json.get(key).is_some_and(|v| v.is_array()), "{body}");
    }
    // A rotated token applies at once (the file is read per request).
    std::fs::write(&token_file, "a-rotated-token-abcdefghijkl\n").unwrap();
    let (status, _, _) =
        http::get_authorized(a, "/api/calls", Some(&format!("Bearer {TOKEN}"))).await;
    assert_eq!(status, 401, "the old token no longer opens the API");
    let (status, _, _) =
        http::get_authorized(a, "/api/calls", Some("Bearer a-rotated-token-abcdefghijkl")).await;
    assert_eq!(status, 200);

    for path in ["/metrics", "/healthz", "/readyz"] {
        let (status, _, _) = http::get_authorized(a, path, None).await;
        assert_eq!(status, 200, "{path} stays open");
    }
    let (_, metrics) = http::get(a, "/metrics").await;
    assert_eq!(refused(&metrics, "missing_token"), 2.0, "{metrics}");
    assert_eq!(refused(&metrics, "wrong_token"), 3.0);
    edge.stop().await.unwrap();
}

#[tokio::test]
async fn off_loopback_without_a_token_the_api_is_disabled() {
    let pki = dev_pki();
    // Bound on every address, reached over loopback only.
    let edge = RunningEdge::start(config_with(
        &pki,
        &[("PBX_EDGE_ADMIN__LISTEN", "0.0.0.0:0")],
    ))
    .await;
    let a = SocketAddr::from(([127, 0, 0, 1], edge.admin_addr.port()));
    for path in ["/api/calls", "/api/registrations"] {
        let (status, body, _) =
            http::get_authorized(a, path, Some("Bearer anything-at-all-12345")).await;
        assert_eq!(status, 403, "{path}: {body}");
        assert!(body.contains("admin.api_token_file"), "{body}");
    }
    let (status, metrics) = http::get(a, "/metrics").await;
    assert_eq!(status, 200);
    assert_eq!(refused(&metrics, "disabled"), 2.0, "{metrics}");
    edge.stop().await.unwrap();
}

#[tokio::test]
async fn on_loopback_without_a_token_the_api_is_open() {
    let pki = dev_pki();
    let edge = RunningEdge::start(config_with(&pki, &[])).await;
    let (status, body, _) = http::get_authorized(edge.admin_addr, "/api/calls", None).await;
    assert_eq!(status, 200, "{body}");
    edge.stop().await.unwrap();
}
