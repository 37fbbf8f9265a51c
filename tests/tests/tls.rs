//! Issue 19 end to end, real binaries: the viewer page over HTTPS in a
//! real Chromium that trusts the relay only through the deployment CA's
//! SPKI pin; revoking a relay's certificate while it streams; renewing one
//! while it streams. (The audit anchors and the operator's name crossing
//! the fibre are in `tls_audit.rs`.)

use anyhow::{bail, Context, Result};
use ponte_proto::tls::https::HttpsSection;
use ponte_tests::{
    free_tcp_port, free_udp_port, relay_viewer, spawn_node, AgentConfig, Chromium, Device, DeviceExt, Pki,
    Proc, RelayConfig, RelayTarget, RtspReader,
};
use serde_json::Value;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(30);
const OP_PASSWORD: &str = "piazza-stradivari-1680";

fn localhost(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// `ponte-agent pki ARGS` in `pki`'s directory; its stdout.
fn pki_cli(pki: &Pki, args: &[&str]) -> Result<String> {
    let dir = pki.dir().to_string_lossy().into_owned();
    let mut all = vec!["pki"];
    all.extend_from_slice(args);
    all.extend(["--dir", dir.as_str()]);
    ponte_tests::agent_cli(&all, "")
}

/// One `curl` exchange: status, headers (lower-case names), body.
struct Curl {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Curl {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
}

/// `curl` (HTTPS with `--cacert`, so the deployment CA is the only root).
async fn curl(args: &[&str]) -> Result<Curl> {
    let out = tokio::process::Command::new("curl")
        .args(["-sS", "--max-time", "10", "-D", "-", "-o", "/dev/stdout"])
        .args(args)
        .output()
        .await
        .context("running curl (Debian package curl)")?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        bail!("curl {args:?}: {}{text}", String::from_utf8_lossy(&out.stderr));
    }
    // The last header block (HTTP/2 has one; no redirects are followed).
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("no status line in {head:?}"))?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    Ok(Curl { status, headers, body: body.to_owned() })
}

/// Base64 SHA-256 of the CA's public key: the pin Chromium is given.
fn ca_spki_pin(pki: &Pki) -> Result<String> {
    let pem = std::fs::read(pki.ca_cert())?;
    let (_, pem) = x509_parser::pem::parse_x509_pem(&pem).map_err(|e| anyhow::anyhow!("CA PEM: {e}"))?;
    ponte_proto::tls::https::spki_sha256_base64(&pem.contents).context("CA certificate")
}

/// `window.ponteViewer.stats()`, or null while the page is not ready.
const STATS_JS: &str = "(async () => { \
    const v = window.ponteViewer; \
    if (!v || typeof v.stats !== 'function') return null; \
    return (await v.stats()) ?? null; })()";

fn frames(stats: &Value) -> u64 {
    stats.get("framesDecoded").and_then(Value::as_f64).unwrap_or(0.0) as u64
}

/// An agent with one synthetic camera feeding relay `carabinieri` served
/// over HTTPS (its own deployment certificate, which names `localhost`),
/// with a plain-HTTP port that only redirects; account `op`.
struct HttpsSite {
    _dir: tempfile::TempDir,
    pki: Pki,
    relay: RelayConfig,
    _procs: Vec<Proc>,
    redirect: u16,
    agent_audit: PathBuf,
}

impl HttpsSite {
    async fn start() -> Result<HttpsSite> {
        let dir = tempfile::Builder::new().prefix("ponte-tls-").tempdir()?;
        let pki = Pki::create(dir.path().join("pki"), &["master", "carabinieri"]).await?;
        let redirect = free_tcp_port();
        let mut relay = RelayConfig::new(
            "carabinieri",
            localhost(free_udp_port()),
            localhost(free_tcp_port()),
            pki.tls("carabinieri"),
        );
        relay.viewer(relay_viewer("op", OP_PASSWORD)?);
        relay.relay.https = Some(HttpsSection {
            cert: pki.cert("carabinieri"),
            key: pki.key("carabinieri"),
            redirect_listen: Some(localhost(redirect)),
        });
        let agent = AgentConfig::new(
            "master",
            pki.tls("master"),
            vec![RelayTarget::new("carabinieri", relay.relay.quic_listen)],
            vec![Device::synthetic("piazza-duomo")],
        );
        let relay_toml = relay.write(dir.path().join("relay.toml"))?;
        let agent_toml = agent.write(dir.path().join("agent.toml"))?;
        let procs = vec![spawn_node("ponte-relay", &relay_toml)?, spawn_node("ponte-agent", &agent_toml)?];
        let agent_audit = agent.audit.path.clone();
        let site = HttpsSite { _dir: dir, pki, relay, _procs: procs, redirect, agent_audit };
        let ca = site.pki.ca_cert().to_string_lossy().into_owned();
        let url = format!("{}/", site.base_url());
        ponte_tests::wait_until("the relay's HTTPS port", T, Duration::from_millis(100), || async {
            Ok(curl(&["--cacert", &ca, &url]).await.ok())
        })
        .await?;
        Ok(site)
    }

    fn base_url(&self) -> String {
        format!("https://localhost:{}", self.relay.relay.http_listen.port())
    }

    fn ca(&self) -> String {
        self.pki.ca_cert().to_string_lossy().into_owned()
    }
}

/// The page is HTTPS only: HTTP/2, HSTS, a strict CSP, a `Secure` session
/// cookie; the plain port only redirects, even a POST with a password;
/// Chromium trusts the relay through the CA's SPKI pin (and not without
/// it), logs in through the form and decodes the camera.
#[tokio::test]
async fn browser_over_https_trusts_the_deployment_ca_pin_and_plays() -> Result<()> {
    let _heavy = ponte_tests::e2e_lock();
    if !ponte_tests::require_program(Chromium::binary(), "chromium")
        || !ponte_tests::require_program("/usr/bin/curl", "curl")
    {
        return Ok(());
    }
    let site = HttpsSite::start().await?;
    let base = site.base_url();
    let ca = site.ca();

    // Over HTTPS, HTTP/2 by ALPN, with the security headers.
    let page = curl(&["--cacert", &ca, "--http2", &format!("{base}/")]).await?;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(page.headers.iter().any(|(n, _)| n == "strict-transport-security"), "HSTS: {:?}", page.headers);
    let csp = page.header("content-security-policy").context("no CSP on the page")?;
    for part in ["default-src 'none'", "frame-ancestors 'none'", "script-src 'sha256-", "base-uri 'none'"] {
        assert!(csp.contains(part), "CSP lacks {part:?}: {csp}");
    }
    assert!(!csp.contains("unsafe-inline"), "{csp}");
    // The same port in plain HTTP is not served.
    let plain = curl(&[&format!("http://localhost:{}/", site.relay.relay.http_listen.port())]).await;
    assert!(plain.map_or(true, |r| r.status >= 400), "the HTTPS port answered plain HTTP");

    // The login over curl: the cookie is Secure.
    let login = curl(&[
        "--cacert",
        &ca,
        "--data-urlencode",
        "user=op",
        "--data-urlencode",
        &format!("password={OP_PASSWORD}"),
        &format!("{base}/login"),
    ])
    .await?;
    assert_eq!(login.status, 204, "{}", login.body);
    let cookie = login.header("set-cookie").context("no session cookie")?;
    assert!(cookie.contains("; Secure") && cookie.contains("HttpOnly"), "{cookie}");

    // The plain-HTTP port redirects, a POST too (308 keeps the method on
    // the HTTPS side, never reads the password here), and serves nothing.
    let http = format!("http://localhost:{}", site.redirect);
    let r = curl(&[&format!("{http}/?camera=piazza-duomo")]).await?;
    assert_eq!(r.status, 308, "{}", r.body);
    assert_eq!(r.header("location"), Some(format!("{base}/?camera=piazza-duomo").as_str()));
    let r = curl(&["--data", "user=op&password=x", &format!("{http}/login")]).await?;
    assert_eq!(r.status, 308, "{}", r.body);
    assert!(!r.body.contains("\"cameras\""));
    let r = curl(&[&format!("{http}/api/catalog")]).await?;
    assert_eq!(r.status, 308, "{}", r.body);

    // Chromium without the pin refuses the relay (its CA is no system root).
    let pin = ca_spki_pin(&site.pki)?;
    {
        let browser = Chromium::launch().await?;
        let _ = browser.navigate(&format!("{base}/")).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let loaded = browser.eval("typeof window.ponteViewer").await.unwrap_or_default();
        assert_ne!(loaded, "object", "Chromium loaded the page without trusting the CA");
    }
    // With the deployment CA's pin (not --ignore-certificate-errors).
    let browser = Chromium::launch_with(&[format!("--ignore-certificate-errors-spki-list={pin}")]).await?;
    browser.navigate(&format!("{base}/?camera=piazza-duomo")).await?;
    ponte_tests::wait_until("the login form over HTTPS", T, Duration::from_millis(50), || async {
        let shown = browser
            .eval("!!document.getElementById('login') && !document.getElementById('login').hidden")
            .await?;
        Ok((shown == true).then_some(()))
    })
    .await?;
    let submit = format!(
        "(() => {{ document.getElementById('login-user').value = 'op'; \
           document.getElementById('login-password').value = {}; \
           document.getElementById('login-form').requestSubmit(); return true; }})()",
        serde_json::to_string(OP_PASSWORD)?
    );
    let start = Instant::now();
    browser.eval(&submit).await?;
    let mut last = Value::Null;
    while frames(&last) < 30 {
        if start.elapsed() > T {
            bail!(
                "{} frames decoded over HTTPS; stats {last}; console:\n{}",
                frames(&last),
                browser.console().join("\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        last = browser.eval(STATS_JS).await.unwrap_or_default();
    }
    eprintln!("logged in over HTTPS and decoded 30 frames in {:.0} ms", start.elapsed().as_secs_f64() * 1e3);
    let proto = browser.eval("performance.getEntriesByType('navigation')[0].nextHopProtocol").await?;
    assert_eq!(proto, "h2", "the page came over {proto}");
    let cookies = browser.page().call("Network.getAllCookies", serde_json::json!({})).await?;
    let session = cookies["cookies"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["httpOnly"] == true))
        .with_context(|| format!("no session cookie in the browser: {cookies}"))?;
    assert_eq!(session["secure"], true, "{session}");

    // The master room's audit names the partner operator who watches.
    ponte_tests::wait_until("op@carabinieri in the agent's audit", T, Duration::from_millis(100), || async {
        let named = audit_lines(&site.agent_audit).into_iter().find(|l| {
            l["action"] == "view-start" && l["viewer"] == "op@carabinieri" && l["camera"] == "piazza-duomo"
        });
        Ok(named)
    })
    .await?;
    Ok(())
}

/// An agent feeding `carabinieri` and `questura`, each relay with an RTSP
/// port; every node reads `tls.crl`.
struct TwoSites {
    dir: tempfile::TempDir,
    pki: Pki,
    agent: Proc,
    agent_config: AgentConfig,
    relays: Vec<(Proc, RelayConfig, u16)>,
}

impl TwoSites {
    async fn start() -> Result<TwoSites> {
        let dir = tempfile::Builder::new().prefix("ponte-tls-").tempdir()?;
        let pki = Pki::create(dir.path().join("pki"), &["master", "carabinieri", "questura"]).await?;
        pki_cli(&pki, &["crl"])?;
        let crl = pki.dir().join("crl.pem");
        let mut relays = Vec::new();
        let mut targets = Vec::new();
        for site in ["carabinieri", "questura"] {
            let mut tls = pki.tls(site);
            tls.crl = Some(crl.clone());
            let mut cfg = RelayConfig::new(site, localhost(free_udp_port()), localhost(free_tcp_port()), tls);
            let rtsp = free_tcp_port();
            cfg.rtsp_on(rtsp);
            let toml = cfg.write(dir.path().join(format!("relay-{site}.toml")))?;
            targets.push(RelayTarget::new(site, cfg.relay.quic_listen));
            relays.push((spawn_node("ponte-relay", &toml)?, cfg, rtsp));
        }
        let mut tls = pki.tls("master");
        tls.crl = Some(crl);
        let agent_config = AgentConfig::new("master", tls, targets, vec![Device::synthetic("piazza-duomo")]);
        let toml = agent_config.write(dir.path().join("agent.toml"))?;
        let agent = spawn_node("ponte-agent", &toml)?;
        for (_, cfg, _) in &relays {
            ponte_tests::wait_catalog(&cfg.base_url(), 1, T).await?;
        }
        Ok(TwoSites { dir, pki, agent, agent_config, relays })
    }

    fn rtsp_url(&self, i: usize) -> String {
        format!("rtsp://127.0.0.1:{}/piazza-duomo", self.relays[i].2)
    }

    fn agent_audit(&self) -> Vec<Value> {
        audit_lines(&self.agent_config.audit.path)
    }
}

fn audit_lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// The relay's upstream links (`/api/status` of a relay without accounts).
async fn relay_links(relay: &RelayConfig) -> Result<usize> {
    let status = ponte_tests::http_get(&format!("{}/api/status", relay.base_url())).await?.json()?;
    Ok(status["links"].as_array().map_or(0, Vec::len))
}

fn sighup(proc: &mut Proc) -> Result<()> {
    proc.signal(libc::SIGHUP)
}

/// Revoke the Questura relay's certificate while it streams: after the
/// agent's SIGHUP its session closes within 1 s, its reconnects are
/// refused, both audited at the agent; the Carabinieri relay's stream
/// goes on without a stall.
#[tokio::test]
async fn revoked_relay_is_cut_off_within_a_second_and_refused_after() -> Result<()> {
    let _heavy = ponte_tests::e2e_lock();
    if !ponte_tests::require_program("/usr/bin/ffmpeg", "ffmpeg") {
        return Ok(());
    }
    let mut sites = TwoSites::start().await?;
    let carabinieri = RtspReader::start(&sites.rtsp_url(0), 30)?;
    let questura = RtspReader::start(&sites.rtsp_url(1), 30)?;
    carabinieri.decodes(20, T).await.context("carabinieri's stream")?;
    questura.decodes(20, T).await.context("questura's stream")?;

    let out = pki_cli(&sites.pki, &["revoke", "--site", "questura"])?;
    assert!(out.contains("revoked 1 certificate"), "{out}");
    let revoked_at = Instant::now();
    sighup(&mut sites.agent)?;
    let questura_relay = sites.relays[1].1.clone();
    loop {
        if relay_links(&questura_relay).await? == 0 {
            break;
        }
        if revoked_at.elapsed() > Duration::from_secs(5) {
            bail!("the Questura relay still has its upstream 5 s after the revocation");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let cut = revoked_at.elapsed();
    eprintln!("questura's session closed {:.0} ms after SIGHUP", cut.as_secs_f64() * 1e3);
    assert!(cut <= Duration::from_secs(1), "closed after {cut:?}");

    // It redials (back-off from 0.1 s): every handshake is refused, none
    // resumed past the check, so the relay never sees a session again.
    let watch_until = Instant::now() + Duration::from_secs(4);
    while Instant::now() < watch_until {
        assert_eq!(relay_links(&questura_relay).await?, 0, "a revoked relay got a session back");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let questura_log = sites.relays[1].0.lines().join("\n");
    assert_eq!(
        questura_log.matches("upstream connected").count(),
        1,
        "a redial got past the handshake: {questura_log}"
    );
    let lines = sites.agent_audit();
    let revoked: Vec<&Value> =
        lines.iter().filter(|l| l["action"] == "certificate-revoked" && l["site"] == "questura").collect();
    assert!(revoked.iter().any(|l| l["outcome"] == "closed"), "no `closed` line: {revoked:?}");
    assert!(revoked.iter().any(|l| l["outcome"] == "refused"), "no `refused` handshake: {revoked:?}");
    assert!(
        !lines.iter().any(|l| l["action"] == "certificate-revoked" && l["site"] == "carabinieri"),
        "carabinieri was touched"
    );

    // Carabinieri: same session, picture never stalled past a GOP.
    assert_eq!(relay_links(&sites.relays[0].1).await?, 1);
    let before = carabinieri.frames();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(carabinieri.frames() > before, "carabinieri's stream stopped");
    assert!(
        carabinieri.longest_stall() < Duration::from_secs(2),
        "carabinieri stalled {:?}",
        carabinieri.longest_stall()
    );
    let carabinieri_log = sites.relays[0].0.lines().join("\n");
    assert!(!carabinieri_log.contains("upstream session closed"), "{carabinieri_log}");
    let _ = &sites.dir;
    Ok(())
}

/// The presented certificate's serial, from a QUIC handshake with `addr`
/// as site `as_site` (any certificate of the CA: the relay refuses a
/// non-upstream after the handshake, which is all this needs).
async fn presented_serial(pki: &Pki, as_site: &str, addr: SocketAddr, server_name: &str) -> Result<String> {
    let id = ponte_proto::tls::Identity::load(&pki.ca_cert(), &pki.cert(as_site), &pki.key(as_site))?;
    let client = ponte_proto::tls::client_config(&id, &Default::default())?;
    let endpoint = quinn::Endpoint::client(localhost(0))?;
    let conn = endpoint.connect_with(client, addr, server_name)?.await?;
    let (_, serial) = ponte_proto::tls::live::peer_serial(&conn).context("no peer certificate")?;
    conn.close(0u32.into(), b"probe");
    Ok(serial)
}

fn file_serial(path: &PathBuf) -> Result<String> {
    let pem = std::fs::read(path)?;
    let (_, p) = x509_parser::pem::parse_x509_pem(&pem).map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(ponte_proto::tls::live::serial_of(&p.contents).context("certificate")?.0)
}

/// Renew a relay's certificate while it streams and SIGHUP it: the stream
/// never stalls past a GOP, the agent's session is the same one, and the
/// next handshake presents the new certificate.
#[tokio::test]
async fn renewed_certificate_is_used_by_the_next_handshake_and_streams_go_on() -> Result<()> {
    let _heavy = ponte_tests::e2e_lock();
    if !ponte_tests::require_program("/usr/bin/ffmpeg", "ffmpeg") {
        return Ok(());
    }
    let mut sites = TwoSites::start().await?;
    let quic = sites.relays[0].1.relay.quic_listen;
    let old = file_serial(&sites.pki.cert("carabinieri"))?;
    assert_eq!(presented_serial(&sites.pki, "questura", quic, "carabinieri").await?, old);
    let reader = RtspReader::start(&sites.rtsp_url(0), 20)?;
    reader.decodes(20, T).await?;

    let out = pki_cli(&sites.pki, &["renew", "--site", "carabinieri", "--days", "30"])?;
    assert!(out.contains("renewed"), "{out}");
    let new = file_serial(&sites.pki.cert("carabinieri"))?;
    assert_ne!(old, new);
    let relay = &mut sites.relays[0].0;
    let from = relay.line_count();
    sighup(relay)?;
    relay.wait_for_line_from(from, "TLS files reloaded", T).await?;
    let reloaded = relay.lines()[from..].join("\n");
    assert!(reloaded.contains(&new), "the relay did not take serial {new}: {reloaded}");

    let served = presented_serial(&sites.pki, "questura", quic, "carabinieri").await?;
    assert_eq!(served, new, "the next handshake presented the old certificate");
    let frames = reader.frames();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(reader.frames() > frames + 30, "the stream stopped after the reload");
    assert!(
        reader.longest_stall() < Duration::from_secs(2),
        "stalled {:?} (a GOP is 2 s)",
        reader.longest_stall()
    );
    let log = sites.relays[0].0.lines().join("\n");
    assert!(!log.contains("upstream session closed") && !log.contains("upstream session ended"), "{log}");
    Ok(())
}

/// `management.client_ca`: the agent's management port takes only
/// certificates of the deployment CA; an operator certificate logs its
/// `[[operator]]` (`certificate = true`, no password) in to the PTZ API,
/// and the audit names it; no certificate, or one of another CA, gets no
/// TLS session at all.
#[tokio::test]
async fn management_port_with_client_ca_takes_operator_certificates() -> Result<()> {
    let _heavy = ponte_tests::e2e_lock();
    if !ponte_tests::require_program("/usr/bin/curl", "curl") {
        return Ok(());
    }
    let dir = tempfile::Builder::new().prefix("ponte-tls-").tempdir()?;
    let pki = Pki::create(dir.path().join("pki"), &["master"]).await?;
    pki_cli(&pki, &["issue", "--site", "rossi", "--usage", "client"])?;
    let other = Pki::create(dir.path().join("other"), &["rossi"]).await?;
    let mgmt = free_tcp_port();
    let mut agent =
        AgentConfig::new("master", pki.tls("master"), vec![], vec![Device::simulated_dome("dome")]);
    agent.management.listen = localhost(mgmt);
    agent.management.https =
        Some(HttpsSection { cert: pki.cert("master"), key: pki.key("master"), redirect_listen: None });
    agent.management.client_ca = Some(pki.ca_cert());
    agent.operators = vec![ponte_agent::operators::OperatorConfig {
        name: "rossi".into(),
        password_hash: None,
        token_sha256: None,
        certificate: true,
    }];
    let toml = agent.write(dir.path().join("agent.toml"))?;
    let check = ponte_tests::agent_cli(&["config", "check", "--config", &toml.to_string_lossy()], "")?;
    assert!(check.starts_with("OK"), "{check}");
    let _agent = spawn_node("ponte-agent", &toml)?;

    let ca = pki.ca_cert().to_string_lossy().into_owned();
    let base = format!("https://127.0.0.1:{mgmt}");
    let (cert, key) =
        (pki.cert("rossi").to_string_lossy().into_owned(), pki.key("rossi").to_string_lossy().into_owned());
    let with_cert = |path: &str| {
        vec![
            "--cacert".to_owned(),
            ca.clone(),
            "--cert".to_owned(),
            cert.clone(),
            "--key".to_owned(),
            key.clone(),
            format!("{base}{path}"),
        ]
    };
    let status =
        ponte_tests::wait_until("the HTTPS management port", T, Duration::from_millis(100), || async {
            let args = with_cert("/status");
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            Ok(curl(&args).await.ok().filter(|r| r.status == 200))
        })
        .await?;
    assert!(status.body.contains("\"node\":\"master\""), "{}", status.body);

    let mut args = with_cert("/api/ptz/dome");
    args.splice(
        0..0,
        ["-X", "POST", "-H", "content-type: application/json", "--data", r#"{"op":"stop"}"#]
            .map(String::from),
    );
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let stopped = curl(&args).await?;
    assert_eq!(stopped.status, 200, "{}", stopped.body);
    assert!(stopped.body.contains(r#""viewer":"rossi""#), "{}", stopped.body);
    let audit = audit_lines(&agent.audit.path);
    assert!(
        audit.iter().any(|l| l["action"] == "ptz" && l["viewer"] == "rossi"),
        "no PTZ line for rossi: {audit:?}"
    );

    // The on-call CLI with the operator's certificate; without it, unreachable.
    let agent_bin = ponte_tests::bin_path("ponte-agent")?;
    let status = |with_cert: bool| {
        let mut cmd = std::process::Command::new(&agent_bin);
        cmd.args(["status", "--url", &base, "--ca", &ca]);
        if with_cert {
            cmd.args(["--cert", &cert, "--key", &key]);
        }
        cmd.output()
    };
    let out = status(true)?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(matches!(out.status.code(), Some(0..=2)) && text.contains("master"), "{out:?}");
    let out = status(false)?;
    assert_eq!(out.status.code(), Some(3), "reached without a certificate: {out:?}");

    // No client certificate, or one of another CA: no TLS session.
    assert!(
        curl(&["--cacert", &ca, &format!("{base}/status")]).await.is_err(),
        "served without a certificate"
    );
    let (oc, ok) = (
        other.cert("rossi").to_string_lossy().into_owned(),
        other.key("rossi").to_string_lossy().into_owned(),
    );
    let foreign = curl(&["--cacert", &ca, "--cert", &oc, "--key", &ok, &format!("{base}/status")]).await;
    assert!(foreign.is_err(), "served a certificate of another CA");
    // Plain HTTP on the port is not served either.
    let plain = curl(&[&format!("http://127.0.0.1:{mgmt}/status")]).await;
    assert!(plain.map_or(true, |r| r.status >= 400), "plain HTTP served");
    Ok(())
}

/// The HTTPS port against clients that are not browsers: one that opens
/// connections and never says hello is closed at `relay.http_read_timeout_secs`
/// (TLS has the same slowloris budget as HTTP), plain HTTP and garbage get
/// no page, and a browser on HTTPS still loads it meanwhile.
#[tokio::test]
async fn https_port_closes_silent_and_plain_clients() -> Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let _heavy = ponte_tests::e2e_lock();
    if !ponte_tests::require_program("/usr/bin/curl", "curl") {
        return Ok(());
    }
    let site = HttpsSite::start().await?;
    let addr = site.relay.relay.http_listen;
    let timeout = Duration::from_secs(site.relay.relay.http_read_timeout_secs);
    let mut silent = Vec::new();
    for _ in 0..20 {
        silent.push(tokio::net::TcpStream::connect(addr).await?);
    }
    let mut plain = tokio::net::TcpStream::connect(addr).await?;
    plain.write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n").await?;
    let mut junk = tokio::net::TcpStream::connect(addr).await?;
    junk.write_all(&[0x16, 0x03, 0x01, 0xff, 0xff, 0, 0, 0]).await?;
    for (what, s) in [("plain HTTP", &mut plain), ("a broken ClientHello", &mut junk)] {
        let mut buf = vec![0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
            .await
            .unwrap_or(Ok(0))
            .unwrap_or(0);
        let text = String::from_utf8_lossy(buf.get(..n).unwrap_or_default()).into_owned();
        assert!(!text.contains("ponte viewer"), "{what} got the page: {text}");
    }
    let page = curl(&["--cacert", &site.ca(), &format!("{}/", site.base_url())]).await?;
    assert_eq!(page.status, 200, "a browser was kept out by silent connections");
    let started = Instant::now();
    for s in &mut silent {
        let mut buf = [0u8; 16];
        let closed = tokio::time::timeout(timeout + Duration::from_secs(5), s.read(&mut buf)).await;
        assert!(
            matches!(closed, Ok(Ok(0)) | Ok(Err(_))),
            "a silent connection was held past the read timeout"
        );
    }
    let held = started.elapsed();
    eprintln!("20 silent connections closed within {:.1} s (read timeout {timeout:?})", held.as_secs_f64());
    assert!(held <= timeout + Duration::from_secs(5), "held {held:?}");
    Ok(())
}
