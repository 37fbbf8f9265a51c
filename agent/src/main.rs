//! ponte-agent: runs at the master room, pulls each camera once and fans the
//! streams out over QUIC to the partner relays.

mod access;
mod cameras;
mod config;
mod demo;
#[cfg(test)]
mod fuzz_targets;
mod inventory;
mod onvif;
mod operators;
mod pattern;
mod pki;
mod ptz;
mod ptz_sim;
mod redial;
mod replay;
mod rtsp;
mod status;
mod supervision;
mod synthetic;
mod uplink;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use config::AgentConfig;
use ponte_proto::session;
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
    /// Print the agent's status for on-call staff; exit 0 ok, 1 degraded, 2 down, 3 unreachable.
    Status {
        /// Management URL of the agent.
        #[arg(long, default_value = "http://127.0.0.1:9090")]
        url: String,
        /// Print the JSON document instead of the table.
        #[arg(long)]
        json: bool,
        /// Refresh every N seconds until interrupted.
        #[arg(long, value_name = "SECS", num_args = 0..=1, default_missing_value = "2")]
        watch: Option<u64>,
    },
    /// Run the whole system on loopback: synthetic Cremona cameras, two relays.
    Demo(demo::DemoArgs),
    /// Inspect the per-site access policy.
    Policy {
        #[command(subcommand)]
        cmd: PolicyCmd,
    },
    /// Check a config as `run` would load it; exit 0 OK, 1 with every problem listed.
    Config {
        #[command(subcommand)]
        cmd: ConfigCmd,
    },
    /// Check the audit log.
    Audit {
        #[command(subcommand)]
        cmd: AuditCmd,
    },
    /// Manage the deployment's certificate authority.
    Pki {
        #[command(subcommand)]
        cmd: PkiCmd,
    },
    /// Make `[[operator]]` entries for the master-room PTZ API.
    Operator {
        #[command(subcommand)]
        cmd: OperatorCmd,
    },
}

#[derive(Subcommand)]
enum OperatorCmd {
    /// Read a password from stdin and print an `[[operator]]` table with its argon2id hash (HTTP Basic).
    Passwd {
        /// Operator name (the Basic user name, and the name in the audit log).
        #[arg(long)]
        name: String,
    },
    /// Print a new random bearer token and the `[[operator]]` table holding its SHA-256.
    Token {
        /// Operator (or script) name in the audit log.
        #[arg(long)]
        name: String,
    },
}

#[derive(Subcommand)]
enum PolicyCmd {
    /// Print which cameras a site may see, at what quality, and which rule decided.
    Explain {
        /// Path of agent.toml.
        #[arg(long, short)]
        config: PathBuf,
        /// Site id.
        #[arg(long)]
        site: String,
        /// Only this camera.
        #[arg(long)]
        camera: Option<String>,
        /// Evaluate at this local time (`2026-11-25T21:30`, policy time zone) instead of now.
        #[arg(long)]
        at: Option<String>,
    },
}

#[derive(Subcommand)]
enum ConfigCmd {
    /// Load the config (environment overrides included), read the files it names, report every problem.
    Check {
        /// Path of agent.toml.
        #[arg(long, short)]
        config: PathBuf,
    },
}

#[derive(Subcommand)]
enum AuditCmd {
    /// Verify the hash chain of an audit log (and its rotated files); exit 1 at the first broken line.
    Verify {
        /// The live file (rotated `.N` files beside it are included), or files oldest first.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Accept a chain that starts after lines that are not there and
        /// that no `audit-file-deleted` line accounts for (part of an
        /// archive, or files an older ponte deleted silently).
        #[arg(long)]
        allow_missing_start: bool,
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

/// Text lines escape control characters (log injection); see `ponte_proto::logging`.
fn init_logging(format: &str) {
    ponte_proto::logging::init(format);
}

/// A running agent: cameras and one uplink per relay.
pub struct Agent {
    links: Vec<(String, watch::Receiver<uplink::LinkState>)>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    _cameras: Arc<cameras::Cameras>,
    access: watch::Sender<Arc<access::Access>>,
    config: AgentConfig,
    status: ponte_proto::mgmt::StatusFeed,
    ptz: ptz::PtzService,
    /// Who may use the management port's control routes.
    operators: Arc<operators::OperatorAuth>,
    /// The QUIC endpoint every uplink dials from.
    endpoint: quinn::Endpoint,
}

/// How long a shutting-down agent waits for its session closes to go out.
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(1);

impl Agent {
    /// Starts cameras and uplinks.
    pub fn start(cfg: AgentConfig) -> Result<Self> {
        let id = Identity::load(&cfg.tls.ca, &cfg.tls.cert, &cfg.tls.key).context("loading `[tls]` files")?;
        let opts = TransportOptions { gso: cfg.transport.gso, ..Default::default() };
        let client = tls::client_config(&id, &opts)?;
        let any6 = std::net::SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, 0));
        let any4 = std::net::SocketAddr::from((std::net::Ipv4Addr::UNSPECIFIED, 0));
        let endpoint = ponte_proto::endpoint::bind(any6, None)
            .or_else(|_| ponte_proto::endpoint::bind(any4, None))
            .context("opening the QUIC socket")?;
        let audit = cfg.audit.open(&cfg.agent.id)?;
        let (access, access_rx) = watch::channel(Arc::new(access::Access::new(&cfg)?));
        let operators = operators::Operators::from_config(&cfg.operators)?;
        if operators.len() == 0 {
            tracing::warn!(
                "no [[operator]] configured: the master-room PTZ API answers 403 until one is added \
                 (`ponte-agent operator passwd --name NAME`)"
            );
        }
        let cameras = Arc::new(cameras::Cameras::start(&cfg.devices));
        let audit = Arc::new(audit);
        let operators = Arc::new(operators::OperatorAuth::new(operators, audit.clone()));
        let clock = uplink::Clock::from_env(&cfg.policy.timezone)?;
        let ptz = ptz::PtzService::start(ptz::Setup {
            config: cfg.ptz.arbiter(),
            cameras: cameras.clone(),
            access: access_rx.clone(),
            clock,
            audit: audit.clone(),
            devices: ptz::devices(&cfg.devices)?,
        });
        let shared = uplink::Shared {
            node: cfg.agent.id.clone(),
            cameras: cameras.clone(),
            access: access_rx,
            audit,
            clock,
            shaping: uplink::ShapingBoard::default(),
            limits: Arc::new(uplink::SessionLimits {
                max_subscriptions: cfg.agent.max_subscriptions_per_session,
                ..Default::default()
            }),
            ptz: ptz.clone(),
        };
        let mut links = Vec::new();
        let mut tasks = Vec::new();
        for target in cfg.relays.clone() {
            let site = target.site.clone();
            if !cfg.sites.iter().any(|p| p.id == site) {
                tracing::warn!(site = %site, "no [[site]] policy for this relay: it will see no camera");
            }
            let (state, task) = uplink::spawn(target, endpoint.clone(), client.clone(), shared.clone());
            links.push((site, state));
            tasks.push(task);
        }
        tracing::info!(
            node = %cfg.agent.id,
            cameras = cameras.catalog().len(),
            relays = links.len(),
            audit = %cfg.audit.path.display(),
            retention = %cfg.audit.retention().describe(),
            "agent started"
        );
        let status = status::spawn_sampler(status::Sources {
            node: cfg.agent.id.clone(),
            cameras: cameras.clone(),
            links: links.clone(),
            shaping: shared.shaping.clone(),
            audit: shared.audit.clone(),
            limits: shared.limits.clone(),
            ptz: ptz.clone(),
        });
        Ok(Self { links, tasks, _cameras: cameras, access, config: cfg, status, ptz, operators, endpoint })
    }

    /// Closes every relay session at once, so relays show the link down
    /// now (not after their idle timeout) and their viewers' streams end
    /// cleanly; waits briefly for the closes to go out.
    pub async fn shutdown(&self) {
        self.endpoint.close(session::close_code::NORMAL.into(), b"agent shutting down");
        if tokio::time::timeout(SHUTDOWN_GRACE, self.endpoint.wait_idle()).await.is_err() {
            tracing::debug!("relay sessions still closing after {SHUTDOWN_GRACE:?}; exiting anyway");
        }
    }

    /// Applies a new config's policies; the rest of the config needs a restart.
    pub fn reload(&mut self, cfg: AgentConfig) -> Result<()> {
        let access = access::Access::new(&cfg)?;
        let same = |a: &AgentConfig, b: &AgentConfig| {
            serde_json::to_string(&(&a.agent, &a.tls, &a.relays, &a.devices, &a.audit, &a.management)).ok()
                == serde_json::to_string(&(&b.agent, &b.tls, &b.relays, &b.devices, &b.audit, &b.management))
                    .ok()
        };
        let operators = operators::Operators::from_config(&cfg.operators)?;
        if !same(&self.config, &cfg) {
            tracing::warn!("reload applies `[[site]]`, `[policy]`, `[ptz]` and `[[operator]]` only; restart the agent to apply changes to relays, devices, TLS, audit or the management port");
        }
        self.access.send_replace(Arc::new(access));
        self.operators.reload(operators);
        self.config.operators = cfg.operators.clone();
        self.ptz.set_config(cfg.ptz.arbiter());
        self.config.sites = cfg.sites.clone();
        self.config.policy = cfg.policy.clone();
        self.config.ptz = cfg.ptz.clone();
        tracing::info!(sites = cfg.sites.len(), "policy reloaded");
        Ok(())
    }

    /// The status document feed for the management port.
    pub fn status_feed(&self) -> ponte_proto::mgmt::StatusFeed {
        self.status.clone()
    }

    /// The control routes of the management port (the master room's PTZ
    /// API), behind the operator credential check.
    pub fn management_routes(&self) -> axum::Router {
        ptz::master_api::routes(self.ptz.clone()).route_layer(axum::middleware::from_fn_with_state(
            self.operators.clone(),
            operators::require_operator,
        ))
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

/// Runs until SIGINT/SIGTERM; SIGHUP reloads the policy from `path`.
async fn run_until_shutdown(agent: &mut Agent, path: &std::path::Path) -> Result<()> {
    #[cfg(unix)]
    {
        let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
        let shutdown = shutdown_signal();
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                r = &mut shutdown => return r,
                _ = hup.recv() => {
                    tracing::info!(config = %path.display(), "SIGHUP: reloading policy");
                    match AgentConfig::load(path).and_then(|cfg| agent.reload(cfg)) {
                        Ok(()) => {}
                        Err(e) => tracing::error!("reload refused, the previous policy stays in force: {e:#}"),
                    }
                }
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = (agent, path);
        shutdown_signal().await
    }
}

fn explain(cfg: &AgentConfig, site: &str, camera: Option<&str>, at: Option<&str>) -> Result<()> {
    let access = access::Access::new(cfg)?;
    let tz = jiff::tz::TimeZone::get(&cfg.policy.timezone)?;
    let when = match at {
        Some(text) => {
            let civil: jiff::civil::DateTime =
                text.parse().with_context(|| format!("`--at {text}`: expected e.g. 2026-11-25T21:30"))?;
            civil.to_zoned(tz.clone())?.timestamp()
        }
        None => jiff::Timestamp::now(),
    };
    let now = access.local_time(when);
    let full = cameras::catalog_of(&cfg.devices);
    let rows = access.explain(site, &full, now);
    let rows: Vec<_> = rows.into_iter().filter(|r| camera.is_none_or(|c| c == r.camera)).collect();
    if rows.is_empty() {
        anyhow::bail!("no camera {:?} in the config", camera.unwrap_or(""));
    }
    println!(
        "site {site} at {} ({}):",
        when.to_zoned(tz).strftime("%a %Y-%m-%d %H:%M %Z"),
        cfg.policy.timezone
    );
    println!("{:<56} {:<10} {:<5} why", "camera", "qualities", "now");
    let mut visible = 0;
    for r in &rows {
        let q: Vec<&str> = r.qualities.iter().map(|q| q.name()).collect();
        if !r.qualities.is_empty() {
            visible += 1;
        }
        let q = if q.is_empty() { "-".to_owned() } else { q.join(",") };
        println!("{:<56} {:<10} {:<5} {}", r.camera, q, if r.now { "yes" } else { "no" }, r.why);
    }
    println!("{visible} of {} cameras visible to {site}", rows.len());
    Ok(())
}

#[tokio::main]
async fn main() -> Result<()> {
    let cli = Cli::parse();
    init_logging(&cli.log_format);
    match cli.cmd {
        Cmd::Run { config } => {
            let cfg = AgentConfig::load(&config)?;
            let mgmt = cfg.management.listen;
            let http = cfg.management.http_options();
            let mut agent = Agent::start(cfg)?;
            ponte_proto::mgmt::spawn_with(mgmt, agent.status_feed(), agent.management_routes(), http)
                .await
                .with_context(|| format!("binding the management port on TCP {mgmt} (`management.listen`)"))?;
            let result = run_until_shutdown(&mut agent, &config).await;
            agent.shutdown().await;
            result
        }
        Cmd::Status { url, json, watch } => {
            let code =
                ponte_proto::mgmt::status_cli(&url, json, watch.map(std::time::Duration::from_secs)).await;
            std::process::exit(code)
        }
        Cmd::Policy { cmd: PolicyCmd::Explain { config, site, camera, at } } => {
            let cfg = AgentConfig::load(&config)?;
            explain(&cfg, &site, camera.as_deref(), at.as_deref())
        }
        Cmd::Config { cmd: ConfigCmd::Check { config } } => std::process::exit(config::check_cli(&config)),
        Cmd::Audit { cmd: AuditCmd::Verify { files, allow_missing_start } } => {
            std::process::exit(ponte_proto::audit::verify_cli(files, allow_missing_start))
        }
        Cmd::Demo(args) => demo::run(args).await,
        Cmd::Operator { cmd: OperatorCmd::Passwd { name } } => operators::passwd_cli(&name),
        Cmd::Operator { cmd: OperatorCmd::Token { name } } => operators::token_cli(&name),
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
