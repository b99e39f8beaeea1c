//! Behaviour of the store through its public API: appends, sequence rules, snapshots,
//! segment rolls, large transactions, concurrency, indexes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use myelin_proto::grpc::event::Event;
use myelin_proto::grpc::{MetaDataValue, meta_data_value};
use myelin_store::{SegmentKind, StoreError};
use myelin_testkit::events::{decode_all as decode, encode as bytes, event_with_payload as event};
use myelin_testkit::store::{append, open, read_all, read_from, small_config};

#[test]
fn events_round_trip_field_equal() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path(), small_config(1 << 20));
    assert_eq!(store.last_token(), -1);
    assert_eq!(store.first_token(), 0);
    let mut with_meta = event("order-1", 0, b"payload");
    with_meta.message_identifier = String::new();
    with_meta.timestamp = 42;
    with_meta.meta_data.insert(
        "user".into(),
        MetaDataValue {
            data: Some(meta_data_value::Data::TextValue("alice".into())),
        },
    );
    with_meta.meta_data.insert(
        "n".into(),
        MetaDataValue {
            data: Some(meta_data_value::Data::NumberValue(-7)),
        },
    );
    let plain = event("", 0, b"not an aggregate event");
    let appended = append(&store, &[with_meta.clone(), plain.clone()]).expect("appends");
    assert_eq!((appended.first_token, appended.count), (0, 2));
    assert_eq!(read_all(&store), vec![(0, with_meta.clone()), (1, plain)]);
    assert_eq!(
        decode(&store.aggregate_events("order-1", 0, 0, false, 0).expect("reads")),
        vec![with_meta]
    );
    assert_eq!(store.last_token(), 1);
    let empty = append(&store, &[]).expect("empty transaction succeeds");
    assert_eq!(empty.count, 0);
    assert_eq!(store.last_token(), 1);
}

#[test]
fn sequence_numbers_are_checked_atomically() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path(), small_config(1 << 20));
    let err = append(&store, &[event("a", 1, b"x")]).expect_err("must start at 0");
    assert_eq!(err.to_string(), "Invalid sequence number 1 for aggregate a, expected 0");
    append(&store, &[event("a", 0, b"x"), event("a", 1, b"x")]).expect("appends");
    // The second event is wrong: the whole transaction, including `b`, is rejected.
    let err = append(&store, &[event("b", 0, b"x"), event("a", 1, b"x")]).expect_err("conflict");
    assert!(matches!(err, StoreError::InvalidSequence { ref aggregate, actual: 1, expected: 2 } if aggregate == "a"));
    assert_eq!(store.last_token(), 1);
    assert_eq!(store.highest_sequence("b").expect("reads"), -1);
    let err = append(&store, &[event("c", 0, b"x"), event("c", 2, b"x")]).expect_err("gap inside a transaction");
    assert!(matches!(
        err,
        StoreError::InvalidSequence {
            actual: 2,
            expected: 1,
            ..
        }
    ));
    // Events without an aggregate type are not checked.
    let mut untyped = event("a", 77, b"x");
    untyped.aggregate_type.clear();
    append(&store, &[untyped, event("a", 2, b"x")]).expect("untyped events are not sequence-checked");
    assert_eq!(store.highest_sequence("a").expect("reads"), 2);
    assert_eq!(
        decode(&store.aggregate_events("a", 1, 1, false, 0).expect("reads")).len(),
        1
    );
}

#[test]
fn snapshots_are_checked_and_listed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path(), small_config(1 << 20));
    let events: Vec<Event> = (0..5).map(|s| event("agg", s, b"e")).collect();
    append(&store, &events).expect("appends");
    let snapshot = |seq: i64| {
        let mut s = event("agg", seq, b"state");
        s.snapshot = true;
        bytes(&s)
    };
    let err = store
        .append_snapshot(snapshot(5))
        .expect("queued")
        .wait()
        .expect_err("ahead of events");
    assert_eq!(
        err.to_string(),
        "Invalid sequence number while storing snapshot. Highest aggregate agg sequence number: 4, snapshot sequence 5."
    );
    for seq in [1, 3, 2] {
        store
            .append_snapshot(snapshot(seq))
            .expect("queued")
            .wait()
            .expect("stored");
    }
    assert_eq!(store.last_token(), 4, "snapshots take no event tokens");
    let seqs = |v: Vec<bytes::Bytes>| {
        decode(&v)
            .iter()
            .map(|e| e.aggregate_sequence_number)
            .collect::<Vec<_>>()
    };
    assert_eq!(
        seqs(store.aggregate_snapshots("agg", 0, 10, 0).expect("reads")),
        vec![3, 2, 1]
    );
    assert_eq!(seqs(store.aggregate_snapshots("agg", 2, 3, 0).expect("reads")), vec![2]);
    assert_eq!(
        seqs(store.aggregate_snapshots("agg", 0, 10, 2).expect("reads")),
        vec![3, 2]
    );
    assert!(store.aggregate_snapshots("agg", 0, 0, 0).expect("reads").is_empty());
    // allow_snapshots: latest snapshot, then only later events.
    assert_eq!(
        seqs(store.aggregate_events("agg", 0, 0, true, 0).expect("reads")),
        vec![3, 4]
    );
    assert_eq!(
        seqs(store.aggregate_events("agg", 0, 0, false, 0).expect("reads")),
        vec![0, 1, 2, 3, 4]
    );
    assert_eq!(
        seqs(store.aggregate_events("agg", 4, 0, true, 0).expect("reads")),
        vec![4]
    );
    assert!(
        store
            .aggregate_events("unknown", 0, 0, true, 0)
            .expect("reads")
            .is_empty()
    );
}

#[test]
fn segments_roll_and_everything_survives_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = small_config(4096);
    let mut expected = Vec::new();
    {
        let store = open(dir.path(), config.clone());
        for i in 0..300 {
            let aggregate = format!("agg-{}", i % 7);
            let e = event(&aggregate, (i / 7) as i64, &[i as u8; 100]);
            append(&store, std::slice::from_ref(&e)).expect("appends");
            expected.push(e);
        }
        assert_eq!(
            read_all(&store).into_iter().map(|(_, e)| e).collect::<Vec<_>>(),
            expected
        );
        store.shutdown().expect("shuts down");
    }
    let segments: Vec<_> = std::fs::read_dir(dir.path())
        .expect("dir")
        .filter_map(|e| SegmentKind::Events.parse_file_name(e.ok()?.file_name().to_str()?))
        .collect();
    assert!(segments.len() > 5, "tiny segments must roll: {segments:?}");
    let store = open(dir.path(), config);
    assert_eq!(
        read_all(&store).into_iter().map(|(_, e)| e).collect::<Vec<_>>(),
        expected
    );
    for a in 0..7 {
        let aggregate = format!("agg-{a}");
        let events = decode(&store.aggregate_events(&aggregate, 0, 0, false, 0).expect("reads"));
        let want: Vec<_> = expected
            .iter()
            .filter(|e| e.aggregate_identifier == aggregate)
            .cloned()
            .collect();
        assert_eq!(events, want);
        assert_eq!(
            store.highest_sequence(&aggregate).expect("reads"),
            want.len() as i64 - 1
        );
        let tail = decode(&store.aggregate_events(&aggregate, 40, 41, false, 0).expect("reads"));
        assert_eq!(
            tail.iter().map(|e| e.aggregate_sequence_number).collect::<Vec<_>>(),
            vec![40, 41]
        );
    }
    // Reading from the middle, through the seek tables.
    assert_eq!(
        read_from(&store, 123).first().map(|(t, e)| (*t, e.clone())),
        Some((123, expected[123].clone()))
    );
    // After restart the sequence check still knows every aggregate.
    assert!(append(&store, &[event("agg-0", 0, b"dup")]).is_err());
    append(&store, &[event("agg-0", 43, b"next")]).expect("continues");
}

#[test]
fn transactions_over_32767_events_span_blocks_and_appear_at_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path(), small_config(64 * 1024));
    append(&store, &[event("before", 0, b"x")]).expect("appends");
    let big: Vec<Event> = (0..40_000).map(|s| event("big", s, b"")).collect();
    let appended = append(&store, &big).expect("appends a huge transaction");
    assert_eq!((appended.first_token, appended.count), (1, 40_000));
    append(&store, &[event("after", 0, b"x")]).expect("appends");
    store.shutdown().expect("shuts down");
    drop(store);
    let store = open(dir.path(), small_config(64 * 1024));
    let all = read_all(&store);
    assert_eq!(all.len(), 40_002);
    assert_eq!(all[40_001].1.aggregate_identifier, "after");
    assert_eq!(store.highest_sequence("big").expect("reads"), 39_999);
    let raw = std::fs::read(dir.path().join(SegmentKind::Events.file_name(1))).expect("own file");
    // The transaction did not fit in a 64 KiB segment: its file is as large as it needs.
    assert!(raw.len() > 64 * 1024);
    let first_count = i16::from_be_bytes([raw[10], raw[11]]);
    assert_eq!(first_count, i16::MAX, "first block holds 32767 events");
}

#[test]
fn event_larger_than_a_segment_gets_a_file_of_its_own() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path(), small_config(4096));
    append(&store, &[event("a", 0, b"small")]).expect("appends");
    let huge = event("a", 1, &vec![7u8; 20_000]);
    append(&store, std::slice::from_ref(&huge)).expect("appends");
    append(&store, &[event("a", 2, b"small")]).expect("appends");
    let events = decode(&store.aggregate_events("a", 0, 0, false, 0).expect("reads"));
    assert_eq!(events[1], huge);
    assert_eq!(events.len(), 3);
    let len = std::fs::metadata(dir.path().join(SegmentKind::Events.file_name(1)))
        .expect("file")
        .len();
    assert!(len > 20_000);
}

#[test]
fn concurrent_appenders_get_contiguous_tokens_and_atomic_rejections() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path(), small_config(32 * 1024));
    let acknowledged = Arc::new(Mutex::new(Vec::new()));
    let rejected = Arc::new(Mutex::new(0usize));
    let threads: Vec<_> = (0..16)
        .map(|t| {
            let store = store.clone();
            let acknowledged = acknowledged.clone();
            let rejected = rejected.clone();
            std::thread::spawn(move || {
                let own = format!("own-{t}");
                for i in 0..100i64 {
                    // Two events of its own aggregate, and a race on a shared one.
                    let txs = [
                        vec![event(&own, 2 * i, &[t as u8]), event(&own, 2 * i + 1, &[t as u8])],
                        vec![event(
                            "shared",
                            store.highest_sequence("shared").expect("reads") + 1,
                            &[t as u8],
                        )],
                    ];
                    for tx in txs {
                        match append(&store, &tx) {
                            Ok(a) => acknowledged.lock().expect("lock").push((a.first_token, tx)),
                            Err(StoreError::InvalidSequence { .. }) => *rejected.lock().expect("lock") += 1,
                            Err(e) => panic!("unexpected error: {e}"),
                        }
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("thread");
    }
    let acknowledged = acknowledged.lock().expect("lock").clone();
    let rejected = *rejected.lock().expect("lock");
    let all = read_all(&store);
    let total: usize = acknowledged.iter().map(|(_, tx)| tx.len()).sum();
    assert_eq!(all.len(), total, "exactly the acknowledged events are stored");
    assert!(
        all.iter().enumerate().all(|(i, (t, _))| *t == i as u64),
        "tokens contiguous"
    );
    for (first, tx) in &acknowledged {
        for (i, e) in tx.iter().enumerate() {
            assert_eq!(&all[*first as usize + i].1, e, "acknowledged event at its token");
        }
    }
    let mut highest: HashMap<String, i64> = HashMap::new();
    for (_, e) in &all {
        let h = highest.entry(e.aggregate_identifier.clone()).or_insert(-1);
        assert_eq!(
            e.aggregate_sequence_number,
            *h + 1,
            "per-aggregate sequences contiguous"
        );
        *h += 1;
    }
    assert_eq!(highest["shared"] + 1 + rejected as i64, 1600);
    assert!(rejected > 0 || highest["shared"] == 1599);
}

#[test]
fn damaged_index_files_are_rebuilt() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = small_config(4096);
    {
        let store = open(dir.path(), config.clone());
        for s in 0..100 {
            append(&store, &[event("agg", s, &[0u8; 64])]).expect("appends");
        }
        store.shutdown().expect("shuts down");
    }
    let index = dir.path().join(SegmentKind::Events.index_file_name(0));
    let bloom = dir.path().join(SegmentKind::Events.bloom_file_name(0));
    let mut bytes = std::fs::read(&index).expect("index exists");
    let last = bytes.len() - 10;
    bytes[last] ^= 0xff;
    std::fs::write(&index, &bytes).expect("damage index");
    std::fs::write(&bloom, b"garbage").expect("damage bloom");
    std::fs::remove_file(
        dir.path().join(
            SegmentKind::Events.index_file_name(
                SegmentKind::Events
                    .parse_file_name(&first_closed_after(dir.path(), 0))
                    .expect("second segment"),
            ),
        ),
    )
    .expect("remove second index");
    let store = open(dir.path(), config);
    let events = decode(&store.aggregate_events("agg", 0, 0, false, 0).expect("reads"));
    assert_eq!(events.len(), 100);
    assert!(
        events
            .iter()
            .enumerate()
            .all(|(i, e)| e.aggregate_sequence_number == i as i64)
    );
    assert_ne!(
        std::fs::read(&index).expect("rewritten"),
        bytes,
        "damaged index replaced"
    );
}

fn first_closed_after(dir: &std::path::Path, token: u64) -> String {
    let mut names: Vec<u64> = std::fs::read_dir(dir)
        .expect("dir")
        .filter_map(|e| SegmentKind::Events.parse_file_name(e.ok()?.file_name().to_str()?))
        .filter(|t| *t > token)
        .collect();
    names.sort();
    SegmentKind::Events.file_name(names[0])
}

#[test]
fn interval_durability_acknowledges_and_persists() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = myelin_store::StoreConfig {
        durability: myelin_store::Durability::Interval {
            interval: std::time::Duration::from_millis(20),
        },
        ..small_config(4096)
    };
    {
        let store = open(dir.path(), config.clone());
        for s in 0..100 {
            append(&store, &[event("agg", s, &[0u8; 64])]).expect("appends");
        }
        assert_eq!(read_all(&store).len(), 100);
        store.shutdown().expect("shutdown syncs");
    }
    let store = open(dir.path(), config);
    assert_eq!(read_all(&store).len(), 100);
    assert_eq!(store.highest_sequence("agg").expect("reads"), 99);
}

#[test]
fn dropping_a_store_inside_an_async_runtime_is_safe() {
    let runtime = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
    runtime.block_on(async {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = open(dir.path(), small_config(1 << 20));
        store
            .append(vec![bytes(&event("a", 0, b"x"))])
            .expect("queued")
            .await
            .expect("appended");
        drop(store);
        let store = open(dir.path(), small_config(1 << 20));
        assert_eq!(store.last_token(), 0);
        store.shutdown().expect("shutdown inside a runtime");
    });
}

/// `wait` inside a tokio task: the task's cooperative budget (128 polls) must not turn the
/// blocking wait into an endless spin once it is spent.
#[test]
fn waiting_for_many_appends_inside_a_tokio_task_completes() {
    let runtime = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
    let (done, finished) = std::sync::mpsc::channel();
    let worker = std::thread::spawn(move || {
        runtime.block_on(async {
            let dir = tempfile::tempdir().expect("tempdir");
            let store = open(dir.path(), small_config(1 << 20));
            for s in 0..300 {
                store
                    .append(vec![bytes(&event("a", s, b"x"))])
                    .expect("queued")
                    .wait()
                    .expect("appended");
            }
            assert_eq!(store.last_token(), 299);
            store.shutdown().expect("shutdown");
        });
        let _ = done.send(());
    });
    finished
        .recv_timeout(std::time::Duration::from_secs(60))
        .expect("300 waits inside a task finish (no spin on a spent budget)");
    worker.join().expect("worker");
}

/// Found by the backup drill: a snapshot sent right after its events were acknowledged was
/// refused as "ahead of the aggregate" when a segment rolled at the same moment, because the
/// lookup took the segment lists and then read an active index the roll had just emptied.
/// Every acknowledged event must be visible to every later lookup, roll or not.
#[test]
fn acknowledged_events_are_visible_to_lookups_while_segments_roll() {
    use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
    let dir = tempfile::tempdir().expect("tempdir");
    // A few events per segment: a roll every few appends.
    let store = open(dir.path(), small_config(512));
    let acked = Arc::new(AtomicI64::new(-1));
    let done = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let (store, acked, done) = (store.clone(), acked.clone(), done.clone());
            std::thread::spawn(move || {
                let mut lookups = 0u64;
                while !done.load(Ordering::Relaxed) {
                    let floor = acked.load(Ordering::Acquire);
                    let highest = store.highest_sequence("watched").expect("lookup");
                    assert!(highest >= floor, "lookup saw {highest} after {floor} was acknowledged");
                    lookups += 1;
                }
                lookups
            })
        })
        .collect();
    for s in 0..3000 {
        store
            .append(vec![bytes(&event("watched", s, &[1u8; 60]))])
            .expect("queued")
            .wait()
            .expect("appended");
        acked.store(s, Ordering::Release);
    }
    done.store(true, Ordering::Relaxed);
    for reader in readers {
        assert!(reader.join().expect("reader") > 0);
    }
    store.shutdown().expect("shutdown");
}

/// Aggregate reads read a block whole the first time and single events afterwards
/// (`verified_block_entries`); both ways serve exactly the same events, in closed and active
/// segments, for events smaller and larger than the bytes first read for an event (a guess
/// from the events read before: each larger event here outgrows it).
#[test]
fn repeated_aggregate_reads_serve_the_same_events_with_and_without_the_verified_blocks() {
    for entries in [1 << 20, 0, 3] {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = myelin_store::StoreConfig {
            verified_block_entries: entries,
            ..small_config(16 * 1024)
        };
        let store = open(dir.path(), config);
        let mut expected: HashMap<String, Vec<Event>> = HashMap::new();
        for round in 0..12i64 {
            // Transactions of several aggregates, so blocks hold events of others around the
            // ones wanted; every third payload is larger than any event before it.
            let events: Vec<Event> = (0..5)
                .map(|a| {
                    let size = if (round + a) % 3 == 0 { 3000 + 500 * round } else { 60 };
                    event(&format!("agg-{a}"), round, &vec![(round * 5 + a) as u8; size as usize])
                })
                .collect();
            append(&store, &events).expect("appends");
            for e in events {
                expected.entry(e.aggregate_identifier.clone()).or_default().push(e);
            }
        }
        assert!(
            store.closed_segment_count(SegmentKind::Events) >= 2,
            "the events must span closed segments and the active one"
        );
        for pass in 0..3 {
            for (aggregate, want) in &expected {
                let read = decode(&store.aggregate_events(aggregate, 0, 0, false, 0).expect("reads"));
                assert_eq!(&read, want, "entries {entries}, pass {pass}, {aggregate}");
                let from = decode(&store.aggregate_events(aggregate, 7, 9, false, 0).expect("reads"));
                assert_eq!(from, want[7..=9], "entries {entries}, pass {pass}, {aggregate} 7..=9");
            }
        }
    }
}

/// `nonblocking` answers reads of data already in memory and the page cache, and gives up
/// (without an error, a warning or a rebuilt index) when a file would have to be opened or an
/// index loaded; the same read then succeeds normally, and afterwards without blocking.
#[test]
fn nonblocking_reads_give_up_on_cold_files_and_answer_warm_ones() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = small_config(8 * 1024);
    let mut expected = Vec::new();
    {
        let store = open(dir.path(), config.clone());
        for i in 0..60i64 {
            let e = event("agg", i, &[i as u8; 300]);
            append(&store, std::slice::from_ref(&e)).expect("appends");
            expected.push(e);
        }
        store.shutdown().expect("shuts down");
    }
    let store = open(dir.path(), config);
    assert!(store.closed_segment_count(SegmentKind::Events) >= 2);
    let files = |dir: &std::path::Path| -> Vec<(std::ffi::OsString, std::time::SystemTime, u64)> {
        let mut files: Vec<_> = std::fs::read_dir(dir)
            .expect("dir")
            .map(|e| {
                let e = e.expect("entry");
                let meta = e.metadata().expect("metadata");
                (e.file_name(), meta.modified().expect("mtime"), meta.len())
            })
            .collect();
        files.sort();
        files
    };
    let before = files(dir.path());
    // Fresh from disk: closed segments are not open and their indexes not loaded.
    let cold = myelin_store::nonblocking(|| store.aggregate_events("agg", 0, 0, false, 0));
    assert!(cold.is_none(), "a read that must open files gives up");
    assert_eq!(files(dir.path()), before, "giving up writes nothing (no index rebuilt)");
    assert!(
        myelin_store::nonblocking(|| store.highest_sequence("agg")).is_some(),
        "the active segment's index is in memory"
    );
    let read = decode(&store.aggregate_events("agg", 0, 0, false, 0).expect("reads"));
    assert_eq!(read, expected);
    let warm = myelin_store::nonblocking(|| store.aggregate_events("agg", 0, 0, false, 0))
        .expect("files open, indexes loaded, data in the page cache: no need to block")
        .expect("reads");
    assert_eq!(decode(&warm), expected);
}
