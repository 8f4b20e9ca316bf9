//! A plain-TCP "PBX" for tests: a listener the edge connects to, and SIP connections either
//! way (framed by Content-Length, keep-alives skipped, bounded waits).

use bytes::BytesMut;
use pbx_edge::sip::framing::{Frame, StreamFramer};
use pbx_edge::sip::message::SipMessage;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};

pub struct TcpPbx {
    pub listener: TcpListener,
}

impl TcpPbx {
    pub async fn bind() -> Self {
        Self {
            listener: TcpListener::bind("127.0.0.1:0").await.expect("pbx bind"),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("pbx addr")
    }

    /// The next connection the edge opens, or `None` after 5 s.
    pub async fn accept(&self) -> Option<SipConn> {
        let (stream, peer) = tokio::time::timeout(Duration::from_secs(5), self.listener.accept())
            .await
            .ok()?
            .ok()?;
        Some(SipConn::new(stream, peer))
    }
}

/// One SIP-over-TCP connection on the PBX's side.
pub struct SipConn {
    pub stream: TcpStream,
    pub peer: SocketAddr,
    buf: BytesMut,
    framer: StreamFramer,
}

impl SipConn {
    pub fn new(stream: TcpStream, peer: SocketAddr) -> Self {
        Self {
            stream,
            peer,
            buf: BytesMut::new(),
            framer: StreamFramer::default(),
        }
    }

    /// A connection to `to` from `local` (any port), as the PBX opens toward an edge Contact.
    pub async fn connect_from(local: IpAddr, to: SocketAddr) -> std::io::Result<Self> {
        let socket = TcpSocket::new_v4()?;
        socket.bind(SocketAddr::new(local, 0))?;
        let stream = tokio::time::timeout(Duration::from_secs(5), socket.connect(to))
            .await
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))??;
        Ok(Self::new(stream, to))
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.stream.local_addr().expect("local addr")
    }

    pub async fn send(&mut self, text: &str) {
        self.stream
            .write_all(text.as_bytes())
            .await
            .expect("pbx write");
    }

    /// The next SIP message (keep-alives skipped), or `None` after 5 s or on close.
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

    /// Raw bytes (for keep-alive pongs), bounded.
    pub async fn read_raw(&mut self, limit: Duration) -> Option<Vec<u8>> {
        let mut b = vec![0u8; 64];
        let n = tokio::time::timeout(limit, self.stream.read(&mut b))
            .await
            .ok()?
            .ok()?;
        b.truncate(n);
        Some(b)
    }

    /// Whether the edge closed the connection (EOF or reset within 5 s).
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
