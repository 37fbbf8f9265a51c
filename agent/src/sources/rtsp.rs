//! RTSP ingest with retina: each camera stream (a lens at a quality) is
//! pulled once, by one task, and published to its hub track, which fans it
//! out to every site. The task supervises the stream: state, reconnect with
//! backoff, stall detection, malformed input dropped and counted.
//!
//! Frames travel byte-identical from the camera (Annex-B, as retina
//! assembles them); only parameter sets are added in front of a keyframe
//! that lacks them, so a viewer can start at any GOP.

use crate::sources::supervision::{Backoff, CameraState, StreamStatus};
use bytes::Bytes;
use futures_util::StreamExt;
use ponte_proto::hub::TrackWriter;
use ponte_proto::media::{Codec, CodecConfig, Frame, Quality, CLOCK_RATE};
use ponte_proto::{h264, h265};
use retina::client::{Credentials, PlayOptions, Session, SetupOptions, Transport};
use retina::codec::{CodecItem, FrameFormat, ParametersRef, VideoParameters, VideoParametersCodec};
use serde::{Deserialize, Serialize};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::watch;
use url::Url;

/// Budget for DESCRIBE, SETUP and PLAY together.
const SETUP_TIMEOUT: Duration = Duration::from_secs(10);
/// How long an on-demand stream keeps running after its last viewer left.
pub const LINGER: Duration = Duration::from_secs(5);
/// While a camera is unreachable, how often to check (TCP connect) whether
/// it is back, so it streams again within a second or so of its return even
/// when the backoff has grown long.
const PROBE_EVERY: Duration = Duration::from_secs(1);
/// A session that yields only malformed input this many times in a row is
/// treated as broken and reconnected.
const MAX_MALFORMED_IN_A_ROW: u32 = 200;
/// Default RTSP port.
const RTSP_PORT: u16 = 554;

/// Called with the codec of a main stream whenever it becomes known, so the
/// catalog can announce what the camera really delivers.
pub type CodecHook = Arc<dyn Fn(Codec) + Send + Sync>;

/// One RTSP stream to pull. Holds credentials: deliberately not `Debug`.
pub struct RtspSpec {
    /// Camera id (one per lens).
    pub camera: String,
    /// Quality this URL delivers.
    pub quality: Quality,
    /// URL without credentials.
    pub url: Url,
    /// Basic/Digest credentials.
    pub credentials: Option<Credentials>,
    /// RTP over TCP or UDP.
    pub transport: RtspTransport,
    /// Reconnect when no frame arrived for this long.
    pub stall: Duration,
    /// Pull only while subscribed.
    pub on_demand: bool,
    /// On demand: how long to keep pulling after the last viewer left.
    pub linger: Duration,
}

impl RtspSpec {
    /// Builds a spec from a config URL. Credentials in the URL's userinfo
    /// are used unless the device sets its own, and never kept in the URL.
    pub fn new(
        camera: &str,
        quality: Quality,
        raw_url: &str,
        device_credentials: Option<(String, String)>,
        transport: RtspTransport,
        stall: Duration,
        on_demand: bool,
    ) -> anyhow::Result<Self> {
        let mut url = Url::parse(raw_url)
            .map_err(|e| anyhow::anyhow!("camera `{camera}`: URL {:?}: {e}", redact_url(raw_url)))?;
        let from_url = (!url.username().is_empty()).then(|| Credentials {
            username: decode(url.username()),
            password: url.password().map(decode).unwrap_or_default(),
        });
        // Only fails for URLs that cannot have credentials, which have none.
        let _ = url.set_username("");
        let _ = url.set_password(None);
        let credentials =
            device_credentials.map(|(username, password)| Credentials { username, password }).or(from_url);
        Ok(Self {
            camera: camera.to_owned(),
            quality,
            url,
            credentials,
            transport,
            stall,
            on_demand,
            linger: LINGER,
        })
    }

    fn password(&self) -> Option<&str> {
        self.credentials.as_ref().map(|c| c.password.as_str()).filter(|p| !p.is_empty())
    }

    /// `host:port` of the camera, for the reachability probe and messages.
    fn authority(&self) -> (String, u16) {
        let host = self.url.host_str().unwrap_or_default().trim_matches(['[', ']']).to_owned();
        (host, self.url.port().unwrap_or(RTSP_PORT))
    }
}

fn decode(s: &str) -> String {
    url::form_urlencoded::parse(format!("x={s}").as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_else(|| s.to_owned())
}

/// How RTP travels from an RTSP camera.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RtspTransport {
    /// Interleaved in the RTSP TCP connection: survives firewalls and NAT.
    #[default]
    Tcp,
    /// Separate UDP ports: less latency on a clean LAN, no retransmission.
    Udp,
}

/// Accepts `rtsp://host[:port]/...` and names what is wrong otherwise (the
/// URL is echoed without its credentials).
pub fn check_url(raw: &str) -> anyhow::Result<()> {
    let url =
        url::Url::parse(raw).map_err(|e| anyhow::anyhow!("{:?} is not a URL ({e})", redact_url(raw)))?;
    if url.scheme() != "rtsp" {
        anyhow::bail!("{:?}: expected an `rtsp://` URL", redact_url(raw));
    }
    if url.host_str().is_none_or(str::is_empty) {
        anyhow::bail!("{:?}: the URL names no host", redact_url(raw));
    }
    Ok(())
}

/// The URL with any `user:password@` replaced by `***@`, for logs and
/// errors. Works on text that does not parse as a URL, too.
pub fn redact_url(raw: &str) -> String {
    let Some(scheme_end) = raw.find("://").map(|i| i + 3) else { return raw.to_owned() };
    let rest = &raw[scheme_end..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{}***{}", &raw[..scheme_end], &rest[at..]),
        None => raw.to_owned(),
    }
}

/// Starts pulling `spec` into `writer` for ever (or, on demand, while
/// someone is subscribed). `status` follows the stream; `on_codec` hears the
/// codec of a main stream.
pub fn spawn(
    spec: RtspSpec,
    writer: TrackWriter,
    status: Arc<StreamStatus>,
    on_codec: CodecHook,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(run(spec, writer, status, on_codec))
}

/// Why a session ended.
#[derive(Debug)]
enum Ended {
    /// On demand and nobody watching any more.
    Idle,
    /// Failed; retry after a backoff.
    Failed(Failure),
}

#[derive(Debug)]
struct Failure {
    message: String,
    /// The camera could not be reached at all: probe for its return.
    unreachable: bool,
    /// Frames flowed before the failure: retry promptly.
    was_online: bool,
}

async fn run(spec: RtspSpec, writer: TrackWriter, status: Arc<StreamStatus>, on_codec: CodecHook) {
    let mut backoff = Backoff::default();
    let mut subscribers = writer.subscribers();
    let mut pts = PtsMap::default();
    loop {
        if spec.on_demand && *subscribers.borrow_and_update() == 0 {
            writer.clear_cache();
            status.set_state(CameraState::Idle, SystemTime::now());
            if subscribers.wait_for(|&n| n > 0).await.is_err() {
                return;
            }
            status.set_state(CameraState::Connecting, SystemTime::now());
        }
        if writer.is_closed() {
            return;
        }
        let session = Puller { spec: &spec, writer: &writer, status: &status, on_codec: &on_codec };
        match session.pull(&mut pts, &mut subscribers).await {
            Ended::Idle => backoff.reset(),
            Ended::Failed(f) => {
                // Nobody should start on pictures from before the outage.
                writer.clear_cache();
                let now = SystemTime::now();
                let message = scrub(&f.message, spec.password());
                status.set_state(CameraState::Offline { since: now, last_error: message }, now);
                if f.was_online {
                    backoff.reset();
                }
                let delay = backoff.next_delay(rand::random::<f64>());
                tracing::debug!(camera = %spec.camera, retry_in_ms = delay.as_millis() as u64, "camera retry scheduled");
                let probe = f.unreachable.then(|| spec.authority());
                wait_retry(delay, probe).await;
            }
        }
    }
}

/// Sleeps `delay`, or less if `probe` names a camera address that accepts a
/// TCP connection again. The name is resolved once per wait, so a camera
/// known by DNS name costs one lookup per retry, not one per probe.
async fn wait_retry(delay: Duration, probe: Option<(String, u16)>) {
    let deadline = tokio::time::Instant::now() + delay;
    let addr = match probe {
        Some((host, port)) => {
            tokio::time::timeout(PROBE_EVERY, tokio::net::lookup_host((host.as_str(), port)))
                .await
                .ok()
                .and_then(Result::ok)
                .and_then(|mut addrs| addrs.next())
        }
        None => None,
    };
    let Some(addr) = addr else {
        tokio::time::sleep_until(deadline).await;
        return;
    };
    loop {
        let next = (tokio::time::Instant::now() + PROBE_EVERY).min(deadline);
        tokio::time::sleep_until(next).await;
        if tokio::time::Instant::now() >= deadline {
            return;
        }
        if let Ok(Ok(_)) = tokio::time::timeout(PROBE_EVERY, tokio::net::TcpStream::connect(addr)).await {
            return;
        }
    }
}

/// Removes the password from a message, in case a camera or library echoed it.
fn scrub(message: &str, password: Option<&str>) -> String {
    match password {
        Some(p) if p.len() >= 3 => message.replace(p, "***"),
        _ => message.to_owned(),
    }
}

/// One session's worth of borrowed context.
struct Puller<'a> {
    spec: &'a RtspSpec,
    writer: &'a TrackWriter,
    status: &'a StreamStatus,
    on_codec: &'a CodecHook,
}

/// What SETUP found: the session and the video stream in it.
struct Playing {
    demuxed: retina::client::Demuxed,
    stream: usize,
    codec: Codec,
}

impl Puller<'_> {
    fn fail(&self, message: String, unreachable: bool, was_online: bool) -> Ended {
        Ended::Failed(Failure { message, unreachable, was_online })
    }

    /// Connects, plays and publishes frames until the session fails, stalls,
    /// or (on demand) nobody watches any more.
    async fn pull(&self, pts: &mut PtsMap, subscribers: &mut watch::Receiver<usize>) -> Ended {
        let spec = self.spec;
        let playing = match tokio::time::timeout(SETUP_TIMEOUT, self.connect()).await {
            Ok(Ok(p)) => p,
            Ok(Err(e)) => return e,
            Err(_) => {
                let (host, port) = spec.authority();
                return self.fail(
                    format!("{host}:{port} did not complete DESCRIBE/SETUP/PLAY within {SETUP_TIMEOUT:?}"),
                    true,
                    false,
                );
            }
        };
        let Playing { mut demuxed, stream, codec } = playing;
        pts.new_session();
        let mut online = false;
        let mut need_keyframe = true;
        let mut malformed_in_a_row = 0u32;
        let mut last_frame = tokio::time::Instant::now();
        let mut linger: Option<tokio::time::Instant> = None;
        if spec.on_demand && *subscribers.borrow_and_update() == 0 {
            linger = Some(tokio::time::Instant::now() + spec.linger);
        }
        loop {
            let stall_at = last_frame + spec.stall;
            let linger_at = linger.unwrap_or(stall_at);
            let item = tokio::select! {
                item = demuxed.next() => item,
                _ = tokio::time::sleep_until(stall_at) => {
                    return self.fail(format!("no video for {} s: stream stalled", spec.stall.as_secs_f64()), false, online);
                }
                changed = subscribers.changed(), if spec.on_demand => {
                    if changed.is_err() {
                        return Ended::Idle;
                    }
                    let n = *subscribers.borrow_and_update();
                    linger = match (n, linger) {
                        (0, None) => Some(tokio::time::Instant::now() + spec.linger),
                        (0, l) => l,
                        _ => None,
                    };
                    continue;
                }
                _ = tokio::time::sleep_until(linger_at), if linger.is_some() => return Ended::Idle,
            };
            let frame = match item {
                None => return self.fail("the camera closed the RTSP session".into(), false, online),
                Some(Err(e)) if is_packet_error(&e) => {
                    let n = self.status.count_malformed();
                    malformed_in_a_row += 1;
                    if n == 1 || n.is_power_of_two() {
                        tracing::warn!(camera = %spec.camera, quality = spec.quality.name(), malformed = n, error = %first_line(&e), "malformed RTP from camera dropped");
                    }
                    if malformed_in_a_row >= MAX_MALFORMED_IN_A_ROW {
                        return self.fail(
                            format!(
                                "{malformed_in_a_row} malformed packets in a row; last: {}",
                                first_line(&e)
                            ),
                            false,
                            online,
                        );
                    }
                    continue;
                }
                Some(Err(e)) => {
                    return self.fail(format!("RTSP session failed: {}", first_line(&e)), false, online)
                }
                Some(Ok(CodecItem::VideoFrame(f))) if f.stream_id() == stream => f,
                Some(Ok(_)) => continue,
            };
            last_frame = tokio::time::Instant::now();
            if frame.has_new_parameters() {
                if let Some(ParametersRef::Video(p)) =
                    demuxed.streams().get(stream).and_then(|s| s.parameters())
                {
                    self.apply_parameters(p);
                }
            }
            // A picture after lost packets may reference what was lost: wait
            // for the next keyframe rather than show a smeared picture.
            if frame.loss() > 0 {
                need_keyframe = true;
            }
            let timestamp = frame.timestamp();
            let random_access = frame.is_random_access_point();
            let payload = Bytes::from(frame.into_data());
            // retina flags only IDR pictures as random-access points; an H.265
            // camera may use CRA pictures instead (x265's default), which are
            // IRAPs a decoder can start at, so H.265 is judged by its NALs.
            let keyframe = match codec {
                Codec::H264 => random_access && h264::is_keyframe(&payload),
                Codec::H265 => h265::is_keyframe(&payload),
            };
            if need_keyframe && !keyframe {
                continue;
            }
            let Some(config) = self.writer.config().filter(|c| c.codec == codec) else {
                // Pictures before any parameter sets cannot be decoded.
                self.status.count_malformed();
                continue;
            };
            if payload.is_empty() {
                self.status.count_malformed();
                continue;
            }
            malformed_in_a_row = 0;
            need_keyframe = false;
            let payload = if keyframe {
                match codec {
                    Codec::H264 => h264::with_parameter_sets(&payload, &config.parameter_sets),
                    Codec::H265 => h265::with_parameter_sets(&payload, &config.parameter_sets),
                }
            } else {
                payload
            };
            let pts = pts.map(timestamp.elapsed(), timestamp.clock_rate().get(), now_90khz());
            self.writer.push(Frame { pts, keyframe, payload });
            if !online {
                online = true;
                self.status.set_state(CameraState::Online, SystemTime::now());
            }
        }
    }

    /// DESCRIBE, SETUP of the first H.264/H.265 video stream, PLAY.
    async fn connect(&self) -> Result<Playing, Ended> {
        let spec = self.spec;
        let options = retina::client::SessionOptions::default()
            .creds(spec.credentials.clone())
            .user_agent(format!("ponte-agent/{}", env!("CARGO_PKG_VERSION")));
        let mut session = Session::describe(spec.url.clone(), options)
            .await
            .map_err(|e| self.fail(self.explain("DESCRIBE", &e), is_unreachable(&e), false))?;
        let found = session.streams().iter().enumerate().find_map(|(i, s)| {
            let codec = match (s.media(), s.encoding_name()) {
                ("video", "h264") => Codec::H264,
                ("video", "h265") => Codec::H265,
                _ => return None,
            };
            Some((i, codec))
        });
        let Some((stream, codec)) = found else {
            let offered: Vec<String> =
                session.streams().iter().map(|s| format!("{}/{}", s.media(), s.encoding_name())).collect();
            return Err(self.fail(
                format!(
                    "no H.264 or H.265 video in the camera's SDP (it offers {offered:?}): check the URL path"
                ),
                false,
                false,
            ));
        };
        if let Some(ParametersRef::Video(p)) = session.streams().get(stream).and_then(|s| s.parameters()) {
            self.apply_parameters(p);
        }
        let transport = match spec.transport {
            RtspTransport::Tcp => Transport::Tcp(Default::default()),
            RtspTransport::Udp => Transport::Udp(Default::default()),
        };
        // Annex-B with parameter sets before each keyframe: what ponte
        // carries, assembled once by retina with no further copy.
        let setup = SetupOptions::default().transport(transport).frame_format(FrameFormat::SIMPLE);
        session.setup(stream, setup).await.map_err(|e| self.fail(self.explain("SETUP", &e), false, false))?;
        let playing = session
            .play(PlayOptions::default())
            .await
            .map_err(|e| self.fail(self.explain("PLAY", &e), false, false))?;
        let demuxed = playing.demuxed().map_err(|e| self.fail(self.explain("PLAY", &e), false, false))?;
        Ok(Playing { demuxed, stream, codec })
    }

    /// Publishes new parameter sets as the track's decoder configuration.
    fn apply_parameters(&self, p: &VideoParameters) {
        let Some(config) = codec_config(p) else { return };
        if self.writer.config().as_deref() == Some(&config) {
            return;
        }
        self.status.set_media(config.codec, config.width, config.height);
        if self.spec.quality == Quality::Main {
            (self.on_codec)(config.codec);
        }
        self.writer.set_config(Arc::new(config));
    }

    /// A one-line reason for an RTSP failure, naming the fix.
    fn explain(&self, step: &str, e: &retina::Error) -> String {
        let (host, port) = self.spec.authority();
        let camera = &self.spec.camera;
        let url = redact_url(self.spec.url.as_str());
        match e.status_code() {
            Some(401) if self.spec.credentials.is_some() => format!(
                "authentication failed: {host}:{port} answered 401 Unauthorized to {step} with the configured \
                 credentials — check `username` and `password`/`password_env` of camera `{camera}`"
            ),
            Some(401) => format!(
                "authentication failed: {host}:{port} requires credentials (401 to {step}) — set `username` and \
                 `password_env` for camera `{camera}`"
            ),
            Some(404) => format!("{url}: 404 Not Found to {step} — check the stream path of camera `{camera}`"),
            Some(status) => format!("{url}: RTSP {status} to {step}: {}", first_line(e)),
            None => format!("{step} to {host}:{port}: {}", first_line(e)),
        }
    }
}

/// Decoder configuration from retina's video parameters.
fn codec_config(p: &VideoParameters) -> Option<CodecConfig> {
    let (codec, parameter_sets) = match p.codec_params() {
        VideoParametersCodec::H264 { sps, pps } => (Codec::H264, vec![sps.clone(), pps.clone()]),
        VideoParametersCodec::H265 { vps, sps, pps } => {
            (Codec::H265, vec![vps.clone(), sps.clone(), pps.clone()])
        }
        _ => return None,
    };
    let (w, h) = p.pixel_dimensions();
    Some(CodecConfig {
        codec,
        width: u16::try_from(w).unwrap_or(u16::MAX),
        height: u16::try_from(h).unwrap_or(u16::MAX),
        parameter_sets,
    })
}

/// retina reports a single bad packet (the depacketizer recovers at the next
/// one) with the packet's context; everything else ends the session.
fn is_packet_error(e: &retina::Error) -> bool {
    e.status_code().is_none() && e.to_string().contains("\npkt: ")
}

fn is_unreachable(e: &retina::Error) -> bool {
    e.to_string().starts_with("Unable to connect")
}

/// retina's messages add multi-line packet context; logs want the first line.
fn first_line(e: &retina::Error) -> String {
    e.to_string().lines().next().unwrap_or_default().to_owned()
}

/// Maps each session's RTP timeline onto ponte's 90 kHz pts so pts keep
/// increasing across reconnects (a new session restarts RTP time).
#[derive(Debug, Default)]
struct PtsMap {
    offset: Option<i128>,
    last: Option<u64>,
}

impl PtsMap {
    fn new_session(&mut self) {
        self.offset = None;
    }

    /// `elapsed` ticks of `clock_rate` since the session's first frame;
    /// `now` is the 90 kHz wall position used to anchor a new session.
    fn map(&mut self, elapsed: i64, clock_rate: u32, now: u64) -> u64 {
        let t = i128::from(elapsed) * i128::from(CLOCK_RATE) / i128::from(clock_rate.max(1));
        let last = self.last;
        let offset = *self.offset.get_or_insert_with(|| {
            let base = match last {
                // `last` reaches u64::MAX when a camera's timestamps run
                // away (the pts saturates below): no overflow on reconnect.
                Some(l) => now.max(l.saturating_add(1)),
                None => now,
            };
            i128::from(base) - t
        });
        let pts = u64::try_from((offset + t).max(0)).unwrap_or(u64::MAX);
        self.last = Some(last.map_or(pts, |l| l.max(pts)));
        pts
    }
}

/// 90 kHz ticks since a process-wide origin.
fn now_90khz() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    let d = EPOCH.get_or_init(Instant::now).elapsed();
    (d.as_nanos() * u128::from(CLOCK_RATE) / 1_000_000_000) as u64
}

#[cfg(test)]
mod tests;
