//! Forming a cluster with Axon Server EE's properties: on a clean start the node named by
//! `autocluster.first` initialises `_admin` and the groups of `autocluster.contexts`; every
//! other node joins it and becomes a PRIMARY of those groups. A node that was in a cluster
//! before just reopens its groups.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use myelin_node::NodeError;
use tracing::{debug, info, warn};

use crate::admin::Manage;
use crate::cluster::{ADMIN_GROUP, AdminAnswer, AdminRequest, ClusterNode};
use crate::network::Call;
use crate::role::Role;
use crate::types::ControlCommand;

/// How long a node waits before it tries again to record its addresses in `_admin`.
const ANNOUNCE_RETRY: Duration = Duration::from_secs(2);

/// How a node found itself at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Formation {
    /// It had groups before and reopened them.
    Resumed { groups: usize },
    /// It initialised a new cluster.
    Initialised,
    /// It joined the cluster of `first`.
    Joined { first: String },
    /// No `autocluster.first` and no groups: it waits for `init` or a join by the admin API.
    Standalone,
}

impl ClusterNode {
    /// Whether `first` (`host[:port]`) names this node's internal address.
    fn is_first(&self, first: &str) -> bool {
        let (host, port) = split_host_port(first, self.me().internal_port);
        host == self.me().internal_host_name && port == self.me().internal_port
    }

    /// Brings this node into its cluster (see the module doc). Joining retries until the
    /// first node answers: nodes of one cluster may start in any order.
    pub async fn start(self: &Arc<Self>) -> Result<Formation, NodeError> {
        let formation = self.form().await;
        // Admin requests wait for this; after a failure they are answered (and fail) too.
        self.set_formed();
        if matches!(formation, Ok(Formation::Resumed { .. })) {
            self.announce();
        }
        let replication = &self.config().replication;
        if replication.log_compaction_enabled {
            let retention = Duration::from_secs(replication.log_retention_hours.saturating_mul(3600));
            crate::cleaner::spawn(Arc::downgrade(self), retention);
        }
        formation
    }

    async fn form(self: &Arc<Self>) -> Result<Formation, NodeError> {
        self.recover_addresses()?;
        self.load_configuration()?;
        if let Some(identity) = self.node().control().cluster_identity()?
            && identity.restored_from.as_deref() == Some(identity.cluster_id.as_str())
            && !self.node().control().raft_groups()?.is_empty()
        {
            return Err(NodeError::Cluster {
                code: myelin_node::ErrorCode::CannotJoin,
                message: format!(
                    "this node was restored from a backup of cluster {} and would rejoin it with its log and \
                     vote gone back in time; re-seed a new cluster from it (myelin restore --reseed) or \
                     restore every node of the cluster (myelin restore --whole-cluster)",
                    identity.cluster_id
                ),
            });
        }
        let groups = self.reopen_groups().await?;
        if groups > 0 {
            return Ok(Formation::Resumed { groups });
        }
        let Some(first) = self.config().autocluster_first.clone() else {
            return Ok(Formation::Standalone);
        };
        if self.is_first(&first) {
            self.initialise(&self.config().autocluster_contexts.clone()).await?;
            return Ok(Formation::Initialised);
        }
        self.join(&first).await?;
        Ok(Formation::Joined { first })
    }

    /// After a restart, records this node's live addresses in `_admin` when its record differs
    /// (ports chosen at start, a move by a recovery file), so that every node's address book
    /// follows. Retries until `_admin` takes it or the node stops.
    fn announce(self: &Arc<Self>) {
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                let Some(node) = weak.upgrade() else {
                    return;
                };
                let me = node.me().clone();
                let recorded = node
                    .node()
                    .control()
                    .cluster_nodes()
                    .ok()
                    .and_then(|nodes| nodes.into_iter().find(|n| n.name == me.name))
                    .map(crate::cluster::address_of);
                // The recovery file wrote this node's book alone: `_admin` must hear it too.
                if recorded.as_ref() == Some(&me) && !node.recovered(&me.name) {
                    return;
                }
                let request = AdminRequest::Manage(Manage::Propose {
                    group: ADMIN_GROUP.to_string(),
                    command: ControlCommand::NodeJoined(me),
                });
                match node.admin(request).await {
                    Ok(()) => {
                        info!("this node's addresses are recorded in _admin");
                        return;
                    }
                    Err(e) => debug!("recording this node's addresses in _admin: {e:?}; retrying"),
                }
                drop(node);
                tokio::time::sleep(ANNOUNCE_RETRY).await;
            }
        });
    }

    /// `init-cluster`: `_admin` and a group per context, led by this node alone.
    pub async fn initialise(&self, contexts: &[String]) -> Result<(), NodeError> {
        self.initialize_group(ADMIN_GROUP).await?;
        self.wait_until_leading(ADMIN_GROUP).await?;
        self.control(
            ADMIN_GROUP,
            ControlCommand::ClusterCreated {
                cluster_id: new_cluster_id()?,
            },
        )
        .await?;
        self.control(ADMIN_GROUP, ControlCommand::NodeJoined(self.me().clone()))
            .await?;
        for context in contexts {
            self.control(
                ADMIN_GROUP,
                ControlCommand::GroupConfigured {
                    group: context.clone(),
                    members: BTreeMap::from([(self.me().name.clone(), Role::Primary)]),
                },
            )
            .await?;
            self.initialize_group(context).await?;
            self.wait_until_leading(context).await?;
            self.control(
                ADMIN_GROUP,
                ControlCommand::ContextPlaced {
                    context: context.clone(),
                    group: context.clone(),
                },
            )
            .await?;
            self.control(
                context,
                ControlCommand::ContextCreated {
                    context: context.clone(),
                    metadata: BTreeMap::new(),
                },
            )
            .await?;
            self.seal_existing_data(context).await?;
        }
        info!(node = %self.me().name, ?contexts, "cluster initialised");
        Ok(())
    }

    /// A group initialised over stores that hold data already (a node turned into a cluster,
    /// or a re-seed from a backup) has a log that does not reach back to those events. So the
    /// log is purged at once behind a snapshot: every member that joins is caught up by
    /// snapshot (the events it lacks) before it applies a single entry, as Axon's
    /// `force-snapshot-on-join` does.
    async fn seal_existing_data(&self, group: &str) -> Result<(), NodeError> {
        let holds_data = self
            .node()
            .contexts()
            .get(group)
            .is_some_and(|context| context.store().head() > 0 || context.store().snapshot_head() > 0);
        if !holds_data {
            return Ok(());
        }
        let local = self
            .group(group)
            .ok_or_else(|| NodeError::Internal(format!("group {group} is not open")))?;
        let last = local.raft.metrics().borrow().last_applied.map(|l| l.index).unwrap_or(0);
        let failed = |e: &dyn std::fmt::Display| NodeError::Internal(format!("group {group}: sealing its data: {e}"));
        local.raft.trigger().snapshot().await.map_err(|e| failed(&e))?;
        local
            .raft
            .wait(Some(Duration::from_secs(30)))
            .metrics(
                |m| m.snapshot.is_some_and(|s| s.index >= last),
                "a snapshot of the data",
            )
            .await
            .map_err(|e| failed(&e))?;
        local.raft.trigger().purge_log(last).await.map_err(|e| failed(&e))?;
        info!(%group, through = last, "existing data sealed behind a snapshot: members join by snapshot");
        Ok(())
    }

    async fn wait_until_leading(&self, group: &str) -> Result<(), NodeError> {
        let local = self
            .group(group)
            .ok_or_else(|| NodeError::Internal(format!("group {group} is not open")))?;
        match self.wait_for_leader(&local).await {
            Some((leader, _)) if leader == local.me => Ok(()),
            _ => Err(NodeError::NoLeader(format!(
                "group {group} did not elect this node, its only member"
            ))),
        }
    }

    /// Joins the cluster whose first node is `first`, retrying until it answers.
    async fn join(&self, first: &str) -> Result<(), NodeError> {
        // The first node replicates `_admin` to this one as soon as it adds it: be there.
        self.open_group(ADMIN_GROUP).await?;
        let (host, port) = split_host_port(first, self.me().internal_port);
        let endpoint = format!("http://{host}:{port}");
        let restored_from = self
            .node()
            .control()
            .cluster_identity()?
            .and_then(|identity| identity.restored_from);
        let request = AdminRequest::Join {
            node: self.me().clone(),
            contexts: self.config().autocluster_contexts.clone(),
            restored_from,
        };
        let mut delay = Duration::from_millis(200);
        loop {
            let answer: Result<AdminAnswer, _> = self
                .peers()
                .call_endpoint(&endpoint, Call::Admin, ADMIN_GROUP, &request)
                .await;
            match answer {
                Ok(Ok(())) => {
                    info!(node = %self.me().name, %first, "joined the cluster");
                    return Ok(());
                }
                Ok(Err(e)) => warn!(%first, "joining the cluster failed, retrying: {e:?}"),
                Err(e) => warn!(%first, "cannot reach the first node yet, retrying: {e}"),
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(2));
        }
    }
}

/// A new cluster's id: 128 random bits, hex.
fn new_cluster_id() -> Result<String, NodeError> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).map_err(|e| NodeError::Internal(format!("no random cluster id: {e}")))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// `host[:port]` with `default_port` when there is none.
pub fn split_host_port(address: &str, default_port: u16) -> (String, u16) {
    match address.rsplit_once(':') {
        Some((host, port)) => match port.parse::<u16>() {
            Ok(port) => (host.to_string(), port),
            Err(_) => (address.to_string(), default_port),
        },
        None => (address.to_string(), default_port),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_first_node_without_a_port_means_the_default_internal_port() {
        assert_eq!(split_host_port("node-1", 8224), ("node-1".into(), 8224));
        assert_eq!(split_host_port("127.0.0.2:9000", 8224), ("127.0.0.2".into(), 9000));
        assert_eq!(split_host_port("host:notaport", 8224), ("host:notaport".into(), 8224));
    }
}
