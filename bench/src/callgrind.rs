//! Instructions the relay executes per delivered byte, counted by
//! callgrind over exactly the measured window: with
//! `PONTE_BENCH_CALLGRIND=<dir>` the relay runs under
//! `valgrind --tool=callgrind --callgrind-out-file=<dir>/relay.%p`; the bench
//! zeroes its counters when a window opens (`callgrind_control -z`) and dumps
//! them when it closes (`-d`), then reads the dump's total. The relay runs
//! about fifty times slower under valgrind: use small loads
//! (`latency --max-gbps 0.05 --loads 100`). Instruction counts repeat from
//! run to run where CPU time on a shared VM does not.

use anyhow::{bail, Context, Result};
use std::path::PathBuf;

/// The dump directory, when counting is on.
pub fn dir() -> Option<PathBuf> {
    std::env::var_os("PONTE_BENCH_CALLGRIND").map(PathBuf::from)
}

fn control(flag: &str, pid: u32) -> Result<()> {
    let out = std::process::Command::new("callgrind_control")
        .arg(flag)
        .arg(pid.to_string())
        .output()
        .context("running callgrind_control (Debian package valgrind)")?;
    if !out.status.success() {
        bail!("callgrind_control {flag} {pid}: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}

/// Opens a window: the relay's counters go to zero. `callgrind_control`
/// runs on a blocking thread, off the runtime the measurement uses.
pub async fn start(pid: u32) -> Result<()> {
    tokio::task::spawn_blocking(move || control("-z", pid)).await.context("callgrind_control task")?
}

/// Closes the window: dumps the counters and returns the instructions
/// executed since [`start`] (the newest dump of `pid`: its `totals:` or
/// `summary:` line). Waiting for the dump file happens on a blocking
/// thread, not on the runtime's workers.
pub async fn finish(pid: u32) -> Result<u64> {
    tokio::task::spawn_blocking(move || dump_and_read(pid)).await.context("callgrind dump task")?
}

fn dump_and_read(pid: u32) -> Result<u64> {
    let dir = dir().context("PONTE_BENCH_CALLGRIND is not set")?;
    let before = newest_dump(&dir, pid)?;
    control("-d", pid)?;
    // The dump is written by the relay's own thread: wait for a new file.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let now = newest_dump(&dir, pid)?;
        if now.is_some() && now != before {
            let path = now.map(|(_, p)| p).context("no dump")?;
            std::thread::sleep(std::time::Duration::from_millis(500));
            let text =
                std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
            return text
                .lines()
                .filter_map(|l| l.strip_prefix("totals:").or_else(|| l.strip_prefix("summary:")))
                .filter_map(|v| v.split_whitespace().next()?.parse::<u64>().ok())
                .next_back()
                .with_context(|| format!("no totals in {}", path.display()));
        }
        if std::time::Instant::now() > deadline {
            bail!("callgrind wrote no dump for pid {pid} in {}", dir.display());
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// The highest-numbered dump `relay.<pid>.<n>` in `dir`.
fn newest_dump(dir: &std::path::Path, pid: u32) -> Result<Option<(u32, PathBuf)>> {
    let prefix = format!("relay.{pid}.");
    let mut best: Option<(u32, PathBuf)> = None;
    for e in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))?.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(n) = name.strip_prefix(&prefix).and_then(|n| n.parse::<u32>().ok()) else { continue };
        if best.as_ref().is_none_or(|(b, _)| n > *b) {
            best = Some((n, e.path()));
        }
    }
    Ok(best)
}
