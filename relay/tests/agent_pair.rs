//! The relay's upstream table ([`UpstreamState`]) and the agent's session
//! ([`SessionState`]) wired together in memory, both the real state
//! machines, on a simulated clock and with no socket: quinn-proto's `Pair`.
//! What the end-to-end tests show over QUIC and namespaces in seconds, here
//! in milliseconds and without a race: a viewer's subscription across both,
//! a policy reload that withdraws a camera, an agent restart during a fibre
//! cut, a master that does not come back within the grace, PTZ answers
//! racing a link loss, and a camera id offered by two agents.

// A test: helpers outside `#[test]` functions may panic too.
#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use ponte_agent::access::Access;
use ponte_agent::config::AgentConfig;
use ponte_agent::sources::cameras::catalog_of;
use ponte_agent::uplink::state::{Action as AgentAction, SessionState};
use ponte_proto::audit::AuditRecord;
use ponte_proto::hub::TrackKey;
use ponte_proto::media::Quality;
use ponte_proto::ptz::{Controller, PtzCommand, PtzErrorCode, PtzHolder, PtzReply};
use ponte_proto::wire::{CatalogEntry, Control};
use ponte_relay::upstream::state::{Action, LinkId, PlannedPtz, TrackState, UpstreamState};
use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

const SITE: &str = "questura";
const GRACE: Duration = Duration::from_secs(30);
const LINGER: Duration = Duration::from_millis(300);

/// A master room's config (agent `id`): `devices` (`[[device]]` tables) and
/// the Questura's policy allowing the zone `Giuseppina` with PTZ, denying `deny`.
fn config_of(id: &str, deny: &str, devices: &str) -> AgentConfig {
    let text = format!(
        r#"
[agent]
id = "{id}"
[tls]
ca = "ca.pem"
cert = "{id}.pem"
key = "{id}.key"
[[relay]]
site = "{SITE}"
addr = "127.0.0.1:7443"
[[site]]
id = "{SITE}"
allow = ["zone:Giuseppina"]
deny = [{deny}]
ptz = true
{devices}
"#
    );
    AgentConfig::from_toml(&text).unwrap_or_else(|e| panic!("{e:#}\n{text}"))
}

/// The master room: two fixed cameras and a dome in the Questura's zone.
fn config(deny: &str) -> AgentConfig {
    config_of(
        "master",
        deny,
        r#"
[[device]]
id = "piazza"
name = "piazza del Comune"
zone = "Giuseppina"
type = "fixed"
tags = ["piazza"]
source = "synthetic"
[[device]]
id = "duomo"
name = "duomo"
zone = "Giuseppina"
type = "fixed"
source = "synthetic"
[[device]]
id = "torrazzo"
name = "Torrazzo"
zone = "Giuseppina"
type = "dome-ptz"
source = "synthetic"
"#,
    )
}

/// The agent's side of one session: its state machine, and what its shell
/// would have done (pumps running, audit lines written, PTZ commands handed
/// to the PTZ service and not answered yet).
struct Master {
    session: SessionState,
    catalog: Vec<CatalogEntry>,
    pumps: Vec<u64>,
    audit: Vec<AuditRecord>,
    ptz: Vec<u64>,
}

impl Master {
    fn start(cfg: &AgentConfig) -> Master {
        let access = Arc::new(Access::new(cfg).unwrap_or_else(|e| panic!("{e:#}")));
        Master {
            session: SessionState::new(SITE, access, cfg.agent.max_subscriptions_per_session),
            catalog: catalog_of(&cfg.devices),
            pumps: vec![],
            audit: vec![],
            ptz: vec![],
        }
    }
}

/// Both state machines and the control streams between them: one session
/// per link, each an agent process's session with the relay.
struct Pair {
    relay: UpstreamState,
    now: Instant,
    /// The policy's wall clock at the agents.
    wall: jiff::Timestamp,
    /// Live sessions by the relay's link id.
    masters: BTreeMap<LinkId, Master>,
    /// Sessions whose link went down: their shell may still answer late.
    ended: BTreeMap<LinkId, Master>,
    /// The link of the peer each test talks about (the last `connect`).
    link: Option<LinkId>,
    to_agent: VecDeque<(LinkId, Control)>,
    to_relay: VecDeque<(LinkId, Control)>,
    /// Every action of the relay's table, in order.
    actions: Vec<Action>,
}

impl Pair {
    fn new() -> Pair {
        Pair {
            relay: UpstreamState::new(SITE, vec!["master".into(), "shard".into()], LINGER, GRACE),
            now: Instant::now(),
            // A Wednesday, 10:00 UTC: inside any time window.
            wall: "2026-12-02T10:00:00Z".parse().unwrap_or_else(|e| panic!("{e}")),
            masters: BTreeMap::new(),
            ended: BTreeMap::new(),
            link: None,
            to_agent: VecDeque::new(),
            to_relay: VecDeque::new(),
            actions: Vec::new(),
        }
    }

    /// The session on the current link.
    fn master(&mut self) -> &mut Master {
        let link = self.link.unwrap_or_else(|| panic!("no link"));
        self.masters.get_mut(&link).unwrap_or_else(|| panic!("the agent is not up"))
    }

    fn advance(&mut self, by: Duration) {
        self.now += by;
        self.wall = self.wall.checked_add(by).unwrap_or_else(|e| panic!("{e}"));
    }

    /// The agent (re)starts with `cfg` and its session reaches the relay.
    fn connect(&mut self, cfg: &AgentConfig) -> LinkId {
        let link = self.relay.link_up(&cfg.agent.id);
        self.masters.insert(link, Master::start(cfg));
        self.link = Some(link);
        let catalog = self.master().catalog.clone();
        let actions = self.master().session.send_catalog(&catalog);
        self.agent_does(link, actions);
        self.deliver();
        link
    }

    /// What the agent's shell does with its state machine's actions: the
    /// cameras are online, so an open succeeds at once; PTZ commands wait
    /// for [`Pair::ptz_done`].
    fn agent_does(&mut self, link: LinkId, actions: Vec<AgentAction>) {
        let mut queue: VecDeque<AgentAction> = actions.into();
        while let Some(action) = queue.pop_front() {
            let Some(m) = self.masters.get_mut(&link).or_else(|| self.ended.get_mut(&link)) else {
                panic!("no session on link {link}")
            };
            match action {
                AgentAction::Send(msg) => self.to_relay.push_back((link, msg)),
                AgentAction::OpenCamera { id, .. } => queue.extend(m.session.camera_opened(id, true)),
                AgentAction::StartPump { id, .. } => m.pumps.push(id),
                AgentAction::StopPump { id } => m.pumps.retain(|p| *p != id),
                AgentAction::Audit(record) => m.audit.push(*record),
                AgentAction::Ptz { id, .. } => m.ptz.push(id),
                _ => {}
            }
        }
    }

    /// What the relay's shell does with its table's actions: messages for
    /// a live link go on the wire, the rest is kept to look at.
    fn relay_does(&mut self, actions: Vec<Action>) {
        for a in actions {
            if let Action::Send { link, msg } = &a {
                if self.masters.contains_key(link) {
                    self.to_agent.push_back((*link, msg.clone()));
                }
            }
            self.actions.push(a);
        }
    }

    /// Delivers both ways until the control streams are quiet. A message to
    /// or from a link that went down is lost with it, as on QUIC.
    fn deliver(&mut self) {
        loop {
            if let Some((link, msg)) = self.to_agent.pop_front() {
                let Some(m) = self.masters.get_mut(&link) else { continue };
                let catalog = m.catalog.clone();
                let actions = m.session.handle(msg, &catalog, self.wall).unwrap_or_else(|e| panic!("{e}"));
                self.agent_does(link, actions);
            } else if let Some((link, msg)) = self.to_relay.pop_front() {
                if !self.masters.contains_key(&link) {
                    continue;
                }
                let actions =
                    self.relay.on_control(link, msg, self.now).unwrap_or_else(|e| panic!("{}", e.0));
                self.relay_does(actions);
            } else {
                return;
            }
        }
    }

    /// A first viewer at the relay asks for `camera`: the track's generation.
    fn watch(&mut self, camera: &str) -> u64 {
        let plan = self
            .relay
            .plan_subscribe(&key(camera), None, self.now)
            .unwrap_or_else(|e| panic!("{}", e.reason));
        let generation = self.relay.subscribed(&key(camera), &plan);
        self.relay_does(vec![Action::Send { link: plan.link, msg: plan.msg }]);
        self.deliver();
        generation
    }

    /// Operator `viewer` at the relay steers `camera`: the command goes up
    /// (the agent's PTZ service has it, unanswered). The notices count.
    fn steer(&mut self, camera: &str, viewer: &str) -> (PlannedPtz, u64) {
        let plan = self
            .relay
            .plan_ptz(camera, viewer, PtzCommand::Stop, self.now)
            .unwrap_or_else(|e| panic!("{e:?}"));
        let notices = self.relay.ptz_sent(&plan);
        self.relay_does(vec![Action::Send { link: plan.link, msg: plan.msg.clone() }]);
        self.deliver();
        (plan, notices)
    }

    /// The PTZ service of the session on `link` (live or ended) answers
    /// command `id` with `reply`.
    fn ptz_done(&mut self, link: LinkId, id: u64, reply: PtzReply) {
        let m = self.masters.get_mut(&link).or_else(|| self.ended.get_mut(&link));
        let m = m.unwrap_or_else(|| panic!("no session on link {link}"));
        assert!(m.ptz.contains(&id), "the agent was handed command {id}: {:?}", m.ptz);
        m.ptz.retain(|p| *p != id);
        let actions = m.session.reply(Control::PtzResult { id, reply });
        self.agent_does(link, actions);
        self.deliver();
    }

    /// The fibre to `link` is cut: what was on the wire is lost, the
    /// agent's session ends (its shell lives on in `ended`).
    fn cut_link(&mut self, link: LinkId) {
        self.to_agent.retain(|(l, _)| *l != link);
        self.to_relay.retain(|(l, _)| *l != link);
        let actions = self.relay.link_down(link, self.now);
        self.relay_does(actions);
        if let Some(mut m) = self.masters.remove(&link) {
            let ended = m.session.end();
            self.ended.insert(link, m);
            self.agent_does(link, ended);
        }
        if self.link == Some(link) {
            self.link = None;
        }
    }

    /// The fibre to the current link is cut.
    fn cut(&mut self) {
        if let Some(link) = self.link {
            self.cut_link(link);
        }
    }

    /// The agent reloads its config (SIGHUP) with `cfg`.
    fn reload(&mut self, cfg: &AgentConfig) {
        let link = self.link.unwrap_or_else(|| panic!("no link"));
        let access = Arc::new(Access::new(cfg).unwrap_or_else(|e| panic!("{e:#}")));
        let (catalog, wall) = (catalog_of(&cfg.devices), self.wall);
        self.master().catalog = catalog.clone();
        let actions = self.master().session.policy_reloaded(access, &catalog, wall);
        self.agent_does(link, actions);
        self.deliver();
    }

    /// The relay's timer for a track fires.
    fn tend(&mut self, camera: &str, generation: u64, viewers: usize) -> Option<Instant> {
        let mut idle = None;
        let (wake, actions) = self.relay.tend(&key(camera), generation, viewers, &mut idle, self.now);
        self.relay_does(actions);
        self.deliver();
        wake
    }

    fn drain(&mut self) -> Vec<Action> {
        std::mem::take(&mut self.actions)
    }

    fn audited(&mut self, action: &str, outcome: &str) -> Vec<AuditRecord> {
        let m = self.master();
        m.audit.iter().filter(|r| r.action == action && r.outcome == outcome).cloned().collect()
    }

    fn ptz_answers(&mut self) -> Vec<(LinkId, u64, PtzReply)> {
        self.drain()
            .into_iter()
            .filter_map(|a| match a {
                Action::PtzAnswer { link, id, reply } => Some((link, id, reply)),
                _ => None,
            })
            .collect()
    }
}

fn key(camera: &str) -> TrackKey {
    TrackKey::new(camera, Quality::Main)
}

fn ids(catalog: &[CatalogEntry]) -> Vec<&str> {
    let mut ids: Vec<&str> = catalog.iter().map(|c| c.id.as_str()).collect();
    ids.sort_unstable();
    ids
}

/// `viewer` of the Questura holding the lock for 9 s more.
fn holder(viewer: &str) -> PtzHolder {
    PtzHolder {
        controller: Controller { site: SITE.into(), viewer: viewer.into(), priority: 10 },
        expires_in_ms: 9_000,
    }
}

fn done(viewer: &str) -> PtzReply {
    PtzReply::Done { holder: Some(holder(viewer)), presets: vec![], position: None }
}

#[test]
fn a_viewer_gets_a_camera_through_both_state_machines() {
    let mut p = Pair::new();
    p.connect(&config(""));
    assert_eq!(
        ids(&p.relay.catalog(p.now)),
        ["duomo", "piazza", "torrazzo"],
        "the policy's catalog reached the relay"
    );
    p.watch("piazza");
    let actions = p.drain();
    assert!(actions.contains(&Action::Resolve { track: key("piazza"), result: Ok(()) }), "{actions:?}");
    assert_eq!(p.relay.track_state(&key("piazza"), p.now), Some(TrackState::Live));
    assert_eq!(p.master().pumps.len(), 1, "the agent pumps it");
    assert_eq!(p.audited("subscribe", "allowed").len(), 1);
}

#[test]
fn a_reload_that_withdraws_a_camera_revokes_it_at_the_relay() {
    let mut p = Pair::new();
    p.connect(&config(""));
    p.watch("piazza");
    p.watch("duomo");
    p.drain();
    // The master room denies the piazza camera to the Questura and reloads.
    p.reload(&config(r#""tag:piazza""#));
    let actions = p.drain();
    let revoked: Vec<&Action> = actions.iter().filter(|a| matches!(a, Action::Revoke { .. })).collect();
    assert!(
        matches!(&revoked[..], [Action::Revoke { track, why }] if *track == key("piazza") && why.contains("withdrew")),
        "{actions:?}"
    );
    assert_eq!(ids(&p.relay.catalog(p.now)), ["duomo", "torrazzo"], "the relay's catalog follows the policy");
    assert_eq!(
        p.relay.track_state(&key("duomo"), p.now),
        Some(TrackState::Live),
        "the other camera is untouched"
    );
    assert_eq!(p.master().pumps.len(), 1, "the agent stopped the revoked camera's pump");
    assert_eq!(p.audited("revoked", "ended").len(), 1, "the agent audits the revocation");
}

#[test]
fn an_agent_restart_during_a_fibre_cut_is_adopted_by_the_relay() {
    let mut p = Pair::new();
    p.connect(&config(""));
    let generation = p.watch("piazza");
    p.drain();
    p.cut();
    assert!(p.drain().contains(&Action::Orphaned { track: key("piazza") }), "the viewers are kept");
    p.advance(Duration::from_secs(5));
    assert!(matches!(
        p.relay.track_state(&key("piazza"), p.now),
        Some(TrackState::UpstreamLost { since_secs: 5, .. })
    ));
    // A new agent process (a new session state) comes back on a new link.
    p.connect(&config(""));
    let actions = p.drain();
    assert!(actions.contains(&Action::Adopted { track: key("piazza") }), "{actions:?}");
    assert_eq!(p.relay.track_state(&key("piazza"), p.now), Some(TrackState::Live));
    assert_eq!(p.master().pumps.len(), 1, "the restarted agent serves the re-subscription");
    assert!(p.tend("piazza", generation, 1).is_some(), "the track lives on");
}

#[test]
fn the_grace_runs_out_when_the_master_does_not_come_back() {
    let mut p = Pair::new();
    p.connect(&config(""));
    let generation = p.watch("piazza");
    p.cut();
    p.drain();
    p.advance(GRACE + Duration::from_secs(1));
    assert_eq!(p.tend("piazza", generation, 1), None, "the track is gone");
    let actions = p.drain();
    assert!(
        actions.iter().any(|a| matches!(a, Action::End { track, .. } if *track == key("piazza"))),
        "{actions:?}"
    );
    let expired = p.relay.expire_lost(p.now);
    p.relay_does(expired);
    assert!(p.relay.catalog(p.now).is_empty(), "the lost catalog expired with the grace");
}

/// A PTZ command and a fibre cut race. The command was handed to the
/// agent's PTZ service when the link went down: the operator gets a clean
/// `unavailable` from the relay at once, and the service's late answer dies
/// with the old session instead of reaching the new one. On the new link the
/// next command is answered and its holder learnt.
#[test]
fn ptz_answers_racing_a_link_loss_across_both() {
    let mut p = Pair::new();
    let l1 = p.connect(&config(""));
    let (plan, _) = p.steer("torrazzo", "anna");
    assert_eq!(p.master().ptz, [plan.id], "the agent's PTZ service has the command");
    assert!(p.ptz_answers().is_empty(), "not answered yet");

    p.cut();
    let answers = p.ptz_answers();
    let [(link, id, PtzReply::Refused { code: PtzErrorCode::Unavailable, reason, .. })] = &answers[..] else {
        panic!("{answers:?}")
    };
    assert_eq!((*link, *id), (l1, plan.id));
    assert!(reason.contains("`torrazzo`") && reason.contains("`master`"), "{reason}");

    // The agent comes back; then its PTZ service finishes the old command.
    let l2 = p.connect(&config(""));
    p.ptz_done(l1, plan.id, done("anna"));
    assert!(p.ptz_answers().is_empty(), "the old session's answer went down with its link");
    assert!(p.relay.ptz_holder("torrazzo", p.now).is_none(), "nothing learnt from it");

    let (plan, notices) = p.steer("torrazzo", "anna");
    assert_eq!(plan.link, l2);
    p.ptz_done(l2, plan.id, done("anna"));
    let answers = p.ptz_answers();
    let [(_, id, reply @ PtzReply::Done { .. })] = &answers[..] else { panic!("{answers:?}") };
    assert_eq!(*id, plan.id);
    p.relay.ptz_answered("torrazzo", reply, notices, p.now);
    assert_eq!(p.relay.ptz_holder("torrazzo", p.now).map(|h| h.controller.viewer), Some("anna".into()));
}

/// Two agents offer the same camera id (a second master room, `shard`,
/// configured with a copy of `piazza` in another zone). The relay takes the
/// entry of the upstream first in `relay.upstreams`, whichever connected
/// first: the viewer's subscription reaches only the master's session, and
/// the shard's lock notices for the camera are ignored.
#[test]
fn a_duplicate_camera_id_from_a_second_agent_reaches_only_the_first_upstream() {
    let mut p = Pair::new();
    let shard = config_of(
        "shard",
        "",
        r#"
[[device]]
id = "piazza"
name = "piazza del Comune (copia)"
zone = "Giuseppina"
type = "dome-ptz"
source = "synthetic"
[[device]]
id = "stazione"
name = "stazione"
zone = "Giuseppina"
type = "fixed"
source = "synthetic"
"#,
    );
    let l_shard = p.connect(&shard);
    let l_master = p.connect(&config(""));
    let catalog = p.relay.catalog(p.now);
    assert_eq!(ids(&catalog), ["duomo", "piazza", "stazione", "torrazzo"]);
    let piazza = catalog.iter().find(|c| c.id == "piazza").unwrap_or_else(|| panic!("{catalog:?}"));
    assert_eq!(piazza.name, "piazza del Comune", "the master's entry, not the shard's copy");
    assert_eq!(p.relay.carrier("piazza"), Some(l_master));
    assert_eq!(p.relay.carrier("stazione"), Some(l_shard));

    p.watch("piazza");
    assert_eq!(p.masters[&l_master].pumps.len(), 1, "the master serves it");
    assert!(p.masters[&l_shard].pumps.is_empty(), "the shard is never asked");
    assert!(
        p.masters[&l_shard].audit.iter().all(|r| r.action != "subscribe"),
        "nor audits a subscription: {:?}",
        p.masters[&l_shard].audit
    );

    // The shard's room takes its copy's lock: the relay does not believe it.
    let notice = p.masters[&l_shard].session.lock_changed(
        "piazza".into(),
        Some(holder("mallory")),
        &p.masters[&l_shard].catalog,
    );
    assert!(!notice.is_empty(), "the shard's session does send it");
    p.agent_does(l_shard, notice);
    p.deliver();
    assert!(
        p.relay.ptz_holder("piazza", p.now).is_none(),
        "a lock notice from a link that does not carry it"
    );
    p.watch("stazione");
    assert_eq!(p.masters[&l_shard].pumps.len(), 1, "the shard serves its own camera");
}
