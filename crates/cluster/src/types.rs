//! The openraft type configuration: what a log entry carries, what applying one answers, and
//! what identifies a node (its Axon name) and describes a member (its role).

use std::collections::BTreeMap;
use std::fmt;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::role::Role;

/// A node is known by its Axon name (`axoniq.axonserver.name`), as in Axon Server.
pub type NodeName = String;

/// openraft's id of a node: a 64-bit hash of its name. openraft 0.9 only accepts `Copy` ids;
/// the name travels in [`Member`], and a join whose name hashes to a member's id is refused.
pub type NodeId = u64;

/// The id of the node called `name`.
pub fn node_id(name: &str) -> NodeId {
    xxhash_rust::xxh3::xxh3_64(name.as_bytes())
}

/// What the Raft membership says about a member: its name and role. Addresses live in the
/// address book (replicated through `_admin`), so moving a node to another host needs no quorum.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Member {
    pub name: NodeName,
    pub role: Role,
}

/// Where a node can be reached and what it serves, as `_admin` records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeAddress {
    pub name: NodeName,
    pub internal_host_name: String,
    pub internal_port: u16,
    pub host_name: String,
    pub grpc_port: u16,
    pub http_port: u16,
}

impl NodeAddress {
    /// `http://host:port` of the internal port.
    pub fn internal_endpoint(&self) -> String {
        format!("http://{}:{}", self.internal_host_name, self.internal_port)
    }
}

/// One replicated transaction of a context: events (or one snapshot) with the token the leader
/// gave its first event. Axon's `TransactionWithToken`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transaction {
    pub context: String,
    pub token: i64,
    pub events: Vec<Bytes>,
}

/// Changes to the cluster's configuration or to a group's contexts, applied on every member.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ControlCommand {
    /// `_admin`'s first entry: the cluster's identity. A node restored from a backup of this
    /// cluster may not join it again under its old name (docs/BACKUP.md).
    ClusterCreated { cluster_id: String },
    /// `_admin`: a node joined the cluster (or its addresses changed).
    NodeJoined(NodeAddress),
    /// `_admin`: a replication group exists with these members.
    GroupConfigured {
        group: String,
        members: BTreeMap<NodeName, Role>,
    },
    /// `_admin`: a context lives in a replication group.
    ContextPlaced { context: String, group: String },
    /// In a group's own log: the context is created on every member that stores events.
    ContextCreated {
        context: String,
        metadata: BTreeMap<String, String>,
    },
    /// `_admin`: a new replication group with its members; each member opens it (the admin
    /// API's counterpart of `GroupConfigured`, applied through `crate::admin`).
    GroupCreated {
        group: String,
        members: BTreeMap<NodeName, Role>,
    },
    /// `_admin`: `node` is a member of `group` with `role` from now on; the node opens the group.
    MemberAdded { group: String, node: NodeName, role: Role },
    /// `_admin`: `node` left `group`; the node closes it and deletes its log, and the files of
    /// the group's contexts unless `preserve_event_store`.
    MemberRemoved {
        group: String,
        node: NodeName,
        preserve_event_store: bool,
    },
    /// `_admin`: the group and its contexts are gone; members close it and delete its log, and
    /// the contexts' files unless `preserve_event_store`.
    GroupDeleted { group: String, preserve_event_store: bool },
    /// In the context's group's log, then in `_admin`: the context is gone.
    ContextDeleted {
        context: String,
        preserve_event_store: bool,
    },
    /// `_admin`: the node left the cluster.
    NodeLeft(NodeName),
}

/// The application data of a normal log entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// Axon's `Append.EVENT`.
    Events(Transaction),
    /// Transactions of concurrent clients in one entry, in token order (`myelin.Append.EVENTS`,
    /// docs/FORMAT.md): one fsync per member for all of them.
    EventBatch(Vec<Transaction>),
    /// Axon's `Append.SNAPSHOT`.
    Snapshot(Transaction),
    Control(ControlCommand),
    /// What a MESSAGING_ONLY member stores in place of events (Axon's `DummyEntry`).
    Dummy,
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Command::Events(t) => write!(f, "events {}@{}+{}", t.context, t.token, t.events.len()),
            Command::EventBatch(batch) => write!(f, "{} transactions", batch.len()),
            Command::Snapshot(t) => write!(f, "snapshot {}@{}", t.context, t.token),
            Command::Control(c) => write!(f, "control {c:?}"),
            Command::Dummy => f.write_str("dummy"),
        }
    }
}

/// What applying an entry answered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Applied {
    /// Events or a snapshot were stored from this token on.
    Stored { first_token: i64, count: u64 },
    /// A control command or an entry with nothing to store.
    Done,
    /// Events of a context deleted earlier in the log (a write that raced the deletion): not
    /// stored anywhere, the same on every member.
    ContextGone,
    /// What each transaction of an [`Command::EventBatch`] answered, in its order.
    Batch(Vec<Applied>),
}

/// The snapshot a group builds: small, because the events themselves are sent incrementally
/// (CLUSTER.md §10.5). The log id and membership are openraft's snapshot meta.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Manifest {
    /// The group's contexts, with their metadata.
    pub contexts: BTreeMap<String, BTreeMap<String, String>>,
    /// Next event token per context at the snapshot's last log id.
    pub event_heads: BTreeMap<String, i64>,
    /// Next snapshot token per context.
    pub snapshot_heads: BTreeMap<String, i64>,
    /// `_admin` only: the cluster's configuration at that point.
    pub admin: Option<AdminState>,
}

/// What `_admin`'s log has built: the address book, the groups and where contexts live.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct AdminState {
    pub cluster_id: Option<String>,
    pub nodes: Vec<NodeAddress>,
    pub groups: BTreeMap<String, BTreeMap<NodeName, Role>>,
    pub placements: BTreeMap<String, String>,
}

openraft::declare_raft_types!(
    /// Myelin's Raft types.
    pub TypeConfig:
        D = Command,
        R = Applied,
        NodeId = NodeId,
        Node = Member,
        SnapshotData = Manifest,
);

pub type Entry = openraft::Entry<TypeConfig>;
pub type LogId = openraft::LogId<NodeId>;
pub type Vote = openraft::Vote<NodeId>;
pub type Membership = openraft::Membership<NodeId, Member>;
pub type StoredMembership = openraft::StoredMembership<NodeId, Member>;
pub type StorageError = openraft::StorageError<NodeId>;
pub type Raft = openraft::Raft<TypeConfig>;
pub type VoteRequest = openraft::raft::VoteRequest<NodeId>;
pub type VoteResponse = openraft::raft::VoteResponse<NodeId>;
