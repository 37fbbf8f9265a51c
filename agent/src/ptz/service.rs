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
use crate::ptz::device::{DeviceError, DeviceOp, Output, PtzDevice};
use crate::ptz::withhold::for_partners;
use crate::sources::cameras::Cameras;
use crate::sources::device::{Device, DeviceKind};
use ponte_proto::audit::{AuditLog, AuditRecord};
use ponte_proto::ptz::{
    Controller, Expiry, Grant, PtzArbiter, PtzCommand, PtzErrorCode, PtzHolder, PtzReply, MASTER_PRIORITY,
    MASTER_SITE,
};
use ponte_proto::wire::{CatalogEntry, Control};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};
use tokio::sync::{broadcast, mpsc, oneshot, watch, Notify, Semaphore};
use tracing::{info, warn};

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
            if d.source.synthetic().is_some_and(|s| s.ptz) {
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

#[cfg(test)]
mod tests;
