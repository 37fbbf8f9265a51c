//! The viewer page's PTZ pad end to end: a real headless Chromium logged in
//! to a real relay, fed by a real agent whose PTZ dome is the schema-checked
//! test ONVIF camera. A pointer held on "Pan right" makes the camera record
//! ContinuousMove with pan > 0 (renewed while held) and Stop on release; the
//! keyboard does the same; a preset chosen in the dropdown makes it record
//! GotoPreset. When the master room takes the camera over, the page says
//! who holds it and the next press is refused. An account without `ptz`
//! sees no pad, its POST gets 403 and the relay audits the refusal.
//! Assertions are on what the camera recorded.

use anyhow::{Context, Result};
use ponte_tests::onvif_camera::{ptz_sites, require_onvif_camera, OnvifCamera, RecordedOp};
use ponte_tests::{
    http_request, relay_cli, relay_token, relay_viewer, Chromium, Device, DeviceExt, HttpResponse,
    RelayConfig, Stack, StackSpec, Tweak,
};
use serde_json::{json, Value};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const CAMERA: &str = "zaist-mantova";
const ANNA_PASSWORD: &str = "torrazzo-112-metri";
const BRUNO_PASSWORD: &str = "battistero-ottagono";
/// Budget of each wait.
const T: Duration = Duration::from_secs(15);

/// `anna` may steer, `bruno` may not (no `ptz`), `ops` is the harness's token.
fn relay_accounts() -> Result<(String, Tweak<RelayConfig>)> {
    let mut anna = relay_viewer("anna", ANNA_PASSWORD)?;
    anna.ptz = true;
    let bruno = relay_viewer("bruno", BRUNO_PASSWORD)?;
    let (ops, table) = relay_token("ops")?;
    let accounts = Tweak::relay(move |relay| {
        relay.viewer(anna.clone()).viewer(bruno.clone()).token(table.clone());
    });
    Ok((ops, accounts))
}

fn unix_now() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or_default()
}

fn ops_named<'a>(ops: &'a [RecordedOp], name: &str) -> Vec<&'a RecordedOp> {
    ops.iter().filter(|o| o.op.as_deref() == Some(name)).collect()
}

/// Every operation the camera received was schema-valid and authorised.
fn all_valid(ops: &[RecordedOp]) {
    for o in ops {
        assert!(o.valid && o.authorized, "the agent sent an invalid or unauthorised ONVIF request: {o:?}");
    }
}

/// Fills and submits the page's login form.
async fn log_in(browser: &Chromium, user: &str, password: &str) -> Result<()> {
    browser.submit_login(user, password).await?;
    ponte_tests::wait_until("the login to succeed", T, Duration::from_millis(50), || async {
        let state = browser.eval("window.ponteViewer.state()").await?;
        Ok((state["viewer"] == user).then_some(()))
    })
    .await
}

/// The centre of the element matching `selector`, in CSS pixels.
async fn centre(browser: &Chromium, selector: &str) -> Result<(f64, f64)> {
    let js = format!(
        "(() => {{ const b = document.querySelector({}); if (!b) return null; \
           b.scrollIntoView({{ block: 'center' }}); const r = b.getBoundingClientRect(); \
           return [r.left + r.width / 2, r.top + r.height / 2]; }})()",
        serde_json::to_string(selector)?
    );
    let v = browser.eval(&js).await?;
    let x = v[0].as_f64().with_context(|| format!("{selector} is not on the page: {v}"))?;
    let y = v[1].as_f64().context("no y")?;
    Ok((x, y))
}

/// A real pointer event: `mouseMoved`, `mousePressed` or `mouseReleased`.
async fn mouse(browser: &Chromium, kind: &str, (x, y): (f64, f64)) -> Result<()> {
    let mut params = json!({"type": kind, "x": x, "y": y, "button": "left", "clickCount": 1});
    if kind == "mouseMoved" {
        params["button"] = json!("none");
    }
    browser.page().call("Input.dispatchMouseEvent", params).await?;
    Ok(())
}

/// A real key event on the focused element.
async fn key(browser: &Chromium, kind: &str) -> Result<()> {
    let params = json!({"type": kind, "key": " ", "code": "Space", "windowsVirtualKeyCode": 32,
                        "nativeVirtualKeyCode": 32, "text": if kind == "keyDown" { " " } else { "" }});
    browser.page().call("Input.dispatchKeyEvent", params).await?;
    Ok(())
}

async fn request(
    stack: &Stack,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> HttpResponse {
    let url = format!("{}{path}", stack.base_url());
    match http_request(method, &url, headers, body.as_bytes(), T).await {
        Ok(resp) => resp,
        Err(e) => panic!("{method} {path}: {e:#}"),
    }
}

fn audit_lines(stack: &Stack) -> Result<Vec<Value>> {
    let path = stack.relay_config.audit_path();
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    text.lines().map(|l| serde_json::from_str(l).with_context(|| format!("audit line {l}"))).collect()
}

/// Waits until the camera has recorded an operation `name` at or after
/// `since` (unix seconds) that satisfies `ok`.
async fn wait_op(
    camera: &OnvifCamera,
    name: &str,
    since: f64,
    ok: impl Fn(&RecordedOp) -> bool,
) -> Result<RecordedOp> {
    let ops = camera
        .wait_for(T, |ops| ops_named(ops, name).iter().any(|o| o.t >= since && ok(o)))
        .await
        .with_context(|| format!("waiting for the camera to record {name}"))?;
    all_valid(&ops);
    ops_named(&ops, name).into_iter().find(|o| o.t >= since && ok(o)).cloned().context("vanished")
}

#[tokio::test]
async fn the_viewer_page_steers_the_dome_and_an_account_without_ptz_cannot() -> Result<()> {
    let _heavy = ponte_tests::e2e_lock();
    if !ponte_tests::require_program(Chromium::binary(), "chromium") || !require_onvif_camera() {
        return Ok(());
    }
    let camera = OnvifCamera::start("admin", "secret").await?;
    let mut devices = Device::zaist_and_po();
    devices[0].onvif = Some(camera.settings("admin", "secret"));
    let (ops_token, accounts) = relay_accounts()?;
    // The master-room operator who takes the dome over, with a token.
    let (operator_token, operator) = ponte_tests::operator_token("sala")?;
    let mut stack = Stack::start_with(StackSpec {
        devices,
        agent: Tweak::agent(move |agent| {
            agent.sites = ptz_sites()[..1].to_vec();
            agent.operators = vec![operator.clone()];
        }),
        relay: accounts,
        catalog_token: Some(ops_token.clone()),
        ..StackSpec::default()
    })
    .await?;
    let dome = stack.catalog["cameras"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["id"] == CAMERA))
        .context("the dome in the catalog")?;
    assert_eq!(dome["ptz"], true, "the site may steer the dome: {dome}");

    let browser = Chromium::launch().await?;
    browser.navigate(&format!("{}/?camera={CAMERA}", stack.base_url())).await?;
    log_in(&browser, "anna", ANNA_PASSWORD).await?;

    // The pad appears for the dome, with the camera's presets.
    let pad = ponte_tests::wait_until("the PTZ pad", T, Duration::from_millis(100), || async {
        let p = browser.eval("window.ponteViewer.ptz()").await?;
        Ok((p["visible"] == true && p["presets"].as_array().is_some_and(|a| a.len() == 2)).then_some(p))
    })
    .await
    .with_context(|| format!("console:\n{}", browser.console().join("\n")))?;
    eprintln!("pad: {pad}");
    assert_eq!(pad["presets"][1], json!({"token": "2", "name": "Rotatoria"}));
    assert_eq!(browser.eval("getComputedStyle(document.getElementById('ptz')).display").await?, "flex");

    // Steering happens while watching: wait for the picture.
    ponte_tests::wait_until("the video to play", T, Duration::from_millis(100), || async {
        let state = browser.eval("window.ponteViewer.state()").await?;
        Ok((state["status"] == "playing").then_some(()))
    })
    .await?;
    let shot = option_env!("CARGO_TARGET_TMPDIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(std::env::temp_dir)
        .join("ptz-pad.png");
    match browser.screenshot(&shot).await {
        Ok(()) => eprintln!("screenshot: {}", shot.display()),
        Err(e) => eprintln!("screenshot failed: {e:#}"),
    }
    // Press and hold "Pan right" with the mouse for 1.6 s.
    let right = centre(&browser, "button[aria-label=\"Pan right\"]").await?;
    mouse(&browser, "mouseMoved", right).await?;
    let pressed = unix_now();
    mouse(&browser, "mousePressed", right).await?;
    let first = wait_op(&camera, "ContinuousMove", pressed, |o| o.pan.is_some_and(|p| p > 0.0)).await?;
    eprintln!("first move {:.0} ms after the press: {first:?}", (first.t - pressed) * 1e3);
    assert_eq!((first.tilt, first.zoom), (Some(0.0), Some(0.0)), "{first:?}");
    tokio::time::sleep(Duration::from_millis(1600)).await;
    let released = unix_now();
    mouse(&browser, "mouseReleased", right).await?;
    let stop = wait_op(&camera, "Stop", released - 0.05, |_| true).await?;
    eprintln!("stop {:.0} ms after the release", (stop.t - released) * 1e3);
    let ops = camera.recorded().await?;
    let held: Vec<&RecordedOp> = ops_named(&ops, "ContinuousMove")
        .into_iter()
        .filter(|o| o.t >= pressed && o.t <= released + 0.05)
        .collect();
    eprintln!("{} moves while held for 1.6 s", held.len());
    assert!(held.len() >= 3, "a held button renews its move every 500 ms: {held:?}");
    assert!(held.iter().all(|o| o.pan.is_some_and(|p| p > 0.0)), "{held:?}");
    let status =
        ponte_tests::wait_until("the status to name the holder", T, Duration::from_millis(100), || async {
            let p = browser.eval("window.ponteViewer.ptz()").await?;
            let s = p["status"].as_str().unwrap_or_default().to_owned();
            Ok(s.contains("anna@carabinieri").then_some(s))
        })
        .await?;
    eprintln!("status line: {status}");
    // Released: no move follows the stop.
    tokio::time::sleep(Duration::from_millis(800)).await;
    let late = camera.recorded().await?;
    let after: Vec<&RecordedOp> =
        ops_named(&late, "ContinuousMove").into_iter().filter(|o| o.t > stop.t).collect();
    assert!(after.is_empty(), "moves after the release: {after:?}");

    // The keyboard: Space held on the focused "Tilt up", then released.
    browser.eval("document.querySelector('button[aria-label=\"Tilt up\"]').focus()").await?;
    let down = unix_now();
    key(&browser, "keyDown").await?;
    let up_move = wait_op(&camera, "ContinuousMove", down, |o| o.tilt.is_some_and(|t| t > 0.0)).await?;
    assert_eq!(up_move.pan, Some(0.0), "{up_move:?}");
    let up = unix_now();
    key(&browser, "keyUp").await?;
    wait_op(&camera, "Stop", up - 0.05, |_| true).await?;

    // A preset chosen in the dropdown.
    let chosen = unix_now();
    browser
        .eval(
            "(() => { const s = document.getElementById('ptz-preset'); s.value = '2'; \
               s.dispatchEvent(new Event('change', { bubbles: true })); return true; })()",
        )
        .await?;
    let goto = wait_op(&camera, "GotoPreset", chosen, |o| o.preset.as_deref() == Some("2")).await?;
    eprintln!("goto preset: {goto:?}");

    // The master room takes the camera over (priority 100 beats the site's
    // 50): the page, polling, says who holds it, and anna's next press is
    // refused with the holder named.
    let mgmt = stack.agent.management_url(T).await?;
    let url = format!("{mgmt}/api/ptz/{CAMERA}");
    let body = br#"{"op":"move","pan":0,"tilt":-300,"zoom":0}"#;
    let bearer = format!("Bearer {operator_token}");
    let headers = [("Content-Type", "application/json"), ("Authorization", bearer.as_str())];
    let taken = http_request("POST", &url, &headers, body, T).await?;
    assert_eq!(taken.status, 200, "{}", taken.text());
    let status = ponte_tests::wait_until(
        "the page to name the master room",
        T,
        Duration::from_millis(100),
        || async {
            let p = browser.eval("window.ponteViewer.ptz()").await?;
            let s = p["status"].as_str().unwrap_or_default().to_owned();
            Ok(s.contains("sala@master").then_some(s))
        },
    )
    .await?;
    eprintln!("after the take-over: {status}");
    let left = centre(&browser, "button[aria-label=\"Pan left\"]").await?;
    mouse(&browser, "mouseMoved", left).await?;
    let pressed = unix_now();
    mouse(&browser, "mousePressed", left).await?;
    let refused =
        ponte_tests::wait_until("the refusal on the page", T, Duration::from_millis(100), || async {
            let p = browser.eval("window.ponteViewer.ptz()").await?;
            Ok((p["error"] != "" && p["moving"] == false).then_some(p))
        })
        .await?;
    mouse(&browser, "mouseReleased", left).await?;
    eprintln!("anna's press while the master room steers: {refused}");
    let status = refused["status"].as_str().unwrap_or_default();
    assert!(status.contains("sala@master"), "the loser's page says who holds it: {refused}");
    assert_eq!(browser.eval("document.getElementById('ptz-status').className").await?, "error");
    let ops = camera.recorded().await?;
    let lost: Vec<&RecordedOp> = ops_named(&ops, "ContinuousMove")
        .into_iter()
        .filter(|o| o.t >= pressed && o.pan.is_some_and(|p| p < 0.0))
        .collect();
    assert!(lost.is_empty(), "the refused move reached the camera: {lost:?}");

    // bruno has no PTZ right: no pad in the page, 403 on the API, audited.
    browser.eval("document.getElementById('logout').click()").await?;
    log_in(&browser, "bruno", BRUNO_PASSWORD).await?;
    browser.eval(&format!("window.ponteViewer.play('{CAMERA}', 'main').catch(() => null)")).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let p = browser.eval("window.ponteViewer.ptz()").await?;
    assert_eq!((p["visible"].clone(), p["camera"].clone()), (json!(false), json!(CAMERA)), "{p}");
    assert_eq!(browser.eval("getComputedStyle(document.getElementById('ptz')).display").await?, "none");

    let form = format!("user=bruno&password={BRUNO_PASSWORD}");
    let login =
        request(&stack, "POST", "/login", &[("Content-Type", "application/x-www-form-urlencoded")], &form)
            .await;
    let cookie =
        login.header("set-cookie").and_then(|c| c.split(';').next()).context("bruno's cookie")?.to_owned();
    let as_bruno = [("Cookie", cookie.as_str()), ("Content-Type", "application/json")];
    let get = request(&stack, "GET", &format!("/api/ptz/{CAMERA}"), &as_bruno, "").await;
    assert_eq!(get.status, 200, "{}", get.text());
    assert_eq!(get.json()?, json!({"may_steer": false, "holder": null, "presets": []}));
    let before = camera.recorded().await?.len();
    let post =
        request(&stack, "POST", &format!("/api/ptz/{CAMERA}"), &as_bruno, r#"{"op":"move","pan":-500}"#)
            .await;
    assert_eq!(post.status, 403, "{}", post.text());
    let body = post.json()?;
    assert_eq!(body["code"], "forbidden", "{body}");
    assert!(body["reason"].as_str().is_some_and(|r| r.contains("bruno")), "{body}");
    // And nobody at all without logging in.
    let anon = request(&stack, "POST", &format!("/api/ptz/{CAMERA}"), &[], r#"{"op":"stop"}"#).await;
    assert_eq!(anon.status, 401);

    let lines = audit_lines(&stack)?;
    let ptz: Vec<&Value> = lines.iter().filter(|l| l["action"] == "ptz").collect();
    assert!(
        ptz.iter().any(|l| l["viewer"] == "bruno" && l["outcome"] == "forbidden" && l["camera"] == CAMERA),
        "{ptz:?}"
    );
    assert!(
        ptz.iter().any(|l| l["viewer"] == "anna" && l["outcome"] == "locked"),
        "anna's refused move is audited: {ptz:?}"
    );
    for (what, prefix) in [("move", "move pan=500 "), ("stop", "stop"), ("preset", "goto_preset \"2\"")] {
        assert!(
            ptz.iter().any(|l| l["viewer"] == "anna"
                && l["outcome"] == "done"
                && l["reason"].as_str().is_some_and(|r| r.starts_with(prefix))),
            "anna's {what} is audited: {ptz:?}"
        );
    }
    let path = stack.relay_config.audit_path();
    let verified = relay_cli(&["audit", "verify", &path.to_string_lossy()], "")?;
    assert!(verified.contains(&format!("intact: {} lines", lines.len())), "{verified}");
    let after = camera.recorded().await?;
    let leaked: Vec<&RecordedOp> = ops_named(&after[before..], "ContinuousMove")
        .into_iter()
        .filter(|o| o.pan.is_some_and(|p| p < 0.0))
        .collect();
    assert!(leaked.is_empty(), "bruno's move reached the camera: {leaked:?}");

    for p in [&mut stack.relay, &mut stack.agent] {
        assert!(p.try_exit()?.is_none(), "{} exited", p.label());
    }
    Ok(())
}
