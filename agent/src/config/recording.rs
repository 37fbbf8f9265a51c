//! `[recordings]` and `[[recording]]`: what the agent records, where, and
//! for how long.
//!
//! Italian rules on municipal video surveillance (the Garante's 2010
//! provvedimento, art. 3.4, and the 2020 EDPB guidelines 3/2019) keep
//! images for days, not months: seven days at most for a municipality
//! without a documented need. Retention is therefore always explicit here
//! (`retention_hours` has no default) and bounded ([`MAX_RETENTION_HOURS`]).

use anyhow::{bail, Context, Result};
use ponte_proto::media::Quality;
use ponte_proto::policy::Selector;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// Longest `retention_hours` accepted: 30 days. Beyond a week the admin
/// guide asks for the documented need the rules require.
pub const MAX_RETENTION_HOURS: f64 = 720.0;

/// `[recordings]`: where the stores live.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordingsSection {
    /// Directory of the stores, one subdirectory per `[[recording]]` rule.
    #[serde(default = "default_dir")]
    pub dir: PathBuf,
    /// Length of a segment file, seconds (1 to 3600, default 60): the unit
    /// retention and quotas delete, and what a full disk frees at a time.
    #[serde(default = "default_segment_secs")]
    pub segment_secs: u64,
}

impl Default for RecordingsSection {
    fn default() -> Self {
        Self { dir: default_dir(), segment_secs: default_segment_secs() }
    }
}

fn default_segment_secs() -> u64 {
    60
}

impl RecordingsSection {
    /// Checks what serde cannot.
    pub fn validate(&self) -> Result<()> {
        if !(1..=3600).contains(&self.segment_secs) {
            bail!("`recordings.segment_secs` = {}: expected 1 to 3600 seconds", self.segment_secs);
        }
        Ok(())
    }
}

fn default_dir() -> PathBuf {
    PathBuf::from("/var/lib/ponte/recordings")
}

/// `[[recording]]`: cameras recorded at one quality, kept for a time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordingRule {
    /// Rule name (its store is `recordings.dir/<name>`).
    pub name: String,
    /// Cameras recorded: the selectors of `[[site]] allow` (`*`,
    /// `camera:`, `device:`, `zone:`, `tag:`, `type:`).
    pub cameras: Vec<String>,
    /// Cameras left out (wins over `cameras`).
    #[serde(default)]
    pub except: Vec<String>,
    /// `main` (default) or `sub`.
    #[serde(default = "default_quality")]
    pub quality: Quality,
    /// How long recordings are kept, hours (required; at most 720).
    pub retention_hours: f64,
    /// Disk quota of the rule's store, GB (10^9 bytes; required): the
    /// oldest segments go first when it is reached.
    pub max_gb: f64,
}

fn default_quality() -> Quality {
    Quality::Main
}

impl RecordingRule {
    /// The `cameras` and `except` selectors, parsed.
    pub fn selectors(&self) -> Result<(Vec<Selector>, Vec<Selector>)> {
        let parse = |list: &[String], key: &str| {
            list.iter()
                .map(|s| {
                    Selector::parse(s).with_context(|| format!("`[[recording]]` {:?}: `{key}`", self.name))
                })
                .collect::<Result<Vec<_>>>()
        };
        Ok((parse(&self.cameras, "cameras")?, parse(&self.except, "except")?))
    }

    /// Checks what serde cannot.
    pub fn validate(&self) -> Result<()> {
        let name = &self.name;
        if !super::valid_id(name) {
            bail!("`recording.name` = {name:?}: use lowercase letters, digits and `-`");
        }
        if !(self.retention_hours > 0.0 && self.retention_hours <= MAX_RETENTION_HOURS) {
            bail!(
                "`[[recording]]` {name:?}: `retention_hours` = {}: expected more than 0 and at most \
                 {MAX_RETENTION_HOURS} (30 days; Italian rules keep images for days: see the admin guide)",
                self.retention_hours
            );
        }
        if !(self.max_gb > 0.0 && self.max_gb.is_finite()) {
            bail!("`[[recording]]` {name:?}: `max_gb` = {}: expected a quota above 0", self.max_gb);
        }
        if self.cameras.is_empty() {
            bail!("`[[recording]]` {name:?}: `cameras` is empty: name the cameras to record (e.g. [\"*\"])");
        }
        self.selectors().map(drop)
    }

    /// The quota in bytes.
    pub fn max_bytes(&self) -> u64 {
        (self.max_gb * 1e9) as u64
    }
}
