//! Tamper-evident audit log: JSON lines, each carrying the hash of the line
//! before it (a hash chain) and its own hash. Editing, inserting or removing
//! a line breaks the chain at that line; rotation carries the chain over.
//!
//! Retention is explicit (`[audit] keep_days`, `keep_files`; both 0 by
//! default: nothing is ever deleted). A rotated file is deleted only from
//! the old end of the chain, and only after an `audit-file-deleted` line
//! naming it (its lines, first and last time, SHA-256 and the hash of its
//! last line) has been written: `verify` accepts a chain that starts after
//! the genesis only when such a line anchors its first line, so removing
//! old files by hand is still detected. Files due for deletion within
//! [`DELETION_NOTICE`] are reported by [`AuditLog::retention_status`] so
//! they can be shipped off the host first.
//!
//! One concern per file: the line format and its hash chain (`record`),
//! checking a chain (`verify`), the writer and its rotation (`log`),
//! retention of rotated files (`retention`), the files on disk (`files`),
//! the `[audit]` config section (`config`), checking a log against the
//! anchors its peer recorded (`anchors`) and the `audit verify` command
//! (`cli`).
//!
//! Both agencies hold the audit: agent and relay send each other the head
//! of their chain every `audit.anchor_every_secs` (and at shutdown), and
//! each writes the other's head into its own chain as an `anchor` line;
//! `audit verify --anchors OTHER.log THIS.log` then catches a cut or
//! rewritten tail of THIS.log that its own chain cannot show.

mod anchors;
mod cli;
mod config;
mod files;
mod log;
mod record;
mod retention;
mod verify;

#[cfg(test)]
mod tests;

use std::time::Duration;

pub use anchors::{
    compare as compare_anchors, verify_anchors, AnchorBreak, AnchorSeen, AnchorsChecked, KeptLine,
};
pub use cli::verify_cli;
pub use config::{AuditSection, AGENT, RELAY};
pub use files::{chain_files, rotated};
pub use log::{AuditLog, Clock};
pub use record::{chain_line, now_rfc3339, rfc3339, AnchoredHead, AuditRecord, DeletedFile};
pub use retention::{DueFile, Retention, RetentionStatus};
pub use verify::{verify, verify_with, BrokenLine};
/// Hash linking the first line of a brand-new log.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";
/// Action of the line written before retention deletes a rotated file.
pub const ACTION_FILE_DELETED: &str = "audit-file-deleted";
/// Action of the line recording the head of a peer's chain.
pub const ACTION_ANCHOR: &str = "anchor";
/// Files that retention will delete within this time are reported as due.
pub const DELETION_NOTICE: Duration = Duration::from_secs(24 * 3600);
