//! The agent's recording store under stress (issue 21), with the real
//! binaries: a `kill -9` while ten cameras record leaves a clean store whose
//! every completed GOP plays, and a full disk deletes the oldest segments,
//! then raises the alarm, while live viewers never notice.

use anyhow::{ensure, Context, Result};
use ponte_tests::{http_get, http_request, Device, DeviceExt, RtspReader, Stack, StackSpec, Tweak};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The synthetic camera's GOP.
const GOP_MS: u64 = 2000;

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// `ponte-agent recordings check DIR`: whether it says clean, and its report.
fn check(dir: &Path) -> Result<(bool, String)> {
    let out = std::process::Command::new(ponte_tests::bin_path("ponte-agent")?)
        .args(["recordings", "check"])
        .arg(dir)
        .output()?;
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    Ok((out.status.success(), text))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_kill_9_while_ten_cameras_record_leaves_a_clean_store_that_plays_to_the_last_gop() -> Result<()> {
    let _lock = ponte_tests::e2e_lock();
    if !ponte_tests::require_program("/usr/bin/ffmpeg", "ffmpeg") {
        return Ok(());
    }
    let store = tempfile::tempdir()?;
    let cameras: Vec<String> = (0..10).map(|i| format!("rec{i}")).collect();
    let spec = StackSpec {
        devices: cameras.iter().map(|c| Device::synthetic(c)).collect(),
        agent: Tweak::record_all(store.path(), 10),
        ..StackSpec::default()
    };
    let mut stack = Stack::start_with(spec).await?;
    let base = stack.base_url();
    // Long enough for closed segments and an open one with GOPs in it.
    tokio::time::sleep(Duration::from_secs(25)).await;
    let killed_at = now_ms();
    stack.agent.signal(libc::SIGKILL)?;
    stack.agent.wait_exit(Duration::from_secs(5)).await?;
    eprintln!("agent killed (-9) while recording {} cameras", cameras.len());

    // The restarted agent cuts torn tails before it records on.
    stack.agent = ponte_tests::spawn_node("ponte-agent", &stack.dir().join("agent.toml"))?;
    ponte_tests::wait_catalog(&base, cameras.len(), Duration::from_secs(30)).await?;
    let repaired: Vec<String> = stack.agent.lines().into_iter().filter(|l| l.contains("torn tail")).collect();
    eprintln!("torn tails cut at restart: {}", repaired.len());
    let (clean, report) = check(&store.path().join("all"))?;
    eprintln!("recordings check after the restart:\n{report}");
    ensure!(clean, "the store is not clean after the restart:\n{report}");

    // Every camera: recorded up to the last GOP completed before the kill,
    // and those last seconds export and decode without an error.
    let dir = tempfile::tempdir()?;
    for camera in &cameras {
        let rec = http_get(&format!("{base}/api/recordings/{camera}")).await?.ensure_success()?.json()?;
        let before_kill: Vec<[u64; 2]> = serde_json::from_value::<Vec<[u64; 2]>>(rec["ranges"].clone())?
            .into_iter()
            .filter(|r| r[0] < killed_at)
            .collect();
        let end =
            before_kill.iter().map(|r| r[1].min(killed_at)).max().context("no range before the kill")?;
        let lost = killed_at.saturating_sub(end);
        ensure!(
            lost <= GOP_MS + 600,
            "camera {camera}: recorded up to {lost} ms before the kill; at most the GOP being written may be lost"
        );
        let body = json!({"camera": camera, "from_ms": killed_at - 8000, "to_ms": killed_at});
        let resp = http_request(
            "POST",
            &format!("{base}/api/export"),
            &[("content-type", "application/json")],
            body.to_string().as_bytes(),
            Duration::from_secs(60),
        )
        .await?;
        ensure!(resp.status == 201, "export of {camera}: HTTP {}: {}", resp.status, resp.text());
        let answer = resp.json()?;
        let clip: PathBuf = dir.path().join(format!("{camera}.mp4"));
        let url = format!("{base}{}", answer["clip"].as_str().context("clip")?);
        std::fs::write(&clip, http_get(&url).await?.ensure_success()?.body)?;
        let out = std::process::Command::new("/usr/bin/ffmpeg")
            .args(["-hide_banner", "-nostats", "-v", "error", "-i"])
            .arg(&clip)
            .args(["-f", "framecrc", "-"])
            .output()?;
        let frames = String::from_utf8_lossy(&out.stdout).lines().filter(|l| !l.starts_with('#')).count();
        let errors = String::from_utf8_lossy(&out.stderr).into_owned();
        eprintln!("{camera}: recorded until {lost} ms before the kill; the last 8 s export: {frames} frames decoded");
        ensure!(
            errors.trim().is_empty(),
            "{camera}: the clip before the kill does not decode cleanly: {errors}"
        );
        ensure!(
            frames as u64 >= (8000 - GOP_MS - 600) * 15 / 1000,
            "{camera}: only {frames} frames in the last 8 s"
        );
    }
    Ok(())
}

/// A tmpfs mounted for the test, unmounted when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Result<Tmpfs> {
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .status()?
            .success();
        ensure!(ok, "mount -t tmpfs on {}", dir.display());
        Ok(Tmpfs(dir.to_owned()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

async fn recording_status(mgmt: &str) -> Result<Value> {
    let doc = http_get(&format!("{mgmt}/status")).await?.ensure_success()?.json()?;
    Ok(doc["recordings"][0].clone())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_full_disk_deletes_the_oldest_segments_then_raises_the_alarm_and_live_goes_on() -> Result<()> {
    let _lock = ponte_tests::e2e_lock();
    if !ponte_tests::require_root() || !ponte_tests::require_program("/usr/bin/ffmpeg", "ffmpeg") {
        return Ok(());
    }
    let mount = tempfile::tempdir()?;
    let _tmpfs = Tmpfs::mount(mount.path(), "1m")?;
    let rtsp_port = ponte_tests::free_tcp_port();
    let spec = StackSpec {
        devices: vec![Device::synthetic("rec")],
        agent: Tweak::record_all(mount.path(), 2),
        relay: Tweak::relay(move |r| {
            r.rtsp_on(rtsp_port);
        }),
        ..StackSpec::default()
    };
    let mut stack = Stack::start_with(spec).await?;
    let mgmt = stack.agent.management_url(Duration::from_secs(10)).await?;
    // A live viewer all along (the VMS path): its longest wait for a frame.
    let live = RtspReader::start(&format!("rtsp://127.0.0.1:{rtsp_port}/rec"), 120)?;
    live.decodes(15, Duration::from_secs(15)).await?;

    // 100 kB/s into 1 MB: the disk fills, the oldest segments make room.
    let t0 = Instant::now();
    let first_oldest = loop {
        let r = recording_status(&mgmt).await?;
        if let Some(o) = r["oldest_ms"].as_u64() {
            break o;
        }
        ensure!(t0.elapsed() < Duration::from_secs(20), "nothing recorded: {r}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let freed = loop {
        let r = recording_status(&mgmt).await?;
        if r["deleted"]["disk-full"].as_u64().unwrap_or(0) >= 2 {
            break r;
        }
        ensure!(t0.elapsed() < Duration::from_secs(60), "no segment deleted for a full disk in 60 s: {r}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let oldest = freed["oldest_ms"].as_u64().context("oldest_ms")?;
    eprintln!(
        "disk full after {:?}: {} segments deleted, oldest recording moved {} ms on, {} bytes kept, alarm {:?}",
        t0.elapsed(),
        freed["deleted"]["disk-full"],
        oldest.saturating_sub(first_oldest),
        freed["bytes"],
        freed["alarm"]
    );
    ensure!(oldest > first_oldest, "the oldest recording stayed: {freed}");
    ensure!(freed["alarm"].is_null(), "an alarm while segments could still be freed: {freed}");

    // Now something else takes the disk, and every byte the store frees
    // too: nothing the store may delete is left, and the alarm goes up, in
    // status and in the metrics.
    let filler = mount.path().join("filler");
    let t1 = Instant::now();
    let alarmed = loop {
        let _ = std::process::Command::new("dd")
            .args([
                "if=/dev/zero",
                &format!("of={}", filler.display()),
                "bs=16k",
                "oflag=append",
                "conv=notrunc",
            ])
            .stderr(std::process::Stdio::null())
            .status();
        let r = recording_status(&mgmt).await?;
        if !r["alarm"].is_null() {
            break r;
        }
        ensure!(t1.elapsed() < Duration::from_secs(40), "no alarm 40 s after the disk filled up: {r}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    eprintln!("alarm after {:?}: {}", t1.elapsed(), alarmed["alarm"]);
    let doc = http_get(&format!("{mgmt}/status")).await?.json()?;
    ensure!(doc["health"] == "degraded", "agent health with the alarm: {}", doc["health"]);
    let metrics = http_get(&format!("{mgmt}/metrics")).await?.text();
    ensure!(metrics.contains("ponte_recording_alarm{rule=\"all\"} 1"), "no alarm in /metrics");

    // Space back: recording resumes and the alarm clears.
    std::fs::remove_file(&filler)?;
    let t2 = Instant::now();
    loop {
        let r = recording_status(&mgmt).await?;
        if r["alarm"].is_null() {
            break;
        }
        ensure!(t2.elapsed() < Duration::from_secs(20), "the alarm stayed after space came back: {r}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    // The live viewer never waited longer than a GOP for a frame.
    let stall = live.longest_stall();
    let frames = live.frames();
    eprintln!("live viewer meanwhile: {frames} frames, longest wait for a frame {stall:?}");
    ensure!(
        stall <= Duration::from_millis(GOP_MS),
        "a live viewer waited {stall:?} for a frame (one GOP: {GOP_MS} ms)"
    );
    stack.agent.kill();
    Ok(())
}
