//! ponte-agent: runs at the master room, pulls each camera once and fans the
//! streams out over QUIC to the partner relays.

mod access;
mod config;
#[cfg(test)]
mod fuzz_targets;
mod operators;
mod ops;
mod ptz;
mod reload;
mod secret;
mod sources;
mod status;
mod uplink;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use config::{AgentConfig, RelayTarget};
use ops::{demo, pki};
use ponte_proto::session;
use ponte_proto::tls::{self, Identity, TransportOptions};
use sources::cameras;
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
    /// Link states for the status page, edited as relays come and go.
    links: status::LinkList,
    uplinks: Vec<uplink::Uplink>,
    cameras: Arc<cameras::Cameras>,
    access: watch::Sender<Arc<access::Access>>,
    /// The config in force: the new file's live parts after each reload,
    /// the start-up values of what needs a restart.
    config: AgentConfig,
    status: ponte_proto::mgmt::StatusFeed,
    ptz: ptz::PtzService,
    /// Who may use the management port's control routes.
    operators: Arc<operators::OperatorAuth>,
    /// The QUIC endpoint every uplink dials from.
    endpoint: quinn::Endpoint,
    /// TLS client config of the uplinks (relays added on reload use it too).
    client: quinn::ClientConfig,
    /// What every relay session shares.
    shared: uplink::Shared,
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
        let audit = cfg.audit.open(&cfg.agent.id).map_err(anyhow::Error::msg)?;
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
        let clock = access::Clock::from_env(&cfg.policy.timezone)?;
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
            links: uplink::LinkBoard::default(),
            limits: Arc::new(uplink::SessionLimits {
                max_subscriptions: cfg.agent.max_subscriptions_per_session,
                ..Default::default()
            }),
            ptz: ptz.clone(),
        };
        let links = status::LinkList::default();
        let status = status::spawn_sampler(status::Sources {
            node: cfg.agent.id.clone(),
            cameras: cameras.clone(),
            links: links.clone(),
            shaping: shared.shaping.clone(),
            figures: shared.links.clone(),
            audit: shared.audit.clone(),
            limits: shared.limits.clone(),
            ptz: ptz.clone(),
        });
        let mut agent = Self {
            links,
            uplinks: Vec::new(),
            cameras,
            access,
            config: cfg,
            status,
            ptz,
            operators,
            endpoint,
            client,
            shared,
        };
        for target in agent.config.relays.clone() {
            agent.start_uplink(target);
        }
        tracing::info!(
            node = %agent.config.agent.id,
            cameras = agent.cameras.catalog().len(),
            relays = agent.uplinks.len(),
            audit = %agent.config.audit.path.display(),
            retention = %agent.config.audit.retention().describe(),
            "agent started"
        );
        Ok(agent)
    }

    /// Starts dialling one relay.
    fn start_uplink(&mut self, target: RelayTarget) {
        if !self.config.sites.iter().any(|p| p.id == target.site) {
            tracing::warn!(site = %target.site, "no [[site]] policy for this relay: it will see no camera");
        }
        let up = uplink::spawn(target, self.endpoint.clone(), self.client.clone(), self.shared.clone());
        self.lock_links().push((up.target.site.clone(), up.state.clone()));
        self.uplinks.push(up);
    }

    /// Closes one relay's session (telling it `reason`) and stops dialling it.
    async fn stop_uplink(&mut self, site: &str, reason: &str) {
        self.lock_links().retain(|(s, _)| s != site);
        let Some(i) = self.uplinks.iter().position(|u| u.target.site == site) else { return };
        self.uplinks.swap_remove(i).stop(reason).await;
    }

    fn lock_links(&self) -> std::sync::MutexGuard<'_, Vec<(String, watch::Receiver<uplink::LinkState>)>> {
        self.links.lock().unwrap_or_else(|e| e.into_inner())
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

    /// Applies a new, validated config: policies, operators and PTZ
    /// timings; devices, relays and sites one by one, leaving what did not
    /// change untouched (see [`reload`]). Keys that need a restart are
    /// logged by name and not applied. Fails, applying nothing, when part
    /// of the new config cannot be built.
    pub async fn reload(&mut self, cfg: AgentConfig) -> Result<()> {
        // Everything that can fail comes first, so a refusal leaves the
        // running config whole.
        let access = access::Access::new(&cfg)?;
        let operators = operators::Operators::from_config(&cfg.operators)?;
        let ptz_cameras = reload::touched_cameras(&self.config.devices, &cfg.devices);
        let ptz_devices = ptz::devices(&reload::started_devices(&self.config.devices, &cfg.devices))?;
        let restart = reload::restart_keys(&self.config, &cfg);
        if !restart.is_empty() {
            tracing::warn!(
                keys = %restart.join(", "),
                "reload: these keys changed but need a restart of the agent; the running values stay in force"
            );
        }

        // Cameras first: a removed camera leaves the catalog (sessions
        // revoke it) before its source stops.
        let devices = self.cameras.apply(&cfg.devices);
        self.ptz.replace_devices(&ptz_cameras, ptz_devices);
        for id in &devices.added {
            tracing::info!(device = %id, "reload: device added");
        }
        for id in &devices.changed {
            tracing::info!(device = %id, "reload: device changed; restarted");
        }
        for id in &devices.removed {
            tracing::info!(device = %id, "reload: device removed; its cameras are withdrawn");
        }

        // Policies: every session re-evaluates its site (added sites get
        // their catalog, removed ones lose everything).
        self.access.send_replace(Arc::new(access));
        self.operators.reload(operators);
        self.ptz.set_config(cfg.ptz.arbiter());
        self.config.sites = cfg.sites.clone();
        self.config.policy = cfg.policy.clone();
        self.config.ptz = cfg.ptz.clone();
        self.config.operators = cfg.operators.clone();
        self.config.devices = cfg.devices.clone();

        // Relays: only those whose entry changed.
        let plan = reload::relay_plan(&self.config.relays, &cfg.relays);
        for (site, reason) in &plan.stop {
            tracing::info!(site = %site, reason = %reason, "reload: closing the relay session");
            self.stop_uplink(site, reason).await;
        }
        self.config.relays = cfg.relays.clone();
        for target in plan.start {
            tracing::info!(site = %target.site, addr = %target.addr, "reload: dialling the relay");
            self.start_uplink(target);
        }
        tracing::info!(
            sites = cfg.sites.len(),
            devices_added = devices.added.len(),
            devices_changed = devices.changed.len(),
            devices_removed = devices.removed.len(),
            relays = self.uplinks.len(),
            "policy reloaded"
        );
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
        self.lock_links().clone()
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

/// Runs until SIGINT/SIGTERM; SIGHUP reloads the config from `path`.
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
                    tracing::info!(config = %path.display(), "SIGHUP: reloading the config");
                    let result = match AgentConfig::load(path) {
                        Ok(cfg) => agent.reload(cfg).await,
                        Err(e) => Err(e),
                    };
                    if let Err(e) = result {
                        tracing::error!("reload refused, the previous config stays in force: {e:#}");
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
