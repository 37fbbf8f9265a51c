//! What the shell feeds the shaper: the link budget, the hysteresis
//! tunables and a subscription's measured stream rates.

use std::time::Duration;

/// Measured payload bitrates of a subscription's streams, bit/s (`None`
/// while not measured yet).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct StreamRates {
    /// Main stream.
    pub main_bps: Option<f64>,
    /// Substream.
    pub sub_bps: Option<f64>,
    /// Keyframes of the stream the keyframes-only rung uses.
    pub keyframes_bps: Option<f64>,
}

/// Budget of a site link.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Budget {
    /// Sustained rate, bit/s (`None`: unlimited).
    pub bps: Option<f64>,
    /// Bytes the link may send beyond the rate in a burst.
    pub burst_bytes: f64,
}

impl Budget {
    /// No budget: every subscription gets its top rung.
    pub const UNLIMITED: Budget = Budget { bps: None, burst_bytes: 0.0 };

    /// From the policy's Mbit/s and KiB; a missing burst defaults to 250 ms
    /// of the budget.
    pub fn from_policy(budget_mbps: Option<f64>, burst_kb: Option<u64>) -> Budget {
        match budget_mbps {
            Some(mbps) if mbps.is_finite() && mbps > 0.0 => {
                let bps = mbps * 1e6;
                let burst = burst_kb.map(|k| k as f64 * 1024.0).unwrap_or(bps / 8.0 / 4.0);
                Budget { bps: Some(bps), burst_bytes: burst }
            }
            _ => Budget::UNLIMITED,
        }
    }
}

/// How hard the shaper resists changing its mind.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Hysteresis {
    /// Share of the budget kept free when climbing (0.1 = climb into 90 %).
    pub headroom: f64,
    /// Least time between a rung change and the next climb of the same subscription.
    pub climb_every: Duration,
    /// Least time between a step down and the next climb of the same subscription.
    pub recover_after: Duration,
}

impl Default for Hysteresis {
    fn default() -> Self {
        Self {
            headroom: 0.10,
            climb_every: Duration::from_millis(1500),
            recover_after: Duration::from_secs(6),
        }
    }
}
