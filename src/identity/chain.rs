//! Certificate path building and the legacy-crypto verification path.
//!
//! Every presented chain is first walked here with x509-parser, name by name (raw DER subject ==
//! raw DER issuer) and signature by signature, against one vendor's CA bundle. That decides which
//! vendor profile applies (or "issuer unknown"), and whether the path uses legacy crypto: a SHA-1
//! signature on any certificate below the trust anchor, or an RSA key under 2048 bits anywhere on
//! the path (it verifies a signature or signs the handshake).
//!
//! Modern paths are then verified authoritatively by webpki (through rustls'
//! `WebPkiClientVerifier`: validity, key usage, EKU, name constraints, CRLs). webpki refuses SHA-1
//! and RSA-1024 outright, so a legacy path of a vendor with `legacy_crypto = true` is verified by
//! [`verify_legacy_path`] instead: signatures with ring's `*_FOR_LEGACY_USE_ONLY` algorithms,
//! validity of every certificate below the anchor, basicConstraints CA + pathLen and keyCertSign
//! on issuers, digitalSignature key usage and clientAuth EKU (when present) on the end entity,
//! unknown critical extensions, and the vendor's CRLs (signature-checked). Trust-anchor
//! self-signatures and validity are not checked, as in webpki (RFC 5280 §6.1: the anchor is
//! input, not part of the path).

use ring::signature::{self, UnparsedPublicKey, VerificationAlgorithm};
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::ParsedExtension;
use x509_parser::oid_registry::{
    Oid, OID_EC_P256, OID_NIST_EC_P384, OID_PKCS1_SHA1WITHRSA, OID_PKCS1_SHA256WITHRSA,
    OID_PKCS1_SHA384WITHRSA, OID_PKCS1_SHA512WITHRSA, OID_SHA1_WITH_RSA, OID_SIG_ECDSA_WITH_SHA256,
    OID_SIG_ECDSA_WITH_SHA384, OID_SIG_ED25519,
};
use x509_parser::prelude::FromDer;
use x509_parser::public_key::PublicKey;
use x509_parser::revocation_list::CertificateRevocationList;
use x509_parser::x509::AlgorithmIdentifier;

use crate::identity::rejection::HandshakeRejection;

/// Longest path accepted (end entity + intermediates, anchor excluded).
const MAX_PATH_LEN: usize = 6;

/// Minimum RSA modulus size not considered legacy.
const MIN_RSA_BITS: usize = 2048;

/// A path from the end entity (first) up to a trust anchor (last), as DER slices.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertPath<'a> {
    /// End entity, intermediates in order, then the trust anchor from the CA bundle.
    pub certs: Vec<&'a [u8]>,
}

/// Signature checks one handshake verdict may spend on path building, over every vendor
/// profile. A genuine chain needs one per certificate on the path (at most `MAX_PATH_LEN`, 6),
/// plus one per bundle CA that shares a subject with the right one (a re-keyed root); a client
/// that sends many intermediates with the same subject (each a candidate issuer) must not make
/// the edge verify a signature for each of them before it is authenticated (issue 11 point 6).
pub const MAX_SIGNATURE_CHECKS: usize = 16;

/// The signature checks left for one verdict; see [`MAX_SIGNATURE_CHECKS`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignatureBudget {
    remaining: usize,
    spent: usize,
}

impl SignatureBudget {
    /// A budget of `checks` signature verifications.
    pub const fn new(checks: usize) -> Self {
        Self {
            remaining: checks,
            spent: 0,
        }
    }

    /// Takes one check; false when none is left.
    fn take(&mut self) -> bool {
        if self.remaining == 0 {
            return false;
        }
        self.remaining -= 1;
        self.spent += 1;
        true
    }

    /// Signature checks spent so far.
    pub const fn spent(&self) -> usize {
        self.spent
    }
}

impl Default for SignatureBudget {
    fn default() -> Self {
        Self::new(MAX_SIGNATURE_CHECKS)
    }
}

/// Result of walking a chain against one vendor's CA bundle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathOutcome<'a> {
    /// A path to one of the bundle's CAs with every signature valid.
    Found(CertPath<'a>),
    /// A bundle CA is named as issuer somewhere, but the path does not verify.
    Broken(String),
    /// Nothing in the chain names a bundle CA.
    NoIssuer,
    /// The [`SignatureBudget`] ran out before a path was found.
    BudgetExhausted,
}

/// Why a path is legacy crypto.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LegacyFinding {
    /// The certificate (by subject) is signed with SHA-1.
    Sha1Signature(String),
    /// The certificate (by subject) has an RSA key of this many bits.
    ShortRsaKey(String, usize),
}

impl std::fmt::Display for LegacyFinding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Sha1Signature(subject) => write!(f, "SHA-1 signature on {subject}"),
            Self::ShortRsaKey(subject, bits) => write!(f, "RSA-{bits} key in {subject}"),
        }
    }
}

/// Parses one certificate, refusing trailing bytes.
pub fn parse_certificate(der: &[u8]) -> Option<X509Certificate<'_>> {
    match X509Certificate::from_der(der) {
        Ok(([], cert)) => Some(cert),
        _ => None,
    }
}

/// Walks from `end_entity` up through `presented` intermediates and the bundle's own
/// certificates until a certificate of `bundle` signs the current one, with a fresh
/// [`SignatureBudget`].
pub fn build_path<'a>(
    end_entity: &'a [u8],
    presented: &[&'a [u8]],
    bundle: &[&'a [u8]],
) -> PathOutcome<'a> {
    build_path_within(
        end_entity,
        presented,
        bundle,
        &mut SignatureBudget::default(),
    )
}

/// [`build_path`] spending signature checks from `budget` (shared by every vendor tried for
/// one handshake). A candidate issuer is chosen by name first (its subject is the current
/// certificate's issuer, RFC 5280 §6.1): a signature is checked only for such a candidate.
pub fn build_path_within<'a>(
    end_entity: &'a [u8],
    presented: &[&'a [u8]],
    bundle: &[&'a [u8]],
    budget: &mut SignatureBudget,
) -> PathOutcome<'a> {
    let Some(leaf) = parse_certificate(end_entity) else {
        return PathOutcome::Broken("end-entity certificate is not valid X.509".into());
    };
    let anchors: Vec<(&[u8], X509Certificate<'_>)> = bundle
        .iter()
        .filter_map(|der| parse_certificate(der).map(|c| (*der, c)))
        .collect();
    let intermediates: Vec<(&[u8], X509Certificate<'_>)> = presented
        .iter()
        .filter_map(|der| parse_certificate(der).map(|c| (*der, c)))
        .collect();

    let mut certs = vec![end_entity];
    let mut current = leaf;
    let mut name_matched = false;
    let mut failure = String::new();
    for _ in 0..MAX_PATH_LEN {
        for (der, anchor) in &anchors {
            if anchor.subject().as_raw() != current.issuer().as_raw() {
                continue;
            }
            name_matched = true;
            if !budget.take() {
                return PathOutcome::BudgetExhausted;
            }
            match verify_signed_by(&current, anchor) {
                Ok(()) => {
                    certs.push(der);
                    return PathOutcome::Found(CertPath { certs });
                }
                Err(why) => {
                    failure = format!(
                        "{} not signed by CA {}: {why}",
                        current.subject(),
                        anchor.subject()
                    )
                }
            }
        }
        let mut next = None;
        for (der, candidate) in &intermediates {
            if candidate.subject().as_raw() != current.issuer().as_raw() || certs.contains(der) {
                continue;
            }
            if !budget.take() {
                return PathOutcome::BudgetExhausted;
            }
            if verify_signed_by(&current, candidate).is_ok() {
                next = Some((*der, candidate));
                break;
            }
        }
        let Some((der, next)) = next else {
            break;
        };
        certs.push(der);
        current = next.clone();
    }
    // The issuer might still be known by name higher up in what the client sent.
    if !name_matched {
        name_matched = intermediates.iter().any(|(_, c)| {
            anchors
                .iter()
                .any(|(_, a)| a.subject().as_raw() == c.issuer().as_raw())
        });
        if name_matched {
            failure = "a presented intermediate names a configured CA but the chain to it is \
                       broken"
                .into();
        }
    }
    if name_matched {
        PathOutcome::Broken(failure)
    } else {
        PathOutcome::NoIssuer
    }
}

/// Whether a certificate of `bundle` has as subject the issuer name of `end_entity` or of one
/// of `presented`: the name-only test (no signature) that picks the vendor profiles worth
/// building a path for.
pub fn names_a_bundle_ca(end_entity: &[u8], presented: &[&[u8]], bundle: &[&[u8]]) -> bool {
    let issuers: Vec<X509Certificate<'_>> = std::iter::once(end_entity)
        .chain(presented.iter().copied())
        .filter_map(parse_certificate)
        .collect();
    bundle
        .iter()
        .filter_map(|der| parse_certificate(der))
        .any(|ca| {
            issuers
                .iter()
                .any(|c| c.issuer().as_raw() == ca.subject().as_raw())
        })
}

/// Legacy-crypto findings on a path (SHA-1 below the anchor, RSA < 2048 anywhere).
pub fn legacy_findings(path: &CertPath<'_>) -> Vec<LegacyFinding> {
    let mut findings = Vec::new();
    let last = path.certs.len().saturating_sub(1);
    for (index, der) in path.certs.iter().enumerate() {
        let Some(cert) = parse_certificate(der) else {
            continue;
        };
        let subject = cert.subject().to_string();
        if index < last && is_sha1(&cert.signature_algorithm.algorithm) {
            findings.push(LegacyFinding::Sha1Signature(subject.clone()));
        }
        if let Ok(PublicKey::RSA(rsa)) = cert.public_key().parsed() {
            let bits = rsa.key_size();
            if bits < MIN_RSA_BITS {
                findings.push(LegacyFinding::ShortRsaKey(subject, bits));
            }
        }
    }
    findings
}

fn is_sha1(oid: &Oid<'_>) -> bool {
    *oid == OID_PKCS1_SHA1WITHRSA || *oid == OID_SHA1_WITH_RSA
}

/// Verifies a legacy path (see the module doc) at `now` (seconds since the Unix epoch) against
/// the vendor's CRLs (DER).
pub fn verify_legacy_path(
    path: &CertPath<'_>,
    crls: &[&[u8]],
    now: i64,
) -> Result<(), (HandshakeRejection, String)> {
    let parsed: Vec<X509Certificate<'_>> = path
        .certs
        .iter()
        .map(|der| parse_certificate(der))
        .collect::<Option<_>>()
        .ok_or((
            HandshakeRejection::Other,
            "certificate does not parse".to_owned(),
        ))?;
    let crls: Vec<CertificateRevocationList<'_>> = crls
        .iter()
        .filter_map(|der| match CertificateRevocationList::from_der(der) {
            Ok((_, crl)) => Some(crl),
            Err(_) => None,
        })
        .collect();
    let below_anchor = parsed.len().saturating_sub(1);
    for (index, cert) in parsed.iter().enumerate().take(below_anchor) {
        let subject = cert.subject().to_string();
        let validity = cert.validity();
        if now < validity.not_before.timestamp() {
            return Err((
                HandshakeRejection::NotYetValid,
                format!("{subject} not valid before {}", validity.not_before),
            ));
        }
        if now > validity.not_after.timestamp() {
            return Err((
                HandshakeRejection::Expired,
                format!("{subject} expired {}", validity.not_after),
            ));
        }
        for extension in cert.extensions() {
            if extension.critical
                && matches!(
                    extension.parsed_extension(),
                    ParsedExtension::UnsupportedExtension { .. }
                )
            {
                return Err((
                    HandshakeRejection::UntrustedChain,
                    format!("{subject} has unknown critical extension {}", extension.oid),
                ));
            }
        }
        if index == 0 {
            check_end_entity_usage(cert)?;
        }
        // The issuer of `cert` is the next certificate on the path.
        let Some(issuer) = parsed.get(index + 1) else {
            continue;
        };
        check_issuer(issuer, index)?;
        verify_signed_by(cert, issuer).map_err(|why| {
            (
                HandshakeRejection::UntrustedChain,
                format!("{subject}: {why}"),
            )
        })?;
        check_crls(cert, issuer, &crls)?;
    }
    Ok(())
}

/// End entity: key usage (if present) must allow digitalSignature, EKU (if present) clientAuth
/// (RFC 5280 §4.2.1.3, §4.2.1.12); a CA certificate is not a device certificate.
fn check_end_entity_usage(cert: &X509Certificate<'_>) -> Result<(), (HandshakeRejection, String)> {
    let subject = cert.subject().to_string();
    let bad = |what: &str| {
        (
            HandshakeRejection::BadKeyUsage,
            format!("{subject}: {what}"),
        )
    };
    if let Ok(Some(usage)) = cert.key_usage() {
        if !usage.value.digital_signature() {
            return Err(bad("key usage lacks digitalSignature"));
        }
    }
    if let Ok(Some(eku)) = cert.extended_key_usage() {
        if !(eku.value.client_auth || eku.value.any) {
            return Err(bad("extended key usage lacks clientAuth"));
        }
    }
    if let Ok(Some(constraints)) = cert.basic_constraints() {
        if constraints.value.ca {
            return Err(bad("a CA certificate used as device certificate"));
        }
    }
    Ok(())
}

/// An issuer must be a CA (basicConstraints), may sign certificates (keyCertSign if key usage
/// is present) and its pathLen must allow `below` intermediates under it (RFC 5280 §4.2.1.9).
fn check_issuer(
    issuer: &X509Certificate<'_>,
    below: usize,
) -> Result<(), (HandshakeRejection, String)> {
    let subject = issuer.subject().to_string();
    match issuer.basic_constraints() {
        Ok(Some(constraints)) if constraints.value.ca => {
            if let Some(limit) = constraints.value.path_len_constraint {
                if below > limit as usize {
                    return Err((
                        HandshakeRejection::UntrustedChain,
                        format!("{subject}: path length constraint {limit} exceeded"),
                    ));
                }
            }
        }
        _ => {
            return Err((
                HandshakeRejection::UntrustedChain,
                format!("{subject} is not a CA"),
            ));
        }
    }
    if let Ok(Some(usage)) = issuer.key_usage() {
        if !usage.value.key_cert_sign() {
            return Err((
                HandshakeRejection::BadKeyUsage,
                format!("{subject}: key usage lacks keyCertSign"),
            ));
        }
    }
    Ok(())
}

/// Whether a CRL issued (and signed) by `issuer` lists `cert`.
fn check_crls(
    cert: &X509Certificate<'_>,
    issuer: &X509Certificate<'_>,
    crls: &[CertificateRevocationList<'_>],
) -> Result<(), (HandshakeRejection, String)> {
    for crl in crls {
        if crl.issuer().as_raw() != issuer.subject().as_raw() {
            continue;
        }
        if verify_signature(
            issuer,
            &crl.signature_algorithm,
            &crl.signature_value.data,
            crl.tbs_cert_list.as_ref(),
        )
        .is_err()
        {
            continue;
        }
        if crl
            .iter_revoked_certificates()
            .any(|r| r.raw_serial() == cert.raw_serial())
        {
            return Err((
                HandshakeRejection::Revoked,
                format!(
                    "{} serial {} revoked by CRL of {}",
                    cert.subject(),
                    cert.raw_serial_as_string(),
                    issuer.subject()
                ),
            ));
        }
    }
    Ok(())
}

/// Checks `cert`'s signature with `issuer`'s public key, accepting legacy algorithms.
pub fn verify_signed_by(
    cert: &X509Certificate<'_>,
    issuer: &X509Certificate<'_>,
) -> Result<(), &'static str> {
    verify_signature(
        issuer,
        &cert.signature_algorithm,
        &cert.signature_value.data,
        cert.tbs_certificate.as_ref(),
    )
}

fn verify_signature(
    signer: &X509Certificate<'_>,
    algorithm: &AlgorithmIdentifier<'_>,
    signature_value: &[u8],
    signed: &[u8],
) -> Result<(), &'static str> {
    let algorithm =
        verification_algorithm(signer, algorithm).ok_or("unsupported signature algorithm")?;
    let key = &signer.public_key().subject_public_key.data;
    UnparsedPublicKey::new(algorithm, key.as_ref())
        .verify(signed, signature_value)
        .map_err(|_| "bad signature")
}

/// The ring algorithm for a certificate/CRL signature, including the legacy ones webpki refuses
/// (SHA-1, RSA keys from 1024 bits). Whether legacy is acceptable is decided by the caller from
/// [`legacy_findings`], not here.
fn verification_algorithm(
    signer: &X509Certificate<'_>,
    algorithm: &AlgorithmIdentifier<'_>,
) -> Option<&'static dyn VerificationAlgorithm> {
    let oid = &algorithm.algorithm;
    if is_sha1(oid) {
        return Some(&signature::RSA_PKCS1_1024_8192_SHA1_FOR_LEGACY_USE_ONLY);
    }
    if *oid == OID_PKCS1_SHA256WITHRSA {
        return Some(&signature::RSA_PKCS1_1024_8192_SHA256_FOR_LEGACY_USE_ONLY);
    }
    if *oid == OID_PKCS1_SHA384WITHRSA {
        return Some(&signature::RSA_PKCS1_2048_8192_SHA384);
    }
    if *oid == OID_PKCS1_SHA512WITHRSA {
        return Some(&signature::RSA_PKCS1_1024_8192_SHA512_FOR_LEGACY_USE_ONLY);
    }
    if *oid == OID_SIG_ED25519 {
        return Some(&signature::ED25519);
    }
    let curve = signer
        .public_key()
        .algorithm
        .parameters
        .as_ref()?
        .as_oid()
        .ok()?;
    match (oid, curve) {
        (o, c) if *o == OID_SIG_ECDSA_WITH_SHA256 && c == OID_EC_P256 => {
            Some(&signature::ECDSA_P256_SHA256_ASN1)
        }
        (o, c) if *o == OID_SIG_ECDSA_WITH_SHA256 && c == OID_NIST_EC_P384 => {
            Some(&signature::ECDSA_P384_SHA256_ASN1)
        }
        (o, c) if *o == OID_SIG_ECDSA_WITH_SHA384 && c == OID_EC_P256 => {
            Some(&signature::ECDSA_P256_SHA384_ASN1)
        }
        (o, c) if *o == OID_SIG_ECDSA_WITH_SHA384 && c == OID_NIST_EC_P384 => {
            Some(&signature::ECDSA_P384_SHA384_ASN1)
        }
        _ => None,
    }
}
