//! The usual end-to-end setup in one call: PKI, one relay, one agent, and
//! the relay's catalog listing the agent's cameras.

use crate::config::{AgentConfig, Device, RelayConfig, RelayTarget};
use crate::{bin_path, free_tcp_port, free_udp_port, http_get, wait_catalog_as, wait_until, Pki, Proc};
use anyhow::{Context, Result};
use serde_json::Value;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::Duration;

/// What to start. `Default` gives site `carabinieri`, agent `master`, no
/// devices and a 30 s readiness budget.
#[derive(Clone, Debug)]
pub struct StackSpec {
    pub agent_id: String,
    pub relay_site: String,
    pub devices: Vec<Device>,
    /// Raw TOML appended to agent.toml (start with a table header).
    pub agent_extra: String,
    /// Raw TOML appended to relay.toml (start with a table header).
    pub relay_extra: String,
    /// Cameras the catalog must list before the stack counts as up; `None`
    /// means every camera of every device.
    pub expect_cameras: Option<usize>,
    /// Budget for the relay's HTTP to answer and for the catalog to fill.
    pub ready_timeout: Duration,
    /// Bearer token the readiness check sends to `/api/catalog`: a relay
    /// with accounts (`[[viewer]]`/`[[token]]` in `relay_extra`) answers 401
    /// without one.
    pub catalog_token: Option<String>,
}

impl Default for StackSpec {
    fn default() -> Self {
        StackSpec {
            agent_id: "master".into(),
            relay_site: "carabinieri".into(),
            devices: Vec::new(),
            agent_extra: String::new(),
            relay_extra: String::new(),
            expect_cameras: None,
            ready_timeout: Duration::from_secs(30),
            catalog_token: None,
        }
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
        let relay_config = RelayConfig {
            site: spec.relay_site.clone(),
            quic_listen: localhost(free_udp_port()),
            http_listen: localhost(free_tcp_port()),
            tls: pki.tls(&spec.relay_site),
            extra: spec.relay_extra.clone(),
        };
        let agent_config = AgentConfig {
            id: spec.agent_id.clone(),
            tls: pki.tls(&spec.agent_id),
            relays: vec![RelayTarget { site: spec.relay_site.clone(), addr: relay_config.quic_listen }],
            devices: spec.devices.clone(),
            extra: spec.agent_extra.clone(),
        };
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

fn spawn_node(bin: &str, config: &Path) -> Result<Proc> {
    let mut cmd = std::process::Command::new(bin_path(bin)?);
    cmd.arg("run").arg("--config").arg(config);
    if std::env::var_os("RUST_LOG").is_none() {
        cmd.env("RUST_LOG", "info");
    }
    Proc::spawn_command(bin, cmd)
}
