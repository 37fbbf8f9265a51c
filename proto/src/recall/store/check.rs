//! `ponte-agent recordings check DIR`: a read-only walk of every segment,
//! every record's CRC and body checked, that says what `Store::open` would
//! repair and what it cannot.

use super::index::{self, GopEntry};
use super::layout;
use super::record::RecordError;
use super::scan::{self, Depth};
use crate::hub::TrackKey;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

/// What [`check`] found under a store's root.
#[derive(Debug, Clone)]
pub struct CheckReport {
    /// The root checked.
    pub root: PathBuf,
    /// Every track found, in key order.
    pub tracks: Vec<TrackCheck>,
    /// Every problem found, by file and offset.
    pub problems: Vec<Problem>,
}

impl CheckReport {
    /// True when no problem was found.
    pub fn is_clean(&self) -> bool {
        self.problems.is_empty()
    }
}

/// One track's recordings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrackCheck {
    /// The track.
    pub key: TrackKey,
    /// Segment files.
    pub segments: usize,
    /// GOP records that passed.
    pub gops: u64,
    /// Bytes of its segment files.
    pub bytes: u64,
    /// Recorded ranges, Unix ms.
    pub ranges: Vec<(u64, u64)>,
}

/// A problem in one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The file.
    pub path: PathBuf,
    /// Offset of the record at fault, when there is one.
    pub offset: Option<u64>,
    /// What is wrong.
    pub kind: ProblemKind,
}

/// What is wrong with a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProblemKind {
    /// The records end here: a torn write or damage that hides the framing.
    /// `Store::open` cuts the file here.
    Tail {
        /// Why the walk stopped.
        error: RecordError,
        /// Bytes from here to the end of the file.
        bytes: u64,
    },
    /// A record that is framed but whose content is damaged; the walk went
    /// on after it. `Store::open` cuts the file here if it is the newest
    /// segment of its track; readers skip it otherwise.
    Record(RecordError),
    /// A GOP that starts before the one before it (the agent's clock stepped back).
    OutOfOrder {
        /// Its keyframe time.
        wall_ms: u64,
        /// The previous GOP's keyframe time.
        previous_ms: u64,
    },
    /// The file or directory could not be read.
    Unreadable(String),
}

/// Checks every segment under `root`; never writes.
pub fn check(root: &Path) -> io::Result<CheckReport> {
    let mut report = CheckReport { root: root.to_owned(), tracks: Vec::new(), problems: Vec::new() };
    for (key, segments) in layout::list(root)? {
        let mut track = TrackCheck { key, segments: segments.len(), gops: 0, bytes: 0, ranges: Vec::new() };
        let mut all: Vec<GopEntry> = Vec::new();
        for seg in segments {
            let found = match scan::scan(&seg.path, Depth::Full, true) {
                Ok(found) => found,
                Err(e) => {
                    report.problems.push(Problem {
                        path: seg.path,
                        offset: None,
                        kind: ProblemKind::Unreadable(e.to_string()),
                    });
                    continue;
                }
            };
            track.bytes += found.file_len;
            for (offset, error) in found.problems {
                let kind = match error {
                    RecordError::Crc { .. } | RecordError::Body(_) => ProblemKind::Record(error),
                    _ => ProblemKind::Tail { error, bytes: found.file_len.saturating_sub(offset) },
                };
                report.problems.push(Problem { path: seg.path.clone(), offset: Some(offset), kind });
            }
            for g in found.gops {
                if let Some(prev) = all.last().filter(|p| g.wall_ms < p.wall_ms) {
                    report.problems.push(Problem {
                        path: seg.path.clone(),
                        offset: Some(g.offset),
                        kind: ProblemKind::OutOfOrder { wall_ms: g.wall_ms, previous_ms: prev.wall_ms },
                    });
                }
                all.push(g);
            }
        }
        track.gops = all.len() as u64;
        track.ranges = index::ranges(all.iter());
        report.tracks.push(track);
    }
    Ok(report)
}

/// Unix ms as RFC 3339 (UTC), or the number when out of range.
pub fn fmt_ms(ms: u64) -> String {
    let formatted = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok());
    formatted.unwrap_or_else(|| format!("{ms} ms"))
}

impl fmt::Display for CheckReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.tracks.is_empty() {
            writeln!(f, "{}: no recordings", self.root.display())?;
        }
        for t in &self.tracks {
            write!(f, "{}: {} segments, {} GOPs, {} bytes", t.key, t.segments, t.gops, t.bytes)?;
            let ranges: Vec<String> =
                t.ranges.iter().map(|&(a, b)| format!("{} .. {}", fmt_ms(a), fmt_ms(b))).collect();
            if ranges.is_empty() {
                writeln!(f, ", nothing recorded")?;
            } else {
                writeln!(f, ", recorded {}", ranges.join(", "))?;
            }
        }
        for p in &self.problems {
            writeln!(f, "{p}")?;
        }
        if self.is_clean() {
            writeln!(f, "clean")
        } else {
            writeln!(f, "{} problems", self.problems.len())
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "problem: {}", self.path.display())?;
        if let Some(offset) = self.offset {
            write!(f, " at offset {offset}")?;
        }
        match &self.kind {
            ProblemKind::Tail { error, bytes } => {
                write!(f, ": {error}; the last {bytes} bytes are not readable (the agent cuts them at start)")
            }
            ProblemKind::Record(error) => write!(f, ": {error}; this GOP is skipped on playback"),
            ProblemKind::OutOfOrder { wall_ms, previous_ms } => write!(
                f,
                ": GOP at {} starts before the previous one at {} (clock stepped back?)",
                fmt_ms(*wall_ms),
                fmt_ms(*previous_ms)
            ),
            ProblemKind::Unreadable(e) => write!(f, ": unreadable: {e}"),
        }
    }
}
