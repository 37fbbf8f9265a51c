//! Agent configuration: TOML file plus `PONTE_*` environment overrides.

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

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
}

/// `[agent]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentSection {
    /// Node id (also the name in its certificate).
    pub id: String,
}

/// `[tls]`: PEM files issued by `ponte-agent pki`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSection {
    /// Deployment CA certificate.
    pub ca: PathBuf,
    /// This node's certificate.
    pub cert: PathBuf,
    /// This node's private key.
    pub key: PathBuf,
}

/// `[transport]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TransportSection {
    /// UDP segmentation offload (turn off on NICs/VMs that mishandle it).
    #[serde(default = "yes")]
    pub gso: bool,
}

impl Default for TransportSection {
    fn default() -> Self {
        Self { gso: true }
    }
}

fn yes() -> bool {
    true
}

/// `[[relay]]`: one partner site's relay.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RelayTarget {
    /// Site id; the relay's certificate must name it (SAN `site:<id>` or DNS).
    pub site: String,
    /// UDP address of the relay's QUIC listener.
    pub addr: SocketAddr,
    /// TLS server name to verify (defaults to the site id).
    #[serde(default)]
    pub server_name: Option<String>,
}

/// Camera type of a device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DeviceKind {
    /// Motorised PTZ dome.
    DomePtz,
    /// Fixed dome.
    Dome,
    /// Fixed camera with two lenses.
    FixedBiOptic,
    /// Fixed camera with four lenses.
    FixedQuadOptic,
    /// Plain fixed camera.
    Fixed,
}

impl DeviceKind {
    /// Kebab-case name, as in config and catalog.
    pub fn name(self) -> &'static str {
        match self {
            DeviceKind::DomePtz => "dome-ptz",
            DeviceKind::Dome => "dome",
            DeviceKind::FixedBiOptic => "fixed-bi-optic",
            DeviceKind::FixedQuadOptic => "fixed-quad-optic",
            DeviceKind::Fixed => "fixed",
        }
    }

    /// Lens count implied by the type.
    pub fn lenses(self) -> u8 {
        match self {
            DeviceKind::FixedBiOptic => 2,
            DeviceKind::FixedQuadOptic => 4,
            _ => 1,
        }
    }
}

/// Where a device's video comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SourceKind {
    /// Built-in test pattern encoded to H.264.
    Synthetic,
}

/// `[[device]]`: one physical camera with one or more lenses.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Device {
    /// Stable id (lowercase letters, digits, `-`).
    pub id: String,
    /// Human name (place).
    pub name: String,
    /// Zone / neighbourhood.
    #[serde(default)]
    pub zone: String,
    /// Camera type.
    #[serde(rename = "type")]
    pub kind: DeviceKind,
    /// Number of lenses (defaults to what the type implies).
    #[serde(default)]
    pub lenses: Option<u8>,
    /// Free tags for policy.
    #[serde(default)]
    pub tags: Vec<String>,
    /// Video source.
    pub source: SourceKind,
}

impl Device {
    /// Lens count.
    pub fn lens_count(&self) -> u8 {
        self.lenses.unwrap_or(self.kind.lenses())
    }

    /// Camera id of lens `n` (from 1): the device id for a single lens.
    pub fn camera_id(&self, lens: u8) -> String {
        if self.lens_count() == 1 {
            self.id.clone()
        } else {
            format!("{}-{lens}", self.id)
        }
    }
}

/// True for ids usable in URLs and config keys.
pub fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

impl AgentConfig {
    /// Loads a config file, applying `PONTE_<SECTION>__<KEY>` environment overrides.
    pub fn load(path: &Path) -> Result<Self> {
        let cfg: AgentConfig = config::Config::builder()
            .add_source(config::File::from(path).format(config::FileFormat::Toml))
            .add_source(config::Environment::with_prefix("PONTE").separator("__"))
            .build()
            .and_then(|c| c.try_deserialize())
            .with_context(|| format!("config file `{}`", path.display()))?;
        cfg.validate().with_context(|| format!("config file `{}`", path.display()))?;
        Ok(cfg)
    }

    /// Checks what serde cannot: ids, duplicates, lens counts.
    pub fn validate(&self) -> Result<()> {
        if !valid_id(&self.agent.id) {
            bail!("`agent.id` = {:?}: use lowercase letters, digits and `-`", self.agent.id);
        }
        let mut sites = HashSet::new();
        for r in &self.relays {
            if !sites.insert(&r.site) {
                bail!("`relay.site` = {:?} appears twice", r.site);
            }
        }
        let mut ids = HashSet::new();
        let mut device_ids = HashSet::new();
        for d in &self.devices {
            if !valid_id(&d.id) {
                bail!("`device.id` = {:?}: use lowercase letters, digits and `-`", d.id);
            }
            if !device_ids.insert(&d.id) {
                bail!("`device.id` = {:?} appears twice; device ids must be unique", d.id);
            }
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
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(toml: &str) -> Result<AgentConfig> {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("ponte-cfg-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let p = dir.join("agent.toml");
        std::fs::write(&p, toml)?;
        AgentConfig::load(&p)
    }

    const BASE: &str = r#"
[agent]
id = "master"
[tls]
ca = "ca.pem"
cert = "master.pem"
key = "master.key"
[[relay]]
site = "carabinieri"
addr = "127.0.0.1:7443"
[[device]]
id = "zaist"
name = "rotatoria"
zone = "Zaist"
type = "fixed-quad-optic"
source = "synthetic"
"#;

    #[test]
    fn example_config_loads() {
        let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/examples/agent-minimal.toml");
        let c = AgentConfig::load(&p).unwrap();
        assert_eq!(c.relays.len(), 2);
    }

    #[test]
    fn loads_and_derives_lens_ids() {
        let c = parse(BASE).unwrap();
        assert_eq!(c.devices[0].lens_count(), 4);
        assert_eq!(c.devices[0].camera_id(3), "zaist-3");
    }

    #[test]
    fn unknown_key_is_named() {
        let err = format!("{:#}", parse(&BASE.replace("zone = ", "zoen = ")).unwrap_err());
        assert!(err.contains("zoen"), "{err}");
    }

    #[test]
    fn duplicate_device_is_refused() {
        let twice = format!(
            "{BASE}\n[[device]]\nid = \"zaist\"\nname = \"x\"\ntype = \"dome\"\nsource = \"synthetic\"\n"
        );
        let err = format!("{:#}", parse(&twice).unwrap_err());
        assert!(err.contains("zaist"), "{err}");
    }
}
