//! The inputs of a rewrite besides the SDP body: edge addresses, SRTP policy, the leg's
//! origin state, the previous plan and the source of key material.

use std::net::IpAddr;

use crate::srtp::suite::CryptoSuite;

use super::plan::MediaPlan;

/// Where fresh SRTP master keys come from. Production passes the OS CSPRNG (implemented in
/// `b2bua`); tests pass a fixed pattern so golden SDP is byte-exact.
pub trait KeySource {
    /// Fills `out` with key material.
    fn fill(&mut self, out: &mut [u8]);
}

/// `media.srtp`: whether the phone leg must be SRTP.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum SrtpMode {
    /// Every relayed stream is SRTP on the phone leg; a phone stream without usable crypto is
    /// refused (488 when nothing else is left). The edge offers the phone `RTP/SAVP`.
    #[default]
    Mandatory,
    /// Best-effort SRTP: `RTP/AVP` with `a=crypto` is accepted, a phone stream without crypto
    /// is relayed as plain RTP, and the edge offers the phone `RTP/AVP` with `a=crypto`
    /// (RFC 4568 §7.1.1 best effort).
    Optional,
}

/// The SRTP policy of one phone (per vendor/device).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SrtpPolicy {
    /// Mandatory or best effort.
    pub mode: SrtpMode,
    /// The suites accepted from and offered to this phone. Order does not matter: offers are
    /// written strongest first ([`CryptoSuite::strength`]).
    pub suites: Vec<CryptoSuite>,
}

impl Default for SrtpPolicy {
    /// Mandatory SRTP with every suite the engine implements.
    fn default() -> Self {
        SrtpPolicy {
            mode: SrtpMode::Mandatory,
            suites: CryptoSuite::ALL.to_vec(),
        }
    }
}

impl SrtpPolicy {
    /// True when the suite may be used with this phone.
    pub fn allows(&self, suite: CryptoSuite) -> bool {
        self.suites.contains(&suite)
    }

    /// The suites to offer the phone, strongest first, without duplicates, always including
    /// `AES_CM_128_HMAC_SHA1_80` (RFC 4568 §6.2.1 mandatory-to-implement, and the only one
    /// Digium phones support).
    pub fn offer_suites(&self) -> Vec<CryptoSuite> {
        let mut suites = self.suites.clone();
        if !suites.contains(&CryptoSuite::AesCm128HmacSha1_80) {
            suites.push(CryptoSuite::AesCm128HmacSha1_80);
        }
        suites.sort_by(|a, b| b.cmp(a));
        suites.dedup();
        suites
    }
}

/// The edge's own media addresses written into SDP.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EdgeAddresses {
    /// `media.phone_advertise`: the address phones send media to.
    pub phone_advertised: IpAddr,
    /// `media.pbx_bind`: the address the PBX sends media to.
    pub pbx_local: IpAddr,
}

/// The `o=` line state of one leg (RFC 3264 §5, §8): a session id fixed for the dialog, a
/// version that increases by one whenever the SDP sent on this leg changes, and stays when
/// the same SDP is sent again (a session refresh re-INVITE).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LegOrigin {
    session_id: u64,
    version: u64,
    /// The last body sent on this leg, printed with a placeholder origin.
    last_body: Option<String>,
}

impl LegOrigin {
    /// A new origin for a leg. `session_id` should be unique (RFC 8866 §5.2 suggests an NTP
    /// timestamp); the first SDP uses `initial_version`.
    pub fn new(session_id: u64, initial_version: u64) -> LegOrigin {
        LegOrigin {
            session_id,
            version: initial_version,
            last_body: None,
        }
    }

    /// The session id.
    pub fn session_id(&self) -> u64 {
        self.session_id
    }

    /// The version of the last SDP sent (or the initial version before any).
    pub fn version(&self) -> u64 {
        self.version
    }

    /// Records `body` (printed with a placeholder origin) as sent and returns the version to
    /// write.
    pub(crate) fn stamp(&mut self, body: String) -> u64 {
        match &self.last_body {
            None => {}
            Some(last) if *last == body => return self.version,
            Some(_) => self.version = self.version.wrapping_add(1),
        }
        self.last_body = Some(body);
        self.version
    }
}

/// Everything a rewrite needs besides the SDP body.
pub struct RewriteContext<'a> {
    /// The edge's addresses.
    pub edge: EdgeAddresses,
    /// The phone's SRTP policy.
    pub policy: &'a SrtpPolicy,
    /// The origin state of the leg the rewritten SDP is sent on: the PBX leg for
    /// `rewrite_phone_offer` / `rewrite_phone_answer`, the phone leg for `rewrite_pbx_offer`
    /// / `rewrite_pbx_answer`.
    pub origin: &'a mut LegOrigin,
    /// The last completed plan of this dialog (re-offers), or `None` for the initial offer.
    pub previous: Option<&'a MediaPlan>,
    /// Source of the edge's fresh SRTP keys.
    pub keys: &'a mut dyn KeySource,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offer_suites_strongest_first_with_mandatory_suite() {
        let policy = SrtpPolicy {
            mode: SrtpMode::Mandatory,
            suites: vec![CryptoSuite::AesCm128HmacSha1_32, CryptoSuite::AeadAes128Gcm],
        };
        assert_eq!(
            policy.offer_suites(),
            vec![
                CryptoSuite::AeadAes128Gcm,
                CryptoSuite::AesCm128HmacSha1_80,
                CryptoSuite::AesCm128HmacSha1_32
            ]
        );
        assert!(!policy.allows(CryptoSuite::AesCm128HmacSha1_80));
        assert_eq!(
            SrtpPolicy::default().offer_suites().len(),
            CryptoSuite::ALL.len()
        );
    }

    #[test]
    fn origin_version_moves_only_on_change() {
        let mut o = LegOrigin::new(42, 7);
        assert_eq!(o.stamp("a".into()), 7);
        assert_eq!(o.stamp("a".into()), 7);
        assert_eq!(o.stamp("b".into()), 8);
        assert_eq!(o.stamp("c".into()), 9);
        assert_eq!(o.stamp("c".into()), 9);
        assert_eq!(o.version(), 9);
        assert_eq!(o.session_id(), 42);
    }
}
