//! A plain-TCP "PBX" for tests: a listener the edge connects to, and SIP connections either
//! way (framed by Content-Length, keep-alives skipped, bounded waits).

use super::sip_stream::SipStream;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;
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

/// One SIP-over-TCP connection on the PBX's side (the reader and writer are [`SipStream`]'s,
/// reached through `Deref`).
pub struct SipConn {
    pub sip: SipStream<TcpStream>,
    pub peer: SocketAddr,
}

impl SipConn {
    pub fn new(stream: TcpStream, peer: SocketAddr) -> Self {
        Self {
            sip: SipStream::new(stream),
            peer,
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
        self.sip.stream.local_addr().expect("local addr")
    }
}

impl std::ops::Deref for SipConn {
    type Target = SipStream<TcpStream>;
    fn deref(&self) -> &Self::Target {
        &self.sip
    }
}

impl std::ops::DerefMut for SipConn {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.sip
    }
}
