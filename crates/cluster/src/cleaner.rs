//! Log compaction that never outruns a backup (CLUSTER.md §2.5, §10.6). Every hour (the first
//! run an hour after start, as Axon schedules it), for each group on this node:
//!
//! 1. the purge point is the last index of the newest closed segment such that it and every
//!    older one hold only entries the control database records as applied, and were last
//!    written more than `log-retention-hours` ago (Axon's rule, with "applied" meaning
//!    *recorded*, so a restored backup never lacks an entry it must re-apply);
//! 2. a snapshot is taken up to there (cheap: a manifest), openraft purges the log to it;
//! 3. the files go only if no backup lease is live and no cleaning pause lasts; otherwise they
//!    stay, still listed for backups, and a later run deletes them.
//!
//! Followers' progress is not considered, as in Axon and Raft: a member behind the purge point
//! is caught up by snapshot (`transfer`).

use std::path::PathBuf;
use std::sync::Weak;
use std::time::{Duration, SystemTime};

use myelin_node::NodeError;
use tracing::{info, warn};

use crate::cluster::ClusterNode;

/// How often the cleaner runs (Axon: every hour, first after an hour).
pub const CLEANING_INTERVAL: Duration = Duration::from_secs(3600);

/// How long a cleaning run waits for openraft to take the snapshot and purge.
const STEP_TIMEOUT: Duration = Duration::from_secs(30);

/// What one cleaning run of a group did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Cleaned {
    /// The purge point openraft holds after the run (openraft's index).
    pub purged_through: Option<u64>,
    /// Segment files deleted by this run.
    pub deleted: Vec<PathBuf>,
}

impl ClusterNode {
    /// Runs the cleaning of `group` now, keeping segments written less than `retention` ago.
    pub async fn clean_log(&self, group: &str, retention: Duration) -> Result<Cleaned, NodeError> {
        let (Some(local), Some(log)) = (self.group(group), self.log(group)) else {
            return Err(NodeError::Cluster {
                code: myelin_node::ErrorCode::ContextNotFound,
                message: format!("replication group {group} is not hosted on this node"),
            });
        };
        let applied = self.node().control().raft_state(group)?.and_then(|s| s.applied);
        let cutoff = SystemTime::now().checked_sub(retention);
        let mut upto = None;
        if let (Some(applied), Some(cutoff)) = (applied, cutoff) {
            for segment in log.closed_segments() {
                let old_enough = segment.modified.is_some_and(|modified| modified <= cutoff);
                if segment.last_index > applied.index || !old_enough {
                    break;
                }
                upto = Some(segment.last_index);
            }
        }
        if let Some(upto) = upto
            && log.purged().is_none_or(|purged| purged.index < upto)
        {
            let raft = &local.raft;
            let failed = |e: &dyn std::fmt::Display| NodeError::Internal(format!("group {group}: log cleaning: {e}"));
            raft.trigger().snapshot().await.map_err(|e| failed(&e))?;
            raft.wait(Some(STEP_TIMEOUT))
                .metrics(
                    |m| m.snapshot.is_some_and(|s| s.index >= upto),
                    "a snapshot covering the purge",
                )
                .await
                .map_err(|e| failed(&e))?;
            raft.trigger().purge_log(upto).await.map_err(|e| failed(&e))?;
            raft.wait(Some(STEP_TIMEOUT))
                .metrics(|m| m.purged.is_some_and(|p| p.index >= upto), "the log purged")
                .await
                .map_err(|e| failed(&e))?;
        }
        let deleted = log.remove_purged_files().map_err(NodeError::Internal)?;
        if !deleted.is_empty() {
            info!(%group, files = deleted.len(), "log segments deleted");
        }
        Ok(Cleaned {
            purged_through: log.purged().map(|p| p.index),
            deleted,
        })
    }
}

/// Starts the hourly cleaning of every group of `cluster` (when compaction is enabled).
pub fn spawn(cluster: Weak<ClusterNode>, retention: Duration) {
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + CLEANING_INTERVAL, CLEANING_INTERVAL);
        loop {
            ticks.tick().await;
            let Some(cluster) = cluster.upgrade() else {
                return;
            };
            for group in cluster.groups() {
                if let Err(e) = cluster.clean_log(&group.name, retention).await {
                    warn!(group = %group.name, "log cleaning failed: {e}");
                }
            }
        }
    });
}
