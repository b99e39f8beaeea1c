//! Reading one event at an index position inside a block already verified, with a guess of
//! how much to read so most events take a single `pread`.

use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};

use bytes::Bytes;
use myelin_format::index::IndexPosition;
use myelin_format::segment::{BLOCK_HEADER_BYTES, CRC_BYTES, EVENT_LEN_BYTES};

use crate::error::{Result, StoreError};

/// What [`read_event`] reads before it knows an event's length: a little more than the events
/// read lately, so that most events take one `pread` and little beyond them is copied.
/// Grows at once to fit a larger event, shrinks slowly towards smaller ones.
pub(crate) struct EventReadGuess(AtomicU32);

impl EventReadGuess {
    /// Before any event was read.
    const INITIAL_BYTES: u32 = 1024;
    /// Room left beyond the event sizes seen, and the granule of the guess.
    const SLACK_BYTES: u32 = 128;
    const MAX_BYTES: u32 = 64 * 1024;

    pub fn new() -> Self {
        EventReadGuess(AtomicU32::new(Self::INITIAL_BYTES))
    }

    fn bytes(&self) -> usize {
        self.0.load(Ordering::Relaxed) as usize
    }

    /// Learns from an event that needed `needed` bytes (length prefix included).
    fn learn(&self, needed: usize) {
        let wanted = u32::try_from(needed)
            .unwrap_or(u32::MAX)
            .saturating_add(Self::SLACK_BYTES)
            .next_multiple_of(Self::SLACK_BYTES)
            .min(Self::MAX_BYTES);
        let guess = self.0.load(Ordering::Relaxed);
        // Both are whole granules, and so is every step: a sixteenth of the way, at least one.
        let next = if wanted >= guess {
            wanted
        } else {
            let gap = guess - wanted;
            guess - (gap / 16).next_multiple_of(Self::SLACK_BYTES).min(gap)
        };
        if next != guess {
            // Racing readers may overwrite each other's update: any of them is a fine guess.
            self.0.store(next, Ordering::Relaxed);
        }
    }
}

/// Reads the event whose length prefix is at `position.position`, inside the verified block of
/// `block_bytes` bytes at `position.block`. `None` when the index points outside the block's
/// event area or the length runs past it.
pub(super) fn read_event(
    file: &std::fs::File,
    path: &Path,
    position: &IndexPosition,
    block_bytes: u32,
    limit: u64,
    guess: &EventReadGuess,
) -> Result<Option<Bytes>> {
    let block = u64::from(position.block);
    let area_start = block + BLOCK_HEADER_BYTES as u64;
    let area_end = (block + u64::from(block_bytes))
        .saturating_sub(CRC_BYTES as u64)
        .min(limit);
    let at = u64::from(position.position);
    if at < area_start || at + EVENT_LEN_BYTES as u64 > area_end {
        return Ok(None);
    }
    let available = (area_end - at) as usize;
    let mut buf = bytes::BytesMut::zeroed(available.min(guess.bytes()));
    let io_error = |e| StoreError::io(path.to_path_buf(), e);
    let read = crate::io::read_at_most(file, &mut buf, at).map_err(io_error)?;
    if read < buf.len() {
        return Err(StoreError::corrupt(
            path.to_path_buf(),
            at,
            format!("file ends inside a verified block ({read} of {} bytes read)", buf.len()),
        ));
    }
    let length = i32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
    let Ok(length) = usize::try_from(length) else {
        return Ok(None);
    };
    let end = EVENT_LEN_BYTES + length;
    if end > available {
        return Ok(None);
    }
    guess.learn(end);
    if end > buf.len() {
        let have = buf.len();
        buf.resize(end, 0);
        let read = crate::io::read_at_most(file, &mut buf[have..], at + have as u64).map_err(io_error)?;
        if read < end - have {
            return Err(StoreError::corrupt(
                path.to_path_buf(),
                at,
                "file ends inside a verified block",
            ));
        }
    }
    Ok(Some(buf.freeze().slice(EVENT_LEN_BYTES..end)))
}

#[cfg(test)]
mod tests {
    use super::EventReadGuess;

    #[test]
    fn the_event_read_guess_grows_at_once_and_shrinks_slowly() {
        let guess = EventReadGuess::new();
        assert_eq!(guess.bytes(), 1024);
        guess.learn(3000);
        assert_eq!(
            guess.bytes(),
            3200,
            "a larger event: its size, slack added, in granules"
        );
        guess.learn(300);
        assert_eq!(guess.bytes(), 2944, "one smaller event moves it a sixteenth of the way");
        for _ in 0..200 {
            guess.learn(300);
        }
        assert_eq!(guess.bytes(), 512, "settles just above the events read lately");
        guess.learn(1 << 30);
        assert_eq!(guess.bytes(), 64 * 1024, "bounded: a huge event takes a second read");
    }
}
