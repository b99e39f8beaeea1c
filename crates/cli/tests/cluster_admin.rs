//! Axon EE's cluster administration against real `myelin serve` processes, each on its own
//! loopback address: the REST routes of CLUSTER.md §6.1 (their JSON shapes, status codes and
//! Axon's error codes), a replication group made over REST that replicates to a passive backup,
//! a member removed (its files deleted) and added back, a cluster formed by `init` and `join`
//! from nodes started with only `myelin.cluster.enabled`, and the gRPC
//! `ReplicationGroupAdminService`.

use std::time::{Duration, Instant};

use myelin_proto::grpc::admin::replication_group_admin_service_client::ReplicationGroupAdminServiceClient;
use myelin_proto::grpc::admin::{GetReplicationGroupRequest, JoinReplicationGroup, ReplicationGroupOverview, Role};
use myelin_proto::grpc::control::ClientIdentification;
use myelin_proto::grpc::control::platform_service_client::PlatformServiceClient;
use myelin_proto::grpc::event::{Event, GetEventsRequest, GetLastTokenRequest};
use myelin_testkit::binary::{Binary, ClusterPlan, Node, append_eventually, in_context, wait_for_last_token};
use myelin_testkit::events::aggregate_event;
use serde_json::{Value, json};
use tokio_stream::StreamExt;

fn myelin() -> Binary {
    Binary::new(env!("CARGO_BIN_EXE_myelin"))
}

/// How long a cluster may take to form, elect or catch up in these tests.
const SETTLE: Duration = Duration::from_secs(90);

/// A REST answer: status, JSON body (or `Null`) and Axon's error code header.
#[derive(Debug)]
struct Reply {
    status: u16,
    body: Value,
    code: Option<String>,
}

async fn call(method: reqwest::Method, node: &Node, path: &str, body: Option<Value>) -> Reply {
    let client = reqwest::Client::new();
    let mut request = client.request(method.clone(), format!("{}{path}", node.http_url()));
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request
        .timeout(SETTLE)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{method} {path} on {}: {e}", node.address()));
    let status = response.status().as_u16();
    let code = response
        .headers()
        .get("AxonIQ-ErrorCode")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let text = response.text().await.expect("body");
    let body = serde_json::from_str(&text).unwrap_or(Value::Null);
    Reply { status, body, code }
}

async fn get(node: &Node, path: &str) -> Reply {
    call(reqwest::Method::GET, node, path, None).await
}

async fn post(node: &Node, path: &str, body: Option<Value>) -> Reply {
    call(reqwest::Method::POST, node, path, body).await
}

async fn delete(node: &Node, path: &str) -> Reply {
    call(reqwest::Method::DELETE, node, path, None).await
}

/// Asks `check` until it answers `Some`, for at most [`SETTLE`]; fails naming `what` and the
/// last answer.
async fn eventually<T, F, Fut>(what: &str, node: &Node, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let deadline = Instant::now() + SETTLE;
    loop {
        match check().await {
            Ok(value) => return value,
            Err(last) if Instant::now() < deadline => {
                eprintln!("{what}: not yet ({last})");
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            Err(last) => panic!("{what}: {last}\n{}", node.log()),
        }
    }
}

/// The replication group `name` as `GET /v1/public/replicationgroups` on `node` shows it.
async fn group(node: &Node, name: &str) -> Option<Value> {
    let reply = get(node, "/v1/public/replicationgroups").await;
    assert_eq!(reply.status, 200, "{reply:?}");
    reply.body.as_array()?.iter().find(|g| g["name"] == name).cloned()
}

/// `(node, role)` of a group's JSON, sorted.
fn roles(group: &Value) -> Vec<(String, String)> {
    let mut roles: Vec<(String, String)> = group["roles"]
        .as_array()
        .expect("roles")
        .iter()
        .map(|r| {
            (
                r["node"].as_str().expect("node").to_string(),
                r["role"].as_str().expect("role").to_string(),
            )
        })
        .collect();
    roles.sort();
    roles
}

async fn append_in(node: &Node, context: &str, events: Vec<Event>) -> Result<(), tonic::Status> {
    let mut client = node.client().await;
    client
        .append_event(in_context(tokio_stream::iter(events), context))
        .await
        .map(|_| ())
}

async fn last_token_in(node: &Node, context: &str) -> Result<i64, tonic::Status> {
    let mut client = node.client().await;
    Ok(client
        .get_last_token(in_context(GetLastTokenRequest {}, context))
        .await?
        .into_inner()
        .token)
}

/// The events of `context` on `node` with tokens `0..=last`, as (token, message id).
async fn history_in(node: &Node, context: &str, last: i64) -> Vec<(i64, String)> {
    let mut client = node.client().await;
    let request = GetEventsRequest {
        tracking_token: 0,
        number_of_permits: last + 1,
        ..GetEventsRequest::default()
    };
    let (sender, receiver) = tokio::sync::mpsc::channel(1);
    sender.send(request).await.expect("request");
    let mut stream = client
        .list_events(in_context(
            tokio_stream::wrappers::ReceiverStream::new(receiver),
            context,
        ))
        .await
        .expect("list events")
        .into_inner();
    let mut events = Vec::new();
    while (events.len() as i64) <= last {
        let next = tokio::time::timeout(SETTLE, stream.next())
            .await
            .expect("events arrive")
            .expect("not ended")
            .expect("stream ok");
        let event = next.event.expect("event");
        events.push((next.token, event.message_identifier));
    }
    drop(sender);
    events
}

/// Waits until `GET /v1/cluster` on `node` lists `count` nodes, each connected.
async fn wait_for_nodes(node: &Node, count: usize) -> Vec<Value> {
    eventually("every node listed and connected", node, || async move {
        let reply = get(node, "/v1/cluster").await;
        let nodes = reply.body.as_array().cloned().unwrap_or_default();
        let connected = nodes.iter().filter(|n| n["connected"] == true).count();
        if reply.status == 200 && nodes.len() == count && connected == count {
            Ok(nodes)
        } else {
            Err(format!("{reply:?}"))
        }
    })
    .await
}

/// Waits until group `name` shows `members` PRIMARY members and a leader on `node`.
async fn wait_for_group(node: &Node, name: &str, members: usize) -> Value {
    eventually(&format!("group {name} formed"), node, || async move {
        match group(node, name).await {
            Some(g) if g["roles"].as_array().map_or(0, Vec::len) == members && g["leader"] != "" => Ok(g),
            other => Err(format!("{other:?}")),
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_made_over_rest_replicates_to_a_passive_backup_regains_a_member_and_promotes_the_backup() {
    let plan = ClusterPlan::autocluster(&myelin(), 3, "default");
    let nodes: Vec<Node> = plan.options.iter().cloned().map(|o| o.start()).collect();

    // GET /v1/cluster: three nodes with Axon's JsonClusterNode shape.
    let listed = wait_for_nodes(&nodes[0], 3).await;
    for (i, node) in listed.iter().enumerate() {
        let keys: Vec<&str> = node.as_object().expect("object").keys().map(String::as_str).collect();
        let mut keys = keys;
        keys.sort();
        assert_eq!(
            keys,
            [
                "connected",
                "grpcPort",
                "hostName",
                "httpPort",
                "internalGrpcPort",
                "internalHostName",
                "name",
                "tags"
            ]
        );
        assert_eq!(node["name"], format!("node-{}", i + 1));
        assert_eq!(node["internalGrpcPort"], 8224);
        assert_eq!(node["internalHostName"], plan.addresses[i].to_string());
        assert_eq!(node["grpcPort"], nodes[i].grpc_address().port());
        assert_eq!(node["httpPort"], nodes[i].http_address().port());
    }
    let one = get(&nodes[1], "/v1/cluster/node-3").await;
    assert_eq!((one.status, &one.body["name"]), (200, &json!("node-3")), "{one:?}");
    let missing = get(&nodes[1], "/v1/cluster/node-9").await;
    assert_eq!((missing.status, missing.code.as_deref()), (404, Some("AXONIQ-1301")));

    // GET /v1/public/replicationgroups: _admin and default, three PRIMARY members, a leader.
    for name in ["_admin", "default"] {
        let g = wait_for_group(&nodes[2], name, 3).await;
        assert_eq!(
            roles(&g),
            (1..=3)
                .map(|i| (format!("node-{i}"), "PRIMARY".to_string()))
                .collect::<Vec<_>>()
        );
        assert!(g["leader"].as_str().is_some_and(|l| l.starts_with("node-")), "{g}");
        assert_eq!(g["changePending"], false, "{g}");
    }
    let default = group(&nodes[2], "default").await.expect("default");
    assert_eq!(default["contexts"][0]["context"], "default", "{default}");

    // A group with a passive backup, and a context in it, made over REST on node-2.
    let created = post(
        &nodes[1],
        "/v1/replicationgroups",
        Some(json!({"name": "orders", "roles": [
            {"node": "node-1", "role": "PRIMARY"},
            {"node": "node-2", "role": "PRIMARY"},
            {"node": "node-3", "role": "PASSIVE_BACKUP"},
        ]})),
    )
    .await;
    assert_eq!(created.status, 200, "{created:?}\n{}", nodes[1].log());
    let context = post(
        &nodes[0],
        "/v1/context",
        Some(json!({"context": "orders", "replicationGroup": "orders"})),
    )
    .await;
    assert_eq!(context.status, 200, "{context:?}\n{}", nodes[0].log());
    let orders = wait_for_group(&nodes[0], "orders", 3).await;
    assert_eq!(
        roles(&orders),
        [
            ("node-1".to_string(), "PRIMARY".to_string()),
            ("node-2".to_string(), "PRIMARY".to_string()),
            ("node-3".to_string(), "PASSIVE_BACKUP".to_string()),
        ]
    );
    assert_eq!(orders["contexts"][0]["context"], "orders", "{orders}");
    let public = get(&nodes[2], "/v1/public/context").await;
    let listed = public.body.as_array().expect("contexts");
    let orders_context = listed.iter().find(|c| c["context"] == "orders").expect("orders listed");
    assert_eq!(orders_context["replicationGroup"], "orders", "{public:?}");

    // Appends through node-1 reach every member, the passive backup's event store included.
    for sequence in 0..5 {
        append_eventually(
            &nodes[0],
            "orders",
            vec![aggregate_event("order-1", sequence).build()],
            SETTLE,
        )
        .await;
    }
    for node in &nodes {
        wait_for_last_token(node, "orders", 4, SETTLE).await;
    }
    let first = history_in(&nodes[0], "orders", 4).await;
    for node in &nodes[1..] {
        assert_eq!(history_in(node, "orders", 4).await, first, "{}", node.address());
    }
    // The default context is a separate store: untouched.
    assert_eq!(last_token_in(&nodes[0], "default").await.expect("default"), -1);

    // A client that reached the passive backup is sent to a member that serves clients; on a
    // PRIMARY it stays where it is.
    let platform = |node: &Node| {
        let node_address = node.grpc_url();
        async move {
            let mut client = PlatformServiceClient::connect(node_address).await.expect("connect");
            client
                .get_platform_server(in_context(ClientIdentification::default(), "orders"))
                .await
                .expect("GetPlatformServer")
                .into_inner()
        }
    };
    let on_backup = platform(&nodes[2]).await;
    assert!(!on_backup.same_connection, "{on_backup:?}");
    let primary = on_backup.primary.expect("a node");
    assert!(
        ["node-1", "node-2"].contains(&primary.node_name.as_str()),
        "{primary:?}"
    );
    assert_eq!(
        primary.grpc_port,
        i32::from(nodes[usize::from(primary.node_name == "node-2")].grpc_address().port()),
        "{primary:?}"
    );
    let on_primary = platform(&nodes[0]).await;
    assert!(on_primary.same_connection, "{on_primary:?}");
    assert_eq!(on_primary.primary.expect("itself").node_name, "node-1");

    // node-2 leaves orders, its copy of the event store deleted...
    let orders_files = nodes[1].data_dir().join("orders");
    assert!(orders_files.is_dir(), "{}", orders_files.display());
    let removed = delete(
        &nodes[2],
        "/v1/replicationgroups/orders/node-2?preserveEventStore=false",
    )
    .await;
    assert_eq!(removed.status, 202, "{removed:?}\n{}", nodes[2].log());
    eventually("node-2's orders files deleted", &nodes[1], || {
        let dir = orders_files.clone();
        async move {
            if dir.exists() {
                Err(format!("{} still exists", dir.display()))
            } else {
                Ok(())
            }
        }
    })
    .await;
    let orders = wait_for_group(&nodes[0], "orders", 2).await;
    assert!(roles(&orders).iter().all(|(node, _)| node != "node-2"), "{orders}");
    // ...the group goes on without it...
    append_eventually(&nodes[0], "orders", vec![aggregate_event("order-1", 5).build()], SETTLE).await;
    wait_for_last_token(&nodes[2], "orders", 5, SETTLE).await;

    // ...and it comes back as a PRIMARY and catches up from nothing.
    let added = post(&nodes[0], "/v1/replicationgroups/orders/node-2?role=PRIMARY", None).await;
    assert_eq!(added.status, 202, "{added:?}\n{}", nodes[0].log());
    assert_eq!(added.body["success"], true, "{added:?}");
    assert!(
        added.body["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("Started to add node node-2")),
        "{added:?}"
    );
    wait_for_group(&nodes[2], "orders", 3).await;
    wait_for_last_token(&nodes[1], "orders", 5, SETTLE).await;
    append_eventually(&nodes[1], "orders", vec![aggregate_event("order-1", 6).build()], SETTLE).await;
    for node in &nodes {
        wait_for_last_token(node, "orders", 6, SETTLE).await;
    }
    let first = history_in(&nodes[0], "orders", 6).await;
    for node in &nodes[1..] {
        assert_eq!(history_in(node, "orders", 6).await, first, "{}", node.address());
    }
    let orders = group(&nodes[1], "orders").await.expect("orders");
    assert_eq!(orders["changePending"], false, "{orders}");

    // A role change is a removal (the event store kept) and an addition: the passive backup
    // becomes a PRIMARY and keeps every event, stored once.
    let promoted = post(&nodes[1], "/v1/replicationgroups/orders/node-3?role=PRIMARY", None).await;
    assert_eq!(promoted.status, 202, "{promoted:?}\n{}", nodes[1].log());
    let orders = wait_for_group(&nodes[2], "orders", 3).await;
    assert!(roles(&orders).iter().all(|(_, role)| role == "PRIMARY"), "{orders}");
    append_eventually(&nodes[2], "orders", vec![aggregate_event("order-1", 7).build()], SETTLE).await;
    for node in &nodes {
        wait_for_last_token(node, "orders", 7, SETTLE).await;
    }
    let first = history_in(&nodes[0], "orders", 7).await;
    assert_eq!(history_in(&nodes[2], "orders", 7).await, first);

    for node in nodes {
        node.stop();
    }
    drop(plan);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_refusals_carry_axons_codes_and_members_contexts_groups_and_nodes_come_and_go() {
    let plan = ClusterPlan::autocluster(&myelin(), 3, "default");
    let nodes: Vec<Node> = plan.options.iter().cloned().map(|o| o.start()).collect();
    wait_for_nodes(&nodes[0], 3).await;
    wait_for_group(&nodes[0], "default", 3).await;

    let group_with = |name: &str, role: &str| json!({"name": name, "roles": [{"node": "node-1", "role": role}]});
    let refused = [
        (group_with("x", "LEADER"), 400, "AXONIQ-2510"),
        (group_with("x", "SECONDARY"), 400, "AXONIQ-1002"),
        (group_with("bad name!", "PRIMARY"), 400, "AXONIQ-2308"),
        (group_with("_reserved", "PRIMARY"), 400, "AXONIQ-2308"),
        (group_with("x", "PASSIVE_BACKUP"), 400, "AXONIQ-2309"),
        (
            json!({"name": "x", "roles": [{"node": "node-9", "role": "PRIMARY"}]}),
            404,
            "AXONIQ-1301",
        ),
        (group_with("default", "PRIMARY"), 400, "AXONIQ-1304"),
    ];
    for (body, status, code) in refused {
        let reply = post(&nodes[1], "/v1/replicationgroups", Some(body.clone())).await;
        assert_eq!(
            (reply.status, reply.code.as_deref()),
            (status, Some(code)),
            "{body}: {reply:?}"
        );
    }
    let empty = post(
        &nodes[1],
        "/v1/replicationgroups",
        Some(json!({"name": "x", "roles": []})),
    )
    .await;
    assert_eq!(empty.status, 400, "{empty:?}");
    assert!(
        empty.body["error"]
            .as_str()
            .is_some_and(|e| e.starts_with("Add at least one node")),
        "{empty:?}"
    );
    let no_roles = post(&nodes[1], "/v1/replicationgroups", Some(json!({"name": "x"}))).await;
    assert_eq!(no_roles.status, 400, "{no_roles:?}");
    let unknown_role = post(&nodes[1], "/v1/replicationgroups/default/node-1?role=LEADER", None).await;
    assert_eq!(
        (unknown_role.status, unknown_role.code.as_deref()),
        (400, Some("AXONIQ-2510"))
    );
    let internal = delete(&nodes[2], "/v1/replicationgroups/_admin").await;
    assert_eq!((internal.status, internal.code.as_deref()), (403, Some("AXONIQ-2304")));
    let roles_list = get(&nodes[2], "/v1/replicationgroups/roles").await;
    assert_eq!(
        roles_list.body,
        json!([
            "PRIMARY",
            "ACTIVE_BACKUP",
            "PASSIVE_BACKUP",
            "MESSAGING_ONLY",
            "SECONDARY"
        ])
    );

    // A group of one PRIMARY cannot lose it.
    let solo = post(
        &nodes[0],
        "/v1/replicationgroups",
        Some(json!({"name": "solo", "roles": [{"node": "node-3", "role": "PRIMARY"}]})),
    )
    .await;
    assert_eq!(solo.status, 200, "{solo:?}\n{}", nodes[0].log());
    let last = delete(&nodes[0], "/v1/replicationgroups/solo/node-3").await;
    assert_eq!(
        (last.status, last.code.as_deref()),
        (406, Some("AXONIQ-2310")),
        "{last:?}"
    );

    // A clustered node cannot be initialised again, nor join another cluster.
    let init = post(&nodes[0], "/v1/context/init", None).await;
    assert_eq!(
        (init.status, init.code.as_deref()),
        (406, Some("AXONIQ-2306")),
        "{init:?}"
    );
    let join = post(
        &nodes[1],
        "/v1/cluster",
        Some(json!({"internalHostName": plan.addresses[0].to_string(), "internalGrpcPort": 8224})),
    )
    .await;
    assert_eq!((join.status, &join.body["success"]), (409, &json!(false)), "{join:?}");

    // gRPC: the groups, then node-1 added to solo as a passive backup.
    let mut admin = ReplicationGroupAdminServiceClient::new(nodes[0].channel().await);
    let mut groups: Vec<ReplicationGroupOverview> = Vec::new();
    let mut stream = admin.get_replication_groups(()).await.expect("groups").into_inner();
    while let Some(group) = stream.next().await {
        groups.push(group.expect("group"));
    }
    let names: Vec<&str> = groups.iter().map(|g| g.name.as_str()).collect();
    assert_eq!(names, ["_admin", "default", "solo"]);
    let default = &groups[1];
    assert_eq!(default.members.len(), 3);
    assert!(
        default.members.iter().all(|m| m.role == Role::Primary as i32),
        "{default:?}"
    );
    assert_eq!(default.contexts, ["default"]);
    let mut done = admin
        .add_node_to_replication_group(JoinReplicationGroup {
            replication_group_name: "solo".into(),
            node_name: "node-1".into(),
            role: Role::PassiveBackup as i32,
        })
        .await
        .unwrap_or_else(|status| panic!("added: {status}\n{}", nodes[0].log()))
        .into_inner();
    assert!(done.next().await.is_none(), "the stream ends once the node is added");
    let solo = admin
        .get_replication_group(GetReplicationGroupRequest { name: "solo".into() })
        .await
        .expect("solo")
        .into_inner();
    let mut members: Vec<(String, i32)> = solo.members.iter().map(|m| (m.node_name.clone(), m.role)).collect();
    members.sort();
    assert_eq!(
        members,
        [
            ("node-1".to_string(), Role::PassiveBackup as i32),
            ("node-3".to_string(), Role::Primary as i32)
        ]
    );
    let unknown = admin
        .add_node_to_replication_group(JoinReplicationGroup {
            replication_group_name: "solo".into(),
            node_name: "node-1".into(),
            role: Role::Secondary as i32,
        })
        .await
        .expect_err("SECONDARY is refused");
    assert_eq!(myelin_testkit::client::error_code(&unknown), Some("AXONIQ-1002"));

    // A context in solo, written to, then deleted with its files; then solo itself.
    let billing = post(
        &nodes[1],
        "/v1/context",
        Some(json!({"context": "billing", "replicationGroup": "solo"})),
    )
    .await;
    assert_eq!(billing.status, 200, "{billing:?}\n{}", nodes[1].log());
    let again = post(&nodes[0], "/v1/context", Some(json!({"context": "billing"}))).await;
    assert_eq!(
        (again.status, again.code.as_deref()),
        (400, Some("AXONIQ-1304")),
        "{again:?}"
    );
    let nowhere = post(
        &nodes[0],
        "/v1/context",
        Some(json!({"context": "nowhere", "replicationGroup": "no-such-group"})),
    )
    .await;
    assert_eq!((nowhere.status, nowhere.code.as_deref()), (400, Some("AXONIQ-2309")));
    append_eventually(
        &nodes[2],
        "billing",
        vec![aggregate_event("invoice", 0).build()],
        SETTLE,
    )
    .await;
    wait_for_last_token(&nodes[0], "billing", 0, SETTLE).await;
    let billing_files = nodes[2].data_dir().join("billing");
    assert!(billing_files.is_dir());
    let deleted = delete(&nodes[0], "/v1/context/billing").await;
    assert_eq!(deleted.status, 200, "{deleted:?}\n{}", nodes[0].log());
    eventually("billing deleted on every member", &nodes[2], || {
        let (dir, nodes) = (billing_files.clone(), &nodes);
        async move {
            let listed = get(&nodes[1], "/v1/public/context").await;
            let still_listed = listed
                .body
                .as_array()
                .is_some_and(|c| c.iter().any(|c| c["context"] == "billing"));
            match (dir.exists(), still_listed) {
                (false, false) => Ok(()),
                state => Err(format!("files, listed: {state:?}")),
            }
        }
    })
    .await;
    let solo_log = plan.data_dirs[2].join("log").join("solo");
    assert!(solo_log.is_dir(), "{}", solo_log.display());
    let dropped = delete(&nodes[1], "/v1/replicationgroups/solo?preserveEventStore=false").await;
    assert_eq!(dropped.status, 200, "{dropped:?}\n{}", nodes[1].log());
    for node in &nodes {
        eventually("solo gone", node, || async move {
            match group(node, "solo").await {
                None => Ok(()),
                Some(g) => Err(g.to_string()),
            }
        })
        .await;
    }
    eventually("solo's log deleted on node-3", &nodes[2], || {
        let dir = solo_log.clone();
        async move {
            if dir.exists() {
                Err(format!("{} exists", dir.display()))
            } else {
                Ok(())
            }
        }
    })
    .await;

    // node-2 leaves the cluster: every group, then _admin.
    let left = delete(&nodes[0], "/v1/cluster/node-2").await;
    assert_eq!(left.status, 200, "{left:?}\n{}", nodes[0].log());
    eventually("node-2 gone from the cluster", &nodes[2], || async {
        let listed = get(&nodes[2], "/v1/cluster").await;
        let names: Vec<Value> = listed
            .body
            .as_array()
            .map(|n| n.iter().map(|n| n["name"].clone()).collect())
            .unwrap_or_default();
        if names == [json!("node-1"), json!("node-3")] {
            Ok(())
        } else {
            Err(format!("{names:?}"))
        }
    })
    .await;
    for name in ["_admin", "default"] {
        let g = wait_for_group(&nodes[0], name, 2).await;
        assert!(roles(&g).iter().all(|(node, _)| node != "node-2"), "{g}");
    }
    append_eventually(&nodes[2], "default", vec![aggregate_event("after", 0).build()], SETTLE).await;
    wait_for_last_token(&nodes[0], "default", 0, SETTLE).await;

    for node in nodes {
        node.stop();
    }
    drop(plan);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_started_with_only_cluster_enabled_form_a_cluster_by_init_and_join_then_make_a_context_and_its_group() {
    let plan = ClusterPlan::cluster_enabled(&myelin(), 2);
    let nodes: Vec<Node> = plan.options.iter().cloned().map(|o| o.start()).collect();

    // Not a cluster yet: no nodes, no groups.
    let before = get(&nodes[0], "/v1/cluster").await;
    assert_eq!((before.status, before.body.clone()), (200, json!([])), "{before:?}");

    let init = post(&nodes[0], "/v1/context/init?context=default", None).await;
    assert_eq!(init.status, 200, "{init:?}\n{}", nodes[0].log());
    let joined = post(
        &nodes[1],
        "/v1/cluster",
        Some(json!({"internalHostName": plan.addresses[0].to_string(), "internalGrpcPort": 8224})),
    )
    .await;
    assert_eq!(joined.status, 202, "{joined:?}\n{}", nodes[1].log());
    assert_eq!(joined.body["success"], true, "{joined:?}");

    for node in &nodes {
        wait_for_nodes(node, 2).await;
        let default = wait_for_group(node, "default", 2).await;
        assert!(roles(&default).iter().all(|(_, role)| role == "PRIMARY"), "{default}");
    }
    append_eventually(&nodes[1], "default", vec![aggregate_event("joined", 0).build()], SETTLE).await;
    for node in &nodes {
        wait_for_last_token(node, "default", 0, SETTLE).await;
    }

    // A context whose group does not exist yet: created with the roles given.
    let inventory = post(
        &nodes[1],
        "/v1/context",
        Some(json!({"context": "inventory", "roles": [
            {"node": "node-1", "role": "PRIMARY"},
            {"node": "node-2", "role": "PRIMARY"},
        ], "metaData": {"owner": "stock"}})),
    )
    .await;
    assert_eq!(inventory.status, 200, "{inventory:?}\n{}", nodes[1].log());
    let group = wait_for_group(&nodes[0], "inventory", 2).await;
    assert_eq!(group["contexts"][0]["context"], "inventory", "{group}");
    assert_eq!(group["contexts"][0]["metaData"]["owner"], "stock", "{group}");
    append_eventually(&nodes[0], "inventory", vec![aggregate_event("item", 0).build()], SETTLE).await;
    wait_for_last_token(&nodes[1], "inventory", 0, SETTLE).await;

    // A node that is not clustered answers cluster routes with NOT_RUNNING_IN_CLUSTER.
    let single = myelin().node().start();
    let refused = get(&single, "/v1/cluster").await;
    assert_eq!((refused.status, refused.code.as_deref()), (400, Some("AXONIQ-2101")));
    single.stop();

    for node in nodes {
        node.stop();
    }
    drop(plan);
}

/// Every entry type in the log of `group` on the node whose data is `data_dir`'s sibling
/// `log/` (the plan's layout), in index order.
fn log_entry_types(node_dir: &std::path::Path, group: &str) -> Vec<myelin_format::raftlog::EntryType> {
    let dir = node_dir.join("log").join(group);
    let mut files: Vec<std::path::PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.expect("entry").path())
        .filter(|path| path.extension().is_some_and(|e| e == "log"))
        .collect();
    files.sort();
    let mut kinds = Vec::new();
    for file in files {
        let bytes = std::fs::read(&file).expect("read segment");
        let mut scanner = myelin_format::raftlog::Scanner::new(&bytes);
        kinds.extend(scanner.by_ref().map(|entry| entry.kind));
        assert!(
            !matches!(scanner.stop(), Some(myelin_format::raftlog::Stop::Damaged { .. })),
            "{}: {:?}",
            file.display(),
            scanner.stop()
        );
    }
    kinds
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_active_backups_with_k_one_keep_writes_going_with_one_down_and_stop_them_with_both_down() {
    let plan = ClusterPlan::autocluster(&myelin(), 4, "default");
    let mut nodes: Vec<Option<Node>> = plan.options.iter().cloned().map(|o| Some(o.start())).collect();
    let first = nodes[0].as_ref().expect("running");
    wait_for_nodes(first, 4).await;
    let created = post(
        first,
        "/v1/replicationgroups",
        Some(json!({"name": "ab", "roles": [
            {"node": "node-1", "role": "PRIMARY"},
            {"node": "node-2", "role": "PRIMARY"},
            {"node": "node-3", "role": "ACTIVE_BACKUP"},
            {"node": "node-4", "role": "ACTIVE_BACKUP"},
        ]})),
    )
    .await;
    assert_eq!(created.status, 200, "{created:?}");
    let context = post(
        first,
        "/v1/context",
        Some(json!({"context": "ab", "replicationGroup": "ab"})),
    )
    .await;
    assert!(context.status < 300, "{context:?}");
    for sequence in 0..3 {
        append_eventually(first, "ab", vec![aggregate_event("both-up", sequence).build()], SETTLE).await;
    }
    for n in nodes.iter().flatten() {
        wait_for_last_token(n, "ab", 2, SETTLE).await;
    }
    // One active backup down: k = 1 is still met by the other.
    nodes[3].take().expect("running").stop();
    let first = nodes[0].as_ref().expect("running");
    append_in(first, "ab", vec![aggregate_event("one-down", 0).build()])
        .await
        .expect("acknowledged with one active backup of two");
    // Both down: the write is not acknowledged.
    nodes[2].take().expect("running").stop();
    let first = nodes[0].as_ref().expect("running");
    let refused = append_in(first, "ab", vec![aggregate_event("both-down", 0).build()])
        .await
        .expect_err("no active backup holds it: not acknowledged");
    assert!(refused.message().contains("active backup"), "{refused:?}");
    // One comes back: writes are acknowledged again, and it holds everything, the write whose
    // outcome was reported unknown included (it was committed on the primaries).
    nodes[2] = Some(plan.options[2].clone().start());
    let first = nodes[0].as_ref().expect("running");
    append_eventually(first, "ab", vec![aggregate_event("one-back", 0).build()], SETTLE).await;
    let back = nodes[2].as_ref().expect("running");
    wait_for_last_token(back, "ab", 5, SETTLE).await;
    let on_primary = history_in(first, "ab", 5).await;
    assert_eq!(history_in(back, "ab", 5).await, on_primary);
    for n in nodes.into_iter().flatten() {
        n.stop();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_messaging_only_member_holds_placeholders_not_events_and_too_few_active_backups_are_refused() {
    let mut plan = ClusterPlan::autocluster(&myelin(), 3, "default");
    for options in &mut plan.options {
        *options = options
            .clone()
            .setting("axoniq.axonserver.replication.min-active-backups=2");
    }
    let nodes: Vec<Node> = plan.options.iter().cloned().map(|o| o.start()).collect();
    wait_for_nodes(&nodes[0], 3).await;
    let created = post(
        &nodes[0],
        "/v1/replicationgroups",
        Some(json!({"name": "mo", "roles": [
            {"node": "node-1", "role": "PRIMARY"},
            {"node": "node-2", "role": "PRIMARY"},
            {"node": "node-3", "role": "MESSAGING_ONLY"},
        ]})),
    )
    .await;
    assert_eq!(created.status, 200, "{created:?}");
    let context = post(
        &nodes[0],
        "/v1/context",
        Some(json!({"context": "mo", "replicationGroup": "mo"})),
    )
    .await;
    assert!(context.status < 300, "{context:?}");
    for sequence in 0..5 {
        append_eventually(
            &nodes[0],
            "mo",
            vec![aggregate_event("messages", sequence).build()],
            SETTLE,
        )
        .await;
    }
    wait_for_last_token(&nodes[1], "mo", 4, SETTLE).await;
    // Same log ids everywhere; events are type-6 placeholders on the messaging-only member.
    use myelin_format::raftlog::EntryType;
    let deadline = Instant::now() + SETTLE;
    let (primary, messaging) = loop {
        let primary = log_entry_types(&plan.data_dirs[0], "mo");
        let messaging = log_entry_types(&plan.data_dirs[2], "mo");
        if primary.len() == messaging.len() || Instant::now() > deadline {
            break (primary, messaging);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(primary.len(), messaging.len(), "one log, entry for entry");
    let dummies = messaging.iter().filter(|k| **k == EntryType::DummyEntry).count();
    assert_eq!(dummies, 5, "{messaging:?}");
    assert!(!primary.contains(&EntryType::DummyEntry), "{primary:?}");
    for (p, m) in primary.iter().zip(&messaging) {
        if *m != EntryType::DummyEntry {
            assert_eq!(p, m, "control entries are the same");
        }
    }
    assert!(
        !nodes[2].data_dir().join("mo").exists(),
        "no event files on the messaging-only member"
    );
    // One active backup where two must hold every write: refused when configured.
    let refused = post(
        &nodes[0],
        "/v1/replicationgroups",
        Some(json!({"name": "lonely", "roles": [
            {"node": "node-1", "role": "PRIMARY"},
            {"node": "node-2", "role": "ACTIVE_BACKUP"},
        ]})),
    )
    .await;
    assert_eq!(refused.status, 400, "{refused:?}");
    assert_eq!(refused.code.as_deref(), Some("AXONIQ-2311"), "{refused:?}");
    for n in nodes {
        n.stop();
    }
}
