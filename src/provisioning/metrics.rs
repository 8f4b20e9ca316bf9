//! Provisioning gateway metrics, registered into the process registry by `app`.

use prometheus::{IntCounter, IntCounterVec, IntGauge, Opts, Registry};

/// Every `outcome` label of `pbx_edge_provisioning_requests_total`, exported at 0 from the
/// start so dashboards see the series before the first request.
pub const OUTCOMES: [&str; 9] = [
    "served",
    "not_modified",
    "not_found",
    "denied",
    "bad_request",
    "method_not_allowed",
    "upstream_error",
    "upstream_timeout",
    "error",
];

#[derive(Clone)]
pub struct ProvisioningMetrics {
    /// `pbx_edge_provisioning_requests_total{outcome}`.
    pub requests: IntCounterVec,
    /// `pbx_edge_provisioning_connections_active`: HTTPS connections open (handshake done).
    pub connections_active: IntGauge,
    /// `pbx_edge_provisioning_handshakes_total`: completed handshakes. Refused handshakes are
    /// counted with the SIP listener's in `pbx_edge_tls_handshake_failures_total{reason,vendor}`
    /// (same verifier, same counters).
    pub handshakes_ok: IntCounter,
}

impl ProvisioningMetrics {
    pub fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        let m = Self {
            requests: IntCounterVec::new(
                Opts::new(
                    "pbx_edge_provisioning_requests_total",
                    "HTTPS provisioning requests, by outcome.",
                ),
                &["outcome"],
            )?,
            connections_active: IntGauge::new(
                "pbx_edge_provisioning_connections_active",
                "HTTPS provisioning connections currently open (handshake completed).",
            )?,
            handshakes_ok: IntCounter::new(
                "pbx_edge_provisioning_handshakes_total",
                "HTTPS provisioning handshakes that completed.",
            )?,
        };
        registry.register(Box::new(m.requests.clone()))?;
        registry.register(Box::new(m.connections_active.clone()))?;
        registry.register(Box::new(m.handshakes_ok.clone()))?;
        for outcome in OUTCOMES {
            m.requests.with_label_values(&[outcome]);
        }
        Ok(m)
    }
}
