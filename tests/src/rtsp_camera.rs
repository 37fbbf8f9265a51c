//! A real RTSP camera we did not write: GStreamer's RTSP server, started by
//! `tests/rtsp_server.py`, serving live H.264 (`/h264`) and H.265 (`/h265`).
//! It reports every RTSP session it creates, and can record the encoded
//! stream it packetizes so a test can compare bytes.

use crate::{free_tcp_port, require, Proc};
use anyhow::{Context, Result};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

/// Debian's interpreter: the `python3` first on PATH may lack `gi`.
pub const PYTHON: &str = "/usr/bin/python3";
/// Debian packages the camera needs.
pub const PACKAGES: &str = "gstreamer1.0-tools gstreamer1.0-plugins-base gstreamer1.0-plugins-good \
                            gstreamer1.0-plugins-bad gstreamer1.0-plugins-ugly gir1.2-gst-rtsp-server-1.0 python3-gi";

/// How the camera is started.
#[derive(Clone, Debug, Default)]
pub struct CameraOptions {
    /// `tcp`, `udp` or `tcp+udp` (default).
    pub protocols: Option<&'static str>,
    /// Digest credentials the camera demands.
    pub credentials: Option<(String, String)>,
    /// Record the encoded streams into this directory.
    pub record: Option<PathBuf>,
}

/// A running GStreamer RTSP camera. Killed on drop.
pub struct RtspCamera {
    /// The launcher process; its lines say what the server did.
    pub proc: Proc,
    /// TCP port of the RTSP server.
    pub port: u16,
    options: CameraOptions,
}

/// True when the GStreamer RTSP server, both encoders and the payloaders
/// are installed (checked once per call, ~0.2 s).
pub fn gstreamer_rtsp_available() -> bool {
    let probe = "import gi; gi.require_version('Gst', '1.0'); gi.require_version('GstRtspServer', '1.0'); \
                 from gi.repository import Gst, GstRtspServer; Gst.init(None); \
                 missing = [e for e in ('videotestsrc', 'x264enc', 'x265enc', 'rtph264pay', 'rtph265pay', 'tee', 'filesink') \
                            if Gst.ElementFactory.find(e) is None]; \
                 raise SystemExit(1 if missing else 0)";
    Command::new(PYTHON)
        .args(["-c", probe])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Gate a test on the camera's prerequisites: fails under `CI=true`,
/// skips with a message otherwise.
pub fn require_gstreamer_rtsp() -> bool {
    require(
        gstreamer_rtsp_available(),
        "GStreamer's RTSP server with x264enc/x265enc (for /usr/bin/python3)",
        &format!("apt-get install {PACKAGES}; ./scripts/test installs them"),
    )
}

impl RtspCamera {
    /// Starts the camera on a free port and waits until it listens.
    pub async fn start(options: CameraOptions) -> Result<Self> {
        let port = free_tcp_port();
        let proc = spawn(port, &options).await?;
        Ok(Self { proc, port, options })
    }

    /// `rtsp://127.0.0.1:<port>/<path>` (path `h264` or `h265`).
    pub fn url(&self, path: &str) -> String {
        format!("rtsp://127.0.0.1:{}/{path}", self.port)
    }

    /// RTSP sessions the server has created so far (one per SETUP-ed client).
    pub fn sessions(&self) -> usize {
        self.proc.lines().iter().filter(|l| l.starts_with("session ")).count()
    }

    /// Transport headers of every SETUP so far.
    pub fn transports(&self) -> Vec<String> {
        self.proc.lines().iter().filter_map(|l| l.strip_prefix("transport ").map(str::to_owned)).collect()
    }

    /// Files the server recorded (one per pipeline run), oldest first.
    pub fn recordings(&self) -> Vec<PathBuf> {
        self.proc.lines().iter().filter_map(|l| l.strip_prefix("recording ").map(PathBuf::from)).collect()
    }

    /// Kills the server (SIGKILL, as a power cut would).
    pub fn kill(&mut self) {
        self.proc.kill();
    }

    /// Starts the server again on the same port, with the same options.
    pub async fn restart(&mut self) -> Result<()> {
        self.proc.kill();
        self.proc = spawn(self.port, &self.options).await?;
        Ok(())
    }
}

async fn spawn(port: u16, options: &CameraOptions) -> Result<Proc> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("rtsp_server.py");
    let mut cmd = Command::new(PYTHON);
    cmd.arg(&script).arg(port.to_string());
    if let Some(p) = options.protocols {
        cmd.args(["--protocols", p]);
    }
    if let Some((user, password)) = &options.credentials {
        cmd.args(["--user", user, "--password", password]);
    }
    if let Some(dir) = &options.record {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        cmd.arg("--record").arg(dir);
    }
    let mut proc = Proc::spawn_command("camera", cmd)?;
    proc.wait_for_line("ready port=", Duration::from_secs(20))
        .await
        .context("the GStreamer RTSP camera did not start")?;
    Ok(proc)
}
