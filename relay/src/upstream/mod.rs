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
//!
//! Layout: `state` is the table itself, sans-IO ([`UpstreamState`]: every
//! decision, time passed in, actions returned); this module is its shell:
//! it owns the quinn connections, the hub tracks, the waiting subscribers
//! and the timers, feeds the state machine and executes what it returns.
//! The lock around the state is never held across an `.await`.

pub mod recall;
pub mod state;
#[cfg(test)]
mod tests;

use state::{Action, LinkId, UpstreamState};
pub use state::{SubscribeFailure, TrackState};

use crate::audit::RelayAudit;
use ponte_proto::hub::{self, TrackKey, TrackReader, TrackWriter};
use ponte_proto::media::Quality;
use ponte_proto::ptz::{PtzCommand, PtzErrorCode, PtzHolder, PtzReply};
use ponte_proto::session::{self, SessionError, UniStreamWindow};
use ponte_proto::status::{CameraStatus, LinkStatus};
use ponte_proto::wire::{
    CatalogEntry, Control, MediaEvent, Role, StatsReport, SubscribeErrorCode, PROTOCOL_VERSION,
};
use std::collections::HashMap;
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
/// How long a PTZ command waits for the agent's answer.
pub const PTZ_TIMEOUT: Duration = Duration::from_secs(5);

/// The state machine's clock: tokio's, so paused-time tests drive it too.
fn now() -> std::time::Instant {
    Instant::now().into_std()
}

/// A track fed by an upstream subscription.
struct Ingest {
    writer: TrackWriter,
    /// Newest GOP sequence seen: frames of older GOP streams are dropped so a
    /// late stream never splices into a newer GOP.
    latest_gop: AtomicU64,
    gops: AtomicU64,
    bytes: AtomicU64,
    /// The next frame the track takes. A dual-path camera's two copies both
    /// arrive; the first copy of each frame is pushed, the other dropped,
    /// and a copy of another quality (shaped differently on its path)
    /// never splices in.
    next: std::sync::Mutex<Option<NextFrame>>,
}

/// Where a track is: the GOP it is in (by its keyframe's pts: the same in
/// both copies, which come from one agent's camera track), at what
/// quality, the next frame's index, and the link that delivered the last.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct NextFrame {
    gop_pts: u64,
    quality: u8,
    index: u32,
    link: LinkId,
}

impl Ingest {
    fn new(writer: TrackWriter) -> Self {
        Ingest {
            writer,
            latest_gop: AtomicU64::new(0),
            gops: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            next: std::sync::Mutex::new(None),
        }
    }

    /// Whether frame `index` of the GOP whose keyframe has `gop_pts`, at
    /// `quality`, from `link`, is the next one the track takes (then it is
    /// counted as taken). A new GOP starts at its keyframe: from the feed's
    /// link that delivered the last GOP always (its streams' order is
    /// checked by sequence, and a restarted camera may start its times
    /// over), from a twin copy or another link only if newer.
    fn take(&self, gop_pts: u64, quality: u8, index: u32, link: LinkId, twin: bool) -> bool {
        let mut next = self.next.lock().unwrap_or_else(|e| e.into_inner());
        let take = match *next {
            None => index == 0,
            Some(n) if n.gop_pts == gop_pts => n.quality == quality && n.index == index,
            Some(n) => index == 0 && ((!twin && n.link == link) || gop_pts > n.gop_pts),
        };
        if take {
            *next = Some(NextFrame { gop_pts, quality, index: index + 1, link });
        }
        take
    }

    /// The twin on `link` feeds the track now: its next GOP starts there
    /// (its times are the agent's, maybe a restarted process's).
    fn promote(&self, link: LinkId) {
        self.latest_gop.store(0, Ordering::Release);
        if let Some(n) = self.next.lock().unwrap_or_else(|e| e.into_inner()).as_mut() {
            n.link = link;
        }
    }

    /// A new feed from another agent: its times start from elsewhere.
    fn restart(&self) {
        self.latest_gop.store(0, Ordering::Release);
        *self.next.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }
}

/// The I/O side of a track: its hub writer and a subscriber waiting for
/// the upstream's first answer.
struct TrackIo {
    ingest: Arc<Ingest>,
    pending: Option<oneshot::Sender<Result<(), SubscribeFailure>>>,
}

/// The I/O side of a link: its connection and control queue.
struct LinkIo {
    addr: SocketAddr,
    conn: quinn::Connection,
    /// Media bytes received on this link.
    bytes: Arc<AtomicU64>,
    ctl: mpsc::Sender<Control>,
    /// GOP stream credit granted to the peer, grown with its subscriptions.
    window: UniStreamWindow,
}

struct Inner {
    state: UpstreamState,
    links: HashMap<LinkId, LinkIo>,
    tracks: HashMap<TrackKey, TrackIo>,
    /// Viewers waiting for a PTZ answer, by (link, request id).
    ptz_waiting: HashMap<(LinkId, u64), oneshot::Sender<PtzReply>>,
    /// Always-on cameras: a task per camera holding a subscription open.
    keepers: HashMap<String, tokio::task::JoinHandle<()>>,
    /// Playbacks, recorded ranges and exports under way.
    recall: recall::RecallIo,
}

impl Inner {
    /// Grants the link's peer the GOP stream credit its subscriptions need.
    fn fit_window(&mut self, link: LinkId) {
        let subs =
            self.state.links.get(&link).map_or(0, |l| l.subs.len()) + self.recall.playbacks_on(link) + 1;
        if let Some(io) = self.links.get_mut(&link) {
            io.window.fit_connection(&io.conn, subs);
        }
    }
}

/// A PTZ request waiting for its answer; dropping it forgets the request.
struct PendingPtz<'a> {
    upstreams: &'a Upstreams,
    link: LinkId,
    id: u64,
}

impl Drop for PendingPtz<'_> {
    fn drop(&mut self) {
        let mut inner = self.upstreams.lock();
        inner.state.forget_ptz(self.link, self.id);
        inner.ptz_waiting.remove(&(self.link, self.id));
    }
}

/// Takes an agent's incident notice (its site, the notice).
pub type NoticeSink = Box<dyn Fn(&str, ponte_proto::incident::Notice) + Send + Sync>;

/// Upstream links and the tracks they feed.
pub struct Upstreams {
    site: String,
    audit: Arc<RelayAudit>,
    inner: Mutex<Inner>,
    bytes_received: AtomicU64,
    /// Bumped whenever the merged catalog may have changed (cascade re-sends it).
    catalog_version: tokio::sync::watch::Sender<u64>,
    /// Handle to ourselves for the linger tasks a subscription spawns.
    me: std::sync::Weak<Upstreams>,
    /// This relay's certificates and revocation list: sessions of a peer
    /// it revokes are closed (unset in unit tests).
    tls: std::sync::OnceLock<ponte_proto::tls::LiveTls>,
    /// Where the agents' incident notices go (issue 23; unset in unit tests).
    incidents: std::sync::OnceLock<NoticeSink>,
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
        let site = site.into();
        Arc::new_cyclic(|me| Self {
            site: site.clone(),
            audit,
            inner: Mutex::new(Inner {
                state: UpstreamState::new(site, trusted, linger, grace),
                links: HashMap::new(),
                tracks: HashMap::new(),
                ptz_waiting: HashMap::new(),
                keepers: HashMap::new(),
                recall: recall::RecallIo::default(),
            }),
            bytes_received: AtomicU64::new(0),
            catalog_version: tokio::sync::watch::channel(0).0,
            me: me.clone(),
            tls: std::sync::OnceLock::new(),
            incidents: std::sync::OnceLock::new(),
        })
    }

    /// Gives the relay its live TLS (once, at start).
    pub fn set_tls(&self, tls: ponte_proto::tls::LiveTls) {
        let _ = self.tls.set(tls);
    }

    /// Where the agents' incident notices go (once, at start): the site's
    /// board. Called with the upstream lock held: it must not call back.
    pub fn on_incident(&self, sink: NoticeSink) {
        let _ = self.incidents.set(sink);
    }

    /// Sends what an operator did about an incident to the agent `peer`
    /// (None, or its link down: the first agent with a link up).
    pub fn incident_action(
        &self,
        peer: Option<&str>,
        action: ponte_proto::incident::SiteAction,
    ) -> Result<(), String> {
        let inner = self.lock();
        let links = inner.state.agent_links();
        // The agent that sent the notice, else another one: the agents of a
        // master room share their grants, so either can take an acceptance.
        let link = peer
            .and_then(|p| links.iter().copied().find(|id| inner.state.link_peer(*id) == Some(p)))
            .or_else(|| links.first().copied());
        let Some(link) = link else {
            return Err(format!(
                "the link to the master room ({}) is down; it is retried automatically, try again in a moment",
                peer.unwrap_or("master")
            ));
        };
        let sent = inner
            .links
            .get(&link)
            .is_some_and(|io| io.ctl.try_send(Control::IncidentAction { action }).is_ok());
        if sent {
            Ok(())
        } else {
            Err("the link to the master room is congested or closing; try again in a moment".into())
        }
    }

    /// Closes `conn` when its peer's certificate is revoked, while the guard lives.
    pub fn watch_peer(&self, conn: &quinn::Connection) -> Option<ponte_proto::tls::live::PeerGuard> {
        self.tls.get().map(|t| t.watch_peer(conn))
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
        self.lock().state.trusts(peer)
    }

    /// Cameras this site may see, across all upstream links: each entry
    /// from the one link that carries the camera (then, through the
    /// reconnect grace, from lost catalogs).
    pub fn catalog(&self) -> Vec<CatalogEntry> {
        self.lock().state.catalog(now())
    }

    /// Upstream links, for status.
    pub fn links(&self) -> Vec<LinkInfo> {
        let inner = self.lock();
        let mut out: Vec<LinkInfo> = inner
            .state
            .links
            .iter()
            .filter_map(|(id, l)| {
                Some(LinkInfo {
                    peer: l.peer.clone(),
                    addr: inner.links.get(id)?.addr,
                    cameras: l.catalog.len(),
                    subscriptions: l.subs.len(),
                })
            })
            .collect();
        out.sort_by(|a, b| a.peer.cmp(&b.peer));
        out
    }

    /// What is wrong with the master room's agents (see
    /// [`UpstreamState::redundancy_problems`]): the relay is degraded.
    pub fn redundancy_problems(&self) -> Vec<String> {
        self.lock().state.redundancy_problems()
    }

    /// Upstream links and the camera streams they feed, for the status page.
    pub fn status(&self) -> (Vec<LinkStatus>, Vec<CameraStatus>) {
        let inner = self.lock();
        let now = now();
        let mut links: Vec<LinkStatus> = inner
            .state
            .links
            .iter()
            .filter_map(|(id, l)| {
                let io = inner.links.get(id)?;
                let stats = io.conn.stats();
                Some(LinkStatus {
                    peer: l.peer.clone(),
                    direction: "from-upstream".into(),
                    state: "up".into(),
                    addr: io.addr.to_string(),
                    rtt_ms: Some(io.conn.rtt().as_secs_f64() * 1000.0),
                    lost_packets: stats.path.lost_packets,
                    bytes_received: io.bytes.load(Ordering::Relaxed),
                    subscriptions: l.subs.len() as u32,
                    budget_bps: l.budget_bps,
                    ..Default::default()
                })
            })
            .collect();
        // A lost link stays listed, down, through the reconnect grace.
        links.extend(
            inner
                .state
                .lost
                .iter()
                .filter(|(peer, _)| !inner.state.links.values().any(|l| &l.peer == *peer))
                .map(|(peer, lost)| LinkStatus {
                    peer: peer.clone(),
                    direction: "from-upstream".into(),
                    state: "down".into(),
                    last_error: Some(format!(
                        "the link went down {} s ago; viewers wait for it to come back",
                        now.saturating_duration_since(lost.since).as_secs()
                    )),
                    ..Default::default()
                }),
        );
        links.sort_by(|a, b| a.peer.cmp(&b.peer));
        let mut cameras: Vec<CameraStatus> = inner
            .state
            .tracks
            .iter()
            .filter_map(|(key, t)| {
                let ingest = &inner.tracks.get(key)?.ingest;
                let c = ingest.writer.counters();
                let config = ingest.writer.config();
                Some(CameraStatus {
                    id: key.camera.clone(),
                    quality: key.quality.name().into(),
                    state: if t.orphaned.is_some() {
                        "offline".into()
                    } else if t.pending {
                        "connecting".into()
                    } else {
                        "online".into()
                    },
                    codec: config.as_ref().map(|c| c.codec.name().to_owned()),
                    width: config.as_ref().map_or(0, |c| c.width),
                    height: config.as_ref().map_or(0, |c| c.height),
                    frames: c.frames_in.load(Ordering::Relaxed),
                    bytes: ingest.bytes.load(Ordering::Relaxed),
                    viewers: *ingest.writer.subscribers().borrow() as u32,
                    drops: c.frames_skipped.load(Ordering::Relaxed),
                    ..Default::default()
                })
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

    /// Whether a watched camera's picture is live here: held back by the
    /// upstream (shaping) or waiting for a lost upstream to come back.
    /// `None` when nobody here watches it.
    pub fn track_state(&self, camera: &str, quality: Quality) -> Option<TrackState> {
        self.lock().state.track_state(&TrackKey::new(camera, quality), now())
    }

    /// Media bytes received from all upstreams.
    pub fn bytes_received(&self) -> u64 {
        self.bytes_received.load(Ordering::Relaxed)
    }

    /// Sends every upstream the head of this relay's audit log one last
    /// time (shutdown), and gives the sends `grace` to go out.
    pub async fn send_final_heads(&self, grace: Duration) {
        let Some((seq, hash)) = self.audit.head() else { return };
        {
            let inner = self.lock();
            for io in inner.links.values() {
                let _ = io.ctl.try_send(Control::AuditHead { seq, hash: hash.clone() });
            }
        }
        tokio::time::sleep(grace).await;
    }

    /// Executes what the state machine decided, under the lock that
    /// produced it; messages that cannot be queued go back to it.
    fn execute(&self, inner: &mut Inner, actions: Vec<Action>) {
        let mut queue = std::collections::VecDeque::from(actions);
        while let Some(action) = queue.pop_front() {
            match action {
                Action::Send { link, msg } => {
                    let sent = inner.links.get(&link).is_some_and(|io| io.ctl.try_send(msg.clone()).is_ok());
                    if !sent {
                        queue.extend(inner.state.unsent(link, &msg, now()));
                    } else if matches!(msg, Control::Subscribe { .. }) {
                        inner.fit_window(link);
                    }
                }
                Action::Resolve { track, result } => {
                    if let Some(tx) = inner.tracks.get_mut(&track).and_then(|t| t.pending.take()) {
                        let _ = tx.send(result);
                    }
                }
                Action::End { track, failure } => {
                    if let Some(mut io) = inner.tracks.remove(&track) {
                        if let (Some(tx), Some(f)) = (io.pending.take(), failure) {
                            let _ = tx.send(Err(f));
                        }
                        io.ingest.writer.close();
                    }
                }
                Action::Revoke { track, why } => {
                    if let Some(io) = inner.tracks.remove(&track) {
                        io.ingest.writer.revoke(&why);
                    }
                }
                Action::Orphaned { track } => {
                    // A viewer arriving meanwhile must wait for fresh video.
                    if let Some(io) = inner.tracks.get(&track) {
                        io.ingest.writer.clear_cache();
                    }
                }
                Action::Adopted { track } => {
                    // The new subscription numbers its GOPs from 1 again.
                    if let Some(io) = inner.tracks.get(&track) {
                        io.ingest.restart();
                    }
                }
                Action::Promoted { track, link } => {
                    // The copy on the other path goes on where the track is,
                    // its GOPs numbered by its own subscription.
                    if let Some(io) = inner.tracks.get(&track) {
                        io.ingest.promote(link);
                    }
                }
                Action::PtzAnswer { link, id, reply } => {
                    if let Some(tx) = inner.ptz_waiting.remove(&(link, id)) {
                        let _ = tx.send(reply);
                    }
                }
                Action::CatalogChanged => self.catalog_version.send_modify(|v| *v += 1),
                Action::Incident { peer, notice } => {
                    if let Some(sink) = self.incidents.get() {
                        sink(&peer, notice);
                    }
                }
                Action::WakeAt { at } => {
                    if let Some(me) = self.me.upgrade() {
                        tokio::spawn(async move {
                            tokio::time::sleep_until(Instant::from_std(at)).await;
                            let mut inner = me.lock();
                            let actions = inner.state.expire_lost(now());
                            me.execute(&mut inner, actions);
                        });
                    }
                }
            }
        }
    }

    /// Gets a reader for a camera, subscribing upstream if nobody here watches it yet.
    pub async fn subscribe(&self, camera: &str, quality: Quality) -> Result<TrackReader, SubscribeFailure> {
        self.subscribe_as(camera, quality, None).await
    }

    /// [`Self::subscribe`] for `viewer`, whom a new upstream subscription
    /// names to the upstream's audit.
    pub async fn subscribe_as(
        &self,
        camera: &str,
        quality: Quality,
        viewer: Option<&str>,
    ) -> Result<TrackReader, SubscribeFailure> {
        let key = TrackKey::new(camera, quality);
        let (reader, answer) = {
            let mut inner = self.lock();
            if let Some(t) = inner.tracks.get(&key) {
                // An orphan too: its viewers wait for the link to come back.
                return Ok(t.ingest.writer.subscribe());
            }
            let plan = inner.state.plan_subscribe(&key, viewer, now())?;
            let sent =
                inner.links.get(&plan.link).is_some_and(|io| io.ctl.try_send(plan.msg.clone()).is_ok());
            if !sent {
                return Err(SubscribeFailure {
                    code: SubscribeErrorCode::Offline,
                    reason: format!("the link to `{}` is congested or closing; retry in a moment", plan.peer),
                });
            }
            let generation = inner.state.subscribed(&key, &plan);
            inner.fit_window(plan.link);
            let ingest = Arc::new(Ingest::new(hub::track(key.clone())));
            let reader = ingest.writer.subscribe();
            let viewers = ingest.writer.subscribers();
            let (tx, rx) = oneshot::channel();
            inner.tracks.insert(key.clone(), TrackIo { ingest, pending: Some(tx) });
            // A dual-path camera: its copy on the agent's other path.
            let twins = inner.state.twins();
            self.execute(&mut inner, twins);
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
                let mut inner = self.lock();
                let mut actions = Vec::new();
                inner.state.end(&key, None, &mut actions);
                self.execute(&mut inner, actions);
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
        let (plan, answer, notices) = {
            let mut inner = self.lock();
            let plan = match inner.state.plan_ptz(camera, viewer, command, now()) {
                Ok(plan) => plan,
                Err(refusal) => return refusal,
            };
            let sent =
                inner.links.get(&plan.link).is_some_and(|io| io.ctl.try_send(plan.msg.clone()).is_ok());
            if !sent {
                return PtzReply::refused(
                    PtzErrorCode::Unavailable,
                    format!(
                        "camera `{camera}`: the link to `{}` is congested or closing; retry in a moment",
                        plan.peer
                    ),
                );
            }
            let notices = inner.state.ptz_sent(&plan);
            let (tx, rx) = oneshot::channel();
            inner.ptz_waiting.insert((plan.link, plan.id), tx);
            debug!(camera, viewer, op, upstream = %plan.peer, request = plan.id, "PTZ command sent upstream");
            (plan, rx, notices)
        };
        // Forgets the request however the wait ends, also when the viewer's
        // HTTP request is dropped mid-wait: an agent that never answers must
        // not fill the link's table.
        let _pending = PendingPtz { upstreams: self, link: plan.link, id: plan.id };
        let (peer, id) = (&plan.peer, plan.id);
        match tokio::time::timeout(wait, answer).await {
            Ok(Ok(reply)) => {
                self.lock().state.ptz_answered(camera, &reply, notices, now());
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
        self.lock().state.ptz_holder(camera, now())
    }

    /// Looks after one track for its whole life: wakes the state machine's
    /// [`UpstreamState::tend`] when it asks to, or when the viewer count changes.
    /// At each look (at least every [`state::ADOPT_RETRY`]) it also tells
    /// the upstream who watches, by name, if that changed. Not woken by the
    /// names themselves: a viewing is recorded inside the RTSP `PLAY`
    /// handler, and waking another task there cost ffmpeg its first GOP
    /// (measured: 32 frames in 4 s instead of 61, `attacks::rtsp`; most
    /// likely the session's pump, spawned before the reply, then runs on
    /// another worker and sends RTP ahead of the `PLAY` reply).
    async fn keep(self: Arc<Self>, key: TrackKey, generation: u64, mut viewers: watch::Receiver<usize>) {
        let mut idle_since = None;
        loop {
            let (names, more) = self.audit.watching().names(&key);
            let wake = {
                let mut inner = self.lock();
                let watching = *viewers.borrow_and_update();
                let (wake, mut actions) =
                    inner.state.tend(&key, generation, watching, &mut idle_since, now());
                if wake.is_some() {
                    actions.extend(inner.state.viewers(&key, generation, names, more));
                }
                self.execute(&mut inner, actions);
                match wake {
                    Some(at) => Instant::from_std(at),
                    None => return,
                }
            };
            tokio::select! {
                _ = tokio::time::sleep_until(wake) => {}
                changed = viewers.changed() => if changed.is_err() { return },
            }
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
                let _revocation = this.watch_peer(&conn);
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

    /// Registers a link to `peer`, whose control messages go out through `ctl`.
    fn add_link(
        &self,
        peer: &str,
        addr: SocketAddr,
        conn: quinn::Connection,
        ctl: mpsc::Sender<Control>,
    ) -> LinkId {
        let mut inner = self.lock();
        let id = inner.state.link_up(peer);
        let io = LinkIo {
            addr,
            conn,
            bytes: Arc::new(AtomicU64::new(0)),
            ctl,
            window: UniStreamWindow::default(),
        };
        inner.links.insert(id, io);
        id
    }

    async fn run_link(
        self: &Arc<Self>,
        conn: quinn::Connection,
        peer: String,
        addr: SocketAddr,
    ) -> Result<(), SessionError> {
        let hello = Control::Hello {
            version: PROTOCOL_VERSION,
            node: self.site.clone(),
            role: Role::Relay,
            policy: None,
        };
        let (mut tx, mut rx, said) =
            tokio::time::timeout(HELLO_TIMEOUT, session::accept_control(&conn, &hello))
                .await
                .map_err(|_| SessionError::Protocol(format!("no Hello within {HELLO_TIMEOUT:?}")))??;
        // The master room's site speaks as the agent; any other trusted site
        // is a parent relay of a cascade.
        let expected = if ponte_proto::redundancy::is_agent_site(&peer) { Role::Agent } else { Role::Relay };
        let (node, policy) = match &said {
            Control::Hello { node, policy, .. } => (node.clone(), policy.clone()),
            _ => (peer.clone(), None),
        };
        if let Control::Hello { role, .. } = said {
            if role != expected {
                let why = format!(
                    "site `{peer}` said it is {role:?} but may only feed this relay as {expected:?} \
                     (`master` and `master-<name>` are agents, any other upstream a parent relay)"
                );
                self.audit.upstream_refused(&peer, addr, &why);
                conn.close(session::close_code::FORBIDDEN.into(), b"wrong role for this identity");
                return Err(SessionError::Protocol(why));
            }
        }
        let (ctl_tx, mut ctl_rx) = mpsc::channel::<Control>(256);
        let link_id = self.add_link(&peer, addr, conn.clone(), ctl_tx);
        if role_is_agent(&said) {
            self.lock().state.set_policy(link_id, policy);
            self.share_budget();
        }
        let media = tokio::spawn(self.clone().accept_media(conn.clone(), link_id));
        let mut stats = tokio::time::interval(Duration::from_secs(5));
        // The first tick is at once: the upstream anchors this log as the session starts.
        let mut anchor = tokio::time::interval(self.audit.anchor_every());
        // A brand-new log has no head at the first tick: its first line
        // (the upstream's head, anchored) is sent at once instead.
        let mut head_sent = false;
        let result = loop {
            tokio::select! {
                msg = rx.recv() => match msg {
                    // The upstream's audit head, anchored in this relay's chain.
                    Ok(Control::AuditHead { seq, hash }) => {
                        self.audit.anchor(&peer, &node, seq, hash);
                        if !head_sent {
                            head_sent = true;
                            if let Err(e) = self.send_head(&mut tx).await { break Err(e) }
                        }
                    }
                    Ok(msg) => if let Err(e) = self.on_control(link_id, &peer, msg) { break Err(e) },
                    Err(e) => break Err(e),
                },
                _ = anchor.tick() => {
                    head_sent |= self.audit.head().is_some();
                    if let Err(e) = self.send_head(&mut tx).await { break Err(e) }
                }
                Some(out) = ctl_rx.recv() => if let Err(e) = tx.send(&out).await { break Err(e) },
                _ = stats.tick() => {
                    // Again every tick: a share lost to a full queue is not lost for long.
                    if role_is_agent(&said) {
                        let parts = self.lock().state.budget_parts();
                        if let Err(e) = tx.send(&Control::BudgetShare { parts }).await { break Err(e) }
                    }
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

    /// Sends the head of this relay's audit log, if it has one, for the
    /// upstream to anchor.
    async fn send_head(&self, tx: &mut session::ControlSender) -> Result<(), SessionError> {
        match self.audit.head() {
            Some((seq, hash)) => tx.send(&Control::AuditHead { seq, hash }).await,
            None => Ok(()),
        }
    }

    /// Feeds a control message of `link_id` (from site `peer`) to the state machine.
    fn on_control(&self, link_id: LinkId, peer: &str, msg: Control) -> Result<(), SessionError> {
        if self.on_recall_control(link_id, &msg) {
            return Ok(());
        }
        let catalog = matches!(msg, Control::Catalog { .. });
        {
            let mut inner = self.lock();
            debug_assert!(inner.state.links.get(&link_id).is_none_or(|l| l.peer == peer));
            let actions = inner
                .state
                .on_control(link_id, msg, now())
                .map_err(|state::ProtocolViolation(why)| SessionError::Protocol(why))?;
            self.execute(&mut inner, actions);
        }
        if catalog {
            self.update_keepers();
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

    /// A link went down: the state machine tells its waiting subscribers
    /// and PTZ commands, and orphans its tracks.
    fn drop_link(&self, link_id: LinkId) {
        let mut inner = self.lock();
        inner.links.remove(&link_id);
        inner.recall.link_down(link_id);
        let actions = inner.state.link_down(link_id, now());
        self.execute(&mut inner, actions);
        // Anything still waiting on it hears `unavailable` as its sender drops.
        inner.ptz_waiting.retain(|(link, _), _| *link != link_id);
        drop(inner);
        self.share_budget();
    }

    /// Tells every agent feeding this relay how many agents do
    /// (`BudgetShare`): together they stay within the site's link budget.
    fn share_budget(&self) {
        let inner = self.lock();
        let parts = inner.state.budget_parts();
        for id in inner.state.agent_links() {
            if let Some(io) = inner.links.get(&id) {
                if io.ctl.try_send(Control::BudgetShare { parts }).is_err() {
                    warn!(link = id, "could not tell an agent its budget share: its control queue is full");
                }
            }
        }
    }

    async fn accept_media(self: Arc<Self>, conn: quinn::Connection, link_id: LinkId) {
        while let Ok(recv) = conn.accept_uni().await {
            let this = self.clone();
            tokio::spawn(async move {
                let mut recv = recv;
                let read = match session::sniff(&mut recv).await {
                    Ok(Some(session::UniStream::Gop(head))) => {
                        this.read_media(link_id, &head, recv).await.map(drop)
                    }
                    Ok(Some(session::UniStream::Export(head))) => {
                        let accept = |h: &ponte_proto::wire::ExportHeader| {
                            recall::export_awaited(&this, link_id, h.export, h.clip_len)
                        };
                        match session::read_export_stream(&head, recv, accept).await {
                            Ok(export) => {
                                this.export_arrived(link_id, export);
                                Ok(())
                            }
                            Err(e) => Err(e),
                        }
                    }
                    Ok(None) => Ok(()),
                    Err(e) => Err(e),
                };
                if let Err(e) = read {
                    debug!(error = %e, "media stream error");
                }
            });
        }
    }

    async fn read_media(
        &self,
        link_id: LinkId,
        head: &[u8],
        recv: quinn::RecvStream,
    ) -> Result<bool, SessionError> {
        let mut ingest: Option<Arc<Ingest>> = None;
        let mut link_bytes: Option<Arc<AtomicU64>> = None;
        let mut seq = 0;
        let mut quality = 0;
        let mut index = 0u32;
        let mut gop_pts = 0;
        let mut config = None;
        // A dual-path copy on the second path: its GOPs number apart from
        // the feed's, so only the frame check applies to it.
        let mut twin = false;
        session::read_gop_stream_after(head, recv, |ev| match ev {
            MediaEvent::Header(h) => {
                let found = {
                    let inner = self.lock();
                    link_bytes = inner.links.get(&link_id).map(|l| l.bytes.clone());
                    let key = inner.state.fed_track(link_id, h.subscription);
                    twin = key
                        .and_then(|k| inner.state.tracks.get(k))
                        .is_some_and(|t| t.twin == Some((link_id, h.subscription)));
                    key.and_then(|k| inner.tracks.get(k))
                        .map(|t| t.ingest.clone())
                        .or_else(|| inner.recall.fed(link_id, h.subscription))
                };
                let Some(ing) = found else { return false };
                if !twin && ing.latest_gop.fetch_max(h.seq, Ordering::AcqRel) > h.seq {
                    return false; // an older GOP arriving late: useless now
                }
                seq = h.seq;
                quality = h.quality.as_u8();
                index = 0;
                // Applied when this stream's keyframe is taken: a copy whose
                // frames are refused never changes the track's decoder config.
                config = Some(h.config);
                ing.gops.fetch_add(1, Ordering::Relaxed);
                ingest = Some(ing);
                true
            }
            MediaEvent::Frame(f) => {
                let Some(ing) = &ingest else { return false };
                if !twin && ing.latest_gop.load(Ordering::Acquire) != seq {
                    return false; // superseded by a newer GOP
                }
                if index == 0 {
                    gop_pts = f.pts;
                }
                let n = f.payload.len() as u64;
                self.bytes_received.fetch_add(n, Ordering::Relaxed);
                if let Some(b) = &link_bytes {
                    b.fetch_add(n, Ordering::Relaxed);
                }
                let taken = ing.take(gop_pts, quality, index, link_id, twin);
                index += 1;
                if let Some(c) = config.take().filter(|_| taken) {
                    if ing.writer.config().as_deref() != Some(&c) {
                        ing.writer.set_config(Arc::new(c));
                    }
                }
                if taken {
                    ing.bytes.fetch_add(n, Ordering::Relaxed);
                    ing.writer.push(f);
                }
                true
            }
        })
        .await
    }
}

/// One phrase telling on-call staff what a refused handshake most likely means.
fn refusal_hint(e: &quinn::ConnectionError) -> &'static str {
    let text = e.to_string();
    if text.contains("no certificates") {
        "the peer presented no client certificate"
    } else if text.contains("revoked") || text.contains("Revoked") {
        "the peer's certificate is revoked (`tls.crl`)"
    } else if text.contains("certificate") {
        "the peer's certificate was not issued by this deployment's CA, or has expired"
    } else if text.contains("protocol") || text.contains("ALPN") || text.contains("application") {
        "the peer does not speak ponte/1"
    } else {
        "handshake failed"
    }
}

/// Whether a peer's `Hello` says it is an agent.
fn role_is_agent(hello: &Control) -> bool {
    matches!(hello, Control::Hello { role: Role::Agent, .. })
}
