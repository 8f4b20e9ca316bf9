//! Batched UDP I/O for the relay workers over io_uring: the crate's ONE module with `unsafe`.
//!
//! # Why io_uring and not recvmmsg/sendmmsg
//! Every relayed stream has its own ports (SDP announces them), and at 50 packets/s per stream
//! one socket rarely holds more than one datagram when a worker wakes up: batching per socket
//! (`recvmmsg` on one fd) saves nothing. What can be batched is the work *across* the ready
//! sockets of a worker. io_uring takes one `RecvMsg` per ready socket and one `SendMsg` per
//! outgoing packet, each set in one `io_uring_enter`, so a wake-up that serves N sockets costs
//! two system calls instead of 2 × N.
//!
//! # What is unsafe here, and why it is sound
//! The kernel reads and writes memory that an SQE points to (a `msghdr`, its `iovec`, the
//! peer address and the packet buffer) from the moment the SQE is submitted until its
//! completion is reaped. Rust cannot see that borrow, so the rules that make it sound are kept
//! by this type, not by the caller:
//! - every such piece of memory is allocated once, in [`BatchIo::new`], in boxed slices that
//!   are never resized, so their addresses never change (moving a `BatchIo` moves the boxes'
//!   pointers, not the heap memory);
//! - a slot is marked in flight when its SQE is queued and freed only when its completion is
//!   reaped: [`BatchIo::buffer_mut`] and the `queue_*` methods refuse a slot in flight;
//! - [`BatchIo::submit_and_wait_all`] returns only once every queued SQE has completed, so no
//!   operation outlives the call that started it; if the kernel ever refuses to let us wait,
//!   `Drop` leaks the storage rather than free memory the kernel may still write.
//!
//! Receives carry `MSG_DONTWAIT` on non-blocking sockets: an empty socket completes at once
//! with `EAGAIN` instead of parking the request (`probe` checks that on this kernel, and the
//! unit tests check it too), so "wait for every completion" never waits for a network peer.
//!
//! # Availability
//! io_uring may be missing (old kernel, `kernel.io_uring_disabled`, a seccomp profile that
//! refuses `io_uring_setup`, as some container runtimes do). [`probe`] says so with the OS
//! error; the relay then falls back to one `recvfrom`/`sendto` per packet (`media.io`).

#![deny(clippy::undocumented_unsafe_blocks)]

use std::io;
use std::mem::size_of;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6, UdpSocket};
use std::os::fd::{AsRawFd, RawFd};
use std::time::Duration;

use io_uring::{opcode, types, IoUring};

/// Bytes of one slot's buffer: a datagram received into it, transformed in place (SRTP adds
/// its tag and MKI), then sent from it.
pub const SLOT_BYTES: usize = 4096;

/// Top bit of an SQE's `user_data`: set for sends, clear for receives.
const SEND_BIT: u64 = 1 << 63;

/// What one operation came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Received: `len` bytes in the slot's buffer, from `source`.
    Received {
        /// Datagram length (the kernel truncates to the receive length given).
        len: usize,
        /// The sender.
        source: SocketAddr,
    },
    /// Sent: `len` bytes handed to the kernel (all of them, for UDP).
    Sent {
        /// Bytes sent.
        len: usize,
    },
    /// The socket had nothing to read (`EAGAIN`): its readiness is used up.
    WouldBlock,
    /// The operation failed with this OS error (`errno`), e.g. a pending ICMP error.
    Failed(i32),
}

/// One reaped completion.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Completion {
    /// The slot the operation used.
    pub slot: usize,
    /// What the caller passed when queueing it (the relay passes its socket token).
    pub tag: u64,
    /// The result.
    pub outcome: Outcome,
}

/// Why an operation could not be queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum QueueError {
    /// The slot index is out of range or its previous operation has not completed.
    #[error("slot {0} is out of range or in flight")]
    SlotBusy(usize),
    /// The submission queue is full (more operations queued than slots: a caller bug).
    #[error("submission queue full")]
    QueueFull,
    /// A send longer than the slot's buffer.
    #[error("send length {0} exceeds the slot buffer")]
    TooLong(usize),
}

/// The per-slot kernel-visible storage. `#[repr(C)]` only to keep it plain; the kernel sees
/// each field through its own pointer.
#[repr(C)]
struct Slot {
    hdr: libc::msghdr,
    iov: libc::iovec,
    /// Peer address: filled by the kernel on receive, by us before a send.
    name: libc::sockaddr_storage,
    tag: u64,
    in_flight: bool,
}

/// An io_uring with `slots` preallocated receive/send slots. Owned by one worker thread.
pub struct BatchIo {
    /// Dropped first (field order): closing the ring cancels nothing we still need, because
    /// `Drop` leaks `slots`/`buffers` if any operation is still in flight.
    ring: IoUring,
    slots: Box<[Slot]>,
    buffers: Box<[u8]>,
    in_flight: usize,
}

// SAFETY: the raw pointers inside `Slot` (`msghdr.msg_name`, `msghdr.msg_iov`,
// `iovec.iov_base`) point only into this `BatchIo`'s own heap storage (`slots`, `buffers`),
// which moves with it; nothing else holds them. `IoUring` is itself `Send`. So handing a
// `BatchIo` to another thread (the worker it is built for) shares nothing.
unsafe impl Send for BatchIo {}

impl BatchIo {
    /// A ring with `slots` slots (submission queue of that many entries, completion queue of
    /// twice that: never more than `slots` operations are in flight).
    pub fn new(slots: usize) -> io::Result<Self> {
        let slots = slots.clamp(1, 4096);
        let entries = u32::try_from(slots.next_power_of_two()).unwrap_or(4096);
        let ring = IoUring::builder()
            .setup_cqsize(entries.saturating_mul(2))
            .build(entries)?;
        let storage = (0..slots)
            .map(|_| Slot {
                hdr: zeroed_msghdr(),
                iov: libc::iovec {
                    iov_base: std::ptr::null_mut(),
                    iov_len: 0,
                },
                name: zeroed_storage(),
                tag: 0,
                in_flight: false,
            })
            .collect();
        Ok(BatchIo {
            ring,
            slots: storage,
            buffers: vec![0u8; slots * SLOT_BYTES].into_boxed_slice(),
            in_flight: 0,
        })
    }

    /// Number of slots.
    pub fn capacity(&self) -> usize {
        self.slots.len()
    }

    /// Operations queued or submitted and not yet reaped.
    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// The whole buffer of a slot that is not in flight.
    pub fn buffer_mut(&mut self, slot: usize) -> Option<&mut [u8]> {
        if self.slots.get(slot)?.in_flight {
            return None;
        }
        let start = slot.checked_mul(SLOT_BYTES)?;
        self.buffers.get_mut(start..start.checked_add(SLOT_BYTES)?)
    }

    /// Queues a receive of at most `max_len` bytes (≤ [`SLOT_BYTES`]) from `fd` into `slot`.
    /// `fd` must be a non-blocking datagram socket; the receive also carries `MSG_DONTWAIT`.
    pub fn queue_recv(
        &mut self,
        slot: usize,
        fd: RawFd,
        max_len: usize,
        tag: u64,
    ) -> Result<(), QueueError> {
        self.queue(slot, fd, max_len.min(SLOT_BYTES), None, tag)
    }

    /// Queues a send of the first `len` bytes of `slot`'s buffer from `fd` to `dest`.
    pub fn queue_send(
        &mut self,
        slot: usize,
        fd: RawFd,
        len: usize,
        dest: SocketAddr,
        tag: u64,
    ) -> Result<(), QueueError> {
        if len > SLOT_BYTES {
            return Err(QueueError::TooLong(len));
        }
        self.queue(slot, fd, len, Some(dest), tag)
    }

    fn queue(
        &mut self,
        slot: usize,
        fd: RawFd,
        len: usize,
        dest: Option<SocketAddr>,
        tag: u64,
    ) -> Result<(), QueueError> {
        let base = slot
            .checked_mul(SLOT_BYTES)
            .and_then(|start| self.buffers.get_mut(start..start + SLOT_BYTES))
            .ok_or(QueueError::SlotBusy(slot))?
            .as_mut_ptr();
        let entry = {
            let s = self
                .slots
                .get_mut(slot)
                .filter(|s| !s.in_flight)
                .ok_or(QueueError::SlotBusy(slot))?;
            let name_len = match dest {
                Some(dest) => write_sockaddr(&mut s.name, dest),
                None => size_of::<libc::sockaddr_storage>(),
            };
            s.iov = libc::iovec {
                iov_base: base.cast(),
                iov_len: len,
            };
            s.hdr = zeroed_msghdr();
            s.hdr.msg_name = (&raw mut s.name).cast();
            s.hdr.msg_namelen = u32::try_from(name_len).unwrap_or(0);
            s.hdr.msg_iov = &raw mut s.iov;
            s.hdr.msg_iovlen = 1;
            s.tag = tag;
            let user_data = slot as u64;
            // MSG_DONTWAIT: an empty socket completes with EAGAIN instead of parking (the
            // module docs); MSG_NOSIGNAL is meaningless for UDP and left out.
            let flags = libc::MSG_DONTWAIT as u32;
            match dest {
                Some(_) => opcode::SendMsg::new(types::Fd(fd), &raw const s.hdr)
                    .flags(flags)
                    .build()
                    .user_data(user_data | SEND_BIT),
                None => opcode::RecvMsg::new(types::Fd(fd), &raw mut s.hdr)
                    .flags(flags)
                    .build()
                    .user_data(user_data),
            }
        };
        // SAFETY: the entry points at `self.slots[slot].hdr`, which points at that slot's
        // `iov` and `name` and (through `iov`) at `self.buffers[slot * SLOT_BYTES..][..len]`
        // with `len ≤ SLOT_BYTES`. All of it is heap storage owned by `self`, allocated once
        // and never resized, so it stays valid and in place until the completion is reaped
        // (`submit_and_wait_all`) or, failing that, forever (`Drop` leaks it). The slot is
        // marked in flight below, so no `&mut` to that memory is handed out meanwhile.
        let pushed = unsafe { self.ring.submission().push(&entry) };
        if pushed.is_err() {
            return Err(QueueError::QueueFull);
        }
        if let Some(s) = self.slots.get_mut(slot) {
            s.in_flight = true;
        }
        self.in_flight += 1;
        Ok(())
    }

    /// Submits every queued operation (one `io_uring_enter`, more only if interrupted) and
    /// waits until all operations in flight have completed; appends their completions to
    /// `out` (which the caller keeps allocated: no allocation here once it has the capacity).
    pub fn submit_and_wait_all(&mut self, out: &mut Vec<Completion>) -> io::Result<()> {
        while self.in_flight > 0 {
            match self.ring.submit_and_wait(self.in_flight) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
            self.reap(out);
        }
        Ok(())
    }

    fn reap(&mut self, out: &mut Vec<Completion>) {
        let mut cq = self.ring.completion();
        cq.sync();
        for cqe in &mut cq {
            let user_data = cqe.user_data();
            let Ok(slot) = usize::try_from(user_data & !SEND_BIT) else {
                continue;
            };
            let Some(s) = self.slots.get_mut(slot) else {
                continue;
            };
            if !s.in_flight {
                continue;
            }
            s.in_flight = false;
            self.in_flight = self.in_flight.saturating_sub(1);
            let result = cqe.result();
            let outcome = if result == -libc::EAGAIN {
                Outcome::WouldBlock
            } else if result < 0 {
                Outcome::Failed(-result)
            } else if user_data & SEND_BIT != 0 {
                Outcome::Sent {
                    len: usize::try_from(result).unwrap_or(0),
                }
            } else {
                match read_sockaddr(&s.name, s.hdr.msg_namelen) {
                    Some(source) => Outcome::Received {
                        len: usize::try_from(result).unwrap_or(0),
                        source,
                    },
                    // Not an IP sender (cannot happen on an IP socket): treat as a failure.
                    None => Outcome::Failed(libc::EAFNOSUPPORT),
                }
            };
            out.push(Completion {
                slot,
                tag: s.tag,
                outcome,
            });
        }
    }
}

impl Drop for BatchIo {
    fn drop(&mut self) {
        if self.in_flight > 0 {
            // The kernel may still write into these: never free them (see module docs).
            std::mem::forget(std::mem::take(&mut self.slots));
            std::mem::forget(std::mem::take(&mut self.buffers));
        }
    }
}

fn zeroed_msghdr() -> libc::msghdr {
    libc::msghdr {
        msg_name: std::ptr::null_mut(),
        msg_namelen: 0,
        msg_iov: std::ptr::null_mut(),
        msg_iovlen: 0,
        msg_control: std::ptr::null_mut(),
        msg_controllen: 0,
        msg_flags: 0,
    }
}

fn zeroed_storage() -> libc::sockaddr_storage {
    // SAFETY: `sockaddr_storage` is a plain C struct of integers for which all-zero bytes is
    // a valid value (AF_UNSPEC).
    unsafe { std::mem::zeroed() }
}

/// Writes `addr` into `storage` as a `sockaddr_in`/`sockaddr_in6`; returns its length.
fn write_sockaddr(storage: &mut libc::sockaddr_storage, addr: SocketAddr) -> usize {
    match addr {
        SocketAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(a.ip().octets()),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: `sockaddr_storage` is larger than and aligned for every sockaddr type
            // (that is its purpose, POSIX <sys/socket.h>); `storage` is a valid `&mut`.
            unsafe { std::ptr::write((storage as *mut libc::sockaddr_storage).cast(), sin) };
            size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: a.flowinfo(),
                sin6_addr: libc::in6_addr {
                    s6_addr: a.ip().octets(),
                },
                sin6_scope_id: a.scope_id(),
            };
            // SAFETY: as above.
            unsafe { std::ptr::write((storage as *mut libc::sockaddr_storage).cast(), sin6) };
            size_of::<libc::sockaddr_in6>()
        }
    }
}

/// The IP address the kernel wrote into `storage` (`len` bytes of it).
fn read_sockaddr(storage: &libc::sockaddr_storage, len: u32) -> Option<SocketAddr> {
    let len = usize::try_from(len).ok()?;
    match i32::from(storage.ss_family) {
        libc::AF_INET if len >= size_of::<libc::sockaddr_in>() => {
            // SAFETY: the family says the kernel wrote a `sockaddr_in` of the length checked
            // above; `sockaddr_storage` is aligned for it.
            let sin: libc::sockaddr_in =
                unsafe { std::ptr::read((storage as *const libc::sockaddr_storage).cast()) };
            Some(SocketAddr::V4(SocketAddrV4::new(
                Ipv4Addr::from(sin.sin_addr.s_addr.to_ne_bytes()),
                u16::from_be(sin.sin_port),
            )))
        }
        libc::AF_INET6 if len >= size_of::<libc::sockaddr_in6>() => {
            // SAFETY: as above, for `sockaddr_in6`.
            let sin6: libc::sockaddr_in6 =
                unsafe { std::ptr::read((storage as *const libc::sockaddr_storage).cast()) };
            Some(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(sin6.sin6_addr.s6_addr),
                u16::from_be(sin6.sin6_port),
                sin6.sin6_flowinfo,
                sin6.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

/// Why batched I/O cannot be used here.
#[derive(Debug, thiserror::Error)]
pub enum Unavailable {
    /// `io_uring_setup` failed (ENOSYS: no io_uring; EPERM: disabled by sysctl or seccomp).
    #[error("io_uring_setup failed: {0}")]
    Setup(#[source] io::Error),
    /// The self-test on loopback failed: a step did not behave as the relay relies on.
    #[error("io_uring self-test failed: {0}")]
    SelfTest(String),
}

/// Checks that batched I/O works here: sets up a ring, then on two loopback sockets checks
/// that a receive on an empty socket completes with `EAGAIN` without waiting (bounded: a
/// kernel that parked it is refused after a second), and that a datagram sent through the
/// ring arrives, with its source, through the ring.
///
/// Runs on a thread of its own: when a ring a thread submitted to is closed, the kernel
/// notifies that thread (task work, like a signal), which makes a blocking socket call with a
/// timeout on it fail with `EINTR`. The caller's thread is kept out of that.
pub fn probe() -> Result<(), Unavailable> {
    std::thread::scope(|s| {
        std::thread::Builder::new()
            .name("io-uring-probe".into())
            .spawn_scoped(s, probe_here)
            .map_err(|e| Unavailable::SelfTest(format!("cannot start the probe thread: {e}")))?
            .join()
            .unwrap_or_else(|_| Err(Unavailable::SelfTest("the probe thread panicked".into())))
    })
}

fn probe_here() -> Result<(), Unavailable> {
    let mut io = BatchIo::new(2).map_err(Unavailable::Setup)?;
    let self_test =
        |what: &str, e: &dyn std::fmt::Display| Unavailable::SelfTest(format!("{what}: {e}"));
    let a = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).map_err(|e| self_test("bind", &e))?;
    let b = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).map_err(|e| self_test("bind", &e))?;
    for s in [&a, &b] {
        s.set_nonblocking(true)
            .map_err(|e| self_test("set_nonblocking", &e))?;
    }
    let mut out = Vec::with_capacity(4);
    // 1. Empty socket: EAGAIN at once. Waited for with a timeout so that a kernel that parks
    //    the request cannot hang start-up.
    io.queue_recv(0, b.as_raw_fd(), SLOT_BYTES, 0)
        .map_err(|e| self_test("queue", &e))?;
    let timeout = types::Timespec::from(Duration::from_secs(1));
    let args = types::SubmitArgs::new().timespec(&timeout);
    match io.ring.submitter().submit_with_args(1, &args) {
        Ok(_) => {}
        Err(e) if e.raw_os_error() == Some(libc::ETIME) => {}
        Err(e) => return Err(self_test("submit", &e)),
    }
    io.reap(&mut out);
    if out.first().map(|c| c.outcome) != Some(Outcome::WouldBlock) {
        // Still parked (or something else): this kernel is not usable. `Drop` leaks the
        // storage if the receive is still in flight.
        return Err(Unavailable::SelfTest(format!(
            "a receive on an empty socket did not complete with EAGAIN: {out:?}"
        )));
    }
    out.clear();
    // 2. A round trip a → b through the ring.
    let to = b.local_addr().map_err(|e| self_test("local_addr", &e))?;
    let from = a.local_addr().map_err(|e| self_test("local_addr", &e))?;
    if let Some(buf) = io.buffer_mut(1) {
        buf[..4].copy_from_slice(b"ping");
    }
    io.queue_send(1, a.as_raw_fd(), 4, to, 1)
        .map_err(|e| self_test("queue", &e))?;
    io.submit_and_wait_all(&mut out)
        .map_err(|e| self_test("send", &e))?;
    io.queue_recv(0, b.as_raw_fd(), SLOT_BYTES, 0)
        .map_err(|e| self_test("queue", &e))?;
    io.submit_and_wait_all(&mut out)
        .map_err(|e| self_test("recv", &e))?;
    let received = out.iter().find_map(|c| match c.outcome {
        Outcome::Received { len, source } if c.slot == 0 => Some((len, source)),
        _ => None,
    });
    let payload_ok = io.buffer_mut(0).is_some_and(|b| b.starts_with(b"ping"));
    if received != Some((4, from)) || !payload_ok {
        return Err(Unavailable::SelfTest(format!(
            "loopback round trip through the ring failed: {out:?}"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair() -> (UdpSocket, UdpSocket) {
        let a = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let b = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        a.set_nonblocking(true).unwrap();
        b.set_nonblocking(true).unwrap();
        (a, b)
    }

    /// On a machine where io_uring is refused (seccomp, sysctl), set
    /// `PBX_EDGE_EXPECT_NO_IO_URING=1`: the tests below then check that the refusal is
    /// reported, instead of failing. Where io_uring works, the (bounded) probe must pass
    /// first: a kernel that parked receives would otherwise hang the tests that wait for
    /// every completion, as it would hang the relay (which the probe protects likewise).
    fn ring(slots: usize) -> Option<BatchIo> {
        let expect_none = std::env::var_os("PBX_EDGE_EXPECT_NO_IO_URING").is_some();
        match BatchIo::new(slots) {
            Ok(io) => {
                assert!(!expect_none, "io_uring works although told it would not");
                if let Err(e) = probe() {
                    panic!("io_uring is set up but fails its self-test: {e}");
                }
                Some(io)
            }
            Err(e) => {
                assert!(expect_none, "io_uring_setup failed: {e}");
                assert!(probe().is_err());
                None
            }
        }
    }

    /// The property the relay's "wait for every completion" rests on: a receive on an empty
    /// socket completes with EAGAIN and does not park — because of `MSG_DONTWAIT`, so the
    /// socket here is left blocking (the relay's are non-blocking as well). A parked receive
    /// would make the wait below time out (bounded) with no completion, and `Drop` leak the
    /// slot storage the kernel still holds.
    #[test]
    fn a_receive_on_an_empty_socket_completes_with_eagain() {
        let Some(mut io) = ring(4) else { return };
        let b = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        io.queue_recv(0, b.as_raw_fd(), SLOT_BYTES, 7).unwrap();
        let timeout = types::Timespec::from(Duration::from_secs(2));
        let args = types::SubmitArgs::new().timespec(&timeout);
        let _ = io.ring.submitter().submit_with_args(1, &args);
        let mut out = Vec::new();
        io.reap(&mut out);
        assert_eq!(
            out,
            [Completion {
                slot: 0,
                tag: 7,
                outcome: Outcome::WouldBlock
            }]
        );
        assert_eq!(io.in_flight(), 0);
    }

    #[test]
    fn receives_across_sockets_in_one_submit_and_sends_from_the_same_slots() {
        let Some(mut io) = ring(8) else { return };
        let sockets: Vec<(UdpSocket, UdpSocket)> = (0..3).map(|_| pair()).collect();
        // Sockets 0 and 2 hold a datagram; 1 is empty.
        for i in [0usize, 2] {
            let (a, b) = &sockets[i];
            a.send_to(&[i as u8; 10], b.local_addr().unwrap()).unwrap();
        }
        for (i, (_, b)) in sockets.iter().enumerate() {
            io.queue_recv(i, b.as_raw_fd(), 100, i as u64).unwrap();
        }
        assert_eq!(
            io.queue_recv(0, sockets[0].1.as_raw_fd(), 100, 9),
            Err(QueueError::SlotBusy(0))
        );
        assert!(io.buffer_mut(0).is_none(), "no access to a slot in flight");
        let mut out = Vec::new();
        io.submit_and_wait_all(&mut out).unwrap();
        out.sort_by_key(|c| c.slot);
        let source0 = sockets[0].0.local_addr().unwrap();
        let source2 = sockets[2].0.local_addr().unwrap();
        assert_eq!(
            out.iter()
                .map(|c| (c.slot, c.tag, c.outcome))
                .collect::<Vec<_>>(),
            [
                (
                    0,
                    0,
                    Outcome::Received {
                        len: 10,
                        source: source0
                    }
                ),
                (1, 1, Outcome::WouldBlock),
                (
                    2,
                    2,
                    Outcome::Received {
                        len: 10,
                        source: source2
                    }
                ),
            ]
        );
        assert_eq!(&io.buffer_mut(2).unwrap()[..10], &[2u8; 10]);
        // Send back from slot 2 (same buffer), changed in place.
        io.buffer_mut(2).unwrap()[0] = 0xEE;
        out.clear();
        io.queue_send(2, sockets[2].1.as_raw_fd(), 10, source2, 42)
            .unwrap();
        io.submit_and_wait_all(&mut out).unwrap();
        assert_eq!(
            out,
            [Completion {
                slot: 2,
                tag: 42,
                outcome: Outcome::Sent { len: 10 }
            }]
        );
        let mut got = [0u8; 32];
        let (n, from) = sockets[2].0.recv_from(&mut got).unwrap();
        assert_eq!(from, sockets[2].1.local_addr().unwrap());
        assert_eq!(&got[..n], &[0xEE, 2, 2, 2, 2, 2, 2, 2, 2, 2]);
    }

    #[test]
    fn a_failed_send_is_reported_with_its_errno() {
        let Some(mut io) = ring(2) else { return };
        let (a, _b) = pair();
        // IPv6 destination from an IPv4 socket: EAFNOSUPPORT (or EINVAL), never "Sent".
        let dest: SocketAddr = "[::1]:9".parse().unwrap();
        io.queue_send(0, a.as_raw_fd(), 4, dest, 0).unwrap();
        let mut out = Vec::new();
        io.submit_and_wait_all(&mut out).unwrap();
        assert!(
            matches!(
                out.as_slice(),
                [Completion {
                    outcome: Outcome::Failed(_),
                    ..
                }]
            ),
            "{out:?}"
        );
    }

    #[test]
    fn the_probe_passes_where_io_uring_works() {
        if ring(1).is_none() {
            return;
        }
        probe().unwrap();
    }

    #[test]
    fn sockaddr_round_trip() {
        for addr in ["192.0.2.7:5004", "[2001:db8::1]:40000"] {
            let addr: SocketAddr = addr.parse().unwrap();
            let mut storage = zeroed_storage();
            let len = write_sockaddr(&mut storage, addr);
            assert_eq!(read_sockaddr(&storage, len as u32), Some(addr));
            assert_eq!(read_sockaddr(&storage, 2), None, "short length refused");
        }
    }
}
