//! Relay-local viewers end to end: accounts and tokens made by the real
//! `ponte-relay passwd` / `ponte-relay token`, a real relay fed by a real
//! agent, the login form in a real Chromium, and the relay's audit log
//! checked by `ponte-relay audit verify`.

use anyhow::{bail, Context, Result};
use ponte_tests::{
    catalog_camera_ids, http_request, relay_cli, Chromium, Device, HttpResponse, Stack, StackSpec,
};
use serde_json::Value;
use std::time::{Duration, Instant};

/// Timeout of one request (a failed login alone takes 1 s).
const T: Duration = Duration::from_secs(10);
/// Frames the browser must decode.
const FRAMES: u64 = 30;
/// Budget from submitting the login form to `FRAMES` decoded frames.
const PLAY_TIMEOUT: Duration = Duration::from_secs(20);

const ZAIST_PASSWORD: &str = "rotatoria-mantova-2026";
const ANNA_PASSWORD: &str = "torrazzo-112-metri";

/// The accounts of the test relay, made with the real CLI.
struct Accounts {
    /// Unrestricted token the harness uses to see the catalog fill.
    ops: String,
    /// The site's VMS: `po-lungofiume` only.
    vms: String,
    relay_extra: String,
}

fn accounts() -> Result<Accounts> {
    let hash = |password: &str| -> Result<String> {
        let phc = relay_cli(&["passwd"], &format!("{password}\n"))?.trim().to_owned();
        assert!(phc.starts_with("$argon2id$"), "{phc}");
        Ok(phc)
    };
    // `ponte-relay token` prints the token, then the `[[token]]` table.
    let token = |name: &str| -> Result<(String, String)> {
        let out = relay_cli(&["token", "--name", name], "")?;
        let token = out.lines().next().context("no token line")?.trim().to_owned();
        let table = out.lines().skip(1).filter(|l| !l.starts_with('#')).collect::<Vec<_>>().join("\n");
        assert!(table.contains(&format!("name = \"{name}\"")), "{out}");
        Ok((token, table))
    };
    let (ops, ops_table) = token("ops")?;
    let (vms, vms_table) = token("vms")?;
    let relay_extra = format!(
        "[[viewer]]\nuser = \"anna\"\npassword_hash = \"{}\"\n\n\
         [[viewer]]\nuser = \"zaist\"\npassword_hash = \"{}\"\ncameras = [\"zone:Zaist\"]\n\n\
         {ops_table}\n\n{vms_table}\ncameras = [\"camera:po-lungofiume\"]\n",
        hash(ANNA_PASSWORD)?,
        hash(ZAIST_PASSWORD)?,
    );
    Ok(Accounts { ops, vms, relay_extra })
}

async fn start() -> Result<(Stack, Accounts)> {
    let accounts = accounts()?;
    let stack = Stack::start_with(StackSpec {
        devices: Device::zaist_and_po(),
        relay_extra: accounts.relay_extra.clone(),
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

#[tokio::test]
async fn browser_logs_in_through_the_form_and_plays_its_camera() -> Result<()> {
    let _heavy = ponte_tests::e2e_lock();
    if !ponte_tests::require_program(Chromium::binary(), "chromium") {
        return Ok(());
    }
    let (mut stack, accounts) = start().await?;
    let browser = Chromium::launch().await?;

    // A deep link while logged out: the page shows its login form.
    browser.navigate(&format!("{}/?camera=zaist-mantova", stack.base_url())).await?;
    ponte_tests::wait_until("the login form", T, Duration::from_millis(50), || async {
        let shown = browser.eval("!document.getElementById('login').hidden").await?;
        Ok((shown == true).then_some(()))
    })
    .await?;

    // Fill the real form and submit it, as a person would.
    let submit = format!(
        "(() => {{ document.getElementById('login-user').value = 'zaist'; \
           document.getElementById('login-password').value = {}; \
           document.getElementById('login-form').requestSubmit(); return true; }})()",
        serde_json::to_string(ZAIST_PASSWORD)?
    );
    let start = Instant::now();
    browser.eval(&submit).await?;
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
        "logged in and decoded {FRAMES} frames in {:.0} ms: {last}",
        start.elapsed().as_secs_f64() * 1e3
    );
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
