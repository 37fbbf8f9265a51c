//! `ponte-agent recordings check DIR` and `ponte-agent evidence verify`:
//! offline checks an admin or an investigator runs without the agent.

use ponte_proto::recall::{evidence, store};
use std::path::Path;

/// Checks the store at `dir`, or every store under it (`recordings.dir`
/// holds one directory per rule); prints the report; 0 clean, 1 otherwise.
pub fn check_cli(dir: &Path) -> i32 {
    if !dir.is_dir() {
        eprintln!(
            "{}: not a directory (give `recordings.dir` or one rule's directory under it)",
            dir.display()
        );
        return 1;
    }
    let mut roots = vec![dir.to_owned()];
    // `recordings.dir`: each rule's store is a directory of camera directories.
    if let Ok(report) = store::check(dir) {
        if report.tracks.is_empty() {
            let mut subs: Vec<_> = std::fs::read_dir(dir)
                .map(|rd| rd.filter_map(|e| e.ok()).map(|e| e.path()).filter(|p| p.is_dir()).collect())
                .unwrap_or_default();
            subs.sort();
            if !subs.is_empty() {
                roots = subs;
            }
        }
    }
    let mut clean = true;
    for root in roots {
        match store::check(&root) {
            Ok(report) => {
                print!("{report}");
                if !report.to_string().ends_with('\n') {
                    println!();
                }
                clean &= report.is_clean();
            }
            Err(e) => {
                eprintln!("{}: cannot read the store: {e}", root.display());
                clean = false;
            }
        }
    }
    if clean {
        println!("recordings: clean");
        0
    } else {
        println!("recordings: PROBLEMS found (see above)");
        1
    }
}

/// Verifies `clip` against `manifest` and the CA; prints what holds or
/// which part fails; 0 when it holds, 1 otherwise.
pub fn verify_cli(clip: &Path, manifest: &Path, ca: &Path) -> i32 {
    let read = |p: &Path, what: &str| {
        std::fs::read(p).map_err(|e| format!("cannot read the {what} {}: {e}", p.display()))
    };
    let files = read(clip, "clip").and_then(|c| Ok((c, read(manifest, "manifest")?, read(ca, "CA")?)));
    let (clip_bytes, manifest_bytes, ca_bytes) = match files {
        Ok(f) => f,
        Err(e) => {
            eprintln!("evidence: {e}");
            return 1;
        }
    };
    match evidence::verify(&clip_bytes, &manifest_bytes, &ca_bytes) {
        Ok(m) => {
            println!(
                "evidence OK: {} holds camera `{}` ({}) from {} to {}, {} frames, exported by `{}` of site `{}`, signed by agent `{}` on {}",
                clip.display(),
                m.camera,
                m.quality,
                m.first_frame,
                m.last_frame,
                m.frames,
                m.operator,
                m.site,
                m.agent,
                m.created
            );
            0
        }
        Err(e) => {
            println!("evidence FAILED: {e}");
            1
        }
    }
}
