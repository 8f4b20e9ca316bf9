//! The client-certificate verifier for the phone listener, and [`identity_of`].
//!
//! [`TrustState::verify`] is the whole verdict, in this order:
//! 0. the presented chain's size: more than `tls.max_client_chain_certs` certificates or
//!    `tls.max_client_chain_bytes` bytes → `chain_too_large`, before anything is parsed;
//! 1. path building against each enabled vendor's CA bundle (`chain::build_path`): no vendor CA
//!    named → `issuer_unknown`; named but broken → `untrusted_chain`. Only vendors whose CA is
//!    named as issuer somewhere in the chain are tried (a name comparison, no signature), and
//!    all of them together spend at most `chain::MAX_SIGNATURE_CHECKS` signature checks
//!    (`signature_budget_exceeded`), so an unauthenticated client cannot buy hundreds of
//!    signature verifications with one Certificate message;
//! 2. legacy crypto (SHA-1, RSA < 2048): refused unless the vendor has `legacy_crypto = true`,
//!    then verified by `chain::verify_legacy_path` (webpki refuses SHA-1 outright); otherwise
//!    webpki verifies (validity, key usage/EKU, CRLs);
//! 3. the vendor profile reads the MAC (or recognises the shared certificate) and checks OUIs;
//! 4. the MAC deny-list (`revoked`) and the inventory (`mac_not_in_inventory`).
//!
//! Every refusal is counted and logged with vendor and subject through [`HandshakeCounters`].

use std::sync::Arc;

use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, WebPkiSupportedAlgorithms};
use rustls::pki_types::{
    alg_id, AlgorithmIdentifier, InvalidSignature, SignatureVerificationAlgorithm,
};
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, Error as TlsError, SignatureScheme};
use x509_parser::public_key::PublicKey;

use crate::config::ClientCertMode;
use crate::identity::chain::{
    build_path_within, legacy_findings, names_a_bundle_ca, parse_certificate, verify_legacy_path,
    CertPath, LegacyFinding, PathOutcome, SignatureBudget,
};
use crate::identity::profile::Identification;
use crate::identity::rejection::{CertificateRejection, HandshakeCounters, HandshakeRejection};
use crate::identity::snapshot::IdentitySnapshot;

// The trust data this module verifies against (loaded by `store`); named here too, beside
// the verdict over them.
pub use crate::identity::trust::{ChainLimits, TrustState, TrustedCa, VendorTrust};
use crate::identity::Identity;

/// A certificate chain that passed every check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedDevice {
    /// The identity.
    pub identity: Identity,
    /// Legacy crypto accepted on the path (empty for modern chains).
    pub legacy: Vec<LegacyFinding>,
    /// The MAC is outside the vendor OUIs (accepted with a warning).
    pub outside_ouis: bool,
}

/// The chain's vendor and its path, before time-dependent checks.
struct Matched<'t> {
    vendor: &'t VendorTrust,
    path: CertPath<'t>,
    legacy: Vec<LegacyFinding>,
}

impl TrustState {
    /// The full handshake verdict for a presented chain at `now`.
    pub fn verify(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<VerifiedDevice, CertificateRejection> {
        let subject = parse_certificate(end_entity)
            .map(|c| c.subject().to_string())
            .unwrap_or_else(|| "(unparseable certificate)".to_owned());
        let reject = |reason, vendor: Option<&VendorTrust>, detail: String| CertificateRejection {
            reason,
            vendor: vendor.map(|v| v.profile.name.clone()),
            subject: subject.clone(),
            detail,
        };
        let matched = self
            .match_vendor(end_entity, intermediates)
            .map_err(|(reason, vendor, detail)| reject(reason, vendor, detail))?;
        let vendor = matched.vendor;

        if matched.legacy.is_empty() {
            let webpki = vendor.webpki.as_ref().ok_or_else(|| {
                reject(
                    HandshakeRejection::UntrustedChain,
                    Some(vendor),
                    "no usable CA".into(),
                )
            })?;
            // webpki gets only the intermediates of the path found above, not everything the
            // client sent: its own path search over many same-name candidates is
            // combinatorial (it gives up after 100 signature checks, a cost an
            // unauthenticated client could ask for on every handshake). It still verifies that
            // path in full: signatures, validity, key usage, EKU, CRLs.
            let path_intermediates: Vec<CertificateDer<'_>> = matched
                .path
                .certs
                .get(1..matched.path.certs.len().saturating_sub(1))
                .unwrap_or_default()
                .iter()
                .map(|der| CertificateDer::from(*der))
                .collect();
            if let Err(error) = webpki.verify_client_cert(end_entity, &path_intermediates, now) {
                let reason = match &error {
                    TlsError::InvalidCertificate(e) => {
                        HandshakeRejection::from_certificate_error(e)
                    }
                    _ => HandshakeRejection::Other,
                };
                return Err(reject(reason, Some(vendor), error.to_string()));
            }
        } else {
            let findings: Vec<String> = matched.legacy.iter().map(ToString::to_string).collect();
            if !vendor.profile.legacy_crypto {
                return Err(reject(
                    HandshakeRejection::LegacyCryptoRefused,
                    Some(vendor),
                    format!(
                        "{}; set vendors.{}.legacy_crypto = true to accept",
                        findings.join(", "),
                        vendor.profile.name
                    ),
                ));
            }
            let path = &matched.path;
            let crls: Vec<&[u8]> = vendor.crls.iter().map(|c| c.as_ref()).collect();
            let now_secs = i64::try_from(now.as_secs()).unwrap_or(i64::MAX);
            verify_legacy_path(path, &crls, now_secs)
                .map_err(|(reason, detail)| reject(reason, Some(vendor), detail))?;
        }

        let Some(cert) = parse_certificate(end_entity) else {
            return Err(reject(
                HandshakeRejection::Other,
                Some(vendor),
                "unparseable".into(),
            ));
        };
        let (identity, outside_ouis) = match vendor.profile.identify(&cert) {
            Identification::Device { mac, outside_ouis } => (
                Identity::Device {
                    vendor: vendor.profile.name.clone(),
                    mac,
                },
                outside_ouis,
            ),
            Identification::Shared => (
                Identity::Shared {
                    vendor: vendor.profile.name.clone(),
                },
                false,
            ),
            Identification::Refuse(reason, detail) => {
                return Err(reject(reason, Some(vendor), detail))
            }
        };
        if let Some(mac) = identity.mac() {
            if self.deny_list.contains(&mac) {
                return Err(reject(
                    HandshakeRejection::Revoked,
                    Some(vendor),
                    format!("MAC {mac} is in the deny-list"),
                ));
            }
        }
        if !self.inventory.admits(&identity) {
            return Err(reject(
                HandshakeRejection::MacNotInInventory,
                Some(vendor),
                format!("{identity} is not in the inventory"),
            ));
        }
        Ok(VerifiedDevice {
            identity,
            legacy: matched.legacy,
            outside_ouis,
        })
    }

    /// The identity a verified chain carries, without time-dependent checks (used after the
    /// handshake, see [`identity_of`]).
    pub fn identify(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
    ) -> Result<Identity, CertificateRejection> {
        let subject = parse_certificate(end_entity)
            .map(|c| c.subject().to_string())
            .unwrap_or_default();
        let reject = |reason, vendor: Option<String>, detail| CertificateRejection {
            reason,
            vendor,
            subject: subject.clone(),
            detail,
        };
        let matched = self
            .match_vendor(end_entity, intermediates)
            .map_err(|(r, v, d)| reject(r, v.map(|v| v.profile.name.clone()), d))?;
        let name = matched.vendor.profile.name.clone();
        let cert = parse_certificate(end_entity)
            .ok_or_else(|| reject(HandshakeRejection::Other, Some(name.clone()), String::new()))?;
        match matched.vendor.profile.identify(&cert) {
            Identification::Device { mac, .. } => Ok(Identity::Device { vendor: name, mac }),
            Identification::Shared => Ok(Identity::Shared { vendor: name }),
            Identification::Refuse(reason, detail) => Err(reject(reason, Some(name), detail)),
        }
    }

    /// The first vendor whose CA bundle the chain leads to. Refuses an oversized chain before
    /// parsing it, tries only the vendors whose CA the chain names (by DN), and spends one
    /// [`SignatureBudget`] over all of them.
    #[allow(clippy::type_complexity)]
    fn match_vendor<'a>(
        &'a self,
        end_entity: &'a CertificateDer<'_>,
        intermediates: &'a [CertificateDer<'_>],
    ) -> Result<Matched<'a>, (HandshakeRejection, Option<&'a VendorTrust>, String)> {
        self.match_vendor_within(end_entity, intermediates, &mut SignatureBudget::default())
    }

    #[allow(clippy::type_complexity)]
    fn match_vendor_within<'a>(
        &'a self,
        end_entity: &'a CertificateDer<'_>,
        intermediates: &'a [CertificateDer<'_>],
        budget: &mut SignatureBudget,
    ) -> Result<Matched<'a>, (HandshakeRejection, Option<&'a VendorTrust>, String)> {
        if let Some(detail) = self.limits.exceeded(end_entity, intermediates) {
            return Err((HandshakeRejection::ChainTooLarge, None, detail));
        }
        if parse_certificate(end_entity).is_none() {
            return Err((
                HandshakeRejection::Other,
                None,
                "certificate is not valid X.509".into(),
            ));
        }
        let chain: Vec<&[u8]> = intermediates.iter().map(|c| c.as_ref()).collect();
        let mut broken: Option<(&VendorTrust, String)> = None;
        for vendor in &self.vendors {
            let bundle: Vec<&[u8]> = vendor.cas.iter().map(|c| c.der.as_ref()).collect();
            if !names_a_bundle_ca(end_entity, &chain, &bundle) {
                continue;
            }
            match build_path_within(end_entity, &chain, &bundle, budget) {
                PathOutcome::Found(path) => {
                    let legacy = legacy_findings(&path);
                    return Ok(Matched {
                        vendor,
                        path,
                        legacy,
                    });
                }
                PathOutcome::Broken(detail) => {
                    broken.get_or_insert((vendor, detail));
                }
                PathOutcome::NoIssuer => {}
                PathOutcome::BudgetExhausted => {
                    return Err((
                        HandshakeRejection::SignatureBudgetExceeded,
                        Some(vendor),
                        format!(
                            "no path after {} signature checks over {} presented \
                             certificates",
                            budget.spent(),
                            chain.len() + 1
                        ),
                    ));
                }
            }
        }
        Err(match broken {
            Some((vendor, detail)) => (HandshakeRejection::UntrustedChain, Some(vendor), detail),
            None => (
                HandshakeRejection::UnknownIssuer,
                None,
                "issuer is not a CA of any enabled vendor profile".into(),
            ),
        })
    }
}

/// The identity of a connection after its handshake, from `ServerConnection::peer_certificates()`
/// (`None` or empty = [`Identity::Anonymous`]). Re-derives vendor and MAC from the chain
/// against `snapshot` (no clock involved). Fails only if the snapshot changed since the
/// handshake so that the chain no longer matches a vendor; treat that like a revocation.
pub fn identity_of(
    peer_certificates: Option<&[CertificateDer<'_>]>,
    snapshot: &IdentitySnapshot,
) -> Result<Identity, CertificateRejection> {
    match peer_certificates {
        Some([end_entity, intermediates @ ..]) => {
            snapshot.trust().identify(end_entity, intermediates)
        }
        _ => Ok(Identity::Anonymous),
    }
}

/// rustls `ClientCertVerifier` over a [`TrustState`], with the `client_cert` mode.
#[derive(Debug)]
pub struct DeviceCertVerifier {
    trust: Arc<TrustState>,
    mode: ClientCertMode,
    counters: Arc<HandshakeCounters>,
    hints: Vec<DistinguishedName>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl DeviceCertVerifier {
    /// A verifier for `trust`; refusals are counted in `counters`.
    pub fn new(
        trust: Arc<TrustState>,
        mode: ClientCertMode,
        counters: Arc<HandshakeCounters>,
    ) -> Self {
        let mut hints: Vec<DistinguishedName> = Vec::new();
        for vendor in &trust.vendors {
            for ca in &vendor.cas {
                if let Some(cert) = parse_certificate(&ca.der) {
                    let raw = cert.subject().as_raw();
                    if !hints.iter().any(|h| h.as_ref() == raw) {
                        hints.push(DistinguishedName::from(raw.to_vec()));
                    }
                }
            }
        }
        let algorithms = rustls::crypto::ring::default_provider().signature_verification_algorithms;
        Self {
            trust,
            mode,
            counters,
            hints,
            algorithms,
        }
    }
}

impl DeviceCertVerifier {
    /// Counts a CertificateVerify that failed (key possession not proven, or an RSA-1024 key on
    /// TLS 1.3): the certificate itself passed, so the verifier has not counted it yet.
    fn record_signature_failure(&self, cert: &CertificateDer<'_>, error: &TlsError) {
        let (vendor, subject) = match self.trust.identify(cert, &[]) {
            Ok(identity) => (identity.vendor().map(str::to_owned), String::new()),
            Err(rejection) => (rejection.vendor, rejection.subject),
        };
        let subject = if subject.is_empty() {
            parse_certificate(cert)
                .map(|c| c.subject().to_string())
                .unwrap_or_default()
        } else {
            subject
        };
        self.counters.record_rejection(&CertificateRejection {
            reason: HandshakeRejection::from_tls_error(error),
            vendor,
            subject,
            detail: format!("handshake signature (CertificateVerify) refused: {error}"),
        });
    }
}

/// Whether the certificate's key is RSA under 2048 bits.
fn has_short_rsa_key(cert: &CertificateDer<'_>) -> bool {
    parse_certificate(cert).is_some_and(
        |c| matches!(c.public_key().parsed(), Ok(PublicKey::RSA(rsa)) if rsa.key_size() < 2048),
    )
}

/// RSA PKCS#1 v1.5 verification accepting 1024-bit keys (ring `*_FOR_LEGACY_USE_ONLY`), for the
/// TLS 1.2 CertificateVerify of legacy devices.
#[derive(Debug)]
struct LegacyRsaPkcs1 {
    ring: &'static dyn ring::signature::VerificationAlgorithm,
    signature_alg_id: AlgorithmIdentifier,
}

impl SignatureVerificationAlgorithm for LegacyRsaPkcs1 {
    fn verify_signature(
        &self,
        public_key: &[u8],
        message: &[u8],
        signature: &[u8],
    ) -> Result<(), InvalidSignature> {
        ring::signature::UnparsedPublicKey::new(self.ring, public_key)
            .verify(message, signature)
            .map_err(|_| InvalidSignature)
    }

    fn public_key_alg_id(&self) -> AlgorithmIdentifier {
        alg_id::RSA_ENCRYPTION
    }

    fn signature_alg_id(&self) -> AlgorithmIdentifier {
        self.signature_alg_id
    }
}

static LEGACY_RSA_PKCS1_SHA256: LegacyRsaPkcs1 = LegacyRsaPkcs1 {
    ring: &ring::signature::RSA_PKCS1_1024_8192_SHA256_FOR_LEGACY_USE_ONLY,
    signature_alg_id: alg_id::RSA_PKCS1_SHA256,
};

static LEGACY_RSA_PKCS1_SHA512: LegacyRsaPkcs1 = LegacyRsaPkcs1 {
    ring: &ring::signature::RSA_PKCS1_1024_8192_SHA512_FOR_LEGACY_USE_ONLY,
    signature_alg_id: alg_id::RSA_PKCS1_SHA512,
};

static LEGACY_TLS12_ALGORITHMS: WebPkiSupportedAlgorithms = WebPkiSupportedAlgorithms {
    all: &[&LEGACY_RSA_PKCS1_SHA256, &LEGACY_RSA_PKCS1_SHA512],
    mapping: &[
        (
            SignatureScheme::RSA_PKCS1_SHA256,
            &[&LEGACY_RSA_PKCS1_SHA256],
        ),
        (
            SignatureScheme::RSA_PKCS1_SHA512,
            &[&LEGACY_RSA_PKCS1_SHA512],
        ),
    ],
};

impl ClientCertVerifier for DeviceCertVerifier {
    fn offer_client_auth(&self) -> bool {
        self.mode != ClientCertMode::Off
    }

    fn client_auth_mandatory(&self) -> bool {
        self.mode == ClientCertMode::Required
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &self.hints
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, TlsError> {
        match self.trust.verify(end_entity, intermediates, now) {
            Ok(verified) => {
                if let Some(vendor) = verified.identity.vendor() {
                    if !verified.legacy.is_empty() {
                        tracing::warn!(vendor, identity = %verified.identity, "legacy crypto accepted");
                        self.counters.record_legacy_accepted(vendor);
                    }
                    if verified.outside_ouis {
                        tracing::warn!(vendor, identity = %verified.identity, "MAC outside vendor OUIs");
                        self.counters.record_outside_ouis_accepted(vendor);
                    }
                }
                Ok(ClientCertVerified::assertion())
            }
            Err(rejection) => {
                self.counters.record_rejection(&rejection);
                Err(rejection.to_tls_error())
            }
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, TlsError> {
        // `cert` passed verify_client_cert, so an RSA key under 2048 bits means its vendor has
        // legacy_crypto = true; ring's legacy PKCS#1 algorithms verify it (TLS 1.2 only: TLS 1.3
        // needs RSA-PSS, which ring offers from 2048 bits only).
        let algorithms = if has_short_rsa_key(cert) {
            &LEGACY_TLS12_ALGORITHMS
        } else {
            &self.algorithms
        };
        verify_tls12_signature(message, cert, dss, algorithms)
            .inspect_err(|error| self.record_signature_failure(cert, error))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, TlsError> {
        verify_tls13_signature(message, cert, dss, &self.algorithms)
            .inspect_err(|error| self.record_signature_failure(cert, error))
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::VendorConfig;
    use crate::identity::deny_list::MacDenyList;
    use crate::identity::inventory::Inventory;
    use crate::identity::profile::profiles_from_config;
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
    use std::collections::BTreeMap;
    use std::path::{Path, PathBuf};

    struct TestCa {
        params: CertificateParams,
        key: KeyPair,
        der: CertificateDer<'static>,
    }

    /// A device certificate (CN = a Snom MAC) issued by `issuer`.
    fn device_leaf(issuer: &TestCa) -> CertificateDer<'static> {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::default();
        params
            .distinguished_name
            .push(DnType::CommonName, "000413A1B2C3");
        params
            .signed_by(&key, &Issuer::from_params(&issuer.params, &issuer.key))
            .unwrap()
            .der()
            .clone()
    }

    fn ca(cn: &str, parent: Option<&TestCa>) -> TestCa {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, cn);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let cert = match parent {
            Some(p) => params
                .signed_by(&key, &Issuer::from_params(&p.params, &p.key))
                .unwrap(),
            None => params.self_signed(&key).unwrap(),
        };
        TestCa {
            der: cert.der().clone(),
            params,
            key,
        }
    }

    fn trust(vendors: Vec<(&str, &TestCa)>) -> TrustState {
        let names: BTreeMap<String, VendorConfig> = vendors
            .iter()
            .map(|(name, _)| {
                (
                    (*name).to_owned(),
                    VendorConfig {
                        ca: vec![PathBuf::from("unused.pem")],
                        mac_from: Some("cn".into()),
                        ..VendorConfig::default()
                    },
                )
            })
            .collect();
        let profiles = profiles_from_config(&names, Path::new("x")).unwrap();
        TrustState {
            vendors: vendors
                .iter()
                .map(|(name, root)| VendorTrust {
                    profile: profiles.iter().find(|p| p.name == *name).unwrap().clone(),
                    cas: vec![TrustedCa {
                        der: root.der.clone(),
                        file: PathBuf::from("unused.pem"),
                    }],
                    crls: Vec::new(),
                    webpki: None,
                })
                .collect(),
            inventory: Inventory::default(),
            deny_list: MacDenyList::default(),
            limits: ChainLimits::DEFAULT,
        }
    }

    #[test]
    fn only_vendors_whose_ca_the_chain_names_spend_signature_checks() {
        // Issue 11 point 6: three vendors before the right one. Path building does not depend
        // on the vendor until the anchor, so trying each would verify the device's signature
        // under its intermediate once per vendor; picked by issuer name, only the right
        // vendor's path is built: 2 checks (device by intermediate, intermediate by root).
        let others: Vec<TestCa> = ["A root", "B root", "C root"]
            .iter()
            .map(|cn| ca(cn, None))
            .collect();
        let root = ca("Snom root", None);
        let phone = ca("Snom Phone 1", Some(&root));
        let leaf = device_leaf(&phone);
        let state = trust(vec![
            ("acme", &others[0]),
            ("bcme", &others[1]),
            ("ccme", &others[2]),
            ("snom", &root),
        ]);
        let intermediates = [phone.der.clone()];
        let mut budget = SignatureBudget::default();
        let matched = state
            .match_vendor_within(&leaf, &intermediates, &mut budget)
            .map_err(|(reason, _, detail)| format!("{reason:?}: {detail}"))
            .unwrap();
        assert_eq!(matched.vendor.profile.name, "snom");
        assert_eq!(budget.spent(), 2);
    }

    #[test]
    fn the_signature_budget_is_shared_by_all_vendors_of_one_verdict() {
        // Junk intermediates named like the device's issuer, each also naming one vendor's
        // CA as its issuer so that every vendor is a candidate: the verdict stops at
        // MAX_SIGNATURE_CHECKS in total, with its own reason.
        let roots: Vec<TestCa> = ["A root", "B root", "C root", "D root"]
            .iter()
            .map(|cn| ca(cn, None))
            .collect();
        let phone = ca("Phone CA", Some(&roots[3]));
        let leaf = device_leaf(&phone);
        let mut junk = Vec::new();
        for root in roots.iter().cycle().take(40) {
            // Subject "Phone CA" (a candidate issuer of the leaf), issued by a vendor root.
            junk.push(ca("Phone CA", Some(root)).der);
        }
        let mut state = trust(vec![
            ("acme", &roots[0]),
            ("bcme", &roots[1]),
            ("ccme", &roots[2]),
            ("dcme", &roots[3]),
        ]);
        state.limits = ChainLimits {
            max_certs: 1000,
            max_bytes: 1 << 20,
        };
        let mut budget = SignatureBudget::default();
        let Err((reason, _, _)) = state.match_vendor_within(&leaf, &junk, &mut budget) else {
            panic!("the junk chain must be refused");
        };
        assert_eq!(reason, HandshakeRejection::SignatureBudgetExceeded);
        assert_eq!(budget.spent(), crate::identity::chain::MAX_SIGNATURE_CHECKS);
    }
}
