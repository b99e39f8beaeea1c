//! `myelin restore`: lays a backup down as a data directory a server starts on — to its end, or
//! to the last transaction at or before a token (docs/BACKUP.md).
//!
//! A cluster node's backup is restored one of two ways, because a restored node's log and vote
//! are behind its cluster's and it must never rejoin that cluster as if nothing happened
//! (CLUSTER.md §10.8):
//! * **re-seed** ([`ClusterRestore::Reseed`]): control database and event stores, no log; the
//!   node is marked restored from its old cluster and forgets it, then forms a new cluster
//!   over its data (`autocluster.first` = itself) that other, empty nodes join;
//! * **whole cluster** ([`ClusterRestore::WholeCluster`]): every node from its own backup, log
//!   included, Raft state as backed up; the nodes then start as before.
//!
//! Without either ([`ClusterRestore::Plain`]) the node is marked restored, so it refuses to
//! start its old cluster, and the operator is told to choose.
//!
//! The control database is prepared in a scratch directory beside its destination (unzipped,
//! marked or adjusted, the restore recorded in its history) and renamed into place last: a
//! restore cut short never leaves a database that is not marked as it should be.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use myelin_control::{BackupRecord, ControlDb, LogPosition, now_ms};
use myelin_format::segment::SegmentKind;
use myelin_fsutil::AtomicFile;

use crate::manifest::{ClusterEntry, FamilyEntry, FileEntry, LogGroupEntry, Manifest};
use crate::run::{hash_file, latest_manifest};
use crate::scan::scan_file;
use crate::target::{Target, TargetError};

/// How a cluster node's backup is restored (module doc).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ClusterRestore {
    /// Neither path chosen: mark the node restored, lay the log down if a log directory is
    /// given, and leave the choice to the operator.
    #[default]
    Plain,
    /// Form a new cluster from this node's data.
    Reseed,
    /// One node of a cluster restored whole from its nodes' backups.
    WholeCluster,
}

/// Where the scratch copy of the control database is prepared, inside the data directory.
const CONTROL_STAGING: &str = ".restore-controldb";

#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error("{0} is not empty: restore into an empty directory, or pass --force to replace its contents")]
    NotEmpty(String),
    #[error("the target holds no backup (no manifest)")]
    NoBackup,
    #[error("{0}")]
    Backup(#[from] crate::run::BackupError),
    #[error("target: {0}")]
    Target(#[from] TargetError),
    #[error("{file}: {reason}")]
    Damaged { file: String, reason: String },
    #[error("token {token} is before the first event of context {context} in this backup ({first})")]
    TokenTooEarly { token: u64, context: String, first: u64 },
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("control database: {0}")]
    Control(#[from] myelin_control::ControlError),
    #[error(
        "--reseed and --whole-cluster restore a cluster node's backup; this is a single node's backup \
         (restore it without them; to start a cluster from it, start it with \
         axoniq.axonserver.autocluster.first set to its own internal address)"
    )]
    NotClusterBackup,
    #[error(
        "--whole-cluster lays down the replication logs: pass --log-dir DIR, the directory the node \
         keeps them in (axoniq.axonserver.replication.log-storage-folder)"
    )]
    LogDirNeeded,
    #[error(
        "--to-token cuts the event store, but the log of a cluster node's backup goes on past it: \
         restore to a token only with --reseed"
    )]
    ToTokenNeedsReseed,
    #[error("the restored control database could not be finished: {0}")]
    Finish(String),
}

pub type Result<T> = std::result::Result<T, RestoreError>;

#[derive(Debug, Clone)]
pub struct RestoreOptions {
    /// The data directory a server will use with `--data`: `<dir>/<context>/` for segments,
    /// `<dir>/myelin-controldb.sqlite3` for the control database.
    pub data_dir: PathBuf,
    /// Restore only events up to the last transaction ending at or before this token.
    pub to_token: Option<u64>,
    /// Replace what `data_dir` holds (and the groups' directories in `log_dir`).
    pub force: bool,
    /// How a cluster node's backup is restored.
    pub cluster: ClusterRestore,
    /// The node's replication-log directory (`axoniq.axonserver.replication.log-storage-folder`):
    /// where the logs go (`<log_dir>/<group>/`), or, for a re-seed, where no old log may remain.
    pub log_dir: Option<PathBuf>,
}

impl RestoreOptions {
    /// A plain restore into `data_dir`.
    pub fn new(data_dir: impl Into<PathBuf>) -> RestoreOptions {
        RestoreOptions {
            data_dir: data_dir.into(),
            to_token: None,
            force: false,
            cluster: ClusterRestore::Plain,
            log_dir: None,
        }
    }
}

/// What was done with a cluster node's backup.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClusterRestored {
    pub mode: ClusterRestore,
    /// The cluster the backup came from, and the node's name there.
    pub cluster_id: Option<String>,
    pub node_name: Option<String>,
    /// Groups whose log was laid down, with the index of their last entry (Axon's numbering).
    pub logs: BTreeMap<String, Option<u64>>,
    /// Groups whose committed position was lowered to the end of the restored log.
    pub committed_lowered: Vec<String>,
    /// Whether the node was marked restored from `cluster_id` (it will refuse to rejoin it).
    pub marked_restored: bool,
    /// Whether the node forgot its cluster (nodes, groups, Raft state) to re-seed a new one.
    pub forgot_cluster: bool,
    /// The groups of the backup (`_admin` included).
    pub groups: Vec<String>,
}

/// What was restored for one context.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContextRestored {
    /// The last event token restored; -1 when none.
    pub last_token: i64,
    /// With `--to-token`: the token asked for and where the restore stopped.
    pub stopped: Option<String>,
    /// Snapshot segments laid down (none with `--to-token`: a snapshot may hold state from
    /// after the cut; aggregates rebuild from their events).
    pub snapshots_restored: bool,
}

#[derive(Debug, Clone, Default)]
pub struct RestoreReport {
    pub run: u64,
    pub contexts: BTreeMap<String, ContextRestored>,
    pub files: usize,
    pub bytes: u64,
    /// A cluster node's backup: what was done with it.
    pub cluster: Option<ClusterRestored>,
}

/// Refuses options that do not fit the backup before anything is written.
fn check_options(manifest: &Manifest, options: &RestoreOptions) -> Result<()> {
    match (&manifest.cluster, options.cluster) {
        (None, ClusterRestore::Reseed | ClusterRestore::WholeCluster) => Err(RestoreError::NotClusterBackup),
        (Some(_), ClusterRestore::WholeCluster) if options.log_dir.is_none() => Err(RestoreError::LogDirNeeded),
        (Some(_), ClusterRestore::Plain | ClusterRestore::WholeCluster) if options.to_token.is_some() => {
            Err(RestoreError::ToTokenNeedsReseed)
        }
        (Some(cluster), ClusterRestore::Plain | ClusterRestore::WholeCluster) if options.log_dir.is_some() => {
            // The relations verify checks (CLUSTER.md §10.8), from the manifest: a log that
            // breaks them would stop its group at start, so none is laid down.
            for (group, entry) in &cluster.groups {
                let Some(state) = &entry.raft_state else {
                    continue;
                };
                let problems = crate::verify::log_state_problems(entry.first_index, state);
                if !problems.is_empty() {
                    return Err(RestoreError::Damaged {
                        file: format!("log/{group}"),
                        reason: format!("{}; run `myelin verify`", problems.join("; ")),
                    });
                }
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

/// The groups' directories in the log directory must hold nothing: a re-seeded node would
/// otherwise open an old log as its new cluster's, and a restored log must not mix with
/// another. With `--force` they are removed.
fn clear_log_dirs(cluster: &ClusterEntry, log_dir: &Path, force: bool) -> Result<()> {
    for group in cluster.groups.keys() {
        let path = log_dir.join(group);
        let occupied = match std::fs::read_dir(&path) {
            Ok(mut entries) => entries.next().is_some(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
            Err(e) => return Err(e.into()),
        };
        if occupied && !force {
            return Err(RestoreError::NotEmpty(path.display().to_string()));
        }
        if occupied {
            std::fs::remove_dir_all(&path)?;
        }
    }
    if log_dir.exists() {
        myelin_fsutil::sync_dir(log_dir)?;
    }
    Ok(())
}

/// Restores the newest backup in `target` into `options.data_dir`.
pub async fn restore(target: &dyn Target, options: &RestoreOptions) -> Result<RestoreReport> {
    let (_, manifest, _) = latest_manifest(target).await?.ok_or(RestoreError::NoBackup)?;
    check_options(&manifest, options)?;
    let dir = &options.data_dir;
    myelin_fsutil::create_dir_all_durably(dir)?;
    let occupied = std::fs::read_dir(dir)?.next().is_some();
    if occupied && !options.force {
        return Err(RestoreError::NotEmpty(dir.display().to_string()));
    }
    if let (Some(cluster), Some(log_dir)) = (&manifest.cluster, &options.log_dir) {
        clear_log_dirs(cluster, log_dir, options.force)?;
    }
    if occupied {
        for context in manifest.contexts.keys() {
            let path = dir.join(context);
            if path.exists() {
                std::fs::remove_dir_all(&path)?;
            }
        }
        for suffix in ["", "-wal", "-shm"] {
            let path = dir.join(format!("{}{suffix}", myelin_control::DB_FILE_NAME));
            if path.exists() {
                std::fs::remove_file(&path)?;
            }
        }
    }
    // Left by a restore cut short: scratch.
    let staging = dir.join(CONTROL_STAGING);
    if staging.exists() {
        std::fs::remove_dir_all(&staging)?;
    }
    let mut report = RestoreReport {
        run: manifest.run,
        ..RestoreReport::default()
    };

    // Downloaded and checked first (a damaged zip stops the restore before anything else is
    // laid down), put in place last.
    if let Some(control_db) = &manifest.control_db {
        stage_control_db(target, control_db, dir, &staging, &mut report).await?;
    }
    for (context, entry) in &manifest.contexts {
        let context_dir = dir.join(context);
        myelin_fsutil::create_dir_all_durably(&context_dir)?;
        let (last_token, stopped) = restore_family(
            target,
            context,
            SegmentKind::Events,
            &entry.events,
            options.to_token,
            &context_dir,
            &mut report,
        )
        .await?;
        let snapshots_restored = options.to_token.is_none();
        if snapshots_restored {
            restore_family(
                target,
                context,
                SegmentKind::Snapshots,
                &entry.snapshots,
                None,
                &context_dir,
                &mut report,
            )
            .await?;
        }
        report.contexts.insert(
            context.clone(),
            ContextRestored {
                last_token,
                stopped,
                snapshots_restored,
            },
        );
    }
    if let Some(cluster) = &manifest.cluster {
        let mut restored = ClusterRestored {
            mode: options.cluster,
            cluster_id: cluster.cluster_id.clone(),
            node_name: cluster.node_name.clone(),
            groups: cluster.groups.keys().cloned().collect(),
            ..ClusterRestored::default()
        };
        let lay_down_log = options.cluster != ClusterRestore::Reseed;
        if let (true, Some(log_dir)) = (lay_down_log, &options.log_dir) {
            for (group, entry) in &cluster.groups {
                restore_log_group(target, entry, &log_dir.join(group), &mut report).await?;
                restored.logs.insert(group.clone(), entry.last_index);
            }
            myelin_fsutil::sync_dir(log_dir)?;
        }
        report.cluster = Some(restored);
    }
    // Every restored file was synced into its directory as it was renamed there; what remains
    // is what only this directory saw: the removals of --force and of the downloaded zip.
    myelin_fsutil::sync_dir(dir)?;
    if manifest.control_db.is_some() {
        finish_control_db(dir, &staging, &manifest, &mut report)?;
    }
    Ok(report)
}

/// Downloads the control-database zip and unzips the database into `staging`.
async fn stage_control_db(
    target: &dyn Target,
    entry: &FileEntry,
    dir: &Path,
    staging: &Path,
    report: &mut RestoreReport,
) -> Result<()> {
    let zip_path = dir.join(".restore-controldb.zip");
    download_checked(target, entry, &zip_path, report).await?;
    crate::controldb::extract_database(&zip_path, staging).map_err(|reason| RestoreError::Damaged {
        file: entry.path.clone(),
        reason,
    })?;
    // A scratch file: a plain remove, made durable by the directory sync that ends the restore.
    std::fs::remove_file(&zip_path)?;
    Ok(())
}

/// Marks or adjusts the staged database as the restore mode says, records the restore in its
/// history, then renames it into the data directory: the last step of a restore.
fn finish_control_db(dir: &Path, staging: &Path, manifest: &Manifest, report: &mut RestoreReport) -> Result<()> {
    {
        let control = ControlDb::open(staging)?;
        if let (Some(cluster), Some(restored)) = (&manifest.cluster, report.cluster.as_mut()) {
            adjust_cluster_state(&control, cluster, restored)?;
        }
        record(&control, manifest, report)?;
    }
    // The database was closed above; closing checkpoints its write-ahead log into the file.
    // Checkpoint again, and refuse to move a file whose log did not empty: the log would not
    // move with it.
    let path = staging.join(myelin_control::DB_FILE_NAME);
    let finished = rusqlite::Connection::open(&path)
        .and_then(|connection| connection.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |row| row.get::<_, i64>(0)))
        .map_err(|e| RestoreError::Finish(format!("cannot checkpoint {}: {e}", path.display())))?;
    let wal = staging.join(format!("{}-wal", myelin_control::DB_FILE_NAME));
    let wal_len = std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0);
    if finished != 0 || wal_len > 0 {
        return Err(RestoreError::Finish(format!(
            "its write-ahead log {} could not be emptied",
            wal.display()
        )));
    }
    myelin_fsutil::sync_all(&std::fs::File::open(&path)?)?;
    myelin_fsutil::rename_durably(&path, &dir.join(myelin_control::DB_FILE_NAME))?;
    std::fs::remove_dir_all(staging)?;
    myelin_fsutil::sync_dir(dir)?;
    Ok(())
}

/// The cluster part of the restored control database (module doc).
fn adjust_cluster_state(control: &ControlDb, cluster: &ClusterEntry, restored: &mut ClusterRestored) -> Result<()> {
    match restored.mode {
        ClusterRestore::Plain | ClusterRestore::Reseed => {
            if let Some(old) = &cluster.cluster_id {
                control.mark_restored(old)?;
                restored.marked_restored = true;
            }
            if restored.mode == ClusterRestore::Reseed {
                control.forget_cluster()?;
                restored.forgot_cluster = true;
            }
        }
        ClusterRestore::WholeCluster => {
            for (group, entry) in &cluster.groups {
                if lower_committed(control, group, entry)? {
                    restored.committed_lowered.push(group.clone());
                }
            }
        }
    }
    Ok(())
}

/// CLUSTER.md §10.8: committed := min(committed, the last entry of the restored log), so that
/// openraft never looks for committed entries the log does not have. The control database
/// lets no position go back, so the group's state is cleared and saved again, lowered.
fn lower_committed(control: &ControlDb, group: &str, entry: &LogGroupEntry) -> Result<bool> {
    let Some(state) = control.raft_state(group)? else {
        return Ok(false);
    };
    let Some(committed) = state.committed else {
        return Ok(false);
    };
    // The last position the log holds (openraft's numbering: file index − 1); for a log
    // without entries, the purge point it continues from.
    let last = match (entry.last_index, entry.last_term) {
        (Some(index), Some(term)) => Some(LogPosition::new(term, index.saturating_sub(1))),
        _ => state.purged,
    };
    // Never below what was applied: those entries are in the event store already.
    let limit = match (last, state.applied) {
        (Some(last), Some(applied)) if applied.index > last.index => Some(applied),
        (None, applied) => applied,
        (last, _) => last,
    };
    if limit.is_some_and(|limit| committed.index <= limit.index) {
        return Ok(false);
    }
    control.clear_raft_log_state(group)?;
    if let Some(vote) = &state.vote {
        control.save_vote(group, vote)?;
    }
    if let (Some(applied), Some(membership)) = (state.applied, &state.membership) {
        control.save_applied(group, applied, membership)?;
    }
    if let Some(purged) = state.purged {
        control.save_purged(group, purged)?;
    }
    if let Some(limit) = limit {
        control.save_committed(group, Some(limit))?;
    }
    Ok(true)
}

/// Lays down one group's log files in `dir` under their own names (the active one already ends
/// after its last synced entry, with an end marker).
async fn restore_log_group(
    target: &dyn Target,
    entry: &LogGroupEntry,
    dir: &Path,
    report: &mut RestoreReport,
) -> Result<()> {
    myelin_fsutil::create_dir_all_durably(dir)?;
    for file in &entry.files {
        let name = file.file.path.rsplit('/').next().unwrap_or(&file.file.path);
        if myelin_format::raftlog::parse_file_name(name) != Some(file.first_index) {
            return Err(RestoreError::Damaged {
                file: file.file.path.clone(),
                reason: "not a log-entry segment name".to_string(),
            });
        }
        let restored = AtomicFile::create(&dir.join(name))?;
        download_checked(target, &file.file, restored.temp_path(), report).await?;
        restored.commit()?;
    }
    Ok(())
}

/// Lays down one type of one context; returns the last token restored and where a
/// `to_token` restore stopped.
async fn restore_family(
    target: &dyn Target,
    context: &str,
    kind: SegmentKind,
    family: &FamilyEntry,
    to_token: Option<u64>,
    dir: &Path,
    report: &mut RestoreReport,
) -> Result<(i64, Option<String>)> {
    let mut last_token: i64 = -1;
    let segments: Vec<_> = family
        .closed
        .iter()
        .map(|s| (s, true))
        .chain(family.active.iter().map(|s| (s, false)))
        .collect();
    if let (Some(token), Some((first, _))) = (to_token, segments.first())
        && token < first.first_token
    {
        return Err(RestoreError::TokenTooEarly {
            token,
            context: context.to_string(),
            first: first.first_token,
        });
    }
    for (segment, closed) in segments {
        let Some(data) = segment.files.first() else {
            continue;
        };
        let mut restored = AtomicFile::create(&dir.join(kind.file_name(segment.segment)))?;
        download_checked(target, data, restored.temp_path(), report).await?;
        let scan = scan_file(restored.temp_path(), segment.segment)?;
        let holds_cut = to_token.is_some_and(|token| segment.last_token.is_some_and(|last| last > token));
        if closed && !holds_cut {
            // A whole closed segment: its index and bloom files come with it.
            restored.commit()?;
            for companion in &segment.files[1..] {
                let companion_name = companion.path.rsplit('/').next().unwrap_or(&companion.path);
                let companion_file = AtomicFile::create(&dir.join(companion_name))?;
                download_checked(target, companion, companion_file.temp_path(), report).await?;
                companion_file.commit()?;
            }
            last_token = scan.last_token().map_or(last_token, |t| t as i64);
            continue;
        }
        // The active segment, or the segment holding the cut: keep the complete transactions
        // (up to the token) and end with an end marker; it becomes the active segment, so
        // no index or bloom file goes with it (the server writes them when it rolls).
        let (cut, events) = match to_token {
            Some(token) if holds_cut => scan
                .block_ends
                .iter()
                .rev()
                .find(|(_, events)| segment.first_token + events <= token + 1)
                .copied()
                .unwrap_or((myelin_format::segment::FILE_HEADER_BYTES as u64, 0)),
            _ => (scan.valid_len, scan.events),
        };
        let file = restored.file()?;
        file.set_len(cut + 4)?;
        {
            use std::os::unix::fs::FileExt;
            file.write_all_at(&[0u8; 4], cut)?;
        }
        restored.commit()?;
        if events > 0 {
            last_token = (segment.first_token + events - 1) as i64;
        } else {
            last_token = segment.first_token as i64 - 1;
        }
        if holds_cut {
            let token = to_token.unwrap_or_default();
            return Ok((
                last_token,
                Some(format!(
                    "asked for token {token}; stopped at token {last_token}, the end of the last transaction at or before it"
                )),
            ));
        }
        break;
    }
    let stopped = to_token.map(|token| {
        format!("asked for token {token}; the backup ends at token {last_token}, everything was restored")
    });
    Ok((last_token, stopped))
}

/// Downloads a file and checks it against the manifest before it is used. `local` is the
/// temporary file of an [`AtomicFile`] or a scratch file: `get_to_file` writes into it in
/// place (created or truncated, never replaced), so the atomic file's handle sees the bytes.
async fn download_checked(
    target: &dyn Target,
    entry: &FileEntry,
    local: &Path,
    report: &mut RestoreReport,
) -> Result<()> {
    target.get_to_file(&entry.path, local).await?;
    let (size, digest) = hash_file(local)?;
    if size != entry.size || digest != entry.sha256 {
        let _ = std::fs::remove_file(local);
        return Err(RestoreError::Damaged {
            file: entry.path.clone(),
            reason: format!(
                "does not match the manifest (size {size} vs {}, SHA-256 {digest} vs {}); run `myelin verify`",
                entry.size, entry.sha256
            ),
        });
    }
    report.files += 1;
    report.bytes += size;
    Ok(())
}

/// Writes what was restored into the control database's backup history, so the restored
/// server (and its operators) know the last token each context holds.
fn record(control: &ControlDb, manifest: &Manifest, report: &RestoreReport) -> Result<()> {
    if let Some(cluster) = &report.cluster {
        control.record_backup(&BackupRecord {
            time_ms: now_ms(),
            kind: "restore".to_string(),
            context: None,
            segment_type: None,
            last_closed_segment: None,
            last_token: None,
            detail: Some(format!(
                "restored backup run {} of node {} of cluster {} ({:?}; logs laid down: {:?})",
                manifest.run,
                cluster.node_name.as_deref().unwrap_or("?"),
                cluster.cluster_id.as_deref().unwrap_or("?"),
                cluster.mode,
                cluster.logs.keys().collect::<Vec<_>>()
            )),
        })?;
    }
    for (context, restored) in &report.contexts {
        control.record_backup(&BackupRecord {
            time_ms: now_ms(),
            kind: "restore".to_string(),
            context: Some(context.clone()),
            segment_type: Some("EVENT".to_string()),
            last_closed_segment: manifest.contexts.get(context).map(|c| c.events.last_closed_segment),
            last_token: Some(restored.last_token),
            detail: Some(format!(
                "restored backup run {}{}",
                manifest.run,
                restored.stopped.as_ref().map(|s| format!(": {s}")).unwrap_or_default()
            )),
        })?;
    }
    Ok(())
}
