//! SIPp as the PBX over TCP (`sipp -t t1`): a TLS phone registers through the edge
//! (`pbx.transport = "tcp"`) to a SIPp registrar, which then qualifies the edge Contact on
//! the edge's connection; a second SIPp opens its own connection to `pbx.listen` and
//! qualifies the phone by AOR. Every SIPp run is bounded (-m 1, -timeout, and a kill by PID).

use crate::support::edge::{self, RunningEdge, TestPki};
use crate::support::phone::{self, Phone};
use crate::support::tls_client;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

fn scenario(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/interop/scenarios")
        .join(name)
}

/// One SIPp process over TCP, logging into its own temporary directory.
struct TcpSipp {
    child: Child,
    dir: tempfile::TempDir,
}

impl TcpSipp {
    /// `sipp -sf <scenario> -i 127.0.0.1 -p <port> -t t1 -m 1 -timeout 30s <extra>`.
    fn start(scenario_name: &str, port: u16, extra: &[&str]) -> Self {
        crate::interop::process::require("sipp");
        let dir = tempfile::tempdir().expect("sipp tempdir");
        let out = std::fs::File::create(dir.path().join("stdout.log")).expect("sipp log");
        let err = out.try_clone().expect("sipp log");
        let child = Command::new("sipp")
            .current_dir(dir.path())
            .arg("-sf")
            .arg(scenario(scenario_name))
            .args(["-i", "127.0.0.1", "-p", &port.to_string(), "-t", "t1"])
            .args(["-m", "1", "-timeout", "30s", "-timeout_error", "-nostdin"])
            .args(["-trace_err", "-trace_msg", "-trace_logs"])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .expect("sipp starts");
        Self { child, dir }
    }

    /// Waits (bounded) until SIPp listens on TCP `port` (read from /proc/net/tcp).
    async fn wait_listening(&mut self, port: u16) {
        let needle = format!(":{port:04X} ");
        for _ in 0..100 {
            if let Some(status) = self.child.try_wait().expect("wait on sipp") {
                panic!("sipp exited at start ({status}): {}", self.output());
            }
            let table = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
            // Columns: sl local_address rem_address st ...; st 0A = LISTEN.
            if table.lines().any(|l| {
                let cols: Vec<&str> = l.split_whitespace().collect();
                cols.get(1)
                    .is_some_and(|a| format!("{a} ").ends_with(&needle))
                    && cols.get(3) == Some(&"0A")
            }) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("sipp did not listen on tcp {port}: {}", self.output());
    }

    /// Waits up to `limit` for SIPp to end by itself; kills it by PID after that.
    async fn wait(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = tokio::time::Instant::now() + limit;
        while tokio::time::Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().expect("wait on sipp") {
                return Some(status);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.stop();
        None
    }

    fn stop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            // Child::kill signals this child's PID only.
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    /// Everything SIPp wrote (errors, actions, messages, screen).
    fn output(&self) -> String {
        let mut all = String::new();
        if let Ok(entries) = std::fs::read_dir(self.dir.path()) {
            for e in entries.flatten() {
                let text = std::fs::read_to_string(e.path()).unwrap_or_default();
                all.push_str(&format!(
                    "--- {}\n{text}\n",
                    e.file_name().to_string_lossy()
                ));
            }
        }
        all
    }
}

impl Drop for TcpSipp {
    fn drop(&mut self) {
        self.stop();
    }
}

fn free_tcp_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("probe bind");
    l.local_addr().expect("probe addr").port()
}

async fn phone(pki: &TestPki, e: &RunningEdge) -> Phone {
    let cfg = tls_client::client_config(&pki.pki.server_ca, Some(&pki.pki.snom_device));
    Phone::new(
        tls_client::connect(e.tls_addr, "sbc.test", cfg)
            .await
            .expect("handshake"),
    )
}

/// Answers the next OPTIONS the phone gets with 200; returns its Call-ID.
async fn answer_options(ph: &mut Phone, what: &str) -> String {
    let got = ph
        .recv_within(Duration::from_secs(15))
        .await
        .unwrap_or_else(|| panic!("phone gets {what}"));
    assert_eq!(got.method().map(|m| m.as_str()), Some("OPTIONS"), "{what}");
    ph.send(&phone::response(&got, 200)).await;
    got.call_id().expect("Call-ID").to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sipp_registrar_over_tcp_and_its_qualify_pings_reach_the_phone() {
    let port = free_tcp_port();
    let mut registrar = TcpSipp::start("tcp-registrar.xml", port, &[]);
    registrar.wait_listening(port).await;

    let pki = edge::dev_pki();
    let pbx: SocketAddr = ([127, 0, 0, 1], port).into();
    let pbx = pbx.to_string();
    let e = RunningEdge::start(edge::config_with(
        &pki,
        &[
            ("PBX_EDGE_PBX__ADDRESS", pbx.as_str()),
            ("PBX_EDGE_PBX__TRANSPORT", "tcp"),
        ],
    ))
    .await;
    let mut ph = phone(&pki, &e).await;

    // REGISTER → SIPp over the edge's TCP connection → 200 back to the phone.
    ph.send(&phone::register("101", 5099, 1, "sipp-tcp-reg", ""))
        .await;
    let ok = ph
        .recv_within(Duration::from_secs(15))
        .await
        .unwrap_or_else(|| panic!("phone gets the 200: {}", registrar.output()));
    assert_eq!(ok.status(), Some(200), "{}", registrar.output());
    assert!(
        ok.header("Contact")
            .is_some_and(|c| c.contains("127.0.0.1:5099") && c.contains("expires=120")),
        "the edge Contact in SIPp's 200 is mapped back: {ok}"
    );
    // SIPp's OPTIONS to the edge Contact, on the same connection; the 200 goes back on it.
    answer_options(&mut ph, "the registrar's OPTIONS").await;
    let status = registrar.wait(Duration::from_secs(20)).await;
    let log = registrar.output();
    assert!(
        status.is_some_and(|s| s.success()),
        "SIPp registrar ended with {status:?}: {log}"
    );
    assert!(
        log.contains("OPTIONS answered 200 on the edge's connection"),
        "{log}"
    );

    // A second SIPp: the PBX opening its own connection to pbx.listen, qualifying by AOR.
    // (The registrar above has exited, so the edge's outbound connection is gone: the 200
    // can only arrive on the connection the OPTIONS came on.)
    let edge_pbx = e.pbx_local.to_string();
    let qualify_port = free_tcp_port();
    let mut qualify = TcpSipp::start("tcp-qualify.xml", qualify_port, &["-s", "101", &edge_pbx]);
    answer_options(&mut ph, "the PBX's own-connection OPTIONS").await;
    let status = qualify.wait(Duration::from_secs(20)).await;
    let log = qualify.output();
    assert!(
        status.is_some_and(|s| s.success()),
        "SIPp qualify ended with {status:?}: {log}"
    );
    assert!(
        log.contains("OPTIONS answered 200 on the PBX's own connection"),
        "{log}"
    );
    drop(ph);
    e.stop().await.expect("clean shutdown");
}
