//! What a URL names: a camera at a quality, and the base URL its track
//! control resolves against.

use crate::rtsp::sdp;
use ponte_proto::media::Quality;
use rtsp_types::Url;

/// What a URL names: a camera at a quality.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Target {
    pub(super) camera: String,
    pub(super) quality: Quality,
    /// Path of the stream without the track part, e.g. `/cam/sub`.
    pub(super) path: String,
}

impl Target {
    /// `/<camera>`, `/<camera>/main`, `/<camera>/sub`, each optionally
    /// followed by `/trackID=0`.
    pub(super) fn parse(url: &Url) -> Option<Self> {
        let mut segments: Vec<&str> = url.path_segments()?.filter(|s| !s.is_empty()).collect();
        if segments.last().is_some_and(|s| *s == sdp::TRACK_CONTROL) {
            segments.pop();
        }
        let (camera, quality) = match segments.as_slice() {
            [camera] => (*camera, Quality::Main),
            [camera, q] => (*camera, q.parse().ok()?),
            _ => return None,
        };
        Some(Self { camera: camera.to_owned(), quality, path: format!("/{}", segments.join("/")) })
    }

    /// The URL a client resolves the track's control URL against.
    pub(super) fn base_url(&self, url: &Url) -> String {
        let mut base = url.clone();
        base.set_query(None);
        base.set_fragment(None);
        base.set_path(&format!("{}/", self.path));
        base.to_string()
    }
}
