//! ponte-relay: runs at a partner site, receives streams from the agent over
//! QUIC and serves them to local operators (WHEP) and the site's VMS.

use anyhow::Result;
use clap::{Parser, Subcommand};
use ponte_relay::config::{self, RelayConfig};
use ponte_relay::{auth, node::run};
use std::path::PathBuf;
use std::time::Duration;

#[derive(Parser)]
#[command(name = "ponte-relay", version, about = "ponte relay: QUIC in from the agent, WHEP out to browsers")]
struct Cli {
    /// Log format.
    #[arg(long, global = true, default_value = "text", value_parser = ["text", "json"])]
    log_format: String,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the relay with a config file.
    Run {
        /// Path of relay.toml.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Print the relay's status for on-call staff; exit 0 ok, 1 degraded, 2 down, 3 unreachable.
    Status {
        /// Management URL of the relay.
        #[arg(long, default_value = "http://127.0.0.1:9091")]
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
    /// Read a password from stdin and print its argon2id hash for `password_hash`.
    Passwd {
        /// Print a whole `[[viewer]]` table for this user instead of the bare hash.
        #[arg(long)]
        user: Option<String>,
        /// Also print `rtsp_digest_ha1` (only for RTSP clients that cannot do Basic; needs --user).
        #[arg(long, requires = "user")]
        rtsp_digest: bool,
    },
    /// Print a new random bearer token and the `[[token]]` table holding its SHA-256.
    Token {
        /// Name of the client in logs and audit.
        #[arg(long, default_value = "vms")]
        name: String,
    },
    /// Write a new key for the relays of one site (`relay.pair_key_file`, mode 0600): copy the file to each.
    PairKey {
        /// Where to write it; an existing file is never overwritten.
        #[arg(long)]
        out: PathBuf,
    },
    /// Check a config as `run` would load it; exit 0 OK, 1 with every problem listed.
    Config {
        #[command(subcommand)]
        cmd: ConfigCmd,
    },
    /// Check the relay's audit log.
    Audit {
        #[command(subcommand)]
        cmd: AuditCmd,
    },
}

#[derive(Subcommand)]
enum ConfigCmd {
    /// Load the config (environment overrides included), read the files it names, report every problem.
    Check {
        /// Path of relay.toml.
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
        /// The agent's audit log (rotated files included, or files oldest
        /// first, the option repeated): check that every head of this log
        /// it anchored is still here, intact; a cut or rewritten tail fails.
        #[arg(long = "anchors", value_name = "FILE")]
        anchors: Vec<PathBuf>,
    },
}

/// Text lines escape control characters (log injection); see `ponte_proto::logging`.
fn init_logging(format: &str) {
    ponte_proto::logging::init(format);
}

#[tokio::main]
async fn main() -> Result<()> {
    let cli = Cli::parse();
    init_logging(&cli.log_format);
    match cli.cmd {
        Cmd::Run { config } => run(RelayConfig::load(&config)?, config).await,
        Cmd::Status { url, json, watch, ca, cert, key } => {
            let tls = ponte_proto::mgmt::ClientTls { ca, cert, key };
            let code = ponte_proto::mgmt::status_cli(&url, json, watch.map(Duration::from_secs), &tls).await;
            std::process::exit(code)
        }
        Cmd::Passwd { user, rtsp_digest } => auth::passwd_cli(user.as_deref(), rtsp_digest),
        Cmd::Token { name } => auth::token_cli(&name),
        Cmd::PairKey { out } => auth::pair_key_cli(&out),
        Cmd::Config { cmd: ConfigCmd::Check { config } } => std::process::exit(config::check_cli(&config)),
        Cmd::Audit { cmd: AuditCmd::Verify { files, allow_missing_start, anchors } } => {
            std::process::exit(ponte_proto::audit::verify_cli(files, allow_missing_start, anchors))
        }
    }
}
