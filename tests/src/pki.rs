//! A deployment PKI made by the real `ponte-agent pki` CLI.

use crate::config::TlsSection;
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How long one `ponte-agent pki` invocation may take.
const PKI_TIMEOUT: Duration = Duration::from_secs(30);

/// A CA plus site certificates in one directory: `ca.pem`, `ca.key`,
/// `<site>.pem`, `<site>.key`.
#[derive(Clone, Debug)]
pub struct Pki {
    dir: PathBuf,
}

impl Pki {
    /// `ponte-agent pki init --dir DIR`, then for each site
    /// `ponte-agent pki issue --dir DIR --site SITE --dns localhost --ip 127.0.0.1`.
    pub async fn create(dir: impl AsRef<Path>, sites: &[&str]) -> Result<Pki> {
        let dir = dir.as_ref().to_path_buf();
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let dir_arg = dir.to_string_lossy().into_owned();
        run_pki(&["init", "--dir", &dir_arg]).await?;
        let pki = Pki { dir };
        for ca_file in [pki.ca_cert(), pki.ca_key()] {
            if !ca_file.is_file() {
                bail!("`ponte-agent pki init` did not write {}", ca_file.display());
            }
        }
        for site in sites {
            pki.issue(site, &["localhost"], &["127.0.0.1"]).await?;
        }
        Ok(pki)
    }

    /// `ponte-agent pki issue --dir DIR --site SITE [--dns D]... [--ip I]...`.
    pub async fn issue(&self, site: &str, dns: &[&str], ips: &[&str]) -> Result<()> {
        let dir_arg = self.dir.to_string_lossy().into_owned();
        // Both usages: tests use one site's certificate as a QUIC client
        // and server alike (fake agents, cascades, benchmarks); the default
        // split is unit-tested in `ponte-agent`.
        let mut args = vec!["issue", "--dir", &dir_arg, "--site", site, "--usage", "both"];
        for d in dns {
            args.extend(["--dns", d]);
        }
        for ip in ips {
            args.extend(["--ip", ip]);
        }
        run_pki(&args).await?;
        for file in [self.cert(site), self.key(site)] {
            if !file.is_file() {
                bail!("`ponte-agent pki issue` did not write {}", file.display());
            }
        }
        Ok(())
    }

    /// The directory holding every file.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// `DIR/ca.pem`.
    pub fn ca_cert(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// `DIR/ca.key`.
    pub fn ca_key(&self) -> PathBuf {
        self.dir.join("ca.key")
    }

    /// `DIR/<site>.pem`.
    pub fn cert(&self, site: &str) -> PathBuf {
        self.dir.join(format!("{site}.pem"))
    }

    /// `DIR/<site>.key`.
    pub fn key(&self, site: &str) -> PathBuf {
        self.dir.join(format!("{site}.key"))
    }

    /// CA, certificate and key of `site`, as the configs want them.
    pub fn tls(&self, site: &str) -> TlsSection {
        TlsSection { ca: self.ca_cert(), cert: self.cert(site), key: self.key(site), crl: None }
    }
}

async fn run_pki(args: &[&str]) -> Result<()> {
    let agent = crate::bin_path("ponte-agent")?;
    let mut cmd = tokio::process::Command::new(&agent);
    cmd.arg("pki").args(args).env("NO_COLOR", "1").stdin(std::process::Stdio::null()).kill_on_drop(true);
    let out = tokio::time::timeout(PKI_TIMEOUT, cmd.output())
        .await
        .with_context(|| format!("`ponte-agent pki {}` took over {PKI_TIMEOUT:?}", args.join(" ")))?
        .with_context(|| format!("running {}", agent.display()))?;
    if !out.status.success() {
        bail!(
            "`ponte-agent pki {}` failed ({}):\n{}{}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use x509_parser::prelude::*;

    #[tokio::test]
    async fn issues_site_certificates_with_the_expected_names() {
        if !crate::require(
            crate::bin_path("ponte-agent").is_ok(),
            "the ponte-agent binary",
            "cargo build --workspace --bins",
        ) {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let pki = Pki::create(dir.path(), &["master", "carabinieri"]).await.unwrap();
        let pem = std::fs::read(pki.cert("carabinieri")).unwrap();
        let (_, pem) = parse_x509_pem(&pem).expect("site certificate is PEM");
        let cert = pem.parse_x509().expect("site certificate is X.509");
        let san = cert.subject_alternative_name().unwrap().expect("site certificate has a SAN");
        let names: Vec<String> = san
            .value
            .general_names
            .iter()
            .map(|n| match n {
                GeneralName::DNSName(d) => format!("dns:{d}"),
                GeneralName::URI(u) => format!("uri:{u}"),
                GeneralName::IPAddress(ip) => format!("ip:{ip:?}"),
                other => format!("{other:?}"),
            })
            .collect();
        for want in ["dns:carabinieri", "uri:site:carabinieri", "dns:localhost", "ip:[127, 0, 0, 1]"] {
            assert!(names.iter().any(|n| n == want), "SAN lacks {want}: {names:?}");
        }
        let ca = std::fs::read(pki.ca_cert()).unwrap();
        let (_, ca) = parse_x509_pem(&ca).unwrap();
        let ca = ca.parse_x509().unwrap();
        assert_eq!(cert.issuer(), ca.subject(), "site certificate issued by the CA");
        assert!(pki.key("master").is_file());
    }
}
