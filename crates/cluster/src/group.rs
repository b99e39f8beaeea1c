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
use tokio::sync::Mutex;
use tracing::info;

use crate::gate::{active_backups, may_acknowledge};
use crate::machine::AppliedPosition;
use crate::types::{Applied, Command, NodeId, NodeName, Raft, Transaction, VoteRequest, VoteResponse};

/// Aggregates remembered per context beyond which those already applied are forgotten.
const REMEMBERED_AGGREGATES: usize = 100_000;

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
        Group {
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
        let metrics = self.raft.metrics().borrow().clone();
        if metrics.current_leader != Some(self.me) {
            return Err(ProposeError::NotLeader(self.leader().map(|(_, name)| name)));
        }
        let term = metrics.current_term;
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
    pub async fn propose(&self, context: &Arc<Context>, proposal: Proposal) -> Result<Applied, ProposeError> {
        let store = context.store();
        let term = self.ready_term().await?;
        let receiver = {
            let mut sequencer = self.sequencer.lock().await;
            if sequencer.term != Some(term) {
                *sequencer = Sequencer {
                    term: Some(term),
                    contexts: HashMap::new(),
                };
            }
            let sequence = sequencer.context(store);
            let command = match &proposal {
                Proposal::Events(events) => {
                    let token = sequence.reserve_events(store, events).map_err(ProposeError::Refused)?;
                    Command::Events(transaction(
                        store.name(),
                        token,
                        events.iter().map(|e| e.bytes().clone()),
                    ))
                }
                Proposal::Snapshot(snapshot) => {
                    let token = sequence
                        .reserve_snapshot(store, snapshot)
                        .map_err(ProposeError::Refused)?;
                    Command::Snapshot(transaction(store.name(), token, [snapshot.bytes().clone()]))
                }
            };
            match self.raft.client_write_ff(command).await {
                Ok(receiver) => receiver,
                Err(fatal) => {
                    sequencer.term = None;
                    return Err(ProposeError::Unknown(format!("group {}: {fatal}", self.name)));
                }
            }
        };
        let outcome = match receiver.await {
            Ok(Ok(response)) => {
                if response.data == Applied::ContextGone {
                    return Err(ProposeError::Refused(NodeError::ContextNotFound(
                        store.name().to_string(),
                    )));
                }
                self.backups_hold(response.log_id.index).await?;
                return Ok(response.data);
            }
            Ok(Err(ClientWriteError::ForwardToLeader(forward))) => {
                ProposeError::NotLeader(forward.leader_node.map(|member| member.name))
            }
            Ok(Err(e)) => ProposeError::Unknown(format!("group {}: {e}", self.name)),
            Err(e) => ProposeError::Unknown(format!("group {}: the write was dropped: {e}", self.name)),
        };
        // Whatever this node had reserved may never be stored: count afresh next time.
        self.sequencer.lock().await.term = None;
        Err(match outcome {
            // It had been proposed: whether it commits is up to the next leader.
            ProposeError::NotLeader(leader) => ProposeError::Unknown(format!(
                "group {}: leadership moved{} before the write was committed; it may or may not be stored",
                self.name,
                leader.map(|l| format!(" to {l}")).unwrap_or_default()
            )),
            other => other,
        })
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

fn transaction(context: &str, token: i64, events: impl IntoIterator<Item = Bytes>) -> Transaction {
    Transaction {
        context: context.to_string(),
        token,
        events: events.into_iter().collect(),
    }
}
