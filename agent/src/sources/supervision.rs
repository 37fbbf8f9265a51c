//! Camera supervision: the state of each camera stream, the counters the
//! status page shows, and the reconnect backoff. No I/O here: callers pass
//! the time and the jitter in.

use ponte_proto::hub::TrackProbe;
use ponte_proto::media::{Codec, Quality};
use serde::Serialize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tracing::{info, warn};

/// First reconnect delay.
pub const BACKOFF_MIN: Duration = Duration::from_millis(500);
/// Longest reconnect delay.
pub const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// Where a camera stream stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CameraState {
    /// On-demand source that nobody watches: not pulled.
    Idle,
    /// First connection attempt under way.
    Connecting,
    /// Frames arriving.
    Online,
    /// Not delivering video; retrying with backoff.
    Offline {
        /// When it stopped delivering (first failure of this outage).
        since: SystemTime,
        /// What went wrong last (credentials and URL userinfo removed).
        last_error: String,
    },
}

impl CameraState {
    /// Lower-case name, as in logs and status JSON.
    pub fn name(&self) -> &'static str {
        match self {
            CameraState::Idle => "idle",
            CameraState::Connecting => "connecting",
            CameraState::Online => "online",
            CameraState::Offline { .. } => "offline",
        }
    }
}

/// Reconnect delays: exponential from [`BACKOFF_MIN`] to [`BACKOFF_MAX`],
/// each scaled by a jitter so a room of cameras that failed together does
/// not retry in lockstep.
#[derive(Debug, Clone)]
pub struct Backoff {
    next: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self { next: BACKOFF_MIN }
    }
}

impl Backoff {
    /// Back to the shortest delay (after the camera delivered video).
    pub fn reset(&mut self) {
        self.next = BACKOFF_MIN;
    }

    /// The delay before the next attempt; `jitter` in `[0, 1)` scales it by
    /// 0.8 to 1.2. Doubles the following delay, up to the cap.
    pub fn next_delay(&mut self, jitter: f64) -> Duration {
        let d = self.next.mul_f64(0.8 + 0.4 * jitter.clamp(0.0, 1.0));
        self.next = (self.next * 2).min(BACKOFF_MAX);
        d.min(BACKOFF_MAX)
    }
}

/// What a stream is known to deliver.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Media {
    codec: Codec,
    width: u16,
    height: u16,
}

#[derive(Debug)]
struct Inner {
    state: CameraState,
    changed: SystemTime,
    media: Option<Media>,
    last_error: Option<String>,
}

/// Live status of one camera stream (a lens at a quality), shared between
/// its source task and the status readers.
#[derive(Debug)]
pub struct StreamStatus {
    camera: String,
    device: String,
    lens: u8,
    quality: Quality,
    inner: Mutex<Inner>,
    malformed: AtomicU64,
    reconnects: AtomicU64,
}

impl StreamStatus {
    /// A stream in state `state` as of `now`.
    pub fn new(
        camera: &str,
        device: &str,
        lens: u8,
        quality: Quality,
        state: CameraState,
        now: SystemTime,
    ) -> Self {
        Self {
            camera: camera.to_owned(),
            device: device.to_owned(),
            lens,
            quality,
            inner: Mutex::new(Inner { state, changed: now, media: None, last_error: None }),
            malformed: AtomicU64::new(0),
            reconnects: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Current state.
    #[cfg(test)]
    pub fn state(&self) -> CameraState {
        self.lock().state.clone()
    }

    /// Moves to `new` and logs one line if that is a change. An offline
    /// stream that fails again keeps its `since`; a new error text is logged
    /// once. Returns true when the state changed.
    pub fn set_state(&self, new: CameraState, now: SystemTime) -> bool {
        let mut st = self.lock();
        let (camera, quality) = (self.camera.as_str(), self.quality.name());
        match (&st.state, new) {
            (CameraState::Offline { since, last_error }, CameraState::Offline { last_error: err, .. }) => {
                if *last_error != err {
                    warn!(camera, quality, error = %err, "camera still offline");
                    st.state = CameraState::Offline { since: *since, last_error: err.clone() };
                    st.last_error = Some(err);
                }
                false
            }
            (old, new) if *old == new => false,
            (old, new) => {
                match &new {
                    CameraState::Offline { last_error, .. } => {
                        warn!(camera, quality, error = %last_error, "camera offline");
                        st.last_error = Some(last_error.clone());
                    }
                    CameraState::Online => {
                        let media = st.media;
                        let offline_ms = match old {
                            CameraState::Offline { since, .. } => {
                                self.reconnects.fetch_add(1, Ordering::Relaxed);
                                now.duration_since(*since).ok().map(|d| d.as_millis() as u64)
                            }
                            _ => None,
                        };
                        info!(
                            camera,
                            quality,
                            codec = media.map(|m| m.codec.name()),
                            width = media.map(|m| m.width),
                            height = media.map(|m| m.height),
                            offline_ms,
                            "camera online"
                        );
                    }
                    CameraState::Connecting => info!(camera, quality, "camera connecting"),
                    CameraState::Idle => info!(camera, quality, "camera idle (on demand, nobody watching)"),
                }
                st.state = new;
                st.changed = now;
                true
            }
        }
    }

    /// Records what the stream delivers.
    pub fn set_media(&self, codec: Codec, width: u16, height: u16) {
        self.lock().media = Some(Media { codec, width, height });
    }

    /// Counts one malformed packet or access unit that was dropped.
    pub fn count_malformed(&self) -> u64 {
        self.malformed.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Malformed inputs dropped so far.
    pub fn malformed(&self) -> u64 {
        self.malformed.load(Ordering::Relaxed)
    }

    /// A snapshot for status output; frame counters come from the hub track.
    pub fn snapshot(&self, track: &TrackProbe) -> CameraSnapshot {
        let st = self.lock();
        let (since, last_error) = match &st.state {
            CameraState::Offline { since, last_error } => (*since, Some(last_error.clone())),
            _ => (st.changed, st.last_error.clone()),
        };
        CameraSnapshot {
            id: self.camera.clone(),
            device: self.device.clone(),
            lens: self.lens,
            quality: self.quality,
            state: st.state.name(),
            since_unix: since.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0),
            last_error,
            codec: st.media.map(|m| m.codec),
            width: st.media.map_or(0, |m| m.width),
            height: st.media.map_or(0, |m| m.height),
            frames: track.frames_in(),
            bytes: track.bytes_in(),
            malformed: self.malformed(),
            reconnects: self.reconnects.load(Ordering::Relaxed),
            viewers: track.subscribers(),
        }
    }
}

/// One camera stream as the status page shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CameraSnapshot {
    /// Camera id (one per lens).
    pub id: String,
    /// Device the lens belongs to.
    pub device: String,
    /// Lens number from 1.
    pub lens: u8,
    /// Stream quality.
    pub quality: Quality,
    /// `idle`, `connecting`, `online` or `offline`.
    pub state: &'static str,
    /// Unix seconds of the last state change (offline: start of the outage).
    pub since_unix: u64,
    /// Last error seen, if any (kept after recovery, for on-call staff).
    pub last_error: Option<String>,
    /// Codec delivered, once known.
    pub codec: Option<Codec>,
    /// Picture width (0 until known).
    pub width: u16,
    /// Picture height (0 until known).
    pub height: u16,
    /// Frames received from the source.
    pub frames: u64,
    /// Bytes received from the source.
    pub bytes: u64,
    /// Malformed packets or access units dropped.
    pub malformed: u64,
    /// Times the stream came back after an outage.
    pub reconnects: u64,
    /// Local consumers (site subscriptions) of the stream.
    pub viewers: usize,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_the_cap_with_bounded_jitter_and_resets() {
        let mut b = Backoff::default();
        let plain: Vec<Duration> = (0..9).map(|_| b.next_delay(0.5)).collect();
        assert_eq!(plain[0], BACKOFF_MIN);
        assert_eq!(plain[1], BACKOFF_MIN * 2);
        assert_eq!(*plain.last().unwrap(), BACKOFF_MAX);
        assert!(plain.windows(2).all(|w| w[1] >= w[0]));
        for j in [0.0, 0.999, 7.0, -1.0] {
            let d = b.next_delay(j);
            assert!(d >= BACKOFF_MAX.mul_f64(0.8) && d <= BACKOFF_MAX, "{d:?}");
        }
        b.reset();
        let low = b.next_delay(0.0);
        let high = Backoff::default().next_delay(0.999);
        assert_eq!(low, BACKOFF_MIN.mul_f64(0.8));
        assert!(high > BACKOFF_MIN && high < BACKOFF_MIN.mul_f64(1.2) + Duration::from_millis(1));
    }

    #[test]
    fn offline_keeps_its_start_and_reports_the_latest_error() {
        let t0 = UNIX_EPOCH + Duration::from_secs(1_000);
        let s = StreamStatus::new("cam", "dev", 1, Quality::Main, CameraState::Connecting, t0);
        let off = |e: &str, at: u64| CameraState::Offline {
            since: UNIX_EPOCH + Duration::from_secs(at),
            last_error: e.into(),
        };
        assert!(s.set_state(off("connection refused", 1_001), t0 + Duration::from_secs(1)));
        assert!(!s.set_state(off("connection refused", 1_005), t0 + Duration::from_secs(5)));
        assert!(!s.set_state(off("401", 1_009), t0 + Duration::from_secs(9)));
        let probe = ponte_proto::hub::track(ponte_proto::hub::TrackKey::new("cam", Quality::Main)).probe();
        let snap = s.snapshot(&probe);
        assert_eq!((snap.state, snap.since_unix), ("offline", 1_001));
        assert_eq!(snap.last_error.as_deref(), Some("401"));
        assert!(s.set_state(CameraState::Online, t0 + Duration::from_secs(12)));
        assert!(!s.set_state(CameraState::Online, t0 + Duration::from_secs(13)));
        let snap = s.snapshot(&probe);
        assert_eq!((snap.state, snap.since_unix, snap.reconnects), ("online", 1_012, 1));
        assert_eq!(snap.last_error.as_deref(), Some("401"), "last error kept for on-call staff");
    }
}
