//! Relay configuration: TOML file plus `PONTE_*` environment overrides.

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

pub use ponte_proto::endpoint::TransportSection;
pub use ponte_proto::tls::TlsSection;

/// The whole relay config file.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RelayConfig {
    /// This relay.
    pub relay: RelaySection,
    /// Trust anchor and identity.
    pub tls: TlsSection,
    /// QUIC transport knobs.
    #[serde(default)]
    pub transport: TransportSection,
    /// Local viewer accounts (`[[viewer]]`); none and no token = no authentication.
    #[serde(default, rename = "viewer")]
    pub viewers: Vec<crate::auth::ViewerConfig>,
    /// Bearer tokens for machine clients (`[[token]]`).
    #[serde(default, rename = "token")]
    pub tokens: Vec<crate::auth::TokenConfig>,
    /// The relay's audit log.
    #[serde(default)]
    pub audit: AuditSection,
    /// Management port (status page, JSON, metrics).
    #[serde(default)]
    pub management: ManagementSection,
    /// WHEP (browser) viewers: limits.
    #[serde(default)]
    pub whep: WhepSection,
    /// RTSP egress for the site's VMS; absent = no RTSP server.
    #[serde(default)]
    pub rtsp: Option<RtspSection>,
    /// Relays this one feeds (`[[downstream]]`, the cascade).
    #[serde(default, rename = "downstream")]
    pub downstreams: Vec<crate::cascade::DownstreamConfig>,
}

/// `[whep]`: how many browser viewers the relay takes.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WhepSection {
    /// Most concurrent WHEP sessions on this relay.
    #[serde(default = "default_whep_max_sessions")]
    pub max_sessions: usize,
    /// Most concurrent WHEP sessions on one camera.
    #[serde(default = "default_whep_max_per_camera")]
    pub max_per_camera: usize,
    /// WHEP offers one client address may make per minute (0: no limit).
    #[serde(default = "default_whep_offers_per_minute")]
    pub offers_per_minute: u32,
    /// UDP ports for WebRTC media, one per session, e.g. `"40000-40199"`:
    /// the range to open in a firewall. Unset: an ephemeral port each.
    #[serde(default)]
    pub udp_ports: Option<crate::media_ports::PortRange>,
    /// Address WebRTC media binds and offers to browsers. Unset: the IP of
    /// `relay.http_listen` (every interface when that is a wildcard).
    #[serde(default)]
    pub media_ip: Option<std::net::IpAddr>,
    /// Most concurrent WHEP sessions of one viewer account or token, so one
    /// account (or one stolen password) cannot take every slot.
    #[serde(default = "default_whep_max_per_viewer")]
    pub max_per_viewer: usize,
}

impl Default for WhepSection {
    fn default() -> Self {
        Self {
            max_sessions: default_whep_max_sessions(),
            max_per_camera: default_whep_max_per_camera(),
            offers_per_minute: default_whep_offers_per_minute(),
            udp_ports: None,
            media_ip: None,
            max_per_viewer: default_whep_max_per_viewer(),
        }
    }
}

fn default_whep_max_sessions() -> usize {
    64
}

fn default_whep_max_per_camera() -> usize {
    16
}

/// A 4×4 console wall, one tile switching quality, and a spare.
fn default_whep_max_per_viewer() -> usize {
    20
}

/// A 4×4 wall opened a few times a minute (each tile is one offer, a
/// quality switch another).
fn default_whep_offers_per_minute() -> u32 {
    120
}

/// `[rtsp]`: `rtsp://<listen>/<camera>` and `rtsp://<listen>/<camera>/sub`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RtspSection {
    /// TCP address of the RTSP server (the usual port is 8554).
    pub listen: SocketAddr,
    /// Offer RTP/AVP over UDP unicast as well as interleaved TCP.
    #[serde(default = "yes")]
    pub udp: bool,
    /// Even UDP port for RTP, RTCP on the next one (for firewalls); absent = any free pair.
    #[serde(default)]
    pub udp_port: Option<u16>,
    /// Accept Basic authentication (the password travels in clear): for VMS
    /// that cannot do Digest, or accounts without `rtsp_digest_ha1`.
    #[serde(default)]
    pub basic: bool,
    /// A session without keep-alive for this long is ended.
    #[serde(default = "default_rtsp_timeout")]
    pub session_timeout_secs: u64,
    /// Most concurrent RTSP sessions on this relay.
    #[serde(default = "default_rtsp_max")]
    pub max_sessions: usize,
    /// Most concurrent RTSP client connections.
    #[serde(default = "default_rtsp_max")]
    pub max_connections: usize,
    /// Most concurrent RTSP connections from one client address, so one
    /// host cannot take every slot.
    #[serde(default = "default_rtsp_max_per_client")]
    pub max_connections_per_client: usize,
    /// A connection that has not logged in this many seconds after it
    /// opened is closed, whatever it sends meanwhile.
    #[serde(default = "default_rtsp_auth_deadline")]
    pub auth_deadline_secs: u64,
}

fn default_rtsp_max_per_client() -> usize {
    16
}

fn default_rtsp_auth_deadline() -> u64 {
    10
}

fn default_rtsp_max() -> usize {
    256
}

fn default_rtsp_timeout() -> u64 {
    60
}

impl RtspSection {
    /// An RTSP server on `listen` with every other key at its default.
    pub fn new(listen: SocketAddr) -> Self {
        Self {
            listen,
            udp: true,
            udp_port: None,
            basic: false,
            session_timeout_secs: default_rtsp_timeout(),
            max_sessions: default_rtsp_max(),
            max_connections: default_rtsp_max(),
            max_connections_per_client: default_rtsp_max_per_client(),
            auth_deadline_secs: default_rtsp_auth_deadline(),
        }
    }
}

/// `[management]`: status, metrics, health, the status page (default 127.0.0.1:9091).
pub type ManagementSection = ponte_proto::mgmt::ManagementSection<9091>;

impl RelayConfig {
    /// Where the browser sessions are kept: `relay.state_dir`, else the
    /// audit log's directory.
    pub fn sessions_file(&self) -> PathBuf {
        self.state_dir().join(crate::auth::session_store::FILE_NAME)
    }

    /// Where the console's saved layouts are kept, beside the sessions.
    pub fn layouts_file(&self) -> PathBuf {
        self.state_dir().join(crate::console::layouts::FILE_NAME)
    }

    /// Where evidence exports taken at this relay are saved.
    pub fn exports_dir(&self) -> PathBuf {
        self.state_dir().join("exports")
    }

    fn state_dir(&self) -> PathBuf {
        match &self.relay.state_dir {
            Some(dir) => dir.clone(),
            None => self.audit.path.parent().map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from(".")),
        }
    }
}

/// `[audit]`: where the audit goes, when it rotates, how long rotated files
/// are kept (nothing is deleted by default).
pub type AuditSection = ponte_proto::audit::AuditSection<{ ponte_proto::audit::RELAY }>;

/// `[relay]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RelaySection {
    /// Site id; must match this relay's certificate.
    pub site: String,
    /// UDP address for upstream QUIC sessions (agent or upstream relay).
    #[serde(default = "default_quic")]
    pub quic_listen: SocketAddr,
    /// TCP address of the viewer page and WHEP.
    #[serde(default = "default_http")]
    pub http_listen: SocketAddr,
    /// Names and addresses operators reach the viewer page by, beyond
    /// `localhost` and this host's IP addresses (the DNS-rebinding guard).
    #[serde(default)]
    pub http_allowed_hosts: Vec<String>,
    /// Viewer-port connections open at once.
    #[serde(default = "default_http_max_connections")]
    pub http_max_connections: usize,
    /// Viewer-port connections open at once from one client address.
    #[serde(default = "default_http_max_per_client")]
    pub http_max_connections_per_client: usize,
    /// Seconds a client has to send a request head (and again its body).
    #[serde(default = "default_http_read_timeout")]
    pub http_read_timeout_secs: u64,
    /// Seconds without a byte either way before a connection is closed.
    #[serde(default = "default_http_idle_timeout")]
    pub http_idle_timeout_secs: u64,
    /// Seconds a stream with no viewers stays subscribed upstream.
    #[serde(default = "default_linger")]
    pub linger_secs: u64,
    /// Seconds viewers are kept waiting when the upstream link is lost (fibre
    /// cut, agent restart): their streams resume by themselves if it comes
    /// back in time, and end after that.
    #[serde(default = "default_reconnect_grace")]
    pub reconnect_grace_secs: u64,
    /// On a relay without `[[viewer]]`/`[[token]]` accounts, let every viewer
    /// steer the PTZ cameras the site may steer. Off by default: with accounts,
    /// the right is per account (`ptz = true`).
    #[serde(default)]
    pub open_ptz: bool,
    /// Site identities (from their certificates) that may feed this relay,
    /// most preferred first: the agent's `master`, or for a cascade child its
    /// parent relay's site. Any other certificate of the deployment CA is
    /// refused: it could otherwise inject cameras, shadow real ones, or
    /// receive the site's PTZ commands. A camera listed by two of them is
    /// taken from the first listed.
    #[serde(default = "default_upstreams")]
    pub upstreams: Vec<String>,
    /// Serve without `[[viewer]]`/`[[token]]` accounts: every viewer who
    /// reaches the page sees every camera of the site. Off by default: a relay
    /// without accounts refuses to start unless this is set (the demo sets it).
    #[serde(default)]
    pub allow_anonymous: bool,
    /// Directory for what the relay keeps across restarts (the browser
    /// sessions, `relay-sessions.json`). Unset: the audit log's directory
    /// (`/var/lib/ponte` by default).
    #[serde(default)]
    pub state_dir: Option<PathBuf>,
    /// HTTPS on `http_listen` (`[relay.https]`): the session cookie is then
    /// `Secure` and browsers are told to stay on HTTPS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub https: Option<ponte_proto::tls::https::HttpsSection>,
    /// Hours a browser session lasts at most, however busy (an operator
    /// logs in again each shift); the idle limit applies besides.
    #[serde(default = "default_session_max_hours")]
    pub session_max_hours: u64,
    /// The other relays of this site, as operators' browsers reach their
    /// viewer port (`"https://host:port"`): the console moves to the first
    /// that answers when this relay stops answering. Needs `pair_key_file`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub peers: Vec<String>,
    /// The secret every relay of the site shares (`ponte-relay pair-key
    /// --out FILE`, mode 0600): it signs the pair tokens that log a page in
    /// at a peer without a prompt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pair_key_file: Option<PathBuf>,
}

fn default_session_max_hours() -> u64 {
    12
}

impl RelaySection {
    /// Site `site` with every other key at the default a file without it
    /// gets (anonymous viewers refused, fed by the master).
    pub fn new(site: impl Into<String>) -> Self {
        Self {
            site: site.into(),
            quic_listen: default_quic(),
            http_listen: default_http(),
            http_allowed_hosts: Vec::new(),
            http_max_connections: default_http_max_connections(),
            http_max_connections_per_client: default_http_max_per_client(),
            http_read_timeout_secs: default_http_read_timeout(),
            http_idle_timeout_secs: default_http_idle_timeout(),
            linger_secs: default_linger(),
            reconnect_grace_secs: default_reconnect_grace(),
            open_ptz: false,
            upstreams: default_upstreams(),
            allow_anonymous: false,
            state_dir: None,
            https: None,
            session_max_hours: default_session_max_hours(),
            peers: Vec::new(),
            pair_key_file: None,
        }
    }
}

impl RelayConfig {
    /// `relay` with `tls` and every other section at the default a file
    /// without it gets: no accounts, no RTSP, no downstreams (tests and
    /// benchmarks build configs from here rather than from TOML text).
    pub fn new(relay: RelaySection, tls: TlsSection) -> Self {
        Self {
            relay,
            tls,
            transport: TransportSection::default(),
            viewers: Vec::new(),
            tokens: Vec::new(),
            audit: AuditSection::default(),
            management: ManagementSection::default(),
            whep: WhepSection::default(),
            rtsp: None,
            downstreams: Vec::new(),
        }
    }
}

fn default_upstreams() -> Vec<String> {
    vec![MASTER_SITE.to_owned()]
}

/// The site id of the master room's agent, reserved for it.
pub use ponte_proto::ptz::MASTER_SITE;

impl RelaySection {
    /// The viewer port's HTTP guards.
    pub fn http_options(&self) -> ponte_proto::http_server::HttpOptions {
        ponte_proto::http_server::HttpOptions {
            name: "viewer page",
            keys: "relay.http_",
            allowed_hosts: self.http_allowed_hosts.clone(),
            max_connections: self.http_max_connections,
            max_connections_per_client: self.http_max_connections_per_client,
            read_timeout: std::time::Duration::from_secs(self.http_read_timeout_secs),
            idle_timeout: std::time::Duration::from_secs(self.http_idle_timeout_secs),
            tls: None,
        }
    }
}

fn default_http_max_connections() -> usize {
    ponte_proto::http_server::DEFAULT_VIEWER_MAX_CONNECTIONS
}

fn default_http_max_per_client() -> usize {
    ponte_proto::http_server::DEFAULT_VIEWER_MAX_PER_CLIENT
}

fn default_http_read_timeout() -> u64 {
    ponte_proto::http_server::DEFAULT_READ_TIMEOUT_SECS
}

fn default_http_idle_timeout() -> u64 {
    ponte_proto::http_server::DEFAULT_IDLE_TIMEOUT_SECS
}

fn default_reconnect_grace() -> u64 {
    60
}

fn default_quic() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 7443))
}

fn default_http() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 8080))
}

fn default_linger() -> u64 {
    5
}

fn yes() -> bool {
    true
}

impl RelayConfig {
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

    /// Checks what serde cannot: the site id, accounts, RTSP and cascade;
    /// the error lists every problem found, one a line.
    fn validate(&self) -> Result<()> {
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
        let site = &self.relay.site;
        if site.is_empty() || !site.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            check(Err(anyhow::anyhow!("`relay.site` = {site:?}: use lowercase letters, digits and `-`")));
        }
        // Accounts are checked here so a bad hash or selector names the file.
        match crate::auth::Accounts::from_config(&self.viewers, &self.tokens) {
            Ok(accounts) if accounts.is_open() && !self.relay.allow_anonymous => check(Err(anyhow::anyhow!(
                "no [[viewer]] and no [[token]]: this relay would show every camera of site `{site}` to anyone \
                 who reaches it. Add accounts (`ponte-relay passwd --user NAME`, `ponte-relay token`), or set \
                 `relay.allow_anonymous = true` to serve without them on a network you trust"
            ))),
            Ok(_) => {}
            Err(e) => check(Err(e)),
        }
        if self.relay.open_ptz && !self.relay.allow_anonymous {
            check(Err(anyhow::anyhow!("`relay.open_ptz` applies to relays without accounts only: set `relay.allow_anonymous = true`, or give accounts `ptz = true`")));
        }
        check(self.check_upstreams());
        check(self.relay.http_options().check(self.relay.http_listen).map_err(anyhow::Error::msg));
        if !(1..=720).contains(&self.relay.session_max_hours) {
            check(Err(anyhow::anyhow!(
                "`relay.session_max_hours` = {}: expected 1 to 720 (a browser session's longest life)",
                self.relay.session_max_hours
            )));
        }
        if let Some(r) = self.relay.https.as_ref().and_then(|h| h.redirect_listen) {
            if r == self.relay.http_listen {
                check(Err(anyhow::anyhow!(
                    "`relay.https.redirect_listen` = {r} is `relay.http_listen` too: the redirect port must be \
                     another one (usually port 80 beside HTTPS on 443)"
                )));
            }
        }
        check(self.audit.check().map_err(anyhow::Error::msg));
        check(self.management.check().map_err(anyhow::Error::msg));
        check(self.check_rtsp_and_cascade());
        check(self.peers().map(drop));
        problems
    }

    /// `relay.peers`, checked; with peers, `relay.pair_key_file` must be set.
    pub fn peers(&self) -> Result<crate::peers::Peers> {
        let peers =
            crate::peers::Peers::parse(&self.relay.peers, self.relay.http_listen, self.relay.https.is_some())
                .map_err(anyhow::Error::msg)?;
        if !peers.is_empty() && self.relay.pair_key_file.is_none() {
            bail!(
                "`relay.peers` is set but `relay.pair_key_file` is not: the relays of a site share a key to \
                 log pages in at each other (`ponte-relay pair-key --out FILE`, the same file on every relay)"
            );
        }
        Ok(peers)
    }

    fn check_upstreams(&self) -> Result<()> {
        let site = &self.relay.site;
        if ponte_proto::redundancy::is_agent_site(site) {
            bail!("`relay.site` = {site:?}: `{MASTER_SITE}` and `{MASTER_SITE}-<name>` are reserved for the master room's agents: name the relay after its site");
        }
        if self.relay.upstreams.is_empty() {
            bail!("`relay.upstreams` is empty: list the site that feeds this relay (`[\"{MASTER_SITE}\"]`, or the parent relay's site in a cascade)");
        }
        let mut seen = std::collections::HashSet::new();
        for up in &self.relay.upstreams {
            if up == site {
                bail!("`relay.upstreams` lists {up:?}, this relay itself: a relay cannot feed itself");
            }
            if up.is_empty() || !up.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            {
                bail!("`relay.upstreams` entry {up:?}: a site id is lowercase letters, digits and `-`");
            }
            if !seen.insert(up) {
                bail!("`relay.upstreams` lists {up:?} twice");
            }
        }
        Ok(())
    }

    fn check_rtsp_and_cascade(&self) -> Result<()> {
        if let Some(rtsp) = &self.rtsp {
            if rtsp.udp_port.is_some_and(|p| !p.is_multiple_of(2) || p == u16::MAX) {
                bail!("`rtsp.udp_port` = {:?}: RTP takes an even port, RTCP the next one", rtsp.udp_port);
            }
            if rtsp.max_sessions == 0 || rtsp.max_connections == 0 {
                bail!(
                    "`rtsp.max_sessions` and `rtsp.max_connections` must be at least 1 (256 is the default)"
                );
            }
            if rtsp.session_timeout_secs == 0 {
                bail!("`rtsp.session_timeout_secs` must be at least 1 (60 is usual)");
            }
            if rtsp.max_connections_per_client == 0 {
                bail!("`rtsp.max_connections_per_client` must be at least 1 (16 is the default)");
            }
            if rtsp.auth_deadline_secs == 0 || rtsp.auth_deadline_secs > 300 {
                bail!(
                    "`rtsp.auth_deadline_secs` = {} must be between 1 and 300 (10 is the default): \
                     a connection that has not logged in by then is closed",
                    rtsp.auth_deadline_secs
                );
            }
        }
        if self.whep.max_sessions == 0 || self.whep.max_per_camera == 0 || self.whep.max_per_viewer == 0 {
            bail!(
                "`whep.max_sessions`, `whep.max_per_camera` and `whep.max_per_viewer` must be at least 1 \
                 (defaults 64, 16 and 8)"
            );
        }
        if let Some(ports) = self.whep.udp_ports {
            if ports.len() < self.whep.max_sessions {
                bail!(
                    "`whep.udp_ports` = \"{ports}\" holds {} ports but `whep.max_sessions` is {}: every WHEP \
                     session needs a port of its own; widen the range or lower `whep.max_sessions`",
                    ports.len(),
                    self.whep.max_sessions
                );
            }
        }
        let mut seen = std::collections::HashSet::new();
        for d in &self.downstreams {
            if d.site == self.relay.site {
                bail!("[[downstream]] site {:?} is this relay itself: a relay cannot feed itself", d.site);
            }
            if !seen.insert(&d.site) {
                bail!("[[downstream]] site {:?} is listed twice", d.site);
            }
        }
        Ok(())
    }
}

impl ponte_proto::config_env::NodeConfig for RelayConfig {
    fn validate(&self) -> Result<()> {
        RelayConfig::validate(self)
    }
}

/// `ponte-relay config check --config FILE`: loads the config as `run`
/// does and reads what it names (`[tls]` files and the site they name, the
/// audit directory); prints every problem, each naming its key, and returns
/// the exit code (0 OK, 1 problems).
pub fn check_cli(path: &Path) -> i32 {
    let mut report = ponte_proto::config_check::Report::new(path);
    let Some(cfg) = report.load::<RelayConfig>() else { return report.finish("") };
    for p in cfg.problems() {
        report.add_error(p.as_ref());
    }
    let id = report.tls(&cfg.tls);
    report.https("relay.https", cfg.relay.https.as_ref(), None, id.as_ref());
    report.https(
        "management.https",
        cfg.management.https.as_ref(),
        cfg.management.client_ca.as_deref(),
        id.as_ref(),
    );
    if let Some(leaf) = id.as_ref().and_then(|i| i.chain.first()) {
        let usages = ponte_proto::tls::usages(leaf);
        let site = &cfg.relay.site;
        if !usages.server {
            report.add(format!(
                "`tls.cert` is not usable by a server, and the agent dials this relay: issue it with \
                 `ponte-agent pki issue --site {site} --usage server` (`both` if it feeds `[[downstream]]` relays)"
            ));
        } else if !usages.client && !cfg.downstreams.is_empty() {
            report.add(format!(
                "`tls.cert` is not usable by a client, and this relay dials its `[[downstream]]` relays: issue it \
                 with `ponte-agent pki issue --site {site} --usage both`"
            ));
        }
    }
    // As `run` refuses it: the certificate must name this relay's site.
    if let Some(id) = id {
        let own = id.chain.first().and_then(|c| ponte_proto::tls::site_of_certificate(c));
        if own.as_deref() != Some(cfg.relay.site.as_str()) {
            report.add(format!(
                "`tls.cert` names site {own:?} but `relay.site` is {:?}: issue a certificate with \
                 `ponte-agent pki issue --site {}`",
                cfg.relay.site, cfg.relay.site
            ));
        }
    }
    if let Some(path) = &cfg.relay.pair_key_file {
        if let Err(e) = crate::auth::load_pair_key(path) {
            report.add(format!("{e:#}"));
        }
    }
    report.writable("relay.state_dir", &cfg.sessions_file());
    report.writable("audit.path", &cfg.audit.path);
    let accounts = if cfg.viewers.is_empty() && cfg.tokens.is_empty() {
        "no accounts (`relay.allow_anonymous`)".to_owned()
    } else {
        format!("{} viewer(s), {} token(s)", cfg.viewers.len(), cfg.tokens.len())
    };
    report.finish(&format!(
        "relay `{}`: {accounts}, fed by {}; viewer page on {}{}; audit `{}`, {}",
        cfg.relay.site,
        cfg.relay.upstreams.join(", "),
        cfg.relay.http_listen,
        cfg.rtsp.as_ref().map(|r| format!(", RTSP on {}", r.listen)).unwrap_or_default(),
        cfg.audit.path.display(),
        cfg.audit.retention().describe()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// As shipped, the examples have their accounts commented out: the
    /// relay refuses them until the admin adds one (or says it runs open).
    #[test]
    fn example_configs_load_once_accounts_or_anonymity_are_set() {
        for site in ["carabinieri", "questura"] {
            let p =
                Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("../deploy/examples/relay-{site}.toml"));
            // Text, not `load`: another test sets `PONTE_RELAY__ALLOW_ANONYMOUS` meanwhile.
            let shipped = std::fs::read_to_string(&p).unwrap();
            let err = format!("{:#}", RelayConfig::from_toml(&shipped).unwrap_err());
            assert!(err.contains("relay.allow_anonymous") && err.contains("ponte-relay passwd"), "{err}");
            let text = shipped.replace("# allow_anonymous = false", "allow_anonymous = true");
            let c = RelayConfig::from_toml(&text).unwrap();
            assert_eq!(c.relay.site, site);
            assert_eq!(c.relay.upstreams, ["master"]);
            assert_eq!(c.whep.max_per_viewer, 20);
        }
    }

    #[test]
    fn upstreams_and_anonymity_mistakes_are_refused_naming_the_key() {
        let base = "[tls]\nca=\"a\"\ncert=\"b\"\nkey=\"c\"\n";
        for (relay, needle) in [
            ("site = \"x\"", "relay.allow_anonymous"),
            ("site = \"x\"\nopen_ptz = true\nallow_anonymous = false", "relay.allow_anonymous"),
            ("site = \"master\"\nallow_anonymous = true", "reserved for the master room"),
            ("site = \"x\"\nallow_anonymous = true\nupstreams = []", "`relay.upstreams` is empty"),
            ("site = \"x\"\nallow_anonymous = true\nupstreams = [\"x\"]", "cannot feed itself"),
            ("site = \"x\"\nallow_anonymous = true\nupstreams = [\"master\", \"master\"]", "twice"),
            ("site = \"x\"\nallow_anonymous = true\nupstreams = [\"Master\"]", "lowercase"),
        ] {
            let err =
                format!("{:#}", RelayConfig::from_toml(&format!("[relay]\n{relay}\n{base}")).unwrap_err());
            assert!(err.contains(needle), "{relay}: {err}");
        }
    }

    /// The commented account examples are real config: uncommented (with a
    /// real hash and digest in place of the placeholders) they load.
    #[test]
    fn example_accounts_load_once_uncommented() {
        let phc = crate::auth::hash_password("example password").unwrap();
        let (_, digest) = crate::auth::new_token();
        let ha1 = crate::auth::digest_ha1("x", "example password");
        let dir = std::env::temp_dir().join(format!("ponte-relay-cfg-accounts-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for site in ["carabinieri", "questura"] {
            let p =
                Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("../deploy/examples/relay-{site}.toml"));
            let text = std::fs::read_to_string(&p).unwrap();
            let mut out = String::new();
            let mut in_accounts = false;
            for line in text.lines() {
                in_accounts = (in_accounts && line.starts_with('#')) || line.starts_with("# Local viewers");
                let setting = line.strip_prefix("# ").filter(|l| {
                    l.starts_with("[[")
                        || l.split_once(" = ").is_some_and(|(k, _)| {
                            k.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
                        })
                });
                out.push_str(if in_accounts { setting.unwrap_or(line) } else { line });
                out.push('\n');
            }
            let out = out
                .replace("$argon2id$v=19$m=19456,t=2,p=1$...$...", &phc)
                .replace("<64 hex digits>", &digest)
                .replace("rtsp_digest_ha1 = \"...\"", &format!("rtsp_digest_ha1 = \"{ha1}\""));
            let uncommented = dir.join(format!("relay-{site}.toml"));
            std::fs::write(&uncommented, &out).unwrap();
            let c = RelayConfig::load(&uncommented).unwrap_or_else(|e| panic!("{e:#}\n{out}"));
            assert_eq!((c.viewers.len(), c.tokens.len()), (2, 1), "{out}");
            assert_eq!(c.viewers[1].max_quality, Some(ponte_proto::media::Quality::Sub));
            assert_eq!(c.viewers[1].rtsp_digest_ha1.as_deref(), Some(ha1.as_str()));
            assert_eq!(c.audit.path, Path::new("/var/lib/ponte/relay-audit.log"));
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn account_mistakes_name_the_file_and_the_fix() {
        let dir = std::env::temp_dir().join(format!("ponte-relay-cfg-mistakes-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("relay.toml");
        let base = "[relay]\nsite = \"x\"\n[tls]\nca=\"a\"\ncert=\"b\"\nkey=\"c\"\n";
        for (extra, needle) in [
            ("[[viewer]]\nuser = \"anna\"\npassword_hash = \"secret\"\n", "ponte-relay passwd"),
            ("[[token]]\nname = \"vms\"\ntoken_sha256 = \"abc\"\ncameras = [\"*\"]\n", "64 hex digits"),
            ("[[viewer]]\nuser = \"anna\"\npasword_hash = \"x\"\n", "pasword_hash"),
        ] {
            std::fs::write(&p, format!("{base}{extra}")).unwrap();
            let err = format!("{:#}", RelayConfig::load(&p).unwrap_err());
            assert!(err.contains(needle) && err.contains("relay.toml"), "{err}");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// `ptz` is per account and per token, false unless set.
    #[test]
    fn ptz_right_is_per_account_and_off_by_default() {
        let phc = crate::auth::hash_password("example password").unwrap();
        let (_, digest) = crate::auth::new_token();
        let text = format!(
            "[relay]\nsite = \"x\"\n[tls]\nca=\"a\"\ncert=\"b\"\nkey=\"c\"\n\
             [[viewer]]\nuser = \"anna\"\npassword_hash = \"{phc}\"\nptz = true\n\
             [[viewer]]\nuser = \"bruno\"\npassword_hash = \"{phc}\"\n\
             [[token]]\nname = \"vms\"\ntoken_sha256 = \"{digest}\"\nptz = true\n"
        );
        let c = RelayConfig::from_toml(&text).unwrap();
        assert_eq!(c.viewers.iter().map(|v| v.ptz).collect::<Vec<_>>(), [true, false]);
        assert!(c.tokens[0].ptz);
        let err = format!(
            "{:#}",
            RelayConfig::from_toml(&text.replace("ptz = true", "ptz = \"maybe\"")).unwrap_err()
        );
        assert!(err.contains("ptz") || err.contains("bool"), "{err}");
    }

    /// The documented override form, `PONTE_<SECTION>__<KEY>`, takes effect.
    #[test]
    fn environment_overrides_use_the_documented_form() {
        let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/examples/relay-carabinieri.toml");
        std::env::set_var("PONTE_RELAY__RECONNECT_GRACE_SECS", "17");
        // The example has no accounts: it loads only once told to run open.
        std::env::set_var("PONTE_RELAY__ALLOW_ANONYMOUS", "true");
        let c = RelayConfig::load(&p);
        std::env::remove_var("PONTE_RELAY__RECONNECT_GRACE_SECS");
        std::env::remove_var("PONTE_RELAY__ALLOW_ANONYMOUS");
        assert_eq!(c.unwrap().relay.reconnect_grace_secs, 17);
    }

    /// `[[viewer]]` and `[[token]]` are reached by their number from 1; a
    /// variable that names nothing stops the load, named.
    #[test]
    fn environment_reaches_accounts_and_refuses_what_names_nothing() {
        let phc = crate::auth::hash_password("example password").unwrap();
        let dir = std::env::temp_dir().join(format!("ponte-relay-cfg-env-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("relay.toml");
        std::fs::write(
            &p,
            format!(
                "[relay]\nsite = \"x\"\n[tls]\nca=\"a\"\ncert=\"b\"\nkey=\"c\"\n\
                 [[viewer]]\nuser = \"anna\"\npassword_hash = \"{phc}\"\n"
            ),
        )
        .unwrap();
        let vars = |list: &[(&str, &str)]| -> Vec<(std::ffi::OsString, std::ffi::OsString)> {
            list.iter().map(|(k, v)| ((*k).into(), (*v).into())).collect()
        };
        let c = RelayConfig::load_with(&p, vars(&[("PONTE_VIEWER__1__PTZ", "true")])).unwrap();
        assert!(c.viewers[0].ptz);
        let err = format!(
            "{:#}",
            RelayConfig::load_with(
                &p,
                vars(&[
                    ("PONTE_VIEWER__2__PTZ", "true"),
                    ("PONTE_TOKEN__1__NAME", "vms"),
                    ("PONTE_RELAY__SITEE", "y")
                ])
            )
            .unwrap_err()
        );
        for want in [
            "`PONTE_VIEWER__2__PTZ`: the file has 1 `[[viewer]]` table(s)",
            "`PONTE_TOKEN__1__NAME`: the file has 0 `[[token]]` table(s)",
            "`PONTE_RELAY__SITEE` names `relay.sitee`, which is not a key",
            "relay.toml",
        ] {
            assert!(err.contains(want), "{want}: {err}");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn typo_is_named() {
        let dir = std::env::temp_dir().join(format!("ponte-relay-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("relay.toml");
        std::fs::write(
            &p,
            "[relay]\nsite = \"x\"\nhttp_lisen = \"0.0.0.0:1\"\n[tls]\nca=\"a\"\ncert=\"b\"\nkey=\"c\"\n",
        )
        .unwrap();
        let err = format!("{:#}", RelayConfig::load(&p).unwrap_err());
        assert!(err.contains("http_lisen"), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_bad_viewer_entry_is_named_by_user_position_and_line() {
        let text = "[relay]\nsite = \"x\"\n[tls]\nca=\"a\"\ncert=\"b\"\nkey=\"c\"\n\
                    [[viewer]]\nuser = \"anna\"\npassword_hash = \"h\"\n\
                    [[viewer]]\nuser = \"bruno\"\npassword_hash = \"h\"\nptz = [1, 2]\n";
        let err = format!("{:#}", RelayConfig::from_toml(text).unwrap_err());
        assert!(err.contains("`[[viewer]]` #2 (user \"bruno\"), key `ptz` (line 13): invalid type"), "{err}");
    }

    #[test]
    fn media_port_range_is_checked_against_the_session_limit() {
        let base = "[relay]\nsite = \"x\"\nallow_anonymous = true\n[tls]\nca=\"a\"\ncert=\"b\"\nkey=\"c\"\n";
        let cfg = RelayConfig::from_toml(&format!("{base}[whep]\nudp_ports = \"40000-40063\"\n")).unwrap();
        assert_eq!(cfg.whep.udp_ports.map(|r| r.len()), Some(64));
        let small = format!("{base}[whep]\nudp_ports = \"40000-40009\"\n");
        let err = format!("{:#}", RelayConfig::from_toml(&small).unwrap_err());
        assert!(
            err.contains("`whep.udp_ports` = \"40000-40009\" holds 10 ports") && err.contains("max_sessions"),
            "{err}"
        );
        let fits = format!(
            "{base}[whep]\nudp_ports = \"40000-40009\"\nmax_sessions = 10\nmedia_ip = \"10.20.0.5\"\n"
        );
        let cfg = RelayConfig::from_toml(&fits).unwrap();
        assert_eq!(cfg.whep.media_ip, Some("10.20.0.5".parse().unwrap()));
        let bad = format!("{base}[whep]\nudp_ports = \"40000\"\n");
        let err = format!("{:#}", RelayConfig::from_toml(&bad).unwrap_err());
        assert!(err.contains("udp_ports") && err.contains("LOW-HIGH"), "{err}");
    }

    #[test]
    fn rtsp_connection_caps_and_login_deadline_have_safe_defaults() {
        let base = "[relay]\nsite = \"x\"\nallow_anonymous = true\n[tls]\nca=\"a\"\ncert=\"b\"\nkey=\"c\"\n[rtsp]\nlisten = \"127.0.0.1:8554\"\n";
        let rtsp = RelayConfig::from_toml(base).unwrap().rtsp.unwrap();
        assert_eq!(
            (rtsp.max_connections, rtsp.max_connections_per_client, rtsp.auth_deadline_secs),
            (256, 16, 10)
        );
        let set = format!("{base}max_connections_per_client = 4\nauth_deadline_secs = 3\n");
        let rtsp = RelayConfig::from_toml(&set).unwrap().rtsp.unwrap();
        assert_eq!((rtsp.max_connections_per_client, rtsp.auth_deadline_secs), (4, 3));
        for (bad, key) in [
            ("max_connections_per_client = 0", "rtsp.max_connections_per_client"),
            ("auth_deadline_secs = 0", "rtsp.auth_deadline_secs"),
            ("auth_deadline_secs = 86400", "rtsp.auth_deadline_secs"),
        ] {
            let err = format!("{:#}", RelayConfig::from_toml(&format!("{base}{bad}\n")).unwrap_err());
            assert!(err.contains(&format!("`{key}`")), "{bad}: {err}");
        }
    }

    #[test]
    fn peers_need_the_pair_key_and_name_the_key_when_wrong() {
        let base = "[tls]\nca=\"a\"\ncert=\"b\"\nkey=\"c\"\n";
        let relay =
            "[relay]\nsite = \"carabinieri\"\nallow_anonymous = true\nhttp_listen = \"10.0.0.2:8443\"\n";
        let ok = format!(
            "{relay}peers = [\"http://10.0.0.3:8443\"]\npair_key_file = \"/etc/ponte/pair.key\"\n{base}"
        );
        let cfg = RelayConfig::from_toml(&ok).unwrap();
        assert_eq!(cfg.peers().unwrap().origins(), ["http://10.0.0.3:8443"]);
        assert!(RelayConfig::from_toml(&format!("{relay}{base}")).unwrap().peers().unwrap().is_empty());
        for (keys, needle) in [
            ("peers = [\"http://10.0.0.3:8443\"]", "`relay.pair_key_file` is not"),
            ("peers = [\"http://10.0.0.2:8443\"]\npair_key_file = \"k\"", "this relay itself"),
            ("peers = [\"10.0.0.3:8443\"]\npair_key_file = \"k\"", "`relay.peers` entry"),
            ("peers = [\"http://b:1\", \"http://B:1/\"]\npair_key_file = \"k\"", "twice"),
            ("peers = \"http://b:1\"\npair_key_file = \"k\"", "peers"),
        ] {
            let err = format!("{:#}", RelayConfig::from_toml(&format!("{relay}{keys}\n{base}")).unwrap_err());
            assert!(err.contains(needle), "{keys}: {err}");
        }
    }
}
