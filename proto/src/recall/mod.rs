//! Recall (issue 21): the agent's recording store, and the evidence it
//! exports. Sans-IO where it can be: the store is plain files under one
//! directory and blocking I/O (the agent runs it on its own thread), the MP4
//! muxer and the manifest are pure functions of their input.

use crate::media::{CodecConfig, Frame};
use std::sync::Arc;

pub mod evidence;
pub mod mp4;
pub mod store;

/// One GOP as recorded: the keyframe's wall-clock time and the frames.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedGop {
    /// Wall-clock time of the GOP's keyframe at the agent, Unix milliseconds.
    pub wall_ms: u64,
    /// The track's GOP sequence number when it was recorded.
    pub seq: u64,
    /// Decoder configuration of the GOP.
    pub config: Arc<CodecConfig>,
    /// Frames in decoding order; the first is a keyframe.
    pub frames: Vec<Frame>,
}

impl RecordedGop {
    /// Wall-clock time of `frame` (one of this GOP's), Unix milliseconds:
    /// the keyframe's time plus the frame's pts offset.
    pub fn frame_wall_ms(&self, frame: &Frame) -> u64 {
        let pts0 = self.frames.first().map_or(frame.pts, |f| f.pts);
        self.wall_ms
            .saturating_add(frame.pts.saturating_sub(pts0) / u64::from(crate::media::CLOCK_RATE / 1000))
    }

    /// Wall-clock time just after the GOP's last frame (its pts span plus
    /// one frame interval, estimated from the span), Unix milliseconds.
    pub fn end_wall_ms(&self) -> u64 {
        let Some(last) = self.frames.last() else { return self.wall_ms };
        let n = self.frames.len() as u64;
        let span = self.frame_wall_ms(last).saturating_sub(self.wall_ms);
        self.frame_wall_ms(last).saturating_add(if n > 1 { span / (n - 1) } else { 0 })
    }
}
