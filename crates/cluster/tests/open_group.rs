//! Opening a replication group is idempotent, also when two callers open it at once. During
//! formation that happens on the first node: applying `_admin`'s "group configured" entry opens
//! `default` in the background (this node is a member) while the formation opens it to
//! initialise it. Both created the log's first segment and the loser failed with "File
//! exists"; when the loser was the formation, the first node never initialised `default` and
//! the cluster never formed (found by crates/cli/tests/cluster_partition.rs, about one
//! formation in thirty).

use std::sync::Arc;

use myelin_cluster::{ClusterConfig, ClusterNode};
use myelin_control::ControlDb;
use myelin_node::{Node, NodeIdentity, Provisioner};
use myelin_store::ContextStore;

/// Groups opened in pairs; without the fix one pair in ten or so failed, and a run of 20
/// pairs failed four times in five.
const GROUPS: usize = 64;

/// Opens and deletes no context: the test only opens groups.
struct NoContexts;

impl Provisioner for NoContexts {
    fn open_context(&self, name: &str) -> Result<Arc<ContextStore>, String> {
        Err(format!("this test opens no context ({name})"))
    }

    fn delete_context_data(&self, name: &str) -> Result<(), String> {
        Err(format!("this test deletes no context ({name})"))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_opened_twice_at_once_is_opened_once_and_both_callers_get_it() {
    let dir = tempfile::tempdir().unwrap();
    let control = Arc::new(ControlDb::open(dir.path()).unwrap());
    let identity = NodeIdentity {
        name: "node-1".into(),
        host_name: "127.0.0.1".into(),
        internal_host_name: "127.0.0.1".into(),
        ..NodeIdentity::default()
    };
    let node = Arc::new(Node::new(identity, control, Arc::new(NoContexts)));
    let mut config = ClusterConfig::default();
    config.replication.log_storage_folder = dir.path().join("log");
    let cluster = ClusterNode::new(node, config).unwrap();
    for i in 0..GROUPS {
        let name = format!("group-{i}");
        let (first, second) = tokio::join!(cluster.open_group(&name), cluster.open_group(&name));
        let first = first.unwrap_or_else(|e| panic!("the first open of {name} failed: {e}"));
        let second = second.unwrap_or_else(|e| panic!("the second open of {name} failed: {e}"));
        assert!(Arc::ptr_eq(&first, &second), "both callers get the one open {name}");
    }
    cluster.shutdown().await;
}
