//! Tracks that lost their upstream: kept with their viewers, subscribed
//! again on a link that carries the camera, or orphaned again when the
//! re-subscription could not be sent.

use super::action::Action;
use super::{LinkId, UpstreamState};
use ponte_proto::hub::TrackKey;
use ponte_proto::redundancy::is_agent_site;
use ponte_proto::wire::Control;
use std::time::Instant;
use tracing::info;

impl UpstreamState {
    /// A message of an action could not be sent (the link's queue is full or
    /// closing): a subscription that did not go out leaves its track orphaned
    /// again, to be retried; a viewer list is sent again later.
    pub fn unsent(&mut self, link: LinkId, msg: &Control, now: Instant) -> Vec<Action> {
        let mut out = Vec::new();
        if let Control::Subscribe { id, .. } = msg {
            // A twin that did not go out is simply not there (tried again
            // at the next catalog or adoption).
            if self.forget_twin(link, *id) {
                return out;
            }
            if let Some(key) = self.fed_track(link, *id).cloned() {
                if let Some(since) =
                    self.tracks.get(&key).filter(|t| !t.pending).map(|t| t.lost_since.unwrap_or(now))
                {
                    self.orphan(&key, since, &mut out);
                }
            }
        }
        if let Control::Viewers { id, .. } = msg {
            // Said again at the track's next look.
            if let Some(t) = self.fed_track(link, *id).cloned().and_then(|key| self.tracks.get_mut(&key)) {
                t.told = None;
            }
        }
        out
    }

    /// Keeps a track and its viewers, without an upstream for now.
    pub(super) fn orphan(&mut self, key: &TrackKey, now: Instant, out: &mut Vec<Action>) {
        self.drop_twin(key, out);
        let Some(t) = self.tracks.get_mut(key) else { return };
        if let Some((link_id, sub_id)) = t.feed.take() {
            if let Some(link) = self.links.get_mut(&link_id) {
                link.subs.remove(&sub_id);
            }
        }
        t.orphaned.get_or_insert(now);
        // A viewer arriving meanwhile must wait for fresh video.
        out.push(Action::Orphaned { track: key.clone() });
    }

    /// Subscribes every orphan again that a link can feed now.
    pub(super) fn adopt_orphans(&mut self, now: Instant, out: &mut Vec<Action>) {
        let orphans: Vec<TrackKey> =
            self.tracks.iter().filter(|(_, t)| t.orphaned.is_some()).map(|(k, _)| k.clone()).collect();
        for key in orphans {
            self.adopt(&key, now, out);
        }
    }

    /// An agent's link came (back) up with its catalog: the tracks whose
    /// camera it carries by the spread ([`Self::carrier`]) and that another
    /// agent feeds now move to it ([`Self::settle`], at once rather than at
    /// their next look), so the cameras spread over the agents again (after
    /// a failover, or when the agents came up one after the other).
    pub(super) fn rebalance(&mut self, link_id: LinkId, now: Instant, out: &mut Vec<Action>) {
        if !self.links.get(&link_id).is_some_and(|l| is_agent_site(&l.peer)) {
            return;
        }
        let keys: Vec<TrackKey> = self.tracks.keys().cloned().collect();
        for key in keys {
            self.settle(&key, now, out);
        }
    }

    /// Moves `key` from `old`'s subscription `sub` to the agent that
    /// carries it by the spread.
    fn move_home(&mut self, key: &TrackKey, old: LinkId, sub: u64, now: Instant, out: &mut Vec<Action>) {
        info!(camera = %key.camera, quality = key.quality.name(), "moving the camera back to the agent that carries it by the spread");
        out.push(Action::Send { link: old, msg: Control::Unsubscribe { id: sub } });
        self.orphan(key, now, out);
        self.adopt(key, now, out);
    }

    /// An established track fed by an agent other than the one that
    /// carries it by the spread (and grants it) moves there; a restarted
    /// agent's old link keeps its tracks until it goes (`link_down`). At
    /// each periodic look too: a track still waiting for its first answer
    /// when its agent came up moves then.
    pub(super) fn settle(&mut self, key: &TrackKey, now: Instant, out: &mut Vec<Action>) {
        let Some(t) = self.tracks.get(key).filter(|t| !t.pending && t.orphaned.is_none()) else { return };
        let Some((old, sub)) = t.feed else { return };
        let Some(home) = self.carrier(&key.camera).filter(|h| *h != old) else { return };
        let (Some(from), Some(to)) = (self.links.get(&old), self.links.get(&home)) else { return };
        if is_agent_site(&from.peer) && is_agent_site(&to.peer) && from.peer != to.peer && to.grants(key) {
            self.move_home(key, old, sub, now, out);
        }
    }

    /// Subscribes an orphaned track again on a link whose catalog lists its
    /// camera, if one is up.
    pub(super) fn adopt(&mut self, key: &TrackKey, now: Instant, out: &mut Vec<Action>) {
        let carrier = self.carrier(&key.camera);
        let Some(t) = self.tracks.get_mut(key).filter(|t| t.orphaned.is_some()) else { return };
        let Some((link_id, link)) = carrier.and_then(|id| self.links.get_mut(&id).map(|l| (id, l))) else {
            return;
        };
        if !link.grants(key) {
            return;
        }
        let sub_id = link.next_sub;
        link.next_sub += 1;
        link.subs.insert(sub_id, key.clone());
        let down_for = t.orphaned.map(|s| now.saturating_duration_since(s)).unwrap_or_default();
        info!(
            camera = %key.camera,
            quality = key.quality.name(),
            upstream = %link.peer,
            subscription = sub_id,
            down_ms = down_for.as_millis() as u64,
            "upstream back: subscribing again for the viewers that waited"
        );
        t.feed = Some((link_id, sub_id));
        t.paused = None;
        t.peer = link.peer.clone();
        t.lost_since = t.orphaned.take();
        let msg = Control::Subscribe {
            id: sub_id,
            camera: key.camera.clone(),
            quality: key.quality,
            viewer: None,
            playback: None,
        };
        out.push(Action::Send { link: link_id, msg });
        out.push(Action::Adopted { track: key.clone() });
    }
}
