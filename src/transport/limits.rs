//! Limits on open phone connections, counted from TCP accept (handshakes included): at most
//! `tls.max_connections` in all and `tls.max_connections_per_ip` from one source address.
//! Without them anyone who can reach port 5061 can exhaust the edge's file descriptors (and
//! its CPU with handshakes) and lock every phone out. The per-address limit is generous by
//! default because a whole office of phones may sit behind one NAT address.
//!
//! A [`ConnectionPermit`] is held for the life of the connection and gives its slot back when
//! dropped, whichever way the connection ends.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::{Arc, Mutex, PoisonError};

/// Why a connection was refused (the metric label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectionRefusal {
    /// `tls.max_connections` are open.
    Total,
    /// `tls.max_connections_per_ip` are open from this address.
    PerAddress,
}

impl ConnectionRefusal {
    pub fn label(self) -> &'static str {
        match self {
            Self::Total => "max_connections",
            Self::PerAddress => "max_connections_per_ip",
        }
    }
}

#[derive(Debug, Default)]
struct Counts {
    total: usize,
    per_ip: HashMap<IpAddr, usize>,
}

/// The shared connection counts (cheap to clone).
#[derive(Debug, Clone)]
pub struct ConnectionLimiter {
    max_total: usize,
    max_per_ip: usize,
    counts: Arc<Mutex<Counts>>,
}

impl ConnectionLimiter {
    pub fn new(max_total: usize, max_per_ip: usize) -> Self {
        Self {
            max_total,
            max_per_ip,
            counts: Arc::default(),
        }
    }

    /// A slot for a connection from `ip`, or why there is none. Sources are counted as
    /// [`source_of`] groups them.
    pub fn try_acquire(&self, ip: IpAddr) -> Result<ConnectionPermit, ConnectionRefusal> {
        let ip = source_of(ip);
        // The counts stay consistent even if a holder panicked: every change is one step.
        let mut c = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        if c.total >= self.max_total {
            return Err(ConnectionRefusal::Total);
        }
        let from_ip = c.per_ip.entry(ip).or_insert(0);
        if *from_ip >= self.max_per_ip {
            return Err(ConnectionRefusal::PerAddress);
        }
        *from_ip += 1;
        c.total += 1;
        Ok(ConnectionPermit {
            ip,
            counts: self.counts.clone(),
        })
    }

    /// Connections open now (all sources).
    pub fn open(&self) -> usize {
        self.counts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .total
    }

    /// Connections open now from `ip`.
    pub fn open_from(&self, ip: IpAddr) -> usize {
        self.counts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .per_ip
            .get(&source_of(ip))
            .copied()
            .unwrap_or(0)
    }
}

/// The "source address" a connection counts against: IPv4-mapped IPv6 addresses as their
/// IPv4 address (a dual-stack listener sees both forms), and IPv6 by its /64 — one host
/// usually holds a whole /64 (RFC 4291 §2.5.1 interface identifiers, privacy addresses), so
/// per-/128 counting would be no limit at all.
pub fn source_of(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & !u128::from(u64::MAX))),
        v4 => v4,
    }
}

/// One connection's slot; released on drop.
#[derive(Debug)]
pub struct ConnectionPermit {
    ip: IpAddr,
    counts: Arc<Mutex<Counts>>,
}

impl Drop for ConnectionPermit {
    fn drop(&mut self) {
        let mut c = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        c.total = c.total.saturating_sub(1);
        if let Some(n) = c.per_ip.get_mut(&self.ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                c.per_ip.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn per_address_limit_then_release() {
        let l = ConnectionLimiter::new(10, 2);
        let a = l.try_acquire(ip("192.0.2.1")).unwrap();
        let _b = l.try_acquire(ip("192.0.2.1")).unwrap();
        assert_eq!(
            l.try_acquire(ip("192.0.2.1")).unwrap_err(),
            ConnectionRefusal::PerAddress
        );
        // Another address is not affected.
        let _c = l.try_acquire(ip("192.0.2.2")).unwrap();
        drop(a);
        assert!(l.try_acquire(ip("192.0.2.1")).is_ok());
    }

    #[test]
    fn ipv6_counts_per_64() {
        let l = ConnectionLimiter::new(10, 2);
        let _a = l.try_acquire(ip("2001:db8:1:2::1")).unwrap();
        let _b = l.try_acquire(ip("2001:db8:1:2:aaaa::7")).unwrap();
        assert_eq!(
            l.try_acquire(ip("2001:db8:1:2:ffff:ffff:ffff:ffff"))
                .unwrap_err(),
            ConnectionRefusal::PerAddress
        );
        // The next /64 is another source.
        assert!(l.try_acquire(ip("2001:db8:1:3::1")).is_ok());
        assert_eq!(l.open_from(ip("2001:db8:1:2::99")), 2);
    }

    #[test]
    fn total_limit_across_addresses() {
        let l = ConnectionLimiter::new(2, 10);
        let _a = l.try_acquire(ip("192.0.2.1")).unwrap();
        let _b = l.try_acquire(ip("2001:db8::1")).unwrap();
        assert_eq!(
            l.try_acquire(ip("192.0.2.3")).unwrap_err(),
            ConnectionRefusal::Total
        );
        assert_eq!(l.open(), 2);
    }

    #[test]
    fn mapped_ipv6_counts_as_its_ipv4_and_entries_are_removed() {
        let l = ConnectionLimiter::new(10, 1);
        let a = l.try_acquire(ip("::ffff:192.0.2.1")).unwrap();
        assert_eq!(
            l.try_acquire(ip("192.0.2.1")).unwrap_err(),
            ConnectionRefusal::PerAddress
        );
        assert_eq!(l.open_from(ip("192.0.2.1")), 1);
        drop(a);
        assert_eq!(l.open_from(ip("192.0.2.1")), 0);
        assert_eq!(l.open(), 0);
        assert!(l
            .counts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .per_ip
            .is_empty());
    }
}
