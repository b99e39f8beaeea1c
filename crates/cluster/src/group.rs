//! One replication group on this node: its Raft instance and, while this node leads it, the
//! sequencer that gives each proposed transaction its tokens.
//!
//! Tokens are assigned by the leader when it proposes, as in Axon Server EE: the entry carries
//! the token of its first event, and every member stores it at exactly that token (see
//! `machine`). So the leader must only propose what will be stored: it checks aggregate
//! sequence numbers here, against the store and against what it has proposed but not yet
//! applied, with the store's own rules. A new leader starts proposing only once everything
//! before its term is applied, so its stores' heads are the truth to count from.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use myelin_node::{Context, NodeError};
use myelin_store::{ContextStore, PreparedEvent, StoreError};
use openraft::error::{ClientWriteError, RaftError};
use openraft::raft::responder::{OneshotResponder, Responder};
use tokio::sync::{Mutex, OwnedSemaphorePermit, Semaphore, mpsc, oneshot};
use tracing::info;

use crate::gate::{active_backups, may_acknowledge};
use crate::machine::AppliedPosition;
use crate::types::{Applied, Command, NodeId, NodeName, Raft, Transaction, TypeConfig, VoteRequest, VoteResponse};

/// Aggregates remembered per context beyond which those already applied are forgotten.
const REMEMBERED_AGGREGATES: usize = 100_000;

/// What `client_write_ff` hands back: the entry's answer, once applied.
type Receipt = <OneshotResponder<TypeConfig> as Responder<TypeConfig>>::Receiver;

/// Transactions waiting for the proposer, beyond which clients wait to queue.
const QUEUED_TRANSACTIONS: usize = 4096;
/// Entries of batched transactions proposed and not yet applied. Two: while one is being
/// replicated, the next fills.
const BATCHES_IN_FLIGHT: usize = 2;
/// A batch closes at this many transactions or this many event bytes (a larger transaction
/// goes alone).
const MAX_BATCH_TRANSACTIONS: usize = 1024;
const MAX_BATCH_BYTES: usize = 2 * 1024 * 1024;

/// How many terms [`Group::after_vote`] climbs at most to stand above a candidate.
const MAX_TERMS_STOOD: usize = 8;

/// Why a proposal was not accepted.
#[derive(Debug)]
pub enum ProposeError {
    /// Another node leads the group (its name, if known).
    NotLeader(Option<NodeName>),
    /// Refused before it was proposed; nothing was stored.
    Refused(NodeError),
    /// Proposed, but the outcome is unknown (leadership was lost before it committed).
    Unknown(String),
}

impl ProposeError {
    /// The same outcome for another transaction of a batch.
    fn echo(&self) -> ProposeError {
        match self {
            ProposeError::NotLeader(leader) => ProposeError::NotLeader(leader.clone()),
            ProposeError::Refused(e) => ProposeError::Unknown(e.to_string()),
            ProposeError::Unknown(message) => ProposeError::Unknown(message.clone()),
        }
    }
}

impl From<ProposeError> for NodeError {
    fn from(e: ProposeError) -> NodeError {
        match e {
            ProposeError::NotLeader(Some(leader)) => {
                NodeError::Replication(format!("this node does not lead the group; {leader} does"))
            }
            ProposeError::NotLeader(None) => NodeError::NoLeader("the replication group has no leader".into()),
            ProposeError::Refused(e) => e,
            ProposeError::Unknown(message) => NodeError::Replication(message),
        }
    }
}

/// The highest sequence proposed for an aggregate, and where the proposal's events end.
#[derive(Clone, Copy)]
struct Reserved {
    sequence: i64,
    token_end: i64,
}

struct ContextSequence {
    next_event: i64,
    next_snapshot: i64,
    aggregates: HashMap<String, Reserved>,
}

#[derive(Default)]
struct Sequencer {
    /// The term the counters were taken in; `None` until the first write of a term.
    term: Option<u64>,
    contexts: HashMap<String, ContextSequence>,
}

impl Sequencer {
    fn context(&mut self, store: &ContextStore) -> &mut ContextSequence {
        self.contexts
            .entry(store.name().to_string())
            .or_insert_with(|| ContextSequence {
                next_event: store.head() as i64,
                next_snapshot: store.snapshot_head() as i64,
                aggregates: HashMap::new(),
            })
    }
}

impl ContextSequence {
    fn highest(&self, store: &ContextStore, aggregate: &str) -> Result<i64, NodeError> {
        match self.aggregates.get(aggregate) {
            Some(reserved) => Ok(reserved.sequence),
            None => store.highest_sequence(aggregate).map_err(NodeError::read),
        }
    }

    /// Checks `events` with the store's rule (each aggregate's next sequence, in order) and,
    /// if they pass, reserves their tokens and sequences.
    fn reserve_events(&mut self, store: &ContextStore, events: &[PreparedEvent]) -> Result<i64, NodeError> {
        let mut local: HashMap<&str, i64> = HashMap::new();
        for event in events.iter().filter(|e| e.is_indexed()) {
            let aggregate = event.aggregate();
            let expected = match local.get(aggregate) {
                Some(last) => last + 1,
                None => self.highest(store, aggregate)? + 1,
            };
            if event.sequence() != expected {
                return Err(NodeError::write(StoreError::InvalidSequence {
                    aggregate: aggregate.to_string(),
                    actual: event.sequence(),
                    expected,
                }));
            }
            local.insert(aggregate, event.sequence());
        }
        let token = self.next_event;
        self.next_event += events.len() as i64;
        for (aggregate, sequence) in local {
            self.aggregates.insert(
                aggregate.to_string(),
                Reserved {
                    sequence,
                    token_end: self.next_event,
                },
            );
        }
        if self.aggregates.len() > REMEMBERED_AGGREGATES {
            let applied = store.head() as i64;
            self.aggregates.retain(|_, reserved| reserved.token_end > applied);
        }
        Ok(token)
    }

    /// A snapshot may not be ahead of its aggregate's events (the store's rule).
    fn reserve_snapshot(&mut self, store: &ContextStore, snapshot: &PreparedEvent) -> Result<i64, NodeError> {
        let highest = self.highest(store, snapshot.aggregate())?;
        if snapshot.sequence() > highest {
            return Err(NodeError::write(StoreError::InvalidSnapshotSequence {
                aggregate: snapshot.aggregate().to_string(),
                highest,
                snapshot: snapshot.sequence(),
            }));
        }
        let token = self.next_snapshot;
        self.next_snapshot += 1;
        Ok(token)
    }
}

/// One group's Raft and what this node needs to lead it.
pub struct Group {
    pub name: String,
    pub raft: Raft,
    pub me: NodeId,
    pub position: Arc<AppliedPosition>,
    sequencer: Mutex<Sequencer>,
    /// How long a new leader may take to apply its predecessors' entries before writes fail.
    ready_timeout: Duration,
    /// `min-active-backups`, and how long a write waits for them (`max-election-timeout`).
    min_active_backups: usize,
    backup_timeout: Duration,
    /// Held while the group writes to its contexts' stores (shared with its state machine).
    pub writes: Arc<Mutex<()>>,
    /// Held by a membership change from start to end: openraft refuses a change while another
    /// is under way, so changes to one group (joins of several nodes at once) take turns.
    pub membership_changes: Mutex<()>,
    /// openraft's leader lease, and when a leader last sent this node entries or a heartbeat.
    leader_lease: Duration,
    heard_from_leader: parking_lot::Mutex<Option<Instant>>,
    /// Transactions waiting for the proposer ([`Group::start_proposer`]), and its end of the
    /// queue until it starts.
    queue: mpsc::Sender<Waiting>,
    waiting: parking_lot::Mutex<Option<mpsc::Receiver<Waiting>>>,
    /// Batches proposed and not yet answered: at most [`BATCHES_IN_FLIGHT`].
    in_flight: Arc<Semaphore>,
}

/// One client's transaction on its way to the proposer.
struct Waiting {
    context: Arc<Context>,
    proposal: Proposal,
    answer: oneshot::Sender<Result<Applied, ProposeError>>,
}

impl Waiting {
    fn bytes(&self) -> usize {
        match &self.proposal {
            Proposal::Events(events) => events.iter().map(|e| e.bytes().len()).sum(),
            Proposal::Snapshot(snapshot) => snapshot.bytes().len(),
        }
    }

    fn answer(self, outcome: Result<Applied, ProposeError>) {
        // A client that went away does not need its answer.
        let _ = self.answer.send(outcome);
    }
}

/// The timeouts and backup rule a group runs with.
#[derive(Debug, Clone, Copy)]
pub struct GroupTiming {
    /// How long a new leader may take to apply its predecessors' entries before writes fail.
    pub ready_timeout: Duration,
    /// `min-active-backups`.
    pub min_active_backups: usize,
    /// How long a write waits for the active backups (`max-election-timeout`).
    pub backup_timeout: Duration,
    /// openraft's leader lease ([`crate::config::ReplicationConfig::leader_lease`]).
    pub leader_lease: Duration,
}

/// What a transaction is, for [`Group::propose`].
pub enum Proposal {
    Events(Vec<PreparedEvent>),
    Snapshot(PreparedEvent),
}

impl Group {
    pub fn new(
        name: &str,
        raft: Raft,
        me: NodeId,
        position: Arc<AppliedPosition>,
        writes: Arc<Mutex<()>>,
        timing: GroupTiming,
    ) -> Group {
        let (queue, waiting) = mpsc::channel(QUEUED_TRANSACTIONS);
        Group {
            queue,
            waiting: parking_lot::Mutex::new(Some(waiting)),
            in_flight: Arc::new(Semaphore::new(BATCHES_IN_FLIGHT)),
            writes,
            name: name.to_string(),
            raft,
            me,
            position,
            sequencer: Mutex::new(Sequencer::default()),
            ready_timeout: timing.ready_timeout,
            min_active_backups: timing.min_active_backups,
            backup_timeout: timing.backup_timeout,
            membership_changes: Mutex::new(()),
            leader_lease: timing.leader_lease,
            heard_from_leader: parking_lot::Mutex::new(None),
        }
    }

    /// Notes that a leader sent this node entries or a heartbeat.
    pub fn heard_from_leader(&self) {
        *self.heard_from_leader.lock() = Some(Instant::now());
    }

    /// After this node refused its vote to `request` with `response`: when the candidate was
    /// refused only because its log is shorter than this node's, and this node has not heard
    /// from a leader for longer than the lease either, the leader is gone and this node is the
    /// better candidate, so it stands now. Otherwise openraft makes the refused candidate wait
    /// `smaller_log_timeout` (2 × the maximum election timeout) before it stands again, while
    /// this node waits out its own lease and timeout: the slowest failovers measured (10–16 s,
    /// docs/BENCHMARKS.md). A node that hears from a live leader never stands this way, so a
    /// lagging, partitioned follower cannot depose a healthy leader through it.
    pub fn after_vote(&self, request: &VoteRequest, response: &VoteResponse) {
        let shorter_log = response.last_log_id > request.last_log_id;
        let newer_term = request.vote.leader_id.term > response.vote.leader_id.term;
        let silent = self
            .heard_from_leader
            .lock()
            .is_none_or(|heard| heard.elapsed() > self.leader_lease);
        if response.vote_granted || !shorter_log || !newer_term || !silent {
            return;
        }
        let leads = self.raft.metrics().borrow().current_leader == Some(self.me);
        if leads {
            return;
        }
        info!(
            group = %self.name,
            candidate = request.vote.leader_id.voted_for.unwrap_or_default(),
            "a candidate with a shorter log stood and no leader has been heard from: standing now"
        );
        // It must stand in a term above the candidate's: one step from its own term may land
        // on the candidate's, where each refuses the other (tried: a livelock, since openraft's
        // stale `seen_greater_log` kept this node's own timer slower than the candidate's).
        let target = request.vote.leader_id.term + 1;
        let raft = self.raft.clone();
        tokio::spawn(async move {
            for _ in 0..MAX_TERMS_STOOD {
                let term = raft.metrics().borrow().current_term;
                if term >= target || raft.trigger().elect().await.is_err() {
                    return;
                }
                let moved = raft
                    .wait(Some(Duration::from_millis(200)))
                    .metrics(|m| m.current_term > term, "the election began")
                    .await;
                if moved.is_err() {
                    return;
                }
            }
        });
    }

    /// Waits until the group's active backups hold entry `index` ([`crate::gate`]).
    async fn backups_hold(&self, index: u64) -> Result<(), ProposeError> {
        let backups = active_backups(self.raft.metrics().borrow().membership_config.membership());
        if backups.is_empty() {
            return Ok(());
        }
        let k = self.min_active_backups;
        self.raft
            .wait(Some(self.backup_timeout))
            .metrics(
                |m| {
                    let replication = m.replication.clone().unwrap_or_default();
                    may_acknowledge(&replication, &backups, k, index)
                },
                "the active backups hold the entry",
            )
            .await
            .map(|_| ())
            .map_err(|_| {
                ProposeError::Unknown(format!(
                    "group {}: the write is committed on the primaries, but fewer than {k} active backup(s) \
                     confirmed it within {:?}; it will be stored on the backups once they are reachable",
                    self.name, self.backup_timeout
                ))
            })
    }

    /// The leader's name as this node knows it, if there is one.
    pub fn leader(&self) -> Option<(NodeId, NodeName)> {
        let metrics = self.raft.metrics().borrow().clone();
        let leader = metrics.current_leader?;
        let name = metrics
            .membership_config
            .membership()
            .get_node(&leader)
            .map(|member| member.name.clone())?;
        Some((leader, name))
    }

    /// Waits until the term this node leads has its first entry applied (so every earlier
    /// entry is applied too), and answers that term; or why it cannot lead now.
    async fn ready_term(&self) -> Result<u64, ProposeError> {
        let term = {
            // Read in place: this runs for every write, and the metrics are a large clone.
            let metrics = self.raft.metrics();
            let m = metrics.borrow();
            if m.current_leader != Some(self.me) {
                drop(m);
                return Err(ProposeError::NotLeader(self.leader().map(|(_, name)| name)));
            }
            if m.last_applied
                .is_some_and(|applied| applied.leader_id.term == m.current_term)
            {
                return Ok(m.current_term);
            }
            m.current_term
        };
        let waited = self
            .raft
            .wait(Some(self.ready_timeout))
            .metrics(
                |m| m.current_term != term || m.last_applied.is_some_and(|applied| applied.leader_id.term == term),
                "the leader's first entry applied",
            )
            .await
            .map_err(|e| ProposeError::Unknown(format!("group {}: {e}", self.name)))?;
        if waited.current_term != term || waited.current_leader != Some(self.me) {
            return Err(ProposeError::NotLeader(self.leader().map(|(_, name)| name)));
        }
        Ok(term)
    }

    /// Proposes one transaction of `context` and answers once it is committed and applied
    /// on this node (the leader), as Axon acknowledges.
    ///
    /// The transaction joins the group's queue; the proposer ([`Group::start_proposer`]) puts
    /// what is queued into one entry whenever fewer than [`BATCHES_IN_FLIGHT`] are under way.
    /// openraft 0.9 writes each entry with its own fsync on the leader and every follower and
    /// its core waits for each (`RaftCore::append_to_log`); batching is what lets concurrent
    /// clients share them (docs/ARCHITECTURE.md, decision 21).
    pub async fn propose(&self, context: &Arc<Context>, proposal: Proposal) -> Result<Applied, ProposeError> {
        // Refused at once where this node does not lead: the caller forwards the write.
        self.ready_term().await?;
        let (answer, answered) = oneshot::channel();
        let waiting = Waiting {
            context: context.clone(),
            proposal,
            answer,
        };
        if self.queue.send(waiting).await.is_err() {
            return Err(ProposeError::Refused(NodeError::Replication(format!(
                "replication group {} is closing",
                self.name
            ))));
        }
        answered.await.unwrap_or_else(|_| {
            Err(ProposeError::Unknown(format!(
                "group {}: the write was dropped before it was answered; it may or may not be stored",
                self.name
            )))
        })
    }

    /// Starts the task that proposes queued transactions, once; it ends with the group.
    pub fn start_proposer(self: &Arc<Group>) {
        let Some(mut waiting) = self.waiting.lock().take() else {
            return;
        };
        let group = Arc::downgrade(self);
        tokio::spawn(async move {
            while let Some(first) = waiting.recv().await {
                let Some(group) = group.upgrade() else {
                    return;
                };
                let Ok(permit) = group.in_flight.clone().acquire_owned().await else {
                    return;
                };
                // Whatever queued while the earlier batches were under way goes in this one.
                let mut bytes = first.bytes();
                let mut batch = vec![first];
                while bytes < MAX_BATCH_BYTES && batch.len() < MAX_BATCH_TRANSACTIONS {
                    match waiting.try_recv() {
                        Ok(next) => {
                            bytes += next.bytes();
                            batch.push(next);
                        }
                        Err(_) => break,
                    }
                }
                group.submit(batch, permit).await;
            }
        });
    }

    /// Checks and reserves `batch` in order, proposes what passed as as few entries as the
    /// log allows (events of consecutive transactions share one; a snapshot has its own), and
    /// leaves a task to answer each transaction once its entry is applied.
    async fn submit(self: &Arc<Group>, batch: Vec<Waiting>, permit: OwnedSemaphorePermit) {
        let term = match self.ready_term().await {
            Ok(term) => term,
            Err(e) => {
                for waiting in batch {
                    waiting.answer(Err(e.echo()));
                }
                return;
            }
        };
        let mut proposed = Vec::new();
        {
            let mut sequencer = self.sequencer.lock().await;
            if sequencer.term != Some(term) {
                *sequencer = Sequencer {
                    term: Some(term),
                    contexts: HashMap::new(),
                };
            }
            let mut entries: Vec<(Command, Vec<Waiting>)> = Vec::new();
            let mut events: Vec<(Transaction, Waiting)> = Vec::new();
            for waiting in batch {
                let store = waiting.context.store();
                let sequence = sequencer.context(store);
                match &waiting.proposal {
                    Proposal::Events(list) => match sequence.reserve_events(store, list) {
                        Ok(token) => {
                            let t = transaction(store.name(), token, list.iter().map(|e| e.bytes().clone()));
                            events.push((t, waiting));
                        }
                        Err(e) => waiting.answer(Err(ProposeError::Refused(e))),
                    },
                    Proposal::Snapshot(snapshot) => match sequence.reserve_snapshot(store, snapshot) {
                        Ok(token) => {
                            let t = transaction(store.name(), token, [snapshot.bytes().clone()]);
                            entries.extend(events_entry(std::mem::take(&mut events)));
                            entries.push((Command::Snapshot(t), vec![waiting]));
                        }
                        Err(e) => waiting.answer(Err(ProposeError::Refused(e))),
                    },
                }
            }
            entries.extend(events_entry(events));
            // Proposed under the sequencer's lock: log order is token order.
            let mut entries = entries.into_iter();
            while let Some((command, waiters)) = entries.next() {
                match self.raft.client_write_ff(command).await {
                    Ok(receiver) => proposed.push((receiver, waiters)),
                    Err(fatal) => {
                        sequencer.term = None;
                        let e = ProposeError::Unknown(format!("group {}: {fatal}", self.name));
                        for waiting in waiters.into_iter().chain(entries.flat_map(|(_, w)| w)) {
                            waiting.answer(Err(e.echo()));
                        }
                        break;
                    }
                }
            }
        }
        let group = self.clone();
        tokio::spawn(async move {
            for (receiver, waiters) in proposed {
                group.answer(receiver, waiters).await;
            }
            drop(permit);
        });
    }

    /// Answers the transactions of one proposed entry once it is applied here.
    async fn answer(&self, receiver: Receipt, waiters: Vec<Waiting>) {
        let failed = match receiver.await {
            Ok(Ok(response)) => {
                let answers = match response.data {
                    Applied::Batch(answers) => answers,
                    single => vec![single],
                };
                // Applied, so its tokens are spent whatever follows: the sequencer stays as it
                // is (counting afresh would hand them out again).
                let failed = if answers.len() != waiters.len() {
                    Some(ProposeError::Unknown(format!(
                        "group {}: entry {} answered {} transactions for {}",
                        self.name,
                        response.log_id,
                        answers.len(),
                        waiters.len()
                    )))
                } else {
                    self.backups_hold(response.log_id.index).await.err()
                };
                if let Some(e) = failed {
                    for waiting in waiters {
                        waiting.answer(Err(e.echo()));
                    }
                    return;
                }
                for (waiting, applied) in waiters.into_iter().zip(answers) {
                    let outcome = if applied == Applied::ContextGone {
                        let name = waiting.context.store().name().to_string();
                        Err(ProposeError::Refused(NodeError::ContextNotFound(name)))
                    } else {
                        Ok(applied)
                    };
                    waiting.answer(outcome);
                }
                return;
            }
            // It had been proposed: whether it commits is up to the next leader.
            Ok(Err(ClientWriteError::ForwardToLeader(forward))) => ProposeError::Unknown(format!(
                "group {}: leadership moved{} before the write was committed; it may or may not be stored",
                self.name,
                forward
                    .leader_node
                    .map(|member| format!(" to {}", member.name))
                    .unwrap_or_default()
            )),
            Ok(Err(e)) => ProposeError::Unknown(format!("group {}: {e}", self.name)),
            Err(e) => ProposeError::Unknown(format!("group {}: the write was dropped: {e}", self.name)),
        };
        // Whatever this node had reserved may never be stored: count afresh next time.
        self.sequencer.lock().await.term = None;
        for waiting in waiters {
            waiting.answer(Err(failed.echo()));
        }
    }

    /// Proposes a control command (no tokens) and waits until it is applied here.
    pub async fn propose_control(&self, command: Command) -> Result<Applied, ProposeError> {
        match self.raft.client_write(command).await {
            Ok(response) => Ok(response.data),
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(forward))) => {
                Err(ProposeError::NotLeader(forward.leader_node.map(|member| member.name)))
            }
            Err(e) => Err(ProposeError::Unknown(format!("group {}: {e}", self.name))),
        }
    }
}

/// The entry for consecutive event transactions: Axon's own for one, a batch for more.
fn events_entry(events: Vec<(Transaction, Waiting)>) -> Option<(Command, Vec<Waiting>)> {
    let (mut transactions, waiters): (Vec<Transaction>, Vec<Waiting>) = events.into_iter().unzip();
    let command = match transactions.len() {
        0 => return None,
        1 => Command::Events(transactions.remove(0)),
        _ => Command::EventBatch(transactions),
    };
    Some((command, waiters))
}

fn transaction(context: &str, token: i64, events: impl IntoIterator<Item = Bytes>) -> Transaction {
    Transaction {
        context: context.to_string(),
        token,
        events: events.into_iter().collect(),
    }
}
