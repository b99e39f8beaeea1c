//! Axon's GetTokenAt: the first token at or after an instant.

use myelin_format::event::EventFields;

use super::{Cursor, SegmentLog};
use crate::error::{Result, StoreError};

impl SegmentLog {
    /// Axon's GetTokenAt: the newest segment whose first event is at or before `instant_ms`,
    /// then the first token in it at or after the instant (or the next segment's first token).
    pub fn token_at(&self, instant_ms: i64) -> Result<i64> {
        let head = self.head();
        let (closed, active) = {
            let segments = self.segments.read();
            (segments.closed.clone(), segments.active.clone())
        };
        let first = closed.first().map_or(active.first_token, |s| s.first_token);
        if head == first {
            return Ok(-1);
        }
        let active_ts = active.view.read().first_timestamp;
        let mut starts: Vec<(u64, i64)> = closed.iter().map(|s| (s.first_token, s.first_timestamp)).collect();
        if active.first_token < head {
            starts.push((active.first_token, active_ts));
        }
        let Some(&(segment_first, _)) = starts.iter().rev().find(|(_, ts)| *ts <= instant_ms) else {
            return Ok(first as i64);
        };
        let mut cursor = Cursor::new(segment_first);
        let segment_end = starts
            .iter()
            .find(|(f, _)| *f > segment_first)
            .map_or(head, |(f, _)| *f);
        let mut batch = Vec::new();
        while cursor.next_token() < segment_end {
            batch.clear();
            self.read(&mut cursor, 1024, &mut batch)?;
            if batch.is_empty() {
                break;
            }
            for (token, event) in &batch {
                if *token >= segment_end {
                    break;
                }
                let fields = EventFields::parse(event).map_err(|e| StoreError::corrupt(self.dir.clone(), *token, e))?;
                if fields.timestamp >= instant_ms {
                    return Ok(*token as i64);
                }
            }
        }
        Ok(segment_end as i64)
    }
}
