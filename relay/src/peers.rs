//! The other relays of this site (`relay.peers`): the console moves its
//! tiles to the first of them that answers when this relay stops answering
//! (issue 22), so they are the only other origins the page may call, and the
//! only origins this relay answers cross-origin requests for.
//!
//! - [`Peers::parse`]: the config's URLs, checked (absolute `http(s)`, not
//!   this relay, no duplicates) and reduced to origins as browsers send them.
//! - [`cors`]: the layer that answers CORS for exactly those origins: the
//!   preflight of a bearer request (`Authorization`, `Content-Type`), and
//!   `Access-Control-Allow-Origin` plus the WHEP headers the page reads
//!   (`Location`, `X-Ponte-Stream`) on the answer. Never credentials: the
//!   page authenticates at a peer with a pair token in `Authorization`,
//!   not a cookie (see `auth::pair_token`).
//! - `GET /api/alive` → 204: what the page polls every 500 ms to notice its
//!   relay is gone (no login needed: it tells nothing).

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use std::net::SocketAddr;
use std::sync::Arc;

/// The origins of the other relays of the site, in the config's order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Peers {
    origins: Vec<String>,
}

/// How long a browser may keep a preflight's answer.
const PREFLIGHT_MAX_AGE_SECS: &str = "600";

impl Peers {
    /// Checks `relay.peers` for a relay listening on `http_listen` (over
    /// HTTPS when `https`); every problem names the key and the entry.
    pub fn parse(urls: &[String], http_listen: SocketAddr, https: bool) -> Result<Peers, String> {
        let mut origins: Vec<String> = Vec::new();
        for text in urls {
            let origin = origin_of(text)?;
            let url = url::Url::parse(&origin).map_err(|e| format!("`relay.peers` entry {text:?}: {e}"))?;
            if https && url.scheme() == "http" {
                return Err(format!(
                    "`relay.peers` entry {text:?}: this relay serves HTTPS, and a page served over HTTPS may \
                     not call a plain-HTTP peer (mixed content); give the peer's https:// URL"
                ));
            }
            if is_this_relay(&url, http_listen) {
                return Err(format!(
                    "`relay.peers` entry {text:?} is this relay itself ({http_listen}): list the other \
                     relays of the site"
                ));
            }
            if origins.contains(&origin) {
                return Err(format!("`relay.peers` lists {origin} twice"));
            }
            origins.push(origin);
        }
        Ok(Peers { origins })
    }

    /// No peers: a relay alone.
    pub fn is_empty(&self) -> bool {
        self.origins.is_empty()
    }

    /// The origins (`https://host:port`), in the config's order.
    pub fn origins(&self) -> &[String] {
        &self.origins
    }

    fn allows(&self, origin: &str) -> bool {
        self.origins.iter().any(|o| o == origin)
    }
}

/// `text` as the origin a browser sends in `Origin` (scheme, lowercase
/// host, port unless the scheme's default), or why it cannot be a peer.
fn origin_of(text: &str) -> Result<String, String> {
    let url = url::Url::parse(text).map_err(|e| {
        format!("`relay.peers` entry {text:?}: not an absolute URL ({e}); write it as \"https://host:port\"")
    })?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!("`relay.peers` entry {text:?}: the scheme must be http or https"));
    }
    if url.host().is_none() {
        return Err(format!("`relay.peers` entry {text:?}: no host"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(format!("`relay.peers` entry {text:?}: no user or password in the URL"));
    }
    if url.path() != "/" || url.query().is_some() || url.fragment().is_some() {
        return Err(format!(
            "`relay.peers` entry {text:?}: the peer's base URL only (\"https://host:port\"), no path, query or \
             fragment"
        ));
    }
    Ok(url.origin().ascii_serialization())
}

/// Whether `url` names the relay listening on `listen`: its port, and its
/// address (or, listening on every address, a loopback one or `localhost`).
fn is_this_relay(url: &url::Url, listen: SocketAddr) -> bool {
    if url.port_or_known_default() != Some(listen.port()) {
        return false;
    }
    match url.host() {
        Some(url::Host::Ipv4(ip)) => {
            std::net::IpAddr::V4(ip) == listen.ip() || (listen.ip().is_unspecified() && ip.is_loopback())
        }
        Some(url::Host::Ipv6(ip)) => {
            std::net::IpAddr::V6(ip) == listen.ip() || (listen.ip().is_unspecified() && ip.is_loopback())
        }
        Some(url::Host::Domain(name)) => {
            name == "localhost" && (listen.ip().is_loopback() || listen.ip().is_unspecified())
        }
        None => false,
    }
}

/// `GET /api/alive`.
pub fn router() -> Router {
    Router::new().route("/api/alive", get(alive))
}

async fn alive() -> Response {
    (StatusCode::NO_CONTENT, [(header::CACHE_CONTROL, "no-store")]).into_response()
}

/// The CORS layer for the peers' pages (see the module doc); requests
/// without `Origin`, or from an origin not listed, pass through untouched
/// (the browser then keeps the answer from the calling page), except a
/// preflight, refused with the key to set.
pub async fn cors(State(peers): State<Arc<Peers>>, req: Request, next: Next) -> Response {
    let origin = origin_header(req.headers());
    let preflight =
        req.method() == Method::OPTIONS && req.headers().contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
    let Some(origin) = origin.filter(|o| peers.allows(o)) else {
        if preflight {
            return (
                StatusCode::FORBIDDEN,
                "this relay answers cross-origin requests only from the other relays of its site \
                 (`relay.peers`)\n",
            )
                .into_response();
        }
        return next.run(req).await;
    };
    let Ok(allowed) = HeaderValue::from_str(&origin) else { return next.run(req).await };
    let mut resp = if preflight {
        let mut resp = StatusCode::NO_CONTENT.into_response();
        let h = resp.headers_mut();
        h.insert(header::ACCESS_CONTROL_ALLOW_METHODS, HeaderValue::from_static("GET, POST, PUT, DELETE"));
        h.insert(
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            HeaderValue::from_static("authorization, content-type"),
        );
        h.insert(header::ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static(PREFLIGHT_MAX_AGE_SECS));
        resp
    } else {
        let mut resp = next.run(req).await;
        resp.headers_mut().insert(
            header::ACCESS_CONTROL_EXPOSE_HEADERS,
            HeaderValue::from_static("location, x-ponte-stream"),
        );
        resp
    };
    resp.headers_mut().insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, allowed);
    resp.headers_mut().append(header::VARY, HeaderValue::from_static("origin"));
    resp
}

fn origin_header(headers: &HeaderMap) -> Option<String> {
    let mut all = headers.get_all(header::ORIGIN).iter();
    let first = all.next()?;
    if all.next().is_some() {
        return None;
    }
    first.to_str().ok().map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use tower::ServiceExt as _;

    fn listen() -> SocketAddr {
        "0.0.0.0:8443".parse().unwrap()
    }

    #[test]
    fn peers_are_origins_checked_and_in_order() {
        let urls = |list: &[&str]| list.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        let peers =
            Peers::parse(&urls(&["https://Relay-B.example:8443/", "https://10.0.0.3:443"]), listen(), true)
                .unwrap();
        assert_eq!(peers.origins(), ["https://relay-b.example:8443", "https://10.0.0.3"]);
        assert!(Peers::parse(&[], listen(), true).unwrap().is_empty());

        for (bad, says) in [
            ("relay-b:8443", "http or https"),
            ("/relay-b", "not an absolute URL"),
            ("ftp://relay-b", "http or https"),
            ("https://relay-b:8443/console", "no path"),
            ("https://relay-b:8443/?x=1", "no path"),
            ("https://anna:pw@relay-b:8443", "no user"),
            ("https://127.0.0.1:8443", "this relay itself"),
            ("https://localhost:8443", "this relay itself"),
            ("http://relay-b:8443", "mixed content"),
        ] {
            let err = Peers::parse(&urls(&[bad]), listen(), true).unwrap_err();
            assert!(err.contains("relay.peers") && err.contains(says), "{bad}: {err}");
        }
        let twice = Peers::parse(&urls(&["https://relay-b", "https://RELAY-B:443/"]), listen(), true);
        assert!(twice.unwrap_err().contains("twice"));
        // Another port of this host is another relay.
        assert!(Peers::parse(&urls(&["http://127.0.0.1:8444"]), listen(), false).is_ok());
    }

    async fn call(peers: &Peers, method: Method, origin: Option<&str>, extra: &[(&str, &str)]) -> Response {
        let app = router()
            .route("/whep/{camera}", axum::routing::post(|| async { StatusCode::CREATED }))
            .layer(axum::middleware::from_fn_with_state(Arc::new(peers.clone()), cors));
        let mut req = Request::builder().method(method).uri("/whep/cam1");
        if let Some(o) = origin {
            req = req.header(header::ORIGIN, o);
        }
        for (k, v) in extra {
            req = req.header(*k, *v);
        }
        app.oneshot(req.body(Body::empty()).unwrap()).await.unwrap()
    }

    #[tokio::test]
    async fn cors_answers_the_listed_origins_only_and_never_with_credentials() {
        let peers = Peers::parse(&["http://127.0.0.1:9001".into()], "127.0.0.1:9000".parse().unwrap(), false)
            .unwrap();
        let ask =
            [("access-control-request-method", "POST"), ("access-control-request-headers", "authorization")];
        let pre = call(&peers, Method::OPTIONS, Some("http://127.0.0.1:9001"), &ask).await;
        assert_eq!(pre.status(), StatusCode::NO_CONTENT);
        let h = pre.headers();
        assert_eq!(h[header::ACCESS_CONTROL_ALLOW_ORIGIN], "http://127.0.0.1:9001");
        assert!(h[header::ACCESS_CONTROL_ALLOW_HEADERS].to_str().unwrap().contains("authorization"));
        assert!(!h.contains_key(header::ACCESS_CONTROL_ALLOW_CREDENTIALS));

        let post = call(&peers, Method::POST, Some("http://127.0.0.1:9001"), &[]).await;
        assert_eq!(post.status(), StatusCode::CREATED);
        assert_eq!(post.headers()[header::ACCESS_CONTROL_ALLOW_ORIGIN], "http://127.0.0.1:9001");
        assert!(post.headers()[header::ACCESS_CONTROL_EXPOSE_HEADERS].to_str().unwrap().contains("location"));

        // Another origin (another port of the same host is another origin):
        // no CORS headers, a preflight refused.
        for stranger in ["http://127.0.0.1:9002", "http://evil.example", "null"] {
            let pre = call(&peers, Method::OPTIONS, Some(stranger), &ask).await;
            assert_eq!(pre.status(), StatusCode::FORBIDDEN, "{stranger}");
            let post = call(&peers, Method::POST, Some(stranger), &[]).await;
            assert!(!post.headers().contains_key(header::ACCESS_CONTROL_ALLOW_ORIGIN), "{stranger}");
        }
        let same_origin = call(&peers, Method::POST, None, &[]).await;
        assert!(!same_origin.headers().contains_key(header::ACCESS_CONTROL_ALLOW_ORIGIN));
    }
}
