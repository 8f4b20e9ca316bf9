//! One call's media: relay streams leased for an offer's m-lines, and the negotiated
//! [`MediaPlan`] turned into relay commands (peers, keys, hold). `sdp` and `media` never see
//! each other; this is where the plan becomes `StreamSpec`s and `StreamCommand`s.

use crate::media::quality::QualityReport;
use crate::media::{
    ClockRates, MediaControl, MediaError, PeerSpec, Side, SrtpParams, StreamCommand, StreamHandle,
    StreamSpec, TransformSpec,
};
use crate::sdp::{
    ContextChange, Direction, MediaPlan, Peer, PortPair, PortRequest, Security, StreamPorts,
};
use crate::srtp::sdes::CryptoAttribute;
use crate::srtp::ContextOptions;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};

/// What was last applied to one stream, so repeated answers (183 then 200) do not reset its
/// SRTP contexts or its learned addresses.
#[derive(Debug, Default)]
struct Applied {
    phone: Option<PeerSpec>,
    pbx: Option<PeerSpec>,
    phone_key: Option<Vec<u8>>,
    edge_key: Option<Vec<u8>>,
    plain: bool,
    held: bool,
}

/// One stream's receive quality in both directions (`/api/calls`, the call log).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct StreamQuality {
    /// The m-line index of the stream.
    pub mline: usize,
    /// RTP the phone sent, as the edge received it.
    pub phone_to_pbx: QualityReport,
    /// RTP the PBX sent, as the edge received it.
    pub pbx_to_phone: QualityReport,
}

/// A call's relay streams, by m-line index.
#[derive(Debug, Default)]
pub struct CallMedia {
    streams: HashMap<usize, (StreamHandle, Applied)>,
    /// `media.accept_unannounced_unencrypted_srtcp` (the Cisco SPA quirk) for phone → edge.
    accept_unannounced_srtcp: bool,
    /// The call's Call-ID, given to each stream for HEP capture of its RTCP.
    correlation: Option<std::sync::Arc<str>>,
}

fn pair(p: &crate::media::LocalPorts) -> PortPair {
    PortPair {
        rtp: p.rtp.port(),
        rtcp: p.rtcp.port(),
    }
}

fn peer_spec(p: &Peer) -> PeerSpec {
    let clock_rates = ClockRates::new(p.clock_rates.iter().copied());
    if p.address.is_unspecified() {
        // RFC 3264 §8.4 hold with c=0.0.0.0: send nothing there.
        return PeerSpec {
            rtp: None,
            rtcp: None,
            rtcp_mux: p.rtcp_mux,
            clock_rates,
        };
    }
    PeerSpec {
        rtp: Some(SocketAddr::new(p.address, p.rtp_port)),
        rtcp: Some(SocketAddr::new(p.rtcp_address, p.rtcp_port)),
        rtcp_mux: p.rtcp_mux,
        clock_rates,
    }
}

fn srtp(line: &CryptoAttribute, quirk: bool) -> Option<(TransformSpec, Vec<u8>)> {
    let key = line.keys.first()?;
    let mut options = ContextOptions::from_sdes(key, &line.session_params);
    options.danger_accept_unannounced_unencrypted_srtcp = quirk;
    let mut fingerprint = key.master_key.key().to_vec();
    fingerprint.extend_from_slice(key.master_key.salt());
    Some((
        TransformSpec::Srtp(SrtpParams {
            master_key: key.master_key.clone(),
            options,
        }),
        fingerprint,
    ))
}

fn on_hold(p: Option<&Peer>) -> bool {
    p.is_some_and(|p| {
        p.address.is_unspecified()
            || matches!(p.direction, Direction::SendOnly | Direction::Inactive)
    })
}

impl CallMedia {
    pub fn new(accept_unannounced_srtcp: bool) -> Self {
        Self {
            streams: HashMap::new(),
            accept_unannounced_srtcp,
            correlation: None,
        }
    }

    /// The streams leased from now on are of the call `call_id` (HEP capture files their
    /// RTCP under it).
    pub fn with_correlation(mut self, call_id: Option<&str>) -> Self {
        self.correlation = call_id.map(std::sync::Arc::from);
        self
    }

    /// Ports for an offer: existing streams are reused for their m-lines, new ones leased.
    /// Fails with [`MediaError::PortsExhausted`] (→ 503) when the pool is empty.
    pub async fn ports_for(
        &mut self,
        media: &MediaControl,
        requests: &[PortRequest],
        pbx_host: IpAddr,
    ) -> Result<Vec<StreamPorts>, MediaError> {
        let mut out = Vec::with_capacity(requests.len());
        for r in requests {
            if let Some((h, _)) = self.streams.get(&r.mline) {
                out.push(StreamPorts {
                    phone: pair(&h.phone_local()),
                    pbx: pair(&h.pbx_local()),
                });
                continue;
            }
            let handle = media
                .start_correlated(
                    StreamSpec {
                        phone: PeerSpec::default(),
                        pbx: PeerSpec::default(),
                        pbx_host,
                        phone_to_pbx: TransformSpec::Closed,
                        pbx_to_phone: TransformSpec::Closed,
                    },
                    self.correlation.clone(),
                )
                .await?;
            out.push(StreamPorts {
                phone: pair(&handle.phone_local()),
                pbx: pair(&handle.pbx_local()),
            });
            self.streams.insert(r.mline, (handle, Applied::default()));
        }
        Ok(out)
    }

    /// Applies a plan (offered or answered) to the streams; streams the plan no longer relays
    /// are stopped.
    pub async fn apply(&mut self, plan: &MediaPlan) -> Result<(), MediaError> {
        let mut keep = Vec::new();
        for stream in &plan.streams {
            let Some(relayed) = stream.relayed() else {
                continue;
            };
            keep.push(stream.mline);
            let Some((handle, applied)) = self.streams.get_mut(&stream.mline) else {
                continue;
            };
            let phone = relayed.phone.as_ref().map(peer_spec);
            let pbx = relayed.pbx.as_ref().map(peer_spec);
            let retarget_phone = phone.filter(|p| applied.phone.as_ref() != Some(p));
            let retarget_pbx = pbx.filter(|p| applied.pbx.as_ref() != Some(p));
            if retarget_phone.is_some() || retarget_pbx.is_some() {
                handle
                    .apply(StreamCommand::Retarget {
                        phone: retarget_phone,
                        pbx: retarget_pbx,
                    })
                    .await?;
                if retarget_phone.is_some() {
                    applied.phone = retarget_phone;
                }
                if retarget_pbx.is_some() {
                    applied.pbx = retarget_pbx;
                }
            }
            let (mut p2b, mut b2p) = (None, None);
            match &relayed.security {
                Security::Plain => {
                    if !applied.plain {
                        p2b = Some(TransformSpec::Plain);
                        b2p = Some(TransformSpec::Plain);
                        applied.plain = true;
                    }
                }
                Security::Srtp(keys) => {
                    if let Some((spec, fp)) = keys
                        .phone
                        .as_ref()
                        .and_then(|l| srtp(l, self.accept_unannounced_srtcp))
                    {
                        let renew = keys.phone_context == ContextChange::New;
                        if applied.phone_key.as_ref() != Some(&fp)
                            || (renew && applied.phone_key.is_none())
                        {
                            p2b = Some(spec);
                            applied.phone_key = Some(fp);
                        }
                    }
                    if let Some((spec, fp)) = keys.edge.as_ref().and_then(|l| srtp(l, false)) {
                        if applied.edge_key.as_ref() != Some(&fp) {
                            b2p = Some(spec);
                            applied.edge_key = Some(fp);
                        }
                    }
                }
            }
            if p2b.is_some() || b2p.is_some() {
                handle
                    .apply(StreamCommand::Rekey {
                        phone_to_pbx: p2b,
                        pbx_to_phone: b2p,
                    })
                    .await?;
            }
            let held = on_hold(relayed.phone.as_ref()) || on_hold(relayed.pbx.as_ref());
            if held != applied.held {
                handle
                    .apply(if held {
                        StreamCommand::Hold
                    } else {
                        StreamCommand::Resume
                    })
                    .await?;
                applied.held = held;
            }
        }
        let gone: Vec<usize> = self
            .streams
            .keys()
            .filter(|m| !keep.contains(m))
            .copied()
            .collect();
        for m in gone {
            if plan.streams.iter().any(|s| s.mline == m) {
                if let Some((h, _)) = self.streams.remove(&m) {
                    let _ = h.stop().await;
                }
            }
        }
        Ok(())
    }

    /// Stops every stream (call over); ports return to the pool.
    pub async fn stop(&mut self) {
        for (_, (h, _)) in self.streams.drain() {
            let _ = h.stop().await;
        }
    }

    pub fn is_empty(&self) -> bool {
        self.streams.is_empty()
    }

    /// Relay streams (each holds 4 ports) the call holds.
    pub fn stream_count(&self) -> usize {
        self.streams.len()
    }

    /// Streams the call would hold once [`Self::ports_for`] has served `requests`: the ones
    /// it holds plus one for each m-line it has none for yet.
    pub fn streams_after(&self, requests: &[PortRequest]) -> usize {
        let mut new: Vec<usize> = requests
            .iter()
            .map(|r| r.mline)
            .filter(|m| !self.streams.contains_key(m))
            .collect();
        new.sort_unstable();
        new.dedup();
        self.streams.len() + new.len()
    }

    /// Stream ids (to match media events to calls).
    pub fn stream_ids(&self) -> Vec<crate::media::StreamId> {
        self.streams.values().map(|(h, _)| h.id()).collect()
    }

    /// Receive quality per stream (by m-line, ascending): (RTP from the phone, RTP from the
    /// PBX), the relay's own view.
    pub fn quality(&self) -> Vec<StreamQuality> {
        let mut v: Vec<StreamQuality> = self
            .streams
            .iter()
            .map(|(mline, (h, _))| StreamQuality {
                mline: *mline,
                phone_to_pbx: h.quality_report(Side::Phone),
                pbx_to_phone: h.quality_report(Side::Pbx),
            })
            .collect();
        v.sort_by_key(|q| q.mline);
        v
    }

    /// Packets relayed per direction, summed over the call's streams.
    pub fn counters(&self) -> (u64, u64) {
        self.streams.values().fold((0, 0), |(a, b), (h, _)| {
            let c = h.counters();
            (a + c.phone_to_pbx_packets, b + c.pbx_to_phone_packets)
        })
    }
}
