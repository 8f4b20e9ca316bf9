//! Flow tokens come back from the PBX in Request-URIs and Route headers (RFC 5626 §5.2):
//! decoding arbitrary text never panics, and nothing but a token the key encoded decodes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pbx_edge::sip::flow_token::{FlowToken, FlowTokenKey};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let key = FlowTokenKey::new([7; 32]);
    if let Ok(token) = FlowToken::decode(text, &key) {
        // Authenticated: the same token re-encodes and decodes to itself.
        let again = FlowToken::decode(&token.encode(&key), &key);
        assert_eq!(again.ok().map(|t| t.encode(&key)), Some(token.encode(&key)));
    }
});
