//! Writers for `agent.toml` and `relay.toml` in the formats the binaries read.

use anyhow::{Context, Result};
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// The `[tls]` table: CA certificate, own certificate and key.
#[derive(Clone, Debug)]
pub struct TlsPaths {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// One `[[relay]]` entry of the agent: the site's certificate identity and
/// its QUIC address.
#[derive(Clone, Debug)]
pub struct RelayTarget {
    pub site: String,
    pub addr: SocketAddr,
}

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
    /// Raw TOML lines appended inside this `[[device]]` table (e.g. `url = "rtsp://..."`).
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
}

/// `agent.toml`.
#[derive(Clone, Debug)]
pub struct AgentConfig {
    pub id: String,
    pub tls: TlsPaths,
    pub relays: Vec<RelayTarget>,
    pub devices: Vec<Device>,
    /// Raw TOML appended at the end of the file; start it with a table
    /// header (e.g. `[[policy]]`) so its keys do not land in the last device.
    pub extra: String,
}

impl AgentConfig {
    /// The TOML text.
    pub fn to_toml(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "[agent]\nid = {}\n", q(&self.id));
        write_tls(&mut s, &self.tls);
        for r in &self.relays {
            let _ = writeln!(s, "[[relay]]\nsite = {}\naddr = {}\n", q(&r.site), q(&r.addr.to_string()));
        }
        for d in &self.devices {
            let _ = writeln!(
                s,
                "[[device]]\nid = {}\nname = {}\nzone = {}\ntype = {}\nlenses = {}\nsource = {}",
                q(&d.id),
                q(&d.name),
                q(&d.zone),
                q(&d.kind),
                d.lenses,
                q(&d.source)
            );
            push_extra(&mut s, &d.extra);
            s.push('\n');
        }
        push_extra(&mut s, &self.extra);
        // Defaults a test can override through `extra`: every relay's site
        // may see every camera, and the audit log sits beside the PKI.
        if !self.extra.contains("[[site]]") {
            for r in &self.relays {
                let _ = writeln!(s, "\n[[site]]\nid = {}\nallow = [\"*\"]", q(&r.site));
            }
        }
        if !self.extra.contains("[audit]") {
            let dir = self.tls.ca.parent().unwrap_or(Path::new("."));
            let _ = writeln!(s, "\n[audit]\npath = {}", q(&dir.join("agent-audit.log").to_string_lossy()));
        }
        if !self.extra.contains("[management]") {
            // Port 0: the node logs the port it got (see `Proc::management_url`).
            let _ = writeln!(s, "\n[management]\nlisten = \"127.0.0.1:0\"");
        }
        s
    }

    /// Write the TOML to `path`; returns `path`.
    pub fn write(&self, path: impl AsRef<Path>) -> Result<PathBuf> {
        write_file(path.as_ref(), &self.to_toml())
    }

    /// Every camera id the devices yield, in order.
    pub fn camera_ids(&self) -> Vec<String> {
        self.devices.iter().flat_map(Device::camera_ids).collect()
    }
}

/// `relay.toml`.
#[derive(Clone, Debug)]
pub struct RelayConfig {
    pub site: String,
    pub quic_listen: SocketAddr,
    pub http_listen: SocketAddr,
    pub tls: TlsPaths,
    /// Raw TOML: keys before its first table header go into `[relay]`
    /// (`upstreams = [...]`), the tables are appended at the end of the file.
    pub extra: String,
}

impl RelayConfig {
    /// The TOML text. Lines of `extra` before its first table header are
    /// keys of `[relay]` (`upstreams = ["carabinieri"]`). A relay without
    /// `[[viewer]]` or `[[token]]` in `extra` gets `allow_anonymous = true`
    /// unless those lines set it.
    pub fn to_toml(&self) -> String {
        let (relay_keys, tables) = split_relay_keys(&self.extra);
        let mut s = String::new();
        let _ = writeln!(
            s,
            "[relay]\nsite = {}\nquic_listen = {}\nhttp_listen = {}",
            q(&self.site),
            q(&self.quic_listen.to_string()),
            q(&self.http_listen.to_string())
        );
        let has_accounts = tables.contains("[[viewer]]") || tables.contains("[[token]]");
        if !has_accounts && !relay_keys.contains("allow_anonymous") {
            s.push_str("allow_anonymous = true\n");
        }
        push_extra(&mut s, relay_keys);
        s.push('\n');
        write_tls(&mut s, &self.tls);
        push_extra(&mut s, tables);
        if !self.extra.contains("[management]") {
            let _ = writeln!(s, "\n[management]\nlisten = \"127.0.0.1:0\"");
        }
        // The relay's audit log sits beside the PKI, as the agent's does.
        if !self.extra.contains("[audit]") {
            let _ = writeln!(s, "\n[audit]\npath = {}", q(&self.audit_path().to_string_lossy()));
        }
        s
    }

    /// Where the relay writes its audit log unless `extra` has an `[audit]` table.
    pub fn audit_path(&self) -> PathBuf {
        self.tls.ca.parent().unwrap_or(Path::new(".")).join(format!("relay-{}-audit.log", self.site))
    }

    /// Write the TOML to `path`; returns `path`.
    pub fn write(&self, path: impl AsRef<Path>) -> Result<PathBuf> {
        write_file(path.as_ref(), &self.to_toml())
    }

    /// `http://<http_listen>`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.http_listen)
    }
}

/// `extra` split at its first table header: the keys before it, the tables from it.
fn split_relay_keys(extra: &str) -> (&str, &str) {
    let mut at = 0;
    for line in extra.split_inclusive('\n') {
        if line.trim_start().starts_with('[') {
            break;
        }
        at += line.len();
    }
    extra.split_at(at)
}

/// An agent `[[operator]]` with a bearer token, made by the real
/// `ponte-agent operator token --name NAME`: the token and the table.
pub fn operator_token(name: &str) -> Result<(String, String)> {
    let out = crate::agent_cli(&["operator", "token", "--name", name], "")?;
    let token = out.lines().next().context("no token line")?.trim().to_owned();
    let table: Vec<&str> = out.lines().skip(1).filter(|l| !l.starts_with('#') && !l.is_empty()).collect();
    Ok((token, format!("{}\n", table.join("\n"))))
}

/// An agent `[[operator]]` with a password (HTTP Basic), made by the real
/// `ponte-agent operator passwd --name NAME`: the table.
pub fn operator_password(name: &str, password: &str) -> Result<String> {
    crate::agent_cli(&["operator", "passwd", "--name", name], &format!("{password}\n"))
}

fn write_tls(s: &mut String, tls: &TlsPaths) {
    let _ = writeln!(
        s,
        "[tls]\nca = {}\ncert = {}\nkey = {}\n",
        q(&tls.ca.to_string_lossy()),
        q(&tls.cert.to_string_lossy()),
        q(&tls.key.to_string_lossy())
    );
}

fn push_extra(s: &mut String, extra: &str) {
    if !extra.is_empty() {
        s.push_str(extra);
        if !extra.ends_with('\n') {
            s.push('\n');
        }
    }
}

fn write_file(path: &Path, text: &str) -> Result<PathBuf> {
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
    Ok(path.to_path_buf())
}

/// A TOML basic string. JSON string syntax as serde_json writes it is a
/// subset of TOML's basic strings.
fn q(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| format!("{s:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tls() -> TlsPaths {
        TlsPaths { ca: "/p/ca.pem".into(), cert: "/p/master.pem".into(), key: "/p/master.key".into() }
    }

    #[test]
    fn agent_toml_has_the_agreed_layout() {
        let mut quad = Device::synthetic("porta");
        quad.kind = "fixed-quad-optic".into();
        quad.lenses = 4;
        quad.name = "via \"Po\" \\ nord".into();
        let cfg = AgentConfig {
            id: "master".into(),
            tls: tls(),
            relays: vec![RelayTarget { site: "carabinieri".into(), addr: "127.0.0.1:7443".parse().unwrap() }],
            devices: vec![Device::synthetic("a"), quad],
            extra: "[[policy]]\nsite = \"carabinieri\"".into(),
        };
        let toml = cfg.to_toml();
        assert!(toml.starts_with("[agent]\nid = \"master\"\n"), "{toml}");
        assert!(
            toml.contains("[tls]\nca = \"/p/ca.pem\"\ncert = \"/p/master.pem\"\nkey = \"/p/master.key\"\n")
        );
        assert!(toml.contains("[[relay]]\nsite = \"carabinieri\"\naddr = \"127.0.0.1:7443\"\n"));
        assert!(toml.contains("type = \"fixed-quad-optic\"\nlenses = 4\nsource = \"synthetic\""));
        assert!(toml.contains(r#"name = "via \"Po\" \\ nord""#), "{toml}");
        assert!(toml.contains("[[policy]]\nsite = \"carabinieri\"\n"), "{toml}");
        // Defaults the extra TOML did not set: every relay's site sees every
        // camera, the management port is picked by the node.
        assert!(toml.contains("[[site]]\nid = \"carabinieri\"\nallow = [\"*\"]"), "{toml}");
        assert!(toml.contains("[management]\nlisten = \"127.0.0.1:0\""), "{toml}");
        assert_eq!(cfg.camera_ids(), ["a", "porta-1", "porta-2", "porta-3", "porta-4"]);
    }

    #[test]
    fn relay_toml_has_the_agreed_layout() {
        let cfg = RelayConfig {
            site: "carabinieri".into(),
            quic_listen: "127.0.0.1:7443".parse().unwrap(),
            http_listen: "127.0.0.1:8080".parse().unwrap(),
            tls: tls(),
            extra: String::new(),
        };
        let toml = cfg.to_toml();
        assert!(
            toml.starts_with(
                "[relay]\nsite = \"carabinieri\"\nquic_listen = \"127.0.0.1:7443\"\nhttp_listen = \"127.0.0.1:8080\"\n\
                 allow_anonymous = true\n\n\
                 [tls]\nca = \"/p/ca.pem\"\ncert = \"/p/master.pem\"\nkey = \"/p/master.key\"\n\n"
            ),
            "{toml}"
        );
        assert!(toml.contains("\n[audit]\npath = \"/p/relay-carabinieri-audit.log\"\n"), "{toml}");
        assert_eq!(cfg.audit_path(), Path::new("/p/relay-carabinieri-audit.log"));
        assert_eq!(cfg.base_url(), "http://127.0.0.1:8080");
        // Keys before the first table go to `[relay]`; accounts turn anonymity off.
        let cfg = RelayConfig {
            extra: "upstreams = [\"carabinieri\"]\n[[token]]\nname = \"vms\"\n".into(),
            site: "questura-vms".into(),
            ..cfg
        };
        let toml = cfg.to_toml();
        assert!(
            toml.contains("http_listen = \"127.0.0.1:8080\"\nupstreams = [\"carabinieri\"]\n\n[tls]"),
            "{toml}"
        );
        assert!(!toml.contains("allow_anonymous"), "{toml}");
        assert!(toml.contains("\n[[token]]\nname = \"vms\"\n"), "{toml}");
    }
}
