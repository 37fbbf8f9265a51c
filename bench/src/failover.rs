//! failover: what a viewer sees when one of two agents dies (issue 22, no
//! single point of failure). Two agents, `master-a` and `master-b`, each
//! with its own certificate and `[redundancy]` pointing at the other, carry
//! the same replay cameras to one relay (`upstreams = ["master-a",
//! "master-b"]`), which takes each camera from one of them by rendezvous
//! hashing (`ponte_proto::redundancy::primary`); the cameras are chosen so
//! that half live on each. A bench subscriber below the relay (a cascade
//! downstream) watches every camera and timestamps every frame.
//!
//! Each run `kill -9`s one agent (a, then b, …), waits, and starts it again
//! with the same config. Per camera that lived on it: *kill → first frame*
//! is the arrival of its first frame captured after the kill (only the
//! other agent can have captured it); *move back* is the arrival of its
//! first frame from the restarted process, told apart by the agent's clock:
//! an agent stamps pts from a process-wide epoch (its first replay start),
//! so capture time − pts is that epoch, and a frame whose epoch is after
//! the restart came from the new process. The gap a viewer sees at the
//! move back is that frame's arrival minus the frame before it. Cameras on
//! the surviving agent should see no gap above two frame intervals.
//!
//! Bounds: the relay notices a dead agent by the QUIC idle timeout (1 s
//! where `upstreams` lists two agents, `transport.idle_timeout_ms`), then
//! subscribes on the other agent (one round trip), whose replay camera
//! sends its IDR at once (a real camera's agent answers from its GOP cache).

use crate::cluster::{self, Replay, READY};
use crate::report::{Check, Table};
use crate::stats::Dist;
use crate::subscriber::{Listener, Sample, Subscriber};
use anyhow::{Context, Result};
use ponte_agent::config::{PeerAgent, RedundancySection};
use ponte_proto::media::Quality;
use ponte_proto::redundancy::primary;
use ponte_tests::RelayTarget;
use ponte_tests::{free_tcp_port, free_udp_port, http_get, AgentConfig, DeviceKind, Pki, Proc, RelayConfig};
use serde::Serialize;
use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The two agents of the master room.
pub const AGENTS: [&str; 2] = ["master-a", "master-b"];
/// The relay.
const SITE: &str = "carabinieri";
/// The bench subscriber below the relay.
const VIEWER: &str = "viewer";
/// A frame whose agent epoch is this close before the restart is still the
/// old process's (an epoch is read before the restart can be).
const EPOCH_SLACK_US: i64 = 100_000;

/// Knobs of the failover run.
#[derive(Debug, Clone, Serialize)]
pub struct FailoverParams {
    /// Cameras, half on each agent.
    pub cameras: usize,
    /// Kills (alternating a, b).
    pub runs: usize,
    /// How the cameras stream.
    pub replay: Replay,
    /// Steady playing before each kill, seconds.
    pub settle_secs: f64,
    /// From the kill to the restart, seconds.
    pub down_secs: f64,
    /// After every camera is back on the restarted agent, seconds watched.
    pub after_back_secs: f64,
    /// Most seconds a restarted agent may take to get its cameras back.
    pub back_timeout_secs: f64,
}

/// One camera that lived on the killed agent, in one run.
#[derive(Debug, Clone, Serialize)]
pub struct MovedCamera {
    /// Camera id.
    pub camera: String,
    /// Kill → arrival of its first frame captured after the kill, ms.
    pub kill_to_first_ms: Option<f64>,
    /// Of which that frame's capture → arrival (the rest is the other
    /// agent being asked and starting the camera), ms.
    pub first_transit_ms: Option<f64>,
    /// Longest gap between frames from a second before the kill to the restart, ms.
    pub longest_gap_ms: f64,
    /// Restart → arrival of its first frame from the restarted agent, ms.
    pub restart_to_back_ms: Option<f64>,
    /// That frame's arrival minus the arrival of the frame before it, ms.
    pub move_back_gap_ms: Option<f64>,
    /// That frame's capture → arrival, ms.
    pub back_transit_ms: Option<f64>,
    /// Frames from another agent that arrived after it (should be 0).
    pub stale_after_back: usize,
    /// Whether the first frame after the kill, and the first from the
    /// restarted agent, were keyframes (a viewer decodes from there).
    pub keyframes: (bool, bool),
}

/// Per-agent figures of the relay's `/status` links.
#[derive(Debug, Clone, Serialize, Default)]
pub struct Links {
    /// `up` / `down` / absent, by agent.
    pub state: BTreeMap<String, String>,
    /// Subscriptions the relay has on each agent's link.
    pub subscriptions: BTreeMap<String, u64>,
}

/// One kill and restart.
#[derive(Debug, Clone, Serialize)]
pub struct Run {
    /// 1-based.
    pub index: usize,
    /// The agent killed.
    pub killed: String,
    /// Its cameras.
    pub moved: Vec<MovedCamera>,
    /// Cameras on the surviving agent.
    pub survivors: usize,
    /// Longest gap any of them saw, from a second before the kill to the end of the run, ms.
    pub survivors_longest_gap_ms: f64,
    /// Gaps above two frame intervals among them.
    pub survivors_gaps_over: usize,
    /// Frames the survivors received in that window (all cameras).
    pub survivors_frames: usize,
    /// The relay's links a moment before the restart.
    pub links_down: Links,
    /// The relay's links at the end of the run.
    pub links_back: Links,
}

/// What the scenario measured.
#[derive(Debug, Clone, Serialize)]
pub struct FailoverResult {
    /// Cameras by the agent that carries them by the spread.
    pub spread: BTreeMap<String, Vec<String>>,
    /// The runs.
    pub runs: Vec<Run>,
    /// Kill → first frame over every moved camera of every run.
    pub kill_to_first: Dist,
    /// Longest gap around the kill, same cameras.
    pub failover_gap: Dist,
    /// Restart → first frame from the restarted agent.
    pub restart_to_back: Dist,
    /// The gap a viewer sees as its camera moves back.
    pub move_back_gap: Dist,
    /// Capture → arrival of the first frame after the kill.
    pub first_transit: Dist,
    /// Capture → arrival of the first frame from the restarted agent.
    pub back_transit: Dist,
    /// The relay's QUIC idle timeout with two agents, ms.
    pub idle_timeout_ms: u64,
}

/// The relay's `/status` links of the two agents.
async fn links(mgmt: &str) -> Result<Links> {
    let doc = http_get(&format!("{mgmt}/status")).await?.ensure_success()?.json()?;
    let mut out = Links::default();
    for l in doc["links"].as_array().into_iter().flatten() {
        let peer = l["peer"].as_str().unwrap_or_default();
        if AGENTS.contains(&peer) {
            out.state.insert(peer.into(), l["state"].as_str().unwrap_or_default().into());
            out.subscriptions.insert(peer.into(), l["subscriptions"].as_u64().unwrap_or(0));
        }
    }
    Ok(out)
}

/// Waits until the relay's links carry `want` subscriptions per agent.
async fn wait_links(mgmt: &str, want: &BTreeMap<String, u64>, timeout: Duration) -> Result<Links> {
    let since = std::time::Instant::now();
    loop {
        let l = links(mgmt).await?;
        if AGENTS
            .iter()
            .all(|a| l.subscriptions.get(*a).copied().unwrap_or(0) == want.get(*a).copied().unwrap_or(0))
        {
            return Ok(l);
        }
        if since.elapsed() > timeout {
            return Ok(l);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// `n` camera ids of replay devices, half carried by each agent.
fn spread(replay: &Replay, n: usize) -> (Vec<ponte_tests::Device>, BTreeMap<String, Vec<String>>) {
    let mut devices = Vec::new();
    let mut by_agent: BTreeMap<String, Vec<String>> =
        AGENTS.iter().map(|a| ((*a).to_owned(), Vec::new())).collect();
    let quota = |i: usize| if i == 0 { n.div_ceil(2) } else { n / 2 };
    for i in 0.. {
        if devices.len() >= n {
            break;
        }
        let d = replay.device(&format!("cam-{i}"), DeviceKind::Fixed, 1, &[]);
        let camera = d.camera_id(1);
        let Some(agent) = primary(&camera, AGENTS) else { continue };
        let slot = AGENTS.iter().position(|a| *a == agent).unwrap_or(0);
        let list = by_agent.entry(agent.into()).or_default();
        if list.len() < quota(slot) {
            list.push(camera);
            devices.push(d);
        }
    }
    (devices, by_agent)
}

/// The two agents' configs: the same devices and policy, each its own
/// certificate, audit log and `[redundancy]` pointing at the other.
fn two_agents(
    pki: &Pki,
    dir: &Path,
    relay: RelayTarget,
    devices: &[ponte_tests::Device],
) -> [AgentConfig; 2] {
    let ports = [free_udp_port(), free_udp_port()];
    let at = |port| SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    [0, 1].map(|i| {
        let (me, other) = (AGENTS[i], AGENTS[1 - i]);
        let mut cfg = AgentConfig::new(me, pki.tls(me), vec![relay.clone()], devices.to_vec());
        cfg.audit.path = dir.join(format!("{me}-audit.log"));
        cfg.redundancy = RedundancySection {
            listen: Some(at(ports[i])),
            peers: vec![PeerAgent { site: other.into(), addr: at(ports[1 - i]), server_name: None }],
        };
        cfg
    })
}

/// Unix µs of the agent process's pts epoch, from one frame.
fn epoch_us(s: &Sample) -> i64 {
    s.capture as i64 - (u128::from(s.pts) * 1_000_000 / 90_000) as i64
}

fn ms(us: i64) -> f64 {
    us as f64 / 1000.0
}

/// Longest gap between consecutive arrivals of `frames` (sorted by arrival)
/// within [from, to), and how many exceed `over_us`.
fn gaps(frames: &[&Sample], from: u64, to: u64, over_us: i64) -> (i64, usize) {
    let inside: Vec<u64> = frames.iter().map(|s| s.recv).filter(|r| (from..to).contains(r)).collect();
    let mut longest = 0;
    let mut over = 0;
    for w in inside.windows(2) {
        let g = w[1] as i64 - w[0] as i64;
        longest = longest.max(g);
        over += usize::from(g > over_us);
    }
    (longest, over)
}

struct Agent {
    proc: Proc,
    toml: PathBuf,
}

/// Runs the scenario.
pub async fn run(params: &FailoverParams) -> Result<FailoverResult> {
    let dir = tempfile::Builder::new().prefix("ponte-bench-").tempdir().context("creating a temp dir")?;
    let pki = Pki::create(dir.path().join("pki"), &[AGENTS[0], AGENTS[1], SITE, VIEWER]).await?;
    let (devices, by_agent) = spread(&params.replay, params.cameras);
    let cameras: Vec<String> = devices.iter().map(|d| d.camera_id(1)).collect();
    let localhost = |port| SocketAddr::from((Ipv4Addr::LOCALHOST, port));

    let mut relay =
        RelayConfig::new(SITE, localhost(free_udp_port()), localhost(free_tcp_port()), pki.tls(SITE));
    relay.relay.upstreams = AGENTS.map(String::from).to_vec();
    let mgmt = localhost(free_tcp_port());
    relay.management.listen = mgmt;
    let mgmt = format!("http://{mgmt}");
    let listener = Listener::listen(&pki, VIEWER)?;
    relay.downstreams.push(ponte_relay::cascade::DownstreamConfig {
        site: VIEWER.into(),
        addr: listener.addr()?,
        server_name: None,
    });
    let mut relay_proc = cluster::spawn_relay(&relay, dir.path())?;
    cluster::wait_http([&relay]).await?;

    let target = RelayTarget::new(SITE, relay.relay.quic_listen);
    let configs = two_agents(&pki, dir.path(), target, &devices);
    let mut agents = Vec::new();
    for cfg in &configs {
        let toml = cfg.write(dir.path().join(format!("{}.toml", cfg.agent.id)))?;
        let proc = cluster::spawn("ponte-agent", &cfg.agent.id, &toml, &[])?;
        agents.push(Agent { proc, toml });
    }
    let accept = cluster::accept_in_background(listener, cameras.len());
    let mut viewer: Subscriber = accept.await.context("accept task")??;
    ponte_tests::wait_catalog(&relay.base_url(), cameras.len(), READY).await?;
    let wanted: Vec<(u32, String, Quality)> =
        cameras.iter().enumerate().map(|(i, c)| (i as u32, c.clone(), Quality::Main)).collect();
    viewer.subscribe_many(&wanted, READY).await?;
    let spread_counts: BTreeMap<String, u64> =
        by_agent.iter().map(|(a, cams)| (a.clone(), cams.len() as u64)).collect();
    let l = wait_links(&mgmt, &spread_counts, READY).await?;
    anyhow::ensure!(
        l.subscriptions == spread_counts,
        "the relay never took each camera from its agent by the spread: links {l:?}, expected {spread_counts:?}"
    );
    viewer.meter.sample(true);

    let fps = f64::from(params.replay.fps.max(1));
    let interval_us = (1e6 / fps) as i64;
    let mut runs = Vec::new();
    for index in 1..=params.runs {
        let victim = (index - 1) % 2;
        let killed = AGENTS[victim];
        tokio::time::sleep(Duration::from_secs_f64(params.settle_secs)).await;
        // The run's frames start a second before the kill.
        let _ = viewer.meter.take_samples();
        tokio::time::sleep(Duration::from_secs(1)).await;
        let kill = ponte_proto::h264::unix_micros_now();
        agents[victim].proc.signal(libc::SIGKILL)?;
        agents[victim].proc.wait_exit(Duration::from_secs(5)).await?;
        eprintln!("ponte-bench: failover run {index}: kill -9 {killed}");
        tokio::time::sleep(Duration::from_secs_f64(params.down_secs)).await;
        let links_down = links(&mgmt).await?;
        let restart = ponte_proto::h264::unix_micros_now();
        agents[victim].proc = cluster::spawn("ponte-agent", killed, &agents[victim].toml, &[])
            .context("restarting the agent")?;
        // Until every moved camera has a frame from the new process.
        let moved_ids: Vec<u32> = cameras
            .iter()
            .enumerate()
            .filter(|(_, c)| by_agent.get(killed).is_some_and(|on| on.contains(c)))
            .map(|(i, _)| i as u32)
            .collect();
        let mut samples: Vec<Sample> = Vec::new();
        let deadline = std::time::Instant::now() + Duration::from_secs_f64(params.back_timeout_secs);
        loop {
            tokio::time::sleep(Duration::from_millis(100)).await;
            samples.extend(viewer.meter.take_samples());
            let back = moved_ids.iter().all(|t| {
                samples.iter().any(|s| {
                    s.track == *t && s.recv > restart && epoch_us(s) >= restart as i64 - EPOCH_SLACK_US
                })
            });
            if back || std::time::Instant::now() > deadline {
                break;
            }
        }
        tokio::time::sleep(Duration::from_secs_f64(params.after_back_secs)).await;
        samples.extend(viewer.meter.take_samples());
        let end = ponte_proto::h264::unix_micros_now();
        let links_back = wait_links(&mgmt, &spread_counts, Duration::from_secs(3)).await?;

        let mut by_track: BTreeMap<u32, Vec<&Sample>> = BTreeMap::new();
        for s in &samples {
            by_track.entry(s.track).or_default().push(s);
        }
        for v in by_track.values_mut() {
            v.sort_by_key(|s| s.recv);
        }
        let before = kill.saturating_sub(1_000_000);
        let mut moved = Vec::new();
        let (mut surv_longest, mut surv_over, mut surv_frames, mut survivors) =
            (0i64, 0usize, 0usize, 0usize);
        for (i, camera) in cameras.iter().enumerate() {
            let empty = Vec::new();
            let frames = by_track.get(&(i as u32)).unwrap_or(&empty);
            if !moved_ids.contains(&(i as u32)) {
                let (longest, over) = gaps(frames, before, end, 2 * interval_us);
                surv_longest = surv_longest.max(longest);
                surv_over += over;
                surv_frames += frames.iter().filter(|s| (before..end).contains(&s.recv)).count();
                survivors += 1;
                continue;
            }
            let first = frames.iter().find(|s| s.recv > kill && s.capture > kill);
            let (longest, _) = gaps(frames, before, restart, 2 * interval_us);
            let back = frames
                .iter()
                .position(|s| s.recv > restart && epoch_us(s) >= restart as i64 - EPOCH_SLACK_US);
            let back_key = back.is_some_and(|p| frames[p].keyframe);
            let transit = |s: &Sample| ms(s.recv as i64 - s.capture as i64);
            let (restart_to_back, move_back_gap, stale) = match back {
                Some(p) => {
                    let b = frames[p];
                    let prev = p.checked_sub(1).map(|q| frames[q].recv);
                    let stale =
                        frames[p..].iter().filter(|s| epoch_us(s) < restart as i64 - EPOCH_SLACK_US).count();
                    (
                        Some(ms(b.recv as i64 - restart as i64)),
                        prev.map(|r| ms(b.recv as i64 - r as i64)),
                        stale,
                    )
                }
                None => (None, None, 0),
            };
            moved.push(MovedCamera {
                camera: camera.clone(),
                kill_to_first_ms: first.map(|s| ms(s.recv as i64 - kill as i64)),
                first_transit_ms: first.map(|s| transit(s)),
                longest_gap_ms: ms(longest),
                restart_to_back_ms: restart_to_back,
                move_back_gap_ms: move_back_gap,
                back_transit_ms: back.map(|p| transit(frames[p])),
                stale_after_back: stale,
                keyframes: (first.is_some_and(|s| s.keyframe), back_key),
            });
        }
        let r = Run {
            index,
            killed: killed.into(),
            moved,
            survivors,
            survivors_longest_gap_ms: ms(surv_longest),
            survivors_gaps_over: surv_over,
            survivors_frames: surv_frames,
            links_down,
            links_back,
        };
        let worst = |f: fn(&MovedCamera) -> Option<f64>| {
            r.moved.iter().filter_map(f).fold(None, |m: Option<f64>, x| Some(m.map_or(x, |m| m.max(x))))
        };
        eprintln!(
            "ponte-bench: failover run {index}: {} cameras moved, kill → first frame worst {:?} ms; back on {killed} \
             worst {:?} ms after the restart, move-back gap worst {:?} ms; survivors' longest gap {:.0} ms",
            r.moved.len(),
            worst(|m| m.kill_to_first_ms),
            worst(|m| m.restart_to_back_ms),
            worst(|m| m.move_back_gap_ms),
            r.survivors_longest_gap_ms
        );
        runs.push(r);
    }
    viewer.meter.sample(false);
    drop(viewer);
    for a in &mut agents {
        a.proc.terminate(Duration::from_secs(20)).await?;
    }
    relay_proc.terminate(Duration::from_secs(20)).await?;

    let pool = |f: fn(&MovedCamera) -> Option<f64>| {
        let v: Vec<f64> = runs.iter().flat_map(|r| r.moved.iter().filter_map(f)).collect();
        Dist::of_ms(&v)
    };
    Ok(FailoverResult {
        spread: by_agent,
        kill_to_first: pool(|m| m.kill_to_first_ms),
        failover_gap: pool(|m| Some(m.longest_gap_ms)),
        restart_to_back: pool(|m| m.restart_to_back_ms),
        move_back_gap: pool(|m| m.move_back_gap_ms),
        first_transit: pool(|m| m.first_transit_ms),
        back_transit: pool(|m| m.back_transit_ms),
        runs,
        idle_timeout_ms: ponte_proto::endpoint::REDUNDANT_IDLE_TIMEOUT_MS,
    })
}

/// Tables, checks and notes.
pub fn tables(r: &FailoverResult, params: &FailoverParams) -> (Vec<Table>, Vec<Check>, Vec<String>) {
    let p = &params.replay;
    let interval_ms = 1000.0 / f64::from(p.fps.max(1));
    let moved: usize = r.runs.iter().map(|x| x.moved.len()).sum();
    let mut t = Table::new(
        &format!(
            "Failover: {} replay cameras (main {} kbit/s, {} fps, GOP {} frames) spread over two agents ({}), one \
             relay, a viewer of every camera below it; {} kills, alternating, each agent restarted after {} s",
            params.cameras,
            p.main_kbps,
            p.fps,
            p.gop_frames,
            r.spread.iter().map(|(a, c)| format!("{} on {a}", c.len())).collect::<Vec<_>>().join(", "),
            r.runs.len(),
            params.down_secs
        ),
        &["", "n", "p50", "p95", "max"],
    );
    for (what, d) in [
        ("kill → first frame from the other agent, ms", &r.kill_to_first),
        ("longest gap between frames across the kill, ms", &r.failover_gap),
        ("restart → first frame from the restarted agent, ms", &r.restart_to_back),
        ("gap a viewer sees as its camera moves back, ms", &r.move_back_gap),
        ("first frame after the kill: capture → arrival, ms", &r.first_transit),
        ("first frame from the restarted agent: capture → arrival, ms", &r.back_transit),
    ] {
        t.row(vec![
            what.into(),
            d.n.to_string(),
            format!("{:.0}", d.p50_ms),
            format!("{:.0}", d.p95_ms),
            format!("{:.0}", d.max_ms),
        ]);
    }
    let mut runs = Table::new(
        "Each run: the killed agent's cameras (worst of them) and the survivors",
        &[
            "run",
            "killed",
            "cameras moved",
            "kill → first frame, ms",
            "back after restart, ms",
            "move-back gap, ms",
            "survivors' longest gap, ms",
            "relay links at the restart (subscriptions)",
        ],
    );
    let worst = |x: &Run, f: fn(&MovedCamera) -> Option<f64>| {
        let v: Vec<f64> = x.moved.iter().filter_map(f).collect();
        if v.len() < x.moved.len() {
            format!("{} of {} never", x.moved.len() - v.len(), x.moved.len())
        } else {
            format!("{:.0}", v.iter().copied().fold(0.0, f64::max))
        }
    };
    for x in &r.runs {
        runs.row(vec![
            x.index.to_string(),
            x.killed.clone(),
            x.moved.len().to_string(),
            worst(x, |m| m.kill_to_first_ms),
            worst(x, |m| m.restart_to_back_ms),
            worst(x, |m| m.move_back_gap_ms),
            format!("{:.0}", x.survivors_longest_gap_ms),
            AGENTS
                .iter()
                .map(|a| {
                    format!(
                        "{a} {} ({})",
                        x.links_down.state.get(*a).map_or("absent", String::as_str),
                        x.links_down.subscriptions.get(*a).copied().unwrap_or(0)
                    )
                })
                .collect::<Vec<_>>()
                .join(", "),
        ]);
    }
    let first_n = r.kill_to_first.n;
    let back_n = r.restart_to_back.n;
    let surv_over: usize = r.runs.iter().map(|x| x.survivors_gaps_over).sum();
    let surv_longest = r.runs.iter().map(|x| x.survivors_longest_gap_ms).fold(0.0, f64::max);
    let stale: usize = r.runs.iter().flat_map(|x| &x.moved).map(|m| m.stale_after_back).sum();
    let keyframes = r.runs.iter().flat_map(|x| &x.moved).filter(|m| m.keyframes == (true, true)).count();
    let spread_back = r.runs.iter().filter(|x| {
        AGENTS.iter().all(|a| {
            x.links_back.subscriptions.get(*a).copied().unwrap_or(0)
                == r.spread.get(*a).map_or(0, |c| c.len() as u64)
        })
    });
    let checks = vec![
        Check {
            what: format!("kill → first frame from the other agent, largest ({first_n} of {moved} cameras)"),
            target: "≤ 2000 ms, every camera (tests/tests/redundancy.rs's bar)".into(),
            measured: format!("{:.0} ms", r.kill_to_first.max_ms),
            met: first_n == moved && moved > 0 && r.kill_to_first.max_ms <= 2000.0,
        },
        Check {
            what: "cameras on the surviving agent: gaps above two frame intervals".into(),
            target: format!("0 (> {:.0} ms)", 2.0 * interval_ms),
            measured: format!("{surv_over} (longest {surv_longest:.0} ms)"),
            met: surv_over == 0,
        },
        Check {
            what: format!("cameras back on the restarted agent ({back_n} of {moved})"),
            target: format!("every one, within {} s of the restart", params.back_timeout_secs),
            measured: format!("{back_n}, the last {:.0} ms after the restart", r.restart_to_back.max_ms),
            met: back_n == moved && moved > 0,
        },
        Check {
            what: "gap a viewer sees as its camera moves back, largest".into(),
            target: format!("≤ two frame intervals ({:.0} ms)", 2.0 * interval_ms),
            measured: format!("{:.0} ms", r.move_back_gap.max_ms),
            met: r.move_back_gap.n > 0 && r.move_back_gap.max_ms <= 2.0 * interval_ms,
        },
        Check {
            what: "moved cameras whose first frame after the kill and first from the restarted agent are keyframes"
                .into(),
            target: format!("every one ({moved})"),
            measured: keyframes.to_string(),
            met: keyframes == moved,
        },
        Check {
            what: "runs ending with the relay's links as the spread has them; old frames after the move back".into(),
            target: format!("{} runs; 0 frames", r.runs.len()),
            measured: format!("{} runs; {stale} frames", spread_back.count()),
            met: r.runs.iter().all(|x| {
                AGENTS.iter().all(|a| {
                    x.links_back.subscriptions.get(*a).copied().unwrap_or(0)
                        == r.spread.get(*a).map_or(0, |c| c.len() as u64)
                })
            }) && stale == 0,
        },
    ];
    let notes = vec![
        format!(
            "Release binaries on loopback: one relay with `upstreams = [\"master-a\", \"master-b\"]`, two agents with \
             the same {} replay cameras (pre-encoded frames with a capture-time SEI; a camera's replay starts with \
             an IDR the moment an agent is asked for it), each agent its own certificate, audit log and \
             `[redundancy]` listen/peer; the relay dials a bench subscriber (`[[downstream]]`) that subscribes to \
             every camera's main stream and timestamps every frame as its last byte arrives. Each run plays {} s, \
             `kill -9`s one agent (master-a on odd runs, master-b on even ones), waits {} s, starts it again with \
             the same config, waits until each of its cameras has a frame from the new process (at most {} s) \
             and {} s more.",
            params.cameras, params.settle_secs + 1.0, params.down_secs, params.back_timeout_secs, params.after_back_secs
        ),
        format!(
            "*Kill → first frame*: arrival of a camera's first frame captured (SEI) after the kill, which only the \
             other agent can have sent. *Restart → back*: arrival of its first frame from the restarted process: \
             an agent stamps pts from a process-wide epoch (its first replay start), so capture time − pts is that \
             epoch, after the restart only for the new process. *Move-back gap*: that frame's arrival minus the \
             arrival of the frame before it (the viewer's pause as the relay moves the camera back, \
             `Unsubscribe` on one agent, `Subscribe` on the other). Survivors: every gap between consecutive \
             frames of the surviving agent's cameras from a second before the kill to the end of the run. \
             *Capture → arrival* of those first frames (SEI capture time to arrival at the viewer) splits each \
             figure into the agent starting the camera and the frame's way through agent, relay and viewer. \
             Percentiles are nearest-rank over every moved camera of every run."
        ),
        format!(
            "What bounds kill → first frame: the relay learns that an agent is gone only by silence, the QUIC idle \
             timeout ({} ms where `upstreams` lists two agents, `transport.idle_timeout_ms`; keep-alives every third \
             of it). quinn restarts the idle timer when it sends its first ack-eliciting packet after the last one \
             received (RFC 9000 §10.1), so the relay's next keep-alive after the kill restarts it: the link is \
             declared dead 1 to 1⅓ idle timeouts after the kill. Then the relay subscribes the orphaned cameras on the other agent (one round trip, microseconds here) \
             and forwards that agent's first GOP: at once for a replay camera, from the GOP cache of an agent \
             already pulling a real camera (otherwise the camera's connect and next IDR). Restart → back is the \
             agent's start-up (config, certificates, replay GOP encode, QUIC handshake, catalog) plus one round \
             trip.",
            r.idle_timeout_ms
        ),
    ];
    (vec![t, runs], checks, notes)
}
