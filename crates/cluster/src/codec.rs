//! Log entries to and from the data of Axon's log-entry framing (docs/FORMAT.md, "Raft
//! log-entry segments"): an entry's term, its type number and its data bytes. The index is not
//! stored (it is the entry's place in its segment), exactly as in Axon Server EE.
//!
//! | openraft payload            | type | data                                                      |
//! |-----------------------------|------|-----------------------------------------------------------|
//! | `Blank`                     | 5    | `LeaderElected { leader_id }`                             |
//! | `Normal(Events/Snapshot)`   | 3    | `SerializedObject { "Append.EVENT"/"Append.SNAPSHOT", TransactionWithToken }` |
//! | `Normal(EventBatch)`        | 3    | `SerializedObject { "myelin.Append.EVENTS", TransactionBatch }` |
//! | `Normal(Control)`           | 3    | `SerializedObject { "myelin.Control", JSON }`             |
//! | `Membership`                | 3    | `SerializedObject { "myelin.Membership", JSON }`          |
//! | `Normal(Dummy)`             | 6    | the byte `X`                                              |
//!
//! Axon's type 4 (`Config`) cannot say what a joint membership is, so Myelin never writes it.

use bytes::Bytes;
use myelin_proto::myelin::cluster::{LeaderElected, SerializedObject, TransactionBatch, TransactionWithToken};
use openraft::{CommittedLeaderId, EntryPayload};
use prost::Message;

use crate::types::{Command, Entry, LogId, Transaction};

/// Axon's entry types (the `Entry.data` oneof numbers of its `raft.proto`).
pub const TYPE_SERIALIZED_OBJECT: i32 = 3;
pub const TYPE_CONFIG: i32 = 4;
pub const TYPE_LEADER_ELECTED: i32 = 5;
pub const TYPE_DUMMY: i32 = 6;

pub const APPEND_EVENT: &str = "Append.EVENT";
pub const APPEND_SNAPSHOT: &str = "Append.SNAPSHOT";
pub const MYELIN_APPEND_EVENTS: &str = "myelin.Append.EVENTS";
pub const MYELIN_CONTROL: &str = "myelin.Control";
pub const MYELIN_MEMBERSHIP: &str = "myelin.Membership";
/// The leader named by a term's first entry when the writing node does not know it.
pub const UNKNOWN_LEADER: &str = "unknown";
/// The data of a dummy entry, as Axon writes it.
pub const DUMMY_DATA: &[u8] = b"X";

/// The transaction version Myelin writes (Axon's field; events carry their own format).
const TRANSACTION_VERSION: i32 = 0;

#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("entry type {0} is not one Myelin reads (3, 5 or 6)")]
    UnknownType(i32),
    #[error("entry data does not decode: {0}")]
    Malformed(String),
    #[error("serialized object type {0:?} is not one Myelin knows")]
    UnknownObject(String),
}

/// The type number and data bytes of `entry`. `leader` names the leader of the entry's term,
/// which only a `Blank` entry records.
pub fn encode(entry: &Entry, leader: &str) -> Result<(i32, Bytes), CodecError> {
    let object = |kind: &str, data: Vec<u8>| SerializedObject {
        r#type: kind.to_string(),
        data,
    };
    let message = |t: &Transaction| TransactionWithToken {
        token: t.token,
        version: TRANSACTION_VERSION,
        events: t.events.iter().map(|e| e.to_vec()).collect(),
        context: t.context.clone(),
    };
    let transaction = |t: &Transaction| message(t).encode_to_vec();
    let json = |value: serde_json::Result<Vec<u8>>| value.map_err(|e| CodecError::Malformed(e.to_string()));
    let (kind, data) = match &entry.payload {
        // An entry's data is never empty (a size of 0 means "nothing written"): a leader this
        // node cannot name is written as `unknown`.
        EntryPayload::Blank => (
            TYPE_LEADER_ELECTED,
            LeaderElected {
                leader_id: if leader.is_empty() { UNKNOWN_LEADER } else { leader }.to_string(),
            }
            .encode_to_vec(),
        ),
        EntryPayload::Normal(Command::Events(t)) => (
            TYPE_SERIALIZED_OBJECT,
            object(APPEND_EVENT, transaction(t)).encode_to_vec(),
        ),
        EntryPayload::Normal(Command::EventBatch(batch)) => (
            TYPE_SERIALIZED_OBJECT,
            object(
                MYELIN_APPEND_EVENTS,
                TransactionBatch {
                    transactions: batch.iter().map(message).collect(),
                }
                .encode_to_vec(),
            )
            .encode_to_vec(),
        ),
        EntryPayload::Normal(Command::Snapshot(t)) => (
            TYPE_SERIALIZED_OBJECT,
            object(APPEND_SNAPSHOT, transaction(t)).encode_to_vec(),
        ),
        EntryPayload::Normal(Command::Control(c)) => (
            TYPE_SERIALIZED_OBJECT,
            object(MYELIN_CONTROL, json(serde_json::to_vec(c))?).encode_to_vec(),
        ),
        EntryPayload::Normal(Command::Dummy) => (TYPE_DUMMY, DUMMY_DATA.to_vec()),
        EntryPayload::Membership(m) => (
            TYPE_SERIALIZED_OBJECT,
            object(MYELIN_MEMBERSHIP, json(serde_json::to_vec(m))?).encode_to_vec(),
        ),
    };
    Ok((kind, Bytes::from(data)))
}

/// The entry at `index` of `term` whose type and data were stored.
pub fn decode(index: u64, term: u64, kind: i32, data: &[u8]) -> Result<Entry, CodecError> {
    let malformed = |e: prost::DecodeError| CodecError::Malformed(e.to_string());
    let payload = match kind {
        TYPE_LEADER_ELECTED => {
            LeaderElected::decode(data).map_err(malformed)?;
            EntryPayload::Blank
        }
        TYPE_DUMMY => EntryPayload::Normal(Command::Dummy),
        TYPE_SERIALIZED_OBJECT => {
            let object = SerializedObject::decode(data).map_err(malformed)?;
            let from = |t: TransactionWithToken| Transaction {
                context: t.context,
                token: t.token,
                events: t.events.into_iter().map(Bytes::from).collect(),
            };
            let transaction = || {
                let t = TransactionWithToken::decode(object.data.as_slice()).map_err(malformed)?;
                Ok::<_, CodecError>(from(t))
            };
            let json = |e: serde_json::Error| CodecError::Malformed(e.to_string());
            match object.r#type.as_str() {
                APPEND_EVENT => EntryPayload::Normal(Command::Events(transaction()?)),
                APPEND_SNAPSHOT => EntryPayload::Normal(Command::Snapshot(transaction()?)),
                MYELIN_APPEND_EVENTS => {
                    let batch = TransactionBatch::decode(object.data.as_slice()).map_err(malformed)?;
                    EntryPayload::Normal(Command::EventBatch(batch.transactions.into_iter().map(from).collect()))
                }
                MYELIN_CONTROL => {
                    EntryPayload::Normal(Command::Control(serde_json::from_slice(&object.data).map_err(json)?))
                }
                MYELIN_MEMBERSHIP => EntryPayload::Membership(serde_json::from_slice(&object.data).map_err(json)?),
                other => return Err(CodecError::UnknownObject(other.to_string())),
            }
        }
        other => return Err(CodecError::UnknownType(other)),
    };
    Ok(Entry {
        log_id: log_id(term, index),
        payload,
    })
}

/// A log id in Myelin's (single-term-leader) mode: a term and an index.
pub fn log_id(term: u64, index: u64) -> LogId {
    LogId::new(CommittedLeaderId::new(term, 0), index)
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use super::*;
    use crate::role::Role;
    use crate::types::{ControlCommand, Member, Membership, node_id};

    fn round_trip(entry: Entry) {
        let (kind, data) = encode(&entry, "node-1").expect("encode");
        let back = decode(entry.log_id.index, entry.log_id.leader_id.term, kind, &data).expect("decode");
        assert_eq!(back, entry);
    }

    #[test]
    fn every_payload_survives_encoding() {
        round_trip(Entry {
            log_id: log_id(3, 7),
            payload: EntryPayload::Blank,
        });
        round_trip(Entry {
            log_id: log_id(3, 8),
            payload: EntryPayload::Normal(Command::Events(Transaction {
                context: "default".into(),
                token: 41,
                events: vec![Bytes::from_static(b"one"), Bytes::from_static(b"")],
            })),
        });
        round_trip(Entry {
            log_id: log_id(3, 9),
            payload: EntryPayload::Normal(Command::EventBatch(vec![
                Transaction {
                    context: "default".into(),
                    token: 43,
                    events: vec![Bytes::from_static(b"two")],
                },
                Transaction {
                    context: "orders".into(),
                    token: 0,
                    events: vec![Bytes::from_static(b"three"), Bytes::from_static(b"four")],
                },
            ])),
        });
        round_trip(Entry {
            log_id: log_id(3, 9),
            payload: EntryPayload::Normal(Command::Snapshot(Transaction {
                context: "orders".into(),
                token: 0,
                events: vec![Bytes::from_static(b"snap")],
            })),
        });
        round_trip(Entry {
            log_id: log_id(4, 10),
            payload: EntryPayload::Normal(Command::Control(ControlCommand::ContextCreated {
                context: "orders".into(),
                metadata: BTreeMap::from([("k".to_string(), "v".to_string())]),
            })),
        });
        round_trip(Entry {
            log_id: log_id(4, 11),
            payload: EntryPayload::Normal(Command::Dummy),
        });
        let voters = BTreeSet::from([node_id("a"), node_id("b")]);
        let nodes = BTreeMap::from([
            (
                node_id("a"),
                Member {
                    name: "a".into(),
                    role: Role::Primary,
                },
            ),
            (
                node_id("b"),
                Member {
                    name: "b".into(),
                    role: Role::Primary,
                },
            ),
            (
                node_id("c"),
                Member {
                    name: "c".into(),
                    role: Role::PassiveBackup,
                },
            ),
        ]);
        round_trip(Entry {
            log_id: log_id(5, 12),
            payload: EntryPayload::Membership(Membership::new(vec![voters], nodes)),
        });
    }

    #[test]
    fn event_entries_are_axons_bytes() {
        let entry = Entry {
            log_id: log_id(1, 1),
            payload: EntryPayload::Normal(Command::Events(Transaction {
                context: "default".into(),
                token: 5,
                events: vec![Bytes::from_static(b"e")],
            })),
        };
        let (kind, data) = encode(&entry, "").expect("encode");
        assert_eq!(kind, 3);
        // SerializedObject { type (1) = "Append.EVENT", data (2) = TransactionWithToken {
        //   token (1) = 5, events (3) = ["e"], context (4) = "default" } }
        let inner: &[u8] = &[
            0x08, 5, 0x1a, 1, b'e', 0x22, 7, b'd', b'e', b'f', b'a', b'u', b'l', b't',
        ];
        let mut expected = vec![0x0a, 12];
        expected.extend_from_slice(b"Append.EVENT");
        expected.extend_from_slice(&[0x12, inner.len() as u8]);
        expected.extend_from_slice(inner);
        assert_eq!(data.as_ref(), expected.as_slice());
    }

    #[test]
    fn a_blank_entry_names_the_leader_and_a_dummy_is_one_x() {
        let blank = Entry {
            log_id: log_id(2, 1),
            payload: EntryPayload::Blank,
        };
        let (kind, data) = encode(&blank, "node-2").expect("encode");
        assert_eq!((kind, data.as_ref()), (5, b"\x0a\x06node-2".as_slice()));
        let dummy = Entry {
            log_id: log_id(2, 2),
            payload: EntryPayload::Normal(Command::Dummy),
        };
        assert_eq!(encode(&dummy, "").expect("encode"), (6, Bytes::from_static(b"X")));
    }

    #[test]
    fn unknown_types_and_objects_are_refused() {
        assert!(matches!(decode(1, 1, 4, b""), Err(CodecError::UnknownType(4))));
        let object = SerializedObject {
            r#type: "io.axoniq.Something".into(),
            data: vec![],
        }
        .encode_to_vec();
        assert!(matches!(decode(1, 1, 3, &object), Err(CodecError::UnknownObject(_))));
        assert!(matches!(decode(1, 1, 3, b"\xff\xff"), Err(CodecError::Malformed(_))));
    }
}
