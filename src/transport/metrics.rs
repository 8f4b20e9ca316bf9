//! Counters of the phone-facing TLS listener.

use crate::identity::HandshakeCounters;
use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};
use std::sync::Arc;

const HANDSHAKE_FAILURES: &str = "pbx_edge_tls_handshake_failures_total";
const HANDSHAKE_FAILURES_HELP: &str =
    "Phone TLS handshakes that failed, by reason and device vendor.";

/// `pbx_edge_tls_handshake_failures_total{reason, vendor}` and
/// `pbx_edge_tls_legacy_accepted_total{vendor}`, `pbx_edge_tls_mac_outside_ouis_total{vendor}`:
/// read from the identity module's counters at scrape time (they survive reloads), plus the
/// listener's own non-TLS failures.
pub struct HandshakeFailures {
    counters: Arc<HandshakeCounters>,
    local: IntCounterVec,
    descs: Vec<Desc>,
}

impl HandshakeFailures {
    pub fn new(counters: Arc<HandshakeCounters>, local: IntCounterVec) -> Self {
        let descs = [
            (
                HANDSHAKE_FAILURES,
                HANDSHAKE_FAILURES_HELP,
                vec!["reason", "vendor"],
            ),
            (
                "pbx_edge_tls_legacy_accepted_total",
                "Device certificates accepted only because of legacy_crypto, by vendor.",
                vec!["vendor"],
            ),
            (
                "pbx_edge_tls_mac_outside_ouis_total",
                "Device certificates accepted with a MAC outside the vendor's OUIs, by vendor.",
                vec!["vendor"],
            ),
        ]
        .into_iter()
        .filter_map(|(n, h, l)| {
            Desc::new(
                n.to_owned(),
                h.to_owned(),
                l.into_iter().map(str::to_owned).collect(),
                Default::default(),
            )
            .ok()
        })
        .collect();
        Self {
            counters,
            local,
            descs,
        }
    }

    fn family(
        name: &str,
        help: &str,
        labels: &[&str],
        values: impl IntoIterator<Item = (Vec<String>, u64)>,
    ) -> Vec<MetricFamily> {
        let Ok(vec) = IntCounterVec::new(Opts::new(name, help), labels) else {
            return Vec::new();
        };
        for (l, v) in values {
            let l: Vec<&str> = l.iter().map(String::as_str).collect();
            if let Ok(c) = vec.get_metric_with_label_values(&l) {
                c.inc_by(v);
            }
        }
        vec.collect()
    }
}

impl Collector for HandshakeFailures {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let mut failures: Vec<(Vec<String>, u64)> = self
            .counters
            .failures()
            .into_iter()
            .map(|(r, vendor, n)| (vec![r.label().to_owned(), vendor], n))
            .collect();
        for mf in self.local.collect() {
            for m in mf.get_metric() {
                let labels: Vec<String> =
                    m.get_label().iter().map(|l| l.value().to_owned()).collect();
                failures.push((labels, m.get_counter().value() as u64));
            }
        }
        let mut out = Self::family(
            HANDSHAKE_FAILURES,
            HANDSHAKE_FAILURES_HELP,
            &["reason", "vendor"],
            failures,
        );
        out.extend(Self::family(
            "pbx_edge_tls_legacy_accepted_total",
            "Device certificates accepted only because of legacy_crypto, by vendor.",
            &["vendor"],
            self.counters
                .legacy_accepted()
                .into_iter()
                .map(|(v, n)| (vec![v], n)),
        ));
        out.extend(Self::family(
            "pbx_edge_tls_mac_outside_ouis_total",
            "Device certificates accepted with a MAC outside the vendor's OUIs, by vendor.",
            &["vendor"],
            self.counters
                .outside_ouis_accepted()
                .into_iter()
                .map(|(v, n)| (vec![v], n)),
        ));
        out
    }
}

/// TLS listener metrics, registered into the process registry by `app`.
#[derive(Clone)]
pub struct TlsMetrics {
    pub connections_active: IntGauge,
    pub handshakes_ok: IntCounter,
    /// Failures that are not TLS errors (handshake timeout, peer gone mid-handshake); exported
    /// together with the identity module's counters by [`HandshakeFailures`].
    pub handshake_failures_local: IntCounterVec,
    /// `pbx_edge_tls_connections_refused_total{reason}`: closed at accept by the connection
    /// limits (`max_connections`, `max_connections_per_ip`).
    pub connections_refused: IntCounterVec,
    /// `pbx_edge_tls_connections_revoked_total{reason}`: open connections closed because their
    /// certificate (or anonymous source) no longer passes the verdict, after an identity
    /// reload or at a certificate's notAfter; `reason` is the handshake reason label.
    pub connections_revoked: IntCounterVec,
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
            handshake_failures_local: IntCounterVec::new(
                Opts::new(HANDSHAKE_FAILURES, HANDSHAKE_FAILURES_HELP),
                &["reason", "vendor"],
            )?,
            connections_refused: IntCounterVec::new(
                Opts::new(
                    "pbx_edge_tls_connections_refused_total",
                    "Phone TCP connections closed at accept by tls.max_connections (max_connections) or tls.max_connections_per_ip (max_connections_per_ip).",
                ),
                &["reason"],
            )?,
            connections_revoked: IntCounterVec::new(
                Opts::new(
                    "pbx_edge_tls_connections_revoked_total",
                    "Open phone TLS connections closed because their certificate no longer passes (identity reload, or a certificate's notAfter passed), by reason.",
                ),
                &["reason"],
            )?,
        };
        registry.register(Box::new(m.connections_active.clone()))?;
        registry.register(Box::new(m.connections_refused.clone()))?;
        // The reasons an open connection is closed for in practice (deny-list or CRL, removed
        // from the inventory, certificate past notAfter) exist from the start (0), so a panel
        // or an alert on their rate has a series before the first revocation.
        for reason in ["revoked", "mac_not_in_inventory", "expired"] {
            m.connections_revoked.with_label_values(&[reason]);
        }
        registry.register(Box::new(m.connections_revoked.clone()))?;
        registry.register(Box::new(m.handshakes_ok.clone()))?;
        Ok(m)
    }
}

/// SIP transport metrics (both legs).
#[derive(Clone)]
pub struct SipTransportMetrics {
    /// `pbx_edge_sip_malformed_total{side, reason}`: unparseable or unframeable input.
    pub malformed: IntCounterVec,
    /// `pbx_edge_sip_keepalives_total`: RFC 5626 pings answered.
    pub keepalives: IntCounter,
    /// `pbx_edge_sip_connections_closed_total{reason}`.
    pub connections_closed: IntCounterVec,
    /// `pbx_edge_sip_dropped_total{side, reason}`: input refused without an answer.
    pub dropped: IntCounterVec,
    /// `pbx_edge_pbx_connections_active{direction}`: open TCP connections to the PBX
    /// (`outbound`: opened by the edge; `inbound`: opened by the PBX). Zero over UDP.
    pub pbx_connections: IntGaugeVec,
}

impl SipTransportMetrics {
    pub fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        let m = Self {
            malformed: IntCounterVec::new(
                Opts::new(
                    "pbx_edge_sip_malformed_total",
                    "SIP input that could not be framed or parsed, by side and reason.",
                ),
                &["side", "reason"],
            )?,
            keepalives: IntCounter::new(
                "pbx_edge_sip_keepalives_total",
                "RFC 5626 CRLF keep-alive pings answered on phone connections.",
            )?,
            connections_closed: IntCounterVec::new(
                Opts::new(
                    "pbx_edge_sip_connections_closed_total",
                    "Phone connections closed, by reason.",
                ),
                &["reason"],
            )?,
            dropped: IntCounterVec::new(
                Opts::new(
                    "pbx_edge_sip_dropped_total",
                    "SIP messages dropped without an answer, by side and reason.",
                ),
                &["side", "reason"],
            )?,
            pbx_connections: IntGaugeVec::new(
                Opts::new(
                    "pbx_edge_pbx_connections_active",
                    "TCP connections to the PBX currently open, by who opened them.",
                ),
                &["direction"],
            )?,
        };
        registry.register(Box::new(m.malformed.clone()))?;
        registry.register(Box::new(m.keepalives.clone()))?;
        registry.register(Box::new(m.connections_closed.clone()))?;
        registry.register(Box::new(m.dropped.clone()))?;
        registry.register(Box::new(m.pbx_connections.clone()))?;
        // Exported at 0 from the start, so dashboards see the series before the first use.
        for direction in ["outbound", "inbound"] {
            m.pbx_connections.with_label_values(&[direction]).set(0);
        }
        Ok(m)
    }
}
