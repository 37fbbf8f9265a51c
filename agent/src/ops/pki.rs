//! The deployment's own certificate authority: `ponte-agent pki init`,
//! `issue`, `renew` and `revoke`.
//!
//! Leaves live 90 days by default and carry only the usage they need
//! (`server` for a relay, `client` for the agent, `both` for a relay that
//! also dials a cascade), so a stolen box's key soon stops working even if
//! nobody revokes it. Every certificate issued is noted in `issued.jsonl`
//! (serial, site, expiry), so `revoke --site X` revokes every certificate
//! that site still holds, the renewed one on a stolen box included, and
//! writes `crl.pem`, which nodes read at start and on SIGHUP (`tls.crl`).

use anyhow::{bail, Context, Result};
use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyIdMethod, KeyPair, KeyUsagePurpose, RevocationReason,
    RevokedCertParams, SanType, SerialNumber,
};
use serde::{Deserialize, Serialize};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use time::{Duration, OffsetDateTime};

/// Paths of the CA files in a PKI directory.
pub fn ca_paths(dir: &Path) -> (PathBuf, PathBuf) {
    (dir.join("ca.pem"), dir.join("ca.key"))
}

/// Site ids `pki issue` refuses: `ca` would overwrite the CA's own
/// `ca.pem` and `ca.key` with a site's.
const RESERVED_SITES: &[(&str, &str)] =
    &[("ca", "its files would be `ca.pem` and `ca.key`, overwriting the CA's own certificate and key")];

/// Writes a private key readable by its owner only (0600), whatever was at
/// `path` before: the key goes to a new file beside it, created 0600, which
/// then replaces `path` (an old 0644 file is not written through, and a
/// symbolic link is replaced, not followed).
fn write_private(path: &Path, pem: &str) -> Result<()> {
    use std::io::Write;
    #[cfg(unix)]
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let context = || format!("writing `{}`", path.display());
    let name = path.file_name().with_context(|| format!("`{}` names no file", path.display()))?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(".{}.tmp", std::process::id()));
    let tmp = path.with_file_name(tmp_name);
    let _ = std::fs::remove_file(&tmp);
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    opts.mode(0o600);
    let written = (|| -> std::io::Result<()> {
        let mut f = opts.open(&tmp)?;
        #[cfg(unix)]
        f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
        f.write_all(pem.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written.with_context(context)
}

/// Creates a new CA in `dir` (refuses to overwrite one).
pub fn init(dir: &Path, name: &str) -> Result<PathBuf> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating `{}`", dir.display()))?;
    let (cert_path, key_path) = ca_paths(dir);
    if cert_path.exists() || key_path.exists() {
        bail!("a CA already exists in `{}`; remove it first to make a new one", dir.display());
    }
    let key = KeyPair::generate().context("generating CA key")?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, name);
    dn.push(DnType::OrganizationName, "ponte");
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let now = OffsetDateTime::now_utc();
    params.not_before = now - Duration::days(1);
    params.not_after = now + Duration::days(3650);
    let cert = params.self_signed(&key).context("self-signing CA")?;
    std::fs::write(&cert_path, cert.pem()).with_context(|| format!("writing `{}`", cert_path.display()))?;
    write_private(&key_path, &key.serialize_pem())?;
    Ok(cert_path)
}

/// Default validity of a leaf certificate, in days.
pub const DEFAULT_DAYS: u32 = 90;

/// What a certificate may be used for (its extended key usage).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Usage {
    /// Accepts connections: a relay (QUIC from the agent, HTTPS from browsers).
    Server,
    /// Dials: the agent.
    Client,
    /// A relay that also dials a cascade relay.
    Both,
}

impl Usage {
    /// The usage a site gets when `--usage` is not given: `client` for the
    /// agent's `master` identity, `server` for a relay.
    pub fn default_for(site: &str) -> Self {
        if site == ponte_proto::ptz::MASTER_SITE || site.starts_with("master-") {
            Usage::Client
        } else {
            Usage::Server
        }
    }

    fn purposes(self) -> Vec<ExtendedKeyUsagePurpose> {
        match self {
            Usage::Server => vec![ExtendedKeyUsagePurpose::ServerAuth],
            Usage::Client => vec![ExtendedKeyUsagePurpose::ClientAuth],
            Usage::Both => vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth],
        }
    }
}

/// One line of `issued.jsonl`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Issued {
    /// Certificate serial (hex).
    pub serial: String,
    /// Site it names.
    pub site: String,
    /// Not valid after (RFC 3339).
    pub not_after: String,
    /// Its usage.
    pub usage: Usage,
}

const LEDGER: &str = "issued.jsonl";
/// The revocation list `pki revoke` writes in the PKI directory.
pub const CRL_FILE: &str = "crl.pem";

fn ledger(dir: &Path) -> Result<Vec<Issued>> {
    let path = dir.join(LEDGER);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("reading `{}`", path.display())),
    };
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .enumerate()
        .map(|(n, l)| {
            serde_json::from_str(l)
                .with_context(|| format!("`{}` line {}: not an issued record", path.display(), n + 1))
        })
        .collect()
}

fn note_issued(dir: &Path, record: &Issued) -> Result<()> {
    use std::io::Write;
    let path = dir.join(LEDGER);
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .with_context(|| format!("opening `{}`", path.display()))?;
    writeln!(f, "{}", serde_json::to_string(record)?).with_context(|| format!("writing `{}`", path.display()))
}

/// The CA certificate and key of `dir`.
fn load_ca(dir: &Path) -> Result<(rcgen::Certificate, KeyPair)> {
    let (ca_cert_path, ca_key_path) = ca_paths(dir);
    let ca_pem = std::fs::read_to_string(&ca_cert_path).with_context(|| {
        format!("reading CA `{}` (run `ponte-agent pki init` first)", ca_cert_path.display())
    })?;
    let ca_key_pem = std::fs::read_to_string(&ca_key_path).with_context(|| {
        format!("reading CA key `{}` (on the offline CA machine: see the admin guide)", ca_key_path.display())
    })?;
    let ca_key = KeyPair::from_pem(&ca_key_pem).context("parsing CA key")?;
    let ca_params = CertificateParams::from_ca_cert_pem(&ca_pem).context("parsing CA certificate")?;
    let ca = ca_params.self_signed(&ca_key).context("loading CA")?;
    Ok((ca, ca_key))
}

/// Issues a certificate for a site (or the agent) signed by the CA in `dir`;
/// writes `<site>.pem` and `<site>.key`.
pub fn issue(
    dir: &Path,
    site: &str,
    dns: &[String],
    ips: &[IpAddr],
    days: u32,
    usage: Usage,
) -> Result<(PathBuf, PathBuf)> {
    if !crate::config::valid_id(site) {
        bail!("site id {site:?}: use lowercase letters, digits and `-`");
    }
    if let Some((_, why)) = RESERVED_SITES.iter().find(|(name, _)| *name == site) {
        bail!("site id `{site}` is reserved: {why}; choose another site id");
    }
    if days == 0 {
        bail!("`--days 0`: a certificate must be valid for at least a day");
    }
    let (ca, ca_key) = load_ca(dir)?;
    let key = KeyPair::generate().context("generating key")?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, site);
    dn.push(DnType::OrganizationName, "ponte");
    params.distinguished_name = dn;
    let mut sans = vec![
        SanType::URI(format!("site:{site}").try_into().context("site URI")?),
        SanType::DnsName(site.try_into().context("site DNS name")?),
    ];
    for d in dns {
        sans.push(SanType::DnsName(d.as_str().try_into().with_context(|| format!("DNS name {d:?}"))?));
    }
    sans.extend(ips.iter().map(|ip| SanType::IpAddress(*ip)));
    params.subject_alt_names = sans;
    params.extended_key_usages = usage.purposes();
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    let now = OffsetDateTime::now_utc();
    params.not_before = now - Duration::days(1);
    params.not_after = now + Duration::days(days.into());
    let not_after =
        params.not_after.format(&time::format_description::well_known::Rfc3339).unwrap_or_default();
    let cert = params.signed_by(&key, &ca, &ca_key).context("signing certificate")?;
    let cert_path = dir.join(format!("{site}.pem"));
    let key_path = dir.join(format!("{site}.key"));
    let (serial, _) =
        ponte_proto::tls::live::serial_of(cert.der()).context("reading back the new certificate")?;
    std::fs::write(&cert_path, cert.pem()).with_context(|| format!("writing `{}`", cert_path.display()))?;
    write_private(&key_path, &key.serialize_pem())?;
    note_issued(dir, &Issued { serial, site: site.to_owned(), not_after, usage })?;
    Ok((cert_path, key_path))
}

/// Issues `<site>.pem` again with a new key, the same names and usage, for
/// `days`: the node reloads it on SIGHUP without dropping its sessions.
pub fn renew(dir: &Path, site: &str, days: u32) -> Result<(PathBuf, PathBuf)> {
    use x509_parser::prelude::*;
    let path = dir.join(format!("{site}.pem"));
    let pem = std::fs::read(&path)
        .with_context(|| format!("reading `{}` (renew re-issues an existing certificate)", path.display()))?;
    let (_, pem) =
        x509_parser::pem::parse_x509_pem(&pem).map_err(|e| anyhow::anyhow!("`{}`: {e}", path.display()))?;
    let cert = pem.parse_x509().map_err(|e| anyhow::anyhow!("`{}`: {e}", path.display()))?;
    let mut dns = Vec::new();
    let mut ips = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            match name {
                GeneralName::DNSName(d) if *d != site => dns.push((*d).to_owned()),
                GeneralName::IPAddress(b) => match b.len() {
                    4 => ips.extend(<[u8; 4]>::try_from(*b).ok().map(IpAddr::from)),
                    16 => ips.extend(<[u8; 16]>::try_from(*b).ok().map(IpAddr::from)),
                    _ => {}
                },
                _ => {}
            }
        }
    }
    let usage = match cert.extended_key_usage() {
        Ok(Some(eku)) => match (eku.value.server_auth, eku.value.client_auth) {
            (true, true) => Usage::Both,
            (false, true) => Usage::Client,
            _ => Usage::Server,
        },
        _ => Usage::default_for(site),
    };
    issue(dir, site, &dns, &ips, days, usage)
}

/// Revokes every unexpired certificate issued to `site` (or the one
/// `serial`) and writes `crl.pem`; returns its path and the serials it
/// added.
pub fn revoke(dir: &Path, site: Option<&str>, serial: Option<&str>) -> Result<(PathBuf, Vec<String>)> {
    let now = OffsetDateTime::now_utc();
    let mut targets: Vec<String> = Vec::new();
    if let Some(site) = site {
        let rfc3339 = &time::format_description::well_known::Rfc3339;
        for r in ledger(dir)?.into_iter().filter(|r| r.site == site) {
            let live = OffsetDateTime::parse(&r.not_after, rfc3339).map_or(true, |t| t > now);
            if live {
                targets.push(r.serial);
            }
        }
        // Issued before the ledger existed: the site's current file.
        if let Ok(pem) = std::fs::read(dir.join(format!("{site}.pem"))) {
            if let Ok((_, p)) = x509_parser::pem::parse_x509_pem(&pem) {
                if let Some((s, _)) = ponte_proto::tls::live::serial_of(&p.contents) {
                    targets.push(s);
                }
            }
        }
        if targets.is_empty() {
            bail!("no certificate issued to site `{site}` in `{}`", dir.display());
        }
    }
    if let Some(serial) = serial {
        let clean: String = serial.chars().filter(|c| *c != ':').collect();
        let bytes = hex::decode(&clean).ok().filter(|b| !b.is_empty());
        let Some(bytes) = bytes else {
            bail!("`--serial {serial}`: expected the certificate serial in hex (as `openssl x509 -serial` prints it)");
        };
        targets.push(ponte_proto::tls::live::serial_hex(&bytes));
    }
    if targets.is_empty() {
        bail!("say which certificate to revoke: `--site SITE` (all its certificates) or `--serial HEX`");
    }
    publish(dir, targets)
}

/// Writes `crl.pem` again with what it already lists (an empty list the
/// first time): deploy it with `tls.crl` before any revocation, so that a
/// revocation later is a copy and a reload.
pub fn crl(dir: &Path) -> Result<PathBuf> {
    publish(dir, Vec::new()).map(|(path, _)| path)
}

/// Signs `crl.pem`: what it listed plus `targets`; returns the serials added.
fn publish(dir: &Path, targets: Vec<String>) -> Result<(PathBuf, Vec<String>)> {
    let (ca, ca_key) = load_ca(dir)?;
    let now = OffsetDateTime::now_utc();
    let crl_path = dir.join(CRL_FILE);
    let mut entries = existing_revocations(&crl_path)?;
    let mut added = Vec::new();
    for t in targets {
        if !entries.iter().any(|(s, _)| *s == t) && !added.contains(&t) {
            added.push(t.clone());
            entries.push((t, now));
        }
    }
    let revoked_certs = entries
        .iter()
        .filter_map(|(serial, at)| {
            Some(RevokedCertParams {
                serial_number: SerialNumber::from_slice(&hex::decode(serial).ok()?),
                revocation_time: *at,
                reason_code: Some(RevocationReason::KeyCompromise),
                invalidity_date: None,
            })
        })
        .collect();
    let params = CertificateRevocationListParams {
        this_update: now,
        // Nodes do not expire the list (see `ponte_proto::tls::live`); a
        // year keeps other readers (openssl crl) content.
        next_update: now + Duration::days(365),
        crl_number: SerialNumber::from(u64::try_from(now.unix_timestamp()).unwrap_or_default()),
        issuing_distribution_point: None,
        revoked_certs,
        key_identifier_method: KeyIdMethod::Sha256,
    };
    let crl = params.signed_by(&ca, &ca_key).context("signing the revocation list")?;
    let pem = crl.pem().context("encoding the revocation list")?;
    let tmp = dir.join(format!(".{CRL_FILE}.tmp"));
    std::fs::write(&tmp, pem).with_context(|| format!("writing `{}`", tmp.display()))?;
    std::fs::rename(&tmp, &crl_path).with_context(|| format!("writing `{}`", crl_path.display()))?;
    Ok((crl_path, added))
}

/// The serials and dates an existing `crl.pem` lists (none if it does not exist).
fn existing_revocations(path: &Path) -> Result<Vec<(String, OffsetDateTime)>> {
    use x509_parser::prelude::*;
    let pem = match std::fs::read(path) {
        Ok(p) => p,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("reading `{}`", path.display())),
    };
    let (_, pem) =
        x509_parser::pem::parse_x509_pem(&pem).map_err(|e| anyhow::anyhow!("`{}`: {e}", path.display()))?;
    let (_, crl) = CertificateRevocationList::from_der(&pem.contents)
        .map_err(|e| anyhow::anyhow!("`{}`: not a CRL: {e}", path.display()))?;
    Ok(crl
        .iter_revoked_certificates()
        .map(|r| {
            let serial = ponte_proto::tls::live::serial_hex(r.raw_serial());
            let at = OffsetDateTime::from_unix_timestamp(r.revocation_date.timestamp())
                .unwrap_or(OffsetDateTime::UNIX_EPOCH);
            (serial, at)
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issued_certificate_names_the_site_and_loads() {
        let dir = std::env::temp_dir().join(format!("ponte-pki-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        init(&dir, "test CA").unwrap();
        assert!(init(&dir, "again").is_err(), "must not overwrite a CA");
        let (cert, key) =
            issue(&dir, "questura", &["localhost".into()], &["127.0.0.1".parse().unwrap()], 30, Usage::Both)
                .unwrap();
        let id = ponte_proto::tls::Identity::load(&dir.join("ca.pem"), &cert, &key).unwrap();
        assert_eq!(ponte_proto::tls::site_of_certificate(&id.chain[0]).as_deref(), Some("questura"));
        ponte_proto::tls::server_config(&id, &Default::default()).unwrap();
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A fresh directory for one test.
    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("ponte-pki-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn site_ca_is_refused_and_the_ca_survives() {
        let dir = scratch("reserved");
        init(&dir, "test CA").unwrap();
        let (ca, ca_key) = ca_paths(&dir);
        let before = (std::fs::read(&ca).unwrap(), std::fs::read(&ca_key).unwrap());
        let e = issue(&dir, "ca", &[], &[], 30, Usage::Server).unwrap_err().to_string();
        assert!(e.contains("site id `ca` is reserved") && e.contains("ca.key"), "{e}");
        assert_eq!((std::fs::read(&ca).unwrap(), std::fs::read(&ca_key).unwrap()), before);
        // The agent's own identity stays possible.
        issue(&dir, "master", &[], &[], 30, Usage::Client).unwrap();
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[cfg(unix)]
    #[test]
    fn key_files_are_0600_whatever_was_there() {
        use std::os::unix::fs::PermissionsExt;
        let dir = scratch("modes");
        init(&dir, "test CA").unwrap();
        let mode = |p: &Path| std::fs::symlink_metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir.join("ca.key")), 0o600);
        // An old world-readable key file, and one that is a link to a readable file elsewhere.
        let key = dir.join("questura.key");
        std::fs::write(&key, "old").unwrap();
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
        let elsewhere = dir.join("public.txt");
        std::fs::write(&elsewhere, "public").unwrap();
        std::fs::set_permissions(&elsewhere, std::fs::Permissions::from_mode(0o644)).unwrap();
        std::os::unix::fs::symlink(&elsewhere, dir.join("carabinieri.key")).unwrap();
        for site in ["questura", "carabinieri"] {
            let (_, key) = issue(&dir, site, &[], &[], 30, Usage::Server).unwrap();
            assert_eq!(mode(&key), 0o600, "{site}");
            assert!(std::fs::symlink_metadata(&key).unwrap().file_type().is_file(), "{site}");
            assert!(std::fs::read_to_string(&key).unwrap().contains("PRIVATE KEY"), "{site}");
        }
        assert_eq!(
            std::fs::read_to_string(&elsewhere).unwrap(),
            "public",
            "the link was not written through"
        );
        let names: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into())
            .collect();
        assert!(!names.iter().any(|n| n.ends_with(".tmp")), "{names:?}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn usages_default_by_role_and_revocation_lists_every_certificate_of_the_site() {
        assert_eq!(Usage::default_for("master"), Usage::Client);
        assert_eq!(Usage::default_for("questura"), Usage::Server);
        let dir = scratch("revoke");
        init(&dir, "test CA").unwrap();
        let ca = ponte_proto::tls::live::Revoked::load;
        let ca_certs = {
            let (c, k) = issue(&dir, "probe", &[], &[], 1, Usage::Server).unwrap();
            ponte_proto::tls::Identity::load(&dir.join("ca.pem"), &c, &k).unwrap().ca
        };
        let serial = |site: &str| {
            let pem = std::fs::read(dir.join(format!("{site}.pem"))).unwrap();
            let (_, p) = x509_parser::pem::parse_x509_pem(&pem).unwrap();
            ponte_proto::tls::live::serial_of(&p.contents).unwrap().0
        };
        issue(&dir, "questura", &[], &[], DEFAULT_DAYS, Usage::Server).unwrap();
        let old = serial("questura");
        renew(&dir, "questura", 30).unwrap();
        let new = serial("questura");
        assert_ne!(old, new);
        issue(&dir, "carabinieri", &[], &[], DEFAULT_DAYS, Usage::Both).unwrap();
        let empty = ca(&crl(&dir).unwrap(), &ca_certs).unwrap();
        assert!(empty.is_empty());
        let (path, added) = revoke(&dir, Some("questura"), None).unwrap();
        assert_eq!(added.len(), 2, "the renewed certificate and the one before it: {added:?}");
        let list = ca(&path, &ca_certs).unwrap();
        assert!(list.contains(&old) && list.contains(&new) && !list.contains(&serial("carabinieri")));
        // Revoking again adds nothing; a list signed by another CA is refused.
        assert!(revoke(&dir, Some("questura"), None).unwrap().1.is_empty());
        let other = scratch("revoke-other");
        init(&other, "other CA").unwrap();
        let foreign = crl(&other).unwrap();
        let e = ca(&foreign, &ca_certs).unwrap_err().to_string();
        assert!(e.contains("not signed by the deployment CA"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
        let _ = std::fs::remove_dir_all(&other);
    }
}
