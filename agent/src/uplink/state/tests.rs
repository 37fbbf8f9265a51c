//! The session alone, no sockets: a tiny shell ([`settle`]) answers the
//! camera opens and collects the rest, so the same actions can later be
//! wired to the relay's upstream state.

use super::*;
use crate::config::AgentConfig;
use ponte_proto::shaping::{Hysteresis, Shaper, StreamRates};
use std::collections::VecDeque;
use std::time::{Duration, Instant};

const CONFIG: &str = r#"
[agent]
id = "master"
[tls]
ca = "ca.pem"
cert = "master.pem"
key = "master.key"
[policy]
timezone = "UTC"
[[relay]]
site = "questura"
addr = "127.0.0.1:7443"
[[site]]
id = "questura"
allow = ["zone:Giuseppina"]
deny = ["tag:hospital"]
ptz = true
budget_mbps = 2
[[site]]
id = "notte"
allow = ["*"]
windows = ["daily 22:00-06:00"]
[[device]]
id = "piazza"
name = "piazza"
zone = "Giuseppina"
type = "fixed"
source = "synthetic"
[[device]]
id = "dome"
name = "rotatoria"
zone = "Giuseppina"
type = "dome-ptz"
source = "synthetic"
[[device]]
id = "osp"
name = "ospedale"
zone = "Giuseppina"
type = "fixed"
tags = ["hospital"]
source = "synthetic"
"#;

struct Fixture {
    access: Arc<Access>,
    catalog: Vec<CatalogEntry>,
}

fn fixture(text: &str) -> Fixture {
    let cfg = AgentConfig::from_toml(text).unwrap_or_else(|e| panic!("{e:#}\n{text}"));
    Fixture {
        access: Arc::new(Access::new(&cfg).unwrap()),
        catalog: crate::sources::cameras::catalog_of(&cfg.devices),
    }
}

/// 23:00 UTC: inside `notte`'s window.
fn night() -> jiff::Timestamp {
    "2026-12-06T23:00:00Z".parse().unwrap()
}

/// Carries out what needs an answer (camera opens, all online unless
/// listed in `offline`) and returns every action, in order.
fn settle(s: &mut SessionState, actions: Vec<Action>, offline: &[&str]) -> Vec<Action> {
    let mut out = Vec::new();
    let mut queue = VecDeque::from(actions);
    while let Some(a) = queue.pop_front() {
        if let Action::OpenCamera { id, camera, .. } = &a {
            for next in s.camera_opened(*id, !offline.contains(&camera.as_str())).into_iter().rev() {
                queue.push_front(next);
            }
        }
        out.push(a);
    }
    out
}

fn subscribe(s: &mut SessionState, f: &Fixture, id: u64, camera: &str, now: jiff::Timestamp) -> Vec<Action> {
    let msg = Control::Subscribe {
        id,
        camera: camera.into(),
        quality: Quality::Main,
        viewer: None,
        playback: None,
    };
    let actions = s.handle(msg, &f.catalog, now).unwrap();
    settle(s, actions, &[])
}

fn sent(actions: &[Action]) -> Vec<&Control> {
    actions.iter().filter_map(|a| if let Action::Send(m) = a { Some(m) } else { None }).collect()
}

/// (action, outcome, reason) of each audit line.
fn audited(actions: &[Action]) -> Vec<(String, String, String)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Audit(r) => {
                Some((r.action.clone(), r.outcome.clone(), r.reason.clone().unwrap_or_default()))
            }
            _ => None,
        })
        .collect()
}

fn error_code(actions: &[Action]) -> Option<(u64, SubscribeErrorCode, String)> {
    sent(actions).into_iter().find_map(|m| match m {
        Control::SubscribeError { id, code, reason } => Some((*id, *code, reason.clone())),
        _ => None,
    })
}

#[test]
fn a_granted_subscribe_is_audited_answered_and_pumped_in_that_order() {
    let f = fixture(CONFIG);
    let mut s = SessionState::new("questura", f.access.clone(), 8);
    let catalog = s.send_catalog(&f.catalog);
    let Some(Control::Catalog { cameras }) = sent(&catalog).first().copied() else { panic!("{catalog:?}") };
    let ids: Vec<&str> = cameras.iter().map(|c| c.id.as_str()).collect();
    assert_eq!(ids, ["piazza", "dome"], "the hospital camera is not listed");
    assert!(s.send_catalog(&f.catalog).is_empty(), "an unchanged catalog is not sent again");

    let a = subscribe(&mut s, &f, 7, "piazza", night());
    assert!(
        matches!(&a[0], Action::OpenCamera { id: 7, camera, quality: Quality::Main, playback: None } if camera == "piazza")
    );
    assert_eq!(audited(&a), [("subscribe".into(), "allowed".into(), "rule `zone:Giuseppina`".into())]);
    assert!(matches!(&a[2], Action::Send(Control::SubscribeOk { id: 7, .. })));
    let Action::StartPump { id: 7, ladder, .. } = &a[3] else { panic!("{a:?}") };
    assert_eq!((ladder.top, ladder.has_sub), (Rung::Main, true));
    assert_eq!(s.len(), 1);
    assert_eq!(s.subscription(7).map(|x| x.camera.as_str()), Some("piazza"));
}

#[test]
fn a_hidden_camera_is_answered_unknown_and_the_audit_keeps_the_true_reason() {
    let f = fixture(CONFIG);
    let mut s = SessionState::new("questura", f.access.clone(), 8);
    let a = subscribe(&mut s, &f, 1, "osp", night());
    let (_, code, told) = error_code(&a).unwrap();
    assert_eq!(code, SubscribeErrorCode::Unknown);
    assert!(told.contains("not in the catalog"), "{told}");
    let audit = audited(&a);
    assert_eq!((audit[0].0.as_str(), audit[0].1.as_str()), ("refused", "unknown"));
    assert!(audit[0].2.contains("hospital"), "the audit names the deny rule: {audit:?}");
    // A camera that does not exist reads the same to the relay.
    let b = subscribe(&mut s, &f, 2, "nowhere", night());
    assert_eq!(error_code(&b).unwrap().1, SubscribeErrorCode::Unknown);
    assert_eq!(s.len(), 0);
    assert!(!a.iter().chain(&b).any(|x| matches!(x, Action::OpenCamera { .. })));
}

#[test]
fn outside_its_time_window_a_site_is_forbidden_and_a_closing_window_revokes() {
    let f = fixture(CONFIG);
    let noon: jiff::Timestamp = "2026-12-06T12:00:00Z".parse().unwrap();
    let mut s = SessionState::new("notte", f.access.clone(), 8);
    let a = subscribe(&mut s, &f, 1, "piazza", noon);
    let (id, code, told) = error_code(&a).unwrap();
    assert_eq!((id, code), (1, SubscribeErrorCode::Forbidden));
    assert_eq!(audited(&a)[0].2, told, "a visible refusal tells the relay what the audit says");

    let before: jiff::Timestamp = "2026-12-06T05:59:59Z".parse().unwrap();
    let after: jiff::Timestamp = "2026-12-06T06:00:01Z".parse().unwrap();
    subscribe(&mut s, &f, 2, "piazza", before);
    assert_eq!(s.len(), 1);
    assert!(s.tick(&f.catalog, before).is_empty());
    let t = s.tick(&f.catalog, after);
    assert_eq!(t[0], Action::StopPump { id: 2 });
    assert_eq!(audited(&t)[0].0, "revoked");
    assert_eq!(error_code(&t).unwrap().1, SubscribeErrorCode::Forbidden);
    assert_eq!(s.len(), 0);
}

#[test]
fn an_offline_camera_is_refused_after_the_grant() {
    let f = fixture(CONFIG);
    let mut s = SessionState::new("questura", f.access.clone(), 8);
    let msg = Control::Subscribe {
        id: 3,
        camera: "piazza".into(),
        quality: Quality::Main,
        viewer: None,
        playback: None,
    };
    let actions = s.handle(msg, &f.catalog, night()).unwrap();
    let a = settle(&mut s, actions, &["piazza"]);
    assert_eq!(error_code(&a).unwrap().1, SubscribeErrorCode::Offline);
    assert_eq!(audited(&a)[0].1, "offline");
    assert!(!a.iter().any(|x| matches!(x, Action::StartPump { .. })));
    assert_eq!(s.len(), 0);
    // A late answer for an open nobody asked for is ignored.
    assert!(s.camera_opened(3, true).is_empty());
}

#[test]
fn a_policy_reload_revokes_a_live_subscription_and_tells_the_relay_forbidden() {
    let f = fixture(CONFIG);
    let mut s = SessionState::new("questura", f.access.clone(), 8);
    s.send_catalog(&f.catalog);
    subscribe(&mut s, &f, 1, "piazza", night());
    subscribe(&mut s, &f, 2, "dome", night());
    let stricter =
        fixture(&CONFIG.replace(r#"deny = ["tag:hospital"]"#, r#"deny = ["tag:hospital", "camera:piazza"]"#));
    let a = s.policy_reloaded(stricter.access.clone(), &stricter.catalog, night());
    // The revocation goes out first, so the relay tells its viewers the
    // agent's reason before the new catalog drops the camera.
    let msgs = sent(&a);
    assert!(matches!(msgs.first(), Some(Control::SubscribeError { id: 1, .. })), "{a:?}");
    let Some(Control::Catalog { cameras }) =
        msgs.iter().find(|m| matches!(m, Control::Catalog { .. })).copied()
    else {
        panic!("{a:?}")
    };
    assert_eq!(cameras.len(), 1);
    assert!(a.contains(&Action::StopPump { id: 1 }));
    assert!(!a.contains(&Action::StopPump { id: 2 }), "what is still granted keeps flowing");
    let (id, code, reason) = error_code(&a).unwrap();
    assert_eq!((id, code), (1, SubscribeErrorCode::Forbidden));
    assert!(reason.starts_with("access revoked: "), "{reason}");
    let audit = audited(&a);
    assert!(audit.iter().any(|x| (x.0.as_str(), x.1.as_str()) == ("revoked", "ended")), "{audit:?}");
    assert_eq!(s.len(), 1);
}

#[test]
fn a_removed_camera_is_revoked_when_the_catalog_changes() {
    let f = fixture(CONFIG);
    let mut s = SessionState::new("questura", f.access.clone(), 8);
    subscribe(&mut s, &f, 1, "piazza", night());
    let fewer: Vec<CatalogEntry> = f.catalog.iter().filter(|c| c.id != "piazza").cloned().collect();
    let a = s.catalog_changed(&fewer, night());
    assert_eq!(audited(&a).last().unwrap().2, "camera `piazza` was removed");
    assert_eq!(error_code(&a).unwrap().0, 1);
    assert_eq!(s.len(), 0);
}

#[test]
fn after_a_relay_reconnect_the_new_session_sends_the_catalog_and_grants_again() {
    let f = fixture(CONFIG);
    let mut s = SessionState::new("questura", f.access.clone(), 8);
    s.send_catalog(&f.catalog);
    subscribe(&mut s, &f, 1, "piazza", night());
    let end = s.end();
    assert_eq!(end[0], Action::StopPump { id: 1 });
    assert_eq!(audited(&end), [("unsubscribe".into(), "ended".into(), "session ended".into())]);
    assert_eq!(s.len(), 0);

    let mut again = SessionState::new("questura", f.access.clone(), 8);
    assert_eq!(sent(&again.send_catalog(&f.catalog)).len(), 1);
    let a = subscribe(&mut again, &f, 1, "piazza", night());
    assert!(a.iter().any(|x| matches!(x, Action::StartPump { id: 1, .. })));
    // The same id again replaces the subscription: old pump stopped first.
    let b = subscribe(&mut again, &f, 1, "dome", night());
    assert_eq!(b[0], Action::StopPump { id: 1 });
    assert_eq!(again.subscription(1).map(|x| x.camera.as_str()), Some("dome"));
    assert_eq!(again.len(), 1);
}

#[test]
fn the_session_limit_and_the_site_limit_refuse_over_budget() {
    let f = fixture(CONFIG);
    let mut s = SessionState::new("questura", f.access.clone(), 1);
    subscribe(&mut s, &f, 1, "piazza", night());
    let a = subscribe(&mut s, &f, 2, "dome", night());
    assert_eq!(a[0], Action::LimitRefused);
    assert_eq!(error_code(&a).unwrap().1, SubscribeErrorCode::OverBudget);

    let one = fixture(&CONFIG.replace("budget_mbps = 2", "budget_mbps = 2\nmax_streams = 1"));
    let mut s = SessionState::new("questura", one.access.clone(), 8);
    subscribe(&mut s, &one, 1, "piazza", night());
    let a = subscribe(&mut s, &one, 2, "dome", night());
    assert!(!a.contains(&Action::LimitRefused), "not the agent-wide limit");
    let (_, code, reason) = error_code(&a).unwrap();
    assert_eq!(code, SubscribeErrorCode::OverBudget);
    assert!(reason.contains("maximum of 1"), "{reason}");
}

/// The state's actions drive the site's shaper: under the 2 Mbit/s
/// budget a 4 Mbit/s main stream goes out as its substream; a reload
/// that cuts the budget below the substream leaves keyframes only.
#[test]
fn shaping_under_the_budget_drops_main_then_whole_gops() {
    let f = fixture(CONFIG);
    let mut s = SessionState::new("questura", f.access.clone(), 8);
    let mut shaper = Shaper::new(s.budget(), Hysteresis::default());
    let apply = |shaper: &mut Shaper, actions: &[Action]| {
        for a in actions {
            match a {
                Action::StartPump { id, ladder, priority, .. } => shaper.add(*id, *priority, *ladder),
                Action::StopPump { id } => shaper.remove(*id),
                Action::SetBudget(b) => shaper.set_budget(*b),
                Action::SetPriority { id, priority } => shaper.set_priority(*id, *priority),
                _ => {}
            }
        }
    };
    let a = subscribe(&mut s, &f, 1, "piazza", night());
    apply(&mut shaper, &a);
    let rates = StreamRates { main_bps: Some(4e6), sub_bps: Some(0.5e6), keyframes_bps: Some(0.1e6) };
    let t0 = Instant::now();
    shaper.observe(1, rates);
    assert_eq!(shaper.decide(1, t0).0, Rung::Sub, "main does not fit 2 Mbit/s");

    let tight = fixture(&CONFIG.replace("budget_mbps = 2", "budget_mbps = 0.2"));
    let a = s.policy_reloaded(tight.access.clone(), &tight.catalog, night());
    assert!(a.iter().any(|x| matches!(x, Action::SetBudget(b) if b.bps == Some(0.2e6))));
    assert!(a.contains(&Action::SetPriority { id: 1, priority: Priority::Normal }));
    apply(&mut shaper, &a);
    let (rung, _) = shaper.decide(1, t0 + Duration::from_millis(500));
    assert_eq!(rung, Rung::KeyframesOnly, "0.2 Mbit/s carries keyframes only");

    // Unsubscribing takes it off the shaper.
    let a = s.handle(Control::Unsubscribe { id: 1 }, &f.catalog, night()).unwrap();
    apply(&mut shaper, &a);
    assert_eq!(shaper.rung(1), None);
    assert_eq!(audited(&a)[0].0, "unsubscribe");
}

#[test]
fn ptz_commands_go_to_the_ptz_service_and_lock_notices_only_to_sites_that_may_steer() {
    let f = fixture(CONFIG);
    let mut s = SessionState::new("questura", f.access.clone(), 8);
    let command = PtzCommand::Move { pan: 100, tilt: 0, zoom: 0 };
    let msg = Control::Ptz { id: 4, camera: "dome".into(), viewer: String::new(), command: command.clone() };
    let a = s.handle(msg, &f.catalog, night()).unwrap();
    assert_eq!(a, [Action::Ptz { id: 4, camera: "dome".into(), viewer: "anonymous".into(), command }]);

    assert_eq!(s.lock_changed("dome".into(), None, &f.catalog).len(), 1);
    assert!(s.lock_changed("piazza".into(), None, &f.catalog).is_empty(), "not a PTZ camera");
    assert!(s.lock_changed("osp".into(), None, &f.catalog).is_empty(), "not visible to the site");
    let notte = SessionState::new("notte", f.access.clone(), 8);
    assert!(notte.lock_changed("dome".into(), None, &f.catalog).is_empty(), "no PTZ right");
}

#[test]
fn stats_count_live_subscriptions_and_forget_pumps_that_ended() {
    let f = fixture(CONFIG);
    let mut s = SessionState::new("questura", f.access.clone(), 8);
    subscribe(&mut s, &f, 1, "piazza", night());
    subscribe(&mut s, &f, 2, "dome", night());
    let a = s.stats(&[], 1000, 0);
    assert_eq!(
        sent(&a),
        [&Control::Stats(StatsReport {
            subscriptions: 2,
            bytes_sent: 1000,
            budget_bps: Some(2_000_000),
            ..Default::default()
        })]
    );
    // A pump that gave up tells the relay and ends its subscription.
    let gave_up =
        Control::SubscribeError { id: 2, code: SubscribeErrorCode::Offline, reason: "stopped".into() };
    let r = s.reply(gave_up.clone());
    assert_eq!(r, [Action::StopPump { id: 2 }, Action::Send(gave_up)]);
    let a = s.stats(&[1], 5000, 3);
    assert_eq!(a[0], Action::StopPump { id: 1 });
    let report = StatsReport {
        subscriptions: 0,
        bytes_sent: 5000,
        gops_dropped: 3,
        // The site's budget travels with the stats, for the partner's console.
        budget_bps: Some(2_000_000),
        ..Default::default()
    };
    assert_eq!(sent(&a), [&Control::Stats(report)]);
}

#[test]
fn a_message_only_an_agent_sends_is_a_protocol_violation() {
    let f = fixture(CONFIG);
    let mut s = SessionState::new("questura", f.access.clone(), 8);
    let r = s.handle(Control::Catalog { cameras: Vec::new() }, &f.catalog, night());
    assert!(matches!(r, Err(SessionError::Protocol(_))));
}

/// (action, viewer) of each audit line.
fn viewers_audited(actions: &[Action]) -> Vec<(String, String)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Audit(r) => Some((r.action.clone(), r.viewer.clone().unwrap_or_default())),
            _ => None,
        })
        .collect()
}

#[test]
fn the_audit_names_each_partner_operator_qualified_by_the_certificates_site() {
    let f = fixture(CONFIG);
    let mut s = SessionState::new("questura", f.access.clone(), 8);
    // The relay names its viewer, and cannot name another site for it.
    let msg = Control::Subscribe {
        id: 1,
        camera: "piazza".into(),
        quality: Quality::Main,
        viewer: Some("op@carabinieri".into()),
        playback: None,
    };
    let actions = s.handle(msg, &f.catalog, night()).unwrap();
    let a = settle(&mut s, actions, &[]);
    assert_eq!(viewers_audited(&a), [("subscribe".into(), "op@carabinieri@questura".into())]);

    let viewers = |list: &[&str]| Control::Viewers {
        id: 1,
        viewers: list.iter().map(|v| (*v).to_owned()).collect(),
        more: 0,
    };
    let a = s.handle(viewers(&["op", "token:vms"]), &f.catalog, night()).unwrap();
    assert_eq!(
        viewers_audited(&a),
        [("view-start".into(), "op@questura".into()), ("view-start".into(), "token:vms@questura".into())]
    );
    assert!(s.handle(viewers(&["op", "token:vms"]), &f.catalog, night()).unwrap().is_empty(), "no change");
    let a = s.handle(viewers(&["anna", "op"]), &f.catalog, night()).unwrap();
    assert_eq!(
        viewers_audited(&a),
        [("view-start".into(), "anna@questura".into()), ("view-stop".into(), "token:vms@questura".into())]
    );
    // A list for a subscription it does not hold changes nothing.
    let stray = Control::Viewers { id: 99, viewers: vec!["x".into()], more: 0 };
    assert!(s.handle(stray, &f.catalog, night()).unwrap().is_empty());
    // Those still watching when the subscription ends get their view-stop.
    let a = s.handle(Control::Unsubscribe { id: 1 }, &f.catalog, night()).unwrap();
    assert_eq!(
        viewers_audited(&a),
        [
            ("view-stop".into(), "anna@questura".into()),
            ("view-stop".into(), "op@questura".into()),
            ("unsubscribe".into(), String::new())
        ]
    );
}

#[test]
fn the_relays_audit_head_is_anchored_in_the_agents_chain() {
    let f = fixture(CONFIG);
    let mut s = SessionState::new("questura", f.access.clone(), 8);
    let hash = "ab".repeat(32);
    let a = s.handle(Control::AuditHead { seq: 41, hash: hash.clone() }, &f.catalog, night()).unwrap();
    let [Action::Audit(r)] = &a[..] else { panic!("{a:?}") };
    assert_eq!((r.action.as_str(), r.site.as_deref()), ("anchor", Some("questura")));
    let head = r.anchor.as_ref().unwrap();
    assert_eq!((head.node.as_str(), head.seq, head.hash.as_str()), ("questura", 41, hash.as_str()));
}

#[test]
fn playback_needs_the_sites_right_and_goes_out_low_on_a_ladder_of_one() {
    let text = CONFIG.replace(
        "ptz = true\nbudget_mbps = 2",
        "ptz = true\nbudget_mbps = 2\nplayback = true\nmax_lookback_hours = 1",
    );
    let now = night();
    let now_ms = now.as_millisecond() as u64;
    let replay = |from_ms| Control::Subscribe {
        id: 9,
        camera: "piazza".into(),
        quality: Quality::Main,
        viewer: Some("op".into()),
        playback: Some(Playback { from_ms, to_ms: None }),
    };
    // Without the right: refused, naming it.
    let f = fixture(CONFIG);
    let mut s = SessionState::new("questura", f.access.clone(), 8);
    let a = s.handle(replay(now_ms - 60_000), &f.catalog, now).unwrap();
    let a = settle(&mut s, a, &[]);
    let (_, code, reason) = error_code(&a).expect("refused");
    assert_eq!(code, SubscribeErrorCode::Forbidden);
    assert!(reason.contains("`playback`"), "{reason}");

    // With it: a playback audit naming the operator, one rung, low priority.
    let f = fixture(&text);
    let mut s = SessionState::new("questura", f.access.clone(), 8);
    let a = s.handle(replay(now_ms - 60_000), &f.catalog, now).unwrap();
    let a = settle(&mut s, a, &[]);
    assert!(matches!(&a[0], Action::OpenCamera { playback: Some(_), .. }), "{a:?}");
    assert_eq!(audited(&a)[0].0, "playback");
    let Some(Action::StartPump { ladder, priority, .. }) =
        a.iter().find(|x| matches!(x, Action::StartPump { .. }))
    else {
        panic!("{a:?}")
    };
    assert!(!ladder.has_sub);
    assert_eq!(*priority, Priority::Low);

    // Past the lookback: refused with the key.
    let mut s = SessionState::new("questura", f.access.clone(), 8);
    let a = s.handle(replay(now_ms - 2 * 3_600_000), &f.catalog, now).unwrap();
    let a = settle(&mut s, a, &[]);
    let (_, _, reason) = error_code(&a).expect("refused");
    assert!(reason.contains("max_lookback_hours"), "{reason}");

    // An export without its right: refused and audited, never built.
    let export = Control::Export {
        id: 3,
        camera: "piazza".into(),
        quality: Quality::Main,
        from_ms: now_ms - 20_000,
        to_ms: now_ms,
        viewer: "op".into(),
    };
    let a = s.handle(export, &f.catalog, now).unwrap();
    assert!(!a.iter().any(|x| matches!(x, Action::Export { .. })));
    assert!(
        matches!(sent(&a)[..], [Control::ExportResult { id: 3, refused: Some(ref r), .. }] if r.contains("`export`"))
    );
    assert_eq!(audited(&a)[0].1, "refused");
}

/// Two agents feed the relay (issue 22): each spends its share of the
/// site's budget, never less than `1/agents`, and a camera whose primary is
/// the other agent is audited as a takeover.
#[test]
fn a_second_agent_halves_the_budget_and_a_camera_of_the_other_agent_is_a_takeover() {
    let f = fixture(CONFIG);
    let agents = vec!["master-a".to_owned(), "master-b".to_owned()];
    let mut s = SessionState::new("questura", f.access.clone(), 8).with_agents("master-a", agents.clone(), 1);
    assert_eq!(s.budget().bps, Some(2e6));
    let a = s.handle(Control::BudgetShare { parts: 2 }, &f.catalog, night()).unwrap();
    assert_eq!(a, vec![Action::SetBudget(s.budget())]);
    assert_eq!(s.budget().bps, Some(1e6));
    // A relay cannot talk the agent below its share of two.
    s.handle(Control::BudgetShare { parts: 9 }, &f.catalog, night()).unwrap();
    assert_eq!(s.budget().bps, Some(1e6));
    s.handle(Control::BudgetShare { parts: 1 }, &f.catalog, night()).unwrap();
    assert_eq!(s.budget().bps, Some(2e6), "the other agent went: the whole budget");

    s.send_catalog(&f.catalog);
    for camera in ["piazza", "dome"] {
        let a = subscribe(&mut s, &f, if camera == "dome" { 2 } else { 1 }, camera, night());
        let primary = ponte_proto::redundancy::primary(camera, agents.iter().map(String::as_str)).unwrap();
        let takeover = audited(&a).iter().any(|(action, _, _)| action == "takeover");
        assert_eq!(takeover, primary == "master-b", "{camera} (primary {primary}): {a:?}");
    }
    // One agent alone never splits and never takes over.
    let mut alone = SessionState::new("questura", f.access.clone(), 8);
    alone.handle(Control::BudgetShare { parts: 2 }, &f.catalog, night()).unwrap();
    assert_eq!(alone.budget().bps, Some(2e6));
}

/// The incident book (issue 23) with an approved ask of `camera` for
/// `questura` (by `sala-rossi`, 30 minutes from `now`): the grant's id.
fn approved(book: &mut crate::incidents::book::Book, camera: &str, now: jiff::Timestamp) -> u64 {
    let now_ms = now.as_millisecond() as u64;
    book.ask("questura", 1, camera, "verdi@questura", "rissa", now_ms);
    let ask = book.asks().next().unwrap().id;
    book.approve(ask, camera, 30, "sala-rossi", now_ms).unwrap();
    book.shares().next().unwrap().id
}

fn book(now: jiff::Timestamp) -> crate::incidents::book::Book {
    let settings = crate::incidents::book::Settings { alarm_interval_ms: 10_000, ask_ttl_ms: 300_000 };
    crate::incidents::book::Book::new(settings, now.as_millisecond() as u64)
}

fn alarm(camera: &str) -> ponte_proto::incident::Notice {
    ponte_proto::incident::Notice::Alarm {
        id: 1,
        camera: camera.into(),
        kind: ponte_proto::incident::AlarmKind::Motion,
        at_ms: 0,
        detail: "movimento".into(),
        thumbnail: Some("anBlZw==".into()),
        suppressed: 0,
    }
}

#[test]
fn a_site_is_told_only_its_own_incident_notices_and_alarms_of_cameras_it_sees() {
    let f = fixture(CONFIG);
    let s = SessionState::new("questura", f.access.clone(), 8);
    let ended = ponte_proto::incident::Notice::ShareEnded { id: 4, reason: "expired".into() };
    assert_eq!(
        s.incident("questura", ended.clone(), &f.catalog),
        [Action::Send(Control::Incident { notice: ended.clone() })]
    );
    assert!(s.incident("notte", ended, &f.catalog).is_empty(), "another site's notice");
    assert_eq!(sent(&s.incident("questura", alarm("piazza"), &f.catalog)).len(), 1);
    assert!(s.incident("questura", alarm("osp"), &f.catalog).is_empty(), "denied by `tag:hospital`");
    assert!(s.incident("questura", alarm("nowhere"), &f.catalog).is_empty(), "not in the catalog");
    // A site that sees everything gets the hospital's alarms.
    let notte = SessionState::new("notte", f.access.clone(), 8);
    assert_eq!(sent(&notte.incident("notte", alarm("osp"), &f.catalog)).len(), 1);

    // Once the camera is granted, its alarms go to the site too.
    let mut b = book(night());
    approved(&mut b, "osp", night());
    let granted = SessionState::new("questura", Arc::new(f.access.with_grants(b.grants())), 8);
    assert_eq!(sent(&granted.incident("questura", alarm("osp"), &f.catalog)).len(), 1);
}

#[test]
fn a_stream_a_grant_allowed_is_revoked_forbidden_with_the_grants_end_when_it_ends() {
    let f = fixture(CONFIG);
    let mut b = book(night());
    let grant = approved(&mut b, "osp", night());
    let mut s = SessionState::new("questura", Arc::new(f.access.with_grants(b.grants())), 8);
    let catalog = s.send_catalog(&f.catalog);
    let Some(Control::Catalog { cameras }) = sent(&catalog).first().copied() else { panic!("{catalog:?}") };
    assert!(cameras.iter().any(|c| c.id == "osp" && !c.ptz), "{cameras:?}");
    let a = subscribe(&mut s, &f, 1, "osp", night());
    assert!(a.iter().any(|x| matches!(x, Action::StartPump { id: 1, .. })), "{a:?}");
    assert!(audited(&a)[0].2.contains(&format!("approval #{grant}")), "{a:?}");
    subscribe(&mut s, &f, 2, "piazza", night());

    // Unchanged grants change nothing.
    let same = s.policy_reloaded(Arc::new(f.access.with_grants(b.grants())), &f.catalog, night());
    assert!(error_code(&same).is_none(), "{same:?}");

    let later = night().checked_add(jiff::SignedDuration::from_secs(60)).unwrap();
    b.withdraw(grant, "sala-bianchi", later.as_millisecond() as u64).unwrap();
    let a = s.policy_reloaded(Arc::new(f.access.with_grants(b.grants())), &f.catalog, later);
    let Some(cameras) = sent(&a).into_iter().find_map(|m| match m {
        Control::Catalog { cameras } => Some(cameras),
        _ => None,
    }) else {
        panic!("{a:?}")
    };
    assert!(!cameras.iter().any(|c| c.id == "osp"), "the new catalog drops the camera");
    assert!(a.contains(&Action::StopPump { id: 1 }));
    assert!(!a.contains(&Action::StopPump { id: 2 }), "the site's own camera keeps flowing");
    let (id, code, reason) = error_code(&a).unwrap();
    assert_eq!((id, code), (1, SubscribeErrorCode::Forbidden));
    assert!(reason.starts_with("access revoked: "), "{reason}");
    assert!(reason.contains(&format!("approval #{grant}")), "{reason}");
    assert!(reason.contains("withdrawn by `sala-bianchi`"), "the site is told why: {reason}");
    assert_eq!(s.len(), 1);
}
