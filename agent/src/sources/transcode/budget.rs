//! `agent.max_transcodes`: which cameras are being transcoded, the cap, and
//! the subscriptions the cap refused. Shared by the camera registry (which
//! asks before opening a transcoded substream) and the transcode tasks
//! (which say when they start and stop).

use ponte_proto::status::TranscodeStatus;
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Mutex;

/// Default of `agent.max_transcodes`: a few browsers' worth on a small
/// machine (at most a quarter of a core each for a 1080p camera, see the
/// module doc).
pub const DEFAULT_MAX_TRANSCODES: u32 = 4;

/// The running transcodes and their cap.
#[derive(Debug)]
pub struct Transcodes {
    max: AtomicU32,
    running: Mutex<BTreeSet<String>>,
    refused: AtomicU64,
}

impl Transcodes {
    /// At most `max` transcodes at once.
    pub fn new(max: u32) -> Self {
        Self { max: AtomicU32::new(max), running: Mutex::default(), refused: AtomicU64::new(0) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeSet<String>> {
        self.running.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A new cap (config reload); running transcodes are left alone.
    pub fn set_max(&self, max: u32) {
        self.max.store(max, Ordering::Relaxed);
    }

    /// May a subscription to `camera`'s transcoded substream be opened? Yes
    /// when it is already being transcoded (viewers share one transcode) or
    /// below the cap; otherwise the refusal, naming the key. The cap is
    /// checked here, when the subscription arrives: two arriving in the same
    /// instant for two new cameras may run one over it until either ends.
    pub fn admit(&self, camera: &str) -> Result<(), String> {
        let running = self.lock();
        let max = self.max.load(Ordering::Relaxed);
        if running.contains(camera) || (running.len() as u32) < max {
            return Ok(());
        }
        let names = running.iter().map(String::as_str).collect::<Vec<_>>().join(", ");
        drop(running);
        self.refused.fetch_add(1, Ordering::Relaxed);
        Err(format!(
            "camera `{camera}`: its H.264 substream for browsers is transcoded at the agent, and the agent \
             already runs {max} transcode(s), its limit (`agent.max_transcodes`): {}; close a browser \
             watching one of them, or raise `agent.max_transcodes` on a machine with cores to spare",
            names
        ))
    }

    /// `camera`'s transcode started.
    pub(super) fn started(&self, camera: &str) {
        self.lock().insert(camera.to_owned());
    }

    /// `camera`'s transcode stopped.
    pub(super) fn stopped(&self, camera: &str) {
        self.lock().remove(camera);
    }

    /// Subscriptions refused by the cap since start.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    /// For the status document.
    pub fn status(&self) -> TranscodeStatus {
        let running = self.lock();
        TranscodeStatus {
            active: running.len() as u32,
            max: self.max.load(Ordering::Relaxed),
            refused: self.refused(),
            cameras: running.iter().cloned().collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_refuses_a_new_camera_naming_the_key_but_not_a_running_one() {
        let t = Transcodes::new(1);
        assert!(t.admit("a").is_ok());
        t.started("a");
        assert!(t.admit("a").is_ok(), "a second viewer of a running transcode shares it");
        let refused = t.admit("b").expect_err("over the cap");
        assert!(refused.contains("`agent.max_transcodes`") && refused.contains("camera `b`"), "{refused}");
        assert!(refused.contains(": a;"), "names what runs: {refused}");
        assert_eq!(t.status(), TranscodeStatus { active: 1, max: 1, refused: 1, cameras: vec!["a".into()] });
        t.stopped("a");
        assert!(t.admit("b").is_ok());
        t.set_max(0);
        assert!(t.admit("b").is_err());
        assert_eq!(t.status().refused, 2);
    }
}
