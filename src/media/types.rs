//! The plain values `media`'s modules share: stream ids, sides, packet kinds, peer addresses,
//! relay settings and the events the relay reports. Owning them here, below [`control`],
//! [`relay`] and [`stats`], is what keeps those three from naming each other in a circle
//! (control drives relay and reads stats; relay and stats only need these values).
//!
//! [`control`]: super::control
//! [`relay`]: super::relay
//! [`stats`]: super::stats

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use super::latch::LatchPolicy;
use crate::config::{MediaConfig, MediaIo};
use crate::srtp::CryptoSuite;

/// RTP or RTCP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// RTP (RFC 3550 §5).
    Rtp,
    /// RTCP (RFC 3550 §6).
    Rtcp,
}

/// Identifies one relayed stream (one m-line of one call) in events and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StreamId(pub u64);

impl std::fmt::Display for StreamId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "media-{}", self.0)
    }
}

/// Which leg of the relay.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Side {
    /// Toward the phone (SRTP, untrusted network).
    Phone,
    /// Toward the PBX (plain RTP, trusted).
    Pbx,
}

/// Relay-wide settings (from `[media]` in the config).
#[derive(Debug, Clone)]
pub struct RelaySettings {
    /// Local address of the phone-side sockets (`media.phone_bind`).
    pub phone_bind: IpAddr,
    /// Local address of the PBX-side sockets (`media.pbx_bind`).
    pub pbx_bind: IpAddr,
    /// `media.port_min`.
    pub port_min: u16,
    /// `media.port_max`.
    pub port_max: u16,
    /// No packet from a side for this long, while not on hold, is reported as
    /// [`MediaEvent::Timeout`] (`media.timeout_secs`).
    pub timeout: Duration,
    /// Relay worker threads (each owns many streams). 0 = one per CPU.
    pub workers: usize,
    /// Wake-up coalescing: after a wake-up that relayed packets, a worker sleeps this long
    /// before polling again, so the next wake-up serves every packet that arrived meanwhile.
    /// Adds at most this much latency; zero disables it. See `benches/relay_load.rs`.
    pub coalesce: Duration,
    /// DSCP of every relay socket, both sides (`media.dscp`; 0 = unmarked).
    pub dscp: u8,
    /// Batched (io_uring) or per-packet socket I/O (`media.io`).
    pub io: MediaIo,
    /// Where workers copy every RTCP compound they relay, for HEP capture (`[hep]` on);
    /// `None`: nothing is copied.
    pub rtcp_tap: Option<super::tap::RtcpTap>,
}

impl Default for RelaySettings {
    fn default() -> Self {
        RelaySettings {
            phone_bind: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            pbx_bind: IpAddr::V4(Ipv4Addr::LOCALHOST),
            port_min: 30000,
            port_max: 39999,
            timeout: Duration::from_secs(60),
            workers: 0,
            coalesce: Duration::from_micros(500),
            dscp: crate::config::DEFAULT_MEDIA_DSCP,
            io: MediaIo::Auto,
            rtcp_tap: None,
        }
    }
}

impl RelaySettings {
    /// The relay's settings from `[media]`; what the config does not set keeps its default.
    pub fn from_config(media: &MediaConfig) -> Self {
        RelaySettings {
            phone_bind: media.phone_bind,
            pbx_bind: media.pbx_bind,
            port_min: media.port_min,
            port_max: media.port_max,
            timeout: Duration::from_secs(media.timeout_secs),
            dscp: media.dscp,
            io: media.io,
            ..RelaySettings::default()
        }
    }
}

/// The SRTP suites the edge offers and accepts, strongest first: every suite the engine
/// implements except AES_192_CM, left out because Debian's libsrtp ≤ 2.7 derives its keys
/// wrongly (cisco/libsrtp#763), so phones built on it could not decrypt.
pub fn offered_suites() -> Vec<CryptoSuite> {
    CryptoSuite::ALL
        .into_iter()
        .filter(|s| !s.sdes_name().starts_with("AES_192"))
        .collect()
}

/// One side's remote media addresses, from that side's SDP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PeerSpec {
    /// RTP address (c= + m= port); `None` while not known (PBX before its answer).
    pub rtp: Option<SocketAddr>,
    /// RTCP address (`a=rtcp:`, RFC 3605); `None` = RTP port + 1 (RFC 3550 §11).
    pub rtcp: Option<SocketAddr>,
    /// `a=rtcp-mux` negotiated on this side (RFC 5761): RTCP goes to the RTP address.
    pub rtcp_mux: bool,
}

impl PeerSpec {
    /// A peer at `rtp`, RTCP on the next port, no mux.
    pub fn new(rtp: SocketAddr) -> Self {
        PeerSpec {
            rtp: Some(rtp),
            rtcp: None,
            rtcp_mux: false,
        }
    }

    /// Where RTCP goes according to SDP.
    pub fn rtcp_address(&self) -> Option<SocketAddr> {
        if self.rtcp_mux {
            return self.rtp;
        }
        self.rtcp.or_else(|| {
            self.rtp
                .and_then(|a| Some(SocketAddr::new(a.ip(), a.port().checked_add(1)?)))
        })
    }
}

/// What the relay reports to signalling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MediaEvent {
    /// A side's media address was learned or re-learned (phone: from an authenticated packet).
    Latched {
        /// The stream.
        stream: StreamId,
        /// Which side.
        side: Side,
        /// Which socket (RTP, or RTCP when not muxed).
        kind: Kind,
        /// The learned address.
        address: SocketAddr,
    },
    /// No packet from `side` for the configured timeout while not on hold. Reported once per
    /// silence; the B2BUA ends the call on both legs.
    Timeout {
        /// The stream.
        stream: StreamId,
        /// The silent side.
        side: Side,
    },
    /// Phone-side packets failed SRTP authentication since the last report (reported at most
    /// once per housekeeping tick).
    AuthFailures {
        /// The stream.
        stream: StreamId,
        /// Failures since the previous report.
        new: u64,
        /// Failures since the stream started.
        total: u64,
    },
}

/// Local addresses of one side's relay sockets (write them into that side's SDP).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LocalPorts {
    /// RTP socket (also RTCP when muxed).
    pub rtp: SocketAddr,
    /// RTCP socket (RTP port + 1).
    pub rtcp: SocketAddr,
}

/// The PBX side accepts only the PBX's address (port too once its SDP gave one).
pub fn pbx_policy(peer: &PeerSpec, host: IpAddr) -> (LatchPolicy, LatchPolicy) {
    // Before the PBX's SDP names a port, its host alone.
    let fixed = |addr: Option<SocketAddr>| match addr {
        Some(a) => LatchPolicy::Fixed {
            ip: a.ip(),
            port: Some(a.port()),
        },
        None => LatchPolicy::Fixed {
            ip: host,
            port: None,
        },
    };
    (fixed(peer.rtp), fixed(peer.rtcp_address()))
}
