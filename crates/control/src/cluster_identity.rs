//! This node's identity in a cluster, node-local and never replicated: the cluster's id, this
//! node's name, and, once the node was restored from a backup, the id of the cluster the backup
//! came from. A restored node's vote and log are behind its old cluster's, so it must not rejoin
//! that cluster under its old identity: it re-seeds a new cluster instead, and this row refuses the
//! old id for good.

use rusqlite::{OptionalExtension, params};
use serde::{Deserialize, Serialize};

use crate::db::{ControlDb, write_tx};
use crate::error::{ControlError, Result};
use crate::validate::validate_name;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterIdentity {
    pub cluster_id: String,
    pub node_name: String,
    /// The cluster this node's restored backup came from; this node may not join it again.
    pub restored_from: Option<String>,
}

impl ControlDb {
    /// This node's identity, or `None` before it belonged to any cluster.
    pub fn cluster_identity(&self) -> Result<Option<ClusterIdentity>> {
        Ok(self
            .lock()
            .query_row(
                "SELECT cluster_id, node_name, restored_from FROM cluster_identity WHERE singleton = 1",
                [],
                |row| {
                    Ok(ClusterIdentity {
                        cluster_id: row.get(0)?,
                        node_name: row.get(1)?,
                        restored_from: row.get(2)?,
                    })
                },
            )
            .optional()?)
    }

    /// Records the cluster this node belongs to and its name there, keeping any `restored_from`.
    /// Refused ([`ControlError::Invalid`], nothing changed) for the cluster this node was restored
    /// from.
    pub fn set_cluster_identity(&self, cluster_id: &str, node_name: &str) -> Result<()> {
        validate_name("cluster id", cluster_id)?;
        validate_name("node", node_name)?;
        let mut conn = self.lock();
        let tx = write_tx(&mut conn)?;
        let restored_from: Option<String> = tx
            .query_row(
                "SELECT restored_from FROM cluster_identity WHERE singleton = 1",
                [],
                |row| row.get(0),
            )
            .optional()?
            .flatten();
        if restored_from.as_deref() == Some(cluster_id) {
            return Err(ControlError::Invalid(format!(
                "this node was restored from a backup of cluster {cluster_id:?} and must not rejoin it; \
                 re-seed a new cluster from it instead"
            )));
        }
        tx.execute(
            "INSERT INTO cluster_identity (singleton, cluster_id, node_name) VALUES (1, ?1, ?2)
             ON CONFLICT (singleton) DO UPDATE SET cluster_id = excluded.cluster_id,
                                                   node_name = excluded.node_name",
            params![cluster_id, node_name],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Records that this node was restored from a backup of cluster `old_cluster_id`, so that
    /// [`ControlDb::set_cluster_identity`] refuses that cluster from now on.
    /// [`ControlError::NotFound`] if the node has no identity (it never belonged to a cluster).
    pub fn mark_restored(&self, old_cluster_id: &str) -> Result<()> {
        validate_name("cluster id", old_cluster_id)?;
        let updated = self.lock().execute(
            "UPDATE cluster_identity SET restored_from = ?1 WHERE singleton = 1",
            [old_cluster_id],
        )?;
        if updated == 0 {
            return Err(ControlError::NotFound {
                kind: "cluster identity",
                name: old_cluster_id.into(),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::tests::open_temp;

    fn identity(cluster_id: &str, node_name: &str, restored_from: Option<&str>) -> ClusterIdentity {
        ClusterIdentity {
            cluster_id: cluster_id.into(),
            node_name: node_name.into(),
            restored_from: restored_from.map(str::to_string),
        }
    }

    #[test]
    fn a_node_has_no_identity_until_one_is_set() {
        let (_dir, db) = open_temp();
        assert_eq!(db.cluster_identity().expect("read"), None);
        db.set_cluster_identity("cluster-1", "node-a").expect("set");
        assert_eq!(
            db.cluster_identity().expect("read"),
            Some(identity("cluster-1", "node-a", None))
        );
        db.set_cluster_identity("cluster-2", "node-b").expect("set again");
        assert_eq!(
            db.cluster_identity().expect("read"),
            Some(identity("cluster-2", "node-b", None))
        );
    }

    #[test]
    fn a_restored_node_may_not_take_its_old_cluster_id_again() {
        let (_dir, db) = open_temp();
        db.set_cluster_identity("old", "node-a").expect("set");
        db.mark_restored("old").expect("mark");
        assert_eq!(
            db.cluster_identity().expect("read"),
            Some(identity("old", "node-a", Some("old")))
        );
        let result = db.set_cluster_identity("old", "node-a");
        assert!(
            matches!(result, Err(ControlError::Invalid(ref m)) if m.contains("restored")),
            "{result:?}"
        );
        assert_eq!(
            db.cluster_identity().expect("read"),
            Some(identity("old", "node-a", Some("old")))
        );

        db.set_cluster_identity("new", "node-a").expect("a new cluster");
        let result = db.set_cluster_identity("old", "node-a");
        assert!(
            matches!(result, Err(ControlError::Invalid(_))),
            "still refused after re-seeding"
        );
        assert_eq!(
            db.cluster_identity().expect("read"),
            Some(identity("new", "node-a", Some("old")))
        );
    }

    #[test]
    fn marking_a_node_without_identity_is_not_found() {
        let (_dir, db) = open_temp();
        let result = db.mark_restored("old");
        assert!(
            matches!(
                result,
                Err(ControlError::NotFound {
                    kind: "cluster identity",
                    ..
                })
            ),
            "{result:?}"
        );
        assert_eq!(db.cluster_identity().expect("read"), None);
    }

    #[test]
    fn bad_identities_are_invalid_and_store_nothing() {
        let (_dir, db) = open_temp();
        for (cluster_id, node_name) in [("", "a"), ("c", ""), ("c\n", "a"), ("c", "a\u{7f}")] {
            let result = db.set_cluster_identity(cluster_id, node_name);
            assert!(
                matches!(result, Err(ControlError::Invalid(_))),
                "{cluster_id:?} {node_name:?}"
            );
        }
        assert_eq!(db.cluster_identity().expect("read"), None);
        db.set_cluster_identity("c", "a").expect("set");
        assert!(matches!(db.mark_restored(""), Err(ControlError::Invalid(_))));
        assert_eq!(db.cluster_identity().expect("read"), Some(identity("c", "a", None)));
    }
}
