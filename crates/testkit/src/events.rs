//! Event builders: one [`EventBuilder`] that fills an [`Event`], and the named shapes the tests
//! use, each a few builder calls. The shapes differ on purpose (a client's event with every kind
//! of metadata, payloads of a chosen size, sizes that vary so segments roll at odd places), and a
//! test may depend on their exact bytes, so a shape is never changed in passing.

use std::collections::HashMap;

use bytes::Bytes;
use myelin_proto::grpc::event::Event;
use myelin_proto::grpc::{MetaDataValue, SerializedObject, meta_data_value};
use prost::Message;

/// The timestamp of an event at sequence 0 (an instant in 2023), unless a shape says otherwise.
pub const BASE_TIMESTAMP_MS: i64 = 1_700_000_000_000;
/// The timestamp of [`client_event`]s at sequence 0 (2020), older than every other shape's.
pub const CLIENT_BASE_TIMESTAMP_MS: i64 = 1_600_000_000_000;

/// An [`Event`] under construction; [`aggregate_event`] starts one.
#[derive(Debug, Clone)]
pub struct EventBuilder {
    event: Event,
}

/// An event of `aggregate` at `sequence`: message id `<aggregate>-<sequence>`, aggregate type
/// `Order` (none when `aggregate` is empty: an event of no aggregate), timestamp
/// [`BASE_TIMESTAMP_MS`]` + sequence`, an empty `OrderPlaced` revision `1` payload, no metadata.
pub fn aggregate_event(aggregate: &str, sequence: i64) -> EventBuilder {
    EventBuilder {
        event: Event {
            message_identifier: format!("{aggregate}-{sequence}"),
            aggregate_identifier: aggregate.to_string(),
            aggregate_sequence_number: sequence,
            aggregate_type: if aggregate.is_empty() {
                String::new()
            } else {
                "Order".to_string()
            },
            timestamp: BASE_TIMESTAMP_MS + sequence,
            payload: Some(SerializedObject {
                r#type: "OrderPlaced".into(),
                revision: "1".into(),
                data: Vec::new(),
            }),
            meta_data: HashMap::new(),
            snapshot: false,
        },
    }
}

impl EventBuilder {
    /// The message identifier; empty asks the server to assign one.
    pub fn message_id(mut self, id: impl Into<String>) -> Self {
        self.event.message_identifier = id.into();
        self
    }

    pub fn aggregate_type(mut self, aggregate_type: impl Into<String>) -> Self {
        self.event.aggregate_type = aggregate_type.into();
        self
    }

    pub fn timestamp(mut self, timestamp_ms: i64) -> Self {
        self.event.timestamp = timestamp_ms;
        self
    }

    /// The payload's type and revision (its data stays).
    pub fn payload_type(mut self, payload_type: impl Into<String>, revision: impl Into<String>) -> Self {
        let payload = self.event.payload.get_or_insert_with(SerializedObject::default);
        payload.r#type = payload_type.into();
        payload.revision = revision.into();
        self
    }

    /// The payload's data (its type and revision stay).
    pub fn payload(mut self, data: impl Into<Vec<u8>>) -> Self {
        self.event.payload.get_or_insert_with(SerializedObject::default).data = data.into();
        self
    }

    pub fn metadata(mut self, key: &str, value: meta_data_value::Data) -> Self {
        self.event.meta_data.insert(key.to_string(), metadata_value(value));
        self
    }

    /// One metadata entry of every kind a client may send: text, number, boolean, double and
    /// a serialized object; the text and number follow the sequence.
    pub fn every_metadata_kind(self) -> Self {
        use meta_data_value::Data;
        let sequence = self.event.aggregate_sequence_number;
        self.metadata("text", Data::TextValue(format!("t{sequence}")))
            .metadata("number", Data::NumberValue(-sequence - 1))
            .metadata("flag", Data::BooleanValue(true))
            .metadata("double", Data::DoubleValue(0.5))
            .metadata(
                "bytes",
                Data::BytesValue(SerializedObject {
                    r#type: "b".into(),
                    revision: "r".into(),
                    data: vec![0, 1, 2],
                }),
            )
    }

    /// Marks the event a snapshot (or not).
    pub fn snapshot(mut self, snapshot: bool) -> Self {
        self.event.snapshot = snapshot;
        self
    }

    pub fn build(self) -> Event {
        self.event
    }

    /// The event's protobuf bytes, as the store keeps them.
    pub fn encode(self) -> Bytes {
        encode(&self.event)
    }
}

/// A metadata value.
pub fn metadata_value(data: meta_data_value::Data) -> MetaDataValue {
    MetaDataValue { data: Some(data) }
}

/// An event of `aggregate` at `sequence` with `payload` as its data (see [`aggregate_event`]).
pub fn event_with_payload(aggregate: &str, sequence: i64, payload: &[u8]) -> Event {
    aggregate_event(aggregate, sequence).payload(payload).build()
}

/// An event as a client sends it, with everything a client may set: every kind of metadata
/// ([`EventBuilder::every_metadata_kind`]), a payload naming its aggregate and sequence, and an
/// empty message id, which the server fills in.
pub fn client_event(aggregate: &str, sequence: i64) -> Event {
    client_event_builder(aggregate, sequence).build()
}

/// A snapshot of `aggregate` at `sequence`, shaped like a [`client_event`] but with a message id.
pub fn client_snapshot(aggregate: &str, sequence: i64) -> Event {
    client_event_builder(aggregate, sequence)
        .snapshot(true)
        .message_id(format!("snap-{aggregate}-{sequence}"))
        .build()
}

fn client_event_builder(aggregate: &str, sequence: i64) -> EventBuilder {
    aggregate_event(aggregate, sequence)
        .message_id("")
        .aggregate_type("Order")
        .timestamp(CLIENT_BASE_TIMESTAMP_MS + sequence)
        .payload_type("com.example.OrderPlaced", "1")
        .payload(format!("payload of {aggregate} #{sequence}"))
        .every_metadata_kind()
}

/// An event that belongs to no aggregate (no sequence check, not indexed): the `n`th, with a
/// payload of type `payload_type` holding `n`.
pub fn loose_event(payload_type: &str, n: i64) -> Event {
    aggregate_event("", 0)
        .message_id(format!("loose-{n}"))
        .timestamp(CLIENT_BASE_TIMESTAMP_MS + n)
        .payload_type(payload_type, "")
        .payload(n.to_be_bytes())
        .build()
}

/// The bytes of one event of `aggregate` at `sequence` whose payload is `size` bytes of `x`.
pub fn sized_event(aggregate: &str, sequence: i64, size: usize) -> Bytes {
    aggregate_event(aggregate, sequence)
        .aggregate_type("Test")
        .payload_type("Payload", "")
        .payload(vec![b'x'; size])
        .encode()
}

/// An event (or snapshot) of the real-binary drills: its payload size cycles through seven
/// values from 150 to 390 bytes with the sequence, so segments roll at varying places; its
/// message id is unique across events and snapshots.
pub fn drill_event(aggregate: &str, sequence: i64, snapshot: bool) -> Event {
    let size = 150 + (sequence.rem_euclid(7) as usize) * 40;
    aggregate_event(aggregate, sequence)
        .message_id(format!("{aggregate}/{sequence}/{snapshot}"))
        .aggregate_type("Drill")
        .payload_type("DrillEvent", "")
        .payload(vec![b'p'; size])
        .snapshot(snapshot)
        .build()
}

/// An event's protobuf bytes.
pub fn encode(event: &Event) -> Bytes {
    Bytes::from(event.encode_to_vec())
}

/// Decodes stored event bytes; panics on bytes that are not an event.
pub fn decode_all(bytes: &[Bytes]) -> Vec<Event> {
    bytes
        .iter()
        .map(|b| Event::decode(b.clone()).expect("valid event"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_of_no_aggregate_has_no_aggregate_type() {
        let event = event_with_payload("", 3, b"p");
        assert_eq!(event.aggregate_type, "");
        assert_eq!(event_with_payload("a", 3, b"p").aggregate_type, "Order");
    }

    #[test]
    fn a_client_event_carries_every_kind_of_metadata_and_no_message_id() {
        let event = client_event("a", 2);
        assert_eq!(event.message_identifier, "");
        assert_eq!(event.meta_data.len(), 5);
        assert_eq!(event.timestamp, CLIENT_BASE_TIMESTAMP_MS + 2);
        let snapshot = client_snapshot("a", 2);
        assert!(snapshot.snapshot);
        assert_eq!(snapshot.message_identifier, "snap-a-2");
    }

    #[test]
    fn a_loose_event_is_of_no_aggregate() {
        let event = loose_event("T", 7);
        assert_eq!(
            event,
            Event {
                message_identifier: "loose-7".into(),
                timestamp: CLIENT_BASE_TIMESTAMP_MS + 7,
                payload: Some(SerializedObject {
                    r#type: "T".into(),
                    revision: String::new(),
                    data: 7i64.to_be_bytes().to_vec(),
                }),
                ..Event::default()
            }
        );
    }

    #[test]
    fn drill_payloads_cycle_in_size_and_ids_tell_snapshots_apart() {
        let sizes: Vec<usize> = (0..8)
            .map(|s| drill_event("d", s, false).payload.map_or(0, |p| p.data.len()))
            .collect();
        assert_eq!(sizes, [150, 190, 230, 270, 310, 350, 390, 150]);
        assert_ne!(
            drill_event("d", 1, false).message_identifier,
            drill_event("d", 1, true).message_identifier
        );
    }

    #[test]
    fn encoded_events_decode_to_themselves() {
        let events = vec![client_event("a", 0), event_with_payload("b", 1, b"x")];
        let bytes: Vec<Bytes> = events.iter().map(encode).collect();
        assert_eq!(decode_all(&bytes), events);
        assert_eq!(
            Event::decode(sized_event("c", 4, 10))
                .expect("decodes")
                .payload
                .map(|p| p.data),
            Some(vec![b'x'; 10])
        );
    }
}
