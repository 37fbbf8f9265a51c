//! A test endpoint that listens like a relay: the real agent dials it, and
//! the test speaks the control protocol directly (anything a relay could say).

use crate::config::{AgentConfig, Device, RelayTarget};
use crate::{bin_path, Pki, Proc};
use anyhow::{bail, Context, Result};
use ponte_proto::media::Quality;
use ponte_proto::ptz::{PtzCommand, PtzHolder, PtzReply};
use ponte_proto::session::{self, read_gop_stream, ControlReceiver, ControlSender};
use ponte_proto::tls::{self, Identity, TransportOptions};
use ponte_proto::wire::{CatalogEntry, Control, MediaEvent, Role, SubscribeErrorCode, PROTOCOL_VERSION};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Bound on every wait of the fake relay.
pub const WAIT: Duration = Duration::from_secs(20);

/// A listening endpoint with the `site`'s certificate.
pub struct FakeRelay {
    /// The QUIC endpoint the agent dials.
    pub endpoint: quinn::Endpoint,
    /// Site id it presents.
    pub site: String,
}

/// An accepted session with the agent.
pub struct AgentSession {
    /// The connection.
    pub conn: quinn::Connection,
    /// Control stream, sending half.
    pub tx: ControlSender,
    /// Control stream, receiving half.
    pub rx: ControlReceiver,
    /// The first catalog the agent sent.
    pub catalog: Vec<CatalogEntry>,
    /// `PtzLock` notices seen while waiting for other answers, oldest first.
    pub ptz_locks: Vec<(String, Option<PtzHolder>)>,
}

impl FakeRelay {
    /// Listens on 127.0.0.1 with `site`'s certificate from `pki`.
    pub fn listen(pki: &Pki, site: &str) -> Result<Self> {
        let id = Identity::load(&pki.ca_cert(), &pki.cert(site), &pki.key(site))?;
        let server = tls::server_config(&id, &TransportOptions::default())?;
        Ok(Self { endpoint: quinn::Endpoint::server(server, "127.0.0.1:0".parse()?)?, site: site.into() })
    }

    /// Listens on `socket` (e.g. one bound inside a network namespace,
    /// `NetnsPair::bind_udp`) with `site`'s certificate and `opts`; the
    /// socket gets the buffers the nodes ask for (the kernel's default drops
    /// bursts of large datagrams) and the endpoint accepts datagrams up to
    /// `opts.max_udp_payload`.
    pub fn on_socket(
        pki: &Pki,
        site: &str,
        socket: std::net::UdpSocket,
        opts: &TransportOptions,
    ) -> Result<Self> {
        let id = Identity::load(&pki.ca_cert(), &pki.cert(site), &pki.key(site))?;
        let server = tls::server_config(&id, opts)?;
        ponte_proto::endpoint::size_buffers(&socket);
        let endpoint = quinn::Endpoint::new(
            ponte_proto::endpoint::endpoint_config(quinn::EndpointConfig::default(), opts.max_udp_payload),
            Some(server),
            socket,
            std::sync::Arc::new(quinn::TokioRuntime),
        )?;
        Ok(Self { endpoint, site: site.into() })
    }

    /// The agent config `master` would get to feed this endpoint.
    pub fn agent_config(&self, pki: &Pki, devices: Vec<Device>) -> Result<AgentConfig> {
        let relay = RelayTarget::new(&self.site, self.endpoint.local_addr()?);
        Ok(AgentConfig::new("master", pki.tls("master"), vec![relay], devices))
    }

    /// Writes agent.toml pointing at this endpoint and starts the agent.
    pub fn spawn_agent(&self, pki: &Pki, dir: &Path, devices: Vec<Device>) -> Result<(Proc, PathBuf)> {
        self.spawn_agent_with(dir, &self.agent_config(pki, devices)?, &[])
    }

    /// Writes `cfg` (e.g. from [`Self::agent_config`]) to `dir/agent.toml`
    /// and starts the agent with extra environment variables.
    pub fn spawn_agent_with(
        &self,
        dir: &Path,
        cfg: &AgentConfig,
        env: &[(&str, &str)],
    ) -> Result<(Proc, PathBuf)> {
        let path = cfg.write(dir.join("agent.toml"))?;
        let mut cmd = std::process::Command::new(bin_path("ponte-agent")?);
        cmd.arg("run").arg("--config").arg(&path).env("RUST_LOG", "info");
        for (k, v) in env {
            cmd.env(k, v);
        }
        Ok((Proc::spawn_command("agent", cmd)?, path))
    }

    /// Accepts the agent's connection, exchanges Hello, reads the catalog.
    pub async fn accept(&self) -> Result<AgentSession> {
        let conn =
            tokio::time::timeout(WAIT, self.endpoint.accept()).await?.context("endpoint closed")?.await?;
        let hello = Control::Hello {
            version: PROTOCOL_VERSION,
            node: self.site.clone(),
            role: Role::Relay,
            policy: None,
        };
        let (tx, mut rx, _) = session::accept_control(&conn, &hello).await?;
        let catalog = match tokio::time::timeout(WAIT, rx.recv()).await?? {
            Control::Catalog { cameras } => cameras,
            other => bail!("expected the catalog first, got {other:?}"),
        };
        Ok(AgentSession { conn, tx, rx, catalog, ptz_locks: Vec::new() })
    }
}

/// The agent's answer to a subscription.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// `SubscribeOk`.
    Ok,
    /// `SubscribeError`.
    Refused(SubscribeErrorCode, String),
}

impl AgentSession {
    /// Next control message other than `Stats` and `AuditHead`.
    pub async fn next_control(&mut self) -> Result<Control> {
        loop {
            match tokio::time::timeout(WAIT, self.rx.recv()).await?? {
                // Counters and audit heads are not what a test waits for.
                Control::Stats(_) | Control::AuditHead { .. } | Control::Policy { .. } => continue,
                other => return Ok(other),
            }
        }
    }

    /// Subscribes and waits for the answer to that id.
    pub async fn subscribe(&mut self, id: u64, camera: &str, quality: Quality) -> Result<Answer> {
        self.tx
            .send(&Control::Subscribe { id, camera: camera.into(), quality, viewer: None, playback: None })
            .await?;
        loop {
            match self.next_control().await? {
                Control::SubscribeOk { id: got, .. } if got == id => return Ok(Answer::Ok),
                Control::SubscribeError { id: got, code, reason } if got == id => {
                    return Ok(Answer::Refused(code, reason))
                }
                Control::Catalog { cameras } => self.catalog = cameras,
                other => bail!("unexpected {other:?} while waiting for the answer to subscription {id}"),
            }
        }
    }

    /// Sends a PTZ command as `viewer` and waits for its `PtzResult`
    /// (lock notices meanwhile go to `ptz_locks`).
    pub async fn ptz(
        &mut self,
        id: u64,
        camera: &str,
        viewer: &str,
        command: PtzCommand,
    ) -> Result<PtzReply> {
        let msg = Control::Ptz { id, camera: camera.into(), viewer: viewer.into(), command };
        self.tx.send(&msg).await?;
        loop {
            match self.next_control().await? {
                Control::PtzResult { id: got, reply } if got == id => return Ok(reply),
                Control::PtzLock { camera, holder } => self.ptz_locks.push((camera, holder)),
                Control::Catalog { cameras } => self.catalog = cameras,
                other => bail!("unexpected {other:?} while waiting for the answer to PTZ command {id}"),
            }
        }
    }

    /// Waits for the next `PtzLock` notice (or returns the oldest one seen).
    pub async fn next_ptz_lock(&mut self) -> Result<(String, Option<PtzHolder>)> {
        if !self.ptz_locks.is_empty() {
            return Ok(self.ptz_locks.remove(0));
        }
        loop {
            match self.next_control().await? {
                Control::PtzLock { camera, holder } => return Ok((camera, holder)),
                Control::Catalog { cameras } => self.catalog = cameras,
                other => bail!("unexpected {other:?} while waiting for a PTZ lock notice"),
            }
        }
    }

    /// Reads media streams in the background; each frame goes to the channel
    /// as (subscription, gop seq, keyframe, payload bytes, arrival time).
    pub fn collect_media(&self) -> tokio::sync::mpsc::UnboundedReceiver<ReceivedFrame> {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let conn = self.conn.clone();
        tokio::spawn(async move {
            while let Ok(recv) = conn.accept_uni().await {
                let tx = tx.clone();
                tokio::spawn(async move {
                    let mut header = None;
                    let _ = read_gop_stream(recv, |ev| {
                        match ev {
                            MediaEvent::Header(h) => {
                                header = Some((h.subscription, h.seq, std::sync::Arc::new(h.config)))
                            }
                            MediaEvent::Frame(f) => {
                                if let Some((subscription, gop, config)) = &header {
                                    let (subscription, gop) = (*subscription, *gop);
                                    let _ = tx.send(ReceivedFrame {
                                        subscription,
                                        gop,
                                        keyframe: f.keyframe,
                                        pts: f.pts,
                                        payload: f.payload,
                                        config: config.clone(),
                                        at: std::time::Instant::now(),
                                    });
                                }
                            }
                        }
                        true
                    })
                    .await;
                });
            }
        });
        rx
    }
}

/// One frame as the fake relay received it.
#[derive(Debug, Clone)]
pub struct ReceivedFrame {
    /// Subscription id.
    pub subscription: u64,
    /// GOP sequence.
    pub gop: u64,
    /// Keyframe flag.
    pub keyframe: bool,
    /// Presentation time, 90 kHz.
    pub pts: u64,
    /// Annex-B payload.
    pub payload: bytes::Bytes,
    /// Decoder configuration from the GOP header.
    pub config: std::sync::Arc<ponte_proto::media::CodecConfig>,
    /// Arrival time.
    pub at: std::time::Instant,
}
