//! The PBX side: plain SIP from `pbx.listen` to `pbx.address`, over UDP (the default) or TCP
//! (`pbx.transport`). Only the configured PBX may talk to the edge here: datagrams and
//! connections from any other source are dropped and counted in
//! `pbx_edge_sip_dropped_total{side="pbx",reason="foreign_source"}`.
//!
//! The SIP core sees one [`PbxLink`] whatever the transport: `send(bytes)` for every request it
//! originates and every response it gives the PBX, and `receive` delivering what the PBX
//! sends. Over TCP the link itself keeps track of which connection a response belongs on (see
//! `routes`); the core only asks [`PbxLink::is_reliable`] (RFC 3261 §17: no retransmission
//! timers on a reliable transport) and [`PbxLink::transport_token`] (what to write in its Via
//! and Contact).

mod routes;
mod tcp;
mod udp;

pub use routes::{ConnId, RouteKey, RouteTable};
pub use tcp::{
    TcpLink, CONNECT_TIMEOUT, INBOUND_IDLE_TIMEOUT, MAX_INBOUND, RECONNECT_BACKOFF, WRITE_TIMEOUT,
};
pub use udp::UdpLink;

use crate::capture::{Capture, IpProto};
use crate::config::PbxTransport;
use crate::sip::framing::FramingLimits;
use crate::sip::message::SipMessage;
use crate::transport::metrics::SipTransportMetrics;
use std::net::{IpAddr, SocketAddr};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// The edge's transport toward the PBX (cheap to clone: clones share sockets and connections).
#[derive(Debug, Clone)]
pub struct PbxLink {
    link: Link,
}

#[derive(Debug, Clone)]
enum Link {
    Udp(UdpLink),
    Tcp(TcpLink),
}

impl PbxLink {
    /// Binds a UDP socket on `listen` toward `pbx`.
    pub async fn bind(listen: SocketAddr, pbx: SocketAddr) -> std::io::Result<Self> {
        Self::bind_transport(PbxTransport::Udp, listen, pbx, None).await
    }

    /// Binds `listen` for `transport`: a UDP socket, or a TCP listener (the outbound TCP
    /// connection to `pbx` is opened by the first send). `tcp_keepalive`: see
    /// [`tcp::DeadPeerDetection`].
    pub async fn bind_transport(
        transport: PbxTransport,
        listen: SocketAddr,
        pbx: SocketAddr,
        tcp_keepalive: Option<std::time::Duration>,
    ) -> std::io::Result<Self> {
        let link = match transport {
            PbxTransport::Udp => Link::Udp(UdpLink::bind(listen, pbx).await?),
            PbxTransport::Tcp => Link::Tcp(
                TcpLink::bind(listen, pbx, tcp_keepalive.map(tcp::DeadPeerDetection::new)).await?,
            ),
        };
        Ok(Self { link })
    }

    /// Captures every SIP message to and from the PBX to `capture` (`[hep]`), with the
    /// socket's or the TCP connection's own addresses. Call before cloning the link.
    pub fn with_capture(mut self, capture: &Capture) -> Self {
        if !capture.is_on() {
            return self;
        }
        match &mut self.link {
            Link::Udp(u) => {
                // A wildcard listen address is reported as bound (0.0.0.0): the kernel picks
                // the source per datagram.
                let local = u.local_addr().unwrap_or_else(|_| {
                    std::net::SocketAddr::from((std::net::Ipv4Addr::UNSPECIFIED, 0))
                });
                let tap = capture.tap(IpProto::Udp, local, u.pbx_addr());
                u.set_tap(tap);
            }
            Link::Tcp(t) => t.set_capture(capture.clone()),
        }
        self
    }

    /// Which transport this link uses.
    pub fn transport(&self) -> PbxTransport {
        match self.link {
            Link::Udp(_) => PbxTransport::Udp,
            Link::Tcp(_) => PbxTransport::Tcp,
        }
    }

    /// Whether the transport is reliable (RFC 3261 §17.1.1.2, §17.1.2.2, §17.2.2: timers A,
    /// E and G do not run and timers D, J, K are zero over TCP).
    pub fn is_reliable(&self) -> bool {
        matches!(self.link, Link::Tcp(_))
    }

    /// What to write for this transport: `(Via transport, URI transport parameter)`, e.g.
    /// `("UDP", "udp")` for `SIP/2.0/UDP` and `;transport=udp` (RFC 3261 §18, §19.1.1).
    pub fn transport_token(&self) -> (&'static str, &'static str) {
        match self.link {
            Link::Udp(_) => ("UDP", "udp"),
            Link::Tcp(_) => ("TCP", "tcp"),
        }
    }

    /// Where the edge is bound toward the PBX (the UDP socket or the TCP listener).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        match &self.link {
            Link::Udp(u) => u.local_addr(),
            Link::Tcp(t) => Ok(t.local_addr()),
        }
    }

    /// Marks the SIP the edge sends toward the PBX with `dscp` (`sip.dscp`; 0 = unmarked):
    /// the UDP socket, or the TCP listener and every connection from now on.
    pub fn set_dscp(&self, dscp: u8) -> std::io::Result<()> {
        match &self.link {
            Link::Udp(u) => u.set_dscp(dscp),
            Link::Tcp(t) => t.set_dscp(dscp),
        }
    }

    /// The configured PBX address.
    pub fn pbx_addr(&self) -> SocketAddr {
        match &self.link {
            Link::Udp(u) => u.pbx_addr(),
            Link::Tcp(t) => t.pbx_addr(),
        }
    }

    /// Sends one message to the PBX. Over TCP a response goes on the connection its request
    /// arrived on while that is open, anything else on the edge's own connection to the PBX
    /// (opened or reopened here, bounded by [`CONNECT_TIMEOUT`]).
    pub async fn send(&self, bytes: &[u8]) -> std::io::Result<()> {
        match &self.link {
            Link::Udp(u) => u.send(bytes).await,
            Link::Tcp(t) => t.send(bytes).await,
        }
    }

    /// Receives until `cancel`: messages from the PBX go to `out`; everything else is dropped
    /// and counted (foreign source, unframeable input, unparseable message). Over TCP this
    /// also accepts the PBX's own connections and reads the edge's outbound connection.
    pub async fn receive(
        self,
        limits: FramingLimits,
        out: mpsc::Sender<SipMessage>,
        metrics: SipTransportMetrics,
        cancel: CancellationToken,
    ) {
        match self.link {
            Link::Udp(u) => u.receive(limits, out, metrics, cancel).await,
            Link::Tcp(t) => t.receive(limits, out, metrics, cancel).await,
        }
    }
}

/// Whether two addresses name the same host (an IPv4 address and its IPv4-mapped IPv6 form
/// do, as a dual-stack listener reports IPv4 peers).
fn same_host(a: IpAddr, b: IpAddr) -> bool {
    a.to_canonical() == b.to_canonical()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ipv4_mapped_address_is_the_same_host() {
        let v4: IpAddr = "192.0.2.7".parse().unwrap();
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap();
        let other: IpAddr = "192.0.2.8".parse().unwrap();
        assert!(same_host(v4, mapped));
        assert!(same_host(mapped, v4));
        assert!(!same_host(v4, other));
    }

    #[tokio::test]
    async fn each_transport_reports_its_tokens_and_reliability() {
        let pbx: SocketAddr = "127.0.0.1:9".parse().unwrap();
        let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let udp = PbxLink::bind(any, pbx).await.unwrap();
        assert_eq!(udp.transport(), PbxTransport::Udp);
        assert_eq!(udp.transport_token(), ("UDP", "udp"));
        assert!(!udp.is_reliable());
        let tcp = PbxLink::bind_transport(PbxTransport::Tcp, any, pbx, None)
            .await
            .unwrap();
        assert_eq!(tcp.transport(), PbxTransport::Tcp);
        assert_eq!(tcp.transport_token(), ("TCP", "tcp"));
        assert!(tcp.is_reliable());
        assert_ne!(tcp.local_addr().unwrap().port(), 0);
        assert_eq!(tcp.pbx_addr(), pbx);
    }
}
