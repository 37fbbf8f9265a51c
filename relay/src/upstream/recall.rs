//! Recall through the upstream link that carries a camera (issue 21):
//! playback subscriptions, the recorded ranges, and evidence exports.
//!
//! Kept beside the live table ([`super::state`]), not in it: a playback is
//! private to the viewer who asked (never shared with other viewers, never
//! adopted by another link when its link goes down: the viewer asks again),
//! and ranges and exports are one question and one answer. Playback
//! subscriptions take ids from [`PLAYBACK_IDS`] up, so they never collide
//! with the live table's ids on the same link.

use super::{now, Ingest, LinkId, Upstreams};
use crate::upstream::SubscribeFailure;
use ponte_proto::hub::{self, TrackKey, TrackReader};
use ponte_proto::media::Quality;
use ponte_proto::session::ExportStream;
use ponte_proto::wire::{wire_viewer, Control, Playback, SubscribeErrorCode};
use serde::Serialize;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::oneshot;
use tracing::{debug, info, warn};

/// First subscription id of playbacks on a link.
pub const PLAYBACK_IDS: u64 = 1 << 48;
/// How long the agent may take to say what is recorded.
const RANGES_TIMEOUT: Duration = Duration::from_secs(10);
/// How long an export may take, request to last byte: the agent paces a
/// clip to a quarter of the site's budget (10 minutes at 8 Mbit/s over a
/// 20 Mbit/s budget take 16 minutes).
const EXPORT_TIMEOUT: Duration = Duration::from_secs(3600);
/// How long a playback waits for the agent's answer.
const PLAYBACK_TIMEOUT: Duration = Duration::from_secs(5);

/// What is recorded of a camera, as the agent lets this site know it.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Recorded {
    /// Recorded ranges, `[from_ms, to_ms]`, oldest first.
    pub ranges: Vec<[u64; 2]>,
    /// The earliest time this site may reach, Unix ms (`max_lookback_hours`).
    pub earliest_ms: Option<u64>,
    /// Whether this site may take exports.
    pub export: bool,
}

/// A finished export: the signed manifest and the MP4, as the agent sent them.
pub struct ExportFile {
    /// Signed manifest, JSON.
    pub manifest: Vec<u8>,
    /// The clip.
    pub clip: Vec<u8>,
}

/// Why a recall request failed: the agent's refusal (its reason names the
/// missing right) or the link.
#[derive(Debug, Clone)]
pub struct RecallFailure {
    /// The agent refused (policy, nothing recorded), as opposed to the link failing.
    pub refused: bool,
    /// What to tell the operator.
    pub reason: String,
}

impl RecallFailure {
    fn link(reason: String) -> Self {
        Self { refused: false, reason }
    }
}

impl From<SubscribeFailure> for RecallFailure {
    /// No link carries the camera (offline), or this site may not have it.
    fn from(f: SubscribeFailure) -> Self {
        Self { refused: f.code != SubscribeErrorCode::Offline, reason: f.reason }
    }
}

struct PlaybackIo {
    ingest: Arc<Ingest>,
    pending: Option<oneshot::Sender<Result<(), SubscribeFailure>>>,
}

struct ExportWait {
    done: oneshot::Sender<Result<ExportFile, RecallFailure>>,
    /// Bytes of the clip announced by `ExportResult`.
    announced: Option<u64>,
}

/// Removes an export's waiter when dropped.
struct ForgetExport<'a> {
    upstreams: &'a Upstreams,
    key: (LinkId, u64),
}

impl Drop for ForgetExport<'_> {
    fn drop(&mut self) {
        self.upstreams.lock().recall.exports.remove(&self.key);
    }
}

/// Whether an export stream of `clip_len` bytes is awaited on `link` as
/// `id`: the relay reads only the exports it asked for, at the size the
/// agent announced.
pub(super) fn export_awaited(upstreams: &Upstreams, link: LinkId, id: u64, clip_len: u64) -> bool {
    upstreams
        .lock()
        .recall
        .exports
        .get(&(link, id))
        .is_some_and(|w| w.announced.is_none_or(|n| n == clip_len))
}

/// The recall requests under way, by (link, id).
#[derive(Default)]
pub(super) struct RecallIo {
    next_id: u64,
    playbacks: HashMap<(LinkId, u64), PlaybackIo>,
    ranges: HashMap<(LinkId, u64), oneshot::Sender<Result<Recorded, RecallFailure>>>,
    exports: HashMap<(LinkId, u64), ExportWait>,
}

impl RecallIo {
    fn next(&mut self) -> u64 {
        self.next_id += 1;
        PLAYBACK_IDS + self.next_id
    }

    /// Playbacks open on `link` (they need GOP stream credit too).
    pub(super) fn playbacks_on(&self, link: LinkId) -> usize {
        self.playbacks.keys().filter(|(l, _)| *l == link).count()
    }

    /// The link went down: its playbacks end, its questions fail.
    pub(super) fn link_down(&mut self, link: LinkId) {
        self.playbacks.retain(|(l, _), io| {
            if *l == link {
                io.ingest.writer.close();
            }
            *l != link
        });
        self.ranges.retain(|(l, _), _| *l != link);
        self.exports.retain(|(l, _), _| *l != link);
    }

    /// The track a playback's GOP stream feeds.
    pub(super) fn fed(&self, link: LinkId, id: u64) -> Option<Arc<Ingest>> {
        self.playbacks.get(&(link, id)).map(|p| p.ingest.clone())
    }
}

impl Upstreams {
    /// The link carrying `camera` at `quality`, checked against its catalog.
    fn recall_link(&self, camera: &str, quality: Quality) -> Result<(LinkId, String), SubscribeFailure> {
        let inner = self.lock();
        let plan = inner.state.plan_subscribe(&TrackKey::new(camera, quality), None, now())?;
        Ok((plan.link, plan.peer))
    }

    /// Sends `msg` on `link`, or says the link is busy.
    fn send_on(&self, link: LinkId, peer: &str, msg: Control) -> Result<(), String> {
        let inner = self.lock();
        if inner.links.get(&link).is_some_and(|io| io.ctl.try_send(msg).is_ok()) {
            Ok(())
        } else {
            Err(format!("the link to `{peer}` is congested or closing; retry in a moment"))
        }
    }

    /// Plays `camera` back from `p.from_ms` for `viewer`: a private track,
    /// fed by its own upstream subscription until nobody reads it.
    pub async fn playback(
        &self,
        camera: &str,
        quality: Quality,
        p: Playback,
        viewer: Option<&str>,
    ) -> Result<TrackReader, SubscribeFailure> {
        let (link, peer) = self.recall_link(camera, quality)?;
        let key = TrackKey::new(camera, quality);
        let (reader, answer, id, ingest) = {
            let mut inner = self.lock();
            let id = inner.recall.next();
            let msg = Control::Subscribe {
                id,
                camera: camera.to_owned(),
                quality,
                viewer: viewer.map(wire_viewer),
                playback: Some(p),
            };
            if inner.links.get(&link).is_none_or(|io| io.ctl.try_send(msg).is_err()) {
                return Err(SubscribeFailure {
                    code: SubscribeErrorCode::Offline,
                    reason: format!("the link to `{peer}` is congested or closing; retry in a moment"),
                });
            }
            let ingest = Arc::new(Ingest::new(hub::track(key)));
            let reader = ingest.writer.subscribe();
            let (tx, rx) = oneshot::channel();
            inner
                .recall
                .playbacks
                .insert((link, id), PlaybackIo { ingest: ingest.clone(), pending: Some(tx) });
            inner.fit_window(link);
            (reader, rx, id, ingest)
        };
        info!(camera, quality = quality.name(), upstream = %peer, subscription = id, from_ms = p.from_ms, "playback asked upstream");
        // Unsubscribes once nobody reads the track any more.
        if let Some(me) = self.me.upgrade() {
            let mut readers = ingest.writer.subscribers();
            tokio::spawn(async move {
                let _ = readers.wait_for(|n| *n == 0).await;
                let gone = me.lock().recall.playbacks.remove(&(link, id)).is_some();
                if gone {
                    let _ = me.send_on(link, "upstream", Control::Unsubscribe { id });
                    debug!(subscription = id, "playback: nobody reads it any more; unsubscribed");
                }
            });
        }
        match tokio::time::timeout(PLAYBACK_TIMEOUT, answer).await {
            Ok(Ok(Ok(()))) => Ok(reader),
            Ok(Ok(Err(f))) => Err(f),
            Ok(Err(_)) => Err(SubscribeFailure {
                code: SubscribeErrorCode::Offline,
                reason: format!("the upstream link carrying camera `{camera}` went down"),
            }),
            Err(_) => Err(SubscribeFailure {
                code: SubscribeErrorCode::Offline,
                reason: format!(
                    "`{peer}` did not answer the playback of camera `{camera}` within {PLAYBACK_TIMEOUT:?}"
                ),
            }),
        }
    }

    /// What is recorded of `camera`, as far as this site may know.
    pub async fn recorded(&self, camera: &str, quality: Quality) -> Result<Recorded, RecallFailure> {
        let (link, peer) = self.recall_link(camera, quality).map_err(RecallFailure::from)?;
        let (tx, rx) = oneshot::channel();
        let id = {
            let mut inner = self.lock();
            let id = inner.recall.next();
            inner.recall.ranges.insert((link, id), tx);
            id
        };
        let msg = Control::Recordings { id, camera: camera.to_owned(), quality };
        if let Err(why) = self.send_on(link, &peer, msg) {
            self.lock().recall.ranges.remove(&(link, id));
            return Err(RecallFailure::link(why));
        }
        let out = tokio::time::timeout(RANGES_TIMEOUT, rx).await;
        self.lock().recall.ranges.remove(&(link, id));
        match out {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err(RecallFailure::link(format!("the link to `{peer}` went down"))),
            Err(_) => Err(RecallFailure::link(format!("`{peer}` did not answer within {RANGES_TIMEOUT:?}"))),
        }
    }

    /// Asks the agent for an evidence export and waits for the clip.
    pub async fn export(
        &self,
        camera: &str,
        quality: Quality,
        (from_ms, to_ms): (u64, u64),
        viewer: &str,
    ) -> Result<ExportFile, RecallFailure> {
        let (link, peer) = self.recall_link(camera, quality).map_err(RecallFailure::from)?;
        let (tx, rx) = oneshot::channel();
        let id = {
            let mut inner = self.lock();
            let id = inner.recall.next();
            inner.recall.exports.insert((link, id), ExportWait { done: tx, announced: None });
            inner.fit_window(link);
            id
        };
        let msg = Control::Export {
            id,
            camera: camera.to_owned(),
            quality,
            from_ms,
            to_ms,
            viewer: wire_viewer(viewer),
        };
        if let Err(why) = self.send_on(link, &peer, msg) {
            self.lock().recall.exports.remove(&(link, id));
            return Err(RecallFailure::link(why));
        }
        // Forgets the waiter however the wait ends (the HTTP request too
        // may be dropped mid-wait).
        let _forget = ForgetExport { upstreams: self, key: (link, id) };
        let out = tokio::time::timeout(EXPORT_TIMEOUT, rx).await;
        match out {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => {
                Err(RecallFailure::link(format!("the link to `{peer}` went down during the export")))
            }
            Err(_) => Err(RecallFailure::link(format!(
                "`{peer}` did not deliver the export within {EXPORT_TIMEOUT:?}"
            ))),
        }
    }

    /// A control message about recall; false when it is not one (the live
    /// table takes it).
    pub(super) fn on_recall_control(&self, link: LinkId, msg: &Control) -> bool {
        let mut inner = self.lock();
        match msg {
            Control::SubscribeOk { id, .. } if *id >= PLAYBACK_IDS => {
                if let Some(tx) = inner.recall.playbacks.get_mut(&(link, *id)).and_then(|p| p.pending.take())
                {
                    let _ = tx.send(Ok(()));
                }
            }
            Control::SubscribeError { id, code, reason } if *id >= PLAYBACK_IDS => {
                if let Some(mut p) = inner.recall.playbacks.remove(&(link, *id)) {
                    let failure = SubscribeFailure { code: *code, reason: reason.clone() };
                    match p.pending.take() {
                        Some(tx) => {
                            let _ = tx.send(Err(failure));
                        }
                        None if *code == SubscribeErrorCode::Forbidden => p.ingest.writer.revoke(reason),
                        None => {
                            info!(subscription = id, %reason, "playback ended upstream");
                            p.ingest.writer.close();
                        }
                    }
                }
            }
            Control::Paused { id, reason } if *id >= PLAYBACK_IDS => {
                debug!(subscription = id, %reason, "playback paused upstream");
            }
            Control::Resumed { id } if *id >= PLAYBACK_IDS => {}
            Control::RecordingsInfo { id, ranges, earliest_ms, export, refused } => {
                if let Some(tx) = inner.recall.ranges.remove(&(link, *id)) {
                    let _ = tx.send(match refused {
                        Some(reason) => Err(RecallFailure { refused: true, reason: reason.clone() }),
                        None => Ok(Recorded {
                            ranges: ranges.clone(),
                            earliest_ms: *earliest_ms,
                            export: *export,
                        }),
                    });
                }
            }
            Control::ExportResult { id, refused, bytes } => match refused {
                Some(reason) => {
                    if let Some(w) = inner.recall.exports.remove(&(link, *id)) {
                        let _ = w.done.send(Err(RecallFailure { refused: true, reason: reason.clone() }));
                    }
                }
                None => {
                    if let Some(w) = inner.recall.exports.get_mut(&(link, *id)) {
                        w.announced = Some(*bytes);
                    }
                }
            },
            _ => return false,
        }
        true
    }

    /// An export stream arrived on `link`: hands it to whoever waits.
    pub(super) fn export_arrived(&self, link: LinkId, stream: ExportStream) {
        let id = stream.header.export;
        let Some(w) = self.lock().recall.exports.remove(&(link, id)) else {
            warn!(export = id, "an export nobody waits for arrived: dropped");
            return;
        };
        if w.announced.is_some_and(|n| n != stream.clip.len() as u64) {
            let _ = w.done.send(Err(RecallFailure::link(format!(
                "the export arrived with {} bytes where {} were announced",
                stream.clip.len(),
                w.announced.unwrap_or_default()
            ))));
            return;
        }
        let _ = w.done.send(Ok(ExportFile { manifest: stream.manifest, clip: stream.clip }));
    }
}
