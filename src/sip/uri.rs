//! SIP URIs, name-addr values (From/To/Contact/Route/Record-Route) and Via values.
//!
//! This is our own tokenizer for the header values that carry addresses. rsip 0.4's typed
//! tokenizers fail on three things every modern phone sends (see `RSIP_NOTES.md`): quoted
//! parameter values (`+sip.instance="<urn:uuid:...>"`, RFC 5626 §4.1), IPv6 references
//! (`[2001:db8::1]:5061`, RFC 3261 §25.1 `IPv6reference`) and comma-separated values; and
//! printing an rsip `Host::IpAddr(V6)` drops the brackets. Values here keep every byte they do
//! not understand (parameter values are stored verbatim, quotes included), so a parse → print
//! roundtrip is exact apart from whitespace normalisation.

use std::fmt;

/// Why an address-bearing header value could not be tokenized.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UriError {
    /// The URI scheme is not `sip:` or `sips:` (e.g. `tel:`), which this edge does not route.
    #[error("unsupported URI scheme")]
    UnsupportedScheme,
    /// The host part is empty or an IPv6 reference lacks its closing `]`.
    #[error("bad host in URI")]
    BadHost,
    /// The port is not a number in 0..=65535.
    #[error("bad port in URI")]
    BadPort,
    /// A name-addr has `<` without a matching `>`, or a quoted string is not closed.
    #[error("unbalanced quotes or angle brackets")]
    Unbalanced,
    /// A Via value does not start with `SIP/2.0/<transport> `.
    #[error("bad Via sent-protocol")]
    BadViaProtocol,
    /// Text that is not a `;param` follows the URI or address (e.g. `<sip:a@b>xyz`).
    #[error("unexpected text after URI")]
    TrailingGarbage,
    /// The value is empty.
    #[error("empty header value")]
    Empty,
}

impl UriError {
    /// Stable label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            Self::UnsupportedScheme => "unsupported_scheme",
            Self::BadHost => "bad_host",
            Self::BadPort => "bad_port",
            Self::Unbalanced => "unbalanced",
            Self::BadViaProtocol => "bad_via_protocol",
            Self::TrailingGarbage => "trailing_garbage",
            Self::Empty => "empty",
        }
    }
}

/// One `;name[=value]` parameter. The value is kept verbatim (a quoted string keeps its quotes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Param {
    /// Parameter name as written.
    pub name: String,
    /// Parameter value as written, `None` for a flag parameter such as `;lr` or `;ob`.
    pub value: Option<String>,
}

/// An ordered parameter list with case-insensitive names (RFC 3261 §19.1.4, §7.3.1).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Params(pub Vec<Param>);

impl Params {
    /// The parameter called `name`, if present (`Some(None)` for a flag parameter).
    pub fn find(&self, name: &str) -> Option<Option<&str>> {
        self.0
            .iter()
            .find(|p| p.name.eq_ignore_ascii_case(name))
            .map(|p| p.value.as_deref())
    }

    /// The value of `name` with surrounding quotes removed, if present with a value.
    pub fn value(&self, name: &str) -> Option<&str> {
        self.find(name).flatten().map(unquote)
    }

    /// Whether `name` is present (with or without value).
    pub fn contains(&self, name: &str) -> bool {
        self.find(name).is_some()
    }

    /// Sets `name` (replacing the first occurrence in place, or appending).
    pub fn set(&mut self, name: &str, value: Option<&str>) {
        let value = value.map(str::to_owned);
        match self
            .0
            .iter_mut()
            .find(|p| p.name.eq_ignore_ascii_case(name))
        {
            Some(p) => p.value = value,
            None => self.0.push(Param {
                name: name.to_owned(),
                value,
            }),
        }
    }

    /// Removes every occurrence of `name`; returns whether one was present.
    pub fn remove(&mut self, name: &str) -> bool {
        let before = self.0.len();
        self.0.retain(|p| !p.name.eq_ignore_ascii_case(name));
        before != self.0.len()
    }

    fn parse(text: &str) -> Result<Self, UriError> {
        let text = text.trim();
        if !text.is_empty() && !text.starts_with(';') {
            return Err(UriError::TrailingGarbage);
        }
        let mut params = Vec::new();
        for piece in split_top_level(text, b';') {
            let piece = piece.trim();
            if piece.is_empty() {
                continue;
            }
            match piece.split_once('=') {
                Some((name, value)) => params.push(Param {
                    name: name.trim().to_owned(),
                    value: Some(value.trim().to_owned()),
                }),
                None => params.push(Param {
                    name: piece.to_owned(),
                    value: None,
                }),
            }
        }
        Ok(Self(params))
    }
}

impl fmt::Display for Params {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for p in &self.0 {
            match &p.value {
                Some(v) => write!(f, ";{}={}", p.name, v)?,
                None => write!(f, ";{}", p.name)?,
            }
        }
        Ok(())
    }
}

/// `sip:` or `sips:` (RFC 3261 §19.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UriScheme {
    /// `sip:`
    Sip,
    /// `sips:` (RFC 3261 §19.1, TLS on every hop).
    Sips,
}

/// A SIP or SIPS URI (RFC 3261 §19.1.1). The host keeps IPv6 brackets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SipUri {
    /// `sip` or `sips`.
    pub scheme: UriScheme,
    /// userinfo before `@` as written (user, optionally `:password`), if present.
    pub user_info: Option<String>,
    /// Host as written: a domain, IPv4 address or `[IPv6]` reference.
    pub host: String,
    /// Port, if written.
    pub port: Option<u16>,
    /// URI parameters (`;transport=tls;ob;lr`).
    pub params: Params,
    /// Header part after `?`, verbatim (e.g. `Replaces=...`).
    pub headers: Option<String>,
}

impl SipUri {
    /// Parses a SIP/SIPS URI.
    pub fn parse(text: &str) -> Result<Self, UriError> {
        let text = text.trim();
        if text.is_empty() {
            return Err(UriError::Empty);
        }
        let (scheme, rest) = match text.split_once(':') {
            Some((s, rest)) if s.eq_ignore_ascii_case("sip") => (UriScheme::Sip, rest),
            Some((s, rest)) if s.eq_ignore_ascii_case("sips") => (UriScheme::Sips, rest),
            _ => return Err(UriError::UnsupportedScheme),
        };
        let (rest, headers) = match rest.split_once('?') {
            Some((r, h)) => (r, Some(h.to_owned())),
            None => (rest, None),
        };
        // userinfo cannot contain an unescaped '@' (RFC 3261 §25.1), so the first '@' ends it.
        let (user_info, hostport_params) = match rest.split_once('@') {
            Some((u, r)) => (Some(u.to_owned()), r),
            None => (None, rest),
        };
        let (host, port, params) = split_hostport(hostport_params, b';')?;
        Ok(Self {
            scheme,
            user_info,
            host,
            port,
            params: Params::parse(params)?,
            headers,
        })
    }

    /// The user part (userinfo without password), if any.
    pub fn user(&self) -> Option<&str> {
        self.user_info
            .as_deref()
            .map(|u| u.split_once(':').map_or(u, |(user, _)| user))
    }

    /// Replaces the user part (drops any password).
    pub fn set_user(&mut self, user: Option<&str>) {
        self.user_info = user.map(str::to_owned);
    }

    /// `host[:port]` as written.
    pub fn host_port(&self) -> String {
        match self.port {
            Some(p) => format!("{}:{}", self.host, p),
            None => self.host.clone(),
        }
    }

    /// The `transport` URI parameter, lower-cased, if present.
    pub fn transport(&self) -> Option<String> {
        self.params.value("transport").map(str::to_ascii_lowercase)
    }
}

impl fmt::Display for SipUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self.scheme {
            UriScheme::Sip => "sip:",
            UriScheme::Sips => "sips:",
        })?;
        if let Some(u) = &self.user_info {
            write!(f, "{u}@")?;
        }
        f.write_str(&self.host)?;
        if let Some(p) = self.port {
            write!(f, ":{p}")?;
        }
        write!(f, "{}", self.params)?;
        if let Some(h) = &self.headers {
            write!(f, "?{h}")?;
        }
        Ok(())
    }
}

/// A name-addr or addr-spec with header parameters (RFC 3261 §20.10, §20.20, §20.39):
/// the value of From, To, Contact, Route and Record-Route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameAddr {
    /// Display name as written (quotes kept), if any.
    pub display_name: Option<String>,
    /// The URI.
    pub uri: SipUri,
    /// Header parameters after the URI (`;tag=..`, `;expires=..`, `;+sip.instance=".."`).
    pub params: Params,
}

impl NameAddr {
    /// Parses one name-addr / addr-spec value (no commas at top level).
    pub fn parse(text: &str) -> Result<Self, UriError> {
        let text = text.trim();
        if text.is_empty() {
            return Err(UriError::Empty);
        }
        match find_top_level(text, b'<') {
            Some(open) => {
                let display = text.get(..open).unwrap_or("").trim();
                let after = text.get(open + 1..).unwrap_or("");
                let close = after.find('>').ok_or(UriError::Unbalanced)?;
                let uri = SipUri::parse(after.get(..close).unwrap_or(""))?;
                let params = Params::parse(after.get(close + 1..).unwrap_or(""))?;
                Ok(Self {
                    display_name: (!display.is_empty()).then(|| display.to_owned()),
                    uri,
                    params,
                })
            }
            None => {
                // addr-spec form: every ';' parameter is a header parameter (RFC 3261 §20.10).
                let (uri, params) = match text.find(';') {
                    Some(i) => (text.get(..i).unwrap_or(""), text.get(i..).unwrap_or("")),
                    None => (text, ""),
                };
                if uri.contains('"') {
                    return Err(UriError::Unbalanced);
                }
                Ok(Self {
                    display_name: None,
                    uri: SipUri::parse(uri)?,
                    params: Params::parse(params)?,
                })
            }
        }
    }

    /// Builds a name-addr from a URI with no display name or parameters.
    pub fn from_uri(uri: SipUri) -> Self {
        Self {
            display_name: None,
            uri,
            params: Params::default(),
        }
    }

    /// The `tag` parameter (From/To, RFC 3261 §19.3).
    pub fn tag(&self) -> Option<&str> {
        self.params.value("tag")
    }

    /// The `expires` parameter (Contact, RFC 3261 §20.10), if present and numeric.
    pub fn expires(&self) -> Option<u32> {
        self.params.value("expires").and_then(|v| v.parse().ok())
    }
}

impl fmt::Display for NameAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Always print the name-addr form: it is unambiguous for URIs with parameters.
        if let Some(d) = &self.display_name {
            write!(f, "{d} ")?;
        }
        write!(f, "<{}>{}", self.uri, self.params)
    }
}

/// One Via value (RFC 3261 §20.42): `SIP/2.0/TLS host:port;branch=z9hG4bK...;rport`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Via {
    /// Transport token as written (`UDP`, `TCP`, `TLS`, `WS`...).
    pub transport: String,
    /// sent-by host as written (IPv6 in brackets).
    pub host: String,
    /// sent-by port, if written.
    pub port: Option<u16>,
    /// Via parameters (`branch`, `received`, `rport`, `alias`...).
    pub params: Params,
}

impl Via {
    /// Parses one Via value.
    pub fn parse(text: &str) -> Result<Self, UriError> {
        let text = text.trim();
        if text.is_empty() {
            return Err(UriError::Empty);
        }
        let (protocol, rest) = text
            .split_once([' ', '\t'])
            .ok_or(UriError::BadViaProtocol)?;
        let mut parts = protocol.split('/');
        let name = parts.next().map(str::trim);
        let version = parts.next().map(str::trim);
        let transport = parts.next().map(str::trim);
        let (Some(name), Some(version), Some(transport), None) =
            (name, version, transport, parts.next())
        else {
            return Err(UriError::BadViaProtocol);
        };
        if !name.eq_ignore_ascii_case("SIP") || version != "2.0" || transport.is_empty() {
            return Err(UriError::BadViaProtocol);
        }
        let (host, port, params) = split_hostport(rest.trim_start(), b';')?;
        Ok(Self {
            transport: transport.to_owned(),
            host,
            port,
            params: Params::parse(params)?,
        })
    }

    /// A new Via for us: `SIP/2.0/<transport> <host>[:port];branch=<branch>[;rport]`.
    pub fn new(transport: &str, host: &str, port: Option<u16>, branch: &str, rport: bool) -> Self {
        let mut params = Params::default();
        params.set("branch", Some(branch));
        if rport {
            params.set("rport", None);
        }
        Self {
            transport: transport.to_owned(),
            host: host.to_owned(),
            port,
            params,
        }
    }

    /// The `branch` parameter, if present.
    pub fn branch(&self) -> Option<&str> {
        self.params.value("branch")
    }

    /// sent-by as `host[:port]`, lower-cased for comparison.
    pub fn sent_by(&self) -> String {
        match self.port {
            Some(p) => format!("{}:{}", self.host.to_ascii_lowercase(), p),
            None => self.host.to_ascii_lowercase(),
        }
    }
}

impl fmt::Display for Via {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SIP/2.0/{} {}", self.transport, self.host)?;
        if let Some(p) = self.port {
            write!(f, ":{p}")?;
        }
        write!(f, "{}", self.params)
    }
}

/// Removes one level of surrounding double quotes (no unescaping).
pub fn unquote(value: &str) -> &str {
    value
        .strip_prefix('"')
        .and_then(|v| v.strip_suffix('"'))
        .unwrap_or(value)
}

/// Splits `text` at `sep` where it is not inside a quoted string or `<...>`
/// (RFC 3261 §7.3.1: a comma-separated header equals several header lines).
pub fn split_top_level(text: &str, sep: u8) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut quoted = false;
    let mut angle = false;
    let mut escaped = false;
    for (i, b) in text.bytes().enumerate() {
        if quoted {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => quoted = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => quoted = true,
            b'<' => angle = true,
            b'>' => angle = false,
            _ if b == sep && !angle => {
                out.push(text.get(start..i).unwrap_or(""));
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(text.get(start..).unwrap_or(""));
    out
}

/// Index of the first `needle` outside a quoted string.
fn find_top_level(text: &str, needle: u8) -> Option<usize> {
    let mut quoted = false;
    let mut escaped = false;
    for (i, b) in text.bytes().enumerate() {
        if quoted {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => quoted = false,
                _ => {}
            }
        } else if b == b'"' {
            quoted = true;
        } else if b == needle {
            return Some(i);
        }
    }
    None
}

/// Splits `host[:port]<sep>rest` where host may be an `[IPv6]` reference.
fn split_hostport(text: &str, sep: u8) -> Result<(String, Option<u16>, &str), UriError> {
    let (host, after_host) = if let Some(v6) = text.strip_prefix('[') {
        let close = v6.find(']').ok_or(UriError::BadHost)?;
        let inner = v6.get(..close).unwrap_or("");
        if inner.is_empty()
            || !inner
                .bytes()
                .all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.')
        {
            return Err(UriError::BadHost);
        }
        (
            text.get(..close + 2).unwrap_or(""),
            v6.get(close + 1..).unwrap_or(""),
        )
    } else {
        let end = text
            .bytes()
            .position(|b| b == b':' || b == sep || b == b' ' || b == b'\t')
            .unwrap_or(text.len());
        (text.get(..end).unwrap_or(""), text.get(end..).unwrap_or(""))
    };
    if host.is_empty()
        || host
            .bytes()
            .any(|b| b.is_ascii_whitespace() || b == b'"' || b == b'<' || b == b'>' || b == b',')
    {
        return Err(UriError::BadHost);
    }
    let after_host = after_host.trim_start();
    let (port, rest) = match after_host.strip_prefix(':') {
        Some(p) => {
            let end = p.bytes().position(|b| b == sep).unwrap_or(p.len());
            let digits = p.get(..end).unwrap_or("").trim();
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return Err(UriError::BadPort);
            }
            let port = digits.parse::<u16>().map_err(|_| UriError::BadPort)?;
            (Some(port), p.get(end..).unwrap_or(""))
        }
        None => (None, after_host),
    };
    Ok((host.to_owned(), port, rest))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uri_with_ipv6_port_and_params() {
        let u = SipUri::parse("sips:101@[2001:db8::10]:5061;transport=tls;ob").unwrap();
        assert_eq!(u.scheme, UriScheme::Sips);
        assert_eq!(u.user(), Some("101"));
        assert_eq!(u.host, "[2001:db8::10]");
        assert_eq!(u.port, Some(5061));
        assert_eq!(u.transport().as_deref(), Some("tls"));
        assert!(u.params.contains("ob"));
        assert_eq!(
            u.to_string(),
            "sips:101@[2001:db8::10]:5061;transport=tls;ob"
        );
    }

    #[test]
    fn uri_user_params_password_and_headers() {
        let u = SipUri::parse("sip:alice:secret@example.com?Replaces=abc%40x").unwrap();
        assert_eq!(u.user(), Some("alice"));
        assert_eq!(u.headers.as_deref(), Some("Replaces=abc%40x"));
        assert_eq!(
            u.to_string(),
            "sip:alice:secret@example.com?Replaces=abc%40x"
        );
    }

    #[test]
    fn uri_errors() {
        assert_eq!(SipUri::parse("tel:+4930"), Err(UriError::UnsupportedScheme));
        assert_eq!(SipUri::parse("sip:[::1"), Err(UriError::BadHost));
        assert_eq!(SipUri::parse("sip:a@h:99999"), Err(UriError::BadPort));
        assert_eq!(SipUri::parse("sip:a@h:5x"), Err(UriError::BadPort));
        assert_eq!(SipUri::parse(""), Err(UriError::Empty));
        assert_eq!(SipUri::parse("sip:"), Err(UriError::BadHost));
    }

    #[test]
    fn contact_with_quoted_instance() {
        let text = "\"Reception\" <sip:101@192.0.2.10:5061;transport=tls;ob>;reg-id=1;\
                    +sip.instance=\"<urn:uuid:00000000-0000-1000-8000-000413a1b2c3>\";expires=3600";
        let c = NameAddr::parse(text).unwrap();
        assert_eq!(c.display_name.as_deref(), Some("\"Reception\""));
        assert_eq!(c.uri.port, Some(5061));
        assert_eq!(
            c.params.value("+sip.instance"),
            Some("<urn:uuid:00000000-0000-1000-8000-000413a1b2c3>")
        );
        assert_eq!(c.expires(), Some(3600));
        assert_eq!(c.to_string(), text);
    }

    #[test]
    fn display_name_with_angle_and_semicolon_in_quotes() {
        let c = NameAddr::parse("\"a <b>; c\" <sip:x@y>;tag=1").unwrap();
        assert_eq!(c.display_name.as_deref(), Some("\"a <b>; c\""));
        assert_eq!(c.tag(), Some("1"));
    }

    #[test]
    fn addr_spec_params_are_header_params() {
        let c = NameAddr::parse("sip:101@pbx.example;tag=abc").unwrap();
        assert_eq!(c.tag(), Some("abc"));
        assert!(c.uri.params.0.is_empty());
        assert_eq!(c.to_string(), "<sip:101@pbx.example>;tag=abc");
    }

    #[test]
    fn via_ipv6_received_rport() {
        let v = Via::parse(
            "SIP/2.0/TLS [2001:db8::10]:5061;branch=z9hG4bK776;rport;received=2001:db8::99",
        )
        .unwrap();
        assert_eq!(v.transport, "TLS");
        assert_eq!(v.sent_by(), "[2001:db8::10]:5061");
        assert_eq!(v.branch(), Some("z9hG4bK776"));
        assert_eq!(v.params.value("received"), Some("2001:db8::99"));
        assert_eq!(
            v.to_string(),
            "SIP/2.0/TLS [2001:db8::10]:5061;branch=z9hG4bK776;rport;received=2001:db8::99"
        );
    }

    #[test]
    fn via_errors() {
        assert_eq!(Via::parse("SIP/2.0 host"), Err(UriError::BadViaProtocol));
        assert_eq!(
            Via::parse("HTTP/1.1/TCP host"),
            Err(UriError::BadViaProtocol)
        );
        assert_eq!(Via::parse("SIP/2.0/UDP"), Err(UriError::BadViaProtocol));
        assert_eq!(Via::parse("SIP/2.0/UDP h:x"), Err(UriError::BadPort));
    }

    #[test]
    fn split_respects_quotes_and_angles() {
        let parts = split_top_level("<sip:a@b;x=1,2>;p=\"x,y\", <sip:c@d>", b',');
        assert_eq!(parts, vec!["<sip:a@b;x=1,2>;p=\"x,y\"", " <sip:c@d>"]);
    }

    /// Why this tokenizer exists: rsip 0.4's typed Contact fails on the quoted
    /// `+sip.instance` every RFC 5626 phone sends (its param tokenizer stops at `"`).
    #[test]
    fn rsip_typed_contact_rejects_quoted_instance() {
        use rsip::headers::{ToTypedHeader, UntypedHeader};
        let value = "<sip:102@192.0.2.32:11722;transport=TLS>;reg-id=1;\
                     +sip.instance=\"<urn:uuid:00000000-0000-1000-8000-805ec0a1b2c3>\"";
        assert!(rsip::headers::Contact::new(value).typed().is_err());
        assert!(NameAddr::parse(value).is_ok());
    }

    /// rsip 0.4's typed Via and Contact split `[2001:db8::32]:11722` at the first `:`.
    #[test]
    fn rsip_typed_via_and_contact_reject_ipv6() {
        use rsip::headers::{ToTypedHeader, UntypedHeader};
        let via = "SIP/2.0/TLS [2001:db8::32]:11722;branch=z9hG4bK1;rport";
        assert!(rsip::headers::Via::new(via).typed().is_err());
        assert!(Via::parse(via).is_ok());
        let contact = "<sip:102@[2001:db8::32]:11722;transport=TLS>";
        assert!(rsip::headers::Contact::new(contact).typed().is_err());
        assert!(NameAddr::parse(contact).is_ok());
    }

    /// rsip 0.4 has no URI headers (`?Replaces=...`, a TODO in its tokenizer): they end up
    /// inside the host, so the host of `sip:bob@192.0.2.4?Replaces=..` is not an IP address.
    #[test]
    fn rsip_uri_headers_land_in_host() {
        let text = "sip:bob@192.0.2.4?Replaces=abc%3Bto-tag%3D1";
        let rsip_uri = rsip::Uri::try_from(text).unwrap();
        assert!(matches!(
            rsip_uri.host_with_port.host,
            rsip::Host::Domain(_)
        ));
        let ours = SipUri::parse(text).unwrap();
        assert_eq!(ours.host, "192.0.2.4");
        assert_eq!(ours.to_string(), text);
    }

    #[test]
    fn garbage_after_uri_rejected() {
        assert_eq!(
            NameAddr::parse("<sip:a@b>xyz;tag=1"),
            Err(UriError::TrailingGarbage)
        );
        assert_eq!(SipUri::parse("sip:a@b x"), Err(UriError::TrailingGarbage));
        assert_eq!(
            Via::parse("SIP/2.0/UDP h junk"),
            Err(UriError::TrailingGarbage)
        );
        assert!(NameAddr::parse("<sip:a@b> ;tag=1").is_ok());
    }

    #[test]
    fn params_set_remove() {
        let mut p = Params::default();
        p.set("expires", Some("60"));
        p.set("EXPIRES", Some("30"));
        assert_eq!(p.value("expires"), Some("30"));
        assert!(p.remove("Expires"));
        assert!(!p.remove("expires"));
    }
}
