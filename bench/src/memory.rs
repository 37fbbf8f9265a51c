//! memory: resident memory of agent and relay carrying 0, then 50, then 200
//! streams. Streams are started the way a site does it without viewers:
//! the agent's policy marks them always-on (`[[site]] always_on`, applied
//! with SIGHUP), and the relay keeps them subscribed.

use crate::cluster::{Cluster, ClusterSpec, RelaySpec, Replay};
use crate::machine::process_rss;
use crate::report::{Check, Table};
use anyhow::{Context, Result};
use ponte_proto::policy::SitePolicyConfig;
use ponte_tests::DeviceKind;
use serde::Serialize;
use std::time::{Duration, Instant};

/// Knobs of the memory run.
#[derive(Debug, Clone, Serialize)]
pub struct MemoryParams {
    /// Stream counts, ascending, starting at 0.
    pub levels: Vec<usize>,
    /// How each stream looks (main quality is used).
    pub replay: Replay,
    /// Wait at each level once the streams flow, before sampling.
    pub settle_secs: f64,
    /// RSS samples per level (the largest is kept), one every `sample_secs`.
    pub samples: usize,
    /// Interval of the RSS samples, and the window of the ingest rate checks.
    pub sample_secs: f64,
}

/// One level's figures.
#[derive(Debug, Clone, Serialize)]
pub struct MemLevel {
    /// Streams carried.
    pub streams: usize,
    /// Agent VmRSS, bytes (largest of the samples).
    pub agent_rss: u64,
    /// Relay VmRSS, bytes.
    pub relay_rss: u64,
    /// What the relay received, Mbit/s, over the sampling period.
    pub ingest_mbps: f64,
}

fn tag(levels: &[usize], i: usize) -> String {
    let upto = levels.iter().find(|&&l| i < l).copied().unwrap_or(0);
    format!("upto-{upto}")
}

fn policy(levels: &[usize], streams: usize) -> Vec<SitePolicyConfig> {
    let mut site = ponte_tests::site_policy("relay", &["*"]);
    site.always_on =
        levels.iter().filter(|&&l| l > 0 && l <= streams).map(|l| format!("tag:upto-{l}")).collect();
    vec![site]
}

async fn ingest_mbps(cluster: &Cluster, over: Duration) -> Result<f64> {
    let a = cluster.relay_bytes_received().await?[0];
    let t = Instant::now();
    tokio::time::sleep(over).await;
    let b = cluster.relay_bytes_received().await?[0];
    Ok((b - a) as f64 * 8.0 / 1e6 / t.elapsed().as_secs_f64())
}

/// Runs the levels.
pub async fn run(params: &MemoryParams) -> Result<Vec<MemLevel>> {
    let levels = &params.levels;
    let most = levels.iter().copied().max().unwrap_or(0).max(1);
    let devices = (0..most)
        .map(|i| params.replay.device(&format!("m-{i:04}"), DeviceKind::Fixed, 1, &[tag(levels, i).as_str()]))
        .collect();
    let mut cluster = Cluster::start(ClusterSpec {
        devices,
        cameras: most,
        relays: vec![RelaySpec { site: "relay".into(), downstreams: vec![] }],
        probe: false,
        sites: Some(policy(levels, 0)),
        whep: None,
        recording: None,
    })
    .await?;
    let per_stream_mbps = f64::from(params.replay.main_kbps) / 1e3;
    let mut out = Vec::new();
    for &streams in levels {
        if streams > 0 {
            let mut cfg = cluster.agent_config.clone();
            cfg.sites = policy(levels, streams);
            cfg.write(&cluster.agent_toml)?;
            cluster.agent.signal(libc::SIGHUP)?;
            let want = 0.9 * per_stream_mbps * streams as f64;
            let since = Instant::now();
            loop {
                let got = ingest_mbps(&cluster, Duration::from_secs_f64(params.sample_secs * 2.0)).await?;
                if got >= want {
                    break;
                }
                anyhow::ensure!(
                    since.elapsed() < Duration::from_secs(60),
                    "{streams} always-on streams: the relay receives {got:.1} Mbit/s after 60 s, expected {want:.1}"
                );
            }
        }
        tokio::time::sleep(Duration::from_secs_f64(params.settle_secs)).await;
        let (mut agent_rss, mut relay_rss) = (0, 0);
        let a = cluster.relay_bytes_received().await?[0];
        let t = Instant::now();
        for _ in 0..params.samples.max(1) {
            agent_rss = agent_rss.max(process_rss(cluster.agent.pid()).context("agent RSS")?);
            relay_rss = relay_rss.max(process_rss(cluster.relays[0].proc.pid()).context("relay RSS")?);
            tokio::time::sleep(Duration::from_secs_f64(params.sample_secs)).await;
        }
        let b = cluster.relay_bytes_received().await?[0];
        let ingest = (b - a) as f64 * 8.0 / 1e6 / t.elapsed().as_secs_f64();
        eprintln!(
            "ponte-bench: {streams} streams: agent {:.1} MB, relay {:.1} MB, relay ingest {ingest:.1} Mbit/s",
            agent_rss as f64 / 1e6,
            relay_rss as f64 / 1e6
        );
        out.push(MemLevel { streams, agent_rss, relay_rss, ingest_mbps: ingest });
    }
    cluster.shutdown().await?;
    Ok(out)
}

/// Tables and checks.
pub fn tables(levels: &[MemLevel], params: &MemoryParams) -> (Vec<Table>, Vec<Check>) {
    let r = &params.replay;
    let mut t = Table::new(
        &format!(
            "Resident memory (VmRSS) with always-on streams of {} kbit/s, {} fps, GOP {} frames ({:.1} s)",
            r.main_kbps,
            r.fps,
            r.gop_frames,
            f64::from(r.gop_frames) / f64::from(r.fps)
        ),
        &["streams", "relay ingest Mbit/s", "agent MB", "relay MB", "agent MB/stream", "relay MB/stream"],
    );
    let base = levels.first();
    let per = |rss: u64, base_rss: u64, n: usize| {
        if n == 0 {
            None
        } else {
            Some((rss as f64 - base_rss as f64) / n as f64 / 1e6)
        }
    };
    let mut checks = Vec::new();
    for (i, l) in levels.iter().enumerate() {
        let (a, rl) = match base {
            Some(b) => (per(l.agent_rss, b.agent_rss, l.streams), per(l.relay_rss, b.relay_rss, l.streams)),
            None => (None, None),
        };
        let cell = |v: Option<f64>| v.map_or("-".into(), |v| format!("{v:.2}"));
        t.row(vec![
            l.streams.to_string(),
            format!("{:.1}", l.ingest_mbps),
            format!("{:.1}", l.agent_rss as f64 / 1e6),
            format!("{:.1}", l.relay_rss as f64 / 1e6),
            cell(a),
            cell(rl),
        ]);
        if i + 1 == levels.len() && l.streams > 0 {
            for (node, v) in [("agent", a), ("relay", rl)] {
                let v = v.unwrap_or(f64::INFINITY);
                checks.push(Check {
                    what: format!("{node} RSS per {} kbit/s stream at {} streams", r.main_kbps, l.streams),
                    target: "≤ 1.5 MB".into(),
                    measured: format!("{v:.2} MB"),
                    met: v <= 1.5,
                });
            }
        }
    }
    (vec![t], checks)
}
