//! Injected I/O failures (the `failpoints` feature): a failed fsync poisons the store.
#![cfg(feature = "failpoints")]

use myelin_store::StoreError;
use myelin_testkit::events::{decode_all as decode, event_with_payload as event};
use myelin_testkit::store::{append, open, read_all, small_config};

#[test]
fn failed_fsync_poisons_the_store_but_reads_continue() {
    let scenario = fail::FailScenario::setup();
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path(), small_config(1 << 20));
    append(&store, &[event("a", 0, b"durable")]).expect("appends");

    fail::cfg("store::fsync", "return").expect("failpoint");
    let err = append(&store, &[event("a", 1, b"lost")]).expect_err("fsync fails");
    assert!(matches!(err, StoreError::Poisoned(_)), "{err}");
    fail::remove("store::fsync");

    // Never retried: the store stays read-only although the disk "recovered".
    let err = append(&store, &[event("b", 0, b"x")]).expect_err("poisoned");
    assert!(matches!(err, StoreError::Poisoned(_)));
    assert!(store.poisoned().is_some());
    // Nothing unsynced was published; what was durable is still served.
    assert_eq!(store.last_token(), 0);
    assert_eq!(read_all(&store).len(), 1);
    assert_eq!(store.highest_sequence("a").expect("reads"), 0);
    drop(store);
    scenario.teardown();
}

#[test]
fn failed_write_poisons_the_store() {
    let scenario = fail::FailScenario::setup();
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path(), small_config(1 << 20));
    fail::cfg("store::write", "return(enospc)").expect("failpoint");
    let err = append(&store, &[event("a", 0, b"x")]).expect_err("write fails");
    assert!(err.to_string().contains("No space left on device"), "{err}");
    fail::remove("store::write");
    assert!(matches!(
        append(&store, &[event("a", 0, b"x")]),
        Err(StoreError::Poisoned(_))
    ));
    assert_eq!(store.last_token(), -1);
    drop(store);
    scenario.teardown();
}

#[test]
fn concurrent_appends_share_fsyncs() {
    let scenario = fail::FailScenario::setup();
    let syncs = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = syncs.clone();
    fail::cfg_callback("store::fsync", move || {
        counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    })
    .expect("failpoint");
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path(), small_config(16 << 20));
    let threads: Vec<_> = (0..32)
        .map(|t| {
            let store = store.clone();
            std::thread::spawn(move || {
                for s in 0..50 {
                    append(&store, &[event(&format!("agg-{t}"), s, b"x")]).expect("appends");
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("thread");
    }
    let appends = 32 * 50;
    let syncs = syncs.load(std::sync::atomic::Ordering::SeqCst);
    assert_eq!(read_all(&store).len(), appends);
    assert!(syncs < appends, "group commit: {syncs} fsyncs for {appends} appends");
    drop(store);
    scenario.teardown();
}

#[test]
fn failed_roll_poisons_and_restart_continues() {
    let scenario = fail::FailScenario::setup();
    let dir = tempfile::tempdir().expect("tempdir");
    let config = small_config(4096);
    {
        let store = open(dir.path(), config.clone());
        fail::cfg("store::roll", "return").expect("failpoint");
        let mut stored = 0;
        let err = loop {
            match append(&store, &[event("agg", stored, &[0u8; 200])]) {
                Ok(_) => stored += 1,
                Err(e) => break e,
            }
        };
        assert!(matches!(err, StoreError::Poisoned(_) | StoreError::Io { .. }), "{err}");
        fail::remove("store::roll");
        assert!(matches!(
            append(&store, &[event("agg", stored, b"x")]),
            Err(StoreError::Poisoned(_))
        ));
        assert_eq!(read_all(&store).len() as i64, stored);
    }
    let store = open(dir.path(), config);
    let stored = read_all(&store).len() as i64;
    append(&store, &[event("agg", stored, &[0u8; 200])]).expect("appends after restart");
    drop(store);
    scenario.teardown();
}

#[test]
fn failed_index_write_keeps_reads_working_and_is_rebuilt_at_restart() {
    let scenario = fail::FailScenario::setup();
    let dir = tempfile::tempdir().expect("tempdir");
    let config = small_config(4096);
    fail::cfg("store::write_index", "return").expect("failpoint");
    {
        let store = open(dir.path(), config.clone());
        for s in 0..60 {
            append(&store, &[event("agg", s, &[0u8; 100])]).expect("appends");
        }
        let (closed, _) = store.segment_files(myelin_store::SegmentKind::Events);
        assert!(
            closed.is_empty(),
            "segments without durable indexes are not listed: {closed:?}"
        );
        assert_eq!(
            decode(&store.aggregate_events("agg", 0, 0, false, 0).expect("reads")).len(),
            60
        );
        store.shutdown().expect("shuts down");
    }
    fail::remove("store::write_index");
    let store = open(dir.path(), config);
    let (closed, _) = store.segment_files(myelin_store::SegmentKind::Events);
    assert!(!closed.is_empty(), "indexes rebuilt at startup");
    assert!(closed.iter().all(|(_, files)| files.iter().all(|f| f.exists())));
    assert_eq!(
        decode(&store.aggregate_events("agg", 0, 0, false, 0).expect("reads")).len(),
        60
    );
    drop(store);
    scenario.teardown();
}

#[test]
fn a_poisoned_family_reports_it_and_counts_the_failed_appends() {
    let scenario = fail::FailScenario::setup();
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path(), small_config(1 << 20));
    append(&store, &[event("a", 0, b"durable")]).expect("appends");
    assert!(!store.metrics().events.poisoned);

    fail::cfg("store::fsync", "return").expect("failpoint");
    append(&store, &[event("a", 1, b"lost")]).expect_err("fsync fails");
    fail::remove("store::fsync");
    let metrics = store.metrics();
    assert!(metrics.events.poisoned);
    assert!(!metrics.snapshots.poisoned, "the snapshot family has its own writer");
    assert_eq!(metrics.events.failed_appends, 1);
    assert_eq!(metrics.events.appended_transactions, 1);
    assert_eq!(metrics.events.last_token, 0);
    assert_eq!(metrics.events.fsync_seconds.count, 2, "the failed fsync is timed too");
    assert_eq!(metrics.events.batch_transactions.count, 1, "only committed batches");

    // Refused before they reach the writer, empty transactions included.
    append(&store, &[event("b", 0, b"x")]).expect_err("poisoned");
    assert_eq!(store.metrics().events.failed_appends, 2);
    assert!(matches!(append(&store, &[]), Err(StoreError::Poisoned(_))));
    assert_eq!(store.metrics().events.failed_appends, 3);
    drop(store);
    scenario.teardown();
}

/// Appends single-event transactions to `aggregate` from sequence `from` until one fails;
/// returns the next sequence and the error.
fn append_until_error(store: &myelin_store::ContextStore, aggregate: &str, from: i64) -> (i64, StoreError) {
    let mut next = from;
    loop {
        match append(store, &[event(aggregate, next, &[0u8; 200])]) {
            Ok(_) => next += 1,
            Err(e) => return (next, e),
        }
    }
}

/// A full disk shows up when a new segment file is needed (segments are pre-allocated): the
/// append that needs it fails with a clear error, nothing is poisoned or half-written, reads
/// go on, and appends resume by themselves once space is free again.
#[test]
fn a_full_disk_at_roll_fails_appends_until_space_is_freed() {
    let scenario = fail::FailScenario::setup();
    let dir = tempfile::tempdir().expect("tempdir");
    let config = small_config(4096);
    let store = open(dir.path(), config.clone());
    fail::cfg("store::create_segment", "return(enospc)").expect("failpoint");
    let (next, err) = append_until_error(&store, "agg", 0);
    assert!(matches!(err, StoreError::NoSpace { .. }), "{err}");
    assert!(
        err.to_string().contains("appends resume once disk space is freed"),
        "{err}"
    );
    assert!(next > 0, "the first segment took appends before it was full");
    // Still full: every append fails the same way, the store is not poisoned, reads go on.
    for _ in 0..3 {
        let err = append(&store, &[event("agg", next, b"x")]).expect_err("still full");
        assert!(matches!(err, StoreError::NoSpace { .. }), "{err}");
    }
    assert!(store.poisoned().is_none());
    assert_eq!(read_all(&store).len() as i64, next);
    assert_eq!(store.highest_sequence("agg").expect("reads"), next - 1);
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .expect("dir")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|name| name.ends_with(".tmp") || name.starts_with(&format!("{next:020}")))
        .collect();
    assert!(leftovers.is_empty(), "no partly created files: {leftovers:?}");

    // Space is freed: the same append goes through, and later rolls work.
    fail::remove("store::create_segment");
    append(&store, &[event("agg", next, b"after")]).expect("appends resume");
    let total = next + 1 + 40;
    for s in next + 1..total {
        append(&store, &[event("agg", s, &[1u8; 200])]).expect("appends");
    }
    store.shutdown().expect("shuts down");
    drop(store);
    let store = open(dir.path(), config);
    let all = read_all(&store);
    assert_eq!(all.len() as i64, total);
    assert!(
        all.iter()
            .enumerate()
            .all(|(i, (_, e))| e.aggregate_sequence_number == i as i64)
    );
    drop(store);
    scenario.teardown();
}

/// Stopped (or crashed) while the disk was full: the newest file ends in its roll marker with
/// no successor; the restart creates the successor and nothing is lost.
#[test]
fn a_restart_after_a_full_disk_creates_the_missing_segment() {
    let scenario = fail::FailScenario::setup();
    let dir = tempfile::tempdir().expect("tempdir");
    let config = small_config(4096);
    let stored = {
        let store = open(dir.path(), config.clone());
        fail::cfg("store::create_segment", "return(enospc)").expect("failpoint");
        let (next, err) = append_until_error(&store, "agg", 0);
        assert!(matches!(err, StoreError::NoSpace { .. }), "{err}");
        store.shutdown().expect("shuts down");
        fail::remove("store::create_segment");
        next
    };
    let store = open(dir.path(), config);
    assert_eq!(read_all(&store).len() as i64, stored);
    append(&store, &[event("agg", stored, b"after restart")]).expect("appends");
    assert_eq!(read_all(&store).len() as i64, stored + 1);
    drop(store);
    scenario.teardown();
}

/// A transaction larger than a segment replaces the empty active file with a larger one; a
/// full disk at that moment leaves the old file as it was.
#[test]
fn a_full_disk_while_growing_an_empty_segment_leaves_it_in_place() {
    let scenario = fail::FailScenario::setup();
    let dir = tempfile::tempdir().expect("tempdir");
    let config = small_config(4096);
    let store = open(dir.path(), config.clone());
    let big: Vec<_> = (0..20).map(|s| event("big", s, &[2u8; 400])).collect();
    fail::cfg("store::create_segment", "return(enospc)").expect("failpoint");
    let err = append(&store, &big).expect_err("no space for the larger file");
    assert!(matches!(err, StoreError::NoSpace { .. }), "{err}");
    assert!(store.poisoned().is_none());
    append(&store, &[event("small", 0, b"fits")]).expect("the old file still takes appends");
    fail::remove("store::create_segment");
    let big: Vec<_> = (0..20).map(|s| event("big", s, &[3u8; 400])).collect();
    append(&store, &big).expect("appends once space is free");
    store.shutdown().expect("shuts down");
    drop(store);
    // A replacement interrupted by a crash leaves its temp file: recovery removes it.
    let leftover = dir.path().join(format!(
        "{}.tmp",
        myelin_format::segment::SegmentKind::Events.file_name(1)
    ));
    std::fs::write(&leftover, [0u8; 64]).expect("leftover");
    let store = open(dir.path(), config);
    assert!(!leftover.exists(), "leftover temp file removed");
    assert_eq!(read_all(&store).len(), 21);
    drop(store);
    scenario.teardown();
}
