//! Recently verified Basic credentials, so RTSP clients do not pay argon2
//! on every request.

use super::Viewer;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// RTSP clients send their credentials with every request; argon2 on each
/// would cost tens of milliseconds. A keyed hash of credentials verified in
/// the last `ttl` skips it (the key is random per process, so the cache is
/// useless to anyone reading memory without it).
pub(super) struct VerifiedCache {
    key: [u8; 32],
    entries: HashMap<[u8; 32], (Viewer, Instant)>,
    ttl: Duration,
    max: usize,
}

impl VerifiedCache {
    pub(super) fn new(ttl: Duration, max: usize) -> Self {
        Self { key: rand::random(), entries: HashMap::new(), ttl, max: max.max(1) }
    }

    fn slot(&self, user: &str, password: &str) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(self.key);
        h.update(user.as_bytes());
        h.update([0]);
        h.update(password.as_bytes());
        h.finalize().into()
    }

    pub(super) fn get(&mut self, user: &str, password: &str, now: Instant) -> Option<Viewer> {
        let slot = self.slot(user, password);
        let (viewer, at) = self.entries.get(&slot)?;
        if now.saturating_duration_since(*at) < self.ttl {
            return Some(viewer.clone());
        }
        self.entries.remove(&slot);
        None
    }

    pub(super) fn put(&mut self, user: &str, password: &str, viewer: Viewer, now: Instant) {
        if self.entries.len() >= self.max {
            let ttl = self.ttl;
            self.entries.retain(|_, (_, at)| now.saturating_duration_since(*at) < ttl);
            if self.entries.len() >= self.max {
                self.entries.clear();
            }
        }
        let slot = self.slot(user, password);
        self.entries.insert(slot, (viewer, now));
    }

    pub(super) fn clear(&mut self) {
        self.entries.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::fixtures::*;

    #[test]
    fn verified_cache_expires() {
        let t0 = Instant::now();
        let mut cache = VerifiedCache::new(Duration::from_secs(600), 2);
        cache.put("anna", "pw", compiled(None, None), t0);
        assert!(cache.get("anna", "pw", t0 + Duration::from_secs(599)).is_some());
        assert!(cache.get("anna", "pw2", t0).is_none());
        assert!(cache.get("ann", "apw", t0).is_none(), "user and password are separated");
        assert!(cache.get("anna", "pw", t0 + Duration::from_secs(600)).is_none());
    }
}
