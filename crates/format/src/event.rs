//! The fields of a protobuf `io.axoniq.axonserver.grpc.event.Event` the store needs, read
//! without decoding the whole message (payload and metadata are skipped, never copied).
//!
//! Field numbers: 1 message_identifier, 2 aggregate_identifier, 3 aggregate_sequence_number,
//! 4 aggregate_type, 5 timestamp, 6 payload, 7 meta_data (map entries), 8 snapshot.

use thiserror::Error;

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum EventFieldsError {
    #[error("truncated protobuf at byte {0}")]
    Truncated(usize),
    #[error("varint longer than 10 bytes at byte {0}")]
    VarintTooLong(usize),
    #[error("unsupported wire type {wire_type} for field {field} at byte {offset}")]
    WireType { field: u64, wire_type: u8, offset: usize },
    #[error("field {field} is not valid UTF-8")]
    Utf8 { field: u64 },
}

/// The indexed fields of one event, borrowed from its bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EventFields<'a> {
    pub aggregate_identifier: &'a str,
    pub aggregate_sequence_number: i64,
    pub aggregate_type: &'a str,
    pub timestamp: i64,
    pub snapshot: bool,
}

impl<'a> EventFields<'a> {
    /// Parses `bytes` as an `Event`. Repeated scalar fields take the last value, as protobuf says.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, EventFieldsError> {
        let mut fields = EventFields::default();
        let mut pos = 0;
        while pos < bytes.len() {
            let tag_at = pos;
            let tag = read_varint(bytes, &mut pos)?;
            let field = tag >> 3;
            let wire_type = (tag & 7) as u8;
            match wire_type {
                0 => {
                    let value = read_varint(bytes, &mut pos)?;
                    match field {
                        3 => fields.aggregate_sequence_number = value as i64,
                        5 => fields.timestamp = value as i64,
                        8 => fields.snapshot = value != 0,
                        _ => {}
                    }
                }
                1 => pos = skip(bytes, pos, 8)?,
                5 => pos = skip(bytes, pos, 4)?,
                2 => {
                    let len = read_varint(bytes, &mut pos)?;
                    let len = usize::try_from(len).map_err(|_| EventFieldsError::Truncated(pos))?;
                    let end = skip(bytes, pos, len)?;
                    let value = &bytes[pos..end];
                    match field {
                        2 => fields.aggregate_identifier = utf8(value, field)?,
                        4 => fields.aggregate_type = utf8(value, field)?,
                        _ => {}
                    }
                    pos = end;
                }
                _ => {
                    return Err(EventFieldsError::WireType {
                        field,
                        wire_type,
                        offset: tag_at,
                    });
                }
            }
        }
        Ok(fields)
    }

    /// Axon's "domain event": one that belongs to an aggregate and is sequence-checked and indexed.
    pub fn is_domain_event(&self) -> bool {
        !self.aggregate_type.is_empty()
    }
}

fn utf8(bytes: &[u8], field: u64) -> Result<&str, EventFieldsError> {
    std::str::from_utf8(bytes).map_err(|_| EventFieldsError::Utf8 { field })
}

fn skip(bytes: &[u8], pos: usize, len: usize) -> Result<usize, EventFieldsError> {
    let end = pos.checked_add(len).ok_or(EventFieldsError::Truncated(pos))?;
    if end > bytes.len() {
        return Err(EventFieldsError::Truncated(bytes.len()));
    }
    Ok(end)
}

fn read_varint(bytes: &[u8], pos: &mut usize) -> Result<u64, EventFieldsError> {
    let start = *pos;
    let mut value = 0u64;
    for shift in 0..10 {
        let byte = *bytes.get(*pos).ok_or(EventFieldsError::Truncated(*pos))?;
        *pos += 1;
        value |= u64::from(byte & 0x7f) << (7 * shift);
        if byte & 0x80 == 0 {
            return Ok(value);
        }
    }
    Err(EventFieldsError::VarintTooLong(start))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn varint(mut v: u64, out: &mut Vec<u8>) {
        while v >= 0x80 {
            out.push((v as u8) | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
    }

    fn string_field(field: u64, s: &str, out: &mut Vec<u8>) {
        varint(field << 3 | 2, out);
        varint(s.len() as u64, out);
        out.extend_from_slice(s.as_bytes());
    }

    #[test]
    fn reads_indexed_fields_and_skips_others() {
        let mut e = Vec::new();
        string_field(1, "msg", &mut e);
        string_field(2, "agg-1", &mut e);
        varint(3 << 3, &mut e);
        varint(-1i64 as u64, &mut e);
        string_field(4, "Order", &mut e);
        varint(5 << 3, &mut e);
        varint(1_700_000_000_000, &mut e);
        string_field(6, "payload", &mut e);
        varint(8 << 3, &mut e);
        varint(1, &mut e);
        varint(9 << 3 | 5, &mut e);
        e.extend_from_slice(&[1, 2, 3, 4]);
        let f = EventFields::parse(&e).expect("parses");
        assert_eq!(f.aggregate_identifier, "agg-1");
        assert_eq!(f.aggregate_sequence_number, -1);
        assert_eq!(f.aggregate_type, "Order");
        assert_eq!(f.timestamp, 1_700_000_000_000);
        assert!(f.snapshot);
        assert!(f.is_domain_event());
    }

    #[test]
    fn hostile_input_is_an_error() {
        assert_eq!(
            EventFields::parse(&[0x12, 5, b'a']),
            Err(EventFieldsError::Truncated(3))
        );
        assert!(matches!(
            EventFields::parse(&[0x0b]),
            Err(EventFieldsError::WireType { .. })
        ));
        assert!(matches!(
            EventFields::parse(&[0x12, 1, 0xff]),
            Err(EventFieldsError::Utf8 { field: 2 })
        ));
        assert!(matches!(
            EventFields::parse(&[0x18, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]),
            Err(EventFieldsError::VarintTooLong(1))
        ));
        assert_eq!(EventFields::parse(&[]), Ok(EventFields::default()));
    }
}
