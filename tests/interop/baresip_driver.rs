//! baresip 1.0.0 as a desk phone: a config directory writer, the process (stopped by PID), and
//! a `ctrl_tcp` driver (netstring-framed JSON commands, responses and events on one socket).

use super::net;
use super::process::PeerProcess;
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// What the phone is and where it connects.
pub struct PhoneSetup<'a> {
    /// The edge's TLS listener (the account's outbound proxy).
    pub edge: SocketAddr,
    /// Device certificate + key in one PEM.
    pub certificate: &'a Path,
    /// The CA of the edge's server certificate.
    pub ca: &'a Path,
    /// SIP user of the AOR `sip:<user>@sbc.test`.
    pub user: &'a str,
    /// REGISTER interval; 0 = no REGISTER.
    pub regint: u32,
    /// `auto` answers incoming calls.
    pub answermode: &'a str,
    /// 8 kHz mono S16 WAV played as the microphone.
    pub audio: &'a Path,
    /// `rtp_ports` (inclusive).
    pub rtp_ports: (u16, u16),
    /// `dns_server`: resolves the edge's name (never the system resolver).
    pub dns: SocketAddr,
}

/// A running baresip with its own config directory.
pub struct Baresip {
    /// The config directory (removed when dropped).
    _dir: tempfile::TempDir,
    pub ctrl_addr: SocketAddr,
    pub process: PeerProcess,
}

impl Baresip {
    /// Writes the config into a fresh tempdir and starts `baresip -f DIR`, bounded by `-t`.
    pub fn start(setup: &PhoneSetup, lifetime: Duration) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let sip_port = net::free_block(2); // baresip listens on sip_port (udp/tcp) and +1 (tls)
        let ctrl_port = net::free_tcp_port();
        write_config(dir.path(), setup, sip_port, ctrl_port);
        let mut cmd = Command::new("baresip");
        cmd.arg("-f")
            .arg(dir.path())
            .arg("-v")
            .arg("-s")
            .arg("-t")
            .arg(lifetime.as_secs().max(1).to_string());
        let process = PeerProcess::spawn("baresip", cmd, dir.path());
        Self {
            _dir: dir,
            ctrl_addr: SocketAddr::from(([127, 0, 0, 1], ctrl_port)),
            process,
        }
    }

    /// Connects to `ctrl_tcp` (bounded retries while baresip starts).
    pub fn ctrl(&mut self) -> Ctrl {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match TcpStream::connect_timeout(&self.ctrl_addr, Duration::from_secs(1)) {
                Ok(s) => return Ctrl::new(s),
                Err(e) => {
                    assert!(
                        Instant::now() < deadline
                            && self.process.wait_within(Duration::ZERO).is_none(),
                        "baresip ctrl_tcp not reachable: {e}\n{}",
                        self.process.output()
                    );
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        }
    }

    /// `quit` over ctrl, then bounded wait; stopped by PID if it does not exit.
    pub fn quit(&mut self, ctrl: &mut Ctrl) {
        let _ = ctrl.send("quit", None);
        if self.process.wait_within(Duration::from_secs(3)).is_none() {
            self.process.stop(Duration::from_secs(2));
        }
    }

    /// baresip's `rtp_stats` block printed at hangup (the lines around `packets:`).
    pub fn rtp_stats(&self) -> Vec<String> {
        let out = self.process.output();
        let lines: Vec<&str> = out.lines().collect();
        let Some(at) = lines
            .iter()
            .rposition(|l| l.trim_start().starts_with("packets:"))
        else {
            return Vec::new();
        };
        lines[at.saturating_sub(4)..(at + 3).min(lines.len())]
            .iter()
            .map(|l| (*l).to_owned())
            .collect()
    }
}

fn write_config(dir: &Path, s: &PhoneSetup, sip_port: u16, ctrl_port: u16) {
    let config = format!(
        "poll_method epoll\n\
         sip_listen 127.0.0.1:{sip_port}\n\
         sip_certificate {cert}\n\
         sip_cafile {ca}\n\
         call_local_timeout 30\n\
         call_max_calls 2\n\
         audio_player aubridge,null\n\
         audio_source aufile,{audio}\n\
         audio_alert aubridge,null\n\
         audio_level no\n\
         ausrc_srate 8000\n\
         ausrc_channels 1\n\
         auplay_srate 8000\n\
         auplay_channels 1\n\
         rtp_ports {rmin}-{rmax}\n\
         rtp_stats yes\n\
         rtp_timeout 0\n\
         rtcp_mux no\n\
         jitter_buffer_delay 5-10\n\
         dns_server {dns}\n\
         net_interface 127.0.0.1\n\
         module_path /usr/lib/baresip/modules\n\
         module g711.so\n\
         module aufile.so\n\
         module aubridge.so\n\
         module srtp.so\n\
         module_tmp account.so\n\
         module_app menu.so\n\
         module_app ctrl_tcp.so\n\
         ctrl_tcp_listen 127.0.0.1:{ctrl_port}\n",
        cert = s.certificate.display(),
        ca = s.ca.display(),
        audio = s.audio.display(),
        rmin = s.rtp_ports.0,
        rmax = s.rtp_ports.1,
        dns = s.dns,
    );
    std::fs::write(dir.join("config"), config).expect("baresip config");
    let account = format!(
        "<sip:{user}@sbc.test;transport=tls>;outbound=\"sip:{edge};transport=tls\";regint={regint};mediaenc=srtp-mand;audio_codecs=PCMU;answermode={answer}\n",
        user = s.user,
        edge = s.edge,
        regint = s.regint,
        answer = s.answermode,
    );
    std::fs::write(dir.join("accounts"), account).expect("baresip accounts");
    std::fs::write(dir.join("contacts"), "").expect("baresip contacts");
}

/// The `ctrl_tcp` connection: commands with tokens, and the events seen so far.
pub struct Ctrl {
    stream: TcpStream,
    buf: Vec<u8>,
    token: u32,
    /// Every event received (`type`, `param`), in order.
    pub events: Vec<(String, String)>,
}

impl Ctrl {
    fn new(stream: TcpStream) -> Self {
        Self {
            stream,
            buf: Vec::new(),
            token: 0,
            events: Vec::new(),
        }
    }

    /// Sends a command; returns its token.
    pub fn send(&mut self, command: &str, params: Option<&str>) -> std::io::Result<String> {
        self.token += 1;
        let token = self.token.to_string();
        let mut msg = json!({"command": command, "token": token});
        if let Some(p) = params {
            msg["params"] = json!(p);
        }
        let body = msg.to_string();
        self.stream
            .write_all(format!("{}:{body},", body.len()).as_bytes())?;
        Ok(token)
    }

    /// The next message within `limit` (events are also recorded in `events`).
    fn read(&mut self, limit: Duration) -> Option<Value> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(colon) = self.buf.iter().position(|&b| b == b':') {
                let len: usize = std::str::from_utf8(&self.buf[..colon])
                    .ok()
                    .and_then(|s| s.parse().ok())
                    .expect("netstring length");
                if self.buf.len() > colon + len + 1 {
                    let v: Value = serde_json::from_slice(&self.buf[colon + 1..colon + 1 + len])
                        .expect("ctrl_tcp sends JSON");
                    self.buf.drain(..colon + len + 2);
                    if v["event"].as_bool() == Some(true) {
                        self.events.push((
                            v["type"].as_str().unwrap_or_default().to_owned(),
                            v["param"].as_str().unwrap_or_default().to_owned(),
                        ));
                    }
                    return Some(v);
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            self.stream
                .set_read_timeout(Some(left.max(Duration::from_millis(10))))
                .ok()?;
            let mut chunk = [0u8; 8192];
            match self.stream.read(&mut chunk) {
                Ok(0) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(_) => {}
            }
        }
    }

    /// Runs a command and returns its response's `data` (bounded).
    pub fn command(&mut self, command: &str, params: Option<&str>) -> Option<String> {
        let token = self.send(command, params).ok()?;
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Some(v) = self.read(Duration::from_millis(200)) {
                if v["response"].as_bool() == Some(true) && v["token"].as_str() == Some(&token) {
                    return Some(strip_ansi(v["data"].as_str().unwrap_or_default()));
                }
            }
        }
        None
    }

    /// Waits (bounded) for an event of type `kind`; returns its param.
    pub fn wait_event(&mut self, kind: &str, limit: Duration) -> Option<String> {
        if let Some((_, p)) = self.events.iter().find(|(t, _)| t == kind) {
            return Some(p.clone());
        }
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Some(v) = self.read(Duration::from_millis(200)) {
                if v["event"].as_bool() == Some(true) && v["type"].as_str() == Some(kind) {
                    return Some(v["param"].as_str().unwrap_or_default().to_owned());
                }
            }
        }
        None
    }

    /// Reads whatever arrives for `d` (keeps the socket drained, records events).
    pub fn pump(&mut self, d: Duration) {
        let deadline = Instant::now() + d;
        while Instant::now() < deadline {
            let _ = self.read(deadline.saturating_duration_since(Instant::now()));
        }
    }
}

fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// (transmitted, received) audio packets from an `rtp_stats` block
/// ("audio  Transmit: Receive:" over "packets:  <tx>  <rx>").
pub fn rtp_packets(stats: &[String]) -> Option<(u64, u64)> {
    let header = stats.iter().find(|l| l.contains("Transmit:"))?;
    if header.find("Transmit:")? > header.find("Receive:")? {
        return None;
    }
    let line = stats
        .iter()
        .find(|l| l.trim_start().starts_with("packets:"))?;
    let mut n = line
        .split_whitespace()
        .skip(1)
        .filter_map(|w| w.parse().ok());
    Some((n.next()?, n.next()?))
}
