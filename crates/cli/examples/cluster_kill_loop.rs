//! The long leader-kill loop, run only when asked for (`scripts/cluster-kill-loop ROUNDS`; it
//! is a program, not a test, so no test run starts it and none skips it): three real
//! `myelin serve` nodes formed by `autocluster.*`, each on its own loopback address, under
//! write load through every node (the test kit's `Load`); every round SIGKILLs the group's
//! leader, waits for the first acknowledged append sent after the kill, then starts the killed
//! node again on its data and waits until it has caught up. Every `--check-every` rounds and at
//! the end the load pauses, the nodes converge and the history checker runs over every node's
//! whole history: tokens gapless and identical, aggregates' sequences intact, every
//! acknowledged event present exactly once, nothing unsent.
//!
//! It prints, per round, the failover time (SIGKILL to the first acknowledgement of a
//! transaction sent after it) and the new leader's term, and at the end the totals and the
//! failover p50/p90/max. It exits non-zero (panics) at the first failure, keeping the nodes'
//! logs in `$TMPDIR/myelin-test-logs`.
//!
//! Usage: `MYELIN_BIN=target/debug/myelin cluster_kill_loop [ROUNDS] [--check-every N]
//! [--writers N]` (200 rounds, a check every 10, 6 writers by default).

use std::time::{Duration, Instant};

use myelin_testkit::binary::{
    Binary, ClusterPlan, Node, assert_converged_histories, leader_of, wait_until_formed, wait_until_joined,
};
use myelin_testkit::client::last_token;
use myelin_testkit::load::{Load, Targets};

const GROUP: &str = "default";
/// Forming, electing, catching up, converging: each gets this long before the loop fails.
const SETTLE: Duration = Duration::from_secs(120);
/// Transactions acknowledged between two kills, so that every kill lands under load.
const ACKS_PER_ROUND: usize = 20;

struct Options {
    rounds: usize,
    check_every: usize,
    writers: usize,
}

fn options() -> Options {
    let mut options = Options {
        rounds: 200,
        check_every: 10,
        writers: 6,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut number = |name: &str| -> usize {
            args.next()
                .and_then(|value| value.parse().ok())
                .unwrap_or_else(|| panic!("{name} takes a number"))
        };
        match arg.as_str() {
            "--check-every" => options.check_every = number("--check-every").max(1),
            "--writers" => options.writers = number("--writers").max(1),
            "-h" | "--help" => {
                println!(
                    "usage: cluster_kill_loop [ROUNDS] [--check-every N] [--writers N]  (MYELIN_BIN names the binary)"
                );
                std::process::exit(0);
            }
            rounds => {
                options.rounds = rounds
                    .parse()
                    .unwrap_or_else(|_| panic!("not a number of rounds: {rounds}"))
            }
        }
    }
    options
}

/// Waits until the load has `count` more acknowledgements than `from`.
async fn wait_for_acknowledgements(load: &Load, from: usize, count: usize, round: usize) {
    let deadline = Instant::now() + SETTLE;
    while load.acknowledged_transactions() < from + count {
        assert!(
            Instant::now() < deadline,
            "round {round}: only {} of {count} transactions acknowledged within {SETTLE:?}",
            load.acknowledged_transactions() - from
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Waits until `node` holds at least token `token` (it caught up after its restart).
async fn wait_for_token(node: &Node, token: i64, round: usize) {
    let deadline = Instant::now() + SETTLE;
    loop {
        let mut client = node.client().await;
        let last = last_token(&mut client).await;
        if last >= token {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "round {round}: the restarted {} stayed at token {last}, the cluster was at {token}",
            node.address()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let at = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted.get(at).copied().unwrap_or_default()
}

/// Pauses the load, lets the nodes converge and runs the checker; answers the events held.
async fn check(nodes: &[Option<Node>], load: &Load, round: usize) -> usize {
    load.pause().await;
    let running: Vec<&Node> = nodes.iter().flatten().collect();
    let summary = assert_converged_histories(&running, &load.outcomes(), SETTLE).await;
    println!(
        "round {round}: check passed: {} events on every node, {} aggregates, {} acknowledged ids, \
         {} of {} unknown-outcome ids stored",
        summary.events,
        summary.aggregates,
        summary.acknowledged,
        summary.unknown_present,
        summary.unknown_present + summary.unknown_absent
    );
    load.resume();
    summary.events
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let options = options();
    let started = Instant::now();
    let plan = ClusterPlan::autocluster(&Binary::from_env(), 3, GROUP);
    let mut nodes: Vec<Option<Node>> = plan.options.iter().cloned().map(|o| Some(o.start())).collect();
    let targets = Targets::new(nodes.iter().flatten().map(Node::grpc_url));
    let load = Load::start(&targets, options.writers, "kill-loop");
    let first_term = {
        // Until both joins complete, the first node commits alone: killing it then is no test.
        let running: Vec<&Node> = nodes.iter().flatten().collect();
        wait_until_joined(&running[1..], SETTLE).await;
        let leader = wait_until_formed(&running, GROUP, SETTLE).await;
        running[leader].raft_state(GROUP).map_or(0, |s| s.term)
    };
    wait_for_acknowledgements(&load, 0, ACKS_PER_ROUND, 0).await;
    println!(
        "cluster formed in {:?} on {:?}; {} writers; killing the leader {} times",
        started.elapsed(),
        nodes.iter().flatten().map(Node::address).collect::<Vec<_>>(),
        options.writers,
        options.rounds
    );

    let mut failovers = Vec::with_capacity(options.rounds);
    let mut term = first_term;
    for round in 1..=options.rounds {
        let before = load.acknowledged_transactions();
        wait_for_acknowledgements(&load, before, ACKS_PER_ROUND, round).await;
        let leader = {
            let running: Vec<&Node> = nodes.iter().flatten().collect();
            assert_eq!(running.len(), 3, "round {round}: every node runs before the kill");
            wait_until_formed(&running, GROUP, SETTLE).await
        };
        let killed = nodes[leader].take().expect("the leader runs");
        let killed_address = killed.address();
        targets.set(leader, None);
        load.watch_from(Instant::now());
        killed.kill();
        let Some(failover) = load.first_ack_after(SETTLE).await else {
            panic!(
                "round {round}: no write acknowledged within {SETTLE:?} of killing node-{}",
                leader + 1
            );
        };
        failovers.push(failover);
        let (new_leader, new_term) = {
            let running: Vec<&Node> = nodes.iter().flatten().collect();
            let i = leader_of(&running, GROUP).unwrap_or(0);
            (running[i].address(), running[i].raft_state(GROUP).map_or(0, |s| s.term))
        };
        term = term.max(new_term);
        // Node `leader` comes back on its data and must catch up with the cluster.
        let cluster_token = {
            let any = nodes.iter().flatten().next().expect("two nodes run");
            last_token(&mut any.client().await).await
        };
        // What the killed node left on disk keeps the raft state's relations (CLUSTER.md §11
        // item 8); opening its logs recovers their tails as the restart would.
        {
            let data = &plan.data_dirs[leader];
            let control = myelin_control::ControlDb::open(&data.join("data"))
                .unwrap_or_else(|e| panic!("round {round}: node-{}'s control database: {e}", leader + 1));
            let problems = myelin_cluster::invariants::check_stopped_node(&control, &data.join("log"), 16 << 20)
                .unwrap_or_else(|e| panic!("round {round}: node-{}'s logs: {e}", leader + 1));
            assert!(problems.is_empty(), "round {round}: node-{}: {problems:#?}", leader + 1);
        }
        let restarted = plan.options[leader].clone().start();
        targets.set(leader, Some(restarted.grpc_url()));
        wait_for_token(&restarted, cluster_token, round).await;
        nodes[leader] = Some(restarted);
        println!(
            "round {round}: killed node-{} ({killed_address}), first ack after {} ms, leader now {new_leader} in \
             term {new_term}; {} transactions acknowledged",
            leader + 1,
            failover.as_millis(),
            load.acknowledged_transactions()
        );
        if round % options.check_every == 0 && round != options.rounds {
            check(&nodes, &load, round).await;
        }
    }
    let events = check(&nodes, &load, options.rounds).await;
    let report = load.stop().await;
    let mut sorted = failovers.clone();
    sorted.sort();
    println!(
        "done: {} rounds (leader kills) in {:?}; {} transactions acknowledged, {} unknown, {} refused; \
         {events} events on every node; terms {first_term} -> {term} ({} elections); failover \
         p50 {} ms, p90 {} ms, max {} ms",
        options.rounds,
        started.elapsed(),
        report.acknowledged_transactions,
        report.unknown_transactions,
        report.refused_transactions,
        term - first_term,
        percentile(&sorted, 0.5).as_millis(),
        percentile(&sorted, 0.9).as_millis(),
        sorted.last().copied().unwrap_or_default().as_millis(),
    );
    for node in nodes.into_iter().flatten() {
        node.stop();
    }
    drop(plan);
}
