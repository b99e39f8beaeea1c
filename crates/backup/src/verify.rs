//! `myelin verify`: proves a backup whole, or names every problem.
//!
//! Checks, in order: the newest manifest's own checksum and its chain to earlier runs; every file
//! it lists is present with its size and SHA-256; nothing in the target that no manifest lists;
//! per type, closed segments contiguous (no gap, no overlap) with the active segment continuing
//! them; every block of every segment parsed with its CRC checked and the token range the
//! manifest records; the control-database zip opened and its database `PRAGMA integrity_check`ed.

use std::collections::BTreeSet;
use std::io::Read;
use std::path::Path;

use myelin_format::segment::SegmentKind;

use crate::manifest::{FamilyEntry, FileEntry, MANIFEST_PREFIX, Manifest, hex, parse_manifest_key};
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
    pub problems: Vec<Problem>,
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

    if let Some(control_db) = &latest.control_db
        && let Some(local) = fetch_checked(target, control_db, &present, staging.path(), &mut report).await?
    {
        check_control_db(&local, &control_db.path, staging.path(), &mut report);
    }
    for entry in &latest.log {
        fetch_checked(target, entry, &present, staging.path(), &mut report).await?;
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
