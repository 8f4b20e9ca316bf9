//! SIPp (Debian's 3.6.1, UDP only here) as the plain PBX, with the scenarios kept in
//! `tests/interop/scenarios/`.

use super::process::PeerProcess;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

pub fn scenario(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/interop/scenarios")
        .join(name)
}

pub struct Sipp {
    pub process: PeerProcess,
    pub messages: PathBuf,
    pub log: PathBuf,
    pub errors: PathBuf,
    pub screen: PathBuf,
}

impl Sipp {
    /// `sipp -sf <scenario> -t u1 -i 127.0.0.1 -p <port> -mi 127.0.0.1 -mp <media> -rtp_echo -m 1`
    /// plus `extra`, with message/log/error traces in `dir`. `-timeout` bounds the whole run.
    pub fn start(
        dir: &Path,
        scenario_name: &str,
        port: u16,
        media_port: u16,
        extra: &[&str],
        remote: Option<SocketAddr>,
    ) -> Self {
        let messages = dir.join("sipp-messages.log");
        let log = dir.join("sipp-actions.log");
        let errors = dir.join("sipp-errors.log");
        let screen = dir.join("sipp-screen.log");
        let mut cmd = Command::new("sipp");
        if let Some(r) = remote {
            cmd.arg(r.to_string());
        }
        cmd.current_dir(dir)
            .arg("-sf")
            .arg(scenario(scenario_name))
            .args(["-t", "u1", "-i", "127.0.0.1", "-mi", "127.0.0.1"])
            .args(["-p", &port.to_string(), "-mp", &media_port.to_string()])
            .args(["-rtp_echo", "-m", "1", "-timeout", "40s", "-timeout_error"])
            .args(["-nostdin", "-trace_msg", "-trace_logs", "-trace_err"])
            .arg("-message_file")
            .arg(&messages)
            .arg("-log_file")
            .arg(&log)
            .arg("-error_file")
            .arg(&errors)
            .arg("-trace_screen")
            .arg("-screen_file")
            .arg(&screen)
            .args(extra);
        Self {
            process: PeerProcess::spawn("sipp", cmd, dir),
            messages,
            log,
            errors,
            screen,
        }
    }

    /// Waits (bounded) until sipp has bound its SIP port.
    pub fn wait_bound(&mut self, port: u16) {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            assert!(
                std::time::Instant::now() < deadline
                    && self.process.wait_within(Duration::ZERO).is_none(),
                "sipp did not bind udp {port}\n{}",
                self.report()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The SIP messages sipp traced (sent and received).
    pub fn trace(&self) -> String {
        std::fs::read_to_string(&self.messages).unwrap_or_default()
    }

    /// The final statistics screen (written when sipp exits).
    pub fn screen(&self) -> String {
        std::fs::read_to_string(&self.screen).unwrap_or_default()
    }

    pub fn report(&self) -> String {
        let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();
        format!(
            "{}\n--- sipp screen\n{}\n--- sipp actions\n{}\n--- sipp errors\n{}\n--- sipp messages\n{}",
            self.process.output(),
            self.screen(),
            read(&self.log),
            read(&self.errors),
            self.trace()
        )
    }
}
