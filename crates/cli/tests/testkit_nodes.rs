//! The test kit's real-process harness, several nodes at once: three `myelin serve` processes
//! on 127.0.0.1, 127.0.0.2 and 127.0.0.3, each answering on its own address over its own data,
//! then all stopped cleanly and gone. The cluster tests stand on this; and a node that cannot
//! start fails the test with its log kept.

use std::collections::HashSet;
use std::path::Path;

use myelin_testkit::binary::{Binary, Cluster, loopback, loopback_nodes};
use myelin_testkit::client::{append, last_token};
use myelin_testkit::events::drill_event;

/// The binary under test (or the one `MYELIN_BIN` names).
fn myelin() -> Binary {
    Binary::new(env!("CARGO_BIN_EXE_myelin"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_run_at_once_each_on_its_own_loopback_address_and_stop_cleanly() {
    let cluster = Cluster::start(loopback_nodes(&myelin(), 3));
    assert_eq!(cluster.len(), 3);
    let http = reqwest::Client::new();
    for (i, node) in cluster.nodes().iter().enumerate() {
        let own = loopback(i as u8 + 1);
        assert_eq!(node.address(), own);
        assert_eq!(
            node.grpc_address().ip(),
            own,
            "node {i} listens for gRPC on its own address"
        );
        assert_eq!(
            node.http_address().ip(),
            own,
            "node {i} listens for HTTP on its own address"
        );
        let mut client = node.client().await;
        assert_eq!(
            last_token(&mut client).await,
            -1,
            "node {i} answers gRPC, over an empty store"
        );
        let health = http
            .get(format!("{}/actuator/health", node.http_url()))
            .send()
            .await
            .expect("health");
        assert_eq!(health.status(), 200, "node {i} answers HTTP");
    }
    let data_dirs: HashSet<&Path> = cluster.nodes().iter().map(|node| node.data_dir()).collect();
    assert_eq!(data_dirs.len(), 3, "each node has its own data directory");

    // What one node stores, the others do not see.
    let mut first = cluster[0].client().await;
    append(&mut first, vec![drill_event("only-on-1", 0, false)])
        .await
        .expect("append to node 1");
    assert_eq!(last_token(&mut first).await, 0);
    for node in &cluster.nodes()[1..] {
        assert_eq!(last_token(&mut node.client().await).await, -1, "{}", node.address());
    }
    drop(first);

    let pids: Vec<u32> = cluster.nodes().iter().map(|node| node.pid()).collect();
    cluster.stop();
    for pid in pids {
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists(),
            "process {pid} is gone after the stop"
        );
    }
}

#[test]
fn a_node_that_cannot_start_fails_the_test_with_its_log_kept() {
    let options = myelin().node().setting("myelin.durabilty=fsync");
    let failure = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| options.start()))
        .expect_err("a misspelt setting stops the start");
    let message = failure.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(
        message.contains("exited (exit status: 1) before it listened"),
        "{message}"
    );
    assert!(message.contains("unknown property `myelin.durabilty`"), "{message}");
    let kept = message
        .split("its log is kept at ")
        .nth(1)
        .and_then(|rest| rest.split(", ending with").next())
        .unwrap_or_else(|| panic!("the kept log is named: {message}"));
    let log = std::fs::read_to_string(kept).unwrap_or_else(|error| panic!("{kept}: {error}"));
    assert!(log.contains("myelin.durabilty"), "{log}");
    std::fs::remove_file(kept).expect("the kept log is removed after checking it");
}
