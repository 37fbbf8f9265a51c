//! Recall (issue 21), end to end with the real binaries: the agent records a
//! synthetic camera, a partner relay plays it back in Chromium (WHEP, the
//! console's timeline) and to a VMS over RTSP (`Range: clock=`), takes a
//! signed export that `ponte-agent evidence verify` checks offline, and is
//! refused what its policy does not grant, saying which right is missing.

use anyhow::{bail, ensure, Context, Result};
use ponte_tests::http_request;
use ponte_tests::{Chromium, Device, DeviceExt, Stack, StackSpec, Tweak};
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The synthetic camera's GOP: an IDR every 2 s.
const GOP_MS: f64 = 2000.0;
const CAMERA: &str = "rec";

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// The camera `rec`, recorded into `store`; the relay serves RTSP on `rtsp_port`.
fn recorded_camera(store: &Path, rtsp_port: u16) -> StackSpec {
    StackSpec {
        devices: vec![Device::synthetic(CAMERA)],
        agent: Tweak::record_all(store, 10),
        relay: Tweak::relay(move |r| {
            r.rtsp_on(rtsp_port);
        }),
        ..StackSpec::default()
    }
}

async fn post_json(url: &str, body: &Value) -> Result<ponte_tests::HttpResponse> {
    http_request(
        "POST",
        url,
        &[("content-type", "application/json")],
        body.to_string().as_bytes(),
        Duration::from_secs(120),
    )
    .await
}

/// Runs ffmpeg on `url` to the end of the stream (or `limit`): the frames
/// it decoded and what it printed on stderr (`-v error`: only errors).
async fn ffmpeg_frames(url: &str, limit: Duration) -> Result<(u64, String)> {
    let out = tokio::time::timeout(
        limit,
        tokio::process::Command::new("/usr/bin/ffmpeg")
            .args(["-hide_banner", "-nostats", "-v", "error", "-rtsp_transport", "tcp", "-i", url])
            .args(["-f", "framecrc", "-"])
            .kill_on_drop(true)
            .output(),
    )
    .await
    .context("ffmpeg did not finish")??;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let frames = stdout.lines().filter(|l| !l.starts_with('#') && !l.trim().is_empty()).count() as u64;
    Ok((frames, String::from_utf8_lossy(&out.stderr).into_owned()))
}

fn ffprobe_duration(path: &Path) -> Result<(String, f64, u64)> {
    let out = std::process::Command::new("/usr/bin/ffprobe")
        .args(["-v", "error", "-count_frames", "-select_streams", "v:0"])
        .args(["-show_entries", "stream=codec_name,nb_read_frames:format=duration", "-of", "json"])
        .arg(path)
        .output()?;
    let v: Value = serde_json::from_slice(&out.stdout).context("ffprobe JSON")?;
    let s = &v["streams"][0];
    let duration: f64 = v["format"]["duration"].as_str().unwrap_or("0").parse()?;
    let frames: u64 = s["nb_read_frames"].as_str().unwrap_or("0").parse()?;
    Ok((s["codec_name"].as_str().unwrap_or("?").to_owned(), duration, frames))
}

fn ffmpeg_decode_errors(path: &Path) -> Result<String> {
    let out = std::process::Command::new("/usr/bin/ffmpeg")
        .args(["-hide_banner", "-nostats", "-v", "error", "-i"])
        .arg(path)
        .args(["-f", "null", "-"])
        .output()?;
    Ok(String::from_utf8_lossy(&out.stderr).into_owned())
}

/// `ponte-agent evidence verify`: exit success and what it printed.
fn verify(clip: &Path, manifest: &Path, ca: &Path) -> Result<(bool, String)> {
    let out = std::process::Command::new(ponte_tests::bin_path("ponte-agent")?)
        .args(["evidence", "verify"])
        .arg(clip)
        .arg(manifest)
        .arg("--ca")
        .arg(ca)
        .output()?;
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    Ok((out.status.success(), text))
}

fn rtsp_addr(stack: &Stack) -> Result<SocketAddr> {
    Ok(stack.relay_config.rtsp.as_ref().context("the relay's [rtsp]")?.listen)
}

/// The console's samples of tile 0 that are replay frames with a capture
/// time read from the SEI in the browser.
async fn replay_samples(browser: &Chromium) -> Result<Vec<(f64, f64)>> {
    let v = browser.eval("window.ponteConsole.samples(0)").await?;
    Ok(v.as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .filter(|s| s["replay"].as_bool() == Some(true))
        .filter_map(|s| Some((s["shownAt"].as_f64()?, s["probeCaptureMs"].as_f64()?)))
        .collect())
}

#[tokio::test(flavor = "multi_thread")]
async fn replay_in_the_browser_and_over_rtsp_and_a_verified_export() -> Result<()> {
    let _lock = ponte_tests::e2e_lock();
    if !ponte_tests::require_program(Chromium::binary(), "chromium")
        || !ponte_tests::require_program("/usr/bin/ffmpeg", "ffmpeg")
    {
        return Ok(());
    }
    let store = tempfile::tempdir()?;
    let rtsp_port = ponte_tests::free_tcp_port();
    let spec = recorded_camera(store.path(), rtsp_port);
    let started = now_ms();
    let stack = Stack::start_with(spec).await?;
    let base = stack.base_url();

    // A minute of recording (the recorder starts with the agent).
    let browser = Chromium::launch().await?;
    browser.open_console(&format!("{base}/console?probe=1")).await?;
    ensure!(
        browser.eval("window.ponteConsole.probe").await? == json!(true),
        "the console's SEI probe is off"
    );
    browser.eval(&format!("window.ponteConsole.setLayout('1x1', ['{CAMERA}'])")).await?;
    let wait = Duration::from_millis((started + 60_000).saturating_sub(now_ms()));
    tokio::time::sleep(wait).await;

    // What the relay may know of the recording.
    let rec =
        ponte_tests::http_get(&format!("{base}/api/recordings/{CAMERA}")).await?.ensure_success()?.json()?;
    let ranges = rec["ranges"].as_array().context("ranges")?;
    eprintln!("recorded ranges: {ranges:?}");
    ensure!(!ranges.is_empty(), "nothing recorded after a minute: {rec}");

    // Replay from 30 s ago in Chromium.
    let asked = now_ms() - 30_000;
    let t0 = Instant::now();
    browser.eval(&format!("window.ponteConsole.playFrom(0, {asked})")).await?;
    let first = loop {
        let samples = replay_samples(&browser).await?;
        if let Some(first) = samples.first() {
            break *first;
        }
        if t0.elapsed() > Duration::from_secs(10) {
            bail!(
                "no replayed frame in 10 s: {}\nconsole:\n{}",
                browser.eval("window.ponteConsole.tiles()").await?,
                browser.console().join("\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let seek_ms = t0.elapsed().as_millis();
    let offset = first.1 - asked as f64;
    eprintln!("replay: first frame shown {seek_ms} ms after asking; its capture time is {offset:+.0} ms from the time asked for");
    ensure!(
        offset.abs() <= GOP_MS + 100.0,
        "first replayed frame {offset:+.0} ms from the time asked (one GOP: {GOP_MS} ms)"
    );

    // Ten seconds at 1×: the capture times advance as fast as the screen's clock.
    tokio::time::sleep(Duration::from_secs(10)).await;
    let samples = replay_samples(&browser).await?;
    let (a, b) = (samples.first().copied().context("samples")?, samples.last().copied().context("samples")?);
    let speed = (b.1 - a.1) / (b.0 - a.0);
    let worst_gap = samples.windows(2).map(|w| w[1].0 - w[0].0).fold(0.0, f64::max);
    eprintln!(
        "replay: {} frames over {:.1} s of screen time, speed {speed:.3}×, longest gap between frames {worst_gap:.0} ms",
        samples.len(),
        (b.0 - a.0) / 1000.0
    );
    ensure!((0.95..=1.05).contains(&speed), "replay runs at {speed:.3}×, not 1×");
    // Frames shown with their SEI read: a headless compositor skips a few.
    let fps = samples.len() as f64 * 1000.0 / (b.0 - a.0);
    ensure!(fps >= 12.0, "{fps:.1} replayed frames a second shown, the camera sends 15");
    ensure!(worst_gap < 500.0, "a {worst_gap:.0} ms hole in the replay");
    let tile = &browser.eval("window.ponteConsole.tiles()[0]").await?;
    ensure!(
        tile["replaying"] == json!(true) && tile["notLive"] == json!(false),
        "tile during replay: {tile}"
    );

    // Back to live: a picture younger than 1 s.
    browser.eval("window.ponteConsole.live(0)").await?;
    let t1 = Instant::now();
    loop {
        let tile = browser.eval("window.ponteConsole.tiles()[0]").await?;
        let age = tile["probeAgeMs"].as_f64();
        if tile["replaying"] == json!(false) && age.is_some_and(|a| a < 1000.0) {
            eprintln!("back to live after {:?}: picture {:.0} ms old", t1.elapsed(), age.unwrap_or(0.0));
            break;
        }
        ensure!(t1.elapsed() < Duration::from_secs(5), "not back to live in 5 s: {tile}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(browser);

    // The VMS path: ffmpeg pulls a past 10 s interval over RTSP with
    // `Range: clock=` and decodes it to the end with zero errors.
    let (from, to) = (started + 15_000, started + 25_000);
    let proxy = ponte_tests::rtsp_replay::range_proxy(rtsp_addr(&stack)?, from, to).await?;
    let (frames, errors) = ffmpeg_frames(&format!("rtsp://{proxy}/{CAMERA}"), Duration::from_secs(40))
        .await
        .with_context(|| format!("relay:\n{}\nagent:\n{}", stack.relay.tail(30), stack.agent.tail(30)))?;
    eprintln!("RTSP replay of 10 s: {frames} frames decoded; ffmpeg errors: {:?}", errors.trim());
    ensure!(errors.trim().is_empty(), "ffmpeg reported errors on the replay: {errors}");
    ensure!((120..=190).contains(&frames), "{frames} frames for a 10 s interval at 15 fps (± one GOP)");

    // Evidence: a 20 s clip, its signed manifest, checked offline.
    let (from, to) = (started + 20_000, started + 40_000);
    let resp =
        post_json(&format!("{base}/api/export"), &json!({"camera": CAMERA, "from_ms": from, "to_ms": to}))
            .await?;
    ensure!(resp.status == 201, "export: HTTP {}: {}", resp.status, resp.text());
    let answer = resp.json()?;
    let dir = tempfile::tempdir()?;
    let clip = dir.path().join(answer["file"].as_str().context("file")?);
    let manifest = dir.path().join("clip.manifest.json");
    for (url, path) in [(&answer["clip"], &clip), (&answer["manifest_url"], &manifest)] {
        let url = format!("{base}{}", url.as_str().context("url")?);
        let body = ponte_tests::http_get(&url).await?.ensure_success()?.body;
        std::fs::write(path, body)?;
    }
    let (codec, duration, nframes) = ffprobe_duration(&clip)?;
    eprintln!(
        "export: {codec}, {duration:.2} s, {nframes} frames, {} bytes",
        std::fs::metadata(&clip)?.len()
    );
    ensure!(codec == "h264", "clip codec {codec}");
    ensure!((duration - 20.0).abs() <= GOP_MS / 1000.0, "clip lasts {duration:.2} s, not 20 s ± one GOP");
    let errors = ffmpeg_decode_errors(&clip)?;
    ensure!(errors.trim().is_empty(), "the clip does not decode cleanly: {errors}");
    let ca = stack.pki.ca_cert();
    let (ok, said) = verify(&clip, &manifest, &ca)?;
    eprintln!("evidence verify: {}", said.trim());
    ensure!(ok, "evidence verify failed on the untouched export: {said}");

    // One byte changed in the clip, then in the manifest: each is caught, by name.
    let original = std::fs::read(&clip)?;
    let mut bent = original.clone();
    let mid = bent.len() / 2;
    bent[mid] ^= 0x01;
    std::fs::write(&clip, &bent)?;
    let (ok, said) = verify(&clip, &manifest, &ca)?;
    eprintln!("a byte of the clip changed: {}", said.trim());
    ensure!(!ok && said.contains("SHA-256") && said.contains("MP4"), "a changed clip: {said}");
    std::fs::write(&clip, &original)?;
    let text = std::fs::read_to_string(&manifest)?;
    let frames_field = format!("\"frames\": {nframes}");
    let bent = if text.contains(&frames_field) {
        text.replacen(&frames_field, &format!("\"frames\": {}", nframes + 1), 1)
    } else {
        text.replacen("\"camera\": \"rec\"", "\"camera\": \"req\"", 1)
    };
    ensure!(bent != text, "could not change the manifest: {text}");
    std::fs::write(&manifest, bent)?;
    let (ok, said) = verify(&clip, &manifest, &ca)?;
    eprintln!("a byte of the manifest changed: {}", said.trim());
    ensure!(!ok && said.contains("manifest") && said.contains("signature"), "a changed manifest: {said}");

    // Both sides audited the playbacks and the export, naming the operator.
    let agent_audit = std::fs::read_to_string(&stack.agent_config.audit.path)?;
    let relay_audit = std::fs::read_to_string(stack.relay_config.audit_path())?;
    for (who, log) in [("agent", &agent_audit), ("relay", &relay_audit)] {
        for action in ["\"playback\"", "\"export\""] {
            ensure!(log.contains(action), "the {who}'s audit has no {action} line");
        }
    }
    ensure!(agent_audit.contains("\"sent\""), "the agent's audit does not say the export was sent");
    Ok(())
}

/// Sets the site's recall rights in agent.toml and reloads the agent.
async fn set_rights(stack: &mut Stack, playback: bool, export: bool, lookback: Option<f64>) -> Result<()> {
    let mut cfg = stack.agent_config.clone();
    for site in &mut cfg.sites {
        site.playback = playback;
        site.export = export;
        site.max_lookback_hours = lookback;
    }
    cfg.write(stack.dir().join("agent.toml"))?;
    let from = stack.agent.line_count();
    stack.agent.signal(libc::SIGHUP)?;
    stack.agent.wait_for_line_from(from, "policy reloaded", Duration::from_secs(10)).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_site_is_refused_what_its_policy_does_not_grant_with_the_right_named() -> Result<()> {
    let _lock = ponte_tests::e2e_lock();
    if !ponte_tests::require_program("/usr/bin/ffmpeg", "ffmpeg") {
        return Ok(());
    }
    let store = tempfile::tempdir()?;
    let rtsp_port = ponte_tests::free_tcp_port();
    let spec = recorded_camera(store.path(), rtsp_port);
    let mut stack = Stack::start_with(spec).await?;
    let base = stack.base_url();
    tokio::time::sleep(Duration::from_secs(5)).await;

    // No `playback` right: the recorded ranges, a replay and an export are
    // refused, each saying which right is missing.
    set_rights(&mut stack, false, false, None).await?;
    let r = ponte_tests::http_get(&format!("{base}/api/recordings/{CAMERA}")).await?;
    eprintln!("ranges without playback: {} {}", r.status, r.text().trim());
    ensure!(
        r.status == 403 && r.text().contains("`playback`"),
        "ranges without the right: {} {}",
        r.status,
        r.text()
    );
    let now = now_ms();
    let r = post_json(
        &format!("{base}/api/export"),
        &json!({"camera": CAMERA, "from_ms": now - 4000, "to_ms": now}),
    )
    .await?;
    eprintln!("export without the right: {} {}", r.status, r.text().trim());
    ensure!(
        r.status == 403 && r.text().contains("`export`"),
        "export without the right: {} {}",
        r.status,
        r.text()
    );
    let proxy = ponte_tests::rtsp_replay::range_proxy(rtsp_addr(&stack)?, now - 4000, now - 1000).await?;
    let (frames, errors) =
        ffmpeg_frames(&format!("rtsp://{proxy}/{CAMERA}"), Duration::from_secs(20)).await?;
    eprintln!("RTSP replay without the right: {frames} frames, ffmpeg said {:?}", errors.trim());
    ensure!(
        frames == 0 && errors.contains("403"),
        "an RTSP replay without the right: {frames} frames, {errors}"
    );

    // `max_lookback_hours = 1`: an hour ago is fine, two hours ago is not.
    set_rights(&mut stack, true, true, Some(1.0)).await?;
    let rec =
        ponte_tests::http_get(&format!("{base}/api/recordings/{CAMERA}")).await?.ensure_success()?.json()?;
    let earliest = rec["earliest_ms"].as_u64().context("earliest_ms")?;
    ensure!(earliest.abs_diff(now_ms() - 3_600_000) < 60_000, "earliest {earliest} is not an hour ago");
    let two_hours = now_ms() - 2 * 3_600_000;
    let r = post_json(
        &format!("{base}/api/export"),
        &json!({"camera": CAMERA, "from_ms": two_hours, "to_ms": two_hours + 10_000}),
    )
    .await?;
    eprintln!("export from two hours ago: {} {}", r.status, r.text().trim());
    ensure!(r.status == 403 && r.text().contains("max_lookback_hours"), "{} {}", r.status, r.text());
    let proxy =
        ponte_tests::rtsp_replay::range_proxy(rtsp_addr(&stack)?, two_hours, two_hours + 5000).await?;
    let (frames, errors) =
        ffmpeg_frames(&format!("rtsp://{proxy}/{CAMERA}"), Duration::from_secs(20)).await?;
    ensure!(frames == 0 && errors.contains("403"), "a replay from two hours ago: {frames} frames, {errors}");
    let audit = std::fs::read_to_string(&stack.agent_config.audit.path)?;
    ensure!(
        audit.lines().any(|l| l.contains("\"refused\"") && l.contains("max_lookback_hours")),
        "the agent's audit has no refusal naming max_lookback_hours"
    );
    Ok(())
}
