//! What the store offers backups: the committed length of the active segment (a prefix of
//! whole transactions that never changes) and the deletion holds a lease takes.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use myelin_format::segment::{FILE_HEADER_BYTES, decode_block};
use myelin_store::{DeletionHolds, Durability, SegmentKind, StoreConfig};
use myelin_testkit::events::event_with_payload as event;
use myelin_testkit::store::{append, open, small_config};

/// Parses `bytes` as a segment prefix: blocks from the header on, each whole and with a valid
/// CRC, up to the very end or an end marker. Returns where parsing stopped and the events seen.
fn parse_prefix(bytes: &[u8]) -> (usize, u64) {
    let mut offset = FILE_HEADER_BYTES;
    let mut events = 0;
    while offset < bytes.len() {
        match decode_block(&bytes[offset..]) {
            Ok(Some(block)) => {
                events += block.count as u64;
                offset += block.total_bytes();
            }
            Ok(None) => break,
            Err(e) => panic!("block at {offset} of a {}-byte prefix: {e}", bytes.len()),
        }
    }
    (offset, events)
}

/// Reads `[0, committed)` of the active segment and checks it is exactly whole transactions.
fn check_active_prefix(store: &myelin_store::ContextStore) -> (u64, u64) {
    let active = store.active_segment(SegmentKind::Events);
    let bytes = std::fs::read(&active.path).expect("active segment readable");
    let committed = usize::try_from(active.committed_bytes).expect("fits");
    assert!(
        committed >= FILE_HEADER_BYTES && committed <= bytes.len(),
        "{committed}"
    );
    let (end, events) = parse_prefix(&bytes[..committed]);
    assert_eq!(end, committed, "the committed prefix ends on a block boundary");
    (active.committed_bytes, events)
}

#[test]
fn committed_length_is_the_end_of_the_last_transaction() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path(), small_config(64 * 1024));
    assert_eq!(
        store.active_committed_len(SegmentKind::Events),
        FILE_HEADER_BYTES as u64
    );
    assert_eq!(
        store.active_committed_len(SegmentKind::Snapshots),
        FILE_HEADER_BYTES as u64
    );
    let mut sequence = 0;
    let mut previous = FILE_HEADER_BYTES as u64;
    for size in [10usize, 200, 3, 1000, 50] {
        // A transaction of three events per round.
        let events: Vec<_> = (0..3).map(|i| event("agg", sequence + i, &vec![7u8; size])).collect();
        append(&store, &events).expect("append");
        sequence += 3;
        let (committed, events) = check_active_prefix(&store);
        assert!(committed > previous, "grows with every append");
        previous = committed;
        assert_eq!(events, sequence as u64, "every acknowledged event is in the prefix");
        // Past the committed end there is no further block yet.
        let bytes = std::fs::read(store.active_segment(SegmentKind::Events).path).expect("read");
        let next = &bytes[committed as usize..committed as usize + 4];
        assert_eq!(next, &[0, 0, 0, 0], "nothing after the last transaction");
    }
}

#[test]
fn committed_length_follows_the_active_segment_across_rolls() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path(), small_config(4096));
    let mut paths = std::collections::BTreeSet::new();
    for sequence in 0..200 {
        append(&store, &[event("agg", sequence, &[1u8; 100])]).expect("append");
        let active = store.active_segment(SegmentKind::Events);
        paths.insert(active.path.clone());
        let (_, events) = check_active_prefix(&store);
        let first_token: u64 = active
            .path
            .file_stem()
            .and_then(|s| s.to_str())
            .and_then(|s| s.parse().ok())
            .expect("numeric segment name");
        assert_eq!(first_token + events, store.head(), "the prefix holds the whole segment");
    }
    assert!(paths.len() > 3, "segments rolled: {paths:?}");
}

#[test]
fn in_interval_mode_the_committed_length_waits_for_the_sync() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = StoreConfig {
        durability: Durability::Interval {
            interval: Duration::from_secs(3600),
        },
        ..small_config(64 * 1024)
    };
    let store = open(dir.path(), config);
    for sequence in 0..10 {
        append(&store, &[event("agg", sequence, &[2u8; 50])]).expect("append");
    }
    assert_eq!(store.head(), 10, "acknowledged");
    assert_eq!(
        store.active_committed_len(SegmentKind::Events),
        FILE_HEADER_BYTES as u64,
        "written but not synced: not committed for a backup"
    );
    // Shutting down syncs.
    store.shutdown().expect("shutdown");
    let (_, events) = check_active_prefix(&store);
    assert_eq!(events, 10);
}

#[test]
fn the_committed_prefix_is_never_torn_while_appends_go_on() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path(), small_config(256 * 1024));
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (store, stop) = (store.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut sequence = 0;
            while !stop.load(Ordering::Relaxed) && sequence < 20_000 {
                let events: Vec<_> = (0..1 + sequence % 5)
                    .map(|i| event("busy", sequence + i, &[3u8; 120]))
                    .collect();
                append(&store, &events).expect("append");
                sequence += events.len() as i64;
            }
            sequence
        })
    };
    let mut checks = 0;
    let deadline = Instant::now() + Duration::from_secs(2);
    while Instant::now() < deadline {
        check_active_prefix(&store);
        checks += 1;
    }
    stop.store(true, Ordering::Relaxed);
    let written = writer.join().expect("writer");
    assert!(written > 100 && checks > 10, "{written} events, {checks} checks");
}

#[test]
fn deletions_are_held_while_a_hold_of_the_stores_registry_is_live() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path(), small_config(64 * 1024));
    assert!(
        Arc::ptr_eq(&store.deletion_holds(), &DeletionHolds::global()),
        "the process-wide registry by default"
    );
    let holds = Arc::new(DeletionHolds::new());
    store.set_deletion_holds(holds.clone());
    assert!(!store.deletions_held());
    assert!(holds.hold("backup", Instant::now() + Duration::from_secs(60)));
    assert!(store.deletions_held());
    // A hold in another registry does not count.
    let other = open(&dir.path().join("other"), small_config(64 * 1024));
    other.set_deletion_holds(Arc::new(DeletionHolds::new()));
    assert!(!other.deletions_held());
    assert!(holds.release("backup"));
    assert!(!store.deletions_held());
    assert!(holds.hold("short", Instant::now() + Duration::from_millis(50)));
    assert!(store.deletions_held());
    std::thread::sleep(Duration::from_millis(80));
    assert!(!store.deletions_held(), "expired");
}
