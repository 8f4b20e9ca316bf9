//! baresip 1.0.0 as a desk phone: SIP over TLS with a device certificate, one account through
//! the edge. A config directory writer, the process (bounded by `-t`, stopped by its PID), and
//! a `ctrl_tcp` driver (netstring-framed JSON commands, responses and events on one socket).
//! Serves both the registration tests (no media) and the call tests (WAV tone, SDES-SRTP).

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
    /// A second edge: both become RFC 5626 outbound proxies (`sipnat=outbound`,
    /// `outbound1`/`outbound2`), one registration flow through each (reg-id 1 and 2).
    pub backup_edge: Option<SocketAddr>,
    /// Device certificate + key in one PEM.
    pub certificate: &'a Path,
    /// The CA of the edge's server certificate.
    pub ca: &'a Path,
    /// SIP user of the AOR `sip:<user>@sbc.test`.
    pub user: &'a str,
    /// REGISTER interval; 0 = no REGISTER.
    pub regint: u32,
    /// `auto` answers incoming calls, `manual` leaves them ringing.
    pub answermode: &'a str,
    /// Digest password for the registrar's challenges (`auth_pass`); `None` when nothing
    /// behind the edge challenges (SIPp).
    pub auth_pass: Option<&'a str>,
    /// Call media; `None` for a phone that only registers (no audio source, no SRTP).
    pub media: Option<CallMedia<'a>>,
    /// `dns_server`: resolves the edge's name (never the system resolver).
    pub dns: SocketAddr,
    /// `baresip -v` (debug output in the log).
    pub verbose: bool,
}

/// The media side of a phone that makes or takes calls.
pub struct CallMedia<'a> {
    /// 8 kHz mono S16 WAV played as the microphone.
    pub audio: &'a Path,
    /// `rtp_ports` (inclusive).
    pub rtp_ports: (u16, u16),
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
        cmd.arg("-f").arg(dir.path());
        if setup.verbose {
            cmd.arg("-v");
        }
        // -s: the SIP trace goes to the log.
        cmd.arg("-s")
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

    /// Its output so far: start-up, registration results and the SIP trace (`-s`).
    pub fn log(&self) -> String {
        self.process.output()
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
    // The media lines and modules come in the same place of the config whether or not the
    // phone has media (modules load in the order given).
    let (media, media_modules, account_media) = match &s.media {
        Some(m) => (
            format!(
                "audio_source aufile,{audio}\n\
                 ausrc_srate 8000\n\
                 ausrc_channels 1\n\
                 auplay_srate 8000\n\
                 auplay_channels 1\n\
                 rtp_ports {rmin}-{rmax}\n\
                 rtp_stats yes\n\
                 rtp_timeout 0\n\
                 rtcp_mux no\n\
                 jitter_buffer_delay 5-10\n",
                audio = m.audio.display(),
                rmin = m.rtp_ports.0,
                rmax = m.rtp_ports.1,
            ),
            ("module aufile.so\n", "module srtp.so\n"),
            ";mediaenc=srtp-mand;audio_codecs=PCMU",
        ),
        None => ("rtp_stats no\n".to_owned(), ("", ""), ""),
    };
    let config = format!(
        "poll_method epoll\n\
         sip_listen 127.0.0.1:{sip_port}\n\
         sip_certificate {cert}\n\
         sip_cafile {ca}\n\
         call_local_timeout 30\n\
         call_max_calls 2\n\
         audio_player aubridge,null\n\
         audio_alert aubridge,null\n\
         audio_level no\n\
         {media}\
         dns_server {dns}\n\
         net_interface 127.0.0.1\n\
         module_path /usr/lib/baresip/modules\n\
         module g711.so\n\
         {aufile}\
         module aubridge.so\n\
         {srtp}\
         {uuid}\
         module_tmp account.so\n\
         module_app menu.so\n\
         module_app ctrl_tcp.so\n\
         ctrl_tcp_listen 127.0.0.1:{ctrl_port}\n",
        cert = s.certificate.display(),
        ca = s.ca.display(),
        dns = s.dns,
        aufile = media_modules.0,
        srtp = media_modules.1,
        // RFC 5626 needs a +sip.instance: the uuid module writes one into the config dir.
        uuid = if s.backup_edge.is_some() {
            "module_tmp uuid.so\n"
        } else {
            ""
        },
    );
    std::fs::write(dir.join("config"), config).expect("baresip config");
    let auth = s
        .auth_pass
        .map(|p| format!(";auth_pass={p}"))
        .unwrap_or_default();
    let outbound = match s.backup_edge {
        None => format!("outbound=\"sip:{};transport=tls\"", s.edge),
        Some(backup) => format!(
            "sipnat=outbound;outbound1=\"sip:{};transport=tls\";outbound2=\"sip:{backup};transport=tls\"",
            s.edge
        ),
    };
    let account = format!(
        "<sip:{user}@sbc.test;transport=tls>;{outbound};regint={regint}{account_media}{auth};answermode={answer}\n",
        user = s.user,
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

    /// Polls `reginfo` until `pred` holds on its output (bounded by `limit`, plus at most one
    /// command's bound); returns the last output.
    pub fn reginfo_until(&mut self, limit: Duration, pred: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + limit;
        let mut last = String::new();
        while Instant::now() < deadline {
            if let Some(info) = self.command("reginfo", None) {
                if pred(&info) {
                    return info;
                }
                last = info;
            }
            self.pump(Duration::from_millis(200));
        }
        last
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

/// Removes ANSI escape sequences (`ESC [ ... letter`).
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

#[test]
fn ansi_colours_are_stripped() {
    assert_eq!(
        strip_ansi("sip:101@sbc.test \u{1b}[32mOK \u{1b}[;m x"),
        "sip:101@sbc.test OK  x"
    );
}
