//! Methods on an existing session: PLAY (starting the pump), PAUSE,
//! TEARDOWN and GET/SET_PARAMETER keep-alives, and which connection may act
//! on a session.

use super::connection::Conn;
use super::reply::Reply;
use super::setup::session_id;
use super::RtspServer;
use crate::audit::Viewing;
use crate::rtsp::range;
use crate::rtsp::session::{self, PumpSpec};
use rtsp_types::{Method, Request, StatusCode};
use std::borrow::Cow;
use std::fmt::Write as _;
use std::sync::atomic::Ordering;
use std::time::Instant;
use tracing::{debug, info};

impl RtspServer {
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

    pub(super) async fn play(&self, conn: &mut Conn, req: &Request<Vec<u8>>) -> Result<Reply, Reply> {
        let id = self.session_access(conn, req).await?;
        let range = match req.header(&rtsp_types::headers::RANGE).map(|v| range::parse(v.as_str())) {
            None | Some(Ok(None)) => None,
            Some(Ok(Some(r))) => Some(r),
            Some(Err(why)) => {
                info!(peer = %conn.peer, %why, "RTSP: PLAY with a bad Range");
                return Err(Reply::new(StatusCode::InvalidRange));
            }
        };
        if let Some(r) = range {
            self.replay(&id, r).await?;
        }
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
            let (go, after_reply) = tokio::sync::oneshot::channel();
            conn.after_reply.push(go);
            s.pump = Some(tokio::spawn(async move {
                // Media after the PLAY reply (see `Conn::after_reply`); a
                // connection gone before it drops `go` and the pump ends
                // on its closed sink.
                let _ = after_reply.await;
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
                    token: s.viewer.is_token(),
                },
                &format!("RTSP/{}", s.sink.kind()),
            );
        }
        s.paused.store(false, Ordering::Relaxed);
        let range_answer = range.map_or_else(|| "npt=now-".to_owned(), range::format);
        Ok(Reply::ok()
            .header("Session", format!("{id};timeout={}", self.settings.session_timeout.as_secs()))
            .header("Range", range_answer)
            .header("RTP-Info", rtp_info))
    }

    /// `PLAY` with `Range: clock=`: the session, not yet playing, plays the
    /// recording of that interval instead of live (ONVIF Profile G style);
    /// the stream ends (RTCP BYE) at the interval's end.
    async fn replay(&self, id: &str, r: range::ClockRange) -> Result<(), Reply> {
        let (camera, quality, viewer) = {
            let sessions = self.lock();
            let s = sessions.get(id).ok_or_else(|| Reply::new(StatusCode::SessionNotFound))?;
            if s.pending.is_none() {
                // Already playing: a seek in a running session is not supported.
                return Err(Reply::new(StatusCode::MethodNotValidInThisState));
            }
            (s.camera.clone(), s.quality, s.viewer.clone())
        };
        let name = viewer.upstream_name();
        let p = ponte_proto::wire::Playback { from_ms: r.from_ms, to_ms: r.to_ms };
        let detail = format!("RTSP {}", range::format(r));
        let mut reader = match self.source.playback_as(&camera, quality, p, Some(&name)).await {
            Ok(reader) => {
                self.audit.recall(viewer.audit_name(), &camera, quality, "playback", "allowed", &detail);
                reader
            }
            Err(f) => {
                self.audit.recall(
                    viewer.audit_name(),
                    &camera,
                    quality,
                    "playback",
                    "refused",
                    &format!("{detail}: {}", f.reason),
                );
                return Err(super::describe::subscribe_reply(&camera, &f));
            }
        };
        let first = match tokio::time::timeout(self.settings.first_frame_timeout, reader.next()).await {
            Ok(Some(item)) => item,
            _ => {
                info!(camera = %camera, "RTSP: the recording gave no frame in time");
                return Err(Reply::new(StatusCode::ServiceUnavailable));
            }
        };
        let mut sessions = self.lock();
        let s = sessions.get_mut(id).ok_or_else(|| Reply::new(StatusCode::SessionNotFound))?;
        if first.config.codec != s.codec {
            return Err(Reply::new(StatusCode::UnsupportedMediaType));
        }
        info!(peer = %s.peer, camera = %camera, range = %range::format(r), "RTSP replay of a recorded interval");
        s.pending = Some((reader, first));
        s.replay = true;
        Ok(())
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
        // The end of a replayed interval is the end of the stream too.
        let close = revoked || (s.replay && matches!(end, session::End::TrackEnded));
        let why: Cow<'static, str> = match end {
            session::End::TrackEnded if s.replay => "the replayed interval ended".into(),
            session::End::TrackEnded => "the camera stream ended".into(),
            session::End::Revoked(why) => format!("access revoked: {why}").into(),
            session::End::CodecChanged(_) => "the camera changed codec".into(),
            session::End::ClientGone => "the client stopped reading".into(),
        };
        s.end(why);
        // A revocation closes the connection as a relay account's removal
        // does (the BYE alone leaves clients such as ffmpeg waiting on an
        // open socket); other sessions on it go on.
        if close && left_empty {
            if let Some(closer) = self.closers.lock().unwrap_or_else(|e| e.into_inner()).get(&conn) {
                debug!(connection = conn, "RTSP: closing a connection whose stream was revoked upstream");
                closer.notify_one();
            }
        }
    }

    pub(super) async fn pause(&self, conn: &mut Conn, req: &Request<Vec<u8>>) -> Result<Reply, Reply> {
        let id = self.session_access(conn, req).await?;
        let sessions = self.lock();
        let s = sessions.get(&id).ok_or_else(|| Reply::new(StatusCode::SessionNotFound))?;
        if s.pump.is_none() {
            return Err(Reply::new(StatusCode::MethodNotValidInThisState));
        }
        s.paused.store(true, Ordering::Relaxed);
        Ok(Reply::ok().header("Session", id))
    }

    pub(super) async fn teardown(&self, conn: &mut Conn, req: &Request<Vec<u8>>) -> Result<Reply, Reply> {
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
    pub(super) async fn parameter(&self, conn: &mut Conn, req: &Request<Vec<u8>>) -> Result<Reply, Reply> {
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
