//! The GStreamer pipeline of one transcode, and the pure parts around it:
//! the output size, the pipeline description, the plugins it needs.
//!
//! Access units go in through `appsrc` as `gst::Buffer`s wrapping the
//! frame's `Bytes` (no copy); encoded access units come out of `appsink` on
//! GStreamer's streaming thread, wrapped back into `Bytes` without a copy
//! (`Bytes::from_owner` on the mapped buffer), and cross to the async side
//! through a bounded channel that drops when full, never blocks.

use bytes::Bytes;
use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;
use ponte_proto::media::{Codec, CodecConfig, Frame};
use tokio::sync::mpsc;

/// Largest output picture: browsers get a thumbnail-class stream, cheap to
/// encode on the agent (ultrafast x264 at 640×360 runs at a fraction of a core).
pub const MAX_WIDTH: u16 = 640;
/// See [`MAX_WIDTH`].
pub const MAX_HEIGHT: u16 = 360;
/// Frames between keyframes: about 2 s at 15 fps, so a new browser waits
/// at most that long for a picture.
pub const GOP_FRAMES: u32 = 30;
/// Target bitrate of the H.264 output, kbit/s.
pub const BITRATE_KBPS: u32 = 600;

/// GStreamer elements a transcode needs, with the Debian package of each.
pub const ELEMENTS: [(&str, &str); 9] = [
    ("appsrc", "gstreamer1.0-plugins-base"),
    ("appsink", "gstreamer1.0-plugins-base"),
    ("videoscale", "gstreamer1.0-plugins-base"),
    ("videoconvert", "gstreamer1.0-plugins-base"),
    ("h265parse", "gstreamer1.0-plugins-bad"),
    ("h264parse", "gstreamer1.0-plugins-bad"),
    ("avdec_h265", "gstreamer1.0-libav"),
    ("avdec_h264", "gstreamer1.0-libav"),
    ("x264enc", "gstreamer1.0-plugins-ugly"),
];

/// Why a transcode could not run.
#[derive(Debug, thiserror::Error)]
pub enum TranscodeError {
    /// GStreamer itself failed to initialise.
    #[error("GStreamer cannot start: {0}")]
    Init(String),
    /// An element is not installed.
    #[error("GStreamer element `{element}` is missing: install the Debian package {package}")]
    Missing {
        /// Element name.
        element: &'static str,
        /// Debian package that ships it.
        package: &'static str,
    },
    /// The pipeline failed to build, start or run.
    #[error("GStreamer pipeline: {0}")]
    Pipeline(String),
}

/// Initialises GStreamer once and names the first missing element of a transcode.
pub fn check_elements() -> Result<(), TranscodeError> {
    check(&ELEMENTS)
}

/// Initialises GStreamer once and names the first of `elements` (element,
/// Debian package) that is not installed.
pub fn check(elements: &[(&'static str, &'static str)]) -> Result<(), TranscodeError> {
    gst::init().map_err(|e| TranscodeError::Init(e.to_string()))?;
    match elements.iter().find(|(element, _)| gst::ElementFactory::find(element).is_none()) {
        Some(&(element, package)) => Err(TranscodeError::Missing { element, package }),
        None => Ok(()),
    }
}

/// The output size for an input of `width`×`height`: the same aspect ratio
/// within [`MAX_WIDTH`]×[`MAX_HEIGHT`], never larger than the input, even
/// sides (4:2:0). An unknown input size gives the largest 16:9.
pub fn fit(width: u16, height: u16) -> (u16, u16) {
    if width == 0 || height == 0 {
        return (MAX_WIDTH, MAX_HEIGHT);
    }
    let (w, h) = (u32::from(width), u32::from(height));
    let (max_w, max_h) = (u32::from(MAX_WIDTH).min(w), u32::from(MAX_HEIGHT).min(h));
    // Scale by the tighter of the two bounds.
    let (out_w, out_h) = if w * max_h <= h * max_w { (w * max_h / h, max_h) } else { (max_w, h * max_w / w) };
    let even = |n: u32| u16::try_from((n & !1).max(2)).unwrap_or(2);
    (even(out_w), even(out_h))
}

/// The `gst-launch` description of a transcode from `codec` to H.264 at
/// `width`×`height`. Constrained Baseline, no B-frames (zerolatency): what
/// every WebRTC browser decodes, in the order it was encoded.
pub fn description(codec: Codec, width: u16, height: u16) -> String {
    let (caps, parse, decode) = match codec {
        Codec::H265 => ("video/x-h265", "h265parse", "avdec_h265"),
        Codec::H264 => ("video/x-h264", "h264parse", "avdec_h264"),
    };
    format!(
        "appsrc name=src is-live=true format=time max-bytes=8000000 leaky-type=downstream \
         caps={caps},stream-format=byte-stream,alignment=au \
         ! {parse} ! {decode} ! videoscale ! videoconvert \
         ! video/x-raw,format=I420,width={width},height={height},pixel-aspect-ratio=1/1 \
         ! x264enc tune=zerolatency speed-preset=ultrafast key-int-max={GOP_FRAMES} bitrate={BITRATE_KBPS} \
           threads=1 \
         ! video/x-h264,profile=constrained-baseline \
         ! h264parse config-interval=-1 \
         ! video/x-h264,stream-format=byte-stream,alignment=au \
         ! appsink name=sink sync=false max-buffers=8 drop=true"
    )
}

/// 90 kHz ticks to GStreamer nanoseconds and back.
fn pts_to_ns(pts: u64) -> u64 {
    u64::try_from(u128::from(pts) * 100_000 / 9).unwrap_or(u64::MAX)
}

fn ns_to_pts(ns: u64) -> u64 {
    // Rounded, so a pts survives the round trip.
    u64::try_from((u128::from(ns) * 9 + 50_000) / 100_000).unwrap_or(u64::MAX)
}

/// A running pipeline; stopped (state `Null`) when dropped.
pub struct Pipeline {
    pipeline: gst::Pipeline,
    src: gst_app::AppSrc,
    /// The input codec, which the pipeline's parser and decoder are for.
    pub codec: Codec,
    /// The output size.
    pub size: (u16, u16),
}

impl Pipeline {
    /// Builds and starts a pipeline for input like `config`; encoded
    /// frames are sent to `out` (dropped when it is full).
    pub fn start(config: &CodecConfig, out: mpsc::Sender<Frame>) -> Result<Self, TranscodeError> {
        check_elements()?;
        let size = fit(config.width, config.height);
        let desc = description(config.codec, size.0, size.1);
        let pipeline = gst::parse::launch(&desc)
            .map_err(|e| TranscodeError::Pipeline(e.to_string()))?
            .downcast::<gst::Pipeline>()
            .map_err(|_| TranscodeError::Pipeline("the description is not a pipeline".into()))?;
        let src = pipeline
            .by_name("src")
            .and_then(|e| e.downcast::<gst_app::AppSrc>().ok())
            .ok_or_else(|| TranscodeError::Pipeline("no appsrc named `src`".into()))?;
        let sink = pipeline
            .by_name("sink")
            .and_then(|e| e.downcast::<gst_app::AppSink>().ok())
            .ok_or_else(|| TranscodeError::Pipeline("no appsink named `sink`".into()))?;
        sink.set_callbacks(
            gst_app::AppSinkCallbacks::builder()
                .new_sample(move |sink| {
                    let sample = sink.pull_sample().map_err(|_| gst::FlowError::Eos)?;
                    if let Some(frame) = encoded_frame(&sample) {
                        // Full: the async side is behind; the hub would
                        // skip to the next keyframe anyway.
                        if let Err(mpsc::error::TrySendError::Closed(_)) = out.try_send(frame) {
                            return Err(gst::FlowError::Eos);
                        }
                    }
                    Ok(gst::FlowSuccess::Ok)
                })
                .build(),
        );
        let me = Self { pipeline, src, codec: config.codec, size };
        me.pipeline.set_state(gst::State::Playing).map_err(|e| TranscodeError::Pipeline(e.to_string()))?;
        Ok(me)
    }

    /// Feeds one access unit (Annex B, parameter sets on keyframes).
    pub fn push(&self, access_unit: Bytes, pts: u64) -> Result<(), TranscodeError> {
        let mut buffer = gst::Buffer::from_slice(access_unit);
        if let Some(b) = buffer.get_mut() {
            b.set_pts(gst::ClockTime::from_nseconds(pts_to_ns(pts)));
        }
        self.src.push_buffer(buffer).map(drop).map_err(|e| TranscodeError::Pipeline(format!("{e:?}")))
    }

    /// The pipeline's bus, for its errors.
    pub fn bus(&self) -> Option<gst::Bus> {
        self.pipeline.bus()
    }
}

impl Drop for Pipeline {
    fn drop(&mut self) {
        let _ = self.pipeline.set_state(gst::State::Null);
    }
}

/// One encoded access unit from the sink, without copying its bytes.
fn encoded_frame(sample: &gst::Sample) -> Option<Frame> {
    let buffer = sample.buffer_owned()?;
    let keyframe = !buffer.flags().contains(gst::BufferFlags::DELTA_UNIT);
    let pts = buffer.pts().map_or(0, |t| ns_to_pts(t.nseconds()));
    let mapped = buffer.into_mapped_buffer_readable().ok()?;
    Some(Frame { pts, keyframe, payload: Bytes::from_owner(mapped) })
}

/// An error message from a pipeline's bus, if `msg` is one (or the end of
/// the stream, which a live transcode never reaches on its own).
pub fn bus_failure(msg: &gst::Message) -> Option<String> {
    match msg.view() {
        gst::MessageView::Error(e) => {
            let from = e.src().map(|s| s.name().to_string()).unwrap_or_default();
            Some(format!("{from}: {}", e.error()))
        }
        gst::MessageView::Eos(_) => Some("the pipeline reached its end".into()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_fits_640x360_keeping_the_aspect_and_never_upscales() {
        assert_eq!(fit(1920, 1080), (640, 360));
        assert_eq!(fit(3840, 2160), (640, 360));
        assert_eq!(fit(2560, 1920), (480, 360), "4:3");
        assert_eq!(fit(1080, 1920), (202, 360), "portrait");
        assert_eq!(fit(2000, 200), (640, 64), "panorama");
        assert_eq!(fit(320, 240), (320, 240), "smaller input kept");
        assert_eq!(fit(0, 0), (640, 360));
        assert_eq!(fit(1, 1), (2, 2));
    }

    #[test]
    fn description_decodes_the_input_codec_and_caps_the_output() {
        let d = description(Codec::H265, 640, 360);
        assert!(
            d.contains("caps=video/x-h265,stream-format=byte-stream,alignment=au ! h265parse ! avdec_h265")
        );
        assert!(d.contains("width=640,height=360"));
        assert!(d.contains("key-int-max=30") && d.contains("profile=constrained-baseline"));
        assert!(d.contains("h264parse config-interval=-1"));
        assert!(description(Codec::H264, 320, 180).contains("h264parse ! avdec_h264"));
    }

    #[test]
    fn pts_survive_the_round_trip_through_nanoseconds() {
        for pts in [0, 1, 3000, 6006, 90_000 * 3600 * 24, u64::MAX / 20_000] {
            assert_eq!(ns_to_pts(pts_to_ns(pts)), pts);
        }
    }
}
