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
//!
//! Here: who asks, the shared state (arbiter, audit, workers), the service
//! handle and its bookkeeping. Beside it: `decide` (a command checked,
//! arbitrated and queued, or refused), `expiry` (dead-man stops, idle and
//! session-end releases, the timer), `worker` (one camera's queue carried
//! out), `devices` (the PTZ endpoints built from the device config).

mod decide;
mod devices;
mod expiry;
mod worker;

use crate::access::Access;
use crate::access::Clock;
use crate::ptz::device::PtzDevice;
use crate::sources::cameras::Cameras;
use crate::sources::device::DeviceKind;
pub use devices::devices;

use expiry::timer;
use ponte_proto::audit::{AuditLog, AuditRecord};
use ponte_proto::ptz::{PtzArbiter, PtzErrorCode, PtzHolder, PtzReply, MASTER_SITE};
use ponte_proto::wire::CatalogEntry;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;
use tokio::sync::{broadcast, mpsc, oneshot, watch, Notify, Semaphore};
use tracing::info;
use worker::{start_worker, Job};

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
    /// Every lock this agent grants, renews or frees, for the other agents
    /// of the master room (`[redundancy]`).
    replication: broadcast::Sender<LockChange>,
    /// Cameras whose lock another agent granted (a replica): its lapse
    /// here is not news for that agent.
    replicas: Mutex<HashSet<String>>,
    wake: Arc<Notify>,
}

impl Inner {
    /// This agent granted, renewed or freed `camera`'s lock: the other
    /// agents hear it, and the lock is this agent's own from now on.
    fn replicate_out(&self, camera: &str, holder: Option<PtzHolder>) {
        self.replicas.lock().unwrap_or_else(|e| e.into_inner()).remove(camera);
        let _ = self.replication.send(LockChange { camera: camera.to_owned(), holder });
    }

    /// `camera`'s lock lapsed here: news for the other agents only if it
    /// was this agent's own.
    fn replicate_lapse(&self, camera: &str) {
        let replica = self.replicas.lock().unwrap_or_else(|e| e.into_inner()).remove(camera);
        if !replica {
            let _ = self.replication.send(LockChange { camera: camera.to_owned(), holder: None });
        }
    }

    /// `camera`'s lock was dropped here because its site's session to this
    /// agent ended: not news for the other agents. That is how a failover
    /// looks from here (the relay moved the camera to another agent), and
    /// the holder keeps the lock there; their copy lapses on its own.
    fn replicate_session_end(&self, camera: &str) {
        self.replicas.lock().unwrap_or_else(|e| e.into_inner()).remove(camera);
    }
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
            replication: broadcast::channel(1024).0,
            replicas: Mutex::new(HashSet::new()),
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

    /// Every lock this agent grants, renews or frees (never one it learnt
    /// from another agent), for the other agents of the master room.
    pub fn subscribe_replication(&self) -> broadcast::Receiver<LockChange> {
        self.inner.replication.subscribe()
    }

    /// Another agent of the master room granted, renewed or freed
    /// `camera`'s lock: this agent's arbiter holds the same, so a failover
    /// never finds two holders. Relay sessions hear a change of holder.
    pub fn replicate_in(&self, camera: &str, holder: Option<PtzHolder>) {
        let now = Instant::now();
        let changed = {
            let mut arbiter = self.inner.core.arbiter();
            let before = arbiter.holder(camera, now).map(|h| h.controller);
            let mut replicas = self.inner.replicas.lock().unwrap_or_else(|e| e.into_inner());
            match &holder {
                Some(h) => {
                    arbiter.adopt(camera, h, now);
                    replicas.insert(camera.to_owned());
                }
                None => {
                    arbiter.forget(camera);
                    replicas.remove(camera);
                }
            }
            let after = arbiter.holder(camera, now);
            (before.as_ref() != after.as_ref().map(|h| &h.controller)).then_some(after)
        };
        self.inner.wake.notify_one();
        if let Some(after) = changed {
            let who = after.as_ref().map(|h| h.controller.label());
            info!(
                camera,
                holder = who.as_deref().unwrap_or("nobody"),
                "ptz: lock replicated from another agent"
            );
            let _ = self.inner.locks.send(LockChange { camera: camera.to_owned(), holder: after });
        }
    }

    /// Holders of the locks this agent granted itself (not replicas), for
    /// a new link to another agent.
    pub fn own_holders(&self) -> Vec<LockChange> {
        let replicas = self.inner.replicas.lock().unwrap_or_else(|e| e.into_inner()).clone();
        self.holders().into_iter().filter(|h| !replicas.contains(&h.camera)).collect()
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

#[cfg(test)]
mod tests;
