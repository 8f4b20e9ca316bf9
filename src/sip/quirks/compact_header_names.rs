//! Quirk: rsip 0.4 does not know compact header forms (RFC 3261 §7.3.3).
//!
//! `v:`, `f:`, `t:`, `i:`, `m:`, `l:` ... parse as `Header::Other("v", ..)`, so rsip's typed
//! accessors (and anything matching `Header::Via`) do not see them and a printed message keeps
//! a mix of forms. Stacks use them to fit UDP MTUs (RFC 3261 §18.1.1): Asterisk chan_pjsip
//! with `compact_headers = yes` in pjsip.conf `[system]`, and other PJSIP-based UAs with the
//! compact form on. We expand them to the long names before rsip sees them.

/// The long name for a compact form, or the name unchanged.
pub(crate) fn expand(name: &str) -> &str {
    if name.len() != 1 {
        return name;
    }
    match name.as_bytes().first().map(u8::to_ascii_lowercase) {
        Some(b'i') => "Call-ID",
        Some(b'm') => "Contact",
        Some(b'e') => "Content-Encoding",
        Some(b'l') => "Content-Length",
        Some(b'c') => "Content-Type",
        Some(b'f') => "From",
        Some(b's') => "Subject",
        Some(b'k') => "Supported",
        Some(b't') => "To",
        Some(b'v') => "Via",
        Some(b'o') => "Event",           // RFC 6665 §8.2.1
        Some(b'u') => "Allow-Events",    // RFC 6665 §8.2.2
        Some(b'r') => "Refer-To",        // RFC 3515 §2.1
        Some(b'b') => "Referred-By",     // RFC 3892 §7
        Some(b'x') => "Session-Expires", // RFC 4028 §4
        _ => name,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const COMPACT: &str = "OPTIONS sip:101@192.0.2.1 SIP/2.0\r\n\
        v: SIP/2.0/UDP 192.0.2.2;branch=z9hG4bKc1\r\n\
        f: <sip:a@192.0.2.2>;tag=1\r\nt: <sip:101@192.0.2.1>\r\ni: compact1\r\n\
        CSeq: 1 OPTIONS\r\nl: 0\r\n\r\n";

    #[test]
    fn rsip_does_not_recognise_compact_via() {
        // The proof: rsip keeps `v:` as an unknown header, so no Via is found.
        let msg = rsip::SipMessage::try_from(COMPACT.as_bytes()).unwrap();
        use rsip::message::HasHeaders;
        assert!(!msg
            .headers()
            .iter()
            .any(|h| matches!(h, rsip::Header::Via(_))));
        assert!(msg
            .headers()
            .iter()
            .any(|h| matches!(h, rsip::Header::Other(n, _) if n == "v")));
    }

    #[test]
    fn expanded_message_has_typed_headers() {
        let n = super::super::normalize(COMPACT.as_bytes()).unwrap();
        let msg = rsip::SipMessage::try_from(n.bytes.as_slice()).unwrap();
        use rsip::message::HasHeaders;
        assert!(msg
            .headers()
            .iter()
            .any(|h| matches!(h, rsip::Header::Via(_))));
        assert!(msg
            .headers()
            .iter()
            .any(|h| matches!(h, rsip::Header::CallId(_))));
        assert!(msg
            .headers()
            .iter()
            .any(|h| matches!(h, rsip::Header::ContentLength(_))));
    }

    #[test]
    fn long_and_unknown_names_unchanged() {
        assert_eq!(expand("Via"), "Via");
        assert_eq!(expand("q"), "q");
        assert_eq!(expand("V"), "Via");
    }
}
