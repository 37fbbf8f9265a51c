//! One QUIC session per relay: the agent dials, sends its catalog, and
//! serves the relay's subscriptions with one stream per GOP, shaped to the
//! site's link budget (`ponte_proto::shaping`).
//!
//! Shaping in the shell: each site session owns a [`Shaper`]; each
//! subscription's pump reads the camera's main and substream while the site
//! has a budget (so a switch can happen at the very next keyframe of the
//! target stream, and both bitrates are known), asks the shaper at each GOP
//! boundary which rung to send, and tells the relay when it pauses. The
//! session feeds the shaper the QUIC path's capacity and overhead, and
//! publishes a [`LinkSnapshot`] on the [`ShapingBoard`] for status pages.

use crate::access::{Access, Clock};
use crate::config::RelayTarget;
use crate::sources::cameras::Cameras;
use ponte_proto::audit::{AuditLog, AuditRecord};
use ponte_proto::hub::{HubItem, TrackReader};
use ponte_proto::media::Quality;
use ponte_proto::policy::Decision;
use ponte_proto::session::{self, ControlSender, GopSender, PriorityClock, SendCounters, SessionError};
use ponte_proto::shaping::{
    Hysteresis, Ladder, PathEstimator, PathSample, Priority, RateMeter, Rung, RungChange, Shaper,
    StreamRates, IP_UDP_OVERHEAD,
};
use ponte_proto::wire::{Control, Role, StatsReport, SubscribeErrorCode, PROTOCOL_VERSION};
use rand::Rng;
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tracing::{debug, error, info, warn};

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

/// A running uplink: its state, and the handle that ends it.
pub struct Uplink {
    /// The relay it dials.
    pub target: RelayTarget,
    /// Link state, for status and the demo banner.
    pub state: watch::Receiver<LinkState>,
    stop: watch::Sender<Option<String>>,
    task: JoinHandle<()>,
}

/// How long [`Uplink::stop`] waits for the session's close to go out and
/// its subscriptions to be audited.
const STOP_GRACE: Duration = Duration::from_secs(2);

impl Uplink {
    /// Ends the uplink: a live session is closed with `reason` (the relay
    /// logs it), and the relay is not dialled again. Returns once the
    /// session has wound down (its subscriptions ended and audited).
    pub async fn stop(mut self, reason: &str) {
        self.stop.send_replace(Some(reason.to_owned()));
        if tokio::time::timeout(STOP_GRACE, &mut self.task).await.is_err() {
            warn!(site = %self.target.site, "uplink still winding down after {STOP_GRACE:?}; aborted");
            self.task.abort();
        }
    }
}

impl Drop for Uplink {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Resolves once the uplink is told to stop, with the reason.
async fn stop_requested(stop: &mut watch::Receiver<Option<String>>) -> String {
    match stop.wait_for(Option::is_some).await {
        Ok(reason) => reason.clone().unwrap_or_default(),
        // The agent is gone: nothing left to serve.
        Err(_) => "agent shutting down".to_owned(),
    }
}

/// Dials `target` until stopped, running a session whenever the link is
/// up. A relay that does not answer is probed about once a second (see
/// [`crate::redial`]), so a session is back within a second or so of a
/// fibre repair or a relay restart.
pub fn spawn(
    target: RelayTarget,
    endpoint: quinn::Endpoint,
    client: quinn::ClientConfig,
    shared: Shared,
) -> Uplink {
    let (state_tx, state_rx) = watch::channel(LinkState::Connecting { last_error: None });
    let (stop_tx, mut stop) = watch::channel(None::<String>);
    let task = {
        let target = target.clone();
        tokio::spawn(async move {
            let reason = dial_loop(&target, endpoint, client, shared, &state_tx, &mut stop).await;
            info!(site = %target.site, addr = %target.addr, %reason, "uplink stopped: the relay is not dialled any more");
        })
    };
    Uplink { target, state: state_rx, stop: stop_tx, task }
}

/// The dial loop of [`spawn`]; returns (the reason) only when told to stop.
async fn dial_loop(
    target: &RelayTarget,
    endpoint: quinn::Endpoint,
    client: quinn::ClientConfig,
    shared: Shared,
    state_tx: &watch::Sender<LinkState>,
    stop: &mut watch::Receiver<Option<String>>,
) -> String {
    use crate::redial::{Outcome, Redial};
    let server_name = target.server_name.clone().unwrap_or_else(|| target.site.clone());
    let mut redial = Redial::new();
    // Unanswered probes are logged once, then every 30 s, not each second.
    let mut last_warned: Option<(Instant, String)> = None;
    loop {
        let timeout = redial.handshake_timeout();
        let (outcome, error) = match endpoint.connect_with(client.clone(), target.addr, &server_name) {
            Ok(connecting) => {
                let handshake = async {
                    match timeout {
                        Some(t) => tokio::time::timeout(t, connecting).await.ok(),
                        None => Some(connecting.await),
                    }
                };
                let handshake = tokio::select! {
                    r = handshake => r,
                    reason = stop_requested(stop) => return reason,
                };
                match handshake {
                    Some(Ok(conn)) => {
                        let peer = ponte_proto::tls::peer_site(&conn);
                        if peer.as_deref() != Some(target.site.as_str()) {
                            conn.close(session::close_code::FORBIDDEN.into(), b"unexpected site identity");
                            let e = format!(
                                "relay at {} presented {}, expected site `{}`",
                                target.addr,
                                ponte_proto::tls::describe_identity(peer.as_deref()),
                                target.site
                            );
                            (Outcome::Refused, e)
                        } else {
                            info!(site = %target.site, addr = %target.addr, "link up");
                            let _ = state_tx.send(LinkState::Up);
                            last_warned = None;
                            let session = run_session(&target.site, conn.clone(), shared.clone());
                            tokio::pin!(session);
                            let r = tokio::select! {
                                r = &mut session => r,
                                reason = stop_requested(stop) => {
                                    // Closing the connection ends the session
                                    // loop, which ends and audits the
                                    // subscriptions before it returns.
                                    info!(site = %target.site, addr = %target.addr, %reason, "closing the relay session");
                                    conn.close(session::close_code::NORMAL.into(), reason.as_bytes());
                                    let _ = session.await;
                                    return reason;
                                }
                            };
                            let e = match r {
                                Ok(()) => "session ended".to_owned(),
                                Err(e) => e.to_string(),
                            };
                            (Outcome::SessionEnded, e)
                        }
                    }
                    None | Some(Err(quinn::ConnectionError::TimedOut)) => {
                        (Outcome::NoAnswer, format!("no answer from {} (link or relay down)", target.addr))
                    }
                    Some(Err(e)) => {
                        (Outcome::Refused, format!("QUIC handshake with {} failed: {e}", target.addr))
                    }
                }
            }
            Err(e) => (Outcome::Refused, format!("cannot dial {}: {e}", target.addr)),
        };
        let pause = redial.after(outcome);
        let was_up = matches!(*state_tx.borrow(), LinkState::Up);
        if was_up {
            warn!(site = %target.site, error = %error, "link down");
        } else {
            let now = Instant::now();
            let repeat = last_warned.as_ref().is_some_and(|(at, e)| {
                *e == error && now.saturating_duration_since(*at) < Duration::from_secs(30)
            });
            if repeat {
                debug!(site = %target.site, error = %error, "cannot reach relay");
            } else {
                warn!(
                    site = %target.site,
                    error = %error,
                    attempts = redial.unanswered(),
                    retry_in_ms = pause.as_millis() as u64,
                    "cannot reach relay"
                );
                last_warned = Some((now, error.clone()));
            }
        }
        let _ = state_tx.send(LinkState::Connecting { last_error: Some(error) });
        let jitter = rand::rng().random_range(0.9..1.1);
        tokio::select! {
            () = tokio::time::sleep(pause.mul_f64(jitter)) => {}
            reason = stop_requested(stop) => return reason,
        }
    }
}

struct Subscription {
    camera: String,
    quality: Quality,
    task: JoinHandle<()>,
    stats: Arc<SubStats>,
}

/// What one subscription's pump sent, for the snapshot.
#[derive(Default)]
struct SubStats {
    bytes: AtomicU64,
    gops: AtomicU64,
    gops_reset: AtomicU64,
}

/// Shaping state of every site link, for status pages and tests.
#[derive(Clone, Default)]
pub struct ShapingBoard(Arc<Mutex<BTreeMap<String, LinkSnapshot>>>);

impl ShapingBoard {
    fn lock(&self) -> MutexGuard<'_, BTreeMap<String, LinkSnapshot>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The latest snapshot of every site link that is up.
    pub fn snapshot(&self) -> Vec<LinkSnapshot> {
        self.lock().values().cloned().collect()
    }

    fn publish(&self, snap: LinkSnapshot) {
        self.lock().insert(snap.site.clone(), snap);
    }

    fn remove(&self, site: &str) {
        self.lock().remove(site);
    }
}

/// The live figures of every relay link, for status and `/metrics`: each
/// session registers its connection and counters here while it runs, and
/// the status sampler reads them every couple of seconds (a short std lock,
/// never held across an `.await`; nothing on the media path touches it).
#[derive(Clone, Default)]
pub struct LinkBoard(Arc<Mutex<BTreeMap<String, LinkEntry>>>);

/// One site's link: its session while up, and what earlier sessions sent.
#[derive(Default)]
struct LinkEntry {
    live: Option<(quinn::Connection, Arc<SessionCounters>)>,
    earlier_bytes: u64,
    earlier_drops: u64,
}

/// A relay link's traffic as the status document reports it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LinkFigures {
    /// The relay's address, while up.
    pub addr: Option<std::net::SocketAddr>,
    /// QUIC's smoothed round-trip time, while up.
    pub rtt: Option<Duration>,
    /// Packets declared lost since the link came up.
    pub lost_packets: u64,
    /// Media bytes sent to the site since the agent started.
    pub bytes_sent: u64,
    /// Active subscriptions of the session.
    pub subscriptions: u32,
    /// GOP streams reset as stale since the agent started.
    pub drops: u64,
}

impl LinkBoard {
    fn lock(&self) -> MutexGuard<'_, BTreeMap<String, LinkEntry>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The figures of `site`'s link (zeros for a link never up).
    pub fn figures(&self, site: &str) -> LinkFigures {
        let board = self.lock();
        let Some(entry) = board.get(site) else { return LinkFigures::default() };
        let mut f =
            LinkFigures { bytes_sent: entry.earlier_bytes, drops: entry.earlier_drops, ..Default::default() };
        if let Some((conn, counters)) = &entry.live {
            // The dual-stack socket sees an IPv4 relay as ::ffff:a.b.c.d.
            let addr = conn.remote_address();
            f.addr = Some(std::net::SocketAddr::new(addr.ip().to_canonical(), addr.port()));
            f.rtt = Some(conn.rtt());
            f.lost_packets = conn.stats().path.lost_packets;
            f.bytes_sent += counters.bytes_sent.load(Ordering::Relaxed);
            f.drops += counters.gops_dropped.load(Ordering::Relaxed);
            f.subscriptions = counters.subscriptions.load(Ordering::Relaxed);
        }
        f
    }

    fn open(&self, site: &str, conn: quinn::Connection, counters: Arc<SessionCounters>) {
        self.lock().entry(site.to_owned()).or_default().live = Some((conn, counters));
    }

    /// The session ended: its counts join the earlier sessions'.
    fn close(&self, site: &str) {
        let mut board = self.lock();
        let Some(entry) = board.get_mut(site) else { return };
        if let Some((_, counters)) = entry.live.take() {
            entry.earlier_bytes += counters.bytes_sent.load(Ordering::Relaxed);
            entry.earlier_drops += counters.gops_dropped.load(Ordering::Relaxed);
        }
    }
}

/// One site link's shaping, as a status page shows it.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct LinkSnapshot {
    /// Site id.
    pub site: String,
    /// Configured budget, bit/s (`None`: unlimited).
    pub budget_bps: Option<f64>,
    /// Configured burst, bytes.
    pub burst_bytes: f64,
    /// Measured path capacity, bit/s (`None`: no sign of a limit).
    pub path_capacity_bps: Option<f64>,
    /// The budget the shaper applies: the lower of the two, bit/s.
    pub effective_bps: Option<f64>,
    /// Planned wire bitrate of the current rungs, bit/s.
    pub planned_bps: f64,
    /// Measured wire bitrate (QUIC + UDP + IP), bit/s.
    pub sent_bps: f64,
    /// `sent_bps` / `effective_bps`.
    pub budget_use: Option<f64>,
    /// Wire bytes per media byte.
    pub overhead: f64,
    /// Media bytes sent by this session.
    pub bytes_sent: u64,
    /// Stale GOPs reset by this session.
    pub gops_reset: u64,
    /// One row per subscription.
    pub subscriptions: Vec<SubscriptionSnapshot>,
}

/// One subscription's place on the ladder.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SubscriptionSnapshot {
    /// Subscription id (chosen by the relay).
    pub id: u64,
    /// Camera.
    pub camera: String,
    /// Quality the relay asked for (the top of its ladder).
    pub requested: Quality,
    /// Priority class.
    pub priority: Priority,
    /// Current rung (`None` before its first GOP).
    pub rung: Option<Rung>,
    /// Media bytes sent.
    pub bytes_sent: u64,
    /// GOP streams sent.
    pub gops_sent: u64,
    /// GOP streams reset as stale.
    pub gops_reset: u64,
    /// Times it stepped down.
    pub step_downs: u64,
    /// Rung changes after the first.
    pub rung_changes: u64,
}

/// The shaper of one site session, shared by its pumps.
struct SiteShaping {
    shaper: Mutex<Shaper>,
}

impl SiteShaping {
    fn lock(&self) -> MutexGuard<'_, Shaper> {
        self.shaper.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Counters of one session.
#[derive(Default)]
struct SessionCounters {
    bytes_sent: AtomicU64,
    gops_dropped: AtomicU64,
    /// `subs.len()`, kept here for the status sampler.
    subscriptions: AtomicU32,
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
    /// Where sessions publish their shaping state.
    pub shaping: ShapingBoard,
    /// Where sessions register their connection and counters.
    pub links: LinkBoard,
    /// Limits on what a relay may ask.
    pub limits: Arc<SessionLimits>,
    /// PTZ control (checks, arbitration, camera workers).
    pub ptz: crate::ptz::PtzService,
}

/// Limits on what one relay session may ask, and how often they were hit.
#[derive(Debug, Default)]
pub struct SessionLimits {
    /// `agent.max_subscriptions_per_session`.
    pub max_subscriptions: u32,
    /// Subscriptions refused by it since start.
    pub refused: AtomicU64,
}

/// How often subscriptions are re-checked against the policy (time windows).
const POLICY_TICK: Duration = Duration::from_millis(500);
/// How often the path is measured and the shaping snapshot published.
const SHAPING_TICK: Duration = Duration::from_millis(500);
/// How often the link's shaping summary is logged (debug level).
const SHAPING_LOG_EVERY: Duration = Duration::from_secs(5);
/// What the relay is told when a subscription pauses.
const PAUSED_REASON: &str = "link budget";

/// Path measurements of a session, fed to its shaper.
struct PathMeter {
    estimator: PathEstimator,
    last: Option<(Instant, u64, u64)>,
    overhead: f64,
    sent_bps: f64,
    limited: bool,
    last_log: Option<Instant>,
}

impl Default for PathMeter {
    fn default() -> Self {
        Self {
            estimator: PathEstimator::new(),
            last: None,
            overhead: 1.05,
            sent_bps: 0.0,
            limited: false,
            last_log: None,
        }
    }
}

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
    shaping: Arc<SiteShaping>,
    path: PathMeter,
    /// Bounds the PTZ answers not yet written.
    ptz_under_way: Arc<tokio::sync::Semaphore>,
    /// The catalog last sent to the relay.
    sent_catalog: Option<Vec<ponte_proto::wire::CatalogEntry>>,
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
    let budget = access.budget(site);
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
        shaping: Arc::new(SiteShaping { shaper: Mutex::new(Shaper::new(budget, Hysteresis::default())) }),
        path: PathMeter::default(),
        ptz_under_way: crate::ptz::session_gate(),
        sent_catalog: None,
    };
    let mut ptz_locks = s.shared.ptz.subscribe_locks();
    s.send_catalog().await?;
    // Who holds the cameras this site may steer, as of now.
    for change in s.shared.ptz.holders() {
        s.forward_lock(change).await?;
    }
    // From here every way out passes the `close` below.
    s.shared.links.open(site, conn.clone(), s.counters.clone());
    let mut stats = tokio::time::interval(Duration::from_secs(5));
    let mut policy_tick = tokio::time::interval(POLICY_TICK);
    let mut shaping_tick = tokio::time::interval(SHAPING_TICK);
    let result = loop {
        tokio::select! {
            msg = rx.recv() => {
                let r = match msg { Ok(m) => s.handle(m).await, Err(e) => Err(e) };
                if let Err(e) = r { break Err(e); }
            }
            Some(reply) = reply_rx.recv() => {
                if let Control::SubscribeError { id, .. } = &reply { s.drop_sub(*id); }
                if let Err(e) = s.tx.send(&reply).await { break Err(e); }
            }
            changed = access_rx.changed() => {
                if changed.is_err() { break Ok(()); }
                s.access = access_rx.borrow_and_update().clone();
                info!(site, "policy reloaded");
                s.apply_shaping_policy();
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
            _ = shaping_tick.tick() => s.measure_and_publish(),
            change = ptz_locks.recv() => match change {
                Ok(change) => if let Err(e) = s.forward_lock(change).await { break Err(e); },
                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                    warn!(site, missed = n, "ptz: lock notices lagged; the next command refreshes the holder");
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => break Ok(()),
            },
            _ = stats.tick() => {
                let ended: Vec<u64> = s.subs.iter().filter(|(_, sub)| sub.task.is_finished()).map(|(id, _)| *id).collect();
                for id in ended {
                    s.drop_sub(id);
                }
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
    s.shared.shaping.remove(site);
    s.counters.subscriptions.store(0, Ordering::Relaxed);
    s.shared.links.close(site);
    // Cameras this site was moving stop now, not at the dead-man.
    s.shared.ptz.drop_site(site);
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
    /// Tells the relay about a PTZ lock change if its site may steer the camera.
    async fn forward_lock(&mut self, change: crate::ptz::LockChange) -> Result<(), SessionError> {
        let catalog = self.shared.cameras.catalog();
        if !crate::ptz::PtzService::site_may_see_lock(&self.access, self.site, &catalog, &change.camera) {
            return Ok(());
        }
        self.tx.send(&Control::PtzLock { camera: change.camera, holder: change.holder }).await
    }

    async fn send_catalog(&mut self) -> Result<(), SessionError> {
        let cameras = self.access.catalog(self.site, &self.shared.cameras.catalog());
        if self.sent_catalog.as_ref() == Some(&cameras) {
            // A device of another site, or one this site may not see,
            // changed: nothing to tell this relay.
            return Ok(());
        }
        self.sent_catalog = Some(cameras.clone());
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
            let Some(sub) = self.drop_sub(id) else { continue };
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
                if let Some(sub) = self.drop_sub(id) {
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
            Control::Ptz { id, camera, viewer, command } => {
                // Decided and queued now (so commands keep their order);
                // the camera's answer goes back through the reply channel,
                // without holding up this loop.
                // A relay without accounts may not name its viewers.
                let viewer = if viewer.is_empty() { "anonymous".to_owned() } else { viewer };
                let who = crate::ptz::Requester::Site { site: self.site.to_owned(), viewer };
                self.shared.ptz.answer_relay(
                    &self.ptz_under_way,
                    &self.reply_tx,
                    &who,
                    id,
                    &camera,
                    &command,
                );
            }
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
        if let Some(old) = self.drop_sub(id) {
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
                let max = self.shared.limits.max_subscriptions;
                if self.subs.len() as u32 >= max {
                    self.shared.limits.refused.fetch_add(1, Ordering::Relaxed);
                    let reason = format!(
                        "this session already holds {max} subscriptions, the agent's limit \
                         (`agent.max_subscriptions_per_session`); unsubscribe others first"
                    );
                    return self
                        .refuse(id, &camera, quality, SubscribeErrorCode::OverBudget, reason.clone(), reason)
                        .await;
                }
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
                let ladder = Ladder {
                    top: Rung::of_quality(quality),
                    has_sub: entry.qualities.contains(&Quality::Sub),
                };
                let priority = self.access.priority(site, &entry);
                self.shaping.lock().add(id, priority, ladder);
                let stats = Arc::new(SubStats::default());
                let task = self.pump(id, camera.clone(), ladder, reader, stats.clone());
                self.subs.insert(id, Subscription { camera, quality, task, stats });
                self.counters.subscriptions.store(self.subs.len() as u32, Ordering::Relaxed);
            }
        }
        Ok(())
    }

    fn pump(
        &self,
        id: u64,
        camera: String,
        ladder: Ladder,
        reader: TrackReader,
        stats: Arc<SubStats>,
    ) -> JoinHandle<()> {
        let mut readers = [None, None];
        let top = ladder.quality(ladder.top).unwrap_or(Quality::Main);
        readers[slot(top)] = Some(reader);
        let pump = Pump {
            site: self.site.to_owned(),
            id,
            camera,
            ladder,
            cameras: self.shared.cameras.clone(),
            shaping: self.shaping.clone(),
            stats,
            counters: self.counters.clone(),
            reply_tx: self.reply_tx.clone(),
            gops: GopSender::new(self.conn.clone(), id, self.priorities.clone()),
            readers,
            meters: [RateMeter::default(), RateMeter::default()],
            clocks: [None, None],
            target: None,
            sending: None,
            paused: false,
            last: SendCounters::default(),
        };
        tokio::spawn(pump.run())
    }

    /// Forgets a subscription (the caller ends its task).
    fn drop_sub(&mut self, id: u64) -> Option<Subscription> {
        self.shaping.lock().remove(id);
        let sub = self.subs.remove(&id);
        self.counters.subscriptions.store(self.subs.len() as u32, Ordering::Relaxed);
        sub
    }

    /// Applies the site's budget and priorities after a policy reload.
    fn apply_shaping_policy(&mut self) {
        let catalog = self.shared.cameras.catalog();
        let budget = self.access.budget(self.site);
        let mut shaper = self.shaping.lock();
        if shaper.budget() != budget {
            info!(
                site = self.site,
                budget_mbps = %mbps_or_unlimited(budget.bps),
                burst_kb = budget.burst_bytes / 1024.0,
                "shaping: new link budget"
            );
            shaper.set_budget(budget);
        }
        for (id, sub) in &self.subs {
            if let Some(entry) = catalog.iter().find(|c| c.id == sub.camera) {
                shaper.set_priority(*id, self.access.priority(self.site, entry));
            }
        }
    }

    /// Measures the QUIC path, feeds the shaper, publishes the snapshot.
    fn measure_and_publish(&mut self) {
        let now = Instant::now();
        let st = self.conn.stats();
        let payload = self.counters.bytes_sent.load(Ordering::Relaxed);
        let sample = PathSample {
            sent_bytes: st.udp_tx.bytes,
            sent_datagrams: st.udp_tx.datagrams,
            lost_bytes: st.path.lost_bytes,
            rtt: st.path.rtt,
            min_rtt: st.path.min_rtt,
            offered_bytes: payload,
        };
        let capacity = self.path.estimator.update(now, sample);
        let wire = st.udp_tx.bytes + st.udp_tx.datagrams * IP_UDP_OVERHEAD;
        if let Some((t, w, p)) = self.path.last {
            let dt = now.saturating_duration_since(t).as_secs_f64();
            let (dw, dp) = (wire.saturating_sub(w), payload.saturating_sub(p));
            if dt > 0.0 {
                self.path.sent_bps = dw as f64 * 8.0 / dt;
            }
            // Enough media to say what the headers cost (not while media
            // piles up in QUIC's buffers: then less goes out than comes in).
            if dp > 64 * 1024 && capacity.is_none() {
                let ratio = (dw as f64 / dp as f64).clamp(1.0, 1.5);
                self.path.overhead = self.path.overhead * 0.8 + ratio * 0.2;
            }
        }
        self.path.last = Some((now, wire, payload));
        if capacity.is_some() != self.path.limited {
            self.path.limited = capacity.is_some();
            match capacity {
                Some(c) => warn!(
                    site = self.site,
                    capacity_mbps = mbps(c),
                    lost_bytes = st.path.lost_bytes,
                    rtt_ms = st.path.rtt.as_secs_f64() * 1e3,
                    "shaping: the path is congested; shaping to what it delivers"
                ),
                None => info!(site = self.site, "shaping: the path is clear again; back to the link budget"),
            }
        }
        let snapshot = {
            let mut shaper = self.shaping.lock();
            shaper.set_path_capacity(capacity);
            shaper.set_overhead(self.path.overhead);
            let effective = shaper.effective_bps();
            let budget = shaper.budget();
            let subscriptions = shaper
                .view()
                .into_iter()
                .filter_map(|v| {
                    let sub = self.subs.get(&v.id)?;
                    Some(SubscriptionSnapshot {
                        id: v.id,
                        camera: sub.camera.clone(),
                        requested: sub.quality,
                        priority: v.priority,
                        rung: v.rung,
                        bytes_sent: sub.stats.bytes.load(Ordering::Relaxed),
                        gops_sent: sub.stats.gops.load(Ordering::Relaxed),
                        gops_reset: sub.stats.gops_reset.load(Ordering::Relaxed),
                        step_downs: v.step_downs,
                        rung_changes: v.changes,
                    })
                })
                .collect();
            LinkSnapshot {
                site: self.site.to_owned(),
                budget_bps: budget.bps,
                burst_bytes: budget.burst_bytes,
                path_capacity_bps: capacity,
                effective_bps: effective,
                planned_bps: shaper.planned_bps(),
                sent_bps: self.path.sent_bps,
                budget_use: effective.map(|e| self.path.sent_bps / e),
                overhead: self.path.overhead,
                bytes_sent: payload,
                gops_reset: self.counters.gops_dropped.load(Ordering::Relaxed),
                subscriptions,
            }
        };
        if self.path.last_log.is_none_or(|t| now.saturating_duration_since(t) >= SHAPING_LOG_EVERY) {
            self.path.last_log = Some(now);
            let rungs: Vec<String> = snapshot
                .subscriptions
                .iter()
                .map(|s| format!("{}={}", s.camera, s.rung.map_or("-", Rung::name)))
                .collect();
            debug!(
                site = self.site,
                effective_mbps = %mbps_or_unlimited(snapshot.effective_bps),
                planned_mbps = mbps(snapshot.planned_bps),
                sent_mbps = mbps(snapshot.sent_bps),
                overhead = snapshot.overhead,
                rungs = %rungs.join(" "),
                "shaping: link"
            );
        }
        self.shared.shaping.publish(snapshot);
    }
}

/// Bit/s as Mbit/s for a log line: one decimal, never negative (a sum of
/// rates can come out a hair below zero, which printed `-0.0`).
fn mbps(bps: f64) -> f64 {
    // `+ 0.0` turns a remaining -0.0 into 0.0.
    (bps / 1e5).round().max(0.0) / 10.0 + 0.0
}

/// [`mbps`] of a budget, `unlimited` without one.
fn mbps_or_unlimited(bps: Option<f64>) -> String {
    bps.map_or_else(|| "unlimited".to_owned(), |b| mbps(b).to_string())
}

/// Index of a quality's reader and meter in a pump.
fn slot(q: Quality) -> usize {
    match q {
        Quality::Main => 0,
        Quality::Sub => 1,
    }
}

const QUALITIES: [Quality; 2] = [Quality::Main, Quality::Sub];

/// Next item of an optional reader; never resolves without one.
async fn next_item(reader: &mut Option<TrackReader>) -> Option<HubItem> {
    match reader {
        Some(r) => r.next().await,
        None => std::future::pending().await,
    }
}

/// Sends one subscription's media, rung by rung.
struct Pump {
    site: String,
    id: u64,
    camera: String,
    ladder: Ladder,
    cameras: Arc<Cameras>,
    shaping: Arc<SiteShaping>,
    stats: Arc<SubStats>,
    counters: Arc<SessionCounters>,
    reply_tx: mpsc::Sender<Control>,
    gops: GopSender,
    /// Main and substream readers (index: [`slot`]).
    readers: [Option<TrackReader>; 2],
    meters: [RateMeter; 2],
    /// Per stream: (pts, instant) the meter's media clock started at.
    clocks: [Option<(u64, Instant)>; 2],
    /// The rung the shaper chose at the last GOP boundary.
    target: Option<Rung>,
    /// The stream whose GOPs go out now, and the rung they go out at; it
    /// lags `target` until the target stream's next keyframe.
    sending: Option<(Quality, Rung)>,
    /// The relay was told this subscription is paused.
    paused: bool,
    last: SendCounters,
}

impl Pump {
    fn top(&self) -> Quality {
        self.ladder.quality(self.ladder.top).unwrap_or(Quality::Main)
    }

    async fn run(mut self) {
        loop {
            let [main, sub] = &mut self.readers;
            let (quality, item) = tokio::select! {
                item = next_item(main) => (Quality::Main, item),
                item = next_item(sub) => (Quality::Sub, item),
            };
            let Some(item) = item else {
                if quality != self.top() {
                    // The substream went away: carry on with main alone.
                    self.readers[slot(quality)] = None;
                    if self.sending.is_some_and(|(q, _)| q == quality) {
                        self.sending = None;
                        self.gops.end_gop();
                    }
                    continue;
                }
                if !self.cameras.lists(&self.camera, self.top()) {
                    // Removed from the config: the session's recheck, woken
                    // by the catalog change, revokes it and audits why.
                    return;
                }
                let reason = format!("camera `{}` stopped delivering video", self.camera);
                let _ = self
                    .reply_tx
                    .send(Control::SubscribeError { id: self.id, code: SubscribeErrorCode::Offline, reason })
                    .await;
                return;
            };
            if self.handle(quality, item).await.is_err() {
                return;
            }
        }
    }

    async fn handle(&mut self, quality: Quality, item: HubItem) -> Result<(), SessionError> {
        let now = Instant::now();
        let keyframe = item.frame.keyframe;
        let at = self.media_time(quality, item.frame.pts, now);
        self.meters[slot(quality)].record(at, item.frame.payload.len() as u64, keyframe);
        if keyframe && self.decides_on(quality) {
            self.decide(now).await;
        }
        let Some(target) = self.target else { return Ok(()) };
        if target == Rung::Paused {
            if self.sending.take().is_some() {
                self.gops.end_gop();
            }
            return Ok(());
        }
        // Switch (stream or rung) only at a keyframe of the target stream:
        // the receiver's decoder starts clean on it.
        if keyframe && self.ladder.quality(target) == Some(quality) {
            self.sending = Some((quality, target));
        }
        let Some((sending, rung)) = self.sending else { return Ok(()) };
        if sending != quality || (rung == Rung::KeyframesOnly && !keyframe) {
            return Ok(());
        }
        self.gops.send(&item, quality).await?;
        self.shaping.lock().on_sent(item.frame.payload.len() as u64, now);
        self.account();
        Ok(())
    }

    /// GOP boundaries that count: those of the stream being sent, else of
    /// the stream awaited, else (paused) of the cheapest stream read.
    fn decides_on(&self, quality: Quality) -> bool {
        let on = match (self.target, self.sending) {
            (None, _) => return true,
            (_, Some((q, _))) => q,
            (Some(t), None) => self.ladder.quality(t).unwrap_or_else(|| {
                if self.readers[slot(Quality::Sub)].is_some() {
                    Quality::Sub
                } else {
                    self.top()
                }
            }),
        };
        on == quality
    }

    async fn decide(&mut self, now: Instant) {
        let shaped = self.shaping.lock().effective_bps().is_some();
        self.ensure_readers(shaped);
        let rates = self.rates(now);
        let (rung, change, priority) = {
            let mut shaper = self.shaping.lock();
            shaper.observe(self.id, rates);
            let (rung, change) = shaper.decide(self.id, now);
            (rung, change, shaper.priority(self.id))
        };
        // Under congestion QUIC serves higher classes first; equals share.
        if let Some(p) = priority {
            self.gops.set_class(p as i32);
        }
        if let Some(change) = change {
            self.log_change(&change, shaped);
        }
        if rung == Rung::Paused && !self.paused {
            self.paused = true;
            let msg = Control::Paused { id: self.id, reason: PAUSED_REASON.into() };
            let _ = self.reply_tx.send(msg).await;
        } else if rung != Rung::Paused && self.paused {
            self.paused = false;
            let _ = self.reply_tx.send(Control::Resumed { id: self.id }).await;
        }
        self.target = Some(rung);
    }

    fn log_change(&self, c: &RungChange, shaped: bool) {
        let from = c.from.map_or("-", Rung::name);
        let budget_mbps = mbps_or_unlimited(c.budget_bps);
        let planned_mbps = mbps(c.planned_bps);
        if shaped {
            info!(
                site = %self.site,
                camera = %self.camera,
                subscription = self.id,
                from,
                to = c.to.name(),
                reason = c.reason.name(),
                %budget_mbps,
                planned_mbps,
                "shaping: rung changed"
            );
        } else {
            debug!(site = %self.site, camera = %self.camera, subscription = self.id, from, to = c.to.name(), "shaping: unlimited link");
        }
    }

    /// While the site is shaped, reads every stream of the ladder; else only
    /// the one it sends.
    fn ensure_readers(&mut self, shaped: bool) {
        let top = self.top();
        let awaited = self.target.and_then(|t| self.ladder.quality(t));
        for q in QUALITIES {
            let on_ladder = self.ladder.has(Rung::of_quality(q));
            let needed = on_ladder
                && (shaped || q == top || self.sending.is_some_and(|(s, _)| s == q) || awaited == Some(q));
            let i = slot(q);
            if needed && self.readers[i].is_none() {
                let Some(mut reader) = self.cameras.subscribe(&self.camera, q) else { continue };
                if self.target.is_some() {
                    // The cached GOP is older than what was sent already:
                    // wait for this stream's next live keyframe instead.
                    while reader.try_next().is_some() {}
                }
                self.readers[i] = Some(reader);
                self.meters[i] = RateMeter::default();
                self.clocks[i] = None;
            } else if !needed && self.readers[i].is_some() {
                self.readers[i] = None;
            }
        }
    }

    /// A frame's time on its stream's media clock (pts), so a cached GOP
    /// delivered at once on subscribing is measured at its real pace.
    fn media_time(&mut self, quality: Quality, pts: u64, now: Instant) -> Instant {
        let i = slot(quality);
        if let Some((pts0, t0)) = self.clocks[i] {
            if let Some(d) = pts.checked_sub(pts0) {
                let at =
                    t0 + Duration::from_micros(d * 1_000_000 / u64::from(ponte_proto::media::CLOCK_RATE));
                // A jump (camera reconnect, pts reset) restarts the clock.
                if at <= now + Duration::from_secs(5) {
                    return at;
                }
            }
            self.meters[i] = RateMeter::default();
        }
        self.clocks[i] = Some((pts, now));
        now
    }

    fn rates(&mut self, now: Instant) -> StreamRates {
        let kf = self.ladder.quality(Rung::KeyframesOnly).map_or(0, slot);
        let mut rate = |i: usize, keyframes: bool| {
            let m = &mut self.meters[i];
            let at = m.latest().unwrap_or(now);
            if keyframes {
                m.keyframes_bps(at)
            } else {
                m.bps(at)
            }
        };
        StreamRates {
            main_bps: if self.ladder.has(Rung::Main) { rate(0, false) } else { None },
            sub_bps: if self.ladder.has(Rung::Sub) { rate(1, false) } else { None },
            keyframes_bps: rate(kf, true),
        }
    }

    fn account(&mut self) {
        let now = self.gops.counters();
        let last = self.last;
        self.counters.bytes_sent.fetch_add(now.bytes - last.bytes, Ordering::Relaxed);
        self.counters.gops_dropped.fetch_add(now.gops_reset - last.gops_reset, Ordering::Relaxed);
        self.stats.bytes.store(now.bytes, Ordering::Relaxed);
        self.stats.gops.store(now.gops, Ordering::Relaxed);
        self.stats.gops_reset.store(now.gops_reset, Ordering::Relaxed);
        self.last = now;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mbps_reads_well_in_a_log_line() {
        assert_eq!(mbps(-1e-9).to_string(), "0", "no negative zero");
        assert_eq!(mbps(-0.0).to_string(), "0");
        assert_eq!(mbps(-3e6).to_string(), "0");
        assert_eq!(mbps(16e6).to_string(), "16");
        assert_eq!(mbps(2_349_999.0).to_string(), "2.3");
        assert_eq!(mbps_or_unlimited(None), "unlimited");
        assert_eq!(mbps_or_unlimited(Some(20e6)), "20");
    }
}
