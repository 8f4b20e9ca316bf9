#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]
//! Authenticated latching (PURE): which source addresses a relay socket accepts packets from,
//! and where it sends packets back to.
//!
//! This is the defence against RTP-bleed style hijacking (rtpengine's "strict source" +
//! "learn only after decryption"): an attacker who sprays packets at relay ports must not be
//! able to redirect a call's media to itself.
//!
//! - **Phone side, SRTP** ([`LatchPolicy::Authenticated`]): until a packet passes SRTP
//!   authentication (RFC 3711 §3.3 step 5/6, and the replay check), media goes to the address
//!   from the phone's SDP (`advertised`). The `learned` address is taken — and re-taken after a
//!   NAT rebinding — only from an authenticated packet. Unauthenticated packets never change
//!   anything.
//! - **Phone side, plain RTP** (best-effort SRTP policy, [`LatchPolicy::FirstSource`]): nothing
//!   can be authenticated, so the first source is learned and then kept; packets from any other
//!   source are dropped. A re-learn needs a signalling change (`Retarget`).
//! - **PBX side** ([`LatchPolicy::Fixed`]): only the PBX's IP address is accepted; the port too
//!   when the PBX's SDP told us (otherwise the first port from that IP is learned).
//!
//! No clock, no sockets: [`Latch::judge`] maps (state, source, proof) to a [`Verdict`] and
//! [`Latch::apply`] records it. The relay calls `judge` after the SRTP transform on the phone
//! side (authenticate, then learn) and before it on the PBX side.

use std::net::{IpAddr, SocketAddr};

/// How a socket decides whom to accept packets from. Chosen at signalling time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LatchPolicy {
    /// Learn (and re-learn) the peer only from packets that passed SRTP authentication.
    Authenticated,
    /// Plain RTP from an untrusted peer: learn the first source, then accept only that one.
    FirstSource,
    /// Trusted peer at a known IP (the PBX); the port is checked when `Some`.
    Fixed {
        /// The peer's IP address.
        ip: IpAddr,
        /// The peer's port, when its SDP gave one.
        port: Option<u16>,
    },
}

/// What the transform could prove about a packet before the latch decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proof {
    /// SRTP/SRTCP authentication tag verified and the index was not a replay.
    Authenticated,
    /// Plain packet: nothing could be verified (plain RTP side or best-effort stream).
    Unverified,
}

/// Why a packet was refused by the latch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Source is not the trusted peer's address (PBX side), or not the learned source of a
    /// plain stream.
    SpoofedSource,
    /// A policy that needs authentication got an unverified packet.
    Unauthenticated,
}

/// The latch decision for one packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Forward; the learned address does not change.
    Forward,
    /// Forward and learn `source` as the peer's address from now on (a latching event).
    ForwardAndLearn(SocketAddr),
    /// Drop and count.
    Drop(Refusal),
}

/// Per-socket latch state: the policy, the SDP address and the learned address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Latch {
    policy: LatchPolicy,
    /// Where the peer's SDP said to send media (`None` until known, or for the PBX before its
    /// answer arrives).
    advertised: Option<SocketAddr>,
    /// The source address learned from accepted packets.
    learned: Option<SocketAddr>,
}

impl Latch {
    /// A latch that has learned nothing yet.
    pub fn new(policy: LatchPolicy, advertised: Option<SocketAddr>) -> Self {
        Latch {
            policy,
            advertised,
            learned: None,
        }
    }

    /// The policy in force.
    pub fn policy(&self) -> LatchPolicy {
        self.policy
    }

    /// The address from the peer's SDP, if any.
    pub fn advertised(&self) -> Option<SocketAddr> {
        self.advertised
    }

    /// The address learned from accepted packets, if any.
    pub fn learned(&self) -> Option<SocketAddr> {
        self.learned
    }

    /// Where packets for this peer go: the learned address, else the SDP address. For a
    /// [`LatchPolicy::Fixed`] peer, the SDP address wins (the PBX is trusted and may send from
    /// another port than it receives on).
    pub fn destination(&self) -> Option<SocketAddr> {
        match self.policy {
            LatchPolicy::Fixed { .. } => self.advertised.or(self.learned),
            LatchPolicy::Authenticated | LatchPolicy::FirstSource => {
                self.learned.or(self.advertised)
            }
        }
    }

    /// Decides what to do with a packet from `source` given what the transform proved.
    pub fn judge(&self, source: SocketAddr, proof: Proof) -> Verdict {
        match self.policy {
            LatchPolicy::Authenticated => match proof {
                Proof::Unverified => Verdict::Drop(Refusal::Unauthenticated),
                Proof::Authenticated if self.learned == Some(source) => Verdict::Forward,
                // First authenticated packet, or a NAT rebinding: (re-)learn.
                Proof::Authenticated => Verdict::ForwardAndLearn(source),
            },
            LatchPolicy::FirstSource => match self.learned {
                None => Verdict::ForwardAndLearn(source),
                Some(learned) if learned == source => Verdict::Forward,
                Some(_) => Verdict::Drop(Refusal::SpoofedSource),
            },
            LatchPolicy::Fixed { ip, port } => {
                if source.ip() != ip {
                    return Verdict::Drop(Refusal::SpoofedSource);
                }
                match (port, self.learned) {
                    (Some(expected), _) if expected != source.port() => {
                        Verdict::Drop(Refusal::SpoofedSource)
                    }
                    (Some(_), _) => Verdict::Forward,
                    (None, None) => Verdict::ForwardAndLearn(source),
                    (None, Some(learned)) if learned == source => Verdict::Forward,
                    (None, Some(_)) => Verdict::Drop(Refusal::SpoofedSource),
                }
            }
        }
    }

    /// Records a verdict returned by [`Latch::judge`].
    pub fn apply(&mut self, verdict: Verdict) {
        if let Verdict::ForwardAndLearn(source) = verdict {
            self.learned = Some(source);
        }
    }

    /// Signalling changed the peer (re-INVITE with a new c=/m=): new policy and SDP address.
    /// The learned address is forgotten, so media goes to the new SDP address until the peer
    /// proves itself again.
    pub fn retarget(&mut self, policy: LatchPolicy, advertised: Option<SocketAddr>) {
        self.policy = policy;
        self.advertised = advertised;
        self.learned = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    const SDP: &str = "192.0.2.10:4000";
    const NAT: &str = "198.51.100.7:61000";
    const REBOUND: &str = "198.51.100.7:61002";
    const ATTACKER: &str = "203.0.113.66:4000";

    /// The decision table for the phone side with SRTP.
    #[test]
    fn authenticated_policy_table() {
        let mut latch = Latch::new(LatchPolicy::Authenticated, Some(addr(SDP)));
        assert_eq!(latch.destination(), Some(addr(SDP)));

        // Unauthenticated packets are refused and never learned, from anywhere.
        for src in [SDP, NAT, ATTACKER] {
            assert_eq!(
                latch.judge(addr(src), Proof::Unverified),
                Verdict::Drop(Refusal::Unauthenticated)
            );
        }
        assert_eq!(latch.learned(), None);

        // First authenticated packet (behind NAT) is learned.
        let v = latch.judge(addr(NAT), Proof::Authenticated);
        assert_eq!(v, Verdict::ForwardAndLearn(addr(NAT)));
        latch.apply(v);
        assert_eq!(latch.destination(), Some(addr(NAT)));

        // Same source again: plain forward.
        assert_eq!(
            latch.judge(addr(NAT), Proof::Authenticated),
            Verdict::Forward
        );

        // Spoofed unauthenticated packet from elsewhere does not redirect media.
        let v = latch.judge(addr(ATTACKER), Proof::Unverified);
        latch.apply(v);
        assert_eq!(v, Verdict::Drop(Refusal::Unauthenticated));
        assert_eq!(latch.destination(), Some(addr(NAT)));

        // NAT rebinding with an authenticated packet: re-learned.
        let v = latch.judge(addr(REBOUND), Proof::Authenticated);
        assert_eq!(v, Verdict::ForwardAndLearn(addr(REBOUND)));
        latch.apply(v);
        assert_eq!(latch.destination(), Some(addr(REBOUND)));
    }

    #[test]
    fn first_source_policy_table() {
        let mut latch = Latch::new(LatchPolicy::FirstSource, Some(addr(SDP)));
        assert_eq!(latch.destination(), Some(addr(SDP)));
        let v = latch.judge(addr(NAT), Proof::Unverified);
        assert_eq!(v, Verdict::ForwardAndLearn(addr(NAT)));
        latch.apply(v);
        assert_eq!(latch.judge(addr(NAT), Proof::Unverified), Verdict::Forward);
        assert_eq!(
            latch.judge(addr(ATTACKER), Proof::Unverified),
            Verdict::Drop(Refusal::SpoofedSource)
        );
        assert_eq!(
            latch.judge(addr(SDP), Proof::Unverified),
            Verdict::Drop(Refusal::SpoofedSource)
        );
        assert_eq!(latch.destination(), Some(addr(NAT)));
    }

    #[test]
    fn fixed_policy_with_port() {
        let pbx = addr("127.0.0.1:20000");
        let latch = Latch::new(
            LatchPolicy::Fixed {
                ip: pbx.ip(),
                port: Some(pbx.port()),
            },
            Some(pbx),
        );
        assert_eq!(latch.judge(pbx, Proof::Unverified), Verdict::Forward);
        assert_eq!(
            latch.judge(addr("127.0.0.1:20002"), Proof::Unverified),
            Verdict::Drop(Refusal::SpoofedSource)
        );
        assert_eq!(
            latch.judge(addr("127.0.0.2:20000"), Proof::Unverified),
            Verdict::Drop(Refusal::SpoofedSource)
        );
        // Authentication proves nothing about the PBX's address.
        assert_eq!(
            latch.judge(addr(ATTACKER), Proof::Authenticated),
            Verdict::Drop(Refusal::SpoofedSource)
        );
        assert_eq!(latch.destination(), Some(pbx));
    }

    #[test]
    fn fixed_policy_without_port_learns_first_port() {
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let mut latch = Latch::new(LatchPolicy::Fixed { ip, port: None }, None);
        assert_eq!(latch.destination(), None);
        let v = latch.judge(addr("127.0.0.1:20000"), Proof::Unverified);
        assert_eq!(v, Verdict::ForwardAndLearn(addr("127.0.0.1:20000")));
        latch.apply(v);
        assert_eq!(latch.destination(), Some(addr("127.0.0.1:20000")));
        assert_eq!(
            latch.judge(addr("127.0.0.1:20004"), Proof::Unverified),
            Verdict::Drop(Refusal::SpoofedSource)
        );
        assert_eq!(
            latch.judge(addr("10.0.0.1:20000"), Proof::Unverified),
            Verdict::Drop(Refusal::SpoofedSource)
        );
    }

    #[test]
    fn retarget_forgets_learned_address() {
        let mut latch = Latch::new(LatchPolicy::Authenticated, Some(addr(SDP)));
        latch.apply(Verdict::ForwardAndLearn(addr(NAT)));
        latch.retarget(LatchPolicy::Authenticated, Some(addr(REBOUND)));
        assert_eq!(latch.learned(), None);
        assert_eq!(latch.destination(), Some(addr(REBOUND)));
    }

    proptest::proptest! {
        /// Whatever sequence of unauthenticated packets arrives, an SRTP latch never changes
        /// its destination.
        #[test]
        fn unverified_packets_never_move_authenticated_latch(
            ports in proptest::collection::vec(1u16.., 0..32),
            ips in proptest::collection::vec(proptest::prelude::any::<[u8; 4]>(), 0..32),
        ) {
            let mut latch = Latch::new(LatchPolicy::Authenticated, Some(addr(SDP)));
            latch.apply(Verdict::ForwardAndLearn(addr(NAT)));
            for (port, ip) in ports.iter().zip(ips.iter()) {
                let src = SocketAddr::from((*ip, *port));
                let v = latch.judge(src, Proof::Unverified);
                latch.apply(v);
                proptest::prop_assert_eq!(v, Verdict::Drop(Refusal::Unauthenticated));
            }
            proptest::prop_assert_eq!(latch.destination(), Some(addr(NAT)));
        }
    }
}
