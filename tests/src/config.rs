//! `agent.toml` and `relay.toml` for the tests: the binaries' own typed
//! configs ([`ponte_agent::config::AgentConfig`],
//! [`ponte_relay::config::RelayConfig`]) with the harness's defaults, written
//! with `toml::to_string`, so a test config is always one the binaries read
//! (the unit tests below load what is written through their loaders).
//!
//! The agent's `[[device]]` entries are still the harness's [`Device`], written
//! as TOML tables: the agent's device type is being reshaped (source-specific
//! keys into one `source` enum, same file format) and the tests keep one
//! stable way to describe a camera meanwhile.

use anyhow::{Context, Result};
use ponte_agent::config as agent;
use ponte_proto::policy::SitePolicyConfig;
use ponte_relay::config as relay;
use std::net::SocketAddr;
use std::ops::{Deref, DerefMut};
use std::path::{Path, PathBuf};

pub use ponte_agent::config::RelayTarget;
pub use ponte_proto::tls::TlsSection;

/// One `[[device]]` entry of the agent.
#[derive(Clone, Debug)]
pub struct Device {
    pub id: String,
    pub name: String,
    pub zone: String,
    /// `type` in TOML: dome-ptz | dome | fixed-bi-optic | fixed-quad-optic | fixed.
    pub kind: String,
    pub lenses: u32,
    pub source: String,
    /// Device-level TOML appended inside this `[[device]]` table, e.g.
    /// `tags = [..]`, `[device.synthetic]`, `[[device.lens]]`, `[device.onvif]`.
    /// Raw text until the agent's device type settles (see the module doc).
    pub extra: String,
}

impl Device {
    /// A single-lens synthetic fixed camera named after its id, zone `test`.
    pub fn synthetic(id: &str) -> Device {
        Device {
            id: id.to_string(),
            name: format!("synthetic {id}"),
            zone: "test".to_string(),
            kind: "fixed".to_string(),
            lenses: 1,
            source: "synthetic".to_string(),
            extra: String::new(),
        }
    }

    /// Two synthetic Cremona cameras in different zones: the PTZ dome
    /// `zaist-mantova` (zone `Zaist`) and the fixed `po-lungofiume` (zone `Po`).
    pub fn zaist_and_po() -> Vec<Device> {
        let mut ptz = Device::synthetic("zaist-mantova");
        ptz.name = "rotatoria via Mantova / via Zaist".into();
        ptz.zone = "Zaist".into();
        ptz.kind = "dome-ptz".into();
        let mut fixed = Device::synthetic("po-lungofiume");
        fixed.name = "lungo Po, imbarcadero".into();
        fixed.zone = "Po".into();
        vec![ptz, fixed]
    }

    /// The camera ids this device yields: its id for one lens,
    /// `<id>-1` .. `<id>-N` otherwise.
    pub fn camera_ids(&self) -> Vec<String> {
        if self.lenses <= 1 {
            vec![self.id.clone()]
        } else {
            (1..=self.lenses).map(|i| format!("{}-{i}", self.id)).collect()
        }
    }

    /// The `[[device]]` table.
    fn to_table(&self) -> Result<toml::Table> {
        let mut head = toml::Table::new();
        head.insert("id".into(), self.id.clone().into());
        head.insert("name".into(), self.name.clone().into());
        head.insert("zone".into(), self.zone.clone().into());
        head.insert("type".into(), self.kind.clone().into());
        head.insert("lenses".into(), i64::from(self.lenses).into());
        head.insert("source".into(), self.source.clone().into());
        // `extra` may open `[device.x]` tables: read it inside a whole
        // document so those land in this device.
        let text = format!("[[device]]\n{head}\n{}\n", self.extra);
        let mut doc: toml::Table = toml::from_str(&text)
            .with_context(|| format!("device `{}`: `extra` is not TOML:\n{text}", self.id))?;
        match doc.remove("device") {
            Some(toml::Value::Array(mut list)) if list.len() == 1 => match list.pop() {
                Some(toml::Value::Table(table)) => Ok(table),
                _ => anyhow::bail!("device `{}`: not a table", self.id),
            },
            _ => anyhow::bail!("device `{}`: `extra` opened another `[[device]]`:\n{text}", self.id),
        }
    }
}

/// A `[[site]]` that may see the cameras `allow` selects (nothing else set).
pub fn site_policy(id: &str, allow: &[&str]) -> SitePolicyConfig {
    SitePolicyConfig {
        id: id.to_owned(),
        allow: allow.iter().map(|s| (*s).to_owned()).collect(),
        ..SitePolicyConfig::default()
    }
}

/// `agent.toml`: the agent's config with the harness's devices. Derefs to
/// the agent's [`agent::AgentConfig`], whose `devices` stay empty.
#[derive(Clone, Debug)]
pub struct AgentConfig {
    /// Everything but the devices.
    pub node: agent::AgentConfig,
    /// The `[[device]]` entries.
    pub devices: Vec<Device>,
}

impl AgentConfig {
    /// Agent `id` feeding `relays`, with the harness's defaults: every
    /// relay's site may see every camera (`[[site]] allow = ["*"]`), the
    /// audit log sits beside the PKI, the management port is picked by the
    /// node (`127.0.0.1:0`, see `Proc::management_url`).
    pub fn new(id: &str, tls: TlsSection, relays: Vec<RelayTarget>, devices: Vec<Device>) -> AgentConfig {
        let audit = beside_pki(&tls, "agent-audit.log");
        let mut node = agent::AgentConfig::new(id, tls);
        node.sites = relays.iter().map(|r| site_policy(&r.site, &["*"])).collect();
        node.relays = relays;
        node.audit.path = audit;
        node.management.listen = SocketAddr::from(([127, 0, 0, 1], 0));
        AgentConfig { node, devices }
    }

    /// The TOML text.
    pub fn to_toml(&self) -> Result<String> {
        let mut doc = toml::Table::try_from(&self.node).context("the agent config as TOML")?;
        let devices =
            self.devices.iter().map(|d| d.to_table().map(toml::Value::Table)).collect::<Result<_>>()?;
        doc.insert("device".into(), toml::Value::Array(devices));
        toml::to_string(&doc).context("writing the agent config")
    }

    /// Write the TOML to `path`; returns `path`.
    pub fn write(&self, path: impl AsRef<Path>) -> Result<PathBuf> {
        write_file(path.as_ref(), &self.to_toml()?)
    }

    /// Every camera id the devices yield, in order.
    pub fn camera_ids(&self) -> Vec<String> {
        self.devices.iter().flat_map(Device::camera_ids).collect()
    }
}

impl Deref for AgentConfig {
    type Target = agent::AgentConfig;
    fn deref(&self) -> &Self::Target {
        &self.node
    }
}

impl DerefMut for AgentConfig {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.node
    }
}

/// `relay.toml`: the relay's config. Derefs to [`relay::RelayConfig`].
#[derive(Clone, Debug)]
pub struct RelayConfig {
    pub node: relay::RelayConfig,
}

impl RelayConfig {
    /// Relay `site` on these addresses, with the harness's defaults:
    /// `allow_anonymous = true` (until [`Self::viewer`] or [`Self::token`]
    /// add an account), the audit log beside the PKI
    /// (`relay-<site>-audit.log`), the management port picked by the node.
    pub fn new(site: &str, quic_listen: SocketAddr, http_listen: SocketAddr, tls: TlsSection) -> RelayConfig {
        let audit = beside_pki(&tls, &format!("relay-{site}-audit.log"));
        let mut section = relay::RelaySection::new(site);
        section.quic_listen = quic_listen;
        section.http_listen = http_listen;
        section.allow_anonymous = true;
        let mut node = relay::RelayConfig::new(section, tls);
        node.audit.path = audit;
        node.management.listen = SocketAddr::from(([127, 0, 0, 1], 0));
        RelayConfig { node }
    }

    /// Adds a `[[viewer]]`; a relay with accounts is no longer anonymous.
    pub fn viewer(&mut self, viewer: ponte_relay::auth::ViewerConfig) -> &mut Self {
        self.node.viewers.push(viewer);
        self.node.relay.allow_anonymous = false;
        self
    }

    /// Adds a `[[token]]`; a relay with accounts is no longer anonymous.
    pub fn token(&mut self, token: ponte_relay::auth::TokenConfig) -> &mut Self {
        self.node.tokens.push(token);
        self.node.relay.allow_anonymous = false;
        self
    }

    /// An RTSP server on `127.0.0.1:port` (`[rtsp]` defaults otherwise).
    pub fn rtsp_on(&mut self, port: u16) -> &mut relay::RtspSection {
        self.node.rtsp.insert(relay::RtspSection::new(SocketAddr::from(([127, 0, 0, 1], port))))
    }

    /// The TOML text.
    pub fn to_toml(&self) -> Result<String> {
        toml::to_string(&self.node).context("writing the relay config")
    }

    /// Where the relay writes its audit log.
    pub fn audit_path(&self) -> PathBuf {
        self.node.audit.path.clone()
    }

    /// Write the TOML to `path`; returns `path`.
    pub fn write(&self, path: impl AsRef<Path>) -> Result<PathBuf> {
        write_file(path.as_ref(), &self.to_toml()?)
    }

    /// `http://<http_listen>`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.node.relay.http_listen)
    }
}

impl Deref for RelayConfig {
    type Target = relay::RelayConfig;
    fn deref(&self) -> &Self::Target {
        &self.node
    }
}

impl DerefMut for RelayConfig {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.node
    }
}

/// TOML text written as is, for tests that feed the binaries malformed or
/// unusual files on purpose (`config check` messages, refusals at start):
/// a typed config cannot hold what they need to write.
pub fn raw_toml(path: impl AsRef<Path>, text: &str) -> Result<PathBuf> {
    write_file(path.as_ref(), text)
}

/// `name` in the directory of the CA certificate.
fn beside_pki(tls: &TlsSection, name: &str) -> PathBuf {
    tls.ca.parent().unwrap_or(Path::new(".")).join(name)
}

fn write_file(path: &Path, text: &str) -> Result<PathBuf> {
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
    Ok(path.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ponte_relay::auth::{TokenConfig, ViewerConfig};

    fn tls() -> TlsSection {
        TlsSection { ca: "/p/ca.pem".into(), cert: "/p/master.pem".into(), key: "/p/master.key".into() }
    }

    #[test]
    fn agent_config_is_what_the_agent_loads() {
        let mut quad = Device::synthetic("porta");
        quad.kind = "fixed-quad-optic".into();
        quad.lenses = 4;
        quad.name = "via \"Po\" \\ nord".into();
        quad.extra = "tags = [\"park\"]\n[device.synthetic]\nmain_kbps = 900\n".into();
        let mut cfg = AgentConfig::new(
            "master",
            tls(),
            vec![RelayTarget::new("carabinieri", "127.0.0.1:7443".parse().unwrap())],
            vec![Device::synthetic("a"), quad],
        );
        cfg.ptz.deadman_ms = 5000;
        let toml = cfg.to_toml().unwrap();
        let loaded = agent::AgentConfig::from_toml(&toml).unwrap_or_else(|e| panic!("{e:#}\n{toml}"));
        assert_eq!(loaded.agent.id, "master");
        assert_eq!(loaded.relays, cfg.relays);
        assert_eq!(loaded.tls.ca, Path::new("/p/ca.pem"));
        assert_eq!(loaded.sites, [site_policy("carabinieri", &["*"])]);
        assert_eq!(loaded.audit.path, Path::new("/p/agent-audit.log"));
        assert_eq!(loaded.management.listen, "127.0.0.1:0".parse::<SocketAddr>().unwrap());
        assert_eq!(loaded.ptz.deadman_ms, 5000);
        let ids: Vec<_> = loaded.devices.iter().map(|d| d.id.as_str()).collect();
        assert_eq!(ids, ["a", "porta"]);
        let porta = &loaded.devices[1];
        assert_eq!(
            (porta.name.as_str(), porta.lenses, &porta.tags),
            ("via \"Po\" \\ nord", Some(4), &vec!["park".into()])
        );
        assert_eq!(porta.source.synthetic().map(|s| s.main_kbps), Some(Some(900)));
        assert_eq!(cfg.camera_ids(), ["a", "porta-1", "porta-2", "porta-3", "porta-4"]);
    }

    #[test]
    fn relay_config_is_what_the_relay_loads() {
        let cfg = RelayConfig::new(
            "carabinieri",
            "127.0.0.1:7443".parse().unwrap(),
            "127.0.0.1:8080".parse().unwrap(),
            tls(),
        );
        let toml = cfg.to_toml().unwrap();
        let loaded = relay::RelayConfig::from_toml(&toml).unwrap_or_else(|e| panic!("{e:#}\n{toml}"));
        assert!(loaded.relay.allow_anonymous);
        assert_eq!(loaded.relay.quic_listen, "127.0.0.1:7443".parse::<SocketAddr>().unwrap());
        assert_eq!(loaded.audit.path, Path::new("/p/relay-carabinieri-audit.log"));
        assert_eq!(cfg.audit_path(), Path::new("/p/relay-carabinieri-audit.log"));
        assert_eq!(cfg.base_url(), "http://127.0.0.1:8080");

        // Accounts turn anonymity off; every section a test sets survives.
        let mut cfg = RelayConfig {
            node: relay::RelayConfig { relay: relay::RelaySection::new("questura-vms"), ..cfg.node },
        };
        cfg.relay.upstreams = vec!["carabinieri".into()];
        cfg.relay.allow_anonymous = true;
        cfg.token(TokenConfig::new("vms", "ab".repeat(32)));
        let phc = ponte_proto::credentials::hash_password("torrazzo-112-metri").unwrap();
        let mut anna = ViewerConfig::new("anna", phc);
        anna.cameras = Some(vec!["zone:Zaist".into()]);
        cfg.viewer(anna);
        cfg.rtsp_on(8554).basic = true;
        cfg.downstreams.push(ponte_relay::cascade::DownstreamConfig {
            site: "questura".into(),
            addr: "127.0.0.1:7444".parse().unwrap(),
            server_name: None,
        });
        let toml = cfg.to_toml().unwrap();
        let loaded = relay::RelayConfig::from_toml(&toml).unwrap_or_else(|e| panic!("{e:#}\n{toml}"));
        assert!(!loaded.relay.allow_anonymous, "{toml}");
        assert_eq!(loaded.relay.upstreams, ["carabinieri"]);
        assert_eq!(loaded.tokens[0].name, "vms");
        assert_eq!(loaded.viewers[0].cameras, Some(vec!["zone:Zaist".into()]));
        assert!(loaded.rtsp.as_ref().is_some_and(|r| r.basic && r.listen.port() == 8554), "{toml}");
        assert_eq!(loaded.downstreams[0].site, "questura");
    }

    #[test]
    fn a_device_cannot_open_another_device() {
        let mut d = Device::synthetic("a");
        d.extra = "[[device]]\nid = \"b\"\n".into();
        let mut cfg = AgentConfig::new("master", tls(), Vec::new(), vec![d]);
        assert!(cfg.to_toml().is_err());
        cfg.devices[0].extra = "not toml".into();
        assert!(cfg.to_toml().is_err());
    }
}
