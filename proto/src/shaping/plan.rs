//! The plan: for a budget, the rung each subscription may have, walking
//! the upgrade steps in priority order and taking each that still fits.

use super::ladder::rung_in;
use super::{Priority, Rung, Shaper, Sub};
use std::collections::BTreeMap;

impl Shaper {
    pub(super) fn cost(&self, s: &Sub, r: Rung) -> Option<f64> {
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
}
