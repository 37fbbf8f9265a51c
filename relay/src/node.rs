//! The running relay: upstream links, WHEP, RTSP, cascade, status, browser
//! sessions; reload on SIGHUP and a clean shutdown.

use crate::config::RelayConfig;
use crate::upstream::Upstreams;
use crate::{audit, auth, cascade, console, peers, ptz, rtsp, status, web, whep};
use anyhow::{Context, Result};
use ponte_proto::tls::https::HttpsPair;
use ponte_proto::tls::{self, LiveTls, TransportOptions};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// How often browser sessions used since the last save are written again
/// (their idle time): a restart loses at most this much of it.
const SESSION_SAVE_EVERY: Duration = Duration::from_secs(60);

pub async fn run(cfg: RelayConfig, config_path: PathBuf) -> Result<()> {
    let live = LiveTls::load(&cfg.tls).context("loading `[tls]` files")?;
    let id = live.identity();
    let own = id.chain.first().and_then(|c| tls::site_of_certificate(c));
    if own.as_deref() != Some(cfg.relay.site.as_str()) {
        anyhow::bail!(
            "`tls.cert` names site {:?} but `relay.site` is {:?}: issue a certificate with `ponte-agent pki issue --site {}`",
            own,
            cfg.relay.site,
            cfg.relay.site
        );
    }
    // Fed by two agents: a dead one is noticed within a second.
    let agents = cfg.relay.upstreams.iter().filter(|u| ponte_proto::redundancy::is_agent_site(u)).count();
    let opts = cfg.transport.options_redundant(agents > 1);
    let server = live.server_config(&opts)?;
    // Restarted, the relay resets its agents' old connections at once.
    let endpoint = ponte_proto::endpoint::bind_with_reset_secret(
        cfg.relay.quic_listen,
        Some(server),
        id.key.secret_der(),
        opts.max_udp_payload,
    )
    .with_context(|| format!("binding QUIC on UDP {} (`relay.quic_listen`)", cfg.relay.quic_listen))?;
    let audit =
        audit::RelayAudit::new(cfg.audit.open(&cfg.relay.site).map_err(anyhow::Error::msg)?, &cfg.relay.site)
            .with_anchor_every(cfg.audit.anchor_every());
    let audit = Arc::new(audit);
    let revocation_audit = audit.clone();
    live.on_event(move |event| revocation_audit.certificate(&event));
    let upstreams = Upstreams::new(
        &cfg.relay.site,
        cfg.relay.upstreams.clone(),
        audit.clone(),
        Duration::from_secs(cfg.relay.linger_secs),
        Duration::from_secs(cfg.relay.reconnect_grace_secs),
    );
    tracing::info!(upstreams = %cfg.relay.upstreams.join(", "), "accepting upstream sessions from these sites only");
    upstreams.set_tls(live.clone());
    let incidents = crate::incidents::IncidentBoard::new(&cfg.relay.site, audit.clone(), &upstreams);
    let board = incidents.clone();
    upstreams.on_incident(Box::new(move |peer, notice| board.notice(peer, notice)));
    tokio::spawn(upstreams.clone().serve(endpoint));
    let cascade = start_cascade(&cfg, &live, &opts, &upstreams)?;
    let https = match &cfg.relay.https {
        Some(h) => Some(
            HttpsPair::load(&h.cert, &h.key, id.ca.clone())
                .context("loading the HTTPS certificate (`relay.https.cert`, `relay.https.key`)")?,
        ),
        None => None,
    };

    if let Some(ip) = cfg.whep.media_ip {
        std::net::UdpSocket::bind((ip, 0)).with_context(|| {
            format!("`whep.media_ip` = {ip}: cannot bind a UDP socket there; give an address of this host")
        })?;
    }
    let whep_settings = whep::WhepSettings {
        udp_addrs: vec![std::net::SocketAddr::new(webrtc_ip(&cfg), 0).to_string()],
        udp_ports: cfg.whep.udp_ports,
        max_sessions: cfg.whep.max_sessions,
        max_per_camera: cfg.whep.max_per_camera,
        max_per_viewer: cfg.whep.max_per_viewer,
        offers_per_minute: cfg.whep.offers_per_minute,
        rtsp_port: cfg.rtsp.as_ref().map(|r| r.listen.port()),
        ..Default::default()
    };
    let accounts = auth::Accounts::from_config(&cfg.viewers, &cfg.tokens)?;
    if accounts.is_open() {
        tracing::warn!(
            http = %cfg.relay.http_listen,
            "NO AUTHENTICATION (`relay.allow_anonymous = true`): anyone who reaches \
             http://{}/ sees every camera of this site; add accounts (`ponte-relay passwd`, `ponte-relay token`)",
            cfg.relay.http_listen
        );
    } else {
        let (viewers, tokens) = accounts.counts();
        tracing::info!(viewers, tokens, audit = %cfg.audit.path.display(), "viewers must log in");
    }
    // Sessions are kept across restarts there: a directory that cannot be
    // written would let a logout come back after the next restart.
    let sessions_file = cfg.sessions_file();
    if let Some(dir) = sessions_file.parent().filter(|d| !d.as_os_str().is_empty()) {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).with_context(|| {
            format!("creating `{}` for the browser sessions (`relay.state_dir`)", dir.display())
        })?;
    }
    ponte_proto::config_check::check_writable("relay.state_dir", &sessions_file)
        .map_err(anyhow::Error::msg)?;
    let peers = Arc::new(cfg.peers()?);
    let pair = match &cfg.relay.pair_key_file {
        Some(path) => {
            let key = auth::load_pair_key(path)?;
            tracing::info!(peers = %peers.origins().join(", "), "relay pair: pages move to these relays of the site when this one stops answering");
            Some(auth::PairSettings { key, site: cfg.relay.site.clone() })
        }
        None => None,
    };
    let settings = auth::AuthSettings {
        pair,
        open_ptz: cfg.relay.open_ptz,
        sessions_file: Some(sessions_file),
        session_max_age: Duration::from_secs(cfg.relay.session_max_hours.saturating_mul(3600)),
        secure_cookie: https.is_some(),
        ..Default::default()
    };
    let auth = Arc::new(auth::Auth::new(accounts, audit.clone(), settings));
    auth.spawn_session_saver(SESSION_SAVE_EVERY);
    let state = Arc::new(
        whep::WhepState::new(upstreams.clone(), whep_settings).with_access(auth.clone(), audit.clone()),
    );
    state.spawn_access_watch();
    let rtsp = start_rtsp(&cfg, &upstreams, &auth, &audit).await?;
    let egress = status::Egress {
        rtsp: rtsp.clone(),
        cascade: cascade.clone(),
        audit: audit.clone(),
        tls: Some(live.clone()),
        https: https.clone(),
    };
    let feed = status::spawn_sampler(upstreams.clone(), state.clone(), egress);
    let layouts = Arc::new(
        console::layouts::LayoutStore::open(&cfg.layouts_file())
            .context("loading the console's saved layouts (`relay.state_dir`)")?,
    );
    let console = Arc::new(
        console::ConsoleState::new(state.clone(), layouts, Some(feed.clone()))
            .with_exports(cfg.exports_dir())
            .with_peers(peers.origins().to_vec()),
    );
    let status = StatusState {
        upstreams: upstreams.clone(),
        whep: state.clone(),
        rtsp,
        cascade,
        started: std::time::Instant::now(),
    };
    let mgmt = cfg.management.listen;
    let (mgmt_options, mgmt_https) = cfg.management.load_https(id.ca.clone()).context(
        "loading the management port's HTTPS files (`[management.https]`, `management.client_ca`)",
    )?;
    ponte_proto::mgmt::spawn(mgmt, feed, mgmt_options)
        .await
        .with_context(|| format!("binding the management port on TCP {mgmt} (`management.listen`)"))?;
    let pairs: Vec<(&'static str, Arc<HttpsPair>)> = https
        .iter()
        .map(|p| ("viewer port", p.clone()))
        .chain(mgmt_https.iter().map(|p| ("management port", p.clone())))
        .collect();
    tokio::spawn(reload_on_hangup(config_path, cfg.clone(), auth.clone(), live.clone(), pairs));
    let ptz = Arc::new(ptz::PtzState::new(
        upstreams.clone(),
        auth.clone(),
        audit.clone(),
        ptz::PtzSettings::default(),
    ));
    let incident_routes =
        Arc::new(crate::incidents::routes::IncidentRoutes { board: incidents, whep: state.clone() });
    let app = web::router(state)
        .merge(ptz::router(ptz))
        .merge(console::router(console))
        .merge(crate::incidents::routes::router(incident_routes))
        .merge(peers::router())
        .merge(
            axum::Router::new()
                .route("/api/status", axum::routing::get(status_json))
                .route_layer(axum::middleware::from_fn_with_state(auth.clone(), auth::require_whole_site))
                .with_state(Arc::new(status)),
        )
        .layer(axum::middleware::from_fn_with_state(peers, peers::cors));
    let listener = tokio::net::TcpListener::bind(cfg.relay.http_listen)
        .await
        .with_context(|| format!("binding HTTP on TCP {} (`relay.http_listen`)", cfg.relay.http_listen))?;
    let mut http_options = cfg.relay.http_options();
    if let Some(pair) = &https {
        http_options.tls = Some(pair.server_config(None)?);
        start_redirect(&cfg, listener.local_addr()?.port()).await?;
    }
    let scheme = if https.is_some() { "https" } else { "http" };
    tracing::info!(
        site = %cfg.relay.site,
        quic = %cfg.relay.quic_listen,
        http = %cfg.relay.http_listen,
        "relay started; viewer page at {scheme}://{}/",
        cfg.relay.http_listen
    );
    // The guarded server gives handlers the client's address (`ConnectInfo`):
    // the login brake counts failures per client address.
    ponte_proto::http_server::serve(listener, app, http_options, shutdown_signal())
        .await
        .context("HTTP server (`relay.http_listen`)")?;
    // The upstreams anchor this log's head as of the shutdown.
    upstreams.send_final_heads(std::time::Duration::from_millis(200)).await;
    Ok(())
}

/// The plain-HTTP port that only sends browsers to HTTPS
/// (`relay.https.redirect_listen`), if set.
async fn start_redirect(cfg: &RelayConfig, https_port: u16) -> Result<()> {
    let Some(addr) = cfg.relay.https.as_ref().and_then(|h| h.redirect_listen) else { return Ok(()) };
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding HTTP on TCP {addr} (`relay.https.redirect_listen`)"))?;
    let mut options = cfg.relay.http_options();
    options.name = "HTTPS redirect";
    tracing::info!(listen = %addr, "plain HTTP redirects to HTTPS");
    tokio::spawn(async move {
        let app = ponte_proto::http_server::redirect_router(https_port);
        if let Err(e) = ponte_proto::http_server::serve(listener, app, options, std::future::pending()).await
        {
            tracing::error!(error = %e, "HTTPS redirect port stopped");
        }
    });
    Ok(())
}

struct StatusState {
    upstreams: Arc<Upstreams>,
    whep: Arc<whep::WhepState>,
    rtsp: Option<Arc<rtsp::RtspServer>>,
    cascade: Arc<cascade::Cascade>,
    started: std::time::Instant,
}

/// Dials the `[[downstream]]` relays, if any, from a client endpoint of its own.
fn start_cascade(
    cfg: &RelayConfig,
    live: &LiveTls,
    opts: &TransportOptions,
    upstreams: &Arc<Upstreams>,
) -> Result<Arc<cascade::Cascade>> {
    if cfg.downstreams.is_empty() {
        return Ok(cascade::Cascade::none());
    }
    let client = live.client_config(opts)?;
    let any6 = std::net::SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, 0));
    let any4 = std::net::SocketAddr::from((std::net::Ipv4Addr::UNSPECIFIED, 0));
    let endpoint = ponte_proto::endpoint::bind(any6, None, opts.max_udp_payload)
        .or_else(|_| ponte_proto::endpoint::bind(any4, None, opts.max_udp_payload))
        .context("binding a UDP socket to dial `[[downstream]]` relays")?;
    for d in &cfg.downstreams {
        tracing::info!(site = %d.site, addr = %d.addr, "cascade: feeding downstream relay");
    }
    Ok(cascade::Cascade::spawn(cfg.downstreams.clone(), endpoint, client, upstreams.clone()))
}

/// Starts the RTSP server when `[rtsp]` is configured.
async fn start_rtsp(
    cfg: &RelayConfig,
    upstreams: &Arc<Upstreams>,
    auth: &Arc<auth::Auth>,
    audit: &Arc<audit::RelayAudit>,
) -> Result<Option<Arc<rtsp::RtspServer>>> {
    let Some(section) = &cfg.rtsp else { return Ok(None) };
    let settings = rtsp::RtspSettings {
        listen: section.listen,
        udp: section.udp,
        udp_port: section.udp_port,
        session_timeout: Duration::from_secs(section.session_timeout_secs),
        max_sessions: section.max_sessions,
        max_connections: section.max_connections,
        max_connections_per_client: section.max_connections_per_client,
        auth_deadline: Duration::from_secs(section.auth_deadline_secs),
        ..Default::default()
    };
    let rtsp_auth = Arc::new(rtsp::RtspAuth::new(auth.clone(), section.basic));
    let server = rtsp::RtspServer::bind(settings, upstreams.clone(), rtsp_auth, audit.clone())
        .await
        .with_context(|| format!("binding RTSP on TCP {} (`rtsp.listen`)", section.listen))?;
    if !auth.is_open() && !section.basic {
        tracing::info!(
            "RTSP asks for Digest: only [[viewer]] accounts with `rtsp_digest_ha1` can log in \
             (set `rtsp.basic = true` for password or token logins)"
        );
    }
    tracing::info!(
        listen = %server.local_addr(),
        udp_ports = %server.udp_ports_text(),
        "RTSP server started; streams at rtsp://{}/<camera>[/sub]",
        server.local_addr()
    );
    tokio::spawn(server.clone().serve());
    Ok(Some(server))
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
        "rtsp_sessions": st.rtsp.as_ref().map(|r| r.sessions()).unwrap_or_default(),
        "downstreams": st.cascade.status(),
    }))
}

/// The IP WebRTC media is offered on: `whep.media_ip`, else the HTTP listen
/// IP; a wildcard means every interface.
fn webrtc_ip(cfg: &RelayConfig) -> std::net::IpAddr {
    cfg.whep.media_ip.unwrap_or_else(|| cfg.relay.http_listen.ip())
}

/// `SIGHUP` (`systemctl reload ponte-relay`): reads the TLS files again
/// (own certificate and key, `tls.crl`, the HTTPS pair: new handshakes use
/// them, live sessions of a peer now revoked are closed), then the config
/// file, and applies its `[[viewer]]` and `[[token]]` tables. Browser sessions,
/// WHEP viewers and RTSP clients whose account is gone, or no longer
/// covers the camera or quality they watch, end at once (audited as
/// `view-stop`, "access revoked"). An invalid file is refused, naming the
/// problem, and the running accounts stay.
async fn reload_on_hangup(
    path: PathBuf,
    running: RelayConfig,
    auth: Arc<auth::Auth>,
    live: LiveTls,
    https: Vec<(&'static str, Arc<HttpsPair>)>,
) {
    #[cfg(unix)]
    {
        let mut hup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
            Ok(hup) => hup,
            Err(e) => {
                tracing::warn!(error = %e, "cannot handle SIGHUP: account changes need a restart");
                return;
            }
        };
        while hup.recv().await.is_some() {
            live.reload_logged();
            for (port, pair) in &https {
                pair.reload_logged(port);
            }
            let loaded = RelayConfig::load(&path).and_then(|cfg| {
                let accounts = auth::Accounts::from_config(&cfg.viewers, &cfg.tokens)?;
                Ok((cfg, accounts))
            });
            let (cfg, accounts) = match loaded {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(config = %path.display(), "reload refused, the running accounts stay: {e:#}");
                    continue;
                }
            };
            let rest = |c: &RelayConfig| {
                let mut c = c.clone();
                c.viewers.clear();
                c.tokens.clear();
                serde_json::to_string(&c).ok()
            };
            if rest(&cfg) != rest(&running) {
                tracing::warn!(
                    "reload applies `[[viewer]]` and `[[token]]` only; restart the relay to apply the other changes"
                );
            }
            let report = auth.reload(accounts);
            if report.viewers + report.tokens == 0 {
                tracing::warn!(
                    "NO AUTHENTICATION after reload: the config has no [[viewer]] and no [[token]]"
                );
            }
            tracing::info!(
                viewers = report.viewers,
                tokens = report.tokens,
                logins_ended = report.logins_ended,
                "accounts reloaded"
            );
        }
    }
    #[cfg(not(unix))]
    let _ = (path, running, auth, live, https);
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
