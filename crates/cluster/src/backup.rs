//! What a backup of a cluster node needs from its replication logs (CLUSTER.md §10.6–10.7):
//! the log-entry segment files of a group, by group or context name, and the pause of log
//! cleaning after a control-database backup.

use std::time::Duration;

use myelin_node::{AdminFuture, ErrorCode, LogCleaning, NodeError, ReplicationLogFiles, ReplicationLogs};

use crate::cluster::ClusterNode;

impl ReplicationLogs for ClusterNode {
    fn log_files(&self, name: &str) -> Result<Option<ReplicationLogFiles>, NodeError> {
        // A group's own name first; else the group of the context of that name (Axon's
        // parameter is called `context` "for compatibility").
        let group = if self.group(name).is_some() {
            name.to_string()
        } else if let Some(group) = self.group_of(name) {
            group
        } else if self.node().control().replication_group(name)?.is_some() {
            name.to_string()
        } else {
            return Err(NodeError::Cluster {
                code: ErrorCode::ContextNotFound,
                message: format!("no replication group or context {name} in this cluster"),
            });
        };
        // A member that stores no events still has a log; only a node outside the group has
        // nothing to list.
        Ok(self.log(&group).map(|log| log.files()))
    }

    fn pause_log_cleaning(&self, duration: Duration) {
        self.cleaning().pause(duration);
    }

    fn clean_log_entries(&self, name: &str, retention: Duration) -> AdminFuture<LogCleaning> {
        let this = self.arc();
        let name = name.to_string();
        Box::pin(async move {
            let this = this.ok_or(NodeError::ShuttingDown)?;
            let group = if this.group(&name).is_some() {
                name
            } else {
                this.group_of(&name).unwrap_or(name)
            };
            let cleaned = this.clean_log(&group, retention).await?;
            Ok(LogCleaning {
                group,
                purged_through: cleaned.purged_through,
                deleted: cleaned.deleted,
            })
        })
    }
}
