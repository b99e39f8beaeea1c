//! What backups need from a cluster node's replication logs, without the REST layer depending
//! on the cluster: the log-entry segment files of a group (`/v1/backup/log/filenames`) and the
//! pause of log cleaning that `createControlDbBackup` starts (CLUSTER.md §4.2, §10.6–10.7).

use std::path::PathBuf;
use std::time::Duration;

use crate::error::NodeError;

/// The log-entry segment files of one replication group on this node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicationLogFiles {
    pub group: String,
    /// Closed segments, newest first (Axon's order), absolute paths. Logically purged segments
    /// still on disk are listed: a backup may still need them.
    pub closed: Vec<PathBuf>,
    /// The segment being written, absolute path.
    pub active: PathBuf,
    /// Bytes of the active segment up to the end of the last entry known to be on disk.
    pub active_synced_bytes: u64,
}

pub trait ReplicationLogs: Send + Sync {
    /// The files of the group `name`, or of the group context `name` lives in. `Ok(None)`: the
    /// group exists but this node holds no log files for it (not a member). An unknown name is
    /// an error.
    fn log_files(&self, name: &str) -> Result<Option<ReplicationLogFiles>, NodeError>;

    /// Holds back the deletion of log files on every group for `duration` (at least), as Axon's
    /// `restartLogCleaning` does after a control-database backup.
    fn pause_log_cleaning(&self, duration: Duration);

    /// Runs log cleaning of group `name` now, keeping segments written less than `retention`
    /// ago (Axon's `cleanLogEntries`): answers the purge point after it and the files deleted.
    /// The files stay while a backup holds them (a lease, or the pause).
    fn clean_log_entries(&self, name: &str, retention: Duration) -> crate::cluster::AdminFuture<LogCleaning>;
}

/// What a forced log cleaning did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogCleaning {
    pub group: String,
    pub purged_through: Option<u64>,
    pub deleted: Vec<PathBuf>,
}
