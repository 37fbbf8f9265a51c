//! record: what recording costs the agent. The Cremona inventory (the
//! city's devices) as replay cameras, every main stream kept flowing to one
//! relay (`[[site]] always_on = ["*"]`), run twice in one scenario: first
//! without a `[[recording]]` rule, then with one that records every
//! camera's main stream into a temp dir. The difference in agent CPU is the
//! recording's cost; the disk figures are the store's growth and the
//! agent's `/proc/<pid>/io` `write_bytes` over the window, against the
//! cameras' aggregate bitrate; GOPs written and lost come from the agent's
//! `/status` (`recordings[0]`).
//!
//! Replay cameras send pre-encoded frames (one GOP of the test pattern
//! padded to the bitrate): 43 lenses at 4 Mbit/s is more H.264 than two
//! cores can encode, and what the agent records is the bytes it receives,
//! whoever encoded them.

use crate::city;
use crate::cluster::{Cluster, ClusterSpec, RelaySpec, Replay};
use crate::machine::{CpuUse, CpuWindow};
use crate::report::{Check, Table};
use anyhow::{Context, Result};
use ponte_proto::media::Quality;
use ponte_proto::policy::SitePolicyConfig;
use ponte_tests::{Device, DeviceExt};
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The relay that keeps every main stream on.
const SITE: &str = "questura";

/// Knobs of the record run.
#[derive(Debug, Clone, Serialize)]
pub struct RecordParams {
    /// Inventory points to use (0 = all), for a short smoke run.
    pub points: usize,
    /// How the cameras stream.
    pub replay: Replay,
    /// Wait once everything flows (and the recorders have started), before measuring.
    pub settle_secs: f64,
    /// Measured window of each phase.
    pub window_secs: f64,
}

/// One phase (without or with recording).
#[derive(Debug, Clone, Serialize)]
pub struct Phase {
    /// Agent CPU.
    pub agent: CpuUse,
    /// Relay CPU.
    pub relay: CpuUse,
    /// What the relay received, Mbit/s.
    pub received_mbps: f64,
    /// Agent `write_bytes` (/proc/<pid>/io) per second.
    pub agent_write_bytes_per_sec: f64,
    /// Measured seconds.
    pub window_secs: f64,
}

/// What the store did over the recording phase's window.
#[derive(Debug, Clone, Serialize)]
pub struct StoreFigures {
    /// Growth of the store directory (file sizes), bytes per second.
    pub growth_bytes_per_sec: f64,
    /// GOPs written in the window (`gops_written`).
    pub gops_written: u64,
    /// GOPs lost in the window (`gops_lost`).
    pub gops_lost: u64,
    /// GOPs the cameras sent in the window (lenses × window ÷ GOP length).
    pub gops_sent: f64,
    /// Tracks being recorded (`recording`).
    pub tracks_recording: u64,
    /// Bytes on disk at the end (`bytes`).
    pub bytes_on_disk: u64,
    /// `gops_written` and `gops_lost` since the agent started.
    pub gops_written_total: u64,
    /// Since the agent started.
    pub gops_lost_total: u64,
    /// Where the store was.
    pub dir: String,
}

/// What the run measured.
#[derive(Debug, Clone, Serialize)]
pub struct RecordResult {
    /// Inventory points used.
    pub points: usize,
    /// Lenses (cameras) recorded.
    pub lenses: usize,
    /// The cameras' main streams together, Mbit/s (nominal).
    pub nominal_mbps: f64,
    /// Live only.
    pub without: Phase,
    /// Live and every main stream recorded.
    pub with: Phase,
    /// The store over the recording phase.
    pub store: StoreFigures,
}

/// `write_bytes` of process `pid` (bytes it caused to be sent to storage).
fn write_bytes(pid: u32) -> Result<u64> {
    let io = std::fs::read_to_string(format!("/proc/{pid}/io"))
        .with_context(|| format!("reading /proc/{pid}/io"))?;
    io.lines()
        .find_map(|l| l.strip_prefix("write_bytes:"))
        .and_then(|v| v.trim().parse().ok())
        .context("no write_bytes in /proc/<pid>/io")
}

/// Sum of the sizes of the files under `dir`.
fn dir_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    entries
        .flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => dir_bytes(&e.path()),
            Ok(_) => e.metadata().map_or(0, |m| m.len()),
            Err(_) => 0,
        })
        .sum()
}

/// Waits until the relay receives at least 90% of `expected_mbps`.
async fn flowing(cluster: &Cluster, expected_mbps: f64) -> Result<()> {
    let since = Instant::now();
    loop {
        let a: u64 = cluster.relay_bytes_received().await?.iter().sum();
        let t = Instant::now();
        tokio::time::sleep(Duration::from_secs(1)).await;
        let b: u64 = cluster.relay_bytes_received().await?.iter().sum();
        let got = (b - a) as f64 * 8.0 / 1e6 / t.elapsed().as_secs_f64();
        if got >= 0.9 * expected_mbps {
            return Ok(());
        }
        anyhow::ensure!(
            since.elapsed() < Duration::from_secs(60),
            "the relay receives {got:.1} Mbit/s after 60 s, expected {expected_mbps:.1}"
        );
    }
}

/// `recordings[0]` of the agent's status.
async fn recording(cluster: &Cluster) -> Result<serde_json::Value> {
    let doc = cluster.agent_status().await?;
    let r = doc["recordings"][0].clone();
    anyhow::ensure!(r.is_object(), "the agent's /status has no recordings[0]: {doc}");
    Ok(r)
}

fn count(v: &serde_json::Value, key: &str) -> u64 {
    v[key].as_u64().unwrap_or(0)
}

/// Starts the inventory (recording into `store` if given), waits for the
/// streams, settles and measures one window.
async fn phase(
    params: &RecordParams,
    devices: &[Device],
    cameras: usize,
    store: Option<&Path>,
) -> Result<(Phase, Option<StoreFigures>)> {
    let policy =
        vec![SitePolicyConfig { always_on: vec!["*".into()], ..ponte_tests::site_policy(SITE, &["*"]) }];
    let cluster = Cluster::start(ClusterSpec {
        devices: devices.to_vec(),
        cameras,
        relays: vec![RelaySpec { site: SITE.into(), downstreams: vec![] }],
        probe: false,
        sites: Some(policy),
        whep: None,
        recording: store.map(|s| (s.to_owned(), Quality::Main)),
    })
    .await?;
    let expected_mbps = cameras as f64 * f64::from(params.replay.main_kbps) / 1e3;
    flowing(&cluster, expected_mbps).await?;
    tokio::time::sleep(Duration::from_secs_f64(params.settle_secs)).await;
    let pids = cluster.pids();
    let rec0 = match store {
        Some(_) => Some(recording(&cluster).await?),
        None => None,
    };
    let size0 = store.map_or(0, dir_bytes);
    let io0 = write_bytes(pids[0])?;
    let in0: u64 = cluster.relay_bytes_received().await?.iter().sum();
    let window = CpuWindow::start(&pids)?;
    tokio::time::sleep(Duration::from_secs_f64(params.window_secs)).await;
    let in1: u64 = cluster.relay_bytes_received().await?.iter().sum();
    let io1 = write_bytes(pids[0])?;
    let size1 = store.map_or(0, dir_bytes);
    let (wall, _, procs) = window.finish()?;
    let rec1 = match store {
        Some(_) => Some(recording(&cluster).await?),
        None => None,
    };
    cluster.shutdown().await?;
    let phase = Phase {
        agent: procs[0],
        relay: procs[1],
        received_mbps: in1.saturating_sub(in0) as f64 * 8.0 / 1e6 / wall,
        agent_write_bytes_per_sec: io1.saturating_sub(io0) as f64 / wall,
        window_secs: wall,
    };
    let gop_secs = f64::from(params.replay.gop_frames) / f64::from(params.replay.fps.max(1));
    let figures = match (rec0, rec1, store) {
        (Some(a), Some(b), Some(dir)) => Some(StoreFigures {
            growth_bytes_per_sec: size1.saturating_sub(size0) as f64 / wall,
            gops_written: count(&b, "gops_written").saturating_sub(count(&a, "gops_written")),
            gops_lost: count(&b, "gops_lost").saturating_sub(count(&a, "gops_lost")),
            gops_sent: cameras as f64 * wall / gop_secs,
            tracks_recording: count(&b, "recording"),
            bytes_on_disk: count(&b, "bytes"),
            gops_written_total: count(&b, "gops_written"),
            gops_lost_total: count(&b, "gops_lost"),
            dir: dir.display().to_string(),
        }),
        _ => None,
    };
    Ok((phase, figures))
}

/// Runs both phases.
pub async fn run(params: &RecordParams) -> Result<RecordResult> {
    let (devices, lenses) = city::inventory(&params.replay, params.points)?;
    let cameras = devices.iter().flat_map(Device::camera_ids).count();
    let store: PathBuf = std::env::temp_dir();
    let store = tempfile::Builder::new()
        .prefix("ponte-bench-store-")
        .tempdir_in(&store)
        .with_context(|| format!("creating a store dir in {}", store.display()))?;
    let (without, _) = phase(params, &devices, cameras, None).await.context("without recording")?;
    eprintln!(
        "ponte-bench: record: without recording, agent CPU {:.1}%, relay received {:.1} Mbit/s",
        without.agent.core_pct, without.received_mbps
    );
    let (with, figures) =
        phase(params, &devices, cameras, Some(store.path())).await.context("with recording")?;
    let store = figures.context("no store figures")?;
    eprintln!(
        "ponte-bench: record: recording, agent CPU {:.1}%, store +{:.2} MB/s, write_bytes {:.2} MB/s, GOPs written {} lost {}",
        with.agent.core_pct,
        store.growth_bytes_per_sec / 1e6,
        with.agent_write_bytes_per_sec / 1e6,
        store.gops_written,
        store.gops_lost
    );
    Ok(RecordResult {
        points: devices.len(),
        lenses,
        nominal_mbps: cameras as f64 * f64::from(params.replay.main_kbps) / 1e3,
        without,
        with,
        store,
    })
}

/// Tables, checks and notes.
pub fn tables(r: &RecordResult, params: &RecordParams) -> (Vec<Table>, Vec<Check>, Vec<String>) {
    let p = &params.replay;
    let nominal_bytes = r.nominal_mbps * 1e6 / 8.0;
    let mut t = Table::new(
        &format!(
            "Record: {} inventory points ({} lenses), every main stream ({} kbit/s, {} fps, GOP {} frames) live to one \
             relay, without and with a `[[recording]]` rule recording all of them",
            r.points, r.lenses, p.main_kbps, p.fps, p.gop_frames
        ),
        &["", "live only", "live + recording", "difference"],
    );
    let (a, b) = (&r.without, &r.with);
    t.row(vec![
        "agent CPU, % of one core".into(),
        format!("{:.1}", a.agent.core_pct),
        format!("{:.1}", b.agent.core_pct),
        format!("{:+.1}", b.agent.core_pct - a.agent.core_pct),
    ]);
    t.row(vec![
        "relay CPU, % of one core".into(),
        format!("{:.1}", a.relay.core_pct),
        format!("{:.1}", b.relay.core_pct),
        format!("{:+.1}", b.relay.core_pct - a.relay.core_pct),
    ]);
    t.row(vec![
        "relay received Mbit/s".into(),
        format!("{:.1}", a.received_mbps),
        format!("{:.1}", b.received_mbps),
        "-".into(),
    ]);
    t.row(vec![
        "agent write_bytes MB/s (/proc/<pid>/io)".into(),
        format!("{:.2}", a.agent_write_bytes_per_sec / 1e6),
        format!("{:.2}", b.agent_write_bytes_per_sec / 1e6),
        format!("{:+.2}", (b.agent_write_bytes_per_sec - a.agent_write_bytes_per_sec) / 1e6),
    ]);
    t.row(vec![
        "window s".into(),
        format!("{:.1}", a.window_secs),
        format!("{:.1}", b.window_secs),
        "-".into(),
    ]);
    let s = &r.store;
    let mut d =
        Table::new(&format!("The store over the recording window ({:.1} s)", b.window_secs), &["", "value"]);
    d.row(vec![
        "cameras' main streams together, MB/s (nominal)".into(),
        format!("{:.2}", nominal_bytes / 1e6),
    ]);
    d.row(vec![
        "store growth, MB/s (of nominal)".into(),
        format!(
            "{:.2} ({:.1}%)",
            s.growth_bytes_per_sec / 1e6,
            100.0 * s.growth_bytes_per_sec / nominal_bytes.max(1.0)
        ),
    ]);
    d.row(vec![
        "agent write_bytes, MB/s (of nominal)".into(),
        format!(
            "{:.2} ({:.1}%)",
            b.agent_write_bytes_per_sec / 1e6,
            100.0 * b.agent_write_bytes_per_sec / nominal_bytes.max(1.0)
        ),
    ]);
    d.row(vec!["tracks recording".into(), s.tracks_recording.to_string()]);
    d.row(vec![
        "GOPs written in the window (cameras sent)".into(),
        format!("{} ({:.0})", s.gops_written, s.gops_sent),
    ]);
    d.row(vec!["GOPs lost in the window".into(), s.gops_lost.to_string()]);
    d.row(vec![
        "GOPs written / lost since the agent started".into(),
        format!("{} / {}", s.gops_written_total, s.gops_lost_total),
    ]);
    d.row(vec!["store on disk at the end, MB".into(), format!("{:.1}", s.bytes_on_disk as f64 / 1e6)]);
    let checks = vec![
        Check {
            what: "GOPs lost while recording the inventory".into(),
            target: "0".into(),
            measured: format!("{} of {} written", s.gops_lost, s.gops_written),
            met: s.gops_lost == 0 && s.gops_written > 0,
        },
        Check {
            what: "tracks recorded".into(),
            target: format!("every lens ({})", r.lenses),
            measured: s.tracks_recording.to_string(),
            met: s.tracks_recording as usize == r.lenses,
        },
    ];
    let notes = vec![
        format!(
            "Two clusters in one run, one after the other, the same {} replay cameras (pre-encoded frames: the \
             synthetic camera cannot encode {} lenses at {} kbit/s on this machine's cores, and the recorder writes \
             the bytes it receives whoever encoded them), one relay keeping every main stream on (`always_on`), \
             {} s to settle once the relay receives ≥ 90% of the nominal rate, then a {} s window. The second \
             cluster's agent has `[[recording]] cameras = [\"*\"], quality = \"main\"` into a fresh directory under \
             {} (`recordings.segment_secs` at its default); the settle lets every recorder reach its first \
             keyframe. CPU is /proc/<pid>/stat (utime + stime) over the window.",
            r.lenses,
            r.lenses,
            p.main_kbps,
            params.settle_secs,
            params.window_secs,
            std::path::Path::new(&s.dir).parent().map_or_else(String::new, |d| d.display().to_string())
        ),
        "*Store growth* is the sum of the store's file sizes at the end of the window minus at its start; \
         *write_bytes* is what the agent caused to be sent to the block layer (/proc/<pid>/io, counted when a page \
         is dirtied); both against the cameras' nominal bitrate (the replay pads each frame to it). GOPs come from \
         the agent's /status (`recordings[0].gops_written`, `gops_lost`); a recorder starts at a camera's next \
         keyframe and writes a GOP when the following one begins, so the window's count can differ from the GOPs \
         sent by one per camera."
            .into(),
    ];
    (vec![t, d], checks, notes)
}
