//! Fan-out hub: one producer per track, many consumers, the current GOP
//! cached so a new consumer starts at the latest keyframe at once.
//!
//! Each consumer has a bounded queue. A consumer that falls behind is not
//! allowed to grow memory or slow the others: its queue overflows, it is
//! marked lagging and skipped forward to the next keyframe.

use crate::media::{CodecConfig, Frame, Quality};
use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::{mpsc, watch};

/// Frames a consumer may have queued beyond the cached GOP.
pub const CONSUMER_QUEUE_FRAMES: usize = 64;
/// Most frames kept in the GOP cache (a longer GOP is not cached further).
pub const MAX_CACHED_FRAMES: usize = 1024;
/// Most bytes kept in the GOP cache.
pub const MAX_CACHED_BYTES: usize = 32 << 20;

/// Identifies a track: a camera at a quality.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TrackKey {
    /// Camera id.
    pub camera: String,
    /// Quality.
    pub quality: Quality,
}

impl TrackKey {
    /// Builds a key.
    pub fn new(camera: impl Into<String>, quality: Quality) -> Self {
        Self { camera: camera.into(), quality }
    }
}

impl fmt::Display for TrackKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.camera, self.quality.name())
    }
}

/// One frame as a consumer sees it.
#[derive(Debug, Clone)]
pub struct HubItem {
    /// GOP the frame belongs to; a jump means frames were skipped.
    pub gop_seq: u64,
    /// Decoder configuration of that GOP.
    pub config: Arc<CodecConfig>,
    /// The frame.
    pub frame: Frame,
}

/// Counters of a track, for status and metrics.
#[derive(Debug, Default)]
pub struct TrackCounters {
    /// Frames pushed by the producer.
    pub frames_in: AtomicU64,
    /// Bytes pushed by the producer.
    pub bytes_in: AtomicU64,
    /// Frames not delivered to a lagging consumer.
    pub frames_skipped: AtomicU64,
}

struct Consumer {
    id: u64,
    tx: mpsc::Sender<HubItem>,
    lagging: bool,
}

struct State {
    config: Option<Arc<CodecConfig>>,
    gop_seq: u64,
    gop: Vec<HubItem>,
    gop_bytes: usize,
    caching: bool,
    consumers: Vec<Consumer>,
    next_id: u64,
    closed: bool,
    /// Why the track was ended by a revocation (the upstream withdrew the
    /// camera), for consumers that must say so rather than "stream ended".
    revoked: Option<Arc<str>>,
}

struct Shared {
    key: TrackKey,
    state: Mutex<State>,
    subscribers: watch::Sender<usize>,
    counters: TrackCounters,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves consistent-enough state
        // (plain vectors); keep serving rather than poisoning every viewer.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn remove_consumer(&self, id: u64) {
        let mut st = self.lock();
        st.consumers.retain(|c| c.id != id);
        let n = st.consumers.len();
        drop(st);
        self.subscribers.send_replace(n);
    }
}

/// Producer side of a track. Dropping it ends the track for every consumer.
pub struct TrackWriter {
    shared: Arc<Shared>,
}

/// Consumer side of a track. Dropping it unsubscribes.
pub struct TrackReader {
    shared: Arc<Shared>,
    id: u64,
    rx: mpsc::Receiver<HubItem>,
}

/// Creates a detached track (not registered in any hub).
pub fn track(key: TrackKey) -> TrackWriter {
    TrackWriter {
        shared: Arc::new(Shared {
            key,
            state: Mutex::new(State {
                config: None,
                gop_seq: 0,
                gop: Vec::new(),
                gop_bytes: 0,
                caching: false,
                consumers: Vec::new(),
                next_id: 0,
                closed: false,
                revoked: None,
            }),
            subscribers: watch::channel(0).0,
            counters: TrackCounters::default(),
        }),
    }
}

impl TrackWriter {
    /// The track's key.
    pub fn key(&self) -> &TrackKey {
        &self.shared.key
    }

    /// Sets the decoder configuration used for the following GOPs.
    pub fn set_config(&self, config: Arc<CodecConfig>) {
        self.shared.lock().config = Some(config);
    }

    /// Current decoder configuration.
    pub fn config(&self) -> Option<Arc<CodecConfig>> {
        self.shared.lock().config.clone()
    }

    /// Publishes a frame to every consumer. Frames before the first keyframe
    /// (or before a configuration is set) cannot be decoded and are dropped.
    pub fn push(&self, frame: Frame) {
        let c = &self.shared.counters;
        c.frames_in.fetch_add(1, Ordering::Relaxed);
        c.bytes_in.fetch_add(frame.payload.len() as u64, Ordering::Relaxed);
        let mut st = self.shared.lock();
        let Some(config) = st.config.clone() else { return };
        if frame.keyframe {
            st.gop_seq += 1;
            st.gop.clear();
            st.gop_bytes = 0;
            st.caching = true;
        } else if st.gop_seq == 0 {
            return;
        }
        let item = HubItem { gop_seq: st.gop_seq, config, frame };
        if st.caching {
            if st.gop.len() < MAX_CACHED_FRAMES && st.gop_bytes + item.frame.payload.len() <= MAX_CACHED_BYTES
            {
                st.gop_bytes += item.frame.payload.len();
                st.gop.push(item.clone());
            } else {
                // Too long to cache: late joiners wait for the next keyframe.
                st.caching = false;
                st.gop.clear();
                st.gop_bytes = 0;
            }
        }
        let before = st.consumers.len();
        let keyframe = item.frame.keyframe;
        let mut skipped = 0u64;
        st.consumers.retain_mut(|cons| {
            if cons.lagging {
                if !keyframe {
                    skipped += 1;
                    return true;
                }
                cons.lagging = false;
            }
            match cons.tx.try_send(item.clone()) {
                Ok(()) => true,
                Err(mpsc::error::TrySendError::Full(_)) => {
                    cons.lagging = true;
                    skipped += 1;
                    true
                }
                Err(mpsc::error::TrySendError::Closed(_)) => false,
            }
        });
        let after = st.consumers.len();
        drop(st);
        if skipped > 0 {
            c.frames_skipped.fetch_add(skipped, Ordering::Relaxed);
        }
        if after != before {
            self.shared.subscribers.send_replace(after);
        }
    }

    /// Number of consumers, observable for on-demand production.
    pub fn subscribers(&self) -> watch::Receiver<usize> {
        self.shared.subscribers.subscribe()
    }

    /// True once the track has been closed.
    pub fn is_closed(&self) -> bool {
        self.shared.lock().closed
    }

    /// Adds a consumer that starts at the cached GOP.
    pub fn subscribe(&self) -> TrackReader {
        subscribe(&self.shared)
    }

    /// Counters of this track.
    pub fn counters(&self) -> &TrackCounters {
        &self.shared.counters
    }

    /// A handle to watch this track's counters without keeping it alive.
    pub fn probe(&self) -> TrackProbe {
        TrackProbe { shared: Arc::downgrade(&self.shared) }
    }

    /// Forgets the cached GOP: the source paused, so a viewer arriving later
    /// must wait for fresh video rather than start on stale pictures.
    pub fn clear_cache(&self) {
        let mut st = self.shared.lock();
        st.gop.clear();
        st.gop_bytes = 0;
        st.caching = false;
    }

    /// Ends the track because access to it was revoked (`why` says by whom
    /// and what): consumers see `None` and then [`TrackReader::revoked`].
    pub fn revoke(&self, why: &str) {
        let mut st = self.shared.lock();
        // Set before the consumers' queues close: a consumer that sees the
        // end finds the reason.
        if !st.closed {
            st.revoked = Some(Arc::from(why));
        }
        drop(st);
        self.close();
    }

    /// Ends the track: consumers drain what they have, then see `None`.
    pub fn close(&self) {
        let mut st = self.shared.lock();
        st.closed = true;
        st.consumers.clear();
        st.gop.clear();
        drop(st);
        self.shared.subscribers.send_replace(0);
    }
}

impl Drop for TrackWriter {
    fn drop(&mut self) {
        self.close();
    }
}

fn subscribe(shared: &Arc<Shared>) -> TrackReader {
    let mut st = shared.lock();
    let (tx, rx) = mpsc::channel(st.gop.len() + CONSUMER_QUEUE_FRAMES);
    let id = st.next_id;
    st.next_id += 1;
    if !st.closed {
        for item in &st.gop {
            // Capacity covers the whole cached GOP, so this cannot fail.
            let _ = tx.try_send(item.clone());
        }
        st.consumers.push(Consumer { id, tx, lagging: false });
    }
    let n = st.consumers.len();
    drop(st);
    shared.subscribers.send_replace(n);
    TrackReader { shared: shared.clone(), id, rx }
}

impl TrackReader {
    /// Next frame; `None` when the track has ended.
    pub async fn next(&mut self) -> Option<HubItem> {
        self.rx.recv().await
    }

    /// Next frame if one is queued, without waiting.
    pub fn try_next(&mut self) -> Option<HubItem> {
        self.rx.try_recv().ok()
    }

    /// The track's key.
    pub fn key(&self) -> &TrackKey {
        &self.shared.key
    }

    /// Current decoder configuration of the track.
    pub fn config(&self) -> Option<Arc<CodecConfig>> {
        self.shared.lock().config.clone()
    }

    /// Why the track ended, when it was revoked ([`TrackWriter::revoke`]).
    pub fn revoked(&self) -> Option<Arc<str>> {
        self.shared.lock().revoked.clone()
    }

    /// Another consumer of the same track, starting at the cached GOP.
    pub fn resubscribe(&self) -> TrackReader {
        subscribe(&self.shared)
    }
}

impl Drop for TrackReader {
    fn drop(&mut self) {
        self.shared.remove_consumer(self.id);
    }
}

/// Watches a track's counters and viewers for status pages; does not keep
/// the track alive (everything reads as 0 once it is gone).
#[derive(Clone, Debug)]
pub struct TrackProbe {
    shared: std::sync::Weak<Shared>,
}

impl TrackProbe {
    /// Frames pushed by the producer.
    pub fn frames_in(&self) -> u64 {
        self.shared.upgrade().map_or(0, |s| s.counters.frames_in.load(Ordering::Relaxed))
    }

    /// Bytes pushed by the producer.
    pub fn bytes_in(&self) -> u64 {
        self.shared.upgrade().map_or(0, |s| s.counters.bytes_in.load(Ordering::Relaxed))
    }

    /// Current number of consumers.
    pub fn subscribers(&self) -> usize {
        self.shared.upgrade().map_or(0, |s| *s.subscribers.borrow())
    }
}

/// A registry of tracks by key, shared by a node's ingest and egress.
#[derive(Default)]
pub struct Hub {
    tracks: Mutex<HashMap<TrackKey, std::sync::Weak<Shared>>>,
}

impl Hub {
    /// Empty hub.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers a new track under `key`, replacing a previous one.
    pub fn publish(&self, key: TrackKey) -> TrackWriter {
        let w = track(key.clone());
        let mut tracks = self.tracks.lock().unwrap_or_else(|e| e.into_inner());
        tracks.retain(|_, t| t.strong_count() > 0);
        tracks.insert(key, Arc::downgrade(&w.shared));
        w
    }

    /// Subscribes to a live track, if one is published under `key`.
    pub fn subscribe(&self, key: &TrackKey) -> Option<TrackReader> {
        let shared = {
            let tracks = self.tracks.lock().unwrap_or_else(|e| e.into_inner());
            tracks.get(key)?.upgrade()?
        };
        if shared.lock().closed {
            return None;
        }
        Some(subscribe(&shared))
    }

    /// Keys of the live tracks.
    pub fn keys(&self) -> Vec<TrackKey> {
        let tracks = self.tracks.lock().unwrap_or_else(|e| e.into_inner());
        let mut keys: Vec<TrackKey> = tracks
            .iter()
            .filter(|(_, t)| t.upgrade().is_some_and(|t| !t.lock().closed))
            .map(|(k, _)| k.clone())
            .collect();
        keys.sort();
        keys
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::Codec;
    use bytes::Bytes;

    fn cfg() -> Arc<CodecConfig> {
        Arc::new(CodecConfig { codec: Codec::H264, width: 2, height: 2, parameter_sets: vec![] })
    }

    fn frame(pts: u64, keyframe: bool) -> Frame {
        Frame { pts, keyframe, payload: Bytes::from(vec![0u8; 10]) }
    }

    #[tokio::test]
    async fn late_joiner_starts_at_latest_keyframe() {
        let w = track(TrackKey::new("c", Quality::Main));
        w.set_config(cfg());
        w.push(frame(0, false)); // before any keyframe: dropped
        w.push(frame(1, true));
        w.push(frame(2, false));
        w.push(frame(3, true));
        w.push(frame(4, false));
        let mut r = w.subscribe();
        let a = r.next().await.unwrap();
        assert!(a.frame.keyframe);
        assert_eq!(a.frame.pts, 3);
        assert_eq!(r.next().await.unwrap().frame.pts, 4);
        w.push(frame(5, false));
        assert_eq!(r.next().await.unwrap().frame.pts, 5);
    }

    #[tokio::test]
    async fn a_revoked_track_ends_with_its_reason_and_a_closed_one_without() {
        let revoked = track(TrackKey::new("c", Quality::Main));
        let mut r = revoked.subscribe();
        revoked.revoke("withdrawn");
        assert!(r.next().await.is_none());
        assert_eq!(r.revoked().as_deref(), Some("withdrawn"));
        // A revoke after the end changes nothing: the track just ended.
        let closed = track(TrackKey::new("c", Quality::Main));
        let mut r = closed.subscribe();
        closed.close();
        closed.revoke("too late");
        assert!(r.next().await.is_none());
        assert_eq!(r.revoked(), None);
    }

    #[tokio::test]
    async fn slow_consumer_is_skipped_to_next_keyframe_and_others_unaffected() {
        let w = track(TrackKey::new("c", Quality::Main));
        w.set_config(cfg());
        let mut slow = w.subscribe();
        let mut fast = w.subscribe();
        let mut pts = 0;
        let mut fast_got = 0;
        w.push(frame(pts, true));
        for _ in 0..(CONSUMER_QUEUE_FRAMES * 3) {
            pts += 1;
            w.push(frame(pts, false));
            while fast.try_next().is_some() {
                fast_got += 1;
            }
        }
        while fast.try_next().is_some() {
            fast_got += 1;
        }
        assert_eq!(fast_got, CONSUMER_QUEUE_FRAMES * 3 + 1);
        // The slow one has a bounded queue...
        let mut slow_got = 0;
        while slow.try_next().is_some() {
            slow_got += 1;
        }
        assert_eq!(slow_got, CONSUMER_QUEUE_FRAMES);
        // ...and resumes exactly at the next keyframe.
        w.push(frame(1000, false));
        assert!(slow.try_next().is_none());
        w.push(frame(1001, true));
        let item = slow.try_next().unwrap();
        assert!(item.frame.keyframe);
        assert_eq!(item.gop_seq, 2);
        assert!(w.counters().frames_skipped.load(Ordering::Relaxed) > 0);
    }

    #[tokio::test]
    async fn cleared_cache_makes_late_joiners_wait_for_fresh_video() {
        let w = track(TrackKey::new("c", Quality::Main));
        w.set_config(cfg());
        w.push(frame(1, true));
        w.push(frame(2, false));
        w.clear_cache();
        let mut r = w.subscribe();
        assert!(r.try_next().is_none());
        w.push(frame(100, true));
        assert_eq!(r.try_next().unwrap().frame.pts, 100);
    }

    #[tokio::test]
    async fn subscriber_count_and_close() {
        let hub = Hub::new();
        let key = TrackKey::new("c", Quality::Sub);
        assert!(hub.subscribe(&key).is_none());
        let w = hub.publish(key.clone());
        let count = w.subscribers();
        let r = hub.subscribe(&key).unwrap();
        assert_eq!(*count.borrow(), 1);
        drop(r);
        assert_eq!(*count.borrow(), 0);
        let mut r = hub.subscribe(&key).unwrap();
        drop(w);
        assert!(r.next().await.is_none());
        assert!(hub.subscribe(&key).is_none());
        assert!(hub.keys().is_empty());
    }
}
