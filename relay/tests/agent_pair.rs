//! The relay's upstream table ([`UpstreamState`]) and the agent's session
//! ([`SessionState`]) wired together in memory, both the real state
//! machines, on a simulated clock and with no socket: quinn-proto's `Pair`.
//! What the end-to-end tests show over QUIC and namespaces in seconds, here
//! in milliseconds and without a race: a viewer's subscription across both,
//! a policy reload that withdraws a camera, an agent restart during a fibre
//! cut, and a master that does not come back within the grace.

// A test: helpers outside `#[test]` functions may panic too.
#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use ponte_agent::access::Access;
use ponte_agent::config::AgentConfig;
use ponte_agent::sources::cameras::catalog_of;
use ponte_agent::uplink::state::{Action as AgentAction, SessionState};
use ponte_proto::audit::AuditRecord;
use ponte_proto::hub::TrackKey;
use ponte_proto::media::Quality;
use ponte_proto::wire::{CatalogEntry, Control};
use ponte_relay::upstream::state::{Action, LinkId, TrackState, UpstreamState};
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

const SITE: &str = "questura";
const GRACE: Duration = Duration::from_secs(30);
const LINGER: Duration = Duration::from_millis(300);

/// The master room's config: two cameras in the Questura's zone, the
/// Questura's policy allowing the zone and denying `deny`.
fn config(deny: &str) -> AgentConfig {
    let text = format!(
        r#"
[agent]
id = "master"
[tls]
ca = "ca.pem"
cert = "master.pem"
key = "master.key"
[[relay]]
site = "{SITE}"
addr = "127.0.0.1:7443"
[[site]]
id = "{SITE}"
allow = ["zone:Giuseppina"]
deny = [{deny}]
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
"#
    );
    AgentConfig::from_toml(&text).unwrap_or_else(|e| panic!("{e:#}\n{text}"))
}

/// The agent's side of one session: its state machine, and what its shell
/// would have done (pumps running, audit lines written).
struct Master {
    session: SessionState,
    catalog: Vec<CatalogEntry>,
    pumps: Vec<u64>,
    audit: Vec<AuditRecord>,
}

impl Master {
    fn start(cfg: &AgentConfig) -> Master {
        let access = Arc::new(Access::new(cfg).unwrap_or_else(|e| panic!("{e:#}")));
        Master {
            session: SessionState::new(SITE, access, cfg.agent.max_subscriptions_per_session),
            catalog: catalog_of(&cfg.devices),
            pumps: vec![],
            audit: vec![],
        }
    }
}

/// Both state machines and the control stream between them.
struct Pair {
    relay: UpstreamState,
    now: Instant,
    /// The policy's wall clock at the agent.
    wall: jiff::Timestamp,
    master: Option<Master>,
    link: Option<LinkId>,
    to_agent: VecDeque<Control>,
    to_relay: VecDeque<Control>,
    /// Every action of the relay's table, in order.
    actions: Vec<Action>,
}

impl Pair {
    fn new() -> Pair {
        Pair {
            relay: UpstreamState::new(SITE, vec!["master".into()], LINGER, GRACE),
            now: Instant::now(),
            // A Wednesday, 10:00 UTC: inside any time window.
            wall: "2026-12-02T10:00:00Z".parse().unwrap_or_else(|e| panic!("{e}")),
            master: None,
            link: None,
            to_agent: VecDeque::new(),
            to_relay: VecDeque::new(),
            actions: Vec::new(),
        }
    }

    fn master(&mut self) -> &mut Master {
        self.master.as_mut().unwrap_or_else(|| panic!("the agent is not up"))
    }

    fn advance(&mut self, by: Duration) {
        self.now += by;
        self.wall = self.wall.checked_add(by).unwrap_or_else(|e| panic!("{e}"));
    }

    /// The agent (re)starts with `cfg` and its session reaches the relay.
    fn connect(&mut self, cfg: &AgentConfig) {
        self.master = Some(Master::start(cfg));
        self.link = Some(self.relay.link_up("master"));
        let catalog = self.master().catalog.clone();
        let actions = self.master().session.send_catalog(&catalog);
        self.agent_does(actions);
        self.deliver();
    }

    /// What the agent's shell does with its state machine's actions: the
    /// cameras are online, so an open succeeds at once.
    fn agent_does(&mut self, actions: Vec<AgentAction>) {
        let mut queue: VecDeque<AgentAction> = actions.into();
        while let Some(action) = queue.pop_front() {
            let m = self.master.as_mut().unwrap_or_else(|| panic!("the agent is not up"));
            match action {
                AgentAction::Send(msg) => self.to_relay.push_back(msg),
                AgentAction::OpenCamera { id, .. } => queue.extend(m.session.camera_opened(id, true)),
                AgentAction::StartPump { id, .. } => m.pumps.push(id),
                AgentAction::StopPump { id } => m.pumps.retain(|p| *p != id),
                AgentAction::Audit(record) => m.audit.push(*record),
                _ => {}
            }
        }
    }

    /// What the relay's shell does with its table's actions: messages for
    /// the live link go on the wire, the rest is kept to look at.
    fn relay_does(&mut self, actions: Vec<Action>) {
        for a in actions {
            if let Action::Send { link, msg } = &a {
                if Some(*link) == self.link {
                    self.to_agent.push_back(msg.clone());
                }
            }
            self.actions.push(a);
        }
    }

    /// Delivers both ways until the control stream is quiet.
    fn deliver(&mut self) {
        loop {
            if let Some(msg) = self.to_agent.pop_front() {
                let (catalog, wall) = (self.master().catalog.clone(), self.wall);
                let actions =
                    self.master().session.handle(msg, &catalog, wall).unwrap_or_else(|e| panic!("{e}"));
                self.agent_does(actions);
            } else if let Some(msg) = self.to_relay.pop_front() {
                let link = self.link.unwrap_or_else(|| panic!("no link"));
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
        let plan =
            self.relay.plan_subscribe(&key(camera), self.now).unwrap_or_else(|e| panic!("{}", e.reason));
        let generation = self.relay.subscribed(&key(camera), &plan);
        self.relay_does(vec![Action::Send { link: plan.link, msg: plan.msg }]);
        self.deliver();
        generation
    }

    /// The fibre is cut: what was on the wire is lost, the agent's session ends.
    fn cut(&mut self) {
        self.to_agent.clear();
        self.to_relay.clear();
        if let Some(link) = self.link.take() {
            let actions = self.relay.link_down(link, self.now);
            self.relay_does(actions);
        }
        if let Some(mut m) = self.master.take() {
            let ended = m.session.end();
            self.master = Some(m);
            self.agent_does(ended);
        }
    }

    /// The agent reloads its config (SIGHUP) with `cfg`.
    fn reload(&mut self, cfg: &AgentConfig) {
        let access = Arc::new(Access::new(cfg).unwrap_or_else(|e| panic!("{e:#}")));
        let (catalog, wall) = (catalog_of(&cfg.devices), self.wall);
        self.master().catalog = catalog.clone();
        let actions = self.master().session.policy_reloaded(access, &catalog, wall);
        self.agent_does(actions);
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

    fn audited(&self, action: &str, outcome: &str) -> Vec<&AuditRecord> {
        let m = self.master.as_ref().unwrap_or_else(|| panic!("the agent is not up"));
        m.audit.iter().filter(|r| r.action == action && r.outcome == outcome).collect()
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

#[test]
fn a_viewer_gets_a_camera_through_both_state_machines() {
    let mut p = Pair::new();
    p.connect(&config(""));
    assert_eq!(ids(&p.relay.catalog(p.now)), ["duomo", "piazza"], "the policy's catalog reached the relay");
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
    assert_eq!(ids(&p.relay.catalog(p.now)), ["duomo"], "the relay's catalog follows the policy");
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
