//! The console's incident API (behind the viewer login, as the console's
//! other routes):
//!
//! - `GET /api/incidents`: shares, asks and alarms ([`IncidentBoard::view`])
//! - `POST /api/incidents/shares/{id}/accept` → `{cameras}` to put in tiles
//! - `POST /api/incidents/asks` `{camera, reason}` → `{id}`
//! - `POST /api/incidents/alarms/{id}/ack`
//! - `GET /api/incidents/alarms/{id}/thumbnail` (JPEG)
//!
//! A wall display's token may read the board; only an operator account
//! may act (accept, ask, acknowledge): each action names them in both
//! audit logs. The POSTs take JSON only (a cross-site form cannot send it
//! without a preflight this relay never grants to strangers).

use super::IncidentBoard;
use crate::auth::{self, Auth, Viewer};
use crate::whep::WhepState;
use axum::body::Bytes;
use axum::extract::{Extension, Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use ponte_proto::json_api::{json_body, refused, Refused};
use serde::Deserialize;
use serde_json::json;
use std::collections::HashSet;
use std::sync::Arc;

/// What the routes share.
pub struct IncidentRoutes {
    /// The site's board.
    pub board: Arc<IncidentBoard>,
    /// Cameras and accounts.
    pub whep: Arc<WhepState>,
}

/// The routes.
pub fn router(state: Arc<IncidentRoutes>) -> Router {
    let authn: Arc<Auth> = state.whep.auth().clone();
    Router::new()
        .route("/api/incidents", get(view))
        .route("/api/incidents/shares/{id}/accept", post(accept))
        .route("/api/incidents/asks", post(ask))
        .route("/api/incidents/alarms/{id}/ack", post(ack))
        .route("/api/incidents/alarms/{id}/thumbnail", get(thumbnail))
        .route_layer(axum::middleware::from_fn_with_state(authn, auth::require_viewer))
        .layer(axum::extract::DefaultBodyLimit::max(8 * 1024))
        .with_state(state)
}

/// The cameras this viewer sees.
fn seen(state: &IncidentRoutes, viewer: &Viewer) -> HashSet<String> {
    viewer.narrow(state.whep.source().catalog()).into_iter().map(|c| c.id).collect()
}

/// The operator's name, or the refusal for a token or an anonymous viewer.
fn operator(viewer: &Viewer) -> Result<String, Refused> {
    if viewer.is_token() {
        return Err(Refused(
            StatusCode::FORBIDDEN,
            "a wall display's token may read incidents, not act on them: log in as an operator".into(),
        ));
    }
    Ok(viewer.audit_name().unwrap_or("anonymous").to_owned())
}

async fn view(State(state): State<Arc<IncidentRoutes>>, Extension(viewer): Extension<Viewer>) -> Response {
    let body = state.board.view(&seen(&state, &viewer));
    ([(header::CACHE_CONTROL, "no-store")], Json(body)).into_response()
}

async fn accept(
    State(state): State<Arc<IncidentRoutes>>,
    Extension(viewer): Extension<Viewer>,
    Path(id): Path<u64>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let who = match operator(&viewer)
        .and_then(|w| json_body::<serde_json::Value>(&headers, &body, "{}").map(|_| w))
    {
        Ok(w) => w,
        Err(r) => return r.into_response(),
    };
    match state.board.accept(id, &who) {
        Ok(cameras) => Json(json!({ "cameras": cameras })).into_response(),
        Err(why) => {
            state.board.refused("accept", &why);
            refused(StatusCode::CONFLICT, why)
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AskBody {
    camera: String,
    reason: String,
}

async fn ask(
    State(state): State<Arc<IncidentRoutes>>,
    Extension(viewer): Extension<Viewer>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let who = match operator(&viewer) {
        Ok(w) => w,
        Err(r) => return r.into_response(),
    };
    let req: AskBody = match json_body(&headers, &body, r#"{"camera":"stadio","reason":"inseguimento"}"#) {
        Ok(r) => r,
        Err(r) => return r.into_response(),
    };
    match state.board.ask(&req.camera, &req.reason, &who) {
        Ok(id) => (StatusCode::CREATED, Json(json!({ "id": id }))).into_response(),
        Err(why) => {
            state.board.refused("ask", &why);
            refused(StatusCode::BAD_REQUEST, why)
        }
    }
}

async fn ack(
    State(state): State<Arc<IncidentRoutes>>,
    Extension(viewer): Extension<Viewer>,
    Path(id): Path<u64>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let who = match operator(&viewer)
        .and_then(|w| json_body::<serde_json::Value>(&headers, &body, "{}").map(|_| w))
    {
        Ok(w) => w,
        Err(r) => return r.into_response(),
    };
    match state.board.ack(id, &who, &seen(&state, &viewer)) {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(why) => {
            state.board.refused("acknowledge", &why);
            refused(StatusCode::CONFLICT, why)
        }
    }
}

async fn thumbnail(
    State(state): State<Arc<IncidentRoutes>>,
    Extension(viewer): Extension<Viewer>,
    Path(id): Path<u64>,
) -> Response {
    match state.board.thumbnail(id, &seen(&state, &viewer)) {
        Some(jpeg) => {
            ([(header::CONTENT_TYPE, "image/jpeg"), (header::CACHE_CONTROL, "private, max-age=3600")], jpeg)
                .into_response()
        }
        None => refused(StatusCode::NOT_FOUND, format!("no thumbnail for alarm #{id}")),
    }
}
