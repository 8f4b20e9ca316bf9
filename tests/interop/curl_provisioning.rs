//! `curl` (OpenSSL) as the phone against the HTTPS provisioning gateway: a real HTTP client
//! and TLS stack presenting the dev PKI's device certificates (`--cert/--key`), offering ALPN
//! h2 + http/1.1, checking the edge's certificate against the dev server CA.

use super::process::{require, run_bounded, PeerOutput};
use crate::support::{edge, http};
use pbx_edge::config::ProvisioningConfig;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// What one curl run returned: the status (`000` when no HTTP answer came) and the body file.
struct Fetched {
    status: String,
    body: Vec<u8>,
    output: PeerOutput,
}

/// Runs curl (bounded: killed by PID after 15 s; `--max-time 10` inside) off the runtime.
async fn curl(
    addr: SocketAddr,
    ca: &Path,
    device: Option<&Path>,
    path: &str,
    extra: &[&str],
) -> Fetched {
    require("curl");
    let dir = tempfile::tempdir().expect("tempdir");
    let body_file = dir.path().join("body");
    let mut cmd = Command::new("curl");
    cmd.args(["--silent", "--show-error", "--max-time", "10", "--cacert"])
        .arg(ca)
        .args([
            "--resolve",
            &format!("sbc.test:{}:127.0.0.1", addr.port()),
            "--write-out",
            "%{http_code}",
            "--output",
        ])
        .arg(&body_file);
    if let Some(device) = device {
        cmd.arg("--cert")
            .arg(device.with_extension("crt"))
            .arg("--key")
            .arg(device.with_extension("key"));
    }
    cmd.args(extra)
        .arg(format!("https://sbc.test:{}{path}", addr.port()));
    let output = tokio::task::spawn_blocking(move || run_bounded(cmd, Duration::from_secs(15)))
        .await
        .expect("curl task");
    assert!(!output.killed, "curl did not finish: {}", output.all());
    Fetched {
        status: output.stdout.trim().to_owned(),
        body: std::fs::read(&body_file).unwrap_or_default(),
        output,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_as_the_phone_fetches_only_its_own_files() {
    let pki = edge::dev_pki();
    let dir = tempfile::tempdir().expect("tempdir");
    let root: PathBuf = dir.path().join("root");
    std::fs::create_dir_all(root.join("firmware")).expect("mkdir");
    let snom_file: Vec<u8> = (0u8..=255).cycle().take(70_000).collect();
    std::fs::write(root.join("000413a1b2c3.cfg"), &snom_file).expect("write");
    std::fs::write(
        root.join("805ec0d4e5f6.cfg"),
        b"account.1.password=yealink\n",
    )
    .expect("write");
    std::fs::write(root.join("y000000000044.cfg"), b"#!version:1.0.0.1\n").expect("write");
    std::fs::write(dir.path().join("x"), b"outside the root").expect("write");
    let mut config = edge::config_for(&pki);
    config.provisioning = Some(ProvisioningConfig {
        listen: "127.0.0.1:0".parse().expect("addr"),
        upstream: None,
        root: Some(root),
        common: vec!["/y000000000044.cfg".into()],
        upstream_timeout_secs: 5,
    });
    let e = edge::RunningEdge::start(config).await;
    let addr = e.provisioning_addr.expect("gateway bound");
    let ca = pki.pki.server_ca.clone();
    let snom = Some(pki.pki.snom_device.as_path());
    let yealink = Some(pki.pki.yealink_device.as_path());

    let own = curl(addr, &ca, snom, "/000413a1b2c3.cfg", &[]).await;
    assert_eq!(own.status, "200", "{}", own.output.all());
    assert!(
        own.body == snom_file,
        "byte-exact ({} bytes)",
        own.body.len()
    );
    let head = curl(addr, &ca, snom, "/000413a1b2c3.cfg", &["--head"]).await;
    assert_eq!(head.status, "200", "{}", head.output.all());
    let head_text = String::from_utf8_lossy(&head.body).to_ascii_lowercase();
    assert!(head_text.contains("content-length: 70000"), "{head_text}");
    let common = curl(addr, &ca, yealink, "/y000000000044.cfg", &[]).await;
    assert_eq!(common.status, "200", "{}", common.output.all());
    assert_eq!(common.body, b"#!version:1.0.0.1\n");

    let other = curl(addr, &ca, snom, "/805ec0d4e5f6.cfg", &[]).await;
    assert_eq!(other.status, "403", "{}", other.output.all());
    assert!(!String::from_utf8_lossy(&other.body).contains("password"));
    // --path-as-is: curl would otherwise resolve the dot segments itself.
    let traversal = curl(addr, &ca, snom, "/../x", &["--path-as-is"]).await;
    assert_eq!(traversal.status, "400", "{}", traversal.output.all());
    let encoded = curl(addr, &ca, snom, "/%2e%2e/x", &["--path-as-is"]).await;
    assert_eq!(encoded.status, "400", "{}", encoded.output.all());
    let post = curl(addr, &ca, snom, "/000413a1b2c3.cfg", &["--data", "x=1"]).await;
    assert_eq!(post.status, "405", "{}", post.output.all());

    // Without a device certificate there is no HTTP answer at all.
    let anonymous = curl(addr, &ca, None, "/y000000000044.cfg", &[]).await;
    assert_eq!(anonymous.status, "000", "{}", anonymous.output.all());
    assert!(anonymous.body.is_empty());

    let body = http::get(e.admin_addr, "/metrics").await.1;
    let outcome = |o: &str| {
        http::metric(
            &body,
            &format!("pbx_edge_provisioning_requests_total{{outcome=\"{o}\"}}"),
        )
    };
    assert_eq!(outcome("served"), 3.0, "{body}");
    assert_eq!(outcome("denied"), 1.0, "{body}");
    assert_eq!(outcome("bad_request"), 2.0, "{body}");
    assert_eq!(outcome("method_not_allowed"), 1.0, "{body}");
    // The refusal is counted by the edge's handshake task: poll (bounded: 5 s).
    let no_certificate =
        "pbx_edge_tls_handshake_failures_total{reason=\"no_certificate\",vendor=\"none\"}";
    let mut refusals = 0.0;
    for _ in 0..50 {
        refusals = http::metric(&http::get(e.admin_addr, "/metrics").await.1, no_certificate);
        if refusals >= 1.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(refusals, 1.0);
    e.stop().await.expect("clean shutdown");
}
