//! Three real `myelin serve` processes formed into a cluster by Axon's `autocluster.*`
//! properties, each on its own loopback address: writes through every node are replicated to
//! every node with identical, gapless tokens; the leader is killed mid-load and every
//! acknowledged transaction survives on the others, which keep accepting writes; the killed
//! node restarts on its data and catches up.

use std::time::Duration;

use myelin_proto::grpc::event::Event;
use myelin_testkit::binary::{
    Binary, ClusterPlan, Node, append_eventually, assert_converged_histories, wait_for_last_token, wait_for_log,
};
use myelin_testkit::events::aggregate_event;
use myelin_testkit::history::Outcomes;

fn myelin() -> Binary {
    Binary::new(env!("CARGO_BIN_EXE_myelin"))
}

/// How long a cluster may take to form, or to elect after a kill, in these tests.
const SETTLE: Duration = Duration::from_secs(60);

/// The test kit's history checker over `nodes` (crates/testkit/src/history.rs), every id in
/// `acknowledged` acknowledged; answers how many events every node holds.
async fn check_histories(nodes: &[&Node], acknowledged: &[String]) -> usize {
    let mut outcomes = Outcomes::new();
    outcomes.acknowledge(acknowledged.iter().cloned());
    assert_converged_histories(nodes, &outcomes, SETTLE).await.events
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_formed_by_autocluster_replicate_survive_a_leader_kill_and_catch_up() {
    let plan = ClusterPlan::autocluster(&myelin(), 3, "default");
    let options = plan.options.clone();
    let mut nodes: Vec<Option<Node>> = options.iter().cloned().map(|o| Some(o.start())).collect();
    for n in nodes.iter().flatten() {
        wait_for_log(n, "cluster: ", SETTLE).await;
    }

    // Writes through every node, each to its own aggregate.
    let mut acknowledged = Vec::new();
    for round in 0..5 {
        for (i, n) in nodes.iter().enumerate() {
            let n = n.as_ref().expect("running");
            let aggregate = format!("through-{}", i + 1);
            append_eventually(n, "default", vec![aggregate_event(&aggregate, round).build()], SETTLE).await;
            acknowledged.push(format!("{aggregate}-{round}"));
        }
    }
    for n in nodes.iter().flatten() {
        wait_for_last_token(n, "default", 14, SETTLE).await;
    }
    let running: Vec<&Node> = nodes.iter().flatten().collect();
    assert_eq!(check_histories(&running, &acknowledged).await, 15);

    // node-1 initialised the cluster and leads it: kill it while node-2 writes.
    let mut sequence = 0;
    let killed_at = 3;
    for batch in 0..8 {
        if batch == killed_at {
            nodes[0].take().expect("running").kill();
            // What it left on disk keeps the raft state's relations (CLUSTER.md §11 item 8).
            let control =
                myelin_control::ControlDb::open(&plan.data_dirs[0].join("data")).expect("its control database");
            let problems =
                myelin_cluster::invariants::check_stopped_node(&control, &plan.data_dirs[0].join("log"), 16 << 20)
                    .expect("its logs open");
            assert!(problems.is_empty(), "{problems:#?}");
            assert!(!control.raft_groups().expect("groups").is_empty());
            drop(control);
        }
        let writer = nodes[1].as_ref().expect("running");
        let events = (0..3)
            .map(|k| aggregate_event("load", sequence + k).build())
            .collect::<Vec<_>>();
        append_eventually(writer, "default", events, SETTLE).await;
        for k in 0..3 {
            acknowledged.push(format!("load-{}", sequence + k));
        }
        sequence += 3;
    }
    let last = 15 + sequence - 1;
    for n in nodes.iter().flatten() {
        wait_for_last_token(n, "default", last, SETTLE).await;
    }

    // node-1 comes back on its own data and catches up.
    nodes[0] = Some(options[0].clone().start());
    let running: Vec<&Node> = nodes.iter().flatten().collect();
    for n in &running {
        wait_for_last_token(n, "default", last, SETTLE).await;
    }
    assert_eq!(check_histories(&running, &acknowledged).await as i64, last + 1);

    // And the cluster still takes writes through the node that was killed.
    append_eventually(
        nodes[0].as_ref().expect("running"),
        "default",
        vec![aggregate_event("after-restart", 0).build()],
        SETTLE,
    )
    .await;
    acknowledged.push("after-restart-0".to_string());
    let running: Vec<&Node> = nodes.iter().flatten().collect();
    for n in &running {
        wait_for_last_token(n, "default", last + 1, SETTLE).await;
    }
    assert_eq!(check_histories(&running, &acknowledged).await as i64, last + 2);
    for n in nodes.into_iter().flatten() {
        n.stop();
    }
    drop(plan);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_filenames_lists_a_groups_segments_newest_first_then_the_active_one() {
    let mut plan = ClusterPlan::autocluster(&myelin(), 3, "default");
    for options in &mut plan.options {
        *options = options
            .clone()
            .setting("axoniq.axonserver.replication.segment-size=4KB");
    }
    let nodes: Vec<Node> = plan.options.iter().cloned().map(|o| o.start()).collect();
    for n in &nodes {
        wait_for_log(n, "cluster: ", SETTLE).await;
    }
    // Enough entries for several 4 KB segments.
    for sequence in 0..40 {
        let event = aggregate_event("rolling", sequence).payload(vec![7u8; 300]).build();
        append_eventually(&nodes[sequence as usize % 3], "default", vec![event], SETTLE).await;
    }
    let http = reqwest::Client::new();
    let list = |node: &Node, name: &str| {
        let url = format!("{}/v1/backup/log/filenames?context={name}", node.http_url());
        let http = http.clone();
        async move { http.get(url).send().await.expect("log/filenames") }
    };
    for (i, node) in nodes.iter().enumerate() {
        let answer = list(node, "default").await;
        assert_eq!(answer.status(), 200);
        let files: Vec<String> = answer.json().await.expect("json");
        assert!(files.len() >= 3, "node {i}: several segments: {files:?}");
        let log_dir = plan.data_dirs[i].join("log").join("default");
        let firsts: Vec<u64> = files
            .iter()
            .map(|f| {
                let path = std::path::Path::new(f);
                assert!(path.is_absolute(), "{f}");
                assert_eq!(path.parent(), Some(log_dir.as_path()), "{f}");
                let name = path.file_name().and_then(|n| n.to_str()).expect("name");
                assert!(name.ends_with(".log") && name.len() == 24, "{name}");
                name[..20].parse().expect("index")
            })
            .collect();
        let (closed, active) = firsts.split_at(firsts.len() - 1);
        assert!(
            closed.windows(2).all(|w| w[0] > w[1]),
            "closed newest first: {firsts:?}"
        );
        assert!(active[0] > closed[0], "the active segment comes last: {firsts:?}");
        assert_eq!(*closed.last().expect("oldest"), 1, "the log starts at entry 1");
        // The closed files do not change between two listings.
        let digest = |f: &String| std::fs::read(f).expect("read");
        let before: Vec<Vec<u8>> = files[..files.len() - 1].iter().map(digest).collect();
        let again: Vec<String> = list(node, "default").await.json().await.expect("json");
        let after: Vec<Vec<u8>> = again[..files.len() - 1].iter().map(digest).collect();
        assert!(before == after, "node {i}: closed segments are stable");
    }
    let admin: Vec<String> = list(&nodes[0], "_admin").await.json().await.expect("json");
    assert!(
        admin.last().is_some_and(|f| f.ends_with("00000000000000000001.log")),
        "{admin:?}"
    );
    assert_eq!(list(&nodes[0], "nowhere").await.status(), 404);
    for n in nodes {
        n.stop();
    }
}

/// `count` one-event transactions of aggregate `compacted` from `sequence` on, each recorded as
/// acknowledged (the caller appends them until they are).
fn next_events(acknowledged: &mut Vec<String>, sequence: &mut i64, count: i64) -> Vec<Vec<Event>> {
    let events = (0..count)
        .map(|k| {
            vec![
                aggregate_event("compacted", *sequence + k)
                    .payload(vec![1u8; 300])
                    .build(),
            ]
        })
        .collect();
    acknowledged.extend((0..count).map(|k| format!("compacted-{}", *sequence + k)));
    *sequence += count;
    events
}

/// `POST /internal/raft/context/{group}/cleanLogEntries/{seconds}` on `node`.
async fn clean(http: &reqwest::Client, node: &Node, group: &str) -> serde_json::Value {
    let answer = http
        .post(format!(
            "{}/internal/raft/context/{group}/cleanLogEntries/0",
            node.http_url()
        ))
        .send()
        .await
        .expect("cleanLogEntries");
    assert_eq!(answer.status(), 200, "{}", node.log());
    answer.json().await.expect("json")
}

async fn log_files(http: &reqwest::Client, node: &Node) -> Vec<String> {
    http.get(format!("{}/v1/backup/log/filenames?context=default", node.http_url()))
        .send()
        .await
        .expect("log/filenames")
        .json()
        .await
        .expect("json")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_waits_for_backups_and_a_member_behind_it_catches_up_by_snapshot() {
    let mut plan = ClusterPlan::autocluster(&myelin(), 3, "default");
    for options in &mut plan.options {
        *options = options
            .clone()
            .setting("axoniq.axonserver.replication.segment-size=4KB")
            .setting("axoniq.axonserver.replication.sync-interval=50");
    }
    let mut nodes: Vec<Option<Node>> = plan.options.iter().cloned().map(|o| Some(o.start())).collect();
    for n in nodes.iter().flatten() {
        wait_for_log(n, "cluster: ", SETTLE).await;
    }
    let mut acknowledged = Vec::new();
    let mut sequence = 0;
    let first = next_events(&mut acknowledged, &mut sequence, 200);
    for events in first {
        append_eventually(nodes[0].as_ref().expect("running"), "default", events, SETTLE).await;
    }
    for n in nodes.iter().flatten() {
        wait_for_last_token(n, "default", 199, SETTLE).await;
    }
    // node-3 goes away; the others go on and compact what it has not seen.
    nodes[2].take().expect("running").stop();
    for events in next_events(&mut acknowledged, &mut sequence, 100) {
        append_eventually(nodes[0].as_ref().expect("running"), "default", events, SETTLE).await;
    }
    let http = reqwest::Client::new();
    let leader = nodes[0].as_ref().expect("running");
    // Applied positions are recorded every 50 ms here; give them a moment.
    tokio::time::sleep(Duration::from_millis(500)).await;

    // A live lease: the log is purged, but not one file goes.
    let lease: serde_json::Value = http
        .post(format!("{}/v1/backup/lease", leader.http_url()))
        .json(&serde_json::json!({"ttlSeconds": 600}))
        .send()
        .await
        .expect("lease")
        .json()
        .await
        .expect("json");
    let before = log_files(&http, leader).await;
    let held = clean(&http, leader, "default").await;
    assert!(held["purgedThrough"].as_u64().is_some_and(|p| p > 0), "{held}");
    assert_eq!(held["deleted"], serde_json::json!([]), "nothing deleted under a lease");
    assert_eq!(log_files(&http, leader).await, before, "every file still listed");
    let released = http
        .delete(format!(
            "{}/v1/backup/lease/{}",
            leader.http_url(),
            lease["id"].as_str().expect("id")
        ))
        .send()
        .await
        .expect("release");
    assert!(released.status().is_success());
    let cleaned = clean(&http, leader, "default").await;
    let deleted = cleaned["deleted"].as_array().expect("deleted").len();
    assert!(deleted > 0, "after the release the files go: {cleaned}");
    let after = log_files(&http, leader).await;
    assert!(
        !after.iter().any(|f| f.ends_with("00000000000000000001.log")),
        "{after:?}"
    );
    assert_eq!(after.len(), before.len() - deleted);

    // After a control-DB backup, cleaning pauses (on that node) even without a lease.
    let second = nodes[1].as_ref().expect("running");
    let zip = http
        .post(format!("{}/v1/backup/createControlDbBackup", second.http_url()))
        .send()
        .await
        .expect("controldb backup");
    assert!(zip.status().is_success());
    let paused = clean(&http, second, "default").await;
    assert_eq!(
        paused["deleted"],
        serde_json::json!([]),
        "paused after a control-DB backup: {paused}"
    );

    // node-3 returns behind the leader's purge point: a snapshot brings it the 100 events it
    // lacks, not the whole store.
    nodes[2] = Some(plan.options[2].clone().start());
    for n in nodes.iter().flatten() {
        wait_for_last_token(n, "default", 299, SETTLE).await;
    }
    let sent: u64 = nodes
        .iter()
        .flatten()
        .flat_map(|n| {
            n.log()
                .lines()
                .filter(|l| l.contains("sent a snapshot's missing transactions"))
                .filter_map(|l| l.split("bytes=").nth(1)?.split_whitespace().next()?.parse::<u64>().ok())
                .collect::<Vec<_>>()
        })
        .sum();
    assert!(sent > 0, "node-3 caught up by snapshot");
    assert!(sent < 100 * 600, "only the missing events were sent ({sent} bytes)");
    let all: Vec<&Node> = nodes.iter().flatten().collect();
    assert_eq!(check_histories(&all, &acknowledged).await, 300);
    // And it keeps up afterwards, through the log.
    for events in next_events(&mut acknowledged, &mut sequence, 5) {
        append_eventually(nodes[2].as_ref().expect("running"), "default", events, SETTLE).await;
    }
    for n in nodes.iter().flatten() {
        wait_for_last_token(n, "default", 304, SETTLE).await;
    }
    for n in nodes.into_iter().flatten() {
        n.stop();
    }
}
