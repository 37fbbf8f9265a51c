//! One client connection: the read loop with its login deadline and idle
//! timeout, framing, authentication of each request, dispatch by method,
//! and the writer that gives up on a client that reads nothing.

use super::reply::Reply;
use super::{RtspServer, OUT_QUEUE, PUBLIC};
use crate::auth::Viewer;
use crate::rtsp::admission::Slot;
use crate::rtsp::auth::{Asked, Outcome};
use crate::rtsp::framing::{Framer, Inbound, Refusal};
use crate::rtsp::session::{Session, Sink};
use bytes::Bytes;
use rtsp_types::headers::{self};
use rtsp_types::{Method, Request, StatusCode};
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, Notify};
use tracing::{debug, info};

/// One client connection, as its requests see it.
pub(super) struct Conn {
    pub(super) id: u64,
    pub(super) peer: SocketAddr,
    pub(super) local: SocketAddr,
    pub(super) out: mpsc::Sender<Bytes>,
    pub(super) next_channel: u8,
    /// Viewer whose login was recorded on this connection.
    pub(super) logged_in: Option<String>,
    /// Some request of this connection passed authentication (the
    /// anonymous viewer's included): the login deadline no longer applies.
    pub(super) authenticated: bool,
    /// Pumps a PLAY started, waiting for its reply to be queued first: on
    /// interleaved TCP a client waiting for the reply skips the `$` frames
    /// before it, so media queued ahead of the reply lost the keyframe and
    /// the picture waited a whole GOP for the next one.
    pub(super) after_reply: Vec<tokio::sync::oneshot::Sender<()>>,
}

impl RtspServer {
    pub(super) async fn connection(self: Arc<Self>, stream: TcpStream, peer: SocketAddr, _slot: Slot) {
        let id = self.next_conn.fetch_add(1, Ordering::Relaxed);
        let local = stream.local_addr().unwrap_or(self.local_addr);
        let _ = stream.set_nodelay(true);
        let (mut rd, wr) = stream.into_split();
        let (out, out_rx) = mpsc::channel::<Bytes>(OUT_QUEUE);
        let mut writer = tokio::spawn(write_loop(wr, out_rx, self.settings.write_stall));
        let mut conn = Conn {
            id,
            peer,
            local,
            out,
            next_channel: 0,
            logged_in: None,
            authenticated: false,
            after_reply: Vec::new(),
        };
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
                for go in conn.after_reply.drain(..) {
                    let _ = go.send(());
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
    pub(super) async fn authenticate(
        &self,
        conn: &mut Conn,
        req: &Request<Vec<u8>>,
    ) -> Result<Viewer, Reply> {
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
}

/// Writes a connection's queued chunks; gives up on a client that reads
/// nothing for `stall` (its kernel buffers full), which ends the connection.
pub(super) async fn write_loop(
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

pub(super) fn unix_secs() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}
