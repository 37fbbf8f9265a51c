//! Upstream sessions: the QUIC listener that agents (or upstream relays) dial,
//! their catalogs, and on-demand subscriptions shared by every local viewer.
//!
//! A camera crosses the link once per relay whatever the number of viewers:
//! the first viewer subscribes upstream, later ones join the hub track, and
//! the last one leaving starts a short linger before `Unsubscribe`.
//!
//! A lost upstream link (fibre cut, agent restart) does not end the tracks it
//! fed: they are orphaned, their viewers stay connected, and as soon as a link
//! whose catalog lists the camera comes up they are subscribed again (a new
//! subscription id); viewers resume at the next keyframe. An orphan nobody
//! adopts within the reconnect grace ends as before. The lost link's catalog
//! is kept for that grace too, so the page and the cascade keep listing its
//! cameras through a short outage.
//!
//! PTZ commands of local viewers go up the control stream of the link that
//! carries the camera, each with a request id of that session; the answer
//! (`PtzResult`) is matched by id. A command nobody answers in time is
//! answered `timeout`, one whose link is down or goes down `unavailable`.
//! The latest `PtzLock` notice per camera says who holds its lock.
//!
//! Trust: a valid certificate of the deployment CA is not enough to feed
//! this relay. Only the sites listed in `relay.upstreams` (the agent's
//! `master`, or a cascade child's parent relay) may; any other identity is
//! closed with `FORBIDDEN` before it says a word, logged and audited with
//! its certificate's site and address. Otherwise another partner's relay
//! could inject or shadow cameras, adopt orphaned streams during a fibre
//! cut, receive this site's PTZ commands and viewer names, or re-label a
//! camera's zone to widen a narrowed account. Each camera's catalog entry
//! comes from exactly one link: the first listed in `relay.upstreams` that
//! carries it (the newest link of that site); a duplicate is ignored.

use crate::audit::RelayAudit;
use ponte_proto::hub::{self, TrackKey, TrackReader, TrackWriter};
use ponte_proto::media::Quality;
use ponte_proto::ptz::{PtzCommand, PtzErrorCode, PtzHolder, PtzReply};
use ponte_proto::session::{self, SessionError, UniStreamWindow};
use ponte_proto::status::{CameraStatus, LinkStatus};
use ponte_proto::wire::{
    CatalogEntry, Control, MediaEvent, Role, StatsReport, SubscribeErrorCode, PROTOCOL_VERSION,
};
use std::cmp::Reverse;
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};
// Tokio's clock: tests run the orphan and linger timers on paused time.
use tokio::time::Instant;
use tracing::{debug, info, warn};

/// How long a subscriber waits for the agent's answer.
const SUBSCRIBE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long an upstream may take to say `Hello`.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// How often an orphaned track looks for a link to feed it again (a link
/// that comes up adopts it at once; this covers a refused re-subscription).
const ADOPT_RETRY: Duration = Duration::from_secs(1);
/// How long a PTZ command waits for the agent's answer.
pub const PTZ_TIMEOUT: Duration = Duration::from_secs(5);
/// Most PTZ commands waiting for answers on one link.
const MAX_PTZ_PENDING: usize = 256;

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

/// A track fed by an upstream subscription.
struct Ingest {
    writer: TrackWriter,
    /// Newest GOP sequence seen: frames of older GOP streams are dropped so a
    /// late stream never splices into a newer GOP.
    latest_gop: AtomicU64,
    gops: AtomicU64,
    bytes: AtomicU64,
}

struct RelayTrack {
    /// Tells this track from a later one under the same key.
    generation: u64,
    /// (link, subscription id) feeding it; `None` while orphaned.
    feed: Option<(u64, u64)>,
    /// Site of the upstream that fed it last.
    peer: String,
    /// When it lost its upstream (orphaned), if it has none now.
    orphaned: Option<Instant>,
    /// Why and since when the upstream holds it back (shaping), if it does.
    paused: Option<(String, Instant)>,
    ingest: Arc<Ingest>,
    pending: Option<oneshot::Sender<Result<(), SubscribeFailure>>>,
}

impl RelayTrack {
    fn fed_by(&self, link_id: u64) -> bool {
        self.feed.is_some_and(|(l, _)| l == link_id)
    }
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

/// The catalog of a link that went down, kept through the reconnect grace.
struct LostCatalog {
    catalog: Vec<CatalogEntry>,
    since: Instant,
}

struct Link {
    peer: String,
    addr: SocketAddr,
    conn: quinn::Connection,
    /// Media bytes received on this link.
    bytes: Arc<AtomicU64>,
    catalog: Vec<CatalogEntry>,
    ctl: mpsc::Sender<Control>,
    subs: HashMap<u64, TrackKey>,
    next_sub: u64,
    /// GOP stream credit granted to the peer, grown with `subs`.
    window: UniStreamWindow,
    /// PTZ commands sent on this session and not answered yet, by request id.
    ptz_pending: HashMap<u64, oneshot::Sender<PtzReply>>,
    next_ptz: u64,
}

#[derive(Default)]
struct Inner {
    /// `relay.upstreams`: the sites that may feed this relay, most preferred first.
    trusted: Vec<String>,
    links: HashMap<u64, Link>,
    tracks: HashMap<TrackKey, RelayTrack>,
    next_link: u64,
    next_generation: u64,
    /// Catalogs of links that went down, by peer site.
    lost: HashMap<String, LostCatalog>,
    /// Always-on cameras: a task per camera holding a subscription open.
    keepers: HashMap<String, tokio::task::JoinHandle<()>>,
    /// Latest known PTZ lock holder per camera, with when it was learnt.
    ptz_holders: HashMap<String, (PtzHolder, Instant)>,
    /// `PtzLock` notices received: a reply's holder is used only if no
    /// notice came while its command was under way (the agent sends replies
    /// and notices on separate paths, so a notice may overtake a reply).
    ptz_notices: u64,
}

impl Link {
    /// A fresh link: no catalog, subscriptions or PTZ requests yet.
    fn new(peer: String, addr: SocketAddr, conn: quinn::Connection, ctl: mpsc::Sender<Control>) -> Link {
        Link {
            peer,
            addr,
            conn,
            bytes: Arc::new(AtomicU64::new(0)),
            catalog: Vec::new(),
            ctl,
            subs: HashMap::new(),
            next_sub: 1,
            window: UniStreamWindow::default(),
            ptz_pending: HashMap::new(),
            next_ptz: 1,
        }
    }
}

impl Link {
    /// Records a subscription sent on this link, granting the peer stream
    /// credit for its GOPs.
    fn add_sub(&mut self, sub_id: u64, key: TrackKey) {
        self.subs.insert(sub_id, key);
        self.window.fit_connection(&self.conn, self.subs.len());
    }
}

impl Inner {
    /// How much a link is preferred as a camera's source: its site's place
    /// in `relay.upstreams`, then the newest link of that site (an agent
    /// that restarted is reached on its new link at once).
    fn preference(&self, link_id: u64, peer: &str) -> (usize, Reverse<u64>) {
        (self.trusted.iter().position(|t| t == peer).unwrap_or(usize::MAX), Reverse(link_id))
    }

    /// The one link whose catalog entry for `camera` counts, and that
    /// carries its subscriptions and PTZ commands.
    fn carrier(&self, camera: &str) -> Option<u64> {
        self.links
            .iter()
            .filter(|(_, l)| l.catalog.iter().any(|c| c.id == camera))
            .min_by_key(|(id, l)| self.preference(**id, &l.peer))
            .map(|(id, _)| *id)
    }

    /// Registers `link` under a new id.
    fn add_link(&mut self, link: Link) -> u64 {
        let id = self.next_link;
        self.next_link += 1;
        self.links.insert(id, link);
        id
    }
}

/// A PTZ request waiting for its answer; dropping it forgets the request.
struct PendingPtz<'a> {
    upstreams: &'a Upstreams,
    link: u64,
    id: u64,
}

impl Drop for PendingPtz<'_> {
    fn drop(&mut self) {
        if let Some(link) = self.upstreams.lock().links.get_mut(&self.link) {
            link.ptz_pending.remove(&self.id);
        }
    }
}

/// Upstream links and the tracks they feed.
pub struct Upstreams {
    site: String,
    audit: Arc<RelayAudit>,
    linger: Duration,
    /// How long an orphaned track waits for an upstream before it ends.
    grace: Duration,
    inner: Mutex<Inner>,
    bytes_received: AtomicU64,
    /// Bumped whenever the merged catalog may have changed (cascade re-sends it).
    catalog_version: tokio::sync::watch::Sender<u64>,
    /// Handle to ourselves for the linger tasks a subscription spawns.
    me: std::sync::Weak<Upstreams>,
}

/// One row of the upstream link table, for status.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LinkInfo {
    /// Peer's site id (from its certificate).
    pub peer: String,
    /// Peer's address.
    pub addr: SocketAddr,
    /// Cameras it offers.
    pub cameras: usize,
    /// Active subscriptions on it.
    pub subscriptions: usize,
}

impl Upstreams {
    /// A relay for `site` with no upstream yet, fed only by the `trusted`
    /// sites (most preferred first): a track nobody watches is unsubscribed
    /// after `linger`, one whose upstream is lost ends after `grace`.
    pub fn new(
        site: impl Into<String>,
        trusted: Vec<String>,
        audit: Arc<RelayAudit>,
        linger: Duration,
        grace: Duration,
    ) -> Arc<Self> {
        Arc::new_cyclic(|me| Self {
            site: site.into(),
            audit,
            linger,
            grace,
            inner: Mutex::new(Inner { trusted, ..Inner::default() }),
            bytes_received: AtomicU64::new(0),
            catalog_version: tokio::sync::watch::channel(0).0,
            me: me.clone(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// This relay's site id.
    pub fn site(&self) -> &str {
        &self.site
    }

    /// The relay's audit log.
    pub fn audit(&self) -> &Arc<RelayAudit> {
        &self.audit
    }

    /// Whether the site `peer` (from its certificate) may feed this relay.
    pub fn trusts(&self, peer: &str) -> bool {
        self.lock().trusted.iter().any(|t| t == peer)
    }

    /// Cameras this site may see, across all upstream links: each entry
    /// from the one link that carries the camera (then, through the
    /// reconnect grace, from lost catalogs).
    pub fn catalog(&self) -> Vec<CatalogEntry> {
        let inner = self.lock();
        let mut seen = HashSet::new();
        let now = Instant::now();
        let mut live: Vec<(&u64, &Link)> = inner.links.iter().collect();
        live.sort_by_key(|(id, l)| inner.preference(**id, &l.peer));
        let mut lost: Vec<(&String, &LostCatalog)> =
            inner.lost.iter().filter(|(_, l)| now.saturating_duration_since(l.since) < self.grace).collect();
        lost.sort_by_key(|(peer, _)| inner.preference(0, peer));
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

    /// Upstream links, for status.
    pub fn links(&self) -> Vec<LinkInfo> {
        let inner = self.lock();
        let mut out: Vec<LinkInfo> = inner
            .links
            .values()
            .map(|l| LinkInfo {
                peer: l.peer.clone(),
                addr: l.addr,
                cameras: l.catalog.len(),
                subscriptions: l.subs.len(),
            })
            .collect();
        out.sort_by(|a, b| a.peer.cmp(&b.peer));
        out
    }

    /// Upstream links and the camera streams they feed, for the status page.
    pub fn status(&self) -> (Vec<LinkStatus>, Vec<CameraStatus>) {
        let inner = self.lock();
        let mut links: Vec<LinkStatus> = inner
            .links
            .values()
            .map(|l| {
                let stats = l.conn.stats();
                LinkStatus {
                    peer: l.peer.clone(),
                    direction: "from-upstream".into(),
                    state: "up".into(),
                    addr: l.addr.to_string(),
                    rtt_ms: Some(l.conn.rtt().as_secs_f64() * 1000.0),
                    lost_packets: stats.path.lost_packets,
                    bytes_received: l.bytes.load(Ordering::Relaxed),
                    subscriptions: l.subs.len() as u32,
                    ..Default::default()
                }
            })
            .collect();
        // A lost link stays listed, down, through the reconnect grace.
        links.extend(
            inner.lost.iter().filter(|(peer, _)| !inner.links.values().any(|l| &l.peer == *peer)).map(
                |(peer, lost)| LinkStatus {
                    peer: peer.clone(),
                    direction: "from-upstream".into(),
                    state: "down".into(),
                    last_error: Some(format!(
                        "the link went down {} s ago; viewers wait for it to come back",
                        lost.since.elapsed().as_secs()
                    )),
                    ..Default::default()
                },
            ),
        );
        links.sort_by(|a, b| a.peer.cmp(&b.peer));
        let mut cameras: Vec<CameraStatus> = inner
            .tracks
            .iter()
            .map(|(key, t)| {
                let c = t.ingest.writer.counters();
                let config = t.ingest.writer.config();
                CameraStatus {
                    id: key.camera.clone(),
                    quality: key.quality.name().into(),
                    state: if t.orphaned.is_some() {
                        "offline".into()
                    } else if t.pending.is_some() {
                        "connecting".into()
                    } else {
                        "online".into()
                    },
                    codec: config.as_ref().map(|c| c.codec.name().to_owned()),
                    width: config.as_ref().map_or(0, |c| c.width),
                    height: config.as_ref().map_or(0, |c| c.height),
                    frames: c.frames_in.load(Ordering::Relaxed),
                    bytes: t.ingest.bytes.load(Ordering::Relaxed),
                    viewers: *t.ingest.writer.subscribers().borrow() as u32,
                    drops: c.frames_skipped.load(Ordering::Relaxed),
                    ..Default::default()
                }
            })
            .collect();
        cameras.sort_by(|a, b| (&a.id, &a.quality).cmp(&(&b.id, &b.quality)));
        (links, cameras)
    }

    /// Notified whenever the catalog may have changed (an upstream sent a
    /// new one, or a link went down).
    pub fn catalog_changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.catalog_version.subscribe()
    }

    /// Marks the track fed by `link`'s subscription `sub` paused for
    /// `reason`, or running again; returns its key.
    fn set_paused(&self, link: u64, sub: u64, reason: Option<&str>) -> Option<TrackKey> {
        let mut inner = self.lock();
        let key = inner.links.get(&link)?.subs.get(&sub)?.clone();
        let t = inner.tracks.get_mut(&key).filter(|t| t.feed == Some((link, sub)))?;
        match reason {
            Some(why) => {
                t.paused.get_or_insert_with(|| (why.to_owned(), Instant::now()));
            }
            None => t.paused = None,
        }
        Some(key)
    }

    /// Whether a watched camera's picture is live here: held back by the
    /// upstream (shaping) or waiting for a lost upstream to come back.
    /// `None` when nobody here watches it.
    pub fn track_state(&self, camera: &str, quality: Quality) -> Option<TrackState> {
        let inner = self.lock();
        let t = inner.tracks.get(&TrackKey::new(camera, quality))?;
        let secs = |since: Instant| since.elapsed().as_secs();
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

    /// Media bytes received from all upstreams.
    pub fn bytes_received(&self) -> u64 {
        self.bytes_received.load(Ordering::Relaxed)
    }

    /// Gets a reader for a camera, subscribing upstream if nobody here watches it yet.
    pub async fn subscribe(&self, camera: &str, quality: Quality) -> Result<TrackReader, SubscribeFailure> {
        let key = TrackKey::new(camera, quality);
        let (reader, answer) = {
            let mut inner = self.lock();
            if let Some(t) = inner.tracks.get(&key) {
                // An orphan too: its viewers wait for the link to come back.
                return Ok(t.ingest.writer.subscribe());
            }
            let carrier = inner.carrier(camera);
            let Inner { links, tracks, next_generation, .. } = &mut *inner;
            let found = carrier.and_then(|id| links.get_mut(&id).map(|l| (id, l)));
            let Some((link_id, link)) = found else {
                drop(inner);
                if self.catalog().iter().any(|c| c.id == camera) {
                    return Err(SubscribeFailure {
                        code: SubscribeErrorCode::Offline,
                        reason: format!(
                            "camera `{camera}`: the upstream link is down; it is retried automatically, try again in a moment"
                        ),
                    });
                }
                return Err(SubscribeFailure {
                    code: SubscribeErrorCode::Unknown,
                    reason: format!("camera `{camera}` is not in the catalog of site `{}`", self.site),
                });
            };
            if !link.catalog.iter().any(|c| c.id == camera && c.qualities.contains(&quality)) {
                return Err(SubscribeFailure {
                    code: SubscribeErrorCode::Forbidden,
                    reason: format!(
                        "camera `{camera}` is not available at `{}` quality to this site",
                        quality.name()
                    ),
                });
            }
            let sub_id = link.next_sub;
            link.next_sub += 1;
            if link
                .ctl
                .try_send(Control::Subscribe { id: sub_id, camera: camera.to_owned(), quality })
                .is_err()
            {
                return Err(SubscribeFailure {
                    code: SubscribeErrorCode::Offline,
                    reason: format!("the link to `{}` is congested or closing; retry in a moment", link.peer),
                });
            }
            link.add_sub(sub_id, key.clone());
            let ingest = Arc::new(Ingest {
                writer: hub::track(key.clone()),
                latest_gop: AtomicU64::new(0),
                gops: AtomicU64::new(0),
                bytes: AtomicU64::new(0),
            });
            let reader = ingest.writer.subscribe();
            let viewers = ingest.writer.subscribers();
            let (tx, rx) = oneshot::channel();
            *next_generation += 1;
            let generation = *next_generation;
            tracks.insert(
                key.clone(),
                RelayTrack {
                    generation,
                    feed: Some((link_id, sub_id)),
                    peer: link.peer.clone(),
                    orphaned: None,
                    paused: None,
                    ingest,
                    pending: Some(tx),
                },
            );
            info!(camera, quality = quality.name(), upstream = %link.peer, subscription = sub_id, "subscribing upstream");
            if let Some(me) = self.me.upgrade() {
                tokio::spawn(me.keep(key.clone(), generation, viewers));
            }
            (reader, rx)
        };
        match tokio::time::timeout(SUBSCRIBE_TIMEOUT, answer).await {
            Ok(Ok(Ok(()))) => Ok(reader),
            Ok(Ok(Err(failure))) => Err(failure),
            Ok(Err(_)) => Err(SubscribeFailure {
                code: SubscribeErrorCode::Offline,
                reason: format!("the upstream link carrying camera `{camera}` went down"),
            }),
            Err(_) => {
                self.end_track(&key, None);
                Err(SubscribeFailure {
                    code: SubscribeErrorCode::Offline,
                    reason: format!(
                        "the agent did not answer for camera `{camera}` within {SUBSCRIBE_TIMEOUT:?}"
                    ),
                })
            }
        }
    }

    /// Sends a viewer's PTZ command up the link that carries `camera` and
    /// waits at most `wait` for the agent's answer. Never fails: a link that
    /// is down, congested or silent is answered as a refusal.
    pub async fn ptz(&self, camera: &str, viewer: &str, command: PtzCommand, wait: Duration) -> PtzReply {
        let op = command.name();
        let sent = {
            let mut inner = self.lock();
            let carrier = inner.carrier(camera);
            match carrier.and_then(|id| inner.links.get_mut(&id).map(|l| (id, l))) {
                None => None,
                Some((link_id, link)) => {
                    if link.ptz_pending.len() >= MAX_PTZ_PENDING {
                        return PtzReply::refused(
                            PtzErrorCode::Unavailable,
                            format!(
                                "camera `{camera}`: {MAX_PTZ_PENDING} PTZ commands already wait for `{}`; retry in a moment",
                                link.peer
                            ),
                        );
                    }
                    let id = link.next_ptz;
                    let msg =
                        Control::Ptz { id, camera: camera.to_owned(), viewer: viewer.to_owned(), command };
                    if link.ctl.try_send(msg).is_err() {
                        return PtzReply::refused(
                            PtzErrorCode::Unavailable,
                            format!(
                                "camera `{camera}`: the link to `{}` is congested or closing; retry in a moment",
                                link.peer
                            ),
                        );
                    }
                    link.next_ptz += 1;
                    let (tx, rx) = oneshot::channel();
                    link.ptz_pending.insert(id, tx);
                    debug!(camera, viewer, op, upstream = %link.peer, request = id, "PTZ command sent upstream");
                    let peer = link.peer.clone();
                    Some((link_id, id, peer, rx, inner.ptz_notices))
                }
            }
        };
        let Some((link_id, id, peer, answer, notices)) = sent else {
            if self.catalog().iter().any(|c| c.id == camera) {
                return PtzReply::refused(
                    PtzErrorCode::Unavailable,
                    format!(
                        "camera `{camera}`: the link to its agent is down; it is retried automatically, try again in a moment"
                    ),
                );
            }
            return PtzReply::refused(
                PtzErrorCode::Unknown,
                format!("camera `{camera}` is not in the catalog of site `{}`", self.site),
            );
        };
        // Forgets the request however the wait ends, also when the viewer's
        // HTTP request is dropped mid-wait: an agent that never answers must
        // not fill the link's table.
        let _pending = PendingPtz { upstreams: self, link: link_id, id };
        match tokio::time::timeout(wait, answer).await {
            Ok(Ok(reply)) => {
                // A reply carries the holder as of its answer (a refusal
                // without one says nothing about the lock), unless a lock
                // notice came meanwhile: that one may be newer.
                let learnt = match &reply {
                    PtzReply::Done { holder, .. } => Some(holder.clone()),
                    PtzReply::Refused { holder: Some(h), .. } => Some(Some(h.clone())),
                    PtzReply::Refused { holder: None, .. } => None,
                };
                if let Some(holder) = learnt {
                    let mut inner = self.lock();
                    if inner.ptz_notices == notices {
                        Self::set_holder(&mut inner, camera, holder, Instant::now());
                    }
                }
                reply
            }
            Ok(Err(_)) => PtzReply::refused(
                PtzErrorCode::Unavailable,
                format!(
                    "camera `{camera}`: the link to `{peer}` went down before it answered the PTZ `{op}`; retry in a moment"
                ),
            ),
            Err(_) => {
                warn!(camera, viewer, op, upstream = %peer, request = id, "PTZ command unanswered");
                PtzReply::refused(
                    PtzErrorCode::Timeout,
                    format!(
                        "camera `{camera}`: `{peer}` did not answer the PTZ `{op}` within {wait:?}; check the link and retry"
                    ),
                )
            }
        }
    }

    /// The camera's PTZ lock holder as last reported upstream, if its lock
    /// has not lapsed since.
    pub fn ptz_holder(&self, camera: &str) -> Option<PtzHolder> {
        let inner = self.lock();
        let (holder, at) = inner.ptz_holders.get(camera)?;
        let gone = u64::try_from(at.elapsed().as_millis()).unwrap_or(u64::MAX);
        let left = holder.expires_in_ms.checked_sub(gone).filter(|ms| *ms > 0)?;
        Some(PtzHolder { expires_in_ms: left, ..holder.clone() })
    }

    fn set_holder(inner: &mut Inner, camera: &str, holder: Option<PtzHolder>, now: Instant) {
        match holder {
            Some(h) => {
                inner.ptz_holders.insert(camera.to_owned(), (h, now));
            }
            None => {
                inner.ptz_holders.remove(camera);
            }
        }
    }

    /// Looks after one track for its whole life: unsubscribes upstream once
    /// it has had no viewer for `linger`; while it is orphaned, looks for a
    /// link to feed it, and ends it when none came within the grace.
    async fn keep(self: Arc<Self>, key: TrackKey, generation: u64, mut viewers: watch::Receiver<usize>) {
        let mut idle_since: Option<Instant> = None;
        loop {
            let now = Instant::now();
            // Also a periodic look, so a track orphaned meanwhile is noticed.
            let mut wake = now + ADOPT_RETRY;
            {
                let mut inner = self.lock();
                let Some(t) = inner.tracks.get(&key).filter(|t| t.generation == generation) else { return };
                let orphaned = t.orphaned;
                if *viewers.borrow_and_update() > 0 || t.pending.is_some() {
                    idle_since = None;
                } else {
                    let since = *idle_since.get_or_insert(now);
                    let until = since + self.linger;
                    if now >= until {
                        if let Some(t) = inner.tracks.remove(&key) {
                            if let Some(link) = t.feed.and_then(|(l, _)| inner.links.get_mut(&l)) {
                                if let Some((_, sub_id)) = t.feed {
                                    link.subs.remove(&sub_id);
                                    let _ = link.ctl.try_send(Control::Unsubscribe { id: sub_id });
                                }
                            }
                            t.ingest.writer.close();
                        }
                        info!(camera = %key.camera, quality = key.quality.name(), "no viewers left: unsubscribed upstream");
                        return;
                    }
                    wake = wake.min(until);
                }
                if let Some(since) = orphaned {
                    let until = since + self.grace;
                    if now >= until {
                        drop(inner);
                        warn!(
                            camera = %key.camera,
                            quality = key.quality.name(),
                            grace_secs = self.grace.as_secs(),
                            "no upstream came back within the reconnect grace: ending the stream for its viewers"
                        );
                        self.end_track(&key, None);
                        return;
                    }
                    self.adopt(&mut inner, &key);
                    wake = wake.min(until);
                }
            }
            tokio::select! {
                _ = tokio::time::sleep_until(wake) => {}
                changed = viewers.changed() => if changed.is_err() { return },
            }
        }
    }

    /// Subscribes an orphaned track again on a link whose catalog lists its
    /// camera, if one is up. True when a subscription was sent.
    fn adopt(&self, inner: &mut Inner, key: &TrackKey) -> bool {
        let carrier = inner.carrier(&key.camera);
        let Inner { links, tracks, .. } = inner;
        let Some(t) = tracks.get_mut(key).filter(|t| t.orphaned.is_some()) else { return false };
        let Some((link_id, link)) = carrier.and_then(|id| links.get_mut(&id).map(|l| (id, l))) else {
            return false;
        };
        if !link.catalog.iter().any(|c| c.id == key.camera && c.qualities.contains(&key.quality)) {
            return false;
        }
        let sub_id = link.next_sub;
        let msg = Control::Subscribe { id: sub_id, camera: key.camera.clone(), quality: key.quality };
        if link.ctl.try_send(msg).is_err() {
            return false;
        }
        link.next_sub += 1;
        link.add_sub(sub_id, key.clone());
        let down_for = t.orphaned.map(|s| s.elapsed()).unwrap_or_default();
        info!(
            camera = %key.camera,
            quality = key.quality.name(),
            upstream = %link.peer,
            subscription = sub_id,
            down_ms = down_for.as_millis() as u64,
            "upstream back: subscribing again for the viewers that waited"
        );
        // The new subscription numbers its GOPs from 1 again.
        t.ingest.latest_gop.store(0, Ordering::Release);
        t.feed = Some((link_id, sub_id));
        t.paused = None;
        t.peer = link.peer.clone();
        t.orphaned = None;
        true
    }

    /// Keeps a track and its viewers, without an upstream for now.
    fn orphan(inner: &mut Inner, key: &TrackKey, now: Instant) {
        let Inner { links, tracks, .. } = inner;
        let Some(t) = tracks.get_mut(key) else { return };
        if let Some((link_id, sub_id)) = t.feed.take() {
            if let Some(link) = links.get_mut(&link_id) {
                link.subs.remove(&sub_id);
            }
        }
        t.orphaned.get_or_insert(now);
        // A viewer arriving meanwhile must wait for fresh video.
        t.ingest.writer.clear_cache();
    }

    /// Removes a track (its readers see the end) and answers a waiting subscriber.
    fn end_track(&self, key: &TrackKey, failure: Option<SubscribeFailure>) {
        let mut inner = self.lock();
        if let Some(mut t) = inner.tracks.remove(key) {
            if let Some((link_id, sub_id)) = t.feed {
                if let Some(link) = inner.links.get_mut(&link_id) {
                    link.subs.remove(&sub_id);
                }
            }
            if let (Some(tx), Some(f)) = (t.pending.take(), failure) {
                let _ = tx.send(Err(f));
            }
            t.ingest.writer.close();
        }
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

    /// Ends a track whose access the upstream revoked: its readers see the
    /// end with `why` ([`TrackReader::revoked`]), a waiting subscriber a
    /// `forbidden` refusal.
    fn revoke_track(&self, key: &TrackKey, why: &str) {
        let mut inner = self.lock();
        if let Some(mut t) = inner.tracks.remove(key) {
            if let Some((link_id, sub_id)) = t.feed {
                if let Some(link) = inner.links.get_mut(&link_id) {
                    link.subs.remove(&sub_id);
                }
            }
            drop(inner);
            info!(camera = %key.camera, quality = key.quality.name(), %why, "access revoked upstream: the track ends");
            if let Some(tx) = t.pending.take() {
                let _ = tx.send(Err(SubscribeFailure {
                    code: SubscribeErrorCode::Forbidden,
                    reason: format!("access revoked: {why}"),
                }));
            }
            t.ingest.writer.revoke(why);
        }
    }

    /// Accepts upstream sessions for ever.
    pub async fn serve(self: Arc<Self>, endpoint: quinn::Endpoint) {
        while let Some(incoming) = endpoint.accept().await {
            let this = self.clone();
            tokio::spawn(async move {
                let remote = incoming.remote_address();
                let conn = match incoming.await {
                    Ok(c) => c,
                    Err(e) => {
                        let why = refusal_hint(&e);
                        warn!(peer = %remote, error = %e, "refused QUIC connection: {why}");
                        return;
                    }
                };
                let peer = ponte_proto::tls::peer_site(&conn).unwrap_or_else(|| "?".into());
                if !this.trusts(&peer) {
                    let why = format!(
                        "site `{peer}` is not one of this relay's upstreams (`relay.upstreams`): a certificate \
                         of the deployment CA alone may not feed a relay"
                    );
                    warn!(peer = %peer, addr = %remote, "refused an upstream session: {why}");
                    this.audit.upstream_refused(&peer, remote, &why);
                    conn.close(session::close_code::FORBIDDEN.into(), b"not an upstream of this relay");
                    return;
                }
                info!(peer = %peer, addr = %remote, "upstream connected");
                match this.run_link(conn.clone(), peer.clone(), remote).await {
                    Ok(()) => info!(peer = %peer, addr = %remote, "upstream session ended"),
                    Err(e) => {
                        if matches!(e, SessionError::Wire(_) | SessionError::Protocol(_)) {
                            conn.close(session::close_code::PROTOCOL.into(), b"protocol violation");
                        }
                        warn!(peer = %peer, addr = %remote, error = %e, "upstream session closed");
                    }
                }
            });
        }
    }

    async fn run_link(
        self: &Arc<Self>,
        conn: quinn::Connection,
        peer: String,
        addr: SocketAddr,
    ) -> Result<(), SessionError> {
        let hello = Control::Hello { version: PROTOCOL_VERSION, node: self.site.clone(), role: Role::Relay };
        let (mut tx, mut rx, said) =
            tokio::time::timeout(HELLO_TIMEOUT, session::accept_control(&conn, &hello))
                .await
                .map_err(|_| SessionError::Protocol(format!("no Hello within {HELLO_TIMEOUT:?}")))??;
        // The master room's site speaks as the agent; any other trusted site
        // is a parent relay of a cascade.
        let expected = if peer == crate::config::MASTER_SITE { Role::Agent } else { Role::Relay };
        if let Control::Hello { role, .. } = said {
            if role != expected {
                let why = format!(
                    "site `{peer}` said it is {role:?} but may only feed this relay as {expected:?} \
                     (`master` is the agent, any other upstream a parent relay)"
                );
                self.audit.upstream_refused(&peer, addr, &why);
                conn.close(session::close_code::FORBIDDEN.into(), b"wrong role for this identity");
                return Err(SessionError::Protocol(why));
            }
        }
        let (ctl_tx, mut ctl_rx) = mpsc::channel::<Control>(256);
        let link_id = self.lock().add_link(Link::new(peer.clone(), addr, conn.clone(), ctl_tx));
        let media = tokio::spawn(self.clone().accept_media(conn.clone(), link_id));
        let mut stats = tokio::time::interval(Duration::from_secs(5));
        let result = loop {
            tokio::select! {
                msg = rx.recv() => match msg {
                    Ok(msg) => if let Err(e) = self.on_control(link_id, &peer, msg) { break Err(e) },
                    Err(e) => break Err(e),
                },
                Some(out) = ctl_rx.recv() => if let Err(e) = tx.send(&out).await { break Err(e) },
                _ = stats.tick() => {
                    let report = StatsReport { bytes_received: self.bytes_received(), ..Default::default() };
                    if let Err(e) = tx.send(&Control::Stats(report)).await { break Err(e) }
                }
                e = conn.closed() => break Err(e.into()),
            }
        };
        media.abort();
        self.drop_link(link_id);
        result
    }

    fn on_control(&self, link_id: u64, peer: &str, msg: Control) -> Result<(), SessionError> {
        match msg {
            Control::Catalog { mut cameras } => {
                info!(peer, cameras = cameras.len(), "catalog received");
                let mut ids = HashSet::new();
                cameras.retain(|c| {
                    let first = ids.insert(c.id.clone());
                    if !first {
                        warn!(peer, camera = %c.id, "catalog lists the camera twice: the first entry counts");
                    }
                    first
                });
                let gone: Vec<TrackKey> = {
                    let mut inner = self.lock();
                    // This upstream is back: its old catalog is replaced.
                    inner.lost.remove(peer);
                    for (other_id, other) in inner.links.iter().filter(|(id, _)| **id != link_id) {
                        for c in cameras.iter().filter(|c| other.catalog.iter().any(|o| o.id == c.id)) {
                            let (ours, theirs) =
                                (inner.preference(link_id, peer), inner.preference(*other_id, &other.peer));
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
                    let Some(link) = inner.links.get_mut(&link_id) else { return Ok(()) };
                    link.catalog = cameras;
                    let link = &*link;
                    let mut gone: Vec<TrackKey> = link
                        .subs
                        .values()
                        .filter(|k| {
                            !link.catalog.iter().any(|c| c.id == k.camera && c.qualities.contains(&k.quality))
                        })
                        .cloned()
                        .collect();
                    // Orphans this upstream fed before and no longer grants.
                    gone.extend(
                        inner
                            .tracks
                            .iter()
                            .filter(|(k, t)| {
                                t.orphaned.is_some()
                                    && t.peer == peer
                                    && !inner.links[&link_id]
                                        .catalog
                                        .iter()
                                        .any(|c| c.id == k.camera && c.qualities.contains(&k.quality))
                            })
                            .map(|(k, _)| k.clone()),
                    );
                    gone
                };
                // The upstream no longer grants these cameras to this site
                // (its policy or camera list changed): a revocation, which
                // viewers are told as such and their connections closed.
                for key in gone {
                    let why = self.withdrawn(peer, &key.camera);
                    self.revoke_track(&key, &why);
                }
                self.adopt_orphans();
                self.update_keepers();
                self.catalog_version.send_modify(|v| *v += 1);
            }
            Control::SubscribeOk { id, .. } => {
                let mut inner = self.lock();
                let key = inner.links.get(&link_id).and_then(|l| l.subs.get(&id)).cloned();
                if let Some(t) = key.and_then(|k| inner.tracks.get_mut(&k)) {
                    if let Some(tx) = t.pending.take() {
                        let _ = tx.send(Ok(()));
                    }
                }
            }
            Control::SubscribeError { id, code, reason } => {
                let mut inner = self.lock();
                let key = inner.links.get(&link_id).and_then(|l| l.subs.get(&id)).cloned();
                if let Some(key) = key {
                    info!(peer, camera = %key.camera, code = code.name(), reason = %reason, "upstream refused or ended a subscription");
                    // A camera that stopped delivering (restarting) after
                    // its viewers got video: keep them and subscribe again.
                    let established = inner.tracks.get(&key).is_some_and(|t| t.pending.is_none());
                    if code == SubscribeErrorCode::Offline && established {
                        Self::orphan(&mut inner, &key, Instant::now());
                    } else if code == SubscribeErrorCode::Forbidden && established {
                        // Forbidden after it was granted: the upstream's
                        // policy revoked it (e.g. a time window closed).
                        drop(inner);
                        let why =
                            format!("{} ({})", self.withdrawn(peer, &key.camera), upstream_why(&reason));
                        self.revoke_track(&key, &why);
                    } else {
                        drop(inner);
                        self.end_track(&key, Some(SubscribeFailure { code, reason }));
                    }
                }
            }
            Control::Stats(s) => debug!(peer, ?s, "upstream stats"),
            Control::PtzResult { id, reply } => {
                let waiting = self.lock().links.get_mut(&link_id).and_then(|l| l.ptz_pending.remove(&id));
                match waiting {
                    Some(tx) => {
                        let _ = tx.send(reply);
                    }
                    None => debug!(peer, request = id, "PTZ answer after its command timed out: dropped"),
                }
            }
            Control::PtzLock { camera, holder } => {
                // Only the link that carries the camera speaks for its lock.
                let listed = self.lock().carrier(&camera) == Some(link_id);
                if listed {
                    let who = holder.as_ref().map(|h| h.controller.label());
                    info!(peer, camera = %camera, holder = who.as_deref().unwrap_or("nobody"), "PTZ lock changed hands");
                    let mut inner = self.lock();
                    inner.ptz_notices += 1;
                    Self::set_holder(&mut inner, &camera, holder, Instant::now());
                } else {
                    debug!(peer, camera = %camera, "PTZ lock notice for a camera this link does not carry: ignored");
                }
            }
            // Shaping at the agent: the track stays open (viewers keep their
            // session) and resumes at a keyframe.
            Control::Paused { id, reason } => {
                if let Some(key) = self.set_paused(link_id, id, Some(&reason)) {
                    info!(peer, camera = %key.camera, quality = key.quality.name(), %reason, "upstream paused a stream");
                }
            }
            Control::Resumed { id } => {
                if let Some(key) = self.set_paused(link_id, id, None) {
                    info!(peer, camera = %key.camera, quality = key.quality.name(), "upstream resumed a stream");
                }
            }
            other => {
                return Err(SessionError::Protocol(format!(
                    "upstream sent `{}`, which only a subscriber may send",
                    session::kind(&other)
                )))
            }
        }
        Ok(())
    }

    /// Keeps every always-on camera of the catalog subscribed, viewers or not.
    fn update_keepers(&self) {
        let Some(me) = self.me.upgrade() else { return };
        let catalog = self.catalog();
        let mut inner = self.lock();
        inner.keepers.retain(|camera, task| {
            let keep = catalog.iter().any(|c| &c.id == camera && c.always_on);
            if !keep {
                task.abort();
            }
            keep && !task.is_finished()
        });
        for c in catalog.iter().filter(|c| c.always_on) {
            if inner.keepers.contains_key(&c.id) {
                continue;
            }
            let quality = c.qualities.first().copied().unwrap_or(Quality::Main);
            let (me, camera) = (me.clone(), c.id.clone());
            info!(camera = %camera, quality = quality.name(), "always-on: keeping the camera subscribed");
            let task = tokio::spawn(async move {
                loop {
                    match me.subscribe(&camera, quality).await {
                        Ok(mut reader) => while reader.next().await.is_some() {},
                        Err(e) => {
                            debug!(camera = %camera, error = %e, "always-on subscription failed; retrying")
                        }
                    }
                    tokio::time::sleep(Duration::from_secs(2)).await;
                }
            });
            inner.keepers.insert(c.id.clone(), task);
        }
    }

    /// Subscribes every orphan again that a link can feed now.
    fn adopt_orphans(&self) {
        let mut inner = self.lock();
        let orphans: Vec<TrackKey> =
            inner.tracks.iter().filter(|(_, t)| t.orphaned.is_some()).map(|(k, _)| k.clone()).collect();
        for key in orphans {
            self.adopt(&mut inner, &key);
        }
    }

    /// A link went down: a subscriber still waiting for its answer is told;
    /// established tracks are orphaned and wait for an upstream to come back.
    fn drop_link(&self, link_id: u64) {
        let now = Instant::now();
        let (waiting, orphaned) = {
            let mut inner = self.lock();
            if let Some(link) = inner.links.remove(&link_id) {
                // Its pending PTZ commands are answered `unavailable` as
                // their senders drop with it; who holds its cameras is unknown now.
                for c in &link.catalog {
                    inner.ptz_holders.remove(&c.id);
                }
                if !inner.links.values().any(|l| l.peer == link.peer) {
                    inner.lost.insert(link.peer.clone(), LostCatalog { catalog: link.catalog, since: now });
                }
            }
            let (waiting, established): (Vec<_>, Vec<_>) = inner
                .tracks
                .iter()
                .filter(|(_, t)| t.fed_by(link_id))
                .map(|(k, t)| (k.clone(), t.pending.is_some()))
                .partition(|(_, pending)| *pending);
            for (key, _) in &established {
                Self::orphan(&mut inner, key, now);
            }
            (waiting, established.len())
        };
        if orphaned > 0 {
            warn!(
                streams = orphaned,
                grace_secs = self.grace.as_secs(),
                "upstream link lost: viewers are kept and the streams resume when it comes back"
            );
        }
        for (key, _) in waiting {
            self.end_track(
                &key,
                Some(SubscribeFailure {
                    code: SubscribeErrorCode::Offline,
                    reason: "the upstream link went down".into(),
                }),
            );
        }
        // Another upstream may carry the same cameras (agents sharing them).
        self.adopt_orphans();
        self.catalog_version.send_modify(|v| *v += 1);
        // When the grace runs out, the lost catalog goes: tell the cascade.
        if let Some(me) = self.me.upgrade() {
            let grace = self.grace;
            tokio::spawn(async move {
                tokio::time::sleep(grace).await;
                let expired = {
                    let mut inner = me.lock();
                    let before = inner.lost.len();
                    inner.lost.retain(|_, l| l.since.elapsed() < grace);
                    before != inner.lost.len()
                };
                if expired {
                    me.catalog_version.send_modify(|v| *v += 1);
                }
            });
        }
    }

    async fn accept_media(self: Arc<Self>, conn: quinn::Connection, link_id: u64) {
        while let Ok(recv) = conn.accept_uni().await {
            let this = self.clone();
            tokio::spawn(async move {
                if let Err(e) = this.read_media(link_id, recv).await {
                    debug!(error = %e, "media stream error");
                }
            });
        }
    }

    async fn read_media(&self, link_id: u64, recv: quinn::RecvStream) -> Result<bool, SessionError> {
        let mut ingest: Option<Arc<Ingest>> = None;
        let mut link_bytes: Option<Arc<AtomicU64>> = None;
        let mut seq = 0;
        session::read_gop_stream(recv, |ev| match ev {
            MediaEvent::Header(h) => {
                let found = {
                    let inner = self.lock();
                    let link = inner.links.get(&link_id);
                    link_bytes = link.map(|l| l.bytes.clone());
                    link.and_then(|l| l.subs.get(&h.subscription))
                        .and_then(|k| inner.tracks.get(k))
                        .filter(|t| t.feed == Some((link_id, h.subscription)))
                        .map(|t| t.ingest.clone())
                };
                let Some(ing) = found else { return false };
                if ing.latest_gop.fetch_max(h.seq, Ordering::AcqRel) > h.seq {
                    return false; // an older GOP arriving late: useless now
                }
                seq = h.seq;
                if ing.writer.config().as_deref() != Some(&h.config) {
                    ing.writer.set_config(Arc::new(h.config));
                }
                ing.gops.fetch_add(1, Ordering::Relaxed);
                ingest = Some(ing);
                true
            }
            MediaEvent::Frame(f) => {
                let Some(ing) = &ingest else { return false };
                if ing.latest_gop.load(Ordering::Acquire) != seq {
                    return false; // superseded by a newer GOP
                }
                let n = f.payload.len() as u64;
                ing.bytes.fetch_add(n, Ordering::Relaxed);
                self.bytes_received.fetch_add(n, Ordering::Relaxed);
                if let Some(b) = &link_bytes {
                    b.fetch_add(n, Ordering::Relaxed);
                }
                ing.writer.push(f);
                true
            }
        })
        .await
    }
}

/// One phrase telling on-call staff what a refused handshake most likely means.
/// The upstream's reason for a revocation, without the "access revoked: "
/// it starts with (the relay's own reason says that already).
fn upstream_why(reason: &str) -> &str {
    reason.strip_prefix("access revoked: ").unwrap_or(reason)
}

fn refusal_hint(e: &quinn::ConnectionError) -> &'static str {
    let text = e.to_string();
    if text.contains("no certificates") {
        "the peer presented no client certificate"
    } else if text.contains("certificate") {
        "the peer's certificate was not issued by this deployment's CA, or has expired"
    } else if text.contains("protocol") || text.contains("ALPN") || text.contains("application") {
        "the peer does not speak ponte/1"
    } else {
        "handshake failed"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ponte_proto::media::Codec;
    use ponte_proto::tls::{self, Identity, TransportOptions};
    use std::sync::OnceLock;

    /// One live QUIC connection for the links' `conn` (only status reads
    /// it), made once on a runtime of its own that outlives the tests.
    fn connection() -> quinn::Connection {
        static CONN: OnceLock<quinn::Connection> = OnceLock::new();
        CONN.get_or_init(|| {
            let (tx, rx) = std::sync::mpsc::channel();
            std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
                rt.block_on(async move {
                    let ca_key = rcgen::KeyPair::generate().expect("key");
                    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
                    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
                    let ca = ca_params.self_signed(&ca_key).expect("CA");
                    let key = rcgen::KeyPair::generate().expect("key");
                    let mut params = rcgen::CertificateParams::new(vec!["relay".to_owned()]).expect("params");
                    params.extended_key_usages = vec![
                        rcgen::ExtendedKeyUsagePurpose::ServerAuth,
                        rcgen::ExtendedKeyUsagePurpose::ClientAuth,
                    ];
                    let cert = params.signed_by(&key, &ca, &ca_key).expect("cert");
                    let id =
                        Identity::from_pem(&ca.pem(), &cert.pem(), &key.serialize_pem()).expect("identity");
                    let opts =
                        TransportOptions { idle_timeout: Duration::from_secs(3600), ..Default::default() };
                    let server_cfg = tls::server_config(&id, &opts).expect("server config");
                    let server =
                        quinn::Endpoint::server(server_cfg, ([127, 0, 0, 1], 0).into()).expect("server");
                    let mut client = quinn::Endpoint::client(([127, 0, 0, 1], 0).into()).expect("client");
                    client.set_default_client_config(tls::client_config(&id, &opts).expect("client config"));
                    let addr = server.local_addr().expect("addr");
                    let connecting = client.connect(addr, "relay").expect("connect");
                    let incoming = server.accept().await.expect("incoming");
                    let (a, b) = tokio::join!(incoming, connecting);
                    let (_a, b) = (a.expect("accepted"), b.expect("connected"));
                    let _ = tx.send(b);
                    std::future::pending::<()>().await;
                });
            });
            rx.recv().expect("test connection")
        })
        .clone()
    }

    impl Upstreams {
        /// Registers a link as `run_link` does, without its session.
        fn attach(&self, peer: &str) -> (u64, mpsc::Receiver<Control>) {
            let (ctl, rx) = mpsc::channel(4);
            let link = Link::new(peer.to_owned(), ([127, 0, 0, 1], 7443).into(), connection(), ctl);
            (self.lock().add_link(link), rx)
        }

        /// Tracks and links agree on who feeds whom.
        fn check(&self) {
            let inner = self.lock();
            for (key, t) in &inner.tracks {
                assert_eq!(t.feed.is_none(), t.orphaned.is_some(), "{key}: fed xor orphaned");
                if let Some((l, s)) = t.feed {
                    let link = inner.links.get(&l).unwrap_or_else(|| panic!("{key} fed by a gone link"));
                    assert_eq!(link.subs.get(&s), Some(key), "{key}: the link knows its subscription");
                }
            }
            for (l, link) in &inner.links {
                for (s, key) in &link.subs {
                    let t =
                        inner.tracks.get(key).unwrap_or_else(|| panic!("link {l} sub {s}: no track {key}"));
                    assert_eq!(t.feed, Some((*l, *s)), "{key}: one feed");
                }
            }
        }
    }

    /// A relay fed by `master` (first) and `shard`, auditing nothing.
    fn test_upstreams(grace: Duration) -> Arc<Upstreams> {
        let audit = Arc::new(RelayAudit::disabled("site"));
        Upstreams::new(
            "site",
            vec!["master".into(), "shard".into()],
            audit,
            Duration::from_millis(300),
            grace,
        )
    }

    fn entry(camera: &str, sub: bool) -> CatalogEntry {
        CatalogEntry {
            id: camera.into(),
            device: camera.into(),
            lens: 1,
            name: camera.into(),
            zone: "z".into(),
            kind: "fixed".into(),
            codec: Codec::H264,
            qualities: if sub { vec![Quality::Main, Quality::Sub] } else { vec![Quality::Main] },
            ptz: false,
            always_on: false,
        }
    }

    const CAMERAS: [&str; 3] = ["c0", "c1", "c2"];

    /// Random sequences of upstream control messages, links coming and
    /// going, viewers subscribing and leaving, and time passing: the track
    /// table stays consistent after every step, nothing panics, and once
    /// every link is gone every track ends within the grace.
    #[test]
    fn fuzz_relay_control() {
        let grace = Duration::from_secs(3);
        ponte_fuzz::fuzz("relay_control", &[], |data| {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .start_paused(true)
                .build()
                .expect("runtime");
            rt.block_on(async {
                let up = test_upstreams(grace);
                let mut links: Vec<(u64, String, mpsc::Receiver<Control>)> = Vec::new();
                let mut asking = Vec::new();
                let mut readers: Vec<TrackReader> = Vec::new();
                // The shape of the state after each step: the outcome class.
                let mut shape: Vec<(usize, usize, usize)> = Vec::new();
                for op in data.chunks(3) {
                    let (a, b) = (op.get(1).copied().unwrap_or(0), op.get(2).copied().unwrap_or(0));
                    let pick = |n: usize| usize::from(a) % n.max(1);
                    let camera = CAMERAS[usize::from(b) % CAMERAS.len()];
                    let quality = if b & 0x80 == 0 { Quality::Main } else { Quality::Sub };
                    match op[0] % 12 {
                        0 if links.len() < 3 => {
                            let peer = if a & 1 == 0 { "master" } else { "shard" };
                            let (id, rx) = up.attach(peer);
                            links.push((id, peer.to_owned(), rx));
                        }
                        1 if !links.is_empty() => {
                            let (id, _, _) = links.remove(pick(links.len()));
                            up.drop_link(id);
                        }
                        2 if !links.is_empty() => {
                            let (id, peer, _) = &links[pick(links.len())];
                            let cameras = CAMERAS
                                .iter()
                                .enumerate()
                                .filter(|(i, _)| b & (1 << i) != 0)
                                .map(|(i, c)| entry(c, b & (8 << i) != 0))
                                .collect();
                            up.on_control(*id, peer, Control::Catalog { cameras })
                                .expect("a catalog is fine");
                        }
                        3 | 4 if !links.is_empty() => {
                            let (id, peer, _) = &links[pick(links.len())];
                            let sub = u64::from(b % 8);
                            let msg = if op[0] % 12 == 3 {
                                Control::SubscribeOk { id: sub, codec: Codec::H264 }
                            } else {
                                let code = [
                                    SubscribeErrorCode::Unknown,
                                    SubscribeErrorCode::Forbidden,
                                    SubscribeErrorCode::Offline,
                                    SubscribeErrorCode::OverBudget,
                                ][usize::from(a >> 4) % 4];
                                Control::SubscribeError { id: sub, code, reason: "fuzz".into() }
                            };
                            up.on_control(*id, peer, msg).expect("answers are fine");
                        }
                        5 if !links.is_empty() => {
                            let (id, peer, _) = &links[pick(links.len())];
                            let sub = u64::from(b % 8);
                            let msg = match a % 3 {
                                0 => Control::Paused { id: sub, reason: "budget".into() },
                                1 => Control::Resumed { id: sub },
                                _ => Control::Stats(StatsReport::default()),
                            };
                            up.on_control(*id, peer, msg).expect("notices are fine");
                        }
                        6 if !links.is_empty() => {
                            // Only a subscriber may send these: a protocol error.
                            let (id, peer, _) = &links[pick(links.len())];
                            let msg = Control::Subscribe { id: 1, camera: camera.into(), quality };
                            assert!(up.on_control(*id, peer, msg).is_err());
                        }
                        7 | 8 if asking.len() < 16 => {
                            let u = up.clone();
                            asking.push(tokio::spawn(async move { u.subscribe(camera, quality).await }));
                        }
                        9 if !readers.is_empty() => drop(readers.swap_remove(pick(readers.len()))),
                        10 => {
                            // The agent answers what it was asked, in order.
                            for (id, peer, rx) in &mut links {
                                while let Ok(msg) = rx.try_recv() {
                                    if let Control::Subscribe { id: sub, .. } = msg {
                                        let answer = if a & 1 == 0 {
                                            Control::SubscribeOk { id: sub, codec: Codec::H264 }
                                        } else {
                                            Control::SubscribeError {
                                                id: sub,
                                                code: SubscribeErrorCode::Offline,
                                                reason: "camera restarting".into(),
                                            }
                                        };
                                        up.on_control(*id, peer, answer).expect("answers are fine");
                                    }
                                }
                            }
                        }
                        _ => tokio::time::advance(Duration::from_millis(u64::from(a) * 20)).await,
                    }
                    for _ in 0..4 {
                        tokio::task::yield_now().await;
                    }
                    let (done, pending): (Vec<_>, Vec<_>) = asking.drain(..).partition(|h| h.is_finished());
                    asking = pending;
                    for h in done {
                        if let Ok(reader) = h.await.expect("subscribe never panics") {
                            readers.push(reader);
                        }
                    }
                    up.check();
                    if shape.len() < 12 {
                        let inner = up.lock();
                        let orphans = inner.tracks.values().filter(|t| t.orphaned.is_some()).count();
                        shape.push((inner.links.len(), inner.tracks.len(), orphans));
                    }
                }
                // Every upstream goes away: viewers wait out the grace, then
                // every track ends, and the lost catalogs with them.
                for (id, _, _) in links.drain(..) {
                    up.drop_link(id);
                }
                up.check();
                for _ in 0..20 {
                    tokio::time::advance(Duration::from_millis(500)).await;
                    for _ in 0..4 {
                        tokio::task::yield_now().await;
                    }
                }
                for h in asking {
                    let _ = h.await.expect("subscribe never panics");
                }
                let inner = up.lock();
                assert!(inner.tracks.is_empty(), "tracks outlived the grace: {:?}", inner.tracks.keys());
                drop(inner);
                assert!(up.catalog().is_empty(), "lost catalogs outlived the grace");
                ponte_fuzz::class_of((shape, readers.len().min(4)))
            })
        });
    }

    fn ptz_entry(camera: &str) -> CatalogEntry {
        CatalogEntry { kind: "dome-ptz".into(), ptz: true, ..entry(camera, false) }
    }

    fn holder(viewer: &str, ms: u64) -> ponte_proto::ptz::PtzHolder {
        ponte_proto::ptz::PtzHolder {
            controller: ponte_proto::ptz::Controller {
                site: "questura".into(),
                viewer: viewer.into(),
                priority: 10,
            },
            expires_in_ms: ms,
        }
    }

    /// Commands go up with fresh ids, answers are matched by id whatever
    /// their order, the holder is learnt from replies and lock notices and
    /// lapses with its lock.
    #[tokio::test(start_paused = true)]
    async fn ptz_commands_are_matched_by_id_and_holders_remembered() {
        let up = test_upstreams(Duration::from_secs(60));
        let (l1, mut rx) = up.attach("master");
        up.on_control(
            l1,
            "master",
            Control::Catalog { cameras: vec![ptz_entry("dome"), entry("c0", false)] },
        )
        .unwrap();
        let ask = |cmd: PtzCommand| {
            let u = up.clone();
            tokio::spawn(async move { u.ptz("dome", "anna", cmd, PTZ_TIMEOUT).await })
        };
        let first = ask(PtzCommand::Move { pan: 500, tilt: 0, zoom: 0 });
        let second = ask(PtzCommand::Presets);
        let mut ids = Vec::new();
        for _ in 0..2 {
            let Some(Control::Ptz { id, camera, viewer, command }) = rx.recv().await else {
                panic!("no Ptz")
            };
            assert_eq!((camera.as_str(), viewer.as_str()), ("dome", "anna"));
            ids.push((id, command));
        }
        assert_ne!(ids[0].0, ids[1].0, "one id per request");
        // Answered in reverse order.
        for (id, command) in ids.iter().rev() {
            let reply = match command {
                PtzCommand::Presets => PtzReply::Done {
                    holder: None,
                    presets: vec![ponte_proto::ptz::PtzPreset { token: "1".into(), name: "Ingresso".into() }],
                    position: None,
                },
                _ => PtzReply::Done { holder: Some(holder("anna", 15_000)), presets: vec![], position: None },
            };
            up.on_control(l1, "master", Control::PtzResult { id: *id, reply }).unwrap();
        }
        let moved = first.await.unwrap();
        assert_eq!(moved.http_status(), 200, "{moved:?}");
        let PtzReply::Done { presets, .. } = second.await.unwrap() else { panic!("presets refused") };
        assert_eq!(presets[0].name, "Ingresso");
        assert_eq!(up.ptz_holder("dome").unwrap().controller.viewer, "anna", "learnt from the move's reply");

        // An answer nobody waits for any more is no protocol error.
        up.on_control(
            l1,
            "master",
            Control::PtzResult { id: 999, reply: PtzReply::refused(PtzErrorCode::Locked, "x") },
        )
        .unwrap();
        // Lock notices: another site takes over; a notice for a camera this
        // link does not carry is ignored; the holder lapses with its lock.
        up.on_control(
            l1,
            "master",
            Control::PtzLock { camera: "dome".into(), holder: Some(holder("bruno", 2_000)) },
        )
        .unwrap();
        up.on_control(
            l1,
            "master",
            Control::PtzLock { camera: "elsewhere".into(), holder: Some(holder("x", 9_000)) },
        )
        .unwrap();
        assert!(up.ptz_holder("elsewhere").is_none());
        tokio::time::advance(Duration::from_millis(500)).await;
        let h = up.ptz_holder("dome").unwrap();
        assert_eq!((h.controller.viewer.as_str(), h.expires_in_ms), ("bruno", 1_500));
        tokio::time::advance(Duration::from_millis(1_500)).await;
        assert!(up.ptz_holder("dome").is_none(), "lapsed");
        up.on_control(
            l1,
            "master",
            Control::PtzLock { camera: "dome".into(), holder: Some(holder("bruno", 2_000)) },
        )
        .unwrap();
        up.on_control(l1, "master", Control::PtzLock { camera: "dome".into(), holder: None }).unwrap();
        assert!(up.ptz_holder("dome").is_none(), "released");

        // A notice overtaking a reply wins: the reply's holder is older.
        let late = ask(PtzCommand::GotoPreset { preset: "1".into() });
        let Some(Control::Ptz { id, .. }) = rx.recv().await else { panic!("no Ptz") };
        up.on_control(
            l1,
            "master",
            Control::PtzLock { camera: "dome".into(), holder: Some(holder("sala", 9_000)) },
        )
        .unwrap();
        let stale = PtzReply::Done { holder: Some(holder("anna", 15_000)), presets: vec![], position: None };
        up.on_control(l1, "master", Control::PtzResult { id, reply: stale }).unwrap();
        assert_eq!(late.await.unwrap().http_status(), 200);
        assert_eq!(up.ptz_holder("dome").unwrap().controller.viewer, "sala", "the newer notice stands");

        // Not in any catalog: unknown, and nothing goes up.
        let reply = up.ptz("nowhere", "anna", PtzCommand::Stop, PTZ_TIMEOUT).await;
        assert!(matches!(reply, PtzReply::Refused { code: PtzErrorCode::Unknown, .. }), "{reply:?}");
        assert!(rx.try_recv().is_err());
        // An agent may not send a relay's message.
        let ptz =
            Control::Ptz { id: 1, camera: "dome".into(), viewer: "x".into(), command: PtzCommand::Stop };
        assert!(up.on_control(l1, "master", ptz).is_err());
    }

    /// A silent agent: the command times out and its late answer is dropped.
    /// A link lost with commands pending: they are answered `unavailable`,
    /// and so is every command until a link is back.
    #[tokio::test(start_paused = true)]
    async fn ptz_times_out_and_a_lost_link_answers_unavailable() {
        let up = test_upstreams(Duration::from_secs(60));
        let (l1, mut rx) = up.attach("master");
        up.on_control(l1, "master", Control::Catalog { cameras: vec![ptz_entry("dome")] }).unwrap();
        let u = up.clone();
        let silent = tokio::spawn(async move { u.ptz("dome", "anna", PtzCommand::Stop, PTZ_TIMEOUT).await });
        let Some(Control::Ptz { id, .. }) = rx.recv().await else { panic!("no Ptz") };
        tokio::time::advance(PTZ_TIMEOUT + Duration::from_millis(1)).await;
        let reply = silent.await.unwrap();
        let PtzReply::Refused { code, reason, .. } = &reply else { panic!("{reply:?}") };
        assert_eq!(*code, PtzErrorCode::Timeout);
        assert!(reason.contains("dome") && reason.contains("master"), "{reason}");
        assert_eq!(reply.http_status(), 504);
        assert!(up.lock().links[&l1].ptz_pending.is_empty(), "the timed-out request is forgotten");
        up.on_control(
            l1,
            "master",
            Control::PtzResult { id, reply: PtzReply::refused(PtzErrorCode::Locked, "late") },
        )
        .unwrap();

        up.on_control(
            l1,
            "master",
            Control::PtzLock { camera: "dome".into(), holder: Some(holder("anna", 9_000)) },
        )
        .unwrap();
        let u = up.clone();
        let pending = tokio::spawn(async move {
            u.ptz("dome", "anna", PtzCommand::Move { pan: 0, tilt: 100, zoom: 0 }, PTZ_TIMEOUT).await
        });
        let Some(Control::Ptz { .. }) = rx.recv().await else { panic!("no Ptz") };
        up.drop_link(l1);
        let reply = pending.await.unwrap();
        assert!(matches!(reply, PtzReply::Refused { code: PtzErrorCode::Unavailable, .. }), "{reply:?}");
        assert_eq!(reply.http_status(), 503);
        assert!(up.ptz_holder("dome").is_none(), "nobody knows who holds it now");
        let reply = up.ptz("dome", "anna", PtzCommand::Stop, PTZ_TIMEOUT).await;
        let PtzReply::Refused { code: PtzErrorCode::Unavailable, reason, .. } = &reply else {
            panic!("{reply:?}")
        };
        assert!(reason.contains("link to its agent is down"), "{reason}");
    }

    /// A viewer that gives up mid-wait (its HTTP request dropped) leaves no
    /// pending entry behind, so a silent agent cannot fill the link's table.
    #[tokio::test(start_paused = true)]
    async fn a_dropped_ptz_request_is_forgotten() {
        let up = test_upstreams(Duration::from_secs(60));
        let (l1, mut rx) = up.attach("master");
        up.on_control(l1, "master", Control::Catalog { cameras: vec![ptz_entry("dome")] }).unwrap();
        let u = up.clone();
        let waiting = tokio::spawn(async move { u.ptz("dome", "anna", PtzCommand::Stop, PTZ_TIMEOUT).await });
        let Some(Control::Ptz { .. }) = rx.recv().await else { panic!("no Ptz") };
        assert_eq!(up.lock().links[&l1].ptz_pending.len(), 1);
        waiting.abort();
        assert!(waiting.await.unwrap_err().is_cancelled());
        assert!(up.lock().links[&l1].ptz_pending.is_empty(), "the cancelled request is forgotten");
    }

    /// The fibre cut as the relay sees it: the link goes, the viewer stays,
    /// the agent comes back, the track is subscribed again under a new id on
    /// the new link, and its GOP numbering starts over.
    #[tokio::test]
    async fn a_link_grants_gop_streams_as_its_subscriptions_grow() {
        let up = test_upstreams(Duration::from_secs(60));
        let (l, _rx) = up.attach("master");
        let mut inner = up.lock();
        let link = inner.links.get_mut(&l).unwrap();
        assert_eq!(link.window.granted(), session::INITIAL_UNI_STREAMS);
        for n in 0..60 {
            link.add_sub(n, TrackKey::new(format!("c{n}"), Quality::Main));
        }
        assert_eq!(link.window.granted(), 512, "60 subscriptions need 304 streams: the next power of two");
    }

    #[tokio::test(start_paused = true)]
    async fn a_lost_link_orphans_the_track_and_a_new_link_adopts_it() {
        let up = test_upstreams(Duration::from_secs(60));
        let (l1, mut rx1) = up.attach("master");
        up.on_control(l1, "master", Control::Catalog { cameras: vec![entry("c0", false)] }).unwrap();
        let u = up.clone();
        let viewer = tokio::spawn(async move { u.subscribe("c0", Quality::Main).await });
        tokio::task::yield_now().await;
        let Some(Control::Subscribe { id, .. }) = rx1.recv().await else { panic!("no subscribe") };
        up.on_control(l1, "master", Control::SubscribeOk { id, codec: Codec::H264 }).unwrap();
        let mut reader = viewer.await.unwrap().unwrap();
        up.lock().tracks.values().for_each(|t| t.ingest.latest_gop.store(9, Ordering::Relaxed));
        let state = || up.track_state("c0", Quality::Main);
        assert_eq!(state(), Some(TrackState::Live));
        assert_eq!(up.track_state("c0", Quality::Sub), None, "nobody watches the substream");
        // Shaping at the agent holds it back, then lets it go.
        up.on_control(l1, "master", Control::Paused { id, reason: "link budget".into() }).unwrap();
        tokio::time::advance(Duration::from_secs(3)).await;
        assert_eq!(state(), Some(TrackState::Paused { reason: "link budget".into(), since_secs: 3 }));
        up.on_control(l1, "master", Control::Resumed { id }).unwrap();
        assert_eq!(state(), Some(TrackState::Live));
        up.on_control(l1, "master", Control::Paused { id, reason: "link budget".into() }).unwrap();

        up.drop_link(l1);
        assert_eq!(up.catalog().len(), 1, "the lost catalog is kept through the grace");
        assert!(up.lock().tracks.values().all(|t| t.orphaned.is_some()));
        tokio::time::advance(Duration::from_secs(10)).await;
        assert_eq!(state(), Some(TrackState::UpstreamLost { upstream: "master".into(), since_secs: 10 }));
        assert!(reader.try_next().is_none(), "the viewer is still there, waiting");
        assert!(!up.lock().tracks.is_empty());

        let (l2, mut rx2) = up.attach("master");
        up.on_control(l2, "master", Control::Catalog { cameras: vec![entry("c0", false)] }).unwrap();
        let Some(Control::Subscribe { id: id2, camera, .. }) = rx2.recv().await else {
            panic!("no resubscribe")
        };
        assert_eq!(camera, "c0");
        {
            let inner = up.lock();
            let t = inner.tracks.values().next().unwrap();
            assert_eq!(t.feed, Some((l2, id2)));
            assert_eq!(t.ingest.latest_gop.load(Ordering::Relaxed), 0, "GOP numbering starts over");
        }
        assert_eq!(state(), Some(TrackState::Live), "a pause of the old link does not outlive it");
        up.check();

        // Gone for longer than the grace: the viewer's stream ends.
        up.drop_link(l2);
        tokio::time::advance(Duration::from_secs(61)).await;
        for _ in 0..8 {
            tokio::task::yield_now().await;
        }
        assert!(reader.next().await.is_none(), "ended after the grace");
        assert!(up.catalog().is_empty());
    }

    /// A camera id listed by two trusted links is never merged: its entry,
    /// subscriptions, PTZ commands and lock notices belong to the first site
    /// of `relay.upstreams` that lists it, and a catalog listing an id twice
    /// keeps the first entry.
    #[tokio::test(start_paused = true)]
    async fn a_camera_listed_by_two_links_comes_from_the_preferred_one() {
        let up = test_upstreams(Duration::from_secs(60));
        let (shard, mut rx_shard) = up.attach("shard");
        let mut shadow = entry("c0", false);
        shadow.zone = "widened".into();
        shadow.ptz = true;
        let own = entry("c1", false);
        up.on_control(shard, "shard", Control::Catalog { cameras: vec![shadow.clone(), own.clone()] })
            .unwrap();
        assert_eq!(up.catalog()[0].zone, "widened", "alone, the shard's entry counts");
        let (master, mut rx_master) = up.attach("master");
        let mut twice = entry("c0", false);
        twice.name = "second copy".into();
        up.on_control(master, "master", Control::Catalog { cameras: vec![entry("c0", false), twice] })
            .unwrap();
        let catalog = up.catalog();
        assert_eq!(catalog.len(), 2, "{catalog:?}");
        let c0 = catalog.iter().find(|c| c.id == "c0").unwrap();
        assert_eq!((c0.zone.as_str(), c0.name.as_str(), c0.ptz), ("z", "c0", false), "master's first entry");
        assert_eq!(up.lock().links[&master].catalog.len(), 1, "the duplicate in one catalog is dropped");

        // Subscriptions go to the carrier: master for c0, the shard for c1.
        let u = up.clone();
        let viewer = tokio::spawn(async move { u.subscribe("c0", Quality::Main).await });
        let Some(Control::Subscribe { id, camera, .. }) = rx_master.recv().await else {
            panic!("no subscribe")
        };
        assert_eq!(camera, "c0");
        up.on_control(master, "master", Control::SubscribeOk { id, codec: Codec::H264 }).unwrap();
        viewer.await.unwrap().unwrap();
        assert!(rx_shard.try_recv().is_err(), "the shard is not asked for c0");

        // PTZ for c0 goes up the master's link only, and only its lock notices count.
        let u = up.clone();
        let ptz =
            tokio::spawn(async move { u.ptz("c0", "anna", PtzCommand::Stop, Duration::from_secs(1)).await });
        let Some(Control::Ptz { camera, viewer, .. }) = rx_master.recv().await else { panic!("no PTZ") };
        assert_eq!((camera.as_str(), viewer.as_str()), ("c0", "anna"));
        assert!(rx_shard.try_recv().is_err(), "the shard never sees the site's PTZ commands or viewers");
        tokio::time::advance(Duration::from_secs(2)).await;
        let _ = ptz.await;
        up.on_control(
            shard,
            "shard",
            Control::PtzLock { camera: "c0".into(), holder: Some(holder("mallory", 9000)) },
        )
        .unwrap();
        assert!(up.ptz_holder("c0").is_none(), "a lock notice from a link that does not carry c0 is ignored");
        up.on_control(
            master,
            "master",
            Control::PtzLock { camera: "c0".into(), holder: Some(holder("anna", 9000)) },
        )
        .unwrap();
        assert!(up.ptz_holder("c0").is_some());
        up.check();
    }
}
