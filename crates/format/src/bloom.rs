//! Myelin's bloom filter file (`.mbloom` / `.msbloom`): which aggregates a closed segment
//! may contain, so an aggregate read opens only the indexes that can answer.
//!
//! ```text
//! 0   8  magic "MYELNBLM"
//! 8   1  format version (1)
//! 9   1  k: hash functions
//! 10  6  reserved (0)
//! 16  8  u64 bit count m (a multiple of 64)
//! 24  m/8 bits, bit i at byte i/8, bit i%8
//! ..  4  u32 crc32 of everything before
//! ```
//! Hashing: `h = xxh3_64(aggregate id)`, `h1 = low 32 bits`, `h2 = high 32 bits | 1`, bit j of
//! the k is `(h1 + j·h2) mod m` (Kirsch–Mitzenmacher double hashing).

use thiserror::Error;

const MAGIC: &[u8; 8] = b"MYELNBLM";
const VERSION: u8 = 1;
const HEADER_BYTES: usize = 24;
const CRC_BYTES: usize = 4;
/// A filter never grows past this many bits (128 MiB): bounds memory against hostile files.
const MAX_BITS: u64 = 1 << 30;

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum BloomError {
    #[error("bloom file is {0} bytes, too short")]
    Truncated(usize),
    #[error("not a Myelin bloom file (bad magic)")]
    Magic,
    #[error("unsupported bloom format version {0}")]
    Version(u8),
    #[error("invalid bloom geometry: {bits} bits, {hashes} hashes, {len} bytes")]
    Geometry { bits: u64, hashes: u8, len: usize },
    #[error("bloom checksum mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    Checksum { stored: u32, computed: u32 },
}

/// The 64-bit hash Myelin uses for aggregate identifiers in blooms and indexes.
pub fn aggregate_hash(aggregate_id: &str) -> u64 {
    xxhash_rust::xxh3::xxh3_64(aggregate_id.as_bytes())
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bloom {
    hashes: u8,
    words: Vec<u64>,
}

impl Bloom {
    /// A filter sized for `expected` keys at about `false_positive_rate`.
    pub fn with_capacity(expected: usize, false_positive_rate: f64) -> Self {
        let n = expected.max(1) as f64;
        let p = false_positive_rate.clamp(1e-9, 0.5);
        let ln2 = std::f64::consts::LN_2;
        let bits = (-(n * p.ln()) / (ln2 * ln2)).ceil().clamp(64.0, MAX_BITS as f64) as u64;
        let words = bits.div_ceil(64) as usize;
        let hashes = ((words as f64 * 64.0 / n) * ln2).round().clamp(1.0, 16.0) as u8;
        Bloom {
            hashes,
            words: vec![0; words],
        }
    }

    fn bits(&self) -> u64 {
        self.words.len() as u64 * 64
    }

    fn positions(&self, aggregate_id: &str) -> impl Iterator<Item = u64> + use<> {
        let h = aggregate_hash(aggregate_id);
        let h1 = h & 0xffff_ffff;
        let h2 = (h >> 32) | 1;
        let m = self.bits();
        (0..u64::from(self.hashes)).map(move |j| h1.wrapping_add(j.wrapping_mul(h2)) % m)
    }

    pub fn insert(&mut self, aggregate_id: &str) {
        for bit in self.positions(aggregate_id) {
            self.words[(bit / 64) as usize] |= 1 << (bit % 64);
        }
    }

    /// False means certainly absent; true means "look in the index".
    pub fn may_contain(&self, aggregate_id: &str) -> bool {
        self.positions(aggregate_id)
            .all(|bit| self.words[(bit / 64) as usize] & (1 << (bit % 64)) != 0)
    }

    /// Bytes this filter holds in memory.
    pub fn memory_bytes(&self) -> usize {
        self.words.len() * 8
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER_BYTES + self.words.len() * 8 + CRC_BYTES);
        out.extend_from_slice(MAGIC);
        out.push(VERSION);
        out.push(self.hashes);
        out.extend_from_slice(&[0; 6]);
        out.extend_from_slice(&self.bits().to_be_bytes());
        for word in &self.words {
            out.extend_from_slice(&word.to_le_bytes());
        }
        let crc = crc32fast::hash(&out);
        out.extend_from_slice(&crc.to_be_bytes());
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, BloomError> {
        if bytes.len() < HEADER_BYTES + CRC_BYTES {
            return Err(BloomError::Truncated(bytes.len()));
        }
        if &bytes[..8] != MAGIC {
            return Err(BloomError::Magic);
        }
        if bytes[8] != VERSION {
            return Err(BloomError::Version(bytes[8]));
        }
        let hashes = bytes[9];
        let mut raw = [0u8; 8];
        raw.copy_from_slice(&bytes[16..24]);
        let bits = u64::from_be_bytes(raw);
        let body = bytes.len() - HEADER_BYTES - CRC_BYTES;
        if hashes == 0 || bits == 0 || bits % 64 != 0 || bits > MAX_BITS || bits / 8 != body as u64 {
            return Err(BloomError::Geometry {
                bits,
                hashes,
                len: bytes.len(),
            });
        }
        let (content, crc) = bytes.split_at(bytes.len() - CRC_BYTES);
        let stored = u32::from_be_bytes([crc[0], crc[1], crc[2], crc[3]]);
        let computed = crc32fast::hash(content);
        if stored != computed {
            return Err(BloomError::Checksum { stored, computed });
        }
        let words = content[HEADER_BYTES..]
            .chunks_exact(8)
            .map(|c| {
                let mut w = [0u8; 8];
                w.copy_from_slice(c);
                u64::from_le_bytes(w)
            })
            .collect();
        Ok(Bloom { hashes, words })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_false_negatives_and_few_false_positives() {
        let mut bloom = Bloom::with_capacity(10_000, 0.01);
        for i in 0..10_000 {
            bloom.insert(&format!("aggregate-{i}"));
        }
        assert!((0..10_000).all(|i| bloom.may_contain(&format!("aggregate-{i}"))));
        let false_positives = (0..10_000).filter(|i| bloom.may_contain(&format!("other-{i}"))).count();
        assert!(false_positives < 300, "{false_positives} false positives in 10000");
        let decoded = Bloom::decode(&bloom.encode()).expect("round trip");
        assert_eq!(decoded, bloom);
    }

    #[test]
    fn damaged_files_are_rejected() {
        let mut bloom = Bloom::with_capacity(10, 0.01);
        bloom.insert("a");
        let bytes = bloom.encode();
        let mut flipped = bytes.clone();
        flipped[30] ^= 4;
        assert!(matches!(Bloom::decode(&flipped), Err(BloomError::Checksum { .. })));
        assert!(matches!(
            Bloom::decode(&bytes[..bytes.len() - 8]),
            Err(BloomError::Geometry { .. })
        ));
        assert_eq!(Bloom::decode(&bytes[..10]), Err(BloomError::Truncated(10)));
        let mut magic = bytes.clone();
        magic[0] = b'X';
        assert_eq!(Bloom::decode(&magic), Err(BloomError::Magic));
    }
}
