//! Rates from monotonically growing byte counters, between samples.

use std::collections::HashMap;
use std::time::Instant;

/// Turns monotonically growing byte counters into rates between samples.
#[derive(Debug, Default)]
pub struct RateMeter {
    last: HashMap<String, (u64, Instant)>,
}

impl RateMeter {
    /// Bit/s of counter `key` since its previous sample (0 on the first).
    pub fn rate(&mut self, key: &str, bytes: u64, now: Instant) -> f64 {
        let rate = match self.last.get(key) {
            Some(&(prev, at)) if now > at && bytes >= prev => {
                (bytes - prev) as f64 * 8.0 / now.duration_since(at).as_secs_f64()
            }
            _ => 0.0,
        };
        self.last.insert(key.to_owned(), (bytes, now));
        rate
    }

    /// Forgets counters not sampled in this round (bounded memory).
    pub fn retain(&mut self, keys: &std::collections::HashSet<String>) {
        self.last.retain(|k, _| keys.contains(k));
    }
}
