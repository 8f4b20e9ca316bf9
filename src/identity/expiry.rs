//! `pbx_edge_tls_server_cert_expiry_timestamp_seconds`: when each configured server
//! certificate stops being valid, so an alert fires weeks before phones start refusing the
//! edge (phones check the server certificate's validity like any TLS client, RFC 5280 §6.1.3).
//!
//! The value is the earliest notAfter in the configured chain file (leaf and intermediates:
//! whichever expires first breaks the handshake), in unix seconds. It is read from the
//! snapshot in force at scrape time, so a reload that installs a renewed certificate shows at
//! the next scrape and a failed reload keeps showing the certificate still served.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

use std::sync::{Arc, Mutex, PoisonError};

use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{GaugeVec, Opts};
use tokio::sync::watch;

use crate::config::ServerCertConfig;
use crate::identity::chain::parse_certificate;
use crate::identity::error::IdentityError;
use crate::identity::files::read_certificates;
use crate::identity::snapshot::{IdentitySnapshot, ServerCertExpiry};

/// The metric name.
pub const METRIC: &str = "pbx_edge_tls_server_cert_expiry_timestamp_seconds";

/// Reads the notAfter of every configured server certificate chain.
pub fn read_expiries(entries: &[ServerCertConfig]) -> Result<Vec<ServerCertExpiry>, IdentityError> {
    entries
        .iter()
        .enumerate()
        .map(|(index, entry)| {
            let chain = read_certificates(&entry.cert)?;
            let not_after = chain
                .iter()
                .enumerate()
                .map(|(i, der)| {
                    parse_certificate(der)
                        .map(|c| c.validity().not_after.timestamp())
                        .ok_or_else(|| IdentityError::BadCertificate {
                            path: entry.cert.clone(),
                            index: i,
                        })
                })
                .try_fold(i64::MAX, |earliest, t| t.map(|t| earliest.min(t)))?;
            Ok(ServerCertExpiry {
                index,
                file: entry.cert.display().to_string(),
                not_after,
            })
        })
        .collect()
}

/// Exposes the expiries of the identity snapshot in force.
pub struct ExpiryCollector {
    snapshots: watch::Receiver<Arc<IdentitySnapshot>>,
    gauge: GaugeVec,
    /// Serialises scrapes: each one resets and refills the gauge.
    scrape: Mutex<()>,
}

impl ExpiryCollector {
    pub fn new(snapshots: watch::Receiver<Arc<IdentitySnapshot>>) -> prometheus::Result<Self> {
        let gauge = GaugeVec::new(
            Opts::new(
                METRIC,
                "Earliest notAfter (unix seconds) of each configured server certificate chain \
                 (tls.certificates, by index and file) in the identity snapshot in force.",
            ),
            &["index", "file"],
        )?;
        Ok(Self {
            snapshots,
            gauge,
            scrape: Mutex::new(()),
        })
    }
}

impl Collector for ExpiryCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.gauge.desc()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let _serialised = self.scrape.lock().unwrap_or_else(PoisonError::into_inner);
        self.gauge.reset();
        let snapshot = self.snapshots.borrow().clone();
        for e in snapshot.server_cert_expiries() {
            // f64 holds every plausible timestamp exactly (< 2^53 s).
            #[allow(clippy::cast_precision_loss)]
            self.gauge
                .with_label_values(&[e.index.to_string().as_str(), e.file.as_str()])
                .set(e.not_after as f64);
        }
        self.gauge.collect()
    }
}
