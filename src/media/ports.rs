//! The relay's port pool: RTP/RTCP port pairs from `media.port_min..=media.port_max`.
//!
//! A pair is an even RTP port and the odd port above it for RTCP (RFC 3550 §11; with
//! rtcp-mux, RFC 5761, the odd port stays bound but unused so a later re-INVITE without mux
//! needs no new port). Each stream leases one pair on the phone side and one on the PBX side.
//! A [`PortLease`] returns its pair to the pool when dropped, so a stream that ends — however
//! it ends — gives its ports back. Freed pairs go to the back of the queue: a port is reused as
//! late as possible, so stray packets of an old call rarely reach a new one.
//!
//! Ports held by other processes are skipped at bind time (they stay in the pool and are tried
//! again later). When no pair can be bound the error is [`MediaError::PortsExhausted`], which
//! the B2BUA answers with 503.
//!
//! The pool's lock is taken at stream start and end only, never on the packet path.

use std::collections::VecDeque;
use std::io::ErrorKind;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use super::MediaError;

/// A validated port range: `min..=max`, holding at least one even/odd pair. The rule is
/// config's ([`crate::config::port_range::pairs`]), the one place it is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortRange {
    first: u16,
    pairs: usize,
}

impl PortRange {
    /// Validates `min..=max` (from `media.port_min` / `media.port_max`).
    pub fn new(min: u16, max: u16) -> Result<Self, MediaError> {
        let (first, pairs) = crate::config::port_range::pairs(min, max)
            .map_err(|_| MediaError::InvalidPortRange { min, max })?;
        Ok(PortRange { first, pairs })
    }

    /// Number of (even, even + 1) pairs inside the range.
    pub fn pair_count(&self) -> usize {
        self.pairs
    }

    fn rtp_ports(&self) -> impl Iterator<Item = u16> {
        let first = u32::from(self.first);
        // Every value is <= max <= u16::MAX by construction in `pairs`.
        (0..self.pairs as u32).filter_map(move |i| u16::try_from(first + 2 * i).ok())
    }
}

#[derive(Debug)]
struct PoolInner {
    free: Mutex<VecDeque<u16>>,
    in_use: AtomicUsize,
    total: usize,
}

impl PoolInner {
    fn give_back(&self, rtp_port: u16) {
        // A poisoned lock only means another thread panicked while holding it; the queue
        // itself is always consistent (push/pop), so keep using it.
        self.free
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push_back(rtp_port);
    }
}

/// The shared pool of port pairs. Cheap to clone.
#[derive(Debug, Clone)]
pub struct PortPool {
    inner: Arc<PoolInner>,
}

/// One leased pair; returns it to the pool on drop.
#[derive(Debug)]
pub struct PortLease {
    pool: Arc<PoolInner>,
    rtp_port: u16,
}

impl PortLease {
    /// The even RTP port; RTCP is `rtp_port() + 1`.
    pub fn rtp_port(&self) -> u16 {
        self.rtp_port
    }
}

impl Drop for PortLease {
    fn drop(&mut self) {
        self.pool.in_use.fetch_sub(1, Ordering::Relaxed);
        self.pool.give_back(self.rtp_port);
    }
}

/// A bound RTP/RTCP socket pair (non-blocking) and the lease that owns its ports.
#[derive(Debug)]
pub struct BoundPair {
    /// RTP socket on the even port (also carries RTCP when muxed).
    pub rtp: UdpSocket,
    /// RTCP socket on the odd port.
    pub rtcp: UdpSocket,
    /// Returns the ports to the pool when dropped (after the sockets, by field order).
    pub lease: PortLease,
}

impl PortPool {
    /// A pool holding every pair of `range`.
    pub fn new(range: PortRange) -> Self {
        let free: VecDeque<u16> = range.rtp_ports().collect();
        let total = free.len();
        PortPool {
            inner: Arc::new(PoolInner {
                free: Mutex::new(free),
                in_use: AtomicUsize::new(0),
                total,
            }),
        }
    }

    /// Pairs currently leased.
    pub fn pairs_in_use(&self) -> usize {
        self.inner.in_use.load(Ordering::Relaxed)
    }

    /// Pairs not leased (some may still be unusable because another process holds them).
    pub fn pairs_free(&self) -> usize {
        self.inner.total.saturating_sub(self.pairs_in_use())
    }

    /// Pairs in the configured range.
    pub fn pairs_total(&self) -> usize {
        self.inner.total
    }

    fn take(&self) -> Option<u16> {
        self.inner
            .free
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop_front()
    }

    /// Leases a pair and binds both sockets on `ip`, non-blocking. Ports another process
    /// holds are skipped (and stay in the pool).
    pub fn bind_pair(&self, ip: IpAddr) -> Result<BoundPair, MediaError> {
        // Each free pair is tried at most once per call.
        let attempts = self.pairs_free();
        for _ in 0..attempts {
            let Some(port) = self.take() else {
                break;
            };
            match bind_both(ip, port) {
                Ok((rtp, rtcp)) => {
                    self.inner.in_use.fetch_add(1, Ordering::Relaxed);
                    return Ok(BoundPair {
                        rtp,
                        rtcp,
                        lease: PortLease {
                            pool: self.inner.clone(),
                            rtp_port: port,
                        },
                    });
                }
                Err(BindFailure::Taken) => self.inner.give_back(port),
                Err(BindFailure::Other(addr, source)) => {
                    self.inner.give_back(port);
                    return Err(MediaError::Bind { addr, source });
                }
            }
        }
        Err(MediaError::PortsExhausted)
    }
}

enum BindFailure {
    /// The port is held by someone else (or not permitted): try another.
    Taken,
    Other(SocketAddr, std::io::Error),
}

fn bind_one(addr: SocketAddr) -> Result<UdpSocket, BindFailure> {
    match UdpSocket::bind(addr) {
        Ok(socket) => {
            socket
                .set_nonblocking(true)
                .map_err(|e| BindFailure::Other(addr, e))?;
            Ok(socket)
        }
        Err(e) if matches!(e.kind(), ErrorKind::AddrInUse | ErrorKind::PermissionDenied) => {
            Err(BindFailure::Taken)
        }
        Err(e) => Err(BindFailure::Other(addr, e)),
    }
}

fn bind_both(ip: IpAddr, rtp_port: u16) -> Result<(UdpSocket, UdpSocket), BindFailure> {
    let rtcp_port = rtp_port.checked_add(1).ok_or(BindFailure::Taken)?;
    let rtp = bind_one(SocketAddr::new(ip, rtp_port))?;
    let rtcp = bind_one(SocketAddr::new(ip, rtcp_port))?;
    Ok((rtp, rtcp))
}

/// Test helper: a range of `pairs` pairs free on `ip` right now (the test machine is shared);
/// successive calls in one process never return overlapping ranges.
#[cfg(test)]
pub(crate) fn free_test_range(ip: IpAddr, pairs: u16) -> PortRange {
    static NEXT: std::sync::atomic::AtomicU16 = std::sync::atomic::AtomicU16::new(42000);
    loop {
        let base = NEXT.fetch_add(pairs * 2 + 2, Ordering::Relaxed);
        assert!(base < 60000, "no free port range on {ip}");
        let ok = (0..pairs * 2).all(|i| UdpSocket::bind((ip, base + i)).is_ok());
        if ok {
            return PortRange::new(base, base + pairs * 2 - 1).unwrap();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOOPBACK: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

    #[test]
    fn range_validation() {
        assert!(PortRange::new(0, 10).is_err());
        assert!(PortRange::new(30001, 30002).is_err()); // only 30002 is even, 30003 missing
        assert_eq!(PortRange::new(30000, 30001).unwrap().pair_count(), 1);
        assert_eq!(PortRange::new(30001, 30005).unwrap().pair_count(), 2);
        assert_eq!(PortRange::new(30000, 39999).unwrap().pair_count(), 5000);
        assert_eq!(PortRange::new(65534, 65535).unwrap().pair_count(), 1);
        assert!(PortRange::new(40000, 30000).is_err());
    }

    fn free_range(pairs: u16) -> PortRange {
        free_test_range(LOOPBACK, pairs)
    }

    #[test]
    fn lease_binds_even_pair_and_returns_on_drop() {
        let pool = PortPool::new(free_range(2));
        assert_eq!(pool.pairs_total(), 2);
        let a = pool.bind_pair(LOOPBACK).unwrap();
        let b = pool.bind_pair(LOOPBACK).unwrap();
        for pair in [&a, &b] {
            let rtp = pair.rtp.local_addr().unwrap().port();
            assert_eq!(rtp % 2, 0);
            assert_eq!(pair.rtcp.local_addr().unwrap().port(), rtp + 1);
            assert_eq!(pair.lease.rtp_port(), rtp);
        }
        assert_eq!(pool.pairs_in_use(), 2);
        assert!(matches!(
            pool.bind_pair(LOOPBACK),
            Err(MediaError::PortsExhausted)
        ));
        let port_a = a.lease.rtp_port();
        drop(a);
        assert_eq!(pool.pairs_in_use(), 1);
        assert_eq!(pool.pairs_free(), 1);
        let c = pool.bind_pair(LOOPBACK).unwrap();
        assert_eq!(c.lease.rtp_port(), port_a);
    }

    #[test]
    fn ports_held_by_other_processes_are_skipped() {
        let range = free_range(2);
        let pool = PortPool::new(range);
        // Someone else holds the RTCP port of the first pair.
        let first = range.rtp_ports().next().unwrap();
        let squatter = UdpSocket::bind((LOOPBACK, first + 1)).unwrap();
        let pair = pool.bind_pair(LOOPBACK).unwrap();
        assert_ne!(pair.lease.rtp_port(), first);
        // The only other pair is blocked: exhaustion, not an I/O error.
        assert!(matches!(
            pool.bind_pair(LOOPBACK),
            Err(MediaError::PortsExhausted)
        ));
        drop(squatter);
        let again = pool.bind_pair(LOOPBACK).unwrap();
        assert_eq!(again.lease.rtp_port(), first);
    }

    #[test]
    fn non_local_bind_address_is_a_bind_error() {
        let pool = PortPool::new(free_range(1));
        let foreign: IpAddr = "192.0.2.1".parse().unwrap();
        let err = pool.bind_pair(foreign).unwrap_err();
        assert_eq!(err.label(), "bind");
        assert_eq!(pool.pairs_in_use(), 0);
        assert_eq!(pool.pairs_free(), 1);
    }
}
