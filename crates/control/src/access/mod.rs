//! Who may do what: roles granted per context, the principal a request authenticates as, and
//! [`AccessControl`], which turns tokens and passwords into principals.

mod control;
mod principal;

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::ControlError;

pub use control::AccessControl;
pub use principal::{Principal, PrincipalKind, Right};

/// A role as Axon Server names it on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    /// Everything, including administration.
    Admin,
    /// Read events, snapshots and queries.
    Read,
    /// Append events and snapshots, send commands.
    Write,
    /// Read and write (Axon's role for client applications using a context).
    UseContext,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::Admin, Role::Read, Role::Write, Role::UseContext];

    /// The wire string: `ADMIN`, `READ`, `WRITE` or `USE_CONTEXT`.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "ADMIN",
            Role::Read => "READ",
            Role::Write => "WRITE",
            Role::UseContext => "USE_CONTEXT",
        }
    }

    /// Whether holding this role (on the right context) gives `right`.
    pub fn gives(self, right: Right) -> bool {
        match self {
            Role::Admin => true,
            Role::Read => right == Right::Read,
            Role::Write => right == Right::Write,
            Role::UseContext => matches!(right, Right::Read | Right::Write),
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = ControlError;

    /// Case-insensitive: `read`, `Read` and `READ` are the same role.
    fn from_str(s: &str) -> Result<Role, ControlError> {
        Role::ALL
            .into_iter()
            .find(|role| role.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| {
                ControlError::Invalid(format!(
                    "unknown role {s:?}; expected one of ADMIN, READ, WRITE, USE_CONTEXT"
                ))
            })
    }
}

impl Serialize for Role {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Role {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Role, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// A role on one context, or on every context when `context` is `"*"`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Grant {
    pub context: String,
    pub role: Role,
}

impl Grant {
    /// The context name that means "every context".
    pub const ANY_CONTEXT: &'static str = "*";

    pub fn new(context: impl Into<String>, role: Role) -> Grant {
        Grant {
            context: context.into(),
            role,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_strings_round_trip() {
        for role in Role::ALL {
            assert_eq!(role.to_string().parse::<Role>().expect("parse"), role);
            assert_eq!(role.to_string().to_lowercase().parse::<Role>().expect("parse"), role);
            let json = serde_json::to_string(&role).expect("json");
            assert_eq!(json, format!("\"{}\"", role.as_str()));
            assert_eq!(serde_json::from_str::<Role>(&json).expect("from json"), role);
        }
        assert_eq!("use_context".parse::<Role>().expect("parse"), Role::UseContext);
        assert_eq!("Admin".parse::<Role>().expect("parse"), Role::Admin);
    }

    #[test]
    fn unknown_roles_are_rejected() {
        for bad in ["", "OWNER", "USE-CONTEXT", "READ ", "MONITOR"] {
            assert!(matches!(bad.parse::<Role>(), Err(ControlError::Invalid(_))), "{bad:?}");
        }
        assert!(serde_json::from_str::<Grant>(r#"{"context":"x","role":"OWNER"}"#).is_err());
    }

    #[test]
    fn grant_json_shape() {
        let grant = Grant::new("default", Role::UseContext);
        let json = serde_json::to_value(&grant).expect("json");
        assert_eq!(json, serde_json::json!({"context": "default", "role": "USE_CONTEXT"}));
        let back: Grant = serde_json::from_str(r#"{"context":"*","role":"read"}"#).expect("parse");
        assert_eq!(back, Grant::new("*", Role::Read));
    }
}
