//! Messages from an upstream's control stream: subscription answers,
//! pauses, revocations, PTZ results and lock notices.

use super::action::{Action, ProtocolViolation, SubscribeFailure};
use super::{LinkId, UpstreamState};
use ponte_proto::wire::{Control, SubscribeErrorCode};
use std::time::Instant;
use tracing::{debug, info};

impl UpstreamState {
    /// A control message from `link`.
    pub fn on_control(
        &mut self,
        link_id: LinkId,
        msg: Control,
        now: Instant,
    ) -> Result<Vec<Action>, ProtocolViolation> {
        let mut out = Vec::new();
        let Some(peer) = self.links.get(&link_id).map(|l| l.peer.clone()) else { return Ok(out) };
        let peer = peer.as_str();
        match msg {
            Control::Catalog { cameras } => self.on_catalog(link_id, peer, cameras, now, &mut out),
            Control::Policy { digest } => {
                info!(peer, %digest, "upstream policy changed");
                self.set_policy(link_id, Some(digest));
                out.push(Action::CatalogChanged);
            }
            Control::SubscribeOk { id, .. } => {
                let key = self.links.get(&link_id).and_then(|l| l.subs.get(&id)).cloned();
                if let Some(key) = key {
                    if let Some(t) = self.tracks.get_mut(&key) {
                        t.lost_since = None;
                        if t.pending {
                            t.pending = false;
                            out.push(Action::Resolve { track: key, result: Ok(()) });
                        }
                    }
                }
            }
            Control::SubscribeError { id, code, reason } => {
                // The second path's copy refused or ended: the feed goes on.
                if self.forget_twin(link_id, id) {
                    info!(peer, subscription = id, code = code.name(), reason = %reason, "the second path's copy ended");
                    return Ok(out);
                }
                let key = self.links.get(&link_id).and_then(|l| l.subs.get(&id)).cloned();
                if let Some(key) = key {
                    info!(peer, camera = %key.camera, code = code.name(), reason = %reason, "upstream refused or ended a subscription");
                    // A camera that stopped delivering (restarting) after
                    // its viewers got video: keep them and subscribe again.
                    let established = self.tracks.get(&key).is_some_and(|t| !t.pending);
                    if code == SubscribeErrorCode::Offline && established {
                        self.orphan(&key, now, &mut out);
                    } else if code == SubscribeErrorCode::Forbidden && established {
                        // Forbidden after it was granted: the upstream's
                        // policy revoked it (e.g. a time window closed).
                        let why =
                            format!("{} ({})", self.withdrawn(peer, &key.camera), upstream_why(&reason));
                        self.revoke(&key, why, &mut out);
                    } else {
                        self.end(&key, Some(SubscribeFailure { code, reason }), &mut out);
                    }
                }
            }
            Control::Stats(s) => {
                debug!(peer, ?s, "upstream stats");
                if let Some(link) = self.links.get_mut(&link_id) {
                    link.budget_bps = s.budget_bps;
                }
            }
            Control::PtzResult { id, reply } => {
                match self.links.get_mut(&link_id).and_then(|l| l.ptz_pending.remove(&id)) {
                    Some(_) => out.push(Action::PtzAnswer { link: link_id, id, reply }),
                    None => debug!(peer, request = id, "PTZ answer after its command timed out: dropped"),
                }
            }
            Control::PtzLock { camera, holder } => {
                // Only the link that carries the camera speaks for its lock.
                if self.carrier(&camera) == Some(link_id) {
                    let who = holder.as_ref().map(|h| h.controller.label());
                    info!(peer, camera = %camera, holder = who.as_deref().unwrap_or("nobody"), "PTZ lock changed hands");
                    self.ptz_notices += 1;
                    self.set_holder(&camera, holder, now);
                } else {
                    debug!(peer, camera = %camera, "PTZ lock notice for a camera this link does not carry: ignored");
                }
            }
            // Incident notices (issue 23) come from agents only.
            Control::Incident { notice } => {
                if ponte_proto::redundancy::is_agent_site(peer) {
                    out.push(Action::Incident { peer: peer.to_owned(), notice });
                } else {
                    debug!(peer, "incident notice from an upstream that is not an agent: ignored");
                }
            }
            // Shaping at the agent: the track stays open (viewers keep their
            // session) and resumes at a keyframe.
            Control::Paused { id, reason } => {
                if let Some(key) = self.set_paused(link_id, id, Some(&reason), now) {
                    info!(peer, camera = %key.camera, quality = key.quality.name(), %reason, "upstream paused a stream");
                }
            }
            Control::Resumed { id } => {
                if let Some(key) = self.set_paused(link_id, id, None, now) {
                    info!(peer, camera = %key.camera, quality = key.quality.name(), "upstream resumed a stream");
                }
            }
            other => {
                return Err(ProtocolViolation(format!(
                    "upstream sent `{}`, which only a subscriber may send",
                    ponte_proto::session::kind(&other)
                )))
            }
        }
        Ok(out)
    }
}

/// The upstream's reason for a revocation, without the "access revoked: "
/// it starts with (the relay's own reason says that already).
pub(super) fn upstream_why(reason: &str) -> &str {
    reason.strip_prefix("access revoked: ").unwrap_or(reason)
}
