//! ttff: time from subscribing to the first decodable frame, for a QUIC
//! subscriber (a cascade downstream: `Subscribe` sent → first frame of a
//! GOP stream, always a keyframe, complete) and for a WHEP viewer in
//! headless Chromium (`ponteViewer.play()` → the first decoded frame handed
//! to the compositor, from `requestVideoFrameCallback`; getStats is cached
//! for 50 ms by Chromium, too coarse for this).
//!
//! Cold: nobody watched the camera, so the relay subscribes upstream and
//! the agent starts the replay camera. Warm: the camera already flows
//! through the relay, whose GOP cache answers at once.

use crate::cluster::{Cluster, ClusterSpec, RelaySpec, Replay};
use crate::report::{Check, Table};
use crate::stats::Dist;
use crate::subscriber::{subscription_id, Subscriber};
use anyhow::{bail, Context, Result};
use ponte_proto::media::Quality;
use ponte_tests::{Chromium, DeviceKind};
use serde::Serialize;
use std::time::Duration;

/// Longest wait for a first frame.
const FIRST_FRAME: Duration = Duration::from_secs(10);

/// Knobs of the ttff run.
#[derive(Debug, Clone, Serialize)]
pub struct TtffParams {
    /// Measurements per path.
    pub rounds: usize,
    /// How the cameras stream.
    pub replay: Replay,
    /// Whether to run the Chromium part.
    pub whep: bool,
}

/// Times of one path.
#[derive(Debug, Clone, Serialize)]
pub struct Path {
    /// `QUIC cold`, `WHEP warm`, …
    pub path: String,
    /// Each measurement, ms.
    pub ms: Vec<f64>,
    /// Summary.
    pub dist: Dist,
    /// WHEP only: where the time went, per measurement.
    pub phases: Vec<WhepPhases>,
    /// QUIC only: ms to `SubscribeOk`, per measurement.
    pub answer_ms: Vec<f64>,
}

fn path(name: &str, ms: Vec<f64>) -> Path {
    let mut micros: Vec<i64> = ms.iter().map(|m| (m * 1000.0) as i64).collect();
    Path {
        path: name.into(),
        dist: Dist::of_micros(&mut micros),
        ms,
        phases: Vec::new(),
        answer_ms: Vec::new(),
    }
}

fn quic_path(name: &str, times: Vec<(f64, f64)>) -> Path {
    Path { answer_ms: times.iter().map(|t| t.0).collect(), ..path(name, times.iter().map(|t| t.1).collect()) }
}

fn whep_path(name: &str, phases: Vec<WhepPhases>) -> Path {
    Path { phases: phases.clone(), ..path(name, phases.iter().map(|p| p.first_frame_decoded).collect()) }
}

fn camera(i: usize) -> String {
    format!("c-{i:02}")
}

/// Subscribes to `track`; ms to `SubscribeOk` and to the first frame.
async fn quic_first_frame(sub: &mut Subscriber, track: usize) -> Result<(f64, f64)> {
    let id = subscription_id(track as u32, Quality::Main);
    let sent = sub.subscribe_nowait(track as u32, &camera(track), Quality::Main).await?;
    let ms = |at: std::time::Instant| at.saturating_duration_since(sent).as_secs_f64() * 1000.0;
    loop {
        if let Some(at) = sub.meter.first_frame(id) {
            return Ok((sub.meter.answered(id).map_or(f64::NAN, ms), ms(at)));
        }
        if sent.elapsed() > FIRST_FRAME {
            bail!("`{}`: no frame of camera {} within {FIRST_FRAME:?}", sub.site(), camera(track));
        }
        tokio::time::sleep(Duration::from_micros(200)).await;
    }
}

/// Phases of one WHEP playback, ms from `play()`.
#[derive(Debug, Clone, Default, Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WhepPhases {
    /// The browser's ICE gathering completed.
    pub gathered: Option<f64>,
    /// The WHEP POST left (after the offer and ICE gathering).
    pub post_sent: Option<f64>,
    /// The relay's SDP answer arrived.
    pub answer: Option<f64>,
    /// ICE connected.
    pub ice_connected: Option<f64>,
    /// ICE and DTLS connected.
    pub connected: Option<f64>,
    /// First RTP bytes counted by the browser (getStats: up to 50 ms late,
    /// Chromium caches its stats report for 50 ms).
    pub first_bytes: Option<f64>,
    /// First frame assembled: its last packet's arrival
    /// (`requestVideoFrameCallback` metadata), else from getStats.
    pub first_frame_received: Option<f64>,
    /// `framesDecoded > 0` seen in getStats (up to 50 ms late, cached).
    pub stats_decoded: Option<f64>,
    /// First frame decoded and handed to the compositor: the ttff. From the
    /// video element's `requestVideoFrameCallback` (`presentationTime`);
    /// getStats' `framesDecoded > 0` only where that is missing.
    pub first_frame_decoded: f64,
}

/// Loads relay `base`'s viewer page in `browser` and waits until its
/// script is up (also when the tab showed another relay's page before).
pub async fn load_viewer_page(browser: &Chromium, base: &str) -> Result<()> {
    let url = format!("{base}/");
    browser.navigate(&url).await?;
    let js = format!(
        "location.href.startsWith({}) && document.readyState === 'complete' && typeof window.ponteViewer === 'object'",
        serde_json::to_string(&url)?
    );
    ponte_tests::wait_until(
        "the viewer page",
        Duration::from_secs(20),
        Duration::from_millis(50),
        || async { Ok(browser.eval(&js).await?.as_bool().filter(|&b| b)) },
    )
    .await?;
    Ok(())
}

/// Plays `camera` in the viewer page and times its phases.
async fn whep_first_frame(browser: &Chromium, camera: &str) -> Result<WhepPhases> {
    let js = format!(
        "(async (cam) => {{ \
            const v = window.ponteViewer; \
            const marks = {{}}; \
            let failed = null; \
            const realFetch = window.fetch; \
            const RealPc = window.RTCPeerConnection; \
            const t0 = performance.now(); \
            window.RTCPeerConnection = function (...args) {{ \
                const pc = new RealPc(...args); \
                const mark = (k) => {{ if (marks[k] === undefined) marks[k] = performance.now() - t0; }}; \
                pc.addEventListener('icegatheringstatechange', () => {{ \
                    if (pc.iceGatheringState === 'complete') mark('gathered'); }}); \
                pc.addEventListener('iceconnectionstatechange', () => {{ \
                    if (pc.iceConnectionState === 'connected') mark('iceConnected'); }}); \
                pc.addEventListener('connectionstatechange', () => {{ \
                    if (pc.connectionState === 'connected') mark('connected'); }}); \
                return pc; \
            }}; \
            window.fetch = async (...args) => {{ \
                const whep = String(args[0]).includes('/whep/'); \
                if (whep) marks.postSent = performance.now() - t0; \
                const r = await realFetch(...args); \
                if (whep) marks.answer = performance.now() - t0; \
                return r; \
            }}; \
            try {{ \
                v.play(cam, 'main').catch((e) => {{ failed = String(e); }}); \
                const video = document.getElementById('video'); \
                const rvfc = !!video && 'requestVideoFrameCallback' in video; \
                let hooked = false; \
                for (;;) {{ \
                    if (rvfc && !hooked && video.srcObject) {{ \
                        hooked = true; \
                        video.requestVideoFrameCallback((now, m) => {{ \
                            marks.shown = (m.presentationTime ?? now) - t0; \
                            if (m.receiveTime !== undefined) marks.received = m.receiveTime - t0; \
                        }}); \
                    }} \
                    const s = await v.stats(); \
                    const t = performance.now() - t0; \
                    if (s.bytesReceived > 0 && marks.firstBytes === undefined) marks.firstBytes = t; \
                    if (s.framesReceived > 0 && marks.firstFrameReceived === undefined) marks.firstFrameReceived = t; \
                    /* once shown, polls on only so the getStats phases get filled in */ \
                    if (s.framesDecoded > 0 && marks.statsDecoded === undefined) marks.statsDecoded = t; \
                    if (marks.shown !== undefined && (marks.statsDecoded !== undefined || t > marks.shown + 200)) {{ \
                        marks.firstFrameDecoded = marks.shown; \
                        if (marks.received !== undefined) marks.firstFrameReceived = marks.received; \
                        return marks; \
                    }} \
                    if (marks.statsDecoded !== undefined && (!hooked || t > marks.statsDecoded + 500)) {{ \
                        marks.firstFrameDecoded = marks.statsDecoded; return marks; \
                    }} \
                    if (failed) throw new Error(failed); \
                    if (t > {}) throw new Error('no frame decoded'); \
                    await new Promise((r) => setTimeout(r, 2)); \
                }} \
            }} finally {{ window.fetch = realFetch; window.RTCPeerConnection = RealPc; }} \
        }})({})",
        FIRST_FRAME.as_millis(),
        serde_json::to_string(camera)?
    );
    let v = browser.eval(&js).await.with_context(|| format!("WHEP playback of {camera}"))?;
    serde_json::from_value(v.clone()).with_context(|| format!("the page returned {v} instead of phase times"))
}

/// Runs the measurements.
pub async fn run(params: &TtffParams) -> Result<Vec<Path>> {
    let r = params.rounds.max(1);
    // Cameras 0..r: QUIC cold, then warm for a second subscriber and WHEP;
    // cameras r..2r: WHEP cold.
    // The last camera warms up: the agent encodes its replay GOP once at
    // start, and the browser initialises WebRTC on its first playback.
    let n = 2 * r + 1;
    let warmup = 2 * r;
    let devices = (0..n).map(|i| params.replay.device(&camera(i), DeviceKind::Fixed, 1, &[])).collect();
    let mut cluster = Cluster::start(ClusterSpec {
        devices,
        cameras: n,
        relays: vec![RelaySpec { site: "relay".into(), downstreams: vec!["sub-1".into(), "sub-2".into()] }],
        probe: false,
        sites: None,
        whep: None,
        recording: None,
    })
    .await?;
    let base = cluster.relays[0].config.base_url();
    let mut paths = Vec::new();
    let (first, second) = cluster.relays[0].downstreams.split_at_mut(1);
    let (a, b) = (&mut first[0], &mut second[0]);
    quic_first_frame(a, warmup).await?;
    a.unsubscribe([subscription_id(warmup as u32, Quality::Main)]).await?;
    let mut cold = Vec::new();
    for i in 0..r {
        cold.push(quic_first_frame(a, i).await?);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut warm = Vec::new();
    for i in 0..r {
        warm.push(quic_first_frame(b, i).await?);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    paths.push(quic_path("QUIC cold", cold));
    paths.push(quic_path("QUIC warm", warm));

    if params.whep {
        let browser = Chromium::launch().await?;
        load_viewer_page(&browser, &base).await?;
        whep_first_frame(&browser, &camera(warmup)).await?;
        browser.eval("window.ponteViewer.stop()").await?;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let mut cold = Vec::new();
        let mut warm = Vec::new();
        for i in 0..r {
            cold.push(whep_first_frame(&browser, &camera(r + i)).await?);
            browser.eval("window.ponteViewer.stop()").await?;
            tokio::time::sleep(Duration::from_millis(300)).await;
            warm.push(whep_first_frame(&browser, &camera(i)).await?);
            browser.eval("window.ponteViewer.stop()").await?;
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        paths.push(whep_path("WHEP cold", cold));
        paths.push(whep_path("WHEP warm", warm));
    }
    cluster.shutdown().await?;
    Ok(paths)
}

/// Tables and checks.
pub fn tables(paths: &[Path], params: &TtffParams) -> (Vec<Table>, Vec<Check>) {
    let mut t = Table::new(
        &format!(
            "Time to first frame (ms) on loopback, {} kbit/s camera at {} fps, GOP {} frames",
            params.replay.main_kbps, params.replay.fps, params.replay.gop_frames
        ),
        &["path", "n", "p50", "max", "each"],
    );
    let mut checks = Vec::new();
    for p in paths {
        let each: Vec<String> = p.ms.iter().map(|m| format!("{m:.1}")).collect();
        t.row(vec![
            p.path.clone(),
            p.dist.n.to_string(),
            format!("{:.1}", p.dist.p50_ms),
            format!("{:.1}", p.dist.max_ms),
            each.join(" "),
        ]);
        let target = if p.path.starts_with("QUIC") { 100.0 } else { 150.0 };
        checks.push(Check {
            what: format!("ttff {} (worst of {})", p.path, p.dist.n),
            target: format!("≤ {target:.0} ms"),
            measured: format!("{:.1} ms", p.dist.max_ms),
            met: p.dist.n > 0 && p.dist.max_ms <= target,
        });
    }
    let mut tables = vec![t];
    let quic: Vec<&Path> = paths.iter().filter(|p| !p.answer_ms.is_empty()).collect();
    if !quic.is_empty() {
        let mut phases = Table::new(
            "QUIC phases, median ms from `Subscribe` sent",
            &["path", "SubscribeOk", "first frame"],
        );
        for p in quic {
            let mut v: Vec<i64> =
                p.answer_ms.iter().filter(|m| m.is_finite()).map(|m| (m * 1000.0) as i64).collect();
            let d = Dist::of_micros(&mut v);
            phases.row(vec![p.path.clone(), format!("{:.1}", d.p50_ms), format!("{:.1}", p.dist.p50_ms)]);
        }
        tables.push(phases);
    }
    let whep: Vec<&Path> = paths.iter().filter(|p| !p.phases.is_empty()).collect();
    if !whep.is_empty() {
        let mut phases = Table::new(
            "WHEP phases, median ms from `play()`",
            &[
                "path",
                "ICE gathered",
                "POST sent",
                "answer",
                "ICE connected",
                "DTLS connected",
                "first RTP bytes (getStats)",
                "first frame received",
                "first frame decoded",
                "framesDecoded > 0 (getStats)",
            ],
        );
        for p in whep {
            let median = |f: &dyn Fn(&WhepPhases) -> Option<f64>| {
                let mut v: Vec<i64> = p.phases.iter().filter_map(f).map(|m| (m * 1000.0) as i64).collect();
                let d = Dist::of_micros(&mut v);
                if d.n == 0 {
                    "-".to_owned()
                } else {
                    format!("{:.1}", d.p50_ms)
                }
            };
            phases.row(vec![
                p.path.clone(),
                median(&|x| x.gathered),
                median(&|x| x.post_sent),
                median(&|x| x.answer),
                median(&|x| x.ice_connected),
                median(&|x| x.connected),
                median(&|x| x.first_bytes),
                median(&|x| x.first_frame_received),
                median(&|x| Some(x.first_frame_decoded)),
                median(&|x| x.stats_decoded),
            ]);
        }
        tables.push(phases);
    }
    (tables, checks)
}
