//! On-call view of real nodes: management endpoints, the status CLI's exit
//! codes, and Prometheus metrics, against the real agent and relay.

use anyhow::{Context, Result};
use ponte_tests::{bin_path, http_get, Device, Stack};
use std::time::Duration;

const T: Duration = Duration::from_secs(20);

fn status_cli(bin: &str, url: &str, json: bool) -> Result<(i32, String)> {
    let mut cmd = std::process::Command::new(bin_path(bin)?);
    cmd.args(["status", "--url", url]);
    if json {
        cmd.arg("--json");
    }
    let out = cmd.output()?;
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    Ok((out.status.code().unwrap_or(-1), text))
}

#[tokio::test]
async fn management_endpoints_and_status_cli_tell_the_truth() -> Result<()> {
    let mut stack = Stack::start(vec![Device::synthetic("cam-s"), Device::synthetic("cam-t")]).await?;
    let agent_url = stack.agent.management_url(T).await?;
    let relay_url = stack.relay.management_url(T).await?;

    for url in [&agent_url, &relay_url] {
        assert_eq!(http_get(&format!("{url}/healthz")).await?.status, 200);
        // Ready within one sampling period of the link coming up.
        ponte_tests::wait_until("readyz", Duration::from_secs(5), Duration::from_millis(200), || async {
            Ok((http_get(&format!("{url}/readyz")).await?.status == 200).then_some(()))
        })
        .await?;
        let page = http_get(&format!("{url}/")).await?.text();
        assert!(page.contains("<table") && page.contains("http-equiv=refresh"), "status page: {page}");
    }

    // Let the samplers see the link and a viewer-less camera.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let agent = http_get(&format!("{agent_url}/status")).await?.json()?;
    assert_eq!(agent["role"], "agent");
    assert_eq!(agent["links"][0]["peer"], "carabinieri");
    assert_eq!(agent["links"][0]["state"], "up", "{agent}");
    assert_eq!(agent["health"], "ok", "{agent}");
    let relay = http_get(&format!("{relay_url}/status")).await?.json()?;
    assert_eq!(relay["links"][0]["peer"], "master", "{relay}");

    let (code, text) = status_cli("ponte-relay", &relay_url, false)?;
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("master") && text.contains("LINKS"), "{text}");
    assert!(text.contains("cam-s") && text.contains("cam-t"), "both cameras listed: {text}");
    let (code, text) = status_cli("ponte-agent", &agent_url, true)?;
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("\"carabinieri\""), "{text}");

    // Metrics: well-formed text with the link gauge and bounded labels.
    let metrics = http_get(&format!("{relay_url}/metrics")).await?.text();
    assert!(metrics.contains("ponte_link_up{link=\"master\",direction=\"from-upstream\"} 1"), "{metrics}");
    check_with_promtool(&metrics)?;

    // The agent goes away: within 5 s the relay is down (exit 2) and says
    // why; the agent is unreachable (exit 3).
    stack.agent.kill();
    let killed = std::time::Instant::now();
    let (_, text) = wait_for_exit_code("ponte-relay", &relay_url, 2, Duration::from_secs(5)).await?;
    println!("relay reported down {:?} after the agent was killed", killed.elapsed());
    assert!(text.contains("no upstream"), "{text}");
    assert_eq!(http_get(&format!("{relay_url}/readyz")).await?.status, 503);
    let (code, text) = status_cli("ponte-agent", &agent_url, false)?;
    assert_eq!(code, 3, "{text}");
    assert!(text.contains("UNREACHABLE"), "{text}");

    // The agent comes back: the relay returns to 0.
    let mut cmd = std::process::Command::new(bin_path("ponte-agent")?);
    cmd.arg("run").arg("--config").arg(stack.dir().join("agent.toml"));
    stack.agent = ponte_tests::Proc::spawn_command("ponte-agent", cmd)?;
    let restarted = std::time::Instant::now();
    wait_for_exit_code("ponte-relay", &relay_url, 0, Duration::from_secs(10)).await?;
    println!("relay back to OK {:?} after the agent restarted", restarted.elapsed());
    Ok(())
}

async fn wait_for_exit_code(bin: &str, url: &str, want: i32, within: Duration) -> Result<(i32, String)> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let (code, text) = status_cli(bin, url, false)?;
        if code == want {
            return Ok((code, text));
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "`{bin} status` never exited {want} within {within:?}: {text}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Runs `promtool check metrics` when promtool is installed (Debian `prometheus`).
fn check_with_promtool(metrics: &str) -> Result<()> {
    let Ok(mut child) = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
    else {
        ponte_tests::require(false, "promtool", "apt-get install prometheus");
        return Ok(());
    };
    use std::io::Write;
    child.stdin.take().context("stdin")?.write_all(metrics.as_bytes())?;
    let out = child.wait_with_output()?;
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    // promtool lints (e.g. counter naming) exit 3; only hard errors fail here.
    assert!(out.status.code() != Some(1), "promtool rejected the metrics: {text}");
    println!("promtool: {}", if text.trim().is_empty() { "clean" } else { text.trim() });
    Ok(())
}

#[test]
fn alert_rules_and_dashboard_are_valid() -> Result<()> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let rules = root.join("deploy/prometheus/ponte-rules.yml");
    if ponte_tests::require(which("promtool"), "promtool", "apt-get install prometheus") {
        let out = std::process::Command::new("promtool").arg("check").arg("rules").arg(&rules).output()?;
        assert!(
            out.status.success(),
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // Every metric the rules and the dashboard use is one the nodes export.
    let exported = ponte_proto::status::StatusDoc::default().prometheus();
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(root.join("deploy/grafana/ponte-dashboard.json"))?)?;
    let mut exprs: Vec<String> = dashboard["panels"]
        .as_array()
        .context("panels")?
        .iter()
        .map(|p| p["targets"][0]["expr"].as_str().unwrap_or_default().to_owned())
        .collect();
    exprs.push(std::fs::read_to_string(&rules)?);
    for text in exprs {
        for word in text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
            if word.starts_with("ponte_") {
                let base = word.trim_end_matches("_total");
                assert!(
                    exported.contains(&format!("# TYPE {word} "))
                        || exported.contains(&format!("# TYPE {base}")),
                    "`{word}` is not exported"
                );
            }
        }
    }
    Ok(())
}

fn which(program: &str) -> bool {
    std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|p| p.join(program).is_file()))
        .unwrap_or(false)
}
