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
//! measured path capacity ([`PathEstimator`]), so a congested link degrades
//! video here instead of queueing it in the network (random loss on a link
//! that still delivers is not congestion). When the path is found narrower,
//! the shell asks at once instead of at the next GOP boundary, and cuts a
//! GOP the answer steps down; [`send_window_for`] bounds what QUIC may hold
//! meanwhile.
//!
//! The shaper and its per-subscription state are here, with the calls
//! that keep them (budget, subscriptions, measurements); `ladder` holds
//! the rungs and priorities, `inputs` the budget, hysteresis and measured
//! rates, `plan` what a budget affords, `decide` the per-GOP choice and its
//! reasons, `rate_meter` and `path_estimator` the measurements the shell
//! feeds in.

mod decide;
mod inputs;
mod ladder;
mod path_estimator;
mod plan;
mod rate_meter;

pub use decide::{ChangeReason, RungChange};
pub use inputs::{Budget, Hysteresis, StreamRates};
pub use ladder::{Ladder, Priority, Rung};
pub use path_estimator::{
    PathEstimator, PathSample, BACKLOG_DELAY, BACKLOG_SAMPLES, CONGESTION_MEMORY, IP_UDP_OVERHEAD,
    LOSS_BEHIND, LOSS_SHARE, QUEUE_DELAY,
};
pub use rate_meter::{RateMeter, RATE_MIN_SPAN, RATE_WINDOW};

use std::collections::BTreeMap;

/// Seconds of the effective budget a link's QUIC send window holds: two
/// GOPs of 2 s, the GOP being sent and the one it superseded (reset when
/// the next one completes). What the window holds is a queue the viewer
/// waits behind when the path narrows faster than the shaper steps down.
pub const SEND_WINDOW_SECS: f64 = 4.0;
/// The smallest send window: a keyframe of a 4K main stream and then some,
/// so a link shaped to a trickle still takes whole frames.
pub const MIN_SEND_WINDOW: u64 = 2 << 20;
/// The largest (no budget, no measured limit): what a 100 Mbit/s site
/// sends in about five seconds.
pub const MAX_SEND_WINDOW: u64 = 64 << 20;

/// The QUIC send window for an effective budget, bit/s (`None`:
/// unlimited): [`SEND_WINDOW_SECS`] of it, within
/// [`MIN_SEND_WINDOW`]..=[`MAX_SEND_WINDOW`]. Bounding it bounds how much
/// video can queue in the sender when the path delivers less than was
/// planned: with the 64 MiB constant it was minutes at a few Mbit/s.
pub fn send_window_for(effective_bps: Option<f64>) -> u64 {
    match effective_bps {
        Some(bps) if bps.is_finite() && bps > 0.0 => {
            let bytes = bps / 8.0 * SEND_WINDOW_SECS;
            // Saturating float → int: a huge budget is the maximum.
            (bytes as u64).clamp(MIN_SEND_WINDOW, MAX_SEND_WINDOW)
        }
        Some(_) => MIN_SEND_WINDOW,
        None => MAX_SEND_WINDOW,
    }
}
use std::time::Instant;

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

    /// How many bytes QUIC may hold for this link, sent but not
    /// acknowledged or not yet sent ([`send_window_for`] of the effective
    /// budget).
    pub fn send_window(&self) -> u64 {
        send_window_for(self.effective_bps())
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
}

#[cfg(test)]
mod tests;
