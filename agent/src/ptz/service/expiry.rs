//! Stops and releases nobody asked for: dead-man stops of unrenewed moves,
//! idle locks lapsing, a site's locks freed when its relay session ends;
//! and the timer that wakes for the arbiter's next deadline.

use super::worker::{enqueue, Job};
use super::{AuditLine, Inner, LockChange, PtzService};
use crate::ptz::device::DeviceOp;
use ponte_proto::ptz::{Expiry, MASTER_SITE};
use std::sync::{Arc, Weak};
use std::time::Instant;
use tokio::sync::Notify;
use tracing::{info, warn};

impl PtzService {
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
                        self.inner.replicate_session_end(&camera);
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
                    match cause {
                        Cause::SessionEnded => self.inner.replicate_session_end(&camera),
                        Cause::Deadman(_) => self.inner.replicate_lapse(&camera),
                    }
                    let _ = self.inner.locks.send(LockChange { camera, holder: None });
                }
            }
        }
        lines
    }
}

/// Why cameras are stopped and locks freed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Cause {
    /// The site's relay session ended.
    SessionEnded,
    /// Time passed (dead-man of so many ms, idle locks).
    Deadman(u64),
}

/// Sleeps until the arbiter's next deadline (or a wake-up), then stops
/// unrenewed moves and frees idle locks.
pub(super) async fn timer(service: Weak<Inner>, wake: Arc<Notify>) {
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
