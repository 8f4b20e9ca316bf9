//! SDP from both sides through every analyser and rewriter: the input is two bodies split at
//! the first NUL byte. Phone offer (body 1) → PBX answer (body 2), then PBX offer (body 1) →
//! phone answer (body 2), then re-offers on the completed plan. Nothing panics whatever the
//! bodies hold (the B2BUA answers 488 or 400 on errors).
#![no_main]

#[path = "../../tests/sdp_support/mod.rs"]
mod sdp_support;

use libfuzzer_sys::fuzz_target;
use pbx_edge::sdp::SrtpMode;
use sdp_support::Call;

fuzz_target!(|data: &[u8]| {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    let (first, second) = match rest.iter().position(|&b| b == 0) {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => (rest, &[][..]),
    };
    let first = String::from_utf8_lossy(first);
    let second = String::from_utf8_lossy(second);
    let mode = if sel & 1 == 0 {
        SrtpMode::Mandatory
    } else {
        SrtpMode::Optional
    };

    // Call from the phone.
    let mut call = Call::new(mode);
    if let Ok(offer) = call.phone_offer(&first) {
        if call.pbx_answer(&offer.plan, &second).is_ok() {
            // A re-INVITE from the phone with the same body, on the completed plan.
            let _ = call.phone_offer(&first);
        }
    }
    // Call from the PBX.
    let mut call = Call::new(mode);
    if let Ok(offer) = call.pbx_offer(&first) {
        if call.phone_answer(&offer.plan, &second).is_ok() {
            let _ = call.pbx_offer(&first);
        }
    }
});
