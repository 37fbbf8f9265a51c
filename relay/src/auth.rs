//! Relay-local viewers: accounts (user + argon2id password hash) and bearer
//! tokens from the relay config, each with an optional narrower camera set;
//! browser sessions behind an HttpOnly cookie; a per-client brake on failed
//! logins; and the HTTP pieces (`POST /login`, `POST /logout`, the
//! [`require_viewer`] layer in front of the catalog, WHEP and status).
//!
//! A viewer can only narrow what the site may see: its selectors filter the
//! catalog the agent sent (the ceiling set by the site's policy), never add to
//! it. With no `[[viewer]]` and no `[[token]]` in the config the relay is open
//! and every request is the [`Viewer::anonymous`] one.
//!
//! Entry points for other egress (RTSP): [`Auth::check_basic`] (argon2id, or a
//! token name and token as user and password), [`Auth::digest_ha1`] with
//! [`Auth::login_failed`] / [`Auth::login_ok`] for RTSP Digest, and
//! [`Viewer::may_see`] / [`Viewer::check`] / [`Viewer::narrow`].

use crate::audit::RelayAudit;
use crate::session_store::{self, StoredSession};
use anyhow::{anyhow, bail, Context, Result};
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use axum::extract::{ConnectInfo, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Form, Router};
use ponte_proto::media::Quality;
use ponte_proto::policy::{CameraFacts, Selector};
use ponte_proto::wire::CatalogEntry;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};
use tokio::sync::{watch, Semaphore};
use tracing::{info, warn};

/// Name of the browser session cookie.
pub const SESSION_COOKIE: &str = "ponte_session";
/// Realm of RTSP Digest authentication: `rtsp_digest_ha1` is
/// MD5(`user:ponte:password`).
pub const RTSP_REALM: &str = "ponte";

// ---- config ----------------------------------------------------------------

/// `[[viewer]]`: a person (browser or RTSP client) with a password.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ViewerConfig {
    /// Login name.
    pub user: String,
    /// argon2id PHC string, from `ponte-relay passwd`.
    pub password_hash: String,
    /// Selectors (`*`, `camera:`, `device:`, `zone:`, `type:`) over the site's
    /// catalog; absent = every camera the site may see, `[]` = none.
    #[serde(default)]
    pub cameras: Option<Vec<String>>,
    /// `main` (default) or `sub`: the best quality this viewer may watch.
    #[serde(default)]
    pub max_quality: Option<Quality>,
    /// MD5(`user:ponte:password`) in hex, only for RTSP clients that insist
    /// on Digest; from `ponte-relay passwd --user NAME --rtsp-digest`.
    #[serde(default)]
    pub rtsp_digest_ha1: Option<String>,
    /// May steer PTZ cameras (only those the site itself may steer); default false.
    #[serde(default)]
    pub ptz: bool,
}

/// `[[token]]`: a machine client (VMS, script) with a bearer token.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    /// Name in logs and audit.
    pub name: String,
    /// Hex SHA-256 of the token, from `ponte-relay token`.
    pub token_sha256: String,
    /// As for viewers.
    #[serde(default)]
    pub cameras: Option<Vec<String>>,
    /// As for viewers.
    #[serde(default)]
    pub max_quality: Option<Quality>,
    /// As for viewers.
    #[serde(default)]
    pub ptz: bool,
}

// ---- viewers and what they may see -----------------------------------------

/// What a viewer may see: selectors over the site's catalog and a quality cap.
#[derive(Debug, Clone, PartialEq)]
struct Scope {
    /// `None`: every camera of the site's catalog.
    cameras: Option<Vec<Selector>>,
    max_quality: Quality,
}

impl Scope {
    const ALL: Scope = Scope { cameras: None, max_quality: Quality::Main };

    fn compile(what: &str, cameras: Option<&[String]>, max_quality: Option<Quality>) -> Result<Scope> {
        let cameras = match cameras {
            None => None,
            Some(list) => {
                let selectors = list.iter().map(|s| parse_selector(what, s)).collect::<Result<Vec<_>>>()?;
                // `*` selects every camera of the site: the same scope as no
                // `cameras` key, so the whole-site routes (status) accept it.
                if selectors.contains(&Selector::All) {
                    None
                } else {
                    Some(selectors)
                }
            }
        };
        Ok(Scope { cameras, max_quality: max_quality.unwrap_or(Quality::Main) })
    }
}

fn parse_selector(what: &str, text: &str) -> Result<Selector> {
    let selector = Selector::parse(text).map_err(|e| anyhow!("{what}: `cameras` entry {e}"))?;
    if let Selector::Tag(tag) = &selector {
        bail!(
            "{what}: `cameras` entry \"tag:{tag}\": tags stay at the agent (the catalog a relay receives \
             has none), so a relay cannot select by tag; use `zone:`, `device:`, `type:` or `camera:` here, \
             or grant by tag in the agent's `[[site]]` policy"
        );
    }
    Ok(selector)
}

/// How a viewer proved who it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ViewerKind {
    /// A relay without accounts: nobody logged in.
    Anonymous,
    /// A `[[viewer]]` account.
    Account,
    /// A `[[token]]`.
    Token,
}

/// Why a viewer may not watch a camera at a quality.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScopeRefusal {
    /// The camera is outside the viewer's cameras: answered as if it did not exist.
    Hidden(String),
    /// The camera is visible, but not at that quality.
    Quality(String),
}

/// An authenticated viewer, or the anonymous one of a relay without accounts.
#[derive(Debug, Clone)]
pub struct Viewer {
    name: Arc<str>,
    kind: ViewerKind,
    scope: Arc<Scope>,
    /// The account's `ptz` right (outside the scope: it adds no camera).
    ptz: bool,
    /// The browser session (cookie) it came through: its streams end when
    /// that session logs out.
    login: Option<Arc<str>>,
    /// Fingerprint of the credentials it proved (password hash, HA1 or
    /// token digest): a reload that changes them revokes it like a removal.
    credential: [u8; 8],
}

impl Viewer {
    /// The viewer of a relay without accounts: sees the whole site catalog.
    pub fn anonymous() -> Viewer {
        Viewer {
            name: Arc::from("anonymous"),
            kind: ViewerKind::Anonymous,
            scope: Arc::new(Scope::ALL),
            ptz: false,
            login: None,
            credential: [0; 8],
        }
    }

    fn new(name: &str, kind: ViewerKind, scope: Scope, secrets: &[&[u8]]) -> Viewer {
        let mut h = Sha256::new();
        for secret in secrets {
            h.update((secret.len() as u64).to_le_bytes());
            h.update(secret);
        }
        let digest: [u8; 32] = h.finalize().into();
        let mut credential = [0; 8];
        credential.copy_from_slice(&digest[..8]);
        Viewer { name: Arc::from(name), kind, scope: Arc::new(scope), ptz: false, login: None, credential }
    }

    fn through_login(self, login: Option<Arc<str>>) -> Viewer {
        Viewer { login, ..self }
    }

    fn with_ptz(self, ptz: bool) -> Viewer {
        Viewer { ptz, ..self }
    }

    /// Whether the account has the `ptz` right at all (nobody has it on a
    /// relay without accounts).
    pub fn has_ptz_right(&self) -> bool {
        self.ptz
    }

    /// Whether the viewer may steer this site camera: the account's `ptz`
    /// right, the camera in its set, and the site's own PTZ right on it
    /// (the catalog's `ptz`). A viewer only narrows what the site may do.
    pub fn may_steer(&self, cam: &CatalogEntry) -> bool {
        self.ptz && cam.ptz && self.may_see(cam)
    }

    /// Whether `other` is the same account or token as this viewer.
    pub fn same_account(&self, other: &Viewer) -> bool {
        self.name == other.name && self.kind == other.kind
    }

    /// Whether `other` came through the same login (browser session, or
    /// the same credentials) as this viewer: only it may end this viewer's
    /// streams. On a relay without accounts every viewer is the same
    /// anonymous one, and the stream's unguessable id alone is the key.
    pub fn same_holder(&self, other: &Viewer) -> bool {
        self.same_account(other) && self.login == other.login && self.credential == other.credential
    }

    /// Account or token name (`anonymous` on a relay without accounts).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// How the viewer authenticated.
    #[cfg(test)]
    pub fn kind(&self) -> ViewerKind {
        self.kind
    }

    /// The name the audit log records: none for the anonymous viewer.
    pub fn audit_name(&self) -> Option<&str> {
        (self.kind != ViewerKind::Anonymous).then_some(&*self.name)
    }

    /// True when the viewer sees the site's whole catalog at every quality.
    pub fn unrestricted(&self) -> bool {
        *self.scope == Scope::ALL
    }

    fn selects(&self, cam: &CatalogEntry) -> bool {
        let Some(selectors) = &self.scope.cameras else { return true };
        let facts =
            CameraFacts { id: &cam.id, device: &cam.device, zone: &cam.zone, kind: &cam.kind, tags: &[] };
        selectors.iter().any(|s| s.matches(&facts))
    }

    /// Qualities of a site camera this viewer may watch.
    pub fn qualities(&self, cam: &CatalogEntry) -> Vec<Quality> {
        if !self.selects(cam) {
            return Vec::new();
        }
        // `Sub` orders after `Main`: a viewer capped at `sub` gets only `sub`.
        cam.qualities.iter().copied().filter(|q| *q >= self.scope.max_quality).collect()
    }

    /// Whether this site camera is in the viewer's catalog.
    pub fn may_see(&self, cam: &CatalogEntry) -> bool {
        !self.qualities(cam).is_empty()
    }

    /// Whether the viewer may watch this site camera at `quality`, and if
    /// not, why (in words for the viewer and the audit log).
    pub fn check(&self, cam: &CatalogEntry, quality: Quality) -> Result<(), ScopeRefusal> {
        if !self.may_see(cam) {
            return Err(ScopeRefusal::Hidden(format!(
                "camera `{}` is outside the cameras of viewer `{}`",
                cam.id, self.name
            )));
        }
        if !self.qualities(cam).contains(&quality) {
            let allowed: Vec<&str> = self.qualities(cam).iter().map(|q| q.name()).collect();
            return Err(ScopeRefusal::Quality(format!(
                "viewer `{}` may watch camera `{}` at `{}` quality only",
                self.name,
                cam.id,
                allowed.join("`, `")
            )));
        }
        Ok(())
    }

    /// The site's catalog as this viewer sees it: cameras outside its set
    /// dropped, qualities above its cap removed. Never adds anything.
    pub fn narrow(&self, catalog: Vec<CatalogEntry>) -> Vec<CatalogEntry> {
        catalog
            .into_iter()
            .filter_map(|mut cam| {
                let qualities = self.qualities(&cam);
                (!qualities.is_empty()).then(|| {
                    cam.qualities = qualities;
                    cam
                })
            })
            .collect()
    }
}

// ---- accounts ----------------------------------------------------------------

struct Account {
    viewer: Viewer,
    phc: String,
    ha1: Option<String>,
}

struct Token {
    viewer: Viewer,
    digest: [u8; 32],
}

/// The relay's accounts and tokens, checked and ready.
#[derive(Default)]
pub struct Accounts {
    accounts: HashMap<String, Account>,
    tokens: Vec<Token>,
}

/// Why credentials did not check out (for logs and audit, never for the client).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BadCredentials {
    /// No account or token by that name.
    UnknownUser,
    /// The password (or token) is wrong.
    WrongPassword,
}

impl BadCredentials {
    fn reason(self) -> &'static str {
        match self {
            BadCredentials::UnknownUser => "unknown user",
            BadCredentials::WrongPassword => "wrong password",
        }
    }
}

fn check_name(what: &str, name: &str) -> Result<()> {
    if name.is_empty() || name.len() > 64 {
        bail!("{what}: the name must be 1 to 64 characters");
    }
    if name.chars().any(|c| c.is_control() || c == ':' || c == '"' || c.is_whitespace()) {
        bail!("{what}: the name may not contain spaces, quotes, `:` or control characters");
    }
    Ok(())
}

fn parse_hex<const N: usize>(text: &str) -> Option<[u8; N]> {
    let text = text.trim();
    if text.len() != 2 * N || !text.is_ascii() {
        return None;
    }
    let mut out = [0u8; N];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

/// Lower-case hex of bytes.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

/// Equality that takes the same time wherever the first difference is.
fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A valid argon2id hash of nothing anyone knows, verified for unknown users
/// so that they take as long as a wrong password.
fn decoy_hash() -> &'static str {
    static DECOY: OnceLock<String> = OnceLock::new();
    DECOY.get_or_init(|| hash_password(&hex(&rand::random::<[u8; 32]>())).unwrap_or_default())
}

/// argon2id (default parameters: 19 MiB, 2 passes) PHC string of a password.
pub fn hash_password(password: &str) -> Result<String> {
    let salt = SaltString::encode_b64(&rand::random::<[u8; 16]>())
        .map_err(|e| anyhow!("cannot encode a salt: {e}"))?;
    let hash = Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map_err(|e| anyhow!("cannot hash the password: {e}"))?;
    Ok(hash.to_string())
}

/// Hex MD5(`user:ponte:password`): the RTSP Digest HA1 of a viewer.
pub fn digest_ha1(user: &str, password: &str) -> String {
    use md5::Digest as _;
    hex(&md5::Md5::digest(format!("{user}:{RTSP_REALM}:{password}").as_bytes()))
}

/// A new random bearer token (256 bits, hex) and its SHA-256 for `token_sha256`.
pub fn new_token() -> (String, String) {
    let token = hex(&rand::random::<[u8; 32]>());
    let digest = hex(&sha256(token.as_bytes()));
    (token, digest)
}

impl Accounts {
    /// Checks and compiles the `[[viewer]]` and `[[token]]` tables.
    pub fn from_config(viewers: &[ViewerConfig], tokens: &[TokenConfig]) -> Result<Accounts> {
        let mut out = Accounts::default();
        let mut names = std::collections::HashSet::new();
        for v in viewers {
            let what = format!("[[viewer]] `{}`", v.user);
            check_name(&what, &v.user)?;
            if !names.insert(v.user.clone()) {
                bail!("{what}: the name is used twice (viewer and token names share one namespace)");
            }
            let hash = PasswordHash::new(&v.password_hash).map_err(|e| {
                anyhow!(
                    "{what}: `password_hash` is not a PHC string ({e}); make one with `ponte-relay passwd`"
                )
            })?;
            if hash.algorithm != argon2::Algorithm::Argon2id.ident() {
                bail!(
                    "{what}: `password_hash` uses `{}`; only argon2id is accepted: make one with `ponte-relay passwd`",
                    hash.algorithm
                );
            }
            let params = argon2::Params::try_from(&hash)
                .map_err(|e| anyhow!("{what}: `password_hash` has unusable argon2 parameters ({e})"))?;
            // Each login costs this much memory and time: refuse what would stall the relay.
            if params.m_cost() > 256 * 1024 || params.t_cost() > 16 || params.p_cost() > 8 {
                bail!(
                    "{what}: `password_hash` asks for m={} KiB, t={}, p={}; keep m <= 262144, t <= 16, p <= 8 \
                     (`ponte-relay passwd` uses m=19456, t=2, p=1)",
                    params.m_cost(),
                    params.t_cost(),
                    params.p_cost()
                );
            }
            let ha1 = match &v.rtsp_digest_ha1 {
                None => None,
                Some(text) => Some(hex(&parse_hex::<16>(text).with_context(|| {
                    format!("{what}: `rtsp_digest_ha1` must be 32 hex digits (`ponte-relay passwd --user {} --rtsp-digest`)", v.user)
                })?)),
            };
            let scope = Scope::compile(&what, v.cameras.as_deref(), v.max_quality)?;
            out.accounts.insert(
                v.user.clone(),
                Account {
                    viewer: Viewer::new(
                        &v.user,
                        ViewerKind::Account,
                        scope,
                        &[v.password_hash.as_bytes(), ha1.as_deref().unwrap_or_default().as_bytes()],
                    )
                    .with_ptz(v.ptz),
                    phc: v.password_hash.clone(),
                    ha1,
                },
            );
        }
        for t in tokens {
            let what = format!("[[token]] `{}`", t.name);
            check_name(&what, &t.name)?;
            if !names.insert(t.name.clone()) {
                bail!("{what}: the name is used twice (viewer and token names share one namespace)");
            }
            let digest = parse_hex::<32>(&t.token_sha256).with_context(|| {
                format!("{what}: `token_sha256` must be 64 hex digits, the SHA-256 of the token (`ponte-relay token`)")
            })?;
            if out.tokens.iter().any(|other| other.digest == digest) {
                bail!("{what}: the same token is configured twice; give each client its own (`ponte-relay token`)");
            }
            let scope = Scope::compile(&what, t.cameras.as_deref(), t.max_quality)?;
            let viewer = Viewer::new(&t.name, ViewerKind::Token, scope, &[&digest]).with_ptz(t.ptz);
            out.tokens.push(Token { viewer, digest });
        }
        Ok(out)
    }

    /// True when some account has `rtsp_digest_ha1` (can answer RTSP Digest).
    pub fn has_digest(&self) -> bool {
        self.accounts.values().any(|a| a.ha1.is_some())
    }

    /// True when no account and no token is configured: no authentication.
    pub fn is_open(&self) -> bool {
        self.accounts.is_empty() && self.tokens.is_empty()
    }

    /// Number of accounts and tokens.
    pub fn counts(&self) -> (usize, usize) {
        (self.accounts.len(), self.tokens.len())
    }

    /// What `viewer` is under these accounts: its account or token as now
    /// configured, `None` when it is gone or its credentials changed (or,
    /// for the anonymous viewer, when the relay now has accounts).
    pub fn current(&self, viewer: &Viewer) -> Option<Viewer> {
        let now = match viewer.kind {
            ViewerKind::Anonymous => {
                return self.is_open().then(|| Viewer { ptz: viewer.ptz, ..Viewer::anonymous() })
            }
            ViewerKind::Account => self.accounts.get(&*viewer.name).map(|a| &a.viewer),
            ViewerKind::Token => self.tokens.iter().find(|t| t.viewer.name == viewer.name).map(|t| &t.viewer),
        }?;
        (now.credential == viewer.credential).then(|| now.clone())
    }

    /// Checks a user name and password: an account's argon2id hash, or a
    /// token name with the token as password. Slow on purpose (argon2, tens
    /// of milliseconds): call it off the async threads.
    pub fn verify_password(&self, user: &str, password: &str) -> Result<Viewer, BadCredentials> {
        if let Some(account) = self.accounts.get(user) {
            let ok = PasswordHash::new(&account.phc)
                .is_ok_and(|hash| Argon2::default().verify_password(password.as_bytes(), &hash).is_ok());
            return if ok { Ok(account.viewer.clone()) } else { Err(BadCredentials::WrongPassword) };
        }
        if let Some(token) = self.tokens.iter().find(|t| t.viewer.name() == user) {
            return if same_bytes(&sha256(password.as_bytes()), &token.digest) {
                Ok(token.viewer.clone())
            } else {
                Err(BadCredentials::WrongPassword)
            };
        }
        // As slow as a wrong password, so timing does not tell which users exist.
        if let Ok(hash) = PasswordHash::new(decoy_hash()) {
            let _ = Argon2::default().verify_password(password.as_bytes(), &hash);
        }
        Err(BadCredentials::UnknownUser)
    }

    /// The token's viewer, if `token` is one of the configured tokens.
    pub fn check_token(&self, token: &str) -> Option<Viewer> {
        let digest = sha256(token.as_bytes());
        // Look at every token whatever matches, so timing tells nothing.
        let mut found = None;
        for t in &self.tokens {
            if same_bytes(&digest, &t.digest) {
                found = Some(t.viewer.clone());
            }
        }
        found
    }

    /// The RTSP Digest HA1 (hex MD5 of `user:ponte:password`) of an account
    /// that has `rtsp_digest_ha1`, with its viewer.
    pub fn digest_ha1(&self, user: &str) -> Option<(String, Viewer)> {
        let account = self.accounts.get(user)?;
        Some((account.ha1.clone()?, account.viewer.clone()))
    }
}

// ---- CLI helpers ---------------------------------------------------------------

/// `ponte-relay passwd`: reads the password (twice, without echo, from a
/// terminal; one line from a pipe), prints its argon2id hash (or, with
/// `user`, a `[[viewer]]` table; with `rtsp_digest`, its HA1 too).
pub fn passwd_cli(user: Option<&str>, rtsp_digest: bool) -> Result<()> {
    let password = ponte_proto::password_prompt::read_new_password()?;
    let password = password.as_str();
    if password.is_empty() {
        bail!("empty password: pipe or type the password on stdin, e.g. `ponte-relay passwd < file`");
    }
    if password.chars().count() < 10 {
        eprintln!("warning: a password of fewer than 10 characters is easy to guess");
    }
    let phc = hash_password(password)?;
    match user {
        None => println!("{phc}"),
        Some(user) => {
            check_name("--user", user)?;
            println!("[[viewer]]\nuser = \"{user}\"\npassword_hash = \"{phc}\"");
            println!("# cameras = [\"zone:Zaist\", \"camera:po-largo-moreni\"]  # optional: fewer cameras than the site");
            println!("# max_quality = \"sub\"                                   # optional");
            println!("# ptz = true                                            # optional: may steer the site's PTZ cameras");
            if rtsp_digest {
                println!(
                    "rtsp_digest_ha1 = \"{}\"   # RTSP Digest, realm \"{RTSP_REALM}\"",
                    digest_ha1(user, password)
                );
            }
        }
    }
    Ok(())
}

/// `ponte-relay token`: prints a new token (line 1) and the `[[token]]` table
/// for the relay config.
pub fn token_cli(name: &str) -> Result<()> {
    check_name("--name", name)?;
    let (token, digest) = new_token();
    println!("{token}");
    println!();
    println!("# Give the line above to `{name}`: over HTTP it sends `Authorization: Bearer <token>`;");
    println!("# over RTSP it logs in as user `{name}` with the token as password, which needs");
    println!("# `[rtsp] basic = true` (Basic: in clear, the site's private LAN only).");
    println!("# The relay keeps only its SHA-256:");
    println!("[[token]]\nname = \"{name}\"\ntoken_sha256 = \"{digest}\"");
    println!("# cameras = [\"zone:Zaist\"]   # optional: fewer cameras than the site");
    Ok(())
}

// ---- browser sessions (sans-IO: time is passed in) ----------------------------

struct SessionSlot {
    viewer: Viewer,
    last_seen: Instant,
}

/// Browser sessions, each ending after `idle` without use. Kept by the
/// SHA-256 of the cookie, so what is written to disk
/// ([`crate::session_store`]) cannot be replayed as a cookie.
pub struct SessionTable {
    sessions: HashMap<String, SessionSlot>,
    idle: Duration,
    max: usize,
}

impl SessionTable {
    /// An empty table; at most `max` sessions (the least recently used goes first).
    pub fn new(idle: Duration, max: usize) -> Self {
        Self { sessions: HashMap::new(), idle, max: max.max(1) }
    }

    fn expired(&self, slot: &SessionSlot, now: Instant) -> bool {
        now.saturating_duration_since(slot.last_seen) >= self.idle
    }

    /// Opens a session under `id` (a fresh random value, see [`new_session_id`]).
    pub fn insert(&mut self, id: String, viewer: Viewer, now: Instant) {
        let id = cookie_key(&id);
        if self.sessions.len() >= self.max {
            let idle = self.idle;
            self.sessions.retain(|_, s| now.saturating_duration_since(s.last_seen) < idle);
        }
        if self.sessions.len() >= self.max {
            let oldest = self.sessions.iter().min_by_key(|(_, s)| s.last_seen).map(|(k, _)| k.clone());
            if let Some(oldest) = oldest {
                self.sessions.remove(&oldest);
            }
        }
        self.sessions.insert(id, SessionSlot { viewer, last_seen: now });
    }

    /// The session's viewer, marking it used at `now`; `None` if unknown or idle too long.
    pub fn get(&mut self, id: &str, now: Instant) -> Option<Viewer> {
        let id = &cookie_key(id);
        let expired = self.expired(self.sessions.get(id)?, now);
        if expired {
            self.sessions.remove(id);
            return None;
        }
        let slot = self.sessions.get_mut(id)?;
        slot.last_seen = now;
        Some(slot.viewer.clone())
    }

    /// Ends a session.
    pub fn remove(&mut self, id: &str) -> Option<Viewer> {
        self.sessions.remove(&cookie_key(id)).map(|s| s.viewer)
    }

    /// Whether the session is still open (idle ones count until purged).
    pub fn contains(&self, id: &str) -> bool {
        self.sessions.contains_key(&cookie_key(id))
    }

    /// The sessions to store: live ones, with their last use on the wall
    /// clock (`now` is `now_unix` seconds since the epoch).
    pub fn snapshot(&self, now: Instant, now_unix: u64) -> Vec<StoredSession> {
        let mut out: Vec<StoredSession> = self
            .sessions
            .iter()
            .filter(|(_, slot)| !self.expired(slot, now) && slot.viewer.kind != ViewerKind::Anonymous)
            .map(|(key, slot)| StoredSession {
                cookie_sha256: key.clone(),
                kind: slot.viewer.kind,
                name: slot.viewer.name.to_string(),
                credential: hex(&slot.viewer.credential),
                last_seen_unix: now_unix
                    .saturating_sub(now.saturating_duration_since(slot.last_seen).as_secs()),
            })
            .collect();
        out.sort_by(|a, b| a.cookie_sha256.cmp(&b.cookie_sha256));
        out
    }

    /// Takes back stored sessions (at start) whose viewer `current` still
    /// knows with the same credentials and that have not been idle too
    /// long; returns how many came back.
    pub fn restore(
        &mut self,
        stored: Vec<StoredSession>,
        mut current: impl FnMut(&Viewer) -> Option<Viewer>,
        now: Instant,
        now_unix: u64,
    ) -> usize {
        let mut n = 0;
        for s in stored {
            // Last seen in the future: the clock went back (a lost RTC, a
            // bad NTP step), so how long it was idle is unknown: not taken back.
            if s.last_seen_unix > now_unix.saturating_add(CLOCK_SLACK_SECS) {
                continue;
            }
            let idle_for = Duration::from_secs(now_unix.saturating_sub(s.last_seen_unix));
            let (Some(last_seen), Some(credential)) =
                (now.checked_sub(idle_for), credential_from_hex(&s.credential))
            else {
                continue;
            };
            if idle_for >= self.idle || s.cookie_sha256.len() != 64 || self.sessions.len() >= self.max {
                continue;
            }
            let was = Viewer {
                name: Arc::from(s.name.as_str()),
                kind: s.kind,
                scope: Arc::new(Scope::ALL),
                ptz: false,
                login: None,
                credential,
            };
            if let Some(viewer) = current(&was) {
                self.sessions.insert(s.cookie_sha256, SessionSlot { viewer, last_seen });
                n += 1;
            }
        }
        n
    }

    /// Gives every session its viewer as `current` now sees it, ending those
    /// for which it says `None`; returns how many ended.
    pub fn refresh(&mut self, mut current: impl FnMut(&Viewer) -> Option<Viewer>) -> usize {
        let before = self.sessions.len();
        self.sessions.retain(|_, slot| match current(&slot.viewer) {
            Some(viewer) => {
                slot.viewer = viewer;
                true
            }
            None => false,
        });
        before - self.sessions.len()
    }

    /// Live (not yet purged) sessions.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.sessions.len()
    }
}

/// How far in the future a stored session's last use may be (clock steps
/// between the save and the restart) and still be taken back.
const CLOCK_SLACK_SECS: u64 = 60;

/// A new session id: 256 random bits, hex.
pub fn new_session_id() -> String {
    hex(&rand::random::<[u8; 32]>())
}

fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// What the session table (and the file) keeps of a cookie: its SHA-256.
fn cookie_key(cookie: &str) -> String {
    hex(&sha256(cookie.as_bytes()))
}

fn credential_from_hex(text: &str) -> Option<[u8; 8]> {
    if text.len() != 16 {
        return None;
    }
    u64::from_str_radix(text, 16).ok().map(u64::to_be_bytes)
}

// ---- failed-login brake (sans-IO) -------------------------------------------

/// Per-client limit on login attempts: `burst` attempts at once, then one
/// per `interval` (a GCRA). Every attempt is charged when it starts, so
/// parallel guesses cannot slip past; a successful one is refunded.
///
/// A client is its address. An IPv6 /64 (one SLAAC LAN, or one host that
/// owns a whole /64 and rotates through it) has a limit of its own,
/// [`PREFIX_FACTOR`] times looser: a host cannot lock every operator of its
/// LAN out by failing logins, and one that hops addresses is still braked.
pub struct LoginThrottle {
    per_address: Gcra,
    per_prefix: Gcra,
}

/// How many times more attempts an IPv6 /64 gets than one address of it.
pub const PREFIX_FACTOR: u32 = 16;

/// One generic cell rate limit per key, remembering at most `max_keys` keys.
struct Gcra {
    /// Per key: when its charged attempts will have drained.
    drained: HashMap<IpAddr, Instant>,
    burst: u32,
    interval: Duration,
    max_keys: usize,
}

impl Gcra {
    fn new(burst: u32, interval: Duration, max_keys: usize) -> Self {
        Self { drained: HashMap::new(), burst: burst.max(1), interval, max_keys: max_keys.max(1) }
    }

    /// When `key`'s attempts drain now, or how long it must wait.
    fn check(&self, key: IpAddr, now: Instant) -> Result<Instant, Duration> {
        let tolerance = self.interval.saturating_mul(self.burst - 1);
        let drained = self.drained.get(&key).copied().unwrap_or(now).max(now);
        let allowed_at = drained.checked_sub(tolerance).unwrap_or(now);
        if allowed_at > now {
            return Err(allowed_at - now);
        }
        Ok(drained)
    }

    /// Charges an attempt that [`Gcra::check`] allowed.
    fn charge(&mut self, key: IpAddr, drained: Instant, now: Instant) {
        if !self.drained.contains_key(&key) && self.drained.len() >= self.max_keys {
            self.drained.retain(|_, d| *d > now);
            if self.drained.len() >= self.max_keys {
                let oldest = self.drained.iter().min_by_key(|(_, d)| **d).map(|(k, _)| *k);
                if let Some(oldest) = oldest {
                    self.drained.remove(&oldest);
                }
            }
        }
        self.drained.insert(key, drained + self.interval);
    }

    fn refund(&mut self, key: IpAddr, now: Instant) {
        if let Some(drained) = self.drained.get_mut(&key) {
            *drained = drained.checked_sub(self.interval).unwrap_or(now);
            if *drained <= now {
                self.drained.remove(&key);
            }
        }
    }
}

impl LoginThrottle {
    /// A limiter remembering at most `max_clients` clients (and as many /64s).
    pub fn new(burst: u32, interval: Duration, max_clients: usize) -> Self {
        Self {
            per_address: Gcra::new(burst, interval, max_clients),
            per_prefix: Gcra::new(burst.saturating_mul(PREFIX_FACTOR), interval / PREFIX_FACTOR, max_clients),
        }
    }

    /// Charges an attempt by `client`, or says how long it must wait.
    pub fn begin(&mut self, client: IpAddr, now: Instant) -> Result<(), Duration> {
        let (address, prefix) = throttle_keys(client);
        let by_address = self.per_address.check(address, now);
        let by_prefix = prefix.map(|p| self.per_prefix.check(p, now)).transpose();
        match (by_address, by_prefix) {
            (Ok(a), Ok(p)) => {
                self.per_address.charge(address, a, now);
                if let (Some(key), Some(p)) = (prefix, p) {
                    self.per_prefix.charge(key, p, now);
                }
                Ok(())
            }
            (Err(a), Err(p)) => Err(a.max(p)),
            (Err(wait), _) | (_, Err(wait)) => Err(wait),
        }
    }

    /// How long `client` must wait before its next attempt, without
    /// charging one; `None` when it may try now.
    pub fn wait(&self, client: IpAddr, now: Instant) -> Option<Duration> {
        let (address, prefix) = throttle_keys(client);
        let by_address = self.per_address.check(address, now).err();
        let by_prefix = prefix.and_then(|p| self.per_prefix.check(p, now).err());
        by_address.max(by_prefix)
    }

    /// Refunds the attempt of a client whose credentials were right.
    pub fn succeeded(&mut self, client: IpAddr, now: Instant) {
        let (address, prefix) = throttle_keys(client);
        self.per_address.refund(address, now);
        if let Some(prefix) = prefix {
            self.per_prefix.refund(prefix, now);
        }
    }

    /// Clients remembered.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.per_address.drained.len()
    }
}

/// The address a login attempt is charged to (an IPv4-mapped IPv6 address
/// as its IPv4), and for IPv6 also its /64.
fn throttle_keys(ip: IpAddr) -> (IpAddr, Option<IpAddr>) {
    match ip {
        IpAddr::V4(_) => (ip, None),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => (IpAddr::V4(v4), None),
            None => {
                let s = v6.segments();
                (ip, Some(IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))))
            }
        },
    }
}

// ---- recently verified Basic credentials -------------------------------------

/// RTSP clients send their credentials with every request; argon2 on each
/// would cost tens of milliseconds. A keyed hash of credentials verified in
/// the last `ttl` skips it (the key is random per process, so the cache is
/// useless to anyone reading memory without it).
struct VerifiedCache {
    key: [u8; 32],
    entries: HashMap<[u8; 32], (Viewer, Instant)>,
    ttl: Duration,
    max: usize,
}

impl VerifiedCache {
    fn new(ttl: Duration, max: usize) -> Self {
        Self { key: rand::random(), entries: HashMap::new(), ttl, max: max.max(1) }
    }

    fn slot(&self, user: &str, password: &str) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(self.key);
        h.update(user.as_bytes());
        h.update([0]);
        h.update(password.as_bytes());
        h.finalize().into()
    }

    fn get(&mut self, user: &str, password: &str, now: Instant) -> Option<Viewer> {
        let slot = self.slot(user, password);
        let (viewer, at) = self.entries.get(&slot)?;
        if now.saturating_duration_since(*at) < self.ttl {
            return Some(viewer.clone());
        }
        self.entries.remove(&slot);
        None
    }

    fn put(&mut self, user: &str, password: &str, viewer: Viewer, now: Instant) {
        if self.entries.len() >= self.max {
            let ttl = self.ttl;
            self.entries.retain(|_, (_, at)| now.saturating_duration_since(*at) < ttl);
            if self.entries.len() >= self.max {
                self.entries.clear();
            }
        }
        let slot = self.slot(user, password);
        self.entries.insert(slot, (viewer, now));
    }

    fn clear(&mut self) {
        self.entries.clear();
    }
}

// ---- the service -------------------------------------------------------------

/// Tunables of authentication.
#[derive(Debug, Clone)]
pub struct AuthSettings {
    /// A browser session ends after this long unused.
    pub session_idle: Duration,
    /// Most browser sessions kept.
    pub max_sessions: usize,
    /// Every failed login is answered this much later.
    pub failed_login_delay: Duration,
    /// Login attempts a client may make at once ...
    pub login_burst: u32,
    /// ... then one per this interval.
    pub login_interval: Duration,
    /// Clients the login brake remembers.
    pub max_clients: usize,
    /// How long verified Basic credentials skip argon2.
    pub verified_ttl: Duration,
    /// On a relay without accounts, whether the anonymous viewer may steer
    /// PTZ cameras (`relay.open_ptz`; trusted rooms and the demo only).
    pub open_ptz: bool,
    /// Where browser sessions are kept across restarts (`None`: in memory only).
    pub sessions_file: Option<std::path::PathBuf>,
}

impl Default for AuthSettings {
    fn default() -> Self {
        Self {
            session_idle: Duration::from_secs(12 * 3600),
            max_sessions: 10_000,
            failed_login_delay: Duration::from_secs(1),
            login_burst: 5,
            login_interval: Duration::from_secs(12),
            max_clients: 4096,
            verified_ttl: Duration::from_secs(600),
            open_ptz: false,
            sessions_file: None,
        }
    }
}

/// A live stream as an egress (WHEP, RTSP) keeps it, for [`Auth::sweep`].
pub trait LiveStream {
    /// Its viewer, camera and quality.
    fn watching(&mut self) -> (&mut Viewer, &str, Quality);
}

/// What a reload of accounts changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReloadReport {
    /// `[[viewer]]` accounts now.
    pub viewers: usize,
    /// `[[token]]`s now.
    pub tokens: usize,
    /// Browser sessions ended because their viewer is gone.
    pub logins_ended: usize,
}

/// Why a login was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Wrong user name, password or token (which one is not told).
    BadCredentials,
    /// Too many attempts from this client: retry after this long.
    Throttled(Duration),
}

/// Accounts, sessions and the login brake, shared by every egress.
pub struct Auth {
    /// Swapped whole by [`Auth::reload`].
    accounts: Mutex<Arc<Accounts>>,
    /// Bumped when accounts are reloaded or a browser logs out: live
    /// streams check their viewer again ([`Auth::recheck`]).
    changes: watch::Sender<u64>,
    settings: AuthSettings,
    audit: Arc<RelayAudit>,
    sessions: Mutex<SessionTable>,
    /// Held while the sessions file is written: writes go out in order.
    saving: Mutex<()>,
    /// A session was used since the file was last written (its idle time moved).
    sessions_used: std::sync::atomic::AtomicBool,
    throttle: Mutex<LoginThrottle>,
    verified: Mutex<VerifiedCache>,
    /// argon2 takes ~20 MiB and a core for tens of ms: at most two at once.
    hashing: Semaphore,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Each table stays consistent even if a holder panicked.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Auth {
    /// Authentication with these accounts, writing logins to `audit`.
    pub fn new(accounts: Accounts, audit: Arc<RelayAudit>, settings: AuthSettings) -> Self {
        let mut sessions = SessionTable::new(settings.session_idle, settings.max_sessions);
        if let Some(path) = &settings.sessions_file {
            match session_store::load(path) {
                Ok(stored) => {
                    let kept = stored.len();
                    let back = sessions.restore(stored, |v| accounts.current(v), Instant::now(), unix_now());
                    info!(file = %path.display(), restored = back, dropped = kept - back, "browser sessions restored");
                }
                Err(e) => warn!("browser sessions not restored, operators log in again: {e:#}"),
            }
        }
        Self {
            accounts: Mutex::new(Arc::new(accounts)),
            changes: watch::Sender::new(0),
            sessions: Mutex::new(sessions),
            saving: Mutex::new(()),
            sessions_used: std::sync::atomic::AtomicBool::new(false),
            throttle: Mutex::new(LoginThrottle::new(
                settings.login_burst,
                settings.login_interval,
                settings.max_clients,
            )),
            verified: Mutex::new(VerifiedCache::new(settings.verified_ttl, 256)),
            hashing: Semaphore::new(2),
            settings,
            audit,
        }
    }

    /// No accounts: every request is the anonymous viewer.
    pub fn open(audit: Arc<RelayAudit>) -> Self {
        Self::new(Accounts::default(), audit, AuthSettings::default())
    }

    /// True when the relay has no accounts and no tokens.
    pub fn is_open(&self) -> bool {
        self.accounts().is_open()
    }

    fn accounts(&self) -> Arc<Accounts> {
        lock(&self.accounts).clone()
    }

    /// True when some account can answer RTSP Digest.
    pub fn has_digest_accounts(&self) -> bool {
        self.accounts().has_digest()
    }

    /// Takes new accounts and tokens (a config reload): browser sessions of
    /// removed viewers end, the others see their new cameras; cached
    /// credentials are forgotten; live streams are told to check again.
    pub fn reload(&self, accounts: Accounts) -> ReloadReport {
        let accounts = Arc::new(accounts);
        let (viewers, tokens) = accounts.counts();
        *lock(&self.accounts) = accounts.clone();
        lock(&self.verified).clear();
        let logins_ended = lock(&self.sessions).refresh(|v| accounts.current(v));
        // At once: a session of a removed account must not come back with a restart.
        self.save_sessions();
        self.changes.send_modify(|n| *n += 1);
        ReloadReport { viewers, tokens, logins_ended }
    }

    /// Writes the browser sessions to `sessions_file` (blocking: call it
    /// off the async threads, or where a short wait is fine).
    pub fn save_sessions(&self) {
        let Some(path) = &self.settings.sessions_file else { return };
        let _saving = lock(&self.saving);
        self.sessions_used.store(false, std::sync::atomic::Ordering::Relaxed);
        let snapshot = lock(&self.sessions).snapshot(Instant::now(), unix_now());
        if let Err(e) = session_store::save(path, &snapshot) {
            warn!("browser sessions not saved: a restart may log operators out or keep a logged-out session: {e:#}");
        }
    }

    /// [`Auth::save_sessions`] on a blocking thread, waited for.
    pub async fn save_sessions_now(self: &Arc<Self>) {
        if self.settings.sessions_file.is_none() {
            return;
        }
        let me = self.clone();
        let _ = tokio::task::spawn_blocking(move || me.save_sessions()).await;
    }

    /// Saves the sessions every `every` when one was used meanwhile, so
    /// idle expiry counts from their last use after a restart too.
    pub fn spawn_session_saver(self: &Arc<Self>, every: Duration) {
        if self.settings.sessions_file.is_none() {
            return;
        }
        let me = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                let Some(auth) = me.upgrade() else { return };
                if auth.sessions_used.load(std::sync::atomic::Ordering::Relaxed) {
                    auth.save_sessions_now().await;
                }
            }
        });
    }

    /// Notified when accounts change or a browser logs out.
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// The viewer as the current accounts see it, or why it may no longer
    /// watch anything (account or token removed, its browser session logged
    /// out, an open relay that now has accounts).
    pub fn recheck(&self, viewer: &Viewer) -> Result<Viewer, String> {
        let now = match self.accounts().current(viewer) {
            Some(now) => now,
            None if viewer.kind == ViewerKind::Anonymous => {
                return Err("the relay now has accounts: viewers must log in".to_owned())
            }
            None => {
                return Err(format!(
                    "viewer `{}` was removed from the relay's accounts, or its credentials changed",
                    viewer.name
                ))
            }
        };
        if let Some(login) = &viewer.login {
            if !lock(&self.sessions).contains(login) {
                return Err(format!("viewer `{}` logged out", viewer.name));
            }
        }
        Ok(now.through_login(viewer.login.clone()))
    }

    /// [`Auth::recheck`], then whether the viewer as it is now may still
    /// watch `camera` at `quality`, as the site `catalog` lists it (a
    /// camera the site lost is the upstream's business). A stream the
    /// answer is `Err` for must end.
    pub fn may_still_watch(
        &self,
        viewer: &Viewer,
        catalog: &[CatalogEntry],
        camera: &str,
        quality: Quality,
    ) -> Result<Viewer, String> {
        let now = self.recheck(viewer)?;
        if let Some(cam) = catalog.iter().find(|c| c.id == camera) {
            now.check(cam, quality).map_err(|refusal| match refusal {
                ScopeRefusal::Hidden(why) | ScopeRefusal::Quality(why) => why,
            })?;
        }
        Ok(now)
    }

    /// After accounts changed: keeps the `streams` their viewer may still
    /// watch (each given its viewer as the accounts now see it), and takes
    /// out and returns the others, each with its id and why it must end.
    pub fn sweep<S: LiveStream>(
        &self,
        catalog: &[CatalogEntry],
        streams: &mut HashMap<String, S>,
    ) -> Vec<(String, S, String)> {
        let mut revoked = Vec::new();
        for (id, stream) in streams.iter_mut() {
            let (viewer, camera, quality) = stream.watching();
            match self.may_still_watch(viewer, catalog, camera, quality) {
                Ok(now) => *viewer = now,
                Err(why) => revoked.push((id.clone(), why)),
            }
        }
        revoked.into_iter().filter_map(|(id, why)| streams.remove(&id).map(|s| (id, s, why))).collect()
    }

    /// Charges a login attempt by `client`; `Err` while it must wait.
    pub fn begin_attempt(&self, client: IpAddr) -> Result<(), Refusal> {
        lock(&self.throttle).begin(client, Instant::now()).map_err(Refusal::Throttled)
    }

    /// A braked attempt, refused unchecked: audited and answered after the
    /// failed-login delay as a wrong password is, so the brake cannot be
    /// probed faster than passwords can be tried.
    pub async fn braked(&self, client: IpAddr, user: &str, via: &str, wait: Duration) -> Refusal {
        let why = format!(
            "refused unchecked: too many failed logins from this address (next try in {} s)",
            wait.as_secs().max(1)
        );
        self.login_failed(client, user, via, &why).await;
        Refusal::Throttled(wait)
    }

    /// Records a failed login (log, audit; the attempt stays charged).
    /// RTSP Digest failures go here too.
    pub fn record_failure(&self, client: IpAddr, user: &str, via: &str, why: &str) {
        // Whatever was typed as a user name goes to the log: keep it short.
        let user: String = user.chars().take(64).collect();
        warn!(viewer = %user, client = %client, via, "login failed: {why}");
        self.audit.login(&user, client, "failed", format!("{via}: {why}"));
    }

    /// [`Auth::record_failure`], then the failure delay.
    pub async fn login_failed(&self, client: IpAddr, user: &str, via: &str, why: &str) {
        self.record_failure(client, user, via, why);
        tokio::time::sleep(self.settings.failed_login_delay).await;
    }

    /// Records a successful login (audit, log) and refunds the attempt.
    pub fn login_ok(&self, client: IpAddr, viewer: &Viewer, via: &str) {
        lock(&self.throttle).succeeded(client, Instant::now());
        info!(viewer = viewer.name(), client = %client, via, "login");
        self.audit.login(viewer.name(), client, "ok", via.to_owned());
    }

    /// Checks a user name and password (an account, or a token name with the
    /// token as password) from `client`, e.g. RTSP Basic. Braked per client,
    /// audited; credentials verified in the last 10 minutes skip argon2 and
    /// the audit (RTSP clients repeat them on every request: one `login` line
    /// per 10 minutes, not one per request).
    pub async fn check_basic(
        &self,
        client: IpAddr,
        user: &str,
        password: &str,
        via: &str,
    ) -> Result<Viewer, Refusal> {
        // A braked client may not confirm a guess against credentials a
        // legitimate client had verified lately.
        let braked = lock(&self.throttle).wait(client, Instant::now());
        if let Some(wait) = braked {
            return Err(self.braked(client, user, via, wait).await);
        }
        let cached = lock(&self.verified).get(user, password, Instant::now());
        if let Some(viewer) = cached.and_then(|v| self.accounts().current(&v)) {
            return Ok(viewer);
        }
        let viewer = self.verify(client, user, password, via).await?;
        lock(&self.verified).put(user, password, viewer.clone(), Instant::now());
        Ok(viewer)
    }

    /// Braked, audited argon2 check, off the async threads.
    async fn verify(&self, client: IpAddr, user: &str, password: &str, via: &str) -> Result<Viewer, Refusal> {
        if let Err(Refusal::Throttled(wait)) = self.begin_attempt(client) {
            return Err(self.braked(client, user, via, wait).await);
        }
        let checked = {
            let _slot = self.hashing.acquire().await.map_err(|_| Refusal::BadCredentials)?;
            loop {
                let accounts = self.accounts();
                let (user, password) = (user.to_owned(), password.to_owned());
                let against = accounts.clone();
                let checked = tokio::task::spawn_blocking(move || against.verify_password(&user, &password))
                    .await
                    .unwrap_or(Err(BadCredentials::WrongPassword));
                // Accounts reloaded while hashing: check against the new ones.
                if Arc::ptr_eq(&accounts, &self.accounts()) {
                    break checked;
                }
            }
        };
        match checked {
            Ok(viewer) => {
                self.login_ok(client, &viewer, via);
                Ok(viewer)
            }
            Err(bad) => {
                self.login_failed(client, user, via, bad.reason()).await;
                Err(Refusal::BadCredentials)
            }
        }
    }

    /// Checks a bearer token from `client`.
    pub async fn check_bearer(&self, client: IpAddr, token: &str) -> Result<Viewer, Refusal> {
        if let Err(Refusal::Throttled(wait)) = self.begin_attempt(client) {
            return Err(self.braked(client, "?", "bearer token", wait).await);
        }
        match self.accounts().check_token(token) {
            Some(viewer) => {
                lock(&self.throttle).succeeded(client, Instant::now());
                Ok(viewer)
            }
            None => {
                self.login_failed(client, "?", "bearer token", "unknown token").await;
                Err(Refusal::BadCredentials)
            }
        }
    }

    /// RTSP Digest support: the HA1 of `user` and its viewer, when the
    /// account has `rtsp_digest_ha1`. The caller checks the response, then
    /// calls [`Auth::login_ok`] or [`Auth::login_failed`] (after
    /// [`Auth::begin_attempt`]).
    pub fn digest_ha1(&self, user: &str) -> Option<(String, Viewer)> {
        self.accounts().digest_ha1(user)
    }

    fn session(&self, id: &str) -> Option<Viewer> {
        let mut sessions = lock(&self.sessions);
        let stored = sessions.get(id, Instant::now())?;
        self.sessions_used.store(true, std::sync::atomic::Ordering::Relaxed);
        // A login that finished while a reload removed its account.
        let Some(viewer) = self.accounts().current(&stored) else {
            sessions.remove(id);
            return None;
        };
        Some(viewer.through_login(Some(Arc::from(id))))
    }

    /// Who is asking: the anonymous viewer on an open relay, else the
    /// session cookie's or the bearer token's viewer.
    pub async fn authenticate(&self, headers: &HeaderMap, client: IpAddr) -> Result<Viewer, Response> {
        if self.is_open() {
            return Ok(Viewer::anonymous().with_ptz(self.settings.open_ptz));
        }
        if let Some(value) = headers.get(header::AUTHORIZATION) {
            let token = value
                .to_str()
                .ok()
                .and_then(|v| v.split_once(' '))
                .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
                .map(|(_, token)| token.trim());
            let Some(token) = token else {
                return Err(unauthorized("only `Authorization: Bearer <token>` is accepted here"));
            };
            return self.check_bearer(client, token).await.map_err(|r| match r {
                Refusal::Throttled(wait) => throttled(wait),
                Refusal::BadCredentials => unauthorized("the bearer token is not valid for this relay"),
            });
        }
        match session_cookie(headers).and_then(|id| self.session(id)) {
            Some(viewer) => Ok(viewer),
            None if session_cookie(headers).is_some() => {
                Err(unauthorized("your session has expired or ended: log in again on the viewer page"))
            }
            None => Err(unauthorized(
                "authentication required: log in on the viewer page, or send `Authorization: Bearer <token>`",
            )),
        }
    }
}

// ---- HTTP ------------------------------------------------------------------

/// The client's IP address (unspecified when the server was not started
/// with connection info, e.g. in unit tests).
pub struct ClientIp(pub IpAddr);

impl<S: Send + Sync> FromRequestParts<S> for ClientIp {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let ip = parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip());
        Ok(ClientIp(ip.unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED))))
    }
}

fn text(status: StatusCode, message: &str) -> Response {
    (status, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], format!("{message}\n")).into_response()
}

fn unauthorized(message: &str) -> Response {
    let mut resp = text(StatusCode::UNAUTHORIZED, message);
    resp.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"ponte\""));
    resp
}

fn throttled(wait: Duration) -> Response {
    let secs = wait.as_secs() + 1;
    let mut resp =
        text(StatusCode::TOO_MANY_REQUESTS, &format!("too many failed logins from here: retry in {secs} s"));
    if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
        resp.headers_mut().insert(header::RETRY_AFTER, v);
    }
    resp
}

fn session_cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == SESSION_COOKIE)
        .map(|(_, value)| value.trim())
}

/// Layer for routes that need a viewer: puts the [`Viewer`] into the request
/// extensions, or answers 401 (429 while a client is braked).
pub async fn require_viewer(
    State(auth): State<Arc<Auth>>,
    ClientIp(client): ClientIp,
    mut req: Request,
    next: Next,
) -> Response {
    match auth.authenticate(req.headers(), client).await {
        Ok(viewer) => {
            req.extensions_mut().insert(viewer);
            next.run(req).await
        }
        Err(resp) => resp,
    }
}

/// [`require_viewer`] for routes that show the whole site (status): a
/// narrowed viewer gets 403, so it learns nothing of the cameras it may not see.
pub async fn require_whole_site(
    State(auth): State<Arc<Auth>>,
    ClientIp(client): ClientIp,
    mut req: Request,
    next: Next,
) -> Response {
    match auth.authenticate(req.headers(), client).await {
        Ok(viewer) if viewer.unrestricted() => {
            req.extensions_mut().insert(viewer);
            next.run(req).await
        }
        Ok(viewer) => text(
            StatusCode::FORBIDDEN,
            &format!(
                "viewer `{}` sees part of the site only; the status covers all of it: \
                 use an account without `max_quality` and without `cameras` (or with `cameras = [\"*\"]`)",
                viewer.name()
            ),
        ),
        Err(resp) => resp,
    }
}

/// `POST /login` and `POST /logout`.
pub fn router(auth: Arc<Auth>) -> Router {
    Router::new().route("/login", post(login)).route("/logout", post(logout)).with_state(auth)
}

#[derive(Deserialize)]
struct LoginForm {
    user: String,
    password: String,
}

/// `POST /login` (form: `user`, `password`) → 204 with the session cookie,
/// 401 on wrong credentials (after a delay), 429 while braked.
async fn login(
    State(auth): State<Arc<Auth>>,
    ClientIp(client): ClientIp,
    Form(form): Form<LoginForm>,
) -> Response {
    if auth.is_open() {
        return text(StatusCode::NOT_FOUND, "this relay has no accounts: no login is needed");
    }
    match auth.verify(client, form.user.trim(), &form.password, "web login").await {
        Ok(viewer) => {
            let id = new_session_id();
            lock(&auth.sessions).insert(id.clone(), viewer, Instant::now());
            auth.save_sessions_now().await;
            let cookie = format!("{SESSION_COOKIE}={id}; Path=/; HttpOnly; SameSite=Strict");
            let mut resp = StatusCode::NO_CONTENT.into_response();
            if let Ok(v) = HeaderValue::from_str(&cookie) {
                resp.headers_mut().insert(header::SET_COOKIE, v);
            }
            resp.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            resp
        }
        Err(Refusal::Throttled(wait)) => throttled(wait),
        Err(Refusal::BadCredentials) => unauthorized("wrong user name or password"),
    }
}

/// `POST /logout` → 204, the session ended and its cookie cleared.
async fn logout(State(auth): State<Arc<Auth>>, ClientIp(client): ClientIp, headers: HeaderMap) -> Response {
    if let Some(viewer) = session_cookie(&headers).and_then(|id| lock(&auth.sessions).remove(id)) {
        info!(viewer = viewer.name(), client = %client, "logout");
        auth.audit.logout(viewer.name(), client);
        // The streams this browser session opened end with it (first: the
        // save below may be slow, or this request dropped meanwhile).
        auth.changes.send_modify(|n| *n += 1);
        // On disk before the answer: a restart must not bring it back.
        auth.save_sessions_now().await;
    }
    let mut resp = StatusCode::NO_CONTENT.into_response();
    let clear = format!("{SESSION_COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0");
    if let Ok(v) = HeaderValue::from_str(&clear) {
        resp.headers_mut().insert(header::SET_COOKIE, v);
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;
    use ponte_proto::media::Codec;
    use proptest::prelude::*;

    fn cam(id: &str, zone: &str, kind: &str) -> CatalogEntry {
        CatalogEntry {
            id: id.to_owned(),
            device: id.split('-').next().unwrap_or(id).to_owned(),
            lens: 1,
            name: id.to_owned(),
            zone: zone.to_owned(),
            kind: kind.to_owned(),
            codec: Codec::H264,
            qualities: vec![Quality::Main, Quality::Sub],
            ptz: false,
            always_on: false,
        }
    }

    fn catalog() -> Vec<CatalogEntry> {
        vec![
            cam("zaist-mantova", "Zaist", "dome-ptz"),
            cam("po-lungofiume", "Po", "fixed"),
            cam("porta-1", "Centro", "fixed-quad-optic"),
            cam("porta-2", "Centro", "fixed-quad-optic"),
        ]
    }

    fn viewer(user: &str, phc: &str, cameras: Option<&[&str]>, max: Option<Quality>) -> ViewerConfig {
        ViewerConfig {
            user: user.into(),
            password_hash: phc.into(),
            cameras: cameras.map(|c| c.iter().map(|s| s.to_string()).collect()),
            max_quality: max,
            rtsp_digest_ha1: None,
            ptz: false,
        }
    }

    fn phc() -> &'static str {
        static PHC: OnceLock<String> = OnceLock::new();
        PHC.get_or_init(|| hash_password("correct horse").unwrap())
    }

    #[test]
    fn password_check_and_tokens() {
        assert!(phc().starts_with("$argon2id$v=19$"), "{}", phc());
        let (token, digest) = new_token();
        let accounts = Accounts::from_config(
            &[viewer("anna", phc(), None, None)],
            &[TokenConfig {
                name: "vms".into(),
                token_sha256: digest,
                cameras: None,
                max_quality: None,
                ptz: false,
            }],
        )
        .unwrap();
        assert!(!accounts.is_open());
        let anna = accounts.verify_password("anna", "correct horse").unwrap();
        assert_eq!((anna.name(), anna.kind()), ("anna", ViewerKind::Account));
        assert_eq!(
            accounts.verify_password("anna", "Correct horse").unwrap_err(),
            BadCredentials::WrongPassword
        );
        assert_eq!(
            accounts.verify_password("bruno", "correct horse").unwrap_err(),
            BadCredentials::UnknownUser
        );
        // A token name and its token work as user and password (RTSP Basic for a VMS).
        assert_eq!(accounts.verify_password("vms", &token).unwrap().kind(), ViewerKind::Token);
        assert!(accounts.verify_password("vms", "nope").is_err());
        assert_eq!(accounts.check_token(&token).unwrap().name(), "vms");
        assert!(accounts.check_token(&token[1..]).is_none());
        assert!(accounts.check_token("").is_none());
        assert!(accounts.digest_ha1("anna").is_none(), "no HA1 configured");
        assert!(Accounts::from_config(&[], &[]).unwrap().is_open());
    }

    #[test]
    fn digest_ha1_is_md5_of_user_realm_password() {
        // RFC 2617 style: MD5("Mufasa:ponte:Circle Of Life"), computed independently.
        let ha1 = digest_ha1("Mufasa", "Circle Of Life");
        assert_eq!(ha1.len(), 32);
        let mut v = viewer("Mufasa", phc(), None, None);
        v.rtsp_digest_ha1 = Some(ha1.to_uppercase());
        let accounts = Accounts::from_config(&[v], &[]).unwrap();
        let (got, viewer) = accounts.digest_ha1("Mufasa").unwrap();
        assert_eq!(got, ha1, "stored lower-case");
        assert_eq!(viewer.name(), "Mufasa");
    }

    #[test]
    fn config_errors_name_the_account_and_the_fix() {
        let cases: Vec<(Vec<ViewerConfig>, Vec<TokenConfig>, &str)> = vec![
            (vec![viewer("anna", "plain-text", None, None)], vec![], "`ponte-relay passwd`"),
            (
                vec![viewer(
                    "anna",
                    "$argon2i$v=19$m=16,t=2,p=1$c2FsdHNhbHQ$YWJjZGVmZ2hpamtsbW5vcA",
                    None,
                    None,
                )],
                vec![],
                "only argon2id",
            ),
            (vec![viewer("anna", phc(), Some(&["tag:hospital"]), None)], vec![], "cannot select by tag"),
            (vec![viewer("anna", phc(), Some(&["place:x"]), None)], vec![], "`cameras` entry"),
            (vec![viewer("an na", phc(), None, None)], vec![], "spaces"),
            (vec![viewer("anna", phc(), None, None), viewer("anna", phc(), None, None)], vec![], "twice"),
            (
                vec![viewer("vms", phc(), None, None)],
                vec![TokenConfig {
                    name: "vms".into(),
                    token_sha256: new_token().1,
                    cameras: None,
                    max_quality: None,
                    ptz: false,
                }],
                "twice",
            ),
            (
                vec![],
                vec![TokenConfig {
                    name: "vms".into(),
                    token_sha256: "abc".into(),
                    cameras: None,
                    max_quality: None,
                    ptz: false,
                }],
                "64 hex digits",
            ),
        ];
        for (viewers, tokens, needle) in cases {
            let err = match Accounts::from_config(&viewers, &tokens) {
                Ok(_) => panic!("accepted {needle}"),
                Err(e) => format!("{e:#}"),
            };
            assert!(err.contains(needle), "{err}");
            assert!(err.contains("anna") || err.contains("vms") || err.contains("an na"), "{err}");
        }
    }

    fn compiled(cameras: Option<&[&str]>, max: Option<Quality>) -> Viewer {
        let cameras: Option<Vec<String>> = cameras.map(|c| c.iter().map(|s| s.to_string()).collect());
        Viewer::new(
            "anna",
            ViewerKind::Account,
            Scope::compile("test", cameras.as_deref(), max).unwrap(),
            &[],
        )
    }

    #[test]
    fn narrowing_by_zone_device_type_camera_and_quality() {
        let ids = |v: &Viewer| v.narrow(catalog()).into_iter().map(|c| c.id).collect::<Vec<_>>();
        assert_eq!(ids(&compiled(None, None)).len(), 4);
        assert!(compiled(None, None).unrestricted());
        assert_eq!(ids(&compiled(Some(&["zone:zaist"]), None)), ["zaist-mantova"]);
        assert_eq!(ids(&compiled(Some(&["device:porta"]), None)), ["porta-1", "porta-2"]);
        assert_eq!(
            ids(&compiled(Some(&["type:fixed", "camera:porta-2"]), None)),
            ["po-lungofiume", "porta-2"]
        );
        assert!(ids(&compiled(Some(&[]), None)).is_empty(), "`cameras = []` sees nothing");
        assert_eq!(ids(&compiled(Some(&["*"]), None)).len(), 4);

        let sub_only = compiled(Some(&["zone:Zaist"]), Some(Quality::Sub));
        assert!(!sub_only.unrestricted());
        let narrowed = sub_only.narrow(catalog());
        assert_eq!(narrowed.len(), 1);
        assert_eq!(narrowed[0].qualities, [Quality::Sub]);
        let zaist = &catalog()[0];
        assert_eq!(sub_only.check(zaist, Quality::Sub), Ok(()));
        assert!(
            matches!(sub_only.check(zaist, Quality::Main), Err(ScopeRefusal::Quality(r)) if r.contains("`sub`"))
        );
        assert!(
            matches!(sub_only.check(&catalog()[1], Quality::Sub), Err(ScopeRefusal::Hidden(r)) if r.contains("po-lungofiume"))
        );
        // A camera offering only main disappears for a sub-only viewer.
        let mut main_only = cam("solo", "Zaist", "dome");
        main_only.qualities = vec![Quality::Main];
        assert!(!sub_only.may_see(&main_only));
        assert!(Viewer::anonymous().may_see(&main_only));
        assert_eq!(Viewer::anonymous().audit_name(), None);
        assert_eq!(sub_only.audit_name(), Some("anna"));
    }

    /// The PTZ right needs all three: the account's `ptz`, the camera in
    /// its set, and the site's own right (the catalog's `ptz`).
    #[test]
    fn steering_needs_the_account_right_the_camera_and_the_site_right() {
        let mut v = viewer("anna", phc(), Some(&["zone:Zaist", "zone:Po"]), None);
        v.ptz = true;
        let mut t = TokenConfig {
            name: "vms".into(),
            token_sha256: new_token().1,
            cameras: None,
            max_quality: None,
            ptz: false,
        };
        let accounts =
            Accounts::from_config(&[v.clone(), viewer("bruno", phc(), None, None)], &[t.clone()]).unwrap();
        let anna = accounts.accounts["anna"].viewer.clone();
        let bruno = accounts.accounts["bruno"].viewer.clone();
        let mut zaist = cam("zaist-mantova", "Zaist", "dome-ptz");
        let mut po = cam("po-lungofiume", "Po", "dome-ptz");
        zaist.ptz = true;
        assert!(anna.has_ptz_right() && anna.may_steer(&zaist));
        assert!(!anna.may_steer(&po), "the site may not steer it");
        po.ptz = true;
        let mut centro = cam("porta-1", "Centro", "dome-ptz");
        centro.ptz = true;
        assert!(!anna.may_steer(&centro), "outside anna's cameras");
        assert!(!bruno.has_ptz_right() && !bruno.may_steer(&zaist), "`ptz` defaults to false");
        assert!(!accounts.tokens[0].viewer.may_steer(&zaist));
        assert!(!Viewer::anonymous().may_steer(&zaist), "nobody steers on a relay without accounts");
        assert!(anna.unrestricted() == bruno.unrestricted() || !anna.unrestricted(), "ptz is no scope");
        t.ptz = true;
        let accounts = Accounts::from_config(&[], &[t]).unwrap();
        assert!(accounts.tokens[0].viewer.may_steer(&zaist));
        assert!(accounts.tokens[0].viewer.unrestricted(), "the right adds no camera and no quality");
        zaist.ptz = false;
        assert!(!accounts.tokens[0].viewer.may_steer(&zaist));
    }

    fn arb_selector() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("*".to_string()),
            "[a-d]".prop_map(|c| format!("camera:{c}")),
            "[a-d]".prop_map(|c| format!("device:{c}")),
            "[xyz]".prop_map(|z| format!("zone:{z}")),
            "(fixed|dome)".prop_map(|t| format!("type:{t}")),
        ]
    }

    fn arb_camera() -> impl Strategy<Value = CatalogEntry> {
        ("[a-d]", "[xyz]", "(fixed|dome)", any::<bool>(), any::<bool>()).prop_map(
            |(id, zone, kind, main, sub)| {
                let mut c = cam(&id, &zone, &kind);
                c.qualities = [(main, Quality::Main), (sub, Quality::Sub)]
                    .into_iter()
                    .filter_map(|(on, q)| on.then_some(q))
                    .collect();
                c
            },
        )
    }

    proptest! {
        /// A viewer's catalog is always a subset of the site's, camera by
        /// camera and quality by quality, and `check` agrees with it.
        #[test]
        fn narrowing_never_widens(
            selectors in proptest::option::of(proptest::collection::vec(arb_selector(), 0..4)),
            sub_only in any::<bool>(),
            site in proptest::collection::vec(arb_camera(), 0..6),
        ) {
            let refs: Option<Vec<&str>> = selectors.as_ref().map(|s| s.iter().map(String::as_str).collect());
            let v = compiled(refs.as_deref(), sub_only.then_some(Quality::Sub));
            let narrowed = v.narrow(site.clone());
            let mut expected = Vec::new();
            for c in &site {
                let one = v.narrow(vec![c.clone()]);
                prop_assert!(one.len() <= 1);
                if let Some(n) = one.first() {
                    prop_assert_eq!(&CatalogEntry { qualities: c.qualities.clone(), ..n.clone() }, c);
                    prop_assert!(!n.qualities.is_empty());
                    prop_assert!(n.qualities.iter().all(|q| c.qualities.contains(q)));
                    prop_assert!(!(sub_only && n.qualities.contains(&Quality::Main)));
                }
                for q in [Quality::Main, Quality::Sub] {
                    let listed = one.first().is_some_and(|n| n.qualities.contains(&q));
                    prop_assert_eq!(v.check(c, q).is_ok(), listed);
                }
                prop_assert_eq!(v.may_see(c), !one.is_empty());
                expected.extend(one);
            }
            prop_assert_eq!(narrowed, expected);
        }
    }

    #[test]
    fn sessions_expire_when_idle_and_use_keeps_them() {
        let t0 = Instant::now();
        let hour = Duration::from_secs(3600);
        let mut table = SessionTable::new(12 * hour, 3);
        table.insert("a".into(), compiled(None, None), t0);
        assert!(table.get("a", t0 + 11 * hour).is_some(), "used at 11 h");
        assert!(table.get("a", t0 + 22 * hour).is_some(), "11 h after its last use");
        assert!(table.get("a", t0 + 34 * hour).is_none(), "12 h idle: gone");
        assert!(table.get("a", t0 + 34 * hour).is_none());
        assert_eq!(table.len(), 0);
        assert!(table.get("unknown", t0).is_none());
        table.insert("b".into(), compiled(None, None), t0);
        assert!(table.remove("b").is_some());
        assert!(table.get("b", t0).is_none(), "logged out");
        // Bounded: the least recently used goes first.
        for (i, id) in ["c", "d", "e"].into_iter().enumerate() {
            table.insert(id.into(), compiled(None, None), t0 + Duration::from_secs(i as u64));
        }
        assert!(table.get("c", t0 + Duration::from_secs(10)).is_some());
        table.insert("f".into(), compiled(None, None), t0 + Duration::from_secs(11));
        assert_eq!(table.len(), 3);
        assert!(table.get("d", t0 + Duration::from_secs(12)).is_none(), "d was least recently used");
        assert!(table.get("c", t0 + Duration::from_secs(12)).is_some());
        assert_eq!(new_session_id().len(), 64);
        assert_ne!(new_session_id(), new_session_id());
    }

    #[test]
    fn stored_sessions_come_back_by_cookie_hash_unless_idle_or_unknown() {
        let t0 = Instant::now();
        let hour = Duration::from_secs(3600);
        let unix = 1_800_000_000;
        let mut table = SessionTable::new(12 * hour, 10);
        table.insert("cookie-a".into(), compiled(None, None), t0);
        table.insert("cookie-old".into(), compiled(None, None), t0);
        assert!(table.get("cookie-a", t0 + 10 * hour).is_some());
        let stored = table.snapshot(t0 + 11 * hour, unix);
        assert_eq!(stored.len(), 2);
        assert!(stored.iter().all(|s| s.cookie_sha256.len() == 64 && !s.cookie_sha256.contains("cookie")));
        // Restarted two hours later: `cookie-old` was idle 13 h by then.
        let t1 = Instant::now() + 24 * hour;
        let mut back = SessionTable::new(12 * hour, 10);
        let n = back.restore(stored.clone(), |v| Some(v.clone()), t1, unix + 2 * 3600);
        assert_eq!(n, 1);
        assert!(back.get("cookie-a", t1).is_some());
        assert!(back.get("cookie-old", t1).is_none());
        // An account the config no longer has (or with other credentials) stays out.
        let mut gone = SessionTable::new(12 * hour, 10);
        assert_eq!(gone.restore(stored.clone(), |_| None, t1, unix), 0);
        assert!(gone.get("cookie-a", t1).is_none());
        // A clock that went back a day: how long they were idle is unknown.
        let mut behind = SessionTable::new(12 * hour, 10);
        assert_eq!(behind.restore(stored, |v| Some(v.clone()), t1, unix - 24 * 3600), 0);
    }

    #[test]
    fn throttle_allows_a_burst_then_one_per_interval_per_client() {
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        let mut th = LoginThrottle::new(5, 12 * s, 2);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        for _ in 0..5 {
            assert_eq!(th.begin(a, t0), Ok(()));
        }
        assert_eq!(th.begin(a, t0), Err(12 * s));
        assert_eq!(th.begin(a, t0 + 11 * s), Err(s));
        assert_eq!(th.begin(b, t0), Ok(()), "another client is not affected");
        assert_eq!(th.begin(a, t0 + 12 * s), Ok(()));
        assert!(th.begin(a, t0 + 13 * s).is_err(), "one per interval after the burst");
        // A success refunds its attempt.
        th.succeeded(b, t0);
        assert_eq!(th.len(), 1);
        // Memory stays bounded: a third client pushes the oldest out.
        let c: IpAddr = "10.0.0.3".parse().unwrap();
        th.begin(b, t0 + 13 * s).unwrap();
        th.begin(c, t0 + 13 * s).unwrap();
        assert!(th.len() <= 2);
        // IPv6 clients count per address: one braked host does not lock its
        // /64 out, but the /64 as a whole has a looser limit of its own.
        let mut th = LoginThrottle::new(1, 12 * s, 100);
        let host = |n: u16| IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, n));
        th.begin(host(1), t0).unwrap();
        assert!(th.begin(host(1), t0).is_err(), "the guessing host is braked");
        for n in 2..=PREFIX_FACTOR as u16 {
            assert_eq!(th.begin(host(n), t0), Ok(()), "a colleague on the same LAN logs in");
        }
        assert!(th.begin(host(999), t0).is_err(), "a host hopping through its /64 is braked too");
        assert!(th.begin("2001:db8:0:1::1".parse().unwrap(), t0).is_ok(), "another /64 is not");
        th.succeeded(host(2), t0);
        assert!(th.begin(host(1000), t0).is_ok(), "a success refunds the /64 too");
    }

    #[test]
    fn verified_cache_expires() {
        let t0 = Instant::now();
        let mut cache = VerifiedCache::new(Duration::from_secs(600), 2);
        cache.put("anna", "pw", compiled(None, None), t0);
        assert!(cache.get("anna", "pw", t0 + Duration::from_secs(599)).is_some());
        assert!(cache.get("anna", "pw2", t0).is_none());
        assert!(cache.get("ann", "apw", t0).is_none(), "user and password are separated");
        assert!(cache.get("anna", "pw", t0 + Duration::from_secs(600)).is_none());
    }

    #[test]
    fn cookie_is_found_among_others() {
        let mut h = HeaderMap::new();
        h.append(header::COOKIE, HeaderValue::from_static("a=1; ponte_session=abc ; b=2"));
        assert_eq!(session_cookie(&h), Some("abc"));
        let mut h = HeaderMap::new();
        h.append(header::COOKIE, HeaderValue::from_static("x=1"));
        h.append(header::COOKIE, HeaderValue::from_static("ponte_session=def"));
        assert_eq!(session_cookie(&h), Some("def"));
        assert_eq!(session_cookie(&HeaderMap::new()), None);
    }

    #[tokio::test]
    async fn check_basic_brakes_audits_and_caches() {
        let dir = std::env::temp_dir().join(format!("ponte-auth-basic-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let path = dir.join("audit.log");
        let audit = Arc::new(RelayAudit::open(&path, "carabinieri", 1 << 20).unwrap());
        let accounts = Accounts::from_config(&[viewer("anna", phc(), None, None)], &[]).unwrap();
        let settings = AuthSettings {
            failed_login_delay: Duration::from_millis(10),
            login_burst: 2,
            ..AuthSettings::default()
        };
        let auth = Auth::new(accounts, audit, settings);
        let ip: IpAddr = "192.0.2.7".parse().unwrap();
        let ok = auth.check_basic(ip, "anna", "correct horse", "rtsp").await.unwrap();
        assert_eq!(ok.name(), "anna");
        // Cached: no second audit line.
        auth.check_basic(ip, "anna", "correct horse", "rtsp").await.unwrap();
        assert_eq!(auth.check_basic(ip, "anna", "wrong", "rtsp").await.unwrap_err(), Refusal::BadCredentials);
        assert_eq!(auth.check_basic(ip, "nobody", "x", "rtsp").await.unwrap_err(), Refusal::BadCredentials);
        assert!(matches!(auth.check_basic(ip, "anna", "wrong", "rtsp").await, Err(Refusal::Throttled(_))));
        // Braked, even the right (cached) password is refused unchecked.
        let braked = auth.check_basic(ip, "anna", "correct horse", "rtsp").await;
        assert!(matches!(braked, Err(Refusal::Throttled(_))), "{braked:?}");
        let log = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<serde_json::Value> = log.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        let outcomes: Vec<&str> = lines.iter().map(|l| l["outcome"].as_str().unwrap()).collect();
        assert_eq!(outcomes, ["ok", "failed", "failed", "failed", "failed"], "{log}");
        assert!(lines[4]["reason"].as_str().unwrap().contains("refused unchecked"), "{log}");
        assert_eq!(lines[1]["reason"], "rtsp: wrong password");
        assert_eq!(lines[2]["viewer"], "nobody");
        assert!(!log.contains("correct horse") && !log.contains("\"wrong\""), "{log}");
        let _ = std::fs::remove_dir_all(&dir);
    }
    #[tokio::test]
    async fn reload_and_logout_revoke_exactly_what_they_take_away() {
        let audit = Arc::new(RelayAudit::disabled("carabinieri"));
        let (token, digest) = new_token();
        let vms = |cameras: Option<Vec<String>>| TokenConfig {
            name: "vms".into(),
            token_sha256: digest.clone(),
            cameras,
            max_quality: None,
            ptz: false,
        };
        let before = Accounts::from_config(
            &[viewer("anna", phc(), None, None), viewer("zaist", phc(), None, None)],
            &[vms(None)],
        )
        .unwrap();
        let auth = Auth::new(before, audit, AuthSettings::default());
        let mut changes = auth.changes();
        let ip: IpAddr = "192.0.2.9".parse().unwrap();
        let anna = auth.verify(ip, "anna", "correct horse", "test").await.unwrap();
        let zaist = auth.verify(ip, "zaist", "correct horse", "test").await.unwrap();
        lock(&auth.sessions).insert("s-anna".into(), anna, Instant::now());
        lock(&auth.sessions).insert("s-zaist".into(), zaist, Instant::now());
        let anna = auth.session("s-anna").unwrap();
        let zaist = auth.session("s-zaist").unwrap();
        let vms_viewer = auth.accounts().check_token(&token).unwrap();
        let cat = catalog();
        for v in [&anna, &zaist, &vms_viewer] {
            assert!(auth.may_still_watch(v, &cat, "po-lungofiume", Quality::Main).is_ok(), "{}", v.name());
        }

        // Zaist is removed, the VMS narrowed to one camera at `sub`, anna stays.
        let after = Accounts::from_config(
            &[viewer("anna", phc(), None, None)],
            &[TokenConfig {
                max_quality: Some(Quality::Sub),
                ..vms(Some(vec!["camera:zaist-mantova".into()]))
            }],
        )
        .unwrap();
        let report = auth.reload(after);
        assert_eq!(report, ReloadReport { viewers: 1, tokens: 1, logins_ended: 1 });
        assert!(changes.has_changed().unwrap(), "live streams are told");
        changes.mark_unchanged();
        assert!(auth.may_still_watch(&anna, &cat, "po-lungofiume", Quality::Main).is_ok());
        let gone = auth.may_still_watch(&zaist, &cat, "po-lungofiume", Quality::Main).unwrap_err();
        assert_eq!(gone, "viewer `zaist` was removed from the relay's accounts, or its credentials changed");
        assert!(auth.session("s-zaist").is_none(), "zaist's browser session ended");
        let hidden = auth.may_still_watch(&vms_viewer, &cat, "po-lungofiume", Quality::Main).unwrap_err();
        assert!(hidden.contains("outside the cameras of viewer `vms`"), "{hidden}");
        let capped = auth.may_still_watch(&vms_viewer, &cat, "zaist-mantova", Quality::Main).unwrap_err();
        assert!(capped.contains("at `sub` quality only"), "{capped}");
        assert!(auth.may_still_watch(&vms_viewer, &cat, "zaist-mantova", Quality::Sub).is_ok());
        assert!(
            auth.may_still_watch(&vms_viewer, &cat, "gone-camera", Quality::Main).is_ok(),
            "a camera the site lost is the upstream's business"
        );
        // Cached credentials of a removed account no longer pass.
        assert_eq!(
            auth.check_basic(ip, "zaist", "correct horse", "rtsp").await.unwrap_err(),
            Refusal::BadCredentials
        );

        // A new token under the same name: the old one's streams end.
        let (_, new_digest) = new_token();
        auth.reload(
            Accounts::from_config(
                &[viewer("anna", phc(), None, None)],
                &[TokenConfig { token_sha256: new_digest, ..vms(None) }],
            )
            .unwrap(),
        );
        let changed = auth.may_still_watch(&vms_viewer, &cat, "zaist-mantova", Quality::Sub).unwrap_err();
        assert!(changed.contains("credentials changed"), "{changed}");
        assert!(auth.accounts().check_token(&token).is_none());

        // Logging out revokes what that browser session opened, nothing else.
        let other = auth.verify(ip, "anna", "correct horse", "test").await.unwrap();
        lock(&auth.sessions).insert("s-anna-2".into(), other, Instant::now());
        let other = auth.session("s-anna-2").unwrap();
        lock(&auth.sessions).remove("s-anna");
        let out = auth.may_still_watch(&anna, &cat, "po-lungofiume", Quality::Main).unwrap_err();
        assert_eq!(out, "viewer `anna` logged out");
        assert!(auth.may_still_watch(&other, &cat, "po-lungofiume", Quality::Main).is_ok());

        // An open relay that gets accounts: the anonymous viewer must log in.
        let open = Auth::open(Arc::new(RelayAudit::disabled("carabinieri")));
        let anonymous = Viewer::anonymous();
        assert!(open.may_still_watch(&anonymous, &cat, "po-lungofiume", Quality::Main).is_ok());
        open.reload(Accounts::from_config(&[viewer("anna", phc(), None, None)], &[]).unwrap());
        let closed = open.may_still_watch(&anonymous, &cat, "po-lungofiume", Quality::Main).unwrap_err();
        assert!(closed.contains("must log in"), "{closed}");
    }
}
