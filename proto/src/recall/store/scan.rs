//! Walking a segment file record by record: the index at open, the repair of
//! a torn tail, and `check` are all this walk.

use super::index::GopEntry;
use super::record::{self, RecordError, HEADER_LEN};
use bytes::Bytes;
use std::fs::File;
use std::io::{self, BufReader, Read};
use std::path::Path;

/// How much of each record a scan reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Depth {
    /// Headers only, skipping bodies: for segments closed with `sync_data`.
    Headers,
    /// Every byte, CRC and body checked.
    Full,
}

/// What a walk of one segment found.
#[derive(Debug, Default)]
pub struct Scan {
    /// Records that passed, in file order.
    pub gops: Vec<GopEntry>,
    /// End of the last good record before the first problem: where a repair truncates.
    pub good_len: u64,
    /// Length of the file.
    pub file_len: u64,
    /// Problems by offset. After a CRC mismatch the walk goes on when
    /// `keep_going` (the header's length still frames the record); any other
    /// problem ends it.
    pub problems: Vec<(u64, RecordError)>,
}

/// Walks the segment at `path`.
pub fn scan(path: &Path, depth: Depth, keep_going: bool) -> io::Result<Scan> {
    let file = File::open(path)?;
    let file_len = file.metadata()?.len();
    let mut reader = BufReader::with_capacity(64 << 10, file);
    let mut out = Scan { file_len, ..Scan::default() };
    let mut pos = 0u64;
    let mut clean = true;
    while pos < file_len {
        let left = file_len - pos;
        if left < HEADER_LEN as u64 {
            out.problems.push((pos, RecordError::Short { have: left, need: HEADER_LEN as u64 }));
            break;
        }
        let mut head = [0u8; HEADER_LEN];
        reader.read_exact(&mut head)?;
        let header = match record::parse_header(&head) {
            Ok(h) => h,
            Err(e) => {
                out.problems.push((pos, e));
                break;
            }
        };
        let len = header.record_len();
        if len > left {
            out.problems.push((pos, RecordError::Short { have: left, need: len }));
            break;
        }
        let checked = match depth {
            Depth::Headers => {
                reader.seek_relative(i64::from(header.body_len))?;
                Ok(())
            }
            Depth::Full => {
                let mut buf = Vec::with_capacity(len as usize);
                buf.extend_from_slice(&head);
                buf.resize(len as usize, 0);
                reader.read_exact(buf.get_mut(HEADER_LEN..).unwrap_or_default())?;
                record::decode(Bytes::from(buf)).map(|_| ())
            }
        };
        match checked {
            Ok(()) => {
                out.gops.push(GopEntry {
                    wall_ms: header.wall_ms,
                    end_ms: header.end_ms,
                    seq: header.seq,
                    offset: pos,
                    len,
                });
                if clean {
                    out.good_len = pos + len;
                }
            }
            Err(e) => {
                out.problems.push((pos, e));
                clean = false;
                if !keep_going {
                    break;
                }
            }
        }
        pos += len;
    }
    Ok(out)
}
