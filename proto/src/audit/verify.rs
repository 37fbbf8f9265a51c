//! Checking a chain: every line's hash, the links between lines, the
//! sequence, and that the chain starts at the genesis or where a deletion
//! line accounts for the files before it.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;

use super::record::check_line;
use super::{ACTION_FILE_DELETED, GENESIS};
/// Where a chain is broken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{line}: {reason}")]
pub struct BrokenLine {
    /// File holding the line.
    pub file: String,
    /// 1-based line number.
    pub line: usize,
    /// What is wrong.
    pub reason: String,
}

/// Verifies files in chronological order (oldest rotated file first).
/// Returns the number of lines checked, or the first broken line.
///
/// The chain must start at the genesis (`seq` 0), or where an
/// `audit-file-deleted` line in these files says retention deleted the file
/// before it; anything else means older files were removed without a trace.
pub fn verify(files: &[PathBuf]) -> Result<usize, BrokenLine> {
    verify_with(files, false)
}

/// [`verify`]; with `allow_missing_start`, a chain starting after lines
/// that are not there and that no deletion line accounts for is accepted
/// (a part of an archive, or logs rotated by a ponte that deleted silently).
pub fn verify_with(files: &[PathBuf], allow_missing_start: bool) -> Result<usize, BrokenLine> {
    let mut prev: Option<String> = None;
    let mut last_seq: Option<u64> = None;
    let mut count = 0;
    // Where the chain starts when not at the genesis: (file, prev, seq).
    let mut start: Option<(String, String, u64)> = None;
    let mut anchors: Vec<(String, u64, bool)> = Vec::new();
    for path in files {
        let file_name = path.display().to_string();
        let broken = |line: usize, reason: String| BrokenLine { file: file_name.clone(), line, reason };
        let f = File::open(path).map_err(|e| broken(0, format!("cannot open: {e}")))?;
        for (i, line) in BufReader::new(f).lines().enumerate() {
            let line = line.map_err(|e| broken(i + 1, format!("cannot read: {e}")))?;
            let fields = check_line(&line, prev.as_deref()).map_err(|r| broken(i + 1, r))?;
            if let Some(last) = last_seq {
                if fields.seq != last + 1 {
                    return Err(broken(
                        i + 1,
                        format!("sequence jumps from {last} to {}: lines are missing", fields.seq),
                    ));
                }
            } else if fields.seq != 0 || fields.prev != GENESIS {
                start = Some((file_name.clone(), fields.prev.clone(), fields.seq));
            }
            if let Some(d) = fields.deleted.filter(|_| fields.action == ACTION_FILE_DELETED) {
                anchors.push((d.last_hash, d.last_seq, d.start_accounted));
            }
            last_seq = Some(fields.seq);
            prev = Some(fields.hash);
            count += 1;
        }
    }
    if let Some((file, prev, seq)) = start {
        let anchor = anchors.iter().find(|(hash, last, _)| *hash == prev && last + 1 == seq);
        if let Some((_, _, false)) = anchor.filter(|_| !allow_missing_start) {
            return Err(BrokenLine {
                file,
                line: 1,
                reason: format!(
                    "the chain starts at seq {seq}, where retention deleted the file before it, but \
                     the `{ACTION_FILE_DELETED}` line says lines before that file were already \
                     missing when it was deleted: older audit files had been removed by hand (or \
                     by an older ponte, which deleted past 30 rotated files silently). Give the \
                     older files too, oldest first, or pass `--allow-missing-start` to check only \
                     these"
                ),
            });
        }
        if anchor.is_none() && !allow_missing_start {
            return Err(BrokenLine {
                file,
                line: 1,
                reason: format!(
                    "the chain starts at seq {seq}, after lines that are not here, and no \
                     `{ACTION_FILE_DELETED}` line in these files records their deletion: older audit \
                     files were removed by hand (or by an older ponte, which deleted past 30 \
                     rotated files silently). Give the older files too, oldest first, or pass \
                     `--allow-missing-start` to check only these"
                ),
            });
        }
    }
    Ok(count)
}
