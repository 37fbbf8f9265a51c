//! Who watches which camera here, by name: fed by every audited viewing
//! ([`crate::audit::RelayAudit::view_start`] and `view_stop`, which every
//! egress calls: WHEP, RTSP, cascade), read by each track's keeper at its
//! periodic look (within a second), which tells the agent
//! (`Control::Viewers`) so the master room's audit names
//! each partner operator, not only the site. The relay shares one upstream
//! subscription per camera and quality among its viewers, so the agent
//! would otherwise only hear of the first.

use ponte_proto::hub::TrackKey;
use ponte_proto::media::Quality;
use ponte_proto::wire::{wire_viewer, MAX_VIEWERS};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, MutexGuard};

/// How the upstream names a viewer this relay did not authenticate (a
/// relay without accounts).
pub const ANONYMOUS: &str = "anonymous";

/// The name a viewer goes by upstream: its audit name (`None`: anonymous),
/// `token:<name>` for a `[[token]]`, cut to what the wire carries. The
/// agent adds `@<site>` from this relay's certificate.
pub fn upstream_name(audit_name: Option<&str>, token: bool) -> String {
    match audit_name {
        None => ANONYMOUS.to_owned(),
        Some(name) if token => wire_viewer(&format!("token:{name}")),
        Some(name) => wire_viewer(name),
    }
}

/// Viewers by track, with how many viewings each has open.
#[derive(Debug, Default)]
pub struct Watching {
    by_track: Mutex<HashMap<TrackKey, BTreeMap<String, u32>>>,
}

impl Watching {
    fn lock(&self) -> MutexGuard<'_, HashMap<TrackKey, BTreeMap<String, u32>>> {
        self.by_track.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `name` ([`upstream_name`]) started watching `camera` at `quality`.
    pub fn start(&self, name: &str, camera: &str, quality: Quality) {
        let name = name.to_owned();
        *self.lock().entry(TrackKey::new(camera, quality)).or_default().entry(name).or_default() += 1;
    }

    /// One viewing of `name` ended.
    pub fn stop(&self, name: &str, camera: &str, quality: Quality) {
        let key = TrackKey::new(camera, quality);
        let mut map = self.lock();
        let Some(names) = map.get_mut(&key) else { return };
        if let Some(n) = names.get_mut(name) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                names.remove(name);
            }
        }
        if names.is_empty() {
            map.remove(&key);
        }
    }

    /// Who watches `key`: at most [`MAX_VIEWERS`] names (sorted), and how
    /// many more there are.
    pub fn names(&self, key: &TrackKey) -> (Vec<String>, u32) {
        let map = self.lock();
        let Some(names) = map.get(key) else { return (Vec::new(), 0) };
        let more = names.len().saturating_sub(MAX_VIEWERS);
        (names.keys().take(MAX_VIEWERS).cloned().collect(), u32::try_from(more).unwrap_or(u32::MAX))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_count_viewings_and_stay_bounded() {
        let w = Watching::default();
        let key = TrackKey::new("duomo", Quality::Main);
        w.start("op", "duomo", Quality::Main);
        w.start("op", "duomo", Quality::Main);
        w.start(ANONYMOUS, "duomo", Quality::Main);
        w.start("anna", "duomo", Quality::Sub);
        assert_eq!(w.names(&key), (vec!["anonymous".to_owned(), "op".to_owned()], 0));
        w.stop("op", "duomo", Quality::Main);
        assert_eq!(w.names(&key).0, ["anonymous", "op"], "op still has a viewing open");
        w.stop("op", "duomo", Quality::Main);
        w.stop(ANONYMOUS, "duomo", Quality::Main);
        w.stop("nobody", "duomo", Quality::Main);
        assert_eq!(w.names(&key), (vec![], 0));
        for i in 0..MAX_VIEWERS + 3 {
            w.start(&format!("v{i:04}"), "duomo", Quality::Main);
        }
        let (names, more) = w.names(&key);
        assert_eq!((names.len(), more), (MAX_VIEWERS, 3));
    }

    #[test]
    fn upstream_names_tell_tokens_and_anonymous_viewers_apart() {
        assert_eq!(upstream_name(Some("op"), false), "op");
        assert_eq!(upstream_name(Some("vms"), true), "token:vms");
        assert_eq!(upstream_name(None, false), "anonymous");
        assert_eq!(upstream_name(Some(&"é".repeat(100)), false).len(), ponte_proto::wire::MAX_VIEWER_LEN);
    }
}
