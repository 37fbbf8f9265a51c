//! Replay camera: one GOP of the synthetic test pattern, encoded once at
//! start, padded to a configured bitrate with an SEI of opaque user data
//! (which decoders skip and, unlike filler NAL units, every packetizer
//! forwards: webrtc-rs drops filler data, so a WHEP viewer of a padded
//! camera would receive a fifth of the bytes a real camera sends) and replayed
//! in real time with fresh pts and a fresh capture-time SEI per frame. It
//! loads agent, links and relays like a real camera at any bitrate without
//! any encoding cost, which is what benchmarks need (`source = "replay"`).
//!
//! Every replay camera of one size, frame rate and GOP shows the same
//! picture: the GOP is encoded once per process and shared.

use crate::sources::synthetic::{self, FrameSource, SyntheticSpec};
use anyhow::{ensure, Context as _};
use bytes::{BufMut, Bytes, BytesMut};
use ponte_proto::h264::{self, nal};
use ponte_proto::hub::{TrackWriter, MAX_CACHED_BYTES};
use ponte_proto::media::{CodecConfig, Frame, Quality, CLOCK_RATE};
use ponte_proto::wire::MAX_FRAME_LEN;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::OnceCell;
use tokio::time::MissedTickBehavior;
use tracing::{error, info};

const START_CODE: [u8; 4] = [0, 0, 0, 1];
/// UUID of the padding SEI (user data unregistered): opaque bytes.
const PADDING_UUID: [u8; 16] = *b"ponte-padding-v1";
/// Length of the capture-time SEI NAL with its start code (without the rare
/// emulation-prevention bytes), for the padding plan.
const SEI_LEN: usize = 4 + 1 + 27;
/// Frames are cut from buffers of at least this size, so a frame costs an
/// allocation only once every few frames.
const CHUNK: usize = 256 << 10;

/// `[device.replay]`: what the replayed streams look like.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplaySettings {
    /// Main stream bitrate, kbit/s (default 4000).
    #[serde(default)]
    pub main_kbps: Option<u32>,
    /// Substream bitrate, kbit/s (default 500).
    #[serde(default)]
    pub sub_kbps: Option<u32>,
    /// Frames per second of both streams (default 25).
    #[serde(default)]
    pub fps: Option<u32>,
    /// Frames from one IDR to the next (default 2 s worth).
    #[serde(default)]
    pub gop_frames: Option<u32>,
}

impl ReplaySettings {
    /// Checks both streams.
    pub fn validate(&self) -> anyhow::Result<()> {
        for q in [Quality::Main, Quality::Sub] {
            ReplaySpec::for_quality("replay", q, self).validate()?;
        }
        Ok(())
    }
}

/// One replayed stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplaySpec {
    /// Camera id, for logs.
    pub camera_id: String,
    /// Picture width of the encoded GOP.
    pub width: u16,
    /// Picture height of the encoded GOP.
    pub height: u16,
    /// Frames per second.
    pub fps: u32,
    /// Frames per GOP.
    pub gop_frames: u32,
    /// Bitrate the padding fills up to, kbit/s.
    pub bitrate_kbps: u32,
}

impl ReplaySpec {
    /// The stream of `quality` with a device's settings: main 640×360 at
    /// 4 Mbit/s, sub 320×180 at 0.5 Mbit/s, 25 fps, an IDR every 2 s.
    pub fn for_quality(camera_id: impl Into<String>, quality: Quality, settings: &ReplaySettings) -> Self {
        let fps = settings.fps.unwrap_or(25);
        let (width, height, kbps) = match quality {
            Quality::Main => (640, 360, settings.main_kbps.unwrap_or(4_000)),
            Quality::Sub => (320, 180, settings.sub_kbps.unwrap_or(500)),
        };
        Self {
            camera_id: camera_id.into(),
            width,
            height,
            fps,
            gop_frames: settings.gop_frames.unwrap_or(fps.saturating_mul(2)),
            bitrate_kbps: kbps,
        }
    }

    /// Checks the stream fits the frame and GOP cache limits.
    pub fn validate(&self) -> anyhow::Result<()> {
        let id = &self.camera_id;
        ensure!((1..=120).contains(&self.fps), "replay camera `{id}`: fps {} must be 1 to 120", self.fps);
        ensure!(
            (1..=1_200).contains(&self.gop_frames),
            "replay camera `{id}`: gop_frames {} must be 1 to 1200",
            self.gop_frames
        );
        ensure!(
            (8..=1_000_000).contains(&self.bitrate_kbps),
            "replay camera `{id}`: bitrate {} kbit/s must be 8 to 1000000",
            self.bitrate_kbps
        );
        let frame = self.frame_bytes();
        ensure!(
            frame <= MAX_FRAME_LEN as u64 / 2,
            "replay camera `{id}`: {frame} bytes per frame at {} kbit/s and {} fps is too large; raise fps",
            self.bitrate_kbps,
            self.fps
        );
        let gop = frame * u64::from(self.gop_frames);
        ensure!(
            gop <= MAX_CACHED_BYTES as u64,
            "replay camera `{id}`: a GOP of {gop} bytes would not fit the GOP cache ({MAX_CACHED_BYTES} bytes), \
             so late viewers would wait for the next IDR; shorten gop_frames"
        );
        Ok(())
    }

    /// Average bytes per frame at the target bitrate.
    fn frame_bytes(&self) -> u64 {
        u64::from(self.bitrate_kbps) * 125 / u64::from(self.fps.max(1))
    }

    fn gop_key(&self) -> GopKey {
        // Encode below the target so padding, not the encoder, makes the rate.
        let kbps = match self.width {
            w if w >= 640 => 800,
            _ => 200,
        };
        GopKey {
            width: self.width,
            height: self.height,
            fps: self.fps,
            gop_frames: self.gop_frames,
            kbps: kbps.min(self.bitrate_kbps * 3 / 4).max(8),
        }
    }
}

/// What an encoded GOP depends on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct GopKey {
    width: u16,
    height: u16,
    fps: u32,
    gop_frames: u32,
    kbps: u32,
}

/// One encoded access unit, split around where the capture-time SEI goes.
#[derive(Debug)]
struct GopFrame {
    keyframe: bool,
    /// Parameter sets (keyframes only), start codes included.
    head: Bytes,
    /// Slices, start codes included.
    slices: Bytes,
}

/// A GOP encoded once and shared by every replay camera of its key.
#[derive(Debug)]
struct EncodedGop {
    config: Arc<CodecConfig>,
    frames: Vec<GopFrame>,
}

type GopCache = Mutex<HashMap<GopKey, Arc<OnceCell<Arc<EncodedGop>>>>>;

/// The GOP of `key`, encoded on a blocking thread by the first caller;
/// concurrent callers wait for that one encode.
async fn encoded(key: GopKey) -> anyhow::Result<Arc<EncodedGop>> {
    static CACHE: OnceLock<GopCache> = OnceLock::new();
    let cell = CACHE
        .get_or_init(GopCache::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .entry(key)
        .or_default()
        .clone();
    cell.get_or_try_init(|| async move {
        tokio::task::spawn_blocking(move || encode_gop(key).map(Arc::new))
            .await
            .context("the encoder thread panicked")?
    })
    .await
    .cloned()
}

/// Encodes `key.gop_frames` pictures of the test pattern, IDR first.
fn encode_gop(key: GopKey) -> anyhow::Result<EncodedGop> {
    let name = format!("replay-{}x{}", key.width, key.height);
    let spec = SyntheticSpec {
        camera_id: name.clone(),
        label: format!("ponte replay {}x{} {} fps", key.width, key.height, key.fps),
        width: key.width,
        height: key.height,
        fps: key.fps,
        bitrate_kbps: key.kbps,
        gop_frames: key.gop_frames,
    };
    let mut source = FrameSource::new(&spec)?;
    let t0 = SystemTime::now();
    let step = u64::from(CLOCK_RATE / key.fps);
    let wanted = key.gop_frames as usize;
    let mut config: Option<Arc<CodecConfig>> = None;
    let mut frames = Vec::with_capacity(wanted);
    let mut i = 0u64;
    while frames.len() < wanted {
        ensure!(i < 4 * wanted as u64 + 16, "{name}: the encoder skipped most pictures");
        let capture = t0 + Duration::from_micros(i * 1_000_000 / u64::from(key.fps));
        let encoded = source.produce(capture, i * step)?;
        i += 1;
        let Some(encoded) = encoded else { continue };
        if config.is_none() {
            config = encoded.config;
        }
        ensure!(!frames.is_empty() || encoded.frame.keyframe, "{name}: the first picture is not an IDR");
        let mut head = BytesMut::new();
        let mut slices = BytesMut::new();
        for unit in h264::nal_units(&encoded.frame.payload) {
            let part = match h264::nal_type(unit) {
                Some(nal::SPS | nal::PPS) => &mut head,
                Some(nal::SEI) | None => continue,
                Some(_) => &mut slices,
            };
            part.put_slice(&START_CODE);
            part.put_slice(unit);
        }
        frames.push(GopFrame {
            keyframe: encoded.frame.keyframe,
            head: head.freeze(),
            slices: slices.freeze(),
        });
    }
    let config = config.context("the encoder gave no SPS/PPS")?;
    Ok(EncodedGop { config, frames })
}

/// Bytes of a padding SEI NAL carrying `pad` opaque bytes, start code
/// included: header, payload type, payload size (a 0xFF per 255), UUID,
/// the bytes, RBSP trailing byte.
fn padding_sei_len(pad: usize) -> usize {
    let payload = PADDING_UUID.len() + pad;
    4 + 1 + 1 + payload / 255 + 1 + payload + 1
}

/// Opaque bytes of the largest padding SEI that fits in `share` bytes;
/// 0 = no padding SEI.
fn padding_for(share: usize) -> usize {
    let fixed = padding_sei_len(0);
    if share <= fixed {
        return 0;
    }
    let mut pad = (share - fixed) * 255 / 256;
    while pad > 0 && padding_sei_len(pad) > share {
        pad -= 1;
    }
    pad
}

/// Appends a padding SEI (start code included) of `pad` opaque bytes
/// (0xAA: never a start code or an emulation-prevention sequence).
fn put_padding_sei(pad: usize, buf: &mut BytesMut) {
    buf.put_slice(&START_CODE);
    buf.put_u8(nal::SEI);
    buf.put_u8(5); // payload type: user data unregistered
    let mut size = PADDING_UUID.len() + pad;
    while size >= 255 {
        buf.put_u8(0xFF);
        size -= 255;
    }
    buf.put_u8(size as u8);
    buf.put_slice(&PADDING_UUID);
    buf.put_bytes(0xAA, pad);
    buf.put_u8(0x80); // rbsp trailing bits
}

/// An encoded GOP and the padding each of its frames gets to hit the bitrate.
struct Plan {
    gop: Arc<EncodedGop>,
    /// Opaque padding bytes per frame; 0 = no padding SEI.
    padding: Vec<usize>,
}

impl Plan {
    fn new(spec: &ReplaySpec, gop: Arc<EncodedGop>) -> Self {
        let n = gop.frames.len().max(1);
        let target = spec.frame_bytes() as usize * n;
        let base: usize = gop.frames.iter().map(|f| f.head.len() + SEI_LEN + f.slices.len()).sum();
        let extra = target.saturating_sub(base);
        // Spread evenly: an IDR stays larger than the P frames, as with a
        // real camera, and no frame is bloated.
        let padding = (0..n).map(|i| padding_for(extra / n + usize::from(i < extra % n))).collect();
        Self { gop, padding }
    }

    /// Builds frame `index` (modulo the GOP) with `capture_micros` in its
    /// SEI, cut from `buf` (refilled in large chunks); `None` only for an
    /// empty GOP, which the encoding step never returns.
    fn frame(&self, index: usize, capture_micros: u64, pts: u64, buf: &mut BytesMut) -> Option<Frame> {
        let i = index.checked_rem(self.gop.frames.len())?;
        let (f, &pad) = self.gop.frames.get(i).zip(self.padding.get(i))?;
        let len =
            f.head.len() + SEI_LEN + 8 + f.slices.len() + if pad > 0 { padding_sei_len(pad) } else { 0 };
        if buf.capacity() < len {
            buf.reserve(len.max(CHUNK));
        }
        buf.put_slice(&f.head);
        buf.put_slice(&START_CODE);
        h264::put_capture_time_sei(capture_micros, buf);
        // SEI goes before the picture's slices (H.264 7.4.1.2.3).
        if pad > 0 {
            put_padding_sei(pad, buf);
        }
        buf.put_slice(&f.slices);
        Some(Frame { pts, keyframe: f.keyframe, payload: buf.split().freeze() })
    }
}

/// Where a replay camera's frames fall in time. Real cameras are not in
/// step: each has its own clock phase within the frame period and its own
/// place in the GOP cycle. Replay cameras started together (a batch of
/// subscriptions) would otherwise send every frame, and every IDR, at the
/// same instant, a burst no real deployment sees. Each camera gets a fixed
/// phase from a hash of its id and stream, so runs are repeatable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Phase {
    /// Offset within the frame period, in millionths of a period.
    frame_ppm: u64,
    /// Frames from the first IDR to the second (1..=GOP length); later
    /// GOPs are whole.
    first_gop: usize,
    /// Frames per GOP.
    gop: usize,
}

impl Phase {
    fn of(spec: &ReplaySpec, gop: usize) -> Self {
        // FNV-1a: stable across runs and platforms.
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in spec.camera_id.bytes().chain(spec.width.to_be_bytes()) {
            h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
        let gop = gop.max(1);
        Self { frame_ppm: h % 1_000_000, first_gop: 1 + ((h >> 24) % gop as u64) as usize, gop }
    }

    /// Delay of the second frame's slot past one period after the first.
    fn offset(&self, period: Duration) -> Duration {
        Duration::from_nanos((period.as_nanos() as u64).saturating_mul(self.frame_ppm) / 1_000_000)
    }

    /// Index in the encoded GOP of the camera's `n`th frame since it started.
    fn gop_index(&self, n: usize) -> usize {
        if n < self.first_gop {
            n
        } else {
            (n - self.first_gop) % self.gop
        }
    }
}

/// Runs the camera for ever: idle while nobody subscribes, replaying in
/// real time (from the IDR) while someone does.
pub fn spawn(spec: ReplaySpec, writer: TrackWriter) -> tokio::task::JoinHandle<()> {
    tokio::spawn(run(spec, writer))
}

async fn run(spec: ReplaySpec, writer: TrackWriter) {
    if let Err(e) = spec.validate() {
        error!(camera = %spec.camera_id, "replay camera disabled: {e:#}");
        return;
    }
    let gop = match encoded(spec.gop_key()).await {
        Ok(gop) => gop,
        Err(e) => {
            error!(camera = %spec.camera_id, "replay camera disabled: encoding its GOP failed: {e:#}");
            return;
        }
    };
    let plan = Plan::new(&spec, gop);
    let mut subscribers = writer.subscribers();
    let mut buf = BytesMut::new();
    let fps = u64::from(spec.fps);
    let period = Duration::from_nanos(1_000_000_000 / fps);
    let phase = Phase::of(&spec, plan.gop.frames.len());
    loop {
        if subscribers.wait_for(|&n| n > 0).await.is_err() || writer.is_closed() {
            return;
        }
        info!(camera = %spec.camera_id, kbps = spec.bitrate_kbps, fps = spec.fps, "replay camera: viewers present, replaying");
        writer.set_config(plan.gop.config.clone());
        let start = tokio::time::Instant::now();
        let base_pts =
            synthetic::to_90khz(start.into_std().saturating_duration_since(synthetic::monotonic_epoch()));
        // The IDR goes out at once (time to first frame); the frames after
        // it keep this camera's phase (see `Phase`).
        let first = start + phase.offset(period);
        let mut ticker = tokio::time::interval_at(first + period, period);
        // Late (CPU starved): drop frames as a camera would, never burst.
        ticker.set_missed_tick_behavior(MissedTickBehavior::Skip);
        let mut index = 0usize;
        let micros = || SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_micros() as u64);
        if let Some(frame) = plan.frame(0, micros(), base_pts, &mut buf) {
            writer.push(frame);
        }
        loop {
            tokio::select! {
                tick = ticker.tick() => {
                    let slot = 1 + ((tick - (first + period)).as_nanos() * u128::from(fps) + 500_000_000) / 1_000_000_000;
                    let pts = base_pts + slot as u64 * u64::from(CLOCK_RATE) / fps;
                    index += 1;
                    if let Some(frame) = plan.frame(phase.gop_index(index), micros(), pts, &mut buf) {
                        writer.push(frame);
                    }
                }
                r = subscribers.wait_for(|&n| n == 0) => {
                    if r.is_err() { return; }
                    break;
                }
            }
        }
        // Restarting costs nothing, so there is no linger: stop at once, and
        // nobody may start on pictures from before the pause.
        writer.clear_cache();
        info!(camera = %spec.camera_id, frames = index + 1, "replay camera: no viewers, idle");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use openh264::decoder::Decoder;
    use ponte_proto::hub::{self, TrackKey};

    fn settings() -> ReplaySettings {
        ReplaySettings { main_kbps: Some(2_000), sub_kbps: Some(300), fps: Some(15), gop_frames: Some(15) }
    }

    fn nal_types(au: &[u8]) -> Vec<u8> {
        h264::nal_units(au).filter_map(h264::nal_type).collect()
    }

    #[test]
    fn padding_fills_its_share_to_within_two_bytes() {
        assert_eq!(padding_for(0), 0);
        assert_eq!(padding_for(padding_sei_len(0)), 0);
        for share in (padding_sei_len(0) + 1..3_000).chain([19_990, 20_000, 65_536, 200_001]) {
            let pad = padding_for(share);
            let len = padding_sei_len(pad);
            assert!(len <= share && len + 2 >= share, "share {share}: pad {pad} makes {len} bytes");
            let mut buf = BytesMut::new();
            put_padding_sei(pad, &mut buf);
            assert_eq!(buf.len(), len, "share {share}");
            assert_eq!(nal_types(&buf), [nal::SEI], "one NAL, no start code inside");
        }
    }

    #[tokio::test]
    async fn replayed_gop_hits_the_bitrate_decodes_and_shares_one_buffer() {
        for quality in [Quality::Main, Quality::Sub] {
            let spec = ReplaySpec::for_quality("cam", quality, &settings());
            let plan = Plan::new(&spec, encoded(spec.gop_key()).await.expect("encode"));
            let mut buf = BytesMut::new();
            let mut decoder = Decoder::new().expect("decoder");
            let mut total = 0;
            let mut previous_end = None;
            let mut shared = 0;
            for i in 0..30usize {
                let micros = 1_764_000_000_000_000 + i as u64 * 66_666;
                let frame = plan.frame(i, micros, i as u64 * 6_000, &mut buf).expect("a frame");
                assert_eq!(frame.keyframe, i % 15 == 0, "frame {i}");
                assert_eq!(h264::find_capture_time(&frame.payload), Some(micros));
                let types = nal_types(&frame.payload);
                // Capture time, then padding, then the picture.
                if frame.keyframe {
                    assert_eq!(types[..5], [nal::SPS, nal::PPS, nal::SEI, nal::SEI, nal::IDR]);
                } else {
                    assert_eq!(types[..2], [nal::SEI, nal::SEI]);
                }
                assert!(!types.contains(&nal::FILLER), "padding an RTP packetizer keeps");
                let picture = decoder.decode(&frame.payload).expect("decodable with padding");
                assert!(picture.is_some(), "frame {i} decodes to a picture");
                total += frame.payload.len();
                // Consecutive frames are slices of one buffer, not allocations of their own.
                if previous_end == Some(frame.payload.as_ptr() as usize) {
                    shared += 1;
                }
                previous_end = Some(frame.payload.as_ptr() as usize + frame.payload.len());
            }
            let bits_per_second = total as f64 * 8.0 / 2.0; // 30 frames at 15 fps
            let target = f64::from(spec.bitrate_kbps) * 1000.0;
            assert!((bits_per_second / target - 1.0).abs() < 0.01, "{bits_per_second} bit/s for {target}");
            assert!(shared >= 20, "only {shared} of 30 frames shared a buffer with the previous one");
        }
    }

    #[test]
    fn cameras_get_their_own_repeatable_phase() {
        let spec = |id: &str| ReplaySpec::for_quality(id, Quality::Main, &ReplaySettings::default());
        let phases: Vec<Phase> = (0..64).map(|i| Phase::of(&spec(&format!("t-{i:04}")), 50)).collect();
        assert_eq!(phases[7], Phase::of(&spec("t-0007"), 50), "same camera, same phase");
        let sub = ReplaySpec::for_quality("t-0007", Quality::Sub, &ReplaySettings::default());
        assert_ne!(phases[7], Phase::of(&sub, 50), "its substream has a phase of its own");
        // Spread over the frame period and the GOP, not bunched.
        let quarters = |f: &dyn Fn(&Phase) -> usize| {
            let mut q = [0; 4];
            phases.iter().for_each(|p| q[f(p)] += 1);
            q
        };
        assert!(quarters(&|p| (p.frame_ppm / 250_000) as usize).iter().all(|&n| n >= 8));
        assert!(quarters(&|p| (p.first_gop - 1) * 4 / 50).iter().all(|&n| n >= 8));
        let period = Duration::from_millis(40);
        assert!(phases.iter().all(|p| p.offset(period) < period && (1..=50).contains(&p.first_gop)));
        // IDR first, a shortened first GOP, then whole GOPs.
        let p = Phase { frame_ppm: 0, first_gop: 3, gop: 5 };
        let idx: Vec<usize> = (0..14).map(|n| p.gop_index(n)).collect();
        assert_eq!(idx, [0, 1, 2, 0, 1, 2, 3, 4, 0, 1, 2, 3, 4, 0]);
    }

    #[test]
    fn settings_are_checked() {
        assert!(ReplaySettings::default().validate().is_ok());
        let huge = ReplaySettings { main_kbps: Some(900_000), fps: Some(1), ..Default::default() };
        assert!(format!("{:#}", huge.validate().unwrap_err()).contains("too large"));
        let long = ReplaySettings { main_kbps: Some(200_000), gop_frames: Some(1_000), ..Default::default() };
        assert!(format!("{:#}", long.validate().unwrap_err()).contains("GOP cache"));
        assert!(ReplaySettings { fps: Some(0), ..Default::default() }.validate().is_err());
    }

    /// The camera against a real hub: idle until watched, real-time frames
    /// from an IDR with fresh capture times, idle again when left.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn replay_camera_runs_in_real_time_on_demand() {
        let hub = hub::Hub::new();
        let key = TrackKey::new("cam-r", Quality::Sub);
        let writer = hub.publish(key.clone());
        let counters = writer.probe();
        let spec =
            ReplaySpec::for_quality("cam-r", Quality::Sub, &ReplaySettings { fps: Some(30), ..settings() });
        let task = spawn(spec, writer);
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(counters.frames_in(), 0, "nothing replayed while nobody watches");

        // Before subscribing: the camera sends its IDR the moment it is watched.
        let subscribed = h264::unix_micros_now();
        let mut reader = hub.subscribe(&key).expect("published");
        let started = std::time::Instant::now();
        let mut items = Vec::new();
        while started.elapsed() < Duration::from_millis(600) {
            let item = tokio::time::timeout(Duration::from_secs(2), reader.next())
                .await
                .expect("frame")
                .expect("open");
            items.push(item);
        }
        assert!(items[0].frame.keyframe, "starts at the IDR");
        assert!((15..=21).contains(&items.len()), "{} frames in 0.6 s at 30 fps", items.len());
        for pair in items.windows(2) {
            assert_eq!(pair[1].frame.pts - pair[0].frame.pts, 3_000);
            let (a, b) = (
                h264::find_capture_time(&pair[0].frame.payload),
                h264::find_capture_time(&pair[1].frame.payload),
            );
            assert!(a.expect("SEI") >= subscribed && b > a, "fresh, increasing capture times");
        }
        drop(reader);
        tokio::time::sleep(Duration::from_millis(200)).await;
        let frames = counters.frames_in();
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(counters.frames_in(), frames, "stops when the last viewer leaves");
        task.abort();
    }
}
