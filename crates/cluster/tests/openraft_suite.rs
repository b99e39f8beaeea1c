//! openraft's own storage conformance suite (`openraft::testing::Suite`) against Myelin's log
//! store (Axon-framed segments, vote and purge point in the control database) and its group
//! state machine (applying to real context stores).

use std::path::Path;
use std::sync::Arc;

use myelin_cluster::log::LogStore;
use myelin_cluster::machine::{AppliedPosition, ControlEffects, GroupMachine};
use myelin_cluster::types::{ControlCommand, TypeConfig};
use myelin_control::ControlDb;
use myelin_node::{Node, NodeIdentity, StoreLayout};
use myelin_store::DeletionHolds;
use myelin_testkit::store::small_segments;
use openraft::StorageError;
use openraft::testing::{StoreBuilder, Suite};
use tempfile::TempDir;

struct NoEffects;

impl ControlEffects for NoEffects {
    fn apply(&self, _group: &str, _command: &ControlCommand) -> Result<(), String> {
        Ok(())
    }
}

struct Builder;

fn node(dir: &Path) -> Arc<Node> {
    let control = Arc::new(ControlDb::open(&dir.join("control")).expect("control db"));
    let layout = StoreLayout {
        events_dir: dir.join("events"),
        snapshots_dir: dir.join("events"),
        events: small_segments(),
        snapshots: small_segments(),
        deletion_holds: Arc::new(DeletionHolds::default()),
    };
    Arc::new(Node::new(NodeIdentity::default(), control, Arc::new(layout)))
}

impl StoreBuilder<TypeConfig, LogStore, GroupMachine, TempDir> for Builder {
    async fn build(&self) -> Result<(TempDir, LogStore, GroupMachine), StorageError<u64>> {
        let dir = tempfile::tempdir().expect("temp dir");
        let node = node(dir.path());
        let log = LogStore::open(&dir.path().join("log"), 1024 * 1024, node.control().clone(), "suite", "n")
            .await
            .expect("open the log");
        let (applied, membership) = log.recorded_applied().expect("recorded");
        let machine = GroupMachine::new(
            "suite",
            node,
            Arc::new(NoEffects),
            applied,
            membership,
            Arc::new(AppliedPosition::default()),
        );
        Ok((dir, log, machine))
    }
}

#[test]
fn the_log_store_and_state_machine_pass_openraft_storage_suite() {
    Suite::test_all(Builder).expect("openraft's storage suite");
}
