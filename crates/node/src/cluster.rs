//! What the node's adapters (REST, gRPC admin) may ask of the cluster, without depending on it:
//! the cluster layer implements [`ClusterAdmin`] and installs it with [`crate::Node::set_cluster`].
//! A node that is not clustered has none, and cluster operations answer `NOT_RUNNING_IN_CLUSTER`.
//!
//! Roles travel as Axon's names (`PRIMARY`, `ACTIVE_BACKUP`, `PASSIVE_BACKUP`, `MESSAGING_ONLY`,
//! `SECONDARY`); the cluster parses and refuses them.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;

use crate::error::NodeError;

/// A boxed future answering `T` or a node error.
pub type AdminFuture<T> = Pin<Box<dyn Future<Output = Result<T, NodeError>> + Send + 'static>>;

/// A node of the cluster as `GET /v1/cluster` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterNodeInfo {
    pub name: String,
    pub host_name: String,
    pub grpc_port: u16,
    pub http_port: u16,
    pub internal_host_name: String,
    pub internal_grpc_port: u16,
    /// Whether this node can reach it now (always true for itself).
    pub connected: bool,
    /// The replication groups it is a member of.
    pub replication_groups: Vec<String>,
}

/// One member of a replication group: node name and role name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupMemberInfo {
    pub node: String,
    pub role: String,
}

/// A replication group as `GET /v1/public/replicationgroups` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicationGroupInfo {
    pub name: String,
    /// The leader's node name, when this node knows one.
    pub leader: Option<String>,
    pub members: Vec<GroupMemberInfo>,
    pub contexts: Vec<String>,
    /// Whether the group's Raft membership differs from what `_admin` records for it (a change
    /// under way, or one that failed midway and needs a retry). Known only on a node hosting
    /// the group; `false` elsewhere.
    pub change_pending: bool,
}

/// Raft's view of one group on this node, for health and metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupStatusInfo {
    pub group: String,
    /// `Leader`, `Follower`, `Candidate` or `Learner`.
    pub state: String,
    /// This node's role in the group.
    pub role: String,
    pub term: u64,
    pub leader: Option<String>,
    pub last_log_index: Option<u64>,
    pub applied_index: Option<u64>,
    /// On the leader: per member, how many entries it trails the leader's last log index.
    pub lag: Vec<(String, u64)>,
}

/// The cluster operations of Axon Server EE's admin API (CLUSTER.md §6.1–6.2).
pub trait ClusterAdmin: Send + Sync {
    /// This node's name.
    fn node_name(&self) -> String;

    /// `GET /v1/cluster`: every node of the cluster.
    fn nodes(&self) -> AdminFuture<Vec<ClusterNodeInfo>>;

    /// `POST /v1/context/init`: makes this node a cluster of one with `_admin` and `contexts`.
    fn init(&self, contexts: Vec<String>) -> AdminFuture<()>;

    /// `POST /v1/cluster`: this node joins the cluster of the node at `internal_host:port`, as a
    /// PRIMARY of `contexts`' groups; `None` means every group of the cluster (Axon's default
    /// when the request names no context and does not say `noContexts`).
    fn join(&self, internal_host: String, internal_port: u16, contexts: Option<Vec<String>>) -> AdminFuture<()>;

    /// `DELETE /v1/cluster/{name}`: removes a node from every group and from the cluster.
    fn remove_node(&self, name: String) -> AdminFuture<()>;

    /// `GET /v1/public/replicationgroups`.
    fn replication_groups(&self) -> AdminFuture<Vec<ReplicationGroupInfo>>;

    /// `POST /v1/replicationgroups`: a new group with its members.
    fn create_replication_group(&self, name: String, members: Vec<GroupMemberInfo>) -> AdminFuture<()>;

    /// `POST /v1/replicationgroups/{group}/{node}?role=`.
    fn add_node_to_replication_group(&self, group: String, node: String, role: String) -> AdminFuture<()>;

    /// `DELETE /v1/replicationgroups/{group}/{node}?preserveEventStore=`.
    fn remove_node_from_replication_group(
        &self,
        group: String,
        node: String,
        preserve_event_store: bool,
    ) -> AdminFuture<()>;

    /// `DELETE /v1/replicationgroups/{name}?preserveEventStore=`.
    fn delete_replication_group(&self, name: String, preserve_event_store: bool) -> AdminFuture<()>;

    /// `POST /v1/context` on a cluster: the context in `group` (created with `members` if it
    /// does not exist).
    fn create_context(
        &self,
        context: String,
        group: String,
        members: Vec<GroupMemberInfo>,
        metadata: BTreeMap<String, String>,
    ) -> AdminFuture<()>;

    /// `DELETE /v1/context/{name}` on a cluster.
    fn delete_context(&self, context: String, preserve_event_store: bool) -> AdminFuture<()>;

    /// Raft's view of every group this node hosts.
    fn status(&self) -> Vec<GroupStatusInfo>;

    /// Where a client of `context` should connect, when not here: this node's role in the
    /// context's group does not serve clients (an ACTIVE or PASSIVE backup, Axon's
    /// `allowsClientConnect`), and a member that does (PRIMARY or MESSAGING_ONLY) is known.
    /// `None`: stay on this node.
    fn client_node_for(&self, context: &str) -> Option<ClusterNodeInfo>;
}
