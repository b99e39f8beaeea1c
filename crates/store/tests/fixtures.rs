//! Files written by Axon Server itself open, read and answer as upstream's tests expect
//! (AXON_COMPAT §6).

use myelin_format::segment::SegmentKind;
use myelin_testkit::events::decode_all as decode;
use myelin_testkit::fixtures::copy_axon_fixture;
use myelin_testkit::store::{open, read_all, small_config};

#[test]
fn version_zero_files_with_arbitrary_flags() {
    let dir = copy_axon_fixture("data/default");
    let store = open(dir.path(), StoreConfigDefaults::tiny());
    let events = read_all(&store);
    assert_eq!(events.len(), 28);
    assert!(events.iter().enumerate().all(|(i, (t, _))| *t == i as u64));
    assert_eq!(store.last_token(), 27);
    // Both files ended in roll markers: the successor was created as the active segment.
    assert!(dir.path().join(SegmentKind::Events.file_name(28)).exists());
}

#[test]
fn index_is_rebuilt_when_missing() {
    let dir = copy_axon_fixture("event-store-without-index/default");
    let store = open(dir.path(), StoreConfigDefaults::tiny());
    assert_eq!(store.last_token(), 462 * 3 - 1);
    for first in [0u64, 462] {
        assert!(dir.path().join(SegmentKind::Events.index_file_name(first)).exists());
        assert!(dir.path().join(SegmentKind::Events.bloom_file_name(first)).exists());
    }
    let aggregate = decode(&store.aggregate_events("Aggregate-1", 0, 0, false, 0).expect("reads"));
    assert_eq!(aggregate.len(), 14);
    assert!(
        aggregate
            .iter()
            .enumerate()
            .all(|(i, e)| e.aggregate_sequence_number == i as i64)
    );
    assert_eq!(store.highest_sequence("Aggregate-1").expect("reads"), 13);
    assert_eq!(store.highest_sequence("no-such-aggregate").expect("reads"), -1);
    let all = read_all(&store);
    assert_eq!(all.len(), 1386);
    let aggregate_1: Vec<_> = all
        .iter()
        .filter(|(_, e)| e.aggregate_identifier == "Aggregate-1")
        .collect();
    assert_eq!(aggregate_1.len(), 14);
    drop(store);
    // A second start trusts the index files it wrote and answers the same.
    let store = open(dir.path(), StoreConfigDefaults::tiny());
    assert_eq!(
        decode(&store.aggregate_events("Aggregate-1", 5, 0, false, 0).expect("reads")).len(),
        9
    );
}

#[test]
fn segment_with_upstream_index_files() {
    let dir = copy_axon_fixture("event-store-with-last-segment-index/default");
    let store = open(dir.path(), StoreConfigDefaults::tiny());
    assert_eq!(store.last_token(), 461);
    assert_eq!(read_all(&store).len(), 462);
    // Upstream's own side files are left alone.
    assert!(dir.path().join("00000000000000000000.index").exists());
    assert!(dir.path().join("00000000000000000000.bloom").exists());
}

#[test]
fn snapshot_segment() {
    let dir = copy_axon_fixture("multiple-snapshot-segments");
    let store = open(dir.path(), StoreConfigDefaults::tiny());
    assert_eq!(store.last_token(), -1, "snapshots carry no event tokens");
    let raw = std::fs::read(dir.path().join("00000000000000000000.snapshots")).expect("read");
    // Pick the aggregate of the first snapshot from the bytes themselves.
    let first =
        prost::Message::decode(&raw[16..16 + i32::from_be_bytes([raw[12], raw[13], raw[14], raw[15]]) as usize])
            .map(|e: myelin_proto::grpc::event::Event| e)
            .expect("first snapshot decodes");
    let snapshots = decode(
        &store
            .aggregate_snapshots(&first.aggregate_identifier, 0, i64::MAX, 0)
            .expect("reads"),
    );
    assert!(!snapshots.is_empty());
    assert!(
        snapshots
            .windows(2)
            .all(|w| w[0].aggregate_sequence_number > w[1].aggregate_sequence_number)
    );
    assert!(
        snapshots
            .iter()
            .all(|s| s.aggregate_identifier == first.aggregate_identifier)
    );
    let limited = store
        .aggregate_snapshots(&first.aggregate_identifier, 0, i64::MAX, 1)
        .expect("reads");
    assert_eq!(decode(&limited)[0], snapshots[0]);
    assert!(
        store
            .aggregate_snapshots(&first.aggregate_identifier, 0, 0, 0)
            .expect("reads")
            .is_empty()
    );
}

#[test]
fn token_at_follows_upstream() {
    let dir = copy_axon_fixture("token-at");
    let store = open(dir.path(), StoreConfigDefaults::tiny());
    assert_eq!(store.last_token(), 2485);
    assert_eq!(store.head(), 2486);
    assert_eq!(store.token_at(0).expect("token at"), 0);
    assert_eq!(store.token_at(278).expect("token at"), 834);
    assert_eq!(store.token_at(4062).expect("token at"), 2000);
}

struct StoreConfigDefaults;

impl StoreConfigDefaults {
    fn tiny() -> myelin_store::StoreConfig {
        small_config(64 * 1024)
    }
}
