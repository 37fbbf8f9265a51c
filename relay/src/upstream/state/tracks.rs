//! Tracks watched here: planning and committing a subscription, pauses the
//! upstream reports, tending a track through linger and grace, ending or
//! revoking it.

use super::action::{Action, PlannedSubscribe, SubscribeFailure};
use super::{LinkId, Track, TrackState, UpstreamState, ADOPT_RETRY};
use ponte_proto::hub::TrackKey;
use ponte_proto::wire::{wire_viewer, CatalogEntry, Control, SubscribeErrorCode};
use std::time::Instant;
use tracing::{info, warn};

impl UpstreamState {
    /// Whether a watched camera's picture is live here; `None` when nobody
    /// here watches it.
    pub fn track_state(&self, key: &TrackKey, now: Instant) -> Option<TrackState> {
        let t = self.tracks.get(key)?;
        let secs = |since: Instant| now.saturating_duration_since(since).as_secs();
        Some(match (&t.orphaned, &t.paused) {
            (Some(since), _) => {
                TrackState::UpstreamLost { since_secs: secs(*since), upstream: t.peer.clone() }
            }
            (None, Some((reason, since))) => {
                TrackState::Paused { since_secs: secs(*since), reason: reason.clone() }
            }
            (None, None) => TrackState::Live,
        })
    }

    /// The track that `link`'s subscription `sub` feeds now, if any.
    pub fn fed_track(&self, link: LinkId, sub: u64) -> Option<&TrackKey> {
        let key = self.links.get(&link)?.subs.get(&sub)?;
        self.tracks
            .get(key)
            .filter(|t| t.feed == Some((link, sub)) || t.twin == Some((link, sub)))
            .map(|_| key)
    }

    /// Why a subscription for a camera that no link carries now fails.
    fn no_carrier(&self, camera: &str, now: Instant) -> SubscribeFailure {
        if self.catalog(now).iter().any(|c| c.id == camera) {
            return SubscribeFailure {
                code: SubscribeErrorCode::Offline,
                reason: format!(
                    "camera `{camera}`: the upstream link is down; it is retried automatically, try again in a moment"
                ),
            };
        }
        SubscribeFailure {
            code: SubscribeErrorCode::Unknown,
            reason: format!("camera `{camera}` is not in the catalog of site `{}`", self.site),
        }
    }

    /// The subscription a first viewer of `key` needs (the caller checked
    /// nobody watches it yet), or why there is none; `viewer` names that
    /// viewer to the upstream's audit.
    pub fn plan_subscribe(
        &self,
        key: &TrackKey,
        viewer: Option<&str>,
        now: Instant,
    ) -> Result<PlannedSubscribe, SubscribeFailure> {
        let camera = key.camera.as_str();
        let Some((link_id, link)) = self.carrier(camera).and_then(|id| self.links.get(&id).map(|l| (id, l)))
        else {
            return Err(self.no_carrier(camera, now));
        };
        let mismatch = self.policy_mismatch();
        let stricter = |c: &CatalogEntry| c.id == camera && c.qualities.contains(&key.quality);
        if mismatch.is_some() && !self.catalog(now).iter().any(stricter) {
            let digests: Vec<String> = mismatch.iter().flatten().map(|(a, d)| format!("{a} {d}")).collect();
            return Err(SubscribeFailure {
                code: SubscribeErrorCode::Forbidden,
                reason: format!(
                    "camera `{camera}` at `{}` quality: the master room's agents apply different policies to this \
                     site ({}), and only what both grant is served",
                    key.quality.name(),
                    digests.join(", ")
                ),
            });
        }
        if !link.grants(key) {
            return Err(SubscribeFailure {
                code: SubscribeErrorCode::Forbidden,
                reason: format!(
                    "camera `{camera}` is not available at `{}` quality to this site",
                    key.quality.name()
                ),
            });
        }
        Ok(PlannedSubscribe {
            link: link_id,
            peer: link.peer.clone(),
            msg: Control::Subscribe {
                id: link.next_sub,
                camera: camera.to_owned(),
                quality: key.quality,
                viewer: viewer.map(wire_viewer),
                playback: None,
            },
        })
    }

    /// A planned subscription went out: the track exists, its subscriber
    /// waits. Returns the track's generation.
    pub fn subscribed(&mut self, key: &TrackKey, plan: &PlannedSubscribe) -> u64 {
        let Control::Subscribe { id: sub_id, .. } = plan.msg else { return 0 };
        if let Some(link) = self.links.get_mut(&plan.link) {
            link.next_sub = link.next_sub.max(sub_id + 1);
            link.subs.insert(sub_id, key.clone());
        }
        self.next_generation += 1;
        let generation = self.next_generation;
        self.tracks.insert(
            key.clone(),
            Track {
                generation,
                feed: Some((plan.link, sub_id)),
                twin: None,
                peer: plan.peer.clone(),
                orphaned: None,
                paused: None,
                pending: true,
                lost_since: None,
                told: None,
            },
        );
        info!(camera = %key.camera, quality = key.quality.name(), upstream = %plan.peer, subscription = sub_id, "subscribing upstream");
        generation
    }

    /// Marks the track fed by `link`'s subscription `sub` paused for
    /// `reason`, or running again; returns its key.
    pub(super) fn set_paused(
        &mut self,
        link: LinkId,
        sub: u64,
        reason: Option<&str>,
        now: Instant,
    ) -> Option<TrackKey> {
        let key = self.links.get(&link)?.subs.get(&sub)?.clone();
        let t = self.tracks.get_mut(&key).filter(|t| t.feed == Some((link, sub)))?;
        match reason {
            Some(why) => {
                t.paused.get_or_insert_with(|| (why.to_owned(), now));
            }
            None => t.paused = None,
        }
        Some(key)
    }

    /// Looks after one track (of `generation`) at `now`, watched by
    /// `viewers`: unsubscribes upstream once it has had no viewer for the
    /// linger (counted from `idle_since`, kept by the caller), looks for a
    /// link to feed it while it is orphaned, and ends it when none came
    /// within the grace. Returns when to look again, `None` once the track
    /// is gone.
    pub fn tend(
        &mut self,
        key: &TrackKey,
        generation: u64,
        viewers: usize,
        idle_since: &mut Option<Instant>,
        now: Instant,
    ) -> (Option<Instant>, Vec<Action>) {
        let mut out = Vec::new();
        // Also a periodic look, so a track orphaned meanwhile is noticed.
        let mut wake = now + ADOPT_RETRY;
        let Some(t) = self.tracks.get(key).filter(|t| t.generation == generation) else { return (None, out) };
        let orphaned = t.orphaned;
        if viewers > 0 || t.pending {
            *idle_since = None;
        } else {
            let since = *idle_since.get_or_insert(now);
            let until = since + self.linger;
            if now >= until {
                self.drop_twin(key, &mut out);
                if let Some(t) = self.tracks.remove(key) {
                    if let Some((link_id, sub_id)) = t.feed {
                        if let Some(link) = self.links.get_mut(&link_id) {
                            link.subs.remove(&sub_id);
                            out.push(Action::Send {
                                link: link_id,
                                msg: Control::Unsubscribe { id: sub_id },
                            });
                        }
                    }
                    out.push(Action::End { track: key.clone(), failure: None });
                }
                info!(camera = %key.camera, quality = key.quality.name(), "no viewers left: unsubscribed upstream");
                return (None, out);
            }
            wake = wake.min(until);
        }
        if let Some(since) = orphaned {
            let until = since + self.grace;
            if now >= until {
                warn!(
                    camera = %key.camera,
                    quality = key.quality.name(),
                    grace_secs = self.grace.as_secs(),
                    "no upstream came back within the reconnect grace: ending the stream for its viewers"
                );
                self.end(key, None, &mut out);
                return (None, out);
            }
            self.adopt(key, now, &mut out);
            wake = wake.min(until);
        } else {
            self.settle(key, now, &mut out);
        }
        (Some(wake), out)
    }

    /// Who watches `key` (of `generation`) here now: the upstream feeding
    /// it is told (`Control::Viewers`) when that differs from what it last
    /// heard, so its audit names each viewer who starts or stops watching.
    /// Said only once the upstream accepted the subscription.
    pub fn viewers(&mut self, key: &TrackKey, generation: u64, names: Vec<String>, more: u32) -> Vec<Action> {
        let Some(t) = self.tracks.get_mut(key).filter(|t| t.generation == generation && !t.pending) else {
            return Vec::new();
        };
        let Some(feed) = t.feed else { return Vec::new() };
        // A new feed (a first subscription, an adoption) has heard nobody yet.
        let heard = match &t.told {
            Some((f, n, m)) if *f == feed => (n.as_slice(), *m),
            _ => (&[][..], 0),
        };
        if heard == (names.as_slice(), more) {
            return Vec::new();
        }
        t.told = Some((feed, names.clone(), more));
        vec![Action::Send { link: feed.0, msg: Control::Viewers { id: feed.1, viewers: names, more } }]
    }

    /// Removes a track (its readers see the end); a waiting subscriber is
    /// answered `failure`.
    pub fn end(&mut self, key: &TrackKey, failure: Option<SubscribeFailure>, out: &mut Vec<Action>) {
        self.drop_twin(key, out);
        if let Some(t) = self.tracks.remove(key) {
            self.unlink(&t);
            out.push(Action::End { track: key.clone(), failure: failure.filter(|_| t.pending) });
        }
    }

    /// Ends a track whose access the upstream revoked: its readers see the
    /// end with `why`, a waiting subscriber a `forbidden` refusal.
    pub(super) fn revoke(&mut self, key: &TrackKey, why: String, out: &mut Vec<Action>) {
        self.drop_twin(key, out);
        if let Some(t) = self.tracks.remove(key) {
            self.unlink(&t);
            info!(camera = %key.camera, quality = key.quality.name(), %why, "access revoked upstream: the track ends");
            if t.pending {
                let failure = SubscribeFailure {
                    code: SubscribeErrorCode::Forbidden,
                    reason: format!("access revoked: {why}"),
                };
                out.push(Action::Resolve { track: key.clone(), result: Err(failure) });
            }
            out.push(Action::Revoke { track: key.clone(), why });
        }
    }

    fn unlink(&mut self, t: &Track) {
        if let Some((link_id, sub_id)) = t.feed {
            if let Some(link) = self.links.get_mut(&link_id) {
                link.subs.remove(&sub_id);
            }
        }
    }
}
