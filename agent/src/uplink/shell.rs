//! One relay session: the `select!` loop over the QUIC connection. It
//! translates what happens (the relay's control messages, policy and
//! catalog changes, PTZ lock notices, pump replies, timer ticks) into calls
//! on the session's [`SessionState`] and executes the actions it returns;
//! it also measures the QUIC path for the shaper and publishes the
//! session's figures.

use super::boards::{LinkSnapshot, SessionCounters, SubStats, SubscriptionSnapshot};
use super::pump::{Gate, PerStream, Pump, SiteShaping};
use super::state::{Action, SessionState};
use super::{mbps, mbps_or_unlimited, Shared};
use ponte_proto::hub::TrackReader;
use ponte_proto::media::Quality;
use ponte_proto::session::{self, ControlSender, GopSender, PriorityClock, SendCounters, SessionError};
use ponte_proto::shaping::{Hysteresis, Ladder, PathEstimator, PathSample, Rung, Shaper, IP_UDP_OVERHEAD};
use ponte_proto::wire::{Control, Role, PROTOCOL_VERSION};
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::{debug, error, info, warn};

/// A running pump.
struct Running {
    task: JoinHandle<()>,
    stats: Arc<SubStats>,
}

/// How often subscriptions are re-checked against the policy (time windows).
const POLICY_TICK: Duration = Duration::from_millis(500);
/// How often the path is measured and the shaping snapshot published.
const SHAPING_TICK: Duration = Duration::from_millis(500);
/// Share of the site's effective budget an export's clip may take; the
/// bytes are counted by the shaper, so live cameras see them too.
const EXPORT_SHARE: f64 = 0.25;
/// An export's clip goes out in pieces this big, paced between them.
const EXPORT_CHUNK: usize = 64 * 1024;

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
    /// The QUIC send window last applied.
    send_window: u64,
    /// The capacity the pumps were last told to decide at once under.
    narrowed_to: Option<f64>,
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
            send_window: 0,
            narrowed_to: None,
        }
    }
}

struct Session<'a> {
    site: &'a str,
    /// The link's name on the boards (`site`, or `site addr` for a pair).
    label: &'a str,
    conn: quinn::Connection,
    shared: Shared,
    state: SessionState,
    tx: ControlSender,
    pumps: HashMap<u64, Running>,
    /// The track opened for [`Action::OpenCamera`], until its
    /// [`Action::StartPump`].
    opened: Option<(u64, TrackReader)>,
    counters: Arc<SessionCounters>,
    priorities: Arc<PriorityClock>,
    reply_tx: mpsc::Sender<Control>,
    shaping: Arc<SiteShaping>,
    path: PathMeter,
    /// Bounds the PTZ answers not yet written.
    ptz_under_way: Arc<tokio::sync::Semaphore>,
}

pub(super) async fn run_session(
    site: &str,
    label: &str,
    paths: usize,
    conn: quinn::Connection,
    mut shared: Shared,
) -> Result<(), SessionError> {
    let access = shared.access.borrow_and_update().clone();
    let state = SessionState::new(site, access, shared.limits.max_subscriptions).with_agents(
        &shared.node,
        shared.agents.clone(),
        paths,
    );
    let hello = Control::Hello {
        version: PROTOCOL_VERSION,
        node: shared.node.clone(),
        role: Role::Agent,
        policy: Some(state.hello_digest()),
    };
    let (tx, mut rx, _peer) = session::open_control(&conn, &hello).await?;
    // Replies from pump tasks (e.g. a camera track that ended) funnel here so
    // only this task writes the control stream.
    let (reply_tx, mut reply_rx) = mpsc::channel::<Control>(64);
    let budget = state.budget();
    let mut access_rx = shared.access.clone();
    let mut catalog_rx = shared.cameras.catalog_version();
    let mut s = Session {
        site,
        label,
        conn: conn.clone(),
        shared,
        state,
        tx,
        pumps: HashMap::new(),
        opened: None,
        counters: Arc::new(SessionCounters::default()),
        priorities: Arc::new(PriorityClock::default()),
        reply_tx,
        shaping: Arc::new(SiteShaping::new(Shaper::new(budget, Hysteresis::default()))),
        path: PathMeter::default(),
        ptz_under_way: crate::ptz::session_gate(),
    };
    let mut ptz_locks = s.shared.ptz.subscribe_locks();
    let mut incidents = s.shared.incidents.subscribe();
    let catalog = s.shared.cameras.catalog();
    let actions = s.state.send_catalog(&catalog);
    s.execute(actions).await?;
    // Who holds the cameras this site may steer, as of now.
    for change in s.shared.ptz.holders() {
        let actions = s.state.lock_changed(change.camera, change.holder, &catalog);
        s.execute(actions).await?;
    }
    // Shares in force, answers and recent alarms, as of now.
    for notice in s.shared.incidents.snapshot_for(site) {
        let actions = s.state.incident(site, notice, &catalog);
        s.execute(actions).await?;
    }
    // From here every way out passes the `close` below.
    s.shared.links.open(label, conn.clone(), s.counters.clone());
    let mut stats = tokio::time::interval(Duration::from_secs(5));
    let mut policy_tick = tokio::time::interval(POLICY_TICK);
    let mut shaping_tick = tokio::time::interval(SHAPING_TICK);
    // The first tick is at once: the relay anchors this log as the session starts.
    let mut anchor_tick = tokio::time::interval(s.shared.anchor_every);
    let mut shutting_down = s.shared.shutting_down.clone();
    let mut final_head_sent = false;
    let result = loop {
        let actions = tokio::select! {
            msg = rx.recv() => match msg {
                Ok(m) => match s.state.handle(m, &s.shared.cameras.catalog(), s.shared.clock.now()) {
                    Ok(actions) => actions,
                    Err(e) => break Err(e),
                },
                Err(e) => break Err(e),
            },
            Some(reply) = reply_rx.recv() => s.state.reply(reply),
            changed = access_rx.changed() => {
                if changed.is_err() { break Ok(()); }
                let access = access_rx.borrow_and_update().clone();
                s.state.policy_reloaded(access, &s.shared.cameras.catalog(), s.shared.clock.now())
            }
            changed = catalog_rx.changed() => {
                if changed.is_err() { break Ok(()); }
                catalog_rx.borrow_and_update();
                s.state.catalog_changed(&s.shared.cameras.catalog(), s.shared.clock.now())
            }
            _ = policy_tick.tick() => s.state.tick(&s.shared.cameras.catalog(), s.shared.clock.now()),
            _ = shaping_tick.tick() => { s.measure_and_publish(); Vec::new() }
            _ = anchor_tick.tick() => s.audit_head(),
            Ok(()) = async { shutting_down.wait_for(|down| *down).await.map(drop) }, if !final_head_sent => {
                final_head_sent = true;
                s.audit_head()
            }
            change = ptz_locks.recv() => match change {
                Ok(change) => s.state.lock_changed(change.camera, change.holder, &s.shared.cameras.catalog()),
                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                    warn!(site, missed = n, "ptz: lock notices lagged; the next command refreshes the holder");
                    Vec::new()
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => break Ok(()),
            },
            notice = incidents.recv() => match notice {
                Ok((to, notice)) => s.state.incident(&to, notice, &s.shared.cameras.catalog()),
                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                    warn!(site, missed = n, "incident: notices lagged; sending the site's state again");
                    let catalog = s.shared.cameras.catalog();
                    s.shared.incidents.snapshot_for(site).into_iter().flat_map(|n| s.state.incident(site, n, &catalog)).collect()
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => break Ok(()),
            },
            _ = stats.tick() => {
                let finished: Vec<u64> =
                    s.pumps.iter().filter(|(_, p)| p.task.is_finished()).map(|(id, _)| *id).collect();
                s.state.stats(
                    &finished,
                    s.counters.bytes_sent.load(Ordering::Relaxed),
                    s.counters.gops_dropped.load(Ordering::Relaxed),
                )
            }
            e = conn.closed() => break Err(e.into()),
        };
        if let Err(e) = s.execute(actions).await {
            break Err(e);
        }
    };
    s.shared.shaping.remove(label);
    s.counters.subscriptions.store(0, Ordering::Relaxed);
    s.shared.links.close(label);
    // Cameras this site was moving stop now, not at the dead-man (unless
    // the site is still reached on another path or relay of its pair).
    if !s.shared.links.any_live(site) {
        s.shared.ptz.drop_site(site);
    }
    // The control stream is gone or broken: only the local actions matter.
    let ended = s.state.end();
    s.execute_local(ended);
    if let Err(SessionError::Wire(_) | SessionError::Protocol(_)) = &result {
        conn.close(session::close_code::PROTOCOL.into(), b"protocol violation");
    }
    result
}

impl Session<'_> {
    /// Carries out the state's actions, in order.
    async fn execute(&mut self, actions: Vec<Action>) -> Result<(), SessionError> {
        let mut queue = VecDeque::from(actions);
        while let Some(action) = queue.pop_front() {
            match action {
                Action::Send(msg) => {
                    if let Err(e) = self.tx.send(&msg).await {
                        // What the state already decided still ends its
                        // pumps and reaches the audit log.
                        self.execute_local(queue);
                        return Err(e);
                    }
                }
                Action::Audit(record) => self.write_audit(*record),
                Action::Incident(action) => self.shared.incidents.site_action(self.site, action),
                Action::OpenCamera { id, camera, quality, playback: Some(p) } => {
                    let next = match self.shared.recall.playback(&camera, quality, p) {
                        Ok(reader) => {
                            self.opened = Some((id, reader));
                            self.state.camera_opened(id, true)
                        }
                        Err(reason) => self.state.camera_not_recorded(id, reason),
                    };
                    for next in next.into_iter().rev() {
                        queue.push_front(next);
                    }
                }
                Action::OpenCamera { id, camera, quality, playback: None } => {
                    let next = match self.shared.cameras.open(&camera, quality) {
                        Ok(reader) => {
                            let opened = reader.is_some();
                            self.opened = reader.map(|r| (id, r));
                            self.state.camera_opened(id, opened)
                        }
                        Err(reason) => self.state.camera_refused(id, reason),
                    };
                    for next in next.into_iter().rev() {
                        queue.push_front(next);
                    }
                }
                Action::StartPump { id, camera, ladder, priority } => {
                    let Some((_, reader)) = self.opened.take_if(|(o, _)| *o == id) else { continue };
                    self.shaping.lock().add(id, priority, ladder);
                    let stats = Arc::new(SubStats::default());
                    let task = self.pump(id, camera, ladder, reader, stats.clone());
                    self.pumps.insert(id, Running { task, stats });
                }
                Action::StopPump { id } => self.stop_pump(id),
                Action::Ptz { id, camera, viewer, command } => {
                    // Decided and queued now (so commands keep their order);
                    // the camera's answer goes back through the reply
                    // channel, without holding up this loop.
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
                Action::Recordings { id, camera, quality, earliest_ms, export } => {
                    let ranges = self
                        .shared
                        .recall
                        .ranges(&camera, quality)
                        .into_iter()
                        .filter_map(|[a, b]| {
                            let a = earliest_ms.map_or(a, |e| a.max(e));
                            (a < b).then_some([a, b])
                        })
                        .collect();
                    queue.push_front(Action::Send(Control::RecordingsInfo {
                        id,
                        ranges,
                        earliest_ms,
                        export,
                        refused: None,
                    }));
                }
                Action::Export { id, camera, quality, from_ms, to_ms, viewer } => {
                    let request = crate::recall::ExportRequest {
                        camera,
                        quality,
                        from_ms,
                        to_ms,
                        operator: viewer,
                        site: self.site.to_owned(),
                    };
                    self.export(id, request);
                }
                Action::SetBudget(budget) => self.shaping.lock().set_budget(budget),
                Action::SetPriority { id, priority } => self.shaping.lock().set_priority(id, priority),
                Action::LimitRefused => {
                    self.shared.limits.refused.fetch_add(1, Ordering::Relaxed);
                }
            }
            self.counters.subscriptions.store(self.state.len() as u32, Ordering::Relaxed);
        }
        Ok(())
    }

    /// Carries out the actions that need no control stream (audit lines,
    /// pumps stopped), once it is gone; the rest are moot.
    fn execute_local(&mut self, actions: impl IntoIterator<Item = Action>) {
        for action in actions {
            match action {
                Action::Audit(record) => self.write_audit(*record),
                Action::StopPump { id } => self.stop_pump(id),
                _ => {}
            }
        }
        for (_, p) in self.pumps.drain() {
            p.task.abort();
        }
        self.counters.subscriptions.store(self.state.len() as u32, Ordering::Relaxed);
    }

    /// The head of the audit log, for the relay to anchor.
    fn audit_head(&self) -> Vec<Action> {
        self.shared
            .audit
            .chain_head()
            .map(|(seq, hash)| vec![Action::Send(Control::AuditHead { seq, hash })])
            .unwrap_or_default()
    }

    fn write_audit(&self, record: ponte_proto::audit::AuditRecord) {
        if let Err(e) = self.shared.audit.write(record) {
            error!(site = self.site, error = %e, path = %self.shared.audit.path().display(), "cannot write the audit log");
        }
    }

    /// Builds an export off the session's loop and sends it: the answer on
    /// the control stream (through the reply channel), then the signed
    /// manifest and the clip on one stream below every GOP in priority,
    /// paced to a quarter of the site's budget and counted by its shaper.
    fn export(&self, id: u64, request: crate::recall::ExportRequest) {
        let (recall, conn, reply) = (self.shared.recall.clone(), self.conn.clone(), self.reply_tx.clone());
        let shaping = self.shaping.clone();
        let site = self.site.to_owned();
        tokio::spawn(async move {
            let audit = |outcome: &str, reason: String| {
                let record = ponte_proto::audit::AuditRecord {
                    site: Some(request.site.clone()),
                    viewer: Some(request.operator.clone()),
                    camera: Some(request.camera.clone()),
                    quality: Some(request.quality.name().to_owned()),
                    action: "export".into(),
                    outcome: outcome.into(),
                    reason: Some(reason),
                    ..Default::default()
                };
                if let Err(e) = recall.audit().write(record) {
                    error!(error = %e, "cannot write the audit log");
                }
            };
            let exported = match recall.export(request.clone()).await {
                Ok(x) => x,
                Err(why) => {
                    warn!(site = %site, camera = %request.camera, %why, "export failed");
                    audit("failed", why.clone());
                    let _ = reply.send(Control::ExportResult { id, refused: Some(why), bytes: 0 }).await;
                    return;
                }
            };
            let bytes = exported.clip.len() as u64;
            let _ = reply.send(Control::ExportResult { id, refused: None, bytes }).await;
            let header = ponte_proto::wire::ExportHeader {
                export: id,
                manifest_len: exported.manifest.len() as u32,
                clip_len: bytes,
            };
            let sent = async {
                let mut stream = conn.open_uni().await?;
                // Below every current GOP: live video goes first.
                let _ = stream.set_priority(ponte_proto::session::SUPERSEDED_PRIORITY + 1);
                let mut head =
                    [bytes::Bytes::copy_from_slice(&header.encode()), bytes::Bytes::from(exported.manifest)];
                stream.write_all_chunks(&mut head).await?;
                let clip = bytes::Bytes::from(exported.clip);
                let mut at = 0;
                while at < clip.len() {
                    let piece = clip.slice(at..(at + EXPORT_CHUNK).min(clip.len()));
                    at += piece.len();
                    let len = piece.len() as u64;
                    let effective = {
                        let mut shaper = shaping.lock();
                        shaper.on_sent(len, Instant::now());
                        shaper.effective_bps()
                    };
                    stream.write_chunk(piece).await?;
                    if let Some(bps) = effective.filter(|b| *b > 0.0) {
                        tokio::time::sleep(Duration::from_secs_f64(len as f64 * 8.0 / (bps * EXPORT_SHARE)))
                            .await;
                    }
                }
                stream.finish()?;
                stream.stopped().await?;
                Ok::<_, anyhow::Error>(())
            }
            .await;
            match sent {
                Ok(()) => {
                    info!(site = %site, camera = %request.camera, bytes, frames = exported.frames, "export sent");
                    audit(
                        "sent",
                        format!("{bytes} bytes, {} frames, sha256 {}", exported.frames, exported.sha256),
                    );
                }
                Err(e) => {
                    warn!(site = %site, camera = %request.camera, error = %e, "export: sending the clip failed");
                    audit("failed", format!("sending the clip failed: {e}"));
                }
            }
        });
    }

    fn stop_pump(&mut self, id: u64) {
        self.shaping.lock().remove(id);
        if let Some(p) = self.pumps.remove(&id) {
            p.task.abort();
        }
    }

    fn pump(
        &self,
        id: u64,
        camera: String,
        ladder: Ladder,
        reader: TrackReader,
        stats: Arc<SubStats>,
    ) -> JoinHandle<()> {
        let mut readers = PerStream::default();
        let top = ladder.quality(ladder.top).unwrap_or(Quality::Main);
        *readers.of_mut(top) = Some(reader);
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
            meters: PerStream::default(),
            clocks: PerStream::default(),
            gate: Gate::new(id, ladder),
            last: SendCounters::default(),
            narrowed_seen: self.shaping.narrowed.load(Ordering::Relaxed),
            playback: self.state.subscription(id).is_some_and(|s| s.playback.is_some()),
        };
        tokio::spawn(pump.run())
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
        // Found limited, or a fifth narrower than when last found: every
        // pump decides at its next frame, not its next GOP.
        let narrower = match (capacity, self.path.narrowed_to) {
            (Some(_), None) => true,
            (Some(c), Some(before)) => c < before * 0.8,
            (None, _) => false,
        };
        if narrower {
            self.path.narrowed_to = capacity;
        } else if capacity.is_none() {
            self.path.narrowed_to = None;
        }
        let snapshot = {
            let mut shaper = self.shaping.lock();
            shaper.set_path_capacity(capacity);
            if narrower {
                // After the capacity is in: the pumps decide under it.
                self.shaping.narrowed.fetch_add(1, Ordering::Relaxed);
            }
            shaper.set_overhead(self.path.overhead);
            let window = shaper.send_window();
            if window != self.path.send_window {
                // What QUIC may hold for this link follows the effective
                // budget: a narrowed path cannot queue more than two GOPs.
                self.conn.set_send_window(window);
                debug!(site = self.site, send_window_bytes = window, "shaping: QUIC send window");
                self.path.send_window = window;
            }
            let effective = shaper.effective_bps();
            let budget = shaper.budget();
            let subscriptions = shaper
                .view()
                .into_iter()
                .filter_map(|v| {
                    let sub = self.state.subscription(v.id)?;
                    let stats = &self.pumps.get(&v.id)?.stats;
                    Some(SubscriptionSnapshot {
                        id: v.id,
                        camera: sub.camera.clone(),
                        requested: sub.quality,
                        priority: v.priority,
                        rung: v.rung,
                        bytes_sent: stats.bytes.load(Ordering::Relaxed),
                        gops_sent: stats.gops.load(Ordering::Relaxed),
                        gops_reset: stats.gops_reset.load(Ordering::Relaxed),
                        step_downs: v.step_downs,
                        rung_changes: v.changes,
                    })
                })
                .collect();
            LinkSnapshot {
                site: self.label.to_owned(),
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
