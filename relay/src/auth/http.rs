//! The HTTP pieces: `POST /login`, `POST /logout`, and the layers that put
//! a [`Viewer`](super::Viewer) in front of the catalog, WHEP and status.

use super::lock;
use super::sessions::new_session_id;
use super::{Auth, Refusal, SESSION_COOKIE};
use axum::extract::{ConnectInfo, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use serde::Deserialize;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::info;

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

pub(super) fn unauthorized(message: &str) -> Response {
    let mut resp = text(StatusCode::UNAUTHORIZED, message);
    resp.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"ponte\""));
    resp
}

pub(super) fn forbidden(message: &str) -> Response {
    text(StatusCode::FORBIDDEN, message)
}

pub(super) fn not_found(message: &str) -> Response {
    text(StatusCode::NOT_FOUND, message)
}

pub(super) fn throttled(wait: Duration) -> Response {
    let secs = wait.as_secs() + 1;
    let mut resp =
        text(StatusCode::TOO_MANY_REQUESTS, &format!("too many failed logins from here: retry in {secs} s"));
    if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
        resp.headers_mut().insert(header::RETRY_AFTER, v);
    }
    resp
}

pub(super) fn session_cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == SESSION_COOKIE)
        .map(|(_, value)| value.trim())
}

/// Layer for routes that need a viewer: puts the [`Viewer`](super::Viewer) into the request
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

/// `POST /login`, `POST /logout` and `GET /api/pair-token`.
pub fn router(auth: Arc<Auth>) -> Router {
    Router::new()
        .route("/login", post(login))
        .route("/logout", post(logout))
        .route("/api/pair-token", get(pair_token))
        .with_state(auth)
}

/// `GET /api/pair-token` → `{token, expires_unix}`: the bearer value the
/// page presents at the other relays of the site if this one stops
/// answering ([`super::pair_token`]).
async fn pair_token(
    State(auth): State<Arc<Auth>>,
    ClientIp(client): ClientIp,
    headers: HeaderMap,
) -> Response {
    let issuer = issuer(&headers, auth.is_https());
    match auth.issue_pair_token(&headers, client, &issuer).await {
        Ok(issued) => {
            let mut resp = axum::Json(issued).into_response();
            resp.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            resp
        }
        Err(resp) => resp,
    }
}

/// This relay as the page reached it (`https://host:port`, from `Host`,
/// which the server's DNS-rebinding guard has checked): the peer's audit
/// names the relay that issued a token by it.
fn issuer(headers: &HeaderMap, https: bool) -> String {
    let host: String = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("unknown-host")
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']'))
        .take(255)
        .collect();
    format!("{}://{host}", if https { "https" } else { "http" })
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
            let cookie = format!("{SESSION_COOKIE}={id}; {}", auth.cookie_attributes());
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
    let clear = format!("{SESSION_COOKIE}=; {}; Max-Age=0", auth.cookie_attributes());
    if let Ok(v) = HeaderValue::from_str(&clear) {
        resp.headers_mut().insert(header::SET_COOKIE, v);
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
