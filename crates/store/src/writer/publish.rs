//! Publishing a durable batch to readers: index entries, seek samples, end, count, head.

use myelin_format::index::{IndexPosition, SeekEntry};
use myelin_format::segment::{BLOCK_HEADER_BYTES, CRC_BYTES, EVENT_LEN_BYTES, EncodedTransaction};

use super::{Appended, Writer};
use crate::config::Durability;
use crate::metrics::BatchCounts;

impl Writer {
    /// Makes the durable batch visible: index entries, seek samples, end and count, then the
    /// head (readers check the head first, so everything below it is already in place).
    pub(super) fn publish(&mut self) {
        let start = self.end;
        let interval = self.log.config.seek_interval_bytes;
        let active = self.log.segments.read().active.clone();
        let mut batch = BatchCounts {
            transactions: self.staged.len() as u64,
            events: 0,
            event_bytes: 0,
            written_bytes: self.buf.len() as u64,
        };
        // `check_batch_bounds` held before the write: every offset below fits an i32, so the
        // 32-bit casts into the index and seek table are lossless.
        debug_assert!(start + self.buf.len() as u64 <= crate::config::MAX_SEGMENT_BYTES);
        {
            let mut view = active.view.write();
            for staged in &self.staged {
                // The events readers will count in this segment get exactly the tokens the
                // writer handed out.
                debug_assert_eq!(staged.first_token, active.first_token + view.count);
                let tx_start = start + staged.encoded.start as u64;
                let block_first_events = &staged.encoded.block_first_events;
                for &first_event in block_first_events {
                    let offset =
                        tx_start + u64::from(staged.encoded.event_offsets[first_event]) - BLOCK_HEADER_BYTES as u64;
                    if view
                        .seek
                        .last()
                        .is_none_or(|s| offset >= u64::from(s.offset) + interval)
                    {
                        view.seek.push(SeekEntry {
                            token: staged.first_token + first_event as u64,
                            offset: offset as u32,
                        });
                    }
                }
                let mut block = 0;
                for (i, event) in staged.events.iter().enumerate() {
                    while block_first_events.get(block + 1).is_some_and(|first| *first <= i) {
                        block += 1;
                    }
                    if view.first_timestamp == i64::MIN {
                        view.first_timestamp = event.timestamp;
                    }
                    if !event.indexed {
                        continue;
                    }
                    let block_first = block_first_events[block];
                    let block =
                        tx_start + u64::from(staged.encoded.event_offsets[block_first]) - BLOCK_HEADER_BYTES as u64;
                    let position = IndexPosition {
                        block: block as u32,
                        position: (tx_start + u64::from(staged.encoded.event_offsets[i])) as u32,
                        sequence: event.sequence,
                    };
                    match view.index.get_mut(&*event.aggregate) {
                        Some(positions) => positions.push(position),
                        None => {
                            view.index.insert(event.aggregate.clone(), vec![position]);
                        }
                    }
                }
                view.count += staged.events.len() as u64;
                batch.events += staged.events.len() as u64;
                batch.event_bytes += event_bytes(&staged.encoded, staged.events.len());
                debug_assert_eq!(
                    event_bytes(&staged.encoded, staged.events.len()),
                    staged.events.iter().map(|e| e.bytes.len() as u64).sum::<u64>()
                );
            }
            view.end = start + self.buf.len() as u64;
            if self.log.config.durability == Durability::Fsync {
                // write_batch synced it.
                view.synced_end = view.end;
            }
            self.end = view.end;
        }
        self.log.set_head(self.next_token);
        self.validator.published();
        self.log.counters.committed(&batch);
        let done = self.staged.drain(..).map(|staged| {
            let appended = Appended {
                first_token: staged.first_token,
                count: staged.events.len() as u64,
            };
            (staged.reply, Ok(appended))
        });
        self.completions.complete(done.collect());
        self.buf.clear();
        self.multi_block = false;
    }
}

/// Serialized event bytes of an encoded transaction: its length without the block framing
/// (per block a header and a CRC, per event a length prefix), so nothing is summed per event.
fn event_bytes(encoded: &EncodedTransaction, events: usize) -> u64 {
    let framing = encoded.blocks * (BLOCK_HEADER_BYTES + CRC_BYTES) + events * EVENT_LEN_BYTES;
    (encoded.len - framing) as u64
}
