//! Contexts, users, applications, `/v1/public/me`, health, metrics, the OpenAPI document.

use std::collections::BTreeSet;

use axum::http::{Method, StatusCode};
use myelin_testkit::rest::{Options, fill_placeholders, rest, rest_with};
use myelin_testkit::store::append_sized as append;
use serde_json::json;

#[tokio::test]
async fn landing_page_is_html() {
    let rest = rest();
    let answer = rest.get("/").await;
    assert_eq!(answer.status, StatusCode::OK);
    assert!(answer.header("content-type").expect("type").starts_with("text/html"));
    assert!(answer.text().contains(env!("CARGO_PKG_VERSION")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contexts_are_created_listed_and_deleted() {
    let rest = rest();
    let listed = rest.get("/v1/public/context").await.json();
    assert_eq!(listed[0]["context"], "default");
    assert_eq!(listed[0]["nodes"], json!(["node-1"]));
    assert_eq!(listed[0]["roles"][0]["role"], "PRIMARY");

    let created = rest
        .post(
            "/v1/context",
            Some(json!({"context": "orders", "metaData": {"team": "blue"}})),
        )
        .await;
    assert_eq!(created.status, StatusCode::OK, "{}", created.text());
    let (events_dir, _) = rest.provisioner.dirs("orders");
    assert!(events_dir.exists(), "the stores are open");
    append(&rest.store("orders"), "o", 0, 3, 10);
    let listed = rest.get("/v1/public/context").await.json();
    let orders = listed
        .as_array()
        .expect("array")
        .iter()
        .find(|c| c["context"] == "orders")
        .expect("listed")
        .clone();
    assert_eq!(orders["metaData"]["team"], "blue");
    assert!(orders["createdAt"].as_i64().expect("created") > 0);
    let detail = rest.get("/v1/context").await.json();
    let orders = detail
        .as_array()
        .expect("array")
        .iter()
        .find(|c| c["context"] == "orders")
        .expect("listed")
        .clone();
    assert_eq!(orders["lastToken"], 2);
    assert!(rest.state.node.control().context("orders").expect("read").is_some());

    let duplicate = rest.post("/v1/context", Some(json!({"context": "orders"}))).await;
    assert_eq!(duplicate.status, StatusCode::CONFLICT);
    for bad in ["", "_admin", "has space", "slash/name", "../up"] {
        let answer = rest.post("/v1/context", Some(json!({"context": bad}))).await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{bad:?}: {}", answer.text());
        assert!(rest.state.node.contexts().get(bad).is_none());
    }
    let malformed = rest
        .call(
            Method::POST,
            "/v1/context",
            &[("content-type", "application/json")],
            None,
        )
        .await;
    assert!(malformed.status.is_client_error(), "{}", malformed.status);

    // In use: refused without force.
    let client = rest.state.node.contexts().client_connected("orders");
    let refused = rest.delete("/v1/context/orders").await;
    assert_eq!(refused.status, StatusCode::CONFLICT, "{}", refused.text());
    assert!(rest.state.node.contexts().get("orders").is_some());
    let forced = rest
        .delete("/v1/context/orders?force=true&preserveEventStore=true")
        .await;
    assert_eq!(forced.status, StatusCode::OK, "{}", forced.text());
    drop(client);
    assert!(rest.state.node.contexts().get("orders").is_none());
    assert!(rest.state.node.control().context("orders").expect("read").is_none());
    assert!(events_dir.exists(), "preserveEventStore keeps the files");

    // Re-created on the preserved files: the events are still there.
    assert_eq!(
        rest.post("/v1/context", Some(json!({"context": "orders"})))
            .await
            .status,
        StatusCode::OK
    );
    assert_eq!(rest.store("orders").last_token(), 2);
    let deleted = rest.delete("/v1/context/orders").await;
    assert_eq!(deleted.status, StatusCode::OK);
    assert!(!events_dir.exists(), "files deleted by default, as Axon does");

    assert_eq!(rest.delete("/v1/context/orders").await.status, StatusCode::NOT_FOUND);
    rest.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_are_stored_without_passwords() {
    let rest = rest();
    let created = rest
        .post(
            "/v1/users",
            Some(json!({"userName": "alice", "password": "s3cret!", "roles": [{"context": "default", "role": "READ"}, "ADMIN"]})),
        )
        .await;
    assert_eq!(created.status, StatusCode::OK, "{}", created.text());
    for uri in ["/v1/users", "/v1/public/users"] {
        let listed = rest.get(uri).await;
        assert_eq!(listed.status, StatusCode::OK);
        assert!(!listed.text().contains("s3cret"), "{}", listed.text());
        let users = listed.json();
        assert_eq!(users[0]["userName"], "alice");
        let roles: BTreeSet<String> = users[0]["roles"]
            .as_array()
            .expect("roles")
            .iter()
            .map(|r| {
                format!(
                    "{}@{}",
                    r["role"].as_str().expect("role"),
                    r["context"].as_str().expect("context")
                )
            })
            .collect();
        assert_eq!(
            roles,
            BTreeSet::from(["READ@default".to_string(), "ADMIN@*".to_string()])
        );
    }
    let bad_role = rest
        .post(
            "/v1/users",
            Some(json!({"userName": "bob", "password": "x", "roles": ["EMPEROR"]})),
        )
        .await;
    assert_eq!(bad_role.status, StatusCode::BAD_REQUEST);
    let no_password = rest
        .post("/v1/users", Some(json!({"userName": "bob", "password": ""})))
        .await;
    assert_eq!(no_password.status, StatusCode::BAD_REQUEST);
    assert_eq!(rest.delete("/v1/users/alice").await.status, StatusCode::OK);
    assert_eq!(rest.delete("/v1/users/alice").await.status, StatusCode::NOT_FOUND);
    assert_eq!(rest.get("/v1/users").await.json(), json!([]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn applications_get_tokens_that_rotate() {
    let rest = rest();
    let created = rest
        .post(
            "/v1/applications",
            Some(json!({"name": "billing", "description": "bills", "roles": [{"context": "default", "roles": ["READ", "WRITE"]}]})),
        )
        .await;
    assert_eq!(created.status, StatusCode::OK, "{}", created.text());
    let token = created.text();
    assert!(token.len() >= 32, "{token}");
    let found = rest.state.access.authenticate_token(&token).expect("check");
    assert_eq!(found.expect("token works").name, "billing");

    for uri in ["/v1/applications", "/v1/public/applications"] {
        let listed = rest.get(uri).await;
        assert!(!listed.text().contains(&token), "tokens are never listed");
        let apps = listed.json();
        assert_eq!(apps[0]["name"], "billing");
        assert_eq!(apps[0]["description"], "bills");
        assert_eq!(
            apps[0]["roles"],
            json!([{"context": "default", "roles": ["READ", "WRITE"]}])
        );
    }
    let duplicate = rest.post("/v1/applications", Some(json!({"name": "billing"}))).await;
    assert_eq!(duplicate.status, StatusCode::CONFLICT);
    let chosen = rest
        .post(
            "/v1/applications",
            Some(json!({"name": "other", "token": "my-own-token"})),
        )
        .await;
    assert_eq!(chosen.status, StatusCode::BAD_REQUEST, "{}", chosen.text());

    let rotated = rest.call(Method::PATCH, "/v1/applications/billing", &[], None).await;
    assert_eq!(rotated.status, StatusCode::OK);
    let new_token = rotated.text();
    assert_ne!(new_token, token);
    assert!(rest.state.access.authenticate_token(&token).expect("check").is_none());
    assert!(
        rest.state
            .access
            .authenticate_token(&new_token)
            .expect("check")
            .is_some()
    );
    let missing = rest.call(Method::PATCH, "/v1/applications/nobody", &[], None).await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);

    assert_eq!(rest.delete("/v1/applications/billing").await.status, StatusCode::OK);
    assert!(
        rest.state
            .access
            .authenticate_token(&new_token)
            .expect("check")
            .is_none()
    );
    assert_eq!(
        rest.delete("/v1/applications/billing").await.status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn me_describes_this_node() {
    let rest = rest();
    let me = rest.get("/v1/public/me").await.json();
    assert_eq!(me["authentication"], false);
    assert_eq!(me["clustered"], false);
    assert_eq!(me["name"], "node-1");
    assert_eq!(me["grpcPort"], 8124);
    assert_eq!(me["httpPort"], 8024);
    assert_eq!(me["contextNames"], json!(["default"]));
    assert_eq!(me["user"]["userName"], "anonymous");
}

#[tokio::test]
async fn health_reports_components_and_warns_on_low_disk() {
    let rest = rest();
    let health = rest.get("/actuator/health").await;
    assert_eq!(health.status, StatusCode::OK);
    let body = health.json();
    assert_eq!(body["status"], "UP", "{body}");
    for component in ["livenessState", "readinessState", "diskSpace", "eventStore"] {
        assert_eq!(body["components"][component]["status"], "UP", "{component}: {body}");
    }
    assert_eq!(body["components"]["eventStore"]["details"]["default"]["lastToken"], -1);
    assert_eq!(rest.get("/actuator/health/liveness").await.json()["status"], "UP");
    assert_eq!(rest.get("/actuator/health/readiness").await.json()["status"], "UP");

    let low = rest_with(Options {
        disk_space_threshold: u64::MAX,
        ..Options::default()
    });
    let health = low.get("/actuator/health").await;
    assert_eq!(health.status, StatusCode::OK, "WARN is not DOWN");
    let body = health.json();
    assert_eq!(body["status"], "WARN", "{body}");
    assert_eq!(body["components"]["diskSpace"]["status"], "WARN", "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_reports_the_stores() {
    let rest = rest();
    append(&rest.store("default"), "a", 0, 7, 100);
    let answer = rest.get("/actuator/prometheus").await;
    assert_eq!(answer.status, StatusCode::OK);
    assert!(
        answer
            .header("content-type")
            .expect("type")
            .starts_with("text/plain; version=0.0.4")
    );
    let text = answer.text();
    let sample = |name: &str| -> f64 {
        text.lines()
            .find(|line| line.starts_with(name))
            .unwrap_or_else(|| panic!("{name} missing:\n{text}"))
            .rsplit(' ')
            .next()
            .expect("value")
            .parse()
            .expect("number")
    };
    let events = "{context=\"default\",family=\"events\"}";
    assert_eq!(sample(&format!("myelin_appended_events_total{events}")), 7.0);
    assert_eq!(sample(&format!("myelin_appended_transactions_total{events}")), 7.0);
    assert_eq!(sample(&format!("myelin_last_token{events}")), 6.0);
    assert_eq!(sample(&format!("myelin_poisoned{events}")), 0.0);
    assert!(sample(&format!("myelin_disk_bytes{events}")) > 0.0);
    assert!(sample(&format!("myelin_segments{events}")) >= 1.0);
    let syncs = sample("myelin_fsync_seconds_count{context=\"default\",family=\"events\"}");
    assert!((1.0..=7.0).contains(&syncs), "{syncs}");
    assert!(text.contains("myelin_fsync_seconds_bucket{context=\"default\",family=\"events\",le=\"+Inf\"}"));
    assert!(text.contains("# TYPE myelin_fsync_seconds histogram"));
    assert_eq!(
        sample("myelin_seconds_since_last_backup{context=\"default\"}"),
        f64::INFINITY
    );

    rest.get("/v1/backup/eventstore?type=EVENT").await;
    let text = rest.get("/actuator/prometheus").await.text();
    let age: f64 = text
        .lines()
        .find(|l| l.starts_with("myelin_seconds_since_last_backup{context=\"default\"}"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .expect("backup age");
    assert!((0.0..60.0).contains(&age), "{age}");
    rest.shutdown();
}

/// Every (method, path) the OpenAPI document lists, with `{name}` filled in.
pub fn documented_routes(doc: &serde_json::Value) -> Vec<(Method, String)> {
    let mut routes = Vec::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in item.as_object().expect("path item").keys() {
            let method: Method = method.to_ascii_uppercase().parse().expect("method");
            routes.push((method, fill_placeholders(path)));
        }
    }
    routes
}

#[tokio::test]
async fn openapi_document_matches_the_router() {
    let rest = rest();
    let doc = rest.get(myelin_rest::OPENAPI_PATH).await;
    assert_eq!(doc.status, StatusCode::OK);
    let doc = doc.json();
    assert!(doc["openapi"].as_str().expect("version").starts_with("3."), "{doc}");
    let routes: BTreeSet<(String, String)> = documented_routes(&doc)
        .into_iter()
        .map(|(m, p)| (m.to_string(), p))
        .collect();
    let expected = [
        ("GET", "/"),
        ("GET", "/v1/backup/filenames"),
        ("GET", "/v1/backup/eventstore"),
        ("GET", "/v1/backup/log/filenames"),
        ("POST", "/internal/raft/context/default/cleanLogEntries/3600"),
        ("POST", "/createControlDbBackup"),
        ("POST", "/v1/backup/createControlDbBackup"),
        ("GET", "/v1/backup/files/default/EVENT/missing-name"),
        ("GET", "/v1/backup/files/log/default/missing-name"),
        ("GET", "/v1/backup/controldb/missing-name"),
        ("POST", "/v1/backup/lease"),
        ("POST", "/v1/backup/lease/missing-name"),
        ("DELETE", "/v1/backup/lease/missing-name"),
        ("GET", "/v1/context"),
        ("POST", "/v1/context"),
        ("DELETE", "/v1/context/missing-name"),
        ("GET", "/v1/public/context"),
        ("GET", "/v1/users"),
        ("GET", "/v1/public/users"),
        ("POST", "/v1/users"),
        ("DELETE", "/v1/users/missing-name"),
        ("GET", "/v1/applications"),
        ("GET", "/v1/public/applications"),
        ("POST", "/v1/applications"),
        ("DELETE", "/v1/applications/missing-name"),
        ("PATCH", "/v1/applications/missing-name"),
        ("GET", "/v1/public/me"),
        ("POST", "/v1/context/init"),
        ("GET", "/v1/cluster"),
        ("POST", "/v1/cluster"),
        ("GET", "/v1/cluster/missing-name"),
        ("DELETE", "/v1/cluster/missing-name"),
        ("GET", "/v1/public/replicationgroups"),
        ("POST", "/v1/replicationgroups"),
        ("POST", "/v1/replicationgroups/default/missing-name"),
        ("DELETE", "/v1/replicationgroups/default/missing-name"),
        ("DELETE", "/v1/replicationgroups/missing-name"),
        ("GET", "/v1/replicationgroups/roles"),
        ("GET", "/actuator/health"),
        ("GET", "/actuator/health/liveness"),
        ("GET", "/actuator/health/readiness"),
        ("GET", "/actuator/prometheus"),
    ];
    let expected: BTreeSet<(String, String)> = expected.iter().map(|(m, p)| (m.to_string(), p.to_string())).collect();
    assert_eq!(routes, expected, "the document lists exactly the API's routes");
    // Every documented route is served: never 404 (unknown path) or 405 (unknown method),
    // except a 404 that is a JSON answer about the missing name.
    for (method, path) in documented_routes(&doc) {
        let answer = rest.call(method.clone(), &path, &[], None).await;
        assert_ne!(answer.status, StatusCode::METHOD_NOT_ALLOWED, "{method} {path}");
        if answer.status == StatusCode::NOT_FOUND {
            assert!(answer.json()["error"].is_string(), "{method} {path} is not routed");
        }
    }
    // An undocumented path is not served.
    assert_eq!(rest.get("/v1/not-a-route").await.status, StatusCode::NOT_FOUND);

    let ui = rest.get("/swagger-ui/index.html").await;
    assert_eq!(ui.status, StatusCode::OK);
    assert!(ui.text().contains("swagger"), "{}", ui.text());
    let redirect = rest.get("/swagger-ui.html").await;
    assert!(redirect.status.is_redirection(), "{}", redirect.status);
    assert_eq!(redirect.header("location"), Some("/swagger-ui/index.html"));
    // The UI's assets are in the binary.
    let bundle = rest.get("/swagger-ui/swagger-ui-bundle.js").await;
    assert_eq!(bundle.status, StatusCode::OK);
    assert!(bundle.body.len() > 100_000, "{}", bundle.body.len());
}
