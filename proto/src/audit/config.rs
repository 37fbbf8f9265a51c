//! `[audit]` of either node: the file, its rotation size and retention
//! keys, checked and opened as `run` does.

use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::SystemTime;

use super::{AuditLog, Retention};
/// Which node an [`AuditSection`] belongs to (its default file name).
pub const AGENT: u8 = 0;
/// See [`AGENT`].
pub const RELAY: u8 = 1;

/// `[audit]` of either node: where the audit goes, when it rotates and how
/// long rotated files are kept (both limits 0 by default: nothing is ever
/// deleted). `NODE` ([`AGENT`] or [`RELAY`]) picks the default file.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditSection<const NODE: u8> {
    /// Audit file (JSON lines, hash-chained).
    #[serde(default = "default_audit_path::<NODE>")]
    pub path: PathBuf,
    /// Rotate the file past this size, in MiB.
    #[serde(default = "default_audit_mb")]
    pub max_mb: u64,
    /// Delete a rotated file this many days after its last line; 0 = never.
    #[serde(default)]
    pub keep_days: u64,
    /// Keep at most this many rotated files; 0 = no limit.
    #[serde(default)]
    pub keep_files: u64,
    /// Send the head of this log to each peer (agent ↔ relay) this often,
    /// in seconds, and at shutdown; the peer records it as an `anchor` line.
    #[serde(default = "default_anchor_every_secs")]
    pub anchor_every_secs: u64,
}

impl<const NODE: u8> Default for AuditSection<NODE> {
    fn default() -> Self {
        Self {
            path: default_audit_path::<NODE>(),
            max_mb: default_audit_mb(),
            keep_days: 0,
            keep_files: 0,
            anchor_every_secs: default_anchor_every_secs(),
        }
    }
}

impl<const NODE: u8> AuditSection<NODE> {
    /// What the log keeps.
    pub fn retention(&self) -> Retention {
        Retention { keep_days: self.keep_days, keep_files: self.keep_files }
    }

    /// How often the head of this log goes to each peer.
    pub fn anchor_every(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.anchor_every_secs)
    }

    /// Opens the log as `run` does, with the clock of the host; the error
    /// names the file and the key.
    pub fn open(&self, node: &str) -> Result<AuditLog, String> {
        AuditLog::open_with(&self.path, node, self.max_mb << 20, self.retention(), Arc::new(SystemTime::now))
            .map_err(|e| format!("opening the audit log `{}` (`audit.path`): {e:#}", self.path.display()))
    }

    /// Checks the keys; the error names the key and the fix.
    pub fn check(&self) -> Result<(), String> {
        if self.max_mb == 0 || self.max_mb > 1 << 20 {
            return Err(format!(
                "`audit.max_mb` = {}: expected 1 to {} MiB (64 is the default)",
                self.max_mb,
                1u64 << 20
            ));
        }
        if self.keep_days > 100 * 366 {
            return Err(format!(
                "`audit.keep_days` = {}: at most {} (0 keeps files for ever)",
                self.keep_days,
                100 * 366
            ));
        }
        if self.anchor_every_secs == 0 || self.anchor_every_secs > MAX_ANCHOR_EVERY_SECS {
            return Err(format!(
                "`audit.anchor_every_secs` = {}: expected 1 to {MAX_ANCHOR_EVERY_SECS} seconds (300 is \
                 the default; the peer's log catches a cut tail only up to its last anchor)",
                self.anchor_every_secs
            ));
        }
        Ok(())
    }
}

/// Longest `audit.anchor_every_secs`: a day.
const MAX_ANCHOR_EVERY_SECS: u64 = 24 * 3600;

fn default_anchor_every_secs() -> u64 {
    300
}

fn default_audit_path<const NODE: u8>() -> PathBuf {
    PathBuf::from(if NODE == RELAY {
        "/var/lib/ponte/relay-audit.log"
    } else {
        "/var/lib/ponte/agent-audit.log"
    })
}

fn default_audit_mb() -> u64 {
    64
}
