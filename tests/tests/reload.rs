//! SIGHUP at the agent applies added and removed `[[device]]`, `[[relay]]`
//! and `[[site]]` entries without a restart, and without touching what did
//! not change: a VMS reading an unchanged camera through an unchanged relay
//! keeps decoding through every reload, on the same QUIC session.

use anyhow::{bail, Context, Result};
use ponte_tests::{
    catalog_camera_ids, free_tcp_port, free_udp_port, http_get, site_policy, spawn_node, wait_catalog,
    wait_until, AgentConfig, Device, DeviceExt, Pki, Proc, RelayConfig, RelayTarget, RtspReader,
};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::{Duration, Instant};

/// A relay of `site` with an RTSP port; returns its config and the port.
fn relay_config(pki: &Pki, site: &str) -> (RelayConfig, u16) {
    let rtsp = free_tcp_port();
    let localhost = |port| SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let mut config =
        RelayConfig::new(site, localhost(free_udp_port()), localhost(free_tcp_port()), pki.tls(site));
    config.rtsp_on(rtsp);
    (config, rtsp)
}

/// The camera ids the relay's catalog lists now.
async fn listed(relay: &RelayConfig) -> Result<Vec<String>> {
    let catalog = http_get(&format!("{}/api/catalog", relay.base_url())).await?.ensure_success()?.json()?;
    catalog_camera_ids(&catalog)
}

/// Writes the new agent config and sends SIGHUP; returns when it was sent.
fn reload(agent: &mut Proc, config: &AgentConfig, path: &Path) -> Result<Instant> {
    config.write(path)?;
    agent.signal(libc::SIGHUP)?;
    Ok(Instant::now())
}

/// How often the relay logged a new session from the agent.
fn sessions(relay: &Proc) -> usize {
    relay.lines().iter().filter(|l| l.contains("upstream connected")).count()
}

#[tokio::test]
async fn sighup_adds_and_removes_cameras_and_relays_without_touching_the_others() -> Result<()> {
    if !ponte_tests::require_program("/usr/bin/ffmpeg", "ffmpeg") {
        return Ok(());
    }
    let _heavy = ponte_tests::e2e_lock();
    let dir = tempfile::tempdir()?;
    let pki = Pki::create(dir.path().join("pki"), &["master", "carabinieri", "questura"]).await?;
    let (first, first_rtsp) = relay_config(&pki, "carabinieri");
    let (second, second_rtsp) = relay_config(&pki, "questura");
    let mut first_proc = spawn_node("ponte-relay", &first.write(dir.path().join("carabinieri.toml"))?)?;
    let mut second_proc = spawn_node("ponte-relay", &second.write(dir.path().join("questura.toml"))?)?;
    let to = |r: &RelayConfig| RelayTarget::new(&r.relay.site, r.relay.quic_listen);
    let devices = vec![Device::synthetic("cam-a"), Device::synthetic("cam-b")];
    let mut config = AgentConfig::new("master", pki.tls("master"), vec![to(&first)], devices);
    let agent_toml = dir.path().join("agent.toml");
    let mut agent = spawn_node("ponte-agent", &config.write(&agent_toml)?)?;
    wait_catalog(&first.base_url(), 2, Duration::from_secs(30)).await?;

    // A VMS on camera A through the first relay, for the whole test.
    let reader_a = RtspReader::start(&format!("rtsp://127.0.0.1:{first_rtsp}/cam-a"), 22)?;
    reader_a.decodes(15, Duration::from_secs(15)).await?;
    let reader_b = RtspReader::start(&format!("rtsp://127.0.0.1:{first_rtsp}/cam-b"), 60)?;
    reader_b.decodes(5, Duration::from_secs(15)).await?;
    let t0 = Instant::now();

    // (a) A new device: its camera reaches the relay's catalog and plays.
    config.devices.push(Device::synthetic("cam-c"));
    let sent = reload(&mut agent, &config, &agent_toml)?;
    wait_catalog(&first.base_url(), 3, Duration::from_secs(5)).await.context("(a) cam-c announced")?;
    println!("(a) cam-c in the first relay's catalog {:?} after SIGHUP", sent.elapsed());
    let c = RtspReader::start(&format!("rtsp://127.0.0.1:{first_rtsp}/cam-c"), 2)?;
    let frames = c.finish().await.context("(a) cam-c plays")?;
    assert!(frames >= 15, "(a) cam-c: {frames} frames in 2 s");

    // (b) A new relay and its site: it gets its catalog and plays; the first
    // relay's session stays the one it had.
    config.relays.push(to(&second));
    config.sites.push(site_policy("questura", &["camera:cam-a", "camera:cam-c"]));
    let sent = reload(&mut agent, &config, &agent_toml)?;
    wait_catalog(&second.base_url(), 2, Duration::from_secs(10))
        .await
        .context("(b) second relay's catalog")?;
    println!("(b) second relay has its catalog {:?} after SIGHUP", sent.elapsed());
    assert_eq!(listed(&second).await?, ["cam-a", "cam-c"], "(b) only the questura site's grant");
    let q = RtspReader::start(&format!("rtsp://127.0.0.1:{second_rtsp}/cam-c"), 2)?;
    let frames = q.finish().await.context("(b) cam-c plays at the second relay")?;
    assert!(frames >= 15, "(b) cam-c at questura: {frames} frames in 2 s");

    // (c) A removed device: its camera leaves the catalog and its viewer's
    // stream ends within about a second; the others play on.
    assert!(reader_b.frames() >= 40, "cam-b plays before its removal: {} frames", reader_b.frames());
    config.devices.retain(|d| d.id != "cam-b");
    let sent = reload(&mut agent, &config, &agent_toml)?;
    // The relay ends the RTSP session without closing the connection, so
    // ffmpeg would wait for its own timeout: watch its decoded frames stop.
    let (mut count, mut last_frame) = (reader_b.frames(), Duration::ZERO);
    while sent.elapsed() < Duration::from_millis(2500) {
        tokio::time::sleep(Duration::from_millis(50)).await;
        if reader_b.frames() != count {
            (count, last_frame) = (reader_b.frames(), sent.elapsed());
        }
    }
    println!("(c) cam-b's last frame decoded {last_frame:?} after SIGHUP");
    assert!(last_frame < Duration::from_secs(1), "(c) cam-b still played {last_frame:?} after its removal");
    drop(reader_b);
    wait_until(
        "(c) cam-b to leave the catalog",
        Duration::from_secs(2),
        Duration::from_millis(50),
        || async {
            let ids = listed(&first).await?;
            Ok((!ids.iter().any(|c| c == "cam-b")).then_some(()))
        },
    )
    .await?;
    let log = std::fs::read_to_string(pki.dir().join("agent-audit.log"))?;
    assert!(
        log.lines().any(|l| l.contains("\"action\":\"revoked\"")
            && l.contains("\"camera\":\"cam-b\"")
            && l.contains("removed")),
        "(c) the withdrawal of cam-b is audited"
    );

    // (d) A removed relay: its session is closed, with the reason, and not
    // dialled again.
    // A key that needs a restart is named, not applied.
    config.relays.retain(|r| r.site != "questura");
    config.management.listen = SocketAddr::from((Ipv4Addr::LOCALHOST, 1));
    let agent_before = agent.line_count();
    let before = second_proc.line_count();
    let sent = reload(&mut agent, &config, &agent_toml)?;
    let line = second_proc
        .wait_for_line_from(before, "upstream session", Duration::from_secs(3))
        .await
        .context("(d) the removed relay's session closes")?;
    println!("(d) second relay's session closed {:?} after SIGHUP: {line}", sent.elapsed());
    assert!(line.contains("removed from the agent's config"), "(d) the reason reaches the relay: {line}");
    let line = agent.wait_for_line_from(agent_before, "need a restart", Duration::from_secs(3)).await?;
    assert!(line.contains("management.listen"), "(d) the key is named: {line}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = second_proc.lines()[before..].iter().filter(|l| l.contains("upstream connected")).count();
    assert_eq!(after, 0, "(d) the removed relay is not dialled again");

    // Camera A played through every reload on the first relay's only
    // session, without a pause.
    let frames = reader_a.frames();
    let stall = reader_a.longest_stall();
    println!("camera A: {frames} frames, longest stall {stall:?} over {:?} of reloads", t0.elapsed());
    assert!(stall < Duration::from_millis(700), "camera A paused for {stall:?} during the reloads");
    let total = reader_a.finish().await.context("camera A's reader ends cleanly")?;
    assert!(total >= 22 * 15 * 8 / 10, "camera A: {total} frames in 22 s");
    assert_eq!(sessions(&first_proc), 1, "the first relay's session was never reconnected");
    if first_proc.try_exit()?.is_some() || agent.try_exit()?.is_some() {
        bail!("a node exited during the test");
    }
    Ok(())
}
