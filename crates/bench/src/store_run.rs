//! Durable appends into an in-process store from closed-loop appenders (OS threads blocking
//! on their ticket, or tokio tasks awaiting it): each appender sends one transaction, waits
//! until it is acknowledged (on disk), and only then sends the next. Every appender owns one
//! aggregate, so no transaction is ever rejected.
//!
//! Everything that happens in the warm-up is excluded. Throughput counts the transactions
//! started inside the measured window; latency is `append` to acknowledgement. The batch
//! size the writer reached is read from the writer thread's write counters: the writer
//! issues two `pwrite`s per batch (the batch without its first size field, then that field)
//! and one `fdatasync`, so batches = write calls / 2.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use bytes::Bytes;
use myelin_store::{ContextStore, StoreConfig};

use crate::event::{EventFactory, now_ms, transaction_bytes};
use crate::procfs::{ThreadCounters, process_cpu_ns, thread_counters};
use crate::stats::{Samples, Summary, rate_per_sec};

/// Appender threads allowed (each is an OS thread).
pub const APPENDERS_MAX: usize = 1024;
/// Events in one benchmark transaction (one block: the store's single-block fast path).
pub const EVENTS_PER_TX_MAX: usize = 10_000;

#[derive(Debug, Clone)]
pub struct StoreRunConfig {
    pub dir: PathBuf,
    pub appenders: usize,
    pub events_per_tx: usize,
    pub payload_bytes: usize,
    pub duration: Duration,
    pub warmup: Duration,
    pub waiter: Waiter,
}

/// How appenders wait for their acknowledgement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Waiter {
    /// An OS thread per appender, blocking in `AppendTicket::wait`.
    Threads,
    /// A tokio task per appender, awaiting the ticket (a worker thread per CPU).
    Tokio,
}

#[derive(Debug, Clone, Copy)]
pub struct StoreRunResult {
    pub appenders: usize,
    pub events_per_tx: usize,
    pub event_bytes: usize,
    pub transactions: u64,
    pub elapsed: Duration,
    pub latency: Summary,
    /// The writer threads' counters inside the measured window, when the kernel tells.
    pub writer: Option<ThreadCounters>,
    /// CPU time of the whole process (store and appenders) inside the window.
    pub process_cpu_ns: u64,
}

impl StoreRunResult {
    pub fn events(&self) -> u64 {
        self.transactions * self.events_per_tx as u64
    }

    pub fn events_per_sec(&self) -> f64 {
        rate_per_sec(self.events(), self.elapsed)
    }

    pub fn transactions_per_sec(&self) -> f64 {
        rate_per_sec(self.transactions, self.elapsed)
    }

    /// Encoded bytes of one transaction in the segment.
    pub fn transaction_bytes(&self) -> usize {
        transaction_bytes(self.events_per_tx, self.event_bytes)
    }

    /// What one `fdatasync` carries when every appender's transaction makes the same batch:
    /// the batch size the probe is run at.
    pub fn full_batch_bytes(&self) -> usize {
        self.appenders * self.transaction_bytes()
    }

    /// Batches (`fdatasync`s) in the window, measured from the writer's write calls.
    pub fn batches(&self) -> Option<u64> {
        self.writer.map(|w| w.write_calls / 2).filter(|b| *b > 0)
    }

    /// Average bytes per `fdatasync`, measured.
    pub fn batch_bytes(&self) -> Option<f64> {
        Some(self.writer?.write_bytes as f64 / self.batches()? as f64)
    }

    /// Share of the window the writer spent on a CPU, and waiting for one.
    pub fn writer_cpu_shares(&self) -> Option<(f64, f64)> {
        let w = self.writer?;
        let window = self.elapsed.as_nanos() as f64;
        Some((w.cpu_ns as f64 / window, w.runqueue_ns as f64 / window))
    }

    /// CPUs the process kept busy on average.
    pub fn cores_busy(&self) -> f64 {
        self.process_cpu_ns as f64 / self.elapsed.as_nanos() as f64
    }

    pub fn batches_per_sec(&self) -> Option<f64> {
        Some(rate_per_sec(self.batches()?, self.elapsed))
    }
}

pub fn validate(config: &StoreRunConfig) -> Result<()> {
    if !(1..=APPENDERS_MAX).contains(&config.appenders) {
        bail!(
            "--appenders must be between 1 and {APPENDERS_MAX} (got {})",
            config.appenders
        );
    }
    if !(1..=EVENTS_PER_TX_MAX).contains(&config.events_per_tx) {
        bail!(
            "--events-per-tx must be between 1 and {EVENTS_PER_TX_MAX} (got {})",
            config.events_per_tx
        );
    }
    if config.payload_bytes > 1024 * 1024 {
        bail!("--payload-bytes must be at most 1048576 (got {})", config.payload_bytes);
    }
    Ok(())
}

/// Opens a fresh store under `dir`, runs the appenders, shuts the store down and removes it.
pub fn run(config: &StoreRunConfig) -> Result<StoreRunResult> {
    validate(config)?;
    let dir = config
        .dir
        .join(format!("store-a{}-e{}", config.appenders, config.events_per_tx));
    if dir.exists() {
        std::fs::remove_dir_all(&dir).with_context(|| format!("removing the old {}", dir.display()))?;
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    crate::procfs::warn_if_memory_backed(&dir);
    let result = run_in(&dir, config);
    let cleanup = std::fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()));
    let result = result?;
    cleanup?;
    Ok(result)
}

fn run_in(dir: &std::path::Path, config: &StoreRunConfig) -> Result<StoreRunResult> {
    let store = ContextStore::open(
        "default",
        dir.to_path_buf(),
        dir.to_path_buf(),
        StoreConfig::default(),
        StoreConfig::default(),
    )
    .context("opening the store")?;
    let event_bytes = EventFactory::new(config.payload_bytes)
        .encode(&aggregate_name(0), 0, 0, now_ms())
        .len();
    // Spawning takes far less than any sensible warm-up, so one clock serves every appender.
    let from = Instant::now() + config.warmup;
    let window = Window {
        from,
        until: from + config.duration,
    };
    let driven = match config.waiter {
        Waiter::Threads => drive_threads(&store, config, window),
        Waiter::Tokio => drive_tokio(&store, config, window),
    };
    let shutdown = store.shutdown().context("shutting the store down");
    let (outcomes, counters) = driven?;
    shutdown?;

    let mut latencies = Samples::default();
    let mut transactions = 0;
    for outcome in outcomes {
        let (samples, count) = outcome?;
        latencies.merge(samples);
        transactions += count;
    }
    Ok(StoreRunResult {
        appenders: config.appenders,
        events_per_tx: config.events_per_tx,
        event_bytes,
        transactions,
        elapsed: config.duration,
        latency: latencies.summary(),
        writer: counters.writer,
        process_cpu_ns: counters.process_cpu_ns,
    })
}

/// The measured part of a run: appends started in `[from, until)` count.
#[derive(Debug, Clone, Copy)]
struct Window {
    from: Instant,
    until: Instant,
}

/// What one appender measured: latencies and transactions inside the window.
type Outcome = Result<(Samples, u64)>;

struct WindowCounters {
    writer: Option<ThreadCounters>,
    process_cpu_ns: u64,
}

/// Sleeps through the window, reading the writer's and the process's counters at its ends.
fn sample_window(window: Window) -> WindowCounters {
    std::thread::sleep(window.from.saturating_duration_since(Instant::now()));
    let (writer_before, cpu_before) = (thread_counters("writer-"), process_cpu_ns());
    std::thread::sleep(window.until.saturating_duration_since(Instant::now()));
    let (writer_after, cpu_after) = (thread_counters("writer-"), process_cpu_ns());
    let writer = match (writer_before, writer_after) {
        (Some(before), Some(after)) => Some(after.since(before)),
        _ => None,
    };
    WindowCounters {
        writer,
        process_cpu_ns: cpu_after.saturating_sub(cpu_before),
    }
}

/// One OS thread per appender, blocking on each acknowledgement.
fn drive_threads(
    store: &Arc<ContextStore>,
    config: &StoreRunConfig,
    window: Window,
) -> Result<(Vec<Outcome>, WindowCounters)> {
    let mut handles = Vec::with_capacity(config.appenders);
    for number in 0..config.appenders {
        let store = store.clone();
        let mut appender = Appender::new(number, config);
        let handle = std::thread::Builder::new()
            .name(format!("appender-{number}"))
            .spawn(move || -> Outcome {
                let mut samples = Samples::with_capacity(1 << 14);
                while Instant::now() < window.until {
                    let started = Instant::now();
                    store
                        .append(appender.next_transaction())
                        .and_then(|ticket| ticket.wait())
                        .with_context(|| appender.describe())?;
                    appender.committed(started, window, &mut samples);
                }
                Ok((samples, appender.measured))
            })
            .context("spawning an appender thread")?;
        handles.push(handle);
    }
    let counters = sample_window(window);
    let outcomes = handles
        .into_iter()
        .map(|h| h.join().unwrap_or_else(|_| Err(anyhow!("an appender thread panicked"))))
        .collect();
    Ok((outcomes, counters))
}

/// One tokio task per appender on a multi-threaded runtime with a worker per CPU, awaiting
/// each acknowledgement — how the gRPC server will call the store.
fn drive_tokio(
    store: &Arc<ContextStore>,
    config: &StoreRunConfig,
    window: Window,
) -> Result<(Vec<Outcome>, WindowCounters)> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .thread_name("appender-tokio")
        .build()
        .context("starting the tokio runtime")?;
    let mut handles = Vec::with_capacity(config.appenders);
    for number in 0..config.appenders {
        let store = store.clone();
        let mut appender = Appender::new(number, config);
        handles.push(runtime.spawn(async move {
            let mut samples = Samples::with_capacity(1 << 14);
            while Instant::now() < window.until {
                let started = Instant::now();
                let ticket = store
                    .append(appender.next_transaction())
                    .with_context(|| appender.describe())?;
                ticket.await.with_context(|| appender.describe())?;
                appender.committed(started, window, &mut samples);
            }
            Ok((samples, appender.measured))
        }));
    }
    let counters = sample_window(window);
    let outcomes = runtime.block_on(async {
        let mut outcomes = Vec::with_capacity(handles.len());
        for handle in handles {
            outcomes.push(
                handle
                    .await
                    .unwrap_or_else(|e| Err(anyhow!("an appender task failed: {e}"))),
            );
        }
        outcomes
    });
    Ok((outcomes, counters))
}

fn aggregate_name(appender: usize) -> String {
    format!("bench-{appender:04}")
}

/// One closed-loop appender's state: its own aggregate, so its transactions never conflict.
struct Appender {
    factory: EventFactory,
    aggregate: String,
    events_per_tx: usize,
    sequence: i64,
    message: u64,
    measured: u64,
}

impl Appender {
    fn new(number: usize, config: &StoreRunConfig) -> Self {
        Appender {
            factory: EventFactory::new(config.payload_bytes),
            aggregate: aggregate_name(number),
            events_per_tx: config.events_per_tx,
            sequence: 0,
            message: (number as u64) << 40,
            measured: 0,
        }
    }

    fn next_transaction(&mut self) -> Vec<Bytes> {
        let timestamp = now_ms();
        (0..self.events_per_tx)
            .map(|i| {
                let (sequence, message) = (self.sequence + i as i64, self.message + i as u64);
                self.factory.encode(&self.aggregate, sequence, message, timestamp)
            })
            .collect()
    }

    /// The transaction started at `started` is durable.
    fn committed(&mut self, started: Instant, window: Window, samples: &mut Samples) {
        if started >= window.from {
            samples.record(started.elapsed());
            self.measured += 1;
        }
        self.sequence += self.events_per_tx as i64;
        self.message += self.events_per_tx as u64;
    }

    fn describe(&self) -> String {
        format!("append of {} at sequence {}", self.aggregate, self.sequence)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn appenders_commit_and_the_store_is_removed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = StoreRunConfig {
            dir: dir.path().to_path_buf(),
            appenders: 4,
            events_per_tx: 3,
            payload_bytes: 50,
            duration: Duration::from_millis(200),
            warmup: Duration::from_millis(20),
            waiter: Waiter::Threads,
        };
        let result = run(&config).expect("run");
        assert!(result.transactions > 0);
        let config = StoreRunConfig {
            waiter: Waiter::Tokio,
            ..config
        };
        let result = run(&config).expect("run");
        assert!(result.transactions > 0);
        assert_eq!(result.latency.count, result.transactions);
        assert_eq!(result.events(), result.transactions * 3);
        assert!(std::fs::read_dir(dir.path()).expect("read_dir").next().is_none());
    }

    #[test]
    fn rejects_out_of_range_settings() {
        let config = StoreRunConfig {
            dir: PathBuf::from("unused"),
            appenders: 0,
            events_per_tx: 1,
            payload_bytes: 200,
            duration: Duration::from_secs(1),
            warmup: Duration::ZERO,
            waiter: Waiter::Threads,
        };
        let error = validate(&config).expect_err("0 appenders").to_string();
        assert!(error.contains("--appenders"), "{error}");
    }
}
