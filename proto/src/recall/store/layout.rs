//! Where things are on disk: `ROOT/<camera>/<quality>/<start_ms>.pseg`.
//!
//! A camera id names a directory, so it is checked rather than escaped: only
//! `[A-Za-z0-9._-]`, at most [`MAX_CAMERA_LEN`] bytes, and never `.` or `..`;
//! anything else could leave the root or collide on a case-folding disk less
//! readably than a refusal.

use crate::hub::TrackKey;
use crate::media::Quality;
use std::path::{Path, PathBuf};

/// Longest camera id that names a directory.
pub const MAX_CAMERA_LEN: usize = 128;
/// Extension of segment files.
pub const SEGMENT_EXT: &str = "pseg";

/// True when `camera` can name a directory under the root.
pub fn camera_ok(camera: &str) -> bool {
    !camera.is_empty()
        && camera.len() <= MAX_CAMERA_LEN
        && camera != "."
        && camera != ".."
        && camera.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

/// Directory of a track's segments (the camera id must pass [`camera_ok`]).
pub fn track_dir(root: &Path, key: &TrackKey) -> PathBuf {
    root.join(&key.camera).join(key.quality.name())
}

/// Path of the segment of `key` starting at `start_ms`; zero-padded so a
/// directory listing sorts in time order.
pub fn segment_path(root: &Path, key: &TrackKey, start_ms: u64) -> PathBuf {
    track_dir(root, key).join(format!("{start_ms:013}.{SEGMENT_EXT}"))
}

/// A segment file found on disk.
#[derive(Debug, Clone)]
pub struct FoundSegment {
    /// Start time from the file name, Unix ms.
    pub start_ms: u64,
    /// Its path.
    pub path: PathBuf,
}

/// The tracks under `root` with their segment files in time order. Entries
/// that are not ours (other names, other files) are left alone and skipped.
pub fn list(root: &Path) -> std::io::Result<Vec<(TrackKey, Vec<FoundSegment>)>> {
    let mut tracks = Vec::new();
    for camera in std::fs::read_dir(root)? {
        let camera = camera?;
        let Some(name) = camera.file_name().to_str().map(str::to_owned) else { continue };
        if !camera_ok(&name) || !camera.file_type()?.is_dir() {
            continue;
        }
        for quality in [Quality::Main, Quality::Sub] {
            let key = TrackKey::new(name.clone(), quality);
            let dir = track_dir(root, &key);
            let entries = match std::fs::read_dir(&dir) {
                Ok(entries) => entries,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            let mut segments = Vec::new();
            for entry in entries {
                let path = entry?.path();
                if path.extension().and_then(|e| e.to_str()) != Some(SEGMENT_EXT) {
                    continue;
                }
                let Some(start_ms) = path.file_stem().and_then(|s| s.to_str()).and_then(|s| s.parse().ok())
                else {
                    continue;
                };
                segments.push(FoundSegment { start_ms, path });
            }
            segments.sort_by_key(|s| s.start_ms);
            tracks.push((key, segments));
        }
    }
    tracks.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(tracks)
}
