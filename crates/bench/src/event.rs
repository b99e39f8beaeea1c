//! Benchmark events: real, protobuf-encoded Axon `Event` messages of a fixed shape, so every
//! event of a run has the same encoded size and the probe can be sized from it.

use std::time::{SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use myelin_proto::grpc::SerializedObject;
use myelin_proto::grpc::event::Event;
use prost::Message;

/// Bytes reserved at a time for encoded events: many events share one allocation, so the
/// benchmark's own cost per event stays small next to the store's.
const ARENA_BYTES: usize = 256 * 1024;

/// Builds encoded events with a payload of a fixed size. Reuses one `Event` and one buffer,
/// so encoding an event allocates nothing most of the time.
pub struct EventFactory {
    template: Event,
    arena: BytesMut,
}

impl EventFactory {
    pub fn new(payload_bytes: usize) -> Self {
        // Not all zeros and not one repeated byte, so nothing on the way to the disk can
        // shortcut the write (zero detection, compression).
        let data = (0..payload_bytes).map(|i| (i.wrapping_mul(31) % 251) as u8).collect();
        let template = Event {
            message_identifier: String::with_capacity(36),
            aggregate_identifier: String::new(),
            aggregate_sequence_number: 0,
            aggregate_type: "BenchAggregate".to_string(),
            timestamp: 0,
            payload: Some(SerializedObject {
                r#type: "io.myelin.bench.SomethingHappened".to_string(),
                revision: "1".to_string(),
                data,
            }),
            meta_data: Default::default(),
            snapshot: false,
        };
        EventFactory {
            template,
            arena: BytesMut::new(),
        }
    }

    /// One domain event of `aggregate` at `sequence`. `message_number` makes the identifier
    /// unique; it is printed at a fixed width so all events have the same size.
    pub fn encode(&mut self, aggregate: &str, sequence: i64, message_number: u64, timestamp_ms: i64) -> Bytes {
        let event = &mut self.template;
        event.aggregate_identifier.clear();
        event.aggregate_identifier.push_str(aggregate);
        event.aggregate_sequence_number = sequence;
        event.timestamp = timestamp_ms;
        write_uuid_shaped(&mut event.message_identifier, message_number);
        let len = event.encoded_len();
        if self.arena.capacity() < len {
            self.arena.reserve(len.max(ARENA_BYTES));
        }
        // Cannot fail: capacity was reserved above.
        let _ = event.encode(&mut self.arena);
        self.arena.split().freeze()
    }
}

/// A 36-character identifier in the shape of the UUIDs Axon Framework sends.
fn write_uuid_shaped(out: &mut String, n: u64) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.clear();
    // 8-4-4-4-12, the last 16 hex digits carrying `n`.
    let digits = (0..16).rev().map(|i| HEX[((n >> (i * 4)) & 0xf) as usize] as char);
    out.push_str("be000000-0000-4000-");
    for (i, digit) in digits.enumerate() {
        if i == 4 {
            out.push('-');
        }
        out.push(digit);
    }
}

pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Encoded bytes of one transaction of `events` events of `event_bytes` each, as the store
/// frames it in a segment (length prefixes, block header and CRC).
pub fn transaction_bytes(events: usize, event_bytes: usize) -> usize {
    myelin_format::segment::transaction_bytes(std::iter::repeat_n(event_bytes, events))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_of_a_run_have_one_size() {
        let mut factory = EventFactory::new(200);
        let a = factory.encode("bench-0000", 0, 0, now_ms());
        let b = factory.encode("bench-0063", 123_456, u64::MAX, now_ms());
        // Varint sequence numbers may differ by a few bytes; identifiers may not.
        assert!(a.len().abs_diff(b.len()) <= 8, "{} vs {}", a.len(), b.len());
        assert!(a.len() > 200);
        let decoded = Event::decode(b).expect("valid event");
        assert_eq!(decoded.message_identifier, "be000000-0000-4000-ffff-ffffffffffff");
        let again = Event::decode(factory.encode("x", 1, 0x1234, 5)).expect("valid event");
        assert_eq!(again.message_identifier, "be000000-0000-4000-0000-000000001234");
        assert_eq!((again.aggregate_identifier.as_str(), again.timestamp), ("x", 5));
        assert_eq!(decoded.aggregate_sequence_number, 123_456);
    }

    #[test]
    fn transaction_framing_is_four_bytes_per_event_and_eleven_per_block() {
        assert_eq!(transaction_bytes(1, 300), 300 + 4 + 11);
        assert_eq!(transaction_bytes(100, 300), 100 * 304 + 11);
    }
}
