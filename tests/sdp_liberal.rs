//! "Liberal in what you accept": every RFC 4568 bend seen from real phones, as a table. Each
//! offer case runs a phone offer and the PBX answer through the rewriter and checks which
//! crypto line was taken (or why none was), and that the answer to the phone is strict: one
//! `a=crypto` line echoing the chosen tag and suite.

mod sdp_support;

use pbx_edge::sdp::{RewriteError, Security, SrtpMode, StreamState};
use pbx_edge::srtp::suite::CryptoSuite;
use sdp_support::*;

#[derive(Debug)]
enum Expect {
    /// The line taken: tag, suite, lifetime, MKI length, number of keys.
    Chosen {
        tag: u32,
        suite: CryptoSuite,
        lifetime: Option<u64>,
        mki_len: Option<usize>,
        keys: usize,
    },
    /// Offer refused with 488, the last line refused for this reason label.
    Refused(&'static str),
}

struct Case {
    name: &'static str,
    suites: &'static [CryptoSuite],
    lines: &'static [&'static str],
    expect: Expect,
}

use CryptoSuite::*;

const ALL: &[CryptoSuite] = &CryptoSuite::ALL;

const fn chosen(tag: u32, suite: CryptoSuite) -> Expect {
    Expect::Chosen {
        tag,
        suite,
        lifetime: None,
        mki_len: None,
        keys: 1,
    }
}

const fn with_lifetime(tag: u32, suite: CryptoSuite, lifetime: u64) -> Expect {
    Expect::Chosen {
        tag,
        suite,
        lifetime: Some(lifetime),
        mki_len: None,
        keys: 1,
    }
}

const fn with_mki(tag: u32, lifetime: Option<u64>, mki_len: usize) -> Expect {
    Expect::Chosen {
        tag,
        suite: AesCm128HmacSha1_80,
        lifetime,
        mki_len: Some(mki_len),
        keys: 1,
    }
}

// Key constants are spliced in by `offer_body` ({K0}, {K1}, {A0}, {G1}).
/// A case under every suite the edge allows.
const fn case(name: &'static str, lines: &'static [&'static str], expect: Expect) -> Case {
    Case {
        name,
        suites: ALL,
        lines,
        expect,
    }
}

const CASES: &[Case] = &[
    case(
        "plain standard line",
        &["1 AES_CM_128_HMAC_SHA1_80 inline:{K0}"],
        chosen(1, AesCm128HmacSha1_80),
    ),
    case(
        "suite in lower case",
        &["1 aes_cm_128_hmac_sha1_80 inline:{K0}"],
        chosen(1, AesCm128HmacSha1_80),
    ),
    case(
        "suite in mixed case",
        &["3 Aes_Cm_128_Hmac_Sha1_32 inline:{K0}"],
        chosen(3, AesCm128HmacSha1_32),
    ),
    case(
        "AES_CM_256 spelling",
        &["1 AES_CM_256_HMAC_SHA1_80 inline:{A0}"],
        chosen(1, Aes256CmHmacSha1_80),
    ),
    case(
        "AES_128_CM spelling",
        &["1 AES_128_CM_HMAC_SHA1_80 inline:{K0}"],
        chosen(1, AesCm128HmacSha1_80),
    ),
    case(
        "tag 0",
        &["0 AES_CM_128_HMAC_SHA1_80 inline:{K0}"],
        chosen(0, AesCm128HmacSha1_80),
    ),
    case(
        "duplicate tags: first usable wins",
        &[
            "1 AES_CM_128_HMAC_SHA1_80 inline:{K0}",
            "1 AES_CM_128_HMAC_SHA1_32 inline:{K1}",
        ],
        chosen(1, AesCm128HmacSha1_80),
    ),
    case(
        "base64 without = padding",
        &["1 AES_256_CM_HMAC_SHA1_80 inline:{A0-unpadded}"],
        chosen(1, Aes256CmHmacSha1_80),
    ),
    case(
        "GCM base64 without = padding",
        &["1 AEAD_AES_128_GCM inline:{G1-unpadded}"],
        chosen(1, AeadAes128Gcm),
    ),
    case(
        "trailing spaces",
        &["1 AES_CM_128_HMAC_SHA1_80 inline:{K0}|2^20   "],
        with_lifetime(1, AesCm128HmacSha1_80, 1 << 20),
    ),
    case(
        "extra spaces between fields",
        &["1   AES_CM_128_HMAC_SHA1_80 \t inline:{K0}"],
        chosen(1, AesCm128HmacSha1_80),
    ),
    case(
        "lifetime 2^31",
        &["1 AES_CM_128_HMAC_SHA1_80 inline:{K0}|2^31"],
        with_lifetime(1, AesCm128HmacSha1_80, 1 << 31),
    ),
    case(
        "lifetime decimal",
        &["1 AES_CM_128_HMAC_SHA1_80 inline:{K0}|1048576"],
        with_lifetime(1, AesCm128HmacSha1_80, 1 << 20),
    ),
    case(
        "lifetime 2^48",
        &["1 AES_CM_128_HMAC_SHA1_80 inline:{K0}|2^48"],
        with_lifetime(1, AesCm128HmacSha1_80, 1 << 48),
    ),
    case(
        "lifetime 2^49 refused, next line taken",
        &[
            "1 AES_CM_128_HMAC_SHA1_80 inline:{K0}|2^49",
            "2 AES_CM_128_HMAC_SHA1_32 inline:{K1}",
        ],
        chosen(2, AesCm128HmacSha1_32),
    ),
    case(
        "lifetime above 2^48 decimal refused",
        &["1 AES_CM_128_HMAC_SHA1_80 inline:{K0}|281474976710657"],
        Expect::Refused("lifetime_too_large"),
    ),
    case(
        "MKI 1:1",
        &["1 AES_CM_128_HMAC_SHA1_80 inline:{K0}|2^20|1:1"],
        with_mki(1, Some(1 << 20), 1),
    ),
    case(
        "MKI 2:2",
        &["1 AES_CM_128_HMAC_SHA1_80 inline:{K0}|2^20|2:2"],
        with_mki(1, Some(1 << 20), 2),
    ),
    case(
        "MKI 3:3",
        &["1 AES_CM_128_HMAC_SHA1_80 inline:{K0}|2^20|3:3"],
        with_mki(1, Some(1 << 20), 3),
    ),
    case(
        "MKI 1:4",
        &["1 AES_CM_128_HMAC_SHA1_80 inline:{K0}|2^20|1:4"],
        with_mki(1, Some(1 << 20), 4),
    ),
    case(
        "MKI 4294967295:4",
        &["1 AES_CM_128_HMAC_SHA1_80 inline:{K0}|2^20|4294967295:4"],
        with_mki(1, Some(1 << 20), 4),
    ),
    case(
        "MKI without lifetime",
        &["1 AES_CM_128_HMAC_SHA1_80 inline:{K0}|1:4"],
        with_mki(1, None, 4),
    ),
    case(
        "MKI value too large for its length",
        &["1 AES_CM_128_HMAC_SHA1_80 inline:{K0}|2^20|256:1"],
        Expect::Refused("bad_mki"),
    ),
    case(
        "MKI length 5",
        &["1 AES_CM_128_HMAC_SHA1_80 inline:{K0}|2^20|1:5"],
        with_mki(1, Some(1 << 20), 5),
    ),
    Case {
        // The RFC 4568 §6.1-style line copied by many stacks; rtpengine and Asterisk take it.
        name: "MKI 1:32",
        suites: ALL,
        lines: &["1 AES_CM_128_HMAC_SHA1_80 inline:{K0}|2^20|1:32"],
        expect: with_mki(1, Some(1 << 20), 32),
    },
    case(
        "MKI 1:128 (RFC 4568 §9.1 maximum)",
        &["1 AES_CM_128_HMAC_SHA1_80 inline:{K0}|2^20|1:128"],
        with_mki(1, Some(1 << 20), 128),
    ),
    case(
        "MKI length 129",
        &["1 AES_CM_128_HMAC_SHA1_80 inline:{K0}|2^20|1:129"],
        Expect::Refused("mki_length"),
    ),
    case(
        "two keys with MKIs (one context holds one key)",
        &["1 AES_CM_128_HMAC_SHA1_80 inline:{K0}|2^20|1:4;inline:{K1}|2^20|2:4"],
        Expect::Refused("several_keys"),
    ),
    case(
        "two keys without MKIs",
        &["1 AES_CM_128_HMAC_SHA1_80 inline:{K0};inline:{K1}"],
        Expect::Refused("mki_mismatch"),
    ),
    Case {
        name: "one key reused across lines",
        suites: &[AesCm128HmacSha1_32],
        lines: &[
            "1 AES_CM_128_HMAC_SHA1_80 inline:{K0}",
            "2 AES_CM_128_HMAC_SHA1_32 inline:{K0}",
        ],
        expect: chosen(2, AesCm128HmacSha1_32),
    },
    case(
        "GCM_8 refused, next line taken",
        &[
            "1 AEAD_AES_128_GCM_8 inline:{G1}",
            "2 AES_CM_128_HMAC_SHA1_80 inline:{K0}",
        ],
        chosen(2, AesCm128HmacSha1_80),
    ),
    case(
        "GCM_8 only",
        &["1 AEAD_AES_256_GCM_8 inline:{G1}"],
        Expect::Refused("short_gcm_tag"),
    ),
    case(
        "AEAD_AES_128_GCM",
        &["1 AEAD_AES_128_GCM inline:{G1}"],
        chosen(1, AeadAes128Gcm),
    ),
    case(
        "unknown suite, next line taken",
        &[
            "1 F8_128_HMAC_SHA1_80 inline:{K0}",
            "2 AES_CM_128_HMAC_SHA1_80 inline:{K1}",
        ],
        chosen(2, AesCm128HmacSha1_80),
    ),
    Case {
        name: "suite not allowed by policy",
        suites: &[AesCm128HmacSha1_80],
        lines: &["1 AES_CM_128_HMAC_SHA1_32 inline:{K0}"],
        expect: Expect::Refused("suite_not_allowed"),
    },
    case(
        "UNENCRYPTED_SRTCP accepted",
        &["1 AES_CM_128_HMAC_SHA1_80 inline:{K0} UNENCRYPTED_SRTCP"],
        chosen(1, AesCm128HmacSha1_80),
    ),
    case(
        "WSH hint accepted",
        &["1 AES_CM_128_HMAC_SHA1_80 inline:{K0} WSH=128"],
        chosen(1, AesCm128HmacSha1_80),
    ),
    case(
        "KDR refused, next line taken",
        &[
            "1 AES_CM_128_HMAC_SHA1_80 inline:{K0} KDR=1",
            "2 AES_CM_128_HMAC_SHA1_80 inline:{K1}",
        ],
        chosen(2, AesCm128HmacSha1_80),
    ),
    case(
        "UNAUTHENTICATED_SRTP refused",
        &["1 AES_CM_128_HMAC_SHA1_80 inline:{K0} UNAUTHENTICATED_SRTP"],
        Expect::Refused("unsupported_session_param"),
    ),
    case(
        "UNENCRYPTED_SRTP refused",
        &["1 AES_CM_128_HMAC_SHA1_80 inline:{K0} UNENCRYPTED_SRTP"],
        Expect::Refused("unencrypted_srtp"),
    ),
    case(
        "FEC_ORDER refused",
        &["1 AES_CM_128_HMAC_SHA1_80 inline:{K0} FEC_ORDER=FEC_SRTP"],
        Expect::Refused("unsupported_session_param"),
    ),
    case(
        "bad base64",
        &["1 AES_CM_128_HMAC_SHA1_80 inline:!!notbase64!!"],
        Expect::Refused("bad_base64"),
    ),
    case(
        "key too short for AES-256",
        &["1 AES_256_CM_HMAC_SHA1_80 inline:{K0}"],
        Expect::Refused("key_length"),
    ),
    case(
        "non-inline key method",
        &["1 AES_CM_128_HMAC_SHA1_80 uri:https://example.com/key"],
        Expect::Refused("unsupported_key_method"),
    ),
];

fn expand(line: &str) -> String {
    line.replace("{K0}", K0)
        .replace("{K1}", K1)
        .replace("{K2}", K2)
        .replace("{A0}", A0)
        .replace("{A0-unpadded}", A0.trim_end_matches('='))
        .replace("{G1}", G1)
        .replace("{G1-unpadded}", G1.trim_end_matches('='))
}

fn offer_body(lines: &[&str]) -> String {
    let mut media = String::from(
        "m=audio 4000 RTP/SAVP 0 101\na=rtpmap:0 PCMU/8000\na=rtpmap:101 telephone-event/8000\n",
    );
    for l in lines {
        media.push_str(&format!("a=crypto:{}\n", expand(l)));
    }
    phone_sdp(&media)
}

fn run(case: &Case) -> Result<(), String> {
    let mut call = Call::with_suites(SrtpMode::Mandatory, case.suites);
    let result = call.phone_offer(&offer_body(case.lines));
    match (&case.expect, result) {
        (Expect::Refused(label), Err(RewriteError::NoAcceptableCrypto { mline: 0, reason })) => {
            let got = reason.map(|r| r.label());
            if got != Some(*label) {
                return Err(format!("refused for {got:?}, expected {label}"));
            }
            Ok(())
        }
        (Expect::Refused(label), other) => Err(format!("expected refusal {label}, got {other:?}")),
        (Expect::Chosen { .. }, Err(e)) => Err(format!("offer refused: {e} ({})", e.label())),
        (
            Expect::Chosen {
                tag,
                suite,
                lifetime,
                mki_len,
                keys,
            },
            Ok(offer),
        ) => {
            let pbx_offer = text(&offer);
            if pbx_offer.contains("a=crypto") || pbx_offer.contains("SAVP") {
                return Err("crypto leaked toward the PBX".into());
            }
            let Some(relay) = offer.plan.streams[0].relayed() else {
                return Err("stream not relayed".into());
            };
            let Security::Srtp(k) = &relay.security else {
                return Err("stream not SRTP".into());
            };
            let phone = k.phone.as_ref().ok_or("no phone crypto in plan")?;
            let first = &phone.keys[0];
            let got = (
                phone.tag,
                phone.suite,
                first.lifetime,
                first.mki.map(|m| m.len()),
                phone.keys.len(),
            );
            if got != (*tag, *suite, *lifetime, *mki_len, *keys) {
                return Err(format!("chose {got:?}"));
            }
            let answer = call
                .pbx_answer(&offer.plan, &pbx_audio_answer())
                .map_err(|e| e.to_string())?;
            let answer = text(&answer);
            let cryptos = lines_with(&answer, "a=crypto:");
            if cryptos.len() != 1 {
                return Err(format!("answer has {} crypto lines", cryptos.len()));
            }
            let prefix = format!("a=crypto:{tag} {} inline:", suite.sdes_name());
            if !cryptos[0].starts_with(&prefix) {
                return Err(format!(
                    "answer line {:?} does not echo {prefix:?}",
                    cryptos[0]
                ));
            }
            // The edge mirrors the MKI length (value 1) and nothing else of the key params.
            let want_mki = mki_len.map(|n| format!("|1:{n}"));
            if want_mki.as_deref().is_some_and(|m| !cryptos[0].contains(m))
                || (want_mki.is_none() && cryptos[0].contains('|'))
            {
                return Err(format!("answer key params wrong: {:?}", cryptos[0]));
            }
            if phone.session_params.unencrypted_srtcp != cryptos[0].ends_with(" UNENCRYPTED_SRTCP")
            {
                return Err("UNENCRYPTED_SRTCP not echoed".into());
            }
            if !answer.contains("m=audio 40000 RTP/SAVP 0 101\r\n") {
                return Err(format!("answer m-line wrong:\n{answer}"));
            }
            Ok(())
        }
    }
}

#[test]
fn liberal_offer_table() {
    let failures: Vec<String> = CASES
        .iter()
        .filter_map(|c| run(c).err().map(|e| format!("{}: {e}", c.name)))
        .collect();
    assert!(
        failures.is_empty(),
        "{} case(s) failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

// --- answers from phones to the edge's offers ----------------------------------------------

/// Runs a PBX offer (one audio stream) and the given phone answer crypto lines. The edge
/// offers AES_CM_128_HMAC_SHA1_80 as tag 1 and AES_CM_128_HMAC_SHA1_32 as tag 2.
fn answer_case(proto: &str, lines: &[&str]) -> Result<pbx_edge::sdp::Rewritten, RewriteError> {
    let mut call = Call::with_suites(
        SrtpMode::Mandatory,
        &[AesCm128HmacSha1_80, AesCm128HmacSha1_32],
    );
    let offer = call
        .pbx_offer(&pbx_sdp("m=audio 20000 RTP/AVP 0\na=rtpmap:0 PCMU/8000\n"))
        .expect("PBX offer");
    let mut media = format!("m=audio 5000 {proto} 0\na=rtpmap:0 PCMU/8000\n");
    for l in lines {
        media.push_str(&format!("a=crypto:{}\n", expand(l)));
    }
    call.phone_answer(&offer.plan, &phone_sdp(&media))
}

fn answered_tags(r: &pbx_edge::sdp::Rewritten) -> (u32, u32) {
    let relay = r.plan.streams[0].relayed().expect("relayed");
    let Security::Srtp(k) = &relay.security else {
        panic!("not SRTP")
    };
    (k.phone.as_ref().unwrap().tag, k.edge.as_ref().unwrap().tag)
}

#[test]
fn answer_with_two_crypto_lines_uses_the_one_matching_an_offered_tag() {
    let r = answer_case(
        "RTP/SAVP",
        &[
            "42 AES_CM_128_HMAC_SHA1_80 inline:{K1}",
            "2 AES_CM_128_HMAC_SHA1_32 inline:{K2}",
        ],
    )
    .unwrap();
    assert_eq!(answered_tags(&r), (2, 2));
    assert!(!text(&r).contains("a=crypto"));
}

#[test]
fn answer_with_lower_case_suite_and_mki() {
    let r = answer_case(
        "RTP/SAVP",
        &["1 aes_cm_128_hmac_sha1_80 inline:{K1}|2^31|1:1"],
    )
    .unwrap();
    assert_eq!(answered_tags(&r), (1, 1));
}

#[test]
fn answer_tag_with_another_suite_is_refused() {
    let r = answer_case("RTP/SAVP", &["1 AES_CM_128_HMAC_SHA1_32 inline:{K1}"]);
    assert_eq!(
        r.unwrap_err(),
        RewriteError::AnswerCryptoMismatch { mline: 0 }
    );
}

#[test]
fn savp_answered_without_crypto_fails_with_488() {
    let err = answer_case("RTP/SAVP", &[]).unwrap_err();
    assert_eq!(err, RewriteError::AnswerWithoutCrypto { mline: 0 });
    assert_eq!(err.sip_status(), 488);
    // A phone answering RTP/AVP to a mandatory SAVP offer is no better.
    assert_eq!(
        answer_case("RTP/AVP", &[]).unwrap_err(),
        RewriteError::AnswerWithoutCrypto { mline: 0 }
    );
}

#[test]
fn answer_with_only_gcm8_is_refused() {
    let r = answer_case("RTP/SAVP", &["1 AEAD_AES_128_GCM_8 inline:{G1}"]);
    assert_eq!(
        r.unwrap_err(),
        RewriteError::AnswerCryptoMismatch { mline: 0 }
    );
}

#[test]
fn best_effort_as_two_m_lines_sharing_a_mid() {
    // RFC 5939-style best effort seen from softphones: the same audio twice, SRTP first.
    let body = phone_sdp(&format!(
        "m=audio 4000 RTP/SAVP 0\na=rtpmap:0 PCMU/8000\na=mid:1\na=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{K0}\n\
         m=audio 4002 RTP/AVP 0\na=rtpmap:0 PCMU/8000\na=mid:1\n"
    ));
    for mode in [SrtpMode::Mandatory, SrtpMode::Optional] {
        let mut call = Call::new(mode);
        let offer = call.phone_offer(&body).unwrap();
        assert!(offer.plan.streams[0].relayed().is_some(), "{mode:?}");
        assert!(
            matches!(offer.plan.streams[1].state, StreamState::Rejected(_)),
            "{mode:?}"
        );
        // The alternative not taken is not offered to the PBX, not even with port 0.
        let pbx = text(&offer);
        assert_eq!(lines_with(&pbx, "m=audio"), ["m=audio 40002 RTP/AVP 0"]);
        let answer = pbx_sdp("m=audio 20000 RTP/AVP 0\na=rtpmap:0 PCMU/8000\n");
        let back = text(&call.pbx_answer(&offer.plan, &answer).unwrap());
        assert_eq!(
            lines_with(&back, "m=audio"),
            ["m=audio 40000 RTP/SAVP 0", "m=audio 0 RTP/AVP 0"]
        );
        assert_eq!(lines_with(&back, "a=crypto").len(), 1);
    }
    // The plain line first and the SRTP line second: the SRTP one is still taken.
    let swapped = phone_sdp(&format!(
        "m=audio 4002 RTP/AVP 0\na=mid:1\nm=audio 4000 RTP/SAVP 0\na=mid:1\na=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{K0}\n"
    ));
    let offer = Call::new(SrtpMode::Optional).phone_offer(&swapped).unwrap();
    assert!(matches!(
        offer.plan.streams[0].state,
        StreamState::Rejected(_)
    ));
    assert!(offer.plan.streams[1].relayed().is_some());
}

#[test]
fn several_keys_line_is_skipped_for_a_single_key_line() {
    let body = offer_body(&[
        "1 AES_CM_128_HMAC_SHA1_80 inline:{K0}|2^20|1:4;inline:{K1}|2^20|2:4",
        "2 AES_CM_128_HMAC_SHA1_80 inline:{K2}|2^20|1:4",
    ]);
    let offer = Call::new(SrtpMode::Mandatory).phone_offer(&body).unwrap();
    let Security::Srtp(k) = &offer.plan.streams[0].relayed().unwrap().security else {
        panic!("not SRTP")
    };
    assert_eq!(k.phone.as_ref().unwrap().tag, 2);
}
