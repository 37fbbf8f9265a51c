//! Browser sessions on disk, so a relay restart (every upgrade) does not log
//! every operator out. The file holds, per session, the SHA-256 of its
//! cookie (never the cookie: a copy of the file logs nobody in), who it is
//! (account or token name, and the fingerprint of the credentials it proved,
//! so a changed password or a removed account does not come back) and when
//! it was last used (idle expiry goes on across the restart). Written whole
//! to a temporary file (mode 0600), synced, then renamed over the old one.

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// File name of the sessions under the relay's state directory.
pub const FILE_NAME: &str = "relay-sessions.json";
/// Format version written and accepted.
const VERSION: u32 = 1;

/// One browser session as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoredSession {
    /// Hex SHA-256 of the cookie value.
    pub cookie_sha256: String,
    /// `account` or `token`.
    pub kind: super::ViewerKind,
    /// Account user or token name.
    pub name: String,
    /// Hex fingerprint of the credentials the login proved.
    pub credential: String,
    /// Last use, seconds since the Unix epoch.
    pub last_seen_unix: u64,
    /// Login, seconds since the Unix epoch (absent in files of older relays).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_unix: Option<u64>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    version: u32,
    sessions: Vec<StoredSession>,
}

/// The stored sessions; none when the file does not exist (first start).
pub fn load(path: &Path) -> Result<Vec<StoredSession>> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("reading {} (`relay.state_dir`)", path.display())),
    };
    let file: File = serde_json::from_slice(&bytes).with_context(|| {
        format!("{}: not a sessions file; delete it to start with no sessions", path.display())
    })?;
    if file.version != VERSION {
        bail!(
            "{}: sessions file version {}, this relay reads {VERSION}; delete it to start with no sessions",
            path.display(),
            file.version
        );
    }
    Ok(file.sessions)
}

/// Replaces the file with `sessions`, atomically: a crash leaves the old
/// file or the new one, never half of one.
pub fn save(path: &Path, sessions: &[StoredSession]) -> Result<()> {
    let json = serde_json::to_vec(&File { version: VERSION, sessions: sessions.to_vec() })?;
    let tmp = path.with_extension("json.tmp");
    let written = (|| -> std::io::Result<()> {
        let mut f =
            std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp)?;
        f.write_all(&json)?;
        f.sync_all()
    })();
    written.with_context(|| {
        format!("writing {} (check `relay.state_dir` and its permissions)", tmp.display())
    })?;
    std::fs::rename(&tmp, path)
        .with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))?;
    // The rename itself must reach the disk: after a power cut the old
    // file could otherwise come back, with a session logged out since.
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .with_context(|| format!("syncing directory {}", dir.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saved_sessions_load_back_and_the_file_is_private() {
        let dir = std::env::temp_dir().join(format!("ponte-session-store-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(FILE_NAME);
        assert_eq!(load(&path).unwrap(), Vec::new(), "no file: no sessions");
        let s = StoredSession {
            cookie_sha256: "ab".repeat(32),
            created_unix: None,
            kind: crate::auth::ViewerKind::Account,
            name: "anna".into(),
            credential: "0011223344556677".into(),
            last_seen_unix: 1_800_000_000,
        };
        save(&path, std::slice::from_ref(&s)).unwrap();
        assert_eq!(load(&path).unwrap(), vec![s]);
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        std::fs::write(&path, "{ not json").unwrap();
        assert!(load(&path).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
