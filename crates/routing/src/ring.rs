//! The consistent-hash ring that picks a handler for a routing key (Axon Server SE's
//! `ConsistentHash`): every handler stream owns `load_factor` points on a ring of 64-bit hashes,
//! a key goes to the owner of the first point at or after the key's hash, wrapping around.
//!
//! SE hashes with MD5 over `"<client stream id> #<i>"`; since a stream id ends in a random
//! UUID, no two servers could place a key alike anyway, so Myelin hashes the same strings with
//! xxh3 (MESSAGING.md §2.5). What must hold, and is tested: a key stays with its handler while
//! the handlers do not change; only the keys of a handler that leaves move; keys spread in
//! proportion to load factors.

use xxhash_rust::xxh3::xxh3_64;

/// A load factor of 0 means Axon's default, 100.
pub const DEFAULT_LOAD_FACTOR: u32 = 100;
/// Load factors above this are taken as this, so that one subscription cannot make a ring of
/// millions of points.
pub const MAX_LOAD_FACTOR: u32 = 10_000;

/// A ring over some members (each `(id, load factor)`), built once per change of membership.
#[derive(Debug, Clone)]
pub struct Ring<T> {
    /// (hash, index into `members`), sorted by hash.
    points: Vec<(u64, usize)>,
    members: Vec<T>,
}

impl<T: Clone + AsRef<str>> Ring<T> {
    /// The ring of `members`; their order does not matter.
    pub fn new(members: impl IntoIterator<Item = (T, u32)>) -> Ring<T> {
        let mut points = Vec::new();
        let mut ids = Vec::new();
        for (index, (member, load_factor)) in members.into_iter().enumerate() {
            let load = match load_factor {
                0 => DEFAULT_LOAD_FACTOR,
                n => n.min(MAX_LOAD_FACTOR),
            };
            for i in 0..load {
                points.push((xxh3_64(format!("{} #{i}", member.as_ref()).as_bytes()), index));
            }
            ids.push(member);
        }
        points.sort_unstable();
        Ring { points, members: ids }
    }

    /// The member that owns `key`, or `None` for an empty ring.
    pub fn select(&self, key: &str) -> Option<&T> {
        if self.points.is_empty() {
            return None;
        }
        let hash = xxh3_64(key.as_bytes());
        let at = self.points.partition_point(|(point, _)| *point < hash);
        let (_, index) = self.points[at % self.points.len()];
        self.members.get(index)
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn keys() -> impl Iterator<Item = String> {
        (0..10_000).map(|k| format!("aggregate-{k}"))
    }

    #[test]
    fn an_empty_ring_selects_nobody_and_a_lone_member_everything() {
        let empty: Ring<String> = Ring::new([]);
        assert_eq!(empty.select("k"), None);
        let one = Ring::new([("a".to_string(), 0)]);
        assert!(keys().all(|k| one.select(&k).map(String::as_str) == Some("a")));
    }

    #[test]
    fn a_key_stays_with_its_member_and_only_a_leaving_members_keys_move() {
        let three = Ring::new([("a".to_string(), 100), ("b".to_string(), 100), ("c".to_string(), 100)]);
        let again = Ring::new([("c".to_string(), 100), ("a".to_string(), 100), ("b".to_string(), 100)]);
        let two = Ring::new([("a".to_string(), 100), ("b".to_string(), 100)]);
        for key in keys() {
            let owner = three.select(&key).expect("owner");
            assert_eq!(again.select(&key), Some(owner), "order of members does not matter");
            if owner != "c" {
                assert_eq!(two.select(&key), Some(owner), "{key} moved though its owner stayed");
            }
        }
    }

    #[test]
    fn keys_spread_in_proportion_to_load_factors() {
        let ring = Ring::new([("light".to_string(), 100), ("heavy".to_string(), 300)]);
        let mut counts: HashMap<&str, usize> = HashMap::new();
        for key in keys() {
            *counts.entry(ring.select(&key).expect("owner")).or_default() += 1;
        }
        let heavy = counts["heavy"] as f64 / 10_000.0;
        assert!((0.65..0.85).contains(&heavy), "heavy took {heavy}");
    }
}
