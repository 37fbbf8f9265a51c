//! `audit verify FILE...`, shared by both binaries.

use std::path::PathBuf;

use super::{chain_files, verify_with};
/// `audit verify FILE...` of both binaries: one file means it and its
/// rotated predecessors; several are taken oldest first. Returns the exit
/// code: 0 intact, 1 broken (the line is named).
pub fn verify_cli(files: Vec<PathBuf>, allow_missing_start: bool) -> i32 {
    let files = match files.as_slice() {
        [one] => chain_files(one),
        _ => files,
    };
    match verify_with(&files, allow_missing_start) {
        Ok(n) => {
            println!("audit log intact: {n} lines in {} file(s)", files.len());
            0
        }
        Err(broken) => {
            eprintln!("audit log BROKEN at {broken}");
            1
        }
    }
}
