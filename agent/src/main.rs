//! ponte-agent: runs at the master room, pulls each camera once and fans the
//! streams out over QUIC to the partner relays.

mod cameras;
mod config;
mod demo;
mod inventory;
mod pattern;
mod pki;
mod synthetic;
mod uplink;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use config::AgentConfig;
use ponte_proto::tls::{self, Identity, TransportOptions};
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use tokio::sync::watch;

#[derive(Parser)]
#[command(name = "ponte-agent", version, about = "ponte agent: cameras in, QUIC out to partner relays")]
struct Cli {
    /// Log format.
    #[arg(long, global = true, default_value = "text", value_parser = ["text", "json"])]
    log_format: String,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the agent with a config file.
    Run {
        /// Path of agent.toml.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Run the whole system on loopback: synthetic Cremona cameras, two relays.
    Demo(demo::DemoArgs),
    /// Manage the deployment's certificate authority.
    Pki {
        #[command(subcommand)]
        cmd: PkiCmd,
    },
}

#[derive(Subcommand)]
enum PkiCmd {
    /// Create a new CA (ca.pem, ca.key) in DIR.
    Init {
        /// Directory for the PKI files.
        #[arg(long)]
        dir: PathBuf,
        /// CA common name.
        #[arg(long, default_value = "ponte deployment CA")]
        name: String,
    },
    /// Issue a certificate for a site or node (SITE.pem, SITE.key).
    Issue {
        /// Directory holding the CA.
        #[arg(long)]
        dir: PathBuf,
        /// Site id (e.g. carabinieri, questura, master).
        #[arg(long)]
        site: String,
        /// Extra DNS names the node is reached by.
        #[arg(long)]
        dns: Vec<String>,
        /// IP addresses the node is reached by.
        #[arg(long)]
        ip: Vec<IpAddr>,
        /// Validity in days.
        #[arg(long, default_value_t = 825)]
        days: u32,
    },
}

fn init_logging(format: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    if format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// A running agent: cameras and one uplink per relay.
pub struct Agent {
    links: Vec<(String, watch::Receiver<uplink::LinkState>)>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    _cameras: Arc<cameras::Cameras>,
}

impl Agent {
    /// Starts cameras and uplinks.
    pub fn start(cfg: AgentConfig) -> Result<Self> {
        let id = Identity::load(&cfg.tls.ca, &cfg.tls.cert, &cfg.tls.key).context("loading `[tls]` files")?;
        let opts = TransportOptions { gso: cfg.transport.gso, ..Default::default() };
        let client = tls::client_config(&id, &opts)?;
        let any6 = std::net::SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, 0));
        let any4 = std::net::SocketAddr::from((std::net::Ipv4Addr::UNSPECIFIED, 0));
        let endpoint = quinn::Endpoint::client(any6)
            .or_else(|_| quinn::Endpoint::client(any4))
            .context("opening the QUIC socket")?;
        let cameras = Arc::new(cameras::Cameras::start(&cfg.devices));
        let mut links = Vec::new();
        let mut tasks = Vec::new();
        for target in cfg.relays {
            let site = target.site.clone();
            let (state, task) = uplink::spawn(
                cfg.agent.id.clone(),
                target,
                endpoint.clone(),
                client.clone(),
                cameras.clone(),
            );
            links.push((site, state));
            tasks.push(task);
        }
        tracing::info!(
            node = %cfg.agent.id,
            cameras = cameras.catalog().len(),
            relays = links.len(),
            "agent started"
        );
        Ok(Self { links, tasks, _cameras: cameras })
    }

    /// State of each relay link.
    pub fn links(&self) -> Vec<(String, watch::Receiver<uplink::LinkState>)> {
        self.links.clone()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() -> Result<()> {
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            r = tokio::signal::ctrl_c() => r?,
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    tokio::signal::ctrl_c().await?;
    tracing::info!("shutting down");
    Ok(())
}

#[tokio::main]
async fn main() -> Result<()> {
    let cli = Cli::parse();
    init_logging(&cli.log_format);
    match cli.cmd {
        Cmd::Run { config } => {
            let cfg = AgentConfig::load(&config)?;
            let _agent = Agent::start(cfg)?;
            shutdown_signal().await
        }
        Cmd::Demo(args) => demo::run(args).await,
        Cmd::Pki { cmd: PkiCmd::Init { dir, name } } => {
            let path = pki::init(&dir, &name)?;
            println!("created CA {}", path.display());
            Ok(())
        }
        Cmd::Pki { cmd: PkiCmd::Issue { dir, site, dns, ip, days } } => {
            let (cert, key) = pki::issue(&dir, &site, &dns, &ip, days)?;
            println!("issued {} and {}", cert.display(), key.display());
            Ok(())
        }
    }
}
