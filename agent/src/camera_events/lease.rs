//! When to renew a pull-point subscription and how long to wait after a
//! failure. Time is passed in.
//!
//! The camera states its termination time on its own clock, which may be
//! minutes off the agent's; only the difference `TerminationTime -
//! CurrentTime` of one answer is used, counted from when the answer came.
//! A camera that leaves either out is taken to grant what was asked.

use std::time::{Duration, Instant, SystemTime};

/// A subscription's remaining life, on the agent's clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease {
    expires: Instant,
    /// How long before `expires` the Renew is sent.
    margin: Duration,
}

impl Lease {
    /// From an answer received at `now` with the camera's `current` and
    /// `termination` times; `asked` when they do not tell; `request_timeout`
    /// is how long a Renew may take.
    pub fn new(
        now: Instant,
        current: Option<SystemTime>,
        termination: Option<SystemTime>,
        asked: Duration,
        request_timeout: Duration,
    ) -> Lease {
        let life = match (current, termination) {
            (Some(c), Some(t)) => t.duration_since(c).unwrap_or(Duration::ZERO),
            _ => asked,
        };
        Lease { expires: now + life, margin: (life / 2).min(request_timeout) }
    }

    /// A later answer (PullMessages) restating the termination time: moves
    /// the expiry and keeps the margin of the grant, so that answers
    /// counting down to the end never push the renewal along with them.
    pub fn restated(&mut self, now: Instant, current: Option<SystemTime>, termination: Option<SystemTime>) {
        if let (Some(c), Some(t)) = (current, termination) {
            self.expires = now + t.duration_since(c).unwrap_or(Duration::ZERO);
        }
    }

    /// When the Renew is due.
    pub fn renew_at(&self) -> Instant {
        self.expires.checked_sub(self.margin).unwrap_or(self.expires)
    }

    /// Whether the Renew is due at `now`.
    pub fn renew_due(&self, now: Instant) -> bool {
        now >= self.renew_at()
    }

    /// Timeout of a PullMessages sent at `now`: at most `max`, and ending by
    /// the renewal (at least `min`, so a late loop still pulls).
    pub fn pull_timeout(&self, now: Instant, min: Duration, max: Duration) -> Duration {
        self.renew_at().saturating_duration_since(now).clamp(min, max)
    }
}

/// Delay before subscribing again after a failure: 1 s, doubling to 30 s.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    next: Duration,
}

impl Backoff {
    const FIRST: Duration = Duration::from_secs(1);
    const MAX: Duration = Duration::from_secs(30);

    /// Fresh: the first failure waits 1 s.
    pub fn new() -> Backoff {
        Backoff { next: Self::FIRST }
    }

    /// The wait after one more failure.
    pub fn failed(&mut self) -> Duration {
        let wait = self.next;
        self.next = (self.next * 2).min(Self::MAX);
        wait
    }

    /// A subscription worked: the next failure waits 1 s again.
    pub fn succeeded(&mut self) {
        self.next = Self::FIRST;
    }
}

impl Default for Backoff {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: Duration = Duration::from_secs(1);

    #[test]
    fn renewal_uses_the_cameras_difference_not_its_clock() {
        let now = Instant::now();
        // The camera's clock is an hour behind; it grants 60 s.
        let current = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let lease = Lease::new(now, Some(current), Some(current + 60 * SECOND), 10 * SECOND, 2 * SECOND);
        assert_eq!(lease.renew_at(), now + 58 * SECOND);
        assert!(!lease.renew_due(now + 57 * SECOND));
        assert!(lease.renew_due(now + 58 * SECOND));
        assert_eq!(lease.pull_timeout(now, SECOND / 10, SECOND), SECOND);
        assert_eq!(
            lease.pull_timeout(now + 57_500 * Duration::from_millis(1), SECOND / 10, SECOND),
            SECOND / 2
        );
        assert_eq!(lease.pull_timeout(now + 59 * SECOND, SECOND / 10, SECOND), SECOND / 10);
    }

    #[test]
    fn a_short_or_unstated_lease_renews_halfway_and_a_past_one_at_once() {
        let now = Instant::now();
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let short = Lease::new(now, Some(t), Some(t + 2 * SECOND), 60 * SECOND, 5 * SECOND);
        assert_eq!(short.renew_at(), now + SECOND);
        let unstated = Lease::new(now, None, Some(t), 60 * SECOND, 2 * SECOND);
        assert_eq!(unstated.renew_at(), now + 58 * SECOND);
        let past = Lease::new(now, Some(t), Some(t - SECOND), 60 * SECOND, 2 * SECOND);
        assert!(past.renew_due(now));
    }

    #[test]
    fn pull_answers_counting_down_do_not_postpone_the_renewal() {
        let start = Instant::now();
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let mut lease = Lease::new(start, Some(t), Some(t + 2 * SECOND), 60 * SECOND, 5 * SECOND);
        for ms in (0..1000).step_by(10) {
            let elapsed = Duration::from_millis(ms);
            lease.restated(start + elapsed, Some(t + elapsed), Some(t + 2 * SECOND));
            assert_eq!(lease.renew_at(), start + SECOND);
        }
        assert!(lease.renew_due(start + SECOND));
        lease.restated(start, None, Some(t));
        assert_eq!(lease.renew_at(), start + SECOND, "a partial answer changes nothing");
    }

    #[test]
    fn backoff_doubles_to_thirty_seconds_and_resets() {
        let mut b = Backoff::new();
        let waits: Vec<u64> = (0..7).map(|_| b.failed().as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 30, 30]);
        b.succeeded();
        assert_eq!(b.failed(), SECOND);
    }
}
