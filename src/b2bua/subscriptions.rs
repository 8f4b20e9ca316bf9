//! PURE: the subscription dialogs the edge relays (RFC 6665 SUBSCRIBE/NOTIFY: BLF, MWI,
//! presence; RFC 3515 REFER's implicit subscription), so that an in-dialog request from a
//! phone (a re-SUBSCRIBE refreshing a BLF key, a NOTIFY) is authorized by a dialog the edge
//! saw being created for that device, never by the user it names (`authorize`).
//!
//! A subscription dialog is created by a 2xx to SUBSCRIBE or REFER, or by the first NOTIFY,
//! which may arrive before that 2xx (RFC 6665 §4.1.2.4). It ends with a NOTIFY whose
//! Subscription-State is `terminated` (§4.1.3), or when it expires unrefreshed. The owner is
//! the connection it was set up on and that connection's identity. Time is an input.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::transport::flow::FlowId;

/// Subscription dialogs one connection may hold: a phone with a full BLF expansion module
/// watches a few hundred extensions. Beyond it no new dialog is recorded (its refreshes get
/// 481 and the phone subscribes anew, RFC 6665 §4.1.2.2).
pub const MAX_SUBSCRIPTIONS_PER_FLOW: usize = 1024;

/// Longest a subscription dialog is kept without a refresh, whatever Expires says.
pub const MAX_LIFETIME: Duration = Duration::from_secs(24 * 3600);

/// The owner of a subscription dialog.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscription {
    /// The connection it was set up on.
    pub flow: FlowId,
    /// That connection's identity, as displayed.
    pub identity: String,
    expires_at: Instant,
}

/// (Call-ID, lower tag, higher tag): the phone's own tag is the From tag of its requests and
/// the To tag of the PBX's, so the key does not depend on the direction.
type Key = (String, String, String);

fn key(call_id: &str, a: &str, b: &str) -> Key {
    let (x, y) = if a <= b { (a, b) } else { (b, a) };
    (call_id.to_owned(), x.to_owned(), y.to_owned())
}

/// The table.
#[derive(Debug, Default)]
pub struct Subscriptions {
    dialogs: HashMap<Key, Subscription>,
    per_flow: HashMap<FlowId, usize>,
}

impl Subscriptions {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records (or refreshes) the dialog `call_id` with tags `tag_a`/`tag_b` for `flow`,
    /// valid for `lifetime` (capped at [`MAX_LIFETIME`]). A refresh keeps the first owner.
    /// Returns false when the connection already holds [`MAX_SUBSCRIPTIONS_PER_FLOW`].
    pub fn learn(
        &mut self,
        call_id: &str,
        (tag_a, tag_b): (&str, &str),
        flow: FlowId,
        identity: &str,
        now: Instant,
        lifetime: Duration,
    ) -> bool {
        let expires_at = now + lifetime.min(MAX_LIFETIME);
        let k = key(call_id, tag_a, tag_b);
        if let Some(s) = self.dialogs.get_mut(&k) {
            s.expires_at = s.expires_at.max(expires_at);
            return true;
        }
        let count = self.per_flow.entry(flow).or_insert(0);
        if *count >= MAX_SUBSCRIPTIONS_PER_FLOW {
            return false;
        }
        *count += 1;
        self.dialogs.insert(
            k,
            Subscription {
                flow,
                identity: identity.to_owned(),
                expires_at,
            },
        );
        true
    }

    /// The dialog with these tags (in either order), if known and not expired at `now`.
    pub fn get(
        &self,
        call_id: &str,
        tag_a: &str,
        tag_b: &str,
        now: Instant,
    ) -> Option<&Subscription> {
        self.dialogs
            .get(&key(call_id, tag_a, tag_b))
            .filter(|s| s.expires_at > now)
    }

    /// Forgets a dialog (its subscription terminated).
    pub fn forget(&mut self, call_id: &str, tag_a: &str, tag_b: &str) {
        if let Some(s) = self.dialogs.remove(&key(call_id, tag_a, tag_b)) {
            self.uncount(s.flow);
        }
    }

    /// Drops the expired dialogs.
    pub fn sweep(&mut self, now: Instant) {
        let mut gone = Vec::new();
        self.dialogs.retain(|_, s| {
            let keep = s.expires_at > now;
            if !keep {
                gone.push(s.flow);
            }
            keep
        });
        for flow in gone {
            self.uncount(flow);
        }
    }

    /// Dialogs recorded.
    pub fn len(&self) -> usize {
        self.dialogs.len()
    }

    /// Whether none is recorded.
    pub fn is_empty(&self) -> bool {
        self.dialogs.is_empty()
    }

    fn uncount(&mut self, flow: FlowId) {
        if let Some(n) = self.per_flow.get_mut(&flow) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.per_flow.remove(&flow);
            }
        }
    }
}

/// How long a subscription dialog lives after a message that created or refreshed it: the
/// `expires` of a Subscription-State (RFC 6665 §8.2.3) or else the Expires header
/// (§4.2.1.1), else an hour (the common BLF default), plus `slack` for a refresh in flight.
pub fn lifetime(
    subscription_state: Option<&str>,
    expires: Option<u32>,
    slack: Duration,
) -> Duration {
    let from_state = subscription_state.and_then(|s| {
        s.split(';').skip(1).find_map(|p| {
            let (n, v) = p.split_once('=')?;
            n.trim()
                .eq_ignore_ascii_case("expires")
                .then(|| v.trim().parse::<u32>().ok())
                .flatten()
        })
    });
    Duration::from_secs(u64::from(from_state.or(expires).unwrap_or(3600))) + slack
}

/// Whether a Subscription-State value says the subscription is over (RFC 6665 §4.1.3).
pub fn terminated(subscription_state: Option<&str>) -> bool {
    subscription_state.is_some_and(|s| {
        s.split(';')
            .next()
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("terminated"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn learn_get_forget_expire() {
        let t0 = Instant::now();
        let mut s = Subscriptions::new();
        assert!(s.learn(
            "c",
            ("phone", "pbx"),
            FlowId(1),
            "dev",
            t0,
            Duration::from_secs(60)
        ));
        assert_eq!(
            s.get("c", "pbx", "phone", t0).map(|d| d.flow),
            Some(FlowId(1))
        );
        assert!(s.get("c", "pbx", "other", t0).is_none());
        assert!(s.get("d", "pbx", "phone", t0).is_none());
        assert!(s
            .get("c", "pbx", "phone", t0 + Duration::from_secs(61))
            .is_none());
        // A refresh extends and keeps the first owner.
        assert!(s.learn(
            "c",
            ("pbx", "phone"),
            FlowId(2),
            "other",
            t0,
            Duration::from_secs(600)
        ));
        let d = s
            .get("c", "phone", "pbx", t0 + Duration::from_secs(300))
            .unwrap();
        assert_eq!((d.flow, d.identity.as_str()), (FlowId(1), "dev"));
        s.sweep(t0 + Duration::from_secs(601));
        assert!(s.is_empty());
        assert!(s.learn(
            "c",
            ("a", "b"),
            FlowId(1),
            "dev",
            t0,
            Duration::from_secs(60)
        ));
        s.forget("c", "b", "a");
        assert!(s.is_empty());
        assert!(s.per_flow.is_empty());
    }

    #[test]
    fn one_connection_has_a_cap() {
        let t0 = Instant::now();
        let mut s = Subscriptions::new();
        for i in 0..MAX_SUBSCRIPTIONS_PER_FLOW {
            assert!(s.learn(
                &i.to_string(),
                ("a", "b"),
                FlowId(1),
                "d",
                t0,
                Duration::from_secs(60)
            ));
        }
        assert!(!s.learn(
            "more",
            ("a", "b"),
            FlowId(1),
            "d",
            t0,
            Duration::from_secs(60)
        ));
        assert!(s.learn(
            "more",
            ("a", "b"),
            FlowId(2),
            "e",
            t0,
            Duration::from_secs(60)
        ));
        s.forget("0", "a", "b");
        assert!(s.learn(
            "more2",
            ("a", "b"),
            FlowId(1),
            "d",
            t0,
            Duration::from_secs(60)
        ));
    }

    #[test]
    fn lifetime_and_termination() {
        let slack = Duration::from_secs(32);
        assert_eq!(
            lifetime(Some("active;expires=600"), Some(3600), slack),
            Duration::from_secs(632)
        );
        assert_eq!(
            lifetime(Some("active"), Some(300), slack),
            Duration::from_secs(332)
        );
        assert_eq!(lifetime(None, None, slack), Duration::from_secs(3632));
        assert!(terminated(Some("terminated;reason=noresource")));
        assert!(!terminated(Some("active;expires=10")));
        assert!(!terminated(None));
    }
}
