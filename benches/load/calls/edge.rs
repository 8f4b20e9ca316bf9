//! The pbx-edge control path of the call load generator, and the phone fleet behind it.
//!
//! Runs the real `pbx-edge` binary (`target/release/pbx-edge run`) with a generated config in
//! a temporary directory, every socket on 127.0.0.0/8:
//!
//! ```text
//!   phones (this process: tokio + rustls clients, one TLS connection and one device
//!           certificate each, from several 127.1.x.y source addresses)
//!     -> pbx-edge (TLS listener, the generated operator CA trusted, one inventory row per MAC)
//!     -> PBX (this process: a minimal UAS on UDP 127.0.0.1)
//! ```
//!
//! Phones register with RFC 5626 outbound (`+sip.instance`, `reg-id`, `;ob`), send CRLF CRLF
//! keep-alives (§4.4.1) and count the CRLF pongs, re-register before their binding expires
//! and answer requests the edge forwards with 200. A call is INVITE (RTP/SAVP + an SDES
//! `a=crypto` with a fresh key, RFC 4568) / 200 / ACK from a phone; the PBX answers the
//! edge's RTP/AVP INVITE with a fresh socket of its own; the answer SDPs on both legs become
//! a [`CallMedia`] for the media generator. [`EdgeRun::finish`] hangs every call up (BYE /
//! 200) and stops the edge by its PID (SIGTERM, bounded wait, SIGKILL).
//!
//! Every wait is bounded; the only process started is the edge, stopped by its PID (also
//! when the run is dropped on an error path).
//!
//! Written to be `#[path]`-included next to `legs.rs` (it uses `super::legs`): by the
//! `call_load` bench (`benches/load/calls/main.rs`) and by the `fleet` bench
//! (`benches/load/fleet.rs`, registration scale).

#![allow(dead_code)] // each including bench uses its own part

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use pbx_edge::sip::framing::{Frame, StreamFramer};
use pbx_edge::sip::message::SipMessage;
use pbx_edge::srtp::CryptoAttribute;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose, SanType,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use rustls::ClientConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot, Semaphore};

use super::legs::{CallMedia, SdesKey};

/// The name phones use for the edge (server certificate SAN, `sip.domain`).
const EDGE_NAME: &str = "sbc.test";
/// Bound on one SIP transaction as a phone or the driver waits for it.
const TRANSACTION_BOUND: Duration = Duration::from_secs(10);
/// Bound on a phone's TCP connect + TLS handshake + first REGISTER.
const BRING_UP_BOUND: Duration = Duration::from_secs(30);
/// The edge's drain on SIGTERM (generated config) and how long we wait beyond it.
const EDGE_DRAIN_SECS: u64 = 2;
const EDGE_STOP_BOUND: Duration = Duration::from_secs(10);

// ------------------------------------------------------------------------------- options

/// How the edge and the fleet are set up.
#[derive(Debug, Clone)]
pub struct EdgeOptions {
    /// The edge binary (built by `cargo build --release`).
    pub edge_binary: PathBuf,
    /// Phones to connect and register; `setup_calls` uses at least one per call.
    pub phones: usize,
    /// Phones per loopback source address (127.1.x.y): the edge's default
    /// `tls.max_connections_per_ip` (256) stays in force, the phones are spread instead.
    pub phones_per_source: usize,
    /// RFC 5626 keep-alive interval (CRLF CRLF).
    pub keepalive: Duration,
    /// Binding lifetime the phones ask for and the PBX grants; phones re-register at half.
    pub register_expires: u32,
    /// The edge's relay port range (4 ports per call: RTP/RTCP on each leg).
    pub port_min: u16,
    pub port_max: u16,
    /// Handshakes + first REGISTERs in flight while the fleet comes up.
    pub connect_concurrency: usize,
    /// The edge's log filter.
    pub log_level: String,
    /// Copy the temporary directory (config, PKI, edge log) here when the run ends.
    pub keep_dir: Option<PathBuf>,
}

impl Default for EdgeOptions {
    fn default() -> Self {
        Self {
            edge_binary: Path::new(env!("CARGO_MANIFEST_DIR")).join("target/release/pbx-edge"),
            phones: 0,
            phones_per_source: 200,
            keepalive: Duration::from_secs(30),
            register_expires: 600,
            port_min: 20000,
            port_max: 29999,
            connect_concurrency: 64,
            log_level: "warn".to_owned(),
            keep_dir: None,
        }
    }
}

// ------------------------------------------------------------------------------- counters

/// What the phones and the PBX counted (all cumulative).
#[derive(Debug, Default)]
pub struct Counters {
    pub registered: AtomicUsize,
    pub register_failures: AtomicUsize,
    pub reregisters: AtomicUsize,
    pub reregister_failures: AtomicUsize,
    pub keepalives_sent: AtomicU64,
    pub pongs: AtomicU64,
    /// A keep-alive still unanswered when the next one was due.
    pub pongs_missing: AtomicU64,
    /// Connections the edge closed (or that failed) after registration.
    pub disconnects: AtomicUsize,
    /// Requests from the edge a phone answered.
    pub phone_requests_answered: AtomicU64,
    pub pbx_registers: AtomicU64,
    pub pbx_invites: AtomicU64,
    pub pbx_byes: AtomicU64,
    /// Datagrams the PBX could not parse.
    pub pbx_garbage: AtomicU64,
}

/// A snapshot of [`Counters`].
#[derive(Debug, Clone, Copy, Default)]
pub struct CounterSnapshot {
    pub registered: usize,
    pub register_failures: usize,
    pub reregisters: usize,
    pub reregister_failures: usize,
    pub keepalives_sent: u64,
    pub pongs: u64,
    pub pongs_missing: u64,
    pub disconnects: usize,
    pub phone_requests_answered: u64,
    pub pbx_registers: u64,
    pub pbx_invites: u64,
    pub pbx_byes: u64,
    pub pbx_garbage: u64,
}

impl Counters {
    pub fn snapshot(&self) -> CounterSnapshot {
        let l = |a: &AtomicUsize| a.load(Ordering::Relaxed);
        let m = |a: &AtomicU64| a.load(Ordering::Relaxed);
        CounterSnapshot {
            registered: l(&self.registered),
            register_failures: l(&self.register_failures),
            reregisters: l(&self.reregisters),
            reregister_failures: l(&self.reregister_failures),
            keepalives_sent: m(&self.keepalives_sent),
            pongs: m(&self.pongs),
            pongs_missing: m(&self.pongs_missing),
            disconnects: l(&self.disconnects),
            phone_requests_answered: m(&self.phone_requests_answered),
            pbx_registers: m(&self.pbx_registers),
            pbx_invites: m(&self.pbx_invites),
            pbx_byes: m(&self.pbx_byes),
            pbx_garbage: m(&self.pbx_garbage),
        }
    }
}

fn bump(a: &AtomicUsize) {
    a.fetch_add(1, Ordering::Relaxed);
}
fn bump64(a: &AtomicU64) {
    a.fetch_add(1, Ordering::Relaxed);
}

// ------------------------------------------------------------------------------- PKI

/// The test PKI: one CA (the edge's `[vendors.operator]` CA, and the root the phones verify
/// the edge's server certificate against) and one device certificate per phone.
struct Pki {
    ca: CertifiedIssuer<'static, KeyPair>,
    server_chain_pem: String,
    server_key_pem: String,
}

/// One phone's identity: its MAC (the certificate's CN, as the operator profile reads it),
/// SIP user and certificate.
struct Device {
    mac: String,
    user: String,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
}

fn gen<T>(what: &str, r: Result<T, rcgen::Error>) -> Result<T, String> {
    r.map_err(|e| format!("rcgen: {what}: {e}"))
}

impl Pki {
    fn new() -> Result<Self, String> {
        let now = time::OffsetDateTime::now_utc();
        let mut ca = CertificateParams::default();
        ca.not_before = now - time::Duration::hours(1);
        ca.not_after = now + time::Duration::days(90);
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, "pbx-edge load test");
        dn.push(DnType::CommonName, "pbx-edge load test operator CA");
        ca.distinguished_name = dn;
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca = gen(
            "CA",
            CertifiedIssuer::self_signed(ca, gen("CA key", KeyPair::generate())?),
        )?;
        let mut leaf = gen(
            "server certificate",
            CertificateParams::new(vec![EDGE_NAME.to_owned()]),
        )?;
        leaf.subject_alt_names
            .push(SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)));
        leaf.not_before = now - time::Duration::hours(1);
        leaf.not_after = now + time::Duration::days(90);
        leaf.distinguished_name = DistinguishedName::new();
        leaf.distinguished_name.push(DnType::CommonName, EDGE_NAME);
        leaf.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let leaf_key = gen("server key", KeyPair::generate())?;
        let leaf_cert = gen("server certificate", leaf.signed_by(&leaf_key, &ca))?;
        Ok(Self {
            server_chain_pem: format!("{}{}", leaf_cert.pem(), ca.pem()),
            server_key_pem: leaf_key.serialize_pem(),
            ca,
        })
    }

    /// Phone `index`'s device certificate: CN = its MAC (12 upper-case hex digits, a locally
    /// administered OUI 02:00:00 so it is nobody's real phone), SIP user `1` + 6 digits.
    fn device(&self, index: usize) -> Result<Device, String> {
        let mac = format!("0200{:08X}", index + 1);
        let now = time::OffsetDateTime::now_utc();
        let mut p = CertificateParams::default();
        p.not_before = now - time::Duration::hours(1);
        p.not_after = now + time::Duration::days(90);
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, "pbx-edge load test phones");
        dn.push(DnType::CommonName, mac.as_str());
        p.distinguished_name = dn;
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let key = gen("device key", KeyPair::generate())?;
        let cert = gen("device certificate", p.signed_by(&key, &self.ca))?;
        Ok(Device {
            mac,
            user: format!("{}", 1_000_000 + index),
            chain: vec![cert.der().clone()],
            key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        })
    }
}

/// The inventory as CSV (`mac,users,label,provisioning`): one row per MAC granting exactly
/// that phone's user, the per-device authorization the edge enforces (no vendor-wide `*`).
fn inventory_csv(devices: &[Device]) -> String {
    let mut out = String::with_capacity(devices.len() * 32 + 32);
    out.push_str("mac,users,label,provisioning\n");
    for d in devices {
        out.push_str(&format!("{},{},,\n", d.mac, d.user));
    }
    out
}

// ------------------------------------------------------------------------------- edge process

/// Ports and addresses of the running edge.
#[derive(Debug, Clone, Copy)]
pub struct EdgeAddrs {
    pub tls: SocketAddr,
    pub pbx_side: SocketAddr,
    pub admin: SocketAddr,
}

/// A free port on 127.0.0.1 (TCP and UDP) outside `media` (the edge refuses a listener inside
/// its media port range, and the kernel's ephemeral ports overlap the ranges the tools use),
/// asked of the kernel and released at once: the edge binds it a moment later (a race with
/// other processes, reported as a failed start).
fn free_port(media: std::ops::RangeInclusive<u16>) -> Result<u16, String> {
    for _ in 0..50 {
        let tcp = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
        let port = tcp.local_addr().map_err(|e| e.to_string())?.port();
        if !media.contains(&port) && std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
    Err("no free port on 127.0.0.1 outside the media range".to_owned())
}

fn edge_config(
    o: &EdgeOptions,
    addrs: &EdgeAddrs,
    pbx: SocketAddr,
    max_connections: usize,
) -> String {
    format!(
        "# Written by benches/load/calls/edge.rs: every socket on 127.0.0.0/8.\n\
[tls]\n\
listen = \"{tls}\"\n\
client_cert = \"required\"\n\
# Every phone is one connection; the default per-address limit (256) stays: the phones\n\
# come from {per} each of several 127.1.x.y source addresses.\n\
max_connections = {max_connections}\n\
[[tls.certificates]]\n\
cert = \"server-chain.crt\"\n\
key = \"server.key\"\n\
[vendors.operator]\n\
ca = [\"operator-ca.crt\"]\n\
[pbx]\n\
address = \"{pbx}\"\n\
transport = \"udp\"\n\
listen = \"{pbx_side}\"\n\
[sip]\n\
domain = \"{EDGE_NAME}\"\n\
[media]\n\
phone_bind = \"127.0.0.1\"\n\
phone_advertise = \"127.0.0.1\"\n\
pbx_bind = \"127.0.0.1\"\n\
port_min = {pmin}\n\
port_max = {pmax}\n\
[inventory]\n\
file = \"inventory.csv\"\n\
[admin]\n\
listen = \"{admin}\"\n\
[shutdown]\n\
drain_timeout_secs = {EDGE_DRAIN_SECS}\n\
[log]\n\
level = \"{level}\"\n",
        tls = addrs.tls,
        per = o.phones_per_source,
        pbx_side = addrs.pbx_side,
        admin = addrs.admin,
        pmin = o.port_min,
        pmax = o.port_max,
        level = o.log_level,
    )
}

/// The edge process, stopped by its PID when dropped (if `stop` was not called).
struct EdgeProcess {
    child: Option<Child>,
    pid: u32,
    dir: tempfile::TempDir,
    keep_dir: Option<PathBuf>,
}

impl EdgeProcess {
    /// SIGTERM by PID, up to [`EDGE_STOP_BOUND`] for it to drain and exit, then SIGKILL.
    /// Returns how it ended.
    fn stop(&mut self) -> Result<String, String> {
        let Some(mut child) = self.child.take() else {
            return Ok("already stopped".to_owned());
        };
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!(
                "the edge (pid {}) had already exited: {status}",
                self.pid
            ));
        }
        let _ = Command::new("kill")
            .args(["-TERM", &self.pid.to_string()])
            .status();
        let deadline = Instant::now() + EDGE_STOP_BOUND;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                return Ok(format!("exited after SIGTERM: {status}"));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let status = child.wait().map_err(|e| e.to_string())?;
        Err(format!(
            "the edge (pid {}) ignored SIGTERM for {EDGE_STOP_BOUND:?}: SIGKILL ({status})",
            self.pid
        ))
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.path().join("edge.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }
}

impl Drop for EdgeProcess {
    fn drop(&mut self) {
        if let Err(e) = self.stop() {
            eprintln!("edge: {e}");
        }
        if let Some(keep) = &self.keep_dir {
            let _ = std::fs::create_dir_all(keep);
            if let Ok(entries) = std::fs::read_dir(self.dir.path()) {
                for e in entries.flatten() {
                    let _ = std::fs::copy(e.path(), keep.join(e.file_name()));
                }
            }
        }
    }
}

/// `GET http://<admin><path>` (bounded), the body.
pub fn admin_get(admin: SocketAddr, path: &str) -> Result<String, String> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(5)))
        .http_status_as_error(false)
        .build()
        .into();
    let mut r = agent
        .get(&format!("http://{admin}{path}"))
        .call()
        .map_err(|e| format!("GET {path}: {e}"))?;
    let status = r.status().as_u16();
    let body = r
        .body_mut()
        .read_to_string()
        .map_err(|e| format!("GET {path}: {e}"))?;
    if status != 200 {
        return Err(format!("GET {path}: {status} {body}"));
    }
    Ok(body)
}

/// The value of one sample (`name` or `name{labels}`, exactly as printed) in `/metrics` text.
pub fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// The sum of every sample of `name` (any labels).
pub fn metric_sum(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let rest = l.strip_prefix(name)?;
            let value = if rest.starts_with('{') {
                rest.rsplit_once(' ')?.1
            } else {
                rest.strip_prefix(' ')?
            };
            value.trim().parse::<f64>().ok()
        })
        .sum()
}

// ------------------------------------------------------------------------------- /proc

/// utime + stime of a process (`/proc/<pid>/stat`; `self` for this one), CLK_TCK = 100.
pub fn process_cpu(pid: &str) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = stat.rsplit_once(") ")?.1;
    let f: Vec<&str> = rest.split(' ').collect();
    let utime: u64 = f.get(11)?.parse().ok()?;
    let stime: u64 = f.get(12)?.parse().ok()?;
    Some(Duration::from_millis((utime + stime) * 10))
}

/// VmRSS of a process in KiB.
pub fn process_rss_kib(pid: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Raises this process's soft RLIMIT_NOFILE to its hard limit (the edge, spawned from it,
/// inherits that and raises its own toward its budget). Returns (soft, hard) now.
pub fn raise_nofile() -> Result<(u64, u64), String> {
    let (_, hard) = rlimit::getrlimit(rlimit::Resource::NOFILE).map_err(|e| e.to_string())?;
    let soft = rlimit::increase_nofile_limit(hard).map_err(|e| e.to_string())?;
    Ok((soft, hard))
}

// ------------------------------------------------------------------------------- SIP text

/// A response to `req` with all its Vias, From, Call-ID and CSeq; `to_tag` added to To
/// when it has none; `extra` headers and `sdp` (empty: no body).
fn response(req: &SipMessage, status: u16, to_tag: &str, extra: &str, sdp: &str) -> String {
    let mut out = format!("SIP/2.0 {status} OK\r\n");
    for v in req.header_values("Via") {
        out.push_str(&format!("Via: {v}\r\n"));
    }
    let h = |name: &str| req.header(name).unwrap_or_default();
    out.push_str(&format!("From: {}\r\n", h("From")));
    let to = h("To");
    if to.contains("tag=") {
        out.push_str(&format!("To: {to}\r\n"));
    } else {
        out.push_str(&format!("To: {to};tag={to_tag}\r\n"));
    }
    out.push_str(&format!(
        "Call-ID: {}\r\nCSeq: {}\r\n",
        h("Call-ID"),
        h("CSeq")
    ));
    out.push_str(extra);
    if sdp.is_empty() {
        out.push_str("Content-Length: 0\r\n\r\n");
    } else {
        out.push_str(&format!(
            "Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
            sdp.len()
        ));
    }
    out
}

/// The URI inside the first `<...>` of a header value.
fn angle_uri(value: &str) -> Option<&str> {
    value.split(['<', '>']).nth(1)
}

/// What a call needs from an SDP body: the audio address and port and, for RTP/SAVP, the
/// first `a=crypto` (checked with the project's RFC 4568 parser).
#[derive(Debug)]
struct SdpMedia {
    addr: SocketAddr,
    crypto: Option<SdesKey>,
}

fn parse_sdp(body: &[u8]) -> Result<SdpMedia, String> {
    let text = std::str::from_utf8(body).map_err(|_| "SDP is not UTF-8".to_owned())?;
    let sdp: sdp_rs::SessionDescription = text.parse().map_err(|e| format!("SDP: {e:?}"))?;
    let m = sdp
        .media_descriptions
        .first()
        .ok_or_else(|| "SDP without m-line".to_owned())?;
    let c = m
        .connections
        .first()
        .or(sdp.connection.as_ref())
        .ok_or_else(|| "SDP without c= line".to_owned())?;
    let addr = SocketAddr::new(c.connection_address.base, m.media.port);
    let mut crypto = None;
    for a in &m.attributes {
        if let sdp_rs::lines::Attribute::Other(name, Some(value)) = a {
            if name == "crypto" && crypto.is_none() {
                // Checked with the project's RFC 4568 parser; handed on as written.
                CryptoAttribute::parse(value).map_err(|e| format!("a=crypto:{value}: {e}"))?;
                let mut fields = value.split_whitespace().skip(1);
                let suite = fields.next().unwrap_or_default().to_owned();
                let key_params = fields.next().unwrap_or_default().to_owned();
                crypto = Some(SdesKey { suite, key_params });
            }
        }
    }
    Ok(SdpMedia { addr, crypto })
}

/// A fresh SDES master key + salt (30 bytes for AES_CM_128, RFC 4568 §6.2.1) as key-params.
fn fresh_key_params() -> Result<String, String> {
    use base64::Engine as _;
    use ring::rand::SecureRandom as _;
    let mut key = [0u8; 30];
    ring::rand::SystemRandom::new()
        .fill(&mut key)
        .map_err(|_| "no randomness".to_owned())?;
    Ok(format!(
        "inline:{}",
        base64::engine::general_purpose::STANDARD.encode(key)
    ))
}

// ------------------------------------------------------------------------------- PBX (UAS)

/// What the PBX answered an INVITE with: its RTP socket and the edge's PBX-side relay
/// address from the INVITE's SDP.
struct PbxLeg {
    socket: std::net::UdpSocket,
    target: SocketAddr,
}

struct Pbx {
    socket: Arc<tokio::net::UdpSocket>,
    /// Call-ID → the media leg of an answered INVITE, until the driver takes it.
    legs: Mutex<HashMap<String, PbxLeg>>,
    /// Call-ID → the 200 sent, resent when the edge retransmits the INVITE.
    answered: Mutex<HashMap<String, String>>,
    expires: u32,
    counters: Arc<Counters>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Pbx {
    async fn run(self: Arc<Self>) {
        let mut buf = vec![0u8; 65536];
        loop {
            let Ok((n, from)) = self.socket.recv_from(&mut buf).await else {
                continue;
            };
            let Ok(msg) = SipMessage::parse(&buf[..n]) else {
                bump64(&self.counters.pbx_garbage);
                continue;
            };
            if msg.status().is_some() {
                continue; // the edge's responses to our (absent) requests
            }
            let reply = match msg.method().map(|m| m.as_str().to_owned()).as_deref() {
                Some("REGISTER") => {
                    bump64(&self.counters.pbx_registers);
                    let contact = msg
                        .header("Contact")
                        .and_then(angle_uri)
                        .map(|uri| format!("Contact: <{uri}>;expires={}\r\n", self.expires))
                        .unwrap_or_default();
                    Some(response(&msg, 200, "pbx-reg", &contact, ""))
                }
                Some("INVITE") => self.invite(&msg),
                Some("ACK") => None,
                Some("BYE") => {
                    bump64(&self.counters.pbx_byes);
                    if let Ok(id) = msg.call_id() {
                        lock(&self.answered).remove(id);
                    }
                    Some(response(&msg, 200, "pbx", "", ""))
                }
                _ => Some(response(&msg, 200, "pbx", "", "")),
            };
            if let Some(reply) = reply {
                let _ = self.socket.send_to(reply.as_bytes(), from).await;
            }
        }
    }

    fn invite(&self, msg: &SipMessage) -> Option<String> {
        let call_id = msg.call_id().ok()?.to_owned();
        if let Some(again) = lock(&self.answered).get(&call_id) {
            return Some(again.clone()); // a retransmission (or re-INVITE): same answer
        }
        bump64(&self.counters.pbx_invites);
        let Ok(offer) = parse_sdp(msg.body()) else {
            return Some(response(msg, 488, "pbx", "", ""));
        };
        let Ok(socket) = std::net::UdpSocket::bind("127.0.0.1:0") else {
            return Some(response(msg, 503, "pbx", "", ""));
        };
        let port = socket.local_addr().ok()?.port();
        let sdp = format!(
            "v=0\r\no=pbx 1 1 IN IP4 127.0.0.1\r\ns=pbx\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
m=audio {port} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=ptime:20\r\na=sendrecv\r\n"
        );
        let local = self.socket.local_addr().ok()?;
        let ok = response(
            msg,
            200,
            &format!("pbx-{port}"),
            &format!("Contact: <sip:pbx@{local}>\r\n"),
            &sdp,
        );
        lock(&self.legs).insert(
            call_id.clone(),
            PbxLeg {
                socket,
                target: offer.addr,
            },
        );
        lock(&self.answered).insert(call_id, ok.clone());
        Some(ok)
    }
}

// ------------------------------------------------------------------------------- phones

/// A request a phone sends for the driver, answered with its final response.
struct Outgoing {
    text: String,
    /// Call-ID and CSeq number the final response is matched on.
    key: (String, u32),
    reply: Option<oneshot::Sender<Result<SipMessage, String>>>,
}

/// The driver's handle on one phone task.
struct PhoneHandle {
    user: String,
    /// The phone's TLS connection's local address (its Via / Contact).
    local: SocketAddr,
    tx: mpsc::Sender<Outgoing>,
    next_call: AtomicU64,
}

/// What a phone does once connected; shared by every phone.
struct PhonePlan {
    edge_tls: SocketAddr,
    keepalive: Duration,
    expires: u32,
    counters: Arc<Counters>,
}

fn register_text(user: &str, mac: &str, local: SocketAddr, cseq: u32, expires: u32) -> String {
    // RFC 5626 §4.2: instance id, reg-id and `ob` in the Contact; `Supported: outbound`.
    format!(
        "REGISTER sip:{EDGE_NAME} SIP/2.0\r\n\
Via: SIP/2.0/TLS {local};branch=z9hG4bK-reg-{mac}-{cseq};rport\r\n\
From: <sip:{user}@{EDGE_NAME}>;tag=reg-{mac}\r\n\
To: <sip:{user}@{EDGE_NAME}>\r\n\
Call-ID: reg-{mac}\r\n\
CSeq: {cseq} REGISTER\r\n\
Max-Forwards: 70\r\n\
Supported: outbound, path\r\n\
Contact: <sip:{user}@{local};transport=tls;ob>;reg-id=1;+sip.instance=\"<urn:uuid:00000000-0000-1000-8000-{mac}>\"\r\n\
Expires: {expires}\r\n\
User-Agent: pbx-edge-fleet\r\n\
Content-Length: 0\r\n\r\n"
    )
}

/// The binding lifetime a REGISTER's 200 grants (the Contact's `expires`, else `Expires`).
fn granted_expires(ok: &SipMessage, asked: u32) -> u32 {
    ok.header("Contact")
        .and_then(|c| {
            c.split(';')
                .find_map(|p| p.trim().strip_prefix("expires="))
                .and_then(|v| v.trim().parse().ok())
        })
        .or_else(|| ok.header("Expires").and_then(|v| v.trim().parse().ok()))
        .unwrap_or(asked)
}

type Tls = tokio_rustls::client::TlsStream<tokio::net::TcpStream>;

/// Connects phone `device` from `source`, registers it once; then runs it in a task.
async fn bring_up_phone(
    device: Device,
    source: IpAddr,
    roots: Arc<rustls::RootCertStore>,
    plan: Arc<PhonePlan>,
) -> Result<PhoneHandle, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_client_auth_cert(device.chain, device.key)
        .map_err(|e| e.to_string())?;
    let socket = tokio::net::TcpSocket::new_v4().map_err(|e| e.to_string())?;
    socket
        .bind(SocketAddr::new(source, 0))
        .map_err(|e| format!("bind {source}: {e}"))?;
    let tcp = socket
        .connect(plan.edge_tls)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let local = tcp.local_addr().map_err(|e| e.to_string())?;
    let name = ServerName::try_from(EDGE_NAME).map_err(|e| e.to_string())?;
    let mut tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .map_err(|e| format!("TLS handshake: {e}"))?;
    let mut buf = BytesMut::with_capacity(4096);
    let mut framer = StreamFramer::default();
    tls.write_all(register_text(&device.user, &device.mac, local, 1, plan.expires).as_bytes())
        .await
        .map_err(|e| format!("REGISTER write: {e}"))?;
    // In TLS 1.3 the edge's verdict on the certificate comes after the handshake: a refusal
    // shows here, as a closed connection instead of the 200.
    let ok = loop {
        match read_frame(&mut tls, &mut buf, &mut framer).await? {
            Frame::Message(m) => {
                let m = SipMessage::parse(&m).map_err(|e| format!("edge sent bad SIP: {e}"))?;
                match m.status() {
                    Some(s) if s < 200 => continue,
                    Some(200) => break m,
                    Some(s) => return Err(format!("REGISTER answered {s}")),
                    None => continue, // a request before we are registered: ignore
                }
            }
            _ => continue,
        }
    };
    let granted = granted_expires(&ok, plan.expires);
    let (tx, rx) = mpsc::channel(8);
    let handle = PhoneHandle {
        user: device.user.clone(),
        local,
        tx,
        next_call: AtomicU64::new(0),
    };
    tokio::spawn(run_phone(
        tls,
        buf,
        framer,
        rx,
        device.user,
        device.mac,
        local,
        granted,
        plan,
    ));
    Ok(handle)
}

async fn read_frame(
    tls: &mut Tls,
    buf: &mut BytesMut,
    framer: &mut StreamFramer,
) -> Result<Frame, String> {
    loop {
        if let Some(f) = framer
            .decode(buf)
            .map_err(|e| format!("edge sent unframeable bytes: {e}"))?
        {
            return Ok(f);
        }
        let n = tls.read_buf(buf).await.map_err(|e| format!("read: {e}"))?;
        if n == 0 {
            return Err("the edge closed the connection".to_owned());
        }
    }
}

/// Where a phone's own REGISTER's final response goes.
const REGISTER_KEY: &str = "";

#[allow(clippy::too_many_arguments)]
async fn run_phone(
    tls: Tls,
    mut buf: BytesMut,
    mut framer: StreamFramer,
    mut rx: mpsc::Receiver<Outgoing>,
    user: String,
    mac: String,
    local: SocketAddr,
    mut granted: u32,
    plan: Arc<PhonePlan>,
) {
    let c = &plan.counters;
    let (mut rd, mut wr) = tokio::io::split(tls);
    let mut pending: HashMap<(String, u32), oneshot::Sender<Result<SipMessage, String>>> =
        HashMap::new();
    let mut cseq = 1u32;
    let mut register_pending: Option<u32> = None;
    // Keep-alives start at a random phase so 10,000 phones do not ping in one burst.
    let phase =
        Duration::from_millis((mac_hash(&mac) % plan.keepalive.as_millis().max(1) as u64).max(1));
    let mut keepalive =
        tokio::time::interval_at(tokio::time::Instant::now() + phase, plan.keepalive);
    let mut awaiting_pong = false;
    let reregister_in = |granted: u32| Duration::from_secs(u64::from(granted.max(2)) / 2);
    let rereg = tokio::time::sleep(reregister_in(granted));
    tokio::pin!(rereg);
    let end = loop {
        // A lone CRLF is the edge's pong (RFC 5626 §4.4.1). The shared framer, written for
        // the server side, waits on it for a possible CRLF CRLF ping; a client knows better.
        if awaiting_pong && buf.starts_with(b"\r\n") {
            let _ = buf.split_to(2);
            bump64(&c.pongs);
            awaiting_pong = false;
            continue;
        }
        // Frames already buffered first.
        let frame = match framer.decode(&mut buf) {
            Ok(Some(f)) => Some(f),
            Ok(None) => None,
            Err(e) => break format!("edge sent unframeable bytes: {e}"),
        };
        if let Some(frame) = frame {
            match frame {
                Frame::KeepAlivePong => {
                    if awaiting_pong {
                        bump64(&c.pongs);
                        awaiting_pong = false;
                    }
                }
                Frame::KeepAlivePing => {
                    if wr.write_all(b"\r\n").await.is_err() {
                        break "write failed".to_owned();
                    }
                }
                Frame::Message(bytes) => {
                    let Ok(m) = SipMessage::parse(&bytes) else {
                        break "edge sent bad SIP".to_owned();
                    };
                    if m.status().is_none() {
                        if m.method().is_some_and(|x| x.as_str() == "ACK") {
                            continue;
                        }
                        bump64(&c.phone_requests_answered);
                        let r = response(&m, 200, &format!("ph-{mac}"), "", "");
                        if wr.write_all(r.as_bytes()).await.is_err() {
                            break "write failed".to_owned();
                        }
                        continue;
                    }
                    let status = m.status().unwrap_or_default();
                    if status < 200 {
                        continue;
                    }
                    let key = (
                        m.call_id().unwrap_or_default().to_owned(),
                        m.cseq().map(|c| c.seq).unwrap_or_default(),
                    );
                    if key.0 == format!("reg-{mac}") && register_pending == Some(key.1) {
                        register_pending = None;
                        if status == 200 {
                            bump(&c.reregisters);
                            granted = granted_expires(&m, plan.expires);
                        } else {
                            bump(&c.reregister_failures);
                        }
                        rereg
                            .as_mut()
                            .reset(tokio::time::Instant::now() + reregister_in(granted));
                    } else if let Some(reply) = pending.remove(&key) {
                        let _ = reply.send(Ok(m));
                    }
                }
            }
            continue;
        }
        tokio::select! {
            read = rd.read_buf(&mut buf) => match read {
                Ok(0) => break "the edge closed the connection".to_owned(),
                Ok(_) => {}
                Err(e) => break format!("read: {e}"),
            },
            out = rx.recv() => {
                let Some(mut out) = out else { break String::new() };
                if wr.write_all(out.text.as_bytes()).await.is_err() {
                    if let Some(r) = out.reply.take() {
                        let _ = r.send(Err("write failed".to_owned()));
                    }
                    break "write failed".to_owned();
                }
                if let Some(r) = out.reply.take() {
                    if out.key.0 != REGISTER_KEY {
                        pending.insert(out.key, r);
                    }
                }
            }
            _ = keepalive.tick() => {
                // RFC 5626 §4.4.1: CRLF CRLF, the edge answers CRLF.
                if awaiting_pong {
                    bump64(&c.pongs_missing);
                }
                if wr.write_all(b"\r\n\r\n").await.is_err() {
                    break "write failed".to_owned();
                }
                bump64(&c.keepalives_sent);
                awaiting_pong = true;
            }
            _ = &mut rereg => {
                if register_pending.is_some() {
                    bump(&c.reregister_failures); // no answer within half the lifetime
                }
                cseq += 1;
                register_pending = Some(cseq);
                let text = register_text(&user, &mac, local, cseq, plan.expires);
                if wr.write_all(text.as_bytes()).await.is_err() {
                    break "write failed".to_owned();
                }
                rereg.as_mut().reset(tokio::time::Instant::now() + reregister_in(granted));
            }
        }
    };
    for (_, reply) in pending.drain() {
        let _ = reply.send(Err(format!("phone connection ended: {end}")));
    }
    if !end.is_empty() {
        bump(&c.disconnects);
    }
    let _ = wr.shutdown().await;
}

fn mac_hash(mac: &str) -> u64 {
    u64::from_str_radix(mac, 16)
        .unwrap_or(0)
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        >> 16
}

impl PhoneHandle {
    /// Sends `text` on this phone's connection and waits (bounded) for the final response
    /// to (Call-ID, CSeq).
    async fn transact(&self, text: String, call_id: &str, cseq: u32) -> Result<SipMessage, String> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Outgoing {
                text,
                key: (call_id.to_owned(), cseq),
                reply: Some(reply),
            })
            .await
            .map_err(|_| "phone connection is gone".to_owned())?;
        match tokio::time::timeout(TRANSACTION_BOUND, rx).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err("phone task ended".to_owned()),
            Err(_) => Err(format!("no final response within {TRANSACTION_BOUND:?}")),
        }
    }

    /// Sends `text` without waiting for anything (ACK).
    async fn send(&self, text: String) -> Result<(), String> {
        self.tx
            .send(Outgoing {
                text,
                key: (REGISTER_KEY.to_owned(), 0),
                reply: None,
            })
            .await
            .map_err(|_| "phone connection is gone".to_owned())
    }
}

// ------------------------------------------------------------------------------- calls

/// A confirmed dialog of a phone, for the BYE.
#[derive(Debug, Clone)]
struct Dialog {
    phone: usize,
    call_id: String,
    from: String,
    to: String,
    target: String,
    routes: Vec<String>,
}

impl Dialog {
    fn request(&self, phone: &PhoneHandle, method: &str, cseq: u32) -> String {
        let mut routes = String::new();
        for r in &self.routes {
            routes.push_str(&format!("Route: {r}\r\n"));
        }
        format!(
            "{method} {target} SIP/2.0\r\n\
Via: SIP/2.0/TLS {local};branch=z9hG4bK-{id}-{method}{cseq};rport\r\n\
{routes}From: {from}\r\n\
To: {to}\r\n\
Call-ID: {id}\r\n\
CSeq: {cseq} {method}\r\n\
Max-Forwards: 70\r\n\
Content-Length: 0\r\n\r\n",
            target = self.target,
            local = phone.local,
            from = self.from,
            to = self.to,
            id = self.call_id,
        )
    }
}

/// What places and ends calls: the phones and the PBX (cheap to clone into tasks).
#[derive(Clone)]
struct Driver {
    pbx: Arc<Pbx>,
    phones: Arc<Vec<PhoneHandle>>,
}

/// A phone's INVITE to the PBX's user 200 from `user` (its From, with tag, is `from`).
fn invite_text(local: SocketAddr, user: &str, from: &str, call_id: &str, sdp: &str) -> String {
    format!(
        "INVITE sip:200@{EDGE_NAME} SIP/2.0\r\n\
Via: SIP/2.0/TLS {local};branch=z9hG4bK-{call_id}-INVITE1;rport\r\n\
From: {from}\r\n\
To: <sip:200@{EDGE_NAME}>\r\n\
Call-ID: {call_id}\r\n\
CSeq: 1 INVITE\r\n\
Max-Forwards: 70\r\n\
Contact: <sip:{user}@{local};transport=tls;ob>\r\n\
Content-Type: application/sdp\r\n\
Content-Length: {len}\r\n\r\n{sdp}",
        len = sdp.len(),
    )
}

impl Driver {
    /// Phone `phone` calls the PBX; with `media`, the call's [`CallMedia`] (else its phone
    /// socket is dropped once the 200 arrived). Returns the dialog for the BYE.
    async fn call(
        &self,
        phone: usize,
        keep_media: bool,
    ) -> Result<(Dialog, Option<CallMedia>), String> {
        let p = self
            .phones
            .get(phone)
            .ok_or_else(|| format!("no phone {phone}"))?;
        let n = p.next_call.fetch_add(1, Ordering::Relaxed);
        let call_id = format!("fleet-{phone}-{n}");
        let media = std::net::UdpSocket::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
        let media_port = media.local_addr().map_err(|e| e.to_string())?.port();
        let key = SdesKey {
            suite: "AES_CM_128_HMAC_SHA1_80".to_owned(),
            key_params: fresh_key_params()?,
        };
        let sdp = format!(
            "v=0\r\no=phone {n} 1 IN IP4 127.0.0.1\r\ns=call\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
m=audio {media_port} RTP/SAVP 0\r\na=crypto:1 {} {}\r\na=rtpmap:0 PCMU/8000\r\na=ptime:20\r\n\
a=sendrecv\r\n",
            key.suite, key.key_params
        );
        let from = format!("<sip:{}@{EDGE_NAME}>;tag=t{phone}x{n}", p.user);
        let invite = invite_text(p.local, &p.user, &from, &call_id, &sdp);
        let ok = p.transact(invite, &call_id, 1).await?;
        if ok.status() != Some(200) {
            return Err(format!("INVITE answered {:?}", ok.status()));
        }
        let answer = parse_sdp(ok.body())?;
        let mut routes: Vec<String> = ok
            .header_values("Record-Route")
            .iter()
            .flat_map(|v| v.split(','))
            .map(|v| v.trim().to_owned())
            .collect();
        routes.reverse(); // RFC 3261 §12.1.2: the UAC's route set is the reversed Record-Route
        let dialog = Dialog {
            phone,
            call_id: call_id.clone(),
            from,
            to: ok.header("To").unwrap_or_default().to_owned(),
            target: ok
                .header("Contact")
                .and_then(angle_uri)
                .ok_or_else(|| "200 without Contact".to_owned())?
                .to_owned(),
            routes,
        };
        p.send(dialog.request(p, "ACK", 1)).await?;
        let pbx_leg = lock(&self.pbx.legs).remove(&call_id);
        if !keep_media {
            return Ok((dialog, None));
        }
        let pbx_leg = pbx_leg.ok_or_else(|| format!("the PBX never saw {call_id}"))?;
        let edge_key = answer
            .crypto
            .ok_or_else(|| "the edge's answer has no a=crypto".to_owned())?;
        Ok((
            dialog,
            Some(CallMedia {
                call_id,
                phone_socket: media,
                phone_target: answer.addr,
                phone_sends_with: key,
                phone_receives_with: edge_key,
                pbx_socket: pbx_leg.socket,
                pbx_target: pbx_leg.target,
            }),
        ))
    }

    async fn hang_up(&self, d: &Dialog) -> Result<(), String> {
        let p = &self.phones[d.phone];
        let ok = p.transact(d.request(p, "BYE", 2), &d.call_id, 2).await?;
        match ok.status() {
            Some(200) => Ok(()),
            s => Err(format!("BYE answered {s:?}")),
        }
    }
}

/// The fleet: the edge, the PBX, the phones and the runtime they run on.
pub struct Fleet {
    runtime: tokio::runtime::Runtime,
    edge: EdgeProcess,
    pub addrs: EdgeAddrs,
    driver: Driver,
    pub counters: Arc<Counters>,
    /// Time from the first connect until every phone was registered (or had failed).
    pub bring_up: Duration,
    /// Why phones failed to come up (first few, with how many).
    pub bring_up_errors: Vec<(String, usize)>,
}

impl Fleet {
    /// Starts the edge and brings `options.phones` phones up (connected and registered).
    pub fn start(options: &EdgeOptions) -> Result<Fleet, String> {
        raise_nofile()?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(|e| format!("tokio runtime: {e}"))?;
        let counters = Arc::new(Counters::default());
        let pki = Pki::new()?;
        let mut devices = Vec::with_capacity(options.phones);
        for i in 0..options.phones {
            devices.push(pki.device(i)?);
        }
        let dir = tempfile::Builder::new()
            .prefix("pbx-edge-fleet.")
            .tempdir()
            .map_err(|e| format!("temporary directory: {e}"))?;
        let write = |name: &str, text: &str| {
            std::fs::write(dir.path().join(name), text).map_err(|e| format!("write {name}: {e}"))
        };
        write("operator-ca.crt", &pki.ca.pem())?;
        write("server-chain.crt", &pki.server_chain_pem)?;
        write("server.key", &pki.server_key_pem)?;
        write("inventory.csv", &inventory_csv(&devices))?;

        let pbx_socket = runtime
            .block_on(tokio::net::UdpSocket::bind("127.0.0.1:0"))
            .map_err(|e| format!("PBX socket: {e}"))?;
        let pbx_addr = pbx_socket.local_addr().map_err(|e| e.to_string())?;
        let port = || free_port(options.port_min..=options.port_max);
        let addrs = EdgeAddrs {
            tls: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port()?),
            pbx_side: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port()?),
            admin: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port()?),
        };
        write(
            "pbx-edge.toml",
            &edge_config(options, &addrs, pbx_addr, options.phones + 64),
        )?;
        let log = std::fs::File::create(dir.path().join("edge.log"))
            .map_err(|e| format!("edge.log: {e}"))?;
        let log2 = log.try_clone().map_err(|e| e.to_string())?;
        // The edge runs in the temporary directory: a relative binary path must not follow.
        let binary = std::fs::canonicalize(&options.edge_binary)
            .map_err(|e| format!("{}: {e}", options.edge_binary.display()))?;
        let child = Command::new(&binary)
            .arg("run")
            .arg("--config")
            .arg(dir.path().join("pbx-edge.toml"))
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .spawn()
            .map_err(|e| format!("{}: {e}", options.edge_binary.display()))?;
        let mut edge = EdgeProcess {
            pid: child.id(),
            child: Some(child),
            dir,
            keep_dir: options.keep_dir.clone(),
        };
        // Ready within 10 s (bounded), or the edge's own words.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if admin_get(addrs.admin, "/readyz").is_ok() {
                break;
            }
            let exited = edge
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten());
            if exited.is_some() || Instant::now() > deadline {
                return Err(format!(
                    "the edge did not become ready ({exited:?}):\n{}",
                    edge.log_tail()
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }

        let pbx = Arc::new(Pbx {
            socket: Arc::new(pbx_socket),
            legs: Mutex::default(),
            answered: Mutex::default(),
            expires: options.register_expires,
            counters: counters.clone(),
        });
        runtime.spawn(pbx.clone().run());

        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(pki.ca.der().clone())
            .map_err(|e| format!("root store: {e}"))?;
        let roots = Arc::new(roots);
        let plan = Arc::new(PhonePlan {
            edge_tls: addrs.tls,
            keepalive: options.keepalive,
            expires: options.register_expires,
            counters: counters.clone(),
        });
        let per_source = options.phones_per_source.max(1);
        let started = Instant::now();
        let results = runtime.block_on(async {
            let gate = Arc::new(Semaphore::new(options.connect_concurrency.max(1)));
            let mut tasks = Vec::with_capacity(devices.len());
            for (i, device) in devices.into_iter().enumerate() {
                let group = i / per_source;
                let source = IpAddr::V4(Ipv4Addr::new(
                    127,
                    1,
                    (group / 250) as u8,
                    (group % 250 + 1) as u8,
                ));
                let (gate, roots, plan) = (gate.clone(), roots.clone(), plan.clone());
                tasks.push(tokio::spawn(async move {
                    let _permit = gate.acquire_owned().await;
                    let r = tokio::time::timeout(
                        BRING_UP_BOUND,
                        bring_up_phone(device, source, roots, plan.clone()),
                    )
                    .await
                    .unwrap_or_else(|_| Err(format!("not registered within {BRING_UP_BOUND:?}")));
                    match &r {
                        Ok(_) => bump(&plan.counters.registered),
                        Err(_) => bump(&plan.counters.register_failures),
                    }
                    r
                }));
            }
            let mut out = Vec::with_capacity(tasks.len());
            for t in tasks {
                out.push(
                    t.await
                        .map_err(|e| format!("phone task: {e}"))
                        .and_then(|r| r),
                );
            }
            out
        });
        let bring_up = started.elapsed();
        let mut phones = Vec::with_capacity(results.len());
        let mut errors: Vec<(String, usize)> = Vec::new();
        for r in results {
            match r {
                Ok(p) => phones.push(p),
                Err(e) => match errors.iter_mut().find(|(m, _)| *m == e) {
                    Some((_, n)) => *n += 1,
                    None => errors.push((e, 1)),
                },
            }
        }
        Ok(Fleet {
            runtime,
            edge,
            addrs,
            driver: Driver {
                pbx,
                phones: Arc::new(phones),
            },
            counters,
            bring_up,
            bring_up_errors: errors,
        })
    }

    pub fn edge_pid(&self) -> u32 {
        self.edge.pid
    }

    pub fn registered_phones(&self) -> usize {
        self.driver.phones.len()
    }

    /// The edge's `/metrics` text.
    pub fn edge_metrics(&self) -> Result<String, String> {
        admin_get(self.addrs.admin, "/metrics")
    }

    /// Phone `phone` sends an INVITE whose From names phone `other`'s SIP user (a user its
    /// MAC is not granted in the generated inventory): the edge's final status.
    pub fn call_as_other_user(&self, phone: usize, other: usize) -> Result<u16, String> {
        let d = self.driver.clone();
        self.runtime.block_on(async move {
            let p = d.phones.get(phone).ok_or("no such phone")?;
            let o = d.phones.get(other).ok_or("no such phone")?;
            let call_id = format!("fleet-other-user-{phone}-{other}");
            let from = format!("<sip:{}@{EDGE_NAME}>;tag=spoof", o.user);
            let sdp = "v=0\r\no=phone 1 1 IN IP4 127.0.0.1\r\ns=call\r\nc=IN IP4 127.0.0.1\r\n\
t=0 0\r\nm=audio 9 RTP/SAVP 0\r\n\
a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz\r\n";
            let text = invite_text(p.local, &o.user, &from, &call_id, sdp);
            let r = p.transact(text, &call_id, 1).await?;
            Ok(r.status().unwrap_or_default())
        })
    }

    /// Stops the phones (connections closed) and the edge (by PID). Returns how the edge
    /// ended.
    pub fn stop(mut self) -> Result<String, String> {
        // Dropping the senders ends every phone task (its connection closed).
        self.driver.phones = Arc::new(Vec::new());
        self.runtime
            .block_on(async { tokio::time::sleep(Duration::from_millis(200)).await });
        let r = self.edge.stop();
        self.runtime.shutdown_timeout(Duration::from_secs(2));
        r
    }

    /// The edge's log, last lines.
    pub fn edge_log_tail(&self) -> String {
        self.edge.log_tail()
    }
}

// ------------------------------------------------------------------------------- EdgeRun

/// Calls set up through the edge, their media for the generator.
pub struct EdgeRun {
    pub media: Vec<CallMedia>,
    pub pid: u32,
    pub fleet: Fleet,
    dialogs: Vec<Dialog>,
    /// How long setting the calls up took.
    pub setup_time: Duration,
}

/// What [`EdgeRun::churn`] did.
#[derive(Debug, Clone, Default)]
pub struct ChurnReport {
    pub attempted: usize,
    pub completed: usize,
    pub failed: usize,
    /// The first few distinct failures, with how many.
    pub errors: Vec<(String, usize)>,
}

/// Counts distinct error texts (the first 8 kept).
fn tally(errors: &mut Vec<(String, usize)>, e: String) {
    if let Some((_, n)) = errors.iter_mut().find(|(m, _)| *m == e) {
        *n += 1;
    } else if errors.len() < 8 {
        errors.push((e, 1));
    }
}

/// Starts the edge and `max(calls, options.phones)` phones and sets up `calls` calls (phone
/// `i` places call `i`): each a SRTP offer from a phone, answered by the PBX with plain RTP.
///
/// For the caller: the edge ends a call whose streams receive nothing for
/// `media.timeout_secs` (60 s by default), so media should start soon after this returns.
/// The run owns a tokio runtime: call this, `churn` and `finish` from plain threads, never
/// from inside an async context (and do not drop an `EdgeRun` there).
pub fn setup_calls(calls: usize, options: &EdgeOptions) -> Result<EdgeRun, String> {
    let mut o = options.clone();
    o.phones = o.phones.max(calls);
    let fleet = Fleet::start(&o)?;
    if fleet.registered_phones() < o.phones {
        let errors = fleet.bring_up_errors.clone();
        let _ = fleet.stop();
        return Err(format!("phones failed to register: {errors:?}"));
    }
    let started = Instant::now();
    let driver = fleet.driver.clone();
    let concurrency = o.connect_concurrency.max(1);
    let results = fleet.runtime.block_on(async move {
        let gate = Arc::new(Semaphore::new(concurrency));
        let mut set = tokio::task::JoinSet::new();
        for i in 0..calls {
            let (gate, driver) = (gate.clone(), driver.clone());
            set.spawn(async move {
                let _permit = gate.acquire_owned().await;
                (i, driver.call(i, true).await)
            });
        }
        let mut out = Vec::with_capacity(calls);
        while let Some(r) = set.join_next().await {
            if let Ok(r) = r {
                out.push(r);
            }
        }
        out.sort_by_key(|(i, _)| *i);
        out
    });
    let setup_time = started.elapsed();
    let mut media = Vec::with_capacity(calls);
    let mut dialogs = Vec::with_capacity(calls);
    let mut errors = Vec::new();
    for (_, r) in results {
        match r {
            Ok((d, Some(m))) => {
                dialogs.push(d);
                media.push(m);
            }
            Ok((d, None)) => dialogs.push(d),
            Err(e) => tally(&mut errors, e),
        }
    }
    let run = EdgeRun {
        media,
        pid: fleet.edge_pid(),
        fleet,
        dialogs,
        setup_time,
    };
    if run.media.len() < calls {
        let failed = calls - run.media.len();
        let _ = run.finish();
        return Err(format!("{failed} of {calls} calls failed: {errors:?}"));
    }
    Ok(run)
}

impl EdgeRun {
    /// Extra short calls while the others run ("new calls keep arriving"): `calls_per_sec`
    /// for `secs`, each INVITE / 200 / ACK / BYE from the next phone in turn, no media. Waits
    /// (bounded by the transaction timeouts) for every one to end.
    pub fn churn(&self, calls_per_sec: f64, secs: f64) -> ChurnReport {
        let driver = self.fleet.driver.clone();
        let phones = driver.phones.len();
        let total = (calls_per_sec * secs).max(0.0) as usize;
        if phones == 0 || total == 0 || calls_per_sec <= 0.0 {
            return ChurnReport::default();
        }
        let gap = Duration::from_secs_f64(1.0 / calls_per_sec);
        self.fleet.runtime.block_on(async move {
            let mut set = tokio::task::JoinSet::new();
            let mut tick = tokio::time::interval(gap);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            for i in 0..total {
                tick.tick().await;
                let driver = driver.clone();
                set.spawn(async move {
                    let (d, _) = driver.call(i % phones, false).await?;
                    driver.hang_up(&d).await
                });
            }
            let mut report = ChurnReport {
                attempted: total,
                ..ChurnReport::default()
            };
            while let Some(r) = set.join_next().await {
                match r {
                    Ok(Ok(())) => report.completed += 1,
                    Ok(Err(e)) => {
                        report.failed += 1;
                        tally(&mut report.errors, e);
                    }
                    Err(e) => {
                        report.failed += 1;
                        tally(&mut report.errors, e.to_string());
                    }
                }
            }
            report
        })
    }

    /// Hangs every call up (BYE, waiting for each 200), then stops the edge by its PID.
    pub fn finish(self) -> Result<(), String> {
        let EdgeRun {
            media,
            fleet,
            dialogs,
            ..
        } = self;
        drop(media);
        let driver = fleet.driver.clone();
        let total = dialogs.len();
        let errors = fleet.runtime.block_on(async move {
            let gate = Arc::new(Semaphore::new(64));
            let mut set = tokio::task::JoinSet::new();
            for d in dialogs {
                let (gate, driver) = (gate.clone(), driver.clone());
                set.spawn(async move {
                    let _permit = gate.acquire_owned().await;
                    driver
                        .hang_up(&d)
                        .await
                        .map_err(|e| format!("{}: {e}", d.call_id))
                });
            }
            let mut errors = Vec::new();
            while let Some(r) = set.join_next().await {
                match r {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => errors.push(e),
                    Err(e) => errors.push(e.to_string()),
                }
            }
            errors
        });
        let stopped = fleet.stop();
        if let Some(first) = errors.first() {
            return Err(format!(
                "{} of {total} BYEs failed, first: {first}",
                errors.len()
            ));
        }
        stopped.map(|_| ())
    }
}
