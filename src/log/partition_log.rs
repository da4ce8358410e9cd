//! PartitionLog: the ordered segments of one partition, its log start offset, log end offset
//! and recovery point.
//!
//! Appends are serialized by one per-partition mutex; reads take a brief read lock on the
//! segment map, clone the segment handles they need, and then work without locks.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use parking_lot::{Mutex, RwLock};

use super::batch::{self, BatchView};
use super::cleaner::CleanerState;
use super::config::{LogConfig, TimestampType};
use super::leader_epoch::LeaderEpochCache;
use super::segment::{file_name, LogSegment};
use crate::durable::sync_dir;

mod replication;
pub use replication::ReplicatedBatch;

/// What an append did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendInfo {
    pub base_offset: i64,
    pub last_offset: i64,
    /// The broker's timestamp for LogAppendTime topics, else -1.
    pub log_append_time: i64,
    pub size: usize,
}

/// A fetch read: whole batches, possibly empty.
#[derive(Debug, Clone)]
pub struct ReadResult {
    pub records: Bytes,
}

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("offset {offset} is out of range [{log_start}, {log_end}]")]
    OffsetOutOfRange {
        offset: i64,
        log_start: i64,
        log_end: i64,
    },
    #[error("batch of {size} bytes exceeds max.message.bytes {max}")]
    MessageTooLarge { size: usize, max: usize },
    #[error("i/o: {0}")]
    Io(#[from] io::Error),
}

struct WriterState {
    unflushed_messages: i64,
    last_flush_ms: i64,
}

pub struct PartitionLog {
    dir: PathBuf,
    config: RwLock<Arc<LogConfig>>,
    segments: RwLock<BTreeMap<i64, Arc<LogSegment>>>,
    writer: Mutex<WriterState>,
    log_start_offset: AtomicI64,
    log_end_offset: AtomicI64,
    /// Everything below this offset is known to be on disk (fsync'ed).
    recovery_point: AtomicI64,
    epochs: Mutex<LeaderEpochCache>,
    /// Where the log cleaner's dirty section starts (Kafka's `cleaner-offset-checkpoint`
    /// entry); -1 until the log is first cleaned or a checkpoint is loaded.
    cleaner_checkpoint: AtomicI64,
    /// The cleaner's working state; held for a whole cleaning pass, never by appends or reads.
    pub(crate) cleaner: Mutex<CleanerState>,
    /// Bumped (under the writer lock) by every truncation of the log's tail, so that a
    /// cleaner pass that read segments before a truncation does not swap its output in.
    truncations: AtomicU64,
}

impl PartitionLog {
    /// Opens (or creates) a partition directory. With `clean` false, every segment from the
    /// one holding `recovery_point` on is re-validated, indexes are rebuilt and a torn tail is
    /// truncated.
    pub fn open(
        dir: &Path,
        config: Arc<LogConfig>,
        recovery_point: i64,
        log_start_checkpoint: i64,
        clean: bool,
        now_ms: i64,
    ) -> io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        // A cleaner swap interrupted by a crash is completed first (`cleaner.rs`); the
        // segments it produced get their indexes rebuilt below.
        let swapped = super::cleaner::complete_interrupted_swaps(dir)?;
        let mut bases: Vec<i64> = Vec::new();
        for entry in std::fs::read_dir(dir)? {
            let name = entry?.file_name();
            let name = name.to_string_lossy();
            if let Some(stem) = name.strip_suffix(".log") {
                if stem.len() == 20 {
                    if let Ok(base) = stem.parse::<i64>() {
                        bases.push(base);
                    }
                }
            } else if name.ends_with(".deleted") || name.ends_with(".cleaned") {
                let _ = std::fs::remove_file(dir.join(name.as_ref()));
            }
        }
        bases.sort_unstable();
        // Index files without a log file are leftovers.
        for entry in std::fs::read_dir(dir)? {
            let name = entry?.file_name();
            let name = name.to_string_lossy();
            for suffix in [".index", ".timeindex"] {
                if let Some(stem) = name.strip_suffix(suffix) {
                    if let Ok(base) = stem.parse::<i64>() {
                        if bases.binary_search(&base).is_err() {
                            let _ = std::fs::remove_file(dir.join(name.as_ref()));
                        }
                    }
                }
            }
        }
        if bases.is_empty() {
            bases.push(log_start_checkpoint.max(0));
        }
        let mut segments = BTreeMap::new();
        let last = *bases.last().expect("at least one segment");
        let mut next_offset: Option<i64> = None;
        let mut truncated_at: Option<usize> = None;
        for (i, &base) in bases.iter().enumerate() {
            let active = base == last;
            let capacity = if active { config.segment_bytes } else { 0 };
            let needs_recovery = swapped.contains(&base)
                || (!clean && bases.get(i + 1).is_none_or(|n| *n > recovery_point));
            // A segment being recovered gets writable indexes so that the rebuild is not
            // limited by the size of the index files found (a swapped-in segment has none).
            let seg = LogSegment::open(
                dir,
                base,
                capacity,
                config.segment_index_bytes,
                active || needs_recovery,
                now_ms,
            )?;
            if needs_recovery {
                let before = seg.size();
                let end = seg.recover(config.index_interval_bytes)?;
                if !active {
                    seg.seal()?;
                }
                if let Some(end) = end {
                    next_offset = Some(end);
                }
                if seg.size() < before && !active {
                    // A torn segment that is not the last: everything after it is suspect.
                    segments.insert(base, Arc::new(seg));
                    truncated_at = Some(i);
                    break;
                }
            } else if let Some(end) = seg.next_offset() {
                next_offset = Some(end);
            }
            segments.insert(base, Arc::new(seg));
        }
        if let Some(i) = truncated_at {
            for &base in &bases[i + 1..] {
                for suffix in [".log", ".index", ".timeindex"] {
                    let _ = std::fs::remove_file(dir.join(file_name(base, suffix)));
                }
            }
        }
        // The last remaining segment becomes the active one; reopen it writable if it was
        // opened sealed because later segments were dropped.
        let (&last_base, last_seg) = segments.iter().next_back().expect("segment");
        if last_seg.capacity() < config.segment_bytes && last_base != last {
            let seg = LogSegment::open(
                dir,
                last_base,
                config.segment_bytes,
                config.segment_index_bytes,
                true,
                now_ms,
            )?;
            segments.insert(last_base, Arc::new(seg));
        }
        let first_base = *segments.keys().next().expect("segment");
        let log_end = next_offset.unwrap_or(last_base).max(last_base);
        let log_start = log_start_checkpoint.max(first_base).min(log_end);
        let (mut epochs, found) = LeaderEpochCache::load(dir);
        let mut changed = if clean && found {
            // An epoch that starts right at the log end (a leadership that has not written
            // yet) stays: dropping it only to assign it again would rewrite the checkpoint of
            // every partition at every start. A follower drops it when its leader says so.
            epochs.truncate_from_end(log_end + 1)
        } else {
            epochs.clear();
            for seg in segments.values() {
                for (_, b) in super::batch::BatchIter::new(seg.bytes()) {
                    epochs.assign(b.partition_leader_epoch(), b.base_offset());
                }
            }
            true
        };
        changed |= epochs.truncate_from_start(log_start);
        if changed {
            epochs.persist()?;
        }
        let log = Self {
            dir: dir.to_path_buf(),
            config: RwLock::new(config),
            segments: RwLock::new(segments),
            writer: Mutex::new(WriterState {
                unflushed_messages: 0,
                last_flush_ms: now_ms,
            }),
            log_start_offset: AtomicI64::new(log_start),
            log_end_offset: AtomicI64::new(log_end),
            recovery_point: AtomicI64::new(if clean {
                log_end
            } else {
                recovery_point.min(log_end)
            }),
            epochs: Mutex::new(epochs),
            cleaner_checkpoint: AtomicI64::new(-1),
            cleaner: Mutex::new(CleanerState::default()),
            truncations: AtomicU64::new(0),
        };
        if !clean {
            log.flush()?;
        }
        Ok(log)
    }

    pub fn config(&self) -> Arc<LogConfig> {
        self.config.read().clone()
    }

    pub fn set_config(&self, config: Arc<LogConfig>) {
        *self.config.write() = config;
    }

    pub fn log_start_offset(&self) -> i64 {
        self.log_start_offset.load(Ordering::Acquire)
    }

    pub fn log_end_offset(&self) -> i64 {
        self.log_end_offset.load(Ordering::Acquire)
    }

    pub fn recovery_point(&self) -> i64 {
        self.recovery_point.load(Ordering::Acquire)
    }

    pub fn size_bytes(&self) -> u64 {
        self.segments.read().values().map(|s| s.size() as u64).sum()
    }

    fn active_segment(&self) -> Arc<LogSegment> {
        self.segments
            .read()
            .values()
            .next_back()
            .cloned()
            .expect("a log always has an active segment")
    }

    /// Appends one validated batch at the log end offset. The batch is written as received
    /// apart from its base offset and leader epoch (and, for LogAppendTime topics, its max
    /// timestamp and CRC).
    pub fn append(
        &self,
        batch: &BatchView<'_>,
        leader_epoch: i32,
        now_ms: i64,
    ) -> Result<AppendInfo, LogError> {
        let config = self.config();
        if batch.size() > config.max_message_bytes {
            return Err(LogError::MessageTooLarge {
                size: batch.size(),
                max: config.max_message_bytes,
            });
        }
        let stamped: Option<Bytes> = (config.timestamp_type == TimestampType::LogAppendTime)
            .then(|| batch::with_log_append_time(batch.as_bytes(), now_ms));
        let raw: &[u8] = stamped.as_deref().unwrap_or(batch.as_bytes());
        let max_timestamp = if stamped.is_some() {
            now_ms
        } else {
            batch.max_timestamp()
        };
        let records = batch.records_count() as i64;

        let mut writer = self.writer.lock();
        let base_offset = self.log_end_offset();
        let last_offset = base_offset + batch.last_offset_delta() as i64;
        let mut segment = self.active_segment();
        if self.should_roll(&segment, &config, raw.len(), last_offset, now_ms) {
            segment = self.roll(base_offset, &config, raw.len(), now_ms)?;
        }
        let prefix = batch::rewritten_prefix(raw, base_offset, leader_epoch);
        segment.append(
            &prefix,
            &raw[16..],
            last_offset,
            max_timestamp,
            config.index_interval_bytes,
        )?;
        self.log_end_offset
            .store(last_offset + 1, Ordering::Release);
        {
            let mut epochs = self.epochs.lock();
            if epochs.assign(leader_epoch, base_offset) {
                epochs.persist()?;
            }
        }
        self.after_append(&mut writer, &segment, &config, records, last_offset, now_ms)?;
        Ok(AppendInfo {
            base_offset,
            last_offset,
            log_append_time: if stamped.is_some() { now_ms } else { -1 },
            size: raw.len(),
        })
    }

    /// Counts appended messages and fsyncs when `flush.messages` or `flush.ms` says so; the
    /// recovery point then moves past `last_offset`.
    fn after_append(
        &self,
        writer: &mut WriterState,
        segment: &LogSegment,
        config: &LogConfig,
        records: i64,
        last_offset: i64,
        now_ms: i64,
    ) -> io::Result<()> {
        writer.unflushed_messages += records;
        if writer.unflushed_messages >= config.flush_messages
            || now_ms.saturating_sub(writer.last_flush_ms) >= config.flush_ms
        {
            segment.flush_log()?;
            writer.unflushed_messages = 0;
            writer.last_flush_ms = now_ms;
            self.recovery_point
                .store(last_offset + 1, Ordering::Release);
        }
        Ok(())
    }

    fn should_roll(
        &self,
        segment: &LogSegment,
        config: &LogConfig,
        batch_size: usize,
        last_offset: i64,
        now_ms: i64,
    ) -> bool {
        let size = segment.size();
        if size == 0 {
            return batch_size > segment.capacity();
        }
        size + batch_size > config.segment_bytes
            || size + batch_size > segment.capacity()
            || segment.offset_index_full()
            || !segment.can_hold_offset(last_offset)
            || now_ms.saturating_sub(segment.created_ms()) > config.max_segment_ms()
    }

    /// Seals the active segment and starts a new one at `base_offset`. The sealed segment is
    /// fsync'ed in the background, after which the recovery point moves past it.
    fn roll(
        &self,
        base_offset: i64,
        config: &LogConfig,
        first_batch: usize,
        now_ms: i64,
    ) -> io::Result<Arc<LogSegment>> {
        let old = self.active_segment();
        let new = if old.size() == 0 {
            // An empty active segment is replaced in place (e.g. capacity too small).
            old.delete_files()?;
            self.segments.write().remove(&old.base_offset());
            None
        } else {
            old.seal()?;
            Some(old)
        };
        let capacity = config.segment_bytes.max(first_batch);
        let seg = Arc::new(LogSegment::open(
            &self.dir,
            base_offset,
            capacity,
            config.segment_index_bytes,
            true,
            now_ms,
        )?);
        sync_dir(&self.dir)?;
        self.segments.write().insert(base_offset, seg.clone());
        if let Some(old) = new {
            // Flushing the sealed segment makes everything below the new base durable.
            old.flush()?;
            self.recovery_point.fetch_max(base_offset, Ordering::AcqRel);
        }
        Ok(seg)
    }

    /// Reads whole batches starting with the one that holds `offset`, stopping before
    /// `max_offset` (exclusive: the high watermark for consumers) and after `max_bytes`,
    /// except that the first batch is returned whole when `min_one` is set.
    pub fn read(
        &self,
        offset: i64,
        max_offset: i64,
        max_bytes: usize,
        min_one: bool,
    ) -> Result<ReadResult, LogError> {
        let log_start = self.log_start_offset();
        let log_end = self.log_end_offset();
        if offset < log_start || offset > log_end {
            return Err(LogError::OffsetOutOfRange {
                offset,
                log_start,
                log_end,
            });
        }
        let empty = ReadResult {
            records: Bytes::new(),
        };
        if offset >= max_offset {
            return Ok(empty);
        }
        let candidates: Vec<Arc<LogSegment>> = {
            let segs = self.segments.read();
            let floor = segs.range(..=offset).next_back().map(|(b, _)| *b);
            let from = floor.unwrap_or(i64::MIN);
            segs.range(from..).map(|(_, s)| s.clone()).collect()
        };
        for seg in candidates {
            let Some(first) = seg.find_batch(offset) else {
                continue;
            };
            if first.base_offset >= max_offset {
                return Ok(empty);
            }
            let mut end = first.position;
            for b in seg.batches_from(first.position) {
                if b.base_offset >= max_offset {
                    break;
                }
                let taken = end - first.position;
                if taken + b.size > max_bytes && !(taken == 0 && min_one) {
                    break;
                }
                end = b.position + b.size;
            }
            return Ok(ReadResult {
                records: seg.slice(first.position, end),
            });
        }
        Ok(empty)
    }

    /// Finds the first offset whose record timestamp is >= `timestamp`, below `max_offset`.
    /// Returns (offset, record timestamp).
    pub fn offset_for_timestamp(&self, timestamp: i64, max_offset: i64) -> Option<(i64, i64)> {
        let segments: Vec<Arc<LogSegment>> = self.segments.read().values().cloned().collect();
        let log_start = self.log_start_offset();
        for seg in segments {
            if seg.largest_timestamp() < timestamp {
                continue;
            }
            let start = seg.time_lookup_position(timestamp);
            for loc in seg.batches_from(start) {
                if loc.base_offset >= max_offset {
                    return None;
                }
                if loc.max_timestamp < timestamp || loc.last_offset < log_start {
                    continue;
                }
                let view = seg.batch_at(&loc);
                if let Some(found) =
                    super::records::first_record_at_or_after(&view, timestamp, log_start)
                {
                    return Some(found);
                }
            }
        }
        None
    }

    /// The (offset, timestamp) of the record with the largest timestamp below `max_offset`.
    pub fn offset_of_max_timestamp(&self, max_offset: i64) -> Option<(i64, i64)> {
        let segments: Vec<Arc<LogSegment>> = self.segments.read().values().cloned().collect();
        let mut best: Option<(i64, Arc<LogSegment>, super::segment::BatchLocation)> = None;
        for seg in segments {
            for loc in seg.batches_from(0) {
                if loc.base_offset >= max_offset {
                    break;
                }
                if best
                    .as_ref()
                    .is_none_or(|(ts, _, _)| loc.max_timestamp > *ts)
                {
                    best = Some((loc.max_timestamp, seg.clone(), loc));
                }
            }
        }
        let (ts, seg, loc) = best?;
        let view = seg.batch_at(&loc);
        super::records::first_record_at_or_after(&view, ts, self.log_start_offset())
            .map(|(o, _)| (o, ts))
            .or(Some((loc.last_offset, ts)))
    }

    /// The largest epoch <= `epoch` and the offset where it ends (OffsetForLeaderEpoch).
    pub fn end_offset_for_epoch(&self, epoch: i32) -> (i32, i64) {
        self.epochs
            .lock()
            .end_offset_for(epoch, self.log_end_offset())
    }

    /// Moves the log start offset up to `offset` (DeleteRecords), then deletes the segments
    /// that now lie wholly below it.
    pub fn advance_log_start_offset(&self, offset: i64) -> io::Result<()> {
        {
            let _writer = self.writer.lock();
            let offset = offset.min(self.log_end_offset());
            if offset <= self.log_start_offset() {
                return Ok(());
            }
            self.log_start_offset.store(offset, Ordering::Release);
            let mut epochs = self.epochs.lock();
            if epochs.truncate_from_start(offset) {
                epochs.persist()?;
            }
        }
        let start = self.log_start_offset();
        self.delete_oldest_segments(i64::MAX, 0, |_, end, _| end <= start)
            .map(|_| ())
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
        let _writer = self.writer.lock();
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
        for seg in &doomed {
            // Readers that still hold a slice keep the mapping (and the data) alive.
            seg.delete_files()?;
        }
        sync_dir(&self.dir)?;
        Ok(doomed.len())
    }

    /// Calls `f` with every batch at or after the log start offset, oldest first.
    pub fn for_each_batch(&self, mut f: impl FnMut(&BatchView<'_>)) {
        let start = self.log_start_offset();
        let segments: Vec<Arc<LogSegment>> = self.segments.read().values().cloned().collect();
        for seg in segments {
            for (_, b) in super::batch::BatchIter::new(seg.bytes()) {
                if b.last_offset() >= start {
                    f(&b);
                }
            }
        }
    }

    /// fsyncs every segment that may hold unflushed data and advances the recovery point.
    pub fn flush(&self) -> io::Result<()> {
        let end = self.log_end_offset();
        let from = self.recovery_point();
        let segments: Vec<Arc<LogSegment>> = {
            let segs = self.segments.read();
            let floor = segs
                .range(..=from)
                .next_back()
                .map(|(b, _)| *b)
                .unwrap_or(i64::MIN);
            segs.range(floor..).map(|(_, s)| s.clone()).collect()
        };
        for seg in segments {
            seg.flush()?;
        }
        let mut writer = self.writer.lock();
        writer.unflushed_messages = 0;
        self.recovery_point.fetch_max(end, Ordering::AcqRel);
        Ok(())
    }

    /// Flushes when `flush.ms` has passed since the last flush and data is pending.
    pub fn flush_if_due(&self, now_ms: i64) -> io::Result<()> {
        let config = self.config();
        let due = {
            let w = self.writer.lock();
            w.unflushed_messages > 0 && now_ms.saturating_sub(w.last_flush_ms) >= config.flush_ms
        };
        if due {
            self.flush()?;
            self.writer.lock().last_flush_ms = now_ms;
        }
        Ok(())
    }

    /// Flushes everything and trims the active segment's indexes, for a clean shutdown.
    pub fn close(&self) -> io::Result<()> {
        self.flush()?;
        self.epochs.lock().sync()?;
        self.active_segment().seal()
    }

    /// Removes the whole partition directory.
    pub fn delete(&self) -> io::Result<()> {
        match std::fs::remove_dir_all(&self.dir) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    /// The partition directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The segments, oldest first; the last is the active segment.
    pub(crate) fn segments_snapshot(&self) -> Vec<Arc<LogSegment>> {
        self.segments.read().values().cloned().collect()
    }

    /// The log cleaner's checkpoint: where the dirty section starts, if known.
    pub fn cleaner_checkpoint(&self) -> Option<i64> {
        let c = self.cleaner_checkpoint.load(Ordering::Acquire);
        (c >= 0).then_some(c)
    }

    /// Sets the cleaner checkpoint (from the `cleaner-offset-checkpoint` file at startup, or
    /// by the cleaner after a pass). Offsets outside the log are ignored.
    pub fn set_cleaner_checkpoint(&self, offset: i64) {
        if offset >= self.log_start_offset() && offset <= self.log_end_offset() {
            self.cleaner_checkpoint.store(offset, Ordering::Release);
        }
    }

    /// How many times the log's tail was truncated since it was opened. Every truncation
    /// (follower truncation to a leader's epoch end, truncate-fully) must call
    /// `note_truncation` while it holds the writer lock.
    pub(crate) fn truncation_count(&self) -> u64 {
        self.truncations.load(Ordering::Acquire)
    }

    /// Records a truncation of the log's tail to `new_log_end` (call with the writer lock
    /// held): a cleaner pass that started before it will not swap its output in, and the
    /// cleaner checkpoint does not stay past the new end (Kafka's
    /// `maybeTruncateCleanerCheckpoint`).
    fn note_truncation(&self, new_log_end: i64) {
        self.truncations.fetch_add(1, Ordering::AcqRel);
        self.cleaner_checkpoint
            .fetch_min(new_log_end, Ordering::AcqRel);
    }

    /// Replaces `old` (consecutive segments, oldest first) with the segment `install`
    /// returns, under the writer lock. `install` performs the file operations of the swap.
    /// Returns `Ok(false)`, without calling `install`, when `old` is no longer exactly what
    /// the log holds (retention or DeleteRecords removed some meanwhile), or when the log
    /// was truncated after `truncations` was read. Readers that still hold an old segment keep
    /// reading its mapping.
    pub(crate) fn replace_segments(
        &self,
        old: &[Arc<LogSegment>],
        truncations: u64,
        install: impl FnOnce() -> io::Result<LogSegment>,
    ) -> io::Result<bool> {
        let _writer = self.writer.lock();
        if self.truncation_count() != truncations {
            return Ok(false);
        }
        {
            let map = self.segments.read();
            let intact = old.iter().all(|s| {
                map.get(&s.base_offset())
                    .is_some_and(|held| Arc::ptr_eq(held, s))
            });
            if !intact || old.is_empty() {
                return Ok(false);
            }
        }
        let new = Arc::new(install()?);
        let mut map = self.segments.write();
        for seg in old {
            map.remove(&seg.base_offset());
        }
        map.insert(new.base_offset(), new);
        Ok(true)
    }

    /// Segment base offsets, oldest first.
    #[cfg(test)]
    pub fn segment_bases(&self) -> Vec<i64> {
        self.segments.read().keys().copied().collect()
    }
}
