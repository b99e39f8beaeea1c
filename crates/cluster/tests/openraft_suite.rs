//! openraft's own storage conformance suite (`openraft::testing::Suite`) against Myelin's log
//! store (Axon-framed segments, vote and purge point in the control database) and its group
//! state machine (applying to real context stores).

use std::path::Path;
use std::sync::Arc;

use myelin_cluster::log::{CleaningGate, LogStore};
use myelin_cluster::machine::{AppliedPosition, ControlEffects, GroupMachine};
use myelin_cluster::types::{ControlCommand, TypeConfig};
use myelin_control::ControlDb;
use myelin_node::{Node, NodeIdentity, StoreLayout};
use myelin_store::DeletionHolds;
use myelin_testkit::store::small_segments;
use openraft::StorageError;
use openraft::testing::{StoreBuilder, Suite};

type TheSuite = Suite<TypeConfig, LogStore, GroupMachine, Builder, TempDir>;
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
        let gate = Arc::new(CleaningGate::new(Arc::new(DeletionHolds::default())));
        let log = LogStore::open(
            &dir.path().join("log"),
            1024 * 1024,
            node.control().clone(),
            "suite",
            gate,
        )
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
            Arc::new(tokio::sync::Mutex::new(())),
        );
        Ok((dir, log, machine))
    }
}

/// One case of the suite on a fresh log store and state machine, each case a test of its own.
macro_rules! case {
    ($($name:ident),* $(,)?) => {$(
        #[test]
        fn $name() {
            let runtime = tokio::runtime::Runtime::new().expect("runtime");
            runtime.block_on(async {
                let (_dir, store, machine) = Builder.build().await.expect("build");
                TheSuite::$name(store, machine).await.expect(stringify!($name));
            });
        }
    )*};
}

// Every case of `Suite::test_store` (openraft 0.9.25), each on a fresh store.
case!(
    last_membership_in_log_initial,
    last_membership_in_log,
    last_membership_in_log_multi_step,
    get_membership_initial,
    get_membership_from_log_and_empty_sm,
    get_membership_from_empty_log_and_sm,
    get_membership_from_log_le_sm_last_applied,
    get_membership_from_log_gt_sm_last_applied_1,
    get_membership_from_log_gt_sm_last_applied_2,
    get_initial_state_without_init,
    get_initial_state_membership_from_log_and_sm,
    get_initial_state_with_state,
    get_initial_state_last_log_gt_sm,
    get_initial_state_last_log_lt_sm,
    get_initial_state_log_ids,
    get_initial_state_re_apply_committed,
    save_vote,
    get_log_entries,
    limited_get_log_entries,
    try_get_log_entry,
    initial_logs,
    get_log_state,
    get_log_id,
    last_id_in_log,
    last_applied_state,
    purge_logs_upto_0,
    purge_logs_upto_5,
    purge_logs_upto_20,
    delete_logs_since_11,
    delete_logs_since_0,
    append_to_log,
    snapshot_meta,
    apply_single,
    apply_multiple,
);

#[test]
fn transfer_snapshot() {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime
        .block_on(TheSuite::transfer_snapshot(&Builder))
        .expect("transfer_snapshot");
}
