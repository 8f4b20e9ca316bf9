//! SIP capture to Homer (HEP v3, `[hep]`): a copy of every SIP message on both legs, as
//! received and as sent, with the addresses and ports it travelled between, goes to a HEP
//! collector (heplify-server, Homer, Kamailio's `sipcapture`).
//!
//! The SIP paths never wait for it: each hook copies the message into a bounded queue with
//! `try_send` ([`LegTap`]); a full queue drops the copy and counts it
//! (`pbx_edge_hep_dropped_total{reason="queue_full"}`). One sender task encodes ([`hep`]) and
//! sends: over UDP one datagram per message; over TCP one connection, reopened with a backoff
//! after a failure (copies arriving meanwhile are dropped as `disconnected`). With `[hep]` off
//! every hook is a branch on `None`: no copy, no allocation.
//!
//! The phone leg is captured after TLS decryption (the transport frames and reads the
//! message, or writes it) and reported as TCP between the TLS connection's addresses; the
//! PBX leg as UDP or TCP between `pbx.listen` (or the TCP connection's own address) and the
//! PBX. Operators should treat the collector like the PBX: it receives every phone's
//! signalling in clear, digest responses included.
//!
//! RTCP: every compound the media relay forwards (the phone's after SRTCP decryption, the
//! PBX's) reaches [`Capture::rtcp`] from the relay's lock-free hand-off (`media::tap`, drained
//! by `app`; drops there count as `rtcp_queue_full`) and is sent as HEP protocol type 5 with
//! the call's Call-ID as correlation id, the payload being the JSON report heplify sends
//! (`media::rtcp::homer_json`): heplify-server and Homer 7 store and chart RTCP in that form.

#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub mod hep;

use crate::config::{HepConfig, HepTransport};
use bytes::Bytes;
use prometheus::{IntCounter, IntCounterVec, Opts, Registry};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpStream, UdpSocket};
use tokio::sync::mpsc;

pub use hep::{IpProto, PayloadType};

/// The longest wait for the collector to accept a TCP connection.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// The longest wait for one message to be written to the collector over TCP.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(2);
/// First and longest wait before reconnecting to the collector over TCP (doubling between).
pub const BACKOFF_MIN: Duration = Duration::from_millis(500);
pub const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// `pbx_edge_hep_sent_total` and `pbx_edge_hep_dropped_total{reason}`.
#[derive(Debug, Clone)]
pub struct HepMetrics {
    pub sent: IntCounter,
    pub dropped: IntCounterVec,
}

/// Why a captured message did not reach the collector (metric label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// The queue (`hep.queue` messages or `hep.queue_bytes`) was full: the collector or the
    /// sender is slower than the SIP.
    QueueFull,
    /// Larger than a HEP packet can carry (64 KiB).
    TooLarge,
    /// The socket refused it (UDP send error, TCP write error or timeout).
    SendError,
    /// Over TCP, no connection to the collector (connecting failed; waiting to retry).
    Disconnected,
    /// The sender task has stopped (shutdown).
    Stopped,
    /// The media relay's RTCP hand-off (`media::tap`) was full: its consumer is behind.
    RtcpQueueFull,
}

impl DropReason {
    pub const ALL: [Self; 6] = [
        Self::QueueFull,
        Self::TooLarge,
        Self::SendError,
        Self::Disconnected,
        Self::Stopped,
        Self::RtcpQueueFull,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Self::QueueFull => "queue_full",
            Self::TooLarge => "too_large",
            Self::SendError => "send_error",
            Self::Disconnected => "disconnected",
            Self::Stopped => "stopped",
            Self::RtcpQueueFull => "rtcp_queue_full",
        }
    }
}

impl HepMetrics {
    pub fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        let sent = IntCounter::new(
            "pbx_edge_hep_sent_total",
            "Captured SIP messages and RTCP reports sent to the HEP collector ([hep]).",
        )?;
        let dropped = IntCounterVec::new(
            Opts::new(
                "pbx_edge_hep_dropped_total",
                "Captured SIP messages and RTCP reports not sent to the HEP collector, by reason.",
            ),
            &["reason"],
        )?;
        for r in DropReason::ALL {
            dropped.with_label_values(&[r.label()]);
        }
        registry.register(Box::new(sent.clone()))?;
        registry.register(Box::new(dropped.clone()))?;
        Ok(Self { sent, dropped })
    }

    fn drop(&self, reason: DropReason) {
        self.counter(reason).inc();
    }

    /// The drop counter of one reason (for a producer outside this module, e.g. the media
    /// relay's RTCP hand-off).
    pub fn counter(&self, reason: DropReason) -> IntCounter {
        self.dropped.with_label_values(&[reason.label()])
    }
}

/// One captured message on its way to the sender task.
#[derive(Debug)]
struct Record {
    src: SocketAddr,
    dst: SocketAddr,
    proto: IpProto,
    payload_type: PayloadType,
    time: SystemTime,
    /// HEP chunk 0x0011; for SIP read from the payload's Call-ID when encoding.
    correlation: Option<Bytes>,
    payload: Bytes,
}

#[derive(Debug)]
struct Sink {
    tx: mpsc::Sender<Record>,
    metrics: HepMetrics,
    bytes: Arc<ByteBudget>,
}

/// The payload bytes waiting in the queue, bounded by `hep.queue_bytes`: `hep.queue` messages
/// of the largest SIP size would otherwise hold `hep.queue` × 64 KiB while the collector
/// stalls (a phone sending large messages could make the edge hold that much).
#[derive(Debug)]
struct ByteBudget {
    queued: AtomicUsize,
    max: usize,
}

impl ByteBudget {
    fn new(max: usize) -> Arc<Self> {
        Arc::new(Self {
            queued: AtomicUsize::new(0),
            max,
        })
    }

    /// Takes `n` bytes if they fit.
    fn take(&self, n: usize) -> bool {
        self.queued
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |q| {
                q.checked_add(n).filter(|&t| t <= self.max)
            })
            .is_ok()
    }

    fn release(&self, n: usize) {
        let _ = self
            .queued
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |q| {
                Some(q.saturating_sub(n))
            });
    }
}

/// The capture switch handed to the transports (cheap to clone). [`Capture::off`] when
/// `[hep]` is not configured.
#[derive(Debug, Clone, Default)]
pub struct Capture {
    sink: Option<Arc<Sink>>,
}

impl Capture {
    /// No capture: every hook does nothing.
    pub fn off() -> Self {
        Self::default()
    }

    /// Starts the sender task for `config` (which must have an address) and returns the
    /// handle; the task ends when the last handle is dropped. Resolves `hep.address` once.
    pub async fn start(config: &HepConfig, metrics: HepMetrics) -> Result<Self, CaptureError> {
        let Some(address) = config.address.as_deref() else {
            return Ok(Self::off());
        };
        let target = tokio::net::lookup_host(address)
            .await
            .map_err(|source| CaptureError::Resolve {
                address: address.to_owned(),
                source,
            })?
            .next()
            .ok_or_else(|| CaptureError::Resolve {
                address: address.to_owned(),
                source: std::io::ErrorKind::NotFound.into(),
            })?;
        let (tx, rx) = mpsc::channel(config.queue.max(1));
        let bytes = ByteBudget::new(config.queue_bytes);
        let out = match config.transport {
            HepTransport::Udp => {
                let bind: SocketAddr = if target.is_ipv4() {
                    (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
                } else {
                    (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
                };
                let socket = UdpSocket::bind(bind)
                    .await
                    .map_err(|source| CaptureError::Socket { source })?;
                Out::Udp(socket)
            }
            HepTransport::Tcp => Out::Tcp {
                stream: None,
                retry_at: None,
                backoff: BACKOFF_MIN,
            },
        };
        let sender = Sender {
            target,
            capture_id: config.id,
            auth_key: config.password.clone().map(String::into_bytes),
            metrics: metrics.clone(),
            bytes: bytes.clone(),
            out,
        };
        tokio::spawn(sender.run(rx));
        tracing::info!(collector = %target, transport = config.transport.as_str(), id = config.id, queue = config.queue, "HEP capture on: SIP of both legs (the phone leg decrypted) is copied to the collector");
        Ok(Self {
            sink: Some(Arc::new(Sink { tx, metrics, bytes })),
        })
    }

    /// A handle feeding a queue of `queue` messages and `queue_bytes` payload bytes that the
    /// caller reads (tests).
    pub fn with_queue(
        queue: usize,
        queue_bytes: usize,
        metrics: HepMetrics,
    ) -> (Self, CaptureQueue) {
        let (tx, rx) = mpsc::channel(queue.max(1));
        let bytes = ByteBudget::new(queue_bytes);
        (
            Self {
                sink: Some(Arc::new(Sink {
                    tx,
                    metrics,
                    bytes: bytes.clone(),
                })),
            },
            CaptureQueue { rx, bytes },
        )
    }

    pub fn is_on(&self) -> bool {
        self.sink.is_some()
    }

    /// The tap of one connection or socket: `local` is the edge's end, `remote` the peer's.
    pub fn tap(&self, proto: IpProto, local: SocketAddr, remote: SocketAddr) -> LegTap {
        LegTap {
            capture: self.clone(),
            proto,
            local,
            remote,
        }
    }

    fn push(&self, proto: IpProto, src: SocketAddr, dst: SocketAddr, payload: &[u8]) {
        let Some(sink) = &self.sink else { return };
        // Keep-alive CRLFs (RFC 5626 §3.5.1) are not SIP messages.
        if payload.iter().all(|&b| b == b'\r' || b == b'\n') {
            return;
        }
        if !sink.bytes.take(payload.len()) {
            sink.metrics.drop(DropReason::QueueFull);
            return;
        }
        let record = Record {
            src,
            dst,
            proto,
            payload_type: PayloadType::Sip,
            time: SystemTime::now(),
            correlation: None,
            payload: Bytes::copy_from_slice(payload),
        };
        self.enqueue(sink, record);
    }

    /// One RTCP report the media relay forwarded from `src` (received on the edge's `dst`) at
    /// `time`, `json` being its Homer form, filed under the Call-ID `correlation`. Never waits.
    pub fn rtcp(
        &self,
        src: SocketAddr,
        dst: SocketAddr,
        time: SystemTime,
        correlation: Option<&str>,
        json: String,
    ) {
        let Some(sink) = &self.sink else { return };
        if !sink.bytes.take(json.len()) {
            sink.metrics.drop(DropReason::QueueFull);
            return;
        }
        let record = Record {
            src,
            dst,
            proto: IpProto::Udp,
            payload_type: PayloadType::Rtcp,
            time,
            correlation: correlation.map(|c| Bytes::copy_from_slice(c.as_bytes())),
            payload: Bytes::from(json),
        };
        self.enqueue(sink, record);
    }

    fn enqueue(&self, sink: &Sink, record: Record) {
        let len = record.payload.len();
        let reason = match sink.tx.try_send(record) {
            Ok(()) => return,
            Err(mpsc::error::TrySendError::Full(_)) => DropReason::QueueFull,
            Err(mpsc::error::TrySendError::Closed(_)) => DropReason::Stopped,
        };
        sink.bytes.release(len);
        sink.metrics.drop(reason);
    }
}

/// What the sender task would send, for tests that replace the task.
#[derive(Debug)]
pub struct CaptureQueue {
    rx: mpsc::Receiver<Record>,
    bytes: Arc<ByteBudget>,
}

impl CaptureQueue {
    /// The next queued message as HEP, encoded with `capture_id` and no key.
    pub fn try_next(&mut self, capture_id: u32) -> Option<Vec<u8>> {
        let r = self.rx.try_recv().ok()?;
        self.bytes.release(r.payload.len());
        let mut out = Vec::new();
        encode(&r, capture_id, None, &mut out).ok()?;
        Some(out)
    }
}

/// One leg's capture point with its addresses bound (cheap to clone).
#[derive(Debug, Clone)]
pub struct LegTap {
    capture: Capture,
    proto: IpProto,
    local: SocketAddr,
    remote: SocketAddr,
}

impl LegTap {
    /// A tap that captures nothing.
    pub fn off() -> Self {
        let any = SocketAddr::from((std::net::Ipv4Addr::UNSPECIFIED, 0));
        Capture::off().tap(IpProto::Udp, any, any)
    }

    /// A message the edge received from the remote end.
    pub fn received(&self, payload: &[u8]) {
        self.capture
            .push(self.proto, self.remote, self.local, payload);
    }

    /// A message the edge sent to the remote end.
    pub fn sent(&self, payload: &[u8]) {
        self.capture
            .push(self.proto, self.local, self.remote, payload);
    }
}

/// Why capture could not start.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    #[error("hep.address {address:?} does not resolve: {source}")]
    Resolve {
        address: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot open the UDP socket toward the HEP collector: {source}")]
    Socket {
        #[source]
        source: std::io::Error,
    },
}

fn encode(
    r: &Record,
    capture_id: u32,
    auth_key: Option<&[u8]>,
    out: &mut Vec<u8>,
) -> Result<(), hep::EncodeError> {
    hep::encode(
        &hep::Packet {
            src: r.src,
            dst: r.dst,
            proto: r.proto,
            payload_type: r.payload_type,
            time: r.time,
            capture_id,
            auth_key,
            correlation_id: match (&r.correlation, r.payload_type) {
                (Some(c), _) => Some(c),
                (None, PayloadType::Sip) => hep::call_id(&r.payload),
                (None, PayloadType::Rtcp) => None,
            },
            payload: &r.payload,
        },
        out,
    )
}

enum Out {
    Udp(UdpSocket),
    Tcp {
        stream: Option<TcpStream>,
        /// After a failure: no attempt before this.
        retry_at: Option<tokio::time::Instant>,
        backoff: Duration,
    },
}

struct Sender {
    target: SocketAddr,
    capture_id: u32,
    auth_key: Option<Vec<u8>>,
    metrics: HepMetrics,
    bytes: Arc<ByteBudget>,
    out: Out,
}

impl Sender {
    async fn run(mut self, mut rx: mpsc::Receiver<Record>) {
        let mut buf = Vec::with_capacity(4096);
        while let Some(record) = rx.recv().await {
            self.bytes.release(record.payload.len());
            if let Err(e) = encode(&record, self.capture_id, self.auth_key.as_deref(), &mut buf) {
                self.metrics.drop(DropReason::TooLarge);
                tracing::debug!(error = %e, "captured message not sent to the HEP collector");
                continue;
            }
            match self.send(&buf).await {
                Ok(()) => self.metrics.sent.inc(),
                Err(reason) => self.metrics.drop(reason),
            }
        }
    }

    async fn send(&mut self, packet: &[u8]) -> Result<(), DropReason> {
        let target = self.target;
        match &mut self.out {
            Out::Udp(socket) => socket
                .send_to(packet, target)
                .await
                .map(|_| ())
                .map_err(|e| {
                    tracing::debug!(collector = %target, error = %e, "HEP datagram not sent");
                    DropReason::SendError
                }),
            Out::Tcp {
                stream,
                retry_at,
                backoff,
            } => {
                if stream.is_none() {
                    if retry_at.is_some_and(|t| tokio::time::Instant::now() < t) {
                        return Err(DropReason::Disconnected);
                    }
                    match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(target)).await {
                        Ok(Ok(s)) => {
                            let _ = s.set_nodelay(true);
                            tracing::info!(collector = %target, "HEP collector connected");
                            *stream = Some(s);
                            *retry_at = None;
                            *backoff = BACKOFF_MIN;
                        }
                        Ok(Err(_)) | Err(_) => {
                            tracing::warn!(collector = %target, retry_in_ms = backoff.as_millis() as u64, "cannot connect to the HEP collector; captured messages are dropped until it answers");
                            *retry_at = Some(tokio::time::Instant::now() + *backoff);
                            *backoff = (*backoff * 2).min(BACKOFF_MAX);
                            return Err(DropReason::Disconnected);
                        }
                    }
                }
                let Some(s) = stream.as_mut() else {
                    return Err(DropReason::Disconnected);
                };
                match tokio::time::timeout(WRITE_TIMEOUT, s.write_all(packet)).await {
                    Ok(Ok(())) => Ok(()),
                    Ok(Err(_)) | Err(_) => {
                        // A partial write leaves the stream unframed: start a new connection.
                        tracing::warn!(collector = %target, "HEP collector connection lost");
                        *stream = None;
                        *retry_at = Some(tokio::time::Instant::now() + *backoff);
                        Err(DropReason::SendError)
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metrics() -> HepMetrics {
        HepMetrics::register(&Registry::new()).unwrap()
    }

    const MSG: &[u8] = b"OPTIONS sip:a SIP/2.0\r\nCall-ID: q1\r\nContent-Length: 0\r\n\r\n";

    #[test]
    fn rtcp_goes_out_as_hep_type_5_with_the_given_call_id() {
        let m = metrics();
        let (capture, mut queue) = Capture::with_queue(4, 1 << 20, m);
        let (src, dst) = (
            "192.0.2.7:5005".parse().unwrap(),
            "127.0.0.1:30001".parse().unwrap(),
        );
        let json = r#"{"type":201,"ssrc":1}"#;
        capture.rtcp(src, dst, SystemTime::now(), Some("call-9"), json.to_owned());
        let packet = queue.try_next(7).expect("queued");
        let c = ::hep::parse_packet(&packet).expect("HEP3");
        assert_eq!(c.proto_type, ::hep::CapProtoType::Rtcp);
        assert_eq!(c.ip_protocol_id, 17);
        assert_eq!(c.internal_correlation_id, "call-9");
        assert_eq!(c.packet_payload, json);
        assert_eq!((c.proto_src_port, c.proto_dst_port), (5005, 30001));
        // Off: nothing.
        Capture::off().rtcp(src, dst, SystemTime::now(), None, json.to_owned());
    }

    #[test]
    fn a_full_queue_drops_and_counts_without_blocking() {
        let m = metrics();
        let (capture, mut queue) = Capture::with_queue(2, 1 << 20, m.clone());
        let tap = capture.tap(
            IpProto::Tcp,
            "127.0.0.1:5061".parse().unwrap(),
            "127.0.0.2:40000".parse().unwrap(),
        );
        for _ in 0..5 {
            tap.received(MSG);
        }
        assert_eq!(m.dropped.with_label_values(&["queue_full"]).get(), 3);
        assert!(queue.try_next(1).is_some());
        assert!(queue.try_next(1).is_some());
        assert!(queue.try_next(1).is_none());
    }

    #[test]
    fn queued_bytes_are_bounded_and_released_when_taken() {
        let m = metrics();
        // Room for two messages by bytes, though the queue takes 100.
        let (capture, mut queue) = Capture::with_queue(100, 2 * MSG.len(), m.clone());
        let tap = LegTap {
            capture,
            proto: IpProto::Tcp,
            local: "127.0.0.1:5061".parse().unwrap(),
            remote: "127.0.0.2:40000".parse().unwrap(),
        };
        for _ in 0..3 {
            tap.sent(MSG);
        }
        assert_eq!(m.dropped.with_label_values(&["queue_full"]).get(), 1);
        assert!(queue.try_next(1).is_some());
        // Taking one frees its bytes for the next.
        tap.sent(MSG);
        assert_eq!(m.dropped.with_label_values(&["queue_full"]).get(), 1);
        tap.sent(MSG);
        assert_eq!(m.dropped.with_label_values(&["queue_full"]).get(), 2);
    }

    #[test]
    fn directions_and_keepalives() {
        let m = metrics();
        let (capture, mut queue) = Capture::with_queue(8, 1 << 20, m.clone());
        let local: SocketAddr = "127.0.0.1:5080".parse().unwrap();
        let remote: SocketAddr = "127.0.0.3:5060".parse().unwrap();
        let tap = capture.tap(IpProto::Udp, local, remote);
        tap.sent(b"\r\n");
        tap.received(b"\r\n\r\n");
        tap.sent(MSG);
        tap.received(MSG);
        let sent = hep_crate(&queue.try_next(7).unwrap());
        assert_eq!(sent.proto_src_port, 5080);
        assert_eq!(sent.proto_dst_port, 5060);
        assert_eq!(sent.ip_protocol_id, 17);
        assert_eq!(sent.capture_agent_id, 7);
        assert_eq!(sent.internal_correlation_id, "q1");
        let received = hep_crate(&queue.try_next(7).unwrap());
        assert_eq!(received.ipv4_src_address.to_string(), "127.0.0.3");
        assert_eq!(received.proto_src_port, 5060);
        assert_eq!(received.proto_dst_port, 5080);
        assert!(queue.try_next(7).is_none(), "keep-alives are not captured");
        assert_eq!(m.dropped.with_label_values(&["queue_full"]).get(), 0);
    }

    #[test]
    fn off_captures_nothing() {
        let tap = LegTap::off();
        tap.received(MSG);
        tap.sent(MSG);
        assert!(!Capture::off().is_on());
    }

    fn hep_crate(bytes: &[u8]) -> ::hep::Chunk {
        ::hep::parse_packet(bytes).unwrap()
    }

    fn config(address: String, transport: HepTransport) -> HepConfig {
        HepConfig {
            address: Some(address),
            transport,
            id: 42,
            password: Some("pw".into()),
            queue: 16,
            queue_bytes: 1 << 20,
        }
    }

    #[tokio::test]
    async fn udp_sends_one_datagram_per_message() {
        let collector = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let m = metrics();
        let c = config(
            collector.local_addr().unwrap().to_string(),
            HepTransport::Udp,
        );
        let capture = Capture::start(&c, m.clone()).await.unwrap();
        let tap = capture.tap(
            IpProto::Tcp,
            "127.0.0.1:5061".parse().unwrap(),
            "127.0.0.9:41000".parse().unwrap(),
        );
        tap.received(MSG);
        let mut buf = vec![0u8; 70_000];
        let n = tokio::time::timeout(Duration::from_secs(5), collector.recv(&mut buf))
            .await
            .unwrap()
            .unwrap();
        let c = hep_crate(&buf[..n]);
        assert_eq!(c.capture_agent_id, 42);
        assert_eq!(c.authenticate_key, "pw");
        assert_eq!(c.packet_payload.as_bytes(), MSG);
        assert_eq!(c.ipv4_src_address.to_string(), "127.0.0.9");
    }

    #[tokio::test]
    async fn tcp_reconnects_after_the_collector_comes_back() {
        // A port with nothing listening: the first message is dropped as disconnected.
        let probe = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = probe.local_addr().unwrap();
        drop(probe);
        let m = metrics();
        let capture = Capture::start(&config(addr.to_string(), HepTransport::Tcp), m.clone())
            .await
            .unwrap();
        let tap = capture.tap(
            IpProto::Udp,
            "127.0.0.1:5080".parse().unwrap(),
            "127.0.0.1:5060".parse().unwrap(),
        );
        tap.sent(MSG);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while m.dropped.with_label_values(&["disconnected"]).get() == 0 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "no disconnected drop"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // The collector starts; after the backoff the next message connects and arrives.
        let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
        let accepted = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut head = [0u8; 6];
            tokio::io::AsyncReadExt::read_exact(&mut s, &mut head)
                .await
                .unwrap();
            let len = usize::from(u16::from_be_bytes([head[4], head[5]]));
            let mut rest = vec![0u8; len - 6];
            tokio::io::AsyncReadExt::read_exact(&mut s, &mut rest)
                .await
                .unwrap();
            [head.to_vec(), rest].concat()
        });
        let packet = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                tap.sent(MSG);
                tokio::time::sleep(Duration::from_millis(100)).await;
                if accepted.is_finished() {
                    break accepted.await.unwrap();
                }
            }
        })
        .await
        .expect("the sender reconnects");
        let c = hep_crate(&packet);
        assert_eq!(c.ip_protocol_id, 17);
        assert_eq!(c.proto_src_port, 5080);
        assert!(m.sent.get() >= 1);
    }
}
