//! SDES crypto negotiation (RFC 4568 §7): which of a phone's `a=crypto` lines the edge takes,
//! the edge's own lines, and whether an SRTP context survives a re-offer (§7.1.4).

use crate::srtp::key::MasterKey;
use crate::srtp::sdes::{CryptoAttribute, KeyParams, Mki, SessionParams};
use crate::srtp::suite::CryptoSuite;

use super::context::{KeySource, SrtpPolicy};
use super::error::CryptoRefusal;
use super::plan::ContextChange;

/// Most `a=crypto` lines looked at per m-line; more is hostile or broken.
pub const MAX_CRYPTO_LINES: usize = 32;

/// What the crypto lines of one offered m-line yield.
#[derive(Debug, Default)]
pub(crate) struct OfferedCrypto {
    /// The first usable line (RFC 4568 §7.1.2: the offerer lists lines in preference order).
    pub chosen: Option<CryptoAttribute>,
    /// How many `a=crypto` lines there were.
    pub lines: usize,
    /// Why the last refused line was refused.
    pub refusal: Option<CryptoRefusal>,
    /// The first refusal that was not about the line's suite (a malformed line, or one asking
    /// for something the engine cannot do): the phone meant SRTP and got it wrong, so a
    /// best-effort policy must not fall back to plain RTP for this stream.
    pub malformed: Option<CryptoRefusal>,
}

/// Chooses, from an offer's `a=crypto` values, the first line whose suite the policy allows
/// and whose parameters the engine honours. Lines that fail (`_GCM_8`, unknown suites,
/// `KDR`, bad keys...) are skipped, so another line can still be taken.
pub(crate) fn choose_offered<'a>(
    values: impl Iterator<Item = &'a str>,
    policy: &SrtpPolicy,
) -> OfferedCrypto {
    let mut out = OfferedCrypto::default();
    for value in values.take(MAX_CRYPTO_LINES) {
        out.lines += 1;
        let refusal = match CryptoAttribute::parse(value) {
            Err(e) => CryptoRefusal::Sdes(e),
            Ok(c) if !policy.allows(c.suite) => CryptoRefusal::SuiteNotAllowed,
            Ok(c) if c.session_params.unencrypted_srtp => CryptoRefusal::UnencryptedSrtp,
            Ok(c) if c.keys.len() != 1 => CryptoRefusal::SeveralKeys,
            Ok(c) => {
                out.chosen = Some(c);
                return out;
            }
        };
        out.refusal = Some(refusal);
        if !refusal.is_about_suite() && out.malformed.is_none() {
            out.malformed = Some(refusal);
        }
    }
    out
}

/// What the crypto lines of one answered m-line yield.
#[derive(Debug)]
pub(crate) enum AnsweredCrypto {
    /// The answer's line and the offered line it answers (same tag and suite).
    Matched {
        answer: CryptoAttribute,
        offered: CryptoAttribute,
    },
    /// The answer has no `a=crypto` line.
    None,
    /// The answer has crypto lines but none answers an offered line.
    NoMatch,
}

/// Picks the answer's line whose tag (and suite) matches an offered line (RFC 4568 §7.1.3).
/// Some phones send two lines in an answer; the first matching one is used.
pub(crate) fn choose_answered<'a>(
    values: impl Iterator<Item = &'a str>,
    offered: &[CryptoAttribute],
) -> AnsweredCrypto {
    let mut lines = 0usize;
    for value in values.take(MAX_CRYPTO_LINES) {
        lines += 1;
        let Ok(answer) = CryptoAttribute::parse(value) else {
            continue;
        };
        if answer.session_params.unencrypted_srtp || answer.keys.len() != 1 {
            continue;
        }
        if let Some(o) = offered
            .iter()
            .find(|o| o.tag == answer.tag && o.suite == answer.suite)
        {
            return AnsweredCrypto::Matched {
                answer,
                offered: o.clone(),
            };
        }
    }
    if lines == 0 {
        AnsweredCrypto::None
    } else {
        AnsweredCrypto::NoMatch
    }
}

/// True when two lines describe the same master key(s) and parameters, whatever their tags.
pub(crate) fn same_key(a: &CryptoAttribute, b: &CryptoAttribute) -> bool {
    a.suite == b.suite && a.keys == b.keys && a.session_params == b.session_params
}

/// Context continuity for a newly negotiated line against the previous plan's line.
pub(crate) fn context_change(
    new: &CryptoAttribute,
    previous: Option<&CryptoAttribute>,
) -> ContextChange {
    match previous {
        Some(p) if same_key(new, p) => ContextChange::Keep,
        _ => ContextChange::New,
    }
}

/// A fresh single-key line from the key source.
fn fresh_line(
    tag: u32,
    suite: CryptoSuite,
    mki_len: Option<usize>,
    session_params: SessionParams,
    keys: &mut dyn KeySource,
) -> CryptoAttribute {
    let master_key = MasterKey::generate(suite, |buf| keys.fill(buf));
    let mut key = KeyParams::new(master_key);
    key.mki = mki_len
        .and_then(|len| u8::try_from(len).ok())
        .and_then(|len| Mki::new(1, len));
    CryptoAttribute {
        tag,
        suite,
        keys: vec![key],
        session_params,
    }
}

/// The edge's answer line to the phone's chosen line: the same tag and suite (RFC 4568
/// §7.1.2), an MKI of the same length if the phone uses one (some phones cannot handle an
/// asymmetric MKI), `UNENCRYPTED_SRTCP` echoed (§6.3.2: both directions must agree). The
/// edge's previous key is kept when it still fits (the stream did not change), else a fresh
/// one is drawn.
pub(crate) fn edge_answer_line(
    chosen: &CryptoAttribute,
    previous: Option<&CryptoAttribute>,
    keys: &mut dyn KeySource,
) -> (CryptoAttribute, ContextChange) {
    let mki_len = chosen.keys.first().and_then(|k| k.mki).map(|m| m.len());
    let session_params = SessionParams {
        unencrypted_srtcp: chosen.session_params.unencrypted_srtcp,
        ..SessionParams::default()
    };
    if let Some(prev) = previous {
        let prev_mki_len = prev.keys.first().and_then(|k| k.mki).map(|m| m.len());
        if prev.suite == chosen.suite && prev.keys.len() == 1 && prev_mki_len == mki_len {
            let mut line = prev.clone();
            line.tag = chosen.tag;
            line.session_params = session_params;
            let change = context_change(&line, Some(prev));
            return (line, change);
        }
    }
    (
        fresh_line(chosen.tag, chosen.suite, mki_len, session_params, keys),
        ContextChange::New,
    )
}

/// The edge's offer lines for the phone: one per suite, in the given order, tags 1, 2, ...
/// A line of `reuse` with the same suite keeps its key (re-offer of an unchanged stream).
pub(crate) fn edge_offer_lines(
    suites: &[CryptoSuite],
    reuse: &[&CryptoAttribute],
    keys: &mut dyn KeySource,
) -> Vec<CryptoAttribute> {
    let mut lines = Vec::with_capacity(suites.len());
    for (tag, suite) in (1u32..).zip(suites) {
        let line = match reuse
            .iter()
            .find(|l| l.suite == *suite && l.keys.len() == 1)
        {
            Some(prev) => {
                let mut line = (*prev).clone();
                line.tag = tag;
                line.session_params = SessionParams::default();
                line
            }
            None => fresh_line(tag, *suite, None, SessionParams::default(), keys),
        };
        lines.push(line);
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sdp::context::SrtpMode;
    use crate::srtp::sdes::SdesError;

    struct Counter(u8);
    impl KeySource for Counter {
        fn fill(&mut self, out: &mut [u8]) {
            for b in out {
                *b = self.0;
                self.0 = self.0.wrapping_add(1);
            }
        }
    }

    const K80: &str = "1 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz";
    const K32: &str = "2 AES_CM_128_HMAC_SHA1_32 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz";

    fn policy(suites: &[CryptoSuite]) -> SrtpPolicy {
        SrtpPolicy {
            mode: SrtpMode::Mandatory,
            suites: suites.to_vec(),
        }
    }

    #[test]
    fn first_allowed_line_is_chosen() {
        let all = SrtpPolicy::default();
        let got = choose_offered([K80, K32].into_iter(), &all);
        assert_eq!(got.chosen.map(|c| c.tag), Some(1));
        let only32 = policy(&[CryptoSuite::AesCm128HmacSha1_32]);
        let got = choose_offered([K80, K32].into_iter(), &only32);
        assert_eq!(got.chosen.map(|c| c.tag), Some(2));
        assert_eq!(got.refusal, Some(CryptoRefusal::SuiteNotAllowed));
    }

    #[test]
    fn short_gcm_is_skipped_for_the_next_line() {
        let gcm8 = "1 AEAD_AES_128_GCM_8 inline:MTIzNDU2Nzg5MDEyMzQ1Njc4OTAxMjM0";
        let got = choose_offered([gcm8, K32].into_iter(), &SrtpPolicy::default());
        assert_eq!(got.chosen.map(|c| c.tag), Some(2));
        assert_eq!(
            got.refusal,
            Some(CryptoRefusal::Sdes(SdesError::ShortGcmTag))
        );
        let got = choose_offered([gcm8].into_iter(), &SrtpPolicy::default());
        assert!(got.chosen.is_none());
        assert_eq!(got.lines, 1);
    }

    #[test]
    fn malformed_is_told_apart_from_unknown_suites() {
        let all = SrtpPolicy::default();
        let unknown = "1 F8_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz";
        let gcm8 = "2 AEAD_AES_128_GCM_8 inline:MTIzNDU2Nzg5MDEyMzQ1Njc4OTAxMjM0";
        let got = choose_offered([unknown, gcm8].into_iter(), &all);
        assert!(got.chosen.is_none());
        assert_eq!(got.malformed, None);
        let bad_key = "3 AES_CM_128_HMAC_SHA1_80 inline:@@@@";
        let got = choose_offered([unknown, bad_key].into_iter(), &all);
        assert_eq!(
            got.malformed,
            Some(CryptoRefusal::Sdes(SdesError::BadBase64))
        );
        // A usable line after a malformed one is still taken.
        let got = choose_offered([bad_key, K80].into_iter(), &all);
        assert_eq!(got.chosen.map(|c| c.tag), Some(1));
        // A suite the policy leaves out is about the suite too.
        let got = choose_offered([K80].into_iter(), &policy(&[CryptoSuite::AeadAes256Gcm]));
        assert_eq!(
            (got.refusal, got.malformed),
            (Some(CryptoRefusal::SuiteNotAllowed), None)
        );
    }

    #[test]
    fn unencrypted_srtp_is_refused() {
        let line = format!("{K80} UNENCRYPTED_SRTP");
        let got = choose_offered([line.as_str()].into_iter(), &SrtpPolicy::default());
        assert!(got.chosen.is_none());
        assert_eq!(got.refusal, Some(CryptoRefusal::UnencryptedSrtp));
    }

    #[test]
    fn answer_must_echo_tag_and_suite() {
        let offered = edge_offer_lines(
            &[
                CryptoSuite::AesCm128HmacSha1_80,
                CryptoSuite::AesCm128HmacSha1_32,
            ],
            &[],
            &mut Counter(0),
        );
        // Tag 2 with the suite of tag 1: no match.
        let wrong = "2 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz";
        assert!(matches!(
            choose_answered([wrong].into_iter(), &offered),
            AnsweredCrypto::NoMatch
        ));
        assert!(matches!(
            choose_answered(core::iter::empty(), &offered),
            AnsweredCrypto::None
        ));
        match choose_answered([wrong, K32].into_iter(), &offered) {
            AnsweredCrypto::Matched { answer, offered } => {
                assert_eq!((answer.tag, offered.tag), (2, 2));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn edge_answer_keeps_previous_key_of_same_suite() {
        let chosen = CryptoAttribute::parse(K80).unwrap();
        let (first, change) = edge_answer_line(&chosen, None, &mut Counter(0));
        assert_eq!(change, ContextChange::New);
        assert_eq!(first.tag, 1);
        assert!(!same_key(&first, &chosen));
        let mut retagged = chosen.clone();
        retagged.tag = 7;
        let (again, change) = edge_answer_line(&retagged, Some(&first), &mut Counter(99));
        assert_eq!(change, ContextChange::Keep);
        assert_eq!(again.tag, 7);
        assert!(same_key(&again, &first));
        // Another suite: a fresh key.
        let other = CryptoAttribute::parse(K32).unwrap();
        let (fresh, change) = edge_answer_line(&other, Some(&first), &mut Counter(99));
        assert_eq!(change, ContextChange::New);
        assert_eq!(fresh.suite, CryptoSuite::AesCm128HmacSha1_32);
    }

    #[test]
    fn edge_answer_mirrors_mki_length_and_unencrypted_srtcp() {
        let chosen = CryptoAttribute::parse(&format!("{K80}|2^20|1:4 UNENCRYPTED_SRTCP")).unwrap();
        let (line, _) = edge_answer_line(&chosen, None, &mut Counter(0));
        assert_eq!(line.keys[0].mki.map(|m| m.len()), Some(4));
        assert!(line.session_params.unencrypted_srtcp);
        assert_eq!(line.keys[0].lifetime, None);
    }

    #[test]
    fn context_change_compares_keys_not_tags() {
        let a = CryptoAttribute::parse(K80).unwrap();
        let mut b = a.clone();
        b.tag = 9;
        assert_eq!(context_change(&b, Some(&a)), ContextChange::Keep);
        assert_eq!(context_change(&b, None), ContextChange::New);
        let c = CryptoAttribute::parse(
            "1 AES_CM_128_HMAC_SHA1_80 inline:MTIzNDU2Nzg5MDEyMzQ1Njc4OTAxMjM0NTY3ODkw",
        )
        .unwrap();
        assert_eq!(context_change(&c, Some(&a)), ContextChange::New);
    }
}
