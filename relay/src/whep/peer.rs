//! The browser's peer connection: the only file that speaks webrtc-rs. It
//! answers an offer with one send-only H.264 or H.265 track, reports the
//! connection's state as a [`PeerState`], and packetizes access units into
//! RTP ([`ponte_proto::rtp::DEFAULT_MTU`]-sized packets, the size
//! webrtc-rs' own sample tracks use): H.264 with webrtc-rs' payloader
//! (RFC 6184 mode 1), H.265 with ours ([`ponte_proto::rtp::Packetizer`],
//! RFC 7798 single NAL units and fragmentation units, the one the RTSP
//! egress uses). webrtc-rs 0.21 has an HEVC payloader too, but it slices
//! the access unit at 4-byte start codes only and indexes NAL headers
//! without a length check; ours handles both start code lengths and never
//! panics on a short NAL.

use super::offer::OfferError;
use super::WhepSettings;
use crate::media_ports::PortLease;
use bytes::{BufMut, Bytes, BytesMut};
use ponte_proto::media::Codec;
use ponte_proto::rtp::{Packetizer, DEFAULT_MTU, HEADER_LEN};
use rtc::peer_connection::configuration::media_engine::{MIME_TYPE_H264, MIME_TYPE_HEVC};
use rtc::rtp;
use rtc::rtp::codec::h264::H264Payloader;
use rtc::rtp::packetizer::Payloader;
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodec, RTCRtpCodecParameters, RTCRtpCodingParameters, RTCRtpEncodingParameters, RtpCodecKind,
};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::timeout;
use tracing::warn;
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::media_stream::track_local::TrackLocal;
use webrtc::media_stream::MediaStreamTrack;
use webrtc::peer_connection::{
    register_default_interceptors, MediaEngine, PeerConnection, PeerConnectionBuilder,
    PeerConnectionEventHandler, RTCConfigurationBuilder, RTCIceGatheringState, RTCPeerConnectionState,
    RTCSessionDescription, Registry,
};
use webrtc::rtp_transceiver::RtpSender;

/// The H.264 format offered to browsers: Constrained Baseline 3.1, the
/// profile openh264 produces and every WebRTC browser decodes. Browsers play
/// higher profiles received under it too; the level is not binding.
pub(super) const H264_FMTP: &str = "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f";
/// Payload type proposed for H.264; the offer's own number wins in the answer.
const H264_PAYLOAD_TYPE: u8 = 102;
/// The H.265 format offered: Main profile, main tier, one RTP stream
/// (RFC 7798 §7.1). Chromium matches on profile and tier; the level is
/// left out, so any level the browser offers matches.
const H265_FMTP: &str = "profile-id=1;tier-flag=0;tx-mode=SRST";
/// Payload type proposed for H.265; the offer's own number wins.
const H265_PAYLOAD_TYPE: u8 = 49;
/// Scratch space for H.265 fragmentation units: packets are cut from one
/// buffer this size, so there is no allocation per packet.
const SCRATCH_BYTES: usize = 64 * 1024;
/// ICE connectivity-check pace. webrtc-rs' default (200 ms) delays the
/// relay's side of a new session by up to that much before DTLS can start
/// (measured: DTLS connected 150 ms after ICE, 15 ms at this pace).
const ICE_CHECK_INTERVAL: Duration = Duration::from_millis(20);
/// Checks per candidate pair: with the pace above, the same 1.4 s as the
/// default before a pair is given up.
const ICE_MAX_BINDING_REQUESTS: u16 = 70;

/// A parsed SDP offer, ready for [`Peer::answer`].
pub(super) struct Offer(RTCSessionDescription);

impl Offer {
    /// Parses an offer that passed [`super::offer::check_offer`]; the error
    /// is webrtc-rs' reason.
    pub(super) fn parse(sdp: &str) -> Result<Offer, String> {
        RTCSessionDescription::offer(sdp.to_owned()).map(Offer).map_err(|e| e.to_string())
    }
}

/// Why no answer could be built.
#[derive(Debug)]
pub(super) enum AnswerError {
    /// The relay failed (logged); the message is for the browser.
    Internal(String),
    /// The offer cannot be answered; the message names the fix.
    Refused(String),
}

/// A peer connection's state, as far as a session cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum PeerState {
    /// New or still connecting.
    Connecting,
    /// Media can flow.
    Connected,
    /// Lost; may come back within the disconnect grace.
    Disconnected,
    /// ICE or DTLS failed.
    Failed,
    /// Closed by either side.
    Closed,
}

impl From<RTCPeerConnectionState> for PeerState {
    fn from(state: RTCPeerConnectionState) -> Self {
        match state {
            RTCPeerConnectionState::Connected => PeerState::Connected,
            RTCPeerConnectionState::Disconnected => PeerState::Disconnected,
            RTCPeerConnectionState::Failed => PeerState::Failed,
            RTCPeerConnectionState::Closed => PeerState::Closed,
            _ => PeerState::Connecting,
        }
    }
}

/// Connection events the session cares about, turned into watch channels.
struct PeerEvents {
    state: watch::Sender<PeerState>,
    gathered: watch::Sender<bool>,
}

// Callbacks run on the connection's driver and must not block.
#[async_trait::async_trait]
impl PeerConnectionEventHandler for PeerEvents {
    async fn on_ice_gathering_state_change(&self, state: RTCIceGatheringState) {
        if state == RTCIceGatheringState::Complete {
            self.gathered.send_replace(true);
        }
    }

    async fn on_connection_state_change(&self, state: RTCPeerConnectionState) {
        self.state.send_replace(PeerState::from(state));
    }
}

/// Owns a peer connection and closes it when dropped: on the tokio runtime a
/// connection dropped without `close()` leaves its driver task and sockets
/// running, e.g. when a client hangs up while its POST is being answered.
struct ClosingPeer {
    pc: Arc<dyn PeerConnection>,
    closed: bool,
}

impl ClosingPeer {
    async fn close(&mut self) -> webrtc::error::Result<()> {
        self.closed = true;
        self.pc.close().await
    }
}

impl std::ops::Deref for ClosingPeer {
    type Target = dyn PeerConnection;

    fn deref(&self) -> &Self::Target {
        &*self.pc
    }
}

impl Drop for ClosingPeer {
    fn drop(&mut self) {
        if self.closed {
            return;
        }
        let pc = self.pc.clone();
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                let _ = pc.close().await;
            });
        }
    }
}

/// One browser's peer connection with its send-only video track.
pub(super) struct Peer {
    pc: ClosingPeer,
    track: Arc<TrackLocalStaticRTP>,
    packetizer: VideoPacketizer,
    /// The codec of the track.
    pub(super) codec: Codec,
    /// The connection's state, as the session task follows it.
    pub(super) states: watch::Receiver<PeerState>,
    /// The SDP answer, every host candidate in it.
    pub(super) answer_sdp: String,
    /// The media port leased for it (`whep.udp_ports`), given back when the
    /// session is over and its peer connection closed.
    pub(super) port: Option<PortLease>,
}

impl Peer {
    /// Builds a peer connection, applies the offer and returns once the
    /// answer (with every host candidate) is ready.
    pub(super) async fn answer(
        settings: &WhepSettings,
        udp_addrs: Vec<String>,
        camera: &str,
        offer: Offer,
        codec: Codec,
    ) -> Result<Peer, AnswerError> {
        let internal = |what: &str, e: &dyn std::fmt::Display| {
            warn!(camera = %camera, error = %e, "WHEP: {what}");
            AnswerError::Internal(format!(
                "camera `{camera}`: the relay could not {what} ({e}); see the relay log"
            ))
        };
        let (mime, fmtp, payload_type) = match codec {
            Codec::H264 => (MIME_TYPE_H264, H264_FMTP, H264_PAYLOAD_TYPE),
            Codec::H265 => (MIME_TYPE_HEVC, H265_FMTP, H265_PAYLOAD_TYPE),
        };
        let video = RTCRtpCodec {
            mime_type: mime.to_owned(),
            clock_rate: 90_000,
            channels: 0,
            sdp_fmtp_line: fmtp.to_owned(),
            rtcp_feedback: vec![],
        };
        let mut media = MediaEngine::default();
        media
            .register_codec(
                RTCRtpCodecParameters { rtp_codec: video.clone(), payload_type },
                RtpCodecKind::Video,
            )
            .map_err(|e| internal(&format!("register {}", codec.name()), &e))?;
        let registry = register_default_interceptors(Registry::new(), &mut media)
            .map_err(|e| internal("set up RTP interceptors", &e))?;
        let (state_tx, states) = watch::channel(PeerState::Connecting);
        let (gathered_tx, mut gathered) = watch::channel(false);
        let pc = PeerConnectionBuilder::new()
            .with_configuration(RTCConfigurationBuilder::new().build())
            .with_media_engine(media)
            .with_interceptor_registry(registry)
            .with_handler(Arc::new(PeerEvents { state: state_tx, gathered: gathered_tx }))
            .with_udp_addrs(udp_addrs)
            .with_setting_engine(
                webrtc::peer_connection::SettingEngineBuilder::new()
                    .with_ice_connection_attempts(Some(ICE_CHECK_INTERVAL), Some(ICE_MAX_BINDING_REQUESTS))
                    .build(),
            )
            .build()
            .await
            .map_err(|e| internal("create a peer connection", &e))?;
        // From here on, an early return (or a cancelled request) closes it.
        let pc = ClosingPeer { pc: Arc::new(pc), closed: false };

        let ssrc = rand::random::<u32>();
        let track = Arc::new(TrackLocalStaticRTP::new(MediaStreamTrack::new(
            "ponte".to_owned(),
            camera.to_owned(),
            camera.to_owned(),
            RtpCodecKind::Video,
            vec![RTCRtpEncodingParameters {
                rtp_coding_parameters: RTCRtpCodingParameters { ssrc: Some(ssrc), ..Default::default() },
                codec: video,
                ..Default::default()
            }],
        )));
        let sender = pc
            .add_track(Arc::clone(&track) as Arc<dyn TrackLocal>)
            .await
            .map_err(|e| internal("add the video track", &e))?;
        let refused = |what: &str, e: &dyn std::fmt::Display| {
            AnswerError::Refused(format!(
                "camera `{camera}`: {what} ({e}); offer a recvonly {} video transceiver",
                codec.name()
            ))
        };
        pc.set_remote_description(offer.0).await.map_err(|e| refused("the SDP offer was refused", &e))?;
        let answer = pc.create_answer(None).await.map_err(|e| refused("no answer fits the offer", &e))?;
        pc.set_local_description(answer).await.map_err(|e| internal("apply its answer", &e))?;
        let payload_type = negotiated(&sender, mime).await.ok_or_else(|| {
            let why = match codec {
                Codec::H264 => OfferError::NoH264.to_string(),
                Codec::H265 => {
                    "the browser's H.265 formats do not match Main profile (profile-id=1)".to_owned()
                }
            };
            AnswerError::Refused(format!("camera `{camera}`: {why}"))
        })?;
        // Non-trickle: the answer carries every candidate. Host
        // candidates are ready in milliseconds; the timeout only bounds
        // a misconfigured interface list.
        if timeout(settings.gather_timeout, gathered.wait_for(|done| *done)).await.is_err() {
            let waited = settings.gather_timeout;
            warn!(camera = %camera, "WHEP: ICE gathering incomplete after {waited:?}; answering with what it has");
        }
        let answer_sdp = pc
            .local_description()
            .await
            .map(|d| d.sdp)
            .ok_or_else(|| internal("produce an answer", &"no local description"))?;
        let packetizer = match codec {
            Codec::H264 => VideoPacketizer::H264(H264Packetizer::new(ssrc, payload_type, rand::random())),
            Codec::H265 => VideoPacketizer::H265(H265Packetizer::new(ssrc, payload_type, rand::random())),
        };
        Ok(Peer { pc, track, packetizer, codec, states, answer_sdp, port: None })
    }

    /// Packetizes one access unit with `timestamp` and writes it to the track.
    pub(super) async fn send(&mut self, access_unit: &Bytes, timestamp: u32) -> Result<(), String> {
        let packets = match &mut self.packetizer {
            VideoPacketizer::H264(p) => p.packetize(access_unit, timestamp),
            VideoPacketizer::H265(p) => p.packetize(access_unit, timestamp),
        };
        for packet in packets {
            self.track.write_rtp(packet).await.map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    /// Closes the peer connection (its driver task and sockets with it).
    pub(super) async fn close(&mut self) -> Result<(), String> {
        self.pc.close().await.map_err(|e| e.to_string())
    }
}

/// The payload type negotiated for `mime` on a sender, if any.
async fn negotiated(sender: &Arc<dyn RtpSender>, mime: &str) -> Option<u8> {
    let params = sender.get_parameters().await.ok()?;
    params
        .rtp_parameters
        .codecs
        .iter()
        .find(|c| c.rtp_codec.mime_type.eq_ignore_ascii_case(mime))
        .map(|c| c.payload_type)
}

/// The packetizer of the negotiated codec.
enum VideoPacketizer {
    H264(H264Packetizer),
    H265(H265Packetizer),
}

/// Splits H.265 access units into RTP packets (RFC 7798: single NAL unit
/// packets, fragmentation units beyond the MTU) with our own timestamps.
pub(super) struct H265Packetizer {
    packetizer: Packetizer,
    /// Fragmentation units need their 3-byte header in front of the NAL
    /// slice: packets are cut from this buffer, reallocated once it is
    /// used up (and still referenced by packets in flight).
    scratch: BytesMut,
}

impl H265Packetizer {
    pub(super) fn new(ssrc: u32, payload_type: u8, first_sequence: u16) -> Self {
        Self {
            packetizer: Packetizer::new(Codec::H265, payload_type, ssrc, first_sequence, DEFAULT_MTU),
            scratch: BytesMut::new(),
        }
    }

    pub(super) fn packetize(&mut self, access_unit: &Bytes, timestamp: u32) -> Vec<rtp::Packet> {
        let packets = self.packetizer.packetize(access_unit, timestamp);
        let mut out = Vec::with_capacity(packets.len());
        for p in packets {
            let payload = if p.prefix().is_empty() {
                // A whole NAL unit: the frame's own bytes.
                p.body.clone()
            } else {
                if self.scratch.capacity() < p.payload_len() {
                    self.scratch.reserve(SCRATCH_BYTES.max(p.payload_len()));
                }
                self.scratch.put_slice(p.prefix());
                self.scratch.put_slice(&p.body);
                self.scratch.split().freeze()
            };
            out.push(rtp::Packet {
                header: rtp::Header {
                    version: 2,
                    marker: p.marker,
                    payload_type: p.payload_type,
                    sequence_number: p.sequence,
                    timestamp: p.timestamp,
                    ssrc: p.ssrc,
                    ..Default::default()
                },
                payload,
            });
        }
        out
    }
}

/// Splits H.264 access units into RTP packets (RFC 6184 mode 1: single NAL,
/// STAP-A for SPS+PPS, FU-A beyond the MTU) with our own timestamps.
pub(super) struct H264Packetizer {
    payloader: H264Payloader,
    ssrc: u32,
    payload_type: u8,
    sequence: u16,
}

impl H264Packetizer {
    pub(super) fn new(ssrc: u32, payload_type: u8, first_sequence: u16) -> Self {
        Self { payloader: H264Payloader::default(), ssrc, payload_type, sequence: first_sequence }
    }

    pub(super) fn packetize(&mut self, access_unit: &Bytes, timestamp: u32) -> Vec<rtp::Packet> {
        let payloads = match self.payloader.payload(DEFAULT_MTU - HEADER_LEN, access_unit) {
            Ok(payloads) => payloads,
            Err(e) => {
                warn!(error = %e, "WHEP: dropping an H.264 access unit that cannot be packetized");
                return Vec::new();
            }
        };
        let last = payloads.len().saturating_sub(1);
        payloads
            .into_iter()
            .enumerate()
            .map(|(i, payload)| {
                let sequence_number = self.sequence;
                self.sequence = self.sequence.wrapping_add(1);
                rtp::Packet {
                    header: rtp::Header {
                        version: 2,
                        marker: i == last,
                        payload_type: self.payload_type,
                        sequence_number,
                        timestamp,
                        ssrc: self.ssrc,
                        ..Default::default()
                    },
                    payload,
                }
            })
            .collect()
    }
}
