//! `myelin restore`: lays a backup down as a data directory a server starts on — to its end, or
//! to the last transaction at or before a token (docs/BACKUP.md).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use myelin_control::{BackupRecord, ControlDb, now_ms};
use myelin_format::segment::SegmentKind;
use myelin_fsutil::AtomicFile;

use crate::manifest::{FamilyEntry, FileEntry, Manifest};
use crate::run::{hash_file, latest_manifest};
use crate::scan::scan_file;
use crate::target::{Target, TargetError};

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
}

pub type Result<T> = std::result::Result<T, RestoreError>;

#[derive(Debug, Clone)]
pub struct RestoreOptions {
    /// The data directory a server will use with `--data`: `<dir>/<context>/` for segments,
    /// `<dir>/myelin-controldb.sqlite3` for the control database.
    pub data_dir: PathBuf,
    /// Restore only events up to the last transaction ending at or before this token.
    pub to_token: Option<u64>,
    /// Replace what `data_dir` holds.
    pub force: bool,
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
}

/// Restores the newest backup in `target` into `options.data_dir`.
pub async fn restore(target: &dyn Target, options: &RestoreOptions) -> Result<RestoreReport> {
    let (_, manifest, _) = latest_manifest(target).await?.ok_or(RestoreError::NoBackup)?;
    let dir = &options.data_dir;
    myelin_fsutil::create_dir_all_durably(dir)?;
    let occupied = std::fs::read_dir(dir)?.next().is_some();
    if occupied && !options.force {
        return Err(RestoreError::NotEmpty(dir.display().to_string()));
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
    let mut report = RestoreReport {
        run: manifest.run,
        ..RestoreReport::default()
    };

    if let Some(control_db) = &manifest.control_db {
        restore_control_db(target, control_db, dir, &mut report).await?;
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
    // Every restored file was synced into its directory as it was renamed there; what remains
    // is what only this directory saw: the removals of --force and of the downloaded zip.
    myelin_fsutil::sync_dir(dir)?;
    record(dir, &manifest, &report)?;
    Ok(report)
}

/// Unzips the control database next to the segments.
async fn restore_control_db(
    target: &dyn Target,
    entry: &FileEntry,
    dir: &Path,
    report: &mut RestoreReport,
) -> Result<()> {
    let zip_path = dir.join(".restore-controldb.zip");
    download_checked(target, entry, &zip_path, report).await?;
    let file = std::fs::File::open(&zip_path)?;
    let mut archive = zip::ZipArchive::new(file).map_err(|e| RestoreError::Damaged {
        file: entry.path.clone(),
        reason: format!("not a zip: {e}"),
    })?;
    let mut database = archive
        .by_name(myelin_control::DB_FILE_NAME)
        .map_err(|e| RestoreError::Damaged {
            file: entry.path.clone(),
            reason: format!("no {} inside: {e}", myelin_control::DB_FILE_NAME),
        })?;
    myelin_fsutil::write_atomically_with(&dir.join(myelin_control::DB_FILE_NAME), |file| {
        std::io::copy(&mut database, file).map(drop)
    })?;
    drop(database);
    // A scratch file: a plain remove, made durable by the directory sync that ends the restore.
    std::fs::remove_file(&zip_path)?;
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
fn record(dir: &Path, manifest: &Manifest, report: &RestoreReport) -> Result<()> {
    let control = ControlDb::open(dir)?;
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
