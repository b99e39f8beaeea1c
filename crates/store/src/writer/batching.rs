//! The group-commit policy as pure code: what the writer does next, decided from the batch it
//! is collecting, whether the queue was just seen empty, and the clock — nothing else.
//!
//! No I/O, channels or threads here: the writer thread (`writer/mod.rs`) asks
//! [`BatchPolicy::decide`] and carries the answer out, and tells the policy what a flush took
//! ([`BatchPolicy::flushed`]) so it can adapt. Time is always an argument, so the tests below
//! drive a clock of their own.
//!
//! The rules, in the order they are applied to a batch holding something:
//!
//! 1. **Full**: a batch of `max_batch_bytes` or more is flushed now.
//! 2. **Window closed**: appends keep joining a batch only until the time since the last flush
//!    ended reaches that flush's duration plus `flush_delay` (KurrentDB's adaptive rule: the
//!    slower the disk, the larger the batches). After that the batch is flushed now, however
//!    busy the queue.
//! 3. **Queue not yet seen empty**: take the next queued request without waiting.
//! 4. **Queue empty, siblings expected**: if the batch carries fewer transactions than the last
//!    one did, the appenders acknowledged a moment ago are likely about to send their next
//!    transactions: wait for them, but never past `flush_delay` after the batch's first
//!    transaction was staged (PostgreSQL's `commit_delay` with `commit_siblings`, learnt
//!    instead of configured).
//! 5. Otherwise flush now.
//!
//! **Why a lone client never waits.** Its previous batch held one transaction (its own), so
//! its next batch holds as many as soon as that transaction is staged: rule 4 does not apply,
//! and the moment the queue is seen empty (one non-blocking look at the channel, no sleep, no
//! timeout) rule 5 flushes. The append costs the batch's writes, one `fdatasync` and the reply,
//! which the writer sends itself (`completions`: small batches are never handed to another
//! thread). The same holds for the very first batch (nothing learnt yet: the last batch "held"
//! none), for a batch that follows one cut at `max_batch_bytes` (nobody was straggling then),
//! and for a batch of syncs and empty transactions only, which has nothing to share an
//! `fdatasync` with. A lone client can wait once: for its first append after a burst of
//! several clients, at most `flush_delay`.
//!
//! An empty batch blocks for the next request, without limit in fsync mode; in interval mode
//! (Axon's behaviour) only until written data is due to be synced.

use std::time::{Duration, Instant};

use crate::config::{Durability, StoreConfig};

/// The batch being collected and the file's state, as the writer sees them right now.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Pending {
    /// Non-empty transactions staged in the batch.
    pub transactions: usize,
    /// Encoded bytes staged in the batch.
    pub bytes: usize,
    /// Replies due once the batch is durable that carry no events: syncs, empty transactions.
    pub waiters: usize,
    /// When the batch's first transaction was staged (`None` while it has none).
    pub started: Option<Instant>,
    /// Interval mode: when data was first written without being synced since.
    pub unsynced_since: Option<Instant>,
    /// The writer looked at the queue since the last request was staged and found it empty.
    pub queue_seen_empty: bool,
}

impl Pending {
    fn is_empty(&self) -> bool {
        self.transactions == 0 && self.waiters == 0
    }
}

/// What the writer does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Decision {
    /// Write the batch, make it durable (fsync mode), publish it and reply.
    Flush,
    /// Take the next queued request if there is one, without blocking; record an empty queue.
    TakeQueued,
    /// Block for the next request until this instant, then decide again.
    WaitUntil(Instant),
    /// Nothing to do: block for the next request.
    Idle,
    /// Interval mode: the written data is due to be synced now.
    SyncWritten,
}

/// What a successful flush of a non-empty batch did, for the policy to learn from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Flushed {
    pub transactions: usize,
    pub bytes: usize,
    pub started: Instant,
    pub ended: Instant,
}

/// The group-commit policy: settings plus what the last flush taught it.
#[derive(Debug, Clone)]
pub(crate) struct BatchPolicy {
    flush_delay: Duration,
    max_batch_bytes: usize,
    /// `Some` in interval mode: the longest written data may stay unsynced.
    sync_interval: Option<Duration>,
    last_flush_duration: Duration,
    last_flush_end: Instant,
    /// Transactions the last flushed batch carried; 0 when it was cut at `max_batch_bytes`.
    last_batch_transactions: usize,
}

impl BatchPolicy {
    pub fn new(config: &StoreConfig, now: Instant) -> BatchPolicy {
        let sync_interval = match config.durability {
            Durability::Fsync => None,
            Durability::Interval { interval } => Some(interval),
        };
        BatchPolicy {
            flush_delay: config.flush_delay,
            max_batch_bytes: config.max_batch_bytes,
            sync_interval,
            last_flush_duration: Duration::ZERO,
            last_flush_end: now,
            last_batch_transactions: 0,
        }
    }

    /// The writer's next step (see the module docs for the rules).
    pub fn decide(&self, pending: &Pending, now: Instant) -> Decision {
        if pending.is_empty() {
            return self.decide_idle(pending, now);
        }
        if pending.bytes >= self.max_batch_bytes || self.window_end().is_none_or(|end| now >= end) {
            return Decision::Flush;
        }
        if !pending.queue_seen_empty {
            return Decision::TakeQueued;
        }
        match self.sibling_deadline(pending) {
            Some(deadline) if now < deadline => Decision::WaitUntil(deadline),
            _ => Decision::Flush,
        }
    }

    /// Interval mode: whether a flush must also sync — data has stayed unsynced for the
    /// interval, or a reply (a sync request) waits for durability.
    pub fn sync_after_flush(&self, unsynced_since: Option<Instant>, waiters: usize, now: Instant) -> bool {
        let Some(interval) = self.sync_interval else {
            return false;
        };
        let overdue = unsynced_since.is_some_and(|since| now.saturating_duration_since(since) >= interval);
        overdue || waiters > 0
    }

    /// Learns from a flush that wrote a batch: its duration widens or narrows the next window,
    /// its size says whether the next batch should wait for siblings.
    pub fn flushed(&mut self, flushed: Flushed) {
        debug_assert!(flushed.ended >= flushed.started);
        self.last_flush_duration = flushed.ended.saturating_duration_since(flushed.started);
        self.last_flush_end = flushed.ended;
        // A batch that filled `max_batch_bytes` had more waiting than it could take: nobody
        // is straggling, so the next batch should not wait for anyone.
        self.last_batch_transactions = if flushed.bytes >= self.max_batch_bytes {
            0
        } else {
            flushed.transactions
        };
    }

    /// Until when appends may keep joining the current batch (rule 2). Instants that cannot
    /// be represented (a validated config never gets there) close the window at once.
    fn window_end(&self) -> Option<Instant> {
        let window = self.last_flush_duration.saturating_add(self.flush_delay);
        self.last_flush_end.checked_add(window)
    }

    /// Until when an empty queue is waited on for the last batch's appenders (rule 4); `None`
    /// when nobody is expected.
    fn sibling_deadline(&self, pending: &Pending) -> Option<Instant> {
        let started = pending.started?;
        if pending.transactions == 0 || pending.transactions >= self.last_batch_transactions {
            return None;
        }
        started.checked_add(self.flush_delay)
    }

    fn decide_idle(&self, pending: &Pending, now: Instant) -> Decision {
        match (self.sync_interval, pending.unsynced_since) {
            (Some(interval), Some(since)) => match since.checked_add(interval) {
                Some(due) if now < due => Decision::WaitUntil(due),
                _ => Decision::SyncWritten,
            },
            _ => Decision::Idle,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FLUSH_DELAY: Duration = Duration::from_micros(600);
    const FSYNC: Duration = Duration::from_millis(2);

    fn config(durability: Durability) -> StoreConfig {
        StoreConfig {
            flush_delay: FLUSH_DELAY,
            max_batch_bytes: 10_000,
            durability,
            ..StoreConfig::default()
        }
    }

    fn micros(n: u64) -> Duration {
        Duration::from_micros(n)
    }

    /// A fake clock and a writer that follows the policy's decisions, as `Writer::run` does.
    struct Sim {
        policy: BatchPolicy,
        pending: Pending,
        now: Instant,
    }

    impl Sim {
        fn new(durability: Durability) -> Sim {
            let now = Instant::now();
            Sim {
                policy: BatchPolicy::new(&config(durability), now),
                pending: Pending::default(),
                now,
            }
        }

        fn decide(&self) -> Decision {
            self.policy.decide(&self.pending, self.now)
        }

        fn stage(&mut self, bytes: usize) {
            if self.pending.transactions == 0 {
                self.pending.started = Some(self.now);
            }
            self.pending.transactions += 1;
            self.pending.bytes += bytes;
            self.pending.queue_seen_empty = false;
        }

        /// The writer found nothing queued.
        fn queue_empty(&mut self) {
            self.pending.queue_seen_empty = true;
        }

        /// Flushes what is pending, taking `duration`.
        fn flush(&mut self, duration: Duration) {
            let started = self.now;
            self.now += duration;
            self.policy.flushed(Flushed {
                transactions: self.pending.transactions,
                bytes: self.pending.bytes,
                started,
                ended: self.now,
            });
            self.pending = Pending::default();
        }
    }

    #[test]
    fn a_lone_client_is_flushed_at_once_and_never_waits_for_siblings() {
        let mut sim = Sim::new(Durability::Fsync);
        assert_eq!(sim.decide(), Decision::Idle, "nothing pending: block for a request");
        for round in 0..5 {
            sim.stage(100);
            assert_eq!(
                sim.decide(),
                Decision::TakeQueued,
                "round {round}: one look at the queue"
            );
            sim.queue_empty();
            assert_eq!(sim.decide(), Decision::Flush, "round {round}: nobody else is coming");
            sim.flush(FSYNC);
            // The client gets its ack and sends the next transaction well inside the window.
            sim.now += micros(50);
        }
    }

    #[test]
    fn a_burst_arriving_during_a_flush_goes_out_as_one_batch() {
        let mut sim = Sim::new(Durability::Fsync);
        sim.stage(100);
        sim.queue_empty();
        assert_eq!(sim.decide(), Decision::Flush);
        // Eight transactions queue while that flush runs; the writer takes them one by one.
        sim.flush(FSYNC);
        assert_eq!(sim.decide(), Decision::Idle);
        sim.stage(100);
        for _ in 1..8 {
            assert_eq!(sim.decide(), Decision::TakeQueued);
            sim.now += micros(5);
            sim.stage(100);
        }
        assert_eq!(sim.pending.transactions, 8);
        assert_eq!(sim.decide(), Decision::TakeQueued, "the queue was not yet seen empty");
        sim.queue_empty();
        assert_eq!(sim.decide(), Decision::Flush, "eight is more than the last batch held");
        sim.flush(FSYNC);
        assert_eq!(sim.policy.last_batch_transactions, 8);
    }

    #[test]
    fn a_smaller_batch_waits_for_the_last_batchs_appenders_until_the_bound() {
        let mut sim = Sim::new(Durability::Fsync);
        for _ in 0..4 {
            sim.stage(100);
        }
        sim.queue_empty();
        sim.flush(FSYNC);
        sim.now += micros(30);
        sim.stage(100);
        let started = sim.now;
        sim.queue_empty();
        assert_eq!(
            sim.decide(),
            Decision::WaitUntil(started + FLUSH_DELAY),
            "one of four: the other three are likely on their way"
        );
        sim.now += micros(100);
        sim.stage(100);
        sim.queue_empty();
        assert_eq!(
            sim.decide(),
            Decision::WaitUntil(started + FLUSH_DELAY),
            "the bound counts from the batch's first transaction, not the latest"
        );
        sim.now = started + FLUSH_DELAY;
        assert_eq!(sim.decide(), Decision::Flush, "waiting ends at the bound");
    }

    #[test]
    fn the_wait_for_siblings_ends_when_the_batch_is_as_large_as_the_last() {
        let mut sim = Sim::new(Durability::Fsync);
        sim.stage(100);
        sim.stage(100);
        sim.queue_empty();
        sim.flush(FSYNC);
        sim.stage(100);
        sim.queue_empty();
        assert!(matches!(sim.decide(), Decision::WaitUntil(_)));
        sim.now += micros(20);
        sim.stage(100);
        sim.queue_empty();
        assert_eq!(sim.decide(), Decision::Flush);
    }

    #[test]
    fn a_batch_at_max_batch_bytes_is_flushed_now() {
        let mut sim = Sim::new(Durability::Fsync);
        sim.stage(4_000);
        assert_eq!(sim.decide(), Decision::TakeQueued);
        sim.stage(6_000);
        assert_eq!(sim.pending.bytes, 10_000);
        assert_eq!(
            sim.decide(),
            Decision::Flush,
            "at the limit, queued requests wait for the next batch"
        );
    }

    #[test]
    fn a_batch_cut_at_max_batch_bytes_makes_the_next_one_wait_for_nobody() {
        let mut sim = Sim::new(Durability::Fsync);
        for _ in 0..5 {
            sim.stage(2_000);
        }
        assert_eq!(sim.decide(), Decision::Flush);
        sim.flush(FSYNC);
        sim.stage(100);
        sim.queue_empty();
        assert_eq!(sim.decide(), Decision::Flush);
    }

    #[test]
    fn a_busy_queue_stops_feeding_the_batch_when_the_adaptive_window_closes() {
        let mut sim = Sim::new(Durability::Fsync);
        sim.stage(100);
        sim.queue_empty();
        sim.flush(FSYNC);
        let window_end = sim.now + FSYNC + FLUSH_DELAY;
        sim.stage(100);
        while sim.now + micros(100) < window_end {
            assert_eq!(sim.decide(), Decision::TakeQueued);
            sim.now += micros(100);
            sim.stage(100);
        }
        sim.now = window_end;
        assert_eq!(
            sim.decide(),
            Decision::Flush,
            "the last flush's duration plus flush_delay after it ended"
        );
    }

    #[test]
    fn a_batch_of_syncs_alone_is_flushed_at_once() {
        let mut sim = Sim::new(Durability::Fsync);
        sim.stage(100);
        sim.stage(100);
        sim.queue_empty();
        sim.flush(FSYNC);
        sim.pending.waiters = 1;
        assert_eq!(sim.decide(), Decision::TakeQueued);
        sim.queue_empty();
        assert_eq!(sim.decide(), Decision::Flush, "a sync has no fdatasync to share");
    }

    #[test]
    fn the_first_batch_never_waits() {
        let mut sim = Sim::new(Durability::Fsync);
        sim.stage(100);
        sim.queue_empty();
        assert_eq!(sim.decide(), Decision::Flush);
    }

    #[test]
    fn interval_mode_syncs_written_data_when_the_interval_is_up() {
        let interval = Duration::from_millis(10);
        let mut sim = Sim::new(Durability::Interval { interval });
        let written = sim.now;
        sim.pending.unsynced_since = Some(written);
        assert_eq!(sim.decide(), Decision::WaitUntil(written + interval));
        sim.now += interval;
        assert_eq!(sim.decide(), Decision::SyncWritten);
    }

    #[test]
    fn interval_mode_syncs_after_a_flush_that_is_overdue_or_has_a_sync_waiting() {
        let interval = Duration::from_millis(10);
        let sim = Sim::new(Durability::Interval { interval });
        let now = sim.now + interval;
        assert!(
            !sim.policy.sync_after_flush(None, 0, now),
            "nothing written, nobody waiting"
        );
        assert!(!sim.policy.sync_after_flush(Some(now - micros(10)), 0, now));
        assert!(sim.policy.sync_after_flush(Some(sim.now), 0, now), "overdue");
        assert!(sim.policy.sync_after_flush(None, 1, now), "a sync request waits");
    }

    #[test]
    fn fsync_mode_never_syncs_outside_a_flush() {
        let sim = Sim::new(Durability::Fsync);
        assert!(
            !sim.policy
                .sync_after_flush(Some(sim.now), 3, sim.now + Duration::from_secs(60))
        );
        let pending = Pending {
            unsynced_since: Some(sim.now),
            ..Pending::default()
        };
        assert_eq!(
            sim.policy.decide(&pending, sim.now + Duration::from_secs(60)),
            Decision::Idle
        );
    }
}
