//! The management port every node serves, and the `status` CLI that reads
//! it: `/healthz`, `/readyz`, `/status` (JSON), `/metrics` (Prometheus) and
//! `/` (the human status page), all rendered from one `StatusDoc`. These
//! read-only routes ask for no credential (Prometheus and the kubelet read
//! them); a node's control routes beside them (the agent's master-room PTZ
//! API) bring their own credential layer. The port runs the guarded
//! [`crate::http_server`]: Host check, connection caps, read timeouts.

use crate::http_server::HttpOptions;
use crate::status::{Health, StatusDoc};
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;

/// The latest status document, refreshed by the node's sampler.
pub type StatusFeed = watch::Receiver<Arc<StatusDoc>>;

/// How often nodes refresh their status document.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(1);

/// The read-only routes of the management port.
pub fn router(feed: StatusFeed) -> Router {
    Router::new()
        .route("/", get(page))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .route("/status", get(status))
        .route("/metrics", get(metrics))
        .with_state(feed)
}

/// `[management]` of both nodes; `PORT` is the node's default port
/// (loopback: open it deliberately, e.g. for Prometheus).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManagementSection<const PORT: u16> {
    /// TCP address of `/status`, `/metrics`, `/healthz`, `/readyz`, the
    /// status page (and the agent's master-room PTZ API).
    #[serde(default = "default_listen::<PORT>")]
    pub listen: SocketAddr,
    /// Names and addresses clients reach the port by, beyond `localhost`
    /// and its IP addresses (the DNS-rebinding guard).
    #[serde(default)]
    pub allowed_hosts: Vec<String>,
    /// Connections open at once.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Connections open at once from one client address.
    #[serde(default = "default_max_per_client")]
    pub max_connections_per_client: usize,
    /// Seconds a client has to send a request head (and again its body).
    #[serde(default = "default_read_timeout")]
    pub read_timeout_secs: u64,
    /// Seconds without a byte either way before a connection is closed.
    #[serde(default = "default_idle_timeout")]
    pub idle_timeout_secs: u64,
    /// HTTPS on the port (`[management.https]`, `cert` and `key`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub https: Option<crate::tls::https::HttpsSection>,
    /// With `https`: every client must present a certificate issued by
    /// this CA (the deployment's `ca.pem`: operators' certificates from
    /// `ponte-agent pki issue --site NAME --usage client`; a certificate
    /// naming an `[[operator]]` logs that operator in without a password).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_ca: Option<std::path::PathBuf>,
}

impl<const PORT: u16> Default for ManagementSection<PORT> {
    fn default() -> Self {
        Self {
            listen: default_listen::<PORT>(),
            allowed_hosts: Vec::new(),
            max_connections: default_max_connections(),
            max_connections_per_client: default_max_per_client(),
            read_timeout_secs: default_read_timeout(),
            idle_timeout_secs: default_idle_timeout(),
            https: None,
            client_ca: None,
        }
    }
}

impl<const PORT: u16> ManagementSection<PORT> {
    /// The port's HTTP guards.
    pub fn http_options(&self) -> HttpOptions {
        HttpOptions {
            name: "management port",
            keys: "management.",
            allowed_hosts: self.allowed_hosts.clone(),
            max_connections: self.max_connections,
            max_connections_per_client: self.max_connections_per_client,
            read_timeout: Duration::from_secs(self.read_timeout_secs),
            idle_timeout: Duration::from_secs(self.idle_timeout_secs),
            tls: None,
        }
    }

    /// Checks the keys; the error names the key and the fix.
    pub fn check(&self) -> Result<(), String> {
        if self.client_ca.is_some() && self.https.is_none() {
            return Err("`management.client_ca` needs HTTPS on the port: add `[management.https]` with \
                        `cert` and `key`"
                .into());
        }
        if self.https.as_ref().is_some_and(|h| h.redirect_listen.is_some()) {
            return Err("`management.https.redirect_listen`: the management port has no redirect port; \
                        clients (Prometheus, the status CLI) use https:// directly"
                .into());
        }
        self.http_options().check(self.listen)
    }

    /// The port's HTTP guards with its HTTPS loaded (`ca`: the deployment
    /// CA, sent after a certificate it issued); the pair, for reloads.
    pub fn load_https(
        &self,
        ca: Vec<rustls::pki_types::CertificateDer<'static>>,
    ) -> Result<(HttpOptions, Option<Arc<crate::tls::https::HttpsPair>>), crate::tls::TlsError> {
        let mut options = self.http_options();
        let Some(h) = &self.https else { return Ok((options, None)) };
        let pair = crate::tls::https::HttpsPair::load(&h.cert, &h.key, ca)?;
        let client_ca = match &self.client_ca {
            Some(path) => Some(crate::tls::https::load_client_ca(path)?),
            None => None,
        };
        options.tls = Some(pair.server_config(client_ca.as_deref())?);
        Ok((options, Some(pair)))
    }
}

fn default_listen<const PORT: u16>() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], PORT))
}

fn default_max_connections() -> usize {
    crate::http_server::DEFAULT_MANAGEMENT_MAX_CONNECTIONS
}

fn default_max_per_client() -> usize {
    crate::http_server::DEFAULT_MANAGEMENT_MAX_PER_CLIENT
}

fn default_read_timeout() -> u64 {
    crate::http_server::DEFAULT_READ_TIMEOUT_SECS
}

fn default_idle_timeout() -> u64 {
    crate::http_server::DEFAULT_IDLE_TIMEOUT_SECS
}

/// Binds the management port (so a busy port fails start-up with a clear
/// error) and serves it in the background.
pub async fn spawn(
    listen: SocketAddr,
    feed: StatusFeed,
    options: HttpOptions,
) -> std::io::Result<SocketAddr> {
    spawn_with(listen, feed, Router::new(), options).await
}

/// Like [`spawn`], with the node's control routes beside the read-only
/// ones; `control` must carry its own credential layer.
pub async fn spawn_with(
    listen: SocketAddr,
    feed: StatusFeed,
    control: Router,
    options: HttpOptions,
) -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let listen = listener.local_addr()?;
    options.check(listen).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    tracing::info!(%listen, "management port: /status /metrics /healthz /readyz and the status page");
    let app = router(feed).merge(control);
    tokio::spawn(async move {
        if let Err(e) = crate::http_server::serve(listener, app, options, std::future::pending()).await {
            tracing::error!(error = %e, "management port failed");
        }
    });
    Ok(listen)
}

async fn page(State(feed): State<StatusFeed>) -> Html<String> {
    Html(feed.borrow().html())
}

async fn status(State(feed): State<StatusFeed>) -> Json<StatusDoc> {
    Json((**feed.borrow()).clone())
}

async fn metrics(State(feed): State<StatusFeed>) -> Response {
    let body = feed.borrow().prometheus();
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], body).into_response()
}

async fn ready(State(feed): State<StatusFeed>) -> Response {
    let doc = feed.borrow().clone();
    if doc.health == Health::Down {
        (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {}\n", doc.problems.join("; "))).into_response()
    } else {
        (StatusCode::OK, "ready\n").into_response()
    }
}

/// Exit code when the node cannot be reached.
pub const EXIT_UNREACHABLE: i32 = 3;

/// Fetches `/status` from a management URL such as `http://127.0.0.1:9091`.
pub async fn fetch(url: &str) -> Result<StatusDoc, String> {
    fetch_with(url, &ClientTls::default()).await
}

/// How the `status` CLI reaches an HTTPS management port: the CA that
/// issued its certificate (`--ca`) and, for a port with `client_ca`, a
/// client certificate and key (`--cert`, `--key`).
#[derive(Debug, Clone, Default)]
pub struct ClientTls {
    /// CA certificate(s) to trust (PEM).
    pub ca: Option<std::path::PathBuf>,
    /// Client certificate (PEM).
    pub cert: Option<std::path::PathBuf>,
    /// Its key (PEM).
    pub key: Option<std::path::PathBuf>,
}

/// A connection [`ClientTls::connect`] opened: plain TCP or TLS over it.
pub trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Io for T {}

impl ClientTls {
    fn config(&self) -> Result<Arc<rustls::ClientConfig>, String> {
        use rustls::pki_types::pem::PemObject;
        let ca = self
            .ca
            .as_ref()
            .ok_or("an https:// URL needs `--ca FILE` (the CA that issued the port's certificate)")?;
        let mut roots = rustls::RootCertStore::empty();
        for c in crate::tls::https::load_client_ca(ca).map_err(|e| e.to_string())? {
            roots.add(c).map_err(|e| format!("`--ca {}`: {e}", ca.display()))?;
        }
        let builder =
            rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .map_err(|e| e.to_string())?
                .with_root_certificates(roots);
        let mut cfg = match (&self.cert, &self.key) {
            (Some(cert), Some(key)) => {
                let chain = rustls::pki_types::CertificateDer::pem_file_iter(cert)
                    .and_then(|i| i.collect::<Result<Vec<_>, _>>())
                    .map_err(|e| format!("`--cert {}`: {e}", cert.display()))?;
                let key = rustls::pki_types::PrivateKeyDer::from_pem_file(key)
                    .map_err(|e| format!("`--key {}`: {e}", key.display()))?;
                builder.with_client_auth_cert(chain, key).map_err(|e| e.to_string())?
            }
            (None, None) => builder.with_no_client_auth(),
            _ => return Err("give `--cert` and `--key` together".into()),
        };
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Arc::new(cfg))
    }

    /// Connects to `hostport` (`host:port`), over TLS when `https`.
    pub async fn connect(&self, https: bool, hostport: &str) -> Result<Box<dyn Io>, String> {
        let tcp = tokio::net::TcpStream::connect(hostport).await.map_err(|e| e.to_string())?;
        if !https {
            return Ok(Box::new(tcp));
        }
        let host =
            hostport.rsplit_once(':').map_or(hostport, |(h, _)| h).trim_matches(|c| c == '[' || c == ']');
        let name = rustls::pki_types::ServerName::try_from(host.to_owned()).map_err(|e| e.to_string())?;
        let tls = tokio_rustls::TlsConnector::from(self.config()?)
            .connect(name, tcp)
            .await
            .map_err(|e| format!("TLS: {e}"))?;
        Ok(Box::new(tls))
    }
}

/// [`fetch`] over HTTPS as `tls` says (plain `http://` ignores it).
pub async fn fetch_with(url: &str, tls: &ClientTls) -> Result<StatusDoc, String> {
    let (https, rest) = match (url.strip_prefix("http://"), url.strip_prefix("https://")) {
        (Some(rest), _) => (false, rest),
        (_, Some(rest)) => (true, rest),
        _ => return Err(format!("{url}: only http:// and https:// URLs are supported")),
    };
    let (hostport, path) = match rest.split_once('/') {
        Some((h, p)) => (h, format!("/{}", p.trim_end_matches('/'))),
        None => (rest, String::new()),
    };
    let path = format!("{path}/status");
    let io = async {
        let mut s = tls.connect(https, hostport).await?;
        let get = format!("GET {path} HTTP/1.1\r\nHost: {hostport}\r\nConnection: close\r\n\r\n");
        s.write_all(get.as_bytes()).await.map_err(|e| e.to_string())?;
        let mut buf = Vec::new();
        // A TLS peer may close without close_notify after the answer.
        let read = s.take(16 << 20).read_to_end(&mut buf).await;
        match read {
            Err(e) if buf.is_empty() => Err(e.to_string()),
            _ => Ok(buf),
        }
    };
    let buf = tokio::time::timeout(Duration::from_secs(5), io)
        .await
        .map_err(|_| format!("{url}: no answer within 5 s"))?
        .map_err(|e| format!("{url}: {e}"))?;
    let text = String::from_utf8_lossy(&buf);
    let (head, body) = text.split_once("\r\n\r\n").ok_or_else(|| format!("{url}: not an HTTP answer"))?;
    if !head.starts_with("HTTP/1.1 200") {
        return Err(format!("{url}: {}", head.lines().next().unwrap_or("")));
    }
    serde_json::from_str(body).map_err(|e| format!("{url}: not a ponte status document ({e})"))
}

/// `status` subcommand: prints the table (or JSON) and returns the exit code.
pub async fn status_cli(url: &str, json: bool, watch: Option<Duration>, tls: &ClientTls) -> i32 {
    loop {
        let code = match fetch_with(url, tls).await {
            Ok(doc) => {
                if watch.is_some() {
                    print!("\x1b[2J\x1b[H");
                }
                if json {
                    println!("{}", serde_json::to_string_pretty(&doc).unwrap_or_default());
                } else {
                    print!("{}", doc.table());
                }
                doc.health.exit_code()
            }
            Err(e) => {
                eprintln!("UNREACHABLE: {e}");
                EXIT_UNREACHABLE
            }
        };
        match watch {
            Some(every) => tokio::time::sleep(every).await,
            None => return code,
        }
    }
}
