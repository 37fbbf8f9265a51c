//! The sans-IO core of one relay session: which subscriptions the site
//! holds, whether the policy still grants them, which PTZ lock notices it
//! may see, and what its `Stats` say.
//!
//! Like quinn-proto's `Connection`, it never touches a socket, a task, a
//! lock or the clock: the shell ([`super::shell`]) hands it the relay's
//! [`Control`] messages, policy and catalog changes, timer ticks and pump
//! events, with the wall-clock time the policy is evaluated at, and
//! executes the [`Action`]s it returns, in order. Shaping itself (which
//! rung each GOP goes out at) is `ponte_proto::shaping::Shaper`, driven by
//! the pumps; this state only tells the shell which subscriptions the
//! shaper serves, at what priority and under what budget.

use crate::access::Access;
use ponte_proto::audit::AuditRecord;
use ponte_proto::media::Quality;
use ponte_proto::policy::{Decision, LocalTime};
use ponte_proto::ptz::{PtzCommand, PtzHolder};
use ponte_proto::session::{self, SessionError};
use ponte_proto::shaping::{Budget, Ladder, Priority, Rung};
use ponte_proto::wire::{CatalogEntry, Control, StatsReport, SubscribeErrorCode};
use std::collections::BTreeMap;
use std::sync::Arc;
use tracing::{info, warn};

/// What the shell does for the state, in the order given.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Write this message on the control stream.
    Send(Control),
    /// Open the camera's `quality` track for subscription `id`, then report
    /// with [`SessionState::camera_opened`] whether it delivers.
    OpenCamera {
        /// Subscription id.
        id: u64,
        /// Camera id.
        camera: String,
        /// Quality asked for.
        quality: Quality,
    },
    /// Serve subscription `id` from the track just opened: add it to the
    /// shaper and start its pump.
    StartPump {
        /// Subscription id.
        id: u64,
        /// Camera id.
        camera: String,
        /// The rungs it may be sent at.
        ladder: Ladder,
        /// Its priority class under the site's budget.
        priority: Priority,
    },
    /// Stop subscription `id`'s pump and take it off the shaper.
    StopPump {
        /// Subscription id.
        id: u64,
    },
    /// Write this line to the audit log.
    Audit(Box<AuditRecord>),
    /// Hand a PTZ command to the PTZ service (rights and lock are decided
    /// there); its answer comes back as a pump reply.
    Ptz {
        /// The relay's command id.
        id: u64,
        /// Camera id.
        camera: String,
        /// The partner's operator (`anonymous` if the relay names none).
        viewer: String,
        /// The command.
        command: PtzCommand,
    },
    /// The site's link budget changed.
    SetBudget(Budget),
    /// A subscription's priority class changed.
    SetPriority {
        /// Subscription id.
        id: u64,
        /// New class.
        priority: Priority,
    },
    /// A subscription was refused by `agent.max_subscriptions_per_session`
    /// (counted agent-wide for status).
    LimitRefused,
}

/// One granted subscription.
#[derive(Debug, Clone, PartialEq)]
pub struct Subscription {
    /// Camera id.
    pub camera: String,
    /// Quality the relay asked for.
    pub quality: Quality,
}

/// A subscription granted by policy whose camera track is being opened.
#[derive(Debug)]
struct Opening {
    id: u64,
    entry: CatalogEntry,
    quality: Quality,
    rule: String,
}

/// The state of one relay session.
pub struct SessionState {
    site: String,
    access: Arc<Access>,
    max_subscriptions: u32,
    budget: Budget,
    subs: BTreeMap<u64, Subscription>,
    opening: Option<Opening>,
    /// The catalog last sent to the relay.
    sent_catalog: Option<Vec<CatalogEntry>>,
}

impl SessionState {
    /// A session of `site` under `access`, holding at most
    /// `max_subscriptions` subscriptions.
    pub fn new(site: &str, access: Arc<Access>, max_subscriptions: u32) -> Self {
        let budget = access.budget(site);
        Self {
            site: site.to_owned(),
            access,
            max_subscriptions,
            budget,
            subs: BTreeMap::new(),
            opening: None,
            sent_catalog: None,
        }
    }

    /// The site's link budget as last applied.
    pub fn budget(&self) -> Budget {
        self.budget
    }

    /// Subscription `id`, if granted.
    pub fn subscription(&self, id: u64) -> Option<&Subscription> {
        self.subs.get(&id)
    }

    /// Number of granted subscriptions.
    pub fn len(&self) -> usize {
        self.subs.len()
    }

    /// No subscription granted.
    pub fn is_empty(&self) -> bool {
        self.subs.is_empty()
    }

    fn local_time(&self, now: jiff::Timestamp) -> LocalTime {
        self.access.local_time(now)
    }

    fn audit(
        &self,
        camera: Option<&str>,
        quality: Option<Quality>,
        action: &str,
        outcome: &str,
        reason: Option<String>,
    ) -> Action {
        Action::Audit(Box::new(AuditRecord {
            site: Some(self.site.clone()),
            camera: camera.map(str::to_owned),
            quality: quality.map(|q| q.name().to_owned()),
            action: action.to_owned(),
            outcome: outcome.to_owned(),
            reason,
            ..Default::default()
        }))
    }

    /// The catalog this site may see, if it differs from the one last sent.
    pub fn send_catalog(&mut self, catalog: &[CatalogEntry]) -> Vec<Action> {
        let cameras = self.access.catalog(&self.site, catalog);
        if self.sent_catalog.as_ref() == Some(&cameras) {
            // A device of another site, or one this site may not see,
            // changed: nothing to tell this relay.
            return Vec::new();
        }
        self.sent_catalog = Some(cameras.clone());
        let audit = self.audit(None, None, "catalog", "sent", Some(format!("{} cameras", cameras.len())));
        if cameras.is_empty() && self.access.site(&self.site).is_none() {
            warn!(site = %self.site, "site has no [[site]] policy in the agent config: it sees no camera");
        }
        vec![audit, Action::Send(Control::Catalog { cameras })]
    }

    /// A message from the relay. `catalog` is the agent's full catalog now,
    /// `now` the policy's wall clock.
    pub fn handle(
        &mut self,
        msg: Control,
        catalog: &[CatalogEntry],
        now: jiff::Timestamp,
    ) -> Result<Vec<Action>, SessionError> {
        Ok(match msg {
            Control::Subscribe { id, camera, quality } => self.subscribe(id, camera, quality, catalog, now),
            Control::Unsubscribe { id } => match self.forget(id) {
                Some(sub) => {
                    info!(site = %self.site, camera = %sub.camera, subscription = id, "unsubscribe");
                    vec![
                        self.audit(Some(&sub.camera), Some(sub.quality), "unsubscribe", "ended", None),
                        Action::StopPump { id },
                    ]
                }
                None => Vec::new(),
            },
            Control::Stats(_) => Vec::new(),
            Control::Ptz { id, camera, viewer, command } => {
                // A relay without accounts may not name its viewers.
                let viewer = if viewer.is_empty() { "anonymous".to_owned() } else { viewer };
                vec![Action::Ptz { id, camera, viewer, command }]
            }
            other => {
                return Err(SessionError::Protocol(format!(
                    "relay sent `{}`, which only an agent may send",
                    session::kind(&other)
                )))
            }
        })
    }

    fn refuse(
        &self,
        id: u64,
        camera: &str,
        quality: Quality,
        code: SubscribeErrorCode,
        told: String,
        audited: String,
    ) -> Vec<Action> {
        info!(site = %self.site, camera, quality = quality.name(), code = code.name(), reason = %audited, "subscribe refused");
        vec![
            self.audit(Some(camera), Some(quality), "refused", code.name(), Some(audited)),
            Action::Send(Control::SubscribeError { id, code, reason: told }),
        ]
    }

    fn subscribe(
        &mut self,
        id: u64,
        camera: String,
        quality: Quality,
        catalog: &[CatalogEntry],
        now: jiff::Timestamp,
    ) -> Vec<Action> {
        // The same id again replaces the old subscription, unaudited.
        let mut actions = Vec::new();
        if self.forget(id).is_some() {
            actions.push(Action::StopPump { id });
        }
        let site = &self.site;
        // A camera the site may not see is answered exactly like one that
        // does not exist: the relay never learns it is there.
        let unknown =
            format!("camera `{camera}` ({}) is not in the catalog of site `{site}`", quality.name());
        let entry = catalog.iter().find(|c| c.id == camera && c.qualities.contains(&quality)).cloned();
        let Some(entry) = entry else {
            actions.extend(self.refuse(
                id,
                &camera,
                quality,
                SubscribeErrorCode::Unknown,
                unknown.clone(),
                unknown,
            ));
            return actions;
        };
        let refusal = match self.access.evaluate(site, &entry, quality, self.local_time(now)) {
            Decision::Deny { hidden: true, reason } => Some((SubscribeErrorCode::Unknown, unknown, reason)),
            Decision::Deny { hidden: false, reason } => {
                Some((SubscribeErrorCode::Forbidden, reason.clone(), reason))
            }
            Decision::Allow { rule } => {
                let max = self.max_subscriptions;
                if self.subs.len() as u32 >= max {
                    actions.push(Action::LimitRefused);
                    let reason = format!(
                        "this session already holds {max} subscriptions, the agent's limit \
                         (`agent.max_subscriptions_per_session`); unsubscribe others first"
                    );
                    Some((SubscribeErrorCode::OverBudget, reason.clone(), reason))
                } else if let Some(max) =
                    self.access.max_streams(site).filter(|max| self.subs.len() as u32 >= *max)
                {
                    let reason =
                        format!("site `{site}` already receives its maximum of {max} concurrent streams");
                    Some((SubscribeErrorCode::OverBudget, reason.clone(), reason))
                } else {
                    self.opening = Some(Opening { id, entry, quality, rule });
                    actions.push(Action::OpenCamera { id, camera: camera.clone(), quality });
                    None
                }
            }
        };
        if let Some((code, told, audited)) = refusal {
            actions.extend(self.refuse(id, &camera, quality, code, told, audited));
        }
        actions
    }

    /// The shell opened (or failed to open) the track an
    /// [`Action::OpenCamera`] asked for.
    pub fn camera_opened(&mut self, id: u64, opened: bool) -> Vec<Action> {
        let Some(o) = self.opening.take_if(|o| o.id == id) else { return Vec::new() };
        let (camera, quality) = (o.entry.id.clone(), o.quality);
        if !opened {
            let reason = format!("camera `{camera}` has no {} stream right now", quality.name());
            return self.refuse(id, &camera, quality, SubscribeErrorCode::Offline, reason.clone(), reason);
        }
        let rule = o.rule;
        info!(site = %self.site, camera = %camera, quality = quality.name(), subscription = id, %rule, "subscribe");
        let audit =
            self.audit(Some(&camera), Some(quality), "subscribe", "allowed", Some(format!("rule `{rule}`")));
        let ladder =
            Ladder { top: Rung::of_quality(quality), has_sub: o.entry.qualities.contains(&Quality::Sub) };
        let priority = self.access.priority(&self.site, &o.entry);
        self.subs.insert(id, Subscription { camera: camera.clone(), quality });
        vec![
            audit,
            Action::Send(Control::SubscribeOk { id, codec: o.entry.codec }),
            Action::StartPump { id, camera, ladder, priority },
        ]
    }

    /// A message from a pump or the PTZ service, to pass to the relay. A
    /// pump that gives up (`SubscribeError`) ends its subscription.
    pub fn reply(&mut self, msg: Control) -> Vec<Action> {
        let mut actions = Vec::new();
        if let Control::SubscribeError { id, .. } = &msg {
            if self.forget(*id).is_some() {
                actions.push(Action::StopPump { id: *id });
            }
        }
        actions.push(Action::Send(msg));
        actions
    }

    /// A new policy is in force: new budget and priorities, the catalog it
    /// allows, and the end of what it no longer grants.
    pub fn policy_reloaded(
        &mut self,
        access: Arc<Access>,
        catalog: &[CatalogEntry],
        now: jiff::Timestamp,
    ) -> Vec<Action> {
        self.access = access;
        info!(site = %self.site, "policy reloaded");
        let mut actions = Vec::new();
        let budget = self.access.budget(&self.site);
        if budget != self.budget {
            info!(
                site = %self.site,
                budget_mbps = %super::shell::mbps_or_unlimited(budget.bps),
                burst_kb = budget.burst_bytes / 1024.0,
                "shaping: new link budget"
            );
            self.budget = budget;
            actions.push(Action::SetBudget(budget));
        }
        for (id, sub) in &self.subs {
            if let Some(entry) = catalog.iter().find(|c| c.id == sub.camera) {
                actions
                    .push(Action::SetPriority { id: *id, priority: self.access.priority(&self.site, entry) });
            }
        }
        actions.extend(self.send_catalog(catalog));
        actions.extend(self.recheck("policy reloaded", catalog, now));
        actions
    }

    /// The agent's camera catalog changed.
    pub fn catalog_changed(&mut self, catalog: &[CatalogEntry], now: jiff::Timestamp) -> Vec<Action> {
        let mut actions = self.send_catalog(catalog);
        actions.extend(self.recheck("camera catalog changed", catalog, now));
        actions
    }

    /// The policy tick: time windows may have closed.
    pub fn tick(&mut self, catalog: &[CatalogEntry], now: jiff::Timestamp) -> Vec<Action> {
        self.recheck("time window closed", catalog, now)
    }

    /// Ends every subscription the current policy no longer allows.
    fn recheck(&mut self, why: &str, catalog: &[CatalogEntry], now: jiff::Timestamp) -> Vec<Action> {
        let now = self.local_time(now);
        let mut revoked = Vec::new();
        for (id, sub) in &self.subs {
            let decision = match catalog.iter().find(|c| c.id == sub.camera) {
                Some(e) => self.access.evaluate(&self.site, e, sub.quality, now),
                None => {
                    Decision::Deny { hidden: true, reason: format!("camera `{}` was removed", sub.camera) }
                }
            };
            if let Decision::Deny { reason, .. } = decision {
                revoked.push((*id, reason));
            }
        }
        let mut actions = Vec::new();
        for (id, reason) in revoked {
            let Some(sub) = self.forget(id) else { continue };
            warn!(site = %self.site, camera = %sub.camera, quality = sub.quality.name(), %reason, "access revoked ({why})");
            actions.push(Action::StopPump { id });
            actions.push(self.audit(
                Some(&sub.camera),
                Some(sub.quality),
                "revoked",
                "ended",
                Some(reason.clone()),
            ));
            let reason = format!("access revoked: {reason}");
            actions.push(Action::Send(Control::SubscribeError {
                id,
                code: SubscribeErrorCode::Forbidden,
                reason,
            }));
        }
        actions
    }

    /// A PTZ lock changed hands: the relay is told only if its site may
    /// steer the camera.
    pub fn lock_changed(
        &self,
        camera: String,
        holder: Option<PtzHolder>,
        catalog: &[CatalogEntry],
    ) -> Vec<Action> {
        if !crate::ptz::PtzService::site_may_see_lock(&self.access, &self.site, catalog, &camera) {
            return Vec::new();
        }
        vec![Action::Send(Control::PtzLock { camera, holder })]
    }

    /// The stats tick: pumps that ended on their own (`finished`) are
    /// forgotten, then the relay gets the session's figures.
    pub fn stats(&mut self, finished: &[u64], bytes_sent: u64, gops_dropped: u64) -> Vec<Action> {
        let mut actions = Vec::new();
        for id in finished {
            if self.forget(*id).is_some() {
                actions.push(Action::StopPump { id: *id });
            }
        }
        let report = StatsReport {
            subscriptions: self.subs.len() as u32,
            bytes_sent,
            gops_dropped,
            ..Default::default()
        };
        actions.push(Action::Send(Control::Stats(report)));
        actions
    }

    /// The session ended: every subscription ends, audited.
    pub fn end(&mut self) -> Vec<Action> {
        let mut actions = Vec::new();
        for (id, sub) in std::mem::take(&mut self.subs) {
            actions.push(Action::StopPump { id });
            actions.push(self.audit(
                Some(&sub.camera),
                Some(sub.quality),
                "unsubscribe",
                "ended",
                Some("session ended".into()),
            ));
        }
        actions
    }

    fn forget(&mut self, id: u64) -> Option<Subscription> {
        self.subs.remove(&id)
    }
}

#[cfg(test)]
mod tests {
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

    fn subscribe(
        s: &mut SessionState,
        f: &Fixture,
        id: u64,
        camera: &str,
        now: jiff::Timestamp,
    ) -> Vec<Action> {
        let msg = Control::Subscribe { id, camera: camera.into(), quality: Quality::Main };
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
        let Some(Control::Catalog { cameras }) = sent(&catalog).first().copied() else {
            panic!("{catalog:?}")
        };
        let ids: Vec<&str> = cameras.iter().map(|c| c.id.as_str()).collect();
        assert_eq!(ids, ["piazza", "dome"], "the hospital camera is not listed");
        assert!(s.send_catalog(&f.catalog).is_empty(), "an unchanged catalog is not sent again");

        let a = subscribe(&mut s, &f, 7, "piazza", night());
        assert!(
            matches!(&a[0], Action::OpenCamera { id: 7, camera, quality: Quality::Main } if camera == "piazza")
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
        let msg = Control::Subscribe { id: 3, camera: "piazza".into(), quality: Quality::Main };
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
        let stricter = fixture(
            &CONFIG.replace(r#"deny = ["tag:hospital"]"#, r#"deny = ["tag:hospital", "camera:piazza"]"#),
        );
        let a = s.policy_reloaded(stricter.access.clone(), &stricter.catalog, night());
        let Some(Control::Catalog { cameras }) = sent(&a).first().copied() else { panic!("{a:?}") };
        assert_eq!(cameras.len(), 1, "the new catalog goes out before the revocation");
        assert!(a.contains(&Action::StopPump { id: 1 }));
        assert!(!a.contains(&Action::StopPump { id: 2 }), "what is still granted keeps flowing");
        let (id, code, reason) = error_code(&a).unwrap();
        assert_eq!((id, code), (1, SubscribeErrorCode::Forbidden));
        assert!(reason.starts_with("access revoked: "), "{reason}");
        let audit = audited(&a);
        assert_eq!(audit.last().map(|x| (x.0.as_str(), x.1.as_str())), Some(("revoked", "ended")));
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
        let msg =
            Control::Ptz { id: 4, camera: "dome".into(), viewer: String::new(), command: command.clone() };
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
            [&Control::Stats(StatsReport { subscriptions: 2, bytes_sent: 1000, ..Default::default() })]
        );
        // A pump that gave up tells the relay and ends its subscription.
        let gave_up =
            Control::SubscribeError { id: 2, code: SubscribeErrorCode::Offline, reason: "stopped".into() };
        let r = s.reply(gave_up.clone());
        assert_eq!(r, [Action::StopPump { id: 2 }, Action::Send(gave_up)]);
        let a = s.stats(&[1], 5000, 3);
        assert_eq!(a[0], Action::StopPump { id: 1 });
        let report =
            StatsReport { subscriptions: 0, bytes_sent: 5000, gops_dropped: 3, ..Default::default() };
        assert_eq!(sent(&a), [&Control::Stats(report)]);
    }

    #[test]
    fn a_message_only_an_agent_sends_is_a_protocol_violation() {
        let f = fixture(CONFIG);
        let mut s = SessionState::new("questura", f.access.clone(), 8);
        let r = s.handle(Control::Catalog { cameras: Vec::new() }, &f.catalog, night());
        assert!(matches!(r, Err(SessionError::Protocol(_))));
    }
}
