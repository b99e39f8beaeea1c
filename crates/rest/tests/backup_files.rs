//! `GET /v1/backup/files/{context}/{type}/{file}`: closed files whole and in ranges, the active
//! segment's committed prefix, digests, and names that must never be served.

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::http::{Method, StatusCode};
use base64::Engine as _;
use myelin_format::segment::{FILE_HEADER_BYTES, decode_block};
use myelin_store::{ContextStore, SegmentKind};
use myelin_testkit::events::sized_event as event;
use myelin_testkit::rest::{Answer, Rest, rest};
use myelin_testkit::store::append_sized as append;
use serde_json::json;
use sha2::{Digest, Sha256};

fn name(path: &Path) -> String {
    path.file_name().expect("file name").to_string_lossy().into_owned()
}

fn uri(context: &str, kind: &str, file: &str) -> String {
    format!("/v1/backup/files/{context}/{kind}/{file}")
}

fn repr_digest(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    format!("sha-256=:{}:", base64::engine::general_purpose::STANDARD.encode(digest))
}

async fn get_range(rest: &Rest, uri: &str, range: &str) -> Answer {
    rest.call(Method::GET, uri, &[("range", range)], None).await
}

/// Waits until the store lists at least `count` closed event segments, and every segment
/// rolled so far (their index files are written off the write path).
async fn wait_for_closed(store: &ContextStore, count: usize) -> Vec<PathBuf> {
    for _ in 0..200 {
        let (closed, _) = store.segment_files(SegmentKind::Events);
        if closed.len() >= count && closed.len() == store.closed_segment_count(SegmentKind::Events) {
            return closed.into_iter().flat_map(|(_, files)| files).collect();
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    panic!("fewer than {count} closed segments after 5 s");
}

/// Parses a served active-segment prefix: whole blocks from the header to its very end.
/// Returns the number of events.
fn parse_whole_transactions(bytes: &[u8]) -> u64 {
    assert!(bytes.len() >= FILE_HEADER_BYTES, "{} bytes", bytes.len());
    let mut offset = FILE_HEADER_BYTES;
    let mut events = 0;
    while offset < bytes.len() {
        match decode_block(&bytes[offset..]) {
            Ok(Some(block)) => {
                events += block.count as u64;
                offset += block.total_bytes();
            }
            Ok(None) => panic!("end marker at {offset} inside a {}-byte prefix", bytes.len()),
            Err(e) => panic!(
                "torn or invalid block at {offset} of a {}-byte prefix: {e}",
                bytes.len()
            ),
        }
    }
    assert_eq!(offset, bytes.len());
    events
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_listed_closed_file_downloads_whole_with_its_digest() {
    let rest = rest();
    let store = rest.store("default");
    append(&store, "a", 0, 200, 200);
    let files = wait_for_closed(&store, 3).await;
    assert!(files.len() >= 9, "{files:?}");
    for path in &files {
        let on_disk = std::fs::read(path).expect("listed file readable");
        for kind in ["EVENT", "event", "Event"] {
            let answer = rest.get(&uri("default", kind, &name(path))).await;
            assert_eq!(answer.status, StatusCode::OK, "{}: {}", path.display(), answer.text());
            assert_eq!(answer.body.as_ref(), on_disk.as_slice(), "{}", path.display());
            assert_eq!(answer.header("repr-digest"), Some(repr_digest(&on_disk).as_str()));
            assert_eq!(answer.header("accept-ranges"), Some("bytes"));
            assert_eq!(answer.header("content-type"), Some("application/octet-stream"));
            assert_eq!(
                answer.header("content-length"),
                Some(on_disk.len().to_string().as_str())
            );
            assert_eq!(answer.header("x-myelin-active-segment"), None);
        }
    }
    // The listing endpoint and the file endpoint agree on what exists.
    let listed = rest.get("/v1/backup/filenames?type=EVENT").await.json();
    let listed: Vec<&str> = listed
        .as_array()
        .expect("array")
        .iter()
        .map(|v| v.as_str().expect("path"))
        .collect();
    for path in &files {
        assert!(listed.contains(&path.to_string_lossy().as_ref()), "{}", path.display());
    }
    rest.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_files_honour_one_range() {
    let rest = rest();
    let store = rest.store("default");
    append(&store, "a", 0, 200, 200);
    let files = wait_for_closed(&store, 1).await;
    let data = &files[0];
    let bytes = std::fs::read(data).expect("read");
    let len = bytes.len();
    assert!(len > 1000, "{len}");
    let whole_digest = repr_digest(&bytes);
    let target = uri("default", "EVENT", &name(data));
    let cases: Vec<(String, usize, usize)> = vec![
        ("bytes=0-99".to_string(), 0, 99),
        ("bytes=100-299".to_string(), 100, 299),
        ("bytes=-50".to_string(), len - 50, len - 1),
        (format!("bytes={}-", len - 10), len - 10, len - 1),
        (format!("bytes=5-{}", len + 100), 5, len - 1),
        (format!("bytes=-{}", len + 100), 0, len - 1),
        (format!("bytes={}-{}", len - 1, len - 1), len - 1, len - 1),
    ];
    for (range, first, last) in cases {
        let answer = get_range(&rest, &target, &range).await;
        assert_eq!(answer.status, StatusCode::PARTIAL_CONTENT, "{range}: {}", answer.text());
        assert_eq!(answer.body.as_ref(), &bytes[first..=last], "{range}");
        assert_eq!(
            answer.header("content-range"),
            Some(format!("bytes {first}-{last}/{len}").as_str()),
            "{range}"
        );
        assert_eq!(
            answer.header("content-length"),
            Some((last - first + 1).to_string().as_str())
        );
        assert_eq!(answer.header("accept-ranges"), Some("bytes"));
        assert_eq!(
            answer.header("repr-digest"),
            Some(whole_digest.as_str()),
            "the digest is of the whole file"
        );
    }
    for range in [
        format!("bytes={len}-"),
        format!("bytes={}-{}", len + 5, len + 10),
        "bytes=-0".to_string(),
    ] {
        let answer = get_range(&rest, &target, &range).await;
        assert_eq!(answer.status, StatusCode::RANGE_NOT_SATISFIABLE, "{range}");
        assert_eq!(answer.header("content-range"), Some(format!("bytes */{len}").as_str()));
        assert!(answer.json()["error"].is_string());
    }
    // Ranges this server does not honour are answered with the whole file.
    for range in ["bytes=0-1,5-6", "items=0-5", "bytes=9-1", "nonsense"] {
        let answer = get_range(&rest, &target, range).await;
        assert_eq!(answer.status, StatusCode::OK, "{range}");
        assert_eq!(answer.body.as_ref(), bytes.as_slice());
    }
    rest.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_file_is_hashed_once_per_version() {
    let rest = rest();
    let store = rest.store("default");
    append(&store, "a", 0, 200, 200);
    let files = wait_for_closed(&store, 1).await;
    let bloom = files
        .iter()
        .find(|p| p.extension().is_some_and(|e| e == "mbloom"))
        .expect("a bloom file");
    let target = uri("default", "EVENT", &name(bloom));
    let original = std::fs::read(bloom).expect("read");
    let first = rest.get(&target).await;
    assert_eq!(first.header("repr-digest"), Some(repr_digest(&original).as_str()));

    // Change a byte in place and put the modification time back: the same version as far as
    // the cache can tell, so the cached digest is answered (proof that it was not re-hashed).
    let file = std::fs::OpenOptions::new().write(true).open(bloom).expect("open");
    let modified = file.metadata().expect("metadata").modified().expect("mtime");
    file.write_all_at(&[original[0] ^ 0xff], 0).expect("write");
    file.set_modified(modified).expect("restore mtime");
    let cached = rest.get(&target).await;
    assert_ne!(cached.body.as_ref(), original.as_slice());
    assert_eq!(
        cached.header("repr-digest"),
        first.header("repr-digest"),
        "not re-hashed"
    );

    // A new modification time is a new version: hashed again.
    file.set_modified(modified + std::time::Duration::from_secs(1))
        .expect("touch");
    let rehashed = rest.get(&target).await;
    assert_eq!(
        rehashed.header("repr-digest"),
        Some(repr_digest(&rehashed.body).as_str())
    );
    assert_ne!(rehashed.header("repr-digest"), first.header("repr-digest"));
    file.write_all_at(&original[..1], 0).expect("restore");
    rest.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_active_segment_is_served_up_to_its_committed_end() {
    let rest = rest();
    let store = rest.store("default");
    // Empty: just the header.
    let active = store.active_segment(SegmentKind::Events);
    let empty = rest.get(&uri("default", "EVENT", &name(&active.path))).await;
    assert_eq!(empty.status, StatusCode::OK, "{}", empty.text());
    assert_eq!(empty.body.len(), FILE_HEADER_BYTES);
    assert_eq!(parse_whole_transactions(&empty.body), 0);

    for round in 0..3i64 {
        // Stays within the first 8 KiB segment.
        append(&store, "a", round * 5, 5, 100);
        let active = store.active_segment(SegmentKind::Events);
        let committed = store.active_committed_len(SegmentKind::Events);
        assert_eq!(committed, active.committed_bytes);
        let target = uri("default", "EVENT", &name(&active.path));
        let answer = rest.get(&target).await;
        assert_eq!(answer.status, StatusCode::OK);
        assert_eq!(answer.header("x-myelin-active-segment"), Some("true"));
        assert_eq!(answer.header("content-length"), Some(committed.to_string().as_str()));
        assert_eq!(answer.body.len() as u64, committed);
        let on_disk = std::fs::read(&active.path).expect("read");
        assert!(
            on_disk.len() as u64 > committed,
            "the file is pre-allocated past the data"
        );
        assert_eq!(answer.body.as_ref(), &on_disk[..committed as usize]);
        assert_eq!(parse_whole_transactions(&answer.body), (round as u64 + 1) * 5);
        assert_eq!(answer.header("repr-digest"), Some(repr_digest(&answer.body).as_str()));
        // Range is ignored for the active segment.
        let ranged = get_range(&rest, &target, "bytes=0-9").await;
        assert_eq!(ranged.status, StatusCode::OK);
        assert_eq!(ranged.body, answer.body);
        assert_eq!(ranged.header("accept-ranges"), Some("none"));
        assert_eq!(ranged.header("content-range"), None);
    }

    // Snapshots have their own active segment.
    let snapshots = store.active_segment(SegmentKind::Snapshots);
    let answer = rest.get(&uri("default", "snapshot", &name(&snapshots.path))).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.header("x-myelin-active-segment"), Some("true"));
    assert_eq!(answer.body.len(), FILE_HEADER_BYTES);
    rest.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_during_a_download_never_tear_the_served_prefix() {
    let rest = rest();
    let store = rest.store("default");
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (store, stop) = (store.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut sequence = 0i64;
            while !stop.load(Ordering::Relaxed) && sequence < 5000 {
                // Transactions of 1 to 4 events, so blocks of different lengths.
                let count = 1 + sequence % 4;
                let events = (sequence..sequence + count).map(|s| event("busy", s, 60)).collect();
                store.append(events).expect("queued").wait().expect("committed");
                sequence += count;
            }
            sequence
        })
    };
    let (mut served, mut rolled, mut events_seen) = (0, 0, 0u64);
    // Until the writer has rolled through a few segments, however slow the machine.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while (served < 50 || store.head() < 300) && std::time::Instant::now() < deadline {
        let active = store.active_segment(SegmentKind::Events);
        let answer = rest.get(&uri("default", "EVENT", &name(&active.path))).await;
        if answer.status == StatusCode::NOT_FOUND {
            // Rolled between looking and asking (its index not written yet): list again.
            rolled += 1;
            continue;
        }
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
        assert!(
            answer.body.len() as u64 >= active.committed_bytes,
            "never less than before"
        );
        events_seen += parse_whole_transactions(&answer.body);
        assert_eq!(answer.header("repr-digest"), Some(repr_digest(&answer.body).as_str()));
        let on_disk = std::fs::read(&active.path).expect("read");
        assert_eq!(
            answer.body.as_ref(),
            &on_disk[..answer.body.len()],
            "a prefix of the file"
        );
        served += 1;
    }
    stop.store(true, Ordering::Relaxed);
    let written = writer.join().expect("writer");
    assert!(written >= 300, "the writer made progress ({written})");
    assert!(
        served >= 50 && events_seen > 0,
        "{served} served ({rolled} rolled), {events_seen} events"
    );
    rest.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_outside_the_listing_are_never_served() {
    let rest = rest();
    let store = rest.store("default");
    append(&store, "a", 0, 200, 200);
    let files = wait_for_closed(&store, 2).await;
    // Another context with more segments than `default`: file names `default` never had.
    let created = rest.post("/v1/context", Some(json!({"context": "other"}))).await;
    assert_eq!(created.status, StatusCode::OK);
    let other = rest.store("other");
    append(&other, "b", 0, 600, 200);
    let other_files = wait_for_closed(&other, 6).await;
    // A segment of `other` starting past `default`'s last token: `default` never had it.
    let foreign = other_files
        .iter()
        .map(|p| name(p))
        .find(|n| n.split('.').next().and_then(|first| first.parse::<u64>().ok()) > Some(store.head()))
        .expect("a file name only `other` lists");

    let (events_dir, _) = rest.provisioner.dirs("default");
    std::fs::write(events_dir.join("notes.txt"), b"not a segment").expect("write");
    let active = store.active_segment(SegmentKind::Events);
    let active_first: u64 = name(&active.path).trim_end_matches(".events").parse().expect("numeric");
    let listed_absolute = files[0].to_string_lossy().replace('/', "%2F");
    let encode_all = |text: &str| text.bytes().map(|b| format!("%{b:02x}")).collect::<String>();

    let hostile = [
        "..".to_string(),
        "%2e%2e".to_string(),
        "%2E%2E".to_string(),
        ".".to_string(),
        "..%2f..%2f..%2fetc%2fpasswd".to_string(),
        "%2e%2e%2f%2e%2e%2f%2e%2e%2fetc%2fpasswd".to_string(),
        encode_all("../../../../etc/passwd"),
        "%2Fetc%2Fpasswd".to_string(),
        listed_absolute,
        format!("..%2F{}", name(&files[0])),
        format!("%2E%2E%2Fdefault%2F{}", name(&files[0])),
        format!("{}%00", name(&files[0])),
        format!("{}%2F", name(&files[0])),
        myelin_control::DB_FILE_NAME.to_string(),
        "notes.txt".to_string(),
        foreign,
        SegmentKind::Events.index_file_name(active_first),
        SegmentKind::Events.bloom_file_name(active_first),
        "%ff%fe".to_string(),
        "x".repeat(300),
    ];
    for file in &hostile {
        let answer = rest.get(&uri("default", "EVENT", file)).await;
        assert!(
            answer.status == StatusCode::NOT_FOUND || answer.status == StatusCode::BAD_REQUEST,
            "{file}: {} {}",
            answer.status,
            answer.text()
        );
        if answer.status == StatusCode::NOT_FOUND {
            assert!(answer.json()["error"].is_string(), "{file}: a JSON error");
        }
    }
    // Paths with more segments never reach a file: no route.
    for path in [
        "/v1/backup/files/default/EVENT/../../etc/passwd",
        "/v1/backup/files/default/EVENT//etc/passwd",
        "/v1/backup/files/default/EVENT/",
        "/v1/backup/files/default/EVENT/a/b",
        "/v1/backup/files/../../etc/passwd",
    ] {
        let answer = rest.get(path).await;
        assert!(!answer.status.is_success(), "{path}: {}", answer.status);
        assert!(answer.status.is_client_error(), "{path}: {}", answer.status);
    }
    // A closed event segment is not a snapshot file.
    let wrong_type = rest.get(&uri("default", "SNAPSHOT", &name(&files[0]))).await;
    assert_eq!(wrong_type.status, StatusCode::NOT_FOUND);
    // The same name in another context is that context's file, not this one's.
    let shared = name(&files[0]);
    let mine = rest.get(&uri("default", "EVENT", &shared)).await;
    let theirs = rest.get(&uri("other", "EVENT", &shared)).await;
    assert_eq!(mine.body.as_ref(), std::fs::read(&files[0]).expect("read").as_slice());
    assert_eq!(theirs.status, StatusCode::OK);
    let their_path = other_files
        .iter()
        .find(|p| name(p) == shared)
        .expect("listed there too");
    assert_eq!(
        theirs.body.as_ref(),
        std::fs::read(their_path).expect("read").as_slice()
    );
    assert_ne!(mine.body, theirs.body);
    rest.shutdown();
}

#[tokio::test]
async fn bad_type_and_unknown_context_answer_like_the_listings() {
    let rest = rest();
    let active = name(&rest.store("default").active_segment(SegmentKind::Events).path);
    for kind in ["EVENTS", "x", "%2e%2e"] {
        let answer = rest.get(&uri("default", kind, &active)).await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{kind}");
        let body = answer.json();
        assert_eq!(body["parameter"], "type", "{body}");
        assert_eq!(body["accepted"], json!(["EVENT", "SNAPSHOT"]), "{body}");
    }
    for context in ["nowhere", "%2e%2e", "..", "%2Ftmp"] {
        let answer = rest.get(&uri(context, "EVENT", &active)).await;
        assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE, "{context}");
        assert_eq!(answer.header("AxonIQ-ErrorCode"), Some("AXONIQ-6000"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_db_zips_are_served_by_name_only() {
    let rest = rest();
    let created = rest.post("/v1/backup/createControlDbBackup", None).await;
    assert_eq!(created.status, StatusCode::OK);
    let path = created.text();
    let name = std::path::Path::new(&path)
        .file_name()
        .expect("name")
        .to_string_lossy()
        .to_string();
    let answer = rest.get(&format!("/v1/backup/controldb/{name}")).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.body.as_ref(), std::fs::read(&path).expect("zip").as_slice());
    assert!(answer.header("repr-digest").expect("digest").starts_with("sha-256=:"));
    for hostile in [
        "controldb.zip",
        "controldb12x.zip",
        "controldb1.zip",
        "..%2Fcontrol%2Fmyelin-controldb.sqlite3",
        "%2Fetc%2Fpasswd",
        "myelin-controldb.sqlite3",
    ] {
        let answer = rest.get(&format!("/v1/backup/controldb/{hostile}")).await;
        assert_ne!(answer.status, StatusCode::OK, "{hostile}");
    }
}

/// `GET /v1/backup/files/log/{group}/{file}` on a node that is not in a cluster: it keeps no
/// log, so nothing is served; and a context named `log` keeps its own event files reachable at
/// the path the log route shares with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_node_serves_no_log_file_and_a_context_named_log_keeps_its_files() {
    let rest = rest();
    let answer = rest.get("/v1/backup/files/log/default/00000000000000000001.log").await;
    assert_eq!(answer.status, StatusCode::NOT_FOUND);
    assert!(
        answer.json()["error"]
            .as_str()
            .is_some_and(|e| e.contains("not part of a cluster")),
        "{}",
        answer.text()
    );

    let created = rest.post("/v1/context", Some(json!({"context": "log"}))).await;
    assert_eq!(created.status, StatusCode::OK, "{}", created.text());
    let store = rest.store("log");
    append(&store, "l", 0, 3, 10);
    let active = store.active_segment(SegmentKind::Events);
    let answer = rest.get(&uri("log", "EVENT", &name(&active.path))).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
    assert_eq!(answer.body.len() as u64, active.committed_bytes);
    assert_eq!(parse_whole_transactions(&answer.body), 3);
    rest.shutdown();
}
