//! Cascade: this relay feeds further relays (`[[downstream]]`), so fan-out
//! grows as a tree without touching the master room.
//!
//! Each downstream is dialled exactly as the agent dials relays: the same
//! QUIC session and mutual TLS, the downstream's certificate must name the
//! expected site, `Hello{role: Relay}`, then this relay's own catalog (what
//! its upstream granted its site; re-sent whenever it changes). The
//! downstream's `Subscribe` is served through this relay's own
//! [`Upstreams::subscribe`]: on demand and shared with local viewers, so each
//! stream crosses each link once however many viewers sit below. A camera
//! outside this relay's catalog is `unknown`: a cascade never widens what
//! its site was granted.
//!
//! Every downstream subscription is audited here as a viewing by
//! `cascade:<site>` (start, refusal, end with its duration), so the parent's
//! log says which relay below took which camera and for how long.
//!
//! PTZ control does not cross a cascade: the agent grants PTZ to this site,
//! not to the sites below, so the catalog sent down says `ptz = false` and a
//! downstream's `Ptz` is answered `unsupported`.

use crate::audit::{RelayAudit, Viewing};
use crate::upstream::Upstreams;
use ponte_proto::hub::TrackReader;
use ponte_proto::media::Quality;
use ponte_proto::ptz::{PtzErrorCode, PtzReply};
use ponte_proto::session::{self, ControlSender, GopSender, PriorityClock, SessionError};
use ponte_proto::status::LinkStatus;
use ponte_proto::wire::{CatalogEntry, Control, Role, StatsReport, SubscribeErrorCode, PROTOCOL_VERSION};
use rand::Rng;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

/// First wait before redialling a downstream.
pub const BACKOFF_MIN: Duration = Duration::from_millis(500);
/// Longest wait between redials.
pub const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// `[[downstream]]`: a relay this one feeds.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DownstreamConfig {
    /// Site id; the downstream's certificate must name it.
    pub site: String,
    /// UDP address of the downstream's QUIC listener.
    pub addr: SocketAddr,
    /// TLS server name to verify (defaults to the site id).
    #[serde(default)]
    pub server_name: Option<String>,
}

/// What one downstream link did, for status and the byte counters the
/// cascade test reads.
#[derive(Debug, Default)]
struct LinkCounters {
    /// Media payload bytes sent since the relay started.
    bytes_sent: AtomicU64,
    /// GOP streams reset because a newer one superseded them.
    gops_reset: AtomicU64,
    /// Active subscriptions.
    subscriptions: AtomicU64,
}

#[derive(Debug)]
struct LinkState {
    up: bool,
    since: Instant,
    last_error: Option<String>,
    conn: Option<quinn::Connection>,
}

/// One downstream link.
struct Link {
    target: DownstreamConfig,
    state: Mutex<LinkState>,
    counters: LinkCounters,
}

impl Link {
    fn set(&self, f: impl FnOnce(&mut LinkState)) {
        f(&mut self.state.lock().unwrap_or_else(|e| e.into_inner()));
    }
}

/// One row of the downstream table in `/api/status`.
#[derive(Debug, Clone, Serialize)]
pub struct DownstreamInfo {
    /// Downstream site id.
    pub site: String,
    /// Its QUIC address.
    pub addr: SocketAddr,
    /// `up` or `connecting`.
    pub state: &'static str,
    /// Seconds in that state.
    pub state_secs: u64,
    /// Last error while connecting, if any.
    pub last_error: Option<String>,
    /// Active subscriptions.
    pub subscriptions: u64,
    /// Media payload bytes sent to it since this relay started.
    pub bytes_sent: u64,
    /// GOP streams reset (superseded by newer ones).
    pub gops_reset: u64,
}

/// The downstream links of this relay.
pub struct Cascade {
    links: Vec<Arc<Link>>,
}

impl Cascade {
    /// Dials every target for ever, serving each session from `upstreams`.
    pub fn spawn(
        targets: Vec<DownstreamConfig>,
        endpoint: quinn::Endpoint,
        client: quinn::ClientConfig,
        upstreams: Arc<Upstreams>,
    ) -> Arc<Self> {
        let links: Vec<Arc<Link>> = targets
            .into_iter()
            .map(|target| {
                Arc::new(Link {
                    target,
                    state: Mutex::new(LinkState {
                        up: false,
                        since: Instant::now(),
                        last_error: None,
                        conn: None,
                    }),
                    counters: LinkCounters::default(),
                })
            })
            .collect();
        for link in &links {
            tokio::spawn(dial(link.clone(), endpoint.clone(), client.clone(), upstreams.clone()));
        }
        Arc::new(Self { links })
    }

    /// No downstreams.
    pub fn none() -> Arc<Self> {
        Arc::new(Self { links: Vec::new() })
    }

    /// The downstream table.
    pub fn status(&self) -> Vec<DownstreamInfo> {
        self.links
            .iter()
            .map(|l| {
                let st = l.state.lock().unwrap_or_else(|e| e.into_inner());
                DownstreamInfo {
                    site: l.target.site.clone(),
                    addr: l.target.addr,
                    state: if st.up { "up" } else { "connecting" },
                    state_secs: st.since.elapsed().as_secs(),
                    last_error: st.last_error.clone(),
                    subscriptions: l.counters.subscriptions.load(Ordering::Relaxed),
                    bytes_sent: l.counters.bytes_sent.load(Ordering::Relaxed),
                    gops_reset: l.counters.gops_reset.load(Ordering::Relaxed),
                }
            })
            .collect()
    }

    /// The downstream links in the status document's shape.
    pub fn link_status(&self) -> Vec<LinkStatus> {
        self.links
            .iter()
            .map(|l| {
                let st = l.state.lock().unwrap_or_else(|e| e.into_inner());
                let conn = st.conn.as_ref().filter(|_| st.up);
                LinkStatus {
                    peer: l.target.site.clone(),
                    direction: "to-downstream".into(),
                    state: if st.up { "up".into() } else { "connecting".into() },
                    addr: l.target.addr.to_string(),
                    rtt_ms: conn.map(|c| c.rtt().as_secs_f64() * 1000.0),
                    lost_packets: conn.map_or(0, |c| c.stats().path.lost_packets),
                    bytes_sent: l.counters.bytes_sent.load(Ordering::Relaxed),
                    subscriptions: l.counters.subscriptions.load(Ordering::Relaxed) as u32,
                    drops: l.counters.gops_reset.load(Ordering::Relaxed),
                    last_error: st.last_error.clone(),
                    ..Default::default()
                }
            })
            .collect()
    }
}

/// Dials one downstream for ever with capped, jittered exponential backoff.
async fn dial(
    link: Arc<Link>,
    endpoint: quinn::Endpoint,
    client: quinn::ClientConfig,
    upstreams: Arc<Upstreams>,
) {
    let target = link.target.clone();
    let server_name = target.server_name.clone().unwrap_or_else(|| target.site.clone());
    let mut backoff = BACKOFF_MIN;
    loop {
        let result: Result<(), String> =
            match endpoint.connect_with(client.clone(), target.addr, &server_name) {
                Ok(connecting) => match connecting.await {
                    Ok(conn) => {
                        let peer = ponte_proto::tls::peer_site(&conn);
                        if peer.as_deref() != Some(target.site.as_str()) {
                            conn.close(session::close_code::FORBIDDEN.into(), b"unexpected site identity");
                            Err(format!(
                                "downstream relay at {} presented {}, expected site `{}`: \
                             check `[[downstream]]` site and addr",
                                target.addr,
                                ponte_proto::tls::describe_identity(peer.as_deref()),
                                target.site
                            ))
                        } else {
                            info!(site = %target.site, addr = %target.addr, "downstream link up");
                            link.set(|s| {
                                *s = LinkState {
                                    up: true,
                                    since: Instant::now(),
                                    last_error: None,
                                    conn: Some(conn.clone()),
                                }
                            });
                            backoff = BACKOFF_MIN;
                            let _revocation = upstreams.watch_peer(&conn);
                            let r = run_session(&link, conn.clone(), upstreams.clone()).await;
                            if let Err(SessionError::Wire(_) | SessionError::Protocol(_)) = &r {
                                conn.close(session::close_code::PROTOCOL.into(), b"protocol violation");
                            }
                            Err(match r {
                                Ok(()) => "session ended".to_owned(),
                                Err(e) => e.to_string(),
                            })
                        }
                    }
                    Err(e) => Err(format!("QUIC handshake with {} failed: {e}", target.addr)),
                },
                Err(e) => Err(format!("cannot dial {}: {e}", target.addr)),
            };
        if let Err(e) = result {
            let was_up = link.state.lock().map(|s| s.up).unwrap_or(false);
            if was_up {
                warn!(site = %target.site, error = %e, "downstream link down");
            } else {
                warn!(site = %target.site, error = %e, retry_in_ms = backoff.as_millis() as u64, "cannot reach downstream relay");
            }
            link.set(|s| {
                *s = LinkState { up: false, since: Instant::now(), last_error: Some(e), conn: None }
            });
        }
        let jitter = rand::rng().random_range(0.8..1.2);
        tokio::time::sleep(backoff.mul_f64(jitter)).await;
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

/// A downstream's subscription being served.
struct Subscription {
    camera: String,
    task: JoinHandle<()>,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        // Dropping the task drops its hub reader: the upstream may linger out.
        self.task.abort();
    }
}

async fn run_session(
    link: &Arc<Link>,
    conn: quinn::Connection,
    upstreams: Arc<Upstreams>,
) -> Result<(), SessionError> {
    let site = link.target.site.as_str();
    let hello = Control::Hello {
        version: PROTOCOL_VERSION,
        node: upstreams.site().to_owned(),
        role: Role::Relay,
        policy: None,
    };
    let (mut tx, mut rx, said) = session::open_control(&conn, &hello).await?;
    let node = match said {
        Control::Hello { node, .. } => node,
        _ => site.to_owned(),
    };
    let mut catalog_rx = upstreams.catalog_changes();
    catalog_rx.borrow_and_update();
    let mut sent: Vec<CatalogEntry> = downstream_catalog(&upstreams);
    tx.send(&Control::Catalog { cameras: sent.clone() }).await?;
    info!(site, cameras = sent.len(), "catalog sent downstream");
    // Replies from subscription tasks funnel here so only this task writes
    // the control stream.
    let (reply_tx, mut reply_rx) = mpsc::channel::<Control>(64);
    let priorities = Arc::new(PriorityClock::default());
    let mut subs: HashMap<u64, Subscription> = HashMap::new();
    let mut stats = tokio::time::interval(Duration::from_secs(5));
    // Each relay anchors the other's audit log, as agent and relay do.
    let mut anchor = tokio::time::interval(upstreams.audit().anchor_every());
    let result = loop {
        tokio::select! {
            msg = rx.recv() => {
                let msg = match msg { Ok(m) => m, Err(e) => break Err(e) };
                match msg {
                    Control::Subscribe { id, camera, quality, .. } => {
                        subs.remove(&id);
                        // Never widen: only what this relay itself may see.
                        let entry = upstreams
                            .catalog()
                            .into_iter()
                            .find(|c| c.id == camera && c.qualities.contains(&quality));
                        let Some(entry) = entry else {
                            let reason = format!(
                                "camera `{camera}` ({}) is not in the catalog of site `{}`",
                                quality.name(),
                                upstreams.site()
                            );
                            info!(site, camera = %camera, "downstream subscription refused: not in our catalog");
                            upstreams.audit().refused(Some(&cascade_viewer(site)), &camera, quality, "unknown", &reason);
                            if let Err(e) = tx.send(&Control::SubscribeError { id, code: SubscribeErrorCode::Unknown, reason }).await {
                                break Err(e);
                            }
                            continue;
                        };
                        info!(site, camera = %camera, quality = quality.name(), subscription = id, "downstream subscribe");
                        let task = tokio::spawn(serve(
                            ServeSpec {
                                id,
                                entry,
                                quality,
                                conn: conn.clone(),
                                priorities: priorities.clone(),
                                replies: reply_tx.clone(),
                                link: link.clone(),
                            },
                            upstreams.clone(),
                        ));
                        subs.insert(id, Subscription { camera, task });
                    }
                    Control::Unsubscribe { id } => {
                        if let Some(sub) = subs.remove(&id) {
                            info!(site, camera = %sub.camera, subscription = id, "downstream unsubscribe");
                        }
                    }
                    Control::Stats(_) => {}
                    Control::AuditHead { seq, hash } => upstreams.audit().anchor(site, &node, seq, hash),
                    // Its viewers are named in its own audit; here the
                    // downstream relay is the viewer (`cascade:<site>`).
                    Control::Viewers { id, viewers, .. } => {
                        debug!(site, subscription = id, viewers = viewers.len(), "downstream viewers");
                    }
                    Control::Ptz { id, camera, viewer, command } => {
                        info!(site, camera = %camera, viewer = %viewer, command = command.name(), "downstream PTZ command refused: PTZ does not cross a cascade");
                        let reply = PtzReply::refused(
                            PtzErrorCode::Unsupported,
                            format!(
                                "camera `{camera}`: PTZ control does not cross relays; site `{site}` is fed by \
                                 relay `{}`, which may not pass its commands on; ask the master room to grant \
                                 `{site}` a direct link with `ptz = true`",
                                upstreams.site()
                            ),
                        );
                        if let Err(e) = tx.send(&Control::PtzResult { id, reply }).await {
                            break Err(e);
                        }
                    }
                    other => {
                        break Err(SessionError::Protocol(format!(
                            "downstream relay sent `{}`, which only a sender may send",
                            session::kind(&other)
                        )))
                    }
                }
            }
            Some(reply) = reply_rx.recv() => {
                if let Control::SubscribeError { id, .. } = &reply {
                    subs.remove(id);
                }
                if let Err(e) = tx.send(&reply).await { break Err(e); }
            }
            changed = catalog_rx.changed() => {
                if changed.is_err() { break Ok(()); }
                catalog_rx.borrow_and_update();
                let now = downstream_catalog(&upstreams);
                if now != sent {
                    sent = now;
                    info!(site, cameras = sent.len(), "catalog changed: re-sent downstream");
                    if let Err(e) = revoke_gone(&mut tx, &mut subs, &sent).await { break Err(e); }
                    if let Err(e) = tx.send(&Control::Catalog { cameras: sent.clone() }).await { break Err(e); }
                }
            }
            _ = anchor.tick() => if let Some((seq, hash)) = upstreams.audit().head() {
                if let Err(e) = tx.send(&Control::AuditHead { seq, hash }).await { break Err(e); }
            },
            _ = stats.tick() => {
                let report = StatsReport {
                    subscriptions: subs.len() as u32,
                    bytes_sent: link.counters.bytes_sent.load(Ordering::Relaxed),
                    gops_dropped: link.counters.gops_reset.load(Ordering::Relaxed),
                    ..Default::default()
                };
                if let Err(e) = tx.send(&Control::Stats(report)).await { break Err(e); }
            }
            e = conn.closed() => break Err(e.into()),
        }
        subs.retain(|_, s| !s.task.is_finished());
        link.counters.subscriptions.store(subs.len() as u64, Ordering::Relaxed);
    };
    subs.clear();
    link.counters.subscriptions.store(0, Ordering::Relaxed);
    result
}

/// This relay's catalog as sent down: the same cameras, without the PTZ
/// right (it belongs to this site, not to the sites below).
fn downstream_catalog(upstreams: &Upstreams) -> Vec<CatalogEntry> {
    let mut catalog = upstreams.catalog();
    for c in &mut catalog {
        c.ptz = false;
    }
    catalog
}

/// Ends the subscriptions of cameras that left this relay's catalog.
async fn revoke_gone(
    tx: &mut ControlSender,
    subs: &mut HashMap<u64, Subscription>,
    catalog: &[CatalogEntry],
) -> Result<(), SessionError> {
    let gone: Vec<u64> =
        subs.iter().filter(|(_, s)| !catalog.iter().any(|c| c.id == s.camera)).map(|(id, _)| *id).collect();
    for id in gone {
        if let Some(sub) = subs.remove(&id) {
            let reason = format!("camera `{}` left the catalog upstream", sub.camera);
            tx.send(&Control::SubscribeError { id, code: SubscribeErrorCode::Unknown, reason }).await?;
        }
    }
    Ok(())
}

struct ServeSpec {
    id: u64,
    entry: CatalogEntry,
    quality: Quality,
    conn: quinn::Connection,
    priorities: Arc<PriorityClock>,
    replies: mpsc::Sender<Control>,
    link: Arc<Link>,
}

/// Serves one downstream subscription from this relay's own track.
async fn serve(spec: ServeSpec, upstreams: Arc<Upstreams>) {
    let ServeSpec { id, entry, quality, conn, priorities, replies, link } = spec;
    let camera = entry.id.clone();
    let viewer = cascade_viewer(&link.target.site);
    let audit = upstreams.audit();
    let reader: TrackReader = match upstreams.subscribe_as(&camera, quality, Some(&viewer)).await {
        Ok(r) => r,
        Err(f) => {
            info!(site = %link.target.site, camera = %camera, code = f.code.name(), "downstream subscription refused upstream");
            audit.refused(Some(&viewer), &camera, quality, f.code.name(), &f.reason);
            let _ = replies.send(Control::SubscribeError { id, code: f.code, reason: f.reason }).await;
            return;
        }
    };
    if replies.send(Control::SubscribeOk { id, codec: entry.codec }).await.is_err() {
        return;
    }
    let session = format!("cascade-{}-{id}", link.target.site);
    let viewing =
        Viewing { viewer: Some(&viewer), camera: &camera, quality, session: &session, token: false };
    audit.view_start(viewing, "cascade");
    // Written however the subscription ends, also when its task is
    // aborted (an unsubscribe, or the link going down).
    let _stop = ViewStop {
        audit,
        viewer: &viewer,
        camera: &camera,
        quality,
        session: &session,
        started: Instant::now(),
    };
    pump(id, &camera, quality, reader, GopSender::new(conn, id, priorities), &link, &replies).await;
}

/// How the audit names a downstream relay's subscriptions.
fn cascade_viewer(site: &str) -> String {
    format!("cascade:{site}")
}

/// Writes the `view-stop` of a downstream subscription when dropped.
struct ViewStop<'a> {
    audit: &'a RelayAudit,
    viewer: &'a str,
    camera: &'a str,
    quality: Quality,
    session: &'a str,
    started: Instant,
}

impl Drop for ViewStop<'_> {
    fn drop(&mut self) {
        let v = Viewing {
            viewer: Some(self.viewer),
            camera: self.camera,
            quality: self.quality,
            session: self.session,
            token: false,
        };
        self.audit.view_stop(v, self.started.elapsed(), "the downstream relay's subscription ended");
    }
}

async fn pump(
    id: u64,
    camera: &str,
    quality: Quality,
    mut reader: TrackReader,
    mut gops: GopSender,
    link: &Link,
    replies: &mpsc::Sender<Control>,
) {
    let mut last = gops.counters();
    loop {
        let Some(item) = reader.next().await else {
            // A revocation upstream is passed on as one, so the child relay
            // ends its viewers' streams as revoked too.
            let (code, reason) = match reader.revoked() {
                Some(why) => (SubscribeErrorCode::Forbidden, format!("access revoked: {why}")),
                None => (
                    SubscribeErrorCode::Offline,
                    format!("camera `{camera}` stopped delivering video upstream"),
                ),
            };
            let _ = replies.send(Control::SubscribeError { id, code, reason }).await;
            return;
        };
        if gops.send(&item, quality).await.is_err() {
            return;
        }
        let now = gops.counters();
        link.counters.bytes_sent.fetch_add(now.bytes - last.bytes, Ordering::Relaxed);
        link.counters.gops_reset.fetch_add(now.gops_reset - last.gops_reset, Ordering::Relaxed);
        last = now;
    }
}
