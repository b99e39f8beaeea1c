//! Checks that the generated types put the right bytes on the wire.

use std::collections::HashMap;

use prost::Message;

use crate::grpc::event::{Confirmation, ConfirmationWithConsistencyMarker, ConsistencyMarker, Event};
use crate::grpc::{MetaDataValue, SerializedObject, meta_data_value};

const VARINT: u8 = 0;
const I64: u8 = 1;
const LEN: u8 = 2;

/// Reads one base-128 varint from the front of `buf`.
fn read_varint(buf: &mut &[u8]) -> u64 {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let (&byte, rest) = buf.split_first().expect("truncated varint");
        *buf = rest;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return value;
        }
    }
    panic!("varint longer than 10 bytes");
}

/// One top-level field as found on the wire.
#[derive(Debug)]
struct WireField<'a> {
    number: u32,
    wire_type: u8,
    /// The varint value for VARINT fields, 0 otherwise.
    varint: u64,
    /// The payload for LEN and I64 fields, empty otherwise.
    bytes: &'a [u8],
}

/// Splits an encoded message into its top-level fields, in wire order.
fn walk(mut buf: &[u8]) -> Vec<WireField<'_>> {
    let mut fields = Vec::new();
    while !buf.is_empty() {
        let key = read_varint(&mut buf);
        let number = u32::try_from(key >> 3).expect("field number fits in u32");
        let wire_type = u8::try_from(key & 0x7).expect("three bits fit in u8");
        let mut field = WireField {
            number,
            wire_type,
            varint: 0,
            bytes: &[],
        };
        match wire_type {
            VARINT => field.varint = read_varint(&mut buf),
            I64 => {
                let (value, rest) = buf.split_at(8);
                field.bytes = value;
                buf = rest;
            }
            LEN => {
                let len = usize::try_from(read_varint(&mut buf)).expect("length fits in usize");
                let (value, rest) = buf.split_at(len);
                field.bytes = value;
                buf = rest;
            }
            other => panic!("unexpected wire type {other} for field {number}"),
        }
        fields.push(field);
    }
    fields
}

fn text(value: &str) -> MetaDataValue {
    MetaDataValue {
        data: Some(meta_data_value::Data::TextValue(value.to_owned())),
    }
}

fn full_event() -> Event {
    let mut meta_data = HashMap::new();
    meta_data.insert("trace".to_owned(), text("abc"));
    meta_data.insert(
        "count".to_owned(),
        MetaDataValue {
            data: Some(meta_data_value::Data::NumberValue(-1)),
        },
    );
    Event {
        message_identifier: "msg-1".to_owned(),
        aggregate_identifier: "agg-1".to_owned(),
        aggregate_sequence_number: 7,
        aggregate_type: "Order".to_owned(),
        timestamp: 1_700_000_000_000,
        payload: Some(SerializedObject {
            r#type: "com.example.OrderPlaced".to_owned(),
            revision: "2".to_owned(),
            data: b"<xml/>".to_vec(),
        }),
        meta_data,
        snapshot: true,
    }
}

#[test]
fn event_fields_have_upstream_numbers_and_wire_types() {
    let bytes = full_event().encode_to_vec();
    let fields = walk(&bytes);
    let tags: Vec<(u32, u8)> = fields.iter().map(|f| (f.number, f.wire_type)).collect();
    assert_eq!(
        tags,
        vec![
            (1, LEN),    // message_identifier
            (2, LEN),    // aggregate_identifier
            (3, VARINT), // aggregate_sequence_number
            (4, LEN),    // aggregate_type
            (5, VARINT), // timestamp
            (6, LEN),    // payload
            (7, LEN),    // meta_data entry
            (7, LEN),    // meta_data entry
            (8, VARINT), // snapshot
        ]
    );

    assert_eq!(fields[0].bytes, b"msg-1");
    assert_eq!(fields[1].bytes, b"agg-1");
    assert_eq!(fields[2].varint, 7);
    assert_eq!(fields[3].bytes, b"Order");
    assert_eq!(fields[4].varint, 1_700_000_000_000);
    assert_eq!(fields[7].number, 7);
    assert_eq!(fields[8].varint, 1);

    // SerializedObject: 1 type, 2 revision, 3 data, all length-delimited.
    let payload = walk(fields[5].bytes);
    let payload_tags: Vec<(u32, u8)> = payload.iter().map(|f| (f.number, f.wire_type)).collect();
    assert_eq!(payload_tags, vec![(1, LEN), (2, LEN), (3, LEN)]);
    assert_eq!(payload[0].bytes, b"com.example.OrderPlaced");
    assert_eq!(payload[1].bytes, b"2");
    assert_eq!(payload[2].bytes, b"<xml/>");

    // Map entries: 1 key (string), 2 value (MetaDataValue message).
    let mut seen = Vec::new();
    for entry in &fields[6..8] {
        let parts = walk(entry.bytes);
        assert_eq!(parts.len(), 2);
        assert_eq!((parts[0].number, parts[0].wire_type), (1, LEN));
        assert_eq!((parts[1].number, parts[1].wire_type), (2, LEN));
        let key = std::str::from_utf8(parts[0].bytes).expect("map key is UTF-8");
        let value = walk(parts[1].bytes);
        assert_eq!(value.len(), 1);
        match key {
            "trace" => {
                assert_eq!((value[0].number, value[0].wire_type), (1, LEN));
                assert_eq!(value[0].bytes, b"abc");
            }
            "count" => {
                // number_value is sint64 at field 2: zig-zag maps -1 to 1.
                assert_eq!((value[0].number, value[0].wire_type), (2, VARINT));
                assert_eq!(value[0].varint, 1);
            }
            other => panic!("unexpected map key {other:?}"),
        }
        seen.push(key.to_owned());
    }
    seen.sort();
    assert_eq!(seen, ["count", "trace"]);

    // And the round trip is lossless.
    let decoded = Event::decode(bytes.as_slice()).expect("decodes");
    assert_eq!(decoded, full_event());
}

#[test]
fn append_reply_is_readable_as_plain_confirmation() {
    let reply = ConfirmationWithConsistencyMarker {
        success: true,
        consistency_marker: Some(ConsistencyMarker { token: 42 }),
    };
    let bytes = reply.encode_to_vec();
    let tags: Vec<(u32, u8)> = walk(&bytes).iter().map(|f| (f.number, f.wire_type)).collect();
    assert_eq!(tags, vec![(1, VARINT), (2, LEN)]);

    // An older client expecting Confirmation skips the unknown field 2.
    let old = Confirmation::decode(bytes.as_slice()).expect("decodes as Confirmation");
    assert_eq!(old, Confirmation { success: true });

    // The other way round: a bare Confirmation reads as a reply without marker.
    let bare = Confirmation { success: true }.encode_to_vec();
    let new = ConfirmationWithConsistencyMarker::decode(bare.as_slice()).expect("decodes");
    assert!(new.success);
    assert_eq!(new.consistency_marker, None);
}

#[test]
fn services_use_upstream_names() {
    use crate::grpc;

    let names = [
        grpc::event::event_store_server::SERVICE_NAME,
        grpc::event::event_scheduler_server::SERVICE_NAME,
        grpc::event::event_transformation_service_server::SERVICE_NAME,
        grpc::event::dcb::dcb_event_store_server::SERVICE_NAME,
        grpc::event::dcb::dcb_snapshot_store_server::SERVICE_NAME,
        grpc::event::dcb::snapshotted_dcb_event_store_server::SERVICE_NAME,
        grpc::event::dcb::dcb_event_scheduler_server::SERVICE_NAME,
        grpc::control::platform_service_server::SERVICE_NAME,
        grpc::command::command_service_server::SERVICE_NAME,
        grpc::query::query_service_server::SERVICE_NAME,
        grpc::streams::persistent_stream_service_server::SERVICE_NAME,
    ];
    assert_eq!(
        names,
        [
            "io.axoniq.axonserver.grpc.event.EventStore",
            "io.axoniq.axonserver.grpc.event.EventScheduler",
            "io.axoniq.axonserver.grpc.event.EventTransformationService",
            "io.axoniq.axonserver.grpc.event.dcb.DcbEventStore",
            "io.axoniq.axonserver.grpc.event.dcb.DcbSnapshotStore",
            "io.axoniq.axonserver.grpc.event.dcb.SnapshottedDcbEventStore",
            "io.axoniq.axonserver.grpc.event.dcb.DcbEventScheduler",
            "io.axoniq.axonserver.grpc.control.PlatformService",
            "io.axoniq.axonserver.grpc.command.CommandService",
            "io.axoniq.axonserver.grpc.query.QueryService",
            "io.axoniq.axonserver.grpc.streams.PersistentStreamService",
        ]
    );
}
