//! Per-site policy enforced at the source, against the real agent: what a
//! site sees, what it may not get whatever it sends, revocation on reload and
//! when a time window closes, and the tamper-evident audit trail.

use anyhow::{Context, Result};
use ponte_proto::media::Quality;
use ponte_proto::wire::{Control, SubscribeErrorCode};
use ponte_tests::quic::{Answer, FakeRelay};
use ponte_tests::{bin_path, Device, Pki};
use std::time::{Duration, Instant};

fn device(id: &str, zone: &str, tags: &[&str]) -> Device {
    let mut d = Device::synthetic(id);
    d.zone = zone.into();
    if !tags.is_empty() {
        let list: Vec<String> = tags.iter().map(|t| format!("{t:?}")).collect();
        d.extra = format!("tags = [{}]", list.join(", "));
    }
    d
}

fn agent_cli(args: &[&str]) -> Result<std::process::Output> {
    Ok(std::process::Command::new(bin_path("ponte-agent")?).args(args).output()?)
}

const GRANT: &str = r#"
[[site]]
id = "carabinieri"
allow = ["zone:centro", "camera:po-c"]
deny = ["tag:hospital"]
max_quality = "sub"
max_streams = 1
"#;

#[tokio::test]
async fn a_site_gets_only_its_grant_whatever_it_sends_and_every_decision_is_audited() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let pki = Pki::create(dir.path().join("pki"), &["master", "carabinieri"]).await?;
    let relay = FakeRelay::listen(&pki, "carabinieri")?;
    let devices = vec![
        device("centro-a", "Centro", &[]),
        device("centro-hosp", "Centro", &["hospital"]),
        device("po-c", "Po", &[]),
        device("po-d", "Po", &[]),
    ];
    let (_agent, config) = relay.spawn_agent(&pki, dir.path(), devices, GRANT)?;
    let mut s = relay.accept().await?;

    // The catalog lists only the grant, at the capped quality.
    let ids: Vec<&str> = s.catalog.iter().map(|c| c.id.as_str()).collect();
    assert_eq!(ids, ["centro-a", "po-c"]);
    assert!(s.catalog.iter().all(|c| c.qualities == [Quality::Sub]), "{:?}", s.catalog);

    // Whatever the relay asks, it gets nothing outside the grant.
    let hidden = [
        ("centro-hosp", Quality::Sub),
        ("po-d", Quality::Sub),
        ("no-such", Quality::Sub),
        ("", Quality::Main),
    ];
    for (i, (cam, q)) in hidden.iter().enumerate() {
        match s.subscribe(100 + i as u64, cam, *q).await? {
            Answer::Refused(SubscribeErrorCode::Unknown, reason) => {
                assert!(
                    !reason.contains("hospital") && !reason.contains("deny"),
                    "hidden cameras stay hidden: {reason}"
                )
            }
            other => panic!("{cam}: expected unknown, got {other:?}"),
        }
    }
    match s.subscribe(1, "centro-a", Quality::Main).await? {
        Answer::Refused(SubscribeErrorCode::Forbidden, reason) => {
            assert!(reason.contains("substream"), "{reason}")
        }
        other => panic!("quality upgrade must be forbidden, got {other:?}"),
    }
    assert_eq!(s.subscribe(2, "centro-a", Quality::Sub).await?, Answer::Ok);
    match s.subscribe(3, "po-c", Quality::Sub).await? {
        Answer::Refused(SubscribeErrorCode::OverBudget, reason) => {
            assert!(reason.contains("maximum"), "{reason}")
        }
        other => panic!("max_streams = 1 must refuse a second stream, got {other:?}"),
    }
    // Re-using the allowed subscription's id for a hidden camera does not sneak it in.
    match s.subscribe(2, "centro-hosp", Quality::Sub).await? {
        Answer::Refused(SubscribeErrorCode::Unknown, _) => {}
        other => panic!("expected unknown, got {other:?}"),
    }

    // `policy explain` agrees with the catalog.
    let out =
        agent_cli(&["policy", "explain", "--config", &config.to_string_lossy(), "--site", "carabinieri"])?;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    let visible: Vec<&str> = text
        .lines()
        .filter(|l| l.split_whitespace().nth(1).is_some_and(|q| q == "sub" || q.contains("main")))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(visible, ["centro-a", "po-c"], "{text}");
    assert!(text.contains("deny `tag:hospital`"), "{text}");

    // The audit log has every decision, with the real reason, and verifies.
    let audit = pki.dir().join("agent-audit.log");
    let log = std::fs::read_to_string(&audit).context("agent audit log")?;
    let refused_hosp = log
        .lines()
        .find(|l| l.contains("\"camera\":\"centro-hosp\"") && l.contains("\"action\":\"refused\""))
        .context("refusal of the hidden camera is audited")?;
    assert!(refused_hosp.contains("tag:hospital"), "{refused_hosp}");
    assert!(log
        .lines()
        .any(|l| l.contains("\"camera\":\"centro-a\"") && l.contains("\"outcome\":\"allowed\"")));
    let path = audit.to_string_lossy().into_owned();
    let out = agent_cli(&["audit", "verify", &path])?;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    // Edit one byte of line 3: verify fails and names that line.
    let mut bytes = std::fs::read(&audit)?;
    let line3: usize = log.lines().take(2).map(|l| l.len() + 1).sum();
    let pos = line3 + log.lines().nth(2).context("3 lines")?.find("\"site\"").context("site field")? + 9;
    bytes[pos] ^= 0x01;
    std::fs::write(&audit, &bytes)?;
    let out = agent_cli(&["audit", "verify", &path])?;
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains(":3:"), "names line 3: {err}");
    Ok(())
}

#[tokio::test]
async fn reload_revokes_within_a_second_and_leaves_the_other_stream_untouched() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let pki = Pki::create(dir.path().join("pki"), &["master", "carabinieri"]).await?;
    let relay = FakeRelay::listen(&pki, "carabinieri")?;
    let devices = vec![device("keep", "Centro", &[]), device("drop", "Centro", &[])];
    let open = "\n[[site]]\nid = \"carabinieri\"\nallow = [\"*\"]\n";
    let (mut agent, config) = relay.spawn_agent(&pki, dir.path(), devices, open)?;
    let mut s = relay.accept().await?;
    let mut media = s.collect_media();
    assert_eq!(s.subscribe(1, "keep", Quality::Sub).await?, Answer::Ok);
    assert_eq!(s.subscribe(2, "drop", Quality::Sub).await?, Answer::Ok);

    // Both play for a while.
    let until = Instant::now() + Duration::from_secs(3);
    let mut seen = [0usize; 3];
    while Instant::now() < until {
        if let Ok(Some(f)) = tokio::time::timeout(Duration::from_millis(200), media.recv()).await {
            seen[f.subscription as usize] += 1;
        }
    }
    assert!(seen[1] > 20 && seen[2] > 20, "both streams flow before the reload: {seen:?}");

    // Tighten the policy and reload with SIGHUP.
    let text = std::fs::read_to_string(&config)?
        .replace("allow = [\"*\"]", "allow = [\"*\"]\ndeny = [\"camera:drop\"]");
    std::fs::write(&config, text)?;
    let sent = Instant::now();
    agent.signal(libc::SIGHUP)?;
    let mut revoked_after = None;
    let mut new_catalog = None;
    let mut keep_arrivals = Vec::new();
    let watch_until = Instant::now() + Duration::from_secs(4);
    while Instant::now() < watch_until {
        tokio::select! {
            msg = s.next_control() => match msg? {
                Control::SubscribeError { id: 2, code, reason } => {
                    assert_eq!(code, SubscribeErrorCode::Forbidden);
                    assert!(reason.contains("revoked"), "{reason}");
                    revoked_after.get_or_insert(sent.elapsed());
                }
                Control::Catalog { cameras } => new_catalog = Some(cameras),
                other => panic!("unexpected {other:?}"),
            },
            Some(f) = media.recv() => if f.subscription == 1 { keep_arrivals.push(f.at) },
            _ = tokio::time::sleep(Duration::from_millis(100)) => {}
        }
    }
    let revoked_after = revoked_after.context("the revoked stream must end with a notice")?;
    println!("revoked {revoked_after:?} after SIGHUP");
    assert!(revoked_after <= Duration::from_secs(1), "revocation took {revoked_after:?}");
    let ids: Vec<String> =
        new_catalog.context("a new catalog after reload")?.into_iter().map(|c| c.id).collect();
    assert_eq!(ids, ["keep"]);
    // The kept stream never paused: the largest gap between frames stays
    // within a frame interval plus scheduling jitter (15 fps = 67 ms).
    let max_gap = keep_arrivals.windows(2).map(|w| w[1] - w[0]).max().unwrap_or_default();
    println!("kept stream: {} frames in 4 s around the reload, largest gap {max_gap:?}", keep_arrivals.len());
    assert!(keep_arrivals.len() >= 50, "{} frames", keep_arrivals.len());
    assert!(max_gap < Duration::from_millis(135), "gap of {max_gap:?} in the kept stream");
    // Replaying the subscribe after the revoke gets nothing.
    assert!(matches!(
        s.subscribe(3, "drop", Quality::Sub).await?,
        Answer::Refused(SubscribeErrorCode::Unknown, _)
    ));
    let log = std::fs::read_to_string(pki.dir().join("agent-audit.log"))?;
    assert!(log.lines().any(|l| l.contains("\"action\":\"revoked\"") && l.contains("\"camera\":\"drop\"")));

    // A broken config is refused and the policy in force stays.
    std::fs::write(&config, std::fs::read_to_string(&config)?.replace("deny = ", "dney = "))?;
    let before = agent.line_count();
    agent.signal(libc::SIGHUP)?;
    agent.wait_for_line_from(before, "reload refused", Duration::from_secs(5)).await?;
    assert!(matches!(
        s.subscribe(4, "drop", Quality::Sub).await?,
        Answer::Refused(SubscribeErrorCode::Unknown, _)
    ));
    assert_eq!(s.subscribe(5, "keep", Quality::Main).await?, Answer::Ok);
    Ok(())
}

#[tokio::test]
async fn a_stream_ends_when_the_sites_time_window_closes() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let pki = Pki::create(dir.path().join("pki"), &["master", "carabinieri"]).await?;
    let relay = FakeRelay::listen(&pki, "carabinieri")?;
    let grant = "\n[[site]]\nid = \"carabinieri\"\nallow = [\"*\"]\nwindows = [\"daily 08:00-20:00\"]\n";
    // The agent's policy clock starts two seconds before the window closes.
    let env = [("PONTE_CLOCK_START", "2026-11-25T19:59:57")];
    let (_agent, _) =
        relay.spawn_agent_env(&pki, dir.path(), vec![device("night", "Centro", &[])], grant, &env)?;
    let mut s = relay.accept().await?;
    let t0 = Instant::now();
    assert_eq!(s.subscribe(1, "night", Quality::Sub).await?, Answer::Ok);
    let reason = loop {
        match s.next_control().await? {
            Control::SubscribeError { id: 1, code: SubscribeErrorCode::Forbidden, reason } => break reason,
            Control::Catalog { .. } => continue,
            other => panic!("unexpected {other:?}"),
        }
    };
    let ended = t0.elapsed();
    println!("stream ended {ended:?} after subscribing: {reason}");
    assert!(reason.contains("08:00-20:00"), "{reason}");
    assert!(ended >= Duration::from_millis(1500) && ended < Duration::from_secs(5), "{ended:?}");
    // And a new subscription is refused until the window reopens.
    assert!(matches!(
        s.subscribe(2, "night", Quality::Sub).await?,
        Answer::Refused(SubscribeErrorCode::Forbidden, _)
    ));
    Ok(())
}
