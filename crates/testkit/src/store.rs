//! Store helpers: a store opened in one directory, appends that wait for their commit, and the
//! whole event history read back and decoded.

use std::path::Path;
use std::sync::Arc;

use myelin_proto::grpc::event::Event;
use myelin_store::{Appended, ContextStore, Cursor, StoreConfig};
use prost::Message;

use crate::events::{encode, sized_event};

/// Segments this small roll every few dozen events, so tests cross segment boundaries.
pub const SEGMENT_BYTES: u64 = 8 * 1024;

/// The default configuration with segments of `segment_size_bytes`.
pub fn small_config(segment_size_bytes: u64) -> StoreConfig {
    StoreConfig {
        segment_size_bytes,
        ..StoreConfig::default()
    }
}

/// The default configuration with segments of [`SEGMENT_BYTES`].
pub fn small_segments() -> StoreConfig {
    small_config(SEGMENT_BYTES)
}

/// Context `default` with its events and snapshots both in `dir`, as Axon lays a context out.
pub fn open(dir: &Path, config: StoreConfig) -> Arc<ContextStore> {
    ContextStore::open("default", dir.to_path_buf(), dir.to_path_buf(), config.clone(), config).expect("store opens")
}

/// Appends `events` as one transaction and waits for its commit.
pub fn append(store: &ContextStore, events: &[Event]) -> myelin_store::Result<Appended> {
    store.append(events.iter().map(encode).collect())?.wait()
}

/// Appends `count` one-event transactions to `aggregate` from sequence `first`, each a
/// [`sized_event`] of `size` payload bytes; panics when one fails.
pub fn append_sized(store: &ContextStore, aggregate: &str, first: i64, count: i64, size: usize) {
    for sequence in first..first + count {
        store
            .append(vec![sized_event(aggregate, sequence, size)])
            .expect("append queued")
            .wait()
            .expect("append committed");
    }
}

/// Every event of the store, in token order, as (token, event).
pub fn read_all(store: &ContextStore) -> Vec<(u64, Event)> {
    read_from(store, 0)
}

/// The events from `token` on, in token order, as (token, event).
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
