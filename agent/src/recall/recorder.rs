//! Recording: a task per recorded camera stream, and one writer thread per
//! rule that owns the store's writes.

use super::{now_ms, write_audit, Rule};
use crate::sources::cameras::Cameras;
use ponte_proto::audit::{AuditLog, AuditRecord};
use ponte_proto::hub::TrackKey;
use ponte_proto::recall::store::StoreError;
use ponte_proto::recall::RecordedGop;
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError, TrySendError};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;
use tracing::{debug, error, info, warn};

/// GOPs queued for a rule's writer: past this the recorder drops GOPs
/// (counted as lost) rather than hold frames or slow anyone.
pub(super) const WRITER_QUEUE_GOPS: usize = 256;
/// How often retention runs.
const EXPIRE_EVERY: Duration = Duration::from_secs(30);
/// How soon a recorder retries a camera stream that is not there.
const RETRY: Duration = Duration::from_secs(1);

/// Keeps one recorder per (rule, camera) the rules select, as the catalog
/// changes (devices added or removed by a reload).
pub(super) async fn supervise(rules: Vec<Arc<Rule>>, cameras: Arc<Cameras>) {
    // By (rule name, camera): the rule and its recorder.
    let mut running: HashMap<(String, String), (Arc<Rule>, JoinHandle<()>)> = HashMap::new();
    let mut version = cameras.catalog_version();
    loop {
        let catalog = cameras.catalog();
        let mut wanted = Vec::new();
        for rule in &rules {
            for c in catalog.iter().filter(|c| rule.records(c)) {
                wanted.push((rule.clone(), c.id.clone()));
            }
        }
        running.retain(|k, (rule, task)| {
            let keep = wanted.iter().any(|(r, c)| r.name == k.0 && *c == k.1);
            if !keep {
                task.abort();
                rule.counters.recording.fetch_sub(1, Ordering::Relaxed);
            }
            keep
        });
        for (rule, camera) in wanted {
            let k = (rule.name.clone(), camera.clone());
            if running.contains_key(&k) {
                continue;
            }
            rule.counters.recording.fetch_add(1, Ordering::Relaxed);
            let key = TrackKey::new(camera, rule.quality);
            info!(rule = %rule.name, track = %key, "recording");
            let task = tokio::spawn(record(rule.clone(), cameras.clone(), key));
            running.insert(k, (rule, task));
        }
        if version.changed().await.is_err() {
            return;
        }
    }
}

/// Records one camera stream for ever: whole GOPs to the writer. It reads
/// the hub like a viewer: if it falls behind, the hub skips it to the next
/// keyframe and the live viewers never notice.
async fn record(rule: Arc<Rule>, cameras: Arc<Cameras>, key: TrackKey) {
    let mut lost_logged = Instant::now() - Duration::from_secs(3600);
    loop {
        if let Some(mut reader) = cameras.subscribe(&key.camera, key.quality) {
            // The cached GOP started before now: its time is not known
            // well enough for the index; start at the next live keyframe.
            while reader.try_next().is_some() {}
            let mut gop: Option<RecordedGop> = None;
            while let Some(item) = reader.next().await {
                if item.frame.keyframe {
                    if let Some(done) = gop.take() {
                        submit(&rule, &key, done, &mut lost_logged);
                    }
                    gop = Some(RecordedGop {
                        wall_ms: now_ms(),
                        seq: item.gop_seq,
                        config: item.config.clone(),
                        frames: vec![item.frame],
                    });
                } else if let Some(g) = gop.as_mut().filter(|g| g.seq == item.gop_seq) {
                    g.frames.push(item.frame);
                }
            }
            // The stream ended: what arrived of the last GOP decodes.
            if let Some(done) = gop.take() {
                submit(&rule, &key, done, &mut lost_logged);
            }
            debug!(rule = %rule.name, track = %key, "recording: the camera stream ended; waiting for it");
        }
        tokio::time::sleep(RETRY).await;
    }
}

fn submit(rule: &Rule, key: &TrackKey, gop: RecordedGop, lost_logged: &mut Instant) {
    match rule.writer.try_send((key.clone(), gop)) {
        Ok(()) => {}
        Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
            rule.counters.gops_lost.fetch_add(1, Ordering::Relaxed);
            if lost_logged.elapsed() > Duration::from_secs(10) {
                *lost_logged = Instant::now();
                warn!(rule = %rule.name, track = %key, "recording: the disk is not keeping up; GOPs are dropped from the recording (live goes on)");
            }
        }
    }
}

/// Starts the rule's writer thread: appends, the quota, retention, and the
/// disk-full alarm. Blocking file I/O stays off the async workers.
pub(super) fn spawn_writer(rule: Arc<Rule>, rx: Receiver<(TrackKey, RecordedGop)>, audit: Arc<AuditLog>) {
    let name = format!("rec-{}", rule.name);
    let spawned = std::thread::Builder::new().name(name).spawn(move || writer(rule, rx, audit));
    if let Err(e) = spawned {
        error!(error = %e, "recordings: cannot start the writer thread; nothing will be recorded");
    }
}

fn writer(rule: Arc<Rule>, rx: Receiver<(TrackKey, RecordedGop)>, audit: Arc<AuditLog>) {
    let mut last_expire: Option<Instant> = None;
    loop {
        match rx.recv_timeout(Duration::from_secs(1)) {
            Ok((key, gop)) => append(&rule, &audit, &key, &gop),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => break,
        }
        if last_expire.is_none_or(|t| t.elapsed() >= EXPIRE_EVERY) {
            last_expire = Some(Instant::now());
            let removed = rule.store.expire(now_ms());
            if !removed.is_empty() {
                let n = removed.len() as u64;
                info!(rule = %rule.name, segments = n, retention_hours = rule.retention_hours, "recordings: expired by retention");
                write_audit(
                    &audit,
                    AuditRecord {
                        action: "recording-expired".into(),
                        outcome: "deleted".into(),
                        reason: Some(format!(
                            "rule `{}`: {n} segment(s) older than {} h deleted (`retention_hours`)",
                            rule.name, rule.retention_hours
                        )),
                        ..Default::default()
                    },
                );
            }
        }
    }
    rule.store.close_segments();
}

fn append(rule: &Rule, audit: &AuditLog, key: &TrackKey, gop: &RecordedGop) {
    match rule.store.append(key, gop) {
        Ok(appended) => {
            rule.counters.gops_written.fetch_add(1, Ordering::Relaxed);
            if !appended.removed.is_empty() {
                debug!(rule = %rule.name, segments = appended.removed.len(), "recordings: oldest segments deleted to make room");
            }
            if rule.set_alarm(None) {
                info!(rule = %rule.name, "recordings: writing again");
                write_audit(
                    audit,
                    AuditRecord {
                        action: "recording-alarm".into(),
                        outcome: "cleared".into(),
                        reason: Some(format!("rule `{}`: the store writes again", rule.name)),
                        ..Default::default()
                    },
                );
            }
        }
        Err(e) => {
            rule.counters.gops_lost.fetch_add(1, Ordering::Relaxed);
            let alarm = match e {
                StoreError::Full { .. } => format!(
                    "the disk of `{}` is full and no older recording is left to delete: recording stopped, \
                     live video goes on; free space or move `recordings.dir`",
                    rule.dir.display()
                ),
                other => format!("cannot write the recordings in `{}`: {other}", rule.dir.display()),
            };
            if rule.set_alarm(Some(alarm.clone())) {
                error!(rule = %rule.name, track = %key, "recordings: {alarm}");
                write_audit(
                    audit,
                    AuditRecord {
                        action: "recording-alarm".into(),
                        outcome: "raised".into(),
                        camera: Some(key.camera.clone()),
                        reason: Some(format!("rule `{}`: {alarm}", rule.name)),
                        ..Default::default()
                    },
                );
            }
        }
    }
}
