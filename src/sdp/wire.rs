//! The one place where SDP bytes meet `sdp-rs`: normalisation of what real phones send, then
//! parse; and printing.
//!
//! `sdp-rs` 0.2.1 is strict and, worse, silent in places (each finding has a test in
//! `tests/sdp_sdprs.rs` and an entry in `SDP_NOTES.md`):
//! - it stops at the first line that is out of RFC 8866 §5 order or of an unknown type and
//!   returns `Ok` with everything after it dropped (media descriptions included);
//! - trailing spaces make `c=`, `a=rtpmap`, `a=ptime` fail; a missing final line ending, LF
//!   line endings mixed with CRLF, `b=` values that are not plain numbers, an `o=` address
//!   that is a host name, and a missing `t=` fail the whole body;
//! - it prints `a=rtpmap:96 opus/48000/2` as `a=rtpmap:96 opus/48000 2` (fixed in
//!   [`parse`] by keeping rtpmaps untyped).
//!
//! So before `sdp-rs` sees a body, [`normalise`] rewrites it into the canonical shape
//! `sdp-rs` parses completely: CRLF line endings, no blank lines, trimmed lines, single spaces
//! in `o=`/`c=`/`m=`/`t=`, RFC 8866 line order inside each section, unknown line types and
//! the obsolete `k=`, `r=`, `z=` lines dropped, unparsable `b=` and advisory attributes
//! (`ptime`, `framerate`...) dropped, an `o=` host name replaced (the rewrite writes its own
//! `o=`), a missing `s=`/`t=` supplied. Whatever still does not parse is refused with a typed
//! error, and the tokenizer must consume the whole body, so nothing is ever dropped silently.

use std::net::IpAddr;

use sdp_rs::lines::Attribute;
use sdp_rs::SessionDescription;

use super::error::RewriteError;

/// Largest SDP body accepted, in bytes (checked before anything is allocated for it).
pub const MAX_SDP_LEN: usize = 64 * 1024;

/// Most lines accepted in one body.
pub const MAX_LINES: usize = 2048;

/// Most media descriptions accepted in one body.
pub const MAX_MEDIA: usize = 16;

/// Parses an SDP body liberally (see the module docs) into `sdp-rs` types.
pub(crate) fn parse(body: &[u8]) -> Result<SessionDescription, RewriteError> {
    let text = normalise(body)?;
    let (rest, tokens) = sdp_rs::tokenizers::session_description::Tokenizer::tokenize(&text)
        .map_err(|_| RewriteError::Unparsable)?;
    // sdp-rs returns Ok with unconsumed input when a line is out of order; after
    // normalisation that would be a bug here, and it must not silently lose lines.
    if !rest.is_empty() {
        return Err(RewriteError::Unparsable);
    }
    let mut sdp = SessionDescription::try_from(tokens).map_err(|_| RewriteError::Unparsable)?;
    untype_rtpmaps(&mut sdp.attributes);
    for media in &mut sdp.media_descriptions {
        untype_rtpmaps(&mut media.attributes);
    }
    Ok(sdp)
}

/// `sdp-rs` 0.2.1 prints a typed `Rtpmap` with encoding parameters wrongly
/// (`a=rtpmap:96 opus/48000 2` for `opus/48000/2`): keep rtpmaps as untyped attributes,
/// written back in RFC 8866 §6.6 form.
fn untype_rtpmaps(attributes: &mut [Attribute]) {
    for attr in attributes.iter_mut() {
        if let Attribute::Rtpmap(map) = attr {
            let mut value = format!(
                "{} {}/{}",
                map.payload_type, map.encoding_name, map.clock_rate
            );
            if let Some(params) = map.encoding_params {
                value.push_str(&format!("/{params}"));
            }
            *attr = Attribute::Other("rtpmap".to_owned(), Some(value));
        }
    }
}

/// Prints an SDP body (CRLF line endings, RFC 8866 §5 order).
pub(crate) fn print(sdp: &SessionDescription) -> String {
    sdp.to_string()
}

/// One kept line: its RFC 8866 §5 rank inside its section, and its canonical text.
struct Line {
    rank: u8,
    text: String,
}

#[derive(Default)]
struct Section {
    lines: Vec<Line>,
}

impl Section {
    fn push(&mut self, rank: u8, text: String) {
        self.lines.push(Line { rank, text });
    }

    fn count(&self, rank: u8) -> usize {
        self.lines.iter().filter(|l| l.rank == rank).count()
    }

    fn write(mut self, out: &mut String) {
        // Stable: lines of equal rank (several a=, several t=) keep their order.
        self.lines.sort_by_key(|l| l.rank);
        for line in self.lines {
            out.push_str(&line.text);
            out.push_str("\r\n");
        }
    }
}

// Session-level ranks (RFC 8866 §5 order: v o s i u e p c b t r z k a).
const S_V: u8 = 0;
const S_O: u8 = 1;
const S_S: u8 = 2;
const S_I: u8 = 3;
const S_U: u8 = 4;
const S_E: u8 = 5;
const S_P: u8 = 6;
const S_C: u8 = 7;
const S_B: u8 = 8;
const S_T: u8 = 9;
const S_A: u8 = 10;
// Media-level ranks (m i c b k a).
const M_M: u8 = 0;
const M_I: u8 = 1;
const M_C: u8 = 2;
const M_B: u8 = 3;
const M_A: u8 = 4;

/// Rewrites a received body into the canonical shape `sdp-rs` parses completely.
pub(crate) fn normalise(body: &[u8]) -> Result<String, RewriteError> {
    if body.len() > MAX_SDP_LEN {
        return Err(RewriteError::TooLarge);
    }
    let text = core::str::from_utf8(body).map_err(|_| RewriteError::NotUtf8)?;
    // A UTF-8 byte order mark is not SDP, but harmless: skip it.
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);

    let mut session = Section::default();
    let mut media: Vec<Section> = Vec::new();
    let mut seen_lines = 0usize;

    for (index, physical) in text.split('\n').enumerate() {
        let number = index + 1;
        // A lone CR also ends a line (RFC 8866 §5 asks parsers to accept LF; some stacks
        // send CR).
        for raw in physical.split('\r') {
            let line = raw.trim_matches([' ', '\t']);
            if line.is_empty() {
                continue;
            }
            seen_lines += 1;
            if seen_lines > MAX_LINES {
                return Err(RewriteError::TooLarge);
            }
            if line.chars().any(|c| c.is_control() && c != '\t') {
                return Err(RewriteError::Malformed {
                    line: number,
                    what: "line",
                });
            }
            let (kind, value) = match line.as_bytes() {
                // The two matched bytes are ASCII, so index 2 is in bounds and a char boundary.
                [k, b'=', ..] if k.is_ascii_lowercase() => (*k, &line[2..]),
                _ => {
                    return Err(RewriteError::Malformed {
                        line: number,
                        what: "line",
                    })
                }
            };
            let mline = media.len().saturating_sub(1);
            match (kind, media.last_mut()) {
                (b'm', _) => {
                    if media.len() >= MAX_MEDIA {
                        return Err(RewriteError::TooManyMedia {
                            count: media.len() + 1,
                        });
                    }
                    let mut section = Section::default();
                    section.push(M_M, media_line(value, number)?);
                    media.push(section);
                }
                (b'v', None) => {
                    if value != "0" {
                        return Err(RewriteError::Malformed {
                            line: number,
                            what: "v=",
                        });
                    }
                    session.push(S_V, "v=0".to_owned());
                }
                (b'o', None) => session.push(S_O, origin_line(value, number)?),
                (b's', None) => {
                    // RFC 8866 §5.3: an empty session name is written "s= "; "-" is safer.
                    let name = if value.trim().is_empty() { "-" } else { value };
                    session.push(S_S, format!("s={name}"));
                }
                (b'i', None) => session.push(S_I, line.to_owned()),
                (b'u', None) => session.push(S_U, line.to_owned()),
                (b'e', None) => session.push(S_E, line.to_owned()),
                (b'p', None) => session.push(S_P, line.to_owned()),
                (b'c', None) => session.push(S_C, connection_line(value, number, 0)?),
                (b'b', None) => {
                    if let Some(text) = bandwidth_line(value) {
                        session.push(S_B, text);
                    }
                }
                (b't', None) => session.push(S_T, time_line(value, number)?),
                (b'a', None) => {
                    if let Some(text) = attribute_line(value, number)? {
                        session.push(S_A, text);
                    }
                }
                // At most one i= per media description (RFC 8866 §5.4); keep the first.
                (b'i', Some(section)) if section.count(M_I) == 0 => {
                    section.push(M_I, line.to_owned())
                }
                (b'i', Some(_)) => {}
                (b'c', Some(section)) => section.push(M_C, connection_line(value, number, mline)?),
                (b'b', Some(section)) => {
                    if let Some(text) = bandwidth_line(value) {
                        section.push(M_B, text);
                    }
                }
                (b'a', Some(section)) => {
                    if let Some(text) = attribute_line(value, number)? {
                        section.push(M_A, text);
                    }
                }
                // k= (RFC 8866 §5.12: obsolete, and a key in clear) and r=/z= (repeat times and
                // zone adjustments, meaningless for `t=0 0` calls) are dropped.
                (b'k' | b'r' | b'z', _) => {}
                // A session-only line inside a media description.
                (b'v' | b'o' | b's' | b'u' | b'e' | b'p' | b't', Some(_)) => {
                    return Err(RewriteError::Malformed {
                        line: number,
                        what: "line order",
                    });
                }
                // Unknown line types are dropped (liberal accept, see SDP_NOTES.md).
                _ => {}
            }
        }
    }

    match session.count(S_V) {
        1 => {}
        0 => {
            return Err(RewriteError::Malformed {
                line: 0,
                what: "v=",
            })
        }
        _ => {
            return Err(RewriteError::Malformed {
                line: 0,
                what: "repeated v=",
            })
        }
    }
    match session.count(S_O) {
        1 => {}
        0 => {
            return Err(RewriteError::Malformed {
                line: 0,
                what: "o=",
            })
        }
        _ => {
            return Err(RewriteError::Malformed {
                line: 0,
                what: "repeated o=",
            })
        }
    }
    if session.count(S_C) > 1 {
        return Err(RewriteError::Malformed {
            line: 0,
            what: "repeated session c=",
        });
    }
    keep_first(&mut session, S_S);
    keep_first(&mut session, S_I);
    keep_first(&mut session, S_U);
    if session.count(S_S) == 0 {
        session.push(S_S, "s=-".to_owned());
    }
    if session.count(S_T) == 0 {
        session.push(S_T, "t=0 0".to_owned());
    }

    let mut out = String::with_capacity(body.len() + 16);
    session.write(&mut out);
    for section in media {
        section.write(&mut out);
    }
    Ok(out)
}

fn keep_first(section: &mut Section, rank: u8) {
    let mut seen = false;
    section.lines.retain(|l| {
        if l.rank != rank {
            return true;
        }
        let keep = !seen;
        seen = true;
        keep
    });
}

fn fields(value: &str) -> Vec<&str> {
    value.split_ascii_whitespace().collect()
}

fn is_digits(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

/// `o=<username> <sess-id> <sess-version> <nettype> <addrtype> <unicast-address>`
/// (RFC 8866 §5.2). A host name as address is replaced by `0.0.0.0`: the rewrite never
/// forwards a received `o=` (each leg gets its own origin).
fn origin_line(value: &str, line: usize) -> Result<String, RewriteError> {
    match fields(value).as_slice() {
        [user, id, version, net, addr_type, addr] => {
            if addr.parse::<IpAddr>().is_ok() {
                Ok(format!("o={user} {id} {version} {net} {addr_type} {addr}"))
            } else {
                Ok(format!("o={user} {id} {version} {net} IP4 0.0.0.0"))
            }
        }
        _ => Err(RewriteError::Malformed { line, what: "o=" }),
    }
}

/// `c=<nettype> <addrtype> <connection-address>` (RFC 8866 §5.7).
fn connection_line(value: &str, line: usize, mline: usize) -> Result<String, RewriteError> {
    let [net, addr_type, address] = fields(value)[..] else {
        return Err(RewriteError::Malformed { line, what: "c=" });
    };
    let mut parts = address.split('/');
    // `split` yields at least one item.
    let base = parts.next().unwrap_or_default();
    if base.parse::<IpAddr>().is_err() {
        let hostname = !base.is_empty()
            && base.bytes().any(|b| b.is_ascii_alphabetic())
            && base
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-');
        return Err(if hostname {
            RewriteError::HostnameConnection { mline }
        } else {
            RewriteError::Malformed { line, what: "c=" }
        });
    }
    let suffix: Vec<&str> = parts.collect();
    if suffix.len() > 2
        || !suffix
            .iter()
            .all(|p| is_digits(p) && p.parse::<u32>().is_ok())
    {
        return Err(RewriteError::Malformed { line, what: "c=" });
    }
    Ok(format!("c={net} {addr_type} {address}"))
}

/// `b=<bwtype>:<bandwidth>` (RFC 8866 §5.8); a value that is not a plain number is dropped
/// (bandwidth is advisory).
fn bandwidth_line(value: &str) -> Option<String> {
    let (kind, amount) = value.split_once(':')?;
    let (kind, amount) = (kind.trim(), amount.trim());
    if kind.is_empty()
        || !kind
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return None;
    }
    if !is_digits(amount) || amount.parse::<u32>().is_err() {
        return None;
    }
    Some(format!("b={kind}:{amount}"))
}

/// `t=<start-time> <stop-time>` (RFC 8866 §5.9).
fn time_line(value: &str, line: usize) -> Result<String, RewriteError> {
    match fields(value).as_slice() {
        [start, stop]
            if start.parse::<u64>().is_ok()
                && stop.parse::<u64>().is_ok()
                && is_digits(start)
                && is_digits(stop) =>
        {
            Ok(format!("t={start} {stop}"))
        }
        _ => Err(RewriteError::Malformed { line, what: "t=" }),
    }
}

/// `m=<media> <port>[/<number of ports>] <proto> <fmt> ...` (RFC 8866 §5.14).
fn media_line(value: &str, line: usize) -> Result<String, RewriteError> {
    let parts = fields(value);
    let (kind, port, proto, formats) = match parts.as_slice() {
        [kind, port, proto, formats @ ..] => (*kind, *port, *proto, formats),
        _ => return Err(RewriteError::Malformed { line, what: "m=" }),
    };
    let (number, count) = match port.split_once('/') {
        Some((p, n)) => (p, Some(n)),
        None => (port, None),
    };
    if !is_digits(number) || number.parse::<u16>().is_err() {
        return Err(RewriteError::Malformed {
            line,
            what: "m= port",
        });
    }
    if let Some(n) = count {
        if !is_digits(n) || n.parse::<u8>().is_err() {
            return Err(RewriteError::Malformed {
                line,
                what: "m= port",
            });
        }
    }
    let formats = if formats.is_empty() {
        // A rejected stream written without a format ("m=audio 0 RTP/AVP"), seen from
        // some stacks; RFC 8866 needs one, and a rejected stream's formats do not matter.
        if number.parse::<u16>() == Ok(0) {
            "0".to_owned()
        } else {
            return Err(RewriteError::Malformed {
                line,
                what: "m= formats",
            });
        }
    } else {
        formats.join(" ")
    };
    Ok(format!("m={kind} {port} {proto} {formats}"))
}

/// `a=<name>[:<value>]` (RFC 8866 §5.13). Attributes `sdp-rs` types (`rtpmap`, `ptime`...)
/// are checked here so one bad advisory value does not fail the whole body: an unparsable
/// `rtpmap` is an error (the codec mapping matters), any other typed attribute is dropped.
fn attribute_line(value: &str, line: usize) -> Result<Option<String>, RewriteError> {
    let (name, attr_value) = match value.split_once(':') {
        Some((n, v)) => (n.trim(), Some(v)),
        None => (value.trim(), None),
    };
    if name.is_empty() {
        return Ok(None);
    }
    let text = match attr_value {
        Some(v) if name == "rtpmap" => format!("a=rtpmap:{}", fields(v).join(" ")),
        Some(v) => format!("a={name}:{v}"),
        None => format!("a={name}"),
    };
    const TYPED: [&str; 7] = [
        "rtpmap",
        "ptime",
        "maxptime",
        "framerate",
        "quality",
        "orient",
        "type",
    ];
    if TYPED.contains(&name) {
        // The tokenizer needs the line ending.
        let with_eol = format!("{text}\r\n");
        let valid = sdp_rs::lines::attribute::Tokenizer::<'a'>::tokenize(&with_eol)
            .ok()
            .filter(|(rest, _)| rest.is_empty())
            .is_some_and(|(_, t)| Attribute::try_from(t).is_ok());
        if !valid {
            if name == "rtpmap" {
                return Err(RewriteError::Malformed {
                    line,
                    what: "a=rtpmap",
                });
            }
            return Ok(None);
        }
    }
    Ok(Some(text))
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = "v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n";

    fn norm(s: &str) -> String {
        normalise(s.as_bytes()).unwrap()
    }

    #[test]
    fn canonical_body_is_unchanged() {
        let body = format!("{BASE}m=audio 4000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n");
        assert_eq!(norm(&body), body);
        assert!(parse(body.as_bytes()).is_ok());
    }

    #[test]
    fn trailing_spaces_and_lf_endings_are_normalised() {
        let body = "v=0 \no=- 1 1 IN IP4 192.0.2.1\ns=-\nc=IN IP4 192.0.2.1 \nt=0 0\n\
                    m=audio 4000 RTP/AVP 0 \na=rtpmap:0 PCMU/8000 \na=ptime:20 ";
        let sdp = parse(body.as_bytes()).unwrap();
        assert_eq!(sdp.media_descriptions.len(), 1);
        assert_eq!(sdp.media_descriptions[0].attributes.len(), 2);
    }

    #[test]
    fn out_of_order_lines_are_reordered_not_lost() {
        let body = format!(
            "{BASE}a=tool:x\r\nb=AS:64\r\nm=audio 4000 RTP/AVP 0\r\na=sendrecv\r\nb=AS:80\r\n\
             m=video 4002 RTP/AVP 96\r\n"
        );
        let sdp = parse(body.as_bytes()).unwrap();
        assert_eq!(sdp.media_descriptions.len(), 2);
        assert_eq!(sdp.bandwidths.len(), 1);
        assert_eq!(sdp.media_descriptions[0].bandwidths.len(), 1);
    }

    #[test]
    fn unknown_and_obsolete_lines_are_dropped() {
        let body =
            format!("{BASE}k=clear:secret\r\nm=audio 4000 RTP/AVP 0\r\ny=1234\r\na=sendrecv\r\n");
        let out = norm(&body);
        assert!(!out.contains("y="));
        assert!(!out.contains("k="));
        assert!(out.contains("a=sendrecv"));
    }

    #[test]
    fn hostname_origin_is_replaced_and_hostname_connection_refused() {
        let body =
            "v=0\r\no=- 1 1 IN IP4 phone.example.com\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n";
        assert!(norm(body).contains("o=- 1 1 IN IP4 0.0.0.0\r\n"));
        let body =
            "v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 pbx.example.com\r\nt=0 0\r\n";
        assert_eq!(
            normalise(body.as_bytes()),
            Err(RewriteError::HostnameConnection { mline: 0 })
        );
    }

    #[test]
    fn bad_bandwidth_and_ptime_are_dropped_bad_rtpmap_refused() {
        let body = format!("{BASE}m=audio 4000 RTP/AVP 0\r\nb=AS:64kbps\r\na=ptime:20ms\r\n");
        let out = norm(&body);
        assert!(!out.contains("b=") && !out.contains("ptime"), "{out}");
        let body = format!("{BASE}m=audio 4000 RTP/AVP 0\r\na=rtpmap:0 PCMU\r\n");
        assert!(matches!(
            normalise(body.as_bytes()),
            Err(RewriteError::Malformed {
                what: "a=rtpmap",
                ..
            })
        ));
    }

    #[test]
    fn missing_lines() {
        let no_t =
            "v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\nc=IN IP4 192.0.2.1\r\nm=audio 4000 RTP/AVP 0\r\n";
        let sdp = parse(no_t.as_bytes()).unwrap();
        assert_eq!(sdp.session_name.value(), "-");
        let no_o = "v=0\r\ns=-\r\nt=0 0\r\n";
        assert_eq!(
            normalise(no_o.as_bytes()),
            Err(RewriteError::Malformed {
                line: 0,
                what: "o="
            })
        );
        assert!(normalise(b"").is_err());
    }

    #[test]
    fn limits() {
        assert_eq!(
            normalise(&vec![b'a'; MAX_SDP_LEN + 1]),
            Err(RewriteError::TooLarge)
        );
        assert_eq!(normalise(&[0xff, 0xfe]), Err(RewriteError::NotUtf8));
        let many = format!("{BASE}{}", "m=audio 0 RTP/AVP 0\r\n".repeat(MAX_MEDIA + 1));
        assert!(matches!(
            normalise(many.as_bytes()),
            Err(RewriteError::TooManyMedia { .. })
        ));
        let nul = format!("{BASE}a=tool:x\0y\r\n");
        assert!(matches!(
            normalise(nul.as_bytes()),
            Err(RewriteError::Malformed { .. })
        ));
    }

    #[test]
    fn byte_order_mark_is_skipped() {
        let body = format!("\u{feff}{BASE}m=audio 4000 RTP/AVP 0\r\n");
        assert!(norm(&body).starts_with("v=0\r\n"));
    }

    #[test]
    fn session_line_inside_media_is_refused() {
        let body = format!("{BASE}m=audio 4000 RTP/AVP 0\r\nt=0 0\r\n");
        assert!(matches!(
            normalise(body.as_bytes()),
            Err(RewriteError::Malformed {
                what: "line order",
                ..
            })
        ));
    }

    #[test]
    fn rejected_media_without_format_gets_one() {
        let body = format!("{BASE}m=video 0 RTP/AVP\r\n");
        assert!(norm(&body).contains("m=video 0 RTP/AVP 0\r\n"));
    }
}
