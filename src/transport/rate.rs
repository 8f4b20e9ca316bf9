//! Per-device request budget, for the SIP core (503) and the provisioning gateway (429): a token bucket per device certificate (its
//! MAC), or per connection where the certificate names no single device (shared vendor
//! certificates, anonymous phones). A phone that sends new requests faster than its budget
//! gets `503 Service Unavailable` with `Retry-After` (RFC 3261 §21.5.4, §20.33) instead of
//! keeping the single-task core and the PBX busy; everything else on the edge goes on.
//!
//! Keying by MAC means reconnecting does not refill the bucket. Pure: time is an input.
//!
//! Responses the edge composes itself for a device (400, 403, 481, 486, 501, the 503 of this
//! limit...) cost a token too ([`RequestRateLimiter::charge_reply`]): otherwise a device that
//! floods junk (malformed, foreign-dialog, unauthorized requests, none of which is ever
//! admitted) would get one response per junk message and keep the edge writing for it.
//! A response may take the bucket into debt, down to `-burst`; beyond that it is not sent
//! (the caller drops and counts it). So a flooding device gets at most `2 × burst` answers,
//! then silence, and must repay its debt (at `per_second`) before a new request is admitted.

use std::collections::HashMap;
use std::time::Instant;

use crate::identity::mac::MacAddress;
use crate::identity::Identity;
use crate::transport::flow::FlowId;

/// Whom a budget belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BudgetKey {
    /// A device certificate's MAC (globally unique), shared by all of its connections.
    Device(MacAddress),
    /// One connection (shared certificate or none).
    Flow(FlowId),
}

impl BudgetKey {
    /// The budget `identity` on `flow` draws from (no allocation: this runs per request).
    pub fn of(identity: &Identity, flow: FlowId) -> BudgetKey {
        match identity {
            Identity::Device { mac, .. } => BudgetKey::Device(*mac),
            Identity::Shared { .. } | Identity::Anonymous => BudgetKey::Flow(flow),
        }
    }
}

/// The configured budget: a sustained rate and a burst (bucket size).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateBudget {
    /// Requests per second refilled; 0 switches limiting off.
    pub per_second: u32,
    /// Requests a device may send at once (a phone with many BLF keys SUBSCRIBEs to all of
    /// them after boot).
    pub burst: u32,
}

/// What [`RequestRateLimiter::admit`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Within budget.
    Admitted,
    /// Over budget: answer 503 with `Retry-After: retry_after_secs`. `first` is true for the
    /// first refusal after an admitted request (log once per episode, not per request).
    Refused { retry_after_secs: u32, first: bool },
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    updated: Instant,
    refusing: bool,
}

/// Token buckets of all devices that sent requests recently.
#[derive(Debug)]
pub struct RequestRateLimiter {
    budget: RateBudget,
    buckets: HashMap<BudgetKey, Bucket>,
}

impl RequestRateLimiter {
    pub fn new(budget: RateBudget) -> Self {
        Self {
            budget,
            buckets: HashMap::new(),
        }
    }

    /// Whether limiting is on (`per_second > 0`).
    pub fn enabled(&self) -> bool {
        self.budget.per_second > 0
    }

    /// Takes one token from `key`'s bucket, if it has one at `now`.
    pub fn admit(&mut self, key: BudgetKey, now: Instant) -> Admission {
        if !self.enabled() {
            return Admission::Admitted;
        }
        let rate = f64::from(self.budget.per_second);
        let bucket = self.refilled(key, now);
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            bucket.refusing = false;
            return Admission::Admitted;
        }
        // Time until one token is back (debt included), rounded up to whole seconds
        // (Retry-After is in seconds); at least 1.
        let first = !bucket.refusing;
        bucket.refusing = true;
        let wait = ((1.0 - bucket.tokens) / rate).ceil().max(1.0);
        Admission::Refused {
            retry_after_secs: wait.min(f64::from(u32::MAX)) as u32,
            first,
        }
    }

    /// Charges one response the edge composed for `key` (not relayed from the PBX): true if
    /// it may be sent. A response may take the bucket into debt down to `-burst` (so a device
    /// over its request budget still learns why, up to `burst` times); beyond that it is
    /// refused and the caller drops it (RFC 3261 does not oblige a server to answer a flood).
    pub fn charge_reply(&mut self, key: BudgetKey, now: Instant) -> bool {
        if !self.enabled() {
            return true;
        }
        let burst = f64::from(self.budget.burst.max(1));
        let bucket = self.refilled(key, now);
        if bucket.tokens - 1.0 < -burst {
            return false;
        }
        bucket.tokens -= 1.0;
        true
    }

    /// Whole seconds (at least 1) until `key` has a token again at `now`: the Retry-After
    /// of a refusal that has already been charged.
    pub fn retry_after_secs(&self, key: BudgetKey, now: Instant) -> u32 {
        let rate = f64::from(self.budget.per_second.max(1));
        let burst = f64::from(self.budget.burst.max(1));
        let tokens = self.buckets.get(&key).map_or(burst, |b| {
            let elapsed = now.saturating_duration_since(b.updated).as_secs_f64();
            (b.tokens + elapsed * rate).min(burst)
        });
        let wait = ((1.0 - tokens) / rate).ceil().max(1.0);
        wait.min(f64::from(u32::MAX)) as u32
    }

    /// `key`'s bucket, refilled up to `now` (created full).
    fn refilled(&mut self, key: BudgetKey, now: Instant) -> &mut Bucket {
        let rate = f64::from(self.budget.per_second);
        let burst = f64::from(self.budget.burst.max(1));
        let bucket = self.buckets.entry(key).or_insert(Bucket {
            tokens: burst,
            updated: now,
            refusing: false,
        });
        let elapsed = now.saturating_duration_since(bucket.updated).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * rate).min(burst);
        bucket.updated = now;
        bucket
    }

    /// Forgets buckets that have refilled completely by `now` (they hold no information)
    /// and the buckets of closed connections. Keeps the table as small as the set of
    /// devices that were busy within the last `burst / rate` seconds.
    pub fn sweep(&mut self, now: Instant) {
        if !self.enabled() {
            self.buckets.clear();
            return;
        }
        let rate = f64::from(self.budget.per_second);
        let burst = f64::from(self.budget.burst.max(1));
        self.buckets.retain(|_, b| {
            let elapsed = now.saturating_duration_since(b.updated).as_secs_f64();
            b.tokens + elapsed * rate < burst
        });
    }

    /// A connection closed: its own bucket (if keyed by connection) goes.
    pub fn forget_flow(&mut self, flow: FlowId) {
        self.buckets.remove(&BudgetKey::Flow(flow));
    }

    /// Buckets held (for tests and the admin view).
    pub fn len(&self) -> usize {
        self.buckets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn limiter(per_second: u32, burst: u32) -> RequestRateLimiter {
        RequestRateLimiter::new(RateBudget { per_second, burst })
    }

    fn key(n: u8) -> BudgetKey {
        BudgetKey::Device(format!("00041300{n:04x}").parse().unwrap())
    }

    #[test]
    fn burst_then_refusal_then_refill() {
        let mut l = limiter(2, 5);
        let t0 = Instant::now();
        for _ in 0..5 {
            assert_eq!(l.admit(key(1), t0), Admission::Admitted);
        }
        assert_eq!(
            l.admit(key(1), t0),
            Admission::Refused {
                retry_after_secs: 1,
                first: true
            }
        );
        assert_eq!(
            l.admit(key(1), t0),
            Admission::Refused {
                retry_after_secs: 1,
                first: false
            }
        );
        // Half a second refills one token at 2/s.
        let t1 = t0 + Duration::from_millis(500);
        assert_eq!(l.admit(key(1), t1), Admission::Admitted);
        assert!(matches!(
            l.admit(key(1), t1),
            Admission::Refused { first: true, .. }
        ));
    }

    #[test]
    fn replies_go_into_debt_down_to_minus_burst_then_stop() {
        let mut l = limiter(2, 3);
        let t0 = Instant::now();
        // 3 tokens, then 3 more of debt: six replies, then none.
        for n in 0..6 {
            assert!(
                l.charge_reply(key(1), t0),
                "reply {n} within budget and debt"
            );
        }
        assert!(!l.charge_reply(key(1), t0));
        assert!(!l.charge_reply(key(1), t0));
        // The debt is repaid before a request is admitted: from -3 to 1 takes 2 s at 2/s.
        let t1 = t0 + Duration::from_millis(1500);
        assert!(matches!(
            l.admit(key(1), t1),
            Admission::Refused {
                retry_after_secs: 1,
                ..
            }
        ));
        let t2 = t0 + Duration::from_secs(2);
        assert_eq!(l.admit(key(1), t2), Admission::Admitted);
        // Another device is untouched.
        assert_eq!(l.admit(key(2), t0), Admission::Admitted);
    }

    #[test]
    fn retry_after_counts_the_debt() {
        let mut l = limiter(1, 4);
        let t0 = Instant::now();
        for _ in 0..8 {
            assert!(l.charge_reply(key(1), t0));
        }
        // At -4 tokens one token is 5 s away.
        assert_eq!(
            l.admit(key(1), t0),
            Admission::Refused {
                retry_after_secs: 5,
                first: true
            }
        );
    }

    #[test]
    fn retry_after_includes_the_charged_refusal() {
        let mut l = limiter(1, 2);
        let t0 = Instant::now();
        assert_eq!(l.admit(key(1), t0), Admission::Admitted);
        assert_eq!(l.admit(key(1), t0), Admission::Admitted);
        assert!(matches!(l.admit(key(1), t0), Admission::Refused { .. }));
        assert!(l.charge_reply(key(1), t0));
        // At -1 a token is 2 s away.
        assert_eq!(l.retry_after_secs(key(1), t0), 2);
        assert_eq!(l.retry_after_secs(key(2), t0), 1, "an unknown device");
    }

    #[test]
    fn replies_are_free_when_limiting_is_off() {
        let mut l = limiter(0, 0);
        let t0 = Instant::now();
        for _ in 0..1000 {
            assert!(l.charge_reply(key(1), t0));
        }
        assert!(l.is_empty());
    }

    proptest::proptest! {
        /// Whatever a device sends, whenever: the edge admits at most `burst + rate × T`
        /// requests and does at most `2 × burst + rate × T` work for it (admitted requests
        /// plus composed responses) over T seconds, and never answers without limit.
        #[test]
        fn work_per_device_is_bounded(
            rate in 1u32..20,
            burst in 1u32..50,
            // Mostly a flood (a few ms apart), sometimes a pause that refills.
            ops in proptest::collection::vec(
                (proptest::bool::ANY, proptest::prop_oneof![9 => 0u64..5, 1 => 0u64..3000]),
                1..600,
            ),
        ) {
            let mut l = limiter(rate, burst);
            let t0 = Instant::now();
            let mut now = t0;
            let (mut admitted, mut replies) = (0u64, 0u64);
            for (is_reply, gap_ms) in ops {
                now += Duration::from_millis(gap_ms);
                if is_reply {
                    replies += u64::from(l.charge_reply(key(1), now));
                } else if l.admit(key(1), now) == Admission::Admitted {
                    admitted += 1;
                }
                let t = now.duration_since(t0).as_secs_f64();
                let refill = f64::from(rate) * t;
                proptest::prop_assert!(admitted as f64 <= f64::from(burst) + refill + 1e-6);
                proptest::prop_assert!(
                    (admitted + replies) as f64 <= 2.0 * f64::from(burst) + refill + 1e-6
                );
            }
        }
    }

    #[test]
    fn devices_have_separate_budgets() {
        let mut l = limiter(1, 1);
        let t0 = Instant::now();
        assert_eq!(l.admit(key(1), t0), Admission::Admitted);
        assert!(matches!(l.admit(key(1), t0), Admission::Refused { .. }));
        assert_eq!(l.admit(key(2), t0), Admission::Admitted);
    }

    #[test]
    fn slow_rate_asks_for_a_longer_wait() {
        // 1 request per second, bucket of 1: after the token is gone the wait is one second;
        // a budget cannot go below 1 request per second, so Retry-After is at most a few s.
        let mut l = limiter(1, 1);
        let t0 = Instant::now();
        assert_eq!(l.admit(key(1), t0), Admission::Admitted);
        assert_eq!(
            l.admit(key(1), t0),
            Admission::Refused {
                retry_after_secs: 1,
                first: true
            }
        );
    }

    #[test]
    fn off_admits_everything_and_keeps_nothing() {
        let mut l = limiter(0, 0);
        let t0 = Instant::now();
        for _ in 0..10_000 {
            assert_eq!(l.admit(key(1), t0), Admission::Admitted);
        }
        assert!(l.is_empty());
    }

    #[test]
    fn sweep_drops_refilled_buckets_only() {
        let mut l = limiter(10, 20);
        let t0 = Instant::now();
        for _ in 0..20 {
            l.admit(key(1), t0);
        }
        l.admit(key(2), t0);
        assert_eq!(l.len(), 2);
        // After 0.5 s device 1 has 5 of 20 tokens, device 2 is full again (20 by 0.1 s).
        l.sweep(t0 + Duration::from_millis(500));
        assert_eq!(l.len(), 1);
        l.sweep(t0 + Duration::from_secs(3));
        assert!(l.is_empty());
    }

    #[test]
    fn flow_keys_are_forgotten_with_their_connection() {
        let mut l = limiter(10, 20);
        let t0 = Instant::now();
        let flow = FlowId(7);
        l.admit(BudgetKey::of(&Identity::Anonymous, flow), t0);
        assert_eq!(l.len(), 1);
        l.forget_flow(flow);
        assert!(l.is_empty());
    }

    #[test]
    fn device_key_spans_connections() {
        let id = Identity::Device {
            vendor: "snom".into(),
            mac: "000413000001".parse().unwrap(),
        };
        assert_eq!(BudgetKey::of(&id, FlowId(1)), BudgetKey::of(&id, FlowId(2)));
        let shared = Identity::Shared {
            vendor: "snom".into(),
        };
        assert_ne!(
            BudgetKey::of(&shared, FlowId(1)),
            BudgetKey::of(&shared, FlowId(2))
        );
    }
}
