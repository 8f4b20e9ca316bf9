//! SIPp (`sip-tester`) as the plain-UDP PBX: one scenario from `tests/interop/scenarios/`, run
//! in its own temporary directory, bounded by `-m` and `-timeout`, stopped by its PID on drop.
//! What SIPp received is read back from its `-trace_msg` file.

use super::peer::require;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

/// The scenario file `name` shipped with the tests.
pub fn scenario(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/interop/scenarios")
        .join(name)
}

/// A running SIPp.
pub struct Sipp {
    child: Child,
    dir: tempfile::TempDir,
}

impl Sipp {
    /// Starts `sipp -sf <scenario> -i 127.0.0.1 -p <local port> -t u1 -m 1 -timeout <limit>`
    /// plus `extra` (a remote address, `-s`, `-key` ...).
    pub fn start(scenario_name: &str, local: SocketAddr, limit: Duration, extra: &[&str]) -> Sipp {
        require("sipp");
        let dir = tempfile::tempdir().expect("sipp tempdir");
        let out = std::fs::File::create(dir.path().join("stdout.log")).expect("sipp log");
        let err = out.try_clone().expect("sipp log");
        let child = Command::new("sipp")
            .current_dir(dir.path())
            .arg("-sf")
            .arg(scenario(scenario_name))
            .args(["-i", &local.ip().to_string()])
            .args(["-p", &local.port().to_string()])
            .args(["-t", "u1", "-m", "1", "-nostdin"])
            .args(["-timeout", &format!("{}s", limit.as_secs().max(1))])
            .arg("-timeout_error")
            .args(["-trace_msg", "-message_file"])
            .arg(dir.path().join("messages.log"))
            .args(["-trace_err", "-error_file"])
            .arg(dir.path().join("errors.log"))
            .args(["-trace_logs", "-log_file"])
            .arg(dir.path().join("actions.log"))
            .args(extra)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .expect("sipp starts");
        Sipp { child, dir }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits (bounded) until SIPp has bound its UDP port: it writes its screen once it runs.
    pub async fn wait_ready(&mut self, local: SocketAddr) {
        for _ in 0..100 {
            if let Some(status) = self.child.try_wait().expect("wait on sipp") {
                panic!("sipp exited at start ({status}): {}", self.output());
            }
            // Bound by SIPp: our own bind on the same port fails.
            if std::net::UdpSocket::bind(local).is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("sipp did not bind {local} within 5 s: {}", self.output());
    }

    /// Waits up to `limit` for SIPp to end by itself (after its `-m` calls).
    pub async fn wait(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait on sipp") {
                return Some(status);
            }
            if tokio::time::Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Asks SIPp to end gracefully (SIGUSR1: no new calls, exit, flush its trace files) and
    /// waits for it (bounded); killed by PID if it does not exit.
    pub async fn stop(&mut self) {
        if self.child.try_wait().expect("wait on sipp").is_none() {
            let _ = Command::new("kill")
                .args(["-USR1", &self.pid().to_string()])
                .status();
            if self.wait(Duration::from_secs(5)).await.is_none() {
                let _ = self.child.kill();
                let _ = self.child.wait();
            }
        }
    }

    /// Everything SIPp printed and logged, for failure messages.
    pub fn output(&self) -> String {
        let read = |n: &str| std::fs::read_to_string(self.dir.path().join(n)).unwrap_or_default();
        format!(
            "--- sipp errors:\n{}\n--- sipp actions:\n{}\n--- sipp messages:\n{}\n--- sipp screen (tail):\n{}",
            read("errors.log"),
            read("actions.log"),
            read("messages.log"),
            tail(&read("stdout.log"), 40)
        )
    }

    /// The lines SIPp's `<log>` actions wrote.
    pub fn actions(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("actions.log")).unwrap_or_default()
    }

    /// The SIP messages SIPp received, as received (from its `-trace_msg` file).
    pub fn received(&self) -> Vec<String> {
        let text =
            std::fs::read_to_string(self.dir.path().join("messages.log")).unwrap_or_default();
        received_messages(&text)
    }
}

impl Drop for Sipp {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Splits a SIPp `-trace_msg` file into the messages it received. Each entry starts with a
/// dashed line and a timestamp, then `UDP message received [N] bytes :`, an empty line and the
/// message as received (header block, then `Content-Length` bytes of body).
pub fn received_messages(trace: &str) -> Vec<String> {
    trace
        .split("-----------------------------------------------")
        .filter_map(|entry| {
            let (head, rest) = entry.split_once("bytes :")?;
            if !head.contains("message received") {
                return None;
            }
            let message = rest.trim_start_matches(['\r', '\n']);
            let (headers, body) = message.split_once("\r\n\r\n")?;
            let length = headers
                .lines()
                .find_map(|l| {
                    let (name, value) = l.split_once(':')?;
                    let name = name.trim();
                    (name.eq_ignore_ascii_case("Content-Length") || name == "l")
                        .then(|| value.trim().parse::<usize>().ok())
                        .flatten()
                })
                .unwrap_or(0);
            let body = body.get(..length).unwrap_or(body);
            Some(format!("{headers}\r\n\r\n{body}"))
        })
        .collect()
}

#[test]
fn trace_file_entries_are_split_into_received_messages() {
    let trace = "----------------------------------------------- 2026-11-23\t12:00:00.000000\n\
UDP message received [30] bytes :\n\nREGISTER sip:x SIP/2.0\r\nVia: a\r\n\r\n\n\
----------------------------------------------- 2026-11-23\t12:00:00.050000\n\
UDP message received [60] bytes :\n\nSIP/2.0 200 OK\r\nContent-Length: 5\r\n\r\nv=0\r\n\n\
----------------------------------------------- 2026-11-23\t12:00:00.100000\n\
UDP message sent (20 bytes):\n\nSIP/2.0 200 OK\r\n\r\n\n";
    let got = received_messages(trace);
    assert_eq!(
        got,
        vec![
            "REGISTER sip:x SIP/2.0\r\nVia: a\r\n\r\n".to_owned(),
            "SIP/2.0 200 OK\r\nContent-Length: 5\r\n\r\nv=0\r\n".to_owned()
        ]
    );
}
