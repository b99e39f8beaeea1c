//! Myelin's configuration: built-in defaults, then a properties file, then environment variables,
//! then command-line flags, each overriding the one before.
//!
//! Axon Server's property names are accepted wherever Axon has one, with Axon's defaults, so an
//! existing `axonserver.properties` keeps working. Axon Server is a Spring Boot application with
//! hundreds of properties; unknown `axoniq.*` keys are therefore accepted and ignored (logged at
//! DEBUG), while an unknown `myelin.*` key is an error, because it can only be a typo of ours.
//!
//! Nothing here touches the process: the environment and working directory are passed in, so
//! tests can inject them.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use myelin_grpc::EventStoreLimits;
use myelin_store::{Durability, StoreConfig};

use crate::properties;
use crate::units::{format_bytes, parse_data_size};

/// Property names. Axon Server's own names are the ones starting with `axoniq.` or `server.`.
pub mod key {
    pub const EVENT_STORAGE: &str = "axoniq.axonserver.event.storage";
    pub const SNAPSHOT_STORAGE: &str = "axoniq.axonserver.snapshot.storage";
    pub const EVENT_SEGMENT_SIZE: &str = "axoniq.axonserver.event.segment-size";
    pub const SNAPSHOT_SEGMENT_SIZE: &str = "axoniq.axonserver.snapshot.segment-size";
    pub const EVENT_FORCE_INTERVAL: &str = "axoniq.axonserver.event.force-interval";
    pub const SNAPSHOT_FORCE_INTERVAL: &str = "axoniq.axonserver.snapshot.force-interval";
    pub const CONTROLDB_PATH: &str = "axoniq.axonserver.controldb-path";
    pub const CONTROLDB_BACKUP_LOCATION: &str = "axoniq.axonserver.controldb-backup-location";
    pub const GRPC_PORT: &str = "axoniq.axonserver.port";
    pub const HTTP_PORT: &str = "server.port";
    pub const NAME: &str = "axoniq.axonserver.name";
    pub const HOSTNAME: &str = "axoniq.axonserver.hostname";
    pub const MAX_MESSAGE_SIZE: &str = "axoniq.axonserver.max-message-size";
    pub const CONTEXTS: &str = "myelin.contexts";
    pub const DURABILITY: &str = "myelin.durability";
    pub const DURABILITY_INTERVAL_MS: &str = "myelin.durability.interval-ms";
    pub const MAX_BATCH_BYTES: &str = "myelin.max-batch-bytes";
    pub const MAX_TRANSACTION_BYTES: &str = "myelin.max-transaction-bytes";
    pub const SEQUENCE_CACHE_ENTRIES: &str = "myelin.sequence-cache-entries";
    pub const INDEX_CACHE_BYTES: &str = "myelin.index-cache-bytes";
    pub const OPEN_SEGMENT_FILES: &str = "myelin.open-segment-files";
    pub const MAX_PENDING_APPEND_BYTES: &str = "myelin.max-pending-append-bytes";
    pub const BIND_ADDRESS: &str = "myelin.bind-address";
    pub const ACCESS_CONTROL_ENABLED: &str = "axoniq.axonserver.accesscontrol.enabled";
    pub const ACCESS_CONTROL_TOKEN: &str = "axoniq.axonserver.accesscontrol.token";
    pub const ACCESS_CONTROL_ADMIN_TOKEN: &str = "axoniq.axonserver.accesscontrol.admin-token";
    pub const DISK_SPACE_THRESHOLD: &str = "myelin.disk-space-threshold";
    pub const INTERNAL_HOSTNAME: &str = "axoniq.axonserver.internal-hostname";
    pub const INTERNAL_PORT: &str = "axoniq.axonserver.internal-port";
    pub const INTERNAL_TOKEN: &str = "axoniq.axonserver.accesscontrol.internal-token";
    pub const AUTOCLUSTER_FIRST: &str = "axoniq.axonserver.autocluster.first";
    pub const AUTOCLUSTER_CONTEXTS: &str = "axoniq.axonserver.autocluster.contexts";
    pub const CLUSTER_ENABLED: &str = "myelin.cluster.enabled";
    pub const RECOVERY_FILE: &str = "axoniq.axonserver.recoveryfile";
    pub const LOG_STORAGE_FOLDER: &str = "axoniq.axonserver.replication.log-storage-folder";
    pub const LOG_SEGMENT_SIZE: &str = "axoniq.axonserver.replication.segment-size";
    pub const MIN_ELECTION_TIMEOUT: &str = "axoniq.axonserver.replication.min-election-timeout";
    pub const MAX_ELECTION_TIMEOUT: &str = "axoniq.axonserver.replication.max-election-timeout";
    pub const HEARTBEAT_TIMEOUT: &str = "axoniq.axonserver.replication.heartbeat-timeout";
    pub const MIN_ACTIVE_BACKUPS: &str = "axoniq.axonserver.replication.min-active-backups";
    pub const LOG_COMPACTION_ENABLED: &str = "axoniq.axonserver.replication.log-compaction-enabled";
    pub const LOG_RETENTION_HOURS: &str = "axoniq.axonserver.replication.log-retention-hours";
    pub const REPLICATION_SYNC_INTERVAL: &str = "axoniq.axonserver.replication.sync-interval";
}

/// Every property Myelin reads. The README's configuration table mirrors this list (a test
/// checks that every key appears there).
pub const PROPERTIES: &[&str] = &[
    key::EVENT_STORAGE,
    key::SNAPSHOT_STORAGE,
    key::EVENT_SEGMENT_SIZE,
    key::SNAPSHOT_SEGMENT_SIZE,
    key::EVENT_FORCE_INTERVAL,
    key::SNAPSHOT_FORCE_INTERVAL,
    key::CONTROLDB_PATH,
    key::CONTROLDB_BACKUP_LOCATION,
    key::GRPC_PORT,
    key::HTTP_PORT,
    key::NAME,
    key::HOSTNAME,
    key::MAX_MESSAGE_SIZE,
    key::CONTEXTS,
    key::DURABILITY,
    key::DURABILITY_INTERVAL_MS,
    key::MAX_BATCH_BYTES,
    key::MAX_TRANSACTION_BYTES,
    key::SEQUENCE_CACHE_ENTRIES,
    key::INDEX_CACHE_BYTES,
    key::OPEN_SEGMENT_FILES,
    key::MAX_PENDING_APPEND_BYTES,
    key::BIND_ADDRESS,
    key::ACCESS_CONTROL_ENABLED,
    key::ACCESS_CONTROL_TOKEN,
    key::ACCESS_CONTROL_ADMIN_TOKEN,
    key::DISK_SPACE_THRESHOLD,
    key::INTERNAL_HOSTNAME,
    key::INTERNAL_PORT,
    key::INTERNAL_TOKEN,
    key::AUTOCLUSTER_FIRST,
    key::AUTOCLUSTER_CONTEXTS,
    key::CLUSTER_ENABLED,
    key::RECOVERY_FILE,
    key::LOG_STORAGE_FOLDER,
    key::LOG_SEGMENT_SIZE,
    key::MIN_ELECTION_TIMEOUT,
    key::MAX_ELECTION_TIMEOUT,
    key::HEARTBEAT_TIMEOUT,
    key::MIN_ACTIVE_BACKUPS,
    key::LOG_COMPACTION_ENABLED,
    key::LOG_RETENTION_HOURS,
    key::REPLICATION_SYNC_INTERVAL,
];

/// The file name Axon Server reads (it sets `spring.config.name=axonserver`).
pub const PROPERTIES_FILE_NAME: &str = "axonserver.properties";

/// Axon Server's storage default for events, snapshots and the control database.
const DEFAULT_DATA_DIR: &str = "./data";
/// Free disk space below which health reports WARN.
const DEFAULT_DISK_SPACE_THRESHOLD_BYTES: u64 = 1024 * 1024 * 1024;
/// Axon Server's `StorageProperties.segmentSize`.
const DEFAULT_SEGMENT_SIZE_BYTES: u64 = 256 * 1024 * 1024;
/// Axon Server's `StorageProperties.forceInterval`.
const DEFAULT_SYNC_INTERVAL_MS: u64 = 1000;
const MAX_SYNC_INTERVAL_MS: u64 = 3_600_000;
/// gRPC's default inbound message limit, which Axon Server keeps.
const DEFAULT_MAX_MESSAGE_SIZE_BYTES: u64 = 4 * 1024 * 1024;
/// Axon Server rejects segment and message sizes above `Integer.MAX_VALUE`.
const AXON_MAX_SIZE_BYTES: u64 = i32::MAX as u64;

/// Where a setting came from, for error messages and for precedence between aliases.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    File { path: PathBuf, line: usize },
    Env { var: String },
    Flag { flag: &'static str },
}

impl Origin {
    /// Higher overrides lower.
    fn rank(&self) -> u8 {
        match self {
            Origin::File { .. } => 1,
            Origin::Env { .. } => 2,
            Origin::Flag { .. } => 3,
        }
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::File { path, line } => write!(f, "{}:{line}", path.display()),
            Origin::Env { var } => write!(f, "environment variable {var}"),
            Origin::Flag { flag } => write!(f, "command-line flag {flag}"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read configuration file {}: {source}", path.display())]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{}:{line}: {reason}", path.display())]
    Malformed { path: PathBuf, line: usize, reason: String },
    #[error(
        "unknown property `{key}` (from {origin}); Myelin's own properties are: {}",
        known_myelin_keys()
    )]
    UnknownKey { key: String, origin: Origin },
    #[error("bad value `{value}` for `{key}` (from {origin}): expected {expected}")]
    BadValue {
        key: &'static str,
        value: String,
        origin: Origin,
        expected: String,
    },
    /// A value the property's own range admits but the store cannot use (a segment smaller
    /// than its header and roll marker, say); `reason` is the store's, naming its field.
    #[error("the settings give the {store} store a value it cannot use: {reason}")]
    StoreBounds { store: &'static str, reason: String },
    /// The replication settings do not fit together (a heartbeat not below the election
    /// timeout, say); `reason` names the properties.
    #[error("{reason}{}", origin.as_ref().map(|o| format!(" (from {o})")).unwrap_or_default())]
    Cluster { reason: String, origin: Option<Origin> },
    #[error("environment variables {first} and {second} both set `{key}`, to different values")]
    ConflictingEnv {
        key: &'static str,
        first: String,
        second: String,
    },
}

fn known_myelin_keys() -> String {
    PROPERTIES
        .iter()
        .filter(|k| k.starts_with("myelin."))
        .copied()
        .collect::<Vec<_>>()
        .join(", ")
}

/// What the command line contributes, already parsed (argument parsing lives in `main`).
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// `--config FILE`: read this file instead of looking for `axonserver.properties`.
    pub config_file: Option<PathBuf>,
    /// `--data DIR`: event storage, snapshot storage and control database all under `DIR`.
    pub data_dir: Option<PathBuf>,
    /// `--set key=value`, in command-line order; applied after `--data`, so they win over it.
    pub sets: Vec<(String, String)>,
}

/// Settings for one of a context's two stores.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StorageConfig {
    /// Parent directory; each context has a subdirectory named after it (Axon's layout).
    pub storage_dir: PathBuf,
    pub segment_size_bytes: u64,
    /// How often appends are synced when `durability` is `interval` (Axon's `force-interval`).
    pub sync_interval_ms: u64,
}

/// `myelin.durability`: whether an append is acknowledged before or after it is synced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DurabilityMode {
    Fsync,
    Interval,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreKind {
    Events,
    Snapshots,
}

/// The resolved configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub events: StorageConfig,
    pub snapshots: StorageConfig,
    pub controldb_path: PathBuf,
    pub controldb_backup_location: PathBuf,
    pub grpc_port: u16,
    pub http_port: u16,
    /// Node name; Axon defaults it to the hostname.
    pub name: Option<String>,
    /// Hostname told to clients; Axon defaults it to the machine's hostname.
    pub hostname: Option<String>,
    pub max_message_size_bytes: u64,
    pub contexts: Vec<String>,
    pub durability: DurabilityMode,
    pub max_batch_bytes: usize,
    pub max_transaction_bytes: usize,
    pub sequence_cache_entries: usize,
    pub index_cache_bytes: usize,
    /// Closed segment files (data, and separately index) each store keeps open for reads.
    pub open_segment_files: usize,
    /// Bytes of unfinished transactions held in memory across every AppendEvent stream.
    pub max_pending_append_bytes: usize,
    /// Address both listeners bind to (`0.0.0.0`: every interface, as Axon Server does).
    pub bind_address: std::net::IpAddr,
    /// Whether every call needs credentials (`axoniq.axonserver.accesscontrol.enabled`).
    pub access_control: bool,
    /// Token with read and write rights on every context.
    pub access_token: Option<String>,
    /// Token with admin rights.
    pub admin_token: Option<String>,
    /// Free space below which the health endpoint's disk-space detail turns WARN.
    pub disk_space_threshold_bytes: u64,
    /// `axoniq.axonserver.internal-hostname`: where other nodes reach this one (the hostname
    /// when unset).
    pub internal_hostname: Option<String>,
    /// `axoniq.axonserver.internal-port`: node-to-node traffic (8224).
    pub internal_port: u16,
    /// Formation, replication settings and the internal token.
    pub cluster: myelin_cluster::ClusterConfig,
    /// `myelin.cluster.enabled`: serve the internal port and the cluster admin API even without
    /// `autocluster.first`, so that `POST /v1/context/init` or `POST /v1/cluster` can make this
    /// node part of a cluster (Axon EE nodes always can). Implied by `autocluster.first`, and by
    /// a control database that holds Raft state (the node was in a cluster before).
    pub cluster_enabled: bool,
    /// The properties files that were read, in the order applied.
    pub files_read: Vec<PathBuf>,
}

impl Config {
    /// Reads the configuration: defaults, then the properties file(s), then `env` (only
    /// `AXONIQ_*`, `MYELIN_*` and `SERVER_PORT` are looked at), then `overrides`.
    /// Without `--config`, `axonserver.properties` is read from `cwd` and then from
    /// `cwd/config/` (Spring's order: the `config/` file wins), whichever exist.
    pub fn load(
        overrides: &Overrides,
        env: impl IntoIterator<Item = (String, String)>,
        cwd: &Path,
    ) -> Result<Config, ConfigError> {
        let mut settings = Settings::default();
        let files = match &overrides.config_file {
            Some(file) => vec![file.clone()],
            None => default_files(cwd),
        };
        for file in &files {
            settings.apply_file(file)?;
        }
        settings.apply_env(env)?;
        settings.apply_overrides(overrides)?;
        let mut config = settings.resolve()?;
        config.files_read = files;
        // The store checks its own bounds when it opens; checking them here as well stops a
        // start with a configuration error before anything is opened.
        for (kind, store) in [(StoreKind::Events, "event"), (StoreKind::Snapshots, "snapshot")] {
            config
                .store_config(kind)
                .validate()
                .map_err(|e| ConfigError::StoreBounds {
                    store,
                    reason: e.to_string(),
                })?;
        }
        Ok(config)
    }

    /// The store settings for one kind of store. Events and snapshots differ only in segment
    /// size and sync interval; the rest are the store's defaults unless configured.
    pub fn store_config(&self, kind: StoreKind) -> StoreConfig {
        let storage = self.storage(kind);
        let durability = match self.durability {
            DurabilityMode::Fsync => Durability::Fsync,
            DurabilityMode::Interval => Durability::Interval {
                interval: Duration::from_millis(storage.sync_interval_ms),
            },
        };
        StoreConfig {
            segment_size_bytes: storage.segment_size_bytes,
            durability,
            max_batch_bytes: self.max_batch_bytes,
            max_transaction_bytes: self.max_transaction_bytes,
            sequence_cache_entries: self.sequence_cache_entries,
            index_cache_bytes: self.index_cache_bytes,
            open_segment_files: self.open_segment_files,
            ..StoreConfig::default()
        }
    }

    pub fn storage(&self, kind: StoreKind) -> &StorageConfig {
        match kind {
            StoreKind::Events => &self.events,
            StoreKind::Snapshots => &self.snapshots,
        }
    }

    /// The directory holding one context's files of one kind: `<storage>/<context>`, as the
    /// node's `StoreLayout` lays them out (the server builds that layout from `storage`; this
    /// spells the rule out for the configuration's tests).
    #[cfg(test)]
    pub fn context_dir(&self, kind: StoreKind, context: &str) -> PathBuf {
        self.storage(kind).storage_dir.join(context)
    }

    /// Resolves every relative directory against `cwd` (dropping `.` components), so paths the
    /// server logs and reports (backup listings above all) are absolute.
    pub fn make_paths_absolute(&mut self, cwd: &Path) {
        for path in [
            &mut self.events.storage_dir,
            &mut self.snapshots.storage_dir,
            &mut self.controldb_path,
            &mut self.controldb_backup_location,
            &mut self.cluster.replication.log_storage_folder,
        ] {
            let relative: PathBuf = path
                .components()
                .filter(|c| !matches!(c, std::path::Component::CurDir))
                .collect();
            *path = cwd.join(relative);
        }
    }

    /// The directories whose free space matters: event and snapshot storage, control database.
    pub fn data_dirs(&self) -> Vec<PathBuf> {
        let mut dirs = vec![
            self.events.storage_dir.clone(),
            self.snapshots.storage_dir.clone(),
            self.controldb_path.clone(),
        ];
        dirs.dedup();
        dirs
    }

    /// One line for the startup log.
    pub fn summary(&self) -> String {
        let files = if self.files_read.is_empty() {
            "none".to_string()
        } else {
            self.files_read
                .iter()
                .map(|f| f.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        };
        let durability = match self.durability {
            DurabilityMode::Fsync => "fsync before acknowledging".to_string(),
            DurabilityMode::Interval if self.events.sync_interval_ms == self.snapshots.sync_interval_ms => {
                format!("sync every {} ms", self.events.sync_interval_ms)
            }
            DurabilityMode::Interval => format!(
                "sync events every {} ms, snapshots every {} ms",
                self.events.sync_interval_ms, self.snapshots.sync_interval_ms
            ),
        };
        format!(
            "events {} (segments {}), snapshots {} (segments {}), control db {}, durability: {}, contexts: {}, config files: {}",
            self.events.storage_dir.display(),
            format_bytes(self.events.segment_size_bytes),
            self.snapshots.storage_dir.display(),
            format_bytes(self.snapshots.segment_size_bytes),
            self.controldb_path.display(),
            durability,
            self.contexts.join(","),
            files,
        )
    }
}

fn default_files(cwd: &Path) -> Vec<PathBuf> {
    for yaml in ["axonserver.yml", "axonserver.yaml"] {
        for dir in [cwd.to_path_buf(), cwd.join("config")] {
            let path = dir.join(yaml);
            if path.is_file() {
                tracing::warn!(
                    "{} is not read: Myelin reads {PROPERTIES_FILE_NAME} (flat key=value) only",
                    path.display()
                );
            }
        }
    }
    [
        cwd.join(PROPERTIES_FILE_NAME),
        cwd.join("config").join(PROPERTIES_FILE_NAME),
    ]
    .into_iter()
    .filter(|path| path.is_file())
    .collect()
}

/// A value as written, with where it came from.
#[derive(Debug, Clone)]
struct Setting {
    value: String,
    origin: Origin,
}

/// The settings seen so far, keyed by property; a later `set` of the same property wins.
#[derive(Debug, Default)]
struct Settings {
    values: BTreeMap<&'static str, Setting>,
}

impl Settings {
    fn apply_file(&mut self, path: &Path) -> Result<(), ConfigError> {
        let bytes = std::fs::read(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        // Java reads properties files as ISO-8859-1, Spring Boot as UTF-8: take UTF-8 when the
        // file is valid UTF-8, else read each byte as the Latin-1 character it encodes.
        let text = match String::from_utf8(bytes) {
            Ok(text) => text,
            Err(err) => err.into_bytes().iter().map(|&b| char::from(b)).collect(),
        };
        let entries = properties::parse(&text).map_err(|err| ConfigError::Malformed {
            path: path.to_path_buf(),
            line: err.line,
            reason: err.reason,
        })?;
        for entry in entries {
            let origin = Origin::File {
                path: path.to_path_buf(),
                line: entry.line,
            };
            self.set_by_name(&entry.key, entry.value, origin)?;
        }
        Ok(())
    }

    /// Spring's relaxed binding for environment variables: `AXONIQ_AXONSERVER_EVENT_STORAGE`
    /// binds `axoniq.axonserver.event.storage`. Dots become underscores; a dash may become an
    /// underscore or be dropped (Spring's own form: `..._SEGMENTSIZE`).
    fn apply_env(&mut self, env: impl IntoIterator<Item = (String, String)>) -> Result<(), ConfigError> {
        // Sorted, so that which of two conflicting variables is named first does not depend on
        // the order the process environment happens to list them in.
        let env: BTreeMap<String, String> = env
            .into_iter()
            .filter(|(name, _)| {
                let upper = name.to_ascii_uppercase();
                upper == "SERVER_PORT" || upper.starts_with("AXONIQ_") || upper.starts_with("MYELIN_")
            })
            .collect();
        let mut seen: BTreeMap<&'static str, (String, String)> = BTreeMap::new();
        for (var, value) in env {
            let upper = var.to_ascii_uppercase();
            let Some(key) = PROPERTIES.iter().copied().find(|k| env_names(k).contains(&upper)) else {
                if upper.starts_with("MYELIN_") {
                    // A warning rather than an error (unlike an unknown `myelin.*` key in a file
                    // or flag): the environment is shared with scripts and test harnesses that may
                    // use the same prefix for their own variables.
                    tracing::warn!("ignoring environment variable {var}: no Myelin property by that name");
                } else {
                    tracing::debug!("ignoring environment variable {var}: not a property Myelin uses");
                }
                continue;
            };
            if let Some((first, first_value)) = seen.get(key) {
                if *first_value != value {
                    return Err(ConfigError::ConflictingEnv {
                        key,
                        first: first.clone(),
                        second: var,
                    });
                }
                continue;
            }
            seen.insert(key, (var.clone(), value.clone()));
            self.set(key, value, Origin::Env { var });
        }
        Ok(())
    }

    fn apply_overrides(&mut self, overrides: &Overrides) -> Result<(), ConfigError> {
        if let Some(dir) = &overrides.data_dir {
            let value = dir.to_string_lossy().into_owned();
            for key in [key::EVENT_STORAGE, key::SNAPSHOT_STORAGE, key::CONTROLDB_PATH] {
                self.set(key, value.clone(), Origin::Flag { flag: "--data" });
            }
        }
        for (name, value) in &overrides.sets {
            self.set_by_name(name, value.clone(), Origin::Flag { flag: "--set" })?;
        }
        Ok(())
    }

    /// Sets a property named as a user wrote it. Spring's relaxed names are accepted:
    /// `segment-size`, `segmentSize` and `segment_size` are the same property.
    fn set_by_name(&mut self, name: &str, value: String, origin: Origin) -> Result<(), ConfigError> {
        let canonical = canonical_name(name);
        if let Some(key) = PROPERTIES.iter().copied().find(|k| canonical_name(k) == canonical) {
            self.set(key, value, origin);
        } else if canonical.starts_with("myelin.") {
            return Err(ConfigError::UnknownKey {
                key: name.to_string(),
                origin,
            });
        } else {
            tracing::debug!("ignoring property {name} (from {origin}): not one Myelin uses");
        }
        Ok(())
    }

    fn set(&mut self, key: &'static str, value: String, origin: Origin) {
        self.values.insert(key, Setting { value, origin });
    }

    fn get(&self, key: &'static str) -> Option<&Setting> {
        self.values.get(key)
    }

    /// Of several properties meaning the same thing, the one from the highest-ranked source;
    /// on a tie, the earliest in `keys` (put the most specific first).
    fn pick(&self, keys: &[&'static str]) -> Option<(&'static str, &Setting)> {
        let mut best: Option<(&'static str, &Setting)> = None;
        for &key in keys {
            if let Some(setting) = self.get(key) {
                let better = match best {
                    None => true,
                    Some((_, current)) => setting.origin.rank() > current.origin.rank(),
                };
                if better {
                    best = Some((key, setting));
                }
            }
        }
        best
    }

    fn resolve(&self) -> Result<Config, ConfigError> {
        let event_storage = self.path(key::EVENT_STORAGE, DEFAULT_DATA_DIR)?;
        let snapshot_storage = self.path(key::SNAPSHOT_STORAGE, DEFAULT_DATA_DIR)?;
        if self.get(key::EVENT_STORAGE).is_some()
            && self.get(key::SNAPSHOT_STORAGE).is_none()
            && event_storage != snapshot_storage
        {
            tracing::warn!(
                "{} is set but {} is not: snapshots stay under {} (Axon Server's default); set both to keep them together",
                key::EVENT_STORAGE,
                key::SNAPSHOT_STORAGE,
                snapshot_storage.display()
            );
        }
        let defaults = StoreConfig::default();
        let segment_range = 1..=AXON_MAX_SIZE_BYTES;
        Ok(Config {
            events: StorageConfig {
                storage_dir: event_storage,
                segment_size_bytes: self.size(
                    key::EVENT_SEGMENT_SIZE,
                    DEFAULT_SEGMENT_SIZE_BYTES,
                    segment_range.clone(),
                )?,
                sync_interval_ms: self.sync_interval_ms(&[key::EVENT_FORCE_INTERVAL, key::DURABILITY_INTERVAL_MS])?,
            },
            snapshots: StorageConfig {
                storage_dir: snapshot_storage,
                segment_size_bytes: self.size(key::SNAPSHOT_SEGMENT_SIZE, DEFAULT_SEGMENT_SIZE_BYTES, segment_range)?,
                sync_interval_ms: self
                    .sync_interval_ms(&[key::SNAPSHOT_FORCE_INTERVAL, key::DURABILITY_INTERVAL_MS])?,
            },
            controldb_path: self.path(key::CONTROLDB_PATH, DEFAULT_DATA_DIR)?,
            controldb_backup_location: self.path(key::CONTROLDB_BACKUP_LOCATION, ".")?,
            grpc_port: self.port(key::GRPC_PORT, 8124)?,
            http_port: self.port(key::HTTP_PORT, 8024)?,
            name: self.optional_text(key::NAME),
            hostname: self.optional_text(key::HOSTNAME),
            max_message_size_bytes: self.size(
                key::MAX_MESSAGE_SIZE,
                DEFAULT_MAX_MESSAGE_SIZE_BYTES,
                0..=AXON_MAX_SIZE_BYTES,
            )?,
            contexts: self.contexts()?,
            durability: self.durability()?,
            max_batch_bytes: self.usize_size(key::MAX_BATCH_BYTES, defaults.max_batch_bytes, 1)?,
            max_transaction_bytes: self.usize_size(key::MAX_TRANSACTION_BYTES, defaults.max_transaction_bytes, 1)?,
            sequence_cache_entries: self.count(key::SEQUENCE_CACHE_ENTRIES, defaults.sequence_cache_entries, 1)?,
            index_cache_bytes: self.usize_size(key::INDEX_CACHE_BYTES, defaults.index_cache_bytes, 0)?,
            open_segment_files: self.count(key::OPEN_SEGMENT_FILES, defaults.open_segment_files, 1)?,
            max_pending_append_bytes: self.usize_size(
                key::MAX_PENDING_APPEND_BYTES,
                EventStoreLimits::default().max_pending_append_bytes,
                1,
            )?,
            bind_address: self.ip_address(key::BIND_ADDRESS)?,
            access_control: self.flag(key::ACCESS_CONTROL_ENABLED, false)?,
            access_token: self.optional_text(key::ACCESS_CONTROL_TOKEN),
            admin_token: self.optional_text(key::ACCESS_CONTROL_ADMIN_TOKEN),
            disk_space_threshold_bytes: self.size(
                key::DISK_SPACE_THRESHOLD,
                DEFAULT_DISK_SPACE_THRESHOLD_BYTES,
                0..=u64::MAX,
            )?,
            internal_hostname: self.optional_text(key::INTERNAL_HOSTNAME),
            internal_port: self.port(key::INTERNAL_PORT, myelin_node::identity::DEFAULT_INTERNAL_PORT)?,
            cluster: self.cluster()?,
            cluster_enabled: self.flag(key::CLUSTER_ENABLED, false)?,
            files_read: Vec::new(),
        })
    }

    /// `axoniq.axonserver.autocluster.*`, `replication.*` and the internal token, with Axon's
    /// defaults; the relations between the timeouts are checked here, naming the properties.
    fn cluster(&self) -> Result<myelin_cluster::ClusterConfig, ConfigError> {
        let defaults = myelin_cluster::ReplicationConfig::default();
        let ms = |key: &'static str, default: u64| -> Result<u64, ConfigError> {
            Ok(self.count(key, default as usize, 1)? as u64)
        };
        let replication = myelin_cluster::ReplicationConfig {
            log_storage_folder: self.path(key::LOG_STORAGE_FOLDER, "./log")?,
            segment_size_bytes: self.size(
                key::LOG_SEGMENT_SIZE,
                defaults.segment_size_bytes,
                1024..=AXON_MAX_SIZE_BYTES,
            )?,
            min_election_timeout_ms: ms(key::MIN_ELECTION_TIMEOUT, defaults.min_election_timeout_ms)?,
            max_election_timeout_ms: ms(key::MAX_ELECTION_TIMEOUT, defaults.max_election_timeout_ms)?,
            heartbeat_timeout_ms: ms(key::HEARTBEAT_TIMEOUT, defaults.heartbeat_timeout_ms)?,
            min_active_backups: self.count(key::MIN_ACTIVE_BACKUPS, defaults.min_active_backups, 0)?,
            log_compaction_enabled: self.flag(key::LOG_COMPACTION_ENABLED, defaults.log_compaction_enabled)?,
            log_retention_hours: self.count(key::LOG_RETENTION_HOURS, defaults.log_retention_hours as usize, 0)? as u64,
            sync_interval_ms: ms(key::REPLICATION_SYNC_INTERVAL, defaults.sync_interval_ms)?,
        };
        if let Err(reason) = replication.validate() {
            let setting = self
                .get(key::HEARTBEAT_TIMEOUT)
                .or_else(|| self.get(key::MIN_ELECTION_TIMEOUT))
                .or_else(|| self.get(key::MAX_ELECTION_TIMEOUT));
            return Err(ConfigError::Cluster {
                reason,
                origin: setting.map(|s| s.origin.clone()),
            });
        }
        let mut contexts: Vec<String> = Vec::new();
        if let Some(setting) = self.get(key::AUTOCLUSTER_CONTEXTS) {
            for name in setting.value.split(',').map(str::trim).filter(|n| !n.is_empty()) {
                if let Err(problem) = check_context_name(name) {
                    return Err(self.bad_value(
                        key::AUTOCLUSTER_CONTEXTS,
                        setting,
                        format!("a comma-separated list of context names ({problem})"),
                    ));
                }
                if !contexts.iter().any(|c| c == name) {
                    contexts.push(name.to_string());
                }
            }
        }
        Ok(myelin_cluster::ClusterConfig {
            autocluster_first: self.optional_text(key::AUTOCLUSTER_FIRST),
            autocluster_contexts: contexts,
            internal_token: self.optional_text(key::INTERNAL_TOKEN),
            recovery_file: Some(match self.get(key::RECOVERY_FILE) {
                None => PathBuf::from("recovery.json"),
                Some(setting) if setting.value.trim().is_empty() => {
                    return Err(self.bad_value(key::RECOVERY_FILE, setting, "a file path"));
                }
                Some(setting) => PathBuf::from(setting.value.trim()),
            }),
            replication,
        })
    }

    fn bad_value(&self, key: &'static str, setting: &Setting, expected: impl Into<String>) -> ConfigError {
        ConfigError::BadValue {
            key,
            value: setting.value.clone(),
            origin: setting.origin.clone(),
            expected: expected.into(),
        }
    }

    fn path(&self, key: &'static str, default: &str) -> Result<PathBuf, ConfigError> {
        match self.get(key) {
            None => Ok(PathBuf::from(default)),
            Some(setting) if setting.value.trim().is_empty() => Err(self.bad_value(key, setting, "a directory path")),
            Some(setting) => Ok(PathBuf::from(setting.value.trim())),
        }
    }

    fn optional_text(&self, key: &'static str) -> Option<String> {
        self.get(key)
            .map(|setting| setting.value.trim().to_string())
            .filter(|value| !value.is_empty())
    }

    fn size(&self, key: &'static str, default: u64, range: std::ops::RangeInclusive<u64>) -> Result<u64, ConfigError> {
        let Some(setting) = self.get(key) else {
            return Ok(default);
        };
        match parse_data_size(&setting.value) {
            Some(bytes) if range.contains(&bytes) => Ok(bytes),
            _ => Err(self.bad_value(
                key,
                setting,
                format!(
                    "a size from {} to {} bytes: a number of bytes, or a number with unit B, KB, MB, GB or TB (powers of 1024), e.g. 256MB",
                    range.start(),
                    range.end()
                ),
            )),
        }
    }

    fn usize_size(&self, key: &'static str, default: usize, min: u64) -> Result<usize, ConfigError> {
        let max = u64::try_from(usize::MAX).unwrap_or(u64::MAX);
        let bytes = self.size(key, default as u64, min..=max)?;
        Ok(usize::try_from(bytes).unwrap_or(usize::MAX))
    }

    fn count(&self, key: &'static str, default: usize, min: usize) -> Result<usize, ConfigError> {
        let Some(setting) = self.get(key) else {
            return Ok(default);
        };
        match setting.value.trim().parse::<usize>() {
            Ok(n) if n >= min => Ok(n),
            _ => Err(self.bad_value(key, setting, format!("a whole number, at least {min}"))),
        }
    }

    fn port(&self, key: &'static str, default: u16) -> Result<u16, ConfigError> {
        let Some(setting) = self.get(key) else {
            return Ok(default);
        };
        setting
            .value
            .trim()
            .parse::<u16>()
            .map_err(|_| self.bad_value(key, setting, "a port number from 0 to 65535 (0: any free port)"))
    }

    fn flag(&self, key: &'static str, default: bool) -> Result<bool, ConfigError> {
        let Some(setting) = self.get(key) else {
            return Ok(default);
        };
        match setting.value.trim().to_ascii_lowercase().as_str() {
            "true" => Ok(true),
            "false" => Ok(false),
            _ => Err(self.bad_value(key, setting, "true or false")),
        }
    }

    fn ip_address(&self, key: &'static str) -> Result<std::net::IpAddr, ConfigError> {
        let Some(setting) = self.get(key) else {
            return Ok(std::net::IpAddr::from([0, 0, 0, 0]));
        };
        setting
            .value
            .trim()
            .parse()
            .map_err(|_| self.bad_value(key, setting, "an IPv4 or IPv6 address, such as 127.0.0.1 or 0.0.0.0"))
    }

    fn sync_interval_ms(&self, keys: &[&'static str]) -> Result<u64, ConfigError> {
        let Some((key, setting)) = self.pick(keys) else {
            return Ok(DEFAULT_SYNC_INTERVAL_MS);
        };
        match setting.value.trim().parse::<u64>() {
            Ok(ms) if (1..=MAX_SYNC_INTERVAL_MS).contains(&ms) => Ok(ms),
            _ => Err(self.bad_value(key, setting, format!("milliseconds, from 1 to {MAX_SYNC_INTERVAL_MS}"))),
        }
    }

    fn durability(&self) -> Result<DurabilityMode, ConfigError> {
        let Some(setting) = self.get(key::DURABILITY) else {
            return Ok(DurabilityMode::Fsync);
        };
        match setting.value.trim().to_ascii_lowercase().as_str() {
            "fsync" => Ok(DurabilityMode::Fsync),
            "interval" => Ok(DurabilityMode::Interval),
            _ => Err(self.bad_value(
                key::DURABILITY,
                setting,
                "`fsync` (acknowledge after the append is on disk) or `interval` (acknowledge after the write, sync every myelin.durability.interval-ms, as Axon Server does)",
            )),
        }
    }

    fn contexts(&self) -> Result<Vec<String>, ConfigError> {
        let Some(setting) = self.get(key::CONTEXTS) else {
            return Ok(vec!["default".to_string()]);
        };
        let mut contexts: Vec<String> = Vec::new();
        for name in setting.value.split(',').map(str::trim) {
            if let Err(problem) = check_context_name(name) {
                return Err(self.bad_value(
                    key::CONTEXTS,
                    setting,
                    format!("a comma-separated list of context names ({problem})"),
                ));
            }
            if contexts.iter().any(|c| c == name) {
                return Err(self.bad_value(
                    key::CONTEXTS,
                    setting,
                    format!("a comma-separated list of context names (`{name}` is listed twice)"),
                ));
            }
            contexts.push(name.to_string());
        }
        Ok(contexts)
    }
}

/// A context name becomes a directory name, so it must be one plain path component.
fn check_context_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("a name is empty".to_string());
    }
    if name == "." || name == ".." {
        return Err(format!("`{name}` is not a usable directory name"));
    }
    if let Some(bad) = name
        .chars()
        .find(|&c| c == '/' || c == '\\' || c.is_control() || c.is_whitespace())
    {
        return Err(format!(
            "`{name}` contains {bad:?}; names may not contain slashes, blanks or control characters"
        ));
    }
    Ok(())
}

/// Spring's relaxed form for comparing names: lower case, dashes and underscores dropped
/// within each dot-separated part.
fn canonical_name(name: &str) -> String {
    name.trim()
        .chars()
        .filter(|&c| c != '-' && c != '_')
        .map(|c| c.to_ascii_lowercase())
        .collect()
}

/// The environment variable names that bind `key`: dots to underscores, dashes either to
/// underscores or dropped, upper case.
fn env_names(key: &str) -> [String; 2] {
    let upper = key.to_ascii_uppercase().replace('.', "_");
    [upper.replace('-', "_"), upper.replace('-', "")]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(vars: &[(&str, &str)]) -> Vec<(String, String)> {
        vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn sets(pairs: &[(&str, &str)]) -> Overrides {
        Overrides {
            sets: env(pairs),
            ..Overrides::default()
        }
    }

    /// A working directory with an `axonserver.properties` holding `text`.
    fn dir_with_properties(text: &str) -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(dir.path().join(PROPERTIES_FILE_NAME), text).expect("write properties");
        dir
    }

    fn load(overrides: &Overrides, vars: &[(&str, &str)], cwd: &Path) -> Result<Config, ConfigError> {
        Config::load(overrides, env(vars), cwd)
    }

    fn load_ok(overrides: &Overrides, vars: &[(&str, &str)], cwd: &Path) -> Config {
        load(overrides, vars, cwd).expect("configuration loads")
    }

    #[test]
    fn defaults_are_axon_servers() {
        let dir = tempfile::tempdir().expect("temp dir");
        let config = load_ok(&Overrides::default(), &[], dir.path());
        assert_eq!(config.events.storage_dir, PathBuf::from("./data"));
        assert_eq!(config.snapshots.storage_dir, PathBuf::from("./data"));
        assert_eq!(config.events.segment_size_bytes, 256 * 1024 * 1024);
        assert_eq!(config.snapshots.segment_size_bytes, 256 * 1024 * 1024);
        assert_eq!(config.events.sync_interval_ms, 1000);
        assert_eq!(config.controldb_path, PathBuf::from("./data"));
        assert_eq!(config.controldb_backup_location, PathBuf::from("."));
        assert_eq!(config.grpc_port, 8124);
        assert_eq!(config.http_port, 8024);
        assert_eq!(config.name, None);
        assert_eq!(config.hostname, None);
        assert_eq!(config.max_message_size_bytes, 4 * 1024 * 1024);
        assert_eq!(config.contexts, vec!["default".to_string()]);
        assert_eq!(config.durability, DurabilityMode::Fsync);
        assert!(config.files_read.is_empty());

        let store = config.store_config(StoreKind::Events);
        let defaults = StoreConfig::default();
        assert_eq!(store.durability, Durability::Fsync);
        assert_eq!(store.max_batch_bytes, defaults.max_batch_bytes);
        assert_eq!(store.max_transaction_bytes, defaults.max_transaction_bytes);
        assert_eq!(store.sequence_cache_entries, defaults.sequence_cache_entries);
        assert_eq!(store.index_cache_bytes, defaults.index_cache_bytes);
    }

    #[test]
    fn precedence_defaults_file_env_flags() {
        let dir = dir_with_properties(
            "axoniq.axonserver.port=1001\nserver.port=2001\naxoniq.axonserver.name=from-file\n\
             axoniq.axonserver.hostname=file-host\n",
        );
        let vars = [
            ("AXONIQ_AXONSERVER_PORT", "1002"),
            ("SERVER_PORT", "2002"),
            ("AXONIQ_AXONSERVER_NAME", "from-env"),
        ];
        let flags = sets(&[("axoniq.axonserver.port", "1003")]);
        let config = load_ok(&flags, &vars, dir.path());
        assert_eq!(config.grpc_port, 1003, "flag beats env and file");
        assert_eq!(config.http_port, 2002, "env beats file");
        assert_eq!(config.name.as_deref(), Some("from-env"), "env beats file");
        assert_eq!(config.hostname.as_deref(), Some("file-host"), "file beats default");
        assert_eq!(config.max_message_size_bytes, 4 << 20, "default when unset");
        assert_eq!(config.files_read, vec![dir.path().join(PROPERTIES_FILE_NAME)]);
    }

    #[test]
    fn config_dir_file_overrides_working_dir_file() {
        let dir = dir_with_properties("server.port=1\naxoniq.axonserver.port=2\n");
        std::fs::create_dir(dir.path().join("config")).expect("mkdir");
        std::fs::write(dir.path().join("config").join(PROPERTIES_FILE_NAME), "server.port=3\n").expect("write");
        let config = load_ok(&Overrides::default(), &[], dir.path());
        assert_eq!(config.http_port, 3);
        assert_eq!(config.grpc_port, 2);
        assert_eq!(config.files_read.len(), 2);
    }

    #[test]
    fn explicit_config_file_replaces_the_default_locations() {
        let dir = dir_with_properties("server.port=1\n");
        let other = dir.path().join("other.properties");
        std::fs::write(&other, "axoniq.axonserver.port=9\n").expect("write");
        let overrides = Overrides {
            config_file: Some(other.clone()),
            ..Overrides::default()
        };
        let config = load_ok(&overrides, &[], dir.path());
        assert_eq!(config.http_port, 8024, "./axonserver.properties not read");
        assert_eq!(config.grpc_port, 9);
        assert_eq!(config.files_read, vec![other]);
    }

    #[test]
    fn missing_explicit_config_file_is_an_error() {
        let dir = tempfile::tempdir().expect("temp dir");
        let overrides = Overrides {
            config_file: Some(dir.path().join("nope.properties")),
            ..Overrides::default()
        };
        let err = load(&overrides, &[], dir.path()).expect_err("missing file");
        assert!(matches!(err, ConfigError::Read { .. }), "{err}");
        assert!(err.to_string().contains("nope.properties"), "{err}");
    }

    #[test]
    fn relaxed_environment_binding() {
        let dir = tempfile::tempdir().expect("temp dir");
        let vars = [
            ("AXONIQ_AXONSERVER_EVENT_STORAGE", "/ev"),
            ("AXONIQ_AXONSERVER_SNAPSHOT_STORAGE", "/snap"),
            // Dash as underscore, and dash dropped (Spring's own form): both bind.
            ("AXONIQ_AXONSERVER_EVENT_SEGMENT_SIZE", "64MB"),
            ("AXONIQ_AXONSERVER_SNAPSHOT_SEGMENTSIZE", "1MB"),
            ("AXONIQ_AXONSERVER_CONTROLDB_PATH", "/ctl"),
            ("MYELIN_CONTEXTS", "default,orders"),
            ("MYELIN_DURABILITY", "interval"),
            ("MYELIN_DURABILITY_INTERVAL_MS", "250"),
            ("MYELIN_MAX_BATCH_BYTES", "2MB"),
            // Not ours: ignored.
            ("PATH", "/usr/bin"),
            ("AXONIQ_AXONSERVER_ACCESSCONTROL_ENABLED", "true"),
            ("MYELIN_TEST_HARNESS_VARIABLE", "x"),
        ];
        let config = load_ok(&Overrides::default(), &vars, dir.path());
        assert_eq!(config.events.storage_dir, PathBuf::from("/ev"));
        assert_eq!(config.snapshots.storage_dir, PathBuf::from("/snap"));
        assert_eq!(config.events.segment_size_bytes, 64 << 20);
        assert_eq!(config.snapshots.segment_size_bytes, 1 << 20);
        assert_eq!(config.controldb_path, PathBuf::from("/ctl"));
        assert_eq!(config.contexts, vec!["default".to_string(), "orders".to_string()]);
        assert_eq!(config.durability, DurabilityMode::Interval);
        assert_eq!(config.events.sync_interval_ms, 250);
        assert_eq!(config.max_batch_bytes, 2 << 20);
    }

    #[test]
    fn conflicting_environment_spellings_are_an_error() {
        let dir = tempfile::tempdir().expect("temp dir");
        let vars = [
            ("AXONIQ_AXONSERVER_EVENT_SEGMENT_SIZE", "64MB"),
            ("AXONIQ_AXONSERVER_EVENT_SEGMENTSIZE", "32MB"),
        ];
        let err = load(&Overrides::default(), &vars, dir.path()).expect_err("conflict");
        let message = err.to_string();
        assert!(message.contains("AXONIQ_AXONSERVER_EVENT_SEGMENTSIZE"), "{message}");
        assert!(message.contains("AXONIQ_AXONSERVER_EVENT_SEGMENT_SIZE"), "{message}");
    }

    #[test]
    fn relaxed_names_in_files_and_flags() {
        let dir = dir_with_properties(
            "axoniq.axonserver.event.segmentSize=8MB\naxoniq.axonserver.snapshot.segment_size=4MB\n",
        );
        let flags = sets(&[("Myelin.Max-Transaction-Bytes", "1GB")]);
        let config = load_ok(&flags, &[], dir.path());
        assert_eq!(config.events.segment_size_bytes, 8 << 20);
        assert_eq!(config.snapshots.segment_size_bytes, 4 << 20);
        assert_eq!(config.max_transaction_bytes, 1 << 30);
    }

    #[test]
    fn access_control_is_off_by_default_and_configured_like_axon() {
        let dir = tempfile::tempdir().expect("temp dir");
        let config = load_ok(&Overrides::default(), &[], dir.path());
        assert!(!config.access_control);
        assert_eq!((config.access_token, config.admin_token), (None, None));
        assert_eq!(config.disk_space_threshold_bytes, 1 << 30);

        let dir = dir_with_properties(
            "axoniq.axonserver.accesscontrol.enabled=true\naxoniq.axonserver.accesscontrol.token=app-token\n",
        );
        let vars = [("AXONIQ_AXONSERVER_ACCESSCONTROL_ADMINTOKEN", "admin-token")];
        let config = load_ok(&sets(&[("myelin.disk-space-threshold", "5GB")]), &vars, dir.path());
        assert!(config.access_control);
        assert_eq!(config.access_token.as_deref(), Some("app-token"));
        assert_eq!(config.admin_token.as_deref(), Some("admin-token"));
        assert_eq!(config.disk_space_threshold_bytes, 5 << 30);

        let bad = load(
            &sets(&[("axoniq.axonserver.accesscontrol.enabled", "yes")]),
            &[],
            dir.path(),
        )
        .expect_err("not a boolean");
        assert!(bad.to_string().contains("true or false"), "{bad}");
    }

    #[test]
    fn paths_are_made_absolute_against_the_working_directory() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut config = load_ok(&Overrides::default(), &[], dir.path());
        config.make_paths_absolute(Path::new("/srv/run"));
        assert_eq!(config.events.storage_dir, PathBuf::from("/srv/run/data"));
        assert_eq!(config.controldb_path, PathBuf::from("/srv/run/data"));
        assert_eq!(config.controldb_backup_location, PathBuf::from("/srv/run"));
        assert_eq!(config.data_dirs(), vec![PathBuf::from("/srv/run/data")]);
    }

    #[test]
    fn data_flag_sets_all_three_directories_and_set_wins_over_it() {
        let dir = tempfile::tempdir().expect("temp dir");
        let overrides = Overrides {
            data_dir: Some(PathBuf::from("/srv/myelin")),
            sets: env(&[("axoniq.axonserver.controldb-path", "/srv/control")]),
            ..Overrides::default()
        };
        let vars = [("AXONIQ_AXONSERVER_EVENT_STORAGE", "/env")];
        let config = load_ok(&overrides, &vars, dir.path());
        assert_eq!(config.events.storage_dir, PathBuf::from("/srv/myelin"));
        assert_eq!(config.snapshots.storage_dir, PathBuf::from("/srv/myelin"));
        assert_eq!(config.controldb_path, PathBuf::from("/srv/control"));
        assert_eq!(
            config.context_dir(StoreKind::Events, "default"),
            PathBuf::from("/srv/myelin/default")
        );
    }

    #[test]
    fn snapshot_storage_defaults_independently_as_in_axon() {
        let dir = dir_with_properties("axoniq.axonserver.event.storage=/events\n");
        let config = load_ok(&Overrides::default(), &[], dir.path());
        assert_eq!(config.events.storage_dir, PathBuf::from("/events"));
        assert_eq!(config.snapshots.storage_dir, PathBuf::from("./data"));
    }

    #[test]
    fn store_configs_differ_by_kind() {
        let dir = dir_with_properties(
            "axoniq.axonserver.event.segment-size=64MB\naxoniq.axonserver.snapshot.segment-size=8MB\n\
             myelin.durability=INTERVAL\naxoniq.axonserver.snapshot.force-interval=5000\n\
             myelin.durability.interval-ms=200\nmyelin.sequence-cache-entries=10\n\
             myelin.index-cache-bytes=0\n",
        );
        let config = load_ok(&Overrides::default(), &[], dir.path());
        let events = config.store_config(StoreKind::Events);
        let snapshots = config.store_config(StoreKind::Snapshots);
        assert_eq!(events.segment_size_bytes, 64 << 20);
        assert_eq!(snapshots.segment_size_bytes, 8 << 20);
        assert_eq!(
            events.durability,
            Durability::Interval {
                interval: Duration::from_millis(200)
            }
        );
        assert_eq!(
            snapshots.durability,
            Durability::Interval {
                interval: Duration::from_millis(5000)
            }
        );
        assert_eq!(events.sequence_cache_entries, 10);
        assert_eq!(snapshots.index_cache_bytes, 0);
    }

    #[test]
    fn axon_force_interval_is_an_alias_ranked_by_source() {
        // Same source: Axon's per-kind key is more specific and wins.
        let dir =
            dir_with_properties("myelin.durability.interval-ms=100\naxoniq.axonserver.event.force-interval=300\n");
        let config = load_ok(&Overrides::default(), &[], dir.path());
        assert_eq!(config.events.sync_interval_ms, 300);
        assert_eq!(config.snapshots.sync_interval_ms, 100);

        // A higher-ranked source wins whichever name it uses.
        let vars = [("MYELIN_DURABILITY_INTERVAL_MS", "50")];
        let config = load_ok(&Overrides::default(), &vars, dir.path());
        assert_eq!(config.events.sync_interval_ms, 50);
        assert_eq!(config.snapshots.sync_interval_ms, 50);
    }

    #[test]
    fn size_units() {
        let dir = tempfile::tempdir().expect("temp dir");
        let flags = sets(&[
            ("axoniq.axonserver.event.segment-size", "1GB"),
            ("axoniq.axonserver.snapshot.segment-size", "64KB"),
            ("axoniq.axonserver.max-message-size", "16777216"),
            ("myelin.index-cache-bytes", "128mb"),
            ("myelin.open-segment-files", "8"),
            ("myelin.max-pending-append-bytes", "1GB"),
        ]);
        let config = load_ok(&flags, &[], dir.path());
        assert_eq!(config.events.segment_size_bytes, 1 << 30);
        assert_eq!(config.snapshots.segment_size_bytes, 64 << 10);
        assert_eq!(config.max_message_size_bytes, 16 << 20);
        assert_eq!(config.index_cache_bytes, 128 << 20);
        assert_eq!(config.open_segment_files, 8);
        assert_eq!(config.max_pending_append_bytes, 1 << 30);
    }

    #[test]
    fn a_setting_the_store_cannot_use_stops_the_start_with_the_stores_reason() {
        let dir = tempfile::tempdir().expect("temp dir");
        let err = load(
            &sets(&[("axoniq.axonserver.snapshot.segment-size", "5")]),
            &[],
            dir.path(),
        )
        .expect_err("a 5-byte segment cannot hold its header");
        assert!(
            matches!(err, ConfigError::StoreBounds { store: "snapshot", .. }),
            "{err}"
        );
        assert!(err.to_string().contains("segment_size_bytes = 5"), "{err}");
    }

    fn bad_value(flags: &[(&str, &str)]) -> String {
        let dir = tempfile::tempdir().expect("temp dir");
        let err = load(&sets(flags), &[], dir.path()).expect_err("bad value");
        assert!(matches!(err, ConfigError::BadValue { .. }), "{err}");
        err.to_string()
    }

    #[test]
    fn bad_values_name_key_value_and_what_is_accepted() {
        let message = bad_value(&[("axoniq.axonserver.event.segment-size", "12XB")]);
        assert!(message.contains("`axoniq.axonserver.event.segment-size`"), "{message}");
        assert!(message.contains("`12XB`"), "{message}");
        assert!(message.contains("256MB"), "{message}");
        assert!(message.contains("--set"), "{message}");

        // Axon's bounds: segment size 1..=Integer.MAX_VALUE.
        assert!(bad_value(&[("axoniq.axonserver.event.segment-size", "0")]).contains("from 1 to 2147483647"));
        assert!(bad_value(&[("axoniq.axonserver.snapshot.segment-size", "2GB")]).contains("2147483647"));
        assert!(bad_value(&[("axoniq.axonserver.port", "70000")]).contains("65535"));
        assert!(bad_value(&[("server.port", "http")]).contains("port number"));
        assert!(bad_value(&[("myelin.durability", "sometimes")]).contains("`fsync`"));
        assert!(bad_value(&[("myelin.durability.interval-ms", "0")]).contains("milliseconds"));
        assert!(bad_value(&[("axoniq.axonserver.event.force-interval", "1s")]).contains("force-interval"));
        assert!(bad_value(&[("myelin.sequence-cache-entries", "0")]).contains("at least 1"));
        assert!(bad_value(&[("myelin.max-batch-bytes", "-5")]).contains("max-batch-bytes"));
        assert!(bad_value(&[("axoniq.axonserver.event.storage", " ")]).contains("directory"));
        assert!(bad_value(&[("myelin.contexts", "default,,x")]).contains("empty"));
        assert!(bad_value(&[("myelin.contexts", "a,b,a")]).contains("twice"));
        assert!(bad_value(&[("myelin.contexts", "../etc")]).contains("slashes"));
        assert!(bad_value(&[("myelin.contexts", "..")]).contains("directory name"));
    }

    #[test]
    fn bad_value_in_file_names_file_and_line() {
        let dir = dir_with_properties("# settings\nmyelin.durability=sometimes\n");
        let err = load(&Overrides::default(), &[], dir.path()).expect_err("bad value");
        let expected = format!("{}:2", dir.path().join(PROPERTIES_FILE_NAME).display());
        assert!(err.to_string().contains(&expected), "{err}");
    }

    #[test]
    fn malformed_line_names_file_and_line() {
        let dir = dir_with_properties("server.port=1\naxoniq.axonserver.port\n");
        let err = load(&Overrides::default(), &[], dir.path()).expect_err("malformed");
        assert!(matches!(err, ConfigError::Malformed { line: 2, .. }), "{err}");
        let message = err.to_string();
        assert!(
            message.starts_with(&format!("{}:2: ", dir.path().join(PROPERTIES_FILE_NAME).display())),
            "{message}"
        );
    }

    #[test]
    fn unknown_myelin_key_is_an_error_unknown_axon_key_is_not() {
        let dir = dir_with_properties(
            "axoniq.axonserver.accesscontrol.enabled=true\nlogging.level.root=INFO\nspring.application.name=x\n",
        );
        load_ok(&Overrides::default(), &[], dir.path());

        let err = load(&sets(&[("myelin.contxts", "a")]), &[], dir.path()).expect_err("unknown key");
        let message = err.to_string();
        assert!(matches!(err, ConfigError::UnknownKey { .. }), "{message}");
        assert!(message.contains("`myelin.contxts`"), "{message}");
        assert!(message.contains("myelin.contexts"), "lists the known keys: {message}");
    }

    #[test]
    fn empty_name_means_unset() {
        let dir = dir_with_properties("axoniq.axonserver.name=\naxoniq.axonserver.hostname=  \n");
        let config = load_ok(&Overrides::default(), &[], dir.path());
        assert_eq!(config.name, None);
        assert_eq!(config.hostname, None);
    }

    #[test]
    fn latin1_file_is_read() {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(
            dir.path().join(PROPERTIES_FILE_NAME),
            b"axoniq.axonserver.name=caf\xe9\n",
        )
        .expect("write");
        let config = load_ok(&Overrides::default(), &[], dir.path());
        assert_eq!(config.name.as_deref(), Some("café"));
    }

    #[test]
    fn summary_mentions_what_matters() {
        let dir = tempfile::tempdir().expect("temp dir");
        let config = load_ok(&sets(&[("myelin.durability", "interval")]), &[], dir.path());
        let summary = config.summary();
        assert!(summary.contains("events ./data (segments 256 MiB)"), "{summary}");
        assert!(summary.contains("sync every 1000 ms"), "{summary}");
        assert!(summary.contains("contexts: default"), "{summary}");
    }

    #[test]
    fn readme_documents_every_property() {
        let readme = include_str!("../../../README.md");
        for key in PROPERTIES {
            assert!(
                readme.contains(&format!("`{key}`")),
                "README.md does not document `{key}`"
            );
        }
    }
}
