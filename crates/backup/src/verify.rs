//! `myelin verify`: proves a backup whole, or names every problem.
//!
//! Checks, in order: the newest manifest's own checksum and its chain to earlier runs; every file
//! it lists is present with its size and SHA-256; nothing in the target that no manifest lists;
//! per type, closed segments contiguous (no gap, no overlap) with the active segment continuing
//! them; every block of every segment parsed with its CRC checked and the token range the
//! manifest records; the control-database zip opened and its database `PRAGMA integrity_check`ed.
//!
//! A cluster node's backup also has each replication group's log checked against the control
//! database that was copied before it (CLUSTER.md §10.8; the rules and why are in
//! docs/BACKUP.md, "Verify"): every entry's framing and CRC, files contiguous with terms that
//! never decrease, and the two relations openraft needs at start — the oldest entry present is
//! at most one past the applied position, and the purge point reaches at least to just before
//! it.

use std::collections::BTreeSet;
use std::io::Read;
use std::path::Path;

use myelin_format::segment::SegmentKind;

use crate::controldb::{ClusterFacts, facts_of_zip};
use crate::logscan::{LogEnding, scan_log_file};
use crate::manifest::{
    ClusterEntry, FamilyEntry, FileEntry, LogGroupEntry, MANIFEST_PREFIX, Manifest, RaftStateEntry, hex,
    parse_manifest_key,
};
use crate::run::hash_file;
use crate::scan::{Ending, scan_file};
use crate::target::Target;

/// One problem found, naming the file it is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub file: String,
    pub message: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.file, self.message)
    }
}

/// What verify found.
#[derive(Debug, Clone, Default)]
pub struct VerifyReport {
    pub run: Option<u64>,
    pub files_checked: usize,
    pub bytes_checked: u64,
    pub blocks_checked: u64,
    /// Log entries checked (a cluster node's backup).
    pub log_entries_checked: u64,
    pub problems: Vec<Problem>,
    /// What is worth knowing but does not make the backup unusable.
    pub notes: Vec<Problem>,
}

impl VerifyReport {
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }

    fn problem(&mut self, file: impl Into<String>, message: impl Into<String>) {
        self.problems.push(Problem {
            file: file.into(),
            message: message.into(),
        });
    }

    fn note(&mut self, file: impl Into<String>, message: impl Into<String>) {
        self.notes.push(Problem {
            file: file.into(),
            message: message.into(),
        });
    }
}

/// Verifies the backup in `target`. Errors only for failures to read the target at all;
/// everything wrong with the backup is a [`Problem`] in the report.
pub async fn verify(target: &dyn Target) -> Result<VerifyReport, crate::target::TargetError> {
    let mut report = VerifyReport::default();
    let objects = target.list("").await?;
    let mut runs: Vec<(u64, String)> = objects
        .iter()
        .filter_map(|o| parse_manifest_key(&o.key).map(|run| (run, o.key.clone())))
        .collect();
    runs.sort();
    let Some((_, latest_key)) = runs.last().cloned() else {
        report.problem(
            target.describe(),
            "no manifest: this is not a backup (or its first run never finished)",
        );
        return Ok(report);
    };

    // Every manifest: self-check, and the chain from the newest back to the first.
    let mut manifests = Vec::new();
    for (_, key) in &runs {
        match target.get_bytes(key).await? {
            None => report.problem(key, "listed but unreadable"),
            Some(bytes) => match Manifest::open(&bytes) {
                Ok(manifest) => manifests.push((key.clone(), manifest, bytes)),
                Err(e) => report.problem(key, e.to_string()),
            },
        }
    }
    let Some((_, latest, _)) = manifests.iter().find(|(k, _, _)| *k == latest_key).cloned() else {
        return Ok(report);
    };
    report.run = Some(latest.run);
    for (key, manifest, _) in &manifests {
        if let Some(previous) = &manifest.previous {
            match manifests.iter().find(|(k, _, _)| *k == previous.path) {
                None => report.problem(key, format!("its previous manifest {} is missing", previous.path)),
                Some((_, _, bytes)) => {
                    let actual = hex(&sha256(bytes));
                    if actual != previous.sha256 {
                        report.problem(
                            key,
                            format!("chain broken: {} changed since this run recorded it", previous.path),
                        );
                    }
                }
            }
        } else if manifest.run != 1 {
            report.problem(key, "run is not the first but names no previous manifest");
        }
    }

    // Files: present, sizes and digests; nothing unlisted.
    let listed: BTreeSet<&str> = manifests
        .iter()
        .flat_map(|(_, m, _)| m.files().into_iter().map(|f| f.path.as_str()))
        .collect();
    for object in &objects {
        if object.key.starts_with(MANIFEST_PREFIX) || listed.contains(object.key.as_str()) {
            continue;
        }
        report.problem(&object.key, "extra file: no manifest lists it");
    }
    let staging = match tempfile::Builder::new().prefix("myelin-verify-").tempdir() {
        Ok(dir) => dir,
        Err(e) => {
            report.problem("(local staging)", format!("cannot create a temporary directory: {e}"));
            return Ok(report);
        }
    };
    let present: BTreeSet<&str> = objects.iter().map(|o| o.key.as_str()).collect();

    let mut facts = None;
    if let Some(control_db) = &latest.control_db
        && let Some(local) = fetch_checked(target, control_db, &present, staging.path(), &mut report).await?
    {
        check_control_db(&local, &control_db.path, staging.path(), &mut report);
        match facts_of_zip(&local, staging.path()) {
            Ok(read) => facts = Some(read),
            // Only a cluster backup needs what the database says; the integrity check above
            // already reported a database that cannot be read.
            Err(reason) if latest.cluster.is_some() => report.problem(
                &control_db.path,
                format!("cannot read the raft state the log is checked against: {reason}"),
            ),
            Err(_) => {}
        }
    }
    for entry in &latest.log {
        fetch_checked(target, entry, &present, staging.path(), &mut report).await?;
    }
    if let Some(cluster) = &latest.cluster {
        check_cluster(target, cluster, facts.as_ref(), &present, staging.path(), &mut report).await?;
    }
    for (context, entry) in &latest.contexts {
        for (kind, family) in [
            (SegmentKind::Events, &entry.events),
            (SegmentKind::Snapshots, &entry.snapshots),
        ] {
            check_family(target, context, kind, family, &present, staging.path(), &mut report).await?;
        }
        let last = entry.events.last_token().map_or(-1, |t| t as i64);
        if entry.last_token != last {
            report.problem(
                format!("{latest_key} ({context})"),
                format!(
                    "records last token {} but its event segments end at {last}",
                    entry.last_token
                ),
            );
        }
    }
    Ok(report)
}

fn sha256(bytes: &[u8]) -> Vec<u8> {
    use sha2::Digest;
    sha2::Sha256::digest(bytes).to_vec()
}

/// Downloads a listed file into staging and checks size and digest; `None` when it is absent.
async fn fetch_checked(
    target: &dyn Target,
    entry: &FileEntry,
    present: &BTreeSet<&str>,
    staging: &Path,
    report: &mut VerifyReport,
) -> Result<Option<std::path::PathBuf>, crate::target::TargetError> {
    if !present.contains(entry.path.as_str()) {
        report.problem(&entry.path, "missing");
        return Ok(None);
    }
    let local = staging.join(entry.path.replace('/', "__"));
    target.get_to_file(&entry.path, &local).await?;
    match hash_file(&local) {
        Err(e) => {
            report.problem(&entry.path, format!("cannot read the downloaded copy: {e}"));
            return Ok(None);
        }
        Ok((size, digest)) => {
            report.files_checked += 1;
            report.bytes_checked += size;
            if size != entry.size {
                report.problem(&entry.path, format!("size {size}, the manifest says {}", entry.size));
            }
            if digest != entry.sha256 {
                report.problem(
                    &entry.path,
                    format!("SHA-256 {digest}, the manifest says {}", entry.sha256),
                );
            }
        }
    }
    Ok(Some(local))
}

async fn check_family(
    target: &dyn Target,
    context: &str,
    kind: SegmentKind,
    family: &FamilyEntry,
    present: &BTreeSet<&str>,
    staging: &Path,
    report: &mut VerifyReport,
) -> Result<(), crate::target::TargetError> {
    let what = format!("{context}/{}", kind.data_suffix());
    let mut expected_next: Option<u64> = None;
    let segments = family
        .closed
        .iter()
        .map(|s| (s, true))
        .chain(family.active.iter().map(|s| (s, false)));
    for (segment, closed) in segments {
        let Some(data) = segment.files.first() else {
            report.problem(&what, format!("segment {} lists no file", segment.segment));
            continue;
        };
        if let Some(next) = expected_next
            && segment.first_token != next
        {
            let kind = if segment.first_token > next { "gap" } else { "overlap" };
            report.problem(
                &data.path,
                format!(
                    "{kind}: starts at token {}, the segment before ends at {}",
                    segment.first_token,
                    next - 1
                ),
            );
        }
        if segment.first_token != segment.segment {
            report.problem(&data.path, "first token differs from the segment number");
        }
        expected_next = Some(segment.last_token.map_or(segment.first_token, |t| t + 1));
        for (i, file) in segment.files.iter().enumerate() {
            let Some(local) = fetch_checked(target, file, present, staging, report).await? else {
                continue;
            };
            if i == 0 {
                check_segment(&local, segment.segment, segment.last_token, closed, &file.path, report);
            }
            let _ = std::fs::remove_file(&local);
        }
    }
    if family.last_closed_segment != family.closed.last().map_or(-1, |s| s.segment as i64) {
        report.problem(&what, "lastClosedSegment is not the newest closed segment");
    }
    Ok(())
}

fn check_segment(
    local: &Path,
    number: u64,
    last_token: Option<u64>,
    closed: bool,
    key: &str,
    report: &mut VerifyReport,
) {
    let scan = match scan_file(local, number) {
        Ok(scan) => scan,
        Err(e) => {
            report.problem(key, format!("cannot read: {e}"));
            return;
        }
    };
    report.blocks_checked += scan.block_ends.len() as u64;
    match (&scan.ending, closed) {
        (Ending::Damaged { offset, reason }, _) => {
            report.problem(key, format!("damaged at byte {offset}: {reason}"));
        }
        (Ending::Rolled, true) | (Ending::End, false) => {}
        (ending, true) => report.problem(
            key,
            format!("closed segment does not end with its roll marker ({ending:?})"),
        ),
        (ending, false) => report.problem(
            key,
            format!("active segment copy does not end with an end marker ({ending:?})"),
        ),
    }
    if scan.last_token() != last_token {
        report.problem(
            key,
            format!(
                "holds tokens up to {:?}, the manifest says {last_token:?}",
                scan.last_token()
            ),
        );
    }
}

/// A cluster node's logs against its control database (see the module doc).
async fn check_cluster(
    target: &dyn Target,
    cluster: &ClusterEntry,
    facts: Option<&ClusterFacts>,
    present: &BTreeSet<&str>,
    staging: &Path,
    report: &mut VerifyReport,
) -> Result<(), crate::target::TargetError> {
    if let Some(identity) = facts.and_then(|f| f.identity.as_ref())
        && (cluster.cluster_id.as_deref() != Some(identity.cluster_id.as_str())
            || cluster.node_name.as_deref() != Some(identity.node_name.as_str()))
    {
        report.problem(
            "manifest (cluster)",
            format!(
                "records cluster {:?}, node {:?}; the control database says cluster {:?}, node {:?}",
                cluster.cluster_id, cluster.node_name, identity.cluster_id, identity.node_name
            ),
        );
    }
    if let Some(facts) = facts {
        for group in facts.groups.keys() {
            if !cluster.groups.contains_key(group) {
                report.problem(
                    format!("log/{group}"),
                    "the control database keeps Raft state for this group, but the backup holds no log of it",
                );
            }
        }
    }
    for (group, entry) in &cluster.groups {
        let state = match facts {
            Some(facts) => match facts.groups.get(group) {
                Some(state) => {
                    let state = RaftStateEntry::from(state);
                    if entry.raft_state.as_ref() != Some(&state) {
                        report.problem(
                            format!("log/{group}"),
                            format!(
                                "the manifest records the raft state {:?}, the control database holds {state:?}",
                                entry.raft_state
                            ),
                        );
                    }
                    Some(state)
                }
                None => {
                    report.problem(
                        format!("log/{group}"),
                        "the backup holds a log of this group, but the control database keeps no Raft state for it",
                    );
                    None
                }
            },
            None => entry.raft_state.clone(),
        };
        check_log_group(target, group, entry, state.as_ref(), present, staging, report).await?;
    }
    Ok(())
}

/// One group's log files: present and whole, every entry valid, contiguous, and related to the
/// control database's positions as openraft needs them (docs/BACKUP.md, "Verify").
async fn check_log_group(
    target: &dyn Target,
    group: &str,
    entry: &LogGroupEntry,
    state: Option<&RaftStateEntry>,
    present: &BTreeSet<&str>,
    staging: &Path,
    report: &mut VerifyReport,
) -> Result<(), crate::target::TargetError> {
    let what = format!("log/{group}");
    let Some(first_file) = entry.files.first() else {
        report.problem(&what, "the manifest lists no log file for this group");
        return Ok(());
    };
    let mut next: Option<u64> = None;
    let mut last_term: Option<u64> = None;
    let mut last_index: Option<u64> = None;
    for (i, file) in entry.files.iter().enumerate() {
        let key = file.file.path.as_str();
        let is_last = i + 1 == entry.files.len();
        if file.active != is_last {
            report.problem(
                key,
                "only the newest log file may be the active one, and the newest must be",
            );
        }
        let name = key.rsplit('/').next().unwrap_or(key);
        if key != format!("{what}/{name}") || myelin_format::raftlog::parse_file_name(name) != Some(file.first_index) {
            report.problem(
                key,
                format!("is not the log file {what}/ of first index {}", file.first_index),
            );
        }
        if let Some(expected) = next
            && file.first_index != expected
        {
            let kind = if file.first_index > expected {
                format!("gap: entries {expected} to {} are missing", file.first_index - 1)
            } else {
                format!("overlap: starts at {}, before {expected}", file.first_index)
            };
            report.problem(key, format!("{kind} (the log is not contiguous)"));
        }
        // Carries on from the manifest's word when the file cannot be read, so that one
        // missing file is reported once, not as a gap after it too.
        next = Some(file.last_index.map_or(file.first_index, |last| last + 1));
        let Some(local) = fetch_checked(target, &file.file, present, staging, report).await? else {
            continue;
        };
        let scan = match scan_log_file(&local, file.first_index) {
            Ok(scan) => scan,
            Err(e) => {
                report.problem(key, format!("cannot read: {e}"));
                continue;
            }
        };
        let _ = std::fs::remove_file(&local);
        report.log_entries_checked += scan.entries;
        match (&scan.ending, file.active) {
            (LogEnding::Damaged { offset, reason }, _) => {
                report.problem(key, format!("damaged at byte {offset}: {reason}"));
            }
            (LogEnding::Closed | LogEnding::End | LogEnding::EndOfFile, false) | (LogEnding::End, true) => {}
            (ending, true) => report.problem(
                key,
                format!("active log segment copy does not end with an end marker ({ending:?})"),
            ),
        }
        if scan.last_index() != file.last_index || scan.last_term != file.last_term {
            report.problem(
                key,
                format!(
                    "holds entries up to {:?} (term {:?}), the manifest says {:?} (term {:?})",
                    scan.last_index(),
                    scan.last_term,
                    file.last_index,
                    file.last_term
                ),
            );
        }
        if let (Some(before), Some(first)) = (last_term, scan.first_term)
            && first < before
        {
            report.problem(
                key,
                format!("its first term {first} is lower than the term {before} before it: terms never decrease"),
            );
        }
        last_term = scan.last_term.or(last_term);
        last_index = scan.last_index().or(last_index);
        next = Some(scan.next_index());
    }
    if entry.first_index != first_file.first_index || entry.last_index != last_index {
        report.problem(
            &what,
            format!(
                "the manifest records entries {} to {:?}, the files hold {} to {last_index:?}",
                entry.first_index, entry.last_index, first_file.first_index
            ),
        );
    }
    let Some(state) = state else {
        report.note(&what, "no raft state to check the log against");
        return Ok(());
    };
    check_log_against_state(&what, first_file.first_index, last_index, state, report);
    Ok(())
}

/// CLUSTER.md §10.8, in openraft's numbering (file index − 1), with "none" as −1:
/// * `first − 1 ≤ applied`: at start openraft re-applies the entries after the applied
///   position; the first of them must still be in the log;
/// * `purged ≥ first − 1`: a file is deleted only after the purge point covering it was
///   recorded, so a log starting later than one past the purge point lost files.
fn check_log_against_state(
    what: &str,
    first_file_index: u64,
    last_file_index: Option<u64>,
    state: &RaftStateEntry,
    report: &mut VerifyReport,
) {
    for problem in log_state_problems(first_file_index, state) {
        report.problem(what, problem);
    }
    let last = last_file_index.map_or(i128::from(first_file_index) - 2, |l| i128::from(l) - 1);
    if let Some(committed) = state.committed
        && i128::from(committed.index) > last
    {
        report.note(
            what,
            format!(
                "the control database says {} is committed, past the last entry copied ({last}); \
                 a --whole-cluster restore lowers it to that entry",
                committed.index
            ),
        );
    }
}

/// What breaks the two relations of [`check_log_against_state`] for a log whose oldest file
/// is named `first_file_index`; restore refuses to lay such a log down.
pub(crate) fn log_state_problems(first_file_index: u64, state: &RaftStateEntry) -> Vec<String> {
    let Some(first) = first_file_index.checked_sub(1) else {
        return vec!["a log file named 0: log-entry indexes start at 1".to_string()];
    };
    let first = i128::from(first);
    let applied = state.applied.map_or(-1, |p| i128::from(p.index));
    let purged = state.purged.map_or(-1, |p| i128::from(p.index));
    let mut problems = Vec::new();
    if first - 1 > applied {
        problems.push(format!(
            "the oldest log entry present is {first} (openraft's index; file index {first_file_index}), but the \
             control database says entries are applied only up to {applied}: entries {} to {} are missing, \
             and a node restored from this backup could not re-apply them",
            applied + 1,
            first - 1
        ));
    }
    if purged < first - 1 {
        problems.push(format!(
            "the oldest log entry present is {first} (openraft's index; file index {first_file_index}), but the \
             control database records the log purged only through {purged}: entries {} to {} are gone without \
             a purge point covering them (a log file is missing)",
            purged + 1,
            first - 1
        ));
    }
    problems
}

fn check_control_db(zip_path: &Path, key: &str, staging: &Path, report: &mut VerifyReport) {
    let result = (|| -> Result<String, String> {
        let file = std::fs::File::open(zip_path).map_err(|e| e.to_string())?;
        let mut archive = zip::ZipArchive::new(file).map_err(|e| format!("not a zip: {e}"))?;
        let mut database = archive
            .by_name(myelin_control::DB_FILE_NAME)
            .map_err(|e| format!("no {} inside: {e}", myelin_control::DB_FILE_NAME))?;
        let mut bytes = Vec::new();
        database
            .read_to_end(&mut bytes)
            .map_err(|e| format!("cannot unzip the database: {e}"))?;
        let path = staging.join("verify-controldb.sqlite3");
        std::fs::write(&path, bytes).map_err(|e| e.to_string())?;
        let connection = rusqlite::Connection::open_with_flags(&path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .map_err(|e| format!("cannot open the database: {e}"))?;
        connection
            .query_row("PRAGMA integrity_check", [], |row| row.get::<_, String>(0))
            .map_err(|e| format!("integrity check failed to run: {e}"))
    })();
    match result {
        Ok(answer) if answer == "ok" => {}
        Ok(answer) => report.problem(key, format!("database integrity check: {answer}")),
        Err(message) => report.problem(key, message),
    }
}
