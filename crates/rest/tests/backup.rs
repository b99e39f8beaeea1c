//! The backup endpoints: Axon's shapes, the listing rules, and the control-database backup.

use std::io::Read;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::http::StatusCode;
use myelin_testkit::rest::{Rest, rest};
use myelin_testkit::store::append_sized as append;
use serde_json::Value;

fn strings(value: &Value) -> Vec<String> {
    value
        .as_array()
        .expect("array")
        .iter()
        .map(|v| v.as_str().expect("string").to_string())
        .collect()
}

fn exists(path: &str) -> bool {
    std::path::Path::new(path).exists()
}

/// Segment numbers (first tokens) of the data files in a listing, in order.
fn segments(files: &[String]) -> Vec<u64> {
    files
        .iter()
        .filter(|f| f.ends_with(".events") || f.ends_with(".snapshots"))
        .map(|f| {
            let name = std::path::Path::new(f)
                .file_stem()
                .expect("stem")
                .to_string_lossy()
                .to_string();
            name.parse().expect("numeric segment name")
        })
        .collect()
}

#[tokio::test]
async fn type_is_required_case_insensitive_and_checked() {
    let rest = rest();
    for uri in ["/v1/backup/filenames", "/v1/backup/eventstore"] {
        let missing = rest.get(uri).await;
        assert_eq!(missing.status, StatusCode::BAD_REQUEST, "{uri}");
        let body = missing.json();
        assert_eq!(body["parameter"], "type", "{body}");
        assert_eq!(body["accepted"], serde_json::json!(["EVENT", "SNAPSHOT"]), "{body}");

        let bad = rest.get(&format!("{uri}?type=EVENTS")).await;
        assert_eq!(bad.status, StatusCode::BAD_REQUEST);
        assert_eq!(bad.json()["parameter"], "type");

        for good in ["event", "Event", "EVENT", "snapshot", "SNAPSHOT"] {
            let answer = rest.get(&format!("{uri}?type={good}")).await;
            assert_eq!(answer.status, StatusCode::OK, "{uri} type={good}: {}", answer.text());
        }
    }
    let marker = rest
        .get("/v1/backup/filenames?type=EVENT&lastSegmentBackedUp=abc")
        .await;
    assert_eq!(marker.status, StatusCode::BAD_REQUEST);
    assert_eq!(marker.json()["parameter"], "lastSegmentBackedUp");
    let version = rest
        .get("/v1/backup/filenames?type=EVENT&lastVersionBackedUp=1.5")
        .await;
    assert_eq!(version.status, StatusCode::BAD_REQUEST);
    assert_eq!(version.json()["parameter"], "lastVersionBackedUp");
    let marker = rest
        .get("/v1/backup/eventstore?type=EVENT&lastClosedSegmentBackedUp=x")
        .await;
    assert_eq!(marker.status, StatusCode::BAD_REQUEST);
    assert_eq!(marker.json()["parameter"], "lastClosedSegmentBackedUp");
}

#[tokio::test]
async fn unknown_context_is_empty_for_filenames_and_503_for_eventstore() {
    let rest = rest();
    let filenames = rest.get("/v1/backup/filenames?type=EVENT&context=nowhere").await;
    assert_eq!(filenames.status, StatusCode::OK);
    assert_eq!(filenames.json(), serde_json::json!([]));

    let eventstore = rest.get("/v1/backup/eventstore?type=EVENT&targetContext=nowhere").await;
    assert_eq!(eventstore.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(eventstore.header("AxonIQ-ErrorCode"), Some("AXONIQ-6000"));
    assert!(
        eventstore.json()["error"]
            .as_str()
            .expect("message")
            .contains("nowhere")
    );
}

#[tokio::test]
async fn listings_follow_axons_rules() {
    let rest = rest();
    let store = rest.store("default");
    // Empty store: no closed segments, the active one still listed by /eventstore.
    let empty = rest.get("/v1/backup/eventstore?type=EVENT").await.json();
    assert_eq!(empty["lastClosedSegment"], -1);
    let files = strings(&empty["filenames"]);
    assert_eq!(files.len(), 1);
    assert!(files[0].ends_with("00000000000000000000.events"), "{files:?}");

    append(&store, "a", 0, 200, 200);
    // Let the indexer finish the segments that rolled.
    let closed = wait_for_closed(&rest, 3).await;

    let listed = strings(&rest.get("/v1/backup/filenames?type=EVENT").await.json());
    let numbers = segments(&listed);
    assert_eq!(numbers, closed, "every closed segment, oldest first");
    for file in &listed {
        assert!(std::path::Path::new(file).is_absolute(), "{file}");
        assert!(exists(file), "{file}");
    }
    // Data file, then its index and bloom files.
    assert_eq!(listed.len(), numbers.len() * 3, "{listed:?}");
    for chunk in listed.chunks(3) {
        let stem = chunk[0].trim_end_matches(".events");
        assert!(chunk[1].starts_with(stem) && chunk[1] != chunk[0], "{chunk:?}");
        assert!(chunk[2].starts_with(stem) && chunk[2] != chunk[1], "{chunk:?}");
    }

    // Strictly greater than the marker.
    let marker = numbers[1];
    let after = strings(
        &rest
            .get(&format!("/v1/backup/filenames?type=event&lastSegmentBackedUp={marker}"))
            .await
            .json(),
    );
    assert_eq!(segments(&after), numbers[2..].to_vec());

    // /eventstore: the active segment always first, then closed past the marker.
    let answer = rest
        .get(&format!(
            "/v1/backup/eventstore?type=EVENT&lastClosedSegmentBackedUp={marker}"
        ))
        .await
        .json();
    assert_eq!(answer["lastClosedSegment"].as_u64(), numbers.last().copied());
    let files = strings(&answer["filenames"]);
    let (_, active) = store.segment_files(myelin_store::SegmentKind::Events);
    assert_eq!(files[0], active.to_string_lossy());
    assert_eq!(segments(&files[1..]), numbers[2..].to_vec());
    // Even with a marker past everything, the active segment is listed.
    let newest = numbers.last().copied().unwrap_or_default();
    let answer = rest
        .get(&format!(
            "/v1/backup/eventstore?type=EVENT&lastClosedSegmentBackedUp={newest}"
        ))
        .await
        .json();
    assert_eq!(
        strings(&answer["filenames"]),
        vec![active.to_string_lossy().to_string()]
    );

    // Snapshots are a separate listing.
    let snapshots = rest.get("/v1/backup/eventstore?type=SNAPSHOT").await.json();
    let files = strings(&snapshots["filenames"]);
    assert_eq!(files.len(), 1);
    assert!(files[0].ends_with(".snapshots"), "{files:?}");

    // Every request is in the backup history.
    let history = rest.state.node.control().backups(100).expect("history");
    assert!(
        history
            .iter()
            .any(|b| b.kind == "eventstore" && b.context.as_deref() == Some("default"))
    );
    assert!(
        history
            .iter()
            .any(|b| b.kind == "filenames" && b.last_token == Some(199))
    );
    rest.shutdown();
}

/// Waits until at least `count` closed segments are listed, and every segment rolled so far
/// (their index is written after the roll, off the write path, so the listing may otherwise
/// still grow), and returns their numbers.
async fn wait_for_closed(rest: &Rest, count: usize) -> Vec<u64> {
    let store = rest.store("default");
    for _ in 0..200 {
        let (closed, _) = store.segment_files(myelin_store::SegmentKind::Events);
        if closed.len() >= count && closed.len() == store.closed_segment_count(myelin_store::SegmentKind::Events) {
            return closed.iter().map(|(first, _)| *first).collect();
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    panic!("fewer than {count} closed segments after 5 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_half_written_is_listed_while_segments_roll() {
    let rest = rest();
    let store = rest.store("default");
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (store, stop) = (store.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut sequence = 0;
            while !stop.load(Ordering::Relaxed) && sequence < 3000 {
                append(&store, "rolling", sequence, 1, 300);
                sequence += 1;
            }
            sequence
        })
    };
    let mut checked = 0;
    for _ in 0..60 {
        let files = strings(&rest.get("/v1/backup/filenames?type=EVENT").await.json());
        for file in &files {
            let bytes = std::fs::read(file).unwrap_or_else(|e| panic!("listed {file} unreadable: {e}"));
            if file.ends_with(".events") {
                // A closed segment ends with its -1 roll marker after the last block.
                assert!(bytes.len() > 5, "{file} empty");
            } else if file.ends_with(".mindex") {
                myelin_format::index::IndexFile::decode(bytes)
                    .unwrap_or_else(|e| panic!("listed index {file} invalid: {e}"));
                checked += 1;
            } else {
                assert!(file.ends_with(".mbloom"), "{file}");
                myelin_format::bloom::Bloom::decode(&bytes)
                    .unwrap_or_else(|e| panic!("listed bloom {file} invalid: {e}"));
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let written = writer.join().expect("writer");
    assert!(written > 100, "the writer made progress ({written})");
    assert!(checked > 0, "some closed segments were listed and checked");
    rest.shutdown();
}

#[tokio::test]
async fn replication_log_listing_is_empty_on_a_single_node() {
    let rest = rest();
    for uri in ["/v1/backup/log/filenames", "/v1/backup/log/filenames?context=default"] {
        let answer = rest.get(uri).await;
        assert_eq!(answer.status, StatusCode::OK);
        assert_eq!(answer.json(), serde_json::json!([]));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_db_backup_is_a_consistent_zip_on_both_paths() {
    let rest = rest();
    append(&rest.store("default"), "a", 0, 5, 50);
    let control = rest.state.node.control().clone();
    // Rows committed before the call must be in the backup.
    for i in 0..20 {
        control
            .create_context(&format!("before{i}"), &Default::default())
            .expect("context");
    }
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (control, stop) = (control.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                control
                    .create_context(&format!("during{i}"), &Default::default())
                    .expect("context");
                i += 1;
            }
            i
        })
    };
    for path in ["/createControlDbBackup", "/v1/backup/createControlDbBackup"] {
        let answer = rest.post(path, None).await;
        assert_eq!(answer.status, StatusCode::OK, "{path}: {}", answer.text());
        assert!(
            answer
                .header("content-type")
                .expect("content type")
                .starts_with("text/plain")
        );
        let zip_path = answer.text();
        let file = std::path::Path::new(&zip_path);
        assert!(file.is_absolute(), "{zip_path}");
        assert!(
            file.starts_with(&rest.state.config.controldb_backup_location),
            "{zip_path}"
        );
        let name = file.file_name().expect("name").to_string_lossy().to_string();
        let millis = name
            .strip_prefix("controldb")
            .and_then(|n| n.strip_suffix(".zip"))
            .expect("controldb<millis>.zip");
        assert!(millis.parse::<u64>().is_ok(), "{name}");

        let mut archive = zip::ZipArchive::new(std::fs::File::open(file).expect("zip opens")).expect("zip");
        let mut descriptor = String::new();
        archive
            .by_name("descriptor.json")
            .expect("descriptor")
            .read_to_string(&mut descriptor)
            .expect("read");
        let descriptor: Value = serde_json::from_str(&descriptor).expect("descriptor JSON");
        assert_eq!(descriptor["lastTokens"]["default"], 4, "{descriptor}");
        assert!(descriptor["serverVersion"].is_string(), "{descriptor}");
        let unpacked = rest.dir.path().join(format!("unpacked-{millis}"));
        std::fs::create_dir_all(&unpacked).expect("dir");
        let db_path = unpacked.join(myelin_control::DB_FILE_NAME);
        let mut db = Vec::new();
        archive
            .by_name(myelin_control::DB_FILE_NAME)
            .expect("database in zip")
            .read_to_end(&mut db)
            .expect("read");
        std::fs::write(&db_path, db).expect("write");
        let connection = rusqlite::Connection::open(&db_path).expect("opens");
        let check: String = connection
            .query_row("PRAGMA integrity_check", [], |row| row.get(0))
            .expect("integrity check");
        assert_eq!(check, "ok");
        let before: i64 = connection
            .query_row("SELECT count(*) FROM contexts WHERE name LIKE 'before%'", [], |row| {
                row.get(0)
            })
            .expect("count");
        assert_eq!(before, 20);
    }
    stop.store(true, Ordering::Relaxed);
    assert!(writer.join().expect("writer") > 0);
    let history = control.backups(100).expect("history");
    assert_eq!(history.iter().filter(|b| b.kind == "controldb").count(), 2);
    rest.shutdown();
}
