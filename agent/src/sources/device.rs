//! What a `[[device]]` of agent.toml describes: one physical camera, its
//! type, lenses and video source ([`Source`]: one variant per `source`,
//! holding only that source's keys). The camera registry starts cameras
//! from it and the PTZ service finds its domes in it; reading the table
//! refuses a key of another source by name, the config loader checks the
//! values (`config.rs`), the drivers define their own tables
//! (`[device.synthetic]`, `[device.replay]`); the `[device.onvif]` table is
//! here so that the PTZ drivers depend on the sources, never the reverse.

use crate::secret::Secret;
use crate::sources::replay::ReplaySettings;
use crate::sources::rtsp::RtspTransport;
use crate::sources::synthetic::SyntheticSettings;
use ponte_proto::media::{Codec, Quality};
use serde::{Deserialize, Serialize};

/// Camera type of a device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DeviceKind {
    /// Motorised PTZ dome.
    DomePtz,
    /// Fixed dome.
    Dome,
    /// Fixed camera with two lenses.
    FixedBiOptic,
    /// Fixed camera with four lenses.
    FixedQuadOptic,
    /// Plain fixed camera.
    #[default]
    Fixed,
}

impl DeviceKind {
    /// Kebab-case name, as in config and catalog.
    pub fn name(self) -> &'static str {
        match self {
            DeviceKind::DomePtz => "dome-ptz",
            DeviceKind::Dome => "dome",
            DeviceKind::FixedBiOptic => "fixed-bi-optic",
            DeviceKind::FixedQuadOptic => "fixed-quad-optic",
            DeviceKind::Fixed => "fixed",
        }
    }

    /// Lens count implied by the type.
    pub fn lenses(self) -> u8 {
        match self {
            DeviceKind::FixedBiOptic => 2,
            DeviceKind::FixedQuadOptic => 4,
            _ => 1,
        }
    }
}

/// The `source` value of a `[[device]]`: which of [`Source`] it holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SourceKind {
    /// Built-in test pattern encoded to H.264.
    #[default]
    Synthetic,
    /// An IP camera pulled over RTSP (`[[device.lens]]` URLs).
    Rtsp,
    /// One GOP of the test pattern encoded once, padded to a bitrate and
    /// replayed (`[device.replay]`): load without encoding cost, for benchmarks.
    Replay,
}

impl SourceKind {
    /// Lowercase name, as in config.
    pub fn name(self) -> &'static str {
        match self {
            SourceKind::Synthetic => "synthetic",
            SourceKind::Rtsp => "rtsp",
            SourceKind::Replay => "replay",
        }
    }
}

/// `browser_h264` of an RTSP device: how browsers that cannot play its
/// main stream (H.265) get a picture.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BrowserH264 {
    /// Nothing is made: such a browser is told to use RTSP (or the
    /// camera's own H.264 substream, when it has one).
    #[default]
    Off,
    /// The agent decodes the main stream and re-encodes it to H.264 of at
    /// most 640×360, offered as the lens's substream, only while watched
    /// and at most `agent.max_transcodes` at a time.
    Transcode,
}

impl BrowserH264 {
    /// Lowercase name, as in config.
    pub fn name(self) -> &'static str {
        match self {
            BrowserH264::Off => "off",
            BrowserH264::Transcode => "transcode",
        }
    }
}

/// `[[device.lens]]`: the streams of one lens of an RTSP device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LensSource {
    /// Main stream URL (`rtsp://host[:port]/path`).
    pub main: String,
    /// Substream URL, if the camera has one.
    #[serde(default)]
    pub sub: Option<String>,
    /// Codec hint for the main stream until the camera has been reached
    /// (overrides the device's `codec`).
    #[serde(default)]
    pub codec: Option<Codec>,
}

/// `[[device]]`: one physical camera with one or more lenses. `PartialEq`
/// compares every key, passwords included: a reload restarts exactly the
/// devices whose entry changed.
///
/// Read and written through `RawDevice`, the table as the file spells
/// it: serde's internally tagged enums cannot refuse unknown keys, so the
/// flat table is read with `deny_unknown_fields` and converted, refusing a
/// key of another source by name.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "RawDevice", into = "RawDevice")]
pub struct Device {
    /// Stable id (lowercase letters, digits, `-`).
    pub id: String,
    /// Human name (place).
    pub name: String,
    /// Zone / neighbourhood.
    pub zone: String,
    /// Camera type (`type`).
    pub kind: DeviceKind,
    /// Number of lenses (defaults to what the type implies).
    pub lenses: Option<u8>,
    /// Free tags for policy.
    pub tags: Vec<String>,
    /// Video source (`source`) with the keys of that source.
    pub source: Source,
    /// `dome-ptz`: the camera's ONVIF PTZ service (`[device.onvif]`);
    /// without it the dome cannot be steered.
    pub onvif: Option<OnvifSettings>,
}

/// Where a device's video comes from, with that source's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// `source = "synthetic"`: the built-in test pattern (`[device.synthetic]`).
    Synthetic(SyntheticSettings),
    /// `source = "rtsp"`: an IP camera (`[[device.lens]]` and the RTSP keys).
    Rtsp(RtspSource),
    /// `source = "replay"`: one GOP replayed at a bitrate (`[device.replay]`).
    Replay(ReplaySettings),
}

impl Default for Source {
    fn default() -> Self {
        Source::Synthetic(SyntheticSettings::default())
    }
}

impl Source {
    /// The `source` value.
    pub fn kind(&self) -> SourceKind {
        match self {
            Source::Synthetic(_) => SourceKind::Synthetic,
            Source::Rtsp(_) => SourceKind::Rtsp,
            Source::Replay(_) => SourceKind::Replay,
        }
    }

    /// The RTSP settings, for an RTSP device.
    pub fn rtsp(&self) -> Option<&RtspSource> {
        match self {
            Source::Rtsp(r) => Some(r),
            _ => None,
        }
    }

    /// The test pattern's settings, for a synthetic device.
    pub fn synthetic(&self) -> Option<&SyntheticSettings> {
        match self {
            Source::Synthetic(s) => Some(s),
            _ => None,
        }
    }
}

/// Default of `stall_secs`.
pub const DEFAULT_STALL_SECS: u64 = 5;

/// The keys of a `source = "rtsp"` device.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RtspSource {
    /// One `[[device.lens]]` table per lens, in lens order.
    pub lenses: Vec<LensSource>,
    /// User name for Basic/Digest authentication.
    pub username: Option<String>,
    /// Password (prefer `password_env`).
    pub password: Option<Secret>,
    /// Name of the environment variable holding the password.
    pub password_env: Option<String>,
    /// `tcp` (default) or `udp`.
    pub transport: RtspTransport,
    /// Reconnect when no frame arrived for this many seconds (default 5).
    pub stall_secs: Option<u64>,
    /// Pull only while someone watches, instead of always.
    pub on_demand: bool,
    /// Codec the main streams deliver, announced until the camera is
    /// reached (`h264` by default).
    pub codec: Option<Codec>,
    /// `transcode`: each lens's substream is an H.264 transcode of its
    /// main stream, for browsers (`browser_h264`).
    pub browser_h264: BrowserH264,
}

impl RtspSource {
    /// Whether each lens's substream is transcoded from its main stream.
    pub fn transcodes(&self) -> bool {
        self.browser_h264 == BrowserH264::Transcode
    }

    /// The `[[device.lens]]` table of lens `n` (from 1).
    pub fn lens(&self, lens: u8) -> Option<&LensSource> {
        self.lenses.get(usize::from(lens).checked_sub(1)?)
    }

    /// Reconnect after this long without a frame.
    pub fn stall_timeout(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.stall_secs.unwrap_or(DEFAULT_STALL_SECS))
    }

    /// Credentials (`username` with `password` or `password_env`) of
    /// device `device`, read from the environment at call time.
    pub fn credentials(&self, device: &str) -> anyhow::Result<Option<(String, String)>> {
        use anyhow::Context as _;
        let Some(user) = &self.username else { return Ok(None) };
        let password = match (&self.password, &self.password_env) {
            (Some(p), _) => p.0.clone(),
            (None, Some(var)) => std::env::var(var).with_context(|| {
                format!("device `{device}`: `device.password_env` names `{var}`, which is not set")
            })?,
            (None, None) => String::new(),
        };
        Ok(Some((user.clone(), password)))
    }
}

impl Device {
    /// Lens count.
    pub fn lens_count(&self) -> u8 {
        self.lenses.unwrap_or(self.kind.lenses())
    }

    /// Camera id of lens `n` (from 1): the device id for a single lens.
    pub fn camera_id(&self, lens: u8) -> String {
        if self.lens_count() == 1 {
            self.id.clone()
        } else {
            format!("{}-{lens}", self.id)
        }
    }

    /// Qualities lens `n` (from 1) offers: synthetic and replayed cameras
    /// both, RTSP lenses `sub` only when a substream URL is configured or
    /// the device transcodes one (`browser_h264 = "transcode"`).
    pub fn qualities(&self, lens: u8) -> Vec<Quality> {
        let has_sub = match &self.source {
            Source::Synthetic(_) | Source::Replay(_) => true,
            Source::Rtsp(r) => r.transcodes() || r.lens(lens).is_some_and(|l| l.sub.is_some()),
        };
        if has_sub {
            vec![Quality::Main, Quality::Sub]
        } else {
            vec![Quality::Main]
        }
    }

    /// Codec announced for lens `n` until the camera tells: an RTSP lens's
    /// `codec`, else the device's, else H.264.
    pub fn codec_hint(&self, lens: u8) -> Codec {
        let Source::Rtsp(r) = &self.source else { return Codec::H264 };
        r.lens(lens).and_then(|l| l.codec).or(r.codec).unwrap_or(Codec::H264)
    }

    /// RTSP credentials of the device, if it is an RTSP camera with a
    /// `username` (the ONVIF client falls back to them).
    pub fn credentials(&self) -> anyhow::Result<Option<(String, String)>> {
        match &self.source {
            Source::Rtsp(r) => r.credentials(&self.id),
            Source::Synthetic(_) | Source::Replay(_) => Ok(None),
        }
    }
}

/// A `[[device]]` key that belongs to another source than the device's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("device `{device}`: `{key}` only applies to `source = \"{belongs_to}\"`")]
pub struct ForeignKey {
    /// Device id.
    pub device: String,
    /// The key as the file spells it (`device.username`, `[device.replay]`).
    pub key: &'static str,
    /// The `source` the key is for.
    pub belongs_to: &'static str,
}

/// `[[device]]` as the file spells it: every source's keys side by side,
/// so that an unknown key is still refused by name.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDevice {
    id: String,
    name: String,
    #[serde(default)]
    zone: String,
    #[serde(rename = "type")]
    kind: DeviceKind,
    #[serde(default)]
    lenses: Option<u8>,
    #[serde(default)]
    tags: Vec<String>,
    source: SourceKind,
    // Options written as null (not skipped): the `PONTE_*` override check
    // reads the config's keys from its JSON form, so an RTSP key absent
    // from the file can still be set from the environment.
    #[serde(default, rename = "lens", skip_serializing_if = "Vec::is_empty")]
    lens: Vec<LensSource>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<Secret>,
    #[serde(default)]
    password_env: Option<String>,
    #[serde(default)]
    transport: Option<RtspTransport>,
    #[serde(default)]
    stall_secs: Option<u64>,
    #[serde(default)]
    on_demand: Option<bool>,
    #[serde(default)]
    codec: Option<Codec>,
    #[serde(default)]
    browser_h264: Option<BrowserH264>,
    #[serde(default)]
    synthetic: Option<SyntheticSettings>,
    #[serde(default)]
    replay: Option<ReplaySettings>,
    #[serde(default)]
    onvif: Option<OnvifSettings>,
}

impl TryFrom<RawDevice> for Device {
    type Error = ForeignKey;

    fn try_from(raw: RawDevice) -> Result<Self, ForeignKey> {
        let tables = [
            ("[device.synthetic]", SourceKind::Synthetic, raw.synthetic.is_some()),
            ("[device.replay]", SourceKind::Replay, raw.replay.is_some()),
        ];
        let rtsp_keys = [
            ("device.lens", !raw.lens.is_empty()),
            ("device.username", raw.username.is_some()),
            ("device.password", raw.password.is_some()),
            ("device.password_env", raw.password_env.is_some()),
            ("device.transport", raw.transport.is_some()),
            ("device.stall_secs", raw.stall_secs.is_some()),
            ("device.on_demand", raw.on_demand.is_some()),
            ("device.codec", raw.codec.is_some()),
            ("device.browser_h264", raw.browser_h264.is_some()),
        ]
        .map(|(key, set)| (key, SourceKind::Rtsp, set));
        let foreign = tables.iter().chain(&rtsp_keys).find(|(_, kind, set)| *set && *kind != raw.source);
        if let Some((key, kind, _)) = foreign {
            return Err(ForeignKey { device: raw.id, key, belongs_to: kind.name() });
        }
        let source = match raw.source {
            SourceKind::Synthetic => Source::Synthetic(raw.synthetic.unwrap_or_default()),
            SourceKind::Replay => Source::Replay(raw.replay.unwrap_or_default()),
            SourceKind::Rtsp => Source::Rtsp(RtspSource {
                lenses: raw.lens,
                username: raw.username,
                password: raw.password,
                password_env: raw.password_env,
                transport: raw.transport.unwrap_or_default(),
                stall_secs: raw.stall_secs,
                on_demand: raw.on_demand.unwrap_or_default(),
                codec: raw.codec,
                browser_h264: raw.browser_h264.unwrap_or_default(),
            }),
        };
        Ok(Device {
            id: raw.id,
            name: raw.name,
            zone: raw.zone,
            kind: raw.kind,
            lenses: raw.lenses,
            tags: raw.tags,
            source,
            onvif: raw.onvif,
        })
    }
}

impl From<Device> for RawDevice {
    fn from(d: Device) -> Self {
        let mut raw = RawDevice {
            id: d.id,
            name: d.name,
            zone: d.zone,
            kind: d.kind,
            lenses: d.lenses,
            tags: d.tags,
            source: d.source.kind(),
            lens: Vec::new(),
            username: None,
            password: None,
            password_env: None,
            transport: None,
            stall_secs: None,
            on_demand: None,
            codec: None,
            browser_h264: None,
            synthetic: None,
            replay: None,
            onvif: d.onvif,
        };
        match d.source {
            // An all-default table is left out, as if never written.
            Source::Synthetic(s) => raw.synthetic = (s != SyntheticSettings::default()).then_some(s),
            Source::Replay(r) => raw.replay = (r != ReplaySettings::default()).then_some(r),
            Source::Rtsp(r) => {
                raw.lens = r.lenses;
                raw.username = r.username;
                raw.password = r.password;
                raw.password_env = r.password_env;
                raw.transport = Some(r.transport);
                raw.stall_secs = r.stall_secs;
                raw.on_demand = Some(r.on_demand);
                raw.codec = r.codec;
                raw.browser_h264 = Some(r.browser_h264);
            }
        }
        raw
    }
}

/// `[device.onvif]` table of a device in agent.toml: the dome's ONVIF PTZ
/// service, read by [`crate::ptz::onvif`], and any camera's ONVIF events
/// (`events = true`), read by [`crate::camera_events`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OnvifSettings {
    /// PTZ service URL, e.g. `http://10.1.2.3/onvif/ptz_service`; on a camera
    /// without PTZ, any of its ONVIF service URLs (the events one defaults to its host).
    pub url: String,
    /// Media service URL for GetProfiles; default: same host, `/onvif/media_service`.
    #[serde(default)]
    pub media_url: Option<String>,
    /// Profile token; None = the first profile with a PTZ configuration (GetProfiles).
    #[serde(default)]
    pub profile: Option<String>,
    /// WS-UsernameToken user; default: the device's RTSP user.
    #[serde(default)]
    pub username: Option<String>,
    /// WS-UsernameToken password; default: the device's RTSP password.
    #[serde(default)]
    pub password: Option<Secret>,
    /// Timeout of one request in milliseconds (default 2000).
    #[serde(default)]
    pub timeout_ms: Option<u64>,
    /// Subscribe to the camera's alarms (motion, tampering, video loss) over
    /// ONVIF Events (PullPoint).
    #[serde(default)]
    pub events: bool,
    /// Events service URL; default: same host as `url`, `/onvif/events_service`.
    #[serde(default)]
    pub events_url: Option<String>,
}
