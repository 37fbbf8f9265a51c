//! The rig: a relay, the downstream relay the test plays, an agent, and the fibre between them.

use crate::{DOWNSTREAM, SITE, T};
use anyhow::{Context, Result};
use ponte_relay::cascade::DownstreamConfig;
use ponte_tests::netns::NetnsPair;
use ponte_tests::quic::FakeRelay;
use ponte_tests::{
    bin_path, free_tcp_port, free_udp_port, wait_catalog, AgentConfig, Device, DeviceExt, Pki, Proc,
    RelayConfig, RelayTarget,
};
use serde_json::Value;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Instant;

pub(crate) fn localhost(port: u16) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, port))
}

pub(crate) fn cut_secs() -> u64 {
    std::env::var("PONTE_FIBRE_CUT_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(30)
}

/// Synthetic cameras `cam-0`..`cam-{n-1}`.
pub(crate) fn cameras(n: usize) -> Vec<Device> {
    (0..n).map(|i| Device::synthetic(&format!("cam-{i}"))).collect()
}

pub(crate) fn spawn_node(bin: &str, label: &str, config: &Path) -> Result<Proc> {
    let mut cmd = std::process::Command::new(bin_path(bin)?);
    cmd.arg("run").arg("--config").arg(config).env("RUST_LOG", "info");
    Proc::spawn_command(label, cmd)
}

/// A relay with a downstream relay the test plays, an agent, and their files.
pub(crate) struct Rig {
    pub(crate) dir: tempfile::TempDir,
    _pki: Pki,
    pub(crate) downstream: FakeRelay,
    relay_config: RelayConfig,
    relay_toml: PathBuf,
    pub(crate) agent_toml: PathBuf,
    pub(crate) relay: Proc,
    pub(crate) agent: Proc,
    mgmt: String,
}

pub(crate) struct RigSpec {
    pub(crate) devices: Vec<Device>,
    /// An RTSP server (TCP only) on `127.0.0.1:port`.
    pub(crate) rtsp_port: Option<u16>,
    /// Cut-able fibre between agent and relay.
    pub(crate) fibre: bool,
}

/// The fibre: the namespaces and the forwarder into namespace B.
pub(crate) struct Fibre {
    pub(crate) net: NetnsPair,
    _forward: ponte_tests::netns::UdpForward,
}

impl Rig {
    pub(crate) async fn start(spec: RigSpec) -> Result<(Rig, Option<Fibre>)> {
        let dir = tempfile::Builder::new().prefix("ponte-faults-").tempdir()?;
        let pki = Pki::create(dir.path().join("pki"), &["master", SITE, DOWNSTREAM]).await?;
        let downstream = FakeRelay::listen(&pki, DOWNSTREAM)?;
        let mut relay_config =
            RelayConfig::new(SITE, localhost(free_udp_port()), localhost(free_tcp_port()), pki.tls(SITE));
        relay_config.downstreams = vec![DownstreamConfig {
            site: DOWNSTREAM.into(),
            addr: downstream.endpoint.local_addr()?,
            server_name: None,
        }];
        if let Some(port) = spec.rtsp_port {
            relay_config.rtsp_on(port).udp = false;
        }
        let relay_toml = relay_config.write(dir.path().join("relay.toml"))?;
        let (fibre, relay_addr) = if spec.fibre {
            let net = NetnsPair::create("fault")?;
            let forward = net.forward_udp(&net.b, 7443, relay_config.relay.quic_listen)?;
            let addr = SocketAddr::from((net.b.addr, 7443));
            (Some(Fibre { net, _forward: forward }), addr)
        } else {
            (None, relay_config.relay.quic_listen)
        };
        let agent_config = AgentConfig::new(
            "master",
            pki.tls("master"),
            vec![RelayTarget::new(SITE, relay_addr)],
            spec.devices,
        );
        let agent_toml = agent_config.write(dir.path().join("agent.toml"))?;
        let mut relay = spawn_node("ponte-relay", "relay", &relay_toml)?;
        let mgmt = relay.management_url(T).await?;
        let agent = match &fibre {
            // Inside namespace A: the agent's side of the fibre.
            Some(f) => {
                let mut cmd = f.net.command(&f.net.a, bin_path("ponte-agent")?);
                cmd.arg("run").arg("--config").arg(&agent_toml).env("RUST_LOG", "info");
                Proc::spawn_command("agent", cmd)?
            }
            None => spawn_node("ponte-agent", "agent", &agent_toml)?,
        };
        let rig =
            Rig { dir, _pki: pki, downstream, relay_config, relay_toml, agent_toml, relay, agent, mgmt };
        Ok((rig, fibre))
    }

    pub(crate) fn base(&self) -> String {
        self.relay_config.base_url()
    }

    /// Waits for the relay's catalog to list `n` cameras.
    pub(crate) async fn catalog(&self, n: usize) -> Result<Value> {
        wait_catalog(&self.base(), n, T).await
    }

    /// `ponte-relay status --url <management>`: its exit code.
    pub(crate) async fn status_exit(&self) -> Result<i32> {
        let out = tokio::process::Command::new(bin_path("ponte-relay")?)
            .args(["status", "--url", &self.mgmt])
            .output()
            .await?;
        out.status.code().context("status CLI killed by a signal")
    }

    /// Restarts the relay (SIGKILL, then the same config).
    pub(crate) async fn restart_relay(&mut self) -> Result<Instant> {
        self.relay.kill();
        let started = Instant::now();
        self.relay = spawn_node("ponte-relay", "relay", &self.relay_toml)?;
        self.mgmt = self.relay.management_url(T).await?;
        Ok(started)
    }
}

pub(crate) fn assert_running(procs: &mut [&mut Proc]) {
    for p in procs {
        assert!(p.is_running(), "{} exited: no process may restart during the fault", p.label());
    }
}
