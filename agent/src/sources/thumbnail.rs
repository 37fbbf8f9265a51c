//! A JPEG thumbnail of a camera, taken from the keyframe its hub track has
//! cached: what a camera alarm carries to the partner consoles (issue 23).
//!
//! Only the cached keyframe is decoded, with its parameter sets in front
//! (Annex B), by one short GStreamer pipeline (`appsrc ! h264parse|h265parse
//! ! avdec_h264|avdec_h265 ! videoscale ! videoconvert ! jpegenc ! appsink`),
//! the same elements as the browser transcode plus `jpegenc`. The substream
//! is preferred when it has a keyframe cached (a quarter of the pixels to
//! decode). An idle on-demand camera is never pulled for a thumbnail: with
//! nothing cached the answer is an error at once.
//!
//! Decoding runs on the blocking pool, at most [`MAX_AT_ONCE`] at a time, and
//! a caller waits at most [`TIMEOUT`] (queueing included). A pipeline per
//! call rather than one kept per camera: measured on this 2-core machine
//! (synthetic H.264 IDR, 8 calls each, warm), 1920×1080 to 640 wide takes
//! 19-33 ms, 1280×720 to 320 wide 10-13 ms, a 320×180 substream 8 ms; the
//! first call of the process adds about 100-170 ms (GStreamer loading its
//! plugins). A real camera's IDR is larger than the test pattern's and
//! decodes slower, still far inside [`TIMEOUT`].

use crate::sources::cameras::Cameras;
use crate::sources::transcode::{pipeline, TranscodeError};
use bytes::Bytes;
use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;
use ponte_proto::hub::HubItem;
use ponte_proto::media::{Codec, Quality};
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio::sync::Semaphore;

/// JPEG quality (jpegenc's 0-100 scale).
pub const QUALITY: u32 = 75;
/// Most thumbnails decoding at once: each holds a decoder and a full picture.
pub const MAX_AT_ONCE: usize = 2;
/// Longest a caller waits for a thumbnail, queueing included.
pub const TIMEOUT: Duration = Duration::from_secs(2);

/// GStreamer elements a thumbnail needs, with the Debian package of each.
pub const ELEMENTS: [(&str, &str); 9] = [
    ("appsrc", "gstreamer1.0-plugins-base"),
    ("appsink", "gstreamer1.0-plugins-base"),
    ("videoscale", "gstreamer1.0-plugins-base"),
    ("videoconvert", "gstreamer1.0-plugins-base"),
    ("h265parse", "gstreamer1.0-plugins-bad"),
    ("h264parse", "gstreamer1.0-plugins-bad"),
    ("avdec_h265", "gstreamer1.0-libav"),
    ("avdec_h264", "gstreamer1.0-libav"),
    ("jpegenc", "gstreamer1.0-plugins-good"),
];

/// Why no thumbnail.
#[derive(Debug, thiserror::Error)]
pub enum ThumbnailError {
    /// The agent has no camera of that id.
    #[error("camera `{0}`: no such camera on this agent")]
    UnknownCamera(String),
    /// Neither stream has a keyframe cached: the camera is idle (on demand,
    /// nobody watching), offline, or between a pause and its first keyframe.
    #[error("camera `{0}`: no keyframe cached (idle on demand, offline or just starting); not pulled for a thumbnail")]
    NoKeyframe(String),
    /// A GStreamer element is not installed.
    #[error(
        "camera `{camera}`: GStreamer element `{element}` is missing: install the Debian package {package}"
    )]
    Missing {
        /// Camera id.
        camera: String,
        /// Element name.
        element: &'static str,
        /// Debian package that ships it.
        package: &'static str,
    },
    /// GStreamer failed to start, or the keyframe did not decode.
    #[error("camera `{camera}`: thumbnail of the {codec} keyframe failed: {why}")]
    Decode {
        /// Camera id.
        camera: String,
        /// Codec of the keyframe.
        codec: &'static str,
        /// What GStreamer said.
        why: String,
    },
    /// No picture within [`TIMEOUT`] (decoders busy or stuck).
    #[error("camera `{0}`: no thumbnail within {ms} ms", ms = TIMEOUT.as_millis())]
    Timeout(String),
}

/// A JPEG (at most `max_width` wide, aspect kept, quality ~75) of the newest keyframe cached for `camera`,
/// from its substream if it has one cached, else the main stream. Never starts an idle on-demand camera:
/// if nothing is cached, error at once. Decoding runs off the async threads (spawn_blocking), bounded to
/// at most 2 at once, and times out (2 s).
pub async fn thumbnail(cameras: &Cameras, camera: &str, max_width: u32) -> Result<Bytes, ThumbnailError> {
    if !cameras.lists(camera, Quality::Main) && !cameras.lists(camera, Quality::Sub) {
        return Err(ThumbnailError::UnknownCamera(camera.to_owned()));
    }
    let item = cameras
        .cached_keyframe(camera, Quality::Sub)
        .or_else(|| cameras.cached_keyframe(camera, Quality::Main))
        .ok_or_else(|| ThumbnailError::NoKeyframe(camera.to_owned()))?;
    let owned = camera.to_owned();
    let work = async move {
        let permit = decoders().acquire_owned().await.map_err(|e| ThumbnailError::Decode {
            camera: owned.clone(),
            codec: item.config.codec.name(),
            why: e.to_string(),
        })?;
        let codec = item.config.codec.name();
        let task = tokio::task::spawn_blocking(move || {
            // Held by the decode itself: a caller that timed out does not
            // free its place until the decoder is done.
            let _permit = permit;
            encode(&owned, &item, max_width)
        });
        task.await.map_err(|e| ThumbnailError::Decode {
            camera: camera.to_owned(),
            codec,
            why: e.to_string(),
        })?
    };
    tokio::time::timeout(TIMEOUT, work).await.map_err(|_| ThumbnailError::Timeout(camera.to_owned()))?
}

/// The decoders' places, shared by every caller.
fn decoders() -> Arc<Semaphore> {
    static PLACES: OnceLock<Arc<Semaphore>> = OnceLock::new();
    PLACES.get_or_init(|| Arc::new(Semaphore::new(MAX_AT_ONCE))).clone()
}

/// The output size for a `width`×`height` picture at most `max_width` wide:
/// the aspect kept, never upscaled, even sides. `None` for an unknown size
/// (the scaler then keeps the aspect from the width alone).
fn fit(width: u16, height: u16, max_width: u32) -> Option<(u32, u32)> {
    let (w, h) = (u32::from(width), u32::from(height));
    if w == 0 || h == 0 {
        return None;
    }
    let out_w = max_width.min(w).max(2) & !1;
    let out_h = (u64::from(h) * u64::from(out_w) / u64::from(w)) as u32;
    Some((out_w, (out_h & !1).max(2)))
}

/// The `gst-launch` description of one thumbnail.
fn description(codec: Codec, size: Option<(u32, u32)>, max_width: u32) -> String {
    let (caps, parse, decode) = match codec {
        Codec::H265 => ("video/x-h265", "h265parse", "avdec_h265"),
        Codec::H264 => ("video/x-h264", "h264parse", "avdec_h264"),
    };
    let raw = match size {
        Some((w, h)) => format!("width={w},height={h}"),
        None => format!("width={}", max_width.max(2) & !1),
    };
    format!(
        "appsrc name=src format=time caps={caps},stream-format=byte-stream,alignment=au \
         ! {parse} ! {decode} ! videoscale ! videoconvert \
         ! video/x-raw,{raw},pixel-aspect-ratio=1/1 \
         ! jpegenc quality={QUALITY} ! appsink name=sink sync=false max-buffers=1"
    )
}

/// Decodes the keyframe of `item` and encodes it as a JPEG; blocking.
fn encode(camera: &str, item: &HubItem, max_width: u32) -> Result<Bytes, ThumbnailError> {
    let codec = item.config.codec;
    let fail = |why: String| ThumbnailError::Decode { camera: camera.to_owned(), codec: codec.name(), why };
    pipeline::check(&ELEMENTS).map_err(|e| match e {
        TranscodeError::Missing { element, package } => {
            ThumbnailError::Missing { camera: camera.to_owned(), element, package }
        }
        other => fail(other.to_string()),
    })?;
    let size = fit(item.config.width, item.config.height, max_width);
    let gst_pipeline = gst::parse::launch(&description(codec, size, max_width))
        .map_err(|e| fail(e.to_string()))?
        .downcast::<gst::Pipeline>()
        .map_err(|_| fail("the description is not a pipeline".into()))?;
    let running = Running(gst_pipeline);
    let src = running
        .0
        .by_name("src")
        .and_then(|e| e.downcast::<gst_app::AppSrc>().ok())
        .ok_or_else(|| fail("no appsrc named `src`".into()))?;
    let sink = running
        .0
        .by_name("sink")
        .and_then(|e| e.downcast::<gst_app::AppSink>().ok())
        .ok_or_else(|| fail("no appsink named `sink`".into()))?;
    running.0.set_state(gst::State::Playing).map_err(|e| fail(e.to_string()))?;
    let mut buffer = gst::Buffer::from_slice(ponte_proto::egress::decodable(item));
    if let Some(b) = buffer.get_mut() {
        b.set_pts(gst::ClockTime::ZERO);
    }
    src.push_buffer(buffer).map_err(|e| fail(format!("{e:?}")))?;
    src.end_of_stream().map_err(|e| fail(format!("{e:?}")))?;
    // Bounded too, so a stuck decoder frees its place.
    let wait = gst::ClockTime::from_mseconds(TIMEOUT.as_millis() as u64);
    match sink.try_pull_sample(wait) {
        Some(sample) => {
            let buffer = sample.buffer_owned().ok_or_else(|| fail("an empty sample".into()))?;
            let mapped =
                buffer.into_mapped_buffer_readable().map_err(|_| fail("an unreadable buffer".into()))?;
            Ok(Bytes::from_owner(mapped))
        }
        None => {
            let why = running
                .0
                .bus()
                .and_then(|bus| bus.pop_filtered(&[gst::MessageType::Error]))
                .and_then(|msg| pipeline::bus_failure(&msg))
                .unwrap_or_else(|| "the decoder gave no picture".into());
            Err(fail(why))
        }
    }
}

/// A pipeline stopped (state `Null`) when dropped, on every path.
struct Running(gst::Pipeline);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.set_state(gst::State::Null);
    }
}

#[cfg(test)]
mod tests;
