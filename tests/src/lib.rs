//! Harness for ponte's end-to-end tests: real binaries, real browsers, real
//! cameras, every wait bounded.
//!
//! The pieces, each in its own module:
//! - [`Proc`]: a spawned child whose output is captured and echoed, killed
//!   (with its process group) on drop;
//! - [`Pki`]: a deployment CA and site certificates made by the real
//!   `ponte-agent pki` CLI;
//! - [`AgentConfig`] / [`RelayConfig`]: the binaries' typed configs with
//!   the harness's defaults, written as TOML; cameras are the agent's own
//!   [`Device`], with shorthands in [`DeviceExt`]; accounts made by the real
//!   CLIs;
//! - [`http_get`], [`wait_http_ok`], [`wait_catalog`]: a tiny HTTP/1.1 client;
//! - [`Chromium`]: headless Chromium driven over the DevTools protocol;
//! - [`Stack`]: PKI + one relay + one agent, started and ready.
//! - [`netns::NetnsPair`]: two network namespaces joined by a veth pair, for
//!   real capped links.
//! - [`rtsp_camera::RtspCamera`]: GStreamer's RTSP server as a real camera
//!   (H.264/H.265, TCP/UDP, digest auth), counting its RTSP sessions.
//! - [`onvif_camera::OnvifCamera`]: a schema-checked test ONVIF PTZ camera.

mod accounts;
mod cdp;
mod config;
mod http;
pub mod image;
pub mod netns;
pub mod onvif_camera;
mod pki;
mod procs;
pub mod quic;
pub mod rtsp_camera;
mod rtsp_reader;
pub mod rtsp_replay;
mod stack;

pub use accounts::{operator_password, operator_token, relay_digest_viewer, relay_token, relay_viewer};
pub use cdp::{Chromium, Page};
pub use config::{
    raw_toml, site_policy, AgentConfig, Device, DeviceExt, DeviceKind, LensSource, OnvifSettings,
    RelayConfig, RelayTarget, ReplaySettings, RtspSource, RtspTransport, Secret, Source, SyntheticSettings,
    TlsSection,
};
pub use http::{
    catalog_camera_ids, http_get, http_request, trust_ca, wait_catalog, wait_catalog_as, wait_http_ok,
    HttpResponse,
};
pub use pki::Pki;
pub use procs::{stat_cpu, CpuHog, Proc};
pub use rtsp_reader::RtspReader;
pub use stack::{spawn_node, Stack, StackSpec, Tweak};

use anyhow::{bail, Context, Result};
use std::future::Future;
use std::io::Write as _;
use std::net::{TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Path of a workspace binary (`ponte-agent`, `ponte-relay`) built beside the
/// running test executable (`$TARGET/<profile>/deps/<test>-<hash>` →
/// `$TARGET/<profile>/<name>`). `PONTE_BIN_DIR` overrides the directory.
pub fn bin_path(name: &str) -> Result<PathBuf> {
    let dir = match std::env::var_os("PONTE_BIN_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => {
            let exe = std::env::current_exe().context("locating the test executable")?;
            let deps = exe.parent().context("test executable has no parent directory")?;
            // Integration tests live in `deps/`; be tolerant of a runner that
            // places them one level up.
            if deps.file_name().is_some_and(|n| n == "deps") {
                deps.parent().context("`deps` directory has no parent")?.to_path_buf()
            } else {
                deps.to_path_buf()
            }
        }
    };
    let path = dir.join(name);
    if !path.is_file() {
        bail!(
            "binary `{name}` not found at {} — run `cargo build --workspace --bins` first \
             (./scripts/test does), with the same CARGO_TARGET_DIR as the tests",
            path.display()
        );
    }
    Ok(path)
}

/// Starts `ffmpeg -rtsp_transport TRANSPORT -i URL -t SECS -f null -` as a
/// VMS would read a stream: `-v error` (anything on stderr is a decoding or
/// protocol error) and `-progress` lines on stdout (`frame=N`, ...), both
/// piped; killed when dropped.
pub fn spawn_ffmpeg_reader(url: &str, transport: &str, secs: u32) -> Result<tokio::process::Child> {
    tokio::process::Command::new("/usr/bin/ffmpeg")
        .args(["-hide_banner", "-nostats", "-v", "error", "-rtsp_transport", transport, "-i", url])
        .args(["-t", &secs.to_string(), "-f", "null", "-", "-progress", "pipe:1", "-stats_period", "0.1"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .context("starting ffmpeg")
}

/// Runs `ponte-relay ARGS` (`passwd`, `token`, ...) with `stdin`; its
/// stdout, or an error with its output unless it exits 0.
pub fn relay_cli(args: &[&str], stdin: &str) -> Result<String> {
    cli("ponte-relay", args, stdin)
}

/// Runs `ponte-agent ARGS` (`operator token`, ...) as [`relay_cli`] does.
pub fn agent_cli(args: &[&str], stdin: &str) -> Result<String> {
    cli("ponte-agent", args, stdin)
}

fn cli(bin: &str, args: &[&str], stdin: &str) -> Result<String> {
    use std::process::{Command, Stdio};
    let mut child = Command::new(bin_path(bin)?)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {bin} {args:?}"))?;
    child.stdin.take().context("stdin")?.write_all(stdin.as_bytes())?;
    let out = child.wait_with_output()?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        bail!("{bin} {args:?}: {}\n{stdout}{}", out.status, String::from_utf8_lossy(&out.stderr));
    }
    Ok(stdout)
}

/// A UDP port on 127.0.0.1 that was free a moment ago, and never handed out
/// before by this test process.
pub fn free_udp_port() -> u16 {
    unused_port(|| UdpSocket::bind("127.0.0.1:0").and_then(|s| s.local_addr()))
}

/// A TCP port on 127.0.0.1 that was free a moment ago, and never handed out
/// before by this test process.
pub fn free_tcp_port() -> u16 {
    unused_port(|| TcpListener::bind("127.0.0.1:0").and_then(|s| s.local_addr()))
}

/// The kernel may hand the same ephemeral port to two `bind(0)` calls once the
/// first socket is closed, and tests pick every port of a process before
/// starting it: a relay's management port and another relay's RTSP port once
/// came out equal (CI, `tls` test). Ports are therefore remembered for the
/// life of the test process, for TCP and UDP alike (a relay binds RTSP on
/// both).
fn unused_port(bind: impl Fn() -> std::io::Result<std::net::SocketAddr>) -> u16 {
    use std::collections::HashSet;
    use std::sync::{Mutex, OnceLock};
    static HANDED_OUT: OnceLock<Mutex<HashSet<u16>>> = OnceLock::new();
    let handed_out = HANDED_OUT.get_or_init(Default::default);
    for _ in 0..1000 {
        let port = bind().map(|a| a.port()).expect("binding an ephemeral port on 127.0.0.1");
        if handed_out.lock().unwrap_or_else(|e| e.into_inner()).insert(port) {
            return port;
        }
    }
    panic!("1000 ephemeral ports in a row were already handed out by this test process")
}

/// True when running under CI (`CI=true`): missing prerequisites must fail,
/// not skip.
pub fn in_ci() -> bool {
    std::env::var("CI").map(|v| v.eq_ignore_ascii_case("true") || v == "1").unwrap_or(false)
}

/// True when the effective user is root.
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Gate a test on a prerequisite. Returns true when `present`. Otherwise
/// panics under CI (`CI=true`) naming what is missing and how to get it, and
/// outside CI prints a `SKIP` line and returns false (the test should return).
pub fn require(present: bool, what: &str, how_to_get_it: &str) -> bool {
    if present {
        return true;
    }
    if in_ci() {
        panic!("{what} is required but missing ({how_to_get_it}); CI=true forbids skipping");
    }
    // Written to the real stderr, past libtest's capture, so the skip shows
    // in a normal `cargo test` run and not only on failure.
    let _ = writeln!(
        std::io::stderr(),
        "SKIP {}: {what} is missing ({how_to_get_it}); skipping outside CI",
        std::thread::current().name().unwrap_or("test")
    );
    false
}

/// [`require`] for an executable file at `path` from Debian package `package`.
pub fn require_program(path: impl AsRef<Path>, package: &str) -> bool {
    let path = path.as_ref();
    require(
        is_executable(path),
        &format!("program {}", path.display()),
        &format!("apt-get install {package}; ./scripts/test installs it"),
    )
}

/// [`require`] for root privileges (network namespaces, tc).
pub fn require_root() -> bool {
    require(is_root(), "root privileges", "run the tests as root")
}

pub(crate) fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0).unwrap_or(false)
}

/// Poll `probe` every `interval` until it yields `Some`, or fail after
/// `timeout` with `what` and the last probe's description in the error.
/// `probe` returns `Ok(Some(v))` when done, `Ok(None)` to keep waiting, or
/// `Err(e)` to keep waiting while remembering `e` as the last observation.
pub async fn wait_until<T, F, Fut>(
    what: &str,
    timeout: Duration,
    interval: Duration,
    mut probe: F,
) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Option<T>>>,
{
    let deadline = Instant::now() + timeout;
    let mut last = String::from("no observation yet");
    loop {
        let remaining = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(remaining.max(Duration::from_millis(1)), probe()).await {
            Ok(Ok(Some(v))) => return Ok(v),
            Ok(Ok(None)) => {}
            Ok(Err(e)) => last = format!("{e:#}"),
            Err(_) => last = "the last probe itself timed out".into(),
        }
        if Instant::now() >= deadline {
            bail!("timed out after {timeout:?} waiting for {what}; last: {last}");
        }
        tokio::time::sleep(interval.min(deadline.saturating_duration_since(Instant::now()))).await;
    }
}

/// Serialises heavy end-to-end tests across threads and processes (an
/// exclusive `flock` on a file in the temp dir). Hold the guard for the whole
/// test: `let _heavy = ponte_tests::e2e_lock();`. Waits at most 10 minutes.
pub fn e2e_lock() -> E2eLock {
    use std::os::fd::AsRawFd;
    let path = std::env::temp_dir().join("ponte-e2e.lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .unwrap_or_else(|e| panic!("opening {}: {e}", path.display()));
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        // SAFETY: flock on a valid, owned descriptor.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc == 0 {
            return E2eLock { _file: file };
        }
        if Instant::now() >= deadline {
            panic!("waited 10 minutes for {} (another e2e test holds it)", path.display());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Guard returned by [`e2e_lock`]; the lock is released on drop.
pub struct E2eLock {
    _file: std::fs::File,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_distinct_and_bindable() {
        let u = free_udp_port();
        let t = free_tcp_port();
        assert_ne!(u, 0);
        assert_ne!(t, 0);
        UdpSocket::bind(("127.0.0.1", u)).expect("udp port reusable");
        TcpListener::bind(("127.0.0.1", t)).expect("tcp port reusable");
    }

    #[test]
    fn missing_binary_names_the_fix() {
        let err = bin_path("no-such-ponte-binary").unwrap_err().to_string();
        assert!(err.contains("cargo build --workspace --bins"), "{err}");
    }

    #[tokio::test]
    async fn wait_until_reports_the_last_observation() {
        let mut n = 0;
        let err = wait_until("never", Duration::from_millis(200), Duration::from_millis(20), || {
            n += 1;
            let n = n;
            async move { Err::<Option<()>, _>(anyhow::anyhow!("probe {n}")) }
        })
        .await
        .unwrap_err()
        .to_string();
        assert!(err.contains("waiting for never") && err.contains("probe"), "{err}");

        let v = wait_until("soon", Duration::from_secs(2), Duration::from_millis(10), || {
            n += 1;
            let n = n;
            async move { Ok((n > 3).then_some(n)) }
        })
        .await
        .unwrap();
        assert!(v > 3);
    }
}
