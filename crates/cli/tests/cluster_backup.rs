//! Backups of a cluster node, on real processes each on its own loopback address: `myelin
//! backup` of a PRIMARY while a writer appends through every node, `myelin verify`, then the
//! two ways back — a re-seed that forms a new cluster from one node's data which empty nodes
//! join, and a whole-cluster restore of every node from its own backup — and the refusal of a
//! node restored without either by the cluster it came from (CLUSTER.md §10.8, §11 item 11).

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use base64::Engine as _;
use myelin_proto::grpc::event::Event;
use myelin_proto::grpc::event::event_store_client::EventStoreClient;
use myelin_testkit::binary::{
    Binary, ClusterPlan, Node, NodeOptions, append_eventually, output_text, wait_for_last_token, wait_for_log,
};
use myelin_testkit::client::{append, events_between, history, last_token};
use myelin_testkit::events::aggregate_event;

fn myelin() -> Binary {
    Binary::new(env!("CARGO_BIN_EXE_myelin"))
}

/// How long a cluster may take to form, elect or catch up in these tests.
const SETTLE: Duration = Duration::from_secs(90);

/// A plan whose log segments are small, so that every group has several closed ones.
fn plan() -> ClusterPlan {
    small_segments(ClusterPlan::autocluster(&myelin(), 3, "default"))
}

fn small_segments(mut plan: ClusterPlan) -> ClusterPlan {
    for options in &mut plan.options {
        *options = options
            .clone()
            .setting("axoniq.axonserver.replication.segment-size=4KB")
            .setting("axoniq.axonserver.replication.sync-interval=50");
    }
    plan
}

/// The same events at the same tokens on every node, tokens gapless from 0; answers them.
async fn same_history(nodes: &[&Node]) -> Vec<(i64, Event)> {
    let first = history(&mut nodes[0].client().await).await;
    for (position, (token, _)) in first.iter().enumerate() {
        assert_eq!(*token, position as i64, "tokens are gapless from 0");
    }
    for node in &nodes[1..] {
        let other = history(&mut node.client().await).await;
        assert!(
            other == first,
            "{} holds the same {} events at the same tokens (it holds {})",
            node.address(),
            first.len(),
            other.len()
        );
    }
    first
}

/// A transaction of one event with a payload, of an aggregate of its own.
fn transaction(name: &str) -> Vec<Event> {
    vec![aggregate_event(name, 0).payload(vec![7u8; 300]).build()]
}

/// Appends through the nodes in turn until told to stop; answers how many were acknowledged.
fn spawn_writer(urls: Vec<String>, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<usize> {
    tokio::spawn(async move {
        let mut clients = Vec::new();
        for url in &urls {
            clients.push(EventStoreClient::connect(url.clone()).await.expect("writer connects"));
        }
        let mut written = 0;
        while !stop.load(Ordering::Relaxed) {
            let client = &mut clients[written % urls.len()];
            // No fault is injected here: every append must succeed at once.
            append(client, transaction(&format!("during-backup-{written}")))
                .await
                .unwrap_or_else(|status| panic!("the writer's append {written} failed: {status}"));
            written += 1;
        }
        written
    })
}

/// Runs `myelin <args>` off the async threads; answers its stdout and how long it took.
async fn run(args: Vec<String>) -> (String, Duration) {
    tokio::task::spawn_blocking(move || {
        let started = Instant::now();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let output = myelin().run(&args);
        let elapsed = started.elapsed();
        assert!(output.status.success(), "myelin {args:?}\n{}", output_text(&output));
        (String::from_utf8_lossy(&output.stdout).into_owned(), elapsed)
    })
    .await
    .expect("the command ran")
}

/// The newest manifest of a backup directory, as JSON.
fn manifest(dir: &Path) -> serde_json::Value {
    let mut manifests: Vec<PathBuf> = std::fs::read_dir(dir.join("manifests"))
        .expect("manifests")
        .map(|e| e.expect("entry").path())
        .collect();
    manifests.sort();
    let newest = manifests.last().expect("a manifest");
    serde_json::from_slice(&std::fs::read(newest).expect("read")).expect("json")
}

/// Bytes under `dir`.
fn size_of(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| match e.file_type() {
                    Ok(t) if t.is_dir() => size_of(&e.path()),
                    _ => e.metadata().map_or(0, |m| m.len()),
                })
                .sum()
        })
        .unwrap_or(0)
}

/// The streaming route serves exactly the files the log listing names: closed ones with their
/// digest and ranges, the active one ending on an entry boundary. The group has at least
/// `files` segments.
async fn check_log_streaming(node: &Node, group: &str, files: usize) {
    let http = reqwest::Client::new();
    let listed: Vec<String> = http
        .get(format!("{}/v1/backup/log/filenames?context={group}", node.http_url()))
        .send()
        .await
        .expect("listing")
        .json()
        .await
        .expect("json");
    assert!(listed.len() >= files, "{group}: {listed:?}");
    for (i, path) in listed.iter().enumerate() {
        let name = Path::new(path).file_name().and_then(|n| n.to_str()).expect("name");
        let url = format!("{}/v1/backup/files/log/{group}/{name}", node.http_url());
        let answer = http.get(&url).send().await.expect("download");
        assert_eq!(answer.status(), 200, "{url}");
        let length: u64 = answer
            .headers()
            .get("content-length")
            .and_then(|v| v.to_str().ok()?.parse().ok())
            .expect("Content-Length");
        let digest = answer
            .headers()
            .get("repr-digest")
            .and_then(|v| v.to_str().ok())
            .expect("Repr-Digest")
            .to_string();
        let active = i + 1 == listed.len();
        assert_eq!(answer.headers().get("x-myelin-active-segment").is_some(), active);
        let body = answer.bytes().await.expect("body");
        assert_eq!(body.len() as u64, length);
        let sha = {
            use sha2::Digest;
            sha2::Sha256::digest(&body)
        };
        assert_eq!(
            digest,
            format!("sha-256=:{}:", base64::engine::general_purpose::STANDARD.encode(sha))
        );
        let scan = myelin_backup::logscan::scan_log(&body, 0);
        if active {
            assert_eq!(
                scan.ending,
                myelin_backup::logscan::LogEnding::EndOfFile,
                "the active segment ends on an entry boundary"
            );
            assert_eq!(scan.valid_len, length);
        } else {
            assert!(!matches!(
                scan.ending,
                myelin_backup::logscan::LogEnding::Damaged { .. }
            ));
            let part = http
                .get(&url)
                .header("range", "bytes=5-24")
                .send()
                .await
                .expect("range");
            assert_eq!(part.status(), 206);
            assert_eq!(&part.bytes().await.expect("part")[..], &body[5..25]);
        }
    }
    let missing = http
        .get(format!(
            "{}/v1/backup/files/log/{group}/00000000000000000000.log",
            node.http_url()
        ))
        .send()
        .await
        .expect("unlisted");
    assert_eq!(missing.status(), 404, "an unlisted name is not served");
}

/// Options for a node that is not part of `plan`: its own loopback address and data, the
/// settings of node `like` otherwise, with `overrides` last (later settings win).
fn outsider(
    plan: &ClusterPlan,
    like: usize,
    address: std::net::IpAddr,
    data: &Path,
    overrides: &[String],
) -> NodeOptions {
    let mut options = plan.options[like]
        .clone()
        .address(address)
        .data_dir(data.join("data"))
        .setting(format!("axoniq.axonserver.hostname={address}"))
        .setting(format!("axoniq.axonserver.internal-hostname={address}"))
        .setting(format!(
            "axoniq.axonserver.replication.log-storage-folder={}",
            data.join("log").display()
        ));
    for setting in overrides {
        options = options.setting(setting.clone());
    }
    options
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_primary_backed_up_under_load_reseeds_a_new_cluster_and_a_node_restored_without_a_path_is_refused() {
    let old = plan();
    let nodes: Vec<Node> = old.options.iter().cloned().map(NodeOptions::start).collect();
    for n in &nodes {
        wait_for_log(n, "cluster: ", SETTLE).await;
    }
    for k in 0..300 {
        append_eventually(&nodes[k % 3], "default", transaction(&format!("before-{k}")), SETTLE).await;
    }

    // node-2, a PRIMARY that does not lead, is backed up — streamed, then by path — while a
    // writer appends through every node.
    let backups = tempfile::tempdir().expect("backups");
    let (streamed, local) = (backups.path().join("streamed"), backups.path().join("local"));
    let stop = Arc::new(AtomicBool::new(false));
    let writer = spawn_writer(nodes.iter().map(Node::grpc_url).collect(), stop.clone());
    let server = nodes[1].http_url();
    let backup = |to: &Path, fetch: &str| {
        vec![
            "backup".to_string(),
            format!("--server={server}"),
            format!("--to={}", to.display()),
            format!("--fetch={fetch}"),
        ]
    };
    let (streamed_out, streamed_took) = run(backup(&streamed, "stream")).await;
    let (_, local_took) = run(backup(&local, "local")).await;
    // And once more into the first target: the log is replaced, not added to.
    let (again_out, again_took) = run(backup(&streamed, "stream")).await;
    stop.store(true, Ordering::Relaxed);
    let during = writer.await.expect("writer");
    assert!(during > 0, "the writer appended while the backups ran");
    assert!(streamed_out.contains("log of group _admin"), "{streamed_out}");
    assert!(again_out.contains("log of group default"), "{again_out}");

    for dir in [&streamed, &local] {
        let (out, took) = run(vec!["verify".to_string(), dir.display().to_string()]).await;
        assert!(out.contains("OK: backup run"), "{out}");
        eprintln!(
            "figures: verify of {} ({} bytes) took {took:?}",
            dir.display(),
            size_of(dir)
        );
    }
    let recorded = manifest(&streamed);
    let cluster = &recorded["cluster"];
    assert_eq!(cluster["nodeName"], "node-2", "{cluster}");
    for group in ["_admin", "default"] {
        let files = cluster["groups"][group]["files"].as_array().expect("files");
        assert!(files.iter().any(|f| f["active"] == true), "{group}: {files:?}");
        let applied = &cluster["groups"][group]["raftState"]["applied"];
        assert!(applied["index"].as_u64().is_some(), "{group}: {cluster}");
    }
    assert!(
        cluster["groups"]["default"]["files"].as_array().expect("files").len() >= 3,
        "several closed segments"
    );
    // Every log file in the target is one the newest manifest lists.
    let listed: Vec<&str> = cluster["groups"]
        .as_object()
        .expect("groups")
        .values()
        .flat_map(|g| g["files"].as_array().expect("files").iter())
        .filter_map(|f| f["path"].as_str())
        .collect();
    for group in ["_admin", "default"] {
        for entry in std::fs::read_dir(streamed.join("log").join(group)).expect("log dir") {
            let name = entry.expect("entry").file_name().into_string().expect("name");
            let key = format!("log/{group}/{name}");
            assert!(listed.contains(&key.as_str()), "{key} is left over from an earlier run");
        }
    }
    let backed_up = recorded["contexts"]["default"]["lastToken"]
        .as_i64()
        .expect("last token");
    assert!(backed_up >= 299, "{recorded}");
    check_log_streaming(&nodes[1], "default", 3).await;
    check_log_streaming(&nodes[1], "_admin", 1).await;
    let old_history = events_between(&mut nodes[0].client().await, 0, backed_up).await;

    // Re-seed: node-1 of a new cluster, on new addresses, from node-2's backup.
    let new = plan();
    let (restore_out, restore_took) = run(vec![
        "restore".to_string(),
        streamed.display().to_string(),
        format!("--data={}", new.data_dirs[0].join("data").display()),
        format!("--log-dir={}", new.data_dirs[0].join("log").display()),
        "--reseed".to_string(),
    ])
    .await;
    assert!(restore_out.contains("re-seed"), "{restore_out}");
    eprintln!(
        "figures: {} events ({} bytes backed up); backup streamed {streamed_took:?}, by path {local_took:?}, \
         again {again_took:?}; restore --reseed {restore_took:?}",
        backed_up + 1,
        size_of(&streamed),
    );
    let first = new.options[0].clone().start();
    wait_for_log(&first, "cluster: Initialised", SETTLE).await;
    wait_for_last_token(&first, "default", backed_up, SETTLE).await;
    let served = history(&mut first.client().await).await;
    assert!(
        served == old_history,
        "the new cluster serves every event of the backup"
    );
    append_eventually(&first, "default", transaction("after-reseed"), SETTLE).await;
    wait_for_last_token(&first, "default", backed_up + 1, SETTLE).await;
    let ours = events_between(&mut first.client().await, backed_up + 1, backed_up + 1).await;
    assert_eq!(
        ours[0].1.aggregate_identifier, "after-reseed",
        "the next write gets the next token"
    );

    // Two empty nodes join it and catch up.
    let joiners: Vec<Node> = new.options[1..].iter().cloned().map(NodeOptions::start).collect();
    for n in &joiners {
        wait_for_log(n, "cluster: ", SETTLE).await;
    }
    append_eventually(&joiners[1], "default", transaction("through-a-joiner"), SETTLE).await;
    let reseeded: Vec<&Node> = std::iter::once(&first).chain(joiners.iter()).collect();
    for n in &reseeded {
        wait_for_last_token(n, "default", backed_up + 2, SETTLE).await;
    }
    let converged = same_history(&reseeded).await;
    assert!(converged[..old_history.len()] == old_history[..]);

    // The same backup restored plainly: the node is marked and says so; started with the old
    // cluster's settings (on an address of its own), it refuses to rejoin.
    let plain = tempfile::tempdir().expect("plain");
    let (plain_out, _) = run(vec![
        "restore".to_string(),
        streamed.display().to_string(),
        format!("--data={}", plain.path().join("data").display()),
        format!("--log-dir={}", plain.path().join("log").display()),
    ])
    .await;
    assert!(
        plain_out.contains("CHOOSE") && plain_out.contains("--reseed"),
        "{plain_out}"
    );
    let address = std::net::IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 250, 2));
    let refused = outsider(&old, 1, address, plain.path(), &[]).start();
    wait_for_log(&refused, "cluster formation failed", SETTLE).await;
    assert!(refused.log().contains("restored from a backup"), "{}", refused.log());

    // A re-seeded copy pointed at the old cluster asks to join it: the old leader refuses.
    let stray = tempfile::tempdir().expect("stray");
    run(vec![
        "restore".to_string(),
        streamed.display().to_string(),
        format!("--data={}", stray.path().join("data").display()),
        format!("--log-dir={}", stray.path().join("log").display()),
        "--reseed".to_string(),
    ])
    .await;
    let address = std::net::IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 250, 3));
    let joiner = outsider(&old, 1, address, stray.path(), &[]).start();
    wait_for_log(&joiner, "restored from a backup of this cluster", SETTLE).await;

    // The old cluster never noticed: it takes writes, every node agrees, nothing panicked.
    let before = last_token(&mut nodes[0].client().await).await;
    append_eventually(&nodes[0], "default", transaction("old-cluster-goes-on"), SETTLE).await;
    for n in &nodes {
        wait_for_last_token(n, "default", before + 1, SETTLE).await;
    }
    let old_nodes: Vec<&Node> = nodes.iter().collect();
    same_history(&old_nodes).await;
    for n in nodes.iter().chain(reseeded.iter().copied()) {
        assert!(!n.log().contains("panicked"), "{}", n.log());
    }
    drop((refused, joiner));
    for n in joiners.into_iter().chain([first]).chain(nodes) {
        n.stop();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_node_restored_from_its_own_backup_onto_new_addresses_resumes_the_same_cluster() {
    let plan = plan();
    let nodes: Vec<Node> = plan.options.iter().cloned().map(NodeOptions::start).collect();
    for n in &nodes {
        wait_for_log(n, "cluster: ", SETTLE).await;
    }
    for k in 0..150 {
        append_eventually(&nodes[k % 3], "default", transaction(&format!("before-{k}")), SETTLE).await;
    }
    let last = 149;
    for n in &nodes {
        wait_for_last_token(n, "default", last, SETTLE).await;
    }
    // Applied positions are recorded every 50 ms here; let them settle before the backups.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let backups = tempfile::tempdir().expect("backups");
    for (i, n) in nodes.iter().enumerate() {
        let to = backups.path().join(format!("node-{i}"));
        let (_, took) = run(vec![
            "backup".to_string(),
            format!("--server={}", n.http_url()),
            format!("--to={}", to.display()),
        ])
        .await;
        eprintln!(
            "figures: quiet backup of node-{} ({} bytes) took {took:?}",
            i + 1,
            size_of(&to)
        );
    }
    let before = same_history(&nodes.iter().collect::<Vec<_>>()).await;
    for n in nodes {
        n.stop();
    }

    // The machines are lost: every node is restored from its own backup, log included, onto a
    // new host (another loopback address, another data directory), and started with Axon's
    // recovery file naming the new addresses (CLUSTER.md §10.8, §11 item 11b).
    let new_addresses: Vec<IpAddr> = plan
        .addresses
        .iter()
        .map(|a| match a {
            IpAddr::V4(v4) => {
                let [x, y, z, w] = v4.octets();
                IpAddr::V4(Ipv4Addr::new(x, y, z, w + 10))
            }
            IpAddr::V6(_) => unreachable!("the plan uses IPv4 loopback addresses"),
        })
        .collect();
    let moved = small_segments(ClusterPlan::autocluster_at(&myelin(), &new_addresses, "default"));
    for (i, data) in moved.data_dirs.iter().enumerate() {
        let (out, took) = run(vec![
            "restore".to_string(),
            backups.path().join(format!("node-{i}")).display().to_string(),
            format!("--data={}", data.join("data").display()),
            format!("--log-dir={}", data.join("log").display()),
            "--whole-cluster".to_string(),
        ])
        .await;
        assert!(out.contains("whole-cluster restore"), "{out}");
        assert!(out.contains("log of group _admin laid down"), "{out}");
        eprintln!("figures: restore --whole-cluster of node-{} took {took:?}", i + 1);
    }
    let recovery = moved.dir.path().join("recovery.json");
    let entries: Vec<serde_json::Value> = new_addresses
        .iter()
        .enumerate()
        .map(|(i, address)| {
            serde_json::json!({
                "name": format!("node-{}", i + 1),
                "hostName": address.to_string(),
                "internalHostName": address.to_string(),
                "grpcInternalPort": myelin_testkit::binary::INTERNAL_PORT,
            })
        })
        .collect();
    std::fs::write(&recovery, serde_json::to_vec(&entries).expect("json")).expect("recovery file");
    let nodes: Vec<Node> = moved
        .options
        .iter()
        .cloned()
        .map(|o| {
            o.setting(format!("axoniq.axonserver.recoveryfile={}", recovery.display()))
                .start()
        })
        .collect();
    for n in &nodes {
        wait_for_log(n, "cluster: Resumed", SETTLE).await;
        assert!(n.log().contains("recovery file applied"), "{}", n.log());
    }
    append_eventually(&nodes[2], "default", transaction("after-restore"), SETTLE).await;
    for n in &nodes {
        wait_for_last_token(n, "default", last + 1, SETTLE).await;
    }
    let after = same_history(&nodes.iter().collect::<Vec<_>>()).await;
    assert!(
        after[..before.len()] == before[..],
        "the restored cluster holds what it held"
    );
    // Every node announced its live addresses (new gRPC and HTTP ports too, which the file
    // left out) through _admin, so every node's address book names them.
    let http = reqwest::Client::new();
    let deadline = Instant::now() + SETTLE;
    for asked in &nodes {
        loop {
            let listed: serde_json::Value = http
                .get(format!("{}/v1/cluster", asked.http_url()))
                .send()
                .await
                .expect("GET /v1/cluster")
                .json()
                .await
                .expect("json");
            let text = listed.to_string();
            let current = nodes.iter().all(|n| {
                text.contains(&format!("\"grpcPort\":{}", n.grpc_address().port()))
                    && text.contains(&format!("\"internalHostName\":\"{}\"", n.address()))
            });
            if current && !plan.addresses.iter().any(|old| text.contains(&format!("\"{old}\""))) {
                break;
            }
            assert!(Instant::now() < deadline, "{} still lists {text}", asked.http_url());
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    for n in nodes {
        assert!(!n.log().contains("panicked"), "{}", n.log());
        n.stop();
    }
}
