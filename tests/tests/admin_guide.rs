//! The admin guide, executed: every command block of deploy/README.md that
//! an admin types (info string ```` ```sh admin host=... ````) runs, in the
//! guide's order, on simulated hosts: network namespaces with the guide's
//! addresses, each with a mount namespace of its own (tests/admin_guide/
//! host.sh: what the guide writes under /etc, /var/lib, /usr/local, root's
//! home... stays on that host, and the machine running the test is left as
//! it was). Nodes start as the systemd units say (tests/admin_guide/
//! systemctl: User=, Environment=, UMask=, StateDirectory=, ExecStartPre=),
//! files travel with the guide's own `scp` lines (a shim resolving the
//! guide's addresses to the hosts) or the shared USB stick.
//!
//! At the end, whatever the guide's own checks said: each relay's catalog is
//! what `ponte-agent policy explain` grants its site, a camera plays over
//! RTSP at each site (ffmpeg decodes frames), `status` exits 0 on every node,
//! and `promtool check metrics` is clean on every management port.
//!
//! A block's words after `sh admin`: `host=a,b` (where it runs, in that
//! order), `wait=N` (run it again for up to N seconds until it succeeds, as
//! an admin who is told "run it again in a moment"), `skip=REASON` (one of
//! [`SKIPS`]: a step the test cannot or need not run, listed in its output).

use anyhow::{bail, ensure, Context, Result};
use ponte_tests::{bin_path, require_program, require_root};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Blocks the test does not run, and why.
const SKIPS: &[(&str, &str)] = &[
    ("build", "the release build takes minutes: the test's checkout has the test build in target/release"),
    ("quickstart", "tests/tests/deploy_kit.rs runs the quickstart script"),
    ("clock", "the simulated hosts share the machine's clock and run no timesyncd"),
];

/// The guide's hosts: name, fibre address (None: not on the fibre).
const HOSTS: &[(&str, Option<&str>)] = &[
    ("build", None),
    ("ca", None),
    ("master", Some("10.10.0.10")),
    ("carabinieri", Some("10.20.0.10")),
    ("questura", Some("10.30.0.10")),
    ("finanza", Some("10.40.0.10")),
];

/// Partner sites: host, token file the guide writes, subnet number.
const SITES: &[(&str, &str, u8)] =
    &[("carabinieri", "vms-comando", 20), ("questura", "vms-questura", 30), ("finanza", "vms-finanza", 40)];

/// The camera of the guide's "Adding a camera": its address on the camera
/// LAN, its RTSP account and its vendor-style paths (as the guide has them).
const CAMERA_ADDR: &str = "10.1.2.3";
const CAMERA_USER: &str = "ponte";
const CAMERA_PASSWORD: &str = "Zaist-2026-cam";

/// Units whose `systemctl reload` the shim turns into a restart (a node
/// that did not apply the guide's change on SIGHUP would need one). Empty:
/// the agent applies added `[[device]]`, `[[relay]]` and `[[site]]` entries
/// on reload, and the guide's steps prove it.
const RELOAD_RESTARTS: &str = "";

#[derive(Debug)]
struct Block {
    /// 1-based line of the opening fence in deploy/README.md.
    line: usize,
    hosts: Vec<String>,
    wait: Option<u64>,
    skip: Option<String>,
    text: String,
}

/// The `sh admin` blocks of the guide, in order; any malformed one is an error.
fn admin_blocks(guide: &str) -> Result<Vec<Block>> {
    let mut blocks = Vec::new();
    let mut lines = guide.lines().enumerate();
    while let Some((i, line)) = lines.next() {
        let Some(info) = line.trim_start().strip_prefix("```") else { continue };
        let words: Vec<&str> = info.split_whitespace().collect();
        let mut body = Vec::new();
        for (_, l) in lines.by_ref() {
            if l.trim_start().starts_with("```") {
                break;
            }
            body.push(l);
        }
        if !words.contains(&"admin") {
            continue;
        }
        ensure!(
            words.first() == Some(&"sh") && words.get(1) == Some(&"admin"),
            "line {}: `{info}`: admin blocks are ```sh admin ...",
            i + 1
        );
        let mut block =
            Block { line: i + 1, hosts: Vec::new(), wait: None, skip: None, text: body.join("\n") };
        for word in &words[2..] {
            match word.split_once('=') {
                Some(("host", v)) => block.hosts = v.split(',').map(str::to_owned).collect(),
                Some(("wait", v)) => {
                    block.wait = Some(v.parse().with_context(|| format!("line {}: `{word}`", i + 1))?)
                }
                Some(("skip", v)) => block.skip = Some(v.to_owned()),
                _ => bail!("line {}: unknown word `{word}` in `{info}` (host=, wait=, skip=)", i + 1),
            }
        }
        ensure!(!block.hosts.is_empty(), "line {}: `{info}` says on no host= where it runs", i + 1);
        for h in &block.hosts {
            ensure!(HOSTS.iter().any(|(n, _)| n == h), "line {}: unknown host `{h}`", i + 1);
        }
        if let Some(s) = &block.skip {
            ensure!(SKIPS.iter().any(|(n, _)| n == s), "line {}: unknown skip reason `{s}`", i + 1);
        }
        ensure!(
            body.first().is_some_and(|l| l.starts_with("# on ")),
            "line {}: an admin block starts with a `# on <host>` comment for the human reader",
            i + 1
        );
        blocks.push(block);
    }
    Ok(blocks)
}

#[test]
fn the_guide_blocks_are_well_formed() -> Result<()> {
    let guide = std::fs::read_to_string(root().join("deploy/README.md"))?;
    let blocks = admin_blocks(&guide)?;
    assert!(blocks.len() >= 20, "{} admin blocks", blocks.len());
    // Every host of the guide has work, and the skips stay few.
    for (host, _) in HOSTS {
        assert!(blocks.iter().any(|b| b.hosts.iter().any(|h| h == host)), "no block for host {host}");
    }
    let skipped = blocks.iter().filter(|b| b.skip.is_some()).count();
    assert!(skipped <= SKIPS.len(), "{skipped} skipped blocks");
    Ok(())
}

#[test]
fn the_token_command_says_rtsp_needs_basic() -> Result<()> {
    let out = ponte_tests::relay_cli(&["token", "--name", "vms-comando"], "")?;
    assert!(out.contains("[rtsp] basic = true"), "{out}");
    Ok(())
}

fn run(program: &str, args: &[&str]) -> Result<String> {
    let out = Command::new(program).args(args).output().with_context(|| format!("running {program}"))?;
    ensure!(
        out.status.success(),
        "`{program} {}`: {}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The namespaces; every process in them is killed and they are deleted on drop.
struct Network {
    names: BTreeMap<&'static str, String>,
}

impl Network {
    fn create() -> Result<Network> {
        let pid = std::process::id();
        // Leftovers of a run that was killed.
        for line in run("ip", &["netns", "list"]).unwrap_or_default().lines() {
            let name = line.split_whitespace().next().unwrap_or("");
            if let Some(owner) = name.strip_prefix("ponte-guide-").and_then(|r| r.rsplit('-').next()) {
                if owner.parse::<u32>().is_ok_and(|p| !Path::new(&format!("/proc/{p}")).exists()) {
                    kill_all_in(name);
                    let _ = run("ip", &["netns", "del", name]);
                }
            }
        }
        let mut net = Network { names: BTreeMap::new() };
        for ns in ["master", "ca", "carabinieri", "questura", "finanza"] {
            let name = format!("ponte-guide-{ns}-{pid}");
            let _ = run("ip", &["netns", "del", &name]);
            run("ip", &["netns", "add", &name])?;
            run("ip", &["-n", &name, "link", "set", "lo", "up"])?;
            net.names.insert(ns, name);
        }
        let master = net.names["master"].clone();
        // The master's fibre address, and the camera's on the camera LAN.
        run("ip", &["-n", &master, "addr", "add", "10.10.0.10/32", "dev", "lo"])?;
        run("ip", &["-n", &master, "addr", "add", &format!("{CAMERA_ADDR}/32"), "dev", "lo"])?;
        for (site, _, n) in SITES {
            let ns = net.names[site].clone();
            let outer = format!("fibre-{n}");
            run(
                "ip",
                &[
                    "link", "add", &outer, "netns", &master, "type", "veth", "peer", "name", "fibre0",
                    "netns", &ns,
                ],
            )?;
            run("ip", &["-n", &master, "addr", "add", &format!("10.{n}.0.1/24"), "dev", &outer])?;
            run("ip", &["-n", &master, "link", "set", &outer, "up"])?;
            run("ip", &["-n", &ns, "addr", "add", &format!("10.{n}.0.10/24"), "dev", "fibre0"])?;
            run("ip", &["-n", &ns, "link", "set", "fibre0", "up"])?;
            run("ip", &["-n", &ns, "route", "add", "10.10.0.0/24", "via", &format!("10.{n}.0.1")])?;
        }
        Ok(net)
    }
}

fn kill_all_in(ns: &str) {
    for pid in run("ip", &["netns", "pids", ns]).unwrap_or_default().split_whitespace() {
        if let Ok(pid) = pid.parse::<i32>() {
            // SAFETY: kill has no memory-safety preconditions.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        for name in self.names.values() {
            kill_all_in(name);
        }
        std::thread::sleep(Duration::from_millis(200));
        for name in self.names.values() {
            if let Err(e) = run("ip", &["netns", "del", name]) {
                eprintln!("netns cleanup: {e:#}");
            }
        }
    }
}

/// One simulated host: its anchor process (mount and network namespace).
struct Host {
    anchor: ponte_tests::Proc,
    /// The directory the guide's commands start in.
    cwd: String,
    state: PathBuf,
}

struct Lab {
    _net: Network,
    hosts: BTreeMap<String, Host>,
    shims: PathBuf,
    host_map: String,
}

impl Lab {
    /// `bash -c TEXT` on `host`, as root in its cwd; (success, output).
    fn sh(&self, host: &str, text: &str, timeout: Duration) -> Result<(bool, String)> {
        let h = &self.hosts[host];
        let path = format!(
            "PATH={}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            self.shims.display()
        );
        let script = format!("set -euo pipefail\ncd {}\nset -x\n{text}\n", h.cwd);
        let mut child = Command::new("nsenter")
            .args(["-t", &h.anchor.pid().to_string(), "-m", "-n", "--", "env", "-i", &path, "HOME=/root"])
            .arg("LANG=C.UTF-8")
            .arg(format!("GUIDE_TEST_STATE={}", h.state.display()))
            .arg(format!("GUIDE_TEST_HOSTS={}", self.host_map))
            .arg(format!("GUIDE_TEST_RELOAD_RESTARTS={RELOAD_RESTARTS}"))
            .args(["bash", "-c", &script])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .context("nsenter")?;
        let out_pipe = child.stdout.take().context("stdout")?;
        let err_pipe = child.stderr.take().context("stderr")?;
        let out_reader = std::thread::spawn(move || std::io::read_to_string(out_pipe).unwrap_or_default());
        let err_reader = std::thread::spawn(move || std::io::read_to_string(err_pipe).unwrap_or_default());
        let deadline = Instant::now() + timeout;
        let status = loop {
            if let Some(s) = child.try_wait()? {
                break Some(s);
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let output =
            format!("{}\n{}", out_reader.join().unwrap_or_default(), err_reader.join().unwrap_or_default());
        match status {
            Some(s) => Ok((s.success(), output)),
            None => Ok((false, format!("{output}\n(timed out after {timeout:?})"))),
        }
    }

    /// Like [`Lab::sh`], failing with the output unless it succeeds.
    fn must(&self, host: &str, text: &str) -> Result<String> {
        let (ok, out) = self.sh(host, text, Duration::from_secs(60))?;
        ensure!(ok, "on {host}: `{text}` failed:\n{out}");
        Ok(out)
    }
}

fn prerequisites() -> bool {
    if !require_root() {
        return false;
    }
    for (program, package) in [
        ("/usr/bin/ip", "iproute2"),
        ("/usr/bin/unshare", "util-linux"),
        ("/usr/bin/nsenter", "util-linux"),
        ("/usr/bin/setpriv", "util-linux"),
        ("/usr/bin/curl", "curl"),
        ("/usr/bin/openssl", "openssl"),
        ("/usr/bin/ffmpeg", "ffmpeg"),
        ("/usr/bin/ffprobe", "ffmpeg"),
        ("/usr/bin/promtool", "prometheus"),
    ] {
        if !require_program(program, package) {
            return false;
        }
    }
    ponte_tests::rtsp_camera::require_gstreamer_rtsp()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_admin_guide_runs_as_written() -> Result<()> {
    if !prerequisites() {
        return Ok(());
    }
    let _lock = ponte_tests::e2e_lock();
    let started = Instant::now();
    let guide = std::fs::read_to_string(root().join("deploy/README.md"))?;
    let blocks = admin_blocks(&guide)?;
    let tmp = tempfile::tempdir()?;

    // The build machine's checkout: the repository's deploy kit and README,
    // and the test's build where the guide's `cargo build --release` puts it.
    let checkout = tmp.path().join("checkout");
    std::fs::create_dir_all(checkout.join("target/release"))?;
    run("cp", &["-r", &root().join("deploy").to_string_lossy(), &checkout.to_string_lossy()])?;
    std::fs::copy(root().join("README.md"), checkout.join("README.md"))?;
    for bin in ["ponte-agent", "ponte-relay"] {
        std::os::unix::fs::symlink(bin_path(bin)?, checkout.join("target/release").join(bin))?;
    }
    let usb = tmp.path().join("usb");
    std::fs::create_dir_all(&usb)?;

    let net = Network::create()?;
    // The guide's camera: GStreamer's RTSP server on the camera LAN, with
    // an account and a Hikvision-style path for the main and substream.
    let mut camera_cmd = Command::new("ip");
    camera_cmd
        .args(["netns", "exec", &net.names["master"], ponte_tests::rtsp_camera::PYTHON])
        .arg(root().join("tests/rtsp_server.py"))
        .args(["554", "--protocols", "tcp", "--user", CAMERA_USER, "--password", CAMERA_PASSWORD])
        .args(["--mount", "/Streaming/Channels/101=h264", "--mount", "/Streaming/Channels/102=h264"]);
    let mut camera = ponte_tests::Proc::spawn_command("camera", camera_cmd)?;
    camera.wait_for_line("ready", Duration::from_secs(20)).await?;

    let mut hosts = BTreeMap::new();
    let mut host_map = Vec::new();
    for (name, addr) in HOSTS {
        let ns = if *name == "build" { &net.names["master"] } else { &net.names[name] };
        let dir = tmp.path().join("hosts").join(name);
        std::fs::create_dir_all(&dir)?;
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", ns, "unshare", "--mount", "--propagation", "private", "bash"])
            .arg(root().join("tests/admin_guide/host.sh"))
            .arg(&dir)
            .arg(&usb);
        let mut anchor = ponte_tests::Proc::spawn_command(&format!("host {name}"), cmd)?;
        anchor.wait_for_line("ready", Duration::from_secs(20)).await?;
        if let Some(addr) = addr {
            host_map.push(format!("{addr}={}", anchor.pid()));
        }
        let cwd = if *name == "build" { checkout.to_string_lossy().into_owned() } else { "/root".to_owned() };
        hosts.insert(name.to_string(), Host { anchor, cwd, state: dir.join("state") });
    }
    let lab = Lab { _net: net, hosts, shims: root().join("tests/admin_guide"), host_map: host_map.join(" ") };

    // The guide, in order.
    let mut report = Vec::new();
    for block in &blocks {
        for host in &block.hosts {
            if let Some(reason) = &block.skip {
                report.push(format!("line {:>4} {host:<12} skipped ({reason})", block.line));
                continue;
            }
            let t = Instant::now();
            let patience = Duration::from_secs(block.wait.unwrap_or(0));
            let mut tries = 0;
            loop {
                tries += 1;
                let (ok, out) = lab.sh(host, &block.text, Duration::from_secs(60))?;
                if ok {
                    break;
                }
                if t.elapsed() >= patience {
                    bail!(
                        "deploy/README.md line {} on {host} failed (try {tries}, {:.1} s):\n{}\n--- output ---\n{out}",
                        block.line,
                        t.elapsed().as_secs_f64(),
                        block.text
                    );
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            let line = format!(
                "line {:>4} {host:<12} ran in {:.1} s{}",
                block.line,
                t.elapsed().as_secs_f64(),
                if tries > 1 { format!(" ({tries} tries)") } else { String::new() }
            );
            eprintln!("admin guide: {line}");
            report.push(line);
        }
    }
    println!("deploy/README.md admin blocks:\n{}", report.join("\n"));

    // The end state, checked by the test itself.
    for (site, token_name, n) in SITES {
        let addr = format!("10.{n}.0.10");
        let explained = lab.must(
            "master",
            &format!("ponte-agent policy explain --config /etc/ponte/agent.toml --site {site}"),
        )?;
        let granted = granted(&explained);
        ensure!(!granted.is_empty(), "the policy grants {site} nothing:\n{explained}");
        let token = format!("$(cat /root/{token_name}.token)");
        let catalog = lab.must(
            site,
            &format!("curl -fsS -H \"Authorization: Bearer {token}\" http://{addr}:8080/api/catalog"),
        )?;
        let json = catalog.lines().find(|l| l.starts_with('{')).context("no catalog JSON")?;
        let doc: serde_json::Value = serde_json::from_str(json)?;
        let listed: BTreeSet<String> = doc["cameras"]
            .as_array()
            .context("catalog cameras")?
            .iter()
            .filter_map(|c| c["id"].as_str().map(str::to_owned))
            .collect();
        ensure!(listed == granted, "{site}: catalog {listed:?} but the policy grants {granted:?}");
        // A camera plays over RTSP at the site: frames decoded.
        let camera_id = granted.iter().next().context("a camera")?;
        let sub_only = explained.lines().any(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            cols.first() == Some(&camera_id.as_str()) && cols.get(1) == Some(&"sub")
        });
        let quality = if sub_only { "/sub" } else { "" };
        let out = lab.must(
            site,
            &format!(
                "ffmpeg -v error -rtsp_transport tcp -i \"rtsp://{token_name}:{token}@{addr}:8554/{camera_id}{quality}\" \
                 -frames:v 30 -f null - -progress pipe:1 | grep '^frame=' | tail -n 1"
            ),
        )?;
        let frames: u64 = out
            .lines()
            .filter_map(|l| l.strip_prefix("frame=")?.trim().parse().ok())
            .next_back()
            .unwrap_or(0);
        ensure!(frames >= 30, "{site}: ffmpeg decoded {frames} frames of {camera_id}{quality}: {out}");
        println!(
            "{site}: catalog = policy ({} cameras), {camera_id}{quality} played {frames} frames over RTSP",
            listed.len()
        );
        lab.must(site, "ponte-relay status")?;
    }
    lab.must("master", "ponte-agent status")?;
    // Metrics lint last, every node's problems at once.
    let mut lint = Vec::new();
    for (host, port) in [("master", 9090), ("carabinieri", 9091), ("questura", 9091), ("finanza", 9091)] {
        let (ok, out) = lab.sh(
            host,
            &format!("curl -fsS http://127.0.0.1:{port}/metrics > metrics.txt\npromtool check metrics < metrics.txt"),
            Duration::from_secs(30),
        )?;
        if !ok {
            lint.push(format!("{host}:\n{out}"));
        }
    }
    ensure!(lint.is_empty(), "promtool check metrics:\n{}", lint.join("\n"));
    println!("promtool check metrics: clean on every node");
    drop(camera);
    println!("admin guide: {} blocks in {:.1} s", blocks.len(), started.elapsed().as_secs_f64());
    Ok(())
}

/// Cameras `policy explain` lists with at least one quality, now.
fn granted(explained: &str) -> BTreeSet<String> {
    explained
        .lines()
        .skip_while(|l| !l.starts_with("camera "))
        .skip(1)
        .filter_map(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            (cols.len() >= 3 && cols[1] != "-" && cols[2] == "yes").then(|| cols[0].to_owned())
        })
        .collect()
}
