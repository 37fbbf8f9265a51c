//! Links coming up and going down, their catalogs (kept through the grace
//! once lost), and which trusted link carries a camera.

use super::action::{Action, SubscribeFailure};
use super::{Link, LinkId, LostCatalog, UpstreamState};
use ponte_proto::hub::TrackKey;
use ponte_proto::ptz::{PtzErrorCode, PtzReply};
use ponte_proto::redundancy::is_agent_site;
use ponte_proto::wire::{CatalogEntry, SubscribeErrorCode};
use std::cmp::Reverse;
use std::collections::{HashMap, HashSet};
use std::time::Instant;
use tracing::{info, warn};

impl UpstreamState {
    /// How much a link is preferred as `camera`'s source: its site's place
    /// in `relay.upstreams` (the agents of the master room all rank where
    /// the first of them is listed), then among agents the camera's
    /// rendezvous weight ([`ponte_proto::redundancy::primary`], so the
    /// cameras spread over the agents and each agent knows which are its
    /// own), then the newest link of that site (an agent that restarted is
    /// reached on its new link at once).
    fn preference(&self, link_id: LinkId, peer: &str, camera: &str) -> (usize, Reverse<u64>, Reverse<u64>) {
        let agent = is_agent_site(peer);
        let rank = self
            .trusted
            .iter()
            .position(|t| if agent { is_agent_site(t) } else { t == peer })
            .unwrap_or(usize::MAX);
        let weight = if agent { ponte_proto::redundancy::weight(camera, peer) } else { 0 };
        (rank, Reverse(weight), Reverse(link_id))
    }

    /// The one link whose catalog entry for `camera` counts, and that
    /// carries its subscriptions and PTZ commands.
    pub fn carrier(&self, camera: &str) -> Option<LinkId> {
        self.links
            .iter()
            .filter(|(_, l)| l.catalog.iter().any(|c| c.id == camera))
            .min_by_key(|(id, l)| self.preference(**id, &l.peer, camera))
            .map(|(id, _)| *id)
    }

    /// The policy digests of the agents feeding this relay when they
    /// disagree (each `(agent, digest)`, sorted), or `None` when they agree
    /// or only one feeds it. While they disagree only the stricter grant
    /// counts: a camera both list, at the qualities both give.
    pub fn policy_mismatch(&self) -> Option<Vec<(String, String)>> {
        let mut digests: Vec<(String, String)> = self
            .links
            .values()
            .filter(|l| is_agent_site(&l.peer))
            .map(|l| (l.peer.clone(), l.policy.clone().unwrap_or_else(|| "none".into())))
            .collect();
        digests.sort();
        digests.dedup();
        let first = digests.first()?.1.clone();
        digests.iter().any(|(_, d)| *d != first).then_some(digests)
    }

    /// `entry` as every agent link that lists it grants it (the stricter
    /// grant), or `None` when they share no quality. A camera only one
    /// agent lists (agents sharding the cameras) is its grant alone.
    fn strictest(&self, entry: &CatalogEntry) -> Option<CatalogEntry> {
        let mut out = entry.clone();
        let listing = self.links.values().filter(|l| is_agent_site(&l.peer));
        for theirs in listing.filter_map(|l| l.catalog.iter().find(|c| c.id == entry.id)) {
            out.qualities.retain(|q| theirs.qualities.contains(q));
            out.ptz &= theirs.ptz;
            out.always_on &= theirs.always_on;
        }
        (!out.qualities.is_empty()).then_some(out)
    }

    /// The link's policy digest (`Hello`, then `Policy`).
    pub fn set_policy(&mut self, link_id: LinkId, digest: Option<String>) {
        if let Some(link) = self.links.get_mut(&link_id) {
            link.policy = digest;
        }
    }

    /// How many agent links feed this relay (at least 1): each agent's
    /// share of the site's budget (`BudgetShare`).
    pub fn budget_parts(&self) -> u32 {
        self.agent_links().len().max(1) as u32
    }

    /// Links up from agents of the master room.
    pub fn agent_links(&self) -> Vec<LinkId> {
        let mut ids: Vec<LinkId> =
            self.links.iter().filter(|(_, l)| is_agent_site(&l.peer)).map(|(id, _)| *id).collect();
        ids.sort_unstable();
        ids
    }

    /// The site at the other end of `link`.
    pub fn link_peer(&self, link: LinkId) -> Option<&str> {
        self.links.get(&link).map(|l| l.peer.as_str())
    }

    /// A link from `peer` came up: its id.
    pub fn link_up(&mut self, peer: &str) -> LinkId {
        let id = self.next_link;
        self.next_link += 1;
        let link = Link {
            peer: peer.to_owned(),
            catalog: Vec::new(),
            subs: HashMap::new(),
            next_sub: 1,
            ptz_pending: HashMap::new(),
            next_ptz: 1,
            budget_bps: None,
            policy: None,
        };
        self.links.insert(id, link);
        id
    }

    /// Cameras this site may see, across all upstream links: each entry
    /// from the one link that carries the camera (then, through the
    /// reconnect grace, from lost catalogs).
    pub fn catalog(&self, now: Instant) -> Vec<CatalogEntry> {
        let mut seen = HashSet::new();
        let mut live: Vec<(&LinkId, &Link)> = self.links.iter().collect();
        live.sort_by_key(|(id, l)| self.preference(**id, &l.peer, ""));
        let mut lost: Vec<(&String, &LostCatalog)> =
            self.lost.iter().filter(|(_, l)| now.saturating_duration_since(l.since) < self.grace).collect();
        lost.sort_by_key(|(peer, _)| self.preference(0, peer, ""));
        let mut out: Vec<CatalogEntry> = live
            .into_iter()
            .map(|(_, l)| &l.catalog)
            .chain(lost.into_iter().map(|(_, l)| &l.catalog))
            .flat_map(|c| c.iter())
            .filter(|c| seen.insert(c.id.clone()))
            .cloned()
            .collect();
        if self.policy_mismatch().is_some() {
            out = out.into_iter().filter_map(|c| self.strictest(&c)).collect();
        }
        out.sort_by(|a, b| (&a.zone, &a.device, a.lens).cmp(&(&b.zone, &b.device, b.lens)));
        out
    }

    pub(super) fn on_catalog(
        &mut self,
        link_id: LinkId,
        peer: &str,
        mut cameras: Vec<CatalogEntry>,
        now: Instant,
        out: &mut Vec<Action>,
    ) {
        info!(peer, cameras = cameras.len(), "catalog received");
        let mut ids = HashSet::new();
        cameras.retain(|c| {
            let first = ids.insert(c.id.clone());
            if !first {
                warn!(peer, camera = %c.id, "catalog lists the camera twice: the first entry counts");
            }
            first
        });
        // This upstream is back: its old catalog is replaced.
        self.lost.remove(peer);
        // Agents of one master room list the same cameras: that is the point.
        let agents = |a: &str, b: &str| is_agent_site(a) && is_agent_site(b);
        for (other_id, other) in self.links.iter().filter(|(id, l)| **id != link_id && !agents(peer, &l.peer))
        {
            for c in cameras.iter().filter(|c| other.catalog.iter().any(|o| o.id == c.id)) {
                let (ours, theirs) =
                    (self.preference(link_id, peer, &c.id), self.preference(*other_id, &other.peer, &c.id));
                let counts = if ours < theirs { peer } else { other.peer.as_str() };
                warn!(
                    peer,
                    other = %other.peer,
                    camera = %c.id,
                    counts,
                    "two upstream links list the same camera: only the entry of `{counts}` counts (relay.upstreams order)"
                );
            }
        }
        let Some(link) = self.links.get_mut(&link_id) else { return };
        link.catalog = cameras;
        let link = &*link;
        let grants = |k: &TrackKey| link.grants(k);
        let mut gone: Vec<TrackKey> = link.subs.values().filter(|k| !grants(k)).cloned().collect();
        // Orphans this upstream fed before and no longer grants.
        gone.extend(
            self.tracks
                .iter()
                .filter(|(k, t)| t.orphaned.is_some() && t.peer == peer && !grants(k))
                .map(|(k, _)| k.clone()),
        );
        // The upstream no longer grants these cameras to this site (its
        // policy or camera list changed): a revocation, which viewers are
        // told as such and their connections closed.
        for key in gone {
            let why = self.withdrawn(peer, &key.camera);
            self.revoke(&key, why, out);
        }
        self.adopt_orphans(now, out);
        self.rebalance(link_id, now, out);
        out.extend(self.twins());
        out.push(Action::CatalogChanged);
    }

    /// A link went down: a subscriber still waiting for its answer is told,
    /// and so is every PTZ command waiting on it; established tracks are
    /// orphaned and wait for an upstream to come back.
    pub fn link_down(&mut self, link_id: LinkId, now: Instant) -> Vec<Action> {
        let mut out = Vec::new();
        if let Some(link) = self.links.remove(&link_id) {
            // Who holds its cameras is unknown now.
            for c in &link.catalog {
                self.ptz_holders.remove(&c.id);
            }
            for (id, (camera, op)) in link.ptz_pending {
                let reply = PtzReply::refused(
                    PtzErrorCode::Unavailable,
                    format!(
                        "camera `{camera}`: the link to `{}` went down before it answered the PTZ `{op}`; retry in a moment",
                        link.peer
                    ),
                );
                out.push(Action::PtzAnswer { link: link_id, id, reply });
            }
            if !self.links.values().any(|l| l.peer == link.peer) {
                self.lost.insert(link.peer.clone(), LostCatalog { catalog: link.catalog, since: now });
            }
        }
        // Dual-path cameras: a copy on the lost path is gone; where the
        // lost path fed a track, its copy on the other path carries on.
        self.path_lost(link_id, &mut out);
        let (waiting, established): (Vec<_>, Vec<_>) = self
            .tracks
            .iter()
            .filter(|(_, t)| t.feed.is_some_and(|(l, _)| l == link_id))
            .map(|(k, t)| (k.clone(), t.pending))
            .partition(|(_, pending)| *pending);
        for (key, _) in &established {
            self.orphan(key, now, &mut out);
        }
        if !established.is_empty() {
            warn!(
                streams = established.len(),
                grace_secs = self.grace.as_secs(),
                "upstream link lost: viewers are kept and the streams resume when it comes back"
            );
        }
        for (key, _) in waiting {
            let failure = SubscribeFailure {
                code: SubscribeErrorCode::Offline,
                reason: "the upstream link went down".into(),
            };
            self.end(&key, Some(failure), &mut out);
        }
        // Another upstream may carry the same cameras (agents sharing them).
        self.adopt_orphans(now, &mut out);
        out.extend(self.twins());
        out.push(Action::CatalogChanged);
        // When the grace runs out, the lost catalog goes: tell the cascade.
        out.push(Action::WakeAt { at: now + self.grace });
        out
    }

    /// Drops the lost catalogs older than the grace.
    pub fn expire_lost(&mut self, now: Instant) -> Vec<Action> {
        let before = self.lost.len();
        let grace = self.grace;
        self.lost.retain(|_, l| now.saturating_duration_since(l.since) < grace);
        if before != self.lost.len() {
            vec![Action::CatalogChanged]
        } else {
            Vec::new()
        }
    }

    /// Why a viewer of `camera` lost it when upstream `peer` withdrew it.
    pub(super) fn withdrawn(&self, peer: &str, camera: &str) -> String {
        let who = if peer == ponte_proto::ptz::MASTER_SITE {
            "the master room".to_owned()
        } else {
            format!("upstream relay `{peer}`")
        };
        format!("{who} withdrew camera `{camera}` from site `{}`", self.site)
    }
}
