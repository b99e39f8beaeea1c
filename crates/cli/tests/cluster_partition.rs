//! A network partition with real processes: three `myelin serve` nodes in a network namespace
//! of the test's own (the test kit's `Network`), the group's leader cut off from the other two
//! by `ip rule ... prohibit` while writers append through every node:
//!
//! - writes sent to the isolated old leader are never acknowledged (they time out: it cannot
//!   reach a majority), and none of them is ever stored;
//! - the two others elect a new leader among themselves and acknowledge writes;
//! - once the partition heals, all three hold the same history, and no acknowledged write is
//!   lost (the history checker).
//!
//! It needs root (network namespaces and policy rules) and fails, saying so, without it. The
//! namespace, its link and every rule are removed when the test ends, passing or failing.

use std::time::{Duration, Instant};

use myelin_testkit::binary::{
    Binary, Cluster, ClusterPlan, Network, Node, assert_converged_histories, leader_of, wait_for_leader,
    wait_until_formed, wait_until_joined,
};
use myelin_testkit::load::{Load, Targets};

fn myelin() -> Binary {
    Binary::new(env!("CARGO_BIN_EXE_myelin"))
}

/// How long the cluster may take to form, elect or converge (elections take 1–2.5 s).
const SETTLE: Duration = Duration::from_secs(60);
/// Writers through every node, two per node.
const WRITERS: usize = 6;
/// Writers sending straight to the isolated leader while it is cut off.
const ISOLATED_WRITERS: usize = 2;
/// Each of those gives up on a call after this long (the outcome is then unknown).
const ISOLATED_CALL_TIMEOUT: Duration = Duration::from_secs(2);
/// Transactions the majority must acknowledge while the partition lasts.
const ACKNOWLEDGED_WHILE_PARTITIONED: usize = 50;
/// Calls the isolated writers must have seen time out before the partition heals.
const ISOLATED_TIMEOUTS: usize = 4;
const GROUP: &str = "default";

/// Waits until `load` has `count` more acknowledged transactions than `from`.
async fn wait_for_acknowledgements(load: &Load, from: usize, count: usize, what: &str) {
    let deadline = Instant::now() + SETTLE;
    while load.acknowledged_transactions() < from + count {
        assert!(
            Instant::now() < deadline,
            "{what}: only {} of {count} transactions acknowledged within {SETTLE:?}",
            load.acknowledged_transactions() - from
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_cut_off_from_the_majority_acknowledges_nothing_while_the_majority_elects_and_after_healing_no_acknowledged_write_is_lost()
 {
    // Declared first, so dropped last: the nodes stop before their network goes.
    let mut network = Network::create(3);
    let plan = ClusterPlan::autocluster_in(&myelin(), &network, GROUP);
    let nodes: Vec<Node> = Cluster::start(plan.options.clone()).into_nodes();
    let all: Vec<&Node> = nodes.iter().collect();
    let targets = Targets::new(nodes.iter().map(Node::grpc_url));

    // Writes through every node; the cluster forms and acknowledges some. Partitioned before
    // both joins complete, the leader could still commit alone, or a membership change half
    // done (joint consensus) would leave the others no majority of their own.
    let load = Load::start(&targets, WRITERS, "main");
    wait_until_joined(&all[1..], SETTLE).await;
    wait_until_formed(&all, GROUP, SETTLE).await;
    wait_for_acknowledgements(&load, 0, 30, "before the partition").await;
    let old = wait_for_leader(&all, GROUP, SETTLE).await;
    let old_term = nodes[old].raft_state(GROUP).expect("the leader logged its state").term;
    let majority: Vec<&Node> = (0..nodes.len()).filter(|i| *i != old).map(|i| &nodes[i]).collect();

    // Cut the leader off from both others; the test still reaches it.
    network.isolate(old);
    let partitioned_at = Instant::now();
    // The main writers bound to the old leader wait; what they had in flight is unknown.
    targets.set(old, None);
    let isolated_targets = Targets::new([nodes[old].grpc_url()]);
    let isolated = Load::start_with_timeout(&isolated_targets, ISOLATED_WRITERS, "isolated", ISOLATED_CALL_TIMEOUT);

    // The majority elects one of its own, in a later term, and acknowledges writes.
    let acknowledged_before = load.acknowledged_transactions();
    let deadline = Instant::now() + SETTLE;
    let new = loop {
        if let Some(i) = leader_of(&majority, GROUP) {
            break i;
        }
        assert!(
            Instant::now() < deadline,
            "the majority elected no leader within {SETTLE:?} of the partition; rules:\n{}",
            network.rules()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let new_term = majority[new].raft_state(GROUP).expect("logged").term;
    assert!(
        new_term > old_term,
        "the new leader's term {new_term} follows {old_term}"
    );
    wait_for_acknowledgements(
        &load,
        acknowledged_before,
        ACKNOWLEDGED_WHILE_PARTITIONED,
        "partitioned",
    )
    .await;
    let deadline = Instant::now() + SETTLE;
    while isolated.unknown_transactions() < ISOLATED_TIMEOUTS {
        assert!(
            Instant::now() < deadline,
            "the isolated writers saw too few calls time out within {SETTLE:?}: {} timed out, {} refused, {} \
             acknowledged",
            isolated.unknown_transactions(),
            isolated.refused_transactions(),
            isolated.acknowledged_transactions()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let elected_after = partitioned_at.elapsed();

    // The isolated writers stop before the partition heals: once it has, the old leader would
    // pass their calls on to the new one.
    let isolated = isolated.stop().await;
    assert_eq!(
        isolated.acknowledged_transactions, 0,
        "the isolated old leader acknowledged {} transaction(s) it could not have replicated",
        isolated.acknowledged_transactions
    );

    // Heal; the old leader's writers resume; everyone converges.
    network.heal();
    targets.set(old, Some(nodes[old].grpc_url()));
    let acknowledged_before = load.acknowledged_transactions();
    wait_for_acknowledgements(&load, acknowledged_before, 30, "after healing").await;
    let report = load.stop().await;
    let mut outcomes = report.outcomes;
    // Stronger than "at most once": the old leader could never commit what it took alone.
    outcomes.reject(isolated.outcomes.unknown_ids().cloned());
    outcomes.merge(isolated.outcomes);
    let summary = assert_converged_histories(&all, &outcomes, SETTLE).await;
    eprintln!(
        "partition: {} transactions acknowledged ({} unknown, {} refused), {} events on every node; \
         {} calls to the isolated leader timed out and {} were refused, none acknowledged or stored; new leader \
         in term {new_term} (was {old_term}); partition held {elected_after:?}",
        report.acknowledged_transactions,
        report.unknown_transactions,
        report.refused_transactions,
        summary.events,
        isolated.unknown_transactions,
        isolated.refused_transactions,
    );
    for node in nodes {
        node.stop();
    }
    drop(network);
}
