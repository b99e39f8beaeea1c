//! The state machine of one replication group: applying a committed entry stores its events in
//! the context's own event store (the same store a single node writes), runs control commands,
//! and records how far it got.
//!
//! Apply is idempotent, as Axon's `SyncStorage` is: an entry carries the token the leader gave
//! its first event. Below the store's head it was stored before (a replay after a crash, since
//! the applied index is persisted lazily) and is skipped; at the head it is stored; above the
//! head the log and the store disagree, which is corruption and stops the group (a
//! `StorageError` shuts openraft down) rather than leaving a gap.

use std::collections::HashMap;
use std::sync::Arc;

use myelin_node::Node;
use myelin_store::{AppendTicket, ContextStore, SegmentKind};
use openraft::storage::RaftStateMachine;
use openraft::{AnyError, EntryPayload, RaftSnapshotBuilder, Snapshot, SnapshotMeta, StorageIOError};
use parking_lot::Mutex;
use tracing::debug;

use std::collections::BTreeMap;

use crate::role::Role;
use crate::types::{
    AdminState, Applied, Command, ControlCommand, Entry, LogId, Manifest, StorageError, StoredMembership, Transaction,
    TypeConfig,
};

/// What the cluster does with a control command once it is committed (`_admin`'s address book
/// and group list; a group's contexts). Runs on every member, in log order.
pub trait ControlEffects: Send + Sync + 'static {
    fn apply(&self, group: &str, command: &ControlCommand) -> Result<(), String>;
}

/// The applied position not yet written to the control database. The group's flusher writes
/// it at most once per `sync-interval`: the apply path never waits on SQLite, and a replay of
/// what was applied but not recorded is harmless (see the module doc).
#[derive(Default)]
pub struct AppliedPosition {
    dirty: Mutex<Option<(LogId, StoredMembership)>>,
}

impl AppliedPosition {
    /// Takes what has changed since the last call.
    pub fn take(&self) -> Option<(LogId, StoredMembership)> {
        self.dirty.lock().take()
    }

    fn set(&self, applied: LogId, membership: StoredMembership) {
        *self.dirty.lock() = Some((applied, membership));
    }
}

/// The last snapshot built or installed: its meta and manifest.
type SnapshotSlot = Arc<Mutex<Option<(SnapshotMeta<u64, crate::types::Member>, Manifest)>>>;

pub struct GroupMachine {
    group: String,
    node: Arc<Node>,
    effects: Arc<dyn ControlEffects>,
    applied: Option<LogId>,
    membership: StoredMembership,
    position: Arc<AppliedPosition>,
    /// The last snapshot built or installed, shared with the builders.
    snapshot: SnapshotSlot,
    /// Held while this group writes to its contexts' stores: applying entries, or receiving a
    /// snapshot's events (`transfer`), never both at once.
    writes: Arc<tokio::sync::Mutex<()>>,
}

impl GroupMachine {
    /// A machine resumed at `applied` with `membership`, as the control database recorded them.
    pub fn new(
        group: &str,
        node: Arc<Node>,
        effects: Arc<dyn ControlEffects>,
        applied: Option<LogId>,
        membership: StoredMembership,
        position: Arc<AppliedPosition>,
        writes: Arc<tokio::sync::Mutex<()>>,
    ) -> GroupMachine {
        GroupMachine {
            group: group.to_string(),
            node,
            effects,
            applied,
            membership,
            position,
            snapshot: Arc::new(Mutex::new(None)),
            writes,
        }
    }

    fn store(&self, context: &str, log_id: &LogId) -> Result<Arc<ContextStore>, StorageError> {
        match self.node.contexts().get(context) {
            Some(context) => Ok(context.store().clone()),
            None => Err(apply_error(
                log_id,
                format!("group {}: context {context} is not open on this node", self.group),
            )),
        }
    }

    /// Whether `context` has no record on this node (a member creates the record from the
    /// group's log before any of the context's events, so none means deleted since).
    fn deleted(&self, context: &str) -> bool {
        matches!(self.node.control().context(context), Ok(None))
    }

    /// What this group's state is now: its contexts with their stores' heads (exactly what is
    /// applied, since apply waits for the stores' fsync), and for `_admin` the configuration.
    fn manifest(&self) -> Result<Manifest, StorageError> {
        let control = self.node.control();
        let mut manifest = Manifest::default();
        for name in control.contexts_of_replication_group(&self.group).map_err(read_error)? {
            let metadata = control
                .context(&name)
                .map_err(read_error)?
                .map(|record| record.metadata)
                .unwrap_or_default();
            if let Some(context) = self.node.contexts().get(&name) {
                manifest.event_heads.insert(name.clone(), context.store().head() as i64);
                manifest
                    .snapshot_heads
                    .insert(name.clone(), context.store().snapshot_head() as i64);
            }
            manifest.contexts.insert(name, metadata);
        }
        if self.group == crate::cluster::ADMIN_GROUP {
            manifest.admin = Some(admin_state(control).map_err(read_error)?);
        }
        Ok(manifest)
    }
}

fn apply_error(log_id: &LogId, message: String) -> StorageError {
    StorageIOError::apply(*log_id, AnyError::error(message)).into()
}

/// A transaction handed to a store, waiting for its fsync.
struct Pending {
    log_id: LogId,
    ticket: AppendTicket,
}

/// The next token per (context, family) while a batch is being applied: the stores' heads only
/// move once their writers publish, and a batch may hold several transactions of one context.
#[derive(Default)]
struct Heads(HashMap<(String, SegmentKind), i64>);

impl Heads {
    fn next(&mut self, store: &ContextStore, kind: SegmentKind) -> &mut i64 {
        self.0
            .entry((store.name().to_string(), kind))
            .or_insert_with(|| match kind {
                SegmentKind::Events => store.head() as i64,
                SegmentKind::Snapshots => store.snapshot_head() as i64,
            })
    }
}

impl GroupMachine {
    /// Stores `transaction` unless it is stored already; answers where it landed.
    fn apply_transaction(
        &self,
        log_id: &LogId,
        kind: SegmentKind,
        transaction: &Transaction,
        heads: &mut Heads,
        pending: &mut Vec<Pending>,
    ) -> Result<Applied, StorageError> {
        let store = match self.store(&transaction.context, log_id) {
            Ok(store) => store,
            // Deleted earlier in this log: every member skips it alike.
            Err(_) if self.deleted(&transaction.context) => return Ok(Applied::ContextGone),
            Err(e) => return Err(e),
        };
        let count = transaction.events.len() as i64;
        let next = heads.next(&store, kind);
        let stored = Applied::Stored {
            first_token: transaction.token,
            count: count as u64,
        };
        if transaction.token + count <= *next {
            debug!(group = %self.group, %log_id, "entry stored before; skipped");
            return Ok(stored);
        }
        if transaction.token != *next {
            return Err(apply_error(
                log_id,
                format!(
                    "group {}: entry {log_id} carries token {} for {} {}, whose next token is {}",
                    self.group,
                    transaction.token,
                    transaction.context,
                    kind.data_suffix(),
                    next
                ),
            ));
        }
        let events = transaction.events.clone();
        let ticket = match kind {
            SegmentKind::Events => store.append(events),
            SegmentKind::Snapshots => match events.into_iter().next() {
                Some(snapshot) => store.append_snapshot(snapshot),
                None => return Err(apply_error(log_id, "a snapshot entry without a snapshot".into())),
            },
        }
        .map_err(|e| apply_error(log_id, format!("group {}: {e}", self.group)))?;
        *next += count;
        pending.push(Pending {
            log_id: *log_id,
            ticket,
        });
        Ok(stored)
    }
}

/// Waits until every pending transaction is durable; the first failure fails the batch.
async fn settle(group: &str, pending: &mut Vec<Pending>) -> Result<(), StorageError> {
    for Pending { log_id, ticket } in pending.drain(..) {
        ticket
            .await
            .map_err(|e| apply_error(&log_id, format!("group {group}: storing entry {log_id}: {e}")))?;
    }
    Ok(())
}

impl RaftStateMachine<TypeConfig> for GroupMachine {
    type SnapshotBuilder = ManifestBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        Ok((self.applied, self.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Applied>, StorageError>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let writes = self.writes.clone();
        let _writing = writes.lock().await;
        let mut answers = Vec::new();
        let mut pending = Vec::new();
        let mut heads = Heads::default();
        for entry in entries {
            let log_id = entry.log_id;
            let answer = match &entry.payload {
                EntryPayload::Blank | EntryPayload::Normal(Command::Dummy) => Applied::Done,
                EntryPayload::Membership(membership) => {
                    self.membership = StoredMembership::new(Some(log_id), membership.clone());
                    Applied::Done
                }
                EntryPayload::Normal(Command::Events(t)) => {
                    self.apply_transaction(&log_id, SegmentKind::Events, t, &mut heads, &mut pending)?
                }
                EntryPayload::Normal(Command::EventBatch(batch)) => Applied::Batch(
                    batch
                        .iter()
                        .map(|t| self.apply_transaction(&log_id, SegmentKind::Events, t, &mut heads, &mut pending))
                        .collect::<Result<_, _>>()?,
                ),
                EntryPayload::Normal(Command::Snapshot(t)) => {
                    // The store checks a snapshot against the events it has published: the
                    // events before it in the log must be stored first.
                    settle(&self.group, &mut pending).await?;
                    self.apply_transaction(&log_id, SegmentKind::Snapshots, t, &mut heads, &mut pending)?
                }
                EntryPayload::Normal(Command::Control(command)) => {
                    // Control commands see every earlier entry stored (a context deleted after
                    // its last events, say).
                    settle(&self.group, &mut pending).await?;
                    heads = Heads::default();
                    self.effects
                        .apply(&self.group, command)
                        .map_err(|e| apply_error(&log_id, format!("group {}: {e}", self.group)))?;
                    Applied::Done
                }
            };
            self.applied = Some(log_id);
            answers.push(answer);
        }
        settle(&self.group, &mut pending).await?;
        if let Some(applied) = self.applied {
            self.position.set(applied, self.membership.clone());
        }
        Ok(answers)
    }

    async fn get_snapshot_builder(&mut self) -> ManifestBuilder {
        let manifest = self.manifest();
        ManifestBuilder {
            meta: SnapshotMeta {
                last_log_id: self.applied,
                last_membership: self.membership.clone(),
                snapshot_id: format!("{}-{}", self.group, self.applied.map(|l| l.index).unwrap_or(0)),
            },
            manifest,
            current: self.snapshot.clone(),
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Manifest>, StorageError> {
        Ok(Box::default())
    }

    /// A snapshot is a manifest; the events it covers are already in the local stores: the
    /// leader sent them first (`transfer`). So installing checks that every store the manifest
    /// names holds at least what it says, applies `_admin`'s configuration, and moves the
    /// applied position; a store short of the manifest is refused rather than left with a gap.
    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<u64, crate::types::Member>,
        snapshot: Box<Manifest>,
    ) -> Result<(), StorageError> {
        let refuse = |message: String| -> StorageError {
            StorageIOError::write_snapshot(Some(meta.signature()), AnyError::error(message)).into()
        };
        let writes = self.writes.clone();
        let _writing = writes.lock().await;
        for (context, head) in &snapshot.event_heads {
            // A member without the context's stores (MESSAGING_ONLY) has nothing to check.
            let Some(local) = self.node.contexts().get(context) else {
                continue;
            };
            let (events, snapshots) = (local.store().head() as i64, local.store().snapshot_head() as i64);
            let snapshot_head = snapshot.snapshot_heads.get(context).copied().unwrap_or(0);
            if events < *head || snapshots < snapshot_head {
                return Err(refuse(format!(
                    "group {}: snapshot {} needs {context} up to event token {head} and snapshot token \
                     {snapshot_head}; this node holds {events} and {snapshots}",
                    self.group, meta.snapshot_id
                )));
            }
        }
        if let Some(admin) = &snapshot.admin {
            let mut commands: Vec<ControlCommand> = admin
                .cluster_id
                .iter()
                .map(|cluster_id| ControlCommand::ClusterCreated {
                    cluster_id: cluster_id.clone(),
                })
                .collect();
            commands.extend(admin.nodes.iter().cloned().map(ControlCommand::NodeJoined));
            commands.extend(
                admin
                    .groups
                    .iter()
                    .map(|(group, members)| ControlCommand::GroupConfigured {
                        group: group.clone(),
                        members: members.clone(),
                    }),
            );
            commands.extend(
                admin
                    .placements
                    .iter()
                    .map(|(context, group)| ControlCommand::ContextPlaced {
                        context: context.clone(),
                        group: group.clone(),
                    }),
            );
            for command in &commands {
                self.effects.apply(&self.group, command).map_err(&refuse)?;
            }
        }
        self.applied = meta.last_log_id;
        self.membership = meta.last_membership.clone();
        if let Some(applied) = self.applied {
            self.position.set(applied, self.membership.clone());
        }
        *self.snapshot.lock() = Some((meta.clone(), *snapshot));
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        Ok(self.snapshot.lock().as_ref().map(|(meta, manifest)| Snapshot {
            meta: meta.clone(),
            snapshot: Box::new(manifest.clone()),
        }))
    }
}

/// Builds the (small) snapshot of a group: its position, membership and the stores' heads.
pub struct ManifestBuilder {
    meta: SnapshotMeta<u64, crate::types::Member>,
    manifest: Result<Manifest, StorageError>,
    current: SnapshotSlot,
}

impl RaftSnapshotBuilder<TypeConfig> for ManifestBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        let manifest = self.manifest.clone()?;
        *self.current.lock() = Some((self.meta.clone(), manifest.clone()));
        Ok(Snapshot {
            meta: self.meta.clone(),
            snapshot: Box::new(manifest),
        })
    }
}

/// `_admin`'s configuration as the control database holds it.
fn admin_state(control: &myelin_control::ControlDb) -> Result<AdminState, myelin_control::ControlError> {
    let nodes = control
        .cluster_nodes()?
        .into_iter()
        .map(crate::cluster::address_of)
        .collect();
    let mut groups = BTreeMap::new();
    for group in control.replication_groups_configured()? {
        let members = group
            .members
            .into_iter()
            .filter_map(|(node, number)| Some((node, Role::from_number(number)?)))
            .collect();
        groups.insert(group.name, members);
    }
    let mut placements = BTreeMap::new();
    for context in control.contexts()? {
        if let Some(group) = control.context_replication_group(&context.name)? {
            placements.insert(context.name, group);
        }
    }
    Ok(AdminState {
        cluster_id: control.cluster_identity()?.map(|identity| identity.cluster_id),
        nodes,
        groups,
        placements,
    })
}

/// An I/O error as openraft's storage error for reading the state machine.
pub fn read_error(e: impl std::fmt::Display) -> StorageError {
    StorageIOError::read_state_machine(AnyError::error(e.to_string())).into()
}
