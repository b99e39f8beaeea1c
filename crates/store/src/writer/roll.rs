//! Making room for a transaction: closing the full active segment with its roll marker and
//! creating its successor, or replacing an empty active segment by a larger one.

use std::fs::File;
use std::path::Path;
use std::sync::Arc;

use myelin_format::segment::{FILE_HEADER_BYTES, FileHeader, MARKER_BYTES, ROLL_MARKER};
use tracing::{debug, warn};

use super::Writer;
use crate::error::{Result, StoreError};
use crate::io::{create_preallocated, parent, sync_dir, temp_path, write_all_at};
use crate::segments::{ActiveSegment, ActiveView, ClosedSegment, MemoryIndex, bloom_of};

/// Why a roll failed: the active file could not be closed (poisons the store), or its
/// successor could not be created (retried by the next append).
enum Rolling {
    Active(StoreError),
    NewFile(StoreError),
}

/// Creates a pre-allocated segment file; a partly created file is removed again, so a retry
/// (or a restart) starts clean. A full disk is reported as [`StoreError::NoSpace`].
fn create_segment(path: &Path, size: u64) -> Result<Arc<File>, Rolling> {
    match create_preallocated(path, size, &FileHeader::CURRENT.encode()) {
        Ok(file) => Ok(Arc::new(file)),
        Err(e) => {
            let _ = std::fs::remove_file(path);
            Err(Rolling::NewFile(e.into_no_space()))
        }
    }
}

impl Writer {
    /// The transaction does not fit in the active segment: flush what is staged, then roll to
    /// a new segment (or, if the active one is still empty, replace it with a larger one).
    ///
    /// A failure to write or sync the active file poisons the store. A failure to create the
    /// new file (a full disk, above all) does not: the active file is left whole, the append
    /// that needed the room fails with the error, and the next append tries again.
    pub(super) fn make_room(&mut self, tx_bytes: usize) -> Result<()> {
        self.flush();
        self.log.check_writable()?;
        let needed = (FILE_HEADER_BYTES + tx_bytes + MARKER_BYTES) as u64;
        let size = self.log.config.segment_size_bytes.max(needed);
        let result = if self.end == FILE_HEADER_BYTES as u64 && !self.successor_pending {
            self.replace_empty_active(size)
        } else {
            self.roll(size)
        };
        match result {
            Err(Rolling::Active(e)) => {
                self.log.poison(format!("segment roll failed: {e}"));
                Err(e)
            }
            Err(Rolling::NewFile(e)) => {
                warn!(file = %self.path.display(), error = %e, "cannot create the next segment; appends fail until it can be");
                Err(e)
            }
            Ok(()) => Ok(()),
        }
    }

    /// Closes the active segment with its roll marker (once), then creates its successor and
    /// makes it the active one. Recovery treats a newest file that ends in a roll marker as
    /// closed and creates the successor itself, so a crash between the two steps is safe.
    fn roll(&mut self, size: u64) -> Result<(), Rolling> {
        // The successor is named after the token that follows the active segment's last
        // event; a name off by one would make recovery see a gap or an overlap.
        let active_end = {
            let segments = self.log.segments.read();
            segments.active.first_token + segments.active.view.read().count
        };
        if active_end != self.next_token {
            let reason = format!(
                "rolling at token {}, but the segment ends at {active_end}",
                self.next_token
            );
            return Err(Rolling::Active(self.inconsistent(reason)));
        }
        if !self.successor_pending {
            fail::fail_point!("store::roll", |_| Err(Rolling::Active(StoreError::io(
                self.path.to_path_buf(),
                std::io::Error::from_raw_os_error(libc::EIO)
            ))));
            let io = |e| Rolling::Active(StoreError::io(self.path.to_path_buf(), e));
            write_all_at(&self.file, &ROLL_MARKER.to_be_bytes(), self.end).map_err(io)?;
            self.sync_active().map_err(io)?;
            self.unsynced_since = None;
            self.successor_pending = true;
        }
        let path: Arc<Path> = self.log.dir.join(self.log.kind.file_name(self.next_token)).into();
        let file = create_segment(&path, size)?;
        self.successor_pending = false;
        let active = empty_active(self.next_token, path.clone(), file.clone(), size);
        let closed = {
            let mut segments = self.log.segments.write();
            let old = std::mem::replace(&mut segments.active, active);
            let mut view = old.view.write();
            let memory = MemoryIndex {
                map: std::mem::take(&mut view.index),
                seek: std::mem::take(&mut view.seek),
            };
            let closed = ClosedSegment::new(old.first_token, view.count, view.first_timestamp, old.path.clone());
            closed.set_data_file_bytes(old.file_bytes);
            *closed.bloom.write() = Some(Arc::new(bloom_of(
                &memory.map,
                self.log.config.bloom_false_positive_rate,
            )));
            *closed.memory_index.write() = Some(Arc::new(memory));
            let closed = Arc::new(closed);
            segments.closed.push(closed.clone());
            closed
        };
        debug!(closed = closed.first_token, next = self.next_token, "rolled segment");
        let _ = self.indexer.send(closed);
        self.file = file;
        self.path = path;
        self.capacity = size;
        self.end = FILE_HEADER_BYTES as u64;
        Ok(())
    }

    /// Axon's rule for a transaction larger than a segment: the empty active file is replaced
    /// by one big enough to hold it. The larger file is made under a temporary name and renamed
    /// over the old one, so a failure leaves the old file in place.
    fn replace_empty_active(&mut self, size: u64) -> Result<(), Rolling> {
        let path = self.path.clone();
        let tmp = temp_path(&path);
        let file = create_segment(&tmp, size)?;
        if let Err(e) = myelin_fsutil::rename(&tmp, &path) {
            let _ = std::fs::remove_file(&tmp);
            return Err(Rolling::NewFile(StoreError::io(path.to_path_buf(), e).into_no_space()));
        }
        // The name now holds the larger file: it is the active one whatever happens next.
        let active = empty_active(self.next_token, path.clone(), file.clone(), size);
        self.log.segments.write().active = active;
        self.file = file;
        self.capacity = size;
        // A failed directory sync is a failed sync: poison (the rename may not be durable).
        sync_dir(parent(&path)).map_err(Rolling::Active)
    }
}

/// A freshly created, empty active segment of `file_bytes` (pre-allocated).
fn empty_active(first_token: u64, path: Arc<Path>, file: Arc<File>, file_bytes: u64) -> Arc<ActiveSegment> {
    // `create_preallocated` synced the header.
    let view = ActiveView {
        end: FILE_HEADER_BYTES as u64,
        synced_end: FILE_HEADER_BYTES as u64,
        first_timestamp: i64::MIN,
        ..ActiveView::default()
    };
    Arc::new(ActiveSegment {
        first_token,
        path,
        file,
        file_bytes,
        view: parking_lot::RwLock::new(view),
    })
}
