//! `pbx-edge inspect-cert FILE`: whatever the file holds (PEM or DER, a certificate, a chain,
//! garbage), building and printing the report never panics. The same path the command takes
//! without `--config`: the development default's configuration and its identity snapshot
//! (`Resolved::load_identity`, development PKI generated once into `fuzz/state/inspect_cert/`,
//! whose device certificates `fuzz/seed.sh` adds to the corpus), then `inspect_certificate` on
//! the file's bytes and the report's text.
#![no_main]

use std::path::Path;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use pbx_edge::devdefault;
use pbx_edge::identity::inspect::inspect_certificate;
use pbx_edge::identity::IdentitySnapshot;
use rustls_pki_types::UnixTime;

/// Relative to the working directory (`fuzz/` under `fuzz/run.sh`).
const STATE_DIR: &str = "state/inspect_cert";

fn snapshot() -> &'static IdentitySnapshot {
    static SNAPSHOT: OnceLock<IdentitySnapshot> = OnceLock::new();
    SNAPSHOT.get_or_init(|| {
        let resolved = devdefault::resolve(None, Some(Path::new(STATE_DIR)), true, Vec::new())
            .expect("development default (fuzz set-up, not input)");
        resolved
            .load_identity()
            .expect("development identity snapshot (fuzz set-up, not input)")
    })
}

fuzz_target!(
    init: {
        // Generates the development PKI before the first input, so `seed.sh` can copy its
        // certificates after a `-runs=0` start.
        let _ = snapshot();
    },
    |data: &[u8]| {
        if let Ok(report) = inspect_certificate(data, snapshot(), UnixTime::now()) {
            let text = report.to_string();
            // The verdict line and the exit status (accepted) never disagree.
            assert_eq!(report.accepted, report.rejection.is_none());
            assert_eq!(report.accepted, text.contains("verdict:    ACCEPTED"));
        }
    }
);
