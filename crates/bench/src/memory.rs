//! The memory check: load many events into a store with the default configuration, restart
//! it, read aggregates and the whole stream back, and report peak resident memory of each
//! phase and how long the restart took.
//!
//! Events are spread over many aggregates in rounds: event `k` belongs to aggregate
//! `k % aggregates` with sequence number `k / aggregates`, and transactions are consecutive
//! runs of events — so every transaction touches many aggregates and every aggregate's
//! events are spread over the whole store, as in a long-lived production context.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use myelin_proto::grpc::event::Event;
use myelin_store::{AppendTicket, ContextStore, Cursor, StoreConfig};
use prost::Message;

use crate::event::{EventFactory, now_ms};
use crate::procfs::{peak_rss_bytes, reset_peak_rss, rss_bytes};
use crate::stats::{Samples, Summary, rate_per_sec};

/// Transactions in flight at once during the load (the loader does not wait for each).
const IN_FLIGHT_MAX: usize = 16;
/// Events per tracking read call.
const READ_BATCH_EVENTS: usize = 1000;

#[derive(Debug, Clone)]
pub struct MemoryConfig {
    pub dir: PathBuf,
    pub events: u64,
    pub events_per_tx: usize,
    pub aggregates: u64,
    pub payload_bytes: usize,
    pub aggregate_reads: u64,
    /// `StoreConfig::index_cache_bytes`; `None` keeps the default.
    pub index_cache_bytes: Option<usize>,
    /// Leave the store on disk afterwards.
    pub keep: bool,
}

#[derive(Debug, Clone, Copy)]
pub struct MemoryResult {
    pub events: u64,
    pub load_time: Duration,
    pub store_bytes: u64,
    pub peak_rss_load_bytes: u64,
    pub rss_after_load_bytes: u64,
    pub rss_after_shutdown_bytes: u64,
    pub open_time: Duration,
    pub rss_after_open_bytes: u64,
    pub aggregate_reads: Summary,
    pub aggregate_reads_time: Duration,
    pub tracking_read_time: Duration,
    /// Peak from just before the restart to the end of the reads.
    pub peak_rss_restart_bytes: u64,
    pub rss_end_bytes: u64,
}

pub fn validate(config: &MemoryConfig) -> Result<()> {
    ensure!(config.events >= 1, "--events must be at least 1");
    ensure!(
        (1..=crate::store_run::EVENTS_PER_TX_MAX).contains(&config.events_per_tx),
        "--events-per-tx must be between 1 and {} (got {})",
        crate::store_run::EVENTS_PER_TX_MAX,
        config.events_per_tx
    );
    ensure!(config.aggregates >= 1, "--aggregates must be at least 1");
    ensure!(
        config.payload_bytes <= 1024 * 1024,
        "--payload-bytes must be at most 1048576"
    );
    Ok(())
}

pub fn run(config: &MemoryConfig) -> Result<MemoryResult> {
    validate(config)?;
    let dir = config.dir.join("memory");
    if dir.exists() {
        std::fs::remove_dir_all(&dir).with_context(|| format!("removing the old {}", dir.display()))?;
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    crate::procfs::warn_if_memory_backed(&dir);
    let result = run_in(&dir, config);
    if !config.keep {
        std::fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
    }
    result
}

fn open(dir: &Path, config: &MemoryConfig) -> Result<std::sync::Arc<ContextStore>> {
    let mut events = StoreConfig::default();
    if let Some(bytes) = config.index_cache_bytes {
        events.index_cache_bytes = bytes;
    }
    ContextStore::open(
        "default",
        dir.to_path_buf(),
        dir.to_path_buf(),
        events,
        StoreConfig::default(),
    )
    .with_context(|| format!("opening the store in {}", dir.display()))
}

fn aggregate_name(aggregate: u64) -> String {
    format!("order-{aggregate:08}")
}

fn run_in(dir: &Path, config: &MemoryConfig) -> Result<MemoryResult> {
    let store = open(dir, config)?;
    let started = Instant::now();
    load(&store, config)?;
    let load_time = started.elapsed();
    let peak_rss_load_bytes = peak_rss_bytes()?;
    let rss_after_load_bytes = rss_bytes()?;
    eprintln!(
        "loaded {} events in {:.1} s ({:.0} events/s); peak RSS {} MiB",
        config.events,
        load_time.as_secs_f64(),
        rate_per_sec(config.events, load_time),
        peak_rss_load_bytes >> 20
    );

    store.shutdown().context("shutting the store down")?;
    drop(store);
    let rss_after_shutdown_bytes = rss_bytes()?;
    let store_bytes = dir_bytes(dir)?;
    reset_peak_rss()?;

    let started = Instant::now();
    let store = open(dir, config)?;
    let open_time = started.elapsed();
    let rss_after_open_bytes = rss_bytes()?;
    ensure!(
        store.head() == config.events,
        "after restart the head is {}, expected {}",
        store.head(),
        config.events
    );
    eprintln!("reopened in {:.3} s", open_time.as_secs_f64());

    let started = Instant::now();
    let aggregate_reads = read_aggregates(&store, config)?;
    let aggregate_reads_time = started.elapsed();
    eprintln!(
        "{} aggregate reads in {:.1} s: {aggregate_reads}",
        config.aggregate_reads,
        aggregate_reads_time.as_secs_f64()
    );

    let started = Instant::now();
    tracking_read(&store, config.events)?;
    let tracking_read_time = started.elapsed();
    eprintln!(
        "tracking read of {} events in {:.1} s",
        config.events,
        tracking_read_time.as_secs_f64()
    );

    let peak_rss_restart_bytes = peak_rss_bytes()?;
    let rss_end_bytes = rss_bytes()?;
    store.shutdown().context("shutting the store down")?;
    Ok(MemoryResult {
        events: config.events,
        load_time,
        store_bytes,
        peak_rss_load_bytes,
        rss_after_load_bytes,
        rss_after_shutdown_bytes,
        open_time,
        rss_after_open_bytes,
        aggregate_reads,
        aggregate_reads_time,
        tracking_read_time,
        peak_rss_restart_bytes,
        rss_end_bytes,
    })
}

/// Appends all events with a few transactions in flight: order is kept because the store's
/// queue is FIFO and a single thread submits, so each aggregate's sequence stays contiguous.
fn load(store: &ContextStore, config: &MemoryConfig) -> Result<()> {
    let mut factory = EventFactory::new(config.payload_bytes);
    let mut in_flight: VecDeque<AppendTicket> = VecDeque::with_capacity(IN_FLIGHT_MAX);
    let mut next = 0u64;
    let report_every = (config.events / 10).max(1);
    let mut next_report = report_every;
    while next < config.events {
        let end = (next + config.events_per_tx as u64).min(config.events);
        let timestamp = now_ms();
        let events = (next..end)
            .map(|k| {
                let sequence = i64::try_from(k / config.aggregates).unwrap_or(i64::MAX);
                factory.encode(&aggregate_name(k % config.aggregates), sequence, k, timestamp)
            })
            .collect();
        if in_flight.len() >= IN_FLIGHT_MAX
            && let Some(ticket) = in_flight.pop_front()
        {
            ticket.wait().context("append during load")?;
        }
        in_flight.push_back(store.append(events).context("append during load")?);
        next = end;
        if next >= next_report {
            eprintln!("  {next} events appended");
            next_report += report_every;
        }
    }
    for ticket in in_flight {
        ticket.wait().context("append during load")?;
    }
    Ok(())
}

/// Events the loader gave `aggregate`.
fn expected_count(config: &MemoryConfig, aggregate: u64) -> u64 {
    let full_rounds = config.events / config.aggregates;
    full_rounds + u64::from(aggregate < config.events % config.aggregates)
}

/// Reads aggregates spread evenly over the id range and checks each one completely.
fn read_aggregates(store: &ContextStore, config: &MemoryConfig) -> Result<Summary> {
    let reads = config.aggregate_reads.min(config.aggregates);
    let mut samples = Samples::with_capacity(reads as usize);
    for i in 0..reads {
        let aggregate = i * config.aggregates / reads.max(1);
        let id = aggregate_name(aggregate);
        let started = Instant::now();
        let events = store
            .aggregate_events(&id, 0, 0, false, 0)
            .with_context(|| format!("reading {id}"))?;
        samples.record(started.elapsed());
        let expected = expected_count(config, aggregate);
        ensure!(
            events.len() as u64 == expected,
            "{id}: {} events read, {expected} expected",
            events.len()
        );
        for (sequence, bytes) in events.into_iter().enumerate() {
            let event = Event::decode(bytes).with_context(|| format!("{id}: undecodable event"))?;
            if event.aggregate_identifier != id || event.aggregate_sequence_number != sequence as i64 {
                bail!(
                    "{id}: event {sequence} is {}#{}",
                    event.aggregate_identifier,
                    event.aggregate_sequence_number
                );
            }
        }
    }
    Ok(samples.summary())
}

/// Reads the whole stream from token 0 and checks the tokens are contiguous.
fn tracking_read(store: &ContextStore, events: u64) -> Result<()> {
    let mut cursor = Cursor::new(0);
    let mut batch = Vec::with_capacity(READ_BATCH_EVENTS);
    let mut next = 0u64;
    while next < events {
        batch.clear();
        store
            .read_events(&mut cursor, READ_BATCH_EVENTS, &mut batch)
            .context("tracking read")?;
        ensure!(!batch.is_empty(), "tracking read stopped at token {next} of {events}");
        for (token, _) in &batch {
            ensure!(*token == next, "tracking read returned token {token}, expected {next}");
            next += 1;
        }
    }
    Ok(())
}

fn dir_bytes(dir: &Path) -> Result<u64> {
    let mut total = 0;
    for entry in std::fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
        let entry = entry.context("listing the store")?;
        total += entry.metadata().context("stat of a store file")?.len();
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_load_restart_and_read_back() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = MemoryConfig {
            dir: dir.path().to_path_buf(),
            events: 5_003,
            events_per_tx: 100,
            aggregates: 70,
            payload_bytes: 20,
            aggregate_reads: 10,
            index_cache_bytes: None,
            keep: false,
        };
        let result = run(&config).expect("memory run");
        assert_eq!(result.events, 5_003);
        assert_eq!(result.aggregate_reads.count, 10);
        assert!(result.peak_rss_load_bytes > 0);
        assert!(!dir.path().join("memory").exists());
    }

    #[test]
    fn counts_events_per_aggregate() {
        let config = MemoryConfig {
            dir: PathBuf::new(),
            events: 25,
            events_per_tx: 10,
            aggregates: 10,
            payload_bytes: 0,
            aggregate_reads: 0,
            index_cache_bytes: None,
            keep: false,
        };
        assert_eq!(expected_count(&config, 4), 3);
        assert_eq!(expected_count(&config, 5), 2);
    }
}
