//! Counters and histograms of one segment family, for `/actuator/prometheus`.
//!
//! The writer counts per batch, never per event: a few relaxed atomic adds after each
//! `fdatasync`, which costs tens of microseconds at the very least. Readers add once per call.
//! Nothing here takes a lock; a snapshot reads each atomic once, so a scrape taken while a batch
//! is being counted may see that batch in some counters and not yet in others.

use std::sync::atomic::{AtomicU64, Ordering};

/// Upper bounds of the fsync latency histogram, in seconds.
pub const FSYNC_SECONDS_BOUNDS: &[f64] = &[
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
];
/// Upper bounds of the transactions-per-batch histogram.
pub const BATCH_TRANSACTIONS_BOUNDS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0];
/// Upper bounds of the bytes-per-batch histogram: 4 KiB to 16 MiB in powers of 4 (a batch is
/// cut at `max_batch_bytes`, 1 MiB by default, but one transaction may be larger).
pub const BATCH_BYTES_BOUNDS: &[f64] = &[
    4096.0,
    16_384.0,
    65_536.0,
    262_144.0,
    1_048_576.0,
    4_194_304.0,
    16_777_216.0,
];

/// A histogram with fixed upper bounds (Prometheus `le` semantics: a value equal to a bound
/// falls into that bound's bucket) and one overflow bucket above every bound.
///
/// There is no separate count: the buckets are the count, so a snapshot's `count` always equals
/// the sum of its buckets, as Prometheus requires of `_count` and the `+Inf` bucket.
pub struct Histogram {
    bounds: &'static [f64],
    /// One per bound, then the overflow bucket.
    buckets: Box<[AtomicU64]>,
    /// `f64` bits of the sum of observed values.
    sum_bits: AtomicU64,
}

impl Histogram {
    /// `bounds` must ascend strictly and be finite.
    pub fn new(bounds: &'static [f64]) -> Histogram {
        assert!(
            bounds.iter().all(|b| b.is_finite()) && bounds.windows(2).all(|w| w[0] < w[1]),
            "histogram bounds must be finite and strictly ascending: {bounds:?}"
        );
        Histogram {
            bounds,
            buckets: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum_bits: AtomicU64::new(0.0f64.to_bits()),
        }
    }

    /// Records one value. NaN is ignored: it belongs in no bucket and would make the sum NaN
    /// for the rest of the process.
    pub fn observe(&self, value: f64) {
        if value.is_nan() {
            return;
        }
        let bucket = self.bounds.partition_point(|bound| *bound < value);
        self.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        // Uncontended in practice (each histogram has one writer thread), so one CAS.
        let _ = self
            .sum_bits
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |bits| {
                Some((f64::from_bits(bits) + value).to_bits())
            });
    }

    pub fn snapshot(&self) -> HistogramSnapshot {
        let counts: Vec<u64> = self.buckets.iter().map(|b| b.load(Ordering::Relaxed)).collect();
        HistogramSnapshot {
            bounds: self.bounds.to_vec(),
            count: counts.iter().sum(),
            counts,
            sum: f64::from_bits(self.sum_bits.load(Ordering::Relaxed)),
        }
    }
}

impl std::fmt::Debug for Histogram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.snapshot().fmt(f)
    }
}

/// A histogram's state at one moment.
#[derive(Debug, Clone, PartialEq)]
pub struct HistogramSnapshot {
    /// Upper bounds, ascending, in the unit of the metric.
    pub bounds: Vec<f64>,
    /// Per bucket, not cumulative: `counts[i]` values fell in `(bounds[i-1], bounds[i]]`; the
    /// last entry (`counts.len() == bounds.len() + 1`) counts values above every bound.
    pub counts: Vec<u64>,
    pub sum: f64,
    /// Values observed: the sum of `counts`.
    pub count: u64,
}

/// What one segment family (events or snapshots) of a context has done since the process
/// started, and what it holds now.
#[derive(Debug, Clone, PartialEq)]
pub struct FamilyMetrics {
    /// Committed (acknowledged) non-empty transactions. An empty transaction writes nothing and
    /// is not counted.
    pub appended_transactions: u64,
    /// Events in the committed transactions.
    pub appended_events: u64,
    /// Serialized event bytes committed (as sent, without the segment framing).
    pub appended_bytes: u64,
    /// Appends answered with an error: invalid events, sequence rejections, too large, poisoned,
    /// closed, failed writes or syncs.
    pub failed_appends: u64,
    /// Events handed to readers: tracking reads and aggregate (or snapshot) reads.
    pub read_events: u64,
    /// Duration of every data `fdatasync` of the writer thread (batch, multi-block batch, roll
    /// marker, interval sync), failed ones included.
    pub fsync_seconds: HistogramSnapshot,
    /// Transactions per committed batch.
    pub batch_transactions: HistogramSnapshot,
    /// Encoded bytes (events with their block framing) written per committed batch.
    pub batch_bytes: HistogramSnapshot,
    /// Closed segments plus the active one.
    pub segments: u64,
    /// Data files at their pre-allocated length, plus index and bloom files of closed segments.
    pub bytes_on_disk: u64,
    /// Closed segment data and index files held open for reads (bounded by the store's
    /// `open_segment_files`, per kind of file).
    pub open_files: u64,
    /// Token of the last committed event (or snapshot), -1 when empty.
    pub last_token: i64,
    /// Appends are refused after a failed write or sync, until restart.
    pub poisoned: bool,
}

/// The metrics of one context's two stores.
#[derive(Debug, Clone, PartialEq)]
pub struct StoreMetrics {
    pub events: FamilyMetrics,
    pub snapshots: FamilyMetrics,
}

/// The live counters of one segment family, shared by its writer and its readers.
#[derive(Debug)]
pub(crate) struct FamilyCounters {
    appended_transactions: AtomicU64,
    appended_events: AtomicU64,
    appended_bytes: AtomicU64,
    failed_appends: AtomicU64,
    /// Bumped by reader threads: kept off the cache line the writer keeps writing.
    read_events: Padded<AtomicU64>,
    fsync_seconds: Histogram,
    batch_transactions: Histogram,
    batch_bytes: Histogram,
}

/// One counter per 128 bytes (two cache lines: adjacent-line prefetch shares pairs).
#[derive(Debug)]
#[repr(align(128))]
struct Padded<T>(T);

/// One committed batch, as the writer counts it.
pub(crate) struct BatchCounts {
    pub transactions: u64,
    pub events: u64,
    pub event_bytes: u64,
    /// Encoded bytes written.
    pub written_bytes: u64,
}

impl FamilyCounters {
    pub fn new() -> FamilyCounters {
        FamilyCounters {
            appended_transactions: AtomicU64::new(0),
            appended_events: AtomicU64::new(0),
            appended_bytes: AtomicU64::new(0),
            failed_appends: AtomicU64::new(0),
            read_events: Padded(AtomicU64::new(0)),
            fsync_seconds: Histogram::new(FSYNC_SECONDS_BOUNDS),
            batch_transactions: Histogram::new(BATCH_TRANSACTIONS_BOUNDS),
            batch_bytes: Histogram::new(BATCH_BYTES_BOUNDS),
        }
    }

    pub fn committed(&self, batch: &BatchCounts) {
        self.appended_transactions
            .fetch_add(batch.transactions, Ordering::Relaxed);
        self.appended_events.fetch_add(batch.events, Ordering::Relaxed);
        self.appended_bytes.fetch_add(batch.event_bytes, Ordering::Relaxed);
        self.batch_transactions.observe(batch.transactions as f64);
        self.batch_bytes.observe(batch.written_bytes as f64);
    }

    pub fn failed(&self, appends: u64) {
        if appends > 0 {
            self.failed_appends.fetch_add(appends, Ordering::Relaxed);
        }
    }

    pub fn read(&self, events: usize) {
        if events > 0 {
            self.read_events.0.fetch_add(events as u64, Ordering::Relaxed);
        }
    }

    pub fn synced(&self, seconds: f64) {
        self.fsync_seconds.observe(seconds);
    }

    /// The counted part of the metrics; the caller fills in what describes the files.
    pub fn snapshot(&self, segments: u64, bytes_on_disk: u64, last_token: i64, poisoned: bool) -> FamilyMetrics {
        FamilyMetrics {
            appended_transactions: self.appended_transactions.load(Ordering::Relaxed),
            appended_events: self.appended_events.load(Ordering::Relaxed),
            appended_bytes: self.appended_bytes.load(Ordering::Relaxed),
            failed_appends: self.failed_appends.load(Ordering::Relaxed),
            read_events: self.read_events.0.load(Ordering::Relaxed),
            fsync_seconds: self.fsync_seconds.snapshot(),
            batch_transactions: self.batch_transactions.snapshot(),
            batch_bytes: self.batch_bytes.snapshot(),
            segments,
            bytes_on_disk,
            open_files: 0,
            last_token,
            poisoned,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BOUNDS: &[f64] = &[1.0, 2.0, 4.0];

    #[test]
    fn values_on_a_bound_fall_into_its_bucket() {
        let histogram = Histogram::new(BOUNDS);
        for value in [-3.0, 0.0, 1.0, 1.000_001, 2.0, 3.999, 4.0, 4.000_001, 1e9] {
            histogram.observe(value);
        }
        let snapshot = histogram.snapshot();
        assert_eq!(
            snapshot,
            HistogramSnapshot {
                bounds: vec![1.0, 2.0, 4.0],
                counts: vec![3, 2, 2, 2],
                sum: -3.0 + 0.0 + 1.0 + 1.000_001 + 2.0 + 3.999 + 4.0 + 4.000_001 + 1e9,
                count: 9,
            }
        );
    }

    #[test]
    fn empty_histogram_and_nan() {
        let histogram = Histogram::new(BOUNDS);
        assert_eq!(histogram.snapshot().counts, vec![0; 4]);
        histogram.observe(f64::NAN);
        histogram.observe(0.5);
        let snapshot = histogram.snapshot();
        assert_eq!(
            (snapshot.counts, snapshot.sum, snapshot.count),
            (vec![1, 0, 0, 0], 0.5, 1)
        );
    }

    #[test]
    fn infinities_go_to_the_ends() {
        let histogram = Histogram::new(BOUNDS);
        histogram.observe(f64::INFINITY);
        histogram.observe(f64::NEG_INFINITY);
        assert_eq!(histogram.snapshot().counts, vec![1, 0, 0, 1]);
    }

    #[test]
    fn concurrent_observers_lose_nothing() {
        let histogram = Histogram::new(BOUNDS);
        std::thread::scope(|scope| {
            for _ in 0..4 {
                scope.spawn(|| {
                    for i in 0..1000 {
                        histogram.observe(f64::from(i % 5));
                    }
                });
            }
        });
        let snapshot = histogram.snapshot();
        // Per thread, 0..5 repeated 200 times: buckets (≤1: 0,1) (≤2: 2) (≤4: 3,4).
        assert_eq!(snapshot.counts, vec![1600, 800, 1600, 0]);
        assert_eq!(snapshot.count, 4000);
        assert_eq!(snapshot.sum, 4.0 * 200.0 * 10.0);
    }

    #[test]
    fn the_standard_bounds_are_valid() {
        for bounds in [FSYNC_SECONDS_BOUNDS, BATCH_TRANSACTIONS_BOUNDS, BATCH_BYTES_BOUNDS] {
            assert_eq!(Histogram::new(bounds).snapshot().counts.len(), bounds.len() + 1);
        }
    }

    #[test]
    #[should_panic(expected = "strictly ascending")]
    fn unordered_bounds_are_refused() {
        Histogram::new(&[2.0, 1.0]);
    }
}
