//! Redaction of credentials for logs: the digest `response` (and `cnonce`) in Authorization /
//! Proxy-Authorization (RFC 3261 §22.4, RFC 8760), and the whole credentials of any other scheme
//! (e.g. Basic). Logs may show who authenticated (`username`, `realm`, `nonce`), never a value an
//! attacker could replay or brute-force offline.

use std::borrow::Cow;

use crate::sip::message::SipMessage;

/// Placeholder written instead of a secret.
pub const REDACTED: &str = "<redacted>";

/// Whether a header carries credentials.
pub fn is_credential_header(name: &str) -> bool {
    name.eq_ignore_ascii_case("Authorization") || name.eq_ignore_ascii_case("Proxy-Authorization")
}

/// The value of header `name` made safe for a log line.
pub fn redact_header_value<'a>(name: &str, value: &'a str) -> Cow<'a, str> {
    if !is_credential_header(name) {
        return Cow::Borrowed(value);
    }
    let trimmed = value.trim_start();
    let (scheme, params) = trimmed.split_once(' ').unwrap_or((trimmed, ""));
    if !scheme.eq_ignore_ascii_case("Digest") {
        return Cow::Owned(format!("{scheme} {REDACTED}"));
    }
    let parts: Vec<String> = crate::sip::uri::split_top_level(params, b',')
        .into_iter()
        .map(|p| {
            let p = p.trim();
            match p.split_once('=') {
                Some((k, _))
                    if k.trim().eq_ignore_ascii_case("response")
                        || k.trim().eq_ignore_ascii_case("cnonce") =>
                {
                    format!("{}=\"{REDACTED}\"", k.trim())
                }
                _ => p.to_owned(),
            }
        })
        .collect();
    Cow::Owned(format!("{scheme} {}", parts.join(", ")))
}

/// The whole message as text for a debug log, credentials redacted, body shown lossily.
pub fn redacted_text(msg: &SipMessage) -> String {
    let bytes = msg.to_bytes();
    let text = String::from_utf8_lossy(&bytes);
    let mut out = String::with_capacity(text.len());
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    for (i, line) in head.split("\r\n").enumerate() {
        match line.split_once(':') {
            Some((name, value)) if i > 0 && is_credential_header(name.trim()) => {
                out.push_str(name);
                out.push_str(": ");
                out.push_str(&redact_header_value(name.trim(), value.trim()));
            }
            _ => out.push_str(line),
        }
        out.push_str("\r\n");
    }
    out.push_str("\r\n");
    out.push_str(body);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const AUTH: &str = "Digest username=\"101\", realm=\"asterisk\", nonce=\"abc\", \
        uri=\"sip:pbx.example.com\", response=\"0123456789abcdef0123456789abcdef\", \
        algorithm=MD5, cnonce=\"c0ffee\", qop=auth, nc=00000001";

    #[test]
    fn digest_response_removed_username_kept() {
        let r = redact_header_value("Authorization", AUTH);
        assert!(!r.contains("0123456789abcdef"));
        assert!(!r.contains("c0ffee"));
        assert!(r.contains("username=\"101\""));
        assert!(r.contains("response=\"<redacted>\""));
    }

    #[test]
    fn other_schemes_fully_redacted() {
        assert_eq!(
            redact_header_value("proxy-authorization", "Basic dXNlcjpwYXNz"),
            "Basic <redacted>"
        );
    }

    #[test]
    fn other_headers_untouched() {
        assert_eq!(redact_header_value("From", "<sip:a@b>"), "<sip:a@b>");
    }

    #[test]
    fn debug_output_redacted() {
        let raw = format!(
            "REGISTER sip:p SIP/2.0\r\nVia: SIP/2.0/TLS 192.0.2.1;branch=z9hG4bK1\r\n\
             Call-ID: r\r\nProxy-Authorization: {AUTH}\r\nContent-Length: 0\r\n\r\n"
        );
        let m = SipMessage::parse(raw.as_bytes()).unwrap();
        let debug = format!("{m:?}");
        assert!(!debug.contains("0123456789abcdef"), "{debug}");
        assert!(debug.contains("username"));
    }

    #[test]
    fn message_text_redacted() {
        let raw = format!(
            "REGISTER sip:pbx.example.com SIP/2.0\r\nVia: SIP/2.0/TLS 192.0.2.1;branch=z9hG4bK1\r\n\
             From: <sip:101@pbx.example.com>;tag=1\r\nTo: <sip:101@pbx.example.com>\r\n\
             Call-ID: r\r\nCSeq: 2 REGISTER\r\nAuthorization: {AUTH}\r\nContent-Length: 0\r\n\r\n"
        );
        let m = SipMessage::parse(raw.as_bytes()).unwrap();
        let text = redacted_text(&m);
        assert!(!text.contains("0123456789abcdef"));
        assert!(text.contains("Authorization: Digest username=\"101\""));
        assert!(text.contains("Call-ID: r\r\n"));
    }
}
