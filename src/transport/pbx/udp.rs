//! The PBX side over UDP: plain SIP datagrams from `pbx.listen` to `pbx.address`. Datagrams
//! from any other source are dropped and counted: only the configured PBX may talk to this
//! socket.

use super::same_host;
use crate::capture::LegTap;
use crate::sip::framing::{check_datagram, DatagramFrame, FramingLimits};
use crate::sip::message::SipMessage;
use crate::transport::metrics::SipTransportMetrics;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// The UDP socket toward the PBX.
#[derive(Debug, Clone)]
pub struct UdpLink {
    socket: Arc<UdpSocket>,
    pbx: SocketAddr,
    /// `[hep]` capture of what goes to and comes from the PBX.
    tap: LegTap,
}

impl UdpLink {
    pub async fn bind(listen: SocketAddr, pbx: SocketAddr) -> std::io::Result<Self> {
        let socket = UdpSocket::bind(listen).await?;
        Ok(Self {
            socket: Arc::new(socket),
            pbx,
            tap: LegTap::off(),
        })
    }

    /// Captures every message sent and received from now on (set before cloning).
    pub fn set_tap(&mut self, tap: LegTap) {
        self.tap = tap;
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    /// Marks what the socket sends with `dscp` (0 = unmarked).
    pub fn set_dscp(&self, dscp: u8) -> std::io::Result<()> {
        crate::qos::mark(self.socket.as_ref(), dscp)
    }

    /// The DSCP the socket marks with.
    pub fn dscp(&self) -> std::io::Result<u8> {
        crate::qos::marking(self.socket.as_ref())
    }

    pub fn pbx_addr(&self) -> SocketAddr {
        self.pbx
    }

    /// Sends one message to the PBX.
    pub async fn send(&self, bytes: &[u8]) -> std::io::Result<()> {
        self.socket.send_to(bytes, self.pbx).await?;
        self.tap.sent(bytes);
        Ok(())
    }

    /// Receives until `cancel`: messages from the PBX go to `out`; everything else is dropped
    /// and counted (foreign source, unframeable datagram, unparseable message).
    pub async fn receive(
        self,
        limits: FramingLimits,
        out: mpsc::Sender<SipMessage>,
        metrics: SipTransportMetrics,
        cancel: CancellationToken,
    ) {
        // One datagram at most 64 KiB; the limit check runs before parsing.
        let mut buf = vec![0u8; 65_536];
        loop {
            let (n, from) = tokio::select! {
                _ = cancel.cancelled() => return,
                r = self.socket.recv_from(&mut buf) => match r {
                    Ok(v) => v,
                    Err(e) => {
                        // ICMP port unreachable from an earlier send surfaces here on Linux.
                        tracing::debug!(error = %e, "PBX socket receive error");
                        continue;
                    }
                },
            };
            // The PBX's own port only: a UDP PBX sends from its listening port (RFC 3261
            // §18.2.2 responses go to the Via sent-by, which is that port).
            if from.port() != self.pbx.port() || !same_host(from.ip(), self.pbx.ip()) {
                metrics
                    .dropped
                    .with_label_values(&["pbx", "foreign_source"])
                    .inc();
                tracing::debug!(%from, "datagram from a source other than the PBX dropped");
                continue;
            }
            let Some(datagram) = buf.get(..n) else {
                continue;
            };
            self.tap.received(datagram);
            let message = match check_datagram(datagram, &limits) {
                Ok(DatagramFrame::KeepAlive) => continue,
                Ok(DatagramFrame::Message(bytes)) => bytes,
                Err(e) => {
                    metrics
                        .malformed
                        .with_label_values(&["pbx", e.label()])
                        .inc();
                    continue;
                }
            };
            match SipMessage::parse(message) {
                Ok(m) => {
                    if out.send(m).await.is_err() {
                        return;
                    }
                }
                Err(e) => {
                    metrics
                        .malformed
                        .with_label_values(&["pbx", e.label()])
                        .inc();
                    tracing::info!(error = %e, "unparseable SIP message from the PBX dropped");
                    if let Some(resp) = crate::sip::response::bad_request_for_raw(
                        message,
                        Some(("pbx-edge", &format!("malformed request: {e}"))),
                    ) {
                        let _ = self.send(&resp).await;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_socket_carries_the_dscp() {
        let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let link = UdpLink::bind(any, "127.0.0.1:9".parse().unwrap())
            .await
            .unwrap();
        assert_eq!(link.dscp().unwrap(), 0);
        link.set_dscp(24).unwrap();
        assert_eq!(link.dscp().unwrap(), 24);
    }
}
