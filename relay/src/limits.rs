//! Limits on what viewers may ask of the relay. Each is a config key with a
//! sane default; a request beyond one is refused with a message naming the
//! key, and counted (`ponte_limit_refusals_total{limit="<key>"}`).

use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// Refusals by limit, for status and metrics.
#[derive(Debug, Default)]
pub struct Refusals {
    counts: Mutex<BTreeMap<&'static str, u64>>,
}

impl Refusals {
    /// Counts one refusal by `limit` (its config key).
    pub fn hit(&self, limit: &'static str) {
        *self.counts.lock().unwrap_or_else(|e| e.into_inner()).entry(limit).or_default() += 1;
    }

    /// Every limit hit so far, with its count.
    pub fn snapshot(&self) -> BTreeMap<String, u64> {
        let counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        counts.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect()
    }
}

/// WHEP offers per client address per minute (GCRA, burst of the whole minute).
pub struct OfferRate {
    limiter: DefaultKeyedRateLimiter<IpAddr>,
    per_minute: u32,
    checks: AtomicU64,
}

impl OfferRate {
    /// `None` when `per_minute` is 0 (no limit).
    pub fn new(per_minute: u32) -> Option<Self> {
        let n = NonZeroU32::new(per_minute)?;
        Some(Self {
            limiter: RateLimiter::keyed(Quota::per_minute(n)),
            per_minute,
            checks: AtomicU64::new(0),
        })
    }

    /// The configured rate.
    pub fn per_minute(&self) -> u32 {
        self.per_minute
    }

    /// True when `client` may make one more offer now.
    pub fn allow(&self, client: IpAddr) -> bool {
        // Forget idle clients now and then, so the table stays small.
        if self.checks.fetch_add(1, Ordering::Relaxed) % 1024 == 1023 {
            self.limiter.retain_recent();
        }
        self.limiter.check_key(&client).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_gets_its_minute_of_offers_and_others_are_not_affected() {
        let rate = OfferRate::new(5).unwrap();
        let a: IpAddr = [10, 0, 0, 1].into();
        let b: IpAddr = [10, 0, 0, 2].into();
        assert_eq!((0..8).filter(|_| rate.allow(a)).count(), 5);
        assert!(rate.allow(b), "another client has its own budget");
        assert!(OfferRate::new(0).is_none(), "0 means no limit");
        let refusals = Refusals::default();
        refusals.hit("whep.offers_per_minute");
        refusals.hit("whep.offers_per_minute");
        assert_eq!(refusals.snapshot().get("whep.offers_per_minute"), Some(&2));
    }
}
