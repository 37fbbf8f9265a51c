//! On-call view of real nodes: management endpoints, the status CLI's exit
//! codes, and Prometheus metrics, against the real agent and relay.

use anyhow::{Context, Result};
use ponte_tests::{
    bin_path, free_tcp_port, http_get, Device, DeviceExt, RtspReader, Stack, StackSpec, Tweak,
};
use serde_json::Value;
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

/// The row of `link` in `ponte-* status`'s LINKS table, split in columns:
/// peer, direction, state, rtt ms, tx Mbit/s, rx Mbit/s, subs, drops.
fn table_row(text: &str, link: &str) -> Result<Vec<String>> {
    let row = text
        .lines()
        .find(|l| l.split_whitespace().next() == Some(link))
        .with_context(|| format!("no LINKS row for `{link}` in: {text}"))?;
    Ok(row.split_whitespace().take(8).map(str::to_owned).collect())
}

/// The value of the series `name{labels}` in a Prometheus text exposition.
fn sample(metrics: &str, series: &str) -> Option<f64> {
    metrics.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok())
}

fn agent_link(doc: &Value) -> Result<Value> {
    doc["links"]
        .as_array()
        .and_then(|ls| ls.iter().find(|l| l["peer"] == "carabinieri"))
        .cloned()
        .with_context(|| format!("no carabinieri link: {doc}"))
}

/// The agent's row for a relay link carries that session's traffic: while
/// a VMS reads two cameras over the relay's RTSP port, the agent's status
/// (page JSON, `status --json`, the CLI table) and `/metrics` show two
/// subscriptions, a round-trip time, and sent bytes that grow between
/// two reads — the figures on-call staff at the master watch per partner.
#[tokio::test]
async fn agent_link_rows_count_each_relays_traffic() -> Result<()> {
    if !ponte_tests::require_program("/usr/bin/ffmpeg", "ffmpeg") {
        return Ok(());
    }
    let rtsp = free_tcp_port();
    let mut stack = Stack::start_with(StackSpec {
        devices: vec![Device::synthetic("cam-s"), Device::synthetic("cam-t")],
        relay: Tweak::relay(move |relay| {
            relay.rtsp_on(rtsp);
        }),
        ..StackSpec::default()
    })
    .await?;
    let agent_url = stack.agent.management_url(T).await?;
    let readers = [
        RtspReader::start(&format!("rtsp://127.0.0.1:{rtsp}/cam-s"), 30)?,
        RtspReader::start(&format!("rtsp://127.0.0.1:{rtsp}/cam-t"), 30)?,
    ];
    for r in &readers {
        r.decodes(10, T).await?;
    }
    let first =
        ponte_tests::wait_until("two subscriptions on the link", T, Duration::from_millis(250), || async {
            let link = agent_link(&http_get(&format!("{agent_url}/status")).await?.json()?)?;
            Ok((link["subscriptions"] == 2).then_some(link))
        })
        .await?;
    // Two sampling periods later the link has sent more.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let second = agent_link(&http_get(&format!("{agent_url}/status")).await?.json()?)?;
    let bytes = |l: &Value| l["bytes_sent"].as_u64().unwrap_or(0);
    println!("agent link row: {second}");
    assert!(
        bytes(&first) > 0 && bytes(&second) > bytes(&first),
        "bytes_sent must grow: {first} then {second}"
    );
    assert_eq!(second["subscriptions"], 2, "{second}");
    let rtt = second["rtt_ms"].as_f64().with_context(|| format!("no rtt_ms: {second}"))?;
    assert!(rtt > 0.0 && rtt < 1000.0, "loopback rtt_ms {rtt}");
    assert!(second["send_bps"].as_f64().unwrap_or(0.0) > 10_000.0, "two cameras' bitrate: {second}");
    assert_eq!(second["addr"], stack.relay_config.relay.quic_listen.to_string(), "{second}");

    let (code, text) = status_cli("ponte-agent", &agent_url, false)?;
    assert_eq!(code, 0, "{text}");
    let row = table_row(&text, "carabinieri")?;
    assert_eq!(row[6], "2", "subs column: {text}");
    assert!(row[3].parse::<f64>().is_ok_and(|r| r > 0.0), "rtt column: {text}");
    assert!(row[4].parse::<f64>().is_ok_and(|tx| tx > 0.0), "tx column: {text}");

    let (_, json) = status_cli("ponte-agent", &agent_url, true)?;
    let cli = agent_link(&serde_json::from_str(&json).with_context(|| json.clone())?)?;
    assert_eq!(cli["subscriptions"], 2, "{cli}");
    assert!(bytes(&cli) >= bytes(&second), "{cli}");
    assert!(cli["rtt_ms"].as_f64().is_some_and(|r| r > 0.0), "{cli}");

    let metrics = http_get(&format!("{agent_url}/metrics")).await?.text();
    let link = "{link=\"carabinieri\",direction=\"to-relay\"}";
    assert_eq!(sample(&metrics, &format!("ponte_link_subscriptions{link}")), Some(2.0), "{metrics}");
    let sent = sample(&metrics, &format!("ponte_link_sent_bytes_total{link}")).unwrap_or(0.0);
    assert!(sent >= bytes(&second) as f64, "ponte_link_sent_bytes_total {sent}: {metrics}");
    let rtt = sample(&metrics, &format!("ponte_link_rtt_seconds{link}")).unwrap_or(0.0);
    assert!(rtt > 0.0 && rtt < 1.0, "ponte_link_rtt_seconds {rtt}: {metrics}");
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

/// `promtool check metrics` (Debian `prometheus`) on `metrics`: no error
/// and no lint (exit 0, nothing printed), as a Prometheus admin would check
/// a new target.
fn check_with_promtool(metrics: &str) -> Result<()> {
    if !ponte_tests::require_program("/usr/bin/promtool", "prometheus") {
        return Ok(());
    }
    let mut child = std::process::Command::new("/usr/bin/promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .context("starting promtool")?;
    use std::io::Write;
    child.stdin.take().context("stdin")?.write_all(metrics.as_bytes())?;
    let out = child.wait_with_output()?;
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(
        out.status.success() && text.trim().is_empty(),
        "promtool check metrics exited {:?}: {text}\n{metrics}",
        out.status.code()
    );
    Ok(())
}

/// Both nodes' `/metrics` pass `promtool check metrics` without a lint
/// with everything configured that adds series: RTSP, relay accounts, PTZ
/// (a synthetic dome, an operator, a command), a site with a link budget,
/// and video flowing.
#[tokio::test]
async fn metrics_pass_promtool_lint_with_everything_configured() -> Result<()> {
    if !ponte_tests::require_program("/usr/bin/promtool", "prometheus")
        || !ponte_tests::require_program("/usr/bin/ffmpeg", "ffmpeg")
    {
        return Ok(());
    }
    let (token, mut ops) = ponte_tests::relay_token("ops")?;
    ops.ptz = true;
    let anna = ponte_tests::relay_viewer("anna", "anna-password-1")?;
    let (_, operator) = ponte_tests::operator_token("sala")?;
    let rtsp = free_tcp_port();
    let dome = Device::simulated_dome("dome");
    // A recording rule too: its metric families are linted with the rest.
    let recordings = tempfile::tempdir()?;
    let record = Tweak::record_all(recordings.path(), 10);
    let mut stack = Stack::start_with(StackSpec {
        devices: vec![dome, Device::synthetic("cam")],
        agent: Tweak::agent(move |agent| {
            record.apply(agent);
            agent.sites[0].ptz = true;
            agent.sites[0].budget_mbps = Some(20.0);
            agent.operators = vec![operator.clone()];
        }),
        relay: Tweak::relay(move |relay| {
            relay.token(ops.clone()).viewer(anna.clone());
            relay.rtsp_on(rtsp).basic = true;
        }),
        catalog_token: Some(token.clone()),
        ..StackSpec::default()
    })
    .await?;
    let agent_url = stack.agent.management_url(T).await?;
    let relay_url = stack.relay.management_url(T).await?;
    let reader = RtspReader::start(&format!("rtsp://ops:{token}@127.0.0.1:{rtsp}/cam"), 20)?;
    reader.decodes(10, T).await?;
    let auth = format!("Bearer {token}");
    let ptz = ponte_tests::http_request(
        "POST",
        &format!("{}/api/ptz/dome", stack.base_url()),
        &[("Authorization", &auth), ("Content-Type", "application/json")],
        br#"{"op":"move","pan":300}"#,
        T,
    )
    .await?;
    assert_eq!(ptz.status, 200, "{}", ptz.text());
    // The samplers see the subscription, the shaping row and the command.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    for (node, url) in [("agent", &agent_url), ("relay", &relay_url)] {
        let metrics = http_get(&format!("{url}/metrics")).await?.ensure_success()?.text();
        assert!(metrics.contains("ponte_camera_up{camera=\"cam\""), "{node}: {metrics}");
        check_with_promtool(&metrics).with_context(|| format!("{node} /metrics"))?;
        println!(
            "{node}: {} series, promtool clean",
            metrics.lines().filter(|l| !l.starts_with('#')).count()
        );
    }
    let agent = http_get(&format!("{agent_url}/metrics")).await?.text();
    for present in ["ponte_shaping_degraded{site=\"carabinieri\"", "ponte_ptz_commands_total{outcome="] {
        assert!(agent.contains(present), "the agent exports {present}: {agent}");
    }
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
    // Every metric the rules and the dashboard use is one the nodes export
    // (an agent with a `[[recording]]` rule exports the recording families).
    let exported =
        ponte_proto::status::StatusDoc { recordings: vec![Default::default()], ..Default::default() }
            .prometheus();
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(root.join("deploy/grafana/ponte-dashboard.json"))?)?;
    // The nodes name themselves only on ponte_build_info: a legend that
    // shows the node (or role) must join it.
    for panel in dashboard["panels"].as_array().context("panels")? {
        let target = &panel["targets"][0];
        let legend = target["legendFormat"].as_str().unwrap_or_default();
        let expr = target["expr"].as_str().unwrap_or_default();
        if legend.contains("{{node}}") || legend.contains("{{role}}") {
            assert!(
                expr.contains("on(instance, job) group_left(node, role) ponte_build_info"),
                "panel {}: `{expr}` has no node label for its legend `{legend}`",
                panel["title"]
            );
        }
    }
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
