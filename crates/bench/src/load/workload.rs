//! The workloads, the same for every system: closed-loop clients (each sends one request,
//! waits for the answer, sends the next), a warm-up that is not measured, then a measured
//! window. An operation counts when it completes inside the window; its latency is from
//! sending the request to the answer (for an append: to the durable acknowledgement).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, anyhow, ensure};
use tokio::task::JoinHandle;

use super::record::{Latency, Record, now_unix};
use super::rng::{SplitMix64, seed};
use super::server::{self, ServerFigures};
use super::system::{Client, ClientSpec, NewEvent, System, process_nonce};
use crate::stats::{Samples, rate_per_sec};

/// Events per transaction at most (UmaDB commits at most 2048 events per batch; PostgreSQL's
/// statement stays small).
pub const EVENTS_PER_TX_MAX: usize = 2000;
/// Concurrent clients at most.
pub const CLIENTS_MAX: usize = 4096;
/// A tracking read's latency is sampled per this many events (the stores send different
/// numbers of events per message: per event, per 1024, per page).
pub const TRACK_CHUNK_EVENTS: u64 = 1000;
/// How often a long load reports progress on stderr.
const PROGRESS_INTERVAL: Duration = Duration::from_secs(10);

/// The measured part of a run: from the end of the warm-up for `duration`.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    pub warmup: Duration,
    pub duration: Duration,
}

/// Where the server runs, for its CPU and memory figures (none: not measured).
#[derive(Debug, Clone, Copy)]
pub struct ServerPid(pub Option<u32>);

#[derive(Debug, Clone, Copy)]
pub struct AppendConfig {
    pub clients: usize,
    pub events_per_tx: usize,
    pub payload_bytes: usize,
    pub timing: Timing,
}

#[derive(Debug, Clone)]
pub struct LoadConfig {
    pub events: u64,
    pub aggregates: u64,
    pub events_per_tx: usize,
    pub clients: usize,
    pub payload_bytes: usize,
    /// Aggregates are `<prefix>-0000000` … (fixed width, so every event has the same size).
    pub prefix: String,
}

#[derive(Debug, Clone)]
pub struct AggregatesConfig {
    pub clients: usize,
    pub aggregates: u64,
    pub prefix: String,
    /// When known, every read must return exactly this many events.
    pub events_per_aggregate: Option<u64>,
    pub timing: Timing,
}

#[derive(Debug, Clone)]
pub struct MixedConfig {
    pub writers: usize,
    pub readers: usize,
    pub tail: bool,
    pub events_per_tx: usize,
    pub payload_bytes: usize,
    /// The loaded aggregates the readers pick from.
    pub aggregates: u64,
    pub prefix: String,
    pub timing: Timing,
}

/// The aggregate a loader or reader uses: `<prefix>-<n>`, seven digits wide.
pub fn aggregate_name(prefix: &str, n: u64) -> String {
    format!("{prefix}-{n:07}")
}

fn check_common(clients: usize, events_per_tx: usize, payload_bytes: usize) -> Result<()> {
    ensure!(
        (1..=CLIENTS_MAX).contains(&clients),
        "--clients must be between 1 and {CLIENTS_MAX} (got {clients})"
    );
    ensure!(
        (1..=EVENTS_PER_TX_MAX).contains(&events_per_tx),
        "--events-per-tx must be between 1 and {EVENTS_PER_TX_MAX} (got {events_per_tx})"
    );
    ensure!(
        payload_bytes <= super::system::PAYLOAD_BYTES_MAX,
        "--payload-bytes must be at most {} (got {payload_bytes})",
        super::system::PAYLOAD_BYTES_MAX
    );
    Ok(())
}

async fn connect_all<S: System>(system: &S, clients: usize, payload_bytes: usize) -> Result<Vec<S::Client>> {
    let mut connected = Vec::with_capacity(clients);
    for index in 0..clients {
        let spec = ClientSpec {
            index: u32::try_from(index).context("client number")?,
            payload_bytes,
        };
        connected.push(
            system
                .connect(spec)
                .await
                .with_context(|| format!("client {index} of {clients}"))?,
        );
    }
    Ok(connected)
}

/// Server and client figures over a window; the task waits for the window to open.
struct Meter {
    task: JoinHandle<Result<Figures>>,
}

struct Figures {
    server: Option<ServerFigures>,
    client_cpu_percent: f64,
    client_peak_rss_bytes: u64,
}

impl Meter {
    fn start(pid: ServerPid, from: Instant, until: Instant) -> Meter {
        let task = tokio::spawn(async move {
            tokio::time::sleep_until(from.into()).await;
            let own = server::start_own();
            let window = match pid.0 {
                Some(pid) => Some(
                    tokio::task::spawn_blocking(move || server::start(pid))
                        .await
                        .map_err(|e| anyhow!("server meter: {e}"))??,
                ),
                None => None,
            };
            tokio::time::sleep_until(until.into()).await;
            let server = match window {
                Some(window) => Some(
                    tokio::task::spawn_blocking(move || window.finish())
                        .await
                        .map_err(|e| anyhow!("server meter: {e}"))??,
                ),
                None => None,
            };
            let (client_cpu_percent, client_peak_rss_bytes) = own.finish();
            Ok(Figures {
                server,
                client_cpu_percent,
                client_peak_rss_bytes,
            })
        });
        Meter { task }
    }

    async fn finish(self) -> Result<Figures> {
        self.task.await.map_err(|e| anyhow!("meter task: {e}"))?
    }
}

/// The parts of a record every workload fills the same way.
struct Draft {
    workload: &'static str,
    system: &'static str,
    clients: usize,
    events_per_tx: usize,
    payload_bytes: usize,
    store_events_before: Option<u64>,
}

impl Draft {
    #[allow(clippy::too_many_arguments)]
    fn finish(
        self,
        figures: Figures,
        measured: Duration,
        events: u64,
        operations: u64,
        latency: BTreeMap<String, Latency>,
        extra: BTreeMap<String, f64>,
    ) -> Record {
        let as_u32 = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
        Record {
            workload: self.workload.to_string(),
            system: self.system.to_string(),
            clients: as_u32(self.clients),
            events_per_tx: as_u32(self.events_per_tx),
            payload_bytes: as_u32(self.payload_bytes),
            seconds: measured.as_secs_f64(),
            events,
            operations,
            events_per_sec: rate_per_sec(events, measured),
            operations_per_sec: rate_per_sec(operations, measured),
            latency,
            extra,
            server_cpu_percent: figures.server.map(|s| s.cpu_percent),
            server_peak_memory_bytes: figures.server.map(|s| s.peak_memory_bytes),
            server_processes: figures.server.map(|s| u32::try_from(s.processes).unwrap_or(u32::MAX)),
            client_cpu_percent: figures.client_cpu_percent,
            client_peak_rss_bytes: figures.client_peak_rss_bytes,
            store_events_before: self.store_events_before,
            label: None,
            written_at: now_unix(),
        }
    }
}

/// Counts of one client over the window.
#[derive(Default)]
struct Tally {
    events: u64,
    operations: u64,
    samples: Samples,
}

impl Tally {
    fn add(&mut self, other: Tally) {
        self.events += other.events;
        self.operations += other.operations;
        self.samples.merge(other.samples);
    }
}

/// Waits for the clients' tasks and sums their tallies. The clients come back too: they must
/// stay connected until the server's figures are taken (a PostgreSQL backend that exits takes
/// its CPU time out of the tree being measured).
async fn join_all<C>(tasks: Vec<JoinHandle<Result<(Tally, C)>>>) -> Result<(Tally, Vec<C>)> {
    let mut total = Tally::default();
    let mut clients = Vec::with_capacity(tasks.len());
    let mut first_error = None;
    for task in tasks {
        match task.await {
            Ok(Ok((tally, client))) => {
                total.add(tally);
                clients.push(client);
            }
            Ok(Err(e)) => {
                first_error.get_or_insert(e);
            }
            Err(e) => {
                first_error.get_or_insert(anyhow!("client task failed: {e}"));
            }
        }
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok((total, clients)),
    }
}

/// Closed-loop appends from clients that append to their own aggregate each (`w<nonce>-<n>`),
/// so nothing is rejected and runs against one store never collide.
async fn append_loop<C: Client>(
    mut client: C,
    aggregate: String,
    events_per_tx: usize,
    from: Instant,
    until: Instant,
) -> Result<(Tally, C)> {
    let mut tally = Tally {
        samples: Samples::with_capacity(1 << 12),
        ..Tally::default()
    };
    let mut sequence = 0i64;
    let mut events = Vec::with_capacity(events_per_tx);
    while Instant::now() < until {
        events.clear();
        events.extend((0..events_per_tx as i64).map(|i| NewEvent {
            aggregate: &aggregate,
            sequence: sequence + i,
        }));
        let started = Instant::now();
        client
            .append(&events)
            .await
            .with_context(|| format!("appending {aggregate} at sequence {sequence}"))?;
        let done = Instant::now();
        sequence += events_per_tx as i64;
        if done >= from && done <= until {
            tally.events += events_per_tx as u64;
            tally.operations += 1;
            tally.samples.record(done - started);
        }
    }
    Ok((tally, client))
}

/// Random aggregate reads until `until`.
async fn read_loop<C: Client>(
    mut client: C,
    config: (u64, String, Option<u64>),
    rng_seed: u64,
    from: Instant,
    until: Instant,
) -> Result<(Tally, C)> {
    let (aggregates, prefix, expected) = config;
    let mut rng = SplitMix64::new(rng_seed);
    let mut tally = Tally {
        samples: Samples::with_capacity(1 << 12),
        ..Tally::default()
    };
    while Instant::now() < until {
        let aggregate = aggregate_name(&prefix, rng.below(aggregates));
        let started = Instant::now();
        let events = client.read_aggregate(&aggregate).await?;
        let done = Instant::now();
        match expected {
            Some(expected) => ensure!(
                events == expected,
                "aggregate {aggregate} has {events} events where {expected} were loaded"
            ),
            None => ensure!(
                events > 0,
                "aggregate {aggregate} has no events: load the store first (`myelin-load load --aggregates {aggregates} --prefix {prefix}`)"
            ),
        }
        if done >= from && done <= until {
            tally.events += events;
            tally.operations += 1;
            tally.samples.record(done - started);
        }
    }
    Ok((tally, client))
}

fn latency_map(entries: Vec<(&str, Samples)>) -> BTreeMap<String, Latency> {
    entries
        .into_iter()
        .map(|(op, samples)| (op.to_string(), Latency::from(samples.summary())))
        .collect()
}

/// One closed-loop [`append_loop`] task per client, each on its own aggregate (`prefix`, this
/// process's nonce and the client's number, so runs never collide on sequence numbers).
fn spawn_appenders<C: Client + 'static>(
    clients: Vec<C>,
    prefix: char,
    events_per_tx: usize,
    from: Instant,
    until: Instant,
) -> Vec<tokio::task::JoinHandle<Result<(Tally, C)>>> {
    let nonce = process_nonce();
    clients
        .into_iter()
        .enumerate()
        .map(|(n, client)| {
            let aggregate = format!("{prefix}{nonce:08x}-{n:05}");
            tokio::spawn(append_loop(client, aggregate, events_per_tx, from, until))
        })
        .collect()
}

/// Durable appends: `clients` closed-loop clients, `events_per_tx` events per transaction.
pub async fn append<S: System>(system: Arc<S>, pid: ServerPid, config: &AppendConfig) -> Result<Record> {
    check_common(config.clients, config.events_per_tx, config.payload_bytes)?;
    let clients = connect_all(&*system, config.clients, config.payload_bytes).await?;
    let before = count_events(&*system).await?;
    let from = Instant::now() + config.timing.warmup;
    let until = from + config.timing.duration;
    let meter = Meter::start(pid, from, until);
    let tasks = spawn_appenders(clients, 'w', config.events_per_tx, from, until);
    let (tally, clients) = join_all(tasks).await?;
    let figures = meter.finish().await?;
    drop(clients);
    let draft = Draft {
        workload: "append",
        system: system.kind().name(),
        clients: config.clients,
        events_per_tx: config.events_per_tx,
        payload_bytes: config.payload_bytes,
        store_events_before: Some(before),
    };
    Ok(draft.finish(
        figures,
        config.timing.duration,
        tally.events,
        tally.operations,
        latency_map(vec![("append", tally.samples)]),
        BTreeMap::new(),
    ))
}

async fn count_events<S: System>(system: &S) -> Result<u64> {
    let mut client = system
        .connect(ClientSpec {
            index: u32::MAX,
            payload_bytes: 0,
        })
        .await?;
    client.event_count().await
}

/// Fills the store: `aggregates` aggregates of `events / aggregates` events each, appended in
/// rounds (round `s` appends sequence `s` of every aggregate), so every transaction holds
/// events of many aggregates and every aggregate's events are spread over the whole store,
/// as in a long-lived production store. Loaders own disjoint ranges of aggregates.
pub async fn load<S: System>(system: Arc<S>, pid: ServerPid, config: &LoadConfig) -> Result<Record> {
    check_common(config.clients, config.events_per_tx, config.payload_bytes)?;
    ensure!(
        config.aggregates > 0 && config.events >= config.aggregates,
        "--events ({}) must be at least --aggregates ({}), which must be at least 1",
        config.events,
        config.aggregates
    );
    ensure!(
        config.aggregates < 10_000_000,
        "--aggregates must be below 10,000,000 (names are seven digits)"
    );
    let rounds = config.events.div_ceil(config.aggregates);
    let loaders = config
        .clients
        .min(usize::try_from(config.aggregates).unwrap_or(usize::MAX));
    let clients = connect_all(&*system, loaders, config.payload_bytes).await?;
    let before = count_events(&*system).await?;
    let from = Instant::now();
    // The whole load is the window; its end is only known afterwards, so the meter is given
    // a far deadline and the figures are taken when the loaders are done.
    let own = server::start_own();
    let window = match pid.0 {
        Some(pid) => Some(tokio::task::spawn_blocking(move || server::start(pid)).await??),
        None => None,
    };
    let total_events = rounds * config.aggregates;
    let progress = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let tasks: Vec<_> = clients
        .into_iter()
        .enumerate()
        .map(|(n, client)| {
            let first = config.aggregates * n as u64 / loaders as u64;
            let end = config.aggregates * (n as u64 + 1) / loaders as u64;
            let (prefix, per_tx, progress) = (config.prefix.clone(), config.events_per_tx, progress.clone());
            tokio::spawn(load_range(client, prefix, first..end, rounds, per_tx, progress))
        })
        .collect();
    let reporter = tokio::spawn({
        let progress = progress.clone();
        async move {
            loop {
                tokio::time::sleep(PROGRESS_INTERVAL).await;
                let done = progress.load(std::sync::atomic::Ordering::Relaxed);
                eprintln!(
                    "  loaded {done} of {total_events} events ({:.0} events/s)",
                    rate_per_sec(done, from.elapsed())
                );
            }
        }
    });
    let joined = join_all(tasks).await;
    reporter.abort();
    let (tally, clients) = joined?;
    let elapsed = from.elapsed();
    let server = match window {
        Some(window) => Some(tokio::task::spawn_blocking(move || window.finish()).await??),
        None => None,
    };
    drop(clients);
    let (client_cpu_percent, client_peak_rss_bytes) = own.finish();
    let figures = Figures {
        server,
        client_cpu_percent,
        client_peak_rss_bytes,
    };
    let draft = Draft {
        workload: "load",
        system: system.kind().name(),
        clients: loaders,
        events_per_tx: config.events_per_tx,
        payload_bytes: config.payload_bytes,
        store_events_before: Some(before),
    };
    let extra = BTreeMap::from([
        ("aggregates".to_string(), config.aggregates as f64),
        ("events_per_aggregate".to_string(), rounds as f64),
    ]);
    Ok(draft.finish(
        figures,
        elapsed,
        tally.events,
        tally.operations,
        latency_map(vec![("append", tally.samples)]),
        extra,
    ))
}

async fn load_range<C: Client>(
    mut client: C,
    prefix: String,
    aggregates: std::ops::Range<u64>,
    rounds: u64,
    events_per_tx: usize,
    progress: Arc<std::sync::atomic::AtomicU64>,
) -> Result<(Tally, C)> {
    let names: Vec<String> = aggregates.clone().map(|n| aggregate_name(&prefix, n)).collect();
    let mut tally = Tally {
        samples: Samples::with_capacity(1 << 12),
        ..Tally::default()
    };
    for round in 0..rounds {
        let sequence = i64::try_from(round).context("sequence number")?;
        for chunk in names.chunks(events_per_tx) {
            let events: Vec<NewEvent<'_>> = chunk.iter().map(|aggregate| NewEvent { aggregate, sequence }).collect();
            let started = Instant::now();
            client
                .append(&events)
                .await
                .with_context(|| format!("loading round {round} from {}", chunk[0]))?;
            tally.samples.record(started.elapsed());
            tally.events += events.len() as u64;
            tally.operations += 1;
            progress.fetch_add(events.len() as u64, std::sync::atomic::Ordering::Relaxed);
        }
    }
    Ok((tally, client))
}

/// The tracking read: one client reads the first `events` events of the store, in order,
/// as fast as the store sends them. When the store holds fewer, the difference is loaded
/// first (aggregates `t<nonce>-…`, 10 events each, `load` describes how), and its record is
/// returned too.
pub async fn track<S: System>(
    system: Arc<S>,
    pid: ServerPid,
    events: u64,
    fill: &LoadConfig,
) -> Result<(Option<Record>, Record)> {
    ensure!(events > 0, "--events must be at least 1");
    let before = count_events(&*system).await?;
    let loaded = if before < events {
        let missing = events - before;
        let config = LoadConfig {
            events: missing,
            aggregates: missing.div_ceil(10).max(1),
            prefix: format!("t{:08x}", process_nonce()),
            ..fill.clone()
        };
        eprintln!(
            "  the store holds {before} events; loading {missing} more ({} aggregates)",
            config.aggregates
        );
        Some(load(system.clone(), pid, &config).await?)
    } else {
        None
    };
    let mut client = system
        .connect(ClientSpec {
            index: 0,
            payload_bytes: 0,
        })
        .await?;
    let stored = client.event_count().await?;
    let own = server::start_own();
    let window = match pid.0 {
        Some(pid) => Some(tokio::task::spawn_blocking(move || server::start(pid)).await??),
        None => None,
    };
    let started = Instant::now();
    let mut chunks = Samples::with_capacity(1 << 12);
    let mut pending = 0u64;
    let mut last = started;
    let mut seen = |n: u64| {
        pending += n;
        if pending >= TRACK_CHUNK_EVENTS {
            let now = Instant::now();
            chunks.record((now - last).mul_f64(TRACK_CHUNK_EVENTS as f64 / pending as f64));
            last = now;
            pending = 0;
        }
    };
    let read = client.read_all(events, &mut seen).await?;
    let elapsed = started.elapsed();
    ensure!(
        read == events,
        "the tracking read ended after {read} of {events} events (the store holds {stored})"
    );
    let server = match window {
        Some(window) => Some(tokio::task::spawn_blocking(move || window.finish()).await??),
        None => None,
    };
    let (client_cpu_percent, client_peak_rss_bytes) = own.finish();
    let figures = Figures {
        server,
        client_cpu_percent,
        client_peak_rss_bytes,
    };
    let draft = Draft {
        workload: "track",
        system: system.kind().name(),
        clients: 1,
        events_per_tx: 0,
        payload_bytes: fill.payload_bytes,
        store_events_before: Some(stored),
    };
    let record = draft.finish(
        figures,
        elapsed,
        read,
        1,
        latency_map(vec![("per_1000_events", chunks)]),
        BTreeMap::new(),
    );
    Ok((loaded, record))
}

/// Random aggregate reads from `clients` closed-loop clients.
pub async fn aggregates<S: System>(system: Arc<S>, pid: ServerPid, config: &AggregatesConfig) -> Result<Record> {
    check_common(config.clients, 1, 0)?;
    ensure!(config.aggregates > 0, "--aggregates must be at least 1");
    let clients = connect_all(&*system, config.clients, 0).await?;
    let before = count_events(&*system).await?;
    let from = Instant::now() + config.timing.warmup;
    let until = from + config.timing.duration;
    let meter = Meter::start(pid, from, until);
    let base_seed = seed();
    let tasks: Vec<_> = clients
        .into_iter()
        .enumerate()
        .map(|(n, client)| {
            let setup = (config.aggregates, config.prefix.clone(), config.events_per_aggregate);
            tokio::spawn(read_loop(client, setup, base_seed ^ n as u64, from, until))
        })
        .collect();
    let (tally, clients) = join_all(tasks).await?;
    let figures = meter.finish().await?;
    drop(clients);
    let draft = Draft {
        workload: "aggregates",
        system: system.kind().name(),
        clients: config.clients,
        events_per_tx: 0,
        payload_bytes: 0,
        store_events_before: Some(before),
    };
    let extra = BTreeMap::from([("aggregates".to_string(), config.aggregates as f64)]);
    Ok(draft.finish(
        figures,
        config.timing.duration,
        tally.events,
        tally.operations,
        latency_map(vec![("read_aggregate", tally.samples)]),
        extra,
    ))
}

/// Writers appending to their own aggregates, readers reading random loaded aggregates, and
/// optionally one client following the end of the store, all at once.
pub async fn mixed<S: System>(system: Arc<S>, pid: ServerPid, config: &MixedConfig) -> Result<Record> {
    check_common(config.writers.max(1), config.events_per_tx, config.payload_bytes)?;
    ensure!(
        config.writers + config.readers > 0,
        "--writers and --readers cannot both be 0"
    );
    ensure!(config.aggregates > 0, "--aggregates must be at least 1");
    let writers = connect_all(&*system, config.writers, config.payload_bytes).await?;
    let readers = connect_all(&*system, config.readers, 0).await?;
    let tailer = if config.tail {
        Some(
            connect_all(&*system, 1, 0)
                .await?
                .into_iter()
                .next()
                .context("tail client")?,
        )
    } else {
        None
    };
    let before = count_events(&*system).await?;
    let from = Instant::now() + config.timing.warmup;
    let until = from + config.timing.duration;
    let meter = Meter::start(pid, from, until);
    let write_tasks = spawn_appenders(writers, 'm', config.events_per_tx, from, until);
    let base_seed = seed();
    let read_tasks: Vec<_> = readers
        .into_iter()
        .enumerate()
        .map(|(n, client)| {
            let setup = (config.aggregates, config.prefix.clone(), None);
            tokio::spawn(read_loop(client, setup, base_seed ^ n as u64, from, until))
        })
        .collect();
    let tail_task = tailer.map(|mut client| {
        tokio::spawn(async move {
            // Follows from the start of the warm-up; counts what arrives inside the window.
            let mut in_window = 0u64;
            let mut seen = |n: u64| {
                let now = Instant::now();
                if now >= from && now <= until {
                    in_window += n;
                }
            };
            client.tail(until, &mut seen).await?;
            anyhow::Ok((in_window, client))
        })
    });
    let (written, writers) = join_all(write_tasks).await?;
    let (read, readers) = join_all(read_tasks).await?;
    let (tailed, tailer) = match tail_task {
        Some(task) => {
            let (tailed, client) = task.await.map_err(|e| anyhow!("tail task: {e}"))??;
            (tailed, Some(client))
        }
        None => (0, None),
    };
    let figures = meter.finish().await?;
    drop((writers, readers, tailer));
    let window = config.timing.duration;
    let draft = Draft {
        workload: "mixed",
        system: system.kind().name(),
        clients: config.writers + config.readers + usize::from(config.tail),
        events_per_tx: config.events_per_tx,
        payload_bytes: config.payload_bytes,
        store_events_before: Some(before),
    };
    let extra = BTreeMap::from([
        ("writers".to_string(), config.writers as f64),
        ("readers".to_string(), config.readers as f64),
        ("tailers".to_string(), f64::from(u8::from(config.tail))),
        (
            "append_events_per_sec".to_string(),
            rate_per_sec(written.events, window),
        ),
        ("read_events_per_sec".to_string(), rate_per_sec(read.events, window)),
        ("reads_per_sec".to_string(), rate_per_sec(read.operations, window)),
        ("tail_events_per_sec".to_string(), rate_per_sec(tailed, window)),
    ]);
    Ok(draft.finish(
        figures,
        window,
        written.events,
        written.operations,
        latency_map(vec![("append", written.samples), ("read_aggregate", read.samples)]),
        extra,
    ))
}
