//! No single point of failure (issue 22), with the real binaries: two
//! agents at the master room feed one relay as one source of cameras; the
//! agent carrying them is killed (`kill -9`) and every camera plays again
//! from the other, in Chromium and at the relay's RTSP; a PTZ lock granted
//! by the killed agent holds on the other.

use anyhow::{ensure, Context, Result};
use ponte_agent::config::{PeerAgent, RedundancySection};
use ponte_proto::ptz::{PtzCommand, PtzErrorCode, PtzReply};
use ponte_proto::redundancy::primary;

use ponte_tests::quic::FakeRelay;
use ponte_tests::rtsp_camera::{require_gstreamer_rtsp, RtspCamera};
use ponte_tests::{
    http_get, AgentConfig, Chromium, Device, DeviceExt, Pki, Proc, RelayConfig, RelayTarget, RtspReader,
};
use serde_json::Value;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::{Duration, Instant};

const AGENTS: [&str; 2] = ["master-a", "master-b"];

/// `n` camera ids `{prefix}{i}` whose primary agent is `agent`.
fn ids_on(agent: &str, prefix: &str, n: usize) -> Vec<String> {
    (0..)
        .map(|i| format!("{prefix}{i}"))
        .filter(|id| primary(&format!("{id}-1"), AGENTS) == Some(agent) && primary(id, AGENTS) == Some(agent))
        .take(n)
        .collect()
}

/// The two agents' configs: the same devices and policy, each its own
/// certificate, audit log and `[redundancy]` pointing at the other.
fn two_agents(pki: &Pki, dir: &Path, relays: &[RelayTarget], devices: &[Device]) -> [AgentConfig; 2] {
    let ports = [ponte_tests::free_udp_port(), ponte_tests::free_udp_port()];
    let at = |port| SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    [0, 1].map(|i| {
        let (me, other) = (AGENTS[i], AGENTS[1 - i]);
        let mut cfg = AgentConfig::new(me, pki.tls(me), relays.to_vec(), devices.to_vec());
        cfg.audit.path = dir.join(format!("{me}-audit.log"));
        cfg.incidents.state_file = Some(dir.join(format!("{me}-incidents.json")));
        cfg.redundancy = RedundancySection {
            listen: Some(at(ports[i])),
            peers: vec![PeerAgent { site: other.into(), addr: at(ports[1 - i]), server_name: None }],
        };
        cfg
    })
}

fn spawn_agent(dir: &Path, cfg: &AgentConfig) -> Result<Proc> {
    let path = cfg.write(dir.join(format!("{}.toml", cfg.agent.id)))?;
    ponte_tests::spawn_node("ponte-agent", &path)
}

fn audit_lines(path: &Path) -> Result<Vec<Value>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(text.lines().filter_map(|l| serde_json::from_str(l).ok()).collect())
}

/// Frames each console tile decoded.
const DECODED_JS: &str = "(async () => { const c = window.ponteConsole; \
    return c && c.ready ? (await c.decoded()).map(t => t.frames || 0) : null; })()";

/// When, after `kill`, each tile decoded a frame again: the end of the
/// longest pause in its frame count around the kill.
fn resumed_after(samples: &[(Instant, Vec<u64>)], tile: usize, kill: Instant) -> Option<Duration> {
    let window: Vec<(Instant, u64)> = samples
        .iter()
        .filter(|(t, _)| *t + Duration::from_millis(500) >= kill)
        .filter_map(|(t, f)| f.get(tile).map(|n| (*t, *n)))
        .collect();
    let mut changes = window.windows(2).filter(|w| w[1].1 > w[0].1).map(|w| w[1].0);
    let mut last = changes.next()?;
    let mut longest = (Duration::ZERO, last);
    for t in changes {
        if t - last > longest.0 {
            longest = (t - last, t);
        }
        last = t;
    }
    Some(longest.1.saturating_duration_since(kill))
}

#[tokio::test(flavor = "multi_thread")]
async fn the_agent_carrying_the_cameras_is_killed_and_every_camera_plays_again_within_2_s() -> Result<()> {
    let _lock = ponte_tests::e2e_lock();
    if !ponte_tests::require_program(Chromium::binary(), "chromium")
        || !ponte_tests::require_program("/usr/bin/ffmpeg", "ffmpeg")
        || !require_gstreamer_rtsp()
    {
        return Ok(());
    }
    let dir = tempfile::tempdir()?;
    let pki = Pki::create(dir.path().join("pki"), &["master-a", "master-b", "carabinieri"]).await?;
    // Four cameras whose primary is master-a: two GStreamer RTSP cameras
    // and two synthetic ones.
    let gst = ids_on("master-a", "gst", 2);
    let syn = ids_on("master-a", "syn", 2);
    let cam_a = RtspCamera::start(Default::default()).await?;
    let cam_b = RtspCamera::start(Default::default()).await?;
    let mut devices =
        vec![Device::rtsp(&gst[0], &cam_a.url("/h264")), Device::rtsp(&gst[1], &cam_b.url("/h264"))];
    devices.extend(syn.iter().map(|id| Device::synthetic(id)));
    let cameras: Vec<String> = devices.iter().map(|d| d.camera_id(1)).collect();

    let rtsp_port = ponte_tests::free_tcp_port();
    let localhost = |port| SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let mut relay = RelayConfig::new(
        "carabinieri",
        localhost(ponte_tests::free_udp_port()),
        localhost(ponte_tests::free_tcp_port()),
        pki.tls("carabinieri"),
    );
    relay.relay.upstreams = AGENTS.map(String::from).to_vec();
    relay.rtsp_on(rtsp_port);
    let base = relay.base_url();
    let relay_proc = ponte_tests::spawn_node("ponte-relay", &relay.write(dir.path().join("relay.toml"))?)?;
    let targets = [RelayTarget::new("carabinieri", relay.relay.quic_listen)];
    let [cfg_a, cfg_b] = two_agents(&pki, dir.path(), &targets, &devices);
    let mut agent_a = spawn_agent(dir.path(), &cfg_a)?;
    let _agent_b = spawn_agent(dir.path(), &cfg_b)?;
    ponte_tests::wait_catalog(&base, cameras.len(), Duration::from_secs(30)).await?;
    let mut relay_proc = relay_proc;
    let relay_mgmt = relay_proc.management_url(Duration::from_secs(10)).await?;
    // Both agents up: the relay is healthy.
    ponte_tests::wait_until(
        "both agents linked",
        Duration::from_secs(15),
        Duration::from_millis(200),
        || async {
            let doc = http_get(&format!("{relay_mgmt}/status")).await?.json()?;
            Ok((doc["health"] == "ok").then_some(()))
        },
    )
    .await?;

    // The viewers: the console's 2×2 wall in Chromium, and the VMS path.
    let browser = Chromium::launch().await?;
    browser.open_console(&format!("{base}/console")).await?;
    browser
        .eval(&format!("window.ponteConsole.setLayout('2x2', {})", serde_json::to_string(&cameras)?))
        .await?;
    let readers: Vec<RtspReader> = cameras
        .iter()
        .map(|c| RtspReader::start(&format!("rtsp://127.0.0.1:{rtsp_port}/{c}"), 60))
        .collect::<Result<_>>()?;
    for (c, r) in cameras.iter().zip(&readers) {
        r.decodes(15, Duration::from_secs(20)).await.with_context(|| format!("RTSP {c}"))?;
    }
    let t0 = Instant::now();
    loop {
        let f = browser.eval(DECODED_JS).await?;
        let ok =
            f.as_array().is_some_and(|a| a.len() >= 4 && a.iter().take(4).all(|n| n.as_u64() >= Some(30)));
        if ok {
            break;
        }
        ensure!(
            t0.elapsed() < Duration::from_secs(20),
            "the wall never played: {f}\n{}",
            browser.console().join("\n")
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Every camera comes from master-a, its primary.
    let doc = http_get(&format!("{relay_mgmt}/status")).await?.json()?;
    eprintln!("links before the kill: {}", doc["links"]);

    // Sample the wall every 20 ms across the kill.
    let mut samples: Vec<(Instant, Vec<u64>)> = Vec::new();
    let stalls_before: Vec<Duration> = readers.iter().map(RtspReader::longest_stall).collect();
    let mut killed = None;
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(9) {
        if killed.is_none() && start.elapsed() >= Duration::from_secs(2) {
            agent_a.signal(libc::SIGKILL)?;
            killed = Some(Instant::now());
            eprintln!("kill -9 master-a");
        }
        let f = browser.eval(DECODED_JS).await?;
        let frames: Vec<u64> = f.as_array().into_iter().flatten().map(|n| n.as_u64().unwrap_or(0)).collect();
        samples.push((Instant::now(), frames));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let killed = killed.context("never killed")?;
    let mut failures = Vec::new();
    for (i, camera) in cameras.iter().enumerate() {
        let resumed = resumed_after(&samples, i, killed);
        let stall = readers[i].longest_stall();
        let last = samples.last().map(|(_, f)| f.get(i).copied().unwrap_or(0)).unwrap_or(0);
        eprintln!(
            "{camera}: Chromium tile resumed {:?} after the kill ({last} frames); RTSP longest gap {stall:?} (before the kill {:?})",
            resumed.map(|d| d.as_millis()),
            stalls_before[i]
        );
        match resumed {
            Some(d) if d <= Duration::from_secs(2) => {}
            other => failures.push(format!("{camera}: the tile resumed after {other:?}")),
        }
        if stall > Duration::from_secs(2) {
            failures.push(format!("{camera}: the RTSP viewer waited {stall:?} for a frame"));
        }
    }
    let frames_now: Vec<u64> = samples.last().map(|(_, f)| f.clone()).unwrap_or_default();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = browser.eval(DECODED_JS).await?;
    for i in 0..4 {
        let n = after[i].as_u64().unwrap_or(0);
        if n <= frames_now.get(i).copied().unwrap_or(0) {
            failures.push(format!("{}: the tile stopped again", cameras[i]));
        }
    }
    ensure!(failures.is_empty(), "{failures:#?}\nconsole:\n{}", browser.console().join("\n"));

    // The takeover is in the surviving agent's audit, camera by camera.
    let audit = audit_lines(&cfg_b.audit.path)?;
    for camera in &cameras {
        ensure!(
            audit.iter().any(|l| l["action"] == "takeover" && l["camera"] == camera.as_str()),
            "master-b's audit has no takeover of {camera}"
        );
    }
    // One agent down: degraded, naming it; not down.
    let doc = http_get(&format!("{relay_mgmt}/status")).await?.json()?;
    eprintln!("relay status after the kill: {} {}", doc["health"], doc["problems"]);
    ensure!(doc["health"] == "degraded", "relay health with one agent down: {}", doc["health"]);
    ensure!(doc["problems"].to_string().contains("master-a"), "{}", doc["problems"]);
    Ok(())
}

/// A carabinieri operator holds the dome's lock, granted by master-a;
/// master-a is killed: master-b knows the holder, refuses the Questura and
/// lets the holder steer on.
#[tokio::test(flavor = "multi_thread")]
async fn a_ptz_lock_outlives_the_agent_that_granted_it() -> Result<()> {
    let _lock = ponte_tests::e2e_lock();
    let dir = tempfile::tempdir()?;
    let pki =
        Pki::create(dir.path().join("pki"), &["master-a", "master-b", "carabinieri", "questura"]).await?;
    let cc = FakeRelay::listen(&pki, "carabinieri")?;
    let qu = FakeRelay::listen(&pki, "questura")?;
    let targets = [
        RelayTarget::new("carabinieri", cc.endpoint.local_addr()?),
        RelayTarget::new("questura", qu.endpoint.local_addr()?),
    ];
    let dome = Device::simulated_dome("duomo");
    let camera = dome.camera_id(1);
    let [mut cfg_a, mut cfg_b] = two_agents(&pki, dir.path(), &targets, &[dome]);
    for cfg in [&mut cfg_a, &mut cfg_b] {
        cfg.ptz.lock_idle_secs = 20;
        for site in &mut cfg.sites {
            site.ptz = true;
            site.ptz_priority = if site.id == "carabinieri" { 50 } else { 40 };
        }
    }
    let mut agent_a = spawn_agent(dir.path(), &cfg_a)?;
    let mut c_a = cc.accept().await?;
    let mut q_a = qu.accept().await?;
    let _agent_b = spawn_agent(dir.path(), &cfg_b)?;
    let mut sessions = [cc.accept().await?, qu.accept().await?];
    // Which session is whose: both relays accept both agents.
    let (c_b, q_b) = sessions.split_at_mut(1);
    let (c_b, q_b) = (&mut c_b[0], &mut q_b[0]);
    // The agents are linked before the lock is taken.
    let mut a_lines = 0;
    let t0 = Instant::now();
    while !agent_a.lines().iter().any(|l| l.contains("PTZ locks are shared")) {
        ensure!(t0.elapsed() < Duration::from_secs(10), "the agents never linked:\n{}", agent_a.tail(30));
        tokio::time::sleep(Duration::from_millis(100)).await;
        a_lines += 1;
    }
    let _ = a_lines;

    let reply = c_a.ptz(1, &camera, "rossi", PtzCommand::Move { pan: 300, tilt: 0, zoom: 0 }).await?;
    ensure!(matches!(reply, PtzReply::Done { .. }), "carabinieri's move on master-a: {reply:?}");
    let reply = c_a.ptz(2, &camera, "rossi", PtzCommand::Stop).await?;
    ensure!(matches!(reply, PtzReply::Done { .. }), "{reply:?}");
    // The Questura, lower priority, is refused by master-a too.
    match q_a.ptz(1, &camera, "bianchi", PtzCommand::Move { pan: -300, tilt: 0, zoom: 0 }).await? {
        PtzReply::Refused { code: PtzErrorCode::Locked, .. } => {}
        other => anyhow::bail!("questura on master-a while carabinieri holds the lock: {other:?}"),
    }
    tokio::time::sleep(Duration::from_millis(300)).await;

    agent_a.signal(libc::SIGKILL)?;
    agent_a.wait_exit(Duration::from_secs(5)).await?;
    eprintln!("kill -9 master-a, which granted the lock");

    // On master-b: the holder is unchanged, the Questura still cannot steer.
    match q_b.ptz(2, &camera, "bianchi", PtzCommand::Move { pan: -300, tilt: 0, zoom: 0 }).await? {
        PtzReply::Refused { code: PtzErrorCode::Locked, holder: Some(h), reason } => {
            eprintln!("master-b refuses the questura: {reason}");
            ensure!(
                h.controller.label() == "rossi@carabinieri",
                "holder on master-b: {}",
                h.controller.label()
            );
        }
        other => anyhow::bail!("questura on master-b after the failover: {other:?} (two holders?)"),
    }
    let reply = c_b.ptz(3, &camera, "rossi", PtzCommand::Move { pan: 0, tilt: 300, zoom: 0 }).await?;
    match &reply {
        PtzReply::Done { holder: Some(h), .. } => {
            ensure!(h.controller.label() == "rossi@carabinieri", "{reply:?}")
        }
        other => anyhow::bail!("the lock holder steers on master-b: {other:?}"),
    }
    Ok(())
}

/// The shaping test's budget: 16 Mbit/s with a 256 KiB burst.
const BUDGET_MBPS: f64 = 16.0;
const BURST_KB: u64 = 256;

/// Two agents in namespace A feed one relay in B over a veth capped at
/// 20 Mbit/s; eight cameras asking 35 Mbit/s, spread over both agents,
/// always on at the relay: the bytes on the wire stay within the site's
/// budget + burst, because each agent spends half of it.
#[tokio::test(flavor = "multi_thread")]
async fn two_agents_together_stay_within_the_sites_budget() -> Result<()> {
    if !ponte_tests::require_root()
        || !ponte_tests::require_program("/usr/sbin/ip", "iproute2")
        || !ponte_tests::require_program("/usr/sbin/tc", "iproute2")
    {
        return Ok(());
    }
    let _lock = ponte_tests::e2e_lock();
    let dir = tempfile::tempdir()?;
    let pki = Pki::create(dir.path().join("pki"), &["master-a", "master-b", "carabinieri"]).await?;
    let net = ponte_tests::netns::NetnsPair::create("redu")?;
    net.cap(&net.a, "20mbit", "64kb", "100ms")?;
    let quic = SocketAddr::from((net.b.addr, 7443));
    let mut relay = RelayConfig::new(
        "carabinieri",
        quic,
        SocketAddr::from((Ipv4Addr::LOCALHOST, 8080)),
        pki.tls("carabinieri"),
    );
    relay.relay.upstreams = AGENTS.map(String::from).to_vec();
    let relay_toml = relay.write(dir.path().join("relay.toml"))?;
    let mut cmd = net.command(&net.b, ponte_tests::bin_path("ponte-relay")?);
    cmd.arg("run").arg("--config").arg(&relay_toml).env("RUST_LOG", "info");
    let _relay = Proc::spawn_command("relay", cmd)?;

    let devices: Vec<Device> = (0..8)
        .map(|i| {
            let mut d = Device::synthetic(&format!("cam-{i}"));
            d.source = ponte_tests::Source::Synthetic(ponte_tests::SyntheticSettings {
                main_kbps: Some(4400),
                sub_kbps: Some(500),
                main_width: Some(960),
                main_height: Some(540),
                ..Default::default()
            });
            d
        })
        .collect();
    let on_a = devices.iter().filter(|d| primary(&d.camera_id(1), AGENTS) == Some("master-a")).count();
    ensure!((1..8).contains(&on_a), "the eight cameras should spread over both agents ({on_a} on master-a)");
    let [mut cfg_a, mut cfg_b] =
        two_agents(&pki, dir.path(), &[RelayTarget::new("carabinieri", quic)], &devices);
    for cfg in [&mut cfg_a, &mut cfg_b] {
        let site = &mut cfg.sites[0];
        site.budget_mbps = Some(BUDGET_MBPS);
        site.burst_kb = Some(BURST_KB);
        // The relay keeps every camera subscribed, viewers or not.
        site.always_on = vec!["*".into()];
    }
    let mut agents = Vec::new();
    for cfg in [&cfg_a, &cfg_b] {
        let path = cfg.write(dir.path().join(format!("{}.toml", cfg.agent.id)))?;
        let mut cmd = net.command(&net.a, ponte_tests::bin_path("ponte-agent")?);
        cmd.arg("run").arg("--config").arg(&path).env("RUST_LOG", "info");
        agents.push(Proc::spawn_command(&cfg.agent.id, cmd)?);
    }
    for agent in &mut agents {
        agent.wait_for_line("budget is shared with the other agents", Duration::from_secs(20)).await?;
    }
    // Settle (the streams start on sub and climb), then count 20 s.
    tokio::time::sleep(Duration::from_secs(14)).await;
    let (tx0, w0) = (net.tx_bytes(&net.a)?, Instant::now());
    tokio::time::sleep(Duration::from_secs(20)).await;
    let (tx1, w1) = (net.tx_bytes(&net.a)?, Instant::now());
    let window = (w1 - w0).as_secs_f64();
    let wire = tx1 - tx0;
    let allowed = BUDGET_MBPS * 1e6 / 8.0 * window + BURST_KB as f64 * 1024.0;
    eprintln!(
        "two agents, {on_a} cameras on master-a and {} on master-b: {wire} bytes in {window:.1} s = {:.2} Mbit/s \
         on the wire (budget {BUDGET_MBPS} Mbit/s, allowed {allowed:.0} bytes with burst)",
        8 - on_a,
        wire as f64 * 8.0 / window / 1e6
    );
    ensure!((wire as f64) <= allowed, "{wire} bytes on the wire exceed budget + burst ({allowed:.0})");
    // Both agents served: each sent at least a quarter of a share.
    for agent in &agents {
        ensure!(
            agent.lines().iter().any(|l| l.contains("subscribe site=")),
            "{} served nothing:\n{}",
            agent.label(),
            agent.tail(20)
        );
    }
    // Something flowed (the synthetic encoders slow down on a loaded machine).
    ensure!(wire as f64 * 8.0 / window > BUDGET_MBPS * 1e6 * 0.25, "the agents sent far below the budget");
    Ok(())
}

/// Frame pts gaps in ffmpeg's `framecrc` output: (the usual interval, the
/// longest, the frame count).
fn pts_gaps(framecrc: &str) -> (i64, i64, usize) {
    let pts: Vec<i64> = framecrc
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split(',').nth(1)?.trim().parse().ok())
        .collect();
    let mut deltas: Vec<i64> = pts.windows(2).map(|w| w[1] - w[0]).collect();
    let longest = deltas.iter().copied().max().unwrap_or(0);
    deltas.sort_unstable();
    let usual = deltas.get(deltas.len() / 2).copied().unwrap_or(0);
    (usual, longest, pts.len())
}

/// Dual path: the agent in namespace A reaches the relay in B on two veth
/// pairs (two fibre paths); a `dual_path` camera goes down both. A VMS
/// reads it over RTSP while one path is cut, restored, then the other is
/// cut: every frame arrives (no pts gap over 1.5 frame intervals).
#[tokio::test(flavor = "multi_thread")]
async fn a_dual_path_camera_loses_no_frame_when_either_path_is_cut() -> Result<()> {
    if !ponte_tests::require_root()
        || !ponte_tests::require_program("/usr/sbin/ip", "iproute2")
        || !ponte_tests::require_program("/usr/bin/ffmpeg", "ffmpeg")
    {
        return Ok(());
    }
    let _lock = ponte_tests::e2e_lock();
    let dir = tempfile::tempdir()?;
    let pki = Pki::create(dir.path().join("pki"), &["master", "carabinieri"]).await?;
    let net = ponte_tests::netns::NetnsPair::create("dual")?;
    let (a2, b2) = net.second_path()?;
    let rtsp_port = 8554;
    let mut relay = RelayConfig::new(
        "carabinieri",
        SocketAddr::from((Ipv4Addr::UNSPECIFIED, 7443)),
        SocketAddr::from((Ipv4Addr::LOCALHOST, 8080)),
        pki.tls("carabinieri"),
    );
    relay.rtsp_on(rtsp_port);
    let relay_toml = relay.write(dir.path().join("relay.toml"))?;
    let mut cmd = net.command(&net.b, ponte_tests::bin_path("ponte-relay")?);
    cmd.arg("run").arg("--config").arg(&relay_toml).env("RUST_LOG", "info");
    let mut relay_proc = Proc::spawn_command("relay", cmd)?;

    let mut target = RelayTarget::new("carabinieri", SocketAddr::from((net.b.addr, 7443)));
    target.addr = SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0));
    target.paths = vec![
        ponte_agent::config::RelayPath {
            local: net.a.addr.into(),
            remote: SocketAddr::from((net.b.addr, 7443)),
        },
        ponte_agent::config::RelayPath { local: a2.addr.into(), remote: SocketAddr::from((b2.addr, 7443)) },
    ];
    let mut cfg =
        AgentConfig::new("master", pki.tls("master"), vec![target], vec![Device::synthetic("stadio")]);
    cfg.sites[0].dual_path = vec!["*".into()];
    let path = cfg.write(dir.path().join("agent.toml"))?;
    let mut cmd = net.command(&net.a, ponte_tests::bin_path("ponte-agent")?);
    cmd.arg("run").arg("--config").arg(&path).env("RUST_LOG", "info");
    let _agent = Proc::spawn_command("agent", cmd)?;
    let t0 = Instant::now();
    while relay_proc.lines().iter().filter(|l| l.contains("catalog received")).count() < 2 {
        ensure!(
            t0.elapsed() < Duration::from_secs(20),
            "the agent's two paths never came up:\n{}",
            relay_proc.tail(30)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The VMS: 26 s of the camera over RTSP, every decoded frame's pts.
    let mut ffmpeg = net.command(&net.b, "/usr/bin/ffmpeg");
    ffmpeg
        .args(["-hide_banner", "-nostats", "-v", "error", "-rtsp_transport", "tcp", "-i"])
        .arg(format!("rtsp://127.0.0.1:{rtsp_port}/stadio"))
        .args(["-t", "26", "-fps_mode", "passthrough", "-f", "framecrc", "-"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let reader = std::thread::spawn(move || ffmpeg.output());
    relay_proc.wait_for_line("dual path: subscribing the copy", Duration::from_secs(15)).await?;
    // The cost: bytes on each path's wire over 4 s, both copies flowing.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (p1, p2, t0) = (net.tx_bytes(&net.a)?, net.tx_bytes(&a2)?, Instant::now());
    tokio::time::sleep(Duration::from_secs(4)).await;
    let secs = t0.elapsed().as_secs_f64();
    let (p1, p2) = (net.tx_bytes(&net.a)? - p1, net.tx_bytes(&a2)? - p2);
    let mbps = |b: u64| b as f64 * 8.0 / secs / 1e6;
    eprintln!(
        "dual path on the wire: path 1 {:.2} Mbit/s, path 2 {:.2} Mbit/s, together {:.2}× one path",
        mbps(p1),
        mbps(p2),
        (p1 + p2) as f64 / p1.min(p2).max(1) as f64
    );
    ensure!(p1.min(p2) as f64 > 0.8 * p1.max(p2) as f64, "one path carries no copy: {p1} and {p2} bytes");
    eprintln!("cut path 1");
    net.set_link(&net.a, false)?;
    tokio::time::sleep(Duration::from_secs(6)).await;
    eprintln!("path 1 restored");
    let restored = relay_proc.line_count();
    net.set_link(&net.a, true)?;
    // The agent dials path 1 again; the relay subscribes the copy on it.
    relay_proc
        .wait_for_line_from(restored, "dual path: subscribing the copy", Duration::from_secs(10))
        .await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    eprintln!("cut path 2");
    net.set_link(&a2, false)?;
    let out = reader.join().map_err(|_| anyhow::anyhow!("the ffmpeg thread panicked"))??;
    let text = String::from_utf8_lossy(&out.stdout);
    let errors = String::from_utf8_lossy(&out.stderr);
    let (usual, longest, frames) = pts_gaps(&text);
    eprintln!(
        "dual path: {frames} frames decoded, usual pts step {usual}, longest {longest} ({:.2} frame intervals); ffmpeg errors: {:?}",
        longest as f64 / usual.max(1) as f64,
        errors.trim()
    );
    let promoted =
        relay_proc.lines().iter().filter(|l| l.contains("the copy on the other path carries on")).count();
    eprintln!("the relay carried on with the other path's copy {promoted} times");
    ensure!(frames >= 300, "only {frames} frames in 26 s (15 fps)");
    ensure!(usual > 0 && longest * 2 <= usual * 3, "a gap of {longest} (usual {usual}): frames were lost");
    ensure!(errors.trim().is_empty(), "ffmpeg: {errors}");
    ensure!(promoted >= 1, "the relay never switched to the other path's copy");
    Ok(())
}
