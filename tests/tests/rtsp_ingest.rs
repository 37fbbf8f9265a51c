//! RTSP ingest against a real camera we did not write: GStreamer's RTSP
//! server (tests/rtsp_server.py) serving live x264/x265 test patterns. The
//! test plays the relay (QUIC, like quic_session.rs) and checks what the real
//! agent delivers: keyframe-led GOPs, increasing pts, and NAL units
//! byte-identical to what the camera's encoder produced.
//!
//! Byte identity: the camera tees its encoder output (Annex-B, the very
//! buffers the RTP payloader packetizes) into a file. Every NAL the
//! subscriber receives must appear in that file, in the same order and
//! without a gap (TCP) or in order (UDP, where the network may drop). Only
//! parameter sets and access unit delimiters are left out of the comparison:
//! RTP moves them (SDP, payloader) and the agent re-inserts parameter sets
//! before each keyframe; they are checked separately against the GOP header.

use anyhow::{bail, Context, Result};
use ponte_proto::media::{Codec, Quality};
use ponte_proto::{h264, h265};
use ponte_tests::quic::{AgentSession, Answer, FakeRelay, ReceivedFrame};
use ponte_tests::rtsp_camera::{require_gstreamer_rtsp, CameraOptions, RtspCamera};
use ponte_tests::{
    bin_path, http_get, http_request, AgentConfig, Device, DeviceExt, Pki, Proc, RelayTarget, RtspSource,
    RtspTransport, Secret, Stack, StackSpec,
};
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::path::Path;
use std::time::{Duration, Instant};
use tokio::sync::mpsc::UnboundedReceiver;

const T: Duration = Duration::from_secs(20);

/// A single-lens RTSP device pulling `url`; `settings` sets its RTSP keys.
fn rtsp_device(id: &str, url: &str, settings: impl FnOnce(&mut RtspSource)) -> Device {
    let mut device = Device::rtsp(id, url);
    settings(device.rtsp_mut());
    device
}

/// Starts the agent with `devices`, dialling every relay in `relays`.
fn spawn_agent(
    pki: &Pki,
    dir: &Path,
    relays: &[&FakeRelay],
    devices: Vec<Device>,
    env: &[(&str, &str)],
) -> Result<Proc> {
    let relays = relays
        .iter()
        .map(|r| Ok(RelayTarget::new(&r.site, r.endpoint.local_addr()?)))
        .collect::<Result<Vec<_>>>()?;
    let cfg = AgentConfig::new("master", pki.tls("master"), relays, devices);
    let path = cfg.write(dir.join("agent.toml"))?;
    let mut cmd = std::process::Command::new(bin_path("ponte-agent")?);
    cmd.arg("run").arg("--config").arg(path).env("RUST_LOG", "info");
    for (k, v) in env {
        cmd.env(k, v);
    }
    Proc::spawn_command("agent", cmd)
}

async fn subscribe_ok(session: &mut AgentSession, id: u64, camera: &str) -> Result<()> {
    match session.subscribe(id, camera, Quality::Main).await? {
        Answer::Ok => Ok(()),
        Answer::Refused(code, reason) => bail!("subscription {id} to `{camera}` refused: {code:?} {reason}"),
    }
}

/// Everything received within `window`.
async fn collect(rx: &mut UnboundedReceiver<ReceivedFrame>, window: Duration) -> Vec<ReceivedFrame> {
    let deadline = tokio::time::Instant::now() + window;
    let mut out = Vec::new();
    while let Ok(Some(f)) = tokio::time::timeout_at(deadline, rx.recv()).await {
        out.push(f);
    }
    out
}

fn nal_type(codec: Codec, nal: &[u8]) -> u8 {
    match codec {
        Codec::H264 => h264::nal_type(nal).unwrap_or(0),
        Codec::H265 => h265::nal_type(nal).unwrap_or(0),
    }
}

/// Parameter sets and delimiters: moved around by RTP, compared separately.
fn is_out_of_band(codec: Codec, nal: &[u8]) -> bool {
    let t = nal_type(codec, nal);
    match codec {
        Codec::H264 => matches!(t, h264::nal::SPS | h264::nal::PPS | h264::nal::AUD),
        Codec::H265 => matches!(t, h265::nal::VPS | h265::nal::SPS | h265::nal::PPS | h265::nal::AUD),
    }
}

/// One subscription's frames in decoding order (GOP streams are read
/// concurrently, so arrival order may interleave two GOPs).
fn stream_of(frames: &[ReceivedFrame], subscription: u64) -> Vec<ReceivedFrame> {
    let mut mine: Vec<ReceivedFrame> =
        frames.iter().filter(|f| f.subscription == subscription).cloned().collect();
    mine.sort_by_key(|f| f.gop); // stable: frames keep their order within a GOP
    mine
}

/// Every GOP starts with a keyframe carrying its parameter sets in band, the
/// GOP header says codec and size, pts strictly increase.
fn check_gops(frames: &[ReceivedFrame], codec: Codec) -> Result<()> {
    if frames.is_empty() {
        bail!("no frames");
    }
    let sets = if codec == Codec::H264 { 2 } else { 3 };
    let mut last_gop = None;
    for f in frames {
        if f.config.codec != codec || (f.config.width, f.config.height) != (320, 240) {
            bail!("GOP {} header: {:?} {}x{}", f.gop, f.config.codec, f.config.width, f.config.height);
        }
        if f.config.parameter_sets.len() != sets {
            bail!("GOP {} header carries {} parameter sets", f.gop, f.config.parameter_sets.len());
        }
        if last_gop != Some(f.gop) {
            let irap = match codec {
                Codec::H264 => h264::is_keyframe(&f.payload),
                Codec::H265 => h265::is_keyframe(&f.payload),
            };
            if !f.keyframe || !irap {
                bail!(
                    "GOP {} starts with a non-keyframe (flag {}, IDR/IRAP slice {irap})",
                    f.gop,
                    f.keyframe
                );
            }
            let in_band = h264::nal_units(&f.payload).filter(|n| is_out_of_band(codec, n)).count();
            for ps in &f.config.parameter_sets {
                if !h264::nal_units(&f.payload).any(|n| n == &ps[..]) {
                    bail!("GOP {} keyframe lacks a parameter set of its header ({in_band} in band)", f.gop);
                }
            }
            last_gop = Some(f.gop);
        }
    }
    for w in frames.windows(2) {
        if w[1].pts <= w[0].pts {
            bail!(
                "pts not strictly increasing: {} (GOP {}) then {} (GOP {})",
                w[0].pts,
                w[0].gop,
                w[1].pts,
                w[1].gop
            );
        }
    }
    Ok(())
}

/// The NAL units compared for byte identity.
fn compared_nals(codec: Codec, payloads: impl IntoIterator<Item = bytes::Bytes>) -> Vec<Vec<u8>> {
    payloads
        .into_iter()
        .flat_map(|p| {
            h264::nal_units(&p).filter(|n| !is_out_of_band(codec, n)).map(<[u8]>::to_vec).collect::<Vec<_>>()
        })
        .collect()
}

fn digest(nals: &[Vec<u8>]) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    nals.hash(&mut h);
    h.finish()
}

/// `got` appears in `sent` in order; without gaps when `contiguous`.
/// Returns where it starts.
fn assert_sent_by_camera(got: &[Vec<u8>], sent: &[Vec<u8>], contiguous: bool) -> Result<usize> {
    let mut at: HashMap<&[u8], Vec<usize>> = HashMap::new();
    for (i, n) in sent.iter().enumerate() {
        at.entry(n).or_default().push(i);
    }
    let first = got.first().context("nothing received")?;
    let start =
        *at.get(&first[..]).and_then(|v| v.first()).context("the first NAL received was never sent")?;
    let mut pos = start;
    for (i, n) in got.iter().enumerate() {
        let next = at.get(&n[..]).and_then(|v| v.iter().find(|&&p| p >= pos)).copied();
        match next {
            Some(p) if !contiguous || p == pos => pos = p + 1,
            Some(p) => bail!("NAL {i} received is the camera's NAL {p}, expected {pos}: a gap in TCP delivery"),
            None => bail!(
                "NAL {i} received (type {}, {} bytes) is not byte-identical to anything the camera sent after its NAL {pos}",
                n.first().map_or(0, |b| *b),
                n.len()
            ),
        }
    }
    if contiguous {
        let window = &sent[start..start + got.len()];
        assert_eq!(digest(got), digest(window), "hash of NAL payloads, agent vs camera");
    }
    Ok(start)
}

/// Reads a recording, waiting briefly for the last writes to land.
async fn recorded_nals(camera: &RtspCamera, codec: Codec) -> Result<Vec<Vec<u8>>> {
    tokio::time::sleep(Duration::from_millis(300)).await;
    let files = camera.recordings();
    let path = files.last().context("the camera recorded nothing")?;
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(compared_nals(codec, [bytes::Bytes::from(bytes)]))
}

/// Waits for the agent's `camera online` line for `camera`, from line `from` on.
async fn camera_online(agent: &mut Proc, from: usize, camera: &str) -> Result<String> {
    let deadline = Instant::now() + T;
    loop {
        let lines = agent.lines();
        if let Some(l) = lines.iter().skip(from).find(|l| l.contains("camera online") && l.contains(camera)) {
            return Ok(l.clone());
        }
        if !agent.is_running() || Instant::now() > deadline {
            bail!("camera `{camera}` never came online; agent output:\n{}", agent.tail(40));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// One camera, two sites, three subscriptions: one RTSP session at the
/// camera, and every viewer gets the camera's own bytes.
#[tokio::test]
async fn h264_over_tcp_reaches_two_sites_byte_identical_through_one_rtsp_session() -> Result<()> {
    if !require_gstreamer_rtsp() {
        return Ok(());
    }
    let _heavy = ponte_tests::e2e_lock();
    let dir = tempfile::tempdir()?;
    let camera = RtspCamera::start(CameraOptions {
        protocols: Some("tcp"),
        record: Some(dir.path().join("rec")),
        ..Default::default()
    })
    .await?;
    let pki = Pki::create(dir.path().join("pki"), &["master", "carabinieri", "questura"]).await?;
    let (cc, qu) = (FakeRelay::listen(&pki, "carabinieri")?, FakeRelay::listen(&pki, "questura")?);
    let device = rtsp_device("cam-tcp", &camera.url("h264"), |r| r.transport = RtspTransport::Tcp);
    let mut agent = spawn_agent(&pki, dir.path(), &[&cc, &qu], vec![device], &[])?;
    let (mut a, mut b) = tokio::try_join!(cc.accept(), qu.accept())?;
    for s in [&a, &b] {
        let entry = s.catalog.iter().find(|c| c.id == "cam-tcp").context("camera in each site's catalog")?;
        assert_eq!(entry.qualities, [Quality::Main], "no `sub` URL configured, so no substream offered");
    }
    camera_online(&mut agent, 0, "cam-tcp").await?;

    let (mut rx_a, mut rx_b) = (a.collect_media(), b.collect_media());
    subscribe_ok(&mut a, 1, "cam-tcp").await?;
    subscribe_ok(&mut a, 2, "cam-tcp").await?;
    subscribe_ok(&mut b, 7, "cam-tcp").await?;
    let (got_a, got_b) =
        tokio::join!(collect(&mut rx_a, Duration::from_secs(3)), collect(&mut rx_b, Duration::from_secs(3)));
    let sent = recorded_nals(&camera, Codec::H264).await?;

    for (frames, sub) in [(&got_a, 1), (&got_a, 2), (&got_b, 7)] {
        let stream = stream_of(frames, sub);
        check_gops(&stream, Codec::H264).with_context(|| format!("subscription {sub}"))?;
        assert!(stream.len() >= 45, "subscription {sub}: about 30 fps for 3 s, got {} frames", stream.len());
        let nals = compared_nals(Codec::H264, stream.iter().map(|f| f.payload.clone()));
        let start =
            assert_sent_by_camera(&nals, &sent, true).with_context(|| format!("subscription {sub}"))?;
        println!(
            "subscription {sub}: {} frames, {} NALs identical to the camera's NALs {start}.. (hash {:016x})",
            stream.len(),
            nals.len(),
            digest(&nals)
        );
    }
    assert_eq!(camera.sessions(), 1, "two sites and three viewers, one RTSP session at the camera");
    assert_eq!(camera.recordings().len(), 1, "one encoder run");
    assert!(camera.transports().iter().all(|t| t.contains("TCP")), "{:?}", camera.transports());
    Ok(())
}

/// A camera, the real agent with `devices`, and the test playing the
/// carabinieri relay, its session with the agent accepted.
struct Rig {
    camera: RtspCamera,
    agent: Proc,
    session: AgentSession,
    _relay: FakeRelay,
    _dir: tempfile::TempDir,
}

impl Rig {
    /// `record`: the camera records what it encodes, for byte comparison.
    async fn start(
        mut options: CameraOptions,
        record: bool,
        devices: impl FnOnce(&RtspCamera) -> Vec<Device>,
        env: &[(&str, &str)],
    ) -> Result<Rig> {
        let dir = tempfile::tempdir()?;
        if record {
            options.record = Some(dir.path().join("rec"));
        }
        let camera = RtspCamera::start(options).await?;
        let pki = Pki::create(dir.path().join("pki"), &["master", "carabinieri"]).await?;
        let relay = FakeRelay::listen(&pki, "carabinieri")?;
        let agent = spawn_agent(&pki, dir.path(), &[&relay], devices(&camera), env)?;
        let session = relay.accept().await?;
        Ok(Rig { camera, agent, session, _relay: relay, _dir: dir })
    }

    /// Waits for `camera` to be online, subscribes to its main stream as
    /// subscription 1 and returns what arrives within `window`, with the
    /// receiver for more.
    async fn watch(
        &mut self,
        camera: &str,
        window: Duration,
    ) -> Result<(Vec<ReceivedFrame>, UnboundedReceiver<ReceivedFrame>)> {
        camera_online(&mut self.agent, 0, camera).await?;
        let mut rx = self.session.collect_media();
        subscribe_ok(&mut self.session, 1, camera).await?;
        let got = stream_of(&collect(&mut rx, window).await, 1);
        Ok((got, rx))
    }
}

#[tokio::test]
async fn h264_over_udp_arrives_keyframe_led_and_identical() -> Result<()> {
    if !require_gstreamer_rtsp() {
        return Ok(());
    }
    let _heavy = ponte_tests::e2e_lock();
    // UDP only: a client falling back to TCP would be refused.
    let options = CameraOptions { protocols: Some("udp"), ..Default::default() };
    let mut rig = Rig::start(
        options,
        true,
        |c| vec![rtsp_device("cam-udp", &c.url("h264"), |r| r.transport = RtspTransport::Udp)],
        &[],
    )
    .await?;
    let (got, _rx) = rig.watch("cam-udp", Duration::from_secs(3)).await?;
    check_gops(&got, Codec::H264)?;
    assert!(got.len() >= 45, "about 30 fps for 3 s, got {} frames", got.len());
    let sent = recorded_nals(&rig.camera, Codec::H264).await?;
    let nals = compared_nals(Codec::H264, got.iter().map(|f| f.payload.clone()));
    assert_sent_by_camera(&nals, &sent, false)?;
    println!("udp: {} frames, {} NALs all byte-identical to the camera's, in order", got.len(), nals.len());
    let transports = rig.camera.transports();
    assert!(transports.len() == 1 && transports[0].contains("RTP/AVP/UDP"), "{transports:?}");
    assert_eq!(rig.camera.sessions(), 1);
    Ok(())
}

/// H.265 travels unchanged; the catalog, configured without a codec hint
/// (so announcing H.264), is corrected to H.265 once the camera is reached.
#[tokio::test]
async fn h265_over_tcp_travels_unchanged_and_the_catalog_learns_the_codec() -> Result<()> {
    if !require_gstreamer_rtsp() {
        return Ok(());
    }
    let _heavy = ponte_tests::e2e_lock();
    let mut rig = Rig::start(
        CameraOptions::default(),
        true,
        |c| vec![rtsp_device("cam-hevc", &c.url("h265"), |_| {})],
        &[],
    )
    .await?;
    let codec_of = |s: &AgentSession| s.catalog.iter().find(|c| c.id == "cam-hevc").map(|c| c.codec);
    let deadline = Instant::now() + T;
    while codec_of(&rig.session) != Some(Codec::H265) {
        if Instant::now() > deadline {
            bail!("the catalog never said h265: {:?}", rig.session.catalog);
        }
        if let ponte_proto::wire::Control::Catalog { cameras } = rig.session.next_control().await? {
            rig.session.catalog = cameras;
        }
    }
    let (got, _rx) = rig.watch("cam-hevc", Duration::from_secs(3)).await?;
    check_gops(&got, Codec::H265)?;
    let types: Vec<u8> = got[0].config.parameter_sets.iter().map(|p| nal_type(Codec::H265, p)).collect();
    assert_eq!(types, [h265::nal::VPS, h265::nal::SPS, h265::nal::PPS]);
    assert!(got.len() >= 45, "about 30 fps for 3 s, got {} frames", got.len());
    let sent = recorded_nals(&rig.camera, Codec::H265).await?;
    let nals = compared_nals(Codec::H265, got.iter().map(|f| f.payload.clone()));
    assert_sent_by_camera(&nals, &sent, true)?;
    println!("h265: {} frames, {} NALs identical (hash {:016x})", got.len(), nals.len(), digest(&nals));
    assert_eq!(rig.camera.sessions(), 1);
    Ok(())
}

#[tokio::test]
async fn digest_auth_streams_with_the_right_password_and_reports_the_wrong_one_without_leaking_it(
) -> Result<()> {
    if !require_gstreamer_rtsp() {
        return Ok(());
    }
    let _heavy = ponte_tests::e2e_lock();
    let options = CameraOptions {
        protocols: Some("tcp"),
        credentials: Some(("ponte".into(), "Right-Pa55word".into())),
        ..Default::default()
    };
    let devices = |c: &RtspCamera| {
        let good = |r: &mut RtspSource| {
            r.username = Some("ponte".into());
            r.password_env = Some("CAMERA_GOOD_PASSWORD".into());
        };
        let bad = |r: &mut RtspSource| {
            r.username = Some("ponte".into());
            r.password = Some(Secret("Wrong-Pa55word".into()));
        };
        vec![rtsp_device("cam-good", &c.url("h264"), good), rtsp_device("cam-bad", &c.url("h264"), bad)]
    };
    let env = [("CAMERA_GOOD_PASSWORD", "Right-Pa55word")];
    let mut rig = Rig::start(options, false, devices, &env).await?;
    let (got, _rx) = rig.watch("cam-good", Duration::from_secs(2)).await?;
    check_gops(&got, Codec::H264)?;

    let line = rig.agent.wait_for_line("camera offline", T).await?;
    assert!(line.contains("cam-bad"), "{line}");
    assert!(line.contains("authentication failed"), "says why: {line}");
    let output = rig.agent.lines().join("\n");
    assert!(
        !output.contains("Wrong-Pa55word") && !output.contains("Right-Pa55word"),
        "no password in the agent's output"
    );
    assert!(
        !output.lines().any(|l| l.contains("cam-good") && l.contains("camera offline")),
        "the right password works"
    );
    assert_eq!(rig.camera.sessions(), 1, "only the camera with the right password got a session");
    Ok(())
}

/// The camera dies and comes back: offline with the error, frames again
/// within 5 s of its return, and the subscriber never re-subscribes.
#[tokio::test]
async fn camera_restart_goes_offline_then_streams_again_to_the_same_subscriber() -> Result<()> {
    if !require_gstreamer_rtsp() {
        return Ok(());
    }
    let _heavy = ponte_tests::e2e_lock();
    let options = CameraOptions { protocols: Some("tcp"), ..Default::default() };
    let mut rig =
        Rig::start(options, false, |c| vec![rtsp_device("cam-r", &c.url("h264"), |_| {})], &[]).await?;
    let (before, mut rx) = rig.watch("cam-r", Duration::from_secs(2)).await?;
    check_gops(&before, Codec::H264)?;
    let last = before.last().context("frames before the outage")?.clone();
    let Rig { camera, agent, .. } = &mut rig;

    let mark = agent.line_count();
    let killed = Instant::now();
    camera.kill();
    let offline = agent.wait_for_line_from(mark, "camera offline", T).await?;
    println!("offline after {:?}: {offline}", killed.elapsed());
    assert!(offline.contains("cam-r") && offline.contains("error"), "{offline}");
    // Down long enough for several failed reconnects (refused connections).
    tokio::time::sleep(Duration::from_secs(3)).await;
    let refused = agent.lines()[mark..].iter().any(|l| l.contains("cam-r") && l.contains("still offline"));
    assert!(refused, "reconnect attempts while the camera is down are reported");
    while rx.try_recv().is_ok() {} // anything still in flight from before

    let mark = agent.line_count();
    camera.restart().await?;
    let back = Instant::now();
    let first = tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .context("no frame within 5 s of the camera's return")?
        .context("media reader ended")?;
    let took = first.at.saturating_duration_since(back);
    println!("camera back: first frame at the subscriber {took:?} after the server listened again");
    assert!(first.subscription == 1 && first.keyframe, "resumes with a keyframe on the same subscription");
    assert!(first.gop > last.gop, "a new GOP: {} after {}", first.gop, last.gop);
    assert!(first.pts > last.pts, "pts keep increasing across the outage");
    let mut after = vec![first];
    after.extend(collect(&mut rx, Duration::from_secs(1)).await);
    check_gops(&stream_of(&after, 1), Codec::H264)?;
    let online = agent.wait_for_line_from(mark, "camera online", T).await?;
    assert!(online.contains("offline_ms"), "{online}");
    assert_eq!(camera.sessions(), 1, "one session on the restarted camera");
    Ok(())
}

/// A browser that cannot decode H.265 asks for an H.265-only camera: 415,
/// saying why and what to use.
#[tokio::test]
async fn whep_refuses_an_h265_camera_naming_the_substream_or_rtsp() -> Result<()> {
    if !require_gstreamer_rtsp() {
        return Ok(());
    }
    let _heavy = ponte_tests::e2e_lock();
    let camera = RtspCamera::start(CameraOptions::default()).await?;
    // No codec hint: the relay learns H.265 from the agent's corrected catalog.
    let stack = Stack::start_with(StackSpec {
        devices: vec![rtsp_device("cam-hevc", &camera.url("h265"), |_| {})],
        ..StackSpec::default()
    })
    .await?;
    let catalog_url = format!("{}/api/catalog", stack.base_url());
    ponte_tests::wait_until("the relay's catalog to say h265", T, Duration::from_millis(100), || async {
        let catalog = http_get(&catalog_url).await?.json()?;
        Ok((catalog["cameras"][0]["codec"] == "h265").then_some(()))
    })
    .await?;
    let offer = include_str!("data/chrome_offer.sdp").replace('\n', "\r\n");
    let url = format!("{}/whep/cam-hevc", stack.base_url());
    let res = http_request(
        "POST",
        &url,
        &[("Content-Type", "application/sdp")],
        offer.as_bytes(),
        Duration::from_secs(10),
    )
    .await?;
    println!("WHEP for an H.265 camera: {} {}", res.status, res.text());
    assert_eq!(res.status, 415, "{}", res.text());
    let text = res.text();
    // No substream, no `[rtsp]` here: it says why and what the master room can do.
    assert!(text.contains("is H.265") && text.contains("RTSP") && text.contains("browser_h264"), "{text}");
    Ok(())
}
