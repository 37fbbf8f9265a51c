//! One QUIC session per relay: the agent dials, sends its catalog, and
//! serves the relay's subscriptions with one stream per GOP.

use crate::access::Access;
use crate::cameras::Cameras;
use crate::config::RelayTarget;
use ponte_proto::audit::{AuditLog, AuditRecord};
use ponte_proto::hub::TrackReader;
use ponte_proto::media::Quality;
use ponte_proto::policy::Decision;
use ponte_proto::session::{self, ControlSender, GopSender, PriorityClock, SessionError};
use ponte_proto::wire::{Control, Role, StatsReport, SubscribeErrorCode, PROTOCOL_VERSION};
use rand::Rng;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tracing::{error, info, warn};

/// State of the link to one relay, for logs, status and the demo banner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkState {
    /// Dialling (or waiting to redial).
    Connecting {
        /// Last error, if a previous attempt failed.
        last_error: Option<String>,
    },
    /// Session established.
    Up,
}

/// Backoff between redials: capped exponential with jitter.
pub const BACKOFF_MIN: Duration = Duration::from_millis(500);
/// Longest wait between redials.
pub const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// Dials `target` for ever, running a session whenever the link is up.
pub fn spawn(
    target: RelayTarget,
    endpoint: quinn::Endpoint,
    client: quinn::ClientConfig,
    shared: Shared,
) -> (watch::Receiver<LinkState>, JoinHandle<()>) {
    let (state_tx, state_rx) = watch::channel(LinkState::Connecting { last_error: None });
    let task = tokio::spawn(async move {
        let server_name = target.server_name.clone().unwrap_or_else(|| target.site.clone());
        let mut backoff = BACKOFF_MIN;
        loop {
            let result: Result<(), String> =
                match endpoint.connect_with(client.clone(), target.addr, &server_name) {
                    Ok(connecting) => match connecting.await {
                        Ok(conn) => {
                            let peer = ponte_proto::tls::peer_site(&conn);
                            if peer.as_deref() != Some(target.site.as_str()) {
                                conn.close(
                                    session::close_code::FORBIDDEN.into(),
                                    b"unexpected site identity",
                                );
                                Err(format!(
                                    "relay at {} presented identity {:?}, expected site `{}`",
                                    target.addr, peer, target.site
                                ))
                            } else {
                                info!(site = %target.site, addr = %target.addr, "link up");
                                let _ = state_tx.send(LinkState::Up);
                                backoff = BACKOFF_MIN;
                                let r = run_session(&target.site, conn, shared.clone()).await;
                                Err(match r {
                                    Ok(()) => "session ended".to_owned(),
                                    Err(e) => e.to_string(),
                                })
                            }
                        }
                        Err(e) => Err(format!("QUIC handshake with {} failed: {e}", target.addr)),
                    },
                    Err(e) => Err(format!("cannot dial {}: {e}", target.addr)),
                };
            if let Err(e) = result {
                let was_up = matches!(*state_tx.borrow(), LinkState::Up);
                if was_up {
                    warn!(site = %target.site, error = %e, "link down");
                } else {
                    warn!(site = %target.site, error = %e, retry_in_ms = backoff.as_millis() as u64, "cannot reach relay");
                }
                let _ = state_tx.send(LinkState::Connecting { last_error: Some(e) });
            }
            let jitter = rand::rng().random_range(0.8..1.2);
            tokio::time::sleep(backoff.mul_f64(jitter)).await;
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
    });
    (state_rx, task)
}

struct Subscription {
    camera: String,
    quality: Quality,
    task: JoinHandle<()>,
}

/// Counters of one session.
#[derive(Default)]
struct SessionCounters {
    bytes_sent: AtomicU64,
    gops_dropped: AtomicU64,
}

/// Everything a session needs besides its connection.
#[derive(Clone)]
pub struct Shared {
    /// This agent's node id.
    pub node: String,
    /// The cameras.
    pub cameras: Arc<Cameras>,
    /// Current policies; replaced on reload.
    pub access: watch::Receiver<Arc<Access>>,
    /// Audit log.
    pub audit: Arc<AuditLog>,
    /// Wall clock the policy is evaluated against.
    pub clock: Clock,
}

/// The policy's wall clock: real time, optionally shifted so tests (and
/// rehearsals) can start the agent at a chosen moment, e.g. just before a
/// time window closes: `PONTE_CLOCK_START=2026-11-25T19:59:58` (policy time zone).
#[derive(Debug, Clone, Copy, Default)]
pub struct Clock {
    offset: jiff::SignedDuration,
}

impl Clock {
    /// Real time, or shifted to start at `PONTE_CLOCK_START` if set.
    pub fn from_env(tz: &str) -> anyhow::Result<Self> {
        use anyhow::Context as _;
        let Ok(start) = std::env::var("PONTE_CLOCK_START") else { return Ok(Self::default()) };
        let civil: jiff::civil::DateTime = start
            .parse()
            .with_context(|| format!("PONTE_CLOCK_START={start:?}: expected e.g. 2026-11-25T19:59:58"))?;
        let at = civil.to_zoned(jiff::tz::TimeZone::get(tz)?)?.timestamp();
        let offset = at.duration_since(jiff::Timestamp::now());
        tracing::warn!(start = %start, "PONTE_CLOCK_START is set: policy time is shifted");
        Ok(Self { offset })
    }

    /// Current time.
    pub fn now(&self) -> jiff::Timestamp {
        jiff::Timestamp::now().checked_add(self.offset).unwrap_or_else(|_| jiff::Timestamp::now())
    }
}

/// How often subscriptions are re-checked against the policy (time windows).
const POLICY_TICK: Duration = Duration::from_millis(500);

struct Session<'a> {
    site: &'a str,
    conn: quinn::Connection,
    shared: Shared,
    access: Arc<Access>,
    tx: ControlSender,
    subs: HashMap<u64, Subscription>,
    counters: Arc<SessionCounters>,
    priorities: Arc<PriorityClock>,
    reply_tx: mpsc::Sender<Control>,
}

fn audit(
    shared: &Shared,
    site: &str,
    camera: Option<&str>,
    quality: Option<Quality>,
    action: &str,
    outcome: &str,
    reason: Option<String>,
) {
    let record = AuditRecord {
        site: Some(site.to_owned()),
        camera: camera.map(str::to_owned),
        quality: quality.map(|q| q.name().to_owned()),
        action: action.to_owned(),
        outcome: outcome.to_owned(),
        reason,
        ..Default::default()
    };
    if let Err(e) = shared.audit.write(record) {
        error!(site, error = %e, path = %shared.audit.path().display(), "cannot write the audit log");
    }
}

async fn run_session(site: &str, conn: quinn::Connection, mut shared: Shared) -> Result<(), SessionError> {
    let hello = Control::Hello { version: PROTOCOL_VERSION, node: shared.node.clone(), role: Role::Agent };
    let (tx, mut rx, _peer) = session::open_control(&conn, &hello).await?;
    // Replies from pump tasks (e.g. a camera track that ended) funnel here so
    // only this task writes the control stream.
    let (reply_tx, mut reply_rx) = mpsc::channel::<Control>(64);
    let access = shared.access.borrow_and_update().clone();
    let mut access_rx = shared.access.clone();
    let mut catalog_rx = shared.cameras.catalog_version();
    let mut s = Session {
        site,
        conn: conn.clone(),
        shared,
        access,
        tx,
        subs: HashMap::new(),
        counters: Arc::new(SessionCounters::default()),
        priorities: Arc::new(PriorityClock::default()),
        reply_tx,
    };
    s.send_catalog().await?;
    let mut stats = tokio::time::interval(Duration::from_secs(5));
    let mut policy_tick = tokio::time::interval(POLICY_TICK);
    let result = loop {
        tokio::select! {
            msg = rx.recv() => {
                let r = match msg { Ok(m) => s.handle(m).await, Err(e) => Err(e) };
                if let Err(e) = r { break Err(e); }
            }
            Some(reply) = reply_rx.recv() => {
                if let Control::SubscribeError { id, .. } = &reply { s.subs.remove(id); }
                if let Err(e) = s.tx.send(&reply).await { break Err(e); }
            }
            changed = access_rx.changed() => {
                if changed.is_err() { break Ok(()); }
                s.access = access_rx.borrow_and_update().clone();
                info!(site, "policy reloaded");
                if let Err(e) = s.send_catalog().await { break Err(e); }
                if let Err(e) = s.recheck("policy reloaded").await { break Err(e); }
            }
            changed = catalog_rx.changed() => {
                if changed.is_err() { break Ok(()); }
                catalog_rx.borrow_and_update();
                if let Err(e) = s.send_catalog().await { break Err(e); }
                if let Err(e) = s.recheck("camera catalog changed").await { break Err(e); }
            }
            _ = policy_tick.tick() => {
                if let Err(e) = s.recheck("time window closed").await { break Err(e); }
            }
            _ = stats.tick() => {
                s.subs.retain(|_, sub| !sub.task.is_finished());
                let report = StatsReport {
                    subscriptions: s.subs.len() as u32,
                    bytes_sent: s.counters.bytes_sent.load(Ordering::Relaxed),
                    gops_dropped: s.counters.gops_dropped.load(Ordering::Relaxed),
                    ..Default::default()
                };
                if let Err(e) = s.tx.send(&Control::Stats(report)).await { break Err(e); }
            }
            e = conn.closed() => break Err(e.into()),
        }
    };
    for (_, sub) in s.subs.drain() {
        sub.task.abort();
        audit(
            &s.shared,
            site,
            Some(&sub.camera),
            Some(sub.quality),
            "unsubscribe",
            "ended",
            Some("session ended".into()),
        );
    }
    if let Err(SessionError::Wire(_) | SessionError::Protocol(_)) = &result {
        conn.close(session::close_code::PROTOCOL.into(), b"protocol violation");
    }
    result
}

impl Session<'_> {
    async fn send_catalog(&mut self) -> Result<(), SessionError> {
        let cameras = self.access.catalog(self.site, &self.shared.cameras.catalog());
        audit(
            &self.shared,
            self.site,
            None,
            None,
            "catalog",
            "sent",
            Some(format!("{} cameras", cameras.len())),
        );
        if cameras.is_empty() && self.access.site(self.site).is_none() {
            warn!(site = self.site, "site has no [[site]] policy in the agent config: it sees no camera");
        }
        self.tx.send(&Control::Catalog { cameras }).await
    }

    fn now(&self) -> ponte_proto::policy::LocalTime {
        self.access.local_time(self.shared.clock.now())
    }

    /// Ends every subscription the current policy no longer allows.
    async fn recheck(&mut self, why: &str) -> Result<(), SessionError> {
        let now = self.now();
        let mut revoked = Vec::new();
        let catalog = self.shared.cameras.catalog();
        for (id, sub) in &self.subs {
            let entry = catalog.iter().find(|c| c.id == sub.camera);
            let decision = match entry {
                Some(e) => self.access.evaluate(self.site, e, sub.quality, now),
                None => {
                    Decision::Deny { hidden: true, reason: format!("camera `{}` was removed", sub.camera) }
                }
            };
            if let Decision::Deny { reason, .. } = decision {
                revoked.push((*id, reason));
            }
        }
        for (id, reason) in revoked {
            let Some(sub) = self.subs.remove(&id) else { continue };
            sub.task.abort();
            warn!(site = self.site, camera = %sub.camera, quality = sub.quality.name(), %reason, "access revoked ({why})");
            audit(
                &self.shared,
                self.site,
                Some(&sub.camera),
                Some(sub.quality),
                "revoked",
                "ended",
                Some(reason.clone()),
            );
            let reason = format!("access revoked: {reason}");
            self.tx
                .send(&Control::SubscribeError { id, code: SubscribeErrorCode::Forbidden, reason })
                .await?;
        }
        Ok(())
    }

    async fn refuse(
        &mut self,
        id: u64,
        camera: &str,
        quality: Quality,
        code: SubscribeErrorCode,
        told: String,
        audited: String,
    ) -> Result<(), SessionError> {
        info!(site = self.site, camera, quality = quality.name(), code = code.name(), reason = %audited, "subscribe refused");
        audit(&self.shared, self.site, Some(camera), Some(quality), "refused", code.name(), Some(audited));
        self.tx.send(&Control::SubscribeError { id, code, reason: told }).await
    }

    async fn handle(&mut self, msg: Control) -> Result<(), SessionError> {
        match msg {
            Control::Subscribe { id, camera, quality } => self.subscribe(id, camera, quality).await?,
            Control::Unsubscribe { id } => {
                if let Some(sub) = self.subs.remove(&id) {
                    info!(site = self.site, camera = %sub.camera, subscription = id, "unsubscribe");
                    audit(
                        &self.shared,
                        self.site,
                        Some(&sub.camera),
                        Some(sub.quality),
                        "unsubscribe",
                        "ended",
                        None,
                    );
                    sub.task.abort();
                }
            }
            Control::Stats(_) => {}
            other => {
                return Err(SessionError::Protocol(format!(
                    "relay sent `{}`, which only an agent may send",
                    session::kind(&other)
                )))
            }
        }
        Ok(())
    }

    async fn subscribe(&mut self, id: u64, camera: String, quality: Quality) -> Result<(), SessionError> {
        if let Some(old) = self.subs.remove(&id) {
            old.task.abort();
        }
        let site = self.site;
        // A camera the site may not see is answered exactly like one that
        // does not exist: the relay never learns it is there.
        let unknown =
            format!("camera `{camera}` ({}) is not in the catalog of site `{site}`", quality.name());
        let entry = self
            .shared
            .cameras
            .catalog()
            .iter()
            .find(|c| c.id == camera && c.qualities.contains(&quality))
            .cloned();
        let Some(entry) = entry else {
            return self
                .refuse(id, &camera, quality, SubscribeErrorCode::Unknown, unknown.clone(), unknown)
                .await;
        };
        match self.access.evaluate(site, &entry, quality, self.now()) {
            Decision::Deny { hidden: true, reason } => {
                return self.refuse(id, &camera, quality, SubscribeErrorCode::Unknown, unknown, reason).await;
            }
            Decision::Deny { hidden: false, reason } => {
                return self
                    .refuse(id, &camera, quality, SubscribeErrorCode::Forbidden, reason.clone(), reason)
                    .await;
            }
            Decision::Allow { rule } => {
                if let Some(max) = self.access.max_streams(site) {
                    if self.subs.len() as u32 >= max {
                        let reason =
                            format!("site `{site}` already receives its maximum of {max} concurrent streams");
                        return self
                            .refuse(
                                id,
                                &camera,
                                quality,
                                SubscribeErrorCode::OverBudget,
                                reason.clone(),
                                reason,
                            )
                            .await;
                    }
                }
                let Some(reader) = self.shared.cameras.subscribe(&camera, quality) else {
                    let reason = format!("camera `{camera}` has no {} stream right now", quality.name());
                    return self
                        .refuse(id, &camera, quality, SubscribeErrorCode::Offline, reason.clone(), reason)
                        .await;
                };
                info!(site, camera = %camera, quality = quality.name(), subscription = id, %rule, "subscribe");
                audit(
                    &self.shared,
                    site,
                    Some(&camera),
                    Some(quality),
                    "subscribe",
                    "allowed",
                    Some(format!("rule `{rule}`")),
                );
                self.tx.send(&Control::SubscribeOk { id, codec: entry.codec }).await?;
                let task = self.pump(id, camera.clone(), quality, reader);
                self.subs.insert(id, Subscription { camera, quality, task });
            }
        }
        Ok(())
    }

    fn pump(&self, id: u64, camera: String, quality: Quality, mut reader: TrackReader) -> JoinHandle<()> {
        let mut gops = GopSender::new(self.conn.clone(), id, self.priorities.clone());
        let counters = self.counters.clone();
        let reply_tx = self.reply_tx.clone();
        tokio::spawn(async move {
            let mut last = gops.counters;
            loop {
                let Some(item) = reader.next().await else {
                    let reason = format!("camera `{camera}` stopped delivering video");
                    let _ = reply_tx
                        .send(Control::SubscribeError { id, code: SubscribeErrorCode::Offline, reason })
                        .await;
                    break;
                };
                if gops.send(&item, quality).await.is_err() {
                    break;
                }
                let now = gops.counters;
                counters.bytes_sent.fetch_add(now.bytes - last.bytes, Ordering::Relaxed);
                counters.gops_dropped.fetch_add(now.gops_reset - last.gops_reset, Ordering::Relaxed);
                last = now;
            }
        })
    }
}
