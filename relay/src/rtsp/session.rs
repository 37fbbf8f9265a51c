//! One RTSP session: a camera track packetised into RTP for one client, over
//! its TCP connection (interleaved) or to its UDP ports. The pump never
//! blocks the fan-out: it reads the hub's bounded per-viewer queue, so a
//! client slower than the camera is skipped to the next keyframe by the hub,
//! and one that stops reading altogether is dropped by its connection's
//! writer. Which frames go out, and their RTP time, is decided by the egress
//! gate WHEP uses too ([`ponte_proto::egress`]).

use crate::audit::{RelayAudit, Viewing};
use crate::auth::Viewer;
use bytes::{BufMut, Bytes, BytesMut};
use ponte_proto::egress::{Arrival, EgressGate, Verdict};
use ponte_proto::h264;
use ponte_proto::hub::{HubItem, TrackReader};
use ponte_proto::media::{Codec, Quality};
use ponte_proto::rtp::{self, Packetizer};
use serde::Serialize;
use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// How often a playing session sends an RTCP sender report.
const SENDER_REPORT_EVERY: Duration = Duration::from_secs(5);

/// Where a session's packets go.
#[derive(Clone)]
pub enum Sink {
    /// `$`-framed on the client's RTSP connection.
    Interleaved {
        /// The connection's bounded outbound queue.
        out: mpsc::Sender<Bytes>,
        /// RTP channel.
        rtp: u8,
        /// RTCP channel.
        rtcp: u8,
    },
    /// UDP datagrams from the server's port pair to the client's.
    Udp {
        /// Server RTP socket.
        rtp_socket: Arc<UdpSocket>,
        /// Server RTCP socket.
        rtcp_socket: Arc<UdpSocket>,
        /// Client RTP address.
        rtp: SocketAddr,
        /// Client RTCP address.
        rtcp: SocketAddr,
    },
}

impl Sink {
    /// `tcp` or `udp`, for status.
    pub fn kind(&self) -> &'static str {
        match self {
            Sink::Interleaved { .. } => "tcp",
            Sink::Udp { .. } => "udp",
        }
    }

    /// True when `addr` is one of the client's UDP ports.
    pub fn is_client_udp(&self, addr: SocketAddr) -> bool {
        matches!(self, Sink::Udp { rtp, rtcp, .. } if *rtp == addr || *rtcp == addr)
    }
}

/// What a session sent, for status.
#[derive(Debug, Default)]
pub struct Counters {
    /// RTP packets sent.
    pub packets: AtomicU64,
    /// RTP payload bytes sent.
    pub bytes: AtomicU64,
    /// Frames not sent (waiting for a keyframe, or the client lagging).
    pub frames_skipped: AtomicU64,
}

/// RTP numbering of a session: random origins (RFC 3550 §5.1), and the
/// next sequence number for RTP-Info when a paused session resumes.
#[derive(Debug)]
pub struct Numbering {
    /// Synchronisation source.
    pub ssrc: u32,
    /// Timestamp of the first frame.
    pub first_timestamp: u32,
    /// Next sequence number.
    pub sequence: AtomicU16,
}

impl Numbering {
    /// Random SSRC, sequence and timestamp origins.
    pub fn random() -> Self {
        Self {
            ssrc: rand::random(),
            first_timestamp: rand::random(),
            sequence: AtomicU16::new(rand::random()),
        }
    }
}

/// Why a pump stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum End {
    /// The camera track ended (upstream gone or camera offline).
    TrackEnded,
    /// The upstream revoked the site's access to the camera, and why.
    Revoked(Arc<str>),
    /// The track switched codec: the client's SDP no longer applies.
    CodecChanged(Codec),
    /// The client's connection is gone.
    ClientGone,
}

impl std::fmt::Display for End {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            End::TrackEnded => f.write_str("the camera stream ended"),
            End::Revoked(why) => write!(f, "access revoked: {why}"),
            End::CodecChanged(c) => write!(f, "the camera switched to {}", c.name()),
            End::ClientGone => f.write_str("the client connection closed"),
        }
    }
}

/// A session as the server keeps it.
pub struct Session {
    /// Session id (secret: it authorises PLAY/TEARDOWN on other connections).
    pub id: String,
    /// Camera id.
    pub camera: String,
    /// Quality.
    pub quality: Quality,
    /// Codec announced in SETUP.
    pub codec: Codec,
    /// Who watches (the anonymous viewer on a relay without accounts).
    pub viewer: Viewer,
    /// Client address of the creating connection.
    pub peer: SocketAddr,
    /// Connection that created the session.
    pub conn: u64,
    /// Track control URL (for RTP-Info).
    pub control_url: String,
    /// Where packets go.
    pub sink: Sink,
    /// Reader and first item, from SETUP until the first PLAY.
    pub pending: Option<(TrackReader, HubItem)>,
    /// Running pump, once played.
    pub pump: Option<JoinHandle<()>>,
    /// Set by PAUSE: the pump discards frames until PLAY clears it.
    pub paused: Arc<AtomicBool>,
    /// RTP numbering.
    pub numbering: Arc<Numbering>,
    /// When SETUP created it.
    pub created: Instant,
    /// Last sign of life from the client.
    pub last_seen: Instant,
    /// What was sent.
    pub counters: Arc<Counters>,
    /// The relay's audit log.
    pub audit: Arc<RelayAudit>,
    /// Since when media flows (for the audit's view-stop).
    pub playing_since: Option<Instant>,
    /// Why the session ends, for the audit; set before it is dropped.
    pub end_reason: Cow<'static, str>,
    /// Plays a recorded interval (`PLAY` with `Range: clock=`), not live.
    pub replay: bool,
}

impl Session {
    /// True while media flows.
    pub fn playing(&self) -> bool {
        self.pump.as_ref().is_some_and(|p| !p.is_finished()) && !self.paused.load(Ordering::Relaxed)
    }

    /// Ends the session for `why` (recorded in the audit's view-stop).
    pub fn end(mut self, why: impl Into<Cow<'static, str>>) {
        self.end_reason = why.into();
    }

    /// Status row.
    pub fn info(&self) -> SessionInfo {
        SessionInfo {
            // Enough to tell sessions apart; the whole id stays with its client.
            id: self.id.chars().take(8).collect(),
            camera: self.camera.clone(),
            quality: self.quality.name(),
            viewer: self.viewer.audit_name().map(str::to_owned),
            peer: self.peer,
            transport: self.sink.kind(),
            playing: self.playing(),
            packets: self.counters.packets.load(Ordering::Relaxed),
            bytes: self.counters.bytes.load(Ordering::Relaxed),
            frames_skipped: self.counters.frames_skipped.load(Ordering::Relaxed),
            idle_secs: self.last_seen.elapsed().as_secs(),
            age_secs: self.created.elapsed().as_secs(),
        }
    }
}

impl crate::auth::LiveStream for Session {
    fn watching(&mut self) -> (&mut Viewer, &str, Quality) {
        (&mut self.viewer, &self.camera, self.quality)
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        if let Some(pump) = self.pump.take() {
            pump.abort();
        }
        if let Some(since) = self.playing_since {
            self.audit.view_stop(
                Viewing {
                    viewer: self.viewer.audit_name(),
                    camera: &self.camera,
                    quality: self.quality,
                    session: &self.id,
                    token: self.viewer.is_token(),
                },
                since.elapsed(),
                &self.end_reason,
            );
        }
    }
}

/// One RTSP session, for status.
#[derive(Debug, Clone, Serialize)]
pub struct SessionInfo {
    /// First characters of the session id.
    pub id: String,
    /// Camera id.
    pub camera: String,
    /// Quality.
    pub quality: &'static str,
    /// Viewer account, if authenticated.
    pub viewer: Option<String>,
    /// Client address.
    pub peer: SocketAddr,
    /// `tcp` (interleaved) or `udp`.
    pub transport: &'static str,
    /// Whether media flows.
    pub playing: bool,
    /// RTP packets sent.
    pub packets: u64,
    /// RTP payload bytes sent.
    pub bytes: u64,
    /// Frames skipped for this client.
    pub frames_skipped: u64,
    /// Seconds since the client was last heard from.
    pub idle_secs: u64,
    /// Seconds since SETUP.
    pub age_secs: u64,
}

/// Parameters of a pump.
pub struct PumpSpec {
    /// Codec announced to the client.
    pub codec: Codec,
    /// Largest RTP packet.
    pub mtu: usize,
    /// Where packets go.
    pub sink: Sink,
    /// RTP numbering.
    pub numbering: Arc<Numbering>,
    /// Counters to add to.
    pub counters: Arc<Counters>,
    /// PAUSE flag of the session.
    pub paused: Arc<AtomicBool>,
}

/// Sends the track to the client until it ends, the client goes, or the
/// codec changes. `first` is an item already taken from `reader`.
pub async fn pump(spec: PumpSpec, first: Option<HubItem>, mut reader: TrackReader) -> End {
    let PumpSpec { codec, mtu, sink, numbering, counters, paused } = spec;
    let mut packetizer = Packetizer::new(
        codec,
        super::sdp::PAYLOAD_TYPE,
        numbering.ssrc,
        numbering.sequence.load(Ordering::Relaxed),
        mtu,
    );
    let mut gate = EgressGate::new(codec, numbering.first_timestamp);
    let mut next_report = Instant::now();
    let (mut packets_sent, mut octets_sent) = (0u32, 0u32);
    let mut buf = BytesMut::with_capacity(64 * 1024);
    let mut first = first;
    let end = loop {
        let item = match first.take() {
            Some(item) => item,
            None => match reader.next().await {
                Some(item) => item,
                None => break reader.revoked().map_or(End::TrackEnded, End::Revoked),
            },
        };
        let verdict =
            if paused.load(Ordering::Relaxed) { gate.hold(&item) } else { gate.accept(&item, Arrival::Live) };
        let (payload, timestamp) = match verdict {
            Verdict::Send { payload, timestamp } => (payload, timestamp),
            Verdict::Skip => {
                counters.frames_skipped.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            Verdict::CodecChanged(codec) => break End::CodecChanged(codec),
        };
        let packets = packetizer.packetize(&payload, timestamp);
        let report = (Instant::now() >= next_report).then(|| {
            next_report = Instant::now() + SENDER_REPORT_EVERY;
            rtp::sender_report(
                numbering.ssrc,
                rtp::ntp_timestamp(h264::unix_micros_now()),
                timestamp,
                packets_sent,
                octets_sent,
            )
        });
        let payload_bytes: usize = packets.iter().map(|p| p.payload_len()).sum();
        match &sink {
            Sink::Interleaved { out, rtp, rtcp } => {
                buf.clear();
                if let Some(sr) = &report {
                    put_interleaved(&mut buf, *rtcp, sr);
                }
                for p in &packets {
                    buf.put_u8(b'$');
                    buf.put_u8(*rtp);
                    buf.put_u16(p.len() as u16);
                    p.write(&mut buf);
                }
                // Waiting here is back-pressure into this viewer's own hub
                // queue, which skips it to the next keyframe when it overflows;
                // the fan-out never waits. A client that reads nothing at all
                // is dropped by its connection's writer.
                if out.send(buf.split().freeze()).await.is_err() {
                    break End::ClientGone;
                }
            }
            Sink::Udp { rtp_socket, rtcp_socket, rtp, rtcp } => {
                if let Some(sr) = &report {
                    let _ = rtcp_socket.send_to(sr, *rtcp).await;
                }
                for p in &packets {
                    buf.clear();
                    p.write(&mut buf);
                    // A lost datagram is RTP's normal weather; the client's
                    // liveness is judged by its keep-alives, not by this.
                    if let Err(e) = rtp_socket.send_to(&buf, *rtp).await {
                        tracing::debug!(client = %rtp, error = %e, "RTP send failed");
                    }
                }
            }
        }
        packets_sent = packets_sent.wrapping_add(packets.len() as u32);
        octets_sent = octets_sent.wrapping_add(payload_bytes as u32);
        counters.packets.fetch_add(packets.len() as u64, Ordering::Relaxed);
        counters.bytes.fetch_add(payload_bytes as u64, Ordering::Relaxed);
        numbering.sequence.store(packetizer.next_sequence(), Ordering::Relaxed);
    };
    if end != End::ClientGone {
        // Tell the client the stream is over (ffmpeg and GStreamer end on BYE).
        let bye = rtp::bye(numbering.ssrc);
        match &sink {
            Sink::Interleaved { out, rtcp, .. } => {
                let mut b = BytesMut::new();
                put_interleaved(&mut b, *rtcp, &bye);
                let _ = out.try_send(b.freeze());
            }
            Sink::Udp { rtcp_socket, rtcp, .. } => {
                let _ = rtcp_socket.send_to(&bye, *rtcp).await;
            }
        }
    }
    end
}

fn put_interleaved(buf: &mut BytesMut, channel: u8, data: &[u8]) {
    buf.put_u8(b'$');
    buf.put_u8(channel);
    buf.put_u16(data.len() as u16);
    buf.put_slice(data);
}
