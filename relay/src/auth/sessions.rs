//! Browser sessions (sans-IO: time is passed in).

use super::session_store::StoredSession;
use super::viewer::Scope;
use super::{Viewer, ViewerKind};
use ponte_proto::credentials::sha256;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

struct SessionSlot {
    viewer: Viewer,
    last_seen: Instant,
    /// The login.
    created: Instant,
}

/// Browser sessions, each ending after `idle` without use. Kept by the
/// SHA-256 of the cookie, so what is written to disk
/// ([`super::session_store`]) cannot be replayed as a cookie.
pub struct SessionTable {
    sessions: HashMap<String, SessionSlot>,
    idle: Duration,
    /// However busy, a session ends this long after its login.
    max_age: Duration,
    max: usize,
}

impl SessionTable {
    /// An empty table; at most `max` sessions (the least recently used goes first).
    pub fn new(idle: Duration, max: usize) -> Self {
        Self { sessions: HashMap::new(), idle, max_age: Duration::MAX, max: max.max(1) }
    }

    /// Sessions also end `max_age` after their login, however busy.
    pub fn with_max_age(mut self, max_age: Duration) -> Self {
        self.max_age = max_age;
        self
    }

    fn expired(&self, slot: &SessionSlot, now: Instant) -> bool {
        now.saturating_duration_since(slot.last_seen) >= self.idle
            || now.saturating_duration_since(slot.created) >= self.max_age
    }

    /// Opens a session under `id` (a fresh random value, see [`new_session_id`]).
    pub fn insert(&mut self, id: String, viewer: Viewer, now: Instant) {
        let id = cookie_key(&id);
        if self.sessions.len() >= self.max {
            let (idle, max_age) = (self.idle, self.max_age);
            self.sessions.retain(|_, s| {
                now.saturating_duration_since(s.last_seen) < idle
                    && now.saturating_duration_since(s.created) < max_age
            });
        }
        if self.sessions.len() >= self.max {
            let oldest = self.sessions.iter().min_by_key(|(_, s)| s.last_seen).map(|(k, _)| k.clone());
            if let Some(oldest) = oldest {
                self.sessions.remove(&oldest);
            }
        }
        self.sessions.insert(id, SessionSlot { viewer, last_seen: now, created: now });
    }

    /// The session's viewer, marking it used at `now`; `None` if unknown or idle too long.
    pub fn get(&mut self, id: &str, now: Instant) -> Option<Viewer> {
        let id = &cookie_key(id);
        let expired = self.expired(self.sessions.get(id)?, now);
        if expired {
            self.sessions.remove(id);
            return None;
        }
        let slot = self.sessions.get_mut(id)?;
        slot.last_seen = now;
        Some(slot.viewer.clone())
    }

    /// How long the session has left before its absolute end (its login
    /// plus `max_age`); `None` if unknown or expired.
    pub fn remaining(&self, id: &str, now: Instant) -> Option<Duration> {
        let slot = self.sessions.get(&cookie_key(id))?;
        if self.expired(slot, now) {
            return None;
        }
        Some(self.max_age.saturating_sub(now.saturating_duration_since(slot.created)))
    }

    /// Ends a session.
    pub fn remove(&mut self, id: &str) -> Option<Viewer> {
        self.sessions.remove(&cookie_key(id)).map(|s| s.viewer)
    }

    /// Whether the session is still open (idle ones count until purged).
    pub fn contains(&self, id: &str) -> bool {
        self.sessions.contains_key(&cookie_key(id))
    }

    /// The sessions to store: live ones, with their last use on the wall
    /// clock (`now` is `now_unix` seconds since the epoch).
    pub fn snapshot(&self, now: Instant, now_unix: u64) -> Vec<StoredSession> {
        let mut out: Vec<StoredSession> = self
            .sessions
            .iter()
            .filter(|(_, slot)| !self.expired(slot, now) && slot.viewer.kind != ViewerKind::Anonymous)
            .map(|(key, slot)| StoredSession {
                cookie_sha256: key.clone(),
                kind: slot.viewer.kind,
                name: slot.viewer.name.to_string(),
                credential: hex::encode(slot.viewer.credential),
                last_seen_unix: now_unix
                    .saturating_sub(now.saturating_duration_since(slot.last_seen).as_secs()),
                created_unix: Some(
                    now_unix.saturating_sub(now.saturating_duration_since(slot.created).as_secs()),
                ),
            })
            .collect();
        out.sort_by(|a, b| a.cookie_sha256.cmp(&b.cookie_sha256));
        out
    }

    /// Takes back stored sessions (at start) whose viewer `current` still
    /// knows with the same credentials and that have not been idle too
    /// long; returns how many came back.
    pub fn restore(
        &mut self,
        stored: Vec<StoredSession>,
        mut current: impl FnMut(&Viewer) -> Option<Viewer>,
        now: Instant,
        now_unix: u64,
    ) -> usize {
        let mut n = 0;
        for s in stored {
            // Last seen in the future: the clock went back (a lost RTC, a
            // bad NTP step), so how long it was idle is unknown: not taken back.
            if s.last_seen_unix > now_unix.saturating_add(CLOCK_SLACK_SECS) {
                continue;
            }
            let idle_for = Duration::from_secs(now_unix.saturating_sub(s.last_seen_unix));
            let (Some(last_seen), Some(credential)) =
                (now.checked_sub(idle_for), credential_from_hex(&s.credential))
            else {
                continue;
            };
            // Stored by a relay before `created_unix`: its login time is
            // unknown, so its age counts from its last use.
            let age =
                Duration::from_secs(now_unix.saturating_sub(s.created_unix.unwrap_or(s.last_seen_unix)));
            let Some(created) = now.checked_sub(age) else { continue };
            if idle_for >= self.idle
                || age >= self.max_age
                || s.cookie_sha256.len() != 64
                || self.sessions.len() >= self.max
            {
                continue;
            }
            let was = Viewer {
                name: Arc::from(s.name.as_str()),
                kind: s.kind,
                scope: Arc::new(Scope::ALL),
                ptz: false,
                login: None,
                pair: None,
                credential,
            };
            if let Some(viewer) = current(&was) {
                self.sessions.insert(s.cookie_sha256, SessionSlot { viewer, last_seen, created });
                n += 1;
            }
        }
        n
    }

    /// Gives every session its viewer as `current` now sees it, ending those
    /// for which it says `None`; returns how many ended.
    pub fn refresh(&mut self, mut current: impl FnMut(&Viewer) -> Option<Viewer>) -> usize {
        let before = self.sessions.len();
        self.sessions.retain(|_, slot| match current(&slot.viewer) {
            Some(viewer) => {
                slot.viewer = viewer;
                true
            }
            None => false,
        });
        before - self.sessions.len()
    }

    /// Live (not yet purged) sessions.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.sessions.len()
    }
}

/// How far in the future a stored session's last use may be (clock steps
/// between the save and the restart) and still be taken back.
const CLOCK_SLACK_SECS: u64 = 60;

/// A new session id: 256 random bits, hex.
pub fn new_session_id() -> String {
    hex::encode(rand::random::<[u8; 32]>())
}

pub(super) fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// What the session table (and the file) keeps of a cookie: its SHA-256.
fn cookie_key(cookie: &str) -> String {
    hex::encode(sha256(cookie.as_bytes()))
}

fn credential_from_hex(text: &str) -> Option<[u8; 8]> {
    if text.len() != 16 {
        return None;
    }
    u64::from_str_radix(text, 16).ok().map(u64::to_be_bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::fixtures::*;

    #[test]
    fn sessions_expire_when_idle_and_use_keeps_them() {
        let t0 = Instant::now();
        let hour = Duration::from_secs(3600);
        let mut table = SessionTable::new(12 * hour, 3);
        table.insert("a".into(), compiled(None, None), t0);
        assert!(table.get("a", t0 + 11 * hour).is_some(), "used at 11 h");
        assert!(table.get("a", t0 + 22 * hour).is_some(), "11 h after its last use");
        assert!(table.get("a", t0 + 34 * hour).is_none(), "12 h idle: gone");
        assert!(table.get("a", t0 + 34 * hour).is_none());
        assert_eq!(table.len(), 0);
        assert!(table.get("unknown", t0).is_none());
        table.insert("b".into(), compiled(None, None), t0);
        assert!(table.remove("b").is_some());
        assert!(table.get("b", t0).is_none(), "logged out");
        // Bounded: the least recently used goes first.
        for (i, id) in ["c", "d", "e"].into_iter().enumerate() {
            table.insert(id.into(), compiled(None, None), t0 + Duration::from_secs(i as u64));
        }
        assert!(table.get("c", t0 + Duration::from_secs(10)).is_some());
        table.insert("f".into(), compiled(None, None), t0 + Duration::from_secs(11));
        assert_eq!(table.len(), 3);
        assert!(table.get("d", t0 + Duration::from_secs(12)).is_none(), "d was least recently used");
        assert!(table.get("c", t0 + Duration::from_secs(12)).is_some());
        assert_eq!(new_session_id().len(), 64);
        assert_ne!(new_session_id(), new_session_id());
    }

    #[test]
    fn busy_sessions_end_at_their_absolute_lifetime_across_a_restart() {
        let t0 = Instant::now();
        let hour = Duration::from_secs(3600);
        let mut table = SessionTable::new(hour, 10).with_max_age(12 * hour);
        table.insert("a".into(), compiled(None, None), t0);
        let half = hour / 2;
        for n in 1..24 {
            assert!(table.get("a", t0 + n * half).is_some(), "used every half hour, at {n} × 30 min");
        }
        assert!(table.get("a", t0 + 12 * hour).is_none(), "12 h after the login, however busy");
        // Stored at 11 h, restored: the login time comes back with it.
        let mut table = SessionTable::new(12 * hour, 10).with_max_age(12 * hour);
        table.insert("b".into(), compiled(None, None), t0);
        let unix = 1_900_000_000;
        assert!(table.get("b", t0 + 11 * hour - Duration::from_secs(60)).is_some());
        let stored = table.snapshot(t0 + 11 * hour, unix);
        assert_eq!(stored.len(), 1);
        let mut back = SessionTable::new(12 * hour, 10).with_max_age(12 * hour);
        let later = t0 + 11 * hour;
        assert_eq!(back.restore(stored.clone(), |v| Some(v.clone()), later, unix), 1);
        assert!(back.get("b", later + Duration::from_secs(1800)).is_some());
        assert!(back.get("b", later + hour).is_none(), "the restart did not renew it");
        // Restored two hours later (the relay was down): already too old.
        let mut late = SessionTable::new(12 * hour, 10).with_max_age(12 * hour);
        assert_eq!(late.restore(stored, |v| Some(v.clone()), later, unix + 2 * 3600), 0);
    }

    #[test]
    fn stored_sessions_come_back_by_cookie_hash_unless_idle_or_unknown() {
        let t0 = Instant::now();
        let hour = Duration::from_secs(3600);
        let unix = 1_800_000_000;
        let mut table = SessionTable::new(12 * hour, 10);
        table.insert("cookie-a".into(), compiled(None, None), t0);
        table.insert("cookie-old".into(), compiled(None, None), t0);
        assert!(table.get("cookie-a", t0 + 10 * hour).is_some());
        let stored = table.snapshot(t0 + 11 * hour, unix);
        assert_eq!(stored.len(), 2);
        assert!(stored.iter().all(|s| s.cookie_sha256.len() == 64 && !s.cookie_sha256.contains("cookie")));
        // Restarted two hours later: `cookie-old` was idle 13 h by then.
        let t1 = Instant::now() + 24 * hour;
        let mut back = SessionTable::new(12 * hour, 10);
        let n = back.restore(stored.clone(), |v| Some(v.clone()), t1, unix + 2 * 3600);
        assert_eq!(n, 1);
        assert!(back.get("cookie-a", t1).is_some());
        assert!(back.get("cookie-old", t1).is_none());
        // An account the config no longer has (or with other credentials) stays out.
        let mut gone = SessionTable::new(12 * hour, 10);
        assert_eq!(gone.restore(stored.clone(), |_| None, t1, unix), 0);
        assert!(gone.get("cookie-a", t1).is_none());
        // A clock that went back a day: how long they were idle is unknown.
        let mut behind = SessionTable::new(12 * hour, 10);
        assert_eq!(behind.restore(stored, |v| Some(v.clone()), t1, unix - 24 * 3600), 0);
    }
}
