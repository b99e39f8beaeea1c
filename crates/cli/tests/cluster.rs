//! Three real `myelin serve` processes formed into a cluster by Axon's `autocluster.*`
//! properties, each on its own loopback address: writes through every node are replicated to
//! every node with identical, gapless tokens; the leader is killed mid-load and every
//! acknowledged transaction survives on the others, which keep accepting writes; the killed
//! node restarts on its data and catches up.

use std::time::{Duration, Instant};

use myelin_proto::grpc::event::Event;
use myelin_testkit::binary::{Binary, ClusterPlan, Node, assert_converged_histories};
use myelin_testkit::client::{append, last_token};
use myelin_testkit::events::aggregate_event;
use myelin_testkit::history::Outcomes;

fn myelin() -> Binary {
    Binary::new(env!("CARGO_BIN_EXE_myelin"))
}

/// How long a cluster may take to form, or to elect after a kill, in these tests.
const SETTLE: Duration = Duration::from_secs(60);

/// Appends one transaction through `node`, retrying while the cluster forms or elects. A retry
/// refused for its sequence (OUT_OF_RANGE) means an earlier attempt whose answer was lost did
/// store it; the history check afterwards confirms each event is there once.
async fn append_eventually(node: &Node, events: Vec<Event>) {
    let deadline = Instant::now() + SETTLE;
    let mut failed_before = false;
    loop {
        let mut client = node.client().await;
        match append(&mut client, events.clone()).await {
            Ok(()) => return,
            Err(status) if failed_before && status.code() == tonic::Code::OutOfRange => return,
            Err(status) if Instant::now() < deadline => {
                eprintln!("append through {} not yet: {status}", node.address());
                failed_before = true;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(status) => panic!("append through {} failed: {status}\n{}", node.address(), node.log()),
        }
    }
}

/// Waits until `node` holds `last` as its last token.
async fn wait_for_last_token(node: &Node, last: i64) {
    let deadline = Instant::now() + SETTLE;
    loop {
        let token = last_token(&mut node.client().await).await;
        if token == last {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{} stayed at token {token}, expected {last}\n{}",
            node.address(),
            node.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_formed_by_autocluster_replicate_survive_a_leader_kill_and_catch_up() {
    let plan = ClusterPlan::autocluster(&myelin(), 3, "default");
    let options = plan.options.clone();
    let mut nodes: Vec<Option<Node>> = options.iter().cloned().map(|o| Some(o.start())).collect();

    // Writes through every node, each to its own aggregate.
    let mut acknowledged = Outcomes::new();
    for round in 0..5 {
        for (i, n) in nodes.iter().enumerate() {
            let n = n.as_ref().expect("running");
            let aggregate = format!("through-{}", i + 1);
            append_eventually(n, vec![aggregate_event(&aggregate, round).build()]).await;
            acknowledged.acknowledge([format!("{aggregate}-{round}")]);
        }
    }
    for n in nodes.iter().flatten() {
        wait_for_last_token(n, 14).await;
    }
    let running: Vec<&Node> = nodes.iter().flatten().collect();
    assert_eq!(
        assert_converged_histories(&running, &acknowledged, SETTLE).await.events,
        15
    );

    // node-1 initialised the cluster and leads it: kill it while node-2 writes.
    let mut sequence = 0;
    let killed_at = 3;
    for batch in 0..8 {
        if batch == killed_at {
            nodes[0].take().expect("running").kill();
        }
        let writer = nodes[1].as_ref().expect("running");
        let events = (0..3)
            .map(|k| aggregate_event("load", sequence + k).build())
            .collect::<Vec<_>>();
        append_eventually(writer, events).await;
        acknowledged.acknowledge((0..3).map(|k| format!("load-{}", sequence + k)));
        sequence += 3;
    }
    let last = 15 + sequence - 1;
    for n in nodes.iter().flatten() {
        wait_for_last_token(n, last).await;
    }

    // node-1 comes back on its own data and catches up.
    nodes[0] = Some(options[0].clone().start());
    let running: Vec<&Node> = nodes.iter().flatten().collect();
    for n in &running {
        wait_for_last_token(n, last).await;
    }
    assert_eq!(
        assert_converged_histories(&running, &acknowledged, SETTLE).await.events as i64,
        last + 1
    );

    // And the cluster still takes writes through the node that was killed.
    append_eventually(
        nodes[0].as_ref().expect("running"),
        vec![aggregate_event("after-restart", 0).build()],
    )
    .await;
    acknowledged.acknowledge(["after-restart-0"]);
    let running: Vec<&Node> = nodes.iter().flatten().collect();
    for n in &running {
        wait_for_last_token(n, last + 1).await;
    }
    assert_converged_histories(&running, &acknowledged, SETTLE).await;
    for n in nodes.into_iter().flatten() {
        n.stop();
    }
    drop(plan);
}
