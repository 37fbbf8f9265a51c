//! One subscription's media pump: reads the camera's streams, asks the
//! site's shaper at each GOP boundary which rung to send, and sends GOPs.

use super::boards::{SessionCounters, SubStats};
use super::shell::{mbps, mbps_or_unlimited};
use crate::sources::cameras::Cameras;
use ponte_proto::hub::{HubItem, TrackReader};
use ponte_proto::media::Quality;
use ponte_proto::session::{GopSender, SendCounters, SessionError};
use ponte_proto::shaping::{Ladder, RateMeter, Rung, RungChange, Shaper, StreamRates};
use ponte_proto::wire::{Control, SubscribeErrorCode};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tracing::{debug, info};

/// What the relay is told when a subscription pauses.
const PAUSED_REASON: &str = "link budget";

/// The shaper of one site session, shared by its pumps.
pub(super) struct SiteShaping {
    pub(super) shaper: Mutex<Shaper>,
}

impl SiteShaping {
    pub(super) fn lock(&self) -> MutexGuard<'_, Shaper> {
        self.shaper.lock().unwrap_or_else(|e| e.into_inner())
    }
}
/// Index of a quality's reader and meter in a pump.
pub(super) fn slot(q: Quality) -> usize {
    match q {
        Quality::Main => 0,
        Quality::Sub => 1,
    }
}

const QUALITIES: [Quality; 2] = [Quality::Main, Quality::Sub];

/// Next item of an optional reader; never resolves without one.
async fn next_item(reader: &mut Option<TrackReader>) -> Option<HubItem> {
    match reader {
        Some(r) => r.next().await,
        None => std::future::pending().await,
    }
}

/// Sends one subscription's media, rung by rung.
pub(super) struct Pump {
    pub(super) site: String,
    pub(super) id: u64,
    pub(super) camera: String,
    pub(super) ladder: Ladder,
    pub(super) cameras: Arc<Cameras>,
    pub(super) shaping: Arc<SiteShaping>,
    pub(super) stats: Arc<SubStats>,
    pub(super) counters: Arc<SessionCounters>,
    pub(super) reply_tx: mpsc::Sender<Control>,
    pub(super) gops: GopSender,
    /// Main and substream readers (index: [`slot`]).
    pub(super) readers: [Option<TrackReader>; 2],
    pub(super) meters: [RateMeter; 2],
    /// Per stream: (pts, instant) the meter's media clock started at.
    pub(super) clocks: [Option<(u64, Instant)>; 2],
    /// The rung the shaper chose at the last GOP boundary.
    pub(super) target: Option<Rung>,
    /// The stream whose GOPs go out now, and the rung they go out at; it
    /// lags `target` until the target stream's next keyframe.
    pub(super) sending: Option<(Quality, Rung)>,
    /// The relay was told this subscription is paused.
    pub(super) paused: bool,
    pub(super) last: SendCounters,
}

impl Pump {
    fn top(&self) -> Quality {
        self.ladder.quality(self.ladder.top).unwrap_or(Quality::Main)
    }

    pub(super) async fn run(mut self) {
        loop {
            let [main, sub] = &mut self.readers;
            let (quality, item) = tokio::select! {
                item = next_item(main) => (Quality::Main, item),
                item = next_item(sub) => (Quality::Sub, item),
            };
            let Some(item) = item else {
                if quality != self.top() {
                    // The substream went away: carry on with main alone.
                    self.readers[slot(quality)] = None;
                    if self.sending.is_some_and(|(q, _)| q == quality) {
                        self.sending = None;
                        self.gops.end_gop();
                    }
                    continue;
                }
                if !self.cameras.lists(&self.camera, self.top()) {
                    // Removed from the config: the session's recheck, woken
                    // by the catalog change, revokes it and audits why.
                    return;
                }
                let reason = format!("camera `{}` stopped delivering video", self.camera);
                let _ = self
                    .reply_tx
                    .send(Control::SubscribeError { id: self.id, code: SubscribeErrorCode::Offline, reason })
                    .await;
                return;
            };
            if self.handle(quality, item).await.is_err() {
                return;
            }
        }
    }

    async fn handle(&mut self, quality: Quality, item: HubItem) -> Result<(), SessionError> {
        let now = Instant::now();
        let keyframe = item.frame.keyframe;
        let at = self.media_time(quality, item.frame.pts, now);
        self.meters[slot(quality)].record(at, item.frame.payload.len() as u64, keyframe);
        if keyframe && self.decides_on(quality) {
            self.decide(now).await;
        }
        let Some(target) = self.target else { return Ok(()) };
        if target == Rung::Paused {
            if self.sending.take().is_some() {
                self.gops.end_gop();
            }
            return Ok(());
        }
        // Switch (stream or rung) only at a keyframe of the target stream:
        // the receiver's decoder starts clean on it.
        if keyframe && self.ladder.quality(target) == Some(quality) {
            self.sending = Some((quality, target));
        }
        let Some((sending, rung)) = self.sending else { return Ok(()) };
        if sending != quality || (rung == Rung::KeyframesOnly && !keyframe) {
            return Ok(());
        }
        self.gops.send(&item, quality).await?;
        self.shaping.lock().on_sent(item.frame.payload.len() as u64, now);
        self.account();
        Ok(())
    }

    /// GOP boundaries that count: those of the stream being sent, else of
    /// the stream awaited, else (paused) of the cheapest stream read.
    fn decides_on(&self, quality: Quality) -> bool {
        let on = match (self.target, self.sending) {
            (None, _) => return true,
            (_, Some((q, _))) => q,
            (Some(t), None) => self.ladder.quality(t).unwrap_or_else(|| {
                if self.readers[slot(Quality::Sub)].is_some() {
                    Quality::Sub
                } else {
                    self.top()
                }
            }),
        };
        on == quality
    }

    async fn decide(&mut self, now: Instant) {
        let shaped = self.shaping.lock().effective_bps().is_some();
        self.ensure_readers(shaped);
        let rates = self.rates(now);
        let (rung, change, priority) = {
            let mut shaper = self.shaping.lock();
            shaper.observe(self.id, rates);
            let (rung, change) = shaper.decide(self.id, now);
            (rung, change, shaper.priority(self.id))
        };
        // Under congestion QUIC serves higher classes first; equals share.
        if let Some(p) = priority {
            self.gops.set_class(p as i32);
        }
        if let Some(change) = change {
            self.log_change(&change, shaped);
        }
        if rung == Rung::Paused && !self.paused {
            self.paused = true;
            let msg = Control::Paused { id: self.id, reason: PAUSED_REASON.into() };
            let _ = self.reply_tx.send(msg).await;
        } else if rung != Rung::Paused && self.paused {
            self.paused = false;
            let _ = self.reply_tx.send(Control::Resumed { id: self.id }).await;
        }
        self.target = Some(rung);
    }

    fn log_change(&self, c: &RungChange, shaped: bool) {
        let from = c.from.map_or("-", Rung::name);
        let budget_mbps = mbps_or_unlimited(c.budget_bps);
        let planned_mbps = mbps(c.planned_bps);
        if shaped {
            info!(
                site = %self.site,
                camera = %self.camera,
                subscription = self.id,
                from,
                to = c.to.name(),
                reason = c.reason.name(),
                %budget_mbps,
                planned_mbps,
                "shaping: rung changed"
            );
        } else {
            debug!(site = %self.site, camera = %self.camera, subscription = self.id, from, to = c.to.name(), "shaping: unlimited link");
        }
    }

    /// While the site is shaped, reads every stream of the ladder; else only
    /// the one it sends.
    fn ensure_readers(&mut self, shaped: bool) {
        let top = self.top();
        let awaited = self.target.and_then(|t| self.ladder.quality(t));
        for q in QUALITIES {
            let on_ladder = self.ladder.has(Rung::of_quality(q));
            let needed = on_ladder
                && (shaped || q == top || self.sending.is_some_and(|(s, _)| s == q) || awaited == Some(q));
            let i = slot(q);
            if needed && self.readers[i].is_none() {
                let Some(mut reader) = self.cameras.subscribe(&self.camera, q) else { continue };
                if self.target.is_some() {
                    // The cached GOP is older than what was sent already:
                    // wait for this stream's next live keyframe instead.
                    while reader.try_next().is_some() {}
                }
                self.readers[i] = Some(reader);
                self.meters[i] = RateMeter::default();
                self.clocks[i] = None;
            } else if !needed && self.readers[i].is_some() {
                self.readers[i] = None;
            }
        }
    }

    /// A frame's time on its stream's media clock (pts), so a cached GOP
    /// delivered at once on subscribing is measured at its real pace.
    fn media_time(&mut self, quality: Quality, pts: u64, now: Instant) -> Instant {
        let i = slot(quality);
        if let Some((pts0, t0)) = self.clocks[i] {
            if let Some(d) = pts.checked_sub(pts0) {
                let at =
                    t0 + Duration::from_micros(d * 1_000_000 / u64::from(ponte_proto::media::CLOCK_RATE));
                // A jump (camera reconnect, pts reset) restarts the clock.
                if at <= now + Duration::from_secs(5) {
                    return at;
                }
            }
            self.meters[i] = RateMeter::default();
        }
        self.clocks[i] = Some((pts, now));
        now
    }

    fn rates(&mut self, now: Instant) -> StreamRates {
        let kf = self.ladder.quality(Rung::KeyframesOnly).map_or(0, slot);
        let mut rate = |i: usize, keyframes: bool| {
            let m = &mut self.meters[i];
            let at = m.latest().unwrap_or(now);
            if keyframes {
                m.keyframes_bps(at)
            } else {
                m.bps(at)
            }
        };
        StreamRates {
            main_bps: if self.ladder.has(Rung::Main) { rate(0, false) } else { None },
            sub_bps: if self.ladder.has(Rung::Sub) { rate(1, false) } else { None },
            keyframes_bps: rate(kf, true),
        }
    }

    fn account(&mut self) {
        let now = self.gops.counters();
        let last = self.last;
        self.counters.bytes_sent.fetch_add(now.bytes - last.bytes, Ordering::Relaxed);
        self.counters.gops_dropped.fetch_add(now.gops_reset - last.gops_reset, Ordering::Relaxed);
        self.stats.bytes.store(now.bytes, Ordering::Relaxed);
        self.stats.gops.store(now.gops, Ordering::Relaxed);
        self.stats.gops_reset.store(now.gops_reset, Ordering::Relaxed);
        self.last = now;
    }
}
