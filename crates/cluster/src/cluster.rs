//! This node's part in the cluster: the replication groups it hosts, the address book, the
//! effects of committed control commands, and the write path that sends a context's appends
//! through its group's leader.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Weak};
use std::time::Duration;

use bytes::Bytes;
use myelin_node::{Context, Node, NodeError, WriteFuture, WritePath};
use myelin_store::{Appended, DeletionHolds, PreparedEvent, PreparedSnapshot, StoreError};
use openraft::{ChangeMembers, Config, SnapshotPolicy};
use parking_lot::RwLock;
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use crate::config::ClusterConfig;
use crate::group::{Group, GroupTiming, Proposal, ProposeError};
use crate::log::{CleaningGate, LogStore};
use crate::machine::{AppliedPosition, ControlEffects, GroupMachine};
use crate::network::{Call, CallError, GroupNetwork, Peers};
use crate::role::Role;
use crate::types::{Applied, Command, ControlCommand, Member, NodeAddress, NodeName, Raft, node_id};

/// The group that holds the cluster's own configuration.
pub const ADMIN_GROUP: &str = "_admin";

/// How long a new member may take to catch up before it is promoted.
const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(30);

/// How many times a write follows "the leader is elsewhere" before it gives up.
const MAX_FORWARD_HOPS: usize = 3;

/// A client's write passed on to the group's leader.
#[derive(Debug, Serialize, Deserialize)]
pub struct Forwarded {
    pub context: String,
    pub snapshot: bool,
    pub events: Vec<Bytes>,
}

/// Why a forwarded write or an admin call failed, carried back over the wire.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum WireError {
    NotLeader(Option<NodeName>),
    NoLeader(String),
    InvalidSequence {
        aggregate: String,
        actual: i64,
        expected: i64,
    },
    InvalidSnapshotSequence {
        aggregate: String,
        highest: i64,
        snapshot: i64,
    },
    Invalid(String),
    Unknown(String),
    /// A refusal with Axon's code (its number), from the admin operations.
    Cluster {
        code: u32,
        message: String,
    },
}

impl From<NodeError> for WireError {
    fn from(e: NodeError) -> WireError {
        match e {
            NodeError::Store {
                source:
                    StoreError::InvalidSequence {
                        aggregate,
                        actual,
                        expected,
                    },
                ..
            } => WireError::InvalidSequence {
                aggregate,
                actual,
                expected,
            },
            NodeError::Store {
                source:
                    StoreError::InvalidSnapshotSequence {
                        aggregate,
                        highest,
                        snapshot,
                    },
                ..
            } => WireError::InvalidSnapshotSequence {
                aggregate,
                highest,
                snapshot,
            },
            NodeError::NoLeader(message) => WireError::NoLeader(message),
            NodeError::InvalidArgument(message) => WireError::Invalid(message),
            NodeError::Cluster { code, message } => WireError::Cluster {
                code: code.info().number,
                message,
            },
            other => WireError::Unknown(other.to_string()),
        }
    }
}

impl From<WireError> for NodeError {
    fn from(e: WireError) -> NodeError {
        match e {
            WireError::NotLeader(leader) => NodeError::Replication(format!(
                "the write reached a node that does not lead its group (leader: {})",
                leader.unwrap_or_else(|| "unknown".into())
            )),
            WireError::NoLeader(message) => NodeError::NoLeader(message),
            WireError::InvalidSequence {
                aggregate,
                actual,
                expected,
            } => NodeError::write(StoreError::InvalidSequence {
                aggregate,
                actual,
                expected,
            }),
            WireError::InvalidSnapshotSequence {
                aggregate,
                highest,
                snapshot,
            } => NodeError::write(StoreError::InvalidSnapshotSequence {
                aggregate,
                highest,
                snapshot,
            }),
            WireError::Invalid(message) => NodeError::InvalidArgument(message),
            WireError::Unknown(message) => NodeError::Replication(message),
            WireError::Cluster { code, message } => {
                match myelin_node::ErrorCode::ALL.iter().find(|c| c.info().number == code) {
                    Some(code) => NodeError::Cluster { code: *code, message },
                    None => NodeError::Replication(message),
                }
            }
        }
    }
}

/// Cluster administration run on the node that must run it (the group's leader).
#[derive(Debug, Serialize, Deserialize)]
pub enum AdminRequest {
    /// A node asks to join the cluster, and to be a PRIMARY of `contexts`' groups. It says
    /// which cluster its data was restored from, if any: that cluster refuses it.
    Join {
        node: NodeAddress,
        contexts: Vec<String>,
        restored_from: Option<String>,
    },
    /// Add `node` to `group` with `role` (run on the group's leader).
    AddMember { group: String, node: NodeName, role: Role },
    /// The admin API's other steps (`crate::admin`): run on the leader of the group they name,
    /// or on the node they are sent to.
    Manage(crate::admin::Manage),
}

pub type AdminAnswer = Result<(), WireError>;

/// This node in the cluster.
pub struct ClusterNode {
    node: Arc<Node>,
    config: ClusterConfig,
    me: NodeAddress,
    peers: Arc<Peers>,
    groups: RwLock<HashMap<String, Arc<Group>>>,
    /// Which group each context lives in (from `_admin`).
    placements: RwLock<HashMap<String, String>>,
    /// Addresses the recovery file gave (`crate::recovery`): for this run they win over older
    /// ones that `_admin`'s log replays.
    recovered: RwLock<HashMap<NodeName, crate::recovery::Recovered>>,
    /// Held while a group is being opened.
    opening: tokio::sync::Mutex<()>,
    /// Each open group's log, for backups and the log cleaner.
    logs: RwLock<HashMap<String, LogStore>>,
    /// When log files may be deleted (backup leases, the pause after a control-DB backup).
    cleaning: Arc<CleaningGate>,
    /// Set once this node's formation finished: admin requests wait for it, so that a join
    /// never races the initialisation of the groups it joins.
    formed: tokio::sync::watch::Sender<bool>,
    this: Weak<ClusterNode>,
}

impl ClusterNode {
    pub fn new(node: Arc<Node>, config: ClusterConfig) -> Result<Arc<ClusterNode>, NodeError> {
        config.replication.validate().map_err(NodeError::InvalidArgument)?;
        let identity = node.identity();
        let me = NodeAddress {
            name: identity.name.clone(),
            internal_host_name: identity.internal_host_name.clone(),
            internal_port: identity.internal_port,
            host_name: identity.host_name.clone(),
            grpc_port: identity.grpc_port,
            http_port: identity.http_port,
        };
        let peers = Arc::new(Peers::new(config.internal_token.clone()));
        peers.learn(me.clone());
        Ok(Arc::new_cyclic(|this| ClusterNode {
            node,
            config,
            me,
            peers,
            groups: RwLock::new(HashMap::new()),
            placements: RwLock::new(HashMap::new()),
            recovered: RwLock::new(HashMap::new()),
            opening: tokio::sync::Mutex::new(()),
            logs: RwLock::new(HashMap::new()),
            cleaning: Arc::new(CleaningGate::new(DeletionHolds::global())),
            formed: tokio::sync::watch::Sender::new(false),
            this: this.clone(),
        }))
    }

    pub fn node(&self) -> &Arc<Node> {
        &self.node
    }

    pub fn me(&self) -> &NodeAddress {
        &self.me
    }

    pub fn peers(&self) -> &Arc<Peers> {
        &self.peers
    }

    pub fn config(&self) -> &ClusterConfig {
        &self.config
    }

    pub fn group(&self, name: &str) -> Option<Arc<Group>> {
        self.groups.read().get(name).cloned()
    }

    /// The groups this node hosts, by name.
    pub fn groups(&self) -> Vec<Arc<Group>> {
        let mut groups: Vec<Arc<Group>> = self.groups.read().values().cloned().collect();
        groups.sort_by(|a, b| a.name.cmp(&b.name));
        groups
    }

    /// Records that `context` lives in `group` (in memory, and in the control database once
    /// both are known there).
    pub fn place(&self, context: &str, group: &str) -> Result<(), NodeError> {
        self.placements.write().insert(context.to_string(), group.to_string());
        let control = self.node.control();
        if control.context(context)?.is_some() && control.replication_group(group)?.is_some() {
            control.set_context_replication_group(context, group)?;
        }
        Ok(())
    }

    /// This node as an owned handle (for futures that outlive a borrow).
    pub(crate) fn arc(&self) -> Option<Arc<ClusterNode>> {
        self.this.upgrade()
    }

    /// The log of `group` on this node.
    pub fn log(&self, group: &str) -> Option<LogStore> {
        self.logs.read().get(group).cloned()
    }

    /// When log files may be deleted.
    pub fn cleaning(&self) -> &Arc<CleaningGate> {
        &self.cleaning
    }

    /// This node's role in `group`, as the group's membership says (none if not a member).
    pub fn role_in(&self, group: &str) -> Option<Role> {
        let group = self.group(group)?;
        let metrics = group.raft.metrics().borrow().clone();
        metrics
            .membership_config
            .membership()
            .get_node(&group.me)
            .map(|member| member.role)
    }

    /// The group context `context` lives in.
    pub fn group_of(&self, context: &str) -> Option<String> {
        self.placements.read().get(context).cloned()
    }

    /// Every context this node knows the group of, with that group.
    pub fn placements(&self) -> HashMap<String, String> {
        self.placements.read().clone()
    }

    /// Forgets where `context` lives (it was deleted).
    pub(crate) fn forget_placement(&self, context: &str) {
        self.placements.write().remove(context);
    }

    /// Takes group `name` out of this node's groups (to close it), answering it.
    pub(crate) fn take_group(&self, name: &str) -> Option<Arc<Group>> {
        self.groups.write().remove(name)
    }

    /// This node as an `Arc`, for work that outlives a borrow (`None` while shutting down).
    pub(crate) fn strong(&self) -> Option<Arc<ClusterNode>> {
        self.this.upgrade()
    }

    fn raft_config(&self, group: &str) -> Result<Arc<Config>, NodeError> {
        let r = &self.config.replication;
        let (election_timeout_min, election_timeout_max) = r.raft_election_timeouts();
        let config = Config {
            cluster_name: group.to_string(),
            election_timeout_min,
            election_timeout_max,
            heartbeat_interval: r.heartbeat_timeout_ms,
            // Snapshots and purges are the log cleaner's decision (docs/ARCHITECTURE.md), never
            // openraft's own.
            snapshot_policy: SnapshotPolicy::Never,
            max_in_snapshot_log_to_keep: u64::MAX,
            // An entry may hold a batch of up to 2 MiB of events (`group`): 64 keep one
            // AppendEntries within ~128 MiB where openraft's 300 would allow 600.
            max_payload_entries: 64,
            ..Default::default()
        };
        config
            .validate()
            .map(Arc::new)
            .map_err(|e| NodeError::InvalidArgument(format!("replication settings: {e}")))
    }

    /// Opens group `name` on this node (its log, its recorded state, its Raft), once.
    pub async fn open_group(&self, name: &str) -> Result<Arc<Group>, NodeError> {
        // One opening at a time: two openings of one group would both create its first file.
        let _opening = self.opening.lock().await;
        if let Some(group) = self.group(name) {
            return Ok(group);
        }
        let control = self.node.control().clone();
        let dir = self.config.replication.log_storage_folder.join(name);
        let log = LogStore::open(
            &dir,
            self.config.replication.segment_size_bytes,
            control.clone(),
            name,
            self.cleaning.clone(),
        )
        .await
        .map_err(|e| NodeError::Internal(format!("group {name}: cannot open its log in {}: {e}", dir.display())))?;
        let (applied, membership) = log.recorded_applied().map_err(|e| NodeError::Internal(e.to_string()))?;
        let position = Arc::new(AppliedPosition::default());
        let effects: Arc<dyn ControlEffects> = Arc::new(Effects(self.this.clone()));
        let writes = Arc::new(tokio::sync::Mutex::new(()));
        let machine = GroupMachine::new(
            name,
            self.node.clone(),
            effects,
            applied,
            membership,
            position.clone(),
            writes.clone(),
        );
        let network = GroupNetwork {
            group: name.to_string(),
            peers: self.peers.clone(),
            node: Arc::downgrade(&self.node),
        };
        let me = node_id(&self.me.name);
        let raft = Raft::new(me, self.raft_config(name)?, network, log.clone(), machine)
            .await
            .map_err(|e| NodeError::Internal(format!("group {name}: {e}")))?;
        let timing = GroupTiming {
            ready_timeout: self.config.replication.max_election_timeout() * 4,
            min_active_backups: self.config.replication.min_active_backups,
            backup_timeout: self.config.replication.max_election_timeout(),
            leader_lease: self.config.replication.leader_lease(),
        };
        let group = Arc::new(Group::new(name, raft, me, position, writes, timing));
        let mut groups = self.groups.write();
        if let Some(existing) = groups.get(name) {
            // Opened concurrently by someone else: keep theirs.
            return Ok(existing.clone());
        }
        groups.insert(name.to_string(), group.clone());
        drop(groups);
        group.start_proposer();
        self.logs.write().insert(name.to_string(), log.clone());
        crate::flush::spawn(group.clone(), log, control, self.config.replication.sync_interval_ms);
        crate::observe::spawn_leader_log(group.clone());
        info!(group = %name, "replication group open");
        Ok(group)
    }

    /// Marks formation finished (see `formed`).
    pub(crate) fn set_formed(&self) {
        self.formed.send_replace(true);
    }

    /// Writes the addresses of the recovery file, if there is one, into this node's address
    /// book (`crate::recovery`); before anything reads the book.
    pub(crate) fn recover_addresses(&self) -> Result<(), NodeError> {
        let Some(path) = &self.config.recovery_file else {
            return Ok(());
        };
        let invalid =
            |problem: String| NodeError::InvalidArgument(format!("recovery file {}: {problem}", path.display()));
        let Some(entries) = crate::recovery::read(path).map_err(invalid)? else {
            return Ok(());
        };
        let control = self.node.control();
        let known: Vec<NodeAddress> = control.cluster_nodes()?.into_iter().map(address_of).collect();
        let addresses = crate::recovery::addresses(&entries, &known).map_err(invalid)?;
        for address in &addresses {
            control.upsert_cluster_node(&record_of(address))?;
            info!(
                node = %address.name,
                internal = %format!("{}:{}", address.internal_host_name, address.internal_port),
                "address taken from the recovery file"
            );
        }
        warn!(
            file = %path.display(),
            nodes = addresses.len(),
            "recovery file applied; remove it once the cluster runs on these addresses"
        );
        *self.recovered.write() = entries
            .into_iter()
            .map(|entry| (entry.name.trim().to_string(), entry))
            .collect();
        Ok(())
    }

    /// Whether the recovery file named node `name`.
    pub(crate) fn recovered(&self, name: &str) -> bool {
        self.recovered.read().contains_key(name)
    }

    /// Restores what `_admin` told this node before it stopped: addresses and placements.
    pub fn load_configuration(&self) -> Result<(), NodeError> {
        let control = self.node.control();
        for node in control.cluster_nodes()? {
            self.peers.learn(address_of(node));
        }
        // Our own addresses may have changed since (ports chosen at start): the live ones win.
        self.peers.learn(self.me.clone());
        for context in control.contexts()? {
            if let Some(group) = control.context_replication_group(&context.name)? {
                self.placements.write().insert(context.name, group);
            }
        }
        Ok(())
    }

    /// Opens every group this node recorded raft state for. Answers how many.
    pub async fn reopen_groups(&self) -> Result<usize, NodeError> {
        let names = self.node.control().raft_groups()?;
        for name in &names {
            self.open_group(name).await?;
        }
        Ok(names.len())
    }

    /// Creates a group led by this node alone (formation, or a new group of one).
    pub async fn initialize_group(&self, name: &str) -> Result<Arc<Group>, NodeError> {
        let group = self.open_group(name).await?;
        let members = BTreeMap::from([(
            group.me,
            Member {
                name: self.me.name.clone(),
                role: Role::Primary,
            },
        )]);
        match group.raft.initialize(members).await {
            Ok(()) => {}
            // Initialised before (a restart during formation): nothing to do.
            Err(openraft::error::RaftError::APIError(openraft::error::InitializeError::NotAllowed(_))) => {}
            Err(e) => return Err(NodeError::Internal(format!("group {name}: cannot initialise: {e}"))),
        }
        Ok(group)
    }

    /// Proposes a control command to `group`, following its leader.
    pub async fn control(&self, group: &str, command: ControlCommand) -> Result<(), NodeError> {
        let local = self
            .group(group)
            .ok_or_else(|| NodeError::Internal(format!("group {group} is not hosted on this node")))?;
        local
            .propose_control(Command::Control(command))
            .await
            .map(|_| ())
            .map_err(NodeError::from)
    }

    /// Waits until `group` has a leader (up to a few election timeouts).
    pub async fn wait_for_leader(&self, group: &Group) -> Option<(u64, NodeName)> {
        let deadline = tokio::time::Instant::now() + self.config.replication.max_election_timeout() * 4;
        loop {
            if let Some(leader) = group.leader() {
                return Some(leader);
            }
            if tokio::time::Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Runs `request` where it must run: here if this node leads the group, else on the
    /// leader.
    pub async fn admin(&self, request: AdminRequest) -> AdminAnswer {
        let mut formed = self.formed.subscribe();
        match tokio::time::timeout(CATCH_UP_TIMEOUT, formed.wait_for(|formed| *formed)).await {
            Ok(Ok(_)) => {}
            _ => {
                return Err(WireError::Unknown(format!(
                    "{} is still forming its cluster",
                    self.me.name
                )));
            }
        }
        let group_name = match &request {
            AdminRequest::Join { .. } => ADMIN_GROUP.to_string(),
            AdminRequest::AddMember { group, .. } => group.clone(),
            AdminRequest::Manage(manage) => match manage.leader_of() {
                Some(group) => group.to_string(),
                None => return self.manage_here(None, manage).await,
            },
        };
        let group = self
            .group(&group_name)
            .ok_or_else(|| WireError::Unknown(format!("group {group_name} is not hosted on {}", self.me.name)))?;
        let Some((leader, leader_name)) = self.wait_for_leader(&group).await else {
            return Err(WireError::NoLeader(format!("group {group_name} has no leader")));
        };
        if leader != group.me {
            return self
                .peers
                .call::<_, AdminAnswer>(&leader_name, Call::Admin, &group_name, &request)
                .await
                .map_err(|e| WireError::Unknown(e.to_string()))?;
        }
        match request {
            AdminRequest::Join {
                node,
                contexts,
                restored_from,
            } => {
                self.refuse_restored(&node, restored_from.as_deref())?;
                self.join_here(node, contexts).await
            }
            AdminRequest::AddMember { group: _, node, role } => self.add_member_here(&group, &node, role).await,
            AdminRequest::Manage(manage) => self.manage_here(Some(&group), &manage).await,
        }
    }

    /// Refuses a joining node whose data was restored from a backup of this very cluster: its
    /// log and vote went back in time, which openraft cannot take.
    pub(crate) fn refuse_restored(&self, node: &NodeAddress, restored_from: Option<&str>) -> AdminAnswer {
        let ours = self
            .node
            .control()
            .cluster_identity()
            .map_err(|e| WireError::Unknown(e.to_string()))?
            .map(|identity| identity.cluster_id);
        if restored_from.is_some() && restored_from == ours.as_deref() {
            return Err(WireError::Invalid(format!(
                "node {} was restored from a backup of this cluster and cannot rejoin it under its old \
                 identity: its log and vote went back in time. Re-seed a new cluster from it \
                 (myelin restore --reseed), or give it a new name and empty data",
                node.name
            )));
        }
        Ok(())
    }

    /// As `_admin`'s leader: records the node, makes it a voter of `_admin`, then a PRIMARY of
    /// each context's group.
    pub(crate) async fn join_here(&self, node: NodeAddress, contexts: Vec<String>) -> AdminAnswer {
        let id = node_id(&node.name);
        let admin = self
            .group(ADMIN_GROUP)
            .ok_or_else(|| WireError::Unknown("no _admin here".into()))?;
        let membership = admin.raft.metrics().borrow().membership_config.clone();
        if let Some(existing) = membership.membership().get_node(&id)
            && existing.name != node.name
        {
            return Err(WireError::Invalid(format!(
                "node name {} collides with member {} (same id); choose another name",
                node.name, existing.name
            )));
        }
        self.control(ADMIN_GROUP, ControlCommand::NodeJoined(node.clone()))
            .await?;
        self.add_member_here(&admin, &node.name, Role::Primary).await?;
        for context in contexts {
            let group = self.group_of(&context).unwrap_or_else(|| context.clone());
            self.record_member(&group, &node.name, Role::Primary).await?;
            Box::pin(self.admin(AdminRequest::AddMember {
                group,
                node: node.name.clone(),
                role: Role::Primary,
            }))
            .await?;
        }
        info!(node = %node.name, "node joined the cluster");
        Ok(())
    }

    /// As `group`'s leader: adds the node as a learner, waits until it caught up, and makes a
    /// PRIMARY a voter. `_admin` has recorded the member already, so the node has opened the
    /// group (or will, and openraft retries until it answers).
    pub(crate) async fn add_member_here(&self, group: &Group, name: &str, role: Role) -> AdminAnswer {
        let _turn = group.membership_changes.lock().await;
        let id = node_id(name);
        let member = Member {
            name: name.to_string(),
            role,
        };
        let added = group
            .raft
            .add_learner(id, member, false)
            .await
            .map_err(|e| WireError::Unknown(format!("group {}: adding {name}: {e}", group.name)))?;
        // Promote only a learner that holds the log up to its addition: a voter that cannot be
        // reached would take a majority away from a small group.
        let target = added.log_id.index;
        let caught_up = group
            .raft
            .wait(Some(CATCH_UP_TIMEOUT))
            .metrics(
                |m| {
                    m.replication
                        .as_ref()
                        .and_then(|r| r.get(&id).copied().flatten())
                        .is_some_and(|matched| matched.index >= target)
                },
                "the new member caught up",
            )
            .await;
        if let Err(e) = caught_up {
            return Err(WireError::Unknown(format!(
                "group {}: {name} did not catch up within {CATCH_UP_TIMEOUT:?} ({e}); it stays a learner until a retry",
                group.name
            )));
        }
        if role.is_voter() {
            group
                .raft
                .change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([id])), false)
                .await
                .map_err(|e| WireError::Unknown(format!("group {}: promoting {name}: {e}", group.name)))?;
        }
        info!(group = %group.name, node = %name, %role, "member added");
        Ok(())
    }

    /// As `_admin`'s leader: records `name` as a member of `group` with `role`, so that every
    /// node knows and the node itself opens the group.
    async fn record_member(&self, group: &str, name: &str, role: Role) -> AdminAnswer {
        if role == Role::Secondary {
            return Err(WireError::Invalid(
                "SECONDARY (tiered storage) is not supported by Myelin yet".into(),
            ));
        }
        let recorded = self
            .node
            .control()
            .replication_group(group)
            .map_err(|e| WireError::Unknown(e.to_string()))?;
        let mut members: BTreeMap<NodeName, Role> = BTreeMap::new();
        for (member, number) in recorded.map(|record| record.members).unwrap_or_default() {
            if let Some(role) = Role::from_number(number) {
                members.insert(member, role);
            }
        }
        members.insert(name.to_string(), role);
        crate::gate::check_configuration(&members, self.config.replication.min_active_backups)
            .map_err(WireError::Invalid)?;
        self.control(
            ADMIN_GROUP,
            ControlCommand::GroupConfigured {
                group: group.to_string(),
                members,
            },
        )
        .await
        .map_err(WireError::from)
    }

    /// Sends one transaction of `context` through its group: proposed here when this node
    /// leads, else forwarded to the leader.
    async fn write(&self, context: Arc<Context>, proposal: Proposal) -> Result<Appended, NodeError> {
        let name = context.store().name().to_string();
        let group_name = self.group_of(&name).ok_or_else(|| NodeError::Cluster {
            code: myelin_node::ErrorCode::NoAxonServerForContext,
            message: format!("context {name} is in no replication group of this cluster"),
        })?;
        let group = self.group(&group_name).ok_or_else(|| NodeError::Cluster {
            code: myelin_node::ErrorCode::NoAxonServerForContext,
            message: format!("replication group {group_name} of context {name} is not hosted on this node"),
        })?;
        let (events, snapshot) = match &proposal {
            Proposal::Events(events) => (events.iter().map(|e| e.bytes().clone()).collect(), false),
            Proposal::Snapshot(s) => (vec![s.bytes().clone()], true),
        };
        match group.propose(&context, proposal).await {
            Ok(applied) => return Ok(appended(applied)),
            Err(ProposeError::NotLeader(_)) => {}
            Err(e) => return Err(e.into()),
        }
        let forwarded = Forwarded {
            context: name,
            snapshot,
            events,
        };
        for _ in 0..MAX_FORWARD_HOPS {
            let Some((leader, leader_name)) = self.wait_for_leader(&group).await else {
                return Err(NodeError::NoLeader(format!(
                    "replication group {group_name} has no leader"
                )));
            };
            if leader == group.me {
                // Became leader meanwhile: propose here after all.
                let proposal = prepare(&forwarded).map_err(NodeError::from)?;
                return group
                    .propose(&context, proposal)
                    .await
                    .map(appended)
                    .map_err(NodeError::from);
            }
            let answer: Result<Result<(i64, u64), WireError>, CallError> = self
                .peers
                .call(&leader_name, Call::Forward, &group_name, &forwarded)
                .await;
            match answer {
                Ok(Ok((first_token, count))) => {
                    return Ok(Appended {
                        first_token: first_token as u64,
                        count,
                    });
                }
                Ok(Err(WireError::NotLeader(_))) => tokio::time::sleep(Duration::from_millis(50)).await,
                Ok(Err(e)) => return Err(e.into()),
                Err(e) => {
                    return Err(NodeError::Replication(format!(
                        "the write could not be passed to {leader_name}, the leader of {group_name}: {e}"
                    )));
                }
            }
        }
        Err(NodeError::NoLeader(format!(
            "replication group {group_name}: its leadership kept moving; retry"
        )))
    }

    /// Serves a write forwarded by another node: runs it here if this node leads the group.
    pub async fn forwarded(&self, group_name: &str, forwarded: Forwarded) -> Result<(i64, u64), WireError> {
        let group = self.group(group_name).ok_or(WireError::NotLeader(None))?;
        let context = self
            .node
            .contexts()
            .resolve(&forwarded.context)
            .map_err(WireError::from)?;
        let proposal = prepare(&forwarded)?;
        match group.propose(&context, proposal).await {
            Ok(applied) => {
                let a = appended(applied);
                Ok((a.first_token as i64, a.count))
            }
            Err(ProposeError::NotLeader(leader)) => Err(WireError::NotLeader(leader)),
            Err(e) => Err(NodeError::from(e).into()),
        }
    }

    /// Stops every group (their logs are durable at every acknowledgement; this records the
    /// applied and commit positions once more).
    pub async fn shutdown(&self) {
        let groups: Vec<Arc<Group>> = self.groups.write().drain().map(|(_, g)| g).collect();
        for group in groups {
            if let Err(e) = group.raft.shutdown().await {
                warn!(group = %group.name, "raft did not stop cleanly: {e}");
            }
            crate::flush::flush_now(&group, self.node.control());
        }
    }
}

fn appended(applied: Applied) -> Appended {
    match applied {
        Applied::Stored { first_token, count } => Appended {
            first_token: first_token as u64,
            count,
        },
        Applied::Done | Applied::ContextGone | Applied::Batch(_) => Appended {
            first_token: 0,
            count: 0,
        },
    }
}

/// Re-checks forwarded events here, as if a client had sent them to this node.
fn prepare(forwarded: &Forwarded) -> Result<Proposal, WireError> {
    let invalid = |e: myelin_format::validate::InvalidEvent| WireError::Invalid(format!("malformed event: {e}"));
    if forwarded.snapshot {
        let bytes = forwarded
            .events
            .first()
            .cloned()
            .ok_or_else(|| WireError::Invalid("a forwarded snapshot without a snapshot".into()))?;
        let snapshot = PreparedEvent::snapshot(bytes).map_err(invalid)?;
        Ok(Proposal::Snapshot(snapshot.event().clone()))
    } else {
        let events = forwarded
            .events
            .iter()
            .map(|bytes| PreparedEvent::event(bytes.clone()).map_err(invalid))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Proposal::Events(events))
    }
}

impl WritePath for ClusterNode {
    fn append_events(&self, context: &Arc<Context>, events: Vec<PreparedEvent>) -> WriteFuture {
        let this = self.this.upgrade();
        let context = context.clone();
        Box::pin(async move {
            let this = this.ok_or(NodeError::ShuttingDown)?;
            if events.is_empty() {
                let head = context.store().head();
                return Ok(Appended {
                    first_token: head,
                    count: 0,
                });
            }
            this.write(context, Proposal::Events(events)).await
        })
    }

    fn append_snapshot(&self, context: &Arc<Context>, snapshot: PreparedSnapshot) -> WriteFuture {
        let this = self.this.upgrade();
        let context = context.clone();
        Box::pin(async move {
            let this = this.ok_or(NodeError::ShuttingDown)?;
            this.write(context, Proposal::Snapshot(snapshot.event().clone())).await
        })
    }
}

/// Records `group` with exactly `members` (applied again on a replay: every step is idempotent).
pub(crate) fn record_group(
    control: &myelin_control::ControlDb,
    group: &str,
    members: &BTreeMap<NodeName, Role>,
) -> Result<(), myelin_control::ControlError> {
    let recorded = match control.replication_group(group)? {
        Some(record) => record.members,
        None => {
            let list: Vec<(String, i32)> = members.iter().map(|(n, r)| (n.clone(), r.number())).collect();
            control.create_replication_group(group, &list)?;
            return Ok(());
        }
    };
    for (node, role) in members {
        control.add_replication_group_member(group, node, role.number())?;
    }
    for (node, _) in recorded {
        if !members.contains_key(&node) {
            control.remove_replication_group_member(group, &node)?;
        }
    }
    Ok(())
}

/// The effects of committed control commands on this node.
struct Effects(Weak<ClusterNode>);

impl ControlEffects for Effects {
    fn apply(&self, group: &str, command: &ControlCommand) -> Result<(), String> {
        let Some(cluster) = self.0.upgrade() else {
            return Err("the cluster is shutting down".into());
        };
        let control = cluster.node.control();
        match command {
            ControlCommand::ClusterCreated { cluster_id } => {
                control
                    .set_cluster_identity(cluster_id, &cluster.me.name)
                    .map_err(|e| e.to_string())?;
            }
            ControlCommand::NodeJoined(address) => {
                // An older address replayed from the log does not undo the recovery file.
                let address = match cluster.recovered.read().get(&address.name) {
                    Some(entry) => crate::recovery::patch(address, entry),
                    None => address.clone(),
                };
                control
                    .upsert_cluster_node(&record_of(&address))
                    .map_err(|e| e.to_string())?;
                if address.name != cluster.me.name {
                    cluster.peers.learn(address.clone());
                }
            }
            ControlCommand::GroupConfigured {
                group: configured,
                members,
            } => {
                record_group(control, configured, members).map_err(|e| e.to_string())?;
                if members.contains_key(&cluster.me.name) && cluster.group(configured).is_none() {
                    // Open it in the background: this runs inside `_admin`'s apply, and the
                    // new group's leader will retry until it answers.
                    let configured = configured.clone();
                    let weak = Arc::downgrade(&cluster);
                    tokio::spawn(async move {
                        if let Some(cluster) = weak.upgrade()
                            && let Err(e) = cluster.open_group(&configured).await
                        {
                            warn!(group = %configured, "cannot open the group this node was added to: {e}");
                        }
                    });
                }
            }
            ControlCommand::ContextPlaced { context, group: placed } => {
                // A node that does not (yet) have the context only remembers where it lives:
                // `_admin` and the group's own log are applied independently, and the group's
                // `ContextCreated` records the placement with the context on its members.
                match control.set_context_replication_group(context, placed) {
                    Ok(()) | Err(myelin_control::ControlError::NotFound { kind: "context", .. }) => {}
                    Err(e) => return Err(e.to_string()),
                }
                cluster.placements.write().insert(context.clone(), placed.clone());
            }
            ControlCommand::ContextCreated { context, metadata } => {
                // A MESSAGING_ONLY member holds no event files (it receives placeholders in
                // place of events): it records where the context lives, and nothing more.
                let stores_events = cluster.role_in(group).is_none_or(|role| role.has_storage());
                if stores_events && cluster.node.contexts().get(context).is_none() {
                    match cluster.node.create_context(context, metadata) {
                        Ok(()) | Err(NodeError::ContextExists(_)) => {}
                        Err(e) => return Err(format!("group {group}: creating context {context}: {e}")),
                    }
                }
                // Recorded with the context where it has one; in memory on a messaging-only
                // member, which keeps no record (a record would open stores at its next start).
                cluster.place(context, group).map_err(|e| e.to_string())?;
            }
            // The admin operations' own commands (membership changes, deletions).
            other => crate::admin::apply(&cluster, group, other)?,
        }
        Ok(())
    }
}

/// An address-book record of the control database as the cluster speaks of it.
pub(crate) fn address_of(node: myelin_control::ClusterNode) -> NodeAddress {
    NodeAddress {
        name: node.name,
        internal_host_name: node.internal_host_name,
        internal_port: node.internal_port,
        host_name: node.host_name,
        grpc_port: node.grpc_port,
        http_port: node.http_port,
    }
}

/// The control database's record of `address`.
pub(crate) fn record_of(address: &NodeAddress) -> myelin_control::ClusterNode {
    myelin_control::ClusterNode {
        name: address.name.clone(),
        internal_host_name: address.internal_host_name.clone(),
        internal_port: address.internal_port,
        host_name: address.host_name.clone(),
        grpc_port: address.grpc_port,
        http_port: address.http_port,
    }
}
