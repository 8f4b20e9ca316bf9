//! A plain-UDP "PBX" for tests: receives and sends raw SIP datagrams (bounded waits).

use pbx_edge::sip::message::SipMessage;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::UdpSocket;

pub struct Pbx {
    pub socket: UdpSocket,
}

impl Pbx {
    pub async fn bind() -> Self {
        Self {
            socket: UdpSocket::bind("127.0.0.1:0").await.expect("pbx bind"),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.socket.local_addr().expect("pbx addr")
    }

    /// The next message (and its source), or `None` after `limit`.
    pub async fn recv_within(&self, limit: Duration) -> Option<(SipMessage, SocketAddr)> {
        let mut buf = vec![0u8; 65536];
        let (n, from) = tokio::time::timeout(limit, self.socket.recv_from(&mut buf))
            .await
            .ok()?
            .ok()?;
        Some((
            SipMessage::parse(&buf[..n]).expect("edge sends valid SIP"),
            from,
        ))
    }

    pub async fn recv(&self) -> Option<(SipMessage, SocketAddr)> {
        self.recv_within(Duration::from_secs(5)).await
    }

    pub async fn send(&self, to: SocketAddr, text: &str) {
        self.socket
            .send_to(text.as_bytes(), to)
            .await
            .expect("pbx send");
    }
}

/// The URI inside a request's `Contact: <...>` (for a REGISTER: the edge Contact to store).
pub fn contact_uri(req: &SipMessage) -> Option<String> {
    req.header("Contact")?
        .split(['<', '>'])
        .nth(1)
        .map(str::to_owned)
}

/// The PBX's 200 to a REGISTER: the binding `uri` for `expires` seconds.
pub fn register_ok(req: &SipMessage, uri: &str, expires: u32) -> String {
    response(
        req,
        200,
        "OK",
        &format!("Contact: <{uri}>;expires={expires}\r\n"),
    )
}

/// A response to `req` as the PBX sends it (all Vias echoed, a To tag added).
pub fn response(req: &SipMessage, status: u16, reason: &str, extra: &str) -> String {
    let mut out = format!("SIP/2.0 {status} {reason}\r\n");
    for v in req.header_values("Via") {
        out.push_str(&format!("Via: {v}\r\n"));
    }
    out.push_str(&format!("From: {}\r\n", req.header("From").expect("From")));
    let to = req.header("To").expect("To");
    if to.contains("tag=") {
        out.push_str(&format!("To: {to}\r\n"));
    } else {
        out.push_str(&format!("To: {to};tag=pbx-{status}\r\n"));
    }
    for h in ["Call-ID", "CSeq"] {
        out.push_str(&format!("{h}: {}\r\n", req.header(h).expect("header")));
    }
    out.push_str(extra);
    out.push_str("Server: Asterisk PBX 20.5.0\r\nContent-Length: 0\r\n\r\n");
    out
}
