//! Fuzz body: bytes as a Myelin bloom file (`.mbloom` / `.msbloom`).
//!
//! `Bloom::decode` runs on the bytes as given and once with the CRC made right so the fuzzer
//! gets past it. A decoded filter must answer lookups without panicking, survive an
//! encode/decode round trip unchanged, and never deny an id inserted into it. The first bytes
//! also size a fresh filter (`Bloom::with_capacity`), which must hold what is inserted.

use myelin_format::bloom::Bloom;

/// Bytes of header and CRC around the bit array.
const FRAME_BYTES: usize = 24 + 4;

pub fn run(data: &[u8]) {
    decoded(data);
    if let Some(content_len) = data.len().checked_sub(4) {
        let mut fixed = data.to_vec();
        let crc = crc32fast::hash(&fixed[..content_len]);
        fixed[content_len..].copy_from_slice(&crc.to_be_bytes());
        decoded(&fixed);
    }
    sized(data);
}

fn decoded(bytes: &[u8]) {
    let Ok(bloom) = Bloom::decode(bytes) else {
        return;
    };
    assert_eq!(bloom.memory_bytes() + FRAME_BYTES, bytes.len());
    let again = Bloom::decode(&bloom.encode()).expect("an encoded bloom decodes");
    assert_eq!(again, bloom);
    let ids = ids(bytes);
    for id in &ids {
        let _ = bloom.may_contain(id);
    }
    let mut with_ids = bloom;
    for id in &ids {
        with_ids.insert(id);
    }
    for id in &ids {
        assert!(with_ids.may_contain(id), "inserted {id:?} reads as absent");
    }
}

/// A few aggregate ids made of the input (so the fuzzer steers which bits they hit).
fn ids(bytes: &[u8]) -> Vec<String> {
    let mut ids: Vec<String> = bytes
        .chunks(16)
        .take(8)
        .map(|chunk| String::from_utf8_lossy(chunk).into_owned())
        .collect();
    ids.push(String::new());
    ids
}

/// `with_capacity` from the first three bytes: up to 4095 keys, a rate from 1e-9 to 0.5.
fn sized(data: &[u8]) {
    let [a, b, c, ..] = *data else {
        return;
    };
    let expected = usize::from(u16::from_be_bytes([a, b]) & 0x0fff);
    let rate = 0.5f64.powi(i32::from(c % 32));
    let mut bloom = Bloom::with_capacity(expected, rate);
    let ids = ids(&data[3..]);
    for id in &ids {
        bloom.insert(id);
    }
    for id in &ids {
        assert!(bloom.may_contain(id), "inserted {id:?} reads as absent");
    }
    let again = Bloom::decode(&bloom.encode()).expect("an encoded bloom decodes");
    assert_eq!(again, bloom);
}
