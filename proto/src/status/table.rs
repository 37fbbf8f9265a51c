//! The plain-text table the `status` CLI prints.

use super::{CameraStatus, Health, StatusDoc};
use std::fmt::Write as _;

impl StatusDoc {
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
        for r in &self.recordings {
            let _ = write!(
                out,
                "\nRECORDING  {}: {} stream(s), {:.1} of {:.1} GB, kept {} h{}",
                r.rule,
                r.recording,
                r.bytes as f64 / 1e9,
                r.max_bytes as f64 / 1e9,
                r.retention_hours,
                r.alarm.as_ref().map(|a| format!(" — ALARM: {a}")).unwrap_or_default()
            );
        }
        if let Some(t) = self.transcodes.as_ref().filter(|t| t.active > 0 || t.refused > 0) {
            let _ = writeln!(
                out,
                "\nTRANSCODES  {} of {} running (agent.max_transcodes){}; {} refused",
                t.active,
                t.max,
                if t.cameras.is_empty() { String::new() } else { format!(": {}", t.cameras.join(", ")) },
                t.refused
            );
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
}
