//! The cluster's configuration, with Axon Server EE's property names and defaults
//! (`axoniq.axonserver.autocluster.*`, `axoniq.axonserver.replication.*`; CLUSTER.md §6.4).

use std::path::PathBuf;
use std::time::Duration;

/// `axoniq.axonserver.replication.*`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicationConfig {
    /// `log-storage-folder` (Axon: `./log`): one directory per replication group below it.
    pub log_storage_folder: PathBuf,
    /// `segment-size` (16 MiB).
    pub segment_size_bytes: u64,
    /// `min-election-timeout` (1000 ms).
    pub min_election_timeout_ms: u64,
    /// `max-election-timeout` (2500 ms).
    pub max_election_timeout_ms: u64,
    /// `heartbeat-timeout` (300 ms).
    pub heartbeat_timeout_ms: u64,
    /// `min-active-backups` (1).
    pub min_active_backups: usize,
    /// `log-compaction-enabled` (true).
    pub log_compaction_enabled: bool,
    /// `log-retention-hours` (1).
    pub log_retention_hours: u64,
    /// `sync-interval` (1000 ms): how often the commit and applied indexes are recorded.
    pub sync_interval_ms: u64,
}

impl Default for ReplicationConfig {
    fn default() -> Self {
        ReplicationConfig {
            log_storage_folder: PathBuf::from("./log"),
            segment_size_bytes: 16 * 1024 * 1024,
            min_election_timeout_ms: 1000,
            max_election_timeout_ms: 2500,
            heartbeat_timeout_ms: 300,
            min_active_backups: 1,
            log_compaction_enabled: true,
            log_retention_hours: 1,
            sync_interval_ms: 1000,
        }
    }
}

impl ReplicationConfig {
    /// Checks the relations openraft and Axon need; the message names the property.
    pub fn validate(&self) -> Result<(), String> {
        let p = "axoniq.axonserver.replication";
        if self.heartbeat_timeout_ms == 0 || self.heartbeat_timeout_ms >= self.min_election_timeout_ms {
            return Err(format!(
                "{p}.heartbeat-timeout ({} ms) must be above 0 and below {p}.min-election-timeout ({} ms)",
                self.heartbeat_timeout_ms, self.min_election_timeout_ms
            ));
        }
        if self.min_election_timeout_ms >= self.max_election_timeout_ms {
            return Err(format!(
                "{p}.min-election-timeout ({} ms) must be below {p}.max-election-timeout ({} ms)",
                self.min_election_timeout_ms, self.max_election_timeout_ms
            ));
        }
        // An entry takes its data + 21 bytes and a segment has a 5-byte header and may need a
        // 4-byte end marker: 1 KiB leaves room for small entries, anything smaller is a typo.
        if !(1024..=i32::MAX as u64).contains(&self.segment_size_bytes) {
            return Err(format!(
                "{p}.segment-size ({} bytes) must be between 1 KiB and 2 GiB",
                self.segment_size_bytes
            ));
        }
        if self.sync_interval_ms == 0 {
            return Err(format!("{p}.sync-interval must be above 0 ms"));
        }
        Ok(())
    }

    pub fn max_election_timeout(&self) -> Duration {
        Duration::from_millis(self.max_election_timeout_ms)
    }
}

/// Formation (`axoniq.axonserver.autocluster.*`) and the internal port's guard.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClusterConfig {
    /// `autocluster.first`: `host[:internal-port]` of the node that initialises the cluster.
    /// The node whose own internal host and port these are initialises it; every other node
    /// joins it on a clean start.
    pub autocluster_first: Option<String>,
    /// `autocluster.contexts`: contexts created on the first node and joined as PRIMARY by the
    /// others.
    pub autocluster_contexts: Vec<String>,
    /// `accesscontrol.internal-token`: required on node-to-node calls when set.
    pub internal_token: Option<String>,
    pub replication: ReplicationConfig,
}
