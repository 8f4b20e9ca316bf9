//! RTCP copies for HEP capture (`[hep]`): the relay worker hands every RTCP compound it
//! forwards (the phone's after SRTCP unprotect, the PBX's as received) to whoever captures,
//! without ever waiting, locking or allocating.
//!
//! The hand-off is a preallocated bounded lock-free ring ([`crossbeam_queue::ArrayQueue`] of
//! [`RTCP_TAP_QUEUE`] fixed-size [`RtcpCopy`] slots): the worker copies the packet into a slot
//! with `push`; when the ring is full the copy is dropped and counted (the `queue_full`
//! counter the caller passes in: `pbx_edge_hep_dropped_total{reason="rtcp_queue_full"}`), and
//! a compound longer than [`RTCP_COPY_MAX`] is dropped and counted as `too_large`. The
//! consumer (`app`, feeding `capture`) drains it on its own schedule. With `[hep]` off there
//! is no tap: the hook is one branch on `None`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::SystemTime;

use crossbeam_queue::ArrayQueue;
use prometheus::IntCounter;

/// Longest RTCP compound copied: a full Ethernet MTU. RTCP compounds are typically under 200
/// bytes; a longer one (only a hostile sender makes one) is dropped and counted.
pub const RTCP_COPY_MAX: usize = 1500;

/// Slots in the ring (≈ 1.6 KB each, allocated once when `[hep]` is on). At one compound
/// per 5 s per side (RFC 3550 §6.2), 512 slots absorb thousands of streams between drains.
pub const RTCP_TAP_QUEUE: usize = 512;

/// One RTCP compound as the edge received it.
pub struct RtcpCopy {
    /// The sender (the phone's or the PBX's address).
    pub src: SocketAddr,
    /// The edge's socket it arrived on.
    pub dst: SocketAddr,
    /// When the edge relayed it.
    pub time: SystemTime,
    /// The call's Call-ID (HEP correlation id), when the stream's owner gave one.
    pub correlation: Option<Arc<str>>,
    len: usize,
    bytes: [u8; RTCP_COPY_MAX],
}

impl RtcpCopy {
    /// The plain RTCP compound.
    pub fn payload(&self) -> &[u8] {
        self.bytes.get(..self.len).unwrap_or_default()
    }
}

/// The worker's end and the consumer's end of the hand-off; cheap to clone.
#[derive(Clone)]
pub struct RtcpTap {
    ring: Arc<ArrayQueue<RtcpCopy>>,
    queue_full: IntCounter,
    too_large: IntCounter,
}

impl std::fmt::Debug for RtcpTap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RtcpTap")
            .field("queued", &self.ring.len())
            .finish_non_exhaustive()
    }
}

impl RtcpTap {
    /// A ring of `slots` copies; drops are counted in `queue_full` and `too_large`.
    pub fn new(slots: usize, queue_full: IntCounter, too_large: IntCounter) -> Self {
        RtcpTap {
            ring: Arc::new(ArrayQueue::new(slots.max(1))),
            queue_full,
            too_large,
        }
    }

    /// Copies `packet` into the ring (worker side): never waits, never allocates.
    #[inline]
    pub fn offer(
        &self,
        src: SocketAddr,
        dst: SocketAddr,
        time: SystemTime,
        correlation: Option<&Arc<str>>,
        packet: &[u8],
    ) {
        let len = packet.len();
        let mut bytes = [0u8; RTCP_COPY_MAX];
        let Some(slot) = bytes.get_mut(..len) else {
            self.too_large.inc();
            return;
        };
        slot.copy_from_slice(packet);
        let copy = RtcpCopy {
            src,
            dst,
            time,
            correlation: correlation.cloned(),
            len,
            bytes,
        };
        if self.ring.push(copy).is_err() {
            self.queue_full.inc();
        }
    }

    /// Takes every queued copy (consumer side), oldest first.
    pub fn drain(&self, mut f: impl FnMut(RtcpCopy)) {
        while let Some(copy) = self.ring.pop() {
            f(copy);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counter(name: &str) -> IntCounter {
        IntCounter::new(name, "test").unwrap()
    }

    #[test]
    fn copies_in_order_then_drops_and_counts_when_full_or_too_long() {
        let (full, large) = (counter("full"), counter("large"));
        let tap = RtcpTap::new(2, full.clone(), large.clone());
        let a: SocketAddr = "192.0.2.1:5005".parse().unwrap();
        let b: SocketAddr = "127.0.0.1:30001".parse().unwrap();
        let id: Arc<str> = Arc::from("call-1");
        for p in [&[1u8, 2][..], &[3], &[4]] {
            tap.offer(a, b, SystemTime::UNIX_EPOCH, Some(&id), p);
        }
        tap.offer(a, b, SystemTime::UNIX_EPOCH, None, &[0; RTCP_COPY_MAX + 1]);
        assert_eq!((full.get(), large.get()), (1, 1));
        let mut got = Vec::new();
        tap.drain(|c| {
            assert_eq!(
                (c.src, c.dst, c.correlation.as_deref()),
                (a, b, Some("call-1"))
            );
            got.push(c.payload().to_vec());
        });
        assert_eq!(got, [vec![1, 2], vec![3]]);
        // Room again after the drain.
        tap.offer(a, b, SystemTime::UNIX_EPOCH, None, &[0; RTCP_COPY_MAX]);
        let mut n = 0;
        tap.drain(|c| {
            assert_eq!(c.payload().len(), RTCP_COPY_MAX);
            n += 1;
        });
        assert_eq!(n, 1);
    }
}
