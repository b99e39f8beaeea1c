//! The effects of the admin operations' control commands on each node, in log order: its copy
//! of the configuration, and opening or closing groups and contexts it gains or loses.

use std::sync::Arc;
use std::time::Duration;

use myelin_control::ControlError;
use myelin_node::{DeleteContext, NodeError};
use tracing::{info, warn};

use super::LIFECYCLE;
use crate::cluster::{ADMIN_GROUP, ClusterNode, record_group};
use crate::types::ControlCommand;

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
        ControlCommand::ClusterCreated { .. }
        | ControlCommand::NodeJoined(_)
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
