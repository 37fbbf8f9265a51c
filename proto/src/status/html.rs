//! The human HTML page, with its escaping.

use super::StatusDoc;
use std::fmt::Write as _;

fn html(v: &str) -> String {
    v.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

impl StatusDoc {
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
