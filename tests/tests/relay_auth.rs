//! Relay-local viewers end to end: accounts and tokens made by the real
//! `ponte-relay passwd` / `ponte-relay token`, a real relay fed by a real
//! agent, the login form in a real Chromium, and the relay's audit log
//! checked by `ponte-relay audit verify`.

use anyhow::{bail, Context, Result};
use ponte_relay::auth::{TokenConfig, ViewerConfig};
use ponte_tests::{
    catalog_camera_ids, free_tcp_port, http_request, relay_cli, relay_digest_viewer, relay_token,
    relay_viewer, Chromium, Device, DeviceExt, HttpResponse, RelayConfig, Stack, StackSpec, Tweak,
};
use serde_json::Value;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};

/// Timeout of one request (a failed login alone takes 1 s).
const T: Duration = Duration::from_secs(10);
/// Frames the browser must decode.
const FRAMES: u64 = 30;
/// Budget from submitting the login form to `FRAMES` decoded frames.
const PLAY_TIMEOUT: Duration = Duration::from_secs(20);

const ZAIST_PASSWORD: &str = "rotatoria-mantova-2026";
const ANNA_PASSWORD: &str = "torrazzo-112-metri";
const NVR_PASSWORD: &str = "registratore-sala-2";

/// The accounts of the test relay, made with the real CLI.
struct Accounts {
    /// Unrestricted token the harness uses to see the catalog fill.
    ops: String,
    /// The site's VMS: `po-lungofiume` only.
    vms: String,
    /// The control room's video wall: `cameras = ["*"]`, the whole site as
    /// the deploy examples write it.
    wall: String,
    /// The `[[viewer]]` and `[[token]]` tables, by name.
    tables: Tables,
}

#[derive(Clone)]
struct Tables {
    anna: ViewerConfig,
    zaist: ViewerConfig,
    ops: TokenConfig,
    /// `po-lungofiume` only.
    vms: TokenConfig,
    /// The site's video recorder, an RTSP Digest account: `po-lungofiume` only.
    nvr: ViewerConfig,
    /// `cameras = ["*"]`.
    wall: TokenConfig,
}

impl Tables {
    /// Every account on `relay`.
    fn add_to(&self, relay: &mut RelayConfig) {
        for v in [&self.anna, &self.zaist, &self.nvr] {
            relay.viewer(v.clone());
        }
        for t in [&self.ops, &self.vms, &self.wall] {
            relay.token(t.clone());
        }
    }
}

fn accounts() -> Result<Accounts> {
    let po = || Some(vec!["camera:po-lungofiume".to_owned()]);
    let (ops, ops_table) = relay_token("ops")?;
    let (vms, mut vms_table) = relay_token("vms")?;
    vms_table.cameras = po();
    let (wall, mut wall_table) = relay_token("wall")?;
    wall_table.cameras = Some(vec!["*".into()]);
    let mut zaist = relay_viewer("zaist", ZAIST_PASSWORD)?;
    zaist.cameras = Some(vec!["zone:Zaist".into()]);
    let mut nvr = relay_digest_viewer("nvr", NVR_PASSWORD)?;
    nvr.cameras = po();
    let tables = Tables {
        anna: relay_viewer("anna", ANNA_PASSWORD)?,
        zaist,
        ops: ops_table,
        vms: vms_table,
        nvr,
        wall: wall_table,
    };
    Ok(Accounts { ops, vms, wall, tables })
}

async fn start() -> Result<(Stack, Accounts)> {
    start_with(None).await
}

/// The stack with the test accounts, and an RTSP server on `rtsp_port`
/// (TCP only) if given.
async fn start_with(rtsp_port: Option<u16>) -> Result<(Stack, Accounts)> {
    let accounts = accounts()?;
    let tables = accounts.tables.clone();
    let stack = Stack::start_with(StackSpec {
        devices: Device::zaist_and_po(),
        relay: Tweak::relay(move |relay| {
            tables.add_to(relay);
            if let Some(port) = rtsp_port {
                relay.rtsp_on(port).udp = false;
            }
        }),
        catalog_token: Some(accounts.ops.clone()),
        ..StackSpec::default()
    })
    .await?;
    Ok((stack, accounts))
}

async fn request(
    stack: &Stack,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> HttpResponse {
    let url = format!("{}{path}", stack.base_url());
    match http_request(method, &url, headers, body, T).await {
        Ok(resp) => resp,
        Err(e) => panic!("{method} {path}: {e:#}"),
    }
}

/// `POST /login`; returns the response and the `name=value` of its cookie.
async fn login(stack: &Stack, user: &str, password: &str) -> (HttpResponse, Option<String>) {
    let form = format!("user={user}&password={password}");
    let resp = request(
        stack,
        "POST",
        "/login",
        &[("Content-Type", "application/x-www-form-urlencoded")],
        form.as_bytes(),
    )
    .await;
    let cookie = resp.header("set-cookie").and_then(|c| c.split(';').next()).map(str::to_owned);
    (resp, cookie)
}

fn ids(resp: &HttpResponse) -> Vec<String> {
    let json = resp.json().unwrap_or(Value::Null);
    catalog_camera_ids(&json).unwrap_or_else(|e| panic!("{e:#}: {}", resp.text()))
}

/// The relay's audit log as JSON values.
fn audit_lines(stack: &Stack) -> Result<Vec<Value>> {
    let path = stack.relay_config.audit_path();
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    text.lines().map(|l| serde_json::from_str(l).with_context(|| format!("audit line {l}"))).collect()
}

fn has_line(lines: &[Value], action: &str, outcome: &str, viewer: &str, camera: Option<&str>) -> bool {
    lines.iter().any(|l| {
        l["action"] == action
            && l["outcome"] == outcome
            && l["viewer"] == viewer
            && camera.is_none_or(|c| l["camera"] == c)
    })
}

/// `ponte-relay audit verify` on the relay's log: passes, and counts every line.
fn verify_audit(stack: &Stack) -> Result<()> {
    let path = stack.relay_config.audit_path();
    let out = relay_cli(&["audit", "verify", &path.to_string_lossy()], "")?;
    let lines = audit_lines(stack)?.len();
    assert!(out.contains(&format!("intact: {lines} lines")), "{out}");
    // One edited byte is found, on its line.
    let text = std::fs::read_to_string(&path)?;
    let last_line_start = text.trim_end().rfind('\n').map_or(0, |i| i + 1);
    let at = last_line_start + text[last_line_start..].find("\"time\":\"").context("a time field")? + 8;
    let mut bytes = text.into_bytes();
    // The year's first digit: the line stays valid JSON, only its hash no longer fits.
    bytes[at] = if bytes[at] == b'2' { b'3' } else { b'2' };
    let tampered = path.with_extension("tampered");
    std::fs::write(&tampered, &bytes)?;
    let err = relay_cli(&["audit", "verify", &tampered.to_string_lossy()], "").unwrap_err();
    assert!(format!("{err:#}").contains(&format!(":{lines}: ")), "{err:#}");
    Ok(())
}

#[tokio::test]
async fn accounts_gate_the_catalog_and_whep_and_refusals_are_audited() -> Result<()> {
    let _heavy = ponte_tests::e2e_lock();
    let started = Instant::now();
    let (stack, accounts) = start().await?;
    let sdp = ("Content-Type", "application/sdp");

    // Nobody logged in: 401 everywhere but the page.
    assert_eq!(request(&stack, "GET", "/", &[], b"").await.status, 200);
    for (method, path) in [("GET", "/api/catalog"), ("POST", "/whep/zaist-mantova"), ("GET", "/api/status")] {
        let resp = request(&stack, method, path, &[sdp], b"v=0\r\n").await;
        assert_eq!(resp.status, 401, "{method} {path}: {}", resp.text());
    }

    // A wrong password: 401 after a delay, no cookie, and an audit line.
    let t = Instant::now();
    let (resp, cookie) = login(&stack, "zaist", "wrong-password").await;
    assert_eq!(resp.status, 401, "{}", resp.text());
    assert!(cookie.is_none());
    assert!(t.elapsed() >= Duration::from_millis(900), "a failed login costs a delay");
    let lines = audit_lines(&stack)?;
    assert!(has_line(&lines, "login", "failed", "zaist", None), "{lines:?}");
    assert!(!lines.iter().any(|l| l.to_string().contains("wrong-password")), "no password in the audit");

    // The narrowed viewer sees only its zone; the other camera is 404 as if it did not exist.
    let (resp, cookie) = login(&stack, "zaist", ZAIST_PASSWORD).await;
    assert_eq!(resp.status, 204, "{}", resp.text());
    let cookie = cookie.context("login sets a cookie")?;
    let set_cookie = resp.header("set-cookie").unwrap_or_default();
    assert!(set_cookie.contains("HttpOnly") && set_cookie.contains("SameSite=Strict"), "{set_cookie}");
    let as_zaist = ("Cookie", cookie.as_str());
    let catalog = request(&stack, "GET", "/api/catalog", &[as_zaist], b"").await;
    assert_eq!(ids(&catalog), ["zaist-mantova"]);
    let outside = request(&stack, "POST", "/whep/po-lungofiume", &[as_zaist, sdp], b"v=0\r\n").await;
    assert_eq!(outside.status, 404, "{}", outside.text());
    // The unrestricted viewer sees both.
    let (_, anna) = login(&stack, "anna", ANNA_PASSWORD).await;
    let anna = anna.context("anna's cookie")?;
    assert_eq!(ids(&request(&stack, "GET", "/api/catalog", &[("Cookie", &anna)], b"").await).len(), 2);

    // The VMS token: its camera only; it passes the gate (the bad SDP is the next complaint).
    let bearer = format!("Bearer {}", accounts.vms);
    let as_vms = ("Authorization", bearer.as_str());
    assert_eq!(ids(&request(&stack, "GET", "/api/catalog", &[as_vms], b"").await), ["po-lungofiume"]);
    assert_eq!(request(&stack, "POST", "/whep/zaist-mantova", &[as_vms, sdp], b"v=0\r\n").await.status, 404);
    let resp = request(&stack, "POST", "/whep/po-lungofiume", &[as_vms, sdp], b"not sdp").await;
    assert_eq!(resp.status, 400, "{}", resp.text());
    let wrong = ("Authorization", "Bearer 0123456789abcdef");
    assert_eq!(request(&stack, "GET", "/api/catalog", &[wrong], b"").await.status, 401);
    let ops = format!("Bearer {}", accounts.ops);
    assert_eq!(request(&stack, "GET", "/api/status", &[("Authorization", &ops)], b"").await.status, 200);
    // `cameras = ["*"]` is the whole site too: it sees the status.
    let wall = format!("Bearer {}", accounts.wall);
    let resp = request(&stack, "GET", "/api/status", &[("Authorization", &wall)], b"").await;
    assert_eq!(resp.status, 200, "a `cameras = [\"*\"]` token: {}", resp.text());

    // The status shows the whole site: not for a narrowed viewer.
    assert_eq!(request(&stack, "GET", "/api/status", &[as_zaist], b"").await.status, 403);
    assert_eq!(request(&stack, "GET", "/api/status", &[("Cookie", &anna)], b"").await.status, 200);

    // Logging out ends the session.
    assert_eq!(request(&stack, "POST", "/logout", &[as_zaist], b"").await.status, 204);
    assert_eq!(request(&stack, "GET", "/api/catalog", &[as_zaist], b"").await.status, 401);

    let lines = audit_lines(&stack)?;
    assert!(has_line(&lines, "login", "ok", "zaist", None), "{lines:?}");
    assert!(has_line(&lines, "refused", "unknown", "zaist", Some("po-lungofiume")), "{lines:?}");
    assert!(has_line(&lines, "refused", "unknown", "vms", Some("zaist-mantova")), "{lines:?}");
    assert!(has_line(&lines, "login", "failed", "?", None), "the wrong token: {lines:?}");
    assert!(has_line(&lines, "logout", "ok", "zaist", None), "{lines:?}");
    verify_audit(&stack)?;
    eprintln!("accounts test: {:.1} s", started.elapsed().as_secs_f64());
    Ok(())
}

/// `window.ponteViewer.stats()`, or null while the page is not ready.
const STATS_JS: &str = "(async () => { \
    const v = window.ponteViewer; \
    if (!v || typeof v.stats !== 'function') return null; \
    return (await v.stats()) ?? null; })()";

/// A recvonly offer made by the browser itself, for a WHEP request of our own.
const OFFER_JS: &str = "(async () => { \
    const pc = new RTCPeerConnection(); \
    pc.addTransceiver('video', { direction: 'recvonly' }); \
    await pc.setLocalDescription(await pc.createOffer()); \
    await new Promise((done) => { \
        if (pc.iceGatheringState === 'complete') return done(); \
        pc.addEventListener('icegatheringstatechange', () => { \
            if (pc.iceGatheringState === 'complete') done(); }); \
        setTimeout(done, 3000); }); \
    window.probePeer = pc; \
    return pc.localDescription.sdp; })()";

fn num(stats: &Value, key: &str) -> u64 {
    stats.get(key).and_then(Value::as_f64).unwrap_or(0.0) as u64
}

/// Opens the deep link to `camera` logged out, fills the page's login form
/// as a person would and waits until `FRAMES` frames are decoded; returns
/// the player's stats.
async fn log_in_and_play(
    browser: &Chromium,
    stack: &Stack,
    user: &str,
    password: &str,
    camera: &str,
) -> Result<Value> {
    browser.navigate(&format!("{}/?camera={camera}", stack.base_url())).await?;
    browser.submit_login(user, password).await?;
    let start = Instant::now();
    let mut last = Value::Null;
    while num(&last, "framesDecoded") < FRAMES {
        if start.elapsed() > PLAY_TIMEOUT {
            let state = browser.eval("window.ponteViewer.state()").await.unwrap_or_default();
            bail!(
                "{} frames decoded {PLAY_TIMEOUT:?} after logging in; stats {last}; state {state}; console:\n{}",
                num(&last, "framesDecoded"),
                browser.console().join("\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        last = browser.eval(STATS_JS).await.unwrap_or_default();
    }
    eprintln!(
        "{user} logged in and decoded {FRAMES} frames in {:.0} ms: {last}",
        start.elapsed().as_secs_f64() * 1e3
    );
    Ok(last)
}

#[tokio::test]
async fn browser_logs_in_through_the_form_and_plays_its_camera() -> Result<()> {
    let _heavy = ponte_tests::e2e_lock();
    if !ponte_tests::require_program(Chromium::binary(), "chromium") {
        return Ok(());
    }
    let (mut stack, accounts) = start().await?;
    let browser = Chromium::launch().await?;

    let last = log_in_and_play(&browser, &stack, "zaist", ZAIST_PASSWORD, "zaist-mantova").await?;
    assert_eq!((num(&last, "frameWidth"), num(&last, "frameHeight")), (640, 360), "{last}");

    // The page lists only the viewer's camera, and script cannot read the session cookie.
    let state = browser.eval("window.ponteViewer.state()").await?;
    assert_eq!(state["viewer"], "zaist", "{state}");
    assert_eq!(state["camera"], "zaist-mantova", "{state}");
    let listed = browser
        .eval("[...document.querySelectorAll('li[data-camera]')].map((li) => li.dataset.camera)")
        .await?;
    assert_eq!(listed, serde_json::json!(["zaist-mantova"]));
    let cookies = browser.eval("document.cookie").await?;
    assert!(!cookies.as_str().unwrap_or_default().contains("ponte_session"), "HttpOnly: {cookies}");

    // The VMS token opens a WHEP session of its own with a real browser offer;
    // only the token that opened it can end it.
    let offer = browser.eval(OFFER_JS).await?;
    let offer = offer.as_str().context("the browser made no offer")?;
    let vms = format!("Bearer {}", accounts.vms);
    let ops = format!("Bearer {}", accounts.ops);
    let sdp = ("Content-Type", "application/sdp");
    let resp =
        request(&stack, "POST", "/whep/po-lungofiume", &[("Authorization", &vms), sdp], offer.as_bytes())
            .await;
    assert_eq!(resp.status, 201, "{}", resp.text());
    let location = resp.header("location").context("Location of the WHEP session")?.to_owned();
    assert_eq!(request(&stack, "DELETE", &location, &[("Authorization", &ops)], b"").await.status, 404);
    assert_eq!(request(&stack, "DELETE", &location, &[("Authorization", &vms)], b"").await.status, 200);

    // Stopping in the page ends the browser's session: both viewings are audited.
    browser.eval("window.ponteViewer.stop()").await?;
    let lines = ponte_tests::wait_until("two view-stop lines", T, Duration::from_millis(100), || async {
        let lines = audit_lines(&stack)?;
        let stops = lines.iter().filter(|l| l["action"] == "view-stop").count();
        Ok((stops >= 2).then_some(lines))
    })
    .await?;
    assert!(has_line(&lines, "login", "ok", "zaist", None), "{lines:?}");
    for (viewer, camera) in [("zaist", "zaist-mantova"), ("vms", "po-lungofiume")] {
        let start = lines
            .iter()
            .find(|l| l["action"] == "view-start" && l["viewer"] == viewer && l["camera"] == camera)
            .with_context(|| format!("view-start of {viewer}: {lines:?}"))?;
        let stop = lines
            .iter()
            .find(|l| l["action"] == "view-stop" && l["session"] == start["session"])
            .with_context(|| format!("view-stop of {viewer}: {lines:?}"))?;
        assert_eq!(
            (&stop["viewer"], &stop["camera"], &stop["quality"]),
            (&start["viewer"], &start["camera"], &start["quality"])
        );
        assert!(stop["duration_ms"].as_u64().is_some(), "{stop}");
        eprintln!("audited: {start}\n         {stop}");
    }
    verify_audit(&stack)?;
    for p in [&mut stack.relay, &mut stack.agent] {
        assert!(p.try_exit()?.is_none(), "{} exited", p.label());
    }
    Ok(())
}

const FFMPEG: &str = "/usr/bin/ffmpeg";

/// A VMS or recorder reading one RTSP stream with ffmpeg (decoding to nowhere) until
/// the relay closes it or `secs` of video are read.
struct RtspReader {
    frames: Arc<AtomicU64>,
    done: tokio::task::JoinHandle<Result<(Instant, std::process::ExitStatus, String)>>,
}

impl RtspReader {
    fn start(url: &str, secs: u32) -> Result<RtspReader> {
        let mut child = ponte_tests::spawn_ffmpeg_reader(url, "tcp", secs)?;
        let frames = Arc::new(AtomicU64::new(0));
        let mut lines = BufReader::new(child.stdout.take().context("ffmpeg stdout")?).lines();
        let mut stderr = child.stderr.take().context("ffmpeg stderr")?;
        let counter = frames.clone();
        let done = tokio::spawn(async move {
            let errors = tokio::spawn(async move {
                let mut s = String::new();
                let _ = stderr.read_to_string(&mut s).await;
                s
            });
            while let Some(line) = lines.next_line().await? {
                if let Some(n) = line.strip_prefix("frame=").and_then(|v| v.trim().parse().ok()) {
                    counter.store(n, Ordering::Relaxed);
                }
            }
            let status = child.wait().await?;
            Ok((Instant::now(), status, errors.await.unwrap_or_default()))
        });
        Ok(RtspReader { frames, done })
    }

    fn frames(&self) -> u64 {
        self.frames.load(Ordering::Relaxed)
    }
}

/// `/api/status` as the unrestricted `ops` token sees it.
async fn status(stack: &Stack, accounts: &Accounts) -> Value {
    let ops = format!("Bearer {}", accounts.ops);
    request(stack, "GET", "/api/status", &[("Authorization", &ops)], b"").await.json().unwrap_or(Value::Null)
}

/// Ids of the live WHEP sessions in a status document.
fn whep_sessions(status: &Value) -> Vec<String> {
    let viewers = status["viewers"].as_array().cloned().unwrap_or_default();
    viewers.iter().filter_map(|v| v["id"].as_str().map(str::to_owned)).collect()
}

/// Polls Chromium's decoded-frame count until it has not moved for `quiet`;
/// returns when it last moved and the count.
async fn decoding_stops(browser: &Chromium, quiet: Duration) -> Result<(Instant, u64)> {
    let mut last = (Instant::now(), num(&browser.eval(STATS_JS).await?, "framesDecoded"));
    let deadline = Instant::now() + T;
    while last.0.elapsed() < quiet {
        if Instant::now() > deadline {
            bail!("Chromium never stopped decoding ({} frames)", last.1);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        let frames = num(&browser.eval(STATS_JS).await.unwrap_or_default(), "framesDecoded");
        if frames != last.1 {
            last = (Instant::now(), frames);
        }
    }
    Ok(last)
}

/// Accounts change under running streams: a browser logging out ends the
/// WHEP session it opened; `systemctl reload` (SIGHUP) with an account
/// removed and the recorder's account narrowed ends the removed viewer's
/// browser stream and cuts the recorder's RTSP connection to the camera it lost, and
/// nothing else; a broken config is refused and changes nothing.
#[tokio::test]
async fn reload_and_logout_end_exactly_the_streams_they_revoke() -> Result<()> {
    let _heavy = ponte_tests::e2e_lock();
    if !ponte_tests::require_program(Chromium::binary(), "chromium")
        || !ponte_tests::require_program(FFMPEG, "ffmpeg")
    {
        return Ok(());
    }
    let rtsp_port = free_tcp_port();
    let (mut stack, accounts) = start_with(Some(rtsp_port)).await?;
    let browser = Chromium::launch().await?;
    log_in_and_play(&browser, &stack, "zaist", ZAIST_PASSWORD, "zaist-mantova").await?;
    let rtsp_url = |camera: &str| format!("rtsp://nvr:{NVR_PASSWORD}@127.0.0.1:{rtsp_port}/{camera}");
    let vms = RtspReader::start(&rtsp_url("po-lungofiume"), 120)?;
    ponte_tests::wait_until("the recorder to decode", T, Duration::from_millis(50), || async {
        Ok((vms.frames() >= 15).then_some(()))
    })
    .await?;

    // Anna opens a WHEP session with a real browser offer, then logs out.
    let (_, anna) = login(&stack, "anna", ANNA_PASSWORD).await;
    let anna = anna.context("anna's cookie")?;
    let offer = browser.eval(OFFER_JS).await?;
    let offer = offer.as_str().context("the browser made no offer")?;
    let sdp = ("Content-Type", "application/sdp");
    let resp =
        request(&stack, "POST", "/whep/po-lungofiume", &[("Cookie", &anna), sdp], offer.as_bytes()).await;
    assert_eq!(resp.status, 201, "{}", resp.text());
    let location = resp.header("location").context("Location of the WHEP session")?;
    let anna_session = location.rsplit('/').next().unwrap_or_default().to_owned();
    // Status shows the first 8 characters of a session id, never the whole.
    let anna_shown: String = anna_session.chars().take(8).collect();
    assert!(whep_sessions(&status(&stack, &accounts).await).contains(&anna_shown));
    let zaist_frames = num(&browser.eval(STATS_JS).await?, "framesDecoded");
    let logout = Instant::now();
    assert_eq!(request(&stack, "POST", "/logout", &[("Cookie", &anna)], b"").await.status, 204);
    let ended =
        ponte_tests::wait_until("anna's WHEP session to end", T, Duration::from_millis(20), || async {
            Ok((!whep_sessions(&status(&stack, &accounts).await).contains(&anna_shown)).then(Instant::now))
        })
        .await?;
    let logout_ms = ended.duration_since(logout).as_secs_f64() * 1e3;
    let stop =
        ponte_tests::wait_until("the audit of anna's session", T, Duration::from_millis(50), || async {
            let lines = audit_lines(&stack)?;
            Ok(lines
                .into_iter()
                .find(|l| l["action"] == "view-stop" && l["session"] == anna_session.as_str()))
        })
        .await?;
    assert_eq!(stop["reason"], "access revoked: viewer `anna` logged out", "{stop}");
    assert_eq!(stop["viewer"], "anna", "{stop}");
    // Nobody else was touched.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(num(&browser.eval(STATS_JS).await?, "framesDecoded") > zaist_frames + 5, "zaist plays on");
    assert_eq!(whep_sessions(&status(&stack, &accounts).await).len(), 1, "zaist's session stays");
    let vms_frames = vms.frames();

    // Reload: zaist removed, the recorder narrowed to the camera it did not watch.
    let t = &accounts.tables;
    let mut cfg = stack.relay_config.clone();
    let mut nvr = t.nvr.clone();
    nvr.cameras = Some(vec!["camera:zaist-mantova".into()]);
    cfg.viewers = vec![t.anna.clone(), nvr];
    cfg.tokens = vec![t.ops.clone()];
    let relay_toml = stack.dir().join("relay.toml");
    cfg.write(&relay_toml)?;
    let hup = Instant::now();
    stack.relay.signal(libc::SIGHUP)?;
    let (vms_end, vms_status, vms_errors) = tokio::time::timeout(T, vms.done)
        .await
        .context("the recorder's RTSP connection was never cut")???;
    let (browser_stop, browser_frames) = decoding_stops(&browser, Duration::from_millis(1500)).await?;
    let rtsp_cut_ms = vms_end.duration_since(hup).as_secs_f64() * 1e3;
    let browser_ms = browser_stop.saturating_duration_since(hup).as_secs_f64() * 1e3;
    println!(
        "figure: access revocation: WHEP session gone {logout_ms:.0} ms after logout; after SIGHUP the recorder's \
         RTSP connection cut at {rtsp_cut_ms:.0} ms ({vms_frames}+ frames decoded before, ffmpeg {vms_status}), \
         the removed viewer's last frame decoded at {browser_ms:.0} ms ({browser_frames} frames in all)"
    );
    assert!(vms_frames >= 15, "the recorder decoded before the reload");
    assert!(rtsp_cut_ms < 2000.0, "RTSP cut {rtsp_cut_ms:.0} ms after SIGHUP; ffmpeg said: {vms_errors}");
    assert!(browser_ms < 2000.0, "the removed viewer stopped decoding {browser_ms:.0} ms after SIGHUP");
    assert!(whep_sessions(&status(&stack, &accounts).await).is_empty());
    let lines = audit_lines(&stack)?;
    let revoked = |viewer: &str, camera: &str| {
        lines.iter().find(|l| {
            l["action"] == "view-stop"
                && l["viewer"] == viewer
                && l["camera"] == camera
                && l["reason"].as_str().is_some_and(|r| r.starts_with("access revoked"))
        })
    };
    let zaist_stop = revoked("zaist", "zaist-mantova").with_context(|| format!("{lines:?}"))?;
    assert_eq!(
        zaist_stop["reason"],
        "access revoked: viewer `zaist` was removed from the relay's accounts, or its credentials changed"
    );
    revoked("nvr", "po-lungofiume").with_context(|| format!("the recorder's RTSP view-stop: {lines:?}"))?;

    // Narrowed, not removed: the recorder reads its new camera; its old one is refused.
    let narrowed = RtspReader::start(&rtsp_url("zaist-mantova"), 2)?;
    let (_, ok, errors) = tokio::time::timeout(T, narrowed.done).await???;
    assert!(ok.success() && narrowed.frames.load(Ordering::Relaxed) > 0, "{ok}: {errors}");
    let refused = RtspReader::start(&rtsp_url("po-lungofiume"), 2)?;
    let (_, status_old, _) = tokio::time::timeout(T, refused.done).await???;
    assert!(!status_old.success(), "the recorder may no longer read po-lungofiume");
    // Zaist can no longer log in; anna still can.
    assert_eq!(login(&stack, "zaist", ZAIST_PASSWORD).await.0.status, 401);
    assert_eq!(login(&stack, "anna", ANNA_PASSWORD).await.0.status, 204);

    // A broken config is refused; the running accounts stay (text no typed
    // config can hold).
    ponte_tests::raw_toml(&relay_toml, "[relay]\nsite = \"carabinieri\"\nnot toml at all")?;
    stack.relay.signal(libc::SIGHUP)?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(login(&stack, "anna", ANNA_PASSWORD).await.0.status, 204, "anna's account stays");
    for p in [&mut stack.relay, &mut stack.agent] {
        assert!(p.try_exit()?.is_none(), "{} exited", p.label());
    }
    verify_audit(&stack)?;
    Ok(())
}

/// Stops the relay and starts it again on the same config file; returns
/// once its viewer port answers.
async fn restart_relay(stack: &mut Stack) -> Result<()> {
    stack.relay.terminate(T).await?;
    let mut cmd = std::process::Command::new(ponte_tests::bin_path("ponte-relay")?);
    cmd.arg("run").arg("--config").arg(stack.dir().join("relay.toml")).env("RUST_LOG", "info");
    stack.relay = ponte_tests::Proc::spawn_command("ponte-relay", cmd)?;
    let base = stack.base_url();
    ponte_tests::wait_until("the restarted relay's viewer port", T, Duration::from_millis(50), || async {
        ponte_tests::http_get(&format!("{base}/")).await.map(Some)
    })
    .await?;
    Ok(())
}

/// The status of `GET /api/catalog` with `cookie`, at relay `base`.
async fn catalog_status(base: &str, cookie: &str) -> u16 {
    match http_request("GET", &format!("{base}/api/catalog"), &[("Cookie", cookie)], b"", T).await {
        Ok(resp) => resp.status,
        Err(e) => panic!("GET /api/catalog: {e:#}"),
    }
}

/// Browser sessions survive a relay restart (an upgrade): the same cookie
/// still works; a logged-out one does not come back; nor does one of an
/// account removed from the config while the relay was down, nor one whose
/// password changed. The file keeps only hashes of the cookies, mode 0600.
#[tokio::test]
async fn browser_sessions_survive_a_restart_and_stay_revocable() -> Result<()> {
    let _heavy = ponte_tests::e2e_lock();
    let (mut stack, accounts) = start().await?;
    let cookie = |user: &str, password: &str| {
        let stack = &stack;
        let (user, password) = (user.to_owned(), password.to_owned());
        async move { login(stack, &user, &password).await.1.with_context(|| format!("{user}'s cookie")) }
    };
    let anna = cookie("anna", ANNA_PASSWORD).await?;
    let zaist = cookie("zaist", ZAIST_PASSWORD).await?;
    let left = cookie("anna", ANNA_PASSWORD).await?;
    assert_eq!(request(&stack, "POST", "/logout", &[("Cookie", &left)], b"").await.status, 204);
    let base = stack.base_url();
    let catalog = |c: String| {
        let base = base.clone();
        async move { catalog_status(&base, &c).await }
    };
    assert_eq!(catalog(anna.clone()).await, 200);
    assert_eq!(catalog(zaist.clone()).await, 200);
    assert_eq!(catalog(left.clone()).await, 401);

    let started = Instant::now();
    restart_relay(&mut stack).await?;
    eprintln!("figure: relay restarted in {} ms", started.elapsed().as_millis());
    assert_eq!(catalog(anna.clone()).await, 200, "anna stays logged in across the restart");
    assert_eq!(catalog(zaist.clone()).await, 200, "zaist stays logged in across the restart");
    assert_eq!(catalog(left.clone()).await, 401, "a logged-out session does not come back");

    // The file beside the audit log: hashes only, private.
    let file = stack.relay_config.audit_path().with_file_name("relay-sessions.json");
    let text = std::fs::read_to_string(&file).with_context(|| format!("reading {}", file.display()))?;
    for c in [&anna, &zaist, &left] {
        let value = c.split_once('=').map_or(c.as_str(), |(_, v)| v);
        assert!(!text.contains(value), "a cookie in clear in {}: {text}", file.display());
    }
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&file)?.permissions().mode() & 0o777, 0o600);

    // Zaist removed while the relay is down: its session does not come back.
    let t = &accounts.tables;
    let mut cfg = stack.relay_config.clone();
    cfg.viewers = vec![t.anna.clone()];
    cfg.tokens = vec![t.ops.clone()];
    cfg.write(stack.dir().join("relay.toml"))?;
    restart_relay(&mut stack).await?;
    assert_eq!(catalog(zaist.clone()).await, 401, "the removed account's session ended");
    assert_eq!(catalog(anna.clone()).await, 200);

    // Anna's password changed (a reload): her session ends, and stays ended after a restart.
    let new_hash = relay_cli(&["passwd"], "una-password-nuova-2027\n")?.trim().to_owned();
    cfg.viewers = vec![ViewerConfig::new("anna", new_hash)];
    cfg.write(stack.dir().join("relay.toml"))?;
    stack.relay.signal(libc::SIGHUP)?;
    ponte_tests::wait_until("the reload to end anna's session", T, Duration::from_millis(50), || async {
        Ok((catalog(anna.clone()).await == 401).then_some(()))
    })
    .await?;
    restart_relay(&mut stack).await?;
    assert_eq!(catalog(anna.clone()).await, 401, "a changed password's session stays ended");
    Ok(())
}
