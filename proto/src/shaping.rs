//! Bandwidth shaping of one site link, sans-IO: which rung of the ladder
//! `main → sub → keyframes-only → paused` each subscription sends, so the
//! site's video stays inside its link budget without re-encoding.
//!
//! The shell (the agent's uplink) feeds in the budget, each subscription's
//! priority and the measured bitrates of its streams, and asks at every GOP
//! boundary "what rung for the GOP starting now?". Time is always passed in.
//!
//! How a rung is chosen:
//! - **The plan.** For a budget `B` the plan walks a fixed sequence of
//!   upgrade steps and takes each one that still fits: first everyone's
//!   keyframes (in priority order), then class by class, highest first,
//!   every member to `sub`, then every member to `main`. A step that does
//!   not fit caps every lower class at the rung the failing subscription
//!   stays on, so a lower priority never gets more than a higher one. The
//!   plan's total never exceeds `B`.
//! - **Down at once.** When the current total exceeds the effective budget,
//!   a subscription above its plan for the full budget drops to it at its
//!   next GOP. A subscription above its plan for the climbing budget
//!   (`budget × (1 − headroom)`) also yields to that plan when the total
//!   exceeds `budget × (1 − headroom/2)`, when a higher-priority one sits below
//!   it, or when any other is starved below its plan.
//! - **Up slowly.** A subscription below its plan for the climbing budget
//!   climbs one rung, at most every `climb_every`, not before
//!   `recover_after` since its last step down (waived when the budget is
//!   raised), only if the total after the climb fits the climbing budget,
//!   every running subscription has been measured, and the site's token
//!   bucket of really sent bytes is not in debt.
//!
//! Between the two plans lies the hysteresis: a subscription keeps a rung
//! the climbing plan would not give it as long as the total stays inside
//! the climbing budget and nobody needs the room.
//!
//! The effective budget is the lower of the configured budget and the
//! measured path capacity ([`PathEstimator`]), so a congested or lossy link
//! degrades video here instead of queueing it in the network.

use crate::media::Quality;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::time::{Duration, Instant};

/// Shaping priority of a subscription (from the site policy).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Priority {
    /// Steps down first.
    Low,
    /// The default.
    #[default]
    Normal,
    /// Before normal.
    High,
    /// Steps down last.
    Critical,
}

impl Priority {
    /// Every class, highest first.
    pub const DESCENDING: [Priority; 4] =
        [Priority::Critical, Priority::High, Priority::Normal, Priority::Low];

    /// Lower-case name.
    pub fn name(self) -> &'static str {
        match self {
            Priority::Low => "low",
            Priority::Normal => "normal",
            Priority::High => "high",
            Priority::Critical => "critical",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// A rung of the degradation ladder, lowest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Rung {
    /// Nothing is sent; the relay is told.
    Paused,
    /// Only each GOP's keyframe (of the substream when there is one).
    KeyframesOnly,
    /// The substream.
    Sub,
    /// The main stream.
    Main,
}

impl Rung {
    /// Kebab-case name, as in logs and status.
    pub fn name(self) -> &'static str {
        match self {
            Rung::Paused => "paused",
            Rung::KeyframesOnly => "keyframes-only",
            Rung::Sub => "sub",
            Rung::Main => "main",
        }
    }

    /// The top rung a requested quality allows.
    pub fn of_quality(q: Quality) -> Rung {
        match q {
            Quality::Main => Rung::Main,
            Quality::Sub => Rung::Sub,
        }
    }
}

impl fmt::Display for Rung {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The rungs one subscription can use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ladder {
    /// Highest rung: the quality the subscriber asked for.
    pub top: Rung,
    /// Whether the camera has a substream (else keyframes come from main).
    pub has_sub: bool,
}

impl Ladder {
    /// Whether `r` is on this ladder.
    pub fn has(&self, r: Rung) -> bool {
        r <= self.top && (r != Rung::Sub || self.has_sub)
    }

    /// The rung just below `r` on this ladder (`Paused` stays `Paused`).
    pub fn below(&self, r: Rung) -> Rung {
        let mut x = r;
        while x > Rung::Paused {
            x = step(x, -1);
            if self.has(x) {
                return x;
            }
        }
        Rung::Paused
    }

    /// The rung just above `r`, if any.
    pub fn above(&self, r: Rung) -> Option<Rung> {
        let mut x = r;
        while x < self.top {
            x = step(x, 1);
            if self.has(x) {
                return Some(x);
            }
        }
        None
    }

    /// Which stream carries rung `r` (`None` for `Paused`).
    pub fn quality(&self, r: Rung) -> Option<Quality> {
        match r {
            Rung::Paused => None,
            Rung::Main => Some(Quality::Main),
            Rung::Sub => Some(Quality::Sub),
            Rung::KeyframesOnly => Some(if self.has_sub { Quality::Sub } else { Quality::Main }),
        }
    }
}

fn step(r: Rung, d: i8) -> Rung {
    match r as i8 + d {
        ..=0 => Rung::Paused,
        1 => Rung::KeyframesOnly,
        2 => Rung::Sub,
        _ => Rung::Main,
    }
}

/// The rung `plan` gives subscription `id`; one it does not list gets nothing.
fn rung_in(plan: &BTreeMap<u64, Rung>, id: u64) -> Rung {
    plan.get(&id).copied().unwrap_or(Rung::Paused)
}

/// Measured payload bitrates of a subscription's streams, bit/s (`None`
/// while not measured yet).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct StreamRates {
    /// Main stream.
    pub main_bps: Option<f64>,
    /// Substream.
    pub sub_bps: Option<f64>,
    /// Keyframes of the stream the keyframes-only rung uses.
    pub keyframes_bps: Option<f64>,
}

/// Budget of a site link.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Budget {
    /// Sustained rate, bit/s (`None`: unlimited).
    pub bps: Option<f64>,
    /// Bytes the link may send beyond the rate in a burst.
    pub burst_bytes: f64,
}

impl Budget {
    /// No budget: every subscription gets its top rung.
    pub const UNLIMITED: Budget = Budget { bps: None, burst_bytes: 0.0 };

    /// From the policy's Mbit/s and KiB; a missing burst defaults to 250 ms
    /// of the budget.
    pub fn from_policy(budget_mbps: Option<f64>, burst_kb: Option<u64>) -> Budget {
        match budget_mbps {
            Some(mbps) if mbps.is_finite() && mbps > 0.0 => {
                let bps = mbps * 1e6;
                let burst = burst_kb.map(|k| k as f64 * 1024.0).unwrap_or(bps / 8.0 / 4.0);
                Budget { bps: Some(bps), burst_bytes: burst }
            }
            _ => Budget::UNLIMITED,
        }
    }
}

/// How hard the shaper resists changing its mind.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Hysteresis {
    /// Share of the budget kept free when climbing (0.1 = climb into 90 %).
    pub headroom: f64,
    /// Least time between a rung change and the next climb of the same subscription.
    pub climb_every: Duration,
    /// Least time between a step down and the next climb of the same subscription.
    pub recover_after: Duration,
}

impl Default for Hysteresis {
    fn default() -> Self {
        Self {
            headroom: 0.10,
            climb_every: Duration::from_millis(1500),
            recover_after: Duration::from_secs(6),
        }
    }
}

/// Why a rung changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ChangeReason {
    /// First GOP of the subscription.
    Start,
    /// The link carries more than its effective budget.
    OverBudget,
    /// Gave room to another subscription (higher priority, or starved).
    Yield,
    /// Room again: one rung up.
    Climb,
}

impl ChangeReason {
    /// Kebab-case name.
    pub fn name(self) -> &'static str {
        match self {
            ChangeReason::Start => "start",
            ChangeReason::OverBudget => "over-budget",
            ChangeReason::Yield => "yield",
            ChangeReason::Climb => "climb",
        }
    }
}

/// A rung change, for logs, metrics and audit.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RungChange {
    /// Subscription.
    pub id: u64,
    /// Previous rung (`None` at the first GOP).
    pub from: Option<Rung>,
    /// New rung.
    pub to: Rung,
    /// Why.
    pub reason: ChangeReason,
    /// Effective budget at the time, bit/s (`None`: unlimited).
    pub budget_bps: Option<f64>,
    /// Planned total before the change, bit/s.
    pub planned_bps: f64,
}

/// One subscription as the shaper sees it, for status.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SubscriptionView {
    /// Subscription id.
    pub id: u64,
    /// Priority class.
    pub priority: Priority,
    /// Current rung (`None` before the first GOP).
    pub rung: Option<Rung>,
    /// Times it stepped down.
    pub step_downs: u64,
    /// Times its rung changed (after the first).
    pub changes: u64,
}

#[derive(Debug, Clone)]
struct Sub {
    priority: Priority,
    ladder: Ladder,
    rates: StreamRates,
    rung: Option<Rung>,
    /// Seniority: older subscriptions come first within a class.
    order: u64,
    last_change: Option<Instant>,
    last_down: Option<Instant>,
    step_downs: u64,
    changes: u64,
}

impl Sub {
    /// Whether every rung of its ladder has a measured cost.
    fn measured(&self) -> bool {
        [Rung::KeyframesOnly, Rung::Sub, Rung::Main]
            .into_iter()
            .filter(|r| self.ladder.has(*r))
            .all(|r| self.rate(r).is_some())
    }

    /// Payload cost of sending rung `r`, bit/s.
    fn rate(&self, r: Rung) -> Option<f64> {
        match r {
            Rung::Paused => Some(0.0),
            Rung::KeyframesOnly => self.rates.keyframes_bps,
            Rung::Sub => self.rates.sub_bps,
            Rung::Main => self.rates.main_bps,
        }
    }
}

/// A token bucket over the bytes really sent: rate = effective budget,
/// depth = burst. In debt means the link sent more than budget + burst.
#[derive(Debug, Clone, Default)]
struct Bucket {
    tokens: f64,
    last: Option<Instant>,
}

impl Bucket {
    fn refill(&mut self, now: Instant, budget: Option<f64>, depth: f64) {
        let Some(bps) = budget else {
            self.tokens = depth;
            self.last = Some(now);
            return;
        };
        let dt = self.last.map_or(0.0, |l| now.saturating_duration_since(l).as_secs_f64());
        self.tokens = match self.last {
            None => depth,
            Some(_) => (self.tokens + dt * bps / 8.0).min(depth),
        };
        self.last = Some(now);
    }
}

/// The shaper of one site link.
#[derive(Debug, Clone)]
pub struct Shaper {
    budget: Budget,
    hysteresis: Hysteresis,
    path_capacity: Option<f64>,
    overhead: f64,
    subs: BTreeMap<u64, Sub>,
    next_order: u64,
    bucket: Bucket,
}

/// Share of the measured path capacity the shaper plans to use.
pub const PATH_SHARE: f64 = 0.9;

impl Shaper {
    /// A shaper for a link with `budget`.
    pub fn new(budget: Budget, hysteresis: Hysteresis) -> Self {
        Self {
            budget,
            hysteresis,
            path_capacity: None,
            overhead: 1.0,
            subs: BTreeMap::new(),
            next_order: 0,
            bucket: Bucket::default(),
        }
    }

    /// Replaces the budget (config reload); takes effect at the next GOPs.
    /// A raised budget is the operator's word that the pressure is gone:
    /// subscriptions may climb without waiting out `recover_after`.
    pub fn set_budget(&mut self, budget: Budget) {
        let raised = match (self.budget.bps, budget.bps) {
            (Some(old), Some(new)) => new > old,
            (Some(_), None) => true,
            (None, _) => false,
        };
        if raised {
            for s in self.subs.values_mut() {
                s.last_down = None;
            }
        }
        self.budget = budget;
    }

    /// The configured budget.
    pub fn budget(&self) -> Budget {
        self.budget
    }

    /// Measured capacity of the path, bit/s on the wire (`None`: no sign of a limit).
    pub fn set_path_capacity(&mut self, bps: Option<f64>) {
        self.path_capacity = bps.filter(|b| b.is_finite() && *b > 0.0);
    }

    /// Measured path capacity, if any.
    pub fn path_capacity(&self) -> Option<f64> {
        self.path_capacity
    }

    /// Wire bytes per payload byte (QUIC, UDP and IP headers), ≥ 1.
    pub fn set_overhead(&mut self, ratio: f64) {
        if ratio.is_finite() {
            self.overhead = ratio.clamp(1.0, 2.0);
        }
    }

    /// The effective budget: the lower of the configured budget and the
    /// usable share of the path capacity, bit/s (`None`: unlimited).
    pub fn effective_bps(&self) -> Option<f64> {
        let path = self.path_capacity.map(|c| c * PATH_SHARE);
        match (self.budget.bps, path) {
            (Some(b), Some(p)) => Some(b.min(p)),
            (b, p) => b.or(p),
        }
    }

    /// Adds a subscription; its first [`Shaper::decide`] places it.
    pub fn add(&mut self, id: u64, priority: Priority, ladder: Ladder) {
        let order = self.next_order;
        self.next_order += 1;
        self.subs.insert(
            id,
            Sub {
                priority,
                ladder,
                rates: StreamRates::default(),
                rung: None,
                order,
                last_change: None,
                last_down: None,
                step_downs: 0,
                changes: 0,
            },
        );
    }

    /// Removes a subscription.
    pub fn remove(&mut self, id: u64) {
        self.subs.remove(&id);
    }

    /// Changes a subscription's priority (policy reload).
    pub fn set_priority(&mut self, id: u64, priority: Priority) {
        if let Some(s) = self.subs.get_mut(&id) {
            s.priority = priority;
        }
    }

    /// Updates a subscription's measured bitrates (payload, bit/s).
    pub fn observe(&mut self, id: u64, rates: StreamRates) {
        if let Some(s) = self.subs.get_mut(&id) {
            s.rates = rates;
        }
    }

    /// Accounts payload bytes really sent on the link.
    pub fn on_sent(&mut self, bytes: u64, now: Instant) {
        let eff = self.effective_bps();
        self.bucket.refill(now, eff, self.budget.burst_bytes);
        self.bucket.tokens -= bytes as f64 * self.overhead;
    }

    /// True while the link has sent more than budget + burst.
    pub fn in_debt(&mut self, now: Instant) -> bool {
        let eff = self.effective_bps();
        self.bucket.refill(now, eff, self.budget.burst_bytes);
        eff.is_some() && self.bucket.tokens < 0.0
    }

    /// Priority of a subscription.
    pub fn priority(&self, id: u64) -> Option<Priority> {
        self.subs.get(&id).map(|s| s.priority)
    }

    /// Current rung of a subscription.
    pub fn rung(&self, id: u64) -> Option<Rung> {
        self.subs.get(&id).and_then(|s| s.rung)
    }

    /// Every subscription, for status.
    pub fn view(&self) -> Vec<SubscriptionView> {
        self.subs
            .iter()
            .map(|(&id, s)| SubscriptionView {
                id,
                priority: s.priority,
                rung: s.rung,
                step_downs: s.step_downs,
                changes: s.changes,
            })
            .collect()
    }

    fn cost(&self, s: &Sub, r: Rung) -> Option<f64> {
        s.rate(r).map(|b| b * self.overhead)
    }

    /// Planned wire bitrate of the current rungs (unknown rates count 0).
    pub fn planned_bps(&self) -> f64 {
        self.subs.values().filter_map(|s| s.rung.and_then(|r| self.cost(s, r))).sum()
    }

    /// The plan for a budget of `budget_bps`: a rung per subscription, in
    /// priority order, never more than the budget in total. Subscriptions
    /// not measured yet are left out (planned `Paused`, costing nothing);
    /// they hold their rung until their figures arrive.
    pub fn plan(&self, budget_bps: f64) -> BTreeMap<u64, Rung> {
        let mut order: Vec<(&u64, &Sub)> = self.subs.iter().filter(|(_, s)| s.measured()).collect();
        order.sort_by_key(|(_, s)| (std::cmp::Reverse(s.priority), s.order));
        let mut plan: BTreeMap<u64, Rung> = self.subs.keys().map(|&id| (id, Rung::Paused)).collect();
        let mut used = 0.0;
        // cap[class]: the highest rung that class may get, lowered when a
        // step of a higher class fails.
        let mut cap = [Rung::Main; 4];
        let mut try_step =
            |id: u64, s: &Sub, r: Rung, plan: &mut BTreeMap<u64, Rung>, cap: &mut [Rung; 4]| {
                if !s.ladder.has(r) {
                    return;
                }
                let cur = rung_in(plan, id);
                if s.ladder.below(r) != cur {
                    return;
                }
                let fits = cap.get(s.priority.index()).is_some_and(|&c| r <= c)
                    && match (self.cost(s, r), self.cost(s, cur)) {
                        (Some(to), Some(from)) => {
                            let ok = used + (to - from) <= budget_bps;
                            if ok {
                                used += to - from;
                            }
                            ok
                        }
                        _ => false,
                    };
                if fits {
                    plan.insert(id, r);
                } else {
                    for lower in cap.iter_mut().take(s.priority.index()) {
                        *lower = (*lower).min(cur);
                    }
                }
            };
        for (&id, s) in &order {
            try_step(id, s, Rung::KeyframesOnly, &mut plan, &mut cap);
        }
        for class in Priority::DESCENDING {
            for r in [Rung::Sub, Rung::Main] {
                for (&id, s) in order.iter().filter(|(_, s)| s.priority == class) {
                    try_step(id, s, r, &mut plan, &mut cap);
                }
            }
        }
        plan
    }

    /// At a GOP boundary of subscription `id`: the rung for the GOP starting
    /// now, and the change if it differs from the previous GOP's.
    pub fn decide(&mut self, id: u64, now: Instant) -> (Rung, Option<RungChange>) {
        let Some(s) = self.subs.get(&id) else { return (Rung::Paused, None) };
        let (top, cur) = (s.ladder.top, s.rung);
        let eff = self.effective_bps();
        let planned = self.planned_bps();
        let Some(full) = eff else {
            return self.apply(id, top, ChangeReason::Climb, now, planned);
        };
        let climb_budget = full * (1.0 - self.hysteresis.headroom);
        // Between climbing and keeping lies half the headroom: bitrates that
        // wobble a few percent do not make rungs flap.
        let keep_budget = full * (1.0 - self.hysteresis.headroom / 2.0);
        let plan_full = self.plan(full);
        let plan_up = self.plan(climb_budget);
        let target_full = rung_in(&plan_full, id);
        let target_up = rung_in(&plan_up, id);
        let Some(cur) = cur else {
            let mut r = if s.measured() {
                target_up
            } else {
                // Nothing measured yet: start on the substream and let the
                // next GOPs correct with real figures.
                if s.ladder.has(Rung::Sub) {
                    Rung::Sub
                } else {
                    top
                }
            };
            // Never start into a budget that is already spent.
            while r > Rung::Paused && self.cost(s, r).is_some_and(|c| planned + c > full) {
                r = s.ladder.below(r);
            }
            return self.apply(id, r, ChangeReason::Start, now, planned);
        };

        if !s.measured() {
            return (cur, None);
        }
        // Down: over the effective budget.
        if planned > full && target_full < cur {
            return self.apply(id, target_full, ChangeReason::OverBudget, now, planned);
        }
        // Down: above the climbing plan while someone else, ready to climb,
        // is starved by it, or while a higher priority sits lower.
        if cur > target_up {
            let starved = self.subs.iter().any(|(&o, os)| {
                o != id
                    && os.measured()
                    && os.rung.is_some_and(|r| r < rung_in(&plan_up, o))
                    && self.may_climb(os, now)
            });
            let outranked = self.subs.iter().any(|(&o, os)| {
                o != id && os.priority > s.priority && os.rung.is_some_and(|r| r < cur && r < os.ladder.top)
            });
            if planned > keep_budget || starved || outranked {
                return self.apply(id, target_up, ChangeReason::Yield, now, planned);
            }
        }
        // Up: one rung, with hysteresis.
        if target_up > cur {
            // The plan is only as good as its figures: nobody climbs while
            // a running subscription is still being measured.
            let all_measured = self.subs.values().all(|o| o.rung.is_none() || o.measured());
            if self.may_climb(s, now) && all_measured && !self.in_debt(now) {
                let Some(s) = self.subs.get(&id) else { return (cur, None) };
                if let Some(next) = s.ladder.above(cur) {
                    let fits = match (self.cost(s, next), self.cost(s, cur)) {
                        (Some(to), Some(from)) => planned - from + to <= climb_budget,
                        _ => false,
                    };
                    if fits {
                        return self.apply(id, next, ChangeReason::Climb, now, planned);
                    }
                }
            }
        }
        (cur, None)
    }

    /// Whether the hysteresis lets `s` climb now.
    fn may_climb(&self, s: &Sub, now: Instant) -> bool {
        let h = self.hysteresis;
        let rested = s.last_change.is_none_or(|t| now.saturating_duration_since(t) >= h.climb_every);
        let recovered = s.last_down.is_none_or(|t| now.saturating_duration_since(t) >= h.recover_after);
        rested && recovered
    }

    fn apply(
        &mut self,
        id: u64,
        to: Rung,
        reason: ChangeReason,
        now: Instant,
        planned: f64,
    ) -> (Rung, Option<RungChange>) {
        let budget_bps = self.effective_bps();
        let Some(s) = self.subs.get_mut(&id) else { return (Rung::Paused, None) };
        let from = s.rung;
        if from == Some(to) {
            return (to, None);
        }
        if from.is_some_and(|f| to < f) {
            s.last_down = Some(now);
            s.step_downs += 1;
        }
        if from.is_some() {
            s.changes += 1;
        }
        s.last_change = Some(now);
        s.rung = Some(to);
        let reason = if from.is_none() { ChangeReason::Start } else { reason };
        (to, Some(RungChange { id, from, to, reason, budget_bps, planned_bps: planned }))
    }
}

/// Bitrate of one stream over a sliding window, with its keyframes apart.
#[derive(Debug, Clone)]
pub struct RateMeter {
    window: Duration,
    samples: VecDeque<(Instant, u64, bool)>,
    bytes: u64,
    keyframe_bytes: u64,
    first: Option<Instant>,
}

/// Window of [`RateMeter`]: a few GOPs of a typical camera.
pub const RATE_WINDOW: Duration = Duration::from_secs(6);
/// Least observation before a rate counts as measured.
pub const RATE_MIN_SPAN: Duration = Duration::from_secs(1);

impl Default for RateMeter {
    fn default() -> Self {
        Self::new(RATE_WINDOW)
    }
}

impl RateMeter {
    /// A meter averaging over `window`.
    pub fn new(window: Duration) -> Self {
        Self { window, samples: VecDeque::new(), bytes: 0, keyframe_bytes: 0, first: None }
    }

    /// Records one frame.
    pub fn record(&mut self, now: Instant, bytes: u64, keyframe: bool) {
        self.first.get_or_insert(now);
        self.samples.push_back((now, bytes, keyframe));
        self.bytes += bytes;
        if keyframe {
            self.keyframe_bytes += bytes;
        }
        self.expire(now);
    }

    fn expire(&mut self, now: Instant) {
        while let Some(&(t, b, k)) = self.samples.front() {
            if now.saturating_duration_since(t) <= self.window {
                break;
            }
            self.samples.pop_front();
            self.bytes -= b;
            if k {
                self.keyframe_bytes -= b;
            }
        }
    }

    fn span(&self, now: Instant) -> Option<f64> {
        let first = self.first?;
        let span = now.saturating_duration_since(first).min(self.window);
        (span >= RATE_MIN_SPAN).then_some(span.as_secs_f64())
    }

    /// Time of the newest frame recorded.
    pub fn latest(&self) -> Option<Instant> {
        self.samples.back().map(|s| s.0)
    }

    /// All frames, bit/s (`None` until observed for a second).
    pub fn bps(&mut self, now: Instant) -> Option<f64> {
        self.expire(now);
        self.span(now).map(|s| self.bytes as f64 * 8.0 / s)
    }

    /// Keyframes only, bit/s.
    pub fn keyframes_bps(&mut self, now: Instant) -> Option<f64> {
        self.expire(now);
        self.span(now).map(|s| self.keyframe_bytes as f64 * 8.0 / s)
    }
}

/// Cumulative counters of a QUIC connection (as `quinn::Connection::stats`
/// reports them) and of the media the application handed to it.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct PathSample {
    /// UDP payload bytes sent.
    pub sent_bytes: u64,
    /// UDP datagrams sent.
    pub sent_datagrams: u64,
    /// Bytes declared lost.
    pub lost_bytes: u64,
    /// Smoothed round-trip time.
    pub rtt: Duration,
    /// Smallest round-trip time seen.
    pub min_rtt: Duration,
    /// Media bytes the application wrote to its streams.
    pub offered_bytes: u64,
}

/// How long after the last congestion sign the path counts as limited.
pub const CONGESTION_MEMORY: Duration = Duration::from_secs(10);
/// IP + UDP header bytes per datagram (IPv4).
pub const IP_UDP_OVERHEAD: u64 = 28;
/// Share of lost bytes that counts as congestion (sporadic loss does not).
pub const LOSS_SHARE: f64 = 0.01;
/// Queueing delay (smoothed RTT above the minimum) that counts as congestion.
pub const QUEUE_DELAY: Duration = Duration::from_millis(50);
/// Wire bytes per media byte assumed when comparing offered and delivered.
const NOMINAL_OVERHEAD: f64 = 1.03;

/// Estimates what the path delivers. Congestion shows as loss (beyond a
/// sporadic share) or a standing queue (smoothed RTT well above the
/// minimum), two samples running, or as media piling up in QUIC's buffers
/// (more written than delivered, three samples running). While any of these was seen within
/// [`CONGESTION_MEMORY`], the capacity is the rate the path delivered
/// while congested (not since: once shaped below it, the sender is
/// application-limited again and its rate says nothing about the path); a
/// quiet link has no measured limit.
#[derive(Debug, Clone, Default)]
pub struct PathEstimator {
    last: Option<(Instant, PathSample)>,
    congested_at: Option<Instant>,
    capacity_bps: Option<f64>,
    backlog_streak: u32,
    signal_streak: u32,
}

impl PathEstimator {
    /// New estimator.
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds a sample; returns the capacity estimate, wire bit/s.
    pub fn update(&mut self, now: Instant, s: PathSample) -> Option<f64> {
        if let Some((t, prev)) = self.last {
            let dt = now.saturating_duration_since(t).as_secs_f64();
            if dt > 0.0 {
                let wire = |x: &PathSample| x.sent_bytes + x.sent_datagrams * IP_UDP_OVERHEAD;
                let sent = wire(&s).saturating_sub(wire(&prev)) as f64;
                let lost = s.lost_bytes.saturating_sub(prev.lost_bytes) as f64;
                let offered = s.offered_bytes.saturating_sub(prev.offered_bytes) as f64 * NOMINAL_OVERHEAD;
                let delivered = (sent - lost).max(0.0) * 8.0 / dt;
                let lossy = lost > 0.0 && lost > sent * LOSS_SHARE;
                let queued = s.rtt > s.min_rtt + QUEUE_DELAY.max(s.min_rtt);
                let piling = offered > 64.0 * 1024.0 && offered * 8.0 / dt > delivered * 1.25;
                self.backlog_streak = if piling { self.backlog_streak + 1 } else { 0 };
                // A single bad sample (a loss burst, a qdisc change) is not
                // congestion; two in a row are.
                self.signal_streak = if lossy || queued { self.signal_streak + 1 } else { 0 };
                if self.signal_streak >= 2 || self.backlog_streak >= 3 {
                    let was = self
                        .congested_at
                        .is_some_and(|t| now.saturating_duration_since(t) < CONGESTION_MEMORY);
                    self.capacity_bps = Some(match self.capacity_bps {
                        Some(c) if was => c * 0.7 + delivered * 0.3,
                        _ => delivered,
                    });
                    self.congested_at = Some(now);
                }
            }
        }
        self.last = Some((now, s));
        let congested =
            self.congested_at.is_some_and(|t| now.saturating_duration_since(t) < CONGESTION_MEMORY);
        if !congested {
            self.capacity_bps = None;
        }
        self.capacity_bps
    }
}

#[cfg(test)]
mod tests;
