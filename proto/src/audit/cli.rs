//! `audit verify [--anchors OTHER] FILE...`, shared by both binaries.

use std::path::PathBuf;

use super::{chain_files, verify_anchors, verify_with};
/// `audit verify FILE...` of both binaries: one file means it and its
/// rotated predecessors; several are taken oldest first. With `anchors`
/// (the other side's log, likewise), the log is also checked against the
/// heads the other side anchored. Returns the exit code: 0 intact, 1
/// broken (the line is named).
pub fn verify_cli(files: Vec<PathBuf>, allow_missing_start: bool, anchors: Vec<PathBuf>) -> i32 {
    let files = with_rotated(files);
    if anchors.is_empty() {
        return match verify_with(&files, allow_missing_start) {
            Ok(n) => {
                println!("audit log intact: {n} lines in {} file(s)", files.len());
                0
            }
            Err(broken) => {
                eprintln!("audit log BROKEN at {broken}");
                1
            }
        };
    }
    let anchors = with_rotated(anchors);
    match verify_anchors(&files, &anchors, allow_missing_start) {
        Ok((n, c)) => {
            println!(
                "audit log intact: {n} lines in {} file(s); {} anchor(s) of node `{}` in the other side's log \
                 match (newest: seq {}), {} older than the first line kept",
                files.len(),
                c.matched,
                c.node,
                c.newest.map_or_else(|| "-".to_owned(), |s| s.to_string()),
                c.before_start
            );
            0
        }
        Err(broken) => {
            eprintln!("audit log BROKEN at {broken}");
            1
        }
    }
}

/// One file means it and its rotated predecessors.
fn with_rotated(files: Vec<PathBuf>) -> Vec<PathBuf> {
    match files.as_slice() {
        [one] => chain_files(one),
        _ => files,
    }
}
