//! PTZ control through the real agent, against a schema-checked ONVIF
//! camera: a permitted site steers it, a site without the right is refused
//! and audited, the master room's HTTP API (an operator with a token)
//! pre-empts a site, and a move
//! whose controller stops renewing (or whose relay session vanishes) is
//! stopped. Assertions are on what the camera recorded.

use anyhow::{Context, Result};
use ponte_proto::ptz::{PtzCommand, PtzErrorCode, PtzReply};
use ponte_tests::onvif_camera::{ptz_sites, require_onvif_camera, OnvifCamera, RecordedOp};
use ponte_tests::quic::FakeRelay;
use ponte_tests::{
    bin_path, http_request, AgentConfig, Device, DeviceExt, DeviceKind, Pki, Proc, RelayTarget,
};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const CAMERA: &str = "zaist-mantova";
const DEADMAN_MS: u64 = 1500;
const WAIT: Duration = Duration::from_secs(10);

/// `[ptz]` with a 10 s lock and the dead-man above, and the PTZ test sites.
fn policy(cfg: &mut AgentConfig) {
    cfg.ptz.lock_idle_secs = 10;
    cfg.ptz.deadman_ms = DEADMAN_MS;
    cfg.sites = ptz_sites();
}

fn moves(ops: &[RecordedOp]) -> Vec<&RecordedOp> {
    ops.iter().filter(|o| o.op.as_deref() == Some("ContinuousMove")).collect()
}

fn stops_after(ops: &[RecordedOp], t: f64) -> Option<&RecordedOp> {
    ops.iter().find(|o| o.op.as_deref() == Some("Stop") && o.t >= t)
}

fn unix_now() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or_default()
}

/// `POST url` with a JSON body, as the operator holding `bearer` when given.
async fn post(url: &str, body: &str, bearer: Option<&str>) -> Result<(u16, serde_json::Value)> {
    let auth = bearer.map(|t| format!("Bearer {t}"));
    let mut headers = vec![("Content-Type", "application/json")];
    headers.extend(auth.as_deref().map(|a| ("Authorization", a)));
    let r = http_request("POST", url, &headers, body.as_bytes(), Duration::from_secs(10)).await?;
    let json = r.json().unwrap_or(serde_json::Value::Null);
    Ok((r.status, json))
}

fn site_of(reply: &PtzReply) -> Option<&str> {
    match reply {
        PtzReply::Done { holder, .. } | PtzReply::Refused { holder, .. } => {
            holder.as_ref().map(|h| h.controller.site.as_str())
        }
    }
}

#[tokio::test]
async fn sites_and_the_master_room_steer_a_camera_through_the_agent() -> Result<()> {
    if !require_onvif_camera() {
        return Ok(());
    }
    let dir = tempfile::tempdir()?;
    let pki = Pki::create(dir.path().join("pki"), &["master", "carabinieri", "questura"]).await?;
    let camera = OnvifCamera::start("admin", "secret").await?;
    let cc = FakeRelay::listen(&pki, "carabinieri")?;
    let qu = FakeRelay::listen(&pki, "questura")?;
    let (token, operator) = ponte_tests::operator_token("sala")?;

    let mut dome = Device::synthetic(CAMERA);
    dome.kind = DeviceKind::DomePtz;
    dome.zone = "Zaist".into();
    dome.onvif = Some(camera.settings("admin", "secret"));
    let relays = vec![
        RelayTarget::new("carabinieri", cc.endpoint.local_addr()?),
        RelayTarget::new("questura", qu.endpoint.local_addr()?),
    ];
    let mut cfg =
        AgentConfig::new("master", pki.tls("master"), relays, vec![dome, Device::synthetic("po-lungofiume")]);
    policy(&mut cfg);
    cfg.operators = vec![operator];
    let path = cfg.write(dir.path().join("agent.toml"))?;
    let mut cmd = std::process::Command::new(bin_path("ponte-agent")?);
    cmd.arg("run").arg("--config").arg(&path).env("RUST_LOG", "info");
    let mut agent = Proc::spawn_command("agent", cmd)?;
    let mgmt = agent.management_url(Duration::from_secs(20)).await?;
    let mut c = cc.accept().await?;
    let mut q = qu.accept().await?;
    let dome_entry = c.catalog.iter().find(|e| e.id == CAMERA).context("dome in the catalog")?;
    assert!(dome_entry.ptz, "carabinieri may steer the dome");
    assert!(q.catalog.iter().any(|e| e.id == CAMERA && !e.ptz), "questura sees the dome without PTZ");

    // (a) A permitted site's move reaches the camera, as a valid ONVIF request.
    let reply = c.ptz(1, CAMERA, "rossi", PtzCommand::Move { pan: 500, tilt: -250, zoom: 0 }).await?;
    assert!(matches!(reply, PtzReply::Done { .. }), "{reply:?}");
    assert_eq!(site_of(&reply), Some("carabinieri"));
    let ops = camera.wait_for(Duration::from_secs(5), |ops| !moves(ops).is_empty()).await?;
    let m = moves(&ops)[0];
    assert_eq!((m.pan, m.tilt, m.zoom), (Some(0.5), Some(-0.25), Some(0.0)), "{m:?}");
    assert!(m.valid && m.authorized, "the agent's ContinuousMove must pass the ONVIF schema: {m:?}");
    println!("ContinuousMove timeout as sent: {:?}", m.timeout);
    assert!(m.timeout.is_some(), "the dead-man goes to the camera as the move's Timeout: {m:?}");
    let (cam, holder) = c.next_ptz_lock().await?;
    assert_eq!(
        (cam.as_str(), holder.map(|h| h.controller.label())),
        (CAMERA, Some("rossi@carabinieri".into()))
    );

    // (b) A site without the right is refused and audited; the camera hears nothing.
    let before = camera.recorded().await?.len();
    match q.ptz(1, CAMERA, "bianchi", PtzCommand::Move { pan: -500, tilt: 0, zoom: 0 }).await? {
        PtzReply::Refused { code: PtzErrorCode::Forbidden, reason, .. } => {
            assert!(reason.contains("ptz = true"), "the reason names the config key: {reason}")
        }
        other => panic!("questura has no PTZ right, got {other:?}"),
    }
    match q.ptz(2, "po-lungofiume", "bianchi", PtzCommand::Stop).await? {
        PtzReply::Refused { code: PtzErrorCode::Unsupported, .. } => {}
        other => panic!("a fixed camera cannot be steered, got {other:?}"),
    }
    let audit = std::fs::read_to_string(pki.dir().join("agent-audit.log"))?;
    let line = audit
        .lines()
        .find(|l| l.contains("\"site\":\"questura\"") && l.contains("\"action\":\"ptz\""))
        .context("the refusal is audited")?;
    assert!(line.contains("\"outcome\":\"denied\"") && line.contains("\"viewer\":\"bianchi\""), "{line}");
    assert!(line.contains("forbidden"), "{line}");

    // (c) The master room pre-empts the site through the management port.
    let url = format!("{mgmt}/api/ptz/{CAMERA}");
    let (status, body) = post(&format!("{url}?operator=sala"), r#"{"op":"move","pan":-300}"#, None).await?;
    assert_eq!(status, 401, "the operator must authenticate: {body}");
    let (status, body) = post(&url, r#"{"op":"move","pan":-300}"#, Some(&token)).await?;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["holder"]["site"], "master", "{body}");
    assert_eq!(body["holder"]["priority"], 100, "{body}");
    let ops = camera.wait_for(Duration::from_secs(5), |ops| moves(ops).len() >= 2).await?;
    assert_eq!(moves(&ops)[1].pan, Some(-0.3));
    assert!(
        ops[before..].iter().all(|o| o.pan != Some(-0.5) && o.op.as_deref() != Some("Stop")),
        "nothing from questura reached the camera: {ops:#?}"
    );
    let (cam, holder) = c.next_ptz_lock().await?;
    assert_eq!(cam, CAMERA);
    assert_eq!(
        holder.map(|h| h.controller.label()),
        Some("sala@master".into()),
        "the loser learns who holds it"
    );
    match c.ptz(2, CAMERA, "rossi", PtzCommand::Move { pan: 500, tilt: 0, zoom: 0 }).await? {
        PtzReply::Refused { code: PtzErrorCode::Locked, holder: Some(h), reason } => {
            assert_eq!(h.controller.site, "master", "{reason}")
        }
        other => panic!("the site lost the lock to the master room, got {other:?}"),
    }
    let bearer = format!("Bearer {token}");
    let list = http_request("GET", &format!("{mgmt}/api/ptz"), &[("Authorization", &bearer)], b"", WAIT)
        .await?
        .json()?;
    assert_eq!(list[0]["camera"], CAMERA, "{list}");
    assert_eq!(list[0]["holder"]["viewer"], "sala", "{list}");
    let (status, body) = post(&url, r#"{"op":"release"}"#, Some(&token)).await?;
    assert_eq!((status, body["holder"].is_null()), (200, true), "{body}");
    camera.wait_for(Duration::from_secs(5), |ops| stops_after(ops, moves(ops)[1].t).is_some()).await?;
    assert_eq!(c.next_ptz_lock().await?.1, None, "the release is announced");
    let audit = std::fs::read_to_string(pki.dir().join("agent-audit.log"))?;
    assert!(audit
        .lines()
        .any(|l| l.contains("\"outcome\":\"preempted\"") && l.contains("\"viewer\":\"rossi\"")));
    assert!(audit.lines().any(|l| l.contains("\"site\":\"master\"") && l.contains("\"viewer\":\"sala\"")));

    // (d1) A controller that stops renewing: the dead-man stops the camera.
    let reply = c.ptz(3, CAMERA, "rossi", PtzCommand::Move { pan: 0, tilt: 700, zoom: 0 }).await?;
    assert!(matches!(reply, PtzReply::Done { .. }), "{reply:?}");
    let ops = camera.wait_for(Duration::from_secs(5), |ops| moves(ops).len() >= 3).await?;
    let moved = moves(&ops)[2].t;
    let ops = camera
        .wait_for(Duration::from_millis(DEADMAN_MS + 3000), |ops| stops_after(ops, moved).is_some())
        .await?;
    let stopped = stops_after(&ops, moved).context("stop")?.t;
    let delay = stopped - moved;
    println!(
        "dead-man (no renewal): camera stopped {:.0} ms after the last move (dead-man {DEADMAN_MS} ms)",
        delay * 1e3
    );
    assert!(delay >= DEADMAN_MS as f64 / 1e3 - 0.1, "stopped too early: {delay:.3} s");
    assert!(delay <= DEADMAN_MS as f64 / 1e3 + 0.5, "stopped too late: {delay:.3} s");

    // (d2) The relay session vanishes mid-move: the camera stops at once.
    let reply = c.ptz(4, CAMERA, "rossi", PtzCommand::Move { pan: -700, tilt: 0, zoom: 0 }).await?;
    assert!(matches!(reply, PtzReply::Done { .. }), "{reply:?}");
    let ops = camera.wait_for(Duration::from_secs(5), |ops| moves(ops).len() >= 4).await?;
    let moved = moves(&ops)[3].t;
    let gone = unix_now();
    c.conn.close(0u32.into(), b"fibre cut");
    drop(c);
    let ops = camera
        .wait_for(Duration::from_millis(DEADMAN_MS + 3000), |ops| stops_after(ops, moved).is_some())
        .await?;
    let stopped = stops_after(&ops, moved).context("stop")?.t;
    println!(
        "session gone: camera stopped {:.0} ms after the session closed ({:.0} ms after the move)",
        (stopped - gone) * 1e3,
        (stopped - moved) * 1e3
    );
    assert!(stopped - gone < 1.0, "a vanished session's move stops before the dead-man");

    let all = camera.recorded().await?;
    let bad: Vec<&RecordedOp> = all.iter().filter(|o| !o.valid || !o.authorized).collect();
    assert!(bad.is_empty(), "every request the agent sent passes the ONVIF schema and auth: {bad:#?}");
    // The management port counts the commands by outcome.
    let status_url = format!("{mgmt}/status");
    let counts =
        ponte_tests::wait_until("PTZ counters in /status", WAIT, Duration::from_millis(100), || async {
            let doc = ponte_tests::http_get(&status_url).await?.json()?;
            let counts = doc["ptz_commands"].clone();
            Ok((counts["stopped"].as_u64() >= Some(2)).then_some(counts))
        })
        .await?;
    println!("ptz_commands in /status: {counts}");
    assert!(counts["denied"].as_u64() >= Some(2) && counts["preempted"].as_u64() == Some(1), "{counts}");
    let out = std::process::Command::new(bin_path("ponte-agent")?)
        .args(["audit", "verify"])
        .arg(pki.dir().join("agent-audit.log"))
        .output()?;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    agent.kill();
    Ok(())
}
