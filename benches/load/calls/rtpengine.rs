//! The rtpengine target: Debian's `rtpengine` in userspace only (`--table=-1`, no kernel
//! forwarding), driven over its ng control protocol, set up per call with the same SDP the edge
//! sees: the phone offers RTP/SAVP with an SDES `a=crypto` (AES_CM_128_HMAC_SHA1_80), the PBX
//! side gets RTP/AVP, and the PBX's RTP/AVP answer goes back to the phone as RTP/SAVP with
//! rtpengine's own key (the flags benches/load/sip_load.sh gave Kamailio's rtpengine module:
//! `RTP/AVP replace-origin replace-session-connection` on the offer, `RTP/SAVP ...` on the answer).
//!
//! ng protocol: one UDP datagram per request, `<cookie> <bencoded dictionary>`; the reply
//! carries the same cookie and a dictionary with `result` (`ok`, `pong`, `error` with
//! `error-reason`) and, for offer and answer, the rewritten `sdp`. rtpengine caches replies by
//! cookie, so a request resent after a lost reply is answered, not executed twice.
//!
//! The process is started with its own temporary directory (pid file, log), watched by PID and
//! stopped by PID: SIGTERM, then SIGKILL after a bound (also when dropped).

use std::collections::HashMap;
use std::fs::File;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_bencode::value::Value;

use crate::legs::{CallMedia, SdesKey};
use crate::media::random_sdes_key;

const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
/// One ng request: resent after this long without a reply, up to `NG_TRIES` times.
const NG_TIMEOUT: Duration = Duration::from_millis(500);
const NG_TRIES: u32 = 6;
/// How long rtpengine gets to answer its first ping, and to exit after SIGTERM.
const START_TIMEOUT: Duration = Duration::from_secs(10);
const STOP_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, Clone)]
pub struct RtpengineOptions {
    pub binary: String,
    /// rtpengine's media port range (4 ports per call: RTP + RTCP on each side). Keep it out
    /// of the kernel's ephemeral range (/proc/sys/net/ipv4/ip_local_port_range), where the
    /// generator's own sockets are bound.
    pub port_min: u16,
    pub port_max: u16,
    /// rtpengine's worker threads (`--num-threads`); `None`: its default (one per core).
    pub threads: Option<usize>,
}

impl Default for RtpengineOptions {
    fn default() -> Self {
        RtpengineOptions {
            binary: "/usr/bin/rtpengine".into(),
            port_min: 20000,
            port_max: 29999,
            threads: None,
        }
    }
}

/// A running rtpengine, stopped by PID when finished or dropped.
pub struct Rtpengine {
    child: Option<Child>,
    pid: u32,
    ng: UdpSocket,
    ng_addr: SocketAddr,
    cookie: u64,
    dir: tempfile::TempDir,
    /// Calls set up and not yet deleted: (call-id, from-tag).
    calls: Vec<(String, String)>,
}

impl Rtpengine {
    /// Starts rtpengine (userspace, loopback only) and waits until it answers an ng ping.
    pub fn start(options: &RtpengineOptions) -> Result<Rtpengine, String> {
        let dir = tempfile::Builder::new()
            .prefix("call-load-rtpengine.")
            .tempdir()
            .map_err(|e| format!("temporary directory: {e}"))?;
        let ng_port = free_udp_port()?;
        let ng_addr = SocketAddr::new(LOOPBACK, ng_port);
        let log = File::create(dir.path().join("rtpengine.log"))
            .map_err(|e| format!("rtpengine log: {e}"))?;
        let log_err = log.try_clone().map_err(|e| format!("rtpengine log: {e}"))?;
        let mut command = Command::new(&options.binary);
        command
            .args([
                "--config-file=none",
                "--foreground",
                "--log-stderr",
                "--log-level=4",
                "--table=-1",
                "--interface=127.0.0.1",
                "--delete-delay=0",
                "--timeout=60",
            ])
            .arg(format!("--listen-ng={ng_addr}"))
            .arg(format!("--port-min={}", options.port_min))
            .arg(format!("--port-max={}", options.port_max))
            .arg(format!(
                "--pidfile={}",
                dir.path().join("rtpengine.pid").display()
            ))
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err);
        if let Some(threads) = options.threads {
            command.arg(format!("--num-threads={threads}"));
        }
        let child = command
            .spawn()
            .map_err(|e| format!("starting {}: {e}", options.binary))?;
        let ng = UdpSocket::bind((LOOPBACK, 0)).map_err(|e| format!("ng socket: {e}"))?;
        let mut engine = Rtpengine {
            pid: child.id(),
            child: Some(child),
            ng,
            ng_addr,
            cookie: 0,
            dir,
            calls: Vec::new(),
        };
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(child) = engine.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    engine.child = None;
                    return Err(format!(
                        "rtpengine exited at start ({status}): {}",
                        engine.log_tail()
                    ));
                }
            }
            let ping = dict(vec![("command", bytes("ping"))]);
            match engine.request_once(&ping, Duration::from_millis(200)) {
                Ok(reply) if text(&reply, "result") == Some("pong") => return Ok(engine),
                _ if Instant::now() > deadline => {
                    return Err(format!(
                        "rtpengine did not answer a ping within {START_TIMEOUT:?}: {}",
                        engine.log_tail()
                    ))
                }
                _ => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The last lines of rtpengine's log (for error messages).
    pub fn log_tail(&self) -> String {
        let log =
            std::fs::read_to_string(self.dir.path().join("rtpengine.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(5)..].join(" | ")
    }

    /// Sets up `calls` calls, one offer/answer each, with fresh generator sockets and keys.
    pub fn setup_calls(&mut self, calls: usize) -> Result<Vec<CallMedia>, String> {
        (0..calls).map(|i| self.setup_call(i)).collect()
    }

    fn setup_call(&mut self, index: usize) -> Result<CallMedia, String> {
        let call_id = format!("call-load-{}-{index}", self.pid);
        let (from_tag, to_tag) = (format!("phone-{index}"), format!("pbx-{index}"));
        let phone_socket = bind_loopback()?;
        let pbx_socket = bind_loopback()?;
        let phone_key = random_sdes_key()?;
        let phone_sdp = sdp(
            index,
            local_addr(&phone_socket)?,
            "RTP/SAVP",
            Some(&phone_key),
        );
        let offer = dict(vec![
            ("command", bytes("offer")),
            ("call-id", bytes(&call_id)),
            ("from-tag", bytes(&from_tag)),
            ("sdp", bytes(&phone_sdp)),
            ("transport-protocol", bytes("RTP/AVP")),
            (
                "replace",
                Value::List(vec![bytes("origin"), bytes("session-connection")]),
            ),
        ]);
        let reply = self.request(&offer)?;
        self.calls.push((call_id.clone(), from_tag.clone()));
        let toward_pbx = reply_sdp(&reply, "offer")?;
        let pbx_side = parse_media(&toward_pbx)?;
        if pbx_side.proto != "RTP/AVP" || pbx_side.crypto.is_some() {
            return Err(format!(
                "offer toward the PBX is {} {}: expected plain RTP/AVP",
                pbx_side.proto,
                if pbx_side.crypto.is_some() {
                    "with a=crypto"
                } else {
                    "without a=crypto"
                }
            ));
        }

        let pbx_sdp = sdp(index, local_addr(&pbx_socket)?, "RTP/AVP", None);
        let answer = dict(vec![
            ("command", bytes("answer")),
            ("call-id", bytes(&call_id)),
            ("from-tag", bytes(&from_tag)),
            ("to-tag", bytes(&to_tag)),
            ("sdp", bytes(&pbx_sdp)),
            ("transport-protocol", bytes("RTP/SAVP")),
            (
                "replace",
                Value::List(vec![bytes("origin"), bytes("session-connection")]),
            ),
        ]);
        let reply = self.request(&answer)?;
        let toward_phone = reply_sdp(&reply, "answer")?;
        let phone_side = parse_media(&toward_phone)?;
        let Some(phone_receives_with) = phone_side.crypto else {
            return Err("answer toward the phone has no a=crypto".into());
        };
        if phone_side.proto != "RTP/SAVP" {
            return Err(format!(
                "answer toward the phone is {}: expected RTP/SAVP",
                phone_side.proto
            ));
        }
        Ok(CallMedia {
            call_id,
            phone_socket,
            phone_target: phone_side.rtp,
            phone_sends_with: phone_key,
            phone_receives_with,
            pbx_socket,
            pbx_target: pbx_side.rtp,
        })
    }

    /// Deletes every call set up, then stops rtpengine by PID.
    pub fn finish(mut self) -> Result<(), String> {
        let mut failed = 0;
        for (call_id, from_tag) in std::mem::take(&mut self.calls) {
            let delete = dict(vec![
                ("command", bytes("delete")),
                ("call-id", bytes(&call_id)),
                ("from-tag", bytes(&from_tag)),
            ]);
            if self.request(&delete).is_err() {
                failed += 1;
            }
        }
        self.stop()?;
        if failed > 0 {
            return Err(format!("{failed} ng deletes failed"));
        }
        Ok(())
    }

    /// SIGTERM by PID, up to `STOP_TIMEOUT`, then SIGKILL; always reaped.
    fn stop(&mut self) -> Result<(), String> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        if let Ok(Some(_)) = child.try_wait() {
            return Ok(());
        }
        let _ = Command::new("kill")
            .args(["-TERM", &self.pid.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let deadline = Instant::now() + STOP_TIMEOUT;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
        Err(format!(
            "rtpengine (pid {}) ignored SIGTERM for {STOP_TIMEOUT:?}: killed",
            self.pid
        ))
    }

    /// One ng request, resent on timeout (same cookie: rtpengine answers a resend from its
    /// cache). An `error` result is an error carrying rtpengine's reason.
    fn request(&mut self, message: &Value) -> Result<HashMap<Vec<u8>, Value>, String> {
        self.cookie += 1;
        let mut last = String::new();
        for _ in 0..NG_TRIES {
            match self.exchange(message, NG_TIMEOUT) {
                Ok(reply) => {
                    return match text(&reply, "result") {
                        Some("ok") | Some("pong") => Ok(reply),
                        other => Err(format!(
                            "rtpengine answered {}: {}",
                            other.unwrap_or("no result"),
                            text(&reply, "error-reason").unwrap_or("no reason")
                        )),
                    }
                }
                Err(e) => last = e,
            }
        }
        Err(format!("ng request failed {NG_TRIES} times: {last}"))
    }

    fn request_once(
        &mut self,
        message: &Value,
        timeout: Duration,
    ) -> Result<HashMap<Vec<u8>, Value>, String> {
        self.cookie += 1;
        self.exchange(message, timeout)
    }

    /// Sends `message` under the current cookie and waits for the reply carrying it (replies
    /// to earlier cookies, late after a resend, are skipped).
    fn exchange(
        &mut self,
        message: &Value,
        timeout: Duration,
    ) -> Result<HashMap<Vec<u8>, Value>, String> {
        let cookie = format!("{:x}-{}", self.cookie, self.pid);
        let mut datagram = format!("{cookie} ").into_bytes();
        datagram.extend(serde_bencode::to_bytes(message).map_err(|e| format!("bencode: {e}"))?);
        self.ng
            .send_to(&datagram, self.ng_addr)
            .map_err(|e| format!("ng send: {e}"))?;
        let deadline = Instant::now() + timeout;
        let mut buf = vec![0u8; 65536];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(format!("no ng reply within {timeout:?}"));
            }
            self.ng
                .set_read_timeout(Some(left))
                .map_err(|e| format!("ng socket: {e}"))?;
            let Ok((n, _)) = self.ng.recv_from(&mut buf) else {
                continue;
            };
            let Some(space) = buf[..n].iter().position(|b| *b == b' ') else {
                continue;
            };
            if buf[..space] != *cookie.as_bytes() {
                continue;
            }
            return match serde_bencode::from_bytes::<Value>(&buf[space + 1..n]) {
                Ok(Value::Dict(reply)) => Ok(reply),
                Ok(_) => Err("ng reply is not a dictionary".into()),
                Err(e) => Err(format!("ng reply: {e}")),
            };
        }
    }
}

impl Drop for Rtpengine {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

fn bytes(s: &str) -> Value {
    Value::Bytes(s.as_bytes().to_vec())
}

fn dict(entries: Vec<(&str, Value)>) -> Value {
    Value::Dict(
        entries
            .into_iter()
            .map(|(k, v)| (k.as_bytes().to_vec(), v))
            .collect(),
    )
}

fn text<'a>(reply: &'a HashMap<Vec<u8>, Value>, key: &str) -> Option<&'a str> {
    match reply.get(key.as_bytes()) {
        Some(Value::Bytes(b)) => std::str::from_utf8(b).ok(),
        _ => None,
    }
}

fn reply_sdp(reply: &HashMap<Vec<u8>, Value>, what: &str) -> Result<String, String> {
    text(reply, "sdp")
        .map(str::to_string)
        .ok_or_else(|| format!("rtpengine's {what} reply has no sdp"))
}

fn bind_loopback() -> Result<UdpSocket, String> {
    UdpSocket::bind((LOOPBACK, 0)).map_err(|e| format!("binding a generator socket: {e}"))
}

fn local_addr(socket: &UdpSocket) -> Result<SocketAddr, String> {
    socket
        .local_addr()
        .map_err(|e| format!("local address: {e}"))
}

/// A loopback UDP port free right now (bound, read, released) for rtpengine's ng listener.
fn free_udp_port() -> Result<u16, String> {
    let s = bind_loopback()?;
    Ok(local_addr(&s)?.port())
}

/// The SDP one generator end offers or answers: one audio stream, PCMU, at `rtp`.
fn sdp(index: usize, rtp: SocketAddr, proto: &str, crypto: Option<&SdesKey>) -> String {
    let mut s = format!(
        "v=0\r\no=- {session} 1 IN IP4 {ip}\r\ns=call-load\r\nc=IN IP4 {ip}\r\nt=0 0\r\n\
         m=audio {port} {proto} 0\r\na=rtpmap:0 PCMU/8000\r\na=ptime:20\r\na=sendrecv\r\n",
        session = 1000 + index,
        ip = rtp.ip(),
        port = rtp.port(),
    );
    if let Some(key) = crypto {
        s.push_str(&format!("a=crypto:1 {} {}\r\n", key.suite, key.key_params));
    }
    s
}

/// What the generator needs from an SDP rtpengine returned: where to send RTP, the profile,
/// and the first `a=crypto` (the one an answer selects, RFC 4568 §7.1.2).
struct SdpMedia {
    rtp: SocketAddr,
    proto: String,
    crypto: Option<SdesKey>,
}

fn parse_media(body: &str) -> Result<SdpMedia, String> {
    let session = sdp_rs::SessionDescription::try_from(body.to_string())
        .map_err(|e| format!("rtpengine's SDP does not parse: {e}: {body:?}"))?;
    let media = session
        .media_descriptions
        .first()
        .ok_or_else(|| format!("rtpengine's SDP has no m= line: {body:?}"))?;
    let connection = media
        .connections
        .first()
        .or(session.connection.as_ref())
        .ok_or_else(|| format!("rtpengine's SDP has no c= line: {body:?}"))?;
    let crypto = media.attributes.iter().find_map(|a| match a {
        sdp_rs::lines::Attribute::Other(name, Some(value)) if name == "crypto" => {
            let mut fields = value.split_ascii_whitespace().skip(1);
            match (fields.next(), fields.next()) {
                (Some(suite), Some(key_params)) => Some(SdesKey {
                    suite: suite.to_string(),
                    key_params: key_params.to_string(),
                }),
                _ => None,
            }
        }
        _ => None,
    });
    Ok(SdpMedia {
        rtp: SocketAddr::new(connection.connection_address.base, media.media.port),
        proto: media.media.proto.to_string(),
        crypto,
    })
}

// Run by tests/call_load.rs. `clippy --all-targets` also builds the bench target with
// cfg(test) but, harness = false, without its #[test] functions: the helpers look unused there.
#[cfg(test)]
#[allow(dead_code, unused_imports)]
mod tests {
    use super::*;

    /// The SDP rtpengine 10.5 answered toward the phone in a run of this tool (key replaced).
    const ANSWER: &str = "v=0\r\no=- 1000 1 IN IP4 127.0.0.1\r\ns=call-load\r\n\
        c=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 20014 RTP/SAVP 0\r\na=rtpmap:0 PCMU/8000\r\n\
        a=sendrecv\r\na=rtcp:20015\r\n\
        a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:d0RmdmcmVCspeEc3QGZiNWpVLFJhQX1cfHAwJSoj\r\n\
        a=ptime:20\r\n";

    #[test]
    fn reads_address_profile_and_key_from_an_answer() {
        let m = parse_media(ANSWER).expect("parses");
        assert_eq!(m.rtp, "127.0.0.1:20014".parse().expect("addr"));
        assert_eq!(m.proto, "RTP/SAVP");
        let key = m.crypto.expect("crypto");
        assert_eq!(key.suite, "AES_CM_128_HMAC_SHA1_80");
        assert_eq!(
            key.key_params,
            "inline:d0RmdmcmVCspeEc3QGZiNWpVLFJhQX1cfHAwJSoj"
        );
        assert!(crate::media::srtp_context(&key).is_ok());
    }

    #[test]
    fn media_level_connection_wins_and_a_missing_one_is_an_error() {
        let media_level = ANSWER.replace(
            "t=0 0\r\nm=audio 20014 RTP/SAVP 0\r\n",
            "t=0 0\r\nm=audio 20014 RTP/SAVP 0\r\nc=IN IP4 127.0.0.2\r\n",
        );
        let m = parse_media(&media_level).expect("parses");
        assert_eq!(m.rtp, "127.0.0.2:20014".parse().expect("addr"));
        assert!(parse_media(&ANSWER.replace("c=IN IP4 127.0.0.1\r\n", "")).is_err());
        assert!(parse_media("v=0\r\n").is_err());
    }

    #[test]
    fn the_generator_sdp_reads_back() {
        let key = random_sdes_key().expect("key");
        let addr: SocketAddr = "127.0.0.1:4242".parse().expect("addr");
        let m = parse_media(&sdp(3, addr, "RTP/SAVP", Some(&key))).expect("parses");
        assert_eq!((m.rtp, m.proto.as_str()), (addr, "RTP/SAVP"));
        assert_eq!(m.crypto, Some(key));
        let m = parse_media(&sdp(3, addr, "RTP/AVP", None)).expect("parses");
        assert_eq!((m.proto.as_str(), m.crypto), ("RTP/AVP", None));
    }

    #[test]
    fn ng_messages_are_bencoded_dictionaries_with_sorted_keys() {
        let ping = dict(vec![("command", bytes("ping"))]);
        assert_eq!(
            serde_bencode::to_bytes(&ping).expect("encodes"),
            b"d7:command4:pinge"
        );
        let delete = dict(vec![
            ("from-tag", bytes("a")),
            ("command", bytes("delete")),
            ("call-id", bytes("c")),
        ]);
        assert_eq!(
            serde_bencode::to_bytes(&delete).expect("encodes"),
            b"d7:call-id1:c7:command6:delete8:from-tag1:ae"
        );
    }
}
