//! A node's TLS while it runs: its own certificate and key and the
//! deployment's revocation list, read again on `SIGHUP` ([`LiveTls::reload`])
//! without dropping a live session.
//!
//! - **Own pair**: handshakes take the certificate and key from a resolver
//!   that reads the current pair, so after `pki renew` and a reload the next
//!   handshake presents the new certificate while sessions opened with the
//!   old one go on (their keys were agreed at their handshake).
//! - **Revocation**: `tls.crl` (written by `ponte-agent pki revoke`) is
//!   checked against the CA's key at load; a peer whose certificate serial it
//!   lists is refused at the handshake ([`TlsEvent::Refused`]), and the live
//!   sessions of such a peer are closed at the reload that brings the CRL
//!   ([`LiveTls::watch_peer`], [`TlsEvent::Closed`]). The check is ponte's
//!   own, not webpki's CRL support: the deployment has one CA and no
//!   intermediates, and a CRL whose `next_update` passed must not turn
//!   every handshake into a refusal at 3 a.m. (webpki would, or would
//!   ignore the list entirely with `allow_unknown_revocation_status`).
//! - **The CA** is read at start only: changing it means new certificates
//!   for every node, which is a restart anyway.

use super::{certs, provider, Identity, TlsError, TlsSection};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::ResolvesClientCert;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};
use std::collections::BTreeSet;
use std::path::Path;
use std::sync::{Arc, OnceLock, RwLock};
use tokio::sync::watch;

/// QUIC close code of a session whose peer's certificate was revoked.
pub const CLOSE_REVOKED: u32 = 5;

/// What the node's audit records about certificates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsEvent {
    /// A handshake was refused: the peer's certificate is revoked.
    Refused {
        /// The site its certificate names.
        peer: Option<String>,
        /// Its serial (hex).
        serial: String,
    },
    /// A live session was closed: the peer's certificate was revoked since it began.
    Closed {
        /// The site its certificate names.
        peer: Option<String>,
        /// Its serial (hex).
        serial: String,
    },
}

impl TlsEvent {
    /// The audit line: action `certificate-revoked`, outcome `refused`
    /// (a handshake) or `closed` (a live session), the peer's site and serial.
    pub fn record(&self, node: &str) -> crate::audit::AuditRecord {
        let (outcome, peer, serial, what) = match self {
            TlsEvent::Refused { peer, serial } => ("refused", peer, serial, "handshake refused"),
            TlsEvent::Closed { peer, serial } => ("closed", peer, serial, "live session closed"),
        };
        crate::audit::AuditRecord {
            time: crate::audit::now_rfc3339(),
            node: node.to_owned(),
            site: peer.clone(),
            action: "certificate-revoked".into(),
            outcome: outcome.into(),
            reason: Some(format!(
                "{what}: the certificate of {} (serial {serial}) is listed in `tls.crl`",
                super::describe_identity(peer.as_deref())
            )),
            ..Default::default()
        }
    }
}

/// A certificate's expiry, for the status page and the metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expiry {
    /// Whose: `own`, or the peer's site.
    pub subject: String,
    /// Serial (hex).
    pub serial: String,
    /// Not valid after, Unix seconds.
    pub not_after_unix: i64,
}

/// The serials a CRL lists, checked against the CA.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Revoked {
    serials: BTreeSet<String>,
}

impl Revoked {
    /// Reads a PEM CRL and checks its signature against `ca`. The error
    /// names the file and the fix.
    pub fn load(path: &Path, ca: &[CertificateDer<'static>]) -> Result<Self, TlsError> {
        let err = |detail: String| TlsError::File { what: "revocation list", path: path.to_owned(), detail };
        let pem = std::fs::read(path).map_err(|e| err(e.to_string()))?;
        Self::from_pem(&pem, ca).map_err(err)
    }

    /// Parses a PEM CRL (see [`Revoked::load`]).
    pub fn from_pem(pem: &[u8], ca: &[CertificateDer<'static>]) -> Result<Self, String> {
        use rustls::pki_types::pem::PemObject;
        use x509_parser::prelude::*;
        let der = rustls::pki_types::CertificateRevocationListDer::from_pem_slice(pem)
            .map_err(|e| format!("not a PEM CRL ({e}); write it with `ponte-agent pki revoke`"))?;
        let (_, crl) = x509_parser::revocation_list::CertificateRevocationList::from_der(der.as_ref())
            .map_err(|e| format!("not a CRL: {e}"))?;
        let signed_by_ca = ca.iter().any(|c| {
            X509Certificate::from_der(c).is_ok_and(|(_, ca)| crl.verify_signature(ca.public_key()).is_ok())
        });
        if !signed_by_ca {
            return Err("not signed by the deployment CA (`tls.ca`): copy the `crl.pem` of the PKI that \
                        issued this node's certificates"
                .into());
        }
        let serials = crl.iter_revoked_certificates().map(|r| serial_hex(r.raw_serial())).collect();
        Ok(Self { serials })
    }

    /// Whether the list names `serial` (hex, as [`serial_of`] gives it).
    pub fn contains(&self, serial: &str) -> bool {
        self.serials.contains(serial)
    }

    /// How many serials it lists.
    pub fn len(&self) -> usize {
        self.serials.len()
    }

    /// Whether it lists none.
    pub fn is_empty(&self) -> bool {
        self.serials.is_empty()
    }
}

/// A DER serial as lowercase hex without leading zero bytes (the sign
/// padding of a positive INTEGER), so the certificate's and the CRL's
/// spelling of one serial compare equal.
pub fn serial_hex(raw: &[u8]) -> String {
    let start = raw.iter().position(|b| *b != 0).unwrap_or(raw.len());
    hex::encode(raw.get(start..).unwrap_or_default())
}

/// A certificate's serial (hex) and expiry, if it parses.
pub fn serial_of(der: &[u8]) -> Option<(String, i64)> {
    use x509_parser::prelude::*;
    let (_, cert) = X509Certificate::from_der(der).ok()?;
    Some((serial_hex(cert.raw_serial()), cert.validity().not_after.timestamp()))
}

struct Loaded {
    identity: Identity,
    certified: Arc<CertifiedKey>,
    revoked: Revoked,
}

struct Inner {
    section: TlsSection,
    ca: Vec<CertificateDer<'static>>,
    current: RwLock<Arc<Loaded>>,
    client_verifier: Arc<dyn ClientCertVerifier>,
    server_verifier: Arc<dyn ServerCertVerifier>,
    /// Bumped at each reload that changed the revocation list.
    revocations: watch::Sender<u64>,
    events: OnceLock<Box<dyn Fn(TlsEvent) + Send + Sync>>,
    /// Certificates of the peers with a live session (by connection id).
    peers: std::sync::Mutex<std::collections::HashMap<usize, Expiry>>,
}

/// A node's TLS identity and revocation list, reloadable (see the module doc).
#[derive(Clone)]
pub struct LiveTls(Arc<Inner>);

impl std::fmt::Debug for LiveTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveTls").field("cert", &self.0.section.cert).finish_non_exhaustive()
    }
}

/// What a reload changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReloadReport {
    /// The own certificate changed (its serial, now).
    pub new_cert: Option<String>,
    /// Serials the revocation list lists now.
    pub revoked: usize,
}

fn load(section: &TlsSection, ca: &[CertificateDer<'static>]) -> Result<Loaded, TlsError> {
    let chain = certs("certificate", &section.cert)?;
    let key = super::private_key("private key", &section.key)?;
    let certified = CertifiedKey::from_der(chain.clone(), key.clone_key(), &provider()).map_err(|e| {
        TlsError::Rustls(format!(
            "`tls.key` `{}` does not go with `tls.cert` `{}`: {e}",
            section.key.display(),
            section.cert.display()
        ))
    })?;
    let revoked = match &section.crl {
        Some(path) => Revoked::load(path, ca)?,
        None => Revoked::default(),
    };
    if let Some((serial, _)) = chain.first().and_then(|c| serial_of(c)) {
        if revoked.contains(&serial) {
            return Err(TlsError::Rustls(format!(
                "this node's own certificate `{}` (serial {serial}) is revoked by `tls.crl`: issue a new one \
                 (`ponte-agent pki renew`)",
                section.cert.display()
            )));
        }
    }
    let identity = Identity { ca: ca.to_vec(), chain, key: Arc::new(key) };
    Ok(Loaded { identity, certified: Arc::new(certified), revoked })
}

impl LiveTls {
    /// Loads `[tls]`: CA, own pair, and the CRL when `tls.crl` is set.
    pub fn load(section: &TlsSection) -> Result<Self, TlsError> {
        let ca = certs("CA certificate", &section.ca)?;
        let loaded = load(section, &ca)?;
        let roots = Arc::new(loaded.identity.roots()?);
        let client_verifier =
            rustls::server::WebPkiClientVerifier::builder_with_provider(roots.clone(), provider())
                .build()
                .map_err(|e| TlsError::Rustls(e.to_string()))?;
        let server_verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(roots, provider())
            .build()
            .map_err(|e| TlsError::Rustls(e.to_string()))?;
        Ok(Self(Arc::new(Inner {
            section: section.clone(),
            ca,
            current: RwLock::new(Arc::new(loaded)),
            client_verifier,
            server_verifier,
            revocations: watch::Sender::new(0),
            events: OnceLock::new(),
            peers: std::sync::Mutex::new(std::collections::HashMap::new()),
        })))
    }

    /// Where certificate events go (the node's audit); set once.
    pub fn on_event(&self, f: impl Fn(TlsEvent) + Send + Sync + 'static) {
        let _ = self.0.events.set(Box::new(f));
    }

    fn emit(&self, event: TlsEvent) {
        tracing::warn!(?event, "certificate revoked");
        if let Some(f) = self.0.events.get() {
            f(event);
        }
    }

    fn current(&self) -> Arc<Loaded> {
        match self.0.current.read() {
            Ok(g) => g.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// The identity in force (own chain and key, CA).
    pub fn identity(&self) -> Identity {
        self.current().identity.clone()
    }

    /// Reads the own pair and the CRL again. On any error nothing changes
    /// (the running pair and list stay) and the error names the file.
    pub fn reload(&self) -> Result<ReloadReport, TlsError> {
        let loaded = load(&self.0.section, &self.0.ca)?;
        let before = self.current();
        let serial = |l: &Loaded| l.identity.chain.first().and_then(|c| serial_of(c)).map(|(s, _)| s);
        let new_cert = (serial(&loaded) != serial(&before)).then(|| serial(&loaded)).flatten();
        let changed_list = loaded.revoked != before.revoked;
        let revoked = loaded.revoked.len();
        match self.0.current.write() {
            Ok(mut g) => *g = Arc::new(loaded),
            Err(poisoned) => *poisoned.into_inner() = Arc::new(loaded),
        }
        if changed_list {
            self.0.revocations.send_modify(|n| *n += 1);
        }
        Ok(ReloadReport { new_cert, revoked })
    }

    /// [`LiveTls::reload`] on SIGHUP, logged: what changed, or why the
    /// running certificate and list stay.
    pub fn reload_logged(&self) {
        match self.reload() {
            Ok(report) => tracing::info!(
                new_certificate = report.new_cert.as_deref().unwrap_or("unchanged"),
                revoked = report.revoked,
                "TLS files reloaded"
            ),
            Err(e) => tracing::error!("TLS reload refused, the running certificate and list stay: {e}"),
        }
    }

    /// Whether the certificate serial is revoked now.
    pub fn is_revoked(&self, serial: &str) -> bool {
        self.current().revoked.contains(serial)
    }

    fn peers(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<usize, Expiry>> {
        self.0.peers.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The certificates of the peers with a live session, by site.
    pub fn peer_expiries(&self) -> Vec<Expiry> {
        let mut out: Vec<Expiry> = self.peers().values().cloned().collect();
        out.sort_by(|a, b| a.subject.cmp(&b.subject).then(a.serial.cmp(&b.serial)));
        out.dedup();
        out
    }

    /// The own certificate's expiry.
    pub fn own_expiry(&self) -> Option<Expiry> {
        let (serial, not_after_unix) = self.current().identity.chain.first().and_then(|c| serial_of(c))?;
        Some(Expiry { subject: "own".into(), serial, not_after_unix })
    }

    /// Closes `conn` at once if its peer's certificate is (or becomes, at a
    /// later reload) revoked, until the returned guard is dropped. Keep the
    /// guard for the life of the session.
    pub fn watch_peer(&self, conn: &quinn::Connection) -> PeerGuard {
        let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
        let Some((peer, serial)) = peer_serial(conn) else { return PeerGuard { _stop: stop } };
        let live = self.clone();
        let conn = conn.clone();
        let mut changes = self.0.revocations.subscribe();
        let key = conn.stable_id();
        if let Some(e) = peer_expiry(&conn) {
            self.peers().insert(key, e);
        }
        tokio::spawn(async move {
            let _forget = Forget(live.clone(), key);
            loop {
                if live.is_revoked(&serial) {
                    conn.close(CLOSE_REVOKED.into(), b"certificate revoked");
                    live.emit(TlsEvent::Closed { peer, serial });
                    return;
                }
                tokio::select! {
                    changed = changes.changed() => if changed.is_err() { return },
                    _ = &mut stopped => return,
                    _ = conn.closed() => return,
                }
            }
        });
        PeerGuard { _stop: stop }
    }

    /// Server side (relay): quinn config with this node's live pair and
    /// verifier.
    pub fn server_config(&self, opts: &super::TransportOptions) -> Result<quinn::ServerConfig, TlsError> {
        let mut cfg = rustls::ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| TlsError::Rustls(e.to_string()))?
            .with_client_cert_verifier(Arc::new(ClientVerifier(self.clone())))
            .with_cert_resolver(Arc::new(Resolver(self.clone())));
        cfg.alpn_protocols = vec![crate::wire::ALPN.to_vec()];
        // No resumption: a resumed handshake skips the certificate check,
        // so a peer revoked since its last full handshake would get back in
        // (seen in `tests/tests/tls.rs` before this: two redials passed).
        // Links are long-lived; a full handshake per dial costs nothing.
        cfg.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
        cfg.send_tls13_tickets = 0;
        super::quic_server(cfg, opts)
    }

    /// Client side (agent, a relay dialing its cascade): quinn config with
    /// this node's live pair and verifier.
    pub fn client_config(&self, opts: &super::TransportOptions) -> Result<quinn::ClientConfig, TlsError> {
        let mut cfg = rustls::ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| TlsError::Rustls(e.to_string()))?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(ServerVerifier(self.clone())))
            .with_client_cert_resolver(Arc::new(Resolver(self.clone())));
        cfg.alpn_protocols = vec![crate::wire::ALPN.to_vec()];
        // No resumption (see `server_config`).
        cfg.resumption = rustls::client::Resumption::disabled();
        super::quic_client(cfg, opts)
    }

    /// Refuses a revoked end entity; the event names it.
    fn check_revoked(&self, end_entity: &CertificateDer<'_>) -> Result<(), rustls::Error> {
        let Some((serial, _)) = serial_of(end_entity) else { return Ok(()) };
        if self.is_revoked(&serial) {
            let peer = super::site_of_certificate(end_entity);
            self.emit(TlsEvent::Refused { peer, serial });
            return Err(rustls::Error::InvalidCertificate(rustls::CertificateError::Revoked));
        }
        Ok(())
    }
}

/// Drops a session's peer certificate from the list when its watch ends.
struct Forget(LiveTls, usize);

impl Drop for Forget {
    fn drop(&mut self) {
        self.0.peers().remove(&self.1);
    }
}

/// Ends the revocation watch of one session when dropped.
#[derive(Debug)]
pub struct PeerGuard {
    _stop: tokio::sync::oneshot::Sender<()>,
}

/// The site and serial of a connection's peer certificate.
pub fn peer_serial(conn: &quinn::Connection) -> Option<(Option<String>, String)> {
    let leaf = super::peer_certificate(conn)?;
    let (serial, _) = serial_of(&leaf)?;
    Some((super::site_of_certificate(&leaf), serial))
}

/// The peer's certificate expiry.
pub fn peer_expiry(conn: &quinn::Connection) -> Option<Expiry> {
    let leaf = super::peer_certificate(conn)?;
    let (serial, not_after_unix) = serial_of(&leaf)?;
    let subject = super::site_of_certificate(&leaf).unwrap_or_else(|| "unknown".into());
    Some(Expiry { subject, serial, not_after_unix })
}

/// Hands out the pair in force at each handshake.
#[derive(Debug)]
struct Resolver(LiveTls);

impl ResolvesServerCert for Resolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.current().certified.clone())
    }
}

impl ResolvesClientCert for Resolver {
    fn resolve(&self, _hints: &[&[u8]], _schemes: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        Some(self.0.current().certified.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// The handshake signature algorithms of the ring provider, which both
/// verifiers' inner webpki verifiers use too.
fn algorithms() -> rustls::crypto::WebPkiSupportedAlgorithms {
    provider().signature_verification_algorithms
}

#[derive(Debug)]
struct ClientVerifier(LiveTls);

impl ClientCertVerifier for ClientVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.0 .0.client_verifier.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let verified = self.0 .0.client_verifier.verify_client_cert(end_entity, intermediates, now)?;
        self.0.check_revoked(end_entity)?;
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &algorithms())
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &algorithms())
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        algorithms().supported_schemes()
    }
}

#[derive(Debug)]
struct ServerVerifier(LiveTls);

impl ServerCertVerifier for ServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let verified = self.0 .0.server_verifier.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp,
            now,
        )?;
        self.0.check_revoked(end_entity)?;
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &algorithms())
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &algorithms())
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        algorithms().supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::serial_hex;

    #[test]
    fn serials_compare_without_sign_padding() {
        assert_eq!(serial_hex(&[0x00, 0x8f, 0x01]), "8f01");
        assert_eq!(serial_hex(&[0x7f]), "7f");
        assert_eq!(serial_hex(&[0x00]), "");
    }
}
