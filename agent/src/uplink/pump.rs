//! One subscription's media pump: reads the camera's streams, asks the
//! site's shaper at each GOP boundary which rung to send, and sends GOPs.

use super::boards::{SessionCounters, SubStats};
use super::{mbps, mbps_or_unlimited};
use crate::sources::cameras::Cameras;
use ponte_proto::hub::{HubItem, TrackReader};
use ponte_proto::media::Quality;
use ponte_proto::session::{GopSender, SendCounters, SessionError};
use ponte_proto::shaping::{Ladder, RateMeter, Rung, RungChange, Shaper, StreamRates};
use ponte_proto::wire::{Control, SubscribeErrorCode};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tracing::{debug, info};

/// What the relay is told when a subscription pauses.
const PAUSED_REASON: &str = "link budget";

/// The shaper of one site session, shared by its pumps.
pub(super) struct SiteShaping {
    pub(super) shaper: Mutex<Shaper>,
    /// Bumped each time the path is found narrower than the budget the
    /// pumps decided under: each pump then decides at once, not at its
    /// next GOP boundary, and cuts a GOP the decision steps down.
    pub(super) narrowed: AtomicU64,
}

impl SiteShaping {
    pub(super) fn new(shaper: Shaper) -> Self {
        Self { shaper: Mutex::new(shaper), narrowed: AtomicU64::new(0) }
    }

    pub(super) fn lock(&self) -> MutexGuard<'_, Shaper> {
        self.shaper.lock().unwrap_or_else(|e| e.into_inner())
    }
}
/// One value per stream of a camera: a pump's readers, meters, clocks.
#[derive(Debug, Default)]
pub(super) struct PerStream<T> {
    pub(super) main: T,
    pub(super) sub: T,
}

impl<T> PerStream<T> {
    pub(super) fn of(&self, q: Quality) -> &T {
        match q {
            Quality::Main => &self.main,
            Quality::Sub => &self.sub,
        }
    }

    pub(super) fn of_mut(&mut self, q: Quality) -> &mut T {
        match q {
            Quality::Main => &mut self.main,
            Quality::Sub => &mut self.sub,
        }
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
    /// Main and substream readers.
    pub(super) readers: PerStream<Option<TrackReader>>,
    pub(super) meters: PerStream<RateMeter>,
    /// Per stream: (pts, instant) the meter's media clock started at.
    pub(super) clocks: PerStream<Option<(u64, Instant)>>,
    /// Which frames go out.
    pub(super) gate: Gate,
    pub(super) last: SendCounters,
    /// The [`SiteShaping::narrowed`] count this pump last decided under.
    pub(super) narrowed_seen: u64,
    /// A playback of the recording (its end is the interval's, not the camera's).
    pub(super) playback: bool,
}

impl Pump {
    fn top(&self) -> Quality {
        self.ladder.quality(self.ladder.top).unwrap_or(Quality::Main)
    }

    pub(super) async fn run(mut self) {
        loop {
            let PerStream { main, sub } = &mut self.readers;
            let (quality, item) = tokio::select! {
                item = next_item(main) => (Quality::Main, item),
                item = next_item(sub) => (Quality::Sub, item),
            };
            let Some(item) = item else {
                if quality != self.top() {
                    // The substream went away: carry on with main alone.
                    *self.readers.of_mut(quality) = None;
                    if self.gate.stream_ended(quality) {
                        self.gops.end_gop();
                    }
                    continue;
                }
                if self.playback {
                    let reason = format!(
                        "playback of camera `{}` reached the end of the interval asked for",
                        self.camera
                    );
                    let code = SubscribeErrorCode::NotRecorded;
                    let _ = self.reply_tx.send(Control::SubscribeError { id: self.id, code, reason }).await;
                    return;
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
        self.meters.of_mut(quality).record(at, item.frame.payload.len() as u64, keyframe);
        let narrowed = self.shaping.narrowed.load(Ordering::Relaxed);
        if narrowed != self.narrowed_seen && self.gate.target.is_some() {
            // The path narrowed: decide now. Waiting for the GOP boundary
            // would queue the rest of a GOP the path cannot carry, and the
            // frames of lower classes behind it, seconds late.
            self.narrowed_seen = narrowed;
            self.decide(now).await;
            if self.gate.step_down_now() {
                self.gops.abandon();
                debug!(site = %self.site, camera = %self.camera, subscription = self.id, "shaping: GOP cut: the path narrowed");
            }
        }
        if keyframe && self.gate.decides_on(quality, self.readers.sub.is_some()) {
            self.decide(now).await;
        }
        match self.gate.on_frame(quality, keyframe) {
            Verdict::Skip => return Ok(()),
            Verdict::EndGop => {
                self.gops.end_gop();
                return Ok(());
            }
            Verdict::Send => {}
        }
        self.gops.send(&item, quality).await?;
        self.shaping.lock().on_sent(item.frame.payload.len() as u64, now);
        self.account();
        Ok(())
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
        if let Some(notice) = self.gate.set_target(rung) {
            let _ = self.reply_tx.send(notice).await;
        }
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
        let awaited = self.gate.target.and_then(|t| self.ladder.quality(t));
        for q in QUALITIES {
            let on_ladder = self.ladder.has(Rung::of_quality(q));
            let needed = on_ladder
                && (shaped
                    || q == top
                    || self.gate.sending.is_some_and(|(s, _)| s == q)
                    || awaited == Some(q));
            if needed && self.readers.of(q).is_none() {
                let Some(mut reader) = self.cameras.subscribe(&self.camera, q) else { continue };
                if self.gate.target.is_some() {
                    // The cached GOP is older than what was sent already:
                    // wait for this stream's next live keyframe instead.
                    while reader.try_next().is_some() {}
                }
                *self.readers.of_mut(q) = Some(reader);
                *self.meters.of_mut(q) = RateMeter::default();
                *self.clocks.of_mut(q) = None;
            } else if !needed && self.readers.of(q).is_some() {
                *self.readers.of_mut(q) = None;
            }
        }
    }

    /// A frame's time on its stream's media clock (pts), so a cached GOP
    /// delivered at once on subscribing is measured at its real pace.
    fn media_time(&mut self, quality: Quality, pts: u64, now: Instant) -> Instant {
        if let Some((pts0, t0)) = *self.clocks.of(quality) {
            if let Some(d) = pts.checked_sub(pts0) {
                let at =
                    t0 + Duration::from_micros(d * 1_000_000 / u64::from(ponte_proto::media::CLOCK_RATE));
                // A jump (camera reconnect, pts reset) restarts the clock.
                if at <= now + Duration::from_secs(5) {
                    return at;
                }
            }
            *self.meters.of_mut(quality) = RateMeter::default();
        }
        *self.clocks.of_mut(quality) = Some((pts, now));
        now
    }

    fn rates(&mut self, now: Instant) -> StreamRates {
        let kf = self.ladder.quality(Rung::KeyframesOnly).unwrap_or(Quality::Main);
        let mut rate = |q: Quality, keyframes: bool| {
            let m = self.meters.of_mut(q);
            let at = m.latest().unwrap_or(now);
            if keyframes {
                m.keyframes_bps(at)
            } else {
                m.bps(at)
            }
        };
        StreamRates {
            main_bps: if self.ladder.has(Rung::Main) { rate(Quality::Main, false) } else { None },
            sub_bps: if self.ladder.has(Rung::Sub) { rate(Quality::Sub, false) } else { None },
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

/// Which of a subscription's frames go out: the pump's sans-IO part. The
/// shaper picks a rung at GOP boundaries ([`Gate::set_target`]); a switch of
/// stream or rung waits for a keyframe of the target stream, so the relay's
/// decoder starts clean on it.
#[derive(Debug)]
pub(super) struct Gate {
    id: u64,
    ladder: Ladder,
    /// The rung the shaper chose at the last GOP boundary.
    target: Option<Rung>,
    /// The stream whose GOPs go out now, and the rung they go out at; it
    /// lags `target` until the target stream's next keyframe.
    sending: Option<(Quality, Rung)>,
    /// The relay was told this subscription is paused.
    paused: bool,
}

/// What to do with one frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Verdict {
    /// Send it.
    Send,
    /// Not this one.
    Skip,
    /// Not this one, and the GOP being sent ends here (paused).
    EndGop,
}

impl Gate {
    /// Subscription `id` on `ladder`, before the shaper's first decision.
    pub(super) fn new(id: u64, ladder: Ladder) -> Self {
        Self { id, ladder, target: None, sending: None, paused: false }
    }

    /// GOP boundaries that count: those of the stream being sent, else of
    /// the stream awaited, else (paused) of the cheapest stream read
    /// (`sub_read`: the substream is being read).
    pub(super) fn decides_on(&self, quality: Quality, sub_read: bool) -> bool {
        let on = match (self.target, self.sending) {
            (None, _) => return true,
            (_, Some((q, _))) => q,
            (Some(t), None) => self.ladder.quality(t).unwrap_or_else(|| {
                if sub_read {
                    Quality::Sub
                } else {
                    self.ladder.quality(self.ladder.top).unwrap_or(Quality::Main)
                }
            }),
        };
        on == quality
    }

    /// The shaper's choice at a GOP boundary; returns the notice the relay
    /// gets when the subscription pauses or resumes.
    pub(super) fn set_target(&mut self, rung: Rung) -> Option<Control> {
        let notice = if rung == Rung::Paused && !self.paused {
            self.paused = true;
            Some(Control::Paused { id: self.id, reason: PAUSED_REASON.into() })
        } else if rung != Rung::Paused && self.paused {
            self.paused = false;
            Some(Control::Resumed { id: self.id })
        } else {
            None
        };
        self.target = Some(rung);
        notice
    }

    /// A frame of `quality` arrived (after any decision it triggered).
    pub(super) fn on_frame(&mut self, quality: Quality, keyframe: bool) -> Verdict {
        let Some(target) = self.target else { return Verdict::Skip };
        if target == Rung::Paused {
            return if self.sending.take().is_some() { Verdict::EndGop } else { Verdict::Skip };
        }
        // Switch (stream or rung) only at a keyframe of the target stream:
        // the receiver's decoder starts clean on it.
        if keyframe && self.ladder.quality(target) == Some(quality) {
            self.sending = Some((quality, target));
        }
        let Some((sending, rung)) = self.sending else { return Verdict::Skip };
        if sending != quality || (rung == Rung::KeyframesOnly && !keyframe) {
            return Verdict::Skip;
        }
        Verdict::Send
    }

    /// Applies a step down at once, mid-GOP: true if the GOP going out is
    /// above the target (the caller gives it up); the target stream starts
    /// at its next keyframe.
    pub(super) fn step_down_now(&mut self) -> bool {
        match (self.target, self.sending) {
            (Some(target), Some((_, rung))) if target < rung => {
                self.sending = None;
                true
            }
            _ => false,
        }
    }

    /// A stream below the top ended; true if its GOP was going out (the
    /// caller ends it).
    pub(super) fn stream_ended(&mut self, quality: Quality) -> bool {
        if self.sending.is_some_and(|(q, _)| q == quality) {
            self.sending = None;
            return true;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Quality::{Main, Sub};
    use Verdict::{EndGop, Send, Skip};

    const LADDER: Ladder = Ladder { top: Rung::Main, has_sub: true };

    /// Feeds one GOP of `quality` (a keyframe and `n - 1` frames), deciding
    /// `rung` at its keyframe as the pump does, and returns the verdicts.
    fn gop(g: &mut Gate, quality: Quality, n: usize, rung: Option<Rung>) -> Vec<Verdict> {
        (0..n)
            .map(|i| {
                if i == 0 && g.decides_on(quality, true) {
                    if let Some(r) = rung {
                        g.set_target(r);
                    }
                }
                g.on_frame(quality, i == 0)
            })
            .collect()
    }

    #[test]
    fn nothing_goes_out_before_the_first_decision_and_main_flows_whole() {
        let mut g = Gate::new(1, LADDER);
        assert_eq!(g.on_frame(Main, true), Skip);
        assert_eq!(gop(&mut g, Main, 3, Some(Rung::Main)), [Send, Send, Send]);
    }

    #[test]
    fn over_budget_the_main_stream_is_dropped_at_the_substreams_next_keyframe() {
        let mut g = Gate::new(1, LADDER);
        assert_eq!(gop(&mut g, Main, 3, Some(Rung::Main)), [Send, Send, Send]);
        // The shaper steps down at main's next GOP boundary; main keeps
        // going (no gap) until the substream's next keyframe, then stops.
        assert_eq!(gop(&mut g, Main, 2, Some(Rung::Sub)), [Send, Send]);
        assert_eq!(g.on_frame(Sub, false), Skip, "no switch in the middle of a GOP");
        assert_eq!(gop(&mut g, Sub, 3, None), [Send, Send, Send]);
        assert_eq!(gop(&mut g, Main, 2, None), [Skip, Skip]);
        assert!(g.decides_on(Sub, true) && !g.decides_on(Main, true), "the stream sent decides");
    }

    #[test]
    fn keyframes_only_drops_every_other_frame_and_paused_drops_whole_gops() {
        let mut g = Gate::new(7, LADDER);
        assert_eq!(gop(&mut g, Main, 2, Some(Rung::Main)), [Send, Send]);
        assert_eq!(gop(&mut g, Main, 1, None), [Send]);
        g.set_target(Rung::KeyframesOnly);
        assert_eq!(gop(&mut g, Sub, 4, None), [Send, Skip, Skip, Skip]);
        // Paused: the relay is told once, the GOP under way ends, and
        // nothing goes out until it resumes.
        assert_eq!(g.set_target(Rung::Paused), Some(Control::Paused { id: 7, reason: PAUSED_REASON.into() }));
        assert_eq!(g.set_target(Rung::Paused), None, "told once");
        assert_eq!(g.on_frame(Sub, false), EndGop);
        assert_eq!(gop(&mut g, Sub, 3, None), [Skip, Skip, Skip]);
        assert!(g.decides_on(Sub, true), "paused, the cheapest stream read decides");
        assert!(!g.decides_on(Sub, false));
        assert_eq!(g.set_target(Rung::Sub), Some(Control::Resumed { id: 7 }));
        assert_eq!(gop(&mut g, Sub, 2, None), [Send, Send]);
    }

    #[test]
    fn a_step_down_at_once_cuts_the_gop_and_waits_for_the_targets_keyframe() {
        let mut g = Gate::new(1, LADDER);
        assert_eq!(gop(&mut g, Main, 3, Some(Rung::Main)), [Send, Send, Send]);
        assert!(!g.step_down_now(), "on target: nothing to cut");
        g.set_target(Rung::Sub);
        assert!(g.step_down_now());
        assert_eq!(g.on_frame(Main, false), Skip, "the rest of main's GOP stays home");
        assert_eq!(g.on_frame(Sub, false), Skip, "no start in the middle of a GOP");
        assert_eq!(gop(&mut g, Sub, 2, None), [Send, Send]);
        // A climb never cuts.
        g.set_target(Rung::Main);
        assert!(!g.step_down_now());
        assert_eq!(g.on_frame(Sub, false), Send);
    }

    #[test]
    fn a_substream_that_ends_ends_its_gop() {
        let mut g = Gate::new(1, LADDER);
        g.set_target(Rung::Sub);
        assert_eq!(g.on_frame(Sub, true), Send);
        assert!(g.stream_ended(Sub));
        assert!(!g.stream_ended(Sub));
        assert_eq!(g.on_frame(Sub, false), Skip);
    }
}
