//! A subscriber played by the bench: a QUIC endpoint with a site certificate
//! that the agent (as if it were a relay) or a relay (as a cascade
//! downstream) dials. It subscribes to tracks and meters what arrives:
//! payload bytes, the time each subscription's first frame arrived, and
//! per-frame (capture time, arrival time) samples from the capture-time SEI.
//! It does not decode video.

use crate::scan::{FrameScanner, ScannedFrame};
use anyhow::{bail, Context, Result};
use bytes::Bytes;
use ponte_proto::h264;
use ponte_proto::media::Quality;
use ponte_proto::session::{self, ControlSender, UniStreamWindow};
use ponte_proto::tls::{self, Identity, TransportOptions};
use ponte_proto::wire::{CatalogEntry, Control, Role, PROTOCOL_VERSION};
use ponte_tests::Pki;
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

/// One frame's capture time (from its SEI) and arrival, Unix microseconds.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    /// Track index (see [`subscription_id`]).
    pub track: u32,
    /// Capture time.
    pub capture: u64,
    /// Arrival of the frame's last byte.
    pub recv: u64,
    /// Presentation time (90 kHz) the sending agent stamped.
    pub pts: u64,
    /// Whether it is a keyframe.
    pub keyframe: bool,
}

/// What arrived at one subscriber.
#[derive(Default)]
pub struct Meter {
    /// Frame payload bytes.
    pub bytes: AtomicU64,
    /// Frames.
    pub frames: AtomicU64,
    sampling: AtomicBool,
    samples: Mutex<Vec<Sample>>,
    first: Mutex<HashMap<u64, Instant>>,
    answered: Mutex<HashMap<u64, Instant>>,
}

impl Meter {
    /// Starts (or stops) recording latency samples.
    pub fn sample(&self, on: bool) {
        self.sampling.store(on, Ordering::Relaxed);
    }

    /// Takes the samples recorded so far.
    pub fn take_samples(&self) -> Vec<Sample> {
        std::mem::take(&mut *lock(&self.samples))
    }

    /// When `SubscribeOk` for subscription `id` arrived, if it has.
    pub fn answered(&self, id: u64) -> Option<Instant> {
        lock(&self.answered).get(&id).copied()
    }

    /// When the first frame of subscription `id` arrived, if it has.
    pub fn first_frame(&self, id: u64) -> Option<Instant> {
        lock(&self.first).get(&id).copied()
    }

    /// A frame completed.
    fn on_frame(&self, f: ScannedFrame<'_>, first_of_stream: bool) {
        let recv = h264::unix_micros_now();
        self.bytes.fetch_add(f.len as u64, Ordering::Relaxed);
        self.frames.fetch_add(1, Ordering::Relaxed);
        if first_of_stream {
            lock(&self.first).entry(f.subscription).or_insert_with(Instant::now);
        }
        if self.sampling.load(Ordering::Relaxed) {
            // ponte's SEI comes right after the parameter sets, if any.
            if let Some(capture) = h264::nal_units(f.prefix).take(4).find_map(h264::parse_capture_time_sei) {
                let track = track_of(f.subscription);
                lock(&self.samples).push(Sample { track, capture, recv, pts: f.pts, keyframe: f.keyframe });
            }
        }
    }
}

/// Subscription id the bench uses for a track index and quality.
pub fn subscription_id(track: u32, quality: Quality) -> u64 {
    u64::from(track) * 2 + u64::from(quality.as_u8()) + 1
}

fn track_of(subscription: u64) -> u32 {
    (subscription.saturating_sub(1) / 2) as u32
}

/// A listening endpoint with `site`'s certificate.
pub struct Listener {
    endpoint: quinn::Endpoint,
    site: String,
}

impl Listener {
    /// Listens on 127.0.0.1 with ponte's transport settings.
    pub fn listen(pki: &Pki, site: &str) -> Result<Self> {
        let id = Identity::load(&pki.ca_cert(), &pki.cert(site), &pki.key(site))?;
        let server = tls::server_config(&id, &TransportOptions::default())?;
        let endpoint = ponte_proto::endpoint::bind(
            SocketAddr::from(([127, 0, 0, 1], 0)),
            Some(server),
            ponte_proto::endpoint::DEFAULT_MAX_UDP_PAYLOAD,
        )
        .with_context(|| format!("listening as `{site}`"))?;
        Ok(Self { endpoint, site: site.to_owned() })
    }

    /// The site it answers as.
    pub fn site(&self) -> &str {
        &self.site
    }

    /// The UDP address to dial.
    pub fn addr(&self) -> Result<SocketAddr> {
        Ok(self.endpoint.local_addr()?)
    }

    /// Accepts the sender's session (agent or upstream relay) and exchanges `Hello`.
    pub async fn accept(&self, timeout: Duration) -> Result<Subscriber> {
        let site = &self.site;
        let incoming = tokio::time::timeout(timeout, self.endpoint.accept())
            .await
            .with_context(|| format!("nobody dialled `{site}` within {timeout:?}"))?
            .context("endpoint closed")?;
        let conn = incoming.await.with_context(|| format!("handshake with `{site}`"))?;
        let hello =
            Control::Hello { version: PROTOCOL_VERSION, node: site.clone(), role: Role::Relay, policy: None };
        let (tx, mut rx, _) = tokio::time::timeout(timeout, session::accept_control(&conn, &hello))
            .await
            .context("no Hello")??;
        let meter = Arc::new(Meter::default());
        let (catalog_tx, catalog) = watch::channel(Vec::new());
        let (answer_tx, answers) = mpsc::unbounded_channel();
        let control_meter = meter.clone();
        let control = tokio::spawn(async move {
            while let Ok(msg) = rx.recv().await {
                match msg {
                    Control::Catalog { cameras } => {
                        let _ = catalog_tx.send(cameras);
                    }
                    Control::SubscribeOk { id, .. } => {
                        lock(&control_meter.answered).entry(id).or_insert_with(Instant::now);
                        let _ = answer_tx.send((id, Ok(())));
                    }
                    Control::SubscribeError { id, code, reason } => {
                        let _ = answer_tx.send((id, Err(format!("{}: {reason}", code.name()))));
                    }
                    _ => {}
                }
            }
        });
        let media = {
            let (conn, meter) = (conn.clone(), meter.clone());
            tokio::spawn(async move {
                while let Ok(recv) = conn.accept_uni().await {
                    let meter = meter.clone();
                    tokio::spawn(read_media(recv, meter));
                }
            })
        };
        Ok(Subscriber {
            site: site.clone(),
            conn,
            tx,
            answers,
            catalog,
            meter,
            tasks: vec![control, media],
            live: 0,
            window: UniStreamWindow::default(),
        })
    }
}

/// Chunks taken from a stream at once.
const READ_BATCH: usize = 32;

/// Meters one GOP stream until it ends (or is reset as superseded).
async fn read_media(mut recv: quinn::RecvStream, meter: Arc<Meter>) {
    let mut scan = FrameScanner::default();
    let mut first = true;
    // Everything received so far in one call: one lock of the connection
    // and one wake-up per batch of packets, not per packet.
    let mut chunks: [Bytes; READ_BATCH] = std::array::from_fn(|_| Bytes::new());
    while let Ok(Some(n)) = recv.read_chunks(&mut chunks).await {
        for chunk in &mut chunks[..n] {
            let pushed = scan.push(chunk, |f| {
                meter.on_frame(f, first);
                first = false;
            });
            *chunk = Bytes::new();
            if pushed.is_err() {
                let _ = recv.stop(0u32.into());
                return;
            }
        }
    }
}

/// An accepted session: subscribes and meters.
pub struct Subscriber {
    site: String,
    conn: quinn::Connection,
    tx: ControlSender,
    answers: mpsc::UnboundedReceiver<(u64, Result<(), String>)>,
    catalog: watch::Receiver<Vec<CatalogEntry>>,
    /// What arrived.
    pub meter: Arc<Meter>,
    tasks: Vec<JoinHandle<()>>,
    /// Subscriptions sent and not ended, and the GOP stream credit they got.
    live: usize,
    window: UniStreamWindow,
}

impl Subscriber {
    /// The site this subscriber is.
    pub fn site(&self) -> &str {
        &self.site
    }

    /// Waits until the catalog lists at least `n` cameras; returns it.
    pub async fn wait_catalog(&mut self, n: usize, timeout: Duration) -> Result<Vec<CatalogEntry>> {
        let site = self.site.clone();
        let got = tokio::time::timeout(timeout, self.catalog.wait_for(|c| c.len() >= n))
            .await
            .map(|r| r.map(|c| c.clone()));
        match got {
            Ok(Ok(c)) => Ok(c),
            Ok(Err(_)) => bail!("`{site}`: the session ended before the catalog listed {n} cameras"),
            Err(_) => bail!(
                "`{site}`: the catalog lists {} cameras after {timeout:?}, expected {n}",
                self.catalog.borrow().len()
            ),
        }
    }

    /// Subscribes to `(track index, camera, quality)` all at once and waits
    /// for every answer; any refusal is an error.
    pub async fn subscribe_many(
        &mut self,
        wanted: &[(u32, String, Quality)],
        timeout: Duration,
    ) -> Result<()> {
        let mut waiting = HashSet::new();
        self.grant(wanted.len());
        for (track, camera, quality) in wanted {
            let id = subscription_id(*track, *quality);
            self.tx
                .send(&Control::Subscribe {
                    id,
                    camera: camera.clone(),
                    quality: *quality,
                    viewer: None,
                    playback: None,
                })
                .await?;
            waiting.insert(id);
        }
        self.wait_answers(waiting, timeout).await
    }

    /// Sends one `Subscribe` without waiting; returns when it was sent.
    pub async fn subscribe_nowait(&mut self, track: u32, camera: &str, quality: Quality) -> Result<Instant> {
        let id = subscription_id(track, quality);
        self.grant(1);
        let at = Instant::now();
        self.tx
            .send(&Control::Subscribe {
                id,
                camera: camera.to_owned(),
                quality,
                viewer: None,
                playback: None,
            })
            .await?;
        Ok(at)
    }

    /// Counts `more` subscriptions and grants their GOP streams, as a relay does.
    fn grant(&mut self, more: usize) {
        self.live = self.live.saturating_add(more);
        self.window.fit_connection(&self.conn, self.live);
    }

    async fn wait_answers(&mut self, mut waiting: HashSet<u64>, timeout: Duration) -> Result<()> {
        let deadline = tokio::time::Instant::now() + timeout;
        while !waiting.is_empty() {
            let answer = tokio::time::timeout_at(deadline, self.answers.recv())
                .await
                .with_context(|| format!("`{}`: {} subscriptions unanswered", self.site, waiting.len()))?
                .context("control stream closed")?;
            let (id, result) = answer;
            if waiting.remove(&id) {
                result.map_err(|e| anyhow::anyhow!("`{}`: subscription {id} refused: {e}", self.site))?;
            }
        }
        Ok(())
    }

    /// Ends subscriptions.
    pub async fn unsubscribe(&mut self, ids: impl IntoIterator<Item = u64>) -> Result<()> {
        for id in ids {
            self.live = self.live.saturating_sub(1);
            self.tx.send(&Control::Unsubscribe { id }).await?;
        }
        Ok(())
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
        self.conn.close(0u32.into(), b"bench done");
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subscription_ids_map_back_to_tracks() {
        for track in [0, 1, 7, 4000] {
            for q in [Quality::Main, Quality::Sub] {
                let id = subscription_id(track, q);
                assert!(id > 0);
                assert_eq!(track_of(id), track);
            }
        }
        assert_ne!(subscription_id(3, Quality::Main), subscription_id(3, Quality::Sub));
    }
}
