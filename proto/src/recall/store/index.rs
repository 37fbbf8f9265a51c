//! The time index, in memory: per track its segments and, per segment, where
//! each GOP record is and which wall-clock time it covers. Pure data; the
//! store fills it from scans and appends.

use std::collections::VecDeque;
use std::path::PathBuf;

/// A gap over this between one GOP's end and the next one's start always
/// splits a recorded range.
pub const RANGE_GAP_MS: u64 = 2000;
/// A gap up to this never splits a range: keyframe times are arrival times at
/// the agent, with tens of ms of jitter, and end times are estimated.
pub const RANGE_JITTER_MS: u64 = 500;
/// GOP intervals the median for splitting ranges is taken over (the latest):
/// bounds the work done under the store's lock on a month-long track.
const MEDIAN_WINDOW: usize = 1024;

/// Where one GOP record is and the time it covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GopEntry {
    /// Keyframe time, Unix ms.
    pub wall_ms: u64,
    /// Time just after the last frame, Unix ms.
    pub end_ms: u64,
    /// The track's GOP sequence number.
    pub seq: u64,
    /// Offset of the record in its segment file.
    pub offset: u64,
    /// Bytes of the record.
    pub len: u64,
}

/// One segment file of a track.
#[derive(Debug, Clone)]
pub struct Segment {
    /// Start time from the file name, Unix ms; unique within the track.
    pub start_ms: u64,
    /// The file.
    pub path: PathBuf,
    /// Its GOP records in file order.
    pub gops: Vec<GopEntry>,
    /// Bytes of the file (the end of its last record).
    pub len: u64,
}

impl Segment {
    /// End of the latest GOP of the segment, or its start when empty.
    pub fn end_ms(&self) -> u64 {
        self.gops.iter().map(|g| g.end_ms).max().unwrap_or(self.start_ms)
    }
}

/// A cursor's place: the next GOP is the first at or after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pos {
    /// `start_ms` of the segment.
    pub segment: u64,
    /// Offset in the segment.
    pub offset: u64,
}

/// The segments of one track, in time order.
#[derive(Debug, Clone, Default)]
pub struct TrackIndex {
    /// Segments by `start_ms`.
    pub segments: Vec<Segment>,
}

impl TrackIndex {
    /// Every GOP of the track in order.
    pub fn gops(&self) -> impl Iterator<Item = &GopEntry> + Clone {
        self.segments.iter().flat_map(|s| s.gops.iter())
    }

    /// The first GOP at or after `pos`, with its segment.
    pub fn next_from(&self, pos: Pos) -> Option<(&Segment, GopEntry)> {
        let first = self.segments.partition_point(|s| s.start_ms < pos.segment);
        self.segments.get(first..)?.iter().find_map(|seg| {
            let skip = if seg.start_ms == pos.segment {
                seg.gops.partition_point(|g| g.offset < pos.offset)
            } else {
                0
            };
            seg.gops.get(skip).map(|g| (seg, *g))
        })
    }

    /// The place of the latest GOP starting at or before `ms`, else of the
    /// first GOP; `None` when the track has none.
    pub fn locate(&self, ms: u64) -> Option<Pos> {
        let upto = self.segments.partition_point(|s| s.gops.first().is_none_or(|g| g.wall_ms <= ms));
        let before = self.segments.get(..upto).unwrap_or_default().iter().rev().find_map(|seg| {
            let n = seg.gops.partition_point(|g| g.wall_ms <= ms);
            n.checked_sub(1)
                .and_then(|i| seg.gops.get(i))
                .map(|g| Pos { segment: seg.start_ms, offset: g.offset })
        });
        before.or_else(|| {
            self.segments
                .iter()
                .find_map(|s| s.gops.first().map(|g| Pos { segment: s.start_ms, offset: g.offset }))
        })
    }

    /// Keyframe time of the oldest GOP.
    pub fn oldest_ms(&self) -> Option<u64> {
        self.gops().next().map(|g| g.wall_ms)
    }

    /// End of the newest GOP.
    pub fn newest_ms(&self) -> Option<u64> {
        self.segments.iter().rev().find(|s| !s.gops.is_empty()).map(Segment::end_ms)
    }
}

/// Contiguous recorded ranges `(start, end)` in Unix ms of GOPs in time order.
/// A range is split where the next GOP starts later after the previous one's
/// end than twice the median GOP interval, kept within
/// [`RANGE_JITTER_MS`]..=[`RANGE_GAP_MS`]: one missing 4-s GOP splits, one
/// missing 0.5-s GOP does not. Measured end to start, a camera whose GOP
/// length varies with motion is not split where it lengthens its GOPs.
pub fn ranges<'a>(gops: impl Iterator<Item = &'a GopEntry> + Clone) -> Vec<(u64, u64)> {
    let mut window = VecDeque::with_capacity(MEDIAN_WINDOW);
    let mut prev: Option<u64> = None;
    for g in gops.clone() {
        if let Some(p) = prev {
            if window.len() == MEDIAN_WINDOW {
                window.pop_front();
            }
            window.push_back(g.wall_ms.saturating_sub(p));
        }
        prev = Some(g.wall_ms);
    }
    let mut sorted: Vec<u64> = window.into();
    sorted.sort_unstable();
    let gap = sorted
        .get(sorted.len() / 2)
        .map_or(RANGE_GAP_MS, |m| m.saturating_mul(2).clamp(RANGE_JITTER_MS, RANGE_GAP_MS));

    let mut out: Vec<(u64, u64)> = Vec::new();
    for g in gops {
        match out.last_mut() {
            Some(last) if g.wall_ms.saturating_sub(last.1) <= gap => last.1 = last.1.max(g.end_ms),
            _ => out.push((g.wall_ms, g.end_ms.max(g.wall_ms))),
        }
    }
    out
}
