//! The operator console: a video wall in the browser. The page and its ES
//! modules and stylesheet are files under `relay/assets/console/`, compiled
//! into the binary and served from here (no build step, nothing loaded from
//! elsewhere); playback is the relay's own WHEP, one session per tile.
//!
//! Routes:
//! - `GET /console` → the page (login form included); `GET /console/{file}` → its assets
//! - `GET /api/layouts` → the account's saved layouts; `PUT /api/layouts/{name}`
//!   (JSON [`layouts::Layout`]) saves one, `DELETE` removes it. Bearer
//!   tokens (wall displays) may read them, not change them.
//! - `POST /api/snapshot` (JSON `{camera, capture_ms, file}`) → audits a still
//!   the page saved (the PNG is drawn in the browser; the relay never sees it).
//! - `GET /api/strip` → the status strip: the links to the upstreams (state,
//!   round trip, receive rate) and the site's budget when the master sends it.
//!
//! - [`layouts`]: the per-account layout file.
//!
//! With `relay.peers` the page carries the peers' origins (`data-peers`) and
//! may call them (`connect-src`): when this relay stops answering it reopens
//! every tile at the first peer that answers, logged in there by a pair
//! token (`GET /api/pair-token`, see `auth::pair_token`), in
//! `assets/console/failover.js`.

pub mod layouts;
mod recall;

use crate::audit::RelayAudit;
use crate::auth::{self, Auth, Viewer};
use crate::whep::{Reject, WhepState};
use axum::extract::{Extension, Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use layouts::{Layout, LayoutStore, StoreError};
use ponte_proto::mgmt::StatusFeed;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use tracing::warn;

/// The page shell; `{{site}}` and `{{title}}` are filled in, escaped.
const PAGE: &str = include_str!("../../assets/console/index.html");

/// The console's files: name, content type, bytes.
const ASSETS: &[(&str, &str, &str)] = &[
    ("console.css", "text/css; charset=utf-8", include_str!("../../assets/console/console.css")),
    ("console.js", "text/javascript; charset=utf-8", include_str!("../../assets/console/console.js")),
    ("tile.js", "text/javascript; charset=utf-8", include_str!("../../assets/console/tile.js")),
    ("whep.js", "text/javascript; charset=utf-8", include_str!("../../assets/console/whep.js")),
    ("i18n.js", "text/javascript; charset=utf-8", include_str!("../../assets/console/i18n.js")),
    ("snapshot.js", "text/javascript; charset=utf-8", include_str!("../../assets/console/snapshot.js")),
    ("failover.js", "text/javascript; charset=utf-8", include_str!("../../assets/console/failover.js")),
    ("incidents.js", "text/javascript; charset=utf-8", include_str!("../../assets/console/incidents.js")),
    (
        "probe-worker.js",
        "text/javascript; charset=utf-8",
        include_str!("../../assets/console/probe-worker.js"),
    ),
];

/// The console's `Content-Security-Policy`: its own scripts, styles and
/// worker only; pictures and media from itself (and the canvases and
/// streams it makes); never framed.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; worker-src 'self'; \
    connect-src 'self'; img-src 'self' data: blob:; media-src 'self' blob:; form-action 'self'; \
    base-uri 'none'; frame-ancestors 'none'";

/// Largest layout or snapshot request: a 4×4 layout of tours of 32
/// cameras each with long ids is about 70 KiB.
const MAX_BODY: usize = 128 * 1024;

/// What the console routes share.
pub struct ConsoleState {
    whep: Arc<WhepState>,
    layouts: Arc<LayoutStore>,
    status: Option<StatusFeed>,
    exports: recall::Exports,
    /// The other relays of the site (`relay.peers`, as origins): the page
    /// may call them, and moves to them when this relay stops answering.
    peers: Vec<String>,
}

impl ConsoleState {
    /// Console over `whep`'s cameras and accounts, layouts kept in `layouts`,
    /// the status strip read from `status` (none: links not shown).
    pub fn new(whep: Arc<WhepState>, layouts: Arc<LayoutStore>, status: Option<StatusFeed>) -> Self {
        Self { whep, layouts, status, exports: recall::Exports::default(), peers: Vec::new() }
    }

    /// Evidence exports are saved under `dir` (`relay.state_dir/exports`).
    pub fn with_exports(mut self, dir: std::path::PathBuf) -> Self {
        self.exports = recall::Exports::new(Some(dir));
        self
    }

    /// The page may move to these relays of the site (origins, in order).
    pub fn with_peers(mut self, peers: Vec<String>) -> Self {
        self.peers = peers;
        self
    }

    fn audit(&self) -> &Arc<RelayAudit> {
        self.whep.audit()
    }
}

/// The console routes.
pub fn router(state: Arc<ConsoleState>) -> Router {
    let auth: Arc<Auth> = state.whep.auth().clone();
    let need_viewer = axum::middleware::from_fn_with_state(auth, auth::require_viewer);
    Router::new()
        .route("/api/layouts", get(list_layouts))
        .route("/api/layouts/{name}", put(save_layout).delete(delete_layout))
        .route("/api/snapshot", post(snapshot))
        .route("/api/strip", get(strip))
        .route("/api/recordings/{camera}", get(recall::recordings))
        .route("/api/export", post(recall::export))
        .route("/api/exports/{id}/{file}", get(recall::download))
        .route_layer(need_viewer)
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
        .route("/console", get(page))
        .route("/console/{file}", get(asset))
        .with_state(state)
}

async fn page(State(state): State<Arc<ConsoleState>>) -> Response {
    let site = state.whep.source().site();
    let title = if site.is_empty() { "ponte".to_owned() } else { format!("ponte — {site}") };
    let html = render(&site, &title, &state.peers);
    let mut resp = (security_headers("text/html; charset=utf-8"), html).into_response();
    if !state.peers.is_empty() {
        if let Ok(csp) = header::HeaderValue::from_str(&csp_with_peers(&state.peers)) {
            resp.headers_mut().insert(header::CONTENT_SECURITY_POLICY, csp);
        }
    }
    resp
}

/// [`CSP`] that also lets the page call the peers (and nothing else).
fn csp_with_peers(peers: &[String]) -> String {
    CSP.replace("connect-src 'self';", &format!("connect-src 'self' {};", peers.join(" ")))
}

/// The page for `site` under `title` with its `peers`, all escaped, filled
/// in one pass.
fn render(site: &str, title: &str, peers: &[String]) -> String {
    use crate::page::{escape_html, fill};
    fill(
        PAGE,
        &[
            ("title", &escape_html(title)),
            ("site", &escape_html(site)),
            ("peers", &escape_html(&peers.join(" "))),
        ],
    )
}

async fn asset(Path(file): Path<String>) -> Response {
    match ASSETS.iter().find(|(name, _, _)| *name == file) {
        Some((_, mime, body)) => (security_headers(mime), *body).into_response(),
        None => {
            Reject::new(StatusCode::NOT_FOUND, format!("the console has no file `{file}`")).into_response()
        }
    }
}

fn security_headers(mime: &'static str) -> [(header::HeaderName, &'static str); 6] {
    [
        (header::CONTENT_TYPE, mime),
        (header::CONTENT_SECURITY_POLICY, CSP),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::CACHE_CONTROL, "no-cache"),
    ]
}

/// Whose layouts: the account or token name; one shared set on a relay
/// without accounts.
fn owner(viewer: &Viewer) -> String {
    viewer.audit_name().unwrap_or("-").to_owned()
}

#[derive(Serialize)]
struct LayoutsBody {
    viewer: Option<String>,
    /// Whether this viewer may save layouts (not a wall display's token).
    writable: bool,
    layouts: std::collections::BTreeMap<String, Layout>,
}

async fn list_layouts(
    State(state): State<Arc<ConsoleState>>,
    Extension(viewer): Extension<Viewer>,
) -> Response {
    let body = LayoutsBody {
        viewer: viewer.audit_name().map(str::to_owned),
        writable: !viewer.is_token(),
        layouts: state.layouts.list(&owner(&viewer)),
    };
    ([(header::CACHE_CONTROL, "no-store")], Json(body)).into_response()
}

fn writable(viewer: &Viewer) -> Result<(), Reject> {
    if viewer.is_token() {
        return Err(Reject::new(
            StatusCode::FORBIDDEN,
            format!(
                "`{}` is a bearer token (a wall display): it may show layouts, not change them",
                viewer.name()
            ),
        ));
    }
    Ok(())
}

async fn save_layout(
    State(state): State<Arc<ConsoleState>>,
    Extension(viewer): Extension<Viewer>,
    Path(name): Path<String>,
    body: axum::body::Bytes,
) -> Result<StatusCode, Reject> {
    writable(&viewer)?;
    layouts::check_name(&name)
        .map_err(|e| Reject::new(StatusCode::BAD_REQUEST, format!("layout name: {e}")))?;
    let layout: Layout = serde_json::from_slice(&body)
        .map_err(|e| Reject::new(StatusCode::BAD_REQUEST, format!("layout `{name}`: not a layout ({e})")))?;
    layout.check().map_err(|e| Reject::new(StatusCode::BAD_REQUEST, format!("layout `{name}`: {e}")))?;
    let store = state.layouts.clone();
    let account = owner(&viewer);
    let key = name.clone();
    let saved = {
        tokio::task::spawn_blocking(move || store.save(&account, &key, layout)).await.map_err(|e| {
            Reject::new(StatusCode::INTERNAL_SERVER_ERROR, format!("saving layout `{name}`: {e}"))
        })?
    };
    saved.map(|()| StatusCode::NO_CONTENT).map_err(|e| store_reject(&name, e))
}

async fn delete_layout(
    State(state): State<Arc<ConsoleState>>,
    Extension(viewer): Extension<Viewer>,
    Path(name): Path<String>,
) -> Result<StatusCode, Reject> {
    writable(&viewer)?;
    let store = state.layouts.clone();
    let account = owner(&viewer);
    let key = name.clone();
    let deleted = {
        tokio::task::spawn_blocking(move || store.delete(&account, &key)).await.map_err(|e| {
            Reject::new(StatusCode::INTERNAL_SERVER_ERROR, format!("deleting layout `{name}`: {e}"))
        })?
    };
    deleted.map(|()| StatusCode::NO_CONTENT).map_err(|e| store_reject(&name, e))
}

fn store_reject(name: &str, e: StoreError) -> Reject {
    match e {
        StoreError::Full => Reject::new(
            StatusCode::CONFLICT,
            format!(
                "layout `{name}`: an account keeps at most {} layouts; delete one first",
                layouts::MAX_PER_ACCOUNT
            ),
        ),
        StoreError::NotFound => Reject::new(StatusCode::NOT_FOUND, format!("there is no layout `{name}`")),
        StoreError::Io(e) => {
            warn!(layout = %name, error = %e, "console: the layouts file could not be written");
            Reject::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("layout `{name}` was not saved: the relay cannot write its layouts file; see the relay log"),
            )
        }
    }
}

/// `POST /api/snapshot`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SnapshotBody {
    camera: String,
    /// Capture time of the picture, ms since the Unix epoch, if known.
    #[serde(default)]
    capture_ms: Option<f64>,
    /// The file name the browser saved it under.
    #[serde(default)]
    file: Option<String>,
}

async fn snapshot(
    State(state): State<Arc<ConsoleState>>,
    Extension(viewer): Extension<Viewer>,
    Json(body): Json<SnapshotBody>,
) -> Result<StatusCode, Reject> {
    let camera = body.camera;
    if !viewer.narrow(state.whep.source().catalog()).iter().any(|c| c.id == camera) {
        return Err(Reject::new(
            StatusCode::NOT_FOUND,
            format!("camera `{camera}` is not in your catalog; pick one listed at /api/catalog"),
        ));
    }
    let capture = body
        .capture_ms
        // After 1970 and before the year 10000 (RFC 3339 has four digits).
        .filter(|ms| ms.is_finite() && *ms > 0.0 && *ms < 253_402_300_799_000.0)
        .map(|ms| {
            let t = std::time::UNIX_EPOCH + std::time::Duration::from_micros((ms * 1000.0) as u64);
            ponte_proto::audit::rfc3339(t)
        })
        .unwrap_or_else(|| "unknown".to_owned());
    let file: String = body.file.unwrap_or_default().chars().filter(|c| !c.is_control()).take(128).collect();
    state.audit().snapshot(viewer.audit_name(), &camera, &format!("picture captured {capture}; file {file}"));
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Serialize)]
struct StripBody {
    site: String,
    viewer: Option<String>,
    links: Vec<StripLink>,
}

#[derive(Serialize)]
struct StripLink {
    peer: String,
    state: String,
    rtt_ms: Option<f64>,
    recv_bps: f64,
    /// The site's link budget the upstream applies, bit/s.
    budget_bps: Option<u64>,
}

async fn strip(State(state): State<Arc<ConsoleState>>, Extension(viewer): Extension<Viewer>) -> Response {
    let links = state
        .status
        .as_ref()
        .map(|feed| {
            feed.borrow()
                .links
                .iter()
                .filter(|l| l.direction == "from-upstream")
                .map(|l| StripLink {
                    peer: l.peer.clone(),
                    state: l.state.clone(),
                    rtt_ms: l.rtt_ms,
                    recv_bps: l.recv_bps,
                    budget_bps: l.budget_bps,
                })
                .collect()
        })
        .unwrap_or_default();
    let body =
        StripBody { site: state.whep.source().site(), viewer: viewer.audit_name().map(str::to_owned), links };
    ([(header::CACHE_CONTROL, "no-store")], Json(body)).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_file_of_the_console_is_served_and_nothing_comes_from_elsewhere() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/console");
        let mut on_disk: Vec<String> = std::fs::read_dir(&dir)
            .expect("assets/console")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .filter(|n| n != "index.html")
            .collect();
        on_disk.sort();
        let mut served: Vec<String> = ASSETS.iter().map(|(n, _, _)| (*n).to_owned()).collect();
        served.sort();
        assert_eq!(
            on_disk, served,
            "a file under assets/console that the relay does not serve, or the reverse"
        );
        for (name, _, body) in ASSETS.iter().copied().chain([("index.html", "", PAGE)]) {
            for external in ["http://", "https://", "//cdn", "@import", "eval(", "new Function", "innerHTML"]
            {
                assert!(!body.contains(external), "{name} contains {external}");
            }
            // Module imports name files the relay serves.
            for import in body.split("from './").skip(1) {
                let file = import.split('\'').next().unwrap_or_default();
                assert!(
                    ASSETS.iter().any(|(n, _, _)| *n == file),
                    "{name} imports {file}, which is not served"
                );
            }
        }
        for linked in ["/console/console.css", "/console/console.js"] {
            assert!(PAGE.contains(linked), "the page links {linked}");
        }
        assert!(
            !PAGE.contains("<script>") && !PAGE.contains("<style>"),
            "no inline script or style (CSP 'self')"
        );
        assert!(CSP.contains("script-src 'self'") && CSP.contains("frame-ancestors 'none'"));
        // With peers: they, and only they, are added to `connect-src`.
        let csp = csp_with_peers(&["https://relay-b:8443".into(), "https://10.0.0.3".into()]);
        assert!(csp.contains("connect-src 'self' https://relay-b:8443 https://10.0.0.3;"), "{csp}");
        assert_eq!(csp.replace(" https://relay-b:8443 https://10.0.0.3", ""), CSP);
        let html = render("carabinieri", "ponte", &["https://relay-b:8443".into()]);
        assert!(html.contains("data-peers=\"https://relay-b:8443\""), "the page knows its peers");
    }

    #[test]
    fn the_page_speaks_italian_and_english_with_the_same_keys() {
        let i18n = ASSETS.iter().find(|(n, _, _)| *n == "i18n.js").map(|(_, _, b)| *b).expect("i18n.js");
        let section = |lang: &str| -> Vec<String> {
            let start = i18n.find(&format!("  {lang}: {{")).expect("language block");
            let block = &i18n[start..];
            let end = block.find("\n  },").expect("end of block");
            let mut keys: Vec<String> = block[..end]
                .split([',', '{', '\n'])
                .filter_map(|part| {
                    let part = part.trim();
                    let (key, _) = part.split_once(": ")?;
                    key.chars().all(|c| c.is_ascii_alphanumeric()).then(|| key.to_owned())
                })
                .collect();
            keys.sort();
            keys.dedup();
            keys
        };
        let (it, en) = (section("it"), section("en"));
        assert!(it.len() > 40, "{it:?}");
        assert_eq!(it, en, "every text in both languages");
        // Every key the page and the modules use exists.
        let mut used = Vec::new();
        for (_, _, body) in ASSETS.iter().copied().chain([("index.html", "", PAGE)]) {
            for marker in ["data-i18n=\"", "data-i18n-placeholder=\"", "data-i18n-label=\"", "t('"] {
                // `t('key'` as a call of its own, not the end of `get('…')`.
                let calls = body.split(marker).collect::<Vec<_>>();
                for (before, rest) in calls.iter().zip(calls.iter().skip(1)) {
                    if marker == "t('" && before.ends_with(|c: char| c.is_ascii_alphanumeric() || c == '.') {
                        continue;
                    }
                    let key: String = rest.chars().take_while(|c| c.is_ascii_alphanumeric()).collect();
                    if !key.is_empty() {
                        used.push(key);
                    }
                }
            }
        }
        for key in used {
            assert!(en.contains(&key), "text `{key}` is used but not translated");
        }
    }

    #[test]
    fn the_page_escapes_the_site_name() {
        let html = render("<b>x</b>", "ponte — <b>x</b>", &[]);
        assert!(html.contains("&lt;b&gt;x&lt;/b&gt;"));
        assert!(!html.contains("<b>x</b>") && !html.contains("{{"), "escaped, every placeholder filled");
        // A placeholder in the site name is text, not expanded again.
        let html = render("{{title}}", "ponte — {{title}}", &[]);
        // Twice in the title (<title>, <h1>), once as data-site: kept as text.
        assert_eq!(html.matches("{{title}}").count(), 3, "the site name's text is kept as it is");
    }
}
