//! When to dial a relay again. Sans-IO: the uplink asks how long to give the
//! next handshake and how long to pause after each outcome.
//!
//! A fibre cut must cost viewers the outage and nothing more, so a relay that
//! does not answer is probed about once a second (a short handshake timeout,
//! a short pause): when the link returns, the next probe gets through within
//! a second or so. A capped exponential backoff would be 30 s late by then.
//! Probing costs one QUIC Initial (1.2 kB) a second. A relay that answers and
//! refuses (wrong identity, TLS error) is a configuration problem: that one
//! backs off exponentially, up to 30 s.

use std::time::Duration;

/// Handshake timeout of a probe: a fibre handshake takes milliseconds.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(1);
/// Every this many probes in a row, one runs to QUIC's own idle timeout, so
/// a relay behind a slow link (RTT beyond ~300 ms) still gets through. Its
/// lost Initial is retransmitted at ~0.3 s, 1 s and 2.3 s (the transport's
/// 100 ms initial RTT), so even then the wire is never silent for long.
pub const LONG_PROBE_EVERY: u32 = 4;
/// Pause between probes that got no answer.
pub const PROBE_PAUSE: Duration = Duration::from_millis(250);
/// After this many unanswered probes (~5 minutes) the pause grows to
/// [`SLOW_PROBE_PAUSE`]: a relay gone for long is still found within seconds.
pub const FAST_PROBES: u32 = 240;
/// Pause between probes once a relay has been silent for long.
pub const SLOW_PROBE_PAUSE: Duration = Duration::from_secs(2);
/// First pause after a refusal.
pub const BACKOFF_MIN: Duration = Duration::from_millis(500);
/// Longest pause after refusals.
pub const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// Pause after a session that was up ended (the relay restarted, the link
/// dropped): dial again almost at once.
pub const AFTER_SESSION: Duration = Duration::from_millis(100);

/// How a dial attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A session was established (and has ended since).
    SessionEnded,
    /// No answer within the handshake timeout: the link or the relay is down.
    NoAnswer,
    /// The relay answered and the handshake or identity check failed.
    Refused,
}

/// The redial schedule of one relay.
#[derive(Debug, Clone)]
pub struct Redial {
    backoff: Duration,
    unanswered: u32,
}

impl Default for Redial {
    fn default() -> Self {
        Self { backoff: BACKOFF_MIN, unanswered: 0 }
    }
}

impl Redial {
    /// A fresh schedule.
    pub fn new() -> Self {
        Self::default()
    }

    /// How long the next handshake may take; `None`: QUIC's idle timeout.
    pub fn handshake_timeout(&self) -> Option<Duration> {
        if self.unanswered % LONG_PROBE_EVERY == LONG_PROBE_EVERY - 1 {
            None
        } else {
            Some(PROBE_TIMEOUT)
        }
    }

    /// Records an attempt's outcome; returns the pause before the next one.
    pub fn after(&mut self, outcome: Outcome) -> Duration {
        match outcome {
            Outcome::SessionEnded => {
                self.backoff = BACKOFF_MIN;
                self.unanswered = 0;
                AFTER_SESSION
            }
            Outcome::NoAnswer => {
                self.unanswered = self.unanswered.saturating_add(1);
                if self.unanswered > FAST_PROBES {
                    SLOW_PROBE_PAUSE
                } else {
                    PROBE_PAUSE
                }
            }
            Outcome::Refused => {
                let pause = self.backoff;
                self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
                pause
            }
        }
    }

    /// Unanswered probes in a row.
    pub fn unanswered(&self) -> u32 {
        self.unanswered
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Worst case from the link's return to the next probe on the wire.
    fn worst_gap(r: &Redial) -> Duration {
        r.handshake_timeout().unwrap_or(Duration::from_secs(3)).min(PROBE_TIMEOUT) + PROBE_PAUSE
    }

    #[test]
    fn a_silent_relay_is_probed_about_once_a_second_for_minutes() {
        let mut r = Redial::new();
        let mut elapsed = Duration::ZERO;
        let mut longest_gap = Duration::ZERO;
        // A 30 s fibre cut: probes never get an answer.
        while elapsed < Duration::from_secs(30) {
            let timeout = r.handshake_timeout().unwrap_or(Duration::from_secs(3));
            // A probe's Initial goes out at its start; quinn retransmits it
            // on its own PTO, so the longest silence is a short probe plus
            // the pause, or a long probe's first PTO (~1 s).
            longest_gap = longest_gap.max(worst_gap(&r));
            elapsed += timeout + r.after(Outcome::NoAnswer);
        }
        assert!(longest_gap <= Duration::from_millis(1250), "{longest_gap:?}");
        assert!(r.unanswered() < FAST_PROBES);
        assert_eq!(r.after(Outcome::SessionEnded), AFTER_SESSION);
        assert_eq!(r.unanswered(), 0);
    }

    #[test]
    fn every_fourth_probe_waits_for_a_slow_link() {
        let mut r = Redial::new();
        let timeouts: Vec<Option<Duration>> = (0..8)
            .map(|_| {
                let t = r.handshake_timeout();
                r.after(Outcome::NoAnswer);
                t
            })
            .collect();
        assert_eq!(timeouts.iter().filter(|t| t.is_none()).count(), 2, "{timeouts:?}");
        assert_eq!(timeouts[3], None);
    }

    #[test]
    fn refusals_back_off_exponentially_to_the_cap_and_a_session_resets() {
        let mut r = Redial::new();
        let pauses: Vec<Duration> = (0..10).map(|_| r.after(Outcome::Refused)).collect();
        assert_eq!(pauses[0], BACKOFF_MIN);
        assert_eq!(pauses[1], BACKOFF_MIN * 2);
        assert_eq!(*pauses.last().unwrap(), BACKOFF_MAX);
        r.after(Outcome::SessionEnded);
        assert_eq!(r.after(Outcome::Refused), BACKOFF_MIN);
    }

    #[test]
    fn a_relay_silent_for_minutes_is_probed_less_often() {
        let mut r = Redial::new();
        for _ in 0..FAST_PROBES {
            assert_eq!(r.after(Outcome::NoAnswer), PROBE_PAUSE);
        }
        assert_eq!(r.after(Outcome::NoAnswer), SLOW_PROBE_PAUSE);
    }
}
