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

use ponte_proto::hub::TrackKey;
use ponte_proto::ptz::{PtzCommand, PtzErrorCode, PtzHolder, PtzReply};
use ponte_proto::wire::{CatalogEntry, Control, SubscribeErrorCode};
use std::cmp::Reverse;
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::time::{Duration, Instant};
use tracing::{debug, info, warn};

/// How often an orphaned track looks for a link to feed it again (a link
/// that comes up adopts it at once; this covers a refused re-subscription).
pub const ADOPT_RETRY: Duration = Duration::from_secs(1);
/// Most PTZ commands waiting for answers on one link.
pub const MAX_PTZ_PENDING: usize = 256;

/// One upstream session, numbered by the relay in the order they came up.
pub type LinkId = u64;

/// Why a viewer could not get a stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscribeFailure {
    /// Category, as on the wire.
    pub code: SubscribeErrorCode,
    /// Explanation naming the camera and what to do.
    pub reason: String,
}

impl fmt::Display for SubscribeFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code.name(), self.reason)
    }
}

impl std::error::Error for SubscribeFailure {}

/// An upstream sent a message only a subscriber may send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProtocolViolation(pub String);

/// What the shell must do after an input.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Send `msg` on `link`'s control stream.
    Send {
        /// The link.
        link: LinkId,
        /// The message.
        msg: Control,
    },
    /// Answer the subscriber waiting for `track`.
    Resolve {
        /// The track.
        track: TrackKey,
        /// Its answer.
        result: Result<(), SubscribeFailure>,
    },
    /// The track ends for its readers; a waiting subscriber gets `failure`.
    End {
        /// The track.
        track: TrackKey,
        /// The waiting subscriber's answer, if one is owed.
        failure: Option<SubscribeFailure>,
    },
    /// Access to the track was revoked upstream: its readers are told `why`.
    Revoke {
        /// The track.
        track: TrackKey,
        /// Why, for the viewers.
        why: String,
    },
    /// The track lost its upstream: viewers stay but must wait for fresh video.
    Orphaned {
        /// The track.
        track: TrackKey,
    },
    /// The track is fed by a new subscription, whose GOPs number from 1 again.
    Adopted {
        /// The track.
        track: TrackKey,
    },
    /// Answer the PTZ command `id` sent on `link`.
    PtzAnswer {
        /// The link it went up.
        link: LinkId,
        /// Its request id.
        id: u64,
        /// The answer.
        reply: PtzReply,
    },
    /// The merged catalog may have changed (the cascade re-sends it).
    CatalogChanged,
    /// Call [`UpstreamState::expire_lost`] at `at`.
    WakeAt {
        /// When.
        at: Instant,
    },
}

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
}

/// A track fed (or once fed) by an upstream subscription.
#[derive(Debug, Clone)]
pub struct Track {
    /// Tells this track from a later one under the same key.
    pub generation: u64,
    /// (link, subscription id) feeding it; `None` while orphaned.
    pub feed: Option<(LinkId, u64)>,
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

/// A subscription the shell may send: commit it with
/// [`UpstreamState::subscribed`] once the message is on its way.
#[derive(Debug, Clone, PartialEq)]
pub struct PlannedSubscribe {
    /// The link that carries the camera.
    pub link: LinkId,
    /// Its peer.
    pub peer: String,
    /// The message to send.
    pub msg: Control,
}

/// A PTZ command the shell may send: commit it with
/// [`UpstreamState::ptz_sent`] once the message is on its way.
#[derive(Debug, Clone, PartialEq)]
pub struct PlannedPtz {
    /// The link that carries the camera.
    pub link: LinkId,
    /// Its peer.
    pub peer: String,
    /// Its request id.
    pub id: u64,
    /// The message to send.
    pub msg: Control,
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

    /// How much a link is preferred as a camera's source: its site's place
    /// in `relay.upstreams`, then the newest link of that site (an agent
    /// that restarted is reached on its new link at once).
    fn preference(&self, link_id: LinkId, peer: &str) -> (usize, Reverse<u64>) {
        (self.trusted.iter().position(|t| t == peer).unwrap_or(usize::MAX), Reverse(link_id))
    }

    /// The one link whose catalog entry for `camera` counts, and that
    /// carries its subscriptions and PTZ commands.
    pub fn carrier(&self, camera: &str) -> Option<LinkId> {
        self.links
            .iter()
            .filter(|(_, l)| l.catalog.iter().any(|c| c.id == camera))
            .min_by_key(|(id, l)| self.preference(**id, &l.peer))
            .map(|(id, _)| *id)
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
        live.sort_by_key(|(id, l)| self.preference(**id, &l.peer));
        let mut lost: Vec<(&String, &LostCatalog)> =
            self.lost.iter().filter(|(_, l)| now.saturating_duration_since(l.since) < self.grace).collect();
        lost.sort_by_key(|(peer, _)| self.preference(0, peer));
        let mut out: Vec<CatalogEntry> = live
            .into_iter()
            .map(|(_, l)| &l.catalog)
            .chain(lost.into_iter().map(|(_, l)| &l.catalog))
            .flat_map(|c| c.iter())
            .filter(|c| seen.insert(c.id.clone()))
            .cloned()
            .collect();
        out.sort_by(|a, b| (&a.zone, &a.device, a.lens).cmp(&(&b.zone, &b.device, b.lens)));
        out
    }

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
        self.tracks.get(key).filter(|t| t.feed == Some((link, sub))).map(|_| key)
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
    /// nobody watches it yet), or why there is none.
    pub fn plan_subscribe(&self, key: &TrackKey, now: Instant) -> Result<PlannedSubscribe, SubscribeFailure> {
        let camera = key.camera.as_str();
        let Some((link_id, link)) = self.carrier(camera).and_then(|id| self.links.get(&id).map(|l| (id, l)))
        else {
            return Err(self.no_carrier(camera, now));
        };
        if !link.catalog.iter().any(|c| c.id == camera && c.qualities.contains(&key.quality)) {
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
            msg: Control::Subscribe { id: link.next_sub, camera: camera.to_owned(), quality: key.quality },
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
                peer: plan.peer.clone(),
                orphaned: None,
                paused: None,
                pending: true,
                lost_since: None,
            },
        );
        info!(camera = %key.camera, quality = key.quality.name(), upstream = %plan.peer, subscription = sub_id, "subscribing upstream");
        generation
    }

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

    fn set_holder(&mut self, camera: &str, holder: Option<PtzHolder>, now: Instant) {
        match holder {
            Some(h) => {
                self.ptz_holders.insert(camera.to_owned(), (h, now));
            }
            None => {
                self.ptz_holders.remove(camera);
            }
        }
    }

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
            Control::Stats(s) => debug!(peer, ?s, "upstream stats"),
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

    fn on_catalog(
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
        for (other_id, other) in self.links.iter().filter(|(id, _)| **id != link_id) {
            for c in cameras.iter().filter(|c| other.catalog.iter().any(|o| o.id == c.id)) {
                let (ours, theirs) =
                    (self.preference(link_id, peer), self.preference(*other_id, &other.peer));
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
        let grants =
            |k: &TrackKey| link.catalog.iter().any(|c| c.id == k.camera && c.qualities.contains(&k.quality));
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
        out.push(Action::CatalogChanged);
    }

    /// Marks the track fed by `link`'s subscription `sub` paused for
    /// `reason`, or running again; returns its key.
    fn set_paused(&mut self, link: LinkId, sub: u64, reason: Option<&str>, now: Instant) -> Option<TrackKey> {
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

    /// A message of an action could not be sent (the link's queue is full or
    /// closing): a subscription that did not go out leaves its track orphaned
    /// again, to be retried.
    pub fn unsent(&mut self, link: LinkId, msg: &Control, now: Instant) -> Vec<Action> {
        let mut out = Vec::new();
        if let Control::Subscribe { id, .. } = msg {
            if let Some(key) = self.fed_track(link, *id).cloned() {
                if let Some(since) =
                    self.tracks.get(&key).filter(|t| !t.pending).map(|t| t.lost_since.unwrap_or(now))
                {
                    self.orphan(&key, since, &mut out);
                }
            }
        }
        out
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
        }
        (Some(wake), out)
    }

    /// Removes a track (its readers see the end); a waiting subscriber is
    /// answered `failure`.
    pub fn end(&mut self, key: &TrackKey, failure: Option<SubscribeFailure>, out: &mut Vec<Action>) {
        if let Some(t) = self.tracks.remove(key) {
            self.unlink(&t);
            out.push(Action::End { track: key.clone(), failure: failure.filter(|_| t.pending) });
        }
    }

    /// Ends a track whose access the upstream revoked: its readers see the
    /// end with `why`, a waiting subscriber a `forbidden` refusal.
    fn revoke(&mut self, key: &TrackKey, why: String, out: &mut Vec<Action>) {
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

    /// Keeps a track and its viewers, without an upstream for now.
    fn orphan(&mut self, key: &TrackKey, now: Instant, out: &mut Vec<Action>) {
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
    fn adopt_orphans(&mut self, now: Instant, out: &mut Vec<Action>) {
        let orphans: Vec<TrackKey> =
            self.tracks.iter().filter(|(_, t)| t.orphaned.is_some()).map(|(k, _)| k.clone()).collect();
        for key in orphans {
            self.adopt(&key, now, out);
        }
    }

    /// Subscribes an orphaned track again on a link whose catalog lists its
    /// camera, if one is up.
    fn adopt(&mut self, key: &TrackKey, now: Instant, out: &mut Vec<Action>) {
        let carrier = self.carrier(&key.camera);
        let Some(t) = self.tracks.get_mut(key).filter(|t| t.orphaned.is_some()) else { return };
        let Some((link_id, link)) = carrier.and_then(|id| self.links.get_mut(&id).map(|l| (id, l))) else {
            return;
        };
        if !link.catalog.iter().any(|c| c.id == key.camera && c.qualities.contains(&key.quality)) {
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
        let msg = Control::Subscribe { id: sub_id, camera: key.camera.clone(), quality: key.quality };
        out.push(Action::Send { link: link_id, msg });
        out.push(Action::Adopted { track: key.clone() });
    }

    /// Why a viewer of `camera` lost it when upstream `peer` withdrew it.
    fn withdrawn(&self, peer: &str, camera: &str) -> String {
        let who = if peer == crate::config::MASTER_SITE {
            "the master room".to_owned()
        } else {
            format!("upstream relay `{peer}`")
        };
        format!("{who} withdrew camera `{camera}` from site `{}`", self.site)
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
            if let Some((l, s)) = t.feed {
                let Some(link) = self.links.get(&l) else {
                    return Some(format!("{key} fed by a gone link {l}"));
                };
                if link.subs.get(&s) != Some(key) {
                    return Some(format!("{key}: link {l} does not know subscription {s}"));
                }
            }
        }
        for (l, link) in &self.links {
            for (s, key) in &link.subs {
                let Some(t) = self.tracks.get(key) else {
                    return Some(format!("link {l} sub {s}: no track {key}"));
                };
                if t.feed != Some((*l, *s)) {
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

/// The upstream's reason for a revocation, without the "access revoked: "
/// it starts with (the relay's own reason says that already).
fn upstream_why(reason: &str) -> &str {
    reason.strip_prefix("access revoked: ").unwrap_or(reason)
}

#[cfg(test)]
pub(crate) mod tests;
