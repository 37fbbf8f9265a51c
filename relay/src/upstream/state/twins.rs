//! Dual-path cameras (issue 22): an agent that reaches this relay on two
//! fibre paths has a link on each; a camera its catalog marks `dual_path`
//! is subscribed on both, the second subscription the track's twin. Both
//! copies feed the track (the shell keeps the first copy of each frame);
//! when the feed's path is cut, the twin becomes the feed at once, with no
//! re-subscription and no gap.

use super::action::Action;
use super::{LinkId, UpstreamState};
use ponte_proto::hub::TrackKey;
use ponte_proto::wire::Control;
use tracing::info;

impl UpstreamState {
    /// Subscribes the second copy of every `dual_path` track that has
    /// none and whose agent has another link listing the camera.
    pub fn twins(&mut self) -> Vec<Action> {
        let mut out = Vec::new();
        let wanted: Vec<(TrackKey, LinkId)> = self
            .tracks
            .iter()
            .filter(|(_, t)| t.twin.is_none() && t.orphaned.is_none())
            .filter_map(|(key, t)| {
                let (feed, _) = t.feed?;
                let link = self.links.get(&feed)?;
                let dual = link.catalog.iter().any(|c| c.id == key.camera && c.dual_path);
                if !dual {
                    return None;
                }
                let mut others: Vec<LinkId> = self
                    .links
                    .iter()
                    .filter(|(id, l)| **id != feed && l.peer == link.peer && l.grants(key))
                    .map(|(id, _)| *id)
                    .collect();
                others.sort_unstable();
                others.last().map(|other| (key.clone(), *other))
            })
            .collect();
        for (key, other) in wanted {
            let Some(link) = self.links.get_mut(&other) else { continue };
            let sub = link.next_sub;
            link.next_sub += 1;
            link.subs.insert(sub, key.clone());
            if let Some(t) = self.tracks.get_mut(&key) {
                t.twin = Some((other, sub));
            }
            info!(camera = %key.camera, quality = key.quality.name(), upstream = %link.peer, subscription = sub, "dual path: subscribing the copy on the second path");
            let msg = Control::Subscribe {
                id: sub,
                camera: key.camera.clone(),
                quality: key.quality,
                viewer: None,
                playback: None,
            };
            out.push(Action::Send { link: other, msg });
        }
        out
    }

    /// Drops `key`'s second copy, unsubscribing it upstream.
    pub(super) fn drop_twin(&mut self, key: &TrackKey, out: &mut Vec<Action>) {
        let Some((link, sub)) = self.tracks.get_mut(key).and_then(|t| t.twin.take()) else { return };
        if let Some(l) = self.links.get_mut(&link) {
            l.subs.remove(&sub);
            out.push(Action::Send { link, msg: Control::Unsubscribe { id: sub } });
        }
    }

    /// Forgets the twin `link`'s subscription `sub` is, if it is one
    /// (refused, ended, or never sent); returns whether it was.
    pub(super) fn forget_twin(&mut self, link: LinkId, sub: u64) -> bool {
        let Some(key) = self.links.get(&link).and_then(|l| l.subs.get(&sub)).cloned() else { return false };
        let Some(t) = self.tracks.get_mut(&key).filter(|t| t.twin == Some((link, sub))) else { return false };
        t.twin = None;
        if let Some(l) = self.links.get_mut(&link) {
            l.subs.remove(&sub);
        }
        true
    }

    /// `link` went down (it is already out of `links`): copies on it are
    /// gone, and tracks it fed are fed by their copy on the other path.
    pub(super) fn path_lost(&mut self, link: LinkId, out: &mut Vec<Action>) {
        for (key, t) in self.tracks.iter_mut() {
            if t.twin.is_some_and(|(l, _)| l == link) {
                t.twin = None;
            }
            if t.feed.is_some_and(|(l, _)| l == link) {
                if let Some(twin) = t.twin.take() {
                    info!(camera = %key.camera, quality = key.quality.name(), "dual path: a path was lost; the copy on the other path carries on");
                    t.feed = Some(twin);
                    t.told = None;
                    // The copy's own pauses were not followed while it was one.
                    t.paused = None;
                    out.push(Action::Promoted { track: key.clone(), link: twin.0 });
                }
            }
        }
    }
}
