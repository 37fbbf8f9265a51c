//! The files on disk: rotated file names, the live file opened for
//! appending (0600), and reading a file's first and last lines and digest.

use sha2::{Digest, Sha256};
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use super::record::LineInfo;
pub(super) fn first_line(path: &Path) -> std::io::Result<Option<LineInfo>> {
    let mut line = String::new();
    BufReader::new(File::open(path)?).read_line(&mut line)?;
    Ok(LineInfo::parse(line.trim_end()))
}

pub(super) fn last_line(path: &Path) -> std::io::Result<Option<LineInfo>> {
    let mut f = File::open(path)?;
    let len = f.seek(SeekFrom::End(0))?;
    let start = len.saturating_sub(64 * 1024);
    f.seek(SeekFrom::Start(start))?;
    let mut tail = String::new();
    std::io::Read::read_to_string(&mut f, &mut tail)?;
    Ok(tail.lines().rev().find(|l| !l.trim().is_empty()).and_then(LineInfo::parse))
}

pub(super) fn file_sha256(path: &Path) -> std::io::Result<String> {
    let mut hasher = Sha256::new();
    std::io::copy(&mut File::open(path)?, &mut hasher)?;
    Ok(hex::encode(hasher.finalize()))
}

/// Opens the live file for appending, readable by the node's user only
/// (0600): created so, and an existing file made so (the audit names
/// viewers, sites and client addresses). Rotated files keep the mode.
pub(super) fn open_append(path: &Path) -> std::io::Result<File> {
    let mut opts = OpenOptions::new();
    opts.create(true).append(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        opts.mode(0o600);
        let file = opts.open(path)?;
        if file.metadata()?.permissions().mode() & 0o077 != 0 {
            file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
        }
        Ok(file)
    }
    #[cfg(not(unix))]
    opts.open(path)
}

/// `audit.log.N`.
pub fn rotated(path: &Path, n: usize) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(format!(".{n}"));
    PathBuf::from(s)
}

/// The live file and its rotated predecessors, oldest first, for `verify`.
pub fn chain_files(path: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = (1..).map(|n| rotated(path, n)).take_while(|p| p.exists()).collect();
    files.reverse();
    files.push(path.to_owned());
    files
}

/// A rotated file (`audit.log.N`): its first and last lines, `None` when
/// they cannot be read (retention then stops at it rather than guess).
#[derive(Debug, Clone)]
pub(super) struct RotatedFile {
    pub(super) first: Option<LineInfo>,
    pub(super) last: Option<LineInfo>,
    /// Its deletion is recorded but the file could not be removed yet:
    /// the next try removes it without a second record.
    pub(super) recorded: bool,
}

impl RotatedFile {
    pub(super) fn read(path: &Path) -> Self {
        Self { first: first_line(path).ok().flatten(), last: last_line(path).ok().flatten(), recorded: false }
    }
}

/// The end of the most recent deletion line: `(last_hash, last_seq,
/// start_accounted)`, where the next file must start for the chain before
/// it to stay accounted for.
pub(super) type DeletionEnd = (String, u64, bool);
