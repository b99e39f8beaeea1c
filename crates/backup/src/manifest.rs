//! The manifest: what one backup run left in the target, cumulative over the runs before it,
//! self-checked by a SHA-256 over its own canonical form and chained to the previous run.
//! Layout and rules: docs/BACKUP.md.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The manifest format this code writes and reads.
pub const FORMAT: u32 = 1;
/// Where manifests live in the target.
pub const MANIFEST_PREFIX: &str = "manifests/";

/// The key of run `run`'s manifest.
pub fn manifest_key(run: u64) -> String {
    format!("{MANIFEST_PREFIX}{run:06}.json")
}

/// The run number of a manifest key, if it is one.
pub fn parse_manifest_key(key: &str) -> Option<u64> {
    let name = key.strip_prefix(MANIFEST_PREFIX)?.strip_suffix(".json")?;
    (name.len() == 6 && name.bytes().all(|b| b.is_ascii_digit()))
        .then(|| name.parse().ok())
        .flatten()
}

/// One file in the target.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FileEntry {
    /// Key in the target.
    pub path: String,
    pub size: u64,
    /// Lower-case hex SHA-256 of the content.
    pub sha256: String,
}

/// A segment's data file and its index and bloom files.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SegmentEntry {
    /// The segment number: its first token, as in its file name.
    pub segment: u64,
    pub first_token: u64,
    /// Token of its last event; `None` for a segment without events.
    pub last_token: Option<u64>,
    /// The data file first, then the index and bloom files when there are any.
    pub files: Vec<FileEntry>,
}

/// One type (events or snapshots) of one context.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FamilyEntry {
    /// The marker for the next run: the newest closed segment in the backup, or -1.
    pub last_closed_segment: i64,
    /// Closed segments, oldest first.
    pub closed: Vec<SegmentEntry>,
    /// The active segment as copied by this run (overwritten by every run).
    pub active: Option<SegmentEntry>,
}

impl FamilyEntry {
    /// The last token the backup holds for this type.
    pub fn last_token(&self) -> Option<u64> {
        self.active
            .as_ref()
            .and_then(|a| a.last_token)
            .or_else(|| self.closed.iter().rev().find_map(|s| s.last_token))
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContextEntry {
    /// The last event token the backup covers, -1 when it holds no event.
    pub last_token: i64,
    pub events: FamilyEntry,
    pub snapshots: FamilyEntry,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServerEntry {
    pub url: String,
    /// Version the server reported, when it did.
    pub version: Option<String>,
    pub node: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PreviousEntry {
    pub path: String,
    pub sha256: String,
}

/// A position in a replication group's Raft log as the control database stores it: openraft's
/// numbering, from 0. Log entry `i` there is entry `i + 1` in the log files (whose names and
/// [`LogFileEntry`] indexes use Axon's numbering, from 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PositionEntry {
    pub term: u64,
    pub index: u64,
}

impl From<myelin_control::LogPosition> for PositionEntry {
    fn from(position: myelin_control::LogPosition) -> Self {
        PositionEntry {
            term: position.term,
            index: position.index,
        }
    }
}

/// A group's vote as the control database stores it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VoteEntry {
    pub term: u64,
    pub node: Option<String>,
    pub committed: bool,
}

/// What the backed-up control database says of one replication group (CLUSTER.md §3).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RaftStateEntry {
    pub vote: Option<VoteEntry>,
    pub committed: Option<PositionEntry>,
    pub applied: Option<PositionEntry>,
    pub purged: Option<PositionEntry>,
}

impl From<&myelin_control::RaftState> for RaftStateEntry {
    fn from(state: &myelin_control::RaftState) -> Self {
        RaftStateEntry {
            vote: state.vote.as_ref().map(|vote| VoteEntry {
                term: vote.term,
                node: vote.node.clone(),
                committed: vote.committed,
            }),
            committed: state.committed.map(Into::into),
            applied: state.applied.map(Into::into),
            purged: state.purged.map(Into::into),
        }
    }
}

/// One log-entry segment in the target.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LogFileEntry {
    #[serde(flatten)]
    pub file: FileEntry,
    /// Index of its first entry, as its name says (Axon's numbering, from 1).
    pub first_index: u64,
    /// Index of its last entry; `None` when it holds none.
    pub last_index: Option<u64>,
    /// Term of its last entry.
    pub last_term: Option<u64>,
    /// The segment the server was writing: copied up to its last synced entry, then an end
    /// marker.
    pub active: bool,
}

/// One replication group's log as this run copied it, and what the control database says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LogGroupEntry {
    /// `None` when the control database could not be read (not Myelin's).
    pub raft_state: Option<RaftStateEntry>,
    /// First and last entry present in the files (Axon's numbering); `last_index` is `None`
    /// for a log without entries.
    pub first_index: u64,
    pub last_index: Option<u64>,
    pub last_term: Option<u64>,
    /// Oldest first; the active segment last.
    pub files: Vec<LogFileEntry>,
}

/// A cluster node's backup: its identity and every replication group's log. Replaced as a
/// whole by every run (Axon's rule for the log: no incremental copy).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterEntry {
    pub cluster_id: Option<String>,
    pub node_name: Option<String>,
    /// The cluster this node had been restored from, if it was.
    pub restored_from: Option<String>,
    pub groups: BTreeMap<String, LogGroupEntry>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    pub format: u32,
    pub run: u64,
    /// Epoch milliseconds when the run started.
    pub created_at: i64,
    /// Version of the tool that wrote it.
    pub tool_version: String,
    pub server: ServerEntry,
    pub previous: Option<PreviousEntry>,
    pub control_db: Option<FileEntry>,
    /// Replication-log segments as runs before cluster backups recorded them (a flat list, always
    /// empty from a single node); new runs record the log under `cluster`.
    #[serde(default)]
    pub log: Vec<FileEntry>,
    /// A cluster node's identity and logs; absent from a single node's backup (and from
    /// manifests written before it existed, whose checksums stay valid).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<ClusterEntry>,
    pub contexts: BTreeMap<String, ContextEntry>,
    /// SHA-256 of this manifest's canonical form without this field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("manifest is not valid JSON for format {FORMAT}: {0}")]
    Parse(#[from] serde_json::Error),
    #[error("manifest format {0} is not supported (this tool reads format {FORMAT})")]
    Format(u32),
    #[error("manifest has no checksum")]
    MissingChecksum,
    #[error(
        "manifest checksum mismatch: recorded {recorded}, computed {computed} (the manifest was edited or damaged)"
    )]
    Checksum { recorded: String, computed: String },
}

impl Manifest {
    /// The canonical bytes the checksum covers: compact JSON of the manifest without `sha256`.
    fn canonical(&self) -> Result<Vec<u8>, serde_json::Error> {
        let mut unsigned = self.clone();
        unsigned.sha256 = None;
        serde_json::to_vec(&unsigned)
    }

    /// Sets the checksum and returns the bytes to store (pretty-printed for people; the
    /// checksum does not depend on formatting).
    pub fn seal(&mut self) -> Result<Vec<u8>, serde_json::Error> {
        self.sha256 = Some(hex(&Sha256::digest(self.canonical()?)));
        let mut bytes = serde_json::to_vec_pretty(self)?;
        bytes.push(b'\n');
        Ok(bytes)
    }

    /// Parses and self-checks a stored manifest.
    pub fn open(bytes: &[u8]) -> Result<Manifest, ManifestError> {
        let manifest: Manifest = serde_json::from_slice(bytes)?;
        if manifest.format != FORMAT {
            return Err(ManifestError::Format(manifest.format));
        }
        let recorded = manifest.sha256.clone().ok_or(ManifestError::MissingChecksum)?;
        let computed = hex(&Sha256::digest(manifest.canonical()?));
        if recorded != computed {
            return Err(ManifestError::Checksum { recorded, computed });
        }
        Ok(manifest)
    }

    /// Every file the backup consists of.
    pub fn files(&self) -> Vec<&FileEntry> {
        let mut files: Vec<&FileEntry> = self.control_db.iter().chain(self.log.iter()).collect();
        for group in self.cluster.iter().flat_map(|c| c.groups.values()) {
            files.extend(group.files.iter().map(|f| &f.file));
        }
        for context in self.contexts.values() {
            for family in [&context.events, &context.snapshots] {
                for segment in family.closed.iter().chain(family.active.iter()) {
                    files.extend(segment.files.iter());
                }
            }
        }
        files
    }
}

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[(b >> 4) as usize] as char);
        out.push(DIGITS[(b & 15) as usize] as char);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Manifest {
        let mut contexts = BTreeMap::new();
        contexts.insert(
            "default".to_string(),
            ContextEntry {
                last_token: 9,
                events: FamilyEntry {
                    last_closed_segment: 0,
                    closed: vec![SegmentEntry {
                        segment: 0,
                        first_token: 0,
                        last_token: Some(4),
                        files: vec![FileEntry {
                            path: "contexts/default/events/00000000000000000000.events".into(),
                            size: 100,
                            sha256: "ab".repeat(32),
                        }],
                    }],
                    active: None,
                },
                snapshots: FamilyEntry::default(),
            },
        );
        Manifest {
            format: FORMAT,
            run: 1,
            created_at: 1,
            tool_version: "0".into(),
            server: ServerEntry {
                url: "http://127.0.0.1:8024".into(),
                version: None,
                node: None,
            },
            previous: None,
            control_db: None,
            log: Vec::new(),
            cluster: None,
            contexts,
            sha256: None,
        }
    }

    #[test]
    fn sealed_manifest_opens_and_an_edit_is_caught() {
        let mut manifest = sample();
        let bytes = manifest.seal().expect("seal");
        let opened = Manifest::open(&bytes).expect("opens");
        assert_eq!(opened, manifest);
        let edited = String::from_utf8(bytes)
            .expect("utf8")
            .replace("\"size\": 100", "\"size\": 101");
        assert!(matches!(
            Manifest::open(edited.as_bytes()),
            Err(ManifestError::Checksum { .. })
        ));
        let mut unsigned = sample();
        let bytes = serde_json::to_vec(&unsigned).expect("json");
        assert!(matches!(Manifest::open(&bytes), Err(ManifestError::MissingChecksum)));
        unsigned.format = 99;
        let bytes = unsigned.seal().expect("seal");
        assert!(matches!(Manifest::open(&bytes), Err(ManifestError::Format(99))));
    }

    #[test]
    fn a_single_nodes_manifest_has_no_cluster_section_and_a_cluster_nodes_round_trips() {
        let mut single = sample();
        let bytes = single.seal().expect("seal");
        let text = String::from_utf8(bytes).expect("utf8");
        // Manifests written before cluster backups have no such key: their checksums hold.
        assert!(!text.contains("cluster"), "{text}");

        let mut clustered = sample();
        let file = FileEntry {
            path: "log/_admin/00000000000000000001.log".into(),
            size: 40,
            sha256: "cd".repeat(32),
        };
        clustered.cluster = Some(ClusterEntry {
            cluster_id: Some("c".into()),
            node_name: Some("node-1".into()),
            restored_from: None,
            groups: BTreeMap::from([(
                "_admin".to_string(),
                LogGroupEntry {
                    raft_state: Some(RaftStateEntry {
                        applied: Some(PositionEntry { term: 1, index: 0 }),
                        ..RaftStateEntry::default()
                    }),
                    first_index: 1,
                    last_index: Some(1),
                    last_term: Some(1),
                    files: vec![LogFileEntry {
                        file: file.clone(),
                        first_index: 1,
                        last_index: Some(1),
                        last_term: Some(1),
                        active: true,
                    }],
                },
            )]),
        });
        let bytes = clustered.seal().expect("seal");
        let opened = Manifest::open(&bytes).expect("opens");
        assert_eq!(opened, clustered);
        assert!(
            opened.files().contains(&&file),
            "a log file is one of the backup's files"
        );
        let text = String::from_utf8(bytes).expect("utf8");
        assert!(
            text.contains("\"firstIndex\": 1") && text.contains("\"path\": \"log/_admin/"),
            "{text}"
        );
    }

    #[test]
    fn manifest_keys() {
        assert_eq!(manifest_key(3), "manifests/000003.json");
        assert_eq!(parse_manifest_key("manifests/000003.json"), Some(3));
        assert_eq!(parse_manifest_key("manifests/3.json"), None);
        assert_eq!(parse_manifest_key("manifests/00000a.json"), None);
    }
}
