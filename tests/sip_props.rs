//! Property tests for the pure SIP core: framing and parsing never panic on arbitrary bytes, a
//! stream split at any points frames into the same messages, and print/parse roundtrips.

use std::path::Path;

use bytes::BytesMut;
use pbx_edge::sip::framing::{check_datagram, Frame, FramingLimits, StreamFramer};
use pbx_edge::sip::{NameAddr, SipMessage, SipUri, Via};
use proptest::prelude::*;

fn fixture_bytes() -> Vec<Vec<u8>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/sip");
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "sip"))
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|p| std::fs::read(p).unwrap())
        .collect()
}

/// Frames every chunk in turn, collecting frames; stops at the first error.
fn frame_chunks(chunks: &[&[u8]], limits: FramingLimits) -> Result<Vec<Frame>, String> {
    let mut framer = StreamFramer::new(limits);
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    for c in chunks {
        buf.extend_from_slice(c);
        loop {
            match framer.decode(&mut buf) {
                Ok(Some(f)) => out.push(f),
                Ok(None) => break,
                Err(e) => return Err(e.label().to_owned()),
            }
        }
    }
    Ok(out)
}

/// A stream of fixtures separated by keep-alives, as one phone connection would carry it.
fn stream_of(indices: &[usize], fixtures: &[Vec<u8>]) -> Vec<u8> {
    let mut s = Vec::new();
    for (n, i) in indices.iter().enumerate() {
        s.extend_from_slice(&fixtures[i % fixtures.len()]);
        if n % 3 == 0 {
            s.extend_from_slice(b"\r\n\r\n");
        }
    }
    s
}

fn split_at_points<'a>(bytes: &'a [u8], points: &[usize]) -> Vec<&'a [u8]> {
    let mut cuts: Vec<usize> = points.iter().map(|p| p % (bytes.len() + 1)).collect();
    cuts.sort_unstable();
    let mut chunks = Vec::new();
    let mut start = 0;
    for c in cuts {
        chunks.push(&bytes[start..c]);
        start = c;
    }
    chunks.push(&bytes[start..]);
    chunks
}

/// parse(print(m)) == m when m carries Content-Length; without one (UDP), printing adds it,
/// so the property is that printing is stable from the first print on.
fn roundtrips(m: &SipMessage) -> bool {
    let printed = m.to_bytes();
    let Ok(again) = SipMessage::parse(&printed) else {
        return false;
    };
    if m.header("Content-Length").is_some() && again != *m {
        return false;
    }
    again.to_bytes() == printed
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn framing_never_panics(data in proptest::collection::vec(any::<u8>(), 0..4096),
                            cuts in proptest::collection::vec(any::<usize>(), 0..8)) {
        let limits = FramingLimits { max_message_bytes: 2048, max_headers: 16,
                                     max_line_bytes: 256, max_body_bytes: 1024 };
        let _ = frame_chunks(&split_at_points(&data, &cuts), limits);
        let _ = check_datagram(&data, &limits);
    }

    #[test]
    fn framing_never_panics_on_sip_like_bytes(
        head in "(INVITE|SIP/2\\.0|\r\n|Content-Length: ?[0-9]{0,12}|l:[ 0-9]{0,4}|[A-Za-z-]{1,8}: [ -~]{0,20}|\r| |\t|\n){0,40}",
        body in proptest::collection::vec(any::<u8>(), 0..64)) {
        let mut data = head.into_bytes();
        data.extend_from_slice(&body);
        let _ = frame_chunks(&[&data], FramingLimits::default());
        let _ = check_datagram(&data, &FramingLimits::default());
    }

    #[test]
    fn stream_split_anywhere_gives_same_frames(
        indices in proptest::collection::vec(0usize..64, 1..6),
        cuts in proptest::collection::vec(any::<usize>(), 0..24)) {
        let fixtures = fixture_bytes();
        let stream = stream_of(&indices, &fixtures);
        let whole = frame_chunks(&[&stream], FramingLimits::default()).unwrap();
        let split = frame_chunks(&split_at_points(&stream, &cuts), FramingLimits::default()).unwrap();
        prop_assert_eq!(&whole, &split);
        let messages = whole.iter().filter(|f| matches!(f, Frame::Message(_))).count();
        prop_assert_eq!(messages, indices.len());
        // And byte by byte, the worst case for the incremental scanner.
        let singles: Vec<&[u8]> = stream.chunks(1).collect();
        prop_assert_eq!(&whole, &frame_chunks(&singles, FramingLimits::default()).unwrap());
    }

    #[test]
    fn parse_never_panics(data in proptest::collection::vec(any::<u8>(), 0..2048)) {
        if let Some(resp) = pbx_edge::sip::response::bad_request_for_raw(&data, Some(("e", "x"))) {
            prop_assert!(resp.starts_with(b"SIP/2.0 400 "));
        }
        if let Ok(m) = SipMessage::parse(&data) {
            prop_assert!(roundtrips(&m));
            let _ = (m.cseq(), m.vias(), m.contacts(), m.from(), m.to(), m.request_uri(),
                     m.record_routes(), m.routes(), m.max_forwards(), m.expires());
        }
    }

    #[test]
    fn mutated_fixture_never_panics(which in 0usize..64, pos in any::<usize>(), byte in any::<u8>(),
                                    cut in any::<usize>()) {
        let fixtures = fixture_bytes();
        let mut data = fixtures[which % fixtures.len()].clone();
        let p = pos % data.len();
        data[p] = byte;
        data.truncate(cut % (data.len() + 1));
        let _ = frame_chunks(&[&data], FramingLimits::default());
        if let Ok(m) = SipMessage::parse(&data) {
            let _ = (m.cseq(), m.vias(), m.contacts(), m.from(), m.to(), m.request_uri());
            prop_assert!(roundtrips(&m));
        }
    }

    #[test]
    fn value_parsers_never_panic(s in "\\PC{0,80}") {
        let _ = SipUri::parse(&s);
        let _ = NameAddr::parse(&s);
        let _ = Via::parse(&s);
    }

    #[test]
    fn uri_roundtrip(user in "[a-zA-Z0-9+*#._-]{1,12}",
                     host in "([a-z][a-z0-9-]{0,10}\\.example|192\\.0\\.2\\.[0-9]{1,3}|\\[2001:db8::[0-9a-f]{1,4}\\])",
                     port in proptest::option::of(1u16..),
                     params in proptest::collection::vec(("[a-z]{1,6}", proptest::option::of("[a-z0-9]{1,6}")), 0..4)) {
        let mut text = format!("sip:{user}@{host}");
        if let Some(p) = port { text.push_str(&format!(":{p}")); }
        for (k, v) in &params {
            text.push(';');
            text.push_str(k);
            if let Some(v) = v { text.push('='); text.push_str(v); }
        }
        let uri = SipUri::parse(&text).unwrap();
        prop_assert_eq!(uri.to_string(), text.clone());
        prop_assert_eq!(SipUri::parse(&uri.to_string()).unwrap(), uri.clone());
        let na = NameAddr::parse(&format!("\"x\" <{text}>;tag=1")).unwrap();
        prop_assert_eq!(NameAddr::parse(&na.to_string()).unwrap(), na);
    }
}

#[test]
fn fixtures_print_parse_identity() {
    for bytes in fixture_bytes() {
        let m = SipMessage::parse(&bytes).unwrap();
        assert_eq!(SipMessage::parse(&m.to_bytes()).unwrap(), m);
        // Printing is stable after the first normalisation.
        assert_eq!(
            SipMessage::parse(&m.to_bytes()).unwrap().to_bytes(),
            m.to_bytes()
        );
    }
}
