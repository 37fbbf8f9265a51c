//! Pair tokens: how the console moves to the other relay of its site without
//! a login prompt when its own relay stops answering (issue 22).
//!
//! The two relays of a site share a secret (`relay.pair_key_file`). A
//! logged-in page asks its relay for a token (`GET /api/pair-token`): an
//! HMAC-SHA256, under that secret, of the site, the account, the relay that
//! issued it, when, until when (12 h at most, never past the browser
//! session's own end) and a random nonce. The page keeps it and, on failover,
//! sends it to the peer as `Authorization: Bearer` (a header, not a cookie:
//! headless and hardened browsers block third-party cookies, and the peer is
//! another origin). The peer takes it for its own account of that name,
//! only for its own site, and only while it has that account with the same
//! credentials: an account removed or changed at the peer is refused there.
//!
//! Sans-IO: the time is passed in; [`issue`] and [`verify`] are pure.
//! The MAC is checked before anything of the token is parsed.

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine as _;
use hmac::digest::KeyInit;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

/// What every pair token starts with (so a bearer header is told apart
/// from a `[[token]]` without trying both).
pub const PREFIX: &str = "ppt1.";
/// The longest a pair token lives.
pub const MAX_LIFETIME_SECS: u64 = 12 * 3600;
/// Clocks of the two relays may differ this much (NTP keeps them closer).
const CLOCK_SLACK_SECS: u64 = 120;
/// Longer bearer values are not pair tokens (a real one is ~300 bytes).
const MAX_TOKEN_LEN: usize = 1024;
/// Bound to this use: a MAC of the same key for anything else never passes.
const CONTEXT: &[u8] = b"ponte pair token v1\0";

/// The secret the relays of one site share (`relay.pair_key_file`), as
/// HMAC's block-sized key (longer secrets hashed, shorter ones padded with
/// zeros, as HMAC itself does).
#[derive(Clone)]
pub struct PairKey {
    block: [u8; 64],
    len: usize,
}

/// Fewest bytes of a pair key.
pub const MIN_KEY_BYTES: usize = 32;

impl PairKey {
    /// A key of these bytes; `None` when shorter than [`MIN_KEY_BYTES`].
    pub fn new(bytes: &[u8]) -> Option<PairKey> {
        if bytes.len() < MIN_KEY_BYTES {
            return None;
        }
        let mut block = [0u8; 64];
        let hashed;
        let key = if bytes.len() > block.len() {
            use sha2::Digest as _;
            hashed = Sha256::digest(bytes);
            hashed.as_slice()
        } else {
            bytes
        };
        for (b, k) in block.iter_mut().zip(key) {
            *b = *k;
        }
        Some(PairKey { block, len: bytes.len() })
    }

    fn mac(&self, payload: &str) -> Hmac<Sha256> {
        let mut mac = <Hmac<Sha256> as KeyInit>::new((&self.block).into());
        mac.update(CONTEXT);
        mac.update(payload.as_bytes());
        mac
    }
}

impl std::fmt::Debug for PairKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PairKey({} bytes)", self.len)
    }
}

/// What a pair token says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PairClaims {
    /// The site both relays serve.
    pub site: String,
    /// The account name.
    pub user: String,
    /// Fingerprint of the account's credentials at the issuing relay (hex):
    /// the peer's account must have the same ones.
    pub cred: String,
    /// The relay that issued it, as the page reached it (`https://host:port`).
    pub iss: String,
    /// Issued, seconds since the Unix epoch.
    pub iat: u64,
    /// Expires, seconds since the Unix epoch.
    pub exp: u64,
    /// Random, hex: tells this token's logins from others of the account.
    pub nonce: String,
}

/// Why a pair token was refused (for the log and the audit, never the client).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PairTokenError {
    /// Not a pair token's shape.
    #[error("not a pair token (malformed)")]
    Malformed,
    /// The MAC does not check out: another key (another site's pair, or an
    /// old key), or a changed token.
    #[error("pair token not signed with this relay's `relay.pair_key_file` (another key, or altered)")]
    BadSignature,
    /// Signed, but for another site.
    #[error("pair token of site `{site}`, not this relay's")]
    WrongSite { site: String, user: String },
    /// Past its end.
    #[error("pair token of `{user}` expired {secs} s ago")]
    Expired { user: String, secs: u64 },
    /// Issued in the future, beyond the clock slack: a clock is wrong.
    #[error("pair token of `{user}` issued {secs} s in the future: check both relays' clocks (NTP)")]
    NotYetValid { user: String, secs: u64 },
}

impl PairTokenError {
    /// The account a signed token was for (`None` when the signature did
    /// not check out: then nothing in it is to be believed).
    pub fn user(&self) -> Option<&str> {
        match self {
            PairTokenError::Malformed | PairTokenError::BadSignature => None,
            PairTokenError::WrongSite { user, .. }
            | PairTokenError::Expired { user, .. }
            | PairTokenError::NotYetValid { user, .. } => Some(user),
        }
    }
}

/// Whether a bearer value is meant as a pair token.
pub fn is_pair_token(bearer: &str) -> bool {
    bearer.starts_with(PREFIX)
}

/// The token for `claims` under `key`.
pub fn issue(key: &PairKey, claims: &PairClaims) -> String {
    // Serializing a struct of strings and integers cannot fail.
    let json = serde_json::to_vec(claims).unwrap_or_default();
    let payload = B64.encode(json);
    let tag = B64.encode(key.mac(&payload).finalize().into_bytes());
    format!("{PREFIX}{payload}.{tag}")
}

/// Checks `token` under `key` for `site` at `now_unix`: the MAC first, then
/// the claims. Whether the account exists here is the caller's to check.
pub fn verify(key: &PairKey, token: &str, site: &str, now_unix: u64) -> Result<PairClaims, PairTokenError> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(PairTokenError::Malformed);
    }
    let rest = token.strip_prefix(PREFIX).ok_or(PairTokenError::Malformed)?;
    let (payload, tag) = rest.split_once('.').ok_or(PairTokenError::Malformed)?;
    let tag = B64.decode(tag).map_err(|_| PairTokenError::Malformed)?;
    key.mac(payload).verify_slice(&tag).map_err(|_| PairTokenError::BadSignature)?;
    let json = B64.decode(payload).map_err(|_| PairTokenError::Malformed)?;
    let claims: PairClaims = serde_json::from_slice(&json).map_err(|_| PairTokenError::Malformed)?;
    if claims.site != site {
        return Err(PairTokenError::WrongSite { site: claims.site, user: claims.user });
    }
    if now_unix >= claims.exp {
        return Err(PairTokenError::Expired { user: claims.user, secs: now_unix - claims.exp });
    }
    if claims.iat > now_unix.saturating_add(CLOCK_SLACK_SECS) {
        return Err(PairTokenError::NotYetValid { user: claims.user, secs: claims.iat - now_unix });
    }
    // A token claiming a longer life than any relay issues: a relay with
    // another idea of the rules, refused rather than honoured.
    if claims.exp.saturating_sub(claims.iat) > MAX_LIFETIME_SECS {
        return Err(PairTokenError::Malformed);
    }
    Ok(claims)
}

/// The pair tokens a relay has seen used, so each one's first use is
/// audited as a login and its later requests are not (sans-IO: the time
/// is passed in). Bounded: when full, the entry nearest its end goes.
#[derive(Debug, Default)]
pub struct SeenTokens {
    /// Nonce → expiry (Unix seconds).
    seen: std::collections::HashMap<String, u64>,
}

/// Most pair tokens remembered (one per operator's page, a few a shift).
const MAX_SEEN: usize = 4096;

impl SeenTokens {
    /// Records a use of the token `nonce` (valid until `exp`) at `now_unix`;
    /// true the first time.
    pub fn first_use(&mut self, nonce: &str, exp: u64, now_unix: u64) -> bool {
        if self.seen.contains_key(nonce) {
            return false;
        }
        if self.seen.len() >= MAX_SEEN {
            self.seen.retain(|_, e| *e > now_unix);
        }
        if self.seen.len() >= MAX_SEEN {
            if let Some(oldest) = self.seen.iter().min_by_key(|(_, e)| **e).map(|(n, _)| n.clone()) {
                self.seen.remove(&oldest);
            }
        }
        self.seen.insert(nonce.to_owned(), exp);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_900_000_000;

    fn key(byte: u8) -> PairKey {
        PairKey::new(&[byte; 32]).expect("32 bytes")
    }

    fn claims() -> PairClaims {
        PairClaims {
            site: "carabinieri".into(),
            user: "anna".into(),
            cred: "0011223344556677".into(),
            iss: "https://relay-a.carabinieri:8443".into(),
            iat: NOW,
            exp: NOW + 3600,
            nonce: "ab".repeat(16),
        }
    }

    #[test]
    fn a_token_verifies_under_its_key_for_its_site_until_it_expires() {
        let token = issue(&key(1), &claims());
        assert!(is_pair_token(&token) && token.len() < 512, "{token}");
        assert_eq!(verify(&key(1), &token, "carabinieri", NOW + 10), Ok(claims()));
        assert_eq!(verify(&key(1), &token, "carabinieri", NOW + 3599), Ok(claims()));
        assert_eq!(
            verify(&key(1), &token, "carabinieri", NOW + 3600),
            Err(PairTokenError::Expired { user: "anna".into(), secs: 0 })
        );
        // Clocks a minute apart: still taken.
        assert_eq!(verify(&key(1), &token, "carabinieri", NOW - 60), Ok(claims()));
        assert_eq!(
            verify(&key(1), &token, "carabinieri", NOW - 600),
            Err(PairTokenError::NotYetValid { user: "anna".into(), secs: 600 })
        );
    }

    #[test]
    fn another_key_another_site_or_a_changed_token_is_refused() {
        let token = issue(&key(1), &claims());
        assert_eq!(verify(&key(2), &token, "carabinieri", NOW), Err(PairTokenError::BadSignature));
        assert_eq!(
            verify(&key(1), &token, "questura", NOW),
            Err(PairTokenError::WrongSite { site: "carabinieri".into(), user: "anna".into() })
        );
        // Another site's relay pair with the same key (a copied file): the
        // site in the claims still binds the token.
        let questura = issue(&key(1), &PairClaims { site: "questura".into(), ..claims() });
        assert!(matches!(
            verify(&key(1), &questura, "carabinieri", NOW),
            Err(PairTokenError::WrongSite { .. })
        ));

        // Tampered: another user, a later expiry, each re-encoded.
        let (payload, tag) = token.strip_prefix(PREFIX).and_then(|r| r.split_once('.')).unwrap();
        for changed in [
            PairClaims { user: "admin".into(), ..claims() },
            PairClaims { exp: NOW + MAX_LIFETIME_SECS, ..claims() },
            PairClaims { site: "questura".into(), ..claims() },
        ] {
            let forged = format!("{PREFIX}{}.{tag}", B64.encode(serde_json::to_vec(&changed).unwrap()));
            assert_eq!(verify(&key(1), &forged, "carabinieri", NOW), Err(PairTokenError::BadSignature));
        }
        let mut flipped = B64.decode(tag).unwrap();
        flipped[0] ^= 1;
        let forged = format!("{PREFIX}{payload}.{}", B64.encode(&flipped));
        assert_eq!(verify(&key(1), &forged, "carabinieri", NOW), Err(PairTokenError::BadSignature));
        let truncated = format!("{PREFIX}{payload}.{}", B64.encode(&flipped[..16]));
        assert_eq!(verify(&key(1), &truncated, "carabinieri", NOW), Err(PairTokenError::BadSignature));
    }

    #[test]
    fn each_token_is_a_login_once_and_the_table_stays_bounded() {
        let mut seen = SeenTokens::default();
        assert!(seen.first_use("a", NOW + 10, NOW));
        assert!(!seen.first_use("a", NOW + 10, NOW + 1));
        for i in 0..(MAX_SEEN + 10) {
            seen.first_use(&format!("n{i}"), NOW + 20 + i as u64, NOW + 15);
        }
        assert!(seen.seen.len() <= MAX_SEEN);
        assert!(
            seen.first_use("a", NOW + 10, NOW + 15),
            "expired, forgotten: a replay would be refused by its expiry"
        );
        // Longer keys than HMAC's block are hashed, not cut.
        let long_a = PairKey::new(&[1; 100]).unwrap();
        let long_b = PairKey::new(&[[1; 99].as_slice(), &[2]].concat()).unwrap();
        let token = issue(&long_a, &claims());
        assert_eq!(verify(&long_b, &token, "carabinieri", NOW), Err(PairTokenError::BadSignature));
        assert!(verify(&long_a, &token, "carabinieri", NOW).is_ok());
    }

    #[test]
    fn malformed_tokens_are_refused_without_a_panic() {
        for bad in ["", "ppt1.", "ppt1..", "ppt1.a.b", "ppt1.!!!.???", "bearer", &"ppt1.".repeat(400)] {
            assert!(verify(&key(1), bad, "carabinieri", NOW).is_err(), "{bad:?}");
        }
        // Signed but not claims (a MAC of the right key over other bytes).
        let payload = B64.encode(b"{\"site\":\"carabinieri\"}");
        let tag = B64.encode(key(1).mac(&payload).finalize().into_bytes());
        assert_eq!(
            verify(&key(1), &format!("{PREFIX}{payload}.{tag}"), "carabinieri", NOW),
            Err(PairTokenError::Malformed)
        );
        // Signed with a life longer than any relay gives.
        let long = issue(&key(1), &PairClaims { exp: NOW + MAX_LIFETIME_SECS + 1, ..claims() });
        assert_eq!(verify(&key(1), &long, "carabinieri", NOW), Err(PairTokenError::Malformed));
        assert!(PairKey::new(&[0; 31]).is_none(), "a key shorter than 32 bytes");
        assert_eq!(format!("{:?}", key(7)), "PairKey(32 bytes)", "the key never printed");
    }
}
