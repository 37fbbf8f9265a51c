//! PTZ control for the relay's viewers: `POST /api/ptz/{camera}` takes a
//! [`PtzCommand`] and answers a [`PtzReply`] with its HTTP status;
//! `GET /api/ptz/{camera}` says whether the viewer may steer the camera,
//! who holds its lock and which presets it has.
//!
//! The relay checks its own side: the account's `ptz` right, and the site's
//! right on the camera (the catalog's `ptz`, which the agent sets from the
//! site policy): a viewer only narrows what the site may do. It rate-limits
//! each viewer, forwards the rest up the control stream with the account as
//! `viewer`, and audits every command, refused or not. The agent checks the
//! site's policy again and arbitrates the lock.

use crate::audit::RelayAudit;
use crate::auth::{self, Auth, Viewer};
use crate::upstream::{Upstreams, PTZ_TIMEOUT};
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Extension, Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use futures_util::future::BoxFuture;
use ponte_proto::ptz::{PtzCommand, PtzErrorCode, PtzHolder, PtzPreset, PtzReply};
use ponte_proto::wire::CatalogEntry;
use serde::Serialize;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tracing::{debug, info, warn};

/// Largest command body accepted (a command is a few dozen bytes).
const MAX_BODY: usize = 4096;

/// A viewer's command for a camera, as the API hands it upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PtzRequest<'a> {
    /// Camera id.
    pub camera: &'a str,
    /// Account name (`anonymous` on a relay without accounts).
    pub viewer: &'a str,
    /// The command.
    pub command: PtzCommand,
    /// How long to wait for the agent's answer.
    pub wait: Duration,
}

/// What the PTZ API needs from the upstream side; implemented by
/// [`Upstreams`], and by fakes in tests.
pub trait PtzUpstream: Send + Sync + 'static {
    /// Name of this relay's site.
    fn site(&self) -> String;
    /// Cameras this site may see, with the site's PTZ right on each.
    fn catalog(&self) -> Vec<CatalogEntry>;
    /// Sends a viewer's command up and waits at most its `wait` for the answer.
    fn command<'a>(&'a self, request: PtzRequest<'a>) -> BoxFuture<'a, PtzReply>;
    /// The camera's lock holder as last reported upstream.
    fn holder(&self, camera: &str) -> Option<PtzHolder>;
}

impl PtzUpstream for Upstreams {
    fn site(&self) -> String {
        Upstreams::site(self).to_owned()
    }

    fn catalog(&self) -> Vec<CatalogEntry> {
        Upstreams::catalog(self)
    }

    fn command<'a>(&'a self, r: PtzRequest<'a>) -> BoxFuture<'a, PtzReply> {
        Box::pin(self.ptz(r.camera, r.viewer, r.command, r.wait))
    }

    fn holder(&self, camera: &str) -> Option<PtzHolder> {
        self.ptz_holder(camera)
    }
}

/// Tunables of the PTZ API.
#[derive(Debug, Clone)]
pub struct PtzSettings {
    /// Commands a viewer may send at once ...
    pub burst: u32,
    /// ... then one per this interval (a held button sends one per 500 ms).
    pub interval: Duration,
    /// How long a camera's preset list is reused.
    pub presets_ttl: Duration,
    /// How long a failed preset fetch is remembered (the list is empty meanwhile).
    pub presets_error_ttl: Duration,
    /// How long `GET` waits for the preset list.
    pub presets_timeout: Duration,
    /// How long a command waits for the agent.
    pub command_timeout: Duration,
}

impl Default for PtzSettings {
    fn default() -> Self {
        Self {
            burst: 20,
            interval: Duration::from_millis(100),
            presets_ttl: Duration::from_secs(30),
            presets_error_ttl: Duration::from_secs(5),
            presets_timeout: Duration::from_secs(3),
            command_timeout: PTZ_TIMEOUT,
        }
    }
}

/// Per-viewer command rate: `burst` at once, then one per `interval` (a
/// GCRA). Sans-IO: time is passed in.
pub struct CommandRate {
    /// Per viewer: when its charged commands will have drained.
    viewers: HashMap<String, Instant>,
    burst: u32,
    interval: Duration,
}

impl CommandRate {
    /// A limiter allowing `burst` commands at once, then one per `interval`.
    pub fn new(burst: u32, interval: Duration) -> Self {
        Self { viewers: HashMap::new(), burst: burst.max(1), interval }
    }

    /// Charges a command by `viewer`, or says how long it must wait.
    pub fn allow(&mut self, viewer: &str, now: Instant) -> Result<(), Duration> {
        let tolerance = self.interval * (self.burst - 1);
        let drained = self.viewers.get(viewer).copied().unwrap_or(now).max(now);
        let allowed_at = drained.checked_sub(tolerance).unwrap_or(now);
        if allowed_at > now {
            return Err(allowed_at - now);
        }
        // Names come from the config, so the table stays small; still, forget the idle.
        if self.viewers.len() >= 1024 {
            self.viewers.retain(|_, d| *d > now);
        }
        self.viewers.insert(viewer.to_owned(), drained + self.interval);
        Ok(())
    }
}

struct CachedPresets {
    presets: Vec<PtzPreset>,
    until: Instant,
}

/// Shared state of the PTZ API.
pub struct PtzState {
    upstream: Arc<dyn PtzUpstream>,
    auth: Arc<Auth>,
    audit: Arc<RelayAudit>,
    settings: PtzSettings,
    rate: Mutex<CommandRate>,
    presets: Mutex<HashMap<String, CachedPresets>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Each table stays consistent even if a holder panicked.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl PtzState {
    /// The PTZ API over `upstream`, for the viewers of `auth`, auditing to `audit`.
    pub fn new(
        upstream: Arc<dyn PtzUpstream>,
        auth: Arc<Auth>,
        audit: Arc<RelayAudit>,
        settings: PtzSettings,
    ) -> Self {
        let rate = Mutex::new(CommandRate::new(settings.burst, settings.interval));
        Self { upstream, auth, audit, settings, rate, presets: Mutex::new(HashMap::new()) }
    }

    /// The camera's presets: cached, else fetched upstream (empty on error).
    async fn presets(&self, camera: &str, viewer: &str) -> Vec<PtzPreset> {
        let now = Instant::now();
        if let Some(c) = lock(&self.presets).get(camera).filter(|c| c.until > now) {
            return c.presets.clone();
        }
        let wait = self.settings.presets_timeout;
        let reply =
            self.upstream.command(PtzRequest { camera, viewer, command: PtzCommand::Presets, wait }).await;
        let (presets, ttl) = match reply {
            PtzReply::Done { presets, .. } => (presets, self.settings.presets_ttl),
            PtzReply::Refused { code, reason, .. } => {
                debug!(camera, code = code.name(), %reason, "PTZ: presets not available");
                (Vec::new(), self.settings.presets_error_ttl)
            }
        };
        self.remember_presets(camera, presets.clone(), ttl);
        presets
    }

    fn remember_presets(&self, camera: &str, presets: Vec<PtzPreset>, ttl: Duration) {
        let mut cache = lock(&self.presets);
        let now = Instant::now();
        if cache.len() >= 1024 {
            cache.retain(|_, c| c.until > now);
        }
        cache.insert(camera.to_owned(), CachedPresets { presets, until: now + ttl });
    }
}

/// `GET` and `POST /api/ptz/{camera}`, behind the viewer login.
pub fn router(state: Arc<PtzState>) -> Router {
    let need_viewer = axum::middleware::from_fn_with_state(state.auth.clone(), auth::require_viewer);
    Router::new()
        .route("/api/ptz/{camera}", get(describe).post(command))
        .route_layer(need_viewer)
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(state)
}

/// The body of `GET /api/ptz/{camera}`.
#[derive(Debug, Serialize)]
struct PtzView {
    /// Whether this viewer may steer the camera (account and site rights).
    may_steer: bool,
    /// Who holds the lock; null when free or unknown (and for viewers who may not steer).
    holder: Option<PtzHolder>,
    /// The camera's presets; empty when unknown.
    presets: Vec<PtzPreset>,
}

fn reply(status: StatusCode, body: &PtzReply) -> Response {
    let mut resp = (status, Json(body)).into_response();
    resp.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

fn status_of(r: &PtzReply) -> StatusCode {
    StatusCode::from_u16(r.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

/// The camera if it is in the site's catalog and in the viewer's set.
fn visible(state: &PtzState, viewer: &Viewer, camera: &str) -> Option<CatalogEntry> {
    state.upstream.catalog().into_iter().find(|c| c.id == camera && viewer.may_see(c))
}

fn not_in_catalog(viewer: &Viewer, camera: &str) -> PtzReply {
    let whose = match viewer.audit_name() {
        Some(name) => format!("viewer `{name}`"),
        None => "this site".to_owned(),
    };
    PtzReply::refused(
        PtzErrorCode::Unknown,
        format!("camera `{camera}` is not in the catalog of {whose}; pick a camera listed at /api/catalog"),
    )
}

async fn describe(
    State(state): State<Arc<PtzState>>,
    Extension(viewer): Extension<Viewer>,
    Path(camera): Path<String>,
) -> Response {
    let Some(entry) = visible(&state, &viewer, &camera) else {
        let r = not_in_catalog(&viewer, &camera);
        return reply(status_of(&r), &r);
    };
    let may_steer = viewer.may_steer(&entry);
    // Who holds a camera and its presets are for those who may steer it.
    let view = if may_steer {
        PtzView {
            may_steer,
            holder: state.upstream.holder(&camera),
            presets: state.presets(&camera, viewer.name()).await,
        }
    } else {
        PtzView { may_steer, holder: None, presets: Vec::new() }
    };
    let mut resp = Json(view).into_response();
    resp.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// The command as the audit line names it.
fn describe_command(c: &PtzCommand) -> String {
    match c {
        PtzCommand::Move { pan, tilt, zoom } => format!("move pan={pan} tilt={tilt} zoom={zoom}"),
        PtzCommand::GotoPreset { preset } => format!("goto_preset {preset:?}"),
        other => other.name().to_owned(),
    }
}

fn is_json(headers: &HeaderMap) -> bool {
    ponte_proto::ptz::is_json_content_type(headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()))
}

async fn command(
    State(state): State<Arc<PtzState>>,
    Extension(viewer): Extension<Viewer>,
    Path(camera): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let who = viewer.audit_name();
    if let Err(wait) = lock(&state.rate).allow(viewer.name(), Instant::now()) {
        // A flood is not audited line by line: the limit is what stops it.
        debug!(camera = %camera, viewer = viewer.name(), "PTZ: command refused, viewer over its rate");
        let per_sec = 1.0 / state.settings.interval.as_secs_f64().max(1e-3);
        let r = PtzReply::refused(
            PtzErrorCode::Unavailable,
            format!(
                "camera `{camera}`: viewer `{}` sends PTZ commands faster than {per_sec:.0} a second; \
                 slow down (a held button sends one every 500 ms)",
                viewer.name()
            ),
        );
        let mut resp = reply(StatusCode::TOO_MANY_REQUESTS, &r);
        let secs = wait.as_secs() + 1;
        if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
            resp.headers_mut().insert(header::RETRY_AFTER, v);
        }
        return resp;
    }
    let json = is_json(&headers);
    let parsed: Result<PtzCommand, String> = serde_json::from_slice::<PtzCommand>(&body)
        .map_err(|e| {
            format!("the body is not a PTZ command ({e}); send e.g. {{\"op\":\"move\",\"pan\":500}}")
        })
        .and_then(|c| c.validate().map(|()| c));
    let what = match &parsed {
        Ok(c) => describe_command(c),
        Err(_) => "?".to_owned(),
    };
    let refuse = |code: PtzErrorCode, reason: String, audited: String| {
        info!(camera = %camera, viewer = viewer.name(), command = %what, code = code.name(), "PTZ: refused by the relay: {audited}");
        state.audit.ptz(who, &camera, code.name(), &format!("{what}: relay: {audited}"));
        let r = PtzReply::refused(code, reason);
        reply(status_of(&r), &r)
    };
    let Some(entry) = visible(&state, &viewer, &camera) else {
        let r = not_in_catalog(&viewer, &camera);
        let PtzReply::Refused { reason, .. } = &r else { return reply(status_of(&r), &r) };
        // Told like an unknown camera; the audit keeps the real reason.
        let real = if state.upstream.catalog().iter().any(|c| c.id == camera) {
            format!("camera `{camera}` is outside the cameras of viewer `{}`", viewer.name())
        } else {
            format!("camera `{camera}` is not in the catalog of site `{}`", state.upstream.site())
        };
        return refuse(PtzErrorCode::Unknown, reason.clone(), real);
    };
    if !viewer.has_ptz_right() {
        let reason = match who {
            Some(name) => format!(
                "viewer `{name}` has no PTZ right on this relay; ask its administrator for `ptz = true` in its account"
            ),
            None => "this relay has no accounts, and only an account with `ptz = true` may steer cameras".to_owned(),
        };
        return refuse(PtzErrorCode::Forbidden, reason.clone(), reason);
    }
    if !entry.ptz {
        let reason = format!(
            "site `{}` has no PTZ right on camera `{camera}` (it is not a PTZ camera, or the master room's \
             policy does not let this site steer it)",
            state.upstream.site()
        );
        return refuse(PtzErrorCode::Forbidden, reason.clone(), reason);
    }
    if !json {
        let reason = format!("camera `{camera}`: send the command with Content-Type: application/json");
        let mut resp = refuse(PtzErrorCode::Invalid, reason.clone(), reason);
        *resp.status_mut() = StatusCode::UNSUPPORTED_MEDIA_TYPE;
        return resp;
    }
    let cmd = match parsed {
        Ok(c) => c,
        Err(e) => {
            let reason = format!("camera `{camera}`: {e}");
            return refuse(PtzErrorCode::Invalid, reason.clone(), reason);
        }
    };
    let is_presets = cmd == PtzCommand::Presets;
    let wait = state.settings.command_timeout;
    let r = state
        .upstream
        .command(PtzRequest { camera: &camera, viewer: viewer.name(), command: cmd, wait })
        .await;
    match &r {
        PtzReply::Done { presets, .. } => {
            debug!(camera = %camera, viewer = viewer.name(), command = %what, "PTZ command done");
            state.audit.ptz(who, &camera, "done", &what);
            if is_presets {
                state.remember_presets(&camera, presets.clone(), state.settings.presets_ttl);
            }
        }
        PtzReply::Refused { code, reason, .. } => {
            let level_warn =
                matches!(code, PtzErrorCode::CameraError | PtzErrorCode::Timeout | PtzErrorCode::Unavailable);
            if level_warn {
                warn!(camera = %camera, viewer = viewer.name(), command = %what, code = code.name(), %reason, "PTZ command failed");
            } else {
                info!(camera = %camera, viewer = viewer.name(), command = %what, code = code.name(), %reason, "PTZ command refused upstream");
            }
            state.audit.ptz(who, &camera, code.name(), &format!("{what}: {reason}"));
        }
    }
    reply(status_of(&r), &r)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::{Accounts, AuthSettings, TokenConfig};
    use ponte_proto::media::{Codec, Quality};
    use ponte_proto::ptz::Controller;
    use std::net::SocketAddr;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Answers every command with `answer`, recording what it was asked.
    struct FakeUpstream {
        catalog: Vec<CatalogEntry>,
        answer: Mutex<PtzReply>,
        asked: Mutex<Vec<(String, String, PtzCommand)>>,
    }

    impl PtzUpstream for FakeUpstream {
        fn site(&self) -> String {
            "carabinieri".into()
        }

        fn catalog(&self) -> Vec<CatalogEntry> {
            self.catalog.clone()
        }

        fn command<'a>(&'a self, r: PtzRequest<'a>) -> BoxFuture<'a, PtzReply> {
            lock(&self.asked).push((r.camera.to_owned(), r.viewer.to_owned(), r.command.clone()));
            let answer = match r.command {
                PtzCommand::Presets => PtzReply::Done {
                    holder: None,
                    presets: vec![PtzPreset { token: "1".into(), name: "Ingresso".into() }],
                    position: None,
                },
                _ => lock(&self.answer).clone(),
            };
            Box::pin(async move { answer })
        }

        fn holder(&self, _camera: &str) -> Option<PtzHolder> {
            Some(holder("bruno", "questura"))
        }
    }

    fn holder(viewer: &str, site: &str) -> PtzHolder {
        PtzHolder {
            controller: Controller { site: site.into(), viewer: viewer.into(), priority: 10 },
            expires_in_ms: 15_000,
        }
    }

    fn cam(id: &str, zone: &str, ptz: bool) -> CatalogEntry {
        CatalogEntry {
            id: id.into(),
            device: id.into(),
            lens: 1,
            name: id.into(),
            zone: zone.into(),
            kind: "dome-ptz".into(),
            codec: Codec::H264,
            qualities: vec![Quality::Main],
            ptz,
            always_on: false,
            sub_codec: None,
            sub_transcoded: false,
            tags: Vec::new(),
            dual_path: false,
        }
    }

    fn token(name: &str, cameras: Option<&[&str]>, ptz: bool) -> (String, TokenConfig) {
        let (token, token_sha256) = crate::auth::new_token();
        let cameras = cameras.map(|c| c.iter().map(|s| s.to_string()).collect());
        (token, TokenConfig { name: name.into(), token_sha256, cameras, max_quality: None, ptz })
    }

    struct Harness {
        addr: SocketAddr,
        upstream: Arc<FakeUpstream>,
        audit_path: std::path::PathBuf,
        tokens: HashMap<&'static str, String>,
    }

    async fn harness(tag: &str, settings: PtzSettings) -> Harness {
        let upstream = Arc::new(FakeUpstream {
            catalog: vec![cam("zaist", "Zaist", true), cam("duomo", "Centro", false), cam("po", "Po", true)],
            answer: Mutex::new(PtzReply::Done {
                holder: Some(holder("anna", "carabinieri")),
                presets: vec![],
                position: None,
            }),
            asked: Mutex::new(Vec::new()),
        });
        let mut tokens = HashMap::new();
        let mut configs = Vec::new();
        for (name, cameras, ptz) in [
            ("anna", Some(&["zone:Zaist", "zone:Centro"][..]), true),
            ("carlo", None, false),
            ("flood", None, true),
        ] {
            let (t, cfg) = token(name, cameras, ptz);
            tokens.insert(name, t);
            configs.push(cfg);
        }
        let dir = std::env::temp_dir().join(format!("ponte-ptz-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let audit_path = dir.join("relay-audit.log");
        let audit = Arc::new(RelayAudit::open(&audit_path, "carabinieri", 1 << 20).unwrap());
        let accounts = Accounts::from_config(&[], &configs).unwrap();
        let auth = Arc::new(Auth::new(accounts, audit.clone(), AuthSettings::default()));
        let state = Arc::new(PtzState::new(upstream.clone(), auth, audit, settings));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = router(state).into_make_service_with_connect_info::<SocketAddr>();
        tokio::spawn(async move { axum::serve(listener, app).await });
        Harness { addr, upstream, audit_path, tokens }
    }

    /// One HTTP/1.1 request per connection: status and body.
    async fn http(h: &Harness, method: &str, path: &str, who: Option<&str>, body: &str) -> (u16, String) {
        http_as(h, method, path, who, "application/json", body).await
    }

    async fn http_as(
        h: &Harness,
        method: &str,
        path: &str,
        who: Option<&str>,
        content_type: &str,
        body: &str,
    ) -> (u16, String) {
        let mut conn = tokio::net::TcpStream::connect(h.addr).await.unwrap();
        let mut req = format!(
            "{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n",
            body.len()
        );
        if let Some(who) = who {
            req.push_str(&format!("Authorization: Bearer {}\r\n", h.tokens[who]));
        }
        req.push_str("\r\n");
        req.push_str(body);
        conn.write_all(req.as_bytes()).await.unwrap();
        let mut raw = Vec::new();
        conn.read_to_end(&mut raw).await.unwrap();
        let text = String::from_utf8_lossy(&raw).into_owned();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        let status = head.split(' ').nth(1).unwrap().parse().unwrap();
        (status, body.to_owned())
    }

    fn audit(h: &Harness) -> Vec<serde_json::Value> {
        let text = std::fs::read_to_string(&h.audit_path).unwrap_or_default();
        text.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
    }

    const MOVE: &str = r#"{"op":"move","pan":500}"#;

    /// The checks in their order — login, the viewer's cameras, the
    /// account's right, the site's right, the command itself — each with its
    /// status and an audit line; only what passes them all goes upstream.
    #[tokio::test]
    async fn checks_run_in_order_and_every_outcome_is_audited() {
        let h = harness("order", PtzSettings::default()).await;
        assert_eq!(http(&h, "POST", "/api/ptz/zaist", None, MOVE).await.0, 401);
        // Outside anna's cameras: as if it did not exist.
        let (status, body) = http(&h, "POST", "/api/ptz/po", Some("anna"), MOVE).await;
        assert_eq!(status, 404, "{body}");
        assert!(body.contains("\"code\":\"unknown\"") && body.contains("viewer `anna`"), "{body}");
        assert_eq!(http(&h, "POST", "/api/ptz/nowhere", Some("anna"), MOVE).await.0, 404);
        // carlo has no PTZ right: 403 whatever the camera, even with a bad body.
        let (status, body) = http(&h, "POST", "/api/ptz/zaist", Some("carlo"), "{").await;
        assert_eq!(status, 403, "{body}");
        assert!(body.contains("\"code\":\"forbidden\"") && body.contains("`ptz = true`"), "{body}");
        // The site may not steer `duomo`.
        let (status, body) = http(&h, "POST", "/api/ptz/duomo", Some("anna"), MOVE).await;
        assert_eq!(status, 403, "{body}");
        assert!(body.contains("site `carabinieri` has no PTZ right on camera `duomo`"), "{body}");
        // Bad commands.
        for bad in
            [r#"{"op":"move","pan":1001}"#, r#"{"op":"spin"}"#, "", r#"{"op":"goto_preset","preset":""}"#]
        {
            let (status, body) = http(&h, "POST", "/api/ptz/zaist", Some("anna"), bad).await;
            assert_eq!(status, 400, "{bad}: {body}");
            assert!(body.contains("\"code\":\"invalid\""), "{body}");
        }
        // A form or text POST (what another web page can send without a
        // CORS preflight) is refused.
        let (status, body) = http_as(&h, "POST", "/api/ptz/zaist", Some("anna"), "text/plain", MOVE).await;
        assert_eq!(status, 415, "{body}");
        assert!(body.contains("Content-Type: application/json"), "{body}");
        assert!(lock(&h.upstream.asked).is_empty(), "nothing refused here went upstream");

        // Allowed: forwarded with the account as viewer.
        let (status, body) = http(&h, "POST", "/api/ptz/zaist", Some("anna"), MOVE).await;
        assert_eq!(status, 200, "{body}");
        let done: PtzReply = serde_json::from_str(&body).unwrap();
        assert!(matches!(done, PtzReply::Done { holder: Some(_), .. }), "{done:?}");
        let asked = lock(&h.upstream.asked).clone();
        assert_eq!(asked, [("zaist".into(), "anna".into(), PtzCommand::Move { pan: 500, tilt: 0, zoom: 0 })]);
        // Refused upstream: its status, its reason, audited.
        *lock(&h.upstream.answer) = PtzReply::Refused {
            code: PtzErrorCode::Locked,
            reason: "camera `zaist` is steered by bruno@questura".into(),
            holder: Some(holder("bruno", "questura")),
        };
        let (status, body) = http(&h, "POST", "/api/ptz/zaist", Some("anna"), r#"{"op":"stop"}"#).await;
        assert_eq!(status, 409, "{body}");
        assert!(body.contains("bruno"), "{body}");

        let lines = audit(&h);
        let got: Vec<(String, String, String)> = lines
            .iter()
            .filter(|l| l["action"] == "ptz")
            .map(|l| {
                let s = |k: &str| l[k].as_str().unwrap_or("-").to_owned();
                (s("viewer"), s("camera"), s("outcome"))
            })
            .collect();
        let want: Vec<(String, String, String)> = [
            ("anna", "po", "unknown"),
            ("anna", "nowhere", "unknown"),
            ("carlo", "zaist", "forbidden"),
            ("anna", "duomo", "forbidden"),
            ("anna", "zaist", "invalid"),
            ("anna", "zaist", "invalid"),
            ("anna", "zaist", "invalid"),
            ("anna", "zaist", "invalid"),
            ("anna", "zaist", "invalid"),
            ("anna", "zaist", "done"),
            ("anna", "zaist", "locked"),
        ]
        .iter()
        .map(|(a, b, c)| (a.to_string(), b.to_string(), c.to_string()))
        .collect();
        assert_eq!(got, want);
        assert!(lines[0]["reason"].as_str().unwrap().contains("outside the cameras of viewer `anna`"));
        assert_eq!(lines[9]["reason"], "move pan=500 tilt=0 zoom=0");
        assert!(lines[10]["reason"].as_str().unwrap().contains("bruno@questura"));
        assert_eq!(ponte_proto::audit::verify(std::slice::from_ref(&h.audit_path)), Ok(11));
    }

    /// `GET` tells the page whether to show the pad; holder and presets only
    /// to a viewer who may steer; presets are fetched once and reused.
    #[tokio::test]
    async fn get_says_who_may_steer_and_caches_presets() {
        let h = harness("get", PtzSettings::default()).await;
        let get = |who, cam: &'static str| {
            let h = &h;
            async move {
                let (status, body) = http(h, "GET", &format!("/api/ptz/{cam}"), Some(who), "").await;
                (status, serde_json::from_str::<serde_json::Value>(&body).unwrap_or_default())
            }
        };
        let (status, v) = get("anna", "zaist").await;
        assert_eq!(status, 200);
        assert_eq!(v["may_steer"], true);
        assert_eq!(v["holder"]["viewer"], "bruno");
        assert_eq!(v["holder"]["site"], "questura");
        assert_eq!(v["presets"][0]["name"], "Ingresso");
        get("anna", "zaist").await;
        let fetched = lock(&h.upstream.asked).iter().filter(|(_, _, c)| *c == PtzCommand::Presets).count();
        assert_eq!(fetched, 1, "presets are cached");
        for (who, cam) in [("anna", "duomo"), ("carlo", "zaist")] {
            let (status, v) = get(who, cam).await;
            assert_eq!(status, 200);
            assert_eq!(
                v,
                serde_json::json!({"may_steer": false, "holder": null, "presets": []}),
                "{who} {cam}"
            );
        }
        assert_eq!(get("anna", "po").await.0, 404);
        assert!(audit(&h).iter().all(|l| l["action"] != "ptz"), "reads are not commands");
    }

    /// A held button (one move per 500 ms) is never limited; a flood is,
    /// with 429 and Retry-After, per viewer.
    #[tokio::test]
    async fn floods_get_429_per_viewer() {
        let settings =
            PtzSettings { burst: 5, interval: Duration::from_millis(200), ..PtzSettings::default() };
        let h = harness("flood", settings).await;
        let mut statuses = Vec::new();
        for _ in 0..8 {
            statuses.push(http(&h, "POST", "/api/ptz/zaist", Some("flood"), MOVE).await.0);
        }
        assert_eq!(&statuses[..5], [200; 5]);
        assert!(statuses[5..].contains(&429), "{statuses:?}");
        assert_eq!(
            http(&h, "POST", "/api/ptz/zaist", Some("anna"), MOVE).await.0,
            200,
            "others are not slowed"
        );

        let t0 = Instant::now();
        let mut rate = CommandRate::new(20, Duration::from_millis(100));
        for i in 0..600 {
            let now = t0 + Duration::from_millis(500) * i;
            assert_eq!(rate.allow("anna", now), Ok(()), "a held button at {i}");
        }
        let mut rate = CommandRate::new(3, Duration::from_millis(100));
        for _ in 0..3 {
            rate.allow("x", t0).unwrap();
        }
        assert_eq!(rate.allow("x", t0), Err(Duration::from_millis(100)));
        assert!(rate.allow("y", t0).is_ok());
        assert!(rate.allow("x", t0 + Duration::from_millis(100)).is_ok());
    }
}
