//! seek: a seek request → the first replayed frame shown in Chromium, on
//! loopback, through the relay's console as an operator seeks. One replay
//! camera is recorded by the agent (`[[recording]]`, main stream) for a few
//! minutes; then, from live each time, the console's test API plays the
//! recording from a random point (`ponteConsole.playFrom(0, at)`: a WHEP
//! session `POST /whep/{camera}?quality=main&at=<ms>`). The page notes
//! `Date.now()` when it asks; the figure is the first replayed frame's
//! display time (`requestVideoFrameCallback`'s `expectedDisplayTime` on the
//! same clock) minus that, so the bench's polling adds nothing. With
//! `?probe=1` the page reads each frame's capture-time SEI: the first
//! frame's capture time minus the time asked is the seek's accuracy, which
//! should be within one GOP (playback starts at a keyframe).

use crate::cluster::{Cluster, ClusterSpec, RelaySpec, Replay};
use crate::report::{Check, Table};
use crate::stats::Dist;
use anyhow::{bail, Context, Result};
use ponte_proto::media::Quality;
use ponte_tests::{Chromium, DeviceKind};
use serde::Serialize;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The target: p95 of seek → first replayed frame shown, loopback.
pub const TARGET_P95_MS: f64 = 300.0;
const CAMERA: &str = "seek-00";
/// Longest wait for the first replayed (or live) frame.
const FRAME: Duration = Duration::from_secs(10);
/// Seeks stay this far from the live edge (the GOP being recorded is not
/// in the store yet).
const EDGE_MS: u64 = 10_000;

/// Knobs of the seek run.
#[derive(Debug, Clone, Serialize)]
pub struct SeekParams {
    /// How the camera streams.
    pub replay: Replay,
    /// Recorded before the first seek, seconds.
    pub record_secs: f64,
    /// Seeks.
    pub seeks: usize,
}

/// One seek.
#[derive(Debug, Clone, Serialize)]
pub struct SeekSample {
    /// Time asked for, Unix ms.
    pub at_ms: u64,
    /// How far back from now that was, seconds.
    pub back_secs: f64,
    /// Request → first replayed frame shown, ms (the page's clock).
    pub seek_ms: f64,
    /// The first replayed frame's capture time (SEI) − the time asked, ms;
    /// `None` when the page matched no SEI to it.
    pub offset_ms: Option<f64>,
}

/// What the run measured.
#[derive(Debug, Clone, Serialize)]
pub struct SeekResult {
    /// Seconds recorded before the first seek.
    pub recorded_secs: f64,
    /// Every seek, in order.
    pub seeks: Vec<SeekSample>,
    /// Seeks that showed no replayed frame within [`FRAME`].
    pub failed: usize,
    /// Request → first replayed frame shown.
    pub seek: Dist,
    /// |capture time of the first frame − time asked|.
    pub abs_offset: Dist,
    /// Most negative offset (the frame before the time asked), ms.
    pub min_offset_ms: f64,
    /// Most positive offset, ms.
    pub max_offset_ms: f64,
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// A small deterministic generator (xorshift64*) for the seek points, so
/// runs seek the same shape of points.
struct Points(u64);

impl Points {
    fn next_f64(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// The first sample of tile 0 shown at or after `since_ms` (page clock)
/// that is (`replay`) or is not a replayed frame: `[shownAt, probeCaptureMs]`.
async fn first_since(browser: &Chromium, since_ms: f64, replay: bool) -> Result<Option<(f64, Option<f64>)>> {
    let v = browser
        .eval(&format!(
            "(() => {{ const s = window.ponteConsole.samples(0).find((s) => s.shownAt >= {since_ms} && s.replay === \
             {replay}); return s ? [s.shownAt, s.probeCaptureMs] : null; }})()"
        ))
        .await?;
    Ok(v.as_array().and_then(|a| Some((a.first()?.as_f64()?, a.get(1).and_then(serde_json::Value::as_f64)))))
}

/// Waits for the first frame after `since_ms` of the kind asked.
async fn wait_frame(browser: &Chromium, since_ms: f64, replay: bool) -> Result<Option<(f64, Option<f64>)>> {
    let t0 = Instant::now();
    while t0.elapsed() < FRAME {
        if let Some(f) = first_since(browser, since_ms, replay).await? {
            return Ok(Some(f));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(None)
}

/// The start of the recording the relay lists, Unix ms.
async fn recorded_from(base: &str) -> Result<Option<u64>> {
    let v =
        ponte_tests::http_get(&format!("{base}/api/recordings/{CAMERA}")).await?.ensure_success()?.json()?;
    Ok(v["ranges"].as_array().and_then(|r| r.first()).and_then(|r| r[0].as_u64()))
}

/// Records, then seeks.
pub async fn run(params: &SeekParams) -> Result<SeekResult> {
    let store =
        tempfile::Builder::new().prefix("ponte-bench-store-").tempdir().context("creating a store dir")?;
    let cluster = Cluster::start(ClusterSpec {
        devices: vec![params.replay.device(CAMERA, DeviceKind::Fixed, 1, &[])],
        cameras: 1,
        relays: vec![RelaySpec { site: "relay".into(), downstreams: vec![] }],
        probe: false,
        sites: None,
        whep: None,
        recording: Some((store.path().to_owned(), Quality::Main)),
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
        browser.eval(&format!("window.ponteConsole.setLayout('1x1', ['{CAMERA}'])")).await?;
        // The live tile plays while the recording grows (its frames are the
        // first thing each seek replaces).
        tokio::time::sleep(Duration::from_secs_f64(params.record_secs)).await;
        let from = recorded_from(&base)
            .await?
            .with_context(|| format!("nothing recorded of {CAMERA} after {:.0} s", params.record_secs))?;
        let recorded_secs = now_ms().saturating_sub(from) as f64 / 1000.0;
        let gop_ms = 1000 * u64::from(params.replay.gop_frames) / u64::from(params.replay.fps.max(1));
        let mut points = Points(0x5eed_0021);
        let mut seeks = Vec::new();
        let mut failed = 0;
        for i in 0..params.seeks {
            // From live: whatever replayed before is gone from the screen.
            let t_live: f64 =
                browser.eval("(() => { const t = Date.now(); window.ponteConsole.live(0); return t; })()").await?.as_f64().context("Date.now()")?;
            if wait_frame(&browser, t_live, false).await?.is_none() {
                bail!("seek {i}: not back to live within {FRAME:?}: {}", browser.eval("window.ponteConsole.tiles()").await?);
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
            let (lo, hi) = (from + gop_ms, now_ms().saturating_sub(EDGE_MS));
            let at = lo + (points.next_f64() * hi.saturating_sub(lo) as f64) as u64;
            let asked: f64 = browser
                .eval(&format!("(() => {{ const t = Date.now(); window.ponteConsole.playFrom(0, {at}); return t; }})()"))
                .await?
                .as_f64()
                .context("Date.now()")?;
            match wait_frame(&browser, asked, true).await? {
                Some((shown, capture)) => {
                    let s = SeekSample {
                        at_ms: at,
                        back_secs: (asked - at as f64) / 1000.0,
                        seek_ms: shown - asked,
                        offset_ms: capture.map(|c| c - at as f64),
                    };
                    eprintln!(
                        "ponte-bench: seek {i}: {:.0} s back, first replayed frame shown after {:.0} ms, captured {} from the time asked",
                        s.back_secs,
                        s.seek_ms,
                        s.offset_ms.map_or("(no SEI)".into(), |o| format!("{o:+.0} ms"))
                    );
                    seeks.push(s);
                }
                None => {
                    eprintln!("ponte-bench: seek {i}: no replayed frame within {FRAME:?}");
                    failed += 1;
                }
            }
        }
        anyhow::Ok((recorded_secs, seeks, failed))
    }
    .await;
    let out = out.with_context(|| format!("browser console:\n{}", browser.console().join("\n")));
    drop(browser);
    cluster.shutdown().await?;
    let (recorded_secs, seeks, failed) = out?;
    let offsets: Vec<f64> = seeks.iter().filter_map(|s| s.offset_ms).collect();
    Ok(SeekResult {
        recorded_secs,
        seek: Dist::of_ms(&seeks.iter().map(|s| s.seek_ms).collect::<Vec<_>>()),
        abs_offset: Dist::of_ms(&offsets.iter().map(|o| o.abs()).collect::<Vec<_>>()),
        min_offset_ms: offsets.iter().copied().fold(f64::NAN, f64::min),
        max_offset_ms: offsets.iter().copied().fold(f64::NAN, f64::max),
        seeks,
        failed,
    })
}

/// Tables, checks and notes.
pub fn tables(r: &SeekResult, params: &SeekParams) -> (Vec<Table>, Vec<Check>, Vec<String>) {
    let p = &params.replay;
    let gop_ms = 1000.0 * f64::from(p.gop_frames) / f64::from(p.fps.max(1));
    let mut t = Table::new(
        &format!(
            "Seek → first replayed frame shown in Chromium (console, WHEP `?at=`), one replay camera recorded at main \
             {} kbit/s, {} fps, GOP {} frames, loopback",
            p.main_kbps, p.fps, p.gop_frames
        ),
        &["", "n", "p50", "p95", "max"],
    );
    t.row(vec![
        "request → first replayed frame shown, ms".into(),
        r.seek.n.to_string(),
        format!("{:.0}", r.seek.p50_ms),
        format!("{:.0}", r.seek.p95_ms),
        format!("{:.0}", r.seek.max_ms),
    ]);
    t.row(vec![
        "abs(first frame's capture time − time asked), ms".into(),
        r.abs_offset.n.to_string(),
        format!("{:.0}", r.abs_offset.p50_ms),
        format!("{:.0}", r.abs_offset.p95_ms),
        format!("{:.0}", r.abs_offset.max_ms),
    ]);
    let checks = vec![
        Check {
            what: format!("seek → first replayed frame shown p95 ({} seeks, {} failed)", r.seek.n, r.failed),
            target: format!("≤ {TARGET_P95_MS:.0} ms"),
            measured: format!("{:.0} ms", r.seek.p95_ms),
            met: r.failed == 0 && r.seek.n > 0 && r.seek.p95_ms <= TARGET_P95_MS,
        },
        Check {
            what: "first replayed frame's capture time from the time asked, largest".into(),
            target: format!("within one GOP ({gop_ms:.0} ms)"),
            measured: format!(
                "{:.0} ms (from {:+.0} to {:+.0})",
                r.abs_offset.max_ms, r.min_offset_ms, r.max_offset_ms
            ),
            met: r.abs_offset.n > 0 && r.abs_offset.n == r.seek.n && r.abs_offset.max_ms <= gop_ms,
        },
    ];
    let mut notes = vec![format!(
        "The agent recorded the camera for {:.0} s before the first seek (`--record-secs` {:.0}); each of the {} \
         seeks starts from live (`ponteConsole.live(0)`, a live frame shown, 0.5 s), then \
         `ponteConsole.playFrom(0, at)` at a point drawn uniformly (fixed seed) between the recording's start plus a GOP \
         and {} s before now. *Request* is the page's `Date.now()` as it calls `playFrom`; *shown* is the first frame of \
         the replay session's `expectedDisplayTime` from `requestVideoFrameCallback`, on the same clock. Capture time \
         is the agent's SEI read in the page (RTCRtpScriptTransform). Agent, relay and Chromium share the machine's \
         cores.",
        r.recorded_secs,
        params.record_secs,
        params.seeks,
        EDGE_MS / 1000
    )];
    if r.abs_offset.n < r.seek.n {
        notes.push(format!(
            "{} first replayed frames had no SEI capture time matched in the page.",
            r.seek.n - r.abs_offset.n
        ));
    }
    (vec![t], checks, notes)
}
