//! The usual end-to-end setup in one call: PKI, one relay, one agent, and
//! the relay's catalog listing the agent's cameras.

use crate::config::{AgentConfig, Device, RelayConfig, RelayTarget};
use crate::{bin_path, free_tcp_port, free_udp_port, http_get, wait_catalog_as, wait_until, Pki, Proc};
use anyhow::{Context, Result};
use serde_json::Value;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// What to start. `Default` gives site `carabinieri`, agent `master`, no
/// devices and a 30 s readiness budget.
#[derive(Clone, Debug)]
pub struct StackSpec {
    pub agent_id: String,
    pub relay_site: String,
    pub devices: Vec<Device>,
    /// Changes to agent.toml after the harness set relays, TLS and defaults
    /// (sites, operators, `[ptz]`...).
    pub agent: Tweak<AgentConfig>,
    /// Changes to relay.toml after the harness set ports, TLS and defaults
    /// (accounts, `[rtsp]`, `[whep]`...).
    pub relay: Tweak<RelayConfig>,
    /// Cameras the catalog must list before the stack counts as up; `None`
    /// means every camera of every device.
    pub expect_cameras: Option<usize>,
    /// Budget for the relay's HTTP to answer and for the catalog to fill.
    pub ready_timeout: Duration,
    /// Bearer token the readiness check sends to `/api/catalog`: a relay
    /// with accounts (`[[viewer]]`/`[[token]]`) answers 401
    /// without one.
    pub catalog_token: Option<String>,
}

impl Default for StackSpec {
    fn default() -> Self {
        StackSpec {
            agent_id: "master".into(),
            relay_site: "carabinieri".into(),
            devices: Vec::new(),
            agent: Tweak::default(),
            relay: Tweak::default(),
            expect_cameras: None,
            ready_timeout: Duration::from_secs(30),
            catalog_token: None,
        }
    }
}

/// A change a test makes to a config the harness built:
/// `Tweak::relay(move |r| r.rtsp_on(port).basic = true)`. The default
/// changes nothing.
pub struct Tweak<T>(Option<Arc<Change<T>>>);

/// The change itself.
type Change<T> = dyn Fn(&mut T) + Send + Sync;

impl<T> Tweak<T> {
    /// `f` applied to the config.
    pub fn new(f: impl Fn(&mut T) + Send + Sync + 'static) -> Self {
        Tweak(Some(Arc::new(f)))
    }

    /// Applies the change to `config`.
    pub fn apply(&self, config: &mut T) {
        if let Some(f) = &self.0 {
            f(config);
        }
    }
}

impl Tweak<AgentConfig> {
    /// A change to agent.toml (names the type for the closure).
    pub fn agent(f: impl Fn(&mut AgentConfig) + Send + Sync + 'static) -> Self {
        Tweak::new(f)
    }
}

impl Tweak<AgentConfig> {
    /// Records every camera's main stream into `dir` (`[[recording]]
    /// "all"`, kept an hour, segments of `segment_secs`), and lets every
    /// site play back and export.
    pub fn record_all(dir: &Path, segment_secs: u64) -> Self {
        let dir = dir.to_owned();
        Tweak::agent(move |a| {
            a.recordings.dir = dir.clone();
            a.recordings.segment_secs = segment_secs;
            a.recording = vec![ponte_agent::config::recording::RecordingRule {
                name: "all".into(),
                cameras: vec!["*".into()],
                except: Vec::new(),
                quality: ponte_proto::media::Quality::Main,
                retention_hours: 1.0,
                max_gb: 1.0,
            }];
            for site in &mut a.sites {
                site.playback = true;
                site.export = true;
            }
        })
    }
}

impl Tweak<RelayConfig> {
    /// A change to relay.toml (names the type for the closure).
    pub fn relay(f: impl Fn(&mut RelayConfig) + Send + Sync + 'static) -> Self {
        Tweak::new(f)
    }
}

impl<T> Default for Tweak<T> {
    fn default() -> Self {
        Tweak(None)
    }
}

impl<T> Clone for Tweak<T> {
    fn clone(&self) -> Self {
        Tweak(self.0.clone())
    }
}

impl<T> std::fmt::Debug for Tweak<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() { "Tweak(..)" } else { "Tweak(none)" })
    }
}

/// A running relay and agent. Processes are killed and files removed on drop.
pub struct Stack {
    pub agent: Proc,
    pub relay: Proc,
    pub pki: Pki,
    pub agent_config: AgentConfig,
    pub relay_config: RelayConfig,
    /// The catalog as first seen complete.
    pub catalog: Value,
    // Dropped last: the processes above may still hold files in it.
    dir: tempfile::TempDir,
}

impl Stack {
    /// Start a relay and an agent with `devices` and default settings.
    pub async fn start(devices: Vec<Device>) -> Result<Stack> {
        Stack::start_with(StackSpec { devices, ..StackSpec::default() }).await
    }

    /// Start from a full [`StackSpec`].
    pub async fn start_with(spec: StackSpec) -> Result<Stack> {
        let dir =
            tempfile::Builder::new().prefix("ponte-e2e-").tempdir().context("creating the test directory")?;
        let pki =
            Pki::create(dir.path().join("pki"), &[spec.agent_id.as_str(), spec.relay_site.as_str()]).await?;
        let localhost = |port| SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let mut relay_config = RelayConfig::new(
            &spec.relay_site,
            localhost(free_udp_port()),
            localhost(free_tcp_port()),
            pki.tls(&spec.relay_site),
        );
        spec.relay.apply(&mut relay_config);
        let mut agent_config = AgentConfig::new(
            &spec.agent_id,
            pki.tls(&spec.agent_id),
            vec![RelayTarget::new(&spec.relay_site, relay_config.relay.quic_listen)],
            spec.devices.clone(),
        );
        spec.agent.apply(&mut agent_config);
        let relay_toml = relay_config.write(dir.path().join("relay.toml"))?;
        let agent_toml = agent_config.write(dir.path().join("agent.toml"))?;

        let relay = spawn_node("ponte-relay", &relay_toml)?;
        let base = relay_config.base_url();
        // Any HTTP answer will do: the relay is listening. (Its catalog may
        // well refuse to answer before an agent connects.)
        wait_until("the relay's HTTP listener", spec.ready_timeout, Duration::from_millis(50), || async {
            http_get(&format!("{base}/")).await.map(Some)
        })
        .await
        .context("relay HTTP never came up")?;
        let agent = spawn_node("ponte-agent", &agent_toml)?;
        let cameras = spec.expect_cameras.unwrap_or_else(|| agent_config.camera_ids().len());
        let catalog = wait_catalog_as(&base, cameras, spec.ready_timeout, spec.catalog_token.as_deref())
            .await
            .context("the agent's cameras never reached the relay's catalog")?;
        Ok(Stack { agent, relay, pki, agent_config, relay_config, catalog, dir })
    }

    /// `http://127.0.0.1:<relay http port>`.
    pub fn base_url(&self) -> String {
        self.relay_config.base_url()
    }

    /// The directory holding the PKI and configs.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

/// `BIN run --config CONFIG` (`RUST_LOG=info` unless set), its output captured.
pub fn spawn_node(bin: &str, config: &Path) -> Result<Proc> {
    let mut cmd = std::process::Command::new(bin_path(bin)?);
    cmd.arg("run").arg("--config").arg(config);
    if std::env::var_os("RUST_LOG").is_none() {
        cmd.env("RUST_LOG", "info");
    }
    Proc::spawn_command(bin, cmd)
}
