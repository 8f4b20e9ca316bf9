//! A configured server certificate as a phone will judge it: does it carry the name the phones
//! were given (`sip.domain`), is it valid now and for how long, and does the chain in the file
//! lead to a root the phones already trust (the Mozilla list most phone firmwares ship, from
//! `webpki-roots`) — or to a private CA that must be loaded onto every phone.
//!
//! Phones refuse a server certificate for exactly these reasons (the Digium notes list
//! `EIDENTITY_NOT_MATCH`, `EISSUER_MISMATCH`, `EUNTRUSTED`; Yealink trusts its built-in public
//! roots plus up to 10 uploaded ones), and they do not fetch missing intermediates: the file
//! must hold the leaf and every intermediate. Wildcards (RFC 5922 §7.2) are checked by
//! `validate`. The verification is rustls-webpki's, the one rustls itself uses.
//!
//! PURE apart from its input: the caller passes the time and the roots, so tests can move both.

use rustls_pki_types::{CertificateDer, ServerName, TrustAnchor, UnixTime};
use webpki::{EndEntityCert, KeyUsage};

/// Below this many days of validity left, `check-config` and `run` warn.
pub const EXPIRY_WARNING_DAYS: i64 = 30;

/// Whether the leaf certificate is valid at the given time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Validity {
    /// Valid; this many whole days are left.
    Valid { days_left: i64 },
    /// `notAfter` is in the past.
    Expired { days_ago: i64 },
    /// `notBefore` is in the future.
    NotYetValid,
}

/// What the chain in the file leads to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Trust {
    /// It verifies up to a public root (Mozilla list) with the certificates in the file.
    PublicRoot,
    /// It ends at a certificate whose issuer is neither in the file nor a public root: a
    /// private CA the phones must be given, or an intermediate missing from the file.
    UnknownIssuer {
        /// The issuer the chain stops at (RFC 4514 form).
        issuer: String,
        /// The file ends with a self-signed certificate (a private root sent along), so no
        /// intermediate can be missing.
        ends_at_root: bool,
        /// The leaf is self-signed (no CA at all).
        self_signed_leaf: bool,
    },
    /// rustls-webpki refuses the chain for another reason (e.g. the leaf's extended key usage
    /// excludes TLS server authentication, or a signature algorithm phones cannot check).
    Refused(String),
}

/// The inspection of one chain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Inspection {
    /// The name phones use is among the leaf's subjectAltName entries (DNS name or IP
    /// address; the CN is not looked at, as RFC 6125 §6.4.4 and RFC 5922 §7.1 direct).
    pub covers_name: bool,
    /// The leaf's validity now.
    pub validity: Validity,
    /// Where the chain leads.
    pub trust: Trust,
    /// The leaf's `notAfter`, for messages.
    pub not_after: String,
}

/// Why a chain could not be inspected at all.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum InspectError {
    /// The file holds no certificate.
    #[error("no certificate in the file")]
    Empty,
    /// The leaf does not parse as X.509.
    #[error("the first certificate does not parse: {0}")]
    Unparsable(String),
    /// `sip.domain` is neither a DNS name nor an IP address.
    #[error("sip.domain {0:?} is not a DNS name or an IP address")]
    BadName(String),
}

const DAY: i64 = 86_400;

/// Inspects `chain` (leaf first, as sent in the handshake) for phones that connect to `name`
/// at `now`, against `roots` (normally `webpki_roots::TLS_SERVER_ROOTS`).
pub fn inspect(
    chain: &[CertificateDer<'_>],
    name: &str,
    now: UnixTime,
    roots: &[TrustAnchor<'_>],
) -> Result<Inspection, InspectError> {
    let leaf_der = chain.first().ok_or(InspectError::Empty)?;
    let (_, leaf) = x509_parser::parse_x509_certificate(leaf_der)
        .map_err(|e| InspectError::Unparsable(e.to_string()))?;
    let server_name =
        ServerName::try_from(name).map_err(|_| InspectError::BadName(name.to_owned()))?;
    let end_entity =
        EndEntityCert::try_from(leaf_der).map_err(|e| InspectError::Unparsable(e.to_string()))?;
    let covers_name = end_entity
        .verify_is_valid_for_subject_name(&server_name)
        .is_ok();

    let now_secs = i64::try_from(now.as_secs()).unwrap_or(i64::MAX);
    let not_before = leaf.validity().not_before.timestamp();
    let not_after = leaf.validity().not_after.timestamp();
    let validity = if now_secs < not_before {
        Validity::NotYetValid
    } else if now_secs > not_after {
        Validity::Expired {
            days_ago: (now_secs - not_after) / DAY,
        }
    } else {
        Validity::Valid {
            days_left: (not_after - now_secs) / DAY,
        }
    };

    // The path is checked at a time the leaf is valid, so that an expired certificate is
    // reported once (as expired) and its chain is still judged.
    let at = match validity {
        Validity::Valid { .. } => now,
        _ => UnixTime::since_unix_epoch(std::time::Duration::from_secs(
            u64::try_from(not_before.max(0)).unwrap_or(0) + 1,
        )),
    };
    let intermediates = chain.get(1..).unwrap_or_default();
    let trust = match end_entity.verify_for_usage(
        webpki::ALL_VERIFICATION_ALGS,
        roots,
        intermediates,
        at,
        KeyUsage::server_auth(),
        None,
        None,
    ) {
        Ok(_) => Trust::PublicRoot,
        Err(webpki::Error::UnknownIssuer) => unknown_issuer(chain, &leaf),
        Err(e) => Trust::Refused(format!("{e:?}")),
    };
    Ok(Inspection {
        covers_name,
        validity,
        trust,
        not_after: leaf.validity().not_after.to_string(),
    })
}

/// The issuer the chain in the file stops at.
fn unknown_issuer(
    chain: &[CertificateDer<'_>],
    leaf: &x509_parser::certificate::X509Certificate<'_>,
) -> Trust {
    let self_signed = |c: &x509_parser::certificate::X509Certificate<'_>| {
        c.subject().as_raw() == c.issuer().as_raw()
    };
    let last = chain
        .last()
        .and_then(|der| x509_parser::parse_x509_certificate(der).ok())
        .map(|(_, c)| (c.issuer().to_string(), self_signed(&c)));
    let (issuer, ends_at_root) = last.unwrap_or_else(|| (leaf.issuer().to_string(), false));
    Trust::UnknownIssuer {
        issuer,
        ends_at_root,
        self_signed_leaf: self_signed(leaf),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    };

    const NOW: u64 = 1_800_000_000; // 2027-01-15

    fn now() -> UnixTime {
        UnixTime::since_unix_epoch(std::time::Duration::from_secs(NOW))
    }

    fn ca(name: &str) -> (CertificateParams, KeyPair) {
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name.push(DnType::CommonName, name);
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        p.not_before = rcgen::date_time_ymd(2025, 1, 1);
        p.not_after = rcgen::date_time_ymd(2035, 1, 1);
        (p, KeyPair::generate().unwrap())
    }

    struct Pki {
        root: CertificateDer<'static>,
        intermediate: CertificateDer<'static>,
        leaf: CertificateDer<'static>,
    }

    /// root → intermediate → leaf for `names`, valid until `leaf_until`.
    fn pki(names: &[&str], leaf_until: (i32, u8, u8)) -> Pki {
        let (root_p, root_k) = ca("Test Root");
        let root = root_p.self_signed(&root_k).unwrap();
        let root_issuer = Issuer::new(root_p, root_k);
        let (int_p, int_k) = ca("Test Intermediate");
        let int = int_p.signed_by(&int_k, &root_issuer).unwrap();
        let int_issuer = Issuer::new(int_p, int_k);
        let mut leaf_p =
            CertificateParams::new(names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>())
                .unwrap();
        leaf_p.not_before = rcgen::date_time_ymd(2026, 1, 1);
        leaf_p.not_after = rcgen::date_time_ymd(leaf_until.0, leaf_until.1, leaf_until.2);
        let leaf = leaf_p
            .signed_by(&KeyPair::generate().unwrap(), &int_issuer)
            .unwrap();
        Pki {
            root: root.der().clone(),
            intermediate: int.der().clone(),
            leaf: leaf.der().clone(),
        }
    }

    #[test]
    fn full_chain_to_a_trusted_root() {
        let p = pki(&["sbc.example.com"], (2028, 1, 1));
        let anchor = webpki::anchor_from_trusted_cert(&p.root).unwrap();
        let got = inspect(
            &[p.leaf.clone(), p.intermediate.clone()],
            "sbc.example.com",
            now(),
            &[anchor],
        )
        .unwrap();
        assert!(got.covers_name);
        assert_eq!(got.trust, Trust::PublicRoot);
        assert!(matches!(got.validity, Validity::Valid { days_left } if days_left > 300));
    }

    #[test]
    fn missing_intermediate_stops_at_its_name() {
        let p = pki(&["sbc.example.com"], (2028, 1, 1));
        let anchor = webpki::anchor_from_trusted_cert(&p.root).unwrap();
        let got = inspect(
            std::slice::from_ref(&p.leaf),
            "sbc.example.com",
            now(),
            &[anchor],
        )
        .unwrap();
        assert_eq!(
            got.trust,
            Trust::UnknownIssuer {
                issuer: "CN=Test Intermediate".into(),
                ends_at_root: false,
                self_signed_leaf: false,
            }
        );
    }

    #[test]
    fn private_root_sent_along_is_not_a_missing_intermediate() {
        let p = pki(&["sbc.example.com"], (2028, 1, 1));
        let chain = [p.leaf, p.intermediate, p.root];
        let got = inspect(
            &chain,
            "sbc.example.com",
            now(),
            webpki_roots::TLS_SERVER_ROOTS,
        )
        .unwrap();
        assert!(matches!(
            got.trust,
            Trust::UnknownIssuer { ends_at_root: true, self_signed_leaf: false, ref issuer }
                if issuer == "CN=Test Root"
        ));
    }

    #[test]
    fn name_is_read_from_the_san_only() {
        let p = pki(&["other.example.com", "192.0.2.10"], (2028, 1, 1));
        let roots = webpki_roots::TLS_SERVER_ROOTS;
        let chain = [p.leaf];
        assert!(
            !inspect(&chain, "sbc.example.com", now(), roots)
                .unwrap()
                .covers_name
        );
        assert!(
            inspect(&chain, "other.example.com", now(), roots)
                .unwrap()
                .covers_name
        );
        assert!(
            inspect(&chain, "192.0.2.10", now(), roots)
                .unwrap()
                .covers_name
        );
        assert_eq!(
            inspect(&chain, "not a name", now(), roots).unwrap_err(),
            InspectError::BadName("not a name".into())
        );
    }

    #[test]
    fn validity_counts_days() {
        // NOW is 2027-01-15 08:00 UTC.
        let soon = pki(&["a.example"], (2027, 1, 25));
        let got = inspect(&[soon.leaf], "a.example", now(), &[]).unwrap();
        assert_eq!(got.validity, Validity::Valid { days_left: 9 });
        let gone = pki(&["a.example"], (2027, 1, 5));
        let got = inspect(&[gone.leaf], "a.example", now(), &[]).unwrap();
        assert_eq!(got.validity, Validity::Expired { days_ago: 10 });
        // Expired and still judged for its chain.
        assert!(matches!(got.trust, Trust::UnknownIssuer { .. }));
        let early = UnixTime::since_unix_epoch(std::time::Duration::from_secs(1_700_000_000));
        let got = inspect(
            &[pki(&["a.example"], (2028, 1, 1)).leaf],
            "a.example",
            early,
            &[],
        )
        .unwrap();
        assert_eq!(got.validity, Validity::NotYetValid);
    }

    #[test]
    fn self_signed_leaf_and_garbage() {
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(vec!["a.example".to_owned()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let got = inspect(
            &[cert.der().clone()],
            "a.example",
            UnixTime::now(),
            webpki_roots::TLS_SERVER_ROOTS,
        )
        .unwrap();
        assert!(matches!(
            got.trust,
            Trust::UnknownIssuer {
                self_signed_leaf: true,
                ends_at_root: true,
                ..
            }
        ));
        assert_eq!(
            inspect(&[], "a.example", now(), &[]),
            Err(InspectError::Empty)
        );
        assert!(matches!(
            inspect(
                &[CertificateDer::from(vec![0x30, 0x03, 1, 2, 3])],
                "a",
                now(),
                &[]
            ),
            Err(InspectError::Unparsable(_))
        ));
    }
}
