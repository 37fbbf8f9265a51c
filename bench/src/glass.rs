//! glass: capture → frame shown in Chromium, through the relay's video wall
//! (`/console?probe=1`), for one tile (the main stream) and for sixteen
//! (4×4, substreams). The console's probe reads ponte's capture-time SEI
//! of every received H.264 frame in the browser (an RTCRtpScriptTransform
//! worker) and, per frame shown (`requestVideoFrameCallback`), records
//! `probeAgeMs` = display time − SEI capture time, beside `ageMs`, the age
//! the tile's badge shows from the relay's capture clock. The bench polls
//! each tile's last ~900 samples often enough to lose none and dedupes them
//! by their `at`.

use crate::cluster::{Cluster, ClusterSpec, RelaySpec, Replay};
use crate::report::{Check, Table};
use crate::stats::Dist;
use anyhow::{bail, Context, Result};
use ponte_tests::{Chromium, DeviceKind};
use serde::Serialize;
use std::time::{Duration, Instant};

/// The 1-tile target: p95 of capture → shown.
pub const TARGET_P95_MS: f64 = 80.0;
/// Cameras on the wall.
const CAMERAS: usize = 16;
/// How often the tiles' samples are read (a tile keeps ~36 s at 25 fps).
const POLL: Duration = Duration::from_millis(1000);
/// Longest wait for every tile to show frames of the wanted quality.
const PLAYING: Duration = Duration::from_secs(40);
/// Frames each tile shows before warm-up counts.
const FIRST_FRAMES: u64 = 10;

/// Knobs of the glass run.
#[derive(Debug, Clone, Serialize)]
pub struct GlassParams {
    /// How the cameras stream.
    pub replay: Replay,
    /// Played before measuring, seconds (each layout).
    pub warmup_secs: f64,
    /// Measured window, seconds (each layout).
    pub window_secs: f64,
}

/// One tile's figures.
#[derive(Debug, Clone, Serialize)]
pub struct TileResult {
    /// Camera.
    pub camera: String,
    /// Quality it played at the end of the window.
    pub quality: String,
    /// probeAgeMs of its frames.
    pub age: Dist,
    /// Frames shown with no SEI age (no capture time matched).
    pub without_probe: usize,
    /// Whether the tile said NOT LIVE at the end.
    pub not_live: bool,
}

/// One layout's figures.
#[derive(Debug, Clone, Serialize)]
pub struct LayoutResult {
    /// `1x1` or `4x4`.
    pub grid: String,
    /// Quality the tiles should play.
    pub quality: String,
    /// Every tile's frames pooled: probeAgeMs.
    pub pooled: Dist,
    /// Index in `tiles` of the tile with the highest p95.
    pub worst_tile: usize,
    /// Per tile.
    pub tiles: Vec<TileResult>,
    /// Mean |ageMs − probeAgeMs| over frames with both: the badge's error.
    pub badge_error_ms: f64,
    /// Frames with both ages.
    pub badge_frames: usize,
    /// Polls that found a tile's oldest kept sample newer than the last one
    /// read (samples lost between polls); 0 when none was.
    pub gaps: usize,
    /// Frames the tiles showed over the window (`requestVideoFrameCallback`).
    pub shown: usize,
    /// Frames the tiles decoded over the window (`framesDecoded`).
    pub decoded: u64,
    /// Frames the cameras sent over the window (tiles × fps × window).
    pub sent: f64,
    /// Measured window, seconds.
    pub window_secs: f64,
}

/// Frames each tile's visible stream decoded so far.
async fn decoded(browser: &Chromium) -> Result<Vec<u64>> {
    let v =
        browser.eval("(async () => (await window.ponteConsole.decoded()).map((d) => d.frames))()").await?;
    Ok(v.as_array().context("decoded frames")?.iter().map(|x| x.as_u64().unwrap_or(0)).collect())
}

fn camera(i: usize) -> String {
    format!("g-{i:02}")
}

/// Runs both layouts.
pub async fn run(params: &GlassParams) -> Result<Vec<LayoutResult>> {
    let devices = (0..CAMERAS).map(|i| params.replay.device(&camera(i), DeviceKind::Fixed, 1, &[])).collect();
    let cluster = Cluster::start(ClusterSpec {
        devices,
        cameras: CAMERAS,
        relays: vec![RelaySpec { site: "relay".into(), downstreams: vec![] }],
        probe: false,
        sites: None,
        whep: None,
        recording: None,
    })
    .await?;
    let base = cluster.relays[0].config.base_url();
    let browser = Chromium::launch().await?;
    let out = async {
        browser.open_console(&format!("{base}/console?probe=1")).await?;
        if browser.eval("window.ponteConsole.probe").await?.as_bool() != Some(true) {
            bail!(
                "the console's probe is off: this Chromium ({}) has no RTCRtpScriptTransform",
                Chromium::binary().display()
            );
        }
        let all: Vec<String> = (0..CAMERAS).map(camera).collect();
        let mut layouts = Vec::new();
        for (grid, cams, quality) in [("1x1", &all[..1], "main"), ("4x4", &all[..], "sub")] {
            layouts.push(layout(&browser, params, grid, cams, quality).await?);
        }
        anyhow::Ok(layouts)
    }
    .await;
    let out = out.with_context(|| format!("browser console:\n{}", browser.console().join("\n")));
    drop(browser);
    cluster.shutdown().await?;
    out
}

/// A poll's fresh samples of one tile: `[at, ageMs, probeAgeMs]`.
struct Poll {
    camera: String,
    quality: String,
    not_live: bool,
    frames: u64,
    /// The oldest sample kept is newer than the last one read.
    gap: bool,
    samples: Vec<(f64, Option<f64>, Option<f64>)>,
}

/// Reads every tile's samples newer than `since[i]`.
async fn poll(browser: &Chromium, since: &[f64]) -> Result<Vec<Poll>> {
    let js = format!(
        "((since) => {{ const c = window.ponteConsole; if (!c || !c.ready) return null; \
            return c.tiles().map((t, i) => {{ const all = c.samples(i); const s0 = since[i] ?? -1; \
                return {{ camera: t.camera, quality: t.quality, notLive: t.notLive, frames: t.frames, \
                    gap: s0 >= 0 && all.length > 0 && all[0].at > s0, \
                    s: all.filter((s) => s.at > s0).map((s) => [s.at, s.ageMs, s.probeAgeMs]) }}; }}); }})({})",
        serde_json::to_string(since)?
    );
    let v = browser.eval(&js).await?;
    let tiles = v.as_array().context("the console is not ready")?;
    Ok(tiles
        .iter()
        .map(|t| Poll {
            camera: t["camera"].as_str().unwrap_or_default().to_owned(),
            quality: t["quality"].as_str().unwrap_or_default().to_owned(),
            not_live: t["notLive"] == true,
            frames: t["frames"].as_u64().unwrap_or(0),
            gap: t["gap"] == true,
            samples: t["s"]
                .as_array()
                .map(|s| {
                    s.iter().filter_map(|x| Some((x[0].as_f64()?, x[1].as_f64(), x[2].as_f64()))).collect()
                })
                .unwrap_or_default(),
        })
        .collect())
}

/// Shows `cams` in `grid`, waits until every tile plays `quality`, warms up,
/// then collects every shown frame's ages over the window.
async fn layout(
    browser: &Chromium,
    params: &GlassParams,
    grid: &str,
    cams: &[String],
    quality: &str,
) -> Result<LayoutResult> {
    browser
        .eval(&format!(
            "window.ponteConsole.setLayout({}, {})",
            serde_json::to_string(grid)?,
            serde_json::to_string(cams)?
        ))
        .await?;
    let started = Instant::now();
    loop {
        let tiles = poll(browser, &vec![f64::MAX; cams.len()]).await?;
        let playing = tiles.len() >= cams.len()
            && tiles.iter().take(cams.len()).all(|t| t.frames >= FIRST_FRAMES && t.quality == quality);
        if playing {
            break;
        }
        if started.elapsed() > PLAYING {
            let state: Vec<String> =
                tiles.iter().map(|t| format!("{} {} {} frames", t.camera, t.quality, t.frames)).collect();
            bail!("{grid}: not every tile showed {FIRST_FRAMES} frames of {quality} within {PLAYING:?}: {state:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs_f64(params.warmup_secs)).await;
    // The window opens at the newest frame each tile has shown.
    let mut since: Vec<f64> = poll(browser, &vec![-1.0; cams.len()])
        .await?
        .iter()
        .take(cams.len())
        .map(|t| t.samples.last().map_or(-1.0, |s| s.0))
        .collect();
    let decoded0 = decoded(browser).await?;
    let mut frames: Vec<Vec<(Option<f64>, Option<f64>)>> = vec![Vec::new(); cams.len()];
    let mut gaps = 0;
    let opened = Instant::now();
    let window = Duration::from_secs_f64(params.window_secs);
    let mut last: Vec<Poll>;
    loop {
        let done = opened.elapsed() >= window;
        let tiles = poll(browser, &since).await?;
        for (i, t) in tiles.iter().enumerate().take(cams.len()) {
            gaps += usize::from(t.gap);
            for &(at, age, probe_age) in &t.samples {
                if at > since[i] {
                    since[i] = at;
                    frames[i].push((age, probe_age));
                }
            }
        }
        last = tiles;
        if done {
            break;
        }
        tokio::time::sleep(POLL.min(window.saturating_sub(opened.elapsed()))).await;
    }
    let window_secs = opened.elapsed().as_secs_f64();
    let decoded1 = decoded(browser).await?;
    let decoded: u64 = decoded0.iter().zip(&decoded1).map(|(a, b)| b.saturating_sub(*a)).sum();
    let tiles: Vec<TileResult> = frames
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let ages: Vec<f64> = f.iter().filter_map(|x| x.1).collect();
            TileResult {
                camera: last.get(i).map_or_else(|| cams[i].clone(), |t| t.camera.clone()),
                quality: last.get(i).map_or_else(String::new, |t| t.quality.clone()),
                age: Dist::of_ms(&ages),
                without_probe: f.len() - ages.len(),
                not_live: last.get(i).is_some_and(|t| t.not_live),
            }
        })
        .collect();
    let pooled: Vec<f64> = frames.iter().flatten().filter_map(|x| x.1).collect();
    let both: Vec<f64> = frames.iter().flatten().filter_map(|x| Some((x.0? - x.1?).abs())).collect();
    let worst_tile = tiles
        .iter()
        .enumerate()
        .max_by(|a, b| a.1.age.p95_ms.total_cmp(&b.1.age.p95_ms))
        .map_or(0, |(i, _)| i);
    let r = LayoutResult {
        grid: grid.into(),
        quality: quality.into(),
        pooled: Dist::of_ms(&pooled),
        worst_tile,
        badge_error_ms: if both.is_empty() { f64::NAN } else { both.iter().sum::<f64>() / both.len() as f64 },
        badge_frames: both.len(),
        tiles,
        gaps,
        shown: frames.iter().map(Vec::len).sum(),
        decoded,
        sent: (cams.len() as f64) * f64::from(params.replay.fps) * window_secs,
        window_secs,
    };
    eprintln!(
        "ponte-bench: glass {grid}: {} frames shown ({} decoded, {:.0} sent), capture → shown p50 {:.1} p95 {:.1} max {:.1} ms, worst tile p95 {:.1} ms, \
         badge error {:.1} ms",
        r.shown,
        r.decoded,
        r.sent,
        r.pooled.p50_ms,
        r.pooled.p95_ms,
        r.pooled.max_ms,
        r.tiles.get(r.worst_tile).map_or(f64::NAN, |t| t.age.p95_ms),
        r.badge_error_ms
    );
    Ok(r)
}

/// Tables and checks.
pub fn tables(layouts: &[LayoutResult], params: &GlassParams) -> (Vec<Table>, Vec<Check>, Vec<String>) {
    let mut t = Table::new(
        &format!(
            "Capture → frame shown in Chromium (ms, from the capture-time SEI read in the page), replay cameras \
             main {} / sub {} kbit/s at {} fps, GOP {} frames, loopback",
            params.replay.main_kbps, params.replay.sub_kbps, params.replay.fps, params.replay.gop_frames
        ),
        &[
            "layout",
            "quality",
            "frames shown",
            "decoded",
            "sent by the cameras",
            "p50",
            "p95",
            "max",
            "worst tile p95",
            "frames without SEI age",
            "badge error: mean abs(age − SEI age)",
            "samples lost",
        ],
    );
    let mut checks = Vec::new();
    let mut notes = Vec::new();
    for l in layouts {
        let worst = l.tiles.get(l.worst_tile);
        t.row(vec![
            format!("{} ({} tile{})", l.grid, l.tiles.len(), if l.tiles.len() == 1 { "" } else { "s" }),
            l.quality.clone(),
            l.shown.to_string(),
            l.decoded.to_string(),
            format!("{:.0}", l.sent),
            format!("{:.1}", l.pooled.p50_ms),
            format!("{:.1}", l.pooled.p95_ms),
            format!("{:.1}", l.pooled.max_ms),
            worst.map_or("-".into(), |w| format!("{:.1} ({})", w.age.p95_ms, w.camera)),
            l.tiles.iter().map(|x| x.without_probe).sum::<usize>().to_string(),
            if l.badge_frames > 0 { format!("{:.1}", l.badge_error_ms) } else { "-".into() },
            l.gaps.to_string(),
        ]);
        let off: Vec<String> = l
            .tiles
            .iter()
            .filter(|x| x.quality != l.quality || x.not_live)
            .map(|x| format!("{} {}{}", x.camera, x.quality, if x.not_live { " NOT LIVE" } else { "" }))
            .collect();
        if !off.is_empty() {
            notes.push(format!(
                "{}: tiles not playing {} live at the end: {}",
                l.grid,
                l.quality,
                off.join(", ")
            ));
        }
        if l.tiles.len() == 1 {
            checks.push(Check {
                what: format!("capture → shown p95, 1 tile ({} frames)", l.pooled.n),
                target: format!("≤ {TARGET_P95_MS:.0} ms"),
                measured: format!("{:.1} ms", l.pooled.p95_ms),
                met: l.pooled.n > 0 && l.pooled.p95_ms <= TARGET_P95_MS,
            });
        }
    }
    notes.push(format!(
        "Each layout plays {} s before its {} s window. *Frames shown* are those `requestVideoFrameCallback` \
         reported (the ages' sample; Chromium skips presenting a decoded frame when a newer one is ready by the \
         next composite), *decoded* is the tiles' `framesDecoded` over the window, *sent* the cameras' frame rate \
         times the window. Display time is the frame's \
         `expectedDisplayTime` from `requestVideoFrameCallback` (performance.timeOrigin-based); capture time is \
         the agent's SEI, read in an RTCRtpScriptTransform worker and matched by RTP timestamp. Agent, relay and \
         Chromium share the machine's cores; the 4×4 wall decodes sixteen streams at once.",
        params.warmup_secs, params.window_secs
    ));
    (vec![t], checks, notes)
}
