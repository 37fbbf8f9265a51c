//! Relay configuration: TOML file plus `PONTE_*` environment overrides.

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

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
}

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
    /// Seconds a stream with no viewers stays subscribed upstream.
    #[serde(default = "default_linger")]
    pub linger_secs: u64,
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

/// `[tls]`: PEM files issued by `ponte-agent pki`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSection {
    /// Deployment CA certificate.
    pub ca: PathBuf,
    /// This relay's certificate.
    pub cert: PathBuf,
    /// This relay's private key.
    pub key: PathBuf,
}

/// `[transport]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TransportSection {
    /// UDP segmentation offload.
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

impl RelayConfig {
    /// Loads a config file, applying `PONTE_<SECTION>__<KEY>` environment overrides.
    pub fn load(path: &Path) -> Result<Self> {
        let cfg: RelayConfig = config::Config::builder()
            .add_source(config::File::from(path).format(config::FileFormat::Toml))
            .add_source(config::Environment::with_prefix("PONTE").separator("__"))
            .build()
            .and_then(|c| c.try_deserialize())
            .with_context(|| format!("config file `{}`", path.display()))?;
        let site = &cfg.relay.site;
        if site.is_empty() || !site.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            bail!(
                "config file `{}`: `relay.site` = {site:?}: use lowercase letters, digits and `-`",
                path.display()
            );
        }
        Ok(cfg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_configs_load() {
        for site in ["carabinieri", "questura"] {
            let p =
                Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("../deploy/examples/relay-{site}.toml"));
            let c = RelayConfig::load(&p).unwrap();
            assert_eq!(c.relay.site, site);
        }
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
}
