//! The master-room console on the management port (issue 23): the page
//! (`GET /master`, its files under `/master/`) and its API, behind the
//! operator credential ([`crate::operators::require_operator`]): the
//! cameras, what each site sees and why, shares, asks, alarms. The PTZ
//! override is the existing `/api/ptz` (see [`crate::ptz::master_api`]).
//!
//! - `GET /api/incidents`: the whole view (JSON)
//! - `POST /api/incidents/shares` `{site, cameras, minutes, note}` → `{id}`
//!   (`seconds` instead of `minutes` for scripts)
//! - `POST /api/incidents/shares/{id}/withdraw`
//! - `POST /api/incidents/asks/{id}/approve` `{minutes, camera?}`
//! - `POST /api/incidents/asks/{id}/refuse` `{reason}`
//! - `POST /api/incidents/alarms/{id}/ack`
//! - `GET /api/incidents/alarms/{id}/thumbnail` (JPEG)
//!
//! The POST routes take only `Content-Type: application/json`, which a
//! cross-site form cannot send without a CORS preflight this port never
//! grants.

use super::Incidents;
use crate::operators::Operator;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use ponte_proto::json_api::{json_body, refused};
use ponte_proto::ptz::MASTER_SITE;
use serde::Deserialize;
use serde_json::{json, Value};

/// The page and its files: name, content type, bytes. The look and the
/// languages are the partner console's own files.
const ASSETS: &[(&str, &str, &str)] = &[
    ("master.js", "text/javascript; charset=utf-8", include_str!("../../assets/master/master.js")),
    ("master.css", "text/css; charset=utf-8", include_str!("../../assets/master/master.css")),
    ("console.css", "text/css; charset=utf-8", include_str!("../../../relay/assets/console/console.css")),
    ("i18n.js", "text/javascript; charset=utf-8", include_str!("../../../relay/assets/console/i18n.js")),
    (
        "incidents.js",
        "text/javascript; charset=utf-8",
        include_str!("../../../relay/assets/console/incidents.js"),
    ),
];
const PAGE: &str = include_str!("../../assets/master/index.html");

/// The page's `Content-Security-Policy`: its own scripts and styles, its
/// own API, thumbnails from itself; never framed.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; \
    img-src 'self' data: blob:; form-action 'self'; base-uri 'none'; frame-ancestors 'none'";

/// Largest request body.
const MAX_BODY: usize = 16 * 1024;

/// The API routes (put the operator layer in front).
pub fn routes(incidents: Incidents) -> Router {
    Router::new()
        .route("/api/incidents", get(view))
        .route("/api/incidents/shares", post(share))
        .route("/api/incidents/shares/{id}/withdraw", post(withdraw))
        .route("/api/incidents/asks/{id}/approve", post(approve))
        .route("/api/incidents/asks/{id}/refuse", post(refuse))
        .route("/api/incidents/alarms/{id}/ack", post(ack))
        .route("/api/incidents/alarms/{id}/thumbnail", get(thumbnail))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
        .with_state(incidents)
}

/// The page routes (no credential: the page asks for one).
pub fn page_routes() -> Router {
    Router::new().route("/master", get(page)).route("/master/{file}", get(asset))
}

fn headers(mime: &'static str) -> [(header::HeaderName, &'static str); 6] {
    [
        (header::CONTENT_TYPE, mime),
        (header::CONTENT_SECURITY_POLICY, CSP),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::CACHE_CONTROL, "no-cache"),
    ]
}

async fn page() -> Response {
    (headers("text/html; charset=utf-8"), PAGE).into_response()
}

async fn asset(Path(file): Path<String>) -> Response {
    match ASSETS.iter().find(|(name, _, _)| *name == file) {
        Some((_, mime, body)) => (headers(mime), *body).into_response(),
        None => (StatusCode::NOT_FOUND, "no such file\n").into_response(),
    }
}

fn done(result: Result<(), String>) -> Response {
    match result {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(why) => refused(StatusCode::CONFLICT, why),
    }
}

async fn view(
    State(incidents): State<Incidents>,
    Extension(Operator(operator)): Extension<Operator>,
) -> Response {
    let access = incidents.access();
    let catalog = incidents.cameras().catalog();
    let states: std::collections::HashMap<String, &'static str> = incidents
        .cameras()
        .cameras()
        .into_iter()
        .filter(|c| c.quality == ponte_proto::media::Quality::Main)
        .map(|c| (c.id, c.state))
        .collect();
    let cameras: Vec<Value> = catalog
        .iter()
        .map(|c| {
            json!({
                "id": c.id, "name": c.name, "zone": c.zone, "kind": c.kind,
                "state": states.get(&c.id).copied().unwrap_or("idle"),
            })
        })
        .collect();
    let mut site_ids = incidents.sites();
    site_ids.extend(access.site_ids());
    site_ids.sort();
    site_ids.dedup();
    let policy_only = access.with_grants(Default::default());
    let sites: Vec<Value> = site_ids
        .iter()
        .map(|site| {
            let by_policy: std::collections::HashSet<String> =
                policy_only.catalog(site, &catalog).into_iter().map(|c| c.id).collect();
            let seen: Vec<Value> = access
                .catalog(site, &catalog)
                .iter()
                .map(|c| match access.grant(site, &c.id) {
                    Some(g) if !by_policy.contains(&c.id) => json!({
                        "id": c.id, "by": g.origin.name(), "until_ms": g.until_ms, "granted_by": g.by, "grant": g.id,
                    }),
                    _ => json!({ "id": c.id, "by": "policy", "until_ms": null, "granted_by": null }),
                })
                .collect();
            json!({ "id": site, "cameras": seen })
        })
        .collect();
    let doc = incidents.with_book(|book| {
        let shares: Vec<Value> =
            book.shares().map(|s| serde_json::to_value(s).unwrap_or(Value::Null)).collect();
        let asks: Vec<Value> = book
            .asks()
            .map(|a| {
                let mut v = serde_json::to_value(a).unwrap_or(Value::Null);
                let expired = a.answer.as_ref().is_some_and(|x| x.by == MASTER_SITE && !x.approved);
                let state = match &a.answer {
                    None => "pending",
                    Some(_) if expired => "expired",
                    Some(x) if x.approved => "approved",
                    Some(_) => "refused",
                };
                if let Some(o) = v.as_object_mut() {
                    o.insert("state".into(), json!(state));
                }
                v
            })
            .collect();
        let alarms: Vec<Value> =
            book.alarms().map(|a| serde_json::to_value(a).unwrap_or(Value::Null)).collect();
        let suppressed: Vec<Value> = book
            .suppressed_now()
            .into_iter()
            .map(|(camera, kind, count)| json!({ "camera": camera, "kind": kind, "count": count }))
            .collect();
        json!({
            "shares": shares, "asks": asks, "alarms": alarms,
            "suppressed": suppressed, "suppressed_total": book.suppressed_total(),
        })
    });
    let mut doc = doc;
    if let Some(o) = doc.as_object_mut() {
        o.insert("now_ms".into(), json!(incidents.now_ms()));
        o.insert("operator".into(), json!(operator));
        o.insert("cameras".into(), json!(cameras));
        o.insert("sites".into(), json!(sites));
    }
    Json(doc).into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ShareBody {
    site: String,
    cameras: Vec<String>,
    #[serde(default)]
    minutes: u64,
    /// Instead of `minutes`, for scripts (and tests): at least 5.
    #[serde(default)]
    seconds: Option<u64>,
    #[serde(default)]
    note: String,
}

async fn share(
    State(incidents): State<Incidents>,
    Extension(Operator(operator)): Extension<Operator>,
    h: HeaderMap,
    b: Bytes,
) -> Response {
    let req: ShareBody =
        match json_body(&h, &b, r#"{"site":"questura","cameras":["piazza"],"minutes":30,"note":"rissa"}"#) {
            Ok(r) => r,
            Err(resp) => return resp.into_response(),
        };
    let ms = match req.seconds {
        Some(s) if s >= 5 => s * 1000,
        Some(s) => {
            return refused(StatusCode::BAD_REQUEST, format!("a share lasts at least 5 s (asked: {s})"))
        }
        None => req.minutes.saturating_mul(60_000),
    };
    match incidents.share(&operator, &req.site, req.cameras, ms, &req.note) {
        Ok(id) => (StatusCode::CREATED, Json(json!({ "id": id }))).into_response(),
        Err(why) => refused(StatusCode::BAD_REQUEST, why),
    }
}

async fn withdraw(
    State(incidents): State<Incidents>,
    Extension(Operator(operator)): Extension<Operator>,
    Path(id): Path<u64>,
    h: HeaderMap,
    b: Bytes,
) -> Response {
    if let Err(resp) = json_body::<Value>(&h, &b, "{}") {
        return resp.into_response();
    }
    done(incidents.withdraw(&operator, id))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ApproveBody {
    minutes: u64,
    #[serde(default)]
    camera: Option<String>,
}

async fn approve(
    State(incidents): State<Incidents>,
    Extension(Operator(operator)): Extension<Operator>,
    Path(id): Path<u64>,
    h: HeaderMap,
    b: Bytes,
) -> Response {
    let req: ApproveBody = match json_body(&h, &b, r#"{"minutes":30}"#) {
        Ok(r) => r,
        Err(resp) => return resp.into_response(),
    };
    done(incidents.approve(&operator, id, req.camera.as_deref(), req.minutes))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RefuseBody {
    reason: String,
}

async fn refuse(
    State(incidents): State<Incidents>,
    Extension(Operator(operator)): Extension<Operator>,
    Path(id): Path<u64>,
    h: HeaderMap,
    b: Bytes,
) -> Response {
    let req: RefuseBody = match json_body(&h, &b, r#"{"reason":"camera in use by the judiciary police"}"#) {
        Ok(r) => r,
        Err(resp) => return resp.into_response(),
    };
    done(incidents.refuse(&operator, id, &req.reason))
}

async fn ack(
    State(incidents): State<Incidents>,
    Extension(Operator(operator)): Extension<Operator>,
    Path(id): Path<u64>,
    h: HeaderMap,
    b: Bytes,
) -> Response {
    if let Err(resp) = json_body::<Value>(&h, &b, "{}") {
        return resp.into_response();
    }
    done(incidents.ack(MASTER_SITE, &operator, id))
}

async fn thumbnail(State(incidents): State<Incidents>, Path(id): Path<u64>) -> Response {
    let jpeg = incidents.with_book(|book| book.alarm(id).and_then(|a| a.thumbnail.clone()));
    let Some(jpeg) =
        jpeg.and_then(|b64| base64::Engine::decode(&base64::engine::general_purpose::STANDARD, b64).ok())
    else {
        return refused(StatusCode::NOT_FOUND, format!("no thumbnail for alarm #{id}"));
    };
    ([(header::CONTENT_TYPE, "image/jpeg"), (header::CACHE_CONTROL, "private, max-age=3600")], jpeg)
        .into_response()
}
