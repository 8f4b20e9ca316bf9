//! `SipMessage`: our wrapper around `rsip::SipMessage` — parse (after the `quirks`
//! pre-normalisation), exact serialisation, and read access to the headers the B2BUA needs.
//!
//! The rest of the crate uses this type and `sip::uri` values; it never matches on rsip types.
//! Header edits live in `sip::headers`, responses in `sip::response`.

use std::fmt;

use rsip::headers::UntypedHeader;
use rsip::message::HasHeaders;

use crate::sip::quirks::{self, NormalizeError};
use crate::sip::uri::{NameAddr, SipUri, UriError, Via};

/// Why a framed message could not be parsed or a header read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MessageError {
    /// The bytes have no CRLF CRLF ending the header section.
    #[error("no end of header section")]
    NoHeaderEnd,
    /// A header line is not UTF-8 (rsip only accepts UTF-8 headers).
    #[error("header is not UTF-8")]
    NonUtf8Header,
    /// A CR or LF in the head that is not part of a CRLF line ending.
    #[error("bare CR or LF in header section")]
    BareLineBreak,
    /// A folded continuation line follows the start line directly.
    #[error("continuation line without header")]
    OrphanContinuation,
    /// rsip refused the start line or a header line (unknown method, bad status line, ...).
    #[error("message rejected by parser")]
    Unparsable,
    /// The start line names no SIP/2.0 version, or a response's status code lies outside
    /// 100-699 (RFC 3261 §7.1, §7.2, §21). rsip takes `SIP/1.0` and any 1-3 digit code, and
    /// would then write a start line (`SIP/2.0 1 ...`) nobody can parse back.
    #[error("bad start line (SIP version or status code)")]
    BadStartLine,
    /// A header that must be present is missing (RFC 3261 §8.1.1).
    #[error("missing {0} header")]
    MissingHeader(&'static str),
    /// A header is present but its value does not parse.
    #[error("bad {name} header: {source}")]
    BadAddress {
        /// Canonical header name.
        name: &'static str,
        /// What was wrong with the value.
        source: UriError,
    },
    /// CSeq, Max-Forwards, Expires or Content-Length is not a valid number / method.
    #[error("bad {0} header")]
    BadHeader(&'static str),
    /// Content-Length disagrees with the body actually present (framing must cut messages
    /// exactly; a mismatch means truncation or smuggling).
    #[error("Content-Length does not match the body")]
    ContentLengthMismatch,
    /// A request-only operation was used on a response.
    #[error("not a request")]
    NotARequest,
    /// A response-only operation was used on a request.
    #[error("not a response")]
    NotAResponse,
    /// Max-Forwards reached 0: the caller answers 483 Too Many Hops (RFC 3261 §16.3 step 3).
    #[error("too many hops")]
    TooManyHops,
}

impl MessageError {
    /// Stable label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            Self::NoHeaderEnd => "no_header_end",
            Self::NonUtf8Header => "non_utf8_header",
            Self::BareLineBreak => "bare_line_break",
            Self::OrphanContinuation => "orphan_continuation",
            Self::Unparsable => "unparsable",
            Self::BadStartLine => "bad_start_line",
            Self::MissingHeader(_) => "missing_header",
            Self::BadAddress { .. } => "bad_address",
            Self::BadHeader(_) => "bad_header",
            Self::ContentLengthMismatch => "content_length_mismatch",
            Self::NotARequest => "not_a_request",
            Self::NotAResponse => "not_a_response",
            Self::TooManyHops => "too_many_hops",
        }
    }
}

impl From<NormalizeError> for MessageError {
    fn from(e: NormalizeError) -> Self {
        match e {
            NormalizeError::NoHeaderEnd => Self::NoHeaderEnd,
            NormalizeError::NonUtf8Header => Self::NonUtf8Header,
            NormalizeError::OrphanContinuation => Self::OrphanContinuation,
            NormalizeError::BareLineBreak => Self::BareLineBreak,
            NormalizeError::BadRequestUri => Self::BadAddress {
                name: "Request-URI",
                source: UriError::BadHost,
            },
        }
    }
}

/// SIP request methods (RFC 3261 §7.1 and extensions the edge relays).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Method {
    /// ACK (RFC 3261)
    Ack,
    /// BYE (RFC 3261)
    Bye,
    /// CANCEL (RFC 3261)
    Cancel,
    /// INFO (RFC 6086)
    Info,
    /// INVITE (RFC 3261)
    Invite,
    /// MESSAGE (RFC 3428)
    Message,
    /// NOTIFY (RFC 6665)
    Notify,
    /// OPTIONS (RFC 3261)
    Options,
    /// PRACK (RFC 3262)
    Prack,
    /// PUBLISH (RFC 3903)
    Publish,
    /// REFER (RFC 3515)
    Refer,
    /// REGISTER (RFC 3261)
    Register,
    /// SUBSCRIBE (RFC 6665)
    Subscribe,
    /// UPDATE (RFC 3311)
    Update,
}

impl Method {
    /// The method token as sent on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ack => "ACK",
            Self::Bye => "BYE",
            Self::Cancel => "CANCEL",
            Self::Info => "INFO",
            Self::Invite => "INVITE",
            Self::Message => "MESSAGE",
            Self::Notify => "NOTIFY",
            Self::Options => "OPTIONS",
            Self::Prack => "PRACK",
            Self::Publish => "PUBLISH",
            Self::Refer => "REFER",
            Self::Register => "REGISTER",
            Self::Subscribe => "SUBSCRIBE",
            Self::Update => "UPDATE",
        }
    }

    /// Parses a method token (case-sensitive per RFC 3261 §7.1, but tolerant of case).
    pub fn parse(token: &str) -> Option<Self> {
        const ALL: [Method; 14] = [
            Method::Ack,
            Method::Bye,
            Method::Cancel,
            Method::Info,
            Method::Invite,
            Method::Message,
            Method::Notify,
            Method::Options,
            Method::Prack,
            Method::Publish,
            Method::Refer,
            Method::Register,
            Method::Subscribe,
            Method::Update,
        ];
        ALL.into_iter()
            .find(|m| m.as_str().eq_ignore_ascii_case(token))
    }

    fn from_rsip(m: rsip::Method) -> Self {
        match m {
            rsip::Method::Ack => Self::Ack,
            rsip::Method::Bye => Self::Bye,
            rsip::Method::Cancel => Self::Cancel,
            rsip::Method::Info => Self::Info,
            rsip::Method::Invite => Self::Invite,
            rsip::Method::Message => Self::Message,
            rsip::Method::Notify => Self::Notify,
            rsip::Method::Options => Self::Options,
            rsip::Method::PRack => Self::Prack,
            rsip::Method::Publish => Self::Publish,
            rsip::Method::Refer => Self::Refer,
            rsip::Method::Register => Self::Register,
            rsip::Method::Subscribe => Self::Subscribe,
            rsip::Method::Update => Self::Update,
        }
    }

    pub(crate) fn to_rsip(self) -> rsip::Method {
        match self {
            Self::Ack => rsip::Method::Ack,
            Self::Bye => rsip::Method::Bye,
            Self::Cancel => rsip::Method::Cancel,
            Self::Info => rsip::Method::Info,
            Self::Invite => rsip::Method::Invite,
            Self::Message => rsip::Method::Message,
            Self::Notify => rsip::Method::Notify,
            Self::Options => rsip::Method::Options,
            Self::Prack => rsip::Method::PRack,
            Self::Publish => rsip::Method::Publish,
            Self::Refer => rsip::Method::Refer,
            Self::Register => rsip::Method::Register,
            Self::Subscribe => rsip::Method::Subscribe,
            Self::Update => rsip::Method::Update,
        }
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The CSeq header (RFC 3261 §20.16).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CSeq {
    /// Sequence number (32 bits, RFC 3261 §8.1.1.5).
    pub seq: u32,
    /// Method.
    pub method: Method,
}

/// The Contact header(s) of a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ContactList {
    /// `Contact: *` (RFC 3261 §10.2.2, wildcard de-registration).
    Wildcard,
    /// Zero or more addresses, in order.
    Addrs(Vec<NameAddr>),
}

/// A parsed SIP request or response. Its `Debug` shows the wire text with credentials
/// redacted (`sip::redact`), so a `{:?}` in a log line never leaks a digest response.
#[derive(Clone, PartialEq, Eq)]
pub struct SipMessage {
    pub(crate) inner: rsip::SipMessage,
}

impl fmt::Debug for SipMessage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("SipMessage")
            .field(&crate::sip::redact::redacted_text(self))
            .finish()
    }
}

impl SipMessage {
    /// Parses one complete message (already framed: exactly one message, body included).
    pub fn parse(bytes: &[u8]) -> Result<Self, MessageError> {
        let normalized = quirks::normalize(bytes)?;
        let mut inner = rsip::SipMessage::try_from(normalized.bytes.as_slice())
            .map_err(|_| MessageError::Unparsable)?;
        if let (Some(uri), rsip::SipMessage::Request(req)) =
            (normalized.hidden_request_uri, &mut inner)
        {
            req.uri = quirks::ipv6_request_uri::to_rsip(&uri);
        }
        let start_line_ok = match &inner {
            rsip::SipMessage::Request(r) => r.version == rsip::Version::V2,
            rsip::SipMessage::Response(r) => {
                r.version == rsip::Version::V2 && (100..=699).contains(&r.status_code.code())
            }
        };
        if !start_line_ok {
            return Err(MessageError::BadStartLine);
        }
        let msg = Self { inner };
        if let Some(len) = msg.number("Content-Length")? {
            if usize::try_from(len).ok() != Some(msg.body().len()) {
                return Err(MessageError::ContentLengthMismatch);
            }
        }
        Ok(msg)
    }

    /// Serialises the message: headers in order, Content-Length set to the body length (added
    /// if absent), body bytes verbatim.
    ///
    /// rsip's own `Display` turns the body into text with `from_utf8_lossy`, which corrupts a
    /// non-UTF-8 body, so the body is appended here as bytes (see `RSIP_NOTES.md`).
    pub fn to_bytes(&self) -> Vec<u8> {
        use std::fmt::Write as _;
        let mut head = String::with_capacity(512);
        // Writing to a String cannot fail.
        let _ = match &self.inner {
            rsip::SipMessage::Request(r) => {
                write!(head, "{} {} {}\r\n", r.method, r.uri, r.version)
            }
            rsip::SipMessage::Response(r) => write!(head, "{} {}\r\n", r.version, r.status_code),
        };
        let body = self.inner.body();
        let mut wrote_length = false;
        for h in self.inner.headers().iter() {
            if matches!(h, rsip::Header::ContentLength(_)) {
                if !wrote_length {
                    let _ = write!(head, "Content-Length: {}\r\n", body.len());
                    wrote_length = true;
                }
                continue;
            }
            let _ = write!(head, "{h}\r\n");
        }
        if !wrote_length {
            let _ = write!(head, "Content-Length: {}\r\n", body.len());
        }
        head.push_str("\r\n");
        let mut out = head.into_bytes();
        out.extend_from_slice(body);
        out
    }

    /// Whether this is a request.
    pub fn is_request(&self) -> bool {
        self.inner.is_request()
    }

    /// Whether this is a response.
    pub fn is_response(&self) -> bool {
        self.inner.is_response()
    }

    /// The request method, `None` for a response.
    pub fn method(&self) -> Option<Method> {
        match &self.inner {
            rsip::SipMessage::Request(r) => Some(Method::from_rsip(r.method)),
            rsip::SipMessage::Response(_) => None,
        }
    }

    /// The response status code, `None` for a request.
    pub fn status(&self) -> Option<u16> {
        match &self.inner {
            rsip::SipMessage::Request(_) => None,
            rsip::SipMessage::Response(r) => Some(r.status_code.code()),
        }
    }

    /// The Request-URI.
    pub fn request_uri(&self) -> Result<SipUri, MessageError> {
        match &self.inner {
            rsip::SipMessage::Request(r) => {
                SipUri::parse(&r.uri.to_string()).map_err(|source| MessageError::BadAddress {
                    name: "Request-URI",
                    source,
                })
            }
            rsip::SipMessage::Response(_) => Err(MessageError::NotARequest),
        }
    }

    /// Replaces the Request-URI.
    pub fn set_request_uri(&mut self, uri: &SipUri) -> Result<(), MessageError> {
        match &mut self.inner {
            rsip::SipMessage::Request(r) => {
                r.uri = quirks::ipv6_request_uri::to_rsip(uri);
                Ok(())
            }
            rsip::SipMessage::Response(_) => Err(MessageError::NotARequest),
        }
    }

    /// The first value of header `name` (long name, case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.inner
            .headers()
            .iter()
            .map(name_value)
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    }

    /// Every value of header `name`, in order.
    pub fn header_values(&self, name: &str) -> Vec<&str> {
        self.inner
            .headers()
            .iter()
            .map(name_value)
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
            .collect()
    }

    /// How many values header `name` carries: one per header line, and one more per
    /// top-level comma when `comma_separates` (RFC 3261 §7.3.1: `From: a, b` is the same as two
    /// From lines; commas inside quotes or `<...>` do not count). Compact forms (`f:`, `t:`,
    /// `i:`, `l:`, `c:`, §7.3.3) were expanded to the long name when the message was parsed
    /// (`quirks::compact_header_names`), so `f:` and `From:` count as the same header.
    /// `comma_separates = false` is for headers whose values hold literal commas (`Date`).
    pub fn header_occurrences(&self, name: &str, comma_separates: bool) -> usize {
        self.inner
            .headers()
            .iter()
            .map(name_value)
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| {
                if comma_separates && v.contains(',') {
                    crate::sip::uri::split_top_level(v, b',').len()
                } else {
                    1
                }
            })
            .sum()
    }

    /// `(name, value)` of every header line, in order.
    pub fn headers(&self) -> impl Iterator<Item = (&str, &str)> {
        self.inner.headers().iter().map(name_value)
    }

    /// Number of header lines (after normalisation: one value per address header line).
    pub fn header_count(&self) -> usize {
        self.inner.headers().iter().count()
    }

    /// Call-ID (RFC 3261 §20.8).
    pub fn call_id(&self) -> Result<&str, MessageError> {
        self.header("Call-ID")
            .map(str::trim)
            .ok_or(MessageError::MissingHeader("Call-ID"))
    }

    /// CSeq (RFC 3261 §20.16).
    pub fn cseq(&self) -> Result<CSeq, MessageError> {
        let value = self
            .header("CSeq")
            .ok_or(MessageError::MissingHeader("CSeq"))?;
        let mut parts = value.split_whitespace();
        let seq = parts
            .next()
            .and_then(|s| s.parse::<u32>().ok())
            .ok_or(MessageError::BadHeader("CSeq"))?;
        let method = parts
            .next()
            .and_then(Method::parse)
            .ok_or(MessageError::BadHeader("CSeq"))?;
        if parts.next().is_some() {
            return Err(MessageError::BadHeader("CSeq"));
        }
        Ok(CSeq { seq, method })
    }

    /// From (RFC 3261 §20.20).
    pub fn from(&self) -> Result<NameAddr, MessageError> {
        self.address("From")
    }

    /// To (RFC 3261 §20.39).
    pub fn to(&self) -> Result<NameAddr, MessageError> {
        self.address("To")
    }

    /// The From tag, if any.
    pub fn from_tag(&self) -> Result<Option<String>, MessageError> {
        Ok(self.from()?.tag().map(str::to_owned))
    }

    /// The To tag, if any.
    pub fn to_tag(&self) -> Result<Option<String>, MessageError> {
        Ok(self.to()?.tag().map(str::to_owned))
    }

    /// The user part of the From URI, if any.
    pub fn from_user(&self) -> Result<Option<String>, MessageError> {
        Ok(self.from()?.uri.user().map(str::to_owned))
    }

    /// The user part of the To URI, if any (REGISTER: the AOR user, RFC 3261 §10.2).
    pub fn to_user(&self) -> Result<Option<String>, MessageError> {
        Ok(self.to()?.uri.user().map(str::to_owned))
    }

    /// Every Via value, topmost first.
    pub fn vias(&self) -> Result<Vec<Via>, MessageError> {
        self.header_values("Via")
            .into_iter()
            .map(|v| {
                Via::parse(v).map_err(|source| MessageError::BadAddress {
                    name: "Via",
                    source,
                })
            })
            .collect()
    }

    /// The topmost Via (RFC 3261 §8.1.1.7); its branch and sent-by key transactions.
    pub fn top_via(&self) -> Result<Via, MessageError> {
        let v = self
            .header("Via")
            .ok_or(MessageError::MissingHeader("Via"))?;
        Via::parse(v).map_err(|source| MessageError::BadAddress {
            name: "Via",
            source,
        })
    }

    /// The Contact header(s).
    pub fn contacts(&self) -> Result<ContactList, MessageError> {
        let values = self.header_values("Contact");
        if values.len() == 1 && values.first().map(|v| v.trim()) == Some("*") {
            return Ok(ContactList::Wildcard);
        }
        values
            .into_iter()
            .map(|v| {
                NameAddr::parse(v).map_err(|source| MessageError::BadAddress {
                    name: "Contact",
                    source,
                })
            })
            .collect::<Result<Vec<_>, _>>()
            .map(ContactList::Addrs)
    }

    /// Route values, topmost first (RFC 3261 §20.34).
    pub fn routes(&self) -> Result<Vec<NameAddr>, MessageError> {
        self.addresses("Route")
    }

    /// Record-Route values, topmost first (RFC 3261 §20.30).
    pub fn record_routes(&self) -> Result<Vec<NameAddr>, MessageError> {
        self.addresses("Record-Route")
    }

    /// Max-Forwards (RFC 3261 §20.22), `None` if absent.
    pub fn max_forwards(&self) -> Result<Option<u32>, MessageError> {
        self.number("Max-Forwards")
    }

    /// Expires header (RFC 3261 §20.19), `None` if absent.
    pub fn expires(&self) -> Result<Option<u32>, MessageError> {
        self.number("Expires")
    }

    /// The body bytes.
    pub fn body(&self) -> &[u8] {
        self.inner.body()
    }

    /// The raw rsip message, for code that needs what this wrapper does not offer yet.
    /// Prefer adding a helper here: rsip's typed accessors have the quirks in `RSIP_NOTES.md`.
    pub fn as_rsip(&self) -> &rsip::SipMessage {
        &self.inner
    }

    fn address(&self, name: &'static str) -> Result<NameAddr, MessageError> {
        let v = self.header(name).ok_or(MessageError::MissingHeader(name))?;
        NameAddr::parse(v).map_err(|source| MessageError::BadAddress { name, source })
    }

    fn addresses(&self, name: &'static str) -> Result<Vec<NameAddr>, MessageError> {
        self.header_values(name)
            .into_iter()
            .map(|v| NameAddr::parse(v).map_err(|source| MessageError::BadAddress { name, source }))
            .collect()
    }

    fn number(&self, name: &'static str) -> Result<Option<u32>, MessageError> {
        self.header(name)
            .map(|v| {
                v.trim()
                    .parse::<u32>()
                    .map_err(|_| MessageError::BadHeader(name))
            })
            .transpose()
    }
}

impl fmt::Display for SipMessage {
    /// The wire form (body shown lossily if it is not UTF-8). Use `sip::redact` for logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&String::from_utf8_lossy(&self.to_bytes()))
    }
}

/// Maps every rsip header variant to (canonical long name, value) and back.
macro_rules! header_table {
    ($($variant:ident => $name:literal),* $(,)?) => {
        /// Canonical name and value of an rsip header.
        pub(crate) fn name_value(h: &rsip::Header) -> (&str, &str) {
            match h {
                $(rsip::Header::$variant(v) => ($name, v.value()),)*
                rsip::Header::Other(n, v) => (n.as_str(), v.as_str()),
            }
        }

        /// An rsip header from a (long) name and value.
        pub(crate) fn make_header(name: &str, value: String) -> rsip::Header {
            $(if name.eq_ignore_ascii_case($name) {
                return rsip::Header::$variant(rsip::headers::$variant::new(value));
            })*
            rsip::Header::Other(name.to_owned(), value)
        }
    };
}

header_table! {
    Accept => "Accept",
    AcceptEncoding => "Accept-Encoding",
    AcceptLanguage => "Accept-Language",
    AlertInfo => "Alert-Info",
    Allow => "Allow",
    AuthenticationInfo => "Authentication-Info",
    Authorization => "Authorization",
    CSeq => "CSeq",
    CallId => "Call-ID",
    CallInfo => "Call-Info",
    Contact => "Contact",
    ContentDisposition => "Content-Disposition",
    ContentEncoding => "Content-Encoding",
    ContentLanguage => "Content-Language",
    ContentLength => "Content-Length",
    ContentType => "Content-Type",
    Date => "Date",
    ErrorInfo => "Error-Info",
    Event => "Event",
    Expires => "Expires",
    From => "From",
    InReplyTo => "In-Reply-To",
    MaxForwards => "Max-Forwards",
    MimeVersion => "MIME-Version",
    MinExpires => "Min-Expires",
    Organization => "Organization",
    Priority => "Priority",
    ProxyAuthenticate => "Proxy-Authenticate",
    ProxyAuthorization => "Proxy-Authorization",
    ProxyRequire => "Proxy-Require",
    RecordRoute => "Record-Route",
    ReplyTo => "Reply-To",
    Require => "Require",
    RetryAfter => "Retry-After",
    Route => "Route",
    Server => "Server",
    Subject => "Subject",
    SubscriptionState => "Subscription-State",
    Supported => "Supported",
    Timestamp => "Timestamp",
    To => "To",
    Unsupported => "Unsupported",
    UserAgent => "User-Agent",
    Via => "Via",
    Warning => "Warning",
    WwwAuthenticate => "WWW-Authenticate",
}

#[cfg(test)]
mod tests {
    use super::*;

    const REGISTER: &str = "REGISTER sips:pbx.example.com SIP/2.0\r\n\
        Via: SIP/2.0/TLS 192.0.2.10:5061;branch=z9hG4bK-reg1;rport\r\n\
        From: \"Reception\" <sips:101@pbx.example.com>;tag=abc\r\n\
        To: <sips:101@pbx.example.com>\r\n\
        Call-ID: reg-1@192.0.2.10\r\n\
        CSeq: 7 REGISTER\r\n\
        Max-Forwards: 70\r\n\
        Contact: <sips:101@192.0.2.10:5061;transport=tls;ob>;reg-id=1;+sip.instance=\"<urn:uuid:1>\"\r\n\
        Expires: 3600\r\n\
        Content-Length: 0\r\n\r\n";

    #[test]
    fn reads_basic_headers() {
        let m = SipMessage::parse(REGISTER.as_bytes()).unwrap();
        assert!(m.is_request());
        assert_eq!(m.method(), Some(Method::Register));
        assert_eq!(m.call_id().unwrap(), "reg-1@192.0.2.10");
        assert_eq!(
            m.cseq().unwrap(),
            CSeq {
                seq: 7,
                method: Method::Register
            }
        );
        assert_eq!(m.from_tag().unwrap().as_deref(), Some("abc"));
        assert_eq!(m.to_tag().unwrap(), None);
        assert_eq!(m.to_user().unwrap().as_deref(), Some("101"));
        assert_eq!(m.top_via().unwrap().branch(), Some("z9hG4bK-reg1"));
        assert_eq!(m.max_forwards().unwrap(), Some(70));
        assert_eq!(m.expires().unwrap(), Some(3600));
        let ContactList::Addrs(c) = m.contacts().unwrap() else {
            panic!("expected addresses")
        };
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].params.value("reg-id"), Some("1"));
        assert_eq!(m.request_uri().unwrap().to_string(), "sips:pbx.example.com");
    }

    #[test]
    fn to_bytes_roundtrips() {
        let m = SipMessage::parse(REGISTER.as_bytes()).unwrap();
        let again = SipMessage::parse(&m.to_bytes()).unwrap();
        assert_eq!(m, again);
    }

    #[test]
    fn wildcard_contact() {
        let text = REGISTER
            .replace(
                "Contact: <sips:101@192.0.2.10:5061;transport=tls;ob>;reg-id=1;+sip.instance=\"<urn:uuid:1>\"",
                "Contact: *",
            )
            .replace("Expires: 3600", "Expires: 0");
        let m = SipMessage::parse(text.as_bytes()).unwrap();
        assert_eq!(m.contacts().unwrap(), ContactList::Wildcard);
    }

    #[test]
    fn bad_cseq_and_missing_headers() {
        let m = SipMessage::parse(
            REGISTER
                .replace("CSeq: 7 REGISTER", "CSeq: x REGISTER")
                .as_bytes(),
        )
        .unwrap();
        assert_eq!(m.cseq(), Err(MessageError::BadHeader("CSeq")));
        let m = SipMessage::parse(
            REGISTER
                .replace("Call-ID: reg-1@192.0.2.10\r\n", "")
                .as_bytes(),
        )
        .unwrap();
        assert_eq!(m.call_id(), Err(MessageError::MissingHeader("Call-ID")));
    }

    #[test]
    fn garbage_is_unparsable() {
        assert_eq!(
            SipMessage::parse(b"HELLO WORLD\r\n\r\n")
                .unwrap_err()
                .label(),
            "unparsable"
        );
        assert_eq!(
            SipMessage::parse(b"no end").unwrap_err(),
            MessageError::NoHeaderEnd
        );
        assert_eq!(
            SipMessage::parse(b"OPTIONS sip:a@b SIP/2.0\r\nX: \xff\r\n\r\n").unwrap_err(),
            MessageError::NonUtf8Header
        );
    }

    #[test]
    fn bare_line_breaks_rejected() {
        let lf = REGISTER.replace("Expires: 3600\r\n", "Expires: 3600\nX: y\r\n");
        assert_eq!(
            SipMessage::parse(lf.as_bytes()),
            Err(MessageError::BareLineBreak)
        );
        let cr = REGISTER.replace("Expires: 3600\r\n", "Expires: 3600\rX: y\r\n");
        assert_eq!(
            SipMessage::parse(cr.as_bytes()),
            Err(MessageError::BareLineBreak)
        );
    }

    #[test]
    fn binary_body_survives() {
        let mut raw = REGISTER
            .replace("Content-Length: 0", "Content-Length: 4")
            .into_bytes();
        raw.extend_from_slice(&[0xff, 0x00, 0xfe, 0x80]);
        let m = SipMessage::parse(&raw).unwrap();
        assert_eq!(m.body(), &[0xff, 0x00, 0xfe, 0x80]);
        assert!(m.to_bytes().ends_with(&[0xff, 0x00, 0xfe, 0x80]));
        // The proof of the rsip quirk: its Display turns the body into U+FFFD.
        assert!(!m
            .inner
            .to_string()
            .into_bytes()
            .ends_with(&[0xff, 0x00, 0xfe, 0x80]));
    }

    #[test]
    fn content_length_must_match_body() {
        let short = REGISTER.replace("Content-Length: 0", "Content-Length: 10");
        assert_eq!(
            SipMessage::parse(short.as_bytes()),
            Err(MessageError::ContentLengthMismatch)
        );
        let bad = REGISTER.replace("Content-Length: 0", "Content-Length: x");
        assert_eq!(
            SipMessage::parse(bad.as_bytes()),
            Err(MessageError::BadHeader("Content-Length"))
        );
    }

    #[test]
    fn start_lines_rsip_would_take_but_not_write_back_are_refused() {
        // Found by the sip_stream fuzz target: a status code of 001 parsed, serialised as
        // `SIP/2.0 1 Unauthorized`, which did not parse again.
        for bad in [
            &b"SIP/2.0 001 Unauthorized\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nContent-Length: 0\r\n\r\n"[..],
            b"SIP/2.0 700 Odd\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nContent-Length: 0\r\n\r\n",
            b"SIP/1.0 200 OK\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nContent-Length: 0\r\n\r\n",
            b"OPTIONS sip:a@b SIP/1.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nContent-Length: 0\r\n\r\n",
        ] {
            assert_eq!(
                SipMessage::parse(bad).unwrap_err(),
                MessageError::BadStartLine,
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        for good in [
            &b"SIP/2.0 100 Trying\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nContent-Length: 0\r\n\r\n"[..],
            b"SIP/2.0 699 Custom\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nContent-Length: 0\r\n\r\n",
        ] {
            let m = SipMessage::parse(good).unwrap();
            assert!(SipMessage::parse(&m.to_bytes()).is_ok());
        }
    }

    #[test]
    fn response_status() {
        let m = SipMessage::parse(
            b"SIP/2.0 401 Unauthorized\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nContent-Length: 0\r\n\r\n",
        )
        .unwrap();
        assert_eq!(m.status(), Some(401));
        assert_eq!(m.method(), None);
        assert_eq!(m.request_uri(), Err(MessageError::NotARequest));
    }

    #[test]
    fn header_occurrences_count_compact_forms_and_comma_lists() {
        let two_from = REGISTER.replace(
            "To: <sips:101@pbx.example.com>\r\n",
            "To: <sips:101@pbx.example.com>\r\nf: <sips:102@pbx.example.com>;tag=x\r\n",
        );
        let m = SipMessage::parse(two_from.as_bytes()).unwrap();
        assert_eq!(m.header_occurrences("From", true), 2);
        assert_eq!(m.header_occurrences("from", false), 2);
        assert_eq!(m.header_occurrences("To", true), 1);
        assert_eq!(m.header_occurrences("Subject", true), 0);

        let joined = REGISTER.replace(
            "To: <sips:101@pbx.example.com>",
            "To: <sips:101@pbx.example.com>, <sips:102@pbx.example.com>",
        );
        let m = SipMessage::parse(joined.as_bytes()).unwrap();
        assert_eq!(m.header_occurrences("To", true), 2);
        assert_eq!(m.header_occurrences("To", false), 1);

        // Commas inside quotes or <...> separate nothing.
        let quoted = REGISTER.replace("From: \"Reception\"", "From: \"Reception, desk\"");
        let m = SipMessage::parse(quoted.as_bytes()).unwrap();
        assert_eq!(m.header_occurrences("From", true), 1);
    }
}
