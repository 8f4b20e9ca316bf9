//! One SIP stream connection as a test peer sees it (a phone over TLS, the PBX over TCP):
//! writes raw SIP, reads messages framed by Content-Length (keep-alives skipped), every wait
//! bounded.

use bytes::BytesMut;
use pbx_edge::sip::framing::{Frame, StreamFramer};
use pbx_edge::sip::message::SipMessage;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

pub struct SipStream<S> {
    pub stream: S,
    buf: BytesMut,
    framer: StreamFramer,
}

impl<S: AsyncRead + AsyncWrite + Unpin> SipStream<S> {
    pub fn new(stream: S) -> Self {
        Self {
            stream,
            buf: BytesMut::new(),
            framer: StreamFramer::default(),
        }
    }

    /// Writes `text`, tolerating the edge closing the connection part-way (hostile-input
    /// tests: the edge may close and reset before a large message is fully written).
    pub async fn send_until_closed(&mut self, text: &str) {
        if self.stream.write_all(text.as_bytes()).await.is_ok() {
            let _ = self.stream.flush().await;
        }
    }

    pub async fn send(&mut self, text: &str) {
        self.stream
            .write_all(text.as_bytes())
            .await
            .expect("SIP stream write");
        self.stream.flush().await.expect("SIP stream flush");
    }

    /// The next SIP message (keep-alives and pongs skipped), or `None` after 5 s or on close.
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
