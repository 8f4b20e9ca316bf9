//! The media relay: moves RTP/RTCP between the phone side (SRTP, SDES keys) and the PBX side
//! (plain RTP) through the SRTP engine.
//!
//! # Layout
//! - [`control`]: the only API other modules use — [`MediaControl`] starts streams, a
//!   [`StreamHandle`] changes or stops one, [`MediaEvent`]s come back on a caller-owned channel.
//! - [`ports`]: the RTP/RTCP port pool (`media.port_min..=port_max`), RAII leases.
//! - [`transform`]: the per-direction packet transform chosen at signalling time.
//! - [`latch`] (PURE): authenticated latching decisions (the RTP-bleed defence).
//! - [`batch_io`]: batched UDP I/O over io_uring for the relay workers (`media.io`); the
//!   crate's only `unsafe`.
//! - [`relay`]: the hot path — worker threads, each owning many streams, one wake-up serving
//!   every ready socket.
//! - [`quality`] (PURE core): per-direction loss and jitter from RTP sequence numbers and
//!   timestamps (RFC 3550 A.1/A.3/A.8), kept by the worker, read at snapshot time.
//! - [`rtcp`] (PURE): RTCP compound reader (SR, RR, report blocks; RFC 3550 §6.4).
//! - [`report`] (PURE core): what each side reports in RTCP about the media it receives
//!   (loss, jitter) and each leg's round-trip time measured at the edge.
//! - [`tap`]: the lock-free hand-off of RTCP copies from the workers to HEP capture.
//! - [`mos`] (PURE): estimated MOS from loss and jitter (simplified ITU-T G.107 E-model).
//! - [`stats`]: per-stream atomics and the Prometheus collector summing them at scrape time.
//! - [`types`]: the values the others share (ids, sides, peer addresses, settings, events),
//!   so that `control` → `relay` → `stats` stays a one-way street.
//!
//! `media` depends on `srtp` only; it never imports `sip`, `sdp`, `b2bua` or `transaction`.

// The crate's one module with `unsafe` (io_uring buffers); see its docs for why it is sound.
#[allow(unsafe_code)]
pub mod batch_io;
pub mod control;
pub mod latch;
pub mod mos;
pub mod ports;
pub mod quality;
pub mod relay;
pub mod report;
pub mod rtcp;
pub mod stats;
pub mod tap;
pub mod transform;
pub mod types;

pub use control::{MediaControl, StreamCommand, StreamHandle, StreamSpec};
pub use ports::{PortPool, PortRange};
pub use quality::QualitySnapshot;
pub use stats::{CounterSnapshot, StreamCounters};
pub use transform::{SrtpParams, TransformSpec};
pub use types::{ClockRates, LocalPorts, MediaEvent, PeerSpec, RelaySettings, Side, StreamId};

use std::net::SocketAddr;

/// Errors of the media relay's control plane. The packet path never returns errors: it drops
/// and counts (see [`stats::DropReason`]).
#[derive(Debug, thiserror::Error)]
pub enum MediaError {
    /// Every port pair in `port_min..=port_max` is leased or taken by another process; the
    /// B2BUA answers 503.
    #[error("no free media port pair in the configured range")]
    PortsExhausted,
    /// `port_min..=port_max` does not hold one even/odd pair, or `port_min` is 0.
    #[error("invalid media port range {min}..={max}")]
    InvalidPortRange {
        /// Configured lower bound.
        min: u16,
        /// Configured upper bound.
        max: u16,
    },
    /// Binding a relay socket failed for another reason than the port being taken (e.g. the
    /// bind address is not local).
    #[error("cannot bind media socket {addr}: {source}")]
    Bind {
        /// The address that could not be bound.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// Registering a socket with the worker's poller, or starting a worker thread, failed.
    #[error("media worker I/O error: {0}")]
    Worker(#[source] std::io::Error),
    /// The SRTP parameters of a [`TransformSpec`] were refused by the SRTP engine (bad key
    /// length for the suite, unsupported option).
    #[error("SRTP context refused: {0}")]
    Srtp(#[source] crate::srtp::SrtpError),
    /// The stream was already stopped (or its worker has exited) when a command was sent.
    #[error("media stream is gone")]
    StreamGone,
    /// `StreamSpec` is inconsistent (e.g. an IPv6 peer on an IPv4-only relay side).
    #[error("invalid stream spec: {0}")]
    InvalidSpec(&'static str),
    /// `media.io = "batched"` but io_uring cannot be used on this machine.
    #[error("media.io = \"batched\" but batched I/O is unavailable here ({0}); use \"auto\" or \"per_packet\"")]
    BatchedIoUnavailable(#[source] batch_io::Unavailable),
    /// Registering the media metrics into the Prometheus registry failed (duplicate names).
    #[error("metrics registration failed: {0}")]
    Metrics(#[from] prometheus::Error),
}

impl MediaError {
    /// Stable label for metrics and logs.
    pub fn label(&self) -> &'static str {
        match self {
            MediaError::PortsExhausted => "ports_exhausted",
            MediaError::InvalidPortRange { .. } => "invalid_port_range",
            MediaError::Bind { .. } => "bind",
            MediaError::Worker(_) => "worker_io",
            MediaError::Srtp(_) => "srtp_params",
            MediaError::StreamGone => "stream_gone",
            MediaError::InvalidSpec(_) => "invalid_spec",
            MediaError::Metrics(_) => "metrics",
            MediaError::BatchedIoUnavailable(_) => "batched_io_unavailable",
        }
    }
}
