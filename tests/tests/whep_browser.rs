//! A real headless Chromium plays a camera from a real relay fed by a real
//! agent over QUIC, through the relay's viewer page and WHEP; the test passes
//! only when the browser has decoded frames of the expected size.

use anyhow::{bail, Context, Result};
use ponte_tests::{Chromium, Device, Stack};
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

struct Playback {
    first_frame_after: Duration,
    stats: Value,
}

fn two_cameras() -> Vec<Device> {
    let mut ptz = Device::synthetic("zaist-mantova");
    ptz.name = "rotatoria via Mantova / via Zaist".into();
    ptz.zone = "Zaist".into();
    ptz.kind = "dome-ptz".into();
    let mut fixed = Device::synthetic("po-lungofiume");
    fixed.name = "lungo Po, imbarcadero".into();
    fixed.zone = "Po".into();
    vec![ptz, fixed]
}

fn screenshot_path(name: &str) -> PathBuf {
    option_env!("CARGO_TARGET_TMPDIR").map(PathBuf::from).unwrap_or_else(std::env::temp_dir).join(name)
}

fn num(stats: &Value, key: &str) -> u64 {
    stats.get(key).and_then(Value::as_f64).unwrap_or(0.0) as u64
}

/// Open `url` and poll the viewer's stats every 50 ms until `FRAMES` frames
/// are decoded, timing the first decoded frame from the navigation.
async fn play(browser: &Chromium, url: &str) -> Result<Playback> {
    let start = Instant::now();
    browser.navigate(url).await?;
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
                "{url}: {decoded} frames decoded after {PLAY_TIMEOUT:?} (want {FRAMES}); \
                 last stats {last}; console:\n{}",
                browser.console().join("\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Start the stack and a browser, play `camera` at `quality` (None = the
/// page's default), check the decoded size and save a screenshot.
async fn run(quality: Option<&str>, width: u64, height: u64) -> Result<()> {
    let _heavy = ponte_tests::e2e_lock();
    if !ponte_tests::require_program(Chromium::binary(), "chromium") {
        return Ok(());
    }
    let stack = Stack::start(two_cameras()).await?;
    let ids = ponte_tests::catalog_camera_ids(&stack.catalog)?;
    let camera = "zaist-mantova";
    assert!(ids.iter().any(|id| id == camera), "catalog lists {camera}: {ids:?}");
    let browser = Chromium::launch().await?;
    let mut url = format!("{}/?camera={camera}", stack.base_url());
    if let Some(q) = quality {
        url.push_str(&format!("&quality={q}"));
    }
    let result = play(&browser, &url).await;
    let label = quality.unwrap_or("main");
    let shot = screenshot_path(&format!("whep-{label}.png"));
    match browser.screenshot(&shot).await {
        Ok(()) => eprintln!("screenshot: {}", shot.display()),
        Err(e) => eprintln!("screenshot failed: {e:#}"),
    }
    let playback = result?;
    eprintln!(
        "{label}: first decoded frame {:.0} ms after navigation; stats {}",
        playback.first_frame_after.as_secs_f64() * 1e3,
        playback.stats
    );
    let stats = &playback.stats;
    assert!(num(stats, "framesDecoded") >= FRAMES, "{stats}");
    assert_eq!(
        (num(stats, "frameWidth"), num(stats, "frameHeight")),
        (width, height),
        "decoded size of the {label} stream: {stats}"
    );
    assert!(num(stats, "bytesReceived") > 0, "{stats}");
    // The stack must still be healthy: nobody crashed while we watched.
    let mut stack = stack;
    for p in [&mut stack.relay, &mut stack.agent] {
        let status = p.try_exit().context("checking the node processes")?;
        assert!(status.is_none(), "{} exited during playback: {status:?}", p.label());
    }
    Ok(())
}

#[tokio::test]
async fn browser_decodes_the_main_stream_via_whep() -> Result<()> {
    run(None, 640, 360).await
}

#[tokio::test]
async fn browser_decodes_the_sub_stream_via_whep() -> Result<()> {
    run(Some("sub"), 320, 180).await
}
