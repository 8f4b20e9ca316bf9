//! SIP core benches: framing + parse of a real INVITE with SDP (Snom D785 fixture), and the
//! Via push + Contact rewrite + serialise a B2BUA leg does per request.
//!
//! Run: `cargo bench --bench sip -- --warm-up-time 1 --measurement-time 3`

use std::hint::black_box;
use std::path::Path;

use bytes::BytesMut;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use pbx_edge::sip::framing::{Frame, FramingLimits, StreamFramer};
use pbx_edge::sip::{FlowToken, FlowTokenKey, SipMessage, SipUri, Via};

fn invite() -> Vec<u8> {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/sip/snom-d785-invite-sdp.sip");
    std::fs::read(path).expect("fixture present")
}

fn bench(c: &mut Criterion) {
    let raw = invite();
    let mut group = c.benchmark_group("sip");
    group.throughput(Throughput::Bytes(raw.len() as u64));

    group.bench_function("frame_invite", |b| {
        let mut framer = StreamFramer::new(FramingLimits::default());
        b.iter(|| {
            let mut buf = BytesMut::from(&raw[..]);
            match framer.decode(black_box(&mut buf)) {
                Ok(Some(Frame::Message(m))) => m,
                other => panic!("unexpected {other:?}"),
            }
        })
    });

    group.bench_function("frame_and_parse_invite", |b| {
        let mut framer = StreamFramer::new(FramingLimits::default());
        b.iter(|| {
            let mut buf = BytesMut::from(&raw[..]);
            let Ok(Some(Frame::Message(m))) = framer.decode(&mut buf) else {
                panic!("no frame")
            };
            SipMessage::parse(black_box(&m)).expect("parses")
        })
    });

    let parsed = SipMessage::parse(&raw).expect("parses");
    let key = FlowTokenKey::new([7; 32]);
    let via = Via::new(
        "UDP",
        "198.51.100.1",
        Some(5080),
        "z9hG4bK0123456789abcdef0123456789abcdef",
        true,
    );
    group.bench_function("rewrite_via_contact_and_print", |b| {
        b.iter(|| {
            let mut m = parsed.clone();
            m.push_via(&via);
            m.decrement_max_forwards().expect("max-forwards");
            let token = FlowToken {
                flow: 7,
                binding: 3,
            }
            .encode(&key);
            m.map_contact_uris(|uri| {
                let mut edge = SipUri::parse("sip:x@198.51.100.1:5080").expect("uri");
                edge.set_user(Some(&token));
                edge.params = uri.params.clone();
                edge
            })
            .expect("contacts");
            black_box(m.to_bytes())
        })
    });

    group.bench_function("flow_token_decode", |b| {
        let token = FlowToken {
            flow: 7,
            binding: 3,
        }
        .encode(&key);
        b.iter(|| FlowToken::decode(black_box(&token), &key).expect("valid"))
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
