//! The incident book (sans-IO): shares, asks and alarms as the master room
//! keeps them. Every call takes the time (`now_ms`, Unix ms) and returns
//! what to do ([`Out`]): notices for sites, audit lines, "the grants
//! changed" (the shell republishes the access policy, so streams a grant no
//! longer allows end at once, as after a reload) and "persist".

use crate::access::{Grant, GrantOrigin, TemporaryGrants};
use ponte_proto::audit::AuditRecord;
use ponte_proto::incident::{AlarmKind, Notice, PeerGrant, MAX_SHARE_CAMERAS};
use ponte_proto::ptz::MASTER_SITE;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap, VecDeque};

/// Longest share or approval.
pub const MAX_GRANT_MINUTES: u64 = 24 * 60;
/// Ended shares and answered asks stay on the consoles this long.
const KEEP_ENDED_MS: u64 = 3_600_000;
/// Alarms kept (newest).
const KEEP_ALARMS: usize = 200;
/// Alarms re-sent to a relay that (re)connects.
const RESEND_ALARMS: usize = 50;

/// Settings from `[incidents]`.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// At most one alarm per camera and kind per this many ms.
    pub alarm_interval_ms: u64,
    /// An unanswered ask expires after this many ms.
    pub ask_ttl_ms: u64,
}

/// What the shell does.
#[derive(Debug, Clone, PartialEq)]
pub enum Out {
    /// Tell a site.
    Notify {
        /// Site id.
        site: String,
        /// What.
        notice: Notice,
    },
    /// Write an audit line.
    Audit(Box<AuditRecord>),
    /// The temporary grants changed: republish the access policy.
    GrantsChanged,
    /// The grants changed: write the state file.
    Persist,
}

/// How a share or an approval ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ended {
    /// When, Unix ms.
    pub at_ms: u64,
    /// Why.
    pub reason: String,
}

/// A temporary grant given by a share or by an approved ask.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Share {
    /// Id (shares and asks share the counter).
    pub id: u64,
    /// The site.
    pub site: String,
    /// Camera ids.
    pub cameras: Vec<String>,
    /// Given at, Unix ms.
    pub from_ms: u64,
    /// Ends at, Unix ms.
    pub until_ms: u64,
    /// The master operator who gave it.
    pub by: String,
    /// The note (share) or the ask's reason (approval).
    pub note: String,
    /// A share, or an approval of an ask.
    pub origin: GrantOrigin,
    /// Who accepted it at the site (an approval: who asked).
    pub accepted_by: Option<String>,
    /// When, Unix ms.
    pub accepted_ms: Option<u64>,
    /// Once over.
    pub ended: Option<Ended>,
}

/// The master's answer to an ask.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Answer {
    /// Approved or refused.
    pub approved: bool,
    /// Who answered (`master` when it expired unanswered).
    pub by: String,
    /// The reason given.
    pub reason: String,
    /// When, Unix ms.
    pub at_ms: u64,
    /// The grant's end when approved.
    pub until_ms: Option<u64>,
}

/// A site's ask for a camera.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Ask {
    /// Id (the agent's).
    pub id: u64,
    /// The asking site.
    pub site: String,
    /// The relay's id for it.
    #[serde(skip)]
    pub relay_id: u64,
    /// The camera asked for, as the operator named it.
    pub camera: String,
    /// Who asked (`operator@site`).
    pub operator: String,
    /// Why.
    pub reason: String,
    /// When, Unix ms.
    pub asked_ms: u64,
    /// Unanswered, it expires at, Unix ms.
    pub expires_ms: u64,
    /// The answer, once given.
    pub answer: Option<Answer>,
}

/// Who acknowledged an alarm.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Ack {
    /// `master` or a site.
    pub site: String,
    /// The operator.
    pub operator: String,
    /// When, Unix ms.
    pub at_ms: u64,
}

/// A camera alarm.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Alarm {
    /// Id.
    pub id: u64,
    /// Camera id.
    pub camera: String,
    /// Kind.
    pub kind: AlarmKind,
    /// When, Unix ms.
    pub at_ms: u64,
    /// More words.
    pub detail: String,
    /// The sites it went to.
    pub sites: Vec<String>,
    /// JPEG, base64.
    #[serde(skip)]
    pub thumbnail: Option<String>,
    /// Whether there is a thumbnail.
    pub has_thumbnail: bool,
    /// Suppressed before this one (rate limit).
    pub suppressed: u64,
    /// Acknowledgements.
    pub acks: Vec<Ack>,
}

/// The rate limit of one camera and kind.
#[derive(Debug, Default, Clone, Copy)]
struct Limit {
    last_ms: Option<u64>,
    suppressed: u64,
}

/// Whether an alarm may go out now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// Yes; this many were suppressed since the last one.
    Raise {
        /// Suppressed since the last one.
        suppressed: u64,
    },
    /// No: counted.
    Suppressed,
}

/// What survives a restart: the grants in force.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Persisted {
    /// The next id.
    pub next_id: u64,
    /// Shares and approvals not ended.
    pub shares: Vec<Share>,
}

/// The book.
#[derive(Debug)]
pub struct Book {
    settings: Settings,
    next_id: u64,
    shares: BTreeMap<u64, Share>,
    asks: BTreeMap<u64, Ask>,
    alarms: VecDeque<Alarm>,
    limits: HashMap<(String, AlarmKind), Limit>,
    suppressed_total: u64,
    raised_total: u64,
}

fn audit(
    site: &str,
    viewer: &str,
    camera: Option<String>,
    action: &str,
    outcome: &str,
    reason: String,
) -> Out {
    Out::Audit(Box::new(AuditRecord {
        site: Some(site.to_owned()),
        viewer: Some(viewer.to_owned()),
        camera,
        action: action.to_owned(),
        outcome: outcome.to_owned(),
        reason: Some(reason),
        ..Default::default()
    }))
}

/// `2026-12-07T12:00:00Z`.
pub fn at(ms: u64) -> String {
    crate::access::at_ms(ms)
}

impl Share {
    fn notice(&self) -> Notice {
        Notice::Share {
            id: self.id,
            cameras: self.cameras.clone(),
            until_ms: self.until_ms,
            by: self.by.clone(),
            note: self.note.clone(),
            accepted_by: self.accepted_by.clone(),
        }
    }

    fn live(&self) -> bool {
        self.ended.is_none()
    }
}

impl Alarm {
    fn notice(&self) -> Notice {
        Notice::Alarm {
            id: self.id,
            camera: self.camera.clone(),
            kind: self.kind,
            at_ms: self.at_ms,
            detail: self.detail.clone(),
            thumbnail: self.thumbnail.clone(),
            suppressed: self.suppressed,
        }
    }
}

impl Book {
    /// An empty book; ids start after `now_ms` so they never repeat across restarts.
    pub fn new(settings: Settings, now_ms: u64) -> Self {
        Self {
            settings,
            next_id: now_ms,
            shares: BTreeMap::new(),
            asks: BTreeMap::new(),
            alarms: VecDeque::new(),
            limits: HashMap::new(),
            suppressed_total: 0,
            raised_total: 0,
        }
    }

    /// The book after a restart: the persisted grants still in force; those
    /// that expired while the agent was down are audited as ended.
    pub fn restore(settings: Settings, saved: Persisted, now_ms: u64) -> (Self, Vec<Out>) {
        let mut book = Self::new(settings, now_ms.max(saved.next_id));
        let mut out = Vec::new();
        for s in saved.shares.into_iter().filter(Share::live) {
            if s.until_ms <= now_ms {
                out.push(audit(
                    &s.site,
                    &s.by,
                    Some(s.cameras.join(",")),
                    s.origin.action(),
                    "expired",
                    format!(
                        "{} #{} expired at {} while the agent was down",
                        s.origin.name(),
                        s.id,
                        at(s.until_ms)
                    ),
                ));
                continue;
            }
            out.push(audit(
                &s.site,
                &s.by,
                Some(s.cameras.join(",")),
                s.origin.action(),
                "restored",
                format!("{} #{} kept after a restart, until {}", s.origin.name(), s.id, at(s.until_ms)),
            ));
            book.shares.insert(s.id, s);
        }
        if !out.is_empty() {
            out.push(Out::GrantsChanged);
            out.push(Out::Persist);
        }
        (book, out)
    }

    /// What to write to the state file.
    pub fn persisted(&self) -> Persisted {
        Persisted {
            next_id: self.next_id,
            shares: self.shares.values().filter(|s| s.live()).cloned().collect(),
        }
    }

    fn id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    /// The grants in force, and why recently ended ones ended.
    pub fn grants(&self) -> TemporaryGrants {
        let mut g = TemporaryGrants::default();
        for s in self.shares.values() {
            for camera in &s.cameras {
                let key = (s.site.clone(), camera.clone());
                match &s.ended {
                    None => {
                        let grant =
                            Grant { id: s.id, until_ms: s.until_ms, by: s.by.clone(), origin: s.origin };
                        // Two shares of one camera: the longer counts.
                        let e = g.live.entry(key).or_insert_with(|| grant.clone());
                        if grant.until_ms > e.until_ms {
                            *e = grant;
                        }
                    }
                    Some(end) => {
                        g.ended.insert(
                            key,
                            format!("{} #{} by `{}` ended: {}", s.origin.name(), s.id, s.by, end.reason),
                        );
                    }
                }
            }
        }
        g.ended.retain(|k, _| !g.live.contains_key(k));
        g
    }

    /// A master operator shares `cameras` with `site` for `ms` milliseconds.
    pub fn share(
        &mut self,
        site: &str,
        cameras: Vec<String>,
        ms: u64,
        by: &str,
        note: &str,
        now_ms: u64,
    ) -> Result<(u64, Vec<Out>), String> {
        if cameras.is_empty() {
            return Err("choose at least one camera to share".into());
        }
        if cameras.len() > MAX_SHARE_CAMERAS {
            return Err(format!("at most {MAX_SHARE_CAMERAS} cameras in one share"));
        }
        if ms == 0 || ms > MAX_GRANT_MINUTES * 60_000 {
            return Err(format!("a share lasts 1 to {MAX_GRANT_MINUTES} minutes (asked: {} s)", ms / 1000));
        }
        if note.len() > ponte_proto::incident::MAX_TEXT_LEN {
            return Err(format!(
                "the note is {} bytes long; write it in at most {}",
                note.len(),
                ponte_proto::incident::MAX_TEXT_LEN
            ));
        }
        let id = self.id();
        let share = Share {
            id,
            site: site.to_owned(),
            cameras,
            from_ms: now_ms,
            until_ms: now_ms + ms,
            by: by.to_owned(),
            note: ponte_proto::incident::wire_text(note),
            origin: GrantOrigin::Share,
            accepted_by: None,
            accepted_ms: None,
            ended: None,
        };
        let out = vec![
            audit(
                site,
                by,
                Some(share.cameras.join(",")),
                "share",
                "offered",
                format!("share #{id} until {}: {}", at(share.until_ms), share.note),
            ),
            Out::Notify { site: site.to_owned(), notice: share.notice() },
            Out::GrantsChanged,
            Out::Persist,
        ];
        self.shares.insert(id, share);
        Ok((id, out))
    }

    fn end(&mut self, id: u64, reason: String, now_ms: u64) -> Vec<Out> {
        let Some(s) = self.shares.get_mut(&id).filter(|s| s.live()) else { return Vec::new() };
        s.ended = Some(Ended { at_ms: now_ms, reason: reason.clone() });
        vec![
            Out::Notify { site: s.site.clone(), notice: Notice::ShareEnded { id, reason } },
            Out::GrantsChanged,
            Out::Persist,
        ]
    }

    /// A master operator withdraws a share (or an approval) early.
    pub fn withdraw(&mut self, id: u64, by: &str, now_ms: u64) -> Result<Vec<Out>, String> {
        let Some(s) = self.shares.get(&id).filter(|s| s.live()) else {
            return Err(format!("no share #{id} in force"));
        };
        let (site, cameras, name) = (s.site.clone(), s.cameras.join(","), s.origin.name());
        let mut out = vec![audit(
            &site,
            by,
            Some(cameras),
            "withdraw",
            "ended",
            format!("{name} #{id} withdrawn by `{by}`"),
        )];
        out.extend(self.end(id, format!("withdrawn by `{by}` of the master room"), now_ms));
        Ok(out)
    }

    /// An operator of `site` accepts share `id`.
    pub fn accept(&mut self, site: &str, id: u64, operator: &str, now_ms: u64) -> Result<Vec<Out>, String> {
        let Some(s) = self.shares.get_mut(&id).filter(|s| s.site == site && s.live()) else {
            return Err(format!("no share #{id} for site `{site}` in force"));
        };
        if s.accepted_by.is_some() {
            return Ok(Vec::new());
        }
        s.accepted_by = Some(operator.to_owned());
        s.accepted_ms = Some(now_ms);
        let out = vec![
            audit(
                site,
                operator,
                Some(s.cameras.join(",")),
                "accept",
                "accepted",
                format!("share #{id} by `{}`", s.by),
            ),
            Out::Notify { site: site.to_owned(), notice: s.notice() },
            Out::Persist,
        ];
        Ok(out)
    }

    /// An operator of `site` asks for `camera`.
    pub fn ask(
        &mut self,
        site: &str,
        relay_id: u64,
        camera: &str,
        operator: &str,
        reason: &str,
        now_ms: u64,
    ) -> Vec<Out> {
        if self.asks.values().any(|a| a.site == site && a.relay_id == relay_id) {
            return Vec::new();
        }
        let id = self.id();
        let ask = Ask {
            id,
            site: site.to_owned(),
            relay_id,
            camera: camera.to_owned(),
            operator: operator.to_owned(),
            reason: reason.to_owned(),
            asked_ms: now_ms,
            expires_ms: now_ms + self.settings.ask_ttl_ms,
            answer: None,
        };
        self.asks.insert(id, ask);
        vec![audit(site, operator, Some(camera.to_owned()), "ask", "pending", format!("ask #{id}: {reason}"))]
    }

    fn pending(&mut self, id: u64) -> Result<&mut Ask, String> {
        match self.asks.get_mut(&id) {
            Some(a) if a.answer.is_none() => Ok(a),
            Some(_) => Err(format!("ask #{id} was already answered")),
            None => Err(format!("no ask #{id}")),
        }
    }

    /// A master operator approves ask `id` for `minutes`: `cameras` is what
    /// the ask named, resolved to camera ids by the shell.
    pub fn approve(
        &mut self,
        id: u64,
        camera: &str,
        minutes: u64,
        by: &str,
        now_ms: u64,
    ) -> Result<Vec<Out>, String> {
        if minutes == 0 || minutes > MAX_GRANT_MINUTES {
            return Err(format!("an approval lasts 1 to {MAX_GRANT_MINUTES} minutes (asked: {minutes})"));
        }
        let until_ms = now_ms + minutes * 60_000;
        let ask = self.pending(id)?;
        ask.answer = Some(Answer {
            approved: true,
            by: by.to_owned(),
            reason: String::new(),
            at_ms: now_ms,
            until_ms: Some(until_ms),
        });
        let ask = ask.clone();
        let grant = self.id();
        let share = Share {
            id: grant,
            site: ask.site.clone(),
            cameras: vec![camera.to_owned()],
            from_ms: now_ms,
            until_ms,
            by: by.to_owned(),
            note: ask.reason.clone(),
            origin: GrantOrigin::Approval,
            accepted_by: Some(ask.operator.clone()),
            accepted_ms: Some(now_ms),
            ended: None,
        };
        let out = vec![
            audit(
                &ask.site,
                by,
                Some(camera.to_owned()),
                "approve",
                "approved",
                format!("ask #{id} of `{}` approved until {} (grant #{grant})", ask.operator, at(until_ms)),
            ),
            Out::Notify { site: ask.site.clone(), notice: share.notice() },
            Out::Notify {
                site: ask.site.clone(),
                notice: Notice::Answer {
                    ask: ask.relay_id,
                    approved: true,
                    by: by.to_owned(),
                    reason: String::new(),
                    until_ms: Some(until_ms),
                },
            },
            Out::GrantsChanged,
            Out::Persist,
        ];
        self.shares.insert(grant, share);
        Ok(out)
    }

    /// A master operator refuses ask `id`, saying why.
    pub fn refuse(&mut self, id: u64, by: &str, reason: &str, now_ms: u64) -> Result<Vec<Out>, String> {
        if reason.trim().len() > ponte_proto::incident::MAX_TEXT_LEN {
            return Err(format!(
                "the reason is too long; write it in at most {} bytes",
                ponte_proto::incident::MAX_TEXT_LEN
            ));
        }
        let reason = ponte_proto::incident::wire_text(reason.trim());
        if reason.is_empty() {
            return Err("say why the ask is refused: the partner room sees the reason".into());
        }
        let ask = self.pending(id)?;
        ask.answer = Some(Answer {
            approved: false,
            by: by.to_owned(),
            reason: reason.clone(),
            at_ms: now_ms,
            until_ms: None,
        });
        let ask = ask.clone();
        Ok(vec![
            audit(
                &ask.site,
                by,
                Some(ask.camera.clone()),
                "refuse",
                "refused",
                format!("ask #{id} of `{}`: {reason}", ask.operator),
            ),
            Out::Notify {
                site: ask.site.clone(),
                notice: Notice::Answer {
                    ask: ask.relay_id,
                    approved: false,
                    by: by.to_owned(),
                    reason,
                    until_ms: None,
                },
            },
        ])
    }

    /// Whether an alarm of `camera` and `kind` may go out at `now_ms`
    /// (one per `alarm_interval_ms`); a refusal is counted.
    pub fn admit(&mut self, camera: &str, kind: AlarmKind, now_ms: u64) -> Admit {
        let interval = self.settings.alarm_interval_ms;
        let limit = self.limits.entry((camera.to_owned(), kind)).or_default();
        match limit.last_ms {
            Some(last) if now_ms < last.saturating_add(interval) => {
                limit.suppressed += 1;
                self.suppressed_total += 1;
                Admit::Suppressed
            }
            _ => {
                limit.last_ms = Some(now_ms);
                Admit::Raise { suppressed: std::mem::take(&mut limit.suppressed) }
            }
        }
    }

    /// Events suppressed by the rate limit since the start.
    pub fn suppressed_total(&self) -> u64 {
        self.suppressed_total
    }

    /// Alarms raised since the start.
    pub fn raised_total(&self) -> u64 {
        self.raised_total
    }

    /// Suppressed since the last alarm, per camera and kind (for the console).
    pub fn suppressed_now(&self) -> Vec<(String, AlarmKind, u64)> {
        let mut v: Vec<_> = self
            .limits
            .iter()
            .filter(|(_, l)| l.suppressed > 0)
            .map(|((c, k), l)| (c.clone(), *k, l.suppressed))
            .collect();
        v.sort();
        v
    }

    /// An alarm admitted by [`Self::admit`] goes to `sites`.
    #[allow(clippy::too_many_arguments)]
    pub fn raise(
        &mut self,
        camera: &str,
        kind: AlarmKind,
        detail: &str,
        sites: Vec<String>,
        thumbnail: Option<String>,
        suppressed: u64,
        now_ms: u64,
    ) -> (u64, Vec<Out>) {
        let id = self.id();
        self.raised_total += 1;
        let alarm = Alarm {
            id,
            camera: camera.to_owned(),
            kind,
            at_ms: now_ms,
            detail: ponte_proto::incident::wire_text(detail),
            has_thumbnail: thumbnail.is_some(),
            thumbnail,
            sites,
            suppressed,
            acks: Vec::new(),
        };
        let mut out = vec![audit(
            MASTER_SITE,
            "agent",
            Some(camera.to_owned()),
            "alarm",
            kind.name(),
            format!(
                "alarm #{id}: {}; sent to {}{}",
                alarm.detail,
                if alarm.sites.is_empty() { "no site".to_owned() } else { alarm.sites.join(", ") },
                if suppressed > 0 { format!("; {suppressed} suppressed before it") } else { String::new() }
            ),
        )];
        for site in &alarm.sites {
            out.push(Out::Notify { site: site.clone(), notice: alarm.notice() });
        }
        self.alarms.push_back(alarm);
        while self.alarms.len() > KEEP_ALARMS {
            self.alarms.pop_front();
        }
        (id, out)
    }

    /// `operator` of `site` (or of the master room) acknowledges alarm `id`.
    pub fn ack(&mut self, id: u64, site: &str, operator: &str, now_ms: u64) -> Result<Vec<Out>, String> {
        let Some(alarm) = self.alarms.iter_mut().find(|a| a.id == id) else {
            return Err(format!("no alarm #{id} (only the newest {KEEP_ALARMS} are kept)"));
        };
        if site != MASTER_SITE && !alarm.sites.iter().any(|s| s == site) {
            return Err(format!("alarm #{id} was not sent to site `{site}`"));
        }
        if alarm.acks.iter().any(|a| a.site == site && a.operator == operator) {
            return Ok(Vec::new());
        }
        alarm.acks.push(Ack { site: site.to_owned(), operator: operator.to_owned(), at_ms: now_ms });
        let mut out = vec![audit(
            site,
            operator,
            Some(alarm.camera.clone()),
            "acknowledge",
            "acknowledged",
            format!("alarm #{id} ({})", alarm.kind.name()),
        )];
        let notice =
            Notice::AlarmAck { id, site: site.to_owned(), operator: operator.to_owned(), at_ms: now_ms };
        for s in &alarm.sites {
            out.push(Out::Notify { site: s.clone(), notice: notice.clone() });
        }
        Ok(out)
    }

    /// Ends what expired by `now_ms` and forgets what is old.
    pub fn poll(&mut self, now_ms: u64) -> Vec<Out> {
        let mut out = Vec::new();
        let expired: Vec<u64> =
            self.shares.values().filter(|s| s.live() && s.until_ms <= now_ms).map(|s| s.id).collect();
        for id in expired {
            let Some(s) = self.shares.get(&id) else { continue };
            let until = s.until_ms;
            out.push(audit(
                &s.site,
                &s.by,
                Some(s.cameras.join(",")),
                s.origin.action(),
                "expired",
                format!("{} #{id} expired at {}", s.origin.name(), at(s.until_ms)),
            ));
            out.extend(self.end(id, format!("expired at {}", at(until)), now_ms));
        }
        let overdue: Vec<u64> = self
            .asks
            .values()
            .filter(|a| a.answer.is_none() && a.expires_ms <= now_ms)
            .map(|a| a.id)
            .collect();
        for id in overdue {
            let Some(a) = self.asks.get_mut(&id) else { continue };
            let reason = "no answer from the master room in time; ask again or call them".to_owned();
            a.answer = Some(Answer {
                approved: false,
                by: MASTER_SITE.to_owned(),
                reason: reason.clone(),
                at_ms: now_ms,
                until_ms: None,
            });
            out.push(audit(
                &a.site,
                &a.operator,
                Some(a.camera.clone()),
                "ask",
                "expired",
                format!("ask #{id} unanswered"),
            ));
            out.push(Out::Notify {
                site: a.site.clone(),
                notice: Notice::Answer {
                    ask: a.relay_id,
                    approved: false,
                    by: MASTER_SITE.to_owned(),
                    reason,
                    until_ms: None,
                },
            });
        }
        let old = now_ms.saturating_sub(KEEP_ENDED_MS);
        self.shares.retain(|_, s| s.ended.as_ref().is_none_or(|e| e.at_ms > old));
        self.asks.retain(|_, a| a.answer.as_ref().is_none_or(|x| x.at_ms > old));
        out
    }

    /// When [`Self::poll`] next has something to do, Unix ms.
    pub fn next_deadline(&self) -> Option<u64> {
        let shares = self.shares.values().filter(|s| s.live()).map(|s| s.until_ms);
        let asks = self.asks.values().filter(|a| a.answer.is_none()).map(|a| a.expires_ms);
        shares.chain(asks).min()
    }

    /// What a (re)connecting relay of `site` is told: its shares in force,
    /// the answers to its asks, its recent alarms and their acknowledgements.
    pub fn snapshot_for(&self, site: &str) -> Vec<Notice> {
        let mut out: Vec<Notice> =
            self.shares.values().filter(|s| s.site == site && s.live()).map(Share::notice).collect();
        for a in self.asks.values().filter(|a| a.site == site) {
            if let Some(x) = &a.answer {
                out.push(Notice::Answer {
                    ask: a.relay_id,
                    approved: x.approved,
                    by: x.by.clone(),
                    reason: x.reason.clone(),
                    until_ms: x.until_ms,
                });
            }
        }
        let mine: Vec<&Alarm> = self.alarms.iter().filter(|a| a.sites.iter().any(|s| s == site)).collect();
        for a in mine.iter().skip(mine.len().saturating_sub(RESEND_ALARMS)) {
            out.push(a.notice());
            for k in &a.acks {
                out.push(Notice::AlarmAck {
                    id: a.id,
                    site: k.site.clone(),
                    operator: k.operator.clone(),
                    at_ms: k.at_ms,
                });
            }
        }
        out
    }

    /// Every grant given or taken over, in force or lately ended, for the
    /// other agents of the master room.
    pub fn export(&self) -> Vec<PeerGrant> {
        self.shares
            .values()
            .map(|s| PeerGrant {
                id: s.id,
                site: s.site.clone(),
                cameras: s.cameras.clone(),
                from_ms: s.from_ms,
                until_ms: s.until_ms,
                by: s.by.clone(),
                note: s.note.clone(),
                origin: s.origin.name().to_owned(),
                accepted_by: s.accepted_by.clone(),
                accepted_ms: s.accepted_ms,
                ended: s.ended.as_ref().map(|e| e.reason.clone()),
            })
            .collect()
    }

    /// The grants of agent `peer`: one it gave that this agent does not
    /// know yet is taken over (its site keeps it if `peer` dies); one it
    /// ended or that was accepted there is ended or accepted here too.
    /// Nothing changes for what this agent already knows the same way, so
    /// two agents sending each other their lists settle.
    pub fn merge(&mut self, peer: &str, grants: Vec<PeerGrant>, now_ms: u64) -> Vec<Out> {
        let mut out = Vec::new();
        for g in grants {
            let origin = if g.origin == "approval" { GrantOrigin::Approval } else { GrantOrigin::Share };
            match self.shares.get_mut(&g.id) {
                // The same id for another grant (ids are per agent): not this one.
                Some(local) if local.site != g.site || local.from_ms != g.from_ms => {
                    tracing::warn!(
                        peer,
                        grant = g.id,
                        "incident: another agent's grant has the id of one of ours; ignored"
                    );
                }
                Some(local) => {
                    if local.accepted_by.is_none() && g.accepted_by.is_some() && local.live() {
                        local.accepted_by = g.accepted_by.clone();
                        local.accepted_ms = g.accepted_ms;
                        out.push(Out::Notify { site: local.site.clone(), notice: local.notice() });
                        out.push(Out::Persist);
                    }
                    let ending = local.live().then_some(()).and(g.ended);
                    let (site, cameras, by) = (local.site.clone(), local.cameras.join(","), local.by.clone());
                    if let Some(why) = ending {
                        out.push(audit(
                            &site,
                            &by,
                            Some(cameras),
                            origin.action(),
                            "ended",
                            format!("{} #{} ended at agent `{peer}`: {why}", origin.name(), g.id),
                        ));
                        out.extend(self.end(g.id, why, now_ms));
                    }
                }
                None if g.ended.is_none() && g.until_ms > now_ms => {
                    out.push(audit(
                        &g.site,
                        &g.by,
                        Some(g.cameras.join(",")),
                        origin.action(),
                        "replicated",
                        format!("{} #{} of agent `{peer}` until {}", origin.name(), g.id, at(g.until_ms)),
                    ));
                    let share = Share {
                        id: g.id,
                        site: g.site,
                        cameras: g.cameras,
                        from_ms: g.from_ms,
                        until_ms: g.until_ms,
                        by: g.by,
                        note: g.note,
                        origin,
                        accepted_by: g.accepted_by,
                        accepted_ms: g.accepted_ms,
                        ended: None,
                    };
                    out.push(Out::Notify { site: share.site.clone(), notice: share.notice() });
                    out.push(Out::GrantsChanged);
                    out.push(Out::Persist);
                    self.next_id = self.next_id.max(share.id);
                    self.shares.insert(share.id, share);
                }
                None => {}
            }
        }
        out
    }

    /// Shares and approvals, newest first (in force and recently ended).
    pub fn shares(&self) -> impl Iterator<Item = &Share> {
        self.shares.values().rev()
    }

    /// Asks, newest first.
    pub fn asks(&self) -> impl Iterator<Item = &Ask> {
        self.asks.values().rev()
    }

    /// Alarms, newest first.
    pub fn alarms(&self) -> impl Iterator<Item = &Alarm> {
        self.alarms.iter().rev()
    }

    /// One alarm.
    pub fn alarm(&self, id: u64) -> Option<&Alarm> {
        self.alarms.iter().find(|a| a.id == id)
    }

    /// One ask.
    pub fn ask_by_id(&self, id: u64) -> Option<&Ask> {
        self.asks.get(&id)
    }
}

#[cfg(test)]
mod tests;
