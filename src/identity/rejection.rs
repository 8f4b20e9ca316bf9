//! [`HandshakeRejection`]: the one classification of refused phone TLS handshakes that feeds the
//! log line, the `pbx_edge_tls_handshake_failures_total{reason,vendor}` counter and
//! `inspect-cert`; [`HandshakeCounters`] holds the counts the admin endpoint exports.
//!
//! Who counts what (so nothing is counted twice):
//! - the client-certificate verifier counts and logs every certificate it refuses, with the
//!   vendor and the certificate subject ([`HandshakeCounters::record_rejection`]);
//! - the accept loop calls [`HandshakeCounters::record_connection_error`] with the rustls error
//!   of every failed handshake: it counts only failures the verifier did not see (protocol or
//!   cipher mismatch, no certificate, other) and returns the classification for its own log line
//!   with the peer address.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex};

use rustls::{AlertDescription, CertificateError, Error as TlsError, OtherError};

/// Why a phone's TLS handshake was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum HandshakeRejection {
    /// No configured vendor CA (root or intermediate) issued the chain.
    UnknownIssuer,
    /// The chain names a configured CA but does not verify (bad signature, broken path, a
    /// non-CA certificate used as issuer, path too long, unsupported algorithm).
    UntrustedChain,
    /// The client presented more certificates or bytes than `tls.max_client_chain_certs` /
    /// `tls.max_client_chain_bytes`.
    ChainTooLarge,
    /// Path building spent its signature checks (`chain::MAX_SIGNATURE_CHECKS`) without a
    /// path: many candidate issuers with the same name.
    SignatureBudgetExceeded,
    /// A certificate in the chain is past its notAfter.
    Expired,
    /// A certificate in the chain is before its notBefore.
    NotYetValid,
    /// Key usage / extended key usage does not allow TLS client authentication.
    BadKeyUsage,
    /// Revoked by a CRL or listed in the MAC deny-list.
    Revoked,
    /// SHA-1 signature or RSA key under 2048 bits, and the vendor has no `legacy_crypto = true`.
    LegacyCryptoRefused,
    /// The certificate verified but carries no MAC where the vendor profile looks.
    NoMac,
    /// The subject names the MAC ambiguously: a MAC attribute twice (two CNs), or two
    /// different MACs in the places the vendor profile reads.
    AmbiguousSubject,
    /// The vendor's shared non-unique certificate, and `shared_certs = "reject"`.
    SharedCertificateRefused,
    /// The MAC is outside the vendor's OUIs and `oui_policy = "refuse"`.
    MacOutsideOuis,
    /// The certificate verified but its MAC is not in the inventory.
    MacNotInInventory,
    /// The client sent no certificate and `client_cert = "required"`.
    NoCertificate,
    /// No certificate (`client_cert = "optional"` or `"off"`), and the source address is not in
    /// the inventory's `anonymous.networks` (or no anonymous users are configured).
    AnonymousNotAllowed,
    /// No common TLS version, cipher suite or signature scheme, or not TLS at all.
    ProtocolMismatch,
    /// The phone refused pbx-edge's server certificate (its alert: bad/unknown/expired
    /// certificate, unknown CA), e.g. a name the phone checks is not in the certificate.
    PeerRefusedServerCertificate,
    /// Anything else (malformed certificate, I/O error, peer alert...).
    Other,
}

impl HandshakeRejection {
    /// Every variant, for exporting zero-valued series and for tests.
    pub const ALL: [HandshakeRejection; 19] = [
        Self::UnknownIssuer,
        Self::UntrustedChain,
        Self::ChainTooLarge,
        Self::SignatureBudgetExceeded,
        Self::Expired,
        Self::NotYetValid,
        Self::BadKeyUsage,
        Self::Revoked,
        Self::LegacyCryptoRefused,
        Self::NoMac,
        Self::AmbiguousSubject,
        Self::SharedCertificateRefused,
        Self::MacOutsideOuis,
        Self::MacNotInInventory,
        Self::NoCertificate,
        Self::AnonymousNotAllowed,
        Self::ProtocolMismatch,
        Self::PeerRefusedServerCertificate,
        Self::Other,
    ];

    /// Stable `reason` label value.
    pub const fn label(&self) -> &'static str {
        match self {
            Self::UnknownIssuer => "issuer_unknown",
            Self::UntrustedChain => "untrusted_chain",
            Self::ChainTooLarge => "chain_too_large",
            Self::SignatureBudgetExceeded => "signature_budget_exceeded",
            Self::Expired => "expired",
            Self::NotYetValid => "not_yet_valid",
            Self::BadKeyUsage => "bad_key_usage",
            Self::Revoked => "revoked",
            Self::LegacyCryptoRefused => "legacy_crypto_refused",
            Self::NoMac => "no_mac",
            Self::AmbiguousSubject => "ambiguous_subject",
            Self::SharedCertificateRefused => "shared_cert_refused",
            Self::MacOutsideOuis => "mac_outside_ouis",
            Self::MacNotInInventory => "mac_not_in_inventory",
            Self::NoCertificate => "no_certificate",
            Self::AnonymousNotAllowed => "anonymous_not_allowed",
            Self::ProtocolMismatch => "protocol_mismatch",
            Self::PeerRefusedServerCertificate => "peer_refused_server_certificate",
            Self::Other => "other",
        }
    }

    /// Human description for logs and `inspect-cert`.
    pub const fn description(&self) -> &'static str {
        match self {
            Self::UnknownIssuer => "issuer is not a configured vendor CA",
            Self::UntrustedChain => "certificate chain does not verify",
            Self::ChainTooLarge => "client certificate chain too large",
            Self::SignatureBudgetExceeded => {
                "certificate chain needs too many signature checks to build a path"
            }
            Self::Expired => "certificate expired",
            Self::NotYetValid => "certificate not yet valid",
            Self::BadKeyUsage => "key usage does not allow TLS client authentication",
            Self::Revoked => "certificate or MAC revoked",
            Self::LegacyCryptoRefused => {
                "legacy crypto (SHA-1 or RSA < 2048) refused: vendor has no legacy_crypto = true"
            }
            Self::NoMac => "no MAC in certificate",
            Self::AmbiguousSubject => "ambiguous subject: the MAC attribute twice, or two MACs",
            Self::SharedCertificateRefused => "shared non-unique certificate refused",
            Self::MacOutsideOuis => "MAC outside the vendor's OUIs",
            Self::MacNotInInventory => "MAC not in inventory",
            Self::NoCertificate => "no client certificate",
            Self::AnonymousNotAllowed => {
                "no client certificate, and anonymous phones are not allowed from this source"
            }
            Self::ProtocolMismatch => "TLS protocol or cipher mismatch",
            Self::PeerRefusedServerCertificate => "the phone refused the server certificate",
            Self::Other => "other handshake failure",
        }
    }

    /// The standard certificate error (and so the TLS alert, RFC 8446 §6.2) for the reasons
    /// TLS has one; `None` for pbx-edge's own reasons, which travel as
    /// [`CertificateError::Other`] carrying a [`CertificateRejection`].
    fn standard_certificate_error(&self) -> Option<CertificateError> {
        Some(match self {
            Self::UnknownIssuer => CertificateError::UnknownIssuer,
            Self::UntrustedChain => CertificateError::BadSignature,
            Self::Expired => CertificateError::Expired,
            Self::NotYetValid => CertificateError::NotValidYet,
            Self::BadKeyUsage => CertificateError::InvalidPurpose,
            _ => return None,
        })
    }

    /// Classifies a rustls error from a failed server-side handshake.
    pub fn from_tls_error(error: &TlsError) -> Self {
        match error {
            TlsError::InvalidCertificate(certificate_error) => {
                Self::from_certificate_error(certificate_error)
            }
            TlsError::NoCertificatesPresented => Self::NoCertificate,
            TlsError::PeerIncompatible(_)
            | TlsError::InvalidMessage(_)
            | TlsError::InappropriateMessage { .. }
            | TlsError::InappropriateHandshakeMessage { .. }
            | TlsError::NoApplicationProtocol => Self::ProtocolMismatch,
            TlsError::AlertReceived(
                AlertDescription::ProtocolVersion
                | AlertDescription::HandshakeFailure
                | AlertDescription::InsufficientSecurity
                | AlertDescription::IllegalParameter,
            ) => Self::ProtocolMismatch,
            TlsError::AlertReceived(
                AlertDescription::BadCertificate
                | AlertDescription::UnsupportedCertificate
                | AlertDescription::CertificateRevoked
                | AlertDescription::CertificateExpired
                | AlertDescription::CertificateUnknown
                | AlertDescription::UnknownCA,
            ) => Self::PeerRefusedServerCertificate,
            _ => Self::Other,
        }
    }

    /// Classifies a rustls certificate error (webpki's or ours).
    pub fn from_certificate_error(error: &CertificateError) -> Self {
        #[allow(deprecated)]
        match error {
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => Self::Expired,
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                Self::NotYetValid
            }
            CertificateError::Revoked => Self::Revoked,
            CertificateError::UnknownIssuer => Self::UnknownIssuer,
            CertificateError::BadSignature
            | CertificateError::UnsupportedSignatureAlgorithm
            | CertificateError::UnsupportedSignatureAlgorithmContext { .. }
            | CertificateError::UnsupportedSignatureAlgorithmForPublicKeyContext { .. }
            | CertificateError::UnknownRevocationStatus
            | CertificateError::ExpiredRevocationList
            | CertificateError::ExpiredRevocationListContext { .. } => Self::UntrustedChain,
            CertificateError::InvalidPurpose | CertificateError::InvalidPurposeContext { .. } => {
                Self::BadKeyUsage
            }
            CertificateError::Other(other) => CertificateRejection::from_other(other)
                .map(|r| r.reason)
                .unwrap_or(Self::Other),
            _ => Self::Other,
        }
    }
}

impl fmt::Display for HandshakeRejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.description())
    }
}

/// A refused client certificate: the reason, the vendor whose CA matched (if any), the subject
/// and a detail for the log line. This is also the error carried inside
/// `rustls::CertificateError::Other` for pbx-edge's own reasons.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateRejection {
    /// Classification.
    pub reason: HandshakeRejection,
    /// Vendor profile whose CA matched; `None` when no vendor CA issued the chain.
    pub vendor: Option<String>,
    /// The end-entity certificate's subject, RFC 4514 form as x509-parser prints it.
    pub subject: String,
    /// Human detail (the MAC, the failing certificate, ...).
    pub detail: String,
}

impl CertificateRejection {
    /// The `vendor` label value: the profile name, or `unknown`.
    pub fn vendor_label(&self) -> &str {
        self.vendor.as_deref().unwrap_or("unknown")
    }

    /// The rustls error to fail the handshake with: the standard certificate error where TLS has
    /// an alert for the reason (unknown_ca, certificate_expired, ...), otherwise
    /// `CertificateError::Other(self)` (alert certificate_unknown).
    pub fn to_tls_error(&self) -> TlsError {
        let certificate_error = self
            .reason
            .standard_certificate_error()
            .unwrap_or_else(|| CertificateError::Other(OtherError(Arc::new(self.clone()))));
        TlsError::InvalidCertificate(certificate_error)
    }

    /// Recovers a rejection carried in a rustls `OtherError`.
    pub fn from_other(other: &OtherError) -> Option<&CertificateRejection> {
        other.0.downcast_ref::<CertificateRejection>()
    }
}

impl fmt::Display for CertificateRejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} (vendor {}, subject {}): {}",
            self.reason,
            self.vendor_label(),
            self.subject,
            self.detail
        )
    }
}

impl std::error::Error for CertificateRejection {}

/// Handshake failure and legacy-acceptance counts keyed by (reason, vendor); shared by every
/// snapshot (the caller creates one and passes it to each load) and read when /metrics is
/// scraped. A handshake is not the media hot path, so a mutex is fine here.
#[derive(Debug, Default)]
pub struct HandshakeCounters {
    failures: Mutex<BTreeMap<(HandshakeRejection, String), u64>>,
    legacy_accepted: Mutex<BTreeMap<String, u64>>,
    outside_ouis_accepted: Mutex<BTreeMap<String, u64>>,
}

impl HandshakeCounters {
    /// New, all zero.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Counts and logs a certificate refused by the verifier.
    pub fn record_rejection(&self, rejection: &CertificateRejection) {
        tracing::warn!(
            reason = rejection.reason.label(),
            vendor = rejection.vendor_label(),
            subject = %rejection.subject,
            detail = %rejection.detail,
            "client certificate refused"
        );
        bump(
            &self.failures,
            (rejection.reason, rejection.vendor_label().to_owned()),
        );
    }

    /// Classifies the rustls error of a failed handshake and counts it unless the verifier
    /// already did (certificate errors). Returns the classification for the caller's log line.
    pub fn record_connection_error(&self, error: &TlsError) -> HandshakeRejection {
        let reason = HandshakeRejection::from_tls_error(error);
        if !matches!(error, TlsError::InvalidCertificate(_)) {
            bump(&self.failures, (reason, "none".to_owned()));
        }
        reason
    }

    /// Counts a chain accepted through the legacy-crypto path.
    pub fn record_legacy_accepted(&self, vendor: &str) {
        bump(&self.legacy_accepted, vendor.to_owned());
    }

    /// Counts a device accepted although its MAC is outside the vendor OUIs (policy `warn`).
    pub fn record_outside_ouis_accepted(&self, vendor: &str) {
        bump(&self.outside_ouis_accepted, vendor.to_owned());
    }

    /// `pbx_edge_tls_handshake_failures_total{reason,vendor}` values.
    pub fn failures(&self) -> Vec<(HandshakeRejection, String, u64)> {
        read(&self.failures)
            .into_iter()
            .map(|((r, v), n)| (r, v, n))
            .collect()
    }

    /// The failure count for one (reason, vendor) pair.
    pub fn failure_count(&self, reason: HandshakeRejection, vendor: &str) -> u64 {
        read(&self.failures)
            .get(&(reason, vendor.to_owned()))
            .copied()
            .unwrap_or(0)
    }

    /// `pbx_edge_tls_legacy_crypto_accepted_total{vendor}` values.
    pub fn legacy_accepted(&self) -> Vec<(String, u64)> {
        read(&self.legacy_accepted).into_iter().collect()
    }

    /// `pbx_edge_tls_mac_outside_ouis_total{vendor}` values (accepted with a warning).
    pub fn outside_ouis_accepted(&self) -> Vec<(String, u64)> {
        read(&self.outside_ouis_accepted).into_iter().collect()
    }
}

fn bump<K: Ord>(map: &Mutex<BTreeMap<K, u64>>, key: K) {
    // A poisoned counter map only means another thread panicked mid-increment; keep counting.
    let mut guard = map.lock().unwrap_or_else(|poison| poison.into_inner());
    *guard.entry(key).or_insert(0) += 1;
}

fn read<K: Ord + Clone>(map: &Mutex<BTreeMap<K, u64>>) -> BTreeMap<K, u64> {
    map.lock()
        .unwrap_or_else(|poison| poison.into_inner())
        .clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_unique() {
        let mut labels: Vec<_> = HandshakeRejection::ALL.iter().map(|r| r.label()).collect();
        labels.sort_unstable();
        labels.dedup();
        assert_eq!(labels.len(), HandshakeRejection::ALL.len());
    }

    #[test]
    fn every_reason_survives_the_rustls_error_roundtrip() {
        for reason in HandshakeRejection::ALL {
            if matches!(
                reason,
                HandshakeRejection::NoCertificate
                    | HandshakeRejection::ProtocolMismatch
                    | HandshakeRejection::PeerRefusedServerCertificate
                    | HandshakeRejection::Other
            ) {
                continue;
            }
            let rejection = CertificateRejection {
                reason,
                vendor: Some("snom".into()),
                subject: "CN=000413A1B2C3".into(),
                detail: String::new(),
            };
            assert_eq!(
                HandshakeRejection::from_tls_error(&rejection.to_tls_error()),
                reason
            );
        }
    }

    #[test]
    fn connection_errors_count_once() {
        let counters = HandshakeCounters::new();
        let rejection = CertificateRejection {
            reason: HandshakeRejection::Expired,
            vendor: Some("snom".into()),
            subject: "CN=x".into(),
            detail: String::new(),
        };
        counters.record_rejection(&rejection);
        assert_eq!(
            counters.record_connection_error(&rejection.to_tls_error()),
            HandshakeRejection::Expired
        );
        assert_eq!(
            counters.record_connection_error(&TlsError::NoCertificatesPresented),
            HandshakeRejection::NoCertificate
        );
        assert_eq!(
            counters.failure_count(HandshakeRejection::Expired, "snom"),
            1
        );
        assert_eq!(
            counters.failure_count(HandshakeRejection::NoCertificate, "none"),
            1
        );
    }
}
