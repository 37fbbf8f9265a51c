//! Camera alarms over ONVIF Events (issue 23): the agent's PullPoint client
//! (`ponte_agent::camera_events`) against the schema-checked test camera
//! (`tests/onvif_camera.py`), which raises events on `POST /test/events`.
//! Every request the client sends is checked against events.wsdl and
//! b-2.xsd by the camera; the tests assert on the events that arrive, how
//! fast, and how many.

use anyhow::{bail, Context, Result};
use ponte_agent::camera_events::{self, CameraEvent, EventKind};
use ponte_agent::config::Device;
use ponte_tests::onvif_camera::{require_onvif_camera, schema_dir, RecordedOp, PYTHON};
use ponte_tests::{http_request, Proc};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// The test camera demanding `admin`/`secret`, granting subscriptions of at
/// most `max_subscription_s` (so that a test outlives one and sees a Renew).
struct Camera {
    _proc: Proc,
    port: u16,
}

impl Camera {
    async fn start(max_subscription_s: u32) -> Result<Camera> {
        let mut cmd = Command::new(PYTHON);
        cmd.arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("onvif_camera.py"))
            .args(["--port", "0", "--user", "admin", "--password", "secret"])
            .args(["--max-subscription", &max_subscription_s.to_string()])
            .arg("--schemas")
            .arg(schema_dir());
        let mut proc = Proc::spawn_command("onvif-camera", cmd)?;
        let line = proc.wait_for_line("LISTENING ", Duration::from_secs(20)).await?;
        let port = line.rsplit(' ').next().and_then(|p| p.trim().parse().ok()).context("no port")?;
        Ok(Camera { _proc: proc, port })
    }

    /// A `[[device]]` of `kind` with `lenses` whose alarms come from this camera.
    fn device(&self, kind: &str, lenses: u8) -> Result<Device> {
        let toml = format!(
            "id = \"gate\"\nname = \"Varco\"\ntype = \"{kind}\"\nlenses = {lenses}\nsource = \"synthetic\"\n\
             [onvif]\nurl = \"http://127.0.0.1:{}/onvif/device_service\"\nevents = true\n\
             username = \"admin\"\npassword = \"secret\"\n",
            self.port
        );
        toml::from_str(&toml).context("the device table")
    }

    async fn control(&self, method: &str, query: &str) -> Result<serde_json::Value> {
        let url = format!("http://127.0.0.1:{}/test/events{query}", self.port);
        let r = http_request(method, &url, &[], b"", Duration::from_secs(5)).await?.ensure_success()?;
        r.json()
    }

    /// Raises events (see the camera's module doc for the query).
    async fn raise(&self, query: &str) -> Result<()> {
        let answer = self.control("POST", query).await?;
        if answer["live"] != 1 {
            bail!("the camera has {} live pull points, not 1: {answer}", answer["live"]);
        }
        Ok(())
    }

    /// Waits until one pull point exists and has been pulled.
    async fn wait_pulling(&self) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let status = self.control("GET", "").await?;
            if status["subscriptions"][0]["pulls"].as_u64().unwrap_or(0) > 0 {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("the agent never pulled: {status}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn recorded(&self) -> Result<Vec<RecordedOp>> {
        let url = format!("http://127.0.0.1:{}/recorded", self.port);
        let r = http_request("GET", &url, &[], b"", Duration::from_secs(5)).await?.ensure_success()?;
        Ok(serde_json::from_slice(&r.body)?)
    }
}

async fn next(rx: &mut mpsc::Receiver<CameraEvent>, within: Duration) -> Result<CameraEvent> {
    tokio::time::timeout(within, rx.recv())
        .await
        .with_context(|| format!("no camera event within {within:?}"))?
        .context("the events loop ended")
}

#[tokio::test]
async fn each_alarm_kind_reaches_the_agent_within_a_second_on_its_lens() -> Result<()> {
    if !require_onvif_camera() {
        return Ok(());
    }
    let camera = Camera::start(3600).await?;
    let (tx, mut rx) = mpsc::channel(64);
    let task = camera_events::spawn(&camera.device("fixed-bi-optic", 2)?, tx).context("events = true")?;
    camera.wait_pulling().await?;
    let cases = [
        ("?kind=motion", EventKind::Motion, true, "gate-1"),
        ("?kind=motion&state=false&source=2", EventKind::Motion, false, "gate-2"),
        ("?kind=tampering&source=2", EventKind::Tampering, true, "gate-2"),
        ("?kind=video_loss&state=true", EventKind::VideoLoss, true, "gate-1"),
    ];
    for (query, kind, active, lens) in cases {
        let raised = std::time::SystemTime::now();
        let start = Instant::now();
        camera.raise(query).await?;
        let event = next(&mut rx, Duration::from_secs(1)).await.with_context(|| query.to_owned())?;
        let took = start.elapsed();
        assert_eq!(
            (event.device.as_str(), event.camera.as_str(), event.kind, event.active),
            ("gate", lens, kind, active),
            "{query}"
        );
        let skew = event.at.duration_since(raised).unwrap_or_else(|e| e.duration());
        assert!(skew < Duration::from_secs(1), "UtcTime {:?} is the camera's, not {skew:?} off", event.at);
        eprintln!("{query}: event after {} ms", took.as_millis());
    }
    assert!(
        tokio::time::timeout(Duration::from_millis(1500), rx.recv()).await.is_err(),
        "one event per alarm"
    );
    task.abort();
    let ops = camera.recorded().await?;
    let invalid: Vec<_> = ops.iter().filter(|r| !r.valid || !r.authorized).collect();
    assert!(invalid.is_empty(), "requests the camera refused: {invalid:#?}");
    let creates = ops.iter().filter(|r| r.op.as_deref() == Some("CreatePullPointSubscription")).count();
    assert_eq!(creates, 1, "one subscription for the whole test");
    Ok(())
}

#[tokio::test]
async fn a_chattering_camera_loses_no_event_and_the_subscription_is_renewed() -> Result<()> {
    if !require_onvif_camera() {
        return Ok(());
    }
    // Subscriptions of 2 s: the 2 s burst and the wait before it need a Renew.
    let camera = Camera::start(2).await?;
    let (tx, mut rx) = mpsc::channel(1024);
    let task = camera_events::spawn(&camera.device("fixed", 1)?, tx).context("events = true")?;
    camera.wait_pulling().await?;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    camera.raise("?kind=motion&count=200&rate=100").await?;
    let start = Instant::now();
    let mut events = Vec::new();
    while events.len() < 200 {
        match tokio::time::timeout(Duration::from_secs(4).saturating_sub(start.elapsed()), rx.recv()).await {
            Ok(Some(e)) => events.push(e),
            _ => break,
        }
    }
    let took = start.elapsed();
    assert_eq!(events.len(), 200, "events of 200 raised at 100/s, after {took:?}");
    assert!(took < Duration::from_secs(3), "the last event 1 s late at most: {took:?}");
    let actives: Vec<bool> = events.iter().map(|e| e.active).collect();
    let alternating: Vec<bool> = (0..200).map(|i| i % 2 == 0).collect();
    assert_eq!(actives, alternating, "in the camera's order");
    assert!(events.iter().all(|e| e.kind == EventKind::Motion && e.camera == "gate"));
    assert!(events.windows(2).all(|w| w[0].at <= w[1].at), "UtcTimes in order");
    task.abort();
    let ops = camera.recorded().await?;
    let count = |op: &str| ops.iter().filter(|r| r.op.as_deref() == Some(op)).count();
    assert_eq!(count("CreatePullPointSubscription"), 1, "never re-subscribed: {ops:#?}");
    assert!(count("Renew") >= 1, "renewed before the 2 s termination");
    let invalid: Vec<_> = ops.iter().filter(|r| !r.valid || !r.authorized).collect();
    assert!(invalid.is_empty(), "requests the camera refused: {invalid:#?}");
    Ok(())
}
