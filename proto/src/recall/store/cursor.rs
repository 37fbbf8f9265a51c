//! Reading GOPs back in order from a place in the time index, following the
//! index as it grows and shrinks under the reader.

use super::index::{GopEntry, Pos};
use super::record;
use super::Store;
use crate::hub::TrackKey;
use crate::recall::RecordedGop;
use bytes::Bytes;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::Path;
use std::sync::Arc;

/// Reads a track's GOPs in order; see [`Store::cursor`].
pub struct Cursor {
    store: Arc<Store>,
    walk: Walk,
}

impl Cursor {
    pub(super) fn new(store: Arc<Store>, walk: Walk) -> Self {
        Self { store, walk }
    }

    /// The next GOP, or `None` at the newest one; called again later, it
    /// returns GOPs appended since. GOPs in segments deleted under the cursor
    /// are skipped. A damaged record is an `InvalidData` error and the cursor
    /// moves past it.
    #[allow(
        clippy::should_implement_trait,
        reason = "not an Iterator: `None` is \"nothing yet\", not the end, and reads can fail"
    )]
    pub fn next(&mut self) -> io::Result<Option<RecordedGop>> {
        self.walk.next(&self.store)
    }
}

/// A place in one track's index and the segment file open there.
pub(super) struct Walk {
    key: TrackKey,
    pos: Pos,
    file: Option<(u64, File)>,
}

impl Walk {
    pub(super) fn new(key: TrackKey, pos: Pos) -> Self {
        Self { key, pos, file: None }
    }

    pub(super) fn next(&mut self, store: &Store) -> io::Result<Option<RecordedGop>> {
        loop {
            // The index lock is held for the lookup only, never for the read.
            let Some((path, segment, entry)) = store.entry_from(&self.key, self.pos) else {
                return Ok(None);
            };
            match self.read(&path, segment, entry) {
                Ok(gop) => {
                    self.pos = Pos { segment, offset: entry.offset + entry.len };
                    return Ok(Some(gop));
                }
                Err(e) if matches!(e.kind(), io::ErrorKind::NotFound | io::ErrorKind::UnexpectedEof) => {
                    // Deleted (quota, retention) or cut under us: on to the next segment.
                    self.file = None;
                    self.pos = Pos { segment: segment.saturating_add(1), offset: 0 };
                }
                Err(e) => {
                    self.pos = Pos { segment, offset: entry.offset + entry.len };
                    return Err(e);
                }
            }
        }
    }

    fn read(&mut self, path: &Path, segment: u64, entry: GopEntry) -> io::Result<RecordedGop> {
        let file = match &mut self.file {
            Some((s, file)) if *s == segment => file,
            slot => &mut slot.insert((segment, File::open(path)?)).1,
        };
        file.seek(SeekFrom::Start(entry.offset))?;
        // `entry.len` comes from a header checked against MAX_BODY_LEN.
        let mut buf = vec![0; entry.len as usize];
        file.read_exact(&mut buf)?;
        record::decode(Bytes::from(buf)).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{} at offset {}: {e}", path.display(), entry.offset),
            )
        })
    }
}
