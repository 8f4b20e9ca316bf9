//! Quirk: rsip 0.4 rejects a whole request whose Request-URI has an IPv6 reference.
//!
//! rsip's host tokenizer splits `host:port` at the first `:`, so `sip:101@[2001:db8::10]:5061`
//! gives host `[2001` and a port that does not parse: the request fails to parse at all. And
//! rsip prints `Host::IpAddr(V6)` without brackets. Any phone or PBX with IPv6 enabled puts
//! such URIs in its Contact, so requests to it carry them. We hide the URI behind a placeholder for rsip, parse
//! it ourselves (`SipUri`), and put it back as an rsip `Uri` whose host is the bracketed text.

use super::NormalizeError;
use crate::sip::uri::SipUri;

/// Placeholder URI that rsip accepts.
const PLACEHOLDER: &str = "sip:ipv6-request-uri.invalid";

/// Replaces an IPv6 Request-URI in a request start line; returns the real URI.
pub(crate) fn hide(start_line: &mut String) -> Result<Option<SipUri>, NormalizeError> {
    if start_line.starts_with("SIP/") {
        return Ok(None); // a status line
    }
    let mut parts = start_line.splitn(3, ' ');
    let (Some(method), Some(uri), Some(version)) = (parts.next(), parts.next(), parts.next())
    else {
        return Ok(None); // let rsip reject it
    };
    if !uri.contains('[') {
        return Ok(None);
    }
    let parsed = SipUri::parse(uri).map_err(|_| NormalizeError::BadRequestUri)?;
    *start_line = format!("{method} {PLACEHOLDER} {version}");
    Ok(Some(parsed))
}

/// The rsip form of one of our URIs: host kept as text so IPv6 brackets survive printing.
pub(crate) fn to_rsip(uri: &SipUri) -> rsip::Uri {
    use crate::sip::uri::UriScheme;
    rsip::Uri {
        scheme: Some(match uri.scheme {
            UriScheme::Sip => rsip::Scheme::Sip,
            UriScheme::Sips => rsip::Scheme::Sips,
        }),
        auth: uri.user_info.as_ref().map(|u| rsip::Auth {
            user: u.clone(),
            password: None,
        }),
        host_with_port: rsip::HostWithPort {
            // Host text may carry URI headers ("?..."), which rsip cannot hold anywhere else.
            host: rsip::Host::Domain(match &uri.headers {
                Some(h) => format!("{}", HostWithHeaders(uri, h)).into(),
                None => uri.host.clone().into(),
            }),
            port: if uri.headers.is_some() {
                None
            } else {
                uri.port.map(Into::into)
            },
        },
        params: if uri.headers.is_some() {
            Vec::new()
        } else {
            uri.params
                .0
                .iter()
                .map(|p| rsip::Param::Other(p.name.clone().into(), p.value.clone().map(Into::into)))
                .collect()
        },
        headers: Vec::new(),
    }
}

/// `host[:port];params?headers` squeezed into rsip's host slot.
struct HostWithHeaders<'a>(&'a SipUri, &'a str);

impl std::fmt::Display for HostWithHeaders<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0.host)?;
        if let Some(p) = self.0.port {
            write!(f, ":{p}")?;
        }
        write!(f, "{}?{}", self.0.params, self.1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const V6: &str = "OPTIONS sip:101@[2001:db8::10]:5061;transport=tls SIP/2.0\r\n\
        Via: SIP/2.0/TLS [2001:db8::1]:5061;branch=z9hG4bK6\r\n\
        From: <sip:pbx@[2001:db8::1]>;tag=1\r\nTo: <sip:101@[2001:db8::10]>\r\n\
        Call-ID: v6\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n";

    #[test]
    fn rsip_rejects_ipv6_request_uri() {
        // The proof: the whole request is refused.
        assert!(rsip::SipMessage::try_from(V6.as_bytes()).is_err());
    }

    #[test]
    fn rsip_prints_ipv6_host_without_brackets() {
        let uri = rsip::Uri {
            scheme: Some(rsip::Scheme::Sip),
            host_with_port: rsip::HostWithPort {
                host: rsip::Host::IpAddr("2001:db8::10".parse().unwrap()),
                port: Some(5061.into()),
            },
            ..Default::default()
        };
        assert_eq!(uri.to_string(), "sip:2001:db8::10:5061"); // ambiguous, wrong per §19.1.1
    }

    #[test]
    fn hidden_uri_roundtrips_through_rsip() {
        let mut line = "OPTIONS sip:101@[2001:db8::10]:5061;transport=tls SIP/2.0".to_owned();
        let uri = hide(&mut line).unwrap().unwrap();
        assert_eq!(line, "OPTIONS sip:ipv6-request-uri.invalid SIP/2.0");
        assert_eq!(
            to_rsip(&uri).to_string(),
            "sip:101@[2001:db8::10]:5061;transport=tls"
        );
    }

    #[test]
    fn uri_headers_survive() {
        let uri = SipUri::parse("sip:a@[::1]:5060;x=1?Replaces=z").unwrap();
        assert_eq!(to_rsip(&uri).to_string(), "sip:a@[::1]:5060;x=1?Replaces=z");
    }
}
