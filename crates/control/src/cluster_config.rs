//! The cluster's configuration, as the `_admin` replication group replicates it to every node and
//! each node applies it to its own control database: the nodes, the replication groups with their
//! members and roles, and the group each context belongs to.
//!
//! Applying a replicated change may be repeated after a crash (entries between the applied and
//! the committed position are applied again), so the writes that can be idempotent are:
//! upserting a node, adding a member (which also sets its role), removing and deleting. Creating
//! a group that exists reports [`ControlError::AlreadyExists`], which a replaying caller ignores.
//!
//! A group's Raft state is node-local and lives apart, in `raft_state.rs`: deleting a group from
//! the configuration does not touch it.

use std::collections::BTreeMap;

use rusqlite::{Connection, OptionalExtension, Row, Transaction, params};
use serde::{Deserialize, Serialize};

use crate::db::{ControlDb, now_ms, write_tx};
use crate::error::{ControlError, Result};
use crate::validate::{validate_context_name, validate_host_name, validate_name, validate_replication_group_name};

/// Axon Server's replication roles, by the numbers its API and control database use. There is no
/// role 1 (Axon retired it).
pub const REPLICATION_ROLES: [(i32, &str); 5] = [
    (0, "PRIMARY"),
    (2, "ACTIVE_BACKUP"),
    (3, "PASSIVE_BACKUP"),
    (4, "MESSAGING_ONLY"),
    (5, "SECONDARY"),
];

/// The name of an Axon replication role number, or `None` for a number that is no role.
pub fn replication_role_name(role: i32) -> Option<&'static str> {
    REPLICATION_ROLES
        .iter()
        .find(|(number, _)| *number == role)
        .map(|(_, name)| *name)
}

/// A node of the cluster and its addresses: `internal_*` for the other nodes (replication),
/// the others for clients.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterNode {
    pub name: String,
    pub internal_host_name: String,
    pub internal_port: u16,
    pub host_name: String,
    pub grpc_port: u16,
    pub http_port: u16,
}

/// A replication group of the cluster and its members as (node name, role number), sorted by node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReplicationGroupRecord {
    pub name: String,
    pub created_at_ms: i64,
    pub members: Vec<(String, i32)>,
}

const SELECT_NODE: &str = "SELECT name, internal_host_name, internal_port, host_name, grpc_port, http_port
    FROM cluster_nodes";

impl ControlDb {
    /// Adds the node or replaces its addresses. Returns whether it was new.
    pub fn upsert_cluster_node(&self, node: &ClusterNode) -> Result<bool> {
        validate_name("node", &node.name)?;
        validate_host_name("internal host name", &node.internal_host_name)?;
        validate_host_name("host name", &node.host_name)?;
        for (what, port) in [
            ("internal port", node.internal_port),
            ("gRPC port", node.grpc_port),
            ("HTTP port", node.http_port),
        ] {
            if port == 0 {
                return Err(ControlError::Invalid(format!(
                    "{what} of node {:?} must be between 1 and 65535, got 0",
                    node.name
                )));
            }
        }
        let mut conn = self.lock();
        let tx = write_tx(&mut conn)?;
        let existed = cluster_node_exists(&tx, &node.name)?;
        tx.execute(
            "INSERT INTO cluster_nodes (name, internal_host_name, internal_port, host_name, grpc_port, http_port)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)
             ON CONFLICT (name) DO UPDATE SET internal_host_name = excluded.internal_host_name,
                 internal_port = excluded.internal_port, host_name = excluded.host_name,
                 grpc_port = excluded.grpc_port, http_port = excluded.http_port",
            params![
                node.name,
                node.internal_host_name,
                node.internal_port,
                node.host_name,
                node.grpc_port,
                node.http_port
            ],
        )?;
        tx.commit()?;
        Ok(!existed)
    }

    /// Deletes the node. Returns whether it existed. Refused ([`ControlError::Invalid`]) while the
    /// node is a member of a replication group: remove it from each first.
    pub fn delete_cluster_node(&self, name: &str) -> Result<bool> {
        let mut conn = self.lock();
        let tx = write_tx(&mut conn)?;
        let groups = strings(
            &tx,
            "SELECT replication_group FROM replication_group_members WHERE node = ?1 ORDER BY replication_group",
            name,
        )?;
        if !groups.is_empty() {
            return Err(ControlError::Invalid(format!(
                "node {name:?} is still a member of the replication groups {groups:?}; remove it from them first"
            )));
        }
        let deleted = tx.execute("DELETE FROM cluster_nodes WHERE name = ?1", [name])?;
        tx.commit()?;
        Ok(deleted == 1)
    }

    /// Every node of the cluster, sorted by name.
    pub fn cluster_nodes(&self) -> Result<Vec<ClusterNode>> {
        let conn = self.lock();
        let mut statement = conn.prepare(&format!("{SELECT_NODE} ORDER BY name"))?;
        let nodes = statement.query_map([], read_node)?;
        Ok(nodes.collect::<rusqlite::Result<_>>()?)
    }

    pub fn cluster_node(&self, name: &str) -> Result<Option<ClusterNode>> {
        Ok(self
            .lock()
            .query_row(&format!("{SELECT_NODE} WHERE name = ?1"), [name], read_node)
            .optional()?)
    }

    /// Creates a replication group with its members, given as (node name, role number); every node
    /// must be a cluster node. [`ControlError::AlreadyExists`] if the group exists.
    pub fn create_replication_group(&self, name: &str, members: &[(String, i32)]) -> Result<ReplicationGroupRecord> {
        validate_replication_group_name(name)?;
        let mut sorted = BTreeMap::new();
        for (node, role) in members {
            validate_role(name, node, *role)?;
            if sorted.insert(node.clone(), *role).is_some() {
                return Err(ControlError::Invalid(format!(
                    "node {node:?} is named twice in the members of replication group {name:?}"
                )));
            }
        }
        let created_at_ms = now_ms();
        let mut conn = self.lock();
        let tx = write_tx(&mut conn)?;
        let inserted = tx.execute(
            "INSERT INTO replication_group_configs (name, created_at_ms) VALUES (?1, ?2)
             ON CONFLICT (name) DO NOTHING",
            params![name, created_at_ms],
        )?;
        if inserted == 0 {
            return Err(ControlError::AlreadyExists {
                kind: "replication group",
                name: name.into(),
            });
        }
        for (node, role) in &sorted {
            require_cluster_node(&tx, node)?;
            tx.execute(
                "INSERT INTO replication_group_members (replication_group, node, role) VALUES (?1, ?2, ?3)",
                params![name, node, role],
            )?;
        }
        tx.commit()?;
        Ok(ReplicationGroupRecord {
            name: name.into(),
            created_at_ms,
            members: sorted.into_iter().collect(),
        })
    }

    /// Adds the cluster node to the group with `role`, or gives a member that role. Returns
    /// whether the node was new to the group.
    pub fn add_replication_group_member(&self, group: &str, node: &str, role: i32) -> Result<bool> {
        validate_role(group, node, role)?;
        let mut conn = self.lock();
        let tx = write_tx(&mut conn)?;
        require_replication_group(&tx, group)?;
        require_cluster_node(&tx, node)?;
        let was_member = tx
            .query_row(
                "SELECT 1 FROM replication_group_members WHERE replication_group = ?1 AND node = ?2",
                [group, node],
                |_| Ok(()),
            )
            .optional()?
            .is_some();
        tx.execute(
            "INSERT INTO replication_group_members (replication_group, node, role) VALUES (?1, ?2, ?3)
             ON CONFLICT (replication_group, node) DO UPDATE SET role = excluded.role",
            params![group, node, role],
        )?;
        tx.commit()?;
        Ok(!was_member)
    }

    /// Removes the node from the group. Returns whether it was a member.
    pub fn remove_replication_group_member(&self, group: &str, node: &str) -> Result<bool> {
        let deleted = self.lock().execute(
            "DELETE FROM replication_group_members WHERE replication_group = ?1 AND node = ?2",
            [group, node],
        )?;
        Ok(deleted == 1)
    }

    /// Deletes the group and its members from the configuration. Returns whether it existed.
    /// Refused ([`ControlError::Invalid`]) while a context belongs to it: delete or move those
    /// first. The group's Raft state on this node is not touched.
    pub fn delete_replication_group(&self, name: &str) -> Result<bool> {
        let mut conn = self.lock();
        let tx = write_tx(&mut conn)?;
        let contexts = contexts_of(&tx, name)?;
        if !contexts.is_empty() {
            return Err(ControlError::Invalid(format!(
                "replication group {name:?} still holds the contexts {contexts:?}; delete them first"
            )));
        }
        let deleted = tx.execute("DELETE FROM replication_group_configs WHERE name = ?1", [name])?;
        tx.commit()?;
        Ok(deleted == 1)
    }

    /// Forgets the cluster this node was in: every node, group and member, and every raft
    /// state, in one transaction (contexts stay, no longer placed in a group). What a node
    /// restored from a backup does before it re-seeds a new cluster; `restored_from` stays.
    pub fn forget_cluster(&self) -> Result<()> {
        let mut conn = self.lock();
        let tx = write_tx(&mut conn)?;
        tx.execute("UPDATE contexts SET replication_group = NULL", [])?;
        tx.execute("DELETE FROM replication_group_members", [])?;
        tx.execute("DELETE FROM replication_group_configs", [])?;
        tx.execute("DELETE FROM cluster_nodes", [])?;
        tx.execute("DELETE FROM replication_groups", [])?;
        tx.commit()?;
        Ok(())
    }

    pub fn replication_group(&self, name: &str) -> Result<Option<ReplicationGroupRecord>> {
        let conn = self.lock();
        let created_at_ms: Option<i64> = conn
            .query_row(
                "SELECT created_at_ms FROM replication_group_configs WHERE name = ?1",
                [name],
                |row| row.get(0),
            )
            .optional()?;
        let Some(created_at_ms) = created_at_ms else {
            return Ok(None);
        };
        let mut statement = conn
            .prepare("SELECT node, role FROM replication_group_members WHERE replication_group = ?1 ORDER BY node")?;
        let rows = statement.query_map([name], |row| Ok((row.get::<_, String>(0)?, row.get::<_, i32>(1)?)))?;
        let mut members = Vec::new();
        for row in rows {
            let (node, role) = row?;
            members.push((node, stored_role(name, role)?));
        }
        Ok(Some(ReplicationGroupRecord {
            name: name.into(),
            created_at_ms,
            members,
        }))
    }

    /// Every replication group of the cluster's configuration with its members, sorted by name.
    pub fn replication_groups_configured(&self) -> Result<Vec<ReplicationGroupRecord>> {
        let conn = self.lock();
        let mut groups: BTreeMap<String, ReplicationGroupRecord> = BTreeMap::new();
        let mut statement = conn.prepare("SELECT name, created_at_ms FROM replication_group_configs")?;
        for row in statement.query_map([], |row| Ok((row.get::<_, String>(0)?, row.get::<_, i64>(1)?)))? {
            let (name, created_at_ms) = row?;
            let record = ReplicationGroupRecord {
                name: name.clone(),
                created_at_ms,
                members: Vec::new(),
            };
            groups.insert(name, record);
        }
        let mut statement = conn.prepare(
            "SELECT replication_group, node, role FROM replication_group_members ORDER BY replication_group, node",
        )?;
        let rows = statement.query_map([], |row| {
            Ok((
                row.get::<_, String>(0)?,
                row.get::<_, String>(1)?,
                row.get::<_, i32>(2)?,
            ))
        })?;
        for row in rows {
            let (group, node, role) = row?;
            let role = stored_role(&group, role)?;
            let record = groups.get_mut(&group).ok_or_else(|| {
                ControlError::Corrupt(format!("member {node:?} of unknown replication group {group:?}"))
            })?;
            record.members.push((node, role));
        }
        Ok(groups.into_values().collect())
    }

    /// Puts the context in a replication group of the configuration.
    pub fn set_context_replication_group(&self, context: &str, group: &str) -> Result<()> {
        validate_context_name(context)?;
        validate_replication_group_name(group)?;
        let mut conn = self.lock();
        let tx = write_tx(&mut conn)?;
        require_replication_group(&tx, group)?;
        let updated = tx.execute(
            "UPDATE contexts SET replication_group = ?2 WHERE name = ?1",
            [context, group],
        )?;
        if updated == 0 {
            return Err(ControlError::NotFound {
                kind: "context",
                name: context.into(),
            });
        }
        tx.commit()?;
        Ok(())
    }

    /// The replication group of the context, or `None` if there is no such context. A context
    /// created before clustering is in the group of its own name.
    pub fn context_replication_group(&self, context: &str) -> Result<Option<String>> {
        Ok(self
            .lock()
            .query_row(
                "SELECT coalesce(replication_group, name) FROM contexts WHERE name = ?1",
                [context],
                |row| row.get(0),
            )
            .optional()?)
    }

    /// The contexts in the replication group, sorted (those from before clustering included).
    pub fn contexts_of_replication_group(&self, group: &str) -> Result<Vec<String>> {
        contexts_of(&self.lock(), group)
    }
}

fn contexts_of(conn: &Connection, group: &str) -> Result<Vec<String>> {
    strings(
        conn,
        "SELECT name FROM contexts WHERE coalesce(replication_group, name) = ?1 ORDER BY name",
        group,
    )
}

/// The first column of every row `query` (one `?1` parameter) selects.
fn strings(conn: &Connection, query: &str, parameter: &str) -> Result<Vec<String>> {
    let mut statement = conn.prepare(query)?;
    let rows = statement.query_map([parameter], |row| row.get(0))?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

fn read_node(row: &Row<'_>) -> rusqlite::Result<ClusterNode> {
    Ok(ClusterNode {
        name: row.get(0)?,
        internal_host_name: row.get(1)?,
        internal_port: row.get(2)?,
        host_name: row.get(3)?,
        grpc_port: row.get(4)?,
        http_port: row.get(5)?,
    })
}

fn cluster_node_exists(tx: &Transaction<'_>, name: &str) -> Result<bool> {
    Ok(tx
        .query_row("SELECT 1 FROM cluster_nodes WHERE name = ?1", [name], |_| Ok(()))
        .optional()?
        .is_some())
}

fn require_cluster_node(tx: &Transaction<'_>, name: &str) -> Result<()> {
    if cluster_node_exists(tx, name)? {
        return Ok(());
    }
    Err(ControlError::NotFound {
        kind: "cluster node",
        name: name.into(),
    })
}

fn require_replication_group(tx: &Transaction<'_>, name: &str) -> Result<()> {
    let exists = tx
        .query_row(
            "SELECT 1 FROM replication_group_configs WHERE name = ?1",
            [name],
            |_| Ok(()),
        )
        .optional()?
        .is_some();
    if exists {
        return Ok(());
    }
    Err(ControlError::NotFound {
        kind: "replication group",
        name: name.into(),
    })
}

fn validate_role(group: &str, node: &str, role: i32) -> Result<()> {
    validate_name("node", node)?;
    if replication_role_name(role).is_none() {
        return Err(ControlError::Invalid(format!(
            "role {role} of node {node:?} in replication group {group:?} is not a role; the roles are {}",
            REPLICATION_ROLES
                .iter()
                .map(|(number, name)| format!("{number} ({name})"))
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    Ok(())
}

/// A role read back; the CHECK constraint makes an unknown one a corruption.
fn stored_role(group: &str, role: i32) -> Result<i32> {
    match replication_role_name(role) {
        Some(_) => Ok(role),
        None => Err(ControlError::Corrupt(format!(
            "unknown role {role} stored in replication group {group:?}"
        ))),
    }
}

#[cfg(test)]
mod forget_tests {
    use crate::db::tests::open_temp;
    use crate::{ClusterNode, LogPosition, Vote};

    #[test]
    fn forgetting_the_cluster_keeps_contexts_and_drops_every_trace_of_raft() {
        let (_dir, db) = open_temp();
        db.create_context("orders", &Default::default()).expect("context");
        db.upsert_cluster_node(&ClusterNode {
            name: "n1".into(),
            internal_host_name: "h".into(),
            internal_port: 8224,
            host_name: "h".into(),
            grpc_port: 8124,
            http_port: 8024,
        })
        .expect("node");
        db.create_replication_group("orders", &[("n1".into(), 0)])
            .expect("group");
        db.set_context_replication_group("orders", "orders").expect("placed");
        db.save_vote(
            "orders",
            &Vote {
                term: 3,
                node: Some("1".into()),
                committed: true,
            },
        )
        .expect("vote");
        db.save_applied("orders", LogPosition { term: 3, index: 9 }, "{}")
            .expect("applied");
        db.forget_cluster().expect("forget");
        assert!(db.context("orders").expect("read").is_some());
        assert_eq!(
            db.context_replication_group("orders").expect("read").as_deref(),
            Some("orders")
        );
        assert!(db.cluster_nodes().expect("nodes").is_empty());
        assert!(db.replication_group("orders").expect("group").is_none());
        assert!(db.raft_state("orders").expect("state").is_none());
        assert!(db.raft_groups().expect("groups").is_empty());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::tests::open_temp;

    fn node(name: &str, port: u16) -> ClusterNode {
        ClusterNode {
            name: name.into(),
            internal_host_name: format!("{name}.internal"),
            internal_port: port,
            host_name: format!("{name}.example.com"),
            grpc_port: port + 1,
            http_port: port + 2,
        }
    }

    fn members(pairs: &[(&str, i32)]) -> Vec<(String, i32)> {
        pairs.iter().map(|(node, role)| (node.to_string(), *role)).collect()
    }

    /// Three nodes, and the group "orders" with two of them.
    fn configured() -> (tempfile::TempDir, ControlDb) {
        let (dir, db) = open_temp();
        for (name, port) in [("a", 8000), ("b", 8100), ("c", 8200)] {
            db.upsert_cluster_node(&node(name, port)).expect("node");
        }
        db.create_replication_group("orders", &members(&[("b", 2), ("a", 0)]))
            .expect("group");
        (dir, db)
    }

    #[test]
    fn role_numbers_are_axons() {
        assert_eq!(replication_role_name(0), Some("PRIMARY"));
        assert_eq!(replication_role_name(5), Some("SECONDARY"));
        assert_eq!(replication_role_name(1), None);
        assert_eq!(replication_role_name(-1), None);
    }

    #[test]
    fn nodes_round_trip_and_upsert_replaces_addresses() {
        let (_dir, db) = open_temp();
        assert!(db.upsert_cluster_node(&node("b", 8100)).expect("new"));
        assert!(db.upsert_cluster_node(&node("a", 8000)).expect("new"));
        let moved = node("a", 9000);
        assert!(!db.upsert_cluster_node(&moved).expect("replaced"));
        assert_eq!(db.cluster_node("a").expect("get"), Some(moved.clone()));
        assert_eq!(db.cluster_node("z").expect("get"), None);
        assert_eq!(db.cluster_nodes().expect("list"), [moved, node("b", 8100)]);
        assert!(db.delete_cluster_node("b").expect("delete"));
        assert!(!db.delete_cluster_node("b").expect("delete again"));
        assert_eq!(db.cluster_nodes().expect("list").len(), 1);
    }

    #[test]
    fn bad_nodes_are_invalid_and_store_nothing() {
        let (_dir, db) = open_temp();
        let bad_nodes = [
            ClusterNode {
                name: String::new(),
                ..node("a", 1)
            },
            ClusterNode {
                name: "a\nb".into(),
                ..node("a", 1)
            },
            ClusterNode {
                internal_host_name: "two words".into(),
                ..node("a", 1)
            },
            ClusterNode {
                host_name: String::new(),
                ..node("a", 1)
            },
            ClusterNode {
                internal_port: 0,
                ..node("a", 1)
            },
            ClusterNode {
                grpc_port: 0,
                ..node("a", 1)
            },
            ClusterNode {
                http_port: 0,
                ..node("a", 1)
            },
        ];
        for bad in bad_nodes {
            let result = db.upsert_cluster_node(&bad);
            assert!(matches!(result, Err(ControlError::Invalid(_))), "{bad:?}: {result:?}");
        }
        assert!(db.cluster_nodes().expect("list").is_empty());
    }

    #[test]
    fn a_node_in_a_group_cannot_be_deleted() {
        let (_dir, db) = configured();
        let result = db.delete_cluster_node("a");
        assert!(
            matches!(result, Err(ControlError::Invalid(ref m)) if m.contains("orders")),
            "{result:?}"
        );
        assert!(db.cluster_node("a").expect("get").is_some());
        assert!(db.remove_replication_group_member("orders", "a").expect("remove"));
        assert!(db.delete_cluster_node("a").expect("delete"));
    }

    #[test]
    fn groups_round_trip_with_members_sorted_by_node() {
        let (_dir, db) = configured();
        db.create_replication_group("_admin", &members(&[("c", 0), ("a", 0), ("b", 0)]))
            .expect("admin");
        let orders = db.replication_group("orders").expect("get").expect("present");
        assert_eq!(orders.members, members(&[("a", 0), ("b", 2)]));
        assert!(orders.created_at_ms > 0);
        assert_eq!(db.replication_group("missing").expect("get"), None);
        let all = db.replication_groups_configured().expect("list");
        let names: Vec<_> = all.iter().map(|group| group.name.as_str()).collect();
        assert_eq!(names, ["_admin", "orders"]);
        assert_eq!(all[0].members, members(&[("a", 0), ("b", 0), ("c", 0)]));
        assert_eq!(all[1], orders);
    }

    #[test]
    fn creating_a_group_twice_is_already_exists_and_keeps_the_first() {
        let (_dir, db) = configured();
        let result = db.create_replication_group("orders", &members(&[("c", 0)]));
        assert!(
            matches!(
                result,
                Err(ControlError::AlreadyExists {
                    kind: "replication group",
                    ..
                })
            ),
            "{result:?}"
        );
        let orders = db.replication_group("orders").expect("get").expect("present");
        assert_eq!(orders.members, members(&[("a", 0), ("b", 2)]));
    }

    #[test]
    fn a_group_with_bad_members_is_refused_and_not_created() {
        let (_dir, db) = configured();
        let cases = [
            members(&[("a", 1)]),
            members(&[("a", 6)]),
            members(&[("a", 0), ("a", 2)]),
            members(&[("", 0)]),
        ];
        for bad in cases {
            let result = db.create_replication_group("billing", &bad);
            assert!(matches!(result, Err(ControlError::Invalid(_))), "{bad:?}: {result:?}");
        }
        let result = db.create_replication_group("billing", &members(&[("a", 0), ("nobody", 0)]));
        assert!(
            matches!(result, Err(ControlError::NotFound { kind: "cluster node", ref name }) if name == "nobody"),
            "{result:?}"
        );
        for bad_name in ["", "_billing", "a b"] {
            let result = db.create_replication_group(bad_name, &[]);
            assert!(matches!(result, Err(ControlError::Invalid(_))), "{bad_name:?}");
        }
        assert_eq!(db.replication_group("billing").expect("get"), None);
        assert_eq!(db.replication_groups_configured().expect("list").len(), 1);
    }

    #[test]
    fn adding_a_member_twice_sets_its_role_and_removing_it_is_idempotent() {
        let (_dir, db) = configured();
        assert!(db.add_replication_group_member("orders", "c", 5).expect("add"));
        assert!(!db.add_replication_group_member("orders", "c", 3).expect("role change"));
        let orders = db.replication_group("orders").expect("get").expect("present");
        assert_eq!(orders.members, members(&[("a", 0), ("b", 2), ("c", 3)]));
        assert!(db.remove_replication_group_member("orders", "c").expect("remove"));
        assert!(!db.remove_replication_group_member("orders", "c").expect("remove again"));
    }

    #[test]
    fn adding_a_member_needs_a_known_group_node_and_role() {
        let (_dir, db) = configured();
        let not_found = |result: Result<bool>, kind: &str| {
            assert!(
                matches!(result, Err(ControlError::NotFound { kind: k, .. }) if k == kind),
                "{result:?}"
            );
        };
        not_found(db.add_replication_group_member("billing", "c", 0), "replication group");
        not_found(db.add_replication_group_member("orders", "nobody", 0), "cluster node");
        let result = db.add_replication_group_member("orders", "c", 1);
        assert!(
            matches!(result, Err(ControlError::Invalid(ref m)) if m.contains("0 (PRIMARY)")),
            "{result:?}"
        );
        let orders = db.replication_group("orders").expect("get").expect("present");
        assert_eq!(orders.members.len(), 2);
    }

    #[test]
    fn deleting_a_group_removes_its_members_but_not_its_raft_state() {
        let (_dir, db) = configured();
        db.save_committed("orders", None).expect("raft state");
        assert!(db.delete_replication_group("orders").expect("delete"));
        assert!(!db.delete_replication_group("orders").expect("delete again"));
        assert_eq!(db.replication_group("orders").expect("get"), None);
        let member_rows: i64 = db
            .lock()
            .query_row("SELECT count(*) FROM replication_group_members", [], |row| row.get(0))
            .expect("count");
        assert_eq!(member_rows, 0);
        assert!(db.raft_state("orders").expect("read").is_some());
        assert!(db.delete_cluster_node("a").expect("a is in no group now"));
    }

    #[test]
    fn contexts_from_before_clustering_are_in_the_group_of_their_own_name() {
        let (_dir, db) = configured();
        db.ensure_context("orders").expect("context");
        db.ensure_context("billing").expect("context");
        assert_eq!(
            db.context_replication_group("orders").expect("get").as_deref(),
            Some("orders")
        );
        assert_eq!(db.context_replication_group("missing").expect("get"), None);
        assert_eq!(db.contexts_of_replication_group("orders").expect("list"), ["orders"]);

        db.set_context_replication_group("billing", "orders").expect("set");
        assert_eq!(
            db.context_replication_group("billing").expect("get").as_deref(),
            Some("orders")
        );
        assert_eq!(
            db.contexts_of_replication_group("orders").expect("list"),
            ["billing", "orders"]
        );
        assert!(db.contexts_of_replication_group("billing").expect("list").is_empty());
    }

    #[test]
    fn a_context_goes_only_into_a_configured_group() {
        let (_dir, db) = configured();
        db.ensure_context("billing").expect("context");
        let result = db.set_context_replication_group("billing", "nowhere");
        assert!(
            matches!(
                result,
                Err(ControlError::NotFound {
                    kind: "replication group",
                    ..
                })
            ),
            "{result:?}"
        );
        let result = db.set_context_replication_group("missing", "orders");
        assert!(
            matches!(result, Err(ControlError::NotFound { kind: "context", .. })),
            "{result:?}"
        );
        assert!(matches!(
            db.set_context_replication_group("billing", "_x"),
            Err(ControlError::Invalid(_))
        ));
        assert_eq!(
            db.context_replication_group("billing").expect("get").as_deref(),
            Some("billing")
        );
    }

    #[test]
    fn a_group_holding_contexts_cannot_be_deleted() {
        let (_dir, db) = configured();
        db.ensure_context("billing").expect("context");
        db.set_context_replication_group("billing", "orders").expect("set");
        let result = db.delete_replication_group("orders");
        assert!(
            matches!(result, Err(ControlError::Invalid(ref m)) if m.contains("billing")),
            "{result:?}"
        );
        assert!(db.replication_group("orders").expect("get").is_some());
        assert!(db.delete_context("billing").expect("delete context"));
        assert!(db.delete_replication_group("orders").expect("delete group"));
    }
}
