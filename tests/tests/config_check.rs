//! `config check` of both binaries, as `ExecStartPre=` runs it: a good
//! config passes with a one-line summary; a config with several faults (in
//! the file, in the environment, in the files it names) fails with every
//! fault named by its key; the shipped examples pass once pointed at a real
//! PKI; and a `PONTE_*` variable that names nothing stops `run` itself.

use anyhow::Result;
use ponte_tests::{
    bin_path, free_tcp_port, free_udp_port, AgentConfig, Device, DeviceExt, Pki, RelayConfig, RelayTarget,
    TlsSection,
};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// Runs `BIN ARGS` with `env` added (and no inherited `PONTE_*`): exit code, stdout + stderr.
fn run(bin: &str, args: &[&str], env: &[(&str, String)]) -> Result<(i32, String)> {
    let mut cmd = Command::new(bin_path(bin)?);
    cmd.args(args);
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("PONTE_") {
            cmd.env_remove(k);
        }
    }
    cmd.envs(env.iter().map(|(k, v)| (*k, v.as_str())));
    let out = cmd.output()?;
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    Ok((out.status.code().unwrap_or(-1), text))
}

fn check(bin: &str, config: &Path, env: &[(&str, String)]) -> Result<(i32, String)> {
    run(bin, &["config", "check", "--config", &config.to_string_lossy()], env)
}

fn agent_config(pki: &Pki) -> AgentConfig {
    let relay = RelayTarget::new("carabinieri", localhost(free_udp_port()));
    AgentConfig::new(
        "master",
        pki.tls("master"),
        vec![relay],
        vec![Device::synthetic("cam-a"), Device::synthetic("cam-b")],
    )
}

fn localhost(port: u16) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, port))
}

#[tokio::test]
async fn config_check_passes_a_good_config_and_names_every_fault_of_a_bad_one() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let pki = Pki::create(dir.path().join("pki"), &["master", "carabinieri", "questura"]).await?;

    // Good: exit 0 and a one-line summary; an override of the first [[site]] is fine.
    let good = agent_config(&pki).write(dir.path().join("agent.toml"))?;
    let (code, text) = check("ponte-agent", &good, &[("PONTE_SITE__1__BUDGET_MBPS", "20".into())])?;
    assert_eq!(code, 0, "{text}");
    assert!(text.starts_with(&format!("OK: {}", good.display())), "{text}");
    assert!(text.contains("1 relay(s), 2 device(s)") && text.contains("kept for ever"), "{text}");

    // Bad: faults in the file, in the environment, in the files it names.
    let mut bad = agent_config(&pki);
    bad.ptz.deadman_ms = 50;
    bad.policy.timezone = "Mars/Olympus".into();
    bad.audit.path = "/proc/ponte-nowhere/agent-audit.log".into();
    bad.audit.max_mb = 0;
    bad.tls.key = pki.key("carabinieri");
    let bad = bad.write(dir.path().join("bad-agent.toml"))?;
    let env = [
        ("PONTE_SITE__2__BUDGET_MBPS", "20".to_owned()),
        ("PONTE_AGENT_ID", "x".to_owned()),
        ("PONTE_RELAY__1__ADDR", "127.0.0.1:9443".to_owned()),
    ];
    let (code, text) = check("ponte-agent", &bad, &env)?;
    assert_eq!(code, 1, "{text}");
    let file = bad.display().to_string();
    for key in [
        "`PONTE_SITE__2__BUDGET_MBPS`",
        "`PONTE_AGENT_ID`",
        "`ptz.deadman_ms`",
        "`policy.timezone`",
        "`audit.max_mb`",
        "`audit.path` = `/proc/ponte-nowhere/agent-audit.log`",
        "`tls.key`",
    ] {
        assert!(
            text.lines().any(|l| l.starts_with(&format!("{file}: ")) && l.contains(key)),
            "{key}: {text}"
        );
    }
    assert!(text.contains("7 problem(s) in"), "{text}");
    assert!(!text.contains("PONTE_RELAY__1__ADDR"), "a sound override is no problem: {text}");

    // A relay whose certificate names another site, and a missing CA.
    let mut cfg = RelayConfig::new(
        "carabinieri",
        localhost(free_udp_port()),
        localhost(free_tcp_port()),
        TlsSection {
            ca: dir.path().join("missing-ca.pem"),
            cert: pki.cert("questura"),
            key: pki.key("questura"),
            crl: None,
        },
    );
    cfg.relay.upstreams = vec!["carabinieri".into()];
    cfg.audit.path = dir.path().join("relay-audit.log");
    cfg.audit.keep_days = 90;
    let relay = cfg.write(dir.path().join("relay.toml"))?;
    let (code, text) = check("ponte-relay", &relay, &[])?;
    assert_eq!(code, 1, "{text}");
    for key in ["`relay.upstreams`", "`tls.ca`"] {
        assert!(text.contains(key), "{key}: {text}");
    }
    cfg.relay.upstreams = vec!["master".into()];
    cfg.tls.ca = pki.ca_cert();
    cfg.write(&relay)?;
    let (code, text) = check("ponte-relay", &relay, &[])?;
    assert_eq!(code, 1, "{text}");
    assert!(
        text.contains("`tls.cert` names site Some(\"questura\") but `relay.site` is \"carabinieri\""),
        "{text}"
    );

    // The shipped examples pass once pointed at a real PKI and a writable
    // audit directory; the relays say they need accounts until given them.
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/examples");
    for (example, bin, site) in [
        ("agent-minimal.toml", "ponte-agent", "master"),
        ("cremona/agent.toml", "ponte-agent", "master"),
        ("relay-carabinieri.toml", "ponte-relay", "carabinieri"),
        ("relay-questura.toml", "ponte-relay", "questura"),
    ] {
        let mut env = vec![
            ("PONTE_TLS__CA", pki.ca_cert().to_string_lossy().into_owned()),
            ("PONTE_TLS__CERT", pki.cert(site).to_string_lossy().into_owned()),
            ("PONTE_TLS__KEY", pki.key(site).to_string_lossy().into_owned()),
            (
                "PONTE_AUDIT__PATH",
                dir.path().join(format!("{site}-audit.log")).to_string_lossy().into_owned(),
            ),
        ];
        let config = examples.join(example);
        if bin == "ponte-relay" {
            let (code, text) = check(bin, &config, &env)?;
            assert_eq!(code, 1, "{example}: {text}");
            assert!(text.contains("relay.allow_anonymous") && text.contains("ponte-relay passwd"), "{text}");
            env.push(("PONTE_RELAY__ALLOW_ANONYMOUS", "true".into()));
        }
        let (code, text) = check(bin, &config, &env)?;
        assert_eq!(code, 0, "{example}: {text}");
        println!("{example}: {}", text.trim());
    }

    // `run` refuses a variable that names nothing, naming it, at once.
    let started = std::time::Instant::now();
    let (code, text) = run(
        "ponte-agent",
        &["run", "--config", &good.to_string_lossy()],
        &[("PONTE_SITE__3__BUDGET_MBPS", "20".into())],
    )?;
    assert_ne!(code, 0, "{text}");
    assert!(text.contains("`PONTE_SITE__3__BUDGET_MBPS`: the file has 1 `[[site]]` table(s)"), "{text}");
    assert!(started.elapsed() < Duration::from_secs(10));
    // A typo (one underscore): it used to be ignored and the agent ran.
    let mut cmd = Command::new(bin_path("ponte-agent")?);
    cmd.args(["run", "--config", &good.to_string_lossy()]).env("PONTE_AGENT_ID", "x");
    let mut agent = ponte_tests::Proc::spawn_command("ponte-agent", cmd)?;
    let status = agent.wait_exit(Duration::from_secs(10)).await?;
    assert!(!status.success(), "{}", agent.tail(20));
    agent.wait_for_line("`PONTE_AGENT_ID`: not a config override", Duration::from_secs(5)).await?;
    Ok(())
}
