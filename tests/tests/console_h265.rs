//! Every camera plays in a browser (issue 20, item 3), against a real H.265
//! camera (GStreamer's RTSP server, `/h265`, 320×240 at 30 fps), a real
//! agent and relay, headless Chromium and ffprobe:
//!
//! - with `browser_h264 = "transcode"`, Chromium (which decodes no H.265
//!   without a hardware decoder) plays the agent's H.264 transcode through
//!   the relay's page, while ffprobe on the relay's RTSP URL still reads
//!   the camera's own HEVC; the agent counts one transcode while watched and
//!   none after the viewer left;
//! - without it, the WHEP offer is refused with the reason and the relay's
//!   RTSP URL of the camera;
//! - whether this Chromium lists H.265 in `RTCRtpReceiver.getCapabilities`
//!   is printed; if it does, H.265 is negotiated end to end and decodes
//!   (otherwise `relay/src/whep/tests/h265.rs` covers the negotiation).

use anyhow::{bail, Context, Result};
use ponte_proto::media::Codec;
use ponte_tests::rtsp_camera::{require_gstreamer_rtsp, CameraOptions, RtspCamera};
use ponte_tests::{
    free_tcp_port, http_get, http_request, Chromium, Device, DeviceExt, Stack, StackSpec, Tweak,
};
use serde_json::Value;
use std::time::{Duration, Instant};

const FFPROBE: &str = "/usr/bin/ffprobe";
/// Frames the browser must decode.
const FRAMES: u64 = 30;
const PLAY_TIMEOUT: Duration = Duration::from_secs(30);
const CAMERA: &str = "cam-hevc";

/// `window.ponteViewer.stats()`, or null while the page is not ready.
const STATS_JS: &str = "(async () => { \
    const v = window.ponteViewer; \
    if (!v || typeof v.stats !== 'function') return null; \
    return (await v.stats()) ?? null; })()";

/// Whether this browser's WebRTC receiver lists H.265.
const H265_CAPABLE_JS: &str = "RTCRtpReceiver.getCapabilities('video').codecs \
    .some(c => c.mimeType.toLowerCase() === 'video/h265')";

/// A real offer of this browser for one recvonly video transceiver.
const OFFER_JS: &str = "(async () => { \
    const pc = new RTCPeerConnection(); \
    pc.addTransceiver('video', { direction: 'recvonly' }); \
    const offer = await pc.createOffer(); \
    pc.close(); \
    return offer.sdp; })()";

fn num(v: &Value, key: &str) -> u64 {
    v.get(key).and_then(Value::as_f64).unwrap_or(0.0) as u64
}

fn require_all() -> bool {
    ponte_tests::require_program(Chromium::binary(), "chromium")
        && ponte_tests::require_program(FFPROBE, "ffmpeg")
        && require_gstreamer_rtsp()
        && ponte_tests::require(
            ponte_agent::sources::transcode::check_elements().is_ok(),
            "GStreamer elements for the agent's transcode (h265parse, avdec_h265, x264enc...)",
            "apt-get install gstreamer1.0-plugins-bad gstreamer1.0-plugins-ugly gstreamer1.0-libav; \
             ./scripts/test installs them",
        )
}

/// The H.265 camera behind a relay with RTSP on `rtsp_port`; `transcode`
/// sets `browser_h264 = "transcode"`.
async fn stack(camera: &RtspCamera, rtsp_port: u16, transcode: bool) -> Result<Stack> {
    let mut device = Device::rtsp(CAMERA, &camera.url("h265"));
    device.rtsp_mut().codec = Some(Codec::H265);
    if transcode {
        device.rtsp_mut().browser_h264 = ponte_agent::config::BrowserH264::Transcode;
    }
    Stack::start_with(StackSpec {
        devices: vec![device],
        relay: Tweak::relay(move |relay| {
            relay.rtsp_on(rtsp_port);
        }),
        ..StackSpec::default()
    })
    .await
}

async fn ffprobe_codec(url: &str) -> Result<(String, u64, u64)> {
    let out = tokio::process::Command::new(FFPROBE)
        .args(["-v", "error", "-rtsp_transport", "tcp", "-show_entries", "stream=codec_name,width,height"])
        .args(["-of", "json", url])
        .output()
        .await
        .context("running ffprobe")?;
    if !out.status.success() {
        bail!("ffprobe {url}: {}", String::from_utf8_lossy(&out.stderr));
    }
    let json: Value = serde_json::from_slice(&out.stdout)?;
    let s = &json["streams"][0];
    let codec = s["codec_name"].as_str().unwrap_or_default().to_owned();
    Ok((codec, s["width"].as_u64().unwrap_or(0), s["height"].as_u64().unwrap_or(0)))
}

/// The agent's `/status` transcodes block.
async fn transcodes(agent_mgmt: &str) -> Result<Value> {
    let status = http_get(&format!("{agent_mgmt}/status")).await?.json()?;
    Ok(status["transcodes"].clone())
}

/// POSTs this browser's own offer for `camera` to the relay.
async fn post_browser_offer(
    browser: &Chromium,
    base: &str,
    camera: &str,
) -> Result<ponte_tests::HttpResponse> {
    let offer = browser.eval(OFFER_JS).await?;
    let offer = offer.as_str().context("the browser made no offer")?.to_owned();
    http_request(
        "POST",
        &format!("{base}/whep/{camera}"),
        &[("Content-Type", "application/sdp")],
        offer.as_bytes(),
        Duration::from_secs(20),
    )
    .await
}

/// Plays `camera` through the page's API until `FRAMES` frames decode;
/// the last stats.
async fn play(browser: &Chromium, camera: &str, quality: &str) -> Result<Value> {
    let call = format!("window.ponteViewer.play({camera:?}, {quality:?})");
    browser.eval(&call).await?;
    let start = Instant::now();
    let mut last = Value::Null;
    loop {
        if let Ok(stats) = browser.eval(STATS_JS).await {
            last = stats;
        }
        if num(&last, "framesDecoded") >= FRAMES {
            eprintln!("{call}: {FRAMES} frames in {:.1} s; stats {last}", start.elapsed().as_secs_f64());
            return Ok(last);
        }
        if start.elapsed() > PLAY_TIMEOUT {
            bail!(
                "{call}: not {FRAMES} frames after {PLAY_TIMEOUT:?}; last {last}; console:\n{}",
                browser.console().join("\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn page_ready(browser: &Chromium, base: &str) -> Result<()> {
    browser.navigate(&format!("{base}/")).await?;
    ponte_tests::wait_until(
        "window.ponteViewer",
        Duration::from_secs(10),
        Duration::from_millis(50),
        || async {
            Ok((browser.eval("typeof window.ponteViewer?.play === 'function'").await? == true).then_some(()))
        },
    )
    .await
}

/// (a) and (c): the transcode for a browser without H.265, the camera's
/// HEVC untouched on RTSP meanwhile, the agent's count up and down; H.265
/// itself where this Chromium decodes it.
#[tokio::test]
async fn a_browser_plays_an_h265_camera_through_the_agents_transcode() -> Result<()> {
    if !require_all() {
        return Ok(());
    }
    let _heavy = ponte_tests::e2e_lock();
    let camera = RtspCamera::start(CameraOptions::default()).await?;
    let rtsp_port = free_tcp_port();
    let mut stack = stack(&camera, rtsp_port, true).await?;
    let base = stack.base_url();
    let agent_mgmt = stack.agent.management_url(Duration::from_secs(10)).await?;
    let entry = &stack.catalog["cameras"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["id"] == CAMERA))
        .cloned()
        .context("catalog lists the camera")?;
    assert_eq!(
        (entry["sub_codec"].as_str(), entry["sub_transcoded"].as_bool()),
        (Some("h264"), Some(true)),
        "{entry}"
    );
    let idle = transcodes(&agent_mgmt).await?;
    assert_eq!((num(&idle, "active"), num(&idle, "max")), (0, 4), "{idle}");

    let browser = Chromium::launch().await?;
    page_ready(&browser, &base).await?;
    let h265 = browser.eval(H265_CAPABLE_JS).await? == true;
    eprintln!(
        "headless Chromium lists H.265 in RTCRtpReceiver.getCapabilities('video'): {h265}{}",
        if h265 {
            ""
        } else {
            " (no hardware HEVC decoder); H.265 negotiation is covered by relay/src/whep/tests/h265.rs"
        }
    );

    // The answer tells the page which stream it got.
    let answered = post_browser_offer(&browser, &base, CAMERA).await?;
    assert_eq!(answered.status, 201, "{}", answered.text());
    let header = answered.header("x-ponte-stream").unwrap_or_default().to_owned();
    if h265 {
        assert_eq!(header, "main; codec=h265");
    } else {
        assert_eq!(header, "sub; codec=h264; transcoded; reason=browser-lacks-h265");
    }
    if let Some(location) = answered.header("location") {
        let _ = http_request("DELETE", &format!("{base}{location}"), &[], b"", Duration::from_secs(5)).await;
    }

    // The page asks for the main stream (its default) and gets what plays.
    let stats = play(&browser, CAMERA, "main").await?;
    let size = (num(&stats, "frameWidth"), num(&stats, "frameHeight"));
    assert_eq!(size, (320, 240), "the camera's size (never above 640×360): {stats}");
    // The status document is sampled each second: give it a few.
    let expected_active = if h265 { 0 } else { 1 };
    let t0 = std::time::Instant::now();
    let watched = loop {
        let t = transcodes(&agent_mgmt).await?;
        if num(&t, "active") == expected_active || t0.elapsed() > Duration::from_secs(5) {
            break t;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(num(&watched, "active"), expected_active, "{watched}");
    let metrics = http_get(&format!("{agent_mgmt}/metrics")).await?.text();
    assert!(metrics.contains(&format!("ponte_transcodes_active {expected_active}")), "{metrics}");
    assert!(metrics.contains("ponte_transcodes_max 4"), "{metrics}");

    // Meanwhile the VMS still gets the camera's own H.265, and the
    // transcode is not served over RTSP.
    let url = format!("rtsp://127.0.0.1:{rtsp_port}/{CAMERA}");
    assert_eq!(ffprobe_codec(&url).await?, ("hevc".to_owned(), 320, 240));
    let sub = ffprobe_codec(&format!("{url}/sub")).await;
    assert!(sub.is_err(), "the transcoded substream must not be served over RTSP: {sub:?}");

    // The console: a tile of the camera decodes, badged as a transcode.
    let tile = console_tile(&browser, &base, |t| t["frames"].as_u64().unwrap_or(0) >= FRAMES).await?;
    eprintln!("console tile: {tile}");
    let expected_badge = if h265 { "H.265" } else { "H.264 transcode" };
    assert_eq!(tile["badge"], expected_badge, "{tile}");
    assert_eq!(tile["message"], "", "{tile}");

    // The viewer leaves: the transcode stops (after the agent's linger).
    browser.navigate("about:blank").await?;
    let stopped = ponte_tests::wait_until(
        "the agent's transcode to stop",
        Duration::from_secs(60),
        Duration::from_millis(500),
        || async {
            let t = transcodes(&agent_mgmt).await?;
            Ok((num(&t, "active") == 0).then_some(t))
        },
    )
    .await?;
    eprintln!("after the viewer left: {stopped}");
    for p in [&mut stack.relay, &mut stack.agent] {
        assert!(p.try_exit()?.is_none(), "{} exited", p.label());
    }
    Ok(())
}

/// (b): without `browser_h264`, an H.265-only camera is refused to a
/// browser that cannot decode H.265, naming the relay's RTSP URL.
#[tokio::test]
async fn without_the_opt_in_an_h265_camera_is_refused_with_its_rtsp_url() -> Result<()> {
    if !require_all() {
        return Ok(());
    }
    let _heavy = ponte_tests::e2e_lock();
    let camera = RtspCamera::start(CameraOptions::default()).await?;
    let rtsp_port = free_tcp_port();
    let stack = stack(&camera, rtsp_port, false).await?;
    let browser = Chromium::launch().await?;
    page_ready(&browser, &stack.base_url()).await?;
    if browser.eval(H265_CAPABLE_JS).await? == true {
        eprintln!("this Chromium decodes H.265: nothing to refuse");
        return Ok(());
    }
    let refused = post_browser_offer(&browser, &stack.base_url(), CAMERA).await?;
    let text = refused.text();
    eprintln!("refusal: {} {text}", refused.status);
    assert_eq!(refused.status, 415, "{text}");
    assert!(text.contains("is H.265, and this browser cannot decode H.265"), "{text}");
    assert!(text.contains(&format!("rtsp://127.0.0.1:{rtsp_port}/{CAMERA}")), "{text}");

    // The console's tile says the same, plainly.
    let tile = console_tile(&browser, &stack.base_url(), |t| {
        t["message"].as_str().is_some_and(|m| m.contains("cannot decode H.265"))
    })
    .await?;
    eprintln!("console tile: {}", tile["message"]);
    assert!(
        tile["message"]
            .as_str()
            .is_some_and(|m| m.contains(&format!("rtsp://127.0.0.1:{rtsp_port}/{CAMERA}"))),
        "{tile}"
    );
    Ok(())
}

/// Opens the console with `CAMERA` alone on the wall; the tile once `done`.
async fn console_tile(browser: &Chromium, base: &str, done: impl Fn(&Value) -> bool) -> Result<Value> {
    browser.navigate(&format!("{base}/console#grid=1x1&tiles={CAMERA}")).await?;
    ponte_tests::wait_until("the console's tile", PLAY_TIMEOUT, Duration::from_millis(100), || async {
        let tiles = browser
            .eval("window.ponteConsole && window.ponteConsole.ready ? window.ponteConsole.tiles() : null")
            .await?;
        Ok(tiles.get(0).filter(|t| done(t)).cloned())
    })
    .await
    .with_context(|| format!("browser console:\n{}", browser.console().join("\n")))
}
