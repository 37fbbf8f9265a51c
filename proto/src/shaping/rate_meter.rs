//! The bitrate of one stream over a sliding window, keyframes counted apart.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Bitrate of one stream over a sliding window, with its keyframes apart.
#[derive(Debug, Clone)]
pub struct RateMeter {
    window: Duration,
    samples: VecDeque<(Instant, u64, bool)>,
    bytes: u64,
    keyframe_bytes: u64,
    first: Option<Instant>,
}

/// Window of [`RateMeter`]: a few GOPs of a typical camera.
pub const RATE_WINDOW: Duration = Duration::from_secs(6);
/// Least observation before a rate counts as measured.
pub const RATE_MIN_SPAN: Duration = Duration::from_secs(1);

impl Default for RateMeter {
    fn default() -> Self {
        Self::new(RATE_WINDOW)
    }
}

impl RateMeter {
    /// A meter averaging over `window`.
    pub fn new(window: Duration) -> Self {
        Self { window, samples: VecDeque::new(), bytes: 0, keyframe_bytes: 0, first: None }
    }

    /// Records one frame.
    pub fn record(&mut self, now: Instant, bytes: u64, keyframe: bool) {
        self.first.get_or_insert(now);
        self.samples.push_back((now, bytes, keyframe));
        self.bytes += bytes;
        if keyframe {
            self.keyframe_bytes += bytes;
        }
        self.expire(now);
    }

    fn expire(&mut self, now: Instant) {
        while let Some(&(t, b, k)) = self.samples.front() {
            if now.saturating_duration_since(t) <= self.window {
                break;
            }
            self.samples.pop_front();
            self.bytes -= b;
            if k {
                self.keyframe_bytes -= b;
            }
        }
    }

    fn span(&self, now: Instant) -> Option<f64> {
        let first = self.first?;
        let span = now.saturating_duration_since(first).min(self.window);
        (span >= RATE_MIN_SPAN).then_some(span.as_secs_f64())
    }

    /// Time of the newest frame recorded.
    pub fn latest(&self) -> Option<Instant> {
        self.samples.back().map(|s| s.0)
    }

    /// All frames, bit/s (`None` until observed for a second).
    pub fn bps(&mut self, now: Instant) -> Option<f64> {
        self.expire(now);
        self.span(now).map(|s| self.bytes as f64 * 8.0 / s)
    }

    /// Keyframes only, bit/s.
    pub fn keyframes_bps(&mut self, now: Instant) -> Option<f64> {
        self.expire(now);
        self.span(now).map(|s| self.keyframe_bytes as f64 * 8.0 / s)
    }
}
