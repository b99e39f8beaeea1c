//! `myelin backup`: one run of Axon's backup procedure, in its order, into a target, ending
//! with a manifest (docs/BACKUP.md).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use myelin_control::now_ms;
use myelin_format::segment::SegmentKind;
use tokio::sync::oneshot;

use crate::controldb::{ClusterFacts, facts_of_zip};
use crate::logscan::{LogEnding, scan_log_file};
use crate::manifest::{
    ClusterEntry, FORMAT, FamilyEntry, FileEntry, LogFileEntry, LogGroupEntry, MANIFEST_PREFIX, Manifest,
    PreviousEntry, RaftStateEntry, SegmentEntry, ServerEntry, hex, manifest_key, parse_manifest_key,
};
use crate::scan::{Ending, scan_file};
use crate::source::{Fetched, Server, SourceError, encode, type_name};
use crate::target::{Target, TargetError};

#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error("target: {0}")]
    Target(#[from] TargetError),
    #[error("the previous backup's manifest {key} cannot be used: {reason} (run `myelin verify` on the target)")]
    PreviousManifest { key: String, reason: String },
    #[error("{file}: {reason}")]
    Segment { file: String, reason: String },
    #[error("local staging: {0}")]
    Staging(#[from] std::io::Error),
    /// The listing skips a segment that is closed but whose index is not written yet; listing
    /// again shortly includes it.
    #[error("{0}")]
    ListingGap(String),
    #[error("cannot write the manifest: {0}")]
    Manifest(#[from] serde_json::Error),
}

pub type Result<T> = std::result::Result<T, BackupError>;

/// What to back up.
#[derive(Debug, Clone)]
pub struct BackupOptions {
    /// Contexts; `None`: every context the server lists.
    pub contexts: Option<Vec<String>>,
    pub kinds: Vec<SegmentKind>,
    /// Lease time to live, renewed every third of it.
    pub lease_ttl: Duration,
    /// Only print what would be copied.
    pub dry_run: bool,
}

impl Default for BackupOptions {
    fn default() -> Self {
        BackupOptions {
            contexts: None,
            kinds: vec![SegmentKind::Events, SegmentKind::Snapshots],
            lease_ttl: Duration::from_secs(300),
            dry_run: false,
        }
    }
}

/// What one run did, per context and type.
#[derive(Debug, Clone, Default)]
pub struct FamilyReport {
    pub new_closed_segments: usize,
    pub active_bytes: u64,
    pub bytes: u64,
    /// Planned file copies (dry run) or copies made.
    pub files: Vec<String>,
}

/// What one run did for one context.
#[derive(Debug, Clone, Default)]
pub struct ContextReport {
    /// The last event token the backup covers, -1 when none.
    pub last_token: i64,
    /// Per type: "events", "snapshots".
    pub families: BTreeMap<&'static str, FamilyReport>,
    pub elapsed: Duration,
}

/// What one run copied of one replication group's log.
#[derive(Debug, Clone, Default)]
pub struct LogReport {
    pub files: usize,
    pub bytes: u64,
    /// First and last entry copied (the files' numbering, from 1); `last_index` `None` when the
    /// log holds no entry.
    pub first_index: u64,
    pub last_index: Option<u64>,
    /// Planned copies (dry run).
    pub planned: Vec<String>,
}

#[derive(Debug, Clone, Default)]
pub struct BackupReport {
    pub run: u64,
    pub manifest: String,
    pub lease: bool,
    pub control_db: Option<String>,
    /// The cluster the node belongs to, when it is a cluster node.
    pub cluster_id: Option<String>,
    /// Per replication group (a cluster node's backup only).
    pub log: BTreeMap<String, LogReport>,
    /// Files of earlier runs' logs deleted from the target (the log is replaced each run).
    pub stale_log_files_deleted: usize,
    pub contexts: BTreeMap<String, ContextReport>,
    pub elapsed: Duration,
    pub dry_run: bool,
}

/// Progress callbacks (a progress bar in the CLI, nothing in tests).
pub trait Progress: Send + Sync {
    fn file_started(&self, _name: &str, _size_hint: Option<u64>) {}
    fn file_done(&self, _name: &str, _bytes: u64) {}
}

/// No progress output.
pub struct Quiet;
impl Progress for Quiet {}

/// The newest manifest in `target`, checked, with its key and raw bytes.
pub async fn latest_manifest(target: &dyn Target) -> Result<Option<(String, Manifest, Vec<u8>)>> {
    let mut runs: Vec<(u64, String)> = target
        .list(MANIFEST_PREFIX)
        .await?
        .into_iter()
        .filter_map(|o| parse_manifest_key(&o.key).map(|run| (run, o.key)))
        .collect();
    runs.sort();
    let Some((_, key)) = runs.pop() else {
        return Ok(None);
    };
    let bytes = target
        .get_bytes(&key)
        .await?
        .ok_or_else(|| BackupError::PreviousManifest {
            key: key.clone(),
            reason: "listed but not readable".to_string(),
        })?;
    let manifest = Manifest::open(&bytes).map_err(|e| BackupError::PreviousManifest {
        key: key.clone(),
        reason: e.to_string(),
    })?;
    Ok(Some((key, manifest, bytes.to_vec())))
}

fn family_dir(kind: SegmentKind) -> &'static str {
    match kind {
        SegmentKind::Events => "events",
        SegmentKind::Snapshots => "snapshots",
    }
}

fn file_name(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// Groups a listing's closed files by segment number: data file first, then its companions.
fn group_closed(kind: SegmentKind, files: &[String]) -> Result<BTreeMap<u64, Vec<String>>> {
    let mut segments: BTreeMap<u64, Vec<String>> = BTreeMap::new();
    for path in files {
        let name = file_name(path);
        let number = kind
            .parse_file_name(name)
            .or_else(|| kind.parse_index_file_name(name))
            .or_else(|| kind.parse_bloom_file_name(name))
            .or_else(|| {
                // Axon Server's own index and bloom files: <segment>.index / .bloom etc.
                let (stem, _) = name.split_once('.')?;
                (stem.len() == 20 && stem.bytes().all(|b| b.is_ascii_digit()))
                    .then(|| stem.parse().ok())
                    .flatten()
            })
            .ok_or_else(|| BackupError::Segment {
                file: path.clone(),
                reason: "the listing named a file that is not a segment file".to_string(),
            })?;
        let entry = segments.entry(number).or_default();
        if kind.parse_file_name(name).is_some() {
            entry.insert(0, path.clone());
        } else {
            entry.push(path.clone());
        }
    }
    Ok(segments)
}

/// One backup run of `server` into `target`.
pub async fn backup(
    server: &Server,
    target: &dyn Target,
    options: &BackupOptions,
    progress: &dyn Progress,
) -> Result<BackupReport> {
    let started = Instant::now();
    let created_at = now_ms();
    let previous = latest_manifest(target).await?;
    let run = previous.as_ref().map_or(1, |(_, m, _)| m.run + 1);
    let mut report = BackupReport {
        run,
        manifest: manifest_key(run),
        dry_run: options.dry_run,
        ..BackupReport::default()
    };

    // The lease keeps the server from deleting what it lists until this run is over.
    let ttl = options.lease_ttl.as_secs().max(1);
    let lease = if options.dry_run {
        None
    } else {
        server.lease(ttl).await?
    };
    report.lease = lease.is_some();
    let (stop_renewing, mut renewing) = oneshot::channel::<()>();
    let renewer = lease.clone().map(|lease| {
        let server = server.clone();
        tokio::spawn(async move {
            let period = Duration::from_secs((ttl / 3).max(1));
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(period) => {
                        match server.renew(&lease.id, ttl).await {
                            Ok(true) => {}
                            Ok(false) => tracing::warn!("the backup lease expired on the server"),
                            Err(e) => tracing::warn!("cannot renew the backup lease: {e}"),
                        }
                    }
                    _ = &mut renewing => return,
                }
            }
        })
    });

    let result = copy_all(server, target, options, progress, previous.as_ref(), &mut report).await;

    let _ = stop_renewing.send(());
    if let Some(task) = renewer {
        let _ = task.await;
    }
    if let Some(lease) = &lease
        && let Err(e) = server.release(&lease.id).await
    {
        tracing::warn!("cannot release the backup lease (it expires by itself): {e}");
    }
    let mut manifest = result?;
    if !options.dry_run {
        manifest.created_at = created_at;
        manifest.previous = previous.map(|(key, _, bytes)| PreviousEntry {
            path: key,
            sha256: hex(&sha2_digest(&bytes)),
        });
        let bytes = manifest.seal()?;
        target.put_bytes(&report.manifest, bytes.into()).await?;
        report.stale_log_files_deleted = delete_stale_log_files(target, &manifest).await?;
    }
    report.elapsed = started.elapsed();
    Ok(report)
}

/// The log is replaced by every run (Axon's rule): once the new manifest is in place, the
/// files of earlier runs' logs that it does not list go. Until then they belong to the
/// previous backup, which an interrupted run must leave whole.
async fn delete_stale_log_files(target: &dyn Target, manifest: &Manifest) -> Result<usize> {
    let kept: std::collections::BTreeSet<&str> = manifest.files().into_iter().map(|f| f.path.as_str()).collect();
    let mut deleted = 0;
    for object in target.list(LOG_PREFIX).await? {
        if !kept.contains(object.key.as_str()) && target.delete(&object.key).await? {
            deleted += 1;
        }
    }
    Ok(deleted)
}

/// Where log-entry segments go in the target: `log/<group>/<file>`.
const LOG_PREFIX: &str = "log/";

fn sha2_digest(bytes: &[u8]) -> Vec<u8> {
    use sha2::Digest;
    sha2::Sha256::digest(bytes).to_vec()
}

/// What every copy of one run shares: where bytes come from, where they go, how.
struct Copier<'a> {
    server: &'a Server,
    target: &'a dyn Target,
    dry_run: bool,
    staging: &'a Path,
    progress: &'a dyn Progress,
}

/// Steps 2–4 of the procedure; returns the new (unsealed) manifest.
async fn copy_all(
    server: &Server,
    target: &dyn Target,
    options: &BackupOptions,
    progress: &dyn Progress,
    previous: Option<&(String, Manifest, Vec<u8>)>,
    report: &mut BackupReport,
) -> Result<Manifest> {
    let staging = tempfile::Builder::new().prefix("myelin-backup-").tempdir()?;
    let previous = previous.map(|(_, m, _)| m);
    let (version, node) = server.identity().await?;
    let copier = Copier {
        server,
        target,
        dry_run: options.dry_run,
        staging: staging.path(),
        progress,
    };
    let mut manifest = Manifest {
        format: FORMAT,
        run: report.run,
        created_at: 0,
        tool_version: env!("CARGO_PKG_VERSION").to_string(),
        server: ServerEntry {
            url: server.url().to_string(),
            version,
            node,
        },
        previous: None,
        control_db: previous.and_then(|p| p.control_db.clone()),
        // The log is never carried over: each run replaces it (Axon's rule).
        log: Vec::new(),
        cluster: None,
        contexts: previous.map(|p| p.contexts.clone()).unwrap_or_default(),
        sha256: None,
    };

    // 1. The control database first: it holds what the rest must agree with. What it says of
    //    the cluster decides which logs are copied next and is recorded beside them.
    let mut facts: Option<ClusterFacts> = None;
    if !options.dry_run {
        let listed = server.control_db_backup().await?;
        let name = file_name(&listed).to_string();
        let key = format!("controldb/{name}");
        let stream = format!("/v1/backup/controldb/{name}");
        let (entry, local) = copier.copy_file_keep(&listed, &stream, &key).await?;
        facts = match facts_of_zip(&local, staging.path()) {
            Ok(facts) => Some(facts),
            Err(reason) => {
                tracing::warn!("the control database is not Myelin's ({reason}): its raft state is not recorded");
                None
            }
        };
        target.put_file(&key, &local).await?;
        let _ = std::fs::remove_file(&local);
        report.control_db = Some(key);
        manifest.control_db = Some(entry);
    }

    let contexts = match &options.contexts {
        Some(contexts) => contexts.clone(),
        None => server.contexts().await?,
    };

    // 2. Replication-log segments: every group the control database keeps Raft state for
    //    (`_admin` included). Without a readable control database (Axon Server, a dry run),
    //    the groups are guessed from the contexts, and a group the server lists nothing for is
    //    skipped (a single node has no log).
    let (groups, required): (Vec<(String, Option<RaftStateEntry>)>, bool) = match &facts {
        Some(facts) => (
            facts
                .groups
                .iter()
                .map(|(name, state)| (name.clone(), Some(RaftStateEntry::from(state))))
                .collect(),
            true,
        ),
        None => (contexts.iter().map(|c| (c.clone(), None)).collect(), false),
    };
    let mut cluster = ClusterEntry {
        cluster_id: facts
            .as_ref()
            .and_then(|f| f.identity.as_ref())
            .map(|i| i.cluster_id.clone()),
        node_name: facts
            .as_ref()
            .and_then(|f| f.identity.as_ref())
            .map(|i| i.node_name.clone()),
        restored_from: facts
            .as_ref()
            .and_then(|f| f.identity.as_ref())
            .and_then(|i| i.restored_from.clone()),
        groups: BTreeMap::new(),
    };
    report.cluster_id = cluster.cluster_id.clone();
    for (group, state) in groups {
        let started = Instant::now();
        match copier.backup_log_group(&group, state).await? {
            Some((entry, log_report)) => {
                tracing::debug!(%group, elapsed = ?started.elapsed(), files = log_report.files, "log copied");
                report.log.insert(group.clone(), log_report);
                if let Some(entry) = entry {
                    cluster.groups.insert(group, entry);
                }
            }
            None if required => {
                return Err(BackupError::Segment {
                    file: format!("log/{group}"),
                    reason: "the control database keeps Raft state for this group, but the server lists no log \
                             for it (the group moved away since?): run the backup again"
                        .to_string(),
                });
            }
            None => {}
        }
    }
    if facts.as_ref().is_some_and(ClusterFacts::is_cluster) || !cluster.groups.is_empty() {
        manifest.cluster = Some(cluster);
    }

    // 3. Event and snapshot segments, per context and type.
    for context in &contexts {
        let context_started = Instant::now();
        let mut context_entry = manifest.contexts.remove(context).unwrap_or_default();
        let mut families = BTreeMap::new();
        for &kind in &options.kinds {
            let family = match kind {
                SegmentKind::Events => &mut context_entry.events,
                SegmentKind::Snapshots => &mut context_entry.snapshots,
            };
            let family_report = copier.backup_family(context, kind, family).await?;
            families.insert(family_dir(kind), family_report);
        }
        context_entry.last_token = context_entry.events.last_token().map_or(-1, |t| t as i64);
        report.contexts.insert(
            context.clone(),
            ContextReport {
                last_token: context_entry.last_token,
                families,
                elapsed: context_started.elapsed(),
            },
        );
        manifest.contexts.insert(context.clone(), context_entry);
    }
    Ok(manifest)
}

/// Attempts at one type of one context when the active segment rolls between its listing and
/// its download (streaming only: the rolled segment is listed again once its index is written).
const ROLLED_RETRIES: usize = 20;
/// Listings after which an empty backup accepts a store whose first segment is not 0.
const FIRST_SEGMENT_RETRIES: usize = 5;

impl Copier<'_> {
    async fn backup_family(&self, context: &str, kind: SegmentKind, family: &mut FamilyEntry) -> Result<FamilyReport> {
        let mut total = FamilyReport::default();
        for attempt in 1.. {
            match self
                .backup_family_once(context, kind, family, &mut total, attempt)
                .await
            {
                Err(error @ (BackupError::Source(SourceError::NotServed { .. }) | BackupError::ListingGap(_)))
                    if attempt < ROLLED_RETRIES =>
                {
                    tracing::debug!(attempt, "{error}; listing again");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                result => return result.map(|()| total),
            }
        }
        Ok(total)
    }

    /// One listing and copy; closed segments copied are recorded in `family` (and `report`) as
    /// they complete, so a retry lists from past them.
    async fn backup_family_once(
        &self,
        context: &str,
        kind: SegmentKind,
        family: &mut FamilyEntry,
        report: &mut FamilyReport,
        attempt: usize,
    ) -> Result<()> {
        let Copier {
            server,
            target,
            dry_run,
            ..
        } = *self;
        // Never the active segment: only closed segments recorded by earlier runs.
        let marker = family.closed.last().map_or(-1, |s| s.segment as i64);
        let listing = server.eventstore(context, kind, marker).await?;
        report.files.clear();
        let Some((active, closed)) = listing.filenames.split_first() else {
            return Err(BackupError::Segment {
                file: format!("{context}/{}", type_name(kind)),
                reason: "the server listed no active segment".to_string(),
            });
        };
        let dir = format!("contexts/{context}/{}", family_dir(kind));
        let stream_base = format!("/v1/backup/files/{context}/{}", type_name(kind));

        for (number, files) in group_closed(kind, closed)? {
            if (number as i64) <= marker {
                continue;
            }
            let mut segment = SegmentEntry {
                segment: number,
                first_token: number,
                last_token: None,
                files: Vec::new(),
            };
            for listed in &files {
                let name = file_name(listed);
                let key = format!("{dir}/{name}");
                report.files.push(key.clone());
                if dry_run {
                    continue;
                }
                let stream = format!("{stream_base}/{name}");
                let is_data = kind.parse_file_name(name).is_some();
                let (entry, local) = self.copy_file_keep(listed, &stream, &key).await?;
                if is_data {
                    let scan = scan_file(&local, number)?;
                    if scan.ending != Ending::Rolled {
                        return Err(BackupError::Segment {
                            file: listed.clone(),
                            reason: format!("closed segment is not complete: {:?}", scan.ending),
                        });
                    }
                    segment.last_token = scan.last_token();
                }
                target.put_file(&key, &local).await?;
                let _ = std::fs::remove_file(&local);
                report.bytes += entry.size;
                segment.files.push(entry);
            }
            if !dry_run {
                report.new_closed_segments += 1;
                family.closed.push(segment);
            }
        }
        if let Some(newest) = family.closed.last() {
            family.last_closed_segment = newest.segment as i64;
        } else {
            family.last_closed_segment = -1;
        }

        // The active segment, copied afresh under a name every run overwrites.
        let name = file_name(active);
        let number = kind.parse_file_name(name).ok_or_else(|| BackupError::Segment {
            file: active.clone(),
            reason: "the listed active segment is not a segment file".to_string(),
        })?;
        // A segment that rolled moments ago is listed only once its index is durable: until then
        // the listing skips it, and the active segment does not continue the closed ones.
        // With nothing closed in the backup yet, a store normally starts at token 0; one that
        // starts later (Axon Server after retention) is accepted after a few listings.
        let expected = match family.closed.last() {
            Some(segment) => segment.last_token.map(|t| t + 1),
            None if attempt <= FIRST_SEGMENT_RETRIES => Some(0),
            None => None,
        };
        if let Some(expected) = expected
            && number != expected
            && !dry_run
        {
            return Err(BackupError::ListingGap(format!(
                "{context}/{}: the active segment starts at {number}, the closed segments end before {expected}",
                type_name(kind)
            )));
        }
        let key = format!("{dir}/active.{}", kind.data_suffix());
        report.files.push(key.clone());
        if !dry_run {
            let stream = format!("{stream_base}/{name}");
            let (_, local) = self.copy_file_keep(active, &stream, &key).await?;
            // Keep exactly the complete transactions (a local copy of a file being written may end
            // in a torn block; the pre-allocated zeros after the end are not worth storing), then
            // an end marker.
            let scan = scan_file(&local, number)?;
            if let Ending::Damaged { offset, reason } = &scan.ending {
                tracing::debug!(file = %active, offset, "active segment copy ends in an incomplete block: {reason}");
            }
            cut_after(&local, scan.valid_len)?;
            let (size, sha256) = hash_file(&local)?;
            target.put_file(&key, &local).await?;
            let _ = std::fs::remove_file(&local);
            report.active_bytes = size;
            report.bytes += size;
            family.active = Some(SegmentEntry {
                segment: number,
                first_token: number,
                last_token: scan.last_token(),
                files: vec![FileEntry {
                    path: key,
                    size,
                    sha256,
                }],
            });
        }
        Ok(())
    }

    /// Copies a replication group's log: every file the listing names, checked entry by entry.
    /// `Ok(None)` when the server lists nothing for the group. Lists again, a few times, when
    /// the log moved under the copy (the active segment rolled or was truncated while it was
    /// streamed); closed segments never change, so those already copied are kept for the retry.
    async fn backup_log_group(
        &self,
        group: &str,
        state: Option<RaftStateEntry>,
    ) -> Result<Option<(Option<LogGroupEntry>, LogReport)>> {
        let mut closed_copies = BTreeMap::new();
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self
                .backup_log_group_once(group, state.clone(), &mut closed_copies)
                .await
            {
                Err(
                    error @ (BackupError::Source(SourceError::NotServed { .. } | SourceError::DigestMismatch { .. })
                    | BackupError::ListingGap(_)),
                ) if attempt < ROLLED_RETRIES => {
                    tracing::debug!(attempt, "{error}; listing again");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                result => {
                    for (_, local) in closed_copies.into_values() {
                        let _ = std::fs::remove_file(local);
                    }
                    return result;
                }
            }
        }
    }

    /// One listing and copy of a group's log. `closed_copies` keeps the closed segments
    /// copied and checked by earlier attempts (by name), which never change.
    async fn backup_log_group_once(
        &self,
        group: &str,
        state: Option<RaftStateEntry>,
        closed_copies: &mut BTreeMap<String, (LogFileEntry, PathBuf)>,
    ) -> Result<Option<(Option<LogGroupEntry>, LogReport)>> {
        let listed = self.server.log_filenames(group).await?;
        let Some((active, closed)) = listed.split_last() else {
            return Ok(None);
        };
        let first_index_of = |path: &String| {
            myelin_format::raftlog::parse_file_name(file_name(path)).ok_or_else(|| BackupError::Segment {
                file: path.clone(),
                reason: "the log listing named a file that is not a log-entry segment".to_string(),
            })
        };
        let mut closed: Vec<(u64, &String)> = closed
            .iter()
            .map(|path| Ok((first_index_of(path)?, path)))
            .collect::<Result<_>>()?;
        closed.sort();
        let active_first = first_index_of(active)?;
        let mut report = LogReport::default();
        if self.dry_run {
            report.planned = closed
                .iter()
                .map(|(_, path)| *path)
                .chain([active])
                .map(|path| format!("log/{group}/{}", file_name(path)))
                .collect();
            report.files = report.planned.len();
            return Ok(Some((None, report)));
        }

        // The active segment first, right after the listing named it: it is the one file that
        // moves on (and rolls, after which it is no longer served under that name). The closed
        // ones cannot change, nor go while the lease holds — unless Raft truncates the log,
        // which makes a closed segment the active one again: a copy kept under that name is
        // dropped.
        if let Some((_, stale)) = closed_copies.remove(file_name(active)) {
            let _ = std::fs::remove_file(stale);
        }
        let (active_entry, active_local) = self.copy_log_file(group, active, active_first, true).await?;
        let mut files: Vec<LogFileEntry> = Vec::new();
        for (first, listed) in &closed {
            let name = file_name(listed).to_string();
            if !closed_copies.contains_key(&name) {
                let copy = self.copy_log_file(group, listed, *first, false).await?;
                closed_copies.insert(name.clone(), copy);
            }
            if let Some((entry, _)) = closed_copies.get(&name) {
                files.push(entry.clone());
            }
        }
        files.push(active_entry);

        let mut next: Option<u64> = None;
        let mut last_term: Option<u64> = None;
        for file in &files {
            if let Some(next) = next
                && file.first_index != next
            {
                // The server never opens a log with a gap; a file that vanished between the
                // listing and the copy (a truncation, or cleaning without a lease) is listed
                // differently now.
                let _ = std::fs::remove_file(&active_local);
                return Err(BackupError::ListingGap(format!(
                    "log of group {group}: {} starts at index {}, the file before ends before {next}",
                    file.file.path, file.first_index
                )));
            }
            if let (Some(before), Some(last)) = (last_term, file.last_term)
                && last < before
            {
                return Err(BackupError::Segment {
                    file: file.file.path.clone(),
                    reason: format!("its last term {last} is lower than the term {before} before it"),
                });
            }
            next = Some(file.last_index.map_or(file.first_index, |last| last + 1));
            last_term = file.last_term.or(last_term);
            report.files += 1;
            report.bytes += file.file.size;
        }
        // Stored only once the whole log is copied and checked.
        for file in &files {
            let local = match closed_copies.get(file.file.path.rsplit('/').next().unwrap_or_default()) {
                Some((_, local)) if !file.active => local.clone(),
                _ => active_local.clone(),
            };
            self.target.put_file(&file.file.path, &local).await?;
        }
        let _ = std::fs::remove_file(&active_local);
        let first_index = files.first().map_or(active_first, |f| f.first_index);
        let last_index = files.iter().rev().find_map(|f| f.last_index);
        report.first_index = first_index;
        report.last_index = last_index;
        Ok(Some((
            Some(LogGroupEntry {
                raft_state: state,
                first_index,
                last_index,
                last_term,
                files,
            }),
            report,
        )))
    }

    /// Copies one log segment to staging and checks every entry: a closed one whole (damage
    /// refuses the run: the server's own copy is bad), the active one cut after its last valid
    /// entry and given an end marker.
    async fn copy_log_file(
        &self,
        group: &str,
        listed: &str,
        first: u64,
        active: bool,
    ) -> Result<(LogFileEntry, PathBuf)> {
        let name = file_name(listed);
        let key = format!("log/{group}/{name}");
        let stream = format!("/v1/backup/files/log/{}/{name}", encode(group));
        let (entry, local) = self.copy_file_keep(listed, &stream, &key).await?;
        let scan = scan_log_file(&local, first).map_err(|e| BackupError::Segment {
            file: listed.to_string(),
            reason: format!("cannot read the copy: {e}"),
        })?;
        let entry = match (&scan.ending, active) {
            (LogEnding::Damaged { offset, reason }, false) => {
                let _ = std::fs::remove_file(&local);
                return Err(BackupError::Segment {
                    file: listed.to_string(),
                    reason: format!("closed log segment damaged at byte {offset}: {reason}"),
                });
            }
            (_, false) => entry,
            (ending, true) => {
                // A local copy of the active segment may end in an entry being written (and
                // in the pre-allocated zeros): keep the valid entries and an end marker.
                if let LogEnding::Damaged { offset, reason } = ending {
                    tracing::debug!(file = %listed, offset, "active log segment copy ends in an incomplete entry: {reason}");
                }
                cut_after(&local, scan.valid_len)?;
                let (size, sha256) = hash_file(&local)?;
                FileEntry {
                    path: key,
                    size,
                    sha256,
                }
            }
        };
        Ok((
            LogFileEntry {
                file: entry,
                first_index: first,
                last_index: scan.last_index(),
                last_term: scan.last_term,
                active,
            },
            local,
        ))
    }

    /// Fetches a listed file to staging; returns its entry and the staging path.
    async fn copy_file_keep(&self, listed: &str, stream: &str, key: &str) -> Result<(FileEntry, PathBuf)> {
        let local = self.staging.join(key.replace('/', "__"));
        let size_hint = std::fs::metadata(listed).ok().map(|m| m.len());
        self.progress.file_started(key, size_hint);
        let Fetched { size, sha256 } = self.server.fetch(listed, stream, &local).await?;
        self.progress.file_done(key, size);
        Ok((
            FileEntry {
                path: key.to_string(),
                size,
                sha256,
            },
            local,
        ))
    }
}

/// Cuts a staged copy after `valid_len` bytes and ends it with an end marker (four zero
/// bytes), synced before it is hashed and uploaded.
fn cut_after(local: &Path, valid_len: u64) -> std::io::Result<()> {
    let file = std::fs::OpenOptions::new().write(true).open(local)?;
    file.set_len(valid_len + 4)?;
    {
        use std::os::unix::fs::FileExt;
        file.write_all_at(&[0u8; 4], valid_len)?;
    }
    // Scratch, edited in place: nothing reads it after a crash; the sync surfaces a failed
    // write-back before the bytes are hashed and uploaded.
    myelin_fsutil::sync_all(&file)
}

/// Size and SHA-256 of a local file.
pub fn hash_file(path: &Path) -> std::io::Result<(u64, String)> {
    use sha2::Digest;
    use std::io::Read;
    let mut file = std::fs::File::open(path)?;
    let mut hasher = sha2::Sha256::new();
    let mut buffer = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = file.read(&mut buffer)?;
        if n == 0 {
            break;
        }
        hasher.update(&buffer[..n]);
        size += n as u64;
    }
    Ok((size, hex(&hasher.finalize())))
}
