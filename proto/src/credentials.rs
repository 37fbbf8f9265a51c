//! Credentials both nodes check the same way: argon2id password hashes (the
//! relay's `[[viewer]]`, the agent's `[[operator]]`), SHA-256 token digests,
//! and account names. Each node keeps its own config wording and CLI hints;
//! the primitives live here once.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use sha2::{Digest, Sha256};
use std::sync::OnceLock;
use subtle::ConstantTimeEq;

/// Why a password hash or an account name is not usable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CredentialError {
    /// Not a PHC string at all.
    #[error("`password_hash` is not a PHC string ({0})")]
    NotPhc(String),
    /// A PHC string of another algorithm.
    #[error("`password_hash` uses `{0}`; only argon2id is accepted")]
    NotArgon2id(String),
    /// argon2id, but its parameters do not parse.
    #[error("`password_hash` has unusable argon2 parameters ({0})")]
    BadParams(String),
    /// argon2id parameters that would stall the node on every login.
    #[error("`password_hash` asks for m={m} KiB, t={t}, p={p}; keep m <= 262144, t <= 16, p <= 8")]
    TooCostly {
        /// Memory, KiB.
        m: u32,
        /// Passes.
        t: u32,
        /// Lanes.
        p: u32,
    },
    /// Hashing failed (salt encoding or argon2 itself).
    #[error("cannot hash the password: {0}")]
    Hash(String),
    /// A name that is empty or longer than 64 characters.
    #[error("the name must be 1 to 64 characters")]
    NameLength,
    /// A name with characters that would break logs, headers or TOML.
    #[error("the name may not contain spaces, quotes, `:` or control characters")]
    NameChars,
}

/// Checks an account or token name (1 to 64 characters, no spaces, quotes,
/// `:` or control characters).
pub fn check_name(name: &str) -> Result<(), CredentialError> {
    if name.is_empty() || name.len() > 64 {
        return Err(CredentialError::NameLength);
    }
    if name.chars().any(|c| c.is_control() || c == ':' || c == '"' || c.is_whitespace()) {
        return Err(CredentialError::NameChars);
    }
    Ok(())
}

/// Checks a configured password hash: an argon2id PHC string whose
/// parameters a login can afford (each one costs this much memory and time).
pub fn check_phc(phc: &str) -> Result<(), CredentialError> {
    let hash = PasswordHash::new(phc).map_err(|e| CredentialError::NotPhc(e.to_string()))?;
    if hash.algorithm != argon2::Algorithm::Argon2id.ident() {
        return Err(CredentialError::NotArgon2id(hash.algorithm.to_string()));
    }
    let params = argon2::Params::try_from(&hash).map_err(|e| CredentialError::BadParams(e.to_string()))?;
    if params.m_cost() > 256 * 1024 || params.t_cost() > 16 || params.p_cost() > 8 {
        return Err(CredentialError::TooCostly {
            m: params.m_cost(),
            t: params.t_cost(),
            p: params.p_cost(),
        });
    }
    Ok(())
}

/// argon2id (default parameters: 19 MiB, 2 passes) PHC string of a password.
pub fn hash_password(password: &str) -> Result<String, CredentialError> {
    let salt = SaltString::encode_b64(&rand::random::<[u8; 16]>())
        .map_err(|e| CredentialError::Hash(format!("cannot encode a salt: {e}")))?;
    let hash = Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map_err(|e| CredentialError::Hash(e.to_string()))?;
    Ok(hash.to_string())
}

/// Whether `password` matches the PHC string `phc` (argon2: tens of
/// milliseconds, call it off the async threads).
pub fn verify_password(phc: &str, password: &str) -> bool {
    PasswordHash::new(phc)
        .is_ok_and(|hash| Argon2::default().verify_password(password.as_bytes(), &hash).is_ok())
}

/// A valid argon2id hash of a random secret nobody knows, verified for
/// unknown users so that they take as long as a wrong password (timing
/// does not tell which names exist).
///
/// Built once per process by [`Decoy::get`], which a node calls while it
/// loads its accounts: if it cannot be built the config load fails, rather
/// than unknown users answering faster than known ones.
#[derive(Debug)]
pub struct Decoy {
    phc: String,
}

impl Decoy {
    /// The process's decoy, built on first use.
    pub fn get() -> Result<&'static Decoy, CredentialError> {
        static DECOY: OnceLock<Result<Decoy, CredentialError>> = OnceLock::new();
        DECOY
            .get_or_init(|| hash_password(&hex::encode(rand::random::<[u8; 32]>())).map(|phc| Decoy { phc }))
            .as_ref()
            .map_err(Clone::clone)
    }

    /// Verifies `password` against the decoy: as slow as a wrong password.
    pub fn burn(&self, password: &str) {
        let _ = verify_password(&self.phc, password);
    }
}

/// SHA-256 of bytes.
pub fn sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

/// Equality that takes the same time wherever the first difference is.
pub fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    a.ct_eq(b).into()
}

/// Exactly `N` bytes from `2 * N` hex digits (either case, surrounding
/// spaces ignored).
pub fn parse_hex<const N: usize>(text: &str) -> Option<[u8; N]> {
    let mut out = [0u8; N];
    hex::decode_to_slice(text.trim(), &mut out).ok()?;
    Some(out)
}

/// A new random bearer token (256 bits, hex) and its SHA-256 in hex.
pub fn new_token() -> (String, String) {
    let token = hex::encode(rand::random::<[u8; 32]>());
    let digest = hex::encode(sha256(token.as_bytes()));
    (token, digest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_verify_and_decoy() {
        let phc = hash_password("correct horse").unwrap();
        assert!(phc.starts_with("$argon2id$v=19$"), "{phc}");
        assert_eq!(check_phc(&phc), Ok(()));
        assert!(verify_password(&phc, "correct horse"));
        assert!(!verify_password(&phc, "Correct horse"));
        assert!(!verify_password("not a phc", "correct horse"));
        let decoy = Decoy::get().unwrap();
        assert!(std::ptr::eq(decoy, Decoy::get().unwrap()), "built once");
        assert_eq!(check_phc(&decoy.phc), Ok(()));
    }

    #[test]
    fn bad_hashes_and_names_are_told_apart() {
        assert!(matches!(check_phc("plain"), Err(CredentialError::NotPhc(_))));
        let argon2i = "$argon2i$v=19$m=16,t=2,p=1$c2FsdHNhbHQ$YWJjZGVmZ2hpamtsbW5vcA";
        assert_eq!(check_phc(argon2i), Err(CredentialError::NotArgon2id("argon2i".into())));
        let costly = "$argon2id$v=19$m=1048576,t=2,p=1$c2FsdHNhbHQ$YWJjZGVmZ2hpamtsbW5vcA";
        assert!(matches!(check_phc(costly), Err(CredentialError::TooCostly { m: 1048576, .. })));
        assert_eq!(check_name(""), Err(CredentialError::NameLength));
        assert_eq!(check_name("an na"), Err(CredentialError::NameChars));
        assert_eq!(check_name("anna"), Ok(()));
    }

    #[test]
    fn hex_tokens_and_compares() {
        assert_eq!(parse_hex::<2>(" aBcd "), Some([0xab, 0xcd]));
        assert_eq!(parse_hex::<2>("abc"), None);
        assert_eq!(parse_hex::<2>("abcdef"), None);
        assert_eq!(parse_hex::<1>("zz"), None);
        let (token, digest) = new_token();
        assert_eq!((token.len(), digest.len()), (64, 64));
        assert_eq!(parse_hex::<32>(&digest), Some(sha256(token.as_bytes())));
        assert!(same_bytes(b"abc", b"abc"));
        assert!(!same_bytes(b"abc", b"abd"));
        assert!(!same_bytes(b"abc", b"abcd"));
    }
}
