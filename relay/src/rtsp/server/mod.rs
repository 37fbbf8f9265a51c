//! The RTSP server: TCP listener, one task per client connection, request
//! handling, the session table, and the UDP port pair for RTP/AVP unicast.
//!
//! URLs: `rtsp://relay:8554/<camera>` (main stream) and
//! `rtsp://relay:8554/<camera>/sub`; the track is `<that URL>/trackID=0`.
//! Streams come from [`CameraSource::subscribe`], the same on-demand
//! upstream subscription WHEP uses, so a camera crosses the link once
//! whatever the number of RTSP and WHEP viewers.
//!
//! - `connection`: one client connection: reading, framing, the login
//!   deadline, dispatch of each request, the writer;
//! - `describe`: DESCRIBE, which cameras a viewer sees and subscribing;
//! - `setup`: SETUP and the transport (interleaved or UDP) it settles on;
//! - `playback`: PLAY, PAUSE, TEARDOWN, GET/SET_PARAMETER on a session;
//! - `sweep`: sessions ended from outside a request (keep-alive timeout,
//!   access revoked);
//! - `udp`: the server's RTP/RTCP port pair;
//! - `reply`, `target`: responses being built, and what a URL names.

mod connection;
mod describe;
mod playback;
mod reply;
mod setup;
mod sweep;
mod target;
mod udp;
use crate::audit::RelayAudit;
use crate::rtsp::admission::{self, Admission};
use crate::rtsp::auth::RtspAuth;
use crate::rtsp::session::{Session, SessionInfo};
use crate::whep::CameraSource;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tracing::{debug, warn};
use udp::UdpPair;

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
}
