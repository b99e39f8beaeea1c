//! Helpers shared by the store's integration tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use myelin_proto::grpc::SerializedObject;
use myelin_proto::grpc::event::Event;
use myelin_store::{ContextStore, Cursor, StoreConfig};
use prost::Message;

pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/fixtures/axon-server-se")
}

/// Copies a fixture directory into a fresh temp dir (fixtures are read-only; the store writes
/// index files next to segments).
pub fn copy_fixture(relative: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let source = fixtures().join(relative);
    for entry in std::fs::read_dir(&source).expect("fixture exists") {
        let entry = entry.expect("entry");
        let target = dir.path().join(entry.file_name());
        std::fs::copy(entry.path(), &target).expect("copy");
        let mut perms = std::fs::metadata(&target).expect("meta").permissions();
        #[allow(clippy::permissions_set_readonly_false)]
        perms.set_readonly(false);
        std::fs::set_permissions(&target, perms).expect("chmod");
    }
    dir
}

pub fn small_config(segment_size_bytes: u64) -> StoreConfig {
    StoreConfig {
        segment_size_bytes,
        ..StoreConfig::default()
    }
}

pub fn open(dir: &Path, config: StoreConfig) -> Arc<ContextStore> {
    ContextStore::open("default", dir.to_path_buf(), dir.to_path_buf(), config.clone(), config).expect("store opens")
}

pub fn event(aggregate: &str, sequence: i64, payload: &[u8]) -> Event {
    Event {
        message_identifier: format!("{aggregate}-{sequence}"),
        aggregate_identifier: aggregate.to_string(),
        aggregate_sequence_number: sequence,
        aggregate_type: if aggregate.is_empty() {
            String::new()
        } else {
            "Order".to_string()
        },
        timestamp: 1_700_000_000_000 + sequence,
        payload: Some(SerializedObject {
            r#type: "OrderPlaced".into(),
            revision: "1".into(),
            data: payload.to_vec(),
        }),
        meta_data: Default::default(),
        snapshot: false,
    }
}

pub fn bytes(event: &Event) -> Bytes {
    Bytes::from(event.encode_to_vec())
}

pub fn append(store: &ContextStore, events: &[Event]) -> myelin_store::Result<myelin_store::Appended> {
    store.append(events.iter().map(bytes).collect())?.wait()
}

pub fn read_all(store: &ContextStore) -> Vec<(u64, Event)> {
    read_from(store, 0)
}

pub fn read_from(store: &ContextStore, token: u64) -> Vec<(u64, Event)> {
    let mut cursor = Cursor::new(token);
    let mut out = Vec::new();
    loop {
        let mut batch = Vec::new();
        store.read_events(&mut cursor, 1000, &mut batch).expect("read");
        if batch.is_empty() {
            break;
        }
        out.extend(
            batch
                .into_iter()
                .map(|(t, b)| (t, Event::decode(b).expect("valid event"))),
        );
    }
    out
}

pub fn decode(bytes: &[Bytes]) -> Vec<Event> {
    bytes
        .iter()
        .map(|b| Event::decode(b.clone()).expect("valid event"))
        .collect()
}
