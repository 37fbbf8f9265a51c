//! What a scenario reports: tables printed to the terminal, the same tables
//! and the raw figures in JSON, and targets checked. `ponte-bench report`
//! renders the JSON files as Markdown for BENCHMARKS.md, so the figures
//! there come from the harness, not from hand editing.

use crate::machine::Machine;
use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::fmt::Write as _;
use std::path::Path;

/// A table of figures.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Table {
    /// Caption.
    pub title: String,
    /// Column names.
    pub headers: Vec<String>,
    /// Cells, already formatted.
    pub rows: Vec<Vec<String>>,
}

impl Table {
    /// An empty table with `headers`.
    pub fn new(title: &str, headers: &[&str]) -> Self {
        Self {
            title: title.into(),
            headers: headers.iter().map(|h| (*h).to_owned()).collect(),
            rows: Vec::new(),
        }
    }

    /// Adds a row.
    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// Plain-text rendering with aligned columns.
    pub fn text(&self) -> String {
        let widths: Vec<usize> = (0..self.headers.len())
            .map(|i| {
                self.rows
                    .iter()
                    .filter_map(|r| r.get(i))
                    .chain(std::iter::once(&self.headers[i]))
                    .map(|c| c.chars().count())
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let line = |cells: &[String]| {
            let mut s = String::new();
            for (i, w) in widths.iter().enumerate() {
                let c = cells.get(i).map(String::as_str).unwrap_or("");
                let _ = write!(s, "{c:>w$}  ");
            }
            s.trim_end().to_owned()
        };
        let mut out = format!("{}\n{}\n", self.title, line(&self.headers));
        for r in &self.rows {
            out.push_str(&line(r));
            out.push('\n');
        }
        out
    }

    /// GitHub Markdown rendering.
    pub fn markdown(&self) -> String {
        let mut out = format!("**{}**\n\n| {} |\n|", self.title, self.headers.join(" | "));
        for _ in &self.headers {
            out.push_str("---:|");
        }
        out.push('\n');
        for r in &self.rows {
            let _ = writeln!(out, "| {} |", r.join(" | "));
        }
        out
    }
}

/// A target from the issue, checked against a measured figure.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Check {
    /// What is measured.
    pub what: String,
    /// The target, in words.
    pub target: String,
    /// The measured figure, formatted.
    pub measured: String,
    /// Whether the target is met.
    pub met: bool,
}

/// Everything one scenario run produced.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    /// Scenario name.
    pub scenario: String,
    /// The command line that produced it.
    pub command: String,
    /// Start, Unix seconds.
    pub started_unix: u64,
    /// Wall-clock seconds the scenario took.
    pub duration_secs: f64,
    /// A smoke run (tiny and short: the figures mean nothing).
    pub smoke: bool,
    /// The machine.
    pub machine: Machine,
    /// Tables.
    pub tables: Vec<Table>,
    /// Targets checked.
    pub checks: Vec<Check>,
    /// Remarks (method, caveats).
    pub notes: Vec<String>,
    /// Raw figures.
    pub data: serde_json::Value,
}

impl Report {
    /// The terminal rendering.
    pub fn text(&self) -> String {
        let m = &self.machine;
        let mut out = format!(
            "{} × {}; other processes busy {:.2} cores on average{}\n\n",
            m.cpus,
            m.cpu_model,
            m.others_cores,
            m.quiet_or_not()
        );
        for t in &self.tables {
            out.push_str(&t.text());
            out.push('\n');
        }
        for c in &self.checks {
            let _ = writeln!(
                out,
                "{} {}: {} (target {})",
                if c.met { "MET " } else { "MISS" },
                c.what,
                c.measured,
                c.target
            );
        }
        for n in &self.notes {
            let _ = writeln!(out, "note: {n}");
        }
        out
    }

    /// The Markdown rendering of one scenario.
    pub fn markdown(&self) -> String {
        let m = &self.machine;
        let mut out = format!("### {}\n\n```\n{}\n```\n\n", self.scenario, self.command);
        let _ = writeln!(
            out,
            "Measured {} on {} × {} (kernel {}), load {:.2} at start, other processes busy {:.2} cores on \
             average, {:.0} s{}{}.\n",
            unix_date(self.started_unix),
            m.cpus,
            m.cpu_model,
            m.kernel,
            m.load_before,
            m.others_cores,
            self.duration_secs,
            m.quiet_or_not(),
            if self.smoke { ", SMOKE RUN (figures meaningless)" } else { "" },
        );
        for t in &self.tables {
            out.push_str(&t.markdown());
            out.push('\n');
        }
        if !self.checks.is_empty() {
            let mut t = Table::new("Targets", &["", "what", "measured", "target"]);
            for c in &self.checks {
                t.row(vec![
                    if c.met { "met" } else { "**missed**" }.into(),
                    c.what.clone(),
                    c.measured.clone(),
                    c.target.clone(),
                ]);
            }
            out.push_str(&t.markdown());
            out.push('\n');
        }
        for n in &self.notes {
            let _ = writeln!(out, "- {n}");
        }
        if !self.notes.is_empty() {
            out.push('\n');
        }
        out
    }

    /// Writes the JSON file.
    pub fn write(&self, path: &Path) -> Result<()> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let json = serde_json::to_string_pretty(self)?;
        std::fs::write(path, json).with_context(|| format!("writing {}", path.display()))
    }

    /// Reads a JSON file written by [`Report::write`].
    pub fn read(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        serde_json::from_str(&text).with_context(|| format!("{} is not a ponte-bench report", path.display()))
    }
}

/// `YYYY-MM-DD HH:MM UTC` of a Unix time.
fn unix_date(secs: u64) -> String {
    // Civil-from-days (H. Hinnant), to avoid a date crate for one line.
    let days = (secs / 86_400) as i64;
    let (h, mi) = ((secs % 86_400) / 3600, (secs % 3600) / 60);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02} {h:02}:{mi:02} UTC")
}

/// Begin/end markers of the generated section of BENCHMARKS.md.
pub const BEGIN: &str = "<!-- ponte-bench:begin (generated by `ponte-bench report`; do not edit by hand) -->";
/// End marker.
pub const END: &str = "<!-- ponte-bench:end -->";

/// Replaces the text between the markers of `doc` with `generated`.
pub fn splice(doc: &str, generated: &str) -> Result<String> {
    let start = doc.find(BEGIN).context("BENCHMARKS.md has no begin marker")?;
    let end = doc.find(END).context("BENCHMARKS.md has no end marker")?;
    anyhow::ensure!(start < end, "markers out of order");
    Ok(format!("{}{BEGIN}\n\n{generated}\n{}", &doc[..start], &doc[end..]))
}

/// The scenario sections of the generated part of `doc`, as
/// [`Report::markdown`] wrote them: (scenario name, its Markdown). A
/// scenario whose report is not at hand keeps its section this way.
pub fn sections(doc: &str) -> Vec<(String, String)> {
    let (Some(start), Some(end)) = (doc.find(BEGIN), doc.find(END)) else { return Vec::new() };
    if start > end {
        return Vec::new();
    }
    let region = &doc[start + BEGIN.len()..end];
    let region = region.strip_prefix("\n\n").unwrap_or(region);
    let region = region.strip_suffix('\n').unwrap_or(region);
    let mut heads: Vec<usize> = region.match_indices("\n### ").map(|(i, _)| i + 1).collect();
    if region.starts_with("### ") {
        heads.insert(0, 0);
    }
    heads
        .iter()
        .enumerate()
        .map(|(n, &i)| {
            let text = &region[i..heads.get(n + 1).copied().unwrap_or(region.len())];
            let name = text["### ".len()..].lines().next().unwrap_or_default().trim().to_owned();
            (name, text.to_owned())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_render_and_splice() {
        let mut t = Table::new("T", &["a", "bb"]);
        t.row(vec!["1".into(), "22222".into()]);
        assert_eq!(t.text(), "T\na     bb\n1  22222\n");
        assert_eq!(t.markdown(), "**T**\n\n| a | bb |\n|---:|---:|\n| 1 | 22222 |\n");
        let doc = format!("head\n{BEGIN}\nold\n{END}\ntail\n");
        assert_eq!(splice(&doc, "new\n").unwrap(), format!("head\n{BEGIN}\n\nnew\n\n{END}\ntail\n"));
        let two = "### a\n\nx\n\n- n\n\n### b\n\ny\n\n";
        let doc = splice(&doc, two).unwrap();
        assert_eq!(
            sections(&doc),
            vec![("a".into(), "### a\n\nx\n\n- n\n\n".into()), ("b".into(), "### b\n\ny\n\n".into())]
        );
        assert_eq!(splice(&doc, &sections(&doc).into_iter().map(|s| s.1).collect::<String>()).unwrap(), doc);
        assert_eq!(unix_date(0), "1970-01-01 00:00 UTC");
        assert_eq!(unix_date(1_772_000_000), "2026-02-25 06:13 UTC");
    }
}
