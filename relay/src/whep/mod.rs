//! WHEP egress (draft-ietf-wish-whep): a browser POSTs an SDP offer for a
//! camera and gets an answer with one send-only H.264 or H.265 track fed
//! from the hub, passed through without transcoding. Which stream a
//! browser gets is [`codec_choice`]'s: H.265 where the browser decodes it,
//! else the camera's H.264 substream (its own, or the agent's transcode),
//! said in the `X-Ponte-Stream` response header
//! (`sub; codec=h264; transcoded; reason=browser-lacks-h265`), else a 415
//! naming the relay's RTSP URL of the camera. The catalog, live-state and viewer-page
//! routes beside it are in [`crate::web`], which serves them together.
//!
//! Routes:
//! - `POST /whep/{camera}[?quality=main|sub]`, body `application/sdp` →
//!   `201 Created`, SDP answer, `Location: /whep/session/{id}`
//! - `GET /whep/session/{id}` → `200` while live, with JSON: the camera, its
//!   track state (live, or paused/upstream lost with the reason) and the
//!   capture clock (RTP timestamp ↔ capture time, see [`clock`]); `410` with
//!   the reason once the relay ended it
//! - `DELETE /whep/session/{id}` → `200 OK`, session torn down
//!
//! On a relay with accounts every route needs a viewer (session cookie or
//! bearer token, see [`crate::auth`]): 401 without. A camera outside the
//! viewer's set is answered 404, exactly as one the site does not have, so a
//! narrowed account learns nothing about the rest of the site (the audit log
//! keeps the real reason). A quality above the viewer's cap is 403. A
//! session can be deleted only by its own viewer (404 for anyone else).
//!
//! A session holds its hub reader only as long as its peer connection lives:
//! it ends on DELETE, on a failed/closed connection, on a disconnection that
//! does not recover, or when the track ends; the reader is dropped then, so
//! upstream can unsubscribe.
//!
//! - [`source`]: what WHEP and RTSP need from the upstream side;
//! - [`http`]: the handlers, the offer cut into admit → first frame → register;
//! - [`offer`]: the pure SDP check;
//! - [`codec_choice`]: which stream and codec a browser gets;
//! - [`peer`]: the peer connection, the only file that speaks webrtc-rs;
//! - [`session`]: the task that pumps a camera through the egress gate to a peer.

pub mod clock;
mod codec_choice;
pub(crate) mod http;
mod offer;
mod peer;
mod session;
mod source;
#[cfg(test)]
mod tests;

pub(crate) use http::{quality_param, QualityQuery, Reject};
/// The SDP check an offer passes before webrtc-rs sees it (public for the
/// fuzz target `ponte_fuzz::targets::whep_offer`).
pub use offer::{check_offer, OfferError};
pub use source::CameraSource;

use crate::audit::RelayAudit;
use crate::auth::{self, Auth, Viewer};
use crate::media_ports::{PortLease, PortPool, PortRange};
use crate::upstream::Upstreams;
use axum::http::StatusCode;
use axum::routing::{delete, post};
use axum::Router;
use ponte_proto::media::Quality;
use serde::Serialize;
use session::End;
use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::{oneshot, Semaphore};
use tokio::time::Instant;
use tracing::{info, warn};

/// Largest SDP offer accepted; browsers send a few KiB.
pub const MAX_OFFER_BYTES: usize = 64 * 1024;

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
    /// The relay's RTSP port (`rtsp.listen`), named in the refusal of a
    /// stream a browser cannot decode; `None` without `[rtsp]`.
    pub rtsp_port: Option<u16>,
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
            rtsp_port: None,
        }
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
    /// The session's capture clock (see [`clock`]).
    clock: Arc<clock::CaptureClock>,
    /// A playback of the recording from this time (Unix ms), not live.
    playback: Option<u64>,
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

    /// The camera source it serves.
    pub(crate) fn source(&self) -> &dyn CameraSource {
        &*self.source
    }

    /// The relay's viewer accounts and sessions.
    /// Where views (and the console's snapshots) are audited.
    pub(crate) fn audit(&self) -> &Arc<RelayAudit> {
        &self.audit
    }

    pub(crate) fn auth(&self) -> &Arc<Auth> {
        &self.auth
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

/// The WHEP routes, for [`crate::web::router`] to serve behind its viewer check.
pub(crate) fn routes() -> Router<Arc<WhepState>> {
    Router::new()
        .route("/whep/{camera}", post(http::offer))
        .route("/whep/session/{id}", delete(http::end_session).get(http::session_state))
}
