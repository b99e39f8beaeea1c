//! Startup after crashes: torn writes are cut back to whole transactions, anything else that
//! is damaged stops the context with the file and offset named.

use std::os::unix::fs::FileExt;
use std::path::Path;

use myelin_format::segment::{SegmentKind, block_bytes, decode_block};
use myelin_proto::grpc::event::Event;
use myelin_store::{ContextStore, StoreConfig, StoreError};
use myelin_testkit::events::{decode_all as decode, event_with_payload as event};
use myelin_testkit::store::{append, open, read_all, small_config};
use proptest::prelude::*;

/// A small torn-write window so tests can place damage beyond it.
fn config() -> StoreConfig {
    StoreConfig {
        max_batch_bytes: 2048,
        max_transaction_bytes: 2048,
        ..small_config(1 << 20)
    }
}

fn write_transactions(dir: &Path, sizes: &[usize]) -> Vec<Vec<Event>> {
    let store = open(dir, config());
    let mut sequence = 0;
    let mut txs = Vec::new();
    for (t, size) in sizes.iter().enumerate() {
        let tx: Vec<Event> = (0..*size)
            .map(|_| {
                sequence += 1;
                event("agg", sequence - 1, &[t as u8; 30])
            })
            .collect();
        append(&store, &tx).expect("appends");
        txs.push(tx);
    }
    store.shutdown().expect("shuts down");
    txs
}

/// End offset of every block in a segment file, decoded with the format crate.
fn block_ends(path: &Path) -> Vec<u64> {
    let bytes = std::fs::read(path).expect("segment");
    let mut ends = Vec::new();
    let mut at = 5;
    while let Ok(Some(block)) = decode_block(&bytes[at..]) {
        at += block_bytes(block.area.len());
        ends.push(at as u64);
    }
    ends
}

fn active_segment(dir: &Path) -> std::path::PathBuf {
    dir.join(SegmentKind::Events.file_name(0))
}

fn try_open(dir: &Path) -> myelin_store::Result<std::sync::Arc<ContextStore>> {
    ContextStore::open("default", dir.to_path_buf(), dir.to_path_buf(), config(), config())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Truncating the active segment at any byte recovers exactly the whole transactions
    /// before the cut, and the store accepts appends afterwards.
    #[test]
    fn truncation_anywhere_recovers_a_prefix_of_whole_transactions(
        sizes in prop::collection::vec(1usize..5, 1..12),
        cut_fraction in 0.0f64..1.0,
    ) {
        let dir = tempfile::tempdir().expect("tempdir");
        let txs = write_transactions(dir.path(), &sizes);
        let path = active_segment(dir.path());
        let ends = block_ends(&path);
        prop_assert_eq!(ends.len(), txs.len());
        let last_end = *ends.last().expect("blocks");
        let cut = 5 + ((last_end - 5) as f64 * cut_fraction) as u64;
        std::fs::OpenOptions::new().write(true).open(&path).expect("open").set_len(cut).expect("truncate");

        let store = try_open(dir.path()).expect("recovers");
        let whole = ends.iter().filter(|end| **end <= cut).count();
        let expected: Vec<Event> = txs[..whole].iter().flatten().cloned().collect();
        let recovered: Vec<Event> = read_all(&store).into_iter().map(|(_, e)| e).collect();
        prop_assert_eq!(recovered, expected);
        let next = store.highest_sequence("agg").expect("reads") + 1;
        append(&store, &[event("agg", next, b"after recovery")]).expect("appends after recovery");
    }
}

#[test]
fn garbage_from_an_interrupted_write_is_cut_off() {
    let dir = tempfile::tempdir().expect("tempdir");
    let txs = write_transactions(dir.path(), &[2, 3, 1]);
    let path = active_segment(dir.path());
    let end = *block_ends(&path).last().expect("blocks");
    let file = std::fs::OpenOptions::new().write(true).open(&path).expect("open");
    // A block whose size landed but whose data did not, then scattered bytes.
    file.write_all_at(&[0, 0, 0, 40, 2, 0, 1, 0xde, 0xad], end)
        .expect("write");
    file.write_all_at(&[0x55; 100], end + 600).expect("write");
    drop(file);
    let store = try_open(dir.path()).expect("recovers");
    assert_eq!(read_all(&store).len(), txs.iter().map(Vec::len).sum::<usize>());
    append(&store, &[event("agg", 6, b"x")]).expect("appends");
    store.shutdown().expect("shuts down");
    drop(store);
    let store = try_open(dir.path()).expect("reopens");
    assert_eq!(read_all(&store).len(), 7);
}

/// Bytes far into the pre-allocated tail (beyond anything one interrupted write could leave)
/// are found even though reopening reads only where the file system reports data.
#[test]
fn stray_bytes_deep_in_the_preallocated_tail_refuse_to_start() {
    for offset in [200 * 1024, (1 << 20) - 1] {
        let dir = tempfile::tempdir().expect("tempdir");
        write_transactions(dir.path(), &[2, 1]);
        let path = active_segment(dir.path());
        let file = std::fs::OpenOptions::new().write(true).open(&path).expect("open");
        file.write_all_at(&[0x7f], offset).expect("write");
        file.sync_all().expect("sync");
        drop(file);
        match try_open(dir.path()).err().expect("refuses to start") {
            StoreError::Corrupt { file, .. } => assert_eq!(file, path),
            other => panic!("expected corruption at {offset}, got {other}"),
        }
    }
}

#[test]
fn corruption_before_acknowledged_data_refuses_to_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Enough data after the damaged block that no single interrupted write explains it.
    let sizes = vec![1; 200];
    write_transactions(dir.path(), &sizes);
    let path = active_segment(dir.path());
    let ends = block_ends(&path);
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .expect("open");
    let offset = ends[9] + 20;
    let mut byte = [0u8; 1];
    file.read_exact_at(&mut byte, offset).expect("read");
    file.write_all_at(&[byte[0] ^ 0x01], offset).expect("flip");
    drop(file);
    let err = try_open(dir.path()).err().expect("refuses to start");
    match err {
        StoreError::Corrupt { file, offset, .. } => {
            assert_eq!(file, path);
            assert_eq!(offset, ends[9], "names the damaged block");
        }
        other => panic!("expected corruption, got {other}"),
    }
    // Another context in another directory is unaffected.
    let other = tempfile::tempdir().expect("tempdir");
    write_transactions(other.path(), &[1, 2]);
    assert_eq!(read_all(&try_open(other.path()).expect("opens")).len(), 3);
}

/// Appends `events` single-event transactions to `dir` with 4 KiB segments, so many segments
/// close; returns the configuration to reopen with.
fn fill_small_segments(dir: &Path, events: i64) -> StoreConfig {
    let small = StoreConfig {
        segment_size_bytes: 4096,
        ..config()
    };
    let store = ContextStore::open("default", dir.into(), dir.into(), small.clone(), small.clone()).expect("opens");
    for s in 0..events {
        append(&store, &[event("agg", s, &[1u8; 64])]).expect("appends");
    }
    store.shutdown().expect("shuts down");
    small
}

#[test]
fn corruption_in_a_closed_segment_is_reported_on_read() {
    let dir = tempfile::tempdir().expect("tempdir");
    let small = fill_small_segments(dir.path(), 100);
    let path = active_segment(dir.path());
    let ends = block_ends(&path);
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .expect("open");
    file.write_all_at(&[0xff], ends[2] + 30).expect("flip");
    drop(file);
    let store = ContextStore::open("default", dir.path().into(), dir.path().into(), small.clone(), small)
        .expect("closed segments are not scanned at startup");
    let mut cursor = myelin_store::Cursor::new(0);
    let mut out = Vec::new();
    let err = store
        .read_events(&mut cursor, 1000, &mut out)
        .expect_err("tracking read fails");
    assert!(
        matches!(err, StoreError::Corrupt { ref file, offset, .. } if *file == path && offset == ends[2]),
        "{err}"
    );
    let err = store
        .aggregate_events("agg", 0, 0, false, 0)
        .expect_err("aggregate read fails");
    assert!(
        matches!(err, StoreError::Corrupt { ref file, .. } if *file == path),
        "{err}"
    );
    // Events in later segments are still served.
    assert_eq!(
        decode(&store.aggregate_events("agg", 90, 0, false, 0).expect("later events")).len(),
        10
    );
}

#[test]
fn a_missing_middle_segment_refuses_to_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let small = fill_small_segments(dir.path(), 200);
    let mut segments: Vec<u64> = std::fs::read_dir(dir.path())
        .expect("dir")
        .filter_map(|e| SegmentKind::Events.parse_file_name(e.ok()?.file_name().to_str()?))
        .collect();
    segments.sort();
    assert!(segments.len() >= 4);
    std::fs::remove_file(dir.path().join(SegmentKind::Events.file_name(segments[1]))).expect("remove");
    let err = ContextStore::open("default", dir.path().into(), dir.path().into(), small.clone(), small)
        .err()
        .expect("refuses");
    assert!(matches!(err, StoreError::Inconsistent { .. }), "{err}");
}

/// Bit rot close to the end of the active segment, well within the torn-write window of the
/// default limits (33 MB), with acknowledged blocks after it: refused with the damaged block
/// named, not cut off as if it were an interrupted write (which would drop the acknowledged
/// events after it).
#[test]
fn bit_rot_followed_by_acknowledged_blocks_is_not_taken_for_a_torn_write() {
    let default_limits = || StoreConfig::default();
    for (damaged_block, byte_in_block) in [(150usize, 20u64), (197, 9), (198, 30)] {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let store = open(dir.path(), default_limits());
            for s in 0..200 {
                append(&store, &[event("agg", s, &[5u8; 100])]).expect("appends");
            }
            store.shutdown().expect("shuts down");
        }
        let path = active_segment(dir.path());
        let ends = block_ends(&path);
        assert_eq!(ends.len(), 200);
        let block_start = ends[damaged_block - 1];
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .expect("open");
        let mut byte = [0u8; 1];
        file.read_exact_at(&mut byte, block_start + byte_in_block)
            .expect("read");
        file.write_all_at(&[byte[0] ^ 0x10], block_start + byte_in_block)
            .expect("flip");
        drop(file);
        let err = ContextStore::open(
            "default",
            dir.path().into(),
            dir.path().into(),
            default_limits(),
            default_limits(),
        )
        .err()
        .expect("refuses to start");
        match err {
            StoreError::Corrupt { file, offset, reason } => {
                assert_eq!(file, path);
                assert_eq!(offset, block_start, "names the damaged block");
                assert!(reason.contains("valid block follows"), "{reason}");
            }
            other => panic!("expected corruption in block {damaged_block}, got {other}"),
        }
    }
}
