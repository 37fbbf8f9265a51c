//! What the figures were measured on, and how much CPU and memory a process
//! used: `getrusage` for this process, `/proc/<pid>` for the agent and relays.

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::time::{Duration, Instant};

/// The machine and its state when a scenario ran.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Machine {
    /// Online CPUs (`nproc`).
    pub cpus: usize,
    /// `model name` from /proc/cpuinfo.
    pub cpu_model: String,
    /// `uname -r`.
    pub kernel: String,
    /// 1-minute load average when the scenario started.
    pub load_before: f64,
    /// Compilers or linkers seen running while measuring (other builds
    /// share the machine; figures are then pessimistic).
    pub concurrent_builds: Vec<String>,
    /// Cores busy on average with processes other than this benchmark and
    /// the nodes it started, while the scenario ran.
    #[serde(default)]
    pub others_cores: f64,
}

impl Machine {
    /// Describes this machine now.
    pub fn probe() -> Self {
        let cpu_model = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("model name"))
                    .and_then(|l| l.split_once(':'))
                    .map(|(_, v)| v.trim().to_owned())
            })
            .unwrap_or_else(|| "unknown".into());
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| s.trim().to_owned())
            .unwrap_or_default();
        Self {
            cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
            cpu_model,
            kernel,
            load_before: load_average(),
            concurrent_builds: builds_running(),
            others_cores: 0.0,
        }
    }

    /// `, machine otherwise quiet` or what else was running.
    pub fn quiet_or_not(&self) -> String {
        if !self.concurrent_builds.is_empty() {
            format!(", **other builds running** ({})", self.concurrent_builds.join(", "))
        } else if self.others_cores >= 0.1 {
            String::from(", **machine shared with other work**")
        } else {
            String::from(", machine otherwise quiet")
        }
    }

    /// Adds builds seen running now to the list.
    pub fn recheck_builds(&mut self) {
        for b in builds_running() {
            if !self.concurrent_builds.contains(&b) {
                self.concurrent_builds.push(b);
            }
        }
    }
}

/// 1-minute load average.
pub fn load_average() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|v| v.parse().ok()))
        .unwrap_or(0.0)
}

/// Names of compiler and linker processes running on the machine.
pub fn builds_running() -> Vec<String> {
    const BUILDERS: [&str; 6] = ["rustc", "cc1", "cc1plus", "ld", "cargo", "clippy-driver"];
    let mut found = Vec::new();
    let me = std::process::id();
    let parent = std::os::unix::process::parent_id();
    let Ok(dir) = std::fs::read_dir("/proc") else { return found };
    for entry in dir.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(|s| s.parse::<u32>().ok()) else { continue };
        if pid == me || pid == parent {
            continue;
        }
        let Ok(comm) = std::fs::read_to_string(entry.path().join("comm")) else { continue };
        let comm = comm.trim();
        // `cargo` alone is usually someone's idle `cargo run`/`cargo test`;
        // only a busy one (state R) counts.
        let busy = comm != "cargo"
            || std::fs::read_to_string(entry.path().join("stat")).is_ok_and(|s| {
                s.rsplit_once(')').is_some_and(|(_, rest)| rest.trim_start().starts_with('R'))
            });
        if BUILDERS.contains(&comm) && busy && !found.iter().any(|f| f == comm) {
            found.push(comm.to_owned());
        }
    }
    found
}

/// CPU time (user + system) of this whole process, all threads.
pub fn self_cpu() -> Duration {
    rusage(libc::RUSAGE_SELF)
}

fn rusage(who: libc::c_int) -> Duration {
    // SAFETY: getrusage fills the struct we own; `who` is SELF or CHILDREN.
    let usage = unsafe {
        let mut u: libc::rusage = std::mem::zeroed();
        libc::getrusage(who, &mut u);
        u
    };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

/// Busy CPU time of the whole machine (all but idle and iowait), /proc/stat.
fn machine_busy() -> Duration {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let ticks: u64 = stat
        .lines()
        .next()
        .map(|l| {
            l.split_whitespace()
                .skip(1)
                .enumerate()
                // user nice system idle iowait irq softirq steal: skip idle, iowait.
                .filter(|(i, _)| *i != 3 && *i != 4 && *i < 8)
                .filter_map(|(_, v)| v.parse::<u64>().ok())
                .sum()
        })
        .unwrap_or(0);
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Duration::from_micros(ticks * 1_000_000 / hz)
}

/// Measures what the rest of the machine did meanwhile: busy CPU minus
/// this process and its (reaped) children, the agent and relays.
pub struct OthersWindow {
    started: Instant,
    busy: Duration,
    ours: Duration,
}

impl OthersWindow {
    /// Starts measuring.
    pub fn start() -> Self {
        Self {
            started: Instant::now(),
            busy: machine_busy(),
            ours: rusage(libc::RUSAGE_SELF) + rusage(libc::RUSAGE_CHILDREN),
        }
    }

    /// Average cores used by other processes since the start. Call after
    /// the scenario's nodes have exited (their CPU counts once reaped).
    pub fn finish(&self) -> f64 {
        let wall = self.started.elapsed().as_secs_f64().max(1e-6);
        let busy = machine_busy().saturating_sub(self.busy);
        let ours = (rusage(libc::RUSAGE_SELF) + rusage(libc::RUSAGE_CHILDREN)).saturating_sub(self.ours);
        busy.saturating_sub(ours).as_secs_f64() / wall
    }
}

/// CPU time (utime + stime) of process `pid`, from /proc/<pid>/stat.
pub fn process_cpu(pid: u32) -> Result<Duration> {
    ponte_tests::stat_cpu(&format!("/proc/{pid}/stat"))
}

/// CPU time of thread `tid` of this process.
pub fn thread_cpu(tid: u32) -> Result<Duration> {
    ponte_tests::stat_cpu(&format!("/proc/self/task/{tid}/stat"))
}

/// Context switches (voluntary and not) of every live thread of process
/// `pid` ("self" for this one), summed over /proc/<pid>/task/*/status: a
/// wake-up per frame shows here as one switch or more per frame.
pub fn process_context_switches(pid: &str) -> u64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return 0 };
    tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("status")).ok())
        .map(|status| {
            status
                .lines()
                .filter_map(|l| {
                    l.strip_prefix("voluntary_ctxt_switches:")
                        .or_else(|| l.strip_prefix("nonvoluntary_ctxt_switches:"))
                })
                .filter_map(|v| v.trim().parse::<u64>().ok())
                .sum::<u64>()
        })
        .sum()
}

/// Resident set size of process `pid`, bytes (VmRSS).
pub fn process_rss(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .context("no VmRSS in status")?;
    Ok(kb * 1024)
}

/// CPU used by a set of processes (and this one) over a wall-clock window.
#[derive(Debug, Clone)]
pub struct CpuWindow {
    started: Instant,
    own: (Duration, u64),
    procs: Vec<(u32, Duration, u64)>,
}

/// CPU figures of one window.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct CpuUse {
    /// CPU seconds used in the window.
    pub cpu_secs: f64,
    /// Share of one core, percent (100 = one core busy all the time).
    pub core_pct: f64,
    /// Context switches of the process's threads in the window.
    pub context_switches: u64,
}

impl CpuWindow {
    /// Starts a window over this process and `pids`.
    pub fn start(pids: &[u32]) -> Result<Self> {
        Ok(Self {
            started: Instant::now(),
            own: (self_cpu(), process_context_switches("self")),
            procs: pids
                .iter()
                .map(|&p| Ok((p, process_cpu(p)?, process_context_switches(&p.to_string()))))
                .collect::<Result<_>>()?,
        })
    }

    /// Ends the window: wall seconds, this process's CPU, each pid's CPU.
    pub fn finish(&self) -> Result<(f64, CpuUse, Vec<CpuUse>)> {
        let wall = self.started.elapsed().as_secs_f64().max(1e-6);
        let use_of = |d: Duration, switches: u64| CpuUse {
            cpu_secs: d.as_secs_f64(),
            core_pct: 100.0 * d.as_secs_f64() / wall,
            context_switches: switches,
        };
        let own = use_of(
            self_cpu().saturating_sub(self.own.0),
            process_context_switches("self").saturating_sub(self.own.1),
        );
        let procs = self
            .procs
            .iter()
            .map(|&(p, before, switches)| {
                Ok(use_of(
                    process_cpu(p)?.saturating_sub(before),
                    process_context_switches(&p.to_string()).saturating_sub(switches),
                ))
            })
            .collect::<Result<_>>()?;
        Ok((wall, own, procs))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process() {
        let pid = std::process::id();
        assert!(process_rss(pid).unwrap() > 1 << 20);
        let w = CpuWindow::start(&[pid]).unwrap();
        let t = Instant::now();
        let mut x = 0u64;
        while t.elapsed() < Duration::from_millis(200) {
            x = x.wrapping_add(std::hint::black_box(1));
        }
        let (wall, own, procs) = w.finish().unwrap();
        assert!(wall >= 0.2 && x > 0);
        assert!(own.core_pct > 50.0, "{own:?}");
        // /proc ticks are coarser (10 ms) than getrusage.
        assert!((procs[0].cpu_secs - own.cpu_secs).abs() < 0.05, "{procs:?} vs {own:?}");
        assert!(!Machine::probe().cpu_model.is_empty());
        assert!(process_context_switches("self") > 0);
    }
}
