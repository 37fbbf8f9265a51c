//! The rate limit both nodes put in front of their password checks: a
//! generic cell rate algorithm (GCRA) per key, `burst` attempts at once, then
//! one per `interval`, remembering at most `max_keys` keys (sans-IO: time is
//! passed in). The relay keys it by address and by IPv6 /64
//! (`relay/src/auth/throttle.rs`), the agent by address.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::{Duration, Instant};

/// One GCRA per key, bounded in memory.
#[derive(Debug)]
pub struct Gcra<K> {
    /// Per key: when its charged attempts will have drained.
    drained: HashMap<K, Instant>,
    burst: u32,
    interval: Duration,
    max_keys: usize,
}

impl<K: Hash + Eq + Copy> Gcra<K> {
    /// `burst` attempts at once (at least one), then one per `interval`.
    pub fn new(burst: u32, interval: Duration, max_keys: usize) -> Self {
        Self { drained: HashMap::new(), burst: burst.max(1), interval, max_keys: max_keys.max(1) }
    }

    /// When `key`'s attempts drain now, or how long it must wait.
    pub fn check(&self, key: K, now: Instant) -> Result<Instant, Duration> {
        let tolerance = self.interval.saturating_mul(self.burst - 1);
        let drained = self.drained.get(&key).copied().unwrap_or(now).max(now);
        let allowed_at = drained.checked_sub(tolerance).unwrap_or(now);
        if allowed_at > now {
            return Err(allowed_at - now);
        }
        Ok(drained)
    }

    /// Charges an attempt that [`Gcra::check`] allowed (`drained` is what
    /// it returned); a new key past `max_keys` pushes out drained keys,
    /// else the one that drains first.
    pub fn charge(&mut self, key: K, drained: Instant, now: Instant) {
        if !self.drained.contains_key(&key) && self.drained.len() >= self.max_keys {
            self.drained.retain(|_, d| *d > now);
            if self.drained.len() >= self.max_keys {
                let oldest = self.drained.iter().min_by_key(|(_, d)| **d).map(|(k, _)| *k);
                if let Some(oldest) = oldest {
                    self.drained.remove(&oldest);
                }
            }
        }
        self.drained.insert(key, drained + self.interval);
    }

    /// [`Gcra::check`], then [`Gcra::charge`] when allowed.
    pub fn begin(&mut self, key: K, now: Instant) -> Result<(), Duration> {
        let drained = self.check(key, now)?;
        self.charge(key, drained, now);
        Ok(())
    }

    /// Gives back one charged attempt (the credentials were right).
    pub fn refund(&mut self, key: K, now: Instant) {
        if let Some(drained) = self.drained.get_mut(&key) {
            *drained = drained.checked_sub(self.interval).unwrap_or(now);
            if *drained <= now {
                self.drained.remove(&key);
            }
        }
    }

    /// Keys remembered.
    pub fn len(&self) -> usize {
        self.drained.len()
    }

    /// True when no key is remembered.
    pub fn is_empty(&self) -> bool {
        self.drained.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_one_per_interval_and_bounded_keys() {
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        let mut g = Gcra::new(2, 10 * s, 2);
        assert_eq!(g.begin(1, t0), Ok(()));
        assert_eq!(g.begin(1, t0), Ok(()));
        assert_eq!(g.begin(1, t0), Err(10 * s));
        assert_eq!(g.begin(1, t0 + 10 * s), Ok(()));
        g.refund(1, t0 + 10 * s);
        assert_eq!(g.begin(1, t0 + 10 * s), Ok(()), "a refund gives the attempt back");
        g.begin(2, t0).unwrap();
        g.begin(3, t0).unwrap();
        assert_eq!(g.len(), 2, "bounded");
    }
}
