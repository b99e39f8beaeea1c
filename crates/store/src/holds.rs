//! `DeletionHolds`: who currently forbids deleting or rewriting listed segment files, and until
//! when. A backup takes a hold (a lease, `POST /v1/backup/lease`) while it copies files;
//! compaction, retention and the cluster's log cleaning ask [`DeletionHolds::is_held`] (through
//! `ContextStore::deletions_held`) before touching a file and leave it alone while any hold is
//! live.
//!
//! Holds expire on their own, so a backup that dies without releasing its lease blocks cleaning
//! for at most its time to live. They live in memory only: a restart releases them all, which is
//! safe because nothing deletes files at start.

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// Live holds a registry keeps at most: a bound on what a client taking leases in a loop can
/// make the server remember (each hold also expires on its own).
pub const HOLDS_MAX: usize = 256;

/// A registry of holds, each with an id and an expiry. Cheap to check: one uncontended lock
/// over a handful of entries.
#[derive(Debug, Default)]
pub struct DeletionHolds {
    holds: Mutex<BTreeMap<String, Instant>>,
}

impl DeletionHolds {
    pub fn new() -> Self {
        Self::default()
    }

    /// The process-wide registry. Every `ContextStore` checks it unless told to check another
    /// one (`ContextStore::set_deletion_holds`), so a store opened anywhere in the server sees
    /// the leases without being wired to them; tests give each server their own registry.
    pub fn global() -> Arc<DeletionHolds> {
        static GLOBAL: OnceLock<Arc<DeletionHolds>> = OnceLock::new();
        GLOBAL.get_or_init(|| Arc::new(DeletionHolds::new())).clone()
    }

    /// Takes (or moves the expiry of) hold `id` until `until`. Refused (false) when
    /// [`HOLDS_MAX`] other holds are live.
    #[must_use]
    pub fn hold(&self, id: &str, until: Instant) -> bool {
        let now = Instant::now();
        let mut holds = self.holds.lock();
        holds.retain(|_, expiry| *expiry > now);
        if !holds.contains_key(id) && holds.len() >= HOLDS_MAX {
            return false;
        }
        holds.insert(id.to_string(), until);
        true
    }

    /// Moves the expiry of hold `id` to `until` if it is live at `now`; false (and the hold
    /// forgotten) if it expired or never existed. An expired hold cannot be revived: whatever
    /// it protected may already have been deleted.
    #[must_use]
    pub fn renew(&self, id: &str, until: Instant, now: Instant) -> bool {
        let mut holds = self.holds.lock();
        match holds.get_mut(id) {
            Some(expiry) if *expiry > now => {
                *expiry = until;
                true
            }
            Some(_) => {
                holds.remove(id);
                false
            }
            None => false,
        }
    }

    /// Releases hold `id`. True if it existed and had not expired yet.
    pub fn release(&self, id: &str) -> bool {
        let now = Instant::now();
        self.holds.lock().remove(id).is_some_and(|expiry| expiry > now)
    }

    /// Whether any hold is live at `now`: deletions and rewrites of listed files must wait.
    pub fn is_held(&self, now: Instant) -> bool {
        self.holds.lock().values().any(|expiry| *expiry > now)
    }

    /// The holds live at `now`, by id, with the time each has left.
    pub fn live(&self, now: Instant) -> Vec<(String, Duration)> {
        self.holds
            .lock()
            .iter()
            .filter(|(_, expiry)| **expiry > now)
            .map(|(id, expiry)| (id.clone(), expiry.duration_since(now)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: Duration = Duration::from_secs(1);

    #[test]
    fn a_hold_is_live_until_it_expires() {
        let holds = DeletionHolds::new();
        let now = Instant::now();
        assert!(!holds.is_held(now));
        assert!(holds.hold("a", now + 10 * SECOND));
        assert!(holds.is_held(now));
        assert!(holds.is_held(now + 9 * SECOND));
        assert!(!holds.is_held(now + 10 * SECOND), "expiry is exclusive");
        assert_eq!(holds.live(now + 4 * SECOND), vec![("a".to_string(), 6 * SECOND)]);
        assert!(holds.live(now + 11 * SECOND).is_empty());
    }

    #[test]
    fn any_live_hold_holds() {
        let holds = DeletionHolds::new();
        let now = Instant::now();
        assert!(holds.hold("short", now + SECOND));
        assert!(holds.hold("long", now + 5 * SECOND));
        assert!(holds.is_held(now + 2 * SECOND));
        let live: Vec<String> = holds.live(now + 2 * SECOND).into_iter().map(|(id, _)| id).collect();
        assert_eq!(live, vec!["long".to_string()]);
        assert!(holds.release("long"));
        assert!(!holds.is_held(now + 2 * SECOND));
        assert!(holds.is_held(now), "the short one is still live before its expiry");
    }

    #[test]
    fn release_answers_whether_the_hold_was_live() {
        let holds = DeletionHolds::new();
        let now = Instant::now();
        assert!(!holds.release("unknown"));
        assert!(holds.hold("a", now + 60 * SECOND));
        assert!(holds.release("a"));
        assert!(!holds.release("a"), "released once");
        assert!(!holds.is_held(now));
        // Already expired (in real time): not live, so not released.
        assert!(holds.hold("old", now));
        assert!(!holds.release("old"));
    }

    #[test]
    fn renew_extends_live_holds_only() {
        let holds = DeletionHolds::new();
        let now = Instant::now();
        assert!(!holds.renew("unknown", now + SECOND, now));
        assert!(holds.hold("a", now + 2 * SECOND));
        assert!(holds.renew("a", now + 20 * SECOND, now + SECOND));
        assert!(holds.is_held(now + 10 * SECOND));
        assert!(
            !holds.renew("a", now + 40 * SECOND, now + 30 * SECOND),
            "expired at 20 s"
        );
        assert!(!holds.is_held(now + 5 * SECOND), "an expired hold is forgotten");
    }

    #[test]
    fn live_holds_are_bounded() {
        let holds = DeletionHolds::new();
        let until = Instant::now() + 60 * SECOND;
        for i in 0..HOLDS_MAX {
            assert!(holds.hold(&format!("h{i}"), until));
        }
        assert!(!holds.hold("one-too-many", until));
        assert!(holds.hold("h0", until + SECOND), "an existing hold can still move");
        assert!(holds.release("h1"));
        assert!(holds.hold("one-too-many", until));
        assert_eq!(holds.live(Instant::now()).len(), HOLDS_MAX);
    }

    #[test]
    fn expired_holds_make_room() {
        let holds = DeletionHolds::new();
        let now = Instant::now();
        for i in 0..HOLDS_MAX {
            // Already expired when the next hold is taken.
            assert!(holds.hold(&format!("h{i}"), now));
        }
        assert!(holds.hold("fresh", now + 60 * SECOND));
        assert_eq!(holds.live(Instant::now()).len(), 1);
    }

    #[test]
    fn the_global_registry_is_one_registry() {
        assert!(Arc::ptr_eq(&DeletionHolds::global(), &DeletionHolds::global()));
    }
}
