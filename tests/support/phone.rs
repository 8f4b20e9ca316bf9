//! A SIP-over-TLS "phone" for tests: writes raw SIP, reads framed messages (bounded waits).

use bytes::BytesMut;
use pbx_edge::sip::framing::{Frame, StreamFramer};
use pbx_edge::sip::message::SipMessage;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

pub struct Phone {
    pub stream: TlsStream<TcpStream>,
    buf: BytesMut,
    framer: StreamFramer,
}

impl Phone {
    pub fn new(stream: TlsStream<TcpStream>) -> Self {
        Self {
            stream,
            buf: BytesMut::new(),
            framer: StreamFramer::default(),
        }
    }

    pub async fn send(&mut self, text: &str) {
        self.stream
            .write_all(text.as_bytes())
            .await
            .expect("phone write");
        self.stream.flush().await.expect("phone flush");
    }

    /// The next SIP message (keep-alive pongs skipped), or `None` after 5 s or on close.
    pub async fn recv(&mut self) -> Option<SipMessage> {
        self.recv_within(Duration::from_secs(5)).await
    }

    pub async fn recv_within(&mut self, limit: Duration) -> Option<SipMessage> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            match self.framer.decode(&mut self.buf) {
                Ok(Some(Frame::Message(b))) => {
                    return Some(SipMessage::parse(&b).expect("edge sends valid SIP"))
                }
                Ok(Some(_)) => continue,
                Ok(None) => {}
                Err(e) => panic!("edge sent unframeable bytes: {e}"),
            }
            let n = tokio::time::timeout_at(deadline, self.stream.read_buf(&mut self.buf))
                .await
                .ok()?
                .ok()?;
            if n == 0 {
                return None;
            }
        }
    }

    /// Reads raw bytes (for keep-alive pongs), bounded.
    pub async fn read_raw(&mut self, limit: Duration) -> Option<Vec<u8>> {
        let mut b = vec![0u8; 64];
        let n = tokio::time::timeout(limit, self.stream.read(&mut b))
            .await
            .ok()?
            .ok()?;
        b.truncate(n);
        Some(b)
    }

    /// Whether the edge has closed the connection (EOF or error within 5 s).
    pub async fn closed_by_edge(&mut self) -> bool {
        let mut b = vec![0u8; 4096];
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            match tokio::time::timeout_at(deadline, self.stream.read(&mut b)).await {
                Err(_) => return false,
                Ok(Ok(0)) | Ok(Err(_)) => return true,
                Ok(Ok(_)) => continue,
            }
        }
    }
}

/// A REGISTER as a Snom-like phone sends it.
pub fn register(user: &str, contact_port: u16, cseq: u32, call_id: &str, extra: &str) -> String {
    format!(
        "REGISTER sip:sbc.test SIP/2.0\r\n\
Via: SIP/2.0/TLS 127.0.0.1:{contact_port};branch=z9hG4bK-reg{cseq}-{call_id};rport\r\n\
Route: <sip:sbc.test;transport=tls;lr>\r\n\
From: <sip:{user}@sbc.test>;tag=ph{call_id}\r\n\
To: <sip:{user}@sbc.test>\r\n\
Call-ID: {call_id}\r\n\
CSeq: {cseq} REGISTER\r\n\
Max-Forwards: 70\r\n\
Contact: <sip:{user}@127.0.0.1:{contact_port};transport=tls;line=abc>;reg-id=1;+sip.instance=\"<urn:uuid:00000000-0000-1000-8000-000413A1B2C3>\"\r\n\
Expires: 600\r\n\
User-Agent: snomD785/10.1.141.13\r\n\
{extra}Content-Length: 0\r\n\r\n"
    )
}

/// A response to `req` as a phone sends it (all Vias echoed).
pub fn response(req: &SipMessage, status: u16) -> String {
    let mut out = format!("SIP/2.0 {status} OK\r\n");
    for v in req.header_values("Via") {
        out.push_str(&format!("Via: {v}\r\n"));
    }
    for h in ["From", "To", "Call-ID", "CSeq"] {
        out.push_str(&format!("{h}: {}\r\n", req.header(h).expect("header")));
    }
    out.push_str("Content-Length: 0\r\n\r\n");
    out
}
