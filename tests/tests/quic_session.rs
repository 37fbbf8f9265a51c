//! The QUIC session against the real binaries: a test subscriber standing in
//! for a relay receives GOPs from the real agent; a hostile or foreign peer
//! is refused by the real relay, which keeps serving everyone else.

use anyhow::{bail, Context, Result};
use ponte_proto::h264;
use ponte_proto::media::Quality;
use ponte_proto::session::{self, read_gop_stream};
use ponte_proto::tls::{self, Identity, TransportOptions};
use ponte_proto::wire::{Control, MediaEvent, Role, SubscribeErrorCode, PROTOCOL_VERSION};
use ponte_tests::{bin_path, http_get, AgentConfig, Device, DeviceExt, Pki, Proc, RelayTarget, Stack};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(20);

fn identity(pki: &Pki, site: &str) -> Result<Identity> {
    Ok(Identity::load(&pki.ca_cert(), &pki.cert(site), &pki.key(site))?)
}

/// A test endpoint that listens like a relay and lets the real agent dial it.
async fn fake_relay(pki: &Pki) -> Result<quinn::Endpoint> {
    let server = tls::server_config(&identity(pki, "carabinieri")?, &TransportOptions::default())?;
    Ok(quinn::Endpoint::server(server, "127.0.0.1:0".parse()?)?)
}

fn spawn_agent(pki: &Pki, dir: &std::path::Path, relay: SocketAddr, devices: Vec<Device>) -> Result<Proc> {
    let cfg =
        AgentConfig::new("master", pki.tls("master"), vec![RelayTarget::new("carabinieri", relay)], devices);
    let path = cfg.write(dir.join("agent.toml"))?;
    let mut cmd = std::process::Command::new(bin_path("ponte-agent")?);
    cmd.arg("run").arg("--config").arg(path).env("RUST_LOG", "info");
    Proc::spawn_command("agent", cmd)
}

#[tokio::test]
async fn quic_subscriber_gets_ordered_keyframe_led_gops_with_low_latency() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let pki = Pki::create(dir.path().join("pki"), &["master", "carabinieri"]).await?;
    let endpoint = fake_relay(&pki).await?;
    let _agent = spawn_agent(&pki, dir.path(), endpoint.local_addr()?, vec![Device::synthetic("cam-a")])?;

    let conn = tokio::time::timeout(T, endpoint.accept()).await?.context("endpoint closed")?.await?;
    assert_eq!(tls::peer_site(&conn).as_deref(), Some("master"), "agent identity from its certificate");
    let hello = Control::Hello {
        version: PROTOCOL_VERSION,
        node: "carabinieri".into(),
        role: Role::Relay,
        policy: None,
    };
    let (mut tx, mut rx, peer) = session::accept_control(&conn, &hello).await?;
    assert!(matches!(peer, Control::Hello { role: Role::Agent, .. }), "{peer:?}");
    let Control::Catalog { cameras } = rx.recv().await? else { bail!("expected the catalog first") };
    assert_eq!(cameras.iter().map(|c| c.id.as_str()).collect::<Vec<_>>(), ["cam-a"]);

    // An unknown camera is refused with `unknown`.
    tx.send(&Control::Subscribe {
        id: 9,
        camera: "no-such-camera".into(),
        quality: Quality::Main,
        viewer: None,
        playback: None,
    })
    .await?;
    // Periodic Stats and the audit head may come first; skip them.
    let answer = loop {
        match tokio::time::timeout(T, rx.recv()).await?? {
            Control::Stats(_) | Control::AuditHead { .. } => continue,
            other => break other,
        }
    };
    match answer {
        Control::SubscribeError { id: 9, code: SubscribeErrorCode::Unknown, reason } => {
            assert!(reason.contains("no-such-camera"), "reason names the camera: {reason}")
        }
        other => bail!("expected SubscribeError{{unknown}}, got {other:?}"),
    }

    let subscribed = Instant::now();
    tx.send(&Control::Subscribe {
        id: 1,
        camera: "cam-a".into(),
        quality: Quality::Main,
        viewer: None,
        playback: None,
    })
    .await?;
    loop {
        match tokio::time::timeout(T, rx.recv()).await?? {
            Control::SubscribeOk { id: 1, .. } => break,
            Control::Stats(_) | Control::AuditHead { .. } => continue,
            other => bail!("expected SubscribeOk, got {other:?}"),
        }
    }

    // Read GOP streams in the order they were opened for ~5 s (2+ GOPs).
    let mut frames: Vec<(u64, bool, u64)> = Vec::new(); // (gop seq, keyframe, pts)
    let mut latencies_us: Vec<u64> = Vec::new();
    let mut first_frame: Option<Duration> = None;
    let mut gops = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while tokio::time::Instant::now() < deadline {
        let Ok(Ok(recv)) = tokio::time::timeout_at(deadline, conn.accept_uni()).await else { break };
        let mut seq = None;
        let mut first_in_gop = true;
        let mut violations = Vec::new();
        let finished = tokio::time::timeout_at(
            deadline,
            read_gop_stream(recv, |ev| {
                match ev {
                    MediaEvent::Header(h) => {
                        assert_eq!(h.subscription, 1);
                        assert_eq!((h.config.width, h.config.height), (640, 360));
                        assert!(!h.config.parameter_sets.is_empty(), "SPS/PPS travel in the GOP header");
                        seq = Some(h.seq);
                    }
                    MediaEvent::Frame(f) => {
                        if first_in_gop && !f.keyframe {
                            violations.push(format!("GOP {seq:?} starts with a non-keyframe"));
                        }
                        if first_in_gop && !h264::is_keyframe(&f.payload) {
                            violations.push(format!("GOP {seq:?} first frame has no IDR slice"));
                        }
                        first_in_gop = false;
                        let now = h264::unix_micros_now();
                        match h264::find_capture_time(&f.payload) {
                            Some(t) => latencies_us.push(now.saturating_sub(t)),
                            None => violations.push("frame without capture-time SEI".into()),
                        }
                        first_frame.get_or_insert_with(|| subscribed.elapsed());
                        frames.push((seq.unwrap_or(0), f.keyframe, f.pts));
                    }
                }
                true
            }),
        )
        .await;
        assert!(violations.is_empty(), "{violations:?}");
        if finished.is_ok() {
            gops += 1;
        }
    }
    assert!(gops >= 2, "at least two complete GOPs in 5 s, got {gops}");
    assert!(frames.len() >= 60, "about 15 fps for 5 s, got {} frames", frames.len());
    for w in frames.windows(2) {
        assert!(w[1].2 > w[0].2, "pts strictly increasing: {:?} then {:?}", w[0], w[1]);
        assert!(w[1].0 >= w[0].0, "GOP sequence never goes back: {:?} then {:?}", w[0], w[1]);
    }
    latencies_us.sort_unstable();
    let p50 = latencies_us[latencies_us.len() / 2];
    let max = *latencies_us.last().context("no latency samples")?;
    println!(
        "quic subscriber: time to first frame {:?}, capture→receive latency p50 {:.1} ms, max {:.1} ms over {} frames",
        first_frame.unwrap_or_default(),
        p50 as f64 / 1000.0,
        max as f64 / 1000.0,
        latencies_us.len()
    );
    assert!(max < 200_000, "latency under 200 ms on loopback, max was {max} us");
    Ok(())
}

/// Dials `addr` with `client` and reports how the handshake ended.
async fn dial(
    client: quinn::ClientConfig,
    addr: SocketAddr,
) -> Result<(quinn::Endpoint, Result<quinn::Connection, String>)> {
    let mut ep = quinn::Endpoint::client("127.0.0.1:0".parse()?)?;
    ep.set_default_client_config(client);
    let res = match ep.connect(addr, "carabinieri")?.await {
        Ok(conn) => {
            // With TLS 1.3 the server checks the client's certificate after
            // the client considers the handshake done: a refusal shows up as
            // the connection closing straight away.
            match tokio::time::timeout(Duration::from_secs(3), conn.closed()).await {
                Ok(e) => Err(e.to_string()),
                Err(_) => Ok(conn),
            }
        }
        Err(e) => Err(e.to_string()),
    };
    Ok((ep, res))
}

#[tokio::test]
async fn relay_refuses_foreign_ca_and_anonymous_clients_and_says_why() -> Result<()> {
    let stack = Stack::start(vec![Device::synthetic("cam-b")]).await?;
    let quic = stack.relay_config.relay.quic_listen;
    let other = Pki::create(stack.dir().join("other-pki"), &["master"]).await?;

    // A certificate from another CA, while trusting the real CA (so the
    // refusal can only come from the relay checking the client).
    let mut foreign = identity(&other, "master")?;
    foreign.ca = identity(&stack.pki, "carabinieri")?.ca;
    let client = tls::client_config(&foreign, &TransportOptions::default())?;
    let (ep, res) = dial(client, quic).await?;
    let err = res.err().context("a client certificate from another CA must be refused")?;
    println!("foreign CA client saw: {err}");
    let line = tokio::time::timeout(T, async {
        loop {
            if let Some(l) = stack.relay.lines().into_iter().find(|l| l.contains("refused QUIC connection")) {
                return l;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .context("the relay must log the refusal")?;
    let port = ep.local_addr()?.port();
    assert!(line.contains(&format!("127.0.0.1:{port}")), "refusal names the peer address: {line}");
    assert!(line.to_lowercase().contains("certificate"), "refusal says why: {line}");

    // No client certificate at all.
    let roots = {
        let mut r = rustls::RootCertStore::empty();
        for c in identity(&stack.pki, "carabinieri")?.ca {
            r.add(c)?;
        }
        r
    };
    let mut anon =
        rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_root_certificates(roots)
            .with_no_client_auth();
    anon.alpn_protocols = vec![ponte_proto::wire::ALPN.to_vec()];
    let anon = quinn::ClientConfig::new(Arc::new(quinn::crypto::rustls::QuicClientConfig::try_from(anon)?));
    let (_ep2, res) = dial(anon, quic).await?;
    assert!(res.is_err(), "a client without a certificate must be refused");

    // The real agent's session is untouched.
    let status = http_get(&format!("{}/api/status", stack.base_url())).await?.json()?;
    assert_eq!(status["links"][0]["peer"], "master", "{status}");
    Ok(())
}

#[tokio::test]
async fn garbage_on_the_control_stream_closes_only_that_session() -> Result<()> {
    let stack = Stack::start(vec![Device::synthetic("cam-c")]).await?;
    let quic = stack.relay_config.relay.quic_listen;
    let me = identity(&stack.pki, "master")?;
    let client = tls::client_config(&me, &TransportOptions::default())?;

    // 1: random bytes instead of Hello. 2: a valid Hello, then random bytes.
    for hello_first in [false, true] {
        let (_ep, res) = dial(client.clone(), quic).await?;
        let conn = res.map_err(anyhow::Error::msg).context("a valid certificate is accepted")?;
        let (mut send, _recv) = conn.open_bi().await?;
        if hello_first {
            let mut buf = bytes::BytesMut::new();
            Control::Hello {
                version: PROTOCOL_VERSION,
                node: "master".into(),
                role: Role::Agent,
                policy: None,
            }
            .encode(&mut buf)?;
            send.write_all(&buf).await?;
        }
        let junk: Vec<u8> = (0..4096).map(|_| rand::random::<u8>()).collect();
        // A length prefix that is plausible but the body is not JSON.
        send.write_all(&[0, 0, 0, 16]).await?;
        send.write_all(&junk).await?;
        let closed = tokio::time::timeout(T, conn.closed()).await.context("relay must close the session")?;
        println!("hostile session closed: {closed}");
        assert!(
            matches!(closed, quinn::ConnectionError::ApplicationClosed(ref c) if c.error_code == quinn::VarInt::from_u32(session::close_code::PROTOCOL)),
            "closed as a protocol violation: {closed}"
        );
    }

    // The relay still serves the agent's session and its cameras.
    let status = http_get(&format!("{}/api/status", stack.base_url())).await?.json()?;
    let links = status["links"].as_array().context("links")?;
    assert_eq!(links.len(), 1, "only the real agent's link remains: {status}");
    assert_eq!(links[0]["peer"], "master");
    let catalog = http_get(&format!("{}/api/catalog", stack.base_url())).await?.json()?;
    assert_eq!(catalog["cameras"][0]["id"], "cam-c", "{catalog}");
    Ok(())
}
