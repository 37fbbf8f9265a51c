//! The ladder `main → sub → keyframes-only → paused`: rungs, which a
//! camera has, and the priority classes that order subscriptions.

use crate::media::Quality;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

/// Shaping priority of a subscription (from the site policy).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Priority {
    /// Steps down first.
    Low,
    /// The default.
    #[default]
    Normal,
    /// Before normal.
    High,
    /// Steps down last.
    Critical,
}

impl Priority {
    /// Every class, highest first.
    pub const DESCENDING: [Priority; 4] =
        [Priority::Critical, Priority::High, Priority::Normal, Priority::Low];

    /// Lower-case name.
    pub fn name(self) -> &'static str {
        match self {
            Priority::Low => "low",
            Priority::Normal => "normal",
            Priority::High => "high",
            Priority::Critical => "critical",
        }
    }

    pub(super) fn index(self) -> usize {
        self as usize
    }
}

/// A rung of the degradation ladder, lowest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Rung {
    /// Nothing is sent; the relay is told.
    Paused,
    /// Only each GOP's keyframe (of the substream when there is one).
    KeyframesOnly,
    /// The substream.
    Sub,
    /// The main stream.
    Main,
}

impl Rung {
    /// Kebab-case name, as in logs and status.
    pub fn name(self) -> &'static str {
        match self {
            Rung::Paused => "paused",
            Rung::KeyframesOnly => "keyframes-only",
            Rung::Sub => "sub",
            Rung::Main => "main",
        }
    }

    /// The top rung a requested quality allows.
    pub fn of_quality(q: Quality) -> Rung {
        match q {
            Quality::Main => Rung::Main,
            Quality::Sub => Rung::Sub,
        }
    }
}

impl fmt::Display for Rung {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The rungs one subscription can use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ladder {
    /// Highest rung: the quality the subscriber asked for.
    pub top: Rung,
    /// Whether the camera has a substream (else keyframes come from main).
    pub has_sub: bool,
}

impl Ladder {
    /// Whether `r` is on this ladder.
    pub fn has(&self, r: Rung) -> bool {
        r <= self.top && (r != Rung::Sub || self.has_sub)
    }

    /// The rung just below `r` on this ladder (`Paused` stays `Paused`).
    pub fn below(&self, r: Rung) -> Rung {
        let mut x = r;
        while x > Rung::Paused {
            x = step(x, -1);
            if self.has(x) {
                return x;
            }
        }
        Rung::Paused
    }

    /// The rung just above `r`, if any.
    pub fn above(&self, r: Rung) -> Option<Rung> {
        let mut x = r;
        while x < self.top {
            x = step(x, 1);
            if self.has(x) {
                return Some(x);
            }
        }
        None
    }

    /// Which stream carries rung `r` (`None` for `Paused`).
    pub fn quality(&self, r: Rung) -> Option<Quality> {
        match r {
            Rung::Paused => None,
            Rung::Main => Some(Quality::Main),
            Rung::Sub => Some(Quality::Sub),
            Rung::KeyframesOnly => Some(if self.has_sub { Quality::Sub } else { Quality::Main }),
        }
    }
}

pub(super) fn step(r: Rung, d: i8) -> Rung {
    match r as i8 + d {
        ..=0 => Rung::Paused,
        1 => Rung::KeyframesOnly,
        2 => Rung::Sub,
        _ => Rung::Main,
    }
}

/// The rung `plan` gives subscription `id`; one it does not list gets nothing.
pub(super) fn rung_in(plan: &BTreeMap<u64, Rung>, id: u64) -> Rung {
    plan.get(&id).copied().unwrap_or(Rung::Paused)
}
