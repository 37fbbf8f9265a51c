//! Media model shared by every node: frames, GOPs and codec configuration.

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// RTP/MPEG clock rate used for every `pts` in ponte.
pub const CLOCK_RATE: u32 = 90_000;

/// Video codec of a track.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Codec {
    /// H.264 / AVC.
    H264,
    /// H.265 / HEVC.
    H265,
}

impl Codec {
    /// Wire identifier.
    pub fn as_u8(self) -> u8 {
        match self {
            Codec::H264 => 1,
            Codec::H265 => 2,
        }
    }

    /// Parses the wire identifier.
    pub fn from_u8(v: u8) -> Option<Self> {
        match v {
            1 => Some(Codec::H264),
            2 => Some(Codec::H265),
            _ => None,
        }
    }

    /// Lower-case name, as used in SDP and status output.
    pub fn name(self) -> &'static str {
        match self {
            Codec::H264 => "h264",
            Codec::H265 => "h265",
        }
    }
}

/// Stream quality of a camera lens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Quality {
    /// Full-resolution main stream.
    Main,
    /// Lower-resolution substream.
    Sub,
}

impl Quality {
    /// Wire identifier.
    pub fn as_u8(self) -> u8 {
        match self {
            Quality::Main => 0,
            Quality::Sub => 1,
        }
    }

    /// Parses the wire identifier.
    pub fn from_u8(v: u8) -> Option<Self> {
        match v {
            0 => Some(Quality::Main),
            1 => Some(Quality::Sub),
            _ => None,
        }
    }

    /// Lower-case name.
    pub fn name(self) -> &'static str {
        match self {
            Quality::Main => "main",
            Quality::Sub => "sub",
        }
    }
}

impl std::str::FromStr for Quality {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "main" => Ok(Quality::Main),
            "sub" => Ok(Quality::Sub),
            other => Err(format!("unknown quality `{other}`: expected `main` or `sub`")),
        }
    }
}

/// Decoder configuration of a track: codec, size and parameter sets (raw NAL
/// units, without start codes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CodecConfig {
    /// Video codec.
    pub codec: Codec,
    /// Coded width in pixels (0 when unknown).
    pub width: u16,
    /// Coded height in pixels (0 when unknown).
    pub height: u16,
    /// Parameter sets in decoding order: VPS (H.265 only), SPS, PPS.
    pub parameter_sets: Vec<Bytes>,
}

impl CodecConfig {
    /// Returns the first parameter set of the given NAL type, if any.
    pub fn parameter_set(&self, nal_type: u8) -> Option<&Bytes> {
        self.parameter_sets.iter().find(|ps| {
            ps.first().map(|&b| match self.codec {
                Codec::H264 => b & 0x1f,
                Codec::H265 => (b >> 1) & 0x3f,
            }) == Some(nal_type)
        })
    }
}

/// One access unit: Annex-B NAL units (start codes included) of one picture.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// Presentation time in 90 kHz units.
    pub pts: u64,
    /// True for a random-access point (IDR / IRAP), where a decoder can start.
    pub keyframe: bool,
    /// Annex-B payload, shared without copying from ingest to egress.
    pub payload: Bytes,
}

/// A group of pictures: a keyframe and the frames that depend on it.
#[derive(Debug, Clone)]
pub struct Gop {
    /// Monotonic GOP sequence number within its track.
    pub seq: u64,
    /// Decoder configuration valid for this GOP.
    pub config: Arc<CodecConfig>,
    /// Frames in decoding order; the first is a keyframe.
    pub frames: Vec<Frame>,
}
