//! The node: its identity, its control database and its contexts, and every change to which
//! contexts it serves — open at start, create, delete, shut down. The REST and gRPC crates call
//! these and translate the answers; none of this logic lives in a handler.
//!
//! Creating a context records it in the control database, then opens its stores, and only then
//! makes it visible; a context whose stores cannot be opened is rolled back (its record
//! removed). Deleting one refuses while clients use it (open tracking streams or platform
//! connections) unless forced, shuts its stores down (flushing and syncing what was
//! acknowledged), removes its record and, unless the event store is preserved, its files — but
//! never while a backup lease is live, forced or not: a backup may be copying them.
//!
//! Every method here blocks (SQLite, file system, store shutdown): async callers run them on a
//! blocking thread.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use myelin_control::ControlDb;
use myelin_store::{ContextStore, DeletionHolds, StoreConfig};
use tracing::{error, info};

use crate::contexts::Contexts;
use crate::error::NodeError;
use crate::identity::NodeIdentity;

/// Opens and removes the stores behind contexts. The server's configuration knows where a
/// context's files live; the node does not.
pub trait Provisioner: Send + Sync + 'static {
    /// Why a new context cannot be called `name` in this node's directories (a file already
    /// holds the place of its directory, say), or `Ok` when it can. Asked before anything is
    /// recorded.
    fn check_new_context(&self, name: &str) -> Result<(), String> {
        let _ = name;
        Ok(())
    }
    /// Opens (creating if needed) the stores of context `name`.
    fn open_context(&self, name: &str) -> Result<Arc<ContextStore>, String>;
    /// Deletes the files of context `name`, whose stores are already shut down.
    fn delete_context_data(&self, name: &str) -> Result<(), String>;
}

/// Contexts laid out as Axon Server lays them out: `<events_dir>/<context>` and
/// `<snapshots_dir>/<context>`.
#[derive(Debug, Clone)]
pub struct StoreLayout {
    pub events_dir: PathBuf,
    pub snapshots_dir: PathBuf,
    pub events: StoreConfig,
    pub snapshots: StoreConfig,
    /// The backup leases the stores obey before deleting or rewriting a file; the server uses
    /// [`DeletionHolds::global`], tests their own.
    pub deletion_holds: Arc<DeletionHolds>,
}

impl StoreLayout {
    /// The directories of context `name`: events, then snapshots.
    pub fn context_dirs(&self, name: &str) -> [PathBuf; 2] {
        [self.events_dir.join(name), self.snapshots_dir.join(name)]
    }
}

impl Provisioner for StoreLayout {
    fn check_new_context(&self, name: &str) -> Result<(), String> {
        for dir in self.context_dirs(name) {
            if dir.exists() && !dir.is_dir() {
                return Err(format!(
                    "{} exists and is not a directory: context {name} cannot use it",
                    dir.display()
                ));
            }
        }
        Ok(())
    }

    fn open_context(&self, name: &str) -> Result<Arc<ContextStore>, String> {
        let [events_dir, snapshots_dir] = self.context_dirs(name);
        let store = ContextStore::open(
            name,
            events_dir.clone(),
            snapshots_dir.clone(),
            self.events.clone(),
            self.snapshots.clone(),
        )
        .map_err(|e| {
            format!(
                "cannot open context {name} (events in {}, snapshots in {}): {e}",
                events_dir.display(),
                snapshots_dir.display()
            )
        })?;
        store.set_deletion_holds(self.deletion_holds.clone());
        let last_token = store.last_token();
        info!(
            "context {name}: events in {}, snapshots in {}, last token {last_token}{}",
            events_dir.display(),
            snapshots_dir.display(),
            if last_token < 0 { " (empty)" } else { "" },
        );
        Ok(store)
    }

    fn delete_context_data(&self, name: &str) -> Result<(), String> {
        for dir in self.context_dirs(name) {
            match std::fs::remove_dir_all(&dir) {
                Ok(()) => info!("context {name}: deleted {}", dir.display()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(format!("cannot delete {}: {e}", dir.display())),
            }
        }
        Ok(())
    }
}

/// How `DELETE /v1/context/{name}` was asked to delete.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DeleteContext {
    /// Keep the event and snapshot files (Axon's `preserveEventStore`).
    pub preserve_event_store: bool,
    /// Delete even while clients use the context.
    pub force: bool,
}

/// One node's core: who it is, its control database and the contexts it serves.
pub struct Node {
    identity: NodeIdentity,
    control: Arc<ControlDb>,
    contexts: Arc<Contexts>,
    provisioner: Arc<dyn Provisioner>,
    /// The cluster this node is part of, once it has joined one.
    cluster: std::sync::OnceLock<Arc<dyn crate::cluster::ClusterAdmin>>,
    /// The replication logs, on a cluster node.
    replication_logs: std::sync::OnceLock<Arc<dyn crate::replication_log::ReplicationLogs>>,
}

impl Node {
    /// A node serving no context yet; [`Node::open_contexts`] opens them.
    pub fn new(identity: NodeIdentity, control: Arc<ControlDb>, provisioner: Arc<dyn Provisioner>) -> Node {
        Node {
            identity,
            control,
            contexts: Arc::new(Contexts::new()),
            provisioner,
            cluster: std::sync::OnceLock::new(),
            replication_logs: std::sync::OnceLock::new(),
        }
    }

    /// Installs the cluster's replication logs (for backups). Set once.
    pub fn set_replication_logs(&self, logs: Arc<dyn crate::replication_log::ReplicationLogs>) {
        let _ = self.replication_logs.set(logs);
    }

    /// The replication logs; `None` on a node that is not clustered (it has none).
    pub fn replication_logs(&self) -> Option<&Arc<dyn crate::replication_log::ReplicationLogs>> {
        self.replication_logs.get()
    }

    /// Makes this node a cluster node: the admin adapters ask `cluster` from now on. Set once.
    pub fn set_cluster(&self, cluster: Arc<dyn crate::cluster::ClusterAdmin>) {
        let _ = self.cluster.set(cluster);
    }

    /// The cluster, or `NOT_RUNNING_IN_CLUSTER` for a node that is not in one.
    pub fn cluster(&self) -> Result<&Arc<dyn crate::cluster::ClusterAdmin>, NodeError> {
        self.cluster.get().ok_or_else(|| NodeError::Cluster {
            code: crate::codes::ErrorCode::NotRunningInCluster,
            message: "this node is not part of a cluster".to_string(),
        })
    }

    /// Whether this node is a cluster node.
    pub fn is_clustered(&self) -> bool {
        self.cluster.get().is_some()
    }

    pub fn identity(&self) -> &NodeIdentity {
        &self.identity
    }

    pub fn control(&self) -> &Arc<ControlDb> {
        &self.control
    }

    /// The registry the APIs serve from.
    pub fn contexts(&self) -> &Arc<Contexts> {
        &self.contexts
    }

    /// At start: records the `configured` contexts (those already recorded stay), then opens
    /// every recorded context in turn. A context that cannot be opened (damaged files, a
    /// directory it may not read) is logged and marked failed; the others serve as usual, and
    /// calls to the failed one answer with the reason until it is repaired and the node
    /// restarted. Only the control database failing stops the start.
    pub fn open_contexts(&self, configured: &[String]) -> Result<(), NodeError> {
        let mut names = configured.to_vec();
        for context in configured {
            self.control.ensure_context(context)?;
        }
        for record in self.control.contexts()? {
            if !names.contains(&record.name) {
                names.push(record.name);
            }
        }
        for name in &names {
            match self.provisioner.open_context(name) {
                Ok(store) => self.contexts.insert(store),
                Err(reason) => {
                    error!("context {name} is unavailable: {reason}");
                    self.contexts.mark_failed(name, reason);
                }
            }
        }
        Ok(())
    }

    /// Creates context `name`: checks the name and its place on disk, records it, opens its
    /// stores and makes it visible. Nothing stays recorded if the stores cannot be opened.
    pub fn create_context(&self, name: &str, metadata: &BTreeMap<String, String>) -> Result<(), NodeError> {
        refuse_path_component(name)?;
        if self.contexts.get(name).is_some() {
            return Err(NodeError::ContextExists(name.to_string()));
        }
        self.provisioner
            .check_new_context(name)
            .map_err(NodeError::ContextPlaceTaken)?;
        self.control.create_context(name, metadata)?;
        let store = match self.provisioner.open_context(name) {
            Ok(store) => store,
            Err(reason) => {
                // Leave no record of a context whose stores could not be opened.
                if let Err(e) = self.control.delete_context(name) {
                    error!(context = %name, "cannot roll back the context record: {e}");
                }
                return Err(NodeError::Internal(format!(
                    "cannot open the stores of context {name}: {reason}"
                )));
            }
        };
        info!(context = store.name(), "context created");
        self.contexts.insert(store);
        Ok(())
    }

    /// Deletes context `name` (see the module docs for the order and the refusals).
    pub fn delete_context(&self, name: &str, how: DeleteContext) -> Result<(), NodeError> {
        let context = self
            .contexts
            .get(name)
            .ok_or_else(|| NodeError::UnknownContext(name.to_string()))?;
        if !how.preserve_event_store {
            refuse_path_component(name)?;
        }
        let (tracking_streams, clients) = (context.tracking_streams(), self.contexts.connected_clients(name));
        if (tracking_streams > 0 || clients > 0) && !how.force {
            return Err(NodeError::ContextInUse {
                context: name.to_string(),
                tracking_streams,
                clients,
            });
        }
        // Deleting the files deletes listed files: not while a backup may be copying them (not
        // even with force, which is about clients, not backups).
        if !how.preserve_event_store && context.store().deletions_held() {
            return Err(NodeError::BackupLeaseLive(name.to_string()));
        }
        drop(context);
        let Some(store) = self.contexts.remove(name) else {
            return Err(NodeError::UnknownContext(name.to_string()));
        };
        store
            .shutdown()
            .map_err(|e| NodeError::Internal(format!("cannot shut down the stores of {name}: {e}")))?;
        drop(store);
        self.control.delete_context(name)?;
        if !how.preserve_event_store {
            self.provisioner
                .delete_context_data(name)
                .map_err(|e| NodeError::Internal(format!("cannot delete the files of {name}: {e}")))?;
        }
        info!(context = %name, preserve_event_store = how.preserve_event_store, "context deleted");
        Ok(())
    }

    /// Takes every context out of service and shuts its stores down (flush, sync, stop their
    /// threads), even after one fails; the error names every context that failed. Call it
    /// after the listeners stopped taking calls.
    pub fn shutdown(&self) -> Result<(), NodeError> {
        let mut failed = Vec::new();
        for name in self.contexts.names() {
            let Some(store) = self.contexts.remove(&name) else {
                continue;
            };
            match store.shutdown() {
                Ok(()) => info!("context {name}: closed"),
                Err(err) => {
                    error!("context {name}: shutdown failed: {err}");
                    failed.push(name);
                }
            }
        }
        if failed.is_empty() {
            Ok(())
        } else {
            Err(NodeError::Internal(format!(
                "shutdown failed for context(s) {}",
                failed.join(", ")
            )))
        }
    }
}

/// Refuses the context names `.` and `..`. The control database's rule admits them (dots are
/// allowed), but a context's files live in `<storage>/<name>`: `..` would put a context's
/// segments in the storage directory's parent and deleting it would delete that whole parent,
/// `.` would mix them with every other context and deleting it would delete them all.
fn refuse_path_component(name: &str) -> Result<(), NodeError> {
    if name == "." || name == ".." {
        return Err(NodeError::InvalidContextName(format!(
            "context name {name:?} is not allowed: a context's files live in a directory named after it"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(dir: &std::path::Path) -> Node {
        let control = Arc::new(ControlDb::open(&dir.join("control").join("myelin-controldb.db")).expect("control db"));
        let small = StoreConfig {
            segment_size_bytes: 64 * 1024,
            ..StoreConfig::default()
        };
        let layout = StoreLayout {
            events_dir: dir.join("events"),
            snapshots_dir: dir.join("snapshots"),
            events: small.clone(),
            snapshots: small,
            deletion_holds: Arc::new(DeletionHolds::default()),
        };
        Node::new(NodeIdentity::default(), control, Arc::new(layout))
    }

    #[test]
    fn a_created_context_is_recorded_open_and_deleted_with_its_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let node = node(dir.path());
        node.create_context("orders", &BTreeMap::new()).expect("created");
        assert!(node.contexts().get("orders").is_some());
        assert!(dir.path().join("events/orders").is_dir());
        assert!(matches!(
            node.create_context("orders", &BTreeMap::new()),
            Err(NodeError::ContextExists(_))
        ));
        node.delete_context("orders", DeleteContext::default())
            .expect("deleted");
        assert!(node.contexts().get("orders").is_none());
        assert!(!dir.path().join("events/orders").exists());
        assert!(
            node.control()
                .contexts()
                .expect("records")
                .iter()
                .all(|r| r.name != "orders")
        );
    }

    #[test]
    fn a_context_whose_place_is_taken_is_not_recorded() {
        let dir = tempfile::tempdir().expect("tempdir");
        let node = node(dir.path());
        std::fs::create_dir_all(dir.path().join("events")).expect("mkdir");
        std::fs::write(dir.path().join("events/taken"), b"x").expect("file");
        assert!(matches!(
            node.create_context("taken", &BTreeMap::new()),
            Err(NodeError::ContextPlaceTaken(_))
        ));
        assert!(
            node.control()
                .contexts()
                .expect("records")
                .iter()
                .all(|r| r.name != "taken")
        );
    }

    #[test]
    fn dot_names_are_refused_before_anything_is_recorded() {
        let dir = tempfile::tempdir().expect("tempdir");
        let node = node(dir.path());
        for name in [".", ".."] {
            assert!(matches!(
                node.create_context(name, &BTreeMap::new()),
                Err(NodeError::InvalidContextName(_))
            ));
        }
    }

    #[test]
    fn a_context_in_use_is_deleted_only_when_forced() {
        let dir = tempfile::tempdir().expect("tempdir");
        let node = node(dir.path());
        node.create_context("busy", &BTreeMap::new()).expect("created");
        let client = node.contexts().client_connected("busy");
        assert!(matches!(
            node.delete_context("busy", DeleteContext::default()),
            Err(NodeError::ContextInUse { clients: 1, .. })
        ));
        let forced = DeleteContext {
            force: true,
            ..DeleteContext::default()
        };
        node.delete_context("busy", forced).expect("forced");
        drop(client);
    }

    #[test]
    fn shutdown_closes_every_context_and_leaves_none_open() {
        let dir = tempfile::tempdir().expect("tempdir");
        let node = node(dir.path());
        node.open_contexts(&["default".to_string(), "orders".to_string()])
            .expect("opened");
        assert_eq!(node.contexts().names(), vec!["default", "orders"]);
        node.shutdown().expect("clean shutdown");
        assert!(node.contexts().names().is_empty());
    }
}
