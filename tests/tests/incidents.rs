//! Working together on an incident (issue 23), end to end: one agent (the
//! master room, operator `sala`), two partner relays (`questura`, operator
//! `bianchi`; `carabinieri`, operator `rossi`), Chromium on the master
//! console (agent management port, `/master`) and on both partner consoles.
//!
//! - A share of a camera outside the Questura's grant shows on its console
//!   within 1 s; accepting it puts the camera in a tile that decodes; the
//!   master sees who accepted; when a share ends the tile ends within 1 s
//!   with the reason.
//! - The Carabinieri ask for a hidden camera; the master approves it for a
//!   minute and it plays; a refusal shows the master's reason.
//! - The test ONVIF camera raises motion: the Carabinieri console shows the
//!   alarm with its thumbnail within 1 s, the Questura (camera not granted)
//!   nothing; the acknowledgement shows at the master. A chattering camera
//!   (100 events/s) raises at most the configured rate, the rest counted.
//! - An agent restart keeps an unexpired share and drops an expired one
//!   (`policy explain` shows the kept one, its expiry and who gave it).

use anyhow::{bail, Context, Result};
use base64::Engine as _;
use ponte_proto::policy::SitePolicyConfig;
use ponte_tests::onvif_camera::{require_onvif_camera, schema_dir, PYTHON};
use ponte_tests::{
    bin_path, free_tcp_port, free_udp_port, http_request, relay_token, relay_viewer, site_policy,
    wait_catalog_as, wait_until, AgentConfig, Chromium, Device, DeviceExt, Page, Pki, Proc, RelayConfig,
    RelayTarget,
};
use serde_json::{json, Value};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const SALA: (&str, &str) = ("sala", "torrazzo-112-metri");
const BIANCHI: (&str, &str) = ("bianchi", "battistero-ottagono");
const ROSSI: (&str, &str) = ("rossi", "violino-stradivari");
/// Budget of each wait.
const T: Duration = Duration::from_secs(20);

/// The master room and its two partner rooms, running.
struct Rooms {
    agent: Proc,
    _questura: Proc,
    _carabinieri: Proc,
    agent_toml: PathBuf,
    agent_config: AgentConfig,
    questura: RelayConfig,
    carabinieri: RelayConfig,
    /// `http://127.0.0.1:<port>` of the agent's management port.
    mgmt: String,
    /// The relays' bearer token for `/api/catalog`.
    ops: String,
    /// Chromium's `--ignore-certificate-errors-spki-list` for the deployment CA.
    ca_pin: String,
    dir: tempfile::TempDir,
}

fn synthetic(id: &str, zone: &str) -> Device {
    let mut d = Device::synthetic(id);
    d.zone = zone.into();
    d
}

/// Questura sees zone Centro; Carabinieri zone Centro and the gate (kept
/// on, so its picture is cached for thumbnails). The stadium is nobody's.
fn policies() -> Vec<SitePolicyConfig> {
    vec![
        site_policy("questura", &["zone:Centro"]),
        SitePolicyConfig {
            always_on: vec!["camera:gate".into()],
            ..site_policy("carabinieri", &["zone:Centro", "camera:gate"])
        },
    ]
}

impl Rooms {
    async fn start(devices: Vec<Device>, tweak: impl Fn(&mut AgentConfig)) -> Result<Rooms> {
        Rooms::start_with(devices, tweak, false).await
    }

    /// With `https`, the agent's management port (the master console)
    /// speaks HTTPS with the agent's certificate of the deployment CA.
    async fn start_with(
        devices: Vec<Device>,
        tweak: impl Fn(&mut AgentConfig),
        https: bool,
    ) -> Result<Rooms> {
        let dir = tempfile::Builder::new().prefix("ponte-incidents-").tempdir()?;
        let pki = Pki::create(dir.path().join("pki"), &["master", "questura", "carabinieri"]).await?;
        let localhost = |port| SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let (ops, token) = relay_token("ops")?;
        let relay = |site: &str, (user, password): (&str, &str)| -> Result<RelayConfig> {
            let mut r =
                RelayConfig::new(site, localhost(free_udp_port()), localhost(free_tcp_port()), pki.tls(site));
            r.viewer(relay_viewer(user, password)?).token(token.clone());
            Ok(r)
        };
        let questura = relay("questura", BIANCHI)?;
        let carabinieri = relay("carabinieri", ROSSI)?;
        let mut agent_config = AgentConfig::new(
            "master",
            pki.tls("master"),
            vec![
                RelayTarget::new("questura", questura.relay.quic_listen),
                RelayTarget::new("carabinieri", carabinieri.relay.quic_listen),
            ],
            devices,
        );
        agent_config.node.sites = policies();
        agent_config.node.operators = vec![ponte_tests::operator_password(SALA.0, SALA.1)?];
        if https {
            agent_config.node.management.https = Some(ponte_proto::tls::https::HttpsSection {
                cert: pki.cert("master"),
                key: pki.key("master"),
                redirect_listen: None,
            });
        }
        tweak(&mut agent_config);
        let pem = std::fs::read(pki.ca_cert())?;
        let (_, pem) = x509_parser::pem::parse_x509_pem(&pem).map_err(|e| anyhow::anyhow!("CA PEM: {e}"))?;
        let ca_pin = ponte_proto::tls::https::spki_sha256_base64(&pem.contents).context("CA certificate")?;
        let spawn = |bin: &str, toml: &Path| -> Result<Proc> { ponte_tests::spawn_node(bin, toml) };
        let q = spawn("ponte-relay", &questura.write(dir.path().join("questura.toml"))?)?;
        let c = spawn("ponte-relay", &carabinieri.write(dir.path().join("carabinieri.toml"))?)?;
        let agent_toml = agent_config.write(dir.path().join("agent.toml"))?;
        let mut agent = spawn("ponte-agent", &agent_toml)?;
        let mut mgmt = agent.management_url(T).await?;
        if https {
            mgmt = mgmt.replace("http://", "https://");
        }
        let rooms = Rooms {
            agent,
            _questura: q,
            _carabinieri: c,
            agent_toml,
            agent_config,
            questura,
            carabinieri,
            mgmt,
            ops,
            ca_pin,
            dir,
        };
        wait_catalog_as(&rooms.questura.base_url(), 1, T, Some(&rooms.ops)).await?;
        wait_catalog_as(&rooms.carabinieri.base_url(), 1, T, Some(&rooms.ops)).await?;
        Ok(rooms)
    }

    /// Catalog ids of a relay.
    async fn catalog(&self, relay: &RelayConfig) -> Result<Vec<String>> {
        let auth = format!("Bearer {}", self.ops);
        let r = http_request(
            "GET",
            &format!("{}/api/catalog", relay.base_url()),
            &[("authorization", &auth)],
            b"",
            Duration::from_secs(5),
        )
        .await?
        .ensure_success()?;
        let v: Value = r.json()?;
        let list = v.get("cameras").unwrap_or(&v);
        Ok(list
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|c| c["id"].as_str().map(str::to_owned))
            .collect())
    }

    /// A call to the master API as `sala`.
    async fn master(&self, method: &str, path: &str, body: Option<Value>) -> Result<(u16, Value)> {
        let basic = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{}:{}", SALA.0, SALA.1))
        );
        let bytes = body.map(|b| b.to_string().into_bytes()).unwrap_or_default();
        let mut headers = vec![("authorization", basic.as_str())];
        if method == "POST" {
            headers.push(("content-type", "application/json"));
        }
        let r =
            http_request(method, &format!("{}{path}", self.mgmt), &headers, &bytes, Duration::from_secs(10))
                .await?;
        let v = if r.body.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&r.body).unwrap_or(Value::Null)
        };
        Ok((r.status, v))
    }

    fn agent_audit(&self) -> Result<Vec<Value>> {
        audit(&self.agent_config.node.audit.path)
    }
}

fn audit(path: &Path) -> Result<Vec<Value>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    text.lines().map(|l| serde_json::from_str(l).with_context(|| format!("audit line {l}"))).collect()
}

fn has_line(lines: &[Value], action: &str, outcome: &str, viewer: &str) -> bool {
    lines.iter().any(|l| l["action"] == action && l["outcome"] == outcome && l["viewer"] == viewer)
}

/// A browser whose background tabs keep their timers and media.
async fn browser() -> Result<Chromium> {
    browser_trusting(None).await
}

/// [`browser`], trusting the deployment CA (by its SPKI pin) if given.
async fn browser_trusting(pin: Option<&str>) -> Result<Chromium> {
    let mut flags: Vec<String> = vec![
        "--disable-background-timer-throttling".into(),
        "--disable-renderer-backgrounding".into(),
        "--disable-backgrounding-occluded-windows".into(),
    ];
    if let Some(pin) = pin {
        flags.push(format!("--ignore-certificate-errors-spki-list={pin}"));
    }
    Chromium::launch_with(&flags).await
}

async fn until_true(page: &Page, what: &str, js: &str, budget: Duration) -> Result<Duration> {
    let start = Instant::now();
    wait_until(what, budget, Duration::from_millis(20), || async {
        Ok((page.eval(js).await? == true).then_some(()))
    })
    .await
    .with_context(|| format!("{what}; page console:\n{}", page.console().join("\n")))?;
    Ok(start.elapsed())
}

/// Opens a partner console and logs in.
async fn partner(page: &Page, base: &str, (user, password): (&str, &str)) -> Result<()> {
    page.navigate(&format!("{base}/console")).await?;
    until_true(
        page,
        "the login form",
        "!!document.getElementById('login') && !document.getElementById('login').hidden",
        T,
    )
    .await?;
    let submit = format!(
        "(() => {{ document.getElementById('login-user').value = {}; \
           document.getElementById('login-password').value = {}; \
           document.getElementById('login-form').requestSubmit(); return true; }})()",
        serde_json::to_string(user)?,
        serde_json::to_string(password)?
    );
    page.eval(&submit).await?;
    let ready = format!(
        "!!(window.ponteConsole && window.ponteConsole.ready && window.ponteConsole.viewer === {})",
        serde_json::to_string(user)?
    );
    until_true(page, "the partner console to log in", &ready, T).await?;
    Ok(())
}

/// Opens the master console and logs in as `sala`.
async fn master(page: &Page, mgmt: &str) -> Result<()> {
    page.navigate(&format!("{mgmt}/master")).await?;
    until_true(page, "the master login form", "!!document.getElementById('login-user')", T).await?;
    let submit = format!(
        "(() => {{ document.getElementById('login-user').value = {}; \
           document.getElementById('login-pass').value = {}; \
           document.getElementById('login-go').click(); return true; }})()",
        serde_json::to_string(SALA.0)?,
        serde_json::to_string(SALA.1)?
    );
    page.eval(&submit).await?;
    until_true(
        page,
        "the master console to log in",
        "!!(window.ponteMaster && window.ponteMaster.ready && window.ponteMaster.state() && window.ponteMaster.state().operator === 'sala')",
        T,
    )
    .await?;
    Ok(())
}

/// Frames decoded by the tile showing `camera` (0 if none does).
async fn tile_frames(page: &Page, camera: &str) -> Result<u64> {
    let js = format!(
        "(async () => {{ const c = window.ponteConsole; const t = c.tiles(); const d = await c.decoded(); \
           const i = t.findIndex((x) => x.camera === {}); return i < 0 ? 0 : ((d[i] && d[i].frames) || 0); }})()",
        serde_json::to_string(camera)?
    );
    Ok(page.eval(&js).await?.as_u64().unwrap_or(0))
}

async fn wait_frames(page: &Page, camera: &str, want: u64) -> Result<()> {
    wait_until(
        &format!("tile of `{camera}` to decode {want} frames"),
        T,
        Duration::from_millis(50),
        || async { Ok((tile_frames(page, camera).await? >= want).then_some(())) },
    )
    .await
    .with_context(|| format!("page console:\n{}", page.console().join("\n")))
}

/// The message the tile of `camera` shows.
async fn tile_message(page: &Page, camera: &str) -> Result<String> {
    let js = format!(
        "(() => {{ const t = window.ponteConsole.tiles().find((x) => x.camera === {}); return t ? t.message : null; }})()",
        serde_json::to_string(camera)?
    );
    Ok(page.eval(&js).await?.as_str().unwrap_or_default().to_owned())
}

fn click(selector: &str) -> String {
    format!(
        "(() => {{ const b = document.querySelector({}); if (!b) return false; b.click(); return true; }})()",
        serde_json::to_string(selector).unwrap_or_default()
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn a_share_shows_at_the_partner_within_a_second_plays_and_ends_with_its_reason() -> Result<()> {
    let _e2e = ponte_tests::e2e_lock();
    if !Chromium::available() && !ponte_tests::require(false, "chromium", "apt-get install chromium") {
        return Ok(());
    }
    let rooms =
        Rooms::start(vec![synthetic("piazza", "Centro"), synthetic("stadio", "Stadio")], |_| {}).await?;
    assert!(!rooms.catalog(&rooms.questura).await?.contains(&"stadio".to_owned()), "the stadium is hidden");
    let browser = browser().await?;
    let q = browser.page();
    let m = browser.new_page().await?;
    partner(q, &rooms.questura.base_url(), BIANCHI).await?;
    master(&m, &rooms.mgmt).await?;

    // The master operator shares the stadium with the Questura for 2 minutes.
    until_true(&m, "the share form", "!!document.querySelector('input[data-share-camera=\"stadio\"]')", T)
        .await?;
    let fill = "(() => { document.getElementById('share-site').value = 'questura'; \
        document.querySelector('input[data-share-camera=\"stadio\"]').checked = true; \
        document.getElementById('share-minutes').value = '2'; \
        document.getElementById('share-note').value = 'rissa all\\'ingresso nord'; \
        document.getElementById('share-go').click(); return true; })()";
    m.eval(fill).await?;
    let shown = until_true(
        q,
        "the share offer on the Questura console",
        "!!document.querySelector('[data-share][data-state=\"offered\"]')",
        T,
    )
    .await?;
    println!("share offered → shown at the Questura: {} ms", shown.as_millis());
    assert!(shown < Duration::from_secs(1), "the offer took {shown:?}");
    let text = q.eval("document.querySelector('[data-share]').textContent").await?;
    assert!(text.as_str().unwrap_or_default().contains("nord"), "the note is shown: {text}");

    // Accepting puts the camera in a tile that decodes.
    q.eval(&click("[data-share] button[data-accept]")).await?;
    wait_frames(q, "stadio", 30).await?;
    until_true(
        &m,
        "the acceptance at the master",
        "(() => { const s = document.querySelector('[data-share][data-state=\"accepted\"] .accepted'); return !!s && s.textContent.includes('bianchi'); })()",
        T,
    )
    .await?;
    let lines = rooms.agent_audit()?;
    assert!(has_line(&lines, "share", "offered", "sala"), "share audited with the operator");
    assert!(
        has_line(&lines, "accept", "accepted", "bianchi@questura"),
        "acceptance audited with the operator"
    );

    // A short share (the API takes seconds for scripts): at its expiry the
    // tile ends within a second, saying why.
    let (status, v) = rooms
        .master(
            "POST",
            "/api/incidents/shares",
            Some(json!({"site":"questura","cameras":["stadio-2"],"seconds":8,"note":"x"})),
        )
        .await?;
    assert_eq!(status, 400, "an unknown camera is refused: {v}");
    let (status, v) =
        rooms.master("POST", &format!("/api/incidents/shares/{}/withdraw", 0), Some(json!({}))).await?;
    assert_eq!(status, 409, "{v}");
    // End the 2-minute share by withdrawing it first: the tile ends.
    let share = m.eval("window.ponteMaster.state().shares.find((s) => !s.ended).id").await?;
    let share = share.as_u64().context("the share's id")?;
    let (status, v) =
        rooms.master("POST", &format!("/api/incidents/shares/{share}/withdraw"), Some(json!({}))).await?;
    assert_eq!(status, 204, "{v}");
    let start = Instant::now();
    let ended = wait_until("the tile to end after the withdrawal", T, Duration::from_millis(20), || async {
        Ok(tile_message(q, "stadio").await?.contains("withdrawn").then_some(()))
    })
    .await;
    if ended.is_err() {
        bail!(
            "tile says {:?}; tiles {}",
            tile_message(q, "stadio").await?,
            q.eval("JSON.stringify(window.ponteConsole.tiles())").await?
        );
    }
    println!("share withdrawn → tile ended: {} ms", start.elapsed().as_millis());

    let (status, v) = rooms
        .master(
            "POST",
            "/api/incidents/shares",
            Some(json!({"site":"questura","cameras":["stadio"],"seconds":8,"note":"breve"})),
        )
        .await?;
    assert_eq!(status, 201, "{v}");
    let id = v["id"].as_u64().context("share id")?;
    let js = format!("!!document.querySelector('[data-share=\"{id}\"] button[data-accept]')");
    until_true(q, "the second offer", &js, T).await?;
    q.eval(&click(&format!("[data-share=\"{id}\"] button[data-accept]"))).await?;
    wait_frames(q, "stadio", 30).await?;
    let until = m
        .eval(&format!("window.ponteMaster.state().shares.find((s) => s.id === {id}).until_ms"))
        .await?
        .as_f64()
        .context("until_ms")?;
    wait_until("the tile to end at the share's expiry", T, Duration::from_millis(10), || async {
        Ok(tile_message(q, "stadio").await?.contains("expired").then_some(()))
    })
    .await?;
    let ended_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as f64)
        .context("end time")?;
    println!("share expiry → tile ended with the reason: {:.0} ms", ended_ms - until);
    assert!(ended_ms - until < 1000.0, "the tile ended {} ms after the expiry", ended_ms - until);
    assert!(!rooms.catalog(&rooms.questura).await?.contains(&"stadio".to_owned()), "hidden again");
    let lines = rooms.agent_audit()?;
    assert!(has_line(&lines, "withdraw", "ended", "sala"), "withdrawal audited");
    assert!(lines.iter().any(|l| l["action"] == "share" && l["outcome"] == "expired"), "expiry audited");
    let relay_lines = audit(&rooms.questura.audit_path())?;
    assert!(has_line(&relay_lines, "accept", "accepted", "bianchi"), "the relay audits the acceptance too");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn an_ask_is_approved_and_plays_and_a_refusal_shows_the_masters_reason() -> Result<()> {
    let _e2e = ponte_tests::e2e_lock();
    if !Chromium::available() && !ponte_tests::require(false, "chromium", "apt-get install chromium") {
        return Ok(());
    }
    // The master console over HTTPS (the agent's certificate), as deployed.
    let rooms =
        Rooms::start_with(vec![synthetic("piazza", "Centro"), synthetic("stadio", "Stadio")], |_| {}, true)
            .await?;
    assert!(rooms.mgmt.starts_with("https://"), "{}", rooms.mgmt);
    let browser = browser_trusting(Some(&rooms.ca_pin)).await?;
    let c = browser.page();
    let m = browser.new_page().await?;
    partner(c, &rooms.carabinieri.base_url(), ROSSI).await?;
    master(&m, &rooms.mgmt).await?;

    let ask = |camera: &str, reason: &str| {
        format!(
            "(() => {{ document.getElementById('ask-camera').value = {}; document.getElementById('ask-reason').value = {}; \
               document.getElementById('ask-send').click(); return true; }})()",
            serde_json::to_string(camera).unwrap_or_default(),
            serde_json::to_string(reason).unwrap_or_default()
        )
    };
    c.eval(&ask("stadio", "inseguimento verso lo stadio")).await?;
    until_true(
        &m,
        "the ask at the master",
        "!!document.querySelector('[data-ask][data-state=\"pending\"] button[data-approve]')",
        T,
    )
    .await?;
    let text = m.eval("document.querySelector('[data-ask]').textContent").await?;
    assert!(text.as_str().unwrap_or_default().contains("inseguimento"), "the reason is shown: {text}");
    m.eval(
        "(() => { const r = document.querySelector('[data-ask][data-state=\"pending\"]'); \
           r.querySelector('input[data-minutes]').value = '1'; r.querySelector('button[data-approve]').click(); return true; })()",
    )
    .await?;
    until_true(
        c,
        "the approval on the Carabinieri console",
        "!!document.querySelector('[data-ask][data-state=\"approved\"]')",
        T,
    )
    .await?;
    wait_frames(c, "stadio", 30).await?;
    let lines = rooms.agent_audit()?;
    assert!(has_line(&lines, "ask", "pending", "rossi@carabinieri"), "ask audited");
    assert!(has_line(&lines, "approve", "approved", "sala"), "approval audited");
    let explain = std::process::Command::new(bin_path("ponte-agent")?)
        .args(["policy", "explain", "--config"])
        .arg(&rooms.agent_toml)
        .args(["--site", "carabinieri", "--camera", "stadio"])
        .output()?;
    let out = String::from_utf8_lossy(&explain.stdout);
    assert!(out.contains("approval") && out.contains("`sala`"), "policy explain shows the approval: {out}");

    // A refusal carries the master's reason.
    c.eval(&ask("deposito", "controllo")).await?;
    until_true(
        &m,
        "the second ask",
        "!!document.querySelector('[data-ask][data-state=\"pending\"] button[data-refuse]')",
        T,
    )
    .await?;
    m.eval(
        "(() => { const r = document.querySelector('[data-ask][data-state=\"pending\"]'); \
           r.querySelector('input[data-reason]').value = 'telecamera in manutenzione'; r.querySelector('button[data-refuse]').click(); return true; })()",
    )
    .await?;
    until_true(
        c,
        "the refusal and its reason at the Carabinieri",
        "(() => { const r = document.querySelector('[data-ask][data-state=\"refused\"] .answer'); return !!r && r.textContent.includes('manutenzione'); })()",
        T,
    )
    .await?;
    assert!(has_line(&rooms.agent_audit()?, "refuse", "refused", "sala"), "refusal audited");
    Ok(())
}

/// The test ONVIF camera, raising events on `POST /test/events`.
struct EventCamera {
    _proc: Proc,
    port: u16,
}

impl EventCamera {
    async fn start() -> Result<EventCamera> {
        let mut cmd = std::process::Command::new(PYTHON);
        cmd.arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("onvif_camera.py"))
            .args(["--port", "0", "--user", "admin", "--password", "secret"])
            .arg("--schemas")
            .arg(schema_dir());
        let mut proc = Proc::spawn_command("onvif-camera", cmd)?;
        let line = proc.wait_for_line("LISTENING ", T).await?;
        let port = line.rsplit(' ').next().and_then(|p| p.trim().parse().ok()).context("no port")?;
        Ok(EventCamera { _proc: proc, port })
    }

    fn device(&self) -> Result<Device> {
        let toml = format!(
            "id = \"gate\"\nname = \"Varco stadio\"\nzone = \"Stadio\"\ntype = \"fixed\"\nsource = \"synthetic\"\n\
             [onvif]\nurl = \"http://127.0.0.1:{}/onvif/device_service\"\nevents = true\n\
             username = \"admin\"\npassword = \"secret\"\n",
            self.port
        );
        toml::from_str(&toml).context("the device table")
    }

    async fn raise(&self, query: &str) -> Result<Value> {
        let url = format!("http://127.0.0.1:{}/test/events{query}", self.port);
        http_request("POST", &url, &[], b"", Duration::from_secs(5)).await?.ensure_success()?.json()
    }

    /// Waits until the agent's pull point is live.
    async fn wait_subscribed(&self) -> Result<()> {
        let url = format!("http://127.0.0.1:{}/test/events", self.port);
        wait_until("the agent's ONVIF subscription", T, Duration::from_millis(100), || async {
            let v: Value = http_request("GET", &url, &[], b"", Duration::from_secs(5))
                .await?
                .ensure_success()?
                .json()?;
            let live = v.get("live").and_then(Value::as_u64).or_else(|| v.as_array().map(|a| a.len() as u64));
            Ok((live.unwrap_or(0) >= 1).then_some(()))
        })
        .await
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_camera_alarm_reaches_only_the_sites_that_see_it_with_a_thumbnail_and_is_rate_limited() -> Result<()>
{
    let _e2e = ponte_tests::e2e_lock();
    if !require_onvif_camera() {
        return Ok(());
    }
    if !Chromium::available() && !ponte_tests::require(false, "chromium", "apt-get install chromium") {
        return Ok(());
    }
    let camera = EventCamera::start().await?;
    let rooms = Rooms::start(vec![synthetic("piazza", "Centro"), camera.device()?], |a| {
        a.node.incidents.alarm_interval_secs = 1;
    })
    .await?;
    camera.wait_subscribed().await?;
    // Two browsers: both relays are on 127.0.0.1, and cookies do not tell
    // ports apart (one login would replace the other's session).
    let (browser, other) = (self::browser().await?, self::browser().await?);
    let c = browser.page();
    let q = other.page();
    let m = browser.new_page().await?;
    partner(c, &rooms.carabinieri.base_url(), ROSSI).await?;
    partner(q, &rooms.questura.base_url(), BIANCHI).await?;
    master(&m, &rooms.mgmt).await?;
    // The gate is kept on for the Carabinieri: its picture is cached.
    tokio::time::sleep(Duration::from_secs(2)).await;

    camera.raise("?kind=motion&state=true").await?;
    let shown = until_true(
        c,
        "the alarm with its thumbnail on the Carabinieri console",
        "(() => { const i = document.querySelector('[data-alarm] img.thumb'); return !!i && i.complete && i.naturalWidth > 0; })()",
        T,
    )
    .await;
    let shown = match shown {
        Ok(d) => d,
        Err(e) => bail!(
            "{e:#}\nincidents: {}\nalarms: {}",
            c.eval("JSON.stringify(window.ponteConsole.incidents())").await?,
            c.eval("[...document.querySelectorAll('[data-alarm]')].map((a) => a.outerHTML).join('\\n')")
                .await?
        ),
    };
    println!("motion → alarm with thumbnail at the Carabinieri: {} ms", shown.as_millis());
    assert!(shown < Duration::from_secs(1), "the alarm took {shown:?}");
    let kind = c.eval("window.ponteConsole.incidents().alarms[0].kind").await?;
    assert_eq!(kind, "motion");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let q_alarms = q.eval("(window.ponteConsole.incidents() || {alarms: []}).alarms.length + document.querySelectorAll('[data-alarm]').length").await?;
    assert_eq!(q_alarms, 0, "the Questura does not see the gate and gets no alarm");

    c.eval(&click("[data-alarm] button[data-ack]")).await?;
    until_true(
        &m,
        "the acknowledgement at the master",
        "(() => { const a = document.querySelector('[data-alarm] .acks'); return !!a && a.textContent.includes('rossi'); })()",
        T,
    )
    .await?;
    for (page, name) in [(c, "partner"), (&m, "master")] {
        let shot = std::env::temp_dir().join(format!("ponte-incidents-{name}-{}.png", std::process::id()));
        match page.screenshot(&shot).await {
            Ok(()) => eprintln!("screenshot: {}", shot.display()),
            Err(e) => eprintln!("screenshot failed: {e:#}"),
        }
    }
    let lines = rooms.agent_audit()?;
    assert!(lines.iter().any(|l| l["action"] == "alarm" && l["outcome"] == "motion"), "alarm audited");
    assert!(has_line(&lines, "acknowledge", "acknowledged", "rossi@carabinieri"), "ack audited");

    // A chattering camera: 100 events/s for 3 s, one alarm per second at most.
    let before = rooms.master("GET", "/api/incidents", None).await?.1;
    let count =
        |v: &Value| v["alarms"].as_array().map_or(0, |a| a.iter().filter(|x| x["kind"] == "motion").count());
    let (alarms_before, start) = (count(&before), Instant::now());
    camera.raise("?kind=motion&count=300&rate=100&state=true").await?;
    tokio::time::sleep(Duration::from_secs(4)).await;
    let after = rooms.master("GET", "/api/incidents", None).await?.1;
    let raised = count(&after) - alarms_before;
    let seconds = start.elapsed().as_secs_f64();
    let suppressed = after["suppressed_total"].as_u64().unwrap_or(0);
    println!("300 events in 3 s → {raised} alarms, {suppressed} suppressed");
    assert!(
        raised >= 1 && raised as f64 <= seconds + 1.0,
        "{raised} alarms in {seconds:.1} s at one per second"
    );
    assert!(
        suppressed + raised as u64 >= 290,
        "the rest are counted: {suppressed} suppressed, {raised} raised"
    );
    // On-call staff see the counter in /metrics (the status sampler runs every second).
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let metrics = ponte_tests::http_get(&format!("{}/metrics", rooms.mgmt)).await?.ensure_success()?;
    let text = String::from_utf8_lossy(&metrics.body).into_owned();
    let line = text
        .lines()
        .find(|l| l.starts_with("ponte_alarms_total{outcome=\"suppressed\"}"))
        .unwrap_or_default();
    let counted: f64 = line.rsplit(' ').next().and_then(|v| v.parse().ok()).unwrap_or(0.0);
    assert!(counted >= suppressed as f64, "/metrics counts the suppressed alarms: {line:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn an_agent_restart_keeps_an_unexpired_share_and_drops_an_expired_one() -> Result<()> {
    let _e2e = ponte_tests::e2e_lock();
    let mut rooms = Rooms::start(
        vec![synthetic("piazza", "Centro"), synthetic("stadio", "Stadio"), synthetic("curva", "Stadio")],
        |_| {},
    )
    .await?;
    let share = |camera: &str, body: Value| {
        let mut b = body;
        b["site"] = json!("questura");
        b["cameras"] = json!([camera]);
        b["note"] = json!("derby");
        b
    };
    let (status, v) =
        rooms.master("POST", "/api/incidents/shares", Some(share("stadio", json!({"minutes": 2})))).await?;
    assert_eq!(status, 201, "{v}");
    let (status, v) =
        rooms.master("POST", "/api/incidents/shares", Some(share("curva", json!({"seconds": 5})))).await?;
    assert_eq!(status, 201, "{v}");
    wait_until("both shared cameras at the Questura", T, Duration::from_millis(50), || async {
        let ids = rooms.catalog(&rooms.questura).await?;
        Ok((ids.contains(&"stadio".to_owned()) && ids.contains(&"curva".to_owned())).then_some(()))
    })
    .await?;

    rooms.agent.signal(libc::SIGTERM)?;
    rooms.agent.wait_exit(T).await?;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let explain = std::process::Command::new(bin_path("ponte-agent")?)
        .args(["policy", "explain", "--config"])
        .arg(&rooms.agent_toml)
        .args(["--site", "questura"])
        .output()?;
    let out = String::from_utf8_lossy(&explain.stdout).into_owned();
    let row = |camera: &str| out.lines().find(|l| l.starts_with(camera)).unwrap_or_default().to_owned();
    assert!(
        row("stadio").contains("share")
            && row("stadio").contains("`sala`")
            && row("stadio").contains(" yes "),
        "{out}"
    );
    assert!(!row("curva").contains(" yes "), "the expired share is gone: {out}");

    rooms.agent = ponte_tests::spawn_node("ponte-agent", &rooms.agent_toml)?;
    let start = Instant::now();
    wait_until("the kept share at the Questura after the restart", T, Duration::from_millis(50), || async {
        let ids = rooms.catalog(&rooms.questura).await?;
        Ok((ids.contains(&"stadio".to_owned()) && ids.contains(&"piazza".to_owned())).then_some(ids))
    })
    .await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let ids = rooms.catalog(&rooms.questura).await?;
    assert!(!ids.contains(&"curva".to_owned()), "the expired share is not restored: {ids:?}");
    println!("restart → kept share back in the Questura's catalog: {} ms", start.elapsed().as_millis());
    let lines = rooms.agent_audit()?;
    assert!(lines.iter().any(|l| l["action"] == "share" && l["outcome"] == "restored"), "kept share audited");
    assert!(
        lines.iter().any(|l| l["action"] == "share" && l["outcome"] == "expired"),
        "dropped share audited"
    );
    let _ = rooms.dir.path();
    if ids.is_empty() {
        bail!("no catalog");
    }
    Ok(())
}

/// Two agents of one master room (`[redundancy]`): a share given at
/// `master-a` is taken over by `master-b` over their link, so when
/// `master-a` dies the Questura keeps the shared camera from `master-b`.
#[tokio::test(flavor = "multi_thread")]
async fn a_share_outlives_the_agent_that_gave_it() -> Result<()> {
    use ponte_agent::config::{PeerAgent, RedundancySection};
    use ponte_proto::incident::Notice;
    use ponte_proto::wire::Control;
    use ponte_tests::quic::{Answer, FakeRelay};
    let _e2e = ponte_tests::e2e_lock();
    let dir = tempfile::tempdir()?;
    let pki = Pki::create(dir.path().join("pki"), &["master-a", "master-b", "questura"]).await?;
    let qu = FakeRelay::listen(&pki, "questura")?;
    let target = RelayTarget::new("questura", qu.endpoint.local_addr()?);
    let (token, operator) = ponte_tests::operator_token("sala")?;
    let ports = [free_udp_port(), free_udp_port()];
    let at = |port| SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let names = ["master-a", "master-b"];
    let mut agents = Vec::new();
    let mut mgmt = Vec::new();
    for i in 0..2 {
        let (me, other) = (names[i], names[1 - i]);
        let mut cfg = AgentConfig::new(
            me,
            pki.tls(me),
            vec![target.clone()],
            vec![synthetic("piazza", "Centro"), synthetic("stadio", "Stadio")],
        );
        cfg.node.sites = vec![site_policy("questura", &["zone:Centro"])];
        cfg.node.operators = vec![operator.clone()];
        cfg.node.audit.path = dir.path().join(format!("{me}-audit.log"));
        cfg.node.incidents.state_file = Some(dir.path().join(format!("{me}-incidents.json")));
        cfg.node.redundancy = RedundancySection {
            listen: Some(at(ports[i])),
            peers: vec![PeerAgent { site: other.into(), addr: at(ports[1 - i]), server_name: None }],
        };
        let mut proc =
            ponte_tests::spawn_node("ponte-agent", &cfg.write(dir.path().join(format!("{me}.toml")))?)?;
        mgmt.push(proc.management_url(T).await?);
        agents.push(proc);
    }
    let mut s1 = qu.accept().await?;
    let mut s2 = qu.accept().await?;
    wait_until("the agents to link", T, Duration::from_millis(100), || async {
        Ok(agents[0].lines().iter().any(|l| l.contains("PTZ locks are shared")).then_some(()))
    })
    .await?;

    let bearer = format!("Bearer {token}");
    let body = json!({"site": "questura", "cameras": ["stadio"], "minutes": 2, "note": "derby"}).to_string();
    let r = http_request(
        "POST",
        &format!("{}/api/incidents/shares", mgmt[0]),
        &[("authorization", &bearer), ("content-type", "application/json")],
        body.as_bytes(),
        Duration::from_secs(5),
    )
    .await?;
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));

    // Both sessions hear of the share and list the camera: master-b's too.
    for s in [&mut s1, &mut s2] {
        let (mut offered, mut listed) = (false, false);
        while !(offered && listed) {
            match s.next_control().await? {
                Control::Incident { notice: Notice::Share { cameras, .. } } => {
                    offered = cameras == ["stadio"]
                }
                Control::Catalog { cameras } => listed = cameras.iter().any(|c| c.id == "stadio"),
                _ => {}
            }
        }
    }
    let b_audit = audit(&dir.path().join("master-b-audit.log"))?;
    let b_state = std::fs::read_to_string(dir.path().join("master-b-incidents.json"))?;
    assert!(b_state.contains("\"stadio\""), "master-b keeps the share across its own restart: {b_state}");
    assert!(b_audit.iter().any(|l| l["action"] == "share" && l["outcome"] == "replicated"), "{b_audit:?}");

    // master-a dies; the session from master-b still grants the camera.
    agents[0].signal(libc::SIGKILL)?;
    agents[0].wait_exit(T).await?;
    let from_b =
        if ponte_proto::tls::peer_site(&s1.conn).as_deref() == Some("master-b") { &mut s1 } else { &mut s2 };
    match from_b.subscribe(1, "stadio", ponte_proto::media::Quality::Main).await? {
        Answer::Ok => {}
        other => bail!("master-b after master-a died: {other:?}"),
    }
    Ok(())
}
