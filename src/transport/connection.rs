//! One phone TLS connection: frames SIP messages out of the byte stream (RFC 3261 §18.3),
//! answers RFC 5626 §3.5.1 keep-alives, writes what the flow's bounded queue holds, closes on
//! idle, framing errors, revocation or shutdown. Every message it delivers carries the
//! connection's flow id and device identity.

use super::flow::{FlowHandle, FlowId, FlowTable};
use super::metrics::SipTransportMetrics;
use crate::identity::Identity;
use crate::sip::framing::{Frame, FramingLimits, StreamFramer};
use crate::sip::message::SipMessage;
use bytes::BytesMut;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Outbound messages a phone connection may have queued before it counts as stuck.
pub const WRITE_QUEUE: usize = 256;

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
    Closed(FlowId),
}

/// Settings of phone connections.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionSettings {
    pub limits: FramingLimits,
    pub idle_timeout: Duration,
}

/// Why a connection ended (log field and metric label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    PeerClosed,
    ReadError,
    WriteError,
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
            Self::Idle => "idle",
            Self::Framing(_) => "framing_error",
            Self::Closed => "closed_by_edge",
            Self::CoreGone => "shutdown",
        }
    }
}

/// Runs a phone connection until it ends; the flow is removed from `flows` on return.
#[allow(clippy::too_many_arguments)]
pub async fn run<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    peer: SocketAddr,
    identity: Arc<Identity>,
    certificates: Arc<Vec<rustls_pki_types::CertificateDer<'static>>>,
    flows: Arc<FlowTable>,
    settings: ConnectionSettings,
    events: mpsc::Sender<PhoneEvent>,
    metrics: SipTransportMetrics,
    shutdown: CancellationToken,
) -> CloseReason {
    let close = shutdown.child_token();
    let (flow, mut queue) = flows.open(
        peer,
        identity.clone(),
        certificates,
        WRITE_QUEUE,
        close.clone(),
    );
    let id = flow.id;
    if events.send(PhoneEvent::Opened(flow)).await.is_err() {
        flows.remove(id);
        return CloseReason::CoreGone;
    }
    let mut framer = StreamFramer::new(settings.limits);
    let mut buf = BytesMut::with_capacity(8192);
    let idle = tokio::time::sleep(settings.idle_timeout);
    tokio::pin!(idle);
    let reason = 'conn: loop {
        tokio::select! {
            _ = close.cancelled() => break CloseReason::Closed,
            _ = &mut idle => break CloseReason::Idle,
            out = queue.recv() => {
                let Some(bytes) = out else { break CloseReason::Closed };
                if stream.write_all(&bytes).await.is_err() {
                    break CloseReason::WriteError;
                }
            }
            read = stream.read_buf(&mut buf) => {
                match read {
                    Ok(0) => break CloseReason::PeerClosed,
                    Err(_) => break CloseReason::ReadError,
                    Ok(_) => {}
                }
                idle.as_mut().reset(tokio::time::Instant::now() + settings.idle_timeout);
                // Drain every complete frame in the buffer (a bounded number: the buffer
                // holds at most one message limit of unframed bytes).
                loop {
                    match framer.decode(&mut buf) {
                        Ok(None) => break,
                        Ok(Some(Frame::KeepAlivePing)) => {
                            metrics.keepalives.inc();
                            // RFC 5626 §3.5.1: answer a double CRLF with a single CRLF.
                            if stream.write_all(b"\r\n").await.is_err() {
                                break 'conn CloseReason::WriteError;
                            }
                        }
                        Ok(Some(Frame::KeepAlivePong)) => {}
                        Ok(Some(Frame::Message(bytes))) => match SipMessage::parse(&bytes) {
                            Ok(message) => {
                                let m = PhoneMessage { flow: id, identity: identity.clone(), peer, message };
                                if events.send(PhoneEvent::Message(m)).await.is_err() {
                                    break 'conn CloseReason::CoreGone;
                                }
                            }
                            Err(e) => {
                                metrics.malformed.with_label_values(&["phone", e.label()]).inc();
                                tracing::info!(%peer, flow = %id, error = %e, "unparseable SIP message from a phone dropped");
                                if let Some(resp) = crate::sip::response::bad_request_for_raw(&bytes, Some(("pbx-edge", &format!("malformed request: {e}")))) {
                                    if stream.write_all(&resp).await.is_err() {
                                        break 'conn CloseReason::WriteError;
                                    }
                                }
                            }
                        },
                        Err(e) => {
                            // A stream that lost its framing cannot be resynchronised: close
                            // this connection only (RFC 3261 §18.3).
                            metrics.malformed.with_label_values(&["phone", e.label()]).inc();
                            tracing::info!(%peer, flow = %id, error = %e, "framing error: closing the phone connection");
                            break 'conn CloseReason::Framing(e.label());
                        }
                    }
                }
            }
        }
    };
    flows.remove(id);
    let _ = stream.shutdown().await;
    let _ = events.send(PhoneEvent::Closed(id)).await;
    metrics
        .connections_closed
        .with_label_values(&[reason.label()])
        .inc();
    tracing::info!(%peer, flow = %id, reason = reason.label(), "phone connection closed");
    reason
}
