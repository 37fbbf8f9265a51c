//! Mutual TLS for QUIC: loading the deployment's CA and a node's identity,
//! building quinn client/server configs (rustls with the ring provider), and
//! reading the peer's site identity from its certificate.

use crate::wire::ALPN;
use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::RootCertStore;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

pub mod https;
pub mod live;

pub use live::LiveTls;

/// `[tls]` of a node's config: PEM files issued by `ponte-agent pki`.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSection {
    /// Deployment CA certificate.
    pub ca: PathBuf,
    /// This node's certificate.
    pub cert: PathBuf,
    /// This node's private key.
    pub key: PathBuf,
    /// The deployment's revocation list (`crl.pem` from `ponte-agent pki
    /// revoke`); read at start and on SIGHUP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crl: Option<PathBuf>,
}

/// Why TLS material could not be loaded or used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM file could not be read or parsed.
    #[error("{what} `{path}`: {detail}")]
    File {
        /// Which file it is (CA, certificate, key).
        what: &'static str,
        /// Where.
        path: PathBuf,
        /// What went wrong.
        detail: String,
    },
    /// rustls refused the material.
    #[error("TLS configuration: {0}")]
    Rustls(String),
}

/// A node's trust anchor and identity.
#[derive(Debug, Clone)]
pub struct Identity {
    /// The deployment CA.
    pub ca: Vec<CertificateDer<'static>>,
    /// This node's certificate chain.
    pub chain: Vec<CertificateDer<'static>>,
    /// This node's private key.
    pub key: Arc<PrivateKeyDer<'static>>,
}

fn certs(what: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let err = |detail: String| TlsError::File { what, path: path.to_owned(), detail };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| err(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| err(e.to_string()))?;
    if certs.is_empty() {
        return Err(err("no PEM certificate in file".into()));
    }
    Ok(certs)
}

/// Reads a PEM private key; the error names `what` and the file.
fn private_key(what: &'static str, path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| TlsError::File {
        what,
        path: path.to_owned(),
        detail: e.to_string(),
    })
}

impl Identity {
    /// Loads CA, certificate and key PEM files.
    pub fn load(ca: &Path, cert: &Path, key: &Path) -> Result<Self, TlsError> {
        let ca_certs = certs("CA certificate", ca)?;
        let chain = certs("certificate", cert)?;
        let key = private_key("private key", key)?;
        Ok(Self { ca: ca_certs, chain, key: Arc::new(key) })
    }

    /// Builds identity from PEM strings (tests, demo).
    pub fn from_pem(ca: &str, cert: &str, key: &str) -> Result<Self, TlsError> {
        let parse = |what: &'static str, pem: &str| {
            CertificateDer::pem_slice_iter(pem.as_bytes())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| TlsError::File { what, path: PathBuf::from("<memory>"), detail: e.to_string() })
        };
        let key = PrivateKeyDer::from_pem_slice(key.as_bytes()).map_err(|e| TlsError::File {
            what: "private key",
            path: PathBuf::from("<memory>"),
            detail: e.to_string(),
        })?;
        Ok(Self { ca: parse("CA certificate", ca)?, chain: parse("certificate", cert)?, key: Arc::new(key) })
    }

    fn roots(&self) -> Result<RootCertStore, TlsError> {
        let mut roots = RootCertStore::empty();
        for c in &self.ca {
            roots.add(c.clone()).map_err(|e| TlsError::Rustls(format!("CA certificate: {e}")))?;
        }
        Ok(roots)
    }
}

/// QUIC transport knobs shared by both ends.
#[derive(Debug, Clone)]
pub struct TransportOptions {
    /// Use UDP generic segmentation offload where the kernel supports it.
    pub gso: bool,
    /// Keep-alive interval (also bounds how fast a dead link is noticed).
    pub keep_alive: Duration,
    /// Idle timeout after which a silent link is declared dead.
    pub idle_timeout: Duration,
    /// Largest UDP payload path MTU discovery probes up to
    /// (`transport.max_udp_payload`).
    pub max_udp_payload: u16,
}

impl Default for TransportOptions {
    fn default() -> Self {
        // A dedicated fibre has millisecond RTTs: three missed keep-alives
        // mean the link is gone, and on-call staff should see it at once.
        Self {
            gso: true,
            keep_alive: Duration::from_secs(1),
            idle_timeout: Duration::from_secs(3),
            max_udp_payload: DEFAULT_MAX_UDP_PAYLOAD,
        }
    }
}

/// `transport.max_udp_payload` by default: an Ethernet MTU of 1500 with
/// room for a tunnel header (quinn's own default bound).
pub const DEFAULT_MAX_UDP_PAYLOAD: u16 = 1452;

/// The largest datagram sent with segmentation offload. quinn hands the
/// kernel up to 10 datagrams per GSO send, and the kernel refuses a send
/// over 64 KiB (EMSGSIZE), which quinn-udp drops without a word: with
/// jumbo datagrams of 8972 bytes every batch was lost and the video went
/// out in 1200-byte loss probes (found by `tests/tests/mtu.rs`). Above
/// this size ponte sends one datagram per system call instead.
pub const GSO_MAX_UDP_PAYLOAD: u16 = 6_500;

fn transport(opts: &TransportOptions) -> quinn::TransportConfig {
    let mut t = quinn::TransportConfig::default();
    t.keep_alive_interval(Some(opts.keep_alive));
    // The RTT assumed before the first sample (RFC 9002 says 333 ms). A
    // fibre's is milliseconds: with 100 ms a lost handshake packet is sent
    // again after ~0.3 s, 1 s, 2.3 s instead of 1 s, 3 s, so an agent
    // probing a cut fibre gets through within ~1.3 s of its repair.
    t.initial_rtt(Duration::from_millis(100));
    if let Ok(idle) = quinn::IdleTimeout::try_from(opts.idle_timeout) {
        t.max_idle_timeout(Some(idle));
    }
    // One stream per GOP per subscription. A receiver grows this with its
    // subscriptions (`session::UniStreamWindow`): every credited slot keeps
    // memory for the life of the connection.
    t.max_concurrent_uni_streams(quinn::VarInt::from_u32(crate::session::INITIAL_UNI_STREAMS));
    t.max_concurrent_bidi_streams(quinn::VarInt::from_u32(16));
    // Windows sized for tens of Mbit/s per stream on a sub-10 ms fibre.
    // The receive windows only let the sender go: a node reads its streams
    // as they arrive, so they hold no queue. The send window is the queue:
    // the agent narrows it per site link to two GOPs of the shaper's
    // effective budget (`shaping::send_window_for`) at the first shaping
    // tick; this is its ceiling.
    t.stream_receive_window(quinn::VarInt::from_u32(8 << 20));
    t.receive_window(quinn::VarInt::from_u32(64 << 20));
    t.send_window(crate::shaping::MAX_SEND_WINDOW);
    t.congestion_controller_factory(Arc::new(quinn::congestion::BbrConfig::default()));
    t.enable_segmentation_offload(opts.gso && opts.max_udp_payload <= GSO_MAX_UDP_PAYLOAD);
    // Path MTU discovery up to the configured payload: 1452 fits Ethernet;
    // jumbo frames on a dedicated fibre carry six times the media per
    // datagram (and per packet of work on both ends).
    let mut mtu = quinn::MtuDiscoveryConfig::default();
    mtu.upper_bound(opts.max_udp_payload);
    t.mtu_discovery_config(Some(mtu));
    t
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Server side: requires a client certificate issued by the deployment CA.
pub fn server_config(id: &Identity, opts: &TransportOptions) -> Result<quinn::ServerConfig, TlsError> {
    let rustls_err = |e: rustls::Error| TlsError::Rustls(e.to_string());
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(id.roots()?), provider())
        .build()
        .map_err(|e| TlsError::Rustls(e.to_string()))?;
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(rustls_err)?
        .with_client_cert_verifier(verifier)
        .with_single_cert(id.chain.clone(), id.key.clone_key())
        .map_err(rustls_err)?;
    cfg.alpn_protocols = vec![ALPN.to_vec()];
    quic_server(cfg, opts)
}

fn quic_server(cfg: rustls::ServerConfig, opts: &TransportOptions) -> Result<quinn::ServerConfig, TlsError> {
    let quic = QuicServerConfig::try_from(cfg).map_err(|e| TlsError::Rustls(e.to_string()))?;
    let mut server = quinn::ServerConfig::with_crypto(Arc::new(quic));
    server.transport_config(Arc::new(transport(opts)));
    Ok(server)
}

/// Client side: presents this node's certificate, trusts only the deployment CA.
pub fn client_config(id: &Identity, opts: &TransportOptions) -> Result<quinn::ClientConfig, TlsError> {
    let rustls_err = |e: rustls::Error| TlsError::Rustls(e.to_string());
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(rustls_err)?
        .with_root_certificates(id.roots()?)
        .with_client_auth_cert(id.chain.clone(), id.key.clone_key())
        .map_err(rustls_err)?;
    cfg.alpn_protocols = vec![ALPN.to_vec()];
    quic_client(cfg, opts)
}

fn quic_client(cfg: rustls::ClientConfig, opts: &TransportOptions) -> Result<quinn::ClientConfig, TlsError> {
    let quic = QuicClientConfig::try_from(cfg).map_err(|e| TlsError::Rustls(e.to_string()))?;
    let mut client = quinn::ClientConfig::new(Arc::new(quic));
    client.transport_config(Arc::new(transport(opts)));
    Ok(client)
}

/// What `config check` finds wrong with the `[tls]` files, each problem
/// naming its key (`tls.ca`, `tls.cert`, `tls.key`); the identity when all
/// three load. Checks that each parses, that the key is the certificate's,
/// that the certificate chains to the CA and is valid at `now_unix`.
pub fn check_files(ca: &Path, cert: &Path, key: &Path, now_unix: i64) -> (Option<Identity>, Vec<String>) {
    let mut problems = Vec::new();
    let ca_certs = certs("CA certificate", ca).map_err(|e| problems.push(format!("`tls.ca`: {e}"))).ok();
    let chain = certs("certificate", cert).map_err(|e| problems.push(format!("`tls.cert`: {e}"))).ok();
    let key_der = private_key("private key", key).map_err(|e| problems.push(format!("`tls.key`: {e}"))).ok();
    let (Some(ca_certs), Some(chain), Some(key_der)) = (ca_certs, chain, key_der) else {
        return (None, problems);
    };
    let id = Identity { ca: ca_certs, chain, key: Arc::new(key_der) };
    if let Some((leaf, intermediates)) = id.chain.split_first() {
        use x509_parser::prelude::*;
        if let Ok((_, x)) = X509Certificate::from_der(leaf) {
            let validity = x.validity();
            let (from, until) = (validity.not_before.timestamp(), validity.not_after.timestamp());
            if now_unix > until {
                problems.push(format!(
                    "`tls.cert`: certificate `{}` expired on {}: issue a new one (`ponte-agent pki issue`)",
                    cert.display(),
                    validity.not_after
                ));
            } else if now_unix < from {
                problems.push(format!(
                    "`tls.cert`: certificate `{}` is valid only from {} (is this host's clock right?)",
                    cert.display(),
                    validity.not_before
                ));
            }
        }
        let mut roots = RootCertStore::empty();
        for c in &id.ca {
            let _ = roots.add(c.clone());
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        // The node's own certificate must pass the check its peers make:
        // as a client (the agent, a relay dialing a cascade) if it may be
        // one, else as a server under its site name.
        let now = rustls::pki_types::UnixTime::since_unix_epoch(Duration::from_secs(now_unix.max(0) as u64));
        let roots = Arc::new(roots);
        let verified = if usages(leaf).client {
            rustls::server::WebPkiClientVerifier::builder_with_provider(roots, provider.clone())
                .build()
                .map_err(|e| e.to_string())
                .and_then(|v| {
                    v.verify_client_cert(leaf, intermediates, now).map(drop).map_err(|e| e.to_string())
                })
        } else {
            let name = site_of_certificate(leaf)
                .and_then(|s| rustls::pki_types::ServerName::try_from(s).ok())
                .ok_or_else(|| "the certificate names no site".to_owned());
            rustls::client::WebPkiServerVerifier::builder_with_provider(roots, provider.clone())
                .build()
                .map_err(|e| e.to_string())
                .and_then(|v| {
                    use rustls::client::danger::ServerCertVerifier as _;
                    v.verify_server_cert(leaf, intermediates, &name?, &[], now)
                        .map(drop)
                        .map_err(|e| e.to_string())
                })
        };
        if let Err(e) = verified {
            if !problems.iter().any(|p| p.starts_with("`tls.cert`")) {
                problems.push(format!(
                    "`tls.cert`: certificate `{}` is not accepted by the CA `{}`: {e}",
                    cert.display(),
                    ca.display()
                ));
            }
        }
        let keys_match = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())
            .and_then(|b| {
                b.with_no_client_auth()
                    .with_single_cert(id.chain.clone(), id.key.clone_key())
                    .map_err(|e| e.to_string())
            });
        if let Err(e) = keys_match {
            problems.push(format!(
                "`tls.key`: private key `{}` does not go with certificate `{}`: {e}",
                key.display(),
                cert.display()
            ));
        }
    }
    (Some(id), problems)
}

/// What a certificate may be used for (its extended key usage; none
/// listed means any).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Usages {
    /// TLS server (`serverAuth`): a relay.
    pub server: bool,
    /// TLS client (`clientAuth`): the agent, a relay dialing a cascade.
    pub client: bool,
}

/// The usages of a certificate (both when it does not parse: the
/// handshake will say more).
pub fn usages(der: &[u8]) -> Usages {
    use x509_parser::prelude::*;
    let Ok((_, cert)) = X509Certificate::from_der(der) else { return Usages { server: true, client: true } };
    match cert.extended_key_usage() {
        Ok(Some(eku)) => Usages {
            server: eku.value.any || eku.value.server_auth,
            client: eku.value.any || eku.value.client_auth,
        },
        _ => Usages { server: true, client: true },
    }
}

/// The site id a certificate names: SAN URI `site:<id>`, else the first DNS
/// SAN, else the subject CN.
pub fn site_of_certificate(der: &[u8]) -> Option<String> {
    use x509_parser::prelude::*;
    let (_, cert) = X509Certificate::from_der(der).ok()?;
    let mut dns = None;
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            match name {
                GeneralName::URI(uri) => {
                    if let Some(site) = uri.strip_prefix("site:") {
                        return Some(site.to_owned());
                    }
                }
                GeneralName::DNSName(d) if dns.is_none() => dns = Some((*d).to_owned()),
                _ => {}
            }
        }
    }
    dns.or_else(|| {
        cert.subject().iter_common_name().next().and_then(|cn| cn.as_str().ok()).map(str::to_owned)
    })
}

/// A peer's site identity as an error message names it: identity `x`, or
/// a certificate without a site name (not `Some("x")` / `None`).
pub fn describe_identity(site: Option<&str>) -> String {
    site.map_or_else(|| "a certificate without a site name".to_owned(), |s| format!("identity `{s}`"))
}

/// The verified end-entity certificate of a connection's peer.
pub fn peer_certificate(conn: &quinn::Connection) -> Option<CertificateDer<'static>> {
    let any = conn.peer_identity()?;
    let certs = any.downcast::<Vec<CertificateDer<'static>>>().ok()?;
    certs.first().cloned()
}

/// The site id of a connection's peer, from its verified certificate.
pub fn peer_site(conn: &quinn::Connection) -> Option<String> {
    site_of_certificate(&peer_certificate(conn)?)
}

#[cfg(test)]
mod tests {
    #[test]
    fn identities_read_without_rust_debug_form() {
        assert_eq!(super::describe_identity(Some("questura")), "identity `questura`");
        assert_eq!(super::describe_identity(None), "a certificate without a site name");
    }
}
