//! Message framing: where one SIP message ends in a byte stream (TLS/TCP) or a datagram (UDP).
//!
//! Stream (RFC 3261 §18.3): the header section ends at the first empty line; Content-Length is
//! mandatory and gives the body length. RFC 5626 §3.5.1 keep-alives: a CRLF CRLF "ping" must be
//! answered with one CRLF "pong" by the caller; a lone CRLF (a pong, or the stray CRLFs RFC 3261
//! §7.5 says to ignore before a start line) is reported and otherwise ignored.
//!
//! Limits are checked while scanning, before any buffer for the message is allocated: the
//! framer never reserves Content-Length bytes, it only splits frames off the caller's buffer.
//! A half-sent message returns `Ok(None)` and scanning resumes where it stopped, so a slowly
//! trickled header costs O(n) in total. After any error the connection must be closed: the
//! stream position is lost.

use bytes::{Buf, Bytes, BytesMut};

/// Size limits for one message. Defaults suit desk phones (an INVITE with SDP is 1-4 KB; BLF
/// NOTIFY bodies with many dialogs can be tens of KB).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FramingLimits {
    /// Maximum bytes of one whole message (head + body).
    pub max_message_bytes: usize,
    /// Maximum header lines (a folded continuation does not count as a new header).
    pub max_headers: usize,
    /// Maximum bytes of one line, CRLF excluded.
    pub max_line_bytes: usize,
    /// Maximum body bytes (Content-Length).
    pub max_body_bytes: usize,
}

impl Default for FramingLimits {
    fn default() -> Self {
        Self {
            max_message_bytes: 65_535,
            max_headers: 128,
            max_line_bytes: 8_192,
            max_body_bytes: 60_000,
        }
    }
}

/// Why the framer gave up. Every variant on a stream means: close that connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FramingError {
    /// Head, or head + Content-Length, is larger than `max_message_bytes`.
    #[error("message larger than {limit} bytes")]
    MessageTooLarge {
        /// The limit in force.
        limit: usize,
    },
    /// Content-Length is larger than `max_body_bytes`.
    #[error("body larger than {limit} bytes")]
    BodyTooLarge {
        /// The limit in force.
        limit: usize,
    },
    /// More header lines than `max_headers`.
    #[error("more than {limit} headers")]
    TooManyHeaders {
        /// The limit in force.
        limit: usize,
    },
    /// A line is longer than `max_line_bytes`.
    #[error("line longer than {limit} bytes")]
    LineTooLong {
        /// The limit in force.
        limit: usize,
    },
    /// A stream message has no Content-Length (mandatory on streams, RFC 3261 §18.3, §20.14).
    #[error("missing Content-Length on a stream")]
    MissingContentLength,
    /// Content-Length is not a decimal number.
    #[error("bad Content-Length")]
    BadContentLength,
    /// Several Content-Length headers with different values (request smuggling).
    #[error("conflicting Content-Length headers")]
    ConflictingContentLength,
    /// A line ends in LF without CR (RFC 3261 §7 requires CRLF).
    #[error("bare LF line ending")]
    BareLineFeed,
    /// A datagram has no empty line ending its header section.
    #[error("no end of header section in datagram")]
    NoHeaderEnd,
    /// A datagram's Content-Length is larger than its body (RFC 3261 §18.3: 400 for requests,
    /// discard for responses).
    #[error("datagram body shorter than Content-Length")]
    TruncatedBody,
}

impl FramingError {
    /// Stable label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            Self::MessageTooLarge { .. } => "message_too_large",
            Self::BodyTooLarge { .. } => "body_too_large",
            Self::TooManyHeaders { .. } => "too_many_headers",
            Self::LineTooLong { .. } => "line_too_long",
            Self::MissingContentLength => "missing_content_length",
            Self::BadContentLength => "bad_content_length",
            Self::ConflictingContentLength => "conflicting_content_length",
            Self::BareLineFeed => "bare_line_feed",
            Self::NoHeaderEnd => "no_header_end",
            Self::TruncatedBody => "truncated_body",
        }
    }
}

/// One unit read from a stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// One complete message (head + exactly Content-Length body bytes), not yet parsed.
    Message(Bytes),
    /// CRLF CRLF (RFC 5626 §3.5.1): the caller must write one CRLF back.
    KeepAlivePing,
    /// A lone CRLF: a pong, or a stray CRLF before a start line; nothing to answer.
    KeepAlivePong,
}

/// Incremental head scanner state, so a trickled header is scanned once.
#[derive(Debug, Clone, Copy, Default)]
struct Scan {
    /// Bytes of the buffer already scanned.
    scanned: usize,
    /// Start of the current line.
    line_start: usize,
    /// Lines completed so far (the start line is line 1).
    lines: usize,
    /// Header lines seen (continuations excluded).
    headers: usize,
}

/// Frames SIP messages out of a byte stream; one per connection.
#[derive(Debug, Clone)]
pub struct StreamFramer {
    limits: FramingLimits,
    scan: Scan,
    /// Head length and Content-Length of the message being received, once its head is complete.
    head: Option<(usize, usize)>,
}

impl StreamFramer {
    /// A framer with these limits.
    pub fn new(limits: FramingLimits) -> Self {
        Self {
            limits,
            scan: Scan::default(),
            head: None,
        }
    }

    /// The limits in force.
    pub fn limits(&self) -> &FramingLimits {
        &self.limits
    }

    /// Takes the next frame off the front of `buf`, or `Ok(None)` if more bytes are needed.
    /// Call it until it returns `Ok(None)` after every read. The bytes of a returned frame are
    /// removed from `buf`; partial data stays there.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Frame>, FramingError> {
        if self.head.is_none() && self.scan.scanned == 0 {
            if let Some(frame) = keep_alive(buf) {
                return Ok(frame);
            }
        }
        let (head_len, body_len) = match self.head {
            Some(h) => h,
            None => {
                let Some(head_len) = scan_head(buf, &mut self.scan, &self.limits)? else {
                    return Ok(None);
                };
                let head = buf.get(..head_len).unwrap_or(&[]);
                let body_len = content_length(head)?.ok_or(FramingError::MissingContentLength)?;
                check_sizes(head_len, body_len, &self.limits)?;
                self.head = Some((head_len, body_len));
                (head_len, body_len)
            }
        };
        let total = head_len + body_len;
        if buf.len() < total {
            return Ok(None);
        }
        self.head = None;
        self.scan = Scan::default();
        Ok(Some(Frame::Message(buf.split_to(total).freeze())))
    }
}

impl Default for StreamFramer {
    fn default() -> Self {
        Self::new(FramingLimits::default())
    }
}

/// Keep-alive handling at a message boundary: `Some(Some(frame))` consumed one, `Some(None)`
/// needs more bytes to tell ping from pong, `None` means a message starts here.
fn keep_alive(buf: &mut BytesMut) -> Option<Option<Frame>> {
    const PING: &[u8] = b"\r\n\r\n";
    if buf.starts_with(PING) {
        buf.advance(PING.len());
        return Some(Some(Frame::KeepAlivePing));
    }
    if buf.first() != Some(&b'\r') {
        return None;
    }
    if buf.len() < PING.len() && PING.starts_with(buf) {
        // "\r", "\r\n" or "\r\n\r": could still become a ping.
        return Some(None);
    }
    if buf.starts_with(b"\r\n") {
        buf.advance(2);
        return Some(Some(Frame::KeepAlivePong));
    }
    None // "\rX": let the head scanner reject it
}

/// Scans for the empty line ending the head; returns the head length including CRLF CRLF.
fn scan_head(
    buf: &[u8],
    scan: &mut Scan,
    limits: &FramingLimits,
) -> Result<Option<usize>, FramingError> {
    let mut i = scan.scanned;
    while let Some(&b) = buf.get(i) {
        if b == b'\n' {
            if i == 0 || buf.get(i - 1) != Some(&b'\r') {
                return Err(FramingError::BareLineFeed);
            }
            let line_len = (i - 1).saturating_sub(scan.line_start);
            if line_len == 0 && scan.lines > 0 {
                scan.scanned = i + 1;
                return Ok(Some(i + 1));
            }
            if line_len > limits.max_line_bytes {
                return Err(FramingError::LineTooLong {
                    limit: limits.max_line_bytes,
                });
            }
            let continuation = matches!(buf.get(scan.line_start), Some(b' ' | b'\t'));
            if scan.lines > 0 && !continuation {
                scan.headers += 1;
                if scan.headers > limits.max_headers {
                    return Err(FramingError::TooManyHeaders {
                        limit: limits.max_headers,
                    });
                }
            }
            scan.lines += 1;
            scan.line_start = i + 1;
        }
        i += 1;
    }
    scan.scanned = i;
    // +1 allows the CR of the line's CRLF to have arrived already.
    if buf.len().saturating_sub(scan.line_start) > limits.max_line_bytes + 1 {
        return Err(FramingError::LineTooLong {
            limit: limits.max_line_bytes,
        });
    }
    if buf.len() > limits.max_message_bytes {
        return Err(FramingError::MessageTooLarge {
            limit: limits.max_message_bytes,
        });
    }
    Ok(None)
}

/// Content-Length of a complete head (long or compact `l` form, RFC 3261 §7.3.3).
fn content_length(head: &[u8]) -> Result<Option<usize>, FramingError> {
    let mut found: Option<usize> = None;
    for line in head.split(|&b| b == b'\n').skip(1) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let name = line.get(..colon).unwrap_or(&[]).trim_ascii();
        if !(name.eq_ignore_ascii_case(b"Content-Length") || name.eq_ignore_ascii_case(b"l")) {
            continue;
        }
        let value = line.get(colon + 1..).unwrap_or(&[]).trim_ascii();
        // At most 9 digits: a larger value exceeds any limit and must not overflow.
        if value.is_empty() || value.len() > 9 || !value.iter().all(u8::is_ascii_digit) {
            return Err(FramingError::BadContentLength);
        }
        let n = value
            .iter()
            .fold(0usize, |acc, &d| acc * 10 + usize::from(d - b'0'));
        match found {
            Some(prev) if prev != n => return Err(FramingError::ConflictingContentLength),
            _ => found = Some(n),
        }
    }
    Ok(found)
}

fn check_sizes(
    head_len: usize,
    body_len: usize,
    limits: &FramingLimits,
) -> Result<(), FramingError> {
    if body_len > limits.max_body_bytes {
        return Err(FramingError::BodyTooLarge {
            limit: limits.max_body_bytes,
        });
    }
    if head_len + body_len > limits.max_message_bytes {
        return Err(FramingError::MessageTooLarge {
            limit: limits.max_message_bytes,
        });
    }
    Ok(())
}

/// What one UDP datagram holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DatagramFrame<'a> {
    /// Only CR/LF bytes (NAT keep-alive some phones send on UDP too); ignore it.
    KeepAlive,
    /// The message: leading CRLFs skipped, body cut to Content-Length (RFC 3261 §18.3).
    Message(&'a [u8]),
}

/// Checks one datagram: one message per datagram; Content-Length may be absent (body = rest of
/// the datagram); bytes beyond Content-Length are discarded (RFC 3261 §18.3).
pub fn check_datagram<'a>(
    datagram: &'a [u8],
    limits: &FramingLimits,
) -> Result<DatagramFrame<'a>, FramingError> {
    if datagram.len() > limits.max_message_bytes {
        return Err(FramingError::MessageTooLarge {
            limit: limits.max_message_bytes,
        });
    }
    let start = datagram
        .iter()
        .position(|&b| b != b'\r' && b != b'\n')
        .unwrap_or(datagram.len());
    let message = datagram.get(start..).unwrap_or(&[]);
    if message.is_empty() {
        return Ok(DatagramFrame::KeepAlive);
    }
    let mut scan = Scan::default();
    let head_len = scan_head(message, &mut scan, limits)?.ok_or(FramingError::NoHeaderEnd)?;
    let head = message.get(..head_len).unwrap_or(&[]);
    let available = message.len() - head_len;
    let body_len = content_length(head)?.unwrap_or(available);
    if body_len > available {
        return Err(FramingError::TruncatedBody);
    }
    check_sizes(head_len, body_len, limits)?;
    Ok(DatagramFrame::Message(
        message.get(..head_len + body_len).unwrap_or(message),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    const INVITE: &[u8] = b"INVITE sip:200@pbx SIP/2.0\r\nVia: SIP/2.0/TLS h;branch=z9hG4bK1\r\n\
Content-Length: 5\r\n\r\nv=0\r\n";

    fn decode_all(framer: &mut StreamFramer, buf: &mut BytesMut) -> Vec<Frame> {
        let mut out = Vec::new();
        while let Some(f) = framer.decode(buf).unwrap() {
            out.push(f);
        }
        out
    }

    #[test]
    fn one_message() {
        let mut f = StreamFramer::default();
        let mut buf = BytesMut::from(INVITE);
        assert_eq!(
            decode_all(&mut f, &mut buf),
            vec![Frame::Message(Bytes::from_static(INVITE))]
        );
        assert!(buf.is_empty());
    }

    #[test]
    fn half_sent_waits_then_completes() {
        let mut f = StreamFramer::default();
        let mut buf = BytesMut::new();
        for chunk in INVITE.chunks(7) {
            assert!(f.decode(&mut buf).unwrap().is_none());
            buf.extend_from_slice(chunk);
        }
        assert_eq!(
            f.decode(&mut buf).unwrap(),
            Some(Frame::Message(Bytes::from_static(INVITE)))
        );
    }

    #[test]
    fn pipelined_with_keepalives() {
        let mut f = StreamFramer::default();
        let mut buf = BytesMut::new();
        buf.extend_from_slice(b"\r\n\r\n");
        buf.extend_from_slice(INVITE);
        buf.extend_from_slice(b"\r\n");
        buf.extend_from_slice(INVITE);
        let frames = decode_all(&mut f, &mut buf);
        assert_eq!(
            frames,
            vec![
                Frame::KeepAlivePing,
                Frame::Message(Bytes::from_static(INVITE)),
                Frame::KeepAlivePong,
                Frame::Message(Bytes::from_static(INVITE)),
            ]
        );
    }

    #[test]
    fn lone_crlf_waits_for_disambiguation() {
        let mut f = StreamFramer::default();
        let mut buf = BytesMut::from(&b"\r\n"[..]);
        assert_eq!(f.decode(&mut buf).unwrap(), None);
        buf.extend_from_slice(b"\r\n");
        assert_eq!(f.decode(&mut buf).unwrap(), Some(Frame::KeepAlivePing));
        let mut buf = BytesMut::from(&b"\r\nINV"[..]);
        assert_eq!(f.decode(&mut buf).unwrap(), Some(Frame::KeepAlivePong));
        assert_eq!(&buf[..], b"INV");
    }

    #[test]
    fn missing_content_length_is_an_error() {
        let mut f = StreamFramer::default();
        let mut buf = BytesMut::from(&b"OPTIONS sip:a@b SIP/2.0\r\nVia: x\r\n\r\n"[..]);
        assert_eq!(f.decode(&mut buf), Err(FramingError::MissingContentLength));
        assert_eq!(
            FramingError::MissingContentLength.label(),
            "missing_content_length"
        );
    }

    #[test]
    fn compact_content_length_and_spaces() {
        let mut f = StreamFramer::default();
        let mut buf = BytesMut::from(&b"OPTIONS sip:a@b SIP/2.0\r\nl : 2\r\n\r\nab"[..]);
        assert!(matches!(
            f.decode(&mut buf).unwrap(),
            Some(Frame::Message(_))
        ));
    }

    #[test]
    fn bad_and_conflicting_content_length() {
        let mut f = StreamFramer::default();
        let mut buf = BytesMut::from(&b"OPTIONS sip:a@b SIP/2.0\r\nContent-Length: -1\r\n\r\n"[..]);
        assert_eq!(f.decode(&mut buf), Err(FramingError::BadContentLength));
        let mut f = StreamFramer::default();
        let mut buf =
            BytesMut::from(&b"OPTIONS sip:a@b SIP/2.0\r\nContent-Length: 1\r\nl: 2\r\n\r\nab"[..]);
        assert_eq!(
            f.decode(&mut buf),
            Err(FramingError::ConflictingContentLength)
        );
        let mut f = StreamFramer::default();
        let mut buf = BytesMut::from(
            &b"OPTIONS sip:a@b SIP/2.0\r\nContent-Length: 99999999999999999999\r\n\r\n"[..],
        );
        assert_eq!(f.decode(&mut buf), Err(FramingError::BadContentLength));
    }

    #[test]
    fn body_limit_checked_before_body_arrives() {
        let mut f = StreamFramer::new(FramingLimits {
            max_body_bytes: 100,
            ..FramingLimits::default()
        });
        let mut buf =
            BytesMut::from(&b"MESSAGE sip:a@b SIP/2.0\r\nContent-Length: 101\r\n\r\n"[..]);
        assert_eq!(
            f.decode(&mut buf),
            Err(FramingError::BodyTooLarge { limit: 100 })
        );
    }

    #[test]
    fn message_limit_on_head_and_total() {
        let limits = FramingLimits {
            max_message_bytes: 64,
            ..FramingLimits::default()
        };
        let mut f = StreamFramer::new(limits);
        let mut buf = BytesMut::from(&b"MESSAGE sip:a@b SIP/2.0\r\nContent-Length: 40\r\n\r\n"[..]);
        assert_eq!(
            f.decode(&mut buf),
            Err(FramingError::MessageTooLarge { limit: 64 })
        );
        let mut f = StreamFramer::new(limits);
        let mut buf = BytesMut::new();
        for _ in 0..10 {
            buf.extend_from_slice(b"X-A: b\r\n");
        }
        let mut buf2 = BytesMut::from(&b"OPTIONS sip:a@b SIP/2.0\r\n"[..]);
        buf2.extend_from_slice(&buf);
        assert_eq!(
            f.decode(&mut buf2),
            Err(FramingError::MessageTooLarge { limit: 64 })
        );
    }

    #[test]
    fn header_count_and_line_length() {
        let limits = FramingLimits {
            max_headers: 3,
            max_line_bytes: 30,
            ..FramingLimits::default()
        };
        let mut f = StreamFramer::new(limits);
        let mut buf = BytesMut::from(
            &b"OPTIONS sip:a@b SIP/2.0\r\nA: 1\r\n 1b\r\nB: 2\r\nC: 3\r\nD: 4\r\n"[..],
        );
        assert_eq!(
            f.decode(&mut buf),
            Err(FramingError::TooManyHeaders { limit: 3 })
        );
        let mut f = StreamFramer::new(limits);
        let mut buf =
            BytesMut::from(&b"OPTIONS sip:a@b SIP/2.0\r\nA: 12345678901234567890123456789"[..]);
        assert_eq!(
            f.decode(&mut buf),
            Err(FramingError::LineTooLong { limit: 30 })
        );
    }

    #[test]
    fn folded_line_is_not_a_new_header() {
        let limits = FramingLimits {
            max_headers: 2,
            ..FramingLimits::default()
        };
        let mut f = StreamFramer::new(limits);
        let mut buf =
            BytesMut::from(&b"OPTIONS sip:a@b SIP/2.0\r\nA: 1\r\n 2\r\n\t3\r\nl: 0\r\n\r\n"[..]);
        assert!(matches!(
            f.decode(&mut buf).unwrap(),
            Some(Frame::Message(_))
        ));
    }

    #[test]
    fn bare_lf_rejected() {
        let mut f = StreamFramer::default();
        let mut buf = BytesMut::from(&b"OPTIONS sip:a@b SIP/2.0\nl: 0\n\n"[..]);
        assert_eq!(f.decode(&mut buf), Err(FramingError::BareLineFeed));
    }

    #[test]
    fn datagram_without_length_and_with_trailing_bytes() {
        let limits = FramingLimits::default();
        let d = b"OPTIONS sip:a@b SIP/2.0\r\nVia: x\r\n\r\nbody";
        assert_eq!(
            check_datagram(d, &limits),
            Ok(DatagramFrame::Message(&d[..]))
        );
        let d = b"\r\nOPTIONS sip:a@b SIP/2.0\r\nl: 2\r\n\r\nbodyjunk";
        assert_eq!(
            check_datagram(d, &limits),
            Ok(DatagramFrame::Message(
                &b"OPTIONS sip:a@b SIP/2.0\r\nl: 2\r\n\r\nbo"[..]
            ))
        );
    }

    #[test]
    fn datagram_errors_and_keepalive() {
        let limits = FramingLimits::default();
        assert_eq!(
            check_datagram(b"\r\n\r\n", &limits),
            Ok(DatagramFrame::KeepAlive)
        );
        assert_eq!(check_datagram(b"", &limits), Ok(DatagramFrame::KeepAlive));
        assert_eq!(
            check_datagram(b"OPTIONS sip:a@b SIP/2.0\r\nl: 9\r\n\r\nab", &limits),
            Err(FramingError::TruncatedBody)
        );
        assert_eq!(
            check_datagram(b"OPTIONS sip:a@b SIP/2.0\r\nl: 9\r\n", &limits),
            Err(FramingError::NoHeaderEnd)
        );
        let big = vec![b'a'; limits.max_message_bytes + 1];
        assert_eq!(
            check_datagram(&big, &limits),
            Err(FramingError::MessageTooLarge {
                limit: limits.max_message_bytes
            })
        );
    }
}
