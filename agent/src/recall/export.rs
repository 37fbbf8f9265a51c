//! Evidence export: the GOPs of an interval muxed to MP4, with a manifest
//! signed by the agent's key (`ponte_proto::recall::evidence`).

use super::{now_ms, Recall};
use ponte_proto::hub::TrackKey;
use ponte_proto::media::Quality;
use ponte_proto::recall::evidence::{self, Manifest};
use ponte_proto::recall::mp4;
use sha2::{Digest, Sha256};
use std::time::{Duration, UNIX_EPOCH};

/// Longest interval one export may cover: ten minutes (a clip is built in
/// memory; at 8 Mbit/s that is 600 MB).
pub const MAX_EXPORT_MS: u64 = 10 * 60 * 1000;

/// What a site asked to export.
#[derive(Debug, Clone)]
pub struct ExportRequest {
    /// Camera id.
    pub camera: String,
    /// Quality.
    pub quality: Quality,
    /// Start, Unix ms.
    pub from_ms: u64,
    /// End, Unix ms.
    pub to_ms: u64,
    /// The operator, as `viewer@site`.
    pub operator: String,
    /// The site.
    pub site: String,
}

/// A finished export: the signed manifest (JSON) and the MP4.
pub struct Exported {
    /// Signed manifest, JSON.
    pub manifest: Vec<u8>,
    /// The clip.
    pub clip: Vec<u8>,
    /// SHA-256 of the clip, hex.
    pub sha256: String,
    /// Frames in the clip.
    pub frames: u64,
    /// The export slot, held until the clip is sent.
    pub _slot: tokio::sync::OwnedSemaphorePermit,
}

fn rfc3339(ms: u64) -> String {
    ponte_proto::audit::rfc3339(UNIX_EPOCH + Duration::from_millis(ms))
}

impl Recall {
    /// Builds the export, or says why not (nothing recorded, too long, the
    /// key unreadable).
    pub async fn export(&self, req: ExportRequest) -> Result<Exported, String> {
        let camera = &req.camera;
        let span = req.to_ms.saturating_sub(req.from_ms);
        if span == 0 {
            return Err(format!("camera `{camera}`: the export ends before it starts"));
        }
        if span > MAX_EXPORT_MS {
            return Err(format!(
                "camera `{camera}`: an export covers at most {} minutes; this one asks for {:.1}: split it",
                MAX_EXPORT_MS / 60_000,
                span as f64 / 60_000.0
            ));
        }
        let slot = self.exporting.clone().try_acquire_owned().map_err(|_| {
            format!("camera `{camera}`: another export is being made at the master room; retry in a minute")
        })?;
        let Some(rule) = self.store_of(camera, req.quality, Some(req.from_ms)) else {
            return Err(format!("nothing is recorded of camera `{camera}` ({})", req.quality.name()));
        };
        let store = rule.store.clone();
        let key = TrackKey::new(camera.clone(), req.quality);
        let (from, to) = (req.from_ms, req.to_ms);
        let gops = tokio::task::spawn_blocking(move || store.gops_between(&key, from, to))
            .await
            .map_err(|e| format!("camera `{camera}`: the export reader failed: {e}"))?
            .map_err(|e| format!("camera `{camera}`: cannot read the recording: {e}"))?;
        // Frames from the interval's end on are left out (a GOP's prefix decodes).
        let mut gops: Vec<_> = gops
            .into_iter()
            .map(|mut g| {
                let keep = g.frames.iter().take_while(|f| g.frame_wall_ms(f) < to).count();
                g.frames.truncate(keep);
                g
            })
            .filter(|g| !g.frames.is_empty())
            .collect();
        gops.retain(|g| g.end_wall_ms() > from);
        let (Some(first), Some(last)) = (gops.first(), gops.last()) else {
            return Err(format!(
                "nothing is recorded of camera `{camera}` ({}) from {} to {}",
                req.quality.name(),
                rfc3339(from),
                rfc3339(to)
            ));
        };
        let first_ms = first.wall_ms;
        let last_ms = last.frames.last().map_or(last.wall_ms, |f| last.frame_wall_ms(f));
        let muxed = tokio::task::spawn_blocking(move || mp4::mux(&gops))
            .await
            .map_err(|e| format!("camera `{camera}`: the MP4 muxer failed: {e}"))?
            .map_err(|e| format!("camera `{camera}`: cannot make the MP4: {e}"))?;
        let sha256 = hex::encode(Sha256::digest(&muxed.bytes));
        let stamp = rfc3339(from).replace([':', '-'], "").replace('.', "");
        let manifest = Manifest {
            version: 1,
            camera: camera.clone(),
            quality: req.quality.name().to_owned(),
            from: rfc3339(from),
            to: rfc3339(to),
            first_frame: rfc3339(first_ms),
            last_frame: rfc3339(last_ms),
            frames: muxed.frames,
            duration_ms: muxed.duration_ms,
            file: format!("{camera}-{stamp}.mp4"),
            bytes: muxed.bytes.len() as u64,
            sha256: sha256.clone(),
            operator: req.operator.clone(),
            site: req.site.clone(),
            agent: self.node.clone(),
            created: rfc3339(now_ms()),
        };
        let read = |p: &std::path::Path| {
            std::fs::read_to_string(p)
                .map_err(|e| format!("cannot read `{}` to sign the export: {e}", p.display()))
        };
        let cert = read(&self.tls.cert)?;
        let key = read(&self.tls.key)?;
        let signed = evidence::sign(&manifest, &cert, &key)
            .map_err(|e| format!("camera `{camera}`: cannot sign the export: {e}"))?;
        Ok(Exported { manifest: signed, clip: muxed.bytes, sha256, frames: muxed.frames, _slot: slot })
    }

    /// The audit log (exports are audited as they leave).
    pub fn audit(&self) -> &std::sync::Arc<ponte_proto::audit::AuditLog> {
        &self.audit
    }
}
