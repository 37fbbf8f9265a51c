//! WHEP routes and sessions over real sockets, with a real WebRTC viewer
//! (webrtc-rs) on the other end.
//!
//! The fakes, the HTTP client and the viewer the tests share are here; the
//! tests are beside it, one file per concern.

mod accounts;
mod h265;
mod limits;
mod packetizer;
mod routes;
mod sessions;

use super::peer::H264_FMTP;
use super::*;
use crate::upstream::SubscribeFailure;
use crate::web::router;
use bytes::Bytes;
use futures_util::future::BoxFuture;
use ponte_proto::fixtures::{annex_b, idr, slice, PPS};
use ponte_proto::hub::{Hub, TrackKey, TrackReader, TrackWriter};
use ponte_proto::media::{Codec, CodecConfig, Frame};
use ponte_proto::wire::{CatalogEntry, SubscribeErrorCode};
use rtc::peer_connection::configuration::media_engine::MIME_TYPE_H264;
use rtc::rtp_transceiver::rtp_sender::{RTCRtpCodec, RTCRtpCodecParameters, RtpCodecKind};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;
use tokio::time::timeout;
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};
use webrtc::peer_connection::{
    register_default_interceptors, MediaEngine, PeerConnection, PeerConnectionBuilder,
    PeerConnectionEventHandler, RTCConfigurationBuilder, RTCIceGatheringState, RTCPeerConnectionState,
    Registry,
};
use webrtc::rtp_transceiver::{RTCRtpTransceiverDirection, RTCRtpTransceiverInit};

const SPS: &[u8] = &[0x67, 0x42, 0xe0, 0x1f, 0xda, 0x02, 0x80];

fn config(codec: Codec) -> Arc<CodecConfig> {
    Arc::new(CodecConfig {
        codec,
        width: 640,
        height: 360,
        parameter_sets: vec![Bytes::from_static(SPS), Bytes::from_static(PPS)],
    })
}

// ---- routes and sessions over real sockets ------------------------------

struct FakeSource {
    hub: Hub,
    catalog: Vec<CatalogEntry>,
    refusals: HashMap<String, SubscribeErrorCode>,
}

impl CameraSource for FakeSource {
    fn site(&self) -> String {
        "carabinieri-cremona".to_owned()
    }

    fn catalog(&self) -> Vec<CatalogEntry> {
        self.catalog.clone()
    }

    fn subscribe<'a>(
        &'a self,
        camera: &'a str,
        quality: Quality,
    ) -> BoxFuture<'a, Result<TrackReader, SubscribeFailure>> {
        Box::pin(async move {
            if let Some(code) = self.refusals.get(camera) {
                return Err(SubscribeFailure { code: *code, reason: String::new() });
            }
            self.hub.subscribe(&TrackKey::new(camera, quality)).ok_or_else(|| SubscribeFailure {
                code: SubscribeErrorCode::Unknown,
                reason: format!("camera `{camera}` is not in the catalog"),
            })
        })
    }
}

fn entry(id: &str, codec: Codec) -> CatalogEntry {
    CatalogEntry {
        id: id.to_owned(),
        device: id.to_owned(),
        lens: 1,
        name: format!("Piazza {id}"),
        zone: "Centro".to_owned(),
        kind: "dome".to_owned(),
        codec,
        qualities: vec![Quality::Main, Quality::Sub],
        ptz: false,
        always_on: false,
        sub_codec: None,
        sub_transcoded: false,
        tags: Vec::new(),
        dual_path: false,
    }
}

fn test_settings() -> WhepSettings {
    WhepSettings {
        udp_addrs: vec!["127.0.0.1:0".to_owned()],
        udp_ports: None,
        max_sessions: 4,
        max_per_camera: 3,
        offers_per_minute: 0,
        first_frame_timeout: Duration::from_millis(500),
        gather_timeout: Duration::from_secs(2),
        connect_timeout: Duration::from_secs(10),
        disconnect_grace: Duration::from_secs(1),
        max_per_viewer: 8,
        rtsp_port: None,
    }
}

async fn serve(source: FakeSource, settings: WhepSettings) -> (SocketAddr, Arc<WhepState>) {
    let state = Arc::new(WhepState::with_source(Arc::new(source), settings));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    // As the relay serves it: with the client's address (rate limits).
    let app = router(state.clone()).into_make_service_with_connect_info::<SocketAddr>();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (addr, state)
}

struct Reply {
    status: u16,
    headers: HashMap<String, String>,
    body: String,
}

/// Minimal HTTP/1.1 client: one request per connection.
async fn http(addr: SocketAddr, method: &str, path: &str, content_type: Option<&str>, body: &[u8]) -> Reply {
    let headers: Vec<(&str, &str)> = content_type.map(|ct| ("Content-Type", ct)).into_iter().collect();
    http_with(addr, method, path, &headers, body).await
}

/// [`http`] with any request headers.
async fn http_with(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Reply {
    let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        req.push_str(&format!("{name}: {value}\r\n"));
    }
    req.push_str("\r\n");
    conn.write_all(req.as_bytes()).await.unwrap();
    conn.write_all(body).await.unwrap();
    let mut raw = Vec::new();
    conn.read_to_end(&mut raw).await.unwrap();
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let mut lines = head.lines();
    let status = lines.next().unwrap().split(' ').nth(1).unwrap().parse().unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    Reply { status, headers, body: body.to_owned() }
}

fn fake(catalog: Vec<CatalogEntry>) -> FakeSource {
    FakeSource { hub: Hub::new(), catalog, refusals: HashMap::new() }
}

// ---- a real WebRTC viewer (webrtc-rs) against the endpoint ---------------

/// Publishes a synthetic H.264-shaped track: 30 fps, a keyframe every 10.
fn publish(hub: &Hub, camera: &str) -> TrackWriter {
    let writer = hub.publish(TrackKey::new(camera, Quality::Main));
    writer.set_config(config(Codec::H264));
    writer
}

fn push_frame(writer: &TrackWriter, n: u64) {
    let keyframe = n.is_multiple_of(10);
    let payload = if keyframe { annex_b(&[SPS, PPS, &idr(3000)]) } else { annex_b(&[&slice(300)]) };
    writer.push(Frame { pts: n * 3000, keyframe, payload });
}

#[derive(Default)]
struct Received {
    packets: AtomicU64,
    frames: AtomicU64,
    bytes: AtomicU64,
    payload_type: AtomicU64,
}

struct Viewer {
    gathered: watch::Sender<bool>,
    state: watch::Sender<RTCPeerConnectionState>,
    received: Arc<Received>,
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for Viewer {
    async fn on_ice_gathering_state_change(&self, state: RTCIceGatheringState) {
        if state == RTCIceGatheringState::Complete {
            self.gathered.send_replace(true);
        }
    }

    async fn on_connection_state_change(&self, state: RTCPeerConnectionState) {
        self.state.send_replace(state);
    }

    async fn on_track(&self, track: Arc<dyn TrackRemote>) {
        let received = self.received.clone();
        tokio::spawn(async move {
            while let Some(event) = track.poll().await {
                if let TrackRemoteEvent::OnRtpPacket(packet) = event {
                    received.packets.fetch_add(1, Ordering::Relaxed);
                    received.bytes.fetch_add(packet.payload.len() as u64, Ordering::Relaxed);
                    received.payload_type.store(packet.header.payload_type.into(), Ordering::Relaxed);
                    if packet.header.marker {
                        received.frames.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        });
    }
}

/// A viewer's peer connection, its offer, its state and what it received.
type TestViewer = (Arc<dyn PeerConnection>, String, watch::Receiver<RTCPeerConnectionState>, Arc<Received>);

/// A recvonly H.264 viewer that offers payload type 109, not the relay's 102.
async fn viewer() -> TestViewer {
    viewer_offering(&[(MIME_TYPE_H264, H264_FMTP, 109)]).await
}

/// A recvonly viewer offering these (MIME type, fmtp, payload type).
async fn viewer_offering(codecs: &[(&str, &str, u8)]) -> TestViewer {
    let mut media = MediaEngine::default();
    for &(mime, fmtp, payload_type) in codecs {
        media
            .register_codec(
                RTCRtpCodecParameters {
                    rtp_codec: RTCRtpCodec {
                        mime_type: mime.to_owned(),
                        clock_rate: 90_000,
                        channels: 0,
                        sdp_fmtp_line: fmtp.to_owned(),
                        rtcp_feedback: vec![],
                    },
                    payload_type,
                },
                RtpCodecKind::Video,
            )
            .unwrap();
    }
    let registry = register_default_interceptors(Registry::new(), &mut media).unwrap();
    let (gathered_tx, mut gathered) = watch::channel(false);
    let (state_tx, states) = watch::channel(RTCPeerConnectionState::New);
    let received = Arc::new(Received::default());
    let pc = PeerConnectionBuilder::new()
        .with_configuration(RTCConfigurationBuilder::new().build())
        .with_media_engine(media)
        .with_interceptor_registry(registry)
        .with_handler(Arc::new(Viewer { gathered: gathered_tx, state: state_tx, received: received.clone() }))
        .with_udp_addrs(vec!["127.0.0.1:0".to_owned()])
        .build()
        .await
        .unwrap();
    let pc: Arc<dyn PeerConnection> = Arc::new(pc);
    pc.add_transceiver_from_kind(
        RtpCodecKind::Video,
        Some(RTCRtpTransceiverInit { direction: RTCRtpTransceiverDirection::Recvonly, ..Default::default() }),
    )
    .await
    .unwrap();
    let offer = pc.create_offer(None).await.unwrap();
    pc.set_local_description(offer).await.unwrap();
    timeout(Duration::from_secs(5), gathered.wait_for(|g| *g)).await.unwrap().unwrap();
    let sdp = pc.local_description().await.unwrap().sdp;
    (pc, sdp, states, received)
}

async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
