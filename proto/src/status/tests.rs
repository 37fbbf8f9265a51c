//! The renderings of one document: what each shows and escapes.

use super::*;
use std::time::Instant;

fn doc() -> StatusDoc {
    StatusDoc {
        node: "carabinieri".into(),
        role: "relay".into(),
        version: "0.1.0".into(),
        uptime_secs: 5,
        health: Health::Degraded,
        problems: vec!["camera `x\"y` offline".into()],
        links: vec![LinkStatus {
            peer: "master".into(),
            direction: "from-agent".into(),
            state: "up".into(),
            rtt_ms: Some(1.5),
            ..Default::default()
        }],
        cameras: vec![CameraStatus {
            id: "x\"y".into(),
            quality: "main".into(),
            state: "offline".into(),
            last_error: Some("<401>".into()),
            ..Default::default()
        }],
        ..Default::default()
    }
}

#[test]
fn prometheus_escapes_labels_and_types_every_metric() {
    let text = doc().prometheus();
    assert!(text.contains("ponte_camera_up{camera=\"x\\\"y\",quality=\"main\"} 0"), "{text}");
    assert!(
        text.contains("ponte_link_rtt_seconds{link=\"master\",direction=\"from-agent\"} 0.0015"),
        "{text}"
    );
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let name = line.split(['{', ' ']).next().unwrap();
        assert!(text.contains(&format!("# TYPE {name} ")), "{name} has a TYPE line");
    }
}

/// The naming rules `promtool check metrics` lints (the e2e test runs
/// promtool itself on live nodes): counters end in `_total`, nothing
/// else does, units are base units.
#[test]
fn metric_names_follow_prometheus_conventions() {
    for line in doc().prometheus().lines() {
        let Some(rest) = line.strip_prefix("# TYPE ") else { continue };
        let (name, kind) = rest.split_once(' ').unwrap();
        assert_eq!(kind == "counter", name.ends_with("_total"), "{name} is a {kind}");
        for unit in ["bits", "_ms", "milliseconds", "kilobytes", "megabytes", "minutes"] {
            assert!(!name.contains(unit), "{name}: use base units");
        }
    }
}

#[test]
fn html_escapes_and_colours() {
    let page = doc().html();
    assert!(page.contains("&lt;401&gt;") && !page.contains("<401>"));
    assert!(page.contains("class='dot red'"));
    let table = doc().table();
    assert!(table.contains("DEGRADED"), "{table}");
    // One spelling on the page and in the CLI.
    assert!(page.contains(": DEGRADED</title>") && page.contains("— DEGRADED</h1>"), "{page}");
    let ok = StatusDoc { health: Health::Ok, ..doc() };
    assert!(ok.html().contains("— OK</h1>") && ok.table().contains("s: OK\n"), "{}", ok.table());
}

#[test]
fn audit_files_due_for_deletion_are_announced_everywhere() {
    let mut d = doc();
    d.audit = Some(crate::audit::RetentionStatus {
        path: "/var/lib/ponte/relay-audit.log".into(),
        retention: "rotated files deleted 90 days after their last line (`audit.keep_days`)".into(),
        keep_days: 90,
        rotated_files: 3,
        oldest_line_age_secs: 90 * 86_400 - 3600,
        due_for_deletion: vec![crate::audit::DueFile {
            file: "/var/lib/ponte/relay-audit.log.3".into(),
            first_time: "2026-01-01T00:00:00Z".into(),
            last_time: "2026-01-02T00:00:00Z".into(),
            deleted_in_secs: Some(3600 + 120),
        }],
        ..Default::default()
    });
    let want = "relay-audit.log.3 (2026-01-01T00:00:00Z to 2026-01-02T00:00:00Z) will be deleted in 1h02m";
    assert!(d.table().contains(want), "{}", d.table());
    assert!(d.html().contains(want), "{}", d.html());
    let text = d.prometheus();
    assert!(text.contains("ponte_audit_files_due_for_deletion 1\n"), "{text}");
    assert!(text.contains("ponte_audit_oldest_file_age_seconds 7772400\n"), "{text}");
    let json = serde_json::to_string(&d).unwrap();
    assert!(json.contains("\"due_for_deletion\":[{\"file\""), "{json}");
    assert_eq!(serde_json::from_str::<StatusDoc>(&json).unwrap(), d);
}

#[test]
fn rates() {
    let mut m = RateMeter::default();
    let t = Instant::now();
    assert_eq!(m.rate("a", 100, t), 0.0);
    let r = m.rate("a", 1100, t + std::time::Duration::from_secs(2));
    assert!((r - 4000.0).abs() < 1e-6);
}

/// The agent's transcodes: in the JSON, as metrics and, once one ran or
/// was refused, in the table.
#[test]
fn transcodes_show_in_json_metrics_and_table() {
    use super::TranscodeStatus;
    let idle = StatusDoc { transcodes: Some(TranscodeStatus { max: 4, ..Default::default() }), ..doc() };
    assert!(!idle.table().contains("TRANSCODES"), "nothing to say while none ran");
    let busy = StatusDoc {
        transcodes: Some(TranscodeStatus { active: 1, max: 1, refused: 2, cameras: vec!["cam-hevc".into()] }),
        ..doc()
    };
    let metrics = busy.prometheus();
    for line in ["ponte_transcodes_active 1", "ponte_transcodes_max 1", "ponte_transcode_refusals_total 2"] {
        assert!(metrics.contains(line), "{line} in {metrics}");
    }
    assert!(busy.table().contains("TRANSCODES  1 of 1 running (agent.max_transcodes): cam-hevc; 2 refused"));
    let json = serde_json::to_value(&busy).expect("serialises");
    assert_eq!(json["transcodes"]["active"], 1);
    assert!(
        serde_json::to_value(doc()).expect("serialises").get("transcodes").is_none(),
        "relays say nothing"
    );
}
