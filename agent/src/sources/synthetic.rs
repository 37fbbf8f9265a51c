//! Synthetic camera: a moving test pattern encoded to real H.264 (openh264),
//! pulled on demand like an IP camera. It idles while nobody subscribes and
//! encodes in real time, on its own OS thread, while someone does.

use crate::sources::pattern::Pattern;
use anyhow::{bail, ensure, Context as _};
use bytes::Bytes;
use openh264::encoder::{
    BitRate, Encoder, EncoderConfig, FrameRate, IntraFramePeriod, Profile, RateControlMode, SpsPpsStrategy,
    UsageType, VuiConfig,
};
use openh264::{OpenH264API, Timestamp};
use ponte_proto::h264::{self, nal};
use ponte_proto::hub::TrackWriter;
use ponte_proto::media::{Codec, CodecConfig, Frame, Quality, CLOCK_RATE};
use serde::{Deserialize, Serialize};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use time::OffsetDateTime;
use tokio::sync::{oneshot, watch};
use tracing::{error, info, warn};

/// `[device.synthetic]`: overrides of the synthetic camera's defaults
/// (main 640×360 at 800 kbit/s, sub 320×180 at 200 kbit/s).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyntheticSettings {
    /// Main stream bitrate, kbit/s.
    #[serde(default)]
    pub main_kbps: Option<u32>,
    /// Substream bitrate, kbit/s.
    #[serde(default)]
    pub sub_kbps: Option<u32>,
    /// Main stream width, pixels (even).
    #[serde(default)]
    pub main_width: Option<u16>,
    /// Main stream height, pixels (even).
    #[serde(default)]
    pub main_height: Option<u16>,
    /// `dome-ptz` only: answer PTZ commands with a simulated dome (for
    /// demos and tests), when the device has no `[device.onvif]`.
    #[serde(default)]
    pub ptz: bool,
}

/// How long the camera keeps encoding after the last viewer left, so a viewer
/// switching back and forth does not wait for a fresh encoder each time.
pub const LINGER: Duration = Duration::from_secs(5);
/// Pause before recreating an encoder that failed.
const RETRY_AFTER: Duration = Duration::from_secs(1);
const START_CODE: [u8; 4] = [0, 0, 0, 1];

/// What a synthetic camera stream looks like.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyntheticSpec {
    /// Camera id, used in logs and the thread name.
    pub camera_id: String,
    /// Text burned into the top of the picture.
    pub label: String,
    /// Picture width in pixels (even).
    pub width: u16,
    /// Picture height in pixels (even).
    pub height: u16,
    /// Frames per second.
    pub fps: u32,
    /// Target bitrate in kbit/s.
    pub bitrate_kbps: u32,
    /// Frames from one IDR to the next.
    pub gop_frames: u32,
}

impl SyntheticSpec {
    /// Main stream: 640×360, 15 fps, 800 kbit/s, an IDR every 2 s.
    pub fn main(camera_id: impl Into<String>, label: impl Into<String>) -> Self {
        Self {
            camera_id: camera_id.into(),
            label: label.into(),
            width: 640,
            height: 360,
            fps: 15,
            bitrate_kbps: 800,
            gop_frames: 30,
        }
    }

    /// Substream: 320×180, 15 fps, 200 kbit/s, an IDR every 2 s.
    pub fn sub(camera_id: impl Into<String>, label: impl Into<String>) -> Self {
        Self { width: 320, height: 180, bitrate_kbps: 200, ..Self::main(camera_id, label) }
    }

    /// The stream of `quality`, with a device's `[device.synthetic]` overrides.
    pub fn for_quality(
        camera_id: impl Into<String>,
        label: impl Into<String>,
        quality: Quality,
        settings: &SyntheticSettings,
    ) -> Self {
        match quality {
            Quality::Main => {
                let d = Self::main(camera_id, label);
                Self {
                    width: settings.main_width.unwrap_or(d.width),
                    height: settings.main_height.unwrap_or(d.height),
                    bitrate_kbps: settings.main_kbps.unwrap_or(d.bitrate_kbps),
                    ..d
                }
            }
            Quality::Sub => {
                let d = Self::sub(camera_id, label);
                Self { bitrate_kbps: settings.sub_kbps.unwrap_or(d.bitrate_kbps), ..d }
            }
        }
    }

    /// Checks that the encoder can produce this stream.
    pub fn validate(&self) -> anyhow::Result<()> {
        let id = &self.camera_id;
        ensure!(
            self.width >= 16 && self.height >= 16 && (self.width | self.height) & 1 == 0,
            "synthetic camera `{id}`: size {}x{} must be even and at least 16x16",
            self.width,
            self.height
        );
        ensure!((1..=120).contains(&self.fps), "synthetic camera `{id}`: fps {} must be 1 to 120", self.fps);
        ensure!(
            (8..=100_000).contains(&self.bitrate_kbps),
            "synthetic camera `{id}`: bitrate {} kbit/s must be 8 to 100000",
            self.bitrate_kbps
        );
        ensure!(self.gop_frames >= 1, "synthetic camera `{id}`: gop_frames must be at least 1");
        Ok(())
    }
}

/// Runs the camera for ever: idle while nobody subscribes, encoding in real
/// time while someone does.
pub fn spawn(spec: SyntheticSpec, writer: TrackWriter) -> tokio::task::JoinHandle<()> {
    tokio::spawn(run(spec, writer, LINGER))
}

async fn run(spec: SyntheticSpec, writer: TrackWriter, linger_for: Duration) {
    if let Err(e) = spec.validate() {
        error!(camera = %spec.camera_id, "synthetic camera disabled: {e:#}");
        return;
    }
    let spec = Arc::new(spec);
    let writer = Arc::new(writer);
    let mut subscribers = writer.subscribers();
    loop {
        if subscribers.wait_for(|&n| n > 0).await.is_err() || writer.is_closed() {
            return;
        }
        info!(
            camera = %spec.camera_id,
            width = spec.width,
            height = spec.height,
            fps = spec.fps,
            kbps = spec.bitrate_kbps,
            "synthetic camera: viewers present, encoding"
        );
        // Dropping `stop_tx` stops the thread; it drops `done_tx` when it ends.
        let (stop_tx, stop_rx) = mpsc::channel::<()>();
        let (done_tx, mut done_rx) = oneshot::channel::<Stats>();
        let thread = std::thread::Builder::new()
            .name(format!("synthetic-{}", spec.camera_id.replace('\0', "")))
            .spawn({
                let (spec, writer) = (spec.clone(), writer.clone());
                move || {
                    let stats = encode_until_stopped(&spec, &writer, &stop_rx);
                    let _ = done_tx.send(stats);
                }
            });
        if let Err(e) = thread {
            error!(camera = %spec.camera_id, "synthetic camera: cannot start encoder thread, retrying in 1 s: {e}");
            tokio::time::sleep(RETRY_AFTER).await;
            continue;
        }
        let ended_by_itself = tokio::select! {
            _ = linger(&mut subscribers, linger_for) => None,
            done = &mut done_rx => Some(done),
        };
        drop(stop_tx);
        let (by_itself, done) = match ended_by_itself {
            Some(done) => (true, done),
            None => (false, done_rx.await),
        };
        if writer.is_closed() {
            return;
        }
        // Nobody should ever start on pictures from before the pause.
        writer.clear_cache();
        let stats = match done {
            Ok(stats) if !by_itself => stats,
            // The thread only ends on its own if the encoder panicked.
            _ => {
                error!(camera = %spec.camera_id, "synthetic camera: encoder thread died, restarting in 1 s");
                tokio::time::sleep(RETRY_AFTER).await;
                continue;
            }
        };
        info!(
            camera = %spec.camera_id,
            frames = stats.frames,
            late_skipped = stats.late_skipped,
            "synthetic camera: no viewers for {} ms, idle",
            linger_for.as_millis()
        );
    }
}

/// Returns once the subscriber count has stayed at 0 for `linger_for` (or the
/// track is gone).
pub(crate) async fn linger(subscribers: &mut watch::Receiver<usize>, linger_for: Duration) {
    loop {
        if subscribers.wait_for(|&n| n == 0).await.is_err() {
            return;
        }
        let back =
            tokio::time::timeout(linger_for, subscribers.wait_for(|&n| n > 0)).await.map(|r| r.is_ok());
        match back {
            Ok(true) => continue,
            // Linger expired, or the track is gone.
            Err(_) | Ok(false) => return,
        }
    }
}

/// What one encoding session did, for the idle log line.
#[derive(Debug, Default, Clone, Copy)]
struct Stats {
    frames: u64,
    late_skipped: u64,
}

/// Body of the encoder thread: encodes until `stop` fires (or disconnects) or
/// the track closes; recreates the encoder after a failure.
fn encode_until_stopped(spec: &SyntheticSpec, writer: &TrackWriter, stop: &mpsc::Receiver<()>) -> Stats {
    let mut stats = Stats::default();
    loop {
        let failure = match FrameSource::new(spec) {
            Ok(source) => match encode_paced(spec, writer, source, stop, &mut stats) {
                Ok(()) => return stats,
                Err(e) => e,
            },
            Err(e) => e,
        };
        error!(camera = %spec.camera_id, "synthetic camera: encoder failed, retrying in 1 s: {failure:#}");
        if !matches!(stop.recv_timeout(RETRY_AFTER), Err(RecvTimeoutError::Timeout)) {
            return stats;
        }
    }
}

/// Produces frames at `spec.fps` against absolute deadlines until stopped.
/// Returns `Err` only when the encoder fails.
fn encode_paced(
    spec: &SyntheticSpec,
    writer: &TrackWriter,
    mut source: FrameSource,
    stop: &mpsc::Receiver<()>,
    stats: &mut Stats,
) -> anyhow::Result<()> {
    let fps = u64::from(spec.fps);
    let start = Instant::now();
    let slot_time =
        |n: u64| start + Duration::from_nanos((u128::from(n) * 1_000_000_000 / u128::from(fps)) as u64);
    let base_pts = to_90khz(start.saturating_duration_since(monotonic_epoch()));
    let mut n: u64 = 0;
    let mut warned_late = false;
    loop {
        let deadline = slot_time(n);
        let wait = deadline.saturating_duration_since(Instant::now());
        match stop.recv_timeout(wait) {
            Err(RecvTimeoutError::Timeout) => {}
            Ok(()) | Err(RecvTimeoutError::Disconnected) => return Ok(()),
        }
        if writer.is_closed() {
            return Ok(());
        }
        let pts = base_pts + n * u64::from(CLOCK_RATE) / fps;
        if let Some(encoded) = source.produce(SystemTime::now(), pts)? {
            if let Some(config) = encoded.config {
                writer.set_config(config);
            }
            writer.push(encoded.frame);
            stats.frames += 1;
        }
        n += 1;
        // More than a frame behind (CPU starved): skip the missed slots, as a
        // real camera drops frames, instead of bursting to catch up.
        let now = Instant::now();
        if now > slot_time(n + 1) {
            let current = ((now - start).as_nanos() * u128::from(fps) / 1_000_000_000) as u64;
            stats.late_skipped += current - n;
            n = current;
            if !warned_late {
                warned_late = true;
                warn!(camera = %spec.camera_id, "synthetic camera: encoding slower than real time, dropping frames");
            }
        }
    }
}

/// A fixed process-wide origin, so pts keep increasing across sessions.
pub(crate) fn monotonic_epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

pub(crate) fn to_90khz(d: Duration) -> u64 {
    (d.as_nanos() * u128::from(CLOCK_RATE) / 1_000_000_000) as u64
}

/// One access unit and, when the parameter sets are new, the configuration to
/// publish before it.
#[derive(Debug)]
pub(crate) struct EncodedFrame {
    /// Annex-B access unit with capture-time SEI.
    pub frame: Frame,
    /// Set for the first frame and whenever SPS/PPS change.
    pub config: Option<Arc<CodecConfig>>,
}

/// Draws and encodes the test pattern, one access unit per call. No clock or
/// thread inside: the caller passes capture time and pts.
pub(crate) struct FrameSource {
    label: String,
    width: u16,
    height: u16,
    pattern: Pattern,
    encoder: Encoder,
    frames: u64,
    sps: Option<Bytes>,
    pps: Option<Bytes>,
}

impl FrameSource {
    /// A fresh encoder: its first frame is an IDR.
    pub fn new(spec: &SyntheticSpec) -> anyhow::Result<Self> {
        spec.validate()?;
        let config = EncoderConfig::new()
            .usage_type(UsageType::CameraVideoRealTime)
            // Baseline here makes openh264 set constraint_set0/1: Constrained
            // Baseline, which every browser decodes.
            .profile(Profile::Baseline)
            .rate_control_mode(RateControlMode::Bitrate)
            .bitrate(BitRate::from_bps(spec.bitrate_kbps.saturating_mul(1000)))
            .max_frame_rate(FrameRate::from_hz(spec.fps as f32))
            // Lets rate control hold the budget (openh264 warns on stderr
            // without it); the pattern's grain is tuned so it never needs to.
            .skip_frames(true)
            .intra_frame_period(IntraFramePeriod::from_num_frames(spec.gop_frames))
            // Scene-change IDRs would make GOP boundaries unpredictable.
            .scene_change_detect(false)
            .sps_pps_strategy(SpsPpsStrategy::ConstantId)
            // One core per stream at most; many cameras share the machine.
            .num_threads(1)
            .vui(VuiConfig::bt601());
        let encoder = Encoder::with_api_config(OpenH264API::from_source(), config)
            .with_context(|| format!("synthetic camera `{}`: creating the H.264 encoder", spec.camera_id))?;
        Ok(Self {
            label: spec.label.clone(),
            width: spec.width,
            height: spec.height,
            pattern: Pattern::new(usize::from(spec.width), usize::from(spec.height)),
            encoder,
            frames: 0,
            sps: None,
            pps: None,
        })
    }

    /// Draws the picture as of `capture` (wall clock) and encodes it with
    /// `pts` (90 kHz). `None` when the encoder skipped the picture.
    pub fn produce(&mut self, capture: SystemTime, pts: u64) -> anyhow::Result<Option<EncodedFrame>> {
        let micros = capture.duration_since(UNIX_EPOCH).map(|d| d.as_micros() as u64).unwrap_or(0);
        let wall = OffsetDateTime::from_unix_timestamp_nanos(i128::from(micros) * 1000)
            .unwrap_or(OffsetDateTime::UNIX_EPOCH);
        let t_ms = pts / u64::from(CLOCK_RATE / 1000);
        self.pattern.draw(&self.label, wall, self.frames, t_ms);
        let stream = self
            .encoder
            .encode_at(&self.pattern.as_yuv(), Timestamp::from_millis(t_ms))
            .context("encoding a picture")?;
        self.frames += 1;

        // `Layer::nal_unit` borrows the layer, so NALs are copied out as we go:
        // parameter sets (only with IDRs, tiny) and the picture's slices.
        let mut sps: Option<Bytes> = None;
        let mut pps: Option<Bytes> = None;
        let mut keyframe = false;
        let mut slices = Vec::new();
        for layer in (0..stream.num_layers()).filter_map(|i| stream.layer(i)) {
            for unit in (0..layer.nal_count()).filter_map(|i| layer.nal_unit(i)) {
                let unit = strip_start_code(unit);
                match h264::nal_type(unit) {
                    Some(nal::SPS) => sps = Some(Bytes::copy_from_slice(unit)),
                    Some(nal::PPS) => pps = Some(Bytes::copy_from_slice(unit)),
                    // Our SEI is the only one, and an AUD would have to come first.
                    Some(nal::AUD) | None => {}
                    Some(t) => {
                        keyframe |= t == nal::IDR;
                        slices.extend_from_slice(&START_CODE);
                        slices.extend_from_slice(unit);
                    }
                }
            }
        }
        if slices.is_empty() {
            return Ok(None);
        }

        let emitted_parameter_sets = sps.is_some() || pps.is_some();
        let mut config = None;
        if (sps.is_some() && sps != self.sps) || (pps.is_some() && pps != self.pps) || self.sps.is_none() {
            self.sps = sps.or(self.sps.take());
            self.pps = pps.or(self.pps.take());
            let (Some(s), Some(p)) = (&self.sps, &self.pps) else {
                bail!("the encoder's first picture came without SPS and PPS");
            };
            config = Some(Arc::new(CodecConfig {
                codec: Codec::H264,
                width: self.width,
                height: self.height,
                parameter_sets: vec![s.clone(), p.clone()],
            }));
        }

        let sei = h264::capture_time_sei(micros);
        let ps_len: usize = [&self.sps, &self.pps].into_iter().flatten().map(|p| p.len() + 4).sum();
        let mut au = Vec::with_capacity(ps_len + 4 + sei.len() + slices.len());
        // A viewer can start at any IDR: it always carries SPS and PPS, ahead
        // of the SEI as the H.264 NAL order (and x264, ffmpeg) have it.
        if keyframe || emitted_parameter_sets {
            for ps in [&self.sps, &self.pps].into_iter().flatten() {
                au.extend_from_slice(&START_CODE);
                au.extend_from_slice(ps);
            }
        }
        au.extend_from_slice(&START_CODE);
        au.extend_from_slice(&sei);
        au.extend_from_slice(&slices);
        Ok(Some(EncodedFrame { frame: Frame { pts, keyframe, payload: Bytes::from(au) }, config }))
    }
}

fn strip_start_code(unit: &[u8]) -> &[u8] {
    unit.strip_prefix(&START_CODE).or_else(|| unit.strip_prefix(&START_CODE[1..])).unwrap_or(unit)
}

#[cfg(test)]
mod tests {
    use super::*;
    use openh264::decoder::Decoder;
    use openh264::formats::YUVSource;
    use ponte_proto::hub::{self, TrackKey};
    use ponte_proto::media::Quality;

    const LABEL: &str = "Zaist / rotatoria via Mantova";

    /// Encodes `count` frames 1/fps apart, as the camera thread would.
    fn encode(spec: &SyntheticSpec, count: u64) -> (Vec<EncodedFrame>, Vec<u64>) {
        let mut source = FrameSource::new(spec).expect("encoder");
        let t0 = SystemTime::now();
        let step = u64::from(CLOCK_RATE / spec.fps);
        let mut frames = Vec::new();
        let mut captures = Vec::new();
        for i in 0..count {
            let capture = t0 + Duration::from_micros(i * 1_000_000 / u64::from(spec.fps));
            let encoded =
                source.produce(capture, 1_000 + i * step).expect("encode").expect("the encoder never skips");
            frames.push(encoded);
            captures.push(capture.duration_since(UNIX_EPOCH).expect("after 1970").as_micros() as u64);
        }
        (frames, captures)
    }

    fn nal_types(au: &[u8]) -> Vec<u8> {
        h264::nal_units(au).filter_map(h264::nal_type).collect()
    }

    #[test]
    fn synthetic_encodes_decodable_h264_with_gop_and_capture_time() {
        for spec in [SyntheticSpec::main("cam-a", LABEL), SyntheticSpec::sub("cam-a", LABEL)] {
            let (frames, captures) = encode(&spec, 40);

            let first = &frames[0];
            assert!(first.frame.keyframe);
            assert_eq!(nal_types(&first.frame.payload), [nal::SPS, nal::PPS, nal::SEI, nal::IDR]);
            let config = first.config.as_ref().expect("config with the first frame");
            assert_eq!((config.codec, config.width, config.height), (Codec::H264, spec.width, spec.height));
            assert_eq!(config.parameter_sets.len(), 2);
            let (sps, pps) = h264::parameter_sets(&first.frame.payload);
            assert_eq!(sps, Some(&config.parameter_sets[0][..]));
            assert_eq!(pps, Some(&config.parameter_sets[1][..]));
            // Constrained Baseline (profile-level-id 42 Cx ..), as browsers want.
            assert_eq!(config.parameter_sets[0][1], 66);
            assert_eq!(config.parameter_sets[0][2] & 0xc0, 0xc0);
            assert!(frames[1..].iter().all(|f| f.config.is_none()), "SPS/PPS are stable");

            let keyframes: Vec<usize> =
                frames.iter().enumerate().filter(|(_, f)| f.frame.keyframe).map(|(i, _)| i).collect();
            assert_eq!(keyframes, [0, 30], "an IDR every gop_frames");

            for (i, (f, &capture)) in frames.iter().zip(&captures).enumerate() {
                let types = nal_types(&f.frame.payload);
                assert_eq!(f.frame.keyframe, types.contains(&nal::IDR), "frame {i}: {types:?}");
                if f.frame.keyframe {
                    assert_eq!(types, [nal::SPS, nal::PPS, nal::SEI, nal::IDR], "frame {i}");
                } else {
                    assert_eq!(types, [nal::SEI, 1], "frame {i}: one P slice");
                }
                assert!(f.frame.payload.starts_with(&START_CODE));
                assert_eq!(h264::find_capture_time(&f.frame.payload), Some(capture), "frame {i}");
                assert_eq!(f.frame.pts, 1_000 + i as u64 * 6_000);
            }

            // A real decoder takes it all and gives back pictures of the right size.
            let mut decoder = Decoder::new().expect("decoder");
            let mut decoded = 0;
            for (i, f) in frames.iter().enumerate() {
                if let Some(picture) =
                    decoder.decode(&f.frame.payload).unwrap_or_else(|e| panic!("frame {i}: {e}"))
                {
                    assert_eq!(picture.dimensions(), (usize::from(spec.width), usize::from(spec.height)));
                    decoded += 1;
                }
            }
            decoded += decoder.flush_remaining().expect("flush").len();
            assert_eq!(decoded, frames.len());

            let bytes: usize = frames.iter().map(|f| f.frame.payload.len()).sum();
            let kbps = bytes as u64 * 8 * u64::from(spec.fps) / frames.len() as u64 / 1000;
            println!("{}x{}: {kbps} kbit/s over {} frames", spec.width, spec.height, frames.len());
            // Like a real camera, it uses the bitrate it is given.
            let target = u64::from(spec.bitrate_kbps);
            assert!((target / 2..=target * 2).contains(&kbps), "{kbps} kbit/s, target {target}");
        }
    }

    #[test]
    fn synthetic_restart_begins_with_idr_and_config() {
        let spec = SyntheticSpec::sub("cam-b", LABEL);
        let (a, _) = encode(&spec, 3);
        let (b, _) = encode(&spec, 3);
        for run in [&a, &b] {
            assert!(run[0].frame.keyframe && run[0].config.is_some());
            assert!(!run[1].frame.keyframe);
        }
    }

    #[test]
    fn synthetic_rejects_impossible_specs() {
        assert!(SyntheticSpec::main("c", "l").validate().is_ok());
        let odd = SyntheticSpec { width: 641, ..SyntheticSpec::main("c", "l") };
        assert!(odd.validate().is_err());
        let still = SyntheticSpec { fps: 0, ..SyntheticSpec::main("c", "l") };
        let msg = format!("{:#}", still.validate().expect_err("fps 0"));
        assert!(msg.contains("`c`") && msg.contains("fps"), "{msg}");
    }

    #[test]
    fn synthetic_encoding_is_faster_than_real_time() {
        for spec in [SyntheticSpec::main("cam-t", LABEL), SyntheticSpec::sub("cam-t", LABEL)] {
            let mut source = FrameSource::new(&spec).expect("encoder");
            let frames = 90u32;
            let step = u64::from(CLOCK_RATE / spec.fps);
            let t0 = Instant::now();
            for i in 0..u64::from(frames) {
                source.produce(SystemTime::now(), i * step).expect("encode");
            }
            let per_frame = t0.elapsed() / frames;
            println!(
                "{}x{}@{}: {:.2} ms per frame (draw + encode, {} build)",
                spec.width,
                spec.height,
                spec.fps,
                per_frame.as_secs_f64() * 1000.0,
                if cfg!(debug_assertions) { "debug" } else { "release" }
            );
            assert!(per_frame < Duration::from_secs(1) / spec.fps, "{per_frame:?} per frame");
        }
    }

    fn capture_of(item: &hub::HubItem) -> u64 {
        h264::find_capture_time(&item.frame.payload).expect("capture-time SEI")
    }

    async fn next(reader: &mut hub::TrackReader) -> hub::HubItem {
        tokio::time::timeout(Duration::from_secs(2), reader.next())
            .await
            .expect("a frame within 2 s")
            .expect("track open")
    }

    /// The whole camera against a real hub: nothing while nobody watches,
    /// frames at the right rate while someone does, still running during the
    /// linger, stopped after it, and a fresh IDR with config on restart.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn synthetic_camera_runs_on_demand() {
        let hub = hub::Hub::new();
        let key = TrackKey::new("cam-c", Quality::Sub);
        let writer = hub.publish(key.clone());
        let spec = SyntheticSpec { fps: 30, ..SyntheticSpec::sub("cam-c", LABEL) };
        let linger = Duration::from_millis(500);
        let task = tokio::spawn(run(spec, writer, linger));

        // Nobody watching: nothing is encoded, so nothing is cached either.
        tokio::time::sleep(Duration::from_millis(400)).await;
        let subscribed_at = h264::unix_micros_now();
        let mut reader = hub.subscribe(&key).expect("track published");
        let first = next(&mut reader).await;
        assert!(first.frame.keyframe);
        assert!(capture_of(&first) >= subscribed_at, "encoded before anyone watched");
        assert_eq!(first.config.width, 320);

        // Real time: a second of frames, 3000 ticks apart, IDR every 30.
        let started = Instant::now();
        let mut items = vec![first];
        while started.elapsed() < Duration::from_secs(1) {
            items.push(next(&mut reader).await);
        }
        assert!((27..=34).contains(&items.len()), "{} frames in 1 s at 30 fps", items.len());
        // On a loaded machine the camera drops a late frame rather than
        // burst (pts then advance by two or three frames), never more.
        let paced = |step: u64| step.is_multiple_of(3_000) && (3_000..=9_000).contains(&step);
        for pair in items.windows(2) {
            let step = pair[1].frame.pts - pair[0].frame.pts;
            assert!(paced(step), "pts step {step}");
        }
        assert_eq!(items.iter().filter(|i| i.frame.keyframe).count(), items.len().div_ceil(30));

        // A viewer leaving and coming back within the linger finds it running.
        drop(reader);
        tokio::time::sleep(linger / 2).await;
        let mut reader = hub.subscribe(&key).expect("track published");
        let cached = next(&mut reader).await;
        let last = items.last().expect("frames").frame.pts;
        assert!(cached.frame.keyframe && cached.frame.pts <= last, "served from the running encoder's GOP");
        let mut pts = cached.frame.pts;
        while pts <= last + 90_000 / 2 {
            let item = next(&mut reader).await;
            let step = item.frame.pts - pts;
            assert!(paced(step), "one uninterrupted encoder session: pts step {step}");
            pts = item.frame.pts;
        }

        // Past the linger it stops; the next viewer restarts it with an IDR.
        drop(reader);
        let left_at = h264::unix_micros_now();
        tokio::time::sleep(linger + Duration::from_millis(1_000)).await;
        let resubscribed_at = h264::unix_micros_now();
        let mut reader = hub.subscribe(&key).expect("track published");
        let fresh = next(&mut reader).await;
        // The cache was cleared when the camera paused: no stale pictures.
        assert!(
            capture_of(&fresh) >= resubscribed_at,
            "first picture after a pause was captured {} ms before the viewer arrived",
            (resubscribed_at - capture_of(&fresh)) / 1000
        );
        let _ = left_at;
        assert!(fresh.frame.keyframe, "a restart begins with an IDR");
        assert!(fresh.frame.pts > pts + 90_000, "pts keep increasing across restarts");
        assert_eq!(fresh.config.parameter_sets.len(), 2);

        task.abort();
    }
}
