//! Master-room operators: who may use the control routes of the management
//! port (the PTZ API, which steers every dome at top priority, pre-empting
//! the partner sites). Each `[[operator]]` has an argon2id password (HTTP
//! Basic) or a bearer token kept as its SHA-256, as the relay's
//! `[[viewer]]` and `[[token]]`; `ponte-agent operator passwd|token` makes
//! them. The read-only routes (status, metrics, health) stay open.
//!
//! A verified password is remembered for five minutes (a keyed digest in
//! memory, forgotten on reload), so the master console's polls do not each
//! cost an argon2 check.
//!
//! Every request that does not authenticate is charged to its client
//! address before anything is checked (5 at once, then one per 12 s; the
//! right password does not pass a braked client), answered after a 1 s
//! delay, and audited (`action = "login"`, `site = "master"`, the client's
//! address). The PTZ audit lines name the operator who authenticated: no
//! query parameter or header can choose that name. With no `[[operator]]`
//! configured the control routes answer 403 naming the key to add.

use anyhow::{anyhow, bail, Context, Result};
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use ponte_proto::audit::{AuditLog, AuditRecord};
use ponte_proto::credentials::{self, parse_hex, same_bytes, sha256, CredentialError, Decoy};
pub use ponte_proto::credentials::{hash_password, new_token};
use ponte_proto::login_brake::Gcra;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;

/// The config key operators are added under, for messages.
const KEY: &str = "[[operator]]";

/// `[[operator]]`: a master-room operator (or script) allowed on the
/// control routes, with `password_hash` (HTTP Basic) or `token_sha256`
/// (`Authorization: Bearer <token>`), from `ponte-agent operator passwd|token`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OperatorConfig {
    /// Name in the audit log (and the Basic user name).
    pub name: String,
    /// argon2id PHC string of the password.
    #[serde(default)]
    pub password_hash: Option<String>,
    /// Hex SHA-256 of a bearer token.
    #[serde(default)]
    pub token_sha256: Option<String>,
    /// Logs in only with a client certificate naming this operator, from
    /// the CA of `management.client_ca` (no password, no token).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub certificate: bool,
}

/// The authenticated operator, put into the request's extensions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Operator(pub String);

enum Secret {
    Password(String),
    Token([u8; 32]),
    /// A client certificate on an mTLS management port only.
    Certificate,
}

/// The configured operators, checked and ready.
#[derive(Default)]
pub struct Operators {
    by_name: HashMap<String, Secret>,
    /// Verified for unknown names, so they take as long as a wrong password.
    decoy: Option<&'static Decoy>,
}

fn check_name(what: &str, name: &str) -> Result<()> {
    credentials::check_name(name).map_err(|e| anyhow!("{what}: {e}"))
}

impl Operators {
    /// Checks and compiles the `[[operator]]` tables.
    pub fn from_config(list: &[OperatorConfig]) -> Result<Operators> {
        let mut by_name = HashMap::new();
        let mut tokens = Vec::new();
        for o in list {
            let what = format!("[[operator]] `{}`", o.name);
            check_name(&what, &o.name)?;
            let secret = match (&o.password_hash, &o.token_sha256) {
                (None, None) if o.certificate => Secret::Certificate,
                (Some(phc), None) => {
                    // Each check costs the hash's memory and time: check_phc
                    // refuses what would stall the agent.
                    credentials::check_phc(phc).map_err(|e| match e {
                        CredentialError::NotPhc(_) => anyhow!("{what}: {e}; make one with `ponte-agent operator passwd`"),
                        CredentialError::NotArgon2id(_) => anyhow!("{what}: {e} (`ponte-agent operator passwd`)"),
                        e => anyhow!("{what}: {e}"),
                    })?;
                    Secret::Password(phc.clone())
                }
                (None, Some(digest)) => {
                    let digest = parse_hex::<32>(digest).with_context(|| {
                        format!("{what}: `token_sha256` must be 64 hex digits, the SHA-256 of the token (`ponte-agent operator token`)")
                    })?;
                    if tokens.contains(&digest) {
                        bail!("{what}: the same token is configured twice; give each operator its own");
                    }
                    tokens.push(digest);
                    Secret::Token(digest)
                }
                _ => bail!("{what}: set exactly one of `password_hash` (`ponte-agent operator passwd`), `token_sha256` (`ponte-agent operator token`) and `certificate = true` (an operator certificate, `management.client_ca`)"),
            };
            if by_name.insert(o.name.clone(), secret).is_some() {
                bail!("{what}: the name is used twice");
            }
        }
        let decoy = Decoy::get().map_err(|e| {
            anyhow!(
                "cannot build the decoy hash that makes unknown operators as slow as wrong passwords: {e}"
            )
        })?;
        Ok(Operators { by_name, decoy: Some(decoy) })
    }

    /// Operators configured.
    pub fn len(&self) -> usize {
        self.by_name.len()
    }

    /// No operator configured.
    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }

    /// Checks a name and password (argon2: tens of milliseconds, call it
    /// off the async threads); `Err` says why, for the audit.
    fn verify_password(&self, name: &str, password: &str) -> Result<String, &'static str> {
        match self.by_name.get(name) {
            Some(Secret::Password(phc)) => {
                let ok = credentials::verify_password(phc, password);
                if ok {
                    Ok(name.to_owned())
                } else {
                    Err("wrong password")
                }
            }
            Some(Secret::Token(_)) => Err("a token operator sent a password"),
            Some(Secret::Certificate) => Err("a certificate operator sent a password"),
            None => {
                // (No decoy only in the default, empty table: no name to hide.)
                if let Some(decoy) = self.decoy {
                    decoy.burn(password);
                }
                Err("unknown operator")
            }
        }
    }

    /// The operator holding `token`, if any.
    fn check_token(&self, token: &str) -> Option<String> {
        let digest = sha256(token.as_bytes());
        // Look at every token whatever matches, so timing tells nothing.
        let mut found = None;
        for (name, secret) in &self.by_name {
            if let Secret::Token(d) = secret {
                if same_bytes(d, &digest) {
                    found = Some(name.clone());
                }
            }
        }
        found
    }
}

// ---- the brake (sans-IO) ----------------------------------------------------------

/// Per-client limit on unauthenticated requests: `burst` at once, then one
/// per `interval` (a GCRA). Charged before anything is checked, refunded
/// when the credential was right.
struct Brake {
    clients: Gcra<IpAddr>,
}

impl Brake {
    fn new(burst: u32, interval: Duration, max_clients: usize) -> Self {
        Self { clients: Gcra::new(burst, interval, max_clients) }
    }

    /// Charges an attempt by `client`, or says how long it must wait.
    fn begin(&mut self, client: IpAddr, now: Instant) -> Result<(), Duration> {
        self.clients.begin(client.to_canonical(), now)
    }

    /// Refunds the attempt of a client whose credential was right.
    fn succeeded(&mut self, client: IpAddr, now: Instant) {
        self.clients.refund(client.to_canonical(), now);
    }
}

// ---- the HTTP layer -----------------------------------------------------------------

/// How long a verified password is remembered: the master console sends
/// its Basic credential with every poll (each second), and one argon2id
/// check costs tens of milliseconds of a core and ~20 MiB.
const REMEMBER: Duration = Duration::from_secs(300);
/// Most credentials remembered at once.
const REMEMBER_MAX: usize = 256;

/// Passwords verified lately: a keyed SHA-256 of `name:password` (the key
/// random per process, so the table says nothing outside it) → the name
/// and when it was verified. Cleared when the operators change.
#[derive(Default)]
struct Verified {
    key: [u8; 32],
    seen: HashMap<[u8; 32], (String, Instant)>,
}

impl Verified {
    fn new() -> Self {
        Self { key: rand::random(), seen: HashMap::new() }
    }

    fn digest(&self, name: &str, password: &str) -> [u8; 32] {
        let mut input = Vec::with_capacity(32 + name.len() + password.len() + 1);
        input.extend_from_slice(&self.key);
        input.extend_from_slice(name.as_bytes());
        input.push(0);
        input.extend_from_slice(password.as_bytes());
        sha256(&input)
    }

    fn check(&mut self, name: &str, password: &str, now: Instant) -> Option<String> {
        let d = self.digest(name, password);
        self.seen.retain(|_, (_, at)| now.saturating_duration_since(*at) < REMEMBER);
        self.seen.get(&d).map(|(n, _)| n.clone())
    }

    fn remember(&mut self, name: &str, password: &str, now: Instant) {
        if self.seen.len() >= REMEMBER_MAX {
            self.seen.clear();
        }
        let d = self.digest(name, password);
        self.seen.insert(d, (name.to_owned(), now));
    }
}

/// Operators, the brake and the audit, shared by the control routes.
pub struct OperatorAuth {
    operators: Mutex<Arc<Operators>>,
    verified: Mutex<Verified>,
    brake: Mutex<Brake>,
    audit: Arc<AuditLog>,
    /// argon2 takes ~20 MiB and a core for tens of ms: at most two at once.
    hashing: Semaphore,
    failure_delay: Duration,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Why a request was not let through.
struct Refusal {
    status: StatusCode,
    /// `failed` (wrong credential), `refused` (none, or no operators), `throttled`.
    outcome: &'static str,
    /// Who the client claimed to be (`?` when unknown).
    claimed: String,
    /// For the audit and the log.
    why: String,
    /// For the client.
    message: String,
}

impl OperatorAuth {
    /// Checks credentials against `operators`, auditing refusals to `audit`.
    pub fn new(operators: Operators, audit: Arc<AuditLog>) -> Self {
        Self {
            operators: Mutex::new(Arc::new(operators)),
            verified: Mutex::new(Verified::new()),
            brake: Mutex::new(Brake::new(5, Duration::from_secs(12), 4096)),
            audit,
            hashing: Semaphore::new(2),
            failure_delay: Duration::from_secs(1),
        }
    }

    /// Takes new operators (a config reload); a removed operator's next request is refused.
    pub fn reload(&self, operators: Operators) {
        *lock(&self.operators) = Arc::new(operators);
        lock(&self.verified).seen.clear();
    }

    fn operators(&self) -> Arc<Operators> {
        lock(&self.operators).clone()
    }

    /// Who is asking, or why not.
    async fn authenticate(
        &self,
        headers: &HeaderMap,
        cert: Option<&str>,
        client: IpAddr,
    ) -> Result<String, Refusal> {
        let operators = self.operators();
        let refusal = |status, outcome, claimed: &str, why: &str, message: String| Refusal {
            status,
            outcome,
            claimed: claimed.chars().take(64).collect(),
            why: why.to_owned(),
            message,
        };
        if let Err(wait) = lock(&self.brake).begin(client, Instant::now()) {
            let secs = wait.as_secs() + 1;
            let message = format!("too many refused requests from here: retry in {secs} s");
            return Err(refusal(StatusCode::TOO_MANY_REQUESTS, "throttled", "?", "client braked", message));
        }
        if operators.is_empty() {
            let message = format!(
                "no master-room operator is configured: add an `{KEY}` to agent.toml \
                 (`ponte-agent operator passwd --name NAME` or `ponte-agent operator token --name NAME`) \
                 and reload the agent"
            );
            return Err(refusal(
                StatusCode::FORBIDDEN,
                "refused",
                "?",
                "no [[operator]] configured",
                message,
            ));
        }
        // A client certificate the port verified (`management.client_ca`)
        // naming an operator is that operator's credential.
        if let Some(name) = cert.filter(|n| operators.by_name.contains_key(*n)) {
            lock(&self.brake).succeeded(client, Instant::now());
            return Ok(name.to_owned());
        }
        let unauthorized = |outcome, claimed: &str, why: &str| {
            let message = "the master-room PTZ API needs an operator credential: HTTP Basic \
                           (`curl -u NAME`) or `Authorization: Bearer <token>`"
                .to_owned();
            refusal(StatusCode::UNAUTHORIZED, outcome, claimed, why, message)
        };
        let Some(value) = headers.get(header::AUTHORIZATION) else {
            return Err(unauthorized("refused", "?", "no credential"));
        };
        let (scheme, rest) = value.to_str().ok().and_then(|v| v.split_once(' ')).unwrap_or(("", ""));
        let checked = if scheme.eq_ignore_ascii_case("bearer") {
            operators.check_token(rest.trim()).ok_or(("?".to_owned(), "unknown token"))
        } else if scheme.eq_ignore_ascii_case("basic") {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(rest.trim())
                .ok()
                .and_then(|b| String::from_utf8(b).ok());
            let Some((name, password)) = decoded.as_deref().and_then(|d| d.split_once(':')) else {
                return Err(unauthorized("failed", "?", "unreadable Basic credential"));
            };
            let (name, password) = (name.to_owned(), password.to_owned());
            if let Some(known) = lock(&self.verified).check(&name, &password, Instant::now()) {
                lock(&self.brake).succeeded(client, Instant::now());
                return Ok(known);
            }
            let _slot =
                self.hashing.acquire().await.map_err(|_| unauthorized("failed", &name, "shutting down"))?;
            let against = operators.clone();
            let claimed = name.clone();
            let (n, p) = (name.clone(), password.clone());
            let checked = tokio::task::spawn_blocking(move || against.verify_password(&n, &p))
                .await
                .unwrap_or(Err("password check failed"))
                .map_err(|why| (claimed, why));
            if checked.is_ok() && Arc::ptr_eq(&operators, &self.operators()) {
                lock(&self.verified).remember(&name, &password, Instant::now());
            }
            checked
        } else {
            return Err(unauthorized("failed", "?", "neither Basic nor Bearer"));
        };
        match checked {
            Ok(name) => {
                lock(&self.brake).succeeded(client, Instant::now());
                Ok(name)
            }
            Err((claimed, why)) => Err(unauthorized("failed", &claimed, why)),
        }
    }

    /// Logs and audits a refusal, waits the failure delay, answers.
    async fn refuse(&self, r: Refusal, client: IpAddr, what: &str) -> Response {
        tracing::warn!(operator = %r.claimed, client = %client, request = what, "master-room API refused: {}", r.why);
        let record = AuditRecord {
            site: Some(ponte_proto::ptz::MASTER_SITE.to_owned()),
            viewer: Some(r.claimed),
            action: "login".into(),
            outcome: r.outcome.into(),
            reason: Some(format!("{what}: {}", r.why)),
            client: Some(client.to_string()),
            ..Default::default()
        };
        if let Err(e) = self.audit.write(record) {
            tracing::error!(error = %e, path = %self.audit.path().display(), "cannot write the audit log");
        }
        tokio::time::sleep(self.failure_delay).await;
        let mut resp =
            (r.status, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], format!("{}\n", r.message))
                .into_response();
        if r.status == StatusCode::UNAUTHORIZED {
            let challenge = HeaderValue::from_static("Basic realm=\"ponte master room\", charset=\"UTF-8\"");
            resp.headers_mut().insert(header::WWW_AUTHENTICATE, challenge);
        }
        if r.status == StatusCode::TOO_MANY_REQUESTS {
            resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("12"));
        }
        resp
    }
}

/// Layer in front of the control routes: puts the [`Operator`] into the
/// request, or answers 401 (no or wrong credential), 403 (no operator
/// configured) or 429 (client braked), audited.
pub async fn require_operator(
    State(auth): State<Arc<OperatorAuth>>,
    mut req: Request,
    next: Next,
) -> Response {
    let client = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |c| c.0.ip());
    let cert = req.extensions().get::<ponte_proto::http_server::ClientCertificate>().map(|c| c.0.clone());
    match auth.authenticate(req.headers(), cert.as_deref(), client).await {
        Ok(name) => {
            req.extensions_mut().insert(Operator(name));
            next.run(req).await
        }
        Err(refusal) => {
            let what: String = format!("{} {}", req.method(), req.uri().path()).chars().take(120).collect();
            auth.refuse(refusal, client, &what).await
        }
    }
}

// ---- CLI ----------------------------------------------------------------------------

/// `ponte-agent operator passwd --name NAME`: reads the password (twice,
/// without echo, from a terminal; one line from a pipe), prints the
/// `[[operator]]` table with its argon2id hash.
pub fn passwd_cli(name: &str) -> Result<()> {
    check_name("--name", name)?;
    let password = ponte_proto::password_prompt::read_password_to_store(&format!(
        "ponte-agent operator passwd --name {name} < file"
    ))?;
    let password = password.as_str();
    println!("[[operator]]\nname = \"{name}\"\npassword_hash = \"{}\"", hash_password(password)?);
    Ok(())
}

/// `ponte-agent operator token --name NAME`: prints a new token (line 1)
/// and the `[[operator]]` table holding its SHA-256.
pub fn token_cli(name: &str) -> Result<()> {
    check_name("--name", name)?;
    let (token, digest) = new_token();
    println!("{token}");
    println!();
    println!("# Give the line above to `{name}` (send it as `Authorization: Bearer <token>`);");
    println!("# the agent keeps only its SHA-256:");
    println!("[[operator]]\nname = \"{name}\"\ntoken_sha256 = \"{digest}\"");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(name: &str, password: Option<&str>, token: Option<&str>) -> OperatorConfig {
        OperatorConfig {
            name: name.into(),
            password_hash: password.map(|p| hash_password(p).unwrap()),
            token_sha256: token.map(|t| hex::encode(sha256(t.as_bytes()))),
            certificate: false,
        }
    }

    #[test]
    fn operators_check_passwords_and_tokens() {
        let ops = Operators::from_config(&[
            config("sala", Some("torrazzo-112-metri"), None),
            config("script", None, Some("abc")),
        ])
        .unwrap();
        assert_eq!(ops.verify_password("sala", "torrazzo-112-metri"), Ok("sala".into()));
        assert_eq!(ops.verify_password("sala", "wrong"), Err("wrong password"));
        assert_eq!(ops.verify_password("nobody", "torrazzo-112-metri"), Err("unknown operator"));
        assert_eq!(ops.verify_password("script", "abc"), Err("a token operator sent a password"));
        assert_eq!(ops.check_token("abc"), Some("script".into()));
        assert_eq!(ops.check_token("abd"), None);
    }

    #[test]
    fn operator_mistakes_name_the_key_and_the_fix() {
        let both = OperatorConfig { token_sha256: Some("00".repeat(32)), ..config("a", Some("p"), None) };
        let cases = [
            (vec![config("a", None, None)], "set exactly one of `password_hash`"),
            (vec![both], "set exactly one"),
            (
                vec![OperatorConfig { password_hash: Some("secret".into()), ..config("a", None, None) }],
                "operator passwd",
            ),
            (
                vec![OperatorConfig { token_sha256: Some("abc".into()), ..config("a", None, None) }],
                "64 hex digits",
            ),
            (vec![config("a b", None, Some("t"))], "may not contain spaces"),
            (vec![config("a", None, Some("t")), config("b", None, Some("t"))], "same token"),
            (vec![config("a", None, Some("t")), config("a", None, Some("u"))], "used twice"),
        ];
        for (list, want) in cases {
            let err =
                format!("{:#}", Operators::from_config(&list).err().unwrap_or_else(|| panic!("{want}")));
            assert!(err.contains(want), "{err}");
        }
    }

    #[test]
    fn the_brake_holds_after_the_burst_and_refunds_successes() {
        let mut b = Brake::new(3, Duration::from_secs(12), 2);
        let t = Instant::now();
        let (x, y) = ("127.0.0.2".parse().unwrap(), "127.0.0.3".parse().unwrap());
        for _ in 0..3 {
            assert!(b.begin(x, t).is_ok());
        }
        let wait = b.begin(x, t).unwrap_err();
        assert!(wait > Duration::from_secs(11) && wait <= Duration::from_secs(12), "{wait:?}");
        assert!(b.begin(y, t).is_ok(), "another address is not braked");
        b.succeeded(y, t);
        assert!(b.begin(x, t + Duration::from_secs(12)).is_ok(), "one more after the interval");
    }

    fn request(auth: Option<&str>) -> HeaderMap {
        let mut h = HeaderMap::new();
        if let Some(a) = auth {
            h.insert(header::AUTHORIZATION, HeaderValue::from_str(a).unwrap());
        }
        h
    }

    #[tokio::test]
    async fn no_operator_means_403_and_wrong_credentials_401() {
        let dir = std::env::temp_dir().join(format!("ponte-operators-{}", std::process::id()));
        let audit = Arc::new(AuditLog::open(dir.join("audit.log"), "master", 1 << 20).unwrap());
        let client = "127.0.0.2".parse().unwrap();
        let none = OperatorAuth::new(Operators::default(), audit.clone());
        let r = none.authenticate(&request(Some("Bearer x")), None, client).await.err().unwrap();
        assert_eq!(r.status, StatusCode::FORBIDDEN);
        assert!(
            r.message.contains("`[[operator]]`") && r.message.contains("ponte-agent operator"),
            "{}",
            r.message
        );

        let ops = Operators::from_config(&[
            config("sala", Some("torrazzo-112-metri"), None),
            config("script", None, Some("abc")),
        ])
        .unwrap();
        let auth = OperatorAuth::new(ops, audit);
        let basic = |u: &str, p: &str| {
            format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}")))
        };
        assert_eq!(
            auth.authenticate(&request(Some("Bearer abc")), None, client).await.ok(),
            Some("script".into())
        );
        assert_eq!(
            auth.authenticate(&request(Some(&basic("sala", "torrazzo-112-metri"))), None, client).await.ok(),
            Some("sala".into())
        );
        // A verified client certificate naming an operator is its credential.
        assert_eq!(auth.authenticate(&request(None), Some("sala"), client).await.ok(), Some("sala".into()));
        for (h, claimed) in [
            (None, "?"),
            (Some("Bearer abd".to_owned()), "?"),
            (Some(basic("sala", "x")), "sala"),
            (Some("Digest x".to_owned()), "?"),
        ] {
            let r = auth.authenticate(&request(h.as_deref()), None, client).await.err().unwrap();
            assert_eq!((r.status, r.claimed.as_str()), (StatusCode::UNAUTHORIZED, claimed), "{h:?}");
        }
        // The verified password is remembered (the console polls with it),
        // a wrong one never is, and a reload forgets them.
        assert_eq!(lock(&auth.verified).seen.len(), 1);
        assert!(auth.authenticate(&request(Some(&basic("sala", "x"))), None, client).await.is_err());
        assert_eq!(lock(&auth.verified).seen.len(), 1);
        // Four refusals and the burst of five is spent: even the right password waits.
        let _ = auth.authenticate(&request(None), None, client).await;
        let r = auth.authenticate(&request(Some("Bearer abc")), None, client).await.err().unwrap();
        assert_eq!((r.status, r.outcome), (StatusCode::TOO_MANY_REQUESTS, "throttled"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
