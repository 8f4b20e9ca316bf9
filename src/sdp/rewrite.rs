//! The four offer/answer rewrites of the B2BUA (RFC 3264), each pure:
//!
//! ```text
//!  phone offer ──analyse_phone_offer──► PhoneOffer ──(ports)──rewrite_phone_offer──► PBX offer
//!  PBX answer  ──rewrite_pbx_answer(plan)───────────────────────────────────────────► phone answer
//!  PBX offer   ──analyse_pbx_offer────► PbxOffer ───(ports)──rewrite_pbx_offer────► phone offer
//!  phone answer──rewrite_phone_answer(plan)─────────────────────────────────────────► PBX answer
//! ```
//!
//! An offer is analysed first so that every reason to refuse it (no acceptable crypto, plain
//! RTP under a mandatory policy, malformed SDP) is known before the relay allocates ports;
//! [`PhoneOffer::port_requests`] says how many streams need ports. The rewrite of an offer
//! returns a [`MediaPlan`] in [`Stage::Offered`]; the rewrite of the answer takes it and
//! returns the completed plan in [`Stage::Answered`], which the B2BUA maps onto media streams
//! and passes back as `previous` with the next re-offer.
//!
//! Both legs: the edge's address in `c=` (or `0.0.0.0` mirrored for a legacy hold), the
//! relay's port in `m=`, a fresh `o=` per leg (RFC 3264 §8 versioning), codecs, `fmtp`,
//! `ptime`, `maxptime`, `telephone-event`, direction and `b=` kept; ICE, DTLS and `a=crypto`
//! removed; rejected m-lines kept in place with port 0 (RFC 3264 §6).
//!
//! The one exception to "the same m-lines on both legs": the best-effort twin a phone offers
//! next to its SRTP line (pjsua, Grandstream) is answered to the phone with port 0 but never
//! offered to the PBX, which sees what a single-line phone would have sent. Plans are indexed
//! by the phone leg; such a phone-only m-line keeps its place toward the phone in every later
//! offer (RFC 3264 §8.1), and answers are mapped between the two legs' m-line counts.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use sdp_rs::lines::common::{Addrtype, Nettype};
use sdp_rs::lines::media::{MediaType, ProtoType};
use sdp_rs::lines::{Attribute, Connection, Media, Origin};
use sdp_rs::{MediaDescription, SessionDescription};

use crate::srtp::sdes::CryptoAttribute;

use super::attrs::{self, Profile};
use super::context::{LegOrigin, RewriteContext, SrtpMode};
use super::error::RewriteError;
use super::negotiate::{self, AnsweredCrypto};
use super::plan::{
    ContextChange, MediaKind, MediaPlan, Peer, PortRequest, RejectReason, RelayedStream, Security,
    Side, SrtpKeys, Stage, StreamPlan, StreamPorts, StreamState,
};
use super::wire;

/// A rewritten SDP body and the plan that goes with it.
#[derive(Clone, Debug)]
pub struct Rewritten {
    /// The SDP body to send on the other leg.
    pub sdp: Vec<u8>,
    /// What the relay must do.
    pub plan: MediaPlan,
}

/// What the analysis decided for one offered m-line.
#[derive(Clone, Debug)]
enum Verdict {
    Reject(RejectReason),
    /// Relay it; `crypto` is the phone's chosen line (phone offers only).
    Relay {
        peer: Peer,
        crypto: Option<CryptoAttribute>,
    },
}

#[derive(Clone, Debug)]
struct Offered {
    kind: MediaKind,
    mid: Option<String>,
    profile: Profile,
    verdict: Verdict,
    /// The `c=` address and `m=` port (phone offers; `None` when disabled or unknown), to
    /// recognise a best-effort twin.
    endpoint: Option<(IpAddr, u16)>,
    /// Where the m-line is in the offer's SDP: `Some(index)`, or `None` for a phone-only
    /// m-line the PBX leg does not have (re-inserted, rejected, into a PBX offer; it then
    /// carries how it looks toward the phone).
    source: Result<usize, PhoneOnly>,
    /// False for a phone-only m-line (the best-effort twin not taken).
    pbx_leg: bool,
}

/// A phone-only m-line of the previous plan, as it must reappear toward the phone.
#[derive(Clone, Debug)]
struct PhoneOnly {
    proto: String,
    formats: String,
}

/// A phone's offer, parsed and negotiated, waiting for relay ports.
#[derive(Clone, Debug)]
pub struct PhoneOffer {
    sdp: SessionDescription,
    streams: Vec<Offered>,
    requests: Vec<PortRequest>,
}

/// A PBX's offer, parsed, waiting for relay ports.
#[derive(Clone, Debug)]
pub struct PbxOffer {
    sdp: SessionDescription,
    /// In phone-leg order: the PBX's m-lines with the phone-only ones of the previous plan
    /// re-inserted.
    streams: Vec<Offered>,
    requests: Vec<PortRequest>,
}

impl PhoneOffer {
    /// One request per stream to relay, in m-line order: pass exactly that many
    /// [`StreamPorts`] (same order) to [`rewrite_phone_offer`].
    pub fn port_requests(&self) -> &[PortRequest] {
        &self.requests
    }
}

impl PbxOffer {
    /// One request per stream to relay, in m-line order: pass exactly that many
    /// [`StreamPorts`] (same order) to [`rewrite_pbx_offer`].
    pub fn port_requests(&self) -> &[PortRequest] {
        &self.requests
    }
}

/// The previous plan's stream at `mline` if it is the same kind of media and relayed.
fn previous_stream<'a>(
    previous: Option<&'a MediaPlan>,
    mline: usize,
    kind: &MediaKind,
) -> Option<&'a RelayedStream> {
    previous?
        .streams
        .get(mline)
        .filter(|s| s.kind == *kind)?
        .relayed()
}

fn previous_keys<'a>(
    previous: Option<&'a MediaPlan>,
    mline: usize,
    kind: &MediaKind,
) -> Option<&'a SrtpKeys> {
    match &previous_stream(previous, mline, kind)?.security {
        Security::Srtp(keys) => Some(keys),
        Security::Plain => None,
    }
}

fn port_requests(
    streams: &[Offered],
    previous: Option<&MediaPlan>,
    offered_by: Side,
) -> Vec<PortRequest> {
    streams
        .iter()
        .enumerate()
        .filter_map(|(mline, s)| match &s.verdict {
            Verdict::Relay { peer, .. } => Some(PortRequest {
                mline,
                kind: s.kind.clone(),
                phone_rtcp_mux: offered_by == Side::Phone && peer.rtcp_mux,
                reuse: previous_stream(previous, mline, &s.kind).map(|r| r.ports),
            }),
            Verdict::Reject(_) => None,
        })
        .collect()
}

/// An offer in which nothing can be relayed fails, unless the offerer itself disabled every
/// stream (an offer with all ports 0 is valid, RFC 3264 §8.2).
fn check_something_relayed(
    streams: &[Offered],
    refusal: Option<RewriteError>,
) -> Result<(), RewriteError> {
    let relayed = streams
        .iter()
        .any(|s| matches!(s.verdict, Verdict::Relay { .. }));
    let refused = streams.iter().any(|s| {
        !matches!(
            s.verdict,
            Verdict::Relay { .. } | Verdict::Reject(RejectReason::DisabledByOfferer)
        )
    });
    if !relayed && refused {
        return Err(refusal.unwrap_or(RewriteError::NoAcceptableMedia));
    }
    Ok(())
}

/// Parses and negotiates a phone's offer (RFC 4568 §7.1.2 on the answerer side): per m-line,
/// the first `a=crypto` line whose suite the policy allows and whose parameters the engine
/// honours; `RTP/SAVP` without one, or (mandatory policy) a stream without usable crypto, is
/// rejected with port 0. Best-effort SRTP offered as two m-lines (see `are_twins`) keeps the
/// SRTP one; the other becomes a phone-only m-line. Under `optional`, a stream whose crypto
/// lines are all unusable for a reason other than their suite fails the offer (488) instead of
/// falling back to plain RTP. Fails (488) when nothing is left to relay.
pub fn analyse_phone_offer(
    body: &[u8],
    ctx: &RewriteContext<'_>,
) -> Result<PhoneOffer, RewriteError> {
    let sdp = wire::parse(body)?;
    let mut streams = Vec::with_capacity(sdp.media_descriptions.len());
    let mut refusal = None;
    for (mline, media) in sdp.media_descriptions.iter().enumerate() {
        let profile = Profile::of(&media.media.proto);
        let verdict = if media.media.port == 0 {
            Verdict::Reject(RejectReason::DisabledByOfferer)
        } else if profile == Profile::Unsupported {
            Verdict::Reject(RejectReason::UnsupportedTransport)
        } else {
            let offered =
                negotiate::choose_offered(attrs::values(&media.attributes, "crypto"), ctx.policy);
            if let (None, Some(reason), SrtpMode::Optional) =
                (&offered.chosen, offered.malformed, ctx.policy.mode)
            {
                // The phone meant SRTP (it sent keys) but no line is usable, and not merely
                // because of its suite: relaying plain RTP would silently downgrade a call the
                // phone believes protected (RFC 4568 §7.1.1 falls back only when the answerer
                // does not understand the offer). Refuse the offer instead.
                return Err(RewriteError::NoAcceptableCrypto {
                    mline,
                    reason: Some(reason),
                });
            }
            match (offered.chosen, profile.is_secure(), ctx.policy.mode) {
                (Some(crypto), _, _) => {
                    let mux = attrs::has_flag(&media.attributes, "rtcp-mux");
                    let peer = attrs::peer(&sdp, media, mline, mux)?;
                    Verdict::Relay {
                        peer,
                        crypto: Some(crypto),
                    }
                }
                (None, true, _) => {
                    refusal.get_or_insert(RewriteError::NoAcceptableCrypto {
                        mline,
                        reason: offered.refusal,
                    });
                    Verdict::Reject(RejectReason::NoAcceptableCrypto)
                }
                (None, false, SrtpMode::Optional) => {
                    let mux = attrs::has_flag(&media.attributes, "rtcp-mux");
                    let peer = attrs::peer(&sdp, media, mline, mux)?;
                    Verdict::Relay { peer, crypto: None }
                }
                (None, false, SrtpMode::Mandatory) => {
                    refusal.get_or_insert(if offered.lines > 0 {
                        RewriteError::NoAcceptableCrypto {
                            mline,
                            reason: offered.refusal,
                        }
                    } else {
                        RewriteError::PlainRtpRefused { mline }
                    });
                    Verdict::Reject(RejectReason::PlainRefused)
                }
            }
        };
        let endpoint = match media.media.port {
            0 => None,
            port => attrs::connection_address(&sdp, media, mline)
                .ok()
                .map(|a| (a, port)),
        };
        streams.push(Offered {
            kind: attrs::kind(media),
            mid: attrs::mid(media),
            profile,
            verdict,
            endpoint,
            source: Ok(mline),
            pbx_leg: true,
        });
    }
    settle_alternatives(&mut streams);
    keep_phone_only(&mut streams, ctx.previous);
    check_something_relayed(&streams, refusal)?;
    let requests = port_requests(&streams, ctx.previous, Side::Phone);
    Ok(PhoneOffer {
        sdp,
        streams,
        requests,
    })
}

/// True when two offered m-lines are one stream offered twice for best-effort SRTP: the same
/// media type and either one `a=mid` (RFC 5888), or the same address and port with one
/// `RTP/SAVP(F)` and one `RTP/AVP(F)` line (pjsua's `srtp_optional_dup_offer`, Grandstream's
/// "enabled but not forced": two m-lines cannot share a port otherwise).
fn are_twins(a: &Offered, b: &Offered) -> bool {
    if a.kind != b.kind {
        return false;
    }
    let same_mid = a.mid.is_some() && a.mid == b.mid;
    let rtp = |o: &Offered| o.profile != Profile::Unsupported;
    let same_port_savp_avp = a.endpoint.is_some()
        && a.endpoint == b.endpoint
        && rtp(a)
        && rtp(b)
        && a.profile.is_secure() != b.profile.is_secure();
    same_mid || same_port_savp_avp
}

/// Best-effort SRTP as two m-lines (see [`are_twins`]): relay one of them — the SRTP one
/// when both could be relayed — and reject the other as the alternative not taken, which then
/// exists on the phone leg only. Twins that are both refused stay as they are (the offer
/// fails unless another stream is relayed).
fn settle_alternatives(streams: &mut [Offered]) {
    for i in 0..streams.len() {
        for j in 0..i {
            let (head, tail) = streams.split_at_mut(i);
            let (Some(earlier), Some(later)) = (head.get_mut(j), tail.first_mut()) else {
                continue;
            };
            if !are_twins(earlier, later) {
                continue;
            }
            let srtp = |o: &Offered| {
                matches!(
                    &o.verdict,
                    Verdict::Relay {
                        crypto: Some(_),
                        ..
                    }
                )
            };
            let relayed = |o: &Offered| matches!(&o.verdict, Verdict::Relay { .. });
            let not_taken = match (relayed(earlier), relayed(later)) {
                (false, false) => continue,
                (true, false) => later,
                (false, true) => earlier,
                (true, true) if srtp(later) && !srtp(earlier) => earlier,
                (true, true) => later,
            };
            not_taken.verdict = Verdict::Reject(RejectReason::AlternativeNotTaken);
        }
    }
    for s in streams.iter_mut() {
        if matches!(
            s.verdict,
            Verdict::Reject(RejectReason::AlternativeNotTaken)
        ) {
            s.pbx_leg = false;
        }
    }
}

/// An m-line that was phone-only in the previous plan stays phone-only and rejected: the PBX
/// leg never had it, and inserting it there now would shift the PBX's m-lines (RFC 3264 §8.1:
/// m-lines keep their positions in later offers).
fn keep_phone_only(streams: &mut [Offered], previous: Option<&MediaPlan>) {
    let Some(previous) = previous else {
        return;
    };
    for (s, prev) in streams.iter_mut().zip(&previous.streams) {
        if !prev.pbx_leg {
            s.pbx_leg = false;
            if matches!(s.verdict, Verdict::Relay { .. }) {
                s.verdict = Verdict::Reject(RejectReason::AlternativeNotTaken);
            }
        }
    }
}

/// Parses a PBX's offer: `RTP/AVP(F)` streams are relayed; SRTP or non-RTP streams from the
/// PBX are rejected with port 0 (the PBX leg is plain RTP). Fails (488) when nothing is left.
pub fn analyse_pbx_offer(body: &[u8], ctx: &RewriteContext<'_>) -> Result<PbxOffer, RewriteError> {
    let sdp = wire::parse(body)?;
    let mut streams = Vec::with_capacity(sdp.media_descriptions.len());
    let mut phone_only = phone_only_slots(ctx.previous);
    for (index, media) in sdp.media_descriptions.iter().enumerate() {
        // The phone leg's m-lines that the PBX leg lacks go back in at their places.
        while let Some((_, slot)) = phone_only.next_if(|(at, _)| *at == streams.len()) {
            streams.push(slot);
        }
        let mline = streams.len();
        let profile = Profile::of(&media.media.proto);
        let verdict = if media.media.port == 0 {
            Verdict::Reject(RejectReason::DisabledByOfferer)
        } else if matches!(profile, Profile::Avp | Profile::Avpf) {
            // RFC 5761 §5.1.1: the PBX offered rtcp-mux; the edge accepts it on this leg.
            let mux = attrs::has_flag(&media.attributes, "rtcp-mux");
            Verdict::Relay {
                peer: attrs::peer(&sdp, media, mline, mux)?,
                crypto: None,
            }
        } else {
            Verdict::Reject(RejectReason::UnsupportedTransport)
        };
        streams.push(Offered {
            kind: attrs::kind(media),
            mid: attrs::mid(media),
            profile,
            verdict,
            endpoint: None,
            source: Ok(index),
            pbx_leg: true,
        });
    }
    streams.extend(phone_only.map(|(_, o)| o));
    check_something_relayed(&streams, None)?;
    let requests = port_requests(&streams, ctx.previous, Side::Pbx);
    Ok(PbxOffer {
        sdp,
        streams,
        requests,
    })
}

/// The previous plan's phone-only m-lines: their phone-leg index and their placeholder entry
/// (rejected, not on the PBX leg, with how they look toward the phone).
fn phone_only_slots(
    previous: Option<&MediaPlan>,
) -> core::iter::Peekable<impl Iterator<Item = (usize, Offered)> + '_> {
    previous
        .into_iter()
        .flat_map(|p| p.streams.iter())
        .filter(|s| !s.pbx_leg)
        .map(|s| {
            let line = PhoneOnly {
                proto: s.phone_proto.clone(),
                formats: s.phone_formats.clone(),
            };
            let placeholder = Offered {
                kind: s.kind.clone(),
                mid: s.mid.clone(),
                profile: Profile::Unsupported,
                verdict: Verdict::Reject(RejectReason::AlternativeNotTaken),
                endpoint: None,
                source: Err(line),
                pbx_leg: false,
            };
            (s.mline, placeholder)
        })
        .peekable()
}

fn check_ports(requests: &[PortRequest], ports: &[StreamPorts]) -> Result<(), RewriteError> {
    if requests.len() != ports.len() {
        return Err(RewriteError::PortsMissing {
            needed: requests.len(),
            given: ports.len(),
        });
    }
    Ok(())
}

/// Rewrites a phone's offer for the PBX: `RTP/SAVP(F)` → `RTP/AVP(F)`, `a=crypto` consumed
/// (the chosen line goes into the plan), `c=`/`m=` at the relay's PBX-side sockets, rtcp-mux
/// not offered to the PBX (the phone's is accepted and demultiplexed by the relay).
pub fn rewrite_phone_offer(
    offer: PhoneOffer,
    ports: &[StreamPorts],
    ctx: &mut RewriteContext<'_>,
) -> Result<Rewritten, RewriteError> {
    check_ports(&offer.requests, ports)?;
    let given = ports.len();
    let mut ports = ports.iter();
    let mut plan_streams = Vec::with_capacity(offer.streams.len());
    let mut out_media = Vec::with_capacity(offer.streams.len());
    for (mline, (offered, media)) in offer
        .streams
        .into_iter()
        .zip(&offer.sdp.media_descriptions)
        .enumerate()
    {
        let pbx_proto = leg_proto(offered.profile, false, &media.media.proto);
        let mut stream = StreamPlan {
            mline,
            kind: offered.kind,
            mid: offered.mid,
            state: StreamState::Rejected(RejectReason::DisabledByOfferer),
            phone_proto: media.media.proto.to_string(),
            phone_formats: media.media.fmt.clone(),
            pbx_proto: pbx_proto.to_string(),
            pbx_formats: media.media.fmt.clone(),
            pbx_leg: offered.pbx_leg,
        };
        match offered.verdict {
            Verdict::Reject(reason) => {
                stream.state = StreamState::Rejected(reason);
                // A phone-only twin is not offered to the PBX at all, not even with port 0:
                // the PBX leg is what a phone with one audio line would have sent.
                if stream.pbx_leg {
                    out_media.push((
                        rejected_media(&media.media.media, pbx_proto, &media.media.fmt),
                        None,
                    ));
                }
            }
            Verdict::Relay { peer, crypto } => {
                // `check_ports` matched the counts, so this does not happen.
                let Some(&p) = ports.next() else {
                    return Err(RewriteError::PortsMissing {
                        needed: given + 1,
                        given,
                    });
                };
                let security = match crypto {
                    Some(phone) => {
                        let prev = previous_keys(ctx.previous, mline, &stream.kind);
                        // The edge's answer key is drawn now, once per offer, so that every
                        // answer to this offer (183 then 200) carries the same key. It is
                        // kept from the previous plan when the stream did not move.
                        let prev_edge = previous_stream(ctx.previous, mline, &stream.kind)
                            .filter(|r| r.ports.phone == p.phone)
                            .and(prev)
                            .and_then(|k| k.edge.as_ref());
                        let (edge, edge_context) =
                            negotiate::edge_answer_line(&phone, prev_edge, ctx.keys);
                        Security::Srtp(Box::new(SrtpKeys {
                            phone_context: negotiate::context_change(
                                &phone,
                                prev.and_then(|k| k.phone.as_ref()),
                            ),
                            phone: Some(phone),
                            edge: Some(edge),
                            edge_offered: Vec::new(),
                            edge_context,
                        }))
                    }
                    None => Security::Plain,
                };
                let rtcp = attrs::has_rtcp_attribute(media).then_some(p.pbx.rtcp);
                let attributes = forwarded_attributes(&media.attributes, rtcp);
                let out = relayed_media(
                    media,
                    p.pbx.rtp,
                    pbx_proto,
                    media.media.fmt.clone(),
                    attributes,
                );
                out_media.push((out, Some(leg_address(ctx.edge.pbx_local, &peer))));
                stream.state = StreamState::Relayed(Box::new(RelayedStream {
                    ports: p,
                    phone: Some(peer),
                    pbx: None,
                    security,
                }));
            }
        }
        plan_streams.push(stream);
    }
    Ok(offered(
        assemble(&offer.sdp, ctx.edge.pbx_local, out_media, ctx.origin),
        Side::Phone,
        plan_streams,
    ))
}

/// Rewrites the PBX's answer to a phone offer for the phone: the phone's profile back
/// (`RTP/SAVP(F)`, or `RTP/AVP` with crypto for best effort), exactly one `a=crypto` line per
/// SRTP stream echoing the chosen tag with the edge's key (kept from the previous plan when
/// the stream is unchanged, else fresh), `a=rtcp-mux` if the phone offered it.
pub fn rewrite_pbx_answer(
    body: &[u8],
    offer_plan: &MediaPlan,
    ctx: &mut RewriteContext<'_>,
) -> Result<Rewritten, RewriteError> {
    let (sdp, mut plan) = begin_answer(body, offer_plan, Side::Phone)?;
    let mut out_media = Vec::with_capacity(plan.streams.len());
    // The PBX answered the PBX leg's m-lines; the phone-only ones are answered here, rejected.
    let mut answered = sdp.media_descriptions.iter();
    for stream in plan.streams.iter_mut() {
        let mline = stream.mline;
        let phone_proto = ProtoType::from(stream.phone_proto.as_str());
        if !stream.pbx_leg {
            let media_type = attrs::media_type(&stream.kind);
            out_media.push((
                rejected_media(&media_type, phone_proto, &stream.phone_formats),
                None,
            ));
            continue;
        }
        // `begin_answer` checked the count, so this does not happen.
        let media = answered.next().ok_or(RewriteError::PlanMismatch)?;
        let StreamState::Relayed(relay) = &mut stream.state else {
            out_media.push((
                rejected_media(&media.media.media, phone_proto, &stream.phone_formats),
                None,
            ));
            continue;
        };
        if media.media.port == 0 {
            stream.state = StreamState::Rejected(RejectReason::RejectedByAnswerer);
            out_media.push((
                rejected_media(&media.media.media, phone_proto, &stream.phone_formats),
                None,
            ));
            continue;
        }
        // The edge never offers rtcp-mux to the PBX, so the PBX cannot have accepted it
        // (RFC 5761 §5.1.1).
        let pbx = attrs::peer(&sdp, media, mline, false)?;
        relay.pbx = Some(pbx.clone());
        let phone_mux = relay.phone.as_ref().is_some_and(|p| p.rtcp_mux);
        let mut extra = Vec::new();
        if phone_mux {
            extra.push(Attribute::Other("rtcp-mux".to_owned(), None));
        }
        if let Security::Srtp(keys) = &relay.security {
            // Drawn when the offer was rewritten (see `rewrite_phone_offer`).
            let Some(edge_line) = &keys.edge else {
                return Err(RewriteError::PlanMismatch);
            };
            extra.push(crypto_attribute(edge_line));
        }
        let p = relay.ports.phone;
        let rtcp =
            attrs::has_rtcp_attribute(media).then_some(if phone_mux { p.rtp } else { p.rtcp });
        let mut attributes = forwarded_attributes(&media.attributes, rtcp);
        attributes.extend(extra);
        let out = relayed_media(
            media,
            p.rtp,
            phone_proto,
            media.media.fmt.clone(),
            attributes,
        );
        out_media.push((out, Some(leg_address(ctx.edge.phone_advertised, &pbx))));
    }
    let text = assemble(&sdp, ctx.edge.phone_advertised, out_media, ctx.origin);
    Ok(Rewritten {
        sdp: text.into_bytes(),
        plan,
    })
}

/// Rewrites a PBX's offer for the phone: `RTP/AVP(F)` → `RTP/SAVP(F)` (mandatory) or
/// `RTP/AVP(F)` with crypto (best effort), one `a=crypto` line per suite the policy allows,
/// strongest first, `AES_CM_128_HMAC_SHA1_80` always among them; the edge's keys are kept
/// for an unchanged stream of a re-offer. rtcp-mux is offered to the phone only if the PBX
/// offered it.
pub fn rewrite_pbx_offer(
    offer: PbxOffer,
    ports: &[StreamPorts],
    ctx: &mut RewriteContext<'_>,
) -> Result<Rewritten, RewriteError> {
    check_ports(&offer.requests, ports)?;
    let given = ports.len();
    let secure = ctx.policy.mode == SrtpMode::Mandatory;
    let suites = ctx.policy.offer_suites();
    let mut ports = ports.iter();
    let mut plan_streams = Vec::with_capacity(offer.streams.len());
    let mut out_media = Vec::with_capacity(offer.streams.len());
    for (mline, offered) in offer.streams.into_iter().enumerate() {
        let media = match offered.source {
            Ok(index) => offer
                .sdp
                .media_descriptions
                .get(index)
                .ok_or(RewriteError::PlanMismatch)?,
            Err(line) => {
                // A phone-only m-line of the dialog: it stays in place toward the phone,
                // rejected (RFC 3264 §8.1), and the PBX never sees it.
                let proto = ProtoType::from(line.proto.as_str());
                let media_type = attrs::media_type(&offered.kind);
                out_media.push((rejected_media(&media_type, proto, &line.formats), None));
                plan_streams.push(StreamPlan {
                    mline,
                    kind: offered.kind,
                    mid: offered.mid,
                    state: StreamState::Rejected(RejectReason::AlternativeNotTaken),
                    phone_proto: line.proto,
                    phone_formats: line.formats,
                    pbx_proto: String::new(),
                    pbx_formats: String::new(),
                    pbx_leg: false,
                });
                continue;
            }
        };
        let phone_proto = leg_proto(offered.profile, secure, &media.media.proto);
        let mut stream = StreamPlan {
            mline,
            kind: offered.kind,
            mid: offered.mid,
            state: StreamState::Rejected(RejectReason::DisabledByOfferer),
            phone_proto: phone_proto.to_string(),
            phone_formats: media.media.fmt.clone(),
            pbx_proto: media.media.proto.to_string(),
            pbx_formats: media.media.fmt.clone(),
            pbx_leg: true,
        };
        match offered.verdict {
            Verdict::Reject(reason) => {
                stream.state = StreamState::Rejected(reason);
                out_media.push((
                    rejected_media(&media.media.media, phone_proto, &media.media.fmt),
                    None,
                ));
            }
            Verdict::Relay { peer, .. } => {
                // `check_ports` matched the counts, so this does not happen.
                let Some(&p) = ports.next() else {
                    return Err(RewriteError::PortsMissing {
                        needed: given + 1,
                        given,
                    });
                };
                let mut reuse: Vec<&CryptoAttribute> = Vec::new();
                let mut running = None;
                if let Some(prev) = previous_stream(ctx.previous, mline, &stream.kind)
                    .filter(|r| r.ports.phone == p.phone)
                {
                    if let Security::Srtp(k) = &prev.security {
                        reuse.extend(k.edge.iter());
                        reuse.extend(k.edge_offered.iter());
                        running = k.edge.as_ref().map(|line| line.suite);
                    }
                }
                let mut lines = negotiate::edge_offer_lines(&suites, &reuse, ctx.keys);
                // The running suite's line first (its key comes from `reuse`; every line keeps
                // the tag of the strongest-first numbering, so only the order changes, RFC 4568
                // §7.1.1: the order is the offerer's preference). Phones take the first line they
                // support, so a re-offer of an unchanged stream (a session refresh, RFC 4028
                // §7.4; RFC 3264 §8: no change, no new parameters) keeps the session as it is.
                // Leading with another suite re-keyed the phone on every refresh of a call the
                // phone had offered; baresip 1.0.0 then answers the new suite but keeps
                // encrypting with the old one, and the call's audio dies both ways (INTEROP.md,
                // Asterisk session timers).
                if let Some(at) =
                    running.and_then(|suite| lines.iter().position(|l| l.suite == suite))
                {
                    let line = lines.remove(at);
                    lines.insert(0, line);
                }
                let rtcp = attrs::has_rtcp_attribute(media).then_some(p.phone.rtcp);
                let mut attributes = forwarded_attributes(&media.attributes, rtcp);
                if peer.rtcp_mux {
                    attributes.push(Attribute::Other("rtcp-mux".to_owned(), None));
                }
                attributes.extend(lines.iter().map(crypto_attribute));
                let out = relayed_media(
                    media,
                    p.phone.rtp,
                    phone_proto,
                    media.media.fmt.clone(),
                    attributes,
                );
                out_media.push((out, Some(leg_address(ctx.edge.phone_advertised, &peer))));
                stream.state = StreamState::Relayed(Box::new(RelayedStream {
                    ports: p,
                    phone: None,
                    pbx: Some(peer),
                    security: Security::Srtp(Box::new(SrtpKeys {
                        phone: None,
                        edge: None,
                        edge_offered: lines,
                        phone_context: ContextChange::New,
                        edge_context: ContextChange::New,
                    })),
                }));
            }
        }
        plan_streams.push(stream);
    }
    Ok(offered(
        assemble(&offer.sdp, ctx.edge.phone_advertised, out_media, ctx.origin),
        Side::Pbx,
        plan_streams,
    ))
}

/// Rewrites the phone's answer to a PBX offer for the PBX: the answer's crypto line whose
/// tag and suite match an offered line is taken (a second line is ignored); an SRTP stream
/// answered without crypto fails with 488 and is never relayed as plain RTP; `a=rtcp-mux` is
/// answered to the PBX if it offered it.
pub fn rewrite_phone_answer(
    body: &[u8],
    offer_plan: &MediaPlan,
    ctx: &mut RewriteContext<'_>,
) -> Result<Rewritten, RewriteError> {
    let (sdp, mut plan) = begin_answer(body, offer_plan, Side::Pbx)?;
    let mut out_media = Vec::with_capacity(plan.streams.len());
    for (stream, media) in plan.streams.iter_mut().zip(&sdp.media_descriptions) {
        let mline = stream.mline;
        if !stream.pbx_leg {
            // Offered to the phone rejected; whatever the phone answers, the PBX leg has no
            // such m-line to answer.
            continue;
        }
        let pbx_proto = ProtoType::from(stream.pbx_proto.as_str());
        let StreamState::Relayed(relay) = &mut stream.state else {
            out_media.push((
                rejected_media(&media.media.media, pbx_proto, &stream.pbx_formats),
                None,
            ));
            continue;
        };
        if media.media.port == 0 {
            stream.state = StreamState::Rejected(RejectReason::RejectedByAnswerer);
            out_media.push((
                rejected_media(&media.media.media, pbx_proto, &stream.pbx_formats),
                None,
            ));
            continue;
        }
        let pbx_mux = relay.pbx.as_ref().is_some_and(|p| p.rtcp_mux);
        // rtcp-mux was offered to the phone only when the PBX offered it.
        let phone_mux = pbx_mux && attrs::has_flag(&media.attributes, "rtcp-mux");
        let phone = attrs::peer(&sdp, media, mline, phone_mux)?;
        relay.phone = Some(phone.clone());
        if let Security::Srtp(keys) = &relay.security {
            let answered_secure = Profile::of(&media.media.proto).is_secure();
            let prev = previous_keys(ctx.previous, mline, &stream.kind);
            match negotiate::choose_answered(
                attrs::values(&media.attributes, "crypto"),
                &keys.edge_offered,
            ) {
                AnsweredCrypto::Matched { answer, offered } => {
                    relay.security = Security::Srtp(Box::new(SrtpKeys {
                        phone_context: negotiate::context_change(
                            &answer,
                            prev.and_then(|k| k.phone.as_ref()),
                        ),
                        edge_context: negotiate::context_change(
                            &offered,
                            prev.and_then(|k| k.edge.as_ref()),
                        ),
                        phone: Some(answer),
                        edge: Some(offered),
                        edge_offered: keys.edge_offered.clone(),
                    }));
                }
                AnsweredCrypto::None
                    if ctx.policy.mode == SrtpMode::Optional && !answered_secure =>
                {
                    // Best effort (RFC 4568 §7.1.1): the phone declined SRTP.
                    relay.security = Security::Plain;
                }
                AnsweredCrypto::None => return Err(RewriteError::AnswerWithoutCrypto { mline }),
                AnsweredCrypto::NoMatch => {
                    return Err(RewriteError::AnswerCryptoMismatch { mline })
                }
            }
        }
        let p = relay.ports.pbx;
        let rtcp = attrs::has_rtcp_attribute(media).then_some(if pbx_mux { p.rtp } else { p.rtcp });
        let mut attributes = forwarded_attributes(&media.attributes, rtcp);
        if pbx_mux {
            attributes.push(Attribute::Other("rtcp-mux".to_owned(), None));
        }
        let out = relayed_media(media, p.rtp, pbx_proto, media.media.fmt.clone(), attributes);
        out_media.push((out, Some(leg_address(ctx.edge.pbx_local, &phone))));
    }
    let text = assemble(&sdp, ctx.edge.pbx_local, out_media, ctx.origin);
    Ok(Rewritten {
        sdp: text.into_bytes(),
        plan,
    })
}

/// The start of every answer rewrite: the plan must be an open offer by `offerer`, the answer
/// must parse and answer every offered m-line (RFC 3264 §6); returns it with the plan to fill.
fn begin_answer(
    body: &[u8],
    offer_plan: &MediaPlan,
    offerer: Side,
) -> Result<(SessionDescription, MediaPlan), RewriteError> {
    if offer_plan.offered_by != offerer || offer_plan.stage != Stage::Offered {
        return Err(RewriteError::PlanMismatch);
    }
    let sdp = wire::parse(body)?;
    check_media_count(offer_plan, offerer, &sdp)?;
    let mut plan = offer_plan.clone();
    plan.stage = Stage::Answered;
    Ok((sdp, plan))
}

/// The end of every offer rewrite: the assembled SDP and the plan of an open offer.
fn offered(sdp: String, offerer: Side, streams: Vec<StreamPlan>) -> Rewritten {
    Rewritten {
        sdp: sdp.into_bytes(),
        plan: MediaPlan {
            offered_by: offerer,
            stage: Stage::Offered,
            streams,
        },
    }
}

/// RFC 3264 §6: an answer has exactly the m-lines of the offer it answers, on its own leg —
/// the phone leg has every m-line of the plan, the PBX leg all but the phone-only ones.
fn check_media_count(
    plan: &MediaPlan,
    offerer: Side,
    answer: &SessionDescription,
) -> Result<(), RewriteError> {
    let offered = match offerer {
        Side::Pbx => plan.streams.len(),
        Side::Phone => plan.streams.iter().filter(|s| s.pbx_leg).count(),
    };
    if offered != answer.media_descriptions.len() {
        return Err(RewriteError::MediaCountMismatch {
            offered,
            answered: answer.media_descriptions.len(),
        });
    }
    Ok(())
}

/// The proto written on a leg for a supported RTP profile; anything else is kept as is.
fn leg_proto(profile: Profile, secure: bool, original: &ProtoType) -> ProtoType {
    if profile == Profile::Unsupported {
        original.clone()
    } else {
        attrs::proto(secure, profile.is_feedback())
    }
}

/// The address written on a leg for a relayed stream: the edge's, or the null address when
/// the other side put the stream on hold RFC 2543 style (RFC 3264 §8.4).
fn leg_address(edge: IpAddr, other_side: &Peer) -> IpAddr {
    match other_side.address {
        IpAddr::V4(a) if a.is_unspecified() => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        IpAddr::V6(a) if a.is_unspecified() => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        _ => edge,
    }
}

/// Attributes forwarded from one leg to the other; `a=rtcp` is replaced in place by the
/// relay's port when `rtcp` is given (RFC 3605), dropped otherwise.
fn forwarded_attributes(input: &[Attribute], rtcp: Option<u16>) -> Vec<Attribute> {
    let mut out = Vec::with_capacity(input.len() + 4);
    let mut rtcp = rtcp;
    for attr in input {
        if attrs::name(attr).eq_ignore_ascii_case("rtcp") {
            if let Some(port) = rtcp.take() {
                out.push(Attribute::Other("rtcp".to_owned(), Some(port.to_string())));
            }
        } else if attrs::is_forwarded(attr) {
            out.push(attr.clone());
        }
    }
    out
}

fn crypto_attribute(line: &CryptoAttribute) -> Attribute {
    Attribute::Other("crypto".to_owned(), Some(line.to_sdp_value()))
}

fn rejected_media(media_type: &MediaType, proto: ProtoType, formats: &str) -> MediaDescription {
    MediaDescription {
        media: Media {
            media: media_type.clone(),
            port: 0,
            num_of_ports: None,
            proto,
            fmt: formats.to_owned(),
        },
        info: None,
        connections: Vec::new(),
        bandwidths: Vec::new(),
        key: None,
        attributes: Vec::new(),
    }
}

fn relayed_media(
    input: &MediaDescription,
    port: u16,
    proto: ProtoType,
    formats: String,
    attributes: Vec<Attribute>,
) -> MediaDescription {
    MediaDescription {
        media: Media {
            media: input.media.media.clone(),
            port,
            num_of_ports: None,
            proto,
            fmt: formats,
        },
        info: input.info.clone(),
        connections: Vec::new(),
        bandwidths: input.bandwidths.clone(),
        key: None,
        attributes,
    }
}

fn connection(address: IpAddr) -> Connection {
    Connection {
        nettype: Nettype::In,
        addrtype: match address {
            IpAddr::V4(_) => Addrtype::Ip4,
            IpAddr::V6(_) => Addrtype::Ip6,
        },
        connection_address: address.into(),
    }
}

/// Builds the SDP for one leg: the leg's own origin (RFC 3264 §8: the version moves only when
/// the body changes), the input's `s=`, `t=`, session `b=` and forwarded session attributes,
/// one session `c=` when every relayed stream uses the same address (else per-media `c=`),
/// and the media descriptions. Session `i=`, `u=`, `e=`, `p=` are not forwarded.
fn assemble(
    input: &SessionDescription,
    leg_address: IpAddr,
    media: Vec<(MediaDescription, Option<IpAddr>)>,
    origin: &mut LegOrigin,
) -> String {
    let relayed: Vec<IpAddr> = media.iter().filter_map(|(_, a)| *a).collect();
    let session_address = match relayed.first() {
        Some(first) if relayed.iter().all(|a| a == first) => *first,
        _ => leg_address,
    };
    let media_descriptions = media
        .into_iter()
        .map(|(mut m, address)| {
            if let Some(a) = address.filter(|a| *a != session_address) {
                m.connections.push(connection(a));
            }
            m
        })
        .collect();
    let mut sdp = SessionDescription {
        version: input.version,
        origin: Origin {
            username: "-".to_owned(),
            sess_id: origin.session_id().to_string(),
            sess_version: "0".to_owned(),
            nettype: Nettype::In,
            addrtype: connection(leg_address).addrtype,
            unicast_address: leg_address,
        },
        session_name: input.session_name.clone(),
        session_info: None,
        uri: None,
        emails: Vec::new(),
        phones: Vec::new(),
        connection: Some(connection(session_address)),
        bandwidths: input.bandwidths.clone(),
        times: input.times.clone(),
        key: None,
        attributes: input
            .attributes
            .iter()
            .filter(|a| attrs::is_forwarded(a))
            .cloned()
            .collect(),
        media_descriptions,
    };
    let version = origin.stamp(wire::print(&sdp));
    sdp.origin.sess_version = version.to_string();
    wire::print(&sdp)
}
