//! Checking one node's log against the other agency's: each side sends the
//! head of its chain (`seq`, hash) to its peer every
//! `audit.anchor_every_secs` and the peer writes it into its own chain as an
//! `anchor` line. A log whose tail was cut (or rewritten, chain and all)
//! still verifies on its own; the peer's anchors name a line it no longer
//! has, or a hash it no longer matches.
//!
//! The comparison ([`compare`]) is pure; [`verify_anchors`] reads the files.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use super::record::Fields;
use super::{verify_with, BrokenLine, ACTION_ANCHOR};

/// One `anchor` line of the other side's log: the head it recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnchorSeen {
    /// Anchored sequence number of the verified log.
    pub seq: u64,
    /// Anchored hash of that line.
    pub hash: String,
    /// When the other side recorded it.
    pub time: String,
    /// The other side's file holding the anchor line.
    pub file: String,
    /// Its 1-based line number there.
    pub line: usize,
}

/// A line of the verified log, where an anchor points.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeptLine {
    /// Its hash.
    pub hash: String,
    /// File holding it.
    pub file: String,
    /// 1-based line number.
    pub line: usize,
}

/// What the anchors said about a log that matched them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AnchorsChecked {
    /// Node whose log was verified.
    pub node: String,
    /// Anchors found that name it.
    pub anchors: usize,
    /// Anchors checked against a line still kept.
    pub matched: usize,
    /// Anchors older than the first line kept (retention deleted it).
    pub before_start: usize,
    /// Newest anchored sequence number.
    pub newest: Option<u64>,
}

/// Where the verified log disagrees with the newest anchor it fails.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AnchorBreak {
    /// The log ends before the anchored line (`last`: its last seq, if any).
    Cut {
        /// Last sequence number kept.
        last: Option<u64>,
        /// The anchor beyond it.
        anchor: AnchorSeen,
    },
    /// The anchored line is there with another hash.
    Rewritten {
        /// The line found.
        kept: KeptLine,
        /// The anchor it contradicts.
        anchor: AnchorSeen,
    },
}

/// Compares the anchors with the verified log: `kept` is its first and last
/// sequence numbers, `found` the lines at anchored sequence numbers. The
/// newest anchor past the end is reported, else the oldest one whose hash
/// the log contradicts; an anchor older than the first line
/// kept is not a failure (retention deleted that line, and `verify` already
/// checked the deletion was recorded).
pub fn compare(
    node: &str,
    kept: Option<(u64, u64)>,
    found: &HashMap<u64, KeptLine>,
    anchors: &[AnchorSeen],
) -> Result<AnchorsChecked, Box<AnchorBreak>> {
    let mut sorted: Vec<&AnchorSeen> = anchors.iter().collect();
    sorted.sort_by_key(|a| a.seq);
    let mut checked = AnchorsChecked {
        node: node.to_owned(),
        anchors: anchors.len(),
        newest: sorted.last().map(|a| a.seq),
        ..Default::default()
    };
    let (mut cut, mut rewritten) = (None, None);
    for anchor in sorted {
        match kept {
            Some((first, _)) if anchor.seq < first => checked.before_start += 1,
            Some((_, last)) if anchor.seq <= last => match found.get(&anchor.seq) {
                Some(line) if line.hash == anchor.hash => checked.matched += 1,
                Some(line) => {
                    rewritten.get_or_insert_with(|| AnchorBreak::Rewritten {
                        kept: line.clone(),
                        anchor: anchor.clone(),
                    });
                }
                None => cut = Some(AnchorBreak::Cut { last: Some(last), anchor: anchor.clone() }),
            },
            _ => cut = Some(AnchorBreak::Cut { last: kept.map(|k| k.1), anchor: anchor.clone() }),
        }
    }
    // The newest anchor past the end says how much is gone; otherwise the
    // oldest contradicted one says where the rewrite starts.
    match cut.or(rewritten) {
        Some(broken) => Err(Box::new(broken)),
        None => Ok(checked),
    }
}

/// Verifies `files` (oldest first) as [`verify_with`] does, then checks
/// them against the `anchor` lines naming their node in `anchor_files`
/// (the other side's log, oldest first, itself checked as a chain).
/// Returns the lines checked and what the anchors said.
pub fn verify_anchors(
    files: &[PathBuf],
    anchor_files: &[PathBuf],
    allow_missing_start: bool,
) -> Result<(usize, AnchorsChecked), BrokenLine> {
    let count = verify_with(files, allow_missing_start)?;
    verify_with(anchor_files, true).map_err(|b| BrokenLine {
        reason: format!(
            "{} (in the other side's log given with `--anchors`: it cannot vouch for this one)",
            b.reason
        ),
        ..b
    })?;
    let node = first_node(files)?;
    let mut anchors = Vec::new();
    for_each_line(anchor_files, |file, line, f| {
        if let Some(head) = f.anchor.filter(|h| f.action == ACTION_ANCHOR && h.node == node) {
            anchors.push(AnchorSeen {
                seq: head.seq,
                hash: head.hash,
                time: f.time,
                file: file.into(),
                line,
            });
        }
    })?;
    let other = anchor_files.last().map(|p| p.display().to_string()).unwrap_or_default();
    if anchors.is_empty() {
        return Err(BrokenLine {
            file: other,
            line: 0,
            reason: format!(
                "no `{ACTION_ANCHOR}` line names node `{node}`: give the other side's audit log (the \
                 agent's for a relay's log, the relay's for the agent's), or wait \
                 `audit.anchor_every_secs` after their session came up"
            ),
        });
    }
    let wanted: HashMap<u64, ()> = anchors.iter().map(|a| (a.seq, ())).collect();
    let mut found = HashMap::new();
    let mut kept: Option<(u64, u64)> = None;
    let mut end = (String::new(), 0);
    for_each_line(files, |file, line, f| {
        kept = Some(kept.map_or((f.seq, f.seq), |(first, _)| (first, f.seq)));
        end = (file.to_owned(), line);
        if wanted.contains_key(&f.seq) {
            found.insert(f.seq, KeptLine { hash: f.hash, file: file.into(), line });
        }
    })?;
    let broken = match compare(&node, kept, &found, &anchors) {
        Ok(checked) => return Ok((count, checked)),
        Err(broken) => *broken,
    };
    match broken {
        AnchorBreak::Cut { last, anchor } => Err(BrokenLine {
            file: end.0,
            line: end.1,
            reason: format!(
                "this log of node `{node}` ends at seq {}, but {}:{} anchored seq {} (hash {}) on {}: the \
                 tail of this log was cut or rewritten after that time; compare it with the copy \
                 shipped off the host",
                last.map_or_else(|| "none".to_owned(), |l| l.to_string()),
                anchor.file,
                anchor.line,
                anchor.seq,
                anchor.hash,
                anchor.time
            ),
        }),
        AnchorBreak::Rewritten { kept, anchor } => Err(BrokenLine {
            file: kept.file,
            line: kept.line,
            reason: format!(
                "seq {} has hash {}, but {}:{} anchored it with hash {} on {}: this log was rewritten \
                 from that line on; compare it with the copy shipped off the host",
                anchor.seq, kept.hash, anchor.file, anchor.line, anchor.hash, anchor.time
            ),
        }),
    }
}

/// The node that wrote the first line of `files`.
fn first_node(files: &[PathBuf]) -> Result<String, BrokenLine> {
    let mut node = None;
    for_each_line(files, |_, _, f| {
        if node.is_none() {
            node = Some(f.node);
        }
    })?;
    node.filter(|n| !n.is_empty()).ok_or_else(|| BrokenLine {
        file: files.first().map(|p| p.display().to_string()).unwrap_or_default(),
        line: 0,
        reason: "the log has no line naming its node: nothing to compare with the anchors".into(),
    })
}

/// Calls `f` with each line's fields (the files were verified already).
fn for_each_line(files: &[PathBuf], mut f: impl FnMut(&str, usize, Fields)) -> Result<(), BrokenLine> {
    for path in files {
        let name = path.display().to_string();
        let broken = |line: usize, reason: String| BrokenLine { file: name.clone(), line, reason };
        let file = File::open(Path::new(path)).map_err(|e| broken(0, format!("cannot open: {e}")))?;
        for (i, line) in BufReader::new(file).lines().enumerate() {
            let line = line.map_err(|e| broken(i + 1, format!("cannot read: {e}")))?;
            let fields: Fields = serde_json::from_str(&line)
                .map_err(|e| broken(i + 1, format!("not a valid audit line ({e})")))?;
            f(&name, i + 1, fields);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn anchor(seq: u64, hash: &str) -> AnchorSeen {
        AnchorSeen { seq, hash: hash.into(), time: "t".into(), file: "agent.log".into(), line: 1 }
    }

    fn kept(pairs: &[(u64, &str)]) -> HashMap<u64, KeptLine> {
        pairs
            .iter()
            .map(|(s, h)| (*s, KeptLine { hash: (*h).into(), file: "relay.log".into(), line: *s as usize }))
            .collect()
    }

    #[test]
    fn anchors_within_the_kept_lines_match() {
        let found = kept(&[(3, "a"), (7, "b")]);
        let got = compare("r", Some((0, 9)), &found, &[anchor(3, "a"), anchor(7, "b")]).unwrap();
        assert_eq!((got.anchors, got.matched, got.before_start, got.newest), (2, 2, 0, Some(7)));
    }

    #[test]
    fn a_cut_tail_names_the_newest_anchor_beyond_the_end() {
        let found = kept(&[(3, "a")]);
        let got = compare("r", Some((0, 5)), &found, &[anchor(3, "a"), anchor(6, "x"), anchor(9, "y")]);
        assert_eq!(got, Err(Box::new(AnchorBreak::Cut { last: Some(5), anchor: anchor(9, "y") })));
        let empty = compare("r", None, &HashMap::new(), &[anchor(0, "a")]);
        assert_eq!(empty, Err(Box::new(AnchorBreak::Cut { last: None, anchor: anchor(0, "a") })));
    }

    #[test]
    fn a_rewritten_line_is_caught_by_its_hash() {
        let found = kept(&[(3, "a"), (7, "forged")]);
        match compare("r", Some((0, 9)), &found, &[anchor(3, "a"), anchor(7, "b")]).map_err(|b| *b) {
            Err(AnchorBreak::Rewritten { kept, anchor: a }) => {
                assert_eq!((kept.hash.as_str(), a.seq), ("forged", 7));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn anchors_before_the_first_kept_line_are_not_failures() {
        let found = kept(&[(12, "c")]);
        let got = compare("r", Some((10, 12)), &found, &[anchor(2, "old"), anchor(12, "c")]).unwrap();
        assert_eq!((got.matched, got.before_start), (1, 1));
    }
}
