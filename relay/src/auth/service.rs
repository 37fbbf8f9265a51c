//! [`Auth`]: accounts, sessions, the login brake and the verified cache
//! behind one handle shared by every egress.

use super::accounts::BadCredentials;
use super::cache::VerifiedCache;
use super::http::{forbidden, not_found, session_cookie, throttled, unauthorized};
use super::pair_token::{self, PairClaims, PairKey, SeenTokens};
use super::session_store;
use super::sessions::unix_now;
use super::{lock, Accounts, LoginThrottle, ScopeRefusal, SessionTable, Viewer, ViewerKind};
use crate::audit::RelayAudit;
use axum::http::{header, HeaderMap};
use axum::response::Response;
use ponte_proto::media::Quality;
use ponte_proto::wire::CatalogEntry;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{watch, Semaphore};
use tracing::{info, warn};

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
    /// A browser session ends this long after its login, however busy
    /// (`relay.session_max_hours`).
    pub session_max_age: Duration,
    /// The session cookie is `Secure` (the viewer port serves HTTPS).
    pub secure_cookie: bool,
    /// The relay pair of the site (`relay.pair_key_file`): pair tokens are
    /// issued and taken. `None`: a relay alone.
    pub pair: Option<PairSettings>,
}

/// What a relay of a pair needs for pair tokens.
#[derive(Debug, Clone)]
pub struct PairSettings {
    /// The secret the relays of the site share.
    pub key: PairKey,
    /// This relay's site: tokens of another are refused.
    pub site: String,
}

/// A pair token issued to a logged-in page.
#[derive(Debug, Clone, serde::Serialize)]
pub struct IssuedPairToken {
    /// The bearer value for the peer relays.
    pub token: String,
    /// When it ends, seconds since the Unix epoch.
    pub expires_unix: u64,
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
            session_max_age: Duration::from_secs(12 * 3600),
            secure_cookie: false,
            pair: None,
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

/// Why a bearer token gets no pair token (after its name).
const TOKEN_NEEDS_NO_PAIR: &str = "is a bearer token: it works at the other relays of the site as it is \
     (give them the same [[token]] table)";
/// Why a pair login gets no pair token: its life stays bounded by the login it came from.
const PAIR_FOR_SESSIONS_ONLY: &str =
    "a pair token is issued to a browser session logged in at this relay, not to another pair token";

/// Accounts, sessions and the login brake, shared by every egress.
pub struct Auth {
    /// Swapped whole by [`Auth::reload`].
    accounts: Mutex<Arc<Accounts>>,
    /// Bumped when accounts are reloaded or a browser logs out: live
    /// streams check their viewer again ([`Auth::recheck`]).
    pub(super) changes: watch::Sender<u64>,
    settings: AuthSettings,
    pub(super) audit: Arc<RelayAudit>,
    pub(super) sessions: Mutex<SessionTable>,
    /// Held while the sessions file is written: writes go out in order.
    saving: Mutex<()>,
    /// A session was used since the file was last written (its idle time moved).
    sessions_used: std::sync::atomic::AtomicBool,
    throttle: Mutex<LoginThrottle>,
    verified: Mutex<VerifiedCache>,
    /// Pair tokens already used here (their first use is the audited login).
    pair_seen: Mutex<SeenTokens>,
    /// argon2 takes ~20 MiB and a core for tens of ms: at most two at once.
    hashing: Semaphore,
}

impl Auth {
    /// Authentication with these accounts, writing logins to `audit`.
    pub fn new(accounts: Accounts, audit: Arc<RelayAudit>, settings: AuthSettings) -> Self {
        let mut sessions = SessionTable::new(settings.session_idle, settings.max_sessions)
            .with_max_age(settings.session_max_age);
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
            pair_seen: Mutex::new(SeenTokens::default()),
            hashing: Semaphore::new(2),
            settings,
            audit,
        }
    }

    /// No accounts: every request is the anonymous viewer.
    pub fn open(audit: Arc<RelayAudit>) -> Self {
        Self::new(Accounts::default(), audit, AuthSettings::default())
    }

    /// The attributes of the session cookie: `Secure` over HTTPS.
    pub(super) fn cookie_attributes(&self) -> &'static str {
        if self.settings.secure_cookie {
            "Path=/; HttpOnly; SameSite=Strict; Secure"
        } else {
            "Path=/; HttpOnly; SameSite=Strict"
        }
    }

    /// Whether the viewer port serves HTTPS.
    pub(super) fn is_https(&self) -> bool {
        self.settings.secure_cookie
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
        let now = now.through_login(viewer.login.clone());
        Ok(match &viewer.pair {
            Some(nonce) => now.through_pair(nonce),
            None => now,
        })
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
    pub(super) async fn verify(
        &self,
        client: IpAddr,
        user: &str,
        password: &str,
        via: &str,
    ) -> Result<Viewer, Refusal> {
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
        if pair_token::is_pair_token(token) {
            return self.check_pair(client, token).await;
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

    /// Checks a pair token (the attempt already charged): signed with the
    /// pair key, for this site, not expired, for an account this relay has
    /// with the same credentials. The token's first use is audited as a
    /// login naming the relay that issued it.
    async fn check_pair(&self, client: IpAddr, token: &str) -> Result<Viewer, Refusal> {
        const VIA: &str = "pair login";
        let Some(pair) = &self.settings.pair else {
            self.login_failed(client, "?", VIA, "a pair token, but this relay has no `relay.pair_key_file`")
                .await;
            return Err(Refusal::BadCredentials);
        };
        let now = unix_now();
        let claims = match pair_token::verify(&pair.key, token, &pair.site, now) {
            Ok(claims) => claims,
            Err(e) => {
                self.login_failed(client, e.user().unwrap_or("?"), VIA, &e.to_string()).await;
                return Err(Refusal::BadCredentials);
            }
        };
        let refused = match self.accounts().account(&claims.user) {
            None => Err(format!("no account `{}` here (token issued by {})", claims.user, claims.iss)),
            Some(viewer) if viewer.credential_hex() != claims.cred => Err(format!(
                "account `{}` has other credentials here than at {}: give every relay of the site the same \
                 [[viewer]] table",
                claims.user, claims.iss
            )),
            Some(viewer) => Ok(viewer),
        };
        let viewer = match refused {
            Ok(viewer) => viewer,
            Err(why) => {
                self.login_failed(client, &claims.user, VIA, &why).await;
                return Err(Refusal::BadCredentials);
            }
        };
        lock(&self.throttle).succeeded(client, Instant::now());
        if lock(&self.pair_seen).first_use(&claims.nonce, claims.exp, now) {
            info!(viewer = %claims.user, client = %client, issuer = %claims.iss, "pair login");
            self.audit.login(
                &claims.user,
                client,
                "ok",
                format!(
                    "{VIA}: token issued by relay {} at {} (its relay stopped answering, or the page moved here)",
                    claims.iss,
                    ponte_proto::audit::rfc3339(std::time::UNIX_EPOCH + Duration::from_secs(claims.iat))
                ),
            );
        }
        Ok(viewer.through_pair(&claims.nonce))
    }

    /// A pair token for the page of a browser session: its account, this
    /// site, issued by `issuer` (the relay as the page reaches it), valid
    /// 12 h and never past the session's own end.
    pub async fn issue_pair_token(
        &self,
        headers: &HeaderMap,
        client: IpAddr,
        issuer: &str,
    ) -> Result<IssuedPairToken, Response> {
        let Some(pair) = &self.settings.pair else {
            return Err(not_found("this relay has no relay pair (`relay.peers`, `relay.pair_key_file`)"));
        };
        if self.is_open() {
            return Err(not_found("this relay has no accounts: its peers need no login either"));
        }
        let viewer = self.authenticate(headers, client).await?;
        let session = match (&viewer.kind, &viewer.login, &viewer.pair) {
            (ViewerKind::Account, Some(login), None) => login.clone(),
            (ViewerKind::Token, ..) => {
                return Err(forbidden(&format!("`{}` {TOKEN_NEEDS_NO_PAIR}", viewer.name)))
            }
            _ => return Err(forbidden(PAIR_FOR_SESSIONS_ONLY)),
        };
        let left = lock(&self.sessions).remaining(&session, Instant::now());
        let Some(left) = left else {
            return Err(unauthorized("your session has expired or ended: log in again"));
        };
        let now = unix_now();
        let life = left.as_secs().min(pair_token::MAX_LIFETIME_SECS);
        let claims = PairClaims {
            site: pair.site.clone(),
            user: viewer.name.to_string(),
            cred: viewer.credential_hex(),
            iss: issuer.to_owned(),
            iat: now,
            exp: now.saturating_add(life),
            nonce: hex::encode(rand::random::<[u8; 16]>()),
        };
        info!(viewer = %claims.user, client = %client, expires_in_secs = life, "pair token issued");
        Ok(IssuedPairToken { token: pair_token::issue(&pair.key, &claims), expires_unix: claims.exp })
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::fixtures::*;
    use crate::auth::{new_token, TokenConfig};

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

    #[tokio::test]
    async fn pair_tokens_log_in_at_the_peer_once_audited_and_only_for_its_own_accounts() {
        let dir = std::env::temp_dir().join(format!("ponte-auth-pair-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let (path_a, path_b) = (dir.join("a.log"), dir.join("b.log"));
        let open = |p: &std::path::Path| Arc::new(RelayAudit::open(p, "carabinieri", 1 << 20).unwrap());
        let settings = |key: u8, site: &str| AuthSettings {
            failed_login_delay: Duration::from_millis(1),
            pair: Some(PairSettings { key: PairKey::new(&[key; 32]).unwrap(), site: site.into() }),
            ..AuthSettings::default()
        };
        let (token, digest) = new_token();
        let both = [viewer("anna", phc(), None, None), viewer("zaist", phc(), None, None)];
        let vms = TokenConfig::new("vms", digest);
        let a = Auth::new(
            Accounts::from_config(&both, std::slice::from_ref(&vms)).unwrap(),
            open(&path_a),
            settings(1, "carabinieri"),
        );
        let b = Auth::new(
            Accounts::from_config(&both[..1], &[]).unwrap(),
            open(&path_b),
            settings(1, "carabinieri"),
        );
        let ip: IpAddr = "192.0.2.20".parse().unwrap();
        let cookie = |id: &str| {
            let mut h = HeaderMap::new();
            h.insert(header::COOKIE, format!("ponte_session={id}").parse().unwrap());
            h
        };
        for user in ["anna", "zaist"] {
            let v = a.verify(ip, user, "correct horse", "web login").await.unwrap();
            lock(&a.sessions).insert(format!("s-{user}"), v, Instant::now());
        }
        let issued = a.issue_pair_token(&cookie("s-anna"), ip, "https://relay-a:8443").await.unwrap();
        assert!(
            issued.expires_unix > unix_now() + 11 * 3600 && issued.expires_unix <= unix_now() + 12 * 3600
        );

        // At the peer: anna, as a pair login, audited once however often used.
        let anna = b.check_bearer(ip, &issued.token).await.unwrap();
        assert!(anna.name() == "anna" && anna.is_pair_login() && anna.unrestricted());
        b.check_bearer(ip, &issued.token).await.unwrap();
        let lines = std::fs::read_to_string(&path_b).unwrap();
        assert_eq!(
            lines.matches("pair login: token issued by relay https://relay-a:8443").count(),
            1,
            "{lines}"
        );
        // Each page's token is its own holder: another page's cannot end its streams.
        let other = a.issue_pair_token(&cookie("s-anna"), ip, "https://relay-a:8443").await.unwrap();
        let anna2 = b.check_bearer(ip, &other.token).await.unwrap();
        assert!(anna.same_account(&anna2) && !anna.same_holder(&anna2));
        assert!(b.recheck(&anna).unwrap().same_holder(&anna), "a recheck keeps the pair login");

        // An account the peer does not have.
        let zaist = a.issue_pair_token(&cookie("s-zaist"), ip, "https://relay-a:8443").await.unwrap();
        assert_eq!(b.check_bearer(ip, &zaist.token).await.unwrap_err(), Refusal::BadCredentials);
        // Another key; another site with the same key.
        let x = Auth::new(
            Accounts::from_config(&both, &[]).unwrap(),
            Arc::new(RelayAudit::disabled("c")),
            settings(2, "carabinieri"),
        );
        let q = Auth::new(
            Accounts::from_config(&both, &[]).unwrap(),
            Arc::new(RelayAudit::disabled("q")),
            settings(1, "questura"),
        );
        for other in [&x, &q] {
            let v = other.verify(ip, "anna", "correct horse", "web login").await.unwrap();
            lock(&other.sessions).insert("s".into(), v, Instant::now());
            let t = other.issue_pair_token(&cookie("s"), ip, "https://x").await.unwrap();
            assert_eq!(b.check_bearer(ip, &t.token).await.unwrap_err(), Refusal::BadCredentials);
        }
        let lines = std::fs::read_to_string(&path_b).unwrap();
        for why in ["no account `zaist` here", "not signed with this relay", "of site `questura`"] {
            assert!(lines.contains(why), "{why}: {lines}");
        }

        // Only a browser session logged in here gets a token.
        let mut bearer = HeaderMap::new();
        bearer.insert(header::AUTHORIZATION, format!("Bearer {token}").parse().unwrap());
        let refused = a.issue_pair_token(&bearer, ip, "https://relay-a:8443").await.unwrap_err();
        assert_eq!(refused.status(), axum::http::StatusCode::FORBIDDEN);
        let mut pair = HeaderMap::new();
        pair.insert(header::AUTHORIZATION, format!("Bearer {}", issued.token).parse().unwrap());
        let chained = b.issue_pair_token(&pair, ip, "https://relay-b:8443").await.unwrap_err();
        assert_eq!(chained.status(), axum::http::StatusCode::FORBIDDEN, "no token from a token");

        // Revocation: anna removed at the peer; her token and her streams there end.
        b.reload(Accounts::from_config(&[viewer("bruno", phc(), None, None)], &[]).unwrap());
        assert!(b.recheck(&anna).is_err());
        // (Four failures from this address so far: under the brake's burst of five.)
        assert_eq!(b.check_bearer(ip, &issued.token).await.unwrap_err(), Refusal::BadCredentials);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
