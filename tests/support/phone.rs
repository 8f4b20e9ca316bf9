//! A SIP-over-TLS "phone" for tests: writes raw SIP, reads framed messages (bounded waits).

use super::edge::{RunningEdge, TestPki};
use super::sip_stream::SipStream;
use super::tls_client;
use pbx_edge::sip::message::SipMessage;
use std::net::SocketAddr;
use std::path::Path;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

/// The phone's TLS connection to the edge.
pub type Phone = SipStream<TlsStream<TcpStream>>;

/// A Snom phone (the dev PKI's device certificate) connected to the edge over TLS.
pub async fn snom(pki: &TestPki, e: &RunningEdge) -> Phone {
    snom_at(pki, e.tls_addr).await
}

/// A Snom phone connected to the edge's TLS listener at `tls` (the binary's, say).
pub async fn snom_at(pki: &TestPki, tls: SocketAddr) -> Phone {
    device_at(pki, tls, &pki.pki.snom_device).await
}

/// A Yealink phone (the dev PKI's other device certificate: user 102, another MAC).
pub async fn yealink(pki: &TestPki, e: &RunningEdge) -> Phone {
    device_at(pki, e.tls_addr, &pki.pki.yealink_device).await
}

/// A phone presenting `device` (certificate and key, PEM) to the edge's listener at `tls`.
pub async fn device_at(pki: &TestPki, tls: SocketAddr, device: &Path) -> Phone {
    let cfg = tls_client::client_config(&pki.pki.server_ca, Some(device));
    Phone::new(
        tls_client::connect(tls, "sbc.test", cfg)
            .await
            .expect("handshake"),
    )
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
