//! Write load for the cluster tests: writers that append through chosen nodes, each to its own
//! aggregate, and record for the [history checker](crate::history) what became of every
//! message id they sent.
//!
//! A writer sends one transaction of 1–3 events at a time to its aggregate `<prefix>-w<writer>`,
//! with ids `<aggregate>-t<attempt>-<k>`, continuing the aggregate's sequence. Its outcome is
//! one of:
//!
//! - **acknowledged** (the call succeeded): every id must be stored exactly once;
//! - **refused** by the sequence check (OUT_OF_RANGE, INVALID_SEQUENCE), which runs before
//!   anything is proposed: nothing was stored, so the ids are recorded as rejected (the checker
//!   fails should they appear); the writer re-reads its aggregate's highest sequence and goes
//!   on (after three refusals in a row, with a new aggregate: the leader holds a proposal it
//!   cannot commit, and the read does not see it);
//! - **unknown**: any other error, or no answer within [`CALL_TIMEOUT`] (the node was killed, cut
//!   off, or leadership moved): the ids may be stored, at most once; the writer re-reads its
//!   highest sequence (a later refusal corrects a stale read: the read is the node's own) and
//!   goes on. When that read gets no answer either, the writer goes on with a new aggregate,
//!   `<prefix>-w<writer>-g<n>`.
//!
//! The nodes' addresses live in [`Targets`], which the test updates as it kills and restarts
//! nodes (a restarted node listens on new ports). [`Load::pause`] lets the cluster settle so
//! that every node's history can be read and checked, [`Load::resume`] goes on, and
//! [`Load::stop`] answers the outcomes. For failover figures, [`Load::first_ack_after`] gives
//! the first acknowledgement of a transaction sent after a given instant.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use myelin_proto::grpc::event::event_store_client::EventStoreClient;
use myelin_proto::grpc::event::{Event, ReadHighestSequenceNrRequest};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tonic::transport::{Channel, Endpoint};

use crate::events::aggregate_event;
use crate::history::Outcomes;

/// How long a writer waits for an answer before it counts the outcome as unknown, unless the
/// load says otherwise ([`Load::start_with_timeout`]).
pub const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// A writer's pause after a failure, so that a dead node is not hammered.
const RETRY_PAUSE: Duration = Duration::from_millis(20);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Refusals in a row after which a writer moves to a new aggregate.
const MAX_REFUSALS: usize = 3;
/// Events per transaction: 1 to this many.
const MAX_TRANSACTION_EVENTS: u64 = 3;

/// The gRPC URLs of the nodes, by position; `None` while a node is down.
#[derive(Debug, Clone, Default)]
pub struct Targets(Arc<RwLock<Vec<Option<String>>>>);

impl Targets {
    pub fn new(urls: impl IntoIterator<Item = String>) -> Targets {
        Targets(Arc::new(RwLock::new(urls.into_iter().map(Some).collect())))
    }

    /// Node `position` now listens at `url` (`None`: it is down).
    pub fn set(&self, position: usize, url: Option<String>) {
        let mut urls = self.0.write().expect("targets");
        if urls.len() <= position {
            urls.resize(position + 1, None);
        }
        urls[position] = url;
    }

    fn get(&self, position: usize) -> Option<String> {
        self.0.read().expect("targets").get(position).cloned().flatten()
    }

    fn len(&self) -> usize {
        self.0.read().expect("targets").len()
    }
}

/// Counts shared by the writers.
#[derive(Debug, Default)]
struct Shared {
    acknowledged_transactions: AtomicUsize,
    unknown_transactions: AtomicUsize,
    refused_transactions: AtomicUsize,
    /// Calls in progress: [`Load::pause`] waits for none.
    in_flight: AtomicUsize,
    /// The instant [`Load::first_ack_after`] watches, and the first ack of a call started after it.
    watch: Mutex<Option<(Instant, Option<Instant>)>>,
    /// Every writer's outcomes, recorded before the call stops counting as in flight.
    outcomes: Mutex<Outcomes>,
}

/// What the writers did, for the checker and the report.
#[derive(Debug, Default)]
pub struct LoadReport {
    pub outcomes: Outcomes,
    pub acknowledged_transactions: usize,
    pub unknown_transactions: usize,
    pub refused_transactions: usize,
}

/// Writers running in the background until [`Load::stop`].
#[derive(Debug)]
pub struct Load {
    running: watch::Sender<bool>,
    stopping: watch::Sender<bool>,
    shared: Arc<Shared>,
    tasks: Vec<JoinHandle<()>>,
}

impl Load {
    /// Starts `writers` writers, writer `w` appending through node `w % targets`, to aggregate
    /// `<prefix>-w<w>`; `prefix` keeps the ids of separate loads on one cluster apart.
    pub fn start(targets: &Targets, writers: usize, prefix: &str) -> Load {
        Load::start_with_timeout(targets, writers, prefix, CALL_TIMEOUT)
    }

    /// [`Load::start`], each call given up (outcome unknown) after `call_timeout`.
    pub fn start_with_timeout(targets: &Targets, writers: usize, prefix: &str, call_timeout: Duration) -> Load {
        let (running, _) = watch::channel(true);
        let (stopping, _) = watch::channel(false);
        let shared = Arc::new(Shared::default());
        let nodes = targets.len().max(1);
        let tasks = (0..writers)
            .map(|w| {
                let writer = Writer {
                    base: format!("{prefix}-w{w}"),
                    aggregate: format!("{prefix}-w{w}"),
                    generation: 0,
                    target: w % nodes,
                    targets: targets.clone(),
                    shared: shared.clone(),
                    running: running.subscribe(),
                    stopping: stopping.subscribe(),
                    random: 0x9E37_79B9_7F4A_7C15 ^ (w as u64 + 1),
                    call_timeout,
                };
                tokio::spawn(writer.run())
            })
            .collect();
        Load {
            running,
            stopping,
            shared,
            tasks,
        }
    }

    /// Stops sending new transactions and waits until none is in flight.
    pub async fn pause(&self) {
        self.running.send_replace(false);
        while self.shared.in_flight.load(Ordering::SeqCst) > 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    pub fn resume(&self) {
        self.running.send_replace(true);
    }

    /// Transactions acknowledged so far.
    pub fn acknowledged_transactions(&self) -> usize {
        self.shared.acknowledged_transactions.load(Ordering::Relaxed)
    }

    /// Transactions whose outcome the writers never learnt, so far.
    pub fn unknown_transactions(&self) -> usize {
        self.shared.unknown_transactions.load(Ordering::Relaxed)
    }

    /// Transactions refused by the sequence check, so far.
    pub fn refused_transactions(&self) -> usize {
        self.shared.refused_transactions.load(Ordering::Relaxed)
    }

    /// The outcomes so far; complete while the load is paused ([`Load::pause`]).
    pub fn outcomes(&self) -> Outcomes {
        self.shared.outcomes.lock().expect("outcomes").clone()
    }

    /// Watch for the first acknowledgement of a transaction sent at or after `since`.
    pub fn watch_from(&self, since: Instant) {
        *self.shared.watch.lock().expect("watch") = Some((since, None));
    }

    /// After [`Load::watch_from`]: waits up to `timeout` for that acknowledgement and answers
    /// how long after `since` it came.
    pub async fn first_ack_after(&self, timeout: Duration) -> Option<Duration> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some((since, Some(first))) = *self.shared.watch.lock().expect("watch") {
                return Some(first.duration_since(since));
            }
            if Instant::now() > deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Stops the writers (a call in flight gets its answer or times out) and answers what
    /// they did.
    pub async fn stop(self) -> LoadReport {
        self.stopping.send_replace(true);
        self.running.send_replace(true);
        for task in self.tasks {
            task.await.expect("a writer task");
        }
        LoadReport {
            outcomes: std::mem::take(&mut *self.shared.outcomes.lock().expect("outcomes")),
            acknowledged_transactions: self.shared.acknowledged_transactions.load(Ordering::Relaxed),
            unknown_transactions: self.shared.unknown_transactions.load(Ordering::Relaxed),
            refused_transactions: self.shared.refused_transactions.load(Ordering::Relaxed),
        }
    }
}

struct Writer {
    /// `<prefix>-w<writer>`: the first aggregate, and the stem of later ones.
    base: String,
    aggregate: String,
    /// How many times the writer moved to a new aggregate (`<base>-g<generation>`).
    generation: u64,
    target: usize,
    targets: Targets,
    shared: Arc<Shared>,
    running: watch::Receiver<bool>,
    stopping: watch::Receiver<bool>,
    /// xorshift state for transaction sizes.
    random: u64,
    call_timeout: Duration,
}

/// One call's result.
enum Outcome {
    Acknowledged,
    Refused,
    Unknown,
}

impl Writer {
    async fn run(mut self) {
        let mut client: Option<(String, EventStoreClient<Channel>)> = None;
        let mut next_sequence: Option<i64> = Some(0);
        let mut refusals = 0;
        for attempt in 0u64.. {
            if *self.stopping.borrow() {
                break;
            }
            if !*self.running.borrow() {
                // Paused: wait for resume (or stop).
                let _ = self.running.wait_for(|running| *running).await;
                continue;
            }
            let Some(url) = self.targets.get(self.target) else {
                tokio::time::sleep(RETRY_PAUSE).await;
                continue;
            };
            self.shared.in_flight.fetch_add(1, Ordering::SeqCst);
            // Re-checked now that the call counts as in flight, so a pause never misses it.
            if !*self.running.borrow() {
                self.shared.in_flight.fetch_sub(1, Ordering::SeqCst);
                continue;
            }
            let connected = match client.take() {
                Some((known, c)) if known == url => Some(c),
                _ => connect(&url).await,
            };
            let Some(mut c) = connected else {
                self.shared.in_flight.fetch_sub(1, Ordering::SeqCst);
                tokio::time::sleep(RETRY_PAUSE).await;
                continue;
            };
            let sequence = match next_sequence {
                Some(sequence) => sequence,
                None => match highest_sequence(&mut c, &self.aggregate, self.call_timeout).await {
                    Some(highest) => highest + 1,
                    None => {
                        // No answer (the node went down or cannot be reached): go on with a
                        // new aggregate rather than wait for it.
                        self.new_aggregate();
                        0
                    }
                },
            };
            let size = 1 + self.next_random() % MAX_TRANSACTION_EVENTS;
            let events: Vec<Event> = (0..size)
                .map(|k| {
                    aggregate_event(&self.aggregate, sequence + k as i64)
                        .message_id(format!("{}-t{attempt}-{k}", self.aggregate))
                        .build()
                })
                .collect();
            let ids: Vec<String> = events.iter().map(|e| e.message_identifier.clone()).collect();
            let started = Instant::now();
            let outcome =
                match tokio::time::timeout(self.call_timeout, c.append_event(tokio_stream::iter(events))).await {
                    Ok(Ok(_)) => Outcome::Acknowledged,
                    // Axon's INVALID_SEQUENCE: refused before it was proposed.
                    Ok(Err(status)) if status.code() == tonic::Code::OutOfRange => Outcome::Refused,
                    Ok(Err(_)) | Err(_) => Outcome::Unknown,
                };
            match outcome {
                Outcome::Acknowledged => {
                    refusals = 0;
                    let now = Instant::now();
                    self.shared.outcomes.lock().expect("outcomes").acknowledge(ids);
                    next_sequence = Some(sequence + size as i64);
                    self.shared.acknowledged_transactions.fetch_add(1, Ordering::Relaxed);
                    if let Some((since, first @ None)) = &mut *self.shared.watch.lock().expect("watch")
                        && started >= *since
                    {
                        *first = Some(now);
                    }
                    client = Some((url, c));
                }
                Outcome::Refused => {
                    self.shared.outcomes.lock().expect("outcomes").reject(ids);
                    next_sequence = None;
                    refusals += 1;
                    if refusals >= MAX_REFUSALS {
                        // The leader holds a proposal of this aggregate that is not applied
                        // yet (and may never be: it cannot reach a majority).
                        self.new_aggregate();
                        next_sequence = Some(0);
                        refusals = 0;
                    }
                    self.shared.refused_transactions.fetch_add(1, Ordering::Relaxed);
                    client = Some((url, c));
                }
                Outcome::Unknown => {
                    self.shared.outcomes.lock().expect("outcomes").unknown(ids);
                    next_sequence = None;
                    self.shared.unknown_transactions.fetch_add(1, Ordering::Relaxed);
                    // A fresh connection next time: the node may have restarted elsewhere.
                }
            }
            self.shared.in_flight.fetch_sub(1, Ordering::SeqCst);
            if next_sequence.is_none() {
                tokio::time::sleep(RETRY_PAUSE).await;
            }
        }
    }

    fn new_aggregate(&mut self) {
        self.generation += 1;
        self.aggregate = format!("{}-g{}", self.base, self.generation);
    }

    fn next_random(&mut self) -> u64 {
        self.random ^= self.random << 13;
        self.random ^= self.random >> 7;
        self.random ^= self.random << 17;
        self.random
    }
}

async fn connect(url: &str) -> Option<EventStoreClient<Channel>> {
    let endpoint = Endpoint::from_shared(url.to_string())
        .ok()?
        .connect_timeout(CONNECT_TIMEOUT)
        .tcp_nodelay(true);
    let channel = tokio::time::timeout(CONNECT_TIMEOUT, endpoint.connect())
        .await
        .ok()?
        .ok()?;
    Some(EventStoreClient::new(channel))
}

/// The aggregate's highest sequence as the node knows it (-1: none), or `None` when it does
/// not answer.
async fn highest_sequence(client: &mut EventStoreClient<Channel>, aggregate: &str, timeout: Duration) -> Option<i64> {
    let request = ReadHighestSequenceNrRequest {
        aggregate_id: aggregate.to_string(),
        from_sequence_nr: 0,
    };
    let reply = tokio::time::timeout(timeout, client.read_highest_sequence_nr(request))
        .await
        .ok()?
        .ok()?;
    Some(reply.into_inner().to_sequence_nr)
}
