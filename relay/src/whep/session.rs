//! One WHEP session's task: waits for the browser to connect, then pumps the
//! camera's hub reader through the egress gate ([`EgressGate`]) into the peer
//! connection until the viewer leaves, the connection fails or the track ends.

use super::clock::CaptureClock;
use super::peer::{Peer, PeerState};
use super::{WhepSettings, WhepState};
use crate::audit::Viewing;
use ponte_proto::egress::{Arrival, EgressGate, Verdict};
use ponte_proto::hub::{HubItem, TrackReader};
use ponte_proto::media::{Codec, Quality};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{oneshot, OwnedSemaphorePermit};
use tokio::time::{sleep_until, timeout, Instant};
use tracing::{info, warn};

/// How long a session's end waits for its peer connection to close.
const PEER_CLOSE_TIMEOUT: Duration = Duration::from_secs(2);
/// Why a session ended.
#[derive(Debug)]
pub(super) enum End {
    Deleted,
    ConnectTimeout,
    Failed,
    Closed,
    Disconnected,
    TrackEnded,
    Unsupported(Codec),
    WriteFailed(String),
    /// The viewer may no longer watch it (reload, logout), and why.
    Revoked(String),
}

impl std::fmt::Display for End {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            End::Deleted => f.write_str("deleted by the viewer"),
            End::ConnectTimeout => f.write_str("the browser never connected"),
            End::Failed => f.write_str("connection failed"),
            End::Closed => f.write_str("connection closed"),
            End::Disconnected => f.write_str("connection lost"),
            End::TrackEnded => f.write_str("the camera's track ended"),
            End::Unsupported(codec) => write!(f, "the camera switched to {}", codec.name()),
            End::WriteFailed(e) => write!(f, "sending RTP failed: {e}"),
            End::Revoked(why) => write!(f, "access revoked: {why}"),
        }
    }
}

/// A session task: owns the peer connection and the hub reader.
pub(super) struct Session {
    pub(super) id: String,
    /// Audit name of the viewer (`None` on a relay without accounts).
    pub(super) viewer: Option<String>,
    /// The viewer is a `[[token]]` (named `token:<name>` upstream).
    pub(super) token: bool,
    pub(super) quality: Quality,
    pub(super) started: Instant,
    pub(super) camera: String,
    pub(super) peer: Peer,
    pub(super) reader: TrackReader,
    /// The first item, read while answering, and how it arrived.
    pub(super) first: Option<(HubItem, Arrival)>,
    /// A reason, or the sender dropped (DELETE): the session ends.
    pub(super) stop: oneshot::Receiver<End>,
    /// RTP time ↔ capture time, for the page's picture age.
    pub(super) clock: Arc<CaptureClock>,
    pub(super) _permit: OwnedSemaphorePermit,
}

#[derive(Default)]
struct Sent {
    frames: u64,
    bytes: u64,
}

impl Session {
    pub(super) async fn run(mut self, state: Arc<WhepState>) {
        let mut sent = Sent::default();
        let end = match self.wait_connected(&state.settings).await {
            Ok(()) => self.pump(&state.settings, &mut sent).await,
            Err(end) => end,
        };
        let Session {
            id, viewer, token, quality, started, camera, mut peer, reader, _permit: permit, ..
        } = self;
        // Unsubscribe first: the camera may stop crossing the fibre.
        drop(reader);
        let entry = state.lock_sessions().remove(&id);
        // Still listed: the relay ends it (not DELETE, not a sweep, which
        // took it out and remembered why themselves).
        if let Some(entry) = entry {
            state.remember_end(&id, entry.viewer, &end);
        }
        match timeout(PEER_CLOSE_TIMEOUT, peer.close()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                warn!(session = %id, camera = %camera, error = %e, "WHEP: closing the peer connection failed")
            }
            Err(_) => {
                warn!(session = %id, camera = %camera, "WHEP: the peer connection took too long to close")
            }
        }
        // The slot and the media port go together, once the port is closed:
        // a range exactly `whep.max_sessions` wide never refuses a viewer
        // while a slot is free.
        drop(peer);
        drop(permit);
        let Sent { frames, bytes } = sent;
        info!(session = %id, camera = %camera, frames, bytes, "WHEP session ended: {end}");
        state.audit.view_stop(
            Viewing { viewer: viewer.as_deref(), camera: &camera, quality, session: &id, token },
            started.elapsed(),
            &end.to_string(),
        );
    }

    /// Why the session was told to end, if it was.
    fn stopped(&mut self) -> Option<End> {
        match self.stop.try_recv() {
            Ok(end) => Some(end),
            Err(oneshot::error::TryRecvError::Empty) => None,
            Err(oneshot::error::TryRecvError::Closed) => Some(End::Deleted),
        }
    }

    async fn wait_connected(&mut self, settings: &WhepSettings) -> Result<(), End> {
        let deadline = Instant::now() + settings.connect_timeout;
        loop {
            match *self.peer.states.borrow_and_update() {
                PeerState::Connected => return Ok(()),
                PeerState::Failed => return Err(End::Failed),
                PeerState::Closed => return Err(End::Closed),
                _ => {}
            }
            tokio::select! {
                end = &mut self.stop => return Err(end.unwrap_or(End::Deleted)),
                changed = self.peer.states.changed() => {
                    if changed.is_err() {
                        return Err(End::Closed);
                    }
                }
                _ = sleep_until(deadline) => return Err(End::ConnectTimeout),
            }
        }
    }

    async fn pump(&mut self, settings: &WhepSettings, sent: &mut Sent) -> End {
        let mut gate = EgressGate::new(self.peer.codec, rand::random());
        let mut pending = self.first.take();
        let mut disconnected_since: Option<Instant> = None;
        loop {
            if let Some(end) = self.stopped() {
                return end;
            }
            match *self.peer.states.borrow_and_update() {
                PeerState::Failed => return End::Failed,
                PeerState::Closed => return End::Closed,
                PeerState::Disconnected => {
                    let since = *disconnected_since.get_or_insert_with(Instant::now);
                    if since.elapsed() >= settings.disconnect_grace {
                        return End::Disconnected;
                    }
                }
                _ => disconnected_since = None,
            }
            let (item, arrival) = if let Some(first) = pending.take() {
                first
            } else if let Some(item) = self.reader.try_next() {
                (item, Arrival::Queued)
            } else {
                let grace_end = disconnected_since.map(|s| s + settings.disconnect_grace);
                tokio::select! {
                    end = &mut self.stop => return end.unwrap_or(End::Deleted),
                    changed = self.peer.states.changed() => {
                        if changed.is_err() {
                            return End::Closed;
                        }
                        continue;
                    }
                    _ = sleep_until_opt(grace_end) => continue,
                    item = self.reader.next() => match item {
                        Some(item) => (item, Arrival::Live),
                        None => return self.reader.revoked().map_or(End::TrackEnded, |why| End::Revoked(why.to_string())),
                    },
                }
            };
            let (payload, timestamp) = match gate.accept(&item, arrival) {
                Verdict::Skip => continue,
                Verdict::CodecChanged(codec) => return End::Unsupported(codec),
                Verdict::Send { payload, timestamp } => (payload, timestamp),
            };
            if let Err(e) = self.peer.send(&payload, timestamp).await {
                return End::WriteFailed(e);
            }
            if arrival == Arrival::Live {
                self.clock.observe(item.config.codec, item.frame.keyframe, &payload, timestamp);
            }
            sent.frames += 1;
            sent.bytes += payload.len() as u64;
        }
    }
}

async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}
