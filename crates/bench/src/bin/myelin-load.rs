//! `myelin-load`: the load generator. Runs one workload against an event store in another
//! process — Myelin over the Axon gRPC API, UmaDB over its own gRPC API, PostgreSQL with Axon's
//! JDBC event table — or the disk probe, and prints one JSON result line (also appended to
//! `--results`); `report` turns many such lines into markdown tables and a plot.
//! `scripts/bench-compare` drives it; docs/BENCHMARKS.md explains the figures.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use clap::{Args, Parser, Subcommand};

use myelin_bench::load::disk::{self, DiskConfig};
use myelin_bench::load::myelin::{Myelin, PERMITS_DEFAULT};
use myelin_bench::load::postgres::Postgres;
use myelin_bench::load::record::{self, Record};
use myelin_bench::load::report;
use myelin_bench::load::system::{System, SystemKind};
use myelin_bench::load::umadb::Umadb;
use myelin_bench::load::workload::{self, AggregatesConfig, AppendConfig, LoadConfig, MixedConfig, ServerPid, Timing};

/// The longest measured window accepted.
const SECONDS_MAX: f64 = 3600.0;

#[derive(Parser)]
#[command(
    name = "myelin-load",
    about = "Load generator: the same workloads against Myelin, UmaDB and PostgreSQL running in other processes",
    version
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Args, Clone)]
struct Target {
    /// The store to drive.
    #[arg(long, value_enum)]
    system: SystemKind,
    /// Its address: `host:port` (Myelin: the gRPC port); PostgreSQL also takes a connection
    /// string (`host=… port=… user=… dbname=…`).
    #[arg(long)]
    target: String,
    /// The server's process id, for its CPU time and peak memory (with its child processes).
    #[arg(long)]
    server_pid: Option<u32>,
    /// Append the JSON result line to this file too.
    #[arg(long)]
    results: Option<PathBuf>,
    /// Free text stored in the result.
    #[arg(long)]
    label: Option<String>,
    /// Myelin: ListEvents permits granted at the start (topped up by 4/5 of this once a
    /// fifth is left).
    #[arg(long, default_value_t = PERMITS_DEFAULT)]
    permits: i64,
}

#[derive(Args, Clone, Copy)]
struct Window {
    /// Length of the measured window.
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    /// Run this long before measuring.
    #[arg(long, default_value_t = 2.0)]
    warmup_seconds: f64,
}

#[derive(Args, Clone)]
struct AggregateSet {
    /// Aggregates in the loaded store (named `<prefix>-0000000` …).
    #[arg(long, default_value_t = 100_000)]
    aggregates: u64,
    #[arg(long, default_value = "agg")]
    prefix: String,
}

#[derive(Subcommand)]
enum Command {
    /// Durable appends from closed-loop clients, each to its own aggregate.
    Append {
        #[command(flatten)]
        target: Target,
        #[arg(long, default_value_t = 1)]
        clients: usize,
        #[arg(long, default_value_t = 1)]
        events_per_tx: usize,
        #[arg(long, default_value_t = 200)]
        payload_bytes: usize,
        #[command(flatten)]
        window: Window,
    },
    /// Fills the store for the read workloads: `--aggregates` aggregates of
    /// `--events / --aggregates` events each, appended round by round.
    Load {
        #[command(flatten)]
        target: Target,
        #[arg(long, default_value_t = 1_000_000)]
        events: u64,
        #[command(flatten)]
        aggregates: AggregateSet,
        #[arg(long, default_value_t = 100)]
        events_per_tx: usize,
        #[arg(long, default_value_t = 16)]
        clients: usize,
        #[arg(long, default_value_t = 200)]
        payload_bytes: usize,
    },
    /// The tracking read: one client reads the first `--events` events in order. Loads the
    /// difference first if the store holds fewer.
    Track {
        #[command(flatten)]
        target: Target,
        #[arg(long, default_value_t = 1_000_000)]
        events: u64,
        /// For a load that tops the store up.
        #[arg(long, default_value_t = 200)]
        payload_bytes: usize,
        #[arg(long, default_value_t = 16)]
        load_clients: usize,
        #[arg(long, default_value_t = 100)]
        load_events_per_tx: usize,
    },
    /// Random aggregate reads from closed-loop clients, against a store filled by `load`.
    Aggregates {
        #[command(flatten)]
        target: Target,
        #[arg(long, default_value_t = 16)]
        clients: usize,
        #[command(flatten)]
        aggregates: AggregateSet,
        /// Check that every read returns exactly this many events.
        #[arg(long)]
        events_per_aggregate: Option<u64>,
        #[command(flatten)]
        window: Window,
    },
    /// Writers appending, readers reading random loaded aggregates, and one client following
    /// the end of the store, at once.
    Mixed {
        #[command(flatten)]
        target: Target,
        #[arg(long, default_value_t = 8)]
        writers: usize,
        #[arg(long, default_value_t = 8)]
        readers: usize,
        /// Leave out the client that follows the end of the store.
        #[arg(long)]
        no_tail: bool,
        #[arg(long, default_value_t = 1)]
        events_per_tx: usize,
        #[arg(long, default_value_t = 200)]
        payload_bytes: usize,
        #[command(flatten)]
        aggregates: AggregateSet,
        #[command(flatten)]
        window: Window,
    },
    /// The disk's limit: pwrite + fdatasync of clients × events × payload bytes at a time,
    /// one after the other, into pre-allocated files under `--dir`.
    Disk {
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
        #[arg(long)]
        results: Option<PathBuf>,
        #[arg(long)]
        label: Option<String>,
    },
    /// Prints the last token of Myelin's `default` context at `--target` (-1 when empty).
    /// With `--until`, polls (every 100 ms, also while the server is not listening yet) until
    /// the token reaches that value, then prints it: how scripts/bench-cluster times a node's
    /// catch-up.
    LastToken {
        #[arg(long)]
        target: String,
        #[arg(long)]
        until: Option<i64>,
        /// Give up (exit status 1) after this long.
        #[arg(long, default_value_t = 600.0)]
        timeout_seconds: f64,
    },
    /// Markdown tables and the plot from a results file.
    Report {
        #[arg(long)]
        results: PathBuf,
        /// Markdown put under the section's heading (machine, commands, settings).
        #[arg(long)]
        preamble: Option<PathBuf>,
        /// Write the section between the `<!-- bench-compare:start/end -->` markers of this
        /// markdown file (appending the markers if absent) instead of to standard output.
        #[arg(long)]
        into: Option<PathBuf>,
        /// Draw the append plot into this PNG file (needs Python with matplotlib).
        #[arg(long)]
        png: Option<PathBuf>,
        /// How the section links the PNG (relative to the markdown file).
        #[arg(long)]
        image_link: Option<String>,
        #[arg(long, default_value = "python3")]
        python: String,
    },
}

fn seconds(name: &str, value: f64) -> Result<Duration> {
    ensure!(
        value.is_finite() && (0.0..=SECONDS_MAX).contains(&value),
        "--{name} must be between 0 and {SECONDS_MAX} (got {value})"
    );
    Ok(Duration::from_secs_f64(value))
}

impl Window {
    fn timing(self) -> Result<Timing> {
        let duration = seconds("seconds", self.seconds)?;
        ensure!(!duration.is_zero(), "--seconds must be above 0");
        Ok(Timing {
            warmup: seconds("warmup-seconds", self.warmup_seconds)?,
            duration,
        })
    }
}

/// A workload, ready to run against any system.
enum Job {
    Append(AppendConfig),
    Load(LoadConfig),
    Track(u64, LoadConfig),
    Aggregates(AggregatesConfig),
    Mixed(MixedConfig),
}

async fn run_job<S: System>(system: S, pid: ServerPid, job: &Job) -> Result<Vec<Record>> {
    let system = Arc::new(system);
    Ok(match job {
        Job::Append(config) => vec![workload::append(system, pid, config).await?],
        Job::Load(config) => vec![workload::load(system, pid, config).await?],
        Job::Track(events, fill) => {
            let (loaded, tracked) = workload::track(system, pid, *events, fill).await?;
            loaded.into_iter().chain([tracked]).collect()
        }
        Job::Aggregates(config) => vec![workload::aggregates(system, pid, config).await?],
        Job::Mixed(config) => vec![workload::mixed(system, pid, config).await?],
    })
}

async fn run(target: &Target, job: Job) -> Result<()> {
    let pid = ServerPid(target.server_pid);
    let records = match target.system {
        SystemKind::Myelin => run_job(Myelin::new(&target.target, target.permits), pid, &job).await?,
        SystemKind::Umadb => run_job(Umadb::new(&target.target), pid, &job).await?,
        SystemKind::Postgres => run_job(Postgres::open(&target.target).await?, pid, &job).await?,
    };
    for mut record in records {
        record.label.clone_from(&target.label);
        emit(&record, target.results.as_deref())?;
    }
    Ok(())
}

/// The JSON line on standard output (and in the results file), a readable line on stderr.
fn emit(record: &Record, results: Option<&std::path::Path>) -> Result<()> {
    eprintln!("{}", record.describe());
    println!("{}", serde_json::to_string(record).context("encoding the result")?);
    if let Some(path) = results {
        record.append_to(path)?;
    }
    Ok(())
}

/// How often `last-token --until` asks.
const POLL_INTERVAL: Duration = Duration::from_millis(100);

async fn last_token(target: &str, until: Option<i64>, timeout: Duration) -> Result<i64> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let answer = myelin_bench::load::myelin::last_token(target).await;
        match (answer, until) {
            (Ok(token), None) => return Ok(token),
            (Ok(token), Some(until)) if token >= until => return Ok(token),
            (Err(e), None) => return Err(e),
            (answer, Some(until)) => ensure!(
                tokio::time::Instant::now() < deadline,
                "{target} did not reach token {until} in {timeout:?} (last answer: {answer:?})"
            ),
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Command::Append {
            target,
            clients,
            events_per_tx,
            payload_bytes,
            window,
        } => {
            let job = Job::Append(AppendConfig {
                clients,
                events_per_tx,
                payload_bytes,
                timing: window.timing()?,
            });
            runtime()?.block_on(run(&target, job))
        }
        Command::Load {
            target,
            events,
            aggregates,
            events_per_tx,
            clients,
            payload_bytes,
        } => {
            let job = Job::Load(LoadConfig {
                events,
                aggregates: aggregates.aggregates,
                events_per_tx,
                clients,
                payload_bytes,
                prefix: aggregates.prefix,
            });
            runtime()?.block_on(run(&target, job))
        }
        Command::Track {
            target,
            events,
            payload_bytes,
            load_clients,
            load_events_per_tx,
        } => {
            let fill = LoadConfig {
                events: 0,
                aggregates: 1,
                events_per_tx: load_events_per_tx,
                clients: load_clients,
                payload_bytes,
                prefix: String::new(),
            };
            runtime()?.block_on(run(&target, Job::Track(events, fill)))
        }
        Command::Aggregates {
            target,
            clients,
            aggregates,
            events_per_aggregate,
            window,
        } => {
            let job = Job::Aggregates(AggregatesConfig {
                clients,
                aggregates: aggregates.aggregates,
                prefix: aggregates.prefix,
                events_per_aggregate,
                timing: window.timing()?,
            });
            runtime()?.block_on(run(&target, job))
        }
        Command::Mixed {
            target,
            writers,
            readers,
            no_tail,
            events_per_tx,
            payload_bytes,
            aggregates,
            window,
        } => {
            let job = Job::Mixed(MixedConfig {
                writers,
                readers,
                tail: !no_tail,
                events_per_tx,
                payload_bytes,
                aggregates: aggregates.aggregates,
                prefix: aggregates.prefix,
                timing: window.timing()?,
            });
            runtime()?.block_on(run(&target, job))
        }
        Command::Disk {
            dir,
            clients,
            events_per_tx,
            payload_bytes,
            seconds: s,
            results,
            label,
        } => {
            let mut record = disk::run(&DiskConfig {
                dir,
                clients,
                events_per_tx,
                payload_bytes,
                duration: seconds("seconds", s)?,
            })?;
            record.label = label;
            emit(&record, results.as_deref())
        }
        Command::LastToken {
            target,
            until,
            timeout_seconds,
        } => {
            let timeout = seconds("timeout-seconds", timeout_seconds)?;
            let token = runtime()?.block_on(last_token(&target, until, timeout))?;
            println!("{token}");
            Ok(())
        }
        Command::Report {
            results,
            preamble,
            into,
            png,
            image_link,
            python,
        } => {
            let records = record::read_all(&results)?;
            ensure!(!records.is_empty(), "{} holds no results", results.display());
            let preamble = match preamble {
                Some(path) => std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?,
                None => String::new(),
            };
            if let Some(png) = &png {
                report::plot(&records, png, &python)?;
            }
            let section = report::render(&records, &preamble, image_link.as_deref());
            match into {
                Some(path) => report::write_into(&path, &section),
                None => {
                    print!("{section}");
                    Ok(())
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn windows_are_checked() {
        let window = Window {
            seconds: 0.0,
            warmup_seconds: 1.0,
        };
        assert!(window.timing().is_err());
        let window = Window {
            seconds: 1.0,
            warmup_seconds: -1.0,
        };
        assert!(window.timing().is_err());
    }
}
