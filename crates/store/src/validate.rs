//! Transaction checks run on the writer thread: Axon's per-aggregate sequence rule for events,
//! and the snapshot-not-ahead-of-events rule for snapshots.

use std::num::NonZeroUsize;
use std::sync::Arc;

use lru::LruCache;

use crate::error::{Result, StoreError};
use crate::log::SegmentLog;
use crate::segments::FastMap;
use crate::writer::{PreparedEvent, Validator};

/// Highest sequence per aggregate: a bounded LRU for hot aggregates, an overlay for the batch
/// being written (its entries are not in the published indexes yet, and must not be lost to
/// LRU eviction), and the indexes themselves — never a scan — for everything else.
pub(crate) struct SequenceValidator {
    log: Arc<SegmentLog>,
    cache: LruCache<Box<str>, i64, foldhash::fast::RandomState>,
    pending: FastMap<Box<str>, i64>,
}

impl SequenceValidator {
    pub fn new(log: Arc<SegmentLog>, capacity: usize) -> Self {
        let capacity = NonZeroUsize::new(capacity).unwrap_or(NonZeroUsize::MIN);
        SequenceValidator {
            log,
            cache: LruCache::with_hasher(capacity, Default::default()),
            pending: FastMap::default(),
        }
    }

    fn highest(&mut self, aggregate: &str) -> Result<i64> {
        if let Some(seq) = self.pending.get(aggregate) {
            return Ok(*seq);
        }
        if let Some(seq) = self.cache.get(aggregate) {
            return Ok(*seq);
        }
        let seq = self.log.highest_sequence(aggregate)?.unwrap_or(-1);
        self.cache.put(aggregate.into(), seq);
        Ok(seq)
    }
}

impl Validator for SequenceValidator {
    fn validate(&mut self, events: &[PreparedEvent]) -> Result<()> {
        // Checked in full before anything is recorded: a rejected transaction leaves no trace.
        let mut local: FastMap<&str, i64> = FastMap::default();
        for event in events.iter().filter(|e| e.indexed) {
            let aggregate = &*event.aggregate;
            let expected = match local.get(aggregate) {
                Some(last) => last + 1,
                None => self.highest(aggregate)? + 1,
            };
            if event.sequence != expected {
                return Err(StoreError::InvalidSequence {
                    aggregate: aggregate.to_string(),
                    actual: event.sequence,
                    expected,
                });
            }
            local.insert(aggregate, event.sequence);
        }
        for (aggregate, last) in local {
            self.pending.insert(aggregate.into(), last);
            self.cache.put(aggregate.into(), last);
        }
        Ok(())
    }

    fn published(&mut self) {
        self.pending.clear();
    }
}

/// A snapshot may not claim a sequence number beyond the aggregate's last event.
pub(crate) struct SnapshotValidator {
    events: Arc<SegmentLog>,
}

impl SnapshotValidator {
    pub fn new(events: Arc<SegmentLog>) -> Self {
        SnapshotValidator { events }
    }
}

impl Validator for SnapshotValidator {
    fn validate(&mut self, snapshots: &[PreparedEvent]) -> Result<()> {
        for snapshot in snapshots {
            let highest = self.events.highest_sequence(&snapshot.aggregate)?.unwrap_or(-1);
            if snapshot.sequence > highest {
                return Err(StoreError::InvalidSnapshotSequence {
                    aggregate: snapshot.aggregate.to_string(),
                    highest,
                    snapshot: snapshot.sequence,
                });
            }
        }
        Ok(())
    }

    fn published(&mut self) {}
}
