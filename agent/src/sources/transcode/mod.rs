//! H.264 for browsers from an H.265 camera (`browser_h264 = "transcode"`):
//! the lens's substream is its main stream decoded, scaled to at most
//! 640×360 and re-encoded to Constrained Baseline H.264, which every WebRTC
//! browser plays. Modelled as the substream (quality `sub`, marked
//! transcoded in the catalog), so site policy (max quality) and shaping
//! apply to it like to a camera's own substream.
//!
//! Like the synthetic camera it runs only while watched: it waits for a
//! subscriber of its track, subscribes to the main stream (which pulls an
//! on-demand camera), and stops [`LINGER`] after the last viewer left. At
//! most `agent.max_transcodes` run at once ([`Transcodes`]); a subscription
//! over the cap is refused naming the key.
//!
//! One GStreamer pipeline does the work (`appsrc ! h265parse ! avdec_h265
//! ! videoscale ! videoconvert ! x264enc ! h264parse ! appsink`), rather
//! than decoding with GStreamer and encoding with openh264: the raw
//! pictures (345 KB each at 640×360) never cross into Rust, x264's
//! ultrafast preset costs less than openh264 at the same size, and the
//! pipeline threads are GStreamer's own. Measured on this 2-core machine
//! (gst-launch, the same pipeline, 10 s of 30 fps H.265 in, 640×360 out):
//! 1280×720 costs 1.5 CPU-seconds (15 % of a core), 1920×1080 2.5 s (25 %),
//! so the default cap of 4 stays within one core.
//! Needs gstreamer1.0-plugins-{base,bad,ugly} and gstreamer1.0-libav at run
//! time; `ponte-agent config check` names a missing one.
//!
//! The capture-time SEI of the main stream does not survive the decoder:
//! the transcoded stream carries none.

mod budget;
pub mod pipeline;

pub use budget::{Transcodes, DEFAULT_MAX_TRANSCODES};
pub use pipeline::{check_elements, TranscodeError};

use crate::sources::supervision::{CameraState, StreamStatus};
use crate::sources::synthetic::{linger, LINGER};
use futures_util::StreamExt;
use pipeline::Pipeline;
use ponte_proto::h264;
use ponte_proto::hub::{Hub, TrackKey, TrackWriter};
use ponte_proto::media::{Codec, CodecConfig, Frame, Quality};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::sync::mpsc;
use tracing::{info, warn};

/// Pause before retrying a transcode that failed.
const RETRY_AFTER: Duration = Duration::from_secs(2);
/// Encoded frames waiting for the async side; more are dropped.
const OUT_QUEUE: usize = 16;

/// One lens's transcode: its camera id, where the main stream is, where
/// the substream goes.
pub struct TranscodeTask {
    /// Camera id (one lens).
    pub camera: String,
    /// The hub holding the lens's main stream.
    pub hub: Arc<Hub>,
    /// The substream track it writes.
    pub writer: TrackWriter,
    /// The cap and the running set.
    pub budget: Arc<Transcodes>,
    /// The substream's status row.
    pub status: Arc<StreamStatus>,
}

/// Why a transcode session ended.
enum Stop {
    /// Nobody watched for [`LINGER`].
    Idle,
    /// The substream track was closed (device removed).
    Closed,
    /// Something failed; retried after [`RETRY_AFTER`] while watched.
    Failed(String),
}

/// Starts the task; it idles until the substream is subscribed.
pub fn spawn(task: TranscodeTask) -> tokio::task::JoinHandle<()> {
    tokio::spawn(task.run(LINGER))
}

impl TranscodeTask {
    async fn run(self, linger_for: Duration) {
        let mut subscribers = self.writer.subscribers();
        loop {
            if subscribers.wait_for(|&n| n > 0).await.is_err() || self.writer.is_closed() {
                return;
            }
            self.budget.started(&self.camera);
            info!(camera = %self.camera, "transcode: a browser watches, decoding the main stream to H.264");
            let stop = self.session(&mut subscribers, linger_for).await;
            self.budget.stopped(&self.camera);
            // Nobody should start on pictures from before the pause.
            self.writer.clear_cache();
            let now = SystemTime::now();
            match stop {
                Stop::Closed => return,
                Stop::Idle => {
                    self.status.set_state(CameraState::Idle, now);
                    info!(camera = %self.camera, "transcode: no viewers for {} s, stopped", linger_for.as_secs());
                }
                Stop::Failed(why) => {
                    warn!(camera = %self.camera, "transcode failed, retrying in {} s: {why}", RETRY_AFTER.as_secs());
                    let last_error = format!("transcode: {why}");
                    self.status.set_state(CameraState::Offline { since: now, last_error }, now);
                    tokio::time::sleep(RETRY_AFTER).await;
                }
            }
        }
    }

    /// Transcodes until nobody watches for `linger_for`, or a failure.
    async fn session(
        &self,
        subscribers: &mut tokio::sync::watch::Receiver<usize>,
        linger_for: Duration,
    ) -> Stop {
        let Some(mut main) = self.hub.subscribe(&TrackKey::new(&self.camera, Quality::Main)) else {
            return Stop::Failed("the main stream is not published".into());
        };
        let (tx, mut rx) = mpsc::channel::<Frame>(OUT_QUEUE);
        let mut pipeline: Option<Pipeline> = None;
        let mut bus: Option<gstreamer::bus::BusStream> = None;
        let mut output: Option<Arc<CodecConfig>> = None;
        let mut size = (pipeline::MAX_WIDTH, pipeline::MAX_HEIGHT);
        let idle = linger(subscribers, linger_for);
        tokio::pin!(idle);
        loop {
            tokio::select! {
                _ = &mut idle => return if self.writer.is_closed() { Stop::Closed } else { Stop::Idle },
                item = main.next() => {
                    let Some(item) = item else {
                        return Stop::Failed("the main stream ended (camera offline?)".into());
                    };
                    if pipeline.as_ref().is_some_and(|p| p.codec != item.config.codec) {
                        return Stop::Failed(format!("the main stream switched to {}", item.config.codec.name()));
                    }
                    if pipeline.is_none() {
                        // A decoder starts at a keyframe.
                        if !item.frame.keyframe {
                            continue;
                        }
                        match Pipeline::start(&item.config, tx.clone()) {
                            Ok(p) => {
                                bus = p.bus().map(|b| b.stream());
                                size = p.size;
                                self.status.set_media(Codec::H264, size.0, size.1);
                                info!(camera = %self.camera, from = item.config.codec.name(), width = p.size.0, height = p.size.1, "transcode: pipeline running");
                                pipeline = Some(p);
                            }
                            Err(e) => return Stop::Failed(e.to_string()),
                        }
                    }
                    let payload = ponte_proto::egress::decodable(&item);
                    if let Some(p) = &pipeline {
                        if let Err(e) = p.push(payload, item.frame.pts) {
                            return Stop::Failed(e.to_string());
                        }
                    }
                }
                frame = rx.recv() => {
                    // `tx` lives in this function: the channel cannot close.
                    let Some(frame) = frame else { continue };
                    self.publish(frame, size, &mut output);
                }
                msg = next_message(&mut bus) => {
                    if let Some(why) = msg.as_ref().and_then(pipeline::bus_failure) {
                        return Stop::Failed(why);
                    }
                }
            }
        }
    }

    /// Pushes one encoded frame, setting the track's config from the first
    /// keyframe's parameter sets (again whenever they change).
    fn publish(&self, frame: Frame, (width, height): (u16, u16), output: &mut Option<Arc<CodecConfig>>) {
        if frame.keyframe {
            if let (Some(sps), Some(pps)) = h264::parameter_sets(&frame.payload) {
                let fresh = output.as_ref().is_none_or(|c| {
                    c.parameter_sets.first().map(|s| &s[..]) != Some(sps)
                        || c.parameter_sets.get(1).map(|p| &p[..]) != Some(pps)
                });
                if fresh {
                    let config = Arc::new(CodecConfig {
                        codec: Codec::H264,
                        width,
                        height,
                        parameter_sets: vec![frame.payload.slice_ref(sps), frame.payload.slice_ref(pps)],
                    });
                    self.writer.set_config(config.clone());
                    *output = Some(config);
                    self.status.set_state(CameraState::Online, SystemTime::now());
                }
            }
        }
        self.writer.push(frame);
    }
}

/// The next message of a pipeline's bus; pending while there is none.
async fn next_message(bus: &mut Option<gstreamer::bus::BusStream>) -> Option<gstreamer::Message> {
    match bus {
        Some(stream) => stream.next().await,
        None => std::future::pending().await,
    }
}
