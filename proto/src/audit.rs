//! Tamper-evident audit log: JSON lines, each carrying the hash of the line
//! before it (a hash chain) and its own hash. Editing, inserting or removing
//! a line breaks the chain at that line; rotation carries the chain over.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Hash linking the first line of a brand-new log.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";
/// Rotated files kept (`audit.log.1` … `audit.log.N`).
pub const KEEP_ROTATED: usize = 30;

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
    let digest = Sha256::digest(data);
    let mut s = String::with_capacity(64);
    for b in digest {
        use std::fmt::Write as _;
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// Formats a chained line (without newline) and returns it with its hash.
pub fn chain_line(seq: u64, record: &AuditRecord, prev: &str) -> (String, String) {
    let body = serde_json::to_string(&Chained { seq, record, prev }).unwrap_or_else(|_| "{}".into());
    let hash = sha256_hex(body.as_bytes());
    let mut line = body;
    line.pop(); // the closing brace
    line.push_str(&format!(",\"hash\":\"{hash}\"}}"));
    (line, hash)
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
}

/// Checks one line against the previous hash; returns its own hash and seq.
fn check_line(line: &str, prev: Option<&str>) -> Result<(String, u64), String> {
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
    Ok((hash, fields.seq))
}

/// Verifies files in chronological order (oldest rotated file first).
/// Returns the number of lines checked, or the first broken line.
pub fn verify(files: &[PathBuf]) -> Result<usize, BrokenLine> {
    let mut prev: Option<String> = None;
    let mut last_seq: Option<u64> = None;
    let mut count = 0;
    for path in files {
        let file_name = path.display().to_string();
        let broken = |line: usize, reason: String| BrokenLine { file: file_name.clone(), line, reason };
        let f = File::open(path).map_err(|e| broken(0, format!("cannot open: {e}")))?;
        for (i, line) in BufReader::new(f).lines().enumerate() {
            let line = line.map_err(|e| broken(i + 1, format!("cannot read: {e}")))?;
            let (hash, seq) = check_line(&line, prev.as_deref()).map_err(|r| broken(i + 1, r))?;
            if let Some(last) = last_seq {
                if seq != last + 1 {
                    return Err(broken(
                        i + 1,
                        format!("sequence jumps from {last} to {seq}: lines are missing"),
                    ));
                }
            }
            last_seq = Some(seq);
            prev = Some(hash);
            count += 1;
        }
    }
    Ok(count)
}

struct Writer {
    file: File,
    size: u64,
    prev: String,
    seq: u64,
}

/// An append-only audit file with size-based rotation that keeps the chain.
pub struct AuditLog {
    path: PathBuf,
    max_bytes: u64,
    node: String,
    w: Mutex<Writer>,
    errors: std::sync::atomic::AtomicU64,
}

fn last_line_fields(path: &Path) -> std::io::Result<Option<(String, u64)>> {
    let mut f = File::open(path)?;
    let len = f.seek(SeekFrom::End(0))?;
    let start = len.saturating_sub(64 * 1024);
    f.seek(SeekFrom::Start(start))?;
    let mut tail = String::new();
    std::io::Read::read_to_string(&mut f, &mut tail)?;
    Ok(tail.lines().rev().find(|l| !l.trim().is_empty()).and_then(|l| {
        let fields: Fields = serde_json::from_str(l).ok()?;
        Some((fields.hash, fields.seq))
    }))
}

impl AuditLog {
    /// Opens (or creates) `path`, continuing the chain of what is there.
    pub fn open(path: impl Into<PathBuf>, node: impl Into<String>, max_bytes: u64) -> std::io::Result<Self> {
        let path = path.into();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let (prev, seq) = match last_line_fields(&path) {
            Ok(Some((hash, seq))) => (hash, seq + 1),
            _ => match last_line_fields(&rotated(&path, 1)) {
                Ok(Some((hash, seq))) => (hash, seq + 1),
                _ => (GENESIS.to_owned(), 0),
            },
        };
        let file = open_append(&path)?;
        let size = file.metadata()?.len();
        Ok(Self {
            path,
            max_bytes,
            node: node.into(),
            w: Mutex::new(Writer { file, size, prev, seq }),
            errors: Default::default(),
        })
    }

    /// Appends one record (time and node filled in) and flushes it to disk.
    pub fn write(&self, record: AuditRecord) -> std::io::Result<()> {
        let result = self.append(record);
        if result.is_err() {
            self.errors.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        result
    }

    /// Writes that failed since start (disk full, permissions): alert on it.
    pub fn write_errors(&self) -> u64 {
        self.errors.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn append(&self, mut record: AuditRecord) -> std::io::Result<()> {
        if record.time.is_empty() {
            record.time = now_rfc3339();
        }
        if record.node.is_empty() {
            record.node = self.node.clone();
        }
        let mut w = self.w.lock().unwrap_or_else(|e| e.into_inner());
        let (line, hash) = chain_line(w.seq, &record, &w.prev);
        if w.size > 0 && w.size + line.len() as u64 + 1 > self.max_bytes {
            self.rotate(&mut w)?;
        }
        w.file.write_all(line.as_bytes())?;
        w.file.write_all(b"\n")?;
        w.file.sync_data()?;
        w.size += line.len() as u64 + 1;
        w.prev = hash;
        w.seq += 1;
        Ok(())
    }

    fn rotate(&self, w: &mut Writer) -> std::io::Result<()> {
        for i in (1..KEEP_ROTATED).rev() {
            let from = rotated(&self.path, i);
            if from.exists() {
                std::fs::rename(&from, rotated(&self.path, i + 1))?;
            }
        }
        std::fs::rename(&self.path, rotated(&self.path, 1))?;
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
    let mut files: Vec<PathBuf> =
        (1..=KEEP_ROTATED).map(|n| rotated(path, n)).filter(|p| p.exists()).collect();
    files.reverse();
    files.push(path.to_owned());
    files
}

/// Current UTC time in RFC 3339 with milliseconds.
pub fn now_rfc3339() -> String {
    let now = time::OffsetDateTime::now_utc();
    now.format(&time::format_description::well_known::Rfc3339).unwrap_or_default()
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
