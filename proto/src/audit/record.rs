//! The line format: an [`AuditRecord`] serialised as one JSON line with
//! its sequence number, the hash of the line before it and its own hash;
//! formatting a line (`chain_line`) and reading one back (`check_line`,
//! `LineInfo`).

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::time::SystemTime;
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

/// The head of another node's audit chain, as an `anchor` line records it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AnchoredHead {
    /// The node whose chain it is (the `node` of its lines).
    pub node: String,
    /// Sequence number of its newest line when sent.
    pub seq: u64,
    /// Hash of that line.
    pub hash: String,
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
    /// The peer's chain head (`anchor` lines).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub anchor: Option<AnchoredHead>,
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

#[derive(Deserialize)]
pub(super) struct Fields {
    pub(super) seq: u64,
    pub(super) prev: String,
    pub(super) hash: String,
    #[serde(default)]
    pub(super) time: String,
    #[serde(default)]
    pub(super) action: String,
    #[serde(default)]
    pub(super) deleted: Option<DeletedFile>,
    #[serde(default)]
    pub(super) node: String,
    #[serde(default)]
    pub(super) anchor: Option<AnchoredHead>,
}

/// Checks one line against the previous hash; returns its fields.
pub(super) fn check_line(line: &str, prev: Option<&str>) -> Result<Fields, String> {
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

/// The first or last line of a file, as retention needs it.
#[derive(Debug, Clone)]
pub(super) struct LineInfo {
    pub(super) seq: u64,
    pub(super) time: String,
    pub(super) hash: String,
    pub(super) prev: String,
}

impl LineInfo {
    pub(super) fn parse(line: &str) -> Option<Self> {
        let f: Fields = serde_json::from_str(line).ok()?;
        Some(Self { seq: f.seq, time: f.time, hash: f.hash, prev: f.prev })
    }
}

/// Current UTC time in RFC 3339 with milliseconds.
pub fn now_rfc3339() -> String {
    rfc3339(SystemTime::now())
}

/// `t` as RFC 3339 (UTC), as in audit lines. Total: a time outside the
/// years 1970 to 9999 (a peer's far-future request) is written in seconds
/// since the epoch instead of panicking in the calendar.
pub fn rfc3339(t: SystemTime) -> String {
    let since = t.duration_since(SystemTime::UNIX_EPOCH).ok();
    since
        .and_then(|d| time::Duration::try_from(d).ok())
        .and_then(|d| time::OffsetDateTime::UNIX_EPOCH.checked_add(d))
        .filter(|t| t.year() <= 9999)
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_else(|| format!("{} s after 1970-01-01T00:00:00Z", since.map_or(0, |d| d.as_secs())))
}
