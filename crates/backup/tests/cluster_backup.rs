//! A cluster node's backup, built by hand so that each of verify's rules can be broken on its
//! own: the log's framing and CRCs, its contiguity, and its relations to the control
//! database's applied and purged positions (CLUSTER.md §10.8). Then the restore paths: re-seed,
//! whole cluster, and the plain restore that marks the node and leaves the choice open.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use myelin_backup::manifest::{
    ClusterEntry, FORMAT, FileEntry, LogFileEntry, LogGroupEntry, Manifest, RaftStateEntry, ServerEntry, manifest_key,
};
use myelin_backup::restore::{ClusterRestore, RestoreError, RestoreOptions, restore};
use myelin_backup::run::hash_file;
use myelin_backup::target::dir_target;
use myelin_backup::verify::{VerifyReport, verify};
use myelin_control::{ControlDb, LogPosition, Vote};
use myelin_format::raftlog::{EntryType, encode_entry, encode_header, file_name};

const CLUSTER: &str = "c0ffee";
const GROUP: &str = "default";

/// A backup of node-1 of cluster [`CLUSTER`] in a directory target.
struct Built {
    dir: tempfile::TempDir,
    manifest: Manifest,
}

impl Built {
    fn root(&self) -> &Path {
        self.dir.path()
    }

    fn path(&self, key: &str) -> PathBuf {
        self.root().join(key)
    }

    /// Seals the (edited) manifest again, as someone covering their tracks would.
    fn reseal(&mut self) {
        let bytes = self.manifest.seal().expect("seal");
        std::fs::write(self.path(&manifest_key(1)), bytes).expect("manifest");
    }

    fn group(&mut self) -> &mut LogGroupEntry {
        self.manifest
            .cluster
            .as_mut()
            .and_then(|c| c.groups.get_mut(GROUP))
            .expect("group")
    }

    /// Re-records a file's size and digest after it was edited.
    fn rehash(&mut self, key: &str) {
        let (size, sha256) = hash_file(&self.path(key)).expect("hash");
        let mut files: Vec<&mut FileEntry> = self.manifest.control_db.iter_mut().collect();
        for group in self.manifest.cluster.iter_mut().flat_map(|c| c.groups.values_mut()) {
            files.extend(group.files.iter_mut().map(|f| &mut f.file));
        }
        for file in files {
            if file.path == key {
                file.size = size;
                file.sha256 = sha256.clone();
            }
        }
    }

    async fn verify(&self) -> VerifyReport {
        let target = dir_target(self.root()).expect("target");
        verify(target.as_ref()).await.expect("verify runs")
    }
}

/// A segment of `count` entries of term 1 from `first`, closed (`-1`) or active (then an end
/// marker, as the backup tool stores it).
fn segment(count: u64, closed: bool) -> Vec<u8> {
    let mut out = encode_header().to_vec();
    for i in 0..count {
        encode_entry(
            1,
            EntryType::SerializedObject,
            format!("entry {i}").as_bytes(),
            &mut out,
        )
        .expect("encodes");
    }
    let marker: i32 = if closed { -1 } else { 0 };
    out.extend_from_slice(&marker.to_be_bytes());
    out
}

/// The node's Raft state for [`GROUP`]: applied, committed and purged (openraft's indexes).
struct State {
    applied: u64,
    committed: u64,
    purged: Option<u64>,
}

/// Builds the backup: log files `(first index, entries)`, oldest first, the last one active.
fn build(files: &[(u64, u64)], state: &State) -> Built {
    let dir = tempfile::tempdir().expect("dir");
    let root = dir.path();

    let control_dir = tempfile::tempdir().expect("control");
    let control = ControlDb::open(control_dir.path()).expect("control db");
    control.set_cluster_identity(CLUSTER, "node-1").expect("identity");
    control
        .save_vote(
            GROUP,
            &Vote {
                term: 1,
                node: Some("1".into()),
                committed: true,
            },
        )
        .expect("vote");
    control
        .save_applied(GROUP, LogPosition::new(1, state.applied), "{}")
        .expect("applied");
    control
        .save_committed(GROUP, Some(LogPosition::new(1, state.committed)))
        .expect("committed");
    if let Some(purged) = state.purged {
        control.save_purged(GROUP, LogPosition::new(1, purged)).expect("purged");
    }
    let zip = control
        .backup_zip(control_dir.path(), serde_json::json!({"node": "node-1"}))
        .expect("zip");
    let zip_name = zip.file_name().and_then(|n| n.to_str()).expect("name").to_string();
    let control_key = format!("controldb/{zip_name}");
    std::fs::create_dir_all(root.join("controldb")).expect("dir");
    std::fs::copy(&zip, root.join(&control_key)).expect("copy zip");
    let raft_state = RaftStateEntry::from(&control.raft_state(GROUP).expect("state").expect("row"));

    std::fs::create_dir_all(root.join("log").join(GROUP)).expect("log dir");
    let mut entries = Vec::new();
    for (i, &(first, count)) in files.iter().enumerate() {
        let active = i + 1 == files.len();
        let key = format!("log/{GROUP}/{}", file_name(first));
        std::fs::write(root.join(&key), segment(count, !active)).expect("segment");
        let (size, sha256) = hash_file(&root.join(&key)).expect("hash");
        entries.push(LogFileEntry {
            file: FileEntry {
                path: key,
                size,
                sha256,
            },
            first_index: first,
            last_index: (count > 0).then(|| first + count - 1),
            last_term: (count > 0).then_some(1),
            active,
        });
    }
    let (size, sha256) = hash_file(&root.join(&control_key)).expect("hash");
    let group = LogGroupEntry {
        raft_state: Some(raft_state),
        first_index: entries[0].first_index,
        last_index: entries.iter().rev().find_map(|f| f.last_index),
        last_term: Some(1),
        files: entries,
    };
    let manifest = Manifest {
        format: FORMAT,
        run: 1,
        created_at: 1,
        tool_version: "test".into(),
        server: ServerEntry {
            url: "http://127.0.0.1:8024".into(),
            version: None,
            node: Some("node-1".into()),
        },
        previous: None,
        control_db: Some(FileEntry {
            path: control_key,
            size,
            sha256,
        }),
        log: Vec::new(),
        cluster: Some(ClusterEntry {
            cluster_id: Some(CLUSTER.into()),
            node_name: Some("node-1".into()),
            restored_from: None,
            groups: BTreeMap::from([(GROUP.to_string(), group)]),
        }),
        contexts: BTreeMap::new(),
        sha256: None,
    };
    let mut built = Built { dir, manifest };
    std::fs::create_dir_all(built.path("manifests")).expect("manifests");
    built.reseal();
    built
}

/// Three files: 1..10 and 11..20 closed, 21..25 active; everything applied up to 22.
fn whole() -> Built {
    build(
        &[(1, 10), (11, 10), (21, 5)],
        &State {
            applied: 22,
            committed: 23,
            purged: None,
        },
    )
}

/// Compacted: the first file went after the purge point 12 was recorded; 11..20 closed,
/// 21..25 active, applied up to 22.
fn compacted() -> Built {
    build(
        &[(11, 10), (21, 5)],
        &State {
            applied: 22,
            committed: 23,
            purged: Some(12),
        },
    )
}

fn problems(report: &VerifyReport) -> String {
    report
        .problems
        .iter()
        .map(|p| p.to_string())
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test]
async fn a_whole_cluster_backup_verifies_with_every_log_entry_checked() {
    for built in [whole(), compacted()] {
        let report = built.verify().await;
        assert!(report.ok(), "{}", problems(&report));
        let entries: u64 = built.manifest.cluster.as_ref().expect("cluster").groups[GROUP]
            .files
            .iter()
            .map(|f| f.last_index.map_or(0, |l| l - f.first_index + 1))
            .sum();
        assert_eq!(report.log_entries_checked, entries);
    }
}

#[tokio::test]
async fn deleting_the_oldest_log_file_is_refused_even_when_the_manifest_is_edited_to_match() {
    let mut built = whole();
    let oldest = format!("log/{GROUP}/{}", file_name(1));
    std::fs::remove_file(built.path(&oldest)).expect("delete");
    let report = built.verify().await;
    assert!(
        report
            .problems
            .iter()
            .any(|p| p.file == oldest && p.message == "missing"),
        "{}",
        problems(&report)
    );

    // Nothing recorded a purge: a log that starts at 11 lost entries 1..10 (openraft's 0..9).
    built.group().files.remove(0);
    built.group().first_index = 11;
    built.reseal();
    let report = built.verify().await;
    let text = problems(&report);
    assert!(text.contains("purged only through -1"), "{text}");
    assert_eq!(report.problems.len(), 1, "{text}");
}

#[tokio::test]
async fn a_corrupted_byte_in_a_closed_log_file_is_refused_by_its_crc() {
    let mut built = whole();
    let key = format!("log/{GROUP}/{}", file_name(11));
    let mut bytes = std::fs::read(built.path(&key)).expect("read");
    // In the data of the third entry (each is 21 + 7 bytes after the 5-byte header).
    bytes[5 + 2 * 28 + 18] ^= 0x40;
    std::fs::write(built.path(&key), &bytes).expect("write");
    let report = built.verify().await;
    assert!(
        report
            .problems
            .iter()
            .any(|p| p.file == key && p.message.contains("SHA-256")),
        "{}",
        problems(&report)
    );

    // Even with the digest recorded anew, the entry's CRC gives it away.
    built.rehash(&key);
    built.reseal();
    let report = built.verify().await;
    let text = problems(&report);
    assert!(
        report
            .problems
            .iter()
            .any(|p| p.file == key && p.message.contains("damaged at byte 61") && p.message.contains("checksum")),
        "{text}"
    );
}

#[tokio::test]
async fn a_gap_between_log_files_is_refused() {
    let built = build(
        &[(1, 10), (12, 9), (21, 5)],
        &State {
            applied: 22,
            committed: 23,
            purged: None,
        },
    );
    let report = built.verify().await;
    let text = problems(&report);
    assert!(text.contains("gap: entries 11 to 11 are missing"), "{text}");
}

/// Replaces the control database in the zip with a copy edited by `sql`, and records the zip's
/// new size and digest (and the raft state it now holds) in the manifest.
fn edit_control_db(built: &mut Built, sql: &str) {
    let key = built.manifest.control_db.as_ref().expect("control db").path.clone();
    let zip_path = built.path(&key);
    let scratch = tempfile::tempdir().expect("scratch");
    let mut archive = zip::ZipArchive::new(std::fs::File::open(&zip_path).expect("zip")).expect("archive");
    let mut members = Vec::new();
    for i in 0..archive.len() {
        let mut member = archive.by_index(i).expect("member");
        let mut bytes = Vec::new();
        member.read_to_end(&mut bytes).expect("read");
        members.push((member.name().expect("name").to_string(), bytes));
    }
    let db = scratch.path().join(myelin_control::DB_FILE_NAME);
    let database = members
        .iter_mut()
        .find(|(name, _)| name == myelin_control::DB_FILE_NAME)
        .expect("database");
    std::fs::write(&db, &database.1).expect("write db");
    {
        let connection = rusqlite::Connection::open(&db).expect("open");
        connection.execute_batch(sql).expect("edit");
        connection
            .execute_batch("PRAGMA wal_checkpoint(TRUNCATE); PRAGMA journal_mode=DELETE;")
            .expect("checkpoint");
    }
    database.1 = std::fs::read(&db).expect("read db");
    let mut writer = zip::ZipWriter::new(std::fs::File::create(&zip_path).expect("create zip"));
    for (name, bytes) in &members {
        writer
            .start_file(name.as_str(), zip::write::SimpleFileOptions::default())
            .expect("start");
        writer.write_all(bytes).expect("write");
    }
    writer.finish().expect("finish");
    built.rehash(&key);
    let control = ControlDb::open(scratch.path()).expect("reopen");
    let state = RaftStateEntry::from(&control.raft_state(GROUP).expect("state").expect("row"));
    built.group().raft_state = Some(state);
    built.reseal();
}

#[tokio::test]
async fn an_applied_index_edited_below_the_oldest_log_entry_is_refused() {
    let mut built = compacted();
    edit_control_db(
        &mut built,
        "UPDATE replication_groups SET last_applied_index = 5 WHERE name = 'default'",
    );
    let report = built.verify().await;
    let text = problems(&report);
    assert!(
        text.contains("the oldest log entry present is 10") && text.contains("applied only up to 5"),
        "{text}"
    );
    assert_eq!(report.problems.len(), 1, "{text}");
}

#[tokio::test]
async fn a_control_database_that_disagrees_with_the_manifest_is_refused() {
    let mut built = compacted();
    edit_control_db(
        &mut built,
        "UPDATE replication_groups SET last_purged_index = 15 WHERE name = 'default'",
    );
    // The manifest still says what the backup run saw.
    built.group().raft_state.as_mut().expect("state").purged = Some(LogPosition::new(1, 12).into());
    built.reseal();
    let report = built.verify().await;
    let text = problems(&report);
    assert!(text.contains("the manifest records the raft state"), "{text}");
}

#[tokio::test]
async fn reseed_restores_no_log_and_leaves_a_node_that_forgot_its_cluster_and_may_never_rejoin_it() {
    let built = compacted();
    let target = dir_target(built.root()).expect("target");
    let data = tempfile::tempdir().expect("data");
    let log_dir = tempfile::tempdir().expect("log");
    // An old log of the group in the node's log directory: it would be opened as the new
    // cluster's; refused without --force, removed with it.
    std::fs::create_dir_all(log_dir.path().join(GROUP)).expect("dir");
    std::fs::write(log_dir.path().join(GROUP).join(file_name(1)), b"old").expect("old log");
    let mut options = RestoreOptions::new(data.path());
    options.cluster = ClusterRestore::Reseed;
    options.log_dir = Some(log_dir.path().to_path_buf());
    let refused = restore(target.as_ref(), &options).await;
    assert!(matches!(refused, Err(RestoreError::NotEmpty(_))), "{refused:?}");
    options.force = true;
    let report = restore(target.as_ref(), &options).await.expect("restore");
    let cluster = report.cluster.expect("a cluster restore");
    assert!(cluster.marked_restored && cluster.forgot_cluster, "{cluster:?}");
    assert!(cluster.logs.is_empty());
    assert!(!log_dir.path().join(GROUP).exists(), "the old log is gone");

    let control = ControlDb::open(data.path()).expect("restored control db");
    let identity = control.cluster_identity().expect("identity").expect("kept");
    assert_eq!(identity.restored_from.as_deref(), Some(CLUSTER));
    assert!(
        control.raft_groups().expect("groups").is_empty(),
        "raft state forgotten"
    );
    assert!(
        control.set_cluster_identity(CLUSTER, "node-1").is_err(),
        "never the old cluster again"
    );
    assert!(
        !data.path().join(".restore-controldb").exists(),
        "no scratch left behind"
    );
}

#[tokio::test]
async fn a_plain_restore_marks_the_node_and_keeps_its_raft_state_for_the_operator_to_choose() {
    let built = compacted();
    let target = dir_target(built.root()).expect("target");
    let data = tempfile::tempdir().expect("data");
    let report = restore(target.as_ref(), &RestoreOptions::new(data.path()))
        .await
        .expect("restore");
    let cluster = report.cluster.expect("a cluster restore");
    assert_eq!(cluster.mode, ClusterRestore::Plain);
    assert!(cluster.marked_restored && !cluster.forgot_cluster, "{cluster:?}");
    let control = ControlDb::open(data.path()).expect("restored control db");
    let identity = control.cluster_identity().expect("identity").expect("kept");
    assert_eq!(
        (identity.cluster_id.as_str(), identity.restored_from.as_deref()),
        (CLUSTER, Some(CLUSTER))
    );
    assert_eq!(control.raft_groups().expect("groups"), [GROUP]);
}

#[tokio::test]
async fn a_whole_cluster_restore_lays_the_log_down_and_lowers_a_commit_point_past_its_end() {
    let built = build(
        &[(1, 10), (11, 10), (21, 5)],
        &State {
            applied: 22,
            committed: 40,
            purged: None,
        },
    );
    let target = dir_target(built.root()).expect("target");
    let data = tempfile::tempdir().expect("data");
    let log_dir = tempfile::tempdir().expect("log");
    let mut options = RestoreOptions::new(data.path());
    options.cluster = ClusterRestore::WholeCluster;
    let refused = restore(target.as_ref(), &options).await;
    assert!(matches!(refused, Err(RestoreError::LogDirNeeded)), "{refused:?}");
    options.log_dir = Some(log_dir.path().to_path_buf());
    let report = restore(target.as_ref(), &options).await.expect("restore");
    let cluster = report.cluster.expect("a cluster restore");
    assert!(
        !cluster.marked_restored,
        "a whole-cluster restore keeps the node's identity"
    );
    assert_eq!(cluster.committed_lowered, [GROUP]);
    assert_eq!(cluster.logs.get(GROUP), Some(&Some(25)));
    for first in [1, 11, 21] {
        let restored = std::fs::read(log_dir.path().join(GROUP).join(file_name(first))).expect("restored file");
        let backed_up = std::fs::read(built.path(&format!("log/{GROUP}/{}", file_name(first)))).expect("backup");
        assert_eq!(restored, backed_up);
    }
    let control = ControlDb::open(data.path()).expect("restored control db");
    let state = control.raft_state(GROUP).expect("state").expect("row");
    // The last entry is file index 25, openraft's 24.
    assert_eq!(state.committed, Some(LogPosition::new(1, 24)));
    assert_eq!(state.applied, Some(LogPosition::new(1, 22)));
    assert!(state.vote.is_some_and(|v| v.committed));
    assert_eq!(
        control
            .cluster_identity()
            .expect("identity")
            .expect("kept")
            .restored_from,
        None
    );
}

#[tokio::test]
async fn restore_options_that_do_not_fit_the_backup_are_refused_before_anything_is_written() {
    let built = compacted();
    let target = dir_target(built.root()).expect("target");
    let data = tempfile::tempdir().expect("data");
    let mut options = RestoreOptions::new(data.path().join("restored"));
    options.to_token = Some(3);
    let refused = restore(target.as_ref(), &options).await;
    assert!(matches!(refused, Err(RestoreError::ToTokenNeedsReseed)), "{refused:?}");
    assert!(!data.path().join("restored").exists());

    // A single node's backup has no cluster to re-seed or restore whole.
    let mut single = compacted();
    single.manifest.cluster = None;
    single.reseal();
    let target = dir_target(single.root()).expect("target");
    for mode in [ClusterRestore::Reseed, ClusterRestore::WholeCluster] {
        let mut options = RestoreOptions::new(data.path().join("single"));
        options.cluster = mode;
        let refused = restore(target.as_ref(), &options).await;
        assert!(matches!(refused, Err(RestoreError::NotClusterBackup)), "{refused:?}");
    }
}

#[tokio::test]
async fn a_log_that_does_not_reach_back_to_the_applied_position_is_not_laid_down() {
    let mut built = whole();
    let oldest = format!("log/{GROUP}/{}", file_name(1));
    std::fs::remove_file(built.path(&oldest)).expect("delete");
    built.group().files.remove(0);
    built.group().first_index = 11;
    built.reseal();
    let target = dir_target(built.root()).expect("target");
    let data = tempfile::tempdir().expect("data");
    let log_dir = tempfile::tempdir().expect("log");
    let mut options = RestoreOptions::new(data.path().join("restored"));
    options.cluster = ClusterRestore::WholeCluster;
    options.log_dir = Some(log_dir.path().to_path_buf());
    let refused = restore(target.as_ref(), &options).await;
    assert!(
        matches!(&refused, Err(RestoreError::Damaged { reason, .. }) if reason.contains("purged only through")),
        "{refused:?}"
    );
    assert!(!data.path().join("restored").exists(), "nothing was written");
    // A re-seed does not need the log: it goes ahead.
    options.cluster = ClusterRestore::Reseed;
    restore(target.as_ref(), &options).await.expect("re-seed");
}
