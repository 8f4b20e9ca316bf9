//! SDES `a=crypto` values (RFC 4568 §9.1) from either side's SDP: parsing arbitrary text
//! never panics, and a parsed line builds SRTP context options without panicking.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pbx_edge::srtp::{ContextOptions, CryptoAttribute};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(attr) = CryptoAttribute::parse(text) {
        for key in &attr.keys {
            let _ = ContextOptions::from_sdes(key, &attr.session_params);
        }
    }
});
