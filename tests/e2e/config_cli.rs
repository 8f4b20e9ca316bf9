//! The `pbx-edge` binary: check-config, exit codes, dev-pki, the development default and
//! graceful shutdown on SIGTERM. Every process started here is stopped by its PID.

use crate::support::{edge, http};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub(super) fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_pbx-edge"));
    // The test must not inherit overrides from the environment it runs in.
    for (k, _) in std::env::vars() {
        if k.starts_with("PBX_EDGE_") {
            c.env_remove(k);
        }
    }
    c.env("RUST_LOG", "info");
    c
}

fn run(args: &[&str]) -> Output {
    bin().args(args).output().expect("binary runs")
}

fn repo_file(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

/// A started `pbx-edge run`, killed by PID on drop if still running.
pub(super) struct Running {
    pub(super) child: Child,
    pub(super) admin: std::net::SocketAddr,
    pub(super) tls: std::net::SocketAddr,
    /// Every line the process wrote to stderr (its log), as read so far.
    log: Arc<Mutex<Vec<String>>>,
}

/// The `(tls, admin)` addresses from the "pbx-edge ready" log line, text or JSON.
fn ready_addresses(line: &str) -> Option<(String, String)> {
    if !line.contains("pbx-edge ready") {
        return None;
    }
    if let Ok(v) = serde_json::from_str::<serde_json::Value>(line) {
        let field = |k: &str| v[k].as_str().map(str::to_owned);
        return Some((field("tls")?, field("admin")?));
    }
    let field = |k: &str| {
        let rest = line.split(&format!(" {k}=")).nth(1)?;
        Some(rest.split_whitespace().next()?.to_owned())
    };
    Some((field("tls")?, field("admin")?))
}

impl Running {
    /// Starts the binary and waits (bounded) for its "pbx-edge ready" log line.
    fn start(mut cmd: Command) -> Self {
        let mut child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn pbx-edge");
        let stderr = child.stderr.take().expect("piped stderr");
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let lines = Arc::clone(&log);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(addrs) = ready_addresses(&line) {
                    let _ = tx.send(addrs);
                }
                lines.lock().unwrap().push(line);
            }
        });
        let (tls, admin) = match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(a) => a,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "pbx-edge did not become ready within 20 s:\n{}",
                    log.lock().unwrap().join("\n")
                );
            }
        };
        Self {
            child,
            admin: admin.parse().expect("admin address in the ready line"),
            tls: tls.parse().expect("tls address in the ready line"),
            log,
        }
    }

    /// Sends `signal` (a `kill` name) to this PID.
    pub(super) fn signal(&self, signal: &str) {
        let pid = self.child.id().to_string();
        let ok = Command::new("kill")
            .args([&format!("-{signal}"), &pid])
            .status();
        assert!(
            ok.map(|s| s.success()).unwrap_or(false),
            "kill -{signal} {pid}"
        );
    }

    /// The exit status, waiting up to 15 s.
    pub(super) fn wait_exit(&mut self) -> std::process::ExitStatus {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "pbx-edge did not exit within 15 s of SIGTERM:\n{}",
                self.log().join("\n")
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn terminate(mut self) -> std::process::ExitStatus {
        self.signal("TERM");
        self.wait_exit()
    }

    /// The log lines read so far.
    pub(super) fn log(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn shipped_example_config_passes_check_config() {
    let out = run(&[
        "check-config",
        "--config",
        repo_file("config/pbx-edge.toml").to_str().unwrap(),
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("configuration OK"), "{stdout}");
    // The public example certificate is flagged.
    assert!(stdout.contains("EXAMPLE certificate"), "{stdout}");
}

#[test]
fn check_config_names_every_problem_and_exits_2() {
    let pki = edge::dev_pki();
    let dir = pki.dir.path();
    let key = rcgen::KeyPair::generate().unwrap();
    let wild = rcgen::CertificateParams::new(vec!["*.sbc.test".to_owned()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    std::fs::write(dir.join("wild.crt"), wild.pem()).unwrap();
    std::fs::write(dir.join("wild.key"), key.serialize_pem()).unwrap();
    let cfg = dir.join("broken.toml");
    std::fs::write(
        &cfg,
        r#"
[[tls.certificates]]
cert = "missing.crt"
key = "sbc.test.key"
[[tls.certificates]]
cert = "wild.crt"
key = "wild.key"
[vendors.snom]
ca = ["snom-ca.crt"]
[inventory]
file = "inventory.toml"
[media]
port_min = 40000
port_max = 30000
"#,
    )
    .unwrap();
    let out = run(&["check-config", "--config", cfg.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    // The wildcard does not cover sip.domain = "sbc.test" either: phones would refuse it.
    assert!(stderr.contains("4 problem(s)"), "{stderr}");
    assert!(
        stderr.contains("sip.domain") && stderr.contains("\"sbc.test\" in its subjectAltName"),
        "{stderr}"
    );
    assert!(
        stderr.contains("tls.certificates[0].cert") && stderr.contains("missing.crt"),
        "{stderr}"
    );
    assert!(
        stderr.contains("tls.certificates[1].cert") && stderr.contains("wildcard"),
        "{stderr}"
    );
    assert!(
        stderr.contains("media.port_min") && stderr.contains("reversed"),
        "{stderr}"
    );
    assert!(
        stderr.contains("broken.toml"),
        "the file is named: {stderr}"
    );
}

#[test]
fn unknown_key_and_bad_usage_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("typo.toml");
    std::fs::write(&cfg, "[pbx]\nadress = \"127.0.0.1:5060\"\n").unwrap();
    let out = run(&["check-config", "--config", cfg.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("adress"));
    assert_eq!(run(&["--no-such-flag"]).status.code(), Some(2));
    assert_eq!(
        run(&["dev-pki"]).status.code(),
        Some(2),
        "--out is required"
    );
    let missing = run(&["check-config", "--config", "/nonexistent/pbx-edge.toml"]);
    assert_eq!(missing.status.code(), Some(2));
}

#[test]
fn environment_overrides_the_file_in_check_config() {
    let out = bin()
        .args([
            "check-config",
            "--config",
            repo_file("config/pbx-edge.toml").to_str().unwrap(),
        ])
        .env("PBX_EDGE_MEDIA__PORT_MIN", "40001")
        .env("PBX_EDGE_MEDIA__PORT_MAX", "40000")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("port_min 40001 > port_max 40000"));
}

#[test]
fn provisioning_is_switched_on_and_checked_through_the_environment() {
    let check = |upstream: &str| {
        bin()
            .args([
                "check-config",
                "--config",
                repo_file("config/pbx-edge.toml").to_str().unwrap(),
            ])
            .env("PBX_EDGE_PROVISIONING__LISTEN", "0.0.0.0:8443")
            .env("PBX_EDGE_PROVISIONING__UPSTREAM", upstream)
            .output()
            .unwrap()
    };
    let out = check("http://127.0.0.1:8080");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(
        stdout.contains("provisioning: https://0.0.0.0:8443  upstream http://127.0.0.1:8080"),
        "{stdout}"
    );
    let out = check("https://127.0.0.1:8080");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("provisioning.upstream") && stderr.contains("only an http:// upstream"),
        "{stderr}"
    );
}

#[test]
fn run_with_an_invalid_config_exits_2_and_a_busy_port_exits_1() {
    let pki = edge::dev_pki();
    let cfg = pki.pki.config.to_str().unwrap().to_owned();
    let out = bin()
        .args(["run", "--config", &cfg])
        .env("PBX_EDGE_MEDIA__PORT_MAX", "1")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));

    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let out = bin()
        .args(["run", "--config", &cfg])
        .env(
            "PBX_EDGE_TLS__LISTEN",
            busy.local_addr().unwrap().to_string(),
        )
        .env("PBX_EDGE_ADMIN__LISTEN", "127.0.0.1:0")
        .env("PBX_EDGE_PBX__LISTEN", "127.0.0.1:0")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("tls.listen"), "{stderr}");
}

#[test]
fn sigterm_stops_the_proxy_with_exit_0() {
    let pki = edge::dev_pki();
    let mut cmd = bin();
    cmd.args(["run", "--config", pki.pki.config.to_str().unwrap()])
        .env("PBX_EDGE_TLS__LISTEN", "127.0.0.1:0")
        .env("PBX_EDGE_ADMIN__LISTEN", "127.0.0.1:0")
        .env("PBX_EDGE_PBX__LISTEN", "127.0.0.1:0");
    let running = Running::start(cmd);
    let rt = tokio::runtime::Runtime::new().unwrap();
    assert_eq!(rt.block_on(http::get(running.admin, "/readyz")).0, 200);
    let status = running.terminate();
    assert_eq!(status.code(), Some(0));
}

#[test]
fn no_config_runs_the_development_default_and_generates_its_pki() {
    let state = tempfile::tempdir().unwrap();
    let mut cmd = bin();
    cmd.args(["--dev-state-dir", state.path().to_str().unwrap()])
        .env("PBX_EDGE_TLS__LISTEN", "127.0.0.1:0")
        .env("PBX_EDGE_ADMIN__LISTEN", "127.0.0.1:0")
        .env("PBX_EDGE_PBX__LISTEN", "127.0.0.1:0");
    let running = Running::start(cmd);
    let dir = state.path().join("dev-pki");
    for f in [
        "server-ca.crt",
        "sbc.test-chain.crt",
        "sbc.test.key",
        "snom-000413A1B2C3.pem",
        "inventory.toml",
    ] {
        assert!(dir.join(f).is_file(), "{f} generated");
    }
    assert_eq!(running.terminate().code(), Some(0));
    // check-config on the same state directory validates the embedded default.
    let out = run(&[
        "check-config",
        "--dev-state-dir",
        state.path().to_str().unwrap(),
    ]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("embedded development default"));
}

#[test]
fn dev_pki_writes_the_files_peers_expect() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(&[
        "dev-pki",
        "--out",
        dir.path().to_str().unwrap(),
        "--name",
        "edge.test",
    ]);
    assert_eq!(out.status.code(), Some(0));
    for f in [
        "server-ca.crt",
        "edge.test-chain.crt",
        "edge.test.key",
        "vendor-cas.crt",
        "snom-000413A1B2C3.pem",
        "yealink-805EC0D4E5F6.pem",
        "pbx-edge.toml",
    ] {
        assert!(dir.path().join(f).is_file(), "{f}");
    }
}

#[test]
fn inspect_cert_explains_accepted_and_refused_devices() {
    let pki = edge::dev_pki();
    let cfg = pki.pki.config.to_str().unwrap().to_owned();
    let ok = run(&[
        "inspect-cert",
        pki.pki.snom_device.to_str().unwrap(),
        "--config",
        &cfg,
    ]);
    let text = String::from_utf8_lossy(&ok.stdout);
    assert_eq!(
        ok.status.code(),
        Some(0),
        "{text}{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(
        text.to_ascii_lowercase().contains("00:04:13:a1:b2:c3"),
        "the MAC is shown: {text}"
    );
    // A device of another development PKI: its CA is not configured here.
    let other = edge::dev_pki();
    let refused = run(&[
        "inspect-cert",
        other.pki.snom_device.to_str().unwrap(),
        "--config",
        &cfg,
    ]);
    assert_eq!(
        refused.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&refused.stdout)
    );
    let missing = run(&["inspect-cert", "/nonexistent/device.pem", "--config", &cfg]);
    assert_eq!(missing.status.code(), Some(2));
}

/// A server certificate issued under a fresh root → intermediate for `names`, valid from a day
/// ago for `days` more days (negative: expired). Returns (root, intermediate, leaf) PEMs and
/// the leaf's key.
fn server_pki(names: &[&str], days: i64) -> (String, String, String, String) {
    let ca = |cn: &str| {
        let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name.push(rcgen::DnType::CommonName, cn);
        p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        (p, rcgen::KeyPair::generate().unwrap())
    };
    let (root_p, root_k) = ca("Example Private Root");
    let root = root_p.self_signed(&root_k).unwrap();
    let root_issuer = rcgen::Issuer::new(root_p, root_k);
    let (int_p, int_k) = ca("Example Private Intermediate");
    let int = int_p.signed_by(&int_k, &root_issuer).unwrap();
    let int_issuer = rcgen::Issuer::new(int_p, int_k);
    let mut leaf_p =
        rcgen::CertificateParams::new(names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>())
            .unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let ymd = |secs: i64| {
        // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
        let z = secs.div_euclid(86_400) + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z - era * 146_097;
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let d = (doy - (153 * mp + 2) / 5 + 1) as u8;
        let m = if mp < 10 { mp + 3 } else { mp - 9 } as u8;
        let y = (yoe + era * 400 + i64::from(m <= 2)) as i32;
        rcgen::date_time_ymd(y, m, d)
    };
    leaf_p.not_before = ymd(now - 2 * 86_400);
    leaf_p.not_after = ymd(now + days * 86_400);
    let leaf_k = rcgen::KeyPair::generate().unwrap();
    let leaf = leaf_p.signed_by(&leaf_k, &int_issuer).unwrap();
    (root.pem(), int.pem(), leaf.pem(), leaf_k.serialize_pem())
}

/// check-config with the development PKI's config, its server certificate replaced by
/// `chain_pem`/`key_pem` and `sip.domain` set.
fn check_server_cert(pki: &edge::TestPki, chain_pem: &str, key_pem: &str, domain: &str) -> Output {
    let dir = pki.dir.path();
    std::fs::write(dir.join("edge-chain.crt"), chain_pem).unwrap();
    std::fs::write(dir.join("edge.key"), key_pem).unwrap();
    let text = std::fs::read_to_string(&pki.pki.config)
        .unwrap()
        .replace("sbc.test-chain.crt", "edge-chain.crt")
        .replace("sbc.test.key", "edge.key")
        .replace("domain = \"sbc.test\"", &format!("domain = \"{domain}\""));
    let cfg = dir.join("server-cert.toml");
    std::fs::write(&cfg, text).unwrap();
    run(&["check-config", "--config", cfg.to_str().unwrap()])
}

/// Issue 12: the server certificate checked the way a phone checks it. Warnings (exit 0):
/// expiring within 30 days, an intermediate missing from the file, a private CA the phones
/// must be given. Problems (exit 2): the name phones use is not in the SAN, expired.
#[test]
fn check_config_judges_the_server_certificate_as_phones_do() {
    let pki = edge::dev_pki();

    // Expiring in 10 days and the intermediate missing from the file: warnings, exit 0.
    let (_, _, leaf, key) = server_pki(&["sbc.example.com"], 10);
    let out = check_server_cert(&pki, &leaf, &key, "sbc.example.com");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let warning = |needle: &str| {
        stdout
            .lines()
            .any(|l| l.starts_with("warning: tls.certificates[0].cert") && l.contains(needle))
    };
    assert!(
        warning("expires in 9 day(s)") || warning("expires in 10 day(s)"),
        "{stdout}"
    );
    assert!(warning("CN=Example Private Intermediate"), "{stdout}");
    assert!(warning("append it to the file"), "{stdout}");
    assert!(warning("deploy/phones/README.md"), "{stdout}");

    // The full chain up to the private root: no missing intermediate, but the phones need
    // the private CA.
    let (root, int, leaf, key) = server_pki(&["sbc.example.com"], 365);
    let chain = format!("{leaf}{int}{root}");
    let out = check_server_cert(&pki, &chain, &key, "sbc.example.com");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(warning_in(&stdout, "chains to the private CA"), "{stdout}");
    assert!(warning_in(&stdout, "CN=Example Private Root"), "{stdout}");
    assert!(!warning_in(&stdout, "append it"), "{stdout}");
    assert!(!warning_in(&stdout, "expires in"), "{stdout}");

    // The name phones use is not in the SAN: exit 2.
    let out = check_server_cert(&pki, &chain, &key, "pbx.example.com");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("sip.domain")
            && stderr.contains("\"pbx.example.com\" in its subjectAltName"),
        "{stderr}"
    );

    // Expired: exit 2.
    let (root, int, leaf, key) = server_pki(&["sbc.example.com"], -1);
    let out = check_server_cert(&pki, &format!("{leaf}{int}{root}"), &key, "sbc.example.com");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("tls.certificates[0].cert") && stderr.contains("expired"),
        "{stderr}"
    );
}

fn warning_in(stdout: &str, needle: &str) -> bool {
    stdout
        .lines()
        .any(|l| l.starts_with("warning: tls.certificates[0].cert") && l.contains(needle))
}

/// `pbx-edge run` on the dev PKI's config, every listener on an ephemeral loopback port, plus
/// `extra` environment overrides.
pub(super) fn run_dev(pki: &edge::TestPki, extra: &[(&str, &str)]) -> Running {
    let mut cmd = bin();
    cmd.args(["run", "--config", pki.pki.config.to_str().unwrap()])
        .env("PBX_EDGE_TLS__LISTEN", "127.0.0.1:0")
        .env("PBX_EDGE_ADMIN__LISTEN", "127.0.0.1:0")
        .env("PBX_EDGE_PBX__LISTEN", "127.0.0.1:0");
    for (k, v) in extra {
        cmd.env(k, v);
    }
    Running::start(cmd)
}

/// README "Command line": on SIGTERM the listeners close at once, `/readyz` turns 503, work
/// in flight gets `shutdown.drain_timeout_secs` to finish, and the process exits 0. The work in
/// flight is an OPTIONS the PBX has received but not yet answered when the signal arrives.
#[test]
fn sigterm_turns_readyz_503_at_once_lets_work_in_flight_finish_and_exits_0() {
    let pki = edge::dev_pki();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let pbx = rt.block_on(crate::support::pbx::Pbx::bind());
    let pbx_addr = pbx.addr().to_string();
    let mut running = run_dev(
        &pki,
        &[
            ("PBX_EDGE_PBX__ADDRESS", pbx_addr.as_str()),
            ("PBX_EDGE_SHUTDOWN__DRAIN_TIMEOUT_SECS", "10"),
            ("PBX_EDGE_SIP__T4_MS", "100"),
        ],
    );
    let (admin, tls) = (running.admin, running.tls);
    rt.block_on(async {
        assert_eq!(http::get(admin, "/readyz").await.0, 200);
        let cfg = crate::support::tls_client::client_config(
            &pki.pki.server_ca,
            Some(&pki.pki.snom_device),
        );
        let mut phone = crate::support::phone::Phone::new(
            crate::support::tls_client::connect(tls, "sbc.test", cfg)
                .await
                .expect("handshake"),
        );
        phone.send("OPTIONS sip:200@sbc.test SIP/2.0\r\nVia: SIP/2.0/TLS 127.0.0.1:5099;branch=z9hG4bK-drain1\r\nFrom: <sip:101@sbc.test>;tag=drain\r\nTo: <sip:200@sbc.test>\r\nCall-ID: drain-1\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n").await;
        let (req, from) = pbx.recv().await.expect("the PBX gets the OPTIONS");

        running.signal("TERM");
        // Draining: the process is still up (the OPTIONS is unanswered), and says so.
        let mut ready = 200;
        for _ in 0..100 {
            ready = http::get(admin, "/readyz").await.0;
            if ready == 503 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(ready, 503, "/readyz turns 503 on SIGTERM");
        assert!(
            running.child.try_wait().expect("wait").is_none(),
            "still draining while work is in flight"
        );
        // The listener no longer takes connections.
        let again = tokio::net::TcpStream::connect(tls).await;
        if let Ok(mut s) = again {
            use tokio::io::AsyncReadExt;
            let mut b = [0u8; 16];
            let closed = matches!(
                tokio::time::timeout(Duration::from_secs(5), s.read(&mut b)).await,
                Ok(Ok(0)) | Ok(Err(_))
            );
            assert!(closed, "a connection after SIGTERM is not served");
        }

        // The work in flight finishes: the PBX's answer still reaches the phone.
        pbx.send(
            from,
            &crate::support::pbx::response(&req, 200, "OK", ""),
        )
        .await;
        let answer = phone.recv().await.expect("the answer after SIGTERM");
        assert_eq!(answer.status(), Some(200));
        assert_eq!(answer.call_id().unwrap(), "drain-1");
    });
    let status = running.wait_exit();
    assert_eq!(status.code(), Some(0), "{}", running.log().join("\n"));
}

/// README: the identity files reload on SIGHUP. No file changes here, so only the signal can
/// have caused the reload the edge counts and logs.
#[test]
fn sighup_reloads_the_identity() {
    let pki = edge::dev_pki();
    let running = run_dev(&pki, &[]);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let ok = "pbx_edge_identity_reloads_total{result=\"ok\"}";
    let metrics = rt.block_on(http::get(running.admin, "/metrics")).1;
    assert_eq!(http::metric(&metrics, ok), 0.0, "{metrics}");
    running.signal("HUP");
    let mut reloaded = 0.0;
    for _ in 0..100 {
        reloaded = http::metric(&rt.block_on(http::get(running.admin, "/metrics")).1, ok);
        if reloaded >= 1.0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(reloaded, 1.0, "{}", running.log().join("\n"));
    assert!(
        running
            .log()
            .iter()
            .any(|l| l.contains("identity reloaded") && l.contains("SIGHUP")),
        "{}",
        running.log().join("\n")
    );
    assert_eq!(running.terminate().code(), Some(0));
}

/// README: `log.format = "json"` writes one JSON object per line (for log shippers).
#[test]
fn json_log_format_writes_one_object_per_line() {
    let pki = edge::dev_pki();
    let running = run_dev(&pki, &[("PBX_EDGE_LOG__FORMAT", "json")]);
    let log = running.log.clone();
    assert_eq!(running.terminate().code(), Some(0));
    // The reader thread has seen EOF once the process exited; give it a bounded moment.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !log
        .lock()
        .unwrap()
        .iter()
        .any(|l| l.contains("pbx-edge stopped"))
    {
        assert!(Instant::now() < deadline, "no final log line");
        std::thread::sleep(Duration::from_millis(20));
    }
    let lines = log.lock().unwrap().clone();
    assert!(lines.len() >= 2, "{lines:?}");
    for line in &lines {
        let v: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not one JSON object per line ({e}): {line:?}"));
        assert!(v.is_object(), "{line}");
        assert!(
            v["level"].is_string() && v["timestamp"].is_string(),
            "{line}"
        );
    }
    assert!(
        lines
            .iter()
            .any(|l| l.contains("\"message\":\"pbx-edge ready\"")),
        "{lines:?}"
    );
}
