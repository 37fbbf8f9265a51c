//! Retention of rotated files: which are due (by age or count), recording
//! each deletion in the chain before removing the file, and the status
//! that warns before files go.

use serde::{Deserialize, Serialize};
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use super::files::{file_sha256, DeletionEnd};
use super::log::Writer;
use super::record::Fields;
use super::{rotated, AuditLog, AuditRecord, DeletedFile, ACTION_FILE_DELETED, DELETION_NOTICE, GENESIS};
/// Under `keep_files`, the oldest file is reported due once the live file
/// is this full (percent): the next rotation deletes it.
pub(super) const DUE_AT_FILL_PERCENT: u64 = 90;

/// How long rotated files are kept; 0 means no limit on that axis, and
/// both 0 (the default) keeps every file for ever.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Retention {
    /// Delete a rotated file once its last line is this many days old.
    pub keep_days: u64,
    /// Keep at most this many rotated files (the live file not counted).
    pub keep_files: u64,
}

impl Retention {
    /// True when retention never deletes anything.
    pub fn keeps_for_ever(&self) -> bool {
        self.keep_days == 0 && self.keep_files == 0
    }

    /// One line for logs and status: what is kept.
    pub fn describe(&self) -> String {
        match (self.keep_days, self.keep_files) {
            (0, 0) => "kept for ever (`audit.keep_days` = 0, `audit.keep_files` = 0)".into(),
            (d, 0) => format!("rotated files deleted {d} days after their last line (`audit.keep_days`)"),
            (0, f) => format!("at most {f} rotated files kept (`audit.keep_files`)"),
            (d, f) => format!(
                "rotated files deleted {d} days after their last line (`audit.keep_days`), \
                 and past {f} files (`audit.keep_files`)"
            ),
        }
    }
}

/// The most recent `audit-file-deleted` line in `files` (oldest first).
pub(super) fn last_deletion_in(files: &[PathBuf]) -> Option<DeletionEnd> {
    let mut found = None;
    for path in files {
        let Ok(f) = File::open(path) else { continue };
        for line in BufReader::new(f).lines().map_while(Result::ok) {
            if !line.contains(ACTION_FILE_DELETED) {
                continue;
            }
            let Ok(fields) = serde_json::from_str::<Fields>(&line) else { continue };
            if let Some(d) = fields.deleted.filter(|_| fields.action == ACTION_FILE_DELETED) {
                found = Some((d.last_hash, d.last_seq, d.start_accounted));
            }
        }
    }
    found
}

/// Unix seconds of an RFC 3339 time (a line's `time`).
pub(super) fn unix_of(time: &str) -> Option<i64> {
    time::OffsetDateTime::parse(time, &time::format_description::well_known::Rfc3339)
        .ok()
        .map(|t| t.unix_timestamp())
}

pub(super) fn unix_now(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

/// A rotated file that retention will delete soon.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DueFile {
    /// Its name now (`audit.log.30`).
    pub file: String,
    /// Time of its first line.
    pub first_time: String,
    /// Time of its last line.
    pub last_time: String,
    /// Seconds until it is deleted; `None`: at the next rotation (`keep_files`).
    pub deleted_in_secs: Option<u64>,
}

/// The audit files and their retention, for the status document.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetentionStatus {
    /// The live file.
    pub path: String,
    /// What is kept, in words naming the keys.
    pub retention: String,
    /// `audit.keep_days` (0: no age limit).
    pub keep_days: u64,
    /// `audit.keep_files` (0: no count limit).
    pub keep_files: u64,
    /// Rotated files beside the live one.
    pub rotated_files: u64,
    /// Seconds since the oldest line kept on this host was written.
    pub oldest_line_age_secs: u64,
    /// Files retention deletes within 24 hours (or at the next rotation):
    /// ship them off the host before.
    pub due_for_deletion: Vec<DueFile>,
    /// Files deleted by retention since start (each recorded in the log).
    pub deleted_since_start: u64,
    /// Why retention is stuck, if it is.
    pub blocked: Option<String>,
}

impl AuditLog {
    /// Deletes the rotated files retention no longer keeps, oldest first,
    /// each after an `audit-file-deleted` line naming it. Writes call it;
    /// call it periodically too, so a quiet log is trimmed on time.
    pub fn enforce_retention(&self) {
        let mut w = self.w.lock().unwrap_or_else(|e| e.into_inner());
        self.enforce(&mut w);
    }

    /// Why the oldest rotated file is due now, if it is; `Err` when its
    /// age cannot be told (retention then stops rather than guess).
    fn due_now(&self, w: &Writer, now: i64) -> Result<Option<String>, String> {
        let n = w.rotated.len() as u64;
        let keep = self.retention;
        if keep.keep_files > 0 && n > keep.keep_files {
            return Ok(Some(format!("`audit.keep_files` = {} rotated files are kept", keep.keep_files)));
        }
        let Some(oldest) = w.rotated.last().filter(|_| keep.keep_days > 0) else { return Ok(None) };
        let path = rotated(&self.path, w.rotated.len());
        let last = oldest.last.as_ref().ok_or_else(|| {
            format!(
                "{}: its last line cannot be read, so its age is unknown; retention stops at it: \
                 move it off the host by hand",
                path.display()
            )
        })?;
        let time = unix_of(&last.time).ok_or_else(|| {
            format!(
                "{}: its last line's time {:?} is not RFC 3339; retention stops at it",
                path.display(),
                last.time
            )
        })?;
        Ok((now - time >= (keep.keep_days * 86_400) as i64)
            .then(|| format!("its last line is older than `audit.keep_days` = {} days", keep.keep_days)))
    }

    pub(super) fn enforce(&self, w: &mut Writer) {
        if self.retention.keeps_for_ever() {
            return;
        }
        let now = unix_now((self.clock)());
        // At most the files there now: recording a deletion may rotate, and
        // a tiny `max_bytes` must not turn that into a loop.
        for _ in 0..w.rotated.len() + 4 {
            let why = match self.due_now(w, now) {
                Ok(Some(why)) => why,
                Ok(None) => break,
                Err(blocked) => {
                    w.blocked = Some(blocked);
                    break;
                }
            };
            let Some(oldest) = w.rotated.last().cloned() else { break };
            let path = rotated(&self.path, w.rotated.len());
            let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            let (Some(first), Some(last)) = (oldest.first, oldest.last) else {
                w.blocked = Some(format!(
                    "{}: its first or last line cannot be read, so its deletion cannot be recorded; \
                     retention stops at it: move it off the host by hand",
                    path.display()
                ));
                break;
            };
            if oldest.recorded {
                // Recorded on an earlier try whose removal failed.
                if let Err(e) = std::fs::remove_file(&path) {
                    w.blocked =
                        Some(format!("cannot delete {} (its deletion is recorded): {e}", path.display()));
                    break;
                }
                w.rotated.pop();
                w.deleted += 1;
                w.blocked = None;
                continue;
            }
            if w.last_deletion.is_none() {
                let mut files: Vec<PathBuf> =
                    (1..=w.rotated.len()).rev().map(|n| rotated(&self.path, n)).collect();
                files.push(self.path.clone());
                w.last_deletion = Some(last_deletion_in(&files));
            }
            let start_accounted = (first.seq == 0 && first.prev == GENESIS)
                || matches!(&w.last_deletion, Some(Some((hash, seq, true))) if *hash == first.prev && seq + 1 == first.seq);
            let sha256 = match file_sha256(&path) {
                Ok(h) => h,
                Err(e) => {
                    w.blocked =
                        Some(format!("{}: cannot read it to record its deletion: {e}", path.display()));
                    break;
                }
            };
            let deleted = DeletedFile {
                file: name.clone(),
                first_seq: first.seq,
                last_seq: last.seq,
                first_time: first.time,
                last_time: last.time,
                sha256,
                last_hash: last.hash,
                first_prev: first.prev,
                start_accounted,
            };
            let gap = if start_accounted {
                String::new()
            } else {
                format!(
                    "; the lines before it (seq < {}) were already missing, removed without a \
                     deletion line (by hand, or by an older ponte)",
                    deleted.first_seq
                )
            };
            let record = AuditRecord {
                action: ACTION_FILE_DELETED.into(),
                outcome: "deleted".into(),
                reason: Some(format!(
                    "{name} deleted by retention: {why}; it held lines {} to {}, {} to {}, sha256 {}{gap}",
                    deleted.first_seq,
                    deleted.last_seq,
                    deleted.first_time,
                    deleted.last_time,
                    deleted.sha256
                )),
                deleted: Some(deleted.clone()),
                ..Default::default()
            };
            // No record, no deletion: the chain must stay verifiable.
            if let Err(e) = self.append(w, record) {
                self.errors.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                w.blocked = Some(format!("cannot record the deletion of {}: {e}", path.display()));
                break;
            }
            w.last_deletion = Some(Some((deleted.last_hash.clone(), deleted.last_seq, start_accounted)));
            // Recording may have rotated: the oldest file is the last one still.
            let path = rotated(&self.path, w.rotated.len());
            if let Err(e) = std::fs::remove_file(&path) {
                w.blocked = Some(format!("cannot delete {} (its deletion is recorded): {e}", path.display()));
                if let Some(oldest) = w.rotated.last_mut() {
                    oldest.recorded = true;
                }
                break;
            }
            w.rotated.pop();
            w.deleted += 1;
            w.blocked = None;
            tracing::warn!(
                file = %path.display(),
                first_seq = deleted.first_seq,
                last_seq = deleted.last_seq,
                first_time = %deleted.first_time,
                last_time = %deleted.last_time,
                sha256 = %deleted.sha256,
                start_accounted,
                "audit file deleted by retention: {why}"
            );
        }
    }

    /// The files, their retention and which are due for deletion soon.
    pub fn retention_status(&self) -> RetentionStatus {
        let w = self.w.lock().unwrap_or_else(|e| e.into_inner());
        let now = unix_now((self.clock)());
        let keep = self.retention;
        let n = w.rotated.len();
        let notice = DELETION_NOTICE.as_secs() as i64;
        let mut due = Vec::new();
        for (i, f) in w.rotated.iter().enumerate().rev() {
            let (Some(first), Some(last)) = (&f.first, &f.last) else { break };
            let by_count = keep.keep_files > 0
                && (i as u64 + 1 > keep.keep_files
                    || (i as u64 + 1 == keep.keep_files
                        && w.size * 100 >= self.max_bytes * DUE_AT_FILL_PERCENT));
            let by_age = (keep.keep_days > 0)
                .then(|| unix_of(&last.time))
                .flatten()
                .map(|t| t + (keep.keep_days * 86_400) as i64 - now)
                .filter(|left| *left <= notice);
            if !by_count && by_age.is_none() {
                break;
            }
            due.push(DueFile {
                file: rotated(&self.path, i + 1).display().to_string(),
                first_time: first.time.clone(),
                last_time: last.time.clone(),
                deleted_in_secs: if by_count { None } else { by_age.map(|s| s.max(0) as u64) },
            });
        }
        let oldest = w
            .rotated
            .last()
            .and_then(|f| f.first.as_ref())
            .or(w.live.as_ref().map(|(first, _)| first))
            .and_then(|l| unix_of(&l.time));
        RetentionStatus {
            path: self.path.display().to_string(),
            retention: keep.describe(),
            keep_days: keep.keep_days,
            keep_files: keep.keep_files,
            rotated_files: n as u64,
            oldest_line_age_secs: oldest.map_or(0, |t| (now - t).max(0) as u64),
            due_for_deletion: due,
            deleted_since_start: w.deleted,
            blocked: w.blocked.clone(),
        }
    }
}
