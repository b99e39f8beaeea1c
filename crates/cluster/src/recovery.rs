//! Axon Server's recovery file (`axoniq.axonserver.recoveryfile`, `recovery.json` in the start
//! directory by default): when the nodes of a cluster come back on other hosts or ports (a
//! whole-cluster restore onto new machines, say), each node is started with a file naming the
//! new addresses, because the address book it kept (replicated through `_admin`) still names the
//! old ones and `_admin` cannot elect a leader to tell it otherwise.
//!
//! The file is a JSON array of `{name, oldName?, hostName, internalHostName, grpcInternalPort,
//! grpcPort, httpPort}` (Axon's fields). At start, before any group opens, every entry is written
//! into this node's address book; a field left out keeps what the book had. While this process
//! runs, `_admin` entries replayed from the log cannot put back an older value of a field the file
//! gave.
//! Once a leader is elected each node announces its own live addresses through `_admin`
//! (`formation.rs`), so the whole cluster's books follow and the file can be removed. Renaming a
//! node (`oldName`) is refused: Raft node ids are derived from names.

use std::collections::BTreeSet;
use std::path::Path;

use serde::Deserialize;

use crate::types::NodeAddress;

/// One entry of the recovery file.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Recovered {
    pub name: String,
    #[serde(default)]
    pub old_name: Option<String>,
    #[serde(default)]
    pub host_name: Option<String>,
    #[serde(default)]
    pub internal_host_name: Option<String>,
    #[serde(default)]
    pub grpc_internal_port: Option<u16>,
    #[serde(default)]
    pub grpc_port: Option<u16>,
    #[serde(default)]
    pub http_port: Option<u16>,
}

/// The entries of the recovery file at `path`, or `None` when there is no such file.
pub fn read(path: &Path) -> Result<Option<Vec<Recovered>>, String> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot read it: {e}")),
    };
    serde_json::from_str(&text).map(Some).map_err(|e| {
        format!(
            "{e}; expected a JSON array of {{\"name\", \"hostName\", \"internalHostName\", \
             \"grpcInternalPort\", \"grpcPort\", \"httpPort\"}}"
        )
    })
}

/// The addresses `entries` give, each over what `known` (the address book) recorded for the
/// same name. Refuses renames, duplicates, empty names or hosts, port 0, and an entry for a
/// node the book does not know that leaves a field out.
pub fn addresses(entries: &[Recovered], known: &[NodeAddress]) -> Result<Vec<NodeAddress>, String> {
    let mut seen = BTreeSet::new();
    let mut out = Vec::with_capacity(entries.len());
    for entry in entries {
        let name = entry.name.trim();
        if name.is_empty() {
            return Err("an entry has no name".into());
        }
        if let Some(old) = &entry.old_name
            && old != name
        {
            return Err(format!(
                "entry {name} renames node {old}: renaming is not supported (Raft node ids are derived \
                 from names); give the node its old name"
            ));
        }
        if !seen.insert(name.to_string()) {
            return Err(format!("node {name} appears twice"));
        }
        let base = known.iter().find(|n| n.name == name);
        let missing =
            |field: &str| format!("node {name} is not in this node's address book, so its entry needs \"{field}\"");
        let host = |given: &Option<String>, recorded: Option<&String>, field: &str| match given
            .as_deref()
            .map(str::trim)
            .or(recorded.map(String::as_str))
        {
            Some("") => Err(format!("node {name}: \"{field}\" is empty")),
            Some(host) => Ok(host.to_string()),
            None => Err(missing(field)),
        };
        let port = |given: Option<u16>, recorded: Option<u16>, field: &str| match given.or(recorded) {
            Some(0) => Err(format!("node {name}: \"{field}\" must be between 1 and 65535")),
            Some(port) => Ok(port),
            None => Err(missing(field)),
        };
        out.push(NodeAddress {
            name: name.to_string(),
            host_name: host(&entry.host_name, base.map(|b| &b.host_name), "hostName")?,
            internal_host_name: host(
                &entry.internal_host_name,
                base.map(|b| &b.internal_host_name),
                "internalHostName",
            )?,
            internal_port: port(
                entry.grpc_internal_port,
                base.map(|b| b.internal_port),
                "grpcInternalPort",
            )?,
            grpc_port: port(entry.grpc_port, base.map(|b| b.grpc_port), "grpcPort")?,
            http_port: port(entry.http_port, base.map(|b| b.http_port), "httpPort")?,
        });
    }
    Ok(out)
}

/// `address` with the fields `entry` gives in place of its own: an address replayed from the
/// log cannot undo what the file said, while what the file left out (ports chosen at start,
/// say) follows the log.
pub fn patch(address: &NodeAddress, entry: &Recovered) -> NodeAddress {
    NodeAddress {
        name: address.name.clone(),
        host_name: entry.host_name.clone().unwrap_or_else(|| address.host_name.clone()),
        internal_host_name: entry
            .internal_host_name
            .clone()
            .unwrap_or_else(|| address.internal_host_name.clone()),
        internal_port: entry.grpc_internal_port.unwrap_or(address.internal_port),
        grpc_port: entry.grpc_port.unwrap_or(address.grpc_port),
        http_port: entry.http_port.unwrap_or(address.http_port),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn book() -> Vec<NodeAddress> {
        vec![NodeAddress {
            name: "node-1".into(),
            internal_host_name: "old-1".into(),
            internal_port: 8224,
            host_name: "old-1".into(),
            grpc_port: 8124,
            http_port: 8024,
        }]
    }

    fn parse(json: &str) -> Vec<Recovered> {
        serde_json::from_str(json).expect("entries")
    }

    #[test]
    fn axons_file_moves_a_known_node_and_keeps_what_it_leaves_out() {
        let entries = parse(
            r#"[{"name": "node-1", "hostName": "new-1", "internalHostName": "new-1-internal",
                 "grpcInternalPort": 9224}]"#,
        );
        let moved = addresses(&entries, &book()).expect("addresses");
        assert_eq!(
            moved,
            [NodeAddress {
                name: "node-1".into(),
                internal_host_name: "new-1-internal".into(),
                internal_port: 9224,
                host_name: "new-1".into(),
                grpc_port: 8124,
                http_port: 8024,
            }]
        );
    }

    #[test]
    fn a_replayed_address_keeps_what_the_file_gave_and_takes_the_rest() {
        let entry = &parse(r#"[{"name": "node-1", "internalHostName": "new-1", "grpcInternalPort": 9224}]"#)[0];
        let replayed = NodeAddress {
            grpc_port: 18124,
            ..book()[0].clone()
        };
        let patched = patch(&replayed, entry);
        assert_eq!(
            (patched.internal_host_name.as_str(), patched.internal_port),
            ("new-1", 9224)
        );
        assert_eq!((patched.host_name.as_str(), patched.grpc_port), ("old-1", 18124));
    }

    #[test]
    fn an_unknown_node_needs_every_field() {
        let entries = parse(r#"[{"name": "node-9", "hostName": "h", "internalHostName": "h", "grpcPort": 1}]"#);
        let e = addresses(&entries, &book()).expect_err("incomplete");
        assert!(e.contains("node-9") && e.contains("grpcInternalPort"), "{e}");
        let entries = parse(
            r#"[{"name": "node-9", "hostName": "h", "internalHostName": "h", "grpcInternalPort": 2,
                 "grpcPort": 1, "httpPort": 3}]"#,
        );
        assert_eq!(addresses(&entries, &book()).expect("complete")[0].http_port, 3);
    }

    #[test]
    fn renames_duplicates_and_bad_values_are_refused() {
        for (json, says) in [
            (
                r#"[{"name": "node-2", "oldName": "node-1"}]"#,
                "renaming is not supported",
            ),
            (r#"[{"name": "node-1"}, {"name": "node-1"}]"#, "twice"),
            (r#"[{"name": " "}]"#, "no name"),
            (r#"[{"name": "node-1", "hostName": ""}]"#, "empty"),
            (r#"[{"name": "node-1", "httpPort": 0}]"#, "between 1 and 65535"),
        ] {
            let e = addresses(&parse(json), &book()).expect_err(json);
            assert!(e.contains(says), "{json}: {e}");
        }
        // The same name as oldName is no rename.
        addresses(&parse(r#"[{"name": "node-1", "oldName": "node-1"}]"#), &book()).expect("same name");
    }

    #[test]
    fn no_file_is_no_recovery_and_a_malformed_one_says_what_it_expected() {
        let dir = tempfile::tempdir().expect("dir");
        assert_eq!(read(&dir.path().join("recovery.json")).expect("none"), None);
        let path = dir.path().join("bad.json");
        std::fs::write(&path, r#"{"name": "node-1"}"#).expect("write");
        let e = read(&path).expect_err("an object, not an array");
        assert!(e.contains("JSON array"), "{e}");
    }
}
