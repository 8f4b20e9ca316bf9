//! Messages built from another message: a response to a request (RFC 3261 §8.2.6), with an
//! optional `Warning: 399` (§20.43); the ACK for a non-2xx final response (§17.1.1.3); a CANCEL
//! for a pending INVITE (§9.1).

use rsip::message::HasHeaders;

use crate::sip::message::{make_header, MessageError, Method, SipMessage};

/// The reason phrase the edge uses for `status` (RFC 3261 §21, RFC 5626 §11 for 430).
pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        100 => "Trying",
        180 => "Ringing",
        181 => "Call Is Being Forwarded",
        182 => "Queued",
        183 => "Session Progress",
        200 => "OK",
        202 => "Accepted",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        407 => "Proxy Authentication Required",
        408 => "Request Timeout",
        413 => "Request Entity Too Large",
        415 => "Unsupported Media Type",
        420 => "Bad Extension",
        423 => "Interval Too Brief",
        430 => "Flow Failed",
        480 => "Temporarily Unavailable",
        481 => "Call/Transaction Does Not Exist",
        482 => "Loop Detected",
        483 => "Too Many Hops",
        486 => "Busy Here",
        487 => "Request Terminated",
        488 => "Not Acceptable Here",
        491 => "Request Pending",
        500 => "Server Internal Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Server Time-out",
        513 => "Message Too Large",
        603 => "Decline",
        _ => match status / 100 {
            1 => "Progress",
            2 => "Success",
            3 => "Redirection",
            4 => "Client Error",
            5 => "Server Error",
            _ => "Global Failure",
        },
    }
}

/// A `Warning` value with code 399 (RFC 3261 §20.43: "miscellaneous warning"):
/// `399 <agent> "<text>"`, with `"` and `\` in the text escaped as quoted-pair (§25.1).
pub fn warning_399(agent: &str, text: &str) -> String {
    let mut quoted = String::with_capacity(text.len() + 2);
    for c in text.chars() {
        match c {
            '"' | '\\' => {
                quoted.push('\\');
                quoted.push(c);
            }
            // CR/LF would split the header line: never copy them into a header.
            '\r' | '\n' => quoted.push(' '),
            _ => quoted.push(c),
        }
    }
    format!("399 {agent} \"{quoted}\"")
}

/// Builds a response to `request` (RFC 3261 §8.2.6.1-2): Via (all, in order), From, To,
/// Call-ID and CSeq copied; `to_tag` added to To when To has none and `status > 100`; an
/// optional `Warning: 399 <agent> "<text>"`; empty body.
pub fn response_to(
    request: &SipMessage,
    status: u16,
    to_tag: Option<&str>,
    warning: Option<(&str, &str)>,
) -> Result<SipMessage, MessageError> {
    if !request.is_request() {
        return Err(MessageError::NotARequest);
    }
    let mut headers: Vec<rsip::Header> = Vec::with_capacity(8);
    for v in request.header_values("Via") {
        headers.push(make_header("Via", v.to_owned()));
    }
    for name in ["From", "To", "Call-ID", "CSeq"] {
        let v = request
            .header(name)
            .ok_or(MessageError::MissingHeader(match name {
                "From" => "From",
                "To" => "To",
                "Call-ID" => "Call-ID",
                _ => "CSeq",
            }))?;
        headers.push(make_header(name, v.to_owned()));
    }
    if let Some((agent, text)) = warning {
        headers.push(make_header("Warning", warning_399(agent, text)));
    }
    headers.push(make_header("Content-Length", "0".to_owned()));
    let mut response = SipMessage {
        inner: rsip::SipMessage::Response(rsip::Response {
            status_code: rsip::StatusCode::Other(status, reason_phrase(status).to_owned()),
            version: rsip::Version::V2,
            headers: headers.into(),
            body: Vec::new(),
        }),
    };
    if let Some(tag) = to_tag {
        if status > 100 && request.to_tag()?.is_none() {
            response.set_to_tag(tag)?;
        }
    }
    Ok(response)
}

/// A `400 Bad Request` for bytes that did not parse as a message, built from the raw header
/// lines when that is possible (RFC 3261 §8.2.6 needs Via, From, To, Call-ID and CSeq; compact
/// forms accepted). `None` when no response can be built: the start line is a status line
/// (never answer a response), or a needed header is missing or not UTF-8. The caller drops
/// the message then.
pub fn bad_request_for_raw(raw: &[u8], warning: Option<(&str, &str)>) -> Option<Vec<u8>> {
    const NEEDED: [(&str, &str); 5] = [
        ("Via", "v"),
        ("From", "f"),
        ("To", "t"),
        ("Call-ID", "i"),
        ("CSeq", ""),
    ];
    let head_end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or(raw.len());
    let head = raw.get(..head_end)?;
    let mut lines = head
        .split(|&b| b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l));
    let start = lines.next()?;
    if start.starts_with(b"SIP/") || !start.ends_with(b" SIP/2.0") {
        return None;
    }
    let mut found: [Vec<&str>; 5] = Default::default();
    for line in lines {
        let Ok(line) = std::str::from_utf8(line) else {
            continue;
        };
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let name = name.trim();
        for (i, (long, short)) in NEEDED.iter().enumerate() {
            if name.eq_ignore_ascii_case(long)
                || (!short.is_empty() && name.eq_ignore_ascii_case(short))
            {
                if let Some(slot) = found.get_mut(i) {
                    slot.push(value.trim());
                }
            }
        }
    }
    if found.iter().any(Vec::is_empty) {
        return None;
    }
    let mut out = String::from("SIP/2.0 400 Bad Request\r\n");
    for ((long, _), values) in NEEDED.iter().zip(&found) {
        // Every Via is copied (§8.2.6.2); of the others the first one.
        let take = if *long == "Via" { values.len() } else { 1 };
        for v in values.iter().take(take) {
            out.push_str(long);
            out.push_str(": ");
            out.push_str(v);
            out.push_str("\r\n");
        }
    }
    if let Some((agent, text)) = warning {
        out.push_str("Warning: ");
        out.push_str(&warning_399(agent, text));
        out.push_str("\r\n");
    }
    out.push_str("Content-Length: 0\r\n\r\n");
    Some(out.into_bytes())
}

/// The ACK a client INVITE transaction sends for a 3xx-6xx response (RFC 3261 §17.1.1.3):
/// Request-URI, Call-ID, From, top Via and Route of the INVITE, To of the response, CSeq
/// number of the INVITE with method ACK.
pub fn ack_for_non_2xx(
    invite: &SipMessage,
    response: &SipMessage,
) -> Result<SipMessage, MessageError> {
    let mut ack = in_transaction_request(invite, Method::Ack)?;
    let to = response
        .header("To")
        .ok_or(MessageError::MissingHeader("To"))?;
    ack.set_header("To", to);
    Ok(ack)
}

/// A CANCEL for a pending INVITE (RFC 3261 §9.1): same Request-URI, Call-ID, From, To, top
/// Via (same branch) and Route; CSeq number of the INVITE with method CANCEL.
pub fn cancel_for(invite: &SipMessage) -> Result<SipMessage, MessageError> {
    in_transaction_request(invite, Method::Cancel)
}

fn in_transaction_request(invite: &SipMessage, method: Method) -> Result<SipMessage, MessageError> {
    let rsip::SipMessage::Request(req) = &invite.inner else {
        return Err(MessageError::NotARequest);
    };
    let cseq = invite.cseq()?;
    let mut headers: Vec<rsip::Header> = Vec::with_capacity(8);
    let via = invite
        .header("Via")
        .ok_or(MessageError::MissingHeader("Via"))?;
    headers.push(make_header("Via", via.to_owned()));
    for v in invite.header_values("Route") {
        headers.push(make_header("Route", v.to_owned()));
    }
    headers.push(make_header(
        "Max-Forwards",
        invite.header("Max-Forwards").unwrap_or("70").to_owned(),
    ));
    for name in ["From", "To", "Call-ID"] {
        if let Some(v) = invite.header(name) {
            headers.push(make_header(name, v.to_owned()));
        }
    }
    headers.push(make_header("CSeq", format!("{} {}", cseq.seq, method)));
    headers.push(make_header("Content-Length", "0".to_owned()));
    let out = SipMessage {
        inner: rsip::SipMessage::Request(rsip::Request {
            method: method.to_rsip(),
            uri: req.uri.clone(),
            version: rsip::Version::V2,
            headers: headers.into(),
            body: Vec::new(),
        }),
    };
    out.from()?;
    out.to()?;
    out.call_id()?;
    debug_assert!(out.inner.headers().iter().count() >= 6);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const INVITE: &str = "INVITE sip:200@pbx.example.com SIP/2.0\r\n\
        Via: SIP/2.0/UDP 198.51.100.1:5080;branch=z9hG4bK-e1;rport\r\n\
        Via: SIP/2.0/TLS 192.0.2.10:5061;branch=z9hG4bK-p1\r\n\
        Route: <sip:pbx.example.com;lr>\r\n\
        Max-Forwards: 69\r\n\
        From: <sip:101@pbx.example.com>;tag=f1\r\n\
        To: <sip:200@pbx.example.com>\r\n\
        Call-ID: c1\r\nCSeq: 5 INVITE\r\n\
        Content-Type: application/sdp\r\nContent-Length: 4\r\n\r\nv=0\n";

    fn invite() -> SipMessage {
        SipMessage::parse(INVITE.as_bytes()).unwrap()
    }

    #[test]
    fn forbidden_with_warning() {
        let r = response_to(
            &invite(),
            403,
            Some("edge1"),
            Some(("sbc.example", "user \"101\" not allowed")),
        )
        .unwrap();
        assert_eq!(r.status(), Some(403));
        assert_eq!(r.vias().unwrap().len(), 2);
        assert_eq!(r.to_tag().unwrap().as_deref(), Some("edge1"));
        assert_eq!(r.call_id().unwrap(), "c1");
        assert_eq!(r.cseq().unwrap().seq, 5);
        assert_eq!(
            r.header("Warning"),
            Some("399 sbc.example \"user \\\"101\\\" not allowed\"")
        );
        let text = String::from_utf8(r.to_bytes()).unwrap();
        assert!(text.starts_with("SIP/2.0 403 Forbidden\r\n"), "{text}");
        assert_eq!(
            SipMessage::parse(text.as_bytes()).unwrap().status(),
            Some(403)
        );
    }

    #[test]
    fn trying_has_no_tag_and_430_has_reason() {
        let r = response_to(&invite(), 100, Some("x"), None).unwrap();
        assert_eq!(r.to_tag().unwrap(), None);
        let r = response_to(&invite(), 430, Some("x"), None).unwrap();
        assert!(String::from_utf8(r.to_bytes())
            .unwrap()
            .starts_with("SIP/2.0 430 Flow Failed\r\n"));
    }

    #[test]
    fn warning_text_cannot_inject_lines() {
        assert_eq!(warning_399("e", "a\r\nX: y"), "399 e \"a  X: y\"");
    }

    #[test]
    fn response_to_response_refused() {
        let r = response_to(&invite(), 486, None, None).unwrap();
        assert_eq!(
            response_to(&r, 400, None, None).unwrap_err(),
            MessageError::NotARequest
        );
    }

    #[test]
    fn bad_request_from_raw_bytes() {
        // rsip refuses this (unknown method), but a 400 can still be built.
        let raw = b"FOO sip:a@b SIP/2.0\r\nv: SIP/2.0/TLS 192.0.2.1;branch=z9hG4bK1\r\n\
            f: <sip:101@b>;tag=1\r\nt: <sip:a@b>\r\ni: x1\r\nCSeq: 1 FOO\r\n\r\n";
        assert!(SipMessage::parse(raw).is_err());
        let resp = bad_request_for_raw(raw, Some(("edge", "unknown method"))).unwrap();
        let parsed = SipMessage::parse(&resp).unwrap();
        assert_eq!(parsed.status(), Some(400));
        assert_eq!(parsed.call_id().unwrap(), "x1");
        assert_eq!(parsed.top_via().unwrap().branch(), Some("z9hG4bK1"));
        assert_eq!(
            parsed.header("Warning"),
            Some("399 edge \"unknown method\"")
        );
    }

    #[test]
    fn no_bad_request_for_responses_or_missing_headers() {
        let resp =
            b"SIP/2.0 200 OK\r\nVia: x\r\nFrom: a\r\nTo: b\r\nCall-ID: c\r\nCSeq: 1 X\r\n\r\n";
        assert_eq!(bad_request_for_raw(resp, None), None);
        let no_cseq = b"FOO sip:a@b SIP/2.0\r\nVia: x\r\nFrom: a\r\nTo: b\r\nCall-ID: c\r\n\r\n";
        assert_eq!(bad_request_for_raw(no_cseq, None), None);
        assert_eq!(bad_request_for_raw(b"\xff\xfe garbage", None), None);
    }

    #[test]
    fn ack_for_486() {
        let resp = response_to(&invite(), 486, Some("t1"), None).unwrap();
        let ack = ack_for_non_2xx(&invite(), &resp).unwrap();
        assert_eq!(ack.method(), Some(Method::Ack));
        assert_eq!(ack.cseq().unwrap().seq, 5);
        assert_eq!(ack.cseq().unwrap().method, Method::Ack);
        assert_eq!(ack.to_tag().unwrap().as_deref(), Some("t1"));
        assert_eq!(ack.vias().unwrap().len(), 1);
        assert_eq!(ack.top_via().unwrap().branch(), Some("z9hG4bK-e1"));
        assert_eq!(ack.routes().unwrap().len(), 1);
        assert_eq!(
            ack.request_uri().unwrap().to_string(),
            "sip:200@pbx.example.com"
        );
        assert!(ack.body().is_empty());
    }

    #[test]
    fn cancel_matches_invite_branch() {
        let c = cancel_for(&invite()).unwrap();
        assert_eq!(c.method(), Some(Method::Cancel));
        assert_eq!(c.top_via().unwrap().branch(), Some("z9hG4bK-e1"));
        assert_eq!(c.to_tag().unwrap(), None);
        assert_eq!(c.cseq().unwrap().method, Method::Cancel);
    }
}
