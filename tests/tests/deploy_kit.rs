//! The deploy kit as an admin meets it: the quickstart script from
//! deploy/README.md stands up real nodes; systemd units verify; Kubernetes
//! manifests have the kinds, ports and probes the nodes need; the status page
//! renders in a real browser.

use anyhow::{Context, Result};
use ponte_tests::{
    bin_path, free_tcp_port, free_udp_port, http_get, require_program, Chromium, Device, DeviceExt, Proc,
    Stack,
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
        // A bad config is refused before start, with every problem listed.
        let check = format!("ExecStartPre=/usr/local/bin/{bin} config check --config /etc/ponte/");
        assert!(text.contains(&check), "{text}");
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

/// The SYSTEMD_ANALYZE program, required under CI.
const SYSTEMD_ANALYZE: &str = "/usr/bin/systemd-analyze";

fn unit_text(bin: &str) -> Result<String> {
    Ok(std::fs::read_to_string(root().join(format!("deploy/systemd/{bin}.service")))?)
}

/// Values of `key=` lines in a unit, in order.
fn unit_values<'a>(text: &'a str, key: &str) -> Vec<&'a str> {
    text.lines().filter_map(|l| l.trim().strip_prefix(key)?.strip_prefix('=')).collect()
}

/// `systemd-analyze security --offline=yes` gives each unit an exposure of
/// 2.0 or less (10 is unprotected; the units scored 5.8 before issue 15),
/// with the sandbox the admin guide promises. `--offline` reads the unit file
/// alone: the ExecStart binary need not exist (it does not on CI).
#[test]
fn systemd_units_are_sandboxed_to_an_exposure_of_2_or_less() -> Result<()> {
    if !require_program(SYSTEMD_ANALYZE, "systemd") {
        return Ok(());
    }
    for bin in ["ponte-agent", "ponte-relay"] {
        let path = root().join(format!("deploy/systemd/{bin}.service"));
        let out = std::process::Command::new(SYSTEMD_ANALYZE)
            .args(["security", "--offline=yes", "--no-pager"])
            .arg(&path)
            .output()?;
        let text =
            format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        let exposure: f64 = text
            .lines()
            .find_map(|l| {
                l.split_once("Overall exposure level for ")?.1.split_once(": ")?.1.split(' ').next()
            })
            .and_then(|v| v.parse().ok())
            .with_context(|| format!("no exposure level in systemd-analyze's answer: {text}"))?;
        println!("{bin}.service: exposure {exposure}");
        assert!(exposure <= 2.0, "{bin}.service: exposure {exposure} > 2.0:\n{text}");
        let unit = unit_text(bin)?;
        for (key, want) in [
            ("ProtectSystem", "strict"),
            ("ProtectHome", "yes"),
            ("PrivateTmp", "yes"),
            ("NoNewPrivileges", "yes"),
            ("CapabilityBoundingSet", ""),
            ("UMask", "0077"),
            ("ReadWritePaths", "/var/lib/ponte"),
        ] {
            assert_eq!(unit_values(&unit, key), [want], "{bin}.service: {key}");
        }
        assert_eq!(unit_values(&unit, "SystemCallFilter")[0], "@system-service", "{bin}.service");
        assert!(
            unit_values(&unit, "RestrictAddressFamilies")[0].starts_with("AF_INET AF_INET6"),
            "{bin}.service"
        );
    }
    Ok(())
}

/// Whatever the example configs make a node write (the audit log) lies in
/// the unit's `ReadWritePaths`; what it only reads (keys, certificates) lies
/// under /etc/ponte, read-only under `ProtectSystem=strict`.
#[test]
fn systemd_units_let_the_nodes_write_where_the_example_configs_write() -> Result<()> {
    let examples = root().join("deploy/examples");
    for (config, bin) in [
        ("agent-minimal.toml", "ponte-agent"),
        ("cremona/agent.toml", "ponte-agent"),
        ("relay-carabinieri.toml", "ponte-relay"),
        ("relay-questura.toml", "ponte-relay"),
    ] {
        let unit = unit_text(bin)?;
        let writable = unit_values(&unit, "ReadWritePaths");
        let text = std::fs::read_to_string(examples.join(config))?;
        let mut table = String::new();
        for line in text.lines().map(|l| l.split('#').next().unwrap_or("").trim()) {
            if line.starts_with('[') {
                table = line.trim_matches(['[', ']']).to_owned();
                continue;
            }
            let Some((key, value)) = line.split_once('=') else { continue };
            let value = value.trim().trim_matches('"');
            if !value.starts_with('/') {
                continue;
            }
            let key = format!("{table}.{}", key.trim());
            if table == "tls" {
                assert!(value.starts_with("/etc/ponte/"), "{config}: `{key}` = {value} outside /etc/ponte");
            } else {
                assert!(
                    writable.iter().any(|dir| value.starts_with(&format!("{dir}/"))),
                    "{config}: `{key}` = {value} is not under {bin}.service's ReadWritePaths {writable:?}"
                );
            }
        }
    }
    Ok(())
}

/// Syscalls a `SystemCallFilter=` set allows, expanded by systemd-analyze.
fn syscall_set(name: &str, seen: &mut std::collections::BTreeSet<String>) -> Result<Vec<String>> {
    if !seen.insert(name.to_owned()) {
        return Ok(Vec::new());
    }
    if !name.starts_with('@') {
        return Ok(vec![name.to_owned()]);
    }
    let out =
        std::process::Command::new(SYSTEMD_ANALYZE).args(["syscall-filter", "--no-pager", name]).output()?;
    anyhow::ensure!(out.status.success(), "systemd-analyze syscall-filter {name}: {out:?}");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut calls = Vec::new();
    for item in text.lines().skip(1).map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')) {
        calls.extend(syscall_set(item, seen)?);
    }
    Ok(calls)
}

/// What a unit's `SystemCallFilter=` lines allow: the union of the allow
/// lists, less the `~` deny lists.
fn allowed_syscalls(unit: &str) -> Result<std::collections::BTreeSet<String>> {
    let filters = unit_values(unit, "SystemCallFilter");
    anyhow::ensure!(!filters.is_empty(), "the unit has no SystemCallFilter=: every syscall is allowed");
    let (mut allowed, mut denied) = (std::collections::BTreeSet::new(), std::collections::BTreeSet::new());
    for value in filters {
        let (into, list) = match value.strip_prefix('~') {
            Some(list) => (&mut denied, list),
            None => (&mut allowed, value),
        };
        for name in list.split_whitespace() {
            into.extend(syscall_set(name, &mut Default::default())?);
        }
    }
    Ok(allowed.difference(&denied).cloned().collect())
}

/// A node traced from start to stop: `strace -f -c` writes its syscalls.
struct Traced {
    proc: Proc,
    summary: PathBuf,
}

impl Traced {
    fn start(bin: &str, config: &Path, summary: PathBuf) -> Result<Traced> {
        let mut cmd = std::process::Command::new("/usr/bin/strace");
        cmd.args(["-f", "-qq", "-c", "-o"]).arg(&summary).arg("--").arg(bin_path(bin)?);
        cmd.arg("run").arg("--config").arg(config).env("RUST_LOG", "info");
        Ok(Traced { proc: Proc::spawn_command(bin, cmd)?, summary })
    }

    /// The node's pid (strace's child).
    fn node_pid(&self) -> Result<libc::pid_t> {
        let pid = self.proc.pid();
        let children = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))?;
        children.split_whitespace().next().and_then(|p| p.parse().ok()).context("strace has no child")
    }

    fn signal_node(&self, signal: i32) -> Result<()> {
        // SAFETY: plain kill(2) on the traced node, a child of our child.
        anyhow::ensure!(
            unsafe { libc::kill(self.node_pid()?, signal) } == 0,
            "kill: {}",
            std::io::Error::last_os_error()
        );
        Ok(())
    }

    /// Stops the node (SIGTERM, as systemd does) and returns the syscalls it made.
    async fn stop(mut self) -> Result<std::collections::BTreeSet<String>> {
        self.signal_node(libc::SIGTERM)?;
        self.proc.wait_exit(Duration::from_secs(20)).await?;
        let text = std::fs::read_to_string(&self.summary)?;
        Ok(text
            .lines()
            .filter(|l| !l.starts_with(['%', '-']))
            .filter_map(|l| l.split_whitespace().last())
            .filter(|name| name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'))
            .filter(|name| *name != "total")
            .map(str::to_owned)
            .collect())
    }
}

/// The units' seccomp filter (`SystemCallFilter=@system-service` less
/// `@privileged @resources`) allows every syscall the real nodes make from
/// start to stop: serving, an agent session with video, an RTSP reader,
/// PTZ through the relay, status and metrics, a reload, a clean stop. A
/// syscall outside it would fail with EPERM under systemd.
#[tokio::test]
async fn systemd_syscall_filters_allow_every_call_the_nodes_make() -> Result<()> {
    let _heavy = ponte_tests::e2e_lock();
    if !require_program(SYSTEMD_ANALYZE, "systemd")
        || !require_program("/usr/bin/strace", "strace")
        || !require_program("/usr/bin/ffmpeg", "ffmpeg")
    {
        return Ok(());
    }
    let dir = tempfile::tempdir()?;
    let pki = ponte_tests::Pki::create(dir.path().join("pki"), &["master", "carabinieri"]).await?;
    let (token, mut ops) = ponte_tests::relay_token("ops")?;
    ops.ptz = true;
    let rtsp_port = free_tcp_port();
    let mut relay = ponte_tests::RelayConfig::new(
        "carabinieri",
        format!("127.0.0.1:{}", free_udp_port()).parse()?,
        format!("127.0.0.1:{}", free_tcp_port()).parse()?,
        pki.tls("carabinieri"),
    );
    relay.token(ops);
    let rtsp = relay.rtsp_on(rtsp_port);
    rtsp.basic = true;
    rtsp.udp = false;
    let dome = Device::simulated_dome("dome");
    let mut agent = ponte_tests::AgentConfig::new(
        "master",
        pki.tls("master"),
        vec![ponte_tests::RelayTarget::new("carabinieri", relay.relay.quic_listen)],
        vec![dome, Device::synthetic("cam")],
    );
    agent.sites[0].ptz = true;
    let mut relay_node = Traced::start(
        "ponte-relay",
        &relay.write(dir.path().join("relay.toml"))?,
        dir.path().join("relay.st"),
    )?;
    let relay_mgmt = relay_node.proc.management_url(Duration::from_secs(20)).await?;
    let mut agent_node = Traced::start(
        "ponte-agent",
        &agent.write(dir.path().join("agent.toml"))?,
        dir.path().join("agent.st"),
    )?;
    let agent_mgmt = agent_node.proc.management_url(Duration::from_secs(20)).await?;
    ponte_tests::wait_catalog_as(&relay.base_url(), 2, Duration::from_secs(30), Some(&token)).await?;

    let url = format!("rtsp://ops:{token}@127.0.0.1:{rtsp_port}/cam");
    let ffmpeg = ponte_tests::spawn_ffmpeg_reader(&url, "tcp", 3)?.wait_with_output().await?;
    let progress = String::from_utf8_lossy(&ffmpeg.stdout);
    let frames: u64 =
        progress.lines().filter_map(|l| l.strip_prefix("frame=")?.trim().parse().ok()).max().unwrap_or(0);
    assert!(
        ffmpeg.status.success() && frames > 10,
        "ffmpeg decoded {frames} frames through the traced nodes"
    );
    let auth = format!("Bearer {token}");
    let ptz = ponte_tests::http_request(
        "POST",
        &format!("{}/api/ptz/dome", relay.base_url()),
        &[("Authorization", &auth), ("Content-Type", "application/json")],
        br#"{"op":"move","pan":300}"#,
        Duration::from_secs(10),
    )
    .await?;
    assert_eq!(ptz.status, 200, "{}", ptz.text());
    for url in [&relay_mgmt, &agent_mgmt] {
        http_get(&format!("{url}/status")).await?.ensure_success()?;
        http_get(&format!("{url}/metrics")).await?.ensure_success()?;
    }
    let reloads = (agent_node.proc.line_count(), relay_node.proc.line_count());
    agent_node.signal_node(libc::SIGHUP)?;
    relay_node.signal_node(libc::SIGHUP)?;
    agent_node.proc.wait_for_line_from(reloads.0, "reloaded", Duration::from_secs(10)).await?;
    relay_node.proc.wait_for_line_from(reloads.1, "reloaded", Duration::from_secs(10)).await?;

    for (bin, node) in [("ponte-agent", agent_node), ("ponte-relay", relay_node)] {
        let used = node.stop().await?;
        let allowed = allowed_syscalls(&unit_text(bin)?)?;
        let outside: Vec<&String> = used.difference(&allowed).collect();
        println!("{bin}: {} syscalls used, all within its unit's filter of {}", used.len(), allowed.len());
        assert!(used.len() > 30, "{bin}: strace saw only {used:?}");
        assert!(
            outside.is_empty(),
            "{bin}.service's SystemCallFilter forbids {outside:?}, which the node uses"
        );
    }
    Ok(())
}

/// A Kubernetes manifest: its file, the kinds of its documents in order, the
/// node's container ports.
struct Manifest {
    file: &'static str,
    kinds: &'static [&'static str],
    ports: &'static [(u64, &'static str)],
}

const MANIFESTS: &[Manifest] = &[
    Manifest {
        file: "relay.yaml",
        kinds: &["Service", "StatefulSet", "PodDisruptionBudget", "NetworkPolicy"],
        ports: &[(7443, "UDP"), (8080, "TCP"), (8554, "TCP"), (9091, "TCP")],
    },
    Manifest {
        file: "agent.yaml",
        kinds: &["Service", "Service", "Service", "StatefulSet", "PodDisruptionBudget", "NetworkPolicy"],
        ports: &[(9090, "TCP"), (7444, "UDP")],
    },
];

#[test]
fn kubernetes_manifests_have_the_expected_kinds_ports_and_probes() -> Result<()> {
    for Manifest { file, kinds, ports } in MANIFESTS {
        let docs = manifest(file)?;
        let got: Vec<&str> = docs.iter().filter_map(|d| d["kind"].as_str()).collect();
        assert_eq!(&got, kinds, "{file}");
        let pod = pod_spec(file, &docs)?;
        let container = &pod["containers"][0];
        let want: Vec<(u64, String)> = ports.iter().map(|(p, proto)| (*p, proto.to_string())).collect();
        assert_eq!(port_list(&container["ports"], "containerPort"), want, "{file} ports");
        assert_eq!(container["readinessProbe"]["httpGet"]["path"].as_str(), Some("/readyz"), "{file}");
        assert_eq!(container["readinessProbe"]["httpGet"]["port"].as_str(), Some("mgmt"), "{file}");
        assert_eq!(container["livenessProbe"]["httpGet"]["path"].as_str(), Some("/healthz"), "{file}");
        assert_eq!(container["securityContext"]["allowPrivilegeEscalation"].as_bool(), Some(false), "{file}");
        // `config check` runs first, with the node's environment and mounts.
        let init = &pod["initContainers"][0];
        let args: Vec<&str> =
            init["args"].as_sequence().context("init args")?.iter().filter_map(|a| a.as_str()).collect();
        assert_eq!(&args[..3], ["config", "check", "--config"], "{file}");
        assert_eq!(args[3], container["args"][2].as_str().context("run --config")?, "{file}");
        for key in ["image", "command", "env", "volumeMounts", "securityContext"] {
            assert_eq!(init[key], container[key], "{file}: the config check's {key} is the node's");
        }
    }
    Ok(())
}

fn manifest(file: &str) -> Result<Vec<serde_yaml::Value>> {
    let text = std::fs::read_to_string(root().join("deploy/k8s").join(file))?;
    serde_yaml::Deserializer::from_str(&text)
        .map(serde::Deserialize::deserialize)
        .collect::<Result<_, _>>()
        .with_context(|| format!("{file} is not valid YAML"))
}

/// The one document of `kind` in a manifest.
fn only<'a>(file: &str, docs: &'a [serde_yaml::Value], kind: &str) -> Result<&'a serde_yaml::Value> {
    let mut of_kind = docs.iter().filter(|d| d["kind"] == kind);
    match (of_kind.next(), of_kind.next()) {
        (Some(doc), None) => Ok(doc),
        _ => anyhow::bail!("{file}: not exactly one {kind}"),
    }
}

/// The pod template's spec of the manifest's StatefulSet.
fn pod_spec<'a>(file: &str, docs: &'a [serde_yaml::Value]) -> Result<&'a serde_yaml::Value> {
    Ok(&only(file, docs, "StatefulSet")?["spec"]["template"]["spec"])
}

/// (port, protocol) pairs of a list of ports; a range (`endPort`) as its first port.
fn port_list(ports: &serde_yaml::Value, key: &str) -> Vec<(u64, String)> {
    ports
        .as_sequence()
        .into_iter()
        .flatten()
        .map(|p| (p[key].as_u64().unwrap_or(0), p["protocol"].as_str().unwrap_or("TCP").to_owned()))
        .collect()
}

/// The manifests keep secrets in Secrets (keys, and the configs: camera
/// passwords, account hashes), run under the runtime's default seccomp
/// profile, and come with a NetworkPolicy that admits, port by port, only
/// the peers that need it: every container port has a rule with a `from`
/// (no port open to all), and no rule opens a port the node does not serve
/// (the relay's one extra: the WebRTC media range, `whep.udp_ports`). The
/// agent's management port (the master room's PTZ API) listens on the pod's
/// address, never 0.0.0.0, and only Prometheus and the operators' LAN reach
/// it; its agent-to-agent port (7444/UDP) only the other agent.
#[test]
fn kubernetes_manifests_keep_secrets_in_secrets_and_admit_only_each_peers_ports() -> Result<()> {
    for (file, extra_ports) in [("relay.yaml", vec![(40000u64, "UDP".to_owned())]), ("agent.yaml", vec![])] {
        let docs = manifest(file)?;
        let pod = pod_spec(file, &docs)?;
        assert!(docs.iter().all(|d| d["kind"] != "ConfigMap"), "{file}: no ConfigMap");
        assert!(docs.iter().all(|d| d["kind"] != "PersistentVolumeClaim"), "{file}: volumeClaimTemplates");
        for volume in pod["volumes"].as_sequence().context("volumes")? {
            assert!(volume["configMap"].is_null(), "{file}: volume {:?} is a ConfigMap", volume["name"]);
            if let Some(name) = volume["name"].as_str().filter(|n| ["config", "pki"].contains(n)) {
                // Kubernetes reads YAML 1.1: `0400` is octal.
                let mode = &volume["secret"]["defaultMode"];
                assert!(
                    mode.as_u64() == Some(0o400)
                        || mode.as_str() == Some("0400")
                        || mode.as_f64() == Some(400.0),
                    "{file}: volume `{name}` must be a Secret with defaultMode 0400, got {mode:?}"
                );
            }
        }
        assert_eq!(
            pod["securityContext"]["seccompProfile"]["type"].as_str(),
            Some("RuntimeDefault"),
            "{file}"
        );
        assert_eq!(pod["securityContext"]["runAsNonRoot"].as_bool(), Some(true), "{file}");
        let container = &pod["containers"][0];
        assert_eq!(container["securityContext"]["capabilities"]["drop"][0].as_str(), Some("ALL"), "{file}");
        assert_eq!(container["securityContext"]["readOnlyRootFilesystem"].as_bool(), Some(true), "{file}");
        let env = container["env"].as_sequence().context("env")?;
        let listen = env
            .iter()
            .find(|e| e["name"] == "PONTE_MANAGEMENT__LISTEN")
            .and_then(|e| e["value"].as_str())
            .with_context(|| format!("{file}: PONTE_MANAGEMENT__LISTEN"))?;
        assert!(listen.starts_with("$(POD_IP):"), "{file}: management listens on {listen}");
        assert!(
            env.iter()
                .any(|e| e["name"] == "POD_IP" && e["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP"),
            "{file}: POD_IP"
        );

        let policy = only(file, &docs, "NetworkPolicy")?;
        let labels = &pod_template_labels(file, &docs)?;
        assert_eq!(
            &policy["spec"]["podSelector"]["matchLabels"], labels,
            "{file}: the policy selects the pods"
        );
        assert!(policy["spec"]["policyTypes"]
            .as_sequence()
            .is_some_and(|t| t.iter().any(|t| t == "Ingress")));
        let served = port_list(&container["ports"], "containerPort");
        let mut admitted = Vec::new();
        for rule in policy["spec"]["ingress"].as_sequence().context("ingress rules")? {
            let from = rule["from"].as_sequence().map_or(0, Vec::len);
            assert!(from > 0, "{file}: an ingress rule open to everyone: {rule:?}");
            for peer in rule["from"].as_sequence().into_iter().flatten() {
                let cidr = peer["ipBlock"]["cidr"].as_str().unwrap_or("");
                assert!(!cidr.ends_with("/0"), "{file}: {cidr} admits everyone");
            }
            let ports = port_list(&rule["ports"], "port");
            if file == "agent.yaml" && ports.contains(&(7444, "UDP".to_owned())) {
                // The agent-to-agent link: from the agents' own pods, nothing else.
                for peer in rule["from"].as_sequence().into_iter().flatten() {
                    assert_eq!(&peer["podSelector"]["matchLabels"], labels, "{file}: 7444/UDP from {peer:?}");
                    assert!(
                        peer["ipBlock"].is_null() && peer["namespaceSelector"].is_null(),
                        "{file}: 7444/UDP from {peer:?}"
                    );
                }
            }
            admitted.extend(ports);
        }
        for port in &admitted {
            assert!(served.contains(port) || extra_ports.contains(port), "{file}: {port:?} is not served");
        }
        for port in &served {
            assert!(admitted.contains(port), "{file}: no peer may reach {port:?}");
        }
    }
    Ok(())
}

/// The labels of the StatefulSet's pods.
fn pod_template_labels(file: &str, docs: &[serde_yaml::Value]) -> Result<serde_yaml::Value> {
    let labels = &only(file, docs, "StatefulSet")?["spec"]["template"]["metadata"]["labels"];
    anyhow::ensure!(labels.as_mapping().is_some_and(|m| !m.is_empty()), "{file}: pod labels");
    Ok(labels.clone())
}

/// Two of each node, never on one host, never both evicted at once: a
/// StatefulSet of 2 replicas with required anti-affinity on
/// `kubernetes.io/hostname` over its own pods, a PodDisruptionBudget over the
/// same pods that keeps one up, a headless governing Service, and a state
/// volume per pod. Each pod mounts only its own config and keys: the Secrets'
/// items are filed by a name the downward API gives the pod (the agent's pod
/// name, the relay's node name) and the mounts take that one directory, which
/// holds exactly one private key (and the pair's shared key at a relay).
#[test]
fn kubernetes_manifests_run_two_of_each_node_on_two_hosts() -> Result<()> {
    for (file, identity) in
        [("agent.yaml", ("POD_NAME", "metadata.name")), ("relay.yaml", ("NODE_NAME", "spec.nodeName"))]
    {
        let docs = manifest(file)?;
        let set = only(file, &docs, "StatefulSet")?;
        let labels = pod_template_labels(file, &docs)?;
        assert_eq!(set["spec"]["replicas"].as_u64(), Some(2), "{file}: replicas");
        assert_eq!(
            set["spec"]["selector"]["matchLabels"], labels,
            "{file}: the selector is the pods' labels"
        );
        let anti = set["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"]
            ["requiredDuringSchedulingIgnoredDuringExecution"]
            .as_sequence()
            .with_context(|| format!("{file}: required podAntiAffinity"))?;
        assert!(
            anti.iter().any(|term| term["topologyKey"] == "kubernetes.io/hostname"
                && term["labelSelector"]["matchLabels"] == labels),
            "{file}: no required anti-affinity over the pods' labels on kubernetes.io/hostname: {anti:?}"
        );
        let pdb = only(file, &docs, "PodDisruptionBudget")?;
        assert_eq!(pdb["spec"]["selector"]["matchLabels"], labels, "{file}: the PDB selects the pods");
        assert!(
            pdb["spec"]["minAvailable"].as_u64() == Some(1)
                || pdb["spec"]["maxUnavailable"].as_u64() == Some(1),
            "{file}: the PDB keeps one of two up: {pdb:?}"
        );
        let service = set["spec"]["serviceName"].as_str().context("serviceName")?;
        assert!(
            docs.iter().any(|d| d["kind"] == "Service"
                && d["metadata"]["name"] == service
                && d["spec"]["clusterIP"] == "None"
                && d["spec"]["selector"] == labels),
            "{file}: no headless Service `{service}` over the pods"
        );
        let claims = set["spec"]["volumeClaimTemplates"].as_sequence().context("volumeClaimTemplates")?;
        assert!(claims.iter().any(|c| c["metadata"]["name"] == "state"), "{file}: a state volume per pod");

        // Each pod's own files.
        let pod = &set["spec"]["template"]["spec"];
        let (var, field) = identity;
        assert!(
            pod["containers"][0]["env"]
                .as_sequence()
                .into_iter()
                .flatten()
                .any(|e| e["name"] == var && e["valueFrom"]["fieldRef"]["fieldPath"] == field),
            "{file}: {var} from {field}"
        );
        let mut dirs: std::collections::BTreeMap<String, Vec<String>> = Default::default();
        for mount in pod["containers"][0]["volumeMounts"].as_sequence().context("volumeMounts")? {
            let name = mount["name"].as_str().unwrap_or("");
            if !["config", "pki"].contains(&name) {
                continue;
            }
            let sub = mount["subPathExpr"].as_str().unwrap_or("");
            assert!(
                sub.starts_with(&format!("$({var})")),
                "{file}: mount `{name}` takes {sub:?}, not $({var})"
            );
            let volume = pod["volumes"]
                .as_sequence()
                .into_iter()
                .flatten()
                .find(|v| v["name"] == name)
                .with_context(|| format!("{file}: volume {name}"))?;
            for item in volume["secret"]["items"].as_sequence().context("items")? {
                let path = item["path"].as_str().context("item path")?;
                let (dir, _) =
                    path.split_once('/').with_context(|| format!("{file}: item {path} in no directory"))?;
                dirs.entry(dir.to_owned()).or_default().push(path.to_owned());
            }
        }
        assert_eq!(dirs.len(), 2, "{file}: files for two pods: {dirs:?}");
        if file == "agent.yaml" {
            let pods: Vec<String> = (0..2).map(|i| format!("ponte-agent-{i}")).collect();
            assert_eq!(dirs.keys().cloned().collect::<Vec<_>>(), pods, "{file}: filed by pod name");
        }
        for (dir, files) in &dirs {
            let keys: Vec<&String> =
                files.iter().filter(|f| f.ends_with(".key") && !f.ends_with("/pair.key")).collect();
            assert_eq!(keys.len(), 1, "{file}: {dir} must hold its own key and no other: {files:?}");
            for want in ["ca.pem", if file == "agent.yaml" { "agent.toml" } else { "relay.toml" }] {
                assert!(files.contains(&format!("{dir}/{want}")), "{file}: {dir} has no {want}: {files:?}");
            }
        }
    }
    // The agents reach each other at fixed addresses (`redundancy.peers` takes
    // an address): a Service per pod, on the agent-to-agent port.
    let docs = manifest("agent.yaml")?;
    for i in 0..2 {
        let name = format!("ponte-agent-{i}");
        let service = docs
            .iter()
            .find(|d| d["kind"] == "Service" && d["metadata"]["name"] == name.as_str())
            .with_context(|| format!("agent.yaml: Service {name}"))?;
        assert_eq!(service["spec"]["selector"]["statefulset.kubernetes.io/pod-name"], name.as_str());
        assert!(service["spec"]["clusterIP"]
            .as_str()
            .is_some_and(|ip| ip.parse::<std::net::IpAddr>().is_ok()));
        assert_eq!(port_list(&service["spec"]["ports"], "port"), [(7444, "UDP".to_owned())], "{name}");
    }
    Ok(())
}

/// Where `./scripts/test` installs kubernetes-validate (PyPI, pinned by hash
/// in scripts/kubernetes-validate.requirements.txt), with the schemas it ships.
const KUBERNETES_VALIDATE: &str = "/var/cache/ponte-kubernetes-validate/bin/kubernetes-validate";

/// Kubernetes versions the manifests must be valid for: the oldest we
/// support and the newest the pinned kubernetes-validate ships.
const KUBERNETES_VERSIONS: &[&str] = &["1.30.0", "1.37.0"];

/// `kubernetes-validate --strict` on `files` against `version`: (success, output).
fn kubernetes_validate(version: &str, files: &[PathBuf]) -> Result<(bool, String)> {
    let out = std::process::Command::new(KUBERNETES_VALIDATE)
        .args(["--strict", "--kubernetes-version", version])
        .args(files)
        .output()
        .with_context(|| format!("running {KUBERNETES_VALIDATE}"))?;
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    Ok((out.status.success(), text))
}

/// Every document of both manifests is valid against the Kubernetes API's own
/// schemas, strictly (a misspelt or misplaced field is an error, not ignored
/// by the API server as it would be), for each of [`KUBERNETES_VERSIONS`].
/// A copy with one misspelt field must fail, so the check is known to bite.
#[test]
fn kubernetes_manifests_validate_against_the_kubernetes_schemas() -> Result<()> {
    if !ponte_tests::require(
        std::fs::metadata(KUBERNETES_VALIDATE).is_ok_and(|m| {
            use std::os::unix::fs::PermissionsExt;
            m.is_file() && m.permissions().mode() & 0o111 != 0
        }),
        &format!("kubernetes-validate ({KUBERNETES_VALIDATE})"),
        "./scripts/test --install-only installs it into a venv from PyPI, pinned by hash",
    ) {
        return Ok(());
    }
    let files: Vec<PathBuf> = MANIFESTS.iter().map(|m| root().join("deploy/k8s").join(m.file)).collect();
    let documents: usize = MANIFESTS.iter().map(|m| m.kinds.len()).sum();
    for version in KUBERNETES_VERSIONS {
        let (ok, text) = kubernetes_validate(version, &files)?;
        assert!(ok, "kubernetes-validate --strict -k {version}:\n{text}");
        let passed = text.lines().filter(|l| l.contains(" passed for resource ")).count();
        assert_eq!(passed, documents, "kubernetes-validate -k {version} checked {passed} documents:\n{text}");
        println!("kubernetes-validate --strict -k {version}: {passed} documents valid");
    }
    // The StatefulSet's container with one misspelt field, as an admin's edit might leave it.
    let mut docs = manifest("agent.yaml")?;
    let set = docs.iter_mut().find(|d| d["kind"] == "StatefulSet").context("StatefulSet")?;
    let security = set["spec"]["template"]["spec"]["containers"][0]["securityContext"]
        .as_mapping_mut()
        .context("securityContext")?;
    security.insert("readOnlyRootFilesytem".into(), true.into());
    let dir = tempfile::tempdir()?;
    let typo = dir.path().join("agent.yaml");
    let text = docs.iter().map(serde_yaml::to_string).collect::<Result<Vec<_>, _>>()?.join("---\n");
    std::fs::write(&typo, text)?;
    let (ok, text) = kubernetes_validate(KUBERNETES_VERSIONS[0], &[typo])?;
    assert!(
        !ok && text.contains("readOnlyRootFilesytem"),
        "a misspelt field passed kubernetes-validate --strict:\n{text}"
    );
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

/// Label names of every series in a Prometheus text exposition, by metric.
fn exported_series(
    text: &str,
) -> std::collections::BTreeMap<String, Vec<std::collections::BTreeSet<String>>> {
    let mut out: std::collections::BTreeMap<String, Vec<_>> = Default::default();
    for line in text.lines().filter(|l| !l.starts_with('#') && !l.trim().is_empty()) {
        let (name, labels) = series_parts(line.rsplit_once(' ').map_or(line, |(s, _)| s));
        out.entry(name).or_default().push(labels.into_keys().collect());
    }
    out
}

/// `name{a="x",b="y"}` as the name and its labels (values without quotes).
fn series_parts(series: &str) -> (String, std::collections::BTreeMap<String, String>) {
    let (name, rest) = series.split_once('{').unwrap_or((series, "}"));
    let labels = rest
        .trim_end_matches('}')
        .split(',')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().trim_matches('"').to_owned()))
        .collect();
    (name.trim().to_owned(), labels)
}

/// The alert rules fire as they should on the series the nodes export:
/// `promtool test rules` runs deploy/prometheus/ponte-rules.test.yml, whose
/// input series must each carry a metric name and label set an agent or a
/// relay really exports (plus the scrape's `instance` and `job`), so the
/// rules cannot drift from the exporters unnoticed.
#[test]
fn alert_rules_fire_on_the_series_the_nodes_export() -> Result<()> {
    use ponte_proto::status::{CameraStatus, LinkStatus, ShapingStatus, StatusDoc};
    if !require_program("/usr/bin/promtool", "prometheus") {
        return Ok(());
    }
    let dir = root().join("deploy/prometheus");
    let out = std::process::Command::new("/usr/bin/promtool")
        .args(["test", "rules", "ponte-rules.test.yml"])
        .current_dir(&dir)
        .output()?;
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "promtool test rules: {text}");
    println!("{}", text.trim());

    // One of everything a node can export: a link, a camera, a shaped
    // subscription, a limit refusal, a PTZ command, a recording rule.
    let doc = StatusDoc {
        node: "master".into(),
        role: "agent".into(),
        links: vec![LinkStatus {
            peer: "carabinieri".into(),
            direction: "to-relay".into(),
            state: "up".into(),
            rtt_ms: Some(1.0),
            ..Default::default()
        }],
        cameras: vec![CameraStatus { id: "cam".into(), quality: "main".into(), ..Default::default() }],
        shaping: vec![ShapingStatus {
            site: "carabinieri".into(),
            camera: "cam".into(),
            rung: "sub".into(),
            ..Default::default()
        }],
        limit_refusals: [("agent.max_subscriptions_per_session".to_owned(), 1)].into_iter().collect(),
        ptz_commands: [("allowed".to_owned(), 1)].into_iter().collect(),
        certificates: vec![ponte_proto::status::CertificateStatus {
            cert: "own".into(),
            subject: "master".into(),
            serial: "01".into(),
            expires_in_secs: 86_400,
        }],
        recordings: vec![ponte_proto::status::RecordingStatus {
            rule: "citta".into(),
            deleted: [("retention".to_owned(), 1)].into_iter().collect(),
            ..Default::default()
        }],
        ..Default::default()
    };
    let exported = exported_series(&doc.prometheus());
    let tests: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(dir.join("ponte-rules.test.yml"))?)?;
    let mut checked = 0;
    for test in tests["tests"].as_sequence().context("tests")? {
        for input in test["input_series"].as_sequence().context("input_series")? {
            let series = input["series"].as_str().context("series")?;
            let (name, mut labels) = series_parts(series);
            for scrape in ["instance", "job"] {
                assert!(
                    labels.remove(scrape).is_some(),
                    "{series}: Prometheus adds `{scrape}` when it scrapes"
                );
            }
            let names: std::collections::BTreeSet<String> = labels.into_keys().collect();
            let real = exported.get(&name).with_context(|| format!("{series}: no node exports `{name}`"))?;
            assert!(real.contains(&names), "{series}: the nodes export `{name}` with labels {real:?}");
            checked += 1;
        }
    }
    assert!(checked > 10, "only {checked} input series");
    Ok(())
}
