//! What the path delivers, estimated from QUIC's loss, RTT and buffered
//! bytes: the measured capacity that caps the effective budget.

use std::time::{Duration, Instant};

/// Cumulative counters of a QUIC connection (as `quinn::Connection::stats`
/// reports them) and of the media the application handed to it.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct PathSample {
    /// UDP payload bytes sent.
    pub sent_bytes: u64,
    /// UDP datagrams sent.
    pub sent_datagrams: u64,
    /// Bytes declared lost.
    pub lost_bytes: u64,
    /// Smoothed round-trip time.
    pub rtt: Duration,
    /// Smallest round-trip time seen.
    pub min_rtt: Duration,
    /// Media bytes the application wrote to its streams.
    pub offered_bytes: u64,
}

/// How long after the last congestion sign the path counts as limited.
pub const CONGESTION_MEMORY: Duration = Duration::from_secs(10);
/// IP + UDP header bytes per datagram (IPv4).
pub const IP_UDP_OVERHEAD: u64 = 28;
/// Share of lost bytes that counts as congestion (sporadic loss does not).
pub const LOSS_SHARE: f64 = 0.01;
/// Queueing delay (smoothed RTT above the minimum) that counts as congestion.
pub const QUEUE_DELAY: Duration = Duration::from_millis(50);
/// How far the delivery rate may trail what was written, during loss,
/// before the loss counts as congestion (keyframes written at the end of a
/// sample and sent in the next one make up the rest).
pub const LOSS_BEHIND: f64 = 1.1;
/// Wire bytes per media byte assumed when comparing offered and delivered.
const NOMINAL_OVERHEAD: f64 = 1.03;
/// How many samples the sender's backlog is summed over (2 s at the
/// agent's 500 ms shaping tick).
pub const BACKLOG_SAMPLES: usize = 4;
/// Media written but not delivered over the last [`BACKLOG_SAMPLES`], in
/// seconds of the delivery rate, that counts as congestion: the queue a
/// viewer would wait behind, grown inside QUIC's send buffer where the RTT
/// does not show it (BBR paces, so the network queue stays short).
pub const BACKLOG_DELAY: Duration = Duration::from_millis(250);

/// Estimates what the path delivers. Congestion shows as a standing queue
/// (smoothed RTT well above the minimum) or as loss (beyond a sporadic
/// share) while the delivery rate falls behind what was written, two
/// samples running, or as media piling up in QUIC's buffers (more written
/// than delivered by a wide margin, three samples running). Loss alone is
/// not congestion: on a path that drops packets at random (a dirty
/// connector, a flapping optic) while its capacity is ample, QUIC
/// retransmits and the delivery rate keeps up with what was written; read
/// as congestion, that loss would step the cameras down, the delivery rate
/// with them, and the estimate with it, a spiral down to keyframes (the
/// delivery rate and the RTT tell congestion, as in BBR, not the lost-bytes
/// count). While any of these was seen within
/// [`CONGESTION_MEMORY`], the capacity is the rate the path delivered
/// while congested (not since: once shaped below it, the sender is
/// application-limited again and its rate says nothing about the path); a
/// quiet link has no measured limit.
///
/// The sender's own queue leads the other signs: media written faster
/// than the path delivers waits in QUIC's send buffer, where neither loss
/// nor the RTT shows it. Written minus delivered over the last
/// [`BACKLOG_SAMPLES`] beyond [`BACKLOG_DELAY`] of the delivery rate, and
/// still growing, two samples running, is congestion: a path narrowed to
/// 80 % of what is sent is seen within about 1.5 s, before a 2 s GOP's
/// worth has queued (one sample could be ten cameras' keyframes at once).
#[derive(Debug, Clone, Default)]
pub struct PathEstimator {
    last: Option<(Instant, PathSample)>,
    congested_at: Option<Instant>,
    capacity_bps: Option<f64>,
    backlog_streak: u32,
    signal_streak: u32,
    queue_streak: u32,
    /// (offered wire bytes, delivered bytes, seconds) of the last samples.
    recent: [(f64, f64, f64); BACKLOG_SAMPLES],
    next: usize,
}

impl PathEstimator {
    /// New estimator.
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds a sample; returns the capacity estimate, wire bit/s.
    pub fn update(&mut self, now: Instant, s: PathSample) -> Option<f64> {
        if let Some((t, prev)) = self.last {
            let dt = now.saturating_duration_since(t).as_secs_f64();
            if dt > 0.0 {
                let wire = |x: &PathSample| x.sent_bytes + x.sent_datagrams * IP_UDP_OVERHEAD;
                let sent = wire(&s).saturating_sub(wire(&prev)) as f64;
                let lost = s.lost_bytes.saturating_sub(prev.lost_bytes) as f64;
                let offered = s.offered_bytes.saturating_sub(prev.offered_bytes) as f64 * NOMINAL_OVERHEAD;
                let delivered = (sent - lost).max(0.0) * 8.0 / dt;
                let lossy = lost > 0.0 && lost > sent * LOSS_SHARE;
                let queued = s.rtt > s.min_rtt + QUEUE_DELAY.max(s.min_rtt);
                let written = offered > 64.0 * 1024.0;
                let piling = written && offered * 8.0 / dt > delivered * 1.25;
                let behind = written && offered * 8.0 / dt > delivered * LOSS_BEHIND;
                self.backlog_streak = if piling { self.backlog_streak + 1 } else { 0 };
                if let Some(slot) = self.recent.get_mut(self.next % BACKLOG_SAMPLES) {
                    *slot = (offered, (sent - lost).max(0.0), dt);
                }
                self.next = self.next.wrapping_add(1);
                // Still growing now: once shaped below the path, the
                // queue drains and the samples before say nothing new.
                let backlogged = written && offered > sent - lost && self.backlogged();
                self.queue_streak = if backlogged { self.queue_streak + 1 } else { 0 };
                // A single bad sample (a loss burst, a qdisc change) is not
                // congestion; two in a row are.
                let signal = queued || (lossy && behind);
                self.signal_streak = if signal { self.signal_streak + 1 } else { 0 };
                if self.signal_streak >= 2 || self.backlog_streak >= 3 || self.queue_streak >= 2 {
                    let was = self
                        .congested_at
                        .is_some_and(|t| now.saturating_duration_since(t) < CONGESTION_MEMORY);
                    self.capacity_bps = Some(match self.capacity_bps {
                        Some(c) if was => c * 0.7 + delivered * 0.3,
                        _ => delivered,
                    });
                    self.congested_at = Some(now);
                }
            }
        }
        self.last = Some((now, s));
        let congested =
            self.congested_at.is_some_and(|t| now.saturating_duration_since(t) < CONGESTION_MEMORY);
        if !congested {
            self.capacity_bps = None;
        }
        self.capacity_bps
    }

    /// True when what was written over the last samples exceeds what the
    /// path delivered by more than [`BACKLOG_DELAY`] of its delivery rate.
    fn backlogged(&self) -> bool {
        let (offered, delivered, secs) =
            self.recent.iter().fold((0.0, 0.0, 0.0), |(o, d, t), (o1, d1, t1)| (o + o1, d + d1, t + t1));
        if secs <= 0.0 || delivered <= 0.0 {
            return false;
        }
        (offered - delivered) / (delivered / secs) > BACKLOG_DELAY.as_secs_f64()
    }
}
