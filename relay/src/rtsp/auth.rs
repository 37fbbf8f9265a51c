//! RTSP authentication: Digest (RFC 2617 / RFC 7616 with MD5) and, when the
//! relay is configured for it, Basic, against the relay's viewer accounts
//! ([`crate::auth::Auth`]: the same accounts, tokens, login brake and audit
//! as the web side). A relay without accounts is open: every client is the
//! anonymous viewer.
//!
//! Digest works for `[[viewer]]` accounts that carry `rtsp_digest_ha1`
//! (realm [`RTSP_REALM`]); Basic (argon2id passwords, or a token name with
//! the token as password) only when `[rtsp] basic = true`, since it sends
//! the password in clear on the site LAN.
//!
//! Nonces are stateless: the issue time and an HMAC-SHA256 over it (the
//! first 128 bits, so a nonce is as long as it was with MD5), so a nonce
//! can be checked and aged without a table; an expired one is answered with
//! `stale=TRUE` and clients retry without asking the user again.
//!
//! The login brake holds as on the web login: every answer to a challenge
//! takes an attempt *before* it is verified, so a braked client is refused
//! even with the right password and learns nothing; every refusal, braked
//! ones included, is audited and answered only after the failed-login delay,
//! so guesses cannot run at line rate. Two things need no attempt: a stale
//! nonce of ours (nothing is verified, the client retries), and a request on
//! a connection that already proved that user's password (clients repeat
//! their credentials with every request; only a new user is a new guess).
//! The Digest `uri` must name the request's own URI: an answer captured on
//! the wire cannot be replayed against another camera.

use crate::auth::{Auth, Refusal, Viewer, RTSP_REALM};
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use hmac::digest::KeyInit;
use hmac::{Hmac, Mac};
use md5::{Digest as _, Md5};
use rtsp_types::Url;
use sha2::Sha256;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;
use subtle::ConstantTimeEq;

/// Bytes of the HMAC-SHA256 tag a nonce carries (128 bits).
const NONCE_TAG_LEN: usize = 16;

/// How long a nonce is accepted after it was issued.
pub const NONCE_TTL: Duration = Duration::from_secs(300);

/// Result of checking a request's credentials.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// The viewer (the anonymous one on a relay without accounts).
    Viewer(Viewer),
    /// Missing or wrong credentials: answer 401 with [`RtspAuth::challenges`].
    Challenge {
        /// The nonce expired: the client retries with a fresh one.
        stale: bool,
    },
    /// Too many failed attempts from this client: retry after this long.
    Throttled(Duration),
}

/// The request whose credentials are checked.
#[derive(Debug, Clone, Copy)]
pub struct Asked<'a> {
    /// Its method (`DESCRIBE`, ...), part of the Digest hash.
    pub method: &'a str,
    /// Its URI; `None` for `*`.
    pub uri: Option<&'a Url>,
    /// The user whose password this connection already proved, if any.
    pub proven: Option<&'a str>,
}

/// Checks RTSP credentials against the relay's accounts.
pub struct RtspAuth {
    auth: Arc<Auth>,
    allow_basic: bool,
    /// HMAC key of the nonces: one SHA-256 block, random per process.
    secret: [u8; 64],
    nonce_ttl: Duration,
}

impl RtspAuth {
    /// RTSP authentication over `auth`; Basic only when `allow_basic`.
    pub fn new(auth: Arc<Auth>, allow_basic: bool) -> Self {
        Self { auth, allow_basic, secret: rand::random(), nonce_ttl: NONCE_TTL }
    }

    /// The relay's accounts these credentials are checked against.
    pub fn accounts(&self) -> &Arc<Auth> {
        &self.auth
    }

    /// Records a successful RTSP login (audit, and refunds the login brake).
    pub fn login_ok(&self, client: IpAddr, viewer: &Viewer, via: &str) {
        self.auth.login_ok(client, viewer, via);
    }

    /// Checks the `Authorization` header of request `asked` from `client`
    /// at `now` (seconds since the Unix epoch). `Viewer` from Digest is not
    /// yet recorded as a login: the caller calls [`RtspAuth::login_ok`] once
    /// per connection (which refunds the attempt), so each request does not
    /// write an audit line.
    pub async fn check(
        &self,
        asked: Asked<'_>,
        authorization: Option<&str>,
        client: IpAddr,
        now: u64,
    ) -> Outcome {
        if self.auth.is_open() {
            return Outcome::Viewer(Viewer::anonymous());
        }
        let Some(value) = authorization else { return Outcome::Challenge { stale: false } };
        let (scheme, rest) = value.trim().split_once(' ').unwrap_or((value.trim(), ""));
        if scheme.eq_ignore_ascii_case("digest") {
            self.check_digest(asked, rest, client, now).await
        } else if scheme.eq_ignore_ascii_case("basic") && self.allow_basic {
            self.check_basic(rest.trim(), client).await
        } else {
            // A scheme we did not offer: nothing to verify, ask again.
            Outcome::Challenge { stale: false }
        }
    }

    async fn check_basic(&self, token: &str, client: IpAddr) -> Outcome {
        let decoded = BASE64.decode(token).ok().and_then(|b| String::from_utf8(b).ok());
        let (user, password) = decoded.as_deref().and_then(|s| s.split_once(':')).unwrap_or(("?", ""));
        if decoded.as_deref().and_then(|s| s.split_once(':')).is_none() {
            if let Err(Refusal::Throttled(wait)) = self.auth.begin_attempt(client) {
                return self.braked(client, user, "RTSP Basic", wait).await;
            }
            self.auth.login_failed(client, user, "RTSP Basic", "malformed Basic credentials").await;
            return Outcome::Challenge { stale: false };
        }
        // Braked before anything is verified (its cache too), audited and
        // delayed by `Auth` itself.
        match self.auth.check_basic(client, user, password, "RTSP Basic").await {
            Ok(viewer) => Outcome::Viewer(viewer),
            Err(Refusal::BadCredentials) => Outcome::Challenge { stale: false },
            Err(Refusal::Throttled(wait)) => Outcome::Throttled(wait),
        }
    }

    async fn check_digest(&self, asked: Asked<'_>, params: &str, client: IpAddr, now: u64) -> Outcome {
        let p = parse_params(params);
        let get = |k: &str| p.iter().find(|(n, _)| n.eq_ignore_ascii_case(k)).map(|(_, v)| v.as_str());
        let user = get("username").unwrap_or("?");
        let nonce = get("nonce").unwrap_or_default();
        let age = self.nonce_age(nonce, now);
        // An expired nonce of ours: nothing is verified (so nothing is
        // learnt, whatever the password); the client retries with a fresh one.
        if age.is_some_and(|age| age > self.nonce_ttl.as_secs()) {
            return Outcome::Challenge { stale: true };
        }
        if asked.proven != Some(user) {
            if let Err(Refusal::Throttled(wait)) = self.auth.begin_attempt(client) {
                return self.braked(client, user, "RTSP Digest", wait).await;
            }
        }
        match self.verify_digest(asked, &get, age) {
            Ok(viewer) => Outcome::Viewer(viewer),
            Err(why) => {
                self.auth.login_failed(client, user, "RTSP Digest", &why).await;
                Outcome::Challenge { stale: false }
            }
        }
    }

    /// The viewer whose password the Digest answer proves, or why not.
    fn verify_digest<'p>(
        &self,
        asked: Asked<'_>,
        get: &impl Fn(&str) -> Option<&'p str>,
        age: Option<u64>,
    ) -> Result<Viewer, String> {
        let (Some(user), Some(realm), Some(nonce), Some(uri), Some(response)) =
            (get("username"), get("realm"), get("nonce"), get("uri"), get("response"))
        else {
            return Err(
                "malformed Digest answer (username, realm, nonce, uri and response are needed)".into()
            );
        };
        if realm != RTSP_REALM {
            return Err(format!("Digest realm {:?} is not {RTSP_REALM:?}", short(realm)));
        }
        if get("algorithm").is_some_and(|a| !a.eq_ignore_ascii_case("md5")) {
            return Err("Digest algorithm other than MD5".into());
        }
        if age.is_none() {
            return Err("a Digest nonce this relay did not issue (forged, or from before a restart)".into());
        }
        if !uri_matches(uri, asked.uri) {
            let request = asked.uri.map_or_else(|| "*".to_owned(), Url::to_string);
            return Err(format!(
                "Digest uri {:?} does not match the request URI {:?} (a replayed answer?)",
                short(uri),
                short(&request)
            ));
        }
        let Some((ha1, viewer)) = self.auth.digest_ha1(user) else {
            return Err("unknown user, or an account without `rtsp_digest_ha1`".into());
        };
        let expected = digest_response(&ha1, asked.method, uri, nonce, get("qop"), get("nc"), get("cnonce"))
            .ok_or_else(|| "Digest qop other than `auth`, or qop without nc and cnonce".to_owned())?;
        if !bool::from(expected.as_bytes().ct_eq(response.to_ascii_lowercase().as_bytes())) {
            return Err("wrong password".into());
        }
        Ok(viewer)
    }

    /// A braked attempt: audited and answered after the failed-login delay,
    /// as a wrong password would be, so the brake cannot be probed faster.
    async fn braked(&self, client: IpAddr, user: &str, via: &str, wait: Duration) -> Outcome {
        self.auth.braked(client, user, via, wait).await;
        Outcome::Throttled(wait)
    }

    /// `WWW-Authenticate` values for a 401 at `now`: Digest, then Basic when
    /// allowed. With Basic allowed and no account able to answer Digest
    /// (none has `rtsp_digest_ha1`), Basic alone: clients such as ffmpeg
    /// and GStreamer pick Digest whenever it is offered, and a token or an
    /// account without HA1 would then never get in.
    pub fn challenges(&self, stale: bool, now: u64) -> Vec<String> {
        let basic = format!("Basic realm=\"{RTSP_REALM}\"");
        if self.allow_basic && !self.auth.has_digest_accounts() {
            return vec![basic];
        }
        // No `qop`: RFC 2069-style Digest is what every RTSP client speaks;
        // answers with `qop=auth` are accepted all the same.
        let mut digest =
            format!("Digest realm=\"{RTSP_REALM}\", nonce=\"{}\", algorithm=MD5", self.nonce(now));
        if stale {
            digest.push_str(", stale=TRUE");
        }
        let mut out = vec![digest];
        if self.allow_basic {
            out.push(basic);
        }
        out
    }

    fn mac(&self, issued: &str) -> Hmac<Sha256> {
        let mut mac = <Hmac<Sha256> as KeyInit>::new((&self.secret).into());
        mac.update(issued.as_bytes());
        mac
    }

    fn nonce(&self, now: u64) -> String {
        let issued = format!("{now:016x}");
        let tag = self.mac(&issued).finalize().into_bytes();
        // A SHA-256 tag is 32 bytes, NONCE_TAG_LEN is 16.
        format!("{issued}{}", hex::encode(tag.get(..NONCE_TAG_LEN).unwrap_or(&tag)))
    }

    /// Seconds since a nonce we issued was made; `None` if we did not issue it.
    fn nonce_age(&self, nonce: &str, now: u64) -> Option<u64> {
        let (issued, tag) = (nonce.get(..16)?, nonce.get(16..)?);
        let mut tag_bytes = [0u8; NONCE_TAG_LEN];
        hex::decode_to_slice(tag, &mut tag_bytes).ok()?;
        // Constant time, so the tag cannot be guessed byte by byte.
        self.mac(issued).verify_truncated_left(&tag_bytes).ok()?;
        let at = u64::from_str_radix(issued, 16).ok()?;
        Some(now.saturating_sub(at))
    }
}

/// Whether a Digest `uri` names the request's own URI: the same absolute
/// URL, or its path (and query) alone, as some clients send; `*` for a
/// request on `*`.
fn uri_matches(digest_uri: &str, request: Option<&Url>) -> bool {
    let Some(url) = request else { return digest_uri == "*" };
    if digest_uri.starts_with('/') {
        let path = match url.query() {
            Some(q) => format!("{}?{q}", url.path()),
            None => url.path().to_owned(),
        };
        return digest_uri == path;
    }
    let Ok(named) = Url::parse(digest_uri) else { return false };
    let host = |u: &Url| u.host_str().map(str::to_ascii_lowercase);
    named.scheme() == url.scheme()
        && host(&named) == host(url)
        && named.port() == url.port()
        && named.path() == url.path()
        && named.query() == url.query()
}

/// At most 64 characters of a peer's value, for the log and the audit.
fn short(s: &str) -> String {
    s.chars().take(64).collect()
}

/// The Digest `response` a client holding `ha1` must send (RFC 2617 §3.2.2),
/// with or without `qop=auth`; `None` for another qop or missing fields.
fn digest_response(
    ha1: &str,
    method: &str,
    uri: &str,
    nonce: &str,
    qop: Option<&str>,
    nc: Option<&str>,
    cnonce: Option<&str>,
) -> Option<String> {
    let ha2 = md5_hex(format!("{method}:{uri}").as_bytes());
    match qop {
        None => Some(md5_hex(format!("{ha1}:{nonce}:{ha2}").as_bytes())),
        Some(qop) if qop.eq_ignore_ascii_case("auth") => {
            Some(md5_hex(format!("{ha1}:{nonce}:{}:{}:{qop}:{ha2}", nc?, cnonce?).as_bytes()))
        }
        Some(_) => None,
    }
}

fn md5_hex(data: &[u8]) -> String {
    hex::encode(Md5::digest(data))
}

/// Parses `k=v, k="quoted, value"` lists (auth-param syntax).
fn parse_params(s: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = s.trim();
    while !rest.is_empty() {
        let Some(eq) = rest.find('=') else { break };
        let key = rest[..eq].trim().trim_start_matches(',').trim().to_owned();
        rest = rest[eq + 1..].trim_start();
        let value;
        if let Some(after) = rest.strip_prefix('"') {
            let mut v = String::new();
            let mut chars = after.char_indices();
            let mut end = after.len();
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => {
                        if let Some((_, n)) = chars.next() {
                            v.push(n);
                        }
                    }
                    '"' => {
                        end = i + 1;
                        break;
                    }
                    c => v.push(c),
                }
            }
            value = v;
            rest = after.get(end..).unwrap_or("");
        } else {
            let end = rest.find(',').unwrap_or(rest.len());
            value = rest[..end].trim().to_owned();
            rest = &rest[end..];
        }
        rest = rest.trim_start().trim_start_matches(',').trim_start();
        out.push((key, value));
    }
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::audit::RelayAudit;
    use crate::auth::{hash_password, Accounts, AuthSettings, TokenConfig, ViewerConfig};

    /// Accounts: `vms` (Digest and Basic, every camera), `guard` (Digest,
    /// only `cam-a`), `basic-only` (no HA1), token `nvr`.
    pub fn test_auth() -> Arc<Auth> {
        let settings =
            AuthSettings { failed_login_delay: Duration::from_millis(1), ..AuthSettings::default() };
        Arc::new(Auth::new(test_auth_accounts(), Arc::new(RelayAudit::disabled("test")), settings))
    }

    /// The accounts of [`test_auth`].
    fn test_auth_accounts() -> Accounts {
        let viewer = |user: &str, password: &str, cameras: Option<Vec<String>>, digest: bool| ViewerConfig {
            user: user.into(),
            password_hash: hash_password(password).expect("hashing"),
            cameras,
            max_quality: None,
            rtsp_digest_ha1: digest.then(|| crate::auth::digest_ha1(user, password)),
            ptz: false,
        };
        let viewers = vec![
            viewer("vms", "s3cret-vms", None, true),
            viewer("guard", "guard-pw", Some(vec!["camera:cam-a".into()]), true),
            viewer("basic-only", "basic-pw", None, false),
        ];
        let tokens = vec![TokenConfig {
            name: "nvr".into(),
            token_sha256: hex::encode(<sha2::Sha256 as sha2::Digest>::digest(b"nvr-token")),
            cameras: None,
            max_quality: None,
            ptz: false,
        }];
        Accounts::from_config(&viewers, &tokens).expect("accounts")
    }

    /// What a client computes for a challenge (RFC 2069 style, or with qop).
    pub fn digest_answer(
        challenge: &str,
        user: &str,
        password: &str,
        method: &str,
        uri: &str,
        qop: bool,
    ) -> String {
        let p = parse_params(challenge.trim_start_matches("Digest "));
        let get = |k: &str| p.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone()).unwrap_or_default();
        let (realm, nonce) = (get("realm"), get("nonce"));
        let ha1 = md5_hex(format!("{user}:{realm}:{password}").as_bytes());
        if qop {
            let response =
                digest_response(&ha1, method, uri, &nonce, Some("auth"), Some("00000001"), Some("abcd"))
                    .unwrap_or_default();
            format!(
                "Digest username=\"{user}\", realm=\"{realm}\", nonce=\"{nonce}\", uri=\"{uri}\", \
                 response=\"{response}\", qop=auth, nc=00000001, cnonce=\"abcd\""
            )
        } else {
            let response = digest_response(&ha1, method, uri, &nonce, None, None, None).unwrap_or_default();
            format!("Digest username=\"{user}\", realm=\"{realm}\", nonce=\"{nonce}\", uri=\"{uri}\", response=\"{response}\"")
        }
    }

    fn name(o: &Outcome) -> Option<&str> {
        match o {
            Outcome::Viewer(v) => Some(v.name()),
            _ => None,
        }
    }

    const CLIENT: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

    fn url(s: &str) -> Url {
        Url::parse(s).expect("a URL")
    }

    /// `method` on `uri`, on a connection that proved no password yet.
    fn asked<'a>(method: &'a str, uri: &'a Url) -> Asked<'a> {
        Asked { method, uri: Some(uri), proven: None }
    }

    #[tokio::test]
    async fn open_relay_means_anonymous() {
        let auth = RtspAuth::new(Arc::new(Auth::open(Arc::new(RelayAudit::disabled("t")))), false);
        let u = url("rtsp://h/c");
        assert_eq!(name(&auth.check(asked("DESCRIBE", &u), None, CLIENT, 0).await), Some("anonymous"));
    }

    #[tokio::test]
    async fn digest_right_wrong_and_stale() {
        let auth = RtspAuth::new(test_auth(), false);
        let t0 = 1_700_000_000;
        let uri = "rtsp://127.0.0.1:8554/cam-a";
        let u = url(uri);
        assert!(matches!(
            auth.check(asked("DESCRIBE", &u), None, CLIENT, t0).await,
            Outcome::Challenge { stale: false }
        ));
        let challenge = &auth.challenges(false, t0)[0];
        assert!(challenge.starts_with("Digest realm=\"ponte\", nonce=\""), "{challenge}");
        for qop in [false, true] {
            let right = digest_answer(challenge, "vms", "s3cret-vms", "DESCRIBE", uri, qop);
            assert_eq!(
                name(&auth.check(asked("DESCRIBE", &u), Some(&right), CLIENT, t0 + 5).await),
                Some("vms")
            );
            let stale =
                auth.check(asked("DESCRIBE", &u), Some(&right), CLIENT, t0 + NONCE_TTL.as_secs() + 1).await;
            assert!(matches!(stale, Outcome::Challenge { stale: true }));
        }
        // The method is part of the hash.
        let right = digest_answer(challenge, "vms", "s3cret-vms", "DESCRIBE", uri, false);
        assert!(name(&auth.check(asked("SETUP", &u), Some(&right), CLIENT, t0).await).is_none());
        let wrong = digest_answer(challenge, "vms", "guess", "DESCRIBE", uri, false);
        assert!(matches!(
            auth.check(asked("DESCRIBE", &u), Some(&wrong), CLIENT, t0).await,
            Outcome::Challenge { stale: false }
        ));
        let no_ha1 = digest_answer(challenge, "basic-only", "basic-pw", "DESCRIBE", uri, false);
        assert!(name(&auth.check(asked("DESCRIBE", &u), Some(&no_ha1), CLIENT, t0).await).is_none());
        // A nonce we did not issue is refused even with the right password.
        let forged = challenge.replace("nonce=\"", "nonce=\"0");
        let forged = digest_answer(&forged, "vms", "s3cret-vms", "DESCRIBE", uri, false);
        assert!(name(&auth.check(asked("DESCRIBE", &u), Some(&forged), CLIENT, t0).await).is_none());
        // Basic is refused unless configured.
        let basic = format!("Basic {}", BASE64.encode("vms:s3cret-vms"));
        assert!(name(&auth.check(asked("DESCRIBE", &u), Some(&basic), CLIENT, t0).await).is_none());
        assert_eq!(auth.challenges(true, t0).len(), 1);
        assert!(auth.challenges(true, t0)[0].ends_with("stale=TRUE"));
    }

    #[tokio::test]
    async fn basic_when_configured_accepts_passwords_and_tokens() {
        let auth = RtspAuth::new(test_auth(), true);
        let client = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 9));
        let u = url("rtsp://h/c");
        for (user, password) in [("basic-only", "basic-pw"), ("nvr", "nvr-token")] {
            let ok = format!("Basic {}", BASE64.encode(format!("{user}:{password}")));
            assert_eq!(name(&auth.check(asked("DESCRIBE", &u), Some(&ok), client, 0).await), Some(user));
        }
        for bad in ["Basic !!!", "Basic Z3VhcmQ=", "Bearer x"] {
            assert!(name(&auth.check(asked("DESCRIBE", &u), Some(bad), client, 0).await).is_none(), "{bad}");
        }
        assert_eq!(auth.challenges(false, 0)[1], "Basic realm=\"ponte\"");
    }

    #[test]
    fn basic_alone_is_offered_when_no_account_can_answer_digest() {
        let token = TokenConfig {
            name: "vms".into(),
            token_sha256: hex::encode(<sha2::Sha256 as sha2::Digest>::digest(b"vms-token")),
            cameras: None,
            max_quality: None,
            ptz: false,
        };
        let accounts = Accounts::from_config(&[], std::slice::from_ref(&token)).expect("accounts");
        let auth =
            Arc::new(Auth::new(accounts, Arc::new(RelayAudit::disabled("test")), AuthSettings::default()));
        let rtsp = RtspAuth::new(auth.clone(), true);
        assert_eq!(rtsp.challenges(false, 0), ["Basic realm=\"ponte\""], "tokens only: Basic alone");
        assert!(RtspAuth::new(auth.clone(), false).challenges(false, 0)[0].starts_with("Digest"));
        // A Digest account appears with a reload: both are offered again.
        auth.reload(test_auth_accounts());
        let offered = rtsp.challenges(false, 0);
        assert!(offered.len() == 2 && offered[0].starts_with("Digest") && offered[1].starts_with("Basic"));
    }

    #[tokio::test]
    async fn repeated_wrong_digests_are_throttled() {
        let auth = RtspAuth::new(test_auth(), false);
        let client = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 7));
        let challenge = &auth.challenges(false, 0)[0];
        let u = url("rtsp://h/c");
        let wrong = digest_answer(challenge, "vms", "guess", "DESCRIBE", "rtsp://h/c", false);
        let mut throttled = false;
        for _ in 0..10 {
            throttled |= matches!(
                auth.check(asked("DESCRIBE", &u), Some(&wrong), client, 0).await,
                Outcome::Throttled(_)
            );
        }
        assert!(throttled, "the login brake applies to RTSP Digest");
    }

    /// Accounts of [`test_auth`] writing to an audit file; its path.
    fn audited(name: &str, delay: Duration) -> (RtspAuth, std::path::PathBuf) {
        let dir = std::env::temp_dir().join(format!("ponte-rtsp-auth-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let path = dir.join("audit.log");
        let audit = Arc::new(RelayAudit::open(&path, "carabinieri", 1 << 20).expect("audit file"));
        let settings = AuthSettings { failed_login_delay: delay, ..AuthSettings::default() };
        (RtspAuth::new(Arc::new(Auth::new(test_auth_accounts(), audit, settings)), true), path)
    }

    fn audit_lines(path: &std::path::Path) -> Vec<serde_json::Value> {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        text.lines().map(|l| serde_json::from_str(l).expect("JSON line")).collect()
    }

    #[tokio::test]
    async fn a_braked_client_is_refused_even_the_right_password_slowly_and_audited() {
        let delay = Duration::from_millis(40);
        let (auth, path) = audited("brake", delay);
        let attacker = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 66));
        let (uri, t0) = ("rtsp://127.0.0.1:8554/cam-a", 1_700_000_000);
        let u = url(uri);
        let challenge = &auth.challenges(false, t0)[0];
        let wrong = digest_answer(challenge, "vms", "guess", "DESCRIBE", uri, false);
        // The burst of 5, each refused after the delay.
        for _ in 0..5 {
            assert!(matches!(
                auth.check(asked("DESCRIBE", &u), Some(&wrong), attacker, t0).await,
                Outcome::Challenge { stale: false }
            ));
        }
        // Braked: every answer is refused unchecked, the right one too, and
        // none comes back before the failed-login delay.
        let right = digest_answer(challenge, "vms", "s3cret-vms", "DESCRIBE", uri, false);
        let basic = format!("Basic {}", BASE64.encode("basic-only:basic-pw"));
        for answer in [&wrong, &right, &basic] {
            let started = std::time::Instant::now();
            let got = auth.check(asked("DESCRIBE", &u), Some(answer), attacker, t0).await;
            assert!(matches!(got, Outcome::Throttled(_)), "{answer}: {got:?}");
            assert!(started.elapsed() >= delay, "a braked answer waits like a wrong one");
        }
        // Another address is not braked.
        let other = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 67));
        assert_eq!(name(&auth.check(asked("DESCRIBE", &u), Some(&right), other, t0).await), Some("vms"));
        // Every refusal is in the audit, naming the attacker's address.
        let lines = audit_lines(&path);
        let failed: Vec<&serde_json::Value> = lines
            .iter()
            .filter(|l| l["action"] == "login" && l["outcome"] == "failed" && l["client"] == "10.0.0.66")
            .collect();
        assert_eq!(failed.len(), 8, "{lines:?}");
        assert_eq!(failed[0]["reason"], "RTSP Digest: wrong password");
        assert!(failed[5]["reason"].as_str().unwrap_or_default().contains("refused unchecked"), "{lines:?}");
        assert!(failed[7]["reason"]
            .as_str()
            .unwrap_or_default()
            .starts_with("RTSP Basic: refused unchecked"));
        let _ = std::fs::remove_dir_all(path.parent().unwrap_or(&path));
    }

    #[tokio::test]
    async fn a_connection_that_proved_a_password_is_not_charged_for_repeating_it() {
        let (auth, path) = audited("proven", Duration::from_millis(1));
        let (uri, t0) = ("rtsp://127.0.0.1:8554/cam-a", 1_700_000_000);
        let u = url(uri);
        let challenge = &auth.challenges(false, t0)[0];
        let right = digest_answer(challenge, "vms", "s3cret-vms", "DESCRIBE", uri, false);
        let proven = Asked { proven: Some("vms"), ..asked("DESCRIBE", &u) };
        // Far more requests than the burst: a VMS repeats its credentials.
        for _ in 0..20 {
            assert_eq!(name(&auth.check(proven, Some(&right), CLIENT, t0).await), Some("vms"));
        }
        // A new user on that connection is a new guess: charged.
        let guard = digest_answer(challenge, "guard", "nope", "DESCRIBE", uri, false);
        let braked =
            futures_util::future::join_all((0..6).map(|_| auth.check(proven, Some(&guard), CLIENT, t0)))
                .await;
        assert!(braked.iter().any(|o| matches!(o, Outcome::Throttled(_))), "{braked:?}");
        assert!(audit_lines(&path).iter().all(|l| l["viewer"] == "guard"));
        let _ = std::fs::remove_dir_all(path.parent().unwrap_or(&path));
    }

    #[tokio::test]
    async fn the_digest_uri_must_be_the_request_uri() {
        let (auth, path) = audited("uri", Duration::from_millis(1));
        let t0 = 1_700_000_000;
        let challenge = &auth.challenges(false, t0)[0];
        let (a, b) = ("rtsp://127.0.0.1:8554/cam-a", "rtsp://127.0.0.1:8554/cam-b");
        // An answer captured on the wire for cam-a, replayed on cam-b.
        let captured = digest_answer(challenge, "vms", "s3cret-vms", "DESCRIBE", a, false);
        let got = auth.check(asked("DESCRIBE", &url(b)), Some(&captured), CLIENT, t0).await;
        assert!(matches!(got, Outcome::Challenge { stale: false }), "{got:?}");
        let lines = audit_lines(&path);
        let reason = lines.last().and_then(|l| l["reason"].as_str()).unwrap_or_default().to_owned();
        assert!(reason.contains("does not match the request URI") && reason.contains("cam-b"), "{reason}");
        // The same URL as the client wrote it, or its path alone, is the request's.
        for (request, named) in [
            (a, a),
            ("rtsp://127.0.0.1:8554/cam-a/trackID=0", "/cam-a/trackID=0"),
            ("rtsp://Relay.example:8554/cam-a?x=1", "rtsp://relay.example:8554/cam-a?x=1"),
        ] {
            let answer = digest_answer(challenge, "vms", "s3cret-vms", "SETUP", named, true);
            let ok = auth.check(asked("SETUP", &url(request)), Some(&answer), CLIENT, t0).await;
            assert_eq!(name(&ok), Some("vms"), "{request} with uri {named}");
        }
        for (request, named) in [
            (a, "rtsp://127.0.0.1:8554/cam-a/trackID=0"),
            (a, "rtsp://127.0.0.1:554/cam-a"),
            (a, "rtsp://10.0.0.1:8554/cam-a"),
            (a, "/cam-b"),
            (a, "*"),
            (a, "not a url"),
        ] {
            assert!(!uri_matches(named, Some(&url(request))), "{request} with uri {named}");
        }
        assert!(uri_matches("*", None) && !uri_matches(a, None));
        let _ = std::fs::remove_dir_all(path.parent().unwrap_or(&path));
    }

    #[test]
    fn auth_params_parse_quotes_commas_and_junk() {
        let p = parse_params(r#"username="a,b", realm="r \"x\"", nc=00000001 , qop=auth,uri="/"#);
        assert_eq!(
            p,
            vec![
                ("username".into(), "a,b".into()),
                ("realm".into(), "r \"x\"".into()),
                ("nc".into(), "00000001".into()),
                ("qop".into(), "auth".into()),
                ("uri".into(), "/".into()),
            ]
        );
        for junk in ["", "=", "\"", "a=\"", ",,,", "a", "=b,c=\"d\\"] {
            let _ = parse_params(junk);
        }
    }
}
