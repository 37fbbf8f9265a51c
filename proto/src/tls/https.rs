//! HTTPS for the relay's viewer port and the management ports: a
//! certificate and key read from files (the deployment PKI's, `pki issue
//! --usage server`, or the site's own CA's), read again on SIGHUP
//! ([`HttpsPair::reload`]: the next handshake uses the new pair, open
//! connections go on), HTTP/2 and HTTP/1.1 by ALPN, TLS 1.2 and 1.3.
//!
//! When the certificate was issued by the deployment CA the CA certificate
//! is sent after it: browsers that trust the relay through the CA (an
//! enterprise root, or Chromium's SPKI pin of the CA,
//! `--ignore-certificate-errors-spki-list`, which matches only certificates
//! the server presents) then find it in the chain.

use super::{certs, provider, TlsError};
use rustls::pki_types::CertificateDer;
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

/// `[relay.https]` / `[management.https]`: serve HTTPS with this pair.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpsSection {
    /// Certificate (PEM; the deployment PKI's `pki issue --usage server
    /// --dns NAME`, or the site CA's).
    pub cert: PathBuf,
    /// Its private key (PEM).
    pub key: PathBuf,
    /// A plain-HTTP address that only redirects browsers to HTTPS (e.g.
    /// `0.0.0.0:80`); unset, plain HTTP is not served at all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redirect_listen: Option<std::net::SocketAddr>,
}

/// A reloadable HTTPS certificate and key.
#[derive(Debug)]
pub struct HttpsPair {
    cert: PathBuf,
    key: PathBuf,
    /// Appended to the chain when the certificate is this CA's.
    ca: Vec<CertificateDer<'static>>,
    current: RwLock<Arc<CertifiedKey>>,
}

fn load_pair(cert: &Path, key: &Path, ca: &[CertificateDer<'static>]) -> Result<CertifiedKey, TlsError> {
    let mut chain = certs("HTTPS certificate", cert)?;
    let key_der = super::private_key("HTTPS private key", key)?;
    if let (Some(leaf), 1) = (chain.first(), chain.len()) {
        let issued_by_ca = ca.iter().find(|c| issued_by(leaf, c));
        if let Some(ca) = issued_by_ca {
            chain.push(ca.clone());
        }
    }
    CertifiedKey::from_der(chain, key_der, &provider()).map_err(|e| {
        TlsError::Rustls(format!(
            "HTTPS key `{}` does not go with certificate `{}`: {e}",
            key.display(),
            cert.display()
        ))
    })
}

/// Whether `leaf` names `ca`'s subject as its issuer.
fn issued_by(leaf: &[u8], ca: &[u8]) -> bool {
    use x509_parser::prelude::*;
    match (X509Certificate::from_der(leaf), X509Certificate::from_der(ca)) {
        (Ok((_, leaf)), Ok((_, ca))) => leaf.issuer().as_raw() == ca.subject().as_raw(),
        _ => false,
    }
}

impl HttpsPair {
    /// Loads the pair; `ca` is the deployment CA (sent after a certificate
    /// it issued), empty when unknown.
    pub fn load(cert: &Path, key: &Path, ca: Vec<CertificateDer<'static>>) -> Result<Arc<Self>, TlsError> {
        let pair = load_pair(cert, key, &ca)?;
        Ok(Arc::new(Self {
            cert: cert.to_owned(),
            key: key.to_owned(),
            ca,
            current: RwLock::new(Arc::new(pair)),
        }))
    }

    /// Reads the files again; on error the running pair stays. Returns
    /// whether the certificate changed.
    pub fn reload(&self) -> Result<bool, TlsError> {
        let pair = Arc::new(load_pair(&self.cert, &self.key, &self.ca)?);
        let mut current = match self.current.write() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        let changed = current.cert.first() != pair.cert.first();
        *current = pair;
        Ok(changed)
    }

    /// [`HttpsPair::reload`] on SIGHUP, logged for the port it serves.
    pub fn reload_logged(&self, port: &str) {
        match self.reload() {
            Ok(changed) => tracing::info!(port, changed, "HTTPS certificate reloaded"),
            Err(e) => tracing::error!(port, "HTTPS certificate reload refused, the running one stays: {e}"),
        }
    }

    fn current(&self) -> Arc<CertifiedKey> {
        match self.current.read() {
            Ok(g) => g.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// The certificate's expiry (Unix seconds) and serial.
    pub fn expiry(&self) -> Option<super::live::Expiry> {
        let (serial, not_after_unix) = self.current().cert.first().and_then(|c| super::live::serial_of(c))?;
        Some(super::live::Expiry { subject: "https".into(), serial, not_after_unix })
    }

    /// The rustls config of an HTTPS port: this pair, HTTP/2 and HTTP/1.1;
    /// with `client_ca`, a client certificate issued by it is required.
    pub fn server_config(
        self: &Arc<Self>,
        client_ca: Option<&[CertificateDer<'static>]>,
    ) -> Result<Arc<rustls::ServerConfig>, TlsError> {
        let rustls_err = |e: rustls::Error| TlsError::Rustls(e.to_string());
        let builder = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(rustls_err)?;
        let mutual = client_ca.is_some();
        let builder = match client_ca {
            Some(ca) => {
                let mut roots = rustls::RootCertStore::empty();
                for c in ca {
                    roots.add(c.clone()).map_err(|e| TlsError::Rustls(format!("client CA: {e}")))?;
                }
                let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
                    .build()
                    .map_err(|e| TlsError::Rustls(e.to_string()))?;
                builder.with_client_cert_verifier(verifier)
            }
            None => builder.with_no_client_auth(),
        };
        let mut cfg = builder.with_cert_resolver(Arc::new(Resolver(self.clone())));
        cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        if mutual {
            // A resumed handshake would skip the client certificate check.
            cfg.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
            cfg.send_tls13_tickets = 0;
        }
        Ok(Arc::new(cfg))
    }
}

/// Reads CA certificates for `client_ca` (the error names the file).
pub fn load_client_ca(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    certs("client CA certificate", path)
}

#[derive(Debug)]
struct Resolver(Arc<HttpsPair>);

impl ResolvesServerCert for Resolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.current())
    }
}

/// Base64 of the SHA-256 of a certificate's SubjectPublicKeyInfo: what
/// Chromium's `--ignore-certificate-errors-spki-list` takes (and HPKP did).
pub fn spki_sha256_base64(der: &[u8]) -> Option<String> {
    use sha2::Digest;
    use x509_parser::prelude::*;
    let (_, cert) = X509Certificate::from_der(der).ok()?;
    let digest = sha2::Sha256::digest(cert.public_key().raw);
    use base64::Engine as _;
    Some(base64::engine::general_purpose::STANDARD.encode(digest))
}
