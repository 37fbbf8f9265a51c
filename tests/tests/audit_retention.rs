//! Audit retention against the real relay: files past `audit.keep_days` are
//! deleted only after a line recording each one, files due within 24 h are
//! announced on the status JSON, page, metrics and CLI, and `audit verify`
//! (both binaries) passes on what is left, while a file removed by hand is
//! still caught.

use anyhow::{Context, Result};
use ponte_proto::audit::{AuditLog, AuditRecord, Clock, Retention, ACTION_FILE_DELETED};
use ponte_tests::{agent_cli, bin_path, free_tcp_port, free_udp_port, http_get, Pki, Proc, RelayConfig};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const DAY: u64 = 86_400;
const T: Duration = Duration::from_secs(20);

fn record(i: usize) -> AuditRecord {
    AuditRecord {
        viewer: Some("anna".into()),
        camera: Some(format!("cam-{i}")),
        action: "view-start".into(),
        outcome: "allowed".into(),
        ..Default::default()
    }
}

/// Writes a log as a relay would have over 100 days: old files (100 days),
/// files about to expire (29.6 days, under `keep_days = 30`), recent lines.
fn write_history(path: &std::path::Path) -> Result<()> {
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    let t = Arc::new(AtomicU64::new(now - 100 * DAY));
    let read = t.clone();
    let clock: Clock = Arc::new(move || UNIX_EPOCH + Duration::from_secs(read.load(Ordering::SeqCst)));
    let log = AuditLog::open_with(path, "carabinieri", 4000, Retention::default(), clock)?;
    let mut i = 0;
    let mut write_until_rotated = |files: u64| -> Result<()> {
        let target = log.retention_status().rotated_files + files;
        while log.retention_status().rotated_files < target {
            log.write(record(i))?;
            i += 1;
        }
        Ok(())
    };
    write_until_rotated(3)?;
    t.store(now - 29 * DAY - 14 * 3600, Ordering::SeqCst);
    write_until_rotated(1)?;
    t.store(now - 3600, Ordering::SeqCst);
    write_until_rotated(1)?;
    Ok(())
}

#[tokio::test]
async fn retention_records_each_deletion_warns_a_day_ahead_and_verify_passes() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let pki = Pki::create(dir.path().join("pki"), &["carabinieri"]).await?;
    let audit = dir.path().join("relay-audit.log");
    write_history(&audit)?;
    let before = ponte_proto::audit::chain_files(&audit).len();

    let mut cfg = RelayConfig::new(
        "carabinieri",
        format!("127.0.0.1:{}", free_udp_port()).parse()?,
        format!("127.0.0.1:{}", free_tcp_port()).parse()?,
        pki.tls("carabinieri"),
    );
    cfg.audit.path = audit.clone();
    cfg.audit.max_mb = 1;
    cfg.audit.keep_days = 30;
    let config = cfg.write(dir.path().join("relay.toml"))?;
    let mut cmd = std::process::Command::new(bin_path("ponte-relay")?);
    cmd.arg("run").arg("--config").arg(&config).env("RUST_LOG", "info");
    let mut relay = Proc::spawn_command("ponte-relay", cmd)?;
    let url = relay.management_url(T).await?;

    // The status document names the deletions and the file due next.
    let status = http_get(&format!("{url}/status")).await?.json()?;
    let a = &status["audit"];
    assert_eq!(a["keep_days"], 30, "{status}");
    assert!(a["deleted_since_start"].as_u64().context("deleted_since_start")? >= 3, "{a}");
    let due = a["due_for_deletion"].as_array().context("due_for_deletion")?;
    assert_eq!(due.len(), 1, "the 29.6-day-old file is due, not the 1-hour-old one: {a}");
    let left = due[0]["deleted_in_secs"].as_u64().context("deleted_in_secs")?;
    assert!((9 * 3600..=11 * 3600).contains(&left), "due in about 10 h: {a}");
    let metrics = http_get(&format!("{url}/metrics")).await?.text();
    assert!(metrics.contains("\nponte_audit_files_due_for_deletion 1\n"), "{metrics}");
    assert!(metrics.contains("\nponte_audit_files_deleted_total "), "{metrics}");
    let page = http_get(&format!("{url}/")).await?.text();
    assert!(page.contains("will be deleted in") && page.contains("copy it off the host first"), "{page}");
    let out =
        std::process::Command::new(bin_path("ponte-relay")?).args(["status", "--url", &url]).output()?;
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.contains("AUDIT") && table.contains("WARNING: audit file"), "{table}");
    assert!(table.contains("`audit.keep_days`"), "{table}");
    relay.terminate(T).await?;

    // Each deletion is a line of the log naming the file.
    let files = ponte_proto::audit::chain_files(&audit);
    assert!(files.len() < before, "{before} files before, {} after", files.len());
    let text: String = files.iter().map(std::fs::read_to_string).collect::<std::io::Result<_>>()?;
    let deletions: Vec<&str> =
        text.lines().filter(|l| l.contains(&format!("\"action\":\"{ACTION_FILE_DELETED}\""))).collect();
    assert!(deletions.len() >= 3, "{deletions:?}");
    assert!(
        deletions[0].contains("\"first_seq\":0") && deletions[0].contains("\"sha256\":\""),
        "{}",
        deletions[0]
    );

    // What is left verifies, with either binary.
    let path = audit.to_string_lossy().into_owned();
    let out = ponte_tests::relay_cli(&["audit", "verify", &path], "")?;
    assert!(out.contains("audit log intact"), "{out}");
    let out = agent_cli(&["audit", "verify", &path], "")?;
    assert!(out.contains("audit log intact"), "{out}");

    // The oldest remaining file removed by hand: verify says so, and
    // `--allow-missing-start` checks what is there.
    std::fs::remove_file(&files[0])?;
    let err = ponte_tests::relay_cli(&["audit", "verify", &path], "").unwrap_err();
    assert!(format!("{err:#}").contains(ACTION_FILE_DELETED), "{err:#}");
    let out = ponte_tests::relay_cli(&["audit", "verify", "--allow-missing-start", &path], "")?;
    assert!(out.contains("audit log intact"), "{out}");
    Ok(())
}
