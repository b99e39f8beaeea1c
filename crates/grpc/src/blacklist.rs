//! The payload types a tracking client asked not to receive (`GetEventsRequest.blacklist`).
//!
//! Matching needs the payload's type and revision, which sit two messages deep in the event.
//! They are read straight from the stored bytes (`Event.payload` = field 6, a
//! `SerializedObject` whose `type` = 1 and `revision` = 2), so a tracking read never decodes
//! an event.

use std::collections::HashMap;

use myelin_proto::grpc::event::PayloadDescription;

/// Upstream's rule (`blacklisted-send-after`, default 1000): after this many events in a row
/// were skipped, the next one is sent anyway, so the client's token keeps moving and it can
/// tell a quiet stream from a dead one.
pub const SEND_AFTER_SKIPPED: u32 = 1000;

#[derive(Debug, Default)]
pub struct Blacklist {
    /// Payload type → blacklisted revisions. Few entries, looked up by borrowed bytes.
    types: HashMap<Box<[u8]>, Vec<Box<[u8]>>>,
    skipped_in_a_row: u32,
}

impl Blacklist {
    /// Adds entries; a stream's blacklist only grows (as upstream's does).
    pub fn extend(&mut self, entries: &[PayloadDescription]) {
        for entry in entries {
            let revisions = self.types.entry(entry.r#type.as_bytes().into()).or_default();
            if !revisions.iter().any(|r| **r == *entry.revision.as_bytes()) {
                revisions.push(entry.revision.as_bytes().into());
            }
        }
    }

    pub fn is_empty(&self) -> bool {
        self.types.is_empty()
    }

    /// Whether to send `event`, counting skips for the send-anyway rule.
    pub fn admit(&mut self, event: &[u8]) -> bool {
        if self.is_empty() || self.skipped_in_a_row + 1 >= SEND_AFTER_SKIPPED || !self.matches(event) {
            self.skipped_in_a_row = 0;
            return true;
        }
        self.skipped_in_a_row += 1;
        false
    }

    fn matches(&self, event: &[u8]) -> bool {
        let (payload_type, revision) = payload_type(event);
        self.types
            .get(payload_type)
            .is_some_and(|revisions| revisions.iter().any(|r| **r == *revision))
    }
}

/// `(payload.type, payload.revision)` of an encoded `Event`; empty when absent or unreadable
/// (the store only holds events that decoded when they were appended).
pub fn payload_type(event: &[u8]) -> (&[u8], &[u8]) {
    let (mut payload_type, mut revision): (&[u8], &[u8]) = (&[], &[]);
    // Repeated occurrences of an embedded message merge: later scalar fields win.
    for (field, value) in length_delimited_fields(event) {
        if field == 6 {
            for (field, value) in length_delimited_fields(value) {
                match field {
                    1 => payload_type = value,
                    2 => revision = value,
                    _ => {}
                }
            }
        }
    }
    (payload_type, revision)
}

/// The length-delimited fields of a message, in order; stops at the first malformed byte.
fn length_delimited_fields(message: &[u8]) -> impl Iterator<Item = (u64, &[u8])> {
    let mut pos = 0usize;
    std::iter::from_fn(move || {
        while pos < message.len() {
            let tag = read_varint(message, &mut pos)?;
            let end = match tag & 7 {
                0 => {
                    read_varint(message, &mut pos)?;
                    continue;
                }
                1 => pos.checked_add(8)?,
                5 => pos.checked_add(4)?,
                2 => {
                    let len = usize::try_from(read_varint(message, &mut pos)?).ok()?;
                    pos.checked_add(len)?
                }
                _ => return None,
            };
            if end > message.len() {
                return None;
            }
            let value = &message[pos..end];
            pos = end;
            if tag & 7 == 2 {
                return Some((tag >> 3, value));
            }
        }
        None
    })
}

fn read_varint(bytes: &[u8], pos: &mut usize) -> Option<u64> {
    let mut value = 0u64;
    for shift in 0..10 {
        let byte = *bytes.get(*pos)?;
        *pos += 1;
        value |= u64::from(byte & 0x7f) << (7 * shift);
        if byte & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use myelin_proto::grpc::event::Event;
    use myelin_proto::grpc::{MetaDataValue, SerializedObject, meta_data_value};
    use prost::Message;

    use super::*;

    fn event(payload_type: &str, revision: &str) -> Vec<u8> {
        let mut meta = HashMap::new();
        meta.insert(
            "k".to_string(),
            MetaDataValue {
                data: Some(meta_data_value::Data::NumberValue(-5)),
            },
        );
        Event {
            message_identifier: "id".into(),
            aggregate_sequence_number: 7,
            timestamp: 1_700_000_000_000,
            payload: Some(SerializedObject {
                r#type: payload_type.into(),
                revision: revision.into(),
                data: vec![9; 300],
            }),
            meta_data: meta,
            snapshot: true,
            ..Default::default()
        }
        .encode_to_vec()
    }

    fn description(payload_type: &str, revision: &str) -> PayloadDescription {
        PayloadDescription {
            r#type: payload_type.into(),
            revision: revision.into(),
        }
    }

    #[test]
    fn reads_payload_type_and_revision() {
        assert_eq!(payload_type(&event("com.Foo", "2")), (&b"com.Foo"[..], &b"2"[..]));
        assert_eq!(payload_type(&Event::default().encode_to_vec()), (&b""[..], &b""[..]));
        assert_eq!(payload_type(&[0x32, 0x05, 0x0a]), (&b""[..], &b""[..]));
    }

    #[test]
    fn skips_matching_type_and_revision_only() {
        let mut blacklist = Blacklist::default();
        assert!(blacklist.admit(&event("A", "1")));
        blacklist.extend(&[description("A", "1")]);
        assert!(!blacklist.admit(&event("A", "1")));
        assert!(blacklist.admit(&event("A", "2")));
        assert!(blacklist.admit(&event("B", "1")));
    }

    #[test]
    fn sends_one_after_a_long_run_of_skips() {
        let mut blacklist = Blacklist::default();
        blacklist.extend(&[description("A", "")]);
        let blocked = event("A", "");
        let admitted: Vec<bool> = (0..2 * SEND_AFTER_SKIPPED).map(|_| blacklist.admit(&blocked)).collect();
        let sent: Vec<usize> = admitted
            .iter()
            .enumerate()
            .filter(|(_, a)| **a)
            .map(|(i, _)| i)
            .collect();
        let every = SEND_AFTER_SKIPPED as usize;
        assert_eq!(sent, vec![every - 1, 2 * every - 1]);
    }
}
