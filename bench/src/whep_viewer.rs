//! A headless WHEP viewer that does not decode: a recvonly webrtc-rs peer
//! connection that POSTs its offer to the relay's `/whep/{camera}`, applies
//! the answer and counts the RTP packets and payload bytes of the remote
//! track. It costs the bench SRTP and RTP handling only, so a viewer count
//! measures the relay's cost per viewer rather than a browser's decoder.

use anyhow::{bail, Context, Result};
use ponte_tests::http_request;
use rtc::peer_connection::configuration::media_engine::MIME_TYPE_H264;
use rtc::rtp_transceiver::rtp_sender::{RTCRtpCodec, RTCRtpCodecParameters, RtpCodecKind};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};
use webrtc::peer_connection::{
    register_default_interceptors, MediaEngine, PeerConnection, PeerConnectionBuilder,
    PeerConnectionEventHandler, RTCConfigurationBuilder, RTCIceGatheringState, RTCPeerConnectionState,
    RTCSessionDescription, Registry,
};
use webrtc::rtp_transceiver::{RTCRtpTransceiverDirection, RTCRtpTransceiverInit};

/// The H.264 format Chromium offers; the relay answers H.264 with packetization mode 1 only.
pub const H264_FMTP: &str = "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f";
/// The payload type offered for it.
pub const H264_PAYLOAD_TYPE: u8 = 102;
/// Longest wait for host candidates, for the answer, for the first packet.
const GATHER: Duration = Duration::from_secs(2);
const ANSWER: Duration = Duration::from_secs(20);
const FIRST_PACKET: Duration = Duration::from_secs(20);

/// Packets and payload bytes a viewer received.
#[derive(Debug, Default)]
pub struct Meter {
    /// RTP packets.
    pub packets: AtomicU64,
    /// RTP payload bytes (the H.264 stream, as packetized).
    pub bytes: AtomicU64,
    /// The peer connection's last state, for a report on a viewer that fell short.
    pub state: std::sync::Mutex<String>,
}

struct Events {
    gathered: watch::Sender<bool>,
    meter: Arc<Meter>,
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for Events {
    async fn on_ice_gathering_state_change(&self, state: RTCIceGatheringState) {
        if state == RTCIceGatheringState::Complete {
            self.gathered.send_replace(true);
        }
    }

    async fn on_connection_state_change(&self, state: RTCPeerConnectionState) {
        *self.meter.state.lock().unwrap_or_else(|e| e.into_inner()) = state.to_string();
    }

    async fn on_track(&self, track: Arc<dyn TrackRemote>) {
        let meter = self.meter.clone();
        // Callbacks run on the connection's driver: read elsewhere.
        tokio::spawn(async move {
            while let Some(event) = track.poll().await {
                if let TrackRemoteEvent::OnRtpPacket(p) = event {
                    meter.packets.fetch_add(1, Ordering::Relaxed);
                    meter.bytes.fetch_add(p.payload.len() as u64, Ordering::Relaxed);
                }
            }
        });
    }
}

/// One viewer of one camera.
pub struct WhepViewer {
    pc: Arc<dyn PeerConnection>,
    /// What it received.
    pub meter: Arc<Meter>,
    /// The session's URL (`Location`), for the DELETE at the end.
    resource: Option<String>,
    gathered: watch::Receiver<bool>,
}

impl WhepViewer {
    /// Connects to `camera`'s `quality` on the relay at `base` and waits for
    /// the first RTP packet.
    pub async fn connect(base: &str, camera: &str, quality: &str) -> Result<WhepViewer> {
        let mut viewer = WhepViewer::build().await?;
        match viewer.negotiate(base, camera, quality).await {
            Ok(()) => Ok(viewer),
            Err(e) => {
                viewer.close().await;
                Err(e)
            }
        }
    }

    /// A recvonly peer connection with one H.264 video transceiver, on the
    /// current tokio runtime (its driver tasks run there).
    pub async fn build() -> Result<WhepViewer> {
        let mut media = MediaEngine::default();
        media.register_codec(
            RTCRtpCodecParameters {
                rtp_codec: RTCRtpCodec {
                    mime_type: MIME_TYPE_H264.to_owned(),
                    clock_rate: 90_000,
                    channels: 0,
                    sdp_fmtp_line: H264_FMTP.to_owned(),
                    rtcp_feedback: vec![],
                },
                payload_type: H264_PAYLOAD_TYPE,
            },
            RtpCodecKind::Video,
        )?;
        let registry = register_default_interceptors(Registry::new(), &mut media)?;
        let (gathered_tx, gathered) = watch::channel(false);
        let meter = Arc::new(Meter::default());
        let pc = PeerConnectionBuilder::new()
            .with_configuration(RTCConfigurationBuilder::new().build())
            .with_media_engine(media)
            .with_interceptor_registry(registry)
            .with_handler(Arc::new(Events { gathered: gathered_tx, meter: meter.clone() }))
            .with_udp_addrs(vec!["127.0.0.1:0".to_owned()])
            .build()
            .await
            .context("creating a webrtc-rs peer connection")?;
        Ok(WhepViewer { pc: Arc::new(pc), meter, resource: None, gathered })
    }

    /// The offer, with every host candidate (non-trickle, as the relay answers).
    pub async fn offer(&mut self) -> Result<String> {
        let pc = &self.pc;
        pc.add_transceiver_from_kind(
            RtpCodecKind::Video,
            Some(RTCRtpTransceiverInit {
                direction: RTCRtpTransceiverDirection::Recvonly,
                ..Default::default()
            }),
        )
        .await?;
        let offer = pc.create_offer(None).await?;
        pc.set_local_description(offer).await?;
        let _ = tokio::time::timeout(GATHER, self.gathered.wait_for(|g| *g)).await;
        Ok(pc.local_description().await.context("no local description")?.sdp)
    }

    /// Applies the answer and waits for the first RTP packet.
    pub async fn answered(&self, sdp: String, what: &str) -> Result<()> {
        let answer = RTCSessionDescription::answer(sdp).context("the answer does not parse")?;
        self.pc.set_remote_description(answer).await?;
        let waited = tokio::time::Instant::now();
        while self.meter.packets.load(Ordering::Relaxed) == 0 {
            if waited.elapsed() > FIRST_PACKET {
                bail!("{what}: no RTP packet within {FIRST_PACKET:?} of the answer");
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok(())
    }

    async fn negotiate(&mut self, base: &str, camera: &str, quality: &str) -> Result<()> {
        let sdp = self.offer().await?;
        let url = format!("{base}/whep/{camera}?quality={quality}");
        let r = http_request("POST", &url, &[("Content-Type", "application/sdp")], sdp.as_bytes(), ANSWER)
            .await?;
        if r.status != 201 && r.status != 200 {
            bail!("camera `{camera}`: WHEP offer answered HTTP {}: {:.300}", r.status, r.text());
        }
        self.resource =
            r.header("location").map(
                |l| {
                    if l.starts_with("http") {
                        l.to_owned()
                    } else {
                        format!("{base}{l}")
                    }
                },
            );
        self.answered(r.text(), &format!("camera `{camera}`")).await
    }

    /// Ends the session (WHEP DELETE) and closes the peer connection.
    pub async fn close(&mut self) {
        if let Some(url) = self.resource.take() {
            let _ = http_request("DELETE", &url, &[], &[], Duration::from_secs(5)).await;
        }
        let _ = self.pc.close().await;
    }
}
