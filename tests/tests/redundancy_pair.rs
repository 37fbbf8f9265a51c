//! Two relays of one site back each other for the console (issue 22): a
//! real headless Chromium logged in on relay A with a 2×2 wall; relay A is
//! killed (SIGKILL), or hung (SIGSTOP); every tile must decode frames again
//! from relay B within 3 s, without a login prompt. Then the pair token's
//! trust boundary, attacked at the real binaries: another key, another
//! site, a changed token, an account the peer lacks or has removed, CORS
//! for an origin that is not a peer, a key file others may read.
//!
//! Both relays are of site `carabinieri`. The agent refuses two `[[relay]]`
//! entries of one site today (`relay.site ... appears twice`), so each
//! relay here is fed by an agent of its own with the same four synthetic
//! cameras: what the console does on failover does not depend on it.

use anyhow::{bail, Context, Result};
use ponte_tests::{
    free_tcp_port, free_udp_port, http_request, relay_cli, relay_token, relay_viewer, spawn_node,
    wait_catalog_as, AgentConfig, Chromium, Device, DeviceExt, Pki, Proc, RelayConfig, RelayTarget, Stack,
    StackSpec, Tweak,
};
use serde_json::Value;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const ANNA: &str = "anna";
const ANNA_PASSWORD: &str = "torrazzo-112-metri";
const BRUNO: &str = "bruno";
const BRUNO_PASSWORD: &str = "cattedrale-santa-maria";
/// Issue 22: every tile plays again from the peer within this.
const FAILOVER_BUDGET: Duration = Duration::from_secs(3);

fn localhost(port: u16) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, port))
}

fn four() -> Vec<Device> {
    (0..4).map(|i| Device::synthetic(&format!("cam{i:02}"))).collect()
}

/// A new pair key from the real CLI (`ponte-relay pair-key --out`).
fn pair_key(dir: &Path, name: &str) -> Result<PathBuf> {
    let path = dir.join(name);
    let out = relay_cli(&["pair-key", "--out", &path.to_string_lossy()], "")?;
    anyhow::ensure!(out.contains("pair_key_file"), "`ponte-relay pair-key` printed {out:?}");
    Ok(path)
}

/// Relay B: relay A's config (same site, accounts, key and certificate) on
/// its own ports, state and audit, its peer relay A.
fn peer_config(a: &RelayConfig, dir: &Path, http: u16, peer_url: &str) -> Result<RelayConfig> {
    std::fs::create_dir_all(dir)?;
    let mut b = a.clone();
    b.relay.quic_listen = localhost(free_udp_port());
    b.relay.http_listen = localhost(http);
    b.relay.peers = vec![peer_url.to_owned()];
    b.relay.state_dir = Some(dir.to_path_buf());
    b.audit.path = dir.join("relay-audit.log");
    Ok(b)
}

fn audit(path: &Path) -> Result<Vec<Value>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    text.lines().map(|l| serde_json::from_str(l).with_context(|| format!("audit line {l}"))).collect()
}

async fn log_in(browser: &Chromium, user: &str, password: &str) -> Result<()> {
    browser.submit_login(user, password).await?;
    ponte_tests::wait_until("the login", Duration::from_secs(15), Duration::from_millis(50), || async {
        let c = browser.eval("window.ponteConsole.ready && window.ponteConsole.viewer").await?;
        Ok((c == user).then_some(()))
    })
    .await
}

async fn tiles(browser: &Chromium) -> Result<Vec<Value>> {
    Ok(browser.eval("window.ponteConsole.tiles()").await?.as_array().cloned().unwrap_or_default())
}

/// Waits until every one of the first `n` tiles plays from `relay` and has
/// shown `frames` frames there.
async fn wait_playing(
    browser: &Chromium,
    n: usize,
    relay: &str,
    frames: u64,
    budget: Duration,
) -> Result<()> {
    ponte_tests::wait_until(
        &format!("{n} tiles playing from {relay}"),
        budget,
        Duration::from_millis(50),
        || async {
            let t = tiles(browser).await?;
            let ok = t.len() >= n
                && t[..n].iter().all(|t| t["relay"] == relay && t["frames"].as_u64().unwrap_or(0) >= frames);
            Ok(ok.then_some(()))
        },
    )
    .await
    .with_context(|| format!("browser console:\n{}", browser.console().join("\n")))
}

/// How relay A stops answering.
#[derive(Clone, Copy, Debug)]
enum Death {
    /// `kill -9`: its ports refuse connections at once.
    Killed,
    /// SIGSTOP: the kernel still accepts connections, nothing answers (a
    /// hung process, a host gone from the network): only timeouts tell.
    Hung,
}

#[tokio::test(flavor = "multi_thread")]
async fn relay_killed_every_tile_plays_from_its_peer_within_three_seconds_without_a_login() -> Result<()> {
    failover(Death::Killed).await
}

#[tokio::test(flavor = "multi_thread")]
async fn relay_hung_every_tile_plays_from_its_peer_within_three_seconds_without_a_login() -> Result<()> {
    failover(Death::Hung).await
}

async fn failover(death: Death) -> Result<()> {
    let _lock = ponte_tests::e2e_lock();
    if !ponte_tests::require_program(Chromium::binary(), "chromium") {
        return Ok(());
    }
    let keys = tempfile::Builder::new().prefix("ponte-pair-").tempdir()?;
    let key = pair_key(keys.path(), "pair.key")?;
    let anna = relay_viewer(ANNA, ANNA_PASSWORD)?;
    let (ops_token, ops) = relay_token("ops")?;
    let (port_a, port_b) = (free_tcp_port(), free_tcp_port());
    let (url_a, url_b) = (format!("http://127.0.0.1:{port_a}"), format!("http://127.0.0.1:{port_b}"));
    let peer_b = url_b.clone();
    let key_a = key.clone();
    let mut stack = Stack::start_with(StackSpec {
        devices: four(),
        relay: Tweak::relay(move |r| {
            r.viewer(anna.clone()).token(ops.clone());
            r.relay.http_listen = localhost(port_a);
            r.relay.peers = vec![peer_b.clone()];
            r.relay.pair_key_file = Some(key_a.clone());
        }),
        catalog_token: Some(ops_token.clone()),
        ..StackSpec::default()
    })
    .await?;
    assert_eq!(stack.base_url(), url_a);

    // Relay B and the agent that feeds it.
    let b = peer_config(&stack.relay_config, &stack.dir().join("relay-b"), port_b, &url_a)?;
    let b_toml = b.write(stack.dir().join("relay-b.toml"))?;
    let _relay_b = spawn_node("ponte-relay", &b_toml)?;
    let mut agent_b = AgentConfig::new(
        "master",
        stack.pki.tls("master"),
        vec![RelayTarget::new("carabinieri", b.relay.quic_listen)],
        four(),
    );
    agent_b.audit.path = stack.dir().join("agent-b-audit.log");
    let _agent_b = spawn_node("ponte-agent", &agent_b.write(stack.dir().join("agent-b.toml"))?)?;
    wait_catalog_as(&url_b, 4, Duration::from_secs(30), Some(&ops_token)).await?;

    // Anna logs in on relay A and opens a 2×2 wall.
    let browser = Chromium::launch().await?;
    browser.navigate(&format!("{url_a}/console")).await?;
    log_in(&browser, ANNA, ANNA_PASSWORD).await?;
    let cameras: Vec<String> = (0..4).map(|i| format!("cam{i:02}")).collect();
    browser
        .eval(&format!("window.ponteConsole.setLayout('2x2', {})", serde_json::to_string(&cameras)?))
        .await?;
    wait_playing(&browser, 4, &url_a, 30, Duration::from_secs(20)).await?;
    let relay = ponte_tests::wait_until(
        "the page's pair token",
        Duration::from_secs(10),
        Duration::from_millis(50),
        || async {
            let r = browser.eval("window.ponteConsole.relay()").await?;
            Ok((r["pairToken"] == true).then_some(r))
        },
    )
    .await?;
    assert_eq!(relay["peers"], serde_json::json!([url_b]), "the page knows its peer: {relay}");
    assert_eq!(relay["current"], url_a);
    // The form was shown once, for the login above: it must not come back.
    let prompts_before = relay["loginPrompts"].clone();
    // Gone if the page navigates (a reload, the login page).
    browser.eval("window.pairTestMark = 'same document'").await?;

    // Relay A dies, or hangs.
    match death {
        Death::Killed => stack.relay.kill(),
        Death::Hung => stack.relay.signal(libc::SIGSTOP)?,
    }
    let killed = Instant::now();
    let killed_unix_ms =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_millis() as f64;
    let mut back: Vec<Option<Duration>> = vec![None; 4];
    let mut prompts = Vec::new();
    while back.iter().any(Option::is_none) && killed.elapsed() < Duration::from_secs(15) {
        let now = browser
            .eval(
                "({ tiles: window.ponteConsole.tiles(), login: !document.getElementById('login').hidden, \
                   relay: window.ponteConsole.relay() })",
            )
            .await?;
        let at = killed.elapsed();
        if now["login"] == true || now["relay"]["loginPrompts"] != prompts_before {
            prompts.push(format!("{at:?}: {}", now["relay"]));
        }
        for (i, t) in now["tiles"].as_array().context("tiles")?.iter().take(4).enumerate() {
            if back[i].is_none() && t["relay"] == url_b.as_str() && t["frames"].as_u64().unwrap_or(0) >= 1 {
                back[i] = Some(at);
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let relay = browser.eval("window.ponteConsole.relay()").await?;
    eprintln!("relay A {death:?}; the page: {relay}");
    if let Some(moved) = relay["moves"][0]["at"].as_f64() {
        eprintln!(
            "failover ({death:?}): the page moved to relay B {:.0} ms after relay A stopped",
            moved - killed_unix_ms
        );
    }
    for (i, t) in back.iter().enumerate() {
        eprintln!(
            "failover ({death:?}): tile {} ({}) decoding from relay B {} ms after relay A stopped",
            i + 1,
            cameras[i],
            t.map_or("never".to_owned(), |d| d.as_millis().to_string())
        );
    }
    let Some(slowest) = back.iter().map(|t| t.unwrap_or(Duration::MAX)).max() else { bail!("no tile") };
    if slowest == Duration::MAX {
        bail!(
            "tiles never played from relay B: {:?}\nbrowser console:\n{}",
            tiles(&browser).await?,
            browser.console().join("\n")
        );
    }
    assert!(slowest <= FAILOVER_BUDGET, "slowest tile back after {slowest:?} (budget {FAILOVER_BUDGET:?})");
    assert!(prompts.is_empty(), "a login prompt during the failover: {prompts:?}");

    // They keep playing there, the wall as it was, the same document, the banner up.
    wait_playing(&browser, 4, &url_b, 30, Duration::from_secs(10)).await?;
    let layout = browser.eval("window.ponteConsole.layout()").await?;
    let shown: Vec<&str> =
        layout["tiles"].as_array().context("tiles")?.iter().filter_map(|t| t["camera"].as_str()).collect();
    assert_eq!((layout["grid"].as_str(), shown), (Some("2x2"), cameras.iter().map(String::as_str).collect()));
    assert_eq!(browser.eval("window.pairTestMark").await?, "same document", "the page did not navigate");
    let relay = browser.eval("window.ponteConsole.relay()").await?;
    let banner = relay["banner"].as_str().unwrap_or_default();
    assert!(banner.contains(&format!("127.0.0.1:{port_b}")), "the banner names the peer: {relay}");
    assert_eq!(relay["loginPrompts"], prompts_before, "{relay}");
    assert_eq!(browser.eval("document.getElementById('login').hidden").await?, true);
    eprintln!("banner: {banner}");

    // Relay B's audit: one pair login of anna, naming relay A.
    let lines = audit(&b.audit.path)?;
    let pair: Vec<&Value> = lines
        .iter()
        .filter(|l| l["action"] == "login" && l["reason"].as_str().is_some_and(|r| r.contains("pair login")))
        .collect();
    eprintln!("relay B audit: {pair:?}");
    assert_eq!(pair.len(), 1, "one pair login however many requests: {pair:?}");
    assert_eq!((&pair[0]["viewer"], &pair[0]["outcome"]), (&Value::from(ANNA), &Value::from("ok")));
    assert!(pair[0]["reason"].as_str().is_some_and(|r| r.contains(&url_a)), "names relay A: {}", pair[0]);
    Ok(())
}

/// A relay of `site` on loopback port `http` (no agent: the pair token's
/// checks need none), with `accounts`, `key` and `peers`.
fn relay_alone(
    pki: &Pki,
    dir: &Path,
    (site, http): (&str, u16),
    accounts: &[ponte_relay::auth::ViewerConfig],
    key: &Path,
    peers: &[String],
) -> Result<(RelayConfig, PathBuf)> {
    std::fs::create_dir_all(dir)?;
    let mut cfg = RelayConfig::new(site, localhost(free_udp_port()), localhost(http), pki.tls(site));
    for a in accounts {
        cfg.viewer(a.clone());
    }
    cfg.relay.peers = peers.to_vec();
    cfg.relay.pair_key_file = Some(key.to_path_buf());
    cfg.relay.state_dir = Some(dir.to_path_buf());
    cfg.audit.path = dir.join("relay-audit.log");
    let toml = cfg.write(dir.join("relay.toml"))?;
    Ok((cfg, toml))
}

async fn start(toml: &Path, base: &str) -> Result<Proc> {
    let proc = spawn_node("ponte-relay", toml)?;
    ponte_tests::wait_http_ok(&format!("{base}/api/alive"), Duration::from_secs(30)).await?;
    Ok(proc)
}

/// `POST /login` then `GET /api/pair-token` with the session cookie.
async fn pair_token_of(base: &str, user: &str, password: &str) -> Result<String> {
    let form = format!("user={user}&password={password}");
    let login = http_request(
        "POST",
        &format!("{base}/login"),
        &[("Content-Type", "application/x-www-form-urlencoded")],
        form.as_bytes(),
        Duration::from_secs(10),
    )
    .await?;
    anyhow::ensure!(login.status == 204, "login at {base}: {} {}", login.status, login.text());
    let cookie = login
        .header("set-cookie")
        .context("no session cookie")?
        .split(';')
        .next()
        .unwrap_or_default()
        .to_owned();
    let resp = http_request(
        "GET",
        &format!("{base}/api/pair-token"),
        &[("Cookie", &cookie)],
        b"",
        Duration::from_secs(5),
    )
    .await?;
    anyhow::ensure!(resp.status == 200, "pair token at {base}: {} {}", resp.status, resp.text());
    Ok(resp.json()?["token"].as_str().context("token")?.to_owned())
}

async fn catalog_with(base: &str, token: &str) -> Result<u16> {
    let auth = format!("Bearer {token}");
    Ok(http_request(
        "GET",
        &format!("{base}/api/catalog"),
        &[("Authorization", &auth)],
        b"",
        Duration::from_secs(5),
    )
    .await?
    .status)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_peer_takes_only_its_sites_tokens_signed_with_its_key_for_its_own_accounts() -> Result<()> {
    let _lock = ponte_tests::e2e_lock();
    let dir = tempfile::Builder::new().prefix("ponte-pair-attack-").tempdir()?;
    let pki = Pki::create(dir.path().join("pki"), &["carabinieri", "questura"]).await?;
    let key = pair_key(dir.path(), "pair.key")?;
    let other_key = pair_key(dir.path(), "other.key")?;
    let anna = relay_viewer(ANNA, ANNA_PASSWORD)?;
    let bruno = relay_viewer(BRUNO, BRUNO_PASSWORD)?;
    let (port_a, port_b) = (free_tcp_port(), free_tcp_port());
    let (url_a, url_b) = (format!("http://127.0.0.1:{port_a}"), format!("http://127.0.0.1:{port_b}"));

    // A has anna and bruno; B only anna; X is another carabinieri relay with
    // another key; Q is the questura's relay given (wrongly) the same key.
    let site = |name, port| (name, port);
    let to_b = [url_b.clone()];
    let both = [anna.clone(), bruno.clone()];
    let (_, a_toml) =
        relay_alone(&pki, &dir.path().join("a"), site("carabinieri", port_a), &both, &key, &to_b)?;
    let (b, b_toml) = relay_alone(
        &pki,
        &dir.path().join("b"),
        site("carabinieri", port_b),
        &both[..1],
        &key,
        std::slice::from_ref(&url_a),
    )?;
    let (x, x_toml) = relay_alone(
        &pki,
        &dir.path().join("x"),
        site("carabinieri", free_tcp_port()),
        &both[..1],
        &other_key,
        &to_b,
    )?;
    let (q, q_toml) =
        relay_alone(&pki, &dir.path().join("q"), site("questura", free_tcp_port()), &both[..1], &key, &to_b)?;
    let url_x = x.base_url();
    let url_q = q.base_url();
    let _a = start(&a_toml, &url_a).await?;
    let mut relay_b = start(&b_toml, &url_b).await?;
    let _x = start(&x_toml, &url_x).await?;
    let _q = start(&q_toml, &url_q).await?;

    let anna_a = pair_token_of(&url_a, ANNA, ANNA_PASSWORD).await?;
    assert_eq!(catalog_with(&url_b, &anna_a).await?, 200, "anna's token from A works at B");
    let refused = [
        ("bruno: no such account at B", pair_token_of(&url_a, BRUNO, BRUNO_PASSWORD).await?),
        ("another key", pair_token_of(&url_x, ANNA, ANNA_PASSWORD).await?),
        ("another site", pair_token_of(&url_q, ANNA, ANNA_PASSWORD).await?),
        ("changed", {
            let (head, tag) = anna_a.rsplit_once('.').context("token")?;
            let flipped =
                if tag.starts_with('A') { tag.replacen('A', "B", 1) } else { format!("A{}", &tag[1..]) };
            format!("{head}.{flipped}")
        }),
    ];
    for (what, token) in &refused {
        assert_eq!(catalog_with(&url_b, token).await?, 401, "{what}");
    }
    let lines = audit(&b.audit.path)?;
    let failed: Vec<String> = lines
        .iter()
        .filter(|l| l["action"] == "login" && l["outcome"] == "failed")
        .map(|l| format!("{}: {}", l["viewer"], l["reason"]))
        .collect();
    eprintln!("relay B refused: {failed:#?}");
    for needle in ["no account `bruno`", "not signed with this relay", "of site `questura`"] {
        assert!(failed.iter().any(|l| l.contains(needle)), "{needle}: {failed:?}");
    }

    // A browser page of another origin: no CORS (a preflight refused, no
    // Access-Control-Allow-Origin); the peer's origin: allowed.
    let preflight = |origin: String| {
        let url_b = url_b.clone();
        async move {
            http_request(
                "OPTIONS",
                &format!("{url_b}/whep/cam00"),
                &[
                    ("Origin", &origin),
                    ("Access-Control-Request-Method", "POST"),
                    ("Access-Control-Request-Headers", "authorization,content-type"),
                ],
                b"",
                Duration::from_secs(5),
            )
            .await
        }
    };
    let ok = preflight(url_a.clone()).await?;
    assert_eq!((ok.status, ok.header("access-control-allow-origin")), (204, Some(url_a.as_str())));
    let evil = preflight(url_x.clone()).await?;
    assert_eq!((evil.status, evil.header("access-control-allow-origin")), (403, None), "{}", evil.text());

    // A key file others may read: the relay refuses to start, naming the key and the fix.
    let loose = dir.path().join("loose.key");
    std::fs::copy(&key, &loose)?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&loose, std::fs::Permissions::from_mode(0o644))?;
    }
    let (_, loose_toml) = relay_alone(
        &pki,
        &dir.path().join("loose"),
        site("carabinieri", free_tcp_port()),
        &both[..1],
        &loose,
        &to_b,
    )?;
    let mut refused_start = spawn_node("ponte-relay", &loose_toml)?;
    let status = refused_start.wait_exit(Duration::from_secs(30)).await?;
    let said = refused_start.lines().join("\n");
    assert!(!status.success(), "a relay with a key others may read started:\n{said}");
    assert!(said.contains("relay.pair_key_file") && said.contains("chmod 600"), "{said}");

    // Revocation: anna removed at B (a reload), her token from A is refused there.
    let mut without = b.clone();
    without.viewers.clear();
    without.viewer(bruno.clone());
    without.write(&b_toml)?;
    relay_b.signal(libc::SIGHUP)?;
    ponte_tests::wait_until(
        "anna refused at B",
        Duration::from_secs(10),
        Duration::from_millis(100),
        || async { Ok((catalog_with(&url_b, &anna_a).await? == 401).then_some(())) },
    )
    .await?;
    Ok(())
}
