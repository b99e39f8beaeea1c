//! What an append carries into the writer: events checked on the caller's thread, and where an
//! acknowledged transaction landed.

use bytes::Bytes;
use myelin_format::segment::SegmentKind;
use myelin_format::validate::{InvalidEvent, validate_event};

use crate::log::is_indexed;

/// An event checked to be a whole `Event` message, with the fields the writer needs, read in
/// the same pass on the caller's thread. Only [`PreparedEvent::event`] and
/// [`PreparedEvent::snapshot`] (and the store's own `append`) make one, all through that check,
/// so the store holds nothing a protobuf decoder would refuse.
#[derive(Debug, Clone)]
pub struct PreparedEvent {
    pub(crate) bytes: Bytes,
    pub(crate) aggregate: Box<str>,
    pub(crate) sequence: i64,
    pub(crate) timestamp: i64,
    /// Goes into the aggregate index (and, for events, is sequence-checked).
    pub(crate) indexed: bool,
}

impl PreparedEvent {
    /// An event for the event store ([`crate::ContextStore::append_prepared`]); refused when
    /// the bytes are not a valid `Event` message.
    pub fn event(bytes: Bytes) -> std::result::Result<PreparedEvent, InvalidEvent> {
        PreparedEvent::prepare(SegmentKind::Events, bytes)
    }

    /// A snapshot for the snapshot store ([`crate::ContextStore::append_prepared_snapshot`]);
    /// refused when the bytes are not a valid `Event` message.
    pub fn snapshot(bytes: Bytes) -> std::result::Result<PreparedSnapshot, InvalidEvent> {
        PreparedEvent::prepare(SegmentKind::Snapshots, bytes).map(PreparedSnapshot)
    }

    pub(crate) fn prepare(kind: SegmentKind, bytes: Bytes) -> std::result::Result<PreparedEvent, InvalidEvent> {
        let fields = validate_event(&bytes)?;
        let indexed = is_indexed(kind, &fields);
        let aggregate = fields.aggregate_identifier.into();
        let (sequence, timestamp) = (fields.aggregate_sequence_number, fields.timestamp);
        Ok(PreparedEvent {
            bytes,
            aggregate,
            sequence,
            timestamp,
            indexed,
        })
    }

    /// The event's bytes, as the client encoded it.
    pub fn bytes(&self) -> &Bytes {
        &self.bytes
    }

    /// The aggregate it belongs to (empty for an event outside any aggregate).
    pub fn aggregate(&self) -> &str {
        &self.aggregate
    }

    /// Its sequence number within the aggregate.
    pub fn sequence(&self) -> i64 {
        self.sequence
    }

    /// Whether the store indexes it under its aggregate (and, for events, checks its sequence).
    pub fn is_indexed(&self) -> bool {
        self.indexed
    }
}

/// A snapshot checked and read as [`PreparedEvent::snapshot`] does: its own type, because
/// what the store indexes differs between events and snapshots.
#[derive(Debug, Clone)]
pub struct PreparedSnapshot(PreparedEvent);

impl PreparedSnapshot {
    pub(crate) fn into_inner(self) -> PreparedEvent {
        self.0
    }

    /// The snapshot as an event (its bytes, aggregate and sequence).
    pub fn event(&self) -> &PreparedEvent {
        &self.0
    }
}

impl AsRef<[u8]> for PreparedEvent {
    fn as_ref(&self) -> &[u8] {
        &self.bytes
    }
}

/// Where an acknowledged transaction landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    /// Token of the transaction's first event (the head, for an empty transaction).
    pub first_token: u64,
    pub count: u64,
}
