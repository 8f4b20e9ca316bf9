//! SIP core metrics.

use prometheus::{Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry};

#[derive(Clone)]
pub struct CoreMetrics {
    /// `pbx_edge_sip_requests_total{side, method}`: requests received.
    pub requests: IntCounterVec,
    /// `pbx_edge_sip_responses_total{side, code}`: responses sent toward each side.
    pub responses: IntCounterVec,
    /// `pbx_edge_sip_denied_total{reason}`: requests refused 403 by MAC authorization or by
    /// the registration binding limit (`too_many_bindings`); calls refused by the per-device
    /// caps (`device_call_limit` 486, `device_port_limit` 503).
    pub denied: IntCounterVec,
    /// `pbx_edge_sip_transaction_timeouts_total{side}`: the other side never answered.
    pub timeouts: IntCounterVec,
    /// `pbx_edge_sip_rate_limited_total`: phone requests refused because their device
    /// exceeded `sip.phone_requests_per_second` (answered 503 while the budget can pay for
    /// the response, dropped beyond).
    pub rate_limited: IntCounter,
    /// `pbx_edge_registrations_active`.
    pub registrations: IntGauge,
    /// `pbx_edge_sip_transactions_active`.
    pub transactions: IntGauge,
    /// `pbx_edge_calls_active`.
    pub calls_active: IntGauge,
    /// `pbx_edge_calls_started_total{from}`: INVITE dialogs started by the phone or the PBX.
    pub calls_started: IntCounterVec,
    /// `pbx_edge_calls_total{outcome}`: answered, challenged, failed, cancelled, refused, then how
    /// established calls ended (bye, media_timeout, connection_lost).
    pub calls_ended: IntCounterVec,
    /// `pbx_edge_call_setup_seconds`: INVITE to 2xx.
    pub setup_seconds: Histogram,
    /// `pbx_edge_sip_headers_removed_total{header}`: identity and redirection headers removed
    /// from phone requests (`sip.identity_headers`, `authorize::rewrite_identity_headers`).
    pub headers_removed: IntCounterVec,
    /// `pbx_edge_sip_dropped_total{side, reason}`, shared with the transports.
    pub dropped: IntCounterVec,
    /// `pbx_edge_sip_malformed_total{side, reason}`, shared with the transports (registered
    /// there).
    pub malformed: IntCounterVec,
}

impl CoreMetrics {
    pub fn register(
        registry: &Registry,
        malformed: IntCounterVec,
        dropped: IntCounterVec,
    ) -> Result<Self, prometheus::Error> {
        let m = Self {
            requests: IntCounterVec::new(
                Opts::new(
                    "pbx_edge_sip_requests_total",
                    "SIP requests received, by side (phone|pbx) and method.",
                ),
                &["side", "method"],
            )?,
            responses: IntCounterVec::new(
                Opts::new(
                    "pbx_edge_sip_responses_total",
                    "SIP responses sent, by the side they were sent to and status code.",
                ),
                &["side", "code"],
            )?,
            denied: IntCounterVec::new(
                Opts::new(
                    "pbx_edge_sip_denied_total",
                    "Phone requests refused by the authorization (authorize.rs) or the per-connection registration limit (403), or calls refused by the per-device caps (device_call_limit 486, device_port_limit 503), by reason.",
                ),
                &["reason"],
            )?,
            timeouts: IntCounterVec::new(
                Opts::new(
                    "pbx_edge_sip_transaction_timeouts_total",
                    "Requests the edge forwarded that were never answered, by the silent side.",
                ),
                &["side"],
            )?,
            rate_limited: IntCounter::new(
                "pbx_edge_sip_rate_limited_total",
                "Phone requests refused because their device exceeded sip.phone_requests_per_second (503 + Retry-After while its budget can pay for the response, else dropped).",
            )?,
            registrations: IntGauge::new(
                "pbx_edge_registrations_active",
                "Phone registrations the PBX has confirmed and that have not expired.",
            )?,
            transactions: IntGauge::new(
                "pbx_edge_sip_transactions_active",
                "SIP transactions in progress (both legs of a forwarded request count once).",
            )?,
            calls_active: IntGauge::new(
                "pbx_edge_calls_active",
                "Calls (INVITE dialogs) in progress, ringing or established.",
            )?,
            calls_started: IntCounterVec::new(
                Opts::new(
                    "pbx_edge_calls_started_total",
                    "Calls started, by the side that sent the INVITE (phone|pbx).",
                ),
                &["from"],
            )?,
            calls_ended: IntCounterVec::new(
                Opts::new(
                    "pbx_edge_calls_total",
                    "Call outcomes: answered, challenged, failed, cancelled, refused; and how answered calls ended: bye, media_timeout, connection_lost, shutdown, dialog_gone.",
                ),
                &["outcome"],
            )?,
            setup_seconds: Histogram::with_opts(
                HistogramOpts::new(
                    "pbx_edge_call_setup_seconds",
                    "Time from INVITE to its 2xx, as seen by the edge.",
                )
                .buckets(vec![0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0]),
            )?,
            headers_removed: IntCounterVec::new(
                Opts::new(
                    "pbx_edge_sip_headers_removed_total",
                    "Headers removed from phone requests before they reach the PBX (identity: P-Asserted-Identity, P-Preferred-Identity, Remote-Party-ID; redirection: Diversion, History-Info; a foreign Referred-By), by header.",
                ),
                &["header"],
            )?,
            dropped,
            malformed,
        };
        // Every header the rule can remove is exported from the start (0), so a dashboard
        // panel and an alert on its rate see a series before the first removal.
        for header in super::authorize::IDENTITY_HEADERS
            .iter()
            .chain(&super::authorize::REDIRECTION_HEADERS)
            .chain(&["Referred-By"])
        {
            m.headers_removed.with_label_values(&[header]);
        }
        registry.register(Box::new(m.headers_removed.clone()))?;
        registry.register(Box::new(m.calls_active.clone()))?;
        registry.register(Box::new(m.calls_started.clone()))?;
        registry.register(Box::new(m.calls_ended.clone()))?;
        registry.register(Box::new(m.setup_seconds.clone()))?;
        registry.register(Box::new(m.requests.clone()))?;
        registry.register(Box::new(m.responses.clone()))?;
        registry.register(Box::new(m.denied.clone()))?;
        registry.register(Box::new(m.timeouts.clone()))?;
        registry.register(Box::new(m.rate_limited.clone()))?;
        registry.register(Box::new(m.registrations.clone()))?;
        registry.register(Box::new(m.transactions.clone()))?;
        Ok(m)
    }
}
