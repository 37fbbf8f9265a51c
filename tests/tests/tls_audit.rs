//! The audit trail both agencies hold (issue 19, items 3 and 4), with the
//! real binaries: a logged-in partner operator watching over RTSP (ffmpeg
//! decoding real frames) is named `op@carabinieri` in the master room's
//! audit, and each side anchors the other's chain head every two seconds,
//! so cutting the tail of one log is caught by the other agency's log.

use anyhow::{bail, Context, Result};

use ponte_tests::{
    bin_path, free_tcp_port, relay_digest_viewer, relay_token, wait_until, Device, DeviceExt, RtspReader,
    Stack, StackSpec, Tweak,
};
use serde_json::Value;
use std::path::Path;
use std::time::Duration;

/// Anchors every two seconds, so the test sees several within seconds.
const ANCHOR_EVERY_SECS: u64 = 2;

fn lines(path: &Path) -> Result<Vec<Value>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    text.lines()
        .map(|l| serde_json::from_str(l).with_context(|| format!("{}: {l}", path.display())))
        .collect()
}

/// Anchor lines of the log at `path` that name `node`: their anchored seqs.
fn anchored(path: &Path, node: &str) -> Result<Vec<u64>> {
    Ok(lines(path)?
        .iter()
        .filter(|l| l["action"] == "anchor" && l["anchor"]["node"] == node)
        .filter_map(|l| l["anchor"]["seq"].as_u64())
        .collect())
}

/// A line of the agent's audit naming `viewer` for `camera` with `action`.
fn names(path: &Path, action: &str, camera: &str, viewer: &str) -> Result<bool> {
    Ok(lines(path)?.iter().any(|l| l["action"] == action && l["camera"] == camera && l["viewer"] == viewer))
}

/// `BIN audit verify ARGS`: exit code and stdout + stderr.
fn verify(bin: &str, args: &[&Path]) -> Result<(i32, String)> {
    let out = std::process::Command::new(bin_path(bin)?)
        .args(["audit", "verify"])
        .args(args)
        .output()
        .with_context(|| format!("running {bin} audit verify"))?;
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    Ok((out.status.code().unwrap_or(-1), text))
}

/// A copy of `from` without its last `n` lines.
fn cut_tail(from: &Path, to: &Path, n: usize) -> Result<()> {
    let text = std::fs::read_to_string(from)?;
    let lines: Vec<&str> = text.lines().collect();
    let Some(kept) = lines.len().checked_sub(n) else {
        bail!("{} has only {} lines", from.display(), lines.len())
    };
    let mut out = lines.get(..kept).unwrap_or_default().join("\n");
    out.push('\n');
    std::fs::write(to, out)?;
    Ok(())
}

#[tokio::test]
async fn each_agencys_log_names_the_operator_and_catches_a_cut_tail_of_the_other() -> Result<()> {
    if !ponte_tests::require_program("/usr/bin/ffmpeg", "ffmpeg") {
        return Ok(());
    }
    let _heavy = ponte_tests::e2e_lock();
    let op = relay_digest_viewer("op", "op-password-2026")?;
    let (token, token_table) = relay_token("readiness")?;
    let port = free_tcp_port();
    let mut stack = Stack::start_with(StackSpec {
        devices: vec![Device::synthetic("cam-a")],
        agent: Tweak::agent(|agent| agent.audit.anchor_every_secs = ANCHOR_EVERY_SECS),
        relay: Tweak::relay(move |relay| {
            relay.rtsp_on(port);
            relay.viewer(op.clone()).token(token_table.clone());
            relay.audit.anchor_every_secs = ANCHOR_EVERY_SECS;
        }),
        catalog_token: Some(token),
        ..StackSpec::default()
    })
    .await?;
    let agent_log = stack.agent_config.audit.path.clone();
    let relay_log = stack.relay_config.audit_path();

    // Item 3: the operator logged in at the relay is named at the master.
    let reader = RtspReader::start(&format!("rtsp://op:op-password-2026@127.0.0.1:{port}/cam-a"), 6)?;
    reader.decodes(30, Duration::from_secs(20)).await?;
    wait_until(
        "the agent's audit to name op@carabinieri",
        Duration::from_secs(10),
        Duration::from_millis(200),
        || async { Ok(names(&agent_log, "view-start", "cam-a", "op@carabinieri")?.then_some(())) },
    )
    .await?;
    assert!(
        names(&agent_log, "subscribe", "cam-a", "op@carabinieri")?,
        "the subscription the operator opened names them too"
    );
    let frames = reader.finish().await?;
    assert!(frames >= 60, "6 s at 15 fps: {frames} frames");
    wait_until(
        "the agent's view-stop for op@carabinieri",
        Duration::from_secs(15),
        Duration::from_millis(200),
        || async { Ok(names(&agent_log, "view-stop", "cam-a", "op@carabinieri")?.then_some(())) },
    )
    .await?;

    // Item 4: each side anchors the other's head; let a few pass with the
    // viewer gone and the subscription lingered out.
    wait_until("three anchors each way", Duration::from_secs(30), Duration::from_millis(250), || async {
        let (a, r) = (anchored(&agent_log, "carabinieri")?.len(), anchored(&relay_log, "master")?.len());
        Ok((a >= 3 && r >= 3).then_some(()))
    })
    .await?;
    tokio::time::sleep(Duration::from_secs(2 * ANCHOR_EVERY_SECS)).await;
    stack.agent.terminate(Duration::from_secs(10)).await?;
    stack.relay.terminate(Duration::from_secs(10)).await?;

    let (code, out) = verify("ponte-relay", &[Path::new("--anchors"), &agent_log, &relay_log])?;
    assert_eq!(code, 0, "the relay's intact log matches the agent's anchors:\n{out}");
    let (code, out) = verify("ponte-agent", &[Path::new("--anchors"), &relay_log, &agent_log])?;
    assert_eq!(code, 0, "the agent's intact log matches the relay's anchors:\n{out}");

    // Each log cut by its last 5 lines still verifies alone; the other
    // side's anchors name the newest head it lost.
    cut_tail_is_caught(
        "ponte-relay",
        &relay_log,
        "carabinieri",
        &agent_log,
        &stack.dir().join("relay-cut.log"),
    )?;
    cut_tail_is_caught("ponte-agent", &agent_log, "master", &relay_log, &stack.dir().join("agent-cut.log"))?;
    Ok(())
}

/// `log` (of `node`) copied to `cut` without its last 5 lines passes
/// `BIN audit verify` alone, and fails it against the anchors in `other`,
/// naming the newest head of `node` that `other` anchored.
fn cut_tail_is_caught(bin: &str, log: &Path, node: &str, other: &Path, cut: &Path) -> Result<()> {
    cut_tail(log, cut, 5)?;
    let (code, out) = verify(bin, &[cut])?;
    assert_eq!(code, 0, "a cut tail leaves the chain itself intact:\n{out}");
    let newest = anchored(other, node)?.into_iter().max().context("no anchor")?;
    let (code, out) = verify(bin, &[Path::new("--anchors"), other, cut])?;
    assert_eq!(code, 1, "{out}");
    assert!(out.contains(&format!("anchored seq {newest} ")), "names the last anchored seq {newest}:\n{out}");
    assert!(out.contains("cut or rewritten"), "{out}");
    Ok(())
}

/// With anchors an hour apart, the heads sent when the session comes up and
/// when the agent shuts down are the only ones: the relay's log anchors the
/// agent's last line, so even a one-line cut of its tail is caught.
#[tokio::test]
async fn the_agent_sends_its_last_head_when_it_shuts_down() -> Result<()> {
    let _heavy = ponte_tests::e2e_lock();
    let mut stack = Stack::start_with(StackSpec {
        devices: vec![Device::synthetic("cam-a")],
        agent: Tweak::agent(|agent| agent.audit.anchor_every_secs = 3600),
        relay: Tweak::relay(|relay| relay.audit.anchor_every_secs = 3600),
        ..StackSpec::default()
    })
    .await?;
    let agent_log = stack.agent_config.audit.path.clone();
    let relay_log = stack.relay_config.audit_path();
    // Each side anchored the other's head as the session came up.
    wait_until("the first anchors", Duration::from_secs(10), Duration::from_millis(100), || async {
        let (a, r) = (anchored(&agent_log, "carabinieri")?.len(), anchored(&relay_log, "master")?.len());
        Ok((a >= 1 && r >= 1).then_some(()))
    })
    .await?;
    stack.agent.terminate(Duration::from_secs(10)).await?;
    let heads = anchored(&relay_log, "master")?;
    let last = lines(&agent_log)?.last().and_then(|l| l["seq"].as_u64()).context("empty agent log")?;
    assert_eq!(heads.len(), 2, "the session's first head and the shutdown's: {heads:?}");
    assert_eq!(heads.last(), Some(&last), "the shutdown head is the agent's last line");
    let cut = stack.dir().join("agent-cut.log");
    cut_tail(&agent_log, &cut, 1)?;
    let (code, out) = verify("ponte-agent", &[Path::new("--anchors"), &relay_log, &cut])?;
    assert_eq!(code, 1, "{out}");
    assert!(out.contains(&format!("anchored seq {last} ")), "{out}");
    Ok(())
}
