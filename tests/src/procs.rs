//! Child processes under test: output captured line by line (and echoed with
//! a prefix so a failing test shows it), bounded waits, killed on drop.

use anyhow::{bail, Context, Result};
use std::ffi::OsStr;
use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How many captured lines an error message quotes.
const TAIL_LINES: usize = 40;

/// A running child process. Its stdout and stderr lines are captured in
/// order of arrival and echoed to the test output as `[label] line`.
///
/// The child leads its own process group and is asked to die with the
/// thread that spawned it (`PR_SET_PDEATHSIG`), so spawn it from the test's
/// own thread (not a short-lived blocking thread). Dropping a `Proc` sends
/// SIGKILL to the whole group and reaps the child: no orphans, no zombies.
pub struct Proc {
    label: String,
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
    exited: Option<ExitStatus>,
}

impl Proc {
    /// Spawn `program` with `args`; the label is the program's file name.
    pub fn spawn<I, S>(program: impl AsRef<Path>, args: I) -> Result<Proc>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let program = program.as_ref();
        let label = program
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| program.display().to_string());
        let mut cmd = Command::new(program);
        cmd.args(args);
        Proc::spawn_command(&label, cmd)
    }

    /// Spawn a prepared command (env, cwd, a wrapper such as
    /// `ip netns exec`), labelled `label` in the echoed output.
    pub fn spawn_command(label: &str, mut cmd: Command) -> Result<Proc> {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .env("NO_COLOR", "1")
            .env("RUST_BACKTRACE", "1")
            .process_group(0);
        // SAFETY: prctl is async-signal-safe; nothing else runs in the child
        // between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong, 0, 0, 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = cmd.spawn().with_context(|| format!("spawning {label}: {cmd:?}"))?;
        let lines = Arc::new(Mutex::new(Vec::new()));
        if let Some(out) = child.stdout.take() {
            spawn_reader(label, out, lines.clone());
        }
        if let Some(err) = child.stderr.take() {
            spawn_reader(label, err, lines.clone());
        }
        eprintln!("[{label}] spawned pid {}", child.id());
        Ok(Proc { label: label.to_string(), child, lines, exited: None })
    }

    /// The label used in echoed output and errors.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// Process id of the child.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Resident memory of the child (`VmRSS` in /proc), in KiB.
    pub fn rss_kib(&self) -> Result<u64> {
        let path = format!("/proc/{}/status", self.child.id());
        let status = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .with_context(|| format!("no VmRSS in {path}"))
    }

    /// CPU time the child has used (user + system, /proc/PID/stat), seconds.
    pub fn cpu_secs(&self) -> Result<f64> {
        Ok(stat_cpu(&format!("/proc/{}/stat", self.child.id()))?.as_secs_f64())
    }

    /// Open file descriptors of the child (entries of /proc/PID/fd).
    pub fn open_fds(&self) -> Result<usize> {
        let path = format!("/proc/{}/fd", self.child.id());
        Ok(std::fs::read_dir(&path).with_context(|| format!("listing {path}"))?.count())
    }

    /// All lines captured so far (stdout and stderr interleaved).
    pub fn lines(&self) -> Vec<String> {
        lock(&self.lines).clone()
    }

    /// Number of lines captured so far; pass it to [`Proc::wait_for_line_from`]
    /// to wait only for lines printed after this moment.
    pub fn line_count(&self) -> usize {
        lock(&self.lines).len()
    }

    /// The last `n` captured lines, joined.
    pub fn tail(&self, n: usize) -> String {
        let lines = lock(&self.lines);
        let start = lines.len().saturating_sub(n);
        lines[start..].join("\n")
    }

    /// The node's management URL (`http://127.0.0.1:PORT`), from the line it
    /// logs when its management port is bound (configs from this harness use
    /// port 0, so the node picks a free one).
    pub async fn management_url(&mut self, timeout: Duration) -> Result<String> {
        let line = self.wait_for_line("management port", timeout).await?;
        let addr = line
            .split_whitespace()
            .find_map(|w| w.strip_prefix("listen="))
            .with_context(|| format!("no listen= in {line:?}"))?;
        Ok(format!("http://{addr}"))
    }

    /// Wait until some captured line contains `pattern`; returns that line.
    pub async fn wait_for_line(&mut self, pattern: &str, timeout: Duration) -> Result<String> {
        self.wait_for_line_from(0, pattern, timeout).await
    }

    /// Like [`Proc::wait_for_line`], considering only lines from index
    /// `start` on (see [`Proc::line_count`]). Fails early if the child exits.
    pub async fn wait_for_line_from(
        &mut self,
        start: usize,
        pattern: &str,
        timeout: Duration,
    ) -> Result<String> {
        let deadline = Instant::now() + timeout;
        loop {
            // Check the exit status before the lines so the final output of a
            // child that just exited is still searched once.
            let exited = self.try_exit()?;
            if let Some(line) = lock(&self.lines).iter().skip(start).find(|l| l.contains(pattern)) {
                return Ok(line.clone());
            }
            if let Some(status) = exited {
                // Give the reader threads a moment to drain the pipes.
                tokio::time::sleep(Duration::from_millis(100)).await;
                if let Some(line) = lock(&self.lines).iter().skip(start).find(|l| l.contains(pattern)) {
                    return Ok(line.clone());
                }
                bail!(
                    "{} exited ({status}) before printing a line containing {pattern:?}; last output:\n{}",
                    self.label,
                    self.tail(TAIL_LINES)
                );
            }
            if Instant::now() >= deadline {
                bail!(
                    "{} printed no line containing {pattern:?} within {timeout:?}; last output:\n{}",
                    self.label,
                    self.tail(TAIL_LINES)
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The exit status if the child has exited (reaps it), `None` if running.
    pub fn try_exit(&mut self) -> Result<Option<ExitStatus>> {
        if self.exited.is_none() {
            self.exited = self.child.try_wait().with_context(|| format!("waiting on {}", self.label))?;
        }
        Ok(self.exited)
    }

    /// True while the child has not exited.
    pub fn is_running(&mut self) -> bool {
        matches!(self.try_exit(), Ok(None))
    }

    /// Send `signal` (e.g. `libc::SIGHUP`) to the child alone.
    pub fn signal(&mut self, signal: i32) -> Result<()> {
        if self.try_exit()?.is_some() {
            bail!("{} has already exited; cannot signal it", self.label);
        }
        // SAFETY: plain kill(2) on our own, not yet reaped, child.
        if unsafe { libc::kill(self.child.id() as libc::pid_t, signal) } != 0 {
            return Err(std::io::Error::last_os_error())
                .with_context(|| format!("sending signal {signal} to {}", self.label));
        }
        Ok(())
    }

    /// SIGTERM the child's process group, wait up to `timeout` for it to
    /// exit, SIGKILL it after that. Returns how the child ended.
    pub async fn terminate(&mut self, timeout: Duration) -> Result<ExitStatus> {
        if let Some(status) = self.try_exit()? {
            return Ok(status);
        }
        self.signal_group(libc::SIGTERM);
        self.wait_exit(timeout).await.or_else(|_| {
            self.signal_group(libc::SIGKILL);
            let status = self.child.wait().context("reaping after SIGKILL")?;
            self.exited = Some(status);
            Ok(status)
        })
    }

    /// Wait up to `timeout` for the child to exit by itself.
    pub async fn wait_exit(&mut self, timeout: Duration) -> Result<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_exit()? {
                return Ok(status);
            }
            if Instant::now() >= deadline {
                bail!("{} still running after {timeout:?}", self.label);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Kill the child's process group with SIGKILL and reap the child.
    /// Leftover group members of an already exited child are killed too.
    pub fn kill(&mut self) {
        // A group id stays reserved while any member lives, so -pid cannot
        // name a stranger's group even after the leader was reaped.
        self.signal_group(libc::SIGKILL);
        if self.exited.is_none() {
            if let Ok(status) = self.child.wait() {
                self.exited = Some(status);
                eprintln!(
                    "[{}] killed ({})",
                    self.label,
                    status.signal().map_or_else(|| status.to_string(), |s| format!("signal {s}"))
                );
            }
        }
    }

    fn signal_group(&self, signal: i32) {
        // The child leads its own group (process_group(0)), so -pid names it.
        // Errors (ESRCH: already gone) are irrelevant here.
        // SAFETY: plain kill(2).
        unsafe {
            libc::kill(-(self.child.id() as libc::pid_t), signal);
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

fn spawn_reader(label: &str, stream: impl Read + Send + 'static, lines: Arc<Mutex<Vec<String>>>) {
    let label = label.to_string();
    std::thread::spawn(move || {
        let mut reader = BufReader::new(stream);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match reader.read_until(b'\n', &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    let line = strip_ansi(&String::from_utf8_lossy(&buf));
                    let line = line.trim_end_matches(['\n', '\r']).to_string();
                    eprintln!("[{label}] {line}");
                    lock(&lines).push(line);
                }
            }
        }
    });
}

fn lock(lines: &Mutex<Vec<String>>) -> std::sync::MutexGuard<'_, Vec<String>> {
    // A reader thread cannot panic while holding the lock; recover anyway.
    lines.lock().unwrap_or_else(|e| e.into_inner())
}

/// Remove ANSI CSI escape sequences (colours) so patterns match plain text.
fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' && chars.peek() == Some(&'[') {
            chars.next();
            for c in chars.by_ref() {
                if ('@'..='~').contains(&c) {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// User + system CPU time in a /proc `stat` file (of a process or a
/// thread: `/proc/PID/stat`, `/proc/self/task/TID/stat`).
pub fn stat_cpu(path: &str) -> Result<Duration> {
    let stat = std::fs::read_to_string(path).with_context(|| format!("reading {path}"))?;
    // The command name may contain spaces: fields count from after its `)`.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).context("malformed stat")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // Fields 14 and 15 of stat(5); `rest` starts at field 3.
    let ticks = |i: usize| -> Result<u64> {
        fields.get(i - 3).context("short stat")?.parse::<u64>().context("stat field is not a number")
    };
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Ok(Duration::from_micros((ticks(14)? + ticks(15)?) * 1_000_000 / hz))
}

/// A CPU hog: `workers` busy loops at nice 0 (each a `sh` spinning), for at
/// most `limit` (coreutils `timeout` ends them even if the test dies),
/// killed on drop. Tests that promise a bound "also with the machine busy"
/// run their measurement under one.
pub struct CpuHog {
    workers: Vec<Proc>,
}

impl CpuHog {
    /// Starts `workers` busy loops for at most `limit`.
    pub fn start(workers: usize, limit: Duration) -> Result<CpuHog> {
        let secs = limit.as_secs().max(1).to_string();
        let workers = (0..workers)
            .map(|i| {
                Proc::spawn_command(&format!("hog-{i}"), {
                    let mut cmd = Command::new("timeout");
                    cmd.args([secs.as_str(), "sh", "-c", "while :; do :; done"]);
                    cmd
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(CpuHog { workers })
    }

    /// How many busy loops run.
    pub fn workers(&self) -> usize {
        self.workers.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alive(pid: u32) -> bool {
        // SAFETY: kill with signal 0 only checks existence.
        unsafe { libc::kill(pid as libc::pid_t, 0) == 0 }
    }

    #[tokio::test]
    async fn captures_both_streams_and_kills_the_group_on_drop() {
        let mut p = Proc::spawn(
            "/bin/sh",
            ["-c", "echo out-line; echo \"\x1b[32merr-line\x1b[0m\" >&2; sleep 60 & echo child $!; wait"],
        )
        .unwrap();
        p.wait_for_line("out-line", Duration::from_secs(5)).await.unwrap();
        let err = p.wait_for_line("err-line", Duration::from_secs(5)).await.unwrap();
        assert_eq!(err, "err-line", "ANSI colours are stripped");
        let child = p.wait_for_line("child ", Duration::from_secs(5)).await.unwrap();
        let grandchild: u32 = child["child ".len()..].trim().parse().unwrap();
        let pid = p.pid();
        assert!(p.is_running());
        drop(p);
        assert!(!alive(pid), "child killed and reaped");
        // The grandchild got SIGKILL too; it is reaped by init, allow a moment.
        let deadline = Instant::now() + Duration::from_secs(5);
        while alive(grandchild) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let status = std::fs::read_to_string(format!("/proc/{grandchild}/status")).unwrap_or_default();
        assert!(!alive(grandchild) || status.contains("State:\tZ"), "grandchild killed with the group");
    }

    #[tokio::test]
    async fn wait_for_line_times_out_and_reports_exit() {
        let mut p = Proc::spawn("/bin/sh", ["-c", "echo hello; sleep 60"]).unwrap();
        let err = p.wait_for_line("never", Duration::from_millis(300)).await.unwrap_err().to_string();
        assert!(err.contains("within") && err.contains("hello"), "{err}");
        let start = p.line_count();
        assert!(p.wait_for_line_from(start, "hello", Duration::from_millis(200)).await.is_err());

        let mut q = Proc::spawn("/bin/sh", ["-c", "echo bye; exit 3"]).unwrap();
        let err = q.wait_for_line("never", Duration::from_secs(10)).await.unwrap_err().to_string();
        assert!(err.contains("exited") && err.contains("bye"), "{err}");
    }

    #[tokio::test]
    async fn terminate_uses_sigterm_then_sigkill() {
        let mut p = Proc::spawn("/bin/sh", ["-c", "sleep 60"]).unwrap();
        let status = p.terminate(Duration::from_secs(5)).await.unwrap();
        assert_eq!(status.signal(), Some(libc::SIGTERM));

        let mut q =
            Proc::spawn("/bin/sh", ["-c", "trap '' TERM; echo ready; while :; do sleep 0.1; done"]).unwrap();
        q.wait_for_line("ready", Duration::from_secs(5)).await.unwrap();
        let status = q.terminate(Duration::from_millis(300)).await.unwrap();
        assert_eq!(status.signal(), Some(libc::SIGKILL));
    }
}
