//! Golden offer/answer rewrites of real-world style SDP (Snom, Yealink, Digium D-series,
//! Polycom, Grandstream, baresip (captured from the real one), a softphone with ICE, Asterisk
//! chan_pjsip/chan_sip), both directions, checked line
//! by line against `tests/fixtures/sdp/<case>.out.sdp`.
//!
//! Each flow replays one call through the rewriter: the input of every step is
//! `<case>.in.sdp`, the expected output `<case>.out.sdp`. Keys come from a fixed
//! [`KeySource`] and ports from a deterministic allocator, so the output is byte-exact.
//! Addresses are RFC 5737: phones 192.0.2.x, PBX 198.51.100.20, edge 203.0.113.10 (phone
//! side) / 198.51.100.10 (PBX side).
//!
//! To regenerate after an intended change: `UPDATE_GOLDEN=1 cargo test --test sdp_golden`
//! (refused when `CI` is set, as `.ci/run` sets it),
//! then review the diff of the `.out.sdp` files.

mod sdp_support;

use std::path::PathBuf;

use pbx_edge::sdp::{
    analyse_pbx_offer, analyse_phone_offer, rewrite_pbx_answer, rewrite_pbx_offer,
    rewrite_phone_answer, rewrite_phone_offer, EdgeAddresses, KeySource, LegOrigin, MediaPlan,
    RewriteContext, SrtpMode, SrtpPolicy, Stage,
};
use pbx_edge::srtp::suite::CryptoSuite;

/// Deterministic "key material": an incrementing byte pattern. Tests only.
struct FixedKeys(u8);

impl KeySource for FixedKeys {
    fn fill(&mut self, out: &mut [u8]) {
        for b in out {
            *b = self.0;
            self.0 = self.0.wrapping_add(1);
        }
    }
}

#[derive(Clone, Copy, Debug)]
enum Step {
    /// Phone offer → PBX offer.
    PhoneOffer(&'static str),
    /// PBX answer → phone answer.
    PbxAnswer(&'static str),
    /// PBX offer → phone offer.
    PbxOffer(&'static str),
    /// Phone answer → PBX answer.
    PhoneAnswer(&'static str),
}

struct Flow {
    mode: SrtpMode,
    suites: &'static [CryptoSuite],
    steps: &'static [Step],
}

const ALL: &[CryptoSuite] = &CryptoSuite::ALL;
const AES_CM_128: &[CryptoSuite] = &[
    CryptoSuite::AesCm128HmacSha1_80,
    CryptoSuite::AesCm128HmacSha1_32,
];

use Step::*;

/// A flow under the default policy: SRTP mandatory, every suite allowed.
const fn mandatory(steps: &'static [Step]) -> Flow {
    Flow {
        mode: SrtpMode::Mandatory,
        suites: ALL,
        steps,
    }
}

const FLOWS: &[Flow] = &[
    // Snom D785 calls out, holds (sendonly), resumes with a new key.
    mandatory(&[
        PhoneOffer("snom-d785-offer"),
        PbxAnswer("snom-d785-pbx-answer"),
        PhoneOffer("snom-d785-hold-offer"),
        PbxAnswer("snom-d785-hold-pbx-answer"),
        PhoneOffer("snom-d785-resume-offer"),
        PbxAnswer("snom-d785-resume-pbx-answer"),
    ]),
    // Yealink T46U calls out through Asterisk chan_sip.
    mandatory(&[
        PhoneOffer("yealink-t46u-offer"),
        PbxAnswer("yealink-t46u-pbx-answer"),
    ]),
    // Polycom VVX 450: session-level a=sendrecv, lifetime 2^31.
    mandatory(&[
        PhoneOffer("polycom-vvx450-offer"),
        PbxAnswer("polycom-vvx450-pbx-answer"),
    ]),
    // Digium D65: one AES_CM_128_HMAC_SHA1_80 line, pjsip-style a=rtcp with address.
    mandatory(&[
        PhoneOffer("digium-d65-offer"),
        PbxAnswer("digium-d65-pbx-answer"),
    ]),
    // Grandstream GXV3350: audio + video, trailing spaces on every line, MKI 1:4, 2^20.
    mandatory(&[
        PhoneOffer("grandstream-gxv3350-offer"),
        PbxAnswer("grandstream-gxv3350-pbx-answer"),
    ]),
    // baresip 1.0.0, captured from the Debian package (tests/sdp_interop.rs).
    mandatory(&[PhoneOffer("baresip-offer"), PbxAnswer("baresip-pbx-answer")]),
    // A WebRTC-leaning softphone: ICE attributes, rtcp-mux, four suites with GCM first.
    mandatory(&[
        PhoneOffer("softphone-ice-offer"),
        PbxAnswer("softphone-ice-pbx-answer"),
    ]),
    // Asterisk chan_pjsip calls a Snom.
    mandatory(&[
        PbxOffer("asterisk-pjsip-offer"),
        PhoneAnswer("snom-d785-answer"),
    ]),
    // Asterisk calls a Digium D65 (takes the AES_CM_128_HMAC_SHA1_80 line).
    mandatory(&[
        PbxOffer("asterisk-pjsip-to-digium-offer"),
        PhoneAnswer("digium-d65-answer"),
    ]),
    // Asterisk chan_sip calls a Yealink (policy: AES_CM_128 only), then holds it.
    Flow {
        mode: SrtpMode::Mandatory,
        suites: AES_CM_128,
        steps: &[
            PbxOffer("asterisk-chansip-offer"),
            PhoneAnswer("yealink-t46u-answer"),
            PbxOffer("asterisk-chansip-hold-offer"),
            PhoneAnswer("yealink-t46u-hold-answer"),
        ],
    },
    // Asterisk with rtcp_mux=yes calls baresip; its real answer takes AEAD_AES_256_GCM (tag 1)
    // and no rtcp-mux.
    mandatory(&[
        PbxOffer("asterisk-pjsip-mux-offer"),
        PhoneAnswer("baresip-answer"),
    ]),
    // Asterisk calls a Polycom, which answers with two crypto lines (the first one's tag was
    // never offered).
    mandatory(&[
        PbxOffer("asterisk-pjsip-offer"),
        PhoneAnswer("polycom-vvx450-answer"),
    ]),
    // Asterisk offers audio + video to a Grandstream GXP2170, which rejects video.
    mandatory(&[
        PbxOffer("asterisk-pjsip-video-offer"),
        PhoneAnswer("grandstream-gxp2170-answer"),
    ]),
    // pjsua 2.x with `--use-srtp=3` (optional, duplicated offer): `RTP/SAVP` with four crypto
    // lines and an `RTP/AVP` twin on the same port. The PBX sees one audio line; the phone gets
    // the twin back rejected. Asterisk then re-INVITEs (after a transfer): the phone's offer
    // keeps the twin's place with port 0 (RFC 3264 §8.1), its answer is mapped back onto the
    // PBX's single line. Then pjsua holds, the twin slot disabled.
    Flow {
        mode: SrtpMode::Optional,
        suites: ALL,
        steps: &[
            PhoneOffer("pjsua-dup-offer"),
            PbxAnswer("pjsua-dup-pbx-answer"),
            PbxOffer("pjsua-dup-asterisk-reinvite"),
            PhoneAnswer("pjsua-dup-reinvite-answer"),
            PhoneOffer("pjsua-dup-hold-offer"),
            PbxAnswer("pjsua-dup-hold-pbx-answer"),
        ],
    },
    // Grandstream GXP2170, SRTP "Enabled but not forced", under a mandatory policy: the
    // `RTP/SAVP` line (MKI 1:32) and its `RTP/AVP` twin on the same port; the twin is refused
    // toward the phone and never offered to the PBX.
    mandatory(&[
        PhoneOffer("grandstream-gxp2170-besteffort-offer"),
        PbxAnswer("grandstream-gxp2170-besteffort-pbx-answer"),
    ]),
];

fn fixture(name: &str, ext: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("tests/fixtures/sdp/{name}.{ext}.sdp"))
}

fn edge() -> EdgeAddresses {
    EdgeAddresses {
        phone_advertised: "203.0.113.10".parse().unwrap(),
        pbx_local: "198.51.100.10".parse().unwrap(),
    }
}

/// Whether golden files are rewritten (`UPDATE_GOLDEN` set) instead of compared. Refused
/// when `CI` is set: there a rewrite would turn every comparison into a pass.
fn update_golden(update: bool, ci: bool) -> Result<bool, String> {
    match (update, ci) {
        (true, true) => Err(
            "UPDATE_GOLDEN is set while CI is set: in CI golden files are \
             compared, never rewritten; regenerate them locally and commit them"
                .to_owned(),
        ),
        (update, _) => Ok(update),
    }
}

#[test]
fn update_golden_is_refused_in_ci() {
    assert_eq!(update_golden(false, false), Ok(false));
    assert_eq!(update_golden(false, true), Ok(false));
    assert_eq!(update_golden(true, false), Ok(true));
    assert!(update_golden(true, true).is_err());
}

/// Compares line by line; with `UPDATE_GOLDEN` set (and `CI` not), writes the output instead.
fn check_golden(case: &str, got: &[u8]) -> Result<(), String> {
    let path = fixture(case, "out");
    let got = std::str::from_utf8(got).map_err(|e| format!("{case}: output not UTF-8: {e}"))?;
    let update = update_golden(
        std::env::var_os("UPDATE_GOLDEN").is_some(),
        std::env::var_os("CI").is_some(),
    )
    .map_err(|e| format!("{case}: {e}"))?;
    if update {
        std::fs::write(&path, got).map_err(|e| format!("{case}: {e}"))?;
        return Ok(());
    }
    let want =
        std::fs::read_to_string(&path).map_err(|e| format!("{case}: {}: {e}", path.display()))?;
    let want_lines: Vec<&str> = want.split("\r\n").collect();
    let got_lines: Vec<&str> = got.split("\r\n").collect();
    for (n, (w, g)) in want_lines.iter().zip(&got_lines).enumerate() {
        if w != g {
            return Err(format!(
                "{case}: line {}:\n  want {w:?}\n  got  {g:?}\nfull output:\n{got}",
                n + 1
            ));
        }
    }
    if want_lines.len() != got_lines.len() {
        return Err(format!(
            "{case}: {} lines wanted, {} produced\nfull output:\n{got}",
            want_lines.len(),
            got_lines.len()
        ));
    }
    Ok(())
}

/// Properties every output has, whatever the fixture says.
fn check_invariants(case: &str, out: &[u8], toward_pbx: bool) -> Result<(), String> {
    let text = std::str::from_utf8(out).map_err(|_| format!("{case}: not UTF-8"))?;
    let parsed: sdp_rs::SessionDescription = text
        .parse()
        .map_err(|e| format!("{case}: sdp-rs cannot parse the output: {e:?}"))?;
    // sdp-rs parsed every line (it returns Ok with lines dropped when one is out of order):
    // printing gives the same lines back, except that sdp-rs 0.2.1 prints rtpmap channels
    // as "opus/48000 2" (see SDP_NOTES.md).
    let printed = parsed.to_string();
    let same = printed.split("\r\n").count() == text.split("\r\n").count()
        && printed.split("\r\n").zip(text.split("\r\n")).all(|(p, t)| {
            p == t
                || (t.starts_with("a=rtpmap:")
                    && t.rsplit_once('/')
                        .is_some_and(|(head, ch)| p == format!("{head} {ch}")))
        });
    if !same {
        return Err(format!(
            "{case}: sdp-rs does not read the output back line for line"
        ));
    }
    for banned in [
        "a=candidate",
        "a=ice-",
        "a=fingerprint",
        "a=setup",
        "a=end-of-candidates",
    ] {
        if text.contains(banned) {
            return Err(format!("{case}: output contains {banned}"));
        }
    }
    let live_savp = text
        .split("\r\n")
        .any(|l| l.starts_with("m=") && l.contains("SAVP") && l.split(' ').nth(1) != Some("0"));
    if toward_pbx && (text.contains("a=crypto") || live_savp) {
        return Err(format!("{case}: SRTP leaked toward the PBX"));
    }
    if !text.ends_with("\r\n") || text.contains("\r\n\r\n") || text.contains(" \r\n") {
        return Err(format!("{case}: bad line structure"));
    }
    Ok(())
}

fn run_flow(flow: &Flow) -> Result<(), String> {
    let policy = SrtpPolicy {
        mode: flow.mode,
        suites: flow.suites.to_vec(),
    };
    let mut keys = FixedKeys(0x10);
    let mut phone_origin = LegOrigin::new(4_000_000_001, 1);
    let mut pbx_origin = LegOrigin::new(5_000_000_001, 1);
    let mut previous: Option<MediaPlan> = None;
    let mut pending: Option<MediaPlan> = None;
    let mut next_port = 30000u16;
    for step in flow.steps {
        let (case, toward_pbx) = match step {
            Step::PhoneOffer(c) | Step::PhoneAnswer(c) => (*c, true),
            Step::PbxOffer(c) | Step::PbxAnswer(c) => (*c, false),
        };
        let input = std::fs::read(fixture(case, "in")).map_err(|e| format!("{case}: {e}"))?;
        let origin = if toward_pbx {
            &mut pbx_origin
        } else {
            &mut phone_origin
        };
        let mut ctx = RewriteContext {
            edge: edge(),
            policy: &policy,
            origin,
            previous: previous.as_ref(),
            keys: &mut keys,
        };
        let out = match step {
            Step::PhoneOffer(_) => {
                let offer =
                    analyse_phone_offer(&input, &ctx).map_err(|e| format!("{case}: {e}"))?;
                let ports = sdp_support::allocate(&mut next_port, true, offer.port_requests());
                rewrite_phone_offer(offer, &ports, &mut ctx)
            }
            Step::PbxOffer(_) => {
                let offer = analyse_pbx_offer(&input, &ctx).map_err(|e| format!("{case}: {e}"))?;
                let ports = sdp_support::allocate(&mut next_port, true, offer.port_requests());
                rewrite_pbx_offer(offer, &ports, &mut ctx)
            }
            Step::PbxAnswer(_) => {
                let plan = pending
                    .as_ref()
                    .ok_or(format!("{case}: no pending offer"))?;
                rewrite_pbx_answer(&input, plan, &mut ctx)
            }
            Step::PhoneAnswer(_) => {
                let plan = pending
                    .as_ref()
                    .ok_or(format!("{case}: no pending offer"))?;
                rewrite_phone_answer(&input, plan, &mut ctx)
            }
        }
        .map_err(|e| format!("{case}: {e}"))?;
        check_invariants(case, &out.sdp, toward_pbx)?;
        check_golden(case, &out.sdp)?;
        match out.plan.stage {
            Stage::Offered => pending = Some(out.plan),
            Stage::Answered => {
                pending = None;
                previous = Some(out.plan);
            }
        }
    }
    Ok(())
}

#[test]
fn golden_flows() {
    let failures: Vec<String> = FLOWS.iter().filter_map(|f| run_flow(f).err()).collect();
    assert!(
        failures.is_empty(),
        "{} golden flow(s) failed:\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}

#[test]
fn every_fixture_is_used() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/sdp");
    let used: Vec<&str> = FLOWS
        .iter()
        .flat_map(|f| f.steps.iter())
        .map(|s| match s {
            Step::PhoneOffer(c) | Step::PbxAnswer(c) | Step::PbxOffer(c) | Step::PhoneAnswer(c) => {
                *c
            }
        })
        .collect();
    for entry in std::fs::read_dir(dir).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        let case = name
            .trim_end_matches(".in.sdp")
            .trim_end_matches(".out.sdp");
        assert!(
            used.contains(&case),
            "fixture {name} is not used by any flow"
        );
    }
}
