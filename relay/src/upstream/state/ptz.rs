//! PTZ commands on their way up (planned, sent, answered, forgotten) and
//! the latest lock holder per camera.

use super::action::PlannedPtz;
use super::{LinkId, UpstreamState, MAX_PTZ_PENDING};
use ponte_proto::ptz::{PtzCommand, PtzErrorCode, PtzHolder, PtzReply};
use ponte_proto::wire::Control;
use std::time::Instant;

impl UpstreamState {
    /// The PTZ command a viewer asked for, or the refusal it gets at once.
    pub fn plan_ptz(
        &self,
        camera: &str,
        viewer: &str,
        command: PtzCommand,
        now: Instant,
    ) -> Result<PlannedPtz, PtzReply> {
        let Some((link_id, link)) = self.carrier(camera).and_then(|id| self.links.get(&id).map(|l| (id, l)))
        else {
            if self.catalog(now).iter().any(|c| c.id == camera) {
                return Err(PtzReply::refused(
                    PtzErrorCode::Unavailable,
                    format!(
                        "camera `{camera}`: the link to its agent is down; it is retried automatically, try again in a moment"
                    ),
                ));
            }
            return Err(PtzReply::refused(
                PtzErrorCode::Unknown,
                format!("camera `{camera}` is not in the catalog of site `{}`", self.site),
            ));
        };
        if link.ptz_pending.len() >= MAX_PTZ_PENDING {
            return Err(PtzReply::refused(
                PtzErrorCode::Unavailable,
                format!(
                    "camera `{camera}`: {MAX_PTZ_PENDING} PTZ commands already wait for `{}`; retry in a moment",
                    link.peer
                ),
            ));
        }
        let id = link.next_ptz;
        Ok(PlannedPtz {
            link: link_id,
            peer: link.peer.clone(),
            id,
            msg: Control::Ptz { id, camera: camera.to_owned(), viewer: viewer.to_owned(), command },
        })
    }

    /// A planned PTZ command went out; returns the lock notices counted so
    /// far, for [`UpstreamState::ptz_answered`].
    pub fn ptz_sent(&mut self, plan: &PlannedPtz) -> u64 {
        if let (Some(link), Control::Ptz { camera, command, .. }) =
            (self.links.get_mut(&plan.link), &plan.msg)
        {
            link.next_ptz = link.next_ptz.max(plan.id + 1);
            link.ptz_pending.insert(plan.id, (camera.clone(), command.name()));
        }
        self.ptz_notices
    }

    /// The PTZ command `id` on `link` is no longer waited for.
    pub fn forget_ptz(&mut self, link: LinkId, id: u64) {
        if let Some(l) = self.links.get_mut(&link) {
            l.ptz_pending.remove(&id);
        }
    }

    /// A PTZ answer reached its viewer: learn the holder it carries (a
    /// refusal without one says nothing about the lock), unless a lock
    /// notice came meanwhile (`notices` differs): that one may be newer.
    pub fn ptz_answered(&mut self, camera: &str, reply: &PtzReply, notices: u64, now: Instant) {
        let learnt = match reply {
            PtzReply::Done { holder, .. } => Some(holder.clone()),
            PtzReply::Refused { holder: Some(h), .. } => Some(Some(h.clone())),
            PtzReply::Refused { holder: None, .. } => None,
        };
        if let Some(holder) = learnt {
            if self.ptz_notices == notices {
                self.set_holder(camera, holder, now);
            }
        }
    }

    /// The camera's PTZ lock holder as last reported upstream, if its lock
    /// has not lapsed since.
    pub fn ptz_holder(&self, camera: &str, now: Instant) -> Option<PtzHolder> {
        let (holder, at) = self.ptz_holders.get(camera)?;
        let gone = u64::try_from(now.saturating_duration_since(*at).as_millis()).unwrap_or(u64::MAX);
        let left = holder.expires_in_ms.checked_sub(gone).filter(|ms| *ms > 0)?;
        Some(PtzHolder { expires_in_ms: left, ..holder.clone() })
    }

    pub(super) fn set_holder(&mut self, camera: &str, holder: Option<PtzHolder>, now: Instant) {
        match holder {
            Some(h) => {
                self.ptz_holders.insert(camera.to_owned(), (h, now));
            }
            None => {
                self.ptz_holders.remove(camera);
            }
        }
    }
}
