//! `ContextStore::metrics`: counters match what was appended and read, exactly; segment count
//! and bytes on disk follow the files.

use std::path::Path;

use bytes::Bytes;
use myelin_proto::grpc::event::Event;
use myelin_store::{ContextStore, FamilyMetrics, SegmentKind, StoreError};
use myelin_testkit::events::{encode as bytes, event_with_payload as event};
use myelin_testkit::store::{append, open, read_all, read_from, small_config};

/// Per block: 7 header bytes and a 4-byte CRC; per event a 4-byte length prefix.
fn framed_bytes(transactions: u64, events: u64, event_bytes: u64) -> f64 {
    (event_bytes + 4 * events + 11 * transactions) as f64
}

fn event_bytes(events: &[Event]) -> u64 {
    events.iter().map(|e| bytes(e).len() as u64).sum()
}

/// Bytes of the data, index and bloom files of `kind` in `dir`.
fn files_bytes(dir: &Path, kind: SegmentKind) -> u64 {
    let suffixes = [kind.data_suffix(), kind.index_suffix(), kind.bloom_suffix()];
    std::fs::read_dir(dir)
        .expect("lists")
        .map(|entry| entry.expect("entry").path())
        .filter(|path| path.extension().is_some_and(|ext| suffixes.iter().any(|s| ext == *s)))
        .map(|path| std::fs::metadata(path).expect("stat").len())
        .sum()
}

fn assert_nothing_appended(family: &FamilyMetrics) {
    assert_eq!(
        (
            family.appended_transactions,
            family.appended_events,
            family.appended_bytes
        ),
        (0, 0, 0)
    );
    assert_eq!(family.batch_transactions.count, 0);
    assert_eq!(family.batch_bytes.count, 0);
    assert_eq!(family.fsync_seconds.count, 0);
    assert_eq!(family.last_token, -1);
}

#[test]
fn a_new_store_reports_empty_families() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path(), small_config(1 << 20));
    let metrics = store.metrics();
    for family in [&metrics.events, &metrics.snapshots] {
        assert_nothing_appended(family);
        assert_eq!((family.failed_appends, family.read_events), (0, 0));
        assert_eq!(family.segments, 1);
        assert_eq!(family.bytes_on_disk, 1 << 20, "one pre-allocated segment");
        assert!(!family.poisoned);
        assert_eq!(family.fsync_seconds.counts.len(), family.fsync_seconds.bounds.len() + 1);
    }
}

#[test]
fn appended_transactions_events_and_bytes_are_counted_exactly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path(), small_config(1 << 20));
    let sizes = [1usize, 3, 2, 5, 1];
    let mut expected_bytes = 0;
    for (t, size) in sizes.iter().enumerate() {
        let events: Vec<Event> = (0..*size)
            .map(|s| event(&format!("agg-{t}"), s as i64, &vec![7u8; 10 * t + s]))
            .collect();
        expected_bytes += event_bytes(&events);
        append(&store, &events).expect("appends");
    }
    let (transactions, events) = (sizes.len() as u64, sizes.iter().sum::<usize>() as u64);

    let metrics = store.metrics().events;
    assert_eq!(metrics.appended_transactions, transactions);
    assert_eq!(metrics.appended_events, events);
    assert_eq!(metrics.appended_bytes, expected_bytes);
    assert_eq!(metrics.failed_appends, 0);
    assert_eq!(metrics.last_token, events as i64 - 1);
    assert!((1..=transactions).contains(&metrics.fsync_seconds.count), "{metrics:?}");
    assert!(metrics.fsync_seconds.sum > 0.0);
    // One fsync per batch: no multi-block transactions, no rolls.
    assert_eq!(metrics.batch_transactions.count, metrics.fsync_seconds.count);
    assert_eq!(metrics.batch_transactions.sum, transactions as f64);
    assert_eq!(metrics.batch_bytes.count, metrics.batch_transactions.count);
    assert_eq!(
        metrics.batch_bytes.sum,
        framed_bytes(transactions, events, expected_bytes)
    );
    assert_nothing_appended(&store.metrics().snapshots);

    let mut snapshot = event("agg-1", 2, b"state");
    snapshot.snapshot = true;
    store
        .append_snapshot(bytes(&snapshot))
        .expect("queued")
        .wait()
        .expect("stored");
    let after = store.metrics();
    assert_eq!(after.events, metrics, "a snapshot counts in its own family only");
    let snapshots = after.snapshots;
    assert_eq!((snapshots.appended_transactions, snapshots.appended_events), (1, 1));
    assert_eq!(snapshots.appended_bytes, bytes(&snapshot).len() as u64);
    assert_eq!(snapshots.last_token, 0);
    assert_eq!(snapshots.fsync_seconds.count, 1);
    assert_eq!(snapshots.batch_bytes.sum, framed_bytes(1, 1, snapshots.appended_bytes));
}

#[test]
fn concurrent_appends_are_counted_once_each_in_shared_batches() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path(), small_config(16 << 20));
    let (threads, per_thread) = (8, 25);
    let appended: u64 = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let store = &store;
                scope.spawn(move || {
                    let mut bytes = 0;
                    for s in 0..per_thread {
                        let events = [event(&format!("agg-{t}"), s, b"payload")];
                        bytes += event_bytes(&events);
                        append(store, &events).expect("appends");
                    }
                    bytes
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("thread")).sum()
    });
    let transactions = (threads * per_thread) as u64;
    let metrics = store.metrics().events;
    assert_eq!(metrics.appended_transactions, transactions);
    assert_eq!(metrics.appended_events, transactions);
    assert_eq!(metrics.appended_bytes, appended);
    assert!((1..=transactions).contains(&metrics.fsync_seconds.count), "{metrics:?}");
    assert_eq!(metrics.batch_transactions.sum, transactions as f64);
    assert_eq!(metrics.batch_transactions.count, metrics.fsync_seconds.count);
    assert_eq!(
        metrics.batch_transactions.counts.iter().sum::<u64>(),
        metrics.batch_transactions.count
    );
    assert_eq!(
        metrics.batch_bytes.sum,
        framed_bytes(transactions, transactions, appended)
    );
}

#[test]
fn rejected_appends_count_as_failed_and_nothing_else() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path(), small_config(1 << 20));
    append(&store, &[event("a", 0, b"x")]).expect("appends");
    let before = store.metrics();

    let err = append(&store, &[event("a", 5, b"x")]).expect_err("wrong sequence");
    assert!(matches!(err, StoreError::InvalidSequence { .. }), "{err}");
    let after = store.metrics().events;
    assert_eq!(after.failed_appends, 1);
    assert_eq!(
        FamilyMetrics {
            failed_appends: 0,
            ..after
        },
        before.events,
        "nothing but the failure is counted"
    );

    // Refused before it reaches the writer: not a valid `Event` message.
    let err = store
        .append(vec![Bytes::from_static(&[0xff, 0xff])])
        .err()
        .expect("invalid bytes");
    assert!(matches!(err, StoreError::InvalidEvent { .. }), "{err}");
    assert_eq!(store.metrics().events.failed_appends, 2);

    let mut snapshot = event("a", 3, b"ahead of the events");
    snapshot.snapshot = true;
    let err = store
        .append_snapshot(bytes(&snapshot))
        .expect("queued")
        .wait()
        .expect_err("rejected");
    assert!(matches!(err, StoreError::InvalidSnapshotSequence { .. }), "{err}");
    let metrics = store.metrics();
    assert_eq!(metrics.snapshots.failed_appends, 1);
    assert_nothing_appended(&metrics.snapshots);
    assert_eq!(metrics.events.failed_appends, 2);
    assert_eq!(metrics.events.appended_transactions, 1);
}

#[test]
fn read_events_counts_every_event_handed_out() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path(), small_config(1 << 20));
    for s in 0..10 {
        append(&store, &[event("a", s, b"x"), event("", 0, b"not an aggregate event")]).expect("appends");
    }
    assert_eq!(store.metrics().events.read_events, 0);

    assert_eq!(read_all(&store).len(), 20);
    assert_eq!(store.metrics().events.read_events, 20);
    assert_eq!(read_from(&store, 15).len(), 5);
    assert_eq!(store.metrics().events.read_events, 25);
    let mut cursor = myelin_store::Cursor::new(3);
    let mut out = Vec::new();
    store.read_events(&mut cursor, 4, &mut out).expect("reads");
    assert_eq!(out.len(), 4);
    assert_eq!(store.metrics().events.read_events, 29);

    let aggregate = store.aggregate_events("a", 2, 0, false, 0).expect("reads");
    assert_eq!(aggregate.len(), 8);
    assert_eq!(store.metrics().events.read_events, 37);

    let mut snapshot = event("a", 6, b"state");
    snapshot.snapshot = true;
    store
        .append_snapshot(bytes(&snapshot))
        .expect("queued")
        .wait()
        .expect("stored");
    let with_snapshot = store.aggregate_events("a", 0, 0, true, 0).expect("reads");
    assert_eq!(with_snapshot.len(), 4, "the snapshot, then sequences 7..=9");
    let metrics = store.metrics();
    assert_eq!(metrics.events.read_events, 40);
    assert_eq!(metrics.snapshots.read_events, 1);
    assert_eq!(store.aggregate_snapshots("a", 0, 100, 0).expect("reads").len(), 1);
    assert_eq!(store.metrics().snapshots.read_events, 2);

    // Internal reads (GetTokenAt scans a segment) hand nothing to a reader.
    store.token_at(1_700_000_000_005).expect("token");
    store.highest_sequence("a").expect("reads");
    assert_eq!(store.metrics().events.read_events, 40);
}

#[test]
fn segments_and_bytes_on_disk_follow_the_files() {
    let dir = tempfile::tempdir().expect("tempdir");
    let segment_bytes = 4096;
    let config = small_config(segment_bytes);
    let store = open(dir.path(), config.clone());
    let mut last = store.metrics().events;
    assert_eq!((last.segments, last.bytes_on_disk), (1, segment_bytes));
    let mut grew = 0;
    for s in 0..60 {
        append(&store, &[event("agg", s, &[0u8; 200])]).expect("appends");
        let metrics = store.metrics().events;
        assert_eq!(
            metrics.segments,
            store.closed_segment_count(SegmentKind::Events) as u64 + 1
        );
        assert!(metrics.segments >= last.segments);
        assert!(metrics.bytes_on_disk >= last.bytes_on_disk);
        if metrics.segments > last.segments {
            grew += 1;
            assert!(
                metrics.bytes_on_disk >= last.bytes_on_disk + segment_bytes,
                "{metrics:?}"
            );
        }
        last = metrics;
    }
    assert!(grew >= 2, "tiny segments roll: {last:?}");
    store.shutdown().expect("shuts down");
    // Index files are all written now: every byte of the family is accounted for.
    let on_disk = files_bytes(dir.path(), SegmentKind::Events);
    assert_eq!(store.metrics().events.bytes_on_disk, on_disk);
    assert_eq!(
        store.metrics().snapshots.bytes_on_disk,
        files_bytes(dir.path(), SegmentKind::Snapshots)
    );
    drop(store);

    // After a restart the closed segments' lengths are looked up rather than remembered.
    let store: std::sync::Arc<ContextStore> = open(dir.path(), config);
    let metrics = store.metrics().events;
    assert_eq!(metrics.segments, last.segments);
    assert_eq!(metrics.bytes_on_disk, on_disk);
    assert_eq!(metrics.last_token, 59);
    assert_nothing_appended(&FamilyMetrics {
        last_token: -1,
        ..metrics
    });
}
