//! A context whose files are damaged does not take the others down: the server starts, the
//! healthy contexts serve as usual, and every call to the damaged one answers UNAVAILABLE with
//! AXONIQ-9000 naming the file and offset (and the health endpoint says DOWN, with why).

use std::os::unix::fs::FileExt;
use std::path::Path;

use myelin_format::segment::{SegmentKind, block_bytes, decode_block};
use myelin_proto::grpc::event::GetLastTokenRequest;
use myelin_testkit::binary::Binary;
use myelin_testkit::client::history;
use myelin_testkit::events::drill_event as event;
use tonic::Request;

/// The binary under test (or the one `MYELIN_BIN` names).
fn myelin() -> Binary {
    Binary::new(env!("CARGO_BIN_EXE_myelin"))
}

fn in_context<T>(context: &str, message: T) -> Request<T> {
    let mut request = Request::new(message);
    request
        .metadata_mut()
        .insert("axoniq-context", context.parse().expect("ascii"));
    request
}

/// Start offsets of the blocks of a segment file.
fn block_starts(path: &Path) -> Vec<u64> {
    let bytes = std::fs::read(path).expect("segment");
    let mut starts = Vec::new();
    let mut at = 5;
    while let Ok(Some(block)) = decode_block(&bytes[at..]) {
        starts.push(at as u64);
        at += block_bytes(block.area.len());
    }
    starts
}

#[tokio::test]
async fn a_damaged_context_leaves_the_others_serving() {
    let root = tempfile::tempdir().expect("temp dir");
    let data = root.path().join("data");
    let settings = ["myelin.contexts=default,orders"];
    let server = myelin()
        .node()
        .data_dir(&data)
        .log_file(root.path().join("first.log"))
        .segment_size("1MB")
        .settings(settings)
        .start();
    let mut client = server.client().await;
    for s in 0..100 {
        let events = vec![event("order-1", s, false)];
        client
            .append_event(in_context("orders", tokio_stream::iter(events)))
            .await
            .expect("append to orders");
    }
    for s in 0..5 {
        client
            .append_event(tokio_stream::iter(vec![event("account-1", s, false)]))
            .await
            .expect("append to default");
    }
    server.stop();

    // Bit rot in an acknowledged block with 50 more after it.
    let segment = data.join("orders").join(SegmentKind::Events.file_name(0));
    let damaged_at = block_starts(&segment)[50];
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&segment)
        .expect("open");
    let mut byte = [0u8; 1];
    file.read_exact_at(&mut byte, damaged_at + 40).expect("read");
    file.write_all_at(&[byte[0] ^ 0x04], damaged_at + 40).expect("flip");
    drop(file);
    let damaged = std::fs::read(&segment).expect("segment");

    let server = myelin()
        .node()
        .data_dir(&data)
        .log_file(root.path().join("second.log"))
        .segment_size("1MB")
        .settings(settings)
        .start();
    let mut client = server.client().await;
    // The healthy context reads and takes appends.
    assert_eq!(history(&mut client).await.len(), 5);
    client
        .append_event(tokio_stream::iter(vec![event("account-1", 5, false)]))
        .await
        .expect("append to default");
    // The damaged one refuses every call, saying where the damage is.
    let status = client
        .get_last_token(in_context("orders", GetLastTokenRequest {}))
        .await
        .expect_err("orders is unavailable");
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    let expected_place = format!("{} at offset {damaged_at}", segment.display());
    assert!(
        status
            .message()
            .starts_with("[AXONIQ-9000] Context orders is unavailable"),
        "{status:?}"
    );
    assert!(status.message().contains(&expected_place), "{status:?}");
    let status = client
        .append_event(in_context(
            "orders",
            tokio_stream::iter(vec![event("order-1", 100, false)]),
        ))
        .await
        .expect_err("no appends to orders");
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");

    let response = reqwest::get(format!("{}/actuator/health", server.http_url()))
        .await
        .expect("health");
    assert_eq!(response.status(), 503);
    let health: serde_json::Value = response.json().await.expect("json");
    let details = &health["components"]["eventStore"]["details"];
    assert_eq!(details["orders"]["status"], "DOWN", "{health}");
    let error = details["orders"]["error"].as_str().expect("error text");
    assert!(error.contains(&expected_place), "{error}");
    assert_eq!(details["default"]["status"], "UP", "{health}");
    server.stop();

    // Nothing was cut off or rewritten: the damaged file is exactly as it was.
    assert!(
        std::fs::read(&segment).expect("segment") == damaged,
        "the damaged file is untouched"
    );
}

/// A context created through the REST API whose directory would be an existing file (here the
/// control database, which lives in the data directory by default) is refused with a 409 and
/// leaves no record.
#[tokio::test]
async fn a_new_context_whose_directory_is_taken_by_a_file_is_refused() {
    let root = tempfile::tempdir().expect("temp dir");
    let data = root.path().join("data");
    let server = myelin()
        .node()
        .data_dir(&data)
        .log_file(root.path().join("server.log"))
        .segment_size("1MB")
        .start();
    assert!(data.join("myelin-controldb.sqlite3").is_file());
    let http = reqwest::Client::new();
    let response = http
        .post(format!("{}/v1/context", server.http_url()))
        .json(&serde_json::json!({ "context": "myelin-controldb.sqlite3" }))
        .send()
        .await
        .expect("POST");
    assert_eq!(response.status(), 409);
    let body: serde_json::Value = response.json().await.expect("json");
    assert!(body.to_string().contains("is not a directory"), "{body}");
    let contexts: serde_json::Value = http
        .get(format!("{}/v1/public/context", server.http_url()))
        .send()
        .await
        .expect("GET")
        .json()
        .await
        .expect("json");
    assert!(!contexts.to_string().contains("myelin-controldb"), "{contexts}");
    server.stop();
}
