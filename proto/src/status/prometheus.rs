//! The Prometheus text rendering, with label escaping.

use super::{CameraStatus, LinkStatus, StatusDoc};
use std::fmt::Write as _;

fn esc_label(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

impl StatusDoc {
    /// Prometheus text exposition (version 0.0.4). Labels are bounded by
    /// configuration: links, cameras × 2 qualities; no per-viewer series.
    pub fn prometheus(&self) -> String {
        let mut out = String::new();
        let mut metric = |name: &str, kind: &str, help: &str, rows: Vec<(String, f64)>| {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} {kind}");
            for (labels, v) in rows {
                if labels.is_empty() {
                    let _ = writeln!(out, "{name} {v}");
                } else {
                    let _ = writeln!(out, "{name}{{{labels}}} {v}");
                }
            }
        };
        let node = format!("node=\"{}\",role=\"{}\"", esc_label(&self.node), esc_label(&self.role));
        metric(
            "ponte_build_info",
            "gauge",
            "Node identity and version.",
            vec![(format!("{node},version=\"{}\"", esc_label(&self.version)), 1.0)],
        );
        metric(
            "ponte_uptime_seconds",
            "gauge",
            "Seconds since the process started.",
            vec![(String::new(), self.uptime_secs as f64)],
        );
        metric(
            "ponte_certificate_expiry_seconds",
            "gauge",
            "Seconds until a certificate in use expires (cert: own, https or peer).",
            self.certificates
                .iter()
                .map(|c| {
                    let labels =
                        format!("cert=\"{}\",subject=\"{}\"", esc_label(&c.cert), esc_label(&c.subject));
                    (labels, c.expires_in_secs as f64)
                })
                .collect(),
        );
        metric(
            "ponte_health",
            "gauge",
            "0 ok, 1 degraded, 2 down.",
            vec![(String::new(), self.health.exit_code() as f64)],
        );
        let link = |l: &LinkStatus| {
            format!("link=\"{}\",direction=\"{}\"", esc_label(&l.peer), esc_label(&l.direction))
        };
        metric(
            "ponte_link_up",
            "gauge",
            "1 when the QUIC session with the peer is established.",
            self.links.iter().map(|l| (link(l), if l.state == "up" { 1.0 } else { 0.0 })).collect(),
        );
        metric(
            "ponte_link_rtt_seconds",
            "gauge",
            "Smoothed round-trip time of the link.",
            self.links.iter().filter_map(|l| Some((link(l), l.rtt_ms? / 1000.0))).collect(),
        );
        metric(
            "ponte_link_sent_bytes_total",
            "counter",
            "Media bytes sent on the link.",
            self.links.iter().map(|l| (link(l), l.bytes_sent as f64)).collect(),
        );
        metric(
            "ponte_link_received_bytes_total",
            "counter",
            "Media bytes received on the link.",
            self.links.iter().map(|l| (link(l), l.bytes_received as f64)).collect(),
        );
        metric(
            "ponte_link_lost_packets_total",
            "counter",
            "QUIC packets declared lost on the link.",
            self.links.iter().map(|l| (link(l), l.lost_packets as f64)).collect(),
        );
        metric(
            "ponte_link_drops_total",
            "counter",
            "GOP streams dropped or reset on the link.",
            self.links.iter().map(|l| (link(l), l.drops as f64)).collect(),
        );
        metric(
            "ponte_link_subscriptions",
            "gauge",
            "Active subscriptions on the link.",
            self.links.iter().map(|l| (link(l), l.subscriptions as f64)).collect(),
        );
        let cam = |c: &CameraStatus| {
            format!("camera=\"{}\",quality=\"{}\"", esc_label(&c.id), esc_label(&c.quality))
        };
        metric(
            "ponte_camera_up",
            "gauge",
            "1 when the camera stream delivers video.",
            self.cameras.iter().map(|c| (cam(c), if c.state == "online" { 1.0 } else { 0.0 })).collect(),
        );
        // A byte counter, not a bit/s gauge: promtool's lint wants base
        // units, and `rate()` over a counter misses no burst between scrapes.
        metric(
            "ponte_camera_received_bytes_total",
            "counter",
            "Media bytes received for the camera stream (from the camera on an agent, from upstream on a relay).",
            self.cameras.iter().map(|c| (cam(c), c.bytes as f64)).collect(),
        );
        metric(
            "ponte_camera_frames_total",
            "counter",
            "Frames received from the camera stream.",
            self.cameras.iter().map(|c| (cam(c), c.frames as f64)).collect(),
        );
        metric(
            "ponte_camera_drops_total",
            "counter",
            "Frames dropped (slow consumers, malformed input).",
            self.cameras.iter().map(|c| (cam(c), c.drops as f64)).collect(),
        );
        metric(
            "ponte_camera_viewers",
            "gauge",
            "Consumers of the camera stream.",
            self.cameras.iter().map(|c| (cam(c), c.viewers as f64)).collect(),
        );
        metric(
            "ponte_shaping_degraded",
            "gauge",
            "1 while a subscription is below its main stream on the shaping ladder.",
            self.shaping
                .iter()
                .map(|s| {
                    let labels = format!(
                        "site=\"{}\",camera=\"{}\",rung=\"{}\"",
                        esc_label(&s.site),
                        esc_label(&s.camera),
                        esc_label(&s.rung)
                    );
                    (labels, if s.rung == "main" { 0.0 } else { 1.0 })
                })
                .collect(),
        );
        metric(
            "ponte_limit_refusals_total",
            "counter",
            "Requests refused because a configured limit was reached, by the config key of the limit.",
            self.limit_refusals
                .iter()
                .map(|(k, v)| (format!("limit=\"{}\"", esc_label(k)), *v as f64))
                .collect(),
        );
        if let Some(t) = &self.transcodes {
            metric(
                "ponte_transcodes_active",
                "gauge",
                "H.265 to H.264 transcodes for browsers running now (browser_h264 = \"transcode\").",
                vec![(String::new(), f64::from(t.active))],
            );
            metric(
                "ponte_transcodes_max",
                "gauge",
                "Most transcodes that may run at once (agent.max_transcodes).",
                vec![(String::new(), f64::from(t.max))],
            );
            metric(
                "ponte_transcode_refusals_total",
                "counter",
                "Subscriptions refused because agent.max_transcodes transcodes were running.",
                vec![(String::new(), t.refused as f64)],
            );
        }
        if !self.recordings.is_empty() {
            let per_rule = |f: &dyn Fn(&crate::status::RecordingStatus) -> f64| {
                self.recordings.iter().map(|r| (format!("rule=\"{}\"", esc_label(&r.rule)), f(r))).collect()
            };
            metric(
                "ponte_recording_bytes",
                "gauge",
                "Bytes of recordings on disk, by [[recording]] rule.",
                per_rule(&|r| r.bytes as f64),
            );
            metric(
                "ponte_recording_quota_bytes",
                "gauge",
                "Disk quota of the rule's recordings (max_gb), bytes.",
                per_rule(&|r| r.max_bytes as f64),
            );
            metric(
                "ponte_recording_tracks",
                "gauge",
                "Camera streams being recorded now, by rule.",
                per_rule(&|r| f64::from(r.recording)),
            );
            metric(
                "ponte_recording_gops_written_total",
                "counter",
                "GOPs written to the recordings since start.",
                per_rule(&|r| r.gops_written as f64),
            );
            metric(
                "ponte_recording_gops_lost_total",
                "counter",
                "GOPs that could not be recorded (disk full, writer behind) since start.",
                per_rule(&|r| r.gops_lost as f64),
            );
            metric(
                "ponte_recording_alarm",
                "gauge",
                "1 while the rule's store cannot write (disk full, nothing left to delete).",
                per_rule(&|r| if r.alarm.is_some() { 1.0 } else { 0.0 }),
            );
            metric(
                "ponte_recording_segments_deleted_total",
                "counter",
                "Recording segments deleted since start, by rule and why (retention, quota, disk-full).",
                self.recordings
                    .iter()
                    .flat_map(|r| {
                        r.deleted.iter().map(move |(why, n)| {
                            (format!("rule=\"{}\",why=\"{}\"", esc_label(&r.rule), esc_label(why)), *n as f64)
                        })
                    })
                    .collect(),
            );
        }
        if !self.ptz_commands.is_empty() {
            metric(
                "ponte_ptz_commands_total",
                "counter",
                "PTZ commands and stops since start, by audit outcome.",
                self.ptz_commands
                    .iter()
                    .map(|(k, v)| (format!("outcome=\"{}\"", esc_label(k)), *v as f64))
                    .collect(),
            );
        }
        if !self.alarms.is_empty() {
            metric(
                "ponte_alarms_total",
                "counter",
                "Camera alarms since start: raised (sent to the sites) and suppressed by the rate limit.",
                self.alarms
                    .iter()
                    .map(|(k, v)| (format!("outcome=\"{}\"", esc_label(k)), *v as f64))
                    .collect(),
            );
        }
        metric(
            "ponte_audit_write_errors_total",
            "counter",
            "Audit lines that could not be written (disk full, permissions).",
            vec![(String::new(), self.audit_write_errors as f64)],
        );
        if let Some(a) = &self.audit {
            metric(
                "ponte_audit_rotated_files",
                "gauge",
                "Rotated audit files kept on this host beside the live one.",
                vec![(String::new(), a.rotated_files as f64)],
            );
            metric(
                "ponte_audit_oldest_file_age_seconds",
                "gauge",
                "Age of the oldest audit line kept on this host (first line of the oldest file).",
                vec![(String::new(), a.oldest_line_age_secs as f64)],
            );
            metric(
                "ponte_audit_files_due_for_deletion",
                "gauge",
                "Rotated audit files retention deletes within 24 hours (or at the next rotation under keep_files).",
                vec![(String::new(), a.due_for_deletion.len() as f64)],
            );
            metric(
                "ponte_audit_files_deleted_total",
                "counter",
                "Rotated audit files deleted by retention since start, each recorded in the log.",
                vec![(String::new(), a.deleted_since_start as f64)],
            );
            metric(
                "ponte_audit_retention_blocked",
                "gauge",
                "1 while retention cannot delete (an unreadable oldest file, a failed removal).",
                vec![(String::new(), if a.blocked.is_some() { 1.0 } else { 0.0 })],
            );
        }
        let mut by_kind: Vec<(String, f64)> = Vec::new();
        for kind in ["whep", "rtsp"] {
            let n = self.viewers.iter().filter(|v| v.kind == kind).count();
            by_kind.push((format!("kind=\"{kind}\""), n as f64));
        }
        metric("ponte_viewers", "gauge", "Local viewer sessions.", by_kind);
        out
    }
}
