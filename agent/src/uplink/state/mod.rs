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
use ponte_proto::audit::{AnchoredHead, AuditRecord, ACTION_ANCHOR};
use ponte_proto::media::Quality;
use ponte_proto::policy::RecallUse;
use ponte_proto::policy::{Decision, LocalTime};
use ponte_proto::ptz::{PtzCommand, PtzHolder};
use ponte_proto::session::{self, SessionError};
use ponte_proto::shaping::{Budget, Ladder, Priority, Rung};
use ponte_proto::wire::{CatalogEntry, Control, Playback, StatsReport, SubscribeErrorCode};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use tracing::{info, warn};

/// What the shell does for the state, in the order given.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Write this message on the control stream.
    Send(Control),
    /// An operator of the site did something about an incident (issue 23).
    Incident(ponte_proto::incident::SiteAction),
    /// Open the camera's `quality` track for subscription `id`, then report
    /// with [`SessionState::camera_opened`] whether it delivers.
    OpenCamera {
        /// Subscription id.
        id: u64,
        /// Camera id.
        camera: String,
        /// Quality asked for.
        quality: Quality,
        /// Play the recording back from here instead of live.
        playback: Option<Playback>,
    },
    /// Answer the relay's `Recordings` request with the camera's recorded
    /// ranges (the shell reads them from the store).
    Recordings {
        /// Request id.
        id: u64,
        /// Camera id.
        camera: String,
        /// Quality.
        quality: Quality,
        /// How far back the site may reach, Unix ms.
        earliest_ms: Option<u64>,
        /// Whether the site may take exports.
        export: bool,
    },
    /// Make an evidence export and send it to the relay (`ExportResult`,
    /// then the clip on its own stream); the policy allowed it.
    Export {
        /// Export id.
        id: u64,
        /// Camera id.
        camera: String,
        /// Quality.
        quality: Quality,
        /// Start, Unix ms.
        from_ms: u64,
        /// End, Unix ms.
        to_ms: u64,
        /// The operator who asked, as `viewer@site`.
        viewer: String,
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
    /// Who watches it at the site, as the relay last said (`Viewers`),
    /// each as `viewer@site`.
    pub viewers: BTreeSet<String>,
    /// A playback of the recording, not live.
    pub playback: Option<Playback>,
}

/// A subscription granted by policy whose camera track is being opened.
#[derive(Debug)]
struct Opening {
    id: u64,
    entry: CatalogEntry,
    quality: Quality,
    rule: String,
    viewer: Option<String>,
    playback: Option<Playback>,
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
    /// This agent's site id and every agent of the master room (itself
    /// included; one agent: just itself), for the budget share and takeovers.
    me: String,
    agents: Vec<String>,
    /// How many agents feed the relay now, as it last said (`BudgetShare`),
    /// capped at `agents.len()`.
    share: u32,
    /// Fibre paths to the relay (`[[relay]] paths`), each a session.
    paths: usize,
    /// The policy digest the relay last heard.
    digest: String,
}

impl SessionState {
    /// A session of `site` under `access`, holding at most
    /// `max_subscriptions` subscriptions.
    pub fn new(site: &str, access: Arc<Access>, max_subscriptions: u32) -> Self {
        let budget = access.budget(site);
        let access_digest = access.digest(site);
        Self {
            site: site.to_owned(),
            access,
            max_subscriptions,
            budget,
            subs: BTreeMap::new(),
            opening: None,
            sent_catalog: None,
            me: String::new(),
            agents: Vec::new(),
            share: 1,
            paths: 1,
            digest: access_digest,
        }
    }

    /// This agent is `me` among `agents` of the master room (`[redundancy]`),
    /// reaching the relay on `paths` fibre paths.
    pub fn with_agents(mut self, me: &str, agents: Vec<String>, paths: usize) -> Self {
        self.me = me.to_owned();
        self.agents = agents;
        self.paths = paths.max(1);
        self
    }

    /// The digest of the site's policy, for `Hello`.
    pub fn hello_digest(&self) -> String {
        self.digest.clone()
    }

    /// The part of the site's link budget this agent spends: all of it
    /// alone, `1/n` while the relay says `n` agents feed it.
    pub fn budget(&self) -> Budget {
        let n = f64::from(self.share.max(1));
        Budget { bps: self.budget.bps.map(|b| b / n), burst_bytes: self.budget.burst_bytes / n }
    }

    /// The relay says `parts` agents feed it now.
    fn budget_share(&mut self, parts: u32) -> Vec<Action> {
        // Never more parts than the master room has agents times paths: a
        // relay cannot talk an agent below its share, nor (one agent on
        // one path) split at all. Each path's session counts as a part, so
        // dual-path copies are paid for within the budget.
        let parts = parts.clamp(1, (self.agents.len().max(1) * self.paths) as u32);
        if parts == self.share {
            return Vec::new();
        }
        self.share = parts;
        let budget = self.budget();
        info!(
            site = %self.site,
            agents = parts,
            budget_mbps = %crate::uplink::mbps_or_unlimited(budget.bps),
            "shaping: the site's budget is shared with the other agents feeding its relay"
        );
        vec![Action::SetBudget(budget)]
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
        self.audit_as(None, camera, quality, action, outcome, reason)
    }

    /// [`Self::audit`] naming the site's viewer.
    fn audit_as(
        &self,
        viewer: Option<String>,
        camera: Option<&str>,
        quality: Option<Quality>,
        action: &str,
        outcome: &str,
        reason: Option<String>,
    ) -> Action {
        Action::Audit(Box::new(AuditRecord {
            site: Some(self.site.clone()),
            viewer,
            camera: camera.map(str::to_owned),
            quality: quality.map(|q| q.name().to_owned()),
            action: action.to_owned(),
            outcome: outcome.to_owned(),
            reason,
            ..Default::default()
        }))
    }

    /// A viewer name from the relay as the audit records it: `name@site`,
    /// the site from the peer's certificate (never from the relay's words),
    /// so a relay can name its operators but not speak for another site.
    fn qualify(&self, viewer: &str) -> String {
        format!("{viewer}@{}", self.site)
    }

    /// `view-stop` lines for everyone still watching a subscription that ends.
    fn views_end(&self, sub: &Subscription, why: &str) -> Vec<Action> {
        sub.viewers
            .iter()
            .map(|v| {
                self.audit_as(
                    Some(v.clone()),
                    Some(&sub.camera),
                    Some(sub.quality),
                    "view-stop",
                    "ended",
                    Some(why.to_owned()),
                )
            })
            .collect()
    }

    /// The relay's list of who watches subscription `id` now: a
    /// `view-start` line for each newcomer, a `view-stop` for each leaver.
    fn viewers(&mut self, id: u64, viewers: Vec<String>, more: u32) -> Vec<Action> {
        let now: BTreeSet<String> = viewers.iter().map(|v| self.qualify(v)).collect();
        let Some(sub) = self.subs.get_mut(&id) else { return Vec::new() };
        let before = std::mem::replace(&mut sub.viewers, now);
        let sub = sub.clone();
        let mut actions = Vec::new();
        let unnamed = (more > 0).then(|| format!("{more} more viewers at the site are not named"));
        let started = sub.viewers.difference(&before).map(|v| (v, "view-start", "allowed", unnamed.clone()));
        let stopped = before.difference(&sub.viewers).map(|v| (v, "view-stop", "ended", None));
        for (v, action, outcome, reason) in started.chain(stopped) {
            info!(site = %self.site, camera = %sub.camera, viewer = %v, action, "partner operator");
            actions.push(self.audit_as(
                Some(v.clone()),
                Some(&sub.camera),
                Some(sub.quality),
                action,
                outcome,
                reason,
            ));
        }
        actions
    }

    /// The relay's audit head: recorded in this agent's chain, so a cut
    /// tail of the relay's log shows against this one.
    fn anchor(&self, seq: u64, hash: String) -> Vec<Action> {
        vec![Action::Audit(Box::new(AuditRecord {
            site: Some(self.site.clone()),
            action: ACTION_ANCHOR.to_owned(),
            outcome: "recorded".to_owned(),
            anchor: Some(AnchoredHead { node: self.site.clone(), seq, hash }),
            ..Default::default()
        }))]
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
            Control::Subscribe { id, camera, quality, viewer, playback } => {
                self.subscribe(id, camera, quality, viewer, playback, catalog, now)
            }
            Control::Recordings { id, camera, quality } => self.recordings(id, camera, quality, catalog, now),
            Control::Export { id, camera, quality, from_ms, to_ms, viewer } => {
                self.export(id, camera, quality, (from_ms, to_ms), viewer, catalog, now)
            }
            Control::Unsubscribe { id } => match self.forget(id) {
                Some(sub) => {
                    info!(site = %self.site, camera = %sub.camera, subscription = id, "unsubscribe");
                    let mut actions = self.views_end(&sub, "the site unsubscribed");
                    actions.push(self.audit(
                        Some(&sub.camera),
                        Some(sub.quality),
                        "unsubscribe",
                        "ended",
                        None,
                    ));
                    actions.push(Action::StopPump { id });
                    actions
                }
                None => Vec::new(),
            },
            Control::Viewers { id, viewers, more } => self.viewers(id, viewers, more),
            Control::AuditHead { seq, hash } => self.anchor(seq, hash),
            Control::Stats(_) => Vec::new(),
            Control::BudgetShare { parts } => self.budget_share(parts),
            Control::IncidentAction { action } => vec![Action::Incident(action)],
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

    #[allow(clippy::too_many_arguments)]
    fn refuse(
        &self,
        viewer: Option<String>,
        id: u64,
        camera: &str,
        quality: Quality,
        code: SubscribeErrorCode,
        told: String,
        audited: String,
    ) -> Vec<Action> {
        info!(site = %self.site, camera, quality = quality.name(), code = code.name(), reason = %audited, "subscribe refused");
        vec![
            self.audit_as(viewer, Some(camera), Some(quality), "refused", code.name(), Some(audited)),
            Action::Send(Control::SubscribeError { id, code, reason: told }),
        ]
    }

    #[allow(clippy::too_many_arguments)]
    fn subscribe(
        &mut self,
        id: u64,
        camera: String,
        quality: Quality,
        viewer: Option<String>,
        playback: Option<Playback>,
        catalog: &[CatalogEntry],
        now: jiff::Timestamp,
    ) -> Vec<Action> {
        // The same id again replaces the old subscription, unaudited.
        let mut actions = Vec::new();
        if let Some(old) = self.forget(id) {
            actions.extend(self.views_end(&old, "the site replaced the subscription"));
            actions.push(Action::StopPump { id });
        }
        let viewer = viewer.map(|v| self.qualify(&v));
        let site = &self.site;
        // A camera the site may not see is answered exactly like one that
        // does not exist: the relay never learns it is there.
        let unknown =
            format!("camera `{camera}` ({}) is not in the catalog of site `{site}`", quality.name());
        let entry = catalog.iter().find(|c| c.id == camera && c.qualities.contains(&quality)).cloned();
        let Some(entry) = entry else {
            actions.extend(self.refuse(
                viewer,
                id,
                &camera,
                quality,
                SubscribeErrorCode::Unknown,
                unknown.clone(),
                unknown,
            ));
            return actions;
        };
        let decision = match playback {
            Some(p) => {
                self.access.evaluate_recall(site, &entry, quality, now, RecallUse::Playback, p.from_ms)
            }
            None => self.access.evaluate(site, &entry, quality, self.local_time(now)),
        };
        let refusal = match decision {
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
                    if playback.is_none() {
                        actions.extend(self.takeover(&camera, quality));
                    }
                    self.opening =
                        Some(Opening { id, entry, quality, rule, viewer: viewer.clone(), playback });
                    actions.push(Action::OpenCamera { id, camera: camera.clone(), quality, playback });
                    None
                }
            }
        };
        if let Some((code, told, audited)) = refusal {
            actions.extend(self.refuse(viewer, id, &camera, quality, code, told, audited));
        }
        actions
    }

    /// A `takeover` audit line when the relay asks this agent for a camera
    /// whose primary is another agent ([`ponte_proto::redundancy::primary`]):
    /// the relay lost that agent (or never had it) and moved the camera here.
    fn takeover(&self, camera: &str, quality: Quality) -> Option<Action> {
        if self.agents.len() < 2 {
            return None;
        }
        let primary = ponte_proto::redundancy::primary(camera, self.agents.iter().map(String::as_str))?;
        if primary == self.me {
            return None;
        }
        info!(site = %self.site, camera, primary, "takeover: serving a camera of another agent");
        Some(self.audit(
            Some(camera),
            Some(quality),
            "takeover",
            "allowed",
            Some(format!(
                "camera `{camera}` is carried by agent `{primary}` when it is up; site `{}` asked `{}` for it",
                self.site, self.me
            )),
        ))
    }

    /// The catalog entry of `camera` at `quality` if this site may see it.
    fn visible(&self, camera: &str, quality: Quality, catalog: &[CatalogEntry]) -> Option<CatalogEntry> {
        let entry = catalog.iter().find(|c| c.id == camera && c.qualities.contains(&quality))?;
        self.access.catalog(&self.site, std::slice::from_ref(entry)).into_iter().next()
    }

    /// The relay asks what is recorded of a camera: answered only if the
    /// site may play it back.
    fn recordings(
        &mut self,
        id: u64,
        camera: String,
        quality: Quality,
        catalog: &[CatalogEntry],
        now: jiff::Timestamp,
    ) -> Vec<Action> {
        let refused = |reason: String| {
            vec![Action::Send(Control::RecordingsInfo {
                id,
                ranges: Vec::new(),
                earliest_ms: None,
                export: false,
                refused: Some(reason),
            })]
        };
        let Some(entry) = self.visible(&camera, quality, catalog) else {
            return refused(format!("camera `{camera}` is not in the catalog of site `{}`", self.site));
        };
        let now_ms = u64::try_from(now.as_millisecond()).unwrap_or(0);
        match self.access.evaluate_recall(&self.site, &entry, quality, now, RecallUse::Playback, now_ms) {
            Decision::Allow { .. } => vec![Action::Recordings {
                id,
                camera,
                quality,
                earliest_ms: self.access.earliest_recall(&self.site, now_ms),
                export: self.access.may_export(&self.site),
            }],
            Decision::Deny { reason, .. } => refused(reason),
        }
    }

    /// The relay asks for an evidence export: the policy decides, and both
    /// the refusal and the grant are audited with the operator's name.
    #[allow(clippy::too_many_arguments)]
    fn export(
        &mut self,
        id: u64,
        camera: String,
        quality: Quality,
        (from_ms, to_ms): (u64, u64),
        viewer: String,
        catalog: &[CatalogEntry],
        now: jiff::Timestamp,
    ) -> Vec<Action> {
        let viewer = self.qualify(if viewer.is_empty() { "anonymous" } else { &viewer });
        let interval = describe_interval(from_ms, Some(to_ms));
        let decision = match self.visible(&camera, quality, catalog) {
            None => Decision::Deny {
                hidden: true,
                reason: format!("camera `{camera}` is not in the catalog of site `{}`", self.site),
            },
            Some(_) if to_ms <= from_ms => Decision::Deny {
                hidden: false,
                reason: format!("camera `{camera}`: the export ends before it starts ({interval})"),
            },
            Some(entry) => {
                self.access.evaluate_recall(&self.site, &entry, quality, now, RecallUse::Export, from_ms)
            }
        };
        match decision {
            Decision::Allow { rule } => {
                info!(site = %self.site, camera = %camera, viewer = %viewer, %interval, "export allowed");
                vec![
                    self.audit_as(
                        Some(viewer.clone()),
                        Some(&camera),
                        Some(quality),
                        "export",
                        "allowed",
                        Some(format!("{interval}, rule `{rule}`")),
                    ),
                    Action::Export { id, camera, quality, from_ms, to_ms, viewer },
                ]
            }
            Decision::Deny { reason, .. } => {
                info!(site = %self.site, camera = %camera, viewer = %viewer, %reason, "export refused");
                vec![
                    self.audit_as(
                        Some(viewer),
                        Some(&camera),
                        Some(quality),
                        "export",
                        "refused",
                        Some(format!("{interval}: {reason}")),
                    ),
                    Action::Send(Control::ExportResult { id, refused: Some(reason), bytes: 0 }),
                ]
            }
        }
    }

    /// The shell could not open the track an [`Action::OpenCamera`] asked
    /// for because a limit of the agent's refused it (`reason` names the key).
    pub fn camera_refused(&mut self, id: u64, reason: String) -> Vec<Action> {
        let Some(o) = self.opening.take_if(|o| o.id == id) else { return Vec::new() };
        let (camera, quality) = (o.entry.id.clone(), o.quality);
        // Counted by the limit itself (`Transcodes`), not as a session limit.
        self.refuse(o.viewer, id, &camera, quality, SubscribeErrorCode::OverBudget, reason.clone(), reason)
    }

    /// The shell found nothing recorded to play back for an
    /// [`Action::OpenCamera`] (`reason` says what and when).
    pub fn camera_not_recorded(&mut self, id: u64, reason: String) -> Vec<Action> {
        let Some(o) = self.opening.take_if(|o| o.id == id) else { return Vec::new() };
        let (camera, quality) = (o.entry.id.clone(), o.quality);
        self.refuse(o.viewer, id, &camera, quality, SubscribeErrorCode::NotRecorded, reason.clone(), reason)
    }

    /// The shell opened (or failed to open) the track an
    /// [`Action::OpenCamera`] asked for.
    pub fn camera_opened(&mut self, id: u64, opened: bool) -> Vec<Action> {
        let Some(o) = self.opening.take_if(|o| o.id == id) else { return Vec::new() };
        let (camera, quality) = (o.entry.id.clone(), o.quality);
        if !opened {
            let reason = format!("camera `{camera}` has no {} stream right now", quality.name());
            return self.refuse(
                o.viewer,
                id,
                &camera,
                quality,
                SubscribeErrorCode::Offline,
                reason.clone(),
                reason,
            );
        }
        let rule = o.rule;
        info!(site = %self.site, camera = %camera, quality = quality.name(), subscription = id, %rule, playback = o.playback.is_some(), "subscribe");
        let audit = match o.playback {
            None => self.audit_as(
                o.viewer,
                Some(&camera),
                Some(quality),
                "subscribe",
                "allowed",
                Some(format!("rule `{rule}`")),
            ),
            Some(p) => self.audit_as(
                o.viewer,
                Some(&camera),
                Some(quality),
                "playback",
                "allowed",
                Some(format!("from {}, rule `{rule}`", describe_interval(p.from_ms, p.to_ms))),
            ),
        };
        // Stepping down to a substream of another codec (or the agent's
        // transcode) would end a viewer's stream, and a transcode would
        // start just because the link is busy: such a ladder goes from
        // main straight to keyframes only.
        // A playback is one recorded stream: no substream to step down to,
        // and below every live camera in the shaper.
        let has_sub = o.playback.is_none()
            && o.entry.substream().is_some_and(|(codec, transcoded)| {
                quality == Quality::Sub || (codec == o.entry.codec && !transcoded)
            });
        let ladder = Ladder { top: Rung::of_quality(quality), has_sub };
        let priority = match o.playback {
            Some(_) => Priority::Low,
            None => self.access.priority(&self.site, &o.entry),
        };
        let sub =
            Subscription { camera: camera.clone(), quality, viewers: BTreeSet::new(), playback: o.playback };
        self.subs.insert(id, sub);
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
            if let Some(sub) = self.forget(*id) {
                actions.extend(self.views_end(&sub, "the stream ended"));
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
                budget_mbps = %crate::uplink::mbps_or_unlimited(budget.bps),
                burst_kb = budget.burst_bytes / 1024.0,
                "shaping: new link budget"
            );
            self.budget = budget;
            actions.push(Action::SetBudget(self.budget()));
        }

        for (id, sub) in self.subs.iter().filter(|(_, s)| s.playback.is_none()) {
            if let Some(entry) = catalog.iter().find(|c| c.id == sub.camera) {
                actions
                    .push(Action::SetPriority { id: *id, priority: self.access.priority(&self.site, entry) });
            }
        }
        // Revocations first: the relay tells its viewers the agent's reason
        // (a share that ended, say) before the new catalog drops the camera.
        actions.extend(self.recheck("policy reloaded", catalog, now));
        actions.extend(self.send_catalog(catalog));
        // The relay compares the agents' digests (two agents, issue 22).
        let digest = self.access.digest(&self.site);
        if digest != self.digest {
            self.digest = digest.clone();
            actions.push(Action::Send(Control::Policy { digest }));
        }
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
    fn recheck(&mut self, why: &str, catalog: &[CatalogEntry], at: jiff::Timestamp) -> Vec<Action> {
        let now = self.local_time(at);
        let now_ms = u64::try_from(at.as_millisecond()).unwrap_or(0);
        let mut revoked = Vec::new();
        for (id, sub) in &self.subs {
            let decision = match catalog.iter().find(|c| c.id == sub.camera) {
                // A playback keeps needing the `playback` right (the
                // lookback was checked when it started).
                Some(e) if sub.playback.is_some() => {
                    self.access.evaluate_recall(&self.site, e, sub.quality, at, RecallUse::Playback, now_ms)
                }
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
            actions.extend(self.views_end(&sub, "access revoked"));
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

    /// An incident notice: the relay is told only what is for its site;
    /// an alarm only if the site may see the camera now.
    pub fn incident(
        &self,
        site: &str,
        notice: ponte_proto::incident::Notice,
        catalog: &[CatalogEntry],
    ) -> Vec<Action> {
        if site != self.site {
            return Vec::new();
        }
        if let ponte_proto::incident::Notice::Alarm { camera, .. } = &notice {
            if !self.access.catalog(&self.site, catalog).iter().any(|c| &c.id == camera) {
                return Vec::new();
            }
        }
        vec![Action::Send(Control::Incident { notice })]
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
            if let Some(sub) = self.forget(*id) {
                actions.extend(self.views_end(&sub, "the stream ended"));
                actions.push(Action::StopPump { id: *id });
            }
        }
        let report = StatsReport {
            subscriptions: self.subs.len() as u32,
            bytes_sent,
            gops_dropped,
            budget_bps: self.budget.bps.map(|bps| bps as u64),
            ..Default::default()
        };
        actions.push(Action::Send(Control::Stats(report)));
        actions
    }

    /// The session ended: every subscription ends, audited.
    pub fn end(&mut self) -> Vec<Action> {
        let mut actions = Vec::new();
        for (id, sub) in std::mem::take(&mut self.subs) {
            actions.extend(self.views_end(&sub, "session ended"));
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

/// `2026-12-07T10:00:00.000Z to 2026-12-07T10:00:20.000Z` (or `... on`).
pub fn describe_interval(from_ms: u64, to_ms: Option<u64>) -> String {
    let at = |ms: u64| {
        std::time::UNIX_EPOCH
            .checked_add(std::time::Duration::from_millis(ms))
            .map_or_else(|| format!("{ms} ms"), ponte_proto::audit::rfc3339)
    };
    match to_ms {
        Some(to) => format!("{} to {}", at(from_ms), at(to)),
        None => format!("{} on", at(from_ms)),
    }
}
#[cfg(test)]
mod tests;
