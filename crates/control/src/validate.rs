//! Input checks shared by every table. Each error names the field and the accepted form, and is
//! raised before anything is written.

use crate::error::{ControlError, Result};

/// Longest name (context, user, application, replication group) in UTF-8 bytes.
pub(crate) const NAME_BYTES_MAX: usize = 255;

/// Axon Server's rule for context names: non-empty, at most 255 bytes, only ASCII letters, digits,
/// `_`, `-` and `.`, and not starting with `_` (names starting with `_`, such as `_admin`, are
/// reserved for the server). Context names become directory names, hence the narrow alphabet.
pub fn validate_context_name(name: &str) -> Result<()> {
    validate_directory_name("context", name)?;
    if name.starts_with('_') {
        return Err(ControlError::Invalid(format!(
            "context name {name:?} must not start with '_' (reserved)"
        )));
    }
    Ok(())
}

/// The one replication group every cluster has: it replicates the cluster's configuration.
pub const ADMIN_GROUP: &str = "_admin";

/// Replication group names follow the context rule ([`validate_context_name`]), plus the reserved
/// [`ADMIN_GROUP`]. A group's Raft log lives in a directory of its name, as a context's events do.
pub fn validate_replication_group_name(name: &str) -> Result<()> {
    if name == ADMIN_GROUP {
        return Ok(());
    }
    validate_directory_name("replication group", name)?;
    if name.starts_with('_') {
        return Err(ControlError::Invalid(format!(
            "replication group name {name:?} must not start with '_' (reserved; only {ADMIN_GROUP:?} exists)"
        )));
    }
    Ok(())
}

/// What context and replication group names share: they become directory names.
fn validate_directory_name(kind: &str, name: &str) -> Result<()> {
    if name.is_empty() {
        return Err(ControlError::Invalid(format!("{kind} name must not be empty")));
    }
    if name.len() > NAME_BYTES_MAX {
        return Err(ControlError::Invalid(format!(
            "{kind} name is {} bytes long; at most {NAME_BYTES_MAX} are allowed",
            name.len()
        )));
    }
    if !name.bytes().all(is_context_byte) {
        return Err(ControlError::Invalid(format!(
            "{kind} name {name:?} may only hold ASCII letters, digits, '_', '-' and '.'"
        )));
    }
    // A directory named `.` or `..` would be the storage directory itself or its parent.
    if name == "." || name == ".." {
        return Err(ControlError::Invalid(format!(
            "{kind} name {name:?} is not allowed (it names a directory, not a {kind})"
        )));
    }
    Ok(())
}

/// The context of a role grant: `*` (every context) or a context name. Unlike
/// [`validate_context_name`] a leading `_` is accepted, because Axon grants roles on `_admin`.
pub(crate) fn validate_grant_context(context: &str) -> Result<()> {
    if context == "*" {
        return Ok(());
    }
    if context.is_empty() || context.len() > NAME_BYTES_MAX || !context.bytes().all(is_context_byte) {
        return Err(ControlError::Invalid(format!(
            "grant context {context:?} must be \"*\" or a context name (1 to {NAME_BYTES_MAX} ASCII letters, \
             digits, '_', '-', '.')"
        )));
    }
    Ok(())
}

/// Names of users, applications and cluster nodes: non-empty, at most 255 bytes, no control
/// characters (they end up in logs and HTTP headers).
pub(crate) fn validate_name(kind: &str, name: &str) -> Result<()> {
    if name.is_empty() {
        return Err(ControlError::Invalid(format!("{kind} name must not be empty")));
    }
    if name.len() > NAME_BYTES_MAX {
        return Err(ControlError::Invalid(format!(
            "{kind} name is {} bytes long; at most {NAME_BYTES_MAX} are allowed",
            name.len()
        )));
    }
    if name.chars().any(char::is_control) {
        return Err(ControlError::Invalid(format!(
            "{kind} name {name:?} must not contain control characters"
        )));
    }
    Ok(())
}

/// Host names of cluster nodes: a name ([`validate_name`]) without white space, since it becomes
/// part of an address.
pub(crate) fn validate_host_name(kind: &str, host: &str) -> Result<()> {
    validate_name(kind, host)?;
    if host.chars().any(char::is_whitespace) {
        return Err(ControlError::Invalid(format!(
            "{kind} {host:?} must not contain white space"
        )));
    }
    Ok(())
}

fn is_context_byte(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || matches!(byte, b'_' | b'-' | b'.')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn context_names() {
        for good in ["default", "a", "My-Context_2.x", &"c".repeat(255)] {
            assert!(validate_context_name(good).is_ok(), "{good:?}");
        }
        for bad in [
            "",
            "_admin",
            "_x",
            "with space",
            "slash/",
            "ü",
            "tab\t",
            &"c".repeat(256),
            "*",
            ".",
            "..",
        ] {
            assert!(
                matches!(validate_context_name(bad), Err(ControlError::Invalid(_))),
                "{bad:?} accepted"
            );
        }
    }

    #[test]
    fn replication_group_names_are_context_names_or_admin() {
        for good in ["_admin", "default", "My-Group_2.x", &"g".repeat(255)] {
            assert!(validate_replication_group_name(good).is_ok(), "{good:?}");
        }
        for bad in ["", "_other", "_admin2", "a b", "x/y", ".", "..", "*", &"g".repeat(256)] {
            let err = validate_replication_group_name(bad).err();
            assert!(
                matches!(err, Some(ControlError::Invalid(ref m)) if m.contains("replication group name")),
                "{bad:?}: {err:?}"
            );
        }
    }

    #[test]
    fn host_names_refuse_white_space_and_control_characters() {
        for good in ["localhost", "node-1.example.com", "10.0.0.7", "::1"] {
            assert!(validate_host_name("host name", good).is_ok(), "{good:?}");
        }
        for bad in ["", "a b", "tab\t", "new\nline", &"h".repeat(256)] {
            assert!(validate_host_name("host name", bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn grant_contexts() {
        for good in ["*", "_admin", "default", "a.b-c"] {
            assert!(validate_grant_context(good).is_ok(), "{good:?}");
        }
        for bad in ["", "**", "a b", "x/y", &"c".repeat(256)] {
            assert!(validate_grant_context(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn principal_names() {
        for good in ["admin", "John Doe", "ünïcode", &"u".repeat(255)] {
            assert!(validate_name("user", good).is_ok(), "{good:?}");
        }
        for bad in ["", "new\nline", "nul\0", "del\u{7f}", &"u".repeat(256)] {
            let err = validate_name("user", bad).err();
            assert!(
                matches!(err, Some(ControlError::Invalid(ref m)) if m.contains("user name")),
                "{bad:?}"
            );
        }
    }
}
