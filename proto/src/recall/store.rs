//! Recording store (issue 21): the agent records every camera as GOP-aligned
//! segment files under one root, `ROOT/<camera>/<quality>/<start_ms>.pseg`,
//! each a run of self-checking records, one per GOP (format in `record`).
//!
//! - Crash safety: a record is assembled in memory and written with one
//!   `write_all` at the segment's end, and the index learns of it only once
//!   written. A `kill -9` loses at most the GOP being written (the page cache
//!   keeps the rest), so segments are `sync_data`'d only when closed, every
//!   `segment_secs`. At [`Store::open`] the newest segment of each track is
//!   read whole, CRCs checked, and a torn tail cut off ([`Repair`]); older
//!   segments, synced at close, are walked header by header: a month of one
//!   camera at 4 Mbit/s is 1.3 TB and ~2.6 M GOPs, an hour to read at
//!   300 MB/s against seconds for the headers. `check` reads everything.
//! - Space: [`StoreLimits`] bounds age (`expire`) and bytes (`append`
//!   deletes the oldest closed segments of the whole store first); a full
//!   disk deletes the oldest closed segment and retries, then gives
//!   [`StoreError::Full`] with the store still consistent.
//! - Sharing: one writer thread per store, readers on other threads. The
//!   index is behind one mutex; appends hold it while writing (one GOP,
//!   page-cache speed), readers hold it only to look up where a GOP is.
//!
//! One concern per file: the record format (`record`), paths (`layout`),
//! walking a file (`scan`), the time index (`index`), reading back
//! (`cursor`) and the read-only check (`check`).

mod check;
mod cursor;
mod index;
mod layout;
pub mod record;
mod scan;

#[cfg(test)]
mod tests;

pub use check::{check, fmt_ms, CheckReport, Problem, ProblemKind, TrackCheck};
pub use cursor::Cursor;
pub use index::{RANGE_GAP_MS, RANGE_JITTER_MS};
pub use layout::{camera_ok, MAX_CAMERA_LEN};
pub use record::{EncodeError, RecordError, MAX_BODY_LEN};

use crate::hub::TrackKey;
use crate::media::CodecConfig;
use crate::recall::RecordedGop;
use cursor::Walk;
use index::{GopEntry, Pos, Segment, TrackIndex};
use scan::Depth;
use std::collections::BTreeMap;
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

/// Bounds of a store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreLimits {
    /// Segments whose last GOP ended longer ago than this are expired; 0 keeps them.
    pub retention_ms: u64,
    /// Bytes the store may hold; 0 for no quota. The segments being written
    /// are never deleted, so the store can go over by those.
    pub max_bytes: u64,
    /// Wall-clock length of a segment before the next one is started.
    pub segment_secs: u64,
}

impl Default for StoreLimits {
    fn default() -> Self {
        Self { retention_ms: 0, max_bytes: 0, segment_secs: 60 }
    }
}

/// Why a GOP was not recorded.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The disk is full and no closed segment is left to delete.
    #[error(
        "recording store {}: disk full with no closed segment left to delete; {key} is not being \
         recorded (live goes on) — free space there or lower the store's max_bytes",
        root.display()
    )]
    Full {
        /// The store's root.
        root: PathBuf,
        /// The track whose GOP was refused.
        key: TrackKey,
    },
    /// The camera id cannot name a directory.
    #[error(
        "camera `{camera}`: its id cannot name a recording directory (letters, digits, `.`, `_`, `-`, \
         at most {MAX_CAMERA_LEN} bytes, not `.` or `..`) — rename the camera"
    )]
    BadCamera {
        /// The id.
        camera: String,
    },
    /// The GOP breaks the record format's limits.
    #[error("{key}: GOP {seq} not recorded: {source}")]
    Unrecordable {
        /// The track.
        key: TrackKey,
        /// The GOP's sequence number.
        seq: u64,
        /// The limit it broke.
        source: EncodeError,
    },
    /// The GOP starts before the track's newest recorded GOP.
    #[error(
        "{key}: GOP at {} not recorded: it starts before the newest recorded GOP at {} \
         — did the agent's clock step back?",
        fmt_ms(*wall_ms),
        fmt_ms(*newest_ms)
    )]
    BackInTime {
        /// The track.
        key: TrackKey,
        /// The GOP's keyframe time.
        wall_ms: u64,
        /// The newest recorded keyframe time.
        newest_ms: u64,
    },
    /// Any other I/O failure, with the file it happened on.
    #[error("recording store: {}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The failure.
        source: io::Error,
    },
}

/// Why a segment was deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RemoveReason {
    /// Older than the retention.
    Retention,
    /// Room for a new GOP under `max_bytes`.
    Quota,
    /// Room for a new GOP on a full disk.
    DiskFull,
}

/// A deleted segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Removed {
    /// Its track.
    pub key: TrackKey,
    /// Its file.
    pub path: PathBuf,
    /// Its bytes.
    pub bytes: u64,
    /// Recorded time it held, Unix ms (first keyframe, last end).
    pub from_ms: u64,
    /// See `from_ms`.
    pub to_ms: u64,
    /// Why.
    pub reason: RemoveReason,
}

/// What an append did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Appended {
    /// The segment written to.
    pub path: PathBuf,
    /// Bytes of the record.
    pub bytes: u64,
    /// Segments deleted to make room.
    pub removed: Vec<Removed>,
}

/// A segment tail cut off at open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Repair {
    /// The segment.
    pub path: PathBuf,
    /// Bytes kept (the end of its last good record).
    pub kept: u64,
    /// Bytes cut.
    pub cut: u64,
    /// What was found at `kept`.
    pub error: RecordError,
}

impl fmt::Display for Repair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "recording {}: cut {} bytes after offset {} ({}); the GOPs before are intact",
            self.path.display(),
            self.cut,
            self.kept,
            self.error
        )
    }
}

/// Segments deleted since open, by reason.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Deletions {
    /// For retention.
    pub retention: u64,
    /// For the quota.
    pub quota: u64,
    /// For a full disk.
    pub disk_full: u64,
}

/// The recording store; share it as `Arc<Store>`.
pub struct Store {
    root: PathBuf,
    limits: StoreLimits,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    tracks: BTreeMap<TrackKey, Track>,
    bytes: u64,
    deletions: Deletions,
    /// Tests: a disk this size, full when the store's bytes would pass it.
    #[cfg(test)]
    disk_capacity: Option<u64>,
}

#[derive(Default)]
struct Track {
    index: TrackIndex,
    /// The segment being written: always the last of `index.segments`.
    open: Option<OpenSegment>,
}

struct OpenSegment {
    file: File,
    start_ms: u64,
    config: Arc<CodecConfig>,
}

impl Track {
    fn newest(&self) -> Option<&GopEntry> {
        self.index.segments.iter().rev().find_map(|s| s.gops.last())
    }

    /// Closes the open segment: it becomes deletable.
    fn close(&mut self) {
        if let Some(open) = self.open.take() {
            if let Err(e) = open.file.sync_data() {
                tracing::warn!(error = %e, start_ms = open.start_ms, "recording: segment sync at close failed");
            }
        }
    }

    /// The oldest segment that is not being written.
    fn oldest_closed(&self) -> Option<&Segment> {
        let first = self.index.segments.first()?;
        let open = self.open.as_ref().is_some_and(|o| o.start_ms == first.start_ms);
        (!open).then_some(first)
    }
}

impl Store {
    /// Opens (creating) the store at `root`, rebuilding the index from the
    /// files and cutting torn tails; returns what was cut, for the log.
    pub fn open(root: &Path, limits: StoreLimits) -> io::Result<(Store, Vec<Repair>)> {
        fs::create_dir_all(root)?;
        let mut state = State::default();
        let mut repairs = Vec::new();
        for (key, found) in layout::list(root)? {
            let mut track = Track::default();
            let newest = found.len().saturating_sub(1);
            for (i, seg) in found.into_iter().enumerate() {
                let depth = if i == newest { Depth::Full } else { Depth::Headers };
                let scanned = match scan::scan(&seg.path, depth, false) {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::warn!(path = %seg.path.display(), error = %e, "recording: segment unreadable, left out");
                        continue;
                    }
                };
                if let Some((_, error)) = scanned.problems.into_iter().next() {
                    let with_path =
                        |e: io::Error| io::Error::new(e.kind(), format!("{}: {e}", seg.path.display()));
                    let file = OpenOptions::new().write(true).open(&seg.path).map_err(with_path)?;
                    file.set_len(scanned.good_len).map_err(with_path)?;
                    file.sync_data().map_err(with_path)?;
                    repairs.push(Repair {
                        path: seg.path.clone(),
                        kept: scanned.good_len,
                        cut: scanned.file_len - scanned.good_len,
                        error,
                    });
                }
                if scanned.good_len == 0 {
                    // A segment created just before a crash, or nothing left of it.
                    if let Err(e) = fs::remove_file(&seg.path) {
                        tracing::warn!(path = %seg.path.display(), error = %e, "recording: cannot remove empty segment");
                    }
                    continue;
                }
                state.bytes += scanned.good_len;
                track.index.segments.push(Segment {
                    start_ms: seg.start_ms,
                    path: seg.path,
                    gops: scanned.gops,
                    len: scanned.good_len,
                });
            }
            if !track.index.segments.is_empty() {
                state.tracks.insert(key, track);
            }
        }
        let store = Store { root: root.to_owned(), limits, state: Mutex::new(state) };
        Ok((store, repairs))
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // The state is plain data, consistent at every await-free step.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The store's root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Records one GOP of `key`, starting a new segment every `segment_secs`
    /// or when the codec configuration changes, and deleting the oldest
    /// closed segments for the quota or a full disk.
    pub fn append(&self, key: &TrackKey, gop: &RecordedGop) -> Result<Appended, StoreError> {
        if !layout::camera_ok(&key.camera) {
            return Err(StoreError::BadCamera { camera: key.camera.clone() });
        }
        let buf = record::encode(gop).map_err(|source| StoreError::Unrecordable {
            key: key.clone(),
            seq: gop.seq,
            source,
        })?;
        let len = buf.len() as u64;
        let mut guard = self.lock();
        let st = &mut *guard;
        let track = st.tracks.entry(key.clone()).or_default();
        if let Some(newest) = track.newest().filter(|n| gop.wall_ms < n.wall_ms) {
            return Err(StoreError::BackInTime {
                key: key.clone(),
                wall_ms: gop.wall_ms,
                newest_ms: newest.wall_ms,
            });
        }
        let segment_ms = self.limits.segment_secs.saturating_mul(1000);
        if track
            .open
            .as_ref()
            .is_some_and(|o| gop.wall_ms >= o.start_ms.saturating_add(segment_ms) || *o.config != *gop.config)
        {
            track.close();
        }

        let mut removed = Vec::new();
        if self.limits.max_bytes > 0 {
            while st.bytes + len > self.limits.max_bytes {
                match self.delete_oldest(st, RemoveReason::Quota) {
                    Some(r) => removed.push(r),
                    None => break,
                }
            }
        }
        loop {
            match self.write(st, key, gop, &buf) {
                Ok(path) => return Ok(Appended { path, bytes: len, removed }),
                Err((path, e)) if is_full(&e) => {
                    tracing::debug!(path = %path.display(), "recording: disk full, deleting the oldest segment");
                    match self.delete_oldest(st, RemoveReason::DiskFull) {
                        Some(r) => removed.push(r),
                        None => return Err(StoreError::Full { root: self.root.clone(), key: key.clone() }),
                    }
                }
                Err((path, source)) => return Err(StoreError::Io { path, source }),
            }
        }
    }

    /// Writes one record at the end of `key`'s open segment (opening one if
    /// needed); on failure the segment is cut back to where it was.
    fn write(
        &self,
        st: &mut State,
        key: &TrackKey,
        gop: &RecordedGop,
        buf: &[u8],
    ) -> Result<PathBuf, (PathBuf, io::Error)> {
        #[cfg(test)]
        let disk_full = st.disk_capacity.is_some_and(|cap| st.bytes + buf.len() as u64 > cap);
        let track = st.tracks.entry(key.clone()).or_default();
        if track.open.is_none() {
            let dir = layout::track_dir(&self.root, key);
            fs::create_dir_all(&dir).map_err(|e| (dir.clone(), e))?;
            // Start times name files: unique and increasing within a track.
            let after = track.index.segments.last().map_or(0, |s| s.start_ms.saturating_add(1));
            let mut start_ms = gop.wall_ms.max(after);
            let (file, path) = loop {
                let path = layout::segment_path(&self.root, key, start_ms);
                match OpenOptions::new().write(true).create_new(true).open(&path) {
                    Ok(file) => break (file, path),
                    // A file the index does not know (left by a failed delete): step past it.
                    Err(e)
                        if e.kind() == io::ErrorKind::AlreadyExists
                            && start_ms < gop.wall_ms.saturating_add(1000) =>
                    {
                        start_ms += 1;
                    }
                    Err(e) => return Err((path, e)),
                }
            };
            track.index.segments.push(Segment { start_ms, path, gops: Vec::new(), len: 0 });
            track.open = Some(OpenSegment { file, start_ms, config: gop.config.clone() });
        }
        let (Some(open), Some(seg)) = (track.open.as_mut(), track.index.segments.last_mut()) else {
            return Err((self.root.clone(), io::Error::other("recording store: no open segment")));
        };
        let offset = seg.len;
        let written = open.file.seek(SeekFrom::Start(offset)).and_then(|_| open.file.write_all(buf));
        #[cfg(test)]
        let written = match disk_full {
            // Half the record made it, as with a real ENOSPC.
            true => written
                .and_then(|_| open.file.set_len(offset + buf.len() as u64 / 2))
                .and_then(|_| Err(io::Error::from(io::ErrorKind::StorageFull))),
            false => written,
        };
        if let Err(e) = written {
            // Leave no partial record behind: the next append writes here.
            if let Err(cut) = open.file.set_len(offset) {
                tracing::warn!(path = %seg.path.display(), error = %cut, "recording: cannot cut a failed write back");
            }
            return Err((seg.path.clone(), e));
        }
        let len = buf.len() as u64;
        seg.gops.push(GopEntry {
            wall_ms: gop.wall_ms,
            end_ms: gop.end_wall_ms(),
            seq: gop.seq,
            offset,
            len,
        });
        seg.len += len;
        st.bytes += len;
        Ok(seg.path.clone())
    }

    /// Deletes the oldest closed segment of the whole store.
    fn delete_oldest(&self, st: &mut State, reason: RemoveReason) -> Option<Removed> {
        let key = st
            .tracks
            .iter()
            .filter_map(|(k, t)| t.oldest_closed().map(|s| (s.start_ms, k)))
            .min()
            .map(|(_, k)| k.clone())?;
        self.delete_first(st, &key, reason)
    }

    /// Deletes the first segment of `key` (which must be closed).
    fn delete_first(&self, st: &mut State, key: &TrackKey, reason: RemoveReason) -> Option<Removed> {
        let track = st.tracks.get_mut(key)?;
        track.oldest_closed()?;
        let seg = track.index.segments.remove(0);
        if track.index.segments.is_empty() && track.open.is_none() {
            st.tracks.remove(key);
        }
        st.bytes = st.bytes.saturating_sub(seg.len);
        match reason {
            RemoveReason::Retention => st.deletions.retention += 1,
            RemoveReason::Quota => st.deletions.quota += 1,
            RemoveReason::DiskFull => st.deletions.disk_full += 1,
        }
        if let Err(e) = fs::remove_file(&seg.path) {
            if e.kind() != io::ErrorKind::NotFound {
                tracing::warn!(path = %seg.path.display(), error = %e, "recording: cannot delete segment");
            }
        }
        tracing::info!(track = %key, path = %seg.path.display(), bytes = seg.len, ?reason, "recording: segment deleted");
        Some(Removed {
            key: key.clone(),
            bytes: seg.len,
            from_ms: seg.gops.first().map_or(seg.start_ms, |g| g.wall_ms),
            to_ms: seg.end_ms(),
            path: seg.path,
            reason,
        })
    }

    /// Deletes the closed segments whose last GOP ended before
    /// `now_ms - retention_ms`.
    pub fn expire(&self, now_ms: u64) -> Vec<Removed> {
        let mut removed = Vec::new();
        if self.limits.retention_ms == 0 {
            return removed;
        }
        let cutoff = now_ms.saturating_sub(self.limits.retention_ms);
        let mut st = self.lock();
        let keys: Vec<TrackKey> = st.tracks.keys().cloned().collect();
        for key in keys {
            while st.tracks.get(&key).and_then(Track::oldest_closed).is_some_and(|s| s.end_ms() < cutoff) {
                match self.delete_first(&mut st, &key, RemoveReason::Retention) {
                    Some(r) => removed.push(r),
                    None => break,
                }
            }
        }
        removed
    }

    /// Syncs and closes every open segment (at shutdown); the next append
    /// starts new ones.
    pub fn close_segments(&self) {
        let mut st = self.lock();
        for track in st.tracks.values_mut() {
            track.close();
        }
    }

    /// Contiguous recorded ranges of `key`, Unix ms (see [`RANGE_GAP_MS`]).
    pub fn ranges(&self, key: &TrackKey) -> Vec<(u64, u64)> {
        self.lock().tracks.get(key).map(|t| index::ranges(t.index.gops())).unwrap_or_default()
    }

    /// Keyframe time of `key`'s oldest GOP.
    pub fn oldest_ms(&self, key: &TrackKey) -> Option<u64> {
        self.lock().tracks.get(key)?.index.oldest_ms()
    }

    /// End of `key`'s newest GOP.
    pub fn newest_ms(&self, key: &TrackKey) -> Option<u64> {
        self.lock().tracks.get(key)?.index.newest_ms()
    }

    /// Tracks with recordings.
    pub fn tracks(&self) -> Vec<TrackKey> {
        let st = self.lock();
        st.tracks.iter().filter(|(_, t)| t.newest().is_some()).map(|(k, _)| k.clone()).collect()
    }

    /// Bytes of all segments.
    pub fn bytes(&self) -> u64 {
        self.lock().bytes
    }

    /// Segments deleted since open, by reason.
    pub fn deletions(&self) -> Deletions {
        self.lock().deletions
    }

    /// A cursor at the GOP of `key` containing `from_ms` (the latest
    /// starting at or before it, else the first after); `None` when `key`
    /// has no recordings.
    pub fn cursor(self: &Arc<Self>, key: &TrackKey, from_ms: u64) -> Option<Cursor> {
        let pos = self.lock().tracks.get(key)?.index.locate(from_ms)?;
        Some(Cursor::new(self.clone(), Walk::new(key.clone(), pos)))
    }

    /// The GOPs of `key` overlapping `from_ms..to_ms`, from the one
    /// containing `from_ms`, for an export. A damaged record is an error:
    /// an export does not leave footage out silently.
    pub fn gops_between(&self, key: &TrackKey, from_ms: u64, to_ms: u64) -> io::Result<Vec<RecordedGop>> {
        if from_ms >= to_ms {
            return Ok(Vec::new());
        }
        let Some(pos) = self.lock().tracks.get(key).and_then(|t| t.index.locate(from_ms)) else {
            return Ok(Vec::new());
        };
        let mut walk = Walk::new(key.clone(), pos);
        let mut out = Vec::new();
        while let Some(gop) = walk.next(self)? {
            if gop.wall_ms >= to_ms {
                break;
            }
            if gop.end_wall_ms() > from_ms || gop.wall_ms >= from_ms {
                out.push(gop);
            }
        }
        Ok(out)
    }

    /// Tests: makes the disk full once the store would pass `capacity` bytes.
    #[cfg(test)]
    fn set_disk_capacity(&self, capacity: Option<u64>) {
        self.lock().disk_capacity = capacity;
    }

    /// Where the first GOP of `key` at or after `pos` is: for readers, which
    /// then read it without the lock.
    fn entry_from(&self, key: &TrackKey, pos: Pos) -> Option<(PathBuf, u64, GopEntry)> {
        let st = self.lock();
        let (seg, entry) = st.tracks.get(key)?.index.next_from(pos)?;
        Some((seg.path.clone(), seg.start_ms, entry))
    }
}

/// True for the errors of a disk (or a disk quota) with no room left.
fn is_full(e: &io::Error) -> bool {
    matches!(e.kind(), io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded)
}
