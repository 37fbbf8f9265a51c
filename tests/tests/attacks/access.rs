//! Who may feed a relay and who may use it: another partner's relay posing
//! as the agent with its own certificate of the deployment CA, a relay that
//! would serve everyone because nobody gave it accounts, a second login of
//! an account ending or crowding out the first one's streams, and one IPv6
//! host locking its whole LAN out of the login page.

use super::http::{log_in_and_play, relay_accounts, ANNA_PASSWORD};
use anyhow::{bail, Context, Result};
use ponte_proto::media::{Codec, Quality};
use ponte_proto::session::{self, close_code};
use ponte_proto::tls::{self, Identity, TransportOptions};
use ponte_proto::wire::{CatalogEntry, Control, Role, PROTOCOL_VERSION};
use ponte_tests::{
    bin_path, free_tcp_port, http_get, http_request, Chromium, Device, DeviceExt, HttpResponse, Pki, Proc,
    RelayConfig, RtspReader, Stack, StackSpec, Tweak,
};
use serde_json::Value;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

const T: Duration = Duration::from_secs(20);

/// The relay's audit log, one JSON value per line.
fn audit(path: &Path) -> Result<Vec<Value>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(text.lines().filter_map(|l| serde_json::from_str(l).ok()).collect())
}

fn entry(id: &str, zone: &str) -> CatalogEntry {
    CatalogEntry {
        id: id.into(),
        device: id.into(),
        lens: 1,
        name: format!("{id} (rogue)"),
        zone: zone.into(),
        kind: "dome-ptz".into(),
        codec: Codec::H264,
        qualities: vec![Quality::Main],
        ptz: true,
        always_on: false,
        sub_codec: None,
        sub_transcoded: false,
        tags: Vec::new(),
        dual_path: false,
    }
}

/// Dials the relay with `site`'s real certificate from the deployment's CA,
/// says Hello as `role` and, if the relay lets it that far, sends a catalog
/// that adds a camera and shadows `cam-a` in a zone of its own. Returns how
/// the relay ended the connection.
async fn pose_as_upstream(pki: &Pki, site: &str, role: Role, relay: std::net::SocketAddr) -> Result<String> {
    let id = Identity::load(&pki.ca_cert(), &pki.cert(site), &pki.key(site))?;
    let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse()?)?;
    endpoint.set_default_client_config(tls::client_config(&id, &TransportOptions::default())?);
    let conn = endpoint.connect(relay, "localhost")?.await.context("TLS handshake with the relay")?;
    let hello = Control::Hello { version: PROTOCOL_VERSION, node: "master".into(), role, policy: None };
    if let Ok(Ok((mut tx, _rx, _))) = tokio::time::timeout(T, session::open_control(&conn, &hello)).await {
        let cameras = vec![entry("rogue-cam", "Po"), entry("cam-a", "widened")];
        let _ = tx.send(&Control::Catalog { cameras }).await;
    }
    let closed = tokio::time::timeout(Duration::from_secs(5), conn.closed())
        .await
        .with_context(|| format!("the relay kept a session of `{site}` as {role:?} open for 5 s"))?;
    match closed {
        quinn::ConnectionError::ApplicationClosed(c) if c.error_code == close_code::FORBIDDEN.into() => {
            Ok(String::from_utf8_lossy(&c.reason).into_owned())
        }
        other => bail!("the relay closed `{site}`'s session, but not as FORBIDDEN: {other}"),
    }
}

/// The Questura relay's own key dials the Carabinieri relay and says it is
/// the agent. Before the fix the relay took its catalog: a camera of its
/// own, `cam-a` re-zoned (a wider scope for narrowed accounts), and every
/// orphan during a fibre cut. Now the session is closed FORBIDDEN before a
/// word, audited with the certificate's site and address; the master's
/// own identity speaking as a relay is closed too; the site's VMS decodes
/// through it all.
#[tokio::test]
async fn rogue_upstream_with_a_partner_certificate_is_refused() -> Result<()> {
    let _heavy = ponte_tests::e2e_lock();
    let rtsp = free_tcp_port();
    let stack = Stack::start_with(StackSpec {
        devices: vec![Device::synthetic("cam-a")],
        relay: Tweak::relay(move |relay| {
            relay.rtsp_on(rtsp);
        }),
        ..StackSpec::default()
    })
    .await?;
    stack.pki.issue("questura", &["localhost"], &["127.0.0.1"]).await?;
    let vms = RtspReader::start(&format!("rtsp://127.0.0.1:{rtsp}/cam-a"), 15)?;
    vms.decodes(10, T).await?;

    let why =
        pose_as_upstream(&stack.pki, "questura", Role::Agent, stack.relay_config.relay.quic_listen).await?;
    println!("rogue relay closed: {why}");
    let why =
        pose_as_upstream(&stack.pki, "master", Role::Relay, stack.relay_config.relay.quic_listen).await?;
    println!("master posing as a relay closed: {why}");

    tokio::time::sleep(Duration::from_secs(1)).await;
    let catalog = http_get(&format!("{}/api/catalog", stack.base_url())).await?.json()?;
    let cameras = catalog["cameras"].as_array().context("catalog")?;
    assert_eq!(cameras.len(), 1, "nothing injected: {catalog}");
    assert_eq!(cameras[0]["id"], "cam-a");
    assert_ne!(cameras[0]["zone"], "widened", "cam-a keeps the master's entry: {catalog}");

    let lines = audit(&stack.relay_config.audit_path())?;
    let refused: Vec<&Value> =
        lines.iter().filter(|l| l["action"] == "upstream" && l["outcome"] == "forbidden").collect();
    assert!(
        refused.iter().any(|l| l["viewer"] == "site:questura"
            && l["client"].as_str().is_some_and(|c| c.starts_with("127.0.0.1:"))
            && l["reason"].as_str().is_some_and(|r| r.contains("relay.upstreams"))),
        "{refused:?}"
    );
    assert!(refused.iter().any(|l| l["viewer"] == "site:master"), "the wrong role is audited: {refused:?}");

    let before = vms.frames();
    let frames = vms.finish().await?;
    println!("the VMS decoded {frames} frames, {} of them after the attacks", frames - before);
    assert!(frames > before + 10, "the site's VMS kept decoding: {before} then {frames}");
    Ok(())
}

/// A relay whose config has no `[[viewer]]` and no `[[token]]` used to
/// serve every camera of its site to anyone who reached it. Now it refuses
/// to start unless told `relay.allow_anonymous = true`.
#[tokio::test]
async fn relay_without_accounts_refuses_to_start() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let pki = Pki::create(dir.path().join("pki"), &["carabinieri"]).await?;
    let localhost = |port: u16| std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let mut cfg = RelayConfig::new(
        "carabinieri",
        localhost(ponte_tests::free_udp_port()),
        localhost(free_tcp_port()),
        pki.tls("carabinieri"),
    );
    cfg.relay.allow_anonymous = false;
    let path = cfg.write(dir.path().join("relay.toml"))?;
    let mut cmd = Command::new(bin_path("ponte-relay")?);
    cmd.arg("run").arg("--config").arg(&path);
    let mut relay = Proc::spawn_command("relay", cmd)?;
    let status = relay.wait_exit(T).await.context("the relay kept running without accounts")?;
    assert!(!status.success());
    let said = relay.lines().join("\n");
    assert!(said.contains("relay.allow_anonymous") && said.contains("ponte-relay passwd"), "{said}");
    assert!(http_get(&format!("{}/api/catalog", cfg.base_url())).await.is_err(), "nothing listens");
    Ok(())
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

/// Anna watches in a browser. Someone else logged in as anna (a shared duty
/// account, or a stolen password) read the session ids in `/api/status`
/// and ended her stream with `DELETE`, or opened streams until every slot
/// was taken. Now status shows 8 characters of an id, only the login that
/// opened a session may end it, and `whep.max_per_viewer` caps an account's
/// streams (audited); another account still gets a stream.
#[tokio::test]
async fn whep_session_cannot_be_ended_or_crowded_out_by_another_login() -> Result<()> {
    if !ponte_tests::require_program(Chromium::binary(), "chromium") {
        return Ok(());
    }
    let _heavy = ponte_tests::e2e_lock();
    let (ops, accounts) = relay_accounts()?;
    let stack = Stack::start_with(StackSpec {
        devices: vec![Device::synthetic("cam-a")],
        relay: Tweak::relay(move |relay| {
            accounts.add_to(relay);
            relay.whep.max_per_viewer = 1;
        }),
        catalog_token: Some(ops.clone()),
        ..StackSpec::default()
    })
    .await?;
    let browser = Chromium::launch().await?;
    log_in_and_play(&browser, &format!("{}/?camera=cam-a", stack.base_url())).await?;
    let frames = || async {
        let v = browser.eval("(async () => (await window.ponteViewer.stats())?.framesDecoded ?? 0)()").await;
        v.ok().and_then(|v| v.as_f64()).unwrap_or(0.0) as u64
    };

    let form = ("Content-Type", "application/x-www-form-urlencoded");
    let login =
        request(&stack, "POST", "/login", &[form], format!("user=anna&password={ANNA_PASSWORD}").as_bytes())
            .await;
    assert_eq!(login.status, 204, "{}", login.text());
    let cookie = login.header("set-cookie").and_then(|c| c.split(';').next()).context("cookie")?.to_owned();
    let other = ("Cookie", cookie.as_str());
    let status = request(&stack, "GET", "/api/status", &[other], b"").await.json()?;
    let ids: Vec<String> = status["viewers"]
        .as_array()
        .context("viewers")?
        .iter()
        .filter_map(|v| v["id"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(ids.len(), 1, "{status}");
    assert_eq!(ids[0].len(), 8, "status shows part of the id only: {status}");
    let delete = request(&stack, "DELETE", &format!("/whep/session/{}", ids[0]), &[other], b"").await;
    assert_eq!(delete.status, 404, "{}", delete.text());

    // The same account's second stream, with a real browser offer.
    let offer = browser
        .eval(
            "(async () => { const pc = new RTCPeerConnection(); \
               pc.addTransceiver('video', { direction: 'recvonly' }); \
               const o = await pc.createOffer(); pc.close(); return o.sdp; })()",
        )
        .await?;
    let offer = offer.as_str().context("an SDP offer")?.to_owned();
    let sdp = ("Content-Type", "application/sdp");
    let second = request(&stack, "POST", "/whep/cam-a", &[other, sdp], offer.as_bytes()).await;
    assert_eq!(second.status, 503, "{}", second.text());
    assert!(second.text().contains("`whep.max_per_viewer`"), "{}", second.text());
    let bearer = format!("Bearer {ops}");
    let ops_stream =
        request(&stack, "POST", "/whep/cam-a", &[("Authorization", &bearer), sdp], offer.as_bytes()).await;
    assert_eq!(ops_stream.status, 201, "another account still gets a stream: {}", ops_stream.text());
    if let Some(location) = ops_stream.header("location") {
        let _ = request(&stack, "DELETE", location, &[("Authorization", &bearer)], b"").await;
    }

    let before = frames().await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = frames().await;
    assert!(after > before + 5, "anna's browser plays on: {before} then {after}");
    let lines = audit(&stack.relay_config.audit_path())?;
    assert!(
        lines.iter().any(|l| l["action"] == "refused"
            && l["outcome"] == "over-limit"
            && l["viewer"] == "anna"
            && l["reason"].as_str().is_some_and(|r| r.contains("whep.max_per_viewer"))),
        "{lines:?}"
    );
    assert!(!lines.iter().any(|l| l["action"] == "view-stop" && l["viewer"] == "anna"), "{lines:?}");
    Ok(())
}

/// A namespace with IPv6 addresses of one /64 on its loopback; deleted on drop.
struct V6Lan {
    ns: String,
}

impl V6Lan {
    const PREFIX: &'static str = "2001:db8:a";

    fn create(hosts: &[u16]) -> Result<V6Lan> {
        let ns = format!("ponte-ns-v6-{}", std::process::id());
        let _ = ip(&["netns", "del", &ns]);
        ip(&["netns", "add", &ns])?;
        let lan = V6Lan { ns };
        ip(&["-n", &lan.ns, "link", "set", "lo", "up"])?;
        for h in hosts {
            ip(&["-n", &lan.ns, "addr", "add", &format!("{}::{h:x}/64", Self::PREFIX), "dev", "lo"])?;
        }
        Ok(lan)
    }

    fn addr(host: u16) -> String {
        format!("{}::{host:x}", Self::PREFIX)
    }

    /// `POST /login` from `host` with curl: the status code.
    async fn login(&self, host: u16, url: &str, password: &str) -> Result<u16> {
        let out = tokio::process::Command::new("ip")
            .args(["netns", "exec", &self.ns, "curl", "-sS", "-g", "-o", "/dev/null", "-w", "%{http_code}"])
            .args(["--max-time", "10", "--interface", &Self::addr(host), "--data"])
            .arg(format!("user=anna&password={password}"))
            .arg(format!("{url}/login"))
            .output()
            .await
            .context("running curl")?;
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .with_context(|| format!("curl said {}", String::from_utf8_lossy(&out.stderr)))
    }
}

impl Drop for V6Lan {
    fn drop(&mut self) {
        let _ = ip(&["netns", "del", &self.ns]);
    }
}

fn ip(args: &[&str]) -> Result<()> {
    let out = Command::new("ip").args(args).output().context("running ip")?;
    if !out.status.success() {
        bail!("ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}

/// One host of a SLAAC LAN guesses anna's password. The brake counted IPv6
/// clients by their /64, so it locked every operator of that LAN out. Now
/// it brakes the guessing address (even with the right password), while a
/// colleague on the same /64 logs in; the /64 has a looser limit of its own.
#[tokio::test]
async fn login_guessing_from_one_ipv6_host_does_not_lock_out_its_lan() -> Result<()> {
    if !ponte_tests::require_root() || !ponte_tests::require_program("/usr/bin/curl", "curl") {
        return Ok(());
    }
    let (_, accounts) = relay_accounts()?;
    let lan = V6Lan::create(&[1, 7, 0x66])?;
    let dir = tempfile::tempdir()?;
    let pki = Pki::create(dir.path().join("pki"), &["carabinieri"]).await?;
    let relay_ip = V6Lan::addr(1);
    let mut cfg = RelayConfig::new(
        "carabinieri",
        format!("[{relay_ip}]:7443").parse()?,
        format!("[{relay_ip}]:8080").parse()?,
        pki.tls("carabinieri"),
    );
    accounts.add_to(&mut cfg);
    let path = cfg.write(dir.path().join("relay.toml"))?;
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", &lan.ns]).arg(bin_path("ponte-relay")?).arg("run").arg("--config").arg(&path);
    let mut relay = Proc::spawn_command("relay", cmd)?;
    relay.wait_for_line("relay started", T).await?;
    let url = format!("http://[{relay_ip}]:8080");

    let guesses = (0..5).map(|_| lan.login(0x66, &url, "wrong"));
    let answers: Vec<u16> =
        futures_util::future::join_all(guesses).await.into_iter().collect::<Result<_>>()?;
    assert_eq!(answers, [401; 5], "five wrong passwords are checked");
    assert_eq!(
        lan.login(0x66, &url, ANNA_PASSWORD).await?,
        429,
        "the guessing host is braked, right password or not"
    );
    assert_eq!(lan.login(7, &url, ANNA_PASSWORD).await?, 204, "a colleague on the same /64 logs in");
    let lines = audit(&cfg.audit_path())?;
    let failed =
        lines.iter().filter(|l| l["action"] == "login" && l["client"] == V6Lan::addr(0x66).as_str()).count();
    assert!(failed >= 5, "{lines:?}");
    assert!(lines
        .iter()
        .any(|l| l["action"] == "login" && l["outcome"] == "ok" && l["client"] == V6Lan::addr(7).as_str()));
    Ok(())
}
