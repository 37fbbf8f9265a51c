//! What a `[[device]]` of agent.toml describes: one physical camera, its
//! type, lenses and video source. The camera registry starts cameras from
//! it and the PTZ service finds its domes in it; the config loader reads and
//! validates it (`config.rs`), the drivers define their own tables
//! (`[device.synthetic]`, `[device.replay]`); the `[device.onvif]` table is
//! here so that the PTZ drivers depend on the sources, never the reverse.

use crate::secret::Secret;
use crate::sources::replay::ReplaySettings;
use crate::sources::rtsp::RtspTransport;
use crate::sources::synthetic::SyntheticSettings;
use ponte_proto::media::Codec;
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

/// Where a device's video comes from.
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
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Device {
    /// Stable id (lowercase letters, digits, `-`).
    pub id: String,
    /// Human name (place).
    pub name: String,
    /// Zone / neighbourhood.
    #[serde(default)]
    pub zone: String,
    /// Camera type.
    #[serde(rename = "type")]
    pub kind: DeviceKind,
    /// Number of lenses (defaults to what the type implies).
    #[serde(default)]
    pub lenses: Option<u8>,
    /// Free tags for policy.
    #[serde(default)]
    pub tags: Vec<String>,
    /// Video source.
    pub source: SourceKind,
    /// RTSP: one `[[device.lens]]` table per lens, in lens order.
    #[serde(default, rename = "lens")]
    pub lens_sources: Vec<LensSource>,
    /// RTSP: user name for Basic/Digest authentication.
    #[serde(default)]
    pub username: Option<String>,
    /// RTSP: password (prefer `password_env`).
    #[serde(default)]
    pub password: Option<Secret>,
    /// RTSP: name of the environment variable holding the password.
    #[serde(default)]
    pub password_env: Option<String>,
    /// RTSP: `tcp` (default) or `udp`.
    #[serde(default)]
    pub transport: RtspTransport,
    /// RTSP: reconnect when no frame arrived for this many seconds (default 5).
    #[serde(default)]
    pub stall_secs: Option<u64>,
    /// RTSP: pull only while someone watches, instead of always.
    #[serde(default)]
    pub on_demand: bool,
    /// RTSP: codec the main streams deliver, announced until the camera is
    /// reached (`h264` by default).
    #[serde(default)]
    pub codec: Option<Codec>,
    /// Synthetic: size and bitrate of the test pattern's streams.
    #[serde(default)]
    pub synthetic: Option<SyntheticSettings>,
    /// Replay: bitrate, frame rate and GOP of the replayed streams.
    #[serde(default)]
    pub replay: Option<ReplaySettings>,
    /// `dome-ptz`: the camera's ONVIF PTZ service (`[device.onvif]`);
    /// without it the dome cannot be steered.
    #[serde(default)]
    pub onvif: Option<OnvifSettings>,
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
}

/// `[device.onvif]` table of a device in agent.toml: the dome's ONVIF PTZ
/// service, read by [`crate::ptz::onvif`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OnvifSettings {
    /// PTZ service URL, e.g. `http://10.1.2.3/onvif/ptz_service`.
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
}
