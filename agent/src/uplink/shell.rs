//! One relay session: the `select!` loop over the QUIC connection, its
//! control stream, policy and catalog changes, PTZ lock notices and timers.

use super::boards::{LinkSnapshot, SessionCounters, SubStats, SubscriptionSnapshot};
use super::pump::{slot, Pump, SiteShaping};
use super::Shared;
use crate::access::Access;
use ponte_proto::audit::AuditRecord;
use ponte_proto::hub::TrackReader;
use ponte_proto::media::Quality;
use ponte_proto::policy::Decision;
use ponte_proto::session::{self, ControlSender, GopSender, PriorityClock, SendCounters, SessionError};
use ponte_proto::shaping::{
    Hysteresis, Ladder, PathEstimator, PathSample, RateMeter, Rung, Shaper, IP_UDP_OVERHEAD,
};
use ponte_proto::wire::{Control, Role, StatsReport, SubscribeErrorCode, PROTOCOL_VERSION};
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::{debug, error, info, warn};

struct Subscription {
    camera: String,
    quality: Quality,
    task: JoinHandle<()>,
    stats: Arc<SubStats>,
}
/// How often subscriptions are re-checked against the policy (time windows).
const POLICY_TICK: Duration = Duration::from_millis(500);
/// How often the path is measured and the shaping snapshot published.
const SHAPING_TICK: Duration = Duration::from_millis(500);
/// How often the link's shaping summary is logged (debug level).
const SHAPING_LOG_EVERY: Duration = Duration::from_secs(5);

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

pub(super) async fn run_session(
    site: &str,
    conn: quinn::Connection,
    mut shared: Shared,
) -> Result<(), SessionError> {
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
pub(super) fn mbps(bps: f64) -> f64 {
    // `+ 0.0` turns a remaining -0.0 into 0.0.
    (bps / 1e5).round().max(0.0) / 10.0 + 0.0
}

/// [`mbps`] of a budget, `unlimited` without one.
pub(super) fn mbps_or_unlimited(bps: Option<f64>) -> String {
    bps.map_or_else(|| "unlimited".to_owned(), |b| mbps(b).to_string())
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
