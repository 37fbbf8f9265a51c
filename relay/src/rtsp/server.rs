//! The RTSP server: TCP listener, one task per client connection, request
//! handling, the session table, and the UDP port pair for RTP/AVP unicast.
//!
//! URLs: `rtsp://relay:8554/<camera>` (main stream) and
//! `rtsp://relay:8554/<camera>/sub`; the track is `<that URL>/trackID=0`.
//! Streams come from [`CameraSource::subscribe`], the same on-demand
//! upstream subscription WHEP uses, so a camera crosses the link once
//! whatever the number of RTSP and WHEP viewers.

use super::admission::{self, Admission, Slot};
use super::auth::{Asked, Outcome, RtspAuth};
use super::framing::{Framer, Inbound, Refusal};
use super::sdp;
use super::session::{self, Counters, Numbering, PumpSpec, Session, SessionInfo, Sink};
use crate::audit::{RelayAudit, Viewing};
use crate::auth::{ScopeRefusal, Viewer};
use crate::upstream::SubscribeFailure;
use crate::whep::CameraSource;
use bytes::Bytes;
use ponte_proto::hub::{HubItem, TrackReader};
use ponte_proto::media::Quality;
use ponte_proto::wire::{CatalogEntry, SubscribeErrorCode};
use rtsp_types::headers::{self, RtpLowerTransport, RtpProfile, Transport, TransportMode, Transports};
use rtsp_types::{Method, Request, StatusCode, Url};
use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::{mpsc, Notify};
use tracing::{debug, info, warn};

/// Methods this server implements, for `Public` and `Allow`.
const PUBLIC: &str = "OPTIONS, DESCRIBE, SETUP, PLAY, PAUSE, TEARDOWN, GET_PARAMETER, SET_PARAMETER";
/// Outbound chunks (responses, or one access unit of RTP) queued per
/// connection; beyond this the session pumps wait, and their hub queues
/// absorb (then skip) what the client cannot take.
const OUT_QUEUE: usize = 16;
/// Sessions one connection may hold.
const MAX_SESSIONS_PER_CONNECTION: usize = 8;

/// Tunables of the RTSP server.
#[derive(Debug, Clone)]
pub struct RtspSettings {
    /// TCP address of the RTSP listener.
    pub listen: SocketAddr,
    /// Offer RTP/AVP over UDP as well as interleaved TCP.
    pub udp: bool,
    /// Even UDP port for RTP (RTCP on the next one); `None` picks a free pair.
    pub udp_port: Option<u16>,
    /// A session not heard from for this long is ended.
    pub session_timeout: Duration,
    /// How long DESCRIBE/SETUP wait for the camera's first frame.
    pub first_frame_timeout: Duration,
    /// A connection whose client reads nothing for this long is dropped.
    pub write_stall: Duration,
    /// Most concurrent client connections.
    pub max_connections: usize,
    /// Most concurrent client connections from one address.
    pub max_connections_per_client: usize,
    /// A connection that has not logged in (or, on a relay without
    /// accounts, asked for a stream) this long after it opened is closed.
    pub auth_deadline: Duration,
    /// Most concurrent sessions.
    pub max_sessions: usize,
    /// Largest RTP packet, header included.
    pub mtu: usize,
}

impl Default for RtspSettings {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([0, 0, 0, 0], 8554)),
            udp: true,
            udp_port: None,
            session_timeout: Duration::from_secs(60),
            first_frame_timeout: Duration::from_secs(10),
            write_stall: Duration::from_secs(10),
            max_connections: 256,
            max_connections_per_client: 16,
            auth_deadline: Duration::from_secs(10),
            max_sessions: 256,
            mtu: ponte_proto::rtp::DEFAULT_MTU,
        }
    }
}

/// The server's UDP sockets: RTP on an even port, RTCP on the next.
struct UdpPair {
    rtp: Arc<UdpSocket>,
    rtcp: Arc<UdpSocket>,
    ports: (u16, u16),
}

impl UdpPair {
    async fn bind(ip: IpAddr, port: Option<u16>) -> std::io::Result<Self> {
        if let Some(p) = port {
            let rtp = UdpSocket::bind((ip, p)).await?;
            let rtcp = UdpSocket::bind((ip, p.wrapping_add(1))).await?;
            return Ok(Self { rtp: Arc::new(rtp), rtcp: Arc::new(rtcp), ports: (p, p.wrapping_add(1)) });
        }
        let mut last = None;
        for _ in 0..64 {
            let rtp = UdpSocket::bind((ip, 0)).await?;
            let p = rtp.local_addr()?.port();
            if !p.is_multiple_of(2) || p == u16::MAX {
                continue;
            }
            match UdpSocket::bind((ip, p + 1)).await {
                Ok(rtcp) => return Ok(Self { rtp: Arc::new(rtp), rtcp: Arc::new(rtcp), ports: (p, p + 1) }),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| std::io::Error::other("no free even/odd UDP port pair")))
    }
}

/// A response being built.
struct Reply {
    status: StatusCode,
    headers: Vec<(&'static str, String)>,
    body: Vec<u8>,
}

impl Reply {
    fn new(status: StatusCode) -> Self {
        Self { status, headers: Vec::new(), body: Vec::new() }
    }

    fn ok() -> Self {
        Self::new(StatusCode::Ok)
    }

    fn header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    fn body(mut self, content_type: &'static str, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self.header("Content-Type", content_type)
    }

    fn encode(&self, cseq: Option<&str>) -> Bytes {
        let code = u16::from(self.status);
        let mut s = format!("RTSP/1.0 {code} {}\r\n", reason_phrase(self.status));
        if let Some(cseq) = cseq {
            let _ = write!(s, "CSeq: {cseq}\r\n");
        }
        let _ = write!(s, "Server: ponte-relay/{}\r\n", env!("CARGO_PKG_VERSION"));
        for (name, value) in &self.headers {
            let _ = write!(s, "{name}: {value}\r\n");
        }
        if !self.body.is_empty() {
            let _ = write!(s, "Content-Length: {}\r\n", self.body.len());
        }
        s.push_str("\r\n");
        let mut out = s.into_bytes();
        out.extend_from_slice(&self.body);
        Bytes::from(out)
    }
}

fn reason_phrase(status: StatusCode) -> &'static str {
    match u16::from(status) {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        413 => "Request Entity Too Large",
        451 => "Parameter Not Understood",
        453 => "Not Enough Bandwidth",
        454 => "Session Not Found",
        455 => "Method Not Valid in This State",
        459 => "Aggregate Operation Not Allowed",
        461 => "Unsupported Transport",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        505 => "RTSP Version Not Supported",
        _ => "Error",
    }
}

/// What a URL names: a camera at a quality.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Target {
    camera: String,
    quality: Quality,
    /// Path of the stream without the track part, e.g. `/cam/sub`.
    path: String,
}

impl Target {
    /// `/<camera>`, `/<camera>/main`, `/<camera>/sub`, each optionally
    /// followed by `/trackID=0`.
    fn parse(url: &Url) -> Option<Self> {
        let mut segments: Vec<&str> = url.path_segments()?.filter(|s| !s.is_empty()).collect();
        if segments.last().is_some_and(|s| *s == sdp::TRACK_CONTROL) {
            segments.pop();
        }
        let (camera, quality) = match segments.as_slice() {
            [camera] => (*camera, Quality::Main),
            [camera, q] => (*camera, q.parse().ok()?),
            _ => return None,
        };
        Some(Self { camera: camera.to_owned(), quality, path: format!("/{}", segments.join("/")) })
    }

    /// The URL a client resolves the track's control URL against.
    fn base_url(&self, url: &Url) -> String {
        let mut base = url.clone();
        base.set_query(None);
        base.set_fragment(None);
        base.set_path(&format!("{}/", self.path));
        base.to_string()
    }
}

/// The transport a client asked for and we accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Choice {
    Interleaved(u8, u8),
    Udp(u16, u16),
}

/// One client connection, as its requests see it.
struct Conn {
    id: u64,
    peer: SocketAddr,
    local: SocketAddr,
    out: mpsc::Sender<Bytes>,
    next_channel: u8,
    /// Viewer whose login was recorded on this connection.
    logged_in: Option<String>,
    /// Some request of this connection passed authentication (the
    /// anonymous viewer's included): the login deadline no longer applies.
    authenticated: bool,
}

/// The RTSP egress of a relay.
pub struct RtspServer {
    settings: RtspSettings,
    source: Arc<dyn CameraSource>,
    auth: Arc<RtspAuth>,
    audit: Arc<RelayAudit>,
    listener: Mutex<Option<TcpListener>>,
    local_addr: SocketAddr,
    udp: Option<UdpPair>,
    sessions: Mutex<HashMap<String, Session>>,
    /// Per connection: told to close when access to a stream of it is revoked.
    closers: Mutex<HashMap<u64, Arc<Notify>>>,
    admission: Arc<Admission>,
    /// Connections refused by a limit, for a log that does not flood.
    refused: AtomicU64,
    next_conn: AtomicU64,
    me: Weak<RtspServer>,
}

impl RtspServer {
    /// Binds the TCP listener (and the UDP pair when enabled).
    pub async fn bind(
        settings: RtspSettings,
        source: Arc<dyn CameraSource>,
        auth: Arc<RtspAuth>,
        audit: Arc<RelayAudit>,
    ) -> std::io::Result<Arc<Self>> {
        let listener = TcpListener::bind(settings.listen).await?;
        let local_addr = listener.local_addr()?;
        let udp =
            if settings.udp { Some(UdpPair::bind(local_addr.ip(), settings.udp_port).await?) } else { None };
        Ok(Arc::new_cyclic(|me| Self {
            admission: Admission::new(settings.max_connections, settings.max_connections_per_client),
            refused: AtomicU64::new(0),
            settings,
            source,
            auth,
            audit,
            listener: Mutex::new(Some(listener)),
            local_addr,
            udp,
            sessions: Mutex::new(HashMap::new()),
            closers: Mutex::new(HashMap::new()),
            next_conn: AtomicU64::new(1),
            me: me.clone(),
        }))
    }

    /// Address the listener is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Server RTP and RTCP ports, when UDP is offered.
    pub fn udp_ports(&self) -> Option<(u16, u16)> {
        self.udp.as_ref().map(|u| u.ports)
    }

    /// The same as an admin reads it in a log line: `40000-40001`, or
    /// `off` when the server offers TCP only.
    pub fn udp_ports_text(&self) -> String {
        self.udp_ports().map_or_else(|| "off".to_owned(), |(rtp, rtcp)| format!("{rtp}-{rtcp}"))
    }

    /// Current sessions, for status.
    pub fn sessions(&self) -> Vec<SessionInfo> {
        let mut out: Vec<SessionInfo> = self.lock().values().map(Session::info).collect();
        out.sort_by(|a, b| (&a.camera, a.peer).cmp(&(&b.camera, b.peer)));
        out
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Session>> {
        self.sessions.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Serves clients for ever.
    pub async fn serve(self: Arc<Self>) {
        let Some(listener) = self.listener.lock().unwrap_or_else(|e| e.into_inner()).take() else { return };
        tokio::spawn(self.clone().reap());
        tokio::spawn(self.clone().watch_access());
        if let Some(udp) = &self.udp {
            tokio::spawn(self.clone().udp_liveness(udp.rtp.clone()));
            tokio::spawn(self.clone().udp_liveness(udp.rtcp.clone()));
        }
        loop {
            let (stream, peer) = match listener.accept().await {
                Ok(x) => x,
                Err(e) => {
                    // Out of descriptors and the like: wait, do not spin.
                    warn!(error = %e, "RTSP accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let slot = match self.admission.admit(peer.ip()) {
                Ok(slot) => slot,
                Err(full) => {
                    // Closed at once: an attacker's sockets never reach a task.
                    drop(stream);
                    let n = self.refused.fetch_add(1, Ordering::Relaxed) + 1;
                    let (total, per_client) =
                        (self.settings.max_connections, self.settings.max_connections_per_client);
                    if n.is_power_of_two() || n.is_multiple_of(1000) {
                        warn!(%peer, limit = admission::key(full), max_connections = total, max_connections_per_client = per_client, refused_so_far = n, "RTSP connection refused: `{}` reached", admission::key(full));
                    } else {
                        debug!(%peer, limit = admission::key(full), "RTSP connection refused");
                    }
                    continue;
                }
            };
            tokio::spawn(self.clone().connection(stream, peer, slot));
        }
    }

    /// Ends sessions whose client has gone quiet.
    async fn reap(self: Arc<Self>) {
        let every =
            (self.settings.session_timeout / 4).clamp(Duration::from_millis(100), Duration::from_secs(5));
        loop {
            tokio::time::sleep(every).await;
            let timeout = self.settings.session_timeout;
            let expired: Vec<Session> = {
                let mut sessions = self.lock();
                let ids: Vec<String> = sessions
                    .iter()
                    .filter(|(_, s)| s.last_seen.elapsed() > timeout)
                    .map(|(id, _)| id.clone())
                    .collect();
                ids.iter().filter_map(|id| sessions.remove(id)).collect()
            };
            for s in expired {
                info!(camera = %s.camera, peer = %s.peer, viewer = s.viewer.name(), "RTSP session timed out after {timeout:?} without keep-alive");
                s.end("session timed out (no keep-alive)");
            }
        }
    }

    /// Ends the sessions whose viewer may no longer watch them when the
    /// relay's accounts are reloaded or a browser logs out.
    async fn watch_access(self: Arc<Self>) {
        let mut changes = self.auth.accounts().changes();
        while changes.changed().await.is_ok() {
            self.recheck_access();
        }
    }

    /// Ends every session whose viewer may no longer watch its camera, and
    /// closes the connection it came on; returns how many ended.
    pub fn recheck_access(&self) -> usize {
        let catalog = self.source.catalog();
        let (revoked, close) = {
            let mut sessions = self.lock();
            let revoked = self.auth.accounts().sweep(&catalog, &mut sessions);
            // A connection is closed when nothing it may still watch is left
            // on it; other sessions on it go on.
            let mut close: Vec<u64> = revoked.iter().map(|(_, s, _)| s.conn).collect();
            close.sort_unstable();
            close.dedup();
            close.retain(|conn| !sessions.values().any(|s| s.conn == *conn));
            (revoked, close)
        };
        let n = revoked.len();
        for (_, s, why) in revoked {
            info!(camera = %s.camera, peer = %s.peer, viewer = s.viewer.name(), %why, "RTSP: access revoked");
            s.end("access revoked (account removed or narrowed)");
        }
        let closers = self.closers.lock().unwrap_or_else(|e| e.into_inner());
        for conn in close {
            if let Some(closer) = closers.get(&conn) {
                debug!(connection = conn, "RTSP: closing a connection left with nothing it may watch");
                closer.notify_one();
            }
        }
        n
    }

    /// Receiver reports (and NAT openers) on the server's UDP ports keep
    /// UDP sessions alive.
    async fn udp_liveness(self: Arc<Self>, socket: Arc<UdpSocket>) {
        let mut buf = vec![0u8; 2048];
        loop {
            match socket.recv_from(&mut buf).await {
                Ok((_, from)) => {
                    let now = Instant::now();
                    for s in self.lock().values_mut().filter(|s| s.sink.is_client_udp(from)) {
                        s.last_seen = now;
                    }
                }
                // ICMP errors of earlier sends surface here on some systems.
                Err(e) => debug!(error = %e, "RTSP UDP receive"),
            }
        }
    }

    async fn connection(self: Arc<Self>, stream: TcpStream, peer: SocketAddr, _slot: Slot) {
        let id = self.next_conn.fetch_add(1, Ordering::Relaxed);
        let local = stream.local_addr().unwrap_or(self.local_addr);
        let _ = stream.set_nodelay(true);
        let (mut rd, wr) = stream.into_split();
        let (out, out_rx) = mpsc::channel::<Bytes>(OUT_QUEUE);
        let mut writer = tokio::spawn(write_loop(wr, out_rx, self.settings.write_stall));
        let mut conn = Conn { id, peer, local, out, next_channel: 0, logged_in: None, authenticated: false };
        let closer = Arc::new(Notify::new());
        self.closers.lock().unwrap_or_else(|e| e.into_inner()).insert(id, closer.clone());
        debug!(%peer, connection = id, "RTSP client connected");
        let mut framer = Framer::new();
        let mut buf = vec![0u8; 16 * 1024];
        let mut writer_done = false;
        let (idle, login) = (self.settings.session_timeout, self.settings.auth_deadline);
        let login_by = Instant::now() + login;
        // Requests and interleaved frames count as activity; bare line ends
        // (a keep-alive any socket can send) do not.
        let mut active_at = Instant::now();
        let why: String = 'conn: loop {
            let now = Instant::now();
            let wait = if conn.authenticated {
                (active_at + idle).saturating_duration_since(now)
            } else if now < login_by {
                login_by - now
            } else {
                break format!("not logged in within {login:?} of connecting");
            };
            let read = tokio::select! {
                r = tokio::time::timeout(wait, rd.read(&mut buf)) => r,
                w = &mut writer => {
                    writer_done = true;
                    break match w {
                        Ok(Err(e)) => e,
                        _ => "writer ended".into(),
                    };
                }
                _ = closer.notified() => break "access revoked".into(),
            };
            let n = match read {
                Err(_) if !conn.authenticated => {
                    break format!("not logged in within {login:?} of connecting")
                }
                // A UDP client may keep its sessions alive with RTCP alone.
                Err(_) if self.lock().values().any(|s| s.conn == id) => {
                    active_at = Instant::now();
                    continue;
                }
                Err(_) => break format!("idle for {idle:?}"),
                Ok(Ok(0)) => break "closed by the client".into(),
                Ok(Err(e)) => break format!("read failed: {e}"),
                Ok(Ok(n)) => n,
            };
            self.touch_connection(id);
            // A read returns at most `buf.len()` bytes.
            framer.push(buf.get(..n).unwrap_or_default());
            while let Some(inbound) = framer.poll() {
                active_at = Instant::now();
                let (reply, fatal) = match inbound {
                    Inbound::Interleaved { channel, len } => {
                        tracing::trace!(%peer, channel, len, "interleaved frame from the client (RTCP)");
                        continue;
                    }
                    Inbound::Request(req) => (self.handle(&mut conn, *req).await, false),
                    Inbound::Refused(Refusal { status, cseq, reason, fatal }) => {
                        info!(%peer, status = u16::from(status), %reason, "RTSP request refused");
                        (Reply::new(status).encode(cseq.as_deref()), fatal)
                    }
                };
                if conn.out.send(reply).await.is_err() {
                    break 'conn "connection writer ended".into();
                }
                if fatal {
                    break 'conn "unrecoverable request".into();
                }
            }
        };
        self.closers.lock().unwrap_or_else(|e| e.into_inner()).remove(&id);
        let ended = self.end_connection(id);
        drop(conn);
        if !writer_done {
            // Let the last reply go out, then close.
            if tokio::time::timeout(Duration::from_secs(2), &mut writer).await.is_err() {
                writer.abort();
            }
        }
        info!(%peer, connection = id, sessions_ended = ended, reason = %why, "RTSP client disconnected");
    }

    /// Any byte from a connection (request or interleaved RTCP) keeps its sessions alive.
    fn touch_connection(&self, conn: u64) {
        let now = Instant::now();
        for s in self.lock().values_mut().filter(|s| s.conn == conn) {
            s.last_seen = now;
        }
    }

    /// Ends the interleaved sessions of a closed connection; UDP sessions
    /// live on until TEARDOWN or timeout (RTSP allows a new connection).
    fn end_connection(&self, conn: u64) -> usize {
        let ended: Vec<Session> = {
            let mut sessions = self.lock();
            let ids: Vec<String> = sessions
                .iter()
                .filter(|(_, s)| s.conn == conn && matches!(s.sink, Sink::Interleaved { .. }))
                .map(|(id, _)| id.clone())
                .collect();
            ids.iter().filter_map(|id| sessions.remove(id)).collect()
        };
        let n = ended.len();
        for session in ended {
            session.end("the client closed its connection");
        }
        n
    }

    async fn handle(&self, conn: &mut Conn, req: Request<Vec<u8>>) -> Bytes {
        let cseq = req.header(&headers::CSEQ).map(|v| v.as_str().to_owned());
        let reply = match req.method() {
            Method::Options => Ok(Reply::ok().header("Public", PUBLIC)),
            Method::Describe => self.describe(conn, &req).await,
            Method::Setup => self.setup(conn, &req).await,
            Method::Play => self.play(conn, &req).await,
            Method::Pause => self.pause(conn, &req).await,
            Method::Teardown => self.teardown(conn, &req).await,
            Method::GetParameter | Method::SetParameter => self.parameter(conn, &req).await,
            // This server only plays; it takes no streams in.
            Method::Announce | Method::Record => {
                Err(Reply::new(StatusCode::MethodNotAllowed).header("Allow", PUBLIC))
            }
            _ => Err(Reply::new(StatusCode::NotImplemented)),
        };
        let reply = reply.unwrap_or_else(|e| e);
        if !reply.status.is_success() {
            debug!(peer = %conn.peer, method = <&str>::from(req.method()), status = u16::from(reply.status), "RTSP error reply");
        }
        reply.encode(cseq.as_deref())
    }

    /// The viewer a request comes from (the anonymous one on a relay
    /// without accounts), or the 401/503 to answer.
    async fn authenticate(&self, conn: &mut Conn, req: &Request<Vec<u8>>) -> Result<Viewer, Reply> {
        let asked = Asked {
            method: <&str>::from(req.method()),
            uri: req.request_uri(),
            proven: conn.logged_in.as_deref(),
        };
        let authorization = req.header(&headers::AUTHORIZATION).map(|v| v.as_str());
        let now = unix_secs();
        let client = conn.peer.ip();
        match self.auth.check(asked, authorization, client, now).await {
            Outcome::Viewer(v) => {
                if v.audit_name().is_some() && conn.logged_in.as_deref() != Some(v.name()) {
                    // One `login` audit line per connection, not per request
                    // (and the attempt the check took is refunded).
                    self.auth.login_ok(client, &v, "RTSP");
                    conn.logged_in = Some(v.name().to_owned());
                }
                conn.authenticated = true;
                Ok(v)
            }
            Outcome::Challenge { stale } => {
                let mut reply = Reply::new(StatusCode::Unauthorized);
                for c in self.auth.challenges(stale, now) {
                    reply = reply.header("WWW-Authenticate", c);
                }
                Err(reply)
            }
            Outcome::Throttled(wait) => {
                info!(peer = %conn.peer, "RTSP login throttled for {wait:?}");
                Err(Reply::new(StatusCode::ServiceUnavailable)
                    .header("Retry-After", wait.as_secs().max(1).to_string()))
            }
        }
    }

    /// The catalog entry `target` names, if this viewer may watch it at the
    /// target's quality.
    fn visible(&self, target: &Target, viewer: &Viewer) -> Result<CatalogEntry, Reply> {
        let (camera, quality) = (target.camera.as_str(), target.quality);
        let Some(entry) = self.source.catalog().into_iter().find(|c| c.id == camera) else {
            info!(camera, viewer = viewer.name(), "RTSP: camera not in this site's catalog");
            return Err(Reply::new(StatusCode::NotFound));
        };
        if !entry.qualities.contains(&quality) {
            info!(camera, quality = quality.name(), "RTSP: quality not offered to this site");
            return Err(Reply::new(StatusCode::Forbidden));
        }
        match viewer.check(&entry, quality) {
            Ok(()) => Ok(entry),
            // A camera outside the viewer's set is answered like one that
            // does not exist; the audit log keeps the real reason.
            Err(ScopeRefusal::Hidden(reason)) => {
                info!(camera, viewer = viewer.name(), %reason, "RTSP: refused by the viewer's account");
                self.audit.refused(viewer.audit_name(), camera, quality, "unknown", &reason);
                Err(Reply::new(StatusCode::NotFound))
            }
            Err(ScopeRefusal::Quality(reason)) => {
                info!(camera, viewer = viewer.name(), %reason, "RTSP: refused by the viewer's account");
                self.audit.refused(viewer.audit_name(), camera, quality, "forbidden", &reason);
                Err(Reply::new(StatusCode::Forbidden))
            }
        }
    }

    /// Subscribes to the target's track and waits for its first frame.
    async fn subscribe(&self, target: &Target) -> Result<(TrackReader, HubItem), Reply> {
        let mut reader = self
            .source
            .subscribe(&target.camera, target.quality)
            .await
            .map_err(|f| subscribe_reply(&target.camera, &f))?;
        match tokio::time::timeout(self.settings.first_frame_timeout, reader.next()).await {
            Ok(Some(item)) => Ok((reader, item)),
            Ok(None) => {
                info!(camera = %target.camera, "RTSP: the camera stream ended before its first frame");
                Err(Reply::new(StatusCode::ServiceUnavailable))
            }
            Err(_) => {
                info!(camera = %target.camera, timeout_secs = self.settings.first_frame_timeout.as_secs_f64(), "RTSP: no video from the camera in time");
                Err(Reply::new(StatusCode::ServiceUnavailable))
            }
        }
    }

    async fn describe(&self, conn: &mut Conn, req: &Request<Vec<u8>>) -> Result<Reply, Reply> {
        let url = req.request_uri().ok_or_else(|| Reply::new(StatusCode::BadRequest))?;
        let target = Target::parse(url).ok_or_else(|| Reply::new(StatusCode::NotFound))?;
        let viewer = self.authenticate(conn, req).await?;
        let entry = self.visible(&target, &viewer)?;
        // The subscription lingers upstream after this reader is dropped, so
        // the SETUP that follows finds the track warm.
        let (_reader, first) = self.subscribe(&target).await?;
        let sdp = sdp::describe(&first.config, &entry.name, rand::random::<u32>().into(), conn.local.ip());
        Ok(Reply::ok().header("Content-Base", target.base_url(url)).body("application/sdp", sdp))
    }

    fn choose_transport(&self, conn: &Conn, transports: &Transports) -> Option<Choice> {
        for t in transports.iter() {
            let Transport::Rtp(rtp) = t else { continue };
            if rtp.profile != RtpProfile::Avp
                || rtp.params.multicast
                || rtp.params.mode.contains(&TransportMode::Record)
            {
                continue;
            }
            match rtp.lower_transport {
                Some(RtpLowerTransport::Tcp) => {
                    let (a, b) = match rtp.params.interleaved {
                        Some((a, b)) => (a, b.unwrap_or(a.wrapping_add(1))),
                        None => (conn.next_channel, conn.next_channel.wrapping_add(1)),
                    };
                    return Some(Choice::Interleaved(a, b));
                }
                None | Some(RtpLowerTransport::Udp) if self.udp.is_some() => {
                    let Some((p, q)) = rtp.params.client_port else { continue };
                    return Some(Choice::Udp(p, q.unwrap_or(p.wrapping_add(1))));
                }
                _ => {}
            }
        }
        None
    }

    async fn setup(&self, conn: &mut Conn, req: &Request<Vec<u8>>) -> Result<Reply, Reply> {
        let url = req.request_uri().ok_or_else(|| Reply::new(StatusCode::BadRequest))?;
        let target = Target::parse(url).ok_or_else(|| Reply::new(StatusCode::NotFound))?;
        if let Some(id) = session_id(req) {
            // Every stream here has one track: a second SETUP in a session
            // has nothing to add.
            return Err(if self.lock().contains_key(&id) {
                Reply::new(StatusCode::AggregateOperationNotAllowed)
            } else {
                Reply::new(StatusCode::SessionNotFound)
            });
        }
        let viewer = self.authenticate(conn, req).await?;
        self.visible(&target, &viewer)?;
        let transports = match req.typed_header::<Transports>() {
            Ok(Some(t)) => t,
            Ok(None) => return Err(Reply::new(StatusCode::BadRequest)),
            Err(_) => return Err(Reply::new(StatusCode::UnsupportedTransport)),
        };
        let Some(choice) = self.choose_transport(conn, &transports) else {
            let asked = req.header(&headers::TRANSPORT).map(|v| v.as_str().to_owned()).unwrap_or_default();
            info!(peer = %conn.peer, transport = %asked, "RTSP: unsupported transport");
            let reply = Reply::new(StatusCode::UnsupportedTransport);
            return Err(if self.udp.is_some() {
                reply
            } else {
                reply.header("Transport", "RTP/AVP/TCP;unicast")
            });
        };
        {
            let sessions = self.lock();
            if sessions.len() >= self.settings.max_sessions
                || sessions.values().filter(|s| s.conn == conn.id).count() >= MAX_SESSIONS_PER_CONNECTION
            {
                warn!(peer = %conn.peer, sessions = sessions.len(), "RTSP session refused: limit reached");
                return Err(Reply::new(StatusCode::NotEnoughBandwidth));
            }
        }
        let (reader, first) = self.subscribe(&target).await?;
        let numbering = Arc::new(Numbering::random());
        let ssrc = numbering.ssrc;
        let (sink, transport) = match (choice, &self.udp) {
            (Choice::Interleaved(a, b), _) => {
                conn.next_channel = b.wrapping_add(1);
                (
                    Sink::Interleaved { out: conn.out.clone(), rtp: a, rtcp: b },
                    format!("RTP/AVP/TCP;unicast;interleaved={a}-{b};ssrc={ssrc:08X}"),
                )
            }
            (Choice::Udp(p, q), Some(udp)) => (
                Sink::Udp {
                    rtp_socket: udp.rtp.clone(),
                    rtcp_socket: udp.rtcp.clone(),
                    // Media only ever goes to the address that asked for it.
                    rtp: SocketAddr::new(conn.peer.ip(), p),
                    rtcp: SocketAddr::new(conn.peer.ip(), q),
                },
                format!(
                    "RTP/AVP;unicast;client_port={p}-{q};server_port={}-{};ssrc={ssrc:08X}",
                    udp.ports.0, udp.ports.1
                ),
            ),
            (Choice::Udp(..), None) => return Err(Reply::new(StatusCode::UnsupportedTransport)),
        };
        let id = format!("{:016x}", rand::random::<u64>());
        let control_url = format!("{}{}", target.base_url(url), sdp::TRACK_CONTROL);
        let (who, camera, quality) = (viewer.clone(), target.camera.clone(), target.quality);
        info!(
            peer = %conn.peer,
            camera = %target.camera,
            quality = target.quality.name(),
            viewer = viewer.name(),
            transport = sink.kind(),
            "RTSP session set up"
        );
        let session = Session {
            id: id.clone(),
            camera: target.camera,
            quality: target.quality,
            codec: first.config.codec,
            viewer,
            peer: conn.peer,
            conn: conn.id,
            control_url,
            sink,
            pending: Some((reader, first)),
            pump: None,
            paused: Arc::new(AtomicBool::new(false)),
            numbering,
            created: Instant::now(),
            last_seen: Instant::now(),
            counters: Arc::new(Counters::default()),
            audit: self.audit.clone(),
            playing_since: None,
            end_reason: "torn down by the client".into(),
        };
        self.lock().insert(id.clone(), session);
        // Accounts may have been reloaded while the camera was subscribed:
        // the access watcher may have looked before this session was in.
        if let Err(why) = self.auth.accounts().may_still_watch(&who, &self.source.catalog(), &camera, quality)
        {
            if let Some(s) = self.lock().remove(&id) {
                s.end("access revoked (account removed or narrowed)");
            }
            info!(peer = %conn.peer, camera = %camera, viewer = who.name(), %why, "RTSP: access revoked during SETUP");
            self.audit.refused(who.audit_name(), &camera, quality, "forbidden", &why);
            return Err(Reply::new(StatusCode::Forbidden));
        }
        Ok(Reply::ok()
            .header("Transport", transport)
            .header("Session", format!("{id};timeout={}", self.settings.session_timeout.as_secs())))
    }

    /// The session a request names, if the request may act on it: requests
    /// on the connection that created it are trusted; from elsewhere the
    /// same viewer must authenticate.
    async fn session_access(&self, conn: &mut Conn, req: &Request<Vec<u8>>) -> Result<String, Reply> {
        let not_found = || Reply::new(StatusCode::SessionNotFound);
        let id = session_id(req).ok_or_else(not_found)?;
        let (owner, viewer) = {
            let mut sessions = self.lock();
            let s = sessions.get_mut(&id).ok_or_else(not_found)?;
            s.last_seen = Instant::now();
            (s.conn, s.viewer.name().to_owned())
        };
        if owner != conn.id {
            let who = self.authenticate(conn, req).await?;
            if who.name() != viewer {
                return Err(not_found());
            }
        }
        Ok(id)
    }

    async fn play(&self, conn: &mut Conn, req: &Request<Vec<u8>>) -> Result<Reply, Reply> {
        let id = self.session_access(conn, req).await?;
        let mut sessions = self.lock();
        let s = sessions.get_mut(&id).ok_or_else(|| Reply::new(StatusCode::SessionNotFound))?;
        let mut rtp_info =
            format!("url={};seq={}", s.control_url, s.numbering.sequence.load(Ordering::Relaxed));
        if let Some((reader, first)) = s.pending.take() {
            let _ = write!(rtp_info, ";rtptime={}", s.numbering.first_timestamp);
            let spec = PumpSpec {
                codec: s.codec,
                mtu: self.settings.mtu,
                sink: s.sink.clone(),
                numbering: s.numbering.clone(),
                counters: s.counters.clone(),
                paused: s.paused.clone(),
            };
            let me = self.me.clone();
            let (sid, camera) = (id.clone(), s.camera.clone());
            s.pump = Some(tokio::spawn(async move {
                let end = session::pump(spec, Some(first), reader).await;
                if let Some(me) = me.upgrade() {
                    me.pump_ended(&sid, &camera, end);
                }
            }));
            info!(peer = %s.peer, camera = %s.camera, quality = s.quality.name(), viewer = s.viewer.name(), transport = s.sink.kind(), "RTSP playing");
            s.playing_since = Some(Instant::now());
            self.audit.view_start(
                Viewing {
                    viewer: s.viewer.audit_name(),
                    camera: &s.camera,
                    quality: s.quality,
                    session: &id,
                },
                &format!("RTSP/{}", s.sink.kind()),
            );
        }
        s.paused.store(false, Ordering::Relaxed);
        Ok(Reply::ok()
            .header("Session", format!("{id};timeout={}", self.settings.session_timeout.as_secs()))
            .header("Range", "npt=now-")
            .header("RTP-Info", rtp_info))
    }

    fn pump_ended(&self, id: &str, camera: &str, end: session::End) {
        let (removed, left_empty) = {
            let mut sessions = self.lock();
            let removed = sessions.remove(id);
            let left_empty = removed.as_ref().is_some_and(|s| !sessions.values().any(|o| o.conn == s.conn));
            (removed, left_empty)
        };
        let Some(mut s) = removed else { return };
        // This runs on the pump's own task: do not abort it.
        s.pump.take();
        info!(peer = %s.peer, camera, viewer = s.viewer.name(), reason = %end, "RTSP session ended");
        let conn = s.conn;
        let revoked = matches!(end, session::End::Revoked(_));
        let why: Cow<'static, str> = match end {
            session::End::TrackEnded => "the camera stream ended".into(),
            session::End::Revoked(why) => format!("access revoked: {why}").into(),
            session::End::CodecChanged(_) => "the camera changed codec".into(),
            session::End::ClientGone => "the client stopped reading".into(),
        };
        s.end(why);
        // A revocation closes the connection as a relay account's removal
        // does (the BYE alone leaves clients such as ffmpeg waiting on an
        // open socket); other sessions on it go on.
        if revoked && left_empty {
            if let Some(closer) = self.closers.lock().unwrap_or_else(|e| e.into_inner()).get(&conn) {
                debug!(connection = conn, "RTSP: closing a connection whose stream was revoked upstream");
                closer.notify_one();
            }
        }
    }

    async fn pause(&self, conn: &mut Conn, req: &Request<Vec<u8>>) -> Result<Reply, Reply> {
        let id = self.session_access(conn, req).await?;
        let sessions = self.lock();
        let s = sessions.get(&id).ok_or_else(|| Reply::new(StatusCode::SessionNotFound))?;
        if s.pump.is_none() {
            return Err(Reply::new(StatusCode::MethodNotValidInThisState));
        }
        s.paused.store(true, Ordering::Relaxed);
        Ok(Reply::ok().header("Session", id))
    }

    async fn teardown(&self, conn: &mut Conn, req: &Request<Vec<u8>>) -> Result<Reply, Reply> {
        let id = self.session_access(conn, req).await?;
        let removed = self.lock().remove(&id);
        if let Some(s) = removed {
            info!(peer = %s.peer, camera = %s.camera, "RTSP session torn down by the client");
            s.end("torn down by the client");
        }
        Ok(Reply::ok())
    }

    /// GET_PARAMETER / SET_PARAMETER: keep-alives. Parameters themselves are
    /// not supported.
    async fn parameter(&self, conn: &mut Conn, req: &Request<Vec<u8>>) -> Result<Reply, Reply> {
        let id = if session_id(req).is_some() { Some(self.session_access(conn, req).await?) } else { None };
        if req.method() == Method::SetParameter && !req.body().is_empty() {
            return Err(Reply::new(StatusCode::ParameterNotUnderstood));
        }
        Ok(match id {
            Some(id) => Reply::ok().header("Session", id),
            None => Reply::ok(),
        })
    }
}

/// Writes a connection's queued chunks; gives up on a client that reads
/// nothing for `stall` (its kernel buffers full), which ends the connection.
async fn write_loop(
    mut wr: tokio::net::tcp::OwnedWriteHalf,
    mut rx: mpsc::Receiver<Bytes>,
    stall: Duration,
) -> Result<(), String> {
    while let Some(chunk) = rx.recv().await {
        match tokio::time::timeout(stall, wr.write_all(&chunk)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(format!("write failed: {e}")),
            Err(_) => return Err(format!("the client read nothing for {stall:?}")),
        }
    }
    let _ = wr.shutdown().await;
    Ok(())
}

fn session_id(req: &Request<Vec<u8>>) -> Option<String> {
    let v = req.header(&headers::SESSION)?.as_str();
    let id = v.split(';').next()?.trim();
    (!id.is_empty()).then(|| id.to_owned())
}

fn subscribe_reply(camera: &str, failure: &SubscribeFailure) -> Reply {
    info!(camera, code = failure.code.name(), reason = %failure.reason, "RTSP: subscription refused");
    Reply::new(match failure.code {
        SubscribeErrorCode::Unknown => StatusCode::NotFound,
        SubscribeErrorCode::Forbidden => StatusCode::Forbidden,
        SubscribeErrorCode::Offline => StatusCode::ServiceUnavailable,
        SubscribeErrorCode::OverBudget => StatusCode::NotEnoughBandwidth,
    })
}

fn unix_secs() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}
