//! WHEP egress (draft-ietf-wish-whep): a browser POSTs an SDP offer for a
//! camera and gets an answer with one send-only H.264 track fed from the hub,
//! passed through without transcoding. The same router serves the catalog as
//! JSON and the viewer page.
//!
//! Routes:
//! - `POST /whep/{camera}[?quality=main|sub]`, body `application/sdp` →
//!   `201 Created`, SDP answer, `Location: /whep/session/{id}`
//! - `DELETE /whep/session/{id}` → `200 OK`, session torn down
//! - `GET /api/catalog` → `{ "site": ..., "viewer": ..., "cameras": [...] }`
//! - `GET /` → the viewer page (with its login form); `POST /login`, `POST /logout`
//!
//! On a relay with accounts every route but the page and login needs a
//! viewer (session cookie or bearer token, see [`crate::auth`]): 401 without.
//! The catalog is the site's narrowed to the viewer's cameras; a camera
//! outside them is answered 404, exactly as one the site does not have, so a
//! narrowed account learns nothing about the rest of the site (the audit log
//! keeps the real reason). A quality above the viewer's cap is 403. A
//! session can be deleted only by its own viewer (404 for anyone else).
//!
//! A session holds its hub reader only as long as its peer connection lives:
//! it ends on DELETE, on a failed/closed connection, on a disconnection that
//! does not recover, or when the track ends; the reader is dropped then, so
//! upstream can unsubscribe.

use crate::audit::{RelayAudit, Viewing};
use crate::auth::{self, Auth, ScopeRefusal, Viewer};
use crate::media_ports::{PortLease, PortPool, PortRange};
use crate::page;
use crate::upstream::{SubscribeFailure, TrackState, Upstreams};
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Extension, Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use futures_util::future::BoxFuture;
use ponte_proto::egress::{Arrival, EgressGate, Verdict};
use ponte_proto::hub::{HubItem, TrackReader};
use ponte_proto::media::{Codec, Quality};
use ponte_proto::wire::{CatalogEntry, SubscribeErrorCode};
use rtc::peer_connection::configuration::media_engine::MIME_TYPE_H264;
use rtc::rtp;
use rtc::rtp::codec::h264::H264Payloader;
use rtc::rtp::packetizer::Payloader;
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodec, RTCRtpCodecParameters, RTCRtpCodingParameters, RTCRtpEncodingParameters, RtpCodecKind,
};
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::{oneshot, watch, OwnedSemaphorePermit, Semaphore};
use tokio::time::{sleep_until, timeout, Instant};
use tracing::{info, warn};
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::media_stream::track_local::TrackLocal;
use webrtc::media_stream::MediaStreamTrack;
use webrtc::peer_connection::{
    register_default_interceptors, MediaEngine, PeerConnection, PeerConnectionBuilder,
    PeerConnectionEventHandler, RTCConfigurationBuilder, RTCIceGatheringState, RTCPeerConnectionState,
    RTCSessionDescription, Registry,
};
use webrtc::rtp_transceiver::RtpSender;

/// Largest SDP offer accepted; browsers send a few KiB.
pub const MAX_OFFER_BYTES: usize = 64 * 1024;
/// The H.264 format offered to browsers: Constrained Baseline 3.1, the
/// profile openh264 produces and every WebRTC browser decodes. Browsers play
/// higher profiles received under it too; the level is not binding.
const H264_FMTP: &str = "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f";
/// Payload type proposed for H.264; the offer's own number wins in the answer.
const H264_PAYLOAD_TYPE: u8 = 102;
/// RTP packet size (header included), as webrtc-rs' own sample tracks use.
const RTP_MTU: usize = 1200;
const RTP_HEADER_BYTES: usize = 12;
/// ICE connectivity-check pace. webrtc-rs' default (200 ms) delays the
/// relay's side of a new session by up to that much before DTLS can start
/// (measured: DTLS connected 150 ms after ICE, 15 ms at this pace).
const ICE_CHECK_INTERVAL: Duration = Duration::from_millis(20);
/// How long a session's end waits for its peer connection to close.
const PEER_CLOSE_TIMEOUT: Duration = Duration::from_secs(2);
/// Checks per candidate pair: with the pace above, the same 1.4 s as the
/// default before a pair is given up.
const ICE_MAX_BINDING_REQUESTS: u16 = 70;

/// Tunables of the WHEP endpoint.
#[derive(Debug, Clone)]
pub struct WhepSettings {
    /// Local UDP addresses for ICE host candidates. `0.0.0.0:0` means every
    /// non-loopback interface with an ephemeral port per session; give a
    /// concrete address (e.g. `127.0.0.1:0`) to pin one interface.
    pub udp_addrs: Vec<String>,
    /// UDP ports for media, one leased per session (`whep.udp_ports`);
    /// `None`: the ports of `udp_addrs` as given (0: ephemeral).
    pub udp_ports: Option<PortRange>,
    /// Most concurrent sessions; more are refused with 503 (`whep.max_sessions`).
    pub max_sessions: usize,
    /// Most concurrent sessions on one camera (`whep.max_per_camera`).
    pub max_per_camera: usize,
    /// Most concurrent sessions of one account or token (`whep.max_per_viewer`).
    pub max_per_viewer: usize,
    /// Offers one client address may make per minute; 0: no limit
    /// (`whep.offers_per_minute`). More are refused with 429.
    pub offers_per_minute: u32,
    /// How long a POST waits for the camera's first frame.
    pub first_frame_timeout: Duration,
    /// How long a POST waits for ICE gathering before answering anyway.
    pub gather_timeout: Duration,
    /// How long a new session may take to connect before it is torn down.
    pub connect_timeout: Duration,
    /// How long a disconnected session may take to come back.
    pub disconnect_grace: Duration,
}

impl Default for WhepSettings {
    fn default() -> Self {
        Self {
            udp_addrs: vec!["0.0.0.0:0".to_owned()],
            udp_ports: None,
            max_sessions: 64,
            max_per_camera: 16,
            max_per_viewer: 8,
            offers_per_minute: 30,
            first_frame_timeout: Duration::from_secs(10),
            gather_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(20),
            disconnect_grace: Duration::from_secs(5),
        }
    }
}

/// What the WHEP endpoint needs from the relay's upstream side; implemented
/// by [`Upstreams`], and by fakes in tests.
pub trait CameraSource: Send + Sync + 'static {
    /// Name of this relay's site.
    fn site(&self) -> String;
    /// Cameras this site may see.
    fn catalog(&self) -> Vec<CatalogEntry>;
    /// Subscribes to a camera at a quality.
    fn subscribe<'a>(
        &'a self,
        camera: &'a str,
        quality: Quality,
    ) -> BoxFuture<'a, Result<TrackReader, SubscribeFailure>>;
    /// Whether a watched camera's picture is live; `None` when unwatched.
    fn track_state(&self, _camera: &str, _quality: Quality) -> Option<TrackState> {
        None
    }
}

impl CameraSource for Upstreams {
    fn site(&self) -> String {
        Upstreams::site(self).to_owned()
    }

    fn catalog(&self) -> Vec<CatalogEntry> {
        Upstreams::catalog(self)
    }

    fn subscribe<'a>(
        &'a self,
        camera: &'a str,
        quality: Quality,
    ) -> BoxFuture<'a, Result<TrackReader, SubscribeFailure>> {
        Box::pin(Upstreams::subscribe(self, camera, quality))
    }

    fn track_state(&self, camera: &str, quality: Quality) -> Option<TrackState> {
        Upstreams::track_state(self, camera, quality)
    }
}

/// A live WHEP session, for status output.
#[derive(Debug, Clone, Serialize)]
pub struct SessionInfo {
    /// The first 8 characters of the session id (the last segment of its `Location`).
    pub id: String,
    /// Who watches (`null` on a relay without accounts).
    pub viewer: Option<String>,
    /// Camera watched.
    pub camera: String,
    /// Quality watched.
    pub quality: Quality,
    /// Time since the offer was answered.
    pub age_secs: u64,
}

struct SessionEntry {
    /// The viewer that opened it: only it may DELETE it.
    viewer: Viewer,
    camera: String,
    quality: Quality,
    started: Instant,
    /// Dropping it (DELETE) tells the session task to end; sending ends it
    /// for that reason.
    stop: oneshot::Sender<End>,
}

impl auth::LiveStream for SessionEntry {
    fn watching(&mut self) -> (&mut Viewer, &str, Quality) {
        (&mut self.viewer, &self.camera, self.quality)
    }
}

/// Shared state of the WHEP endpoint.
pub struct WhepState {
    source: Arc<dyn CameraSource>,
    settings: WhepSettings,
    auth: Arc<Auth>,
    audit: Arc<RelayAudit>,
    slots: Arc<Semaphore>,
    offer_rate: Option<crate::limits::OfferRate>,
    refusals: Arc<crate::limits::Refusals>,
    sessions: Mutex<HashMap<String, SessionEntry>>,
    /// Sessions the relay ended lately, with their viewer and why: the page
    /// asks (`GET` on the session URL) when its connection closes, so the
    /// operator reads "access revoked: ..." rather than a bare "closed".
    ended: Mutex<VecDeque<(String, Viewer, String)>>,
    /// Media ports to lease, when `settings.udp_ports` is set.
    ports: Option<Arc<PortPool>>,
}

/// How many ended sessions [`WhepState`] remembers the reason of.
const ENDED_KEPT: usize = 256;

impl WhepState {
    /// WHEP over the relay's upstreams.
    pub fn new(upstreams: Arc<Upstreams>, settings: WhepSettings) -> Self {
        Self::with_source(upstreams, settings)
    }

    /// WHEP over any camera source; open (no accounts) and not audited
    /// until [`WhepState::with_access`].
    pub fn with_source(source: Arc<dyn CameraSource>, settings: WhepSettings) -> Self {
        let audit = Arc::new(RelayAudit::disabled(&source.site()));
        Self {
            auth: Arc::new(Auth::open(audit.clone())),
            audit,
            source,
            slots: Arc::new(Semaphore::new(settings.max_sessions)),
            offer_rate: crate::limits::OfferRate::new(settings.offers_per_minute),
            refusals: Arc::default(),
            ports: settings.udp_ports.map(PortPool::new),
            settings,
            sessions: Mutex::new(HashMap::new()),
            ended: Mutex::new(VecDeque::new()),
        }
    }

    /// Requires viewers from `auth` and writes views to `audit`.
    pub fn with_access(self, auth: Arc<Auth>, audit: Arc<RelayAudit>) -> Self {
        Self { auth, audit, ..self }
    }

    /// Ends every session whose viewer may no longer watch its camera:
    /// account or token removed or narrowed by a reload, browser logged out.
    /// Returns how many ended.
    pub fn recheck_access(&self) -> usize {
        let catalog = self.source.catalog();
        let revoked = self.auth.sweep(&catalog, &mut self.lock_sessions());
        let n = revoked.len();
        for (id, s, why) in revoked {
            info!(session = %id, camera = %s.camera, viewer = s.viewer.name(), %why, "WHEP: access revoked");
            let end = End::Revoked(why);
            self.remember_end(&id, s.viewer.clone(), &end);
            let _ = s.stop.send(end);
        }
        n
    }

    /// Keeps why a session ended for its viewer's page to ask.
    fn remember_end(&self, id: &str, viewer: Viewer, end: &End) {
        let mut ended = self.ended.lock().unwrap_or_else(|e| e.into_inner());
        if ended.len() >= ENDED_KEPT {
            ended.pop_front();
        }
        ended.push_back((id.to_owned(), viewer, end.to_string()));
    }

    /// Why the relay ended session `id`, if it did lately and `viewer` opened it.
    fn end_of(&self, id: &str, viewer: &Viewer) -> Option<String> {
        let ended = self.ended.lock().unwrap_or_else(|e| e.into_inner());
        ended.iter().rev().find(|(i, v, _)| i == id && v.same_holder(viewer)).map(|(_, _, why)| why.clone())
    }

    /// Watches `auth` for reloads and logouts and ends what they revoke.
    pub fn spawn_access_watch(self: &Arc<Self>) {
        let mut changes = self.auth.changes();
        let me = Arc::downgrade(self);
        tokio::spawn(async move {
            while changes.changed().await.is_ok() {
                let Some(state) = me.upgrade() else { return };
                state.recheck_access();
            }
        });
    }

    /// The addresses a new session's media binds: `settings.udp_addrs`,
    /// on a port leased from `whep.udp_ports` when that is set.
    fn media_addrs(&self, camera: &str) -> Result<(Vec<String>, Option<PortLease>), Reject> {
        let Some(pool) = &self.ports else { return Ok((self.settings.udp_addrs.clone(), None)) };
        let addrs: Vec<SocketAddr> = self.settings.udp_addrs.iter().filter_map(|a| a.parse().ok()).collect();
        let ip = addrs.first().map_or(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED), SocketAddr::ip);
        let Some(lease) = pool.lease(ip) else {
            self.refusals.hit("whep.udp_ports");
            warn!(camera, ports = %pool.range(), "WHEP: no free UDP port for media");
            return Err(Reject::new(
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "camera `{camera}`: every UDP port of `whep.udp_ports` ({}) is in use; close another \
                     viewer, or widen the range",
                    pool.range()
                ),
            ));
        };
        let addrs = addrs.iter().map(|a| SocketAddr::new(a.ip(), lease.port()).to_string()).collect();
        Ok((addrs, Some(lease)))
    }

    /// Requests refused by a limit, by limit.
    pub fn refusals(&self) -> std::collections::BTreeMap<String, u64> {
        self.refusals.snapshot()
    }

    /// The live sessions.
    pub fn sessions(&self) -> Vec<SessionInfo> {
        let mut out: Vec<SessionInfo> = self
            .lock_sessions()
            .iter()
            .map(|(id, s)| SessionInfo {
                // Enough to tell sessions apart: the whole id is the
                // capability to end it, and stays with its viewer.
                id: id.chars().take(8).collect(),
                viewer: s.viewer.audit_name().map(str::to_owned),
                camera: s.camera.clone(),
                quality: s.quality,
                age_secs: s.started.elapsed().as_secs(),
            })
            .collect();
        out.sort_by(|a, b| a.camera.cmp(&b.camera).then(a.id.cmp(&b.id)));
        out
    }

    fn lock_sessions(&self) -> MutexGuard<'_, HashMap<String, SessionEntry>> {
        // The map stays consistent even if a holder panicked.
        self.sessions.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The WHEP, catalog, viewer-page and login routes.
pub fn router(state: Arc<WhepState>) -> Router {
    let auth = state.auth.clone();
    let need_viewer = axum::middleware::from_fn_with_state(auth.clone(), auth::require_viewer);
    Router::new()
        .route("/api/catalog", get(catalog))
        .route("/api/live/{camera}", get(live))
        .route("/whep/{camera}", post(offer))
        .route("/whep/session/{id}", delete(end_session).get(session_state))
        .route_layer(need_viewer)
        .route("/", get(viewer_page))
        .layer(DefaultBodyLimit::max(MAX_OFFER_BYTES))
        .with_state(state)
        .merge(auth::router(auth))
}

/// A refusal: status and one plain-text line naming the camera and the fix.
#[derive(Debug)]
struct Reject {
    status: StatusCode,
    message: String,
}

impl Reject {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
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

async fn viewer_page(State(state): State<Arc<WhepState>>) -> Html<String> {
    Html(page::render(&state.source.site()))
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
        site: state.source.site(),
        viewer: viewer.audit_name().map(str::to_owned),
        cameras: viewer.narrow(state.source.catalog()),
    };
    // Per viewer: no shared cache may keep it.
    ([(header::CACHE_CONTROL, "no-store")], Json(body)).into_response()
}

/// The `quality` query parameter (default `main`).
fn quality_param(camera: &str, quality: Option<&str>) -> Result<Quality, Reject> {
    match quality {
        None | Some("") => Ok(Quality::Main),
        Some(q) => q
            .parse::<Quality>()
            .map_err(|e| Reject::new(StatusCode::BAD_REQUEST, format!("camera `{camera}`: {e}"))),
    }
}

/// `GET /api/live/{camera}[?quality=sub]`: whether the picture of a camera
/// the viewer watches is live here. The viewer page asks when frames stop,
/// so an operator never takes a frozen picture for a live one.
async fn live(
    State(state): State<Arc<WhepState>>,
    Extension(viewer): Extension<Viewer>,
    Path(camera): Path<String>,
    Query(query): Query<OfferQuery>,
) -> Result<Response, Reject> {
    let quality = quality_param(&camera, query.quality.as_deref())?;
    if !viewer.narrow(state.source.catalog()).iter().any(|c| c.id == camera && c.qualities.contains(&quality))
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
    let track = state.source.track_state(&camera, quality).unwrap_or(TrackState::Live);
    let body = serde_json::to_value(track).unwrap_or_default();
    Ok(([(header::CACHE_CONTROL, "no-store")], Json(body)).into_response())
}

/// `GET /whep/session/{id}`: 200 while the session lives, 410 with the
/// reason once the relay ended it (the page asks when its connection
/// closes), 404 for a session this viewer does not have.
async fn session_state(
    State(state): State<Arc<WhepState>>,
    Extension(viewer): Extension<Viewer>,
    Path(id): Path<String>,
) -> Response {
    let live = state.lock_sessions().get(&id).is_some_and(|s| s.viewer.same_holder(&viewer));
    if live {
        return (StatusCode::OK, [(header::CACHE_CONTROL, "no-store")], "live\n").into_response();
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

async fn end_session(
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

#[derive(Deserialize)]
struct OfferQuery {
    quality: Option<String>,
}

async fn offer(
    State(state): State<Arc<WhepState>>,
    Extension(viewer): Extension<Viewer>,
    Path(camera): Path<String>,
    Query(query): Query<OfferQuery>,
    headers: HeaderMap,
    extensions: axum::http::Extensions,
    body: Bytes,
) -> Result<Response, Reject> {
    // Per client address: a page reloading in a loop, or a script, cannot
    // make the relay build peer connections without end.
    let client = extensions.get::<axum::extract::ConnectInfo<std::net::SocketAddr>>().map(|c| c.0.ip());
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
    let quality = quality_param(&camera, query.quality.as_deref())?;
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
            return Err(scope_reject(&state.audit, &viewer, &camera, quality, refusal));
        }
    }
    if !is_sdp(&headers) {
        return Err(Reject::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("camera `{camera}`: the offer must be sent with Content-Type: application/sdp"),
        ));
    }
    let sdp = std::str::from_utf8(&body).map_err(|_| {
        Reject::new(StatusCode::BAD_REQUEST, format!("camera `{camera}`: the SDP offer is not UTF-8 text"))
    })?;
    check_offer(sdp).map_err(|e| {
        Reject::new(StatusCode::BAD_REQUEST, format!("camera `{camera}`: unusable SDP offer: {e}"))
    })?;
    let offer = RTCSessionDescription::offer(sdp.to_owned()).map_err(|e| {
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

    if quality == Quality::Main && entry.is_some_and(|c| c.codec == Codec::H265) {
        return Err(h265_reject(&camera, quality));
    }
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
        let of_viewer = state.lock_sessions().values().filter(|s| s.viewer.same_account(&viewer)).count();
        if of_viewer >= state.settings.max_per_viewer {
            state.refusals.hit("whep.max_per_viewer");
            let why = format!(
                "viewer `{}` already has {of_viewer} WHEP sessions on this relay, the limit per account \
                 (`whep.max_per_viewer`); close one of them (another tab or screen) and try again",
                viewer.name()
            );
            state.audit.refused(viewer.audit_name(), &camera, quality, "over-limit", &why);
            return Err(Reject::new(StatusCode::SERVICE_UNAVAILABLE, why));
        }
    }

    let mut reader = state.source.subscribe(&camera, quality).await.map_err(|f| {
        info!(camera = %camera, quality = quality.name(), viewer = viewer.name(), code = f.code.name(), reason = %f.reason, "WHEP: upstream refused");
        state.audit.refused(viewer.audit_name(), &camera, quality, f.code.name(), &f.reason);
        subscribe_reject(&camera, quality, &f)
    })?;

    // An item already queued comes from the cached GOP: a backlog to catch up on.
    let q = quality.name();
    let (first, first_queued) = match reader.try_next() {
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
    if first.config.codec != Codec::H264 {
        return Err(h265_reject(&camera, quality));
    }

    let (udp_addrs, port) = state.media_addrs(&camera)?;
    let mut peer = Peer::answer(&state.settings, udp_addrs, &camera, offer).await?;
    peer.port = port;
    let id = session_id();
    let (stop_tx, stop_rx) = oneshot::channel();
    let started = Instant::now();
    state.lock_sessions().insert(
        id.clone(),
        SessionEntry { viewer: viewer.clone(), camera: camera.clone(), quality, started, stop: stop_tx },
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
    info!(session = %id, camera = %camera, quality = q, viewer = viewer.name(), "WHEP session answered");
    state
        .audit
        .view_start(Viewing { viewer: viewer.audit_name(), camera: &camera, quality, session: &id }, "WHEP");
    let answer = peer.answer_sdp.clone();
    let session = Session {
        id: id.clone(),
        viewer: viewer.audit_name().map(str::to_owned),
        quality,
        started,
        camera,
        peer,
        reader,
        first: Some((first, first_queued)),
        stop: stop_rx,
        _permit: permit,
    };
    tokio::spawn(session.run(state.clone()));

    let location = HeaderValue::from_str(&format!("/whep/session/{id}"))
        .map_err(|_| Reject::new(StatusCode::INTERNAL_SERVER_ERROR, "session id is not a header value"))?;
    Ok((
        StatusCode::CREATED,
        [(header::CONTENT_TYPE, HeaderValue::from_static("application/sdp")), (header::LOCATION, location)],
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

fn h265_reject(camera: &str, quality: Quality) -> Reject {
    let fix = match quality {
        Quality::Main => "use the substream (?quality=sub) or RTSP",
        Quality::Sub => "its substream is H.265 too: use RTSP",
    };
    Reject::new(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        format!("camera `{camera}` is H.265: browsers cannot play it over WebRTC here; {fix}"),
    )
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

/// Why an SDP offer cannot be answered, before webrtc sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OfferError {
    /// Not SDP at all.
    NotSdp,
    /// No video section the relay could send on.
    NoReceivingVideo,
    /// Video, but no H.264 with packetization-mode 1.
    NoH264,
    /// ICE credentials or DTLS fingerprint missing.
    NotWebRtc,
}

impl std::fmt::Display for OfferError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            OfferError::NotSdp => "the body is not an SDP offer (it must start with `v=0`)",
            OfferError::NoReceivingVideo => {
                "no video section that receives (add a recvonly video transceiver)"
            }
            OfferError::NoH264 => {
                "the browser offers no H.264 with packetization-mode=1; use a browser with H.264 WebRTC support"
            }
            OfferError::NotWebRtc => {
                "ICE credentials or DTLS fingerprint missing; send the browser's createOffer() output unchanged"
            }
        })
    }
}

/// Checks that an offer is a WebRTC offer the relay can answer with H.264.
pub fn check_offer(sdp: &str) -> Result<(), OfferError> {
    let mut lines = sdp.lines().map(str::trim).filter(|l| !l.is_empty());
    if lines.next() != Some("v=0") {
        return Err(OfferError::NotSdp);
    }
    let mut has_ice = false;
    let mut has_fingerprint = false;
    // Per video section: (receives, H.264 payload types, payload types with mode 1).
    let mut video: Vec<(bool, Vec<String>, Vec<String>)> = Vec::new();
    let mut in_video = false;
    for line in lines {
        if let Some(m) = line.strip_prefix("m=") {
            in_video = m.starts_with("video ");
            if in_video {
                video.push((true, Vec::new(), Vec::new()));
            }
            continue;
        }
        if line.starts_with("a=ice-ufrag:") {
            has_ice = true;
        } else if line.starts_with("a=fingerprint:") {
            has_fingerprint = true;
        }
        let Some(section) = video.last_mut().filter(|_| in_video) else {
            continue;
        };
        if line == "a=sendonly" || line == "a=inactive" {
            section.0 = false;
        } else if let Some(rest) = line.strip_prefix("a=rtpmap:") {
            if let Some((pt, codec)) = rest.split_once(' ') {
                if codec.to_ascii_uppercase().starts_with("H264/90000") {
                    section.1.push(pt.to_owned());
                }
            }
        } else if let Some(rest) = line.strip_prefix("a=fmtp:") {
            if let Some((pt, params)) = rest.split_once(' ') {
                if params.split(';').any(|p| p.trim().eq_ignore_ascii_case("packetization-mode=1")) {
                    section.2.push(pt.to_owned());
                }
            }
        }
    }
    if !has_ice || !has_fingerprint {
        return Err(OfferError::NotWebRtc);
    }
    let receiving: Vec<_> = video.iter().filter(|v| v.0).collect();
    if receiving.is_empty() {
        return Err(OfferError::NoReceivingVideo);
    }
    if !receiving.iter().any(|(_, h264, mode1)| h264.iter().any(|pt| mode1.contains(pt))) {
        return Err(OfferError::NoH264);
    }
    Ok(())
}

/// Connection events the session cares about, turned into watch channels.
struct PeerEvents {
    state: watch::Sender<RTCPeerConnectionState>,
    gathered: watch::Sender<bool>,
}

type HandlerFuture<'a> = Pin<Box<dyn Future<Output = ()> + Send + 'a>>;

// `PeerConnectionEventHandler` is an `#[async_trait]` trait; these are the
// signatures that macro expands to, written out so the relay does not need
// the macro crate for two non-blocking callbacks (they run on the driver).
impl PeerConnectionEventHandler for PeerEvents {
    fn on_ice_gathering_state_change<'life0, 'async_trait>(
        &'life0 self,
        state: RTCIceGatheringState,
    ) -> HandlerFuture<'async_trait>
    where
        'life0: 'async_trait,
        Self: 'async_trait,
    {
        if state == RTCIceGatheringState::Complete {
            self.gathered.send_replace(true);
        }
        Box::pin(std::future::ready(()))
    }

    fn on_connection_state_change<'life0, 'async_trait>(
        &'life0 self,
        state: RTCPeerConnectionState,
    ) -> HandlerFuture<'async_trait>
    where
        'life0: 'async_trait,
        Self: 'async_trait,
    {
        self.state.send_replace(state);
        Box::pin(std::future::ready(()))
    }
}

/// Owns a peer connection and closes it when dropped: on the tokio runtime a
/// connection dropped without `close()` leaves its driver task and sockets
/// running, e.g. when a client hangs up while its POST is being answered.
struct ClosingPeer {
    pc: Arc<dyn PeerConnection>,
    closed: bool,
}

impl ClosingPeer {
    async fn close(&mut self) -> webrtc::error::Result<()> {
        self.closed = true;
        self.pc.close().await
    }
}

impl std::ops::Deref for ClosingPeer {
    type Target = dyn PeerConnection;

    fn deref(&self) -> &Self::Target {
        &*self.pc
    }
}

impl Drop for ClosingPeer {
    fn drop(&mut self) {
        if self.closed {
            return;
        }
        let pc = self.pc.clone();
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                let _ = pc.close().await;
            });
        }
    }
}

/// One browser's peer connection with its send-only H.264 track.
struct Peer {
    pc: ClosingPeer,
    track: Arc<TrackLocalStaticRTP>,
    ssrc: u32,
    payload_type: u8,
    states: watch::Receiver<RTCPeerConnectionState>,
    answer_sdp: String,
    /// The media port leased for it (`whep.udp_ports`), given back when the
    /// session is over and its peer connection closed.
    port: Option<PortLease>,
}

impl Peer {
    /// Builds a peer connection, applies the offer and returns once the
    /// answer (with every host candidate) is ready.
    async fn answer(
        settings: &WhepSettings,
        udp_addrs: Vec<String>,
        camera: &str,
        offer: RTCSessionDescription,
    ) -> Result<Peer, Reject> {
        let internal = |what: &str, e: &dyn std::fmt::Display| {
            warn!(camera = %camera, error = %e, "WHEP: {what}");
            Reject::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("camera `{camera}`: the relay could not {what} ({e}); see the relay log"),
            )
        };
        let h264 = RTCRtpCodec {
            mime_type: MIME_TYPE_H264.to_owned(),
            clock_rate: 90_000,
            channels: 0,
            sdp_fmtp_line: H264_FMTP.to_owned(),
            rtcp_feedback: vec![],
        };
        let mut media = MediaEngine::default();
        media
            .register_codec(
                RTCRtpCodecParameters { rtp_codec: h264.clone(), payload_type: H264_PAYLOAD_TYPE },
                RtpCodecKind::Video,
            )
            .map_err(|e| internal("register H.264", &e))?;
        let registry = register_default_interceptors(Registry::new(), &mut media)
            .map_err(|e| internal("set up RTP interceptors", &e))?;
        let (state_tx, states) = watch::channel(RTCPeerConnectionState::New);
        let (gathered_tx, mut gathered) = watch::channel(false);
        let pc = PeerConnectionBuilder::new()
            .with_configuration(RTCConfigurationBuilder::new().build())
            .with_media_engine(media)
            .with_interceptor_registry(registry)
            .with_handler(Arc::new(PeerEvents { state: state_tx, gathered: gathered_tx }))
            .with_udp_addrs(udp_addrs)
            .with_setting_engine(
                webrtc::peer_connection::SettingEngineBuilder::new()
                    .with_ice_connection_attempts(Some(ICE_CHECK_INTERVAL), Some(ICE_MAX_BINDING_REQUESTS))
                    .build(),
            )
            .build()
            .await
            .map_err(|e| internal("create a peer connection", &e))?;
        // From here on, an early return (or a cancelled request) closes it.
        let pc = ClosingPeer { pc: Arc::new(pc), closed: false };

        let ssrc = rand::random::<u32>();
        let track = Arc::new(TrackLocalStaticRTP::new(MediaStreamTrack::new(
            "ponte".to_owned(),
            camera.to_owned(),
            camera.to_owned(),
            RtpCodecKind::Video,
            vec![RTCRtpEncodingParameters {
                rtp_coding_parameters: RTCRtpCodingParameters { ssrc: Some(ssrc), ..Default::default() },
                codec: h264,
                ..Default::default()
            }],
        )));
        let sender = pc
            .add_track(Arc::clone(&track) as Arc<dyn TrackLocal>)
            .await
            .map_err(|e| internal("add the video track", &e))?;
        let refused = |what: &str, e: &dyn std::fmt::Display| {
            Reject::new(
                StatusCode::BAD_REQUEST,
                format!("camera `{camera}`: {what} ({e}); offer a recvonly H.264 video transceiver"),
            )
        };
        pc.set_remote_description(offer).await.map_err(|e| refused("the SDP offer was refused", &e))?;
        let answer = pc.create_answer(None).await.map_err(|e| refused("no answer fits the offer", &e))?;
        pc.set_local_description(answer).await.map_err(|e| internal("apply its answer", &e))?;
        let payload_type = negotiated_h264(&sender).await.ok_or_else(|| {
            Reject::new(StatusCode::BAD_REQUEST, format!("camera `{camera}`: {}", OfferError::NoH264))
        })?;
        // Non-trickle: the answer carries every candidate. Host
        // candidates are ready in milliseconds; the timeout only bounds
        // a misconfigured interface list.
        if timeout(settings.gather_timeout, gathered.wait_for(|done| *done)).await.is_err() {
            let waited = settings.gather_timeout;
            warn!(camera = %camera, "WHEP: ICE gathering incomplete after {waited:?}; answering with what it has");
        }
        let answer_sdp = pc
            .local_description()
            .await
            .map(|d| d.sdp)
            .ok_or_else(|| internal("produce an answer", &"no local description"))?;
        Ok(Peer { pc, track, ssrc, payload_type, states, answer_sdp, port: None })
    }
}

/// The payload type negotiated for H.264 on a sender, if any.
async fn negotiated_h264(sender: &Arc<dyn RtpSender>) -> Option<u8> {
    let params = sender.get_parameters().await.ok()?;
    params
        .rtp_parameters
        .codecs
        .iter()
        .find(|c| c.rtp_codec.mime_type.eq_ignore_ascii_case(MIME_TYPE_H264))
        .map(|c| c.payload_type)
}

/// Why a session ended.
#[derive(Debug)]
enum End {
    Deleted,
    ConnectTimeout,
    Failed,
    Closed,
    Disconnected,
    TrackEnded,
    Unsupported(Codec),
    WriteFailed(String),
    /// The viewer may no longer watch it (reload, logout), and why.
    Revoked(String),
}

impl std::fmt::Display for End {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            End::Deleted => f.write_str("deleted by the viewer"),
            End::ConnectTimeout => f.write_str("the browser never connected"),
            End::Failed => f.write_str("connection failed"),
            End::Closed => f.write_str("connection closed"),
            End::Disconnected => f.write_str("connection lost"),
            End::TrackEnded => f.write_str("the camera's track ended"),
            End::Unsupported(codec) => write!(f, "the camera switched to {}", codec.name()),
            End::WriteFailed(e) => write!(f, "sending RTP failed: {e}"),
            End::Revoked(why) => write!(f, "access revoked: {why}"),
        }
    }
}

/// A session task: owns the peer connection and the hub reader.
struct Session {
    id: String,
    /// Audit name of the viewer (`None` on a relay without accounts).
    viewer: Option<String>,
    quality: Quality,
    started: Instant,
    camera: String,
    peer: Peer,
    reader: TrackReader,
    /// The first item, read while answering, and how it arrived.
    first: Option<(HubItem, Arrival)>,
    /// A reason, or the sender dropped (DELETE): the session ends.
    stop: oneshot::Receiver<End>,
    _permit: OwnedSemaphorePermit,
}

#[derive(Default)]
struct Sent {
    frames: u64,
    bytes: u64,
}

impl Session {
    async fn run(mut self, state: Arc<WhepState>) {
        let mut sent = Sent::default();
        let end = match self.wait_connected(&state.settings).await {
            Ok(()) => self.pump(&state.settings, &mut sent).await,
            Err(end) => end,
        };
        let Session { id, viewer, quality, started, camera, mut peer, reader, _permit: permit, .. } = self;
        // Unsubscribe first: the camera may stop crossing the fibre.
        drop(reader);
        let entry = state.lock_sessions().remove(&id);
        // Still listed: the relay ends it (not DELETE, not a sweep, which
        // took it out and remembered why themselves).
        if let Some(entry) = entry {
            state.remember_end(&id, entry.viewer, &end);
        }
        match timeout(PEER_CLOSE_TIMEOUT, peer.pc.close()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                warn!(session = %id, camera = %camera, error = %e, "WHEP: closing the peer connection failed")
            }
            Err(_) => {
                warn!(session = %id, camera = %camera, "WHEP: the peer connection took too long to close")
            }
        }
        // The slot and the media port go together, once the port is closed:
        // a range exactly `whep.max_sessions` wide never refuses a viewer
        // while a slot is free.
        drop(peer);
        drop(permit);
        let Sent { frames, bytes } = sent;
        info!(session = %id, camera = %camera, frames, bytes, "WHEP session ended: {end}");
        state.audit.view_stop(
            Viewing { viewer: viewer.as_deref(), camera: &camera, quality, session: &id },
            started.elapsed(),
            &end.to_string(),
        );
    }

    /// Why the session was told to end, if it was.
    fn stopped(&mut self) -> Option<End> {
        match self.stop.try_recv() {
            Ok(end) => Some(end),
            Err(oneshot::error::TryRecvError::Empty) => None,
            Err(oneshot::error::TryRecvError::Closed) => Some(End::Deleted),
        }
    }

    async fn wait_connected(&mut self, settings: &WhepSettings) -> Result<(), End> {
        let deadline = Instant::now() + settings.connect_timeout;
        loop {
            match *self.peer.states.borrow_and_update() {
                RTCPeerConnectionState::Connected => return Ok(()),
                RTCPeerConnectionState::Failed => return Err(End::Failed),
                RTCPeerConnectionState::Closed => return Err(End::Closed),
                _ => {}
            }
            tokio::select! {
                end = &mut self.stop => return Err(end.unwrap_or(End::Deleted)),
                changed = self.peer.states.changed() => {
                    if changed.is_err() {
                        return Err(End::Closed);
                    }
                }
                _ = sleep_until(deadline) => return Err(End::ConnectTimeout),
            }
        }
    }

    async fn pump(&mut self, settings: &WhepSettings, sent: &mut Sent) -> End {
        let mut gate = EgressGate::new(Codec::H264, rand::random());
        let mut packetizer = H264Packetizer::new(self.peer.ssrc, self.peer.payload_type, rand::random());
        let mut pending = self.first.take();
        let mut disconnected_since: Option<Instant> = None;
        loop {
            if let Some(end) = self.stopped() {
                return end;
            }
            match *self.peer.states.borrow_and_update() {
                RTCPeerConnectionState::Failed => return End::Failed,
                RTCPeerConnectionState::Closed => return End::Closed,
                RTCPeerConnectionState::Disconnected => {
                    let since = *disconnected_since.get_or_insert_with(Instant::now);
                    if since.elapsed() >= settings.disconnect_grace {
                        return End::Disconnected;
                    }
                }
                _ => disconnected_since = None,
            }
            let (item, arrival) = if let Some(first) = pending.take() {
                first
            } else if let Some(item) = self.reader.try_next() {
                (item, Arrival::Queued)
            } else {
                let grace_end = disconnected_since.map(|s| s + settings.disconnect_grace);
                tokio::select! {
                    end = &mut self.stop => return end.unwrap_or(End::Deleted),
                    changed = self.peer.states.changed() => {
                        if changed.is_err() {
                            return End::Closed;
                        }
                        continue;
                    }
                    _ = sleep_until_opt(grace_end) => continue,
                    item = self.reader.next() => match item {
                        Some(item) => (item, Arrival::Live),
                        None => return self.reader.revoked().map_or(End::TrackEnded, |why| End::Revoked(why.to_string())),
                    },
                }
            };
            let (payload, timestamp) = match gate.accept(&item, arrival) {
                Verdict::Skip => continue,
                Verdict::CodecChanged(codec) => return End::Unsupported(codec),
                Verdict::Send { payload, timestamp } => (payload, timestamp),
            };
            for packet in packetizer.packetize(&payload, timestamp) {
                if let Err(e) = self.peer.track.write_rtp(packet).await {
                    return End::WriteFailed(e.to_string());
                }
            }
            sent.frames += 1;
            sent.bytes += payload.len() as u64;
        }
    }
}

async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// Splits H.264 access units into RTP packets (RFC 6184 mode 1: single NAL,
/// STAP-A for SPS+PPS, FU-A beyond the MTU) with our own timestamps.
struct H264Packetizer {
    payloader: H264Payloader,
    ssrc: u32,
    payload_type: u8,
    sequence: u16,
}

impl H264Packetizer {
    fn new(ssrc: u32, payload_type: u8, first_sequence: u16) -> Self {
        Self { payloader: H264Payloader::default(), ssrc, payload_type, sequence: first_sequence }
    }

    fn packetize(&mut self, access_unit: &Bytes, timestamp: u32) -> Vec<rtp::Packet> {
        let payloads = match self.payloader.payload(RTP_MTU - RTP_HEADER_BYTES, access_unit) {
            Ok(payloads) => payloads,
            Err(e) => {
                warn!(error = %e, "WHEP: dropping an H.264 access unit that cannot be packetized");
                return Vec::new();
            }
        };
        let last = payloads.len().saturating_sub(1);
        payloads
            .into_iter()
            .enumerate()
            .map(|(i, payload)| {
                let sequence_number = self.sequence;
                self.sequence = self.sequence.wrapping_add(1);
                rtp::Packet {
                    header: rtp::Header {
                        version: 2,
                        marker: i == last,
                        payload_type: self.payload_type,
                        sequence_number,
                        timestamp,
                        ssrc: self.ssrc,
                        ..Default::default()
                    },
                    payload,
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ponte_proto::hub::{Hub, TrackKey, TrackWriter};
    use ponte_proto::media::{CodecConfig, Frame};
    use std::net::SocketAddr;
    use std::sync::atomic::{AtomicU64, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};
    use webrtc::rtp_transceiver::{RTCRtpTransceiverDirection, RTCRtpTransceiverInit};

    // ---- pure pieces -------------------------------------------------------

    /// Trimmed from a Chromium offer for one recvonly video transceiver.
    const CHROME_OFFER: &str = "v=0\r\n\
o=- 4611731400430051336 2 IN IP4 127.0.0.1\r\n\
s=-\r\n\
t=0 0\r\n\
a=group:BUNDLE 0\r\n\
a=msid-semantic: WMS\r\n\
m=video 9 UDP/TLS/RTP/SAVPF 96 97 102 103 127\r\n\
c=IN IP4 0.0.0.0\r\n\
a=rtcp:9 IN IP4 0.0.0.0\r\n\
a=ice-ufrag:Zx4f\r\n\
a=ice-pwd:0hFf3sY8yPq2yY0iZbBfX1aL\r\n\
a=ice-options:trickle\r\n\
a=fingerprint:sha-256 6B:8B:F0:65:5F:78:E2:51:3B:AC:6F:F3:3F:46:1B:35:DC:B8:5F:64:1A:24:C2:43:F0:A1:58:D0:A1:2C:19:08\r\n\
a=setup:actpass\r\n\
a=mid:0\r\n\
a=recvonly\r\n\
a=rtcp-mux\r\n\
a=rtcp-rsize\r\n\
a=rtpmap:96 VP8/90000\r\n\
a=rtpmap:97 rtx/90000\r\n\
a=fmtp:97 apt=96\r\n\
a=rtpmap:102 H264/90000\r\n\
a=rtcp-fb:102 nack\r\n\
a=rtcp-fb:102 nack pli\r\n\
a=fmtp:102 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f\r\n\
a=rtpmap:103 rtx/90000\r\n\
a=fmtp:103 apt=102\r\n\
a=rtpmap:127 H264/90000\r\n\
a=fmtp:127 level-asymmetry-allowed=1;packetization-mode=0;profile-level-id=42e01f\r\n";

    #[test]
    fn chrome_offer_is_accepted() {
        assert_eq!(check_offer(CHROME_OFFER), Ok(()));
        assert!(RTCSessionDescription::offer(CHROME_OFFER.to_owned()).is_ok());
    }

    #[test]
    fn garbage_and_incomplete_offers_are_refused() {
        assert_eq!(check_offer(""), Err(OfferError::NotSdp));
        assert_eq!(check_offer("hello"), Err(OfferError::NotSdp));
        assert_eq!(check_offer("\u{0}\u{1}v=0"), Err(OfferError::NotSdp));
        let no_fingerprint: String = CHROME_OFFER
            .lines()
            .filter(|l| !l.starts_with("a=fingerprint"))
            .map(|l| format!("{l}\n"))
            .collect();
        assert_eq!(check_offer(&no_fingerprint), Err(OfferError::NotWebRtc));
        let sendonly = CHROME_OFFER.replace("a=recvonly", "a=sendonly");
        assert_eq!(check_offer(&sendonly), Err(OfferError::NoReceivingVideo));
        let audio_only = CHROME_OFFER.replace("m=video", "m=audio");
        assert_eq!(check_offer(&audio_only), Err(OfferError::NoReceivingVideo));
    }

    #[test]
    fn offer_without_h264_mode_1_is_refused() {
        let vp8_only = CHROME_OFFER.replace("H264/90000", "VP9/90000");
        assert_eq!(check_offer(&vp8_only), Err(OfferError::NoH264));
        let mode0_only = CHROME_OFFER.replace("packetization-mode=1", "packetization-mode=0");
        assert_eq!(check_offer(&mode0_only), Err(OfferError::NoH264));
    }

    const SPS: &[u8] = &[0x67, 0x42, 0xe0, 0x1f, 0xda, 0x02, 0x80];
    const PPS: &[u8] = &[0x68, 0xce, 0x3c, 0x80];

    fn config(codec: Codec) -> Arc<CodecConfig> {
        Arc::new(CodecConfig {
            codec,
            width: 640,
            height: 360,
            parameter_sets: vec![Bytes::from_static(SPS), Bytes::from_static(PPS)],
        })
    }

    fn annex_b(nals: &[&[u8]]) -> Bytes {
        let mut out = Vec::new();
        for nal in nals {
            out.extend_from_slice(&[0, 0, 0, 1]);
            out.extend_from_slice(nal);
        }
        Bytes::from(out)
    }

    fn idr(len: usize) -> Vec<u8> {
        let mut nal = vec![0x65];
        nal.extend((0..len).map(|i| (i % 200) as u8 + 5));
        nal
    }

    fn slice(len: usize) -> Vec<u8> {
        let mut nal = vec![0x41];
        nal.extend((0..len).map(|i| (i % 200) as u8 + 5));
        nal
    }

    #[test]
    fn packetizer_marks_frames_and_fragments_beyond_the_mtu() {
        let mut p = H264Packetizer::new(0xdead_beef, 109, u16::MAX);
        let packets = p.packetize(&annex_b(&[SPS, PPS, &idr(4000)]), 1234);
        // STAP-A (SPS+PPS), then FU-A fragments of the IDR.
        assert!(packets.len() >= 5, "{} packets", packets.len());
        assert_eq!(packets[0].payload[0] & 0x1f, 24);
        assert!(packets[1..].iter().all(|pk| pk.payload[0] & 0x1f == 28));
        assert!(packets.iter().all(|pk| pk.payload.len() + RTP_HEADER_BYTES <= RTP_MTU));
        assert!(packets.iter().all(|pk| pk.header.timestamp == 1234
            && pk.header.ssrc == 0xdead_beef
            && pk.header.payload_type == 109));
        let markers: Vec<bool> = packets.iter().map(|pk| pk.header.marker).collect();
        assert_eq!(markers.iter().filter(|m| **m).count(), 1);
        assert_eq!(markers.last(), Some(&true));
        assert_eq!(packets[0].header.sequence_number, u16::MAX);
        assert_eq!(packets[1].header.sequence_number, 0);
        let next = p.packetize(&annex_b(&[&slice(100)]), 7234);
        assert_eq!(next.len(), 1);
        assert!(next[0].header.marker);
        assert_eq!(next[0].header.sequence_number, packets.len() as u16 - 1);
        assert!(p.packetize(&Bytes::new(), 1).is_empty());
    }

    // ---- routes and sessions over real sockets ------------------------------

    struct FakeSource {
        hub: Hub,
        catalog: Vec<CatalogEntry>,
        refusals: HashMap<String, SubscribeErrorCode>,
    }

    impl CameraSource for FakeSource {
        fn site(&self) -> String {
            "carabinieri-cremona".to_owned()
        }

        fn catalog(&self) -> Vec<CatalogEntry> {
            self.catalog.clone()
        }

        fn subscribe<'a>(
            &'a self,
            camera: &'a str,
            quality: Quality,
        ) -> BoxFuture<'a, Result<TrackReader, SubscribeFailure>> {
            Box::pin(async move {
                if let Some(code) = self.refusals.get(camera) {
                    return Err(SubscribeFailure { code: *code, reason: String::new() });
                }
                self.hub.subscribe(&TrackKey::new(camera, quality)).ok_or_else(|| SubscribeFailure {
                    code: SubscribeErrorCode::Unknown,
                    reason: format!("camera `{camera}` is not in the catalog"),
                })
            })
        }
    }

    fn entry(id: &str, codec: Codec) -> CatalogEntry {
        CatalogEntry {
            id: id.to_owned(),
            device: id.to_owned(),
            lens: 1,
            name: format!("Piazza {id}"),
            zone: "Centro".to_owned(),
            kind: "dome".to_owned(),
            codec,
            qualities: vec![Quality::Main, Quality::Sub],
            ptz: false,
            always_on: false,
        }
    }

    fn test_settings() -> WhepSettings {
        WhepSettings {
            udp_addrs: vec!["127.0.0.1:0".to_owned()],
            udp_ports: None,
            max_sessions: 4,
            max_per_camera: 3,
            offers_per_minute: 0,
            first_frame_timeout: Duration::from_millis(500),
            gather_timeout: Duration::from_secs(2),
            connect_timeout: Duration::from_secs(10),
            disconnect_grace: Duration::from_secs(1),
            max_per_viewer: 8,
        }
    }

    async fn serve(source: FakeSource, settings: WhepSettings) -> (SocketAddr, Arc<WhepState>) {
        let state = Arc::new(WhepState::with_source(Arc::new(source), settings));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        // As the relay serves it: with the client's address (rate limits).
        let app = router(state.clone()).into_make_service_with_connect_info::<SocketAddr>();
        tokio::spawn(async move { axum::serve(listener, app).await });
        (addr, state)
    }

    struct Reply {
        status: u16,
        headers: HashMap<String, String>,
        body: String,
    }

    /// Minimal HTTP/1.1 client: one request per connection.
    async fn http(
        addr: SocketAddr,
        method: &str,
        path: &str,
        content_type: Option<&str>,
        body: &[u8],
    ) -> Reply {
        let headers: Vec<(&str, &str)> = content_type.map(|ct| ("Content-Type", ct)).into_iter().collect();
        http_with(addr, method, path, &headers, body).await
    }

    /// [`http`] with any request headers.
    async fn http_with(
        addr: SocketAddr,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Reply {
        let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
        let mut req = format!(
            "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
            body.len()
        );
        for (name, value) in headers {
            req.push_str(&format!("{name}: {value}\r\n"));
        }
        req.push_str("\r\n");
        conn.write_all(req.as_bytes()).await.unwrap();
        conn.write_all(body).await.unwrap();
        let mut raw = Vec::new();
        conn.read_to_end(&mut raw).await.unwrap();
        let text = String::from_utf8_lossy(&raw).into_owned();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        let mut lines = head.lines();
        let status = lines.next().unwrap().split(' ').nth(1).unwrap().parse().unwrap();
        let headers = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
            .collect();
        Reply { status, headers, body: body.to_owned() }
    }

    fn fake(catalog: Vec<CatalogEntry>) -> FakeSource {
        FakeSource { hub: Hub::new(), catalog, refusals: HashMap::new() }
    }

    #[tokio::test]
    async fn offer_errors_are_one_line_naming_the_camera() {
        let mut source = fake(vec![entry("duomo", Codec::H264), entry("porta-po", Codec::H265)]);
        source.refusals.insert("caserma".to_owned(), SubscribeErrorCode::Forbidden);
        source.refusals.insert("stazione".to_owned(), SubscribeErrorCode::Offline);
        source.refusals.insert("ponte-po".to_owned(), SubscribeErrorCode::OverBudget);
        // Published but silent.
        let _silent = publish(&source.hub, "torrazzo");
        // The catalog says H.264 (main), but the stream itself is H.265.
        let hevc = source.hub.publish(TrackKey::new("duomo", Quality::Sub));
        hevc.set_config(config(Codec::H265));
        hevc.push(Frame { pts: 0, keyframe: true, payload: Bytes::from_static(&[0, 0, 1, 0x26, 1]) });
        let (addr, _) = serve(source, test_settings()).await;
        let sdp = Some("application/sdp");
        let offer = CHROME_OFFER.as_bytes();
        // (path, content type, body, status, text the one-line body must contain)
        type Case<'a> = (&'a str, Option<&'a str>, &'a [u8], u16, &'a str);
        let cases: &[Case] = &[
            ("/whep/duomo", Some("text/plain"), offer, 415, "Content-Type: application/sdp"),
            ("/whep/duomo", None, offer, 415, "Content-Type: application/sdp"),
            ("/whep/duomo", sdp, b"not sdp at all", 400, "v=0"),
            ("/whep/duomo", sdp, &[0xff, 0xfe, 0x00], 400, "UTF-8"),
            ("/whep/duomo?quality=ultra", sdp, offer, 400, "unknown quality"),
            ("/whep/nowhere", sdp, offer, 404, "not in the catalog"),
            ("/whep/caserma", sdp, offer, 403, "not allowed"),
            ("/whep/stazione", sdp, offer, 503, "offline"),
            ("/whep/ponte-po", sdp, offer, 503, "link budget"),
            (
                "/whep/porta-po",
                sdp,
                offer,
                415,
                "is H.265: browsers cannot play it over WebRTC here; use the substream",
            ),
            ("/whep/duomo?quality=sub", sdp, offer, 415, "is H.265: browsers cannot play it"),
            ("/whep/torrazzo", Some("application/sdp; charset=utf-8"), offer, 504, "no video within 0.5 s"),
        ];
        for (path, ct, body, status, needle) in cases {
            let reply = http(addr, "POST", path, *ct, body).await;
            assert_eq!(reply.status, *status, "{path}: {}", reply.body);
            assert!(reply.body.contains(needle), "{path}: {}", reply.body);
            let camera = path.trim_start_matches("/whep/").split('?').next().unwrap();
            assert!(reply.body.contains(camera), "{path}: {}", reply.body);
            assert_eq!(reply.body.trim_end().lines().count(), 1, "{path}: {}", reply.body);
            assert!(reply.headers["content-type"].starts_with("text/plain"));
        }
        let huge = vec![b'a'; MAX_OFFER_BYTES + 1];
        assert_eq!(http(addr, "POST", "/whep/duomo", sdp, &huge).await.status, 413);
        let reply = http(addr, "DELETE", "/whep/session/0123abcd", None, b"").await;
        assert_eq!(reply.status, 404);
        assert!(reply.body.contains("0123abcd"));
    }

    #[tokio::test]
    async fn catalog_and_page_name_the_site() {
        let (addr, _) = serve(fake(vec![entry("duomo", Codec::H264)]), test_settings()).await;
        let reply = http(addr, "GET", "/api/catalog", None, b"").await;
        assert_eq!(reply.status, 200);
        let json: serde_json::Value = serde_json::from_str(&reply.body).unwrap();
        assert_eq!(json["site"], "carabinieri-cremona");
        assert_eq!(json["cameras"][0]["id"], "duomo");
        assert_eq!(json["cameras"][0]["codec"], "h264");
        let page = http(addr, "GET", "/", None, b"").await;
        assert_eq!(page.status, 200);
        assert!(page.headers["content-type"].starts_with("text/html"));
        assert!(page.body.contains("<title>ponte viewer — carabinieri-cremona</title>"));
    }

    // ---- a real WebRTC viewer (webrtc-rs) against the endpoint ---------------

    /// Publishes a synthetic H.264-shaped track: 30 fps, a keyframe every 10.
    fn publish(hub: &Hub, camera: &str) -> TrackWriter {
        let writer = hub.publish(TrackKey::new(camera, Quality::Main));
        writer.set_config(config(Codec::H264));
        writer
    }

    fn push_frame(writer: &TrackWriter, n: u64) {
        let keyframe = n.is_multiple_of(10);
        let payload = if keyframe { annex_b(&[SPS, PPS, &idr(3000)]) } else { annex_b(&[&slice(300)]) };
        writer.push(Frame { pts: n * 3000, keyframe, payload });
    }

    #[derive(Default)]
    struct Received {
        packets: AtomicU64,
        frames: AtomicU64,
        bytes: AtomicU64,
        payload_type: AtomicU64,
    }

    struct Viewer {
        gathered: watch::Sender<bool>,
        state: watch::Sender<RTCPeerConnectionState>,
        received: Arc<Received>,
    }

    impl PeerConnectionEventHandler for Viewer {
        fn on_ice_gathering_state_change<'life0, 'async_trait>(
            &'life0 self,
            state: RTCIceGatheringState,
        ) -> HandlerFuture<'async_trait>
        where
            'life0: 'async_trait,
            Self: 'async_trait,
        {
            if state == RTCIceGatheringState::Complete {
                self.gathered.send_replace(true);
            }
            Box::pin(std::future::ready(()))
        }

        fn on_connection_state_change<'life0, 'async_trait>(
            &'life0 self,
            state: RTCPeerConnectionState,
        ) -> HandlerFuture<'async_trait>
        where
            'life0: 'async_trait,
            Self: 'async_trait,
        {
            self.state.send_replace(state);
            Box::pin(std::future::ready(()))
        }

        fn on_track<'life0, 'async_trait>(
            &'life0 self,
            track: Arc<dyn TrackRemote>,
        ) -> HandlerFuture<'async_trait>
        where
            'life0: 'async_trait,
            Self: 'async_trait,
        {
            let received = self.received.clone();
            tokio::spawn(async move {
                while let Some(event) = track.poll().await {
                    if let TrackRemoteEvent::OnRtpPacket(packet) = event {
                        received.packets.fetch_add(1, Ordering::Relaxed);
                        received.bytes.fetch_add(packet.payload.len() as u64, Ordering::Relaxed);
                        received.payload_type.store(packet.header.payload_type.into(), Ordering::Relaxed);
                        if packet.header.marker {
                            received.frames.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            });
            Box::pin(std::future::ready(()))
        }
    }

    /// A recvonly H.264 viewer that offers payload type 109, not the relay's 102.
    async fn viewer(
    ) -> (Arc<dyn PeerConnection>, String, watch::Receiver<RTCPeerConnectionState>, Arc<Received>) {
        let mut media = MediaEngine::default();
        media
            .register_codec(
                RTCRtpCodecParameters {
                    rtp_codec: RTCRtpCodec {
                        mime_type: MIME_TYPE_H264.to_owned(),
                        clock_rate: 90_000,
                        channels: 0,
                        sdp_fmtp_line: H264_FMTP.to_owned(),
                        rtcp_feedback: vec![],
                    },
                    payload_type: 109,
                },
                RtpCodecKind::Video,
            )
            .unwrap();
        let registry = register_default_interceptors(Registry::new(), &mut media).unwrap();
        let (gathered_tx, mut gathered) = watch::channel(false);
        let (state_tx, states) = watch::channel(RTCPeerConnectionState::New);
        let received = Arc::new(Received::default());
        let pc = PeerConnectionBuilder::new()
            .with_configuration(RTCConfigurationBuilder::new().build())
            .with_media_engine(media)
            .with_interceptor_registry(registry)
            .with_handler(Arc::new(Viewer {
                gathered: gathered_tx,
                state: state_tx,
                received: received.clone(),
            }))
            .with_udp_addrs(vec!["127.0.0.1:0".to_owned()])
            .build()
            .await
            .unwrap();
        let pc: Arc<dyn PeerConnection> = Arc::new(pc);
        pc.add_transceiver_from_kind(
            RtpCodecKind::Video,
            Some(RTCRtpTransceiverInit {
                direction: RTCRtpTransceiverDirection::Recvonly,
                ..Default::default()
            }),
        )
        .await
        .unwrap();
        let offer = pc.create_offer(None).await.unwrap();
        pc.set_local_description(offer).await.unwrap();
        timeout(Duration::from_secs(5), gathered.wait_for(|g| *g)).await.unwrap().unwrap();
        let sdp = pc.local_description().await.unwrap().sdp;
        (pc, sdp, states, received)
    }

    async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !cond() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn viewer_receives_h264_and_delete_unsubscribes() {
        let source = fake(vec![entry("duomo", Codec::H264)]);
        let writer = publish(&source.hub, "duomo");
        let subscribers = writer.subscribers();
        // A GOP in the cache before anyone watches.
        for n in 0..5 {
            push_frame(&writer, n);
        }
        let (addr, state) = serve(source, test_settings()).await;
        let producer = tokio::spawn(async move {
            let mut n = 5;
            let mut tick = tokio::time::interval(Duration::from_millis(33));
            loop {
                tick.tick().await;
                push_frame(&writer, n);
                n += 1;
            }
        });

        let (pc, offer, _states, received) = viewer().await;
        assert_eq!(check_offer(&offer), Ok(()), "webrtc-rs offer: {offer}");
        let reply = http(addr, "POST", "/whep/duomo", Some("application/sdp"), offer.as_bytes()).await;
        assert_eq!(reply.status, 201, "{}", reply.body);
        assert_eq!(reply.headers["content-type"], "application/sdp");
        let location = reply.headers["location"].clone();
        assert!(location.starts_with("/whep/session/"), "{location}");
        assert!(reply.body.contains("a=candidate:"), "non-trickle answer: {}", reply.body);
        assert!(reply.body.contains("a=sendonly"), "{}", reply.body);
        assert_eq!(state.sessions().len(), 1);
        assert_eq!(state.sessions()[0].camera, "duomo");
        assert_eq!(*subscribers.borrow(), 1);

        pc.set_remote_description(RTCSessionDescription::answer(reply.body).unwrap()).await.unwrap();
        eventually("20 frames", || received.frames.load(Ordering::Relaxed) >= 20).await;
        assert_eq!(received.payload_type.load(Ordering::Relaxed), 109);
        assert!(received.bytes.load(Ordering::Relaxed) > 20 * 300);

        let reply = http(addr, "DELETE", &location, None, b"").await;
        assert_eq!(reply.status, 200, "{}", reply.body);
        eventually("the reader to be dropped", || *subscribers.borrow() == 0).await;
        assert_eq!(state.sessions().len(), 0);
        assert_eq!(http(addr, "DELETE", &location, None, b"").await.status, 404);
        // The permit comes back once the peer connection is closed: the
        // limit counts live sessions only.
        eventually("the permit to come back", || state.slots.available_permits() == 4).await;
        producer.abort();
        let _ = pc.close().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn media_goes_through_a_leased_port_of_the_configured_range() {
        let source = fake(vec![entry("duomo", Codec::H264)]);
        let writer = publish(&source.hub, "duomo");
        for n in 0..5 {
            push_frame(&writer, n);
        }
        // One port: a range the firewall would open, free on this machine.
        let port = std::net::UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let settings =
            WhepSettings { udp_ports: Some(PortRange { low: port, high: port }), ..test_settings() };
        let (addr, state) = serve(source, settings).await;
        let producer = tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(33));
            for n in 5.. {
                tick.tick().await;
                push_frame(&writer, n);
            }
        });
        let candidate_ports = |sdp: &str| -> Vec<u16> {
            sdp.lines()
                .filter(|l| l.starts_with("a=candidate:"))
                .filter_map(|l| l.split_whitespace().nth(5)?.parse().ok())
                .collect()
        };

        let (pc, offer, _, received) = viewer().await;
        let reply = http(addr, "POST", "/whep/duomo", Some("application/sdp"), offer.as_bytes()).await;
        assert_eq!(reply.status, 201, "{}", reply.body);
        let ports = candidate_ports(&reply.body);
        assert!(!ports.is_empty() && ports.iter().all(|p| *p == port), "{ports:?} in {}", reply.body);
        let location = reply.headers["location"].clone();
        pc.set_remote_description(RTCSessionDescription::answer(reply.body).unwrap()).await.unwrap();
        eventually("10 frames through the leased port", || received.frames.load(Ordering::Relaxed) >= 10)
            .await;

        // The range is used up: the next viewer is told which key to widen.
        let (pc2, offer2, _, _) = viewer().await;
        let refused = http(addr, "POST", "/whep/duomo", Some("application/sdp"), offer2.as_bytes()).await;
        assert_eq!(refused.status, 503, "{}", refused.body);
        assert!(refused.body.contains("`whep.udp_ports`"), "{}", refused.body);
        assert_eq!(state.refusals().get("whep.udp_ports"), Some(&1));

        // The session ends: its port comes back for the next viewer.
        assert_eq!(http(addr, "DELETE", &location, None, b"").await.status, 200);
        let pool = state.ports.clone().unwrap();
        eventually("the port to come back", || pool.in_use() == 0).await;
        let (pc3, offer3, _, received3) = viewer().await;
        let reply = http(addr, "POST", "/whep/duomo", Some("application/sdp"), offer3.as_bytes()).await;
        assert_eq!(reply.status, 201, "{}", reply.body);
        assert!(candidate_ports(&reply.body).iter().all(|p| *p == port));
        pc3.set_remote_description(RTCSessionDescription::answer(reply.body).unwrap()).await.unwrap();
        eventually("frames for the next viewer", || received3.frames.load(Ordering::Relaxed) >= 5).await;
        producer.abort();
        for pc in [pc, pc2, pc3] {
            let _ = pc.close().await;
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn session_ends_when_the_track_ends_or_the_viewer_leaves() {
        let source = fake(vec![entry("duomo", Codec::H264), entry("torrazzo", Codec::H264)]);
        let duomo = publish(&source.hub, "duomo");
        let torrazzo = publish(&source.hub, "torrazzo");
        for n in 0..3 {
            push_frame(&duomo, n);
            push_frame(&torrazzo, n);
        }
        let torrazzo_subscribers = torrazzo.subscribers();
        let (addr, state) = serve(source, test_settings()).await;

        // The track ends: the session goes away by itself.
        let (pc1, offer, _, received1) = viewer().await;
        let reply = http(addr, "POST", "/whep/duomo", Some("application/sdp"), offer.as_bytes()).await;
        assert_eq!(reply.status, 201, "{}", reply.body);
        pc1.set_remote_description(RTCSessionDescription::answer(reply.body).unwrap()).await.unwrap();
        eventually("the cached frames", || received1.frames.load(Ordering::Relaxed) >= 3).await;
        drop(duomo);
        eventually("the session to end", || state.sessions().is_empty()).await;

        // The viewer goes away without DELETE: the session notices and unsubscribes.
        let (pc2, offer, _, received2) = viewer().await;
        let reply = http(addr, "POST", "/whep/torrazzo", Some("application/sdp"), offer.as_bytes()).await;
        assert_eq!(reply.status, 201, "{}", reply.body);
        pc2.set_remote_description(RTCSessionDescription::answer(reply.body).unwrap()).await.unwrap();
        eventually("the cached frames", || received2.frames.load(Ordering::Relaxed) >= 3).await;
        assert_eq!(*torrazzo_subscribers.borrow(), 1);
        pc2.close().await.unwrap();
        let deadline = Instant::now() + Duration::from_secs(40);
        while *torrazzo_subscribers.borrow() != 0 {
            assert!(Instant::now() < deadline, "session outlived its viewer");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(state.sessions().len(), 0);
        let _ = pc1.close().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sessions_beyond_the_limit_are_refused() {
        let source = fake(vec![entry("duomo", Codec::H264)]);
        let writer = publish(&source.hub, "duomo");
        push_frame(&writer, 0);
        let settings = WhepSettings { max_sessions: 1, ..test_settings() };
        let (addr, state) = serve(source, settings).await;
        let (pc1, offer1, _, _) = viewer().await;
        let (pc2, offer2, _, _) = viewer().await;
        let first = http(addr, "POST", "/whep/duomo", Some("application/sdp"), offer1.as_bytes()).await;
        assert_eq!(first.status, 201, "{}", first.body);
        let second = http(addr, "POST", "/whep/duomo", Some("application/sdp"), offer2.as_bytes()).await;
        assert_eq!(second.status, 503, "{}", second.body);
        assert!(second.body.contains("limit"), "{}", second.body);
        assert_eq!(state.sessions().len(), 1);
        let _ = pc1.close().await;
        let _ = pc2.close().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn viewers_per_camera_are_limited_and_counted() {
        let source = fake(vec![entry("duomo", Codec::H264), entry("po", Codec::H264)]);
        let duomo = publish(&source.hub, "duomo");
        let po = publish(&source.hub, "po");
        push_frame(&duomo, 0);
        push_frame(&po, 0);
        let settings = WhepSettings { max_per_camera: 1, ..test_settings() };
        let (addr, state) = serve(source, settings).await;
        let (pc1, offer1, _, _) = viewer().await;
        let (pc2, offer2, _, _) = viewer().await;
        let (pc3, offer3, _, _) = viewer().await;
        let first = http(addr, "POST", "/whep/duomo", Some("application/sdp"), offer1.as_bytes()).await;
        assert_eq!(first.status, 201, "{}", first.body);
        let second = http(addr, "POST", "/whep/duomo", Some("application/sdp"), offer2.as_bytes()).await;
        assert_eq!(second.status, 503, "{}", second.body);
        assert!(second.body.contains("`whep.max_per_camera`"), "names the key: {}", second.body);
        let other = http(addr, "POST", "/whep/po", Some("application/sdp"), offer3.as_bytes()).await;
        assert_eq!(other.status, 201, "another camera is not limited: {}", other.body);
        assert_eq!(state.refusals().get("whep.max_per_camera"), Some(&1));
        for pc in [pc1, pc2, pc3] {
            let _ = pc.close().await;
        }
    }

    #[tokio::test]
    async fn offers_per_client_per_minute_are_limited_with_429() {
        let source = fake(vec![entry("duomo", Codec::H264)]);
        let settings = WhepSettings { offers_per_minute: 2, ..test_settings() };
        let (addr, state) = serve(source, settings).await;
        let mut statuses = Vec::new();
        for _ in 0..4 {
            statuses.push(http(addr, "POST", "/whep/duomo", Some("application/sdp"), b"not sdp").await);
        }
        let codes: Vec<u16> = statuses.iter().map(|r| r.status).collect();
        assert_eq!(codes, [400, 400, 429, 429], "two offers a minute, then 429");
        assert!(statuses[2].body.contains("`whep.offers_per_minute`"), "{}", statuses[2].body);
        assert_eq!(state.refusals().get("whep.offers_per_minute"), Some(&2));
    }

    // ---- local accounts ------------------------------------------------------

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn accounts_narrow_the_catalog_and_guard_every_route() {
        use crate::auth::{Accounts, AuthSettings, TokenConfig, ViewerConfig};
        let mut zaist = entry("zaist", Codec::H264);
        zaist.zone = "Zaist".into();
        let source = fake(vec![entry("duomo", Codec::H264), zaist]);
        let writer = publish(&source.hub, "duomo");
        for n in 0..5 {
            push_frame(&writer, n);
        }
        let (token, token_sha256) = crate::auth::new_token();
        let accounts = Accounts::from_config(
            &[ViewerConfig {
                user: "anna".into(),
                password_hash: crate::auth::hash_password("correct horse").unwrap(),
                cameras: Some(vec!["zone:centro".into()]),
                max_quality: None,
                rtsp_digest_ha1: None,
                ptz: false,
            }],
            &[TokenConfig {
                name: "vms".into(),
                token_sha256,
                cameras: Some(vec!["camera:duomo".into(), "camera:zaist".into()]),
                max_quality: Some(Quality::Sub),
                ptz: false,
            }],
        )
        .unwrap();
        let dir = std::env::temp_dir().join(format!("ponte-whep-accounts-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let audit_path = dir.join("relay-audit.log");
        let audit = Arc::new(RelayAudit::open(&audit_path, "carabinieri-cremona", 1 << 20).unwrap());
        let settings =
            AuthSettings { failed_login_delay: Duration::from_millis(10), ..AuthSettings::default() };
        let auth = Arc::new(Auth::new(accounts, audit.clone(), settings));
        let state =
            Arc::new(WhepState::with_source(Arc::new(source), test_settings()).with_access(auth, audit));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = router(state.clone()).into_make_service_with_connect_info::<SocketAddr>();
        tokio::spawn(async move { axum::serve(listener, app).await });
        let sdp = ("Content-Type", "application/sdp");
        let offer = CHROME_OFFER.as_bytes();

        // Nobody: the page (with its form) but nothing else.
        assert_eq!(http(addr, "GET", "/", None, b"").await.status, 200);
        let reply = http(addr, "GET", "/api/catalog", None, b"").await;
        assert_eq!(reply.status, 401, "{}", reply.body);
        assert!(reply.headers["www-authenticate"].starts_with("Bearer"));
        assert_eq!(http_with(addr, "POST", "/whep/duomo", &[sdp], offer).await.status, 401);
        assert_eq!(http(addr, "DELETE", "/whep/session/0123", None, b"").await.status, 401);
        let bogus = ("Cookie", "ponte_session=00ff");
        let reply = http_with(addr, "GET", "/api/catalog", &[bogus], b"").await;
        assert_eq!(reply.status, 401);
        assert!(reply.body.contains("log in again"), "{}", reply.body);

        // Login through the form.
        let form = ("Content-Type", "application/x-www-form-urlencoded");
        let reply = http_with(addr, "POST", "/login", &[form], b"user=anna&password=wrong").await;
        assert_eq!(reply.status, 401, "{}", reply.body);
        assert!(!reply.headers.contains_key("set-cookie"));
        let reply = http_with(addr, "POST", "/login", &[form], b"user=anna&password=correct+horse").await;
        assert_eq!(reply.status, 204, "{}", reply.body);
        let set_cookie = reply.headers["set-cookie"].clone();
        for attr in ["HttpOnly", "SameSite=Strict", "Path=/"] {
            assert!(set_cookie.contains(attr), "{set_cookie}");
        }
        let cookie_value = set_cookie.split(';').next().unwrap().to_owned();
        assert_eq!(cookie_value.len(), "ponte_session=".len() + 64, "{cookie_value}");
        let cookie = ("Cookie", cookie_value.as_str());
        // Anna in a second browser: the same account, another login.
        let reply = http_with(addr, "POST", "/login", &[form], b"user=anna&password=correct+horse").await;
        let other_browser = reply.headers["set-cookie"].split(';').next().unwrap().to_owned();
        assert_ne!(other_browser, cookie_value);

        // Anna sees the Centro zone only; Zaist is answered like a camera that does not exist.
        let reply = http_with(addr, "GET", "/api/catalog", &[cookie], b"").await;
        assert_eq!(reply.status, 200, "{}", reply.body);
        let json: serde_json::Value = serde_json::from_str(&reply.body).unwrap();
        assert_eq!(json["viewer"], "anna");
        let ids: Vec<&str> =
            json["cameras"].as_array().unwrap().iter().map(|c| c["id"].as_str().unwrap()).collect();
        assert_eq!(ids, ["duomo"]);
        let hidden = http_with(addr, "POST", "/whep/zaist", &[cookie, sdp], offer).await;
        let missing = http_with(addr, "POST", "/whep/nowhere", &[cookie, sdp], offer).await;
        assert_eq!((hidden.status, missing.status), (404, 404), "{} / {}", hidden.body, missing.body);
        assert_eq!(
            hidden.body.replace("zaist", "X"),
            missing.body.replace("nowhere", "X"),
            "indistinguishable"
        );

        // The VMS token: two cameras, substream only.
        let bearer = format!("Bearer {token}");
        let auth_header = ("Authorization", bearer.as_str());
        let reply = http_with(addr, "GET", "/api/catalog", &[auth_header], b"").await;
        let json: serde_json::Value = serde_json::from_str(&reply.body).unwrap();
        assert_eq!(json["viewer"], "vms");
        assert_eq!(json["cameras"].as_array().unwrap().len(), 2);
        assert_eq!(json["cameras"][0]["qualities"], serde_json::json!(["sub"]));
        let reply = http_with(addr, "POST", "/whep/duomo", &[auth_header, sdp], offer).await;
        assert_eq!(reply.status, 403, "{}", reply.body);
        assert!(reply.body.contains("`sub` quality only"), "{}", reply.body);
        let wrong = ("Authorization", "Bearer 0000");
        assert_eq!(http_with(addr, "GET", "/api/catalog", &[wrong], b"").await.status, 401);

        // Anna watches; only she may end her session.
        let (pc, offer, _, received) = viewer().await;
        let reply = http_with(addr, "POST", "/whep/duomo", &[cookie, sdp], offer.as_bytes()).await;
        assert_eq!(reply.status, 201, "{}", reply.body);
        let location = reply.headers["location"].clone();
        pc.set_remote_description(RTCSessionDescription::answer(reply.body).unwrap()).await.unwrap();
        eventually("the cached frames", || received.frames.load(Ordering::Relaxed) >= 3).await;
        assert_eq!(state.sessions()[0].viewer.as_deref(), Some("anna"));
        assert_eq!(state.sessions()[0].id.len(), 8, "status never shows a whole session id");
        assert!(location.rsplit('/').next().unwrap().starts_with(&state.sessions()[0].id));
        assert_eq!(http_with(addr, "DELETE", &location, &[auth_header], b"").await.status, 404);
        assert_eq!(state.sessions().len(), 1, "the VMS cannot end anna's session");
        let other = ("Cookie", other_browser.as_str());
        assert_eq!(http_with(addr, "DELETE", &location, &[other], b"").await.status, 404);
        assert_eq!(state.sessions().len(), 1, "nor can anna's other browser");
        assert_eq!(http_with(addr, "DELETE", &location, &[cookie], b"").await.status, 200);
        eventually("view-stop in the audit log", || {
            std::fs::read_to_string(&audit_path).is_ok_and(|t| t.contains("view-stop"))
        })
        .await;
        assert!(state.sessions().is_empty());
        let _ = pc.close().await;

        // Logout ends the browser session.
        assert_eq!(http_with(addr, "POST", "/logout", &[cookie], b"").await.status, 204);
        assert_eq!(http_with(addr, "GET", "/api/catalog", &[cookie], b"").await.status, 401);

        // Every decision is in the audit log, which verifies.
        let text = std::fs::read_to_string(&audit_path).unwrap();
        let lines: Vec<serde_json::Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        let summary: Vec<String> = lines
            .iter()
            .map(|l| {
                format!("{} {} {} {}", l["action"], l["outcome"], l["viewer"], l["camera"]).replace('"', "")
            })
            .collect();
        assert_eq!(
            summary,
            [
                "login failed anna null",
                "login ok anna null",
                "login ok anna null",
                "refused unknown anna zaist",
                "refused unknown anna nowhere",
                "refused forbidden vms duomo",
                "login failed ? null",
                "view-start allowed anna duomo",
                "view-stop ended anna duomo",
                "logout ok anna null",
            ],
            "{text}"
        );
        assert!(!text.contains("correct horse") && !text.contains(&token), "no secrets in the audit log");
        let stop = &lines[8];
        assert_eq!(stop["session"], lines[7]["session"]);
        assert!(stop["duration_ms"].as_u64().unwrap() > 0, "{stop}");
        assert_eq!(ponte_proto::audit::verify(&[audit_path]), Ok(lines.len()));
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// One account cannot take every slot: `whep.max_per_viewer` refuses
    /// its next stream (503 naming the key, audited); another account plays.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn streams_per_account_are_limited() {
        use crate::auth::{Accounts, AuthSettings, TokenConfig};
        let source = fake(vec![entry("duomo", Codec::H264)]);
        let writer = publish(&source.hub, "duomo");
        push_frame(&writer, 0);
        let (one, one_sha256) = crate::auth::new_token();
        let (two, two_sha256) = crate::auth::new_token();
        let token = |name: &str, token_sha256: String| TokenConfig {
            name: name.into(),
            token_sha256,
            cameras: None,
            max_quality: None,
            ptz: false,
        };
        let accounts =
            Accounts::from_config(&[], &[token("wall", one_sha256), token("vms", two_sha256)]).unwrap();
        let audit = Arc::new(RelayAudit::disabled("carabinieri"));
        let auth = Arc::new(Auth::new(accounts, audit.clone(), AuthSettings::default()));
        let settings = WhepSettings { max_per_viewer: 1, ..test_settings() };
        let state = Arc::new(WhepState::with_source(Arc::new(source), settings).with_access(auth, audit));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = router(state.clone()).into_make_service_with_connect_info::<SocketAddr>();
        tokio::spawn(async move { axum::serve(listener, app).await });
        let sdp = ("Content-Type", "application/sdp");
        let (wall, vms) = (format!("Bearer {one}"), format!("Bearer {two}"));
        let (pc1, offer1, _, _) = viewer().await;
        let (pc2, offer2, _, _) = viewer().await;
        let (pc3, offer3, _, _) = viewer().await;
        let first =
            http_with(addr, "POST", "/whep/duomo", &[("Authorization", &wall), sdp], offer1.as_bytes()).await;
        assert_eq!(first.status, 201, "{}", first.body);
        let second =
            http_with(addr, "POST", "/whep/duomo", &[("Authorization", &wall), sdp], offer2.as_bytes()).await;
        assert_eq!(second.status, 503, "{}", second.body);
        assert!(
            second.body.contains("`whep.max_per_viewer`") && second.body.contains("`wall`"),
            "{}",
            second.body
        );
        let other =
            http_with(addr, "POST", "/whep/duomo", &[("Authorization", &vms), sdp], offer3.as_bytes()).await;
        assert_eq!(other.status, 201, "another account still plays: {}", other.body);
        assert_eq!(state.refusals().get("whep.max_per_viewer"), Some(&1));
        for pc in [pc1, pc2, pc3] {
            let _ = pc.close().await;
        }
    }
}
