//! The status document every node publishes on its management port, and its
//! renderings: JSON (serde), Prometheus text, a human HTML page and the CLI
//! table. One model, so the page, the metrics and `status` never disagree.

use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::fmt::Write as _;
use std::time::Instant;

/// Overall verdict, also the CLI's exit code.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Health {
    /// Everything expected is working.
    #[default]
    Ok,
    /// Serving, but something expected is missing (a link, a camera).
    Degraded,
    /// Not serving its purpose.
    Down,
}

impl Health {
    /// Exit code of `status`: 0 ok, 1 degraded, 2 down (3 = unreachable).
    pub fn exit_code(self) -> i32 {
        match self {
            Health::Ok => 0,
            Health::Degraded => 1,
            Health::Down => 2,
        }
    }

    /// How the status page and `status` spell it: `OK`, `DEGRADED`, `DOWN`
    /// (the JSON keeps serde's lowercase).
    pub fn label(self) -> &'static str {
        match self {
            Health::Ok => "OK",
            Health::Degraded => "DEGRADED",
            Health::Down => "DOWN",
        }
    }

    fn colour(self) -> &'static str {
        match self {
            Health::Ok => "green",
            Health::Degraded => "amber",
            Health::Down => "red",
        }
    }
}

/// One QUIC link (agent→relay, relay←agent, relay→downstream relay).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LinkStatus {
    /// Peer site / node id.
    pub peer: String,
    /// `to-relay`, `from-agent`, `from-upstream`, `to-downstream`.
    pub direction: String,
    /// `up`, `connecting`, `down`.
    pub state: String,
    /// Peer address.
    pub addr: String,
    /// Smoothed round-trip time in milliseconds, when up.
    pub rtt_ms: Option<f64>,
    /// Packets declared lost since the link came up.
    pub lost_packets: u64,
    /// Media bytes sent since the node started.
    pub bytes_sent: u64,
    /// Media bytes received since the node started.
    pub bytes_received: u64,
    /// Send rate over the last sampling interval, bit/s.
    pub send_bps: f64,
    /// Receive rate over the last sampling interval, bit/s.
    pub recv_bps: f64,
    /// Active subscriptions on the link.
    pub subscriptions: u32,
    /// Streams dropped or reset (stale GOPs, slow link).
    pub drops: u64,
    /// Last error, if any.
    pub last_error: Option<String>,
}

/// One camera stream (a lens at a quality) as this node sees it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CameraStatus {
    /// Camera id.
    pub id: String,
    /// `main` or `sub`.
    pub quality: String,
    /// `online`, `connecting`, `offline`, `idle` (on demand, nobody watching).
    pub state: String,
    /// `h264` / `h265`, when known.
    pub codec: Option<String>,
    /// Width in pixels (0 unknown).
    pub width: u16,
    /// Height in pixels (0 unknown).
    pub height: u16,
    /// Bitrate over the last sampling interval, bit/s.
    pub bitrate_bps: f64,
    /// Frames received since start.
    pub frames: u64,
    /// Bytes received since start.
    pub bytes: u64,
    /// Consumers of the stream (links + local viewers).
    pub viewers: u32,
    /// Frames skipped for slow consumers or malformed input.
    pub drops: u64,
    /// Last error, if any.
    pub last_error: Option<String>,
}

/// One local viewer (WHEP browser or RTSP client).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ViewerStatus {
    /// Session id.
    pub id: String,
    /// `whep` or `rtsp`.
    pub kind: String,
    /// Camera watched.
    pub camera: String,
    /// Quality watched.
    pub quality: String,
    /// Account name, when authenticated.
    pub user: Option<String>,
    /// Seconds since it started.
    pub age_secs: u64,
}

/// One subscription's place on the shaping ladder.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ShapingStatus {
    /// Site.
    pub site: String,
    /// Camera.
    pub camera: String,
    /// `main`, `sub`, `keyframes-only`, `paused`.
    pub rung: String,
    /// Priority class.
    pub priority: String,
    /// Bytes sent.
    pub bytes_sent: u64,
    /// GOPs dropped.
    pub gops_dropped: u64,
    /// Step-downs so far.
    pub step_downs: u64,
}

/// A recent error, newest first in the document.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ErrorEvent {
    /// Unix time, seconds.
    pub unix: u64,
    /// What happened.
    pub what: String,
}

/// The whole status of a node.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StatusDoc {
    /// Node id (site for a relay).
    pub node: String,
    /// `agent` or `relay`.
    pub role: String,
    /// Software version.
    pub version: String,
    /// Seconds since start.
    pub uptime_secs: u64,
    /// Verdict.
    pub health: Health,
    /// Why the verdict is not `ok`.
    pub problems: Vec<String>,
    /// QUIC links.
    pub links: Vec<LinkStatus>,
    /// Camera streams.
    pub cameras: Vec<CameraStatus>,
    /// Local viewers.
    pub viewers: Vec<ViewerStatus>,
    /// Shaping ladder.
    pub shaping: Vec<ShapingStatus>,
    /// Recent errors (bounded).
    pub recent_errors: Vec<ErrorEvent>,
    /// Audit lines that could not be written since start.
    #[serde(default)]
    pub audit_write_errors: u64,
    /// Requests refused by a configured limit since start, by limit (the
    /// config key that bounds it).
    #[serde(default)]
    pub limit_refusals: std::collections::BTreeMap<String, u64>,
    /// PTZ commands since start, by audit outcome (`allowed`, `denied`,
    /// `failed`, `preempted`, `stopped`, `released`); agents only.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub ptz_commands: std::collections::BTreeMap<String, u64>,
    /// The audit files, their retention and the files due for deletion
    /// soon (a notice: it does not change `health`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audit: Option<crate::audit::RetentionStatus>,
}

impl StatusDoc {
    /// The audit notice for the table and the page: files due for deletion
    /// (ship them off the host first) and a stuck retention.
    pub fn audit_notices(&self) -> Vec<String> {
        let Some(a) = &self.audit else { return Vec::new() };
        let mut out: Vec<String> = a
            .due_for_deletion
            .iter()
            .map(|f| {
                let when = match f.deleted_in_secs {
                    Some(s) => format!("in {}h{:02}m", s / 3600, s % 3600 / 60),
                    None => "at the next rotation".to_owned(),
                };
                format!(
                    "audit file {} ({} to {}) will be deleted {when} by retention: copy it off the host first",
                    f.file, f.first_time, f.last_time
                )
            })
            .collect();
        if let Some(b) = &a.blocked {
            out.push(format!("audit retention is stuck: {b}"));
        }
        out
    }
}

/// Turns monotonically growing byte counters into rates between samples.
#[derive(Debug, Default)]
pub struct RateMeter {
    last: HashMap<String, (u64, Instant)>,
}

impl RateMeter {
    /// Bit/s of counter `key` since its previous sample (0 on the first).
    pub fn rate(&mut self, key: &str, bytes: u64, now: Instant) -> f64 {
        let rate = match self.last.get(key) {
            Some(&(prev, at)) if now > at && bytes >= prev => {
                (bytes - prev) as f64 * 8.0 / now.duration_since(at).as_secs_f64()
            }
            _ => 0.0,
        };
        self.last.insert(key.to_owned(), (bytes, now));
        rate
    }

    /// Forgets counters not sampled in this round (bounded memory).
    pub fn retain(&mut self, keys: &std::collections::HashSet<String>) {
        self.last.retain(|k, _| keys.contains(k));
    }
}

/// Most recent errors kept.
pub const MAX_RECENT_ERRORS: usize = 20;

fn esc_label(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

fn html(v: &str) -> String {
    v.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
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

    /// The on-call table printed by `status`.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{} {} ({}), up {}s: {}",
            self.role,
            self.node,
            self.version,
            self.uptime_secs,
            match self.health {
                Health::Ok => Health::Ok.label().to_owned(),
                h => format!("{} — {}", h.label(), self.problems.join("; ")),
            }
        );
        let _ = writeln!(out, "\nLINKS");
        let _ = writeln!(
            out,
            "  {:<14} {:<14} {:<10} {:>8} {:>10} {:>10} {:>5} {:>6}  last error",
            "peer", "direction", "state", "rtt ms", "tx Mbit/s", "rx Mbit/s", "subs", "drops"
        );
        for l in &self.links {
            let _ = writeln!(
                out,
                "  {:<14} {:<14} {:<10} {:>8} {:>10.2} {:>10.2} {:>5} {:>6}  {}",
                l.peer,
                l.direction,
                l.state,
                l.rtt_ms.map(|r| format!("{r:.1}")).unwrap_or_else(|| "-".into()),
                l.send_bps / 1e6,
                l.recv_bps / 1e6,
                l.subscriptions,
                l.drops,
                l.last_error.as_deref().unwrap_or("")
            );
        }
        if self.links.is_empty() {
            let _ = writeln!(out, "  (none)");
        }
        // A small node lists every stream; a city-sized one only what is
        // flowing or failing, so the table fits a terminal at 3 a.m.
        let active: Vec<&CameraStatus> = if self.cameras.len() <= 24 {
            self.cameras.iter().collect()
        } else {
            self.cameras
                .iter()
                .filter(|c| c.viewers > 0 || c.state == "offline" || c.bitrate_bps > 0.0)
                .collect()
        };
        let _ = writeln!(out, "\nCAMERAS ({} streams, {} shown)", self.cameras.len(), active.len());
        let _ = writeln!(
            out,
            "  {:<44} {:<5} {:<10} {:<5} {:>9} {:>10} {:>7} {:>6}  last error",
            "camera", "q", "state", "codec", "size", "Mbit/s", "viewers", "drops"
        );
        for c in active {
            let _ = writeln!(
                out,
                "  {:<44} {:<5} {:<10} {:<5} {:>9} {:>10.2} {:>7} {:>6}  {}",
                c.id,
                c.quality,
                c.state,
                c.codec.as_deref().unwrap_or("-"),
                if c.width > 0 { format!("{}x{}", c.width, c.height) } else { "-".into() },
                c.bitrate_bps / 1e6,
                c.viewers,
                c.drops,
                c.last_error.as_deref().unwrap_or("")
            );
        }
        let _ = writeln!(out, "\nVIEWERS: {}", self.viewers.len());
        for v in &self.viewers {
            let _ = writeln!(
                out,
                "  {:<5} {:<44} {:<5} {:<12} {:>6}s",
                v.kind,
                v.camera,
                v.quality,
                v.user.as_deref().unwrap_or("-"),
                v.age_secs
            );
        }
        if !self.shaping.is_empty() {
            let _ = writeln!(out, "\nSHAPING");
            for s in &self.shaping {
                let _ = writeln!(
                    out,
                    "  {:<12} {:<44} {:<15} {:<9} step-downs {:<4} dropped GOPs {}",
                    s.site, s.camera, s.rung, s.priority, s.step_downs, s.gops_dropped
                );
            }
        }
        if let Some(a) = &self.audit {
            let _ =
                writeln!(out, "\nAUDIT  {}: {} rotated file(s); {}", a.path, a.rotated_files, a.retention);
            for notice in self.audit_notices() {
                let _ = writeln!(out, "  WARNING: {notice}");
            }
        }
        if !self.recent_errors.is_empty() {
            let _ = writeln!(out, "\nRECENT ERRORS");
            for e in &self.recent_errors {
                let _ = writeln!(out, "  {}  {}", e.unix, e.what);
            }
        }
        out
    }

    /// Server-rendered status page: refreshes itself, red/amber/green per
    /// link and camera, no script.
    pub fn html(&self) -> String {
        let mut out = String::new();
        let _ = write!(
            out,
            "<!doctype html><html lang=en><head><meta charset=utf-8><meta http-equiv=refresh content=5>\
             <title>ponte {role} {node}: {health}</title><style>\
             body{{font:14px system-ui,sans-serif;margin:1.5em;background:#111;color:#eee}}\
             table{{border-collapse:collapse;margin:.5em 0 1.5em}}td,th{{padding:.25em .7em;text-align:left;border-bottom:1px solid #333}}\
             .green{{color:#4c4}}.grey{{color:#888}}.amber{{color:#fb3}}.red{{color:#f55}}.dot{{font-size:1.2em}}\
             h1{{font-size:1.3em}}h2{{font-size:1.1em;margin-top:1em}}</style></head><body>\
             <h1><span class='dot {colour}'>&#9679;</span> ponte {role} <b>{node}</b> — {health}</h1>\
             <p>version {version}, up {uptime}s{problems}</p>",
            role = html(&self.role),
            node = html(&self.node),
            health = self.health.label(),
            colour = self.health.colour(),
            version = html(&self.version),
            uptime = self.uptime_secs,
            problems = if self.problems.is_empty() {
                String::new()
            } else {
                format!(" — <span class=amber>{}</span>", html(&self.problems.join("; ")))
            }
        );
        out.push_str("<h2>Links</h2><table><tr><th></th><th>peer</th><th>direction</th><th>state</th><th>RTT ms</th><th>tx Mbit/s</th><th>rx Mbit/s</th><th>subs</th><th>drops</th><th>last error</th></tr>");
        for l in &self.links {
            let c = match l.state.as_str() {
                "up" if l.last_error.is_none() => "green",
                "up" | "connecting" => "amber",
                _ => "red",
            };
            let _ = write!(
                out,
                "<tr><td class='dot {c}'>&#9679;</td><td>{}</td><td>{}</td><td class={c}>{}</td><td>{}</td><td>{:.2}</td><td>{:.2}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                html(&l.peer),
                html(&l.direction),
                html(&l.state),
                l.rtt_ms.map(|r| format!("{r:.1}")).unwrap_or_else(|| "-".into()),
                l.send_bps / 1e6,
                l.recv_bps / 1e6,
                l.subscriptions,
                l.drops,
                html(l.last_error.as_deref().unwrap_or(""))
            );
        }
        out.push_str("</table><h2>Cameras</h2><table><tr><th></th><th>camera</th><th>quality</th><th>state</th><th>codec</th><th>size</th><th>Mbit/s</th><th>viewers</th><th>drops</th><th>last error</th></tr>");
        for cam in &self.cameras {
            let c = match cam.state.as_str() {
                "online" => "green",
                "connecting" => "amber",
                "idle" => "grey",
                _ => "red",
            };
            let _ = write!(
                out,
                "<tr><td class='dot {c}'>&#9679;</td><td>{}</td><td>{}</td><td class={c}>{}</td><td>{}</td><td>{}</td><td>{:.2}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                html(&cam.id),
                html(&cam.quality),
                html(&cam.state),
                html(cam.codec.as_deref().unwrap_or("-")),
                if cam.width > 0 { format!("{}x{}", cam.width, cam.height) } else { "-".into() },
                cam.bitrate_bps / 1e6,
                cam.viewers,
                cam.drops,
                html(cam.last_error.as_deref().unwrap_or(""))
            );
        }
        let _ = write!(out, "</table><h2>Viewers ({})</h2><table><tr><th>kind</th><th>camera</th><th>quality</th><th>user</th><th>age s</th></tr>", self.viewers.len());
        for v in &self.viewers {
            let _ = write!(
                out,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                html(&v.kind),
                html(&v.camera),
                html(&v.quality),
                html(v.user.as_deref().unwrap_or("-")),
                v.age_secs
            );
        }
        out.push_str("</table>");
        if !self.shaping.is_empty() {
            out.push_str("<h2>Shaping</h2><table><tr><th>site</th><th>camera</th><th>rung</th><th>priority</th><th>step-downs</th><th>GOPs dropped</th></tr>");
            for s in &self.shaping {
                let c = if s.rung == "main" {
                    "green"
                } else if s.rung == "paused" {
                    "red"
                } else {
                    "amber"
                };
                let _ = write!(
                    out,
                    "<tr><td>{}</td><td>{}</td><td class={c}>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                    html(&s.site),
                    html(&s.camera),
                    html(&s.rung),
                    html(&s.priority),
                    s.step_downs,
                    s.gops_dropped
                );
            }
            out.push_str("</table>");
        }
        if let Some(a) = &self.audit {
            let _ = write!(
                out,
                "<h2>Audit</h2><p>{}: {} rotated file(s); {}</p>",
                html(&a.path),
                a.rotated_files,
                html(&a.retention)
            );
            let notices = self.audit_notices();
            if !notices.is_empty() {
                out.push_str("<ul>");
                for n in notices {
                    let _ = write!(out, "<li class=amber>{}</li>", html(&n));
                }
                out.push_str("</ul>");
            }
        }
        if !self.recent_errors.is_empty() {
            out.push_str("<h2>Recent errors</h2><ul>");
            for e in &self.recent_errors {
                let _ = write!(out, "<li>{} — {}</li>", e.unix, html(&e.what));
            }
            out.push_str("</ul>");
        }
        out.push_str("<p><a href=status>JSON</a> · <a href=metrics>metrics</a></p></body></html>");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let want =
            "relay-audit.log.3 (2026-01-01T00:00:00Z to 2026-01-02T00:00:00Z) will be deleted in 1h02m";
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
}
