//! sizing: what each stream and each viewer costs a node, measured on two
//! agents and three relays, a check of that model on the same system under
//! a different mix, and the sizing table it gives for real deployments.
//!
//! The system: agent `master-a` with replay cameras `a-NN`; agent
//! `master-b` whose cameras `b-NN` are RTSP sources it pulls from relay
//! `r1`'s RTSP server (`rtsp://r1/a-NN`: a real RTSP ingest that costs no
//! encoding); both agents feed relays `r1` and `r2`; `r1` feeds relay `r3`
//! as a cascade downstream. Bench QUIC subscribers below the relays play
//! VMS/cascade downstreams, Chromium plays the operators (WHEP).
//!
//! Calibration phases each change one thing and read every node's CPU
//! (`/proc/<pid>/stat`) and RSS; the costs are differences between phases,
//! divided by the streams that changed. The validation phase then runs a
//! mix no calibration phase had (both agents, all three relays, cascade,
//! WHEP and RTSP at once), and the model's prediction for each node is
//! compared with what it used.

use crate::cluster::{accept_in_background, spawn, spawn_relay, wait_http, Replay, READY};
use crate::machine::{process_rss, CpuWindow};
use crate::report::{Check, Table};
use crate::subscriber::{subscription_id, Listener, Subscriber};
use anyhow::{bail, Context, Result};
use ponte_proto::media::Quality;
use ponte_relay::cascade::DownstreamConfig;
use ponte_tests::{
    free_tcp_port, free_udp_port, AgentConfig, Chromium, Device, DeviceExt, DeviceKind, Pki, Proc,
    RelayConfig, RelayTarget,
};
use serde::Serialize;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// The nodes, in the order of every per-node vector.
pub const NODES: [&str; 5] = ["master-a", "master-b", "r1", "r2", "r3"];
const A: usize = 0;
const B: usize = 1;
const R1: usize = 2;
const R2: usize = 3;
const R3: usize = 4;

/// Phase names: `run` measures them, `fit` reads them back by these names.
pub mod phase {
    /// Nothing subscribed.
    pub const IDLE: &str = "idle";
    /// N substreams to one bench downstream of r1.
    pub const SUB_1: &str = "sub × N, 1 downstream";
    /// The same to a second downstream of r1.
    pub const SUB_2: &str = "sub × N, 2 downstreams";
    /// The same to r2 as well.
    pub const SUB_R2: &str = "sub × N, 2 downstreams, + r2";
    /// N main streams to one bench downstream of r1.
    pub const MAIN_1: &str = "main × N, 1 downstream";
    /// The same to a second downstream of r1.
    pub const MAIN_2: &str = "main × N, 2 downstreams";
    /// The same to r2 as well.
    pub const MAIN_R2: &str = "main × N, 2 downstreams, + r2";
    /// Baseline for the RTSP phases: N main and K substreams at r1.
    pub const BEFORE_RTSP: &str = "main × N + sub × K, before RTSP";
    /// K of master-b's cameras (main) watched through r2.
    pub const RTSP_MAIN: &str = "+ RTSP main × K";
    /// K of master-b's cameras (substream) watched through r2.
    pub const RTSP_SUB: &str = "+ RTSP sub × K";
    /// Baseline for the WHEP phase.
    pub const BEFORE_WHEP: &str = "main × N + sub × K, before WHEP";
    /// V Chromium viewers on r1.
    pub const WHEP: &str = "+ WHEP × V";
    /// The check.
    pub const VALIDATION: &str = "validation";
}

/// Knobs of the sizing run.
#[derive(Debug, Clone, Serialize)]
pub struct SizingParams {
    /// How the cameras stream.
    pub replay: Replay,
    /// Replay cameras of `master-a` (calibration streams per phase).
    pub tracks: usize,
    /// RTSP cameras of `master-b`.
    pub rtsp: usize,
    /// WHEP viewers (0 = no Chromium part).
    pub viewers: usize,
    /// Wait after a change, before measuring.
    pub settle_secs: f64,
    /// Measured window of each phase.
    pub window_secs: f64,
}

/// What one phase measured.
#[derive(Debug, Clone, Serialize)]
pub struct Phase {
    /// What the phase is.
    pub name: String,
    /// CPU of each node, cores (CPU seconds per second), in [`NODES`] order.
    pub cores: Vec<f64>,
    /// RSS of each node, MB.
    pub rss_mb: Vec<f64>,
    /// What the bench subscribers and viewers should receive, Mbit/s.
    pub expected_mbps: f64,
    /// What they received.
    pub received_mbps: f64,
    /// Window, s.
    pub wall_secs: f64,
}

/// Streams and viewers a node carries: the model's inputs.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Counts {
    /// Agent: main streams sent, one per link (a stream sent to two relays counts twice).
    pub sent_main: f64,
    /// Agent: substreams sent, one per link.
    pub sent_sub: f64,
    /// Agent: main streams its replay cameras make (benchmark cameras, not
    /// deployments: the validation's master-a).
    pub replay_main: f64,
    /// Agent: substreams its replay cameras make.
    pub replay_sub: f64,
    /// Agent: main streams pulled from cameras over RTSP.
    pub pulled_main: f64,
    /// Agent: substreams pulled over RTSP.
    pub pulled_sub: f64,
    /// Relay: main streams received from upstream.
    pub in_main: f64,
    /// Relay: substreams received.
    pub in_sub: f64,
    /// Relay: main streams sent to QUIC downstreams (cascade relays, bench VMS), one per downstream.
    pub out_main: f64,
    /// Relay: substreams sent downstream.
    pub out_sub: f64,
    /// Relay: browser viewers (WHEP), main quality.
    pub whep: f64,
    /// Relay: RTSP clients reading a main stream.
    pub rtsp_main: f64,
    /// Relay: RTSP clients reading a substream.
    pub rtsp_sub: f64,
}

/// The model: each node's idle cost plus a cost per stream or viewer, in
/// cores (CPU seconds per second), and memory per stream.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Costs {
    /// An agent with its links up and nothing flowing (mean of both).
    pub agent_idle: f64,
    /// A relay with its links up and nothing flowing (mean of the three).
    pub relay_idle: f64,
    /// Cores one of each load costs (one stream, one viewer), beyond idle.
    pub unit: Counts,
    /// Agent RSS with nothing flowing, MB.
    pub agent_idle_mb: f64,
    /// Relay RSS with nothing flowing, MB.
    pub relay_idle_mb: f64,
    /// Agent RSS per main stream flowing, MB.
    pub agent_mb_main: f64,
    /// Relay RSS per main stream received, MB.
    pub relay_mb_main: f64,
    /// Relay RSS per WHEP viewer, MB.
    pub relay_mb_whep: f64,
}

impl Costs {
    /// Cores an agent needs for `c` (only the agent's fields count).
    pub fn agent(&self, c: &Counts) -> f64 {
        self.agent_idle + self.unit.dot(c)
    }

    /// Cores a relay needs for `c` (only the relay's fields count).
    pub fn relay(&self, c: &Counts) -> f64 {
        self.relay_idle + self.unit.dot(c)
    }

    /// An agent's RSS for `c`, MB: a GOP cache per stream pulled, a
    /// substream's `sub_share` of a main stream's.
    pub fn agent_mb(&self, c: &Counts, sub_share: f64) -> f64 {
        self.agent_idle_mb + self.agent_mb_main * (c.pulled_main + c.pulled_sub * sub_share)
    }

    /// A relay's RSS for `c`, MB: a GOP cache per stream received, plus
    /// each browser viewer's.
    pub fn relay_mb(&self, c: &Counts, sub_share: f64) -> f64 {
        self.relay_idle_mb
            + self.relay_mb_main * (c.in_main + c.in_sub * sub_share)
            + self.relay_mb_whep * c.whep
    }
}

impl Counts {
    /// Every field, in declaration order.
    fn values(&self) -> [f64; 13] {
        [
            self.sent_main,
            self.sent_sub,
            self.replay_main,
            self.replay_sub,
            self.pulled_main,
            self.pulled_sub,
            self.in_main,
            self.in_sub,
            self.out_main,
            self.out_sub,
            self.whep,
            self.rtsp_main,
            self.rtsp_sub,
        ]
    }

    /// Every field, mutable, in declaration order.
    fn values_mut(&mut self) -> [&mut f64; 13] {
        [
            &mut self.sent_main,
            &mut self.sent_sub,
            &mut self.replay_main,
            &mut self.replay_sub,
            &mut self.pulled_main,
            &mut self.pulled_sub,
            &mut self.in_main,
            &mut self.in_sub,
            &mut self.out_main,
            &mut self.out_sub,
            &mut self.whep,
            &mut self.rtsp_main,
            &mut self.rtsp_sub,
        ]
    }

    /// Sum of the products of matching fields: counts × unit costs.
    fn dot(&self, other: &Counts) -> f64 {
        self.values().iter().zip(other.values()).map(|(a, b)| a * b).sum()
    }
}

/// The validation phase: predicted and measured, per node.
#[derive(Debug, Clone, Serialize)]
pub struct Validation {
    /// What each node carried.
    pub counts: Vec<Counts>,
    /// The model's cores per node.
    pub predicted: Vec<f64>,
    /// Measured cores per node.
    pub measured: Vec<f64>,
}

/// One deployment of the sizing table.
#[derive(Debug, Clone, Serialize)]
pub struct Deployment {
    /// Its name.
    pub name: String,
    /// Cameras.
    pub cameras: usize,
    /// Lenses (a multi-sensor camera has 2 or 4).
    pub lenses: usize,
    /// Agents at the master (cameras split evenly).
    pub agents: usize,
    /// Partner sites.
    pub sites: usize,
    /// Relays below each site's head relay (a cascade), sharing its viewers.
    pub children: usize,
    /// Substreams each site keeps on (mosaic, video wall).
    pub subs: usize,
    /// Main streams each site watches at once.
    pub mains: usize,
    /// Browser viewers per site.
    pub viewers: usize,
    /// Main streams each site's VMS reads over RTSP.
    pub vms: usize,
}

/// Everything the run measured.
#[derive(Debug, Clone, Serialize)]
pub struct SizingResult {
    /// Each phase.
    pub phases: Vec<Phase>,
    /// The model fitted from the calibration phases.
    pub costs: Costs,
    /// The check.
    pub validation: Validation,
    /// Main and sub bitrates the costs hold for, kbit/s.
    pub main_kbps: u32,
    /// Substream bitrate.
    pub sub_kbps: u32,
}

/// The running system.
struct System {
    procs: Vec<Proc>,
    configs: Vec<RelayConfig>,
    /// r1's two bench downstreams, r2's, r3's.
    r1_vms: Vec<Subscriber>,
    r2_vms: Subscriber,
    r3_vms: Subscriber,
    _dir: tempfile::TempDir,
}

impl System {
    fn pids(&self) -> Vec<u32> {
        self.procs.iter().map(Proc::pid).collect()
    }

    fn subscribers(&self) -> impl Iterator<Item = &Subscriber> {
        self.r1_vms.iter().chain([&self.r2_vms, &self.r3_vms])
    }

    fn received_bytes(&self) -> u64 {
        self.subscribers().map(|s| s.meter.bytes.load(Ordering::Relaxed)).sum()
    }

    async fn start(p: &SizingParams) -> Result<System> {
        let dir = tempfile::Builder::new()
            .prefix("ponte-bench-sizing-")
            .tempdir()
            .context("creating a temp dir")?;
        let vms = ["r1-vms-1", "r1-vms-2", "r2-vms", "r3-vms"];
        let sites: Vec<&str> = ["master", "r1", "r2", "r3"].iter().chain(vms.iter()).copied().collect();
        let pki = Pki::create(dir.path().join("pki"), &sites).await?;
        let localhost = |port| SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let listeners: Vec<Listener> =
            vms.iter().map(|s| Listener::listen(&pki, s)).collect::<Result<_>>()?;
        let down = |l: &Listener| -> Result<DownstreamConfig> {
            Ok(DownstreamConfig { site: l.site().to_owned(), addr: l.addr()?, server_name: None })
        };
        let relay = |site: &str, upstreams: &[&str]| {
            let mut c =
                RelayConfig::new(site, localhost(free_udp_port()), localhost(free_tcp_port()), pki.tls(site));
            c.relay.upstreams = upstreams.iter().map(|s| (*s).to_owned()).collect();
            // Every WHEP offer comes from 127.0.0.1 (default 30 a minute).
            c.whep.offers_per_minute = 600;
            c
        };
        let mut r3 = relay("r3", &["r1"]);
        r3.downstreams.push(down(&listeners[3])?);
        let mut r2 = relay("r2", &["master"]);
        r2.downstreams.push(down(&listeners[2])?);
        let mut r1 = relay("r1", &["master"]);
        let rtsp_port = free_tcp_port();
        // Every RTSP pull of master-b comes from 127.0.0.1, as a VMS
        // reading many streams comes from one address (default cap 16).
        r1.rtsp_on(rtsp_port).max_connections_per_client = 256;
        r1.downstreams.push(down(&listeners[0])?);
        r1.downstreams.push(down(&listeners[1])?);
        r1.downstreams.push(DownstreamConfig {
            site: "r3".into(),
            addr: r3.relay.quic_listen,
            server_name: None,
        });

        let configs = vec![r1, r2, r3];
        let mut procs = configs.iter().map(|c| spawn_relay(c, dir.path())).collect::<Result<Vec<_>>>()?;
        wait_http(&configs).await?;
        let targets = |configs: &[RelayConfig]| -> Vec<RelayTarget> {
            configs[..2].iter().map(|c| RelayTarget::new(&c.relay.site, c.relay.quic_listen)).collect()
        };
        let a_devices: Vec<Device> =
            (0..p.tracks).map(|i| p.replay.device(&camera('a', i), DeviceKind::Fixed, 1, &[])).collect();
        let b_devices: Vec<Device> = (0..p.rtsp)
            .map(|i| {
                let url = format!("rtsp://127.0.0.1:{rtsp_port}/{}", camera('a', i));
                let mut d = Device::rtsp(&camera('b', i), &url);
                let rtsp = d.rtsp_mut();
                rtsp.lenses[0].sub = Some(format!("{url}/sub"));
                // Pulled only while watched, so the calibration can tell
                // a pull from no pull (the default pulls every camera always).
                rtsp.on_demand = true;
                d
            })
            .collect();
        let mut agents = Vec::new();
        // Both agents are the master (one identity, `master`, as two agents
        // of one control room would be); their cameras differ.
        for (label, devices) in [("master-a", a_devices), ("master-b", b_devices)] {
            let mut config = AgentConfig::new("master", pki.tls("master"), targets(&configs), devices);
            config.node.audit.path = dir.path().join(format!("{label}-audit.log"));
            let toml = config.write(dir.path().join(format!("agent-{label}.toml")))?;
            agents.push(spawn("ponte-agent", label, &toml, &[])?);
        }
        procs.splice(0..0, agents);

        let cameras = p.tracks + p.rtsp;
        let tasks: Vec<_> = listeners.into_iter().map(|l| accept_in_background(l, cameras)).collect();
        let mut subs = Vec::new();
        for t in tasks {
            subs.push(t.await.context("accept task")??);
        }
        for c in &configs {
            ponte_tests::wait_catalog(&c.base_url(), cameras, READY).await?;
        }
        let r3_vms = subs.pop().context("r3-vms")?;
        let r2_vms = subs.pop().context("r2-vms")?;
        Ok(System { procs, configs, r1_vms: subs, r2_vms, r3_vms, _dir: dir })
    }

    async fn shutdown(mut self) -> Result<()> {
        for p in &mut self.procs {
            p.terminate(Duration::from_secs(20)).await?;
        }
        Ok(())
    }
}

/// Camera id `<prefix>-NN`.
fn camera(prefix: char, i: usize) -> String {
    format!("{prefix}-{i:02}")
}

/// Subscription requests for cameras `range` of `prefix` at `quality`;
/// b-cameras take track numbers above a-cameras'.
fn wants(prefix: char, range: std::ops::Range<usize>, quality: Quality) -> Vec<(u32, String, Quality)> {
    let base = if prefix == 'b' { 10_000 } else { 0 };
    range.map(|i| ((base + i) as u32, camera(prefix, i), quality)).collect()
}

fn ids(w: &[(u32, String, Quality)]) -> Vec<u64> {
    w.iter().map(|(t, _, q)| subscription_id(*t, *q)).collect()
}

/// Browser viewers in one Chromium page, each its own peer connection.
struct Viewers {
    browser: Chromium,
}

impl Viewers {
    async fn open(base: &str) -> Result<Viewers> {
        let viewers = Viewers { browser: Chromium::launch().await? };
        viewers.goto(base).await?;
        Ok(viewers)
    }

    /// Loads relay `base`'s viewer page.
    async fn goto(&self, base: &str) -> Result<()> {
        crate::ttff::load_viewer_page(&self.browser, base).await
    }

    /// Starts a viewer of each camera's main stream; waits until every one
    /// has decoded a frame.
    async fn play(&self, cameras: &[String]) -> Result<()> {
        if cameras.is_empty() {
            return Ok(());
        }
        let js = format!(
            "(async (cams) => {{ \
                window.__pcs = window.__pcs || []; window.__sessions = window.__sessions || []; \
                const gathered = (pc) => new Promise((ok) => {{ \
                    if (pc.iceGatheringState === 'complete') return ok(); \
                    pc.addEventListener('icegatheringstatechange', () => {{ \
                        if (pc.iceGatheringState === 'complete') ok(); }}); \
                    setTimeout(ok, 2000); }}); \
                for (const cam of cams) {{ \
                    const pc = new RTCPeerConnection(); \
                    pc.addTransceiver('video', {{ direction: 'recvonly' }}); \
                    const v = document.createElement('video'); \
                    v.muted = true; v.autoplay = true; v.width = 160; document.body.appendChild(v); \
                    pc.ontrack = (e) => {{ v.srcObject = new MediaStream([e.track]); v.play().catch(() => {{}}); }}; \
                    await pc.setLocalDescription(await pc.createOffer()); \
                    await gathered(pc); \
                    const r = await fetch('/whep/' + encodeURIComponent(cam), {{ method: 'POST', \
                        headers: {{ 'Content-Type': 'application/sdp' }}, body: pc.localDescription.sdp }}); \
                    const body = await r.text(); \
                    if (!r.ok) throw new Error(cam + ': HTTP ' + r.status + ': ' + body); \
                    const loc = r.headers.get('Location'); \
                    if (loc) window.__sessions.push(new URL(loc, location.href).href); \
                    await pc.setRemoteDescription({{ type: 'answer', sdp: body }}); \
                    window.__pcs.push(pc); \
                }} \
                return window.__pcs.length; \
            }})({})",
            serde_json::to_string(cameras)?
        );
        self.browser.eval(&js).await.context("starting WHEP viewers")?;
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let (_, min_decoded) = self.stats().await?;
            if min_decoded > 0 {
                return Ok(());
            }
            if Instant::now() > deadline {
                let states = self
                    .browser
                    .eval("(window.__pcs || []).map((pc) => pc.connectionState).join(', ')")
                    .await
                    .unwrap_or_default();
                let (bytes, _) = self.stats().await?;
                bail!("a WHEP viewer decoded no frame within 20 s (peer connections: {states}; {bytes} bytes received)");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Bytes received by all viewers, and the fewest frames any decoded.
    async fn stats(&self) -> Result<(u64, u64)> {
        let v = self
            .browser
            .eval(
                "(async () => { let bytes = 0, min = Infinity; \
                    for (const pc of (window.__pcs || [])) { let d = 0; \
                        (await pc.getStats()).forEach((s) => { \
                            if (s.type === 'inbound-rtp' && s.kind === 'video') { \
                                bytes += s.bytesReceived || 0; d += s.framesDecoded || 0; } }); \
                        min = Math.min(min, d); } \
                    return [bytes, min === Infinity ? 0 : min]; })()",
            )
            .await?;
        let n = |i: usize| v[i].as_f64().unwrap_or(0.0) as u64;
        Ok((n(0), n(1)))
    }

    /// Ends every viewer (WHEP DELETE, then close).
    async fn stop(&self) -> Result<()> {
        self.browser
            .eval(
                "(async () => { for (const u of (window.__sessions || [])) { \
                    await fetch(u, { method: 'DELETE' }).catch(() => {}); } \
                  for (const pc of (window.__pcs || [])) pc.close(); \
                  document.querySelectorAll('video').forEach((v) => v.remove()); \
                  window.__pcs = []; window.__sessions = []; return true; })()",
            )
            .await?;
        Ok(())
    }
}

/// Measures one phase: settle, then a window over every node.
async fn measure(
    sys: &System,
    p: &SizingParams,
    name: &str,
    expected_mbps: f64,
    viewers: Option<&Viewers>,
) -> Result<Phase> {
    tokio::time::sleep(Duration::from_secs_f64(p.settle_secs)).await;
    let bytes0 = sys.received_bytes();
    let whep0 = match viewers {
        Some(v) => v.stats().await?.0,
        None => 0,
    };
    let window = CpuWindow::start(&sys.pids())?;
    tokio::time::sleep(Duration::from_secs_f64(p.window_secs)).await;
    let (wall, _, procs) = window.finish()?;
    let whep1 = match viewers {
        Some(v) => v.stats().await?.0,
        None => 0,
    };
    let got = (sys.received_bytes() - bytes0) + whep1.saturating_sub(whep0);
    let rss_mb = sys.pids().iter().map(|&pid| Ok(process_rss(pid)? as f64 / 1e6)).collect::<Result<_>>()?;
    let phase = Phase {
        name: name.to_owned(),
        cores: procs.iter().map(|c| c.cpu_secs / wall).collect(),
        rss_mb,
        expected_mbps,
        received_mbps: got as f64 * 8.0 / 1e6 / wall,
        wall_secs: wall,
    };
    eprintln!(
        "ponte-bench: sizing {name}: cores {:?}, received {:.1} of {:.1} Mbit/s",
        phase.cores.iter().map(|c| (c * 1000.0).round() / 1000.0).collect::<Vec<_>>(),
        phase.received_mbps,
        phase.expected_mbps
    );
    Ok(phase)
}

/// One quality's three steps: `wanted` (`mbps` in all) to one downstream
/// of r1, to a second one, then to r2 as well; afterwards only r1's first
/// downstream keeps them.
async fn three_steps(
    sys: &mut System,
    p: &SizingParams,
    wanted: &[(u32, String, Quality)],
    mbps: f64,
    names: [&str; 3],
) -> Result<Vec<Phase>> {
    let t = Duration::from_secs(60);
    sys.r1_vms[0].subscribe_many(wanted, t).await?;
    let one = measure(sys, p, names[0], mbps, None).await?;
    sys.r1_vms[1].subscribe_many(wanted, t).await?;
    let two = measure(sys, p, names[1], 2.0 * mbps, None).await?;
    sys.r2_vms.subscribe_many(wanted, t).await?;
    let r2 = measure(sys, p, names[2], 3.0 * mbps, None).await?;
    sys.r1_vms[1].unsubscribe(ids(wanted)).await?;
    sys.r2_vms.unsubscribe(ids(wanted)).await?;
    Ok(vec![one, two, r2])
}

/// Runs calibration and validation.
pub async fn run(p: &SizingParams) -> Result<SizingResult> {
    anyhow::ensure!(
        p.tracks >= 2 && p.rtsp >= 1 && p.rtsp <= p.tracks,
        "sizing needs tracks ≥ 2 and 1 ≤ rtsp ≤ tracks"
    );
    let mut sys = System::start(p).await?;
    let (n, k, v) = (p.tracks, p.rtsp, p.viewers);
    let main = f64::from(p.replay.main_kbps) / 1e3;
    let sub = f64::from(p.replay.sub_kbps) / 1e3;
    let t = Duration::from_secs(60);
    let mut phases = Vec::new();

    phases.push(measure(&sys, p, phase::IDLE, 0.0, None).await?);

    // Substreams first: RSS is kept by the allocator, so the smaller load goes first.
    let all_sub = wants('a', 0..n, Quality::Sub);
    let steps = [phase::SUB_1, phase::SUB_2, phase::SUB_R2];
    phases.extend(three_steps(&mut sys, p, &all_sub, n as f64 * sub, steps).await?);
    sys.r1_vms[0].unsubscribe(ids(&all_sub)).await?;
    let all_main = wants('a', 0..n, Quality::Main);
    let steps = [phase::MAIN_1, phase::MAIN_2, phase::MAIN_R2];
    phases.extend(three_steps(&mut sys, p, &all_main, n as f64 * main, steps).await?);
    // Each addition below is compared with a baseline taken just before
    // it. r1 already receives the K substreams master-b will pull, so the
    // RTSP phases add only the RTSP delivery at r1.
    let k_sub = wants('a', 0..k, Quality::Sub);
    sys.r1_vms[0].subscribe_many(&k_sub, t).await?;
    let base = n as f64 * main + k as f64 * sub;
    phases.push(measure(&sys, p, phase::BEFORE_RTSP, base, None).await?);

    // Agent b pulls a-00.. from r1 over RTSP and sends them to r2.
    let b_main = wants('b', 0..k, Quality::Main);
    sys.r2_vms.subscribe_many(&b_main, t).await?;
    phases.push(measure(&sys, p, phase::RTSP_MAIN, base + k as f64 * main, None).await?);
    sys.r2_vms.unsubscribe(ids(&b_main)).await?;
    let b_sub = wants('b', 0..k, Quality::Sub);
    sys.r2_vms.subscribe_many(&b_sub, t).await?;
    phases.push(measure(&sys, p, phase::RTSP_SUB, base + k as f64 * sub, None).await?);
    sys.r2_vms.unsubscribe(ids(&b_sub)).await?;

    let browser = if v > 0 {
        phases.push(measure(&sys, p, phase::BEFORE_WHEP, base, None).await?);
        let viewers = Viewers::open(&sys.configs[0].base_url()).await?;
        let cams: Vec<String> = (0..v).map(|i| camera('a', i % n)).collect();
        viewers.play(&cams).await?;
        phases.push(measure(&sys, p, phase::WHEP, base + v as f64 * main, Some(&viewers)).await?);
        viewers.stop().await?;
        Some(viewers)
    } else {
        None
    };
    sys.r1_vms[0].unsubscribe(ids(&all_main)).await?;
    sys.r1_vms[0].unsubscribe(ids(&k_sub)).await?;

    let costs = fit(&phases, n as f64, k as f64, v as f64)?;
    let idle = phases.first().map(|p| p.cores.clone()).unwrap_or_default();

    // Validation: a mix no calibration phase had.
    let half = n / 2;
    let v2 = v.div_ceil(2);
    let r2_main = wants('a', 0..half, Quality::Main);
    sys.r2_vms.subscribe_many(&r2_main, t).await?;
    sys.r2_vms.subscribe_many(&all_sub, t).await?;
    sys.r2_vms.subscribe_many(&b_main, t).await?;
    sys.r3_vms.subscribe_many(&all_sub, t).await?;
    sys.r3_vms.subscribe_many(&b_main, t).await?;
    let (nf, kf, hf) = (n as f64, k as f64, half as f64);
    let mut expected = (hf + 2.0 * kf) * main + 2.0 * nf * sub;
    if let Some(viewers) = &browser {
        viewers.goto(&sys.configs[1].base_url()).await?;
        let cams: Vec<String> = (0..v2).map(|i| camera('a', i % half.max(1))).collect();
        viewers.play(&cams).await?;
        expected += v2 as f64 * main;
    }
    let checked = measure(&sys, p, phase::VALIDATION, expected, browser.as_ref()).await?;
    let vf = v2 as f64;
    let counts = vec![
        Counts {
            replay_main: kf.max(hf),
            replay_sub: nf,
            sent_main: kf + hf,
            sent_sub: 2.0 * nf,
            ..Counts::default()
        },
        Counts { pulled_main: kf, sent_main: 2.0 * kf, ..Counts::default() },
        Counts {
            in_main: 2.0 * kf,
            in_sub: nf,
            out_main: kf,
            out_sub: nf,
            rtsp_main: kf,
            ..Counts::default()
        },
        Counts {
            in_main: hf + kf,
            in_sub: nf,
            out_main: hf + kf,
            out_sub: nf,
            whep: vf,
            ..Counts::default()
        },
        Counts { in_main: kf, in_sub: nf, out_main: kf, out_sub: nf, ..Counts::default() },
    ];
    // Each node's own idle cost, plus what it carries.
    let predicted = counts
        .iter()
        .enumerate()
        .map(|(i, c)| idle.get(i).copied().unwrap_or_default() + costs.unit.dot(c))
        .collect();
    let validation = Validation { counts, predicted, measured: checked.cores.clone() };
    phases.push(checked);
    if let Some(viewers) = browser {
        viewers.stop().await?;
    }
    sys.shutdown().await?;
    Ok(SizingResult { phases, costs, validation, main_kbps: p.replay.main_kbps, sub_kbps: p.replay.sub_kbps })
}

/// The costs from the calibration phases, found by their [`phase`] names;
/// `v` = 0 when there was no WHEP phase.
fn fit(ph: &[Phase], n: f64, k: f64, v: f64) -> Result<Costs> {
    let find = |name: &str| {
        ph.iter().find(|p| p.name == name).with_context(|| format!("no sizing phase `{name}` was measured"))
    };
    let (idle, s1, s2, s3) =
        (find(phase::IDLE)?, find(phase::SUB_1)?, find(phase::SUB_2)?, find(phase::SUB_R2)?);
    let (m1, m2, m3) = (find(phase::MAIN_1)?, find(phase::MAIN_2)?, find(phase::MAIN_R2)?);
    let (b1, rm, rs) = (find(phase::BEFORE_RTSP)?, find(phase::RTSP_MAIN)?, find(phase::RTSP_SUB)?);
    let d = |a: &Phase, b: &Phase, node: usize| a.cores[node] - b.cores[node];
    let mut u = Counts {
        sent_main: d(m3, m2, A) / n,
        sent_sub: d(s3, s2, A) / n,
        out_main: d(m2, m1, R1) / n,
        out_sub: d(s2, s1, R1) / n,
        rtsp_main: d(rm, b1, R1) / k,
        rtsp_sub: d(rs, b1, R1) / k,
        ..Counts::default()
    };
    u.replay_main = d(m1, idle, A) / n - u.sent_main;
    u.replay_sub = d(s1, idle, A) / n - u.sent_sub;
    u.in_main = d(m1, idle, R1) / n - u.out_main;
    u.in_sub = d(s1, idle, R1) / n - u.out_sub;
    u.pulled_main = d(rm, idle, B) / k - u.sent_main;
    u.pulled_sub = d(rs, idle, B) / k - u.sent_sub;
    let mut relay_mb_whep = 0.0;
    if v > 0.0 {
        let (b2, w) = (find(phase::BEFORE_WHEP)?, find(phase::WHEP)?);
        u.whep = d(w, b2, R1) / v;
        relay_mb_whep = ((w.rss_mb[R1] - b2.rss_mb[R1]) / v).max(0.0);
    }
    // A cost under the run's noise can come out below zero: it reads 0.
    for x in u.values_mut() {
        *x = x.max(0.0);
    }
    Ok(Costs {
        // Deployments run RTSP agents: master-b's idle, not the replay agent's.
        agent_idle: idle.cores[B],
        relay_idle: (idle.cores[R1] + idle.cores[R2] + idle.cores[R3]) / 3.0,
        unit: u,
        agent_idle_mb: idle.rss_mb[B],
        relay_idle_mb: (idle.rss_mb[R1] + idle.rss_mb[R2] + idle.rss_mb[R3]) / 3.0,
        agent_mb_main: (m1.rss_mb[A] - idle.rss_mb[A]) / n,
        relay_mb_main: (m1.rss_mb[R1] - idle.rss_mb[R1]) / n,
        relay_mb_whep,
    })
}

/// The deployments of the sizing table.
pub fn deployments() -> Vec<Deployment> {
    vec![
        Deployment {
            name: "Cremona".into(),
            cameras: 105,
            lenses: 150,
            agents: 1,
            sites: 2,
            children: 0,
            subs: 150,
            mains: 16,
            viewers: 8,
            vms: 16,
        },
        Deployment {
            name: "Mid-size city".into(),
            cameras: 500,
            lenses: 700,
            agents: 2,
            sites: 4,
            children: 0,
            subs: 200,
            mains: 48,
            viewers: 16,
            vms: 48,
        },
        Deployment {
            name: "Metropolitan".into(),
            cameras: 2_000,
            lenses: 2_800,
            agents: 4,
            sites: 8,
            children: 2,
            subs: 400,
            mains: 128,
            viewers: 32,
            vms: 128,
        },
    ]
}

/// What a deployment needs, per node kind.
#[derive(Debug, Clone, Serialize)]
pub struct Need {
    /// Cores each agent uses at this load.
    pub agent_cores: f64,
    /// Agent RSS, MB.
    pub agent_mb: f64,
    /// Agent egress on the master's fibre, Mbit/s (each agent).
    pub agent_mbps: f64,
    /// Cores a site's head relay uses.
    pub head_cores: f64,
    /// Head relay RSS, MB.
    pub head_mb: f64,
    /// Fibre into each site, Mbit/s.
    pub site_mbps: f64,
    /// Cores a cascade child relay uses (0 without a cascade).
    pub child_cores: f64,
    /// Cascade child relay RSS, MB (0 without a cascade).
    pub child_mb: f64,
}

/// The model applied to a deployment. Sites watch different cameras (no
/// sharing of main streams between sites: the worst case for the agent);
/// every site keeps the same `subs` substreams on. The agent pulls every
/// lens's main stream and substream all the time (the default; a camera
/// with `on_demand = true` costs only while watched).
pub fn need(d: &Deployment, c: &Costs, main_kbps: u32, sub_kbps: u32) -> Need {
    let (agents, sites) = (d.agents as f64, d.sites as f64);
    let (subs, mains) = (d.subs as f64, d.mains as f64);
    let agent = Counts {
        sent_main: sites * mains / agents,
        sent_sub: sites * subs / agents,
        pulled_main: d.lenses as f64 / agents,
        pulled_sub: d.lenses as f64 / agents,
        ..Counts::default()
    };
    let children = d.children as f64;
    let head = Counts {
        in_main: mains,
        in_sub: subs,
        out_main: if d.children > 0 { mains } else { 0.0 },
        out_sub: children * subs,
        whep: if d.children > 0 { 0.0 } else { d.viewers as f64 },
        rtsp_main: d.vms as f64,
        // The substreams kept on feed the site's wall and VMS over RTSP.
        rtsp_sub: subs,
        ..Counts::default()
    };
    let child = Counts {
        in_main: mains / children.max(1.0),
        in_sub: subs,
        whep: d.viewers as f64 / children.max(1.0),
        ..Counts::default()
    };
    let (main, sub) = (f64::from(main_kbps) / 1e3, f64::from(sub_kbps) / 1e3);
    // RSS per substream: the GOP cache scales with the bitrate.
    let sub_share = f64::from(sub_kbps) / f64::from(main_kbps.max(1));
    Need {
        agent_cores: c.agent(&agent),
        agent_mb: c.agent_mb(&agent, sub_share),
        agent_mbps: agent.sent_main * main + agent.sent_sub * sub,
        head_cores: c.relay(&head),
        head_mb: c.relay_mb(&head, sub_share),
        site_mbps: mains * main + subs * sub,
        child_cores: if d.children > 0 { c.relay(&child) } else { 0.0 },
        child_mb: if d.children > 0 { c.relay_mb(&child, sub_share) } else { 0.0 },
    }
}

/// Cores to provision: twice the measured need (half the box free for
/// keyframe bursts, reconnect storms and the OS), at least 2.
pub fn provision_cores(need: f64) -> f64 {
    (2.0 * need).ceil().max(2.0)
}

fn pct(x: f64) -> String {
    format!("{:.2}", 100.0 * x)
}

/// Tables and checks.
pub fn tables(r: &SizingResult, p: &SizingParams) -> (Vec<Table>, Vec<Check>, Vec<String>) {
    let mut phases = Table::new(
        &format!(
            "Sizing calibration: CPU per node, % of one core ({} replay cameras on master-a, {} RTSP cameras on \
             master-b, main {} kbit/s, sub {} kbit/s, {} fps)",
            p.tracks, p.rtsp, p.replay.main_kbps, p.replay.sub_kbps, p.replay.fps
        ),
        &["phase", "master-a", "master-b", "r1", "r2", "r3", "received / expected Mbit/s"],
    );
    for ph in &r.phases {
        let mut row = vec![ph.name.clone()];
        row.extend(ph.cores.iter().map(|c| pct(*c)));
        row.push(format!("{:.1} / {:.1}", ph.received_mbps, ph.expected_mbps));
        phases.row(row);
    }
    let c = &r.costs;
    let mut model = Table::new(
        "Cost of each stream and viewer, % of one core (what the sizing table uses)",
        &["node", "what", "% of one core", "cores per 100"],
    );
    let rows: [(&str, &str, f64); 15] = [
        ("agent", "idle, links up", c.agent_idle),
        ("agent", "main stream sent to one relay", c.unit.sent_main),
        ("agent", "substream sent to one relay", c.unit.sent_sub),
        ("agent", "replay camera, main (benchmark only)", c.unit.replay_main),
        ("agent", "replay camera, substream (benchmark only)", c.unit.replay_sub),
        ("agent", "main stream pulled over RTSP", c.unit.pulled_main),
        ("agent", "substream pulled over RTSP", c.unit.pulled_sub),
        ("relay", "idle, links up", c.relay_idle),
        ("relay", "main stream received", c.unit.in_main),
        ("relay", "substream received", c.unit.in_sub),
        ("relay", "main stream to one QUIC downstream", c.unit.out_main),
        ("relay", "substream to one QUIC downstream", c.unit.out_sub),
        ("relay", "browser viewer (WHEP, main)", c.unit.whep),
        ("relay", "RTSP client, main", c.unit.rtsp_main),
        ("relay", "RTSP client, substream", c.unit.rtsp_sub),
    ];
    for (node, what, cost) in rows {
        model.row(vec![node.into(), what.into(), pct(cost), format!("{:.2}", 100.0 * cost)]);
    }
    model.row(vec![
        "agent / relay".into(),
        "RSS idle, MB".into(),
        format!("{:.1} / {:.1}", c.agent_idle_mb, c.relay_idle_mb),
        "-".into(),
    ]);
    model.row(vec![
        "agent / relay".into(),
        "RSS per main stream, MB".into(),
        format!("{:.2} / {:.2}", c.agent_mb_main, c.relay_mb_main),
        "-".into(),
    ]);
    model.row(vec![
        "relay".into(),
        "RSS per WHEP viewer, MB".into(),
        format!("{:.2}", c.relay_mb_whep),
        "-".into(),
    ]);

    let mut check = Table::new(
        "Validation: both agents, all three relays, cascade, WHEP and RTSP at once; the model's prediction against \
         the measured CPU",
        &["node", "carries", "predicted %", "measured %", "error"],
    );
    let mut worst: f64 = 0.0;
    let (mut sum_p, mut sum_m) = (0.0, 0.0);
    for (i, node) in NODES.iter().enumerate() {
        let (pr, me) = (r.validation.predicted[i], r.validation.measured[i]);
        let err = (pr - me) / me.max(1e-6);
        // Under 0.5% of a core, /proc's 10 ms ticks make a ratio meaningless.
        let shown = if me < 0.005 { "-".to_owned() } else { format!("{:+.0}%", 100.0 * err) };
        if me >= 0.005 {
            worst = worst.max(err.abs());
        }
        sum_p += pr;
        sum_m += me;
        check.row(vec![(*node).into(), describe(&r.validation.counts[i]), pct(pr), pct(me), shown]);
    }
    let total_err = (sum_p - sum_m) / sum_m.max(1e-6);
    check.row(vec!["all".into(), "".into(), pct(sum_p), pct(sum_m), format!("{:+.0}%", 100.0 * total_err)]);

    let mut sizing = Table::new(
        &format!(
            "Sizing: what each node needs (main {} kbit/s and sub {} kbit/s per lens). Cores: what to provision, twice \
             the model's need (in brackets) and at least 2; RAM: the model's RSS",
            r.main_kbps, r.sub_kbps
        ),
        &[
            "deployment",
            "cameras (lenses)",
            "per site: subs on, mains, viewers, VMS",
            "agents",
            "agent cores",
            "agent RAM MB",
            "agent uplink Mbit/s",
            "relays per site",
            "head relay cores",
            "head relay RAM MB",
            "cascade relay cores",
            "cascade relay RAM MB",
            "fibre per site Mbit/s",
        ],
    );
    let cores = |need: f64| format!("{} ({:.2})", provision_cores(need), need);
    for d in deployments() {
        let n = need(&d, c, r.main_kbps, r.sub_kbps);
        sizing.row(vec![
            d.name.clone(),
            format!("{} ({})", d.cameras, d.lenses),
            format!("{}, {}, {}, {}", d.subs, d.mains, d.viewers, d.vms),
            d.agents.to_string(),
            cores(n.agent_cores),
            format!("{:.0}", n.agent_mb),
            format!("{:.0}", n.agent_mbps),
            (1 + d.children).to_string(),
            cores(n.head_cores),
            format!("{:.0}", n.head_mb),
            if d.children > 0 { cores(n.child_cores) } else { "-".into() },
            if d.children > 0 { format!("{:.0}", n.child_mb) } else { "-".into() },
            format!("{:.0}", n.site_mbps),
        ]);
    }
    let checks = vec![Check {
        what: "model error on the whole system (validation phase)".into(),
        target: "within ±25%".into(),
        measured: format!("{:+.0}% (worst node {:.0}%)", 100.0 * total_err, 100.0 * worst),
        met: total_err.abs() <= 0.25,
    }];
    let notes = vec![
        "Costs are differences between calibration phases divided by the streams that changed: agent per stream sent \
         to one more relay = (+ r2 − 2 downstreams) / N at master-a, per replay stream made = the rest of (1 \
         downstream − idle) / N; relay per downstream copy = (2 downstreams − 1 \
         downstream) / N at r1, per stream received = the rest; per RTSP pull = master-b's CPU with K cameras \
         watched, less K streams sent; per WHEP viewer and per RTSP client = r1's CPU over the baseline measured \
         just before (N main and K substreams already at r1), divided by V or K. A cost below the run's noise \
         reads 0."
            .into(),
        "master-b's cameras are r1's own RTSP streams (`rtsp://r1/a-NN`), so the agent's RTSP ingest is real and \
         costs no encoding. Chromium decodes every WHEP viewer's video; its CPU is not a node's and is not counted."
            .into(),
        "Sizing rows assume the agent pulls every lens's main stream and substream all the time (the default; \
         `on_demand = true` cameras cost only while watched), each site watches different main streams (the agent's \
         worst case) and all sites keep the same substreams on, read by the site's wall and VMS over RTSP at \
         the head relay. A cascade's head relay serves the VMS over RTSP and feeds its child relays, which serve \
         the browsers. Idle costs: master-b's (an RTSP agent, as deployed) and the relays' mean. Memory is RSS: \
         idle plus the GOP cache of every stream (a substream counts its share of a main stream's bytes) plus \
         each WHEP viewer's."
            .into(),
    ];
    (vec![phases, model, check, sizing], checks, notes)
}

fn describe(c: &Counts) -> String {
    let mut parts = Vec::new();
    let mut add = |n: f64, what: &str| {
        if n > 0.0 {
            parts.push(format!("{n:.0} {what}"));
        }
    };
    add(c.replay_main, "main made");
    add(c.replay_sub, "sub made");
    add(c.pulled_main, "RTSP pulls");
    add(c.sent_main, "main sent");
    add(c.sent_sub, "sub sent");
    add(c.in_main, "main in");
    add(c.in_sub, "sub in");
    add(c.out_main, "main out");
    add(c.out_sub, "sub out");
    add(c.whep, "WHEP");
    add(c.rtsp_main, "RTSP clients");
    add(c.rtsp_sub, "RTSP sub clients");
    parts.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Phases as `run` would measure them if each node cost exactly `c`.
    fn synthetic_phases(c: &Costs, n: f64, k: f64, v: f64) -> Vec<Phase> {
        let at = |name: &str, nodes: [Counts; 5]| Phase {
            name: name.into(),
            cores: nodes
                .iter()
                .enumerate()
                .map(|(i, x)| if i < 2 { c.agent(x) } else { c.relay(x) })
                .collect(),
            rss_mb: vec![10.0; 5],
            expected_mbps: 0.0,
            received_mbps: 0.0,
            wall_secs: 1.0,
        };
        let none = Counts::default();
        let a = |main: f64, sub: f64, sent_main: f64, sent_sub: f64| Counts {
            replay_main: main,
            replay_sub: sub,
            sent_main,
            sent_sub,
            ..none
        };
        let r1 = |in_main: f64, in_sub: f64, out_main: f64, out_sub: f64| Counts {
            in_main,
            in_sub,
            out_main,
            out_sub,
            ..none
        };
        let base_r1 = Counts { in_main: n, in_sub: k, out_main: n, out_sub: k, ..none };
        vec![
            at(phase::IDLE, [none; 5]),
            at(phase::SUB_1, [a(0.0, n, 0.0, n), none, r1(0.0, n, 0.0, n), none, none]),
            at(phase::SUB_2, [a(0.0, n, 0.0, n), none, r1(0.0, n, 0.0, 2.0 * n), none, none]),
            at(
                phase::SUB_R2,
                [a(0.0, n, 0.0, 2.0 * n), none, r1(0.0, n, 0.0, 2.0 * n), r1(0.0, n, 0.0, n), none],
            ),
            at(phase::MAIN_1, [a(n, 0.0, n, 0.0), none, r1(n, 0.0, n, 0.0), none, none]),
            at(phase::MAIN_2, [a(n, 0.0, n, 0.0), none, r1(n, 0.0, 2.0 * n, 0.0), none, none]),
            at(
                phase::MAIN_R2,
                [a(n, 0.0, 2.0 * n, 0.0), none, r1(n, 0.0, 2.0 * n, 0.0), r1(n, 0.0, n, 0.0), none],
            ),
            at(phase::BEFORE_RTSP, [a(n, k, n, k), none, base_r1, none, none]),
            at(
                phase::RTSP_MAIN,
                [
                    a(n, k, n, k),
                    Counts { pulled_main: k, sent_main: k, ..none },
                    Counts { rtsp_main: k, ..base_r1 },
                    r1(k, 0.0, k, 0.0),
                    none,
                ],
            ),
            at(
                phase::RTSP_SUB,
                [
                    a(n, k, n, k),
                    Counts { pulled_sub: k, sent_sub: k, ..none },
                    Counts { rtsp_sub: k, ..base_r1 },
                    r1(0.0, k, 0.0, k),
                    none,
                ],
            ),
            at(phase::BEFORE_WHEP, [a(n, k, n, k), none, base_r1, none, none]),
            at(phase::WHEP, [a(n, k, n, k), none, Counts { whep: v, ..base_r1 }, none, none]),
        ]
    }

    #[test]
    fn fit_recovers_the_costs_the_phases_were_made_with() {
        let truth = Costs {
            agent_idle: 0.001,
            relay_idle: 0.001,
            unit: Counts {
                sent_main: 0.0009,
                sent_sub: 0.0007,
                replay_main: 0.0005,
                replay_sub: 0.0004,
                pulled_main: 0.0014,
                pulled_sub: 0.0009,
                in_main: 0.0014,
                in_sub: 0.001,
                out_main: 0.0006,
                out_sub: 0.0002,
                whep: 0.007,
                rtsp_main: 0.0005,
                rtsp_sub: 0.0003,
            },
            ..Costs::default()
        };
        let got =
            fit(&synthetic_phases(&truth, 60.0, 12.0, 8.0), 60.0, 12.0, 8.0).expect("every phase is there");
        assert!((got.agent_idle - truth.agent_idle).abs() < 1e-9);
        assert!((got.relay_idle - truth.relay_idle).abs() < 1e-9);
        for (i, (g, t)) in got.unit.values().iter().zip(truth.unit.values()).enumerate() {
            assert!((g - t).abs() < 1e-9, "cost {i}: fitted {g}, made with {t}");
        }
        let mut missing = synthetic_phases(&truth, 60.0, 12.0, 8.0);
        missing.retain(|p| p.name != phase::RTSP_SUB);
        let e = fit(&missing, 60.0, 12.0, 8.0).expect_err("a phase is missing");
        assert!(e.to_string().contains(phase::RTSP_SUB), "{e}");
    }

    #[test]
    fn the_model_adds_up_and_provisions_headroom() {
        let c = Costs {
            agent_idle: 0.01,
            relay_idle: 0.005,
            unit: Counts {
                sent_main: 0.002,
                pulled_main: 0.003,
                in_main: 0.001,
                out_main: 0.002,
                whep: 0.01,
                ..Counts::default()
            },
            relay_idle_mb: 10.0,
            ..Costs::default()
        };
        let a = Counts { sent_main: 10.0, pulled_main: 5.0, ..Counts::default() };
        assert!((c.agent(&a) - (0.01 + 0.02 + 0.015)).abs() < 1e-9);
        let r = Counts { in_main: 10.0, out_main: 20.0, whep: 2.0, ..Counts::default() };
        assert!((c.relay(&r) - (0.005 + 0.01 + 0.04 + 0.02)).abs() < 1e-9);
        assert_eq!(provision_cores(0.2), 2.0);
        assert_eq!(provision_cores(1.6), 4.0);
        for d in deployments() {
            let n = need(&d, &c, 4_000, 500);
            assert!(n.agent_cores > 0.0 && n.head_cores > 0.0 && n.site_mbps > 0.0, "{d:?}");
            assert_eq!(n.child_cores > 0.0, d.children > 0);
            assert_eq!(n.child_mb > 0.0, d.children > 0);
        }
    }
}
