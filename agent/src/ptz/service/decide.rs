//! A command from a site's viewer or the master room: the site checks
//! (policy right, visibility, time windows), the arbiter's grant and the
//! queue slot reserved under its lock, or a refusal logged and audited;
//! and a relay's command answered on its session without blocking it.

use super::worker::{enqueue, Job, QUEUE, RESERVED_FOR_STOPS};
use super::{AuditLine, LockChange, Pending, PtzService, Requester, MAX_NAME_LEN, MAX_UNDER_WAY};
use crate::ptz::device::DeviceOp;
use crate::ptz::withhold::for_partners;
use crate::sources::device::DeviceKind;
use ponte_proto::ptz::{
    Controller, Grant, PtzCommand, PtzErrorCode, PtzHolder, PtzReply, MASTER_PRIORITY, MASTER_SITE,
};
use ponte_proto::wire::Control;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::{mpsc, oneshot, Semaphore};
use tracing::{info, warn};

impl PtzService {
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
                    inner.replicate_out(camera, None);
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
                    let holder = arbiter.holder(camera, now);
                    // Granted or renewed: the other agents hold the same.
                    inner.replicate_out(camera, holder.clone());
                    if !before.as_ref().is_some_and(|b| b.same_as(&controller)) {
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
}

/// Logs, audits and answers a refusal.
pub(super) fn refusal(
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
pub(super) fn describe(c: &PtzCommand) -> String {
    match c {
        PtzCommand::Move { pan, tilt, zoom } => format!("move pan={pan} tilt={tilt} zoom={zoom}"),
        PtzCommand::GotoPreset { preset } => format!("goto_preset {preset:?}"),
        other => other.name().to_owned(),
    }
}
