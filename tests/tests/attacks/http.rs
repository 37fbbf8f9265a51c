//! The HTTP boundaries: the relay's viewer port and both management ports.
//! A slowloris from one address, the master-room PTZ API asked without an
//! operator credential, and DNS rebinding (a foreign `Host`), each against
//! the real binaries while legitimate clients keep logging in and playing.

use anyhow::{bail, Context, Result};
use ponte_proto::media::Quality;
use ponte_proto::ptz::{PtzCommand, PtzReply};
use ponte_relay::auth::{TokenConfig, ViewerConfig};
use ponte_tests::onvif_camera::{ptz_sites, require_onvif_camera, OnvifCamera};
use ponte_tests::quic::{FakeRelay, ReceivedFrame};
use ponte_tests::{
    relay_token, relay_viewer, Chromium, Device, DeviceExt, Pki, RelayConfig, Stack, StackSpec, Tweak,
};
use serde_json::Value;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpSocket;

/// Budget of each wait.
const T: Duration = Duration::from_secs(20);
/// Where the attacks come from; legitimate clients use 127.0.0.1.
const ATTACKER: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
pub(super) const ANNA_PASSWORD: &str = "torrazzo-112-metri";
const SALA_PASSWORD: &str = "sala-operativa-2026";
/// Frames the browser must decode.
const FRAMES: u64 = 30;

/// `anna` (a viewer) and the harness's `ops` token, made by the real CLI.
#[derive(Clone)]
pub(super) struct RelayAccounts {
    anna: ViewerConfig,
    ops: TokenConfig,
}

impl RelayAccounts {
    /// Both accounts on `relay`.
    pub(super) fn add_to(&self, relay: &mut RelayConfig) {
        relay.viewer(self.anna.clone()).token(self.ops.clone());
    }

    /// [`Self::add_to`] as a stack's relay change.
    pub(super) fn tweak(self) -> Tweak<RelayConfig> {
        Tweak::relay(move |relay| self.add_to(relay))
    }
}

/// The `ops` token and [`RelayAccounts`].
pub(super) fn relay_accounts() -> Result<(String, RelayAccounts)> {
    let (ops, table) = relay_token("ops")?;
    Ok((ops, RelayAccounts { anna: relay_viewer("anna", ANNA_PASSWORD)?, ops: table }))
}

/// One request over a connection from `from`; the status and the whole answer.
async fn raw(from: IpAddr, to: SocketAddr, request: &str) -> Result<(u16, String)> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(from, 0))?;
    let mut stream = socket.connect(to).await?;
    stream.write_all(request.as_bytes()).await?;
    let mut out = Vec::new();
    tokio::time::timeout(T, stream.read_to_end(&mut out)).await.context("no answer")??;
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text.split(' ').nth(1).and_then(|s| s.parse().ok()).with_context(|| format!("{text:?}"))?;
    Ok((status, text))
}

fn get(path: &str, host: &str, headers: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n{headers}Connection: close\r\n\r\n")
}

fn post_json(path: &str, host: &str, headers: &str, body: &str) -> String {
    format!(
        "POST {path} HTTP/1.1\r\nHost: {host}\r\n{headers}Content-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

fn addr_of(url: &str) -> Result<SocketAddr> {
    url.trim_start_matches("http://")
        .trim_end_matches('/')
        .parse()
        .with_context(|| format!("not host:port: {url}"))
}

fn num(stats: &Value, key: &str) -> u64 {
    stats.get(key).and_then(Value::as_f64).unwrap_or(0.0) as u64
}

/// Opens `url`, logs in through the page's form as `anna` and waits for
/// `FRAMES` decoded frames; returns how long that took from the login.
pub(super) async fn log_in_and_play(browser: &Chromium, url: &str) -> Result<Duration> {
    browser.navigate(url).await?;
    ponte_tests::wait_until("the login form", T, Duration::from_millis(50), || async {
        Ok((browser.eval("!document.getElementById('login').hidden").await? == true).then_some(()))
    })
    .await?;
    let start = Instant::now();
    browser
        .eval(&format!(
            "(() => {{ document.getElementById('login-user').value = 'anna'; \
               document.getElementById('login-password').value = {}; \
               document.getElementById('login-form').requestSubmit(); return true; }})()",
            serde_json::to_string(ANNA_PASSWORD)?
        ))
        .await?;
    let stats = "(async () => { const v = window.ponteViewer; \
                 if (!v || typeof v.stats !== 'function') return null; return (await v.stats()) ?? null; })()";
    let mut last = Value::Null;
    while num(&last, "framesDecoded") < FRAMES {
        if start.elapsed() > T {
            let state = browser.eval("window.ponteViewer.state()").await.unwrap_or_default();
            bail!("{last} {T:?} after logging in; state {state}; console:\n{}", browser.console().join("\n"));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        last = browser.eval(stats).await.unwrap_or_default();
    }
    Ok(start.elapsed())
}

/// What became of one slowloris connection.
#[derive(Debug, Clone, Copy)]
struct Slow {
    /// How long it stayed open.
    open: Duration,
    /// Whether the server answered 503 (over a connection cap).
    refused: bool,
}

/// One slowloris connection from `ATTACKER`: a request head sent one byte
/// every 500 ms, never finished; returns once the server closes it.
async fn slow_connection(to: SocketAddr) -> Result<Slow> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(ATTACKER, 0))?;
    let mut stream = socket.connect(to).await?;
    let opened = Instant::now();
    let head = format!("GET / HTTP/1.1\r\nHost: {to}\r\nX-Padding: ");
    stream.write_all(head.as_bytes()).await?;
    let mut got = Vec::new();
    let mut buf = [0u8; 512];
    loop {
        match tokio::time::timeout(Duration::from_millis(500), stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            Err(_) => {
                if stream.write_all(b"a").await.is_err() {
                    break;
                }
            }
        }
        if opened.elapsed() > Duration::from_secs(60) {
            bail!("a slow connection stayed open for 60 s");
        }
    }
    Ok(Slow { open: opened.elapsed(), refused: got.starts_with(b"HTTP/1.1 503") })
}

/// A slowloris of 300 connections from 127.0.0.2 against a relay with 256
/// file descriptors (systemd's default soft limit is 1024: the attack
/// scaled to it). Meanwhile a browser on 127.0.0.1 logs in through the
/// page and decodes video. The relay keeps 64 of the slow connections (the
/// per-client cap), answers the rest 503 at once, and the header-read
/// timeout (10 s by default) closes the 64; the attacker reopens what is
/// closed, for as long as the browser needs.
#[tokio::test]
async fn slowloris_from_one_address_does_not_stop_a_login_and_play() -> Result<()> {
    let _heavy = ponte_tests::e2e_lock();
    if !ponte_tests::require_program(Chromium::binary(), "chromium") {
        return Ok(());
    }
    let (ops, accounts) = relay_accounts()?;
    let mut stack = Stack::start_with(StackSpec {
        devices: Device::zaist_and_po(),
        relay: accounts.tweak(),
        catalog_token: Some(ops),
        ..StackSpec::default()
    })
    .await?;
    let fds = stack.relay.open_fds()?;
    let limit = libc::rlimit { rlim_cur: 256, rlim_max: 256 };
    // SAFETY: prlimit on the relay child's pid with a valid rlimit.
    let rc = unsafe {
        libc::prlimit(stack.relay.pid() as libc::pid_t, libc::RLIMIT_NOFILE, &limit, std::ptr::null_mut())
    };
    anyhow::ensure!(rc == 0, "prlimit: {}", std::io::Error::last_os_error());
    let to = addr_of(&stack.base_url())?;
    let browser = Chromium::launch().await?;

    let attacking = Arc::new(AtomicBool::new(true));
    let outcomes = Arc::new(Mutex::new(Vec::<Slow>::new()));
    let started = Instant::now();
    let mut attackers = Vec::new();
    for _ in 0..300 {
        let (attacking, outcomes) = (attacking.clone(), outcomes.clone());
        attackers.push(tokio::spawn(async move {
            while attacking.load(Ordering::Relaxed) {
                match slow_connection(to).await {
                    Ok(slow) => outcomes.lock().unwrap_or_else(|e| e.into_inner()).push(slow),
                    Err(e) => eprintln!("slow connection: {e:#}"),
                }
                // Reopen, as a slowloris does (not as fast as it can: that is another attack).
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let during = stack.relay.open_fds()?;
    let played = log_in_and_play(&browser, &format!("{}/?camera=zaist-mantova", stack.base_url())).await;
    let played_at = started.elapsed();
    // Let the first held connections meet the read timeout.
    tokio::time::sleep(Duration::from_secs(12).saturating_sub(started.elapsed())).await;
    attacking.store(false, Ordering::Relaxed);
    let outcomes = outcomes.lock().unwrap_or_else(|e| e.into_inner()).clone();
    for a in attackers {
        a.abort();
    }
    let refused = outcomes.iter().filter(|s| s.refused).count();
    let cut: Vec<Duration> = outcomes.iter().filter(|s| !s.refused).map(|s| s.open).collect();
    println!(
        "figure: slowloris 300 connections from {ATTACKER}: relay fds {fds} before, {during} during (limit 256); \
         {refused} answered 503 at once, {} held then cut after {:.1}..{:.1} s; browser on 127.0.0.1 logged in \
         and decoded {FRAMES} frames in {:.0} ms (done {:.1} s into the attack)",
        cut.len(),
        cut.iter().min().unwrap_or(&Duration::ZERO).as_secs_f64(),
        cut.iter().max().unwrap_or(&Duration::ZERO).as_secs_f64(),
        played.as_ref().map(|d| d.as_secs_f64() * 1e3).unwrap_or(f64::NAN),
        played_at.as_secs_f64()
    );
    let played = played.context("the browser could not log in and play during the slowloris")?;
    assert!(played < Duration::from_secs(10), "login to {FRAMES} frames took {played:?}");
    assert!(refused >= 300 - 64, "connections over the per-client cap are refused at once: {refused}");
    assert!(
        outcomes.iter().filter(|s| s.refused).all(|s| s.open < Duration::from_secs(2)),
        "a refused connection is closed at once"
    );
    assert!(!cut.is_empty(), "the held connections are closed by the read timeout");
    assert!(
        cut.iter().all(|d| *d >= Duration::from_secs(9) && *d < Duration::from_secs(13)),
        "held slow connections close at the 10 s read timeout: {cut:?}"
    );
    assert!(stack.relay.try_exit()?.is_none(), "the relay is still running");
    Ok(())
}

/// Decodes received frames (parameter sets from the first keyframe's GOP
/// header, then every frame from it on) with ffmpeg; frames decoded.
async fn ffmpeg_decodes(dir: &std::path::Path, frames: &[ReceivedFrame]) -> Result<usize> {
    let from = frames.iter().position(|f| f.keyframe).context("no keyframe received")?;
    let mut annexb = Vec::new();
    for ps in &frames[from].config.parameter_sets {
        annexb.extend_from_slice(&[0, 0, 0, 1]);
        annexb.extend_from_slice(ps);
    }
    for f in &frames[from..] {
        annexb.extend_from_slice(&f.payload);
    }
    let path = dir.join("partner.h264");
    std::fs::write(&path, &annexb)?;
    let out = tokio::process::Command::new("/usr/bin/ffmpeg")
        .args(["-v", "error", "-f", "h264", "-i"])
        .arg(&path)
        .args(["-f", "framecrc", "-"])
        .output()
        .await
        .context("running ffmpeg")?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    anyhow::ensure!(out.status.success() && stderr.trim().is_empty(), "ffmpeg: {stderr}");
    Ok(String::from_utf8_lossy(&out.stdout).lines().filter(|l| !l.starts_with('#') && !l.is_empty()).count())
}

fn agent_audit(pki: &Pki) -> Result<Vec<Value>> {
    let text = std::fs::read_to_string(pki.dir().join("agent-audit.log"))?;
    text.lines().map(|l| serde_json::from_str(l).with_context(|| format!("audit line {l}"))).collect()
}

/// Anyone who reaches the agent's management port used to steer every dome
/// at top priority (pre-empting the partner sites) and name any operator in
/// the audit with `?operator=`. From 127.0.0.2: no credential, a wrong
/// password, a wrong token, `?operator=sala`, reading the holders: 401,
/// each audited, the camera hears nothing, the site keeps its lock and the
/// partner relay's stream keeps arriving and decoding; the brake then holds
/// even the right password from that address. The real operator on
/// 127.0.0.1 steers, and the audit names who authenticated.
#[tokio::test]
async fn ptz_api_without_an_operator_credential_is_refused() -> Result<()> {
    let _heavy = ponte_tests::e2e_lock();
    if !require_onvif_camera() || !ponte_tests::require_program("/usr/bin/ffmpeg", "ffmpeg") {
        return Ok(());
    }
    let dir = tempfile::tempdir()?;
    let pki = Pki::create(dir.path().join("pki"), &["master", "carabinieri"]).await?;
    let camera = OnvifCamera::start("admin", "secret").await?;
    let relay = FakeRelay::listen(&pki, "carabinieri")?;
    let mut devices = Device::zaist_and_po();
    devices[0].onvif = Some(camera.settings("admin", "secret"));
    let (token, script) = ponte_tests::operator_token("script")?;
    let sala = ponte_tests::operator_password("sala", SALA_PASSWORD)?;
    let mut cfg = relay.agent_config(&pki, devices)?;
    cfg.ptz.lock_idle_secs = 30;
    cfg.ptz.deadman_ms = 5000;
    cfg.sites = ptz_sites();
    cfg.operators = vec![sala, script];
    let (mut agent, _) = relay.spawn_agent_with(dir.path(), &cfg, &[])?;
    let mgmt = addr_of(&agent.management_url(T).await?)?;
    let mut site = relay.accept().await?;
    let mut frames = site.collect_media();
    anyhow::ensure!(
        site.subscribe(1, "po-lungofiume", Quality::Main).await? == ponte_tests::quic::Answer::Ok
    );
    let reply =
        site.ptz(1, "zaist-mantova", "rossi", PtzCommand::Move { pan: 500, tilt: 0, zoom: 0 }).await?;
    assert!(matches!(reply, PtzReply::Done { .. }), "{reply:?}");
    let (_, holder) = site.next_ptz_lock().await?;
    assert_eq!(holder.map(|h| h.controller.label()), Some("rossi@carabinieri".into()));
    camera.wait_for(T, |ops| ops.iter().any(|o| o.op.as_deref() == Some("ContinuousMove"))).await?;
    let before = camera.recorded().await?.len();

    let host = mgmt.to_string();
    let basic = |user: &str, password: &str| {
        use base64::Engine as _;
        let pair = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        format!("Authorization: Basic {pair}\r\n")
    };
    let take_over = r#"{"op":"move","pan":-300}"#;
    let attacks = [
        post_json("/api/ptz/zaist-mantova?operator=sala", &host, "", take_over),
        post_json("/api/ptz/zaist-mantova", &host, &basic("sala", "wrong-password"), take_over),
        post_json("/api/ptz/zaist-mantova", &host, "Authorization: Bearer 0123456789abcdef\r\n", take_over),
        post_json("/api/ptz/zaist-mantova", &host, &basic("mallory", SALA_PASSWORD), take_over),
        get("/api/ptz", &host, ""),
    ];
    let t = Instant::now();
    let answers = futures_util::future::join_all(attacks.iter().map(|req| raw(ATTACKER, mgmt, req))).await;
    for (req, answer) in attacks.iter().zip(answers) {
        let (status, text) = answer?;
        assert_eq!(status, 401, "{req}\n{text}");
        assert!(text.contains("operator credential"), "{text}");
    }
    let refusals_took = t.elapsed();
    // The brake now holds that address, whatever it sends.
    let (status, text) = raw(
        ATTACKER,
        mgmt,
        &post_json("/api/ptz/zaist-mantova", &host, &basic("sala", SALA_PASSWORD), take_over),
    )
    .await?;
    assert_eq!(status, 429, "{text}");

    // Nothing reached the camera; the site still holds the dome; its stream ran on.
    let ops = camera.recorded().await?;
    let leaked: Vec<_> = ops[before..].iter().filter(|o| o.pan.is_some_and(|p| p < 0.0)).collect();
    assert!(leaked.is_empty(), "a refused command reached the camera: {leaked:?}");
    let local = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let (status, list) =
        raw(local, mgmt, &get("/api/ptz", &host, &format!("Authorization: Bearer {token}\r\n"))).await?;
    assert_eq!(status, 200, "{list}");
    assert!(
        list.contains(r#""viewer":"rossi""#) && list.contains(r#""site":"carabinieri""#),
        "the site keeps the dome: {list}"
    );
    let mut received = Vec::new();
    while let Ok(f) = frames.try_recv() {
        received.push(f);
    }
    let window = t.elapsed();
    let during = received.iter().filter(|f| f.at >= t).count();
    let decoded = ffmpeg_decodes(dir.path(), &received).await?;
    assert!(during >= 15, "the partner's stream kept arriving: {during} frames in {window:?}");
    assert!(decoded >= during, "the frames of the attack window decode: {decoded} of {}", received.len());

    // Every refusal is audited, naming what was claimed and from where.
    let lines = agent_audit(&pki)?;
    let logins: Vec<&Value> = lines.iter().filter(|l| l["action"] == "login").collect();
    let refused = |outcome: &str, viewer: &str, why: &str| {
        logins.iter().any(|l| {
            l["outcome"] == outcome
                && l["viewer"] == viewer
                && l["site"] == "master"
                && l["client"] == ATTACKER.to_string()
                && l["reason"].as_str().is_some_and(|r| r.contains(why))
        })
    };
    assert!(refused("refused", "?", "no credential"), "{logins:#?}");
    assert!(refused("failed", "sala", "wrong password"), "{logins:#?}");
    assert!(refused("failed", "?", "unknown token"), "{logins:#?}");
    assert!(refused("failed", "mallory", "unknown operator"), "{logins:#?}");
    assert!(refused("throttled", "?", "braked"), "{logins:#?}");
    assert!(!lines.iter().any(|l| l["action"] == "ptz" && l["site"] == "master"), "no master command ran");

    // The operator on 127.0.0.1 steers; the audit names who authenticated, not the query.
    let as_sala =
        post_json("/api/ptz/zaist-mantova?operator=mallory", &host, &basic("sala", SALA_PASSWORD), take_over);
    let (status, text) = raw(local, mgmt, &as_sala).await?;
    assert_eq!(status, 200, "{text}");
    assert!(text.contains(r#""viewer":"sala""#) && text.contains(r#""site":"master""#), "{text}");
    camera.wait_for(T, |ops| ops.iter().any(|o| o.pan == Some(-0.3))).await?;
    // sala hands the dome over; the token operator (a script) takes it.
    let release =
        post_json("/api/ptz/zaist-mantova", &host, &basic("sala", SALA_PASSWORD), r#"{"op":"release"}"#);
    let (status, text) = raw(local, mgmt, &release).await?;
    assert_eq!(status, 200, "{text}");
    let bearer = format!("Authorization: Bearer {token}\r\n");
    let (status, text) =
        raw(local, mgmt, &post_json("/api/ptz/zaist-mantova", &host, &bearer, take_over)).await?;
    assert_eq!(status, 200, "{text}");
    assert!(text.contains(r#""viewer":"script""#), "{text}");
    let lines = agent_audit(&pki)?;
    let master: Vec<&Value> =
        lines.iter().filter(|l| l["action"] == "ptz" && l["site"] == "master").collect();
    assert!(master.iter().any(|l| l["viewer"] == "sala" && l["outcome"] == "allowed"), "{master:#?}");
    assert!(master.iter().any(|l| l["viewer"] == "script"), "{master:#?}");
    assert!(!lines.iter().any(|l| l.to_string().contains("mallory") && l["action"] == "ptz"), "{master:#?}");
    println!(
        "figure: 5 unauthenticated PTZ requests refused in {:.0} ms (1 s failure delay each, in parallel); \
         partner stream: {during} frames during the attack, {decoded} decoded by ffmpeg",
        refusals_took.as_secs_f64() * 1e3
    );
    assert!(agent.try_exit()?.is_none(), "the agent is still running");
    Ok(())
}

/// A web page an operator opens can rebind its own name to a ponte port
/// and read the answers (the catalog, the status, the PTZ holders). Each
/// of the three HTTP servers answers `Host: evil.example` with 421, while
/// requests by the address or `localhost` pass, the status CLI still works
/// and a browser on `http://localhost:PORT/` logs in and plays.
#[tokio::test]
async fn dns_rebinding_host_is_refused_on_every_http_port() -> Result<()> {
    let _heavy = ponte_tests::e2e_lock();
    if !ponte_tests::require_program(Chromium::binary(), "chromium") {
        return Ok(());
    }
    let (ops, accounts) = relay_accounts()?;
    let (token, operator) = ponte_tests::operator_token("sala")?;
    let mut stack = Stack::start_with(StackSpec {
        devices: Device::zaist_and_po(),
        relay: accounts.tweak(),
        agent: Tweak::agent(move |agent| agent.operators = vec![operator.clone()]),
        catalog_token: Some(ops.clone()),
        ..StackSpec::default()
    })
    .await?;
    let viewer = addr_of(&stack.base_url())?;
    let relay_mgmt_url = stack.relay.management_url(T).await?;
    let relay_mgmt = addr_of(&relay_mgmt_url)?;
    let agent_mgmt = addr_of(&stack.agent.management_url(T).await?)?;
    let bearer = |t: &str| format!("Authorization: Bearer {t}\r\n");
    let ports = [
        ("viewer page", viewer, "/api/catalog", bearer(&ops), "relay.http_allowed_hosts"),
        ("relay management", relay_mgmt, "/status", String::new(), "management.allowed_hosts"),
        ("agent management", agent_mgmt, "/status", String::new(), "management.allowed_hosts"),
        ("agent PTZ API", agent_mgmt, "/api/ptz", bearer(&token), "management.allowed_hosts"),
    ];
    let local = IpAddr::V4(Ipv4Addr::LOCALHOST);
    for (name, addr, path, auth, key) in &ports {
        for evil in ["evil.example", &format!("evil.example:{}", addr.port())] {
            let (status, text) = raw(local, *addr, &get(path, evil, auth)).await?;
            assert_eq!(status, 421, "{name} with Host {evil}: {text}");
            assert!(text.contains(key), "{name}: the answer names `{key}`: {text}");
            assert!(!text.contains("\"cameras\"") && !text.contains("\"site\""), "{name} leaked: {text}");
        }
        for good in [addr.to_string(), format!("localhost:{}", addr.port())] {
            let (status, text) = raw(local, *addr, &get(path, &good, auth)).await?;
            assert_eq!(status, 200, "{name} with Host {good}: {text}");
        }
    }
    // The status CLI (which sends `Host: 127.0.0.1:PORT`) still reads the relay: exit 0 once sampled.
    let relay_bin = ponte_tests::bin_path("ponte-relay")?;
    ponte_tests::wait_until("`ponte-relay status` to exit 0", T, Duration::from_millis(300), || async {
        let out =
            std::process::Command::new(&relay_bin).args(["status", "--url", &relay_mgmt_url]).output()?;
        let text =
            format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        match out.status.code() {
            Some(0) => Ok(Some(())),
            code => bail!("exit {code:?}: {text}"),
        }
    })
    .await?;
    let browser = Chromium::launch().await?;
    let played =
        log_in_and_play(&browser, &format!("http://localhost:{}/?camera=zaist-mantova", viewer.port()))
            .await?;
    println!(
        "figure: Host evil.example refused with 421 on 3 ports (4 route groups); a browser on localhost \
         logged in and decoded {FRAMES} frames in {:.0} ms",
        played.as_secs_f64() * 1e3
    );
    for p in [&mut stack.relay, &mut stack.agent] {
        assert!(p.try_exit()?.is_none(), "{} exited", p.label());
    }
    Ok(())
}
