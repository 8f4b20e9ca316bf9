//! SIP over a stream (the phones' TLS connections): arbitrary bytes, cut into arbitrary
//! reads, through the Content-Length framer and the message parser never panic; the framer
//! stops for good on its first error (the connection is closed then), and a framed message
//! that parses serialises to bytes that parse again.
#![no_main]

use bytes::BytesMut;
mod common;

use libfuzzer_sys::fuzz_target;
use pbx_edge::sip::framing::{Frame, FramingLimits, StreamFramer};
use pbx_edge::sip::message::SipMessage;

fuzz_target!(|data: &[u8]| {
    // The first byte sets the read size (1..=256): trickled heads take other paths.
    let Some((&step, rest)) = data.split_first() else {
        return;
    };
    let step = usize::from(step) + 1;
    // Small limits reach every limit check with short inputs.
    let limits = FramingLimits {
        max_message_bytes: 2048,
        max_headers: 16,
        max_line_bytes: 512,
        max_body_bytes: 1024,
    };
    let mut framer = StreamFramer::new(limits);
    let mut buf = BytesMut::new();
    for chunk in rest.chunks(step) {
        buf.extend_from_slice(chunk);
        loop {
            match framer.decode(&mut buf) {
                Ok(Some(Frame::Message(m))) => {
                    assert!(m.len() <= limits.max_message_bytes);
                    if let Ok(msg) = SipMessage::parse(&m) {
                        common::read_headers(&msg);
                        let again = SipMessage::parse(&msg.to_bytes());
                        assert!(again.is_ok(), "re-parse of own serialisation: {again:?}");
                    }
                }
                Ok(Some(Frame::KeepAlivePing | Frame::KeepAlivePong)) => {}
                Ok(None) => break,
                Err(_) => return,
            }
        }
    }
});
