//! Which PBX connection a response goes back on (RFC 3261 §18.2.2: a response to a request
//! that arrived over a connection-oriented transport is sent on that connection).
//!
//! The SIP core only calls `PbxLink::send(bytes)`; it does not know about connections. So the
//! TCP link remembers, for every request that arrives from the PBX, which connection it came
//! on, keyed by what the response to it necessarily repeats: the top Via's branch and sent-by,
//! Call-ID and CSeq (RFC 3261 §8.2.6.2 copies all of them into the response). When the core
//! sends a response, the same key finds the connection.
//!
//! An entry lives for the transaction's lifetime: at most [`RouteTable::ttl`] without a final
//! response (longer than an INVITE can ring, RFC 3261 Timer C is 3 minutes), and
//! [`RouteTable::linger`] after the first final response, so that a final response the core
//! resends for a retransmitted request still finds it. The table is bounded: when full, expired
//! entries go first, then the entry that would expire soonest. A missing entry is never an
//! error: the caller falls back to its outbound connection to the PBX.

use crate::sip::message::SipMessage;
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Identifies a PBX connection for the lifetime of the link.
pub type ConnId = u64;

/// What a request and every response to it share.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RouteKey {
    /// Top Via `branch` (empty for RFC 2543 peers without one).
    branch: String,
    /// Top Via sent-by, lower-cased `host[:port]`.
    sent_by: String,
    /// Call-ID as written (empty when missing).
    call_id: String,
    /// CSeq as written, whitespace runs collapsed and upper-cased (a malformed CSeq still
    /// routes the 400 that answers it).
    cseq: String,
}

impl RouteKey {
    /// The key of a request or a response; `None` without a parseable top Via (no response
    /// can be built for such a request, RFC 3261 §8.2.6.2).
    pub fn of(message: &SipMessage) -> Option<Self> {
        let via = message.top_via().ok()?;
        let cseq = message
            .header("CSeq")
            .unwrap_or_default()
            .split_ascii_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
            .to_ascii_uppercase();
        Some(Self {
            branch: via.branch().unwrap_or_default().to_owned(),
            sent_by: via.sent_by(),
            call_id: message.call_id().unwrap_or_default().trim().to_owned(),
            cseq,
        })
    }
}

#[derive(Debug, Clone, Copy)]
struct Route {
    conn: ConnId,
    expires: Instant,
    answered: bool,
}

/// Request key → the connection the request arrived on. Time is an input.
#[derive(Debug)]
pub struct RouteTable {
    routes: HashMap<RouteKey, Route>,
    capacity: usize,
    ttl: Duration,
    linger: Duration,
}

impl RouteTable {
    /// Default bound on remembered requests.
    pub const CAPACITY: usize = 8192;
    /// Default lifetime of an unanswered entry.
    pub const TTL: Duration = Duration::from_secs(300);
    /// Default lifetime after the first final response (64 × T1 with the default T1, the
    /// longest a UDP peer would retransmit its request, RFC 3261 §17.2).
    pub const LINGER: Duration = Duration::from_secs(32);

    /// An empty table.
    pub fn new(capacity: usize, ttl: Duration, linger: Duration) -> Self {
        Self {
            routes: HashMap::new(),
            capacity: capacity.max(1),
            ttl,
            linger,
        }
    }

    /// Lifetime of an unanswered entry.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Lifetime after the first final response.
    pub fn linger(&self) -> Duration {
        self.linger
    }

    /// Entries held (expired ones included until the next purge).
    pub fn len(&self) -> usize {
        self.routes.len()
    }

    /// Whether the table holds nothing.
    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }

    /// Remembers that a request with `key` arrived on `conn`. A retransmission (same key)
    /// moves the entry to the connection it arrived on last and renews it.
    pub fn remember(&mut self, key: RouteKey, conn: ConnId, now: Instant) {
        if !self.routes.contains_key(&key) && self.routes.len() >= self.capacity {
            self.purge(now);
            if self.routes.len() >= self.capacity {
                let soonest = self
                    .routes
                    .iter()
                    .min_by_key(|(_, r)| r.expires)
                    .map(|(k, _)| k.clone());
                if let Some(k) = soonest {
                    self.routes.remove(&k);
                }
            }
        }
        self.routes.insert(
            key,
            Route {
                conn,
                expires: now + self.ttl,
                answered: false,
            },
        );
    }

    /// The connection the response with `key` goes back on. A final response shortens the
    /// entry's life to [`RouteTable::linger`] (once: resending it does not extend it).
    pub fn route(&mut self, key: &RouteKey, is_final: bool, now: Instant) -> Option<ConnId> {
        let route = self.routes.get_mut(key)?;
        if route.expires <= now {
            self.routes.remove(key);
            return None;
        }
        if is_final && !route.answered {
            route.answered = true;
            route.expires = route.expires.min(now + self.linger);
        }
        Some(route.conn)
    }

    /// Forgets every entry of a connection that closed.
    pub fn forget_connection(&mut self, conn: ConnId) {
        self.routes.retain(|_, r| r.conn != conn);
    }

    /// Drops expired entries.
    pub fn purge(&mut self, now: Instant) {
        self.routes.retain(|_, r| r.expires > now);
    }
}

impl Default for RouteTable {
    fn default() -> Self {
        Self::new(Self::CAPACITY, Self::TTL, Self::LINGER)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(branch: &str, cseq: &str) -> SipMessage {
        let text = format!(
            "OPTIONS sip:tok@127.0.0.1:5080;transport=tcp SIP/2.0\r\n\
Via: SIP/2.0/TCP 127.0.0.1:5060;branch={branch};rport\r\n\
From: <sip:pbx@127.0.0.1>;tag=a\r\nTo: <sip:tok@127.0.0.1>\r\nCall-ID: c-1\r\n\
CSeq: {cseq}\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
        );
        SipMessage::parse(text.as_bytes()).unwrap()
    }

    fn response_to(req: &SipMessage, status: u16) -> SipMessage {
        let resp = crate::sip::response::response_to(req, status, Some("t"), None).unwrap();
        SipMessage::parse(&resp.to_bytes()).unwrap()
    }

    #[test]
    fn a_response_finds_the_connection_its_request_came_on() {
        let mut t = RouteTable::default();
        let now = Instant::now();
        let a = request("z9hG4bK-a", "1 OPTIONS");
        let b = request("z9hG4bK-b", "1 OPTIONS");
        t.remember(RouteKey::of(&a).unwrap(), 7, now);
        t.remember(RouteKey::of(&b).unwrap(), 9, now);
        let ra = RouteKey::of(&response_to(&a, 200)).unwrap();
        let rb = RouteKey::of(&response_to(&b, 200)).unwrap();
        assert_eq!(t.route(&ra, true, now), Some(7));
        assert_eq!(t.route(&rb, true, now), Some(9));
    }

    #[test]
    fn the_key_ignores_cseq_spacing_and_method_case_but_not_the_method() {
        let a = RouteKey::of(&request("z9hG4bK-a", "1 OPTIONS")).unwrap();
        let spaced = RouteKey::of(&request("z9hG4bK-a", "1   options")).unwrap();
        let cancel = RouteKey::of(&request("z9hG4bK-a", "1 CANCEL")).unwrap();
        assert_eq!(a, spaced);
        assert_ne!(a, cancel, "a CANCEL is its own transaction (RFC 3261 §9.2)");
    }

    #[test]
    fn a_malformed_cseq_still_routes_the_answer() {
        let mut t = RouteTable::default();
        let now = Instant::now();
        let req = request("z9hG4bK-a", "nonsense");
        t.remember(RouteKey::of(&req).unwrap(), 3, now);
        let resp = "SIP/2.0 400 Bad Request\r\n\
Via: SIP/2.0/TCP 127.0.0.1:5060;branch=z9hG4bK-a;rport\r\n\
From: <sip:pbx@127.0.0.1>;tag=a\r\nTo: <sip:tok@127.0.0.1>;tag=b\r\nCall-ID: c-1\r\n\
CSeq: nonsense\r\nContent-Length: 0\r\n\r\n";
        let resp = SipMessage::parse(resp.as_bytes()).unwrap();
        assert_eq!(t.route(&RouteKey::of(&resp).unwrap(), true, now), Some(3));
    }

    #[test]
    fn unanswered_entries_expire_after_the_ttl() {
        let mut t = RouteTable::new(16, Duration::from_secs(10), Duration::from_secs(2));
        let now = Instant::now();
        let k = RouteKey::of(&request("z9hG4bK-a", "1 OPTIONS")).unwrap();
        t.remember(k.clone(), 1, now);
        assert_eq!(t.route(&k, false, now + Duration::from_secs(9)), Some(1));
        assert_eq!(t.route(&k, false, now + Duration::from_secs(10)), None);
        assert!(t.is_empty());
    }

    #[test]
    fn a_final_response_shortens_the_entry_to_the_linger_once() {
        let mut t = RouteTable::new(16, Duration::from_secs(100), Duration::from_secs(2));
        let now = Instant::now();
        let k = RouteKey::of(&request("z9hG4bK-a", "1 OPTIONS")).unwrap();
        t.remember(k.clone(), 1, now);
        // A provisional response keeps the full lifetime.
        assert_eq!(t.route(&k, false, now + Duration::from_secs(50)), Some(1));
        assert_eq!(t.route(&k, true, now + Duration::from_secs(51)), Some(1));
        // Resending the final does not extend it.
        assert_eq!(t.route(&k, true, now + Duration::from_secs(52)), Some(1));
        assert_eq!(t.route(&k, true, now + Duration::from_secs(53)), None);
    }

    #[test]
    fn a_retransmission_on_another_connection_moves_the_entry() {
        let mut t = RouteTable::default();
        let now = Instant::now();
        let k = RouteKey::of(&request("z9hG4bK-a", "1 OPTIONS")).unwrap();
        t.remember(k.clone(), 1, now);
        t.remember(k.clone(), 2, now);
        assert_eq!(t.len(), 1);
        assert_eq!(t.route(&k, true, now), Some(2));
    }

    #[test]
    fn a_closed_connection_is_forgotten() {
        let mut t = RouteTable::default();
        let now = Instant::now();
        let a = RouteKey::of(&request("z9hG4bK-a", "1 OPTIONS")).unwrap();
        let b = RouteKey::of(&request("z9hG4bK-b", "1 OPTIONS")).unwrap();
        t.remember(a.clone(), 1, now);
        t.remember(b.clone(), 2, now);
        t.forget_connection(1);
        assert_eq!(t.route(&a, true, now), None);
        assert_eq!(t.route(&b, true, now), Some(2));
    }

    #[test]
    fn a_full_table_drops_expired_entries_first_then_the_soonest_to_expire() {
        let mut t = RouteTable::new(2, Duration::from_secs(10), Duration::from_secs(1));
        let now = Instant::now();
        let k = |b: &str| RouteKey::of(&request(b, "1 OPTIONS")).unwrap();
        t.remember(k("z9hG4bK-1"), 1, now);
        t.remember(k("z9hG4bK-2"), 2, now + Duration::from_secs(5));
        // Full: nothing expired yet at +6 s, so the one expiring soonest (1) goes.
        t.remember(k("z9hG4bK-3"), 3, now + Duration::from_secs(6));
        assert_eq!(t.len(), 2);
        let later = now + Duration::from_secs(7);
        assert_eq!(t.route(&k("z9hG4bK-1"), false, later), None);
        assert_eq!(t.route(&k("z9hG4bK-2"), false, later), Some(2));
        assert_eq!(t.route(&k("z9hG4bK-3"), false, later), Some(3));
        // Later, expired entries are purged before anything live is evicted.
        t.remember(k("z9hG4bK-4"), 4, now + Duration::from_secs(15));
        t.remember(k("z9hG4bK-5"), 5, now + Duration::from_secs(16));
        let at = now + Duration::from_secs(16);
        assert_eq!(t.route(&k("z9hG4bK-4"), false, at), Some(4));
        assert_eq!(t.route(&k("z9hG4bK-5"), false, at), Some(5));
        assert!(t.len() <= 2);
    }
}
