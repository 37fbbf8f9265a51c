//! Chains, rotation and retention driven with a fake clock.

use super::record::check_line;
use super::*;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

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
    let clock: Clock =
        Arc::new(move || UNIX_EPOCH + Duration::from_secs(read.load(std::sync::atomic::Ordering::SeqCst)));
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

/// The agent's log anchors the relay's head every few lines, as the
/// control stream does; returns both paths and the newest anchored seq.
fn anchored_pair(name: &str) -> (PathBuf, PathBuf, u64) {
    let relay_path = tmp(&format!("{name}-relay"));
    let agent_path = tmp(&format!("{name}-agent"));
    let relay = AuditLog::open(&relay_path, "carabinieri", 1 << 20).unwrap();
    let agent = AuditLog::open(&agent_path, "master", 1 << 20).unwrap();
    let mut newest = 0;
    for i in 0..20 {
        relay.write(rec(i)).unwrap();
        agent.write(rec(i)).unwrap();
        if i % 4 == 3 {
            let (seq, hash) = relay.chain_head().unwrap();
            newest = seq;
            agent
                .write(AuditRecord {
                    action: ACTION_ANCHOR.into(),
                    outcome: "recorded".into(),
                    anchor: Some(AnchoredHead { node: "carabinieri".into(), seq, hash }),
                    ..Default::default()
                })
                .unwrap();
        }
    }
    // Lines the agent never anchored: cutting them is not caught.
    relay.write(rec(20)).unwrap();
    (relay_path, agent_path, newest)
}

fn cut_last_lines(path: &Path, n: usize) {
    let text = std::fs::read_to_string(path).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let kept = lines[..lines.len() - n].join("\n") + "\n";
    std::fs::write(path, kept).unwrap();
}

#[test]
fn the_other_sides_anchors_catch_a_cut_tail_that_the_chain_alone_cannot() {
    let (relay, agent, newest) = anchored_pair("cut");
    let (rl, al) = (vec![relay.clone()], vec![agent.clone()]);
    let (n, checked) = verify_anchors(&rl, &al, false).unwrap();
    assert_eq!((n, checked.anchors, checked.matched, checked.newest), (21, 5, 5, Some(newest)));
    cut_last_lines(&relay, 1);
    assert!(verify_anchors(&rl, &al, false).is_ok(), "a line written after the last anchor is not covered");
    cut_last_lines(&relay, 5);
    assert_eq!(verify(&rl), Ok(15), "the cut log verifies on its own");
    let broken = verify_anchors(&rl, &al, false).unwrap_err();
    assert!(broken.reason.contains("ends at seq 14"), "{broken}");
    assert!(broken.reason.contains(&format!("anchored seq {newest} ")), "names the newest anchor: {broken}");
    assert!(broken.reason.contains("cut or rewritten"), "{broken}");
    // The relay's own log holds no anchor naming it: refused, not passed.
    let own = verify_anchors(&rl, &rl, false).unwrap_err();
    assert!(own.reason.contains("no `anchor` line names node `carabinieri`"), "{own}");
}

#[test]
fn the_other_sides_anchors_catch_a_rewritten_chain() {
    let (relay, agent, _) = anchored_pair("rewrite");
    // Rewrite the relay's log from line 6 on, chain and all.
    let text = std::fs::read_to_string(&relay).unwrap();
    let mut prev = GENESIS.to_owned();
    let mut out = String::new();
    for (seq, line) in text.lines().enumerate() {
        let mut v: serde_json::Value = serde_json::from_str(line).unwrap();
        if seq >= 6 {
            v["camera"] = serde_json::json!("forged");
        }
        let r: AuditRecord = serde_json::from_value(v).unwrap();
        let (l, h) = chain_line(seq as u64, &r, &prev).unwrap();
        out.push_str(&l);
        out.push('\n');
        prev = h;
    }
    std::fs::write(&relay, out).unwrap();
    assert_eq!(verify(std::slice::from_ref(&relay)), Ok(21), "the forged chain verifies on its own");
    let broken = verify_anchors(&[relay], &[agent], false).unwrap_err();
    assert!(broken.reason.contains("seq 7 has hash"), "{broken}");
    assert!(broken.reason.contains("rewritten"), "{broken}");
}

#[test]
fn a_time_past_the_year_9999_is_written_without_a_panic() {
    let far = std::time::UNIX_EPOCH + std::time::Duration::from_millis(253_402_300_800_000);
    assert!(super::rfc3339(far).contains("after 1970"), "{}", super::rfc3339(far));
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(1_796_638_500_250);
    assert_eq!(super::rfc3339(t), "2026-12-07T10:15:00.25Z");
}
