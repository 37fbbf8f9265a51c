//! SETUP: the transport a client asks for and the one we accept
//! (interleaved TCP or UDP unicast), and the session it creates or joins.

use super::connection::Conn;
use super::reply::Reply;
use super::target::Target;
use super::{RtspServer, MAX_SESSIONS_PER_CONNECTION};
use crate::rtsp::sdp;
use crate::rtsp::session::{Counters, Numbering, Session, Sink};
use rtsp_types::headers::{self, RtpLowerTransport, RtpProfile, Transport, TransportMode, Transports};
use rtsp_types::{Request, StatusCode};
use std::net::SocketAddr;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Instant;
use tracing::{info, warn};

/// The transport a client asked for and we accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Choice {
    Interleaved(u8, u8),
    Udp(u16, u16),
}

impl RtspServer {
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

    pub(super) async fn setup(&self, conn: &mut Conn, req: &Request<Vec<u8>>) -> Result<Reply, Reply> {
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
        let (reader, first) = self.subscribe(&target, &viewer).await?;
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
            replay: false,
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
}

pub(super) fn session_id(req: &Request<Vec<u8>>) -> Option<String> {
    let v = req.header(&headers::SESSION)?.as_str();
    let id = v.split(';').next()?.trim();
    (!id.is_empty()).then(|| id.to_owned())
}
