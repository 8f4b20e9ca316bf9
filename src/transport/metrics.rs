//! Counters of the phone-facing TLS listener.

use prometheus::{IntCounter, IntCounterVec, IntGauge, Opts, Registry};

/// TLS listener metrics, registered into the process registry by `app`.
#[derive(Clone)]
pub struct TlsMetrics {
    pub connections_active: IntGauge,
    pub handshakes_ok: IntCounter,
    /// `pbx_edge_tls_handshake_failures_total{reason, vendor}`.
    pub handshake_failures: IntCounterVec,
}

impl TlsMetrics {
    pub fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        let m = Self {
            connections_active: IntGauge::new(
                "pbx_edge_tls_connections_active",
                "Phone TLS connections currently open (handshake completed).",
            )?,
            handshakes_ok: IntCounter::new(
                "pbx_edge_tls_handshakes_total",
                "Phone TLS handshakes that completed.",
            )?,
            handshake_failures: IntCounterVec::new(
                Opts::new(
                    "pbx_edge_tls_handshake_failures_total",
                    "Phone TLS handshakes that failed, by reason and device vendor.",
                ),
                &["reason", "vendor"],
            )?,
        };
        registry.register(Box::new(m.connections_active.clone()))?;
        registry.register(Box::new(m.handshakes_ok.clone()))?;
        registry.register(Box::new(m.handshake_failures.clone()))?;
        Ok(m)
    }
}
