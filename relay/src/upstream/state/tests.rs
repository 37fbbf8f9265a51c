//! [`UpstreamState`] against scripted upstreams, in memory, on a simulated
//! clock: quinn-proto's `Pair` idea. Each scenario is a fibre cut, an agent
//! restart or reload, or a race the real network makes rare and tests
//! over sockets make flaky.

use super::*;
use ponte_proto::media::{Codec, Quality};
use ponte_proto::ptz::{Controller, PtzCommand, PtzErrorCode, PtzReply};
use ponte_proto::wire::{Control, SubscribeErrorCode};
use std::collections::VecDeque;

/// What a scripted upstream answers.
#[derive(Clone, Default)]
struct Agent {
    catalog: Vec<CatalogEntry>,
    /// Cameras it refuses, with the code.
    refuse: HashMap<String, SubscribeErrorCode>,
    /// Whether it answers PTZ commands (a silent one never does).
    answers_ptz: bool,
}

impl Agent {
    fn with(cameras: &[&str]) -> Agent {
        Agent {
            catalog: cameras.iter().map(|c| entry(c, true)).collect(),
            answers_ptz: true,
            ..Agent::default()
        }
    }

    fn answer(&self, msg: &Control) -> Option<Control> {
        match msg {
            Control::Subscribe { id, camera, .. } => Some(match self.refuse.get(camera) {
                Some(code) => Control::SubscribeError { id: *id, code: *code, reason: "scripted".into() },
                None => Control::SubscribeOk { id: *id, codec: Codec::H264 },
            }),
            Control::Ptz { id, camera, viewer, .. } if self.answers_ptz => Some(Control::PtzResult {
                id: *id,
                reply: PtzReply::Done {
                    holder: Some(holder(viewer, 9_000)),
                    presets: vec![],
                    position: None,
                },
            })
            .filter(|_| self.catalog.iter().any(|c| &c.id == camera)),
            _ => None,
        }
    }
}

/// A fixed camera offering the main stream, and the substream if `sub`.
pub(crate) fn entry(camera: &str, sub: bool) -> CatalogEntry {
    CatalogEntry {
        id: camera.into(),
        device: camera.into(),
        lens: 1,
        name: camera.into(),
        zone: "z".into(),
        kind: "fixed".into(),
        codec: Codec::H264,
        qualities: if sub { vec![Quality::Main, Quality::Sub] } else { vec![Quality::Main] },
        ptz: false,
        always_on: false,
        sub_codec: None,
        sub_transcoded: false,
        tags: Vec::new(),
        dual_path: false,
    }
}

/// `viewer` of the Questura holding a PTZ lock for `ms` more.
pub(crate) fn holder(viewer: &str, ms: u64) -> PtzHolder {
    PtzHolder {
        controller: Controller { site: "questura".into(), viewer: viewer.into(), priority: 10 },
        expires_in_ms: ms,
    }
}

fn key(camera: &str) -> TrackKey {
    TrackKey::new(camera, Quality::Main)
}

const GRACE: Duration = Duration::from_secs(30);
const LINGER: Duration = Duration::from_millis(300);

/// The relay's table wired to scripted upstreams, with a clock of its own.
struct Pair {
    state: UpstreamState,
    now: Instant,
    agents: HashMap<LinkId, Agent>,
    /// Relay → upstream messages not delivered yet.
    wire: VecDeque<(LinkId, Control)>,
    /// Every action the table returned, in order.
    actions: Vec<Action>,
}

impl Pair {
    fn new() -> Pair {
        Pair {
            state: UpstreamState::new("questura", vec!["master".into(), "shard".into()], LINGER, GRACE),
            now: Instant::now(),
            agents: HashMap::new(),
            wire: VecDeque::new(),
            actions: Vec::new(),
        }
    }

    fn advance(&mut self, by: Duration) {
        self.now += by;
    }

    /// Takes the table's actions: messages go on the wire, the rest is kept.
    fn take(&mut self, actions: Vec<Action>) {
        for a in actions {
            if let Action::Send { link, msg } = &a {
                self.wire.push_back((*link, msg.clone()));
            }
            self.actions.push(a);
        }
    }

    /// The actions since the last look.
    fn drain(&mut self) -> Vec<Action> {
        std::mem::take(&mut self.actions)
    }

    /// A link from `peer` comes up and its upstream sends its catalog.
    fn connect(&mut self, peer: &str, agent: Agent) -> LinkId {
        let link = self.state.link_up(peer);
        let catalog = Control::Catalog { cameras: agent.catalog.clone() };
        self.agents.insert(link, agent);
        self.from(link, catalog);
        link
    }

    /// The upstream of `link` sends `msg`.
    fn from(&mut self, link: LinkId, msg: Control) {
        let actions = self.state.on_control(link, msg, self.now).expect("an upstream's message");
        self.take(actions);
    }

    /// The link goes down (fibre cut, agent gone): what it had on the wire is lost.
    fn cut(&mut self, link: LinkId) {
        self.agents.remove(&link);
        self.wire.retain(|(l, _)| *l != link);
        let actions = self.state.link_down(link, self.now);
        self.take(actions);
    }

    /// Delivers everything on the wire and the answers, until it is quiet.
    fn deliver(&mut self) {
        while let Some((link, msg)) = self.wire.pop_front() {
            if let Some(answer) = self.agents.get(&link).and_then(|a| a.answer(&msg)) {
                self.from(link, answer);
            }
        }
    }

    /// A first viewer asks for `camera`: the track's generation.
    fn subscribe(&mut self, camera: &str) -> Result<u64, SubscribeFailure> {
        let plan = self.state.plan_subscribe(&key(camera), None, self.now)?;
        let generation = self.state.subscribed(&key(camera), &plan);
        self.take(vec![Action::Send { link: plan.link, msg: plan.msg }]);
        Ok(generation)
    }

    /// The track's timer fires.
    fn tend(&mut self, camera: &str, generation: u64, viewers: usize) -> Option<Instant> {
        let mut idle = None;
        let (wake, actions) = self.state.tend(&key(camera), generation, viewers, &mut idle, self.now);
        self.take(actions);
        wake
    }

    /// Messages on the wire to `link`.
    fn sent_to(&self, link: LinkId) -> Vec<Control> {
        self.wire.iter().filter(|(l, _)| *l == link).map(|(_, m)| m.clone()).collect()
    }
}

#[test]
fn a_lost_link_orphans_the_track_and_a_new_link_adopts_it() {
    let mut p = Pair::new();
    let l1 = p.connect("master", Agent::with(&["c0"]));
    let generation = p.subscribe("c0").unwrap();
    p.deliver();
    assert!(p.drain().contains(&Action::Resolve { track: key("c0"), result: Ok(()) }));
    let Some(Track { feed: Some((link, sub1)), .. }) = p.state.tracks.get(&key("c0")).cloned() else {
        panic!("not fed")
    };
    assert_eq!(link, l1);
    p.from(l1, Control::Paused { id: sub1, reason: "link budget".into() });

    p.cut(l1);
    let cut = p.drain();
    assert!(cut.contains(&Action::Orphaned { track: key("c0") }), "{cut:?}");
    assert!(!cut.iter().any(|a| matches!(a, Action::End { .. } | Action::Revoke { .. })), "viewers are kept");
    assert!(cut.contains(&Action::WakeAt { at: p.now + GRACE }), "the lost catalog's expiry is armed");
    assert_eq!(p.state.catalog(p.now).len(), 1, "the lost catalog is listed through the grace");
    p.advance(Duration::from_secs(10));
    assert_eq!(
        p.state.track_state(&key("c0"), p.now),
        Some(TrackState::UpstreamLost { upstream: "master".into(), since_secs: 10 })
    );
    // Nothing to adopt it yet: the timer looks again a second later.
    assert_eq!(p.tend("c0", generation, 1), Some(p.now + ADOPT_RETRY));
    assert!(p.wire.is_empty());

    let l2 = p.connect("master", Agent::with(&["c0"]));
    let adopted = p.drain();
    assert!(adopted.contains(&Action::Adopted { track: key("c0") }), "{adopted:?}");
    let [Control::Subscribe { id: sub2, ref camera, quality, .. }] = p.sent_to(l2)[..] else {
        panic!("no resubscribe")
    };
    assert_eq!((camera.as_str(), quality), ("c0", Quality::Main));
    p.deliver();
    let t = &p.state.tracks[&key("c0")];
    assert_eq!((t.feed, t.orphaned, t.pending), (Some((l2, sub2)), None, false));
    assert_eq!(p.state.track_state(&key("c0"), p.now), Some(TrackState::Live), "the old pause is gone");
    assert!(!p.drain().iter().any(|a| matches!(a, Action::Resolve { .. })), "nobody waited for an answer");
    p.state.check();
}

/// The agent restarts: its new session comes up before the old one times
/// out. New subscriptions go to the newest link at once, and the tracks of
/// the old one are subscribed again on the new one as soon as it goes.
#[test]
fn an_agent_restart_resubscribes_on_its_new_link() {
    let mut p = Pair::new();
    let old = p.connect("master", Agent::with(&["c0", "c1"]));
    let g0 = p.subscribe("c0").unwrap();
    p.deliver();
    let new = p.connect("master", Agent::with(&["c0", "c1"]));
    assert_eq!(p.state.carrier("c0"), Some(new), "the newest link of a site carries its cameras");
    p.subscribe("c1").unwrap();
    assert!(matches!(&p.sent_to(new)[..], [Control::Subscribe { id: 1, camera, .. }] if camera == "c1"));
    p.deliver();
    p.drain();

    p.cut(old);
    let actions = p.drain();
    let orphaned = actions.iter().position(|a| *a == Action::Orphaned { track: key("c0") });
    let adopted = actions.iter().position(|a| *a == Action::Adopted { track: key("c0") });
    assert!(orphaned.is_some() && adopted > orphaned, "orphaned, then adopted at once: {actions:?}");
    assert!(matches!(&p.sent_to(new)[..], [Control::Subscribe { id: 2, camera, .. }] if camera == "c0"));
    p.deliver();
    assert!(p.state.lost.is_empty(), "the site is still up: nothing is lost");
    assert_eq!(p.tend("c0", g0, 1), Some(p.now + ADOPT_RETRY), "the track lives on");
    assert_eq!(p.state.links[&new].subs.len(), 2);
    p.state.check();

    // The camera restarts behind the agent: its viewers wait, and the
    // track is subscribed again when the timer looks.
    let sub = p.state.tracks[&key("c0")].feed.unwrap().1;
    p.from(
        new,
        Control::SubscribeError { id: sub, code: SubscribeErrorCode::Offline, reason: "restarting".into() },
    );
    assert!(p.drain().contains(&Action::Orphaned { track: key("c0") }));
    p.advance(ADOPT_RETRY);
    p.tend("c0", g0, 1);
    assert!(matches!(&p.sent_to(new)[..], [Control::Subscribe { id: 3, .. }]));
    p.deliver();
    assert_eq!(p.state.tracks[&key("c0")].feed, Some((new, 3)));
    p.state.check();
}

/// The agent reloads its policy during a fibre cut and comes back without
/// `c0` for this site: the orphan is revoked, not adopted or kept; a live
/// track it stops granting is revoked too, and a subscriber still waiting
/// is refused `forbidden`.
#[test]
fn a_catalog_withdrawal_during_a_reload_revokes() {
    let mut p = Pair::new();
    let l1 = p.connect("master", Agent::with(&["c0", "c1", "c2"]));
    p.subscribe("c0").unwrap();
    p.subscribe("c1").unwrap();
    p.deliver();
    p.cut(l1);
    p.drain();
    let l2 = p.connect("master", Agent::with(&["c1", "c2"]));
    let actions = p.drain();
    let revoked: Vec<&Action> = actions.iter().filter(|a| matches!(a, Action::Revoke { .. })).collect();
    let [Action::Revoke { track, why }] = &revoked[..] else { panic!("{actions:?}") };
    assert_eq!(track, &key("c0"));
    assert_eq!(why, "the master room withdrew camera `c0` from site `questura`");
    assert!(actions.contains(&Action::Adopted { track: key("c1") }), "c1 is still granted: adopted");
    p.deliver();

    // A reload on a live link: c1 is live, c2 is waiting for its answer.
    p.agents.get_mut(&l2).unwrap().refuse.insert("c2".into(), SubscribeErrorCode::Forbidden);
    p.subscribe("c2").unwrap();
    p.from(l2, Control::Catalog { cameras: vec![] });
    let actions = p.drain();
    assert!(actions.iter().any(|a| matches!(a, Action::Revoke { track, .. } if *track == key("c1"))));
    let refused = actions.iter().find_map(|a| match a {
        Action::Resolve { track, result: Err(f) } if *track == key("c2") => Some(f.clone()),
        _ => None,
    });
    let refused = refused.expect("the waiting subscriber is told");
    assert_eq!(refused.code, SubscribeErrorCode::Forbidden);
    assert!(refused.reason.starts_with("access revoked: the master room withdrew camera `c2`"), "{refused}");
    assert!(p.state.tracks.is_empty());
    assert!(p.state.links[&l2].subs.is_empty(), "nothing left subscribed on the link");
    // The agent's answer to the withdrawn subscription comes late: ignored.
    p.deliver();
    assert!(p.drain().is_empty());

    // A policy window closing on a granted stream: forbidden after ok.
    p.from(l2, Control::Catalog { cameras: vec![entry("c1", true)] });
    p.subscribe("c1").unwrap();
    p.deliver();
    p.drain();
    let sub = p.state.tracks[&key("c1")].feed.unwrap().1;
    p.from(
        l2,
        Control::SubscribeError {
            id: sub,
            code: SubscribeErrorCode::Forbidden,
            reason: "access revoked: outside the hours of rule `night`".into(),
        },
    );
    let [Action::Revoke { why, .. }] = &p.drain()[..] else { panic!("not revoked") };
    assert_eq!(
        why,
        "the master room withdrew camera `c1` from site `questura` (outside the hours of rule `night`)"
    );
    p.state.check();
}

/// Nobody comes back: the orphan lasts exactly the grace, then ends for its
/// viewers; the lost catalog goes at the wake it asked for.
#[test]
fn orphans_end_when_the_reconnect_grace_runs_out() {
    let mut p = Pair::new();
    let l1 = p.connect("master", Agent::with(&["c0"]));
    let generation = p.subscribe("c0").unwrap();
    p.deliver();
    p.cut(l1);
    let Some(Action::WakeAt { at }) = p.drain().into_iter().find(|a| matches!(a, Action::WakeAt { .. }))
    else {
        panic!("no wake")
    };
    p.advance(GRACE - Duration::from_millis(1));
    let wake = p.tend("c0", generation, 1).expect("still waiting");
    assert!(wake <= p.now + Duration::from_millis(1), "wakes at the end of the grace, not later");
    assert!(p.state.expire_lost(p.now).is_empty(), "the lost catalog is still in its grace");
    assert!(p.drain().is_empty());

    p.now = wake;
    assert_eq!(p.tend("c0", generation, 1), None, "the track is gone");
    assert_eq!(p.drain(), vec![Action::End { track: key("c0"), failure: None }]);
    assert!(p.state.tracks.is_empty());
    p.now = at;
    assert_eq!(p.state.expire_lost(p.now), vec![Action::CatalogChanged]);
    assert!(p.state.catalog(p.now).is_empty());
    let refused = p.state.plan_subscribe(&key("c0"), None, p.now).unwrap_err();
    assert_eq!(refused.code, SubscribeErrorCode::Unknown, "{refused}");
}

/// A track whose viewers left is unsubscribed after the linger, not before;
/// a viewer returning in the linger keeps it.
#[test]
fn a_track_nobody_watches_is_unsubscribed_after_the_linger() {
    let mut p = Pair::new();
    let l1 = p.connect("master", Agent::with(&["c0"]));
    let generation = p.subscribe("c0").unwrap();
    p.deliver();
    p.drain();
    let mut idle = None;
    let (wake, actions) = p.state.tend(&key("c0"), generation, 0, &mut idle, p.now);
    assert_eq!((wake, actions), (Some(p.now + LINGER), vec![]));
    p.advance(LINGER - Duration::from_millis(1));
    let (_, actions) = p.state.tend(&key("c0"), generation, 0, &mut idle, p.now);
    assert!(actions.is_empty());
    p.advance(Duration::from_millis(1));
    let (wake, actions) = p.state.tend(&key("c0"), generation, 0, &mut idle, p.now);
    assert_eq!(wake, None);
    assert_eq!(
        actions,
        vec![
            Action::Send { link: l1, msg: Control::Unsubscribe { id: 1 } },
            Action::End { track: key("c0"), failure: None }
        ]
    );
    assert!(p.state.links[&l1].subs.is_empty());
}

/// PTZ commands and a link loss race: the command waiting on the lost link
/// gets a clean `unavailable` naming camera, link and operation; its answer,
/// arriving late on a new session with the same id, is dropped; a command
/// whose viewer gave up is forgotten and its late answer dropped too.
#[test]
fn ptz_answers_racing_a_link_loss() {
    let mut p = Pair::new();
    let l1 = p.connect("master", Agent { answers_ptz: false, ..Agent::with(&["dome"]) });
    let plan = p.state.plan_ptz("dome", "anna", PtzCommand::Stop, p.now).unwrap();
    assert_eq!(plan.link, l1);
    p.state.ptz_sent(&plan);
    p.take(vec![Action::Send { link: plan.link, msg: plan.msg.clone() }]);
    p.deliver();
    assert!(p.drain().iter().all(|a| !matches!(a, Action::PtzAnswer { .. })), "a silent agent");

    p.cut(l1);
    let answers: Vec<Action> =
        p.drain().into_iter().filter(|a| matches!(a, Action::PtzAnswer { .. })).collect();
    let [Action::PtzAnswer { link, id, reply: PtzReply::Refused { code, reason, .. } }] = &answers[..] else {
        panic!("{answers:?}")
    };
    assert_eq!((*link, *id, *code), (l1, plan.id, PtzErrorCode::Unavailable));
    assert_eq!(
        reason,
        "camera `dome`: the link to `master` went down before it answered the PTZ `stop`; retry in a moment"
    );
    let refused = p.state.plan_ptz("dome", "anna", PtzCommand::Stop, p.now).unwrap_err();
    assert!(
        matches!(&refused, PtzReply::Refused { code: PtzErrorCode::Unavailable, reason, .. } if reason.contains("link to its agent is down"))
    );

    let l2 = p.connect("master", Agent::with(&["dome"]));
    p.drain();
    let late = Control::PtzResult { id: plan.id, reply: PtzReply::refused(PtzErrorCode::Locked, "late") };
    p.from(l2, late.clone());
    assert!(p.drain().is_empty(), "an answer to a command of the old session is dropped");

    // A viewer gives up (its wait timed out): the answer finds nobody.
    let plan = p.state.plan_ptz("dome", "anna", PtzCommand::Stop, p.now).unwrap();
    let notices = p.state.ptz_sent(&plan);
    p.state.forget_ptz(plan.link, plan.id);
    assert!(p.state.links[&l2].ptz_pending.is_empty());
    p.from(l2, Control::PtzResult { id: plan.id, reply: PtzReply::refused(PtzErrorCode::Locked, "late") });
    assert!(p.drain().is_empty());

    // Answered in time: the reply's holder is learnt, unless a notice overtook it.
    let plan = p.state.plan_ptz("dome", "anna", PtzCommand::Stop, p.now).unwrap();
    let sent = p.state.ptz_sent(&plan);
    assert_eq!(sent, notices, "no notice meanwhile");
    p.take(vec![Action::Send { link: plan.link, msg: plan.msg.clone() }]);
    p.deliver();
    let answers: Vec<Action> =
        p.drain().into_iter().filter(|a| matches!(a, Action::PtzAnswer { .. })).collect();
    let [Action::PtzAnswer { reply, .. }] = &answers[..] else { panic!("no answer: {answers:?}") };
    p.state.ptz_answered("dome", reply, sent, p.now);
    assert_eq!(p.state.ptz_holder("dome", p.now).unwrap().controller.viewer, "anna");
    p.advance(Duration::from_millis(9_000));
    assert!(p.state.ptz_holder("dome", p.now).is_none(), "the lock lapsed");
}

/// A second link offering a camera id the first already offers: the entry,
/// subscriptions and lock notices belong to the site first in
/// `relay.upstreams`, whichever came first; the shadow's zone never shows.
#[test]
fn a_duplicate_camera_id_from_a_second_link_is_ignored() {
    let mut p = Pair::new();
    let mut shadow = entry("c0", true);
    shadow.zone = "widened".into();
    let shard = p.connect("shard", Agent { catalog: vec![shadow, entry("c9", true)], ..Agent::with(&[]) });
    assert_eq!(p.state.catalog(p.now)[0].zone, "widened", "alone, the shard's entry counts");
    let master = p
        .connect("master", Agent { catalog: vec![entry("c0", true), entry("c0", true)], ..Agent::with(&[]) });
    assert_eq!(p.state.links[&master].catalog.len(), 1, "an id listed twice in a catalog: the first counts");
    let catalog = p.state.catalog(p.now);
    assert_eq!(
        catalog.iter().map(|c| (c.id.as_str(), c.zone.as_str())).collect::<Vec<_>>(),
        [("c0", "z"), ("c9", "z")]
    );
    assert_eq!(p.state.carrier("c0"), Some(master));
    assert_eq!(p.state.carrier("c9"), Some(shard));

    p.subscribe("c0").unwrap();
    assert_eq!(p.sent_to(shard), vec![], "the shard is never asked for c0");
    assert_eq!(p.sent_to(master).len(), 1);
    p.deliver();
    p.from(shard, Control::PtzLock { camera: "c0".into(), holder: Some(holder("mallory", 9_000)) });
    assert!(p.state.ptz_holder("c0", p.now).is_none(), "a lock notice from a link that does not carry c0");
    p.from(master, Control::PtzLock { camera: "c0".into(), holder: Some(holder("anna", 9_000)) });
    assert_eq!(p.state.ptz_holder("c0", p.now).unwrap().controller.viewer, "anna");
    // A PTZ command for c0 goes up the master's link only.
    assert_eq!(p.state.plan_ptz("c0", "anna", PtzCommand::Stop, p.now).unwrap().link, master);
    p.state.check();
}

/// A re-subscription that cannot be sent (the link's queue is full) leaves
/// the track orphaned since the link loss, not since the failed send: a
/// congested link does not stretch the grace.
#[test]
fn an_unsent_adoption_keeps_the_grace_of_the_link_loss() {
    let mut p = Pair::new();
    let l1 = p.connect("master", Agent::with(&["c0"]));
    let generation = p.subscribe("c0").unwrap();
    p.deliver();
    let lost_at = p.now;
    p.cut(l1);
    p.advance(Duration::from_secs(20));
    let l2 = p.connect("master", Agent::with(&["c0"]));
    let (_, msg) = p.wire.pop_back().expect("a re-subscription");
    let actions = p.state.unsent(l2, &msg, p.now);
    assert_eq!(actions, vec![Action::Orphaned { track: key("c0") }]);
    assert_eq!(p.state.tracks[&key("c0")].orphaned, Some(lost_at));
    p.state.check();
    p.now = lost_at + GRACE;
    // The link still cannot take it: the grace of the first loss ends it.
    let mut idle = None;
    let (wake, actions) = p.state.tend(&key("c0"), generation, 1, &mut idle, p.now);
    assert_eq!((wake, actions), (None, vec![Action::End { track: key("c0"), failure: None }]));
}

#[test]
fn the_upstream_hears_who_watches_once_per_change_and_again_after_an_adoption() {
    let mut p = Pair::new();
    let l1 = p.connect("master", Agent::with(&["c0"]));
    let generation = p.subscribe("c0").unwrap();
    let names = |list: &[&str]| list.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>();
    assert!(
        p.state.viewers(&key("c0"), generation, names(&["op"]), 0).is_empty(),
        "not before its SubscribeOk"
    );
    p.deliver();
    let told = p.state.viewers(&key("c0"), generation, names(&["op"]), 0);
    let [Action::Send { link, msg: Control::Viewers { viewers, more: 0, .. } }] = &told[..] else {
        panic!("{told:?}")
    };
    assert_eq!((*link, viewers.as_slice()), (l1, &names(&["op"])[..]));
    assert!(p.state.viewers(&key("c0"), generation, names(&["op"]), 0).is_empty(), "unchanged");
    assert!(p.state.viewers(&key("c0"), generation + 1, names(&["x"]), 0).is_empty(), "another generation");
    assert_eq!(p.state.viewers(&key("c0"), generation, names(&[]), 0).len(), 1, "everyone left");

    // A new feed has heard nobody: the list goes to it again.
    p.state.viewers(&key("c0"), generation, names(&["op"]), 0);
    p.cut(l1);
    let l2 = p.connect("master", Agent::with(&["c0"]));
    p.deliver();
    let told = p.state.viewers(&key("c0"), generation, names(&["op"]), 0);
    assert!(
        matches!(&told[..], [Action::Send { link, msg: Control::Viewers { .. } }] if *link == l2),
        "{told:?}"
    );
    // A list that could not be queued is said again.
    let Action::Send { link, msg } = &told[0] else { panic!() };
    p.state.unsent(*link, msg, p.now);
    assert_eq!(p.state.viewers(&key("c0"), generation, names(&["op"]), 0).len(), 1);
}

/// A relay fed by two agents of the master room (issue 22).
fn two_agents() -> Pair {
    let mut p = Pair::new();
    p.state = UpstreamState::new("questura", vec!["master-a".into(), "master-b".into()], LINGER, GRACE);
    p
}

/// The cameras spread over both agents by the rendezvous choice; a lost
/// agent's tracks move to the other at once; when it returns it takes its
/// own back.
#[test]
fn two_agents_spread_the_cameras_fail_over_and_take_them_back() {
    let mut p = two_agents();
    let cams: Vec<String> = (0..12).map(|i| format!("c{i}")).collect();
    let names: Vec<&str> = cams.iter().map(String::as_str).collect();
    let a = p.connect("master-a", Agent::with(&names));
    let b = p.connect("master-b", Agent::with(&names));
    for c in &names {
        p.subscribe(c).unwrap();
    }
    p.deliver();
    let fed_by =
        |p: &Pair, l: LinkId| p.state.tracks.values().filter(|t| t.feed.is_some_and(|f| f.0 == l)).count();
    let on_a = fed_by(&p, a);
    assert!(on_a > 0 && on_a < 12, "{on_a} of 12 cameras on master-a");
    for c in &names {
        let want = ponte_proto::redundancy::primary(c, ["master-a", "master-b"]).unwrap();
        let link = if want == "master-a" { a } else { b };
        assert_eq!(p.state.carrier(c), Some(link), "{c} goes to its primary {want}");
    }
    assert!(p.state.redundancy_problems().is_empty());

    // master-a dies: its tracks are subscribed on master-b at once.
    p.cut(a);
    let moved = p.drain();
    assert_eq!(moved.iter().filter(|x| matches!(x, Action::Adopted { .. })).count(), on_a, "{moved:?}");
    p.deliver();
    assert_eq!(fed_by(&p, b), 12);
    let problems = p.state.redundancy_problems();
    assert!(problems.len() == 1 && problems[0].contains("`master-a`"), "{problems:?}");
    p.state.check();

    // master-a returns: its cameras move back, each unsubscribed on master-b.
    let a2 = p.connect("master-a", Agent::with(&names));
    let unsubscribed = p.sent_to(b).iter().filter(|m| matches!(m, Control::Unsubscribe { .. })).count();
    assert_eq!(unsubscribed, on_a);
    p.deliver();
    assert_eq!(fed_by(&p, a2), on_a);
    assert!(p.state.redundancy_problems().is_empty());
    p.state.check();
}

/// Two agents with different policies: the relay shows both digests and
/// serves only what both grant.
#[test]
fn two_agents_that_disagree_on_the_policy_serve_only_the_stricter_grant() {
    let mut p = two_agents();
    let a = p.connect("master-a", Agent::with(&["c0", "c1", "c2"]));
    // master-b lists c0 without its sub stream, and not c2 (a shard).
    let mut b_agent = Agent::with(&["c0", "c1"]);
    b_agent.catalog[0].qualities = vec![Quality::Main];
    let b = p.connect("master-b", b_agent);
    p.state.set_policy(a, Some("aaaa".into()));
    p.state.set_policy(b, Some("aaaa".into()));
    assert_eq!(p.state.catalog(p.now).len(), 3, "agreeing digests: each camera from the agent that lists it");
    p.from(b, Control::Policy { digest: "bbbb".into() });
    assert!(p.drain().contains(&Action::CatalogChanged));
    let problems = p.state.redundancy_problems().join(" ");
    assert!(problems.contains("aaaa") && problems.contains("bbbb"), "{problems}");
    let catalog = p.state.catalog(p.now);
    let c0 = catalog.iter().find(|c| c.id == "c0").expect("c0");
    assert_eq!(c0.qualities, [Quality::Main], "only the quality both grant");
    assert!(catalog.iter().any(|c| c.id == "c2"), "a camera only one agent lists is its grant alone");
    let sub = TrackKey { camera: "c0".into(), quality: Quality::Sub };
    let refused = p.state.plan_subscribe(&sub, None, p.now).unwrap_err();
    assert_eq!(refused.code, SubscribeErrorCode::Forbidden, "{refused:?}");
    assert!(refused.reason.contains("different policies"), "{}", refused.reason);
    assert!(p.subscribe("c0").is_ok());
}

/// A dual-path camera from one agent on two links (two fibre paths): the
/// relay subscribes it on both; a cut path promotes the copy without a
/// re-subscription; the returning path gets a copy again.
#[test]
fn a_dual_path_camera_is_fed_on_both_paths_and_a_cut_one_costs_no_resubscription() {
    let mut p = Pair::new();
    let agent = || {
        let mut a = Agent::with(&["c0", "c1"]);
        a.catalog[0].dual_path = true;
        a
    };
    let l1 = p.connect("master", agent());
    let l2 = p.connect("master", agent());
    p.subscribe("c0").unwrap();
    let twins = p.state.twins();
    p.take(twins);
    p.subscribe("c1").unwrap();
    let twins = p.state.twins();
    assert!(twins.is_empty(), "c1 is not dual-path: {twins:?}");
    let t = p.state.tracks[&key("c0")].clone();
    let (feed, twin) = (t.feed.unwrap(), t.twin.unwrap());
    assert_ne!(feed.0, twin.0, "the copy goes on the other link");
    assert!([l1, l2].contains(&twin.0));
    p.deliver();
    p.state.check();

    p.cut(feed.0);
    let cut = p.drain();
    assert!(cut.contains(&Action::Promoted { track: key("c0"), link: twin.0 }), "{cut:?}");
    assert!(!cut.contains(&Action::Orphaned { track: key("c0") }), "no gap for a dual-path camera");
    let t = &p.state.tracks[&key("c0")];
    assert_eq!((t.feed, t.twin), (Some(twin), None));
    assert!(
        !p.sent_to(twin.0).iter().any(|m| matches!(m, Control::Subscribe { camera, .. } if camera == "c0")),
        "no re-subscription"
    );
    p.state.check();

    // The path comes back: a copy on it again.
    let l3 = p.connect("master", agent());
    p.deliver();
    assert_eq!(p.state.tracks[&key("c0")].twin.map(|t| t.0), Some(l3));
    p.state.check();
    // The copy refused upstream: the feed goes on alone.
    let (l, sub) = p.state.tracks[&key("c0")].twin.unwrap();
    p.from(l, Control::SubscribeError { id: sub, code: SubscribeErrorCode::Offline, reason: "x".into() });
    assert_eq!(p.state.tracks[&key("c0")].twin, None);
    assert_eq!(p.state.tracks[&key("c0")].feed, Some(twin));
    p.state.check();
}
