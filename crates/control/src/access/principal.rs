//! [`Principal`]: the identity a request was authenticated as, and its rights.

use serde::{Deserialize, Serialize};

use super::Grant;

/// What a request wants to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Right {
    Read,
    Write,
    Admin,
}

/// How the principal proved who it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum PrincipalKind {
    /// The configured `axoniq.axonserver.accesscontrol.admin-token`.
    AdminToken,
    /// The configured `axoniq.axonserver.accesscontrol.token`.
    Token,
    /// A user, by HTTP basic authentication.
    User,
    /// An application, by its token.
    Application,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Principal {
    pub name: String,
    pub kind: PrincipalKind,
    pub grants: Vec<Grant>,
}

impl Principal {
    /// Whether this principal has `right` on `context`.
    ///
    /// A grant counts when it names `context` or `"*"`, and its role gives the right: `READ` gives
    /// Read, `WRITE` gives Write, `USE_CONTEXT` gives both, `ADMIN` gives all three. So global
    /// administration (`context = None`, `Right::Admin`) needs `ADMIN` on `"*"`, and `ADMIN` on
    /// one context administers only that context.
    ///
    /// `context = None` means the request is not about one context: only grants on `"*"` count.
    pub fn allows(&self, context: Option<&str>, right: Right) -> bool {
        self.grants.iter().any(|grant| {
            let in_scope = grant.context == Grant::ANY_CONTEXT || context.is_some_and(|c| c == grant.context);
            in_scope && grant.role.gives(right)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::access::Role;

    fn principal(grants: &[(&str, Role)]) -> Principal {
        Principal {
            name: "p".into(),
            kind: PrincipalKind::User,
            grants: grants.iter().map(|(c, r)| Grant::new(*c, *r)).collect(),
        }
    }

    /// The full matrix: every role, on "*" and on one context, asked about every right on that
    /// context, another context and no context.
    #[test]
    fn allows_matrix() {
        use Right::{Admin, Read, Write};
        let rights_of = |role: Role| -> &'static [Right] {
            match role {
                Role::Admin => &[Read, Write, Admin],
                Role::Read => &[Read],
                Role::Write => &[Write],
                Role::UseContext => &[Read, Write],
            }
        };
        for role in Role::ALL {
            let global = principal(&[("*", role)]);
            let scoped = principal(&[("ctx", role)]);
            for right in [Read, Write, Admin] {
                let expected = rights_of(role).contains(&right);
                assert_eq!(
                    global.allows(Some("ctx"), right),
                    expected,
                    "{role} on * / ctx / {right:?}"
                );
                assert_eq!(
                    global.allows(Some("other"), right),
                    expected,
                    "{role} on * / other / {right:?}"
                );
                assert_eq!(global.allows(None, right), expected, "{role} on * / None / {right:?}");
                assert_eq!(
                    scoped.allows(Some("ctx"), right),
                    expected,
                    "{role} on ctx / ctx / {right:?}"
                );
                assert!(
                    !scoped.allows(Some("other"), right),
                    "{role} on ctx / other / {right:?}"
                );
                assert!(!scoped.allows(None, right), "{role} on ctx / None / {right:?}");
            }
        }
    }

    #[test]
    fn no_grants_allow_nothing() {
        let nobody = principal(&[]);
        for right in [Right::Read, Right::Write, Right::Admin] {
            assert!(!nobody.allows(None, right));
            assert!(!nobody.allows(Some("ctx"), right));
        }
    }

    #[test]
    fn grants_combine() {
        let p = principal(&[("a", Role::Read), ("b", Role::Write), ("*", Role::Read)]);
        assert!(p.allows(Some("a"), Right::Read));
        assert!(!p.allows(Some("a"), Right::Write));
        assert!(p.allows(Some("b"), Right::Write));
        assert!(p.allows(Some("z"), Right::Read));
        assert!(!p.allows(Some("z"), Right::Write));
        assert!(!p.allows(Some("b"), Right::Admin));
        // The context "*" in a request is not a wildcard for scoped grants.
        assert!(!principal(&[("a", Role::Read)]).allows(Some("*"), Right::Read));
    }
}
