//! ponte-agent: runs at the master room, pulls each camera once and fans the
//! streams out over QUIC to the partner relays.

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use ponte_agent::config::AgentConfig;
use ponte_agent::node::run_until_shutdown;
use ponte_agent::ops::{demo, pki};
use ponte_agent::sources::cameras;
use ponte_agent::{access, config, operators, Agent};
use std::net::IpAddr;
use std::path::PathBuf;

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
        /// For an https:// URL: the CA that issued the port's certificate.
        #[arg(long)]
        ca: Option<PathBuf>,
        /// For a port with `management.client_ca`: a client certificate ...
        #[arg(long)]
        cert: Option<PathBuf>,
        /// ... and its key.
        #[arg(long)]
        key: Option<PathBuf>,
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
    /// Inspect the recordings (`[[recording]]`).
    Recordings {
        #[command(subcommand)]
        cmd: RecordingsCmd,
    },
    /// Check evidence exports offline.
    Evidence {
        #[command(subcommand)]
        cmd: EvidenceCmd,
    },
}

#[derive(Subcommand)]
enum RecordingsCmd {
    /// Verify a store (one rule's directory, or `recordings.dir` with every rule's) without
    /// changing it; exit 0 clean, 1 with every problem listed.
    Check {
        /// The directory.
        dir: PathBuf,
    },
}

#[derive(Subcommand)]
enum EvidenceCmd {
    /// Check an exported clip against its signed manifest and the deployment CA; exit 0 when
    /// it holds, 1 saying which part fails.
    Verify {
        /// The MP4.
        clip: PathBuf,
        /// Its `.manifest.json`.
        manifest: PathBuf,
        /// The deployment CA (`ca.pem`).
        #[arg(long)]
        ca: PathBuf,
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
        /// The relay's audit log (rotated files included, or files oldest
        /// first, the option repeated): check that every head of this log
        /// it anchored is still here, intact; a cut or rewritten tail fails.
        #[arg(long = "anchors", value_name = "FILE")]
        anchors: Vec<PathBuf>,
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
        /// Validity in days (short-lived: renew with `pki renew`).
        #[arg(long, default_value_t = pki::DEFAULT_DAYS)]
        days: u32,
        /// What it is for: `server` (a relay), `client` (the agent), `both`
        /// (a relay that also dials a cascade). Default: `client` for
        /// `master`, `server` for other sites.
        #[arg(long, value_enum)]
        usage: Option<pki::Usage>,
    },
    /// Issue a site's certificate again with a new key, same names and
    /// usage (then copy it to the node and `systemctl reload`).
    Renew {
        /// Directory holding the CA.
        #[arg(long)]
        dir: PathBuf,
        /// Site id.
        #[arg(long)]
        site: String,
        /// Validity in days.
        #[arg(long, default_value_t = pki::DEFAULT_DAYS)]
        days: u32,
    },
    /// Write `crl.pem` with the revocations so far (empty at first): deploy
    /// it as every node's `tls.crl` before the day it is needed.
    Crl {
        /// Directory holding the CA.
        #[arg(long)]
        dir: PathBuf,
    },
    /// Revoke certificates and write `crl.pem` (copy it to every node's
    /// `tls.crl` and `systemctl reload`).
    Revoke {
        /// Directory holding the CA.
        #[arg(long)]
        dir: PathBuf,
        /// Revoke every unexpired certificate issued to this site.
        #[arg(long)]
        site: Option<String>,
        /// Revoke the certificate with this serial (hex).
        #[arg(long)]
        serial: Option<String>,
    },
}

/// Text lines escape control characters (log injection); see `ponte_proto::logging`.
fn init_logging(format: &str) {
    ponte_proto::logging::init(format);
}

fn explain(cfg: &AgentConfig, site: &str, camera: Option<&str>, at: Option<&str>) -> Result<()> {
    // The shares and approved asks in force, from the running agent's state file.
    let file = cfg.incidents.state_file(&cfg.audit.path);
    let saved = match std::fs::read(&file) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .with_context(|| format!("reading the incident state file {}", file.display()))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Default::default(),
        Err(e) => {
            return Err(e).with_context(|| format!("reading the incident state file {}", file.display()))
        }
    };
    let tz = jiff::tz::TimeZone::get(&cfg.policy.timezone)?;
    let when = match at {
        Some(text) => {
            let civil: jiff::civil::DateTime =
                text.parse().with_context(|| format!("`--at {text}`: expected e.g. 2026-11-25T21:30"))?;
            civil.to_zoned(tz.clone())?.timestamp()
        }
        None => jiff::Timestamp::now(),
    };
    let settings = ponte_agent::incidents::book::Settings { alarm_interval_ms: 0, ask_ttl_ms: 0 };
    let now_ms = u64::try_from(when.as_millisecond()).unwrap_or(0);
    let (book, _) = ponte_agent::incidents::book::Book::restore(settings, saved, now_ms);
    let access = access::Access::new(cfg)?.with_grants(book.grants());
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
            let mut agent = Agent::start(cfg)?;
            let http = agent.management_options()?;
            ponte_proto::mgmt::spawn_with(mgmt, agent.status_feed(), agent.management_routes(), http)
                .await
                .with_context(|| format!("binding the management port on TCP {mgmt} (`management.listen`)"))?;
            let result = run_until_shutdown(&mut agent, &config).await;
            agent.shutdown().await;
            result
        }
        Cmd::Status { url, json, watch, ca, cert, key } => {
            let tls = ponte_proto::mgmt::ClientTls { ca, cert, key };
            let code =
                ponte_proto::mgmt::status_cli(&url, json, watch.map(std::time::Duration::from_secs), &tls)
                    .await;
            std::process::exit(code)
        }
        Cmd::Policy { cmd: PolicyCmd::Explain { config, site, camera, at } } => {
            let cfg = AgentConfig::load(&config)?;
            explain(&cfg, &site, camera.as_deref(), at.as_deref())
        }
        Cmd::Config { cmd: ConfigCmd::Check { config } } => std::process::exit(config::check_cli(&config)),
        Cmd::Audit { cmd: AuditCmd::Verify { files, allow_missing_start, anchors } } => {
            std::process::exit(ponte_proto::audit::verify_cli(files, allow_missing_start, anchors))
        }
        Cmd::Demo(args) => demo::run(args).await,
        Cmd::Recordings { cmd: RecordingsCmd::Check { dir } } => {
            std::process::exit(ponte_agent::ops::recall::check_cli(&dir))
        }
        Cmd::Evidence { cmd: EvidenceCmd::Verify { clip, manifest, ca } } => {
            std::process::exit(ponte_agent::ops::recall::verify_cli(&clip, &manifest, &ca))
        }
        Cmd::Operator { cmd: OperatorCmd::Passwd { name } } => operators::passwd_cli(&name),
        Cmd::Operator { cmd: OperatorCmd::Token { name } } => operators::token_cli(&name),
        Cmd::Pki { cmd: PkiCmd::Init { dir, name } } => {
            let path = pki::init(&dir, &name)?;
            println!("created CA {}", path.display());
            Ok(())
        }
        Cmd::Pki { cmd: PkiCmd::Issue { dir, site, dns, ip, days, usage } } => {
            let usage = usage.unwrap_or_else(|| pki::Usage::default_for(&site));
            let (cert, key) = pki::issue(&dir, &site, &dns, &ip, days, usage)?;
            println!("issued {} and {} ({usage:?} usage, {days} days)", cert.display(), key.display());
            Ok(())
        }
        Cmd::Pki { cmd: PkiCmd::Renew { dir, site, days } } => {
            let (cert, key) = pki::renew(&dir, &site, days)?;
            println!(
                "renewed {} and {} ({days} days); copy them to the node and reload it (SIGHUP): sessions stay up",
                cert.display(),
                key.display()
            );
            Ok(())
        }
        Cmd::Pki { cmd: PkiCmd::Crl { dir } } => {
            let path = pki::crl(&dir)?;
            println!("wrote {}: copy it to every node's `tls.crl`", path.display());
            Ok(())
        }
        Cmd::Pki { cmd: PkiCmd::Revoke { dir, site, serial } } => {
            let (crl, added) = pki::revoke(&dir, site.as_deref(), serial.as_deref())?;
            println!(
                "revoked {} certificate(s) ({}); wrote {}: copy it to every node's `tls.crl` and reload them (SIGHUP)",
                added.len(),
                added.join(", "),
                crl.display()
            );
            Ok(())
        }
    }
}
