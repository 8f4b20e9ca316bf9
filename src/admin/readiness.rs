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

/// `pbx_edge_ready`: 1 while `/readyz` answers 200, 0 while starting or draining; read at
/// scrape time. Alerting on it (with `up` for a process that is gone) catches an edge a load
/// balancer has taken out of rotation.
#[derive(Debug)]
pub struct ReadyGauge {
    readiness: Readiness,
    gauge: prometheus::IntGauge,
}

impl ReadyGauge {
    pub fn new(readiness: Readiness) -> prometheus::Result<Self> {
        let gauge = prometheus::IntGauge::new(
            "pbx_edge_ready",
            "1 when the edge is ready (GET /readyz answers 200), 0 while starting or draining.",
        )?;
        Ok(Self { readiness, gauge })
    }
}

impl prometheus::core::Collector for ReadyGauge {
    fn desc(&self) -> Vec<&prometheus::core::Desc> {
        self.gauge.desc()
    }

    fn collect(&self) -> Vec<prometheus::proto::MetricFamily> {
        self.gauge.set(i64::from(self.readiness.is_ready()));
        self.gauge.collect()
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

    #[test]
    fn the_ready_gauge_follows_readiness_at_each_scrape() {
        use prometheus::core::Collector;
        let r = Readiness::new();
        let gauge = ReadyGauge::new(r.clone()).unwrap();
        let value = |g: &ReadyGauge| g.collect()[0].get_metric()[0].get_gauge().value();
        let latch = r.latch();
        assert_eq!(value(&gauge), 0.0);
        latch.release();
        assert_eq!(value(&gauge), 1.0);
        r.set_draining();
        assert_eq!(value(&gauge), 0.0);
    }
}
