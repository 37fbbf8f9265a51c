//! The rung for the GOP starting now: down at once past the budget, up one
//! rung at a time past the hysteresis, and the change recorded with why.

use super::ladder::rung_in;
use super::{Rung, Shaper, Sub};
use serde::{Deserialize, Serialize};
use std::time::Instant;

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

impl Shaper {
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
