//! Every phone/PBX message in `tests/fixtures/sip/` is framed, parsed, rewritten the way the
//! B2BUA rewrites a leg, serialised and parsed again.

use std::path::{Path, PathBuf};

use bytes::BytesMut;
use pbx_edge::sip::framing::{check_datagram, DatagramFrame, Frame, FramingLimits, StreamFramer};
use pbx_edge::sip::{
    ContactList, FlowToken, FlowTokenKey, Method, NameAddr, SipMessage, SipUri, Via,
};

fn fixtures() -> Vec<(String, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/sip");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "sip"))
        .collect();
    files.sort();
    assert!(files.len() >= 15, "fixtures missing in {}", dir.display());
    files
        .into_iter()
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(&p).unwrap())
        })
        .collect()
}

fn frame_one(bytes: &[u8]) -> bytes::Bytes {
    let mut framer = StreamFramer::new(FramingLimits::default());
    let mut buf = BytesMut::from(bytes);
    let Some(Frame::Message(m)) = framer.decode(&mut buf).unwrap() else {
        panic!("no message frame");
    };
    assert!(buf.is_empty(), "bytes left after the frame");
    m
}

/// The rewrite a B2BUA leg does toward the PBX: own Via, Max-Forwards, edge Contact with a
/// flow token (params kept), Record-Route of the edge.
fn rewrite(msg: &mut SipMessage, key: &FlowTokenKey) {
    let token = FlowToken {
        flow: 7,
        binding: 3,
    }
    .encode(key);
    if msg.is_request() {
        msg.push_via(&Via::new(
            "UDP",
            "198.51.100.1",
            Some(5080),
            "z9hG4bKedge-fixture",
            true,
        ));
        msg.decrement_max_forwards().unwrap();
        msg.push_record_route(&NameAddr::parse("<sip:198.51.100.1:5080;lr>").unwrap());
    } else {
        msg.pop_via().unwrap();
    }
    msg.map_contact_uris(|uri| {
        let mut edge = SipUri::parse("sip:x@198.51.100.1:5080").unwrap();
        edge.set_user(Some(&token));
        edge.params = uri.params.clone();
        edge.params.remove("transport");
        edge
    })
    .unwrap();
}

#[test]
fn every_fixture_parses_rewrites_and_roundtrips() {
    let key = FlowTokenKey::new([7; 32]);
    for (name, bytes) in fixtures() {
        let framed = frame_one(&bytes);
        // UDP receive path must accept the same bytes.
        assert_eq!(
            check_datagram(&bytes, &FramingLimits::default()).unwrap(),
            DatagramFrame::Message(&framed[..]),
            "{name}"
        );
        let original = SipMessage::parse(&framed).unwrap_or_else(|e| panic!("{name}: {e}"));

        // parse(print(msg)) == msg for the untouched message.
        let printed = original.to_bytes();
        assert_eq!(SipMessage::parse(&printed).unwrap(), original, "{name}");

        // Accessors every B2BUA path uses.
        let cseq = original.cseq().unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(!original.call_id().unwrap().is_empty(), "{name}");
        let via = original.top_via().unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(via.branch().unwrap().starts_with("z9hG4bK"), "{name}");
        original.from().unwrap_or_else(|e| panic!("{name}: {e}"));
        original.to().unwrap_or_else(|e| panic!("{name}: {e}"));
        if let Some(m) = original.method() {
            assert_eq!(m, cseq.method, "{name}");
            original
                .request_uri()
                .unwrap_or_else(|e| panic!("{name}: {e}"));
        }
        let before = original
            .contacts()
            .unwrap_or_else(|e| panic!("{name}: {e}"));

        let mut rewritten = original.clone();
        rewrite(&mut rewritten, &key);
        let again =
            SipMessage::parse(&rewritten.to_bytes()).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(again, rewritten, "{name}");
        assert_eq!(again.body(), original.body(), "{name}: body changed");

        if again.is_request() {
            assert_eq!(
                again.top_via().unwrap().branch(),
                Some("z9hG4bKedge-fixture"),
                "{name}"
            );
            assert_eq!(
                again.vias().unwrap().len(),
                original.vias().unwrap().len() + 1
            );
            assert_eq!(again.record_routes().unwrap().len(), 1, "{name}");
        } else {
            assert_eq!(
                again.vias().unwrap().len(),
                original.vias().unwrap().len() - 1
            );
        }
        if let (ContactList::Addrs(b), ContactList::Addrs(a)) =
            (&before, &again.contacts().unwrap())
        {
            assert_eq!(a.len(), b.len(), "{name}");
            for (old, new) in b.iter().zip(a) {
                let user = new.uri.user().unwrap();
                assert_eq!(
                    FlowToken::decode(user, &key).unwrap(),
                    FlowToken {
                        flow: 7,
                        binding: 3
                    }
                );
                assert_eq!(new.params, old.params, "{name}: contact params lost");
                assert_eq!(new.display_name, old.display_name, "{name}");
            }
        }
    }
}

#[test]
fn fixture_specific_facts() {
    let all = fixtures();
    let get = |n: &str| {
        let bytes = &all.iter().find(|(name, _)| name == n).unwrap().1;
        SipMessage::parse(bytes).unwrap()
    };

    let snom = get("snom-d785-register.sip");
    let ContactList::Addrs(c) = snom.contacts().unwrap() else {
        panic!()
    };
    assert_eq!(
        c[0].params.value("+sip.instance"),
        Some("<urn:uuid:bce2c5d9-4d5a-4c7b-8e6f-000413a1b2c3>")
    );
    assert_eq!(c[0].params.value("reg-id"), Some("1"));
    assert_eq!(snom.to_user().unwrap().as_deref(), Some("101"));
    assert_eq!(snom.expires().unwrap(), Some(3600));

    let v6 = get("yealink-t46u-register-ipv6.sip");
    assert_eq!(v6.top_via().unwrap().sent_by(), "[2001:db8::32]:11722");
    let ContactList::Addrs(c) = v6.contacts().unwrap() else {
        panic!()
    };
    assert_eq!(c[0].uri.host, "[2001:db8::32]");

    let compact = get("asterisk-pjsip-compact-invite.sip");
    assert_eq!(compact.method(), Some(Method::Invite));
    assert_eq!(
        compact.call_id().unwrap(),
        "9a8b7c6d-5e4f-3a2b-1c0d-9e8f7a6b5c4d"
    );
    assert_eq!(compact.header("Content-Type"), Some("application/sdp"));
    assert!(compact.body().starts_with(b"v=0\r\n"));

    let multi = get("asterisk-pjsip-register-200-multi-contact.sip");
    assert_eq!(multi.status(), Some(200));
    assert_eq!(multi.vias().unwrap().len(), 2);
    let ContactList::Addrs(c) = multi.contacts().unwrap() else {
        panic!()
    };
    assert_eq!(
        c.iter().map(|c| c.expires()).collect::<Vec<_>>(),
        vec![Some(3599), Some(120)]
    );

    let folded = get("rfc4475-torture-folded-options.sip");
    assert_eq!(folded.cseq().unwrap().method, Method::Options);
    assert_eq!(
        folded.header("Subject"),
        Some("a subject that is folded over three lines")
    );

    let mwi = get("asterisk-pjsip-notify-mwi.sip");
    assert_eq!(mwi.header("Event"), Some("message-summary"));
    assert!(mwi.body().starts_with(b"Messages-Waiting: yes"));

    // Real capture: baresip 1.0.0 with RFC 5626 outbound (sipnat=outbound).
    let baresip = get("baresip-1.0.0-register.sip");
    let ContactList::Addrs(c) = baresip.contacts().unwrap() else {
        panic!()
    };
    assert_eq!(c[0].params.value("reg-id"), Some("1"));
    assert!(c[0]
        .params
        .value("+sip.instance")
        .unwrap()
        .starts_with("<urn:uuid:"));
    assert_eq!(
        baresip.routes().unwrap()[0].uri.params.find("lr"),
        Some(None)
    );
    // Real capture: a Request-URI with a duplicated transport parameter survives as written.
    let invite = get("baresip-1.0.0-invite-srtp.sip");
    let uri = invite.request_uri().unwrap();
    assert_eq!(uri.params.0.len(), 2);
    assert!(invite.body().windows(8).any(|w| w == b"a=crypto"));

    let cisco = get("cisco-cp8841-mpp-register.sip");
    let ContactList::Addrs(c) = cisco.contacts().unwrap() else {
        panic!()
    };
    assert_eq!(c[0].expires(), Some(3600));
    assert_eq!(c[0].display_name.as_deref(), Some("\"Lobby\""));
}

#[test]
fn fixtures_pipelined_on_one_stream() {
    let all = fixtures();
    let mut stream = Vec::new();
    for (_, bytes) in &all {
        stream.extend_from_slice(bytes);
        stream.extend_from_slice(b"\r\n\r\n");
    }
    let mut framer = StreamFramer::new(FramingLimits::default());
    let mut buf = BytesMut::from(&stream[..]);
    let mut messages = 0;
    let mut pings = 0;
    while let Some(f) = framer.decode(&mut buf).unwrap() {
        match f {
            Frame::Message(m) => {
                SipMessage::parse(&m).unwrap();
                messages += 1;
            }
            Frame::KeepAlivePing => pings += 1,
            Frame::KeepAlivePong => panic!("no pong expected"),
        }
    }
    assert_eq!((messages, pings), (all.len(), all.len()));
}
