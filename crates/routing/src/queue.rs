//! A handler's queue of commands waiting for permits (Axon Server SE's `FlowControlQueues`):
//! higher priority first, first in first out within a priority. A soft limit applies to
//! priority 0 and below, a hard limit of ⌈1.1 × soft⌉ to everything, so urgent messages still
//! get in when ordinary ones fill the queue.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

#[derive(Debug)]
struct Entry<T> {
    priority: i64,
    sequence: u64,
    item: T,
}

impl<T> PartialEq for Entry<T> {
    fn eq(&self, other: &Self) -> bool {
        self.priority == other.priority && self.sequence == other.sequence
    }
}

impl<T> Eq for Entry<T> {}

impl<T> PartialOrd for Entry<T> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl<T> Ord for Entry<T> {
    /// The greatest entry comes out first: highest priority, then the oldest.
    fn cmp(&self, other: &Self) -> Ordering {
        self.priority
            .cmp(&other.priority)
            .then_with(|| other.sequence.cmp(&self.sequence))
    }
}

#[derive(Debug)]
pub struct PriorityQueue<T> {
    heap: BinaryHeap<Entry<T>>,
    next_sequence: u64,
    soft_limit: usize,
    hard_limit: usize,
}

impl<T> PriorityQueue<T> {
    /// A queue that takes `soft_limit` items of priority 0 or below, and ⌈1.1 × soft⌉ in all.
    pub fn new(soft_limit: usize) -> PriorityQueue<T> {
        PriorityQueue {
            heap: BinaryHeap::new(),
            next_sequence: 0,
            soft_limit,
            hard_limit: soft_limit.saturating_add(soft_limit.div_ceil(10)),
        }
    }

    /// Adds `item`, or hands it back when the queue is full for its priority.
    pub fn push(&mut self, priority: i64, item: T) -> Result<(), T> {
        let limit = if priority <= 0 {
            self.soft_limit
        } else {
            self.hard_limit
        };
        if self.heap.len() >= limit {
            return Err(item);
        }
        self.heap.push(Entry {
            priority,
            sequence: self.next_sequence,
            item,
        });
        self.next_sequence += 1;
        Ok(())
    }

    pub fn pop(&mut self) -> Option<T> {
        self.heap.pop().map(|entry| entry.item)
    }

    /// Everything still queued, in the order it would have gone out, with its priority.
    pub fn drain(&mut self) -> Vec<(i64, T)> {
        let mut out = Vec::with_capacity(self.heap.len());
        while let Some(entry) = self.heap.pop() {
            out.push((entry.priority, entry.item));
        }
        out
    }

    /// Removes the items `matches` picks, keeping the order of the rest.
    pub fn remove_where(&mut self, mut matches: impl FnMut(&T) -> bool) -> Vec<T> {
        let (removed, kept): (Vec<_>, Vec<_>) = std::mem::take(&mut self.heap)
            .into_vec()
            .into_iter()
            .partition(|entry| matches(&entry.item));
        self.heap = kept.into();
        removed.into_iter().map(|entry| entry.item).collect()
    }

    pub fn len(&self) -> usize {
        self.heap.len()
    }

    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn higher_priority_first_and_first_come_first_within_one() {
        let mut queue = PriorityQueue::new(10);
        for (priority, name) in [(0, "a"), (5, "b"), (0, "c"), (5, "d"), (-1, "e"), (9, "f")] {
            queue.push(priority, name).expect("room");
        }
        let order: Vec<_> = std::iter::from_fn(|| queue.pop()).collect();
        assert_eq!(order, ["f", "b", "d", "a", "c", "e"]);
    }

    #[test]
    fn the_soft_limit_stops_ordinary_items_and_the_hard_limit_everything() {
        let mut queue = PriorityQueue::new(10);
        for i in 0..10 {
            queue.push(0, i).expect("room");
        }
        assert_eq!(queue.push(0, 10), Err(10));
        assert_eq!(queue.push(-3, 11), Err(11));
        queue.push(1, 12).expect("urgent items have the last tenth");
        assert_eq!(queue.push(7, 13), Err(13), "hard limit: 11");
        assert_eq!(queue.len(), 11);
    }

    #[test]
    fn remove_where_keeps_the_order_of_the_rest() {
        let mut queue = PriorityQueue::new(10);
        for (priority, item) in [(1, 1), (2, 2), (1, 3), (2, 4), (0, 5)] {
            queue.push(priority, item).expect("room");
        }
        assert_eq!(queue.remove_where(|item| item % 2 == 0).len(), 2);
        assert_eq!(queue.drain(), [(1, 1), (1, 3), (0, 5)]);
    }

    proptest! {
        /// Whatever goes in comes out sorted by priority (descending), and in arrival order
        /// within a priority.
        #[test]
        fn pops_are_sorted_and_stable(priorities in proptest::collection::vec(-3i64..4, 0..200)) {
            let mut queue = PriorityQueue::new(1000);
            for (i, p) in priorities.iter().enumerate() {
                queue.push(*p, (*p, i)).expect("room");
            }
            let out: Vec<_> = std::iter::from_fn(|| queue.pop()).collect();
            let mut expected: Vec<_> = priorities.iter().copied().enumerate().map(|(i, p)| (p, i)).collect();
            expected.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
            prop_assert_eq!(out, expected);
        }
    }
}
