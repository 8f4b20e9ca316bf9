//! Flows: each phone TLS connection is a flow (RFC 5626 §3), the only path on which requests
//! from the PBX reach that phone. The table maps a flow id to a handle that queues outbound
//! bytes on the connection's write queue, bounded in messages and in bytes.
//!
//! A full queue means the phone has not read for a while (its TCP window is closed and the
//! connection task cannot write). Dropping the message would silently break SIP state (a lost
//! 200 OK or BYE leaves a call half up), so the connection is closed instead: the phone
//! re-registers on a new connection, and its calls end cleanly on the PBX side. Kamailio does
//! the same: beyond `tcp_conn_wq_max` queueing "would result in an error and in the connection
//! being closed (too slow)".

use crate::identity::Identity;
use bytes::Bytes;
use dashmap::DashMap;
use rustls_pki_types::CertificateDer;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Identifies one phone connection for the lifetime of the process (never reused).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FlowId(pub u64);

impl std::fmt::Display for FlowId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "flow-{}", self.0)
    }
}

/// Why bytes could not be queued on a flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FlowError {
    /// The connection is closed (or was never known).
    #[error("flow is gone")]
    Gone,
    /// The connection's write queue is full (messages or bytes): the phone does not read.
    /// The message is dropped and the connection closed as stuck, rather than letting one
    /// slow phone hold memory for everyone or silently lose messages.
    #[error("flow write queue is full: connection closed as stuck")]
    Full,
}

impl FlowError {
    pub fn label(&self) -> &'static str {
        match self {
            Self::Gone => "gone",
            Self::Full => "full",
        }
    }
}

/// What the rest of the edge knows about a live phone connection.
#[derive(Debug, Clone)]
pub struct FlowHandle {
    pub id: FlowId,
    /// The phone's address as seen on the TCP connection.
    pub peer: SocketAddr,
    /// Who the certificate says the phone is.
    pub identity: Arc<Identity>,
    /// The certificate chain the phone presented (empty when anonymous), for re-checking the
    /// verdict after a reload (CRL, deny-list, inventory).
    pub certificates: Arc<Vec<CertificateDer<'static>>>,
    tx: mpsc::Sender<Bytes>,
    queue: Arc<QueueState>,
    /// Cancelled to close the connection (revocation, shutdown).
    pub close: CancellationToken,
}

/// How much one connection's write queue may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueLimits {
    /// Messages queued (a keep-alive pong counts as one).
    pub messages: usize,
    /// Bytes queued, including the message being written (`sip.write_queue_bytes`).
    pub bytes: usize,
}

/// Shared between the senders of a flow and its connection task.
#[derive(Debug)]
struct QueueState {
    /// Bytes queued or being written.
    bytes: AtomicUsize,
    limit: usize,
    /// Set when a send found the queue full (the close reason).
    overflowed: AtomicBool,
}

impl FlowHandle {
    /// Queues `bytes` for the phone. A full queue closes the connection (see the module
    /// doc) and returns [`FlowError::Full`].
    pub fn send(&self, bytes: Bytes) -> Result<(), FlowError> {
        let len = bytes.len();
        let before = self.queue.bytes.fetch_add(len, Ordering::AcqRel);
        if before.saturating_add(len) > self.queue.limit {
            self.queue.bytes.fetch_sub(len, Ordering::AcqRel);
            return Err(self.overflow());
        }
        self.tx.try_send(bytes).map_err(|e| {
            self.queue.bytes.fetch_sub(len, Ordering::AcqRel);
            match e {
                mpsc::error::TrySendError::Full(_) => self.overflow(),
                mpsc::error::TrySendError::Closed(_) => FlowError::Gone,
            }
        })
    }

    fn overflow(&self) -> FlowError {
        self.queue.overflowed.store(true, Ordering::Release);
        self.close.cancel();
        FlowError::Full
    }
}

/// The connection task's end of a flow's write queue.
#[derive(Debug)]
pub struct FlowQueue {
    rx: mpsc::Receiver<Bytes>,
    queue: Arc<QueueState>,
}

impl FlowQueue {
    /// The next message to write (cancel safe); `None` once every handle is gone.
    pub async fn recv(&mut self) -> Option<Bytes> {
        self.rx.recv().await
    }

    /// A message of `len` bytes has been written: its bytes leave the queue's budget.
    pub fn written(&self, len: usize) {
        self.queue.bytes.fetch_sub(len, Ordering::AcqRel);
    }

    /// Whether the connection is being closed because its queue overflowed.
    pub fn overflowed(&self) -> bool {
        self.queue.overflowed.load(Ordering::Acquire)
    }

    /// Bytes queued or being written (for tests).
    pub fn queued_bytes(&self) -> usize {
        self.queue.bytes.load(Ordering::Acquire)
    }
}

/// Every live phone connection.
#[derive(Debug, Default)]
pub struct FlowTable {
    flows: DashMap<FlowId, FlowHandle>,
    next: AtomicU64,
}

impl FlowTable {
    pub fn new() -> Self {
        Self {
            flows: DashMap::new(),
            next: AtomicU64::new(1),
        }
    }

    /// Registers a new connection; returns its handle and the receiving end of its write queue.
    pub fn open(
        &self,
        peer: SocketAddr,
        identity: Arc<Identity>,
        certificates: Arc<Vec<CertificateDer<'static>>>,
        limits: QueueLimits,
        close: CancellationToken,
    ) -> (FlowHandle, FlowQueue) {
        let id = FlowId(self.next.fetch_add(1, Ordering::Relaxed));
        let (tx, rx) = mpsc::channel(limits.messages.max(1));
        let queue = Arc::new(QueueState {
            bytes: AtomicUsize::new(0),
            limit: limits.bytes,
            overflowed: AtomicBool::new(false),
        });
        let handle = FlowHandle {
            id,
            peer,
            identity,
            certificates,
            tx,
            queue: queue.clone(),
            close,
        };
        self.flows.insert(id, handle.clone());
        (handle, FlowQueue { rx, queue })
    }

    pub fn remove(&self, id: FlowId) {
        self.flows.remove(&id);
    }

    pub fn get(&self, id: FlowId) -> Option<FlowHandle> {
        self.flows.get(&id).map(|h| h.clone())
    }

    pub fn send(&self, id: FlowId, bytes: Bytes) -> Result<(), FlowError> {
        self.get(id).ok_or(FlowError::Gone)?.send(bytes)
    }

    pub fn len(&self) -> usize {
        self.flows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.flows.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ONE: QueueLimits = QueueLimits {
        messages: 1,
        bytes: 1 << 20,
    };

    #[tokio::test]
    async fn send_reaches_the_queue_until_removed() {
        let t = FlowTable::new();
        let peer = "127.0.0.1:1".parse().unwrap();
        let (h, mut q) = t.open(
            peer,
            Arc::new(Identity::Anonymous),
            Arc::new(Vec::new()),
            ONE,
            CancellationToken::new(),
        );
        t.send(h.id, Bytes::from_static(b"a")).unwrap();
        assert_eq!(q.recv().await.unwrap(), Bytes::from_static(b"a"));
        t.remove(h.id);
        assert_eq!(t.send(h.id, Bytes::from_static(b"c")), Err(FlowError::Gone));
        let (h2, _) = t.open(
            peer,
            Arc::new(Identity::Anonymous),
            Arc::new(Vec::new()),
            ONE,
            CancellationToken::new(),
        );
        assert_ne!(h.id, h2.id, "ids are never reused");
    }

    #[tokio::test]
    async fn too_many_messages_close_the_connection() {
        let t = FlowTable::new();
        let close = CancellationToken::new();
        let (h, q) = t.open(
            "127.0.0.1:1".parse().unwrap(),
            Arc::new(Identity::Anonymous),
            Arc::new(Vec::new()),
            ONE,
            close.clone(),
        );
        h.send(Bytes::from_static(b"a")).unwrap();
        assert!(!close.is_cancelled());
        assert_eq!(h.send(Bytes::from_static(b"b")), Err(FlowError::Full));
        assert!(close.is_cancelled(), "a full queue closes the connection");
        assert!(q.overflowed());
        assert_eq!(q.queued_bytes(), 1, "the refused message holds no budget");
    }

    #[tokio::test]
    async fn the_queue_is_bounded_in_bytes_until_written() {
        let t = FlowTable::new();
        let close = CancellationToken::new();
        let (h, mut q) = t.open(
            "127.0.0.1:1".parse().unwrap(),
            Arc::new(Identity::Anonymous),
            Arc::new(Vec::new()),
            QueueLimits {
                messages: 100,
                bytes: 10,
            },
            close.clone(),
        );
        h.send(Bytes::from_static(b"123456")).unwrap();
        // Taken out of the channel but not yet written: still counts.
        let m = q.recv().await.unwrap();
        h.send(Bytes::from_static(b"1234")).unwrap();
        assert_eq!(q.queued_bytes(), 10);
        assert!(!close.is_cancelled());
        q.written(m.len());
        h.send(Bytes::from_static(b"123456")).unwrap();
        assert!(!close.is_cancelled());
        assert_eq!(h.send(Bytes::from_static(b"1")), Err(FlowError::Full));
        assert!(close.is_cancelled());
        assert!(q.overflowed());
    }
}
