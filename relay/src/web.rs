//! The relay's web surface for people: the viewer page, the catalog as JSON
//! and whether a watched picture is live, served with the WHEP routes
//! ([`crate::whep`]) and login ([`crate::auth`]) by one router.
//!
//! Routes:
//! - `GET /api/catalog` → `{ "site": ..., "viewer": ..., "cameras": [...] }`
//! - `GET /api/live/{camera}[?quality=sub]` → the track's state
//! - `GET /` → the viewer page (with its login form); `POST /login`, `POST /logout`
//!
//! On a relay with accounts every route but the page and login needs a
//! viewer (401 without); the catalog is the site's narrowed to the viewer's
//! cameras.

use crate::auth::{self, Viewer};
use crate::page;
use crate::upstream::TrackState;
use crate::whep::{self, quality_param, QualityQuery, Reject, WhepState, MAX_OFFER_BYTES};
use axum::extract::{DefaultBodyLimit, Extension, Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use ponte_proto::wire::CatalogEntry;
use serde::Serialize;
use std::sync::Arc;

/// The WHEP, catalog, viewer-page and login routes.
pub fn router(state: Arc<WhepState>) -> Router {
    let auth = state.auth().clone();
    let need_viewer = axum::middleware::from_fn_with_state(auth.clone(), auth::require_viewer);
    Router::new()
        .route("/api/catalog", get(catalog))
        .route("/api/live/{camera}", get(live))
        .merge(whep::routes())
        .route_layer(need_viewer)
        .route("/", get(viewer_page))
        .layer(DefaultBodyLimit::max(MAX_OFFER_BYTES))
        .with_state(state)
        .merge(auth::router(auth))
}

async fn viewer_page(State(state): State<Arc<WhepState>>) -> Response {
    let headers = [
        (header::CONTENT_SECURITY_POLICY, page::content_security_policy()),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::CACHE_CONTROL, "no-store"),
    ];
    (headers, Html(page::render(&state.source().site()))).into_response()
}

#[derive(Serialize)]
struct CatalogBody {
    site: String,
    /// The logged-in viewer, `null` on a relay without accounts.
    viewer: Option<String>,
    cameras: Vec<CatalogEntry>,
}

async fn catalog(State(state): State<Arc<WhepState>>, Extension(viewer): Extension<Viewer>) -> Response {
    let body = CatalogBody {
        site: state.source().site(),
        viewer: viewer.audit_name().map(str::to_owned),
        cameras: viewer.narrow(state.source().catalog()),
    };
    // Per viewer: no shared cache may keep it.
    ([(header::CACHE_CONTROL, "no-store")], Json(body)).into_response()
}

/// `GET /api/live/{camera}[?quality=sub]`: whether the picture of a camera
/// the viewer watches is live here. The viewer page asks when frames stop,
/// so an operator never takes a frozen picture for a live one.
async fn live(
    State(state): State<Arc<WhepState>>,
    Extension(viewer): Extension<Viewer>,
    Path(camera): Path<String>,
    Query(query): Query<QualityQuery>,
) -> Result<Response, Reject> {
    let quality = quality_param(&camera, query.quality.as_deref())?;
    if !viewer
        .narrow(state.source().catalog())
        .iter()
        .any(|c| c.id == camera && c.qualities.contains(&quality))
    {
        return Err(Reject::new(
            StatusCode::NOT_FOUND,
            format!(
                "camera `{camera}` at `{}` quality is not in your catalog; pick one listed at /api/catalog",
                quality.name()
            ),
        ));
    }
    // Nobody watching it here reads as live: whether another operator
    // watches a camera is not this viewer's business.
    let track = state.source().track_state(&camera, quality).unwrap_or(TrackState::Live);
    let body = serde_json::to_value(track).unwrap_or_default();
    Ok(([(header::CACHE_CONTROL, "no-store")], Json(body)).into_response())
}
