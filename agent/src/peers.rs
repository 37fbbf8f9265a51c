//! The other agents of the master room (`[redundancy]`, issue 22): a QUIC
//! link to each (mutual TLS, the deployment CA, only the sites listed in
//! `redundancy.peers`), carrying every PTZ lock this agent grants, renews
//! or frees, so that when it dies the agent that takes its cameras over
//! holds the same locks: a dome never has two holders.
//!
//! Both agents listen; the one whose site id sorts first dials (so one
//! link per pair), again every second while it is down. On each link both
//! ends first send the locks they hold now, then every change.
//!
//! The same link carries the temporary grants of shares and approved asks
//! (issue 23, `Control::Grants`): each end sends all of them when the link
//! opens and again after each change; the other takes over the ones it
//! does not know, and ends or marks accepted the ones it does.

use crate::config::{PeerAgent, RedundancySection};
use crate::ptz::PtzService;
use anyhow::{Context, Result};
use ponte_proto::audit::{AuditLog, AuditRecord};
use ponte_proto::session::{self, SessionError};
use ponte_proto::tls::{LiveTls, TransportOptions};
use ponte_proto::wire::{Control, Role, PROTOCOL_VERSION};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::broadcast::error::RecvError;
use tracing::{info, warn};

/// Pause between dials of a peer that is down.
const REDIAL: Duration = Duration::from_secs(1);

/// What the links need.
#[derive(Clone)]
pub struct Peers {
    me: String,
    peers: Vec<PeerAgent>,
    ptz: PtzService,
    incidents: crate::incidents::Incidents,
    audit: Arc<AuditLog>,
}

impl Peers {
    /// Starts listening on `redundancy.listen` and dialling the peers that
    /// sort after `me`. Does nothing without peers.
    pub fn start(
        me: &str,
        cfg: &RedundancySection,
        live: &LiveTls,
        opts: &TransportOptions,
        ptz: PtzService,
        incidents: crate::incidents::Incidents,
        audit: Arc<AuditLog>,
    ) -> Result<Option<quinn::Endpoint>> {
        let Some(listen) = cfg.listen.filter(|_| cfg.enabled()) else { return Ok(None) };
        let server =
            live.server_config(opts).context("`[redundancy]`: the agent's certificate as a server")?;
        let endpoint = ponte_proto::endpoint::bind(listen, Some(server), opts.max_udp_payload)
            .with_context(|| format!("binding QUIC on UDP {listen} (`redundancy.listen`)"))?;
        let client = live.client_config(opts)?;
        let peers = Peers { me: me.to_owned(), peers: cfg.peers.clone(), ptz, incidents, audit };
        tokio::spawn(peers.clone().accept(endpoint.clone()));
        for peer in peers.peers.iter().filter(|p| p.site.as_str() > me) {
            tokio::spawn(peers.clone().dial(endpoint.clone(), client.clone(), peer.clone()));
        }
        info!(%listen, peers = peers.peers.len(), "redundancy: linking with the other agents of the master room");
        Ok(Some(endpoint))
    }

    async fn accept(self, endpoint: quinn::Endpoint) {
        while let Some(incoming) = endpoint.accept().await {
            let this = self.clone();
            tokio::spawn(async move {
                let remote = incoming.remote_address();
                let conn = match incoming.await {
                    Ok(c) => c,
                    Err(e) => {
                        return warn!(addr = %remote, error = %e, "redundancy: refused a QUIC connection")
                    }
                };
                let site = ponte_proto::tls::peer_site(&conn).unwrap_or_default();
                if !this.peers.iter().any(|p| p.site == site) {
                    let why = format!(
                        "{} is not one of this agent's `redundancy.peers`",
                        ponte_proto::tls::describe_identity(Some(&site))
                    );
                    warn!(addr = %remote, "redundancy: refused a peer: {why}");
                    this.audit_link(&site, "refused", why);
                    conn.close(session::close_code::FORBIDDEN.into(), b"not a peer agent");
                    return;
                }
                let result = this.run(&conn, &site, false).await;
                this.ended(&site, result);
            });
        }
    }

    async fn dial(self, endpoint: quinn::Endpoint, client: quinn::ClientConfig, peer: PeerAgent) {
        let name = peer.server_name.clone().unwrap_or_else(|| peer.site.clone());
        loop {
            let conn = match endpoint.connect_with(client.clone(), peer.addr, &name) {
                Ok(connecting) => connecting.await.map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            };
            match conn {
                Ok(conn) if ponte_proto::tls::peer_site(&conn).as_deref() == Some(peer.site.as_str()) => {
                    let result = self.run(&conn, &peer.site, true).await;
                    self.ended(&peer.site, result);
                }
                Ok(conn) => {
                    warn!(peer = %peer.site, addr = %peer.addr, "redundancy: the peer's certificate names another site");
                    conn.close(session::close_code::FORBIDDEN.into(), b"wrong identity");
                }
                Err(e) => {
                    tracing::debug!(peer = %peer.site, addr = %peer.addr, error = %e, "redundancy: peer unreachable")
                }
            }
            tokio::time::sleep(REDIAL).await;
        }
    }

    /// One link: both ends send the locks they hold, then each change.
    async fn run(&self, conn: &quinn::Connection, site: &str, dialled: bool) -> Result<(), SessionError> {
        let hello = Control::Hello {
            version: PROTOCOL_VERSION,
            node: self.me.clone(),
            role: Role::Agent,
            policy: None,
        };
        // Subscribed before the snapshot, so no change falls between them.
        let mut changes = self.ptz.subscribe_replication();
        let (mut tx, mut rx, _) = if dialled {
            session::open_control(conn, &hello).await?
        } else {
            session::accept_control(conn, &hello).await?
        };
        info!(peer = site, "redundancy: linked with the other agent; PTZ locks are shared");
        self.audit_link(site, "linked", format!("PTZ locks shared with agent `{site}`"));
        for held in self.ptz.own_holders() {
            tx.send(&Control::PtzLock { camera: held.camera, holder: held.holder }).await?;
        }
        // The temporary grants (issue 23): all of them now, again after each change.
        let mut grants = self.incidents.grants_changed();
        grants.mark_unchanged();
        tx.send(&Control::Grants { grants: self.incidents.export_grants() }).await?;
        loop {
            tokio::select! {
                msg = rx.recv() => match msg? {
                    Control::PtzLock { camera, holder } => self.ptz.replicate_in(&camera, holder),
                    Control::Grants { grants } => self.incidents.merge_grants(site, grants),
                    other => {
                        return Err(SessionError::Protocol(format!(
                            "agent `{site}` sent `{}` on the redundancy link", session::kind(&other)
                        )))
                    }
                },
                change = changes.recv() => match change {
                    Ok(c) => tx.send(&Control::PtzLock { camera: c.camera, holder: c.holder }).await?,
                    Err(RecvError::Lagged(n)) => {
                        warn!(peer = site, missed = n, "redundancy: lock changes lagged; sending every lock again");
                        for held in self.ptz.own_holders() {
                            tx.send(&Control::PtzLock { camera: held.camera, holder: held.holder }).await?;
                        }
                    }
                    Err(RecvError::Closed) => return Ok(()),
                },
                changed = grants.changed() => {
                    if changed.is_err() {
                        return Ok(());
                    }
                    tx.send(&Control::Grants { grants: self.incidents.export_grants() }).await?;
                }
                e = conn.closed() => return Err(e.into()),
            }
        }
    }

    fn ended(&self, site: &str, result: Result<(), SessionError>) {
        let why = match result {
            Ok(()) => "closed".to_owned(),
            Err(e) => e.to_string(),
        };
        warn!(peer = site, reason = %why, "redundancy: the link to the other agent is down");
        self.audit_link(site, "lost", why);
    }

    fn audit_link(&self, site: &str, outcome: &str, reason: String) {
        let record = AuditRecord {
            site: Some(site.to_owned()),
            action: "peer-agent".to_owned(),
            outcome: outcome.to_owned(),
            reason: Some(reason),
            ..Default::default()
        };
        if let Err(e) = self.audit.write(record) {
            tracing::error!(error = %e, "cannot write the audit log");
        }
    }
}
