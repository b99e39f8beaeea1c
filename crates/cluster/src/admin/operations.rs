//! The admin operations that change the cluster, as sequences of steps run where they must
//! (see the module above): checks first, against this node's copy of the configuration, then
//! each step in the order that leaves a usable cluster if a later one fails.

use std::collections::BTreeMap;
use std::time::Duration;

use myelin_control::{validate_context_name, validate_replication_group_name};
use myelin_node::{ErrorCode, GroupMemberInfo, NodeError};
use tracing::{info, warn};

use super::{JOIN_WAIT, Manage, invalid_name, parse_role, refuse};
use crate::cluster::{ADMIN_GROUP, AdminAnswer, AdminRequest, ClusterNode, WireError};
use crate::network::Call;
use crate::role::Role;
use crate::types::{ControlCommand, NodeName};

impl ClusterNode {
    pub(super) async fn create_group(&self, name: &str, members: Vec<GroupMemberInfo>) -> Result<(), NodeError> {
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
        self.check_backups(&roles)?;
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

    /// Refuses a membership whose active backups could never acknowledge a write
    /// (`0 < #ACTIVE_BACKUP < min-active-backups`), naming the property.
    fn check_backups(&self, members: &BTreeMap<NodeName, Role>) -> Result<(), NodeError> {
        crate::gate::check_backups(members, self.config().replication.min_active_backups)
            .map_err(|message| refuse(ErrorCode::InvalidPropertyValue, message))
    }

    pub(super) async fn add_to_group(&self, group: &str, node: &str, role: &str) -> Result<(), NodeError> {
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
        let mut after = members.clone();
        after.insert(node.to_string(), role);
        self.check_backups(&after)?;
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

    pub(super) async fn remove_from_group(
        &self,
        group: &str,
        node: &str,
        preserve_event_store: bool,
    ) -> Result<(), NodeError> {
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
        let mut after = members.clone();
        after.remove(node);
        self.check_backups(&after)?;
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

    pub(super) async fn delete_group(&self, name: &str, preserve_event_store: bool) -> Result<(), NodeError> {
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

    pub(super) async fn new_context(
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

    pub(super) async fn remove_context(&self, context: &str, preserve_event_store: bool) -> Result<(), NodeError> {
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

    pub(super) async fn remove_cluster_node(&self, name: &str) -> Result<(), NodeError> {
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

    pub(super) async fn join_cluster(
        &self,
        host: String,
        port: u16,
        contexts: Option<Vec<String>>,
    ) -> Result<(), NodeError> {
        if self.in_cluster()? {
            return Err(refuse(
                ErrorCode::AlreadyMemberOfCluster,
                format!("{} is already part of a cluster", self.me().name),
            ));
        }
        // `_admin`'s leader replicates to this node as soon as it adds it: be there.
        self.open_group(ADMIN_GROUP).await?;
        let endpoint = format!("http://{host}:{port}");
        let restored_from = self
            .node()
            .control()
            .cluster_identity()?
            .and_then(|identity| identity.restored_from);
        let request = AdminRequest::Manage(Manage::Join {
            node: self.me().clone(),
            contexts,
            restored_from,
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

    pub(super) async fn init_cluster(&self, contexts: Vec<String>) -> Result<(), NodeError> {
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
}
