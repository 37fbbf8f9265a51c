//! ponte-relay: runs at a partner site, receives streams from the agent over
//! QUIC and serves them to local operators (WHEP) and the site's VMS.

mod config;
mod page;
mod upstream;
mod whep;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use config::RelayConfig;
use ponte_proto::tls::{self, Identity, TransportOptions};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use upstream::Upstreams;

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

async fn run(cfg: RelayConfig) -> Result<()> {
    let id = Identity::load(&cfg.tls.ca, &cfg.tls.cert, &cfg.tls.key).context("loading `[tls]` files")?;
    let own = id.chain.first().and_then(|c| tls::site_of_certificate(c));
    if own.as_deref() != Some(cfg.relay.site.as_str()) {
        anyhow::bail!(
            "`tls.cert` names site {:?} but `relay.site` is {:?}: issue a certificate with `ponte-agent pki issue --site {}`",
            own,
            cfg.relay.site,
            cfg.relay.site
        );
    }
    let opts = TransportOptions { gso: cfg.transport.gso, ..Default::default() };
    let server = tls::server_config(&id, &opts)?;
    let endpoint = quinn::Endpoint::server(server, cfg.relay.quic_listen)
        .with_context(|| format!("binding QUIC on UDP {} (`relay.quic_listen`)", cfg.relay.quic_listen))?;
    let upstreams = Upstreams::new(&cfg.relay.site, Duration::from_secs(cfg.relay.linger_secs));
    tokio::spawn(upstreams.clone().serve(endpoint));

    let whep_settings =
        whep::WhepSettings { udp_addrs: vec![format!("{}:0", webrtc_ip(&cfg))], ..Default::default() };
    let state = Arc::new(whep::WhepState::new(upstreams.clone(), whep_settings));
    let status =
        StatusState { upstreams: upstreams.clone(), whep: state.clone(), started: std::time::Instant::now() };
    let app = whep::router(state).merge(
        axum::Router::new()
            .route("/api/status", axum::routing::get(status_json))
            .with_state(Arc::new(status)),
    );
    let listener = tokio::net::TcpListener::bind(cfg.relay.http_listen)
        .await
        .with_context(|| format!("binding HTTP on TCP {} (`relay.http_listen`)", cfg.relay.http_listen))?;
    tracing::info!(
        site = %cfg.relay.site,
        quic = %cfg.relay.quic_listen,
        http = %cfg.relay.http_listen,
        "relay started; viewer page at http://{}/",
        cfg.relay.http_listen
    );
    axum::serve(listener, app).with_graceful_shutdown(shutdown_signal()).await.context("HTTP server")?;
    Ok(())
}

struct StatusState {
    upstreams: Arc<Upstreams>,
    whep: Arc<whep::WhepState>,
    started: std::time::Instant,
}

/// `GET /api/status`: what on-call staff need first — links and viewers.
async fn status_json(
    axum::extract::State(st): axum::extract::State<Arc<StatusState>>,
) -> axum::Json<serde_json::Value> {
    axum::Json(serde_json::json!({
        "site": st.upstreams.site(),
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_secs": st.started.elapsed().as_secs(),
        "links": st.upstreams.links(),
        "cameras": st.upstreams.catalog().len(),
        "bytes_received": st.upstreams.bytes_received(),
        "viewers": st.whep.sessions(),
    }))
}

/// The IP WebRTC media is offered on: the HTTP listen IP, unless it is a
/// wildcard (then every interface).
fn webrtc_ip(cfg: &RelayConfig) -> std::net::IpAddr {
    cfg.relay.http_listen.ip()
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        if let Ok(mut term) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        } else {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
    tracing::info!("shutting down");
}

#[tokio::main]
async fn main() -> Result<()> {
    let cli = Cli::parse();
    init_logging(&cli.log_format);
    match cli.cmd {
        Cmd::Run { config } => run(RelayConfig::load(&config)?).await,
    }
}
