//! The PBX side over TCP (RFC 3261 §18): one outbound connection from the edge to
//! `pbx.address`, and a listener on `pbx.listen` for the connections the PBX opens itself
//! toward the edge Contact.
//!
//! - Outbound: opened by the first `send` that needs it (bounded by [`CONNECT_TIMEOUT`],
//!   from `pbx.listen`'s IP), reused for every request the edge originates, and reopened by
//!   the next `send` after it closed or failed. After a failed connect, sends fail at once for
//!   [`RECONNECT_BACKOFF`] so a dead PBX costs one connect attempt, not one per message.
//! - Inbound: connections from any IP other than the PBX's are closed at once and counted
//!   (`pbx_edge_sip_dropped_total{side="pbx",reason="foreign_source"}`); at most
//!   [`MAX_INBOUND`] are kept, each closed after [`INBOUND_IDLE_TIMEOUT`] without input.
//! - Every connection frames with [`StreamFramer`] (Content-Length mandatory, RFC 3261
//!   §18.3), answers RFC 5626 §3.5.1 CRLF CRLF pings with CRLF, tolerates CRLF pongs, and
//!   closes on a framing error (that connection only). Unparseable messages are counted in
//!   `pbx_edge_sip_malformed_total{side="pbx"}` and answered 400 on the same connection when a
//!   response can be built.
//! - Responses go back on the connection their request arrived on (RFC 3261 §18.2.2), found
//!   through [`RouteTable`]; when that connection is gone, on the outbound connection.
//!
//! Writes are made by the caller under a per-connection lock, bounded by [`WRITE_TIMEOUT`]: a
//! PBX that stops reading costs the sender that long once, then the connection is closed.

use super::routes::{ConnId, RouteKey, RouteTable};
use super::same_host;
use crate::capture::{Capture, IpProto, LegTap};
use crate::sip::framing::{Frame, FramingLimits, StreamFramer};
use crate::sip::message::SipMessage;
use crate::transport::metrics::SipTransportMetrics;
use bytes::BytesMut;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

/// Longest wait for the PBX to accept a connection.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Longest wait for one message to be written before the connection counts as dead.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(2);
/// After a failed connect, sends fail at once for this long.
pub const RECONNECT_BACKOFF: Duration = Duration::from_secs(1);
/// Connections the PBX may hold open to the edge at once.
pub const MAX_INBOUND: usize = 32;
/// An inbound connection that sends nothing for this long is closed (the PBX reconnects).
pub const INBOUND_IDLE_TIMEOUT: Duration = Duration::from_secs(600);

/// Noticing a PBX that vanished without closing its connections (host down, cable pulled,
/// a stateful firewall that forgot the flow): TCP keep-alive probes on idle connections and
/// TCP_USER_TIMEOUT (RFC 5482) on unacknowledged data. Without them a dead connection looks
/// writable for up to 15 minutes, and every request in that time would be lost to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeadPeerDetection {
    /// Idle time before the first probe; also the limit for unacknowledged data.
    pub idle: Duration,
}

impl DeadPeerDetection {
    /// Probes after `idle`, then 3 more `idle / 4` apart (at least 1 s).
    pub fn new(idle: Duration) -> Self {
        Self { idle }
    }

    fn interval(self) -> Duration {
        (self.idle / 4).max(Duration::from_secs(1))
    }

    /// Applies the options to `stream`.
    pub fn apply(self, stream: &TcpStream) -> std::io::Result<()> {
        let sock = socket2::SockRef::from(stream);
        sock.set_tcp_keepalive(
            &socket2::TcpKeepalive::new()
                .with_time(self.idle)
                .with_interval(self.interval())
                .with_retries(3),
        )?;
        #[cfg(any(target_os = "linux", target_os = "android"))]
        sock.set_tcp_user_timeout(Some(self.idle))?;
        Ok(())
    }
}

/// Which way a connection was opened (metric label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Direction {
    Outbound,
    Inbound,
}

impl Direction {
    fn label(self) -> &'static str {
        match self {
            Self::Outbound => "outbound",
            Self::Inbound => "inbound",
        }
    }
}

/// One open connection to the PBX; the read half belongs to its reader task.
#[derive(Debug)]
struct Conn {
    id: ConnId,
    peer: SocketAddr,
    direction: Direction,
    /// `[hep]` capture with this connection's addresses.
    tap: LegTap,
    writer: tokio::sync::Mutex<OwnedWriteHalf>,
    /// Cancelled when the connection is done (reader ended, write failed).
    closed: CancellationToken,
}

impl Conn {
    /// Writes one whole message; any failure closes the connection.
    async fn write(&self, bytes: &[u8]) -> std::io::Result<()> {
        if self.closed.is_cancelled() {
            return Err(std::io::ErrorKind::NotConnected.into());
        }
        let mut w = self.writer.lock().await;
        let result = match tokio::time::timeout(WRITE_TIMEOUT, w.write_all(bytes)).await {
            Ok(r) => r,
            Err(_) => Err(std::io::ErrorKind::TimedOut.into()),
        };
        match &result {
            Ok(()) => self.tap.sent(bytes),
            Err(_) => self.closed.cancel(),
        }
        result
    }
}

/// What readers need from `receive`: where messages go, limits, counters, shutdown.
struct ReaderCtx {
    limits: FramingLimits,
    out: mpsc::Sender<SipMessage>,
    metrics: SipTransportMetrics,
    cancel: CancellationToken,
}

#[derive(Debug, Default)]
struct Outbound {
    conn: Option<Arc<Conn>>,
    failed_at: Option<Instant>,
}

struct Shared {
    pbx: SocketAddr,
    local: SocketAddr,
    dead_peer: Option<DeadPeerDetection>,
    /// DSCP of every connection (`sip.dscp`; 0 = unmarked), set by [`TcpLink::set_dscp`].
    dscp: AtomicU8,
    /// Taken by `receive`.
    listener: Mutex<Option<TcpListener>>,
    outbound: tokio::sync::Mutex<Outbound>,
    /// Every open connection, both directions.
    conns: Mutex<HashMap<ConnId, Arc<Conn>>>,
    routes: Mutex<RouteTable>,
    /// Set once by `receive`; an outbound connection opened before waits for it to read.
    ctx: watch::Sender<Option<Arc<ReaderCtx>>>,
    next_id: AtomicU64,
    /// `[hep]` capture, set once before the first connection.
    capture: OnceLock<Capture>,
}

/// The TCP transport toward the PBX (cheap to clone).
#[derive(Clone)]
pub struct TcpLink {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for TcpLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TcpLink")
            .field("local", &self.shared.local)
            .field("pbx", &self.shared.pbx)
            .finish_non_exhaustive()
    }
}

impl TcpLink {
    /// Binds the listener on `listen`; nothing is connected yet. Every connection later gets
    /// `dead_peer` detection when set.
    pub async fn bind(
        listen: SocketAddr,
        pbx: SocketAddr,
        dead_peer: Option<DeadPeerDetection>,
    ) -> std::io::Result<Self> {
        let listener = TcpListener::bind(listen).await?;
        let local = listener.local_addr()?;
        let (ctx, _) = watch::channel(None);
        Ok(Self {
            shared: Arc::new(Shared {
                pbx,
                local,
                dead_peer,
                dscp: AtomicU8::new(0),
                listener: Mutex::new(Some(listener)),
                outbound: tokio::sync::Mutex::new(Outbound::default()),
                conns: Mutex::new(HashMap::new()),
                routes: Mutex::new(RouteTable::default()),
                ctx,
                next_id: AtomicU64::new(1),
                capture: OnceLock::new(),
            }),
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.shared.local
    }

    /// Marks the listener and every connection opened or accepted from now on with `dscp`.
    pub fn set_dscp(&self, dscp: u8) -> std::io::Result<()> {
        if let Ok(listener) = self.shared.listener.lock() {
            if let Some(l) = listener.as_ref() {
                crate::qos::mark(l, dscp)?;
            }
        }
        self.shared.dscp.store(dscp, Ordering::Relaxed);
        Ok(())
    }

    /// Captures every message on every connection opened from now on (`[hep]`).
    pub fn set_capture(&self, capture: Capture) {
        let _ = self.shared.capture.set(capture);
    }

    pub fn pbx_addr(&self) -> SocketAddr {
        self.shared.pbx
    }

    /// Sends one message: a response to a request that arrived on a connection still open
    /// goes back on it (RFC 3261 §18.2.2), everything else on the outbound connection.
    pub async fn send(&self, bytes: &[u8]) -> std::io::Result<()> {
        if bytes.starts_with(b"SIP/2.0 ") {
            if let Some(conn) = self.route_for_response(bytes) {
                match conn.write(bytes).await {
                    Ok(()) => return Ok(()),
                    Err(e) => {
                        tracing::debug!(peer = %conn.peer, error = %e, "PBX connection of the request failed: response goes on the outbound connection");
                    }
                }
            }
        }
        self.send_outbound(bytes).await
    }

    fn route_for_response(&self, bytes: &[u8]) -> Option<Arc<Conn>> {
        let response = SipMessage::parse(bytes).ok()?;
        let key = RouteKey::of(&response)?;
        let is_final = response.status().is_some_and(|s| s >= 200);
        let id = self
            .shared
            .routes
            .lock()
            .ok()?
            .route(&key, is_final, Instant::now())?;
        let conn = self.shared.conns.lock().ok()?.get(&id).cloned()?;
        (!conn.closed.is_cancelled()).then_some(conn)
    }

    async fn send_outbound(&self, bytes: &[u8]) -> std::io::Result<()> {
        let (conn, fresh) = self.outbound().await?;
        match conn.write(bytes).await {
            Ok(()) => Ok(()),
            // A reused connection may have died since its last use: one new attempt.
            Err(e) if !fresh => {
                tracing::info!(error = %e, "PBX connection lost: reconnecting");
                let (conn, _) = self.outbound().await?;
                conn.write(bytes).await
            }
            Err(e) => Err(e),
        }
    }

    /// The open outbound connection, or a new one (`true` = just opened).
    async fn outbound(&self) -> std::io::Result<(Arc<Conn>, bool)> {
        let mut out = self.shared.outbound.lock().await;
        if let Some(c) = &out.conn {
            if !c.closed.is_cancelled() {
                return Ok((c.clone(), false));
            }
        }
        out.conn = None;
        if let Some(at) = out.failed_at {
            if at.elapsed() < RECONNECT_BACKOFF {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::NotConnected,
                    "the last connect to the PBX failed moments ago",
                ));
            }
        }
        match self.connect().await {
            Ok(stream) => {
                out.failed_at = None;
                let conn = self.adopt(stream, Direction::Outbound);
                out.conn = Some(conn.clone());
                Ok((conn, true))
            }
            Err(e) => {
                out.failed_at = Some(Instant::now());
                tracing::warn!(pbx = %self.shared.pbx, error = %e, "cannot connect to the PBX");
                Err(e)
            }
        }
    }

    async fn connect(&self) -> std::io::Result<TcpStream> {
        let pbx = self.shared.pbx;
        let socket = if pbx.is_ipv4() {
            TcpSocket::new_v4()?
        } else {
            TcpSocket::new_v6()?
        };
        // From the configured local address (the PBX may allow-list it); any port.
        let local = self.shared.local.ip();
        if !local.is_unspecified() && local.is_ipv4() == pbx.is_ipv4() {
            socket.bind(SocketAddr::new(local, 0))?;
        }
        // Before connecting, so the SYN is marked too.
        crate::qos::mark(&socket, self.shared.dscp.load(Ordering::Relaxed))?;
        let stream = tokio::time::timeout(CONNECT_TIMEOUT, socket.connect(pbx))
            .await
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))??;
        let _ = stream.set_nodelay(true);
        Ok(stream)
    }

    /// Registers a connection and starts its reader.
    fn adopt(&self, stream: TcpStream, direction: Direction) -> Arc<Conn> {
        let peer = stream.peer_addr().unwrap_or(self.shared.pbx);
        if let Some(d) = self.shared.dead_peer {
            if let Err(e) = d.apply(&stream) {
                // The connection still works, only a vanished PBX is noticed later.
                tracing::warn!(%peer, error = %e, "cannot set TCP keep-alive toward the PBX");
            }
        }
        let dscp = self.shared.dscp.load(Ordering::Relaxed);
        if let Err(e) = crate::qos::mark(&stream, dscp) {
            tracing::warn!(%peer, dscp, error = %e, "cannot set the DSCP of a PBX connection");
        }
        let local = stream.local_addr().unwrap_or(self.shared.local);
        let tap = match self.shared.capture.get() {
            Some(c) => c.tap(IpProto::Tcp, local, peer),
            None => LegTap::off(),
        };
        let (read, write) = stream.into_split();
        let conn = Arc::new(Conn {
            id: self.shared.next_id.fetch_add(1, Ordering::Relaxed),
            peer,
            direction,
            tap,
            writer: tokio::sync::Mutex::new(write),
            closed: CancellationToken::new(),
        });
        if let Ok(mut conns) = self.shared.conns.lock() {
            conns.insert(conn.id, conn.clone());
        }
        tracing::info!(%peer, direction = direction.label(), "PBX connection open");
        tokio::spawn(self.clone().read_loop(conn.clone(), read, direction));
        conn
    }

    fn inbound_count(&self) -> usize {
        self.shared
            .conns
            .lock()
            .map(|c| {
                c.values()
                    .filter(|c| c.direction == Direction::Inbound)
                    .count()
            })
            .unwrap_or(0)
    }

    /// Accepts PBX connections until `cancel`; see [`super::PbxLink::receive`].
    pub async fn receive(
        self,
        limits: FramingLimits,
        out: mpsc::Sender<SipMessage>,
        metrics: SipTransportMetrics,
        cancel: CancellationToken,
    ) {
        let listener = self.shared.listener.lock().ok().and_then(|mut l| l.take());
        let Some(listener) = listener else {
            tracing::error!("the PBX TCP listener is already in use");
            return;
        };
        self.shared.ctx.send_replace(Some(Arc::new(ReaderCtx {
            limits,
            out,
            metrics: metrics.clone(),
            cancel: cancel.clone(),
        })));
        loop {
            let (stream, peer) = tokio::select! {
                _ = cancel.cancelled() => break,
                r = listener.accept() => match r {
                    Ok(v) => v,
                    Err(e) => {
                        // Out of file descriptors and the like: do not spin.
                        tracing::warn!(error = %e, "PBX listener accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
            };
            if !same_host(peer.ip(), self.shared.pbx.ip()) {
                metrics
                    .dropped
                    .with_label_values(&["pbx", "foreign_source"])
                    .inc();
                tracing::info!(%peer, "TCP connection from a source other than the PBX closed");
                drop(stream);
                continue;
            }
            if self.inbound_count() >= MAX_INBOUND {
                metrics
                    .dropped
                    .with_label_values(&["pbx", "too_many_connections"])
                    .inc();
                tracing::warn!(%peer, limit = MAX_INBOUND, "PBX connection refused: too many open");
                drop(stream);
                continue;
            }
            let _ = stream.set_nodelay(true);
            self.adopt(stream, Direction::Inbound);
        }
        // Close every connection (their readers see the cancel too).
        let conns: Vec<Arc<Conn>> = self
            .shared
            .conns
            .lock()
            .map(|c| c.values().cloned().collect())
            .unwrap_or_default();
        for c in conns {
            c.closed.cancel();
        }
    }

    /// Reads one connection until it closes: frames, answers keep-alives, remembers where
    /// requests came from, hands messages to the core.
    async fn read_loop(self, conn: Arc<Conn>, mut read: OwnedReadHalf, direction: Direction) {
        let mut ctx_rx = self.shared.ctx.subscribe();
        let ctx = tokio::select! {
            _ = conn.closed.cancelled() => None,
            c = ctx_rx.wait_for(Option::is_some) => c.ok().and_then(|c| c.clone()),
        };
        let reason = match ctx {
            Some(ctx) => {
                let gauge = ctx
                    .metrics
                    .pbx_connections
                    .with_label_values(&[direction.label()]);
                gauge.inc();
                let reason = self.read_frames(&conn, &mut read, direction, &ctx).await;
                gauge.dec();
                reason
            }
            None => "closed_by_edge",
        };
        conn.closed.cancel();
        if let Ok(mut conns) = self.shared.conns.lock() {
            conns.remove(&conn.id);
        }
        if let Ok(mut routes) = self.shared.routes.lock() {
            routes.forget_connection(conn.id);
        }
        let mut w = conn.writer.lock().await;
        let _ = tokio::time::timeout(WRITE_TIMEOUT, w.shutdown()).await;
        tracing::info!(peer = %conn.peer, direction = direction.label(), reason, "PBX connection closed");
    }

    async fn read_frames(
        &self,
        conn: &Conn,
        read: &mut OwnedReadHalf,
        direction: Direction,
        ctx: &ReaderCtx,
    ) -> &'static str {
        let mut framer = StreamFramer::new(ctx.limits);
        let mut buf = BytesMut::with_capacity(8192);
        let idle = tokio::time::sleep(INBOUND_IDLE_TIMEOUT);
        tokio::pin!(idle);
        loop {
            tokio::select! {
                _ = ctx.cancel.cancelled() => return "shutdown",
                _ = conn.closed.cancelled() => return "closed_by_edge",
                _ = &mut idle, if direction == Direction::Inbound => return "idle",
                r = read.read_buf(&mut buf) => match r {
                    Ok(0) => return "peer_closed",
                    Err(_) => return "read_error",
                    Ok(_) => {}
                },
            }
            idle.as_mut()
                .reset(tokio::time::Instant::now() + INBOUND_IDLE_TIMEOUT);
            // Every complete frame in the buffer (at most one message limit of unframed bytes
            // stays buffered).
            loop {
                let bytes = match framer.decode(&mut buf) {
                    Ok(None) => break,
                    Ok(Some(Frame::KeepAlivePing)) => {
                        // RFC 5626 §3.5.1: a double CRLF is answered with one CRLF.
                        if conn.write(b"\r\n").await.is_err() {
                            return "write_error";
                        }
                        continue;
                    }
                    Ok(Some(Frame::KeepAlivePong)) => continue,
                    Ok(Some(Frame::Message(bytes))) => {
                        conn.tap.received(&bytes);
                        bytes
                    }
                    Err(e) => {
                        // The stream's framing is lost: close this connection only
                        // (RFC 3261 §18.3).
                        ctx.metrics
                            .malformed
                            .with_label_values(&["pbx", e.label()])
                            .inc();
                        tracing::info!(peer = %conn.peer, error = %e, "framing error: closing the PBX connection");
                        return "framing_error";
                    }
                };
                match SipMessage::parse(&bytes) {
                    Ok(m) => {
                        if m.is_request() && m.method() != Some(crate::sip::message::Method::Ack) {
                            if let (Some(key), Ok(mut routes)) =
                                (RouteKey::of(&m), self.shared.routes.lock())
                            {
                                routes.remember(key, conn.id, Instant::now());
                            }
                        }
                        if ctx.out.send(m).await.is_err() {
                            return "shutdown";
                        }
                    }
                    Err(e) => {
                        ctx.metrics
                            .malformed
                            .with_label_values(&["pbx", e.label()])
                            .inc();
                        tracing::info!(peer = %conn.peer, error = %e, "unparseable SIP message from the PBX dropped");
                        if let Some(resp) = crate::sip::response::bad_request_for_raw(
                            &bytes,
                            Some(("pbx-edge", &format!("malformed request: {e}"))),
                        ) {
                            if conn.write(&resp).await.is_err() {
                                return "write_error";
                            }
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_listener_and_each_connection_carry_the_dscp() {
        let pbx = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let link = TcpLink::bind(any, pbx.local_addr().unwrap(), None)
            .await
            .unwrap();
        link.set_dscp(24).unwrap();
        {
            let listener = link.shared.listener.lock().unwrap();
            assert_eq!(crate::qos::marking(listener.as_ref().unwrap()).unwrap(), 24);
        }
        // The first send opens the outbound connection.
        tokio::time::timeout(Duration::from_secs(5), link.send(b"\r\n\r\n"))
            .await
            .expect("connect within the bound")
            .unwrap();
        let conns: Vec<Arc<Conn>> = link
            .shared
            .conns
            .lock()
            .unwrap()
            .values()
            .cloned()
            .collect();
        assert_eq!(conns.len(), 1);
        let writer = conns[0].writer.lock().await;
        let stream: &TcpStream = writer.as_ref();
        assert_eq!(crate::qos::marking(stream).unwrap(), 24);
    }

    #[tokio::test]
    async fn dead_peer_detection_sets_keepalive_and_user_timeout() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        DeadPeerDetection::new(Duration::from_secs(20))
            .apply(&client)
            .unwrap();
        let sock = socket2::SockRef::from(&client);
        assert!(sock.keepalive().unwrap());
        assert_eq!(sock.tcp_keepalive_time().unwrap(), Duration::from_secs(20));
        assert_eq!(
            sock.tcp_keepalive_interval().unwrap(),
            Duration::from_secs(5)
        );
        assert_eq!(sock.tcp_keepalive_retries().unwrap(), 3);
        assert_eq!(
            sock.tcp_user_timeout().unwrap(),
            Some(Duration::from_secs(20))
        );
        // Short settings never ask the kernel for a zero interval.
        assert_eq!(
            DeadPeerDetection::new(Duration::from_secs(2)).interval(),
            Duration::from_secs(1)
        );
    }
}
