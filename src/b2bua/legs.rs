//! Per-leg rewrites of the B2BUA (RFC 3261 §16.6 and §16.7 done B2BUA-style): each leg sees
//! only the edge's own Via, Max-Forwards counts down, Record-Route stays on its leg, Routes
//! that name the edge are consumed, and responses get the other leg's Vias back. Pure.

use crate::sip::message::{MessageError, SipMessage};
use crate::sip::uri::{NameAddr, Params, SipUri, Via};

/// Replaces every Via by `ours` and applies the forwarding rules that do not depend on the
/// method: Max-Forwards decremented ([`MessageError::TooManyHops`] → the caller answers
/// 483), Record-Route removed (a B2BUA keeps each leg's route set to itself), topmost Routes
/// naming the edge removed (loose routing, RFC 3261 §16.4).
pub fn forward_request(
    request: &mut SipMessage,
    ours: &Via,
    names_edge: impl Fn(&SipUri) -> bool,
) -> Result<(), MessageError> {
    request.decrement_max_forwards()?;
    request.set_vias(std::slice::from_ref(ours));
    request.remove_header("Record-Route");
    let routes = request.routes()?;
    let kept: Vec<NameAddr> = routes
        .into_iter()
        .skip_while(|r| names_edge(&r.uri))
        .collect();
    if kept.is_empty() {
        request.remove_header("Route");
    } else {
        request.set_routes(&kept);
    }
    Ok(())
}

/// Puts the other leg's Vias back on a response (ours is dropped with the others).
pub fn restore_vias(response: &mut SipMessage, vias: &[Via]) {
    response.set_vias(vias);
}

/// The edge Contact URI toward the PBX: `sip:<token>@host:port;transport=<t>`.
pub fn edge_contact_uri(token: &str, host: &str, port: u16, transport: &str) -> SipUri {
    let mut params = Params::default();
    params.set("transport", Some(transport));
    SipUri {
        scheme: crate::sip::uri::UriScheme::Sip,
        user_info: Some(token.to_owned()),
        host: host.to_owned(),
        port: Some(port),
        params,
        headers: None,
    }
}

/// Host text for a URI or Via: IPv6 addresses in brackets (RFC 3261 §25.1).
pub fn host_of(ip: std::net::IpAddr) -> String {
    match ip {
        std::net::IpAddr::V4(v4) => v4.to_string(),
        std::net::IpAddr::V6(v6) => format!("[{v6}]"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const REQ: &str = "SUBSCRIBE sip:102@sbc.test SIP/2.0\r\n\
Via: SIP/2.0/TLS 192.0.2.5:5062;branch=z9hG4bKphone;rport\r\n\
Route: <sip:sbc.test;transport=tls;lr>\r\n\
Route: <sip:proxy2.example;lr>\r\n\
Record-Route: <sip:rr.example;lr>\r\n\
Max-Forwards: 70\r\n\
From: <sip:101@sbc.test>;tag=a\r\nTo: <sip:102@sbc.test>\r\nCall-ID: c1\r\n\
CSeq: 1 SUBSCRIBE\r\nContact: <sip:101@192.0.2.5:5062;transport=tls>\r\nEvent: dialog\r\n\
Content-Length: 0\r\n\r\n";

    #[test]
    fn forwarding_replaces_vias_consumes_our_route_and_counts_down() {
        let mut m = SipMessage::parse(REQ.as_bytes()).unwrap();
        let ours = Via::new("UDP", "127.0.0.1", Some(5080), "z9hG4bKedge", true);
        forward_request(&mut m, &ours, |u| u.host == "sbc.test").unwrap();
        let vias = m.vias().unwrap();
        assert_eq!(vias.len(), 1);
        assert_eq!(vias[0].branch(), Some("z9hG4bKedge"));
        assert_eq!(m.max_forwards().unwrap(), Some(69));
        assert!(m.header("Record-Route").is_none());
        let routes = m.routes().unwrap();
        assert_eq!(routes.len(), 1);
        assert_eq!(routes[0].uri.host, "proxy2.example");
    }

    #[test]
    fn zero_max_forwards_is_refused() {
        let text = REQ.replace("Max-Forwards: 70", "Max-Forwards: 0");
        let mut m = SipMessage::parse(text.as_bytes()).unwrap();
        let ours = Via::new("UDP", "127.0.0.1", Some(5080), "z9hG4bKedge", true);
        assert!(matches!(
            forward_request(&mut m, &ours, |_| false),
            Err(MessageError::TooManyHops)
        ));
    }

    #[test]
    fn vias_are_restored_in_order() {
        let req = SipMessage::parse(REQ.as_bytes()).unwrap();
        let original = req.vias().unwrap();
        let mut resp = crate::sip::response::response_to(&req, 200, Some("t"), None).unwrap();
        let ours = Via::new("UDP", "127.0.0.1", Some(5080), "z9hG4bKedge", true);
        resp.remove_header("Via");
        resp.push_via(&ours);
        restore_vias(&mut resp, &original);
        assert_eq!(resp.vias().unwrap(), original);
    }

    #[test]
    fn our_via_stays_at_the_top_of_the_headers() {
        let mut m = SipMessage::parse(REQ.as_bytes()).unwrap();
        let ours = Via::new("UDP", "127.0.0.1", Some(5080), "z9hG4bKedge", true);
        forward_request(&mut m, &ours, |_| false).unwrap();
        let text = String::from_utf8(m.to_bytes()).unwrap();
        let second_line = text.lines().nth(1).unwrap();
        assert!(
            second_line.starts_with("Via: SIP/2.0/UDP 127.0.0.1:5080"),
            "{text}"
        );
    }

    #[test]
    fn edge_contact_carries_the_token() {
        let u = edge_contact_uri("tok", "127.0.0.1", 5080, "udp");
        assert_eq!(u.to_string(), "sip:tok@127.0.0.1:5080;transport=udp");
        assert_eq!(host_of("::1".parse().unwrap()), "[::1]");
    }
}
