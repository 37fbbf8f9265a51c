//! One QUIC session per relay: the agent dials, sends its catalog, and
//! serves the relay's subscriptions with one stream per GOP, shaped to the
//! site's link budget (`ponte_proto::shaping`).
//!
//! Shaping in the shell: each site session owns a [`ponte_proto::shaping::Shaper`]; each
//! subscription's pump reads the camera's main and substream while the site
//! has a budget (so a switch can happen at the very next keyframe of the
//! target stream, and both bitrates are known), asks the shaper at each GOP
//! boundary which rung to send, and tells the relay when it pauses. The
//! session feeds the shaper the QUIC path's capacity and overhead, and
//! publishes a [`boards::LinkSnapshot`] on the [`ShapingBoard`] for status pages.
//!
//! Layout: [`state`] is the session's sans-IO core (subscriptions, access
//! rechecks, PTZ lock filtering, stats), which decides and returns actions;
//! [`shell`] runs one session's `select!` loop over the QUIC connection and
//! executes them; [`dial`] dials each relay and redials it with [`redial`]'s backoff; [`pump`] sends one subscription's media, GOP by GOP, as
//! the site's shaper decides (its frame gating is the sans-IO
//! [`pump::Gate`]); [`boards`] is what sessions publish for status pages and
//! `/metrics`.

mod boards;
mod dial;
mod pump;
mod redial;
mod shell;
pub mod state;

pub use boards::{LinkBoard, ShapingBoard};
pub use dial::{spawn, LinkState, Uplink};

use crate::access::{Access, Clock};
use crate::sources::cameras::Cameras;
use ponte_proto::audit::AuditLog;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use tokio::sync::watch;

/// Everything a session needs besides its connection.
#[derive(Clone)]
pub struct Shared {
    /// This agent's node id.
    pub node: String,
    /// The cameras.
    pub cameras: Arc<Cameras>,
    /// Current policies; replaced on reload.
    pub access: watch::Receiver<Arc<Access>>,
    /// Audit log.
    pub audit: Arc<AuditLog>,
    /// How often the head of the audit log goes to each relay (`audit.anchor_every_secs`).
    pub anchor_every: std::time::Duration,
    /// Turns true when the agent shuts down: each session sends the relay
    /// the audit head one last time.
    pub shutting_down: watch::Receiver<bool>,
    /// Wall clock the policy is evaluated against.
    pub clock: Clock,
    /// Where sessions publish their shaping state.
    pub shaping: ShapingBoard,
    /// Where sessions register their connection and counters.
    pub links: LinkBoard,
    /// Limits on what a relay may ask.
    pub limits: Arc<SessionLimits>,
    /// PTZ control (checks, arbitration, camera workers).
    pub ptz: crate::ptz::PtzService,
    /// This agent's certificates and revocation list.
    pub tls: ponte_proto::tls::LiveTls,
    /// The recordings: playback and exports.
    pub recall: Arc<crate::recall::Recall>,
    /// Every agent of the master room, this one included (`[redundancy]`;
    /// alone: just this one).
    pub agents: Vec<String>,
    /// Shares, asks and alarms (issue 23).
    pub incidents: crate::incidents::Incidents,
}

/// Limits on what one relay session may ask, and how often they were hit.
#[derive(Debug, Default)]
pub struct SessionLimits {
    /// `agent.max_subscriptions_per_session`.
    pub max_subscriptions: u32,
    /// Subscriptions refused by it since start.
    pub refused: AtomicU64,
}

/// Bit/s as Mbit/s for a log line: one decimal, never negative (a sum of
/// rates can come out a hair below zero, which printed `-0.0`).
fn mbps(bps: f64) -> f64 {
    // `+ 0.0` turns a remaining -0.0 into 0.0.
    (bps / 1e5).round().max(0.0) / 10.0 + 0.0
}

/// [`mbps`] of a budget, `unlimited` without one.
fn mbps_or_unlimited(bps: Option<f64>) -> String {
    bps.map_or_else(|| "unlimited".to_owned(), |b| mbps(b).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mbps_reads_well_in_a_log_line() {
        assert_eq!(mbps(-1e-9).to_string(), "0", "no negative zero");
        assert_eq!(mbps(-0.0).to_string(), "0");
        assert_eq!(mbps(-3e6).to_string(), "0");
        assert_eq!(mbps(16e6).to_string(), "16");
        assert_eq!(mbps(2_349_999.0).to_string(), "2.3");
        assert_eq!(mbps_or_unlimited(None), "unlimited");
        assert_eq!(mbps_or_unlimited(Some(20e6)), "20");
    }
}
