//! Flows: each phone TLS connection is a flow (RFC 5626 §3), the only path on which requests
//! from the PBX reach that phone. The table maps a flow id to a handle that queues outbound
//! bytes on the connection's bounded write queue.

use crate::identity::Identity;
use bytes::Bytes;
use dashmap::DashMap;
use rustls_pki_types::CertificateDer;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
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
    /// The connection's write queue is full: the phone does not read. The message is dropped
    /// rather than letting one slow phone hold memory for everyone.
    #[error("flow write queue is full")]
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
    /// Cancelled to close the connection (revocation, shutdown).
    pub close: CancellationToken,
}

impl FlowHandle {
    pub fn send(&self, bytes: Bytes) -> Result<(), FlowError> {
        self.tx.try_send(bytes).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => FlowError::Full,
            mpsc::error::TrySendError::Closed(_) => FlowError::Gone,
        })
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
        queue: usize,
        close: CancellationToken,
    ) -> (FlowHandle, mpsc::Receiver<Bytes>) {
        let id = FlowId(self.next.fetch_add(1, Ordering::Relaxed));
        let (tx, rx) = mpsc::channel(queue);
        let handle = FlowHandle {
            id,
            peer,
            identity,
            certificates,
            tx,
            close,
        };
        self.flows.insert(id, handle.clone());
        (handle, rx)
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

    /// Closes every connection for which `pred` holds (revocation); returns how many.
    pub fn close_where(&self, pred: impl Fn(&FlowHandle) -> bool) -> usize {
        let mut n = 0;
        for f in self.flows.iter() {
            if pred(&f) {
                f.close.cancel();
                n += 1;
            }
        }
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn send_reaches_the_queue_until_removed_or_full() {
        let t = FlowTable::new();
        let peer = "127.0.0.1:1".parse().unwrap();
        let (h, mut rx) = t.open(
            peer,
            Arc::new(Identity::Anonymous),
            Arc::new(Vec::new()),
            1,
            CancellationToken::new(),
        );
        t.send(h.id, Bytes::from_static(b"a")).unwrap();
        assert_eq!(t.send(h.id, Bytes::from_static(b"b")), Err(FlowError::Full));
        assert_eq!(rx.recv().await.unwrap(), Bytes::from_static(b"a"));
        t.remove(h.id);
        assert_eq!(t.send(h.id, Bytes::from_static(b"c")), Err(FlowError::Gone));
        let (h2, _) = t.open(
            peer,
            Arc::new(Identity::Anonymous),
            Arc::new(Vec::new()),
            1,
            CancellationToken::new(),
        );
        assert_ne!(h.id, h2.id, "ids are never reused");
    }

    #[test]
    fn close_where_cancels_matching_connections() {
        let t = FlowTable::new();
        let peer = "127.0.0.1:1".parse().unwrap();
        let (h, _rx) = t.open(
            peer,
            Arc::new(Identity::Anonymous),
            Arc::new(Vec::new()),
            1,
            CancellationToken::new(),
        );
        assert_eq!(
            t.close_where(|f| matches!(*f.identity, Identity::Anonymous)),
            1
        );
        assert!(h.close.is_cancelled());
    }
}
