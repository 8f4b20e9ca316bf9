//! Revocation: the MAC deny-list (`tls.mac_deny_list`, one MAC per line, `#` comments), and
//! [`admit`], the verdict the TLS listener runs right after each handshake, on every reload and
//! at a certificate's notAfter, so a revoked or expired device is cut off (CRLs themselves are
//! applied in [`crate::identity::verify`]).

use std::net::IpAddr;
use std::time::{Duration, SystemTime};

use rustls::pki_types::{CertificateDer, UnixTime};

use crate::identity::chain::parse_certificate;
use crate::identity::rejection::{CertificateRejection, HandshakeRejection};
use crate::identity::snapshot::IdentitySnapshot;
use crate::identity::Identity;

/// The deny-list is its own module (the snapshot holds one); named here too, where the
/// revocation verdicts that read it live.
pub use crate::identity::deny_list::MacDenyList;

/// Re-runs the whole handshake verdict (chain, CRLs, deny-list, inventory) for a live
/// connection's certificates against a new snapshot; `Err` means close the connection. Without
/// certificates (anonymous) this always succeeds: the anonymous source check is the caller's
/// ([`crate::identity::Inventory::admits_anonymous_from`]).
pub fn recheck(
    peer_certificates: Option<&[CertificateDer<'_>]>,
    snapshot: &IdentitySnapshot,
    now: UnixTime,
) -> Result<Identity, CertificateRejection> {
    match peer_certificates {
        Some([end_entity, intermediates @ ..]) => snapshot
            .trust()
            .verify(end_entity, intermediates, now)
            .map(|verified| verified.identity),
        _ => Ok(Identity::Anonymous),
    }
}

/// Whether a connection whose handshake completed may carry traffic under `snapshot` at `now`:
/// the whole verdict again ([`recheck`]: chain, CRLs, deny-list, inventory, validity), and for a
/// connection without a certificate the anonymous source check
/// ([`crate::identity::Inventory::admits_anonymous_from`]). The TLS listeners run this right after
/// the handshake against the newest snapshot (the verifier saw the snapshot of the moment the
/// connection was accepted: a reload in between must not let a revoked device in), and again
/// on every reload and when a certificate of the chain reaches its notAfter.
pub fn admit(
    peer_certificates: &[CertificateDer<'_>],
    snapshot: &IdentitySnapshot,
    source: IpAddr,
    now: UnixTime,
) -> Result<Identity, CertificateRejection> {
    let identity = recheck(Some(peer_certificates), snapshot, now)?;
    if identity == Identity::Anonymous && !snapshot.inventory().admits_anonymous_from(source) {
        return Err(CertificateRejection {
            reason: HandshakeRejection::AnonymousNotAllowed,
            vendor: None,
            subject: String::new(),
            detail: format!(
                "no client certificate from {source}: not in anonymous.networks, or no \
                 anonymous users configured"
            ),
        });
    }
    Ok(identity)
}

/// The next moment the verdict on `peer_certificates` can change by the clock alone: one
/// second after the earliest notAfter still ahead of `now` (RFC 5280 §4.1.2.5: the validity
/// period includes notAfter itself). `None` when no certificate expires after `now`.
pub fn next_expiry(
    peer_certificates: &[CertificateDer<'_>],
    now: SystemTime,
) -> Option<SystemTime> {
    let now_secs = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    peer_certificates
        .iter()
        .filter_map(|der| parse_certificate(der))
        .filter_map(|cert| u64::try_from(cert.validity().not_after.timestamp()).ok())
        .filter(|not_after| *not_after >= now_secs)
        .min()
        .map(|not_after| SystemTime::UNIX_EPOCH + Duration::from_secs(not_after.saturating_add(1)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert_until(year: i32) -> CertificateDer<'static> {
        let mut params = rcgen::CertificateParams::default();
        params.not_before = rcgen::date_time_ymd(2020, 1, 1);
        params.not_after = rcgen::date_time_ymd(year, 1, 1);
        let key = rcgen::KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().der().clone()
    }

    #[test]
    fn next_expiry_is_the_earliest_not_after_still_ahead() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(2_000_000_000);
        let past = cert_until(2030);
        let soon = cert_until(2034);
        let later = cert_until(2040);
        let at = |y, m, d| {
            let t = rcgen::date_time_ymd(y, m, d).unix_timestamp();
            SystemTime::UNIX_EPOCH + Duration::from_secs(u64::try_from(t).unwrap() + 1)
        };
        assert_eq!(
            next_expiry(&[later.clone(), past.clone(), soon.clone()], now),
            Some(at(2034, 1, 1))
        );
        assert_eq!(
            next_expiry(std::slice::from_ref(&later), now),
            Some(at(2040, 1, 1))
        );
        // Everything already past (or no certificate): nothing left to wait for.
        assert_eq!(next_expiry(&[past], now), None);
        assert_eq!(next_expiry(&[], now), None);
    }
}
