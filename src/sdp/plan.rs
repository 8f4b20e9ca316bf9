//! [`MediaPlan`]: what the media relay must do for one offer/answer exchange, per media
//! description (m-line), in m-line order. The B2BUA maps it onto media streams; nothing here
//! knows about sockets.

use std::net::IpAddr;

use crate::srtp::sdes::CryptoAttribute;

/// Which leg of the B2BUA an SDP body came from or goes to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// The phone leg (SIP over TLS, SRTP).
    Phone,
    /// The PBX leg (plain SIP, plain RTP).
    Pbx,
}

/// How far the offer/answer exchange of a plan has got.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    /// The offer is rewritten; the answer is still to come. Fields that only the answer can
    /// fill (the answerer's [`Peer`], the key of the answering side) are `None`.
    Offered,
    /// Offer and answer are both rewritten: every relayed stream is fully described.
    Answered,
}

/// The media type of an m-line (RFC 8866 §5.14).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MediaKind {
    /// `audio`
    Audio,
    /// `video`
    Video,
    /// `text`
    Text,
    /// `application`
    Application,
    /// `image` (T.38)
    Image,
    /// `message`
    Message,
    /// Anything else, as written.
    Other(String),
}

/// An RTP direction attribute (RFC 3264 §5.1, §8.4); `sendrecv` when absent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Direction {
    /// `a=sendrecv`
    #[default]
    SendRecv,
    /// `a=sendonly` (the usual "hold" offer).
    SendOnly,
    /// `a=recvonly`
    RecvOnly,
    /// `a=inactive`
    Inactive,
}

impl Direction {
    /// The attribute name.
    pub fn as_str(&self) -> &'static str {
        match self {
            Direction::SendRecv => "sendrecv",
            Direction::SendOnly => "sendonly",
            Direction::RecvOnly => "recvonly",
            Direction::Inactive => "inactive",
        }
    }
}

/// A remote media endpoint as one leg's SDP describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Peer {
    /// The `c=` address (media level, else session level). `0.0.0.0` / `::` is the RFC 2543
    /// style hold: do not send to this peer (RFC 3264 §8.4).
    pub address: IpAddr,
    /// The `m=` port.
    pub rtp_port: u16,
    /// Where RTCP goes: the `a=rtcp` address (RFC 3605) or the `c=` address.
    pub rtcp_address: IpAddr,
    /// The `a=rtcp` port, else `rtp_port + 1`; equal to `rtp_port` when `rtcp_mux`.
    pub rtcp_port: u16,
    /// RTP and RTCP share `rtp_port` (RFC 5761), negotiated on this leg.
    pub rtcp_mux: bool,
    /// The direction this peer declared.
    pub direction: Direction,
    /// `(payload type, RTP clock rate)` of each `a=rtpmap` of the media description (RFC 8866
    /// §6.6), in SDP order: the relay's jitter counts in these units (RFC 3550 A.8).
    pub clock_rates: Vec<(u8, u32)>,
}

impl Peer {
    /// True when this peer asked not to be sent media: a null address or a direction in which
    /// it does not receive.
    pub fn is_on_hold(&self) -> bool {
        self.address.is_unspecified()
            || matches!(self.direction, Direction::SendOnly | Direction::Inactive)
    }
}

/// An RTP/RTCP port pair of one relay socket pair. `rtcp == rtp` when only one socket is used.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PortPair {
    /// RTP (or RTP+RTCP when muxed) port.
    pub rtp: u16,
    /// RTCP port.
    pub rtcp: u16,
}

/// The relay's local ports of one stream: one pair facing the phone, one facing the PBX.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct StreamPorts {
    /// Ports written into SDP sent to the phone.
    pub phone: PortPair,
    /// Ports written into SDP sent to the PBX.
    pub pbx: PortPair,
}

/// One relay stream an offer needs ports for, in m-line order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortRequest {
    /// The m-line index.
    pub mline: usize,
    /// Its media type.
    pub kind: MediaKind,
    /// The phone offered rtcp-mux (so the phone-side RTCP socket may not be needed). Always
    /// false for PBX offers, where the phone's choice comes with its answer.
    pub phone_rtcp_mux: bool,
    /// The ports this m-line already uses in the previous plan (a re-offer): pass them back to
    /// keep the stream, and the edge's SRTP keys, unchanged.
    pub reuse: Option<StreamPorts>,
}

/// Whether a crypto context of the relay continues across a re-offer (RFC 4568 §7.1.4).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ContextChange {
    /// A new master key: build a new SRTP context (ROC and replay window start afresh).
    New,
    /// The same master key and parameters as in the previous plan: keep the running context
    /// (ROC continuity).
    Keep,
}

/// The SRTP keys of one stream. Keys are never printed by `Debug`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SrtpKeys {
    /// The phone's crypto line: the phone protects with it, the relay **unprotects** phone →
    /// edge traffic with it. `None` until the phone has answered an edge offer.
    pub phone: Option<CryptoAttribute>,
    /// The edge's crypto line: the relay **protects** edge → phone traffic with it. For a
    /// phone offer it is drawn with the offer (every answer to that offer repeats it); for a
    /// PBX offer it is `None` until the phone has chosen one of `edge_offered`.
    pub edge: Option<CryptoAttribute>,
    /// Every line the edge offered the phone (PBX offer → phone offer), to match the phone's
    /// answer against; empty otherwise.
    pub edge_offered: Vec<CryptoAttribute>,
    /// Whether the phone → edge context is new or continues.
    pub phone_context: ContextChange,
    /// Whether the edge → phone context is new or continues.
    pub edge_context: ContextChange,
}

/// How the phone leg of a stream is protected. The PBX leg is always plain RTP.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Security {
    /// SDES-SRTP on the phone leg.
    Srtp(Box<SrtpKeys>),
    /// Plain RTP on both legs: only with `srtp = "optional"`, when the phone negotiated no
    /// crypto. Never chosen for an `RTP/SAVP` stream.
    Plain,
}

/// A stream the relay carries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RelayedStream {
    /// The relay's local ports for this stream.
    pub ports: StreamPorts,
    /// The phone's endpoint from the phone's SDP (`None` until the phone has answered a PBX
    /// offer).
    pub phone: Option<Peer>,
    /// The PBX's endpoint from the PBX's SDP (`None` until the PBX has answered a phone
    /// offer).
    pub pbx: Option<Peer>,
    /// Phone-leg protection.
    pub security: Security,
}

/// Why an m-line is not relayed (it is kept in place with port 0, RFC 3264 §6).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RejectReason {
    /// The offerer disabled it (port 0).
    DisabledByOfferer,
    /// The answerer rejected it (port 0 in the answer).
    RejectedByAnswerer,
    /// A transport the edge does not relay (DTLS-SRTP `UDP/TLS/RTP/SAVPF`, `udptl`, SRTP
    /// offered by the PBX...).
    UnsupportedTransport,
    /// `srtp = "mandatory"` and the phone offered no usable crypto for it.
    PlainRefused,
    /// `RTP/SAVP` offered by the phone without any usable crypto line.
    NoAcceptableCrypto,
    /// Best-effort SRTP offered as two m-lines (the `RTP/SAVP` one with `a=crypto` and an
    /// `RTP/AVP` twin on the same address and port, or two lines sharing an `a=mid`): this is
    /// the alternative not taken. It exists on the phone leg only (port 0, RFC 3264 §6); the
    /// PBX never sees it, and keeps not seeing it in every later offer of the dialog.
    AlternativeNotTaken,
}

/// What happens to one m-line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StreamState {
    /// Relayed.
    Relayed(Box<RelayedStream>),
    /// Not relayed; any ports allocated for it go back to the pool.
    Rejected(RejectReason),
}

/// One m-line of the exchange.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamPlan {
    /// The 0-based m-line index on the phone leg. The PBX leg has the same m-lines in the same
    /// order, minus the phone-only ones (see [`StreamPlan::on_pbx_leg`]).
    pub mline: usize,
    /// The media type.
    pub kind: MediaKind,
    /// The `a=mid` value, if any.
    pub mid: Option<String>,
    /// Relayed or rejected.
    pub state: StreamState,
    /// The `m=` proto and formats as the phone leg sees them (for rejected answers).
    pub(crate) phone_proto: String,
    pub(crate) phone_formats: String,
    /// The `m=` proto and formats as the PBX leg sees them.
    pub(crate) pbx_proto: String,
    pub(crate) pbx_formats: String,
    /// False for an m-line that exists only on the phone leg (the best-effort twin not taken):
    /// RFC 3264 §6 and §8.1 want the same m-line count in every offer and answer of a leg, so
    /// it stays in place toward the phone, with port 0, for the rest of the dialog.
    pub(crate) pbx_leg: bool,
}

impl StreamPlan {
    /// The relayed stream, if this m-line is relayed.
    pub fn relayed(&self) -> Option<&RelayedStream> {
        match &self.state {
            StreamState::Relayed(r) => Some(r),
            StreamState::Rejected(_) => None,
        }
    }

    /// True when this m-line is also on the PBX leg (false: a phone-only twin, always
    /// rejected).
    pub fn on_pbx_leg(&self) -> bool {
        self.pbx_leg
    }

    /// True when either side asked not to receive media (hold, RFC 3264 §8.4): the relay
    /// should not report a media timeout.
    pub fn is_on_hold(&self) -> bool {
        self.relayed().is_some_and(|r| {
            r.phone.as_ref().is_some_and(|p| p.is_on_hold())
                || r.pbx.as_ref().is_some_and(|p| p.is_on_hold())
        })
    }
}

/// The media plan of one offer/answer exchange.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MediaPlan {
    /// The leg whose offer started the exchange.
    pub offered_by: Side,
    /// Offered or answered.
    pub stage: Stage,
    /// One entry per m-line, in order.
    pub streams: Vec<StreamPlan>,
}

impl MediaPlan {
    /// The relayed streams.
    pub fn relayed(&self) -> impl Iterator<Item = (&StreamPlan, &RelayedStream)> {
        self.streams
            .iter()
            .filter_map(|s| s.relayed().map(|r| (s, r)))
    }

    /// Port sets that `earlier` (a previous plan, or the offered stage of this exchange)
    /// relayed and this plan no longer uses: they go back to the relay's pool (streams
    /// rejected by the answerer, dropped or moved by a re-offer).
    pub fn released_ports(&self, earlier: &MediaPlan) -> Vec<StreamPorts> {
        let mut released: Vec<StreamPorts> = Vec::new();
        for (_, old) in earlier.relayed() {
            let still_used = self.relayed().any(|(_, new)| new.ports == old.ports);
            if !still_used && !released.contains(&old.ports) {
                released.push(old.ports);
            }
        }
        released
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn peer(address: IpAddr, direction: Direction) -> Peer {
        Peer {
            address,
            rtp_port: 4000,
            rtcp_address: address,
            rtcp_port: 4001,
            rtcp_mux: false,
            direction,
            clock_rates: Vec::new(),
        }
    }

    fn relayed(mline: usize, rtp: u16) -> StreamPlan {
        StreamPlan {
            mline,
            kind: MediaKind::Audio,
            mid: None,
            state: StreamState::Relayed(Box::new(RelayedStream {
                ports: StreamPorts {
                    phone: PortPair { rtp, rtcp: rtp + 1 },
                    pbx: PortPair {
                        rtp: rtp + 2,
                        rtcp: rtp + 3,
                    },
                },
                phone: None,
                pbx: None,
                security: Security::Plain,
            })),
            phone_proto: String::new(),
            phone_formats: String::new(),
            pbx_proto: String::new(),
            pbx_formats: String::new(),
            pbx_leg: true,
        }
    }

    #[test]
    fn released_ports_are_the_ones_no_longer_relayed() {
        let plan = |streams| MediaPlan {
            offered_by: Side::Phone,
            stage: Stage::Answered,
            streams,
        };
        let before = plan(vec![relayed(0, 100), relayed(1, 200)]);
        let mut rejected = relayed(1, 200);
        rejected.state = StreamState::Rejected(RejectReason::RejectedByAnswerer);
        let after = plan(vec![relayed(0, 100), rejected]);
        let released = after.released_ports(&before);
        assert_eq!(released.len(), 1);
        assert_eq!(released[0].phone.rtp, 200);
        assert!(before.released_ports(&before).is_empty());
    }

    #[test]
    fn hold_is_null_address_or_not_receiving() {
        let addr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));
        assert!(!peer(addr, Direction::SendRecv).is_on_hold());
        assert!(!peer(addr, Direction::RecvOnly).is_on_hold());
        assert!(peer(addr, Direction::SendOnly).is_on_hold());
        assert!(peer(addr, Direction::Inactive).is_on_hold());
        assert!(peer(IpAddr::V4(Ipv4Addr::UNSPECIFIED), Direction::SendRecv).is_on_hold());
    }
}
