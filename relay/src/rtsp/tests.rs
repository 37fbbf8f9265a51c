//! The RTSP server against a hub-fed fake camera source and a raw RTSP
//! client: methods, statuses, RTP framing, UDP, auth, slow and hostile clients.

use super::auth::tests::{digest_answer, test_auth};
use super::{RtspAuth, RtspServer, RtspSettings};
use crate::audit::RelayAudit;
use crate::auth::Auth;
use crate::upstream::SubscribeFailure;
use crate::whep::CameraSource;
use bytes::Bytes;
use futures_util::future::BoxFuture;
use ponte_proto::fixtures::{annex_b, PPS};
use ponte_proto::hub::{Hub, TrackKey, TrackReader, TrackWriter};
use ponte_proto::media::{Codec, CodecConfig, Frame, Quality};
use ponte_proto::wire::{CatalogEntry, SubscribeErrorCode};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

const SPS: &[u8] = &[0x67, 0x42, 0xc0, 0x1e, 0xd9, 0x00, 0xa0, 0x47];
const T: Duration = Duration::from_secs(5);

struct FakeSource {
    hub: Hub,
    catalog: Vec<CatalogEntry>,
}

impl CameraSource for FakeSource {
    fn site(&self) -> String {
        "test".into()
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
            self.hub.subscribe(&TrackKey::new(camera, quality)).ok_or_else(|| SubscribeFailure {
                code: SubscribeErrorCode::Offline,
                reason: format!("camera `{camera}` has no stream"),
            })
        })
    }
}

fn entry(id: &str) -> CatalogEntry {
    CatalogEntry {
        id: id.into(),
        device: id.into(),
        lens: 1,
        name: format!("camera {id}"),
        zone: "z".into(),
        kind: "fixed".into(),
        codec: Codec::H264,
        qualities: vec![Quality::Main],
        ptz: false,
        always_on: false,
        sub_codec: None,
        sub_transcoded: false,
        tags: Vec::new(),
        dual_path: false,
    }
}

/// A camera track publishing H.264 frames: every `gop`th one an IDR of
/// `key_len` bytes (FU-A territory), the others small slices.
struct Camera {
    writer: TrackWriter,
    n: u64,
    gop: u64,
    key_len: usize,
}

impl Camera {
    fn publish(hub: &Hub, id: &str, key_len: usize) -> Self {
        let writer = hub.publish(TrackKey::new(id, Quality::Main));
        writer.set_config(Arc::new(CodecConfig {
            codec: Codec::H264,
            width: 640,
            height: 360,
            parameter_sets: vec![Bytes::from_static(SPS), Bytes::from_static(PPS)],
        }));
        Self { writer, n: 0, gop: 5, key_len }
    }

    fn push(&mut self) {
        let keyframe = self.n.is_multiple_of(self.gop);
        let payload = if keyframe {
            let mut idr = vec![0x65];
            idr.extend((0..self.key_len).map(|i| (i % 250) as u8 + 1));
            annex_b(&[&idr])
        } else {
            annex_b(&[&[0x41, 0x9a, (self.n % 200) as u8 + 1, 7]])
        };
        self.writer.push(Frame { pts: 1_000_000 + self.n * 6000, keyframe, payload });
        self.n += 1;
    }

    fn subscribers(&self) -> usize {
        *self.writer.subscribers().borrow()
    }
}

async fn server_with(
    settings: RtspSettings,
    auth: Arc<Auth>,
    basic: bool,
) -> (Arc<RtspServer>, Arc<FakeSource>) {
    let source = Arc::new(FakeSource { hub: Hub::new(), catalog: vec![entry("cam-a"), entry("cam-b")] });
    let server = RtspServer::bind(
        RtspSettings { listen: "127.0.0.1:0".parse().unwrap(), ..settings },
        source.clone(),
        Arc::new(RtspAuth::new(auth, basic)),
        Arc::new(RelayAudit::disabled("test")),
    )
    .await
    .unwrap();
    tokio::spawn(server.clone().serve());
    (server, source)
}

async fn server() -> (Arc<RtspServer>, Arc<FakeSource>) {
    server_with(RtspSettings::default(), Arc::new(Auth::open(Arc::new(RelayAudit::disabled("t")))), false)
        .await
}

#[derive(Debug)]
struct Response {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Response {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    fn headers_named(&self, name: &str) -> Vec<&str> {
        self.headers.iter().filter(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str()).collect()
    }
}

/// A minimal RTSP client: requests, responses, and interleaved frames.
struct Client {
    stream: TcpStream,
    buf: Vec<u8>,
    cseq: u32,
    /// Interleaved frames received while waiting for responses.
    frames: Vec<(u8, Vec<u8>)>,
}

impl Client {
    async fn connect(addr: SocketAddr) -> Self {
        Self { stream: TcpStream::connect(addr).await.unwrap(), buf: Vec::new(), cseq: 0, frames: Vec::new() }
    }

    async fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.unwrap();
    }

    async fn request(&mut self, method: &str, url: &str, headers: &[(&str, &str)]) -> Response {
        self.cseq += 1;
        let mut req = format!("{method} {url} RTSP/1.0\r\nCSeq: {}\r\nUser-Agent: ponte-test\r\n", self.cseq);
        for (n, v) in headers {
            req.push_str(&format!("{n}: {v}\r\n"));
        }
        req.push_str("\r\n");
        self.send_raw(req.as_bytes()).await;
        let r = self.response().await;
        assert_eq!(r.header("CSeq"), Some(self.cseq.to_string().as_str()), "{r:?}");
        r
    }

    async fn fill(&mut self) -> bool {
        let mut chunk = [0u8; 65536];
        match tokio::time::timeout(T, self.stream.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) => false,
            Ok(Ok(n)) => {
                self.buf.extend_from_slice(&chunk[..n]);
                true
            }
            Err(_) => panic!("nothing from the server within {T:?}"),
        }
    }

    /// Takes one interleaved frame off the buffer, if complete.
    fn take_frame(&mut self) -> Option<(u8, Vec<u8>)> {
        if self.buf.first() != Some(&b'$') || self.buf.len() < 4 {
            return None;
        }
        let len = usize::from(u16::from_be_bytes([self.buf[2], self.buf[3]]));
        if self.buf.len() < 4 + len {
            return None;
        }
        let frame = (self.buf[1], self.buf[4..4 + len].to_vec());
        self.buf.drain(..4 + len);
        Some(frame)
    }

    async fn response(&mut self) -> Response {
        loop {
            while let Some(f) = self.take_frame() {
                self.frames.push(f);
            }
            if self.buf.first().is_some_and(|b| *b != b'$') {
                if let Some(end) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                    let head = String::from_utf8_lossy(&self.buf[..end]).into_owned();
                    let mut lines = head.split("\r\n");
                    let status_line = lines.next().unwrap_or_default().to_owned();
                    let headers: Vec<(String, String)> = lines
                        .filter_map(|l| {
                            l.split_once(':').map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned()))
                        })
                        .collect();
                    let len = headers
                        .iter()
                        .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
                        .map_or(0, |(_, v)| v.parse().unwrap());
                    if self.buf.len() >= end + 4 + len {
                        let body = String::from_utf8_lossy(&self.buf[end + 4..end + 4 + len]).into_owned();
                        self.buf.drain(..end + 4 + len);
                        assert!(status_line.starts_with("RTSP/1.0 "), "{status_line}");
                        let status = status_line[9..12].parse().unwrap();
                        return Response { status, headers, body };
                    }
                }
            }
            assert!(self.fill().await, "connection closed while waiting for a response");
        }
    }

    /// Reads interleaved frames until `n` arrived on `channel` (or the connection ends).
    async fn frames_on(&mut self, channel: u8, n: usize) -> Vec<Vec<u8>> {
        let mut out: Vec<Vec<u8>> =
            self.frames.iter().filter(|(c, _)| *c == channel).map(|(_, f)| f.clone()).collect();
        self.frames.clear();
        while out.len() < n {
            while let Some((c, f)) = self.take_frame() {
                if c == channel {
                    out.push(f);
                }
            }
            if out.len() >= n || !self.fill().await {
                break;
            }
        }
        out
    }

    /// Reads and discards whatever arrives until the line is quiet for 200 ms.
    async fn drain(&mut self) {
        let mut chunk = [0u8; 65536];
        while let Ok(Ok(n)) =
            tokio::time::timeout(Duration::from_millis(200), self.stream.read(&mut chunk)).await
        {
            if n == 0 {
                break;
            }
        }
        self.buf.clear();
        self.frames.clear();
    }

    /// DESCRIBE, SETUP (interleaved), PLAY: returns the session id.
    async fn play_tcp(&mut self, url: &str) -> String {
        let d = self.request("DESCRIBE", url, &[("Accept", "application/sdp")]).await;
        assert_eq!(d.status, 200, "{d:?}");
        let track = format!("{}trackID=0", d.header("Content-Base").unwrap());
        let s = self.request("SETUP", &track, &[("Transport", "RTP/AVP/TCP;unicast;interleaved=0-1")]).await;
        assert_eq!(s.status, 200, "{s:?}");
        let session = s.header("Session").unwrap().split(';').next().unwrap().to_owned();
        let p = self.request("PLAY", url, &[("Session", &session), ("Range", "npt=0.000-")]).await;
        assert_eq!(p.status, 200, "{p:?}");
        session
    }
}

struct Rtp {
    marker: bool,
    seq: u16,
    ts: u32,
    payload: Vec<u8>,
}

fn rtp(packet: &[u8]) -> Rtp {
    assert!(packet.len() > 12 && packet[0] == 0x80, "not RTP v2: {packet:02x?}");
    Rtp {
        marker: packet[1] & 0x80 != 0,
        seq: u16::from_be_bytes([packet[2], packet[3]]),
        ts: u32::from_be_bytes([packet[4], packet[5], packet[6], packet[7]]),
        payload: packet[12..].to_vec(),
    }
}

async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Keeps a camera pushing a frame every `every` until the returned guard drops.
fn run_camera(
    mut cam: Camera,
    every: Duration,
) -> (tokio::task::JoinHandle<()>, tokio::sync::watch::Receiver<usize>) {
    let subscribers = cam.writer.subscribers();
    let task = tokio::spawn(async move {
        loop {
            cam.push();
            tokio::time::sleep(every).await;
        }
    });
    (task, subscribers)
}

#[tokio::test]
async fn plays_h264_over_interleaved_tcp_from_the_latest_keyframe() {
    let (server, source) = server().await;
    let mut cam = Camera::publish(&source.hub, "cam-a", 3000);
    for _ in 0..7 {
        cam.push(); // keyframes at 0 and 5: the cache starts at frame 5
    }
    let mut c = Client::connect(server.local_addr()).await;
    let url = format!("rtsp://{}/cam-a", server.local_addr());
    let o = c.request("OPTIONS", &url, &[]).await;
    assert!(o.header("Public").unwrap().contains("DESCRIBE"), "{o:?}");

    let d = c.request("DESCRIBE", &url, &[]).await;
    assert_eq!(d.status, 200);
    assert_eq!(d.header("Content-Type"), Some("application/sdp"));
    assert_eq!(d.header("Content-Base"), Some(format!("{url}/").as_str()));
    assert!(d.body.contains("a=rtpmap:96 H264/90000"), "{}", d.body);
    assert!(
        d.body.contains("sprop-parameter-sets=Z0LAHtkAoEc=,aM48gA==;")
            || d.body.contains("sprop-parameter-sets=Z0LAHtkAoEc=,aM48gA==\r\n"),
        "{}",
        d.body
    );
    assert!(d.body.contains("profile-level-id=42c01e"), "{}", d.body);

    let s = c
        .request(
            "SETUP",
            &format!("{url}/trackID=0"),
            &[("Transport", "RTP/AVP/TCP;unicast;interleaved=0-1")],
        )
        .await;
    assert_eq!(s.status, 200, "{s:?}");
    assert!(s.header("Transport").unwrap().starts_with("RTP/AVP/TCP;unicast;interleaved=0-1"), "{s:?}");
    let session_header = s.header("Session").unwrap();
    assert!(session_header.ends_with(";timeout=60"), "{session_header}");
    let session = session_header.split(';').next().unwrap().to_owned();

    let p = c.request("PLAY", &url, &[("Session", &session)]).await;
    assert_eq!(p.status, 200, "{p:?}");
    assert!(c.frames.is_empty(), "media before the PLAY reply");
    let info = p.header("RTP-Info").unwrap().to_owned();
    assert!(info.starts_with(&format!("url={url}/trackID=0;seq=")), "{info}");
    let seq0: u16 = info.split("seq=").nth(1).unwrap().split(';').next().unwrap().parse().unwrap();
    let ts0: u32 = info.split("rtptime=").nth(1).unwrap().parse().unwrap();

    // Cached GOP: frames 5 and 6; then live frames.
    for _ in 0..3 {
        cam.push();
    }
    let packets: Vec<Rtp> = c.frames_on(0, 8).await.iter().map(|p| rtp(p)).collect();
    let first = &packets[0];
    assert_eq!((first.seq, first.ts), (seq0, ts0), "RTP-Info matches the first packet");
    // The keyframe carries SPS and PPS in band, then the IDR as FU-A.
    assert_eq!(first.payload, SPS);
    assert_eq!(packets[1].payload, PPS);
    assert_eq!(packets[2].payload[0] & 0x1f, 28, "FU-A");
    assert_eq!(packets[2].payload[1], 0x80 | 5, "FU-A start of an IDR");
    for w in packets.windows(2) {
        assert_eq!(w[1].seq, w[0].seq.wrapping_add(1), "consecutive sequence numbers");
    }
    let key_end = packets.iter().position(|p| p.marker).unwrap();
    assert!(packets[..key_end].iter().all(|p| p.ts == ts0));
    let next = &packets[key_end + 1];
    assert_eq!(next.ts, ts0.wrapping_add(6000), "90 kHz timestamps from pts");
    assert_eq!(next.payload, [0x41, 0x9a, 7, 7]);
    assert!(next.marker);
    assert_eq!(server.sessions().len(), 1);
    assert!(server.sessions()[0].playing);

    let t = c.request("TEARDOWN", &url, &[("Session", &session)]).await;
    assert_eq!(t.status, 200);
    assert!(server.sessions().is_empty());
    eventually("the hub reader to be dropped", || cam.subscribers() == 0).await;
    let again = c.request("PLAY", &url, &[("Session", &session)]).await;
    assert_eq!(again.status, 454, "a torn-down session is not found");
}

/// The PLAY reply goes out before the first media: a client reading the
/// reply skips the interleaved frames ahead of it (ffmpeg does), and the
/// cached keyframe among them would be lost: the picture waits a GOP. The
/// pump used to start before the reply was queued, a race it lost only
/// because nothing awaited in between (an await added in the PLAY handler
/// halved the frames ffmpeg decoded in `attacks::rtsp`); it now waits for
/// the reply. Checked over 30 rounds with the pump on another worker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_play_reply_comes_before_the_cached_keyframe() {
    let (server, source) = server().await;
    let mut cam = Camera::publish(&source.hub, "cam-a", 3000);
    for _ in 0..7 {
        cam.push();
    }
    let url = format!("rtsp://{}/cam-a", server.local_addr());
    for round in 0..30 {
        let mut c = Client::connect(server.local_addr()).await;
        c.play_tcp(&url).await;
        assert!(c.frames.is_empty(), "round {round}: {} media frames before the PLAY reply", c.frames.len());
        let first = c.frames_on(0, 1).await;
        assert_eq!(rtp(&first[0]).payload, SPS, "round {round}: the keyframe comes first");
    }
}

#[tokio::test]
async fn malformed_and_unsupported_requests_get_the_right_status() {
    let (server, source) = server().await;
    let (_cam, _) = run_camera(Camera::publish(&source.hub, "cam-a", 100), Duration::from_millis(20));
    let addr = server.local_addr();
    let url = format!("rtsp://{addr}/cam-a");
    let mut c = Client::connect(addr).await;
    type Case<'a> = (&'a str, String, Vec<(&'a str, &'a str)>, u16);
    let cases: Vec<Case> = vec![
        ("DESCRIBE", format!("rtsp://{addr}/no-such-camera"), vec![], 404),
        ("DESCRIBE", format!("rtsp://{addr}/cam-a/sub"), vec![], 403),
        ("DESCRIBE", format!("rtsp://{addr}/a/b/c"), vec![], 404),
        ("DESCRIBE", format!("rtsp://{addr}/cam-b"), vec![], 503), // in the catalog, no stream
        ("PLAY", url.clone(), vec![("Session", "nope")], 454),
        ("PLAY", url.clone(), vec![], 454),
        ("TEARDOWN", url.clone(), vec![("Session", "nope")], 454),
        ("SETUP", format!("{url}/trackID=0"), vec![], 400),
        ("SETUP", format!("{url}/trackID=0"), vec![("Transport", "RTP/AVP;multicast")], 461),
        (
            "SETUP",
            format!("{url}/trackID=0"),
            vec![("Transport", "RTP/SAVP/TCP;unicast;interleaved=0-1")],
            461,
        ),
        ("SETUP", format!("{url}/trackID=0"), vec![("Transport", "RAW/RAW/UDP;unicast")], 461),
        ("SETUP", format!("{url}/trackID=0"), vec![("Transport", "RTP/AVP;unicast")], 461), // no client_port
        ("RECORD", url.clone(), vec![], 405),
        ("ANNOUNCE", url.clone(), vec![], 405),
        ("REDIRECT", url.clone(), vec![], 501),
        ("FROBNICATE", url.clone(), vec![], 501),
        ("GET_PARAMETER", url.clone(), vec![], 200),
    ];
    for (method, u, headers, want) in cases {
        let r = c.request(method, &u, &headers).await;
        assert_eq!(r.status, want, "{method} {u} {headers:?}: {r:?}");
    }
    // Framing errors answer with the request's CSeq and keep the connection.
    c.send_raw(b"DESCRIBE not-a-url RTSP/1.0\r\nCSeq: 77\r\n\r\n").await;
    let r = c.response().await;
    assert_eq!((r.status, r.header("CSeq")), (400, Some("77")));
    c.send_raw(b"OPTIONS * RTSP/2.0\r\nCSeq: 78\r\n\r\n").await;
    assert_eq!(c.response().await.status, 505);
    let o = c.request("OPTIONS", "*", &[]).await;
    assert_eq!(o.status, 200);
    assert_eq!(c.request("DESCRIBE", &url, &[]).await.status, 200, "the connection still serves");
    // A request beyond the size limit ends the connection (after a 400).
    let mut huge = format!("DESCRIBE {url} RTSP/1.0\r\nCSeq: 99\r\nX-Junk: ");
    huge.push_str(&"a".repeat(10_000));
    c.send_raw(huge.as_bytes()).await;
    assert_eq!(c.response().await.status, 400);
    let mut rest = Vec::new();
    let n = tokio::time::timeout(T, c.stream.read_to_end(&mut rest)).await.unwrap().unwrap();
    assert_eq!(n, 0, "connection closed after an oversized request");
    // A second SETUP in a session has nothing to add.
    let mut c = Client::connect(addr).await;
    let session = c.play_tcp(&url).await;
    let again = c
        .request(
            "SETUP",
            &format!("{url}/trackID=0"),
            &[("Session", &session), ("Transport", "RTP/AVP/TCP;unicast")],
        )
        .await;
    assert_eq!(again.status, 459);
}

#[tokio::test]
async fn plays_over_udp_unicast_and_keepalives_hold_the_session() {
    let settings = RtspSettings { session_timeout: Duration::from_millis(1500), ..Default::default() };
    let (server, source) =
        server_with(settings, Arc::new(Auth::open(Arc::new(RelayAudit::disabled("t")))), false).await;
    let (_cam, subscribers) =
        run_camera(Camera::publish(&source.hub, "cam-a", 2000), Duration::from_millis(20));
    let rtp_sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let rtcp_sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let (p, q) = (rtp_sock.local_addr().unwrap().port(), rtcp_sock.local_addr().unwrap().port());
    let url = format!("rtsp://{}/cam-a", server.local_addr());
    let mut c = Client::connect(server.local_addr()).await;
    let s = c
        .request(
            "SETUP",
            &format!("{url}/trackID=0"),
            &[("Transport", &format!("RTP/AVP;unicast;client_port={p}-{q}"))],
        )
        .await;
    assert_eq!(s.status, 200, "{s:?}");
    let transport = s.header("Transport").unwrap();
    let (sp, sq) = server.udp_ports().unwrap();
    assert!(transport.contains(&format!("client_port={p}-{q};server_port={sp}-{sq}")), "{transport}");
    assert_eq!(sp % 2, 0);
    assert_eq!(server.udp_ports_text(), format!("{sp}-{sq}"), "the log line's form");
    let session = s.header("Session").unwrap().split(';').next().unwrap().to_owned();
    assert_eq!(c.request("PLAY", &url, &[("Session", &session)]).await.status, 200);
    let mut buf = [0u8; 2048];
    let mut markers = 0;
    let mut from = None;
    while markers < 5 {
        let (n, src) = tokio::time::timeout(T, rtp_sock.recv_from(&mut buf)).await.unwrap().unwrap();
        let packet = rtp(&buf[..n]);
        assert!(n <= ponte_proto::rtp::DEFAULT_MTU);
        markers += usize::from(packet.marker);
        from = Some(src);
    }
    assert_eq!(from.map(|a| a.port()), Some(sp), "RTP comes from the announced server port");
    // An RTCP sender report arrives on the client's RTCP port.
    let (n, _) = tokio::time::timeout(T, rtcp_sock.recv_from(&mut buf)).await.unwrap().unwrap();
    assert!(n >= 28 && buf[1] == 200, "sender report: {:02x?}", &buf[..n]);
    // Receiver reports keep it alive past the timeout with no RTSP request.
    for _ in 0..8 {
        rtcp_sock.send_to(&[0x80, 201, 0, 1, 0, 0, 0, 1], ("127.0.0.1", sq)).await.unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert_eq!(server.sessions().len(), 1, "kept alive by RTCP");
    assert_eq!(c.request("GET_PARAMETER", &url, &[("Session", &session)]).await.status, 200);
    // Silence ends it; the camera is unsubscribed.
    eventually("the session to time out", || server.sessions().is_empty()).await;
    eventually("the hub reader to be dropped", || *subscribers.borrow() == 0).await;
    let mut late = Client::connect(server.local_addr()).await;
    assert_eq!(late.request("GET_PARAMETER", &url, &[("Session", &session)]).await.status, 454);
}

#[tokio::test]
async fn a_client_that_stops_reading_is_dropped_and_others_keep_playing() {
    let settings = RtspSettings { write_stall: Duration::from_millis(500), ..Default::default() };
    let (server, source) =
        server_with(settings, Arc::new(Auth::open(Arc::new(RelayAudit::disabled("t")))), false).await;
    // 200 KB keyframes every 5 frames at 200 fps: ~8 MB/s, filling kernel buffers fast.
    let mut cam = Camera::publish(&source.hub, "cam-a", 200_000);
    cam.gop = 5;
    let (cam_task, subscribers) = run_camera(cam, Duration::from_millis(5));
    let url = format!("rtsp://{}/cam-a", server.local_addr());
    let mut stuck = Client::connect(server.local_addr()).await;
    stuck.play_tcp(&url).await;
    let mut good = Client::connect(server.local_addr()).await;
    good.play_tcp(&url).await;
    assert_eq!(server.sessions().len(), 2);
    // The good client reads steadily while the stuck one reads nothing.
    let started = Instant::now();
    let mut got = 0;
    while server.sessions().len() == 2 {
        got += good.frames_on(0, 50).await.len();
        assert!(started.elapsed() < Duration::from_secs(20), "the stuck client was never dropped");
    }
    eprintln!("stuck client dropped after {:?}; good client got {got} packets meanwhile", started.elapsed());
    assert_eq!(server.sessions().len(), 1);
    assert_eq!(*subscribers.borrow(), 1, "the stuck client's hub reader is gone");
    // The good one goes on.
    let more = good.frames_on(0, 200).await;
    assert!(more.len() >= 200);
    let last = rtp(more.last().unwrap());
    assert!(last.payload.len() > 1);
    cam_task.abort();
}

#[tokio::test]
async fn digest_auth_and_viewer_narrowing() {
    let (server, source) = server_with(RtspSettings::default(), test_auth(), false).await;
    let (_a, _) = run_camera(Camera::publish(&source.hub, "cam-a", 100), Duration::from_millis(20));
    let (_b, _) = run_camera(Camera::publish(&source.hub, "cam-b", 100), Duration::from_millis(20));
    let addr = server.local_addr();
    let url_a = format!("rtsp://{addr}/cam-a");
    let url_b = format!("rtsp://{addr}/cam-b");
    let mut c = Client::connect(addr).await;
    assert_eq!(c.request("OPTIONS", &url_a, &[]).await.status, 200, "OPTIONS needs no credentials");
    let r = c.request("DESCRIBE", &url_a, &[]).await;
    assert_eq!(r.status, 401);
    let challenges = r.headers_named("WWW-Authenticate");
    assert_eq!(challenges.len(), 1, "Digest only unless Basic is configured: {challenges:?}");
    assert!(challenges[0].starts_with("Digest realm=\"ponte\""), "{challenges:?}");
    let wrong = digest_answer(challenges[0], "vms", "nope", "DESCRIBE", &url_a, false);
    assert_eq!(c.request("DESCRIBE", &url_a, &[("Authorization", &wrong)]).await.status, 401);
    let right = digest_answer(challenges[0], "vms", "s3cret-vms", "DESCRIBE", &url_a, false);
    assert_eq!(c.request("DESCRIBE", &url_a, &[("Authorization", &right)]).await.status, 200);
    // `guard` sees cam-a only: cam-b is answered as if it did not exist.
    let guard_b = digest_answer(challenges[0], "guard", "guard-pw", "DESCRIBE", &url_b, true);
    assert_eq!(c.request("DESCRIBE", &url_b, &[("Authorization", &guard_b)]).await.status, 404);
    let guard_a = digest_answer(challenges[0], "guard", "guard-pw", "DESCRIBE", &url_a, true);
    assert_eq!(c.request("DESCRIBE", &url_a, &[("Authorization", &guard_a)]).await.status, 200);
    // A full play with credentials on every request, as real clients do.
    let track = format!("{url_a}/trackID=0");
    let setup = digest_answer(challenges[0], "guard", "guard-pw", "SETUP", &track, false);
    let s = c
        .request(
            "SETUP",
            &track,
            &[("Authorization", &setup), ("Transport", "RTP/AVP/TCP;unicast;interleaved=0-1")],
        )
        .await;
    assert_eq!(s.status, 200, "{s:?}");
    let session = s.header("Session").unwrap().split(';').next().unwrap().to_owned();
    // Another connection cannot drive the session without the same viewer.
    let mut other = Client::connect(addr).await;
    let vms = digest_answer(challenges[0], "vms", "s3cret-vms", "PLAY", &url_a, false);
    assert_eq!(
        other.request("PLAY", &url_a, &[("Session", &session), ("Authorization", &vms)]).await.status,
        454
    );
    assert_eq!(c.request("PLAY", &url_a, &[("Session", &session)]).await.status, 200);
    assert!(c.frames_on(0, 3).await.len() >= 3);
    assert_eq!(server.sessions()[0].viewer.as_deref(), Some("guard"));

    // Basic, when configured, is offered too.
    let (basic_server, _) = server_with(RtspSettings::default(), test_auth(), true).await;
    let mut c = Client::connect(basic_server.local_addr()).await;
    let r = c.request("DESCRIBE", &format!("rtsp://{}/cam-a", basic_server.local_addr()), &[]).await;
    assert_eq!(r.headers_named("WWW-Authenticate").len(), 2, "{r:?}");
}

#[tokio::test]
async fn random_and_truncated_requests_leave_the_server_serving() {
    use rand::{Rng, SeedableRng};
    let (server, source) = server().await;
    let (_cam, _) = run_camera(Camera::publish(&source.hub, "cam-a", 100), Duration::from_millis(20));
    let addr = server.local_addr();
    let url = format!("rtsp://{addr}/cam-a");
    // A client playing throughout.
    let mut watcher = Client::connect(addr).await;
    watcher.play_tcp(&url).await;
    let valid = [
        format!("OPTIONS {url} RTSP/1.0\r\nCSeq: 1\r\n\r\n"),
        format!("DESCRIBE {url} RTSP/1.0\r\nCSeq: 2\r\nAccept: application/sdp\r\n\r\n"),
        format!("SETUP {url}/trackID=0 RTSP/1.0\r\nCSeq: 3\r\nTransport: RTP/AVP/TCP;unicast;interleaved=0-1\r\n\r\n"),
        format!("PLAY {url} RTSP/1.0\r\nCSeq: 4\r\nSession: 12345678\r\nRange: npt=0-\r\n\r\n"),
        format!("SET_PARAMETER {url} RTSP/1.0\r\nCSeq: 5\r\nContent-Length: 12\r\n\r\nbarparam: 1\n"),
    ];
    let mut rng = rand::rngs::StdRng::seed_from_u64(6);
    let started = Instant::now();
    for i in 0..150 {
        let mut bytes = valid[i % valid.len()].clone().into_bytes();
        match i % 3 {
            0 => bytes.truncate(rng.random_range(0..bytes.len())),
            1 => {
                for _ in 0..rng.random_range(1..8) {
                    let at = rng.random_range(0..bytes.len());
                    bytes[at] = rng.random();
                }
            }
            _ => bytes = (0..rng.random_range(1..3000)).map(|_| rng.random()).collect(),
        }
        let mut s = TcpStream::connect(addr).await.unwrap();
        let _ = s.write_all(&bytes).await;
        // Half the clients vanish mid-request, half wait for what comes back.
        if i % 2 == 0 {
            let _ = s.shutdown().await;
            let mut sink = Vec::new();
            let _ = tokio::time::timeout(Duration::from_millis(200), s.read_to_end(&mut sink)).await;
        }
    }
    eprintln!("150 hostile clients in {:?}", started.elapsed());
    // The watcher kept playing and a new client plays.
    assert!(watcher.frames_on(0, 20).await.len() >= 20);
    let mut fresh = Client::connect(addr).await;
    fresh.play_tcp(&url).await;
    assert!(fresh.frames_on(0, 5).await.len() >= 5);
}

#[tokio::test]
async fn pause_stops_media_and_play_resumes_at_a_keyframe() {
    let (server, source) = server().await;
    let (_cam, _) = run_camera(Camera::publish(&source.hub, "cam-a", 100), Duration::from_millis(10));
    let url = format!("rtsp://{}/cam-a", server.local_addr());
    let mut c = Client::connect(server.local_addr()).await;
    let session = c.play_tcp(&url).await;
    assert!(c.frames_on(0, 10).await.len() >= 10);
    assert_eq!(c.request("PAUSE", &url, &[("Session", &session)]).await.status, 200);
    assert!(!server.sessions()[0].playing);
    // Drain what was in flight, then nothing more comes while paused.
    c.drain().await;
    let before = server.sessions()[0].packets;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(server.sessions()[0].packets, before, "no media while paused");
    let p = c.request("PLAY", &url, &[("Session", &session)]).await;
    assert_eq!(p.status, 200);
    assert!(!p.header("RTP-Info").unwrap().contains("rtptime"), "resume continues the timeline");
    let packets: Vec<Rtp> = c.frames_on(0, 3).await.iter().map(|p| rtp(p)).collect();
    // After a pause the stream picks up at a keyframe (SPS first).
    let first_new = packets.iter().find(|p| p.payload == SPS);
    assert!(first_new.is_some(), "resumed at a keyframe");
}

/// A source whose only keyframe is far back (an H.265 camera with open
/// GOPs, say): a new client gets the whole cached backlog, then live frames,
/// and is never starved waiting for a keyframe that does not come.
#[tokio::test]
async fn a_long_gop_backlog_is_sent_whole_then_live_frames() {
    let (server, source) = server().await;
    let mut cam = Camera::publish(&source.hub, "cam-a", 3000);
    cam.gop = u64::MAX; // one keyframe, at frame 0
    for _ in 0..150 {
        cam.push();
    }
    let url = format!("rtsp://{}/cam-a", server.local_addr());
    let mut c = Client::connect(server.local_addr()).await;
    c.play_tcp(&url).await;
    let (_task, _) = run_camera(cam, Duration::from_millis(10));
    // 150 cached frames (SPS, PPS and the IDR in 3 FU-A packets first) and
    // at least 50 live ones.
    let packets: Vec<Rtp> = c.frames_on(0, 150 + 4 + 50).await.iter().map(|p| rtp(p)).collect();
    assert_eq!(packets[0].payload, SPS);
    for w in packets.windows(2) {
        assert_eq!(w[1].seq, w[0].seq.wrapping_add(1), "no packet skipped");
    }
    assert!(packets.iter().filter(|p| p.marker).count() >= 200, "every frame arrived");
    assert_eq!(server.sessions()[0].frames_skipped, 0);
}

/// True when the server closes `s` within `within` (reads EOF or an error).
async fn closed_within(s: &mut TcpStream, within: Duration) -> bool {
    let mut buf = [0u8; 4096];
    let until = Instant::now() + within;
    loop {
        let left = until.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => {}
            Err(_) => return false,
        }
    }
}

#[tokio::test]
async fn one_address_holds_its_share_of_connections_and_the_unauthenticated_are_closed_at_the_deadline() {
    let deadline = Duration::from_millis(400);
    let settings =
        RtspSettings { max_connections_per_client: 3, auth_deadline: deadline, ..RtspSettings::default() };
    let (server, source) =
        server_with(settings, Arc::new(Auth::open(Arc::new(RelayAudit::disabled("t")))), false).await;
    let (_cam, _) = run_camera(Camera::publish(&source.hub, "cam-a", 100), Duration::from_millis(20));
    let addr = server.local_addr();
    let url = format!("rtsp://{addr}/cam-a");
    // A client that asked for a stream (the anonymous viewer of an open relay).
    let mut viewer = Client::connect(addr).await;
    assert_eq!(viewer.request("DESCRIBE", &url, &[]).await.status, 200);
    let opened = Instant::now();
    let mut idle = Vec::new();
    for _ in 0..2 {
        idle.push(TcpStream::connect(addr).await.unwrap());
    }
    // Beyond the per-address cap: closed at once.
    let mut extra = TcpStream::connect(addr).await.unwrap();
    assert!(
        closed_within(&mut extra, Duration::from_millis(200)).await,
        "a fourth connection from one address"
    );
    // The idle ones dribble line ends and answer OPTIONS, and are closed at
    // the deadline all the same.
    let mut dribbler = idle.pop().unwrap();
    let dribble = tokio::spawn(async move {
        for _ in 0..20 {
            if dribbler.write_all(b"\r\n").await.is_err() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        closed_within(&mut dribbler, Duration::from_millis(10)).await
    });
    let mut options = idle.pop().unwrap();
    options.write_all(format!("OPTIONS {url} RTSP/1.0\r\nCSeq: 1\r\n\r\n").as_bytes()).await.unwrap();
    assert!(
        closed_within(&mut options, deadline * 3).await,
        "an unauthenticated connection outlived the deadline"
    );
    assert!(opened.elapsed() >= deadline - Duration::from_millis(50), "closed before the deadline");
    assert!(dribble.await.unwrap(), "line ends kept a connection past the deadline");
    // The authenticated one lives on, and slots were given back.
    assert_eq!(viewer.request("OPTIONS", &url, &[]).await.status, 200);
    let mut again = Client::connect(addr).await;
    assert_eq!(again.request("OPTIONS", &url, &[]).await.status, 200);
}
