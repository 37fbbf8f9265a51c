//! Per-site access policy, evaluated at the source. Pure functions of
//! (policy, camera, quality, local time): no clock, no I/O.
//!
//! Rules: a camera is visible to a site when an `allow` selector matches it
//! and no `deny` selector does (deny always wins). A visible camera may be
//! received at `max_quality` or lower, inside the site's time windows.

use crate::media::Quality;
use crate::shaping::Priority;
use serde::{Deserialize, Serialize};
use std::fmt;

/// Why a policy text could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    /// A selector is not `*`, `camera:`, `device:`, `zone:`, `tag:` or `type:`.
    #[error("selector {0:?}: expected `*`, `camera:<id>`, `device:<id>`, `zone:<name>`, `tag:<tag>` or `type:<type>`")]
    Selector(String),
    /// A time window is malformed.
    #[error("time window {0:?}: expected e.g. `mon-fri 08:00-20:00`, `sat,sun 09:00-13:00` or `daily 22:00-06:00`")]
    Window(String),
}

/// What a selector can match on: the facts of one camera (lens).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CameraFacts<'a> {
    /// Camera id.
    pub id: &'a str,
    /// Device id.
    pub device: &'a str,
    /// Zone.
    pub zone: &'a str,
    /// Camera type (`dome-ptz`, ...).
    pub kind: &'a str,
    /// Tags of the device.
    pub tags: &'a [String],
}

/// One selector of an allow or deny list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selector {
    /// Every camera.
    All,
    /// A camera id.
    Camera(String),
    /// Every lens of a device.
    Device(String),
    /// A zone (case-insensitive).
    Zone(String),
    /// A tag (case-insensitive).
    Tag(String),
    /// A camera type.
    Type(String),
}

impl Selector {
    /// Parses `*`, `camera:x`, `device:x`, `zone:x`, `tag:x`, `type:x`.
    pub fn parse(s: &str) -> Result<Self, PolicyError> {
        let s = s.trim();
        if s == "*" {
            return Ok(Selector::All);
        }
        let (kind, value) = s.split_once(':').ok_or_else(|| PolicyError::Selector(s.to_owned()))?;
        let value = value.trim();
        if value.is_empty() {
            return Err(PolicyError::Selector(s.to_owned()));
        }
        let v = value.to_owned();
        Ok(match kind.trim() {
            "camera" => Selector::Camera(v),
            "device" => Selector::Device(v),
            "zone" => Selector::Zone(v),
            "tag" => Selector::Tag(v),
            "type" => Selector::Type(v),
            _ => return Err(PolicyError::Selector(s.to_owned())),
        })
    }

    /// True when the selector names this camera.
    pub fn matches(&self, cam: &CameraFacts<'_>) -> bool {
        match self {
            Selector::All => true,
            Selector::Camera(id) => id == cam.id,
            Selector::Device(d) => d == cam.device,
            Selector::Zone(z) => z.eq_ignore_ascii_case(cam.zone),
            Selector::Tag(t) => cam.tags.iter().any(|x| x.eq_ignore_ascii_case(t)),
            Selector::Type(k) => k == cam.kind,
        }
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Selector::All => write!(f, "*"),
            Selector::Camera(v) => write!(f, "camera:{v}"),
            Selector::Device(v) => write!(f, "device:{v}"),
            Selector::Zone(v) => write!(f, "zone:{v}"),
            Selector::Tag(v) => write!(f, "tag:{v}"),
            Selector::Type(v) => write!(f, "type:{v}"),
        }
    }
}

/// Local wall-clock time, as the policy sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LocalTime {
    /// Day of week, 0 = Monday … 6 = Sunday.
    pub weekday: u8,
    /// Minutes since local midnight, 0..1440.
    pub minute: u16,
}

const DAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

/// A weekly time window, e.g. `mon-fri 08:00-20:00`. A window whose end is
/// before its start runs past midnight into the next day.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimeWindow {
    days: [bool; 7],
    start: u16,
    end: u16,
    text: String,
}

fn parse_hhmm(s: &str) -> Option<u16> {
    let (h, m) = s.split_once(':')?;
    let (h, m): (u16, u16) = (h.parse().ok()?, m.parse().ok()?);
    if m >= 60 || h > 24 || (h == 24 && m != 0) {
        return None;
    }
    Some(h * 60 + m)
}

impl TimeWindow {
    /// Parses `DAYS HH:MM-HH:MM` where DAYS is `daily`, a day, a range
    /// (`mon-fri`) or a comma list (`sat,sun`).
    pub fn parse(s: &str) -> Result<Self, PolicyError> {
        let err = || PolicyError::Window(s.to_owned());
        let mut parts = s.split_whitespace();
        let (days_txt, hours) = match (parts.next(), parts.next(), parts.next()) {
            (Some(d), Some(h), None) => (d, h),
            (Some(h), None, None) if h.contains(':') => ("daily", h),
            _ => return Err(err()),
        };
        let mut days = [false; 7];
        let day = |d: &str| DAYS.iter().position(|x| *x == d);
        for item in days_txt.to_ascii_lowercase().split(',') {
            if item == "daily" || item == "all" {
                days = [true; 7];
            } else if let Some((a, b)) = item.split_once('-') {
                let (a, b) = (day(a).ok_or_else(err)?, day(b).ok_or_else(err)?);
                let mut i = a;
                loop {
                    *days.get_mut(i).ok_or_else(err)? = true;
                    if i == b {
                        break;
                    }
                    i = (i + 1) % 7;
                }
            } else {
                let i = day(item).ok_or_else(err)?;
                *days.get_mut(i).ok_or_else(err)? = true;
            }
        }
        let (a, b) = hours.split_once('-').ok_or_else(err)?;
        let (start, end) = (parse_hhmm(a).ok_or_else(err)?, parse_hhmm(b).ok_or_else(err)?);
        if start == end {
            return Err(err());
        }
        Ok(Self { days, start, end, text: s.trim().to_owned() })
    }

    /// True when `t` falls inside the window.
    pub fn contains(&self, t: LocalTime) -> bool {
        let day = (t.weekday % 7) as usize;
        let listed = |d: usize| self.days.get(d) == Some(&true);
        if self.start < self.end {
            listed(day) && t.minute >= self.start && t.minute < self.end
        } else {
            // Overnight: the part after start on a listed day, or the part
            // before end on the day after a listed day.
            let yesterday = (day + 6) % 7;
            (listed(day) && t.minute >= self.start) || (listed(yesterday) && t.minute < self.end)
        }
    }
}

impl fmt::Display for TimeWindow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// The policy of one site, parsed and ready to evaluate.
#[derive(Debug, Clone, PartialEq)]
pub struct SitePolicy {
    /// Site id (as named by its certificate).
    pub site: String,
    /// Selectors granting cameras.
    pub allow: Vec<Selector>,
    /// Selectors withholding cameras; deny wins over allow.
    pub deny: Vec<Selector>,
    /// Highest quality the site may receive.
    pub max_quality: Quality,
    /// Cameras streamed even with no viewer (still subject to allow/deny).
    pub always_on: Vec<Selector>,
    /// Cameras sent on every path to the site's relay at once (issue 22).
    pub dual_path: Vec<Selector>,
    /// Whether the site may steer PTZ cameras.
    pub ptz: bool,
    /// PTZ priority (higher wins a PTZ lock).
    pub ptz_priority: u8,
    /// When the site may receive video; empty means always.
    pub windows: Vec<TimeWindow>,
    /// Most concurrent streams (None: unlimited).
    pub max_streams: Option<u32>,
    /// Link budget in Mbit/s (None: unlimited), used by shaping.
    pub budget_mbps: Option<f64>,
    /// Burst allowance above the budget, KiB (None: 250 ms of the budget).
    pub burst_kb: Option<u64>,
    /// Shaping priority classes; cameras matched by none are `normal`.
    pub priority: PriorityRules,
    /// Recall rights (issue 21): playback, how far back, export.
    pub recall: RecallRights,
}

/// What a site may do with the master room's recordings; nothing by default.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct RecallRights {
    /// May play recordings back (`playback = true`).
    pub playback: bool,
    /// How far back it may reach, hours (`max_lookback_hours`; None: as far
    /// as the recordings go).
    pub max_lookback_hours: Option<f64>,
    /// May take evidence exports (`export = true`).
    pub export: bool,
}

/// What a site asks of the recordings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecallUse {
    /// Playback from a time.
    Playback,
    /// An evidence export from a time.
    Export,
}

/// Selectors of the shaping priority classes, compiled.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PriorityRules {
    /// Step down last.
    pub critical: Vec<Selector>,
    /// Before normal.
    pub high: Vec<Selector>,
    /// Step down first.
    pub low: Vec<Selector>,
}

/// `priority = { critical = [...], high = [...], low = [...] }` of a `[[site]]`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PriorityConfig {
    /// Cameras that step down last (selectors).
    #[serde(default)]
    pub critical: Vec<String>,
    /// Cameras before normal ones.
    #[serde(default)]
    pub high: Vec<String>,
    /// Cameras that step down first.
    #[serde(default)]
    pub low: Vec<String>,
}

/// The text form of a site policy, as written in the agent's config.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SitePolicyConfig {
    /// Site id: the relay's certificate identity.
    pub id: String,
    /// Selectors granting cameras (`*`, `camera:`, `device:`, `zone:`, `tag:`, `type:`).
    #[serde(default)]
    pub allow: Vec<String>,
    /// Selectors withholding cameras (wins over allow).
    #[serde(default)]
    pub deny: Vec<String>,
    /// `main` (default) or `sub`.
    #[serde(default)]
    pub max_quality: Option<Quality>,
    /// Cameras streamed with no viewer, e.g. for the site's VMS.
    #[serde(default)]
    pub always_on: Vec<String>,
    /// Cameras sent on every path to the site's relay at once (`["*"]`:
    /// all it sees; `["tag:critical"]`...), where the agent reaches it on
    /// more than one (`[[relay]] paths`): a cut path loses no frame.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dual_path: Vec<String>,
    /// PTZ right.
    #[serde(default)]
    pub ptz: bool,
    /// PTZ priority, 0-99 (the master room is 100).
    #[serde(default)]
    pub ptz_priority: u8,
    /// Time windows, e.g. `["mon-fri 08:00-20:00"]`; empty = always.
    #[serde(default)]
    pub windows: Vec<String>,
    /// Most concurrent streams.
    #[serde(default)]
    pub max_streams: Option<u32>,
    /// Link budget, Mbit/s.
    #[serde(default)]
    pub budget_mbps: Option<f64>,
    /// Burst allowance above the budget, KiB (default: 250 ms of the budget).
    #[serde(default)]
    pub burst_kb: Option<u64>,
    /// Shaping priority by selector, e.g. `{ critical = ["camera:x"], low = ["tag:park"] }`;
    /// a camera in several classes gets the highest, unlisted ones `normal`.
    #[serde(default)]
    pub priority: PriorityConfig,
    /// May play the master room's recordings back (default false).
    #[serde(default)]
    pub playback: bool,
    /// How far back playback and exports may reach, hours (default: as far
    /// as the recordings go).
    #[serde(default)]
    pub max_lookback_hours: Option<f64>,
    /// May take signed evidence exports (default false).
    #[serde(default)]
    pub export: bool,
}

impl SitePolicyConfig {
    /// Parses selectors and windows.
    pub fn compile(&self) -> Result<SitePolicy, PolicyError> {
        let sel = |v: &[String]| v.iter().map(|s| Selector::parse(s)).collect::<Result<Vec<_>, _>>();
        Ok(SitePolicy {
            site: self.id.clone(),
            allow: sel(&self.allow)?,
            deny: sel(&self.deny)?,
            max_quality: self.max_quality.unwrap_or(Quality::Main),
            always_on: sel(&self.always_on)?,
            dual_path: sel(&self.dual_path)?,
            ptz: self.ptz,
            ptz_priority: self.ptz_priority.min(99),
            windows: self.windows.iter().map(|w| TimeWindow::parse(w)).collect::<Result<_, _>>()?,
            max_streams: self.max_streams,
            budget_mbps: self.budget_mbps,
            burst_kb: self.burst_kb,
            priority: PriorityRules {
                critical: sel(&self.priority.critical)?,
                high: sel(&self.priority.high)?,
                low: sel(&self.priority.low)?,
            },
            recall: RecallRights {
                playback: self.playback,
                max_lookback_hours: self.max_lookback_hours,
                export: self.export,
            },
        })
    }
}

/// Whether a site may see a camera at all (the catalog filter), and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Visibility {
    /// Granted by this allow selector.
    Granted(Selector),
    /// Withheld by this deny selector.
    Denied(Selector),
    /// No allow selector matches.
    NotGranted,
}

/// The outcome of evaluating one subscription.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Allowed; `rule` says which selector granted it.
    Allow {
        /// The granting selector.
        rule: String,
    },
    /// Refused, with a reason naming the rule.
    Deny {
        /// Whether the camera is hidden from the site (`unknown`) rather than visible but refused (`forbidden`).
        hidden: bool,
        /// Explanation for logs, audit and the viewer.
        reason: String,
    },
}

impl Decision {
    /// True for `Allow`.
    pub fn allowed(&self) -> bool {
        matches!(self, Decision::Allow { .. })
    }
}

impl SitePolicy {
    /// Catalog filter: allow/deny only (time windows do not hide cameras).
    pub fn visibility(&self, cam: &CameraFacts<'_>) -> Visibility {
        if let Some(d) = self.deny.iter().find(|s| s.matches(cam)) {
            return Visibility::Denied(d.clone());
        }
        match self.allow.iter().find(|s| s.matches(cam)) {
            Some(a) => Visibility::Granted(a.clone()),
            None => Visibility::NotGranted,
        }
    }

    /// Qualities the site may receive of a visible camera.
    pub fn qualities(&self, offered: &[Quality]) -> Vec<Quality> {
        offered.iter().copied().filter(|q| *q >= self.max_quality).collect()
    }

    /// True when `now` is inside the site's windows (or it has none).
    pub fn in_window(&self, now: LocalTime) -> bool {
        self.windows.is_empty() || self.windows.iter().any(|w| w.contains(now))
    }

    /// Whether the site may receive `cam` at `quality` at local time `now`.
    pub fn evaluate(&self, cam: &CameraFacts<'_>, quality: Quality, now: LocalTime) -> Decision {
        let rule = match self.visibility(cam) {
            Visibility::Granted(rule) => rule,
            Visibility::Denied(rule) => {
                return Decision::Deny {
                    hidden: true,
                    reason: format!(
                        "camera `{}` is withheld from site `{}` by deny rule `{rule}`",
                        cam.id, self.site
                    ),
                }
            }
            Visibility::NotGranted => {
                return Decision::Deny {
                    hidden: true,
                    reason: format!(
                        "camera `{}` is not granted to site `{}` by any allow rule",
                        cam.id, self.site
                    ),
                }
            }
        };
        // `Sub` orders after `Main`: a site capped at `sub` cannot get `main`.
        if quality < self.max_quality {
            return Decision::Deny {
                hidden: false,
                reason: format!(
                    "site `{}` may receive camera `{}` at `{}` quality at most; subscribe to the substream",
                    self.site,
                    cam.id,
                    self.max_quality.name()
                ),
            };
        }
        if !self.in_window(now) {
            let windows: Vec<String> = self.windows.iter().map(|w| w.to_string()).collect();
            return Decision::Deny {
                hidden: false,
                reason: format!("site `{}` may receive video only during {}", self.site, windows.join(", ")),
            };
        }
        Decision::Allow { rule: rule.to_string() }
    }

    /// Whether the site may use the recordings of `cam` (`what`) from
    /// `from_ms` (Unix ms) at `now_ms`: the live decision first (a camera
    /// the site may not watch live it may not rewind either), then the
    /// right asked for, then the lookback; a refusal names the missing
    /// right and its key.
    pub fn evaluate_recall(
        &self,
        cam: &CameraFacts<'_>,
        quality: Quality,
        now: LocalTime,
        what: RecallUse,
        from_ms: u64,
        now_ms: u64,
    ) -> Decision {
        let live = self.evaluate(cam, quality, now);
        if !live.allowed() {
            return live;
        }
        let (right, granted) = match what {
            RecallUse::Playback => ("playback", self.recall.playback),
            RecallUse::Export => ("export", self.recall.export),
        };
        if !granted {
            return Decision::Deny {
                hidden: false,
                reason: format!(
                    "site `{}` has no `{right}` right on the recordings (`{right} = true` in its [[site]] \
                     policy at the master room)",
                    self.site
                ),
            };
        }
        // A minute of slack for the two clocks.
        if from_ms > now_ms.saturating_add(60_000) {
            return Decision::Deny {
                hidden: false,
                reason: format!(
                    "the time asked for is {:.0} s in the future of the master room's clock: nothing is recorded there yet",
                    (from_ms - now_ms) as f64 / 1000.0
                ),
            };
        }
        if let Some(hours) = self.recall.max_lookback_hours {
            let back_ms = now_ms.saturating_sub(from_ms);
            if back_ms as f64 > hours * 3_600_000.0 {
                return Decision::Deny {
                    hidden: false,
                    reason: format!(
                        "site `{}` may reach back at most {hours} h (`max_lookback_hours`); the request \
                         reaches back {:.2} h",
                        self.site,
                        back_ms as f64 / 3_600_000.0
                    ),
                };
            }
        }
        live
    }

    /// True when the camera should stream to this site even with no viewer.
    pub fn always_on(&self, cam: &CameraFacts<'_>) -> bool {
        self.always_on.iter().any(|s| s.matches(cam))
    }

    /// Whether `cam` goes on every path to the site's relay at once.
    pub fn dual_path(&self, cam: &CameraFacts<'_>) -> bool {
        self.dual_path.iter().any(|s| s.matches(cam))
    }

    /// Shaping priority of a camera: the highest class that names it, else `normal`.
    pub fn priority(&self, cam: &CameraFacts<'_>) -> Priority {
        let r = &self.priority;
        let named = |list: &[Selector]| list.iter().any(|s| s.matches(cam));
        if named(&r.critical) {
            Priority::Critical
        } else if named(&r.high) {
            Priority::High
        } else if named(&r.low) {
            Priority::Low
        } else {
            Priority::Normal
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn cam<'a>(id: &'a str, zone: &'a str, tags: &'a [String]) -> CameraFacts<'a> {
        CameraFacts { id, device: id, zone, kind: "dome-ptz", tags }
    }

    fn policy(allow: &[&str], deny: &[&str]) -> SitePolicy {
        SitePolicyConfig {
            id: "carabinieri".into(),
            allow: allow.iter().map(|s| s.to_string()).collect(),
            deny: deny.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
        .compile()
        .unwrap()
    }

    const NOON_MON: LocalTime = LocalTime { weekday: 0, minute: 12 * 60 };

    #[test]
    fn deny_wins_and_reasons_name_the_rule() {
        let tags = vec!["hospital".to_string()];
        let p = policy(&["zone:Giuseppina"], &["tag:hospital"]);
        let d = p.evaluate(&cam("osp-1", "giuseppina", &tags), Quality::Main, NOON_MON);
        assert!(
            matches!(&d, Decision::Deny { hidden: true, reason } if reason.contains("tag:hospital")),
            "{d:?}"
        );
        let ok = p.evaluate(&cam("caccia", "Giuseppina", &[]), Quality::Main, NOON_MON);
        assert_eq!(ok, Decision::Allow { rule: "zone:Giuseppina".into() });
        let none = p.evaluate(&cam("zaist", "Zaist", &[]), Quality::Main, NOON_MON);
        assert!(matches!(none, Decision::Deny { hidden: true, .. }));
    }

    #[test]
    fn quality_cap_refuses_main_but_allows_sub() {
        let mut p = policy(&["*"], &[]);
        p.max_quality = Quality::Sub;
        let c = cam("a", "z", &[]);
        assert!(matches!(p.evaluate(&c, Quality::Main, NOON_MON), Decision::Deny { hidden: false, .. }));
        assert!(p.evaluate(&c, Quality::Sub, NOON_MON).allowed());
        assert_eq!(p.qualities(&[Quality::Main, Quality::Sub]), vec![Quality::Sub]);
    }

    #[test]
    fn windows_including_overnight() {
        let w = TimeWindow::parse("mon-fri 08:00-20:00").unwrap();
        assert!(w.contains(LocalTime { weekday: 0, minute: 8 * 60 }));
        assert!(!w.contains(LocalTime { weekday: 0, minute: 20 * 60 }));
        assert!(!w.contains(LocalTime { weekday: 5, minute: 12 * 60 }));
        let n = TimeWindow::parse("fri 22:00-06:00").unwrap();
        assert!(n.contains(LocalTime { weekday: 4, minute: 23 * 60 }));
        assert!(n.contains(LocalTime { weekday: 5, minute: 5 * 60 }));
        assert!(!n.contains(LocalTime { weekday: 5, minute: 23 * 60 }));
        let wrap = TimeWindow::parse("sat-mon 10:00-11:00").unwrap();
        assert!(wrap.contains(LocalTime { weekday: 6, minute: 630 }));
        assert!(wrap.contains(LocalTime { weekday: 0, minute: 630 }));
        assert!(!wrap.contains(LocalTime { weekday: 1, minute: 630 }));
        assert!(TimeWindow::parse("daily 00:00-24:00")
            .unwrap()
            .contains(LocalTime { weekday: 3, minute: 1439 }));
        for bad in [
            "",
            "mon",
            "mon 8-20",
            "mon 08:00-08:00",
            "xyz 08:00-09:00",
            "mon 25:00-26:00",
            "mon 08:61-09:00",
        ] {
            assert!(TimeWindow::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn priorities_by_selector_highest_wins_default_normal() {
        let cfg: SitePolicyConfig = serde_json::from_value(serde_json::json!({
            "id": "questura",
            "allow": ["*"],
            "budget_mbps": 16.0,
            "burst_kb": 512,
            "priority": { "critical": ["camera:a"], "high": ["zone:Zaist"], "low": ["tag:park", "zone:Zaist"] }
        }))
        .unwrap();
        let p = cfg.compile().unwrap();
        assert_eq!((p.budget_mbps, p.burst_kb), (Some(16.0), Some(512)));
        let park = vec!["park".to_string()];
        assert_eq!(p.priority(&cam("a", "Zaist", &park)), Priority::Critical);
        assert_eq!(p.priority(&cam("b", "zaist", &park)), Priority::High);
        assert_eq!(p.priority(&cam("c", "Po", &park)), Priority::Low);
        assert_eq!(p.priority(&cam("d", "Po", &[])), Priority::Normal);
        let typo = serde_json::json!({ "id": "q", "priority": { "critcal": ["*"] } });
        let err = serde_json::from_value::<SitePolicyConfig>(typo).unwrap_err().to_string();
        assert!(err.contains("critcal"), "{err}");
        let bad = SitePolicyConfig {
            priority: PriorityConfig { low: vec!["nope".into()], ..Default::default() },
            ..cfg
        };
        assert!(bad.compile().is_err());
    }

    #[test]
    fn recall_needs_its_right_and_stays_inside_the_lookback() {
        let now_ms = 10 * 3_600_000;
        let c = cam("a", "x", &[]);
        let mut p = policy(&["*"], &[]);
        let play = |p: &SitePolicy, from_ms| {
            p.evaluate_recall(&c, Quality::Main, NOON_MON, RecallUse::Playback, from_ms, now_ms)
        };
        let Decision::Deny { hidden: false, reason } = play(&p, now_ms - 1000) else {
            panic!("no right, yet allowed")
        };
        assert!(reason.contains("`playback`"), "{reason}");
        p.recall = RecallRights { playback: true, max_lookback_hours: Some(1.0), export: false };
        assert!(play(&p, now_ms - 3_600_000).allowed(), "exactly an hour back");
        let Decision::Deny { reason, .. } = play(&p, now_ms + 3_600_000) else { panic!("the future") };
        assert!(reason.contains("in the future"), "{reason}");
        assert!(!play(&p, u64::MAX).allowed(), "the far future is refused, not a panic");
        let Decision::Deny { reason, .. } = play(&p, now_ms - 3_600_001) else { panic!("past the lookback") };
        assert!(reason.contains("max_lookback_hours"), "{reason}");
        let export = p.evaluate_recall(&c, Quality::Main, NOON_MON, RecallUse::Export, now_ms - 1000, now_ms);
        let Decision::Deny { reason, .. } = export else { panic!("export without its right") };
        assert!(reason.contains("`export`"), "{reason}");
        // A camera the site may not watch live it may not rewind either.
        let denied = policy(&["*"], &["camera:a"]);
        let d = denied.evaluate_recall(&c, Quality::Main, NOON_MON, RecallUse::Playback, now_ms, now_ms);
        assert!(matches!(d, Decision::Deny { hidden: true, .. }));
    }

    #[test]
    fn bad_selectors_are_errors() {
        for bad in ["", "zone", "zone:", "place:x", "camera"] {
            assert!(Selector::parse(bad).is_err(), "{bad:?}");
        }
    }

    fn arb_selector() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("*".to_string()),
            "[a-c]".prop_map(|c| format!("camera:{c}")),
            "[xy]".prop_map(|z| format!("zone:{z}")),
            "[pq]".prop_map(|t| format!("tag:{t}")),
        ]
    }

    proptest! {
        /// A camera matched by any deny selector is never allowed, whatever
        /// the allow list, quality or time.
        #[test]
        fn deny_is_never_overridden(
            allow in proptest::collection::vec(arb_selector(), 0..4),
            deny in proptest::collection::vec(arb_selector(), 1..3),
            id in "[a-c]", zone in "[xy]", tag in "[pq]",
            sub in any::<bool>(), weekday in 0u8..7, minute in 0u16..1440,
        ) {
            let p = policy(&allow.iter().map(String::as_str).collect::<Vec<_>>(), &deny.iter().map(String::as_str).collect::<Vec<_>>());
            let tags = vec![tag];
            let c = cam(&id, &zone, &tags);
            let q = if sub { Quality::Sub } else { Quality::Main };
            let d = p.evaluate(&c, q, LocalTime { weekday, minute });
            if p.deny.iter().any(|s| s.matches(&c)) {
                prop_assert!(!d.allowed());
            }
            // Never widens: allowed implies some allow selector matches, the
            // quality is within the cap and the time within the windows.
            if d.allowed() {
                prop_assert!(p.allow.iter().any(|s| s.matches(&c)));
                prop_assert!(q >= p.max_quality);
            }
        }

        #[test]
        fn window_parser_never_panics(s in "\\PC{0,30}") {
            let _ = TimeWindow::parse(&s);
            let _ = Selector::parse(&s);
        }
    }
}
