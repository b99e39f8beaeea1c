//! What a control-database zip says about the cluster: the node's identity and each
//! replication group's Raft state (CLUSTER.md §3). A backup records it in its manifest, verify
//! checks the log against it, and restore edits the restored database from it.
//!
//! The zip is `createControlDbBackup`'s: the SQLite file [`myelin_control::DB_FILE_NAME`] and a
//! descriptor. It is read from a scratch copy, never from the server's database.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use myelin_control::{ClusterIdentity, ControlDb, RaftState};

/// The cluster facts of one control database.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClusterFacts {
    /// `None` on a node that never belonged to a cluster.
    pub identity: Option<ClusterIdentity>,
    /// Each replication group this node keeps Raft state for (`_admin` included), by name.
    pub groups: BTreeMap<String, RaftState>,
}

impl ClusterFacts {
    /// Whether the database is a cluster node's.
    pub fn is_cluster(&self) -> bool {
        self.identity.is_some() || !self.groups.is_empty()
    }
}

/// Extracts the database file of the zip at `zip_path` into `dir` (created if missing) and
/// answers its path.
pub fn extract_database(zip_path: &Path, dir: &Path) -> Result<PathBuf, String> {
    let file = std::fs::File::open(zip_path).map_err(|e| e.to_string())?;
    let mut archive = zip::ZipArchive::new(file).map_err(|e| format!("not a zip: {e}"))?;
    let mut database = archive
        .by_name(myelin_control::DB_FILE_NAME)
        .map_err(|e| format!("no {} inside: {e}", myelin_control::DB_FILE_NAME))?;
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let path = dir.join(myelin_control::DB_FILE_NAME);
    let mut bytes = Vec::new();
    database
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot unzip the database: {e}"))?;
    std::fs::write(&path, bytes).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    Ok(path)
}

/// Reads the cluster facts of the control database in `dir` (a scratch copy: opening it may
/// bring its schema up to this tool's version).
pub fn read_facts(dir: &Path) -> Result<ClusterFacts, String> {
    let control = ControlDb::open(dir).map_err(|e| format!("cannot open the control database: {e}"))?;
    facts_of(&control)
}

/// The cluster facts of an open control database.
pub fn facts_of(control: &ControlDb) -> Result<ClusterFacts, String> {
    let identity = control
        .cluster_identity()
        .map_err(|e| format!("cannot read the cluster identity: {e}"))?;
    let mut groups = BTreeMap::new();
    for group in control
        .raft_groups()
        .map_err(|e| format!("cannot list the replication groups: {e}"))?
    {
        let state = control
            .raft_state(&group)
            .map_err(|e| format!("cannot read the Raft state of group {group}: {e}"))?
            .unwrap_or_default();
        groups.insert(group, state);
    }
    Ok(ClusterFacts { identity, groups })
}

/// Extracts the zip into a directory of its own below `scratch` and reads its facts.
pub fn facts_of_zip(zip_path: &Path, scratch: &Path) -> Result<ClusterFacts, String> {
    let dir = tempfile::Builder::new()
        .prefix("controldb-")
        .tempdir_in(scratch)
        .map_err(|e| format!("cannot create a scratch directory: {e}"))?;
    extract_database(zip_path, dir.path())?;
    read_facts(dir.path())
}
