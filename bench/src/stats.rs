//! Distributions: percentiles of latency samples.

use serde::Serialize;

/// Summary of a set of samples, in milliseconds.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Dist {
    /// Number of samples.
    pub n: usize,
    /// Median.
    pub p50_ms: f64,
    /// 95th percentile.
    pub p95_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// Largest sample.
    pub max_ms: f64,
}

impl Dist {
    /// Summarises samples given in microseconds (nearest-rank percentiles).
    pub fn of_micros(samples: &mut [i64]) -> Self {
        if samples.is_empty() {
            return Self::default();
        }
        samples.sort_unstable();
        let rank = |p: f64| {
            let i = ((p / 100.0) * samples.len() as f64).ceil() as usize;
            samples[i.clamp(1, samples.len()) - 1] as f64 / 1000.0
        };
        Self {
            n: samples.len(),
            p50_ms: rank(50.0),
            p95_ms: rank(95.0),
            p99_ms: rank(99.0),
            max_ms: rank(100.0),
        }
    }

    /// Summarises samples in milliseconds.
    pub fn of_ms(samples: &[f64]) -> Self {
        let mut micros: Vec<i64> = samples.iter().map(|m| (m * 1000.0).round() as i64).collect();
        Self::of_micros(&mut micros)
    }

    /// `p50 / p99 / max` for a table cell.
    pub fn cell(&self) -> String {
        if self.n == 0 {
            return "-".into();
        }
        format!("{:.2} / {:.2} / {:.2}", self.p50_ms, self.p99_ms, self.max_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let mut v: Vec<i64> = (1..=100).rev().map(|x| x * 1000).collect();
        let d = Dist::of_micros(&mut v);
        assert_eq!((d.n, d.p50_ms, d.p95_ms, d.p99_ms, d.max_ms), (100, 50.0, 95.0, 99.0, 100.0));
        assert_eq!(Dist::of_micros(&mut [2500]).p99_ms, 2.5);
        assert_eq!(Dist::of_micros(&mut []).cell(), "-");
    }
}
