//! baresip 1.0.0 as a desk phone: SIP over TLS with a device certificate, one account through
//! the edge, driven over its `ctrl_tcp` module (netstring-framed JSON). Config in a temporary
//! directory; the process is bounded by `-t` and stopped by its PID on drop.

use super::peer::require;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// What the phone is given.
pub struct PhoneSpec<'a> {
    /// Device certificate + key in one PEM (`sip_certificate`).
    pub certificate: &'a Path,
    /// The CA of the edge's server certificate (`sip_cafile`; baresip 1.0.0 does not verify).
    pub server_ca: &'a Path,
    /// The SIP user of the account AOR (`sip:<user>@sbc.test`).
    pub user: &'a str,
    /// The edge's TLS listener (the account's outbound proxy).
    pub edge: SocketAddr,
    /// REGISTER interval in seconds (`regint`).
    pub regint: u32,
}

/// A running baresip.
pub struct Baresip {
    child: Child,
    dir: tempfile::TempDir,
    ctrl_addr: SocketAddr,
}

/// A free TCP port on 127.0.0.1 (bound, then released).
pub fn free_tcp_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind 127.0.0.1:0")
        .port()
}

/// A free UDP port on 127.0.0.1 (bound, then released).
pub fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .expect("bind 127.0.0.1:0")
        .port()
}

impl Baresip {
    /// Writes the config and starts `baresip -f DIR -s -t <bound>` (the SIP trace goes to its
    /// log); returns at once (see [`Ctrl::connect`] to talk to it).
    pub fn start(spec: &PhoneSpec<'_>, bound: Duration) -> Baresip {
        require("baresip");
        let dir = tempfile::tempdir().expect("baresip tempdir");
        let ctrl_addr = SocketAddr::from(([127, 0, 0, 1], free_tcp_port()));
        // sip_listen port 0: libre picks free UDP, TCP and TLS ports itself (nobody connects
        // to the phone's own listeners here: the edge reaches it on its TLS connection).
        let config = format!(
            "poll_method\t\tepoll\n\
sip_listen\t\t127.0.0.1:0\n\
sip_certificate\t\t{cert}\n\
sip_cafile\t\t{ca}\n\
call_local_timeout\t30\n\
call_max_calls\t\t1\n\
audio_player\t\taubridge,null\n\
audio_alert\t\taubridge,null\n\
audio_level\t\tno\n\
rtp_stats\t\tno\n\
dns_server\t\t127.0.0.1:53\n\
net_interface\t\t127.0.0.1\n\
module_path\t\t/usr/lib/baresip/modules\n\
module\t\t\tg711.so\n\
module\t\t\taubridge.so\n\
module_tmp\t\taccount.so\n\
module_app\t\tmenu.so\n\
module_app\t\tctrl_tcp.so\n\
ctrl_tcp_listen\t\t{ctrl}\n",
            cert = spec.certificate.display(),
            ca = spec.server_ca.display(),
            ctrl = ctrl_addr,
        );
        std::fs::write(dir.path().join("config"), config).expect("baresip config");
        let account = format!(
            "<sip:{user}@sbc.test;transport=tls>;outbound=\"sip:{edge};transport=tls\";regint={regint};answermode=manual\n",
            user = spec.user,
            edge = spec.edge,
            regint = spec.regint,
        );
        std::fs::write(dir.path().join("accounts"), account).expect("baresip accounts");
        std::fs::write(dir.path().join("contacts"), "").expect("baresip contacts");
        let log = std::fs::File::create(dir.path().join("baresip.log")).expect("baresip log");
        let child = Command::new("baresip")
            .arg("-f")
            .arg(dir.path())
            .arg("-s")
            .args(["-t", &bound.as_secs().max(1).to_string()])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("baresip log"))
            .stderr(log)
            .spawn()
            .expect("baresip starts");
        Baresip {
            child,
            dir,
            ctrl_addr,
        }
    }

    /// Its log: start-up, registration results and the SIP trace (`-s`).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("baresip.log")).unwrap_or_default()
    }

    /// Connects to its control socket (bounded: 10 s while baresip starts).
    pub async fn ctrl(&mut self) -> Ctrl {
        for _ in 0..100 {
            if let Some(status) = self.child.try_wait().expect("wait on baresip") {
                panic!("baresip exited at start ({status}): {}", self.log());
            }
            if let Ok(s) = TcpStream::connect(self.ctrl_addr).await {
                return Ctrl {
                    stream: s,
                    buf: Vec::new(),
                    token: 0,
                    events: Vec::new(),
                };
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!(
            "baresip ctrl_tcp did not listen within 10 s: {}",
            self.log()
        );
    }

    /// Sends `quit`, then waits (bounded) for the process; killed by PID if still running.
    pub async fn stop(mut self, ctrl: Option<Ctrl>) {
        if let Some(mut c) = ctrl {
            let _ = c.send("quit", None).await;
        }
        for _ in 0..50 {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Baresip {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The `ctrl_tcp` connection: netstring-framed JSON commands, responses and events.
pub struct Ctrl {
    stream: TcpStream,
    buf: Vec<u8>,
    token: u64,
    /// Every event seen so far (`type` and `param`), in order.
    pub events: Vec<(String, String)>,
}

impl Ctrl {
    /// Sends a command; returns its token.
    pub async fn send(&mut self, command: &str, params: Option<&str>) -> std::io::Result<String> {
        self.token += 1;
        let token = self.token.to_string();
        let mut m = serde_json::json!({ "command": command, "token": token });
        if let Some(p) = params {
            m["params"] = serde_json::Value::String(p.to_owned());
        }
        let body = m.to_string();
        let framed = format!("{}:{},", body.len(), body);
        self.stream.write_all(framed.as_bytes()).await?;
        Ok(token)
    }

    /// The next message (response or event), or `None` after `limit` or on close.
    pub async fn read(&mut self, limit: Duration) -> Option<serde_json::Value> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if let Some(colon) = self.buf.iter().position(|&b| b == b':') {
                let len: usize = std::str::from_utf8(&self.buf[..colon])
                    .ok()
                    .and_then(|s| s.parse().ok())
                    .expect("netstring length");
                if self.buf.len() > colon + len + 1 {
                    let data = self.buf[colon + 1..colon + 1 + len].to_vec();
                    self.buf.drain(..colon + len + 2);
                    let v: serde_json::Value =
                        serde_json::from_slice(&data).expect("ctrl_tcp sends JSON");
                    if v["event"].as_bool() == Some(true) {
                        self.events.push((
                            v["type"].as_str().unwrap_or_default().to_owned(),
                            v["param"].as_str().unwrap_or_default().to_owned(),
                        ));
                    }
                    return Some(v);
                }
            }
            let mut chunk = [0u8; 4096];
            let n = tokio::time::timeout_at(deadline, self.stream.read(&mut chunk))
                .await
                .ok()?
                .ok()?;
            if n == 0 {
                return None;
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// Runs a command and returns its response's `data` (ANSI colours removed), bounded.
    pub async fn command(&mut self, command: &str, limit: Duration) -> Option<String> {
        let token = self.send(command, None).await.ok()?;
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let v = self.read(left).await?;
            if v["response"].as_bool() == Some(true) && v["token"].as_str() == Some(&token) {
                return Some(strip_ansi(v["data"].as_str().unwrap_or_default()));
            }
        }
    }

    /// Polls `reginfo` until `pred` holds on its output (bounded by `limit`); returns the
    /// last output.
    pub async fn reginfo_until(&mut self, limit: Duration, pred: impl Fn(&str) -> bool) -> String {
        let deadline = tokio::time::Instant::now() + limit;
        let mut last = String::new();
        while tokio::time::Instant::now() < deadline {
            if let Some(info) = self.command("reginfo", Duration::from_secs(2)).await {
                if pred(&info) {
                    return info;
                }
                last = info;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        last
    }
}

/// Removes ANSI escape sequences (`ESC [ ... letter`).
fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for d in chars.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[test]
fn ansi_colours_are_stripped() {
    assert_eq!(
        strip_ansi("sip:101@sbc.test \u{1b}[32mOK \u{1b}[;m x"),
        "sip:101@sbc.test OK  x"
    );
}
