//! The incident book's shell: one mutex around the [`Book`], the expiry
//! timer, the state file, and the fan-out of notices to the relay sessions.
//!
//! The temporary grants live in the access policy every session evaluates
//! ([`Access::with_grants`]): when a share starts or ends the policy is
//! republished, and each session re-checks its streams at once exactly as
//! after a reload: a share's streams end within a few milliseconds of its
//! expiry.

use super::book::{Admit, Book, Out, Persisted, Settings};
use crate::access::{Access, Clock};
use crate::sources::cameras::Cameras;
use ponte_proto::audit::AuditLog;
use ponte_proto::incident::{AlarmKind, Notice, SiteAction};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::{broadcast, watch, Notify};
use tracing::{error, info, warn};

/// Notices waiting for slow sessions; a session that lags further resyncs.
const NOTICE_QUEUE: usize = 256;
/// Width of alarm thumbnails, pixels.
const THUMBNAIL_WIDTH: u32 = 320;

/// What the service is built from.
pub struct Setup {
    /// Settings from `[incidents]`.
    pub settings: Settings,
    /// The state file.
    pub file: PathBuf,
    /// The policy of the config (without temporary grants).
    pub policy: Access,
    /// Where the published policy goes.
    pub access: watch::Sender<Arc<Access>>,
    /// The agent's audit log.
    pub audit: Arc<AuditLog>,
    /// The partner sites of the config (`[[relay]]` and `[[site]]`).
    pub sites: Vec<String>,
    /// The cameras (catalog, thumbnails).
    pub cameras: Arc<Cameras>,
    /// The policy clock.
    pub clock: Clock,
}

/// The incident service (cheap to clone).
#[derive(Clone)]
pub struct Incidents {
    inner: Arc<Inner>,
}

struct Inner {
    book: Mutex<Book>,
    policy: Mutex<Arc<Access>>,
    sites: Mutex<Vec<String>>,
    access: watch::Sender<Arc<Access>>,
    notices: broadcast::Sender<(String, Notice)>,
    audit: Arc<AuditLog>,
    file: PathBuf,
    cameras: Arc<Cameras>,
    clock: Clock,
    wake: Notify,
    /// Bumped whenever the grants change: the `[redundancy]` links send them.
    grants_changed: watch::Sender<u64>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Incidents {
    /// Restores the grants of the state file (those still in force), publishes the policy, starts the expiry timer.
    pub fn start(setup: Setup) -> anyhow::Result<Self> {
        let now = ms(setup.clock);
        let saved = match std::fs::read(&setup.file) {
            Ok(bytes) => serde_json::from_slice::<Persisted>(&bytes).map_err(|e| {
                anyhow::anyhow!(
                    "the incident state file {} is damaged ({e}); move it aside to start without the shares it held",
                    setup.file.display()
                )
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Persisted::default(),
            Err(e) => anyhow::bail!("cannot read the incident state file {}: {e}", setup.file.display()),
        };
        let (book, restored) = Book::restore(setup.settings, saved, now);
        let (notices, _) = broadcast::channel(NOTICE_QUEUE);
        let service = Self {
            inner: Arc::new(Inner {
                book: Mutex::new(book),
                policy: Mutex::new(Arc::new(setup.policy)),
                sites: Mutex::new(setup.sites),
                access: setup.access,
                notices,
                audit: setup.audit,
                file: setup.file,
                cameras: setup.cameras,
                clock: setup.clock,
                wake: Notify::new(),
                grants_changed: watch::Sender::new(0),
            }),
        };
        service.publish();
        service.apply(restored);
        let timer = service.clone();
        tokio::spawn(async move { timer.expire().await });
        Ok(service)
    }

    fn now(&self) -> u64 {
        ms(self.inner.clock)
    }

    /// Republishes the policy with the grants in force.
    fn publish(&self) {
        let grants = lock(&self.inner.book).grants();
        let policy = lock(&self.inner.policy).clone();
        self.inner.access.send_replace(Arc::new(policy.with_grants(grants)));
    }

    /// A new config's policy and sites (a reload); the grants stay.
    pub fn set_policy(&self, policy: Access, sites: Vec<String>) {
        *lock(&self.inner.policy) = Arc::new(policy);
        *lock(&self.inner.sites) = sites;
        self.publish();
    }

    /// The policy in force, grants included.
    pub fn access(&self) -> Arc<Access> {
        self.inner.access.borrow().clone()
    }

    /// Carries out what the book said.
    fn apply(&self, outs: Vec<Out>) {
        let mut publish = false;
        let mut persist = false;
        for out in outs {
            match out {
                Out::Notify { site, notice } => {
                    let _ = self.inner.notices.send((site, notice));
                }
                Out::Audit(record) => {
                    if let Err(e) = self.inner.audit.write(*record) {
                        error!(error = %e, path = %self.inner.audit.path().display(), "cannot write the audit log");
                    }
                }
                Out::GrantsChanged => publish = true,
                Out::Persist => persist = true,
            }
        }
        // The policy first: a withdrawn share's streams end now, not after
        // the state file is written (a slow disk must not delay a revocation).
        if publish {
            self.publish();
        }
        if persist {
            self.persist();
            self.inner.grants_changed.send_modify(|v| *v += 1);
        }
        self.inner.wake.notify_one();
    }

    /// Writes the grants in force (temporary file, then rename: a crash
    /// leaves the old file or the new one, never half of one).
    fn persist(&self) {
        let saved = lock(&self.inner.book).persisted();
        let file = &self.inner.file;
        let result = serde_json::to_vec_pretty(&saved).map_err(std::io::Error::other).and_then(|bytes| {
            let tmp = file.with_extension("json.tmp");
            std::fs::write(&tmp, bytes)?;
            std::fs::rename(&tmp, file)
        });
        if let Err(e) = result {
            error!(file = %file.display(), error = %e, "cannot write the incident state file: shares would not survive a restart (`incidents.state_file`)");
        }
    }

    async fn expire(&self) {
        loop {
            let next = lock(&self.inner.book).next_deadline();
            let wait = next.map(|at| std::time::Duration::from_millis(at.saturating_sub(self.now())));
            tokio::select! {
                _ = self.inner.wake.notified() => {}
                _ = async {
                    match wait {
                        Some(w) => tokio::time::sleep(w).await,
                        None => std::future::pending().await,
                    }
                } => {}
            }
            let outs = lock(&self.inner.book).poll(self.now());
            if !outs.is_empty() {
                self.apply(outs);
            }
        }
    }

    /// Changes whenever the grants do (for the other agents).
    pub fn grants_changed(&self) -> watch::Receiver<u64> {
        self.inner.grants_changed.subscribe()
    }

    /// Every grant, for the other agents of the master room.
    pub fn export_grants(&self) -> Vec<ponte_proto::incident::PeerGrant> {
        lock(&self.inner.book).export()
    }

    /// The grants agent `peer` sent (see [`Book::merge`]).
    pub fn merge_grants(&self, peer: &str, grants: Vec<ponte_proto::incident::PeerGrant>) {
        let outs = lock(&self.inner.book).merge(peer, grants, self.now());
        if !outs.is_empty() {
            info!(peer, "incident: grants of the other agent taken over or updated");
            self.apply(outs);
        }
    }

    /// Notices for the sites, `(site, notice)`.
    pub fn subscribe(&self) -> broadcast::Receiver<(String, Notice)> {
        self.inner.notices.subscribe()
    }

    /// What a relay of `site` is told when its session opens.
    pub fn snapshot_for(&self, site: &str) -> Vec<Notice> {
        lock(&self.inner.book).snapshot_for(site)
    }

    /// Cameras ids the catalog has, for checking what a master operator names.
    fn known_camera(&self, camera: &str) -> bool {
        self.inner.cameras.catalog().iter().any(|c| c.id == camera)
    }

    /// A master operator shares `cameras` with `site` for `ms`.
    pub fn share(
        &self,
        operator: &str,
        site: &str,
        cameras: Vec<String>,
        ms: u64,
        note: &str,
    ) -> Result<u64, String> {
        if !lock(&self.inner.sites).iter().any(|s| s == site) {
            return Err(format!("`{site}` is not a partner site of this agent (`[[relay]]` or `[[site]]`)"));
        }
        if let Some(c) = cameras.iter().find(|c| !self.known_camera(c)) {
            return Err(format!("no camera `{c}` in the agent's catalog"));
        }
        let (id, outs) = lock(&self.inner.book).share(site, cameras, ms, operator, note, self.now())?;
        info!(site, operator, share = id, "incident: cameras shared");
        self.apply(outs);
        Ok(id)
    }

    /// A master operator withdraws a share or an approval.
    pub fn withdraw(&self, operator: &str, id: u64) -> Result<(), String> {
        let outs = lock(&self.inner.book).withdraw(id, operator, self.now())?;
        self.apply(outs);
        Ok(())
    }

    /// A master operator approves an ask, granting `camera` (default: the
    /// camera the ask named) for `minutes`.
    pub fn approve(&self, operator: &str, id: u64, camera: Option<&str>, minutes: u64) -> Result<(), String> {
        let named = lock(&self.inner.book).ask_by_id(id).map(|a| a.camera.clone());
        let Some(named) = named else { return Err(format!("no ask #{id}")) };
        let camera = camera.map_or(named, str::to_owned);
        if !self.known_camera(&camera) {
            return Err(format!(
                "no camera `{camera}` in the agent's catalog: approve with the camera's id, or refuse"
            ));
        }
        let outs = lock(&self.inner.book).approve(id, &camera, minutes, operator, self.now())?;
        self.apply(outs);
        Ok(())
    }

    /// A master operator refuses an ask.
    pub fn refuse(&self, operator: &str, id: u64, reason: &str) -> Result<(), String> {
        let outs = lock(&self.inner.book).refuse(id, operator, reason, self.now())?;
        self.apply(outs);
        Ok(())
    }

    /// `operator` of `site` (`master` for the master room) acknowledges an alarm.
    pub fn ack(&self, site: &str, operator: &str, id: u64) -> Result<(), String> {
        let outs = lock(&self.inner.book).ack(id, site, operator, self.now())?;
        self.apply(outs);
        Ok(())
    }

    /// What an operator of `site` did (from its relay); the operator is
    /// recorded as `name@site`, the site taken from the relay's certificate.
    pub fn site_action(&self, site: &str, action: SiteAction) {
        let now = self.now();
        let operator = format!("{}@{site}", action.operator());
        let result = match action {
            SiteAction::Accept { share, .. } => lock(&self.inner.book).accept(site, share, &operator, now),
            SiteAction::Ask { id, camera, reason, .. } => {
                Ok(lock(&self.inner.book).ask(site, id, &camera, &operator, &reason, now))
            }
            SiteAction::Ack { alarm, .. } => lock(&self.inner.book).ack(alarm, site, &operator, now),
        };
        match result {
            Ok(outs) => self.apply(outs),
            Err(why) => warn!(site, operator, "incident: refused an action of the site: {why}"),
        }
    }

    /// The sites that may see `camera` now (policy or temporary grant).
    pub fn sites_seeing(&self, camera: &str) -> Vec<String> {
        let access = self.access();
        let Some(entry) = self.inner.cameras.catalog().into_iter().find(|c| c.id == camera) else {
            return Vec::new();
        };
        let entry = [entry];
        access.site_ids().into_iter().filter(|site| !access.catalog(site, &entry).is_empty()).collect()
    }

    /// A camera alarm: rate-limited per camera and kind (one per
    /// `incidents.alarm_interval_secs`, the rest counted), then sent with a
    /// thumbnail to the sites that may see the camera (off the caller's task).
    pub fn raise(&self, camera: &str, kind: AlarmKind, detail: &str) {
        let admitted = lock(&self.inner.book).admit(camera, kind, self.now());
        let Admit::Raise { suppressed } = admitted else { return };
        let (me, camera, detail) = (self.clone(), camera.to_owned(), detail.to_owned());
        tokio::spawn(async move {
            let thumbnail =
                match crate::sources::thumbnail::thumbnail(&me.inner.cameras, &camera, THUMBNAIL_WIDTH).await
                {
                    Ok(jpeg) => {
                        Some(base64::Engine::encode(&base64::engine::general_purpose::STANDARD, jpeg))
                    }
                    Err(e) => {
                        tracing::debug!(camera, error = %e, "alarm without a thumbnail");
                        None
                    }
                };
            let sites = me.sites_seeing(&camera);
            let now = me.now();
            let (id, outs) =
                lock(&me.inner.book).raise(&camera, kind, &detail, sites.clone(), thumbnail, suppressed, now);
            info!(camera, kind = kind.name(), alarm = id, sites = %sites.join(","), suppressed, "alarm");
            me.apply(outs);
        });
    }

    /// Alarms since the start: `raised` and `suppressed` (none yet: empty).
    pub fn alarm_counts(&self) -> std::collections::BTreeMap<String, u64> {
        let book = lock(&self.inner.book);
        let (raised, suppressed) = (book.raised_total(), book.suppressed_total());
        if raised + suppressed == 0 {
            return Default::default();
        }
        [("raised".to_owned(), raised), ("suppressed".to_owned(), suppressed)].into_iter().collect()
    }

    /// Runs `f` on the book (the master console's view).
    pub fn with_book<R>(&self, f: impl FnOnce(&Book) -> R) -> R {
        f(&lock(&self.inner.book))
    }

    /// The partner sites.
    pub fn sites(&self) -> Vec<String> {
        lock(&self.inner.sites).clone()
    }

    /// The cameras (the master console lists them).
    pub fn cameras(&self) -> &Arc<Cameras> {
        &self.inner.cameras
    }

    /// The policy clock, Unix ms.
    pub fn now_ms(&self) -> u64 {
        self.now()
    }
}

fn ms(clock: Clock) -> u64 {
    u64::try_from(clock.now().as_millisecond()).unwrap_or(0)
}
