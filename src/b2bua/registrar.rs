//! The edge's own binding table: which phone Contact (on which flow) each edge Contact stands
//! for. Registrations relayed to the PBX create `Registered` bindings (the location table:
//! AOR user → live flows, newest first); other requests that carry a Contact (SUBSCRIBE...)
//! create `Dialog` bindings so in-dialog requests from the PBX find their way back.
//!
//! Owned by the SIP core task alone: no locks. Time is an input.

use crate::sip::uri::SipUri;
use crate::transport::flow::FlowId;
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Dialog bindings kept per flow; the oldest is forgotten beyond this.
pub const MAX_DIALOG_BINDINGS_PER_FLOW: usize = 64;
/// Registration bindings (pending or confirmed) one connection may hold: a 16-line desk
/// phone registers 16 Contacts; a hostile client must not grow the table without bound by
/// sending REGISTERs with ever new Contacts.
pub const MAX_REGISTER_BINDINGS_PER_FLOW: usize = 32;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BindingKind {
    /// Sent to the PBX in a REGISTER, no 2xx yet.
    Pending,
    /// Confirmed by the PBX's 2xx until `expires_at`.
    Registered,
    /// A Contact of a non-REGISTER request; lives as long as its flow.
    Dialog,
}

#[derive(Debug, Clone)]
pub struct Binding {
    pub id: u64,
    pub flow: FlowId,
    /// The phone's own Contact URI (what the Request-URI is restored to).
    pub contact: SipUri,
    /// The AOR user (REGISTER To user; From user for dialog bindings).
    pub aor: String,
    /// Who registered it (identity as displayed: MAC, shared, anonymous).
    pub identity: String,
    pub kind: BindingKind,
    pub expires_at: Option<Instant>,
    /// Monotonic sequence: higher = more recently (re-)registered.
    pub seq: u64,
}

#[derive(Debug, Default)]
pub struct Registrar {
    bindings: HashMap<u64, Binding>,
    by_flow_contact: HashMap<(FlowId, String), u64>,
    next_id: u64,
    next_seq: u64,
}

impl Registrar {
    pub fn new() -> Self {
        Self {
            next_id: 1,
            ..Self::default()
        }
    }

    /// The binding for `contact` on `flow`, created if new. The same (flow, contact) always
    /// maps to the same id, so a re-REGISTER presents the PBX with the same edge Contact and
    /// refreshes its binding instead of adding one (RFC 3261 §10.3 step 7).
    pub fn binding_for(
        &mut self,
        flow: FlowId,
        contact: &SipUri,
        aor: &str,
        identity: &str,
        dialog: bool,
    ) -> u64 {
        let key = (flow, contact.to_string());
        if let Some(id) = self.by_flow_contact.get(&key) {
            if let Some(b) = self.bindings.get_mut(id) {
                if !dialog && b.kind == BindingKind::Dialog {
                    b.kind = BindingKind::Pending;
                }
                b.aor = aor.to_owned();
                return *id;
            }
        }
        if dialog {
            self.evict_dialogs(flow);
        }
        let id = self.next_id;
        self.next_id += 1;
        self.next_seq += 1;
        self.bindings.insert(
            id,
            Binding {
                id,
                flow,
                contact: contact.clone(),
                aor: aor.to_owned(),
                identity: identity.to_owned(),
                kind: if dialog {
                    BindingKind::Dialog
                } else {
                    BindingKind::Pending
                },
                expires_at: None,
                seq: self.next_seq,
            },
        );
        self.by_flow_contact.insert(key, id);
        id
    }

    /// How many registration bindings `flow` would hold once `contacts` are bound by a
    /// REGISTER: the ones it holds plus the contacts not yet registered on it.
    pub fn register_bindings_after(&self, flow: FlowId, contacts: &[&SipUri]) -> usize {
        let held = self
            .bindings
            .values()
            .filter(|b| b.flow == flow && b.kind != BindingKind::Dialog)
            .count();
        let mut new: Vec<String> = contacts
            .iter()
            .map(|c| c.to_string())
            .filter(|key| {
                self.by_flow_contact
                    .get(&(flow, key.clone()))
                    .and_then(|id| self.bindings.get(id))
                    .is_none_or(|b| b.kind == BindingKind::Dialog)
            })
            .collect();
        new.sort_unstable();
        new.dedup();
        held + new.len()
    }

    fn evict_dialogs(&mut self, flow: FlowId) {
        let mut dialogs: Vec<(u64, u64)> = self
            .bindings
            .values()
            .filter(|b| b.flow == flow && b.kind == BindingKind::Dialog)
            .map(|b| (b.seq, b.id))
            .collect();
        if dialogs.len() < MAX_DIALOG_BINDINGS_PER_FLOW {
            return;
        }
        dialogs.sort_unstable();
        let excess = dialogs.len() + 1 - MAX_DIALOG_BINDINGS_PER_FLOW;
        for (_, id) in dialogs.into_iter().take(excess) {
            self.remove(id);
        }
    }

    /// The PBX confirmed binding `id` for `expires` seconds (0 = removed).
    pub fn confirm(&mut self, id: u64, expires: u32, now: Instant) {
        if expires == 0 {
            self.remove(id);
            return;
        }
        self.next_seq += 1;
        let seq = self.next_seq;
        if let Some(b) = self.bindings.get_mut(&id) {
            b.kind = BindingKind::Registered;
            b.expires_at = Some(now + Duration::from_secs(u64::from(expires)));
            b.seq = seq;
        }
    }

    /// A REGISTER failed or its 2xx did not list these: forget those never confirmed, and
    /// remove confirmed ones the PBX no longer lists.
    pub fn release(&mut self, id: u64) {
        if let Some(b) = self.bindings.get(&id) {
            if b.kind != BindingKind::Dialog {
                self.remove(id);
            }
        }
    }

    /// Drops `Pending` bindings among `ids` (the REGISTER got a non-2xx answer).
    pub fn drop_pending(&mut self, ids: &[u64]) {
        for id in ids {
            if self.bindings.get(id).map(|b| b.kind) == Some(BindingKind::Pending) {
                self.remove(*id);
            }
        }
    }

    /// The REGISTER was challenged (401/407): keep `Pending` bindings among `ids` until
    /// `until`, so the authenticated retry maps to the same edge Contact; the sweep drops
    /// them if it never comes.
    pub fn hold_pending(&mut self, ids: &[u64], until: Instant) {
        for id in ids {
            if let Some(b) = self.bindings.get_mut(id) {
                if b.kind == BindingKind::Pending {
                    b.expires_at = Some(until);
                }
            }
        }
    }

    /// `Contact: *` with Expires 0 succeeded: every registration of `aor` is gone.
    pub fn remove_aor(&mut self, aor: &str) -> usize {
        let ids: Vec<u64> = self
            .bindings
            .values()
            .filter(|b| b.aor == aor && b.kind != BindingKind::Dialog)
            .map(|b| b.id)
            .collect();
        for id in &ids {
            self.remove(*id);
        }
        ids.len()
    }

    pub fn remove(&mut self, id: u64) {
        if let Some(b) = self.bindings.remove(&id) {
            self.by_flow_contact
                .remove(&(b.flow, b.contact.to_string()));
        }
    }

    /// The flow closed: every binding on it is gone.
    pub fn remove_flow(&mut self, flow: FlowId) -> usize {
        let ids: Vec<u64> = self
            .bindings
            .values()
            .filter(|b| b.flow == flow)
            .map(|b| b.id)
            .collect();
        for id in &ids {
            self.remove(*id);
        }
        ids.len()
    }

    /// Removes registrations whose expiry has passed.
    pub fn sweep(&mut self, now: Instant) -> usize {
        let ids: Vec<u64> = self
            .bindings
            .values()
            .filter(|b| b.expires_at.is_some_and(|t| t <= now))
            .map(|b| b.id)
            .collect();
        for id in &ids {
            self.remove(*id);
        }
        ids.len()
    }

    pub fn get(&self, id: u64) -> Option<&Binding> {
        self.bindings.get(&id)
    }

    /// The newest live registration of `aor` (user part, compared case-sensitively as RFC
    /// 3261 §19.1.4 compares user parts).
    pub fn lookup_aor(&self, aor: &str, now: Instant) -> Option<&Binding> {
        self.bindings
            .values()
            .filter(|b| {
                b.kind == BindingKind::Registered
                    && b.aor == aor
                    && b.expires_at.is_some_and(|t| t > now)
            })
            .max_by_key(|b| b.seq)
    }

    pub fn registered_count(&self) -> usize {
        self.bindings
            .values()
            .filter(|b| b.kind == BindingKind::Registered)
            .count()
    }

    pub fn registrations(&self) -> impl Iterator<Item = &Binding> {
        self.bindings
            .values()
            .filter(|b| b.kind == BindingKind::Registered)
    }

    pub fn len(&self) -> usize {
        self.bindings.len()
    }

    pub fn is_empty(&self) -> bool {
        self.bindings.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uri(s: &str) -> SipUri {
        SipUri::parse(s).unwrap()
    }

    #[test]
    fn register_bindings_after_counts_only_new_contacts() {
        let mut r = Registrar::new();
        let a = uri("sip:101@192.0.2.5:5062;transport=tls");
        let b = uri("sip:102@192.0.2.5:5062;transport=tls");
        let d = uri("sip:103@192.0.2.5:5062;transport=tls");
        assert_eq!(r.register_bindings_after(FlowId(1), &[&a, &a]), 1);
        r.binding_for(FlowId(1), &a, "101", "m", false);
        r.binding_for(FlowId(1), &d, "103", "m", true);
        // `a` is held; `b` is new; `d` is only a dialog binding, so registering it is new.
        assert_eq!(r.register_bindings_after(FlowId(1), &[&a]), 1);
        assert_eq!(r.register_bindings_after(FlowId(1), &[&a, &b, &d]), 3);
        // Another connection holds nothing yet.
        assert_eq!(r.register_bindings_after(FlowId(2), &[&a]), 1);
    }

    #[test]
    fn same_flow_and_contact_keep_their_id() {
        let mut r = Registrar::new();
        let c = uri("sip:101@192.0.2.5:5062;transport=tls");
        let a = r.binding_for(FlowId(1), &c, "101", "m", false);
        assert_eq!(r.binding_for(FlowId(1), &c, "101", "m", false), a);
        assert_ne!(r.binding_for(FlowId(2), &c, "101", "m", false), a);
    }

    #[test]
    fn lookup_returns_newest_live_registration() {
        let mut r = Registrar::new();
        let t0 = Instant::now();
        let a = r.binding_for(FlowId(1), &uri("sip:101@192.0.2.5"), "101", "m", false);
        let b = r.binding_for(FlowId(2), &uri("sip:101@192.0.2.6"), "101", "m", false);
        assert!(
            r.lookup_aor("101", t0).is_none(),
            "pending is not registered"
        );
        r.confirm(a, 60, t0);
        r.confirm(b, 60, t0);
        assert_eq!(r.lookup_aor("101", t0).unwrap().id, b);
        r.confirm(a, 60, t0);
        assert_eq!(
            r.lookup_aor("101", t0).unwrap().id,
            a,
            "refresh makes it newest"
        );
        assert_eq!(r.registered_count(), 2);
        assert_eq!(r.sweep(t0 + Duration::from_secs(61)), 2);
        assert!(r.lookup_aor("101", t0).is_none());
    }

    #[test]
    fn expires_zero_flow_loss_and_wildcard_remove() {
        let mut r = Registrar::new();
        let t0 = Instant::now();
        let a = r.binding_for(FlowId(1), &uri("sip:101@192.0.2.5"), "101", "m", false);
        r.confirm(a, 0, t0);
        assert!(r.get(a).is_none());
        let a = r.binding_for(FlowId(1), &uri("sip:101@192.0.2.5"), "101", "m", false);
        r.confirm(a, 60, t0);
        let d = r.binding_for(FlowId(1), &uri("sip:101@192.0.2.5:7"), "101", "m", true);
        assert_eq!(r.remove_aor("101"), 1);
        assert!(
            r.get(d).is_some(),
            "dialog bindings survive de-registration"
        );
        assert_eq!(r.remove_flow(FlowId(1)), 1);
        assert!(r.is_empty());
    }

    #[test]
    fn pending_dropped_on_failure_dialogs_bounded() {
        let mut r = Registrar::new();
        let a = r.binding_for(FlowId(1), &uri("sip:101@192.0.2.5"), "101", "m", false);
        r.drop_pending(&[a]);
        assert!(r.get(a).is_none());
        for i in 0..(MAX_DIALOG_BINDINGS_PER_FLOW + 10) {
            r.binding_for(
                FlowId(1),
                &uri(&format!("sip:101@192.0.2.5:{}", 1000 + i)),
                "101",
                "m",
                true,
            );
        }
        assert_eq!(r.len(), MAX_DIALOG_BINDINGS_PER_FLOW);
    }
}
