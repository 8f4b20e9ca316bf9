//! Header edits a B2BUA leg makes: Via push/pop, Contact replacement, Record-Route/Route,
//! Max-Forwards, Expires, To tag, body. Each keeps the order of same-named headers
//! (RFC 3261 §7.3.1) and touches nothing else.

use rsip::message::HasHeaders;

use crate::sip::message::{make_header, name_value, MessageError, SipMessage};
use crate::sip::uri::{NameAddr, SipUri, Via};

/// Max-Forwards a proxy inserts when a request has none (RFC 3261 §16.6 step 3).
pub const DEFAULT_MAX_FORWARDS: u32 = 70;

impl SipMessage {
    /// Sets header `name` to `value`: replaces the first occurrence in place and removes the
    /// others, or appends it.
    pub fn set_header(&mut self, name: &str, value: &str) {
        self.replace_all(name, std::slice::from_ref(&value.to_owned()));
    }

    /// Appends a header line at the end.
    pub fn append_header(&mut self, name: &str, value: &str) {
        self.inner
            .headers_mut()
            .push(make_header(name, value.to_owned()));
    }

    /// Removes every header called `name`; returns how many were removed.
    pub fn remove_header(&mut self, name: &str) -> usize {
        let before = self.header_count();
        self.inner
            .headers_mut()
            .retain(|h| !name_value(h).0.eq_ignore_ascii_case(name));
        before - self.header_count()
    }

    /// Inserts `via` as the topmost Via (RFC 3261 §16.6 step 8).
    pub fn push_via(&mut self, via: &Via) {
        self.insert_first("Via", via.to_string());
    }

    /// Removes and returns the topmost Via (a response going back, RFC 3261 §16.7 step 3).
    pub fn pop_via(&mut self) -> Result<Via, MessageError> {
        let top = self.top_via()?;
        self.remove_nth("Via", 0);
        Ok(top)
    }

    /// Replaces every Via by `vias` (topmost first), where the first Via stood: a B2BUA leg's
    /// own Via set (RFC 3261 §8.1.1.7), kept at the top of the header section.
    pub fn set_vias(&mut self, vias: &[Via]) {
        let values: Vec<String> = vias.iter().map(ToString::to_string).collect();
        self.replace_all("Via", &values);
    }

    /// Replaces the topmost Via (e.g. to add `received`/`rport`, RFC 3261 §18.2.1, RFC 3581).
    pub fn set_top_via(&mut self, via: &Via) -> Result<(), MessageError> {
        self.top_via()?;
        self.remove_nth("Via", 0);
        self.insert_first("Via", via.to_string());
        Ok(())
    }

    /// Replaces every Contact by `contacts`, in order.
    pub fn set_contacts(&mut self, contacts: &[NameAddr]) {
        let values: Vec<String> = contacts.iter().map(ToString::to_string).collect();
        self.replace_all("Contact", &values);
    }

    /// Rewrites the URI of every Contact with `map`, keeping display names and header
    /// parameters (`expires`, `q`, `+sip.instance`, `reg-id`). A wildcard Contact is left alone.
    pub fn map_contact_uris(
        &mut self,
        mut map: impl FnMut(&SipUri) -> SipUri,
    ) -> Result<(), MessageError> {
        match self.contacts()? {
            crate::sip::message::ContactList::Wildcard => Ok(()),
            crate::sip::message::ContactList::Addrs(mut addrs) => {
                for a in &mut addrs {
                    a.uri = map(&a.uri);
                }
                self.set_contacts(&addrs);
                Ok(())
            }
        }
    }

    /// Replaces every Route by `routes`, in order.
    pub fn set_routes(&mut self, routes: &[NameAddr]) {
        let values: Vec<String> = routes.iter().map(ToString::to_string).collect();
        self.replace_all("Route", &values);
    }

    /// Removes the topmost Route if `is_us` says it names this edge (loose routing,
    /// RFC 3261 §16.4). Returns the removed value.
    pub fn pop_route_if(
        &mut self,
        is_us: impl FnOnce(&SipUri) -> bool,
    ) -> Result<Option<NameAddr>, MessageError> {
        let routes = self.routes()?;
        match routes.into_iter().next() {
            Some(top) if is_us(&top.uri) => {
                self.remove_nth("Route", 0);
                Ok(Some(top))
            }
            _ => Ok(None),
        }
    }

    /// Replaces every Record-Route by `record_routes`, in order.
    pub fn set_record_routes(&mut self, record_routes: &[NameAddr]) {
        let values: Vec<String> = record_routes.iter().map(ToString::to_string).collect();
        self.replace_all("Record-Route", &values);
    }

    /// Inserts `rr` as the topmost Record-Route (RFC 3261 §16.6 step 4).
    pub fn push_record_route(&mut self, rr: &NameAddr) {
        self.insert_first("Record-Route", rr.to_string());
    }

    /// Decrements Max-Forwards (RFC 3261 §16.6 step 3), or adds it with
    /// [`DEFAULT_MAX_FORWARDS`] when absent. Returns the new value, or
    /// [`MessageError::TooManyHops`] when it already was 0 (the caller answers 483, §16.3).
    pub fn decrement_max_forwards(&mut self) -> Result<u32, MessageError> {
        let next = match self.max_forwards()? {
            Some(current) => current.checked_sub(1).ok_or(MessageError::TooManyHops)?,
            None => DEFAULT_MAX_FORWARDS,
        };
        self.set_header("Max-Forwards", &next.to_string());
        Ok(next)
    }

    /// Records where a request really came from in its topmost Via (RFC 3261 §18.2.1:
    /// `received` when the source differs from sent-by; RFC 3581 §4: `rport=<port>` when the
    /// Via asked for it with a bare `rport`). `source_host` is the source IP as text (IPv6
    /// without brackets, as §18.2.1 writes `received`).
    pub fn set_received(
        &mut self,
        source_host: &str,
        source_port: u16,
    ) -> Result<(), MessageError> {
        let mut via = self.top_via()?;
        let sent_by_host = via.host.trim_start_matches('[').trim_end_matches(']');
        if !sent_by_host.eq_ignore_ascii_case(source_host) || via.params.contains("rport") {
            via.params.set("received", Some(source_host));
        }
        if via.params.contains("rport") {
            via.params.set("rport", Some(&source_port.to_string()));
        }
        self.set_top_via(&via)
    }

    /// The expiry a registrar applies to `contact` (RFC 3261 §10.2.1.1, §10.3 step 6): its
    /// `expires` parameter, else the Expires header, else `default`.
    pub fn effective_expires(&self, contact: &NameAddr, default: u32) -> Result<u32, MessageError> {
        if let Some(e) = contact.expires() {
            return Ok(e);
        }
        Ok(self.expires()?.unwrap_or(default))
    }

    /// Sets the Expires header.
    pub fn set_expires(&mut self, seconds: u32) {
        self.set_header("Expires", &seconds.to_string());
    }

    /// Adds a tag to To, or replaces it (RFC 3261 §8.2.6.2).
    pub fn set_to_tag(&mut self, tag: &str) -> Result<(), MessageError> {
        let mut to = self.to()?;
        to.params.set("tag", Some(tag));
        self.set_header("To", &to.to_string());
        Ok(())
    }

    /// Replaces the body and sets Content-Type (removed when `None`); Content-Length follows
    /// the body on serialisation.
    pub fn set_body(&mut self, body: Vec<u8>, content_type: Option<&str>) {
        *self.inner.body_mut() = body;
        match content_type {
            Some(ct) => self.set_header("Content-Type", ct),
            None => {
                self.remove_header("Content-Type");
            }
        }
        let len = self.body().len().to_string();
        self.set_header("Content-Length", &len);
    }

    /// Replaces all `name` headers by `values`, at the position of the first one (or at the end).
    fn replace_all(&mut self, name: &str, values: &[String]) {
        let headers = self.inner.headers_mut();
        let mut all: Vec<rsip::Header> = std::mem::take(headers).into();
        let pos = all
            .iter()
            .position(|h| name_value(h).0.eq_ignore_ascii_case(name));
        all.retain(|h| !name_value(h).0.eq_ignore_ascii_case(name));
        let at = pos.unwrap_or(all.len()).min(all.len());
        let new = values.iter().map(|v| make_header(name, v.clone()));
        all.splice(at..at, new);
        *headers = all.into();
    }

    /// Inserts a header before the first `name` header (or appends).
    fn insert_first(&mut self, name: &str, value: String) {
        let headers = self.inner.headers_mut();
        let mut all: Vec<rsip::Header> = std::mem::take(headers).into();
        let at = all
            .iter()
            .position(|h| name_value(h).0.eq_ignore_ascii_case(name))
            .unwrap_or(all.len());
        all.insert(at, make_header(name, value));
        *headers = all.into();
    }

    /// Removes the `n`th header called `name`.
    fn remove_nth(&mut self, name: &str, n: usize) {
        let headers = self.inner.headers_mut();
        let mut all: Vec<rsip::Header> = std::mem::take(headers).into();
        if let Some(i) = all
            .iter()
            .enumerate()
            .filter(|(_, h)| name_value(h).0.eq_ignore_ascii_case(name))
            .nth(n)
            .map(|(i, _)| i)
        {
            all.remove(i);
        }
        *headers = all.into();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::message::ContactList;

    const INVITE: &str = "INVITE sip:200@pbx.example.com SIP/2.0\r\n\
        Via: SIP/2.0/TLS 192.0.2.10:5061;branch=z9hG4bK-a\r\n\
        Via: SIP/2.0/UDP 192.0.2.99;branch=z9hG4bK-b\r\n\
        Route: <sip:edge.example.com;lr>\r\n\
        Route: <sip:pbx.example.com;lr>\r\n\
        From: <sip:101@pbx.example.com>;tag=f1\r\n\
        To: <sip:200@pbx.example.com>\r\n\
        Call-ID: c1\r\n\
        CSeq: 1 INVITE\r\n\
        Max-Forwards: 1\r\n\
        Contact: \"Desk\" <sip:101@192.0.2.10:5061;transport=tls>;expires=60;+sip.instance=\"<urn:uuid:x>\"\r\n\
        Content-Length: 0\r\n\r\n";

    fn invite() -> SipMessage {
        SipMessage::parse(INVITE.as_bytes()).unwrap()
    }

    #[test]
    fn push_and_pop_via() {
        let mut m = invite();
        let ours = Via::new("UDP", "198.51.100.1", Some(5080), "z9hG4bK-edge1", true);
        m.push_via(&ours);
        let vias = m.vias().unwrap();
        assert_eq!(vias.len(), 3);
        assert_eq!(vias[0].branch(), Some("z9hG4bK-edge1"));
        assert!(vias[0].params.contains("rport"));
        assert_eq!(vias[1].branch(), Some("z9hG4bK-a"));
        let popped = m.pop_via().unwrap();
        assert_eq!(popped, ours);
        assert_eq!(m.top_via().unwrap().branch(), Some("z9hG4bK-a"));
    }

    #[test]
    fn contact_uri_replaced_params_kept() {
        let mut m = invite();
        m.map_contact_uris(|_| SipUri::parse("sip:ft1abc@198.51.100.1:5080").unwrap())
            .unwrap();
        let ContactList::Addrs(c) = m.contacts().unwrap() else {
            panic!("addresses expected")
        };
        assert_eq!(
            c[0].to_string(),
            "\"Desk\" <sip:ft1abc@198.51.100.1:5080>;expires=60;+sip.instance=\"<urn:uuid:x>\""
        );
        assert_eq!(c[0].expires(), Some(60));
    }

    #[test]
    fn max_forwards_to_zero_then_483() {
        let mut m = invite();
        assert_eq!(m.decrement_max_forwards().unwrap(), 0);
        assert_eq!(m.max_forwards().unwrap(), Some(0));
        assert_eq!(m.decrement_max_forwards(), Err(MessageError::TooManyHops));
    }

    #[test]
    fn max_forwards_absent_gets_default() {
        let mut m = invite();
        m.remove_header("Max-Forwards");
        assert_eq!(m.decrement_max_forwards().unwrap(), DEFAULT_MAX_FORWARDS);
        assert_eq!(m.max_forwards().unwrap(), Some(DEFAULT_MAX_FORWARDS));
    }

    #[test]
    fn loose_route_popped_only_when_ours() {
        let mut m = invite();
        assert!(m
            .pop_route_if(|u| u.host == "pbx.example.com")
            .unwrap()
            .is_none());
        let popped = m.pop_route_if(|u| u.host == "edge.example.com").unwrap();
        assert!(popped.is_some());
        assert_eq!(m.routes().unwrap().len(), 1);
    }

    #[test]
    fn record_route_push_and_set() {
        let mut m = invite();
        let rr = NameAddr::parse("<sip:198.51.100.1:5080;lr>").unwrap();
        m.push_record_route(&rr);
        m.push_record_route(&NameAddr::parse("<sip:edge2;lr>").unwrap());
        let rrs = m.record_routes().unwrap();
        assert_eq!(rrs.len(), 2);
        assert_eq!(rrs[1], rr);
        m.set_record_routes(&[]);
        assert!(m.record_routes().unwrap().is_empty());
    }

    #[test]
    fn request_uri_replace_and_to_tag_and_expires() {
        let mut m = invite();
        let uri = SipUri::parse("sips:101@[2001:db8::10]:5061;transport=tls").unwrap();
        m.set_request_uri(&uri).unwrap();
        assert_eq!(m.request_uri().unwrap(), uri);
        m.set_to_tag("t9").unwrap();
        assert_eq!(m.to_tag().unwrap().as_deref(), Some("t9"));
        m.set_expires(120);
        assert_eq!(m.expires().unwrap(), Some(120));
        let again = SipMessage::parse(&m.to_bytes()).unwrap();
        assert_eq!(again, m);
    }

    #[test]
    fn received_and_rport() {
        let mut m = invite();
        m.set_received("192.0.2.10", 40212).unwrap();
        // Same host, no rport asked: nothing added (§18.2.1).
        assert_eq!(m.top_via().unwrap().params.find("received"), None);
        let mut v = m.top_via().unwrap();
        v.params.set("rport", None);
        m.set_top_via(&v).unwrap();
        m.set_received("203.0.113.7", 40999).unwrap();
        let v = m.top_via().unwrap();
        assert_eq!(v.params.value("received"), Some("203.0.113.7"));
        assert_eq!(v.params.value("rport"), Some("40999"));
        assert_eq!(m.vias().unwrap().len(), 2);
    }

    #[test]
    fn expiry_precedence() {
        let m = invite();
        let ContactList::Addrs(c) = m.contacts().unwrap() else {
            panic!("addresses expected")
        };
        assert_eq!(m.effective_expires(&c[0], 3600).unwrap(), 60);
        let bare = NameAddr::parse("<sip:101@192.0.2.10>").unwrap();
        assert_eq!(m.effective_expires(&bare, 3600).unwrap(), 3600);
        let mut m2 = m.clone();
        m2.set_expires(0);
        assert_eq!(m2.effective_expires(&bare, 3600).unwrap(), 0);
    }

    #[test]
    fn set_body_updates_length() {
        let mut m = invite();
        m.set_body(b"v=0\r\n".to_vec(), Some("application/sdp"));
        let bytes = m.to_bytes();
        let text = String::from_utf8(bytes).unwrap();
        assert!(text.contains("Content-Length: 5\r\n"));
        assert!(text.contains("Content-Type: application/sdp\r\n"));
        assert!(text.ends_with("\r\n\r\nv=0\r\n"));
    }
}
