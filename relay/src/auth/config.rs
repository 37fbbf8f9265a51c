//! `[[viewer]]` and `[[token]]`: the relay config's accounts, as written.

use ponte_proto::media::Quality;
use serde::{Deserialize, Serialize};

/// `[[viewer]]`: a person (browser or RTSP client) with a password.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ViewerConfig {
    /// Login name.
    pub user: String,
    /// argon2id PHC string, from `ponte-relay passwd`.
    pub password_hash: String,
    /// Selectors (`*`, `camera:`, `device:`, `zone:`, `type:`) over the site's
    /// catalog; absent = every camera the site may see, `[]` = none.
    #[serde(default)]
    pub cameras: Option<Vec<String>>,
    /// `main` (default) or `sub`: the best quality this viewer may watch.
    #[serde(default)]
    pub max_quality: Option<Quality>,
    /// MD5(`user:ponte:password`) in hex, only for RTSP clients that insist
    /// on Digest; from `ponte-relay passwd --user NAME --rtsp-digest`.
    #[serde(default)]
    pub rtsp_digest_ha1: Option<String>,
    /// May steer PTZ cameras (only those the site itself may steer); default false.
    #[serde(default)]
    pub ptz: bool,
}

impl ViewerConfig {
    /// Viewer `user` with an argon2id `password_hash`: every camera of the
    /// site, main quality, no RTSP Digest, no PTZ.
    pub fn new(user: impl Into<String>, password_hash: impl Into<String>) -> Self {
        Self {
            user: user.into(),
            password_hash: password_hash.into(),
            cameras: None,
            max_quality: None,
            rtsp_digest_ha1: None,
            ptz: false,
        }
    }
}

/// `[[token]]`: a machine client (VMS, script) with a bearer token.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    /// Name in logs and audit.
    pub name: String,
    /// Hex SHA-256 of the token, from `ponte-relay token`.
    pub token_sha256: String,
    /// As for viewers.
    #[serde(default)]
    pub cameras: Option<Vec<String>>,
    /// As for viewers.
    #[serde(default)]
    pub max_quality: Option<Quality>,
    /// As for viewers.
    #[serde(default)]
    pub ptz: bool,
}

impl TokenConfig {
    /// Token `name` with the hex SHA-256 of its secret: every camera of the
    /// site, main quality, no PTZ.
    pub fn new(name: impl Into<String>, token_sha256: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            token_sha256: token_sha256.into(),
            cameras: None,
            max_quality: None,
            ptz: false,
        }
    }
}
