//! The capture clock of a WHEP session: which RTP timestamp of the stream
//! sent to the browser belongs to which capture time, so the page can put
//! the picture's age (capture → shown) on every tile. It plays the part of
//! an RTCP sender report mapped to the camera's capture clock, carried on
//! the session resource (`GET /whep/session/{id}`) the page polls anyway.
//!
//! The capture time is the camera's own when the frame carries ponte's
//! capture-time SEI (synthetic cameras, and anything stamped at ingest);
//! otherwise the time the relay sent it, which makes the age the relay's
//! part of the trip only, and the page says so.
//!
//! Written by the session task, read by HTTP handlers: atomics, no lock.

use ponte_proto::h264;
use ponte_proto::media::Codec;
use serde::Serialize;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Where a reference's capture time came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CaptureSource {
    /// The camera's capture time, from the frame's SEI.
    Camera,
    /// The relay's send time: the camera's clock is unknown.
    Relay,
}

/// One session's reference point, updated at each keyframe sent live.
#[derive(Debug, Default)]
pub struct CaptureClock {
    rtp: AtomicU32,
    /// Capture time in µs since the Unix epoch, 0 before the first
    /// reference; the low bit says [`CaptureSource::Camera`].
    capture: AtomicU64,
}

/// A reference as the page gets it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct CaptureRef {
    /// RTP timestamp (90 kHz) of the frame.
    pub rtp: u32,
    /// Its capture time, ms since the Unix epoch (fractional).
    pub capture_ms: f64,
    /// Where that capture time came from.
    pub source: CaptureSource,
}

impl CaptureClock {
    /// Notes a frame sent live with RTP timestamp `rtp`: keyframes, and the
    /// first live frame, become the reference (between them the RTP clock
    /// follows the camera's pts, so one point per GOP is enough).
    pub fn observe(&self, codec: Codec, keyframe: bool, access_unit: &[u8], rtp: u32) {
        if !keyframe && self.capture.load(Ordering::Relaxed) != 0 {
            return;
        }
        let sei = match codec {
            Codec::H264 => h264::find_capture_time(access_unit),
            Codec::H265 => None,
        };
        let (micros, camera) = match sei {
            Some(micros) => (micros, 1),
            None => {
                let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_micros() as u64);
                (now.unwrap_or(0), 0)
            }
        };
        // Readers may see the new rtp with the old capture for an instant:
        // one poll of the page, one GOP apart at most, and it self-corrects.
        self.rtp.store(rtp, Ordering::Relaxed);
        self.capture.store((micros & !3) | camera | 2, Ordering::Release);
    }

    /// The current reference, if a frame has been sent live.
    pub fn reference(&self) -> Option<CaptureRef> {
        let capture = self.capture.load(Ordering::Acquire);
        if capture == 0 {
            return None;
        }
        let source = if capture & 1 == 1 { CaptureSource::Camera } else { CaptureSource::Relay };
        Some(CaptureRef {
            rtp: self.rtp.load(Ordering::Relaxed),
            capture_ms: (capture & !3) as f64 / 1000.0,
            source,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;

    fn frame_with_sei(micros: u64) -> Vec<u8> {
        let mut buf = BytesMut::from(&[0u8, 0, 0, 1][..]);
        h264::put_capture_time_sei(micros, &mut buf);
        buf.extend_from_slice(&[0, 0, 0, 1, 0x65, 0x88, 0x84, 0x00]);
        buf.to_vec()
    }

    #[test]
    fn keyframes_with_sei_give_the_camera_clock() {
        let clock = CaptureClock::default();
        assert_eq!(clock.reference(), None);
        clock.observe(Codec::H264, true, &frame_with_sei(1_700_000_000_123_456), 4242);
        let r = clock.reference().expect("a reference");
        assert_eq!(r.rtp, 4242);
        assert_eq!(r.source, CaptureSource::Camera);
        assert!((r.capture_ms - 1_700_000_000_123.456).abs() < 0.01, "{}", r.capture_ms);
        // A delta frame after the reference changes nothing.
        clock.observe(Codec::H264, false, &frame_with_sei(1_700_000_000_200_000), 9000);
        assert_eq!(clock.reference().expect("kept").rtp, 4242);
    }

    #[test]
    fn without_sei_the_relay_time_is_used_and_said() {
        let clock = CaptureClock::default();
        clock.observe(Codec::H265, false, &[0, 0, 1, 0x26, 1, 0xaf], 7);
        let r = clock.reference().expect("first live frame is a reference");
        assert_eq!(r.source, CaptureSource::Relay);
        let now = SystemTime::now().duration_since(UNIX_EPOCH).expect("after 1970").as_millis() as f64;
        assert!((now - r.capture_ms).abs() < 1000.0);
    }
}
