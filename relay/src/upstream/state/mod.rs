//! The upstream table as a sans-IO state machine: links by [`LinkId`] with
//! their catalogs and subscriptions, the tracks they feed, orphans kept
//! through a link loss, lost catalogs, PTZ requests pending and lock holders.
//!
//! Every input carries its `now`; every decision comes back as [`Action`]s
//! that the shell (`super`) executes: sending on a link's control stream,
//! answering a waiting subscriber, ending or revoking a track's readers.
//! No quinn, no tokio, no lock in here, so the tests drive it with a
//! scripted upstream and a simulated clock, in milliseconds of real time,
//! the way quinn-proto's tests drive a `Connection`.
//!
//! The table and what it holds are here; its inputs and outputs by
//! concern: `action` (what the shell is told to do, and refusals),
//! `links` (links coming and going, their catalogs, which link carries a
//! camera), `tracks` (subscribing, pausing, tending and ending tracks),
//! `orphans` (tracks kept through a link loss and adopted again), `ptz`
//! (commands pending and lock holders), `control` (messages from an
//! upstream's control stream).

mod action;
mod control;
mod links;
mod orphans;
mod ptz;
mod tracks;
mod twins;

pub use action::{Action, PlannedPtz, PlannedSubscribe, ProtocolViolation, SubscribeFailure};

use ponte_proto::hub::TrackKey;
use ponte_proto::ptz::PtzHolder;
use ponte_proto::wire::CatalogEntry;
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// How often an orphaned track looks for a link to feed it again (a link
/// that comes up adopts it at once; this covers a refused re-subscription).
pub const ADOPT_RETRY: Duration = Duration::from_secs(1);
/// Most PTZ commands waiting for answers on one link.
pub const MAX_PTZ_PENDING: usize = 256;

/// One upstream session, numbered by the relay in the order they came up.
pub type LinkId = u64;

/// One upstream link as the table sees it.
#[derive(Debug, Clone)]
pub struct Link {
    /// Peer's site id (from its certificate).
    pub peer: String,
    /// The cameras it offers, each id once.
    pub catalog: Vec<CatalogEntry>,
    /// Subscriptions sent on it, by id.
    pub subs: HashMap<u64, TrackKey>,
    next_sub: u64,
    /// PTZ commands sent on it and not answered yet: request id → (camera, operation).
    pub ptz_pending: HashMap<u64, (String, &'static str)>,
    next_ptz: u64,
    /// The site's link budget as the upstream last reported it, bit/s.
    pub budget_bps: Option<u64>,
    /// The digest of the policy an agent applies to this site (`Hello`).
    pub policy: Option<String>,
}

impl Link {
    /// Whether its catalog offers `key`'s camera at `key`'s quality.
    pub fn grants(&self, key: &TrackKey) -> bool {
        self.catalog.iter().any(|c| c.id == key.camera && c.qualities.contains(&key.quality))
    }
}

/// A track fed (or once fed) by an upstream subscription.
#[derive(Debug, Clone)]
pub struct Track {
    /// Tells this track from a later one under the same key.
    pub generation: u64,
    /// (link, subscription id) feeding it; `None` while orphaned.
    pub feed: Option<(LinkId, u64)>,
    /// A second subscription on another path of the same agent, for a
    /// `dual_path` camera (issue 22): both copies feed the track, the
    /// first copy of each frame counts, and when the feed's path goes the
    /// twin carries on as the feed without a gap.
    pub twin: Option<(LinkId, u64)>,
    /// Site of the upstream that fed it last.
    pub peer: String,
    /// When it lost its upstream (orphaned), if it has none now.
    pub orphaned: Option<Instant>,
    /// Why and since when the upstream holds it back (shaping), if it does.
    pub paused: Option<(String, Instant)>,
    /// A subscriber waits for the upstream's first answer.
    pub pending: bool,
    /// When it was orphaned before its latest adoption: a re-subscription
    /// that could not be sent leaves it orphaned since then, so a congested
    /// link never stretches the grace.
    lost_since: Option<Instant>,
    /// The viewer list last sent up (`Control::Viewers`) and the feed it
    /// went to: a new feed (adoption) hears it again.
    told: Option<((LinkId, u64), Vec<String>, u32)>,
}

/// The catalog of a link that went down, kept through the reconnect grace.
#[derive(Debug, Clone)]
pub struct LostCatalog {
    /// What it offered.
    pub catalog: Vec<CatalogEntry>,
    /// When it went.
    pub since: Instant,
}

/// Whether a watched camera's picture is live at this relay.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "state", rename_all = "kebab-case")]
pub enum TrackState {
    /// Frames flow from the upstream.
    Live,
    /// The upstream holds the stream back (the link budget, at the agent).
    Paused {
        /// The upstream's reason.
        reason: String,
        /// Seconds since it paused.
        since_secs: u64,
    },
    /// The link to the upstream is down; the relay waits for it to return.
    UpstreamLost {
        /// Site of the upstream that fed it.
        upstream: String,
        /// Seconds since the link went.
        since_secs: u64,
    },
}

/// The upstream table.
#[derive(Debug)]
pub struct UpstreamState {
    site: String,
    /// `relay.upstreams`: the sites that may feed this relay, most preferred first.
    trusted: Vec<String>,
    /// A track nobody watches is unsubscribed after this.
    linger: Duration,
    /// An orphaned track, and a lost catalog, last this long.
    grace: Duration,
    /// Links up now.
    pub links: HashMap<LinkId, Link>,
    /// Tracks watched here, orphans among them.
    pub tracks: HashMap<TrackKey, Track>,
    next_link: LinkId,
    next_generation: u64,
    /// Catalogs of links that went down, by peer site.
    pub lost: HashMap<String, LostCatalog>,
    /// Latest known PTZ lock holder per camera, with when it was learnt.
    ptz_holders: HashMap<String, (PtzHolder, Instant)>,
    /// `PtzLock` notices received: a reply's holder is used only if no
    /// notice came while its command was under way (the agent sends replies
    /// and notices on separate paths, so a notice may overtake a reply).
    ptz_notices: u64,
}

impl UpstreamState {
    /// An empty table for `site`, fed only by the `trusted` sites (most
    /// preferred first).
    pub fn new(site: impl Into<String>, trusted: Vec<String>, linger: Duration, grace: Duration) -> Self {
        UpstreamState {
            site: site.into(),
            trusted,
            linger,
            grace,
            links: HashMap::new(),
            tracks: HashMap::new(),
            next_link: 0,
            next_generation: 0,
            lost: HashMap::new(),
            ptz_holders: HashMap::new(),
            ptz_notices: 0,
        }
    }

    /// Whether the site `peer` may feed this relay.
    pub fn trusts(&self, peer: &str) -> bool {
        self.trusted.iter().any(|t| t == peer)
    }

    /// What is wrong with the master room's agents while more than one is
    /// listed in `relay.upstreams`: each agent not connected (its cameras
    /// come from the others), and policies that disagree. Empty when all
    /// are up and agree, or when only one agent is listed.
    pub fn redundancy_problems(&self) -> Vec<String> {
        let agents: Vec<&String> =
            self.trusted.iter().filter(|t| ponte_proto::redundancy::is_agent_site(t)).collect();
        if agents.len() < 2 {
            return Vec::new();
        }
        let mut out = Vec::new();
        let up: Vec<&str> = agents
            .iter()
            .filter(|a| self.links.values().any(|l| &&l.peer == *a))
            .map(|a| a.as_str())
            .collect();
        for a in agents.iter().filter(|a| !up.contains(&a.as_str())) {
            let others = if up.is_empty() {
                "no other agent is up".to_owned()
            } else {
                format!("its cameras come from `{}`", up.join("`, `"))
            };
            out.push(format!("agent `{a}` of the master room is not connected: {others}"));
        }
        if let Some(digests) = self.policy_mismatch() {
            let list: Vec<String> = digests.iter().map(|(a, d)| format!("`{a}` {d}")).collect();
            out.push(format!(
                "the master room's agents apply different policies to this site ({}): only what all of them grant is served; make their `[[site]]` policies and inventories the same",
                list.join(", ")
            ));
        }
        out
    }

    /// Where tracks and links disagree on who feeds whom, or `None` when
    /// they agree: the table's invariant, for tests and the fuzz target
    /// (`ponte_fuzz::targets::relay_control`).
    pub fn inconsistency(&self) -> Option<String> {
        for (key, t) in &self.tracks {
            if t.feed.is_none() != t.orphaned.is_some() {
                return Some(format!(
                    "{key}: fed xor orphaned (feed {:?}, orphaned {:?})",
                    t.feed, t.orphaned
                ));
            }
            for (what, f) in [("fed", t.feed), ("twinned", t.twin)] {
                let Some((l, s)) = f else { continue };
                let Some(link) = self.links.get(&l) else {
                    return Some(format!("{key} {what} by a gone link {l}"));
                };
                if link.subs.get(&s) != Some(key) {
                    return Some(format!("{key}: link {l} does not know subscription {s}"));
                }
            }
            if t.twin.is_some() && (t.feed.is_none() || t.twin.map(|x| x.0) == t.feed.map(|x| x.0)) {
                return Some(format!("{key}: twin {:?} beside feed {:?}", t.twin, t.feed));
            }
        }
        for (l, link) in &self.links {
            for (s, key) in &link.subs {
                let Some(t) = self.tracks.get(key) else {
                    return Some(format!("link {l} sub {s}: no track {key}"));
                };
                if t.feed != Some((*l, *s)) && t.twin != Some((*l, *s)) {
                    return Some(format!("{key}: fed by {:?}, also by link {l} sub {s}", t.feed));
                }
            }
        }
        None
    }

    /// Panics when [`Self::inconsistency`] finds one.
    #[cfg(test)]
    pub fn check(&self) {
        if let Some(why) = self.inconsistency() {
            panic!("upstream table inconsistent: {why}");
        }
    }
}

#[cfg(test)]
pub(crate) mod tests;
