//! Agent configuration: TOML file plus `PONTE_*` environment overrides.

use anyhow::{bail, Context, Result};
use ponte_proto::media::Quality;
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::Path;

pub mod incidents;
pub mod recording;

pub use ponte_proto::endpoint::TransportSection;
pub use ponte_proto::tls::TlsSection;

pub use crate::sources::device::{
    BrowserH264, Device, DeviceKind, LensSource, RtspSource, Source, SourceKind, DEFAULT_STALL_SECS,
};

/// The whole agent config file.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    /// This node.
    pub agent: AgentSection,
    /// Trust anchor and identity.
    pub tls: TlsSection,
    /// QUIC transport knobs.
    #[serde(default)]
    pub transport: TransportSection,
    /// Relays this agent feeds (it dials each one).
    #[serde(default, rename = "relay")]
    pub relays: Vec<RelayTarget>,
    /// Camera devices.
    #[serde(default, rename = "device")]
    pub devices: Vec<Device>,
    /// Policy settings shared by all sites.
    #[serde(default)]
    pub policy: PolicySection,
    /// Per-site access policy, one `[[site]]` per partner site.
    #[serde(default, rename = "site")]
    pub sites: Vec<ponte_proto::policy::SitePolicyConfig>,
    /// Audit log.
    #[serde(default)]
    pub audit: AuditSection,
    /// Management port (status page, JSON, metrics, master-room PTZ API).
    #[serde(default)]
    pub management: ManagementSection,
    /// PTZ arbitration timings.
    #[serde(default)]
    pub ptz: PtzSection,
    /// Master-room operators allowed on the management port's control routes.
    #[serde(default, rename = "operator")]
    pub operators: Vec<crate::operators::OperatorConfig>,
    /// Where recordings are stored.
    #[serde(default)]
    pub recordings: crate::config::recording::RecordingsSection,
    /// What is recorded, one `[[recording]]` per rule (none by default).
    #[serde(default, rename = "recording")]
    pub recording: Vec<crate::config::recording::RecordingRule>,
    /// The other agents of the master room (issue 22; none by default).
    #[serde(default)]
    pub redundancy: RedundancySection,
    /// Shares, asks and alarms (issue 23).
    #[serde(default)]
    pub incidents: incidents::IncidentsSection,
}

/// `[redundancy]`: the other agents of the master room, which serve the
/// same cameras to the same relays. The agents replicate their PTZ locks to
/// each other over QUIC (mutual TLS, the same CA), so a camera's lock
/// holder survives the agent that granted it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedundancySection {
    /// UDP address this agent listens on for its peers (required with `peers`).
    #[serde(default)]
    pub listen: Option<SocketAddr>,
    /// The other agents, each `{ site = "master-b", addr = "10.0.0.12:7444" }`.
    #[serde(default)]
    pub peers: Vec<PeerAgent>,
}

/// One other agent of the master room.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerAgent {
    /// Its site id (`master-<name>`), as its certificate names it.
    pub site: String,
    /// Its `redundancy.listen` address.
    pub addr: SocketAddr,
    /// TLS server name to verify (defaults to the site id).
    #[serde(default)]
    pub server_name: Option<String>,
}

impl RedundancySection {
    /// Whether this agent has peers.
    pub fn enabled(&self) -> bool {
        !self.peers.is_empty()
    }

    /// Every agent of the master room, this one (`me`) included, sorted.
    pub fn agents(&self, me: &str) -> Vec<String> {
        let mut all: Vec<String> =
            std::iter::once(me.to_owned()).chain(self.peers.iter().map(|p| p.site.clone())).collect();
        all.sort();
        all.dedup();
        all
    }

    /// The section's problems, each naming its key; `me` is `agent.id`.
    fn problems(&self, me: &str) -> Vec<String> {
        use ponte_proto::redundancy::is_agent_site;
        let mut out = Vec::new();
        if self.peers.is_empty() {
            return out;
        }
        if !is_agent_site(me) {
            out.push(format!(
                "`agent.id` = {me:?}: with `[redundancy]` peers each agent is `master-<name>` (its certificate's site)"
            ));
        }
        if self.listen.is_none() {
            out.push("`redundancy.listen` is missing: the peers dial it (e.g. \"0.0.0.0:7444\")".to_owned());
        }
        let mut seen = HashSet::new();
        for p in &self.peers {
            if !is_agent_site(&p.site) {
                out.push(format!("`redundancy.peers` site {:?}: an agent is `master-<name>`", p.site));
            } else if p.site == me {
                out.push(format!("`redundancy.peers` lists {:?}, this agent itself", p.site));
            } else if !seen.insert(&p.site) {
                out.push(format!("`redundancy.peers` lists {:?} twice", p.site));
            }
        }
        out
    }
}

/// `[ptz]`: how long a PTZ lock and a continuous move last without renewal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PtzSection {
    /// A controller's lock lapses after this many seconds without a command.
    #[serde(default = "default_lock_idle_secs")]
    pub lock_idle_secs: u64,
    /// A continuous move not renewed within this many milliseconds is
    /// stopped (dead-man); also sent to the camera as the move's timeout.
    #[serde(default = "default_deadman_ms")]
    pub deadman_ms: u64,
}

impl Default for PtzSection {
    fn default() -> Self {
        Self { lock_idle_secs: default_lock_idle_secs(), deadman_ms: default_deadman_ms() }
    }
}

fn default_lock_idle_secs() -> u64 {
    15
}

fn default_deadman_ms() -> u64 {
    1500
}

/// Accepted range of `ptz.lock_idle_secs`.
const LOCK_IDLE_SECS: std::ops::RangeInclusive<u64> = 1..=3600;
/// Accepted range of `ptz.deadman_ms`.
const DEADMAN_MS: std::ops::RangeInclusive<u64> = 200..=60_000;

impl PtzSection {
    /// The arbiter's timings.
    pub fn arbiter(&self) -> ponte_proto::ptz::ArbiterConfig {
        ponte_proto::ptz::ArbiterConfig {
            lock_idle: std::time::Duration::from_secs(self.lock_idle_secs),
            deadman: std::time::Duration::from_millis(self.deadman_ms),
        }
    }

    fn validate(&self) -> Result<()> {
        if !LOCK_IDLE_SECS.contains(&self.lock_idle_secs) {
            bail!(
                "`ptz.lock_idle_secs` = {}: expected {} to {} seconds",
                self.lock_idle_secs,
                LOCK_IDLE_SECS.start(),
                LOCK_IDLE_SECS.end()
            );
        }
        if !DEADMAN_MS.contains(&self.deadman_ms) {
            bail!(
                "`ptz.deadman_ms` = {}: expected {} to {} milliseconds",
                self.deadman_ms,
                DEADMAN_MS.start(),
                DEADMAN_MS.end()
            );
        }
        if self.deadman_ms > self.lock_idle_secs * 1000 {
            bail!(
                "`ptz.deadman_ms` = {} is longer than `ptz.lock_idle_secs` = {}: a move would outlive \
                 its lock; lower `deadman_ms` or raise `lock_idle_secs`",
                self.deadman_ms,
                self.lock_idle_secs
            );
        }
        Ok(())
    }
}

/// `[management]`: status, metrics, health, the status page and the
/// master-room PTZ API (default 127.0.0.1:9090).
pub type ManagementSection = ponte_proto::mgmt::ManagementSection<9090>;

/// `[policy]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicySection {
    /// IANA time zone of the time windows.
    #[serde(default = "default_tz")]
    pub timezone: String,
}

impl Default for PolicySection {
    fn default() -> Self {
        Self { timezone: default_tz() }
    }
}

fn default_tz() -> String {
    "Europe/Rome".into()
}

/// `[audit]`: where the audit goes, when it rotates, how long rotated files
/// are kept (nothing is deleted by default).
pub type AuditSection = ponte_proto::audit::AuditSection<{ ponte_proto::audit::AGENT }>;

/// `[agent]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentSection {
    /// Node id (also the name in its certificate).
    pub id: String,
    /// Most subscriptions one relay session may hold at once; more are
    /// refused (`over-budget`) naming this key.
    #[serde(default = "default_max_subscriptions")]
    pub max_subscriptions_per_session: u32,
    /// Most H.265 → H.264 transcodes (`browser_h264 = "transcode"`)
    /// running at once; a subscription that would start one more is
    /// refused naming this key. Each costs 15 % (720p) to 25 % (1080p) of a core.
    #[serde(default = "default_max_transcodes")]
    pub max_transcodes: u32,
}

/// Default of `agent.max_transcodes`.
pub use crate::sources::transcode::DEFAULT_MAX_TRANSCODES;

fn default_max_transcodes() -> u32 {
    DEFAULT_MAX_TRANSCODES
}

/// Default of `agent.max_subscriptions_per_session`: every lens of a large
/// city twice (main and sub), with room to spare.
pub const DEFAULT_MAX_SUBSCRIPTIONS: u32 = 512;

fn default_max_subscriptions() -> u32 {
    DEFAULT_MAX_SUBSCRIPTIONS
}

/// `[[relay]]`: one partner site's relay.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RelayTarget {
    /// Site id; the relay's certificate must name it (SAN `site:<id>` or DNS).
    pub site: String,
    /// UDP address of the relay's QUIC listener (or `paths`).
    #[serde(default = "no_addr", skip_serializing_if = "is_no_addr")]
    pub addr: SocketAddr,
    /// Two (or more) fibre paths to the relay instead of `addr`, each
    /// `{ local = "10.0.1.2", remote = "10.0.1.5:7443" }`: a session on
    /// each, sent from `local`; the site's `dual_path` cameras go on all
    /// of them at once (issue 22).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub paths: Vec<RelayPath>,
    /// The local address this uplink sends from (one path of `paths`).
    /// Set by the agent, never in the file.
    #[serde(skip)]
    pub local: Option<std::net::IpAddr>,
    /// TLS server name to verify (defaults to the site id).
    #[serde(default)]
    pub server_name: Option<String>,
    /// How status names this link: the site, or `site addr` when the site
    /// has two relays (issue 22). Set by the agent, never in the file.
    #[serde(skip)]
    pub label: Option<String>,
}

impl RelayTarget {
    /// A relay of `site` at `addr`, its certificate checked against the site id.
    pub fn new(site: impl Into<String>, addr: SocketAddr) -> Self {
        Self { site: site.into(), addr, server_name: None, label: None, paths: Vec::new(), local: None }
    }

    /// One uplink per path (`paths`), or this one alone.
    pub fn uplinks(&self) -> Vec<RelayTarget> {
        if self.paths.is_empty() {
            return vec![self.clone()];
        }
        self.paths
            .iter()
            .enumerate()
            .map(|(i, p)| RelayTarget {
                addr: p.remote,
                local: Some(p.local),
                label: Some(format!("{} path {}", self.site, i + 1)),
                ..self.clone()
            })
            .collect()
    }

    /// The section's problems, each naming its key.
    fn problems(&self) -> Vec<String> {
        let site = &self.site;
        let mut out = Vec::new();
        match (is_no_addr(&self.addr), self.paths.len()) {
            (true, 0) => out.push(format!("relay `{site}`: `relay.addr` is missing (or give `paths`)")),
            (false, n) if n > 0 => {
                out.push(format!("relay `{site}`: set `relay.addr` or `relay.paths`, not both"))
            }
            (true, 1) => out.push(format!(
                "relay `{site}`: `relay.paths` lists one path: give two (one per fibre ring), or use `addr`"
            )),
            _ => {}
        }
        let mut seen = HashSet::new();
        for p in &self.paths {
            if !seen.insert(p.remote) {
                out.push(format!("relay `{site}`: `relay.paths` lists remote {} twice", p.remote));
            }
            if p.local.is_ipv4() != p.remote.is_ipv4() {
                out.push(format!(
                    "relay `{site}`: path from {} to {}: `local` and `remote` must both be IPv4 or both IPv6",
                    p.local, p.remote
                ));
            }
        }
        out
    }
}

/// One fibre path to a relay.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RelayPath {
    /// This agent's address on that path (the datagrams' source).
    pub local: std::net::IpAddr,
    /// The relay's QUIC address on that path.
    pub remote: SocketAddr,
}

fn no_addr() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 0))
}

fn is_no_addr(a: &SocketAddr) -> bool {
    a.port() == 0 && a.ip().is_unspecified()
}

impl RelayTarget {
    /// The name status and the shaping board give this link.
    pub fn label(&self) -> &str {
        self.label.as_deref().unwrap_or(&self.site)
    }

    /// Whether a link `label` (see [`Self::label`]) is one of `site`'s:
    /// the site itself, `site addr` (a pair) or `site path N`.
    pub fn label_is_of(label: &str, site: &str) -> bool {
        label.strip_prefix(site).is_some_and(|rest| rest.is_empty() || rest.starts_with(' '))
    }
}

impl AgentSection {
    /// Node `id` with the default subscription limit.
    pub fn new(id: impl Into<String>) -> Self {
        Self {
            id: id.into(),
            max_subscriptions_per_session: DEFAULT_MAX_SUBSCRIPTIONS,
            max_transcodes: DEFAULT_MAX_TRANSCODES,
        }
    }
}

impl AgentConfig {
    /// Agent `id` with `tls` and every other section at the default a file
    /// without it gets: no relays, devices, sites or operators (tests and
    /// benchmarks build configs from here rather than from TOML text).
    pub fn new(id: impl Into<String>, tls: TlsSection) -> Self {
        Self {
            agent: AgentSection::new(id),
            tls,
            transport: TransportSection::default(),
            relays: Vec::new(),
            devices: Vec::new(),
            policy: PolicySection::default(),
            sites: Vec::new(),
            audit: AuditSection::default(),
            management: ManagementSection::default(),
            ptz: PtzSection::default(),
            operators: Vec::new(),
            recordings: Default::default(),
            recording: Vec::new(),
            redundancy: RedundancySection::default(),
            incidents: Default::default(),
        }
    }
}

impl Device {
    /// Checks the source settings: RTSP devices need one `[[device.lens]]`
    /// per lens with rtsp:// URLs (keys of another source were refused
    /// when the table was read).
    fn validate_source(&self) -> Result<()> {
        let id = &self.id;
        if let Source::Synthetic(settings) = &self.source {
            for q in [Quality::Main, Quality::Sub] {
                crate::sources::synthetic::SyntheticSpec::for_quality(id, "", q, settings)
                    .validate()
                    .with_context(|| format!("`[device.synthetic]` of device `{id}`"))?;
            }
            if settings.ptz && self.kind != DeviceKind::DomePtz {
                bail!(
                    "device `{id}`: `device.synthetic.ptz` only applies to `type = \"dome-ptz\"` (this is a `{}`)",
                    self.kind.name()
                );
            }
        }
        if let Some(onvif) = &self.onvif {
            // Any camera may report alarms over ONVIF; PTZ is for domes only.
            if onvif.events {
                crate::camera_events::check_settings(id, onvif)?;
            }
            if self.kind != DeviceKind::DomePtz {
                if !onvif.events {
                    bail!(
                        "device `{id}`: `[device.onvif]` only applies to `type = \"dome-ptz\"` (this is a `{}`), \
                         or to any camera with `events = true` for its alarms",
                        self.kind.name()
                    );
                }
                let ptz_keys =
                    [("profile", onvif.profile.is_some()), ("media_url", onvif.media_url.is_some())];
                if let Some((key, _)) = ptz_keys.iter().find(|(_, set)| *set) {
                    bail!(
                        "device `{id}`: `device.onvif.{key}` is for PTZ and only applies to `type = \"dome-ptz\"`; \
                         a `{}` uses `[device.onvif]` for its alarms only: remove `{key}`",
                        self.kind.name()
                    );
                }
            }
        }
        match &self.source {
            Source::Synthetic(_) => {}
            Source::Replay(settings) => {
                settings.validate().with_context(|| format!("`[device.replay]` of device `{id}`"))?;
            }
            Source::Rtsp(rtsp) => rtsp.validate(id, self.kind, self.lens_count())?,
        }
        Ok(())
    }
}

impl RtspSource {
    /// Checks the RTSP keys of device `id`, a `kind` with `lenses` lenses.
    fn validate(&self, id: &str, kind: DeviceKind, lenses: u8) -> Result<()> {
        let want = usize::from(lenses);
        if self.lenses.len() != want {
            bail!(
                "device `{id}`: {} `[[device.lens]]` table(s) for a `{}` with {want} lens(es): \
                 add one `[[device.lens]]` with `main = \"rtsp://...\"` per lens, or set `lenses`",
                self.lenses.len(),
                kind.name()
            );
        }
        for (i, lens) in self.lenses.iter().enumerate() {
            let n = i + 1;
            crate::sources::rtsp::check_url(&lens.main)
                .with_context(|| format!("device `{id}`: `device.lens` #{n} `main`"))?;
            if lens.sub.is_some() && self.transcodes() {
                bail!(
                    "device `{id}`: `device.browser_h264 = \"transcode\"` makes each lens's substream from its \
                     main stream, but `device.lens` #{n} also has a `sub` URL: remove `sub` (and transcode) or \
                     remove `browser_h264` (and let browsers play the camera's own substream)"
                );
            }
            if let Some(sub) = &lens.sub {
                crate::sources::rtsp::check_url(sub)
                    .with_context(|| format!("device `{id}`: `device.lens` #{n} `sub`"))?;
            }
        }
        if self.password.is_some() && self.password_env.is_some() {
            bail!("device `{id}`: set `device.password` or `device.password_env`, not both");
        }
        if (self.password.is_some() || self.password_env.is_some()) && self.username.is_none() {
            bail!("device `{id}`: a password needs `device.username`");
        }
        if let Some(var) = &self.password_env {
            if var.to_ascii_uppercase().starts_with("PONTE_") {
                bail!(
                    "device `{id}`: `device.password_env` = {var:?}: variables named PONTE_* are read as \
                     config overrides; pick another name, e.g. CAMERA_PASSWORD"
                );
            }
            if std::env::var_os(var).is_none() {
                bail!(
                    "device `{id}`: `device.password_env` names `{var}`, which is not set in the environment"
                );
            }
        }
        if self.stall_secs == Some(0) {
            bail!("device `{id}`: `device.stall_secs` must be at least 1");
        }
        Ok(())
    }
}

/// True for ids usable in URLs and config keys.
pub fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

impl AgentConfig {
    /// Loads a config file, applying the `PONTE_*` environment overrides
    /// (rules in [`ponte_proto::config_env`]).
    pub fn load(path: &Path) -> Result<Self> {
        Self::load_with(path, std::env::vars_os())
    }

    /// [`Self::load`] with these variables instead of the process's.
    pub fn load_with(
        path: &Path,
        vars: impl IntoIterator<Item = (std::ffi::OsString, std::ffi::OsString)>,
    ) -> Result<Self> {
        ponte_proto::config_env::load_checked(path, vars)
    }

    /// Parses and checks TOML text alone (no environment overrides): what
    /// `load` does with a file, for tests and the fuzz target.
    pub fn from_toml(text: &str) -> Result<Self> {
        ponte_proto::config_env::from_toml(text)
    }

    /// Checks what serde cannot: ids, duplicates, lens counts; the error
    /// lists every problem found, one a line.
    pub fn validate(&self) -> Result<()> {
        let problems = self.problems();
        match problems.len() {
            0 => Ok(()),
            1 => Err(problems.into_iter().next().unwrap_or_else(|| anyhow::anyhow!("invalid config"))),
            n => {
                let lines: Vec<String> = problems.iter().map(|e| format!("{e:#}")).collect();
                bail!("{n} problems:\n{}", lines.join("\n"))
            }
        }
    }

    /// Every problem of the config, each naming its key.
    pub fn problems(&self) -> Vec<anyhow::Error> {
        let mut problems = Vec::new();
        let mut check = |r: Result<()>| {
            if let Err(e) = r {
                problems.push(e);
            }
        };
        for p in self.transport.problems() {
            check(Err(anyhow::anyhow!(p)));
        }
        if !valid_id(&self.agent.id) {
            check(Err(anyhow::anyhow!(
                "`agent.id` = {:?}: use lowercase letters, digits and `-`",
                self.agent.id
            )));
        }
        // A site may have two relays (a pair backing each other), at two addresses.
        let mut relays = HashSet::new();
        for r in &self.relays {
            for p in r.problems() {
                check(Err(anyhow::anyhow!(p)));
            }
            if !relays.insert((&r.site, r.addr)) {
                check(Err(anyhow::anyhow!("`relay.site` = {:?} at {} appears twice", r.site, r.addr)));
            }
        }
        let mut policy_sites = HashSet::new();
        for p in &self.sites {
            if !policy_sites.insert(&p.id) {
                check(Err(anyhow::anyhow!("`site.id` = {:?} appears twice", p.id)));
            }
            check(p.compile().map(drop).with_context(|| format!("`[[site]]` {:?}", p.id)));
        }
        check(self.audit.check().map_err(anyhow::Error::msg));
        check(self.ptz.validate());
        check(self.management.check().map_err(anyhow::Error::msg));
        check(crate::operators::Operators::from_config(&self.operators).map(drop));
        check(jiff::tz::TimeZone::get(&self.policy.timezone).map(drop).with_context(|| {
            format!("`policy.timezone` = {:?}: not a known IANA time zone", self.policy.timezone)
        }));
        check(self.recordings.validate());
        check(self.incidents.validate());
        for p in self.redundancy.problems(&self.agent.id) {
            check(Err(anyhow::anyhow!(p)));
        }
        let mut rules = HashSet::new();
        for r in &self.recording {
            if !rules.insert(&r.name) {
                check(Err(anyhow::anyhow!("`recording.name` = {:?} appears twice", r.name)));
            }
            check(r.validate());
        }
        let mut ids = HashSet::new();
        let mut device_ids = HashSet::new();
        for d in &self.devices {
            check(d.validate(&mut device_ids, &mut ids));
        }
        problems
    }
}

impl ponte_proto::config_env::NodeConfig for AgentConfig {
    fn validate(&self) -> Result<()> {
        AgentConfig::validate(self)
    }
}

impl Device {
    /// Checks one device: its id, source and lenses, against the ids of
    /// the devices and cameras before it.
    fn validate<'a>(&'a self, device_ids: &mut HashSet<&'a String>, ids: &mut HashSet<String>) -> Result<()> {
        let d = self;
        if !valid_id(&d.id) {
            bail!("`device.id` = {:?}: use lowercase letters, digits and `-`", d.id);
        }
        if !device_ids.insert(&d.id) {
            bail!("`device.id` = {:?} appears twice; device ids must be unique", d.id);
        }
        d.validate_source()?;
        let n = d.lens_count();
        if !(1..=8).contains(&n) {
            bail!("device `{}`: `lenses` = {n}: expected 1 to 8", d.id);
        }
        for lens in 1..=n {
            let cam = d.camera_id(lens);
            if !ids.insert(cam.clone()) {
                bail!("device `{}`: camera id `{cam}` is used twice; device ids must be unique", d.id);
            }
        }
        Ok(())
    }
}

/// `ponte-agent config check --config FILE`: loads the config as `run`
/// does and reads what it names (`[tls]` files, the audit directory, camera
/// passwords from the environment); prints every problem, each naming its
/// key, and returns the exit code (0 OK, 1 problems).
pub fn check_cli(path: &Path) -> i32 {
    let mut report = ponte_proto::config_check::Report::new(path);
    let Some(cfg) = report.load::<AgentConfig>() else { return report.finish("") };
    for p in cfg.problems() {
        report.add_error(p.as_ref());
    }
    let id = report.tls(&cfg.tls);
    if let Some(leaf) = id.as_ref().and_then(|i| i.chain.first()) {
        if !ponte_proto::tls::usages(leaf).client {
            report.add(format!(
                "`tls.cert` `{}` is not usable by a client, and the agent dials the relays: issue it with \
                 `ponte-agent pki issue --site {} --usage client`",
                cfg.tls.cert.display(),
                cfg.agent.id
            ));
        }
    }
    report.https(
        "management.https",
        cfg.management.https.as_ref(),
        cfg.management.client_ca.as_deref(),
        id.as_ref(),
    );
    report.writable("audit.path", &cfg.audit.path);
    if cfg.devices.iter().any(|d| d.source.rtsp().is_some_and(RtspSource::transcodes)) {
        if let Err(e) = crate::sources::transcode::check_elements() {
            report.add(format!("`device.browser_h264 = \"transcode\"` cannot run on this machine: {e}"));
        }
    }
    let cameras: usize = cfg.devices.iter().map(|d| usize::from(d.lens_count())).sum();
    report.finish(&format!(
        "agent `{}`: {} relay(s), {} device(s), {cameras} camera(s), {} [[site]] polic(ies), {} operator(s); audit `{}`, {}",
        cfg.agent.id,
        cfg.relays.len(),
        cfg.devices.len(),
        cfg.sites.len(),
        cfg.operators.len(),
        cfg.audit.path.display(),
        cfg.audit.retention().describe()
    ))
}

#[cfg(test)]
mod tests;
