//! What removes data from either end of a partition log: a follower's truncation of a divergent
//! tail or restart at its leader's log start (with the leader epochs that decide where), and
//! the log start offset moved by DeleteRecords, retention and the cleaner's empty segments.
//! Producer state follows each change.

use std::io;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::PartitionLog;
use crate::durable::sync_dir;
use crate::log::segment::LogSegment;

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

    /// Discards everything from `offset` on (a follower's divergent tail). Whole segments at
    /// or after it are deleted; the segment holding it is cut. Readers that still hold slices
    /// of the removed data keep valid (zeroed or old) bytes, never a torn mapping.
    pub fn truncate_to(&self, offset: i64) -> io::Result<()> {
        let mut writer = self.writer.lock();
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
            drop(writer);
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
        {
            let mut epochs = self.epochs.lock();
            if epochs.truncate_from_end(end) {
                epochs.persist()?;
            }
        }
        self.rebuild_producer_state(&mut writer, crate::log::now_ms());
        self.check_offsets();
        Ok(())
    }

    /// Empties the log and restarts it at `offset` (a follower behind its leader's log start).
    pub fn truncate_fully_and_start_at(&self, offset: i64) -> io::Result<()> {
        let mut writer = self.writer.lock();
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
            crate::log::now_ms(),
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
        {
            let mut epochs = self.epochs.lock();
            epochs.clear();
            epochs.persist()?;
        }
        writer.producers = Default::default();
        self.refresh_unstable(&writer);
        self.forget_aborted_before(i64::MAX);
        self.check_offsets();
        Ok(())
    }

    /// Moves the log start offset up to `offset` (DeleteRecords), then deletes the segments
    /// that now lie wholly below it. Returns the new log start offset.
    pub fn advance_log_start_offset(&self, offset: i64) -> io::Result<i64> {
        {
            let mut writer = self.writer.lock();
            let offset = offset.min(self.log_end_offset());
            if offset > self.log_start_offset() {
                self.log_start_offset.store(offset, Ordering::Release);
                let mut epochs = self.epochs.lock();
                if epochs.truncate_from_start(offset) {
                    epochs.persist()?;
                }
                writer.producers.truncate_head(offset);
                self.forget_aborted_before(offset);
            }
        }
        let start = self.log_start_offset();
        self.delete_oldest_segments(i64::MAX, 0, |_, end, _| end <= start)?;
        Ok(self.log_start_offset())
    }

    /// Deletes segments from the oldest on while `deletable(segment, end offset, log bytes
    /// before it goes)` holds and all of a segment lies below `high_watermark`. Returns how
    /// many were deleted. If every segment goes, a new empty one is rolled first, as Kafka
    /// does; the log start offset moves to the first remaining segment.
    pub fn delete_oldest_segments(
        &self,
        high_watermark: i64,
        now_ms: i64,
        mut deletable: impl FnMut(&LogSegment, i64, u64) -> bool,
    ) -> io::Result<usize> {
        let mut writer = self.writer.lock();
        let log_end = self.log_end_offset();
        let segments: Vec<Arc<LogSegment>> = self.segments.read().values().cloned().collect();
        let mut total: u64 = segments.iter().map(|s| s.size() as u64).sum();
        let mut doomed = Vec::new();
        for (i, seg) in segments.iter().enumerate() {
            let end = segments
                .get(i + 1)
                .map(|n| n.base_offset())
                .unwrap_or(log_end);
            // Only the last segment is kept when empty (Kafka's rule); the cleaner can leave
            // empty segments in between.
            let last_and_empty = i + 1 == segments.len() && seg.size() == 0;
            if last_and_empty || end > high_watermark || !deletable(seg, end, total) {
                break;
            }
            total -= seg.size() as u64;
            doomed.push(seg.clone());
        }
        if doomed.is_empty() {
            return Ok(0);
        }
        if doomed.len() == segments.len() {
            let config = self.config();
            let seg = Arc::new(LogSegment::open(
                &self.dir,
                log_end,
                config.segment_bytes,
                config.segment_index_bytes,
                true,
                now_ms,
            )?);
            segments[segments.len() - 1].seal()?;
            self.segments.write().insert(log_end, seg);
        }
        {
            let mut map = self.segments.write();
            for seg in &doomed {
                map.remove(&seg.base_offset());
            }
        }
        let new_start = self
            .segments
            .read()
            .keys()
            .next()
            .copied()
            .unwrap_or(log_end);
        self.log_start_offset.fetch_max(new_start, Ordering::AcqRel);
        {
            let mut epochs = self.epochs.lock();
            if epochs.truncate_from_start(self.log_start_offset()) {
                epochs.persist()?;
            }
        }
        writer.producers.truncate_head(self.log_start_offset());
        self.forget_aborted_before(self.log_start_offset());
        for seg in &doomed {
            // Readers that still hold a slice keep the mapping (and the data) alive.
            seg.delete_files()?;
        }
        sync_dir(&self.dir)?;
        self.check_offsets();
        Ok(doomed.len())
    }
}
