//! `myelin_format::validate::validate_event` against prost, the decoder every reader of the
//! stored bytes uses: every well-formed event is accepted (completeness), and nothing prost
//! refuses is ever accepted (soundness), over many random events and many more mutations of
//! them. Deterministic (seeded), so a failure reproduces.

use myelin_format::event::EventFields;
use myelin_format::validate::validate_event;
use myelin_proto::grpc::event::Event;
use myelin_proto::grpc::{MetaDataValue, SerializedObject, meta_data_value};
use prost::Message;

/// xorshift64*: small, seeded, good enough to pick bytes.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    fn text(&mut self) -> String {
        const PIECES: [&str; 6] = ["a", "Z", "9", "-", "é", "日本"];
        (0..self.below(12))
            .map(|_| PIECES[self.below(PIECES.len() as u64) as usize])
            .collect()
    }

    fn bytes(&mut self, max: u64) -> Vec<u8> {
        (0..self.below(max)).map(|_| self.next() as u8).collect()
    }

    fn serialized(&mut self) -> SerializedObject {
        SerializedObject {
            r#type: self.text(),
            revision: self.text(),
            data: self.bytes(300),
        }
    }

    fn value(&mut self) -> MetaDataValue {
        use meta_data_value::Data;
        let data = match self.below(6) {
            0 => None,
            1 => Some(Data::TextValue(self.text())),
            2 => Some(Data::NumberValue(self.next() as i64)),
            3 => Some(Data::BooleanValue(self.below(2) == 1)),
            4 => Some(Data::DoubleValue(f64::from_bits(self.next()))),
            _ => Some(Data::BytesValue(self.serialized())),
        };
        MetaDataValue { data }
    }

    fn event(&mut self) -> Event {
        Event {
            message_identifier: self.text(),
            aggregate_identifier: self.text(),
            aggregate_sequence_number: self.next() as i64 >> self.below(64),
            aggregate_type: self.text(),
            timestamp: self.next() as i64 >> self.below(64),
            payload: (self.below(4) > 0).then(|| self.serialized()),
            meta_data: (0..self.below(4)).map(|_| (self.text(), self.value())).collect(),
            snapshot: self.below(2) == 1,
        }
    }
}

fn varint(mut v: u64, out: &mut Vec<u8>) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// A well-formed field Event does not know, which every decoder must skip.
fn unknown_field(rng: &mut Rng, out: &mut Vec<u8>) {
    let field = 9 + rng.below(100);
    match rng.below(5) {
        0 => {
            varint(field << 3, out);
            varint(rng.next(), out);
        }
        1 => {
            varint(field << 3 | 1, out);
            out.extend_from_slice(&rng.next().to_le_bytes());
        }
        2 => {
            let bytes = rng.bytes(40);
            varint(field << 3 | 2, out);
            varint(bytes.len() as u64, out);
            out.extend_from_slice(&bytes);
        }
        3 => {
            varint(field << 3 | 5, out);
            out.extend_from_slice(&(rng.next() as u32).to_le_bytes());
        }
        _ => {
            // A group holding a varint.
            varint(field << 3 | 3, out);
            varint(1 << 3, out);
            varint(rng.next(), out);
            varint(field << 3 | 4, out);
        }
    }
}

fn mutate(rng: &mut Rng, bytes: &[u8]) -> Vec<u8> {
    let mut out = bytes.to_vec();
    for _ in 0..1 + rng.below(3) {
        let len = out.len() as u64;
        match rng.below(7) {
            0 if len > 0 => {
                let at = rng.below(len) as usize;
                out[at] ^= 1 << rng.below(8);
            }
            1 if len > 0 => {
                let at = rng.below(len) as usize;
                out[at] = rng.next() as u8;
            }
            2 => out.truncate(rng.below(len + 1) as usize),
            3 => {
                let at = rng.below(len + 1) as usize;
                let insert = rng.bytes(6);
                out.splice(at..at, insert);
            }
            4 if len > 0 => {
                let from = rng.below(len) as usize;
                let to = (from + 1 + rng.below(8) as usize).min(out.len());
                out.drain(from..to);
            }
            5 if len > 0 => {
                // Interesting bytes: continuation bits, wire types 3, 4, 6, 7, field 0.
                const SPECIAL: [u8; 8] = [0x80, 0xff, 0x01, 0x03, 0x04, 0x06, 0x07, 0x00];
                let at = rng.below(len) as usize;
                out[at] = SPECIAL[rng.below(SPECIAL.len() as u64) as usize];
            }
            _ => unknown_field(rng, &mut out),
        }
    }
    out
}

#[test]
fn valid_events_are_accepted() {
    let mut rng = Rng(0x5eed_0001);
    for _ in 0..20_000 {
        let mut bytes = rng.event().encode_to_vec();
        for _ in 0..rng.below(3) {
            unknown_field(&mut rng, &mut bytes);
        }
        assert!(
            Event::decode(bytes.as_slice()).is_ok(),
            "the generator makes valid events"
        );
        match validate_event(&bytes) {
            Ok(fields) => {
                let decoded = Event::decode(bytes.as_slice()).expect("checked above");
                assert_same_fields(&fields, &decoded, &bytes);
            }
            Err(e) => panic!("a valid event refused: {e}\n{bytes:02x?}"),
        }
    }
}

/// The fields the validator reads for the store are the ones prost decodes.
fn assert_same_fields(fields: &EventFields<'_>, decoded: &Event, bytes: &[u8]) {
    let expected = (
        decoded.aggregate_identifier.as_str(),
        decoded.aggregate_sequence_number,
        decoded.aggregate_type.as_str(),
        decoded.timestamp,
        decoded.snapshot,
    );
    let ours = (
        fields.aggregate_identifier,
        fields.aggregate_sequence_number,
        fields.aggregate_type,
        fields.timestamp,
        fields.snapshot,
    );
    assert_eq!(ours, expected, "{bytes:02x?}");
}

#[test]
fn nothing_prost_refuses_is_accepted_and_refusals_match() {
    let mut rng = Rng(0x5eed_0002);
    let (mut accepted, mut refused, mut stricter) = (0u32, 0u32, 0u32);
    for _ in 0..20_000 {
        let original = rng.event().encode_to_vec();
        for _ in 0..20 {
            let bytes = mutate(&mut rng, &original);
            let ours = validate_event(&bytes);
            let prost = Event::decode(bytes.as_slice());
            match (&ours, &prost) {
                (Ok(fields), Ok(decoded)) => {
                    assert_same_fields(fields, decoded, &bytes);
                    accepted += 1;
                }
                (Err(_), Err(_)) => refused += 1,
                (Ok(_), Err(e)) => panic!("accepted what prost refuses ({e}): {bytes:02x?}"),
                (Err(e), Ok(decoded)) => {
                    stricter += 1;
                    eprintln!("refused ({e}) what prost decodes as {decoded:?}: {bytes:02x?}");
                }
            }
        }
    }
    eprintln!("accepted {accepted}, refused {refused}, refused though prost decodes {stricter}");
    assert!(
        accepted > 10_000 && refused > 10_000,
        "the mutations exercise both outcomes"
    );
    assert_eq!(stricter, 0, "refused events prost decodes (see stderr)");
}

/// The fuzz target's committed inputs (docs/FUZZING.md), replayed through its body.
#[path = "../../../fuzz/src/committed.rs"]
mod committed;
#[path = "../../../fuzz/src/event_validate.rs"]
mod event_validate;

#[test]
fn fuzz_inputs_agree_with_prost() {
    let fuzz_dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz");
    committed::replay(&fuzz_dir, "event_validate", event_validate::run);
}
