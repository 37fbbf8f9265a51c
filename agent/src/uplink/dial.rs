//! Dialling: one task per relay dials it, runs a session while the link is
//! up, and redials (see [`super::redial`]) until told to stop.

use super::shell::run_session;
use super::Shared;
use crate::config::RelayTarget;
use ponte_proto::session;
use rand::Rng;
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

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

/// A running uplink: its state, and the handle that ends it.
pub struct Uplink {
    /// The relay it dials.
    pub target: RelayTarget,
    /// Link state, for status and the demo banner.
    pub state: watch::Receiver<LinkState>,
    stop: watch::Sender<Option<String>>,
    task: JoinHandle<()>,
}

/// How long [`Uplink::stop`] waits for the session's close to go out and
/// its subscriptions to be audited.
const STOP_GRACE: Duration = Duration::from_secs(2);

impl Uplink {
    /// Ends the uplink: a live session is closed with `reason` (the relay
    /// logs it), and the relay is not dialled again. Returns once the
    /// session has wound down (its subscriptions ended and audited).
    pub async fn stop(mut self, reason: &str) {
        self.stop.send_replace(Some(reason.to_owned()));
        if tokio::time::timeout(STOP_GRACE, &mut self.task).await.is_err() {
            warn!(site = %self.target.site, "uplink still winding down after {STOP_GRACE:?}; aborted");
            self.task.abort();
        }
    }
}

impl Drop for Uplink {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Resolves once the uplink is told to stop, with the reason.
async fn stop_requested(stop: &mut watch::Receiver<Option<String>>) -> String {
    match stop.wait_for(Option::is_some).await {
        Ok(reason) => reason.clone().unwrap_or_default(),
        // The agent is gone: nothing left to serve.
        Err(_) => "agent shutting down".to_owned(),
    }
}

/// Dials `target` until stopped, running a session whenever the link is
/// up. A relay that does not answer is probed about once a second (see
/// [`super::redial`]), so a session is back within a second or so of a
/// fibre repair or a relay restart.
pub fn spawn(
    target: RelayTarget,
    endpoint: quinn::Endpoint,
    client: quinn::ClientConfig,
    shared: Shared,
) -> Uplink {
    let (state_tx, state_rx) = watch::channel(LinkState::Connecting { last_error: None });
    let (stop_tx, mut stop) = watch::channel(None::<String>);
    let task = {
        let target = target.clone();
        tokio::spawn(async move {
            let reason = dial_loop(&target, endpoint, client, shared, &state_tx, &mut stop).await;
            info!(site = %target.site, addr = %target.addr, %reason, "uplink stopped: the relay is not dialled any more");
        })
    };
    Uplink { target, state: state_rx, stop: stop_tx, task }
}

/// The dial loop of [`spawn`]; returns (the reason) only when told to stop.
async fn dial_loop(
    target: &RelayTarget,
    endpoint: quinn::Endpoint,
    client: quinn::ClientConfig,
    shared: Shared,
    state_tx: &watch::Sender<LinkState>,
    stop: &mut watch::Receiver<Option<String>>,
) -> String {
    use super::redial::{Outcome, Redial};
    let server_name = target.server_name.clone().unwrap_or_else(|| target.site.clone());
    let mut redial = Redial::new();
    // Unanswered probes are logged once, then every 30 s, not each second.
    let mut last_warned: Option<(Instant, String)> = None;
    loop {
        let timeout = redial.handshake_timeout();
        let (outcome, error) = match endpoint.connect_with(client.clone(), target.addr, &server_name) {
            Ok(connecting) => {
                let handshake = async {
                    match timeout {
                        Some(t) => tokio::time::timeout(t, connecting).await.ok(),
                        None => Some(connecting.await),
                    }
                };
                let handshake = tokio::select! {
                    r = handshake => r,
                    reason = stop_requested(stop) => return reason,
                };
                match handshake {
                    Some(Ok(conn)) => {
                        let peer = ponte_proto::tls::peer_site(&conn);
                        if peer.as_deref() != Some(target.site.as_str()) {
                            conn.close(session::close_code::FORBIDDEN.into(), b"unexpected site identity");
                            let e = format!(
                                "relay at {} presented {}, expected site `{}`",
                                target.addr,
                                ponte_proto::tls::describe_identity(peer.as_deref()),
                                target.site
                            );
                            (Outcome::Refused, e)
                        } else {
                            info!(site = %target.site, addr = %target.addr, "link up");
                            let _ = state_tx.send(LinkState::Up);
                            last_warned = None;
                            let _revocation = shared.tls.watch_peer(&conn);
                            let session = run_session(
                                &target.site,
                                target.label(),
                                target.paths.len(),
                                conn.clone(),
                                shared.clone(),
                            );
                            tokio::pin!(session);
                            let r = tokio::select! {
                                r = &mut session => r,
                                reason = stop_requested(stop) => {
                                    // Closing the connection ends the session
                                    // loop, which ends and audits the
                                    // subscriptions before it returns.
                                    info!(site = %target.site, addr = %target.addr, %reason, "closing the relay session");
                                    conn.close(session::close_code::NORMAL.into(), reason.as_bytes());
                                    let _ = session.await;
                                    return reason;
                                }
                            };
                            let e = match r {
                                Ok(()) => "session ended".to_owned(),
                                Err(e) => e.to_string(),
                            };
                            (Outcome::SessionEnded, e)
                        }
                    }
                    None | Some(Err(quinn::ConnectionError::TimedOut)) => {
                        (Outcome::NoAnswer, format!("no answer from {} (link or relay down)", target.addr))
                    }
                    Some(Err(e)) => {
                        (Outcome::Refused, format!("QUIC handshake with {} failed: {e}", target.addr))
                    }
                }
            }
            Err(e) => (Outcome::Refused, format!("cannot dial {}: {e}", target.addr)),
        };
        let pause = redial.after(outcome);
        let was_up = matches!(*state_tx.borrow(), LinkState::Up);
        if was_up {
            warn!(site = %target.site, error = %error, "link down");
        } else {
            let now = Instant::now();
            let repeat = last_warned.as_ref().is_some_and(|(at, e)| {
                *e == error && now.saturating_duration_since(*at) < Duration::from_secs(30)
            });
            if repeat {
                debug!(site = %target.site, error = %error, "cannot reach relay");
            } else {
                warn!(
                    site = %target.site,
                    error = %error,
                    attempts = redial.unanswered(),
                    retry_in_ms = pause.as_millis() as u64,
                    "cannot reach relay"
                );
                last_warned = Some((now, error.clone()));
            }
        }
        let _ = state_tx.send(LinkState::Connecting { last_error: Some(error) });
        let jitter = rand::rng().random_range(0.9..1.1);
        tokio::select! {
            () = tokio::time::sleep(pause.mul_f64(jitter)) => {}
            reason = stop_requested(stop) => return reason,
        }
    }
}
