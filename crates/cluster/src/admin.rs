//! Axon Server EE's cluster administration (CLUSTER.md §6.1–6.2) on this node's cluster: the
//! [`ClusterAdmin`] the REST and gRPC adapters call, and the effects of the control commands
//! those operations replicate.
//!
//! Where each step runs:
//!
//! * Reads (nodes, groups, status) are local: every node hosts `_admin` and so holds the
//!   cluster's configuration in its control database; a group's leader and Raft membership
//!   are known where the group is hosted.
//! * Checks run on the node that received the request, against that configuration, so that a
//!   refusal carries Axon's code and changes nothing.
//! * Each change is a sequence of small steps, each run where it must: a control command is
//!   proposed on the leader of the group whose log carries it ([`Manage::Propose`]), a Raft
//!   membership change on the group's leader ([`Manage::RemoveMember`],
//!   `AdminRequest::AddMember`), a new group is initialised on one of its PRIMARY nodes
//!   ([`Manage::Initialise`]). The node that received the request drives the sequence and
//!   reports the step that failed; every step can be run again, so a retry of the whole
//!   request finishes what a failure left half done.
//!
//! The order of the steps is chosen so that what a failure leaves is usable: `_admin` records
//! a new member before the group's leader adds it (so the node has opened the group when the
//! leader reaches it), and a member is removed from the Raft membership before `_admin` tells
//! it to close the group and delete its files (so a group never loses a voter it still counts
//! on). A group whose Raft membership differs from `_admin`'s record shows `changePending`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use myelin_control::{ControlError, validate_context_name, validate_replication_group_name};
use myelin_node::{
    AdminFuture, ClusterAdmin, ClusterNodeInfo, DeleteContext, ErrorCode, GroupMemberInfo, GroupStatusInfo, NodeError,
    ReplicationGroupInfo,
};
use openraft::ChangeMembers;
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use crate::cluster::{ADMIN_GROUP, AdminAnswer, AdminRequest, ClusterNode, WireError, record_group};
use crate::group::Group;
use crate::network::Call;
use crate::role::Role;
use crate::types::{ControlCommand, NodeAddress, NodeName, node_id};

/// How long a node waits for `_admin`'s record of a new group to open it before it opens the
/// group itself.
const OPEN_WAIT: Duration = Duration::from_secs(10);

/// How long `POST /v1/cluster` keeps trying to reach the node it was told to join.
const JOIN_WAIT: Duration = Duration::from_secs(60);

/// How long `GET /v1/cluster` waits for a node's answer before it shows it as not connected.
const PING_TIMEOUT: Duration = Duration::from_secs(1);

/// How `ClusterNode::admin` words "this node does not host the group" (a `WireError::Unknown`).
const NOT_HOSTED: &str = "is not hosted on";

/// Opening and closing groups on this node, one at a time: a member removed and added again at
/// once must not have its new log deleted by the closing of the old one.
static LIFECYCLE: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The admin API's steps that run on another node than the one that received the request.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Manage {
    /// Propose `command` in `group`'s log (on its leader), answering once it is applied there.
    Propose { group: String, command: ControlCommand },
    /// Remove `node` from `group`'s Raft membership, voter or learner (on its leader).
    RemoveMember { group: String, node: NodeName },
    /// Initialise `group` with the receiving node as its one voter (on that node).
    Initialise { group: String },
    /// `node` joins the cluster as a PRIMARY of `contexts`' groups, `None` meaning every group
    /// (on `_admin`'s leader).
    Join {
        node: NodeAddress,
        contexts: Option<Vec<String>>,
    },
    /// Answers at once: whether the node can be reached.
    Ping,
}

impl Manage {
    /// The group whose leader runs this step; `None`: the node it is sent to runs it.
    pub fn leader_of(&self) -> Option<&str> {
        match self {
            Manage::Propose { group, .. } | Manage::RemoveMember { group, .. } => Some(group),
            Manage::Join { .. } => Some(ADMIN_GROUP),
            Manage::Initialise { .. } | Manage::Ping => None,
        }
    }
}

/// A refusal with Axon's code.
fn refuse(code: ErrorCode, message: impl Into<String>) -> NodeError {
    NodeError::Cluster {
        code,
        message: message.into(),
    }
}

/// A control database refusal of a name, as Axon's `INVALID_CONTEXT_NAME`.
fn invalid_name(error: ControlError) -> NodeError {
    match error {
        ControlError::Invalid(message) => refuse(ErrorCode::InvalidContextName, message),
        other => NodeError::Control(other),
    }
}

fn parse_role(role: &str) -> Result<Role, NodeError> {
    let role: Role = role.parse().map_err(|e: String| refuse(ErrorCode::UnknownRole, e))?;
    if role == Role::Secondary {
        return Err(refuse(
            ErrorCode::UnsupportedInstruction,
            "role SECONDARY (tiered storage) is not supported by Myelin; use PRIMARY, ACTIVE_BACKUP, \
             PASSIVE_BACKUP or MESSAGING_ONLY",
        ));
    }
    Ok(role)
}

impl ClusterNode {
    /// Runs `manage` here; `group` is the group whose leader this node is, when it names one.
    pub(crate) async fn manage_here(&self, group: Option<&Arc<Group>>, manage: &Manage) -> AdminAnswer {
        match (manage, group) {
            (Manage::Ping, _) => Ok(()),
            (Manage::Initialise { group }, _) => self.initialise_here(group).await.map_err(WireError::from),
            (Manage::Propose { group, command }, _) => {
                self.control(group, command.clone()).await.map_err(WireError::from)
            }
            (Manage::RemoveMember { node, .. }, Some(group)) => remove_member_here(group, node).await,
            (Manage::Join { node, contexts }, Some(_)) => {
                let groups = match contexts {
                    Some(contexts) => contexts.clone(),
                    None => self
                        .configured_groups()
                        .map_err(WireError::from)?
                        .into_keys()
                        .filter(|group| group != ADMIN_GROUP)
                        .collect(),
                };
                Box::pin(self.join_here(node.clone(), groups)).await
            }
            (Manage::RemoveMember { group, .. }, None) => Err(WireError::Unknown(format!(
                "removing a member of {group} must run on its leader"
            ))),
            (Manage::Join { .. }, None) => Err(WireError::Unknown("a join must run on _admin's leader".into())),
        }
    }

    /// Runs `request` on the leader of `group`, through a member of the group when this node
    /// does not host it.
    async fn on_leader(&self, group: &str, request: AdminRequest) -> Result<(), NodeError> {
        // A group this node has only just opened (it was added, the leader has not reached it
        // yet) knows no leader: ask a member that does.
        if self.group(group).is_some_and(|local| local.leader().is_some()) {
            return Box::pin(self.admin(request)).await.map_err(NodeError::from);
        }
        let members = self.configured_members(group)?.unwrap_or_default();
        let mut last = format!("replication group {group} has no member this node can reach");
        for member in members.keys().filter(|member| **member != self.me().name) {
            let answer: Result<AdminAnswer, _> = self.peers().call(member, Call::Admin, group, &request).await;
            match answer {
                // That member does not host the group (yet), or knows no leader: the next may.
                Ok(Err(WireError::NoLeader(e))) => last = format!("{member}: {e}"),
                Ok(Err(WireError::Unknown(e))) if e.contains(NOT_HOSTED) => last = format!("{member}: {e}"),
                Ok(answer) => return answer.map_err(NodeError::from),
                Err(e) => last = format!("{member}: {e}"),
            }
        }
        if self.group(group).is_some() {
            return Box::pin(self.admin(request)).await.map_err(NodeError::from);
        }
        Err(NodeError::Replication(last))
    }

    async fn propose_on(&self, group: &str, command: ControlCommand) -> Result<(), NodeError> {
        self.on_leader(
            group,
            AdminRequest::Manage(Manage::Propose {
                group: group.to_string(),
                command,
            }),
        )
        .await
    }

    /// Every replication group `_admin` records, with its members (`_admin` itself is not
    /// recorded: its members are its Raft membership).
    fn configured_groups(&self) -> Result<BTreeMap<String, BTreeMap<NodeName, Role>>, NodeError> {
        let mut groups = BTreeMap::new();
        for record in self.node().control().replication_groups_configured()? {
            groups.insert(record.name, members_of(record.members));
        }
        Ok(groups)
    }

    fn configured_members(&self, group: &str) -> Result<Option<BTreeMap<NodeName, Role>>, NodeError> {
        if group == ADMIN_GROUP {
            return Ok(self.group(ADMIN_GROUP).map(|admin| raft_members(&admin)));
        }
        Ok(self
            .node()
            .control()
            .replication_group(group)?
            .map(|record| members_of(record.members)))
    }

    fn require_node(&self, name: &str) -> Result<(), NodeError> {
        match self.node().control().cluster_node(name)? {
            Some(_) => Ok(()),
            None => Err(refuse(
                ErrorCode::NoSuchNode,
                format!("node {name} is not a node of this cluster"),
            )),
        }
    }

    /// Whether this node is part of a cluster: it knows nodes, or hosts a group with members.
    fn in_cluster(&self) -> Result<bool, NodeError> {
        if !self.node().control().cluster_nodes()?.is_empty() {
            return Ok(true);
        }
        Ok(self.groups().iter().any(|group| {
            let metrics = group.raft.metrics().borrow().clone();
            metrics.membership_config.membership().nodes().next().is_some()
        }))
    }

    /// `Manage::Initialise`: this node becomes the one voter (and leader) of `group`. The group
    /// is opened by `_admin`'s record of it reaching this node; only if that takes too long is
    /// it opened here.
    async fn initialise_here(&self, group: &str) -> Result<(), NodeError> {
        let deadline = tokio::time::Instant::now() + OPEN_WAIT;
        while self.group(group).is_none() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if self.group(group).is_none() {
            let _opening = LIFECYCLE.lock().await;
            self.open_group(group).await?;
        }
        let opened = self.initialize_group(group).await?;
        match self.wait_for_leader(&opened).await {
            Some((leader, _)) if leader == opened.me => Ok(()),
            Some((_, leader)) => Err(NodeError::Replication(format!(
                "group {group} was initialised before and is led by {leader}"
            ))),
            None => Err(NodeError::NoLeader(format!(
                "group {group} did not elect {}, its only member",
                self.me().name
            ))),
        }
    }

    async fn create_group(&self, name: &str, members: Vec<GroupMemberInfo>) -> Result<(), NodeError> {
        validate_replication_group_name(name).map_err(invalid_name)?;
        if name.starts_with('_') {
            return Err(refuse(
                ErrorCode::InvalidContextName,
                format!("replication group name {name} is reserved"),
            ));
        }
        if members.is_empty() {
            return Err(refuse(
                ErrorCode::SelectNodesForContext,
                "Add at least one node to the replication group",
            ));
        }
        let mut roles = BTreeMap::new();
        for member in &members {
            let role = parse_role(&member.role)?;
            self.require_node(&member.node)?;
            if roles.insert(member.node.clone(), role).is_some() {
                return Err(NodeError::InvalidArgument(format!(
                    "node {} is named twice in replication group {name}",
                    member.node
                )));
            }
        }
        if self.configured_members(name)?.is_some() {
            return Err(refuse(
                ErrorCode::ContextExists,
                format!("replication group {name} already exists"),
            ));
        }
        // The first PRIMARY initialises the group: this node when it is one (no hop needed).
        let primaries: Vec<&NodeName> = roles
            .iter()
            .filter(|(_, role)| **role == Role::Primary)
            .map(|(node, _)| node)
            .collect();
        let Some(first) = primaries
            .iter()
            .find(|node| **node == &self.me().name)
            .or_else(|| primaries.first())
            .map(|node| (*node).clone())
        else {
            return Err(refuse(
                ErrorCode::SelectNodesForContext,
                format!("replication group {name} needs at least one PRIMARY node"),
            ));
        };
        self.propose_on(
            ADMIN_GROUP,
            ControlCommand::GroupCreated {
                group: name.to_string(),
                members: roles.clone(),
            },
        )
        .await?;
        let initialise = Manage::Initialise {
            group: name.to_string(),
        };
        let initialised = if first == self.me().name {
            self.initialise_here(name).await
        } else {
            let answer: Result<AdminAnswer, _> = self
                .peers()
                .call(&first, Call::Admin, name, &AdminRequest::Manage(initialise))
                .await;
            match answer {
                Ok(answer) => answer.map_err(NodeError::from),
                Err(e) => Err(NodeError::Replication(e.to_string())),
            }
        };
        if let Err(e) = initialised {
            return Err(NodeError::Replication(format!(
                "replication group {name} is recorded but {first} could not initialise it: {e}; \
                 delete the group and create it again"
            )));
        }
        let mut failed = Vec::new();
        for (node, role) in roles.iter().filter(|(node, _)| **node != first) {
            let added = self
                .on_leader(
                    name,
                    AdminRequest::AddMember {
                        group: name.to_string(),
                        node: node.clone(),
                        role: *role,
                    },
                )
                .await;
            if let Err(e) = added {
                failed.push(format!("{node} ({e})"));
            }
        }
        if !failed.is_empty() {
            return Err(NodeError::Replication(format!(
                "replication group {name} is created and led by {first}, but these members are not part of it \
                 yet: {}; add each again with POST /v1/replicationgroups/{name}/<node>",
                failed.join(", ")
            )));
        }
        info!(group = %name, ?roles, "replication group created");
        Ok(())
    }

    async fn add_to_group(&self, group: &str, node: &str, role: &str) -> Result<(), NodeError> {
        let role = parse_role(role)?;
        self.require_node(node)?;
        let members = self.configured_members(group)?.ok_or_else(|| {
            refuse(
                ErrorCode::ContextNotFound,
                format!("replication group {group} not found"),
            )
        })?;
        if group == ADMIN_GROUP {
            return Err(refuse(
                ErrorCode::CannotJoin,
                "nodes join _admin by joining the cluster (POST /v1/cluster)",
            ));
        }
        if let Some(current) = members.get(node)
            && *current != role
        {
            // A role is changed by removing the node and adding it again (as in Axon); its event
            // store stays, so it catches up from where it was.
            self.remove_from_group(group, node, true).await?;
        }
        self.propose_on(
            ADMIN_GROUP,
            ControlCommand::MemberAdded {
                group: group.to_string(),
                node: node.to_string(),
                role,
            },
        )
        .await?;
        self.on_leader(
            group,
            AdminRequest::AddMember {
                group: group.to_string(),
                node: node.to_string(),
                role,
            },
        )
        .await
    }

    async fn remove_from_group(&self, group: &str, node: &str, preserve_event_store: bool) -> Result<(), NodeError> {
        let members = self.configured_members(group)?.ok_or_else(|| {
            refuse(
                ErrorCode::ContextNotFound,
                format!("replication group {group} not found"),
            )
        })?;
        let Some(role) = members.get(node) else {
            return Err(refuse(
                ErrorCode::NotAMember,
                format!("node {node} is not a member of replication group {group}"),
            ));
        };
        let primaries = members.values().filter(|r| **r == Role::Primary).count();
        if members.len() == 1 || (*role == Role::Primary && primaries == 1) {
            return Err(refuse(
                ErrorCode::CannotRemoveLastNode,
                format!("node {node} is the last PRIMARY of replication group {group}; delete the group instead"),
            ));
        }
        self.on_leader(
            group,
            AdminRequest::Manage(Manage::RemoveMember {
                group: group.to_string(),
                node: node.to_string(),
            }),
        )
        .await?;
        if group != ADMIN_GROUP {
            self.propose_on(
                ADMIN_GROUP,
                ControlCommand::MemberRemoved {
                    group: group.to_string(),
                    node: node.to_string(),
                    preserve_event_store,
                },
            )
            .await?;
        }
        info!(%group, %node, preserve_event_store, "member removed");
        Ok(())
    }

    async fn delete_group(&self, name: &str, preserve_event_store: bool) -> Result<(), NodeError> {
        if name.starts_with('_') {
            return Err(refuse(
                ErrorCode::CannotDeleteInternalContext,
                format!("replication group {name} is internal and cannot be deleted"),
            ));
        }
        if self.configured_members(name)?.is_none() {
            return Err(refuse(
                ErrorCode::ContextNotFound,
                format!("replication group {name} not found"),
            ));
        }
        self.propose_on(
            ADMIN_GROUP,
            ControlCommand::GroupDeleted {
                group: name.to_string(),
                preserve_event_store,
            },
        )
        .await?;
        info!(group = %name, preserve_event_store, "replication group deleted");
        Ok(())
    }

    async fn new_context(
        &self,
        context: &str,
        group: &str,
        members: Vec<GroupMemberInfo>,
        metadata: BTreeMap<String, String>,
    ) -> Result<(), NodeError> {
        validate_context_name(context).map_err(invalid_name)?;
        if context == "." || context == ".." {
            return Err(refuse(
                ErrorCode::InvalidContextName,
                format!(
                    "context name {context:?} is not allowed: a context's files live in a directory named after it"
                ),
            ));
        }
        if self.group_of(context).is_some() || self.node().contexts().get(context).is_some() {
            return Err(refuse(
                ErrorCode::ContextExists,
                format!("context {context} already exists"),
            ));
        }
        let group = if group.is_empty() { context } else { group };
        if self.configured_members(group)?.is_none() {
            if members.is_empty() {
                return Err(refuse(
                    ErrorCode::SelectNodesForContext,
                    format!("replication group {group} does not exist; give the roles of its nodes to create it"),
                ));
            }
            self.create_group(group, members).await?;
        }
        // In the group's log first, so that every member creates the context before its first
        // events; then in `_admin`, so that every node knows where it lives.
        self.propose_on(
            group,
            ControlCommand::ContextCreated {
                context: context.to_string(),
                metadata,
            },
        )
        .await?;
        self.propose_on(
            ADMIN_GROUP,
            ControlCommand::ContextPlaced {
                context: context.to_string(),
                group: group.to_string(),
            },
        )
        .await?;
        info!(%context, %group, "context created");
        Ok(())
    }

    async fn remove_context(&self, context: &str, preserve_event_store: bool) -> Result<(), NodeError> {
        if context.starts_with('_') {
            return Err(refuse(
                ErrorCode::CannotDeleteInternalContext,
                format!("context {context} is internal and cannot be deleted"),
            ));
        }
        let Some(group) = self.group_of(context) else {
            return Err(refuse(
                ErrorCode::ContextNotFound,
                format!("context {context} not found"),
            ));
        };
        let command = ControlCommand::ContextDeleted {
            context: context.to_string(),
            preserve_event_store,
        };
        self.propose_on(&group, command.clone()).await?;
        self.propose_on(ADMIN_GROUP, command).await?;
        info!(%context, %group, preserve_event_store, "context deleted");
        Ok(())
    }

    async fn remove_cluster_node(&self, name: &str) -> Result<(), NodeError> {
        self.require_node(name)?;
        for (group, members) in self.configured_groups()? {
            if members.contains_key(name) {
                self.remove_from_group(&group, name, false).await?;
            }
        }
        let admin = self.configured_members(ADMIN_GROUP)?.unwrap_or_default();
        if admin.contains_key(name) {
            self.remove_from_group(ADMIN_GROUP, name, false).await?;
        }
        self.propose_on(ADMIN_GROUP, ControlCommand::NodeLeft(name.to_string()))
            .await?;
        info!(node = %name, "node removed from the cluster");
        Ok(())
    }

    async fn join_cluster(&self, host: String, port: u16, contexts: Option<Vec<String>>) -> Result<(), NodeError> {
        if self.in_cluster()? {
            return Err(refuse(
                ErrorCode::AlreadyMemberOfCluster,
                format!("{} is already part of a cluster", self.me().name),
            ));
        }
        // `_admin`'s leader replicates to this node as soon as it adds it: be there.
        self.open_group(ADMIN_GROUP).await?;
        let endpoint = format!("http://{host}:{port}");
        let request = AdminRequest::Manage(Manage::Join {
            node: self.me().clone(),
            contexts,
        });
        let deadline = tokio::time::Instant::now() + JOIN_WAIT;
        loop {
            let answer: Result<AdminAnswer, _> = self
                .peers()
                .call_endpoint(&endpoint, Call::Admin, ADMIN_GROUP, &request)
                .await;
            let failure = match answer {
                Ok(Ok(())) => {
                    info!(node = %self.me().name, %endpoint, "joined the cluster");
                    return Ok(());
                }
                // A refusal will not change by asking again.
                Ok(Err(e @ (WireError::Cluster { .. } | WireError::Invalid(_)))) => return Err(e.into()),
                Ok(Err(e)) => format!("{e:?}"),
                Err(e) => e.to_string(),
            };
            if tokio::time::Instant::now() >= deadline {
                return Err(refuse(
                    ErrorCode::CannotJoin,
                    format!("cannot join the cluster through {endpoint}: {failure}"),
                ));
            }
            warn!(%endpoint, "joining the cluster failed, retrying: {failure}");
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    async fn init_cluster(&self, contexts: Vec<String>) -> Result<(), NodeError> {
        for context in &contexts {
            validate_context_name(context).map_err(invalid_name)?;
        }
        if self.in_cluster()? {
            return Err(refuse(
                ErrorCode::AlreadyMemberOfCluster,
                format!("{} is already part of a cluster", self.me().name),
            ));
        }
        self.initialise(&contexts).await
    }

    async fn cluster_nodes(&self) -> Result<Vec<ClusterNodeInfo>, NodeError> {
        let control = self.node().control().clone();
        let mut groups_of: HashMap<String, Vec<String>> = HashMap::new();
        for (group, members) in self.configured_groups()? {
            for node in members.keys() {
                groups_of.entry(node.clone()).or_default().push(group.clone());
            }
        }
        for node in self.configured_members(ADMIN_GROUP)?.unwrap_or_default().keys() {
            groups_of
                .entry(node.clone())
                .or_default()
                .insert(0, ADMIN_GROUP.to_string());
        }
        let mut pings = tokio::task::JoinSet::new();
        let nodes = control.cluster_nodes()?;
        for node in &nodes {
            if node.name == self.me().name {
                continue;
            }
            let (peers, name) = (self.peers().clone(), node.name.clone());
            pings.spawn(async move {
                let request = AdminRequest::Manage(Manage::Ping);
                let call = peers.call::<_, AdminAnswer>(&name, Call::Admin, ADMIN_GROUP, &request);
                let reached = matches!(tokio::time::timeout(PING_TIMEOUT, call).await, Ok(Ok(Ok(()))));
                (name, reached)
            });
        }
        let mut connected: HashMap<String, bool> = HashMap::new();
        while let Some(answer) = pings.join_next().await {
            if let Ok((name, reached)) = answer {
                connected.insert(name, reached);
            }
        }
        Ok(nodes
            .into_iter()
            .map(|node| ClusterNodeInfo {
                connected: node.name == self.me().name || connected.get(&node.name).copied().unwrap_or(false),
                replication_groups: groups_of.remove(&node.name).unwrap_or_default(),
                name: node.name,
                host_name: node.host_name,
                grpc_port: node.grpc_port,
                http_port: node.http_port,
                internal_host_name: node.internal_host_name,
                internal_grpc_port: node.internal_port,
            })
            .collect())
    }

    fn group_infos(&self) -> Result<Vec<ReplicationGroupInfo>, NodeError> {
        let control = self.node().control();
        let mut configured = self.configured_groups()?;
        if let Some(admin) = self.configured_members(ADMIN_GROUP)? {
            configured.insert(ADMIN_GROUP.to_string(), admin);
        }
        let mut contexts: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (context, group) in self.placements() {
            contexts.entry(group).or_default().insert(context);
        }
        let mut infos = Vec::new();
        for (name, members) in configured {
            let mut names = contexts.remove(&name).unwrap_or_default();
            if name != ADMIN_GROUP {
                names.extend(control.contexts_of_replication_group(&name)?);
            }
            let hosted = self.group(&name);
            infos.push(ReplicationGroupInfo {
                leader: hosted.as_ref().and_then(|g| g.leader()).map(|(_, leader)| leader),
                change_pending: hosted.as_ref().is_some_and(|g| raft_members(g) != members),
                members: members
                    .iter()
                    .map(|(node, role)| GroupMemberInfo {
                        node: node.clone(),
                        role: role.name().to_string(),
                    })
                    .collect(),
                contexts: names.into_iter().collect(),
                name,
            });
        }
        Ok(infos)
    }
}

/// `(node, role number)` pairs as recorded, as roles (numbers that are no role are skipped).
fn members_of(recorded: Vec<(String, i32)>) -> BTreeMap<NodeName, Role> {
    recorded
        .into_iter()
        .filter_map(|(node, number)| Some((node, Role::from_number(number)?)))
        .collect()
}

/// A group's members as its Raft membership has them. A voter counts as PRIMARY whatever role
/// it carries, a learner with its role: what the comparison with `_admin`'s record needs.
fn raft_members(group: &Group) -> BTreeMap<NodeName, Role> {
    let metrics = group.raft.metrics().borrow().clone();
    let membership = metrics.membership_config.membership();
    let voters: BTreeSet<u64> = membership.voter_ids().collect();
    membership
        .nodes()
        .map(|(id, member)| {
            let role = if voters.contains(id) {
                Role::Primary
            } else {
                member.role
            };
            (member.name.clone(), role)
        })
        .collect()
}

/// As `group`'s leader: takes `node` out of the Raft membership. Nothing to do when it is not
/// in it (a retry after the `_admin` step failed).
async fn remove_member_here(group: &Group, node: &str) -> AdminAnswer {
    let id = node_id(node);
    let membership = group.raft.metrics().borrow().membership_config.membership().clone();
    if membership.get_node(&id).is_none() {
        return Ok(());
    }
    let change = if membership.voter_ids().any(|voter| voter == id) {
        ChangeMembers::RemoveVoters(BTreeSet::from([id]))
    } else {
        ChangeMembers::RemoveNodes(BTreeSet::from([id]))
    };
    group
        .raft
        .change_membership(change, false)
        .await
        .map(|_| ())
        .map_err(|e| WireError::Unknown(format!("group {}: removing {node}: {e}", group.name)))
}

/// The effects of the admin operations' control commands on this node (see `types`). A
/// refusal by the control database of one node's copy of the configuration is logged, not
/// returned: returning it would stop the group on this node for good, since the entry is
/// applied again at every restart.
pub(crate) fn apply(cluster: &Arc<ClusterNode>, group: &str, command: &ControlCommand) -> Result<(), String> {
    let control = cluster.node().control();
    let me = cluster.me().name.clone();
    let outcome = match command {
        ControlCommand::GroupCreated {
            group: created,
            members,
        } => {
            let recorded = record_group(control, created, members);
            if members.contains_key(&me) {
                spawn_open(cluster, created);
            }
            recorded
        }
        ControlCommand::MemberAdded {
            group: joined,
            node,
            role,
        } => {
            let recorded = control
                .add_replication_group_member(joined, node, role.number())
                .map(|_| ());
            if *node == me {
                spawn_open(cluster, joined);
            }
            recorded
        }
        ControlCommand::MemberRemoved {
            group: left,
            node,
            preserve_event_store,
        } => {
            let recorded = control.remove_replication_group_member(left, node).map(|_| ());
            if *node == me {
                spawn_close(cluster, left, *preserve_event_store, false);
            }
            recorded
        }
        ControlCommand::GroupDeleted {
            group: deleted,
            preserve_event_store,
        } => {
            let placed: Vec<String> = cluster
                .placements()
                .into_iter()
                .filter(|(_, g)| g == deleted)
                .map(|(context, _)| context)
                .collect();
            for context in placed {
                cluster.forget_placement(&context);
                if cluster.node().contexts().get(&context).is_none()
                    && let Err(e) = control.delete_context(&context)
                {
                    warn!(%context, "cannot forget the context of deleted group {deleted}: {e}");
                }
            }
            spawn_close(cluster, deleted, *preserve_event_store, true);
            Ok(())
        }
        ControlCommand::ContextDeleted {
            context,
            preserve_event_store,
        } => {
            // A member deletes the context when its group's log says so, after every event the
            // log holds for it: `_admin`'s copy may be applied first, on a member still behind.
            let home = cluster.group_of(context);
            let member = home.as_deref().is_some_and(|home| cluster.group(home).is_some());
            if group != ADMIN_GROUP || !member {
                delete_local_context(cluster, context, *preserve_event_store);
            }
            cluster.forget_placement(context);
            Ok(())
        }
        ControlCommand::NodeLeft(node) => {
            if *node == me {
                warn!("this node was removed from the cluster; wipe its data directory before using it again");
            }
            control.delete_cluster_node(node).map(|_| ())
        }
        // The commands `cluster` applies itself never reach here.
        ControlCommand::NodeJoined(_)
        | ControlCommand::GroupConfigured { .. }
        | ControlCommand::ContextPlaced { .. }
        | ControlCommand::ContextCreated { .. } => Ok(()),
    };
    match outcome {
        Ok(()) => Ok(()),
        Err(e @ (ControlError::Invalid(_) | ControlError::NotFound { .. } | ControlError::AlreadyExists { .. })) => {
            warn!(%group, ?command, "control command applied with a refusal: {e}");
            Ok(())
        }
        Err(e) => Err(format!("group {group}: {command:?}: {e}")),
    }
}

/// Deletes `context` on this node if it has it: clients or not (the cluster decided), its files
/// unless preserved — or kept after all while a backup lease holds them.
fn delete_local_context(cluster: &ClusterNode, context: &str, preserve_event_store: bool) {
    let node = cluster.node();
    if node.contexts().get(context).is_none() {
        if let Err(e) = node.control().delete_context(context) {
            warn!(%context, "cannot forget the deleted context: {e}");
        }
        return;
    }
    let how = DeleteContext {
        preserve_event_store,
        force: true,
    };
    match node.delete_context(context, how) {
        Ok(()) => {}
        Err(NodeError::BackupLeaseLive(_)) => {
            warn!(%context, "a backup lease is live: the context is closed but its files are kept");
            let keep = DeleteContext {
                preserve_event_store: true,
                force: true,
            };
            if let Err(e) = node.delete_context(context, keep) {
                warn!(%context, "cannot close the deleted context: {e}");
            }
        }
        Err(e) => warn!(%context, "cannot delete the context here: {e}"),
    }
}

/// Opens `group` on this node in the background (this runs inside `_admin`'s apply; the
/// group's leader retries until the node answers).
fn spawn_open(cluster: &Arc<ClusterNode>, group: &str) {
    let (weak, group) = (Arc::downgrade(cluster), group.to_string());
    tokio::spawn(async move {
        let _opening = LIFECYCLE.lock().await;
        if let Some(cluster) = weak.upgrade()
            && cluster.group(&group).is_none()
            && let Err(e) = cluster.open_group(&group).await
        {
            warn!(%group, "cannot open the group this node was added to: {e}");
        }
    });
}

/// Closes `group` on this node: its Raft stops now (it is no longer reachable through this
/// node), then in the background its log and recorded Raft state are deleted, and the group's
/// contexts with their files unless preserved; with `forget`, the group's record too.
fn spawn_close(cluster: &Arc<ClusterNode>, group: &str, preserve_event_store: bool, forget: bool) {
    let taken = cluster.take_group(group);
    let (weak, group) = (Arc::downgrade(cluster), group.to_string());
    tokio::spawn(async move {
        let _closing = LIFECYCLE.lock().await;
        let Some(cluster) = weak.upgrade() else {
            return;
        };
        let placed: Vec<String> = cluster
            .node()
            .control()
            .contexts_of_replication_group(&group)
            .unwrap_or_default();
        if let Some(taken) = taken {
            if let Err(e) = taken.raft.shutdown().await {
                warn!(%group, "raft did not stop cleanly: {e}");
            }
            drop(taken);
            // The flusher records the group's state once more at its next tick, then sees the
            // Raft stopped and ends: let it, so that it does not record again what is deleted
            // below.
            let sync = Duration::from_millis(cluster.config().replication.sync_interval_ms);
            tokio::time::sleep(sync * 2 + Duration::from_millis(200)).await;
            let dir = cluster.config().replication.log_storage_folder.join(&group);
            match std::fs::remove_dir_all(&dir) {
                Ok(()) => info!(%group, "deleted the group's log in {}", dir.display()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => warn!(%group, "cannot delete the group's log in {}: {e}", dir.display()),
            }
            if let Err(e) = cluster.node().control().delete_replication_group_state(&group) {
                warn!(%group, "cannot forget the group's raft state: {e}");
            }
        }
        let closer = cluster.clone();
        let deleted = tokio::task::spawn_blocking(move || {
            for context in placed {
                delete_local_context(&closer, &context, preserve_event_store);
            }
            if forget && let Err(e) = closer.node().control().delete_replication_group(&group) {
                warn!(%group, "cannot forget the deleted group: {e}");
            }
            group
        })
        .await;
        match deleted {
            Ok(group) => info!(%group, preserve_event_store, "group closed on this node"),
            Err(e) => warn!("closing a group failed: {e}"),
        }
    });
}

impl ClusterAdmin for ClusterNode {
    fn node_name(&self) -> String {
        self.me().name.clone()
    }

    fn nodes(&self) -> AdminFuture<Vec<ClusterNodeInfo>> {
        let this = self.strong();
        Box::pin(async move { this.ok_or(NodeError::ShuttingDown)?.cluster_nodes().await })
    }

    fn init(&self, contexts: Vec<String>) -> AdminFuture<()> {
        let this = self.strong();
        Box::pin(async move { this.ok_or(NodeError::ShuttingDown)?.init_cluster(contexts).await })
    }

    fn join(&self, internal_host: String, internal_port: u16, contexts: Option<Vec<String>>) -> AdminFuture<()> {
        let this = self.strong();
        Box::pin(async move {
            this.ok_or(NodeError::ShuttingDown)?
                .join_cluster(internal_host, internal_port, contexts)
                .await
        })
    }

    fn remove_node(&self, name: String) -> AdminFuture<()> {
        let this = self.strong();
        Box::pin(async move { this.ok_or(NodeError::ShuttingDown)?.remove_cluster_node(&name).await })
    }

    fn replication_groups(&self) -> AdminFuture<Vec<ReplicationGroupInfo>> {
        let this = self.strong();
        Box::pin(async move { this.ok_or(NodeError::ShuttingDown)?.group_infos() })
    }

    fn create_replication_group(&self, name: String, members: Vec<GroupMemberInfo>) -> AdminFuture<()> {
        let this = self.strong();
        Box::pin(async move { this.ok_or(NodeError::ShuttingDown)?.create_group(&name, members).await })
    }

    fn add_node_to_replication_group(&self, group: String, node: String, role: String) -> AdminFuture<()> {
        let this = self.strong();
        Box::pin(async move {
            this.ok_or(NodeError::ShuttingDown)?
                .add_to_group(&group, &node, &role)
                .await
        })
    }

    fn remove_node_from_replication_group(
        &self,
        group: String,
        node: String,
        preserve_event_store: bool,
    ) -> AdminFuture<()> {
        let this = self.strong();
        Box::pin(async move {
            this.ok_or(NodeError::ShuttingDown)?
                .remove_from_group(&group, &node, preserve_event_store)
                .await
        })
    }

    fn delete_replication_group(&self, name: String, preserve_event_store: bool) -> AdminFuture<()> {
        let this = self.strong();
        Box::pin(async move {
            this.ok_or(NodeError::ShuttingDown)?
                .delete_group(&name, preserve_event_store)
                .await
        })
    }

    fn create_context(
        &self,
        context: String,
        group: String,
        members: Vec<GroupMemberInfo>,
        metadata: BTreeMap<String, String>,
    ) -> AdminFuture<()> {
        let this = self.strong();
        Box::pin(async move {
            this.ok_or(NodeError::ShuttingDown)?
                .new_context(&context, &group, members, metadata)
                .await
        })
    }

    fn delete_context(&self, context: String, preserve_event_store: bool) -> AdminFuture<()> {
        let this = self.strong();
        Box::pin(async move {
            this.ok_or(NodeError::ShuttingDown)?
                .remove_context(&context, preserve_event_store)
                .await
        })
    }

    fn status(&self) -> Vec<GroupStatusInfo> {
        self.groups().iter().map(|group| self.group_status(group)).collect()
    }
}

impl ClusterNode {
    /// Raft's view of `group` here, from its metrics.
    fn group_status(&self, group: &Group) -> GroupStatusInfo {
        let metrics = group.raft.metrics().borrow().clone();
        let membership = metrics.membership_config.membership();
        let name_of = |id: &u64| {
            membership
                .get_node(id)
                .map(|member| member.name.clone())
                .unwrap_or_else(|| id.to_string())
        };
        let last = metrics.last_log_index.unwrap_or(0);
        GroupStatusInfo {
            group: group.name.clone(),
            state: format!("{:?}", metrics.state),
            role: raft_members(group)
                .get(&self.me().name)
                .map(|role| role.name())
                .unwrap_or("NONE")
                .to_string(),
            term: metrics.current_term,
            leader: metrics.current_leader.as_ref().map(name_of),
            last_log_index: metrics.last_log_index,
            applied_index: metrics.last_applied.map(|applied| applied.index),
            lag: metrics
                .replication
                .as_ref()
                .map(|replication| {
                    replication
                        .iter()
                        .map(|(id, matched)| (name_of(id), last.saturating_sub(matched.map_or(0, |m| m.index))))
                        .collect()
                })
                .unwrap_or_default(),
        }
    }
}
