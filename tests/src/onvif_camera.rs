//! A test ONVIF PTZ camera checked against the standard: `tests/onvif_camera.py`
//! validates every request and its own responses against the official ONVIF
//! schemas (ptz.wsdl, media.wsdl, onvif.xsd from the onvif-zeep 0.2.12
//! sdist), checks WS-UsernameToken digests and records every operation.

use crate::{http_get, require, Proc};
use anyhow::{bail, Context, Result};
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Debian's interpreter, which has python3-lxml.
pub const PYTHON: &str = "/usr/bin/python3";
/// Where `./scripts/test` puts the ONVIF schemas (`PONTE_ONVIF_WSDL` overrides).
pub const DEFAULT_SCHEMAS: &str = "/var/cache/ponte-onvif/wsdl";

/// The `[[site]]`s of the PTZ tests: `carabinieri` may steer at priority
/// 50, `questura` sees the cameras without PTZ.
pub fn ptz_sites() -> Vec<ponte_proto::policy::SitePolicyConfig> {
    let mut carabinieri = crate::site_policy("carabinieri", &["*"]);
    carabinieri.ptz = true;
    carabinieri.ptz_priority = 50;
    vec![carabinieri, crate::site_policy("questura", &["*"])]
}

/// [`ptz_sites`] as agent.toml text, for the agent's own unit tests that
/// read TOML (`agent/src/ptz/service/tests.rs`).
pub const PTZ_SITES: &str = r#"
[[site]]
id = "carabinieri"
allow = ["*"]
ptz = true
ptz_priority = 50

[[site]]
id = "questura"
allow = ["*"]
ptz = false
"#;

/// One operation the camera received, as `GET /recorded` lists it.
#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct RecordedOp {
    /// Operation element's local name (`ContinuousMove`, `GetProfiles`, ...); None if unreadable.
    pub op: Option<String>,
    /// `ProfileToken` of PTZ operations.
    pub profile: Option<String>,
    /// ContinuousMove pan velocity (-1..1), if sent.
    pub pan: Option<f64>,
    /// ContinuousMove tilt velocity (-1..1), if sent.
    pub tilt: Option<f64>,
    /// ContinuousMove zoom velocity (-1..1), if sent.
    pub zoom: Option<f64>,
    /// GotoPreset `PresetToken`.
    pub preset: Option<String>,
    /// ContinuousMove `Timeout` exactly as sent (an xs:duration such as `PT1.5S`).
    pub timeout: Option<String>,
    /// Arrival time, Unix seconds.
    pub t: f64,
    /// Whether the request (and the camera's response) passed the schema and SOAP checks.
    pub valid: bool,
    /// What failed: schema errors, `auth: ...` for rejected credentials.
    pub errors: Vec<String>,
    /// Whether the WS-UsernameToken was accepted.
    pub authorized: bool,
}

/// How the camera is started.
#[derive(Clone, Debug)]
pub struct OnvifCameraOptions {
    /// Credentials the camera demands (None: no authentication).
    pub credentials: Option<(String, String)>,
    /// Presets as `token:name,token:name`.
    pub presets: String,
    /// HTTP status of NotAuthorized faults (400 or 401).
    pub auth_status: u16,
    /// A hostile camera (`--hostile`): GetPresets lists thousands of presets
    /// with names of 200 `"`, GotoPreset fails with a half-megabyte fault
    /// that names its internal URL ([`HOSTILE_URL`]); each answer fits in
    /// 1 MiB as XML and not as JSON.
    pub hostile: bool,
}

/// The internal URL a hostile camera puts in its fault text.
pub const HOSTILE_URL: &str = "http://10.66.1.23/onvif/ptz_service";

impl Default for OnvifCameraOptions {
    fn default() -> Self {
        Self { credentials: None, presets: "1:Ingresso,2:Rotatoria".into(), auth_status: 400, hostile: false }
    }
}

/// A running test ONVIF camera. Killed on drop.
pub struct OnvifCamera {
    /// The camera process.
    pub proc: Proc,
    /// Its HTTP port on 127.0.0.1.
    pub port: u16,
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("onvif_camera.py")
}

/// The schema directory the camera will use.
pub fn schema_dir() -> PathBuf {
    std::env::var_os("PONTE_ONVIF_WSDL").map(PathBuf::from).unwrap_or_else(|| PathBuf::from(DEFAULT_SCHEMAS))
}

/// True when python3-lxml and the ONVIF schemas load (`onvif_camera.py --check`).
pub fn onvif_camera_available() -> bool {
    Command::new(PYTHON)
        .arg(script())
        .arg("--check")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Gate a test on the camera's prerequisites: fails under `CI=true`, skips
/// with a message otherwise.
pub fn require_onvif_camera() -> bool {
    require(
        onvif_camera_available(),
        &format!("the test ONVIF camera (python3-lxml, ONVIF schemas in {})", schema_dir().display()),
        "apt-get install python3-lxml python3-pip; ./scripts/test installs both and fetches the schemas \
         (onvif-zeep 0.2.12 sdist's wsdl/ directory) into /var/cache/ponte-onvif/wsdl",
    )
}

impl OnvifCamera {
    /// Starts a camera demanding `user`/`password`, with presets `1:Ingresso,2:Rotatoria`.
    pub async fn start(user: &str, password: &str) -> Result<Self> {
        Self::start_with(OnvifCameraOptions {
            credentials: Some((user.to_owned(), password.to_owned())),
            ..OnvifCameraOptions::default()
        })
        .await
    }

    /// Starts a camera with `options` on a free port and waits until it listens.
    pub async fn start_with(options: OnvifCameraOptions) -> Result<Self> {
        let mut cmd = Command::new(PYTHON);
        cmd.arg(script())
            .args(["--port", "0", "--presets", &options.presets])
            .args(["--auth-status", &options.auth_status.to_string()])
            .arg("--schemas")
            .arg(schema_dir());
        if let Some((user, password)) = &options.credentials {
            cmd.args(["--user", user, "--password", password]);
        }
        if options.hostile {
            cmd.arg("--hostile");
        }
        let mut proc = Proc::spawn_command("onvif-camera", cmd)?;
        let line = proc
            .wait_for_line("LISTENING ", Duration::from_secs(20))
            .await
            .context("the test ONVIF camera did not start (python3-lxml and the ONVIF schemas installed?)")?;
        let port = line
            .rsplit(' ')
            .next()
            .and_then(|p| p.trim().parse().ok())
            .with_context(|| format!("no port in {line:?}"))?;
        Ok(Self { proc, port })
    }

    /// `http://127.0.0.1:<port>/onvif/ptz_service`.
    pub fn ptz_url(&self) -> String {
        format!("http://127.0.0.1:{}/onvif/ptz_service", self.port)
    }

    /// `http://127.0.0.1:<port>/onvif/media_service`.
    pub fn media_url(&self) -> String {
        format!("http://127.0.0.1:{}/onvif/media_service", self.port)
    }

    /// `[device.onvif]` of a dome steered through this camera: its PTZ and
    /// media services, as `username` with `password`.
    pub fn settings(&self, username: &str, password: &str) -> crate::OnvifSettings {
        crate::OnvifSettings {
            url: self.ptz_url(),
            media_url: Some(self.media_url()),
            username: Some(username.to_owned()),
            password: Some(crate::Secret(password.to_owned())),
            ..crate::OnvifSettings::default()
        }
    }

    /// Every operation received so far, oldest first.
    pub async fn recorded(&self) -> Result<Vec<RecordedOp>> {
        let url = format!("http://127.0.0.1:{}/recorded", self.port);
        let response = http_get(&url).await?.ensure_success()?;
        serde_json::from_slice(&response.body).with_context(|| format!("{url}: not a list of operations"))
    }

    /// Polls [`OnvifCamera::recorded`] until `done` holds; returns the operations then.
    pub async fn wait_for(
        &self,
        timeout: Duration,
        mut done: impl FnMut(&[RecordedOp]) -> bool,
    ) -> Result<Vec<RecordedOp>> {
        let deadline = Instant::now() + timeout;
        loop {
            let ops = self.recorded().await?;
            if done(&ops) {
                return Ok(ops);
            }
            if Instant::now() >= deadline {
                bail!("the ONVIF camera's recording did not match within {timeout:?}; it holds {ops:#?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The camera's own check: sample requests and responses valid, broken
    /// ones rejected, a short authenticated session over HTTP.
    #[test]
    fn camera_self_test_passes() {
        if !require_onvif_camera() {
            return;
        }
        let out = Command::new(PYTHON)
            .arg(script())
            .arg("--self-test")
            .arg("--schemas")
            .arg(schema_dir())
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && stdout.contains("SELF-TEST OK"),
            "{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    #[test]
    fn ptz_sites_text_and_values_agree() {
        #[derive(Deserialize)]
        struct Sites {
            site: Vec<ponte_proto::policy::SitePolicyConfig>,
        }
        let sites: Sites = toml::from_str(PTZ_SITES).unwrap();
        assert_eq!(sites.site, ptz_sites());
    }

    #[test]
    fn missing_schemas_are_reported() {
        let out = Command::new(PYTHON)
            .arg(script())
            .args(["--check", "--schemas", "/nonexistent-ponte-onvif"])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2));
        assert!(String::from_utf8_lossy(&out.stdout).contains("MISSING"));
    }
}
