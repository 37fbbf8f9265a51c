//! RTSP egress against real clients we did not write: ffprobe, ffmpeg and
//! GStreamer's rtspsrc read the relay's streams (a synthetic H.264 camera,
//! and a real H.265 RTSP camera through the agent's ingest) over interleaved
//! TCP and UDP; Digest authentication and the viewer's narrowing; hostile
//! requests leave the server serving.

use anyhow::{bail, Context, Result};
use ponte_proto::media::Codec;
use ponte_tests::rtsp_camera::{require_gstreamer_rtsp, CameraOptions, RtspCamera};
use ponte_tests::{
    free_tcp_port, http_get, relay_digest_viewer, relay_token, Device, DeviceExt, Proc, RelayConfig, Stack,
    StackSpec, Tweak,
};
use serde_json::Value;
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

const FFPROBE: &str = "/usr/bin/ffprobe";
const FFMPEG: &str = "/usr/bin/ffmpeg";
const GST_LAUNCH: &str = "/usr/bin/gst-launch-1.0";
/// Budget of one client run.
const RUN_TIMEOUT: Duration = Duration::from_secs(30);

fn require_clients() -> bool {
    ponte_tests::require_program(FFPROBE, "ffmpeg")
        && ponte_tests::require_program(FFMPEG, "ffmpeg")
        && ponte_tests::require_program(GST_LAUNCH, "gstreamer1.0-tools")
}

/// A finished client run.
struct Run {
    ok: bool,
    stdout: String,
    stderr: String,
    elapsed: Duration,
}

async fn run(program: &str, args: &[&str]) -> Result<Run> {
    let started = Instant::now();
    let child = tokio::process::Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {program}"))?;
    let out = tokio::time::timeout(RUN_TIMEOUT, child.wait_with_output())
        .await
        .with_context(|| format!("{program} {args:?} still running after {RUN_TIMEOUT:?}"))??;
    Ok(Run {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        elapsed: started.elapsed(),
    })
}

/// What ffprobe reports about the first stream.
#[derive(Debug, PartialEq, Eq)]
struct Probe {
    codec: String,
    width: u64,
    height: u64,
}

async fn ffprobe(url: &str, transport: &str) -> Result<(Probe, Duration)> {
    let r = run(
        FFPROBE,
        &[
            "-v",
            "error",
            "-rtsp_transport",
            transport,
            "-show_entries",
            "stream=codec_name,width,height",
            "-of",
            "json",
            url,
        ],
    )
    .await?;
    if !r.ok {
        bail!("ffprobe -rtsp_transport {transport} {url} failed: {}{}", r.stderr, r.stdout);
    }
    let json: Value =
        serde_json::from_str(&r.stdout).with_context(|| format!("ffprobe output: {}", r.stdout))?;
    let s = &json["streams"][0];
    let probe = Probe {
        codec: s["codec_name"].as_str().unwrap_or_default().to_owned(),
        width: s["width"].as_u64().unwrap_or(0),
        height: s["height"].as_u64().unwrap_or(0),
    };
    eprintln!(
        "ffprobe -rtsp_transport {transport} {url}: {probe:?} in {:.0} ms",
        r.elapsed.as_secs_f64() * 1e3
    );
    Ok((probe, r.elapsed))
}

/// ffmpeg's own account of a decode.
struct Decode {
    frames: u64,
    out_time_us: u64,
    first_frame_after: Option<Duration>,
    errors: String,
    elapsed: Duration,
}

/// `ffmpeg -rtsp_transport tcp -i URL -t SECS -f null -`, with `-v error`
/// (so any output on stderr is a decoding or protocol error) and progress
/// lines read as they come to time the first decoded frame.
async fn ffmpeg_decode(url: &str, transport: &str, secs: u32) -> Result<Decode> {
    let started = Instant::now();
    let mut child = ponte_tests::spawn_ffmpeg_reader(url, transport, secs)?;
    let mut stderr = child.stderr.take().context("ffmpeg stderr")?;
    let errors = tokio::spawn(async move {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s).await;
        s
    });
    let mut lines = BufReader::new(child.stdout.take().context("ffmpeg stdout")?).lines();
    let (mut frames, mut out_time_us, mut first_frame_after) = (0, 0, None);
    let read = async {
        while let Some(line) = lines.next_line().await? {
            if let Some(v) = line.strip_prefix("frame=") {
                frames = v.trim().parse().unwrap_or(frames);
                if frames > 0 && first_frame_after.is_none() {
                    first_frame_after = Some(started.elapsed());
                }
            } else if let Some(v) = line.strip_prefix("out_time_us=") {
                out_time_us = v.trim().parse().unwrap_or(out_time_us);
            }
        }
        anyhow::Ok(())
    };
    tokio::time::timeout(RUN_TIMEOUT, read).await.context("ffmpeg did not finish in time")??;
    let status = tokio::time::timeout(Duration::from_secs(5), child.wait()).await??;
    let errors = errors.await.unwrap_or_default();
    if !status.success() {
        bail!("ffmpeg -i {url} exited {status}: {errors}");
    }
    let d = Decode { frames, out_time_us, first_frame_after, errors, elapsed: started.elapsed() };
    eprintln!(
        "ffmpeg -rtsp_transport {transport} {url}: {} frames, {:.2} s of video, first frame after {:.0} ms, done in {:.1} s",
        d.frames,
        d.out_time_us as f64 / 1e6,
        d.first_frame_after.unwrap_or_default().as_secs_f64() * 1e3,
        d.elapsed.as_secs_f64()
    );
    Ok(d)
}

/// GStreamer's rtspsrc plays `buffers` decoded frames of exactly
/// `width`×`height` (a capsfilter refuses any other size), then EOS.
async fn gstreamer_plays(url: &str, protocols: &str, width: u64, height: u64) -> Result<()> {
    let location = format!("location={url}");
    let protocols = format!("protocols={protocols}");
    let caps = format!("video/x-raw,width={width},height={height}");
    let r = run(
        GST_LAUNCH,
        &[
            "rtspsrc",
            &location,
            &protocols,
            "!",
            "decodebin",
            "!",
            &caps,
            "!",
            "identity",
            "eos-after=30",
            "!",
            "fakesink",
        ],
    )
    .await?;
    eprintln!("gst-launch rtspsrc {url} ({protocols}): {:.0} ms", r.elapsed.as_secs_f64() * 1e3);
    // Thirty decoded frames reach the sink, which ends the pipeline (EOS).
    // rtspsrc sometimes reports a failed write of its own TEARDOWN while
    // the pipeline is already being freed after the EOS (the server has
    // answered and the socket is closing): that is not playback failing.
    let after_eos = r.stdout.split_once("Got EOS").map(|(_, rest)| rest).unwrap_or_default();
    let shutdown_only = !r.ok && after_eos.contains("Freeing pipeline");
    if !r.stdout.contains("Got EOS") || (!r.ok && !shutdown_only) {
        bail!("gst-launch-1.0 rtspsrc {url} {protocols} did not play:\n{}\n{}", r.stdout, r.stderr);
    }
    if shutdown_only {
        eprintln!(
            "gst-launch rtspsrc {url}: played to EOS; an error while tearing down after it: {}",
            r.stderr.trim()
        );
    }
    Ok(())
}

/// A relay with RTSP on `127.0.0.1:port`.
fn rtsp_on(port: u16) -> Tweak<RelayConfig> {
    Tweak::relay(move |relay| {
        relay.rtsp_on(port);
    })
}

async fn status(stack: &Stack) -> Result<Value> {
    http_get(&format!("{}/api/status", stack.base_url())).await?.ensure_success()?.json()
}

/// ffprobe (TCP and UDP), ffmpeg and GStreamer read the synthetic H.264
/// camera's main stream and substream; afterwards no session is left and
/// the camera is unsubscribed upstream.
#[tokio::test]
async fn real_clients_read_h264_main_and_sub_over_tcp_and_udp() -> Result<()> {
    if !require_clients() {
        return Ok(());
    }
    let _heavy = ponte_tests::e2e_lock();
    let port = free_tcp_port();
    let stack = Stack::start_with(StackSpec {
        devices: vec![Device::synthetic("cam-a")],
        relay: rtsp_on(port),
        ..StackSpec::default()
    })
    .await?;
    let main = format!("rtsp://127.0.0.1:{port}/cam-a");
    let sub = format!("{main}/sub");
    let h264 = |width, height| Probe { codec: "h264".into(), width, height };

    // The first probe subscribes upstream on demand: time to first frame, cold.
    let (p, cold) = ffprobe(&main, "tcp").await?;
    assert_eq!(p, h264(640, 360));
    assert_eq!(ffprobe(&main, "udp").await?.0, h264(640, 360));
    assert_eq!(ffprobe(&sub, "tcp").await?.0, h264(320, 180));
    assert_eq!(ffprobe(&sub, "udp").await?.0, h264(320, 180));
    assert!(cold < Duration::from_secs(15), "ffprobe took {cold:?}");

    let d = ffmpeg_decode(&main, "tcp", 5).await?;
    assert!(d.errors.trim().is_empty(), "ffmpeg reported errors:\n{}", d.errors);
    assert!(d.out_time_us >= 5_000_000, "ffmpeg decoded {} µs of video", d.out_time_us);
    assert!(d.frames >= 70, "5 s at 15 fps: {} frames", d.frames);
    assert!(d.first_frame_after.is_some_and(|t| t < Duration::from_secs(5)));
    let d = ffmpeg_decode(&sub, "udp", 3).await?;
    assert!(d.errors.trim().is_empty(), "ffmpeg (UDP) reported errors:\n{}", d.errors);
    assert!(d.frames >= 40, "3 s at 15 fps over UDP: {} frames", d.frames);

    gstreamer_plays(&main, "tcp", 640, 360).await?;
    gstreamer_plays(&sub, "udp", 320, 180).await?;

    // Every client tore its session down; with no viewer left the relay
    // unsubscribes upstream after its linger (5 s).
    let st = status(&stack).await?;
    assert_eq!(st["rtsp_sessions"].as_array().map(Vec::len), Some(0), "{st}");
    ponte_tests::wait_until(
        "the upstream subscriptions to end",
        Duration::from_secs(15),
        Duration::from_millis(200),
        || async {
            let st = status(&stack).await?;
            let subs = st["links"][0]["subscriptions"].as_u64();
            Ok((subs == Some(0)).then_some(()))
        },
    )
    .await?;
    Ok(())
}

/// A real H.265 camera (GStreamer's RTSP server) pulled by the agent's RTSP
/// ingest reaches VMS clients through the relay: ffprobe over TCP and UDP
/// says hevc 320×240, ffmpeg decodes 5 s without an error, GStreamer plays.
#[tokio::test]
async fn real_clients_read_h265_from_a_real_camera_through_the_relay() -> Result<()> {
    if !require_clients() || !require_gstreamer_rtsp() {
        return Ok(());
    }
    let _heavy = ponte_tests::e2e_lock();
    let camera = RtspCamera::start(CameraOptions::default()).await?;
    let port = free_tcp_port();
    let mut device = Device::rtsp("cam-hevc", &camera.url("h265"));
    device.rtsp_mut().codec = Some(Codec::H265);
    let _stack =
        Stack::start_with(StackSpec { devices: vec![device], relay: rtsp_on(port), ..StackSpec::default() })
            .await?;
    let url = format!("rtsp://127.0.0.1:{port}/cam-hevc");
    let hevc = Probe { codec: "hevc".into(), width: 320, height: 240 };
    assert_eq!(ffprobe(&url, "tcp").await?.0, hevc);
    assert_eq!(ffprobe(&url, "udp").await?.0, hevc);
    let d = ffmpeg_decode(&url, "tcp", 5).await?;
    assert!(d.errors.trim().is_empty(), "ffmpeg reported errors:\n{}", d.errors);
    assert!(d.out_time_us >= 5_000_000 && d.frames >= 140, "5 s at 30 fps: {} frames", d.frames);
    gstreamer_plays(&url, "tcp", 320, 240).await?;
    Ok(())
}

/// One raw request on a fresh connection; the response head.
async fn raw_request(port: u16, request: &str) -> Result<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).await?;
    s.write_all(request.as_bytes()).await?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut chunk)).await??;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    Ok(String::from_utf8_lossy(&buf).into_owned())
}

/// Digest with the relay's accounts (made by the real `ponte-relay passwd
/// --rtsp-digest`): no credentials → 401 with a Digest challenge, wrong →
/// 401, right → plays; an account narrowed to one camera gets 404 for the
/// other, as if it did not exist.
#[tokio::test]
async fn digest_auth_with_the_relay_accounts_and_narrowing() -> Result<()> {
    if !require_clients() {
        return Ok(());
    }
    let _heavy = ponte_tests::e2e_lock();
    let vms = relay_digest_viewer("vms", "vms-password-2026")?;
    let mut guard = relay_digest_viewer("guard", "guard-password-2026")?;
    assert!(vms.rtsp_digest_ha1.is_some(), "{vms:?}");
    guard.cameras = Some(vec!["camera:cam-a".into()]);
    let (ops, ops_table) = relay_token("ops")?;
    let port = free_tcp_port();
    let _stack = Stack::start_with(StackSpec {
        devices: vec![Device::synthetic("cam-a"), Device::synthetic("cam-b")],
        relay: Tweak::relay(move |relay| {
            relay.rtsp_on(port);
            relay.viewer(vms.clone()).viewer(guard.clone()).token(ops_table.clone());
        }),
        catalog_token: Some(ops),
        ..StackSpec::default()
    })
    .await?;
    let base = format!("127.0.0.1:{port}");

    let head =
        raw_request(port, &format!("DESCRIBE rtsp://{base}/cam-a RTSP/1.0\r\nCSeq: 1\r\n\r\n")).await?;
    assert!(head.starts_with("RTSP/1.0 401 "), "{head}");
    assert!(head.contains("\r\nWWW-Authenticate: Digest realm=\"ponte\", nonce=\""), "{head}");

    let refused = |url: String, transport: &'static str| async move {
        let r = run(FFPROBE, &["-v", "error", "-rtsp_transport", transport, &url]).await?;
        anyhow::Ok((r.ok, r.stderr))
    };
    let (ok, err) = refused(format!("rtsp://{base}/cam-a"), "tcp").await?;
    assert!(!ok && err.contains("401"), "no credentials: {err}");
    let (ok, err) = refused(format!("rtsp://vms:wrong@{base}/cam-a"), "tcp").await?;
    assert!(!ok && err.contains("401"), "wrong password: {err}");
    let (p, _) = ffprobe(&format!("rtsp://vms:vms-password-2026@{base}/cam-b"), "tcp").await?;
    assert_eq!(p, Probe { codec: "h264".into(), width: 640, height: 360 });
    let (p, _) = ffprobe(&format!("rtsp://guard:guard-password-2026@{base}/cam-a/sub"), "udp").await?;
    assert_eq!(p, Probe { codec: "h264".into(), width: 320, height: 180 });
    let (ok, err) = refused(format!("rtsp://guard:guard-password-2026@{base}/cam-b"), "tcp").await?;
    assert!(!ok && err.contains("404"), "a camera outside the viewer's set: {err}");
    let d = ffmpeg_decode(&format!("rtsp://vms:vms-password-2026@{base}/cam-a"), "tcp", 3).await?;
    assert!(d.errors.trim().is_empty() && d.frames >= 40, "{} frames: {}", d.frames, d.errors);
    gstreamer_plays(&format!("rtsp://guard:guard-password-2026@{base}/cam-a"), "tcp", 640, 360).await?;
    Ok(())
}

/// Random, corrupted and truncated requests from many connections, while
/// ffmpeg plays: the relay keeps serving it, and serves a new client after.
#[tokio::test]
async fn hostile_requests_leave_the_server_serving_others() -> Result<()> {
    use rand::{Rng, SeedableRng};
    if !require_clients() {
        return Ok(());
    }
    let _heavy = ponte_tests::e2e_lock();
    let port = free_tcp_port();
    let mut stack = Stack::start_with(StackSpec {
        devices: vec![Device::synthetic("cam-a")],
        relay: rtsp_on(port),
        ..StackSpec::default()
    })
    .await?;
    let url = format!("rtsp://127.0.0.1:{port}/cam-a");
    let mut watcher = Proc::spawn(
        FFMPEG,
        ["-hide_banner", "-v", "error", "-rtsp_transport", "tcp", "-i", &url, "-f", "null", "-"],
    )?;
    ponte_tests::wait_until(
        "the watcher to play",
        Duration::from_secs(15),
        Duration::from_millis(100),
        || async {
            let st = status(&stack).await?;
            let playing =
                st["rtsp_sessions"].as_array().is_some_and(|s| s.iter().any(|s| s["playing"] == true));
            Ok(playing.then_some(()))
        },
    )
    .await?;
    let valid = [
        format!("OPTIONS {url} RTSP/1.0\r\nCSeq: 1\r\n\r\n"),
        format!("DESCRIBE {url} RTSP/1.0\r\nCSeq: 2\r\nAccept: application/sdp\r\n\r\n"),
        format!("SETUP {url}/trackID=0 RTSP/1.0\r\nCSeq: 3\r\nTransport: RTP/AVP;unicast;client_port=40000-40001\r\n\r\n"),
        format!("PLAY {url} RTSP/1.0\r\nCSeq: 4\r\nSession: 0123456789abcdef\r\n\r\n"),
        format!("GET_PARAMETER {url} RTSP/1.0\r\nCSeq: 5\r\nContent-Length: 2\r\n\r\nx\n"),
    ];
    let mut rng = rand::rngs::StdRng::seed_from_u64(2026);
    let started = Instant::now();
    let mut answered = 0;
    for i in 0..200 {
        let mut bytes = valid[i % valid.len()].clone().into_bytes();
        match i % 4 {
            0 => bytes.truncate(rng.random_range(0..bytes.len())),
            1 => {
                for _ in 0..rng.random_range(1..6) {
                    let at = rng.random_range(0..bytes.len());
                    bytes[at] = rng.random();
                }
            }
            2 => bytes = (0..rng.random_range(1..12_000)).map(|_| rng.random()).collect(),
            _ => bytes.extend((0..rng.random_range(1..200)).map(|_| rng.random::<u8>())),
        }
        let mut s = TcpStream::connect(("127.0.0.1", port)).await?;
        let _ = s.write_all(&bytes).await;
        if i % 2 == 0 {
            // Read what comes back for a moment, then go away.
            let mut buf = [0u8; 1024];
            if let Ok(Ok(n)) = tokio::time::timeout(Duration::from_millis(100), s.read(&mut buf)).await {
                answered += usize::from(n > 0 && buf.starts_with(b"RTSP/1.0 "));
            }
        }
    }
    eprintln!("200 hostile connections in {:?}, {answered} answered with an RTSP status", started.elapsed());
    assert!(watcher.is_running(), "the watching ffmpeg was disturbed:\n{}", watcher.tail(20));
    assert!(stack.relay.is_running(), "the relay died");
    let (p, _) = ffprobe(&url, "tcp").await?;
    assert_eq!(p.codec, "h264");
    // Interleaved sessions end with their connection: only the watcher's is
    // left. (UDP sessions may outlive their connection until the timeout, as
    // RTSP allows.)
    let st = status(&stack).await?;
    let tcp =
        st["rtsp_sessions"].as_array().map_or(0, |s| s.iter().filter(|s| s["transport"] == "tcp").count());
    assert_eq!(tcp, 1, "interleaved sessions of vanished clients linger: {st}");
    watcher.kill();
    assert!(watcher.lines().is_empty(), "ffmpeg (-v error) reported: {:?}", watcher.lines());
    Ok(())
}
