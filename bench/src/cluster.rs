//! The system under test: the real `ponte-agent` with replay cameras, real
//! `ponte-relay`s, and bench subscribers the relays feed as cascade
//! downstreams (plus, optionally, a probe the agent feeds directly, so a
//! frame can be timed at each hop).

use crate::subscriber::{Listener, Subscriber};
use anyhow::{Context, Result};
use ponte_agent::config::recording::RecordingRule;
use ponte_proto::media::Quality;
use ponte_proto::policy::SitePolicyConfig;
use ponte_relay::cascade::DownstreamConfig;
use ponte_relay::config::WhepSection;
use ponte_tests::{
    bin_path, free_tcp_port, free_udp_port, http_get, wait_until, AgentConfig, Device, DeviceKind, Pki, Proc,
    RelayConfig, RelayTarget, ReplaySettings, Source,
};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

/// How long the cluster may take to come up.
pub const READY: Duration = Duration::from_secs(60);
/// Site id of the probe the agent feeds directly.
pub const PROBE: &str = "probe";

/// How replay cameras stream.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct Replay {
    /// Main stream, kbit/s.
    pub main_kbps: u32,
    /// Substream, kbit/s.
    pub sub_kbps: u32,
    /// Frames per second.
    pub fps: u32,
    /// Frames per GOP.
    pub gop_frames: u32,
}

impl Replay {
    /// A replay device (`source = "replay"`) with policy `tags`.
    pub fn device(&self, id: &str, kind: DeviceKind, lenses: u8, tags: &[&str]) -> Device {
        Device {
            id: id.to_owned(),
            name: id.to_owned(),
            zone: "bench".into(),
            kind,
            lenses: Some(lenses),
            tags: tags.iter().map(|t| (*t).to_owned()).collect(),
            source: Source::Replay(ReplaySettings {
                main_kbps: Some(self.main_kbps),
                sub_kbps: Some(self.sub_kbps),
                fps: Some(self.fps),
                gop_frames: Some(self.gop_frames),
            }),
            onvif: None,
        }
    }
}

/// One relay to start and the downstream sites it feeds.
#[derive(Debug, Clone)]
pub struct RelaySpec {
    /// Site id.
    pub site: String,
    /// Bench subscribers this relay dials (`[[downstream]]`).
    pub downstreams: Vec<String>,
}

/// What to start.
#[derive(Debug, Clone, Default)]
pub struct ClusterSpec {
    /// The agent's devices.
    pub devices: Vec<Device>,
    /// Cameras the catalogs must list before the cluster counts as up.
    pub cameras: usize,
    /// Relays.
    pub relays: Vec<RelaySpec>,
    /// Whether the agent also feeds a bench probe directly.
    pub probe: bool,
    /// The agent's `[[site]]` policies; `None`: every site sees every camera.
    pub sites: Option<Vec<SitePolicyConfig>>,
    /// Every relay's `[whep]` section; `None`: the defaults.
    pub whep: Option<WhepSection>,
    /// A `[[recording]]` rule recording every camera at this quality into
    /// this directory, every site allowed to play it back; `None`: no
    /// recording.
    pub recording: Option<(PathBuf, Quality)>,
}

/// A started relay.
pub struct RelayNode {
    /// The process.
    pub proc: Proc,
    /// Its config.
    pub config: RelayConfig,
    /// Bench subscribers it feeds.
    pub downstreams: Vec<Subscriber>,
}

/// The running system. Processes are killed on drop.
pub struct Cluster {
    /// The agent.
    pub agent: Proc,
    /// The relays.
    pub relays: Vec<RelayNode>,
    /// The probe fed by the agent directly.
    pub probe: Option<Subscriber>,
    /// The agent's config, to rewrite for a reload.
    pub agent_config: AgentConfig,
    /// Where agent.toml is.
    pub agent_toml: PathBuf,
    /// The agent's management port (`/status`, `/metrics`).
    pub agent_mgmt: String,
    // Dropped last: the processes may hold files in it.
    _dir: tempfile::TempDir,
}

/// Starts `bin run --config <config>`. For profiling, the command can be
/// wrapped: `PONTE_BENCH_WRAP_AGENT` / `PONTE_BENCH_WRAP_RELAY` hold a
/// prefix such as `valgrind --tool=callgrind --callgrind-out-file=/tmp/cg.%p`;
/// `PONTE_BENCH_CALLGRIND=<dir>` wraps the relay in callgrind and counts
/// its instructions over each measured window ([`crate::callgrind`]).
pub fn spawn(bin: &str, label: &str, config: &std::path::Path, env: &[(&str, &str)]) -> Result<Proc> {
    let wrap_var = if bin == "ponte-agent" { "PONTE_BENCH_WRAP_AGENT" } else { "PONTE_BENCH_WRAP_RELAY" };
    let mut wrap = std::env::var(wrap_var).unwrap_or_default();
    if let (true, "ponte-relay", Some(dir)) = (wrap.is_empty(), bin, crate::callgrind::dir()) {
        wrap = format!("valgrind --tool=callgrind --callgrind-out-file={}/relay.%p", dir.display());
    }
    let mut words = wrap.split_whitespace();
    let mut cmd = match words.next() {
        Some(program) => {
            let mut c = std::process::Command::new(program);
            c.args(words).arg(bin_path(bin)?);
            c
        }
        None => std::process::Command::new(bin_path(bin)?),
    };
    cmd.arg("run").arg("--config").arg(config);
    cmd.env("RUST_LOG", std::env::var("PONTE_BENCH_LOG").unwrap_or_else(|_| "warn".into()));
    for (k, v) in env {
        cmd.env(k, v);
    }
    Proc::spawn_command(label, cmd)
}

/// Writes `config` into `dir` and starts the relay. No linger: a track the
/// bench leaves stops crossing the link at once, so each measurement sees
/// only what it asks for.
pub fn spawn_relay(config: &RelayConfig, dir: &std::path::Path) -> Result<Proc> {
    let site = &config.relay.site;
    let toml = config.write(dir.join(format!("relay-{site}.toml")))?;
    spawn("ponte-relay", site, &toml, &[("PONTE_RELAY__LINGER_SECS", "0")])
}

/// Waits until every relay's HTTP listener answers.
pub async fn wait_http<'a>(configs: impl IntoIterator<Item = &'a RelayConfig>) -> Result<()> {
    for c in configs {
        let base = c.base_url();
        wait_until("the relay's HTTP listener", READY, Duration::from_millis(50), || async {
            http_get(&format!("{base}/")).await.map(Some)
        })
        .await?;
    }
    Ok(())
}

/// Accepts the session a relay dials to `listener`, in the background, and
/// waits until its catalog lists `cameras`. Start every listener's accept
/// at once: a dial left waiting in the accept queue would time out its
/// handshake.
pub fn accept_in_background(
    listener: Listener,
    cameras: usize,
) -> tokio::task::JoinHandle<Result<Subscriber>> {
    tokio::spawn(async move {
        let mut s = listener.accept(READY).await?;
        s.wait_catalog(cameras, READY).await?;
        anyhow::Ok(s)
    })
}

impl Cluster {
    /// Starts relays, then the agent; returns once every subscriber's
    /// catalog lists `spec.cameras` cameras.
    pub async fn start(spec: ClusterSpec) -> Result<Cluster> {
        let dir = tempfile::Builder::new().prefix("ponte-bench-").tempdir().context("creating a temp dir")?;
        let mut sites = vec!["master".to_owned()];
        for r in &spec.relays {
            sites.push(r.site.clone());
            sites.extend(r.downstreams.iter().cloned());
        }
        if spec.probe {
            sites.push(PROBE.into());
        }
        let site_refs: Vec<&str> = sites.iter().map(String::as_str).collect();
        let pki = Pki::create(dir.path().join("pki"), &site_refs).await?;
        let localhost = |port| SocketAddr::from((Ipv4Addr::LOCALHOST, port));

        let mut relays = Vec::new();
        let mut listeners = Vec::new();
        for r in &spec.relays {
            let mut config = RelayConfig::new(
                &r.site,
                localhost(free_udp_port()),
                localhost(free_tcp_port()),
                pki.tls(&r.site),
            );
            if let Some(whep) = &spec.whep {
                config.whep = whep.clone();
            }
            let mut mine = Vec::new();
            for d in &r.downstreams {
                let l = Listener::listen(&pki, d)?;
                config.downstreams.push(DownstreamConfig {
                    site: d.clone(),
                    addr: l.addr()?,
                    server_name: None,
                });
                mine.push(l);
            }
            let proc = spawn_relay(&config, dir.path())?;
            relays.push(RelayNode { proc, config, downstreams: Vec::new() });
            listeners.push(mine);
        }
        wait_http(relays.iter().map(|r| &r.config)).await?;
        let probe = if spec.probe { Some(Listener::listen(&pki, PROBE)?) } else { None };
        let mut targets: Vec<RelayTarget> = relays
            .iter()
            .map(|r| RelayTarget::new(&r.config.relay.site, r.config.relay.quic_listen))
            .collect();
        if let Some(p) = &probe {
            targets.push(RelayTarget::new(PROBE, p.addr()?));
        }
        let mut agent_config = AgentConfig::new("master", pki.tls("master"), targets, spec.devices.clone());
        if let Some(sites) = &spec.sites {
            agent_config.sites = sites.clone();
        }
        // A known port: the agent logs the one it picks at info, below the
        // bench's `warn`.
        let mgmt = localhost(free_tcp_port());
        agent_config.management.listen = mgmt;
        if let Some((dir, quality)) = &spec.recording {
            agent_config.recordings.dir = dir.clone();
            agent_config.recording = vec![RecordingRule {
                name: "all".into(),
                cameras: vec!["*".into()],
                except: Vec::new(),
                quality: *quality,
                retention_hours: 1.0,
                max_gb: 100.0,
            }];
            for site in &mut agent_config.sites {
                site.playback = true;
            }
        }
        let agent_toml = agent_config.write(dir.path().join("agent.toml"))?;
        let agent = spawn("ponte-agent", "agent", &agent_toml, &[])?;

        let accept = |l: Listener| accept_in_background(l, spec.cameras);
        let pending: Vec<Vec<_>> =
            listeners.into_iter().map(|mine| mine.into_iter().map(accept).collect()).collect();
        let probe = probe.map(accept);
        for (relay, mine) in relays.iter_mut().zip(pending) {
            for task in mine {
                relay.downstreams.push(task.await.context("accept task")??);
            }
        }
        let probe = match probe {
            Some(task) => Some(task.await.context("accept task")??),
            None => None,
        };
        for relay in &relays {
            ponte_tests::wait_catalog(&relay.config.base_url(), spec.cameras, READY).await?;
        }
        Ok(Cluster {
            agent,
            relays,
            probe,
            agent_config,
            agent_toml,
            agent_mgmt: format!("http://{mgmt}"),
            _dir: dir,
        })
    }

    /// Stops the agent, then the relays, with SIGTERM (a profiler wrapping
    /// them writes its data on a clean exit), SIGKILL after 20 s.
    pub async fn shutdown(mut self) -> Result<()> {
        self.agent.terminate(Duration::from_secs(20)).await?;
        for r in &mut self.relays {
            r.proc.terminate(Duration::from_secs(20)).await?;
        }
        Ok(())
    }

    /// Pids of the agent and each relay, in that order.
    pub fn pids(&self) -> Vec<u32> {
        std::iter::once(self.agent.pid()).chain(self.relays.iter().map(|r| r.proc.pid())).collect()
    }

    /// The agent's `/status` document.
    pub async fn agent_status(&self) -> Result<serde_json::Value> {
        http_get(&format!("{}/status", self.agent_mgmt)).await?.ensure_success()?.json()
    }

    /// Media bytes each relay has received from the agent (`/api/status`).
    pub async fn relay_bytes_received(&self) -> Result<Vec<u64>> {
        let mut out = Vec::new();
        for r in &self.relays {
            let v =
                http_get(&format!("{}/api/status", r.config.base_url())).await?.ensure_success()?.json()?;
            out.push(v["bytes_received"].as_u64().context("no bytes_received in relay status")?);
        }
        Ok(out)
    }
}
