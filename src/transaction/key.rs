//! Transaction matching keys (RFC 3261 §17.1.3 client side, §17.2.3 server side).
//!
//! Server side: a request matches a server transaction when the topmost Via has the same
//! branch (starting with the magic cookie `z9hG4bK`) and the same sent-by, and the method is
//! the same, except that an ACK matches the INVITE transaction. A CANCEL is its own
//! transaction; [`TransactionKey::cancelled_invite`] gives the key of the INVITE it cancels
//! (§9.2). Requests from RFC 2543 peers (no magic cookie) get a [`TransactionKey::Legacy`] key
//! built from the §17.2.3 fallback fields.
//!
//! Client side: a response matches a client transaction when the topmost Via branch and the
//! CSeq method equal those of the request (§17.1.3); the sent-by is ours and not compared.

use crate::sip::message::{MessageError, Method, SipMessage};

/// The RFC 3261 branch magic cookie (§8.1.1.7).
pub const MAGIC_COOKIE: &str = "z9hG4bK";

/// Why no key could be computed for a message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// The message has no (parsable) topmost Via, CSeq, Call-ID or From.
    #[error("cannot key message: {0}")]
    Message(#[from] MessageError),
    /// The topmost Via has no branch parameter.
    #[error("top Via has no branch")]
    MissingBranch,
    /// A client-side key needs an RFC 3261 branch; ours always have one, so a response
    /// without one cannot be a response to us.
    #[error("branch lacks the z9hG4bK magic cookie")]
    NoMagicCookie,
}

impl KeyError {
    /// Stable label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Message(e) => e.label(),
            Self::MissingBranch => "missing_branch",
            Self::NoMagicCookie => "no_magic_cookie",
        }
    }
}

/// Which side of a transaction a key is for; the two key spaces never mix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Side {
    /// We sent the request.
    Client,
    /// We received the request.
    Server,
}

/// A transaction key, usable in a hash map.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum TransactionKey {
    /// RFC 3261 key: branch (+ sent-by on the server side) + method (ACK folded into INVITE).
    Branch {
        /// Client or server transaction.
        side: Side,
        /// The full branch value, magic cookie included.
        branch: String,
        /// Lower-cased `host[:port]` of the topmost Via; `None` on the client side.
        sent_by: Option<String>,
        /// INVITE for INVITE and ACK, otherwise the request method.
        method: Method,
    },
    /// RFC 2543 fallback (§17.2.3, server side only): no magic cookie in the branch.
    /// The To tag is left out: the ACK for a non-2xx carries the tag of our response.
    Legacy {
        /// Request-URI as text.
        request_uri: String,
        /// From tag.
        from_tag: Option<String>,
        /// Call-ID.
        call_id: String,
        /// CSeq number.
        cseq: u32,
        /// Topmost Via value as text.
        top_via: String,
        /// INVITE for INVITE and ACK, otherwise the request method.
        method: Method,
    },
}

impl TransactionKey {
    /// Key of the server transaction an incoming request belongs to (§17.2.3).
    pub fn server(request: &SipMessage) -> Result<Self, KeyError> {
        let method = request.method().ok_or(MessageError::NotARequest)?;
        let method = fold_ack(method);
        let via = request.top_via()?;
        match via.branch() {
            Some(b) if b.starts_with(MAGIC_COOKIE) => Ok(Self::Branch {
                side: Side::Server,
                branch: b.to_owned(),
                sent_by: Some(via.sent_by()),
                method,
            }),
            _ => Ok(Self::Legacy {
                request_uri: request.request_uri()?.to_string(),
                from_tag: request.from_tag()?,
                call_id: request.call_id()?.to_owned(),
                cseq: request.cseq()?.seq,
                top_via: strip_branch(&via),
                method,
            }),
        }
    }

    /// Key of a client transaction for a request we send (its top Via is ours).
    pub fn client_for_request(request: &SipMessage) -> Result<Self, KeyError> {
        let method = request.method().ok_or(MessageError::NotARequest)?;
        Self::client(request, fold_ack(method))
    }

    /// Key of the client transaction a response belongs to (§17.1.3): top Via branch + CSeq
    /// method.
    pub fn client_for_response(response: &SipMessage) -> Result<Self, KeyError> {
        if response.is_request() {
            return Err(MessageError::NotAResponse.into());
        }
        let method = response.cseq()?.method;
        Self::client(response, fold_ack(method))
    }

    /// For a CANCEL's server key: the key of the INVITE server transaction it cancels (§9.2).
    /// `None` for any key that is not a CANCEL key.
    pub fn cancelled_invite(&self) -> Option<Self> {
        match self {
            Self::Branch {
                side,
                branch,
                sent_by,
                method: Method::Cancel,
            } => Some(Self::Branch {
                side: *side,
                branch: branch.clone(),
                sent_by: sent_by.clone(),
                method: Method::Invite,
            }),
            Self::Legacy {
                request_uri,
                from_tag,
                call_id,
                cseq,
                top_via,
                method: Method::Cancel,
            } => Some(Self::Legacy {
                request_uri: request_uri.clone(),
                from_tag: from_tag.clone(),
                call_id: call_id.clone(),
                cseq: *cseq,
                top_via: top_via.clone(),
                method: Method::Invite,
            }),
            _ => None,
        }
    }

    fn client(msg: &SipMessage, method: Method) -> Result<Self, KeyError> {
        let via = msg.top_via()?;
        let branch = via.branch().ok_or(KeyError::MissingBranch)?;
        if !branch.starts_with(MAGIC_COOKIE) {
            return Err(KeyError::NoMagicCookie);
        }
        Ok(Self::Branch {
            side: Side::Client,
            branch: branch.to_owned(),
            sent_by: None,
            method,
        })
    }
}

/// A new RFC 3261 branch from caller-supplied random bytes: `z9hG4bK` + 32 hex digits.
pub fn new_branch(random: &[u8; 16]) -> String {
    use std::fmt::Write as _;
    let mut s = String::with_capacity(MAGIC_COOKIE.len() + 32);
    s.push_str(MAGIC_COOKIE);
    for b in random {
        // Writing to a String cannot fail.
        let _ = write!(s, "{b:02x}");
    }
    s
}

fn fold_ack(method: Method) -> Method {
    if method == Method::Ack {
        Method::Invite
    } else {
        method
    }
}

fn strip_branch(via: &crate::sip::uri::Via) -> String {
    let mut v = via.clone();
    // An RFC 2543 branch may differ between INVITE and ACK; the rest of the Via must match.
    v.params.remove("branch");
    v.to_string().to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(start: &str, via: &str, cseq: &str) -> SipMessage {
        SipMessage::parse(
            format!(
                "{start}\r\nVia: {via}\r\nFrom: <sip:101@pbx>;tag=f\r\nTo: <sip:200@pbx>\r\n\
                 Call-ID: k1\r\nCSeq: {cseq}\r\nContent-Length: 0\r\n\r\n"
            )
            .as_bytes(),
        )
        .unwrap()
    }

    const VIA: &str = "SIP/2.0/UDP PBX.example:5060;branch=z9hG4bK-1";

    #[test]
    fn ack_matches_invite_server_transaction() {
        let invite = msg("INVITE sip:101@edge SIP/2.0", VIA, "1 INVITE");
        let ack = msg("ACK sip:101@edge SIP/2.0", VIA, "1 ACK");
        assert_eq!(
            TransactionKey::server(&invite).unwrap(),
            TransactionKey::server(&ack).unwrap()
        );
    }

    #[test]
    fn cancel_is_own_transaction_but_finds_invite() {
        let invite = msg("INVITE sip:101@edge SIP/2.0", VIA, "1 INVITE");
        let cancel = msg("CANCEL sip:101@edge SIP/2.0", VIA, "1 CANCEL");
        let ck = TransactionKey::server(&cancel).unwrap();
        let ik = TransactionKey::server(&invite).unwrap();
        assert_ne!(ck, ik);
        assert_eq!(ck.cancelled_invite(), Some(ik.clone()));
        assert_eq!(ik.cancelled_invite(), None);
    }

    #[test]
    fn sent_by_matters_and_is_case_insensitive() {
        let a = msg("OPTIONS sip:101@edge SIP/2.0", VIA, "1 OPTIONS");
        let b = msg(
            "OPTIONS sip:101@edge SIP/2.0",
            "SIP/2.0/UDP pbx.EXAMPLE:5060;branch=z9hG4bK-1",
            "1 OPTIONS",
        );
        let c = msg(
            "OPTIONS sip:101@edge SIP/2.0",
            "SIP/2.0/UDP other:5060;branch=z9hG4bK-1",
            "1 OPTIONS",
        );
        assert_eq!(
            TransactionKey::server(&a).unwrap(),
            TransactionKey::server(&b).unwrap()
        );
        assert_ne!(
            TransactionKey::server(&a).unwrap(),
            TransactionKey::server(&c).unwrap()
        );
    }

    #[test]
    fn method_distinguishes_same_branch() {
        let a = msg("OPTIONS sip:101@edge SIP/2.0", VIA, "1 OPTIONS");
        let b = msg("NOTIFY sip:101@edge SIP/2.0", VIA, "1 NOTIFY");
        assert_ne!(
            TransactionKey::server(&a).unwrap(),
            TransactionKey::server(&b).unwrap()
        );
    }

    #[test]
    fn response_matches_client_request() {
        let req = msg("INVITE sip:101@edge SIP/2.0", VIA, "1 INVITE");
        let resp = SipMessage::parse(
            format!(
                "SIP/2.0 180 Ringing\r\nVia: {VIA}\r\nFrom: <sip:101@pbx>;tag=f\r\n\
                 To: <sip:200@pbx>;tag=t\r\nCall-ID: k1\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n"
            )
            .as_bytes(),
        )
        .unwrap();
        assert_eq!(
            TransactionKey::client_for_request(&req).unwrap(),
            TransactionKey::client_for_response(&resp).unwrap()
        );
        // Client and server keys never collide.
        assert_ne!(
            TransactionKey::client_for_request(&req).unwrap(),
            TransactionKey::server(&req).unwrap()
        );
        assert_eq!(
            TransactionKey::client_for_response(&req)
                .unwrap_err()
                .label(),
            "not_a_response"
        );
    }

    #[test]
    fn legacy_key_without_cookie() {
        let invite = msg(
            "INVITE sip:101@edge SIP/2.0",
            "SIP/2.0/UDP old;branch=1234",
            "9 INVITE",
        );
        let ack = msg("ACK sip:101@edge SIP/2.0", "SIP/2.0/UDP old", "9 ACK");
        let ik = TransactionKey::server(&invite).unwrap();
        assert!(matches!(ik, TransactionKey::Legacy { .. }));
        assert_eq!(ik, TransactionKey::server(&ack).unwrap());
        let resp_no_cookie = msg(
            "OPTIONS sip:x@y SIP/2.0",
            "SIP/2.0/UDP old;branch=1",
            "1 OPTIONS",
        );
        assert_eq!(
            TransactionKey::client_for_request(&resp_no_cookie).unwrap_err(),
            KeyError::NoMagicCookie
        );
    }

    #[test]
    fn branch_generation() {
        let b = new_branch(&[0xab; 16]);
        assert!(b.starts_with(MAGIC_COOKIE));
        assert_eq!(b.len(), 7 + 32);
    }
}
