//! The operator console (`/console`), end to end: a real headless Chromium
//! drives the relay's video wall, fed by a real agent over QUIC; every
//! check rests on frames the browser actually decoded.

use anyhow::{bail, Context, Result};
use ponte_tests::{Chromium, Device, DeviceExt, Stack, StackSpec};
use serde_json::Value;
use std::time::{Duration, Instant};

/// `window.ponteConsole.tiles()`, or null while the page is not ready.
const TILES_JS: &str = "(() => { const c = window.ponteConsole; \
    return c && c.ready ? c.tiles() : null; })()";

/// Frames each tile's visible stream decoded (`inbound-rtp` stats).
const DECODED_JS: &str = "(async () => { const c = window.ponteConsole; \
    return c && c.ready ? await c.decoded() : null; })()";

/// 16 synthetic cameras, zones `A`..`D`.
fn sixteen() -> Vec<Device> {
    (0..16)
        .map(|i| Device {
            zone: ["Centro", "Po", "Zaist", "Cavatigozzi"][i % 4].to_owned(),
            name: format!("camera {i:02}"),
            ..Device::synthetic(&format!("cam{i:02}"))
        })
        .collect()
}

async fn open_console(browser: &Chromium, url: &str) -> Result<()> {
    browser.navigate(url).await?;
    ponte_tests::wait_until(
        "the console to be ready",
        Duration::from_secs(15),
        Duration::from_millis(50),
        || async {
            Ok(browser
                .eval("!!(window.ponteConsole && window.ponteConsole.ready)")
                .await?
                .as_bool()
                .filter(|r| *r))
        },
    )
    .await
    .with_context(|| format!("console at {url}; browser console:\n{}", browser.console().join("\n")))?;
    Ok(())
}

async fn tiles(browser: &Chromium) -> Result<Vec<Value>> {
    let v = browser.eval(TILES_JS).await?;
    Ok(v.as_array().cloned().unwrap_or_default())
}

fn frames(tile: &Value) -> u64 {
    tile["frames"].as_u64().unwrap_or(0)
}

/// Waits until every tile of the wall has decoded `want` frames; returns
/// the time each tile got there (from `start`).
async fn wait_all_frames(
    browser: &Chromium,
    count: usize,
    want: u64,
    budget: Duration,
) -> Result<Vec<Duration>> {
    let start = Instant::now();
    let mut reached: Vec<Option<Duration>> = vec![None; count];
    loop {
        let now = browser.eval(DECODED_JS).await?.as_array().cloned().unwrap_or_default();
        for (i, tile) in now.iter().enumerate().take(count) {
            if reached[i].is_none() && frames(tile) >= want {
                reached[i] = Some(start.elapsed());
            }
        }
        if reached.iter().all(Option::is_some) {
            return Ok(reached.into_iter().flatten().collect());
        }
        if start.elapsed() > budget {
            let shown = tiles(browser).await?;
            let late: Vec<String> = now
                .iter()
                .zip(&shown)
                .filter(|(d, _)| frames(d) < want)
                .map(|(d, t)| {
                    format!("tile {} {}: {} frames, {}", t["index"], t["camera"], frames(d), t["message"])
                })
                .collect();
            bail!(
                "after {budget:?}, tiles below {want} frames: {late:?}\nconsole:\n{}",
                browser.console().join("\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn set_layout_js(grid: &str, cameras: &[String]) -> String {
    format!(
        "window.ponteConsole.setLayout({}, {})",
        serde_json::to_string(grid).unwrap(),
        serde_json::to_string(cameras).unwrap()
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn wall_of_sixteen_tiles_plays_every_camera() -> Result<()> {
    let _lock = ponte_tests::e2e_lock();
    if !ponte_tests::require_program(Chromium::binary(), "chromium") {
        return Ok(());
    }
    let stack = Stack::start_with(StackSpec { devices: sixteen(), ..StackSpec::default() }).await?;
    let browser = Chromium::launch_with(&["--window-size=1600,1000".to_owned()]).await?;
    open_console(&browser, &format!("{}/console", stack.base_url())).await?;
    let cameras: Vec<String> = (0..16).map(|i| format!("cam{i:02}")).collect();

    // First open: the cameras start encoding for their first viewer.
    browser.eval(&set_layout_js("4x4", &cameras)).await?;
    let cold = wait_all_frames(&browser, 16, 30, Duration::from_secs(20)).await?;
    eprintln!("first open (cameras starting): slowest tile at 30 frames after {:?}", cold.iter().max());

    // Reopen the layout as an operator would after switching away: every
    // tile at 30 decoded frames within 3 s.
    browser.eval(&set_layout_js("1x1", &[])).await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    browser.eval(&set_layout_js("4x4", &cameras)).await?;
    let warm = wait_all_frames(&browser, 16, 30, Duration::from_secs(10)).await?;
    let slowest = warm.iter().max().copied().unwrap_or_default();
    eprintln!(
        "reopened 4×4: per tile time to 30 frames (ms): {:?}",
        warm.iter().map(|d| d.as_millis()).collect::<Vec<_>>()
    );
    assert!(
        slowest <= Duration::from_secs(3),
        "slowest tile reached 30 frames after {slowest:?} (budget 3 s)"
    );

    // The relay's CPU while the 16 tiles play.
    let cpu0 = stack.relay.cpu_secs()?;
    let t0 = Instant::now();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let cpu = (stack.relay.cpu_secs()? - cpu0) / t0.elapsed().as_secs_f64();
    eprintln!("relay CPU while 16 tiles play: {:.1}% of one core", cpu * 100.0);

    // Every tile shows a picture: a screenshot, 16 tiles, each with variance.
    let shot = std::env::temp_dir().join(format!("ponte-console-wall-{}.png", std::process::id()));
    browser.screenshot(&shot).await?;
    eprintln!("screenshot: {}", shot.display());
    let rects = browser
        .eval("[...document.querySelectorAll('#wall .tile')].map(t => { const r = t.getBoundingClientRect(); \
               return [r.x * devicePixelRatio, r.y * devicePixelRatio, r.width * devicePixelRatio, r.height * devicePixelRatio]; })")
        .await?;
    let rects = rects.as_array().context("tile rectangles")?;
    assert_eq!(rects.len(), 16, "16 tiles on the wall");
    let stddevs = ponte_tests::image::region_luma_stddev(&shot, rects)?;
    eprintln!("luma stddev per tile in the screenshot: {stddevs:.1?}");
    for (i, s) in stddevs.iter().enumerate() {
        assert!(*s > 10.0, "tile {} looks blank in the screenshot (luma stddev {s:.1})", i + 1);
    }
    for tile in tiles(&browser).await? {
        assert_eq!(tile["quality"], "sub", "wall tiles play the substream: {tile}");
        assert_eq!(tile["notLive"], false, "{tile}");
    }
    Ok(())
}
