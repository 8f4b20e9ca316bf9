//! Quirk: rsip 0.4 rejects folded header lines (RFC 3261 §7.3.1 line continuation).
//!
//! rsip's header tokenizer reads `name ":" value CRLF` and stops at a line starting with
//! whitespace, then fails the whole message with "headers". RFC 3261 §7.3.1 allows a header
//! value to continue on lines starting with SP/HTAB; RFC 4475 §3.1.1.1 ("wsinv") makes it a
//! torture-test case every parser must survive, and a hostile peer can always send it. We join
//! each continuation with a single SP, which §7.3.1 says is equivalent.

use super::NormalizeError;

/// Splits the head into logical lines: the start line first, continuations joined.
pub(crate) fn unfold(head: &str) -> Result<Vec<String>, NormalizeError> {
    let mut lines: Vec<String> = Vec::new();
    for raw in head.split("\r\n") {
        if raw.starts_with(' ') || raw.starts_with('\t') {
            // A continuation of the start line is not allowed; of a header it is (§7.3.1).
            let has_header = lines.len() > 1;
            match lines.last_mut() {
                Some(prev) if has_header => {
                    prev.push(' ');
                    prev.push_str(raw.trim());
                }
                _ => return Err(NormalizeError::OrphanContinuation),
            }
        } else {
            lines.push(raw.to_owned());
        }
    }
    Ok(lines)
}

#[cfg(test)]
mod tests {
    use super::*;

    const FOLDED: &str = "OPTIONS sip:101@192.0.2.1 SIP/2.0\r\n\
        Via: SIP/2.0/UDP 192.0.2.2;branch=z9hG4bKf1\r\n\
        From: <sip:a@192.0.2.2>;tag=1\r\nTo: <sip:101@192.0.2.1>\r\nCall-ID: fold1\r\n\
        CSeq: 1 OPTIONS\r\nAllow: INVITE, ACK,\r\n  BYE, CANCEL\r\nContent-Length: 0\r\n\r\n";

    #[test]
    fn rsip_rejects_folded_lines() {
        // The proof: rsip fails on a message that RFC 3261 §7.3.1 allows.
        assert!(rsip::SipMessage::try_from(FOLDED.as_bytes()).is_err());
    }

    #[test]
    fn unfolded_message_parses_and_keeps_value() {
        let n = super::super::normalize(FOLDED.as_bytes()).unwrap();
        let msg = rsip::SipMessage::try_from(n.bytes.as_slice()).unwrap();
        let text = msg.to_string();
        assert!(
            text.contains("Allow: INVITE, ACK, BYE, CANCEL\r\n"),
            "{text}"
        );
    }

    #[test]
    fn continuation_of_start_line_is_refused() {
        assert_eq!(
            unfold("INVITE sip:a@b SIP/2.0\r\n x").unwrap_err(),
            NormalizeError::OrphanContinuation
        );
    }
}
