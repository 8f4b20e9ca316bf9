//! Configuration: the typed shape of `pbx-edge.toml`, how it is layered (built-in defaults ←
//! TOML file ← `PBX_EDGE_*` environment) and how it is validated.
//!
//! `run` and `check-config` share one path: [`load`] parses into [`Config`] once (unknown keys
//! are errors, so a typo never falls back to a default) and [`validate`] then checks everything
//! that needs the file system, collecting every problem instead of stopping at the first.
//!
//! Relative paths inside a config file are resolved against that file's directory, so a
//! config works the same from any working directory (containers, systemd, a checkout).

pub mod api_token;
pub mod fdlimit;
pub mod files;
mod load;
pub mod pattern;
pub mod port_range;
pub mod server_cert;
mod validate;

pub use load::{load, load_str, ConfigSource, EnvVars, LoadError};
pub use validate::{validate, validate_at, Problem, ValidationReport};

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;

/// Prefix of environment overrides: `PBX_EDGE_<SECTION>__<KEY>` (e.g. `PBX_EDGE_PBX__ADDRESS`).
pub const ENV_PREFIX: &str = "PBX_EDGE_";

/// How the phone listener treats client certificates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ClientCertMode {
    /// Every phone must present a device certificate that verifies (the default).
    #[default]
    Required,
    /// Connections without a certificate are accepted with identity `anonymous`; SIP policy
    /// (the inventory's `[anonymous]` section) decides what they may do. A relaxation: logged.
    Optional,
    /// No client certificates are requested; every connection is `anonymous`. A relaxation.
    Off,
}

impl ClientCertMode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Required => "required",
            Self::Optional => "optional",
            Self::Off => "off",
        }
    }
}

/// What to do with a device certificate shared by many units (no unique MAC in it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SharedCertPolicy {
    #[default]
    Reject,
    Shared,
}

/// What to do with a MAC outside the vendor's OUIs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OuiPolicy {
    /// Log and count, still accepted.
    #[default]
    Warn,
    /// Refuse the handshake.
    Refuse,
}

/// `media.dscp` default: EF (RFC 3246), the marking for voice.
pub const DEFAULT_MEDIA_DSCP: u8 = 46;
/// `sip.dscp` default: CS3 (RFC 4594 §3.2, signalling).
pub const DEFAULT_SIP_DSCP: u8 = 24;
/// The largest DSCP: six bits (RFC 2474 §3).
pub const MAX_DSCP: u8 = 63;

/// `[[tls.certificates]]`: a server certificate chain and its key. The first is the default;
/// the others are chosen by SNI (names from their SAN DNS names).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ServerCertConfig {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// `tls.max_client_chain_certs` default: real device chains are 1-3 certificates (Snom:
/// device and "Snom Phone 1"; Cisco: MIC and manufacturing CA); 8 leaves room for a vendor
/// that also sends its root or a longer operator chain.
pub const DEFAULT_MAX_CLIENT_CHAIN_CERTS: usize = 8;
/// `tls.max_client_chain_bytes` default: 8 certificates of up to 4 KB.
pub const DEFAULT_MAX_CLIENT_CHAIN_BYTES: usize = 32 * 1024;

/// `[tls]`: the phone-facing SIP over TLS listener.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    pub listen: SocketAddr,
    pub client_cert: ClientCertMode,
    /// RFC 5922 §7.2 forbids wildcard certificates for SIP; `true` is a logged relaxation.
    pub allow_wildcard_server_cert: bool,
    pub certificates: Vec<ServerCertConfig>,
    /// Seconds a TLS handshake may take before the connection is dropped.
    pub handshake_timeout_secs: u64,
    /// Optional MAC deny-list file: one MAC per line, `#` comments; hot-reloaded.
    pub mac_deny_list: Option<PathBuf>,
    /// Phone connections open at once (handshakes included); more are closed at accept.
    pub max_connections: usize,
    /// Phone connections open at once from one source address (a NAT may hide a whole
    /// office of phones behind one address).
    pub max_connections_per_ip: usize,
    /// Certificates a phone may present in its chain (device certificate included); more are
    /// refused before any parsing (`chain_too_large`).
    pub max_client_chain_certs: usize,
    /// Bytes (sum of the DER certificates) a phone's chain may have.
    pub max_client_chain_bytes: usize,
}

impl Default for TlsConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 5061),
            client_cert: ClientCertMode::Required,
            allow_wildcard_server_cert: false,
            certificates: Vec::new(),
            handshake_timeout_secs: 10,
            mac_deny_list: None,
            max_connections: 10_000,
            max_connections_per_ip: 256,
            max_client_chain_certs: DEFAULT_MAX_CLIENT_CHAIN_CERTS,
            max_client_chain_bytes: DEFAULT_MAX_CLIENT_CHAIN_BYTES,
        }
    }
}

/// `[vendors.<name>]`: overrides of a built-in vendor profile (snom, yealink, polycom, cisco,
/// grandstream, fanvil, operator) or a new profile. Absent keys keep the built-in values.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct VendorConfig {
    /// CA bundles (PEM or DER files; a PEM file may hold several certificates).
    pub ca: Vec<PathBuf>,
    /// CRL files (PEM or DER) for this vendor's CAs.
    pub crl: Vec<PathBuf>,
    /// Accept SHA-1 signatures / RSA-1024 keys in this vendor's chains (counted, logged).
    pub legacy_crypto: bool,
    pub shared_certs: SharedCertPolicy,
    /// Where the MAC is read from; `None` = the built-in profile's rule.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mac_from: Option<String>,
    /// Allowed OUIs (6 hex digits, any separators); `None` = the built-in list.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ouis: Option<Vec<String>>,
    pub oui_policy: OuiPolicy,
    /// Subject CNs that name the vendor's shared certificate although its MAC source holds a
    /// value (exact, case-insensitive); empty = only a certificate with no value at all there.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub shared_cert_names: Vec<String>,
    /// `false` disables a built-in profile entirely.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
}

/// SIP transport toward the PBX.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PbxTransport {
    #[default]
    Udp,
    Tcp,
}

impl PbxTransport {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Udp => "udp",
            Self::Tcp => "tcp",
        }
    }
}

/// `[pbx]`: the legacy PBX behind the edge.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct PbxConfig {
    /// Where the PBX listens for SIP.
    pub address: SocketAddr,
    pub transport: PbxTransport,
    /// pbx-edge's own SIP address toward the PBX.
    pub listen: SocketAddr,
    /// TCP only: an idle connection to or from the PBX is probed after this many seconds
    /// (TCP keep-alive, then 3 probes this far apart / 4), and data the PBX does not
    /// acknowledge for this long fails the connection (TCP_USER_TIMEOUT), so a PBX that
    /// vanished without a FIN/RST is noticed and the next send reconnects. 0 = off (the
    /// kernel's defaults: about two hours, and 15 minutes of retransmissions).
    pub tcp_keepalive_secs: u64,
}

impl Default for PbxConfig {
    fn default() -> Self {
        Self {
            address: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 5060),
            transport: PbxTransport::Udp,
            listen: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 5080),
            tcp_keepalive_secs: 20,
        }
    }
}

/// Whether phones must use SRTP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SrtpPolicy {
    /// A plain RTP/AVP offer from a phone is refused with 488 (the default).
    #[default]
    Mandatory,
    /// Best-effort SRTP: plain RTP from phones is relayed as is. A logged relaxation.
    Optional,
}

/// `media.io`: how the relay workers move datagrams (see `media::batch_io`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MediaIo {
    /// Batched when io_uring can be set up here, else per-packet; which one and why is logged
    /// once at start (the default).
    #[default]
    Auto,
    /// io_uring: one receive per ready socket and one send per packet, each set in one
    /// system call per worker round. Start fails if io_uring is unavailable.
    Batched,
    /// One `recvfrom` and one `sendto` per packet.
    PerPacket,
}

impl MediaIo {
    /// The config spelling.
    pub fn label(self) -> &'static str {
        match self {
            MediaIo::Auto => "auto",
            MediaIo::Batched => "batched",
            MediaIo::PerPacket => "per_packet",
        }
    }
}

/// `[media]`: the SRTP ⇄ RTP relay.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct MediaConfig {
    /// Address relay sockets toward phones bind to.
    pub phone_bind: IpAddr,
    /// Address written into SDP sent to phones (the public / NAT address).
    pub phone_advertise: IpAddr,
    /// Address relay sockets toward the PBX bind to (also written into the PBX's SDP).
    pub pbx_bind: IpAddr,
    pub port_min: u16,
    pub port_max: u16,
    pub srtp: SrtpPolicy,
    /// A stream that receives nothing for this long (while not on hold) ends the call.
    pub timeout_secs: u64,
    /// Accept SRTCP sent unencrypted (E-flag 0, tag verified) although the phone did not
    /// announce UNENCRYPTED_SRTCP (some Cisco SPA firmware). A relaxation: logged and counted
    /// in `pbx_edge_media_srtcp_unannounced_unencrypted_total`.
    pub accept_unannounced_unencrypted_srtcp: bool,
    /// Relay ports one device (its MAC; one connection for shared certificates and anonymous
    /// phones) may hold at once, over all its calls. Each relayed m-line holds 4 (RTP and
    /// RTCP toward the phone and toward the PBX), leased when the offer is made. An offer
    /// beyond it is answered 503.
    pub max_ports_per_device: usize,
    /// DSCP (0..=63) of every relay socket, both sides: EF (46) by default, 0 = unmarked.
    /// See [`crate::qos`].
    pub dscp: u8,
    /// Socket I/O of the relay workers: `auto` (batched io_uring if available, else
    /// per-packet), `batched` (io_uring or refuse to start), `per_packet`.
    pub io: MediaIo,
}

impl Default for MediaConfig {
    fn default() -> Self {
        Self {
            phone_bind: IpAddr::V4(Ipv4Addr::LOCALHOST),
            phone_advertise: IpAddr::V4(Ipv4Addr::LOCALHOST),
            pbx_bind: IpAddr::V4(Ipv4Addr::LOCALHOST),
            port_min: 30000,
            port_max: 39999,
            srtp: SrtpPolicy::Mandatory,
            timeout_secs: 60,
            accept_unannounced_unencrypted_srtcp: false,
            max_ports_per_device: 128,
            dscp: DEFAULT_MEDIA_DSCP,
            io: MediaIo::Auto,
        }
    }
}

/// `[inventory]`: which device (MAC) may use which SIP users.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct InventoryConfig {
    /// TOML or CSV file (by extension); hot-reloaded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<PathBuf>,
}

/// `[admin]`: the HTTP port for /metrics, /healthz, /readyz and /api/*.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    pub listen: SocketAddr,
    /// File holding the bearer token `/api/*` requires (read on each request, so a rotated
    /// secret applies at once). Without it `/api/*` is open on a loopback listener and
    /// disabled (403) on any other.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api_token_file: Option<PathBuf>,
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 9090),
            api_token_file: None,
        }
    }
}

/// `[provisioning]`: the optional HTTPS provisioning gateway (absent = off). Phones fetch
/// their configuration files over HTTPS with the same server certificates and the same
/// device-certificate verification as the SIP listener (a client certificate is always
/// required here); each device may fetch only the paths its MAC is allowed.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ProvisioningConfig {
    /// The HTTPS listener (e.g. `0.0.0.0:8443`).
    pub listen: SocketAddr,
    /// An upstream HTTP provisioning server (`http://127.0.0.1:8080`); requests are forwarded
    /// with `X-Pbx-Edge-Mac` / `X-Pbx-Edge-Vendor`. Exactly one of `upstream` and `root`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream: Option<String>,
    /// A directory to serve files from. Exactly one of `upstream` and `root`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root: Option<PathBuf>,
    /// Path patterns every authenticated device (and shared certificate) may fetch
    /// (see [`pattern`]): the vendors' common files, firmware.
    #[serde(default)]
    pub common: Vec<String>,
    /// How long the upstream may take to answer a request (response headers), in seconds.
    #[serde(default = "default_upstream_timeout_secs")]
    pub upstream_timeout_secs: u64,
}

fn default_upstream_timeout_secs() -> u64 {
    10
}

/// `[sip]`: SIP transport and transaction settings (both legs).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct SipConfig {
    /// The host phones address the edge by (Via sent-by toward phones, Warning agent, Routes
    /// and Request-URIs naming the edge). Usually the TLS server certificate's name. The
    /// Contact toward phones uses `media.phone_advertise` instead, so phones need no DNS.
    pub domain: String,
    /// RFC 3261 T1 (RTT estimate) in milliseconds, for UDP toward the PBX.
    pub t1_ms: u64,
    /// RFC 3261 T2 (maximum retransmit interval) in milliseconds.
    pub t2_ms: u64,
    /// RFC 3261 T4 (maximum message lifetime in the network) in milliseconds.
    pub t4_ms: u64,
    /// Largest SIP message accepted (bytes), both legs.
    pub max_message_bytes: usize,
    /// Most header lines in one message.
    pub max_headers: usize,
    /// Longest header line (bytes).
    pub max_line_bytes: usize,
    /// A phone connection with no traffic at all (not even keep-alives) for this long is
    /// closed. Phones send RFC 5626 CRLF keep-alives far more often.
    pub idle_timeout_secs: u64,
    /// New requests per second one device may send (its MAC; per connection for shared
    /// certificates and anonymous phones). Beyond its budget a phone gets 503 with
    /// Retry-After. 0 switches the limit off: a logged relaxation.
    pub phone_requests_per_second: u32,
    /// Requests a device may send at once before the rate applies (a phone with many BLF
    /// keys subscribes to all of them after boot).
    pub phone_request_burst: u32,
    /// A write toward a phone that makes no progress for this long (the phone stopped reading
    /// and its TCP window is full) closes the connection.
    pub write_timeout_secs: u64,
    /// Bytes one phone connection may have queued for writing; beyond it the connection is
    /// closed as stuck.
    pub write_queue_bytes: usize,
    /// Calls (INVITE dialogs, ringing or established, either direction) one device (its MAC;
    /// one connection for shared certificates and anonymous phones) may have at once. A new
    /// call beyond it is answered 486.
    pub max_calls_per_device: usize,
    /// What the edge does with the identity headers a phone sends (P-Asserted-Identity,
    /// P-Preferred-Identity, Remote-Party-ID): see [`IdentityHeaders`].
    pub identity_headers: IdentityHeaders,
    /// DSCP (0..=63) of the SIP sockets: accepted phone TLS connections and the PBX-side
    /// UDP socket / TCP connections. CS3 (24) by default, 0 = unmarked. See [`crate::qos`].
    pub dscp: u8,
}

/// `sip.identity_headers`: identity headers in requests from phones are never forwarded as
/// the phone wrote them (a phone could name any user). `assert` (the default) also adds a
/// `P-Asserted-Identity` naming the user the edge authorized (RFC 3325 §9.1), so a PBX that
/// trusts the edge (Asterisk `trust_id_inbound = yes`) learns the caller from the edge, not
/// from the phone; `strip` only removes them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum IdentityHeaders {
    /// Remove them and assert the authorized user.
    #[default]
    Assert,
    /// Remove them only.
    Strip,
}

impl Default for SipConfig {
    fn default() -> Self {
        Self {
            domain: "sbc.test".to_owned(),
            t1_ms: 500,
            t2_ms: 4000,
            t4_ms: 5000,
            max_message_bytes: 65_535,
            max_headers: 128,
            max_line_bytes: 8_192,
            idle_timeout_secs: 900,
            phone_requests_per_second: 20,
            phone_request_burst: 100,
            write_timeout_secs: 10,
            write_queue_bytes: 1 << 20,
            max_calls_per_device: 16,
            identity_headers: IdentityHeaders::Assert,
            dscp: DEFAULT_SIP_DSCP,
        }
    }
}

/// `[shutdown]`: what happens on SIGTERM / SIGINT.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ShutdownConfig {
    /// After a signal, listeners close at once; requests waiting for a final response and
    /// calls in progress get this long to finish. Calls left then get a BYE on both legs.
    pub drain_timeout_secs: u64,
}

impl Default for ShutdownConfig {
    fn default() -> Self {
        Self {
            drain_timeout_secs: 10,
        }
    }
}

/// Transport toward the HEP collector.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HepTransport {
    /// One datagram per captured message (what heplify-server and Homer expect by default).
    #[default]
    Udp,
    /// One connection, reconnected with a backoff.
    Tcp,
}

impl HepTransport {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Udp => "udp",
            Self::Tcp => "tcp",
        }
    }
}

/// `[hep]`: SIP capture to a Homer / HEP v3 collector; off while `address` is not set.
#[derive(Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct HepConfig {
    /// The collector, `host:port` (e.g. `10.0.0.20:9060`); resolved once at start-up.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    pub transport: HepTransport,
    /// The capture agent id (HEP chunk 0x000c) Homer shows for this edge.
    pub id: u32,
    /// Sent as the HEP authentication key (chunk 0x000e) when set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    /// Captured messages waiting for the sender; more are dropped and counted.
    pub queue: usize,
    /// Payload bytes of the captured messages waiting for the sender; more are dropped and
    /// counted (bounds the memory a stalled collector can make the edge hold).
    pub queue_bytes: usize,
}

impl Default for HepConfig {
    fn default() -> Self {
        Self {
            address: None,
            transport: HepTransport::Udp,
            id: 2001,
            password: None,
            queue: 4096,
            queue_bytes: 8 << 20,
        }
    }
}

impl std::fmt::Debug for HepConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HepConfig")
            .field("address", &self.address)
            .field("transport", &self.transport)
            .field("id", &self.id)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("queue", &self.queue)
            .field("queue_bytes", &self.queue_bytes)
            .finish()
    }
}

/// `[call_log]`: one JSON line per ended call; off while `file` is not set.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct CallLogConfig {
    /// A file to append to (created 0640; relative to the config file's directory), or `-`
    /// for stdout. Reopened on SIGHUP (log rotation).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// Human-readable lines (coloured on a terminal).
    #[default]
    Text,
    /// One JSON object per line, for log shippers.
    Json,
}

/// `[log]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    pub format: LogFormat,
    /// A tracing filter (`info`, `pbx_edge=debug`, ...); `RUST_LOG` overrides it.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            format: LogFormat::Text,
            level: "info".to_owned(),
        }
    }
}

/// The whole configuration.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub tls: TlsConfig,
    pub vendors: BTreeMap<String, VendorConfig>,
    pub pbx: PbxConfig,
    pub sip: SipConfig,
    pub media: MediaConfig,
    pub inventory: InventoryConfig,
    pub admin: AdminConfig,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provisioning: Option<ProvisioningConfig>,
    pub shutdown: ShutdownConfig,
    pub log: LogConfig,
    pub hep: HepConfig,
    pub call_log: CallLogConfig,
}

impl Config {
    /// Every file path the config names, with the key that names it (for validation and
    /// for resolving relative paths).
    pub fn paths_mut(&mut self) -> Vec<(String, &mut PathBuf)> {
        let mut out = Vec::new();
        for (i, c) in self.tls.certificates.iter_mut().enumerate() {
            out.push((format!("tls.certificates[{i}].cert"), &mut c.cert));
            out.push((format!("tls.certificates[{i}].key"), &mut c.key));
        }
        if let Some(p) = self.tls.mac_deny_list.as_mut() {
            out.push(("tls.mac_deny_list".to_owned(), p));
        }
        for (name, v) in self.vendors.iter_mut() {
            for (i, p) in v.ca.iter_mut().enumerate() {
                out.push((format!("vendors.{name}.ca[{i}]"), p));
            }
            for (i, p) in v.crl.iter_mut().enumerate() {
                out.push((format!("vendors.{name}.crl[{i}]"), p));
            }
        }
        if let Some(p) = self.inventory.file.as_mut() {
            out.push(("inventory.file".to_owned(), p));
        }
        if let Some(p) = self.admin.api_token_file.as_mut() {
            out.push(("admin.api_token_file".to_owned(), p));
        }
        out
    }
}
