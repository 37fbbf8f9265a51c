//! One worker per steerable camera: its bounded queue (with slots kept
//! for stops), and the task that carries commands out in arrival order,
//! dropping a steering command whose controller lost the lock meanwhile.

use super::{AuditLine, Core};
use crate::ptz::device::{DeviceError, DeviceOp, Output, PtzDevice};
use ponte_proto::ptz::{Controller, PtzErrorCode, PtzReply};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};
use tracing::{info, warn};

/// One command for a camera's worker, with what to audit and whom to answer.
pub(super) struct Job {
    pub(super) op: DeviceOp,
    /// On whose behalf (the lock holder, for dead-man and session stops).
    pub(super) who: Controller,
    /// Carried out only if `who` still holds the lock when the camera's
    /// turn comes: a controller pre-empted (or released) while its commands
    /// wait does not steer the camera under the new holder.
    pub(super) needs_lock: bool,
    /// The command as audited (`move pan=500 tilt=0 zoom=0`).
    pub(super) what: String,
    /// Audit outcome when the camera carries it out (`allowed`, `stopped`).
    pub(super) ok_outcome: &'static str,
    /// Holder to report when the command releases the lock (`release`).
    pub(super) releases: bool,
    pub(super) reply: Option<oneshot::Sender<PtzReply>>,
}

/// Commands queued per camera; user commands leave the last few slots to stops.
pub(super) const QUEUE: usize = 32;
/// Slots of a camera's queue kept for stops (dead-man, session end).
pub(super) const RESERVED_FOR_STOPS: usize = 4;
/// Bound on one camera call, whatever the client's own timeout.
pub(super) const DEVICE_GUARD: Duration = Duration::from_secs(10);

/// Starts the worker that talks to one camera's PTZ endpoint; it ends when
/// its queue's last sender is dropped, after the jobs already queued.
pub(super) fn start_worker(
    camera: String,
    device: Arc<dyn PtzDevice>,
    core: &Arc<Core>,
) -> mpsc::Sender<Job> {
    let (tx, rx) = mpsc::channel(QUEUE);
    tokio::spawn(worker(camera, device, core.clone(), rx));
    tx
}

/// Queues `job` in the slot reserved for it. Only a stop can find no slot
/// (a move is granted only with room left for its stop): it waits for room
/// outside the arbiter's lock rather than being lost.
pub(super) fn enqueue(worker: &mpsc::Sender<Job>, permit: Option<mpsc::Permit<'_, Job>>, job: Job) {
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

/// Carries one camera's commands out, one at a time, in arrival order.
pub(super) async fn worker(
    camera: String,
    device: Arc<dyn PtzDevice>,
    core: Arc<Core>,
    mut rx: mpsc::Receiver<Job>,
) {
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
