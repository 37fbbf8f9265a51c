//! Signed evidence manifests: what an export holds, who made it, and the
//! clip's SHA-256, signed with the exporting agent's node key.
//!
//! The manifest is a JSON file next to the clip. Its signature covers the
//! *canonical bytes*: the compact `serde_json` serialization of
//! [`SignedManifest`] with `signature` set to the empty string, every field
//! in the order this file declares them (the manifest's fields, then
//! `certificate`, `signature_alg`, `signature`), no whitespace, strings
//! escaped as `serde_json` does (`"`, `\` and control characters; other
//! characters as UTF-8). A verifier re-serializes the fields it read, so
//! any changed value changes the bytes; a field the signature does not
//! cover is refused rather than ignored, so nothing unsigned can be added
//! to the file.
//!
//! The signer's certificate is checked against the CA at the manifest's
//! `created` time, not now: evidence is verified years after the node
//! certificate that signed it has expired (ponte issues them for a year or
//! two), and what matters is that the key was certified when it signed.
//! Node certificates carry serverAuth/clientAuth extended key usage
//! (`ponte-agent pki`, agent/src/ops/pki.rs) and ponte issues no
//! document-signing certificates, so any extended key usage is accepted:
//! what makes a manifest evidence is that the CA certified the key to a
//! ponte node. A CA certificate cannot sign (webpki refuses a CA as the end
//! of the chain).

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, SignatureVerificationAlgorithm, UnixTime};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::time::Duration;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// The manifest version this code writes and reads.
pub const VERSION: u32 = 1;

/// What an evidence export holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// Manifest format version ([`VERSION`]).
    pub version: u32,
    /// Camera id.
    pub camera: String,
    /// Stream quality (`main` / `sub`).
    pub quality: String,
    /// Start of the requested range, RFC 3339 UTC with milliseconds.
    pub from: String,
    /// End of the requested range, RFC 3339 UTC with milliseconds.
    pub to: String,
    /// Wall-clock time of the clip's first frame, RFC 3339.
    pub first_frame: String,
    /// Wall-clock time of the clip's last frame, RFC 3339.
    pub last_frame: String,
    /// Number of frames in the clip.
    pub frames: u64,
    /// Duration of the clip, milliseconds.
    pub duration_ms: u64,
    /// The clip's file name.
    pub file: String,
    /// The clip's size in bytes.
    pub bytes: u64,
    /// SHA-256 of the clip, lower-case hex.
    pub sha256: String,
    /// The operator who asked for the export.
    pub operator: String,
    /// The site the camera belongs to.
    pub site: String,
    /// Node id of the agent that recorded and signed.
    pub agent: String,
    /// When the manifest was signed, RFC 3339: the certificate must be valid then.
    pub created: String,
}

/// A manifest with its signature, as written to the manifest file (flat JSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedManifest {
    /// The signed fields.
    #[serde(flatten)]
    pub manifest: Manifest,
    /// The signer's certificate chain, PEM, its own certificate first.
    pub certificate: Vec<String>,
    /// Signature algorithm: `ECDSA-P256-SHA256`, `ECDSA-P384-SHA384` or `ED25519`.
    pub signature_alg: String,
    /// Signature over the canonical bytes (module doc), base64.
    pub signature: String,
}

/// Why a manifest could not be signed or does not verify, in the words of
/// the person checking the evidence.
#[derive(Debug, thiserror::Error)]
pub enum EvidenceError {
    /// Not JSON, or not the shape of a manifest.
    #[error("the manifest is not a readable evidence manifest (malformed JSON or a missing field): {0}")]
    Json(String),
    /// A field the signature does not cover.
    #[error("the manifest has a field `{0}` that its signature does not cover (added after signing)")]
    UnsignedField(String),
    /// A version this code does not read.
    #[error("the manifest is version {0}; this ponte reads version {VERSION} manifests")]
    Version(u32),
    /// A time that is not RFC 3339.
    #[error("the manifest's `{field}` time `{value}` is not an RFC 3339 time")]
    Time {
        /// The field.
        field: &'static str,
        /// Its value.
        value: String,
    },
    /// No certificate in the manifest.
    #[error("the manifest carries no signing certificate")]
    NoCertificate,
    /// A certificate that cannot be read.
    #[error("the signing certificate in the manifest cannot be read: {0}")]
    Certificate(String),
    /// The CA file has no certificate.
    #[error("the CA file holds no PEM certificate (`-----BEGIN CERTIFICATE-----`): check --ca")]
    CaFile,
    /// The chain does not lead to the CA.
    #[error("the signing certificate was not issued by this CA (check --ca names the CA of the site that exported the clip)")]
    NotIssuedByCa,
    /// The certificate was expired or not yet valid when the manifest says it signed.
    #[error("the signing certificate was not valid at {created}, when the manifest says it was signed (expired or not yet valid then)")]
    NotValidAtCreation {
        /// The manifest's `created`.
        created: String,
    },
    /// Any other refusal of the chain.
    #[error("the signing certificate is not acceptable under this CA: {0}")]
    CertificateRefused(String),
    /// A signature algorithm this code does not verify.
    #[error("the manifest's signature algorithm `{0}` is not one ponte verifies (ECDSA-P256-SHA256, ECDSA-P384-SHA384, ED25519)")]
    Algorithm(String),
    /// The signature does not verify.
    #[error("the manifest's signature does not verify (the manifest was changed after signing)")]
    ManifestChanged,
    /// The clip does not match the manifest.
    #[error("the clip's SHA-256 does not match the manifest (the MP4 was changed): the manifest says {manifest_sha256} ({manifest_bytes} bytes), the file is {clip_sha256} ({clip_bytes} bytes)")]
    ClipChanged {
        /// The manifest's `sha256`.
        manifest_sha256: String,
        /// The manifest's `bytes`.
        manifest_bytes: u64,
        /// SHA-256 of the file given.
        clip_sha256: String,
        /// Size of the file given.
        clip_bytes: u64,
    },
    /// The key cannot sign.
    #[error("the signing key cannot be used: {0}")]
    Key(String),
    /// The key and the certificate are not a pair.
    #[error("the signing key does not belong to the first certificate of the chain (check the key and certificate files are a pair)")]
    KeyDoesNotMatchCertificate,
}

/// Signs `manifest` with `key_pem` (PKCS#8: ECDSA P-256 or P-384, Ed25519),
/// whose certificate chain is `cert_chain_pem` (its own certificate first);
/// returns the manifest file's bytes (pretty JSON).
pub fn sign(manifest: &Manifest, cert_chain_pem: &str, key_pem: &str) -> Result<Vec<u8>, EvidenceError> {
    if manifest.version != VERSION {
        return Err(EvidenceError::Version(manifest.version));
    }
    created(manifest)?;
    let chain = pem_certificates(cert_chain_pem.as_bytes()).map_err(EvidenceError::Certificate)?;
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
        .map_err(|e| EvidenceError::Key(format!("not a PEM private key ({e})")))?;
    let PrivateKeyDer::Pkcs8(pkcs8) = key else {
        return Err(EvidenceError::Key(
            "not PKCS#8 (`BEGIN PRIVATE KEY`); convert it with `openssl pkcs8 -topk8 -nocrypt`".into(),
        ));
    };
    let signer = Signer::from_pkcs8(pkcs8.secret_pkcs8_der())?;
    let mut signed = SignedManifest {
        manifest: manifest.clone(),
        certificate: chain.iter().map(pem_of).collect(),
        signature_alg: signer.name.to_owned(),
        signature: String::new(),
    };
    let canonical = canonical_bytes(&signed)?;
    let signature = signer.sign(&canonical)?;
    // The pair check a verifier would do, here where it can still be fixed.
    let ee = end_entity(&chain)?;
    ee.verify_signature(signer.verification_alg, &canonical, &signature)
        .map_err(|_| EvidenceError::KeyDoesNotMatchCertificate)?;
    signed.signature = BASE64.encode(signature);
    let mut out = serde_json::to_vec_pretty(&signed).map_err(|e| EvidenceError::Json(e.to_string()))?;
    out.push(b'\n');
    Ok(out)
}

/// Verifies an export: the manifest's signer chains to `ca_pem` and was
/// valid at `created`, the signature covers the manifest as it is, and
/// `mp4` is the clip it describes. Returns the manifest.
pub fn verify(mp4: &[u8], manifest_json: &[u8], ca_pem: &[u8]) -> Result<Manifest, EvidenceError> {
    let signed: SignedManifest =
        serde_json::from_slice(manifest_json).map_err(|e| EvidenceError::Json(e.to_string()))?;
    // Read again as a bare object: a field the struct would ignore is one
    // the signature does not cover.
    let object: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(manifest_json).map_err(|e| EvidenceError::Json(e.to_string()))?;
    let known = serde_json::to_value(&signed).map_err(|e| EvidenceError::Json(e.to_string()))?;
    if let Some(extra) = object.keys().find(|k| known.get(k.as_str()).is_none()) {
        return Err(EvidenceError::UnsignedField(extra.clone()));
    }
    let manifest = &signed.manifest;
    if manifest.version != VERSION {
        return Err(EvidenceError::Version(manifest.version));
    }
    let at = created(manifest)?;

    // Who signed: the chain to the CA, at the time of signing.
    let chain: Vec<CertificateDer<'static>> = signed
        .certificate
        .iter()
        .map(|pem| pem_certificates(pem.as_bytes()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(EvidenceError::Certificate)?
        .into_iter()
        .flatten()
        .collect();
    let ee = end_entity(&chain)?;
    let ca = pem_certificates(ca_pem).map_err(|_| EvidenceError::CaFile)?;
    let anchors = ca
        .iter()
        .map(|c| webpki::anchor_from_trusted_cert(c).map_err(|_| EvidenceError::CaFile))
        .collect::<Result<Vec<_>, _>>()?;
    let intermediates = chain.get(1..).unwrap_or_default();
    ee.verify_for_usage(webpki::ALL_VERIFICATION_ALGS, &anchors, intermediates, at, AnyUsage, None, None)
        .map_err(|e| match e {
            // A CA of the same name but another key shows as a bad signature.
            webpki::Error::UnknownIssuer | webpki::Error::InvalidSignatureForPublicKey => {
                EvidenceError::NotIssuedByCa
            }
            webpki::Error::CertExpired { .. } | webpki::Error::CertNotValidYet { .. } => {
                EvidenceError::NotValidAtCreation { created: manifest.created.clone() }
            }
            webpki::Error::CaUsedAsEndEntity => {
                EvidenceError::CertificateRefused("it is a CA certificate, not a node's".into())
            }
            other => EvidenceError::CertificateRefused(format!("{other:?}")),
        })?;

    // What was signed: the manifest as it is now.
    let alg = verification_alg(&signed.signature_alg)?;
    let signature = BASE64.decode(&signed.signature).map_err(|_| EvidenceError::ManifestChanged)?;
    ee.verify_signature(alg, &canonical_bytes(&signed)?, &signature)
        .map_err(|_| EvidenceError::ManifestChanged)?;

    // The clip: the file the signed manifest describes.
    let clip_sha256 = hex::encode(Sha256::digest(mp4));
    if !clip_sha256.eq_ignore_ascii_case(&manifest.sha256) || manifest.bytes != mp4.len() as u64 {
        return Err(EvidenceError::ClipChanged {
            manifest_sha256: manifest.sha256.clone(),
            manifest_bytes: manifest.bytes,
            clip_sha256,
            clip_bytes: mp4.len() as u64,
        });
    }
    Ok(signed.manifest)
}

/// Unix milliseconds as RFC 3339 UTC with milliseconds
/// (`2024-05-06T07:08:09.010Z`), as the manifest's times are written;
/// `None` past year 9999.
pub fn rfc3339_ms(unix_ms: u64) -> Option<String> {
    let t = OffsetDateTime::from_unix_timestamp_nanos(i128::from(unix_ms) * 1_000_000).ok()?;
    t.format(&time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
    ))
    .ok()
}

/// The bytes the signature covers (module doc).
fn canonical_bytes(signed: &SignedManifest) -> Result<Vec<u8>, EvidenceError> {
    let unsigned = SignedManifest { signature: String::new(), ..signed.clone() };
    serde_json::to_vec(&unsigned).map_err(|e| EvidenceError::Json(e.to_string()))
}

/// The manifest's `created` as a certificate-validity time.
fn created(manifest: &Manifest) -> Result<UnixTime, EvidenceError> {
    let bad = || EvidenceError::Time { field: "created", value: manifest.created.clone() };
    let t = OffsetDateTime::parse(&manifest.created, &Rfc3339).map_err(|_| bad())?;
    let secs = u64::try_from(t.unix_timestamp()).map_err(|_| bad())?;
    Ok(UnixTime::since_unix_epoch(Duration::from_secs(secs)))
}

fn end_entity<'a>(chain: &'a [CertificateDer<'a>]) -> Result<webpki::EndEntityCert<'a>, EvidenceError> {
    let first = chain.first().ok_or(EvidenceError::NoCertificate)?;
    webpki::EndEntityCert::try_from(first).map_err(|e| EvidenceError::Certificate(format!("{e:?}")))
}

/// Every certificate in a PEM text (at least one).
fn pem_certificates(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs =
        CertificateDer::pem_slice_iter(pem).collect::<Result<Vec<_>, _>>().map_err(|e| e.to_string())?;
    if certs.is_empty() {
        return Err("no `-----BEGIN CERTIFICATE-----` block".into());
    }
    Ok(certs)
}

fn pem_of(cert: &CertificateDer<'_>) -> String {
    let body = BASE64.encode(cert.as_ref());
    let mut pem = String::from("-----BEGIN CERTIFICATE-----\n");
    for line in body.as_bytes().chunks(64) {
        pem.push_str(&String::from_utf8_lossy(line));
        pem.push('\n');
    }
    pem.push_str("-----END CERTIFICATE-----\n");
    pem
}

/// The verification algorithm of a manifest's `signature_alg`.
fn verification_alg(name: &str) -> Result<&'static dyn SignatureVerificationAlgorithm, EvidenceError> {
    match name {
        "ECDSA-P256-SHA256" => Ok(webpki::ring::ECDSA_P256_SHA256),
        "ECDSA-P384-SHA384" => Ok(webpki::ring::ECDSA_P384_SHA384),
        "ED25519" => Ok(webpki::ring::ED25519),
        other => Err(EvidenceError::Algorithm(other.to_owned())),
    }
}

/// A node key, as ring loads it, with the names a manifest gives its signature.
struct Signer {
    key: SigningKey,
    name: &'static str,
    verification_alg: &'static dyn SignatureVerificationAlgorithm,
}

enum SigningKey {
    Ecdsa(ring::signature::EcdsaKeyPair),
    Ed25519(ring::signature::Ed25519KeyPair),
}

impl Signer {
    fn from_pkcs8(der: &[u8]) -> Result<Self, EvidenceError> {
        use ring::signature::{
            EcdsaKeyPair, Ed25519KeyPair, ECDSA_P256_SHA256_ASN1_SIGNING, ECDSA_P384_SHA384_ASN1_SIGNING,
        };
        let rng = ring::rand::SystemRandom::new();
        if let Ok(k) = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, der, &rng) {
            let (name, verification_alg) = ("ECDSA-P256-SHA256", webpki::ring::ECDSA_P256_SHA256);
            return Ok(Signer { key: SigningKey::Ecdsa(k), name, verification_alg });
        }
        if let Ok(k) = EcdsaKeyPair::from_pkcs8(&ECDSA_P384_SHA384_ASN1_SIGNING, der, &rng) {
            let (name, verification_alg) = ("ECDSA-P384-SHA384", webpki::ring::ECDSA_P384_SHA384);
            return Ok(Signer { key: SigningKey::Ecdsa(k), name, verification_alg });
        }
        if let Ok(k) = Ed25519KeyPair::from_pkcs8_maybe_unchecked(der) {
            let (name, verification_alg) = ("ED25519", webpki::ring::ED25519);
            return Ok(Signer { key: SigningKey::Ed25519(k), name, verification_alg });
        }
        Err(EvidenceError::Key("not an ECDSA P-256/P-384 or Ed25519 PKCS#8 key".into()))
    }

    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, EvidenceError> {
        match &self.key {
            SigningKey::Ecdsa(k) => k
                .sign(&ring::rand::SystemRandom::new(), msg)
                .map(|s| s.as_ref().to_vec())
                .map_err(|_| EvidenceError::Key("ECDSA signing failed".into())),
            SigningKey::Ed25519(k) => Ok(k.sign(msg).as_ref().to_vec()),
        }
    }
}

/// Any extended key usage (module doc); a malformed extension still fails.
struct AnyUsage;

impl webpki::ExtendedKeyUsageValidator for AnyUsage {
    fn validate(&self, iter: webpki::KeyPurposeIdIter<'_, '_>) -> Result<(), webpki::Error> {
        for purpose in iter {
            purpose?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{
        date_time_ymd, BasicConstraints, Certificate, CertificateParams, DnType, ExtendedKeyUsagePurpose,
        IsCa, KeyPair, KeyUsagePurpose, SignatureAlgorithm,
    };

    const CLIP: &[u8] = b"\0\0\0\x18ftypisom, a clip's bytes";

    struct Ca {
        cert: Certificate,
        key: KeyPair,
    }

    /// A CA as `ponte-agent pki` makes one; `name` alike for two CAs shows
    /// a look-alike CA is still another CA.
    fn ca(name: &str) -> Ca {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params.not_before = date_time_ymd(2020, 1, 1);
        params.not_after = date_time_ymd(2040, 1, 1);
        Ca { cert: params.self_signed(&key).unwrap(), key }
    }

    /// An agent node certificate (serverAuth + clientAuth, as pki issues),
    /// valid through 2024 only: `(chain PEM, key PEM)`.
    fn agent(ca: &Ca, alg: &'static SignatureAlgorithm) -> (String, String) {
        let key = KeyPair::generate_for(alg).unwrap();
        let mut params = CertificateParams::new(vec!["agent-mantova".to_owned()]).unwrap();
        params.distinguished_name.push(DnType::CommonName, "agent-mantova");
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages =
            vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        params.not_before = date_time_ymd(2024, 1, 1);
        params.not_after = date_time_ymd(2025, 1, 1);
        let cert = params.signed_by(&key, &ca.cert, &ca.key).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    fn manifest(clip: &[u8]) -> Manifest {
        Manifest {
            version: VERSION,
            camera: "zaist-mantova".into(),
            quality: "main".into(),
            from: "2024-05-06T07:08:00.000Z".into(),
            to: "2024-05-06T07:09:00.000Z".into(),
            first_frame: "2024-05-06T07:08:00.040Z".into(),
            last_frame: "2024-05-06T07:08:59.960Z".into(),
            frames: 1499,
            duration_ms: 59_960,
            file: "zaist-mantova-20240506T070800Z.mp4".into(),
            bytes: clip.len() as u64,
            sha256: hex::encode(Sha256::digest(clip)),
            operator: "ispettore.rossi".into(),
            site: "mantova".into(),
            agent: "agent-mantova".into(),
            // Inside the certificate's 2024: verified today, long after it expired.
            created: "2024-05-06T07:10:00.123Z".into(),
        }
    }

    #[test]
    fn a_signed_manifest_verifies_years_after_its_certificate_expired() {
        let ca = ca("ponte CA mantova");
        for alg in [&rcgen::PKCS_ECDSA_P256_SHA256, &rcgen::PKCS_ECDSA_P384_SHA384, &rcgen::PKCS_ED25519] {
            let (chain, key) = agent(&ca, alg);
            let json = sign(&manifest(CLIP), &chain, &key).unwrap();
            let verified = verify(CLIP, &json, ca.cert.pem().as_bytes()).unwrap();
            assert_eq!(verified, manifest(CLIP));
            let file: serde_json::Value = serde_json::from_slice(&json).unwrap();
            assert_eq!(file["operator"], "ispettore.rossi", "flat JSON");
            assert!(file["certificate"][0].as_str().unwrap().starts_with("-----BEGIN CERTIFICATE-----"));
        }
    }

    #[test]
    fn a_changed_clip_is_named() {
        let ca = ca("ponte CA mantova");
        let (chain, key) = agent(&ca, &rcgen::PKCS_ECDSA_P256_SHA256);
        let json = sign(&manifest(CLIP), &chain, &key).unwrap();
        let mut clip = CLIP.to_vec();
        clip[20] ^= 1;
        let err = verify(&clip, &json, ca.cert.pem().as_bytes()).unwrap_err();
        assert!(matches!(err, EvidenceError::ClipChanged { .. }), "{err}");
        assert!(err
            .to_string()
            .starts_with("the clip's SHA-256 does not match the manifest (the MP4 was changed)"));
        let err = verify(&CLIP[1..], &json, ca.cert.pem().as_bytes()).unwrap_err();
        assert!(matches!(err, EvidenceError::ClipChanged { .. }), "{err}");
    }

    #[test]
    fn a_changed_manifest_is_named() {
        let ca = ca("ponte CA mantova");
        let (chain, key) = agent(&ca, &rcgen::PKCS_ECDSA_P256_SHA256);
        let json = String::from_utf8(sign(&manifest(CLIP), &chain, &key).unwrap()).unwrap();
        for (from, to) in [
            ("\"frames\": 1499", "\"frames\": 1498"),
            ("ispettore.rossi", "ispettore.bossi"),
            ("07:08:00.040Z", "07:08:00.041Z"),
            ("\"signature_alg\": \"ECDSA-P256-SHA256\"", "\"signature_alg\": \"ECDSA-P384-SHA384\""),
        ] {
            assert!(json.contains(from), "{from}");
            let changed = json.replace(from, to);
            let err = verify(CLIP, changed.as_bytes(), ca.cert.pem().as_bytes()).unwrap_err();
            assert!(matches!(err, EvidenceError::ManifestChanged), "{from}: {err}");
            assert_eq!(
                err.to_string(),
                "the manifest's signature does not verify (the manifest was changed after signing)"
            );
        }
        // A field added next to the signed ones, or one written twice.
        let added = json.replacen('{', "{\n  \"approved_by\": \"judge\",", 1);
        let err = verify(CLIP, added.as_bytes(), ca.cert.pem().as_bytes()).unwrap_err();
        assert!(matches!(&err, EvidenceError::UnsignedField(f) if f == "approved_by"), "{err}");
        let twice = json.replacen('{', "{\n  \"operator\": \"someone.else\",", 1);
        let err = verify(CLIP, twice.as_bytes(), ca.cert.pem().as_bytes()).unwrap_err();
        assert!(matches!(err, EvidenceError::Json(_)), "{err}");
    }

    #[test]
    fn another_ca_is_named() {
        let ca_a = ca("ponte CA mantova");
        let (chain, key) = agent(&ca_a, &rcgen::PKCS_ECDSA_P256_SHA256);
        let json = sign(&manifest(CLIP), &chain, &key).unwrap();
        for other in [ca("ponte CA brescia"), ca("ponte CA mantova")] {
            let err = verify(CLIP, &json, other.cert.pem().as_bytes()).unwrap_err();
            assert!(matches!(err, EvidenceError::NotIssuedByCa), "{err}");
            assert!(err.to_string().starts_with("the signing certificate was not issued by this CA"));
        }
        let err = verify(CLIP, &json, b"not a certificate").unwrap_err();
        assert!(matches!(err, EvidenceError::CaFile), "{err}");
    }

    #[test]
    fn a_manifest_signed_outside_its_certificates_life_is_named() {
        let ca = ca("ponte CA mantova");
        let (chain, key) = agent(&ca, &rcgen::PKCS_ECDSA_P256_SHA256);
        let late = Manifest { created: "2025-03-01T00:00:00.000Z".into(), ..manifest(CLIP) };
        let json = sign(&late, &chain, &key).unwrap();
        let err = verify(CLIP, &json, ca.cert.pem().as_bytes()).unwrap_err();
        assert!(matches!(err, EvidenceError::NotValidAtCreation { .. }), "{err}");
    }

    #[test]
    fn malformed_input_is_named() {
        let ca = ca("ponte CA mantova");
        let (chain, key) = agent(&ca, &rcgen::PKCS_ECDSA_P256_SHA256);
        let err = verify(CLIP, b"{\"version\": 1,", ca.cert.pem().as_bytes()).unwrap_err();
        assert!(matches!(err, EvidenceError::Json(_)), "{err}");
        assert!(err.to_string().starts_with("the manifest is not a readable evidence manifest"));
        let err = verify(CLIP, b"[]", ca.cert.pem().as_bytes()).unwrap_err();
        assert!(matches!(err, EvidenceError::Json(_)), "{err}");

        let bad_time = Manifest { created: "yesterday".into(), ..manifest(CLIP) };
        assert!(matches!(sign(&bad_time, &chain, &key), Err(EvidenceError::Time { field: "created", .. })));
        let err = sign(&manifest(CLIP), &chain, &chain).unwrap_err();
        assert!(matches!(err, EvidenceError::Key(_)), "{err}");
        let (_, other_key) = agent(&ca, &rcgen::PKCS_ECDSA_P256_SHA256);
        let err = sign(&manifest(CLIP), &chain, &other_key).unwrap_err();
        assert!(matches!(err, EvidenceError::KeyDoesNotMatchCertificate), "{err}");
        // A CA cannot stand in for a node.
        let json = sign(&manifest(CLIP), &ca.cert.pem(), &ca.key.serialize_pem()).unwrap();
        let err = verify(CLIP, &json, ca.cert.pem().as_bytes()).unwrap_err();
        assert!(matches!(err, EvidenceError::CertificateRefused(_)), "{err}");
    }

    #[test]
    fn times_are_written_in_utc_with_milliseconds() {
        assert_eq!(rfc3339_ms(1_714_979_289_010).as_deref(), Some("2024-05-06T07:08:09.010Z"));
        assert_eq!(rfc3339_ms(u64::MAX), None);
    }
}
