//! Store settings. Units are in the names; every limit has a default that is safe for production.
//!
//! [`StoreConfig::validate`] is the store's own check of its bounds, run whenever a store is
//! opened: whoever builds the config (the server's settings, a tool, a test), a value the code
//! cannot honour is refused with the field, the value and the accepted range, never met later
//! as a panic or a wrong offset in a file.

use std::fmt::Display;
use std::ops::RangeInclusive;
use std::time::Duration;

use myelin_format::segment::{FILE_HEADER_BYTES, MARKER_BYTES, MAX_TRANSACTION_BYTES};

use crate::error::{Result, StoreError};

/// Every offset in a segment file fits an `i32`: Axon Server reads them as Java ints, and the
/// index stores them in 32 bits. A segment is never larger than this, including the one a
/// transaction larger than `segment_size_bytes` gets (header + transaction + marker).
pub(crate) const MAX_SEGMENT_BYTES: u64 = i32::MAX as u64;
/// The smallest segment: its header and a roll marker, with room for one byte more.
pub(crate) const MIN_SEGMENT_BYTES: u64 = (FILE_HEADER_BYTES + MARKER_BYTES + 1) as u64;
/// The longest `flush_delay` accepted: batching is about microseconds; a second already means
/// every lone append could be held that long after a burst.
pub(crate) const MAX_FLUSH_DELAY: Duration = Duration::from_secs(1);
/// The longest interval between syncs in interval mode (the server's own limit too).
pub(crate) const MAX_SYNC_INTERVAL: Duration = Duration::from_secs(3600);
/// The longest request queue: `sync_channel` allocates its slots up front.
pub(crate) const MAX_QUEUE_CAPACITY: usize = 1 << 20;
/// The largest sequence cache: its hash table is allocated whole when the store opens.
pub(crate) const MAX_SEQUENCE_CACHE_ENTRIES: usize = 1 << 24;

const _: () =
    assert!(FILE_HEADER_BYTES as u64 + MAX_TRANSACTION_BYTES as u64 + MARKER_BYTES as u64 <= MAX_SEGMENT_BYTES);
const _: () = assert!(MIN_SEGMENT_BYTES < MAX_SEGMENT_BYTES);

/// When an append is acknowledged relative to `fdatasync`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// Acknowledge only after the batch holding the append is on disk (the default).
    Fsync,
    /// Axon Server's behaviour: acknowledge after the write, sync every `interval`.
    /// A crash or power loss can drop up to `interval` of acknowledged appends.
    Interval { interval: Duration },
}

#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// Size every new segment file is pre-allocated to (Axon's `segment-size`, 256 MiB).
    pub segment_size_bytes: u64,
    pub durability: Durability,
    /// A batch stops taking transactions once its encoded bytes reach this.
    pub max_batch_bytes: usize,
    /// The largest transaction accepted (encoded bytes, all blocks).
    pub max_transaction_bytes: usize,
    /// Added to the last flush's duration to bound how long a batch may keep growing while
    /// appends keep arriving (KurrentDB's adaptive batching), and the longest a batch waits for
    /// appenders that were in the previous batch. 600 µs: long enough for 64 closed-loop
    /// clients to come back with their next transaction on a 2-core machine (BENCHMARKS.md).
    pub flush_delay: Duration,
    /// Appends waiting for the writer before `append` blocks the caller.
    pub queue_capacity: usize,
    /// Aggregates whose highest sequence number the writer keeps in memory.
    pub sequence_cache_entries: usize,
    /// Bytes of closed-segment index files kept in memory.
    pub index_cache_bytes: usize,
    /// Closed segment files kept open for reads, per family: at most this many data files and
    /// this many index files (the rest are reopened when read again).
    pub open_segment_files: usize,
    /// Bloom filter false-positive rate for closed segments.
    pub bloom_false_positive_rate: f64,
    /// A seek-table entry is recorded at least every this many bytes of segment data.
    pub seek_interval_bytes: u64,
    /// Blocks whose CRC an aggregate read checked, remembered (with their lengths) so later
    /// aggregate reads of the same block read only the event wanted; about 10 bytes each.
    /// 0: every aggregate read reads and checks whole blocks.
    pub verified_block_entries: usize,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            segment_size_bytes: 256 * 1024 * 1024,
            durability: Durability::Fsync,
            max_batch_bytes: 1024 * 1024,
            max_transaction_bytes: 32 * 1024 * 1024,
            flush_delay: Duration::from_micros(600),
            queue_capacity: 8192,
            sequence_cache_entries: 100_000,
            index_cache_bytes: 64 * 1024 * 1024,
            open_segment_files: 64,
            bloom_false_positive_rate: 0.01,
            seek_interval_bytes: 64 * 1024,
            verified_block_entries: 1 << 20,
        }
    }
}

impl StoreConfig {
    /// The longest stretch of file a single interrupted write can have touched. Recovery treats
    /// damage within this distance of the end of the valid data as a torn write (see FORMAT.md).
    pub fn torn_write_window_bytes(&self) -> u64 {
        match self.durability {
            Durability::Fsync => (self.max_batch_bytes + self.max_transaction_bytes) as u64 + 64,
            Durability::Interval { .. } => u64::MAX,
        }
    }
}

impl StoreConfig {
    /// Checks every setting against what the store's code relies on. Run by
    /// [`crate::ContextStore::open`] for both families; the error names the field, its value
    /// and the accepted range.
    pub fn validate(&self) -> Result<()> {
        within(
            "segment_size_bytes",
            self.segment_size_bytes,
            MIN_SEGMENT_BYTES..=MAX_SEGMENT_BYTES,
        )?;
        // A batch is written into one segment, so a larger limit would mean nothing; bounded
        // so that sums of sizes (the torn-write window) cannot overflow.
        within("max_batch_bytes", self.max_batch_bytes, 1..=MAX_SEGMENT_BYTES as usize)?;
        // Not bounded by the segment size: a transaction larger than a segment gets a segment
        // of its own (Axon's rule), which must still keep its offsets within an i32.
        within(
            "max_transaction_bytes",
            self.max_transaction_bytes,
            1..=MAX_TRANSACTION_BYTES,
        )?;
        within("flush_delay", self.flush_delay, Duration::ZERO..=MAX_FLUSH_DELAY)?;
        if let Durability::Interval { interval } = self.durability {
            within(
                "durability interval",
                interval,
                Duration::from_millis(1)..=MAX_SYNC_INTERVAL,
            )?;
        }
        within("queue_capacity", self.queue_capacity, 1..=MAX_QUEUE_CAPACITY)?;
        within("open_segment_files", self.open_segment_files, 1..=usize::MAX)?;
        within(
            "sequence_cache_entries",
            self.sequence_cache_entries,
            1..=MAX_SEQUENCE_CACHE_ENTRIES,
        )?;
        // A seek entry stores a 32-bit offset; a wider spacing than a segment means one entry.
        within("seek_interval_bytes", self.seek_interval_bytes, 1..=MAX_SEGMENT_BYTES)?;
        let rate = self.bloom_false_positive_rate;
        if !(rate > 0.0 && rate < 1.0) {
            return Err(out_of_range(
                "bloom_false_positive_rate",
                rate,
                "between 0 and 1, both excluded",
            ));
        }
        Ok(())
    }
}

fn within<T: PartialOrd + std::fmt::Debug>(field: &str, value: T, accepted: RangeInclusive<T>) -> Result<()> {
    if accepted.contains(&value) {
        return Ok(());
    }
    let range = format!("{:?} to {:?}", accepted.start(), accepted.end());
    Err(out_of_range(field, format!("{value:?}"), &range))
}

fn out_of_range(field: &str, value: impl Display, accepted: &str) -> StoreError {
    StoreError::InvalidArgument(format!(
        "store setting {field} = {value} is out of range: accepted {accepted}"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(config: StoreConfig, field: &str) -> String {
        match config.validate() {
            Err(StoreError::InvalidArgument(message)) => {
                assert!(message.contains(field), "{message}");
                assert!(message.contains("accepted"), "{message}");
                message
            }
            other => panic!("{field}: expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn the_defaults_are_accepted() {
        StoreConfig::default().validate().expect("defaults");
    }

    #[test]
    fn a_segment_too_small_for_its_header_and_marker_is_refused() {
        let message = refused(
            StoreConfig {
                segment_size_bytes: (FILE_HEADER_BYTES + MARKER_BYTES) as u64,
                ..StoreConfig::default()
            },
            "segment_size_bytes",
        );
        assert!(message.contains("= 9 "), "names the value: {message}");
        assert!(message.contains("10 to 2147483647"), "names the range: {message}");
        let smallest = StoreConfig {
            segment_size_bytes: MIN_SEGMENT_BYTES,
            ..StoreConfig::default()
        };
        smallest.validate().expect("the smallest segment");
    }

    #[test]
    fn a_segment_whose_offsets_would_not_fit_an_i32_is_refused() {
        refused(
            StoreConfig {
                segment_size_bytes: MAX_SEGMENT_BYTES + 1,
                ..StoreConfig::default()
            },
            "segment_size_bytes",
        );
        let largest = StoreConfig {
            segment_size_bytes: MAX_SEGMENT_BYTES,
            ..StoreConfig::default()
        };
        largest.validate().expect("Axon's largest segment");
    }

    #[test]
    fn an_empty_batch_limit_is_refused() {
        let config = StoreConfig {
            max_batch_bytes: 0,
            ..StoreConfig::default()
        };
        refused(config, "max_batch_bytes");
    }

    #[test]
    fn a_transaction_limit_above_the_formats_is_refused_but_one_above_the_segment_size_is_not() {
        let config = StoreConfig {
            max_transaction_bytes: MAX_TRANSACTION_BYTES + 1,
            ..StoreConfig::default()
        };
        refused(config, "max_transaction_bytes");
        let config = StoreConfig {
            max_transaction_bytes: 0,
            ..StoreConfig::default()
        };
        refused(config, "max_transaction_bytes");
        let larger_than_a_segment = StoreConfig {
            segment_size_bytes: 4096,
            max_transaction_bytes: MAX_TRANSACTION_BYTES,
            ..StoreConfig::default()
        };
        larger_than_a_segment
            .validate()
            .expect("such a transaction gets a segment of its own");
    }

    #[test]
    fn a_flush_delay_beyond_a_second_is_refused() {
        let config = StoreConfig {
            flush_delay: MAX_FLUSH_DELAY + Duration::from_nanos(1),
            ..StoreConfig::default()
        };
        refused(config, "flush_delay");
        let config = StoreConfig {
            flush_delay: Duration::ZERO,
            ..StoreConfig::default()
        };
        config.validate().expect("no delay at all is fine");
    }

    #[test]
    fn a_sync_interval_of_zero_or_beyond_an_hour_is_refused() {
        for interval in [Duration::ZERO, MAX_SYNC_INTERVAL + Duration::from_millis(1)] {
            let config = StoreConfig {
                durability: Durability::Interval { interval },
                ..StoreConfig::default()
            };
            refused(config, "durability interval");
        }
    }

    #[test]
    fn an_empty_or_huge_request_queue_is_refused() {
        for queue_capacity in [0, MAX_QUEUE_CAPACITY + 1] {
            let config = StoreConfig {
                queue_capacity,
                ..StoreConfig::default()
            };
            refused(config, "queue_capacity");
        }
    }

    #[test]
    fn no_open_segment_files_is_refused() {
        let config = StoreConfig {
            open_segment_files: 0,
            ..StoreConfig::default()
        };
        refused(config, "open_segment_files");
    }

    #[test]
    fn an_empty_or_huge_sequence_cache_is_refused() {
        for sequence_cache_entries in [0, MAX_SEQUENCE_CACHE_ENTRIES + 1] {
            let config = StoreConfig {
                sequence_cache_entries,
                ..StoreConfig::default()
            };
            refused(config, "sequence_cache_entries");
        }
    }

    #[test]
    fn a_seek_interval_of_zero_is_refused() {
        let config = StoreConfig {
            seek_interval_bytes: 0,
            ..StoreConfig::default()
        };
        refused(config, "seek_interval_bytes");
    }

    #[test]
    fn a_bloom_rate_outside_zero_and_one_is_refused() {
        for rate in [0.0, 1.0, -0.5, 2.0, f64::NAN] {
            let config = StoreConfig {
                bloom_false_positive_rate: rate,
                ..StoreConfig::default()
            };
            refused(config, "bloom_false_positive_rate");
        }
    }
}
