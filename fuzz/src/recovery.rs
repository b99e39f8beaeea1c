//! Fuzz body: bytes as the active segment of an event store, then `ContextStore::open`, the
//! startup recovery path (header repair, scan, torn-tail check, roll completion).
//!
//! Refusing to open is a fine answer. A store that opens must:
//! * serve every event it counts to a tracking read from token 0, tokens consecutive;
//! * answer aggregate reads for the aggregates it read (events of that aggregate only);
//! * accept an append, shut down cleanly, and reopen with the same events plus the append.
//!
//! Every input runs in a fresh temporary directory (set `TMPDIR=/dev/shm` when fuzzing: the
//! store syncs its files). Sizes are small so a run takes a millisecond or so and the torn-write
//! window (2 KiB + 64 bytes here) is inside the inputs the fuzzer makes.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use myelin_format::event::EventFields;
use myelin_format::segment::SegmentKind;
use myelin_store::{ContextStore, Cursor, StoreConfig};

/// Events read per `read_events` call: small, so reads resume mid-segment.
const READ_BATCH_EVENTS: usize = 7;
/// Aggregates whose events are read through the index, per input.
const AGGREGATE_READS_MAX: usize = 8;
/// The aggregate of the event appended after recovery.
const APPEND_AGGREGATE: &str = "fuzz-append";

pub fn config() -> StoreConfig {
    StoreConfig {
        segment_size_bytes: 4096,
        max_batch_bytes: 1024,
        max_transaction_bytes: 1024,
        queue_capacity: 16,
        sequence_cache_entries: 64,
        index_cache_bytes: 64 * 1024,
        open_segment_files: 4,
        seek_interval_bytes: 256,
        // One append per run: waiting for more to join its batch only slows the fuzzer.
        flush_delay: Duration::ZERO,
        ..StoreConfig::default()
    }
}

pub fn run(data: &[u8]) {
    let dir = tempfile::tempdir().expect("temporary directory");
    std::fs::write(dir.path().join(SegmentKind::Events.file_name(0)), data).expect("write the segment");
    let Ok(store) = open(dir.path()) else {
        return;
    };
    let events = read_all(&store);
    assert_eq!(
        events.len() as u64,
        store.head(),
        "a tracking read serves every counted event"
    );
    aggregate_reads(&store, &events);

    let highest = store.highest_sequence(APPEND_AGGREGATE).expect("highest sequence");
    let Some(next) = highest.checked_add(1) else {
        return;
    };
    let appended = append_event(next);
    store
        .append(vec![appended.clone().into()])
        .expect("append accepted")
        .wait()
        .expect("append after recovery");
    store.shutdown().expect("clean shutdown");
    drop(store);

    let store = open(dir.path()).expect("a cleanly shut down store reopens");
    let again = read_all(&store);
    assert_eq!(
        again.len(),
        events.len() + 1,
        "reopened store holds the events and the append"
    );
    assert_eq!(
        again[..events.len()],
        events[..],
        "reopened store serves the same events"
    );
    assert_eq!(again[events.len()], appended);
    store.shutdown().expect("clean shutdown");
}

fn open(dir: &Path) -> myelin_store::Result<Arc<ContextStore>> {
    ContextStore::open("fuzz", dir.to_path_buf(), dir.to_path_buf(), config(), config())
}

fn read_all(store: &ContextStore) -> Vec<Vec<u8>> {
    let mut cursor = Cursor::new(0);
    let mut events = Vec::new();
    // Every call but the last returns at least one event, so this ends by head + 1 calls.
    for _ in 0..=store.head() {
        let mut batch = Vec::new();
        store
            .read_events(&mut cursor, READ_BATCH_EVENTS, &mut batch)
            .expect("a recovered store reads");
        if batch.is_empty() {
            return events;
        }
        for (token, event) in batch {
            assert_eq!(token, events.len() as u64, "tokens are consecutive from 0");
            events.push(event.to_vec());
        }
    }
    panic!("tracking read did not end after {} calls", store.head() + 1);
}

fn aggregate_reads(store: &ContextStore, events: &[Vec<u8>]) {
    let mut aggregates: Vec<&str> = events
        .iter()
        .filter_map(|e| EventFields::parse(e).ok())
        .filter(|f| f.is_domain_event())
        .map(|f| f.aggregate_identifier)
        .collect();
    aggregates.sort_unstable();
    aggregates.dedup();
    for aggregate in aggregates.into_iter().take(AGGREGATE_READS_MAX) {
        let read = store
            .aggregate_events(aggregate, 0, 0, false, 0)
            .expect("aggregate read through the recovered index");
        for event in &read {
            let fields = EventFields::parse(event).expect("indexed event parses");
            assert_eq!(fields.aggregate_identifier, aggregate);
        }
        store.highest_sequence(aggregate).expect("highest sequence");
    }
    let _ = store.token_at(0).expect("token at");
}

/// A protobuf `Event` with `aggregate_identifier` (field 2) [`APPEND_AGGREGATE`],
/// `aggregate_type` (field 4) and `aggregate_sequence_number` (field 3), encoded by hand.
fn append_event(sequence: i64) -> Vec<u8> {
    let mut out = Vec::new();
    for (field, value) in [(2u8, APPEND_AGGREGATE), (4, "Fuzz")] {
        out.push(field << 3 | 2);
        out.push(value.len() as u8);
        out.extend_from_slice(value.as_bytes());
    }
    out.push(3 << 3);
    let mut v = sequence as u64;
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
    out
}
