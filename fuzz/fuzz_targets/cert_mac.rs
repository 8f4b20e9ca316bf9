//! Device certificates (DER or PEM, a chain): parsing and reading the MAC from every place a
//! vendor profile may name never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pbx_edge::identity::chain::parse_certificate;
use pbx_edge::identity::mac::{mac_from_certificate, mac_from_source, MacSource};
use pbx_edge::identity::store::parse_certificates;

fuzz_target!(|data: &[u8]| {
    let mut ders = vec![data.to_vec()];
    if let Ok(chain) = parse_certificates(data) {
        ders.extend(chain.iter().map(|c| c.as_ref().to_vec()));
    }
    for der in &ders {
        if let Some(cert) = parse_certificate(der) {
            for source in MacSource::ALL {
                let _ = mac_from_source(&cert, source);
            }
            let _ = mac_from_certificate(&cert, &MacSource::ALL);
        }
    }
});
