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

    /// The election timeouts handed to openraft, so that a follower stands within Axon's
    /// window.
    ///
    /// Axon's follower stands a random `[min-election-timeout, max-election-timeout)` after the
    /// last heartbeat. A follower of openraft 0.9 that knew a leader waits its leader lease
    /// (openraft's `election_timeout_max`) *plus* a random `[election_timeout_min,
    /// election_timeout_max)` (`engine_config.rs`, `raft_core.rs::handle_tick_election`):
    /// Axon's values passed as they are made it stand 3.5–5 s after the leader died. So
    /// openraft gets half of `max-election-timeout` as its maximum (lease 1250 ms by default)
    /// and as its minimum whatever brings the sum up to `min-election-timeout`, but never the
    /// heartbeat or less (openraft's rule): with Axon's defaults a follower stands after
    /// 1551–2500 ms, inside Axon's 1000–2500 ms, and a candidate that lost retries after
    /// 301–1250 ms. Answers `(election_timeout_min, election_timeout_max)` in milliseconds.
    pub fn raft_election_timeouts(&self) -> (u64, u64) {
        let heartbeat = self.heartbeat_timeout_ms;
        let max = (self.max_election_timeout_ms / 2).max(heartbeat + 2);
        let min = self
            .min_election_timeout_ms
            .saturating_sub(max)
            .max(heartbeat + 1)
            .min(max - 1);
        (min, max)
    }

    /// How long a follower trusts a leader it heard from: openraft's leader lease.
    pub fn leader_lease(&self) -> Duration {
        Duration::from_millis(self.raft_election_timeouts().1)
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
    /// `recoveryfile` (Axon: `recovery.json` in the start directory): new addresses for the
    /// nodes of a cluster that moved (`crate::recovery`). `None`: none is looked for.
    pub recovery_file: Option<PathBuf>,
    pub replication: ReplicationConfig,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a follower of openraft 0.9 waits after the last heartbeat before it stands, at the
    /// extremes: lease + [min, max).
    fn standing_window(r: &ReplicationConfig) -> (u64, u64) {
        let (min, max) = r.raft_election_timeouts();
        (max + min, max + max)
    }

    #[test]
    fn with_axons_defaults_a_follower_stands_inside_axons_window() {
        let r = ReplicationConfig::default();
        assert_eq!(r.raft_election_timeouts(), (301, 1250));
        let (earliest, latest) = standing_window(&r);
        assert!(earliest >= r.min_election_timeout_ms, "{earliest}");
        assert!(latest <= r.max_election_timeout_ms, "{latest}");
    }

    #[test]
    fn the_timeouts_stay_valid_for_openraft_whatever_axons_settings() {
        for (heartbeat, min, max) in [
            (300, 1000, 2500),
            (50, 150, 300),
            (100, 101, 102),
            (10, 5000, 6000),
            (1, 2, 3),
        ] {
            let r = ReplicationConfig {
                heartbeat_timeout_ms: heartbeat,
                min_election_timeout_ms: min,
                max_election_timeout_ms: max,
                ..ReplicationConfig::default()
            };
            r.validate().unwrap();
            let (raft_min, raft_max) = r.raft_election_timeouts();
            assert!(
                heartbeat < raft_min && raft_min < raft_max,
                "{heartbeat} {min} {max} -> {raft_min} {raft_max}"
            );
            let config = openraft::Config {
                heartbeat_interval: heartbeat,
                election_timeout_min: raft_min,
                election_timeout_max: raft_max,
                ..Default::default()
            };
            config.validate().unwrap();
            if max >= 2 * heartbeat + 4 && min > max / 2 + heartbeat {
                let (earliest, latest) = standing_window(&r);
                assert!(
                    earliest >= min && latest <= max,
                    "{heartbeat} {min} {max}: {earliest}..{latest}"
                );
            }
        }
    }
}
