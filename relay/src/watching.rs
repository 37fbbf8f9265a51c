//! Who watches which camera here, by name: fed by every audited viewing
//! ([`crate::audit::RelayAudit::view_start`] and `view_stop`, which every
//! egress calls: WHEP, RTSP, cascade), read by the upstream links, which
//! tell the agent (`Control::Viewers`) so the master room's audit names
//! each partner operator, not only the site. The relay shares one upstream
//! subscription per camera and quality among its viewers, so the agent
//! would otherwise only hear of the first.

use ponte_proto::hub::TrackKey;
use ponte_proto::media::Quality;
use ponte_proto::wire::{wire_viewer, MAX_VIEWERS};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, MutexGuard};
use tokio::sync::watch;

/// How the upstream names a viewer this relay did not authenticate (a
/// relay without accounts).
pub const ANONYMOUS: &str = "anonymous";

/// Viewers by track, with how many viewings each has open.
#[derive(Debug)]
pub struct Watching {
    by_track: Mutex<HashMap<TrackKey, BTreeMap<String, u32>>>,
    /// Bumped at every change; the upstream links wake on it.
    changes: watch::Sender<u64>,
}

impl Default for Watching {
    fn default() -> Self {
        Self { by_track: Mutex::default(), changes: watch::channel(0).0 }
    }
}

impl Watching {
    fn lock(&self) -> MutexGuard<'_, HashMap<TrackKey, BTreeMap<String, u32>>> {
        self.by_track.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `viewer` (`None`: anonymous) started watching `camera` at `quality`.
    pub fn start(&self, viewer: Option<&str>, camera: &str, quality: Quality) {
        let name = wire_viewer(viewer.unwrap_or(ANONYMOUS));
        *self.lock().entry(TrackKey::new(camera, quality)).or_default().entry(name).or_default() += 1;
        self.changes.send_modify(|v| *v += 1);
    }

    /// One viewing of `viewer` ended.
    pub fn stop(&self, viewer: Option<&str>, camera: &str, quality: Quality) {
        let name = wire_viewer(viewer.unwrap_or(ANONYMOUS));
        let key = TrackKey::new(camera, quality);
        {
            let mut map = self.lock();
            let Some(names) = map.get_mut(&key) else { return };
            if let Some(n) = names.get_mut(&name) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    names.remove(&name);
                }
            }
            if names.is_empty() {
                map.remove(&key);
            }
        }
        self.changes.send_modify(|v| *v += 1);
    }

    /// Who watches `key`: at most [`MAX_VIEWERS`] names (sorted), and how
    /// many more there are.
    pub fn names(&self, key: &TrackKey) -> (Vec<String>, u32) {
        let map = self.lock();
        let Some(names) = map.get(key) else { return (Vec::new(), 0) };
        let more = names.len().saturating_sub(MAX_VIEWERS);
        (names.keys().take(MAX_VIEWERS).cloned().collect(), u32::try_from(more).unwrap_or(u32::MAX))
    }

    /// Notified at every change.
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_count_viewings_and_stay_bounded() {
        let w = Watching::default();
        let key = TrackKey::new("duomo", Quality::Main);
        w.start(Some("op"), "duomo", Quality::Main);
        w.start(Some("op"), "duomo", Quality::Main);
        w.start(None, "duomo", Quality::Main);
        w.start(Some("anna"), "duomo", Quality::Sub);
        assert_eq!(w.names(&key), (vec!["anonymous".to_owned(), "op".to_owned()], 0));
        w.stop(Some("op"), "duomo", Quality::Main);
        assert_eq!(w.names(&key).0, ["anonymous", "op"], "op still has a viewing open");
        w.stop(Some("op"), "duomo", Quality::Main);
        w.stop(None, "duomo", Quality::Main);
        w.stop(Some("nobody"), "duomo", Quality::Main);
        assert_eq!(w.names(&key), (vec![], 0));
        for i in 0..MAX_VIEWERS + 3 {
            w.start(Some(&format!("v{i:04}")), "duomo", Quality::Main);
        }
        let (names, more) = w.names(&key);
        assert_eq!((names.len(), more), (MAX_VIEWERS, 3));
    }
}
