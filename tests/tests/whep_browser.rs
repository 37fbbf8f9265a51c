//! A real headless Chromium plays a camera from a real relay fed by a real
//! agent over QUIC, through the relay's viewer page and WHEP; the test passes
//! only when the browser has decoded frames of the expected size.

use anyhow::{bail, Context, Result};
use ponte_tests::{Chromium, Device, DeviceExt, Stack};
use serde_json::Value;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Frames the browser must decode.
const FRAMES: u64 = 30;
/// Budget from navigation to `FRAMES` decoded frames.
const PLAY_TIMEOUT: Duration = Duration::from_secs(20);

/// `window.ponteViewer.stats()`, or null while the page is not ready.
const STATS_JS: &str = "(async () => { \
    const v = window.ponteViewer; \
    if (!v || typeof v.stats !== 'function') return null; \
    return (await v.stats()) ?? null; })()";

/// What the page's `<video>` element itself shows, independent of the
/// viewer's own stats: size, frames presented, and a luma summary and
/// fingerprint of the current picture drawn onto a canvas.
const VIDEO_JS: &str = "(() => { \
    const v = document.querySelector('video'); \
    if (!v) return null; \
    const q = v.getVideoPlaybackQuality ? v.getVideoPlaybackQuality() : {}; \
    const out = { width: v.videoWidth, height: v.videoHeight, \
        frames: q.totalVideoFrames || 0, currentTime: v.currentTime, \
        lumaMean: 0, lumaStddev: 0, fingerprint: 0 }; \
    if (!v.videoWidth || !v.videoHeight) return out; \
    const c = document.createElement('canvas'); \
    c.width = v.videoWidth; c.height = v.videoHeight; \
    const g = c.getContext('2d'); \
    g.drawImage(v, 0, 0); \
    const d = g.getImageData(0, 0, c.width, c.height).data; \
    let n = 0, sum = 0, sum2 = 0, h = 0; \
    for (let i = 0; i < d.length; i += 4 * 7) { \
        const y = 0.299 * d[i] + 0.587 * d[i + 1] + 0.114 * d[i + 2]; \
        n++; sum += y; sum2 += y * y; h = (h * 31 + (y | 0)) % 1000000007; \
    } \
    out.lumaMean = sum / n; \
    out.lumaStddev = Math.sqrt(Math.max(0, sum2 / n - out.lumaMean * out.lumaMean)); \
    out.fingerprint = h; \
    return out; })()";

struct Playback {
    first_frame_after: Duration,
    stats: Value,
}

fn screenshot_path(name: &str) -> PathBuf {
    option_env!("CARGO_TARGET_TMPDIR").map(PathBuf::from).unwrap_or_else(std::env::temp_dir).join(name)
}

fn num(stats: &Value, key: &str) -> u64 {
    stats.get(key).and_then(Value::as_f64).unwrap_or(0.0) as u64
}

/// How a playback is started.
enum Start<'a> {
    /// Open the viewer page at this URL (a `?camera=` deep link autoplays).
    Navigate(&'a str),
    /// Call `window.ponteViewer.play(camera, quality)` on the open page.
    Api { camera: &'a str, quality: &'a str },
}

/// Start a playback, then poll the viewer's stats every 50 ms until `FRAMES`
/// frames are decoded, timing the first decoded frame from the start.
async fn play(browser: &Chromium, how: Start<'_>) -> Result<Playback> {
    let start = Instant::now();
    let what = match how {
        Start::Navigate(url) => {
            browser.navigate(url).await?;
            url.to_string()
        }
        Start::Api { camera, quality } => {
            let call = format!(
                "window.ponteViewer.play({}, {})",
                serde_json::to_string(camera)?,
                serde_json::to_string(quality)?
            );
            browser.eval(&call).await?;
            call
        }
    };
    let mut first_frame_after = None;
    let mut last = Value::Null;
    loop {
        match browser.eval(STATS_JS).await {
            Ok(stats) => last = stats,
            Err(e) => eprintln!("stats: {e:#}"),
        }
        let decoded = num(&last, "framesDecoded");
        if decoded > 0 && first_frame_after.is_none() {
            first_frame_after = Some(start.elapsed());
        }
        if decoded >= FRAMES {
            return Ok(Playback { first_frame_after: first_frame_after.unwrap_or_default(), stats: last });
        }
        if start.elapsed() > PLAY_TIMEOUT {
            bail!(
                "{what}: {decoded} frames decoded after {PLAY_TIMEOUT:?} (want {FRAMES}); \
                 last stats {last}; console:\n{}",
                browser.console().join("\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Check a finished playback: enough frames of the expected size in the
/// viewer's stats and in the `<video>` element; print the first-frame time.
async fn check_playback(
    browser: &Chromium,
    label: &str,
    p: &Playback,
    width: u64,
    height: u64,
) -> Result<()> {
    eprintln!(
        "{label}: first decoded frame {:.0} ms after start; stats {}",
        p.first_frame_after.as_secs_f64() * 1e3,
        p.stats
    );
    let stats = &p.stats;
    assert!(num(stats, "framesDecoded") >= FRAMES, "{stats}");
    assert_eq!(
        (num(stats, "frameWidth"), num(stats, "frameHeight")),
        (width, height),
        "decoded size of {label}: {stats}"
    );
    assert!(num(stats, "bytesReceived") > 0, "{stats}");
    check_video_element(browser, width, height).await
}

async fn save_screenshot(browser: &Chromium, name: &str) {
    let shot = screenshot_path(name);
    match browser.screenshot(&shot).await {
        Ok(()) => eprintln!("screenshot: {}", shot.display()),
        Err(e) => eprintln!("screenshot failed: {e:#}"),
    }
}

/// Fail if the relay or the agent died while we watched.
fn assert_alive(stack: &mut Stack) -> Result<()> {
    for p in [&mut stack.relay, &mut stack.agent] {
        let status = p.try_exit().context("checking the node processes")?;
        assert!(status.is_none(), "{} exited during playback: {status:?}", p.label());
    }
    Ok(())
}

/// The relay with two synthetic cameras and a browser, or `None` when the
/// browser is missing outside CI.
async fn setup() -> Result<Option<(Stack, Chromium)>> {
    if !ponte_tests::require_program(Chromium::binary(), "chromium") {
        return Ok(None);
    }
    let stack = Stack::start(Device::zaist_and_po()).await?;
    let ids = ponte_tests::catalog_camera_ids(&stack.catalog)?;
    for camera in ["zaist-mantova", "po-lungofiume"] {
        assert!(ids.iter().any(|id| id == camera), "catalog lists {camera}: {ids:?}");
    }
    let browser = Chromium::launch().await?;
    Ok(Some((stack, browser)))
}

/// Cross-check the viewer's stats against the `<video>` element: it has the
/// expected size, has presented frames, shows a picture that is not flat
/// (the synthetic pattern has colour bars and a ramp) and that changes
/// over time (its clock and frame counter run).
async fn check_video_element(browser: &Chromium, width: u64, height: u64) -> Result<()> {
    let first = browser.eval(VIDEO_JS).await?;
    eprintln!("video element: {first}");
    assert_eq!((num(&first, "width"), num(&first, "height")), (width, height), "<video> size: {first}");
    assert!(num(&first, "frames") > 0, "<video> presented no frame: {first}");
    let stddev = first["lumaStddev"].as_f64().unwrap_or(0.0);
    assert!(stddev > 20.0, "the picture is flat (luma stddev {stddev}): {first}");
    let changed = ponte_tests::wait_until(
        "the picture to change",
        Duration::from_secs(5),
        Duration::from_millis(200),
        || async {
            let now = browser.eval(VIDEO_JS).await?;
            Ok((now["fingerprint"] != first["fingerprint"]).then_some(now))
        },
    )
    .await?;
    assert!(
        changed["currentTime"].as_f64() > first["currentTime"].as_f64(),
        "<video> time advances: {first} → {changed}"
    );
    Ok(())
}

/// Deep-link the viewer page to `zaist-mantova` at `quality` (None = the
/// page's default) and check the decoded picture.
async fn deep_link(quality: Option<&str>, width: u64, height: u64) -> Result<()> {
    let _heavy = ponte_tests::e2e_lock();
    let Some((mut stack, browser)) = setup().await? else { return Ok(()) };
    let mut url = format!("{}/?camera=zaist-mantova", stack.base_url());
    if let Some(q) = quality {
        url.push_str(&format!("&quality={q}"));
    }
    let label = quality.unwrap_or("main");
    let result = play(&browser, Start::Navigate(&url)).await;
    save_screenshot(&browser, &format!("whep-{label}.png")).await;
    check_playback(&browser, &format!("deep link, {label}"), &result?, width, height).await?;
    assert_alive(&mut stack)
}

#[tokio::test]
async fn browser_decodes_the_main_stream_via_whep() -> Result<()> {
    deep_link(None, 640, 360).await
}

#[tokio::test]
async fn browser_decodes_the_sub_stream_via_whep() -> Result<()> {
    deep_link(Some("sub"), 320, 180).await
}

/// The page's API plays a camera, then switches to another camera and
/// quality in the same page; each playback decodes on its own.
#[tokio::test]
async fn browser_switches_cameras_through_the_viewer_api() -> Result<()> {
    let _heavy = ponte_tests::e2e_lock();
    let Some((mut stack, browser)) = setup().await? else { return Ok(()) };
    browser.navigate(&format!("{}/", stack.base_url())).await?;
    ponte_tests::wait_until(
        "window.ponteViewer",
        Duration::from_secs(10),
        Duration::from_millis(50),
        || async {
            Ok((browser.eval("typeof window.ponteViewer?.play === 'function'").await? == true).then_some(()))
        },
    )
    .await?;
    let first = play(&browser, Start::Api { camera: "po-lungofiume", quality: "main" }).await?;
    check_playback(&browser, "api, po-lungofiume main", &first, 640, 360).await?;
    let second = play(&browser, Start::Api { camera: "zaist-mantova", quality: "sub" }).await?;
    save_screenshot(&browser, "whep-switch.png").await;
    check_playback(&browser, "api switch, zaist-mantova sub", &second, 320, 180).await?;
    assert_alive(&mut stack)
}
