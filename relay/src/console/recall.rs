//! The console's recall API (issue 21): what is recorded of a camera, and
//! evidence exports.
//!
//! - `GET /api/recordings/{camera}?quality=` → `{ranges: [[from_ms, to_ms]],
//!   earliest_ms, export, now_ms}` as the master room lets this site know
//!   them (403 with the agent's reason when the site may not play back).
//! - `POST /api/export` `{camera, quality?, from_ms, to_ms}` → the clip and
//!   its signed manifest are saved under `relay.state_dir/exports/<id>/`
//!   and answered as `{id, file, clip, manifest_url, manifest}`; audited.
//!   Accounts only: a bearer token (a wall display) may not take evidence.
//! - `GET /api/exports/{id}/{file}` → the clip or the manifest, to the
//!   account that asked for it.

use super::{owner, writable, ConsoleState};
use crate::auth::{ScopeRefusal, Viewer};
use crate::whep::http::{quality_param, QualityQuery, Reject};
use axum::extract::{Extension, Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use ponte_proto::media::Quality;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use tracing::{info, warn};

/// Exports this relay kept, by id: whose they are and where.
#[derive(Default)]
pub struct Exports {
    dir: Option<PathBuf>,
    saved: Mutex<HashMap<String, Saved>>,
}

struct Saved {
    owner: String,
    clip: (String, PathBuf),
    manifest: (String, PathBuf),
}

impl Exports {
    /// Exports saved under `dir` (none: kept in no file, refused).
    pub fn new(dir: Option<PathBuf>) -> Self {
        Self { dir, saved: Mutex::default() }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Saved>> {
        self.saved.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Whether this viewer may have `camera` at `quality` (its cameras and its
/// quality cap, as WHEP and RTSP check them).
fn visible(state: &ConsoleState, viewer: &Viewer, camera: &str, quality: Quality) -> Result<(), Reject> {
    let hidden = || {
        Reject::new(
            StatusCode::NOT_FOUND,
            format!("camera `{camera}` is not in your catalog; pick one listed at /api/catalog"),
        )
    };
    let catalog = state.whep.source().catalog();
    let entry = catalog.iter().find(|c| c.id == camera).ok_or_else(hidden)?;
    match viewer.check(entry, quality) {
        Ok(()) => Ok(()),
        Err(ScopeRefusal::Hidden(_)) => Err(hidden()),
        Err(ScopeRefusal::Quality(why)) => Err(Reject::new(StatusCode::FORBIDDEN, why)),
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[derive(Serialize)]
struct RecordedBody {
    camera: String,
    quality: &'static str,
    ranges: Vec<[u64; 2]>,
    earliest_ms: Option<u64>,
    export: bool,
    now_ms: u64,
}

/// `GET /api/recordings/{camera}`.
pub(super) async fn recordings(
    State(state): State<Arc<ConsoleState>>,
    Extension(viewer): Extension<Viewer>,
    Path(camera): Path<String>,
    Query(query): Query<QualityQuery>,
) -> Result<Response, Reject> {
    let quality = quality_param(&camera, query.quality.as_deref())?;
    visible(&state, &viewer, &camera, quality)?;
    let recorded = state.whep.source().recorded(&camera, quality).await.map_err(|f| {
        let status = if f.refused { StatusCode::FORBIDDEN } else { StatusCode::SERVICE_UNAVAILABLE };
        Reject::new(status, f.reason)
    })?;
    let body = RecordedBody {
        camera,
        quality: quality.name(),
        ranges: recorded.ranges,
        earliest_ms: recorded.earliest_ms,
        export: recorded.export,
        now_ms: now_ms(),
    };
    Ok(([(header::CACHE_CONTROL, "no-store")], Json(body)).into_response())
}

/// `POST /api/export`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ExportBody {
    camera: String,
    #[serde(default)]
    quality: Option<Quality>,
    from_ms: u64,
    to_ms: u64,
}

#[derive(Serialize)]
struct ExportAnswer {
    id: String,
    /// The clip's file name.
    file: String,
    /// Where to download the clip.
    clip: String,
    /// Where to download the signed manifest.
    manifest_url: String,
    /// The signed manifest.
    manifest: serde_json::Value,
}

/// A file name the manifest proposes, kept to safe characters.
fn safe_name(name: &str, fallback: &str) -> String {
    let n: String =
        name.chars().filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')).take(96).collect();
    if n.is_empty() || n.starts_with('.') {
        fallback.to_owned()
    } else {
        n
    }
}

pub(super) async fn export(
    State(state): State<Arc<ConsoleState>>,
    Extension(viewer): Extension<Viewer>,
    Json(body): Json<ExportBody>,
) -> Result<Response, Reject> {
    writable(&viewer)?;
    let camera = body.camera;
    let quality = body.quality.unwrap_or(Quality::Main);
    visible(&state, &viewer, &camera, quality)?;
    let Some(dir) = state.exports.dir.clone() else {
        return Err(Reject::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "this relay keeps no exports (no state directory)",
        ));
    };
    let who = viewer.upstream_name();
    let audit = state.audit().clone();
    let interval = format!("{} to {} (Unix ms)", body.from_ms, body.to_ms);
    // Written before the wait: an operator who closes the page still shows.
    audit.recall(viewer.audit_name(), &camera, quality, "export", "requested", &interval);
    let file = match state.whep.source().export(&camera, quality, (body.from_ms, body.to_ms), &who).await {
        Ok(f) => f,
        Err(f) => {
            audit.recall(
                viewer.audit_name(),
                &camera,
                quality,
                "export",
                "refused",
                &format!("{interval}: {}", f.reason),
            );
            let status = if f.refused { StatusCode::FORBIDDEN } else { StatusCode::SERVICE_UNAVAILABLE };
            return Err(Reject::new(status, f.reason));
        }
    };
    let manifest: serde_json::Value = serde_json::from_slice(&file.manifest).map_err(|e| {
        Reject::new(
            StatusCode::BAD_GATEWAY,
            format!("camera `{camera}`: the agent's manifest is not JSON: {e}"),
        )
    })?;
    let id = format!("{:032x}", rand::random::<u128>());
    let clip_name = safe_name(manifest.get("file").and_then(|v| v.as_str()).unwrap_or(""), "clip.mp4");
    let manifest_name = format!("{}.manifest.json", clip_name.trim_end_matches(".mp4"));
    let folder = dir.join(&id);
    let (clip_path, manifest_path) = (folder.join(&clip_name), folder.join(&manifest_name));
    let (cp, mp, f) = (clip_path.clone(), manifest_path.clone(), folder.clone());
    let written = tokio::task::spawn_blocking(move || {
        std::fs::create_dir_all(&f)?;
        std::fs::write(&cp, &file.clip)?;
        std::fs::write(&mp, &file.manifest)
    })
    .await
    .map_err(|e| e.to_string())
    .and_then(|r| r.map_err(|e| e.to_string()));
    if let Err(e) = written {
        warn!(camera = %camera, dir = %folder.display(), error = %e, "export: cannot save the clip");
        audit.recall(viewer.audit_name(), &camera, quality, "export", "failed", &format!("{interval}: {e}"));
        return Err(Reject::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("camera `{camera}`: the export arrived but cannot be saved here; see the relay log"),
        ));
    }
    let sha = manifest.get("sha256").and_then(|v| v.as_str()).unwrap_or("?").to_owned();
    info!(camera = %camera, viewer = viewer.name(), file = %clip_path.display(), "export saved");
    audit.recall(
        viewer.audit_name(),
        &camera,
        quality,
        "export",
        "saved",
        &format!("{interval}; {} sha256 {sha}", clip_path.display()),
    );
    state.exports.lock().insert(
        id.clone(),
        Saved {
            owner: owner(&viewer),
            clip: (clip_name.clone(), clip_path),
            manifest: (manifest_name.clone(), manifest_path),
        },
    );
    let answer = ExportAnswer {
        clip: format!("/api/exports/{id}/{clip_name}"),
        manifest_url: format!("/api/exports/{id}/{manifest_name}"),
        id,
        file: clip_name,
        manifest,
    };
    Ok((StatusCode::CREATED, Json(answer)).into_response())
}

/// `GET /api/exports/{id}/{file}`.
pub(super) async fn download(
    State(state): State<Arc<ConsoleState>>,
    Extension(viewer): Extension<Viewer>,
    Path((id, name)): Path<(String, String)>,
) -> Result<Response, Reject> {
    let not_found =
        || Reject::new(StatusCode::NOT_FOUND, format!("there is no export `{id}/{name}` of yours"));
    let (path, mime) = {
        let saved = state.exports.lock();
        let s = saved.get(&id).filter(|s| s.owner == owner(&viewer)).ok_or_else(not_found)?;
        if s.clip.0 == name {
            (s.clip.1.clone(), "video/mp4")
        } else if s.manifest.0 == name {
            (s.manifest.1.clone(), "application/json")
        } else {
            return Err(not_found());
        }
    };
    let bytes = tokio::fs::read(&path).await.map_err(|_| not_found())?;
    let disposition = format!("attachment; filename=\"{name}\"");
    Ok(([(header::CONTENT_TYPE, mime.to_owned()), (header::CONTENT_DISPOSITION, disposition)], bytes)
        .into_response())
}
