//! QoS marking: the DSCP (RFC 2474 §3) the edge writes into the IP header of everything it
//! sends, so switches and routers that trust the marking queue voice ahead of bulk traffic.
//!
//! Defaults: EF (46) on media, the "Telephony" class of RFC 4594 §4.3 with the Expedited
//! Forwarding PHB of RFC 3246; CS3 (24) on SIP, the call-signalling marking of the common
//! voice VLAN QoS baselines that phones themselves use (RFC 4594 §4.2 recommends CS5 = 40 for
//! signalling: set `sip.dscp = 40` where the network follows it). 0 leaves the socket
//! unmarked (best effort).
//!
//! IPv4 carries it in the TOS byte (`IP_TOS`), IPv6 in the traffic class (`IPV6_TCLASS`), the
//! DSCP in the upper six bits in both; the two ECN bits below (RFC 3168 §5) stay 0: ECN is
//! the transport's business, not the edge's.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

use std::io;
use std::os::fd::AsFd;

use socket2::SockRef;

/// The DSCP values are configuration (config is the lowest layer); named here too.
pub use crate::config::{DEFAULT_MEDIA_DSCP, DEFAULT_SIP_DSCP, MAX_DSCP};

/// The TOS / traffic class byte carrying `dscp` (ECN bits 0).
pub fn traffic_class(dscp: u8) -> u32 {
    u32::from(dscp & MAX_DSCP) << 2
}

/// Marks what `socket` sends with `dscp` (0: leaves the socket as it is). An IPv4 socket gets
/// `IP_TOS`; an IPv6 socket `IPV6_TCLASS`, and `IP_TOS` too when it is dual-stack, since
/// Linux sends IPv4-mapped traffic of an IPv6 socket with the IPv4 option.
pub fn mark(socket: &impl AsFd, dscp: u8) -> io::Result<()> {
    if dscp == 0 {
        return Ok(());
    }
    if dscp > MAX_DSCP {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("DSCP {dscp} is outside 0..=63"),
        ));
    }
    let sock = SockRef::from(socket);
    let class = traffic_class(dscp);
    match sock.local_addr()?.as_socket() {
        Some(std::net::SocketAddr::V6(_)) => {
            sock.set_tclass_v6(class)?;
            if !sock.only_v6()? {
                sock.set_tos_v4(class)?;
            }
        }
        _ => sock.set_tos_v4(class)?,
    }
    Ok(())
}

/// The DSCP `socket` marks with (`IP_TOS`, or `IPV6_TCLASS` for an IPv6 socket): for tests
/// and diagnostics.
pub fn marking(socket: &impl AsFd) -> io::Result<u8> {
    let sock = SockRef::from(socket);
    let class = match sock.local_addr()?.as_socket() {
        Some(std::net::SocketAddr::V6(_)) => sock.tclass_v6()?,
        _ => sock.tos_v4()?,
    };
    Ok(u8::try_from(class >> 2).unwrap_or(u8::MAX) & MAX_DSCP)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{TcpListener, TcpStream, UdpSocket};

    #[test]
    fn dscp_sits_above_the_ecn_bits() {
        assert_eq!(traffic_class(46), 0xb8);
        assert_eq!(traffic_class(24), 0x60);
        assert_eq!(traffic_class(0), 0);
    }

    #[test]
    fn ipv4_udp_socket_reads_back_its_marking() {
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        assert_eq!(marking(&s).unwrap(), 0);
        mark(&s, DEFAULT_MEDIA_DSCP).unwrap();
        assert_eq!(marking(&s).unwrap(), 46);
        assert_eq!(SockRef::from(&s).tos_v4().unwrap(), 0xb8);
    }

    #[test]
    fn ipv6_sockets_get_the_traffic_class() {
        let s = UdpSocket::bind("[::1]:0").expect("an IPv6 loopback (::1)");
        mark(&s, DEFAULT_SIP_DSCP).unwrap();
        assert_eq!(marking(&s).unwrap(), 24);
        assert_eq!(SockRef::from(&s).tclass_v6().unwrap(), 0x60);
    }

    #[test]
    fn accepted_tcp_socket_is_marked_too() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let _c = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (a, _) = l.accept().unwrap();
        mark(&a, 24).unwrap();
        assert_eq!(marking(&a).unwrap(), 24);
    }

    #[test]
    fn zero_leaves_the_socket_alone_and_out_of_range_is_refused() {
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        mark(&s, 0).unwrap();
        assert_eq!(marking(&s).unwrap(), 0);
        assert!(mark(&s, 64).is_err());
        assert_eq!(marking(&s).unwrap(), 0);
    }
}
