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
//! bounded here ([`soap::MAX_PRESETS`] presets, names of
//! [`soap::MAX_NAME_CHARS`] characters, fault text of [`soap::MAX_FAULT_CHARS`]) and stripped of control
//! characters, and an answer beyond those bounds is an error of that one
//! command. Unbounded, a 1 MiB answer made a `PtzResult` over the
//! control-message limit and the relay closed the whole site link (issue 15).

pub(crate) mod soap;

use crate::ptz::device::{DeviceError, DeviceFuture, DeviceOp, Output, PtzDevice};
pub use crate::sources::device::OnvifSettings;
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::header::{CONTENT_TYPE, HOST, USER_AGENT, WWW_AUTHENTICATE};
use ponte_proto::ptz::{PtzErrorCode, PtzPosition, PtzPreset, VELOCITY_MAX};
use roxmltree::Node;
use soap::{
    check_token, clean, continuous_move_body, created_now, envelope, escape, excerpt, first_ptz_profile,
    parse_fault, parse_presets, parse_status, security_header, soap_body, NS_TPTZ, NS_TRT,
};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Timeout of one exchange when `timeout_ms` is not set.
pub(crate) const DEFAULT_TIMEOUT: Duration = Duration::from_millis(2000);
/// Accepted range of `device.onvif.timeout_ms`.
pub(crate) const TIMEOUT_MS: std::ops::RangeInclusive<u64> = 100..=60_000;

/// `device.onvif.timeout_ms` as a duration ([`DEFAULT_TIMEOUT`] when
/// unset), or why it is out of range.
pub(crate) fn request_timeout(timeout_ms: Option<u64>) -> Result<Duration, String> {
    match timeout_ms {
        None => Ok(DEFAULT_TIMEOUT),
        Some(ms) if TIMEOUT_MS.contains(&ms) => Ok(Duration::from_millis(ms)),
        Some(ms) => Err(format!(
            "`device.onvif.timeout_ms` = {ms}: expected {} to {} milliseconds",
            TIMEOUT_MS.start(),
            TIMEOUT_MS.end()
        )),
    }
}
/// Largest answer read from a camera.
const MAX_RESPONSE: usize = 1 << 20;
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
pub(crate) struct Endpoint {
    /// As configured (for messages).
    pub(crate) url: String,
    /// The config key that names it.
    pub(crate) setting: &'static str,
    /// Host to connect to (IPv6 without brackets).
    pub(crate) host: String,
    pub(crate) port: u16,
    /// `Host` header.
    pub(crate) authority: String,
    /// Path and query.
    pub(crate) path: String,
}

impl Endpoint {
    pub(crate) fn parse(raw: &str, setting: &'static str) -> Result<Endpoint, String> {
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
        let timeout = request_timeout(settings.timeout_ms).map_err(config)?;
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
pub(crate) struct HttpAnswer {
    status: u16,
    www_authenticate: Option<String>,
    body: Bytes,
}

/// POSTs `envelope` to `endpoint` on a fresh HTTP/1.1 connection.
pub(crate) async fn exchange(
    endpoint: &Endpoint,
    action: &str,
    envelope: String,
) -> Result<HttpAnswer, String> {
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

/// Turns an HTTP answer into the operation's result.
pub(crate) fn interpret<T>(
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
mod tests;
