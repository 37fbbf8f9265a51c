//! The one HTTP server behind every ponte port (the relay's viewer page and
//! WHEP, both management ports), guarded against what a port reachable
//! from a LAN meets:
//!
//! - **slow clients** (slowloris): a request head must arrive within
//!   `read_timeout` and its body within `read_timeout` more; a kept-alive
//!   connection waiting for its next request closes after `read_timeout`;
//!   a connection on which nothing moves for `idle_timeout` closes. axum's
//!   own `serve` runs hyper without a timer, so there a client sending one
//!   byte a minute held its connection (and a file descriptor) for ever.
//! - **connection floods**: at most `max_connections` at once, and
//!   `max_connections_per_client` from one address; a connection over
//!   either cap is answered `503` and closed at once, so one host cannot
//!   take every slot (or every descriptor) from the others.
//! - **DNS rebinding**: a web page an operator opens can point its own name
//!   at this server's address and read the answers. Browsers send that name
//!   as `Host`, so a request whose `Host` is not one of the server's names
//!   or addresses is refused with `421 Misdirected Request` (this server does
//!   not serve that authority; not `403`, which would suggest that another
//!   credential could help). Allowed: the entries of `allowed_hosts`,
//!   `localhost`, the listen IP and the IP the connection arrived on (so a
//!   wildcard listen still answers `http://<any address of this host>/`);
//!   other names must be listed. A request without `Host` (HTTP/1.0 probes)
//!   passes: no browser sends one.
//!
//! - **eavesdropping**: with `tls` the port speaks HTTPS only (a TLS
//!   handshake must finish within `read_timeout` too) and tells browsers to
//!   stay on it (`Strict-Transport-Security`); [`redirect_router`] is the
//!   plain-HTTP port that only sends them there.
//!
//! The accounting of slots ([`Slots`]) and the Host rule ([`AllowedHosts`])
//! are plain structs; [`serve`] is the thin accept loop around them.

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{header, HeaderValue, Request, Response, StatusCode};
use axum::Router;
use hyper::body::{Frame, Incoming, SizeHint};
use hyper_util::rt::{TokioIo, TokioTimer};
use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::time::Instant;
use tower::ServiceExt as _;

/// Default `read_timeout_secs` of every port.
pub const DEFAULT_READ_TIMEOUT_SECS: u64 = 10;
/// Default `idle_timeout_secs` of every port.
pub const DEFAULT_IDLE_TIMEOUT_SECS: u64 = 60;
/// Default connection cap of the relay's viewer port: with RTSP's 256 and
/// a WebRTC socket per viewer, well inside systemd's 1024 descriptors.
pub const DEFAULT_VIEWER_MAX_CONNECTIONS: usize = 512;
/// Default per-address cap of the viewer port: a control room behind one
/// NAT address, each browser holding a few connections.
pub const DEFAULT_VIEWER_MAX_PER_CLIENT: usize = 64;
/// Default connection cap of a management port (Prometheus, the status
/// CLI, a few operators).
pub const DEFAULT_MANAGEMENT_MAX_CONNECTIONS: usize = 64;
/// Default per-address cap of a management port.
pub const DEFAULT_MANAGEMENT_MAX_PER_CLIENT: usize = 16;

/// How long a stopping server waits for requests under way.
const DRAIN: Duration = Duration::from_secs(5);
/// At most one warning per this long per port for each kind of refusal.
const WARN_EVERY: Duration = Duration::from_secs(10);

/// How one HTTP port guards itself.
#[derive(Debug, Clone)]
pub struct HttpOptions {
    /// What the port is, for logs (`viewer page`, `management port`).
    pub name: &'static str,
    /// Prefix of the port's config keys, for messages (`relay.http_`, `management.`).
    pub keys: &'static str,
    /// Extra names and addresses (`name`, `name:port`, `10.0.0.5`, `[::1]:9090`) clients use.
    pub allowed_hosts: Vec<String>,
    /// Connections open at once.
    pub max_connections: usize,
    /// Connections open at once from one client address.
    pub max_connections_per_client: usize,
    /// Budget for a request head, and again for its body; also how long a
    /// kept-alive connection waits for the next request.
    pub read_timeout: Duration,
    /// A connection on which nothing moves for this long is closed.
    pub idle_timeout: Duration,
    /// HTTPS: the port's TLS config (HTTP/2 and HTTP/1.1 by ALPN); every
    /// answer then carries `Strict-Transport-Security`. `None`: plain
    /// HTTP/1.1.
    pub tls: Option<Arc<rustls::ServerConfig>>,
}

impl HttpOptions {
    /// Checks the settings for `listen`; the error names the key and the fix.
    pub fn check(&self, listen: SocketAddr) -> Result<(), String> {
        let k = self.keys;
        if self.max_connections == 0 || self.max_connections_per_client == 0 {
            return Err(format!(
                "`{k}max_connections` and `{k}max_connections_per_client` must be at least 1"
            ));
        }
        if self.max_connections_per_client > self.max_connections {
            return Err(format!(
                "`{k}max_connections_per_client` = {} is above `{k}max_connections` = {}: lower it, or raise \
                 the total",
                self.max_connections_per_client, self.max_connections
            ));
        }
        if !(1..=3600).contains(&self.read_timeout.as_secs()) {
            return Err(format!(
                "`{k}read_timeout_secs` = {}: expected 1 to 3600",
                self.read_timeout.as_secs()
            ));
        }
        if !(1..=86_400).contains(&self.idle_timeout.as_secs()) {
            return Err(format!(
                "`{k}idle_timeout_secs` = {}: expected 1 to 86400",
                self.idle_timeout.as_secs()
            ));
        }
        AllowedHosts::new(listen, &self.allowed_hosts)
            .map(|_| ())
            .map_err(|e| format!("`{k}allowed_hosts`: {e}"))
    }
}

// ---- Host check (sans-IO) -----------------------------------------------------

/// The names and addresses a port answers to (see the module doc).
#[derive(Debug, Clone)]
pub struct AllowedHosts {
    /// Lower-case host (brackets off IPv6) and, when given, the port.
    entries: Vec<(String, Option<u16>)>,
    /// The listen IP, unless it is a wildcard.
    listen: Option<IpAddr>,
}

/// Splits an authority (`Host` value) into lower-case host and port;
/// `None` if it is not one (empty, stray characters, bad port).
fn split_authority(text: &str) -> Option<(String, Option<u16>)> {
    let text = text.trim();
    if text.parse::<std::net::Ipv6Addr>().is_ok() {
        return Some((text.to_ascii_lowercase(), None));
    }
    let (host, port) = if let Some(rest) = text.strip_prefix('[') {
        let (v6, after) = rest.split_once(']')?;
        v6.parse::<std::net::Ipv6Addr>().ok()?;
        let port = match after {
            "" => None,
            p => Some(p.strip_prefix(':')?),
        };
        (v6.to_owned(), port)
    } else {
        match text.split_once(':') {
            Some((h, p)) => (h.to_owned(), Some(p)),
            None => (text.to_owned(), None),
        }
    };
    let port = match port {
        None => None,
        Some(p) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => Some(p.parse::<u16>().ok()?),
        Some(_) => return None,
    };
    let host = host.strip_suffix('.').unwrap_or(&host).to_ascii_lowercase();
    let name_ok = !host.is_empty()
        && host.len() <= 253
        && host.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b':'));
    name_ok.then_some((host, port))
}

impl AllowedHosts {
    /// The rule for a port listening on `listen` with these extra entries;
    /// the error names the entry that is not a host name or address.
    pub fn new(listen: SocketAddr, entries: &[String]) -> Result<Self, String> {
        let entries = entries
            .iter()
            .map(|e| {
                split_authority(e).ok_or_else(|| {
                    format!("{e:?} is not a host name or address (e.g. \"relay.example.lan\", \"10.20.0.5\", \"[fd00::5]:8080\")")
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let ip = listen.ip().to_canonical();
        Ok(Self { entries, listen: (!ip.is_unspecified()).then_some(ip) })
    }

    /// Whether a request with this `Host` (or absolute-URI authority),
    /// arriving on the local address `local`, is for this server.
    pub fn allows(&self, authority: &str, local: IpAddr) -> bool {
        let Some((host, port)) = split_authority(authority) else { return false };
        if host == "localhost" {
            return true;
        }
        if let Ok(ip) = host.parse::<IpAddr>() {
            let ip = ip.to_canonical();
            if ip == local.to_canonical() || Some(ip) == self.listen {
                return true;
            }
        }
        let same = |h: &str| {
            h == host
                || matches!((h.parse::<IpAddr>(), host.parse::<IpAddr>()), (Ok(a), Ok(b)) if a.to_canonical() == b.to_canonical())
        };
        self.entries.iter().any(|(h, p)| same(h) && p.is_none_or(|p| Some(p) == port))
    }
}

/// The authority a request is for: its absolute URI's, else its one `Host`.
/// `Ok(None)`: no `Host` at all; `Err` for several or unreadable ones.
fn authority_of<B>(req: &Request<B>) -> Result<Option<String>, ()> {
    if let Some(a) = req.uri().authority() {
        return Ok(Some(a.as_str().to_owned()));
    }
    let mut hosts = req.headers().get_all(header::HOST).iter();
    match (hosts.next(), hosts.next()) {
        (None, _) => Ok(None),
        (Some(h), None) => h.to_str().map(|h| Some(h.to_owned())).map_err(|_| ()),
        (Some(_), Some(_)) => Err(()),
    }
}

// ---- connection slots (sans-IO) -----------------------------------------------

/// Connections open, in all and per client address.
#[derive(Debug, Default)]
pub struct Slots {
    total: usize,
    per_client: HashMap<IpAddr, usize>,
}

/// Why a connection got no slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Full {
    /// `max_connections` are open.
    Total,
    /// This client already has `max_connections_per_client`.
    Client,
}

impl Slots {
    /// Takes a slot for `client`, or says which cap is reached.
    pub fn take(&mut self, client: IpAddr, max: usize, per_client: usize) -> Result<(), Full> {
        let client = client.to_canonical();
        let mine = self.per_client.get(&client).copied().unwrap_or(0);
        if mine >= per_client {
            return Err(Full::Client);
        }
        if self.total >= max {
            return Err(Full::Total);
        }
        self.total += 1;
        self.per_client.insert(client, mine + 1);
        Ok(())
    }

    /// Gives back a slot of `client`.
    pub fn release(&mut self, client: IpAddr) {
        let client = client.to_canonical();
        self.total = self.total.saturating_sub(1);
        if let Some(n) = self.per_client.get_mut(&client) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.per_client.remove(&client);
            }
        }
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.total
    }

    /// Connections `client` has open now.
    pub fn of(&self, client: IpAddr) -> usize {
        self.per_client.get(&client.to_canonical()).copied().unwrap_or(0)
    }

    /// Clients with a connection open now.
    pub fn clients(&self) -> usize {
        self.per_client.len()
    }
}

// ---- the server -----------------------------------------------------------------

/// What every connection of one port shares.
struct Port {
    options: HttpOptions,
    hosts: AllowedHosts,
    app: Router,
    slots: Mutex<Slots>,
    /// When each kind of refusal was last logged, and how many went unlogged since.
    warned: Mutex<HashMap<&'static str, (Instant, u64)>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Port {
    /// Whether to log a refusal of this kind now; with how many were not logged.
    fn should_warn(&self, kind: &'static str) -> Option<u64> {
        let now = Instant::now();
        let mut warned = lock(&self.warned);
        match warned.get_mut(kind) {
            Some((at, quiet)) if now.duration_since(*at) < WARN_EVERY => {
                *quiet += 1;
                None
            }
            Some((at, quiet)) => {
                let skipped = std::mem::take(quiet);
                *at = now;
                Some(skipped)
            }
            None => {
                warned.insert(kind, (now, 0));
                Some(0)
            }
        }
    }

    /// Refuses a connection over a cap: a short 503 if the socket takes it, then close.
    fn refuse(&self, stream: TcpStream, client: SocketAddr, full: Full) {
        let (k, o) = (self.options.keys, &self.options);
        let why = match full {
            Full::Client => format!(
                "{} connections from {} already open (`{k}max_connections_per_client`)",
                o.max_connections_per_client,
                client.ip()
            ),
            Full::Total => format!("{} connections already open (`{k}max_connections`)", o.max_connections),
        };
        let body = format!("too many connections: {why}\n");
        let resp = format!(
            "HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain; charset=utf-8\r\n\
             content-length: {}\r\nretry-after: 5\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        let _ = stream.try_write(resp.as_bytes());
        let kind = match full {
            Full::Client => "client cap",
            Full::Total => "total cap",
        };
        if let Some(skipped) = self.should_warn(kind) {
            tracing::warn!(
                port = self.options.name,
                client = %client,
                refused_since_last_warning = skipped,
                "connection refused: {why}"
            );
        }
    }

    /// 421 for a request that is not for this server.
    fn misdirected(&self, authority: Option<&str>, client: SocketAddr) -> Response<Body> {
        let shown: String = authority.unwrap_or("(several Host headers)").chars().take(100).collect();
        let k = self.options.keys;
        if let Some(skipped) = self.should_warn("host") {
            tracing::warn!(
                port = self.options.name,
                client = %client,
                host = %shown.escape_debug(),
                refused_since_last_warning = skipped,
                "request refused: Host is not a name of this server (DNS rebinding?); if operators use \
                 this name, add it to `{k}allowed_hosts`"
            );
        }
        let body = format!(
            "421 Misdirected Request: this server does not answer to Host {shown:?}; if that is a name \
             of this server, add it to `{k}allowed_hosts`\n"
        );
        let mut resp = Response::new(Body::from(body));
        *resp.status_mut() = StatusCode::MISDIRECTED_REQUEST;
        resp.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
        resp
    }
}

/// A slot held for one connection's lifetime.
struct Slot {
    port: Arc<Port>,
    client: IpAddr,
}

impl Drop for Slot {
    fn drop(&mut self) {
        lock(&self.port.slots).release(self.client);
    }
}

/// Serves `app` on `listener` until `shutdown` resolves, then lets requests
/// under way finish (for at most 5 s). Handlers find the client's address
/// as `ConnectInfo<SocketAddr>`.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    options: HttpOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let listen = listener.local_addr()?;
    options.check(listen).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let hosts = AllowedHosts::new(listen, &options.allowed_hosts)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    if listen.ip().is_unspecified() && options.allowed_hosts.is_empty() {
        tracing::info!(
            port = options.name,
            %listen,
            "wildcard listen without `{}allowed_hosts`: clients must use an IP address of this host \
             (or localhost); list the names operators use",
            options.keys
        );
    }
    let port = Arc::new(Port {
        options,
        hosts,
        app,
        slots: Mutex::new(Slots::default()),
        warned: Mutex::new(HashMap::new()),
    });
    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::pin!(shutdown);
    loop {
        let (stream, client) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    accept_failed(&port, &e).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let (max, per_client) = (port.options.max_connections, port.options.max_connections_per_client);
        let taken = lock(&port.slots).take(client.ip(), max, per_client);
        if let Err(full) = taken {
            port.refuse(stream, client, full);
            continue;
        }
        let slot = Slot { port: port.clone(), client: client.ip() };
        tokio::spawn(connection(stream, client, slot, stop_rx.clone()));
    }
    drop(listener);
    let _ = stop_tx.send(true);
    let deadline = Instant::now() + DRAIN;
    while lock(&port.slots).open() > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

/// The app of a plain-HTTP port beside an HTTPS one: every request is
/// sent to the same host and path on `https_port` (308, so a POST stays a
/// POST), nothing else is served. The Host check runs first, so it never
/// redirects to a name this server does not answer to.
pub fn redirect_router(https_port: u16) -> Router {
    Router::new().fallback(move |req: Request<Body>| async move { redirect(&req, https_port) })
}

fn redirect<B>(req: &Request<B>, https_port: u16) -> Response<Body> {
    let host = authority_of(req).ok().flatten().unwrap_or_default();
    let host = strip_port(&host);
    let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
    let target = if host.is_empty() {
        None
    } else if https_port == 443 {
        Some(format!("https://{host}{path}"))
    } else {
        Some(format!("https://{host}:{https_port}{path}"))
    };
    let mut resp = Response::new(Body::from(match &target {
        Some(t) => format!("this page is served over HTTPS: {t}\n"),
        None => format!("this page is served over HTTPS, on port {https_port}\n"),
    }));
    *resp.status_mut() =
        if target.is_some() { StatusCode::PERMANENT_REDIRECT } else { StatusCode::BAD_REQUEST };
    if let Some(v) = target.and_then(|t| HeaderValue::from_str(&t).ok()) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    resp
}

/// `name`, `name:port`, `[v6]:port`, `10.0.0.5:80` → the host part.
fn strip_port(authority: &str) -> &str {
    if let Some(rest) = authority.strip_prefix('[') {
        return rest.split_once(']').and_then(|(v6, _)| authority.get(..v6.len() + 2)).unwrap_or(authority);
    }
    match authority.rsplit_once(':') {
        Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => host,
        _ => authority,
    }
}

async fn accept_failed(port: &Port, e: &io::Error) {
    use io::ErrorKind::*;
    // The peer gave up before we took it: nothing to do.
    if matches!(e.kind(), ConnectionAborted | ConnectionReset | ConnectionRefused | Interrupted) {
        return;
    }
    if port.should_warn("accept").is_some() {
        tracing::warn!(
            port = port.options.name,
            error = %e,
            "cannot accept connections (out of file descriptors? lower `{}max_connections` or raise the \
             service's LimitNOFILE)",
            port.options.keys
        );
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
}

/// One connection: TLS first on an HTTPS port, then HTTP/1.1 (or HTTP/2
/// by ALPN) with hyper's header-read timer, closed after `idle_timeout`
/// without a byte either way, drained on shutdown.
async fn connection(stream: TcpStream, client: SocketAddr, slot: Slot, stop: watch::Receiver<bool>) {
    let port = slot.port.clone();
    let local = stream.local_addr().map(|a| a.ip()).unwrap_or(client.ip());
    let started = Instant::now();
    let moved = Arc::new(AtomicU64::new(0));
    let watched = Watched { io: stream, started, moved: moved.clone() };
    match port.options.tls.clone() {
        None => http(watched, Peer { client, local, cert: None }, slot, stop, (started, moved), false).await,
        Some(tls) => {
            let accept = tokio_rustls::TlsAcceptor::from(tls).accept(watched);
            match tokio::time::timeout(port.options.read_timeout, accept).await {
                Ok(Ok(stream)) => {
                    let peer = stream
                        .get_ref()
                        .1
                        .peer_certificates()
                        .and_then(|c| c.first())
                        .and_then(|c| crate::tls::site_of_certificate(c))
                        .map(ClientCertificate);
                    let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
                    http(stream, Peer { client, local, cert: peer }, slot, stop, (started, moved), h2).await
                }
                Ok(Err(e)) => {
                    tracing::debug!(port = port.options.name, client = %client, "TLS handshake failed: {e}");
                }
                Err(_) => {
                    tracing::debug!(port = port.options.name, client = %client, "TLS handshake timed out");
                }
            }
        }
    }
}

/// Serves HTTP on an established connection (plain or TLS) until it ends.
async fn http<I>(
    io: I,
    peer: Peer,
    slot: Slot,
    mut stop: watch::Receiver<bool>,
    (started, moved): (Instant, Arc<AtomicU64>),
    h2: bool,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let port = slot.port.clone();
    let handler = port.clone();
    let client = peer.client;
    let peer = Arc::new(peer);
    let service = hyper::service::service_fn(move |req| {
        let (port, peer) = (handler.clone(), peer.clone());
        async move { Ok::<_, Infallible>(handle(&port, req, &peer).await) }
    });
    let mut builder = hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).header_read_timeout(port.options.read_timeout);
    builder.http2().timer(TokioTimer::new());
    if !h2 {
        builder = builder.http1_only();
    }
    let conn = builder.serve_connection(TokioIo::new(io), service);
    tokio::pin!(conn);
    let idle = port.options.idle_timeout;
    let mut draining = false;
    loop {
        let last = started + Duration::from_millis(moved.load(Ordering::Relaxed));
        tokio::select! {
            done = conn.as_mut() => {
                if let Err(e) = done {
                    tracing::debug!(port = port.options.name, client = %client, "connection closed: {e}");
                }
                break;
            }
            _ = stop.changed(), if !draining => {
                draining = true;
                conn.as_mut().graceful_shutdown();
            }
            () = tokio::time::sleep_until(last + idle) => {
                let last = started + Duration::from_millis(moved.load(Ordering::Relaxed));
                if Instant::now() >= last + idle {
                    tracing::debug!(port = port.options.name, client = %client, "connection closed: idle for {idle:?}");
                    break;
                }
            }
        }
    }
    drop(slot);
}

/// The client end of one connection.
struct Peer {
    client: SocketAddr,
    local: IpAddr,
    cert: Option<ClientCertificate>,
}

/// The site (or name) of the verified client certificate of an HTTPS
/// connection, in a request's extensions (management ports with
/// `client_ca`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientCertificate(pub String);

/// `Strict-Transport-Security` of every HTTPS answer: one year; browsers
/// then refuse plain HTTP to this name, so a rogue host on the LAN cannot
/// serve a look-alike login page over it.
const HSTS: &str = "max-age=31536000";

/// Host check, connection info and the body deadline, then the app.
async fn handle(port: &Port, req: Request<Incoming>, peer: &Peer) -> Response<Body> {
    let mut resp = route(port, req, peer).await;
    if port.options.tls.is_some() {
        resp.headers_mut().insert(header::STRICT_TRANSPORT_SECURITY, HeaderValue::from_static(HSTS));
    }
    resp
}

async fn route(port: &Port, req: Request<Incoming>, peer: &Peer) -> Response<Body> {
    let (client, local) = (peer.client, peer.local);
    match authority_of(&req) {
        Ok(Some(a)) if !port.hosts.allows(&a, local) => return port.misdirected(Some(&a), client),
        Err(()) => return port.misdirected(None, client),
        Ok(_) => {}
    }
    let (mut parts, body) = req.into_parts();
    parts.extensions.insert(ConnectInfo(client));
    if let Some(cert) = &peer.cert {
        parts.extensions.insert(cert.clone());
    }
    let body = Body::new(ReadDeadline {
        body,
        deadline: Box::pin(tokio::time::sleep(port.options.read_timeout)),
        keys: port.options.keys,
    });
    let req = Request::from_parts(parts, body);
    port.app.clone().oneshot(req).await.unwrap_or_else(|never| match never {})
}

/// A request body that must arrive before its deadline.
struct ReadDeadline {
    body: Incoming,
    deadline: Pin<Box<tokio::time::Sleep>>,
    keys: &'static str,
}

impl hyper::body::Body for ReadDeadline {
    type Data = bytes::Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = &mut *self;
        match Pin::new(&mut this.body).poll_frame(cx) {
            Poll::Ready(frame) => Poll::Ready(frame.map(|f| f.map_err(Into::into))),
            Poll::Pending if this.deadline.as_mut().poll(cx).is_ready() => Poll::Ready(Some(Err(format!(
                "the request body did not arrive within `{}read_timeout_secs`",
                this.keys
            )
            .into()))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// A socket that notes when a byte last moved either way (milliseconds
/// since `started`), for the idle timeout.
struct Watched {
    io: TcpStream,
    started: Instant,
    moved: Arc<AtomicU64>,
}

impl Watched {
    fn touch(&self) {
        let ms = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.moved.store(ms, Ordering::Relaxed);
    }
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.io).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.touch();
        }
        polled
    }
}

impl AsyncWrite for Watched {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.io).poll_write(cx, data);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.touch();
        }
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.touch();
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn hosts_allow_the_listen_address_localhost_the_arrival_address_and_the_list() {
        let lan = AllowedHosts::new("10.20.0.5:8080".parse().unwrap(), &[]).unwrap();
        let here = ip("10.20.0.5");
        for ok in ["10.20.0.5:8080", "10.20.0.5", "localhost:8080", "LOCALHOST", "localhost."] {
            assert!(lan.allows(ok, here), "{ok}");
        }
        for bad in ["evil.example", "evil.example:8080", "10.20.0.6:8080", "", "a b", "10.20.0.5:x", "[::1"] {
            assert!(!lan.allows(bad, here), "{bad}");
        }
        // A wildcard listen answers to the address the connection arrived on.
        let any = AllowedHosts::new("0.0.0.0:9091".parse().unwrap(), &["Relay.Example.lan".into()]).unwrap();
        assert!(any.allows("192.168.1.7:9091", ip("192.168.1.7")));
        assert!(any.allows("192.168.1.7", ip("::ffff:192.168.1.7")), "v4-mapped arrival address");
        assert!(!any.allows("192.168.1.8", ip("192.168.1.7")));
        assert!(!any.allows("0.0.0.0:9091", ip("192.168.1.7")), "the wildcard itself is no address");
        assert!(any.allows("relay.example.lan:9091", ip("192.168.1.7")));
        assert!(any.allows("relay.example.lan.", ip("192.168.1.7")));
        assert!(!any.allows("evil.relay.example.lan", ip("192.168.1.7")));
        let v6 = AllowedHosts::new("[::1]:9090".parse().unwrap(), &["[fd00::5]:8080".into()]).unwrap();
        assert!(v6.allows("[::1]:9090", ip("::1")));
        assert!(v6.allows("[FD00::5]:8080", ip("::1")));
        assert!(!v6.allows("[fd00::5]:8081", ip("::1")), "an entry with a port matches that port only");
        let bare = AllowedHosts::new("[::]:9090".parse().unwrap(), &["fd00::7".into()]).unwrap();
        assert!(bare.allows("[fd00::7]:9090", ip("fd00::1")), "an IPv6 entry without brackets");
        let err = AllowedHosts::new("127.0.0.1:1".parse().unwrap(), &["http://x/".into()]).unwrap_err();
        assert!(err.contains("\"http://x/\" is not a host name"), "{err}");
    }

    #[test]
    fn slots_cap_the_total_and_each_client() {
        let mut s = Slots::default();
        let (a, b, c) = (ip("127.0.0.2"), ip("127.0.0.3"), ip("::ffff:127.0.0.2"));
        assert_eq!(s.take(a, 3, 2), Ok(()));
        assert_eq!(s.take(c, 3, 2), Ok(()), "the same client, v4-mapped");
        assert_eq!(s.take(a, 3, 2), Err(Full::Client));
        assert_eq!(s.take(b, 3, 2), Ok(()));
        assert_eq!(s.take(ip("127.0.0.4"), 3, 2), Err(Full::Total));
        s.release(a);
        assert_eq!(s.take(b, 3, 2), Ok(()));
        for x in [a, b, b] {
            s.release(x);
        }
        assert_eq!((s.open(), s.per_client.len()), (0, 0));
    }

    #[test]
    fn the_plain_port_sends_to_the_same_host_and_path_on_https() {
        let req =
            |host: &str, uri: &str| Request::builder().uri(uri).header(header::HOST, host).body(()).unwrap();
        let loc = |r: Response<Body>| {
            (r.status(), r.headers().get(header::LOCATION).map(|v| v.to_str().unwrap().to_owned()))
        };
        assert_eq!(
            loc(redirect(&req("relay.cc.lan", "/?camera=x"), 443)),
            (StatusCode::PERMANENT_REDIRECT, Some("https://relay.cc.lan/?camera=x".into()))
        );
        assert_eq!(
            loc(redirect(&req("10.20.0.10:80", "/login"), 8443)),
            (StatusCode::PERMANENT_REDIRECT, Some("https://10.20.0.10:8443/login".into()))
        );
        assert_eq!(
            loc(redirect(&req("[fd00::5]:80", "/"), 443)),
            (StatusCode::PERMANENT_REDIRECT, Some("https://[fd00::5]/".into()))
        );
        let no_host = Request::builder().uri("/").body(()).unwrap();
        assert_eq!(loc(redirect(&no_host, 443)), (StatusCode::BAD_REQUEST, None));
        assert_eq!(strip_port("name"), "name");
        assert_eq!(strip_port("[::1]"), "[::1]");
    }

    fn options() -> HttpOptions {
        HttpOptions {
            name: "test port",
            keys: "test.",
            allowed_hosts: vec![],
            max_connections: 8,
            max_connections_per_client: 4,
            read_timeout: Duration::from_secs(1),
            idle_timeout: Duration::from_secs(2),
            tls: None,
        }
    }

    async fn start(options: HttpOptions) -> SocketAddr {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = Router::new().route(
            "/",
            axum::routing::get(|ConnectInfo(c): ConnectInfo<SocketAddr>| async move { c.ip().to_string() })
                .post(|body: String| async move { body }),
        );
        tokio::spawn(serve(listener, app, options, std::future::pending()));
        addr
    }

    /// Sends `req` and reads until the server closes; returns what came back.
    async fn exchange(addr: SocketAddr, req: &str) -> String {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(req.as_bytes()).await.unwrap();
        let mut out = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
        String::from_utf8_lossy(&out).into_owned()
    }

    #[tokio::test]
    async fn host_check_connect_info_and_caps_on_a_real_socket() {
        let addr = start(options()).await;
        let ok =
            exchange(addr, &format!("GET / HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n")).await;
        assert!(ok.starts_with("HTTP/1.1 200") && ok.ends_with("127.0.0.1"), "{ok}");
        let bad = exchange(addr, "GET / HTTP/1.1\r\nHost: evil.example\r\nConnection: close\r\n\r\n").await;
        assert!(bad.starts_with("HTTP/1.1 421") && bad.contains("`test.allowed_hosts`"), "{bad}");
        let absolute = "GET http://evil.example/ HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
        assert!(exchange(addr, absolute).await.starts_with("HTTP/1.1 421"));
        let two =
            format!("GET / HTTP/1.1\r\nHost: {addr}\r\nHost: evil.example\r\nConnection: close\r\n\r\n");
        assert!(exchange(addr, &two).await.starts_with("HTTP/1.1 421"));
        let old = exchange(addr, "GET / HTTP/1.0\r\n\r\n").await;
        assert!(old.starts_with("HTTP/1.0 200") || old.starts_with("HTTP/1.1 200"), "no Host: {old}");

        // Four held connections fill this client's share; the fifth gets 503 at once.
        let mut held = Vec::new();
        for _ in 0..4 {
            held.push(TcpStream::connect(addr).await.unwrap());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        let t = Instant::now();
        let over = exchange(addr, "GET / HTTP/1.1\r\nHost: localhost\r\n\r\n").await;
        assert!(over.starts_with("HTTP/1.1 503") && over.contains("max_connections_per_client"), "{over}");
        assert!(t.elapsed() < Duration::from_millis(500));
    }

    #[tokio::test]
    async fn slow_heads_and_bodies_are_cut_at_the_read_timeout() {
        let addr = start(options()).await;
        // A head sent a byte at a time never completes: closed after ~1 s.
        let mut slow = TcpStream::connect(addr).await.unwrap();
        let t = Instant::now();
        let closed = async {
            for b in b"GET / HTTP/1.1\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa".iter().cycle() {
                if slow.write_all(&[*b]).await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
                let mut buf = [0u8; 64];
                if let Ok(Ok(0)) = tokio::time::timeout(Duration::from_millis(1), slow.read(&mut buf)).await {
                    return;
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(4), closed).await.expect("the slow head was cut");
        let took = t.elapsed();
        assert!(took >= Duration::from_millis(900) && took < Duration::from_millis(2500), "{took:?}");

        // A body promised but not sent: 400 once the deadline passes.
        let t = Instant::now();
        let resp =
            exchange(addr, "POST / HTTP/1.1\r\nHost: localhost\r\nContent-Length: 10\r\n\r\nabc").await;
        assert!(resp.starts_with("HTTP/1.1 400"), "{resp}");
        assert!(t.elapsed() >= Duration::from_millis(900) && t.elapsed() < Duration::from_millis(2500));

        // An idle kept-alive connection is closed after the read timeout too.
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n").await.unwrap();
        let t = Instant::now();
        let mut out = Vec::new();
        tokio::time::timeout(Duration::from_secs(4), s.read_to_end(&mut out)).await.unwrap().unwrap();
        assert!(String::from_utf8_lossy(&out).starts_with("HTTP/1.1 200"));
        assert!(t.elapsed() >= Duration::from_millis(900), "kept alive for the read timeout");
    }

    #[test]
    fn options_are_checked_naming_the_key() {
        let listen = "127.0.0.1:1".parse().unwrap();
        assert_eq!(options().check(listen), Ok(()));
        let over = HttpOptions { max_connections_per_client: 9, ..options() };
        assert!(over.check(listen).unwrap_err().contains("`test.max_connections_per_client` = 9"));
        let zero = HttpOptions { read_timeout: Duration::ZERO, ..options() };
        assert!(zero.check(listen).unwrap_err().contains("`test.read_timeout_secs`"));
        let host = HttpOptions { allowed_hosts: vec!["a/b".into()], ..options() };
        assert!(host.check(listen).unwrap_err().contains("`test.allowed_hosts`"));
    }
}
