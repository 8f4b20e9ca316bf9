//! One phone TLS connection: frames SIP messages out of the byte stream (RFC 3261 §18.3),
//! answers RFC 5626 §3.5.1 keep-alives, writes what the flow's bounded queue holds, closes on
//! idle, framing errors, revocation or shutdown. Every message it delivers carries the
//! connection's flow id and device identity.
//!
//! Reading and writing are branches of one `select!`, never an `.await` inside another
//! branch: a phone that stops reading (its TCP window full) blocks only the write branch,
//! so the close token (revocation), shutdown and the idle timer still end the connection.
//! A write that makes no progress for `sip.write_timeout_secs` ends it too (`write_stalled`;
//! 10 s by default, the default of Kamailio's `tcp_send_timeout` for the same purpose).
//! Everything the task writes — queued messages, keep-alive pongs — goes through the flow's
//! queue, bounded in bytes; the 400 for an unparseable message goes to the SIP core, which
//! charges it to the device's request budget before queueing it.

use super::flow::{FlowError, FlowHandle, FlowId, FlowQueue, FlowTable, QueueLimits};
use super::metrics::SipTransportMetrics;
use crate::capture::LegTap;
use crate::identity::Identity;
use crate::sip::framing::{Frame, FramingLimits, StreamFramer};
use crate::sip::message::SipMessage;
use bytes::{Buf, Bytes, BytesMut};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Outbound messages a phone connection may have queued before it counts as stuck (a
/// second bound next to `sip.write_queue_bytes`: a keep-alive pong is 2 bytes).
pub const WRITE_QUEUE_MESSAGES: usize = 1024;

/// A SIP message that arrived from a phone.
#[derive(Debug)]
pub struct PhoneMessage {
    pub flow: FlowId,
    pub identity: Arc<Identity>,
    pub peer: SocketAddr,
    pub message: SipMessage,
}

/// What phone connections tell the SIP core.
#[derive(Debug)]
pub enum PhoneEvent {
    Opened(FlowHandle),
    Message(PhoneMessage),
    /// An unparseable message; `response` is the 400 the edge would answer. The core sends
    /// it only within the device's request budget (every response the edge composes for a
    /// device is charged to it).
    Unparseable {
        flow: FlowId,
        identity: Arc<Identity>,
        response: Bytes,
    },
    Closed(FlowId),
}

/// Settings of phone connections.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionSettings {
    pub limits: FramingLimits,
    pub idle_timeout: Duration,
    /// A write toward the phone that makes no progress for this long closes the connection
    /// (`sip.write_timeout_secs`).
    pub write_timeout: Duration,
    /// The bounds of the outbound queue (`sip.write_queue_bytes`).
    pub queue: QueueLimits,
}

/// Why a connection ended (log field and metric label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    PeerClosed,
    ReadError,
    WriteError,
    /// A write made no progress for `sip.write_timeout_secs`: the phone does not read.
    WriteStalled,
    /// The outbound queue overflowed (`sip.write_queue_bytes`): the phone does not read.
    QueueFull,
    Idle,
    Framing(&'static str),
    Closed,
    CoreGone,
}

impl CloseReason {
    pub fn label(&self) -> &'static str {
        match self {
            Self::PeerClosed => "peer_closed",
            Self::ReadError => "read_error",
            Self::WriteError => "write_error",
            Self::WriteStalled => "write_stalled",
            Self::QueueFull => "write_queue_full",
            Self::Idle => "idle",
            Self::Framing(_) => "framing_error",
            Self::Closed => "closed_by_edge",
            Self::CoreGone => "shutdown",
        }
    }
}

/// Runs a phone connection until it ends; the flow is removed from `flows` on return.
/// `tap` captures every SIP message read and written, decrypted (`[hep]`).
#[allow(clippy::too_many_arguments)]
pub async fn run<S: AsyncRead + AsyncWrite + Unpin>(
    stream: S,
    peer: SocketAddr,
    tap: LegTap,
    identity: Arc<Identity>,
    certificates: Arc<Vec<rustls_pki_types::CertificateDer<'static>>>,
    flows: Arc<FlowTable>,
    settings: ConnectionSettings,
    events: mpsc::Sender<PhoneEvent>,
    metrics: SipTransportMetrics,
    shutdown: CancellationToken,
) -> CloseReason {
    let close = shutdown.child_token();
    let (flow, queue) = flows.open(
        peer,
        identity.clone(),
        certificates,
        settings.queue,
        close.clone(),
    );
    let id = flow.id;
    if events.send(PhoneEvent::Opened(flow.clone())).await.is_err() {
        flows.remove(id);
        return CloseReason::CoreGone;
    }
    let (mut reader, mut writer) = tokio::io::split(stream);
    let reason = serve(
        &mut reader,
        &mut writer,
        Conn {
            peer,
            tap,
            identity,
            flow,
            queue,
            close,
        },
        settings,
        &events,
        &metrics,
    )
    .await;
    // The core learns of the close before the TLS close_notify is attempted: a phone that
    // does not read must not delay ending its calls.
    flows.remove(id);
    let _ = events.send(PhoneEvent::Closed(id)).await;
    metrics
        .connections_closed
        .with_label_values(&[reason.label()])
        .inc();
    tracing::info!(%peer, flow = %id, reason = reason.label(), "phone connection closed");
    if !matches!(reason, CloseReason::WriteStalled | CloseReason::QueueFull) {
        // Bounded: the peer may have stopped reading without the edge noticing yet.
        let _ = tokio::time::timeout(settings.write_timeout, writer.shutdown()).await;
    }
    reason
}

/// What [`serve`] works on.
struct Conn {
    peer: SocketAddr,
    tap: LegTap,
    identity: Arc<Identity>,
    flow: FlowHandle,
    queue: FlowQueue,
    close: CancellationToken,
}

/// The message being written, and how much of it is left.
struct Pending {
    rest: Bytes,
    len: usize,
}

/// One step of the writer: some bytes of `pending`, or a flush of what the TLS layer still
/// buffers. Cancel safe: a write that returns `Pending` has taken nothing.
async fn write_step<W: AsyncWrite + Unpin>(
    writer: &mut W,
    pending: Option<&Pending>,
) -> std::io::Result<usize> {
    match pending {
        Some(p) => writer.write(&p.rest).await,
        None => writer.flush().await.map(|()| 0),
    }
}

async fn serve<R, W>(
    reader: &mut R,
    writer: &mut W,
    mut conn: Conn,
    settings: ConnectionSettings,
    events: &mpsc::Sender<PhoneEvent>,
    metrics: &SipTransportMetrics,
) -> CloseReason
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let (peer, id) = (conn.peer, conn.flow.id);
    let mut framer = StreamFramer::new(settings.limits);
    let mut buf = BytesMut::with_capacity(8192);
    let idle = tokio::time::sleep(settings.idle_timeout);
    tokio::pin!(idle);
    // Armed while there is something to write: the deadline for the next progress.
    let stall = tokio::time::sleep(settings.write_timeout);
    tokio::pin!(stall);
    let mut pending: Option<Pending> = None;
    let mut unflushed = false;
    'conn: loop {
        let writing = pending.is_some() || unflushed;
        tokio::select! {
            _ = conn.close.cancelled() => {
                return if conn.queue.overflowed() {
                    tracing::info!(%peer, flow = %id, "write queue full (sip.write_queue_bytes): the phone does not read");
                    CloseReason::QueueFull
                } else {
                    CloseReason::Closed
                };
            }
            _ = &mut idle => return CloseReason::Idle,
            _ = &mut stall, if writing => {
                tracing::info!(%peer, flow = %id, "no write progress for sip.write_timeout_secs: the phone does not read");
                return CloseReason::WriteStalled;
            }
            out = conn.queue.recv(), if pending.is_none() => {
                let Some(bytes) = out else { return CloseReason::Closed };
                if !writing {
                    stall.as_mut().reset(Instant::now() + settings.write_timeout);
                }
                let len = bytes.len();
                // Captured when taken for writing (keep-alive pongs are skipped by the tap).
                conn.tap.sent(&bytes);
                pending = Some(Pending { rest: bytes, len });
            }
            written = write_step(writer, pending.as_ref()), if writing => {
                match (written, pending.as_mut()) {
                    (Err(_), _) | (Ok(0), Some(_)) => return CloseReason::WriteError,
                    (Ok(n), Some(p)) => {
                        p.rest.advance(n);
                        unflushed = true;
                        if p.rest.is_empty() {
                            conn.queue.written(p.len);
                            pending = None;
                        }
                    }
                    (Ok(_), None) => unflushed = false,
                }
                stall.as_mut().reset(Instant::now() + settings.write_timeout);
            }
            read = reader.read_buf(&mut buf) => {
                match read {
                    Ok(0) => return CloseReason::PeerClosed,
                    Err(_) => return CloseReason::ReadError,
                    Ok(_) => {}
                }
                idle.as_mut().reset(Instant::now() + settings.idle_timeout);
                // Drain every complete frame in the buffer (a bounded number: the buffer
                // holds at most one message limit of unframed bytes).
                loop {
                    match framer.decode(&mut buf) {
                        Ok(None) => break,
                        Ok(Some(Frame::KeepAlivePing)) => {
                            metrics.keepalives.inc();
                            // RFC 5626 §3.5.1: answer a double CRLF with a single CRLF. Queued
                            // like any message: a phone that pings but never reads fills
                            // its queue and is closed.
                            if let Err(FlowError::Full) = conn.flow.send(Bytes::from_static(b"\r\n")) {
                                continue 'conn;
                            }
                        }
                        Ok(Some(Frame::KeepAlivePong)) => {}
                        Ok(Some(Frame::Message(bytes))) => match parse_captured(&conn.tap, &bytes) {
                            Ok(message) => {
                                let m = PhoneMessage { flow: id, identity: conn.identity.clone(), peer, message };
                                if events.send(PhoneEvent::Message(m)).await.is_err() {
                                    return CloseReason::CoreGone;
                                }
                            }
                            Err(e) => {
                                metrics.malformed.with_label_values(&["phone", e.label()]).inc();
                                tracing::info!(%peer, flow = %id, error = %e, "unparseable SIP message from a phone dropped");
                                if let Some(resp) = crate::sip::response::bad_request_for_raw(&bytes, Some(("pbx-edge", &format!("malformed request: {e}")))) {
                                    let ev = PhoneEvent::Unparseable { flow: id, identity: conn.identity.clone(), response: Bytes::from(resp) };
                                    if events.send(ev).await.is_err() {
                                        return CloseReason::CoreGone;
                                    }
                                }
                            }
                        },
                        Err(e) => {
                            // A stream that lost its framing cannot be resynchronised: close
                            // this connection only (RFC 3261 §18.3).
                            metrics.malformed.with_label_values(&["phone", e.label()]).inc();
                            tracing::info!(%peer, flow = %id, error = %e, "framing error: closing the phone connection");
                            return CloseReason::Framing(e.label());
                        }
                    }
                }
            }
        }
    }
}

/// Captures a framed message as received (`[hep]`; an unparseable one too: the operator
/// sees what the phone sent) and parses it.
fn parse_captured(
    tap: &LegTap,
    bytes: &[u8],
) -> Result<SipMessage, crate::sip::message::MessageError> {
    tap.received(bytes);
    SipMessage::parse(bytes)
}

#[cfg(test)]
mod tests {
    //! The connection loop over an in-memory pipe whose far end the test controls, with
    //! tokio's paused clock: timeouts elapse when every task waits, no test sleeps.
    use super::*;
    use tokio::io::DuplexStream;
    use tokio::task::JoinHandle;

    const TIMEOUT: Duration = Duration::from_secs(10);

    struct Harness {
        far: DuplexStream,
        flows: Arc<FlowTable>,
        events: mpsc::Receiver<PhoneEvent>,
        shutdown: CancellationToken,
        task: JoinHandle<CloseReason>,
        metrics: SipTransportMetrics,
    }

    /// A connection whose pipe holds `pipe` bytes in flight (the "TCP window").
    async fn start(pipe: usize, queue_bytes: usize) -> (Harness, FlowHandle) {
        let (near, far) = tokio::io::duplex(pipe);
        let flows = Arc::new(FlowTable::new());
        let (tx, mut events) = mpsc::channel(16);
        let metrics = SipTransportMetrics::register(&prometheus::Registry::new()).unwrap();
        let shutdown = CancellationToken::new();
        let settings = ConnectionSettings {
            limits: FramingLimits::default(),
            idle_timeout: Duration::from_secs(900),
            write_timeout: TIMEOUT,
            queue: QueueLimits {
                messages: WRITE_QUEUE_MESSAGES,
                bytes: queue_bytes,
            },
        };
        let task = tokio::spawn(run(
            near,
            "127.0.0.1:5061".parse().unwrap(),
            LegTap::off(),
            Arc::new(Identity::Anonymous),
            Arc::new(Vec::new()),
            flows.clone(),
            settings,
            tx,
            metrics.clone(),
            shutdown.clone(),
        ));
        let Some(PhoneEvent::Opened(flow)) = events.recv().await else {
            panic!("the connection opens its flow first");
        };
        (
            Harness {
                far,
                flows,
                events,
                shutdown,
                task,
                metrics,
            },
            flow,
        )
    }

    impl Harness {
        /// The reason the task ended with, and that the core heard of it.
        async fn ended(mut self) -> (CloseReason, SipTransportMetrics) {
            let reason = self.task.await.unwrap();
            loop {
                match self.events.recv().await {
                    Some(PhoneEvent::Closed(_)) => break,
                    Some(_) => {}
                    None => panic!("no Closed event"),
                }
            }
            assert!(self.flows.is_empty(), "the flow is removed");
            drop(self.far);
            (reason, self.metrics)
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_phone_that_stops_reading_is_closed_as_stalled() {
        let (h, flow) = start(1024, 1 << 20).await;
        // Far more than the pipe holds; the far end never reads.
        flow.send(Bytes::from(vec![b'x'; 64 * 1024])).unwrap();
        let (reason, metrics) = h.ended().await;
        assert_eq!(reason, CloseReason::WriteStalled);
        assert_eq!(
            metrics
                .connections_closed
                .with_label_values(&["write_stalled"])
                .get(),
            1
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_reader_that_keeps_up_is_not_stalled() {
        let (mut h, flow) = start(1024, 1 << 20).await;
        let total = 64 * 1024;
        flow.send(Bytes::from(vec![b'x'; total])).unwrap();
        // Reads a little, then waits most of the timeout, every time: always progress.
        let mut got = 0;
        let mut buf = [0u8; 512];
        while got < total {
            tokio::time::sleep(TIMEOUT / 2).await;
            got += h.far.read(&mut buf).await.unwrap();
        }
        assert!(!h.task.is_finished());
        h.shutdown.cancel();
        let (reason, _) = h.ended().await;
        assert_eq!(reason, CloseReason::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn revocation_closes_a_connection_whose_write_is_stuck() {
        let (h, flow) = start(1024, 1 << 20).await;
        flow.send(Bytes::from(vec![b'x'; 64 * 1024])).unwrap();
        // Let the writer fill the pipe and block, then revoke (well before the timeout).
        tokio::time::sleep(TIMEOUT / 10).await;
        assert!(!h.task.is_finished(), "still writing");
        flow.close.cancel();
        let (reason, _) = h.ended().await;
        assert_eq!(reason, CloseReason::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_closes_a_connection_whose_write_is_stuck() {
        let (h, flow) = start(1024, 1 << 20).await;
        flow.send(Bytes::from(vec![b'x'; 64 * 1024])).unwrap();
        tokio::time::sleep(TIMEOUT / 10).await;
        h.shutdown.cancel();
        let (reason, _) = h.ended().await;
        assert_eq!(reason, CloseReason::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn overflowing_the_byte_budget_closes_the_connection() {
        let (h, flow) = start(1024, 100_000).await;
        flow.send(Bytes::from(vec![b'x'; 60_000])).unwrap();
        assert_eq!(
            flow.send(Bytes::from(vec![b'y'; 60_000])),
            Err(FlowError::Full)
        );
        let (reason, metrics) = h.ended().await;
        assert_eq!(reason, CloseReason::QueueFull);
        assert_eq!(
            metrics
                .connections_closed
                .with_label_values(&["write_queue_full"])
                .get(),
            1
        );
    }

    #[tokio::test(start_paused = true)]
    async fn pings_from_a_phone_that_never_reads_pongs_do_not_pile_up() {
        let (mut h, _flow) = start(64, 1 << 20).await;
        // Each ping is answered with a 2-byte pong nobody reads: the pipe fills, the
        // pongs queue, and the connection ends (stalled or queue full), never hangs.
        let pings = b"\r\n\r\n".repeat(4096);
        // The edge may close while the pings are still being written.
        let _ = h.far.write_all(&pings).await;
        let (reason, _) = h.ended().await;
        assert!(
            matches!(reason, CloseReason::WriteStalled | CloseReason::QueueFull),
            "{reason:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_ping_is_answered_through_the_queue() {
        let (mut h, _flow) = start(1024, 1 << 20).await;
        h.far.write_all(b"\r\n\r\n").await.unwrap();
        let mut pong = [0u8; 2];
        h.far.read_exact(&mut pong).await.unwrap();
        assert_eq!(&pong, b"\r\n");
        h.shutdown.cancel();
        assert_eq!(h.ended().await.0, CloseReason::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn an_unparseable_request_goes_to_the_core_not_the_wire() {
        let (mut h, _flow) = start(1024, 1 << 20).await;
        h.far
            .write_all(
                // rsip refuses the unknown method; a 400 can still be built.
                b"FOO sip:a@b SIP/2.0\r\nVia: SIP/2.0/TLS 192.0.2.1;branch=z9hG4bK1\r\n\
                  From: <sip:101@b>;tag=1\r\nTo: <sip:a@b>\r\nCall-ID: x1\r\nCSeq: 1 FOO\r\n\
                  Content-Length: 0\r\n\r\n",
            )
            .await
            .unwrap();
        match h.events.recv().await {
            Some(PhoneEvent::Unparseable { response, .. }) => {
                assert!(response.starts_with(b"SIP/2.0 400"), "{response:?}");
            }
            other => panic!("expected the 400 for the core, got {other:?}"),
        }
        h.shutdown.cancel();
        assert_eq!(h.ended().await.0, CloseReason::Closed);
    }
}
