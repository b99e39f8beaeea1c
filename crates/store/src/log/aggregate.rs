//! Aggregate reads: one aggregate's events (or snapshots) found through the indexes, newest
//! segment first, each checked to be the event the index promised.

use bytes::Bytes;
use myelin_format::event::EventFields;
use myelin_format::index::IndexPosition;

use super::SegmentLog;
use super::event_read::read_event;
use crate::error::{Result, StoreError};
use crate::reader::{ChunkReader, VerifiedBlock};
use crate::segments::Located;

/// One aggregate's events in one segment, found through the indexes.
struct Found {
    segment: Located,
    positions: Vec<IndexPosition>,
}

impl SegmentLog {
    /// says the positions found so far reach back far enough.
    fn find(&self, aggregate: &str, min_token: u64, enough: impl Fn(&[IndexPosition]) -> bool) -> Result<Vec<Found>> {
        // The active segment's positions are read under the segments lock: a roll (which takes
        // that lock to move the active index into the closed list) must not happen between
        // taking the segment lists and reading the active index, or the positions of the
        // segment that just rolled would be in neither (and a just-acknowledged event missed).
        let (closed, active, active_positions) = {
            let segments = self.segments.read();
            let positions = segments.active.view.read().index.get(aggregate).cloned();
            (
                segments.closed.clone(),
                segments.active.clone(),
                positions.unwrap_or_default(),
            )
        };
        let mut found = Vec::new();
        if !active_positions.is_empty() {
            let done = enough(&active_positions);
            found.push(Found {
                segment: Located::Active(active),
                positions: active_positions,
            });
            if done {
                return Ok(found);
            }
        }
        for segment in closed.iter().rev() {
            if segment.end_token() <= min_token {
                break;
            }
            let positions = self.closed_positions(segment, aggregate)?;
            if positions.is_empty() {
                continue;
            }
            let done = enough(&positions);
            found.push(Found {
                segment: Located::Closed(segment.clone()),
                positions,
            });
            if done {
                break;
            }
        }
        Ok(found)
    }

    /// Highest sequence number of `aggregate`, through the indexes (never a scan).
    pub fn highest_sequence(&self, aggregate: &str) -> Result<Option<i64>> {
        let found = self.find(aggregate, 0, |_| true)?;
        Ok(found.first().and_then(|f| f.positions.iter().map(|p| p.sequence).max()))
    }

    /// Events of `aggregate` with `first_seq <= sequence <= last_seq`, ascending.
    pub fn aggregate_events(
        &self,
        aggregate: &str,
        first_seq: i64,
        last_seq: i64,
        min_token: u64,
    ) -> Result<Vec<Bytes>> {
        let found = self.find(aggregate, min_token, |p| {
            p.first().is_some_and(|p| p.sequence <= first_seq)
        })?;
        let mut events = Vec::new();
        for f in found.into_iter().rev() {
            let positions: Vec<IndexPosition> = f
                .positions
                .into_iter()
                .filter(|p| p.sequence >= first_seq && p.sequence <= last_seq)
                .collect();
            events.extend(self.read_positions(&f.segment, aggregate, &positions)?);
        }
        Ok(events)
    }

    /// Events of `aggregate` with `min_seq <= sequence < max_seq`, highest sequence first,
    /// at most `max_results` (0 = all). Used for snapshots, where sequences need not ascend.
    pub fn aggregate_events_descending(
        &self,
        aggregate: &str,
        min_seq: i64,
        max_seq: i64,
        max_results: usize,
    ) -> Result<Vec<Bytes>> {
        let found = self.find(aggregate, 0, |_| false)?;
        let mut candidates: Vec<(i64, usize, IndexPosition)> = Vec::new();
        for (i, f) in found.iter().enumerate() {
            candidates.extend(
                f.positions
                    .iter()
                    .filter(|p| p.sequence >= min_seq && p.sequence < max_seq)
                    .map(|p| (p.sequence, i, *p)),
            );
        }
        // Highest sequence first; for equal sequences the newest write wins.
        candidates.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)).then(b.2.position.cmp(&a.2.position)));
        candidates.dedup_by_key(|c| c.0);
        if max_results > 0 {
            candidates.truncate(max_results);
        }
        let mut out = Vec::with_capacity(candidates.len());
        for (_, i, position) in candidates {
            out.extend(self.read_positions(&found[i].segment, aggregate, &[position])?);
        }
        Ok(out)
    }

    /// Reads the events at `positions`, checking that each is the event the index promised.
    /// A block is read whole and its CRC checked the first time this process reads it here;
    /// after that ([`crate::verified::VerifiedBlocks`]) only the event is read, within the
    /// block's event area.
    fn read_positions(&self, segment: &Located, aggregate: &str, positions: &[IndexPosition]) -> Result<Vec<Bytes>> {
        if positions.is_empty() {
            return Ok(Vec::new());
        }
        let (segment_first, path, file, limit) = match segment {
            Located::Active(active) => (
                active.first_token,
                active.path.clone(),
                active.file.clone(),
                active.view.read().end,
            ),
            Located::Closed(closed) => {
                let (file, len) = self.open_files.get(closed)?;
                (closed.first_token, closed.path.clone(), file, len)
            }
        };
        let mut reader = ChunkReader::positioned(file.clone(), path.clone());
        let mut out = Vec::with_capacity(positions.len());
        let mut current: Option<VerifiedBlock> = None;
        let verified = self.verified.get_all(segment_first, positions.iter().map(|p| p.block));
        for (p, verified) in positions.iter().zip(verified) {
            let block_offset = u64::from(p.block);
            let event = if let Some(block) = current.as_ref().filter(|b| b.offset == block_offset) {
                event_in_block(block, p)
            } else if let Some(block_bytes) = verified {
                read_event(&file, &path, p, block_bytes, limit, &self.event_read_guess)?
            } else {
                current = reader.expect_block(block_offset, limit)?;
                current.as_ref().and_then(|block| {
                    let block_bytes = u32::try_from(block.total_bytes()).ok()?;
                    self.verified.insert(segment_first, p.block, block_bytes);
                    event_in_block(block, p)
                })
            };
            let Some(event) = event else {
                return Err(StoreError::corrupt(
                    path.to_path_buf(),
                    u64::from(p.position),
                    "index points at no event: rebuild the index (delete the index file)",
                ));
            };
            let fields = EventFields::parse(&event)
                .map_err(|e| StoreError::corrupt(path.to_path_buf(), u64::from(p.position), e))?;
            if fields.aggregate_identifier != aggregate || fields.aggregate_sequence_number != p.sequence {
                return Err(StoreError::corrupt(
                    path.to_path_buf(),
                    u64::from(p.position),
                    format!(
                        "index says {aggregate}#{}, event is {}#{}",
                        p.sequence, fields.aggregate_identifier, fields.aggregate_sequence_number
                    ),
                ));
            }
            out.push(event);
        }
        Ok(out)
    }
}

/// The event of a whole, verified block that `position` points at.
fn event_in_block(block: &VerifiedBlock, position: &IndexPosition) -> Option<Bytes> {
    let rel = position.position.checked_sub(position.block)?;
    block.events().find(|(offset, _)| *offset == rel).map(|(_, e)| e)
}
