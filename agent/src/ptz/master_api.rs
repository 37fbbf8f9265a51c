//! The master room's PTZ API, the control routes of the management port:
//! the same commands as the sites', at top priority, audited under site
//! `master` with the name of the operator who authenticated (the
//! [`crate::operators::require_operator`] layer puts it in the request).

use super::{PtzService, Requester};
use crate::operators::Operator;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Json, Router};
use ponte_proto::ptz::{PtzCommand, PtzErrorCode, PtzReply};

/// `GET /api/ptz`, `GET /api/ptz/{camera}`, `POST /api/ptz/{camera}`;
/// put the operator layer in front.
pub fn routes(service: PtzService) -> Router {
    Router::new()
        .route("/api/ptz", get(list))
        .route("/api/ptz/{camera}", get(show).post(command))
        .with_state(service)
}

fn answer(reply: PtzReply) -> Response {
    let status = StatusCode::from_u16(reply.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (status, Json(reply)).into_response()
}

async fn list(State(service): State<PtzService>) -> Response {
    Json(service.overview()).into_response()
}

async fn show(
    State(service): State<PtzService>,
    Extension(Operator(operator)): Extension<Operator>,
    Path(camera): Path<String>,
) -> Response {
    let who = Requester::Master { operator };
    match service.submit(&who, &camera, &PtzCommand::Presets).reply().await {
        PtzReply::Done { holder, presets, .. } => {
            Json(serde_json::json!({ "camera": camera, "holder": holder, "presets": presets }))
                .into_response()
        }
        PtzReply::Refused {
            code: code @ (PtzErrorCode::Unknown | PtzErrorCode::Unsupported),
            reason,
            holder,
        } => answer(PtzReply::Refused { code, reason, holder }),
        // The camera did not list its presets: still show who holds it.
        PtzReply::Refused { reason, holder, .. } => Json(serde_json::json!({
            "camera": camera, "holder": holder, "presets": [], "presets_error": reason
        }))
        .into_response(),
    }
}

fn is_json(headers: &HeaderMap) -> bool {
    ponte_proto::ptz::is_json_content_type(headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()))
}

async fn command(
    State(service): State<PtzService>,
    Extension(Operator(operator)): Extension<Operator>,
    Path(camera): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if !is_json(&headers) {
        let reply =
            PtzReply::refused(PtzErrorCode::Invalid, "send the command with Content-Type: application/json");
        return (StatusCode::UNSUPPORTED_MEDIA_TYPE, Json(reply)).into_response();
    }
    let command: PtzCommand = match serde_json::from_slice(&body) {
        Ok(c) => c,
        Err(e) => {
            return answer(PtzReply::refused(
                PtzErrorCode::Invalid,
                format!(
                    "the body is not a PTZ command ({e}); expected e.g. {{\"op\":\"move\",\"pan\":500}}, \
                     {{\"op\":\"stop\"}}, {{\"op\":\"goto_preset\",\"preset\":\"1\"}}"
                ),
            ))
        }
    };
    answer(service.submit(&Requester::Master { operator }, &camera, &command).reply().await)
}
