//! Relay-to-relay cascade with the real binaries on loopback: agent → relay
//! A → relay B. A browser on B decodes the camera; with two viewers on B the
//! A→B link carries one copy of the stream (byte counters of both relays);
//! B sees exactly A's catalog, a camera outside it is `unknown`, and a
//! downstream with the wrong certificate is refused.

use anyhow::{Context, Result};
use ponte_proto::media::Quality;
use ponte_proto::ptz::{PtzCommand, PtzErrorCode, PtzReply};
use ponte_proto::wire::{Control, SubscribeErrorCode};
use ponte_relay::cascade::DownstreamConfig;
use ponte_tests::quic::{Answer, FakeRelay};
use ponte_tests::{
    bin_path, free_tcp_port, free_udp_port, http_get, site_policy, wait_catalog, AgentConfig, Chromium,
    Device, DeviceExt, Page, Pki, Proc, RelayConfig, RelayTarget,
};
use serde_json::Value;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(30);
/// Frames each browser must decode.
const FRAMES: u64 = 30;

/// `window.ponteViewer.stats()`, or null while the page is not ready.
const STATS_JS: &str = "(async () => { \
    const v = window.ponteViewer; \
    if (!v || typeof v.stats !== 'function') return null; \
    return (await v.stats()) ?? null; })()";

fn localhost(port: u16) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, port))
}

fn spawn(bin: &str, label: &str, config: &Path) -> Result<Proc> {
    let mut cmd = std::process::Command::new(bin_path(bin)?);
    cmd.arg("run").arg("--config").arg(config).env("RUST_LOG", "info");
    Proc::spawn_command(label, cmd)
}

fn relay_config(pki: &Pki, site: &str) -> RelayConfig {
    RelayConfig::new(site, localhost(free_udp_port()), localhost(free_tcp_port()), pki.tls(site))
}

fn agent_config(pki: &Pki, relay: &RelayConfig, devices: Vec<Device>) -> AgentConfig {
    let target = RelayTarget::new(&relay.relay.site, relay.relay.quic_listen);
    AgentConfig::new("master", pki.tls("master"), vec![target], devices)
}

/// A `[[downstream]]` of `site` at `addr`.
fn downstream_at(site: &str, addr: SocketAddr) -> DownstreamConfig {
    DownstreamConfig { site: site.into(), addr, server_name: None }
}

async fn status(relay: &RelayConfig) -> Result<Value> {
    http_get(&format!("{}/api/status", relay.base_url())).await?.ensure_success()?.json()
}

fn downstream<'a>(status: &'a Value, site: &str) -> &'a Value {
    status["downstreams"]
        .as_array()
        .and_then(|d| d.iter().find(|d| d["site"] == site))
        .unwrap_or(&Value::Null)
}

/// Byte counters of the chain at one moment.
#[derive(Debug, Clone, Copy)]
struct Bytes {
    /// A, received from the agent.
    a_in: u64,
    /// A, sent to B.
    a_to_b: u64,
    /// B, received from A.
    b_in: u64,
    at: Instant,
}

async fn bytes(a: &RelayConfig, b: &RelayConfig) -> Result<Bytes> {
    let (sa, sb) = (status(a).await?, status(b).await?);
    Ok(Bytes {
        a_in: sa["bytes_received"].as_u64().context("A bytes_received")?,
        a_to_b: downstream(&sa, &b.relay.site)["bytes_sent"].as_u64().context("A downstream bytes_sent")?,
        b_in: sb["bytes_received"].as_u64().context("B bytes_received")?,
        at: Instant::now(),
    })
}

/// What crossed each link between two samples, in bytes per second.
#[derive(Debug)]
struct Rates {
    a_in: f64,
    a_to_b: f64,
    b_in: f64,
}

fn rates(from: Bytes, to: Bytes) -> Rates {
    let secs = to.at.duration_since(from.at).as_secs_f64();
    Rates {
        a_in: (to.a_in - from.a_in) as f64 / secs,
        a_to_b: (to.a_to_b - from.a_to_b) as f64 / secs,
        b_in: (to.b_in - from.b_in) as f64 / secs,
    }
}

async fn measure(a: &RelayConfig, b: &RelayConfig, window: Duration) -> Result<Rates> {
    let from = bytes(a, b).await?;
    tokio::time::sleep(window).await;
    let to = bytes(a, b).await?;
    Ok(rates(from, to))
}

/// Opens the viewer page of `base` on `camera` and waits for `FRAMES`
/// decoded frames of 640×360; returns the time to the first one.
async fn watch(page: &Page, base: &str, camera: &str) -> Result<Duration> {
    let start = Instant::now();
    page.navigate(&format!("{base}/?camera={camera}")).await?;
    let mut first = None;
    let mut last = Value::Null;
    loop {
        if let Ok(stats) = page.eval(STATS_JS).await {
            last = stats;
        }
        let decoded = last["framesDecoded"].as_u64().unwrap_or(0);
        if decoded > 0 && first.is_none() {
            first = Some(start.elapsed());
        }
        if decoded >= FRAMES {
            assert_eq!(
                (last["frameWidth"].as_u64(), last["frameHeight"].as_u64()),
                (Some(640), Some(360)),
                "decoded size: {last}"
            );
            return Ok(first.unwrap_or_default());
        }
        anyhow::ensure!(
            start.elapsed() < T,
            "{decoded} frames decoded on {base} after {T:?}; stats {last}; console:\n{}",
            page.console().join("\n")
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn browser_on_the_downstream_relay_decodes_and_the_link_carries_one_copy() -> Result<()> {
    if !ponte_tests::require_program(Chromium::binary(), "chromium") {
        return Ok(());
    }
    let _heavy = ponte_tests::e2e_lock();
    let dir = tempfile::tempdir()?;
    let pki = Pki::create(dir.path().join("pki"), &["master", "site-a", "site-b"]).await?;
    // B is fed by A, not by the master room.
    let mut b = relay_config(&pki, "site-b");
    b.relay.upstreams = vec!["site-a".into()];
    // A feeds B, and also lists a downstream `site-x` at B's address: the
    // TLS name (`localhost`) checks out, the site in the certificate does not.
    let mut a = relay_config(&pki, "site-a");
    a.downstreams = vec![
        downstream_at("site-b", b.relay.quic_listen),
        DownstreamConfig {
            server_name: Some("localhost".into()),
            ..downstream_at("site-x", b.relay.quic_listen)
        },
    ];
    let agent = agent_config(&pki, &a, vec![Device::synthetic("cam-a")]);
    let _b_proc = spawn("ponte-relay", "relay-b", &b.write(dir.path().join("b.toml"))?)?;
    let _a_proc = spawn("ponte-relay", "relay-a", &a.write(dir.path().join("a.toml"))?)?;
    let _agent = spawn("ponte-agent", "agent", &agent.write(dir.path().join("agent.toml"))?)?;
    let catalog_a = wait_catalog(&a.base_url(), 1, T).await?;
    let catalog_b = wait_catalog(&b.base_url(), 1, T).await?;
    assert_eq!(catalog_a["cameras"], catalog_b["cameras"], "B's catalog is A's");

    let browser = Chromium::launch().await?;
    let first = watch(browser.page(), &b.base_url(), "cam-a").await?;
    eprintln!("viewer 1 on B: first decoded frame after {:.0} ms", first.as_secs_f64() * 1e3);
    let one = measure(&a, &b, Duration::from_secs(4)).await?;
    eprintln!("one viewer on B: {one:?} (bytes/s)");

    let second = browser.new_page().await?;
    let first = watch(&second, &b.base_url(), "cam-a").await?;
    eprintln!("viewer 2 on B: first decoded frame after {:.0} ms", first.as_secs_f64() * 1e3);
    let two = measure(&a, &b, Duration::from_secs(4)).await?;
    eprintln!("two viewers on B: {two:?} (bytes/s)");

    let (sa, sb) = (status(&a).await?, status(&b).await?);
    assert_eq!(sb["viewers"].as_array().map(Vec::len), Some(2), "two WHEP viewers on B: {sb}");
    assert_eq!(sb["links"][0]["subscriptions"], 1, "one subscription on A→B: {sb}");
    assert_eq!(downstream(&sa, "site-b")["subscriptions"], 1, "{sa}");
    assert_eq!(sa["links"][0]["subscriptions"], 1, "one subscription on agent→A: {sa}");
    // One copy on each link: what A sends B is what A gets from the agent,
    // what B gets is what A sends; a second viewer adds nothing.
    let near = |x: f64, y: f64| y > 0.0 && (0.8..=1.25).contains(&(x / y));
    assert!(near(two.a_to_b, two.a_in), "A→B carries one copy: {two:?}");
    assert!(near(two.b_in, two.a_to_b), "B receives what A sends: {two:?}");
    assert!(
        (0.6..=1.5).contains(&(two.b_in / one.b_in)),
        "the A→B rate does not grow with a second viewer: {one:?} → {two:?}"
    );

    // The downstream whose certificate names another site is refused.
    let x = downstream(&sa, "site-x");
    assert_eq!(x["state"], "connecting", "{sa}");
    let err = x["last_error"].as_str().unwrap_or_default();
    assert!(err.contains("expected site `site-x`") && err.contains("site-b"), "{err}");

    // Viewers gone: B unsubscribes from A, then A from the agent (each after its linger).
    browser.navigate("about:blank").await?;
    second.navigate("about:blank").await?;
    let gone = Instant::now();
    ponte_tests::wait_until("the chain to unsubscribe", T, Duration::from_millis(200), || async {
        let sa = status(&a).await?;
        let idle = downstream(&sa, "site-b")["subscriptions"] == 0 && sa["links"][0]["subscriptions"] == 0;
        Ok(idle.then_some(()))
    })
    .await?;
    eprintln!("agent→A→B unsubscribed {:.1} s after the last viewer left", gone.elapsed().as_secs_f64());

    // A's audit names the relay below that took the camera, and for how long.
    let text = std::fs::read_to_string(a.audit_path())?;
    let lines: Vec<Value> = text.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
    let of_b = |action: &str| {
        lines
            .iter()
            .find(|l| l["action"] == action && l["viewer"] == "cascade:site-b" && l["camera"] == "cam-a")
    };
    assert!(of_b("view-start").is_some(), "{text}");
    let stop = of_b("view-stop").with_context(|| format!("no view-stop of site-b: {text}"))?;
    assert!(stop["duration_ms"].as_u64().unwrap_or(0) > 1000, "{stop}");
    Ok(())
}

#[tokio::test]
async fn a_downstream_gets_the_upstream_catalog_never_more_and_gops_on_demand() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let pki = Pki::create(dir.path().join("pki"), &["master", "site-a", "site-b"]).await?;
    // The downstream is a test endpoint speaking the protocol itself.
    let fake_b = FakeRelay::listen(&pki, "site-b")?;
    let mut a = relay_config(&pki, "site-a");
    a.downstreams = vec![downstream_at("site-b", fake_b.endpoint.local_addr()?)];
    let policy = |allow: &str| {
        let mut site = site_policy("site-a", &[allow]);
        site.ptz = true;
        vec![site]
    };
    // cam-a is a (simulated) PTZ dome that site A may steer.
    let dome = Device::simulated_dome("cam-a");
    let mut agent = agent_config(&pki, &a, vec![dome, Device::synthetic("cam-b")]);
    agent.sites = policy("camera:cam-a");
    let agent_toml = agent.write(dir.path().join("agent.toml"))?;
    let _a_proc = spawn("ponte-relay", "relay-a", &a.write(dir.path().join("a.toml"))?)?;
    let mut agent_proc = spawn("ponte-agent", "agent", &agent_toml)?;
    wait_catalog(&a.base_url(), 1, T).await?;

    let mut b = fake_b.accept().await?;
    // A may dial before its own upstream is there: wait for the catalog with cam-a.
    while !b.catalog.iter().any(|c| c.id == "cam-a") {
        match b.next_control().await? {
            Control::Catalog { cameras } => b.catalog = cameras,
            other => anyhow::bail!("expected a catalog, got {other:?}"),
        }
    }
    let ids: Vec<&str> = b.catalog.iter().map(|c| c.id.as_str()).collect();
    assert_eq!(ids, ["cam-a"], "the downstream sees what A's site may see, no more");

    // A steers cam-a under its own site's identity, so it does not lend that
    // right down the cascade: no PTZ in B's catalog, and B's PTZ is refused.
    let a_catalog = wait_catalog(&a.base_url(), 1, T).await?;
    assert!(a_catalog.to_string().contains(r#""ptz":true"#), "A may steer cam-a: {a_catalog}");
    assert!(b.catalog.iter().all(|c| !c.ptz), "{:?}", b.catalog);
    match b.ptz(7, "cam-a", "b-operator", PtzCommand::Move { pan: 500, tilt: 0, zoom: 0 }).await? {
        PtzReply::Refused { code: PtzErrorCode::Unsupported, .. } => {}
        other => anyhow::bail!("a cascade child's PTZ must be refused as unsupported, got {other:?}"),
    }

    // cam-b exists at the agent but not for site A: unknown downstream too.
    match b.subscribe(1, "cam-b", Quality::Main).await? {
        Answer::Refused(SubscribeErrorCode::Unknown, reason) => assert!(reason.contains("cam-b"), "{reason}"),
        other => anyhow::bail!("expected unknown for cam-b, got {other:?}"),
    }
    let sa = status(&a).await?;
    assert_eq!(sa["links"][0]["subscriptions"], 0, "nothing subscribed upstream yet: {sa}");

    // On demand: the subscription goes up the chain and GOPs come down.
    let mut media = b.collect_media();
    let subscribed = Instant::now();
    assert_eq!(b.subscribe(2, "cam-a", Quality::Main).await?, Answer::Ok);
    let answered = subscribed.elapsed();
    let mut frames = Vec::new();
    while frames.len() < 40 {
        let f = tokio::time::timeout(T, media.recv()).await?.context("media ended")?;
        frames.push(f);
    }
    eprintln!(
        "downstream: SubscribeOk {:.0} ms, first frame {:.0} ms after Subscribe",
        answered.as_secs_f64() * 1e3,
        (frames[0].at - subscribed).as_secs_f64() * 1e3
    );
    assert!(frames[0].keyframe, "a GOP starts at a keyframe");
    assert!(frames.iter().all(|f| f.subscription == 2));
    assert_eq!((frames[0].config.width, frames[0].config.height), (640, 360));
    let sa = status(&a).await?;
    assert_eq!(sa["links"][0]["subscriptions"], 1, "{sa}");
    assert_eq!(downstream(&sa, "site-b")["subscriptions"], 1, "{sa}");

    // The agent widens site A's policy: A re-sends its catalog downstream.
    agent.sites = policy("*");
    agent.write(&agent_toml)?;
    agent_proc.signal(libc::SIGHUP)?;
    let deadline = Instant::now() + T;
    loop {
        match tokio::time::timeout(deadline.saturating_duration_since(Instant::now()), b.next_control())
            .await??
        {
            Control::Catalog { cameras } if cameras.len() == 2 => break,
            Control::Catalog { .. } => continue,
            other => anyhow::bail!("expected the new catalog, got {other:?}"),
        }
    }

    // The downstream leaves: A unsubscribes upstream after its linger.
    b.tx.send(&Control::Unsubscribe { id: 2 }).await?;
    ponte_tests::wait_until("A to unsubscribe upstream", T, Duration::from_millis(200), || async {
        let sa = status(&a).await?;
        Ok((sa["links"][0]["subscriptions"] == 0 && downstream(&sa, "site-b")["subscriptions"] == 0)
            .then_some(()))
    })
    .await?;
    Ok(())
}
