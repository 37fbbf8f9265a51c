//! Attacks on incident cooperation (issue 23): a partner relay with a real
//! certificate of the deployment CA acting on what belongs to another site
//! (accepting its share, acknowledging its alarm), sending malformed asks,
//! and requests to the master-room API and to a relay's console API
//! without the right credential or with what a cross-site form can send.
//!
//! The master room is a real agent; the partner relays are
//! [`FakeRelay`]s (they say anything a relay could) or a real relay.
//! Every assertion is on what the master records: its API as the operator
//! `sala`, its audit log, the notices the other site gets.

use anyhow::{bail, Context, Result};
use base64::Engine as _;
use ponte_proto::incident::{Notice, SiteAction};
use ponte_proto::media::Quality;
use ponte_proto::session::close_code;
use ponte_proto::wire::Control;
use ponte_tests::onvif_camera::{require_onvif_camera, OnvifCamera};
use ponte_tests::quic::{AgentSession, FakeRelay};
use ponte_tests::{
    http_request, relay_token, relay_viewer, site_policy, wait_until, AgentConfig, Device, DeviceExt,
    HttpResponse, Pki, Proc, RelayTarget, Stack, StackSpec, Tweak,
};
use serde_json::{json, Value};
use std::path::Path;
use std::time::Duration;

const T: Duration = Duration::from_secs(20);
const SALA: (&str, &str) = ("sala", "torrazzo-112-metri");
const BIANCHI: (&str, &str) = ("bianchi", "battistero-ottagono");
/// Seen by both partner sites.
const PIAZZA: &str = "piazza";
/// Seen by nobody: what the master room shares.
const STADIO: &str = "stadio";

fn synthetic(id: &str, zone: &str) -> Device {
    let mut d = Device::synthetic(id);
    d.zone = zone.into();
    d
}

/// The master room (a real agent with the operator `sala`) feeding two
/// fake partner relays, `questura` (zone Centro) and `carabinieri` (zone
/// Centro and the camera `gate`).
struct MasterRoom {
    agent: Proc,
    config: AgentConfig,
    mgmt: String,
    questura: FakeRelay,
    _carabinieri: FakeRelay,
    _dir: tempfile::TempDir,
}

impl MasterRoom {
    async fn start(extra: Vec<Device>) -> Result<(MasterRoom, AgentSession, AgentSession)> {
        let dir = tempfile::Builder::new().prefix("ponte-attack-incidents-").tempdir()?;
        let pki = Pki::create(dir.path().join("pki"), &["master", "questura", "carabinieri"]).await?;
        let questura = FakeRelay::listen(&pki, "questura")?;
        let carabinieri = FakeRelay::listen(&pki, "carabinieri")?;
        let mut devices = vec![synthetic(PIAZZA, "Centro"), synthetic(STADIO, "Stadio")];
        devices.extend(extra);
        let mut config = AgentConfig::new(
            "master",
            pki.tls("master"),
            vec![
                RelayTarget::new("questura", questura.endpoint.local_addr()?),
                RelayTarget::new("carabinieri", carabinieri.endpoint.local_addr()?),
            ],
            devices,
        );
        config.node.sites = vec![
            site_policy("questura", &["zone:Centro"]),
            site_policy("carabinieri", &["zone:Centro", "camera:gate"]),
        ];
        config.node.operators = vec![ponte_tests::operator_password(SALA.0, SALA.1)?];
        let toml = config.write(dir.path().join("agent.toml"))?;
        let mut agent = ponte_tests::spawn_node("ponte-agent", &toml)?;
        let mgmt = agent.management_url(T).await?;
        let q = questura.accept().await.context("the questura session")?;
        let c = carabinieri.accept().await.context("the carabinieri session")?;
        Ok((MasterRoom { agent, config, mgmt, questura, _carabinieri: carabinieri, _dir: dir }, q, c))
    }

    /// A call to the master API as `sala` (JSON body for a POST).
    async fn api(&self, method: &str, path: &str, body: Option<Value>) -> Result<(u16, Value)> {
        let basic = basic(SALA.0, SALA.1);
        let mut headers = vec![("Authorization", basic.as_str())];
        if method == "POST" {
            headers.push(("Content-Type", "application/json"));
        }
        let bytes = body.map(|b| b.to_string().into_bytes()).unwrap_or_default();
        let r = http_request(method, &format!("{}{path}", self.mgmt), &headers, &bytes, T).await?;
        let v = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
        Ok((r.status, v))
    }

    /// `GET /api/incidents` as `sala`.
    async fn view(&self) -> Result<Value> {
        let (status, v) = self.api("GET", "/api/incidents", None).await?;
        anyhow::ensure!(status == 200, "GET /api/incidents: HTTP {status}: {v}");
        Ok(v)
    }

    /// The agent's audit log, one JSON value per line.
    fn audit(&self) -> Result<Vec<Value>> {
        audit(&self.config.node.audit.path)
    }
}

fn basic(user: &str, password: &str) -> String {
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}")))
}

fn audit(path: &Path) -> Result<Vec<Value>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(text.lines().filter_map(|l| serde_json::from_str(l).ok()).collect())
}

fn lines_of<'a>(lines: &'a [Value], action: &str) -> Vec<&'a Value> {
    lines.iter().filter(|l| l["action"] == action).collect()
}

/// Subscribes to a camera that does not exist and waits for the refusal:
/// the agent handles a session's messages in order, so everything sent
/// before has been handled. Returns the incident notices that came meanwhile.
async fn round_trip(s: &mut AgentSession, id: u64) -> Result<Vec<Notice>> {
    let probe = Control::Subscribe {
        id,
        camera: "no-such-camera".into(),
        quality: Quality::Main,
        viewer: None,
        playback: None,
    };
    s.tx.send(&probe).await?;
    let mut notices = Vec::new();
    loop {
        match s.next_control().await? {
            Control::SubscribeError { id: got, .. } if got == id => return Ok(notices),
            Control::Incident { notice } => notices.push(notice),
            _ => {}
        }
    }
}

/// Incident notices until one for which `done` holds (returned last).
async fn notices_until(s: &mut AgentSession, done: impl Fn(&Notice) -> bool) -> Result<Vec<Notice>> {
    let mut seen = Vec::new();
    loop {
        match s.next_control().await.with_context(|| format!("notices so far: {seen:?}"))? {
            Control::Incident { notice } => {
                let last = done(&notice);
                seen.push(notice);
                if last {
                    return Ok(seen);
                }
            }
            _ => continue,
        }
    }
}

async fn action(s: &mut AgentSession, action: SiteAction) -> Result<()> {
    s.tx.send(&Control::IncidentAction { action }).await?;
    Ok(())
}

/// The Questura's relay, with its own valid certificate, accepts the share
/// the master room gave the Carabinieri (the share id is guessable: ids
/// count up). The agent refuses it: the share stays unaccepted at the
/// master, nothing is audited as accepted, the Carabinieri are not told
/// anyone accepted, and the Questura's session goes on. The Carabinieri's
/// own acceptance then works (and is the first they hear of).
#[tokio::test]
async fn a_relay_cannot_accept_another_sites_share() -> Result<()> {
    let _heavy = ponte_tests::e2e_lock();
    let (mut room, mut questura, mut carabinieri) = MasterRoom::start(Vec::new()).await?;
    let share = json!({"site": "carabinieri", "cameras": [STADIO], "minutes": 30, "note": "derby"});
    let (status, v) = room.api("POST", "/api/incidents/shares", Some(share)).await?;
    assert_eq!(status, 201, "{v}");
    let id = v["id"].as_u64().context("the share's id")?;
    let offered =
        notices_until(&mut carabinieri, |n| matches!(n, Notice::Share { id: got, .. } if *got == id)).await?;
    assert!(
        matches!(offered.last(), Some(Notice::Share { accepted_by: None, .. })),
        "the Carabinieri are offered the share: {offered:?}"
    );

    // The attack: accept it from the Questura, naming the Carabinieri's operator.
    action(&mut questura, SiteAction::Accept { share: id, operator: "rossi".into() }).await?;
    let told =
        round_trip(&mut questura, 1).await.context("the Questura's session after the forged accept")?;
    assert!(told.is_empty(), "the Questura is told nothing of another site's share: {told:?}");

    let view = room.view().await?;
    let s = view["shares"].as_array().and_then(|a| a.iter().find(|s| s["id"] == id)).context("the share")?;
    assert_eq!(s["accepted_by"], Value::Null, "the share stays unaccepted: {s}");
    let lines = room.audit()?;
    assert!(lines_of(&lines, "accept").is_empty(), "an acceptance audited: {:?}", lines_of(&lines, "accept"));

    // The Carabinieri accept: the first acceptance they hear of is their own.
    action(&mut carabinieri, SiteAction::Accept { share: id, operator: "rossi".into() }).await?;
    let heard =
        notices_until(&mut carabinieri, |n| matches!(n, Notice::Share { accepted_by: Some(_), .. })).await?;
    let Some(Notice::Share { accepted_by, .. }) = heard.last() else { bail!("{heard:?}") };
    assert_eq!(accepted_by.as_deref(), Some("rossi@carabinieri"), "{heard:?}");
    let view = room.view().await?;
    let s = view["shares"].as_array().and_then(|a| a.iter().find(|s| s["id"] == id)).context("the share")?;
    assert_eq!(s["accepted_by"], "rossi@carabinieri", "{s}");
    let lines = room.audit()?;
    let accepts = lines_of(&lines, "accept");
    assert_eq!(accepts.len(), 1, "{accepts:?}");
    assert_eq!(accepts[0]["viewer"], "rossi@carabinieri", "{}", accepts[0]);
    assert_eq!(accepts[0]["site"], "carabinieri", "{}", accepts[0]);
    assert!(room.agent.try_exit()?.is_none(), "the agent exited");
    Ok(())
}

/// The test ONVIF camera raises motion on `gate`, which only the
/// Carabinieri may see. The Questura's relay acknowledges that alarm (its
/// id read from the master API: ids count up, a relay can guess them). The
/// agent refuses it: no acknowledgement at the master or in its audit, and
/// the Carabinieri, who did get the alarm, hear only of their own.
#[tokio::test]
async fn a_relay_cannot_acknowledge_an_alarm_it_was_not_sent() -> Result<()> {
    let _heavy = ponte_tests::e2e_lock();
    if !require_onvif_camera() {
        return Ok(());
    }
    let camera = OnvifCamera::start("admin", "secret").await?;
    let gate: Device = toml::from_str(&format!(
        "id = \"gate\"\nname = \"Varco stadio\"\nzone = \"Stadio\"\ntype = \"fixed\"\nsource = \"synthetic\"\n\
         [onvif]\nurl = \"http://127.0.0.1:{}/onvif/device_service\"\nevents = true\n\
         username = \"admin\"\npassword = \"secret\"\n",
        camera.port
    ))?;
    let (mut room, mut questura, mut carabinieri) = MasterRoom::start(vec![gate]).await?;
    let events = format!("http://127.0.0.1:{}/test/events", camera.port);
    wait_until("the agent's ONVIF subscription", T, Duration::from_millis(100), || async {
        let v = http_request("GET", &events, &[], b"", T).await?.ensure_success()?.json()?;
        let live = v.get("live").and_then(Value::as_u64).or_else(|| v.as_array().map(|a| a.len() as u64));
        Ok((live.unwrap_or(0) >= 1).then_some(()))
    })
    .await?;
    http_request("POST", &format!("{events}?kind=motion&state=true"), &[], b"", T).await?.ensure_success()?;
    let got = notices_until(&mut carabinieri, |n| matches!(n, Notice::Alarm { .. })).await?;
    let Some(Notice::Alarm { id, camera: alarmed, .. }) = got.last() else { bail!("{got:?}") };
    let id = *id;
    assert_eq!(alarmed, "gate");
    let view = room.view().await?;
    let alarm = view["alarms"].as_array().and_then(|a| a.iter().find(|a| a["id"] == id)).context("alarm")?;
    assert_eq!(alarm["sites"], json!(["carabinieri"]), "{alarm}");

    // The attack: acknowledge it from the Questura.
    action(&mut questura, SiteAction::Ack { alarm: id, operator: "rossi".into() }).await?;
    let told = round_trip(&mut questura, 1).await.context("the Questura's session after the forged ack")?;
    assert!(told.is_empty(), "the Questura is told nothing of the gate's alarm: {told:?}");
    let view = room.view().await?;
    let alarm = view["alarms"].as_array().and_then(|a| a.iter().find(|a| a["id"] == id)).context("alarm")?;
    assert_eq!(alarm["acks"], json!([]), "no acknowledgement recorded: {alarm}");
    let lines = room.audit()?;
    assert!(lines_of(&lines, "acknowledge").is_empty(), "{:?}", lines_of(&lines, "acknowledge"));

    // The Carabinieri acknowledge: the first acknowledgement they hear of is theirs.
    action(&mut carabinieri, SiteAction::Ack { alarm: id, operator: "rossi".into() }).await?;
    let heard = notices_until(&mut carabinieri, |n| matches!(n, Notice::AlarmAck { .. })).await?;
    let Some(Notice::AlarmAck { site, operator, .. }) = heard.last() else { bail!("{heard:?}") };
    assert_eq!((site.as_str(), operator.as_str()), ("carabinieri", "rossi@carabinieri"), "{heard:?}");
    let view = room.view().await?;
    let alarm = view["alarms"].as_array().and_then(|a| a.iter().find(|a| a["id"] == id)).context("alarm")?;
    let acks = alarm["acks"].as_array().context("acks")?;
    assert_eq!(acks.len(), 1, "{alarm}");
    assert_eq!(acks[0]["site"], "carabinieri", "{alarm}");
    let lines = room.audit()?;
    assert_eq!(lines_of(&lines, "acknowledge").len(), 1, "{:?}", lines_of(&lines, "acknowledge"));
    assert!(room.agent.try_exit()?.is_none(), "the agent exited");
    Ok(())
}

/// The Questura's relay sends asks the wire does not allow: an operator
/// name with a terminal escape, a 10 KB operator name, a 10 KB reason, an
/// empty reason. Each time the agent closes that session as a protocol
/// violation before recording anything, dials the relay again at once, and
/// a well-formed ask on the new session reaches the master.
#[tokio::test]
async fn malformed_asks_close_the_session_and_record_nothing() -> Result<()> {
    let _heavy = ponte_tests::e2e_lock();
    let (mut room, questura, _carabinieri) = MasterRoom::start(Vec::new()).await?;
    let ask = |n: u64, operator: String, reason: String| SiteAction::Ask {
        id: n,
        camera: STADIO.into(),
        operator,
        reason,
    };
    let bad = [
        (
            "an operator name with a terminal escape",
            ask(1, "bianchi\u{1b}]0;pwned\u{7}".into(), "rissa".into()),
        ),
        ("a 10 KB operator name", ask(2, "b".repeat(10 * 1024), "rissa".into())),
        ("a 10 KB reason", ask(3, "bianchi".into(), "r".repeat(10 * 1024))),
        ("an empty reason", ask(4, "bianchi".into(), String::new())),
    ];
    let mut session = Some(questura);
    for (what, bad_ask) in bad {
        let mut s = match session.take() {
            Some(s) => s,
            None => {
                room.questura.accept().await.with_context(|| format!("the agent's next session ({what})"))?
            }
        };
        action(&mut s, bad_ask).await?;
        let closed = tokio::time::timeout(T, s.conn.closed())
            .await
            .with_context(|| format!("the agent kept the session open after {what}"))?;
        match closed {
            quinn::ConnectionError::ApplicationClosed(c) if c.error_code == close_code::PROTOCOL.into() => {
                println!("{what}: closed, {}", String::from_utf8_lossy(&c.reason));
            }
            other => bail!("after {what} the session ended, but not as a protocol violation: {other}"),
        }
    }
    let view = room.view().await?;
    assert_eq!(view["asks"], json!([]), "a malformed ask was recorded: {}", view["asks"]);
    let lines = room.audit()?;
    assert!(lines_of(&lines, "ask").is_empty(), "{:?}", lines_of(&lines, "ask"));

    // The agent keeps serving the site: a well-formed ask on the next session.
    let mut s = room.questura.accept().await.context("the agent's session after the attacks")?;
    action(&mut s, ask(5, "bianchi".into(), "rissa all'ingresso".into())).await?;
    round_trip(&mut s, 1).await?;
    let view = room.view().await?;
    let asks = view["asks"].as_array().context("asks")?;
    assert_eq!(asks.len(), 1, "{asks:?}");
    assert_eq!(asks[0]["operator"], "bianchi@questura", "{}", asks[0]);
    assert_eq!(asks[0]["reason"], "rissa all'ingresso", "{}", asks[0]);
    assert_eq!(asks[0]["state"], "pending", "{}", asks[0]);
    assert_eq!(lines_of(&room.audit()?, "ask").len(), 1);
    assert!(room.agent.try_exit()?.is_none(), "the agent exited");
    Ok(())
}

/// The master API without a credential, with a wrong password, with a
/// body a cross-site form can send (`text/plain`, urlencoded, multipart),
/// and shares the book must refuse (a site that is not a partner, an
/// unknown camera, 100 000 minutes). None creates a share; the refusals
/// of the credential are audited as `login`; `sala`'s own share then works.
#[tokio::test]
async fn master_api_refuses_strangers_forms_and_impossible_shares() -> Result<()> {
    let _heavy = ponte_tests::e2e_lock();
    let (mut room, _questura, _carabinieri) = MasterRoom::start(Vec::new()).await?;
    let url = format!("{}/api/incidents", room.mgmt);
    let shares_url = format!("{url}/shares");
    let good = json!({"site": "carabinieri", "cameras": [STADIO], "minutes": 30, "note": "derby"});

    let r = http_request("GET", &url, &[], b"", T).await?;
    assert_eq!(r.status, 401, "no credential: {}", r.text());
    assert!(r.header("www-authenticate").is_some_and(|h| h.starts_with("Basic")), "{:?}", r.headers);
    let wrong = basic(SALA.0, "torrazzo-111-metri");
    let r = http_request("GET", &url, &[("Authorization", &wrong)], b"", T).await?;
    assert_eq!(r.status, 401, "wrong password: {}", r.text());
    let body = good.to_string();
    let r = http_request("POST", &shares_url, &[("Content-Type", "application/json")], body.as_bytes(), T)
        .await?;
    assert_eq!(r.status, 401, "a share without a credential: {}", r.text());
    let lines = room.audit()?;
    let logins = lines_of(&lines, "login");
    assert!(
        logins
            .iter()
            .any(|l| l["outcome"] == "refused" && l["site"] == "master" && l["client"] == "127.0.0.1"),
        "the request without a credential is audited: {logins:?}"
    );
    assert!(
        logins.iter().any(|l| l["outcome"] == "failed" && l["viewer"] == "sala"),
        "the wrong password is audited with the name: {logins:?}"
    );

    // What a cross-site form can send, with the right credential (a
    // browser holding it would attach it).
    let auth = basic(SALA.0, SALA.1);
    for content_type in ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"]
    {
        let headers = [("Authorization", auth.as_str()), ("Content-Type", content_type)];
        let r: HttpResponse = http_request("POST", &shares_url, &headers, body.as_bytes(), T).await?;
        assert_eq!(r.status, 415, "{content_type}: {}", r.text());
    }
    let r =
        http_request("POST", &shares_url, &[("Authorization", auth.as_str())], body.as_bytes(), T).await?;
    assert_eq!(r.status, 415, "no Content-Type: {}", r.text());

    let refused = [
        ("a site that is not a partner", json!({"site": "finanza", "cameras": [STADIO], "minutes": 30})),
        ("an unknown camera", json!({"site": "carabinieri", "cameras": ["stadio-2"], "minutes": 30})),
        ("100 000 minutes", json!({"site": "carabinieri", "cameras": [STADIO], "minutes": 100_000})),
        ("no camera", json!({"site": "carabinieri", "cameras": [], "minutes": 30})),
    ];
    for (what, body) in refused {
        let (status, v) = room.api("POST", "/api/incidents/shares", Some(body)).await?;
        assert_eq!(status, 400, "{what}: {v}");
        println!("{what}: {}", v["error"]);
    }
    let view = room.view().await?;
    assert_eq!(view["shares"], json!([]), "a refused request created a share: {}", view["shares"]);
    assert!(lines_of(&room.audit()?, "share").is_empty(), "a share audited");

    let (status, v) = room.api("POST", "/api/incidents/shares", Some(good)).await?;
    assert_eq!(status, 201, "sala's own share: {v}");
    let view = room.view().await?;
    assert_eq!(view["shares"].as_array().map(Vec::len), Some(1), "{}", view["shares"]);
    assert!(room.agent.try_exit()?.is_none(), "the agent exited");
    Ok(())
}

/// A real Questura relay's console API: a wall display's token reads the
/// board but may not ask; no credential gets 401; an operator's ask as
/// `text/plain`, with a 10 KB reason or with an empty one is refused and
/// nothing reaches the master; an ask of 7 KB (under the body limit) is
/// refused saying the limit, not cut silently; a well-formed ask reaches it.
#[tokio::test]
async fn relay_console_refuses_wall_tokens_strangers_and_bad_asks() -> Result<()> {
    let _heavy = ponte_tests::e2e_lock();
    let (wall, wall_table) = relay_token("wall")?;
    let bianchi = relay_viewer(BIANCHI.0, BIANCHI.1)?;
    let sala = ponte_tests::operator_password(SALA.0, SALA.1)?;
    let mut stack = Stack::start_with(StackSpec {
        relay_site: "questura".into(),
        devices: vec![synthetic(PIAZZA, "Centro"), synthetic(STADIO, "Stadio")],
        agent: Tweak::agent(move |a| {
            a.node.sites = vec![site_policy("questura", &["zone:Centro"])];
            a.node.operators = vec![sala.clone()];
        }),
        relay: Tweak::relay(move |r| {
            r.viewer(bianchi.clone()).token(wall_table.clone());
        }),
        expect_cameras: Some(1),
        catalog_token: Some(wall.clone()),
        ..StackSpec::default()
    })
    .await?;
    let mgmt = stack.agent.management_url(T).await?;
    let base = stack.base_url();
    let incidents = format!("{base}/api/incidents");
    let asks = format!("{incidents}/asks");
    let master_asks = || {
        let (url, auth) = (format!("{mgmt}/api/incidents"), basic(SALA.0, SALA.1));
        async move {
            let r = http_request("GET", &url, &[("Authorization", &auth)], b"", T).await?.ensure_success()?;
            anyhow::Ok(r.json()?["asks"].as_array().cloned().unwrap_or_default())
        }
    };

    let r = http_request("GET", &incidents, &[], b"", T).await?;
    assert_eq!(r.status, 401, "no credential: {}", r.text());
    let r = http_request(
        "POST",
        &asks,
        &[("Content-Type", "application/json")],
        br#"{"camera":"stadio","reason":"x"}"#,
        T,
    )
    .await?;
    assert_eq!(r.status, 401, "an ask without a credential: {}", r.text());
    let bearer = format!("Bearer {wall}");
    let r = http_request("GET", &incidents, &[("Authorization", &bearer)], b"", T).await?;
    assert_eq!(r.status, 200, "the wall display reads the board: {}", r.text());
    assert!(r.json()?["asks"].is_array(), "{}", r.text());
    let headers = [("Authorization", bearer.as_str()), ("Content-Type", "application/json")];
    let r = http_request("POST", &asks, &headers, br#"{"camera":"stadio","reason":"rissa"}"#, T).await?;
    assert_eq!(r.status, 403, "a wall display's token asks: {}", r.text());

    // The operator logs in on the console.
    let form = format!("user={}&password={}", BIANCHI.0, BIANCHI.1);
    let login = http_request(
        "POST",
        &format!("{base}/login"),
        &[("Content-Type", "application/x-www-form-urlencoded")],
        form.as_bytes(),
        T,
    )
    .await?;
    assert_eq!(login.status, 204, "{}", login.text());
    let cookie = login.header("set-cookie").and_then(|c| c.split(';').next()).context("cookie")?.to_owned();
    let post = |content_type: &'static str, body: String| {
        let (url, cookie) = (asks.clone(), cookie.clone());
        async move {
            let headers = [("Cookie", cookie.as_str()), ("Content-Type", content_type)];
            http_request("POST", &url, &headers, body.as_bytes(), T).await
        }
    };
    let ask = |reason: &str| json!({"camera": STADIO, "reason": reason}).to_string();
    let r = post("text/plain", ask("rissa")).await?;
    assert_eq!(r.status, 415, "a text/plain ask: {}", r.text());
    let r = post("application/json", ask(&"r".repeat(10 * 1024))).await?;
    println!("a 10 KB reason: HTTP {} {}", r.status, r.text());
    assert!(r.status == 400 || r.status == 413, "a 10 KB reason: HTTP {} {}", r.status, r.text());
    let r = post("application/json", ask("   ")).await?;
    assert_eq!(r.status, 400, "an empty reason: {}", r.text());
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(master_asks().await?, Vec::<Value>::new(), "a refused ask reached the master");

    let long = "l".repeat(7 * 1024);
    let r = post("application/json", ask(&long)).await?;
    assert_eq!(r.status, 400, "a 7 KB reason: {}", r.text());
    assert!(r.text().contains("at most 500"), "the refusal says the limit: {}", r.text());
    let r = post("application/json", ask("inseguimento verso lo stadio")).await?;
    assert_eq!(r.status, 201, "a well-formed ask: {}", r.text());
    let at_master = wait_until("the ask at the master", T, Duration::from_millis(50), || async {
        let a = master_asks().await?;
        Ok((!a.is_empty()).then_some(a))
    })
    .await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let at_master = if at_master.len() == 1 { master_asks().await? } else { at_master };
    assert_eq!(at_master.len(), 1, "only the accepted ask reaches the master: {at_master:?}");
    let reasons: Vec<&str> = at_master.iter().filter_map(|a| a["reason"].as_str()).collect();
    assert!(reasons.contains(&"inseguimento verso lo stadio"), "{reasons:?}");
    assert!(reasons.iter().all(|r| r.len() <= 500), "the master keeps at most 500 bytes of a reason");
    assert!(at_master.iter().all(|a| a["operator"] == "bianchi@questura"), "{at_master:?}");
    for p in [&mut stack.relay, &mut stack.agent] {
        assert!(p.try_exit()?.is_none(), "{} exited", p.label());
    }
    Ok(())
}
