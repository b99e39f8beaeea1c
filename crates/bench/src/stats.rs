//! Latency samples and their percentiles (nearest rank over a sorted vector: exact, and cheap
//! enough for the few hundred thousand samples a run collects).

use std::fmt;
use std::time::Duration;

#[derive(Debug, Default, Clone)]
pub struct Samples {
    nanos: Vec<u64>,
}

impl Samples {
    pub fn with_capacity(capacity: usize) -> Self {
        Samples {
            nanos: Vec::with_capacity(capacity),
        }
    }

    pub fn record(&mut self, latency: Duration) {
        self.nanos.push(u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX));
    }

    pub fn merge(&mut self, other: Samples) {
        self.nanos.extend(other.nanos);
    }

    pub fn summary(mut self) -> Summary {
        self.nanos.sort_unstable();
        let at = |q: f64| -> Duration {
            if self.nanos.is_empty() {
                return Duration::ZERO;
            }
            let rank = (q * self.nanos.len() as f64).ceil() as usize;
            Duration::from_nanos(self.nanos[rank.clamp(1, self.nanos.len()) - 1])
        };
        let mean_nanos = if self.nanos.is_empty() {
            0
        } else {
            (self.nanos.iter().map(|n| u128::from(*n)).sum::<u128>() / self.nanos.len() as u128) as u64
        };
        Summary {
            count: self.nanos.len() as u64,
            mean: Duration::from_nanos(mean_nanos),
            p50: at(0.50),
            p99: at(0.99),
            p999: at(0.999),
            max: at(1.0),
        }
    }
}

#[derive(Debug, Clone, Copy, Default)]
pub struct Summary {
    pub count: u64,
    pub mean: Duration,
    pub p50: Duration,
    pub p99: Duration,
    pub p999: Duration,
    pub max: Duration,
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "n={} mean={} p50={} p99={} p99.9={} max={}",
            self.count,
            Millis(self.mean),
            Millis(self.p50),
            Millis(self.p99),
            Millis(self.p999),
            Millis(self.max)
        )
    }
}

/// A duration printed in milliseconds with three decimals.
pub struct Millis(pub Duration);

impl fmt::Display for Millis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:.3} ms", self.0.as_secs_f64() * 1e3)
    }
}

/// `count` per second over `elapsed`.
pub fn rate_per_sec(count: u64, elapsed: Duration) -> f64 {
    let secs = elapsed.as_secs_f64();
    if secs > 0.0 { count as f64 / secs } else { 0.0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let mut samples = Samples::default();
        for ms in (1..=1000).rev() {
            samples.record(Duration::from_millis(ms));
        }
        let s = samples.summary();
        assert_eq!(s.count, 1000);
        assert_eq!(s.p50, Duration::from_millis(500));
        assert_eq!(s.p99, Duration::from_millis(990));
        assert_eq!(s.p999, Duration::from_millis(999));
        assert_eq!(s.max, Duration::from_millis(1000));
    }

    #[test]
    fn empty_samples_summarise_to_zero() {
        let s = Samples::default().summary();
        assert_eq!((s.count, s.p99), (0, Duration::ZERO));
    }
}
