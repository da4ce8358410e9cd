//! Replication on a PartitionLog: what followers do to a log (append batches exactly as the
//! leader wrote them, truncate divergent tails, start over at the leader's log start) and the
//! leader epochs that record who wrote what.

use std::io;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::super::batch;
use super::super::segment::LogSegment;
use super::{LogError, PartitionLog};
use crate::durable::sync_dir;

/// A batch a follower appended, with what producer state needs.
pub struct ReplicatedBatch {
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub metadata: crate::replica::producer_state::BatchMetadata,
}

/// Replication: what followers do to a log (append as the leader wrote, truncate).
impl PartitionLog {
    /// The latest leader epoch recorded in the log, if any.
    pub fn latest_epoch(&self) -> Option<i32> {
        self.epochs.lock().latest_epoch()
    }

    /// Records that `epoch` starts at `offset` (a new leader's epoch starts at its log end).
    pub fn assign_leader_epoch(&self, epoch: i32, offset: i64) -> io::Result<()> {
        let _writer = self.writer.lock();
        let mut epochs = self.epochs.lock();
        if epochs.assign(epoch, offset) {
            epochs.persist()?;
        }
        Ok(())
    }

    /// Appends batches a leader sent, exactly as they are (offsets, leader epochs,
    /// timestamps). Batches this log already has are skipped; a trailing partial batch is
    /// ignored. A batch that does not continue the log end offset is an error.
    pub fn append_replicated(
        &self,
        records: &[u8],
        now_ms: i64,
    ) -> Result<Vec<ReplicatedBatch>, LogError> {
        let config = self.config();
        let mut writer = self.writer.lock();
        let mut out = Vec::new();
        let mut position = 0;
        while position < records.len() {
            let Ok(view) = batch::check_batch(&records[position..]) else {
                break;
            };
            position += view.size();
            let log_end = self.log_end_offset();
            if view.last_offset() < log_end {
                continue;
            }
            if view.base_offset() != log_end {
                return Err(LogError::Io(io::Error::other(format!(
                    "replicated batch at offset {} does not continue the log end offset {log_end}",
                    view.base_offset()
                ))));
            }
            let mut segment = self.active_segment();
            if self.should_roll(&segment, &config, view.size(), view.last_offset(), now_ms) {
                segment = self.roll(log_end, &config, view.size(), now_ms)?;
            }
            let raw = view.as_bytes();
            let mut prefix = [0u8; 16];
            prefix.copy_from_slice(&raw[..16]);
            segment.append(
                &prefix,
                &raw[16..],
                view.last_offset(),
                view.max_timestamp(),
                config.index_interval_bytes,
            )?;
            self.log_end_offset
                .store(view.last_offset() + 1, Ordering::Release);
            {
                let mut epochs = self.epochs.lock();
                if epochs.assign(view.partition_leader_epoch(), view.base_offset()) {
                    epochs.persist()?;
                }
            }
            self.after_append(
                &mut writer,
                &segment,
                &config,
                view.records_count() as i64,
                view.last_offset(),
                now_ms,
            )?;
            let append_time = if view.is_log_append_time() {
                view.max_timestamp()
            } else {
                -1
            };
            out.push(ReplicatedBatch {
                producer_id: view.producer_id(),
                producer_epoch: view.producer_epoch(),
                metadata: crate::replica::producer_state::batch_metadata(
                    view.base_sequence(),
                    view.last_offset_delta(),
                    view.base_offset(),
                    append_time,
                ),
            });
        }
        Ok(out)
    }

    /// Discards everything from `offset` on (a follower's divergent tail). Whole segments at
    /// or after it are deleted; the segment holding it is cut. Readers that still hold slices
    /// of the removed data keep valid (zeroed or old) bytes, never a torn mapping.
    pub fn truncate_to(&self, offset: i64) -> io::Result<()> {
        let _writer = self.writer.lock();
        if offset >= self.log_end_offset() {
            // No data to cut, but an epoch this replica started as leader without writing to
            // it may begin exactly here: it must go, or the follower keeps announcing it as
            // its last fetched epoch and the leader keeps answering with a divergence.
            let mut epochs = self.epochs.lock();
            if epochs.truncate_from_end(offset) {
                epochs.persist()?;
            }
            return Ok(());
        }
        let first_base = self
            .segments
            .read()
            .keys()
            .next()
            .copied()
            .unwrap_or(offset);
        if offset <= first_base {
            drop(_writer);
            return self.truncate_fully_and_start_at(offset);
        }
        let doomed: Vec<Arc<LogSegment>> = {
            let mut map = self.segments.write();
            let bases: Vec<i64> = map.range(offset..).map(|(b, _)| *b).collect();
            bases.iter().filter_map(|b| map.remove(b)).collect()
        };
        for seg in &doomed {
            seg.delete_files()?;
        }
        let active = self.active_segment();
        let end = active.truncate_to(offset)?;
        self.log_end_offset.store(end, Ordering::Release);
        self.note_truncation(end);
        self.recovery_point.fetch_min(end, Ordering::AcqRel);
        let mut epochs = self.epochs.lock();
        if epochs.truncate_from_end(end) {
            epochs.persist()?;
        }
        Ok(())
    }

    /// Empties the log and restarts it at `offset` (a follower behind its leader's log start).
    pub fn truncate_fully_and_start_at(&self, offset: i64) -> io::Result<()> {
        let _writer = self.writer.lock();
        let config = self.config();
        let old: Vec<Arc<LogSegment>> = self.segments.read().values().cloned().collect();
        for s in &old {
            s.delete_files()?;
        }
        let seg = Arc::new(LogSegment::open(
            &self.dir,
            offset,
            config.segment_bytes,
            config.segment_index_bytes,
            true,
            crate::replica::now_ms(),
        )?);
        {
            let mut map = self.segments.write();
            map.clear();
            map.insert(offset, seg);
        }
        sync_dir(&self.dir)?;
        self.log_start_offset.store(offset, Ordering::Release);
        self.log_end_offset.store(offset, Ordering::Release);
        self.recovery_point.store(offset, Ordering::Release);
        self.note_truncation(offset);
        let mut epochs = self.epochs.lock();
        epochs.clear();
        epochs.persist()
    }
}
