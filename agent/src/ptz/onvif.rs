//! ONVIF PTZ client: SOAP 1.2 over HTTP/1.1 with WS-UsernameToken digest
//! authentication. ContinuousMove, Stop, GotoPreset, GetPresets, GetStatus on
//! the camera's PTZ service, and GetProfiles on its media service to find the
//! PTZ profile when the config does not name one.
//!
//! Requests are built as text (everything interpolated is escaped); answers
//! are read with roxmltree by local name, because cameras differ in prefixes
//! and even in the SOAP version of their faults. Each exchange opens its own
//! connection and the whole of it is bounded by the device's timeout, so a
//! dead camera costs a PTZ command its timeout and nothing more.
//!
//! A camera's answer is untrusted input that travels on to the partner sites
//! (presets, fault text in a `PtzResult`): everything read from it is
//! bounded here ([`MAX_PRESETS`] presets, names of [`MAX_NAME_CHARS`]
//! characters, fault text of [`MAX_FAULT_CHARS`]) and stripped of control
//! characters, and an answer beyond those bounds is an error of that one
//! command. Unbounded, a 1 MiB answer made a `PtzResult` over the
//! control-message limit and the relay closed the whole site link (issue 15).

use crate::ptz::device::{DeviceError, DeviceFuture, DeviceOp, Output, PtzDevice};
use crate::secret::Secret;
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::header::{CONTENT_TYPE, HOST, USER_AGENT, WWW_AUTHENTICATE};
use ponte_proto::ptz::{PtzErrorCode, PtzPosition, PtzPreset, MAX_PRESET_LEN, VELOCITY_MAX};
use roxmltree::Node;
use serde::{Deserialize, Serialize};
use sha1::{Digest as _, Sha1};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Timeout of one exchange when `timeout_ms` is not set.
const DEFAULT_TIMEOUT: Duration = Duration::from_millis(2000);
/// Accepted range of `device.onvif.timeout_ms`.
const TIMEOUT_MS: std::ops::RangeInclusive<u64> = 100..=60_000;
/// Largest answer read from a camera.
const MAX_RESPONSE: usize = 1 << 20;
/// Most presets relayed from one camera (PTZ domes offer 100 to 300).
pub const MAX_PRESETS: usize = 512;
/// Longest preset name kept, in characters (ONVIF's `tt:Name` is at most 64).
pub const MAX_NAME_CHARS: usize = 64;
/// Longest fault reason kept, in characters.
pub const MAX_FAULT_CHARS: usize = 512;
/// Longest fault code kept, in characters, and the most code levels.
const MAX_CODE_CHARS: usize = 64;
const MAX_CODE_LEVELS: usize = 8;

const NS_ENV: &str = "http://www.w3.org/2003/05/soap-envelope";
const NS_TPTZ: &str = "http://www.onvif.org/ver20/ptz/wsdl";
const NS_TRT: &str = "http://www.onvif.org/ver10/media/wsdl";
const NS_TT: &str = "http://www.onvif.org/ver10/schema";
const NS_WSSE: &str = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd";
const NS_WSU: &str = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-utility-1.0.xsd";
const PASSWORD_DIGEST: &str =
    "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-username-token-profile-1.0#PasswordDigest";
const BASE64_BINARY: &str =
    "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-soap-message-security-1.0#Base64Binary";

/// `[device.onvif]` table of a device in agent.toml.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OnvifSettings {
    /// PTZ service URL, e.g. `http://10.1.2.3/onvif/ptz_service`.
    pub url: String,
    /// Media service URL for GetProfiles; default: same host, `/onvif/media_service`.
    #[serde(default)]
    pub media_url: Option<String>,
    /// Profile token; None = the first profile with a PTZ configuration (GetProfiles).
    #[serde(default)]
    pub profile: Option<String>,
    /// WS-UsernameToken user; default: the device's RTSP user.
    #[serde(default)]
    pub username: Option<String>,
    /// WS-UsernameToken password; default: the device's RTSP password.
    #[serde(default)]
    pub password: Option<Secret>,
    /// Timeout of one request in milliseconds (default 2000).
    #[serde(default)]
    pub timeout_ms: Option<u64>,
}

/// Why an ONVIF request failed; messages name the camera and the fix.
#[derive(Debug, thiserror::Error)]
pub enum OnvifError {
    /// `[device.onvif]` is unusable.
    #[error("camera `{device}`: `device.onvif`: {reason}")]
    Config { device: String, reason: String },
    /// The command cannot be expressed in ONVIF (bad velocity, preset token).
    #[error("camera `{device}`: {reason}")]
    Invalid { device: String, reason: String },
    /// No complete answer within the timeout.
    #[error(
        "camera `{device}`: ONVIF {operation} to {url}: no answer within {} ms — is the camera on, and \
         `{setting}` right? (raise `device.onvif.timeout_ms` for a slow camera)",
        after.as_millis()
    )]
    Timeout { device: String, operation: &'static str, url: String, setting: &'static str, after: Duration },
    /// Connection refused, reset, no route.
    #[error(
        "camera `{device}`: ONVIF {operation}: cannot reach {url} ({reason}) — check `{setting}` and that \
         the camera is on the network"
    )]
    Unreachable {
        device: String,
        operation: &'static str,
        url: String,
        setting: &'static str,
        reason: String,
    },
    /// The camera refused the credentials.
    #[error(
        "camera `{device}`: ONVIF {operation} at {url}: credentials refused ({detail}) — check `device.onvif` \
         username/password (the device's RTSP credentials are used when unset) and that the camera's clock \
         is within a few minutes of the agent's"
    )]
    Auth { device: String, operation: &'static str, url: String, detail: String },
    /// The camera answered with a SOAP fault.
    #[error("camera `{device}`: ONVIF {operation} failed: fault {code}: {reason}")]
    Fault { device: String, operation: &'static str, code: String, reason: String },
    /// An HTTP error without a SOAP fault.
    #[error(
        "camera `{device}`: ONVIF {operation} at {url}: HTTP {status} without a SOAP fault ({excerpt}) — is \
         `{setting}` the camera's ONVIF service?"
    )]
    Http {
        device: String,
        operation: &'static str,
        url: String,
        setting: &'static str,
        status: u16,
        excerpt: String,
    },
    /// The answer is not the SOAP the operation calls for.
    #[error("camera `{device}`: ONVIF {operation} at {url}: unreadable answer: {reason}")]
    Parse { device: String, operation: &'static str, url: String, reason: String },
    /// GetProfiles lists no profile with a PTZ configuration.
    #[error(
        "camera `{device}`: GetProfiles at {url} lists no media profile with a PTZ configuration — set \
         `device.onvif.profile` to the camera's PTZ profile token"
    )]
    NoPtzProfile { device: String, url: String },
}

impl OnvifError {
    /// The PTZ reply code for this failure.
    pub fn code(&self) -> PtzErrorCode {
        match self {
            OnvifError::Timeout { .. } => PtzErrorCode::Timeout,
            OnvifError::Invalid { .. } => PtzErrorCode::Invalid,
            OnvifError::Config { .. } => PtzErrorCode::Unsupported,
            OnvifError::Unreachable { .. }
            | OnvifError::Auth { .. }
            | OnvifError::Fault { .. }
            | OnvifError::Http { .. }
            | OnvifError::Parse { .. }
            | OnvifError::NoPtzProfile { .. } => PtzErrorCode::CameraError,
        }
    }
}

/// Where a service lives: what to connect to and what to send.
#[derive(Debug, Clone)]
struct Endpoint {
    /// As configured (for messages).
    url: String,
    /// The config key that names it.
    setting: &'static str,
    /// Host to connect to (IPv6 without brackets).
    host: String,
    port: u16,
    /// `Host` header.
    authority: String,
    /// Path and query.
    path: String,
}

impl Endpoint {
    fn parse(raw: &str, setting: &'static str) -> Result<Endpoint, String> {
        let url = url::Url::parse(raw).map_err(|e| format!("`{setting}` = {raw:?} is not a URL ({e})"))?;
        if url.scheme() != "http" {
            return Err(format!(
                "`{setting}` = {raw:?}: only http:// ONVIF services are supported (cameras serve ONVIF over \
                 plain HTTP on the camera LAN)"
            ));
        }
        let host = match url.host() {
            Some(url::Host::Domain(d)) => d.to_owned(),
            Some(url::Host::Ipv4(a)) => a.to_string(),
            Some(url::Host::Ipv6(a)) => a.to_string(),
            None => return Err(format!("`{setting}` = {raw:?} has no host")),
        };
        let host_str = url.host_str().unwrap_or_default();
        let authority = match url.port() {
            Some(p) => format!("{host_str}:{p}"),
            None => host_str.to_owned(),
        };
        let port = url.port_or_known_default().unwrap_or(80);
        let path = match url.query() {
            Some(q) => format!("{}?{q}", url.path()),
            None => url.path().to_owned(),
        };
        Ok(Endpoint { url: raw.to_owned(), setting, host, port, authority, path })
    }
}

/// Which ONVIF service an operation belongs to.
#[derive(Clone, Copy)]
enum Service {
    Ptz,
    Media,
}

/// ONVIF PTZ client of one camera; cheap to clone (shared state).
#[derive(Clone)]
pub struct OnvifPtz {
    inner: Arc<Inner>,
}

struct Inner {
    device: String,
    ptz: Endpoint,
    media: Endpoint,
    /// Configured profile token.
    profile: Option<String>,
    /// Profile token found by GetProfiles.
    discovered: Mutex<Option<String>>,
    /// Username and password; None = no WS-Security header.
    credentials: Option<(String, String)>,
    timeout: Duration,
}

impl std::fmt::Debug for OnvifPtz {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OnvifPtz")
            .field("device", &self.inner.device)
            .field("url", &self.inner.ptz.url)
            .field("user", &self.inner.credentials.as_ref().map(|(u, _)| u))
            .finish_non_exhaustive()
    }
}

impl OnvifPtz {
    /// A client for `device_id`; `username`/`password` (the device's RTSP
    /// credentials) apply when `settings` has none.
    pub fn new(
        device_id: &str,
        settings: &OnvifSettings,
        username: Option<&str>,
        password: Option<&str>,
    ) -> Result<Self, OnvifError> {
        let config = |reason: String| OnvifError::Config { device: device_id.to_owned(), reason };
        let ptz = Endpoint::parse(&settings.url, "device.onvif.url").map_err(config)?;
        let media_raw = match &settings.media_url {
            Some(u) => u.clone(),
            None => {
                let mut url = url::Url::parse(&settings.url)
                    .map_err(|e| config(format!("`device.onvif.url` is not a URL ({e})")))?;
                url.set_path("/onvif/media_service");
                url.set_query(None);
                url.to_string()
            }
        };
        let media = Endpoint::parse(&media_raw, "device.onvif.media_url").map_err(config)?;
        let timeout = match settings.timeout_ms {
            None => DEFAULT_TIMEOUT,
            Some(ms) if TIMEOUT_MS.contains(&ms) => Duration::from_millis(ms),
            Some(ms) => {
                return Err(config(format!(
                    "`device.onvif.timeout_ms` = {ms}: expected {} to {} milliseconds",
                    TIMEOUT_MS.start(),
                    TIMEOUT_MS.end()
                )))
            }
        };
        if let Some(p) = &settings.profile {
            check_token(p).map_err(|e| config(format!("`device.onvif.profile` {e}")))?;
        }
        let user = settings.username.as_deref().or(username);
        let password = settings.password.as_ref().map(|s| s.0.as_str()).or(password);
        let credentials = user.map(|u| (u.to_owned(), password.unwrap_or_default().to_owned()));
        Ok(OnvifPtz {
            inner: Arc::new(Inner {
                device: device_id.to_owned(),
                ptz,
                media,
                profile: settings.profile.clone(),
                discovered: Mutex::new(None),
                credentials,
                timeout,
            }),
        })
    }

    /// Moves at velocities per mille (-1000..=1000; ONVIF generic space
    /// -1..1) until Stop or, camera-side, until `timeout` (ONVIF Timeout).
    pub async fn continuous_move(
        &self,
        pan: i16,
        tilt: i16,
        zoom: i16,
        timeout: Option<Duration>,
    ) -> Result<(), OnvifError> {
        for (name, v) in [("pan", pan), ("tilt", tilt), ("zoom", zoom)] {
            if !(-VELOCITY_MAX..=VELOCITY_MAX).contains(&v) {
                return Err(
                    self.invalid(format!("{name} velocity {v} outside -{VELOCITY_MAX}..={VELOCITY_MAX}"))
                );
            }
        }
        let profile = self.profile().await?;
        let body = continuous_move_body(&profile, pan, tilt, zoom, timeout);
        self.call(Service::Ptz, "ContinuousMove", &body, |_| Ok(())).await
    }

    /// Stops pan, tilt and zoom.
    pub async fn stop(&self) -> Result<(), OnvifError> {
        let profile = self.profile().await?;
        let body = format!(
            "<tptz:Stop><tptz:ProfileToken>{}</tptz:ProfileToken><tptz:PanTilt>true</tptz:PanTilt>\
             <tptz:Zoom>true</tptz:Zoom></tptz:Stop>",
            escape(&profile)
        );
        self.call(Service::Ptz, "Stop", &body, |_| Ok(())).await
    }

    /// Moves to the preset with this token.
    pub async fn goto_preset(&self, token: &str) -> Result<(), OnvifError> {
        check_token(token).map_err(|e| self.invalid(format!("preset token {e}")))?;
        let profile = self.profile().await?;
        let body = format!(
            "<tptz:GotoPreset><tptz:ProfileToken>{}</tptz:ProfileToken><tptz:PresetToken>{}</tptz:PresetToken>\
             </tptz:GotoPreset>",
            escape(&profile),
            escape(token)
        );
        self.call(Service::Ptz, "GotoPreset", &body, |_| Ok(())).await
    }

    /// The camera's presets.
    pub async fn presets(&self) -> Result<Vec<PtzPreset>, OnvifError> {
        let profile = self.profile().await?;
        let body = format!(
            "<tptz:GetPresets><tptz:ProfileToken>{}</tptz:ProfileToken></tptz:GetPresets>",
            escape(&profile)
        );
        self.call(Service::Ptz, "GetPresets", &body, parse_presets).await
    }

    /// Position and motion.
    pub async fn status(&self) -> Result<PtzPosition, OnvifError> {
        let profile = self.profile().await?;
        let body = format!(
            "<tptz:GetStatus><tptz:ProfileToken>{}</tptz:ProfileToken></tptz:GetStatus>",
            escape(&profile)
        );
        self.call(Service::Ptz, "GetStatus", &body, parse_status).await
    }

    fn invalid(&self, reason: String) -> OnvifError {
        OnvifError::Invalid { device: self.inner.device.clone(), reason }
    }

    /// The configured profile token, or the one GetProfiles found (asked once).
    async fn profile(&self) -> Result<String, OnvifError> {
        if let Some(p) = &self.inner.profile {
            return Ok(p.clone());
        }
        if let Some(p) = lock(&self.inner.discovered).clone() {
            return Ok(p);
        }
        let found = self
            .call(Service::Media, "GetProfiles", "<trt:GetProfiles/>", |r| Ok(first_ptz_profile(r)))
            .await?;
        let token = found.ok_or_else(|| OnvifError::NoPtzProfile {
            device: self.inner.device.clone(),
            url: self.inner.media.url.clone(),
        })?;
        tracing::info!(camera = %self.inner.device, profile = %token, "ONVIF PTZ profile discovered");
        *lock(&self.inner.discovered) = Some(token.clone());
        Ok(token)
    }

    /// One SOAP exchange, bounded by the timeout, its answer interpreted.
    async fn call<T>(
        &self,
        service: Service,
        operation: &'static str,
        body: &str,
        extract: impl FnOnce(Node) -> Result<T, String>,
    ) -> Result<T, OnvifError> {
        let inner = &self.inner;
        let (endpoint, ns) = match service {
            Service::Ptz => (&inner.ptz, NS_TPTZ),
            Service::Media => (&inner.media, NS_TRT),
        };
        let action = format!("{ns}/{operation}");
        let security = inner.credentials.as_ref().map(|(user, password)| {
            let nonce: [u8; 16] = rand::random();
            security_header(user, password, &nonce, &created_now())
        });
        let envelope = envelope(security.as_deref(), body);
        let answer = tokio::time::timeout(inner.timeout, exchange(endpoint, &action, envelope)).await;
        let result = match answer {
            Err(_) => Err(OnvifError::Timeout {
                device: inner.device.clone(),
                operation,
                url: endpoint.url.clone(),
                setting: endpoint.setting,
                after: inner.timeout,
            }),
            Ok(Err(reason)) => Err(OnvifError::Unreachable {
                device: inner.device.clone(),
                operation,
                url: endpoint.url.clone(),
                setting: endpoint.setting,
                reason,
            }),
            Ok(Ok(answer)) => interpret(&inner.device, operation, endpoint, &answer, extract),
        };
        if let Err(OnvifError::Fault { code, .. }) = &result {
            // The discovered profile may be gone (camera reconfigured): ask again next time.
            if code.contains("NoProfile") {
                lock(&inner.discovered).take();
            }
        }
        if let Err(e) = &result {
            tracing::warn!(camera = %inner.device, operation, error = %e, "ONVIF request failed");
        }
        result
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// What came back over HTTP.
#[derive(Debug)]
struct HttpAnswer {
    status: u16,
    www_authenticate: Option<String>,
    body: Bytes,
}

/// POSTs `envelope` to `endpoint` on a fresh HTTP/1.1 connection.
async fn exchange(endpoint: &Endpoint, action: &str, envelope: String) -> Result<HttpAnswer, String> {
    let stream = tokio::net::TcpStream::connect((endpoint.host.as_str(), endpoint.port))
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let _ = stream.set_nodelay(true);
    let (mut sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
        .await
        .map_err(|e| format!("HTTP handshake: {e}"))?;
    let request = hyper::Request::post(endpoint.path.as_str())
        .header(HOST, endpoint.authority.as_str())
        .header(CONTENT_TYPE, format!("application/soap+xml; charset=utf-8; action=\"{action}\""))
        .header(USER_AGENT, "ponte-agent")
        .body(Full::new(Bytes::from(envelope)))
        .map_err(|e| format!("building the request: {e}"))?;
    let response = async {
        let response = sender.send_request(request).await.map_err(|e| format!("HTTP: {e}"))?;
        let status = response.status().as_u16();
        let www_authenticate =
            response.headers().get(WWW_AUTHENTICATE).and_then(|v| v.to_str().ok()).map(str::to_owned);
        let body = Limited::new(response.into_body(), MAX_RESPONSE)
            .collect()
            .await
            .map_err(|e| format!("reading the answer (at most {MAX_RESPONSE} bytes): {e}"))?
            .to_bytes();
        Ok(HttpAnswer { status, www_authenticate, body })
    };
    tokio::pin!(conn);
    tokio::pin!(response);
    tokio::select! {
        biased;
        answer = &mut response => answer,
        ended = &mut conn => {
            ended.map_err(|e| format!("HTTP connection: {e}"))?;
            response.await
        }
    }
}

/// A SOAP fault, code path as local names (`Sender/InvalidArgVal/NoToken`).
#[derive(Debug, PartialEq)]
struct SoapFault {
    codes: Vec<String>,
    reason: String,
}

impl SoapFault {
    fn is_auth(&self) -> bool {
        self.codes
            .iter()
            .any(|c| matches!(c.as_str(), "NotAuthorized" | "FailedAuthentication" | "InvalidSecurity"))
    }
}

/// Turns an HTTP answer into the operation's result.
fn interpret<T>(
    device: &str,
    operation: &'static str,
    endpoint: &Endpoint,
    answer: &HttpAnswer,
    extract: impl FnOnce(Node) -> Result<T, String>,
) -> Result<T, OnvifError> {
    let parse = |reason: String| OnvifError::Parse {
        device: device.to_owned(),
        operation,
        url: endpoint.url.clone(),
        reason,
    };
    let text = std::str::from_utf8(&answer.body);
    let doc = text.ok().and_then(|t| roxmltree::Document::parse(t).ok());
    let fault = doc.as_ref().and_then(|d| soap_body(d)).and_then(parse_fault);
    if let Some(fault) = fault {
        let code = fault.codes.join("/");
        if fault.is_auth() || answer.status == 401 {
            return Err(OnvifError::Auth {
                device: device.to_owned(),
                operation,
                url: endpoint.url.clone(),
                detail: format!("HTTP {}, fault {code}: {}", answer.status, fault.reason),
            });
        }
        return Err(OnvifError::Fault { device: device.to_owned(), operation, code, reason: fault.reason });
    }
    if answer.status == 401 {
        let detail = match &answer.www_authenticate {
            Some(h) if h.trim_start().to_ascii_lowercase().starts_with("digest") => {
                "HTTP 401 asking for HTTP digest authentication; ponte authenticates with WS-UsernameToken, \
                 which ONVIF cameras accept unless configured otherwise"
                    .to_owned()
            }
            _ => "HTTP 401".to_owned(),
        };
        return Err(OnvifError::Auth {
            device: device.to_owned(),
            operation,
            url: endpoint.url.clone(),
            detail,
        });
    }
    if !(200..300).contains(&answer.status) {
        return Err(OnvifError::Http {
            device: device.to_owned(),
            operation,
            url: endpoint.url.clone(),
            setting: endpoint.setting,
            status: answer.status,
            excerpt: excerpt(&answer.body),
        });
    }
    let text = text.map_err(|_| parse("not UTF-8".into()))?;
    let doc = roxmltree::Document::parse(text).map_err(|e| parse(format!("not XML ({e})")))?;
    let body = soap_body(&doc)
        .ok_or_else(|| parse(format!("no SOAP Envelope/Body in {}", excerpt(&answer.body))))?;
    let expected = format!("{operation}Response");
    let response = body.children().find(Node::is_element).ok_or_else(|| parse("empty SOAP Body".into()))?;
    if response.tag_name().name() != expected {
        return Err(parse(format!("expected {expected}, got {}", clean(response.tag_name().name(), 64))));
    }
    extract(response).map_err(parse)
}

/// First characters of a body, on one line, for messages.
fn excerpt(body: &[u8]) -> String {
    let head = &body[..body.len().min(4096)];
    let one_line = clean(&String::from_utf8_lossy(head), 160);
    if one_line.is_empty() {
        "empty body".into()
    } else {
        one_line
    }
}

/// The SOAP Body (SOAP 1.2 or 1.1) of a document.
fn soap_body<'a>(doc: &'a roxmltree::Document<'a>) -> Option<Node<'a, 'a>> {
    let root = doc.root_element();
    if root.tag_name().name() != "Envelope" {
        return None;
    }
    child(root, "Body")
}

fn child<'a>(node: Node<'a, 'a>, name: &str) -> Option<Node<'a, 'a>> {
    node.children().find(|c| c.is_element() && c.tag_name().name() == name)
}

fn children<'a, 'n: 'a>(node: Node<'a, 'a>, name: &'n str) -> impl Iterator<Item = Node<'a, 'a>> + 'a {
    node.children().filter(move |c| c.is_element() && c.tag_name().name() == name)
}

/// Text of an element, trimmed.
fn text<'a>(node: Node<'a, 'a>) -> &'a str {
    node.text().map(str::trim).unwrap_or_default()
}

/// Local part of a QName value (`ter:NoToken` → `NoToken`), cleaned.
fn local(qname: &str) -> String {
    clean(qname.rsplit(':').next().unwrap_or(qname), MAX_CODE_CHARS)
}

/// Device text made fit for a message: control characters and runs of
/// whitespace become one space, and it is cut to `max` characters (with
/// `…`).
fn clean(raw: &str, max: usize) -> String {
    let mut out = String::new();
    let mut count = 0;
    for word in raw.split(|c: char| c.is_whitespace() || c.is_control()).filter(|w| !w.is_empty()) {
        if count > 0 {
            out.push(' ');
            count += 1;
        }
        for c in word.chars() {
            if count >= max {
                while out.ends_with(' ') {
                    out.pop();
                }
                out.push('…');
                return out;
            }
            out.push(c);
            count += 1;
        }
    }
    out
}

/// The fault in a SOAP Body, SOAP 1.2 (Code/Value, Subcode…, Reason/Text)
/// or SOAP 1.1 (faultcode, faultstring); codes and reason bounded.
fn parse_fault(body: Node) -> Option<SoapFault> {
    let fault = child(body, "Fault")?;
    let mut codes = Vec::new();
    let mut reason = String::new();
    if let Some(code) = child(fault, "Code") {
        let mut level = Some(code);
        while let Some(l) = level {
            if codes.len() == MAX_CODE_LEVELS {
                codes.push("…".to_owned());
                break;
            }
            if let Some(v) = child(l, "Value") {
                codes.push(local(text(v)));
            }
            level = child(l, "Subcode");
        }
        if let Some(r) = child(fault, "Reason") {
            let texts: Vec<Node> = children(r, "Text").collect();
            let english = texts.iter().find(|t| {
                t.attribute(("http://www.w3.org/XML/1998/namespace", "lang"))
                    .is_some_and(|l| l.starts_with("en"))
            });
            reason = english.or(texts.first()).map(|t| clean(text(*t), MAX_FAULT_CHARS)).unwrap_or_default();
        }
    } else {
        if let Some(c) = child(fault, "faultcode") {
            codes.push(local(text(c)));
        }
        if let Some(s) = child(fault, "faultstring") {
            reason = clean(text(s), MAX_FAULT_CHARS);
        }
    }
    // ONVIF 1.x-style detail text, when the reason is empty.
    if reason.is_empty() {
        if let Some(d) = child(fault, "Detail").or_else(|| child(fault, "detail")) {
            let mut joined = String::new();
            for t in d.descendants().filter_map(|n| n.text()).map(str::trim).filter(|t| !t.is_empty()) {
                if joined.len() > 4 * MAX_FAULT_CHARS {
                    break;
                }
                joined.push_str(t);
                joined.push(' ');
            }
            reason = clean(&joined, MAX_FAULT_CHARS);
        }
    }
    if reason.is_empty() {
        reason = "(no reason given)".into();
    }
    Some(SoapFault { codes, reason })
}

/// GetPresetsResponse → presets (entries without a token are skipped). More
/// than [`MAX_PRESETS`], or a token no `GotoPreset` could send back, make
/// the answer unusable; names are cleaned and cut to [`MAX_NAME_CHARS`].
fn parse_presets(response: Node) -> Result<Vec<PtzPreset>, String> {
    let mut presets = Vec::new();
    for p in children(response, "Preset") {
        let Some(token) = p.attribute("token").map(str::trim).filter(|t| !t.is_empty()) else { continue };
        if presets.len() == MAX_PRESETS {
            let total = children(response, "Preset").count();
            return Err(format!("the camera lists {total} presets; ponte relays at most {MAX_PRESETS}"));
        }
        if token.len() > MAX_PRESET_LEN || token.chars().any(char::is_control) {
            return Err(format!(
                "preset token {:?} is not a ReferenceToken (1 to {MAX_PRESET_LEN} bytes, no control \
                 characters)",
                clean(token, 32)
            ));
        }
        let name = child(p, "Name").map(|n| clean(text(n), MAX_NAME_CHARS)).unwrap_or_default();
        presets.push(PtzPreset { token: token.to_owned(), name });
    }
    Ok(presets)
}

/// GetStatusResponse → position per mille and motion.
fn parse_status(response: Node) -> Result<PtzPosition, String> {
    let status = child(response, "PTZStatus").ok_or("GetStatusResponse has no PTZStatus")?;
    let mut position = PtzPosition::default();
    if let Some(pos) = child(status, "Position") {
        if let Some(pt) = child(pos, "PanTilt") {
            position.pan = pt.attribute("x").and_then(generic_to_per_mille);
            position.tilt = pt.attribute("y").and_then(generic_to_per_mille);
        }
        if let Some(z) = child(pos, "Zoom") {
            position.zoom = z.attribute("x").and_then(generic_to_per_mille);
        }
    }
    if let Some(moves) = child(status, "MoveStatus") {
        // ONVIF 2: PanTilt/Zoom children; some 1.x cameras put the state in the element itself.
        let states: Vec<&str> = match (child(moves, "PanTilt"), child(moves, "Zoom")) {
            (None, None) => vec![text(moves)],
            (pt, z) => [pt, z].into_iter().flatten().map(text).collect(),
        };
        position.moving = states.iter().any(|s| s.eq_ignore_ascii_case("MOVING"));
    }
    Ok(position)
}

/// GetProfilesResponse → token of the first profile with a PTZ configuration.
fn first_ptz_profile(response: Node) -> Option<String> {
    children(response, "Profiles")
        .find(|p| child(*p, "PTZConfiguration").is_some())
        .and_then(|p| p.attribute("token"))
        .map(|t| t.trim().to_owned())
        .filter(|t| !t.is_empty())
}

/// A coordinate of ONVIF's generic space (-1..1) per mille; None when the
/// camera reports something else (another space, NaN).
fn generic_to_per_mille(value: &str) -> Option<i16> {
    let v: f64 = value.trim().parse().ok()?;
    if !v.is_finite() || v.abs() > 1.0 + 1e-6 {
        return None;
    }
    Some((v * 1000.0).round().clamp(-1000.0, 1000.0) as i16)
}

/// Per mille → an xs:float of the generic space (`500` → `0.5`).
fn per_mille_to_generic(v: i16) -> String {
    let sign = if v < 0 { "-" } else { "" };
    let a = v.unsigned_abs();
    let frac = format!("{:03}", a % 1000);
    let frac = frac.trim_end_matches('0');
    if frac.is_empty() {
        format!("{sign}{}", a / 1000)
    } else {
        format!("{sign}{}.{frac}", a / 1000)
    }
}

/// A duration as xs:duration (`1.5 s` → `PT1.5S`), millisecond precision.
fn xs_duration(d: Duration) -> String {
    let ms = d.as_millis();
    let frac = format!("{:03}", ms % 1000);
    let frac = frac.trim_end_matches('0');
    if frac.is_empty() {
        format!("PT{}S", ms / 1000)
    } else {
        format!("PT{}.{frac}S", ms / 1000)
    }
}

/// A tt:ReferenceToken: 1..=64 characters, no control characters.
fn check_token(token: &str) -> Result<(), String> {
    if token.is_empty() || token.chars().count() > MAX_PRESET_LEN {
        return Err(format!("{token:?} must be 1 to {MAX_PRESET_LEN} characters"));
    }
    if token.chars().any(char::is_control) {
        return Err(format!("{token:?} holds control characters"));
    }
    Ok(())
}

/// XML-escapes text for element content and attribute values.
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

fn continuous_move_body(profile: &str, pan: i16, tilt: i16, zoom: i16, timeout: Option<Duration>) -> String {
    let timeout =
        timeout.map(|t| format!("<tptz:Timeout>{}</tptz:Timeout>", xs_duration(t))).unwrap_or_default();
    format!(
        "<tptz:ContinuousMove><tptz:ProfileToken>{}</tptz:ProfileToken><tptz:Velocity>\
         <tt:PanTilt x=\"{}\" y=\"{}\"/><tt:Zoom x=\"{}\"/></tptz:Velocity>{timeout}</tptz:ContinuousMove>",
        escape(profile),
        per_mille_to_generic(pan),
        per_mille_to_generic(tilt),
        per_mille_to_generic(zoom)
    )
}

/// The SOAP 1.2 envelope around an operation.
fn envelope(security: Option<&str>, body: &str) -> String {
    let header = security.map(|s| format!("<s:Header>{s}</s:Header>")).unwrap_or_default();
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><s:Envelope xmlns:s=\"{NS_ENV}\" xmlns:tptz=\"{NS_TPTZ}\" \
         xmlns:trt=\"{NS_TRT}\" xmlns:tt=\"{NS_TT}\">{header}<s:Body>{body}</s:Body></s:Envelope>"
    )
}

/// WS-Security UsernameToken with PasswordDigest = Base64(SHA1(nonce + created + password)).
fn security_header(user: &str, password: &str, nonce: &[u8], created: &str) -> String {
    let mut sha = Sha1::new();
    sha.update(nonce);
    sha.update(created.as_bytes());
    sha.update(password.as_bytes());
    let digest = B64.encode(sha.finalize());
    format!(
        "<wsse:Security s:mustUnderstand=\"1\" xmlns:wsse=\"{NS_WSSE}\" xmlns:wsu=\"{NS_WSU}\"><wsse:UsernameToken>\
         <wsse:Username>{}</wsse:Username><wsse:Password Type=\"{PASSWORD_DIGEST}\">{digest}</wsse:Password>\
         <wsse:Nonce EncodingType=\"{BASE64_BINARY}\">{}</wsse:Nonce><wsu:Created>{}</wsu:Created>\
         </wsse:UsernameToken></wsse:Security>",
        escape(user),
        B64.encode(nonce),
        escape(created)
    )
}

/// Current UTC time as xs:dateTime with milliseconds (`2026-11-25T15:22:33.123Z`).
fn created_now() -> String {
    let t = time::OffsetDateTime::now_utc();
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.millisecond()
    )
}

impl From<OnvifError> for DeviceError {
    fn from(e: OnvifError) -> Self {
        DeviceError { code: e.code(), message: e.to_string() }
    }
}

impl PtzDevice for OnvifPtz {
    fn execute<'a>(&'a self, op: &'a DeviceOp) -> DeviceFuture<'a, Output> {
        Box::pin(async move {
            Ok(match op {
                DeviceOp::Move { pan, tilt, zoom, timeout } => {
                    self.continuous_move(*pan, *tilt, *zoom, Some(*timeout)).await?;
                    Output::Nothing
                }
                DeviceOp::Stop => {
                    self.stop().await?;
                    Output::Nothing
                }
                DeviceOp::Goto(token) => {
                    self.goto_preset(token).await?;
                    Output::Nothing
                }
                DeviceOp::Presets => Output::Presets(self.presets().await?),
                DeviceOp::Status => Output::Position(self.status().await?),
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ponte_tests::onvif_camera::{require_onvif_camera, OnvifCamera, OnvifCameraOptions, RecordedOp};
    use std::time::Instant;

    fn endpoint() -> Endpoint {
        Endpoint::parse("http://10.1.2.3/onvif/ptz_service", "device.onvif.url").unwrap()
    }

    fn answer(status: u16, body: &str) -> HttpAnswer {
        HttpAnswer { status, www_authenticate: None, body: Bytes::from(body.to_owned()) }
    }

    fn run<T>(
        op: &'static str,
        status: u16,
        body: &str,
        extract: impl FnOnce(Node) -> Result<T, String>,
    ) -> Result<T, OnvifError> {
        interpret("dome-1", op, &endpoint(), &answer(status, body), extract)
    }

    const ENV12: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<SOAP-ENV:Envelope xmlns:SOAP-ENV="http://www.w3.org/2003/05/soap-envelope" xmlns:SOAP-ENC="http://www.w3.org/2003/05/soap-encoding" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xmlns:xsd="http://www.w3.org/2001/XMLSchema" xmlns:tt="http://www.onvif.org/ver10/schema" xmlns:tptz="http://www.onvif.org/ver20/ptz/wsdl" xmlns:trt="http://www.onvif.org/ver10/media/wsdl" xmlns:ter="http://www.onvif.org/ver10/error">
<SOAP-ENV:Header></SOAP-ENV:Header>
<SOAP-ENV:Body>BODY</SOAP-ENV:Body></SOAP-ENV:Envelope>"#;

    fn wrap(body: &str) -> String {
        ENV12.replace("BODY", body)
    }

    #[test]
    fn numbers_and_durations_in_onvif_form() {
        assert_eq!(per_mille_to_generic(500), "0.5");
        assert_eq!(per_mille_to_generic(-1000), "-1");
        assert_eq!(per_mille_to_generic(0), "0");
        assert_eq!(per_mille_to_generic(-7), "-0.007");
        assert_eq!(per_mille_to_generic(125), "0.125");
        assert_eq!(xs_duration(Duration::from_millis(1500)), "PT1.5S");
        assert_eq!(xs_duration(Duration::from_secs(2)), "PT2S");
        assert_eq!(xs_duration(Duration::from_millis(250)), "PT0.25S");
        assert_eq!(generic_to_per_mille("0.5"), Some(500));
        assert_eq!(generic_to_per_mille("-1"), Some(-1000));
        assert_eq!(generic_to_per_mille("1E-3"), Some(1));
        assert_eq!(generic_to_per_mille("178.5"), None, "degrees, not the generic space");
        assert_eq!(generic_to_per_mille("NaN"), None);
        assert_eq!(generic_to_per_mille("fast"), None);
    }

    #[test]
    fn digest_matches_ws_security_formula() {
        // Base64(SHA1(nonce + created + password)), computed independently with Python's hashlib.
        let nonce: Vec<u8> = (0u8..16).collect();
        let h = security_header("admin", "secret", &nonce, "2026-01-01T00:00:00.000Z");
        assert!(h.contains(">/PGfLJjPPKwfA6OflIdGffTARFw=</wsse:Password>"), "{h}");
        assert!(h.contains(">AAECAwQFBgcICQoLDA0ODw==</wsse:Nonce>"), "{h}");
        assert!(h.contains("<wsu:Created>2026-01-01T00:00:00.000Z</wsu:Created>"), "{h}");
        assert!(h.contains("<wsse:Username>admin</wsse:Username>"));
        let created = created_now();
        assert_eq!(created.len(), 24, "{created}");
        assert!(created.ends_with('Z') && created.as_bytes()[10] == b'T', "{created}");
    }

    #[test]
    fn interpolated_text_is_escaped() {
        let body = continuous_move_body("P<1>&\"'", 1, -2, 3, Some(Duration::from_secs(1)));
        assert!(
            body.contains("<tptz:ProfileToken>P&lt;1&gt;&amp;&quot;&apos;</tptz:ProfileToken>"),
            "{body}"
        );
        let doc = envelope(Some(&security_header("a<b", "p", b"n", "c")), &body);
        let parsed = roxmltree::Document::parse(&doc).expect("well-formed");
        let token = parsed.descendants().find(|n| n.tag_name().name() == "ProfileToken").unwrap();
        assert_eq!(token.text(), Some("P<1>&\"'"));
        let user = parsed.descendants().find(|n| n.tag_name().name() == "Username").unwrap();
        assert_eq!(user.text(), Some("a<b"));
    }

    #[test]
    fn reads_real_world_status_presets_and_profiles() {
        // Shaped like a Hikvision DS-2DE answer.
        let status = wrap(
            r#"<tptz:GetStatusResponse><tptz:PTZStatus><tt:Position>
<tt:PanTilt space="http://www.onvif.org/ver10/tptz/PanTiltSpaces/PositionGenericSpace" x="0.244444" y="-0.6"></tt:PanTilt>
<tt:Zoom space="http://www.onvif.org/ver10/tptz/ZoomSpaces/PositionGenericSpace" x="0.0500"></tt:Zoom></tt:Position>
<tt:MoveStatus><tt:PanTilt>IDLE</tt:PanTilt><tt:Zoom>MOVING</tt:Zoom></tt:MoveStatus>
<tt:UtcTime>2026-11-25T15:30:00Z</tt:UtcTime></tptz:PTZStatus></tptz:GetStatusResponse>"#,
        );
        let p = run("GetStatus", 200, &status, parse_status).unwrap();
        assert_eq!(p, PtzPosition { pan: Some(244), tilt: Some(-600), zoom: Some(50), moving: true });
        // ONVIF 1.x style: MoveStatus holds the state; no position.
        let old = wrap(
            "<tptz:GetStatusResponse><tptz:PTZStatus><tt:MoveStatus>IDLE</tt:MoveStatus>\
             <tt:UtcTime>2026-11-25T15:30:00Z</tt:UtcTime></tptz:PTZStatus></tptz:GetStatusResponse>",
        );
        assert_eq!(run("GetStatus", 200, &old, parse_status).unwrap(), PtzPosition::default());

        let presets = wrap(
            r#"<tptz:GetPresetsResponse><tptz:Preset token="1"><tt:Name>Ingresso</tt:Name><tt:PTZPosition>
<tt:PanTilt x="0.1" y="0.2"/><tt:Zoom x="0"/></tt:PTZPosition></tptz:Preset>
<tptz:Preset token="2"><tt:Name>Rotatoria &amp; via Po</tt:Name></tptz:Preset><tptz:Preset token="3"/>
<tptz:Preset><tt:Name>tokenless</tt:Name></tptz:Preset></tptz:GetPresetsResponse>"#,
        );
        let list = run("GetPresets", 200, &presets, parse_presets).unwrap();
        let got: Vec<(&str, &str)> = list.iter().map(|p| (p.token.as_str(), p.name.as_str())).collect();
        assert_eq!(got, [("1", "Ingresso"), ("2", "Rotatoria & via Po"), ("3", "")]);

        // The first profile (JPEG substream) has no PTZ configuration.
        let profiles = wrap(
            r#"<trt:GetProfilesResponse><trt:Profiles fixed="true" token="Profile_0"><tt:Name>jpeg</tt:Name></trt:Profiles>
<trt:Profiles fixed="true" token="Profile_1"><tt:Name>mainStream</tt:Name><tt:PTZConfiguration token="PTZToken">
<tt:Name>PTZ</tt:Name><tt:UseCount>2</tt:UseCount><tt:NodeToken>PTZNODETOKEN</tt:NodeToken></tt:PTZConfiguration></trt:Profiles>
</trt:GetProfilesResponse>"#,
        );
        assert_eq!(
            run("GetProfiles", 200, &profiles, |r| Ok(first_ptz_profile(r))).unwrap().as_deref(),
            Some("Profile_1")
        );
        let none = wrap(
            r#"<trt:GetProfilesResponse><trt:Profiles token="a"><tt:Name>x</tt:Name></trt:Profiles></trt:GetProfilesResponse>"#,
        );
        assert_eq!(run("GetProfiles", 200, &none, |r| Ok(first_ptz_profile(r))).unwrap(), None);
    }

    #[test]
    fn faults_are_named_with_code_and_reason() {
        let no_token = wrap(
            r#"<SOAP-ENV:Fault><SOAP-ENV:Code><SOAP-ENV:Value>SOAP-ENV:Sender</SOAP-ENV:Value><SOAP-ENV:Subcode>
<SOAP-ENV:Value>ter:InvalidArgVal</SOAP-ENV:Value><SOAP-ENV:Subcode><SOAP-ENV:Value>ter:NoToken</SOAP-ENV:Value>
</SOAP-ENV:Subcode></SOAP-ENV:Subcode></SOAP-ENV:Code><SOAP-ENV:Reason><SOAP-ENV:Text xml:lang="it">Preset inesistente</SOAP-ENV:Text>
<SOAP-ENV:Text xml:lang="en">The requested preset token does not exist.</SOAP-ENV:Text></SOAP-ENV:Reason></SOAP-ENV:Fault>"#,
        );
        let e = run("GotoPreset", 400, &no_token, |_| Ok(())).unwrap_err();
        assert_eq!(e.code(), PtzErrorCode::CameraError);
        let msg = e.to_string();
        assert!(msg.contains("camera `dome-1`") && msg.contains("GotoPreset"), "{msg}");
        assert!(msg.contains("Sender/InvalidArgVal/NoToken"), "{msg}");
        assert!(msg.contains("The requested preset token does not exist."), "{msg}");

        // NotAuthorized, with HTTP 400 (as many cameras) or 500.
        let not_auth = wrap(
            r#"<env:Fault xmlns:env="http://www.w3.org/2003/05/soap-envelope"><env:Code><env:Value>env:Sender</env:Value>
<env:Subcode><env:Value>ter:NotAuthorized</env:Value></env:Subcode></env:Code>
<env:Reason><env:Text xml:lang="en">Sender not Authorized</env:Text></env:Reason></env:Fault>"#,
        );
        for status in [400, 500] {
            let e = run("GetStatus", status, &not_auth, |_| Ok(())).unwrap_err();
            assert!(matches!(e, OnvifError::Auth { .. }), "{e:?}");
            assert!(e.to_string().contains("check `device.onvif` username/password"), "{e}");
        }
        // A bare 401, and one asking for HTTP digest.
        let e = run("Stop", 401, "", |_| Ok(())).unwrap_err();
        assert!(matches!(e, OnvifError::Auth { .. }) && e.to_string().contains("HTTP 401"), "{e}");
        let mut digest = answer(401, "<html>401</html>");
        digest.www_authenticate = Some("Digest realm=\"IP Camera\", nonce=\"x\"".into());
        let e = interpret("dome-1", "Stop", &endpoint(), &digest, |_| Ok(())).unwrap_err();
        assert!(e.to_string().contains("HTTP digest"), "{e}");

        // SOAP 1.1 fault from an older firmware.
        let soap11 = r#"<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body><s:Fault>
<faultcode>s:Client</faultcode><faultstring>Invalid profile</faultstring></s:Fault></s:Body></s:Envelope>"#;
        let e = run("GetPresets", 500, soap11, |_| Ok(())).unwrap_err();
        assert!(
            matches!(&e, OnvifError::Fault { code, reason, .. } if code == "Client" && reason == "Invalid profile"),
            "{e:?}"
        );
    }

    #[test]
    fn broken_answers_are_errors_not_panics() {
        let e = run("GetStatus", 404, "<html><body>Not Found</body></html>", |_| Ok(())).unwrap_err();
        assert!(matches!(e, OnvifError::Http { status: 404, .. }), "{e:?}");
        assert!(e.to_string().contains("device.onvif.url"), "{e}");
        for body in ["", "not xml", "<a/>", "\u{0}\u{1}", &wrap(""), &wrap("<tptz:StopResponse/>")] {
            let e = run("GetStatus", 200, body, parse_status).unwrap_err();
            assert!(matches!(e, OnvifError::Parse { .. }), "{body:?}: {e:?}");
        }
        let e = run("GetStatus", 200, &wrap("<tptz:GetStatusResponse/>"), parse_status).unwrap_err();
        assert!(e.to_string().contains("no PTZStatus"), "{e}");
        // No DTDs (entity expansion).
        let dtd = r#"<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "aaaa">]><x>&a;</x>"#;
        assert!(matches!(run("Stop", 200, dtd, |_| Ok(())), Err(OnvifError::Parse { .. })));
        let bytes =
            HttpAnswer { status: 200, www_authenticate: None, body: Bytes::from_static(&[0xff, 0xfe, 0x00]) };
        assert!(interpret("d", "Stop", &endpoint(), &bytes, |_| Ok(())).is_err());
    }

    #[test]
    fn hostile_answers_are_bounded_errors() {
        // Thousands of presets: an error naming the count, not a list of megabytes.
        let many: String = (0..3000)
            .map(|i| format!("<tptz:Preset token=\"{i}\"><tt:Name>p{i}</tt:Name></tptz:Preset>"))
            .collect();
        let body = wrap(&format!("<tptz:GetPresetsResponse>{many}</tptz:GetPresetsResponse>"));
        let e = run("GetPresets", 200, &body, parse_presets).unwrap_err();
        assert!(matches!(e, OnvifError::Parse { .. }), "{e:?}");
        assert!(e.to_string().contains("lists 3000 presets; ponte relays at most 512"), "{e}");
        assert_eq!(e.code(), PtzErrorCode::CameraError);
        // Exactly the limit is fine; names are cleaned and cut.
        let huge = format!("a\u{9b}31m\nb{}", "\"".repeat(200));
        let limit: String = (0..MAX_PRESETS)
            .map(|i| format!("<tptz:Preset token=\"{i}\"><tt:Name>{}</tt:Name></tptz:Preset>", escape(&huge)))
            .collect();
        let body = wrap(&format!("<tptz:GetPresetsResponse>{limit}</tptz:GetPresetsResponse>"));
        let list = run("GetPresets", 200, &body, parse_presets).unwrap();
        assert_eq!(list.len(), MAX_PRESETS);
        assert_eq!(list[0].name.chars().count(), MAX_NAME_CHARS + 1, "{:?}", list[0].name);
        assert!(list[0].name.starts_with("a 31m b\"\"") && list[0].name.ends_with('…'), "{:?}", list[0].name);
        let json = serde_json::to_vec(&list).unwrap();
        assert!(json.len() < 128 << 10, "{} bytes", json.len());
        // A token GotoPreset could not send back.
        for token in ["x".repeat(65), "a\u{85}b".to_owned()] {
            let body = wrap(&format!(
                "<tptz:GetPresetsResponse><tptz:Preset token=\"{}\"/></tptz:GetPresetsResponse>",
                escape(&token)
            ));
            let e = run("GetPresets", 200, &body, parse_presets).unwrap_err();
            assert!(e.to_string().contains("is not a ReferenceToken"), "{e}");
        }

        // A fault of a megabyte, with control characters and a URL.
        let reason = format!("see http://10.1.2.3/admin\u{9b}2J\r\nforged {}", "x".repeat(1 << 20));
        let fault = wrap(&format!(
            "<SOAP-ENV:Fault><SOAP-ENV:Code><SOAP-ENV:Value>SOAP-ENV:{}</SOAP-ENV:Value></SOAP-ENV:Code>\
             <SOAP-ENV:Reason><SOAP-ENV:Text xml:lang=\"en\">{}</SOAP-ENV:Text></SOAP-ENV:Reason></SOAP-ENV:Fault>",
            "R".repeat(10_000),
            escape(&reason)
        ));
        let e = run("GotoPreset", 400, &fault, |_| Ok(())).unwrap_err();
        let OnvifError::Fault { code, reason, .. } = &e else { panic!("{e:?}") };
        assert_eq!(code.chars().count(), MAX_CODE_CHARS + 1);
        assert_eq!(reason.chars().count(), MAX_FAULT_CHARS + 1);
        assert!(reason.starts_with("see http://10.1.2.3/admin 2J forged xxx"), "{reason}");
        assert!(!e.to_string().chars().any(char::is_control), "{e}");
        // Deeply nested subcodes.
        let mut code = "<SOAP-ENV:Value>s:Sender</SOAP-ENV:Value>".to_owned();
        for _ in 0..100 {
            code =
                format!("<SOAP-ENV:Value>ter:X</SOAP-ENV:Value><SOAP-ENV:Subcode>{code}</SOAP-ENV:Subcode>");
        }
        let deep = wrap(&format!("<SOAP-ENV:Fault><SOAP-ENV:Code>{code}</SOAP-ENV:Code></SOAP-ENV:Fault>"));
        let e = run("Stop", 500, &deep, |_| Ok(())).unwrap_err();
        let OnvifError::Fault { code, .. } = &e else { panic!("{e:?}") };
        assert_eq!(code.split('/').count(), MAX_CODE_LEVELS + 1, "{code}");
        // An unexpected element with a huge name; a huge non-XML error page.
        let odd = wrap(&format!("<{0}/>", "Z".repeat(100_000)));
        let e = run("Stop", 200, &odd, |_| Ok(())).unwrap_err();
        assert!(e.to_string().len() < 1024, "{e}");
        let page = format!("<html>\u{1b}]0;pwned\u{7}{}</html>", "y".repeat(1 << 20));
        let e = run("Stop", 503, &page, |_| Ok(())).unwrap_err();
        assert!(e.to_string().len() < 1024 && !e.to_string().chars().any(char::is_control), "{e}");
    }

    #[test]
    fn cleaning_keeps_words_and_cuts_on_characters() {
        assert_eq!(clean("  a\n\tb  ", 10), "a b");
        assert_eq!(clean("abcdef", 3), "abc…");
        assert_eq!(clean("ab cdef", 3), "ab…");
        assert_eq!(clean("àèìòù", 2), "àè…");
        assert_eq!(clean("abc", 3), "abc");
        assert_eq!(clean("\u{1b}\u{9b}\u{0}", 10), "");
    }

    #[test]
    fn settings_are_checked() {
        let settings = |url: &str| OnvifSettings { url: url.into(), ..OnvifSettings::default() };
        let e = OnvifPtz::new("d", &settings("https://10.0.0.1/onvif/ptz_service"), None, None).unwrap_err();
        assert!(e.to_string().contains("only http://"), "{e}");
        assert_eq!(e.code(), PtzErrorCode::Unsupported);
        assert!(OnvifPtz::new("d", &settings("10.0.0.1"), None, None).is_err());
        let c = OnvifPtz::new("d", &settings("http://[fd00::5]:8080/onvif/PTZ?x=1"), Some("u"), Some("p"))
            .unwrap();
        assert_eq!(c.inner.ptz.host, "fd00::5");
        assert_eq!(c.inner.ptz.authority, "[fd00::5]:8080");
        assert_eq!(c.inner.ptz.path, "/onvif/PTZ?x=1");
        assert_eq!(c.inner.media.url, "http://[fd00::5]:8080/onvif/media_service");
        assert_eq!(c.inner.credentials, Some(("u".into(), "p".into())));
        let own = OnvifSettings {
            username: Some("ptz".into()),
            password: Some(Secret("ptzpw".into())),
            timeout_ms: Some(0),
            ..settings("http://cam/onvif/ptz_service")
        };
        assert!(OnvifPtz::new("d", &own, Some("u"), Some("p"))
            .unwrap_err()
            .to_string()
            .contains("timeout_ms"));
        let own = OnvifSettings { timeout_ms: Some(500), ..own };
        let c = OnvifPtz::new("d", &own, Some("u"), Some("p")).unwrap();
        assert_eq!(c.inner.credentials, Some(("ptz".into(), "ptzpw".into())));
        assert_eq!(c.inner.timeout, Duration::from_millis(500));
        assert!(!format!("{c:?}").contains("ptzpw"));
        let parsed: OnvifSettings =
            toml_from("url = \"http://cam/onvif/ptz_service\"\nprofile = \"Profile_1\"\ntimeout_ms = 1500\n");
        assert_eq!(parsed.profile.as_deref(), Some("Profile_1"));
    }

    fn toml_from(text: &str) -> OnvifSettings {
        config::Config::builder()
            .add_source(config::File::from_str(text, config::FileFormat::Toml))
            .build()
            .unwrap()
            .try_deserialize()
            .unwrap()
    }

    // --- against the schema-checked test camera (tests/onvif_camera.py) -----

    fn client(camera: &OnvifCamera, user: &str, password: &str) -> OnvifPtz {
        let settings = OnvifSettings {
            url: camera.ptz_url(),
            username: Some(user.into()),
            password: Some(Secret(password.into())),
            ..OnvifSettings::default()
        };
        OnvifPtz::new("dome-test", &settings, None, None).unwrap()
    }

    fn assert_all_valid(ops: &[RecordedOp]) {
        for op in ops {
            assert!(op.valid && op.authorized && op.errors.is_empty(), "camera rejected {op:#?}");
        }
    }

    #[tokio::test]
    async fn every_operation_is_valid_onvif() {
        if !require_onvif_camera() {
            return;
        }
        let camera = OnvifCamera::start("admin", "secret").await.unwrap();
        let ptz = client(&camera, "admin", "secret");
        ptz.continuous_move(500, -250, 100, Some(Duration::from_millis(1500))).await.unwrap();
        let moving = ptz.status().await.unwrap();
        assert!(moving.moving, "{moving:?}");
        // The camera integrates velocity over time: let it move a visible amount.
        tokio::time::sleep(Duration::from_millis(200)).await;
        ptz.stop().await.unwrap();
        let stopped = ptz.status().await.unwrap();
        assert!(!stopped.moving, "{stopped:?}");
        assert!(
            stopped.pan.unwrap() >= 50 && stopped.tilt.unwrap() <= -25,
            "moved right and down: {stopped:?}"
        );
        let presets = ptz.presets().await.unwrap();
        let got: Vec<(&str, &str)> = presets.iter().map(|p| (p.token.as_str(), p.name.as_str())).collect();
        assert_eq!(got, [("1", "Ingresso"), ("2", "Rotatoria")]);
        ptz.goto_preset("2").await.unwrap();
        // The camera's preset 2 sits at (-0.4, 0.25, 0.1).
        let at = ptz.status().await.unwrap();
        assert_eq!((at.pan, at.tilt, at.zoom, at.moving), (Some(-400), Some(250), Some(100), false));
        ptz.continuous_move(0, 0, -1000, None).await.unwrap();

        let ops = camera.recorded().await.unwrap();
        assert_all_valid(&ops);
        let names: Vec<&str> = ops.iter().filter_map(|o| o.op.as_deref()).collect();
        assert_eq!(
            names,
            [
                "GetProfiles",
                "ContinuousMove",
                "GetStatus",
                "Stop",
                "GetStatus",
                "GetPresets",
                "GotoPreset",
                "GetStatus",
                "ContinuousMove"
            ],
            "one GetProfiles, then the profile is cached"
        );
        assert!(ops.iter().skip(1).all(|o| o.profile.as_deref() == Some("Profile_1")), "{ops:#?}");
        let first = &ops[1];
        assert_eq!((first.pan, first.tilt, first.zoom), (Some(0.5), Some(-0.25), Some(0.1)));
        assert_eq!(first.timeout.as_deref(), Some("PT1.5S"));
        let last = &ops[8];
        assert_eq!(
            (last.pan, last.tilt, last.zoom, last.timeout.as_deref()),
            (Some(0.0), Some(0.0), Some(-1.0), None)
        );
        assert_eq!(ops[6].preset.as_deref(), Some("2"));
    }

    #[tokio::test]
    async fn wrong_password_is_a_clear_auth_error() {
        if !require_onvif_camera() {
            return;
        }
        for auth_status in [400, 401] {
            let camera = OnvifCamera::start_with(OnvifCameraOptions {
                credentials: Some(("admin".into(), "secret".into())),
                auth_status,
                ..OnvifCameraOptions::default()
            })
            .await
            .unwrap();
            let settings = OnvifSettings {
                url: camera.ptz_url(),
                profile: Some("Profile_1".into()),
                ..OnvifSettings::default()
            };
            // The RTSP credentials are the fallback; here they are wrong.
            let ptz = OnvifPtz::new("dome-test", &settings, Some("admin"), Some("wrong")).unwrap();
            let e = ptz.status().await.unwrap_err();
            assert!(matches!(e, OnvifError::Auth { .. }), "{e:?}");
            assert_eq!(e.code(), PtzErrorCode::CameraError);
            let msg = e.to_string();
            assert!(
                msg.contains("dome-test") && msg.contains("check `device.onvif` username/password"),
                "{msg}"
            );
            assert!(msg.contains("NotAuthorized"), "{msg}");
            let ops = camera.recorded().await.unwrap();
            assert_eq!(ops.len(), 1);
            assert!(ops[0].valid && !ops[0].authorized, "{ops:#?}");
        }
    }

    #[tokio::test]
    async fn unknown_preset_reports_the_camera_fault() {
        if !require_onvif_camera() {
            return;
        }
        let camera = OnvifCamera::start("admin", "secret").await.unwrap();
        let ptz = client(&camera, "admin", "secret");
        let e = ptz.goto_preset("99").await.unwrap_err();
        assert_eq!(e.code(), PtzErrorCode::CameraError);
        let msg = e.to_string();
        assert!(msg.contains("GotoPreset") && msg.contains("NoToken"), "{msg}");
        assert!(msg.contains("The requested preset token '99' does not exist"), "{msg}");
        // XML specials in a token reach the camera intact (escaped on the wire).
        let odd = "a<&\"'>b";
        let e = ptz.goto_preset(odd).await.unwrap_err();
        assert!(e.to_string().contains("NoToken"), "{e}");
        let e = ptz.goto_preset("").await.unwrap_err();
        assert_eq!(e.code(), PtzErrorCode::Invalid);
        let ops = camera.recorded().await.unwrap();
        assert_all_valid(&ops);
        let presets: Vec<Option<&str>> = ops.iter().map(|o| o.preset.as_deref()).collect();
        assert_eq!(presets, [None, Some("99"), Some(odd)], "{ops:#?}");
    }

    #[tokio::test]
    async fn silent_camera_times_out_on_time() {
        // Accepts connections (the kernel's backlog) and never answers.
        let hole = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let settings = OnvifSettings {
            url: format!("http://{}/onvif/ptz_service", hole.local_addr().unwrap()),
            profile: Some("Profile_1".into()),
            timeout_ms: Some(300),
            ..OnvifSettings::default()
        };
        let ptz = OnvifPtz::new("dome-test", &settings, Some("admin"), Some("secret")).unwrap();
        let started = Instant::now();
        let e = ptz.stop().await.unwrap_err();
        let took = started.elapsed();
        assert!(matches!(e, OnvifError::Timeout { .. }), "{e:?}");
        assert_eq!(e.code(), PtzErrorCode::Timeout);
        assert!(took >= Duration::from_millis(300) && took < Duration::from_millis(1300), "{took:?}");
        assert!(e.to_string().contains("no answer within 300 ms"), "{e}");

        // A closed port: unreachable at once.
        let port = hole.local_addr().unwrap().port();
        drop(hole);
        let settings =
            OnvifSettings { url: format!("http://127.0.0.1:{port}/onvif/ptz_service"), ..settings };
        let ptz = OnvifPtz::new("dome-test", &settings, None, None).unwrap();
        let e = ptz.status().await.unwrap_err();
        assert!(matches!(e, OnvifError::Unreachable { .. }), "{e:?}");
        assert!(e.to_string().contains("check `device.onvif.url`"), "{e}");
    }

    #[tokio::test]
    async fn camera_without_ptz_profile_says_which_setting() {
        // GetProfiles answers with no PTZ profile: served by a one-shot raw HTTP responder.
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = vec![0u8; 65536];
            let mut got = Vec::new();
            while !String::from_utf8_lossy(&got).contains("</s:Envelope>") {
                let n = s.read(&mut buf).await.unwrap();
                if n == 0 {
                    break;
                }
                got.extend_from_slice(&buf[..n]);
            }
            let body = wrap(
                r#"<trt:GetProfilesResponse><trt:Profiles token="p"><tt:Name>x</tt:Name></trt:Profiles></trt:GetProfilesResponse>"#,
            );
            let reply = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/soap+xml\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{body}\r\n0\r\n\r\n",
                body.len()
            );
            s.write_all(reply.as_bytes()).await.unwrap();
            String::from_utf8_lossy(&got).into_owned()
        });
        let settings =
            OnvifSettings { url: format!("http://{addr}/onvif/ptz_service"), ..OnvifSettings::default() };
        let ptz = OnvifPtz::new("dome-test", &settings, None, None).unwrap();
        let e = ptz.status().await.unwrap_err();
        assert!(matches!(e, OnvifError::NoPtzProfile { .. }), "{e:?}");
        assert!(e.to_string().contains("set `device.onvif.profile`"), "{e}");
        let request = server.await.unwrap();
        assert!(request.starts_with("POST /onvif/media_service HTTP/1.1\r\n"), "{request}");
        assert!(request.to_ascii_lowercase().contains(
            "content-type: application/soap+xml; charset=utf-8; action=\"http://www.onvif.org/ver10/media/wsdl/getprofiles\""
        ), "{request}");
        assert!(!request.contains("<s:Header>"), "no credentials, no WS-Security header: {request}");
    }
}
