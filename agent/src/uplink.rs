//! One QUIC session per relay: the agent dials, sends its catalog, and
//! serves the relay's subscriptions with one stream per GOP.

use crate::cameras::Cameras;
use crate::config::RelayTarget;
use ponte_proto::session::{self, ControlSender, GopSender, PriorityClock, SessionError};
use ponte_proto::wire::{Control, Role, StatsReport, SubscribeErrorCode, PROTOCOL_VERSION};
use rand::Rng;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tracing::{info, warn};

/// State of the link to one relay, for logs, status and the demo banner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkState {
    /// Dialling (or waiting to redial).
    Connecting {
        /// Last error, if a previous attempt failed.
        last_error: Option<String>,
    },
    /// Session established.
    Up,
}

/// Backoff between redials: capped exponential with jitter.
pub const BACKOFF_MIN: Duration = Duration::from_millis(500);
/// Longest wait between redials.
pub const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// Dials `target` for ever, running a session whenever the link is up.
pub fn spawn(
    node: String,
    target: RelayTarget,
    endpoint: quinn::Endpoint,
    client: quinn::ClientConfig,
    cameras: Arc<Cameras>,
) -> (watch::Receiver<LinkState>, JoinHandle<()>) {
    let (state_tx, state_rx) = watch::channel(LinkState::Connecting { last_error: None });
    let task = tokio::spawn(async move {
        let server_name = target.server_name.clone().unwrap_or_else(|| target.site.clone());
        let mut backoff = BACKOFF_MIN;
        loop {
            let result: Result<(), String> =
                match endpoint.connect_with(client.clone(), target.addr, &server_name) {
                    Ok(connecting) => match connecting.await {
                        Ok(conn) => {
                            let peer = ponte_proto::tls::peer_site(&conn);
                            if peer.as_deref() != Some(target.site.as_str()) {
                                conn.close(
                                    session::close_code::FORBIDDEN.into(),
                                    b"unexpected site identity",
                                );
                                Err(format!(
                                    "relay at {} presented identity {:?}, expected site `{}`",
                                    target.addr, peer, target.site
                                ))
                            } else {
                                info!(site = %target.site, addr = %target.addr, "link up");
                                let _ = state_tx.send(LinkState::Up);
                                backoff = BACKOFF_MIN;
                                let r = run_session(&node, &target.site, conn, &cameras).await;
                                Err(match r {
                                    Ok(()) => "session ended".to_owned(),
                                    Err(e) => e.to_string(),
                                })
                            }
                        }
                        Err(e) => Err(format!("QUIC handshake with {} failed: {e}", target.addr)),
                    },
                    Err(e) => Err(format!("cannot dial {}: {e}", target.addr)),
                };
            if let Err(e) = result {
                let was_up = matches!(*state_tx.borrow(), LinkState::Up);
                if was_up {
                    warn!(site = %target.site, error = %e, "link down");
                } else {
                    warn!(site = %target.site, error = %e, retry_in_ms = backoff.as_millis() as u64, "cannot reach relay");
                }
                let _ = state_tx.send(LinkState::Connecting { last_error: Some(e) });
            }
            let jitter = rand::rng().random_range(0.8..1.2);
            tokio::time::sleep(backoff.mul_f64(jitter)).await;
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
    });
    (state_rx, task)
}

struct Subscription {
    task: JoinHandle<()>,
}

/// Counters of one session.
#[derive(Default)]
struct SessionCounters {
    bytes_sent: AtomicU64,
    gops_dropped: AtomicU64,
}

async fn run_session(
    node: &str,
    site: &str,
    conn: quinn::Connection,
    cameras: &Arc<Cameras>,
) -> Result<(), SessionError> {
    let hello = Control::Hello { version: PROTOCOL_VERSION, node: node.to_owned(), role: Role::Agent };
    let (mut tx, mut rx, _peer) = session::open_control(&conn, &hello).await?;
    tx.send(&Control::Catalog { cameras: cameras.catalog().to_vec() }).await?;

    // Replies from pump tasks (e.g. a camera track that ended) funnel here so
    // only this task writes the control stream.
    let (reply_tx, mut reply_rx) = mpsc::channel::<Control>(64);
    let counters = Arc::new(SessionCounters::default());
    let priorities = Arc::new(PriorityClock::default());
    let mut subs: HashMap<u64, Subscription> = HashMap::new();
    let mut stats = tokio::time::interval(Duration::from_secs(5));
    let result = loop {
        tokio::select! {
            msg = rx.recv() => {
                let msg = match msg { Ok(m) => m, Err(e) => break Err(e) };
                if let Err(e) = handle(msg, site, &conn, cameras, &mut subs, &priorities, &counters, &reply_tx, &mut tx).await {
                    break Err(e);
                }
            }
            Some(reply) = reply_rx.recv() => {
                if let Control::SubscribeError { id, .. } = &reply { subs.remove(id); }
                if let Err(e) = tx.send(&reply).await { break Err(e); }
            }
            _ = stats.tick() => {
                subs.retain(|_, s| !s.task.is_finished());
                let report = StatsReport {
                    subscriptions: subs.len() as u32,
                    bytes_sent: counters.bytes_sent.load(Ordering::Relaxed),
                    gops_dropped: counters.gops_dropped.load(Ordering::Relaxed),
                    ..Default::default()
                };
                if let Err(e) = tx.send(&Control::Stats(report)).await { break Err(e); }
            }
            e = conn.closed() => break Err(e.into()),
        }
    };
    for (_, s) in subs.drain() {
        s.task.abort();
    }
    if let Err(SessionError::Wire(_) | SessionError::Protocol(_)) = &result {
        conn.close(session::close_code::PROTOCOL.into(), b"protocol violation");
    }
    result
}

#[allow(clippy::too_many_arguments)]
async fn handle(
    msg: Control,
    site: &str,
    conn: &quinn::Connection,
    cameras: &Arc<Cameras>,
    subs: &mut HashMap<u64, Subscription>,
    priorities: &Arc<PriorityClock>,
    counters: &Arc<SessionCounters>,
    reply_tx: &mpsc::Sender<Control>,
    tx: &mut ControlSender,
) -> Result<(), SessionError> {
    match msg {
        Control::Subscribe { id, camera, quality } => {
            if let Some(old) = subs.remove(&id) {
                old.task.abort();
            }
            let offered = cameras.catalog().iter().any(|c| c.id == camera && c.qualities.contains(&quality));
            let reader = if offered { cameras.subscribe(&camera, quality) } else { None };
            let Some(mut reader) = reader else {
                info!(site, camera = %camera, quality = quality.name(), outcome = "unknown", "subscribe refused");
                let reason =
                    format!("camera `{camera}` ({}) is not in the catalog of site `{site}`", quality.name());
                return tx
                    .send(&Control::SubscribeError { id, code: SubscribeErrorCode::Unknown, reason })
                    .await;
            };
            info!(site, camera = %camera, quality = quality.name(), subscription = id, "subscribe");
            tx.send(&Control::SubscribeOk { id, codec: ponte_proto::media::Codec::H264 }).await?;
            let mut gops = GopSender::new(conn.clone(), id, priorities.clone());
            let counters = counters.clone();
            let reply_tx = reply_tx.clone();
            let task = tokio::spawn(async move {
                let mut last = gops.counters;
                loop {
                    let Some(item) = reader.next().await else {
                        let reason = format!("camera `{camera}` stopped delivering video");
                        let _ = reply_tx
                            .send(Control::SubscribeError { id, code: SubscribeErrorCode::Offline, reason })
                            .await;
                        break;
                    };
                    if gops.send(&item, quality).await.is_err() {
                        break;
                    }
                    let now = gops.counters;
                    counters.bytes_sent.fetch_add(now.bytes - last.bytes, Ordering::Relaxed);
                    counters.gops_dropped.fetch_add(now.gops_reset - last.gops_reset, Ordering::Relaxed);
                    last = now;
                }
            });
            subs.insert(id, Subscription { task });
        }
        Control::Unsubscribe { id } => {
            if let Some(s) = subs.remove(&id) {
                info!(site, subscription = id, "unsubscribe");
                s.task.abort();
            }
        }
        Control::Stats(_) => {}
        other => {
            return Err(SessionError::Protocol(format!(
                "relay sent `{}`, which only an agent may send",
                session::kind(&other)
            )))
        }
    }
    Ok(())
}
