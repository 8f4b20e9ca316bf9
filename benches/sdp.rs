//! SDP rewrite cost per offer/answer, on the golden fixtures (Snom D785 offer, Asterisk
//! answer; Asterisk offer to a Snom with every suite offered).
//!
//! Run: `cargo bench --bench sdp` (add `-- --warm-up-time 1 --measurement-time 3` for a
//! quick run).

use criterion::{criterion_group, criterion_main, Criterion};
use pbx_edge::sdp::{
    analyse_pbx_offer, analyse_phone_offer, rewrite_pbx_answer, rewrite_pbx_offer,
    rewrite_phone_offer, EdgeAddresses, KeySource, LegOrigin, PortPair, RewriteContext, SrtpPolicy,
    StreamPorts,
};
use std::hint::black_box;

const SNOM_OFFER: &str = include_str!("../tests/fixtures/sdp/snom-d785-offer.in.sdp");
const ASTERISK_ANSWER: &str = include_str!("../tests/fixtures/sdp/snom-d785-pbx-answer.in.sdp");
const ASTERISK_OFFER: &str = include_str!("../tests/fixtures/sdp/asterisk-pjsip-offer.in.sdp");

/// Benchmark key source: a byte pattern (the CSPRNG cost is not the rewrite's).
struct PatternKeys(u8);

impl KeySource for PatternKeys {
    fn fill(&mut self, out: &mut [u8]) {
        for b in out {
            *b = self.0;
            self.0 = self.0.wrapping_add(1);
        }
    }
}

fn edge() -> EdgeAddresses {
    EdgeAddresses {
        phone_advertised: "203.0.113.10".parse().unwrap(),
        pbx_local: "198.51.100.10".parse().unwrap(),
    }
}

const PORTS: [StreamPorts; 1] = [StreamPorts {
    phone: PortPair {
        rtp: 30000,
        rtcp: 30001,
    },
    pbx: PortPair {
        rtp: 30002,
        rtcp: 30003,
    },
}];

fn bench(c: &mut Criterion) {
    let policy = SrtpPolicy::default();
    let mut keys = PatternKeys(0);

    c.bench_function("phone_offer_to_pbx (snom, analyse + rewrite)", |b| {
        b.iter(|| {
            let mut origin = LegOrigin::new(1, 1);
            let mut ctx = RewriteContext {
                edge: edge(),
                policy: &policy,
                origin: &mut origin,
                previous: None,
                keys: &mut keys,
            };
            let offer = analyse_phone_offer(black_box(SNOM_OFFER.as_bytes()), &ctx).unwrap();
            rewrite_phone_offer(offer, &PORTS, &mut ctx).unwrap()
        })
    });

    let plan = {
        let mut origin = LegOrigin::new(1, 1);
        let mut ctx = RewriteContext {
            edge: edge(),
            policy: &policy,
            origin: &mut origin,
            previous: None,
            keys: &mut keys,
        };
        let offer = analyse_phone_offer(SNOM_OFFER.as_bytes(), &ctx).unwrap();
        rewrite_phone_offer(offer, &PORTS, &mut ctx).unwrap().plan
    };
    c.bench_function("pbx_answer_to_phone (asterisk, one crypto line)", |b| {
        b.iter(|| {
            let mut origin = LegOrigin::new(2, 1);
            let mut ctx = RewriteContext {
                edge: edge(),
                policy: &policy,
                origin: &mut origin,
                previous: None,
                keys: &mut keys,
            };
            rewrite_pbx_answer(black_box(ASTERISK_ANSWER.as_bytes()), &plan, &mut ctx).unwrap()
        })
    });

    c.bench_function("pbx_offer_to_phone (asterisk, 8 suites offered)", |b| {
        b.iter(|| {
            let mut origin = LegOrigin::new(3, 1);
            let mut ctx = RewriteContext {
                edge: edge(),
                policy: &policy,
                origin: &mut origin,
                previous: None,
                keys: &mut keys,
            };
            let offer = analyse_pbx_offer(black_box(ASTERISK_OFFER.as_bytes()), &ctx).unwrap();
            rewrite_pbx_offer(offer, &PORTS, &mut ctx).unwrap()
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
