//! Blocks whose CRC this process has checked, so that aggregate reads can fetch a single event
//! instead of reading and checksumming its whole block every time.
//!
//! An aggregate's events are spread over many blocks (transactions), each usually much larger
//! than the events wanted from it: a 100-event transaction of 300-byte events is 30 KB read,
//! zeroed and checksummed to serve 300 bytes. The first aggregate read of a block still does
//! all of that (so damage is found as before) and records the block here with its length;
//! later reads of the same block read only the event, bounds-checked against the block's event
//! area, and still check that it is the event the index promised. Published blocks never
//! change (the writer only appends, recovery runs before any read), so an entry stays true
//! for the life of the process.
//!
//! Bounded by entries: past the limit, the least recently used segment's entries are dropped
//! (its blocks are verified again on their next read).

use lru::LruCache;
use parking_lot::Mutex;

use crate::segments::FastMap;

pub(crate) struct VerifiedBlocks {
    inner: Mutex<Inner>,
}

struct Inner {
    /// Segment first token → block offset → block length (header, events and CRC).
    segments: LruCache<u64, FastMap<u32, u32>>,
    entries: usize,
    limit: usize,
}

impl VerifiedBlocks {
    pub fn new(limit: usize) -> Self {
        VerifiedBlocks {
            inner: Mutex::new(Inner {
                segments: LruCache::unbounded(),
                entries: 0,
                limit,
            }),
        }
    }

    /// The length of the block at `block` in segment `segment`, if this process verified it.
    #[cfg(test)]
    fn get(&self, segment: u64, block: u32) -> Option<u32> {
        self.inner.lock().segments.get(&segment)?.get(&block).copied()
    }

    /// The length of each block of `blocks` in segment `segment` that this process verified,
    /// under one lock (an aggregate read asks for all of its events' blocks at once).
    pub fn get_all(&self, segment: u64, blocks: impl Iterator<Item = u32>) -> Vec<Option<u32>> {
        let mut inner = self.inner.lock();
        match inner.segments.get(&segment) {
            Some(lengths) => blocks.map(|block| lengths.get(&block).copied()).collect(),
            None => blocks.map(|_| None).collect(),
        }
    }

    pub fn insert(&self, segment: u64, block: u32, block_bytes: u32) {
        let mut inner = self.inner.lock();
        if inner.limit == 0 {
            return;
        }
        let blocks = inner.segments.get_or_insert_mut(segment, FastMap::default);
        if blocks.insert(block, block_bytes).is_none() {
            inner.entries += 1;
        }
        while inner.entries > inner.limit {
            match inner.segments.pop_lru() {
                Some((_, dropped)) => inner.entries -= dropped.len(),
                None => break,
            }
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.inner.lock().entries
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_lengths_per_segment() {
        let verified = VerifiedBlocks::new(10);
        verified.insert(0, 5, 100);
        verified.insert(7, 5, 200);
        assert_eq!(verified.get(0, 5), Some(100));
        assert_eq!(verified.get(7, 5), Some(200));
        assert_eq!(verified.get(0, 6), None);
        assert_eq!(verified.get(1, 5), None);
        assert_eq!(verified.get_all(0, [4, 5, 6].into_iter()), [None, Some(100), None]);
        assert_eq!(verified.get_all(3, [5].into_iter()), [None], "a segment never seen");
        verified.insert(0, 5, 100);
        assert_eq!(verified.len(), 2, "a block recorded twice counts once");
    }

    #[test]
    fn drops_the_least_recently_used_segment_past_the_limit() {
        let verified = VerifiedBlocks::new(4);
        for block in 0..3 {
            verified.insert(1, block, 10);
        }
        verified.insert(2, 0, 10);
        assert_eq!(
            verified.get(1, 0),
            Some(10),
            "touches segment 1: segment 2 is now the oldest"
        );
        verified.insert(3, 0, 10);
        assert_eq!(verified.get(2, 0), None, "segment 2 dropped");
        assert_eq!(verified.get(1, 2), Some(10));
        assert_eq!(verified.get(3, 0), Some(10));
        assert_eq!(verified.len(), 4);
        // A single segment past the limit drops itself: nothing is kept rather than too much.
        let small = VerifiedBlocks::new(2);
        for block in 0..3 {
            small.insert(9, block, 10);
        }
        assert!(small.len() <= 2);
    }

    #[test]
    fn a_zero_limit_keeps_nothing() {
        let verified = VerifiedBlocks::new(0);
        verified.insert(0, 0, 10);
        assert_eq!(verified.get(0, 0), None);
        assert_eq!(verified.len(), 0);
    }
}
