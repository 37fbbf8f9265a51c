//! The running agent: cameras, one uplink per relay, the management port;
//! reload on SIGHUP and a clean shutdown.

use crate::config::{AgentConfig, RelayTarget};
use crate::sources::cameras;
use crate::{access, operators, ptz, reload, status, uplink};
use anyhow::{Context, Result};
use ponte_proto::session;
use ponte_proto::tls::LiveTls;
use std::sync::Arc;
use tokio::sync::watch;

/// A running agent: cameras and one uplink per relay.
pub struct Agent {
    /// Link states for the status page, edited as relays come and go.
    links: status::LinkList,
    uplinks: Vec<uplink::Uplink>,
    cameras: Arc<cameras::Cameras>,
    /// Shares, asks and alarms; publishes the access policy with the
    /// temporary grants in force.
    incidents: crate::incidents::Incidents,
    /// The cameras' ONVIF event readers and the stream watch.
    alarms: crate::incidents::alarms::CameraAlarms,
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
    /// The management port's HTTPS pair, reloaded with the TLS files.
    management_https: Option<Arc<ponte_proto::tls::https::HttpsPair>>,
    /// Tells the sessions the agent shuts down.
    shutting_down: watch::Sender<bool>,
    /// The link to the other agents of the master room (`[redundancy]`).
    peer_endpoint: Option<quinn::Endpoint>,
    /// One QUIC endpoint per `local` address of `[[relay]] paths`.
    path_endpoints: std::collections::HashMap<std::net::IpAddr, quinn::Endpoint>,
}

/// How long a shutting-down agent waits for its session closes to go out.
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(1);
/// How long a shutting-down agent gives its sessions to send the audit head.
const HEAD_GRACE: std::time::Duration = std::time::Duration::from_millis(200);

impl Agent {
    /// Starts cameras and uplinks.
    pub fn start(cfg: AgentConfig) -> Result<Self> {
        let live = LiveTls::load(&cfg.tls).context("loading `[tls]` files")?;
        let opts = cfg.transport.options_redundant(cfg.redundancy.enabled());
        let client = live.client_config(&opts)?;
        let any6 = std::net::SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, 0));
        let any4 = std::net::SocketAddr::from((std::net::Ipv4Addr::UNSPECIFIED, 0));
        let endpoint = ponte_proto::endpoint::bind(any6, None, opts.max_udp_payload)
            .or_else(|_| ponte_proto::endpoint::bind(any4, None, opts.max_udp_payload))
            .context("opening the QUIC socket")?;
        let audit = cfg.audit.open(&cfg.agent.id).map_err(anyhow::Error::msg)?;
        let policy = access::Access::new(&cfg)?;
        let (access, access_rx) = watch::channel(Arc::new(policy.clone()));
        let operators = operators::Operators::from_config(&cfg.operators)?;
        if operators.is_empty() {
            tracing::warn!(
                "no [[operator]] configured: the master-room PTZ API answers 403 until one is added \
                 (`ponte-agent operator passwd --name NAME`)"
            );
        }
        let cameras = Arc::new(cameras::Cameras::start(&cfg.devices));
        cameras.transcodes().set_max(cfg.agent.max_transcodes);
        let audit = Arc::new(audit);
        let recall = if cfg.recording.is_empty() {
            crate::recall::Recall::none(&cfg.agent.id, &cfg.tls, audit.clone())
        } else {
            crate::recall::Recall::open(
                &cfg.recordings,
                &cfg.recording,
                &cfg.agent.id,
                &cfg.tls,
                audit.clone(),
            )?
        };
        recall.spawn_recorders(cameras.clone());
        let (revocation_audit, node) = (audit.clone(), cfg.agent.id.clone());
        live.on_event(move |event| {
            if let Err(e) = revocation_audit.write(event.record(&node)) {
                tracing::error!(error = %e, "cannot write the audit log");
            }
        });
        let operators = Arc::new(operators::OperatorAuth::new(operators, audit.clone()));
        let clock = access::Clock::from_env(&cfg.policy.timezone)?;
        let incidents = crate::incidents::Incidents::start(crate::incidents::Setup {
            settings: crate::incidents::book::Settings {
                alarm_interval_ms: cfg.incidents.alarm_interval_secs * 1000,
                ask_ttl_ms: cfg.incidents.ask_minutes * 60_000,
            },
            file: cfg.incidents.state_file(&cfg.audit.path),
            policy,
            access,
            audit: audit.clone(),
            sites: partner_sites(&cfg),
            cameras: cameras.clone(),
            clock,
        })?;
        let alarms = crate::incidents::alarms::CameraAlarms::start(
            incidents.clone(),
            &cfg.devices,
            std::time::Duration::from_secs(cfg.incidents.stall_secs),
        );
        let ptz = ptz::PtzService::start(ptz::Setup {
            config: cfg.ptz.arbiter(),
            cameras: cameras.clone(),
            access: access_rx.clone(),
            clock,
            audit: audit.clone(),
            devices: ptz::devices(&cfg.devices)?,
        });
        let peer_endpoint = crate::peers::Peers::start(
            &cfg.agent.id,
            &cfg.redundancy,
            &live,
            &opts,
            ptz.clone(),
            incidents.clone(),
            audit.clone(),
        )?;
        let shutting_down = watch::Sender::new(false);
        let shared = uplink::Shared {
            node: cfg.agent.id.clone(),
            cameras: cameras.clone(),
            access: access_rx,
            audit,
            anchor_every: cfg.audit.anchor_every(),
            shutting_down: shutting_down.subscribe(),
            clock,
            shaping: uplink::ShapingBoard::default(),
            links: uplink::LinkBoard::default(),
            limits: Arc::new(uplink::SessionLimits {
                max_subscriptions: cfg.agent.max_subscriptions_per_session,
                ..Default::default()
            }),
            ptz: ptz.clone(),
            tls: live.clone(),
            recall: recall.clone(),
            agents: cfg.redundancy.agents(&cfg.agent.id),
            incidents: incidents.clone(),
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
            incidents: shared.incidents.clone(),
            tls: shared.tls.clone(),
            recall,
        });
        let mut agent = Self {
            links,
            uplinks: Vec::new(),
            cameras,
            incidents,
            alarms,
            config: cfg,
            status,
            ptz,
            operators,
            endpoint,
            client,
            shared,
            management_https: None,
            shutting_down,
            peer_endpoint,
            path_endpoints: std::collections::HashMap::new(),
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
        for mut uplink in target.uplinks() {
            // Two relays of one site (a pair): status tells them apart by address.
            if uplink.label.is_none()
                && self.config.relays.iter().filter(|r| r.site == target.site).count() > 1
            {
                uplink.label = Some(format!("{} {}", uplink.site, uplink.addr));
            }
            self.start_one_uplink(uplink);
        }
    }

    /// The QUIC endpoint sending from `local` (one per fibre path), or
    /// the agent's own.
    fn endpoint_for(&mut self, local: Option<std::net::IpAddr>) -> quinn::Endpoint {
        let Some(ip) = local else { return self.endpoint.clone() };
        if let Some(e) = self.path_endpoints.get(&ip) {
            return e.clone();
        }
        let payload = self.config.transport.max_udp_payload;
        match ponte_proto::endpoint::bind(std::net::SocketAddr::new(ip, 0), None, payload) {
            Ok(e) => {
                self.path_endpoints.insert(ip, e.clone());
                e
            }
            Err(e) => {
                tracing::error!(local = %ip, error = %e, "cannot send from this path's `local` address; using the default route");
                self.endpoint.clone()
            }
        }
    }

    fn start_one_uplink(&mut self, target: RelayTarget) {
        if !self.config.sites.iter().any(|p| p.id == target.site) {
            tracing::warn!(site = %target.site, "no [[site]] policy for this relay: it will see no camera");
        }
        let endpoint = self.endpoint_for(target.local);
        let up = uplink::spawn(target, endpoint, self.client.clone(), self.shared.clone());
        self.lock_links().push((up.target.label().to_owned(), up.state.clone()));
        self.uplinks.push(up);
    }

    /// Closes one relay's session (telling it `reason`) and stops dialling it.
    async fn stop_uplink(&mut self, site: &str, reason: &str) {
        self.lock_links().retain(|(label, _)| !RelayTarget::label_is_of(label, site));
        while let Some(i) = self.uplinks.iter().position(|u| u.target.site == site) {
            self.uplinks.swap_remove(i).stop(reason).await;
        }
    }

    fn lock_links(&self) -> std::sync::MutexGuard<'_, Vec<(String, watch::Receiver<uplink::LinkState>)>> {
        self.links.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Closes every relay session at once, so relays show the link down
    /// now (not after their idle timeout) and their viewers' streams end
    /// cleanly; waits briefly for the closes to go out.
    pub async fn shutdown(&self) {
        // The relays anchor this log's head as of now (best effort: the
        // sends get `HEAD_GRACE` before the connections close).
        self.shutting_down.send_replace(true);
        tokio::time::sleep(HEAD_GRACE).await;
        self.endpoint.close(session::close_code::NORMAL.into(), b"agent shutting down");
        for e in self.path_endpoints.values() {
            e.close(session::close_code::NORMAL.into(), b"agent shutting down");
        }
        if let Some(peers) = &self.peer_endpoint {
            peers.close(session::close_code::NORMAL.into(), b"agent shutting down");
        }
        if tokio::time::timeout(SHUTDOWN_GRACE, self.endpoint.wait_idle()).await.is_err() {
            tracing::debug!("relay sessions still closing after {SHUTDOWN_GRACE:?}; exiting anyway");
        }
        self.shared.recall.close();
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
        self.cameras.transcodes().set_max(cfg.agent.max_transcodes);
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
        self.incidents.set_policy(access, partner_sites(&cfg));
        self.operators.reload(operators);
        self.ptz.set_config(cfg.ptz.arbiter());
        self.config.sites = cfg.sites.clone();
        self.config.policy = cfg.policy.clone();
        self.config.ptz = cfg.ptz.clone();
        self.config.operators = cfg.operators.clone();
        if self.config.devices != cfg.devices {
            self.alarms.set_devices(&cfg.devices);
        }
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

    /// Reads `tls.cert`, `tls.key` and `tls.crl` again (SIGHUP): the next
    /// handshakes use the new pair; sessions of peers the list now
    /// revokes are closed (audited). On an error the running files stay.
    pub fn reload_tls(&self) {
        self.shared.tls.reload_logged();
        if let Some(pair) = &self.management_https {
            pair.reload_logged("management port");
        }
    }

    /// The management port's HTTP guards with its HTTPS (`[management.https]`,
    /// `management.client_ca`) loaded.
    pub fn management_options(&mut self) -> Result<ponte_proto::http_server::HttpOptions> {
        let (options, pair) = self.config.management.load_https(self.shared.tls.identity().ca).context(
            "loading the management port's HTTPS files (`[management.https]`, `management.client_ca`)",
        )?;
        self.management_https = pair;
        Ok(options)
    }

    /// The status document feed for the management port.
    pub fn status_feed(&self) -> ponte_proto::mgmt::StatusFeed {
        self.status.clone()
    }

    /// The control routes of the management port (the master room's PTZ
    /// API and its console), behind the operator credential check; the
    /// console page itself is open (it asks for the credential).
    pub fn management_routes(&self) -> axum::Router {
        ptz::master_api::routes(self.ptz.clone())
            .merge(crate::incidents::master_api::routes(self.incidents.clone()))
            .route_layer(axum::middleware::from_fn_with_state(
                self.operators.clone(),
                operators::require_operator,
            ))
            .merge(crate::incidents::master_api::page_routes())
    }

    /// State of each relay link.
    pub fn links(&self) -> Vec<(String, watch::Receiver<uplink::LinkState>)> {
        self.lock_links().clone()
    }
}

/// The partner sites a config names (`[[relay]]` and `[[site]]`), sorted.
fn partner_sites(cfg: &AgentConfig) -> Vec<String> {
    let mut sites: Vec<String> =
        cfg.relays.iter().map(|r| r.site.clone()).chain(cfg.sites.iter().map(|s| s.id.clone())).collect();
    sites.sort();
    sites.dedup();
    sites
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
pub async fn run_until_shutdown(agent: &mut Agent, path: &std::path::Path) -> Result<()> {
    #[cfg(unix)]
    {
        let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
        let shutdown = shutdown_signal();
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                r = &mut shutdown => return r,
                _ = hup.recv() => {
                    agent.reload_tls();
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
