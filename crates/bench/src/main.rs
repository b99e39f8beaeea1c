//! `myelin-bench`: in-process benchmarks of Myelin's storage engine.
//!
//! * `probe` — the disk's own limit: sequential `pwrite` + `fdatasync` of one batch size into
//!   a pre-allocated file, as the store writes segments.
//! * `store` — durable appends from closed-loop appender threads into a real `ContextStore`.
//! * `matrix` — both, for every cell of the table in `docs/BENCHMARKS.md`.
//! * `memory` — peak resident memory while loading millions of events, and across a restart
//!   with aggregate and tracking reads.
//!
//! Benchmarks report figures; they assert nothing about speed. Every run works in a directory
//! of its own under `--dir` and removes it afterwards. This crate must never be a dependency
//! of the server: it measures the store from the outside, through its public API only.

#![deny(unsafe_code)]
#![cfg_attr(not(test), deny(clippy::expect_used, clippy::panic))]

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Result, ensure};
use clap::{Parser, Subcommand};

use myelin_bench::stats::{self, Millis};
use myelin_bench::{describe_probe, describe_store, grpc_run, matrix, memory, probe, store_run};

/// The longest run accepted for one measurement.
const SECONDS_MAX: f64 = 3600.0;
/// The most runs of one matrix cell.
const REPEAT_MAX: usize = 20;

#[derive(Parser)]
#[command(
    name = "myelin-bench",
    about = "In-process benchmarks of Myelin's storage engine",
    version
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// The disk's limit: pwrite of N bytes + fdatasync, sequentially, into a pre-allocated file.
    Probe {
        /// Directory on the disk to measure (a subdirectory is created and removed).
        #[arg(long)]
        dir: PathBuf,
        #[arg(long, default_value_t = 4096)]
        batch_bytes: usize,
        #[arg(long, default_value_t = 10.0)]
        seconds: f64,
    },
    /// Durable appends into an in-process store from closed-loop appender threads.
    Store {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long, default_value_t = 1)]
        appenders: usize,
        #[arg(long, default_value_t = 1)]
        events_per_tx: usize,
        #[arg(long, default_value_t = 200)]
        payload_bytes: usize,
        #[arg(long, default_value_t = 10.0)]
        seconds: f64,
        /// Run this long before measuring.
        #[arg(long, default_value_t = 1.0)]
        warmup_seconds: f64,
        /// How appenders wait for acknowledgements.
        #[arg(long, value_enum, default_value_t = store_run::Waiter::Threads)]
        waiter: store_run::Waiter,
    },
    /// Every cell (appenders 1, 16, 64 × events/tx 1, 100): the store and the probe at the
    /// same batch size; prints a markdown table.
    Matrix {
        #[arg(long)]
        dir: PathBuf,
        /// Seconds per store run and per probe.
        #[arg(long, default_value_t = 10.0)]
        seconds: f64,
        #[arg(long, default_value_t = 1.0)]
        warmup_seconds: f64,
        #[arg(long, default_value_t = 200)]
        payload_bytes: usize,
        /// How appenders wait for acknowledgements.
        #[arg(long, value_enum, default_value_t = store_run::Waiter::Threads)]
        waiter: store_run::Waiter,
        /// Runs of every cell; the table shows medians and the spread of the ratio.
        #[arg(long, default_value_t = 1)]
        repeat: usize,
    },
    /// Appends over gRPC on loopback: an in-process server over a real store, closed-loop
    /// clients with a connection each, one AppendEvent stream per transaction.
    GrpcAppend {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long, default_value_t = 1)]
        clients: usize,
        #[arg(long, default_value_t = 1)]
        events_per_tx: usize,
        #[arg(long, default_value_t = 200)]
        payload_bytes: usize,
        #[arg(long, default_value_t = 10.0)]
        seconds: f64,
        #[arg(long, default_value_t = 1.0)]
        warmup_seconds: f64,
    },
    /// The check every appended event passes (`myelin_format::validate::validate_event`), on
    /// the benchmark's events, in a loop: best of 9 rounds, in ns per event.
    Validate {
        #[arg(long, default_value_t = 200)]
        payload_bytes: usize,
        /// Events checked per round.
        #[arg(long, default_value_t = 500_000)]
        events: u64,
    },
    /// Loads events, restarts the store, reads them back; reports peak RSS and restart time.
    Memory {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long, default_value_t = 10_000_000)]
        events: u64,
        #[arg(long, default_value_t = 1000)]
        events_per_tx: usize,
        #[arg(long, default_value_t = 100_000)]
        aggregates: u64,
        #[arg(long, default_value_t = 200)]
        payload_bytes: usize,
        /// Aggregates read back (and checked) after the restart.
        #[arg(long, default_value_t = 1000)]
        aggregate_reads: u64,
        /// Overrides the store's index cache size (default: the store's default, 64 MiB).
        #[arg(long)]
        index_cache_mib: Option<usize>,
        /// Leave the store on disk afterwards.
        #[arg(long)]
        keep: bool,
    },
}

fn seconds(name: &str, value: f64) -> Result<Duration> {
    ensure!(
        value.is_finite() && (0.0..=SECONDS_MAX).contains(&value),
        "--{name} must be between 0 and {SECONDS_MAX} (got {value})"
    );
    Ok(Duration::from_secs_f64(value))
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Command::Validate { payload_bytes, events } => {
            ensure!(events > 0, "--events must be at least 1");
            let mut factory = myelin_bench::event::EventFactory::new(payload_bytes);
            // A thousand distinct events, checked over and over: they stay in the CPU's cache,
            // so this measures the walk itself.
            let sample: Vec<_> = (0..1000)
                .map(|n| factory.encode(&format!("bench-{n:07}"), n as i64, n, 1_796_418_383_000))
                .collect();
            let mut best = f64::MAX;
            for _ in 0..9 {
                let started = std::time::Instant::now();
                for event in sample.iter().cycle().take(events as usize) {
                    myelin_format::validate::validate_event(std::hint::black_box(event))
                        .map_err(|e| anyhow::anyhow!("the benchmark's own event is invalid: {e}"))?;
                }
                best = best.min(started.elapsed().as_nanos() as f64 / events as f64);
            }
            println!(
                "validate_event: {best:.1} ns per event of {} bytes (best of 9 rounds of {events})",
                sample[0].len()
            );
        }
        Command::Probe {
            dir,
            batch_bytes,
            seconds: s,
        } => {
            let result = probe::run(&probe::ProbeConfig {
                dir,
                batch_bytes,
                duration: seconds("seconds", s)?,
            })?;
            println!("{}", describe_probe(&result));
        }
        Command::Store {
            dir,
            appenders,
            events_per_tx,
            payload_bytes,
            seconds: s,
            warmup_seconds,
            waiter,
        } => {
            let config = store_run::StoreRunConfig {
                dir,
                appenders,
                events_per_tx,
                payload_bytes,
                waiter,
                duration: seconds("seconds", s)?,
                warmup: seconds("warmup-seconds", warmup_seconds)?,
            };
            let result = store_run::run(&config)?;
            println!("{}", describe_store(&result));
        }
        Command::Matrix {
            dir,
            seconds: s,
            warmup_seconds,
            payload_bytes,
            waiter,
            repeat,
        } => {
            ensure!(
                (1..=REPEAT_MAX).contains(&repeat),
                "--repeat must be between 1 and {REPEAT_MAX} (got {repeat})"
            );
            let config = matrix::MatrixConfig {
                dir,
                waiter,
                repeat,
                duration: seconds("seconds", s)?,
                warmup: seconds("warmup-seconds", warmup_seconds)?,
                payload_bytes,
            };
            let result = matrix::run(&config)?;
            println!("{}", result.markdown());
        }
        Command::GrpcAppend {
            dir,
            clients,
            events_per_tx,
            payload_bytes,
            seconds: s,
            warmup_seconds,
        } => {
            ensure!(
                clients > 0 && events_per_tx > 0,
                "--clients and --events-per-tx must be at least 1"
            );
            let config = grpc_run::GrpcRunConfig {
                dir,
                clients,
                events_per_tx,
                payload_bytes,
                seconds: seconds("seconds", s)?,
                warmup: seconds("warmup-seconds", warmup_seconds)?,
            };
            let r = grpc_run::run(&config)?;
            println!(
                "grpc append {clients} clients x {events_per_tx} events/tx: {:.0} events/s, {:.0} tx/s, latency p50 {} p99 {} p99.9 {}",
                r.events_per_sec,
                r.transactions_per_sec,
                Millis(r.latency.p50),
                Millis(r.latency.p99),
                Millis(r.latency.p999)
            );
        }
        Command::Memory {
            dir,
            events,
            events_per_tx,
            aggregates,
            payload_bytes,
            aggregate_reads,
            index_cache_mib,
            keep,
        } => {
            let config = memory::MemoryConfig {
                index_cache_bytes: index_cache_mib.map(|mib| mib.saturating_mul(1024 * 1024)),
                dir,
                events,
                events_per_tx,
                aggregates,
                payload_bytes,
                aggregate_reads,
                keep,
            };
            let result = memory::run(&config)?;
            print_memory(&config, &result);
        }
    }
    Ok(())
}

fn print_memory(config: &memory::MemoryConfig, r: &memory::MemoryResult) {
    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
    println!(
        "memory: {} events ({} events/tx, {} aggregates, {} payload bytes, index cache {}), store on disk {:.0} MiB",
        r.events,
        config.events_per_tx,
        config.aggregates,
        config.payload_bytes,
        config
            .index_cache_bytes
            .map_or("default".to_string(), |b| format!("{:.0} MiB", mib(b as u64))),
        mib(r.store_bytes)
    );
    println!(
        "  load: {:.1} s ({:.0} events/s); peak RSS {:.0} MiB, RSS at end of load {:.0} MiB, after shutdown {:.0} MiB",
        r.load_time.as_secs_f64(),
        stats::rate_per_sec(r.events, r.load_time),
        mib(r.peak_rss_load_bytes),
        mib(r.rss_after_load_bytes),
        mib(r.rss_after_shutdown_bytes)
    );
    println!(
        "  restart (open): {:.3} s; RSS after open {:.0} MiB",
        r.open_time.as_secs_f64(),
        mib(r.rss_after_open_bytes)
    );
    println!(
        "  aggregate reads: {} in {:.1} s, {}",
        r.aggregate_reads.count,
        r.aggregate_reads_time.as_secs_f64(),
        r.aggregate_reads
    );
    println!(
        "  tracking read: {} events in {:.1} s ({:.0} events/s)",
        r.events,
        r.tracking_read_time.as_secs_f64(),
        stats::rate_per_sec(r.events, r.tracking_read_time)
    );
    println!(
        "  peak RSS from restart to end of reads: {:.0} MiB; RSS at end {:.0} MiB",
        mib(r.peak_rss_restart_bytes),
        mib(r.rss_end_bytes)
    );
}
