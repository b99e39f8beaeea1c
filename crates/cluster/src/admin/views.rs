//! What the admin API reads, answered from this node alone: the nodes (with a reachability
//! ping), the replication groups as `_admin` records them with what the hosted groups' Raft
//! says (leader, pending changes), each hosted group's Raft status; and [`ClusterAdmin`] over
//! all of it.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use myelin_node::{
    AdminFuture, ClusterAdmin, ClusterNodeInfo, GroupMemberInfo, GroupStatusInfo, NodeError, ReplicationGroupInfo,
};

use super::{Manage, PING_TIMEOUT, raft_members};
use crate::cluster::{ADMIN_GROUP, AdminAnswer, AdminRequest, ClusterNode};
use crate::group::Group;
use crate::network::Call;

impl ClusterNode {
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

    fn client_node_for(&self, context: &str) -> Option<ClusterNodeInfo> {
        let group = self.group_of(context)?;
        let local = self.group(&group)?;
        let members = raft_members(&local);
        if members
            .get(&self.me().name)
            .is_none_or(|role| role.allows_client_connect())
        {
            return None;
        }
        // Prefer the leader among the members that serve clients, then the others by name.
        let leader = local.leader().map(|(_, name)| name);
        let mut candidates: Vec<&String> = members
            .iter()
            .filter(|(_, role)| role.allows_client_connect())
            .map(|(name, _)| name)
            .collect();
        candidates.sort_by_key(|name| (Some(*name) != leader.as_ref(), (*name).clone()));
        candidates.into_iter().find_map(|name| {
            let address = self.peers().address(name)?;
            Some(ClusterNodeInfo {
                name: address.name.clone(),
                host_name: address.host_name.clone(),
                grpc_port: address.grpc_port,
                http_port: address.http_port,
                internal_host_name: address.internal_host_name.clone(),
                internal_grpc_port: address.internal_port,
                connected: true,
                replication_groups: vec![group.clone()],
            })
        })
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
