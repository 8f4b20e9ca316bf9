//! SIPp (Debian's `sip-tester` 3.6.1, over UDP or TCP) as the plain PBX: one scenario from
//! `tests/interop/scenarios/`, run in its own temporary directory, bounded by `-m 1` and
//! `-timeout`, stopped by its PID. What SIPp received is read back from its `-trace_msg` file.

use super::process::PeerProcess;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::time::Duration;

/// The scenario file `name` shipped with the tests.
pub fn scenario(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/interop/scenarios")
        .join(name)
}

/// A running SIPp.
pub struct Sipp {
    pub process: PeerProcess,
    port: u16,
    /// `-t t1` (one TCP connection) instead of `-t u1`.
    tcp: bool,
    /// Holds the trace files (removed when dropped, after the process: fields drop in order).
    dir: tempfile::TempDir,
}

impl Sipp {
    /// `sipp -sf <scenario> -t u1 -i 127.0.0.1 -p <port> -m 1 -timeout <limit>` plus `extra`
    /// (`-s`, `-key`, a remote address ...).
    pub fn start(scenario_name: &str, port: u16, limit: Duration, extra: &[&str]) -> Self {
        Self::spawn(scenario_name, port, false, None, limit, extra)
    }

    /// Like [`Sipp::start`], over TCP (`-t t1`).
    pub fn start_tcp(scenario_name: &str, port: u16, limit: Duration, extra: &[&str]) -> Self {
        Self::spawn(scenario_name, port, true, None, limit, extra)
    }

    /// Like [`Sipp::start`], with media on `-mi 127.0.0.1 -mp <media_port>` and `-rtp_echo`
    /// (SIPp also binds neighbours of `media_port`).
    pub fn start_echo(
        scenario_name: &str,
        port: u16,
        media_port: u16,
        limit: Duration,
        extra: &[&str],
    ) -> Self {
        Self::spawn(scenario_name, port, false, Some(media_port), limit, extra)
    }

    fn spawn(
        scenario_name: &str,
        port: u16,
        tcp: bool,
        media_port: Option<u16>,
        limit: Duration,
        extra: &[&str],
    ) -> Self {
        let dir = tempfile::tempdir().expect("sipp tempdir");
        let d = dir.path();
        let mut cmd = Command::new("sipp");
        cmd.current_dir(d)
            .arg("-sf")
            .arg(scenario(scenario_name))
            .args(["-t", if tcp { "t1" } else { "u1" }])
            .args(["-i", "127.0.0.1", "-p", &port.to_string()]);
        if let Some(mp) = media_port {
            cmd.args(["-mi", "127.0.0.1", "-mp", &mp.to_string(), "-rtp_echo"]);
        }
        cmd.args(["-m", "1", "-nostdin"])
            .args(["-timeout", &format!("{}s", limit.as_secs().max(1))])
            .arg("-timeout_error")
            .args(["-trace_msg", "-message_file"])
            .arg(d.join("messages.log"))
            .args(["-trace_logs", "-log_file"])
            .arg(d.join("actions.log"))
            .args(["-trace_err", "-error_file"])
            .arg(d.join("errors.log"))
            .args(["-trace_screen", "-screen_file"])
            .arg(d.join("screen.log"))
            .args(extra);
        Self {
            process: PeerProcess::spawn("sipp", cmd, d),
            port,
            tcp,
            dir,
        }
    }

    /// Waits (bounded: 10 s) until SIPp has bound its port: over UDP our own bind then fails;
    /// over TCP its listener shows in /proc/net/tcp (no probe bind that could race SIPp's).
    pub fn wait_bound(&mut self) {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !self.bound() {
            assert!(
                std::time::Instant::now() < deadline
                    && self.process.wait_within(Duration::ZERO).is_none(),
                "sipp did not bind {} {}\n{}",
                if self.tcp { "tcp" } else { "udp" },
                self.port,
                self.report()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn bound(&self) -> bool {
        if !self.tcp {
            return std::net::UdpSocket::bind(("127.0.0.1", self.port)).is_err();
        }
        let needle = format!(":{:04X} ", self.port);
        let table = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
        // Columns: sl local_address rem_address st ...; st 0A = LISTEN.
        table.lines().any(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            cols.get(1)
                .is_some_and(|a| format!("{a} ").ends_with(&needle))
                && cols.get(3) == Some(&"0A")
        })
    }

    /// Waits up to `limit` for SIPp to end by itself (after its `-m` calls).
    pub fn wait(&mut self, limit: Duration) -> Option<ExitStatus> {
        self.process.wait_within(limit)
    }

    fn read(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(name)).unwrap_or_default()
    }

    /// The SIP messages SIPp traced (sent and received), as its `-trace_msg` file has them.
    pub fn trace(&self) -> String {
        self.read("messages.log")
    }

    /// The SIP messages SIPp received, as received.
    pub fn received(&self) -> Vec<String> {
        received_messages(&self.trace())
    }

    /// The lines SIPp's `<log>` actions wrote.
    pub fn actions(&self) -> String {
        self.read("actions.log")
    }

    /// The final statistics screen (written when SIPp exits).
    pub fn screen(&self) -> String {
        self.read("screen.log")
    }

    /// Everything SIPp printed and logged, for failure messages.
    pub fn report(&self) -> String {
        format!(
            "{}\n--- sipp screen\n{}\n--- sipp actions\n{}\n--- sipp errors\n{}\n--- sipp messages\n{}",
            self.process.output(),
            self.screen(),
            self.actions(),
            self.read("errors.log"),
            self.trace()
        )
    }
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
