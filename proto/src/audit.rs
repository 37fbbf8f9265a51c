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

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Hash linking the first line of a brand-new log.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";
/// Action of the line written before retention deletes a rotated file.
pub const ACTION_FILE_DELETED: &str = "audit-file-deleted";
/// Files that retention will delete within this time are reported as due.
pub const DELETION_NOTICE: Duration = Duration::from_secs(24 * 3600);
/// Under `keep_files`, the oldest file is reported due once the live file
/// is this full (percent): the next rotation deletes it.
const DUE_AT_FILL_PERCENT: u64 = 90;

/// Which node an [`AuditSection`] belongs to (its default file name).
pub const AGENT: u8 = 0;
/// See [`AGENT`].
pub const RELAY: u8 = 1;

/// `[audit]` of either node: where the audit goes, when it rotates and how
/// long rotated files are kept (both limits 0 by default: nothing is ever
/// deleted). `NODE` ([`AGENT`] or [`RELAY`]) picks the default file.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditSection<const NODE: u8> {
    /// Audit file (JSON lines, hash-chained).
    #[serde(default = "default_audit_path::<NODE>")]
    pub path: PathBuf,
    /// Rotate the file past this size, in MiB.
    #[serde(default = "default_audit_mb")]
    pub max_mb: u64,
    /// Delete a rotated file this many days after its last line; 0 = never.
    #[serde(default)]
    pub keep_days: u64,
    /// Keep at most this many rotated files; 0 = no limit.
    #[serde(default)]
    pub keep_files: u64,
}

impl<const NODE: u8> Default for AuditSection<NODE> {
    fn default() -> Self {
        Self { path: default_audit_path::<NODE>(), max_mb: default_audit_mb(), keep_days: 0, keep_files: 0 }
    }
}

impl<const NODE: u8> AuditSection<NODE> {
    /// What the log keeps.
    pub fn retention(&self) -> Retention {
        Retention { keep_days: self.keep_days, keep_files: self.keep_files }
    }

    /// Opens the log as `run` does, with the clock of the host; the error
    /// names the file and the key.
    pub fn open(&self, node: &str) -> Result<AuditLog, String> {
        AuditLog::open_with(&self.path, node, self.max_mb << 20, self.retention(), Arc::new(SystemTime::now))
            .map_err(|e| format!("opening the audit log `{}` (`audit.path`): {e:#}", self.path.display()))
    }

    /// Checks the keys; the error names the key and the fix.
    pub fn check(&self) -> Result<(), String> {
        if self.max_mb == 0 || self.max_mb > 1 << 20 {
            return Err(format!(
                "`audit.max_mb` = {}: expected 1 to {} MiB (64 is the default)",
                self.max_mb,
                1u64 << 20
            ));
        }
        if self.keep_days > 100 * 366 {
            return Err(format!(
                "`audit.keep_days` = {}: at most {} (0 keeps files for ever)",
                self.keep_days,
                100 * 366
            ));
        }
        Ok(())
    }
}

fn default_audit_path<const NODE: u8>() -> PathBuf {
    PathBuf::from(if NODE == RELAY {
        "/var/lib/ponte/relay-audit.log"
    } else {
        "/var/lib/ponte/agent-audit.log"
    })
}

fn default_audit_mb() -> u64 {
    64
}

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

/// A rotated file deleted by retention, as the line recording it names it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeletedFile {
    /// Its name when deleted (`audit.log.31`).
    pub file: String,
    /// Sequence number of its first line.
    pub first_seq: u64,
    /// Sequence number of its last line.
    pub last_seq: u64,
    /// Time of its first line.
    pub first_time: String,
    /// Time of its last line.
    pub last_time: String,
    /// SHA-256 of its bytes: matches a copy shipped off the host.
    pub sha256: String,
    /// Hash of its last line: the next line's `prev`, where the kept chain starts.
    pub last_hash: String,
    /// `prev` of its first line: where it joined the lines before it.
    #[serde(default)]
    pub first_prev: String,
    /// Every line before this file was accounted for when it was deleted:
    /// it started at the genesis, or where an earlier deletion line ended.
    /// `false` means older files had already been removed by hand (or by
    /// an older ponte), and `audit verify` still says so.
    #[serde(default)]
    pub start_accounted: bool,
}

/// One audit event.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// RFC 3339 UTC time.
    pub time: String,
    /// Node that wrote the line.
    pub node: String,
    /// Partner site concerned.
    pub site: Option<String>,
    /// Relay-local viewer (account), when known.
    pub viewer: Option<String>,
    /// Camera concerned.
    pub camera: Option<String>,
    /// Quality concerned.
    pub quality: Option<String>,
    /// `catalog`, `subscribe`, `view-start`, `view-stop`, `refused`, `revoked`, `ptz`, ...
    pub action: String,
    /// `allowed`, `denied`, `ended`, ...
    pub outcome: String,
    /// Human explanation (rule that decided, error).
    pub reason: Option<String>,
    /// Viewer session concerned (a relay's WHEP or RTSP session id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<String>,
    /// How long the viewing lasted (`view-stop`), in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    /// Network address of the client (logins).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client: Option<String>,
    /// The file deleted (`audit-file-deleted` lines).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deleted: Option<DeletedFile>,
}

#[derive(Serialize)]
struct Chained<'a> {
    seq: u64,
    #[serde(flatten)]
    record: &'a AuditRecord,
    prev: &'a str,
}

/// Suffix every line ends with: `,"hash":"<64 hex>"}`.
const HASH_SUFFIX_LEN: usize = 9 + 64 + 2;

fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// Formats a chained line (without newline) and returns it with its hash.
///
/// A record that does not serialise is an error, never an empty line that
/// would still chain.
pub fn chain_line(seq: u64, record: &AuditRecord, prev: &str) -> Result<(String, String), serde_json::Error> {
    let body = serde_json::to_string(&Chained { seq, record, prev })?;
    let hash = sha256_hex(body.as_bytes());
    let mut line = body;
    line.pop(); // the closing brace
    line.push_str(&format!(",\"hash\":\"{hash}\"}}"));
    Ok((line, hash))
}

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

#[derive(Deserialize)]
struct Fields {
    seq: u64,
    prev: String,
    hash: String,
    #[serde(default)]
    time: String,
    #[serde(default)]
    action: String,
    #[serde(default)]
    deleted: Option<DeletedFile>,
}

/// Checks one line against the previous hash; returns its fields.
fn check_line(line: &str, prev: Option<&str>) -> Result<Fields, String> {
    let fields: Fields = serde_json::from_str(line).map_err(|e| format!("not a valid audit line ({e})"))?;
    if line.len() < HASH_SUFFIX_LEN || !line.is_char_boundary(line.len() - HASH_SUFFIX_LEN) {
        return Err("line is too short to carry its hash".into());
    }
    let mut body = line[..line.len() - HASH_SUFFIX_LEN].to_owned();
    body.push('}');
    let hash = sha256_hex(body.as_bytes());
    if !line.ends_with(&format!(",\"hash\":\"{hash}\"}}")) || fields.hash != hash {
        return Err("line was modified: its content does not match its hash".into());
    }
    if let Some(prev) = prev {
        if fields.prev != prev {
            return Err(
                "hash chain broken: the line before this one was modified, inserted or removed".into()
            );
        }
    }
    Ok(fields)
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

/// The first or last line of a file, as retention needs it.
#[derive(Debug, Clone)]
struct LineInfo {
    seq: u64,
    time: String,
    hash: String,
    prev: String,
}

impl LineInfo {
    fn parse(line: &str) -> Option<Self> {
        let f: Fields = serde_json::from_str(line).ok()?;
        Some(Self { seq: f.seq, time: f.time, hash: f.hash, prev: f.prev })
    }
}

/// A rotated file (`audit.log.N`): its first and last lines, `None` when
/// they cannot be read (retention then stops at it rather than guess).
#[derive(Debug, Clone)]
struct RotatedFile {
    first: Option<LineInfo>,
    last: Option<LineInfo>,
    /// Its deletion is recorded but the file could not be removed yet:
    /// the next try removes it without a second record.
    recorded: bool,
}

impl RotatedFile {
    fn read(path: &Path) -> Self {
        Self { first: first_line(path).ok().flatten(), last: last_line(path).ok().flatten(), recorded: false }
    }
}

/// The end of the most recent deletion line: `(last_hash, last_seq,
/// start_accounted)`, where the next file must start for the chain before
/// it to stay accounted for.
type DeletionEnd = (String, u64, bool);

/// The most recent `audit-file-deleted` line in `files` (oldest first).
fn last_deletion_in(files: &[PathBuf]) -> Option<DeletionEnd> {
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

struct Writer {
    file: File,
    size: u64,
    prev: String,
    seq: u64,
    /// First and last lines of the live file, once it has lines.
    live: Option<(LineInfo, LineInfo)>,
    /// Rotated files, newest (`.1`) first.
    rotated: Vec<RotatedFile>,
    /// Files deleted by retention since start.
    deleted: u64,
    /// Why retention is stuck, if it is.
    blocked: Option<String>,
    /// The most recent deletion line, once looked for (`None`: not yet).
    last_deletion: Option<Option<DeletionEnd>>,
}

/// Wall clock of the log: line times and file ages (a fake one in tests).
pub type Clock = Arc<dyn Fn() -> SystemTime + Send + Sync>;

/// An append-only audit file with size-based rotation that keeps the chain,
/// and explicit retention of the rotated files.
pub struct AuditLog {
    path: PathBuf,
    max_bytes: u64,
    node: String,
    retention: Retention,
    clock: Clock,
    w: Mutex<Writer>,
    errors: std::sync::atomic::AtomicU64,
}

fn first_line(path: &Path) -> std::io::Result<Option<LineInfo>> {
    let mut line = String::new();
    BufReader::new(File::open(path)?).read_line(&mut line)?;
    Ok(LineInfo::parse(line.trim_end()))
}

fn last_line(path: &Path) -> std::io::Result<Option<LineInfo>> {
    let mut f = File::open(path)?;
    let len = f.seek(SeekFrom::End(0))?;
    let start = len.saturating_sub(64 * 1024);
    f.seek(SeekFrom::Start(start))?;
    let mut tail = String::new();
    std::io::Read::read_to_string(&mut f, &mut tail)?;
    Ok(tail.lines().rev().find(|l| !l.trim().is_empty()).and_then(LineInfo::parse))
}

fn file_sha256(path: &Path) -> std::io::Result<String> {
    let mut hasher = Sha256::new();
    std::io::copy(&mut File::open(path)?, &mut hasher)?;
    Ok(hex::encode(hasher.finalize()))
}

/// Unix seconds of an RFC 3339 time (a line's `time`).
fn unix_of(time: &str) -> Option<i64> {
    time::OffsetDateTime::parse(time, &time::format_description::well_known::Rfc3339)
        .ok()
        .map(|t| t.unix_timestamp())
}

fn unix_now(t: SystemTime) -> i64 {
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

    fn append(&self, w: &mut Writer, mut record: AuditRecord) -> std::io::Result<()> {
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

    fn enforce(&self, w: &mut Writer) {
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

    /// Path of the live file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Hash of the newest line: publishing it elsewhere anchors the chain.
    pub fn head(&self) -> String {
        self.w.lock().unwrap_or_else(|e| e.into_inner()).prev.clone()
    }
}

/// Opens the live file for appending, readable by the node's user only
/// (0600): created so, and an existing file made so (the audit names
/// viewers, sites and client addresses). Rotated files keep the mode.
fn open_append(path: &Path) -> std::io::Result<File> {
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

/// `audit verify FILE...` of both binaries: one file means it and its
/// rotated predecessors; several are taken oldest first. Returns the exit
/// code: 0 intact, 1 broken (the line is named).
pub fn verify_cli(files: Vec<PathBuf>, allow_missing_start: bool) -> i32 {
    let files = match files.as_slice() {
        [one] => chain_files(one),
        _ => files,
    };
    match verify_with(&files, allow_missing_start) {
        Ok(n) => {
            println!("audit log intact: {n} lines in {} file(s)", files.len());
            0
        }
        Err(broken) => {
            eprintln!("audit log BROKEN at {broken}");
            1
        }
    }
}

/// Current UTC time in RFC 3339 with milliseconds.
pub fn now_rfc3339() -> String {
    rfc3339(SystemTime::now())
}

fn rfc3339(t: SystemTime) -> String {
    time::OffsetDateTime::from(t).format(&time::format_description::well_known::Rfc3339).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(i: usize) -> AuditRecord {
        AuditRecord {
            site: Some("carabinieri".into()),
            camera: Some(format!("cam-{i}")),
            action: "subscribe".into(),
            outcome: "allowed".into(),
            ..Default::default()
        }
    }

    fn tmp(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("ponte-audit-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir.join("audit.log")
    }

    #[test]
    fn chain_verifies_and_a_one_byte_edit_is_located() {
        let path = tmp("edit");
        let log = AuditLog::open(&path, "master", 1 << 20).unwrap();
        for i in 0..10 {
            log.write(rec(i)).unwrap();
        }
        assert_eq!(verify(std::slice::from_ref(&path)), Ok(10));
        // Reopening continues the chain.
        drop(log);
        let log = AuditLog::open(&path, "master", 1 << 20).unwrap();
        log.write(rec(10)).unwrap();
        assert_eq!(verify(std::slice::from_ref(&path)), Ok(11));

        let text = std::fs::read_to_string(&path).unwrap();
        let line5_start: usize = text.lines().take(4).map(|l| l.len() + 1).sum();
        let pos = line5_start + text.lines().nth(4).unwrap().find("cam-4").unwrap() + 4;
        let mut bytes = text.into_bytes();
        bytes[pos] = b'9';
        std::fs::write(&path, &bytes).unwrap();
        let err = verify(std::slice::from_ref(&path)).unwrap_err();
        assert_eq!(err.line, 5, "{err}");
        assert!(err.reason.contains("modified"), "{err}");
    }

    #[test]
    fn removed_line_is_detected() {
        let path = tmp("remove");
        let log = AuditLog::open(&path, "master", 1 << 20).unwrap();
        for i in 0..5 {
            log.write(rec(i)).unwrap();
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let kept: Vec<&str> = text.lines().enumerate().filter(|(i, _)| *i != 2).map(|(_, l)| l).collect();
        std::fs::write(&path, kept.join("\n") + "\n").unwrap();
        let err = verify(&[path]).unwrap_err();
        assert_eq!(err.line, 3, "{err}");
    }

    #[test]
    fn rotation_keeps_the_chain() {
        let path = tmp("rotate");
        let log = AuditLog::open(&path, "master", 600).unwrap();
        for i in 0..20 {
            log.write(rec(i)).unwrap();
        }
        let files = chain_files(&path);
        assert!(files.len() > 2, "{files:?}");
        assert_eq!(verify(&files), Ok(20));
        // Dropping a middle file is detected.
        let mut missing = files.clone();
        missing.remove(1);
        assert!(verify(&missing).is_err());
    }

    /// A clock the test moves by hand.
    fn fake_clock(start_unix: u64) -> (Clock, Arc<std::sync::atomic::AtomicU64>) {
        let t = Arc::new(std::sync::atomic::AtomicU64::new(start_unix));
        let read = t.clone();
        let clock: Clock = Arc::new(move || {
            UNIX_EPOCH + Duration::from_secs(read.load(std::sync::atomic::Ordering::SeqCst))
        });
        (clock, t)
    }

    const DAY: u64 = 86_400;
    const T0: u64 = 1_780_000_000;

    fn deletion_lines(path: &Path) -> Vec<String> {
        chain_files(path)
            .iter()
            .flat_map(|f| std::fs::read_to_string(f).unwrap().lines().map(str::to_owned).collect::<Vec<_>>())
            .filter(|l| l.contains(&format!("\"action\":\"{ACTION_FILE_DELETED}\"")))
            .collect()
    }

    /// The old code kept 30 rotated files and deleted the rest silently;
    /// by default nothing is deleted now.
    #[test]
    fn by_default_every_rotated_file_is_kept() {
        let path = tmp("forever");
        let log = AuditLog::open(&path, "master", 300).unwrap();
        for i in 0..80 {
            log.write(rec(i)).unwrap();
        }
        let files = chain_files(&path);
        assert!(files.len() > 40, "{}", files.len());
        assert_eq!(verify(&files), Ok(80));
        let status = log.retention_status();
        assert_eq!((status.rotated_files as usize, status.due_for_deletion.len()), (files.len() - 1, 0));
        assert!(status.retention.contains("kept for ever"), "{}", status.retention);
    }

    #[test]
    fn files_past_keep_days_are_announced_then_deleted_on_record_and_the_rest_verifies() {
        let path = tmp("keep-days");
        let (clock, now) = fake_clock(T0);
        let retention = Retention { keep_days: 2, keep_files: 0 };
        let log = AuditLog::open_with(&path, "master", 2000, retention, clock.clone()).unwrap();
        for i in 0..50 {
            log.write(rec(i)).unwrap();
        }
        let day0_files = log.retention_status().rotated_files;
        assert!(day0_files >= 3, "{day0_files}");
        // A day later: nothing due yet (deleted in 2 days, notice is 24 h).
        now.store(T0 + DAY - 60, std::sync::atomic::Ordering::SeqCst);
        for i in 50..70 {
            log.write(rec(i)).unwrap();
        }
        let status = log.retention_status();
        assert!(status.due_for_deletion.is_empty(), "{status:?}");
        assert_eq!(status.oldest_line_age_secs, DAY - 60);
        // 30 h later, the day-0 files are due within the notice, oldest first.
        now.store(T0 + DAY + 6 * 3600, std::sync::atomic::Ordering::SeqCst);
        let status = log.retention_status();
        assert!(status.due_for_deletion.len() as u64 >= day0_files - 1, "{status:?}");
        let left = status.due_for_deletion[0].deleted_in_secs.unwrap();
        assert!(left > 17 * 3600 && left <= 18 * 3600, "{left}");
        assert!(status.due_for_deletion[0].file.ends_with(&format!(".{}", status.rotated_files)));
        assert_eq!(deletion_lines(&path).len(), 0, "nothing deleted before its time");
        // Past two days: the next write (or a periodic enforce) deletes them.
        now.store(T0 + 2 * DAY + 1, std::sync::atomic::Ordering::SeqCst);
        log.enforce_retention();
        let status = log.retention_status();
        assert!(status.deleted_since_start >= day0_files - 1, "{status:?}");
        assert_eq!(status.blocked, None);
        let deleted = deletion_lines(&path);
        assert_eq!(deleted.len() as u64, status.deleted_since_start);
        let first: AuditRecord = serde_json::from_str(&deleted[0]).unwrap();
        let d = first.deleted.unwrap();
        assert_eq!(d.first_seq, 0, "the oldest file goes first");
        assert_eq!(d.sha256.len(), 64);
        assert!(first.reason.unwrap().contains("`audit.keep_days` = 2"));
        // What is left verifies: its first line is anchored by a deletion line.
        let files = chain_files(&path);
        let n = verify(&files).unwrap_or_else(|e| panic!("{e}"));
        assert!(n > 0);
        // Removing the now-oldest file by hand is detected.
        if files.len() > 1 {
            let err = verify(&files[1..]).unwrap_err();
            assert!(err.reason.contains(ACTION_FILE_DELETED), "{err}");
            assert_eq!(err.line, 1);
            assert!(verify_with(&files[1..], true).is_ok());
        }
        // Reopening later continues the chain and the retention.
        drop(log);
        now.store(T0 + 5 * DAY, std::sync::atomic::Ordering::SeqCst);
        let log = AuditLog::open_with(&path, "master", 2000, retention, clock).unwrap();
        log.write(rec(99)).unwrap();
        let st = log.retention_status();
        assert!(
            st.deleted_since_start > 0 && st.oldest_line_age_secs < 2 * DAY,
            "nothing older than 2 days is left: {st:?}"
        );
        verify(&chain_files(&path)).unwrap_or_else(|e| panic!("{e}"));
    }

    #[test]
    fn keep_files_bounds_the_count_and_warns_before_the_next_rotation() {
        let path = tmp("keep-files");
        let (clock, _) = fake_clock(T0);
        let retention = Retention { keep_days: 0, keep_files: 2 };
        let log = AuditLog::open_with(&path, "master", 3000, retention, clock).unwrap();
        for i in 0..200 {
            log.write(rec(i)).unwrap();
            let status = log.retention_status();
            assert!(status.rotated_files <= 2, "{status:?}");
        }
        let status = log.retention_status();
        assert!(status.deleted_since_start > 3, "{status:?}");
        let deleted = deletion_lines(&path);
        assert!(!deleted.is_empty());
        verify(&chain_files(&path)).unwrap_or_else(|e| panic!("{e}"));
        // Fill the live file to 90 %: the oldest is announced for the next rotation.
        let mut i = 100;
        while log.retention_status().due_for_deletion.is_empty() {
            log.write(rec(i)).unwrap();
            i += 1;
            assert!(i < 300);
        }
        let status = log.retention_status();
        assert_eq!(status.due_for_deletion[0].deleted_in_secs, None, "{status:?}");
        assert!(status.due_for_deletion[0].file.ends_with(".2"), "{status:?}");
    }

    #[test]
    fn a_log_whose_oldest_files_were_removed_by_hand_fails_verify() {
        let path = tmp("by-hand");
        let log = AuditLog::open(&path, "master", 600).unwrap();
        for i in 0..20 {
            log.write(rec(i)).unwrap();
        }
        let files = chain_files(&path);
        std::fs::remove_file(&files[0]).unwrap();
        let err = verify(&chain_files(&path)).unwrap_err();
        assert!(err.reason.contains("starts at seq"), "{err}");
        assert!(verify_with(&chain_files(&path), true).is_ok());
    }

    #[test]
    fn retention_does_not_hide_files_removed_by_hand_before_it() {
        let path = tmp("by-hand-then-retention");
        let (clock, _) = fake_clock(T0);
        let log = AuditLog::open_with(&path, "master", 600, Retention::default(), clock.clone()).unwrap();
        for i in 0..30 {
            log.write(rec(i)).unwrap();
        }
        drop(log);
        // Someone removes the oldest file by hand, then retention is set.
        let files = chain_files(&path);
        assert!(files.len() >= 4, "{files:?}");
        std::fs::remove_file(&files[0]).unwrap();
        let retention = Retention { keep_days: 0, keep_files: 1 };
        let log = AuditLog::open_with(&path, "master", 600, retention, clock).unwrap();
        log.write(rec(99)).unwrap();
        assert!(log.retention_status().deleted_since_start > 0);
        let deleted: Vec<AuditRecord> =
            deletion_lines(&path).iter().map(|l| serde_json::from_str(l).unwrap()).collect();
        let first = deleted[0].deleted.clone().unwrap();
        assert!(!first.start_accounted, "{first:?}");
        assert!(deleted[0].reason.as_deref().unwrap().contains("already missing"), "{:?}", deleted[0]);
        // The deletion lines do not launder the gap: verify still fails.
        let err = verify(&chain_files(&path)).unwrap_err();
        assert!(err.reason.contains("already missing"), "{err}");
        assert!(verify_with(&chain_files(&path), true).is_ok());
    }

    #[test]
    fn an_unreadable_oldest_file_stops_retention_and_says_so() {
        let path = tmp("blocked");
        let (clock, now) = fake_clock(T0);
        let retention = Retention { keep_days: 1, keep_files: 0 };
        let log = AuditLog::open_with(&path, "master", 600, retention, clock.clone()).unwrap();
        for i in 0..12 {
            log.write(rec(i)).unwrap();
        }
        drop(log);
        let oldest = chain_files(&path)[0].clone();
        std::fs::write(&oldest, "not an audit line\n").unwrap();
        now.store(T0 + 3 * DAY, std::sync::atomic::Ordering::SeqCst);
        let log = AuditLog::open_with(&path, "master", 600, retention, clock).unwrap();
        let status = log.retention_status();
        assert!(oldest.exists());
        assert!(status.blocked.as_deref().is_some_and(|b| b.contains("by hand")), "{status:?}");
    }

    #[cfg(unix)]
    #[test]
    fn audit_files_are_readable_by_their_owner_only() {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        let path = tmp("modes");
        // An existing world-readable file (an older version, a copy) is made 0600.
        std::fs::write(&path, "").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let log = AuditLog::open(&path, "master", 600).unwrap();
        assert_eq!(mode(&path), 0o600);
        for i in 0..20 {
            log.write(rec(i)).unwrap();
        }
        let files = chain_files(&path);
        assert!(files.len() > 2, "{files:?}");
        for f in &files {
            assert_eq!(mode(f), 0o600, "{}", f.display());
        }
        // A new file is 0600 whatever the umask lets through.
        let fresh = tmp("fresh");
        AuditLog::open(&fresh, "master", 600).unwrap();
        assert_eq!(mode(&fresh), 0o600);
    }

    #[test]
    fn garbage_never_panics() {
        for junk in [
            "",
            "{",
            "{}",
            "{\"seq\":1,\"prev\":\"x\",\"hash\":\"é\"}",
            "ééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééé",
        ] {
            let _ = check_line(junk, None);
        }
    }
}
