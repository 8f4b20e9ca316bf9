//! The media relay's control API — the only part of `media` other modules use.
//!
//! The B2BUA maps its negotiated SDP (`sdp::MediaPlan`) onto a [`StreamSpec`] and calls
//! [`MediaControl::start`]; the returned [`StreamHandle`] carries the relay's local addresses
//! (to write into SDP) and changes the stream through [`StreamCommand`]s sent over a channel to
//! the worker that owns it. The relay reports [`MediaEvent`]s on a channel the caller owns.
//!
//! SRTP contexts are built here, on the caller's thread, so a bad key is an error of
//! `start`/`send`, and the worker receives a ready transform (decide at signalling time,
//! dispatch blindly at packet time).
//!
//! # Mapping offer/answer onto a stream
//! Ports are needed before the other leg's SDP exists, so a stream can start half-known:
//! - **Phone calls out** (phone offer → PBX offer → PBX answer → phone answer): on the phone's
//!   offer, `start` with `phone` = the offer's addresses, `phone_to_pbx` = `Srtp(chosen
//!   a=crypto key)`, `pbx_to_phone` = `Srtp(edge key)`, `pbx.rtp = None` (PBX-side packets are
//!   accepted only from `pbx_host` meanwhile); write `pbx_local()` into the PBX offer. On the
//!   PBX answer: `Retarget { pbx: Some(..) }`.
//! - **PBX calls a phone** (PBX offer → phone offer → phone answer → PBX answer): `start` with
//!   `pbx` known, `pbx_to_phone` = `Srtp(edge key)`, `phone_to_pbx` = `Closed` (dropped and
//!   counted as `not_keyed` until keyed), `phone` = default; write `phone_local()` into the
//!   phone offer. On the phone's answer: `apply(Rekey { phone_to_pbx: Some(Srtp(its key)),
//!   .. })` and `Retarget { phone: Some(..) }`.
//! - **Re-INVITE**: same crypto line → no `Rekey` (the context keeps its ROC); new key →
//!   `Rekey` for that direction (RFC 4568 §7.1.4); new address → `Retarget`; hold →
//!   `Hold` / `Resume`. BYE, CANCEL or failure → drop the handle or `stop().await`.
//! - **Best-effort SRTP** with a phone that offered no crypto: `Plain` both ways (the phone
//!   side then latches on its first source and keeps it).

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use prometheus::Registry;
use tokio::sync::{mpsc, oneshot};

use super::batch_io;
use super::latch::LatchPolicy;
use super::ports::{PortPool, PortRange};
use super::relay::{self, NewStream, WorkerCommand, WorkerPool};
use super::stats::{CounterSnapshot, MediaCollector, MediaStats, StreamCounters};
use super::transform::{Inbound, Outbound, TransformSpec};
use super::types::pbx_policy;
use super::MediaError;
use crate::config::MediaIo;

// The values the API speaks in live in `types` (shared with relay and stats); named here too
// because this is the API other modules use (`media::control::PeerSpec`).
pub use super::types::{LocalPorts, MediaEvent, PeerSpec, RelaySettings, Side, StreamId};

/// What one stream must do; built by the B2BUA from the negotiated SDP.
#[derive(Debug, Clone)]
pub struct StreamSpec {
    /// Phone-side remote addresses (from the phone's SDP; untrusted until authenticated).
    pub phone: PeerSpec,
    /// PBX-side remote addresses (from the PBX's SDP).
    pub pbx: PeerSpec,
    /// The PBX's IP address: PBX-side packets are accepted only from it while `pbx.rtp` is
    /// not known yet (afterwards from exactly `pbx.rtp` / its RTCP address).
    pub pbx_host: IpAddr,
    /// Phone → PBX: the phone's key (unprotect), `Plain`, or `Closed` until its answer.
    pub phone_to_pbx: TransformSpec,
    /// PBX → phone: the edge's key (protect), `Plain`, or `Closed`.
    pub pbx_to_phone: TransformSpec,
}

/// Changes to a running stream.
#[derive(Debug, Clone)]
pub enum StreamCommand {
    /// New keys for one or both directions (RFC 4568 §7.1.4: a new key is a new context);
    /// `None` keeps the current context (and its ROC / replay state).
    Rekey {
        /// New phone → PBX transform.
        phone_to_pbx: Option<TransformSpec>,
        /// New PBX → phone transform.
        pbx_to_phone: Option<TransformSpec>,
    },
    /// Stop reporting timeouts (hold: sendonly / inactive); packets are still relayed.
    Hold,
    /// Report timeouts again; the silence clock restarts now.
    Resume,
    /// New remote addresses for one or both sides (re-INVITE / answer); the learned address
    /// of a retargeted side is forgotten.
    Retarget {
        /// New phone-side addresses.
        phone: Option<PeerSpec>,
        /// New PBX-side addresses.
        pbx: Option<PeerSpec>,
    },
    /// End the stream; its ports return to the pool.
    Stop,
}

struct ControlInner {
    pool: PortPool,
    settings: RelaySettings,
    stats: Arc<MediaStats>,
    workers: WorkerPool,
    next_id: AtomicU64,
}

/// The relay's control handle; clone it freely.
#[derive(Clone)]
pub struct MediaControl {
    inner: Arc<ControlInner>,
}

impl std::fmt::Debug for MediaControl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MediaControl")
            .field("settings", &self.inner.settings)
            .finish_non_exhaustive()
    }
}

impl MediaControl {
    /// Starts the relay workers and registers the media metrics into `registry`. Events of
    /// every stream go to `events` (if it is full, events are dropped and counted).
    pub fn new(
        settings: RelaySettings,
        registry: &Registry,
        events: mpsc::Sender<MediaEvent>,
    ) -> Result<Self, MediaError> {
        let pool = PortPool::new(PortRange::new(settings.port_min, settings.port_max)?);
        let workers = if settings.workers == 0 {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        } else {
            settings.workers
        };
        let batched = choose_io(settings.io)?;
        let stats = Arc::new(MediaStats::new(pool.clone(), workers));
        MediaCollector::register(stats.clone(), registry)?;
        let workers = WorkerPool::spawn(workers, &settings, batched, stats.clone(), events)?;
        Ok(MediaControl {
            inner: Arc::new(ControlInner {
                pool,
                settings,
                stats,
                workers,
                next_id: AtomicU64::new(1),
            }),
        })
    }

    /// Leases ports on both sides, builds the transforms and hands the stream to a worker.
    /// Fails with [`MediaError::PortsExhausted`] (→ 503) when no port pair is free.
    pub async fn start(&self, spec: StreamSpec) -> Result<StreamHandle, MediaError> {
        self.start_correlated(spec, None).await
    }

    /// [`Self::start`] for a stream of the call `correlation` (its Call-ID): the RTCP copies
    /// HEP capture gets from this stream carry it, so the collector files them with the call.
    pub async fn start_correlated(
        &self,
        spec: StreamSpec,
        correlation: Option<Arc<str>>,
    ) -> Result<StreamHandle, MediaError> {
        let inner = &self.inner;
        check_family(inner.settings.phone_bind, &spec.phone)?;
        check_family(inner.settings.pbx_bind, &spec.pbx)?;
        let inbound = Inbound::from_spec(&spec.phone_to_pbx)?;
        let outbound = Outbound::from_spec(&spec.pbx_to_phone)?;
        let phone = inner.pool.bind_pair(inner.settings.phone_bind)?;
        let pbx = inner.pool.bind_pair(inner.settings.pbx_bind)?;
        for socket in [&phone.rtp, &phone.rtcp, &pbx.rtp, &pbx.rtcp] {
            // The media still flows unmarked: a QoS problem, not a reason to refuse the call.
            if let Err(e) = crate::qos::mark(socket, inner.settings.dscp) {
                tracing::warn!(local = ?socket.local_addr().ok(), dscp = inner.settings.dscp, error = %e, "cannot set the DSCP of a media socket");
            }
        }
        let local_addr = |s: &std::net::UdpSocket| s.local_addr().map_err(MediaError::Worker);
        let phone_local = LocalPorts {
            rtp: local_addr(&phone.rtp)?,
            rtcp: local_addr(&phone.rtcp)?,
        };
        let pbx_local = LocalPorts {
            rtp: local_addr(&pbx.rtp)?,
            rtcp: local_addr(&pbx.rtcp)?,
        };
        let id = StreamId(inner.next_id.fetch_add(1, Ordering::Relaxed));
        let counters = Arc::new(StreamCounters::default());
        let worker = inner.workers.least_loaded()?;
        let (ack, acked) = oneshot::channel();
        let new = NewStream {
            id,
            phone,
            pbx,
            phone_latch: phone_policy(&spec.phone_to_pbx),
            pbx_latch: pbx_policy(&spec.pbx, spec.pbx_host),
            spec_phone: spec.phone,
            spec_pbx: spec.pbx,
            pbx_host: spec.pbx_host,
            inbound,
            outbound,
            counters: counters.clone(),
            rtcp_tap: inner.settings.rtcp_tap.clone(),
            correlation,
            ack: Some(ack),
        };
        inner.stats.register_stream(id, counters.clone());
        if let Err(e) = worker.send(WorkerCommand::Start(Box::new(new))) {
            inner.stats.retire_stream(id);
            return Err(e);
        }
        match acked.await {
            Ok(Ok(())) => Ok(StreamHandle {
                id,
                control: self.clone(),
                worker,
                counters,
                phone_local,
                pbx_local,
                stopped: false,
            }),
            Ok(Err(e)) => {
                inner.stats.retire_stream(id);
                Err(e)
            }
            Err(_) => {
                inner.stats.retire_stream(id);
                Err(MediaError::StreamGone)
            }
        }
    }

    /// Sums over every stream, live and ended.
    pub fn totals(&self) -> CounterSnapshot {
        self.inner.stats.totals()
    }

    /// Worker wake-ups so far (see `pbx_edge_media_worker_wakeups_total`).
    pub fn wakeups(&self) -> u64 {
        self.inner.stats.wakeups()
    }

    /// Whether every worker uses batched I/O (io_uring) right now (`pbx_edge_media_io_batched`).
    pub fn io_batched(&self) -> bool {
        self.inner.stats.io_batched()
    }

    /// Streams currently relayed.
    pub fn active_streams(&self) -> usize {
        self.inner.stats.active_streams()
    }

    /// The port pool (for `ports in use / free`).
    pub fn ports(&self) -> &PortPool {
        &self.inner.pool
    }

    /// Names of the worker threads (`media-worker-N`), for per-thread CPU accounting.
    pub fn worker_thread_name(index: usize) -> String {
        relay::worker_thread_name(index)
    }
}

/// A socket bound to an IPv4 address cannot reach an IPv6 peer, and the reverse. (Dual-stack
/// `::` would see IPv4 peers as IPv4-mapped addresses that never equal the SDP's; not
/// supported: bind one family per side.)
/// Resolves `media.io` on this machine (probing io_uring for `auto` and `batched`) and logs
/// once which I/O the relay uses and why. `true` = batched.
fn choose_io(io: MediaIo) -> Result<bool, MediaError> {
    match io {
        MediaIo::PerPacket => {
            tracing::info!(
                media.io = io.label(),
                "media relay I/O: per-packet recvfrom/sendto"
            );
            Ok(false)
        }
        MediaIo::Auto | MediaIo::Batched => match batch_io::probe() {
            Ok(()) => {
                tracing::info!(
                    media.io = io.label(),
                    "media relay I/O: batched (io_uring works here)"
                );
                Ok(true)
            }
            Err(e) if io == MediaIo::Auto => {
                tracing::warn!(
                    media.io = io.label(),
                    reason = %e,
                    "media relay I/O: per-packet recvfrom/sendto, because io_uring is unavailable"
                );
                Ok(false)
            }
            Err(e) => Err(MediaError::BatchedIoUnavailable(e)),
        },
    }
}

fn check_family(bind: IpAddr, peer: &PeerSpec) -> Result<(), MediaError> {
    let reachable = |a: &SocketAddr| a.is_ipv4() == bind.is_ipv4();
    if peer.rtp.iter().chain(peer.rtcp.iter()).all(reachable) {
        Ok(())
    } else {
        Err(MediaError::InvalidSpec(
            "peer address family differs from the relay's bind address",
        ))
    }
}

/// The phone side's latch policy follows from what the phone → PBX transform can prove.
pub(crate) fn phone_policy(spec: &TransformSpec) -> LatchPolicy {
    match spec {
        TransformSpec::Srtp(_) | TransformSpec::Closed => LatchPolicy::Authenticated,
        TransformSpec::Plain => LatchPolicy::FirstSource,
    }
}

/// A running stream. Dropping it stops the stream (without waiting).
pub struct StreamHandle {
    id: StreamId,
    control: MediaControl,
    worker: relay::WorkerLink,
    counters: Arc<StreamCounters>,
    phone_local: LocalPorts,
    pbx_local: LocalPorts,
    stopped: bool,
}

impl std::fmt::Debug for StreamHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamHandle")
            .field("id", &self.id)
            .field("phone_local", &self.phone_local)
            .field("pbx_local", &self.pbx_local)
            .finish_non_exhaustive()
    }
}

impl StreamHandle {
    /// The stream's id (as in events).
    pub fn id(&self) -> StreamId {
        self.id
    }

    /// The phone-side relay sockets (bound on `phone_bind`; SDP toward the phone advertises
    /// `phone_advertise` with these ports).
    pub fn phone_local(&self) -> LocalPorts {
        self.phone_local
    }

    /// The PBX-side relay sockets (bound on `pbx_bind`; written into the PBX's SDP).
    pub fn pbx_local(&self) -> LocalPorts {
        self.pbx_local
    }

    /// This stream's counters, read without locks.
    pub fn counters(&self) -> CounterSnapshot {
        self.counters.snapshot()
    }

    /// Receive quality so far of the RTP `sender` sends, read without locks.
    pub fn quality(&self, sender: super::Side) -> super::QualitySnapshot {
        self.counters.quality(sender)
    }

    /// Quality of the RTP `sender` sends as shown to people: the relay's view, the receiver's
    /// RTCP report and the MOS with the RTT-based delay, read without locks.
    pub fn quality_report(&self, sender: super::Side) -> super::quality::QualityReport {
        super::quality::QualityReport::new(
            self.counters.quality(sender),
            self.counters.reported(sender),
            self.counters.one_way_delay_ms(),
        )
    }

    /// Sends a command without waiting for it to take effect. SRTP parameters are checked
    /// here. Packets already queued may still be handled under the previous state.
    pub fn send(&mut self, command: StreamCommand) -> Result<(), MediaError> {
        let change = self.change(command)?;
        self.worker.send(WorkerCommand::Change {
            id: self.id,
            change,
            ack: None,
        })
    }

    /// Sends a command and waits until the worker has it in force: after `Rekey` returns,
    /// every packet the relay reads is handled with the new keys; after `Stop` returns, the
    /// sockets are closed and the ports are back in the pool.
    pub async fn apply(&mut self, command: StreamCommand) -> Result<(), MediaError> {
        let change = self.change(command)?;
        let (ack, acked) = oneshot::channel();
        self.worker.send(WorkerCommand::Change {
            id: self.id,
            change,
            ack: Some(ack),
        })?;
        acked.await.map_err(|_| MediaError::StreamGone)
    }

    /// Stops the stream and waits until its ports are back in the pool.
    pub async fn stop(mut self) -> Result<(), MediaError> {
        self.apply(StreamCommand::Stop).await
    }

    fn change(&mut self, command: StreamCommand) -> Result<Box<relay::Change>, MediaError> {
        if self.stopped {
            return Err(MediaError::StreamGone);
        }
        Ok(Box::new(match command {
            StreamCommand::Rekey {
                phone_to_pbx,
                pbx_to_phone,
            } => relay::Change::Rekey {
                phone_policy: phone_to_pbx.as_ref().map(phone_policy),
                inbound: phone_to_pbx.as_ref().map(Inbound::from_spec).transpose()?,
                outbound: pbx_to_phone.as_ref().map(Outbound::from_spec).transpose()?,
            },
            StreamCommand::Hold => relay::Change::Hold(true),
            StreamCommand::Resume => relay::Change::Hold(false),
            StreamCommand::Retarget { phone, pbx } => relay::Change::Retarget { phone, pbx },
            StreamCommand::Stop => {
                self.stopped = true;
                relay::Change::Stop
            }
        }))
    }

    /// The control handle this stream belongs to.
    pub fn control(&self) -> &MediaControl {
        &self.control
    }
}

impl Drop for StreamHandle {
    fn drop(&mut self) {
        if !self.stopped {
            // Best effort: if the worker is gone, so are the sockets.
            let _ = self.worker.send(WorkerCommand::Change {
                id: self.id,
                change: Box::new(relay::Change::Stop),
                ack: None,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send_sync<T: Send + Sync>(_: &T) {}
    fn assert_send<T: Send>(_: &T) {}

    /// The B2BUA keeps handles in its dialog tasks and awaits `start` in spawned tasks.
    #[allow(dead_code)]
    fn handles_and_futures_are_send(control: &MediaControl, spec: StreamSpec, mut h: StreamHandle) {
        assert_send_sync(control);
        assert_send(&h);
        assert_send(&control.start(spec));
        assert_send(&h.apply(StreamCommand::Hold));
        assert_send(&h.stop());
    }

    #[test]
    fn rtcp_address_rules() {
        let rtp: SocketAddr = "192.0.2.1:4000".parse().unwrap();
        let mut peer = PeerSpec::new(rtp);
        assert_eq!(peer.rtcp_address(), Some("192.0.2.1:4001".parse().unwrap()));
        peer.rtcp = Some("192.0.2.1:5005".parse().unwrap());
        assert_eq!(peer.rtcp_address(), Some("192.0.2.1:5005".parse().unwrap()));
        peer.rtcp_mux = true;
        assert_eq!(peer.rtcp_address(), Some(rtp));
        let edge = PeerSpec::new("192.0.2.1:65535".parse().unwrap());
        assert_eq!(edge.rtcp_address(), None);
        assert_eq!(PeerSpec::default().rtcp_address(), None);
    }

    #[test]
    fn address_family_must_match_bind() {
        let v4: IpAddr = "127.0.0.1".parse().unwrap();
        let v6: IpAddr = "::1".parse().unwrap();
        let any6: IpAddr = "::".parse().unwrap();
        let peer4 = PeerSpec::new("192.0.2.1:4000".parse().unwrap());
        let peer6 = PeerSpec::new("[2001:db8::1]:4000".parse().unwrap());
        assert!(check_family(v4, &peer4).is_ok());
        assert!(check_family(v4, &PeerSpec::default()).is_ok());
        assert_eq!(
            check_family(v4, &peer6).unwrap_err().label(),
            "invalid_spec"
        );
        assert!(check_family(v6, &peer4).is_err());
        assert!(check_family(v6, &peer6).is_ok());
        assert!(check_family(any6, &peer4).is_err());
    }

    #[test]
    fn policies_follow_spec() {
        assert_eq!(
            phone_policy(&TransformSpec::Plain),
            LatchPolicy::FirstSource
        );
        assert_eq!(
            phone_policy(&TransformSpec::Closed),
            LatchPolicy::Authenticated
        );
        let host: IpAddr = "10.0.0.5".parse().unwrap();
        let (rtp, rtcp) = pbx_policy(&PeerSpec::default(), host);
        assert_eq!(
            rtp,
            LatchPolicy::Fixed {
                ip: host,
                port: None
            }
        );
        assert_eq!(
            rtcp,
            LatchPolicy::Fixed {
                ip: host,
                port: None
            }
        );
        let (rtp, rtcp) = pbx_policy(&PeerSpec::new("10.0.0.6:20000".parse().unwrap()), host);
        let ip: IpAddr = "10.0.0.6".parse().unwrap();
        assert_eq!(
            rtp,
            LatchPolicy::Fixed {
                ip,
                port: Some(20000)
            }
        );
        assert_eq!(
            rtcp,
            LatchPolicy::Fixed {
                ip,
                port: Some(20001)
            }
        );
    }
}
