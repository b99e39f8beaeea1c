//! Axon Server EE's cluster administration (CLUSTER.md §6.1–6.2) on this node's cluster: the
//! [`myelin_node::ClusterAdmin`] the REST and gRPC adapters call (`views` for what they read,
//! `operations` for what they change), and the effects of the control commands those
//! operations replicate (`effects`). This file holds the steps that run on other nodes and the
//! routing that gets them there.
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

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use myelin_control::ControlError;
use myelin_node::{ErrorCode, NodeError};
use openraft::ChangeMembers;
use serde::{Deserialize, Serialize};

use crate::cluster::{ADMIN_GROUP, AdminAnswer, AdminRequest, ClusterNode, WireError};
use crate::group::Group;
use crate::network::Call;
use crate::role::Role;
use crate::types::{ControlCommand, NodeAddress, NodeName, node_id};

mod effects;
mod operations;
mod views;

pub(crate) use effects::apply;

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
        /// The cluster the node's data was restored from, if any: that cluster refuses it.
        restored_from: Option<String>,
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
            (
                Manage::Join {
                    node,
                    contexts,
                    restored_from,
                },
                Some(_),
            ) => {
                self.refuse_restored(node, restored_from.as_deref())?;
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
