//! Attacks through what the agent reads from outside and passes on: a
//! camera's ONVIF answers (to the partner sites), and names that reach the
//! nodes' text logs (a camera id a relay asks the agent for, a typed login
//! name at the relay).

use anyhow::{Context, Result};
use ponte_proto::media::Quality;
use ponte_proto::ptz::{PtzErrorCode, PtzReply};
use ponte_proto::wire::SubscribeErrorCode;
use ponte_relay::auth::TokenConfig;
use ponte_tests::onvif_camera::{
    ptz_sites, require_onvif_camera, OnvifCamera, OnvifCameraOptions, HOSTILE_URL,
};
use ponte_tests::quic::{Answer, FakeRelay};
use ponte_tests::{
    free_tcp_port, http_get, http_request, relay_token, relay_viewer, Device, DeviceExt, DeviceKind,
    OnvifSettings, Pki, RtspReader, Stack, StackSpec, Tweak,
};
use serde_json::Value;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

const DOME: &str = "zaist-mantova";
const FIXED: &str = "po-lungofiume";
const T: Duration = Duration::from_secs(20);

/// `ponte-relay token --name NAME` with `ptz = true`: the token and its table.
fn ptz_token(name: &str) -> Result<(String, TokenConfig)> {
    let (token, mut table) = relay_token(name)?;
    table.ptz = true;
    Ok((token, table))
}

/// The relay's link to the master as `/status` shows it: (state, bytes received).
async fn master_link(mgmt: &str) -> Result<(String, u64)> {
    let doc = http_get(&format!("{mgmt}/status")).await?.json()?;
    let links = doc["links"].as_array().context("links")?;
    let link = links.iter().find(|l| l["peer"] == "master").context("no link to the master")?;
    Ok((link["state"].as_str().unwrap_or("?").to_owned(), link["bytes_received"].as_u64().unwrap_or(0)))
}

/// A camera answers GetPresets with thousands of presets whose names are
/// all `"` (1 MiB of XML, 1.6 MiB as JSON) and GotoPreset with a
/// half-megabyte fault naming its internal URL. Before the fix the agent
/// relayed them in a `PtzResult` over the 1 MiB control-message limit and
/// the relay closed the site's whole session as a protocol violation. Now
/// each is a `camera-error` refusal of that one command, without the URL,
/// and the site keeps its link and its video.
#[tokio::test]
async fn hostile_camera_answer_does_not_drop_the_site_link() -> Result<()> {
    let _heavy = ponte_tests::e2e_lock();
    if !require_onvif_camera() || !ponte_tests::require_program("/usr/bin/ffmpeg", "ffmpeg") {
        return Ok(());
    }
    let camera = OnvifCamera::start_with(OnvifCameraOptions {
        credentials: Some(("admin".into(), "secret".into())),
        hostile: true,
        ..OnvifCameraOptions::default()
    })
    .await?;
    let mut dome = Device::synthetic(DOME);
    dome.kind = DeviceKind::DomePtz;
    dome.onvif = Some(OnvifSettings {
        media_url: None,
        profile: Some("Profile_1".into()),
        ..camera.settings("admin", "secret")
    });
    let (token, table) = ptz_token("sala")?;
    let rtsp_port = free_tcp_port();
    let mut stack = Stack::start_with(StackSpec {
        devices: vec![dome, Device::synthetic(FIXED)],
        agent: Tweak::agent(|agent| agent.sites = ptz_sites()[..1].to_vec()),
        relay: Tweak::relay(move |relay| {
            relay.token(table.clone());
            let rtsp = relay.rtsp_on(rtsp_port);
            rtsp.basic = true;
            rtsp.udp = false;
        }),
        catalog_token: Some(token.clone()),
        ..StackSpec::default()
    })
    .await?;
    let mgmt = stack.relay.management_url(T).await?;

    // The site watches another camera meanwhile.
    let reader = RtspReader::start(&format!("rtsp://sala:{token}@127.0.0.1:{rtsp_port}/{FIXED}"), 60)?;
    ponte_tests::wait_until("ffmpeg to decode the fixed camera", T, Duration::from_millis(50), || async {
        Ok((reader.frames() >= 15).then_some(()))
    })
    .await?;
    let (state, bytes_before) = master_link(&mgmt).await?;
    assert_eq!(state, "up");
    let frames_before = reader.frames();

    // Watch the link while the site's operator asks the hostile camera.
    let watching = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let watch = {
        let (mgmt, watching) = (mgmt.clone(), watching.clone());
        tokio::spawn(async move {
            let mut last = bytes_before;
            let mut seen = Vec::new();
            while watching.load(Ordering::Relaxed) {
                if let Ok((state, bytes)) = master_link(&mgmt).await {
                    if state != "up" || bytes < last {
                        seen.push(format!("link {state}, {bytes} bytes after {last}"));
                    }
                    last = bytes;
                } else {
                    seen.push("no link to the master in /status".to_owned());
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            seen
        })
    };
    let url = format!("{}/api/ptz/{DOME}", stack.base_url());
    let auth = format!("Bearer {token}");
    let headers = [("Authorization", auth.as_str()), ("Content-Type", "application/json")];
    let ask = |body: &'static str| {
        let (url, headers) = (url.clone(), headers);
        async move {
            let r = http_request("POST", &url, &headers, body.as_bytes(), T).await?;
            let reply: PtzReply = serde_json::from_slice(&r.body)
                .with_context(|| format!("HTTP {}: {}", r.status, r.text()))?;
            anyhow::Ok((r.status, reply, r.body.len()))
        }
    };
    let started = Instant::now();
    let (status, presets, presets_len) = ask(r#"{"op":"presets"}"#).await?;
    let (goto_status, goto, goto_len) = ask(r#"{"op":"goto_preset","preset":"1"}"#).await?;
    let asked_ms = started.elapsed().as_millis();
    // The link still carries PTZ: the same camera's status comes back.
    let (after_status, after, _) = ask(r#"{"op":"status"}"#).await?;
    // 3 s of a 15 fps camera: about 45 frames.
    tokio::time::sleep(Duration::from_secs(3)).await;
    watching.store(false, Ordering::Relaxed);
    let link_events = watch.await?;
    println!(
        "hostile camera: presets answered {status} ({presets_len} bytes), goto_preset {goto_status} \
         ({goto_len} bytes) in {asked_ms} ms; {} frames decoded meanwhile, longest stall {} ms",
        reader.frames() - frames_before,
        reader.longest_stall().as_millis()
    );

    for (status, reply) in [(status, &presets), (goto_status, &goto)] {
        assert_eq!(status, 502, "{reply:?}");
        let PtzReply::Refused { code: PtzErrorCode::CameraError, reason, .. } = reply else {
            panic!("expected a camera-error refusal, got {reply:?}")
        };
        assert!(reason.len() < 2048, "the refusal is short: {} bytes", reason.len());
        assert!(!reason.contains("10.66.1.23") && !reason.contains("http://"), "{reason}");
        assert!(!reason.chars().any(char::is_control), "{reason:?}");
    }
    let PtzReply::Refused { reason, .. } = &presets else { unreachable!() };
    assert!(reason.contains("presets; ponte relays at most 512"), "{reason}");
    let PtzReply::Refused { reason, .. } = &goto else { unreachable!() };
    assert!(reason.contains("NoToken") && reason.contains("[address withheld]"), "{reason}");
    assert_eq!(after_status, 200, "{after:?}");
    assert!(link_events.is_empty(), "the site's link to the master dropped: {link_events:?}");
    let (state, bytes_after) = master_link(&mgmt).await?;
    assert!(state == "up" && bytes_after > bytes_before, "{state}, {bytes_before} → {bytes_after}");
    assert!(reader.frames() > frames_before + 30, "the fixed camera kept playing: {}", reader.frames());
    assert!(reader.longest_stall() < Duration::from_millis(2000), "no stall in the fixed camera's video");

    // The agent's own audit keeps the camera's text (bounded), the URL included.
    let audit = std::fs::read_to_string(stack.pki.dir().join("agent-audit.log"))?;
    let failed: Vec<Value> = audit
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|l| l["action"] == "ptz" && l["outcome"] == "failed" && l["viewer"] == "sala")
        .collect();
    assert_eq!(failed.len(), 2, "{failed:#?}");
    assert!(failed[1]["reason"].as_str().unwrap_or("").contains(HOSTILE_URL), "{}", failed[1]);
    assert!(audit.lines().all(|l| l.len() < 4096), "audit lines stay bounded");
    for p in [&mut stack.relay, &mut stack.agent] {
        assert!(p.try_exit()?.is_none(), "{} exited", p.label());
    }
    Ok(())
}

/// A typed login name: `m` + newline + what looks like the relay's own log
/// line + an OSC terminal escape. Before the fix the relay's text log
/// printed it raw: a forged `login viewer=anna` line, and an escape that
/// retitles the admin's terminal. Now it stays on the `login failed` line,
/// escaped; the audit keeps the name exactly; anna still logs in.
#[tokio::test]
async fn relay_login_name_cannot_forge_a_log_line() -> Result<()> {
    const FORGED: &str = "INFO ponte_relay::auth: login viewer=anna";
    let evil = format!("m\n{FORGED}\u{1b}]0;pwned\u{7}");
    let anna = relay_viewer("anna", "torrazzo-112-metri")?;
    let (token, table) = ptz_token("ops")?;
    let mut stack = Stack::start_with(StackSpec {
        devices: vec![Device::synthetic(FIXED)],
        relay: Tweak::relay(move |relay| {
            relay.viewer(anna.clone()).token(table.clone());
        }),
        catalog_token: Some(token),
        ..StackSpec::default()
    })
    .await?;
    let login_url = format!("{}/login", stack.base_url());
    let login = |user: &str, password: &str| {
        let body = format!("user={}&password={}", form_encode(user), form_encode(password));
        let url = login_url.clone();
        async move {
            let headers = [("Content-Type", "application/x-www-form-urlencoded")];
            anyhow::Ok(http_request("POST", &url, &headers, body.as_bytes(), T).await?.status)
        }
    };
    assert_eq!(login(&evil, "guess").await?, 401);
    let line = stack.relay.wait_for_line("login failed", T).await?;
    assert_eq!(login("anna", "torrazzo-112-metri").await?, 204, "the real user still logs in");
    stack.relay.wait_for_line("login viewer=anna", T).await?;

    let lines = stack.relay.lines();
    let forged: Vec<&String> = lines.iter().filter(|l| l.starts_with(FORGED)).collect();
    assert!(forged.is_empty(), "a forged log line: {forged:?}");
    assert!(line.contains(r"m\nINFO ponte_relay::auth: login viewer=anna\u{1b}]0;pwned\u{7}"), "{line}");
    assert!(lines.iter().all(|l| !l.contains(['\u{1b}', '\u{7}'])), "a raw terminal escape in the log");
    let audit = std::fs::read_to_string(stack.relay_config.audit_path())?;
    assert!(
        audit
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .any(|l| l["viewer"] == evil.as_str()),
        "the audit keeps the typed name exactly"
    );
    assert!(stack.relay.try_exit()?.is_none(), "the relay exited");
    Ok(())
}

/// A partner relay subscribes to a "camera" named `x` + CR LF + a line that
/// looks like the agent's own + a C1 escape. Before the fix the agent's text
/// log printed it raw inside the `subscribe refused` reason: a forged
/// `link up` line. Now it stays escaped on its line, the subscription is
/// refused `unknown` and audited with the name as sent, and the session
/// keeps its video.
#[tokio::test]
async fn subscribed_camera_name_cannot_forge_an_agent_log_line() -> Result<()> {
    const FORGED: &str = "INFO ponte_agent::uplink: link up site=questura addr=10.0.0.1:7443";
    let evil = format!("x\r\n{FORGED}\u{9b}2J");
    let dir = tempfile::tempdir()?;
    let pki = Pki::create(dir.path().join("pki"), &["master", "carabinieri"]).await?;
    let relay = FakeRelay::listen(&pki, "carabinieri")?;
    let (mut agent, _) = relay.spawn_agent(&pki, dir.path(), vec![Device::synthetic(FIXED)])?;
    let mut session = relay.accept().await?;
    let mut media = session.collect_media();

    match session.subscribe(1, &evil, Quality::Main).await? {
        Answer::Refused(SubscribeErrorCode::Unknown, _) => {}
        other => panic!("expected `unknown`, got {other:?}"),
    }
    let line = agent.wait_for_line("subscribe refused", T).await?;
    assert_eq!(session.subscribe(2, FIXED, Quality::Main).await?, Answer::Ok, "the session still subscribes");
    let mut frames = 0;
    tokio::time::timeout(T, async {
        while frames < 30 && media.recv().await.is_some() {
            frames += 1;
        }
    })
    .await
    .context("the session's video never came")?;
    assert_eq!(frames, 30, "the session's video stopped");

    let lines = agent.lines();
    let forged: Vec<&String> = lines.iter().filter(|l| l.starts_with(FORGED)).collect();
    assert!(forged.is_empty(), "a forged log line: {forged:?}");
    assert!(line.contains(&format!(r"x\r\n{FORGED}\u{{9b}}2J")), "{line}");
    assert!(lines.iter().all(|l| !l.contains('\u{9b}')), "a raw C1 control in the log");
    let audit = std::fs::read_to_string(pki.dir().join("agent-audit.log"))?;
    let refused = audit
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|l| l["camera"] == evil.as_str())
        .context("the refusal is audited under the name as sent")?;
    assert_eq!(refused["outcome"], "unknown", "{refused}");
    assert!(agent.try_exit()?.is_none(), "the agent exited");
    Ok(())
}

/// `ponte-agent pki issue --site ca`: the site's files would be `ca.pem`
/// and `ca.key`. Before the fix the CLI wrote them over the CA's own
/// certificate and key (the CA was lost, and a site held a CA-named
/// key). Now it is refused and the CA is untouched; `--site master`, the
/// agent's own identity, still works; and reissuing over a key file left
/// world-readable, or over a symbolic link to a readable file, writes a new
/// 0600 file instead of writing through.
#[tokio::test]
async fn pki_issue_cannot_overwrite_the_ca_or_write_a_key_through_a_readable_file() -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir()?;
    let pki = Pki::create(dir.path().join("pki"), &["master"]).await?;
    let before = (std::fs::read(pki.ca_cert())?, std::fs::read(pki.ca_key())?);
    let out = std::process::Command::new(ponte_tests::bin_path("ponte-agent")?)
        .args(["pki", "issue", "--dir"])
        .arg(pki.dir())
        .args(["--site", "ca"])
        .output()?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "pki issue --site ca succeeded");
    assert!(stderr.contains("site id `ca` is reserved"), "{stderr}");
    assert_eq!(
        (std::fs::read(pki.ca_cert())?, std::fs::read(pki.ca_key())?),
        before,
        "the CA was overwritten"
    );

    let mode = |p: &std::path::Path| -> Result<u32> {
        Ok(std::fs::symlink_metadata(p)?.permissions().mode() & 0o777)
    };
    std::fs::set_permissions(pki.key("master"), std::fs::Permissions::from_mode(0o644))?;
    let public = dir.path().join("public.txt");
    std::fs::write(&public, "readable by all")?;
    std::fs::set_permissions(&public, std::fs::Permissions::from_mode(0o644))?;
    std::os::unix::fs::symlink(&public, pki.key("questura"))?;
    pki.issue("master", &["localhost"], &["127.0.0.1"]).await?;
    pki.issue("questura", &[], &[]).await?;
    for site in ["master", "questura"] {
        assert_eq!(mode(&pki.key(site))?, 0o600, "{site}.key");
        assert!(std::fs::symlink_metadata(pki.key(site))?.is_file(), "{site}.key is a file of its own");
    }
    assert_eq!(std::fs::read_to_string(&public)?, "readable by all", "a key was written through the link");
    assert_eq!(mode(&pki.ca_key())?, 0o600);
    Ok(())
}

/// The audit logs name viewers, sites and client addresses. Before the fix
/// both nodes created them world-readable (0644 under the usual umask) and
/// kept an existing 0644 file so. Now both are 0600 once the node has
/// opened them, while the nodes serve as usual.
#[tokio::test]
async fn audit_files_are_readable_by_the_node_only() -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir()?;
    let pki = Pki::create(dir.path().join("pki"), &["master", "carabinieri"]).await?;
    let agent_audit = pki.dir().join("agent-audit.log");
    std::fs::write(&agent_audit, "")?;
    std::fs::set_permissions(&agent_audit, std::fs::Permissions::from_mode(0o644))?;
    let relay = FakeRelay::listen(&pki, "carabinieri")?;
    let (agent, _) = relay.spawn_agent(&pki, dir.path(), vec![Device::synthetic(FIXED)])?;
    let mut session = relay.accept().await?;
    assert_eq!(session.subscribe(1, FIXED, Quality::Main).await?, Answer::Ok);
    let mode =
        |p: &std::path::Path| -> Result<u32> { Ok(std::fs::metadata(p)?.permissions().mode() & 0o777) };
    assert!(std::fs::metadata(&agent_audit)?.len() > 0, "the agent audits into the file");
    assert_eq!(mode(&agent_audit)?, 0o600, "the agent's audit log");
    drop(agent);

    let (token, table) = ptz_token("ops")?;
    let stack = Stack::start_with(StackSpec {
        devices: vec![Device::synthetic(FIXED)],
        relay: Tweak::relay(move |relay| {
            relay.token(table.clone());
        }),
        catalog_token: Some(token),
        ..StackSpec::default()
    })
    .await?;
    let relay_audit = stack.relay_config.audit_path();
    assert_eq!(mode(&relay_audit)?, 0o600, "the relay's audit log");
    assert_eq!(mode(&stack.pki.dir().join("agent-audit.log"))?, 0o600, "a new agent audit log");
    Ok(())
}

/// `application/x-www-form-urlencoded` encoding of one value.
fn form_encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}
