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
//! Nonces are stateless: the issue time and a keyed MD5 over it, so a nonce
//! can be checked and aged without a table; an expired one is answered with
//! `stale=TRUE` and clients retry without asking the user again.

use crate::auth::{Auth, Refusal, Viewer, RTSP_REALM};
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use md5::{Digest as _, Md5};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

/// How long a nonce is accepted after it was issued.
pub const NONCE_TTL: Duration = Duration::from_secs(300);

/// Result of checking a request's credentials.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// The viewer (the anonymous one on a relay without accounts).
    Viewer(Viewer),
    /// Missing or wrong credentials: answer 401 with [`RtspAuth::challenges`].
    Challenge {
        /// The credentials were right but the nonce expired.
        stale: bool,
    },
    /// Too many failed attempts from this client: retry after this long.
    Throttled(Duration),
}

/// Checks RTSP credentials against the relay's accounts.
pub struct RtspAuth {
    auth: Arc<Auth>,
    allow_basic: bool,
    secret: [u8; 16],
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

    /// Checks the `Authorization` header of a `method` request from `client`
    /// at `now` (seconds since the Unix epoch). `Viewer` from Digest is not
    /// yet recorded as a login: the caller calls [`RtspAuth::login_ok`] once
    /// per connection, so each request does not write an audit line.
    pub async fn check(
        &self,
        method: &str,
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
            self.check_digest(method, rest, client, now).await
        } else if scheme.eq_ignore_ascii_case("basic") && self.allow_basic {
            self.check_basic(rest.trim(), client).await
        } else {
            Outcome::Challenge { stale: false }
        }
    }

    async fn check_basic(&self, token: &str, client: IpAddr) -> Outcome {
        let decoded = BASE64.decode(token).ok().and_then(|b| String::from_utf8(b).ok());
        let Some((user, password)) = decoded.as_deref().and_then(|s| s.split_once(':')) else {
            return Outcome::Challenge { stale: false };
        };
        match self.auth.check_basic(client, user, password, "RTSP Basic").await {
            Ok(viewer) => Outcome::Viewer(viewer),
            Err(Refusal::BadCredentials) => Outcome::Challenge { stale: false },
            Err(Refusal::Throttled(wait)) => Outcome::Throttled(wait),
        }
    }

    async fn check_digest(&self, method: &str, params: &str, client: IpAddr, now: u64) -> Outcome {
        let fail = Outcome::Challenge { stale: false };
        let p = parse_params(params);
        let get = |k: &str| p.iter().find(|(n, _)| n.eq_ignore_ascii_case(k)).map(|(_, v)| v.as_str());
        let (Some(user), Some(realm), Some(nonce), Some(uri), Some(response)) =
            (get("username"), get("realm"), get("nonce"), get("uri"), get("response"))
        else {
            return fail;
        };
        if realm != RTSP_REALM || get("algorithm").is_some_and(|a| !a.eq_ignore_ascii_case("md5")) {
            return fail;
        }
        // Only answers to our own challenges count (and cost an attempt).
        let Some(age) = self.nonce_age(nonce, now) else { return fail };
        let right = self.auth.digest_ha1(user).and_then(|(ha1, viewer)| {
            let expected = digest_response(&ha1, method, uri, nonce, get("qop"), get("nc"), get("cnonce"))?;
            constant_time_eq(expected.as_bytes(), response.to_ascii_lowercase().as_bytes()).then_some(viewer)
        });
        match right {
            // Right password, old nonce: the client retries with a fresh one.
            Some(_) if age > self.nonce_ttl.as_secs() => Outcome::Challenge { stale: true },
            Some(viewer) => Outcome::Viewer(viewer),
            None => {
                if let Err(Refusal::Throttled(wait)) = self.auth.begin_attempt(client) {
                    return Outcome::Throttled(wait);
                }
                let why = if self.auth.digest_ha1(user).is_some() {
                    "wrong password"
                } else {
                    "unknown user, or an account without `rtsp_digest_ha1`"
                };
                self.auth.login_failed(client, user, "RTSP Digest", why).await;
                fail
            }
        }
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

    fn mac(&self, issued: &str) -> String {
        let mut h = Md5::new();
        h.update(self.secret);
        h.update(issued.as_bytes());
        hex(&h.finalize())
    }

    fn nonce(&self, now: u64) -> String {
        let issued = format!("{now:016x}");
        let mac = self.mac(&issued);
        format!("{issued}{mac}")
    }

    /// Seconds since a nonce we issued was made; `None` if we did not issue it.
    fn nonce_age(&self, nonce: &str, now: u64) -> Option<u64> {
        let (issued, mac) = (nonce.get(..16)?, nonce.get(16..)?);
        if !constant_time_eq(self.mac(issued).as_bytes(), mac.as_bytes()) {
            return None;
        }
        let at = u64::from_str_radix(issued, 16).ok()?;
        Some(now.saturating_sub(at))
    }
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
    hex(&Md5::digest(data))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
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
            token_sha256: crate::auth::hex(&<sha2::Sha256 as sha2::Digest>::digest(b"nvr-token")),
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

    #[tokio::test]
    async fn open_relay_means_anonymous() {
        let auth = RtspAuth::new(Arc::new(Auth::open(Arc::new(RelayAudit::disabled("t")))), false);
        assert_eq!(name(&auth.check("DESCRIBE", None, CLIENT, 0).await), Some("anonymous"));
    }

    #[tokio::test]
    async fn digest_right_wrong_and_stale() {
        let auth = RtspAuth::new(test_auth(), false);
        let t0 = 1_700_000_000;
        assert!(matches!(
            auth.check("DESCRIBE", None, CLIENT, t0).await,
            Outcome::Challenge { stale: false }
        ));
        let challenge = &auth.challenges(false, t0)[0];
        assert!(challenge.starts_with("Digest realm=\"ponte\", nonce=\""), "{challenge}");
        let uri = "rtsp://127.0.0.1:8554/cam-a";
        for qop in [false, true] {
            let right = digest_answer(challenge, "vms", "s3cret-vms", "DESCRIBE", uri, qop);
            assert_eq!(name(&auth.check("DESCRIBE", Some(&right), CLIENT, t0 + 5).await), Some("vms"));
            let stale = auth.check("DESCRIBE", Some(&right), CLIENT, t0 + NONCE_TTL.as_secs() + 1).await;
            assert!(matches!(stale, Outcome::Challenge { stale: true }));
        }
        // The method is part of the hash.
        let right = digest_answer(challenge, "vms", "s3cret-vms", "DESCRIBE", uri, false);
        assert!(name(&auth.check("SETUP", Some(&right), CLIENT, t0).await).is_none());
        let wrong = digest_answer(challenge, "vms", "guess", "DESCRIBE", uri, false);
        assert!(matches!(
            auth.check("DESCRIBE", Some(&wrong), CLIENT, t0).await,
            Outcome::Challenge { stale: false }
        ));
        let no_ha1 = digest_answer(challenge, "basic-only", "basic-pw", "DESCRIBE", uri, false);
        assert!(name(&auth.check("DESCRIBE", Some(&no_ha1), CLIENT, t0).await).is_none());
        // A nonce we did not issue is refused even with the right password.
        let forged = challenge.replace("nonce=\"", "nonce=\"0");
        let forged = digest_answer(&forged, "vms", "s3cret-vms", "DESCRIBE", uri, false);
        assert!(name(&auth.check("DESCRIBE", Some(&forged), CLIENT, t0).await).is_none());
        // Basic is refused unless configured.
        let basic = format!("Basic {}", BASE64.encode("vms:s3cret-vms"));
        assert!(name(&auth.check("DESCRIBE", Some(&basic), CLIENT, t0).await).is_none());
        assert_eq!(auth.challenges(true, t0).len(), 1);
        assert!(auth.challenges(true, t0)[0].ends_with("stale=TRUE"));
    }

    #[tokio::test]
    async fn basic_when_configured_accepts_passwords_and_tokens() {
        let auth = RtspAuth::new(test_auth(), true);
        let client = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 9));
        for (user, password) in [("basic-only", "basic-pw"), ("nvr", "nvr-token")] {
            let ok = format!("Basic {}", BASE64.encode(format!("{user}:{password}")));
            assert_eq!(name(&auth.check("DESCRIBE", Some(&ok), client, 0).await), Some(user));
        }
        for bad in ["Basic !!!", "Basic Z3VhcmQ=", "Bearer x"] {
            assert!(name(&auth.check("DESCRIBE", Some(bad), client, 0).await).is_none(), "{bad}");
        }
        assert_eq!(auth.challenges(false, 0)[1], "Basic realm=\"ponte\"");
    }

    #[test]
    fn basic_alone_is_offered_when_no_account_can_answer_digest() {
        let token = TokenConfig {
            name: "vms".into(),
            token_sha256: crate::auth::hex(&<sha2::Sha256 as sha2::Digest>::digest(b"vms-token")),
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
        let wrong = digest_answer(challenge, "vms", "guess", "DESCRIBE", "rtsp://h/c", false);
        let mut throttled = false;
        for _ in 0..10 {
            throttled |=
                matches!(auth.check("DESCRIBE", Some(&wrong), client, 0).await, Outcome::Throttled(_));
        }
        assert!(throttled, "the login brake applies to RTSP Digest");
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
