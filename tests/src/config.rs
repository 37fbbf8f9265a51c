//! `agent.toml` and `relay.toml` for the tests: the binaries' own typed
//! configs ([`ponte_agent::config::AgentConfig`],
//! [`ponte_relay::config::RelayConfig`]) with the harness's defaults, written
//! with `toml::to_string`, so a test config is always one the binaries read
//! (the unit tests below load what is written through their loaders).
//!
//! The agent's `[[device]]` entries are its own [`Device`] as well, with the
//! harness's shorthands in [`DeviceExt`] (a synthetic camera, a simulated PTZ
//! dome, the two Cremona cameras, an RTSP camera from a URL). One thing is
//! written differently from the agent's own serialization: a [`Secret`]
//! serializes as `***`, and the tests' cameras need the real password in the
//! file (see [`AgentConfig::to_toml`]).

use anyhow::{Context, Result};
use ponte_agent::config as agent;
use ponte_proto::policy::SitePolicyConfig;
use ponte_relay::config as relay;
use std::net::SocketAddr;
use std::ops::{Deref, DerefMut};
use std::path::{Path, PathBuf};

pub use ponte_agent::config::{Device, DeviceKind, LensSource, RelayTarget, RtspSource, Source};
pub use ponte_agent::secret::Secret;
pub use ponte_agent::sources::device::OnvifSettings;
pub use ponte_agent::sources::replay::ReplaySettings;
pub use ponte_agent::sources::rtsp::RtspTransport;
pub use ponte_agent::sources::synthetic::SyntheticSettings;
pub use ponte_proto::tls::TlsSection;

/// The harness's shorthands for the agent's [`Device`]; everything else is
/// set on its fields (`d.tags`, `d.source`, `d.onvif`, ...).
pub trait DeviceExt: Sized {
    /// A single-lens synthetic fixed camera named after its id, zone `test`.
    fn synthetic(id: &str) -> Self;

    /// [`DeviceExt::synthetic`] as a `dome-ptz` that answers PTZ commands
    /// with a simulated dome (`[device.synthetic] ptz = true`).
    fn simulated_dome(id: &str) -> Self;

    /// Two synthetic Cremona cameras in different zones: the PTZ dome
    /// `zaist-mantova` (zone `Zaist`, not steerable until given a
    /// `[device.onvif]`) and the fixed `po-lungofiume` (zone `Po`).
    fn zaist_and_po() -> Vec<Self>;

    /// A single-lens fixed RTSP camera `rtsp {id}`, zone `test`, pulling
    /// `url` as its main stream; the RTSP keys are the agent's defaults
    /// (set them with [`DeviceExt::rtsp_mut`]).
    fn rtsp(id: &str, url: &str) -> Self;

    /// The RTSP keys of an RTSP device. Panics on another source: a test
    /// that sets RTSP keys on a synthetic camera is wrong.
    fn rtsp_mut(&mut self) -> &mut RtspSource;

    /// The camera ids this device yields: its id for one lens,
    /// `<id>-1` .. `<id>-N` otherwise.
    fn camera_ids(&self) -> Vec<String>;
}

impl DeviceExt for Device {
    fn synthetic(id: &str) -> Device {
        Device {
            id: id.to_owned(),
            name: format!("synthetic {id}"),
            zone: "test".to_owned(),
            kind: DeviceKind::Fixed,
            source: Source::Synthetic(SyntheticSettings::default()),
            ..Device::default()
        }
    }

    fn simulated_dome(id: &str) -> Device {
        Device {
            kind: DeviceKind::DomePtz,
            source: Source::Synthetic(SyntheticSettings { ptz: true, ..SyntheticSettings::default() }),
            ..Device::synthetic(id)
        }
    }

    fn zaist_and_po() -> Vec<Device> {
        let ptz = Device {
            name: "rotatoria via Mantova / via Zaist".into(),
            zone: "Zaist".into(),
            kind: DeviceKind::DomePtz,
            ..Device::synthetic("zaist-mantova")
        };
        let fixed = Device {
            name: "lungo Po, imbarcadero".into(),
            zone: "Po".into(),
            ..Device::synthetic("po-lungofiume")
        };
        vec![ptz, fixed]
    }

    fn rtsp(id: &str, url: &str) -> Device {
        let lens = LensSource { main: url.to_owned(), sub: None, codec: None };
        Device {
            id: id.to_owned(),
            name: format!("rtsp {id}"),
            zone: "test".to_owned(),
            kind: DeviceKind::Fixed,
            source: Source::Rtsp(RtspSource { lenses: vec![lens], ..RtspSource::default() }),
            ..Device::default()
        }
    }

    fn rtsp_mut(&mut self) -> &mut RtspSource {
        match &mut self.source {
            Source::Rtsp(rtsp) => rtsp,
            other => panic!("device `{}` is a `{}` source, not RTSP", self.id, other.kind().name()),
        }
    }

    fn camera_ids(&self) -> Vec<String> {
        (1..=self.lens_count()).map(|lens| self.camera_id(lens)).collect()
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

/// `agent.toml`: the agent's config, devices included. Derefs to the
/// agent's [`agent::AgentConfig`] (`cfg.devices`, `cfg.sites`, ...).
#[derive(Clone, Debug)]
pub struct AgentConfig {
    pub node: agent::AgentConfig,
}

impl AgentConfig {
    /// Agent `id` feeding `relays` from `devices`, with the harness's
    /// defaults: every relay's site may see every camera (`[[site]] allow =
    /// ["*"]`), the audit log sits beside the PKI, the management port is
    /// picked by the node (`127.0.0.1:0`, see `Proc::management_url`).
    pub fn new(id: &str, tls: TlsSection, relays: Vec<RelayTarget>, devices: Vec<Device>) -> AgentConfig {
        let audit = beside_pki(&tls, "agent-audit.log");
        let mut node = agent::AgentConfig::new(id, tls);
        node.sites = relays.iter().map(|r| site_policy(&r.site, &["*"])).collect();
        node.relays = relays;
        node.devices = devices;
        node.audit.path = audit;
        node.management.listen = SocketAddr::from(([127, 0, 0, 1], 0));
        AgentConfig { node }
    }

    /// The TOML text: the agent's serialization, with the devices' real
    /// passwords.
    pub fn to_toml(&self) -> Result<String> {
        let mut doc = toml::Table::try_from(&self.node).context("the agent config as TOML")?;
        // A `Secret` serializes as `***` so that the agent never writes a
        // password out; the tests' RTSP and ONVIF cameras check the one in
        // the file, so it is put back here, in the written table only.
        if let Some(toml::Value::Array(tables)) = doc.get_mut("device") {
            anyhow::ensure!(tables.len() == self.node.devices.len(), "the agent config wrote other devices");
            for (device, table) in self.node.devices.iter().zip(tables) {
                real_passwords(device, table).with_context(|| format!("device `{}`", device.id))?;
            }
        }
        toml::to_string(&doc).context("writing the agent config")
    }

    /// Write the TOML to `path`; returns `path`.
    pub fn write(&self, path: impl AsRef<Path>) -> Result<PathBuf> {
        write_file(path.as_ref(), &self.to_toml()?)
    }

    /// Every camera id the devices yield, in order.
    pub fn camera_ids(&self) -> Vec<String> {
        self.node.devices.iter().flat_map(Device::camera_ids).collect()
    }
}

/// Overwrites the `***` of `device`'s passwords (RTSP `password`,
/// `[device.onvif] password`) in its written `[[device]]` table with the
/// real ones.
fn real_passwords(device: &Device, table: &mut toml::Value) -> Result<()> {
    let table = table.as_table_mut().context("not a table")?;
    if let Some(Secret(password)) = device.source.rtsp().and_then(|r| r.password.as_ref()) {
        table.insert("password".into(), password.clone().into());
    }
    if let Some(Secret(password)) = device.onvif.as_ref().and_then(|o| o.password.as_ref()) {
        let onvif = table.get_mut("onvif").and_then(toml::Value::as_table_mut).context("no `onvif` table")?;
        onvif.insert("password".into(), password.clone().into());
    }
    Ok(())
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
    use ponte_proto::media::Codec;
    use ponte_relay::auth::{TokenConfig, ViewerConfig};

    fn tls() -> TlsSection {
        TlsSection {
            ca: "/p/ca.pem".into(),
            cert: "/p/master.pem".into(),
            key: "/p/master.key".into(),
            crl: None,
        }
    }

    #[test]
    fn agent_config_is_what_the_agent_loads() {
        let quad = Device {
            kind: DeviceKind::FixedQuadOptic,
            name: "via \"Po\" \\ nord".into(),
            tags: vec!["park".into()],
            source: Source::Synthetic(SyntheticSettings {
                main_kbps: Some(900),
                ..SyntheticSettings::default()
            }),
            ..Device::synthetic("porta")
        };
        let mut cam = Device::rtsp("ingresso", "rtsp://10.0.0.7:554/Streaming/101");
        let rtsp = cam.rtsp_mut();
        rtsp.codec = Some(Codec::H265);
        rtsp.username = Some("ponte".into());
        rtsp.password = Some(Secret("Pa55=\"rtsp\"".into()));
        rtsp.transport = RtspTransport::Udp;
        let mut steered = Device::zaist_and_po().remove(0);
        steered.onvif = Some(OnvifSettings {
            url: "http://127.0.0.1:8899/onvif/ptz_service".into(),
            username: Some("admin".into()),
            password: Some(Secret("torrazzo-onvif".into())),
            ..OnvifSettings::default()
        });
        let devices = vec![Device::synthetic("a"), quad, Device::simulated_dome("dome"), cam, steered];
        let mut cfg = AgentConfig::new(
            "master",
            tls(),
            vec![RelayTarget::new("carabinieri", "127.0.0.1:7443".parse().unwrap())],
            devices,
        );
        cfg.ptz.deadman_ms = 5000;
        let toml = cfg.to_toml().unwrap();
        assert!(!toml.contains("***"), "a password written masked:\n{toml}");
        let loaded = agent::AgentConfig::from_toml(&toml).unwrap_or_else(|e| panic!("{e:#}\n{toml}"));
        assert_eq!(loaded.agent.id, "master");
        assert_eq!(loaded.relays, cfg.relays);
        assert_eq!(loaded.tls.ca, Path::new("/p/ca.pem"));
        assert_eq!(loaded.sites, [site_policy("carabinieri", &["*"])]);
        assert_eq!(loaded.audit.path, Path::new("/p/agent-audit.log"));
        assert_eq!(loaded.management.listen, "127.0.0.1:0".parse::<SocketAddr>().unwrap());
        assert_eq!(loaded.ptz.deadman_ms, 5000);
        // Every key of every device, passwords included (`Device`'s
        // `PartialEq` compares them), then the ones the tests rely on.
        assert_eq!(loaded.devices, cfg.devices, "{toml}");
        let ids: Vec<_> = loaded.devices.iter().map(|d| d.id.as_str()).collect();
        assert_eq!(ids, ["a", "porta", "dome", "ingresso", "zaist-mantova"]);
        let porta = &loaded.devices[1];
        assert_eq!(
            (porta.name.as_str(), porta.lens_count(), &porta.tags),
            ("via \"Po\" \\ nord", 4, &vec!["park".into()])
        );
        assert_eq!(porta.source.synthetic().map(|s| s.main_kbps), Some(Some(900)));
        let dome = &loaded.devices[2];
        assert_eq!((dome.kind, dome.source.synthetic().map(|s| s.ptz)), (DeviceKind::DomePtz, Some(true)));
        let cam = loaded.devices[3].source.rtsp().expect("an RTSP device");
        assert_eq!(cam.lens(1).map(|l| l.main.as_str()), Some("rtsp://10.0.0.7:554/Streaming/101"));
        assert_eq!((loaded.devices[3].codec_hint(1), cam.transport), (Codec::H265, RtspTransport::Udp));
        assert_eq!(cam.credentials("ingresso").unwrap(), Some(("ponte".into(), "Pa55=\"rtsp\"".into())));
        let onvif = loaded.devices[4].onvif.as_ref().expect("`[device.onvif]`");
        assert_eq!(onvif.password.as_ref().map(|p| p.0.as_str()), Some("torrazzo-onvif"));
        assert_eq!(
            cfg.camera_ids(),
            ["a", "porta-1", "porta-2", "porta-3", "porta-4", "dome", "ingresso", "zaist-mantova"]
        );
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
}
