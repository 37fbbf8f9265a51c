//! The main job as a new user runs it: `ponte-agent demo` prints two viewer
//! URLs, each relay sees its own grant of the Cremona inventory, a camera
//! plays in headless Chromium, and Ctrl-C stops everything cleanly.

use anyhow::{Context, Result};
use ponte_tests::{bin_path, free_tcp_port, free_udp_port, http_get, Chromium, Proc};
use std::time::{Duration, Instant};

fn catalog_entries(catalog: &serde_json::Value) -> Vec<serde_json::Value> {
    match catalog {
        serde_json::Value::Array(a) => a.clone(),
        other => other["cameras"].as_array().cloned().unwrap_or_default(),
    }
}

#[tokio::test]
async fn demo_prints_two_viewer_urls_and_a_camera_plays_in_chromium() -> Result<()> {
    if !ponte_tests::require_program(Chromium::binary(), "chromium") {
        return Ok(());
    }
    let http = free_tcp_port();
    let quic = free_udp_port();
    let mut cmd = std::process::Command::new(bin_path("ponte-agent")?);
    cmd.args(["demo", "--http-port", &http.to_string(), "--quic-port", &quic.to_string()]);
    let started = Instant::now();
    let mut demo = Proc::spawn_command("demo", cmd)?;
    let line = demo.wait_for_line("questura     viewer:", Duration::from_secs(90)).await?;
    println!("demo printed its URLs {:?} after start", started.elapsed());
    let lines = demo.lines();
    let url_of = |site: &str| -> Result<String> {
        lines
            .iter()
            .find(|l| l.contains(site) && l.contains("viewer: https://"))
            .and_then(|l| l.split("viewer: ").nth(1))
            .map(|u| u.trim().trim_end_matches('/').to_owned())
            .with_context(|| format!("no viewer URL for {site} in {lines:?}"))
    };
    let (cc, qu) = (url_of("carabinieri")?, url_of("questura")?);
    assert!(line.contains(&qu));
    // HTTPS from the demo's throw-away CA: trusted through the file and the
    // Chromium switch it printed, nothing else.
    let https = demo.wait_for_line("HTTPS:", Duration::from_secs(5)).await?;
    let ca = std::env::temp_dir().join(format!("ponte-demo-{}", demo.pid())).join("ca.pem");
    assert!(https.contains(&ca.display().to_string()), "{https}");
    ponte_tests::trust_ca(&ca)?;
    let pin = https
        .split_whitespace()
        .find(|w| w.starts_with("--ignore-certificate-errors-spki-list="))
        .with_context(|| format!("no SPKI pin in {https:?}"))?;
    let browser = Chromium::launch_with(&[pin.to_owned()]).await?;

    // Each relay gets its own grant of the 43 lenses (the catalog follows
    // the link within moments).
    let ids = |cat: &serde_json::Value| -> Vec<String> {
        cat["cameras"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|c| c["id"].as_str().map(str::to_owned))
            .collect()
    };
    let catalog = |base: String| async move {
        ponte_tests::wait_until("a catalog", Duration::from_secs(10), Duration::from_millis(50), || {
            let base = base.clone();
            async move {
                let ids = ids(&http_get(&format!("{base}/api/catalog")).await?.json()?);
                Ok((!ids.is_empty()).then_some(ids))
            }
        })
        .await
    };
    let (cc_ids, qu_ids) = (catalog(cc.clone()).await?, catalog(qu.clone()).await?);
    println!("carabinieri sees {} cameras, questura {}", cc_ids.len(), qu_ids.len());
    assert!(cc_ids.len() > qu_ids.len() && !qu_ids.is_empty(), "{cc_ids:?} vs {qu_ids:?}");
    assert!(
        !cc_ids.iter().any(|id| id.contains("ospedale")),
        "hospital car parks are withheld from the Carabinieri"
    );

    // A camera plays at the Carabinieri relay.
    let camera = cc_ids.iter().find(|id| id.starts_with("zaist")).unwrap_or(&cc_ids[0]).clone();
    let t0 = Instant::now();
    browser.navigate(&format!("{cc}/?camera={camera}")).await?;
    let mut first = None;
    let decoded = loop {
        let stats = browser
            .eval("(async () => { const v = window.ponteViewer; return v ? (await v.stats()) ?? null : null; })()")
            .await?;
        let n = stats.get("framesDecoded").and_then(|v| v.as_f64()).unwrap_or(0.0) as u64;
        if n > 0 && first.is_none() {
            first = Some(t0.elapsed());
        }
        if n >= 30 {
            break stats;
        }
        anyhow::ensure!(t0.elapsed() < Duration::from_secs(30), "camera {camera} did not play: {stats}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    println!(
        "demo camera {camera}: first frame decoded {:?} after navigation; {decoded}",
        first.unwrap_or_default()
    );
    // The main stream is 640x360. Under the site's link budget a new
    // subscription may start a rung lower and climb: it must reach main.
    let t1 = Instant::now();
    loop {
        let stats = browser.eval("(async () => (await window.ponteViewer.stats()) ?? null)()").await?;
        if stats["frameWidth"].as_f64() == Some(640.0) {
            println!("main quality (640x360) reached {:?} after the first 30 frames", t1.elapsed());
            break;
        }
        anyhow::ensure!(t1.elapsed() < Duration::from_secs(20), "never reached the main stream: {stats}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // The Carabinieri may steer a (simulated) dome from their relay; the
    // Questura, without the PTZ right, may not.
    let catalog: serde_json::Value = http_get(&format!("{cc}/api/catalog")).await?.json()?;
    let dome = catalog_entries(&catalog)
        .into_iter()
        .find(|c| c["ptz"].as_bool() == Some(true))
        .and_then(|c| c["id"].as_str().map(str::to_owned))
        .context("a PTZ dome in the Carabinieri catalog")?;
    let json = [("content-type", "application/json")];
    let moved = ponte_tests::http_request(
        "POST",
        &format!("{cc}/api/ptz/{dome}"),
        &json,
        br#"{"op":"move","pan":400}"#,
        Duration::from_secs(5),
    )
    .await?;
    assert_eq!(moved.status, 200, "{}", moved.text());
    assert!(moved.text().contains(r#""site":"carabinieri""#), "{}", moved.text());
    let refused = ponte_tests::http_request(
        "POST",
        &format!("{qu}/api/ptz/{dome}"),
        &json,
        br#"{"op":"stop"}"#,
        Duration::from_secs(5),
    )
    .await?;
    assert!(
        matches!(refused.status, 403 | 404),
        "questura steered {dome}: {} {}",
        refused.status,
        refused.text()
    );
    println!("PTZ: carabinieri moved {dome}; questura refused with {}", refused.status);

    // The master room takes the dome over with the command the demo printed
    // (its operator token); without the token the agent refuses.
    let line = demo.wait_for_line("authorization: Bearer ", Duration::from_secs(5)).await?;
    let token =
        line.split("authorization: Bearer ").nth(1).and_then(|r| r.split('\'').next()).context("token")?;
    let url = line
        .split_whitespace()
        .find(|w| w.starts_with("http://") && w.contains("/api/ptz/"))
        .with_context(|| format!("no PTZ URL in {line:?}"))?
        .replace("<camera>", &dome);
    let bearer = format!("Bearer {token}");
    let stop = br#"{"op":"stop"}"#;
    let t = Duration::from_secs(5);
    let anonymous = ponte_tests::http_request("POST", &url, &json, stop, t).await?;
    assert_eq!(anonymous.status, 401, "{}", anonymous.text());
    let headers = [json[0], ("authorization", bearer.as_str())];
    let master = ponte_tests::http_request("POST", &url, &headers, br#"{"op":"move","pan":-400}"#, t).await?;
    assert_eq!(master.status, 200, "{}", master.text());
    assert!(master.text().contains(r#""viewer":"sala""#), "{}", master.text());

    // Ctrl-C stops the agent and both relays, and removes the throw-away PKI.
    let pki_dir = std::env::temp_dir().join(format!("ponte-demo-{}", demo.pid()));
    assert!(pki_dir.exists(), "{pki_dir:?}");
    demo.signal(libc::SIGINT)?;
    let status = demo.wait_exit(Duration::from_secs(10)).await?;
    assert!(status.success(), "demo exit status {status:?}");
    assert!(!pki_dir.exists(), "the demo's temp dir is removed");
    for port in [http, http + 1] {
        assert!(http_get(&format!("https://127.0.0.1:{port}/")).await.is_err(), "relay on {port} stopped");
    }
    Ok(())
}
