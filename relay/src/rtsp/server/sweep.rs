//! Sessions ended from outside a request: a client gone quiet past the
//! session timeout, and a viewer whose access was revoked by an account
//! reload or a logout (its connection closed when nothing is left on it).

use super::RtspServer;
use crate::rtsp::session::Session;
use std::sync::Arc;
use std::time::Duration;
use tracing::{debug, info};

impl RtspServer {
    /// Ends sessions whose client has gone quiet.
    pub(super) async fn reap(self: Arc<Self>) {
        let every =
            (self.settings.session_timeout / 4).clamp(Duration::from_millis(100), Duration::from_secs(5));
        loop {
            tokio::time::sleep(every).await;
            let timeout = self.settings.session_timeout;
            let expired: Vec<Session> = {
                let mut sessions = self.lock();
                let ids: Vec<String> = sessions
                    .iter()
                    .filter(|(_, s)| s.last_seen.elapsed() > timeout)
                    .map(|(id, _)| id.clone())
                    .collect();
                ids.iter().filter_map(|id| sessions.remove(id)).collect()
            };
            for s in expired {
                info!(camera = %s.camera, peer = %s.peer, viewer = s.viewer.name(), "RTSP session timed out after {timeout:?} without keep-alive");
                s.end("session timed out (no keep-alive)");
            }
        }
    }

    /// Ends the sessions whose viewer may no longer watch them when the
    /// relay's accounts are reloaded or a browser logs out.
    pub(super) async fn watch_access(self: Arc<Self>) {
        let mut changes = self.auth.accounts().changes();
        while changes.changed().await.is_ok() {
            self.recheck_access();
        }
    }

    /// Ends every session whose viewer may no longer watch its camera, and
    /// closes the connection it came on; returns how many ended.
    pub fn recheck_access(&self) -> usize {
        let catalog = self.source.catalog();
        let (revoked, close) = {
            let mut sessions = self.lock();
            let revoked = self.auth.accounts().sweep(&catalog, &mut sessions);
            // A connection is closed when nothing it may still watch is left
            // on it; other sessions on it go on.
            let mut close: Vec<u64> = revoked.iter().map(|(_, s, _)| s.conn).collect();
            close.sort_unstable();
            close.dedup();
            close.retain(|conn| !sessions.values().any(|s| s.conn == *conn));
            (revoked, close)
        };
        let n = revoked.len();
        for (_, s, why) in revoked {
            info!(camera = %s.camera, peer = %s.peer, viewer = s.viewer.name(), %why, "RTSP: access revoked");
            s.end("access revoked (account removed or narrowed)");
        }
        let closers = self.closers.lock().unwrap_or_else(|e| e.into_inner());
        for conn in close {
            if let Some(closer) = closers.get(&conn) {
                debug!(connection = conn, "RTSP: closing a connection left with nothing it may watch");
                closer.notify_one();
            }
        }
        n
    }
}
