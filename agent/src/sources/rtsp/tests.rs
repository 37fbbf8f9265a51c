//! The RTSP source against a scripted camera on loopback: real H.264 from
//! openh264, RTP over interleaved TCP, malformed packets mixed in, the
//! connection dropped, wrong credentials.

use super::*;
use crate::sources::synthetic::{FrameSource, SyntheticSpec};
use ponte_proto::hub::{Hub, HubItem, TrackKey, TrackReader};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What the scripted camera does on one connection.
#[derive(Clone)]
enum Script {
    /// Plays these interleaved packets, then closes the connection.
    PlayThenClose(Vec<Vec<u8>>),
    /// Plays these packets and keeps the connection until the client goes.
    PlayAndHold(Vec<Vec<u8>>),
    /// Answers every request with 401 (Basic).
    Unauthorized,
}

struct FakeCamera {
    port: u16,
    connections: Arc<AtomicUsize>,
    requests: Arc<Mutex<Vec<String>>>,
    closed_by_client: Arc<AtomicUsize>,
}

impl FakeCamera {
    /// Serves `scripts` to successive connections (the last one repeats).
    async fn start(sdp: String, scripts: Vec<Script>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let connections = Arc::new(AtomicUsize::new(0));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let closed_by_client = Arc::new(AtomicUsize::new(0));
        let (conns, reqs, closed) = (connections.clone(), requests.clone(), closed_by_client.clone());
        tokio::spawn(async move {
            while let Ok((sock, _)) = listener.accept().await {
                let n = conns.fetch_add(1, Ordering::SeqCst);
                let script = scripts[n.min(scripts.len() - 1)].clone();
                let (sdp, reqs, closed) = (sdp.clone(), reqs.clone(), closed.clone());
                tokio::spawn(async move {
                    if serve(sock, sdp, script, reqs).await {
                        closed.fetch_add(1, Ordering::SeqCst);
                    }
                });
            }
        });
        Self { port, connections, requests, closed_by_client }
    }

    fn url(&self) -> String {
        format!("rtsp://127.0.0.1:{}/cam", self.port)
    }
}

/// Serves one connection; true when the client closed it.
async fn serve(mut sock: TcpStream, sdp: String, script: Script, log: Arc<Mutex<Vec<String>>>) -> bool {
    let mut buf = Vec::new();
    loop {
        let Some(req) = read_request(&mut sock, &mut buf).await else { return true };
        log.lock().unwrap().push(req.clone());
        let method = req.split(' ').next().unwrap_or_default().to_owned();
        let cseq = req
            .lines()
            .find_map(|l| l.strip_prefix("CSeq: ").or_else(|| l.strip_prefix("CSeq:")))
            .unwrap_or("0")
            .trim()
            .to_owned();
        let reply = match (&script, method.as_str()) {
            (Script::Unauthorized, _) => format!(
                "RTSP/1.0 401 Unauthorized\r\nCSeq: {cseq}\r\nWWW-Authenticate: Basic realm=\"cam\"\r\n\r\n"
            ),
            (_, "DESCRIBE") => format!(
                "RTSP/1.0 200 OK\r\nCSeq: {cseq}\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
                sdp.len()
            ),
            (_, "SETUP") => format!(
                "RTSP/1.0 200 OK\r\nCSeq: {cseq}\r\nTransport: RTP/AVP/TCP;unicast;interleaved=0-1\r\nSession: 12345678;timeout=60\r\n\r\n"
            ),
            _ => format!("RTSP/1.0 200 OK\r\nCSeq: {cseq}\r\nSession: 12345678\r\n\r\n"),
        };
        if sock.write_all(reply.as_bytes()).await.is_err() {
            return false;
        }
        match (&script, method.as_str()) {
            (Script::PlayThenClose(packets), "PLAY") => {
                for p in packets {
                    if sock.write_all(p).await.is_err() {
                        return false;
                    }
                }
                sock.flush().await.ok();
                // Let the client take everything in before the connection drops.
                tokio::time::sleep(Duration::from_millis(300)).await;
                return false;
            }
            (Script::PlayAndHold(packets), "PLAY") => {
                for p in packets {
                    if sock.write_all(p).await.is_err() {
                        return false;
                    }
                }
            }
            _ => {}
        }
    }
}

/// Reads one RTSP request (no body), skipping interleaved data.
async fn read_request(sock: &mut TcpStream, buf: &mut Vec<u8>) -> Option<String> {
    loop {
        if buf.first() == Some(&b'$') && buf.len() >= 4 {
            let len = 4 + usize::from(u16::from_be_bytes([buf[2], buf[3]]));
            if buf.len() >= len {
                buf.drain(..len);
                continue;
            }
        } else if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let req = String::from_utf8_lossy(&buf[..end]).into_owned();
            buf.drain(..end + 4);
            return Some(req);
        }
        let mut chunk = [0u8; 4096];
        let n = sock.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Real H.264 access units (Annex-B, 4-byte start codes) and the SPS/PPS.
fn encode(count: u64) -> (Vec<Bytes>, Vec<Bytes>) {
    let spec = SyntheticSpec { gop_frames: 4, ..SyntheticSpec::sub("fake", "fake camera") };
    let mut source = FrameSource::new(&spec).expect("encoder");
    let mut aus = Vec::new();
    let mut sets = Vec::new();
    for i in 0..count {
        let e = source.produce(SystemTime::now(), i * 6000).expect("encode").expect("a picture");
        if let Some(c) = e.config {
            sets = c.parameter_sets.clone();
        }
        aus.push(e.frame.payload);
    }
    (aus, sets)
}

/// `count` pictures as interleaved RTP packets, 6000 ticks apart, with
/// the SDP announcing their parameter sets.
fn clip(count: u64) -> (Vec<Bytes>, String, Vec<Vec<u8>>) {
    let (aus, sets) = encode(count);
    let mut rtp = Rtp { seq: 1 };
    let packets = aus.iter().enumerate().flat_map(|(i, au)| rtp.access_unit(i as u32 * 6000, au)).collect();
    (aus, sdp(&sets), packets)
}

fn sdp(sets: &[Bytes]) -> String {
    use base64::Engine as _;
    let b64 = |b: &Bytes| base64::engine::general_purpose::STANDARD.encode(b);
    format!(
        "v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=fake\r\nc=IN IP4 0.0.0.0\r\nt=0 0\r\n\
         m=video 0 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\n\
         a=fmtp:96 packetization-mode=1;sprop-parameter-sets={},{}\r\na=control:track1\r\n",
        b64(&sets[0]),
        b64(&sets[1])
    )
}

/// RTP packetizer: one NAL per packet, interleaved on channel 0.
struct Rtp {
    seq: u16,
}

impl Rtp {
    fn packet(&mut self, ts: u32, marker: bool, payload: &[u8]) -> Vec<u8> {
        let mut p = vec![b'$', 0, 0, 0];
        p.extend_from_slice(&[0x80, 96 | if marker { 0x80 } else { 0 }]);
        p.extend_from_slice(&self.seq.to_be_bytes());
        p.extend_from_slice(&ts.to_be_bytes());
        p.extend_from_slice(&0x1234_5678u32.to_be_bytes());
        p.extend_from_slice(payload);
        let len = u16::try_from(p.len() - 4).expect("small packet");
        p[2..4].copy_from_slice(&len.to_be_bytes());
        self.seq = self.seq.wrapping_add(1);
        p
    }

    fn access_unit(&mut self, ts: u32, au: &[u8]) -> Vec<Vec<u8>> {
        let nals: Vec<&[u8]> = h264::nal_units(au).collect();
        nals.iter().enumerate().map(|(i, n)| self.packet(ts, i + 1 == nals.len(), n)).collect()
    }
}

fn spec(url: &str, creds: Option<(String, String)>) -> RtspSpec {
    RtspSpec::new("fake", Quality::Main, url, creds, RtspTransport::Tcp, Duration::from_secs(5), false)
        .expect("spec")
}

struct Running {
    status: Arc<StreamStatus>,
    reader: TrackReader,
    codecs: Arc<Mutex<Vec<Codec>>>,
    _writer_task: tokio::task::JoinHandle<()>,
    _hub: Hub,
}

fn start(spec: RtspSpec) -> Running {
    let hub = Hub::new();
    let key = TrackKey::new("fake", Quality::Main);
    let writer = hub.publish(key.clone());
    let reader = hub.subscribe(&key).expect("track");
    let status = Arc::new(StreamStatus::new(
        "fake",
        "fake",
        1,
        Quality::Main,
        CameraState::Connecting,
        SystemTime::now(),
    ));
    let codecs = Arc::new(Mutex::new(Vec::new()));
    let seen = codecs.clone();
    let hook: CodecHook = Arc::new(move |c| seen.lock().unwrap().push(c));
    let task = spawn(spec, writer, status.clone(), hook);
    Running { status, reader, codecs, _writer_task: task, _hub: hub }
}

async fn next(reader: &mut TrackReader) -> HubItem {
    tokio::time::timeout(Duration::from_secs(5), reader.next())
        .await
        .expect("a frame within 5 s")
        .expect("open")
}

async fn wait_state(status: &StreamStatus, name: &str) -> CameraState {
    for _ in 0..200 {
        let s = status.state();
        if s.name() == name {
            return s;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("camera never became {name}; it is {:?}", status.state());
}

#[tokio::test]
async fn frames_arrive_byte_identical_malformed_packets_are_counted_and_a_drop_reconnects() {
    let (aus, sets) = encode(8);
    let mut rtp = Rtp { seq: 1000 };
    let mut packets = Vec::new();
    for (i, au) in aus.iter().enumerate() {
        let ts = 90_000 + i as u32 * 6000;
        packets.extend(rtp.access_unit(ts, au));
        match i {
            // A NAL with the forbidden bit set, then a truncated STAP-A,
            // each in a timestamp of its own between two good pictures.
            2 => packets.push(rtp.packet(ts + 3000, true, &[0x81, 0xaa, 0xbb])),
            5 => packets.push(rtp.packet(ts + 3000, true, &[24, 0x00])),
            _ => {}
        }
    }
    let camera = FakeCamera::start(sdp(&sets), vec![Script::PlayThenClose(packets)]).await;
    let mut run = start(spec(&camera.url(), None));

    let mut got = Vec::new();
    for _ in 0..aus.len() {
        got.push(next(&mut run.reader).await);
    }
    for (i, (item, au)) in got.iter().zip(&aus).enumerate() {
        assert_eq!(item.frame.payload, au, "access unit {i} byte-identical (SPS/PPS/SEI/slices)");
        assert_eq!(item.frame.keyframe, i % 4 == 0, "access unit {i}");
        assert_eq!(item.config.parameter_sets, sets);
        assert_eq!((item.config.width, item.config.height), (320, 180));
    }
    for w in got.windows(2) {
        assert_eq!(w[1].frame.pts - w[0].frame.pts, 6000, "RTP time carried over");
    }
    assert_eq!(run.status.malformed(), 2, "both malformed packets counted");
    assert_eq!(run.codecs.lock().unwrap().first(), Some(&Codec::H264));

    // The camera hangs up: offline with the reason, then back on its own,
    // starting with a keyframe of a new GOP and later pts.
    let off = wait_state(&run.status, "offline").await;
    assert!(
        matches!(&off, CameraState::Offline { last_error, .. } if last_error.contains("closed")),
        "{off:?}"
    );
    let again = next(&mut run.reader).await;
    assert!(again.frame.keyframe && again.gop_seq > got.last().unwrap().gop_seq);
    assert!(again.frame.pts > got.last().unwrap().frame.pts, "pts keep increasing across sessions");
    assert_eq!(again.frame.payload, aus[0]);
    assert_eq!(run.status.state(), CameraState::Online);
    assert!(camera.connections.load(Ordering::SeqCst) >= 2);
}

#[tokio::test]
async fn wrong_credentials_say_authentication_failed_without_the_password() {
    let camera = FakeCamera::start(String::new(), vec![Script::Unauthorized]).await;
    // Credentials in the URL are taken out of it and used for auth.
    let url = camera.url().replace("rtsp://", "rtsp://admin:s3cret-pw@");
    let run = start(spec(&url, None));
    let CameraState::Offline { last_error, .. } = wait_state(&run.status, "offline").await else {
        panic!("the state was just waited for")
    };
    assert!(last_error.contains("authentication failed"), "{last_error}");
    assert!(!last_error.contains("s3cret-pw"), "{last_error}");
    let requests = camera.requests.lock().unwrap().clone();
    assert!(
        requests.iter().any(|r| r.contains("Authorization: Basic")),
        "credentials were offered: {requests:?}"
    );
    assert!(requests.iter().all(|r| !r.contains("s3cret-pw")), "URL userinfo never sent on the wire");
}

#[tokio::test]
async fn unreachable_camera_goes_offline_and_returns_within_a_second_of_coming_back() {
    // A port that refuses connections for a while, then a camera on it.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let run = start(spec(&format!("rtsp://127.0.0.1:{port}/cam"), None));
    let CameraState::Offline { last_error, .. } = wait_state(&run.status, "offline").await else {
        panic!("the state was just waited for")
    };
    assert!(last_error.contains("127.0.0.1"), "{last_error}");
    // Let the backoff grow past the probe interval.
    tokio::time::sleep(Duration::from_millis(3_600)).await;
    let (_, sdp, packets) = clip(4);
    let listener = TcpListener::bind(("127.0.0.1", port)).await.expect("rebind");
    let back = Instant::now();
    tokio::spawn(async move {
        while let Ok((sock, _)) = listener.accept().await {
            tokio::spawn(serve(
                sock,
                sdp.clone(),
                Script::PlayThenClose(packets.clone()),
                Default::default(),
            ));
        }
    });
    wait_state(&run.status, "online").await;
    let took = back.elapsed();
    assert!(took < Duration::from_millis(2_500), "online {took:?} after the camera came back");
}

#[tokio::test]
async fn a_silent_camera_is_detected_as_stalled_and_reconnected() {
    let (aus, sdp, packets) = clip(4);
    // Four pictures, then silence on an open connection.
    let camera = FakeCamera::start(sdp, vec![Script::PlayAndHold(packets)]).await;
    let mut spec = spec(&camera.url(), None);
    spec.stall = Duration::from_millis(700);
    let mut run = start(spec);
    for _ in 0..aus.len() {
        next(&mut run.reader).await;
    }
    let CameraState::Offline { last_error, .. } = wait_state(&run.status, "offline").await else {
        panic!("the state was just waited for")
    };
    assert_eq!(last_error, "no video for 0.7 s: stream stalled");
    let again = next(&mut run.reader).await;
    assert!(again.frame.keyframe, "a fresh session starts at a keyframe");
    assert!(camera.connections.load(Ordering::SeqCst) >= 2, "reconnected");
    assert!(camera.closed_by_client.load(Ordering::SeqCst) >= 1, "the stalled session was closed");
}

#[tokio::test]
async fn on_demand_pulls_only_while_watched() {
    let (_, sdp, packets) = clip(4);
    let camera = FakeCamera::start(sdp, vec![Script::PlayAndHold(packets)]).await;
    let mut spec = spec(&camera.url(), None);
    spec.on_demand = true;
    spec.linger = Duration::from_millis(300);
    let hub = Hub::new();
    let key = TrackKey::new("fake", Quality::Main);
    let writer = hub.publish(key.clone());
    let status =
        Arc::new(StreamStatus::new("fake", "fake", 1, Quality::Main, CameraState::Idle, SystemTime::now()));
    let _task = spawn(spec, writer, status.clone(), Arc::new(|_| {}));

    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(camera.connections.load(Ordering::SeqCst), 0, "nobody watches: the camera is not pulled");
    assert_eq!(status.state(), CameraState::Idle);

    let mut reader = hub.subscribe(&key).expect("track");
    let first = next(&mut reader).await;
    assert!(first.frame.keyframe);
    assert_eq!(status.state(), CameraState::Online);
    assert_eq!(camera.connections.load(Ordering::SeqCst), 1);

    drop(reader);
    wait_state(&status, "idle").await;
    for _ in 0..100 {
        if camera.closed_by_client.load(Ordering::SeqCst) == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(camera.closed_by_client.load(Ordering::SeqCst), 1, "the RTSP session ends after the linger");
    assert_eq!(camera.connections.load(Ordering::SeqCst), 1);
}

#[test]
fn urls_are_redacted_and_credentials_moved_out() {
    assert_eq!(redact_url("rtsp://admin:pw@10.1.2.3:554/ch1?x=a@b"), "rtsp://***@10.1.2.3:554/ch1?x=a@b");
    assert_eq!(redact_url("rtsp://10.1.2.3/ch1"), "rtsp://10.1.2.3/ch1");
    assert_eq!(redact_url("not a url"), "not a url");
    let s = RtspSpec::new(
        "c",
        Quality::Sub,
        "rtsp://ad%40min:p%3Aw@cam.invalid/s",
        None,
        RtspTransport::Udp,
        Duration::from_secs(5),
        false,
    )
    .expect("spec");
    assert_eq!(s.url.as_str(), "rtsp://cam.invalid/s");
    let c = s.credentials.as_ref().expect("from URL");
    assert_eq!((c.username.as_str(), c.password.as_str()), ("ad@min", "p:w"));
    let s = RtspSpec::new(
        "c",
        Quality::Sub,
        "rtsp://u:x@cam.invalid/s",
        Some(("cfg".into(), "pw".into())),
        RtspTransport::Tcp,
        Duration::from_secs(5),
        false,
    )
    .expect("spec");
    assert_eq!(s.credentials.as_ref().map(|c| c.username.as_str()), Some("cfg"), "config wins over URL");
    assert_eq!(scrub("bad pw=hunter22", Some("hunter22")), "bad pw=***");
}

#[test]
fn pts_continue_across_sessions() {
    let mut m = PtsMap::default();
    assert_eq!(m.map(0, 90_000, 1_000), 1_000);
    assert_eq!(m.map(3_000, 90_000, 9_999), 4_000);
    m.new_session();
    // A camera whose clock is behind: the new session still starts later.
    assert_eq!(m.map(0, 90_000, 10), 4_001);
    assert_eq!(m.map(8_000, 8_000, 10), 4_001 + 90_000);
    m.new_session();
    assert_eq!(m.map(0, 90_000, 500_000), 500_000);
}

#[test]
fn runaway_camera_timestamps_saturate_and_never_overflow() {
    let mut m = PtsMap::default();
    // A camera's extended RTP time at the far end, at the slowest clock rate.
    assert_eq!(m.map(0, 1, 0), 0);
    assert_eq!(m.map(i64::MAX, 1, 0), u64::MAX);
    m.new_session();
    assert_eq!(m.map(0, 1, 0), u64::MAX, "a new session after a saturated one does not wrap");
    assert_eq!(m.map(i64::MIN, 1, 0), 0, "time running backwards stops at 0");
    assert_eq!(m.map(5, 0, 0), u64::MAX, "a clock rate of 0 from the SDP is taken as 1");
}
