//! `[incidents]`: shares, asks and alarms (issue 23).

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// `[incidents]`: where the temporary grants survive a restart, and the
/// alarm rate limit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IncidentsSection {
    /// The shares and approvals in force, written on every change
    /// (default: `incidents.json` beside the audit log).
    #[serde(default)]
    pub state_file: Option<PathBuf>,
    /// At most one alarm per camera and kind per this many seconds; the
    /// rest are counted as suppressed (default 10).
    #[serde(default = "default_alarm_interval")]
    pub alarm_interval_secs: u64,
    /// An ask nobody answers expires after this many minutes (default 10).
    #[serde(default = "default_ask_minutes")]
    pub ask_minutes: u64,
    /// A camera whose stream is up but delivers no frame for this many
    /// seconds raises `stalled` (default 5).
    #[serde(default = "default_stall")]
    pub stall_secs: u64,
}

fn default_alarm_interval() -> u64 {
    10
}
fn default_ask_minutes() -> u64 {
    10
}
fn default_stall() -> u64 {
    5
}

impl Default for IncidentsSection {
    fn default() -> Self {
        Self {
            state_file: None,
            alarm_interval_secs: default_alarm_interval(),
            ask_minutes: default_ask_minutes(),
            stall_secs: default_stall(),
        }
    }
}

impl IncidentsSection {
    /// The state file: `state_file`, or `incidents.json` beside `audit`.
    pub fn state_file(&self, audit: &Path) -> PathBuf {
        self.state_file
            .clone()
            .unwrap_or_else(|| audit.parent().unwrap_or_else(|| Path::new(".")).join("incidents.json"))
    }

    /// Checks the numbers.
    pub fn validate(&self) -> Result<()> {
        if self.alarm_interval_secs > 3600 {
            bail!("`incidents.alarm_interval_secs` = {}: at most 3600", self.alarm_interval_secs);
        }
        if !(1..=24 * 60).contains(&self.ask_minutes) {
            bail!("`incidents.ask_minutes` = {}: 1 to 1440", self.ask_minutes);
        }
        if !(1..=600).contains(&self.stall_secs) {
            bail!("`incidents.stall_secs` = {}: 1 to 600", self.stall_secs);
        }
        Ok(())
    }
}
