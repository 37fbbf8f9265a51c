//! The deploy kit as an admin meets it: the quickstart script from
//! deploy/README.md stands up real nodes; systemd units verify; Kubernetes
//! manifests have the kinds, ports and probes the nodes need; the status page
//! renders in a real browser.

use anyhow::{Context, Result};
use ponte_tests::{
    bin_path, free_tcp_port, free_udp_port, http_get, require_program, Chromium, Device, Proc, Stack,
};
use std::path::{Path, PathBuf};
use std::time::Duration;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

#[tokio::test]
async fn the_readme_quickstart_stands_up_a_relay_that_receives_video() -> Result<()> {
    let _lock = ponte_tests::e2e_lock();
    let dir = tempfile::tempdir()?;
    let bin_dir = bin_path("ponte-agent")?.parent().context("bin dir")?.to_path_buf();
    let path = format!("{}:{}", bin_dir.display(), std::env::var("PATH").unwrap_or_default());
    let mgmt = free_tcp_port();
    let mut cmd = std::process::Command::new("bash");
    cmd.arg(root().join("deploy/quickstart.sh"))
        .arg(dir.path())
        .env("PATH", path)
        .env("QUIC_PORT", free_udp_port().to_string())
        .env("HTTP_PORT", free_tcp_port().to_string())
        .env("AGENT_MGMT_PORT", free_tcp_port().to_string())
        .env("RELAY_MGMT_PORT", mgmt.to_string());
    let mut script = Proc::spawn_command("quickstart", cmd)?;
    script.wait_for_line("quickstart: relay status OK", Duration::from_secs(40)).await?;
    // Video reaches the relay (the test camera is always-on for the site).
    let url = format!("http://127.0.0.1:{mgmt}/status");
    let frames = ponte_tests::wait_until(
        "frames at the relay",
        Duration::from_secs(15),
        Duration::from_millis(300),
        || async {
            let doc = http_get(&url).await?.json()?;
            let frames = doc["cameras"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|c| c["id"] == "test-pattern")
                .filter_map(|c| c["frames"].as_u64())
                .max()
                .unwrap_or(0);
            Ok((frames >= 15).then_some(frames))
        },
    )
    .await?;
    println!("quickstart relay received {frames} frames of the test camera");
    Ok(())
}

#[test]
fn systemd_units_verify() -> Result<()> {
    if !require_program("/usr/bin/systemd-analyze", "systemd") {
        return Ok(());
    }
    let dir = tempfile::tempdir()?;
    let mut units = Vec::new();
    for bin in ["ponte-agent", "ponte-relay"] {
        // The units name the installed path; point them at the built binary.
        let text = std::fs::read_to_string(root().join(format!("deploy/systemd/{bin}.service")))?;
        assert!(text.contains(&format!("ExecStart=/usr/local/bin/{bin} run --config /etc/ponte/")), "{text}");
        let unit = dir.path().join(format!("{bin}.service"));
        std::fs::write(
            &unit,
            text.replace(&format!("/usr/local/bin/{bin}"), &bin_path(bin)?.to_string_lossy()),
        )?;
        units.push(unit);
    }
    let out = std::process::Command::new("systemd-analyze").arg("verify").args(&units).output()?;
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && !text.contains("ponte"), "systemd-analyze verify: {text}");
    assert!(std::fs::read_to_string(root().join("deploy/systemd/ponte-agent.service"))?
        .contains("ExecReload=/bin/kill -HUP $MAINPID"));
    Ok(())
}

#[test]
fn kubernetes_manifests_have_the_expected_kinds_ports_and_probes() -> Result<()> {
    for (file, ports, probe_port) in [
        ("relay.yaml", vec![(7443, "UDP"), (8080, "TCP"), (8554, "TCP"), (9091, "TCP")], "mgmt"),
        ("agent.yaml", vec![(9090, "TCP")], "mgmt"),
    ] {
        let text = std::fs::read_to_string(root().join("deploy/k8s").join(file))?;
        let docs: Vec<serde_yaml::Value> = serde_yaml::Deserializer::from_str(&text)
            .map(serde::Deserialize::deserialize)
            .collect::<Result<_, _>>()
            .with_context(|| format!("{file} is not valid YAML"))?;
        let kinds: Vec<&str> = docs.iter().filter_map(|d| d["kind"].as_str()).collect();
        assert_eq!(kinds, ["Deployment", "PersistentVolumeClaim"], "{file}");
        let container = &docs[0]["spec"]["template"]["spec"]["containers"][0];
        let got: Vec<(u64, String)> = container["ports"]
            .as_sequence()
            .context("ports")?
            .iter()
            .map(|p| {
                (p["containerPort"].as_u64().unwrap_or(0), p["protocol"].as_str().unwrap_or("").to_owned())
            })
            .collect();
        let want: Vec<(u64, String)> = ports.iter().map(|(p, proto)| (*p, proto.to_string())).collect();
        assert_eq!(got, want, "{file} ports");
        assert_eq!(container["readinessProbe"]["httpGet"]["path"].as_str(), Some("/readyz"), "{file}");
        assert_eq!(container["readinessProbe"]["httpGet"]["port"].as_str(), Some(probe_port), "{file}");
        assert_eq!(container["livenessProbe"]["httpGet"]["path"].as_str(), Some("/healthz"), "{file}");
        assert_eq!(container["securityContext"]["allowPrivilegeEscalation"].as_bool(), Some(false), "{file}");
    }
    Ok(())
}

#[tokio::test]
async fn status_page_renders_in_a_browser_with_link_and_camera_rows() -> Result<()> {
    let Some(browser) = Chromium::launch_or_skip().await? else { return Ok(()) };
    let mut stack = Stack::start(vec![Device::synthetic("cam-page")]).await?;
    let url = stack.relay.management_url(Duration::from_secs(10)).await?;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    browser.navigate(&format!("{url}/")).await?;
    let rows = browser
        .eval(
            r#"(() => {
                const rows = [...document.querySelectorAll('tr')].map(r => ({
                    text: r.innerText, dot: (r.querySelector('.dot') || {}).className || '' }));
                return { title: document.title, rows };
            })()"#,
        )
        .await?;
    let all = rows["rows"].as_array().context("rows")?;
    let link = all
        .iter()
        .find(|r| r["text"].as_str().unwrap_or("").contains("master"))
        .context("a link row for the agent")?;
    assert!(link["dot"].as_str().unwrap_or("").contains("green"), "link up is green: {link}");
    let cam =
        all.iter().find(|r| r["text"].as_str().unwrap_or("").contains("cam-page")).context("a camera row")?;
    assert!(cam["dot"].as_str().unwrap_or("").contains("grey"), "an unwatched camera is grey (idle): {cam}");
    assert!(rows["title"].as_str().unwrap_or("").contains("carabinieri"), "{rows}");
    // Red when the agent is gone.
    stack.agent.kill();
    tokio::time::sleep(Duration::from_secs(5)).await;
    browser.navigate(&format!("{url}/")).await?;
    let h1 = browser.eval("document.querySelector('h1').innerHTML").await?;
    assert!(h1.as_str().unwrap_or("").contains("red"), "down is red: {h1}");
    Ok(())
}
