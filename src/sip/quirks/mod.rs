//! Pre-normalisation of raw SIP bytes before they reach rsip 0.4, one file per rsip quirk.
//!
//! Each quirk is proved by a test in its own file that feeds the raw form to rsip and shows
//! the rejection or the damage, then shows the normalised form parses. All rewrites here are
//! semantically neutral per RFC 3261: §7.3.1 (folding, comma lists) and §7.3.3 (compact forms).
//! See `RSIP_NOTES.md` at the crate root.

pub mod comma_separated_values;
pub mod compact_header_names;
pub mod folded_header_lines;
pub mod ipv6_request_uri;

use crate::sip::uri::SipUri;

/// The normalised message bytes, plus the real Request-URI when it had to be hidden from rsip.
pub(crate) struct Normalized {
    /// Head (start line + one header per line) + CRLF CRLF + body, ready for rsip.
    pub bytes: Vec<u8>,
    /// The Request-URI rsip cannot parse (IPv6 reference), to put back after parsing.
    pub hidden_request_uri: Option<SipUri>,
}

/// Why raw bytes could not be normalised (they are not a SIP message rsip could ever accept).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NormalizeError {
    /// No CRLF CRLF ends the header section.
    NoHeaderEnd,
    /// A header line is not valid UTF-8.
    NonUtf8Header,
    /// A continuation line comes before any header.
    OrphanContinuation,
    /// The Request-URI is an IPv6 form we could not parse either.
    BadRequestUri,
    /// A CR or LF that is not part of a CRLF line ending (RFC 3261 §7: lines end in CRLF).
    BareLineBreak,
}

/// Runs every pre-normalisation step over one framed message.
pub(crate) fn normalize(raw: &[u8]) -> Result<Normalized, NormalizeError> {
    let head_end = find(raw, b"\r\n\r\n").ok_or(NormalizeError::NoHeaderEnd)?;
    let head = raw.get(..head_end).ok_or(NormalizeError::NoHeaderEnd)?;
    let body = raw.get(head_end + 4..).unwrap_or(&[]);
    let head = std::str::from_utf8(head).map_err(|_| NormalizeError::NonUtf8Header)?;
    // A lone CR or LF inside the head would let rsip and the framer disagree on line ends.
    if head.split("\r\n").any(|line| line.contains(['\r', '\n'])) {
        return Err(NormalizeError::BareLineBreak);
    }

    let mut lines = folded_header_lines::unfold(head)?;
    let mut start_line = lines.remove(0);
    let hidden_request_uri = ipv6_request_uri::hide(&mut start_line)?;

    let mut out = Vec::with_capacity(raw.len() + 64);
    out.extend_from_slice(start_line.as_bytes());
    out.extend_from_slice(b"\r\n");
    for line in &lines {
        let Some((name, value)) = line.split_once(':') else {
            // Not a header: leave it for rsip to reject with its own error.
            out.extend_from_slice(line.as_bytes());
            out.extend_from_slice(b"\r\n");
            continue;
        };
        let name = compact_header_names::expand(name.trim_end());
        for value in comma_separated_values::split(name, value.trim()) {
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(value.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
    Ok(Normalized {
        bytes: out,
        hidden_request_uri,
    })
}

/// Position of `needle` in `hay`.
pub(crate) fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// rsip ends a header line only at CRLF, so a bare LF hides a header inside another
    /// header's value; a framer splitting at LF would see a different message (smuggling).
    #[test]
    fn rsip_keeps_bare_lf_inside_a_value() {
        let raw = b"OPTIONS sip:a@192.0.2.1 SIP/2.0\r\nContent-Type: text/plain\nContent-Length: 9\r\n\r\n";
        let msg = rsip::SipMessage::try_from(&raw[..]).unwrap();
        use rsip::message::HasHeaders;
        assert_eq!(msg.headers().iter().count(), 1);
        assert_eq!(normalize(raw).err(), Some(NormalizeError::BareLineBreak));
    }
}
