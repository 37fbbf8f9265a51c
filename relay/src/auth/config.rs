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
