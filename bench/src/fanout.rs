//! fanout and latency: N replay tracks → real agent → real relay → M bench
//! subscribers, which the relay dials as cascade downstreams (each
//! subscribing to every track). Load is stepped by the number of tracks
//! subscribed; a step counts as carried when the subscribers received 95%
//! to 105% of what the relay received times M, the relay received at least
//! 90% of the tracks' nominal rate, and 99% of frames arrived within 200 ms
//! of capture. Windows are whole GOPs, so each holds the same frame mix.
//!
//! Latency is timed per hop on the same frames: a probe the agent feeds
//! directly receives the first tracks too, so for each frame the bench knows
//! its capture time (SEI), its arrival after one hop (agent → probe) and
//! after two (agent → relay → subscriber); the relay's hop is the difference.

use crate::cluster::{Cluster, ClusterSpec, RelaySpec, Replay};
use crate::machine::{CpuUse, CpuWindow};
use crate::report::{Check, Table};
use crate::stats::Dist;
use crate::subscriber::{subscription_id, Sample, Subscriber};
use crate::transport::TransportResult;
use anyhow::Result;
use ponte_proto::media::Quality;
use ponte_tests::DeviceKind;
use serde::Serialize;
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::Duration;

/// A step is carried when at least this share of the offered load arrived…
pub const CARRIED: f64 = 0.95;
/// …no more than this share (more is a backlog of an earlier step draining)…
const BACKLOG: f64 = 1.05;
/// …and 99% of frames arrived within this many ms of capture (live video:
/// a queue that grows is not carrying the load, whatever the byte count).
pub const LIVE_P99_MS: f64 = 200.0;
/// …and the relay received at least this share of the tracks' nominal rate.
const INGEST: f64 = 0.9;
/// Tracks the probe receives directly from the agent (relay-hop samples).
const PROBE_TRACKS: usize = 4;
/// How long an answer to a batch of subscriptions may take.
const ANSWER: Duration = Duration::from_secs(60);

/// Knobs of the fan-out and latency runs.
#[derive(Debug, Clone, Serialize)]
pub struct FanoutParams {
    /// Bench subscribers the relay feeds (M).
    pub subscribers: usize,
    /// How each track streams (its main quality is used).
    pub replay: Replay,
    /// Most tracks the agent is given (N).
    pub max_tracks: usize,
    /// Linear steps up to the planned ceiling.
    pub steps: usize,
    /// Bisection steps between the last carried and the first dropped load.
    pub refine: usize,
    /// Wait after changing the load before measuring.
    pub settle_secs: f64,
    /// Measured window per step.
    pub window_secs: f64,
}

impl FanoutParams {
    /// Relay egress one track adds, Gbit/s.
    pub fn per_track_gbps(&self) -> f64 {
        f64::from(self.replay.main_kbps) * 1e3 * self.subscribers as f64 / 1e9
    }
}

/// Camera id of track `i`.
fn camera(i: usize) -> String {
    format!("t-{i:04}")
}

/// One measured load step.
#[derive(Debug, Clone, Serialize)]
pub struct Step {
    /// Tracks subscribed by every subscriber.
    pub tracks: usize,
    /// Relay egress asked for, Gbit/s of payload.
    pub offered_gbps: f64,
    /// Relay egress that arrived at the subscribers.
    pub delivered_gbps: f64,
    /// What the relay received from the agent.
    pub relay_in_gbps: f64,
    /// delivered / (relay ingest × subscribers): the relay's share of the
    /// fan-out that arrived (the same frames counted at both ends, so the
    /// frame-size pattern of the GOP cancels out).
    pub delivery: f64,
    /// relay ingest / what the tracks stream nominally: the agent kept up.
    pub ingest: f64,
    /// Agent egress (what the relay and probe received).
    pub agent_out_gbps: f64,
    /// Agent CPU.
    pub agent_cpu: CpuUse,
    /// Relay CPU.
    pub relay_cpu: CpuUse,
    /// Bench CPU (subscribers' receive path).
    pub bench_cpu: CpuUse,
    /// Agent CPU seconds per Gbit it sent.
    pub agent_cpu_s_per_gbit: f64,
    /// Relay CPU seconds per Gbit it sent.
    pub relay_cpu_s_per_gbit: f64,
    /// Relay egress per core it kept busy (moq-relay's and Janus's unit).
    pub relay_gbps_per_core: f64,
    /// Frames the subscribers received.
    pub delivered_frames: u64,
    /// The relay's context switches (all threads) per frame delivered: one
    /// wake-up per frame per subscriber would be one or more.
    pub relay_switches_per_frame: f64,
    /// Instructions the relay executed per byte delivered, counted by
    /// callgrind (`PONTE_BENCH_CALLGRIND`), else `None`.
    pub relay_instructions_per_byte: Option<f64>,
    /// Capture → subscriber, every frame of every subscriber.
    pub end_to_end: Dist,
    /// Capture → probe (the agent's hop), probe tracks only.
    pub agent_hop: Dist,
    /// Probe arrival → subscriber arrival of the same frame (the relay's hop).
    pub relay_hop: Dist,
}

impl Step {
    fn carried(&self) -> bool {
        (CARRIED..=BACKLOG).contains(&self.delivery)
            && self.ingest >= INGEST
            && self.end_to_end.p99_ms <= LIVE_P99_MS
    }
}

/// A running fan-out cluster at some load.
pub struct Fanout {
    cluster: Cluster,
    params: FanoutParams,
    tracks: usize,
}

impl Fanout {
    /// Starts agent, relay and subscribers with `tracks` replay tracks.
    pub async fn start(params: &FanoutParams, tracks: usize) -> Result<Self> {
        let devices =
            (0..tracks).map(|i| params.replay.device(&camera(i), DeviceKind::Fixed, 1, &[])).collect();
        let relays = vec![RelaySpec {
            site: "relay".into(),
            downstreams: (1..=params.subscribers).map(|k| format!("sub-{k}")).collect(),
        }];
        let cluster = Cluster::start(ClusterSpec {
            devices,
            cameras: tracks,
            relays,
            probe: true,
            sites: None,
            whep: None,
            recording: None,
        })
        .await?;
        Ok(Self { cluster, params: params.clone(), tracks: 0 })
    }

    fn subs(&mut self) -> &mut [Subscriber] {
        &mut self.cluster.relays[0].downstreams
    }

    /// Makes every subscriber hold exactly tracks `0..k`.
    pub async fn set_tracks(&mut self, k: usize) -> Result<()> {
        let now = self.tracks;
        for sub in self.subs() {
            if k > now {
                let wanted: Vec<_> = (now..k).map(|i| (i as u32, camera(i), Quality::Main)).collect();
                sub.subscribe_many(&wanted, ANSWER).await?;
            } else {
                sub.unsubscribe((k..now).map(|i| subscription_id(i as u32, Quality::Main))).await?;
            }
        }
        self.tracks = k;
        Ok(())
    }

    /// Has the probe receive tracks `0..n` straight from the agent.
    pub async fn probe_tracks(&mut self, n: usize) -> Result<()> {
        if let Some(p) = &mut self.cluster.probe {
            let wanted: Vec<_> = (0..n).map(|i| (i as u32, camera(i), Quality::Main)).collect();
            p.subscribe_many(&wanted, ANSWER).await?;
        }
        Ok(())
    }

    /// Measures the current load over the window.
    pub async fn measure(&mut self) -> Result<Step> {
        let gop = f64::from(self.params.replay.gop_frames) / f64::from(self.params.replay.fps);
        let window = Duration::from_secs_f64((self.params.window_secs / gop).ceil().max(1.0) * gop);
        let pids = self.cluster.pids();
        let subs = &self.cluster.relays[0].downstreams;
        let probe = self.cluster.probe.as_ref();
        for m in subs.iter().map(|s| &s.meter).chain(probe.map(|p| &p.meter)) {
            m.sample(true);
            m.take_samples();
        }
        let delivered0: u64 = subs.iter().map(|s| s.meter.bytes.load(Ordering::Relaxed)).sum();
        let frames0: u64 = subs.iter().map(|s| s.meter.frames.load(Ordering::Relaxed)).sum();
        let probe0 = probe.map_or(0, |p| p.meter.bytes.load(Ordering::Relaxed));
        let relay0 = self.cluster.relay_bytes_received().await?[0];
        let relay_pid = pids.get(1).copied().unwrap_or_default();
        let counting = crate::callgrind::dir().is_some();
        if counting {
            crate::callgrind::start(relay_pid).await?;
        }
        let cpu = CpuWindow::start(&pids)?;
        tokio::time::sleep(window).await;
        let instructions = if counting { Some(crate::callgrind::finish(relay_pid).await?) } else { None };
        let delivered1: u64 = subs.iter().map(|s| s.meter.bytes.load(Ordering::Relaxed)).sum();
        let frames1: u64 = subs.iter().map(|s| s.meter.frames.load(Ordering::Relaxed)).sum();
        let probe1 = probe.map_or(0, |p| p.meter.bytes.load(Ordering::Relaxed));
        let relay1 = self.cluster.relay_bytes_received().await?[0];
        let (wall, bench_cpu, procs) = cpu.finish()?;
        let sub_samples: Vec<Sample> = subs.iter().flat_map(|s| s.meter.take_samples()).collect();
        let probe_samples: Vec<Sample> = probe.map(|p| p.meter.take_samples()).unwrap_or_default();
        for m in subs.iter().map(|s| &s.meter).chain(probe.map(|p| &p.meter)) {
            m.sample(false);
        }

        let gbps = |bytes: u64| bytes as f64 * 8.0 / 1e9 / wall;
        let delivered_gbps = gbps(delivered1 - delivered0);
        let agent_out_gbps = gbps((relay1 - relay0) + (probe1 - probe0));
        let relay_in_gbps = gbps(relay1 - relay0);
        let offered_gbps = self.tracks as f64 * self.params.per_track_gbps();
        let fanned = relay_in_gbps * self.params.subscribers as f64;
        let per_gbit = |cpu: &CpuUse, gbps: f64| if gbps > 0.0 { cpu.cpu_secs / (gbps * wall) } else { 0.0 };
        let (agent_cpu, relay_cpu) = (procs[0], procs[1]);
        let (end_to_end, agent_hop, relay_hop) = hops(&sub_samples, &probe_samples);
        dump_samples(self.tracks, &sub_samples, &probe_samples);
        Ok(Step {
            tracks: self.tracks,
            offered_gbps,
            delivered_gbps,
            relay_in_gbps,
            delivery: if fanned > 0.0 { delivered_gbps / fanned } else { 0.0 },
            ingest: if offered_gbps > 0.0 {
                relay_in_gbps * self.params.subscribers as f64 / offered_gbps
            } else {
                0.0
            },
            agent_out_gbps,
            agent_cpu,
            relay_cpu,
            bench_cpu,
            agent_cpu_s_per_gbit: per_gbit(&agent_cpu, agent_out_gbps),
            relay_cpu_s_per_gbit: per_gbit(&relay_cpu, delivered_gbps),
            relay_gbps_per_core: if relay_cpu.core_pct > 0.0 {
                delivered_gbps / (relay_cpu.core_pct / 100.0)
            } else {
                0.0
            },
            delivered_frames: frames1 - frames0,
            relay_instructions_per_byte: instructions
                .filter(|_| delivered1 > delivered0)
                .map(|i| i as f64 / (delivered1 - delivered0) as f64),
            relay_switches_per_frame: if frames1 > frames0 {
                relay_cpu.context_switches as f64 / (frames1 - frames0) as f64
            } else {
                0.0
            },
            end_to_end,
            agent_hop,
            relay_hop,
        })
    }

    /// Sets the load, lets it settle and measures it.
    pub async fn step(&mut self, k: usize) -> Result<Step> {
        self.set_tracks(k).await?;
        tokio::time::sleep(Duration::from_secs_f64(self.params.settle_secs)).await;
        self.measure().await
    }
}

/// With `PONTE_BENCH_SAMPLES=<dir>`, writes each step's raw samples to
/// `<dir>/samples-<tracks>.csv` (`who,track,capture_us,recv_us`; who is
/// `probe` or `sub`) for a closer look at a latency distribution.
fn dump_samples(tracks: usize, subs: &[Sample], probe: &[Sample]) {
    let Some(dir) = std::env::var_os("PONTE_BENCH_SAMPLES") else { return };
    let mut out = String::from("who,track,capture_us,recv_us\n");
    for (who, samples) in [("probe", probe), ("sub", subs)] {
        for s in samples {
            out.push_str(&format!("{who},{},{},{}\n", s.track, s.capture, s.recv));
        }
    }
    let path = std::path::Path::new(&dir).join(format!("samples-{tracks}.csv"));
    if let Err(e) = std::fs::write(&path, out) {
        eprintln!("ponte-bench: cannot write {}: {e}", path.display());
    }
}

/// End-to-end, agent-hop and relay-hop distributions from the samples.
fn hops(subs: &[Sample], probe: &[Sample]) -> (Dist, Dist, Dist) {
    let mut e2e: Vec<i64> = subs.iter().map(|s| s.recv as i64 - s.capture as i64).collect();
    let mut agent: Vec<i64> = probe.iter().map(|s| s.recv as i64 - s.capture as i64).collect();
    let at_probe: HashMap<(u32, u64), u64> = probe.iter().map(|s| ((s.track, s.capture), s.recv)).collect();
    let mut relay: Vec<i64> = subs
        .iter()
        .filter_map(|s| at_probe.get(&(s.track, s.capture)).map(|p| s.recv as i64 - *p as i64))
        .collect();
    (Dist::of_micros(&mut e2e), Dist::of_micros(&mut agent), Dist::of_micros(&mut relay))
}

/// The fan-out ramp's outcome.
#[derive(Debug, Clone, Serialize)]
pub struct FanoutResult {
    /// Parameters.
    pub params: FanoutParams,
    /// Every step, in the order run.
    pub steps: Vec<Step>,
    /// Highest egress carried (see [`Step::carried`]), Gbit/s.
    pub max_gbps: f64,
    /// Highest egress delivered in any step, carried or not.
    pub peak_gbps: f64,
    /// Whether a step dropped load (otherwise the maximum is a lower bound).
    pub saturated: bool,
    /// Index in `steps` of the step with `max_gbps`.
    pub best: Option<usize>,
}

/// Runs the ramp; `transport_gbps` (measured in the same run) plans it.
pub async fn ramp(params: &FanoutParams, transport_gbps: f64) -> Result<FanoutResult> {
    let ceiling =
        ((1.25 * transport_gbps / params.per_track_gbps()).ceil() as usize).clamp(1, params.max_tracks);
    let mut f = Fanout::start(params, ceiling).await?;
    let mut steps: Vec<Step> = Vec::new();
    let mut good = 0usize;
    let mut bad = None;
    let plan: Vec<usize> = {
        let mut v: Vec<usize> =
            (1..=params.steps).map(|i| (ceiling * i).div_ceil(params.steps.max(1)).max(1)).collect();
        v.dedup();
        v
    };
    for k in plan {
        let s = f.step(k).await?;
        print_step(&s);
        let carried = s.carried();
        steps.push(s);
        if carried {
            good = k;
        } else {
            bad = Some(k);
            break;
        }
    }
    if let Some(mut hi) = bad {
        let mut lo = good;
        for _ in 0..params.refine {
            let mid = (lo + hi) / 2;
            if mid <= lo {
                break;
            }
            if !steps.last().is_some_and(Step::carried) {
                // An overloaded step leaves queues behind, and the agent's
                // shaping, having seen the path congested, holds its rate
                // down for a while: the next step starts on a fresh system.
                f.cluster.shutdown().await?;
                f = Fanout::start(params, ceiling).await?;
            }
            let s = f.step(mid).await?;
            print_step(&s);
            if s.carried() {
                lo = mid;
            } else {
                hi = mid;
            }
            steps.push(s);
        }
    }
    let best = steps
        .iter()
        .enumerate()
        .filter(|(_, s)| s.carried())
        .max_by(|a, b| a.1.delivered_gbps.total_cmp(&b.1.delivered_gbps))
        .map(|(i, _)| i);
    let max_gbps = best.map_or(0.0, |i| steps[i].delivered_gbps);
    let peak_gbps = steps.iter().map(|s| s.delivered_gbps).fold(0.0, f64::max);
    f.cluster.shutdown().await?;
    Ok(FanoutResult { params: params.clone(), steps, max_gbps, peak_gbps, saturated: bad.is_some(), best })
}

fn print_step(s: &Step) {
    eprintln!(
        "ponte-bench: {} tracks: offered {:.3} Gbit/s, delivered {:.3} (relay in {:.1}%, fanned out {:.1}%, p99 {:.1} ms), \
         CPU agent {:.0}% relay {:.0}% bench {:.0}%",
        s.tracks,
        s.offered_gbps,
        s.delivered_gbps,
        100.0 * s.ingest,
        100.0 * s.delivery,
        s.end_to_end.p99_ms,
        s.agent_cpu.core_pct,
        s.relay_cpu.core_pct,
        s.bench_cpu.core_pct
    );
}

/// Tables and checks of the fan-out ramp.
pub fn fanout_tables(
    r: &FanoutResult,
    transports: &[TransportResult],
) -> (Vec<Table>, Vec<Check>, Vec<String>) {
    let bulk = transports
        .iter()
        .filter(|t| t.spec.shape == "bulk")
        .max_by(|a, b| a.gbps.total_cmp(&b.gbps))
        .cloned()
        .unwrap_or_else(|| transports[0].clone());
    let transport = &bulk;
    let media = transports.iter().find(|t| t.spec.shape == "media-shaped");
    let p = &r.params;
    let mut t = Table::new(
        &format!(
            "Fan-out steps: tracks of {} kbit/s at {} fps, GOP {} frames, each to {} subscribers",
            p.replay.main_kbps, p.replay.fps, p.replay.gop_frames, p.subscribers
        ),
        &[
            "tracks",
            "offered Gbit/s",
            "egress Gbit/s",
            "relay in",
            "fanned out",
            "carried",
            "agent CPU %",
            "relay CPU %",
            "bench CPU %",
            "agent CPU s/Gbit",
            "relay CPU s/Gbit",
            "relay Gbit/s per core",
            "relay switches per frame",
            "capture→subscriber ms p50/p99/max",
        ],
    );
    for s in &r.steps {
        t.row(vec![
            s.tracks.to_string(),
            format!("{:.3}", s.offered_gbps),
            format!("{:.3}", s.delivered_gbps),
            format!("{:.1}%", 100.0 * s.ingest),
            format!("{:.1}%", 100.0 * s.delivery),
            if s.carried() { "yes" } else { "no" }.into(),
            format!("{:.0}", s.agent_cpu.core_pct),
            format!("{:.0}", s.relay_cpu.core_pct),
            format!("{:.0}", s.bench_cpu.core_pct),
            format!("{:.2}", s.agent_cpu_s_per_gbit),
            format!("{:.2}", s.relay_cpu_s_per_gbit),
            format!("{:.2}", s.relay_gbps_per_core),
            format!("{:.2}", s.relay_switches_per_frame),
            s.end_to_end.cell(),
        ]);
    }
    let ratio = if transport.gbps > 0.0 { r.max_gbps / transport.gbps } else { 0.0 };
    let mut summary = Table::new("Fan-out maximum against the transport limit (same run)", &["", "value"]);
    summary.row(vec!["transport-limit Gbit/s".into(), format!("{:.3}", transport.gbps)]);
    summary.row(vec![
        format!(
            "fan-out egress carried ({:.0}–{:.0}% fanned out, relay in ≥ {:.0}%, p99 ≤ {LIVE_P99_MS:.0} ms) Gbit/s",
            CARRIED * 100.0,
            BACKLOG * 100.0,
            INGEST * 100.0
        ),
        format!("{:.3}{}", r.max_gbps, if r.saturated { "" } else { " (not saturated: a lower bound)" }),
    ]);
    summary.row(vec!["ratio".into(), format!("{:.0}%", 100.0 * ratio)]);
    let mut tables = vec![t, summary];
    if let Some(b) = r.best.map(|i| &r.steps[i]) {
        // Where a Gbit of egress costs CPU, beside raw quinn moving a Gbit.
        let per = |cpu: &CpuUse| cpu.core_pct / 100.0 / b.delivered_gbps.max(1e-9);
        let (relay, bench, agent) = (per(&b.relay_cpu), per(&b.bench_cpu), per(&b.agent_cpu));
        let mut headers = vec!["CPU seconds per Gbit delivered", "fan-out at its maximum"];
        if media.is_some() {
            headers.push("raw quinn, media-shaped");
        }
        headers.push("raw quinn, bulk (the limit)");
        let mut cost = Table::new("Where the CPU goes", &headers);
        let raw = |f: &dyn Fn(&TransportResult) -> f64| {
            media
                .iter()
                .map(|m| format!("{:.3}", f(m)))
                .chain([format!("{:.3}", f(transport))])
                .collect::<Vec<_>>()
        };
        let row = |name: &str, ours: String, theirs: Vec<String>| {
            let mut v = vec![name.to_owned(), ours];
            v.extend(theirs);
            v
        };
        cost.row(row(
            "sending side (relay / raw sender)",
            format!("{relay:.3}"),
            raw(&|t| t.sender_cpu_s_per_gbit),
        ));
        cost.row(row(
            "receiving side (bench subscribers / raw receiver)",
            format!("{bench:.3}"),
            raw(&|t| t.receiver_cpu_s_per_gbit),
        ));
        cost.row(row("agent, per Gbit of relay egress", format!("{agent:.3}"), raw(&|_| 0.0)));
        cost.row(row("total", format!("{:.3}", relay + bench + agent), raw(&|t| t.cpu_secs_per_gbit)));
        let per_core = |s: f64| if s > 0.0 { format!("{:.2}", 1.0 / s) } else { "-".into() };
        cost.row(row(
            "Gbit/s per core, sending side (1 / the first row)",
            per_core(relay),
            media
                .iter()
                .map(|m| per_core(m.sender_cpu_s_per_gbit))
                .chain([per_core(transport.sender_cpu_s_per_gbit)])
                .collect(),
        ));
        tables.push(cost);
    }
    let checks = vec![Check {
        what: "fan-out egress / transport-limit".into(),
        target: "≥ 80%".into(),
        measured: format!("{:.0}% ({:.3} / {:.3} Gbit/s)", 100.0 * ratio, r.max_gbps, transport.gbps),
        met: ratio >= 0.8,
    }];
    let notes = vec![
        format!(
            "Subscribers are cascade downstreams: the relay dials {} bench endpoints (`[[downstream]]`), each subscribing to every track; \
             the agent sends each track once to the relay. Egress is media payload (frame bytes) arriving at the subscribers.",
            p.subscribers
        ),
        "Everything shares the machine's cores: agent, relay and the bench's own receivers (bench CPU %). Once the cores \
         are full, the egress is what they can carry at the cost per Gbit in \"Where the CPU goes\"."
            .into(),
    ];
    (tables, checks, notes)
}

/// One latency level's outcome.
#[derive(Debug, Clone, Serialize)]
pub struct Level {
    /// Share of the fan-out maximum asked for.
    pub load_pct: u32,
    /// The measured step.
    pub step: Step,
}

/// Measures per-hop latency at `fractions` of `max_gbps`.
pub async fn latency(params: &FanoutParams, max_gbps: f64, fractions: &[u32]) -> Result<Vec<Level>> {
    let tracks_for =
        |pct: u32| ((f64::from(pct) / 100.0 * max_gbps / params.per_track_gbps()).round() as usize).max(1);
    let most = fractions.iter().map(|&p| tracks_for(p)).max().unwrap_or(1);
    let least = fractions.iter().map(|&p| tracks_for(p)).min().unwrap_or(1);
    let mut f = Fanout::start(params, most).await?;
    f.probe_tracks(PROBE_TRACKS.min(least)).await?;
    let mut levels = Vec::new();
    for &pct in fractions {
        let s = f.step(tracks_for(pct)).await?;
        print_step(&s);
        levels.push(Level { load_pct: pct, step: s });
    }
    f.cluster.shutdown().await?;
    Ok(levels)
}

/// Tables and checks of the latency levels.
pub fn latency_tables(levels: &[Level], max_gbps: f64) -> (Vec<Table>, Vec<Check>) {
    let mut t = Table::new(
        &format!(
            "Per-hop latency (ms, p50 / p99 / max) at shares of the fan-out maximum ({max_gbps:.3} Gbit/s)"
        ),
        &[
            "load",
            "tracks",
            "egress Gbit/s",
            "fanned out",
            "agent hop",
            "relay hop",
            "capture→subscriber",
            "samples (relay hop)",
            "relay CPU %",
            "relay Gbit/s per core",
            "relay switches per frame",
            "relay instructions per byte",
        ],
    );
    let mut checks = Vec::new();
    for l in levels {
        let s = &l.step;
        t.row(vec![
            format!("{}%", l.load_pct),
            s.tracks.to_string(),
            format!("{:.3}", s.delivered_gbps),
            format!("{:.1}%", 100.0 * s.delivery),
            s.agent_hop.cell(),
            s.relay_hop.cell(),
            s.end_to_end.cell(),
            s.relay_hop.n.to_string(),
            format!("{:.0}", s.relay_cpu.core_pct),
            format!("{:.2}", s.relay_gbps_per_core),
            format!("{:.2}", s.relay_switches_per_frame),
            s.relay_instructions_per_byte.map_or("-".into(), |i| format!("{i:.1}")),
        ]);
        if l.load_pct == 50 {
            for (hop, d) in [("agent", &s.agent_hop), ("relay", &s.relay_hop)] {
                checks.push(Check {
                    what: format!("{hop} hop p99 at 50% load"),
                    target: "≤ 5 ms".into(),
                    measured: format!("{:.2} ms ({} samples)", d.p99_ms, d.n),
                    met: d.n > 0 && d.p99_ms <= 5.0,
                });
            }
        }
    }
    (vec![t], checks)
}
