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

/// Most `a=rtpmap` clock rates kept per side (phones offer a handful of codecs; the rest fall
/// back to the static types of RFC 3551 §6).
pub const CLOCK_RATES: usize = 16;

/// RTP clock rates taken from SDP: 8 kHz narrowband audio to 192 kHz high-rate audio (video
/// is 90 kHz, RFC 3551 §5). A phone's SDP is its own to write; a rate outside this is not a
/// codec's and would only turn its stream's jitter into nonsense, so the type stays unmapped
/// (its jitter unknown).
pub const CLOCK_RATE_RANGE: std::ops::RangeInclusive<u32> = 1_000..=192_000;

/// RTP clock rates of the payload types one side's SDP maps (`a=rtpmap`, RFC 8866 §6.6), for
/// jitter, which RFC 3550 A.8 counts in timestamp units. Fixed capacity and `Copy`: the relay
/// worker reads it per packet without allocating.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ClockRates {
    entries: [(u8, u32); CLOCK_RATES],
    len: usize,
}

impl ClockRates {
    /// No `a=rtpmap` known: only the static types' rates.
    pub const EMPTY: ClockRates = ClockRates {
        entries: [(0, 0); CLOCK_RATES],
        len: 0,
    };

    /// The first [`CLOCK_RATES`] `(payload type, rate)` pairs with a type below 128 and a
    /// rate in [`CLOCK_RATE_RANGE`]; a type mapped twice keeps its first rate.
    pub fn new(pairs: impl IntoIterator<Item = (u8, u32)>) -> Self {
        let mut rates = ClockRates::default();
        for (pt, rate) in pairs {
            if pt >= 128 || !CLOCK_RATE_RANGE.contains(&rate) || rates.mapped(pt).is_some() {
                continue;
            }
            let Some(slot) = rates.entries.get_mut(rates.len) else {
                break;
            };
            *slot = (pt, rate);
            rates.len += 1;
        }
        rates
    }

    fn mapped(&self, payload_type: u8) -> Option<u32> {
        self.entries
            .get(..self.len)?
            .iter()
            .find(|(pt, _)| *pt == payload_type)
            .map(|(_, rate)| *rate)
    }

    /// The clock rate of `payload_type`: as the SDP mapped it, else that of a static type the
    /// relay knows (RFC 3551 §6: PCMU, PCMA, G722 — whose RTP clock is 8000 Hz, §4.5.2 — and
    /// G729), else `None`.
    #[inline]
    pub fn rate(&self, payload_type: u8) -> Option<u32> {
        self.mapped(payload_type).or(match payload_type {
            0 | 8 | 9 | 18 => Some(8000),
            _ => None,
        })
    }
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
    /// Clock rates of the payload types this side's SDP maps.
    pub clock_rates: ClockRates,
}

impl PeerSpec {
    /// A peer at `rtp`, RTCP on the next port, no mux.
    pub fn new(rtp: SocketAddr) -> Self {
        PeerSpec {
            rtp: Some(rtp),
            rtcp: None,
            rtcp_mux: false,
            clock_rates: ClockRates::default(),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clock_rates_keep_the_first_mapping_and_fall_back_to_static_types() {
        let rates = ClockRates::new([(111, 48_000), (111, 16_000), (0, 16_000), (130, 8000)]);
        assert_eq!(
            rates.rate(111),
            Some(48_000),
            "the first mapping of a type counts"
        );
        assert_eq!(
            rates.rate(0),
            Some(16_000),
            "a mapped static type takes the SDP's rate"
        );
        assert_eq!(
            rates.rate(8),
            Some(8000),
            "an unmapped static type falls back"
        );
        assert_eq!(
            rates.rate(9),
            Some(8000),
            "G722's RTP clock is 8000 (RFC 3551 §4.5.2)"
        );
        assert_eq!(rates.rate(96), None);
        assert_eq!(
            ClockRates::new([(96, 0)]).rate(96),
            None,
            "rate 0 is no rate"
        );
        // Rates no codec has, from a phone's own SDP: the type stays unmapped.
        let odd = ClockRates::new([(97, 1), (98, 999), (99, 192_001), (0, 4_000_000_000)]);
        assert_eq!(
            (odd.rate(97), odd.rate(98), odd.rate(99)),
            (None, None, None)
        );
        assert_eq!(odd.rate(0), Some(8000), "a static type keeps its own rate");
        let edges = ClockRates::new([(97, 1_000), (98, 192_000)]);
        assert_eq!(
            (edges.rate(97), edges.rate(98)),
            (Some(1_000), Some(192_000))
        );
    }

    #[test]
    fn clock_rates_hold_a_bounded_number_of_types() {
        let many = (96..128).map(|pt| (pt, 90_000));
        let rates = ClockRates::new(many);
        assert_eq!(rates.rate(96 + CLOCK_RATES as u8 - 1), Some(90_000));
        assert_eq!(
            rates.rate(96 + CLOCK_RATES as u8),
            None,
            "beyond the capacity"
        );
        assert_eq!(ClockRates::default(), ClockRates::EMPTY);
    }
}
