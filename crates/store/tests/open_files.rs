//! A store with more closed segments than the process may open files keeps serving reads of
//! all of them: closed segment files are held open in a bounded cache, not one per segment
//! forever. (The crash loop found the unbounded version: EMFILE after ~2,000 segments.)
//!
//! The only test in this binary, because it lowers the process's descriptor limit.

use myelin_store::StoreConfig;
use myelin_testkit::events::event_with_payload as event;
use myelin_testkit::store::{append, open, read_all};

const DESCRIPTOR_LIMIT: u64 = 96;
const SEGMENTS: usize = 300;

fn open_descriptors() -> usize {
    std::fs::read_dir("/proc/self/fd").expect("procfs").count()
}

#[test]
fn reads_more_closed_segments_than_the_descriptor_limit() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = StoreConfig {
        segment_size_bytes: 16 * 1024,
        open_segment_files: 16,
        ..StoreConfig::default()
    };
    let store = open(dir.path(), config);
    // Each transaction: one event of 20 aggregates; every aggregate appears in every segment.
    let payload = vec![7u8; 400];
    let aggregates = 20;
    let mut sequence = 0;
    while store.closed_segment_count(myelin_store::SegmentKind::Events) < SEGMENTS {
        let events: Vec<_> = (0..aggregates)
            .map(|a| event(&format!("aggregate-{a}"), sequence, &payload))
            .collect();
        append(&store, &events).expect("append");
        sequence += 1;
    }
    let expected_events = (sequence * aggregates) as usize;

    let limit = libc::rlimit {
        rlim_cur: DESCRIPTOR_LIMIT,
        rlim_max: DESCRIPTOR_LIMIT,
    };
    // SAFETY: setrlimit with a valid struct; lowering the limit affects only this process.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) }, 0, "setrlimit");

    // Twice through the whole history: the second pass reopens what the first evicted.
    for _ in 0..2 {
        let all = read_all(&store);
        assert_eq!(all.len(), expected_events);
        assert!(all.iter().enumerate().all(|(i, (token, _))| *token == i as u64));
    }
    // Aggregate reads touch every segment's index and data file.
    for a in [0, aggregates / 2, aggregates - 1] {
        let id = format!("aggregate-{a}");
        let events = store.aggregate_events(&id, 0, 0, false, 0).expect("aggregate read");
        assert_eq!(events.len(), sequence as usize, "{id}");
    }
    let metrics = store.metrics();
    assert!(
        metrics.events.open_files <= 32,
        "open files: {}",
        metrics.events.open_files
    );
    assert!(open_descriptors() < DESCRIPTOR_LIMIT as usize);
}
