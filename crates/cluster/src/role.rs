//! Axon Server's node roles in a replication group, with the promises each one carries
//! (CLUSTER.md §1.2) and how Myelin maps them onto openraft (docs/ARCHITECTURE.md).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A node's role in one replication group. The numbers are Axon's (`raft.proto`, `admin.proto`;
/// 1 is unused), so they can be stored and sent as Axon does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize, Deserialize)]
pub enum Role {
    /// Votes, can lead, stores events, serves clients.
    #[default]
    Primary,
    /// Stores events; a write is acknowledged only when `min-active-backups` of them hold it.
    ActiveBackup,
    /// Stores events asynchronously; neither votes nor counts for a write.
    PassiveBackup,
    /// Serves clients, stores no events: receives placeholders in place of event entries.
    MessagingOnly,
    /// Tiered storage. Refused until tiering exists.
    Secondary,
}

impl Role {
    pub const ALL: [Role; 5] = [
        Role::Primary,
        Role::ActiveBackup,
        Role::PassiveBackup,
        Role::MessagingOnly,
        Role::Secondary,
    ];

    /// Axon's number for the role.
    pub fn number(self) -> i32 {
        match self {
            Role::Primary => 0,
            Role::ActiveBackup => 2,
            Role::PassiveBackup => 3,
            Role::MessagingOnly => 4,
            Role::Secondary => 5,
        }
    }

    pub fn from_number(number: i32) -> Option<Role> {
        Role::ALL.into_iter().find(|role| role.number() == number)
    }

    /// Axon's name (`PRIMARY`, `ACTIVE_BACKUP`, ...), as REST and the CLI spell it.
    pub fn name(self) -> &'static str {
        match self {
            Role::Primary => "PRIMARY",
            Role::ActiveBackup => "ACTIVE_BACKUP",
            Role::PassiveBackup => "PASSIVE_BACKUP",
            Role::MessagingOnly => "MESSAGING_ONLY",
            Role::Secondary => "SECONDARY",
        }
    }

    /// A Raft voter: PRIMARY only. Active backups count for writes through the backup gate,
    /// not as voters (openraft 0.9 cannot express "k of a subset"; docs/ARCHITECTURE.md).
    pub fn is_voter(self) -> bool {
        self == Role::Primary
    }

    /// Holds event and snapshot files.
    pub fn has_storage(self) -> bool {
        self != Role::MessagingOnly
    }

    /// May serve client applications (Axon's `allowsClientConnect`).
    pub fn allows_client_connect(self) -> bool {
        matches!(self, Role::Primary | Role::MessagingOnly)
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Role {
    type Err = String;

    /// Axon's names, case-insensitively, and also the `ROLE_`-prefixed names of `admin.proto`.
    fn from_str(s: &str) -> Result<Role, String> {
        let upper = s.trim().to_ascii_uppercase();
        let bare = upper.strip_prefix("ROLE_").unwrap_or(&upper);
        Role::ALL.into_iter().find(|role| role.name() == bare).ok_or_else(|| {
            let names: Vec<&str> = Role::ALL.iter().map(|r| r.name()).collect();
            format!("unknown role {s:?}; the roles are {}", names.join(", "))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_axons_and_round_trip() {
        let numbers: Vec<i32> = Role::ALL.iter().map(|r| r.number()).collect();
        assert_eq!(numbers, vec![0, 2, 3, 4, 5]);
        for role in Role::ALL {
            assert_eq!(Role::from_number(role.number()), Some(role));
            assert_eq!(role.name().parse::<Role>(), Ok(role));
        }
        assert_eq!(Role::from_number(1), None);
        assert_eq!(Role::from_number(6), None);
    }

    #[test]
    fn names_parse_case_insensitively_and_with_the_proto_prefix() {
        assert_eq!("active_backup".parse::<Role>(), Ok(Role::ActiveBackup));
        assert_eq!("ROLE_MESSAGING_ONLY".parse::<Role>(), Ok(Role::MessagingOnly));
        let error = "LEADER".parse::<Role>().expect_err("unknown");
        assert!(error.contains("PRIMARY, ACTIVE_BACKUP"), "{error}");
    }

    #[test]
    fn the_promises_follow_axons_role_helpers() {
        assert!(Role::Primary.is_voter() && Role::Primary.allows_client_connect());
        assert!(!Role::ActiveBackup.allows_client_connect() && Role::ActiveBackup.has_storage());
        assert!(Role::MessagingOnly.allows_client_connect() && !Role::MessagingOnly.has_storage());
        assert!(!Role::PassiveBackup.is_voter());
    }
}
