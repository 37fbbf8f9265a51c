//! WHEP routes and sessions over real sockets, with a real WebRTC viewer
//! (webrtc-rs) on the other end.

use super::offer::tests::CHROME_OFFER;
use super::peer::{H264Packetizer, HandlerFuture, H264_FMTP};
use super::*;
use crate::upstream::SubscribeFailure;
use crate::web::router;
use bytes::Bytes;
use futures_util::future::BoxFuture;
use ponte_proto::fixtures::{annex_b, idr, slice, PPS};
use ponte_proto::hub::{Hub, TrackKey, TrackReader, TrackWriter};
use ponte_proto::media::{Codec, CodecConfig, Frame};
use ponte_proto::rtp::{DEFAULT_MTU, HEADER_LEN};
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
    RTCSessionDescription, Registry,
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

#[test]
fn packetizer_marks_frames_and_fragments_beyond_the_mtu() {
    let mut p = H264Packetizer::new(0xdead_beef, 109, u16::MAX);
    let packets = p.packetize(&annex_b(&[SPS, PPS, &idr(4000)]), 1234);
    // STAP-A (SPS+PPS), then FU-A fragments of the IDR.
    assert!(packets.len() >= 5, "{} packets", packets.len());
    assert_eq!(packets[0].payload[0] & 0x1f, 24);
    assert!(packets[1..].iter().all(|pk| pk.payload[0] & 0x1f == 28));
    assert!(packets.iter().all(|pk| pk.payload.len() + HEADER_LEN <= DEFAULT_MTU));
    assert!(packets.iter().all(|pk| pk.header.timestamp == 1234
        && pk.header.ssrc == 0xdead_beef
        && pk.header.payload_type == 109));
    let markers: Vec<bool> = packets.iter().map(|pk| pk.header.marker).collect();
    assert_eq!(markers.iter().filter(|m| **m).count(), 1);
    assert_eq!(markers.last(), Some(&true));
    assert_eq!(packets[0].header.sequence_number, u16::MAX);
    assert_eq!(packets[1].header.sequence_number, 0);
    let next = p.packetize(&annex_b(&[&slice(100)]), 7234);
    assert_eq!(next.len(), 1);
    assert!(next[0].header.marker);
    assert_eq!(next[0].header.sequence_number, packets.len() as u16 - 1);
    assert!(p.packetize(&Bytes::new(), 1).is_empty());
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

#[tokio::test]
async fn offer_errors_are_one_line_naming_the_camera() {
    let mut source = fake(vec![entry("duomo", Codec::H264), entry("porta-po", Codec::H265)]);
    source.refusals.insert("caserma".to_owned(), SubscribeErrorCode::Forbidden);
    source.refusals.insert("stazione".to_owned(), SubscribeErrorCode::Offline);
    source.refusals.insert("ponte-po".to_owned(), SubscribeErrorCode::OverBudget);
    // Published but silent.
    let _silent = publish(&source.hub, "torrazzo");
    // The catalog says H.264 (main), but the stream itself is H.265.
    let hevc = source.hub.publish(TrackKey::new("duomo", Quality::Sub));
    hevc.set_config(config(Codec::H265));
    hevc.push(Frame { pts: 0, keyframe: true, payload: Bytes::from_static(&[0, 0, 1, 0x26, 1]) });
    let (addr, _) = serve(source, test_settings()).await;
    let sdp = Some("application/sdp");
    let offer = CHROME_OFFER.as_bytes();
    // (path, content type, body, status, text the one-line body must contain)
    type Case<'a> = (&'a str, Option<&'a str>, &'a [u8], u16, &'a str);
    let cases: &[Case] = &[
        ("/whep/duomo", Some("text/plain"), offer, 415, "Content-Type: application/sdp"),
        ("/whep/duomo", None, offer, 415, "Content-Type: application/sdp"),
        ("/whep/duomo", sdp, b"not sdp at all", 400, "v=0"),
        ("/whep/duomo", sdp, &[0xff, 0xfe, 0x00], 400, "UTF-8"),
        ("/whep/duomo?quality=ultra", sdp, offer, 400, "unknown quality"),
        ("/whep/nowhere", sdp, offer, 404, "not in the catalog"),
        ("/whep/caserma", sdp, offer, 403, "not allowed"),
        ("/whep/stazione", sdp, offer, 503, "offline"),
        ("/whep/ponte-po", sdp, offer, 503, "link budget"),
        (
            "/whep/porta-po",
            sdp,
            offer,
            415,
            "is H.265: browsers cannot play it over WebRTC here; use the substream",
        ),
        ("/whep/duomo?quality=sub", sdp, offer, 415, "is H.265: browsers cannot play it"),
        ("/whep/torrazzo", Some("application/sdp; charset=utf-8"), offer, 504, "no video within 0.5 s"),
    ];
    for (path, ct, body, status, needle) in cases {
        let reply = http(addr, "POST", path, *ct, body).await;
        assert_eq!(reply.status, *status, "{path}: {}", reply.body);
        assert!(reply.body.contains(needle), "{path}: {}", reply.body);
        let camera = path.trim_start_matches("/whep/").split('?').next().unwrap();
        assert!(reply.body.contains(camera), "{path}: {}", reply.body);
        assert_eq!(reply.body.trim_end().lines().count(), 1, "{path}: {}", reply.body);
        assert!(reply.headers["content-type"].starts_with("text/plain"));
    }
    let huge = vec![b'a'; MAX_OFFER_BYTES + 1];
    assert_eq!(http(addr, "POST", "/whep/duomo", sdp, &huge).await.status, 413);
    let reply = http(addr, "DELETE", "/whep/session/0123abcd", None, b"").await;
    assert_eq!(reply.status, 404);
    assert!(reply.body.contains("0123abcd"));
}

#[tokio::test]
async fn catalog_and_page_name_the_site() {
    let (addr, _) = serve(fake(vec![entry("duomo", Codec::H264)]), test_settings()).await;
    let reply = http(addr, "GET", "/api/catalog", None, b"").await;
    assert_eq!(reply.status, 200);
    let json: serde_json::Value = serde_json::from_str(&reply.body).unwrap();
    assert_eq!(json["site"], "carabinieri-cremona");
    assert_eq!(json["cameras"][0]["id"], "duomo");
    assert_eq!(json["cameras"][0]["codec"], "h264");
    let page = http(addr, "GET", "/", None, b"").await;
    assert_eq!(page.status, 200);
    assert!(page.headers["content-type"].starts_with("text/html"));
    assert!(page.body.contains("<title>ponte viewer — carabinieri-cremona</title>"));
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

impl PeerConnectionEventHandler for Viewer {
    fn on_ice_gathering_state_change<'life0, 'async_trait>(
        &'life0 self,
        state: RTCIceGatheringState,
    ) -> HandlerFuture<'async_trait>
    where
        'life0: 'async_trait,
        Self: 'async_trait,
    {
        if state == RTCIceGatheringState::Complete {
            self.gathered.send_replace(true);
        }
        Box::pin(std::future::ready(()))
    }

    fn on_connection_state_change<'life0, 'async_trait>(
        &'life0 self,
        state: RTCPeerConnectionState,
    ) -> HandlerFuture<'async_trait>
    where
        'life0: 'async_trait,
        Self: 'async_trait,
    {
        self.state.send_replace(state);
        Box::pin(std::future::ready(()))
    }

    fn on_track<'life0, 'async_trait>(
        &'life0 self,
        track: Arc<dyn TrackRemote>,
    ) -> HandlerFuture<'async_trait>
    where
        'life0: 'async_trait,
        Self: 'async_trait,
    {
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
        Box::pin(std::future::ready(()))
    }
}

/// A recvonly H.264 viewer that offers payload type 109, not the relay's 102.
async fn viewer() -> (Arc<dyn PeerConnection>, String, watch::Receiver<RTCPeerConnectionState>, Arc<Received>)
{
    let mut media = MediaEngine::default();
    media
        .register_codec(
            RTCRtpCodecParameters {
                rtp_codec: RTCRtpCodec {
                    mime_type: MIME_TYPE_H264.to_owned(),
                    clock_rate: 90_000,
                    channels: 0,
                    sdp_fmtp_line: H264_FMTP.to_owned(),
                    rtcp_feedback: vec![],
                },
                payload_type: 109,
            },
            RtpCodecKind::Video,
        )
        .unwrap();
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn viewer_receives_h264_and_delete_unsubscribes() {
    let source = fake(vec![entry("duomo", Codec::H264)]);
    let writer = publish(&source.hub, "duomo");
    let subscribers = writer.subscribers();
    // A GOP in the cache before anyone watches.
    for n in 0..5 {
        push_frame(&writer, n);
    }
    let (addr, state) = serve(source, test_settings()).await;
    let producer = tokio::spawn(async move {
        let mut n = 5;
        let mut tick = tokio::time::interval(Duration::from_millis(33));
        loop {
            tick.tick().await;
            push_frame(&writer, n);
            n += 1;
        }
    });

    let (pc, offer, _states, received) = viewer().await;
    assert_eq!(check_offer(&offer), Ok(()), "webrtc-rs offer: {offer}");
    let reply = http(addr, "POST", "/whep/duomo", Some("application/sdp"), offer.as_bytes()).await;
    assert_eq!(reply.status, 201, "{}", reply.body);
    assert_eq!(reply.headers["content-type"], "application/sdp");
    let location = reply.headers["location"].clone();
    assert!(location.starts_with("/whep/session/"), "{location}");
    assert!(reply.body.contains("a=candidate:"), "non-trickle answer: {}", reply.body);
    assert!(reply.body.contains("a=sendonly"), "{}", reply.body);
    assert_eq!(state.sessions().len(), 1);
    assert_eq!(state.sessions()[0].camera, "duomo");
    assert_eq!(*subscribers.borrow(), 1);

    pc.set_remote_description(RTCSessionDescription::answer(reply.body).unwrap()).await.unwrap();
    eventually("20 frames", || received.frames.load(Ordering::Relaxed) >= 20).await;
    assert_eq!(received.payload_type.load(Ordering::Relaxed), 109);
    assert!(received.bytes.load(Ordering::Relaxed) > 20 * 300);

    let reply = http(addr, "DELETE", &location, None, b"").await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    eventually("the reader to be dropped", || *subscribers.borrow() == 0).await;
    assert_eq!(state.sessions().len(), 0);
    assert_eq!(http(addr, "DELETE", &location, None, b"").await.status, 404);
    // The permit comes back once the peer connection is closed: the
    // limit counts live sessions only.
    eventually("the permit to come back", || state.slots.available_permits() == 4).await;
    producer.abort();
    let _ = pc.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn media_goes_through_a_leased_port_of_the_configured_range() {
    let source = fake(vec![entry("duomo", Codec::H264)]);
    let writer = publish(&source.hub, "duomo");
    for n in 0..5 {
        push_frame(&writer, n);
    }
    // One port: a range the firewall would open, free on this machine.
    let port = std::net::UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let settings = WhepSettings { udp_ports: Some(PortRange { low: port, high: port }), ..test_settings() };
    let (addr, state) = serve(source, settings).await;
    let producer = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(33));
        for n in 5.. {
            tick.tick().await;
            push_frame(&writer, n);
        }
    });
    let candidate_ports = |sdp: &str| -> Vec<u16> {
        sdp.lines()
            .filter(|l| l.starts_with("a=candidate:"))
            .filter_map(|l| l.split_whitespace().nth(5)?.parse().ok())
            .collect()
    };

    let (pc, offer, _, received) = viewer().await;
    let reply = http(addr, "POST", "/whep/duomo", Some("application/sdp"), offer.as_bytes()).await;
    assert_eq!(reply.status, 201, "{}", reply.body);
    let ports = candidate_ports(&reply.body);
    assert!(!ports.is_empty() && ports.iter().all(|p| *p == port), "{ports:?} in {}", reply.body);
    let location = reply.headers["location"].clone();
    pc.set_remote_description(RTCSessionDescription::answer(reply.body).unwrap()).await.unwrap();
    eventually("10 frames through the leased port", || received.frames.load(Ordering::Relaxed) >= 10).await;

    // The range is used up: the next viewer is told which key to widen.
    let (pc2, offer2, _, _) = viewer().await;
    let refused = http(addr, "POST", "/whep/duomo", Some("application/sdp"), offer2.as_bytes()).await;
    assert_eq!(refused.status, 503, "{}", refused.body);
    assert!(refused.body.contains("`whep.udp_ports`"), "{}", refused.body);
    assert_eq!(state.refusals().get("whep.udp_ports"), Some(&1));

    // The session ends: its port comes back for the next viewer.
    assert_eq!(http(addr, "DELETE", &location, None, b"").await.status, 200);
    let pool = state.ports.clone().unwrap();
    eventually("the port to come back", || pool.in_use() == 0).await;
    let (pc3, offer3, _, received3) = viewer().await;
    let reply = http(addr, "POST", "/whep/duomo", Some("application/sdp"), offer3.as_bytes()).await;
    assert_eq!(reply.status, 201, "{}", reply.body);
    assert!(candidate_ports(&reply.body).iter().all(|p| *p == port));
    pc3.set_remote_description(RTCSessionDescription::answer(reply.body).unwrap()).await.unwrap();
    eventually("frames for the next viewer", || received3.frames.load(Ordering::Relaxed) >= 5).await;
    producer.abort();
    for pc in [pc, pc2, pc3] {
        let _ = pc.close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_ends_when_the_track_ends_or_the_viewer_leaves() {
    let source = fake(vec![entry("duomo", Codec::H264), entry("torrazzo", Codec::H264)]);
    let duomo = publish(&source.hub, "duomo");
    let torrazzo = publish(&source.hub, "torrazzo");
    for n in 0..3 {
        push_frame(&duomo, n);
        push_frame(&torrazzo, n);
    }
    let torrazzo_subscribers = torrazzo.subscribers();
    let (addr, state) = serve(source, test_settings()).await;

    // The track ends: the session goes away by itself.
    let (pc1, offer, _, received1) = viewer().await;
    let reply = http(addr, "POST", "/whep/duomo", Some("application/sdp"), offer.as_bytes()).await;
    assert_eq!(reply.status, 201, "{}", reply.body);
    pc1.set_remote_description(RTCSessionDescription::answer(reply.body).unwrap()).await.unwrap();
    eventually("the cached frames", || received1.frames.load(Ordering::Relaxed) >= 3).await;
    drop(duomo);
    eventually("the session to end", || state.sessions().is_empty()).await;

    // The viewer goes away without DELETE: the session notices and unsubscribes.
    let (pc2, offer, _, received2) = viewer().await;
    let reply = http(addr, "POST", "/whep/torrazzo", Some("application/sdp"), offer.as_bytes()).await;
    assert_eq!(reply.status, 201, "{}", reply.body);
    pc2.set_remote_description(RTCSessionDescription::answer(reply.body).unwrap()).await.unwrap();
    eventually("the cached frames", || received2.frames.load(Ordering::Relaxed) >= 3).await;
    assert_eq!(*torrazzo_subscribers.borrow(), 1);
    pc2.close().await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(40);
    while *torrazzo_subscribers.borrow() != 0 {
        assert!(Instant::now() < deadline, "session outlived its viewer");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(state.sessions().len(), 0);
    let _ = pc1.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_beyond_the_limit_are_refused() {
    let source = fake(vec![entry("duomo", Codec::H264)]);
    let writer = publish(&source.hub, "duomo");
    push_frame(&writer, 0);
    let settings = WhepSettings { max_sessions: 1, ..test_settings() };
    let (addr, state) = serve(source, settings).await;
    let (pc1, offer1, _, _) = viewer().await;
    let (pc2, offer2, _, _) = viewer().await;
    let first = http(addr, "POST", "/whep/duomo", Some("application/sdp"), offer1.as_bytes()).await;
    assert_eq!(first.status, 201, "{}", first.body);
    let second = http(addr, "POST", "/whep/duomo", Some("application/sdp"), offer2.as_bytes()).await;
    assert_eq!(second.status, 503, "{}", second.body);
    assert!(second.body.contains("limit"), "{}", second.body);
    assert_eq!(state.sessions().len(), 1);
    let _ = pc1.close().await;
    let _ = pc2.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn viewers_per_camera_are_limited_and_counted() {
    let source = fake(vec![entry("duomo", Codec::H264), entry("po", Codec::H264)]);
    let duomo = publish(&source.hub, "duomo");
    let po = publish(&source.hub, "po");
    push_frame(&duomo, 0);
    push_frame(&po, 0);
    let settings = WhepSettings { max_per_camera: 1, ..test_settings() };
    let (addr, state) = serve(source, settings).await;
    let (pc1, offer1, _, _) = viewer().await;
    let (pc2, offer2, _, _) = viewer().await;
    let (pc3, offer3, _, _) = viewer().await;
    let first = http(addr, "POST", "/whep/duomo", Some("application/sdp"), offer1.as_bytes()).await;
    assert_eq!(first.status, 201, "{}", first.body);
    let second = http(addr, "POST", "/whep/duomo", Some("application/sdp"), offer2.as_bytes()).await;
    assert_eq!(second.status, 503, "{}", second.body);
    assert!(second.body.contains("`whep.max_per_camera`"), "names the key: {}", second.body);
    let other = http(addr, "POST", "/whep/po", Some("application/sdp"), offer3.as_bytes()).await;
    assert_eq!(other.status, 201, "another camera is not limited: {}", other.body);
    assert_eq!(state.refusals().get("whep.max_per_camera"), Some(&1));
    for pc in [pc1, pc2, pc3] {
        let _ = pc.close().await;
    }
}

#[tokio::test]
async fn offers_per_client_per_minute_are_limited_with_429() {
    let source = fake(vec![entry("duomo", Codec::H264)]);
    let settings = WhepSettings { offers_per_minute: 2, ..test_settings() };
    let (addr, state) = serve(source, settings).await;
    let mut statuses = Vec::new();
    for _ in 0..4 {
        statuses.push(http(addr, "POST", "/whep/duomo", Some("application/sdp"), b"not sdp").await);
    }
    let codes: Vec<u16> = statuses.iter().map(|r| r.status).collect();
    assert_eq!(codes, [400, 400, 429, 429], "two offers a minute, then 429");
    assert!(statuses[2].body.contains("`whep.offers_per_minute`"), "{}", statuses[2].body);
    assert_eq!(state.refusals().get("whep.offers_per_minute"), Some(&2));
}

// ---- local accounts ------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accounts_narrow_the_catalog_and_guard_every_route() {
    use crate::auth::{Accounts, AuthSettings, TokenConfig, ViewerConfig};
    let mut zaist = entry("zaist", Codec::H264);
    zaist.zone = "Zaist".into();
    let source = fake(vec![entry("duomo", Codec::H264), zaist]);
    let writer = publish(&source.hub, "duomo");
    for n in 0..5 {
        push_frame(&writer, n);
    }
    let (token, token_sha256) = crate::auth::new_token();
    let accounts = Accounts::from_config(
        &[ViewerConfig {
            user: "anna".into(),
            password_hash: crate::auth::hash_password("correct horse").unwrap(),
            cameras: Some(vec!["zone:centro".into()]),
            max_quality: None,
            rtsp_digest_ha1: None,
            ptz: false,
        }],
        &[TokenConfig {
            name: "vms".into(),
            token_sha256,
            cameras: Some(vec!["camera:duomo".into(), "camera:zaist".into()]),
            max_quality: Some(Quality::Sub),
            ptz: false,
        }],
    )
    .unwrap();
    let dir = std::env::temp_dir().join(format!("ponte-whep-accounts-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let audit_path = dir.join("relay-audit.log");
    let audit = Arc::new(RelayAudit::open(&audit_path, "carabinieri-cremona", 1 << 20).unwrap());
    let settings = AuthSettings { failed_login_delay: Duration::from_millis(10), ..AuthSettings::default() };
    let auth = Arc::new(Auth::new(accounts, audit.clone(), settings));
    let state = Arc::new(WhepState::with_source(Arc::new(source), test_settings()).with_access(auth, audit));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = router(state.clone()).into_make_service_with_connect_info::<SocketAddr>();
    tokio::spawn(async move { axum::serve(listener, app).await });
    let sdp = ("Content-Type", "application/sdp");
    let offer = CHROME_OFFER.as_bytes();

    // Nobody: the page (with its form) but nothing else.
    assert_eq!(http(addr, "GET", "/", None, b"").await.status, 200);
    let reply = http(addr, "GET", "/api/catalog", None, b"").await;
    assert_eq!(reply.status, 401, "{}", reply.body);
    assert!(reply.headers["www-authenticate"].starts_with("Bearer"));
    assert_eq!(http_with(addr, "POST", "/whep/duomo", &[sdp], offer).await.status, 401);
    assert_eq!(http(addr, "DELETE", "/whep/session/0123", None, b"").await.status, 401);
    let bogus = ("Cookie", "ponte_session=00ff");
    let reply = http_with(addr, "GET", "/api/catalog", &[bogus], b"").await;
    assert_eq!(reply.status, 401);
    assert!(reply.body.contains("log in again"), "{}", reply.body);

    // Login through the form.
    let form = ("Content-Type", "application/x-www-form-urlencoded");
    let reply = http_with(addr, "POST", "/login", &[form], b"user=anna&password=wrong").await;
    assert_eq!(reply.status, 401, "{}", reply.body);
    assert!(!reply.headers.contains_key("set-cookie"));
    let reply = http_with(addr, "POST", "/login", &[form], b"user=anna&password=correct+horse").await;
    assert_eq!(reply.status, 204, "{}", reply.body);
    let set_cookie = reply.headers["set-cookie"].clone();
    for attr in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(set_cookie.contains(attr), "{set_cookie}");
    }
    let cookie_value = set_cookie.split(';').next().unwrap().to_owned();
    assert_eq!(cookie_value.len(), "ponte_session=".len() + 64, "{cookie_value}");
    let cookie = ("Cookie", cookie_value.as_str());
    // Anna in a second browser: the same account, another login.
    let reply = http_with(addr, "POST", "/login", &[form], b"user=anna&password=correct+horse").await;
    let other_browser = reply.headers["set-cookie"].split(';').next().unwrap().to_owned();
    assert_ne!(other_browser, cookie_value);

    // Anna sees the Centro zone only; Zaist is answered like a camera that does not exist.
    let reply = http_with(addr, "GET", "/api/catalog", &[cookie], b"").await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let json: serde_json::Value = serde_json::from_str(&reply.body).unwrap();
    assert_eq!(json["viewer"], "anna");
    let ids: Vec<&str> =
        json["cameras"].as_array().unwrap().iter().map(|c| c["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["duomo"]);
    let hidden = http_with(addr, "POST", "/whep/zaist", &[cookie, sdp], offer).await;
    let missing = http_with(addr, "POST", "/whep/nowhere", &[cookie, sdp], offer).await;
    assert_eq!((hidden.status, missing.status), (404, 404), "{} / {}", hidden.body, missing.body);
    assert_eq!(hidden.body.replace("zaist", "X"), missing.body.replace("nowhere", "X"), "indistinguishable");

    // The VMS token: two cameras, substream only.
    let bearer = format!("Bearer {token}");
    let auth_header = ("Authorization", bearer.as_str());
    let reply = http_with(addr, "GET", "/api/catalog", &[auth_header], b"").await;
    let json: serde_json::Value = serde_json::from_str(&reply.body).unwrap();
    assert_eq!(json["viewer"], "vms");
    assert_eq!(json["cameras"].as_array().unwrap().len(), 2);
    assert_eq!(json["cameras"][0]["qualities"], serde_json::json!(["sub"]));
    let reply = http_with(addr, "POST", "/whep/duomo", &[auth_header, sdp], offer).await;
    assert_eq!(reply.status, 403, "{}", reply.body);
    assert!(reply.body.contains("`sub` quality only"), "{}", reply.body);
    let wrong = ("Authorization", "Bearer 0000");
    assert_eq!(http_with(addr, "GET", "/api/catalog", &[wrong], b"").await.status, 401);

    // Anna watches; only she may end her session.
    let (pc, offer, _, received) = viewer().await;
    let reply = http_with(addr, "POST", "/whep/duomo", &[cookie, sdp], offer.as_bytes()).await;
    assert_eq!(reply.status, 201, "{}", reply.body);
    let location = reply.headers["location"].clone();
    pc.set_remote_description(RTCSessionDescription::answer(reply.body).unwrap()).await.unwrap();
    eventually("the cached frames", || received.frames.load(Ordering::Relaxed) >= 3).await;
    assert_eq!(state.sessions()[0].viewer.as_deref(), Some("anna"));
    assert_eq!(state.sessions()[0].id.len(), 8, "status never shows a whole session id");
    assert!(location.rsplit('/').next().unwrap().starts_with(&state.sessions()[0].id));
    assert_eq!(http_with(addr, "DELETE", &location, &[auth_header], b"").await.status, 404);
    assert_eq!(state.sessions().len(), 1, "the VMS cannot end anna's session");
    let other = ("Cookie", other_browser.as_str());
    assert_eq!(http_with(addr, "DELETE", &location, &[other], b"").await.status, 404);
    assert_eq!(state.sessions().len(), 1, "nor can anna's other browser");
    assert_eq!(http_with(addr, "DELETE", &location, &[cookie], b"").await.status, 200);
    eventually("view-stop in the audit log", || {
        std::fs::read_to_string(&audit_path).is_ok_and(|t| t.contains("view-stop"))
    })
    .await;
    assert!(state.sessions().is_empty());
    let _ = pc.close().await;

    // Logout ends the browser session.
    assert_eq!(http_with(addr, "POST", "/logout", &[cookie], b"").await.status, 204);
    assert_eq!(http_with(addr, "GET", "/api/catalog", &[cookie], b"").await.status, 401);

    // Every decision is in the audit log, which verifies.
    let text = std::fs::read_to_string(&audit_path).unwrap();
    let lines: Vec<serde_json::Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let summary: Vec<String> = lines
        .iter()
        .map(|l| format!("{} {} {} {}", l["action"], l["outcome"], l["viewer"], l["camera"]).replace('"', ""))
        .collect();
    assert_eq!(
        summary,
        [
            "login failed anna null",
            "login ok anna null",
            "login ok anna null",
            "refused unknown anna zaist",
            "refused unknown anna nowhere",
            "refused forbidden vms duomo",
            "login failed ? null",
            "view-start allowed anna duomo",
            "view-stop ended anna duomo",
            "logout ok anna null",
        ],
        "{text}"
    );
    assert!(!text.contains("correct horse") && !text.contains(&token), "no secrets in the audit log");
    let stop = &lines[8];
    assert_eq!(stop["session"], lines[7]["session"]);
    assert!(stop["duration_ms"].as_u64().unwrap() > 0, "{stop}");
    assert_eq!(ponte_proto::audit::verify(&[audit_path]), Ok(lines.len()));
    let _ = std::fs::remove_dir_all(&dir);
}

/// One account cannot take every slot: `whep.max_per_viewer` refuses
/// its next stream (503 naming the key, audited); another account plays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_per_account_are_limited() {
    use crate::auth::{Accounts, AuthSettings, TokenConfig};
    let source = fake(vec![entry("duomo", Codec::H264)]);
    let writer = publish(&source.hub, "duomo");
    push_frame(&writer, 0);
    let (one, one_sha256) = crate::auth::new_token();
    let (two, two_sha256) = crate::auth::new_token();
    let token = |name: &str, token_sha256: String| TokenConfig {
        name: name.into(),
        token_sha256,
        cameras: None,
        max_quality: None,
        ptz: false,
    };
    let accounts =
        Accounts::from_config(&[], &[token("wall", one_sha256), token("vms", two_sha256)]).unwrap();
    let audit = Arc::new(RelayAudit::disabled("carabinieri"));
    let auth = Arc::new(Auth::new(accounts, audit.clone(), AuthSettings::default()));
    let settings = WhepSettings { max_per_viewer: 1, ..test_settings() };
    let state = Arc::new(WhepState::with_source(Arc::new(source), settings).with_access(auth, audit));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = router(state.clone()).into_make_service_with_connect_info::<SocketAddr>();
    tokio::spawn(async move { axum::serve(listener, app).await });
    let sdp = ("Content-Type", "application/sdp");
    let (wall, vms) = (format!("Bearer {one}"), format!("Bearer {two}"));
    let (pc1, offer1, _, _) = viewer().await;
    let (pc2, offer2, _, _) = viewer().await;
    let (pc3, offer3, _, _) = viewer().await;
    let first =
        http_with(addr, "POST", "/whep/duomo", &[("Authorization", &wall), sdp], offer1.as_bytes()).await;
    assert_eq!(first.status, 201, "{}", first.body);
    let second =
        http_with(addr, "POST", "/whep/duomo", &[("Authorization", &wall), sdp], offer2.as_bytes()).await;
    assert_eq!(second.status, 503, "{}", second.body);
    assert!(
        second.body.contains("`whep.max_per_viewer`") && second.body.contains("`wall`"),
        "{}",
        second.body
    );
    let other =
        http_with(addr, "POST", "/whep/duomo", &[("Authorization", &vms), sdp], offer3.as_bytes()).await;
    assert_eq!(other.status, 201, "another account still plays: {}", other.body);
    assert_eq!(state.refusals().get("whep.max_per_viewer"), Some(&1));
    for pc in [pc1, pc2, pc3] {
        let _ = pc.close().await;
    }
}
