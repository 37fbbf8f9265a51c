//! Recall at the agent (issue 21): cameras recorded by `[[recording]]`
//! rules into GOP stores (`ponte_proto::recall::store`), played back to
//! partner sites as ordinary subscriptions that start in the past, and
//! exported as MP4 clips with a manifest signed by the agent's key.
//!
//! - `recorder`: one task per recorded stream reads the camera's hub track
//!   like any viewer (a slow disk makes it skip, never the live viewers)
//!   and hands whole GOPs to the rule's writer thread, which owns the
//!   store's writes, its quota, its retention and its alarm.
//! - `playback`: a private hub track fed from the store at the pace of the
//!   recorded timestamps; the session's pump sends it like a live one.
//! - `export`: the GOPs of an interval, muxed and signed.

mod export;
mod playback;
mod recorder;

pub use export::ExportRequest;

use crate::config::recording::{RecordingRule, RecordingsSection};
use anyhow::{Context, Result};
use ponte_proto::audit::{AuditLog, AuditRecord};
use ponte_proto::hub::{TrackKey, TrackReader};
use ponte_proto::media::Quality;
use ponte_proto::policy::{CameraFacts, Selector};
use ponte_proto::recall::store::{Store, StoreLimits};
use ponte_proto::status::RecordingStatus;
use ponte_proto::tls::TlsSection;
use ponte_proto::wire::{CatalogEntry, Playback};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tracing::{error, info, warn};

/// One `[[recording]]` rule at run time.
pub(crate) struct Rule {
    name: String,
    cameras: Vec<Selector>,
    except: Vec<Selector>,
    quality: Quality,
    retention_hours: f64,
    max_bytes: u64,
    dir: PathBuf,
    store: Arc<Store>,
    /// Whole GOPs on their way to the writer thread.
    writer: std::sync::mpsc::SyncSender<(TrackKey, ponte_proto::recall::RecordedGop)>,
    counters: RuleCounters,
}

#[derive(Default)]
struct RuleCounters {
    recording: AtomicU32,
    gops_written: AtomicU64,
    gops_lost: AtomicU64,
    alarm: Mutex<Option<String>>,
}

impl Rule {
    fn records(&self, c: &CatalogEntry) -> bool {
        let facts = CameraFacts { id: &c.id, device: &c.device, zone: &c.zone, kind: &c.kind, tags: &c.tags };
        c.qualities.contains(&self.quality)
            && self.cameras.iter().any(|s| s.matches(&facts))
            && !self.except.iter().any(|s| s.matches(&facts))
    }

    fn set_alarm(&self, alarm: Option<String>) -> bool {
        let mut slot = self.counters.alarm.lock().unwrap_or_else(|e| e.into_inner());
        let changed = *slot != alarm;
        *slot = alarm;
        changed
    }
}

/// The agent's recordings.
pub struct Recall {
    rules: Vec<Arc<Rule>>,
    node: String,
    tls: TlsSection,
    audit: Arc<AuditLog>,
    /// One export at a time: each holds its clip in memory until it is sent.
    exporting: Arc<tokio::sync::Semaphore>,
}

impl Recall {
    /// Opens every rule's store (repairing torn tails, audited) and starts
    /// its writer thread; the recorders start with [`Recall::spawn_recorders`].
    pub fn open(
        section: &RecordingsSection,
        rules: &[RecordingRule],
        node: &str,
        tls: &TlsSection,
        audit: Arc<AuditLog>,
    ) -> Result<Arc<Self>> {
        let mut out = Vec::new();
        for r in rules {
            let (cameras, except) = r.selectors()?;
            let dir = section.dir.join(&r.name);
            std::fs::create_dir_all(&dir)
                .with_context(|| format!("creating `{}` (`recordings.dir`)", dir.display()))?;
            let limits = StoreLimits {
                retention_ms: (r.retention_hours * 3_600_000.0) as u64,
                max_bytes: r.max_bytes(),
                segment_secs: section.segment_secs,
            };
            let (store, repairs) = Store::open(&dir, limits).with_context(|| {
                format!("opening the recordings of `[[recording]]` {:?} in `{}`", r.name, dir.display())
            })?;
            for repair in &repairs {
                warn!(rule = %r.name, %repair, "recordings: a torn tail was cut off (the GOP being written when the agent stopped)");
                write_audit(
                    &audit,
                    AuditRecord {
                        action: "recording-repaired".into(),
                        outcome: "truncated".into(),
                        reason: Some(format!("rule `{}`: {repair}", r.name)),
                        ..Default::default()
                    },
                );
            }
            let (tx, rx) = std::sync::mpsc::sync_channel(recorder::WRITER_QUEUE_GOPS);
            let rule = Arc::new(Rule {
                name: r.name.clone(),
                cameras,
                except,
                quality: r.quality,
                retention_hours: r.retention_hours,
                max_bytes: r.max_bytes(),
                dir: dir.clone(),
                store: Arc::new(store),
                writer: tx,
                counters: RuleCounters::default(),
            });
            info!(
                rule = %r.name,
                dir = %dir.display(),
                retention_hours = r.retention_hours,
                max_gb = r.max_gb,
                bytes = rule.store.bytes(),
                "recordings: store open"
            );
            write_audit(
                &audit,
                AuditRecord {
                    action: "recording-rule".into(),
                    outcome: "started".into(),
                    reason: Some(format!(
                        "rule `{}`: {} quality of {:?} except {:?}, kept {} h, at most {} GB, in {}",
                        r.name,
                        r.quality.name(),
                        r.cameras,
                        r.except,
                        r.retention_hours,
                        r.max_gb,
                        dir.display()
                    )),
                    ..Default::default()
                },
            );
            recorder::spawn_writer(rule.clone(), rx, audit.clone());
            out.push(rule);
        }
        Ok(Arc::new(Self {
            rules: out,
            node: node.to_owned(),
            tls: tls.clone(),
            audit,
            exporting: Arc::new(tokio::sync::Semaphore::new(1)),
        }))
    }

    /// No `[[recording]]` rule: nothing recorded, every playback refused.
    pub fn none(node: &str, tls: &TlsSection, audit: Arc<AuditLog>) -> Arc<Self> {
        Arc::new(Self {
            rules: Vec::new(),
            node: node.to_owned(),
            tls: tls.clone(),
            audit,
            exporting: Arc::new(tokio::sync::Semaphore::new(1)),
        })
    }

    /// Keeps a recorder running for every camera stream a rule selects, as
    /// the catalog changes.
    pub fn spawn_recorders(self: &Arc<Self>, cameras: Arc<crate::sources::cameras::Cameras>) {
        if self.rules.is_empty() {
            return;
        }
        tokio::spawn(recorder::supervise(self.rules.clone(), cameras));
    }

    /// The rule whose store holds `camera` at `quality` at `at_ms` (else
    /// the one holding it at all, else the first selecting it).
    fn store_of(&self, camera: &str, quality: Quality, at_ms: Option<u64>) -> Option<&Arc<Rule>> {
        let key = TrackKey::new(camera, quality);
        let holding: Vec<&Arc<Rule>> =
            self.rules.iter().filter(|r| r.quality == quality && !r.store.ranges(&key).is_empty()).collect();
        at_ms
            .and_then(|at| {
                holding
                    .iter()
                    .copied()
                    .find(|r| r.store.ranges(&key).iter().any(|(a, b)| *a <= at && at <= *b))
            })
            .or_else(|| holding.first().copied())
    }

    /// Recorded ranges of a camera, `[from_ms, to_ms]`, oldest first (the
    /// union over the rules that record it).
    pub fn ranges(&self, camera: &str, quality: Quality) -> Vec<[u64; 2]> {
        let key = TrackKey::new(camera, quality);
        let mut all: Vec<(u64, u64)> =
            self.rules.iter().filter(|r| r.quality == quality).flat_map(|r| r.store.ranges(&key)).collect();
        all.sort_unstable();
        let mut out: Vec<[u64; 2]> = Vec::new();
        for (a, b) in all {
            match out.last_mut() {
                Some(last) if a <= last[1] => last[1] = last[1].max(b),
                _ => out.push([a, b]),
            }
        }
        out
    }

    /// A private track playing `camera` back from `p.from_ms`, or why not.
    pub fn playback(&self, camera: &str, quality: Quality, p: Playback) -> Result<TrackReader, String> {
        let q = quality.name();
        let Some(rule) = self.store_of(camera, quality, Some(p.from_ms)) else {
            return Err(format!("nothing is recorded of camera `{camera}` ({q}) at the master room"));
        };
        playback::start(rule.store.clone(), TrackKey::new(camera, quality), p).ok_or_else(|| {
            format!(
                "nothing is recorded of camera `{camera}` ({q}) at or after {}",
                crate::uplink::state::describe_interval(p.from_ms, None)
            )
        })
    }

    /// The status rows of the rules.
    pub fn status(&self) -> Vec<RecordingStatus> {
        self.rules
            .iter()
            .map(|r| {
                let c = &r.counters;
                let d = r.store.deletions();
                let deleted: BTreeMap<String, u64> =
                    [("retention", d.retention), ("quota", d.quota), ("disk-full", d.disk_full)]
                        .into_iter()
                        .filter(|(_, n)| *n > 0)
                        .map(|(k, n)| (k.to_owned(), n))
                        .collect();
                RecordingStatus {
                    rule: r.name.clone(),
                    dir: r.dir.display().to_string(),
                    recording: c.recording.load(Ordering::Relaxed),
                    bytes: r.store.bytes(),
                    max_bytes: r.max_bytes,
                    retention_hours: r.retention_hours,
                    oldest_ms: r.store.tracks().iter().filter_map(|k| r.store.oldest_ms(k)).min(),
                    gops_written: c.gops_written.load(Ordering::Relaxed),
                    gops_lost: c.gops_lost.load(Ordering::Relaxed),
                    deleted,
                    alarm: c.alarm.lock().unwrap_or_else(|e| e.into_inner()).clone(),
                }
            })
            .collect()
    }

    /// Syncs and closes every store's open segments (shutdown).
    pub fn close(&self) {
        for r in &self.rules {
            r.store.close_segments();
        }
    }
}

fn write_audit(audit: &AuditLog, record: AuditRecord) {
    if let Err(e) = audit.write(record) {
        error!(error = %e, path = %audit.path().display(), "cannot write the audit log");
    }
}

/// Unix time now, milliseconds.
pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
