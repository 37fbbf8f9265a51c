//! What the relay sessions publish for status pages and `/metrics`: the
//! shaping state of each site link and the link's traffic figures.

use ponte_proto::media::Quality;
use ponte_proto::shaping::{Priority, Rung};
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

/// What one subscription's pump sent, for the snapshot.
#[derive(Default)]
pub(super) struct SubStats {
    pub(super) bytes: AtomicU64,
    pub(super) gops: AtomicU64,
    pub(super) gops_reset: AtomicU64,
}

/// Shaping state of every site link, for status pages and tests.
#[derive(Clone, Default)]
pub struct ShapingBoard(Arc<Mutex<BTreeMap<String, LinkSnapshot>>>);

impl ShapingBoard {
    fn lock(&self) -> MutexGuard<'_, BTreeMap<String, LinkSnapshot>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The latest snapshot of every site link that is up.
    pub fn snapshot(&self) -> Vec<LinkSnapshot> {
        self.lock().values().cloned().collect()
    }

    pub(super) fn publish(&self, snap: LinkSnapshot) {
        self.lock().insert(snap.site.clone(), snap);
    }

    pub(super) fn remove(&self, site: &str) {
        self.lock().remove(site);
    }
}

/// The live figures of every relay link, for status and `/metrics`: each
/// session registers its connection and counters here while it runs, and
/// the status sampler reads them every couple of seconds (a short std lock,
/// never held across an `.await`; nothing on the media path touches it).
#[derive(Clone, Default)]
pub struct LinkBoard(Arc<Mutex<BTreeMap<String, LinkEntry>>>);

/// One site's link: its session while up, and what earlier sessions sent.
#[derive(Default)]
struct LinkEntry {
    live: Option<(quinn::Connection, Arc<SessionCounters>)>,
    earlier_bytes: u64,
    earlier_drops: u64,
}

/// A relay link's traffic as the status document reports it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LinkFigures {
    /// The relay's address, while up.
    pub addr: Option<std::net::SocketAddr>,
    /// QUIC's smoothed round-trip time, while up.
    pub rtt: Option<Duration>,
    /// Packets declared lost since the link came up.
    pub lost_packets: u64,
    /// Media bytes sent to the site since the agent started.
    pub bytes_sent: u64,
    /// Active subscriptions of the session.
    pub subscriptions: u32,
    /// GOP streams reset as stale since the agent started.
    pub drops: u64,
}

impl LinkBoard {
    fn lock(&self) -> MutexGuard<'_, BTreeMap<String, LinkEntry>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The figures of `site`'s link (zeros for a link never up).
    pub fn figures(&self, site: &str) -> LinkFigures {
        let board = self.lock();
        let Some(entry) = board.get(site) else { return LinkFigures::default() };
        let mut f =
            LinkFigures { bytes_sent: entry.earlier_bytes, drops: entry.earlier_drops, ..Default::default() };
        if let Some((conn, counters)) = &entry.live {
            // The dual-stack socket sees an IPv4 relay as ::ffff:a.b.c.d.
            let addr = conn.remote_address();
            f.addr = Some(std::net::SocketAddr::new(addr.ip().to_canonical(), addr.port()));
            f.rtt = Some(conn.rtt());
            f.lost_packets = conn.stats().path.lost_packets;
            f.bytes_sent += counters.bytes_sent.load(Ordering::Relaxed);
            f.drops += counters.gops_dropped.load(Ordering::Relaxed);
            f.subscriptions = counters.subscriptions.load(Ordering::Relaxed);
        }
        f
    }

    pub(super) fn open(&self, site: &str, conn: quinn::Connection, counters: Arc<SessionCounters>) {
        self.lock().entry(site.to_owned()).or_default().live = Some((conn, counters));
    }

    /// Whether a session of `site` is up (on any path, to any relay of its pair).
    pub(super) fn any_live(&self, site: &str) -> bool {
        let of_site = |label: &str| crate::config::RelayTarget::label_is_of(label, site);
        self.lock().iter().any(|(label, e)| of_site(label) && e.live.is_some())
    }

    /// The session ended: its counts join the earlier sessions'.
    pub(super) fn close(&self, site: &str) {
        let mut board = self.lock();
        let Some(entry) = board.get_mut(site) else { return };
        if let Some((_, counters)) = entry.live.take() {
            entry.earlier_bytes += counters.bytes_sent.load(Ordering::Relaxed);
            entry.earlier_drops += counters.gops_dropped.load(Ordering::Relaxed);
        }
    }
}

/// One site link's shaping, as a status page shows it.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct LinkSnapshot {
    /// Site id.
    pub site: String,
    /// Configured budget, bit/s (`None`: unlimited).
    pub budget_bps: Option<f64>,
    /// Configured burst, bytes.
    pub burst_bytes: f64,
    /// Measured path capacity, bit/s (`None`: no sign of a limit).
    pub path_capacity_bps: Option<f64>,
    /// The budget the shaper applies: the lower of the two, bit/s.
    pub effective_bps: Option<f64>,
    /// Planned wire bitrate of the current rungs, bit/s.
    pub planned_bps: f64,
    /// Measured wire bitrate (QUIC + UDP + IP), bit/s.
    pub sent_bps: f64,
    /// `sent_bps` / `effective_bps`.
    pub budget_use: Option<f64>,
    /// Wire bytes per media byte.
    pub overhead: f64,
    /// Media bytes sent by this session.
    pub bytes_sent: u64,
    /// Stale GOPs reset by this session.
    pub gops_reset: u64,
    /// One row per subscription.
    pub subscriptions: Vec<SubscriptionSnapshot>,
}

/// One subscription's place on the ladder.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SubscriptionSnapshot {
    /// Subscription id (chosen by the relay).
    pub id: u64,
    /// Camera.
    pub camera: String,
    /// Quality the relay asked for (the top of its ladder).
    pub requested: Quality,
    /// Priority class.
    pub priority: Priority,
    /// Current rung (`None` before its first GOP).
    pub rung: Option<Rung>,
    /// Media bytes sent.
    pub bytes_sent: u64,
    /// GOP streams sent.
    pub gops_sent: u64,
    /// GOP streams reset as stale.
    pub gops_reset: u64,
    /// Times it stepped down.
    pub step_downs: u64,
    /// Rung changes after the first.
    pub rung_changes: u64,
}
/// Counters of one session.
#[derive(Default)]
pub(super) struct SessionCounters {
    pub(super) bytes_sent: AtomicU64,
    pub(super) gops_dropped: AtomicU64,
    /// `subs.len()`, kept here for the status sampler.
    pub(super) subscriptions: AtomicU32,
}
