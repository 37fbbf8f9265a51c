//! The writer: an append-only file continuing the chain of what is there,
//! rotated past a size with the chain carried over.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use super::files::{first_line, last_line, open_append};
use super::files::{DeletionEnd, RotatedFile};
use super::record::{rfc3339, LineInfo};
use super::{chain_line, rotated, AuditRecord, Retention, GENESIS};
pub(super) struct Writer {
    pub(super) file: File,
    pub(super) size: u64,
    pub(super) prev: String,
    pub(super) seq: u64,
    /// First and last lines of the live file, once it has lines.
    pub(super) live: Option<(LineInfo, LineInfo)>,
    /// Rotated files, newest (`.1`) first.
    pub(super) rotated: Vec<RotatedFile>,
    /// Files deleted by retention since start.
    pub(super) deleted: u64,
    /// Why retention is stuck, if it is.
    pub(super) blocked: Option<String>,
    /// The most recent deletion line, once looked for (`None`: not yet).
    pub(super) last_deletion: Option<Option<DeletionEnd>>,
}

/// Wall clock of the log: line times and file ages (a fake one in tests).
pub type Clock = Arc<dyn Fn() -> SystemTime + Send + Sync>;

/// An append-only audit file with size-based rotation that keeps the chain,
/// and explicit retention of the rotated files.
pub struct AuditLog {
    pub(super) path: PathBuf,
    pub(super) max_bytes: u64,
    pub(super) node: String,
    pub(super) retention: Retention,
    pub(super) clock: Clock,
    pub(super) w: Mutex<Writer>,
    pub(super) errors: std::sync::atomic::AtomicU64,
}

impl AuditLog {
    /// Opens (or creates) `path`, continuing the chain of what is there;
    /// keeps every rotated file.
    pub fn open(path: impl Into<PathBuf>, node: impl Into<String>, max_bytes: u64) -> std::io::Result<Self> {
        Self::open_with(path, node, max_bytes, Retention::default(), Arc::new(SystemTime::now))
    }

    /// Opens (or creates) `path` with a retention and a clock, deleting at
    /// once the rotated files that retention no longer keeps (each recorded).
    pub fn open_with(
        path: impl Into<PathBuf>,
        node: impl Into<String>,
        max_bytes: u64,
        retention: Retention,
        clock: Clock,
    ) -> std::io::Result<Self> {
        let path = path.into();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let rotated: Vec<RotatedFile> = (1..)
            .map(|n| rotated(&path, n))
            .take_while(|p| p.exists())
            .map(|p| RotatedFile::read(&p))
            .collect();
        let live_first = first_line(&path).ok().flatten();
        let live_last = last_line(&path).ok().flatten();
        let (prev, seq) = match live_last.as_ref().or(rotated.first().and_then(|r| r.last.as_ref())) {
            Some(l) => (l.hash.clone(), l.seq + 1),
            None => (GENESIS.to_owned(), 0),
        };
        let file = open_append(&path)?;
        let size = file.metadata()?.len();
        let log = Self {
            path,
            max_bytes,
            node: node.into(),
            retention,
            clock,
            w: Mutex::new(Writer {
                file,
                size,
                prev,
                seq,
                live: live_first.zip(live_last),
                rotated,
                deleted: 0,
                blocked: None,
                last_deletion: None,
            }),
            errors: Default::default(),
        };
        log.enforce_retention();
        Ok(log)
    }

    /// Appends one record (time and node filled in) and flushes it to disk.
    pub fn write(&self, record: AuditRecord) -> std::io::Result<()> {
        let mut w = self.w.lock().unwrap_or_else(|e| e.into_inner());
        let result = self.append(&mut w, record);
        if result.is_err() {
            self.errors.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        self.enforce(&mut w);
        result
    }

    /// Writes that failed since start (disk full, permissions): alert on it.
    pub fn write_errors(&self) -> u64 {
        self.errors.load(std::sync::atomic::Ordering::Relaxed)
    }

    pub(super) fn append(&self, w: &mut Writer, mut record: AuditRecord) -> std::io::Result<()> {
        if record.time.is_empty() {
            record.time = rfc3339((self.clock)());
        }
        if record.node.is_empty() {
            record.node = self.node.clone();
        }
        let (line, hash) = chain_line(w.seq, &record, &w.prev).map_err(std::io::Error::other)?;
        if w.size > 0 && w.size + line.len() as u64 + 1 > self.max_bytes {
            self.rotate(w)?;
        }
        w.file.write_all(line.as_bytes())?;
        w.file.write_all(b"\n")?;
        w.file.sync_data()?;
        w.size += line.len() as u64 + 1;
        let info = LineInfo { seq: w.seq, time: record.time, hash: hash.clone(), prev: w.prev.clone() };
        w.live = Some(match w.live.take() {
            Some((first, _)) => (first, info),
            None => (info.clone(), info),
        });
        w.prev = hash;
        w.seq += 1;
        Ok(())
    }

    fn rotate(&self, w: &mut Writer) -> std::io::Result<()> {
        for i in (1..=w.rotated.len()).rev() {
            let from = rotated(&self.path, i);
            if from.exists() {
                std::fs::rename(&from, rotated(&self.path, i + 1))?;
            }
        }
        std::fs::rename(&self.path, rotated(&self.path, 1))?;
        let (first, last) = w.live.take().unzip();
        w.rotated.insert(0, RotatedFile { first, last, recorded: false });
        w.file = open_append(&self.path)?;
        w.size = 0;
        Ok(())
    }

    /// Path of the live file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Hash of the newest line: publishing it elsewhere anchors the chain.
    pub fn head(&self) -> String {
        self.w.lock().unwrap_or_else(|e| e.into_inner()).prev.clone()
    }

    /// Sequence number and hash of the newest line, `None` before the
    /// first: what `Control::AuditHead` sends the peer.
    pub fn chain_head(&self) -> Option<(u64, String)> {
        let w = self.w.lock().unwrap_or_else(|e| e.into_inner());
        w.seq.checked_sub(1).map(|seq| (seq, w.prev.clone()))
    }

    /// This log's node id (the `node` of its lines).
    pub fn node(&self) -> &str {
        &self.node
    }
}
