//! The report of `pbx-edge inspect-cert FILE [--config FILE]`: why a device certificate is, or
//! is not, accepted by the current configuration. The CLI prints the report (`Display`) and exits
//! 0 when [`InspectReport::accepted`], 1 otherwise.

use std::fmt;

use rustls::pki_types::UnixTime;
use x509_parser::objects::{oid2sn, oid_registry};
use x509_parser::oid_registry::Oid;
use x509_parser::public_key::PublicKey;

use crate::identity::chain::parse_certificate;
use crate::identity::rejection::CertificateRejection;
use crate::identity::store::{parse_certificates, IdentitySnapshot, ParseFailure};
use crate::identity::Identity;

/// Everything `inspect-cert` says about one certificate (or chain, end entity first).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InspectReport {
    /// Subject DN.
    pub subject: String,
    /// Issuer DN.
    pub issuer: String,
    /// notBefore.
    pub not_before: String,
    /// notAfter.
    pub not_after: String,
    /// Key type and size (`RSA-2048`, `EC P-256`, `Ed25519`).
    pub key: String,
    /// Signature algorithm name (`sha256WithRSAEncryption`, `ecdsa-with-SHA256`, ...).
    pub signature_algorithm: String,
    /// Vendor profile whose CA the chain leads to.
    pub vendor: Option<String>,
    /// The identity the profile reads (MAC or shared), or why none.
    pub identity: Result<Identity, String>,
    /// Chain verdict against the configured CAs.
    pub chain: String,
    /// Revocation status (CRL / deny-list).
    pub revocation: String,
    /// The inventory entry, or why there is none.
    pub inventory: String,
    /// Whether the handshake would be accepted now.
    pub accepted: bool,
    /// The refusal, when not accepted.
    pub rejection: Option<CertificateRejection>,
}

/// Why `inspect-cert` could not produce a report (exit 2: usage / file error).
#[derive(Debug, thiserror::Error)]
pub enum InspectError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: std::path::PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The file holds no certificate, or one that does not parse.
    #[error("{path}: {what}")]
    NotACertificate {
        /// The file.
        path: std::path::PathBuf,
        /// What is wrong.
        what: &'static str,
    },
}

impl InspectError {
    /// Stable label.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Read { .. } => "read",
            Self::NotACertificate { .. } => "not_a_certificate",
        }
    }
}

/// Reads `path` (PEM or DER, certificate or chain) and inspects it; see [`inspect_certificate`].
pub fn inspect_file(
    path: &std::path::Path,
    snapshot: &IdentitySnapshot,
    now: UnixTime,
) -> Result<InspectReport, InspectError> {
    let bytes = std::fs::read(path).map_err(|source| InspectError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    inspect_certificate(&bytes, snapshot, now).map_err(|failure| InspectError::NotACertificate {
        path: path.to_path_buf(),
        what: match failure {
            ParseFailure::Nothing => "no certificate found (expected PEM or DER)",
            ParseFailure::Bad(_) => "not a valid X.509 certificate",
        },
    })
}

/// Inspects PEM or DER bytes (a certificate or a chain, end entity first) against `snapshot`
/// at `now`.
pub fn inspect_certificate(
    bytes: &[u8],
    snapshot: &IdentitySnapshot,
    now: UnixTime,
) -> Result<InspectReport, ParseFailure> {
    let chain = parse_certificates(bytes)?;
    let Some((end_entity, intermediates)) = chain.split_first() else {
        return Err(ParseFailure::Nothing);
    };
    let cert = parse_certificate(end_entity).ok_or(ParseFailure::Bad(0))?;
    let trust = snapshot.trust();
    let identified = trust.identify(end_entity, intermediates);
    let verdict = trust.verify(end_entity, intermediates, now);
    let vendor = match (&identified, &verdict) {
        (Ok(identity), _) => identity.vendor().map(str::to_owned),
        (Err(rejection), _) => rejection.vendor.clone(),
    };
    let chain_text = match &verdict {
        Err(r) if is_chain_reason(r) => format!("REFUSED: {} ({})", r.reason, r.detail),
        Err(r) if r.vendor.is_none() => format!("REFUSED: {}", r.reason),
        Ok(device) if !device.legacy.is_empty() => {
            let findings: Vec<String> = device.legacy.iter().map(ToString::to_string).collect();
            format!("ok, legacy crypto accepted ({})", findings.join(", "))
        }
        _ => "ok".to_owned(),
    };
    let revocation = match &verdict {
        Err(r) if r.reason == crate::identity::HandshakeRejection::Revoked => {
            format!("REVOKED: {}", r.detail)
        }
        Err(r) if is_chain_reason(r) || r.vendor.is_none() => "not checked (chain refused)".into(),
        _ => "not revoked (CRLs and deny-list checked)".into(),
    };
    let inventory = match &identified {
        Ok(Identity::Device { mac, vendor }) => match trust.inventory.device(mac) {
            Some(entry) => format!(
                "{mac}: users {}{}{}",
                entry.users,
                entry
                    .label
                    .as_ref()
                    .map(|l| format!(", label {l:?}"))
                    .unwrap_or_default(),
                entry
                    .provisioning
                    .as_ref()
                    .map(|patterns| {
                        let list: Vec<&str> = patterns.iter().map(|p| p.as_str()).collect();
                        format!(", provisioning [{}]", list.join(", "))
                    })
                    .unwrap_or_default()
            ),
            None => match trust.inventory.vendor_users(vendor) {
                Some(users) => format!("{mac} not listed; vendor {vendor} grants users {users}"),
                None => format!("no entry: {mac} is not in the inventory"),
            },
        },
        Ok(Identity::Shared { vendor }) => match trust.inventory.vendor_users(vendor) {
            Some(users) => format!("shared certificate; vendor {vendor} grants users {users}"),
            None => format!("shared certificate; no [[vendors]] entry for {vendor}: no users"),
        },
        Ok(Identity::Anonymous) => "anonymous".into(),
        Err(r) => format!("no entry: {}", r.reason),
    };
    let validity = cert.validity();
    Ok(InspectReport {
        subject: cert.subject().to_string(),
        issuer: cert.issuer().to_string(),
        not_before: validity.not_before.to_string(),
        not_after: validity.not_after.to_string(),
        key: key_description(&cert),
        signature_algorithm: oid_name(&cert.signature_algorithm.algorithm),
        vendor,
        identity: identified.map_err(|r| format!("{}: {}", r.reason, r.detail)),
        chain: chain_text,
        revocation,
        inventory,
        accepted: verdict.is_ok(),
        rejection: verdict.err(),
    })
}

fn is_chain_reason(rejection: &CertificateRejection) -> bool {
    use crate::identity::HandshakeRejection as R;
    matches!(
        rejection.reason,
        R::UnknownIssuer
            | R::UntrustedChain
            | R::ChainTooLarge
            | R::SignatureBudgetExceeded
            | R::Expired
            | R::NotYetValid
            | R::BadKeyUsage
            | R::LegacyCryptoRefused
    )
}

fn oid_name(oid: &Oid<'_>) -> String {
    oid2sn(oid, oid_registry())
        .map(str::to_owned)
        .unwrap_or_else(|_| oid.to_id_string())
}

fn key_description(cert: &x509_parser::certificate::X509Certificate<'_>) -> String {
    match cert.public_key().parsed() {
        Ok(PublicKey::RSA(rsa)) => format!("RSA-{}", rsa.key_size()),
        Ok(PublicKey::EC(point)) => {
            let curve = cert
                .public_key()
                .algorithm
                .parameters
                .as_ref()
                .and_then(|p| p.as_oid().ok())
                .map(|o| oid_name(&o))
                .unwrap_or_else(|| "unknown curve".into());
            format!("EC {curve} ({} bits)", point.key_size())
        }
        Ok(_) | Err(_) => oid_name(&cert.public_key().algorithm.algorithm),
    }
}

impl fmt::Display for InspectReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "subject:    {}", self.subject)?;
        writeln!(f, "issuer:     {}", self.issuer)?;
        writeln!(f, "validity:   {} .. {}", self.not_before, self.not_after)?;
        writeln!(f, "key:        {}", self.key)?;
        writeln!(f, "signature:  {}", self.signature_algorithm)?;
        writeln!(
            f,
            "vendor:     {}",
            self.vendor
                .as_deref()
                .unwrap_or("(none: no vendor CA matched)")
        )?;
        match &self.identity {
            Ok(identity) => writeln!(f, "identity:   {identity}")?,
            Err(why) => writeln!(f, "identity:   none ({why})")?,
        }
        writeln!(f, "chain:      {}", self.chain)?;
        writeln!(f, "revocation: {}", self.revocation)?;
        writeln!(f, "inventory:  {}", self.inventory)?;
        match &self.rejection {
            None => writeln!(f, "verdict:    ACCEPTED"),
            Some(r) => writeln!(
                f,
                "verdict:    REFUSED ({}): {}",
                r.reason.label(),
                r.detail
            ),
        }
    }
}
