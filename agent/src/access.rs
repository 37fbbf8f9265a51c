//! Access policy as the agent applies it: the compiled `[[site]]` policies,
//! the policy time zone, and the camera facts selectors match on.

use crate::config::AgentConfig;
use anyhow::{Context, Result};
use ponte_proto::media::Quality;
use ponte_proto::policy::{CameraFacts, Decision, LocalTime, SitePolicy, Visibility};
use ponte_proto::ptz::PtzErrorCode;
use ponte_proto::shaping::{Budget, Priority};
use ponte_proto::wire::CatalogEntry;
use std::collections::HashMap;

/// Policies of all sites, ready to evaluate, with the temporary grants of
/// shares and approved asks. Replaced whole on reload and whenever a
/// temporary grant starts or ends.
#[derive(Clone)]
pub struct Access {
    sites: HashMap<String, SitePolicy>,
    tz: jiff::tz::TimeZone,
    /// Per camera id: its device, zone and type as this config has them,
    /// and its tags. A catalog entry that does not match is not granted
    /// (see [`Access::current`]).
    known: HashMap<String, Known>,
    /// Per site: the digest of its policy and of the inventory it is
    /// evaluated on ([`ponte_proto::redundancy::digest`]), which two
    /// agents of one master room must share.
    digests: HashMap<String, String>,
    /// Shares and approved asks in force (issue 23).
    grants: TemporaryGrants,
}

/// What the config this policy was compiled with says of a camera.
#[derive(Clone)]
struct Known {
    device: String,
    zone: String,
    kind: String,
    tags: Vec<String>,
}

/// One row of `policy explain`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Explanation {
    /// Camera id.
    pub camera: String,
    /// Qualities the site may receive (empty: not visible).
    pub qualities: Vec<Quality>,
    /// Whether the site may receive it right now (time windows).
    pub now: bool,
    /// The rule that decided, or why not.
    pub why: String,
}

impl Access {
    /// Compiles the policies of a validated config.
    pub fn new(cfg: &AgentConfig) -> Result<Self> {
        let mut sites = HashMap::new();
        for p in &cfg.sites {
            sites.insert(p.id.clone(), p.compile().with_context(|| format!("`[[site]]` {:?}", p.id))?);
        }
        let tz = jiff::tz::TimeZone::get(&cfg.policy.timezone)
            .with_context(|| format!("`policy.timezone` = {:?}", cfg.policy.timezone))?;
        let mut known = HashMap::new();
        for d in &cfg.devices {
            for lens in 1..=d.lens_count() {
                known.insert(
                    d.camera_id(lens),
                    Known {
                        device: d.id.clone(),
                        zone: d.zone.clone(),
                        kind: d.kind.name().to_owned(),
                        tags: d.tags.clone(),
                    },
                );
            }
        }
        // The canonical text: the site's policy as configured and the time
        // zone. Not the inventory: agents may shard the cameras.
        let mut digests = HashMap::new();
        for p in &cfg.sites {
            let canonical = serde_json::to_vec(&(p, &cfg.policy.timezone))
                .context("serialising a site policy for its digest")?;
            digests.insert(p.id.clone(), ponte_proto::redundancy::digest(&canonical));
        }
        Ok(Self { sites, tz, known, digests, grants: TemporaryGrants::default() })
    }

    /// This policy with `grants` in force instead of the ones it had.
    pub fn with_grants(&self, grants: TemporaryGrants) -> Self {
        Self { grants, ..self.clone() }
    }

    /// The sites with a policy or a temporary grant, sorted.
    pub fn site_ids(&self) -> Vec<String> {
        let mut ids: Vec<String> =
            self.sites.keys().cloned().chain(self.grants.live.keys().map(|(s, _)| s.clone())).collect();
        ids.sort();
        ids.dedup();
        ids
    }

    /// The temporary grant of `camera` to `site`, if one is in force.
    pub fn grant(&self, site: &str, camera: &str) -> Option<&Grant> {
        self.grants.live.get(&(site.to_owned(), camera.to_owned()))
    }

    /// The qualities a temporary grant gives: the site's quality limit if
    /// it has a policy, else all. A camera with no stream within the limit
    /// (a site capped at `sub`, a camera with a main stream only) is shared
    /// at what it has: the master operator chose to show it, and a share
    /// that shows nothing would fail them silently.
    fn granted_qualities(&self, site: &str, c: &CatalogEntry) -> Vec<Quality> {
        match self.sites.get(site) {
            Some(p) => {
                let q = p.qualities(&c.qualities);
                if q.is_empty() {
                    c.qualities.clone()
                } else {
                    q
                }
            }
            None => c.qualities.clone(),
        }
    }

    /// The digest of `site`'s policy (`none` for a site without one), as
    /// `Hello` tells its relay.
    pub fn digest(&self, site: &str) -> String {
        self.digests.get(site).cloned().unwrap_or_else(|| "none".to_owned())
    }

    /// The policy of a site, if it has one (no policy: it sees nothing).
    pub fn site(&self, site: &str) -> Option<&SitePolicy> {
        self.sites.get(site)
    }

    /// Local time in the policy time zone.
    pub fn local_time(&self, now: jiff::Timestamp) -> LocalTime {
        let z = now.to_zoned(self.tz.clone());
        LocalTime {
            weekday: z.weekday().to_monday_zero_offset() as u8,
            minute: z.hour() as u16 * 60 + z.minute() as u16,
        }
    }

    fn facts<'a>(&'a self, c: &'a CatalogEntry) -> CameraFacts<'a> {
        CameraFacts {
            id: &c.id,
            device: &c.device,
            zone: &c.zone,
            kind: &c.kind,
            tags: self.known.get(&c.id).map(|k| k.tags.as_slice()).unwrap_or(&[]),
        }
    }

    /// Whether this policy was compiled with the config `c` comes from. On
    /// a reload the live catalog and the policy change one after the
    /// other: a camera added (or re-tagged, moved to another zone) is not
    /// granted until the policy that knows its tags is in force, so a
    /// `deny = ["tag:..."]` can never miss it for a moment (fail closed).
    fn current(&self, c: &CatalogEntry) -> bool {
        self.known.get(&c.id).is_some_and(|k| k.device == c.device && k.zone == c.zone && k.kind == c.kind)
    }

    /// The catalog a site receives: only what it may see, at the qualities it may get.
    pub fn catalog(&self, site: &str, full: &[CatalogEntry]) -> Vec<CatalogEntry> {
        let policy = self.sites.get(site);
        full.iter()
            .filter(|c| self.current(c))
            .filter_map(|c| {
                let by_policy =
                    policy.filter(|p| matches!(p.visibility(&self.facts(c)), Visibility::Granted(_)));
                if let Some(p) = by_policy {
                    let qualities = p.qualities(&c.qualities);
                    if !qualities.is_empty() {
                        return Some(CatalogEntry {
                            qualities,
                            ptz: p.ptz && c.kind == "dome-ptz",
                            always_on: p.always_on(&self.facts(c)),
                            dual_path: p.dual_path(&self.facts(c)),
                            ..c.clone()
                        });
                    }
                }
                // A share or an approved ask: live video, no PTZ.
                self.grant(site, &c.id).map(|_| CatalogEntry {
                    qualities: self.granted_qualities(site, c),
                    ptz: false,
                    always_on: false,
                    dual_path: false,
                    ..c.clone()
                })
            })
            .collect()
    }

    /// Whether `site` may receive `camera` at `quality` at `now`.
    pub fn evaluate(&self, site: &str, camera: &CatalogEntry, quality: Quality, now: LocalTime) -> Decision {
        let decision = self.evaluate_policy(site, camera, quality, now);
        if decision.allowed() || !self.current(camera) {
            return decision;
        }
        if let Some(g) = self.grant(site, &camera.id) {
            if self.granted_qualities(site, camera).contains(&quality) {
                return Decision::Allow { rule: g.describe() };
            }
        }
        match self.grants.ended.get(&(site.to_owned(), camera.id.clone())) {
            Some(why) => Decision::Deny { hidden: false, reason: why.clone() },
            None => decision,
        }
    }

    /// [`Self::evaluate`] by the site's policy alone.
    fn evaluate_policy(
        &self,
        site: &str,
        camera: &CatalogEntry,
        quality: Quality,
        now: LocalTime,
    ) -> Decision {
        match self.sites.get(site) {
            Some(_) if !self.current(camera) => Decision::Deny {
                hidden: true,
                reason: format!("camera `{}` is changing with a config reload; ask again", camera.id),
            },
            Some(p) => p.evaluate(&self.facts(camera), quality, now),
            None => Decision::Deny {
                hidden: true,
                reason: format!("site `{site}` has no `[[site]]` policy in the agent's config"),
            },
        }
    }

    /// Whether `site` may use the recordings of `camera` (`what`, from
    /// `from_ms`) at `now`: the live decision, then the recall right asked
    /// for and the lookback (`playback`, `export`, `max_lookback_hours`).
    pub fn evaluate_recall(
        &self,
        site: &str,
        camera: &CatalogEntry,
        quality: Quality,
        now: jiff::Timestamp,
        what: ponte_proto::policy::RecallUse,
        from_ms: u64,
    ) -> Decision {
        let live = self.evaluate(site, camera, quality, self.local_time(now));
        // Allowed live by the policy itself, not only by a share.
        let by_policy =
            live.allowed() && self.evaluate_policy(site, camera, quality, self.local_time(now)).allowed();
        match self.sites.get(site) {
            Some(p) if by_policy => p.evaluate_recall(
                &self.facts(camera),
                quality,
                self.local_time(now),
                what,
                from_ms,
                u64::try_from(now.as_millisecond()).unwrap_or(0),
            ),
            // A share grants live video, never the recordings.
            _ if live.allowed() => Decision::Deny {
                hidden: false,
                reason: format!(
                    "site `{site}` sees camera `{}` by a share of the master room, which grants live video only",
                    camera.id
                ),
            },
            _ => live,
        }
    }

    /// How far back `site` may reach at `now_ms`, Unix ms (None: as far as
    /// the recordings go).
    pub fn earliest_recall(&self, site: &str, now_ms: u64) -> Option<u64> {
        let hours = self.sites.get(site)?.recall.max_lookback_hours?;
        Some(now_ms.saturating_sub((hours * 3_600_000.0) as u64))
    }

    /// Whether `site` may take evidence exports at all.
    pub fn may_export(&self, site: &str) -> bool {
        self.sites.get(site).is_some_and(|p| p.recall.export)
    }

    /// Whether `site` may steer `camera` at `now`: its PTZ priority, or the
    /// refusal. Cameras the site may not see are `unknown`, exactly as
    /// subscriptions answer them; the reasons name the config key to change.
    pub fn may_steer(
        &self,
        site: &str,
        camera: &CatalogEntry,
        now: LocalTime,
    ) -> Result<u8, (PtzErrorCode, String)> {
        let unknown = || {
            (PtzErrorCode::Unknown, format!("camera `{}` is not in the catalog of site `{site}`", camera.id))
        };
        let Some(p) = self.sites.get(site) else { return Err(unknown()) };
        if !self.current(camera) {
            return Err(unknown());
        }
        let facts = self.facts(camera);
        if !matches!(p.visibility(&facts), Visibility::Granted(_))
            || p.qualities(&camera.qualities).is_empty()
        {
            return Err(unknown());
        }
        if camera.kind != "dome-ptz" {
            return Err((
                PtzErrorCode::Unsupported,
                format!(
                    "camera `{}` is a `{}`, not a `dome-ptz`: it cannot be steered",
                    camera.id, camera.kind
                ),
            ));
        }
        if !p.ptz {
            return Err((
                PtzErrorCode::Forbidden,
                format!(
                    "site `{site}` has no PTZ right: the master room grants it with `ptz = true` in the site's \
                     `[[site]]` of agent.toml"
                ),
            ));
        }
        if !p.in_window(now) {
            let windows: Vec<String> = p.windows.iter().map(|w| w.to_string()).collect();
            return Err((
                PtzErrorCode::Forbidden,
                format!(
                    "site `{site}` may steer cameras only during {} (`windows` of its `[[site]]`)",
                    windows.join(", ")
                ),
            ));
        }
        Ok(p.ptz_priority)
    }

    /// Most concurrent streams for a site.
    pub fn max_streams(&self, site: &str) -> Option<u32> {
        self.sites.get(site).and_then(|p| p.max_streams)
    }

    /// Link budget of a site (unlimited without a policy or `budget_mbps`).
    pub fn budget(&self, site: &str) -> Budget {
        self.sites.get(site).map_or(Budget::UNLIMITED, |p| Budget::from_policy(p.budget_mbps, p.burst_kb))
    }

    /// Shaping priority of a camera at a site.
    pub fn priority(&self, site: &str, camera: &CatalogEntry) -> Priority {
        self.sites.get(site).map_or(Priority::Normal, |p| p.priority(&self.facts(camera)))
    }

    /// What a site may see and why, camera by camera.
    pub fn explain(&self, site: &str, full: &[CatalogEntry], now: LocalTime) -> Vec<Explanation> {
        let policy = self.sites.get(site);
        full.iter()
            .map(|c| {
                let by_policy = self.explain_policy(policy, site, c, now);
                match self.grant(site, &c.id) {
                    Some(g) if !by_policy.now => Explanation {
                        camera: c.id.clone(),
                        qualities: self.granted_qualities(site, c),
                        now: true,
                        why: format!("temporary: {} (policy: {})", g.describe(), by_policy.why),
                    },
                    _ => by_policy,
                }
            })
            .collect()
    }

    fn explain_policy(
        &self,
        policy: Option<&SitePolicy>,
        site: &str,
        c: &CatalogEntry,
        now: LocalTime,
    ) -> Explanation {
        let Some(p) = policy else {
            return Explanation {
                camera: c.id.clone(),
                qualities: vec![],
                now: false,
                why: format!("site `{site}` has no [[site]] policy"),
            };
        };
        let facts = self.facts(c);
        match p.visibility(&facts) {
            Visibility::Granted(rule) => {
                let qualities = p.qualities(&c.qualities);
                let best = qualities.first().copied().unwrap_or(Quality::Sub);
                let decision = p.evaluate(&facts, best, now);
                let why = match &decision {
                    Decision::Allow { .. } => format!("allow `{rule}`"),
                    Decision::Deny { reason, .. } => format!("allow `{rule}`, but {reason}"),
                };
                Explanation { camera: c.id.clone(), qualities, now: decision.allowed(), why }
            }
            Visibility::Denied(rule) => Explanation {
                camera: c.id.clone(),
                qualities: vec![],
                now: false,
                why: format!("deny `{rule}`"),
            },
            Visibility::NotGranted => Explanation {
                camera: c.id.clone(),
                qualities: vec![],
                now: false,
                why: "no allow rule matches".into(),
            },
        }
    }
}

/// Where a temporary grant comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GrantOrigin {
    /// The master room shared the camera.
    Share,
    /// The master room approved the site's ask.
    Approval,
}

impl GrantOrigin {
    /// `share` or `approval`, as the consoles and `policy explain` say it.
    pub fn name(self) -> &'static str {
        match self {
            GrantOrigin::Share => "share",
            GrantOrigin::Approval => "approval",
        }
    }

    /// The audit action of the grant's lifecycle.
    pub fn action(self) -> &'static str {
        match self {
            GrantOrigin::Share => "share",
            GrantOrigin::Approval => "approve",
        }
    }
}

/// A temporary grant of one camera to one site (issue 23).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// The share's (or approval's) id.
    pub id: u64,
    /// Ends at, Unix ms.
    pub until_ms: u64,
    /// The master operator who gave it.
    pub by: String,
    /// Share or approval.
    pub origin: GrantOrigin,
}

/// `2026-12-07T12:00:00.000Z` for a Unix time in ms.
pub fn at_ms(ms: u64) -> String {
    ponte_proto::audit::rfc3339(std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms))
}

impl Grant {
    fn describe(&self) -> String {
        format!("{} #{} by `{}` until {}", self.origin.name(), self.id, self.by, at_ms(self.until_ms))
    }
}

/// The temporary grants in force (shares and approved asks), by (site,
/// camera), and why recently ended ones ended (the reason a revoked stream
/// is told).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TemporaryGrants {
    /// In force.
    pub live: HashMap<(String, String), Grant>,
    /// Ended: why.
    pub ended: HashMap<(String, String), String>,
}

/// The policy's wall clock: real time, optionally shifted so tests (and
/// rehearsals) can start the agent at a chosen moment, e.g. just before a
/// time window closes: `PONTE_CLOCK_START=2026-11-25T19:59:58` (policy time zone).
#[derive(Debug, Clone, Copy, Default)]
pub struct Clock {
    offset: jiff::SignedDuration,
}

impl Clock {
    /// Real time, or shifted to start at `PONTE_CLOCK_START` if set.
    pub fn from_env(tz: &str) -> anyhow::Result<Self> {
        use anyhow::Context as _;
        let Ok(start) = std::env::var("PONTE_CLOCK_START") else { return Ok(Self::default()) };
        let civil: jiff::civil::DateTime = start
            .parse()
            .with_context(|| format!("PONTE_CLOCK_START={start:?}: expected e.g. 2026-11-25T19:59:58"))?;
        let at = civil.to_zoned(jiff::tz::TimeZone::get(tz)?)?.timestamp();
        let offset = at.duration_since(jiff::Timestamp::now());
        tracing::warn!(start = %start, "PONTE_CLOCK_START is set: policy time is shifted");
        Ok(Self { offset })
    }

    /// Current time.
    pub fn now(&self) -> jiff::Timestamp {
        jiff::Timestamp::now().checked_add(self.offset).unwrap_or_else(|_| jiff::Timestamp::now())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = r#"
[agent]
id = "master"
[tls]
ca = "ca.pem"
cert = "master.pem"
key = "master.key"
[[relay]]
site = "questura"
addr = "127.0.0.1:7443"
[[site]]
id = "questura"
allow = ["zone:Giuseppina"]
deny = ["tag:hospital"]
[[device]]
id = "piazza"
name = "piazza"
zone = "Giuseppina"
type = "fixed"
source = "synthetic"
"#;

    const HOSPITAL: &str = r#"
[[device]]
id = "osp-2"
name = "ospedale"
zone = "Giuseppina"
type = "fixed"
tags = ["hospital"]
source = "synthetic"
"#;

    fn cfg(text: &str) -> AgentConfig {
        AgentConfig::from_toml(text).unwrap_or_else(|e| panic!("{e:#}\n{text}"))
    }

    /// On a reload the catalog can change before the policy does: a camera
    /// the running policy does not know (its tags unknown) is not granted,
    /// so a `deny` on its tag never misses it.
    #[test]
    fn a_camera_the_policy_does_not_know_yet_is_not_granted() {
        let old = Access::new(&cfg(BASE)).unwrap();
        let new_cfg = cfg(&format!("{BASE}{HOSPITAL}"));
        let catalog = crate::sources::cameras::catalog_of(&new_cfg.devices);
        let ids = |a: &Access| a.catalog("questura", &catalog).into_iter().map(|c| c.id).collect::<Vec<_>>();
        assert_eq!(ids(&old), ["piazza"]);
        let osp = catalog.iter().find(|c| c.id == "osp-2").unwrap();
        let now = LocalTime { weekday: 0, minute: 600 };
        assert!(matches!(
            old.evaluate("questura", osp, Quality::Main, now),
            Decision::Deny { hidden: true, .. }
        ));
        let new = Access::new(&new_cfg).unwrap();
        assert_eq!(ids(&new), ["piazza"]);
        assert!(matches!(
            new.evaluate("questura", osp, Quality::Main, now),
            Decision::Deny { hidden: true, .. }
        ));
        // Moved to another zone: not granted under the old facts either.
        let moved = cfg(&BASE.replace("zone = \"Giuseppina\"", "zone = \"Po\""));
        let moved_catalog = crate::sources::cameras::catalog_of(&moved.devices);
        assert!(old.catalog("questura", &moved_catalog).is_empty());
    }

    use ponte_proto::policy::RecallUse;

    /// `questura` sees zone Giuseppina (with PTZ and playback), `vigili` the
    /// same at `sub` at most, `carabinieri` has no `[[site]]`; the dome in
    /// zone Po is nobody's by policy.
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
ptz = true
playback = true
[[site]]
id = "vigili"
allow = ["zone:Giuseppina"]
max_quality = "sub"
[[device]]
id = "piazza"
name = "piazza"
zone = "Giuseppina"
type = "fixed"
source = "synthetic"
[[device]]
id = "porto"
name = "porto"
zone = "Po"
type = "dome-ptz"
source = "synthetic"
"#;

    /// 2027-01-15T08:00:00Z.
    const NOW_MS: u64 = 1_800_000_000_000;
    const UNTIL_MS: u64 = NOW_MS + 1_800_000;

    struct Fixture {
        access: Access,
        catalog: Vec<CatalogEntry>,
    }

    impl Fixture {
        fn new() -> Self {
            let cfg = cfg(CONFIG);
            Self {
                access: Access::new(&cfg).unwrap(),
                catalog: crate::sources::cameras::catalog_of(&cfg.devices),
            }
        }

        fn entry(&self, id: &str) -> &CatalogEntry {
            self.catalog.iter().find(|c| c.id == id).unwrap()
        }
    }

    fn now() -> jiff::Timestamp {
        jiff::Timestamp::from_millisecond(NOW_MS as i64).unwrap()
    }

    fn local(a: &Access) -> LocalTime {
        a.local_time(now())
    }

    fn key(site: &str, camera: &str) -> (String, String) {
        (site.to_owned(), camera.to_owned())
    }

    /// Share #7 of the dome by `sala-rossi` to every site.
    fn shared() -> TemporaryGrants {
        let grant = Grant { id: 7, until_ms: UNTIL_MS, by: "sala-rossi".into(), origin: GrantOrigin::Share };
        let live =
            ["questura", "vigili", "carabinieri"].iter().map(|s| (key(s, "porto"), grant.clone())).collect();
        TemporaryGrants { live, ended: HashMap::new() }
    }

    fn ids(v: &[CatalogEntry]) -> Vec<&str> {
        v.iter().map(|c| c.id.as_str()).collect()
    }

    #[test]
    fn a_camera_outside_the_policy_is_neither_listed_nor_allowed_without_a_grant() {
        let f = Fixture::new();
        let a = &f.access;
        assert_eq!(ids(&a.catalog("questura", &f.catalog)), ["piazza"]);
        assert!(a.catalog("carabinieri", &f.catalog).is_empty());
        let d = a.evaluate("questura", f.entry("porto"), Quality::Main, local(a));
        assert!(matches!(d, Decision::Deny { hidden: true, .. }), "{d:?}");
        assert!(a.grant("questura", "porto").is_none());
        assert_eq!(a.site_ids(), ["questura", "vigili"]);
    }

    #[test]
    fn a_share_lists_the_camera_live_without_ptz_at_the_sites_quality_and_names_who_shared() {
        let f = Fixture::new();
        let a = f.access.with_grants(shared());
        let porto = f.entry("porto");
        assert!(f.access.grant("questura", "porto").is_none(), "with_grants leaves the original alone");

        let q = a.catalog("questura", &f.catalog);
        assert_eq!(ids(&q), ["piazza", "porto"]);
        let shared_entry = &q[1];
        assert!(!shared_entry.ptz, "a share never gives PTZ, even to a site with the right");
        assert!(!shared_entry.always_on);
        assert_eq!(shared_entry.qualities, [Quality::Main, Quality::Sub]);
        let v = a.catalog("vigili", &f.catalog);
        assert_eq!(v.iter().find(|c| c.id == "porto").map(|c| c.qualities.clone()), Some(vec![Quality::Sub]));
        assert_eq!(ids(&a.catalog("carabinieri", &f.catalog)), ["porto"], "no [[site]]: the share alone");
        assert_eq!(a.site_ids(), ["carabinieri", "questura", "vigili"]);

        let Decision::Allow { rule } = a.evaluate("questura", porto, Quality::Main, local(&a)) else {
            panic!("the share allows it")
        };
        assert!(rule.contains("share #7") && rule.contains("sala-rossi"), "{rule}");
        assert!(rule.contains(&at_ms(UNTIL_MS)), "{rule}");
        assert!(a.evaluate("carabinieri", porto, Quality::Main, local(&a)).allowed());
        assert!(a.evaluate("vigili", porto, Quality::Sub, local(&a)).allowed());
        let d = a.evaluate("vigili", porto, Quality::Main, local(&a));
        assert!(!d.allowed(), "the site's `max_quality` holds for a share too: {d:?}");
        // A grant of one camera grants no other.
        let other = Grant { id: 7, until_ms: UNTIL_MS, by: "x".into(), origin: GrantOrigin::Share };
        let only_porto = a.with_grants(TemporaryGrants {
            live: [(key("carabinieri", "porto"), other)].into_iter().collect(),
            ended: HashMap::new(),
        });
        assert!(!only_porto.evaluate("carabinieri", f.entry("piazza"), Quality::Main, local(&a)).allowed());
    }

    #[test]
    fn a_share_grants_live_video_never_the_recordings() {
        let f = Fixture::new();
        let a = f.access.with_grants(shared());
        let back = NOW_MS - 60_000;
        // The site's own camera, with its `playback` right: allowed.
        let own =
            a.evaluate_recall("questura", f.entry("piazza"), Quality::Main, now(), RecallUse::Playback, back);
        assert!(own.allowed(), "{own:?}");
        for site in ["questura", "carabinieri"] {
            for what in [RecallUse::Playback, RecallUse::Export] {
                let d = a.evaluate_recall(site, f.entry("porto"), Quality::Main, now(), what, back);
                let Decision::Deny { hidden, reason } = d else {
                    panic!("{site}: recall of a shared camera allowed")
                };
                assert!(!hidden, "{site}: the site sees the camera, it is told why");
                assert!(reason.contains("live video only"), "{site}: {reason}");
            }
        }
    }

    #[test]
    fn once_a_share_ended_the_refusal_says_why() {
        let f = Fixture::new();
        let why = "share #7 by `sala-rossi` ended: withdrawn by `sala-bianchi` of the master room".to_owned();
        let ended = TemporaryGrants {
            live: HashMap::new(),
            ended: [(key("questura", "porto"), why.clone())].into_iter().collect(),
        };
        let a = f.access.with_grants(ended);
        assert_eq!(ids(&a.catalog("questura", &f.catalog)), ["piazza"]);
        let d = a.evaluate("questura", f.entry("porto"), Quality::Main, local(&a));
        assert_eq!(d, Decision::Deny { hidden: false, reason: why });
        // The site's own cameras are not touched by an ended share.
        assert!(a.evaluate("questura", f.entry("piazza"), Quality::Main, local(&a)).allowed());
        // Another site never learns of the camera through it.
        let d = a.evaluate("vigili", f.entry("porto"), Quality::Sub, local(&a));
        assert!(matches!(d, Decision::Deny { hidden: true, .. }), "{d:?}");
    }

    #[test]
    fn explain_shows_the_temporary_grant_its_end_and_who_gave_it() {
        let f = Fixture::new();
        let a = f.access.with_grants(shared());
        let rows = a.explain("questura", &f.catalog, local(&a));
        let row = |id: &str| rows.iter().find(|r| r.camera == id).unwrap();
        let porto = row("porto");
        assert!(porto.now);
        assert_eq!(porto.qualities, [Quality::Main, Quality::Sub]);
        assert!(porto.why.starts_with("temporary: share #7"), "{}", porto.why);
        assert!(porto.why.contains("`sala-rossi`") && porto.why.contains(&at_ms(UNTIL_MS)), "{}", porto.why);
        assert!(porto.why.contains("no allow rule"), "the policy's own answer stays visible: {}", porto.why);
        assert_eq!(row("piazza").why, "allow `zone:Giuseppina`");
        // Without the grant: not visible.
        let plain = f.access.explain("questura", &f.catalog, local(&f.access));
        assert!(!plain.iter().find(|r| r.camera == "porto").unwrap().now);
        // A site without a policy, with the share.
        let rows = a.explain("carabinieri", &f.catalog, local(&a));
        assert_eq!(rows.iter().filter(|r| r.now).map(|r| r.camera.as_str()).collect::<Vec<_>>(), ["porto"]);
    }
}
