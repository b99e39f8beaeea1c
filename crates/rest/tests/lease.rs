//! Backup leases: taken, renewed, released, expired; what they hold back; health and metrics.

use std::time::Duration;

use axum::http::StatusCode;
use myelin_testkit::rest::{Answer, Rest, rest};
use myelin_testkit::store::append_sized as append;
use serde_json::{Value, json};

fn lease_id(answer: &Answer) -> String {
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
    answer.json()["id"].as_str().expect("id").to_string()
}

fn live_leases(rest: &Rest) -> Vec<String> {
    rest.state
        .deletion_holds
        .live(std::time::Instant::now())
        .into_iter()
        .map(|(id, _)| id)
        .collect()
}

async fn metric(rest: &Rest) -> String {
    let text = rest.get("/actuator/prometheus").await.text();
    assert!(text.contains("# TYPE myelin_backup_leases gauge"), "{text}");
    text.lines()
        .find(|line| line.starts_with("myelin_backup_leases "))
        .expect("myelin_backup_leases sample")
        .to_string()
}

async fn health_leases(rest: &Rest) -> Value {
    let health = rest.get("/actuator/health").await.json();
    let component = &health["components"]["backupLease"];
    assert_eq!(component["status"], "UP", "{health}");
    component["details"].clone()
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_millis() as i64
}

#[tokio::test]
async fn a_lease_holds_deletions_until_released() {
    let rest = rest();
    let store = rest.store("default");
    assert!(!store.deletions_held());
    assert_eq!(metric(&rest).await, "myelin_backup_leases 0");
    assert_eq!(health_leases(&rest).await, json!({"count": 0, "leases": []}));

    let before = now_ms();
    let answer = rest.post("/v1/backup/lease", None).await;
    let id = lease_id(&answer);
    let body = answer.json();
    assert_eq!(id.len(), 32, "{body}");
    assert!(id.chars().all(|c| c.is_ascii_hexdigit()), "{body}");
    assert_eq!(body["ttlSeconds"], 300, "the default");
    let expires_at = body["expiresAt"].as_i64().expect("expiresAt");
    assert!(
        expires_at >= before + 300_000 && expires_at <= now_ms() + 300_000,
        "{body}"
    );
    assert!(store.deletions_held(), "the store sees the lease");
    assert_eq!(live_leases(&rest), vec![id.clone()]);

    assert_eq!(metric(&rest).await, "myelin_backup_leases 1");
    let details = health_leases(&rest).await;
    assert_eq!(details["count"], 1, "{details}");
    assert_eq!(details["leases"][0]["id"], id.as_str(), "{details}");
    let remaining = details["leases"][0]["remainingSeconds"].as_u64().expect("seconds");
    assert!((295..=300).contains(&remaining), "{details}");

    // A second lease; releasing one leaves the other holding.
    let other = lease_id(&rest.post("/v1/backup/lease", Some(json!({"ttlSeconds": 60}))).await);
    assert_ne!(other, id);
    assert_eq!(metric(&rest).await, "myelin_backup_leases 2");
    assert_eq!(
        rest.delete(&format!("/v1/backup/lease/{id}")).await.status,
        StatusCode::OK
    );
    assert!(store.deletions_held());
    let again = rest.delete(&format!("/v1/backup/lease/{id}")).await;
    assert_eq!(again.status, StatusCode::NOT_FOUND, "released once");
    assert!(again.json()["error"].as_str().expect("message").contains(&id));
    assert_eq!(
        rest.delete(&format!("/v1/backup/lease/{other}")).await.status,
        StatusCode::OK
    );
    assert!(!store.deletions_held());
    assert_eq!(metric(&rest).await, "myelin_backup_leases 0");
    assert_eq!(health_leases(&rest).await["count"], 0);
    // The process-wide registry was never touched: this server has its own.
    assert!(!myelin_store::DeletionHolds::global().is_held(std::time::Instant::now()));
}

#[tokio::test]
async fn renewing_moves_the_expiry() {
    let rest = rest();
    let id = lease_id(&rest.post("/v1/backup/lease", Some(json!({"ttlSeconds": 10}))).await);
    let renewed = rest
        .post(&format!("/v1/backup/lease/{id}"), Some(json!({"ttlSeconds": 3600})))
        .await;
    assert_eq!(renewed.status, StatusCode::OK, "{}", renewed.text());
    let body = renewed.json();
    assert_eq!(body["id"], id.as_str());
    assert_eq!(body["ttlSeconds"], 3600);
    assert!(body["expiresAt"].as_i64().expect("expiresAt") >= now_ms() + 3_590_000);
    let remaining = health_leases(&rest).await["leases"][0]["remainingSeconds"]
        .as_u64()
        .expect("seconds");
    assert!(remaining > 3590, "{remaining}");
    // Without a body: the default.
    let renewed = rest.post(&format!("/v1/backup/lease/{id}"), None).await;
    assert_eq!(renewed.json()["ttlSeconds"], 300);
    let remaining = health_leases(&rest).await["leases"][0]["remainingSeconds"]
        .as_u64()
        .expect("seconds");
    assert!((295..=300).contains(&remaining), "{remaining}");

    let unknown = rest.post("/v1/backup/lease/0123456789abcdef", None).await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    assert!(unknown.json()["error"].is_string());
}

#[tokio::test]
async fn bad_time_to_live_is_refused_naming_the_parameter() {
    let rest = rest();
    let id = lease_id(&rest.post("/v1/backup/lease", None).await);
    for ttl in [json!(0), json!(3601), json!(-1), json!(1.5), json!("60"), json!(true)] {
        for uri in ["/v1/backup/lease".to_string(), format!("/v1/backup/lease/{id}")] {
            let answer = rest.post(&uri, Some(json!({ "ttlSeconds": ttl }))).await;
            assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{uri} {ttl}");
            let body = answer.json();
            assert_eq!(body["parameter"], "ttlSeconds", "{body}");
            assert!(
                body["accepted"][0].as_str().expect("accepted").contains("3600"),
                "{body}"
            );
        }
    }
    for raw in ["not json", "[300]", "{\"ttlSeconds\": "] {
        let answer = raw_post(&rest, "/v1/backup/lease", raw).await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{raw}");
        assert!(answer.json()["error"].is_string());
    }
    // An empty body is the default, whatever its content type says.
    let empty = raw_post(&rest, "/v1/backup/lease", "").await;
    assert_eq!(empty.json()["ttlSeconds"], 300);
    // Refusals took no lease.
    assert_eq!(live_leases(&rest).len(), 2);
    // The bounds themselves are accepted.
    for ttl in [1, 3600] {
        let answer = rest.post("/v1/backup/lease", Some(json!({ "ttlSeconds": ttl }))).await;
        assert_eq!(answer.json()["ttlSeconds"], ttl);
    }
}

async fn raw_post(rest: &Rest, uri: &str, body: &str) -> Answer {
    use tower::ServiceExt;
    let request = axum::http::Request::builder()
        .method(axum::http::Method::POST)
        .uri(uri)
        .header("content-type", "application/json")
        .body(axum::body::Body::from(body.to_string()))
        .expect("request");
    let response = rest.router.clone().oneshot(request).await.expect("answer");
    let status = response.status();
    let headers = response.headers().clone();
    let body = axum::body::to_bytes(response.into_body(), 1 << 20).await.expect("body");
    Answer { status, headers, body }
}

#[tokio::test]
async fn an_expired_lease_holds_nothing_and_cannot_be_renewed() {
    let rest = rest();
    let store = rest.store("default");
    let id = lease_id(&rest.post("/v1/backup/lease", Some(json!({"ttlSeconds": 1}))).await);
    assert!(store.deletions_held());
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert!(!store.deletions_held(), "expired");
    assert_eq!(metric(&rest).await, "myelin_backup_leases 0");
    assert_eq!(health_leases(&rest).await["count"], 0);
    let renew = rest.post(&format!("/v1/backup/lease/{id}"), None).await;
    assert_eq!(renew.status, StatusCode::NOT_FOUND, "{}", renew.text());
    assert!(!store.deletions_held(), "a failed renewal does not revive it");
    let release = rest.delete(&format!("/v1/backup/lease/{id}")).await;
    assert_eq!(release.status, StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_context_s_files_are_not_deleted_under_a_lease() {
    let rest = rest();
    let created = rest.post("/v1/context", Some(json!({"context": "orders"}))).await;
    assert_eq!(created.status, StatusCode::OK, "{}", created.text());
    append(&rest.store("orders"), "o", 0, 3, 10);
    let (events_dir, _) = rest.provisioner.dirs("orders");
    assert!(rest.store("orders").deletions_held() == rest.store("default").deletions_held());

    let id = lease_id(&rest.post("/v1/backup/lease", None).await);
    let refused = rest.delete("/v1/context/orders").await;
    assert_eq!(refused.status, StatusCode::CONFLICT, "{}", refused.text());
    assert!(refused.json()["error"].as_str().expect("message").contains("lease"));
    assert!(events_dir.exists(), "nothing deleted");
    assert!(rest.state.node.contexts().get("orders").is_some(), "still served");
    // force is about clients, not backups.
    let forced = rest.delete("/v1/context/orders?force=true").await;
    assert_eq!(forced.status, StatusCode::CONFLICT);

    assert_eq!(
        rest.delete(&format!("/v1/backup/lease/{id}")).await.status,
        StatusCode::OK
    );
    let deleted = rest.delete("/v1/context/orders").await;
    assert_eq!(deleted.status, StatusCode::OK, "{}", deleted.text());
    assert!(!events_dir.exists());
    rest.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preserving_the_files_is_allowed_under_a_lease() {
    let rest = rest();
    let created = rest.post("/v1/context", Some(json!({"context": "kept"}))).await;
    assert_eq!(created.status, StatusCode::OK);
    let (events_dir, _) = rest.provisioner.dirs("kept");
    lease_id(&rest.post("/v1/backup/lease", None).await);
    let deleted = rest.delete("/v1/context/kept?preserveEventStore=true").await;
    assert_eq!(deleted.status, StatusCode::OK, "{}", deleted.text());
    assert!(events_dir.exists());
    rest.shutdown();
}
