//! Shared helpers for the SDP tests: a fixed key source, a deterministic port allocator and a
//! call harness that keeps the per-dialog state the B2BUA would keep.
#![allow(dead_code)]

use pbx_edge::sdp::{
    analyse_pbx_offer, analyse_phone_offer, rewrite_pbx_answer, rewrite_pbx_offer,
    rewrite_phone_answer, rewrite_phone_offer, EdgeAddresses, KeySource, LegOrigin, MediaPlan,
    PortPair, PortRequest, RewriteContext, RewriteError, Rewritten, SrtpMode, SrtpPolicy,
    StreamPorts,
};
use pbx_edge::srtp::suite::CryptoSuite;

/// Deterministic "key material": an incrementing byte pattern. Tests only.
pub struct FixedKeys(pub u8);

impl KeySource for FixedKeys {
    fn fill(&mut self, out: &mut [u8]) {
        for b in out {
            *b = self.0;
            self.0 = self.0.wrapping_add(1);
        }
    }
}

pub fn edge() -> EdgeAddresses {
    EdgeAddresses {
        phone_advertised: "203.0.113.10".parse().unwrap(),
        pbx_local: "198.51.100.10".parse().unwrap(),
    }
}

/// `\n` → `\r\n` (fixtures in test source are written with `\n`).
pub fn crlf(s: &str) -> String {
    s.replace("\r\n", "\n").replace('\n', "\r\n")
}

/// A phone SDP with the given media sections (written with `\n`).
pub fn phone_sdp(media: &str) -> String {
    crlf(&format!(
        "v=0\no=- 1 1 IN IP4 192.0.2.50\ns=-\nc=IN IP4 192.0.2.50\nt=0 0\n{media}"
    ))
}

/// A PBX SDP with the given media sections.
pub fn pbx_sdp(media: &str) -> String {
    crlf(&format!(
        "v=0\no=- 7 7 IN IP4 198.51.100.20\ns=Asterisk\nc=IN IP4 198.51.100.20\nt=0 0\n{media}"
    ))
}

pub const K0: &str = "HiUsMzpBSE9WXWRrcnmAh46VnKOqsbi/xs3U2+Lp";
pub const K1: &str = "PURLUllgZ251fIOKkZifpq20u8LJ0Nfe5ezz+gEI";
pub const K2: &str = "XGNqcXh/ho2Um6KpsLe+xczT2uHo7/b9BAsSGSAn";
/// AES-256 key||salt (46 octets).
pub const A0: &str = "LjU8Q0pRWF9mbXR7gomQl56lrLO6wcjP1t3k6/L5AAcOFRwjKjE4P0ZNVFtiaQ==";
/// AES-128-GCM key||salt (28 octets).
pub const G1: &str = "HCMqMTg/Rk1UW2JpcHd+hYyTmqGor7a9xMvS2Q==";

/// A plain PBX answer with one audio stream.
pub fn pbx_audio_answer() -> String {
    pbx_sdp("m=audio 20000 RTP/AVP 0 101\na=rtpmap:0 PCMU/8000\na=rtpmap:101 telephone-event/8000\na=sendrecv\n")
}

/// Even RTP ports, RTCP = RTP + 1: the phone pair, then the PBX pair. `reuse` hints are
/// honoured unless `honour` is false (the relay moved the stream).
pub fn allocate(next: &mut u16, honour: bool, requests: &[PortRequest]) -> Vec<StreamPorts> {
    requests
        .iter()
        .map(|r| match r.reuse {
            Some(p) if honour => p,
            _ => {
                let p = *next;
                *next += 4;
                StreamPorts {
                    phone: PortPair {
                        rtp: p,
                        rtcp: p + 1,
                    },
                    pbx: PortPair {
                        rtp: p + 2,
                        rtcp: p + 3,
                    },
                }
            }
        })
        .collect()
}

/// One B2BUA dialog: both legs' origins, the last completed plan, a port allocator.
pub struct Call {
    pub policy: SrtpPolicy,
    pub keys: FixedKeys,
    pub phone_origin: LegOrigin,
    pub pbx_origin: LegOrigin,
    pub previous: Option<MediaPlan>,
    pub next_port: u16,
    /// When false, `reuse` hints are ignored (the relay moved the stream).
    pub honour_reuse: bool,
}

impl Call {
    pub fn new(mode: SrtpMode) -> Call {
        Call::with_suites(mode, &CryptoSuite::ALL)
    }

    pub fn with_suites(mode: SrtpMode, suites: &[CryptoSuite]) -> Call {
        Call {
            policy: SrtpPolicy {
                mode,
                suites: suites.to_vec(),
            },
            keys: FixedKeys(0x40),
            phone_origin: LegOrigin::new(1000, 1),
            pbx_origin: LegOrigin::new(2000, 1),
            previous: None,
            next_port: 40000,
            honour_reuse: true,
        }
    }

    /// Phone offer → PBX offer.
    pub fn phone_offer(&mut self, body: &str) -> Result<Rewritten, RewriteError> {
        let mut ctx = RewriteContext {
            edge: edge(),
            policy: &self.policy,
            origin: &mut self.pbx_origin,
            previous: self.previous.as_ref(),
            keys: &mut self.keys,
        };
        let offer = analyse_phone_offer(body.as_bytes(), &ctx)?;
        let ports = allocate(
            &mut self.next_port,
            self.honour_reuse,
            offer.port_requests(),
        );
        rewrite_phone_offer(offer, &ports, &mut ctx)
    }

    /// PBX answer → phone answer; records the completed plan as `previous`.
    pub fn pbx_answer(&mut self, offer: &MediaPlan, body: &str) -> Result<Rewritten, RewriteError> {
        let mut ctx = RewriteContext {
            edge: edge(),
            policy: &self.policy,
            origin: &mut self.phone_origin,
            previous: self.previous.as_ref(),
            keys: &mut self.keys,
        };
        let out = rewrite_pbx_answer(body.as_bytes(), offer, &mut ctx)?;
        self.previous = Some(out.plan.clone());
        Ok(out)
    }

    /// PBX offer → phone offer.
    pub fn pbx_offer(&mut self, body: &str) -> Result<Rewritten, RewriteError> {
        let mut ctx = RewriteContext {
            edge: edge(),
            policy: &self.policy,
            origin: &mut self.phone_origin,
            previous: self.previous.as_ref(),
            keys: &mut self.keys,
        };
        let offer = analyse_pbx_offer(body.as_bytes(), &ctx)?;
        let ports = allocate(
            &mut self.next_port,
            self.honour_reuse,
            offer.port_requests(),
        );
        rewrite_pbx_offer(offer, &ports, &mut ctx)
    }

    /// Phone answer → PBX answer; records the completed plan as `previous`.
    pub fn phone_answer(
        &mut self,
        offer: &MediaPlan,
        body: &str,
    ) -> Result<Rewritten, RewriteError> {
        let mut ctx = RewriteContext {
            edge: edge(),
            policy: &self.policy,
            origin: &mut self.pbx_origin,
            previous: self.previous.as_ref(),
            keys: &mut self.keys,
        };
        let out = rewrite_phone_answer(body.as_bytes(), offer, &mut ctx)?;
        self.previous = Some(out.plan.clone());
        Ok(out)
    }
}

/// The SDP text of a rewrite.
pub fn text(r: &Rewritten) -> String {
    String::from_utf8(r.sdp.clone()).unwrap()
}

/// The lines of a rewrite that start with `prefix`.
pub fn lines_with<'a>(sdp: &'a str, prefix: &str) -> Vec<&'a str> {
    sdp.split("\r\n")
        .filter(|l| l.starts_with(prefix))
        .collect()
}
