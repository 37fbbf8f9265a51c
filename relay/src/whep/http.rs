//! The WHEP HTTP handlers: `POST /whep/{camera}` (admit → first frame →
//! register), `GET`/`DELETE /whep/session/{id}`, and the one-line refusals
//! every route of the web surface answers with.

use super::clock::{CaptureClock, CaptureRef};
use super::codec_choice::{self, Offered, Plan, Unplayable, STREAM_HEADER};
use super::offer::offered_codecs;
use super::peer::{AnswerError, Offer, Peer};
use super::session::Session;
use super::{SessionEntry, WhepState};
use crate::audit::{RelayAudit, Viewing};
use crate::auth::{ScopeRefusal, Viewer};
use crate::upstream::{SubscribeFailure, TrackState};
use axum::body::Bytes;
use axum::extract::{Extension, Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use ponte_proto::egress::Arrival;
use ponte_proto::hub::{HubItem, TrackReader};
use ponte_proto::media::Quality;
use ponte_proto::wire::SubscribeErrorCode;
use serde::{Deserialize, Serialize};
use std::net::IpAddr;
use std::sync::Arc;
use tokio::sync::{oneshot, OwnedSemaphorePermit};
use tokio::time::{timeout, Instant};
use tracing::{info, warn};

/// A refusal: status and one plain-text line naming the camera and the fix.
#[derive(Debug)]
pub(crate) struct Reject {
    status: StatusCode,
    message: String,
}

impl Reject {
    pub(crate) fn new(status: StatusCode, message: impl Into<String>) -> Self {
        // One line, whatever the upstream reason contained.
        let message = message.into().replace(['\r', '\n'], " ");
        Self { status, message }
    }
}

impl IntoResponse for Reject {
    fn into_response(self) -> Response {
        let mut body = self.message;
        body.push('\n');
        (self.status, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], body).into_response()
    }
}

/// The `quality` query parameter (default `main`).
pub(crate) fn quality_param(camera: &str, quality: Option<&str>) -> Result<Quality, Reject> {
    match quality {
        None | Some("") => Ok(Quality::Main),
        Some(q) => q
            .parse::<Quality>()
            .map_err(|e| Reject::new(StatusCode::BAD_REQUEST, format!("camera `{camera}`: {e}"))),
    }
}

/// `GET /whep/session/{id}` while the session lives.
#[derive(Serialize)]
struct SessionBody {
    state: &'static str,
    camera: String,
    quality: &'static str,
    /// Whether frames flow from upstream, or why not.
    track: TrackState,
    /// A playback of the recording from this time (Unix ms); absent: live.
    #[serde(skip_serializing_if = "Option::is_none")]
    playback: Option<u64>,
    /// RTP ↔ capture time, once a frame went out live.
    clock: Option<CaptureRef>,
}

/// `GET /whep/session/{id}`: 200 with [`SessionBody`] (JSON) while the
/// session lives, 410 with the reason once the relay ended it (the page asks
/// when its connection closes), 404 for a session this viewer does not have.
pub(super) async fn session_state(
    State(state): State<Arc<WhepState>>,
    Extension(viewer): Extension<Viewer>,
    Path(id): Path<String>,
) -> Response {
    let live = state
        .lock_sessions()
        .get(&id)
        .filter(|s| s.viewer.same_holder(&viewer))
        .map(|s| (s.camera.clone(), s.quality, s.clock.reference(), s.playback));
    if let Some((camera, quality, clock, playback)) = live {
        let track = match playback {
            Some(_) => TrackState::Live,
            None => state.source.track_state(&camera, quality).unwrap_or(TrackState::Live),
        };
        let body = SessionBody { state: "live", camera, quality: quality.name(), track, playback, clock };
        return ([(header::CACHE_CONTROL, "no-store")], Json(body)).into_response();
    }
    match state.end_of(&id, &viewer) {
        Some(why) => (
            StatusCode::GONE,
            [(header::CACHE_CONTROL, "no-store")],
            format!("the relay ended this stream: {why}\n"),
        )
            .into_response(),
        None => Reject::new(
            StatusCode::NOT_FOUND,
            format!("WHEP session `{id}` does not exist (it ended or never started)"),
        )
        .into_response(),
    }
}

pub(super) async fn end_session(
    State(state): State<Arc<WhepState>>,
    Extension(viewer): Extension<Viewer>,
    Path(id): Path<String>,
) -> Result<StatusCode, Reject> {
    // Dropping the entry drops its stop sender; the session task tears down
    // and logs the end. Another viewer's session is answered as unknown.
    let removed = {
        let mut sessions = state.lock_sessions();
        match sessions.get(&id) {
            Some(s) if s.viewer.same_holder(&viewer) => sessions.remove(&id),
            _ => None,
        }
    };
    match removed {
        Some(_) => Ok(StatusCode::OK),
        None => Err(Reject::new(
            StatusCode::NOT_FOUND,
            format!("WHEP session `{id}` does not exist (it ended or never started): start a new one with POST /whep/{{camera}}"),
        )),
    }
}

/// The `quality` query parameter of the WHEP and live routes.
#[derive(Deserialize)]
pub(crate) struct QualityQuery {
    /// `main` (default) or `sub`.
    pub(crate) quality: Option<String>,
    /// Play the recording back from this time (Unix ms) instead of live
    /// (WHEP only).
    pub(crate) at: Option<String>,
}

/// The `at` parameter: Unix milliseconds.
pub(crate) fn at_param(camera: &str, at: Option<&str>) -> Result<Option<u64>, Reject> {
    let Some(at) = at.map(str::trim).filter(|a| !a.is_empty()) else { return Ok(None) };
    at.parse::<u64>().map(Some).map_err(|_| {
        Reject::new(
            StatusCode::BAD_REQUEST,
            format!("camera `{camera}`: `at` = {at:?}: give the time to play back from in Unix milliseconds"),
        )
    })
}

/// `POST /whep/{camera}`: admit the offer, wait for the camera's first frame,
/// then answer and register the session.
pub(super) async fn offer(
    State(state): State<Arc<WhepState>>,
    Extension(viewer): Extension<Viewer>,
    Path(camera): Path<String>,
    Query(query): Query<QualityQuery>,
    headers: HeaderMap,
    extensions: axum::http::Extensions,
    body: Bytes,
) -> Result<Response, Reject> {
    let client = extensions.get::<axum::extract::ConnectInfo<std::net::SocketAddr>>().map(|c| c.0.ip());
    let at = at_param(&camera, query.at.as_deref())?;
    let admitted = admit(&state, &viewer, &camera, query.quality.as_deref(), client, &headers, &body)?;
    let (reader, first) = first_frame(&state, &viewer, &camera, admitted.quality, at).await?;
    let codec = first.0.config.codec;
    if !admitted.offered.decodes(codec) {
        let has_h264_sub = admitted.plan.reason.is_some();
        let unplayable = Unplayable { quality: admitted.quality, codec, has_h264_sub };
        return Err(unplayable_reject(&state, &headers, &camera, unplayable));
    }
    register(&state, viewer, camera, admitted, reader, first, at).await
}

/// An offer the relay will answer: its quality (the one asked for, or the
/// substream this browser can play instead), the parsed SDP, the codecs
/// the browser decodes and the session slot it holds.
struct Admitted {
    quality: Quality,
    plan: Plan,
    offered: Offered,
    offer: Offer,
    permit: OwnedSemaphorePermit,
}

/// Every check an offer passes before the relay reaches upstream: the
/// client's rate, the viewer's scope, the SDP, and the session limits.
fn admit(
    state: &WhepState,
    viewer: &Viewer,
    camera: &str,
    quality: Option<&str>,
    client: Option<IpAddr>,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Admitted, Reject> {
    // Per client address: a page reloading in a loop, or a script, cannot
    // make the relay build peer connections without end.
    if let (Some(rate), Some(client)) = (&state.offer_rate, client) {
        if !rate.allow(client) {
            state.refusals.hit("whep.offers_per_minute");
            warn!(camera = %camera, %client, limit = rate.per_minute(), "WHEP: offer refused, client over its rate");
            return Err(Reject::new(
                StatusCode::TOO_MANY_REQUESTS,
                format!(
                    "camera `{camera}`: {client} made more than {} WHEP offers in a minute \
                     (`whep.offers_per_minute`); wait a minute and retry",
                    rate.per_minute()
                ),
            ));
        }
    }
    let quality = quality_param(camera, quality)?;
    let site_catalog = state.source.catalog();
    let entry = site_catalog.iter().find(|c| c.id == camera);
    if !viewer.unrestricted() {
        // A narrowed viewer never reaches upstream for a camera outside its
        // set, and cannot tell such a camera from one that does not exist.
        let refusal = match entry {
            Some(entry) => viewer.check(entry, quality).err(),
            None => Some(ScopeRefusal::Hidden(format!(
                "camera `{camera}` is not in the catalog of site `{}`",
                state.source.site()
            ))),
        };
        if let Some(refusal) = refusal {
            return Err(scope_reject(&state.audit, viewer, camera, quality, refusal));
        }
    }
    if !is_sdp(headers) {
        return Err(Reject::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("camera `{camera}`: the offer must be sent with Content-Type: application/sdp"),
        ));
    }
    let sdp = std::str::from_utf8(body).map_err(|_| {
        Reject::new(StatusCode::BAD_REQUEST, format!("camera `{camera}`: the SDP offer is not UTF-8 text"))
    })?;
    let offered = offered_codecs(sdp).map_err(|e| {
        Reject::new(StatusCode::BAD_REQUEST, format!("camera `{camera}`: unusable SDP offer: {e}"))
    })?;
    let offer = Offer::parse(sdp).map_err(|e| {
        Reject::new(
            StatusCode::BAD_REQUEST,
            format!("camera `{camera}`: the SDP offer does not parse ({e}); send the browser's createOffer() output unchanged"),
        )
    })?;

    let permit = state.slots.clone().try_acquire_owned().map_err(|_| {
        state.refusals.hit("whep.max_sessions");
        Reject::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "camera `{camera}`: this relay already serves {} WHEP viewers, its limit (`whep.max_sessions`); close another viewer or try again later",
                state.settings.max_sessions
            ),
        )
    })?;

    let plan = codec_choice::plan(entry, quality, offered)
        .map_err(|u| unplayable_reject(state, headers, camera, u))?;
    if let (Some(entry), false) = (entry, plan.quality == quality || viewer.unrestricted()) {
        // The substream instead: this viewer must be allowed it too.
        if viewer.check(entry, plan.quality).is_err() {
            let u = Unplayable { quality, codec: entry.codec, has_h264_sub: true };
            return Err(unplayable_reject(state, headers, camera, u));
        }
    }
    let quality = plan.quality;
    let on_camera = state.lock_sessions().values().filter(|s| s.camera == camera).count();
    if on_camera >= state.settings.max_per_camera {
        state.refusals.hit("whep.max_per_camera");
        return Err(Reject::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "camera `{camera}` already has {on_camera} WHEP viewers on this relay, its limit \
                 (`whep.max_per_camera`); close another viewer of it or try again later"
            ),
        ));
    }

    if viewer.audit_name().is_some() {
        let of_viewer = state.lock_sessions().values().filter(|s| s.viewer.same_account(viewer)).count();
        if of_viewer >= state.settings.max_per_viewer {
            state.refusals.hit("whep.max_per_viewer");
            let why = format!(
                "viewer `{}` already has {of_viewer} WHEP sessions on this relay, the limit per account \
                 (`whep.max_per_viewer`); close one of them (another tab or screen) and try again",
                viewer.name()
            );
            state.audit.refused(viewer.audit_name(), camera, quality, "over-limit", &why);
            return Err(Reject::new(StatusCode::SERVICE_UNAVAILABLE, why));
        }
    }
    Ok(Admitted { quality, plan, offered, offer, permit })
}

/// Subscribes to the camera and waits for its first frame, whose codec
/// the answer offers. An item already queued comes from the cached GOP: a
/// backlog to catch up on.
async fn first_frame(
    state: &WhepState,
    viewer: &Viewer,
    camera: &str,
    quality: Quality,
    at: Option<u64>,
) -> Result<(TrackReader, (HubItem, Arrival)), Reject> {
    let name = viewer.upstream_name();
    let subscribed = match at {
        None => state.source.subscribe_as(camera, quality, Some(&name)).await,
        Some(from_ms) => {
            let p = ponte_proto::wire::Playback { from_ms, to_ms: None };
            let r = state.source.playback_as(camera, quality, p, Some(&name)).await;
            let (outcome, detail) = match &r {
                Ok(_) => ("allowed", format!("WHEP from {from_ms} (Unix ms)")),
                Err(f) => ("refused", format!("WHEP from {from_ms} (Unix ms): {}", f.reason)),
            };
            state.audit.recall(viewer.audit_name(), camera, quality, "playback", outcome, &detail);
            r
        }
    };
    let mut reader = subscribed.map_err(|f| {
        info!(camera = %camera, quality = quality.name(), viewer = viewer.name(), code = f.code.name(), reason = %f.reason, "WHEP: upstream refused");
        state.audit.refused(viewer.audit_name(), camera, quality, f.code.name(), &f.reason);
        subscribe_reject(camera, quality, &f)
    })?;

    let q = quality.name();
    let first = match reader.try_next() {
        Some(item) => (item, Arrival::Queued),
        None => match timeout(state.settings.first_frame_timeout, reader.next()).await {
            Ok(Some(item)) => (item, Arrival::Live),
            Ok(None) => {
                return Err(Reject::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!(
                        "camera `{camera}` ({q}): the stream ended before the first frame; \
                         check the camera at the master room and retry"
                    ),
                ))
            }
            Err(_) => {
                let secs = state.settings.first_frame_timeout.as_secs_f32();
                return Err(Reject::new(
                    StatusCode::GATEWAY_TIMEOUT,
                    format!(
                        "camera `{camera}` ({q}): no video within {secs} s; \
                         check the camera at the master room and retry"
                    ),
                ));
            }
        },
    };
    Ok((reader, first))
}

/// Answers the offer, registers the session (checking once more that the
/// viewer may still watch) and starts its task.
async fn register(
    state: &Arc<WhepState>,
    viewer: Viewer,
    camera: String,
    admitted: Admitted,
    reader: TrackReader,
    first: (HubItem, Arrival),
    playback: Option<u64>,
) -> Result<Response, Reject> {
    let Admitted { quality, plan, offer, permit, .. } = admitted;
    let codec = first.0.config.codec;
    let (udp_addrs, port) = state.media_addrs(&camera)?;
    let mut peer =
        Peer::answer(&state.settings, udp_addrs, &camera, offer, codec).await.map_err(|e| match e {
            AnswerError::Internal(message) => Reject::new(StatusCode::INTERNAL_SERVER_ERROR, message),
            AnswerError::Refused(message) => Reject::new(StatusCode::BAD_REQUEST, message),
        })?;
    peer.port = port;
    let id = session_id();
    let (stop_tx, stop_rx) = oneshot::channel();
    let started = Instant::now();
    let clock = Arc::new(CaptureClock::default());
    state.lock_sessions().insert(
        id.clone(),
        SessionEntry {
            viewer: viewer.clone(),
            camera: camera.clone(),
            quality,
            started,
            stop: stop_tx,
            clock: clock.clone(),
            playback,
        },
    );
    // Accounts may have been reloaded, or this browser logged out, while
    // the answer was being built: the access watcher may have looked at the
    // sessions before this one was in, so look at it once more.
    if let Err(why) = state.auth.may_still_watch(&viewer, &state.source.catalog(), &camera, quality) {
        state.lock_sessions().remove(&id);
        info!(camera = %camera, viewer = viewer.name(), %why, "WHEP: access revoked while answering");
        state.audit.refused(viewer.audit_name(), &camera, quality, "forbidden", &why);
        return Err(Reject::new(StatusCode::FORBIDDEN, format!("camera `{camera}`: access revoked: {why}")));
    }
    let stream = plan.header(codec);
    info!(session = %id, camera = %camera, quality = quality.name(), viewer = viewer.name(), %stream, "WHEP session answered");
    state.audit.view_start(
        Viewing {
            viewer: viewer.audit_name(),
            camera: &camera,
            quality,
            session: &id,
            token: viewer.is_token(),
        },
        "WHEP",
    );
    let answer = peer.answer_sdp.clone();
    let session = Session {
        id: id.clone(),
        viewer: viewer.audit_name().map(str::to_owned),
        token: viewer.is_token(),
        quality,
        started,
        camera,
        peer,
        reader,
        first: Some(first),
        stop: stop_rx,
        clock,
        _permit: permit,
    };
    tokio::spawn(session.run(state.clone()));

    let location = HeaderValue::from_str(&format!("/whep/session/{id}"))
        .map_err(|_| Reject::new(StatusCode::INTERNAL_SERVER_ERROR, "session id is not a header value"))?;
    let stream = HeaderValue::from_str(&stream).map_err(|_| {
        Reject::new(StatusCode::INTERNAL_SERVER_ERROR, "stream description is not a header value")
    })?;
    Ok((
        StatusCode::CREATED,
        [
            (header::CONTENT_TYPE, HeaderValue::from_static("application/sdp")),
            (header::LOCATION, location),
            (header::HeaderName::from_static(STREAM_HEADER), stream),
        ],
        answer,
    )
        .into_response())
}

fn is_sdp(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|mime| mime.trim().eq_ignore_ascii_case("application/sdp"))
}

/// 415 for a stream this browser cannot decode, naming the relay's RTSP
/// URL of it (host as the browser reached the relay).
fn unplayable_reject(state: &WhepState, headers: &HeaderMap, camera: &str, u: Unplayable) -> Reject {
    let rtsp = state.settings.rtsp_port.map(|port| {
        let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
        codec_choice::rtsp_base(host, port).unwrap_or_else(|| format!("rtsp://<this relay>:{port}"))
    });
    Reject::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, codec_choice::unplayable_text(camera, u, rtsp.as_deref()))
}

/// A camera or quality outside the viewer's set: audited with the real
/// reason; answered like an unknown camera (404) or a refused quality (403).
fn scope_reject(
    audit: &RelayAudit,
    viewer: &Viewer,
    camera: &str,
    quality: Quality,
    refusal: ScopeRefusal,
) -> Reject {
    let (outcome, reason, reject) = match refusal {
        ScopeRefusal::Hidden(reason) => {
            let told = format!(
                "camera `{camera}` is not in the catalog of viewer `{}`; pick a camera listed at /api/catalog",
                viewer.name()
            );
            ("unknown", reason, Reject::new(StatusCode::NOT_FOUND, told))
        }
        ScopeRefusal::Quality(reason) => {
            let told = format!("{reason}; play a quality listed at /api/catalog");
            ("forbidden", reason, Reject::new(StatusCode::FORBIDDEN, told))
        }
    };
    info!(camera, quality = quality.name(), viewer = viewer.name(), %reason, "WHEP: refused by the viewer's account");
    audit.refused(viewer.audit_name(), camera, quality, outcome, &reason);
    reject
}

fn subscribe_reject(camera: &str, quality: Quality, failure: &SubscribeFailure) -> Reject {
    let (status, problem, fix) = match failure.code {
        SubscribeErrorCode::Unknown => {
            (StatusCode::NOT_FOUND, "is not in this site's catalog", "pick a camera listed at /api/catalog")
        }
        SubscribeErrorCode::Forbidden => {
            (StatusCode::FORBIDDEN, "is not allowed for this site", "ask the master room to grant it")
        }
        SubscribeErrorCode::Offline => {
            (StatusCode::SERVICE_UNAVAILABLE, "is offline", "check the camera at the master room and retry")
        }
        SubscribeErrorCode::OverBudget => (
            StatusCode::SERVICE_UNAVAILABLE,
            "does not fit in this site's link budget now",
            "close another stream or try the substream",
        ),
        SubscribeErrorCode::NotRecorded => (
            StatusCode::NOT_FOUND,
            "has no recording at that time",
            "pick a time inside the recorded ranges (/api/recordings/{camera})",
        ),
    };
    // Upstream reasons say what went wrong; the fix is ours to add.
    let reason = failure.reason.trim();
    let problem = if reason.is_empty() {
        format!("camera `{camera}` ({}) {problem}", quality.name())
    } else if reason.contains(camera) {
        reason.to_owned()
    } else {
        format!("camera `{camera}` ({}): {reason}", quality.name())
    };
    Reject::new(status, format!("{problem}; {fix}"))
}

fn session_id() -> String {
    format!("{:032x}", rand::random::<u128>())
}
