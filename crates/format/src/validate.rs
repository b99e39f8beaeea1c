//! Checks that bytes are a valid protobuf `io.axoniq.axonserver.grpc.event.Event` — everything
//! a protobuf decoder (prost) would refuse, refused here — without decoding it: no strings,
//! maps or payload copies are built. The server stores events as the bytes the client sent and
//! serves them back unchanged, so this is what keeps a malformed event out of the store.
//!
//! Schema (field numbers are facts of Axon's API):
//! * `Event`: 1 message_identifier string, 2 aggregate_identifier string, 3
//!   aggregate_sequence_number int64, 4 aggregate_type string, 5 timestamp int64, 6 payload
//!   `SerializedObject`, 7 meta_data map<string, `MetaDataValue`>, 8 snapshot bool.
//! * `SerializedObject`: 1 type string, 2 revision string, 3 data bytes.
//! * `MetaDataValue` (oneof): 1 text_value string, 2 number_value sint64, 3 boolean_value bool,
//!   4 double_value double, 5 bytes_value `SerializedObject`.
//! * a map entry: 1 key string, 2 value `MetaDataValue`.
//!
//! Unknown fields are skipped as protobuf says, groups included (nested up to the decoder's
//! recursion limit of 100).
//!
//! The same pass reads the fields the store indexes ([`EventFields`]), so an appended event is
//! walked once, not once to check it and again to index it.

use thiserror::Error;

use crate::event::EventFields;

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum InvalidEvent {
    #[error("truncated at byte {0}")]
    Truncated(usize),
    #[error("invalid varint at byte {0}")]
    Varint(usize),
    #[error("invalid field key at byte {0}")]
    Key(usize),
    #[error("field {field} has wire type {wire_type}, expected {expected}, at byte {offset}")]
    WireType {
        field: u32,
        wire_type: u8,
        expected: u8,
        offset: usize,
    },
    #[error("string field {field} is not valid UTF-8 (byte {offset})")]
    Utf8 { field: u32, offset: usize },
    #[error("unexpected end of group at byte {0}")]
    EndGroup(usize),
    #[error("nested too deeply at byte {0}")]
    TooDeep(usize),
}

/// Checks `bytes` as a whole `Event` message and returns its indexed fields, read as prost
/// reads them (a repeated scalar field takes its last value).
pub fn validate_event(bytes: &[u8]) -> Result<EventFields<'_>, InvalidEvent> {
    let mut fields = EventFields::default();
    Reader { bytes, pos: 0 }.message(bytes.len(), RECURSION_LIMIT, &EVENT, Some(&mut fields))?;
    Ok(fields)
}

/// prost's default recursion limit.
const RECURSION_LIMIT: u32 = 100;

const VARINT: u8 = 0;
const FIXED64: u8 = 1;
const LEN: u8 = 2;
const START_GROUP: u8 = 3;
const END_GROUP: u8 = 4;
const FIXED32: u8 = 5;

/// What a known field holds.
#[derive(Clone, Copy)]
enum Kind {
    Varint,
    Fixed64,
    Str,
    Bytes,
    Message(&'static Schema),
}

/// Known fields of a message, by number.
struct Schema(&'static [(u32, Kind)]);

static SERIALIZED_OBJECT: Schema = Schema(&[(1, Kind::Str), (2, Kind::Str), (3, Kind::Bytes)]);
static META_DATA_VALUE: Schema = Schema(&[
    (1, Kind::Str),
    (2, Kind::Varint),
    (3, Kind::Varint),
    (4, Kind::Fixed64),
    (5, Kind::Message(&SERIALIZED_OBJECT)),
]);
static META_DATA_ENTRY: Schema = Schema(&[(1, Kind::Str), (2, Kind::Message(&META_DATA_VALUE))]);
static EVENT: Schema = Schema(&[
    (1, Kind::Str),
    (2, Kind::Str),
    (3, Kind::Varint),
    (4, Kind::Str),
    (5, Kind::Varint),
    (6, Kind::Message(&SERIALIZED_OBJECT)),
    (7, Kind::Message(&META_DATA_ENTRY)),
    (8, Kind::Varint),
]);

impl Schema {
    fn kind(&self, field: u32) -> Option<Kind> {
        self.0
            .iter()
            .find(|(number, _)| *number == field)
            .map(|(_, kind)| *kind)
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    /// The fields from here to `end`, which must end exactly there. `event`: where the top
    /// level `Event`'s indexed fields go (none for nested messages).
    fn message(
        &mut self,
        end: usize,
        depth: u32,
        schema: &Schema,
        mut event: Option<&mut EventFields<'a>>,
    ) -> Result<(), InvalidEvent> {
        while self.pos < end {
            let key_at = self.pos;
            let (field, wire_type) = self.key()?;
            match schema.kind(field) {
                None => self.skip(field, wire_type, key_at, depth)?,
                Some(kind) => {
                    let expected = match kind {
                        Kind::Varint => VARINT,
                        Kind::Fixed64 => FIXED64,
                        Kind::Str | Kind::Bytes | Kind::Message(_) => LEN,
                    };
                    if wire_type != expected {
                        return Err(InvalidEvent::WireType {
                            field,
                            wire_type,
                            expected,
                            offset: key_at,
                        });
                    }
                    match kind {
                        Kind::Varint => {
                            let value = self.varint()?;
                            if let Some(event) = event.as_deref_mut() {
                                match field {
                                    3 => event.aggregate_sequence_number = value as i64,
                                    5 => event.timestamp = value as i64,
                                    8 => event.snapshot = value != 0,
                                    _ => {}
                                }
                            }
                        }
                        Kind::Fixed64 => self.advance(8)?,
                        Kind::Bytes => {
                            self.delimited()?;
                        }
                        Kind::Str => {
                            let (start, stop) = self.delimited()?;
                            let bytes: &'a [u8] = self.bytes;
                            let raw = &bytes[start..stop];
                            let utf8_error = InvalidEvent::Utf8 { field, offset: start };
                            match (event.as_deref_mut(), field) {
                                (Some(event), 2 | 4) => {
                                    let text = std::str::from_utf8(raw).map_err(|_| utf8_error)?;
                                    if field == 2 {
                                        event.aggregate_identifier = text;
                                    } else {
                                        event.aggregate_type = text;
                                    }
                                }
                                // Only checked: ASCII (identifiers, type names) is UTF-8, and
                                // `is_ascii` is cheaper on short strings than a full check.
                                _ if raw.is_ascii() || std::str::from_utf8(raw).is_ok() => {}
                                _ => return Err(utf8_error),
                            }
                        }
                        Kind::Message(inner) => {
                            if depth == 0 {
                                return Err(InvalidEvent::TooDeep(key_at));
                            }
                            let (_, stop) = self.delimited_start()?;
                            self.message(stop, depth - 1, inner, None)?;
                        }
                    }
                }
            }
        }
        if self.pos != end {
            return Err(InvalidEvent::Truncated(end));
        }
        Ok(())
    }

    /// Skips an unknown field whose key was just read.
    fn skip(&mut self, field: u32, wire_type: u8, key_at: usize, depth: u32) -> Result<(), InvalidEvent> {
        if depth == 0 {
            return Err(InvalidEvent::TooDeep(key_at));
        }
        match wire_type {
            VARINT => self.varint().map(|_| ()),
            FIXED64 => self.advance(8),
            LEN => self.delimited().map(|_| ()),
            FIXED32 => self.advance(4),
            START_GROUP => loop {
                let inner_at = self.pos;
                let (inner_field, inner_type) = self.key()?;
                if inner_type == END_GROUP {
                    if inner_field != field {
                        return Err(InvalidEvent::EndGroup(inner_at));
                    }
                    return Ok(());
                }
                self.skip(inner_field, inner_type, inner_at, depth - 1)?;
            },
            _ => Err(InvalidEvent::EndGroup(key_at)),
        }
    }

    /// A field key: number (1 and up) and wire type (0 to 5).
    fn key(&mut self) -> Result<(u32, u8), InvalidEvent> {
        let at = self.pos;
        let key = self.varint()?;
        let key = u32::try_from(key).map_err(|_| InvalidEvent::Key(at))?;
        let wire_type = (key & 7) as u8;
        let field = key >> 3;
        if wire_type > FIXED32 || field == 0 {
            return Err(InvalidEvent::Key(at));
        }
        Ok((field, wire_type))
    }

    /// A varint of at most 10 bytes whose value fits 64 bits.
    #[inline]
    fn varint(&mut self) -> Result<u64, InvalidEvent> {
        // Most varints in an event (keys, lengths, small numbers) are one byte.
        if let Some(&byte) = self.bytes.get(self.pos)
            && byte < 0x80
        {
            self.pos += 1;
            return Ok(u64::from(byte));
        }
        self.varint_slow()
    }

    #[inline(never)]
    fn varint_slow(&mut self) -> Result<u64, InvalidEvent> {
        let start = self.pos;
        let mut value = 0u64;
        for shift in 0..10 {
            let byte = *self.bytes.get(self.pos).ok_or(InvalidEvent::Truncated(self.pos))?;
            self.pos += 1;
            if shift == 9 && byte > 1 {
                return Err(InvalidEvent::Varint(start));
            }
            value |= u64::from(byte & 0x7f) << (7 * shift);
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(InvalidEvent::Varint(start))
    }

    fn advance(&mut self, len: usize) -> Result<(), InvalidEvent> {
        match self.pos.checked_add(len) {
            Some(end) if end <= self.bytes.len() => {
                self.pos = end;
                Ok(())
            }
            _ => Err(InvalidEvent::Truncated(self.bytes.len())),
        }
    }

    /// A length prefix and what it covers, skipped; returns the covered range.
    fn delimited(&mut self) -> Result<(usize, usize), InvalidEvent> {
        let (start, end) = self.delimited_start()?;
        self.pos = end;
        Ok((start, end))
    }

    /// A length prefix; the position stays at the start of what it covers.
    fn delimited_start(&mut self) -> Result<(usize, usize), InvalidEvent> {
        let len = self.varint()?;
        let start = self.pos;
        let end = usize::try_from(len)
            .ok()
            .and_then(|len| start.checked_add(len))
            .filter(|end| *end <= self.bytes.len())
            .ok_or(InvalidEvent::Truncated(self.bytes.len()))?;
        Ok((start, end))
    }
}
