//! ACTIVE_BACKUP's promise (Axon Server EE, CLUSTER.md §1.2): in a group with active backups, a
//! write is acknowledged only once at least `min-active-backups` of them hold it.
//!
//! openraft 0.9 commits by a majority of voters and cannot say "and k of this other set", so
//! active backups are learners and the promise is kept at acknowledgement: the leader answers
//! a write once it is committed by a majority of primaries, applied, **and** held by k active
//! backups (their matched index in the leader's replication progress). The rule, exactly:
//!
//! * a group without active backups acknowledges on commit (`k` does not matter);
//! * a group with `b ≥ 1` active backups acknowledges entry `i` when at least `k` of them have
//!   matched `i`; `k > b` is refused when the group is configured, so a group can always meet
//!   its `k` while enough backups run (2 backups and `k = 1`: one may be down);
//! * a write the backups do not confirm within `max-election-timeout` is answered "outcome
//!   unknown" (it is committed on the primaries and will reach the backups when they return).
//!
//! The difference from Axon, documented in docs/ARCHITECTURE.md decision 21: primaries may
//! apply (and serve reads of) an entry before the backups hold it; Axon does not commit it.

use std::collections::BTreeMap;

use crate::role::Role;
use crate::types::{LogId, Membership, NodeId, NodeName};

/// The active backups of a group, by id.
pub fn active_backups(membership: &Membership) -> Vec<NodeId> {
    membership
        .nodes()
        .filter(|(_, member)| member.role == Role::ActiveBackup)
        .map(|(id, _)| *id)
        .collect()
}

/// How many of `backups` hold entry `index`, by the leader's replication progress.
pub fn holding(replication: &BTreeMap<NodeId, Option<LogId>>, backups: &[NodeId], index: u64) -> usize {
    backups
        .iter()
        .filter(|id| {
            replication
                .get(id)
                .copied()
                .flatten()
                .is_some_and(|matched| matched.index >= index)
        })
        .count()
}

/// Whether entry `index` may be acknowledged: no backups, or `k` of them hold it.
pub fn may_acknowledge(
    replication: &BTreeMap<NodeId, Option<LogId>>,
    backups: &[NodeId],
    min_active_backups: usize,
    index: u64,
) -> bool {
    backups.is_empty() || holding(replication, backups, index) >= min_active_backups
}

/// Refuses a membership whose active backups could never satisfy `min_active_backups`
/// (Axon would silently stop committing), and a group without a PRIMARY.
pub fn check_configuration(members: &BTreeMap<NodeName, Role>, min_active_backups: usize) -> Result<(), String> {
    if !members.values().any(|role| *role == Role::Primary) {
        return Err("a replication group needs at least one PRIMARY member".to_string());
    }
    check_backups(members, min_active_backups)
}

/// Refuses `0 < #active backups < min_active_backups`: no write could ever be acknowledged.
pub fn check_backups(members: &BTreeMap<NodeName, Role>, min_active_backups: usize) -> Result<(), String> {
    let backups = members.values().filter(|role| **role == Role::ActiveBackup).count();
    if backups > 0 && backups < min_active_backups {
        return Err(format!(
            "the group would have {backups} ACTIVE_BACKUP member(s), fewer than \
             axoniq.axonserver.replication.min-active-backups ({min_active_backups}): no write could be acknowledged"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::log_id;

    fn progress(matched: &[(NodeId, Option<u64>)]) -> BTreeMap<NodeId, Option<LogId>> {
        matched
            .iter()
            .map(|(id, index)| (*id, index.map(|i| log_id(1, i))))
            .collect()
    }

    #[test]
    fn a_group_without_active_backups_acknowledges_on_commit() {
        assert!(may_acknowledge(&progress(&[(1, Some(3))]), &[], 1, 10));
        assert!(may_acknowledge(&progress(&[]), &[], 5, 10));
    }

    #[test]
    fn one_of_one_backup_must_hold_the_entry() {
        let backups = [7];
        assert!(!may_acknowledge(&progress(&[(7, Some(9))]), &backups, 1, 10));
        assert!(!may_acknowledge(&progress(&[(7, None)]), &backups, 1, 10));
        assert!(!may_acknowledge(&progress(&[]), &backups, 1, 10));
        assert!(may_acknowledge(&progress(&[(7, Some(10))]), &backups, 1, 10));
        assert!(may_acknowledge(&progress(&[(7, Some(12))]), &backups, 1, 10));
    }

    #[test]
    fn two_active_backups_with_k_one_and_one_down_still_acknowledge() {
        let backups = [7, 8];
        // Backup 8 is down (never matched); backup 7 holds the entry.
        assert!(may_acknowledge(&progress(&[(7, Some(10)), (8, None)]), &backups, 1, 10));
        // Both down: no.
        assert!(!may_acknowledge(&progress(&[(7, Some(4)), (8, None)]), &backups, 1, 10));
        // k = 2 needs both.
        assert!(!may_acknowledge(
            &progress(&[(7, Some(10)), (8, None)]),
            &backups,
            2,
            10
        ));
        assert!(may_acknowledge(
            &progress(&[(7, Some(10)), (8, Some(11))]),
            &backups,
            2,
            10
        ));
    }

    #[test]
    fn primaries_and_passive_backups_do_not_count_as_active_backups() {
        let progress = progress(&[(1, Some(10)), (2, Some(10)), (7, Some(3))]);
        assert_eq!(holding(&progress, &[7], 10), 0);
    }

    #[test]
    fn a_configuration_that_could_never_acknowledge_is_refused() {
        let group = |roles: &[Role]| -> BTreeMap<NodeName, Role> {
            roles.iter().enumerate().map(|(i, r)| (format!("n{i}"), *r)).collect()
        };
        assert!(check_configuration(&group(&[Role::Primary]), 1).is_ok());
        assert!(check_configuration(&group(&[Role::Primary, Role::ActiveBackup]), 1).is_ok());
        let refused = check_configuration(&group(&[Role::Primary, Role::ActiveBackup]), 2).expect_err("k > backups");
        assert!(refused.contains("min-active-backups (2)"), "{refused}");
        assert!(check_configuration(&group(&[Role::Primary, Role::ActiveBackup, Role::ActiveBackup]), 2).is_ok());
        // No active backup at all: k does not matter.
        assert!(check_configuration(&group(&[Role::Primary, Role::PassiveBackup]), 3).is_ok());
        assert!(check_configuration(&group(&[Role::ActiveBackup, Role::PassiveBackup]), 1).is_err());
    }
}
