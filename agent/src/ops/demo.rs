//! `ponte-agent demo`: the whole system on loopback with no camera and no
//! config: a throw-away PKI, two relays (carabinieri, questura) as child
//! processes, and this agent with the Cremona inventory as synthetic cameras.

use crate::config::{
    AgentConfig, AgentSection, AuditSection, PolicySection, RelayTarget, TlsSection, TransportSection,
};
use crate::ops::{inventory, pki};
use crate::uplink;
use anyhow::{bail, Context, Result};
use ponte_proto::policy::SitePolicyConfig;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::process::{Child, Command};

/// Options of the demo.
#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// HTTP port of the first relay's viewer page; the second uses the next one.
    #[arg(long, default_value_t = 8080)]
    pub http_port: u16,
    /// UDP port of the first relay's QUIC listener; the second uses the next one.
    #[arg(long, default_value_t = 7443)]
    pub quic_port: u16,
    /// Address to serve on (loopback by default; the demo has no access control).
    #[arg(long, default_value = "127.0.0.1")]
    pub bind: IpAddr,
}

const SITES: [&str; 2] = ["carabinieri", "questura"];

struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs the demo until Ctrl-C.
pub async fn run(args: DemoArgs) -> Result<()> {
    let dir = TempDir(std::env::temp_dir().join(format!("ponte-demo-{}", std::process::id())));
    let d = &dir.0;
    let _ = std::fs::remove_dir_all(d);
    pki::init(d, "ponte demo CA")?;
    let loopback = [IpAddr::V4(Ipv4Addr::LOCALHOST), args.bind];
    pki::issue(d, "master", &["localhost".into()], &loopback, 30, pki::Usage::Client)?;
    for site in SITES {
        pki::issue(d, site, &["localhost".into()], &loopback, 30, pki::Usage::Both)?;
    }

    let relay_bin = sibling_binary("ponte-relay")?;
    let mut children = Vec::new();
    let mut targets = Vec::new();
    let mut urls = Vec::new();
    for (i, site) in SITES.iter().enumerate() {
        let quic = SocketAddr::new(args.bind, args.quic_port + i as u16);
        let http = SocketAddr::new(args.bind, args.http_port + i as u16);
        let cfg = d.join(format!("{site}.toml"));
        let mgmt = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), args.http_port + 11 + i as u16);
        std::fs::write(&cfg, relay_config(d, site, quic, http, mgmt))?;
        let child = Command::new(&relay_bin)
            .args(["run", "--config"])
            .arg(&cfg)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting `{}`", relay_bin.display()))?;
        children.push(child);
        targets.push(RelayTarget::new(site.to_string(), quic));
        urls.push((site, format!("https://{http}/")));
    }

    let mut devices = inventory::parse(inventory::CREMONA_CSV)?;
    // No camera to steer on loopback: the domes answer PTZ with a simulation.
    for d in devices.iter_mut().filter(|d| d.kind == crate::config::DeviceKind::DomePtz) {
        if let crate::config::Source::Synthetic(settings) = &mut d.source {
            settings.ptz = true;
        }
    }
    let (operator_token, operator_digest) = crate::operators::new_token();
    // Recall on loopback: the Zaist cameras are recorded for an hour, and
    // both sites may rewind and export what they may watch.
    let mut sites = demo_grants()?;
    for site in &mut sites {
        site.playback = true;
        site.export = true;
    }
    let recording = vec![crate::config::recording::RecordingRule {
        name: "demo".into(),
        cameras: vec!["zone:Zaist".into()],
        except: Vec::new(),
        quality: ponte_proto::media::Quality::Main,
        retention_hours: 1.0,
        max_gb: 1.0,
    }];
    let config = AgentConfig {
        agent: AgentSection::new("master"),
        tls: TlsSection {
            ca: d.join("ca.pem"),
            cert: d.join("master.pem"),
            key: d.join("master.key"),
            crl: None,
        },
        transport: TransportSection::default(),
        relays: targets,
        devices,
        policy: PolicySection::default(),
        sites,
        audit: AuditSection { path: d.join("agent-audit.log"), max_mb: 16, ..Default::default() },
        management: Default::default(),
        ptz: Default::default(),
        // The master room's PTZ API needs a credential: a token made for this run.
        operators: vec![crate::operators::OperatorConfig {
            name: "sala".into(),
            password_hash: None,
            token_sha256: Some(operator_digest),
            certificate: false,
        }],
        recordings: crate::config::recording::RecordingsSection {
            dir: d.join("recordings"),
            ..Default::default()
        },
        recording,
        redundancy: Default::default(),
        incidents: Default::default(),
    };
    let lenses: usize = config.devices.iter().map(|d| d.lens_count() as usize).sum();
    let devices = config.devices.len();
    let http = config.management.http_options();
    let agent = crate::Agent::start(config)?;
    let agent_mgmt = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), args.http_port + 10);
    let agent_mgmt =
        ponte_proto::mgmt::spawn_with(agent_mgmt, agent.status_feed(), agent.management_routes(), http)
            .await
            .with_context(|| format!("binding the agent's management port {agent_mgmt}"))?;

    // Print the URLs once every relay has its session with the agent.
    let mut up = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    for (_, mut link) in agent.links() {
        loop {
            if matches!(*link.borrow_and_update(), uplink::LinkState::Up) {
                up += 1;
                break;
            }
            if tokio::time::timeout_at(deadline, link.changed()).await.is_err() {
                break;
            }
        }
    }
    if up < SITES.len() {
        bail!("the demo relays did not come up within 60 s; see the log lines above (is a port in use? try --http-port/--quic-port)");
    }
    println!();
    println!(
        "ponte demo: {devices} camera points, {lenses} lenses of synthetic H.264 video, two partner relays."
    );
    for (site, url) in &urls {
        println!("  {site:<12} viewer: {url}");
    }
    for (site, url) in &urls {
        println!("  {site:<12} console (video wall): {url}console");
    }
    println!(
        "  recall:       the Zaist cameras are recorded to {} for an hour: select a tile of one in a console \
         and use its timeline (−30 s, −5 min, a time, Live, Export)",
        d.join("recordings").display()
    );
    let ca_pem = std::fs::read(d.join("ca.pem")).context("reading the demo CA")?;
    let pin = x509_parser::pem::parse_x509_pem(&ca_pem)
        .ok()
        .and_then(|(_, p)| ponte_proto::tls::https::spki_sha256_base64(&p.contents))
        .unwrap_or_default();
    println!(
        "  HTTPS:        the relays' certificates come from this run's throw-away CA {}: import it in the \
         browser, or start Chromium with --ignore-certificate-errors-spki-list={pin} --user-data-dir=$(mktemp -d)",
        d.join("ca.pem").display()
    );
    println!(
        "  access:       the demo relays have no accounts (`relay.allow_anonymous = true`, loopback only); \
         a real relay refuses to start without `[[viewer]]` or `[[token]]` accounts"
    );
    println!(
        "  status pages: http://{agent_mgmt}/ (agent), http://127.0.0.1:{}/ and :{} (relays)",
        args.http_port + 11,
        args.http_port + 12
    );
    println!("  on-call CLI:  ponte-agent status --url http://{agent_mgmt}   ponte-relay status --url http://127.0.0.1:{}", args.http_port + 11);
    println!(
        "  PTZ:          the carabinieri may steer the (simulated) domes from the viewer page; the master room \
         (operator `sala`) takes over with `curl -H 'authorization: Bearer {operator_token}' -H 'content-type: application/json' \
         http://{agent_mgmt}/api/ptz/<camera> -d '{{\"op\":\"stop\"}}'`"
    );
    println!(
        "Open a viewer URL in a browser and click a camera, or a console URL and drag cameras onto the wall. \
         Press Ctrl-C to stop."
    );
    println!();

    let result = tokio::select! {
        r = crate::shutdown_signal() => r,
        r = wait_any(&mut children) => r,
    };
    for c in &mut children {
        let _ = c.kill().await;
    }
    drop(agent);
    result
}

async fn wait_any(children: &mut [Child]) -> Result<()> {
    let waits = children.iter_mut().map(|c| Box::pin(c.wait()));
    let (status, i, _) = futures_select_all(waits).await;
    bail!("demo relay `{}` exited ({:?}); stopping", SITES.get(i).unwrap_or(&"?"), status)
}

async fn futures_select_all<F: std::future::Future + Unpin>(
    futs: impl Iterator<Item = F>,
) -> (F::Output, usize, ()) {
    let mut futs: Vec<F> = futs.collect();
    std::future::poll_fn(move |cx| {
        for (i, f) in futs.iter_mut().enumerate() {
            if let std::task::Poll::Ready(out) = std::pin::Pin::new(f).poll(cx) {
                return std::task::Poll::Ready((out, i, ()));
            }
        }
        std::task::Poll::Pending
    })
    .await
}

/// The Cremona example config, whose `[[site]]` grants the demo uses.
const CREMONA_AGENT_TOML: &str = include_str!("../../../deploy/examples/cremona/agent.toml");

/// Different, realistic grants for the two partner forces, as in
/// `deploy/examples/cremona/agent.toml`: the Carabinieri see the whole city
/// but the hospital car parks, with PTZ; the Questura sees public-order and
/// traffic points, at most 12 streams, without PTZ.
pub fn demo_grants() -> Result<Vec<SitePolicyConfig>> {
    config::Config::builder()
        .add_source(config::File::from_str(CREMONA_AGENT_TOML, config::FileFormat::Toml))
        .build()
        .and_then(|c| c.get::<Vec<SitePolicyConfig>>("site"))
        .context("the `[[site]]` tables of deploy/examples/cremona/agent.toml")
}

fn sibling_binary(name: &str) -> Result<PathBuf> {
    let exe = std::env::current_exe().context("locating this executable")?;
    let path = exe.with_file_name(name);
    if !path.exists() {
        bail!(
            "`{}` not found next to `{}`: build both binaries (`cargo build --release -p ponte-agent -p ponte-relay`) or use ./scripts/demo",
            path.display(),
            exe.display()
        );
    }
    Ok(path)
}

fn relay_config(dir: &Path, site: &str, quic: SocketAddr, http: SocketAddr, mgmt: SocketAddr) -> String {
    format!(
        "[relay]\nsite = \"{site}\"\nquic_listen = \"{quic}\"\nhttp_listen = \"{http}\"\n# demo only: no accounts on loopback; a real relay refuses to start without them\nallow_anonymous = true\n# and without accounts, let its viewers steer the (simulated) PTZ domes\nopen_ptz = true\n\n[relay.https]\ncert = {:?}\nkey = {:?}\n\n[tls]\nca = {:?}\ncert = {:?}\nkey = {:?}\n\n[audit]\npath = {:?}\n\n[management]\nlisten = \"{mgmt}\"\n",
        dir.join(format!("{site}.pem")),
        dir.join(format!("{site}.key")),
        dir.join("ca.pem"),
        dir.join(format!("{site}.pem")),
        dir.join(format!("{site}.key")),
        dir.join(format!("{site}-audit.log")),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn demo_grants_differ_per_site() {
        let g = demo_grants().unwrap();
        assert_eq!(g.iter().map(|s| s.id.as_str()).collect::<Vec<_>>(), ["carabinieri", "questura"]);
        assert_ne!(g[0].allow, g[1].allow);
        for s in &g {
            s.compile().unwrap();
        }
    }
}
