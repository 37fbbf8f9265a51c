use super::*;
use crate::media::Quality;
use proptest::prelude::*;
use std::time::Duration;

const MBIT: f64 = 1e6;

fn ladder() -> Ladder {
    Ladder { top: Rung::Main, has_sub: true }
}

fn rates(main: f64, sub: f64, kf: f64) -> StreamRates {
    StreamRates { main_bps: Some(main * MBIT), sub_bps: Some(sub * MBIT), keyframes_bps: Some(kf * MBIT) }
}

fn budget(mbps: f64) -> Budget {
    Budget::from_policy(Some(mbps), Some(256))
}

/// A site with `prios` cameras of 4 / 0.5 / 0.1 Mbit/s, placed at t0.
fn site(mbps: f64, prios: &[Priority]) -> (Shaper, Instant) {
    let mut s = Shaper::new(budget(mbps), Hysteresis::default());
    for (i, p) in prios.iter().enumerate() {
        s.add(i as u64, *p, ladder());
        s.observe(i as u64, rates(4.0, 0.5, 0.1));
    }
    (s, Instant::now())
}

/// Runs every subscription's GOP boundaries (2 s GOPs, staggered) until `secs`.
fn run(s: &mut Shaper, t0: Instant, from_secs: f64, secs: f64) -> Vec<RungChange> {
    let ids: Vec<u64> = s.view().iter().map(|v| v.id).collect();
    let mut changes = Vec::new();
    let mut t = from_secs;
    while t < secs {
        for (k, &id) in ids.iter().enumerate() {
            let at = t0 + Duration::from_secs_f64(t + k as f64 * 0.13);
            if let (_, Some(c)) = s.decide(id, at) {
                changes.push(c);
            }
        }
        t += 2.0;
    }
    changes
}

use Priority::{Critical, High, Low, Normal};
const MIX: [Priority; 10] = [Critical, High, High, Normal, Normal, Normal, Normal, Low, Low, Low];

#[test]
fn sixteen_megabits_keep_critical_and_high_on_main() {
    let (mut s, t0) = site(16.0, &MIX);
    run(&mut s, t0, 0.0, 30.0);
    let rungs: Vec<Rung> = (0..10).map(|i| s.rung(i).unwrap()).collect();
    assert_eq!(&rungs[..3], [Rung::Main; 3], "{rungs:?}");
    assert!(rungs[3..].iter().all(|r| *r < Rung::Main), "{rungs:?}");
    assert!(rungs[3..].iter().all(|r| *r >= Rung::KeyframesOnly), "everyone keeps keyframes: {rungs:?}");
    assert!(s.planned_bps() <= 16.0 * MBIT, "{}", s.planned_bps());
    // Lower classes never above higher ones.
    for w in rungs.windows(2) {
        assert!(w[0] >= w[1], "{rungs:?}");
    }
}

#[test]
fn a_raised_budget_climbs_everyone_to_main_one_rung_at_a_time() {
    let (mut s, t0) = site(16.0, &MIX);
    run(&mut s, t0, 0.0, 30.0);
    s.set_budget(budget(60.0));
    let changes = run(&mut s, t0, 30.0, 40.0);
    assert!((0..10).all(|i| s.rung(i) == Some(Rung::Main)), "{:?}", s.view());
    for c in &changes {
        assert_eq!(c.reason, ChangeReason::Climb);
        assert_eq!(Some(ladder().below(c.to)), c.from, "one rung at a time: {c:?}");
    }
}

#[test]
fn a_lowered_budget_is_met_at_the_next_gop_of_each_camera() {
    let (mut s, t0) = site(60.0, &MIX);
    run(&mut s, t0, 0.0, 30.0);
    assert!(s.planned_bps() > 30.0 * MBIT);
    s.set_budget(budget(8.0));
    let changes = run(&mut s, t0, 30.0, 32.0);
    assert!(s.planned_bps() <= 8.0 * MBIT, "{}", s.planned_bps());
    assert!(changes.iter().all(|c| c.to < c.from.unwrap()));
    assert_eq!(s.rung(0), Some(Rung::Main), "the critical camera keeps main");
    assert!(changes.iter().any(|c| c.reason == ChangeReason::OverBudget));
}

#[test]
fn the_path_capacity_lowers_the_effective_budget() {
    let (mut s, t0) = site(60.0, &MIX);
    s.set_path_capacity(Some(10.0 * MBIT));
    assert_eq!(s.effective_bps(), Some(9.0 * MBIT));
    run(&mut s, t0, 0.0, 30.0);
    assert!(s.planned_bps() <= 9.0 * MBIT);
    s.set_path_capacity(None);
    assert_eq!(s.effective_bps(), Some(60.0 * MBIT));
}

#[test]
fn no_budget_means_the_requested_quality() {
    let mut s = Shaper::new(Budget::UNLIMITED, Hysteresis::default());
    s.add(1, Low, Ladder { top: Rung::Sub, has_sub: true });
    s.add(2, Low, ladder());
    let now = Instant::now();
    assert_eq!(s.decide(1, now).0, Rung::Sub);
    assert_eq!(s.decide(2, now).0, Rung::Main);
}

#[test]
fn a_new_critical_camera_gets_room_from_the_lower_ones() {
    let (mut s, t0) = site(10.0, &[Normal, Normal]);
    run(&mut s, t0, 0.0, 30.0);
    assert_eq!((s.rung(0), s.rung(1)), (Some(Rung::Main), Some(Rung::Main)));
    s.add(9, Critical, ladder());
    s.observe(9, rates(4.0, 0.5, 0.1));
    run(&mut s, t0, 30.0, 50.0);
    assert_eq!(s.rung(9), Some(Rung::Main), "{:?}", s.view());
    assert!(s.planned_bps() <= 10.0 * MBIT);
    assert!(s.rung(0) == Some(Rung::Main) || s.rung(1) == Some(Rung::Main), "{:?}", s.view());
}

#[test]
fn unmeasured_cameras_start_on_the_substream() {
    let mut s = Shaper::new(budget(16.0), Hysteresis::default());
    s.add(1, Critical, ladder());
    s.add(2, Normal, Ladder { top: Rung::Main, has_sub: false });
    let now = Instant::now();
    assert_eq!(s.decide(1, now).0, Rung::Sub);
    assert_eq!(s.decide(2, now).0, Rung::Main);
}

#[test]
fn rungs_map_to_streams() {
    let no_sub = Ladder { top: Rung::Main, has_sub: false };
    assert_eq!(no_sub.below(Rung::Main), Rung::KeyframesOnly);
    assert_eq!(no_sub.above(Rung::KeyframesOnly), Some(Rung::Main));
    assert_eq!(no_sub.quality(Rung::KeyframesOnly), Some(Quality::Main));
    assert_eq!(ladder().quality(Rung::KeyframesOnly), Some(Quality::Sub));
    let sub_only = Ladder { top: Rung::Sub, has_sub: true };
    assert_eq!(sub_only.above(Rung::Sub), None);
    assert!(!sub_only.has(Rung::Main));
    assert_eq!(ladder().below(Rung::Paused), Rung::Paused);
}

#[test]
fn rate_meter_averages_over_its_window() {
    let t0 = Instant::now();
    let mut m = RateMeter::new(Duration::from_secs(4));
    assert_eq!(m.bps(t0), None);
    for i in 0..60u64 {
        let at = t0 + Duration::from_millis(i * 100);
        m.record(at, if i % 20 == 0 { 10_000 } else { 1_000 }, i % 20 == 0);
    }
    let now = t0 + Duration::from_millis(6000);
    let bps = m.bps(now).unwrap();
    // Last 4 s: frames 20..59 = 2 keyframes + 38 deltas = 58 kB.
    assert!((bps - 58_000.0 * 8.0 / 4.0).abs() < 2_000.0, "{bps}");
    let kf = m.keyframes_bps(now).unwrap();
    assert!((kf - 20_000.0 * 8.0 / 4.0).abs() < 1.0, "{kf}");
}

#[test]
fn path_estimator_sees_a_limit_only_under_congestion() {
    let t0 = Instant::now();
    let at = |i: u64| t0 + Duration::from_millis(500 * i);
    let quiet =
        PathSample { rtt: Duration::from_millis(2), min_rtt: Duration::from_millis(1), ..Default::default() };
    // 500 kB per half second written and sent, a stray lost packet: app-limited, no limit known.
    let step = |s: &mut PathSample, offered: u64, sent: u64, lost: u64| {
        s.offered_bytes += offered;
        s.sent_bytes += sent;
        s.sent_datagrams += sent / 1250;
        s.lost_bytes += lost;
    };
    let mut p = PathEstimator::new();
    let mut s = quiet;
    for i in 0..10 {
        step(&mut s, 500_000, 515_000, if i == 5 { 1200 } else { 0 });
        assert_eq!(p.update(at(i), s), None, "sample {i}");
    }

    // Loss beyond a sporadic share: the capacity is what got through.
    let mut p = PathEstimator::new();
    let mut s = quiet;
    for i in 0..10 {
        step(&mut s, 500_000, 515_000, 100_000);
        p.update(at(i), s);
    }
    step(&mut s, 500_000, 515_000, 100_000);
    let cap = p.update(at(10), s).unwrap();
    assert!((6.5 * MBIT..7.0 * MBIT).contains(&cap), "{cap}");
    // Shaped below it, the sender sends less: that does not lower the estimate.
    for i in 11..15 {
        step(&mut s, 100_000, 103_000, 0);
        assert_eq!(p.update(at(i), s), Some(cap));
    }
    // Quiet again for CONGESTION_MEMORY: no limit.
    for i in 15..40 {
        step(&mut s, 500_000, 515_000, 0);
        p.update(at(i), s);
    }
    assert_eq!(p.update(at(40), s), None);

    // One lossy sample alone (a burst) is not congestion.
    let mut p = PathEstimator::new();
    let mut s = quiet;
    for i in 0..10 {
        step(&mut s, 500_000, 515_000, if i == 5 { 200_000 } else { 0 });
        assert_eq!(p.update(at(i), s), None, "sample {i}");
    }

    // Random loss on an ample path (5 %, every sample): QUIC retransmits,
    // the delivery rate keeps up with what was written: no limit, however
    // long it lasts.
    let mut p = PathEstimator::new();
    let mut s = quiet;
    for i in 0..40 {
        step(&mut s, 160_000, 173_000, 8_650);
        assert_eq!(p.update(at(i), s), None, "sample {i}");
    }
    // The same loss while the delivery rate falls behind is congestion.
    for i in 40..43 {
        step(&mut s, 160_000, 150_000, 8_650);
        p.update(at(i), s);
    }
    assert!(p.update(at(43), s).is_some());

    // A standing queue: RTT far above its minimum.
    let mut p = PathEstimator::new();
    let mut s = PathSample { rtt: Duration::from_millis(90), ..quiet };
    for i in 0..4 {
        step(&mut s, 500_000, 515_000, 0);
        p.update(at(i), s);
    }
    assert!(p.update(at(4), s).is_some());

    // Media piling up in QUIC: written faster than the path delivers.
    let mut p = PathEstimator::new();
    let mut s = quiet;
    assert_eq!(p.update(at(0), s), None);
    step(&mut s, 2_000_000, 1_250_000, 0);
    assert_eq!(p.update(at(1), s), None, "a sample is not a trend");
    step(&mut s, 2_000_000, 1_250_000, 0);
    let cap = p.update(at(2), s).unwrap();
    assert!((19.0 * MBIT..21.0 * MBIT).contains(&cap), "{cap}");

    // A path narrowed to 83 % of what is written: no loss, no RTT (the
    // queue is in the sender), each sample only 1.2× behind (under the
    // piling margin); the backlog is seen within 2 s (a GOP), before a
    // GOP's worth has queued.
    let mut p = PathEstimator::new();
    let mut s = quiet;
    p.update(at(0), s);
    let mut seen = None;
    for i in 1..=8 {
        step(&mut s, 1_000_000, 860_000, 0);
        if p.update(at(i), s).is_some() {
            seen = Some(i);
            break;
        }
    }
    assert!(seen.is_some_and(|i| i <= 4), "seen at sample {seen:?}");
    // A burst of keyframes (one sample far ahead, then caught up) is not.
    let mut p = PathEstimator::new();
    let mut s = quiet;
    for i in 0..12 {
        let (offered, sent) = match i % 4 {
            1 => (1_500_000, 515_000),
            2 => (0, 1_030_000),
            _ => (500_000, 515_000),
        };
        step(&mut s, offered, sent, 0);
        assert_eq!(p.update(at(i), s), None, "sample {i}");
    }
}

#[test]
fn the_bucket_of_sent_bytes_blocks_climbs_while_in_debt() {
    let (mut s, t0) = site(8.0, &[Normal]);
    assert!(!s.in_debt(t0));
    s.on_sent(2_000_000, t0);
    assert!(s.in_debt(t0));
    assert!(!s.in_debt(t0 + Duration::from_secs(3)));
}

// ---- property tests ----

#[derive(Debug, Clone)]
struct SimSub {
    priority: Priority,
    ladder: Ladder,
    rates: StreamRates,
    gop: f64,
    arrive: f64,
    leave: Option<f64>,
}

fn arb_priority() -> impl Strategy<Value = Priority> {
    prop_oneof![Just(Low), Just(Normal), Just(High), Just(Critical)]
}

fn arb_sub() -> impl Strategy<Value = SimSub> {
    (
        arb_priority(),
        any::<bool>(),
        prop::bool::weighted(0.85),
        1.0f64..6.0,
        0.1f64..1.0,
        0.02f64..0.3,
        0.5f64..3.0,
        0.0f64..10.0,
        prop::option::weighted(0.2, 10.0f64..60.0),
    )
        .prop_map(|(priority, sub_top, has_sub, main, sub, kf, gop, arrive, leave)| {
            let top = if sub_top && has_sub { Rung::Sub } else { Rung::Main };
            let kf = if has_sub { kf.min(sub * 0.5) } else { kf * 2.0 };
            SimSub {
                priority,
                ladder: Ladder { top, has_sub },
                rates: StreamRates {
                    main_bps: Some(main * MBIT),
                    sub_bps: has_sub.then_some(sub * MBIT),
                    keyframes_bps: Some(kf * MBIT),
                },
                gop,
                arrive,
                leave,
            }
        })
}

/// What happened in a simulation: planned rate after each event, and each change.
struct Trace {
    planned: Vec<(f64, f64)>,
    changes: Vec<(f64, RungChange)>,
}

/// Drives the shaper through every subscription's GOP boundaries until
/// `end` seconds, applying budget changes `(at, Mbit/s)` on the way.
fn simulate(s: &mut Shaper, subs: &[SimSub], end: f64, budgets: &[(f64, f64)]) -> Trace {
    simulate_with_burst(s, subs, end, budgets, 256)
}

fn simulate_with_burst(
    s: &mut Shaper,
    subs: &[SimSub],
    end: f64,
    budgets: &[(f64, f64)],
    burst_kb: u64,
) -> Trace {
    let t0 = Instant::now();
    let mut budgets: Vec<(f64, f64)> = budgets.to_vec();
    budgets.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut budgets = budgets.into_iter().peekable();
    let mut next: Vec<f64> = subs.iter().map(|x| x.arrive).collect();
    let mut added = vec![false; subs.len()];
    let mut trace = Trace { planned: vec![(0.0, 0.0)], changes: Vec::new() };
    loop {
        let (i, &t) =
            next.iter().enumerate().min_by(|a, b| a.1.total_cmp(b.1)).expect("at least one subscription");
        if t >= end {
            break;
        }
        while let Some(&(at, mbps)) = budgets.peek() {
            if at > t {
                break;
            }
            s.set_budget(Budget::from_policy(Some(mbps), Some(burst_kb)));
            budgets.next();
        }
        let x = &subs[i];
        let id = i as u64;
        if x.leave.is_some_and(|l| t >= l) {
            s.remove(id);
            next[i] = f64::INFINITY;
        } else {
            if !added[i] {
                s.add(id, x.priority, x.ladder);
                s.observe(id, x.rates);
                added[i] = true;
            }
            if let (_, Some(c)) = s.decide(id, t0 + Duration::from_secs_f64(t)) {
                trace.changes.push((t, c));
            }
            next[i] = t + x.gop;
        }
        trace.planned.push((t, s.planned_bps()));
    }
    trace
}

/// Planned bits in [from, from + 1 s] of a piecewise-constant rate.
fn bits_in_window(planned: &[(f64, f64)], from: f64) -> f64 {
    let to = from + 1.0;
    let mut bits = 0.0;
    for (k, &(t, bps)) in planned.iter().enumerate() {
        let end = planned.get(k + 1).map_or(f64::INFINITY, |n| n.0);
        let (a, b) = (t.max(from), end.min(to));
        if b > a {
            bits += bps * (b - a);
        }
    }
    bits
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    /// Over any 1 s window the planned bits stay within budget + burst,
    /// whatever arrives and leaves when; after a budget change (a reload),
    /// from one GOP of every camera on.
    #[test]
    fn planned_bitrate_stays_within_budget_and_burst(
        subs in prop::collection::vec(arb_sub(), 1..14),
        mbps in 0.5f64..40.0,
        burst_kb in 16u64..1024,
        reloads in prop::collection::vec((5.0f64..70.0, 0.5f64..40.0), 0..4),
    ) {
        let b = Budget::from_policy(Some(mbps), Some(burst_kb));
        let mut s = Shaper::new(b, Hysteresis::default());
        let trace = simulate_with_burst(&mut s, &subs, 80.0, &reloads, burst_kb);
        let max_gop = subs.iter().map(|x| x.gop).fold(0.0, f64::max);
        for &(t, _) in &trace.planned {
            // The budget in force over [t, t + 1 s] and since when.
            let (since, in_force) = reloads
                .iter()
                .filter(|(at, _)| *at <= t + 1.0)
                .fold((0.0, mbps), |acc, &(at, m)| if at >= acc.0 { (at, m) } else { acc });
            let before = reloads.iter().filter(|(at, _)| *at <= t + 1.0).all(|(at, m)| *at < since || *m == in_force);
            if since > 0.0 && (t < since + max_gop || !before) {
                continue;
            }
            // Stronger than asked: the plan never exceeds the budget at all.
            let now = trace.planned.iter().rev().find(|(at, _)| *at <= t).map_or(0.0, |p| p.1);
            prop_assert!(now <= in_force * MBIT * (1.0 + 1e-9), "{now} bit/s planned at {t}, budget {in_force} Mbit/s");
            let allowed = in_force * MBIT + b.burst_bytes * 8.0;
            let bits = bits_in_window(&trace.planned, t);
            prop_assert!(bits <= allowed + 1.0, "{bits} bits in [{t}, {t}+1 s], allowed {allowed}");
        }
    }

    /// Once settled, a higher-priority subscription is never on a lower rung
    /// than a lower-priority one that still sends (unless it already has
    /// all it asked for), and nothing changes any more.
    #[test]
    fn settled_ladder_respects_priorities_and_stops_moving(
        subs in prop::collection::vec(arb_sub(), 1..14),
        mbps in 0.5f64..40.0,
    ) {
        let mut subs = subs;
        for x in &mut subs {
            x.leave = x.leave.map(|l| l.min(20.0));
        }
        let mut s = Shaper::new(budget(mbps), Hysteresis::default());
        let trace = simulate(&mut s, &subs, 150.0, &[]);
        let late: Vec<_> = trace.changes.iter().filter(|(t, _)| *t > 110.0).collect();
        prop_assert!(late.is_empty(), "still changing after settling: {late:?}");
        let view = s.view();
        for h in &view {
            for l in &view {
                let (Some(hr), Some(lr)) = (h.rung, l.rung) else { continue };
                let h_top = subs[h.id as usize].ladder.top;
                if h.priority > l.priority && lr != Rung::Paused {
                    prop_assert!(hr >= lr || hr == h_top, "{h:?} below {l:?}");
                }
            }
        }
    }

    /// Climbs go one rung at a time, never sooner than `climb_every` after
    /// the previous change nor `recover_after` after a step down.
    #[test]
    fn rung_changes_respect_the_hysteresis(
        subs in prop::collection::vec(arb_sub(), 1..14),
        mbps in 0.5f64..40.0,
        changes_at in prop::collection::vec((5.0f64..70.0, 0.5f64..40.0), 0..4),
    ) {
        let h = Hysteresis::default();
        let mut s = Shaper::new(budget(mbps), h);
        // Budget changes (reloads) in between, to provoke steps both ways.
        let all = simulate(&mut s, &subs, 90.0, &changes_at).changes;
        // A raised budget waives `recover_after` (the operator lifted the pressure).
        let mut reloads = changes_at.clone();
        reloads.sort_by(|a, b| a.0.total_cmp(&b.0));
        let mut previous = mbps;
        let mut raises = Vec::new();
        for (at, m) in reloads {
            if m > previous {
                raises.push(at);
            }
            previous = m;
        }
        let mut by_sub: BTreeMap<u64, Vec<(f64, RungChange)>> = BTreeMap::new();
        for (t, c) in all {
            by_sub.entry(c.id).or_default().push((t, c));
        }
        for (id, list) in by_sub {
            let ladder = subs[id as usize].ladder;
            let mut last_change: Option<f64> = None;
            let mut last_down: Option<f64> = None;
            for (t, c) in list {
                if let Some(from) = c.from {
                    if c.to > from {
                        prop_assert_eq!(ladder.above(from), Some(c.to), "one rung: {:?}", c);
                        if let Some(l) = last_change {
                            prop_assert!(t - l >= h.climb_every.as_secs_f64() - 1e-6, "climb {c:?} {}s after a change", t - l);
                        }
                        let waived = |d: f64| raises.iter().any(|r| *r >= d && *r <= t);
                        if let Some(d) = last_down.filter(|d| !waived(*d)) {
                            prop_assert!(t - d >= h.recover_after.as_secs_f64() - 1e-6, "climb {c:?} {}s after a step down", t - d);
                        }
                    } else {
                        last_down = Some(t);
                    }
                }
                last_change = Some(t);
            }
        }
    }

    /// The plan itself: within its budget, and in priority order.
    #[test]
    fn the_plan_fits_and_is_ordered(
        subs in prop::collection::vec(arb_sub(), 1..16),
        mbps in 0.1f64..50.0,
    ) {
        let mut s = Shaper::new(budget(mbps), Hysteresis::default());
        for (i, x) in subs.iter().enumerate() {
            s.add(i as u64, x.priority, x.ladder);
            s.observe(i as u64, x.rates);
        }
        let plan = s.plan(mbps * MBIT);
        let total: f64 = plan
            .iter()
            .map(|(&id, &r)| {
                let x = &subs[id as usize];
                match r {
                    Rung::Paused => 0.0,
                    Rung::KeyframesOnly => x.rates.keyframes_bps.unwrap_or(0.0),
                    Rung::Sub => x.rates.sub_bps.unwrap_or(0.0),
                    Rung::Main => x.rates.main_bps.unwrap_or(0.0),
                }
            })
            .sum();
        prop_assert!(total <= mbps * MBIT + 1e-3);
        for (&h, &hr) in &plan {
            for (&l, &lr) in &plan {
                let (hx, lx) = (&subs[h as usize], &subs[l as usize]);
                if hx.priority > lx.priority && lr != Rung::Paused {
                    prop_assert!(hr >= lr || hr == hx.ladder.top, "{hx:?} at {hr} below {lx:?} at {lr}");
                }
            }
        }
    }
}

#[test]
fn the_send_window_holds_two_gops_of_the_effective_budget() {
    assert_eq!(send_window_for(None), MAX_SEND_WINDOW, "no budget, no limit");
    assert_eq!(send_window_for(Some(16e6)), 8_000_000, "16 Mbit/s: 4 s = 8 MB");
    assert_eq!(send_window_for(Some(1e6)), MIN_SEND_WINDOW, "a trickle still takes a 4K keyframe");
    assert_eq!(send_window_for(Some(10e9)), MAX_SEND_WINDOW);
    assert_eq!(send_window_for(Some(f64::NAN)), MIN_SEND_WINDOW);
    assert_eq!(send_window_for(Some(f64::INFINITY)), MIN_SEND_WINDOW);
    assert_eq!(send_window_for(Some(-3.0)), MIN_SEND_WINDOW);

    // The window follows the path: narrowed by a measured limit, wide
    // again when the limit is forgotten.
    let (mut s, _) = site(40.0, &[Normal]);
    assert_eq!(s.send_window(), 20_000_000);
    s.set_path_capacity(Some(10e6));
    assert!(s.send_window() < 5_000_001, "{}", s.send_window());
    s.set_path_capacity(None);
    assert_eq!(s.send_window(), 20_000_000);
}
