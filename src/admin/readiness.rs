//! Readiness as a latch: every component that must be up before traffic is taken holds a
//! [`Latch`] and releases it when it is ready; the process is ready when none is held and it
//! is not draining (linkerd's admin readiness works the same way).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

#[derive(Debug, Default)]
struct Inner {
    pending: AtomicUsize,
    draining: AtomicBool,
}

/// Shared readiness state; cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Readiness(Arc<Inner>);

/// Held by a component until it is ready; released explicitly or on drop.
#[derive(Debug)]
pub struct Latch {
    inner: Option<Arc<Inner>>,
}

impl Readiness {
    pub fn new() -> Self {
        Self::default()
    }

    /// A latch that keeps the process not-ready until released.
    pub fn latch(&self) -> Latch {
        self.0.pending.fetch_add(1, Ordering::SeqCst);
        Latch {
            inner: Some(self.0.clone()),
        }
    }

    /// Marks the process as shutting down: not ready from now on.
    pub fn set_draining(&self) {
        self.0.draining.store(true, Ordering::SeqCst);
    }

    pub fn is_ready(&self) -> bool {
        self.0.pending.load(Ordering::SeqCst) == 0 && !self.0.draining.load(Ordering::SeqCst)
    }
}

impl Latch {
    pub fn release(mut self) {
        self.release_inner();
    }

    fn release_inner(&mut self) {
        if let Some(inner) = self.inner.take() {
            inner.pending.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

impl Drop for Latch {
    fn drop(&mut self) {
        self.release_inner();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_only_when_every_latch_is_released_and_not_draining() {
        let r = Readiness::new();
        assert!(r.is_ready());
        let a = r.latch();
        let b = r.latch();
        assert!(!r.is_ready());
        a.release();
        assert!(!r.is_ready());
        drop(b);
        assert!(r.is_ready());
        r.set_draining();
        assert!(!r.is_ready());
    }
}
