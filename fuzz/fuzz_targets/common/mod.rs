//! Pieces several fuzz targets share (each target includes this file as `mod common`).
#![allow(dead_code)] // each target uses only part of it

use pbx_edge::sip::message::SipMessage;
use pbx_edge::srtp::{ContextOptions, CryptoSuite, Mki};

/// The SRTP configuration a selector byte picks: the suite (low bits), an MKI (0x08), the
/// RFC 4568 §6.3 unencrypted options (0x10 SRTP, not for AEAD suites; 0x20 SRTCP) and the
/// unannounced-unencrypted-SRTCP quirk (0x40).
pub fn srtp_selection(sel: u8, mki: Option<Mki>) -> (CryptoSuite, ContextOptions) {
    let suite = CryptoSuite::ALL[usize::from(sel) % CryptoSuite::ALL.len()];
    let options = ContextOptions {
        mki: if sel & 0x08 != 0 { mki } else { None },
        unencrypted_srtp: sel & 0x10 != 0 && !suite.is_aead(),
        unencrypted_srtcp: sel & 0x20 != 0,
        danger_accept_unannounced_unencrypted_srtcp: sel & 0x40 != 0,
        ..ContextOptions::default()
    };
    (suite, options)
}

/// Reads every header accessor the SIP core uses on a parsed message (none may panic).
pub fn read_headers(msg: &SipMessage) {
    let _ = msg.method();
    let _ = msg.status();
    let _ = msg.call_id();
    let _ = msg.cseq();
    let _ = msg.request_uri();
    let _ = msg.contacts();
}
