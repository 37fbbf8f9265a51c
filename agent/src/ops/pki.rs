//! The deployment's own certificate authority: `ponte-agent pki init` and
//! `ponte-agent pki issue`.

use anyhow::{bail, Context, Result};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose, SanType,
};
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

/// Issues a certificate for a site (or the agent) signed by the CA in `dir`;
/// writes `<site>.pem` and `<site>.key`.
pub fn issue(
    dir: &Path,
    site: &str,
    dns: &[String],
    ips: &[IpAddr],
    days: u32,
) -> Result<(PathBuf, PathBuf)> {
    if !crate::config::valid_id(site) {
        bail!("site id {site:?}: use lowercase letters, digits and `-`");
    }
    if let Some((_, why)) = RESERVED_SITES.iter().find(|(name, _)| *name == site) {
        bail!("site id `{site}` is reserved: {why}; choose another site id");
    }
    let (ca_cert_path, ca_key_path) = ca_paths(dir);
    let ca_pem = std::fs::read_to_string(&ca_cert_path).with_context(|| {
        format!("reading CA `{}` (run `ponte-agent pki init` first)", ca_cert_path.display())
    })?;
    let ca_key_pem = std::fs::read_to_string(&ca_key_path)
        .with_context(|| format!("reading CA key `{}`", ca_key_path.display()))?;
    let ca_key = KeyPair::from_pem(&ca_key_pem).context("parsing CA key")?;
    let ca_params = CertificateParams::from_ca_cert_pem(&ca_pem).context("parsing CA certificate")?;
    let ca = ca_params.self_signed(&ca_key).context("loading CA")?;

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
    params.extended_key_usages =
        vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    let now = OffsetDateTime::now_utc();
    params.not_before = now - Duration::days(1);
    params.not_after = now + Duration::days(days.into());
    let cert = params.signed_by(&key, &ca, &ca_key).context("signing certificate")?;
    let cert_path = dir.join(format!("{site}.pem"));
    let key_path = dir.join(format!("{site}.key"));
    std::fs::write(&cert_path, cert.pem()).with_context(|| format!("writing `{}`", cert_path.display()))?;
    write_private(&key_path, &key.serialize_pem())?;
    Ok((cert_path, key_path))
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
            issue(&dir, "questura", &["localhost".into()], &["127.0.0.1".parse().unwrap()], 30).unwrap();
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
        let e = issue(&dir, "ca", &[], &[], 30).unwrap_err().to_string();
        assert!(e.contains("site id `ca` is reserved") && e.contains("ca.key"), "{e}");
        assert_eq!((std::fs::read(&ca).unwrap(), std::fs::read(&ca_key).unwrap()), before);
        // The agent's own identity stays possible.
        issue(&dir, "master", &[], &[], 30).unwrap();
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
            let (_, key) = issue(&dir, site, &[], &[], 30).unwrap();
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
}
