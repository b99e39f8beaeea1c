//! Store settings. Units are in the names; every limit has a default that is safe for production.

use std::time::Duration;

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
