//! PTZ control at the agent: the site checks (policy right, visibility, time
//! windows), the arbiter (one controller per camera, priority pre-emption,
//! idle release, dead-man stop), one worker per camera that carries commands
//! out in arrival order, the audit trail, and the master room's own HTTP API
//! on the management port.
//!
//! The arbiter ([`PtzArbiter`], sans-IO) sits behind a std mutex that is
//! never held across an `.await`: a request is decided and queued to the
//! camera's worker under the lock, so two commands to one camera cannot be
//! reordered, and the caller awaits the camera's answer afterwards. A
//! command is granted only with a queue slot reserved for it, and a steering
//! command whose controller lost the lock while it waited is dropped by the
//! worker, so a pre-empted controller never steers under the new holder.

use crate::access::Access;
use crate::access::Clock;
use crate::sources::cameras::Cameras;
use crate::sources::device::{Device, DeviceKind};
use ponte_proto::audit::{AuditLog, AuditRecord};
use ponte_proto::ptz::{
    Controller, Expiry, Grant, PtzArbiter, PtzCommand, PtzErrorCode, PtzHolder, PtzPosition, PtzPreset,
    PtzReply, MASTER_PRIORITY, MASTER_SITE,
};
use ponte_proto::wire::{CatalogEntry, Control};
use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};
use tokio::sync::{broadcast, mpsc, oneshot, watch, Notify, Semaphore};
use tracing::{info, warn};

/// What a [`PtzDevice`] call returns.
pub type DeviceFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, DeviceError>> + Send + 'a>>;

/// A camera's PTZ endpoint, as the service drives it (ONVIF in production,
/// a simulated dome for the demo, a recording fake in tests).
pub trait PtzDevice: Send + Sync + 'static {
    /// Carries one operation out. A continuous move stops by itself, camera
    /// side, after its `timeout` unless renewed.
    fn execute<'a>(&'a self, op: &'a DeviceOp) -> DeviceFuture<'a, Output>;
}

/// Why a camera did not carry a command out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceError {
    /// `camera-error` or `timeout`.
    pub code: PtzErrorCode,
    /// What happened, naming the camera and the fix.
    pub message: String,
}

impl From<crate::ptz::onvif::OnvifError> for DeviceError {
    fn from(e: crate::ptz::onvif::OnvifError) -> Self {
        DeviceError { code: e.code(), message: e.to_string() }
    }
}

impl PtzDevice for crate::ptz::onvif::OnvifPtz {
    fn execute<'a>(&'a self, op: &'a DeviceOp) -> DeviceFuture<'a, Output> {
        Box::pin(async move {
            Ok(match op {
                DeviceOp::Move { pan, tilt, zoom, timeout } => {
                    self.continuous_move(*pan, *tilt, *zoom, Some(*timeout)).await?;
                    Output::Nothing
                }
                DeviceOp::Stop => {
                    self.stop().await?;
                    Output::Nothing
                }
                DeviceOp::Goto(token) => {
                    self.goto_preset(token).await?;
                    Output::Nothing
                }
                DeviceOp::Presets => Output::Presets(self.presets().await?),
                DeviceOp::Status => Output::Position(self.status().await?),
            })
        })
    }
}

/// Who asks: a viewer of a partner site (through its relay) or an operator
/// of the master room (through the management port).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Requester {
    /// A relay-local viewer of `site`.
    Site {
        /// Site id (from the relay's certificate).
        site: String,
        /// Viewer, as the relay names it.
        viewer: String,
    },
    /// A master-room operator (top priority).
    Master {
        /// Operator name.
        operator: String,
    },
}

impl Requester {
    fn site(&self) -> &str {
        match self {
            Requester::Site { site, .. } => site,
            Requester::Master { .. } => MASTER_SITE,
        }
    }

    fn viewer(&self) -> &str {
        match self {
            Requester::Site { viewer, .. } => viewer,
            Requester::Master { operator } => operator,
        }
    }
}

/// A camera's lock changed hands, was released or lapsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockChange {
    /// Camera id.
    pub camera: String,
    /// The new holder (none: free).
    pub holder: Option<PtzHolder>,
}

/// PTZ answers of one relay session not written yet (see [`PtzService::answer_relay`]).
const MAX_UNDER_WAY: usize = 512;

/// The bound on one relay session's PTZ commands under way.
pub fn session_gate() -> Arc<Semaphore> {
    Arc::new(Semaphore::new(MAX_UNDER_WAY))
}

/// Longest viewer or operator name accepted.
const MAX_NAME_LEN: usize = 128;
/// Commands queued per camera; user commands leave the last few slots to stops.
const QUEUE: usize = 32;
/// Slots of a camera's queue kept for stops (dead-man, session end).
const RESERVED_FOR_STOPS: usize = 4;
/// Bound on one camera call, whatever the client's own timeout.
const DEVICE_GUARD: Duration = Duration::from_secs(10);

/// One operation for a camera.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceOp {
    /// ONVIF `ContinuousMove`, velocities per mille; the camera stops by
    /// itself after `timeout` (the dead-man, camera side).
    Move {
        /// Pan velocity.
        pan: i16,
        /// Tilt velocity.
        tilt: i16,
        /// Zoom velocity.
        zoom: i16,
        /// ONVIF `Timeout` of the move.
        timeout: Duration,
    },
    /// ONVIF `Stop` (pan, tilt and zoom).
    Stop,
    /// ONVIF `GotoPreset` with this token.
    Goto(String),
    /// ONVIF `GetPresets`.
    Presets,
    /// ONVIF `GetStatus`.
    Status,
}

/// What a camera answered to a [`DeviceOp`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Carried out (moves, stops, presets).
    Nothing,
    /// The presets (`Presets`).
    Presets(Vec<PtzPreset>),
    /// Position and motion (`Status`).
    Position(PtzPosition),
}

/// One command for a camera's worker, with what to audit and whom to answer.
struct Job {
    op: DeviceOp,
    /// On whose behalf (the lock holder, for dead-man and session stops).
    who: Controller,
    /// Carried out only if `who` still holds the lock when the camera's
    /// turn comes: a controller pre-empted (or released) while its commands
    /// wait does not steer the camera under the new holder.
    needs_lock: bool,
    /// The command as audited (`move pan=500 tilt=0 zoom=0`).
    what: String,
    /// Audit outcome when the camera carries it out (`allowed`, `stopped`).
    ok_outcome: &'static str,
    /// Holder to report when the command releases the lock (`release`).
    releases: bool,
    reply: Option<oneshot::Sender<PtzReply>>,
}

/// The answer to a submitted command, now or once the camera has answered.
pub struct Pending(Result<PtzReply, oneshot::Receiver<PtzReply>>);

impl Pending {
    /// Waits for the answer.
    pub async fn reply(self) -> PtzReply {
        match self.0 {
            Ok(r) => r,
            Err(rx) => rx.await.unwrap_or_else(|_| {
                PtzReply::refused(
                    PtzErrorCode::CameraError,
                    "the camera's PTZ worker stopped; see the agent's log",
                )
            }),
        }
    }
}

/// State shared with the camera workers.
struct Core {
    arbiter: Mutex<PtzArbiter>,
    audit: Arc<AuditLog>,
    counts: Mutex<BTreeMap<&'static str, u64>>,
}

impl Core {
    fn arbiter(&self) -> MutexGuard<'_, PtzArbiter> {
        self.arbiter.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn holder(&self, camera: &str) -> Option<PtzHolder> {
        self.arbiter().holder(camera, Instant::now())
    }

    fn audit(&self, line: AuditLine) {
        *self.counts.lock().unwrap_or_else(|e| e.into_inner()).entry(line.outcome).or_default() += 1;
        let record = AuditRecord {
            site: Some(line.site),
            viewer: Some(line.viewer),
            camera: Some(line.camera),
            action: "ptz".into(),
            outcome: line.outcome.into(),
            reason: Some(line.reason),
            ..Default::default()
        };
        if let Err(e) = self.audit.write(record) {
            tracing::error!(error = %e, path = %self.audit.path().display(), "cannot write the audit log");
        }
    }
}

/// One audit line, written once the arbiter's lock is released.
struct AuditLine {
    site: String,
    viewer: String,
    camera: String,
    outcome: &'static str,
    reason: String,
}

struct Inner {
    core: Arc<Core>,
    /// One queue per steerable camera; replaced per camera on reload.
    workers: Mutex<HashMap<String, mpsc::Sender<Job>>>,
    cameras: Arc<Cameras>,
    access: watch::Receiver<Arc<Access>>,
    clock: Clock,
    locks: broadcast::Sender<LockChange>,
    wake: Arc<Notify>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Lets the timer task notice the service is gone.
        self.wake.notify_one();
    }
}

impl Inner {
    fn workers(&self) -> MutexGuard<'_, HashMap<String, mpsc::Sender<Job>>> {
        self.workers.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The queue of a steerable camera (a clone: no lock held while used).
    fn worker(&self, camera: &str) -> Option<mpsc::Sender<Job>> {
        self.workers().get(camera).cloned()
    }
}

/// Starts the worker that talks to one camera's PTZ endpoint; it ends when
/// its queue's last sender is dropped, after the jobs already queued.
fn start_worker(camera: String, device: Arc<dyn PtzDevice>, core: &Arc<Core>) -> mpsc::Sender<Job> {
    let (tx, rx) = mpsc::channel(QUEUE);
    tokio::spawn(worker(camera, device, core.clone(), rx));
    tx
}

/// The agent's PTZ service: shared by every relay session and the
/// master-room API.
#[derive(Clone)]
pub struct PtzService {
    inner: Arc<Inner>,
}

/// What the service needs.
pub struct Setup {
    /// Timings (`[ptz]`).
    pub config: ponte_proto::ptz::ArbiterConfig,
    /// The cameras' catalog.
    pub cameras: Arc<Cameras>,
    /// Current policies.
    pub access: watch::Receiver<Arc<Access>>,
    /// Policy clock.
    pub clock: Clock,
    /// Audit log.
    pub audit: Arc<AuditLog>,
    /// PTZ endpoint per camera id.
    pub devices: HashMap<String, Arc<dyn PtzDevice>>,
}

/// The PTZ endpoints of the `dome-ptz` devices: an ONVIF client for those
/// with `[device.onvif]`, a simulated dome for synthetic ones with
/// `[device.synthetic] ptz = true`.
pub fn devices(devices: &[Device]) -> anyhow::Result<HashMap<String, Arc<dyn PtzDevice>>> {
    use anyhow::Context as _;
    let mut out: HashMap<String, Arc<dyn PtzDevice>> = HashMap::new();
    for d in devices {
        if d.kind != DeviceKind::DomePtz {
            continue;
        }
        let Some(settings) = &d.onvif else {
            if d.synthetic.as_ref().is_some_and(|s| s.ptz) {
                let camera = d.camera_id(1);
                out.insert(camera.clone(), Arc::new(crate::ptz::sim::SimulatedDome::new(&camera)));
            }
            continue;
        };
        let creds = d.credentials()?;
        let (user, password) = match &creds {
            Some((u, p)) => (Some(u.as_str()), Some(p.as_str())),
            None => (None, None),
        };
        let client = crate::ptz::onvif::OnvifPtz::new(&d.id, settings, user, password)
            .with_context(|| format!("`[device.onvif]` of device `{}`", d.id))?;
        out.insert(d.camera_id(1), Arc::new(client));
    }
    Ok(out)
}

impl PtzService {
    /// Starts one worker per camera with a PTZ endpoint, and the dead-man timer.
    pub fn start(setup: Setup) -> Self {
        let core = Arc::new(Core {
            arbiter: Mutex::new(PtzArbiter::new(setup.config)),
            audit: setup.audit,
            counts: Mutex::new(BTreeMap::new()),
        });
        let mut workers = HashMap::new();
        for (camera, device) in setup.devices {
            workers.insert(camera.clone(), start_worker(camera, device, &core));
        }
        let wake = Arc::new(Notify::new());
        let inner = Arc::new(Inner {
            core,
            workers: Mutex::new(workers),
            cameras: setup.cameras,
            access: setup.access,
            clock: setup.clock,
            locks: broadcast::channel(256).0,
            wake: wake.clone(),
        });
        tokio::spawn(timer(Arc::downgrade(&inner), wake));
        Self { inner }
    }

    /// Changes the timings (config reload); running locks keep their state.
    pub fn set_config(&self, config: ponte_proto::ptz::ArbiterConfig) {
        self.inner.core.arbiter().set_config(config);
        self.inner.wake.notify_one();
    }

    /// Config reload: the PTZ endpoints of `cameras` (those of added,
    /// changed and removed devices) are replaced by `devices`; a camera
    /// missing from `devices` is no longer steerable. Other cameras keep
    /// their worker and queue.
    pub fn replace_devices(&self, cameras: &[String], mut devices: HashMap<String, Arc<dyn PtzDevice>>) {
        let mut workers = self.inner.workers();
        for camera in cameras {
            workers.remove(camera);
            if let Some(device) = devices.remove(camera) {
                workers.insert(camera.clone(), start_worker(camera.clone(), device, &self.inner.core));
            }
        }
    }

    /// Lock changes, for the relay sessions to forward as `PtzLock`.
    pub fn subscribe_locks(&self) -> broadcast::Receiver<LockChange> {
        self.inner.locks.subscribe()
    }

    /// Current holders of every locked camera.
    pub fn holders(&self) -> Vec<LockChange> {
        let now = Instant::now();
        let cameras: Vec<String> = self.inner.workers().keys().cloned().collect();
        let arbiter = self.inner.core.arbiter();
        let mut out: Vec<LockChange> = cameras
            .iter()
            .filter_map(|c| arbiter.holder(c, now).map(|h| LockChange { camera: c.clone(), holder: Some(h) }))
            .collect();
        out.sort_by(|a, b| a.camera.cmp(&b.camera));
        out
    }

    /// PTZ commands audited so far, by outcome.
    pub fn counts(&self) -> BTreeMap<String, u64> {
        let counts = self.inner.core.counts.lock().unwrap_or_else(|e| e.into_inner());
        counts.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect()
    }

    /// Checks, arbitrates and queues a command; the camera's answer comes
    /// through the returned [`Pending`]. Never waits on the camera.
    pub fn submit(&self, who: &Requester, camera: &str, command: &PtzCommand) -> Pending {
        let now = Instant::now();
        let mut audits = Vec::new();
        let pending = self.decide(who, camera, command, now, &mut audits);
        for line in audits {
            self.inner.core.audit(line);
        }
        pending
    }

    fn decide(
        &self,
        who: &Requester,
        camera: &str,
        command: &PtzCommand,
        now: Instant,
        audits: &mut Vec<AuditLine>,
    ) -> Pending {
        let inner = &self.inner;
        let what = describe(command);
        macro_rules! refuse {
            ($code:expr, $reason:expr, $holder:expr $(,)?) => {
                return refusal(who, camera, command, $code, $reason, $holder, audits)
            };
        }
        let viewer = who.viewer();
        if viewer.is_empty() || viewer.len() > MAX_NAME_LEN || viewer.chars().any(char::is_control) {
            refuse!(
                PtzErrorCode::Invalid,
                format!("the viewer or operator name must be 1 to {MAX_NAME_LEN} printable characters"),
                None,
            );
        }
        if let Requester::Site { site, .. } = who {
            if site == MASTER_SITE {
                // Its locks would be the master room's (same site, same names).
                let reason = format!(
                    "site id `{MASTER_SITE}` is reserved for the master room's operators; give that relay \
                     another site id in its certificate and agent.toml"
                );
                refuse!(PtzErrorCode::Forbidden, reason, None);
            }
        }
        let entry = inner.cameras.catalog().into_iter().find(|c| c.id == camera);
        let priority = match (who, entry) {
            (Requester::Site { site, .. }, entry) => {
                let unknown = format!("camera `{camera}` is not in the catalog of site `{site}`");
                let Some(entry) = entry else { refuse!(PtzErrorCode::Unknown, unknown, None) };
                let access = inner.access.borrow().clone();
                let local = access.local_time(inner.clock.now());
                match access.may_steer(site, &entry, local) {
                    Ok(p) => p,
                    Err((code, reason)) => refuse!(code, reason, None),
                }
            }
            (Requester::Master { .. }, None) => {
                let reason = format!("no camera `{camera}` in agent.toml");
                refuse!(PtzErrorCode::Unknown, reason, None);
            }
            (Requester::Master { .. }, Some(entry)) => {
                if entry.kind != DeviceKind::DomePtz.name() {
                    let reason = format!(
                        "camera `{camera}` is a `{}`, not a `dome-ptz`: it cannot be steered",
                        entry.kind
                    );
                    refuse!(PtzErrorCode::Unsupported, reason, None);
                }
                MASTER_PRIORITY
            }
        };
        if let Err(e) = command.validate() {
            refuse!(PtzErrorCode::Invalid, format!("camera `{camera}`: {e}"), None);
        }
        let Some(worker) = inner.worker(camera) else {
            let reason = format!(
                "camera `{camera}` has no [device.onvif] url in agent.toml: the master room must configure \
                 its ONVIF PTZ service before it can be steered"
            );
            refuse!(PtzErrorCode::Unsupported, reason, None);
        };
        let controller = Controller { site: who.site().to_owned(), viewer: viewer.to_owned(), priority };
        let mut arbiter = inner.core.arbiter();
        let deadman = arbiter.config().deadman;
        let op = match command {
            PtzCommand::Move { pan, tilt, zoom } if (*pan, *tilt, *zoom) == (0, 0, 0) => DeviceOp::Stop,
            PtzCommand::Move { pan, tilt, zoom } => {
                DeviceOp::Move { pan: *pan, tilt: *tilt, zoom: *zoom, timeout: deadman }
            }
            PtzCommand::Stop | PtzCommand::Release => DeviceOp::Stop,
            PtzCommand::GotoPreset { preset } => DeviceOp::Goto(preset.clone()),
            PtzCommand::Presets => DeviceOp::Presets,
            PtzCommand::Status => DeviceOp::Status,
        };
        // Room in the camera's queue first: a command it cannot take must not
        // take, renew or pre-empt the lock. Stops may use the reserved slots.
        // All sends happen under the arbiter's lock, so the slot stays ours.
        let room = worker.capacity() > RESERVED_FOR_STOPS || op == DeviceOp::Stop;
        let permit = if room { worker.try_reserve().ok() } else { None };
        if permit.is_none() && *command != PtzCommand::Release {
            drop(arbiter);
            let reason = format!(
                "camera `{camera}` is not keeping up: {QUEUE} PTZ commands are already queued for it; \
                 check its network and load"
            );
            refuse!(PtzErrorCode::CameraError, reason, None);
        }
        let mut releases = false;
        if let PtzCommand::Release = command {
            let holder = arbiter.holder(camera, now);
            match arbiter.release(camera, &controller) {
                None => {
                    drop(arbiter);
                    audits.push(AuditLine {
                        site: controller.site.clone(),
                        viewer: controller.viewer.clone(),
                        camera: camera.to_owned(),
                        outcome: "allowed",
                        reason: format!("release: `{}` did not hold the lock", controller.label()),
                    });
                    return Pending(Ok(PtzReply::Done { holder, presets: vec![], position: None }));
                }
                Some(moving) => {
                    let _ = inner.locks.send(LockChange { camera: camera.to_owned(), holder: None });
                    info!(site = %controller.site, viewer = %controller.viewer, camera, "ptz lock released");
                    if !moving {
                        drop(arbiter);
                        audits.push(AuditLine {
                            site: controller.site.clone(),
                            viewer: controller.viewer.clone(),
                            camera: camera.to_owned(),
                            outcome: "allowed",
                            reason: what,
                        });
                        return Pending(Ok(PtzReply::Done { holder: None, presets: vec![], position: None }));
                    }
                    releases = true;
                }
            }
        } else if command.steers() {
            let before = arbiter.holder(camera, now).map(|h| h.controller);
            let moving = matches!(op, DeviceOp::Move { .. });
            match arbiter.request(camera, &controller, moving, now) {
                Grant::Busy(holder) => {
                    drop(arbiter);
                    let reason = format!(
                        "camera `{camera}` is being steered by {} (PTZ priority {}, yours {priority}); \
                         the lock frees after {} s without commands",
                        holder.controller.label(),
                        holder.controller.priority,
                        holder.expires_in_ms.div_ceil(1000)
                    );
                    refuse!(PtzErrorCode::Locked, reason, Some(holder));
                }
                Grant::Granted { preempted } => {
                    if let Some(loser) = preempted {
                        warn!(camera, loser = %loser.label(), winner = %controller.label(), "ptz lock pre-empted");
                        audits.push(AuditLine {
                            site: loser.site.clone(),
                            viewer: loser.viewer.clone(),
                            camera: camera.to_owned(),
                            outcome: "preempted",
                            reason: format!(
                                "{what}: lock taken over by {} (PTZ priority {} over {})",
                                controller.label(),
                                controller.priority,
                                loser.priority
                            ),
                        });
                    }
                    if !before.as_ref().is_some_and(|b| b.same_as(&controller)) {
                        let holder = arbiter.holder(camera, now);
                        let _ = inner.locks.send(LockChange { camera: camera.to_owned(), holder });
                    }
                    // The next dead-man deadline may be earlier now.
                    inner.wake.notify_one();
                }
            }
        }
        let (tx, rx) = oneshot::channel();
        let job = Job {
            op,
            who: controller,
            needs_lock: command.steers(),
            what,
            ok_outcome: "allowed",
            releases,
            reply: Some(tx),
        };
        enqueue(&worker, permit, job);
        drop(arbiter);
        Pending(Err(rx))
    }

    /// Carries a relay's `Ptz` out and sends its `PtzResult` on `replies`
    /// once the camera has answered, without waiting here. `under_way` (one
    /// per session, see [`session_gate`]) bounds the answers not yet
    /// written: beyond it a command is refused `unavailable` without being
    /// carried out, and a relay that stops reading its answers gets none
    /// (it times them out) instead of growing the agent's memory.
    pub fn answer_relay(
        &self,
        under_way: &Arc<Semaphore>,
        replies: &mpsc::Sender<Control>,
        who: &Requester,
        id: u64,
        camera: &str,
        command: &PtzCommand,
    ) {
        let Ok(permit) = under_way.clone().try_acquire_owned() else {
            warn!(site = who.site(), camera, "ptz: relay has too many commands under way; refused");
            let reason = format!(
                "camera `{camera}`: site `{}` has {MAX_UNDER_WAY} PTZ commands under way at the agent; \
                 retry once they are answered",
                who.site()
            );
            let reply = PtzReply::refused(PtzErrorCode::Unavailable, reason);
            let _ = replies.try_send(Control::PtzResult { id, reply });
            return;
        };
        let pending = self.submit(who, camera, command);
        let replies = replies.clone();
        tokio::spawn(async move {
            let reply = for_partners(pending.reply().await);
            let _ = replies.send(Control::PtzResult { id, reply }).await;
            drop(permit);
        });
    }

    /// A relay session ended: its site's moving cameras are stopped at once
    /// and its locks freed.
    pub fn drop_site(&self, site: &str) {
        if site == MASTER_SITE {
            // A relay session under that name never held a lock (see `decide`).
            return;
        }
        let expiries = {
            let mut arbiter = self.inner.core.arbiter();
            let expiries = arbiter.drop_site(site);
            self.apply(expiries, Cause::SessionEnded)
        };
        for line in expiries {
            self.inner.core.audit(line);
        }
    }

    /// Dead-man stops and lapsed locks due at `now`; returns the next deadline.
    fn tick(&self, now: Instant) -> Option<Instant> {
        let (lines, next) = {
            let mut arbiter = self.inner.core.arbiter();
            let expiries = arbiter.poll(now);
            let ms = arbiter.config().deadman.as_millis() as u64;
            let lines = self.apply(expiries, Cause::Deadman(ms));
            (lines, arbiter.next_deadline())
        };
        for line in lines {
            self.inner.core.audit(line);
        }
        next
    }

    /// Queues the stops and announces the freed locks (called under the
    /// arbiter's lock); returns the audit lines to write.
    fn apply(&self, expiries: Vec<Expiry>, cause: Cause) -> Vec<AuditLine> {
        let why = match cause {
            Cause::SessionEnded => "site session ended".to_owned(),
            Cause::Deadman(ms) => format!("dead-man: no renewal for {ms} ms"),
        };
        let mut lines = Vec::new();
        for e in expiries {
            match e {
                Expiry::DeadmanStop { camera, controller } => {
                    warn!(camera = %camera, controller = %controller.label(), reason = %why, "ptz: stopping the camera");
                    let job = Job {
                        op: DeviceOp::Stop,
                        who: controller.clone(),
                        needs_lock: false,
                        what: format!("stop: {why}"),
                        ok_outcome: "stopped",
                        releases: false,
                        reply: None,
                    };
                    if let Some(worker) = self.inner.worker(&camera) {
                        enqueue(&worker, worker.try_reserve().ok(), job);
                    }
                    // After a session ended the lock is gone too; a dead-man
                    // stop leaves it held until idle.
                    if cause == Cause::SessionEnded {
                        let _ = self.inner.locks.send(LockChange { camera, holder: None });
                    }
                }
                Expiry::Released { camera, controller } => {
                    info!(camera = %camera, controller = %controller.label(), reason = %why, "ptz lock released");
                    lines.push(AuditLine {
                        site: controller.site.clone(),
                        viewer: controller.viewer.clone(),
                        camera: camera.clone(),
                        outcome: "released",
                        reason: match cause {
                            Cause::SessionEnded => why.clone(),
                            Cause::Deadman(_) => "release: lock idle".to_owned(),
                        },
                    });
                    let _ = self.inner.locks.send(LockChange { camera, holder: None });
                }
            }
        }
        lines
    }

    /// Whether `site` may steer `camera` as its catalog says (visible,
    /// `dome-ptz`, PTZ right): who gets its lock notices.
    pub fn site_may_see_lock(access: &Access, site: &str, catalog: &[CatalogEntry], camera: &str) -> bool {
        access.catalog(site, catalog).iter().any(|c| c.id == camera && c.ptz)
    }

    /// The `dome-ptz` cameras for the master room: id, name, zone, whether
    /// an ONVIF endpoint is configured, and the holder.
    pub fn overview(&self) -> Vec<MasterCamera> {
        let now = Instant::now();
        let catalog = self.inner.cameras.catalog();
        let arbiter = self.inner.core.arbiter();
        catalog
            .into_iter()
            .filter(|c| c.kind == DeviceKind::DomePtz.name())
            .map(|c| MasterCamera {
                holder: arbiter.holder(&c.id, now),
                steerable: self.inner.worker(&c.id).is_some(),
                camera: c.id,
                name: c.name,
                zone: c.zone,
            })
            .collect()
    }
}

/// Queues `job` in the slot reserved for it. Only a stop can find no slot
/// (a move is granted only with room left for its stop): it waits for room
/// outside the arbiter's lock rather than being lost.
fn enqueue(worker: &mpsc::Sender<Job>, permit: Option<mpsc::Permit<'_, Job>>, job: Job) {
    match permit {
        Some(permit) => permit.send(job),
        None => {
            let worker = worker.clone();
            tokio::spawn(async move {
                let _ = worker.send(job).await;
            });
        }
    }
}

/// Why cameras are stopped and locks freed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cause {
    /// The site's relay session ended.
    SessionEnded,
    /// Time passed (dead-man of so many ms, idle locks).
    Deadman(u64),
}

/// One PTZ camera as the master room's API lists it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct MasterCamera {
    /// Camera id.
    pub camera: String,
    /// Place.
    pub name: String,
    /// Zone.
    pub zone: String,
    /// Whether `[device.onvif]` is configured.
    pub steerable: bool,
    /// Lock holder.
    pub holder: Option<PtzHolder>,
}

/// Logs, audits and answers a refusal.
fn refusal(
    who: &Requester,
    camera: &str,
    command: &PtzCommand,
    code: PtzErrorCode,
    reason: String,
    holder: Option<PtzHolder>,
    audits: &mut Vec<AuditLine>,
) -> Pending {
    info!(site = who.site(), viewer = who.viewer(), camera, op = command.name(), code = code.name(), %reason, "ptz refused");
    audits.push(AuditLine {
        site: who.site().to_owned(),
        viewer: who.viewer().to_owned(),
        camera: camera.to_owned(),
        outcome: "denied",
        reason: format!("{}: {} ({reason})", describe(command), code.name()),
    });
    Pending(Ok(PtzReply::Refused { code, reason, holder }))
}

/// The command as audited.
fn describe(c: &PtzCommand) -> String {
    match c {
        PtzCommand::Move { pan, tilt, zoom } => format!("move pan={pan} tilt={tilt} zoom={zoom}"),
        PtzCommand::GotoPreset { preset } => format!("goto_preset {preset:?}"),
        other => other.name().to_owned(),
    }
}

/// A reply as a partner site may read it: the camera LAN stays at the
/// master room, so URLs and IP addresses in a refusal's reason (the ONVIF
/// service's URL, a hostile camera's fault text) are withheld. The agent's
/// log and audit keep the full text.
fn for_partners(reply: PtzReply) -> PtzReply {
    match reply {
        PtzReply::Refused { code, reason, holder } => {
            PtzReply::Refused { code, reason: withhold_addresses(&reason), holder }
        }
        done => done,
    }
}

/// What stands in for a withheld URL or address.
const WITHHELD: &str = "[address withheld]";

/// `text` with every URL (`scheme://...`) and IP address or socket address
/// (`10.1.2.3`, `10.1.2.3:80`, `fd00::5`, `[fd00::5]:8080`, also after `=`,
/// `@` or `/`) replaced by [`WITHHELD`].
fn withhold_addresses(text: &str) -> String {
    let is_delimiter = |c: char| c.is_whitespace() || c.is_control() || "\"'`<>(){},;".contains(c);
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find(|c: char| !is_delimiter(c)) {
        out.push_str(&rest[..start]);
        rest = &rest[start..];
        let end = rest.find(is_delimiter).unwrap_or(rest.len());
        let (word, after) = rest.split_at(end);
        // Sentence punctuation after an address is not part of it.
        let body = word.trim_end_matches(['.', ':', '!', '?']);
        out.push_str(&withhold_in_word(body));
        out.push_str(&word[body.len()..]);
        rest = after;
    }
    out.push_str(rest);
    out
}

fn withhold_in_word(word: &str) -> String {
    if let Some(at) = word.find("://") {
        let scheme = word[..at]
            .char_indices()
            .rev()
            .take_while(|(_, c)| c.is_ascii_alphanumeric() || "+-.".contains(*c))
            .last()
            .map_or(at, |(i, _)| i);
        return format!("{}{WITHHELD}", &word[..scheme]);
    }
    let is_address = |piece: &str| {
        !piece.is_empty()
            && (piece.parse::<std::net::IpAddr>().is_ok() || piece.parse::<std::net::SocketAddr>().is_ok())
    };
    if is_address(word) {
        return WITHHELD.to_owned();
    }
    let mut out = String::with_capacity(word.len());
    let mut rest = word;
    loop {
        let cut = rest.find(['=', '@', '/']).unwrap_or(rest.len());
        let piece = &rest[..cut];
        out.push_str(if is_address(piece) { WITHHELD } else { piece });
        match rest[cut..].chars().next() {
            Some(separator) => {
                out.push(separator);
                rest = &rest[cut + 1..];
            }
            None => return out,
        }
    }
}

/// Sleeps until the arbiter's next deadline (or a wake-up), then stops
/// unrenewed moves and frees idle locks.
async fn timer(service: Weak<Inner>, wake: Arc<Notify>) {
    loop {
        let next = {
            let Some(inner) = service.upgrade() else { return };
            PtzService { inner }.tick(Instant::now())
        };
        match next {
            Some(at) => {
                tokio::select! {
                    _ = tokio::time::sleep_until(at.into()) => {}
                    _ = wake.notified() => {}
                }
            }
            None => wake.notified().await,
        }
    }
}

/// Carries one camera's commands out, one at a time, in arrival order.
async fn worker(camera: String, device: Arc<dyn PtzDevice>, core: Arc<Core>, mut rx: mpsc::Receiver<Job>) {
    while let Some(job) = rx.recv().await {
        if job.needs_lock {
            let holder = core.holder(&camera);
            if !holder.as_ref().is_some_and(|h| h.controller.same_as(&job.who)) {
                let by = holder.as_ref().map_or_else(|| "nobody".to_owned(), |h| h.controller.label());
                let reason = format!(
                    "camera `{camera}`: `{}` lost the lock before the camera's turn came (now held by {by}); \
                     this command was not carried out",
                    job.what
                );
                info!(camera = %camera, controller = %job.who.label(), op = %job.what, holder = %by, "ptz: stale command dropped");
                core.audit(AuditLine {
                    site: job.who.site,
                    viewer: job.who.viewer,
                    camera: camera.clone(),
                    outcome: "denied",
                    reason: format!("{}: locked (superseded by {by} while queued)", job.what),
                });
                if let Some(tx) = job.reply {
                    let _ = tx.send(PtzReply::Refused { code: PtzErrorCode::Locked, reason, holder });
                }
                continue;
            }
        }
        let started = Instant::now();
        let result = tokio::time::timeout(DEVICE_GUARD, device.execute(&job.op)).await.unwrap_or_else(|_| {
            Err(DeviceError {
                code: PtzErrorCode::Timeout,
                message: format!("camera `{camera}` did not answer within {} s", DEVICE_GUARD.as_secs()),
            })
        });
        let holder = if job.releases { None } else { core.holder(&camera) };
        let (reply, outcome, reason) = match result {
            Ok(out) => {
                tracing::debug!(camera = %camera, op = %job.what, ms = started.elapsed().as_millis() as u64, "ptz done");
                let (presets, position) = match out {
                    Output::Nothing => (vec![], None),
                    Output::Presets(p) => (p, None),
                    Output::Position(p) => (vec![], Some(p)),
                };
                (PtzReply::Done { holder, presets, position }, job.ok_outcome, job.what)
            }
            Err(e) => {
                warn!(camera = %camera, op = %job.what, error = %e.message, "ptz command failed");
                let reason = format!("{}: {} ({})", job.what, e.code.name(), e.message);
                (PtzReply::Refused { code: e.code, reason: e.message, holder }, "failed", reason)
            }
        };
        core.audit(AuditLine {
            site: job.who.site,
            viewer: job.who.viewer,
            camera: camera.clone(),
            outcome,
            reason,
        });
        if let Some(tx) = job.reply {
            let _ = tx.send(reply);
        }
    }
}

/// The master room's PTZ API, the control routes of the management port:
/// the same commands as the sites', at top priority, audited under site
/// `master` with the name of the operator who authenticated (the
/// [`crate::operators::require_operator`] layer puts it in the request).
pub mod master_api {
    use super::{PtzService, Requester};
    use crate::operators::Operator;
    use axum::body::Bytes;
    use axum::extract::{Path, State};
    use axum::http::{header, HeaderMap, StatusCode};
    use axum::response::{IntoResponse, Response};
    use axum::routing::get;
    use axum::{Extension, Json, Router};
    use ponte_proto::ptz::{PtzCommand, PtzErrorCode, PtzReply};

    /// `GET /api/ptz`, `GET /api/ptz/{camera}`, `POST /api/ptz/{camera}`;
    /// put the operator layer in front.
    pub fn routes(service: PtzService) -> Router {
        Router::new()
            .route("/api/ptz", get(list))
            .route("/api/ptz/{camera}", get(show).post(command))
            .with_state(service)
    }

    fn answer(reply: PtzReply) -> Response {
        let status = StatusCode::from_u16(reply.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        (status, Json(reply)).into_response()
    }

    async fn list(State(service): State<PtzService>) -> Response {
        Json(service.overview()).into_response()
    }

    async fn show(
        State(service): State<PtzService>,
        Extension(Operator(operator)): Extension<Operator>,
        Path(camera): Path<String>,
    ) -> Response {
        let who = Requester::Master { operator };
        match service.submit(&who, &camera, &PtzCommand::Presets).reply().await {
            PtzReply::Done { holder, presets, .. } => {
                Json(serde_json::json!({ "camera": camera, "holder": holder, "presets": presets }))
                    .into_response()
            }
            PtzReply::Refused {
                code: code @ (PtzErrorCode::Unknown | PtzErrorCode::Unsupported),
                reason,
                holder,
            } => answer(PtzReply::Refused { code, reason, holder }),
            // The camera did not list its presets: still show who holds it.
            PtzReply::Refused { reason, holder, .. } => Json(serde_json::json!({
                "camera": camera, "holder": holder, "presets": [], "presets_error": reason
            }))
            .into_response(),
        }
    }

    fn is_json(headers: &HeaderMap) -> bool {
        ponte_proto::ptz::is_json_content_type(
            headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()),
        )
    }

    async fn command(
        State(service): State<PtzService>,
        Extension(Operator(operator)): Extension<Operator>,
        Path(camera): Path<String>,
        headers: HeaderMap,
        body: Bytes,
    ) -> Response {
        if !is_json(&headers) {
            let reply = PtzReply::refused(
                PtzErrorCode::Invalid,
                "send the command with Content-Type: application/json",
            );
            return (StatusCode::UNSUPPORTED_MEDIA_TYPE, Json(reply)).into_response();
        }
        let command: PtzCommand = match serde_json::from_slice(&body) {
            Ok(c) => c,
            Err(e) => {
                return answer(PtzReply::refused(
                    PtzErrorCode::Invalid,
                    format!(
                        "the body is not a PTZ command ({e}); expected e.g. {{\"op\":\"move\",\"pan\":500}}, \
                         {{\"op\":\"stop\"}}, {{\"op\":\"goto_preset\",\"preset\":\"1\"}}"
                    ),
                ))
            }
        };
        answer(service.submit(&Requester::Master { operator }, &camera, &command).reply().await)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::AgentConfig;

    /// Records what the service asked, with when.
    #[derive(Default)]
    struct FakeDome {
        ops: Mutex<Vec<(String, Instant)>>,
        delay: Duration,
    }

    impl FakeDome {
        fn ops(&self) -> Vec<String> {
            self.ops.lock().unwrap().iter().map(|(o, _)| o.clone()).collect()
        }
    }

    impl PtzDevice for FakeDome {
        fn execute<'a>(&'a self, op: &'a DeviceOp) -> DeviceFuture<'a, Output> {
            let op = match op {
                DeviceOp::Move { pan, tilt, zoom, timeout } => {
                    format!("move {pan} {tilt} {zoom} {}", timeout.as_millis())
                }
                DeviceOp::Stop => "stop".into(),
                DeviceOp::Goto(token) => format!("goto {token}"),
                DeviceOp::Presets => {
                    let presets = vec![PtzPreset { token: "1".into(), name: "Ingresso".into() }];
                    return Box::pin(async { Ok(Output::Presets(presets)) });
                }
                DeviceOp::Status => return Box::pin(async { Ok(Output::Position(PtzPosition::default())) }),
            };
            Box::pin(async move {
                tokio::time::sleep(self.delay).await;
                self.ops.lock().unwrap().push((op, Instant::now()));
                Ok(Output::Nothing)
            })
        }
    }

    /// A master agent with two PTZ domes (one without ONVIF), a fixed camera,
    /// the PTZ tests' two sites and three more.
    fn config() -> AgentConfig {
        AgentConfig::from_toml(&format!("{CONFIG}{}", ponte_tests::onvif_camera::PTZ_SITES)).unwrap()
    }

    const CONFIG: &str = r#"
[agent]
id = "master"
[tls]
ca = "ca.pem"
cert = "master.pem"
key = "master.key"
[ptz]
lock_idle_secs = 2
deadman_ms = 300
[[device]]
id = "dome"
name = "rotatoria"
type = "dome-ptz"
source = "synthetic"
[[device]]
id = "dome-b"
name = "senza onvif"
type = "dome-ptz"
source = "synthetic"
[[device]]
id = "fix"
name = "fissa"
type = "fixed"
source = "synthetic"
[[site]]
id = "polizia"
allow = ["*"]
ptz = true
ptz_priority = 50
[[site]]
id = "vigili"
allow = ["camera:fix"]
ptz = true
[[site]]
id = "notte"
allow = ["*"]
ptz = true
ptz_priority = 20
windows = ["daily 22:00-06:00"]
"#;

    #[test]
    fn urls_and_addresses_are_withheld_from_partners() {
        let cases = [
            (
                "camera `dome`: ONVIF GetPresets to http://10.1.2.3/onvif/ptz_service: no answer within 2000 ms",
                "camera `dome`: ONVIF GetPresets to [address withheld]: no answer within 2000 ms",
            ),
            ("at http://[fd00::5]:8080/onvif/PTZ?x=1 (HTTP 500)", "at [address withheld] (HTTP 500)"),
            ("see url=rtsp://admin:pw@cam.lan/x, then", "see url=[address withheld], then"),
            ("from 10.1.2.3:554.", "from [address withheld]."),
            ("host fd00::5 and [fd00::6]:80", "host [address withheld] and [address withheld]"),
            ("admin@192.168.1.64/24 ok", "admin@[address withheld]/24 ok"),
            ("at 15:22:33, fault env:Sender/ter:NoToken", "at 15:22:33, fault env:Sender/ter:NoToken"),
            ("(\"http://x\")", "(\"[address withheld]\")"),
            ("", ""),
        ];
        for (text, want) in cases {
            assert_eq!(withhold_addresses(text), want, "{text}");
        }
        let reply = for_partners(PtzReply::refused(PtzErrorCode::CameraError, "fault http://10.0.0.9/a"));
        assert_eq!(reply, PtzReply::refused(PtzErrorCode::CameraError, "fault [address withheld]"));
        let done = PtzReply::Done { holder: None, presets: vec![], position: None };
        assert_eq!(for_partners(done.clone()), done);
    }

    #[test]
    fn time_windows_bound_the_ptz_right() {
        let cfg = config();
        let access = Access::new(&cfg).unwrap();
        let catalog = crate::sources::cameras::catalog_of(&cfg.devices);
        let dome = catalog.iter().find(|c| c.id == "dome").unwrap();
        let noon = ponte_proto::policy::LocalTime { weekday: 2, minute: 12 * 60 };
        let night = ponte_proto::policy::LocalTime { weekday: 2, minute: 23 * 60 };
        match access.may_steer("notte", dome, noon) {
            Err((PtzErrorCode::Forbidden, reason)) => {
                assert!(reason.contains("daily 22:00-06:00"), "{reason}")
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(access.may_steer("notte", dome, night), Ok(20));
    }

    struct Rig {
        service: PtzService,
        dome: Arc<FakeDome>,
        audit: std::path::PathBuf,
        _dir: tempfile_dir::Dir,
    }

    mod tempfile_dir {
        /// A directory removed on drop.
        pub struct Dir(pub std::path::PathBuf);
        impl Drop for Dir {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(&self.0);
            }
        }
    }

    fn rig(delay: Duration) -> Rig {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("ponte-ptz-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let cfg = config();
        let audit = dir.join("audit.log");
        let log = Arc::new(AuditLog::open(&audit, "master", 1 << 20).unwrap());
        let access = watch::channel(Arc::new(Access::new(&cfg).unwrap())).1;
        let dome = Arc::new(FakeDome { delay, ..Default::default() });
        let mut devices: HashMap<String, Arc<dyn PtzDevice>> = HashMap::new();
        devices.insert("dome".into(), dome.clone());
        let service = PtzService::start(Setup {
            config: cfg.ptz.arbiter(),
            cameras: Arc::new(Cameras::start(&cfg.devices)),
            access,
            clock: Clock::default(),
            audit: log,
            devices,
        });
        Rig { service, dome, audit, _dir: tempfile_dir::Dir(dir) }
    }

    fn site(site: &str, viewer: &str) -> Requester {
        Requester::Site { site: site.into(), viewer: viewer.into() }
    }

    fn mv(pan: i16) -> PtzCommand {
        PtzCommand::Move { pan, tilt: 0, zoom: 0 }
    }

    fn code(reply: &PtzReply) -> Option<PtzErrorCode> {
        match reply {
            PtzReply::Refused { code, .. } => Some(*code),
            PtzReply::Done { .. } => None,
        }
    }

    #[tokio::test]
    async fn site_checks_answer_like_subscriptions_and_are_audited() {
        let r = rig(Duration::ZERO);
        let s = &r.service;
        let cc = site("carabinieri", "rossi");
        let reply = s.submit(&cc, "dome", &mv(500)).reply().await;
        assert!(
            matches!(&reply, PtzReply::Done { holder: Some(h), .. } if h.controller.site == "carabinieri")
        );
        assert_eq!(
            r.dome.ops(),
            ["move 500 0 0 300"],
            "the dead-man goes to the camera as the move's timeout"
        );

        let cases = [
            (site("questura", "bianchi"), "dome", mv(1), PtzErrorCode::Forbidden, "ptz = true"),
            (site("vigili", "verdi"), "dome", mv(1), PtzErrorCode::Unknown, "not in the catalog"),
            (site("nessuno", "x"), "dome", mv(1), PtzErrorCode::Unknown, "not in the catalog"),
            (site("vigili", "verdi"), "fix", mv(1), PtzErrorCode::Unsupported, "not a `dome-ptz`"),
            (cc.clone(), "dome-b", mv(1), PtzErrorCode::Unsupported, "[device.onvif]"),
            (cc.clone(), "dome", mv(1001), PtzErrorCode::Invalid, "pan velocity"),
            (site("carabinieri", ""), "dome", mv(1), PtzErrorCode::Invalid, "name"),
        ];
        for (who, camera, cmd, want, words) in cases {
            match s.submit(&who, camera, &cmd).reply().await {
                PtzReply::Refused { code, reason, .. } => {
                    assert_eq!(code, want, "{who:?} {camera}: {reason}");
                    assert!(reason.contains(words), "{reason}");
                }
                other => panic!("{who:?} {camera}: expected {want:?}, got {other:?}"),
            }
        }
        assert_eq!(r.dome.ops().len(), 1, "no refused command reached the camera");
        let log = std::fs::read_to_string(&r.audit).unwrap();
        let ptz: Vec<&str> = log.lines().filter(|l| l.contains("\"action\":\"ptz\"")).collect();
        assert_eq!(ptz.len(), 8, "{log}");
        assert!(ptz.iter().any(|l| l.contains("\"site\":\"questura\"")
            && l.contains("\"outcome\":\"denied\"")
            && l.contains("move pan=1")));
        assert_eq!(s.counts().get("denied"), Some(&7));
        assert_eq!(s.counts().get("allowed"), Some(&1));
    }

    #[tokio::test]
    async fn master_preempts_equal_priority_waits_and_losers_learn_the_holder() {
        let r = rig(Duration::ZERO);
        let s = &r.service;
        let mut locks = s.subscribe_locks();
        let cc = site("carabinieri", "rossi");
        assert!(code(&s.submit(&cc, "dome", &mv(500)).reply().await).is_none());
        assert_eq!(locks.recv().await.unwrap().holder.unwrap().controller.site, "carabinieri");
        // Equal priority waits.
        match s.submit(&site("polizia", "neri"), "dome", &mv(-500)).reply().await {
            PtzReply::Refused { code: PtzErrorCode::Locked, holder: Some(h), reason } => {
                assert_eq!(h.controller.label(), "rossi@carabinieri", "{reason}")
            }
            other => panic!("{other:?}"),
        }
        // The master room takes over.
        let master = Requester::Master { operator: "sala".into() };
        assert!(code(&s.submit(&master, "dome", &mv(-300)).reply().await).is_none());
        let change = locks.recv().await.unwrap();
        assert_eq!(change.holder.unwrap().controller.label(), "sala@master");
        match s.submit(&cc, "dome", &mv(500)).reply().await {
            PtzReply::Refused { code: PtzErrorCode::Locked, holder: Some(h), .. } => {
                assert_eq!((h.controller.site.as_str(), h.controller.priority), ("master", 100))
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(r.dome.ops(), ["move 500 0 0 300", "move -300 0 0 300"]);
        // Release by the holder frees the lock (and stops the move).
        let reply = s.submit(&master, "dome", &PtzCommand::Release).reply().await;
        assert!(matches!(reply, PtzReply::Done { holder: None, .. }), "{reply:?}");
        assert_eq!(locks.recv().await.unwrap().holder, None);
        assert_eq!(r.dome.ops().last().map(String::as_str), Some("stop"));
        let log = std::fs::read_to_string(&r.audit).unwrap();
        assert!(log
            .lines()
            .any(|l| l.contains("\"outcome\":\"preempted\"") && l.contains("\"viewer\":\"rossi\"")));
    }

    #[tokio::test]
    async fn unrenewed_move_is_stopped_by_the_dead_man_and_a_vanished_site_at_once() {
        let r = rig(Duration::ZERO);
        let s = &r.service;
        let cc = site("carabinieri", "rossi");
        let t0 = Instant::now();
        s.submit(&cc, "dome", &mv(500)).reply().await;
        tokio::time::sleep(Duration::from_millis(600)).await;
        let ops = r.dome.ops.lock().unwrap().clone();
        assert_eq!(ops.iter().map(|(o, _)| o.as_str()).collect::<Vec<_>>(), ["move 500 0 0 300", "stop"]);
        let delay = ops[1].1 - t0;
        assert!(delay >= Duration::from_millis(300) && delay < Duration::from_millis(450), "{delay:?}");
        // Still the holder after the stop: renewing moves again.
        s.submit(&cc, "dome", &mv(200)).reply().await;
        let t1 = Instant::now();
        s.drop_site("carabinieri");
        tokio::time::sleep(Duration::from_millis(50)).await;
        let ops = r.dome.ops.lock().unwrap().clone();
        assert_eq!(ops.last().map(|(o, _)| o.as_str()), Some("stop"));
        assert!(ops.last().unwrap().1 - t1 < Duration::from_millis(50));
        assert!(s.holders().is_empty());
        let log = std::fs::read_to_string(&r.audit).unwrap();
        assert!(
            log.contains("dead-man: no renewal for 300 ms") && log.contains("site session ended"),
            "{log}"
        );
    }

    #[tokio::test]
    async fn a_preempted_controllers_queued_commands_do_not_reach_the_camera() {
        let r = rig(Duration::from_millis(100));
        let s = &r.service;
        let cc = site("carabinieri", "rossi");
        let first = s.submit(&cc, "dome", &mv(500));
        tokio::time::sleep(Duration::from_millis(20)).await;
        let queued: Vec<Pending> = [600, 700].into_iter().map(|p| s.submit(&cc, "dome", &mv(p))).collect();
        let master = Requester::Master { operator: "sala".into() };
        let took = s.submit(&master, "dome", &mv(-300));
        assert!(code(&first.reply().await).is_none());
        for p in queued {
            match p.reply().await {
                PtzReply::Refused { code: PtzErrorCode::Locked, holder: Some(h), reason } => {
                    assert_eq!(h.controller.label(), "sala@master", "{reason}");
                    assert!(reason.contains("lost the lock"), "{reason}");
                }
                other => panic!("a superseded move must not run: {other:?}"),
            }
        }
        assert!(code(&took.reply().await).is_none());
        assert_eq!(r.dome.ops(), ["move 500 0 0 300", "move -300 0 0 300"]);
        let log = std::fs::read_to_string(&r.audit).unwrap();
        assert!(log.contains("superseded by sala@master while queued"), "{log}");
    }

    #[tokio::test]
    async fn a_command_the_queue_cannot_take_leaves_the_lock_alone() {
        let r = rig(Duration::from_secs(5));
        let s = &r.service;
        let cc = site("carabinieri", "rossi");
        let mut accepted = Vec::new();
        let full = loop {
            let p = s.submit(&cc, "dome", &mv(500));
            match p.0 {
                Ok(reply) => break reply,
                Err(rx) => accepted.push(rx),
            }
            assert!(accepted.len() <= QUEUE, "the queue is bounded");
        };
        assert_eq!(code(&full), Some(PtzErrorCode::CameraError), "{full:?}");
        let mut locks = s.subscribe_locks();
        let master = Requester::Master { operator: "sala".into() };
        let reply = s.submit(&master, "dome", &mv(-300)).reply().await;
        assert_eq!(code(&reply), Some(PtzErrorCode::CameraError), "{reply:?}");
        let holders = s.holders();
        assert_eq!(
            holders[0].holder.as_ref().map(|h| h.controller.label()),
            Some("rossi@carabinieri".into())
        );
        assert!(locks.try_recv().is_err(), "no lock change was announced");
        let log = std::fs::read_to_string(&r.audit).unwrap();
        assert!(!log.contains("preempted"), "nobody was pre-empted by a command that never ran: {log}");
        // A stop still finds a slot.
        assert!(s.submit(&cc, "dome", &PtzCommand::Stop).0.is_err(), "the stop was queued");
    }

    #[tokio::test]
    async fn the_master_api_takes_json_commands_only() {
        let r = rig(Duration::ZERO);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/api/ptz/dome", listener.local_addr().unwrap());
        let operator = crate::operators::Operator("sala".into());
        let app = master_api::routes(r.service.clone()).layer(axum::Extension(operator));
        tokio::spawn(async move { axum::serve(listener, app).await });
        let post = |content_type: &'static str| {
            let url = url.clone();
            async move {
                let headers = [("Content-Type", content_type)];
                let body = br#"{"op":"stop"}"#;
                ponte_tests::http_request("POST", &url, &headers, body, Duration::from_secs(5)).await.unwrap()
            }
        };
        assert_eq!(post("text/plain").await.status, 415);
        assert!(r.dome.ops().is_empty(), "a form or text POST steers nothing");
        assert_eq!(post("application/json; charset=utf-8").await.status, 200);
        assert_eq!(r.dome.ops(), ["stop"]);
    }

    #[tokio::test]
    async fn a_relay_that_does_not_read_its_answers_cannot_pile_commands_up() {
        let r = rig(Duration::from_millis(200));
        let s = &r.service;
        let cc = site("carabinieri", "rossi");
        let gate = Arc::new(Semaphore::new(1));
        let (replies, mut rx) = mpsc::channel(1);
        for id in 1..=3 {
            s.answer_relay(&gate, &replies, &cc, id, "dome", &mv(500));
        }
        // The first is under way; the second is refused at once, the third
        // finds the answer channel full and gets nothing.
        match rx.recv().await {
            Some(Control::PtzResult { id: 2, reply: PtzReply::Refused { code, reason, .. } }) => {
                assert_eq!(code, PtzErrorCode::Unavailable);
                assert!(reason.contains("under way"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(rx.recv().await, Some(Control::PtzResult { id: 1, reply: PtzReply::Done { .. } })));
        assert_eq!(r.dome.ops(), ["move 500 0 0 300"], "refused commands never reached the camera");
        assert_eq!(gate.available_permits(), 1, "the answered command freed its place");
    }

    #[tokio::test]
    async fn a_site_named_master_is_not_the_master_room() {
        let r = rig(Duration::ZERO);
        let s = &r.service;
        let master = Requester::Master { operator: "sala".into() };
        assert!(code(&s.submit(&master, "dome", &PtzCommand::Stop).reply().await).is_none());
        let reply = s.submit(&site(MASTER_SITE, "sala"), "dome", &PtzCommand::Release).reply().await;
        assert_eq!(code(&reply), Some(PtzErrorCode::Forbidden), "{reply:?}");
        s.drop_site(MASTER_SITE);
        assert_eq!(
            s.holders()[0].holder.as_ref().map(|h| h.controller.label()),
            Some("sala@master".into()),
            "the master room keeps its lock"
        );
    }

    #[tokio::test]
    async fn commands_to_a_slow_camera_keep_their_order_and_do_not_block_the_caller() {
        let r = rig(Duration::from_millis(100));
        let s = &r.service;
        let cc = site("carabinieri", "rossi");
        let started = Instant::now();
        let a = s.submit(&cc, "dome", &mv(500));
        let b = s.submit(&cc, "dome", &PtzCommand::Stop);
        let c = s.submit(&cc, "dome", &PtzCommand::GotoPreset { preset: "1".into() });
        assert!(started.elapsed() < Duration::from_millis(50), "submit never waits on the camera");
        let (c, b, a) = (c.reply().await, b.reply().await, a.reply().await);
        assert!([a, b, c].iter().all(|x| code(x).is_none()));
        assert_eq!(r.dome.ops(), ["move 500 0 0 300", "stop", "goto 1"]);
        match s.submit(&cc, "dome", &PtzCommand::Presets).reply().await {
            PtzReply::Done { presets, holder: Some(_), .. } => assert_eq!(presets[0].name, "Ingresso"),
            other => panic!("{other:?}"),
        }
    }
}
