//! The relay's upstream table ([`UpstreamState`]) with the shell's
//! bookkeeping around it: random sequences of upstream control messages,
//! links coming and going, viewers subscribing and leaving, PTZ commands and
//! answers, viewer lists, and time passing. The table stays consistent after every step,
//! nothing panics, messages only go to links that are up, and once every
//! link is gone every track ends within the grace.

use crate::class_of;
use ponte_proto::hub::TrackKey;
use ponte_proto::media::{Codec, Quality};
use ponte_proto::ptz::{PtzCommand, PtzErrorCode, PtzReply};
use ponte_proto::wire::{CatalogEntry, Control, StatsReport, SubscribeErrorCode};
use ponte_relay::upstream::state::{Action, LinkId, UpstreamState};
use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

/// No tokens: the input is a script of operations, not a syntax.
pub const DICT: &[&[u8]] = &[];

const CAMERAS: [&str; 3] = ["c0", "c1", "c2"];

/// The relay's upstream table with the shell's bookkeeping around it:
/// each link's outbox (what the scripted upstream reads), viewers per
/// track, each track's generation and idle clock, the lost-catalog wakes.
struct Harness {
    state: UpstreamState,
    now: Instant,
    links: Vec<(LinkId, String, VecDeque<Control>)>,
    viewers: HashMap<TrackKey, usize>,
    tended: HashMap<TrackKey, (u64, Option<Instant>)>,
    wakes: Vec<Instant>,
    ptz_answers: usize,
}

impl Harness {
    fn run(&mut self, actions: Vec<Action>) {
        for action in actions {
            match action {
                Action::Send { link, msg } => {
                    let outbox = self.links.iter_mut().find(|(id, _, _)| *id == link);
                    assert!(outbox.is_some(), "a message for link {link}, which is gone: {msg:?}");
                    if let Some((_, _, out)) = outbox {
                        out.push_back(msg);
                    }
                }
                Action::Resolve { track, result } => {
                    if result.is_ok() {
                        *self.viewers.entry(track).or_default() += 1;
                    }
                }
                Action::End { track, .. } | Action::Revoke { track, .. } => {
                    self.viewers.remove(&track);
                    self.tended.remove(&track);
                }
                Action::PtzAnswer { .. } => self.ptz_answers += 1,
                Action::WakeAt { at } => self.wakes.push(at),
                Action::Orphaned { .. }
                | Action::Adopted { .. }
                | Action::Promoted { .. }
                | Action::Incident { .. }
                | Action::CatalogChanged => {}
            }
        }
    }

    /// What the shell's timers do: tend every track, expire lost catalogs.
    fn tick(&mut self) {
        let keys: Vec<TrackKey> = self.tended.keys().cloned().collect();
        for key in keys {
            let Some((generation, mut idle)) = self.tended.get(&key).copied() else { continue };
            let viewers = self.viewers.get(&key).copied().unwrap_or(0);
            let (wake, mut actions) = self.state.tend(&key, generation, viewers, &mut idle, self.now);
            if let Some(t) = self.tended.get_mut(&key) {
                t.1 = idle;
            }
            if wake.is_none() {
                self.tended.remove(&key);
                self.viewers.remove(&key);
            } else {
                // As the shell's `keep`: who watches, by name.
                let names = (0..viewers.min(3)).map(|i| format!("v{i}")).collect();
                actions.extend(self.state.viewers(&key, generation, names, 0));
            }
            self.run(actions);
        }
        let now = self.now;
        if self.wakes.iter().any(|w| *w <= now) {
            self.wakes.retain(|w| *w > now);
            let actions = self.state.expire_lost(now);
            self.run(actions);
        }
    }
}

/// Plays `data` as operations of three bytes (what, and two arguments)
/// against the table, then takes every link down and lets the grace run out.
pub fn run(data: &[u8]) -> u64 {
    let grace = Duration::from_secs(3);
    let trusted = vec!["master".to_owned(), "shard".to_owned()];
    let mut h = Harness {
        state: UpstreamState::new("site", trusted, Duration::from_millis(300), grace),
        now: Instant::now(),
        links: Vec::new(),
        viewers: HashMap::new(),
        tended: HashMap::new(),
        wakes: Vec::new(),
        ptz_answers: 0,
    };
    // The shape of the state after each step: the outcome class.
    let mut shape: Vec<(usize, usize, usize)> = Vec::new();
    for op in data.chunks(3) {
        let (a, b) = (op.get(1).copied().unwrap_or(0), op.get(2).copied().unwrap_or(0));
        let pick = |n: usize| usize::from(a) % n.max(1);
        let camera = CAMERAS[usize::from(b) % CAMERAS.len()];
        let quality = if b & 0x80 == 0 { Quality::Main } else { Quality::Sub };
        let now = h.now;
        match op[0] % 14 {
            0 if h.links.len() < 3 => {
                let peer = if a & 1 == 0 { "master" } else { "shard" };
                let id = h.state.link_up(peer);
                h.links.push((id, peer.to_owned(), VecDeque::new()));
            }
            1 if !h.links.is_empty() => {
                let (id, _, _) = h.links.remove(pick(h.links.len()));
                let actions = h.state.link_down(id, now);
                h.run(actions);
            }
            2 if !h.links.is_empty() => {
                let id = h.links[pick(h.links.len())].0;
                let cameras = CAMERAS
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| b & (1 << i) != 0)
                    .map(|(i, c)| catalog_entry(c, b & (8 << i) != 0))
                    .collect();
                let actions = h.state.on_control(id, Control::Catalog { cameras }, now);
                h.run(actions.expect("a catalog is fine"));
            }
            3 | 4 if !h.links.is_empty() => {
                let id = h.links[pick(h.links.len())].0;
                let sub = u64::from(b % 8);
                let msg = if op[0] % 14 == 3 {
                    Control::SubscribeOk { id: sub, codec: Codec::H264 }
                } else {
                    let code = [
                        SubscribeErrorCode::Unknown,
                        SubscribeErrorCode::Forbidden,
                        SubscribeErrorCode::Offline,
                        SubscribeErrorCode::OverBudget,
                    ][usize::from(a >> 4) % 4];
                    Control::SubscribeError { id: sub, code, reason: "fuzz".into() }
                };
                let actions = h.state.on_control(id, msg, now);
                h.run(actions.expect("answers are fine"));
            }
            5 if !h.links.is_empty() => {
                let id = h.links[pick(h.links.len())].0;
                let sub = u64::from(b % 8);
                let msg = match a % 5 {
                    0 => Control::Paused { id: sub, reason: "budget".into() },
                    1 => Control::Resumed { id: sub },
                    2 => Control::PtzLock { camera: camera.into(), holder: None },
                    3 => Control::Incident {
                        notice: ponte_proto::incident::Notice::ShareEnded { id: sub, reason: "fuzz".into() },
                    },
                    _ => Control::Stats(StatsReport::default()),
                };
                let actions = h.state.on_control(id, msg, now);
                h.run(actions.expect("notices are fine"));
            }
            6 if !h.links.is_empty() => {
                // Only a subscriber may send these: a protocol error.
                let id = h.links[pick(h.links.len())].0;
                let msg = Control::Subscribe {
                    id: 1,
                    camera: camera.into(),
                    quality,
                    viewer: None,
                    playback: None,
                };
                assert!(h.state.on_control(id, msg, now).is_err());
            }
            7 | 8 => {
                let key = TrackKey::new(camera, quality);
                if h.state.tracks.contains_key(&key) {
                    *h.viewers.entry(key).or_default() += 1;
                } else if let Ok(plan) = h.state.plan_subscribe(&key, None, now) {
                    let generation = h.state.subscribed(&key, &plan);
                    h.tended.insert(key, (generation, None));
                    h.run(vec![Action::Send { link: plan.link, msg: plan.msg }]);
                    // As the shell: a dual-path camera's copy on another path.
                    let twins = h.state.twins();
                    h.run(twins);
                }
            }
            9 if !h.viewers.is_empty() => {
                let mut keys: Vec<TrackKey> = h.viewers.keys().cloned().collect();
                keys.sort_by_key(|k| k.to_string());
                let key = &keys[pick(keys.len())];
                if let Some(n) = h.viewers.get_mut(key) {
                    *n = n.saturating_sub(1);
                }
            }
            10 => {
                // The upstreams answer what they were asked, in order.
                for i in 0..h.links.len() {
                    while let Some(msg) = h.links[i].2.pop_front() {
                        let id = h.links[i].0;
                        let answer = match msg {
                            Control::Subscribe { id: sub, .. } if a & 1 == 0 => {
                                Control::SubscribeOk { id: sub, codec: Codec::H264 }
                            }
                            Control::Subscribe { id: sub, .. } => Control::SubscribeError {
                                id: sub,
                                code: SubscribeErrorCode::Offline,
                                reason: "camera restarting".into(),
                            },
                            Control::Ptz { id: req, .. } => Control::PtzResult {
                                id: req,
                                reply: PtzReply::refused(PtzErrorCode::Locked, "x"),
                            },
                            _ => continue,
                        };
                        let actions = h.state.on_control(id, answer, now);
                        h.run(actions.expect("answers are fine"));
                    }
                }
            }
            11 => {
                if let Ok(plan) = h.state.plan_ptz(camera, "anna", PtzCommand::Stop, now) {
                    h.state.ptz_sent(&plan);
                    h.run(vec![Action::Send { link: plan.link, msg: plan.msg }]);
                }
            }
            12 if !h.links.is_empty() => {
                // A PTZ answer nobody may wait for (late, or made up).
                let id = h.links[pick(h.links.len())].0;
                let reply = PtzReply::refused(PtzErrorCode::Locked, "late");
                let actions = h.state.on_control(id, Control::PtzResult { id: u64::from(b % 8), reply }, now);
                h.run(actions.expect("answers are fine"));
            }
            _ => h.now += Duration::from_millis(u64::from(a) * 20),
        }
        h.tick();
        check(&h.state);
        for key in h.viewers.keys() {
            assert!(h.state.tracks.contains_key(key), "viewers of {key}, which has ended");
        }
        if shape.len() < 12 {
            let orphans = h.state.tracks.values().filter(|t| t.orphaned.is_some()).count();
            shape.push((h.state.links.len(), h.state.tracks.len(), orphans));
        }
    }
    // Every upstream goes away: viewers wait out the grace, then every
    // track ends, and the lost catalogs with them.
    while !h.links.is_empty() {
        let (id, _, _) = h.links.remove(0);
        let actions = h.state.link_down(id, h.now);
        h.run(actions);
    }
    check(&h.state);
    for _ in 0..20 {
        h.now += Duration::from_millis(500);
        h.tick();
    }
    assert!(h.state.tracks.is_empty(), "tracks outlived the grace: {:?}", h.state.tracks.keys());
    assert!(h.state.catalog(h.now).is_empty(), "lost catalogs outlived the grace");
    class_of((shape, h.viewers.len().min(4), h.ptz_answers.min(4)))
}

/// Panics (the fuzzer's finding) when tracks and links disagree.
fn check(state: &UpstreamState) {
    if let Some(why) = state.inconsistency() {
        panic!("upstream table inconsistent: {why}");
    }
}

/// A fixed camera an upstream offers, with or without a sub stream.
fn catalog_entry(camera: &str, sub: bool) -> CatalogEntry {
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
        // Some cameras go on every path of an agent: twins in the table.
        dual_path: camera.ends_with('1'),
    }
}
