//! wall: the relay's CPU per browser viewer. Replay cameras → agent →
//! relay → V WHEP viewers, stepped (10, 50, 100, 200 by default), every
//! viewer on a camera's main stream. The viewers are the bench's own
//! non-decoding webrtc-rs receivers ([`crate::whep_viewer`]), so the figure
//! is the relay's, not a browser's; they run in the bench process on the
//! same cores, whose CPU is reported beside the relay's.
//!
//! The comparison is LiveKit's published load test: ~200 viewers, about
//! 0.29 Gbit/s, per vCPU. The target is twice that per relay core, in
//! Gbit/s per core, since ponte's viewers here take 4 Mbit/s each.

use crate::cluster::{Cluster, ClusterSpec, RelaySpec, Replay};
use crate::machine::{CpuUse, CpuWindow};
use crate::report::{Check, Table};
use crate::transport::TransportResult;
use crate::webrtc_limit::{RawResult, RawSpec};
use crate::whep_viewer::WhepViewer;
use anyhow::{Context, Result};
use ponte_relay::config::WhepSection;
use ponte_tests::DeviceKind;
use serde::Serialize;
use std::sync::atomic::Ordering;
use std::time::Duration;

/// A viewer counts as served when it received this share of the nominal rate.
pub const SERVED: f64 = 0.95;
/// LiveKit's published figure per vCPU: viewers and Gbit/s.
pub const LIVEKIT_VIEWERS_PER_VCPU: f64 = 200.0;
/// …and its egress per vCPU.
pub const LIVEKIT_GBPS_PER_VCPU: f64 = 0.29;
/// Viewers connecting at once while a step is set up.
const CONNECT_BATCH: usize = 10;
/// Longest wait, after a step's settle, for the relay's ingest to be back
/// at the cameras' rate (the agent climbs back after stepping down).
const INGEST_BACK: Duration = Duration::from_secs(30);

/// Knobs of the wall run.
#[derive(Debug, Clone, Serialize)]
pub struct WallParams {
    /// Viewer counts to step through, rising.
    pub viewers: Vec<usize>,
    /// Replay cameras the viewers are spread over.
    pub cameras: usize,
    /// How the cameras stream (viewers take the main stream).
    pub replay: Replay,
    /// Wait after adding viewers before measuring.
    pub settle_secs: f64,
    /// Measured window per step (rounded to whole GOPs).
    pub window_secs: f64,
    /// Sender → receiver pairs of the raw webrtc-rs run (0: none).
    pub raw_viewers: usize,
}

/// One measured step.
#[derive(Debug, Clone, Serialize)]
pub struct WallStep {
    /// WHEP viewers connected.
    pub viewers: usize,
    /// What the viewers should receive together, Gbit/s.
    pub nominal_gbps: f64,
    /// RTP payload that arrived at the viewers, Gbit/s.
    pub egress_gbps: f64,
    /// RTP packets per second at the viewers.
    pub packets_per_sec: f64,
    /// The least any viewer received, share of the nominal rate.
    pub min_viewer_share: f64,
    /// Viewers below [`SERVED`] of the nominal rate.
    pub viewers_short: usize,
    /// What the relay received from the agent, share of the cameras'
    /// nominal rate: below 1 when the agent's shaping stepped cameras down
    /// (it reads a relay slow to acknowledge as a congested path).
    pub relay_in: f64,
    /// Relay CPU.
    pub relay_cpu: CpuUse,
    /// Agent CPU.
    pub agent_cpu: CpuUse,
    /// The bench process (the viewers' receive path).
    pub bench_cpu: CpuUse,
    /// Egress per relay core.
    pub gbps_per_core: f64,
    /// Viewers per relay core.
    pub viewers_per_core: f64,
    /// Relay CPU per viewer, % of a core.
    pub relay_pct_per_viewer: f64,
    /// Window, seconds.
    pub wall_secs: f64,
    /// Seconds waited after the settle for the relay's ingest to recover.
    pub ingest_wait_secs: f64,
}

impl WallStep {
    /// Every viewer got at least [`SERVED`] of the nominal rate.
    pub fn served(&self) -> bool {
        self.viewers > 0 && self.viewers_short == 0
    }
}

/// The wall run's outcome.
#[derive(Debug, Clone, Serialize)]
pub struct WallResult {
    /// Every step, in the order run.
    pub steps: Vec<WallStep>,
    /// Viewers of the first step that could not be served, if any.
    pub stopped_at: Option<usize>,
    /// Why the ramp stopped early (an offer refused, a viewer with no packet).
    pub error: Option<String>,
    /// The WebRTC transport alone: raw webrtc-rs senders → receivers.
    pub raw: Option<RawResult>,
}

fn camera(i: usize) -> String {
    format!("w-{i:02}")
}

/// Runs the viewer steps.
pub async fn run(params: &WallParams) -> Result<WallResult> {
    let most = params.viewers.iter().copied().max().unwrap_or(1);
    let cameras = params.cameras.max(1);
    let devices = (0..cameras).map(|i| params.replay.device(&camera(i), DeviceKind::Fixed, 1, &[])).collect();
    // Every offer comes from 127.0.0.1 and no account: lift the per-client
    // brakes so the relay's limits are not what the bench measures.
    let whep = WhepSection {
        max_sessions: most + 8,
        max_per_camera: most + 8,
        offers_per_minute: 0,
        max_per_viewer: most + 8,
        ..WhepSection::default()
    };
    let cluster = Cluster::start(ClusterSpec {
        devices,
        cameras,
        relays: vec![RelaySpec { site: "relay".into(), downstreams: vec![] }],
        probe: false,
        sites: None,
        whep: Some(whep),
        recording: None,
    })
    .await?;
    let base = cluster.relays[0].config.base_url();
    let pids = cluster.pids();
    let gop_secs = f64::from(params.replay.gop_frames) / f64::from(params.replay.fps.max(1));
    let window = Duration::from_secs_f64((params.window_secs / gop_secs).round().max(1.0) * gop_secs);
    let per_viewer_bps = f64::from(params.replay.main_kbps) * 1e3;
    let mut viewers: Vec<WhepViewer> = Vec::new();
    let mut steps = Vec::new();
    let mut stopped_at = None;
    let mut error = None;
    for &want in &params.viewers {
        if let Err(e) = add_viewers(&mut viewers, want, &base, cameras).await {
            eprintln!("ponte-bench: wall: {want} viewers: {e:#}");
            error = Some(format!("{want} viewers: {e:#}"));
            stopped_at = Some(want);
            break;
        }
        tokio::time::sleep(Duration::from_secs_f64(params.settle_secs)).await;
        let ingest_wait_secs =
            ingest_back(&cluster, per_viewer_bps * cameras.min(want) as f64, gop_secs).await?;
        let before: Vec<(u64, u64)> = viewers.iter().map(read).collect();
        let relay_in0 = cluster.relay_bytes_received().await?[0];
        let cpu = CpuWindow::start(&pids)?;
        tokio::time::sleep(window).await;
        let after: Vec<(u64, u64)> = viewers.iter().map(read).collect();
        let relay_in1 = cluster.relay_bytes_received().await?[0];
        let (wall, bench_cpu, procs) = cpu.finish()?;
        let (agent_cpu, relay_cpu) = (procs[0], procs[1]);
        let got: Vec<(u64, u64)> = before
            .iter()
            .zip(&after)
            .map(|(b, a)| (a.0.saturating_sub(b.0), a.1.saturating_sub(b.1)))
            .collect();
        let bytes: u64 = got.iter().map(|g| g.0).sum();
        let packets: u64 = got.iter().map(|g| g.1).sum();
        let shares: Vec<f64> = got.iter().map(|g| g.0 as f64 * 8.0 / wall / per_viewer_bps).collect();
        let relay_cores = relay_cpu.core_pct / 100.0;
        let egress_gbps = bytes as f64 * 8.0 / 1e9 / wall;
        let n = viewers.len();
        let step = WallStep {
            viewers: n,
            nominal_gbps: n as f64 * per_viewer_bps / 1e9,
            egress_gbps,
            packets_per_sec: packets as f64 / wall,
            min_viewer_share: shares.iter().copied().fold(f64::INFINITY, f64::min),
            viewers_short: shares.iter().filter(|s| **s < SERVED).count(),
            relay_in: relay_in1.saturating_sub(relay_in0) as f64 * 8.0
                / wall
                / (per_viewer_bps * cameras.min(n.max(1)) as f64),
            relay_cpu,
            agent_cpu,
            bench_cpu,
            gbps_per_core: if relay_cores > 0.0 { egress_gbps / relay_cores } else { 0.0 },
            viewers_per_core: if relay_cores > 0.0 { n as f64 / relay_cores } else { 0.0 },
            relay_pct_per_viewer: relay_cpu.core_pct / n.max(1) as f64,
            wall_secs: wall,
            ingest_wait_secs,
        };
        eprintln!(
            "ponte-bench: wall: {n} viewers: {:.3} of {:.3} Gbit/s, least viewer {:.1}%, relay in {:.1}%, CPU relay \
             {:.0}% bench {:.0}% agent {:.0}%",
            step.egress_gbps,
            step.nominal_gbps,
            100.0 * step.min_viewer_share,
            100.0 * step.relay_in,
            relay_cpu.core_pct,
            bench_cpu.core_pct,
            agent_cpu.core_pct
        );
        for (i, share) in shares.iter().enumerate().filter(|(_, s)| **s < SERVED) {
            let state = viewers[i].meter.state.lock().unwrap_or_else(|e| e.into_inner()).clone();
            eprintln!(
                "ponte-bench: wall: viewer {i} of {} got {:.1}% (peer connection {state})",
                camera(i % cameras),
                100.0 * share
            );
        }
        let served = step.served();
        steps.push(step);
        if !served {
            stopped_at = Some(want);
            break;
        }
    }
    for v in &mut viewers {
        v.close().await;
    }
    cluster.shutdown().await?;
    let raw = if params.raw_viewers > 0 {
        let spec = RawSpec {
            viewers: params.raw_viewers,
            kbps: params.replay.main_kbps,
            fps: params.replay.fps,
            warmup_secs: params.settle_secs,
            secs: window.as_secs_f64(),
        };
        let r = crate::webrtc_limit::run(spec).await.context("raw webrtc-rs senders → receivers")?;
        eprintln!(
            "ponte-bench: wall: raw webrtc-rs, {} pairs: {:.3} Gbit/s, CPU-s per Gbit: sender {:.3}, receiver {:.3}, \
             whole process {:.3}",
            params.raw_viewers,
            r.gbps,
            r.sender_cpu_s_per_gbit,
            r.receiver_cpu_s_per_gbit,
            r.process_cpu_s_per_gbit
        );
        Some(r)
    } else {
        None
    };
    Ok(WallResult { steps, stopped_at, error, raw })
}

/// Waits, a GOP at a time, until the relay receives at least 95% of
/// `nominal_bps` from the agent, at most [`INGEST_BACK`]; the seconds waited.
async fn ingest_back(cluster: &Cluster, nominal_bps: f64, gop_secs: f64) -> Result<f64> {
    let started = std::time::Instant::now();
    let gop = Duration::from_secs_f64(gop_secs.max(0.2));
    loop {
        let t0 = std::time::Instant::now();
        let b0 = cluster.relay_bytes_received().await?[0];
        tokio::time::sleep(gop).await;
        let got = cluster.relay_bytes_received().await?[0].saturating_sub(b0) as f64 * 8.0;
        let rate = got / t0.elapsed().as_secs_f64();
        if rate >= SERVED * nominal_bps || started.elapsed() >= INGEST_BACK {
            let waited = started.elapsed().as_secs_f64() - t0.elapsed().as_secs_f64();
            if waited >= 0.5 {
                eprintln!("ponte-bench: wall: waited {waited:.1} s for the relay's ingest to recover");
            }
            return Ok(waited);
        }
    }
}

fn read(v: &WhepViewer) -> (u64, u64) {
    (v.meter.bytes.load(Ordering::Relaxed), v.meter.packets.load(Ordering::Relaxed))
}

/// Connects viewers until there are `want`, round-robin over the cameras,
/// a few at a time.
async fn add_viewers(viewers: &mut Vec<WhepViewer>, want: usize, base: &str, cameras: usize) -> Result<()> {
    while viewers.len() < want {
        let from = viewers.len();
        let batch = (want - from).min(CONNECT_BATCH);
        let tasks: Vec<_> = (from..from + batch)
            .map(|i| {
                let (base, cam) = (base.to_owned(), camera(i % cameras));
                tokio::spawn(async move { WhepViewer::connect(&base, &cam, "main").await })
            })
            .collect();
        let mut failed = None;
        for t in tasks {
            match t.await.context("viewer task")? {
                Ok(v) => viewers.push(v),
                Err(e) => failed = failed.or(Some(e)),
            }
        }
        if let Some(e) = failed {
            return Err(e.context(format!("connecting viewer {} of {want}", viewers.len() + 1)));
        }
    }
    Ok(())
}

/// Tables, checks and notes.
pub fn tables(
    r: &WallResult,
    params: &WallParams,
    transport: &TransportResult,
) -> (Vec<Table>, Vec<Check>, Vec<String>) {
    let mut t = Table::new(
        &format!(
            "WHEP viewers (webrtc-rs, not decoding) of {} replay cameras, main stream {} kbit/s at {} fps, GOP {} frames",
            params.cameras, params.replay.main_kbps, params.replay.fps, params.replay.gop_frames
        ),
        &[
            "viewers",
            "egress Gbit/s",
            "of nominal",
            "least viewer",
            "every viewer ≥ 95%",
            "relay in",
            "waited for relay in, s",
            "relay CPU %",
            "relay Gbit/s per core",
            "viewers per relay core",
            "relay % of a core per viewer",
            "bench (receivers) CPU %",
            "agent CPU %",
            "RTP packets/s",
        ],
    );
    for s in &r.steps {
        t.row(vec![
            s.viewers.to_string(),
            format!("{:.3}", s.egress_gbps),
            format!("{:.1}%", 100.0 * s.egress_gbps / s.nominal_gbps.max(1e-12)),
            format!("{:.1}%", 100.0 * s.min_viewer_share),
            if s.served() { "yes".into() } else { format!("no ({} short)", s.viewers_short) },
            format!("{:.1}%", 100.0 * s.relay_in),
            format!("{:.0}", s.ingest_wait_secs),
            format!("{:.0}", s.relay_cpu.core_pct),
            format!("{:.3}", s.gbps_per_core),
            format!("{:.0}", s.viewers_per_core),
            format!("{:.2}", s.relay_pct_per_viewer),
            format!("{:.0}", s.bench_cpu.core_pct),
            format!("{:.0}", s.agent_cpu.core_pct),
            format!("{:.0}", s.packets_per_sec),
        ]);
    }
    let best = r
        .steps
        .iter()
        .filter(|s| s.served())
        .max_by(|a, b| a.viewers.cmp(&b.viewers).then(a.gbps_per_core.total_cmp(&b.gbps_per_core)));
    let mut cmp = Table::new(
        "Per relay core against LiveKit's published load test and raw quinn (same run)",
        &["", "viewers per core", "Gbit/s per core"],
    );
    if let Some(b) = best {
        cmp.row(vec![
            format!("ponte relay, WHEP, {} viewers at {} kbit/s", b.viewers, params.replay.main_kbps),
            format!("{:.0}", b.viewers_per_core),
            format!("{:.3}", b.gbps_per_core),
        ]);
    }
    cmp.row(vec![
        "LiveKit, per vCPU (published)".into(),
        format!("{LIVEKIT_VIEWERS_PER_VCPU:.0}"),
        format!("{LIVEKIT_GBPS_PER_VCPU:.2}"),
    ]);
    if let Some(raw) = &r.raw {
        cmp.row(vec![
            format!(
                "raw webrtc-rs sender, no relay ({} tracks at {} kbit/s, same run)",
                raw.spec.viewers, raw.spec.kbps
            ),
            format!("{:.0}", raw.sender_gbps_per_core * 1e6 / f64::from(raw.spec.kbps.max(1))),
            format!("{:.3}", raw.sender_gbps_per_core),
        ]);
    }
    cmp.row(vec![
        format!("raw quinn sender, bulk ({} connection(s), same run)", transport.spec.connections),
        "-".into(),
        if transport.sender_cpu_s_per_gbit > 0.0 {
            format!("{:.3}", 1.0 / transport.sender_cpu_s_per_gbit)
        } else {
            "-".into()
        },
    ]);
    let target = 2.0 * LIVEKIT_GBPS_PER_VCPU;
    let checks = vec![Check {
        what: "relay WHEP egress per core, most viewers every one served".into(),
        target: format!("≥ {target:.2} Gbit/s (2× LiveKit's {LIVEKIT_GBPS_PER_VCPU:.2} per vCPU)"),
        measured: best.map_or("no step served every viewer".into(), |b| {
            format!(
                "{:.3} Gbit/s ({} viewers, {:.0} per core)",
                b.gbps_per_core, b.viewers, b.viewers_per_core
            )
        }),
        met: best.is_some_and(|b| b.gbps_per_core >= target),
    }];
    let mut notes = vec![
        format!(
            "Viewers are the bench's own webrtc-rs peer connections (recvonly H.264, default interceptors: NACK, \
             receiver reports), one per WHEP session, spread round-robin over {} cameras; they count RTP payload \
             bytes and packets and decode nothing. They run in the bench process on the same {} cores as the relay \
             and agent: *bench CPU %* is their cost, and once the cores are full the relay's share is what is left.",
            params.cameras,
            std::thread::available_parallelism().map_or(1, |n| n.get())
        ),
        "Relay CPU is /proc/<pid>/stat (utime + stime) over the window; *Gbit/s per core* = egress ÷ relay cores \
         busy, *viewers per core* = viewers ÷ relay cores busy. A viewer is served at ≥ 95% of the camera's nominal \
         rate over whole GOPs. *Relay in* is what the relay received from the agent against the cameras' nominal \
         rate: the agent shapes its uplink, and a relay too busy to acknowledge promptly looks to it like a \
         congested path (RTT up), so it steps cameras down to their substream; viewers of the main stream then \
         fall short for a reason upstream of the relay. So each step, after its settle, waits (a GOP at a time, \
         at most 30 s) until the relay receives ≥ 95% of the cameras' rate again: *waited for relay in*."
            .into(),
        format!(
            "The QUIC transport's own limit in this run (transport-limit): raw quinn bulk {:.3} Gbit/s, its sender \
             {:.3} CPU-s per Gbit; the relay's QUIC egress is measured against it in fanout.",
            transport.gbps, transport.sender_cpu_s_per_gbit
        ),
    ];
    if let Some(raw) = &r.raw {
        notes.push(format!(
            "The WebRTC transport alone, same run: {} webrtc-rs peer connections in the bench, each with one H.264 \
             track as the relay builds per viewer, packetize a {} kbit/s frame per period for their track (as the \
             relay does per viewer) to {} of the bench's receivers, senders on one thread and receivers on another: \
             {:.3} Gbit/s, least receiver {:.1}%, sender {:.3} and receiver {:.3} CPU-s per Gbit.{}",
            raw.spec.viewers,
            raw.spec.kbps,
            raw.spec.viewers,
            raw.gbps,
            100.0 * raw.min_viewer_share,
            raw.sender_cpu_s_per_gbit,
            raw.receiver_cpu_s_per_gbit,
            best.filter(|b| b.gbps_per_core > 0.0 && raw.sender_cpu_s_per_gbit > 0.0).map_or(String::new(), |b| {
                format!(
                    " The relay's CPU per Gbit at {} viewers is {:.2}× that sender's (its ingest, hub and WHEP session \
                     on top of the transport).",
                    b.viewers,
                    (1.0 / b.gbps_per_core) / raw.sender_cpu_s_per_gbit
                )
            })
        ));
    }
    if let Some(e) = &r.error {
        notes.push(format!("The ramp stopped: {e}."));
    } else if let Some(v) = r.stopped_at {
        notes.push(format!("The ramp stopped at {v} viewers: not every viewer was served."));
    }
    (vec![t, cmp], checks, notes)
}
